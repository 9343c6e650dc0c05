//! A dataset snapshot as a DataFusion table: exactly the snapshot's files, as the catalog
//! lists them (never by listing the object store), pruned by the catalog's per-file min/max.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use cityhub_catalog::{ColumnStats, ColumnType, DataFile};
use datafusion::arrow::array::{ArrayRef, BooleanArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::stats::Precision;
use datafusion::common::{Column, ColumnStatistics, DFSchema, ScalarValue, Statistics};
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::Result;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;

/// One snapshot of one dataset.
#[derive(Debug)]
pub struct SnapshotTable {
    pub(crate) schema: SchemaRef,
    pub(crate) column_types: Vec<ColumnType>,
    pub(crate) files: Arc<Vec<DataFile>>,
    pub(crate) store_url: ObjectStoreUrl,
    /// Columns whose catalog statistics must not be used (masked for this reader).
    hidden_statistics: Vec<bool>,
}

/// The schema a table shows DataFusion: strings and binaries as view types, which is how
/// DataFusion reads Parquet by default (`schema_force_view_types`) and what its string
/// kernels (group-by, joins, comparisons) are fastest on. Files keep the plain types.
pub fn scan_schema(stored: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = stored
        .fields()
        .iter()
        .map(|field| {
            let data_type = match field.data_type() {
                DataType::Utf8 => DataType::Utf8View,
                DataType::Binary => DataType::BinaryView,
                other => other.clone(),
            };
            field.as_ref().clone().with_data_type(data_type)
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, stored.metadata().clone()))
}

impl SnapshotTable {
    pub fn new(
        schema: SchemaRef,
        column_types: Vec<ColumnType>,
        files: Arc<Vec<DataFile>>,
        store_url: ObjectStoreUrl,
    ) -> Self {
        let hidden_statistics = vec![false; schema.fields().len()];
        Self {
            schema,
            column_types,
            files,
            store_url,
            hidden_statistics,
        }
    }

    /// The same table, never using the statistics of `columns`: their min/max are raw
    /// values, which a reader who sees the columns masked must not learn through pruning,
    /// `EXPLAIN VERBOSE` or statistics-answered aggregates.
    pub fn without_statistics_of(mut self, columns: &[usize]) -> Self {
        for &index in columns {
            if let Some(hidden) = self.hidden_statistics.get_mut(index) {
                *hidden = true;
            }
        }
        self
    }

    /// The catalog statistics of `name`'s column in `file`, unless hidden.
    fn column_stats<'a>(&self, file: &'a DataFile, index: usize) -> Option<&'a ColumnStats> {
        if self.hidden_statistics[index] {
            return None;
        }
        file.stats.get(self.schema.field(index).name())
    }

    /// The files whose statistics do not rule out `filters` (a delete's first cut).
    pub(crate) fn files_passing(&self, state: &dyn Session, filters: &[Expr]) -> Vec<&DataFile> {
        self.prune(state, filters)
    }

    /// The files whose min/max can satisfy `filters` (all of them when nothing prunes).
    fn prune(&self, state: &dyn Session, filters: &[Expr]) -> Vec<&DataFile> {
        let all = || self.files.iter().collect();
        let Some(predicate) = conjunction(filters.iter().cloned()) else {
            return all();
        };
        let Ok(df_schema) = DFSchema::try_from(self.schema.as_ref().clone()) else {
            return all();
        };
        let Ok(physical) = state.create_physical_expr(predicate, &df_schema) else {
            return all();
        };
        let Some(pruning) = PruningPredicateBuilder::new()
            .with_file_schema(self.schema.clone())
            .build(physical)
        else {
            return all();
        };
        let statistics = FileStatistics { table: self };
        match pruning.prune(&statistics) {
            Ok(keep) => self
                .files
                .iter()
                .zip(keep)
                .filter_map(|(file, keep)| keep.then_some(file))
                .collect(),
            Err(_) => all(),
        }
    }

    fn column_index(&self, column: &Column) -> Option<usize> {
        self.schema.index_of(&column.name).ok()
    }

    /// The catalog's statistics of one file, in DataFusion's terms (min/max inexact: they
    /// serve pruning, never answers).
    fn file_statistics(&self, file: &DataFile) -> Statistics {
        let column_statistics = self
            .schema
            .fields()
            .iter()
            .enumerate()
            .map(|(index, field)| {
                let stats = self.column_stats(file, index);
                let bound = |value: Option<&serde_json::Value>| {
                    value
                        .and_then(|v| scalar(self.column_types[index], field.data_type(), v))
                        .map(Precision::Inexact)
                        .unwrap_or(Precision::Absent)
                };
                ColumnStatistics {
                    null_count: stats
                        .and_then(|s| s.null_count)
                        .map(|n| Precision::Exact(n.max(0) as usize))
                        .unwrap_or(Precision::Absent),
                    min_value: bound(stats.and_then(|s| s.min.as_ref())),
                    max_value: bound(stats.and_then(|s| s.max.as_ref())),
                    ..ColumnStatistics::new_unknown()
                }
            })
            .collect();
        Statistics {
            num_rows: Precision::Exact(file.rows.max(0) as usize),
            total_byte_size: Precision::Inexact(file.bytes.max(0) as usize),
            column_statistics,
        }
    }
}

