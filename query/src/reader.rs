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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use cityhub_catalog::{DataFile, Sensitivity};
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions, StringViewBuilder,
    new_null_array,
};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, Statistics};
use datafusion::config::ConfigOptions;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType, SchedulingType};
use datafusion::physical_plan::filter::FilterExecBuilder;
use datafusion::physical_plan::filter_pushdown::{
    ChildFilterPushdownResult, ChildPushdownResult, FilterPushdownPhase, FilterPushdownPropagation,
    PushedDown,
};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties,
    Partitioning, PlanProperties, ReplaceChildrenOptions,
};
use futures::{StreamExt, TryStreamExt};

use crate::mask::Mask;
use crate::table::SnapshotTable;

/// Field metadata key on result columns that hold masked values; its value names the mask
/// (`plate_no`, `withheld`, ...).
pub const MASKED_FIELD_METADATA: &str = "cityhub.masked";

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

impl RowFilter {
    /// True for a row the filter may drop: its complement, with every column it names also
    /// allowed to be null (a null region is outside every scope). `None` when the predicate
    /// has a form this does not invert; files are then never known to lie wholly inside.
    fn outside(&self) -> Option<Expr> {
        let complement = complement(&self.predicate)?;
        let nulls = self
            .predicate
            .column_refs()
            .into_iter()
            .map(|column| Expr::Column(column.clone()).is_null());
        Some(nulls.fold(complement, Expr::or))
    }
}

/// `NOT predicate` for ANDs, ORs and comparisons with negation pushed to the leaves, which
/// is the form pruning by min/max understands.
fn complement(predicate: &Expr) -> Option<Expr> {
    use datafusion::logical_expr::{BinaryExpr, Operator};
    match predicate {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let inverse = match op {
                Operator::And => return Some(complement(left)?.or(complement(right)?)),
                Operator::Or => return Some(complement(left)?.and(complement(right)?)),
                Operator::Eq => Operator::NotEq,
                Operator::NotEq => Operator::Eq,
                Operator::Lt => Operator::GtEq,
                Operator::LtEq => Operator::Gt,
                Operator::Gt => Operator::LtEq,
                Operator::GtEq => Operator::Lt,
                _ => return None,
            };
            Some(Expr::BinaryExpr(BinaryExpr::new(
                left.clone(),
                inverse,
                right.clone(),
            )))
        }
        Expr::Literal(datafusion::scalar::ScalarValue::Boolean(Some(value)), _) => {
            Some(datafusion::logical_expr::lit(!value))
        }
        _ => None,
    }
}

