//! Joins with a small lookup table (the counties, the event categories) answered once per
//! distinct key of each batch instead of once per row.
//!
//! DataFusion's hash join hashes and compares every probe row's key: for `events JOIN
//! counties ON e.county_code = c.code` that is 10M string hashes to find one of 5 rows,
//! about 2.1x DuckDB's time (BENCHMARKS.md, "SQL against DuckDB"). The hub's strings are
//! `Utf8View`: each value is a 16-byte view holding the string itself when it has at most
//! 12 bytes, or its length, prefix, buffer and offset otherwise, so within one array two
//! equal views are two equal strings (`view_keys.rs`). A low-cardinality column read from
//! Parquet's dictionary pages has a handful of distinct views per batch. The lookup join
//! finds each distinct view of a batch once (an integer hash of the view), resolves that
//! view's string against the build side once, and gives every row its view's answer.
//!
//! The rule replaces a hash join only where that is the whole job: the build side is
//! collected (`CollectLeft`) and estimated at no more than [`MAX_LOOKUP_ROWS`] rows, one
//! equality key of type `Utf8View` on both sides, no further join condition, no limit,
//! NULL never equal to NULL, and an inner, right-semi or right-anti join (the probe side's
//! rows, with or without the build side's columns). Everything else keeps DataFusion's
//! join. The answers, row order and output schema are the hash join's (a property test
//! below compares the two on random tables with NULLs, repeated build keys and strings
//! longer than a view holds). What it gives up: the hash join's dynamic filter (the build
//! side's key range pushed into the probe side's scan to skip row groups), which for a
//! lookup table of codes rarely skips anything.
//!
//! Not on a Ballista cluster: the plan the hub sends there is serialized, and this node is
//! the hub's own.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, RecordBatchOptions, StringViewArray,
    UInt32Array,
};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::compute::{concat_batches, filter, take};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{JoinType, NullEquality, Statistics};
use datafusion::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildStats, ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan,
    ExecutionPlanProperties, InputDistributionRequirements, PlanProperties, ReplaceChildrenOptions,
    StatisticsArgs, StatisticsContext,
};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::OnceCell;

use crate::view_keys::ViewKeys;

/// Build sides up to this many rows (by the optimizer's estimate) are looked up per
/// distinct key. Dimension tables of counties or categories are far below it; a larger
/// build side means a probe column with more distinct values per batch, where looking up
/// each distinct view saves little over hashing each row.
pub const MAX_LOOKUP_ROWS: usize = 256;

/// The rule: each hash join that fits (see the module's text) becomes a [`LookupJoinExec`].
/// It runs after DataFusion has chosen the join's build side and mode, and before the
/// dynamic filters are pushed down (they would reference the replaced join).
#[derive(Debug, Default)]
pub struct LookupJoinRule;