/// A catalog statistic (JSON) as a scalar of the column's type as the table declares it.
fn scalar(
    column_type: ColumnType,
    data_type: &DataType,
    value: &serde_json::Value,
) -> Option<ScalarValue> {
    if matches!(data_type, DataType::Utf8View) {
        return Some(ScalarValue::Utf8View(Some(value.as_str()?.to_string())));
    }
    Some(match column_type {
        ColumnType::Int32 => ScalarValue::Int32(Some(i32::try_from(value.as_i64()?).ok()?)),
        ColumnType::Int64 => ScalarValue::Int64(Some(value.as_i64()?)),
        ColumnType::Float64 => ScalarValue::Float64(Some(value.as_f64()?)),
        ColumnType::Date => ScalarValue::Date32(Some(i32::try_from(value.as_i64()?).ok()?)),
        ColumnType::Timestamp => {
            ScalarValue::TimestampMicrosecond(Some(value.as_i64()?), Some("UTC".into()))
        }
        ColumnType::String => ScalarValue::Utf8(Some(value.as_str()?.to_string())),
        _ => return None,
    })
}

fn null_scalar(data_type: &DataType) -> ScalarValue {
    ScalarValue::try_from(data_type).unwrap_or(ScalarValue::Null)
}

struct FileStatistics<'a> {
    table: &'a SnapshotTable,
}

impl FileStatistics<'_> {
    fn bounds(&self, column: &Column, min: bool) -> Option<ArrayRef> {
        let index = self.table.column_index(column)?;
        let column_type = self.table.column_types[index];
        let data_type = self.table.schema.field(index).data_type().clone();
        let values = self.table.files.iter().map(|file| {
            self.table
                .column_stats(file, index)
                .and_then(|s| if min { s.min.as_ref() } else { s.max.as_ref() })
                .and_then(|v| scalar(column_type, &data_type, v))
                .unwrap_or_else(|| null_scalar(&data_type))
        });
        let array = ScalarValue::iter_to_array(values).ok()?;
        // The bounds must have exactly the table's type (time zone, string view) to be
        // compared with the predicate.
        if array.data_type() == &data_type {
            Some(array)
        } else {
            datafusion::arrow::compute::cast(&array, &data_type).ok()
        }
    }
}

impl PruningStatistics for FileStatistics<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bounds(column, true)
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bounds(column, false)
    }

    fn num_containers(&self) -> usize {
        self.table.files.len()
    }

    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        let index = self.table.column_index(column)?;
        let counts: UInt64Array = self
            .table
            .files
            .iter()
            .map(|file| {
                self.table
                    .column_stats(file, index)
                    .and_then(|s| s.null_count)
                    .map(|n| n.max(0) as u64)
            })
            .collect();
        Some(Arc::new(counts))
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        let counts: UInt64Array = self
            .table
            .files
            .iter()
            .map(|file| Some(file.rows.max(0) as u64))
            .collect();
        Some(Arc::new(counts))
    }

    fn contained(&self, _: &Column, _: &HashSet<ScalarValue>) -> Option<BooleanArray> {
        None
    }
}

#[async_trait]
impl TableProvider for SnapshotTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Inexact: files are pruned and row groups filtered, but DataFusion still applies
        // the filter to the rows.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    fn statistics(&self) -> Option<Statistics> {
        let per_file: Vec<Statistics> = self
            .files
            .iter()
            .map(|file| self.file_statistics(file))
            .collect();
        Statistics::try_merge_iter(&per_file, &self.schema).ok()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.scan_pruned(state, projection, filters, limit, false)
            .await
    }
}

impl SnapshotTable {
    /// A scan of the files `filters` do not rule out; with `prune_row_groups` the filters
    /// also go to the Parquet reader, to skip row groups and pages by their statistics
    /// (never to filter rows: the caller filters them). DataFusion's own filter pushdown
    /// does that for plain scans; a scan sealed under [`crate::reader::RowScopeExec`] gets
    /// the query's filters here and the dynamic ones through the seal.
    pub(crate) async fn scan_pruned(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
        prune_row_groups: bool,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let files = self.prune(state, filters);
        self.scan_files(state, &files, projection, filters, limit, prune_row_groups)
            .await
    }