/// A dataset's snapshot through one reader's eyes.
pub struct ReaderTable {
    pub(crate) dataset: String,
    pub(crate) inner: SnapshotTable,
    pub(crate) columns: Vec<ShownColumn>,
    schema: SchemaRef,
    log: Arc<ReadLog>,
    pub(crate) rows: Option<RowFilter>,
    /// Planned on a Ballista scheduler: a row scope is then planned as
    /// [`ScopedFilterExec`]s over the scans, which Ballista can split by partition.
    pub(crate) on_cluster: bool,
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
                let shown = match column.mask {
                    None | Some(Mask::Withheld) => field.clone(),
                    Some(_) => Field::new(field.name(), DataType::Utf8View, field.is_nullable()),
                }
                .with_nullable(field.is_nullable() || column.mask == Some(Mask::Withheld));
                // Marked, so that a front door can tell its client which result columns
                // hold masked values (the metadata follows the column through projections).
                match column.mask {
                    Some(mask) => shown.with_metadata(HashMap::from([(
                        MASKED_FIELD_METADATA.to_string(),
                        mask.name().to_string(),
                    )])),
                    None => shown,
                }
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
            on_cluster: false,
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
        self.record_reads(&shown);
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
    /// Notes in the request's read log the sensitive columns among `shown` (indices of
    /// this table's columns), and whether they are masked. A scan does this; so does a
    /// plan sent to a Ballista cluster, which the cluster scans.
    pub(crate) fn record_reads(&self, shown: &[usize]) {
        self.log.record(
            &self.dataset,
            shown.iter().filter_map(|&i| {
                let column = self.columns.get(i)?;
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
    }

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
        let kept = self.inner.files_passing(state, &pruning);
        // Files whose statistics put every row inside (a county's feed writes its own
        // rows together) are read without the filter, and without the columns only it needs.
        let may_hold_outside: Option<HashSet<&str>> = rows.outside().map(|outside| {
            self.inner
                .files_passing(state, &[outside])
                .into_iter()
                .map(|file| file.path.as_str())
                .collect()
        });
        let (straddling, inside): (Vec<&DataFile>, Vec<&DataFile>) =
            kept.into_iter().partition(|file| {
                may_hold_outside
                    .as_ref()
                    .is_none_or(|paths| paths.contains(file.path.as_str()))
            });
        let mut scans = Vec::new();
        if !straddling.is_empty() || inside.is_empty() {
            let plan = self
                .inner
                .scan_files(state, &straddling, Some(&with_rows), &pruning, None, true)
                .await?;
            let schema = DFSchema::try_from(plan.schema().as_ref().clone())?;
            let filter = state.create_physical_expr(unqualified(&rows.predicate), &schema)?;
            scans.push(SealedScan {
                plan,
                filter: Some(filter),
            });
        }
        if !inside.is_empty() {
            let plan = self
                .inner
                .scan_files(
                    state,
                    &inside,
                    Some(&projection.to_vec()),
                    &pruning,
                    None,
                    true,
                )
                .await?;
            scans.push(SealedScan { plan, filter: None });
        }
        let scope = Arc::new(RowScope {
            shown: (0..projection.len()).collect(),
            fetch,
            description: rows.description.clone(),
        });
        if self.on_cluster {
            // Ballista gives each task only its partitions of a stage's scans; it knows how
            // to cut a Parquet scan but not a sealed one. So on the cluster the row filter
            // sits on each scan as its parent, one partition for one, and a union joins
            // them. The hub runs EXPLAIN ANALYZE itself, so the scans' counts stay hidden.
            let mut filtered: Vec<Arc<dyn ExecutionPlan>> = scans
                .into_iter()
                .map(|scan| {
                    Arc::new(ScopedFilterExec::new(
                        scan.plan,
                        scan.filter,
                        Arc::clone(&scope),
                    )) as Arc<dyn ExecutionPlan>
                })
                .collect::<Vec<_>>();
            return match filtered.len() {
                1 => Ok(filtered.remove(0)),
                _ => Ok(datafusion::physical_plan::union::UnionExec::try_new(
                    filtered,
                )?),
            };
        }
        Ok(Arc::new(RowScopeExec::new(scans, scope)?))
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
/// count of the rows the filter dropped. Two optimizations still reach the scan, through
/// this node and on its terms: splitting the files for parallelism, and filters from above
/// as pruning predicates (see `handle_child_pushdown_result`).
#[derive(Debug)]
pub struct RowScopeExec {
    /// Their partitions in order are this node's partitions.
    scans: Vec<SealedScan>,
    scope: Arc<RowScope>,
    metrics: ExecutionPlanMetricsSet,
    properties: Arc<PlanProperties>,
}

/// One Parquet scan under the seal.
#[derive(Debug, Clone)]
struct SealedScan {
    plan: Arc<dyn ExecutionPlan>,
    /// The scope's predicate over this scan's columns; `None` for files whose statistics
    /// put every row inside the scope.
    filter: Option<Arc<dyn PhysicalExpr>>,
}

/// What a [`RowScopeExec`] passes on of its scans' batches.
#[derive(Debug)]
pub(crate) struct RowScope {
    /// The scans' columns passed on (their first ones; the rest only feed the filter).
    pub(crate) shown: Vec<usize>,
    /// At most this many rows a partition, when the scan had a limit.
    pub(crate) fetch: Option<usize>,
    /// What `EXPLAIN` shows (`region_code in region 511025`).
    pub(crate) description: String,
}

impl RowScopeExec {
    fn new(scans: Vec<SealedScan>, scope: Arc<RowScope>) -> Result<Self> {
        let first = scans
            .first()
            .ok_or_else(|| DataFusionError::Internal("a row scope needs a scan".into()))?;
        let schema = Arc::new(first.plan.schema().project(&scope.shown)?);
        let partitioning = match scans.as_slice() {
            [one] => one.plan.output_partitioning().clone(),
            _ => Partitioning::UnknownPartitioning(
                scans
                    .iter()
                    .map(|scan| scan.plan.output_partitioning().partition_count())
                    .sum(),
            ),
        };
        // Cooperative: the sealed Parquet scans consume the task budget for every batch
        // they read, which is what CooperativeExec would add.
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            partitioning,
            EmissionType::Incremental,
            Boundedness::Bounded,
        )
        .with_scheduling_type(SchedulingType::Cooperative);
        Ok(Self {
            scans,
            scope,
            metrics: ExecutionPlanMetricsSet::new(),
            properties: Arc::new(properties),
        })
    }

    /// The same seal over other scans of the same files (`None`: unchanged), if any changed.
    fn with_scans(&self, plans: Vec<Option<Arc<dyn ExecutionPlan>>>) -> Result<Option<Self>> {
        if plans.iter().all(Option::is_none) {
            return Ok(None);
        }
        let scans = self
            .scans
            .iter()
            .zip(plans)
            .map(|(scan, plan)| SealedScan {
                plan: plan.unwrap_or_else(|| Arc::clone(&scan.plan)),
                filter: scan.filter.clone(),
            })
            .collect();
        Self::new(scans, Arc::clone(&self.scope)).map(Some)
    }

    /// The sealed scan that yields this node's `partition`, and that partition's number in it.
    fn scan_of(&self, partition: usize) -> Result<(&SealedScan, usize)> {
        let mut rest = partition;
        for scan in &self.scans {
            let count = scan.plan.output_partitioning().partition_count();
            if rest < count {
                return Ok((scan, rest));
            }
            rest -= count;
        }
        Err(DataFusionError::Internal(format!(
            "RowScopeExec has no partition {partition}"
        )))
    }
}

impl RowScope {
    /// The rows of `batches` (one partition of a scan) that `filter` keeps, in the shown
    /// columns, up to the scope's fetch; counted in `baseline` where given.
    fn rows_of(
        self: &Arc<Self>,
        batches: SendableRecordBatchStream,
        filter: Option<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
        baseline: Option<BaselineMetrics>,
    ) -> SendableRecordBatchStream {
        let scope = Arc::clone(self);
        let fetch = scope.fetch.unwrap_or(usize::MAX);
        let rows = batches
            .scan(fetch, move |remaining, batch| {
                let next = (*remaining > 0).then(|| {
                    let batch = scope.apply(batch?, filter.as_ref())?;
                    let batch = batch.slice(0, batch.num_rows().min(*remaining));
                    *remaining -= batch.num_rows();
                    if let Some(baseline) = &baseline {
                        baseline.record_output(batch.num_rows());
                    }
                    Ok(batch)
                });
                futures::future::ready(next)
            })
            .try_filter(|batch| futures::future::ready(batch.num_rows() > 0));
        Box::pin(RecordBatchStreamAdapter::new(schema, rows))
    }

    /// The rows of `batch` that `filter` keeps (all without one), in the shown columns. A
    /// batch wholly inside passes without a copy.
    fn apply(
        &self,
        batch: RecordBatch,
        filter: Option<&Arc<dyn PhysicalExpr>>,
    ) -> Result<RecordBatch> {
        let Some(filter) = filter else {
            return Ok(batch.project(&self.shown)?);
        };
        let keep = filter.evaluate(&batch)?.into_array(batch.num_rows())?;
        let keep = keep
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| DataFusionError::Internal("a row scope must be boolean".into()))?;
        let batch = batch.project(&self.shown)?;
        if keep.null_count() == 0 && keep.true_count() == batch.num_rows() {
            return Ok(batch);
        }
        Ok(filter_record_batch(&batch, keep)?)
    }
}

impl DisplayAs for RowScopeExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RowScopeExec: {}", self.scope.description)
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

    /// The sealed scan split into byte ranges of its files, as DataFusion splits a plain
    /// scan to use every core (it asks each node; it cannot see the scan inside the seal).
    fn repartitioned(
        &self,
        target_partitions: usize,
        config: &ConfigOptions,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let split = self
            .scans
            .iter()
            .map(|scan| scan.plan.repartitioned(target_partitions, config))
            .collect::<Result<Vec<_>>>()?;
        Ok(self.with_scans(split)?.map(|seal| Arc::new(seal) as _))
    }

    /// Filters from above (the query's own, and dynamic ones such as TopK's threshold) reach
    /// the sealed Parquet scan as pruning predicates only: they skip files, row groups and
    /// pages by their statistics and never filter rows. Every filter stays above the seal,
    /// so no expression of the query is evaluated on a row outside the scope.
    fn handle_child_pushdown_result(
        &self,
        phase: FilterPushdownPhase,
        child_pushdown_result: ChildPushdownResult,
        config: &ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn ExecutionPlan>>> {
        let filters: Vec<ChildFilterPushdownResult> = child_pushdown_result
            .parent_filters
            .into_iter()
            .map(|parent| ChildFilterPushdownResult {
                filter: parent.filter,
                child_results: Vec::new(),
            })
            .collect();
        let kept_above = FilterPushdownPropagation::with_parent_pushdown_result(vec![
            PushedDown::No;
            filters.len()
        ]);
        // This node's columns are each scan's first columns (a filtered scan's own column
        // comes after them), so the filters apply to the scans as they are.
        let mut pruning_only = config.clone();
        pruning_only.execution.parquet.pushdown_filters = false;
        let mut pushed = Vec::new();
        for scan in &self.scans {
            let result = scan.plan.handle_child_pushdown_result(
                phase,
                ChildPushdownResult {
                    parent_filters: filters.clone(),
                    self_filters: Vec::new(),
                },
                &pruning_only,
            )?;
            pushed.push(result.updated_node);
        }
        Ok(match self.with_scans(pushed)? {
            Some(seal) => kept_above.with_updated_node(Arc::new(seal)),
            None => kept_above,
        })
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let (scan, scan_partition) = self.scan_of(partition)?;
        let batches = scan.plan.execute(scan_partition, context)?;
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        Ok(self
            .scope
            .rows_of(batches, scan.filter.clone(), self.schema(), Some(baseline)))
    }
}

/// A row scope on a Ballista cluster: the rows of its input (a Parquet scan) that the
/// scope keeps, in the shown columns, partition for partition. Nothing is pushed through
/// it and it asks for no repartitioning of its input, so the filter stays directly on the
/// scan, in the scan's stage.
#[derive(Debug)]
pub struct ScopedFilterExec {
    pub(crate) input: Arc<dyn ExecutionPlan>,
    /// The scope's predicate over the input's columns; `None` when every row is inside.
    pub(crate) filter: Option<Arc<dyn PhysicalExpr>>,
    pub(crate) scope: Arc<RowScope>,
    properties: Arc<PlanProperties>,
}

impl ScopedFilterExec {
    pub(crate) fn new(
        input: Arc<dyn ExecutionPlan>,
        filter: Option<Arc<dyn PhysicalExpr>>,
        scope: Arc<RowScope>,
    ) -> Self {
        let schema = input
            .schema()
            .project(&scope.shown)
            .map(Arc::new)
            .unwrap_or_else(|_| input.schema());
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            input.output_partitioning().clone(),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Self {
            input,
            filter,
            scope,
            properties: Arc::new(properties),
        }
    }
}

impl DisplayAs for ScopedFilterExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScopedFilterExec: {}", self.scope.description)
    }
}

