//! A dataset as one reader may see it: only the columns the reader may read, sensitive ones
//! masked where the table is scanned, and a record of what was read for the audit log.
//!
//! Masking sits directly on the scan ([`MaskExec`]), below every filter, join, sort and
//! aggregate, so none of them ever sees a raw value. To keep it that way:
//! - filters on masked columns are never pushed into the scan (they run on masked values);
//! - the scan gets no min/max statistics of masked columns (they would show in
//!   `EXPLAIN VERBOSE` and could answer `min(phone)` from metadata);
//! - `MaskExec` lets no filter, projection or sort be pushed through it.
//!
//! Rows are limited the same way, one step lower: a region scope or a grant's row limit is
//! a [`RowFilter`] applied directly on the scan and sealed with it in a [`RowScopeExec`],
//! a leaf to the rest of the plan. Nothing above sees a row outside it, and neither
//! `EXPLAIN ANALYZE` (the sealed scan's metrics are not shown), the table's statistics
//! (reported unknown) nor an error (the filter is a plain range test on a string column,
//! run before any expression of the query) tells how many rows lie outside.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use cityhub_catalog::Sensitivity;
use datafusion::arrow::array::{
    Array, ArrayRef, RecordBatch, RecordBatchOptions, StringViewBuilder, new_null_array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, Statistics};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType, SchedulingType};
use datafusion::physical_plan::filter::FilterExecBuilder;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties,
    PlanProperties, ReplaceChildrenOptions,
};
use futures::StreamExt;

use crate::mask::Mask;
use crate::table::SnapshotTable;

/// One column as the reader sees it.
#[derive(Debug, Clone)]
pub struct ShownColumn {
    /// Its index in the dataset's full schema.
    pub index: usize,
    pub sensitivity: Option<Sensitivity>,
    /// `None`: shown as stored.
    pub mask: Option<Mask>,
}

/// What one request read, for its audit entry: dataset → sensitive column → masked.
#[derive(Debug, Default)]
pub struct ReadLog {
    reads: Mutex<BTreeMap<String, BTreeMap<String, DatasetColumnRead>>>,
}

/// How a sensitive column was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DatasetColumnRead {
    pub sensitivity: Sensitivity,
    pub masked: bool,
}

impl ReadLog {
    /// Notes a dataset the query named but was refused, so its audit entry names it.
    pub fn record_refused(&self, dataset: &str) {
        self.record(dataset, std::iter::empty());
    }

    fn record(&self, dataset: &str, columns: impl Iterator<Item = (String, DatasetColumnRead)>) {
        if let Ok(mut reads) = self.reads.lock() {
            reads
                .entry(dataset.to_string())
                .or_default()
                .extend(columns);
        }
    }

    /// Datasets read, each with the sensitive columns read and whether they were masked.
    pub fn reads(&self) -> BTreeMap<String, BTreeMap<String, DatasetColumnRead>> {
        self.reads.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// The rows one reader may see of a dataset: a predicate over the stored columns.
#[derive(Debug, Clone)]
pub struct RowFilter {
    pub predicate: Expr,
    /// What `EXPLAIN` shows of it (`region_code in 511025`).
    pub description: String,
}

/// A dataset's snapshot through one reader's eyes.
pub struct ReaderTable {
    dataset: String,
    inner: SnapshotTable,
    columns: Vec<ShownColumn>,
    schema: SchemaRef,
    log: Arc<ReadLog>,
    rows: Option<RowFilter>,
}

impl fmt::Debug for ReaderTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReaderTable({})", self.dataset)
    }
}