impl PhysicalOptimizerRule for LookupJoinRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(join) = node.downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            if !fits_a_lookup(join)? {
                return Ok(Transformed::no(node));
            }
            let lookup: Arc<dyn ExecutionPlan> = Arc::new(LookupJoinExec::new(&node)?);
            Ok(Transformed::yes(lookup))
        })
        .map(|done| done.data)
    }

    fn name(&self) -> &str {
        "cityhub_lookup_join"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Whether `join` is one the lookup answers exactly and faster.
fn fits_a_lookup(join: &HashJoinExec) -> Result<bool> {
    let shape = join.mode == PartitionMode::CollectLeft
        && matches!(
            join.join_type,
            JoinType::Inner | JoinType::RightSemi | JoinType::RightAnti
        )
        && join.filter.is_none()
        && !join.null_aware
        && join.null_equality == NullEquality::NullEqualsNothing
        && join.fetch().is_none()
        && join.on.len() == 1;
    if !shape {
        return Ok(false);
    }
    let (build_key, probe_key) = &join.on[0];
    if build_key.data_type(&join.left.schema())? != DataType::Utf8View
        || probe_key.data_type(&join.right.schema())? != DataType::Utf8View
    {
        return Ok(false);
    }
    let build_rows = StatisticsContext::new()
        .compute(join.left.as_ref(), &StatisticsArgs::new())?
        .num_rows;
    Ok(build_rows
        .get_value()
        .is_some_and(|rows| *rows <= MAX_LOOKUP_ROWS))
}

/// A hash join answered by looking up each distinct key of a probe batch (module text).
#[derive(Debug)]
pub struct LookupJoinExec {
    /// The hash join this stands for: its plan properties (schema, partitioning, order)
    /// hold for the lookup too (same rows, same order), and its children are this node's.
    hash_join: Arc<dyn ExecutionPlan>,
    left: Arc<dyn ExecutionPlan>,
    right: Arc<dyn ExecutionPlan>,
    build_key: Arc<dyn PhysicalExpr>,
    probe_key: Arc<dyn PhysicalExpr>,
    join_type: JoinType,
    projection: Option<Vec<usize>>,
    /// The build side, collected once for all output partitions.
    build: Arc<OnceCell<Arc<BuildSide>>>,
    metrics: ExecutionPlanMetricsSet,
}

impl LookupJoinExec {
    fn new(hash_join: &Arc<dyn ExecutionPlan>) -> Result<Self> {
        let join = hash_join.downcast_ref::<HashJoinExec>().ok_or_else(|| {
            DataFusionError::Internal("a lookup join stands for a hash join".into())
        })?;
        let (build_key, probe_key) = join.on[0].clone();
        Ok(Self {
            hash_join: hash_join.clone(),
            left: join.left.clone(),
            right: join.right.clone(),
            build_key,
            probe_key,
            join_type: join.join_type,
            projection: join.projection.as_ref().map(|p| p.to_vec()),
            build: Arc::new(OnceCell::new()),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

impl DisplayAs for LookupJoinExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "LookupJoinExec: join_type={}, on=[({}, {})]",
            self.join_type, self.build_key, self.probe_key
        )?;
        if let Some(projection) = &self.projection {
            write!(f, ", projection={projection:?}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for LookupJoinExec {
    fn name(&self) -> &'static str {
        "LookupJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.hash_join.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.left, &self.right]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        if f(&self.build_key)? == TreeNodeRecursion::Stop {
            return Ok(TreeNodeRecursion::Stop);
        }
        f(&self.probe_key)
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        self.hash_join.input_distribution_requirements()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        self.hash_join.maintains_input_order()
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let hash_join = self.hash_join.clone().replace_children(children, options)?;
        Ok(Arc::new(Self::new(&hash_join)?))
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

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        self.hash_join.child_stats_requests(partition)
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        self.hash_join.statistics_from_inputs(input_stats, args)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let probe = self.right.execute(partition, context.clone())?;
        let build = self.build.clone();
        let left = self.left.clone();
        let build_key = self.build_key.clone();
        let output = Output {
            join_type: self.join_type,
            probe_key: self.probe_key.clone(),
            build_width: left.schema().fields().len(),
            projection: self.projection.clone(),
            schema: self.schema(),
        };
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let joined = futures::stream::once(async move {
            let build = build
                .get_or_try_init(|| BuildSide::collect(left, build_key, context))
                .await?
                .clone();
            let mut seen = SeenViews::default();
            let joined = probe.map(move |batch| {
                let timer = baseline.elapsed_compute().timer();
                let joined = output.join(&batch?, &build, &mut seen);
                timer.done();
                if let Ok(joined) = &joined {
                    baseline.record_output(joined.num_rows());
                }
                joined
            });
            Ok::<_, DataFusionError>(joined)
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            joined,
        )))
    }
}

/// The collected build side: its rows, and for each distinct non-NULL key the rows that
/// hold it.
#[derive(Debug)]
struct BuildSide {
    rows: RecordBatch,
    key_of: HashMap<String, u32>,
    rows_of_key: Vec<Vec<u32>>,
}

impl BuildSide {
    async fn collect(
        plan: Arc<dyn ExecutionPlan>,
        key: Arc<dyn PhysicalExpr>,
        context: Arc<TaskContext>,
    ) -> Result<Arc<Self>> {
        let mut batches = Vec::new();
        for partition in 0..plan.output_partitioning().partition_count() {
            let mut stream = plan.execute(partition, context.clone())?;
            while let Some(batch) = stream.next().await {
                batches.push(batch?);
            }
        }
        let rows = concat_batches(&plan.schema(), &batches)?;
        let keys = key.evaluate(&rows)?.into_array(rows.num_rows())?;
        let keys = string_views(&keys)?;
        let mut key_of = HashMap::new();
        let mut rows_of_key: Vec<Vec<u32>> = Vec::new();
        for (row, key) in keys.iter().enumerate() {
            let Some(key) = key else { continue };
            let at = *key_of.entry(key.to_string()).or_insert_with(|| {
                rows_of_key.push(Vec::new());
                index_u32(rows_of_key.len() - 1)
            });
            rows_of_key[at as usize].push(index_u32(row));
        }
        Ok(Arc::new(Self {
            rows,
            key_of,
            rows_of_key,
        }))
    }
}

/// What one partition's stream needs to turn a probe batch into output.
struct Output {
    join_type: JoinType,
    probe_key: Arc<dyn PhysicalExpr>,
    build_width: usize,
    projection: Option<Vec<usize>>,
    schema: datafusion::arrow::datatypes::SchemaRef,
}

impl Output {
    fn join(
        &self,
        probe: &RecordBatch,
        build: &BuildSide,
        seen: &mut SeenViews,
    ) -> Result<RecordBatch> {
        let rows = probe.num_rows();
        let keys = self.probe_key.evaluate(probe)?.into_array(rows)?;
        let keys = string_views(&keys)?;
        let matched = seen.matches(keys, build);
        // The join's own columns: the build side's then the probe side's for an inner join,
        // the probe side's alone for a semi or anti join; the projection picks from them.
        let build_width = match self.join_type {
            JoinType::Inner => self.build_width,
            _ => 0,
        };
        let width = build_width + probe.num_columns();
        let picked: Vec<usize> = match &self.projection {
            Some(projection) => projection.clone(),
            None => (0..width).collect(),
        };
        let (columns, out_rows): (Vec<ArrayRef>, usize) = match self.join_type {
            JoinType::Inner => {
                let mut build_rows = Vec::new();
                let mut probe_rows = Vec::new();
                for (row, &key) in matched.iter().enumerate() {
                    if key != NO_MATCH {
                        for &build_row in &build.rows_of_key[key as usize] {
                            build_rows.push(build_row);
                            probe_rows.push(index_u32(row));
                        }
                    }
                }
                let out_rows = probe_rows.len();
                let build_rows = UInt32Array::from(build_rows);
                let probe_rows = UInt32Array::from(probe_rows);
                let columns = picked
                    .iter()
                    .map(|&at| {
                        if at < build_width {
                            take(build.rows.column(at), &build_rows, None)
                        } else {
                            take(probe.column(at - build_width), &probe_rows, None)
                        }
                    })
                    .collect::<Result<_, _>>()?;
                (columns, out_rows)
            }
            JoinType::RightSemi | JoinType::RightAnti => {
                let wanted = self.join_type == JoinType::RightSemi;
                let keep = BooleanArray::new(
                    BooleanBuffer::collect_bool(rows, |row| (matched[row] != NO_MATCH) == wanted),
                    None,
                );
                let columns = picked
                    .iter()
                    .map(|&at| filter(probe.column(at), &keep))
                    .collect::<Result<_, _>>()?;
                (columns, keep.true_count())
            }
            other => {
                return Err(DataFusionError::Internal(format!(
                    "a lookup join does not answer a {other} join"
                )));
            }
        };
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(out_rows)),
        )?)
    }
}