impl ExecutionPlan for ScopedFilterExec {
    fn name(&self) -> &'static str {
        "ScopedFilterExec"
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

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    // Nothing says it keeps its input's order, so that no sort is pushed below it to see
    // rows outside the scope; filters and projections are not pushed through either
    // (DataFusion's defaults for a node that does not allow them).
    fn partition_statistics(&self, _partition: Option<usize>) -> Result<Arc<Statistics>> {
        Ok(Arc::new(Statistics::new_unknown(&self.schema())))
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = children
            .pop()
            .filter(|_| children.is_empty())
            .ok_or_else(|| {
                DataFusionError::Internal("ScopedFilterExec takes exactly one input".into())
            })?;
        Ok(Arc::new(ScopedFilterExec::new(
            input,
            self.filter.clone(),
            Arc::clone(&self.scope),
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
        let batches = self.input.execute(partition, context)?;
        Ok(self
            .scope
            .rows_of(batches, self.filter.clone(), self.schema(), None))
    }
}

/// Masks columns of every batch that passes; the first node above a masked table's scan.
#[derive(Debug)]
pub struct MaskExec {
    pub(crate) input: Arc<dyn ExecutionPlan>,
    /// Output column i is input column `columns[i].0`, masked with `columns[i].1`.
    pub(crate) columns: Arc<Vec<(usize, Option<Mask>)>>,
    pub(crate) schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl MaskExec {
    pub(crate) fn new(
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

    /// No repartitioning between the scan and the masking: on a Ballista cluster a
    /// repartition is a shuffle, and raw values would cross to another executor.
    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
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

#[cfg(test)]
mod tests {
    use cityhub_catalog::{Column as HubColumn, ColumnStats, ColumnType, arrow_schema};
    use datafusion::arrow::array::{Float64Array, Int64Array, StringArray};
    use datafusion::execution::object_store::ObjectStoreUrl;
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::file::properties::WriterProperties;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::{SessionConfig, SessionContext, col, lit};
    use datafusion::scalar::ScalarValue;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;
    use object_store::path::Path;

    use super::*;
    use crate::table::scan_schema;

    fn columns() -> [HubColumn; 3] {
        [
            HubColumn::new("id", ColumnType::Int64, false),
            HubColumn::new("region_code", ColumnType::String, false),
            HubColumn::new("score", ColumnType::Float64, false),
        ]
    }

    /// The rows of county 511025, as `view::row_filter` writes a county scope.
    fn county_scope() -> RowFilter {
        let text = |value: &str| lit(ScalarValue::Utf8View(Some(value.into())));
        RowFilter {
            predicate: col("region_code")
                .gt_eq(text("511025"))
                .and(col("region_code").lt(text("511026"))),
            description: "region_code in region 511025".into(),
        }
    }

    /// Catalog statistics of a file whose region codes run from `min` to `max`.
    fn regions(min: &str, max: &str, nulls: i64) -> BTreeMap<String, ColumnStats> {
        BTreeMap::from([(
            "region_code".to_string(),
            ColumnStats {
                min: Some(min.into()),
                max: Some(max.into()),
                null_count: Some(nulls),
            },
        )])
    }

    #[test]
    fn only_files_whose_statistics_put_every_row_inside_skip_the_filter() {
        let file = |path: &str, stats| DataFile {
            path: path.into(),
            rows: 10,
            bytes: 100,
            stats,
        };
        let table = SnapshotTable::new(
            scan_schema(&arrow_schema(&columns())),
            columns().iter().map(|c| c.column_type).collect(),
            Arc::new(vec![
                file("inside", regions("511025", "511025999", 0)),
                file("with-nulls", regions("511025", "511025", 1)),
                file("straddling", regions("511011", "511025", 0)),
                file("past-the-county", regions("511025100", "511026", 0)),
                file("another-county", regions("511011", "511011", 0)),
                file("no-statistics", BTreeMap::new()),
            ]),
            ObjectStoreUrl::parse("cityhub://objects").expect("url"),
        );
        let outside = county_scope().outside().expect("a county scope inverts");
        let state = SessionContext::new().state();
        let may_hold_outside: Vec<&str> = table
            .files_passing(&state, &[outside])
            .into_iter()
            .map(|file| file.path.as_str())
            .collect();
        assert_eq!(
            may_hold_outside,
            [
                "with-nulls",
                "straddling",
                "past-the-county",
                "another-county",
                "no-statistics"
            ]
        );
    }

    /// A Parquet file of `ids` in row groups of 500: even ids in county 511025, odd ids in
    /// 511011 (or all in 511025 with `one_county`); `score` is the id over ten.
    fn parquet(ids: std::ops::Range<i64>, one_county: bool) -> (SchemaRef, Vec<u8>) {
        let stored = arrow_schema(&columns());
        let ids: Vec<i64> = ids.collect();
        let regions: Vec<&str> = ids
            .iter()
            .map(|id| {
                if one_county || id % 2 == 0 {
                    "511025"
                } else {
                    "511011"
                }
            })
            .collect();
        let scores: Vec<f64> = ids.iter().map(|&id| id as f64 / 10.0).collect();
        let batch = RecordBatch::try_new(
            stored.clone(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(regions)),
                Arc::new(Float64Array::from(scores)),
            ],
        )
        .expect("batch");
        let mut bytes = Vec::new();
        let properties = WriterProperties::builder()
            .set_max_row_group_row_count(Some(500))
            .build();
        let mut writer =
            ArrowWriter::try_new(&mut bytes, stored.clone(), Some(properties)).expect("writer");
        writer.write(&batch).expect("write");
        writer.close().expect("close");
        (stored, bytes)
    }

    /// Two files read through a reader scoped to 511025, on two partitions that split even
    /// a small file: ids 0..4,000 of two counties (read through the filter) and ids
    /// 10,000..11,000 all of 511025 (its statistics say so: read without).
    async fn scoped_context() -> SessionContext {
        let columns = columns();
        let (stored, mixed) = parquet(0..4_000, false);
        let (_, county) = parquet(10_000..11_000, true);
        let files = vec![
            DataFile {
                path: "mixed.parquet".into(),
                rows: 4_000,
                bytes: mixed.len() as i64,
                stats: regions("511011", "511025", 0),
            },
            DataFile {
                path: "county.parquet".into(),
                rows: 1_000,
                bytes: county.len() as i64,
                stats: regions("511025", "511025", 0),
            },
        ];
        let store = InMemory::new();
        for (path, bytes) in [("mixed.parquet", mixed), ("county.parquet", county)] {
            store
                .put(&Path::from(path), bytes.into())
                .await
                .expect("put");
        }
        let url = ObjectStoreUrl::parse("cityhub://objects").expect("url");
        let config = SessionConfig::new()
            .with_target_partitions(2)
            .set_usize("datafusion.optimizer.repartition_file_min_size", 1);
        let context = SessionContext::new_with_config(config);
        context.register_object_store(url.as_ref(), Arc::new(store));
        let table = SnapshotTable::new(
            scan_schema(&stored),
            columns.iter().map(|c| c.column_type).collect(),
            Arc::new(files),
            url,
        );
        let shown = (0..columns.len())
            .map(|index| ShownColumn {
                index,
                sensitivity: None,
                mask: None,
            })
            .collect();
        let reader = ReaderTable::new("t".into(), table, shown, Arc::new(ReadLog::default()))
            .with_rows(Some(county_scope()));
        context
            .register_table("t", Arc::new(reader))
            .expect("register");
        context
    }

    /// The plan of `sql`, its sealed scans' one-line descriptions, and its answer as text.
    async fn run(context: &SessionContext, sql: &str) -> (String, Vec<String>, Vec<String>) {
        let frame = context.sql(sql).await.expect("plan");
        let plan = frame.create_physical_plan().await.expect("physical plan");
        let answer = datafusion::physical_plan::collect(plan.clone(), context.task_ctx())
            .await
            .expect("run");
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&answer)
            .expect("format")
            .to_string();
        let seal = sealed(&plan).expect("a RowScopeExec in the plan");
        let scans = seal
            .scans
            .iter()
            .map(|scan| {
                let filtered = if scan.filter.is_some() {
                    "filtered"
                } else {
                    "whole"
                };
                format!("{filtered}: {}", displayable(scan.plan.as_ref()).one_line())
            })
            .collect();
        let plan = displayable(plan.as_ref()).indent(false).to_string();
        (plan, scans, text.lines().map(str::to_string).collect())
    }

    fn sealed(plan: &Arc<dyn ExecutionPlan>) -> Option<&RowScopeExec> {
        plan.downcast_ref::<RowScopeExec>()
            .or_else(|| plan.children().into_iter().find_map(sealed))
    }

    #[tokio::test]
    async fn the_querys_filters_prune_the_sealed_scans_but_are_applied_above_them() {
        let context = scoped_context().await;
        let (plan, scans, answer) =
            run(&context, "SELECT count(*) AS n FROM t WHERE score > 390").await;
        // Even ids 3902..=3998 of the mixed file (not the 50 odd ones) and all 1,000 rows
        // of the county's file.
        assert_eq!(answer[3], "| 1049 |", "{answer:?}");
        for scan in &scans {
            assert!(
                scan.contains("predicate=") && scan.contains("score@"),
                "{scan}"
            );
        }
        // The query's filter still runs above the seal, on the rows the scope kept.
        let filter = plan
            .find("FilterExec: score@")
            .expect("filter above the seal");
        assert!(filter < plan.find("RowScopeExec").expect("seal"), "{plan}");
    }

    #[tokio::test]
    async fn a_file_wholly_inside_the_scope_is_read_without_the_filter_or_its_column() {
        let context = scoped_context().await;
        let (_, scans, answer) = run(&context, "SELECT sum(id) AS s FROM t").await;
        let mixed: i64 = (0..4_000).filter(|id| id % 2 == 0).sum();
        let county: i64 = (10_000..11_000).sum();
        assert_eq!(answer[3], format!("| {} |", mixed + county), "{answer:?}");
        assert_eq!(scans.len(), 2, "{scans:?}");
        assert!(
            scans[0].starts_with("filtered") && scans[0].contains("mixed.parquet"),
            "{scans:?}"
        );
        assert!(
            scans[0].contains("projection=[id, region_code]"),
            "{scans:?}"
        );
        assert!(
            scans[1].starts_with("whole") && scans[1].contains("county.parquet"),
            "{scans:?}"
        );
        assert!(scans[1].contains("projection=[id]"), "{scans:?}");
    }

    #[tokio::test]
    async fn topk_thresholds_reach_the_sealed_scans_as_dynamic_filters() {
        let context = scoped_context().await;
        for sql in [
            "SELECT id FROM t ORDER BY id % 4000 DESC, id LIMIT 3",
            "SELECT id FROM t WHERE id < 5000 ORDER BY score DESC LIMIT 3",
        ] {
            let (plan, scans, answer) = run(&context, sql).await;
            assert_eq!(
                &answer[3..6],
                ["| 3998 |", "| 3996 |", "| 3994 |"],
                "{plan}"
            );
            for scan in &scans {
                assert!(scan.contains("DynamicFilter"), "{sql}: {scan}");
            }
        }
    }

    #[tokio::test]
    async fn the_sealed_scans_are_split_across_partitions_like_plain_ones() {
        let context = scoped_context().await;
        let (plan, scans, answer) = run(&context, "SELECT count(*) AS n FROM t").await;
        assert_eq!(answer[3], "| 3000 |", "{answer:?}");
        for scan in &scans {
            assert!(
                scan.contains("file_groups={2 groups"),
                "each file in two: {scan}"
            );
        }
        assert!(!plan.contains("RoundRobin"), "{plan}");
    }
}