impl ReaderTable {
    /// `inner` is the full snapshot; `columns` what the reader sees of it, in order.
    pub fn new(
        dataset: String,
        inner: SnapshotTable,
        columns: Vec<ShownColumn>,
        log: Arc<ReadLog>,
    ) -> Self {
        let full = inner.schema();
        let fields: Vec<Field> = columns
            .iter()
            .map(|column| {
                let field = full.field(column.index);
                match column.mask {
                    None | Some(Mask::Withheld) => field.clone(),
                    Some(_) => Field::new(field.name(), DataType::Utf8View, field.is_nullable()),
                }
                .with_nullable(field.is_nullable() || column.mask == Some(Mask::Withheld))
            })
            .collect();
        let masked: Vec<usize> = columns
            .iter()
            .filter(|c| c.mask.is_some())
            .map(|c| c.index)
            .collect();
        log.record(&dataset, std::iter::empty());
        Self {
            dataset,
            inner: inner.without_statistics_of(&masked),
            columns,
            schema: Arc::new(Schema::new(fields)),
            log,
            rows: None,
        }
    }

    /// The same table showing only the rows `rows` keeps (`None`: all of them).
    pub fn with_rows(mut self, rows: Option<RowFilter>) -> Self {
        self.rows = rows;
        self
    }

    fn is_masked(&self, name: &str) -> bool {
        self.schema
            .index_of(name)
            .is_ok_and(|index| self.columns[index].mask.is_some())
    }
}

#[async_trait]
impl TableProvider for ReaderTable {
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
        // A filter naming a masked column must see masked values, so it stays above the
        // scan. On a table with masks the others are applied exactly, below the masking,
        // so that only the rows they keep are masked; on a table without masks they prune
        // files and DataFusion filters the rows as usual.
        let has_masks = self.columns.iter().any(|c| c.mask.is_some());
        Ok(filters
            .iter()
            .map(|filter| {
                if filter
                    .column_refs()
                    .iter()
                    .any(|column| self.is_masked(&column.name))
                {
                    TableProviderFilterPushDown::Unsupported
                } else if has_masks {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Inexact
                }
            })
            .collect())
    }

    fn statistics(&self) -> Option<Statistics> {
        let mut statistics = Statistics::new_unknown(&self.schema);
        // With a row filter the stored row count counts rows the reader may not see.
        if self.rows.is_none()
            && let Some(inner) = self.inner.statistics()
        {
            statistics.num_rows = inner.num_rows;
        }
        Some(statistics)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let shown: Vec<usize> = match projection {
            Some(indices) => indices.clone(),
            None => (0..self.columns.len()).collect(),
        };
        self.log.record(
            &self.dataset,
            shown.iter().filter_map(|&i| {
                let column = &self.columns[i];
                column.sensitivity.map(|sensitivity| {
                    (
                        self.schema.field(i).name().clone(),
                        DatasetColumnRead {
                            sensitivity,
                            masked: column.mask.is_some(),
                        },
                    )
                })
            }),
        );
        let has_masks = shown.iter().any(|&i| self.columns[i].mask.is_some());
        let plain = self.columns.iter().all(|c| c.mask.is_none());
        if plain && self.rows.is_none() {
            let projection: Vec<usize> = shown.iter().map(|&i| self.columns[i].index).collect();
            return self
                .inner
                .scan(state, Some(&projection), filters, limit)
                .await;
        }
        // Scan the shown columns plus those the (exact) filters need, filter raw rows on
        // unmasked columns, then mask and keep the shown columns. (On a plain table the
        // filters are inexact: DataFusion applies them above the scan.)
        let mut scanned = shown.clone();
        for filter in filters.iter().filter(|_| !plain) {
            for column in filter.column_refs() {
                if let Ok(index) = self.schema.index_of(&column.name)
                    && !scanned.contains(&index)
                {
                    scanned.push(index);
                }
            }
        }
        let inner_projection: Vec<usize> = scanned.iter().map(|&i| self.columns[i].index).collect();
        // A limit can go to the scan only when no filter of ours comes after it.
        let scan_limit = if filters.is_empty() { limit } else { None };
        let scan = match &self.rows {
            None => {
                self.inner
                    .scan(state, Some(&inner_projection), filters, scan_limit)
                    .await?
            }
            Some(rows) => {
                self.scoped_scan(state, &inner_projection, filters, scan_limit, rows)
                    .await?
            }
        };
        if plain {
            // `scanned` is `shown` on a plain table.
            return Ok(scan);
        }
        let Some(predicate) = conjunction(filters.iter().map(unqualified)) else {
            // Without filters `scanned` is `shown`.
            return self.mask(scan, &shown);
        };
        let schema = DFSchema::try_from(scan.schema().as_ref().clone())?;
        let predicate = state.create_physical_expr(predicate, &schema)?;
        let filter = FilterExecBuilder::new(predicate, scan).with_fetch(limit);
        if has_masks {
            self.mask(Arc::new(filter.build()?), &shown)
        } else {
            // Nothing shown is masked: a plain filter that also drops the filter-only
            // columns, so that join and TopK filters can still reach the scan.
            let shown_positions: Vec<usize> = (0..shown.len()).collect();
            Ok(Arc::new(
                filter.apply_projection(Some(shown_positions))?.build()?,
            ))
        }
    }
}