    /// A scan of `files` (some of this snapshot's, already pruned), as [`Self::scan_pruned`].
    pub(crate) async fn scan_files(
        &self,
        state: &dyn Session,
        files: &[&DataFile],
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
        prune_row_groups: bool,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if files.is_empty() {
            let schema = match projection {
                Some(indices) => Arc::new(self.schema.project(indices)?),
                None => self.schema.clone(),
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        let partitions = state.config().target_partitions().max(1);
        let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); partitions.min(files.len())];
        let mut per_file = Vec::with_capacity(files.len());
        for (index, file) in files.iter().enumerate() {
            let statistics = Arc::new(self.file_statistics(file));
            per_file.push(statistics.clone());
            let partitioned = PartitionedFile::new(file.path.clone(), file.bytes.max(0) as u64)
                .with_statistics(statistics);
            let count = groups.len();
            groups[index % count].push(partitioned);
        }
        // The whole scan's statistics (rows, bytes, null counts, min/max) are what the
        // optimizer reads to choose join sides and modes: a 5-row dimension table is
        // collected and broadcast rather than repartitioned with the 10M-row side.
        let total = Statistics::try_merge_iter(per_file.iter().map(Arc::as_ref), &self.schema)?;
        let format = ParquetFormat::default().with_options(state.table_options().parquet.clone());
        let mut source = format.file_source(TableSchema::from(self.schema.clone()));
        if prune_row_groups && let Some(predicate) = conjunction(filters.iter().cloned()) {
            let df_schema = DFSchema::try_from(self.schema.as_ref().clone())?;
            let predicate = state.create_physical_expr(predicate, &df_schema)?;
            // Pruning only: rows are filtered above, in the order the caller needs (a region
            // scope before anything the query asks).
            let parquet = ParquetSource::new(TableSchema::from(self.schema.clone()))
                .with_table_parquet_options(state.table_options().parquet.clone())
                .with_predicate(predicate)
                .with_pushdown_filters(false);
            source = Arc::new(parquet);
        }
        let config = FileScanConfigBuilder::new(self.store_url.clone(), source)
            .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
            .with_statistics(total)
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        format.create_physical_plan(state, config).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use cityhub_catalog::{Column as HubColumn, arrow_schema};
    use datafusion::prelude::{SessionContext, col, lit};

    use super::*;

    fn file(path: &str, min: i64, max: i64, at: (i64, i64)) -> DataFile {
        let mut stats = BTreeMap::new();
        stats.insert(
            "id".to_string(),
            ColumnStats {
                min: Some(min.into()),
                max: Some(max.into()),
                null_count: Some(0),
            },
        );
        stats.insert(
            "at".to_string(),
            ColumnStats {
                min: Some(at.0.into()),
                max: Some(at.1.into()),
                null_count: Some(0),
            },
        );
        DataFile {
            path: path.into(),
            rows: 10,
            bytes: 100,
            stats,
        }
    }

    fn table() -> SnapshotTable {
        let columns = vec![
            HubColumn::new("id", ColumnType::Int64, false),
            HubColumn::new("at", ColumnType::Timestamp, false),
            HubColumn::new("note", ColumnType::String, true),
        ];
        SnapshotTable::new(
            scan_schema(&arrow_schema(&columns)),
            columns.iter().map(|c| c.column_type).collect(),
            Arc::new(vec![
                file("a", 0, 9, (1_000, 2_000)),
                file("b", 10, 19, (3_000, 4_000)),
                file("c", 20, 29, (5_000, 6_000)),
                // A file without statistics can never be pruned.
                DataFile {
                    path: "d".into(),
                    rows: 1,
                    bytes: 10,
                    stats: BTreeMap::new(),
                },
            ]),
            ObjectStoreUrl::parse("cityhub://objects").expect("url"),
        )
    }

    fn kept(filters: Vec<Expr>) -> Vec<String> {
        let state = SessionContext::new().state();
        table()
            .prune(&state, &filters)
            .into_iter()
            .map(|f| f.path.clone())
            .collect()
    }

    #[test]
    fn files_are_pruned_by_catalog_min_max() {
        assert_eq!(kept(vec![col("id").gt(lit(15i64))]), vec!["b", "c", "d"]);
        assert_eq!(kept(vec![col("id").eq(lit(5i64))]), vec!["a", "d"]);
        assert_eq!(
            kept(vec![col("id").gt_eq(lit(10i64)), col("id").lt(lit(20i64))]),
            vec!["b", "d"]
        );
        let at = |micros: i64| {
            lit(ScalarValue::TimestampMicrosecond(
                Some(micros),
                Some("UTC".into()),
            ))
        };
        assert_eq!(kept(vec![col("at").gt(at(4_500))]), vec!["c", "d"]);
        // Filters on columns without statistics keep every file.
        assert_eq!(
            kept(vec![col("note").eq(lit("x"))]),
            vec!["a", "b", "c", "d"]
        );
        assert_eq!(kept(vec![]), vec!["a", "b", "c", "d"]);
    }
}