fn string_views(array: &ArrayRef) -> Result<&StringViewArray> {
    array.as_string_view_opt().ok_or_else(|| {
        DataFusionError::Internal(format!(
            "a lookup join's key must be Utf8View, not {}",
            array.data_type()
        ))
    })
}

/// Row and key indexes are u32 (the build side is small, a batch far below 4 billion rows).
fn index_u32(index: usize) -> u32 {
    u32::try_from(index).unwrap_or(u32::MAX)
}

/// A key that matches no build row (or a NULL key).
const NO_MATCH: u32 = u32::MAX - 1;

/// The distinct views of one probe batch and the build key each resolved to.
#[derive(Default)]
struct SeenViews(ViewKeys);

impl SeenViews {
    /// For each row of `keys`, the build key its value matches, or [`NO_MATCH`].
    fn matches(&mut self, keys: &StringViewArray, build: &BuildSide) -> Vec<u32> {
        let seen = &mut self.0;
        seen.clear();
        let views = keys.views();
        let resolve = |row: usize| {
            build
                .key_of
                .get(keys.value(row))
                .copied()
                .unwrap_or(NO_MATCH)
        };
        match keys.nulls().filter(|nulls| nulls.null_count() > 0) {
            None => (0..keys.len())
                .map(|row| seen.find_or_insert(views[row], || resolve(row)))
                .collect(),
            Some(nulls) => (0..keys.len())
                .map(|row| {
                    if nulls.is_null(row) {
                        NO_MATCH
                    } else {
                        seen.find_or_insert(views[row], || resolve(row))
                    }
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringViewArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// Values short enough to live in the view, and longer ones that are references into
    /// a buffer (more than 12 bytes), some equal to others in all but the tail.
    const WORDS: &[&str] = &[
        "511002",
        "511011",
        "511024",
        "市中区",
        "东兴区",
        "威远县",
        "资中县联合执法大队",
        "资中县联合执法大队二中队",
        "隆昌市城市管理局占道经营",
        "",
    ];

    fn table(random: &mut StdRng, rows: usize, nulls: bool, batch_rows: usize) -> Arc<MemTable> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8View, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let keys: Vec<Option<&str>> = (0..rows)
            .map(|_| {
                (!nulls || random.random_range(0..6) > 0)
                    .then(|| WORDS[random.random_range(0..WORDS.len())])
            })
            .collect();
        let numbers: Vec<i64> = (0..rows).map(|row| row as i64).collect();
        let batches = keys
            .chunks(batch_rows.max(1))
            .zip(numbers.chunks(batch_rows.max(1)))
            .map(|(keys, numbers)| {
                RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(StringViewArray::from(keys.to_vec())),
                        Arc::new(Int64Array::from(numbers.to_vec())),
                    ],
                )
                .expect("batch")
            })
            .collect();
        Arc::new(MemTable::try_new(schema, vec![batches]).expect("table"))
    }

    fn context(lookup: bool, small: Arc<MemTable>, large: Arc<MemTable>) -> SessionContext {
        // The hub's rule list, or DataFusion's own.
        let rules = match lookup {
            true => crate::physical_rules(false),
            false => PhysicalOptimizer::new().rules,
        };
        let state = SessionStateBuilder::new()
            .with_default_features()
            .with_config(SessionConfig::new().with_target_partitions(2))
            .with_physical_optimizer_rules(rules)
            .build();
        let ctx = SessionContext::new_with_state(state);
        ctx.register_table("small", small).expect("register");
        ctx.register_table("large", large).expect("register");
        ctx
    }

    async fn answer(ctx: &SessionContext, sql: &str) -> (String, String) {
        let frame = ctx.sql(sql).await.expect("plan");
        let plan = frame
            .clone()
            .create_physical_plan()
            .await
            .expect("physical");
        let mut batches = frame.collect().await.expect("run");
        // Engines differ in whether an empty answer comes as no batch or as empty ones.
        batches.retain(|batch| batch.num_rows() > 0);
        let text = pretty_format_batches(&batches).expect("format").to_string();
        (text, displayable(plan.as_ref()).indent(false).to_string())
    }

    /// The same rows as DataFusion's hash join, for inner, semi and anti joins, on random
    /// tables with NULL keys on both sides, keys repeated on the build side, keys of both
    /// view kinds, batches of one row and of many, and an empty build side.
    #[tokio::test]
    async fn answers_equal_the_hash_join() {
        let mut random = StdRng::seed_from_u64(5110);
        let queries = [
            "SELECT l.n, s.n AS m, s.k FROM large l JOIN small s ON l.k = s.k ORDER BY l.n, m",
            "SELECT s.k, count(*), sum(l.n) FROM large l JOIN small s ON l.k = s.k \
             GROUP BY s.k ORDER BY s.k",
            "SELECT l.n FROM large l WHERE EXISTS (SELECT 1 FROM small s WHERE s.k = l.k) \
             ORDER BY l.n",
            "SELECT l.n, l.k FROM large l WHERE NOT EXISTS \
             (SELECT 1 FROM small s WHERE s.k = l.k AND s.n % 2 = 0) ORDER BY l.n",
            "SELECT count(*) FROM large l WHERE l.k IN (SELECT k FROM small)",
            "SELECT count(*) FROM large l WHERE NOT EXISTS (SELECT 1 FROM small s WHERE s.k = l.k)",
        ];
        let mut lookups = 0;
        for round in 0..40 {
            let small_rows = [0, 1, 3, 8, 20][round % 5];
            let small = table(&mut random, small_rows, round % 2 == 0, 4);
            let large_rows = random.random_range(0..3000);
            let batch_rows = [1, 7, 512, 8192][round % 4];
            let large = table(&mut random, large_rows, round % 3 != 0, batch_rows);
            let plain = context(false, small.clone(), large.clone());
            let hub = context(true, small, large);
            for sql in queries {
                let (expected, _) = answer(&plain, sql).await;
                let (got, plan) = answer(&hub, sql).await;
                assert_eq!(got, expected, "round {round}: {sql}\n{plan}");
                if plan.contains("LookupJoinExec") {
                    lookups += 1;
                }
            }
        }
        // Each query shape went through the lookup (not DataFusion's join) in most rounds.
        assert!(lookups >= 40 * queries.len() / 2, "{lookups} lookups");
    }

    /// A join with a large build side keeps DataFusion's hash join.
    #[tokio::test]
    async fn a_large_build_side_keeps_the_hash_join() {
        let mut random = StdRng::seed_from_u64(7);
        let small = table(&mut random, MAX_LOOKUP_ROWS * 4, false, 8192);
        let large = table(&mut random, MAX_LOOKUP_ROWS * 8, false, 8192);
        let hub = context(true, small, large);
        let (_, plan) = answer(
            &hub,
            "SELECT count(*) FROM large l JOIN small s ON l.k = s.k",
        )
        .await;
        assert!(plan.contains("HashJoinExec"), "{plan}");
        assert!(!plan.contains("LookupJoinExec"), "{plan}");
    }
}