impl ReaderTable {
    /// The stored columns `projection` (indices of the full schema) of the rows `rows`
    /// keeps, sealed in a [`RowScopeExec`]. Files and row groups outside the rows (by their
    /// statistics) are skipped; `filters` prune too but are applied by the caller.
    async fn scoped_scan(
        &self,
        state: &dyn Session,
        projection: &[usize],
        filters: &[Expr],
        fetch: Option<usize>,
        rows: &RowFilter,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let full = self.inner.schema();
        let mut with_rows = projection.to_vec();
        for column in rows.predicate.column_refs() {
            let index = full.index_of(&column.name)?;
            if !with_rows.contains(&index) {
                with_rows.push(index);
            }
        }
        let mut pruning = filters.to_vec();
        pruning.push(rows.predicate.clone());
        let scan = self
            .inner
            .scan_pruned(state, Some(&with_rows), &pruning, None, true)
            .await?;
        let schema = DFSchema::try_from(scan.schema().as_ref().clone())?;
        let predicate = state.create_physical_expr(unqualified(&rows.predicate), &schema)?;
        let kept: Vec<usize> = (0..projection.len()).collect();
        let filter = FilterExecBuilder::new(predicate, scan)
            .with_fetch(fetch)
            .apply_projection(Some(kept))?
            .build()?;
        Ok(Arc::new(RowScopeExec::new(
            Arc::new(filter),
            rows.description.clone(),
        )))
    }

    /// `MaskExec` over `input`, whose first columns are `shown` (table indices), keeping
    /// just those; the input itself when that changes nothing.
    fn mask(
        &self,
        input: Arc<dyn ExecutionPlan>,
        shown: &[usize],
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let columns: Vec<(usize, Option<Mask>)> = shown
            .iter()
            .enumerate()
            .map(|(position, &i)| (position, self.columns[i].mask))
            .collect();
        if input.schema().fields().len() == shown.len() && columns.iter().all(|c| c.1.is_none()) {
            return Ok(input);
        }
        let schema = Arc::new(self.schema.project(shown)?);
        Ok(Arc::new(MaskExec::new(input, columns, schema)))
    }
}

/// A filter with its columns unqualified, to be planned against the scan's own schema.
fn unqualified(filter: &Expr) -> Expr {
    filter
        .clone()
        .transform(|expr| {
            Ok(match expr {
                Expr::Column(column) => {
                    Transformed::yes(Expr::Column(Column::new_unqualified(column.name)))
                }
                other => Transformed::no(other),
            })
        })
        .map(|t| t.data)
        .unwrap_or_else(|_| filter.clone())
}

/// A scan and the row filter on it, sealed: to the plan above it is a leaf that yields only
/// the rows the reader may see. Its input is not among its children, so that no optimizer
/// rule moves anything between the scan and the filter and `EXPLAIN ANALYZE` shows no
/// count of the rows the filter dropped.
#[derive(Debug)]
pub struct RowScopeExec {
    input: Arc<dyn ExecutionPlan>,
    description: String,
    metrics: ExecutionPlanMetricsSet,
    properties: Arc<PlanProperties>,
}

impl RowScopeExec {
    fn new(input: Arc<dyn ExecutionPlan>, description: String) -> Self {
        // Cooperative: the sealed Parquet scan consumes the task budget for every batch it
        // reads, which is what CooperativeExec would add.
        let properties = PlanProperties::new(
            EquivalenceProperties::new(input.schema()),
            input.output_partitioning().clone(),
            EmissionType::Incremental,
            Boundedness::Bounded,
        )
        .with_scheduling_type(SchedulingType::Cooperative);
        Self {
            input,
            description,
            metrics: ExecutionPlanMetricsSet::new(),
            properties: Arc::new(properties),
        }
    }
}

impl DisplayAs for RowScopeExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RowScopeExec: {}", self.description)
    }
}

impl ExecutionPlan for RowScopeExec {
    fn name(&self) -> &'static str {
        "RowScopeExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "RowScopeExec is a leaf; it takes no children".into(),
            ))
        }
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn partition_statistics(&self, _partition: Option<usize>) -> Result<Arc<Statistics>> {
        Ok(Arc::new(Statistics::new_unknown(&self.schema())))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.input.schema(),
            input.map(move |batch| {
                let batch = batch?;
                baseline.record_output(batch.num_rows());
                Ok(batch)
            }),
        )))
    }
}

/// Masks columns of every batch that passes; the first node above a masked table's scan.
#[derive(Debug)]
pub struct MaskExec {
    input: Arc<dyn ExecutionPlan>,
    /// Output column i is input column `columns[i].0`, masked with `columns[i].1`.
    columns: Arc<Vec<(usize, Option<Mask>)>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl MaskExec {
    fn new(
        input: Arc<dyn ExecutionPlan>,
        columns: Vec<(usize, Option<Mask>)>,
        schema: SchemaRef,
    ) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            input.output_partitioning().clone(),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Self {
            input,
            columns: Arc::new(columns),
            schema,
            properties: Arc::new(properties),
        }
    }
}

impl DisplayAs for MaskExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let masked: Vec<String> = self
            .columns
            .iter()
            .zip(self.schema.fields())
            .filter_map(|((_, mask), field)| mask.map(|m| format!("{}={}", field.name(), m.name())))
            .collect();
        write!(f, "MaskExec: {}", masked.join(", "))
    }
}

impl ExecutionPlan for MaskExec {
    fn name(&self) -> &'static str {
        "MaskExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = children
            .pop()
            .filter(|_| children.is_empty())
            .ok_or_else(|| DataFusionError::Internal("MaskExec takes exactly one input".into()))?;
        Ok(Arc::new(MaskExec::new(
            input,
            self.columns.as_ref().clone(),
            self.schema.clone(),
        )))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let columns = self.columns.clone();
        let schema = self.schema.clone();
        let out = schema.clone();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            out,
            input.map(move |batch| mask_batch(&batch?, &columns, &schema)),
        )))
    }
}

fn mask_batch(
    batch: &RecordBatch,
    columns: &[(usize, Option<Mask>)],
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    let arrays = columns
        .iter()
        .zip(schema.fields())
        .map(|((index, mask), field)| {
            let array = batch.column(*index);
            match mask {
                None => Ok(array.clone()),
                Some(mask) => mask_array(array, *mask, field.data_type()),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    // A batch of no columns (count(*)) still has its rows.
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        arrays,
        &options,
    )?)
}

fn mask_array(array: &ArrayRef, mask: Mask, data_type: &DataType) -> Result<ArrayRef> {
    if mask == Mask::Withheld {
        return Ok(new_null_array(data_type, array.len()));
    }
    let text = cast(array, &DataType::Utf8View)?;
    let text = text
        .as_any()
        .downcast_ref::<datafusion::arrow::array::StringViewArray>()
        .ok_or_else(|| DataFusionError::Internal("masking expects text".into()))?;
    let mut out = StringViewBuilder::with_capacity(text.len());
    let mut masked = String::new();
    for value in text.iter() {
        match value {
            Some(value) if mask.apply_into(value, &mut masked) => out.append_value(&masked),
            _ => out.append_null(),
        }
    }
    Ok(Arc::new(out.finish()))
}
