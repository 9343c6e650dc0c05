//! The first (partial) step of a group-by on low-cardinality strings, numbering each batch's
//! distinct views instead of hashing every row's string.
//!
//! `SELECT category, count(*) FROM events GROUP BY category` over 10M rows spends most of its
//! time in DataFusion's partial aggregation hashing and comparing a `Utf8View` per row
//! (~9.5 ns a row, 2.0x DuckDB's time; BENCHMARKS.md, "SQL against DuckDB"), where DuckDB
//! aggregates per dictionary entry. The hub's files are dictionary-encoded, so a batch of a
//! county or category column holds a handful of distinct views (`view_keys.rs`). This node
//! numbers a batch's distinct views with an integer hash of each view, resolves each
//! distinct view's string to its group once, and feeds DataFusion's own accumulators
//! (`GroupsAccumulator`) the group of every row; it emits the same partial states, so
//! DataFusion's final aggregation merges them unchanged.
//!
//! It replaces a partial `AggregateExec` grouping by one to four plain `Utf8View` columns
//! (no grouping sets, no limit, unordered input) whose aggregates all have group
//! accumulators and no `FILTER`, `DISTINCT` or `ORDER BY`. A column turns out not to be
//! low-cardinality at run time when a batch has more than [`MAX_DISTINCT_PER_BATCH`] distinct
//! views or the groups pass [`MAX_GROUPS`]: the node then emits the states it has and hands
//! the rest of its input to DataFusion's aggregation (partial states of one group may come
//! in several rows; the final step merges them), so a high-cardinality column costs one
//! batch of the slower path, not a slower query.
//!
//! Not on a Ballista cluster (the plan sent there is serialized; this node is the hub's).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions, StringViewArray,
};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::Statistics;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{
    ChildStats, ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan,
    InputDistributionRequirements, InputOrderMode, PlanProperties, ReplaceChildrenOptions,
    StatisticsArgs,
};
use futures::{StreamExt, TryStreamExt};

use crate::view_keys::ViewKeys;

/// More distinct views than this in one batch's group column: not a low-cardinality column.
pub const MAX_DISTINCT_PER_BATCH: usize = 1024;
/// More groups than this in one partition: hand the rest to DataFusion's aggregation, whose
/// memory accounting and spilling suit large group counts.
pub const MAX_GROUPS: usize = 1 << 16;
/// Group columns packed into one 128-bit key, 32 bits each.
const MAX_GROUP_COLUMNS: usize = 4;

/// The rule: each partial aggregation that fits (module text) becomes a
/// [`LowCardinalityGroupByExec`]. Placed with the lookup join, after the plan's shape is
/// settled.
#[derive(Debug, Default)]
pub struct LowCardinalityGroupByRule;

impl PhysicalOptimizerRule for LowCardinalityGroupByRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(aggregate) = node.downcast_ref::<AggregateExec>() else {
                return Ok(Transformed::no(node));
            };
            let Some(columns) = fits(aggregate)? else {
                return Ok(Transformed::no(node));
            };
            let group_by: Arc<dyn ExecutionPlan> =
                Arc::new(LowCardinalityGroupByExec::new(aggregate.clone(), columns));
            Ok(Transformed::yes(group_by))
        })
        .map(|done| done.data)
    }

    fn name(&self) -> &str {
        "cityhub_low_cardinality_group_by"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The input columns grouped by, when `aggregate` is one this node answers exactly.
fn fits(aggregate: &AggregateExec) -> Result<Option<Vec<usize>>> {
    let group_by = aggregate.group_expr();
    let shape = *aggregate.mode() == AggregateMode::Partial
        && !group_by.has_grouping_set()
        && group_by.groups().len() == 1
        && group_by.groups()[0].iter().all(|null| !null)
        && (1..=MAX_GROUP_COLUMNS).contains(&group_by.expr().len())
        && aggregate.limit_options().is_none()
        && aggregate.dynamic_expressions_produced().is_empty()
        && *aggregate.input_order_mode() == InputOrderMode::Linear
        && aggregate.filter_expr().iter().all(Option::is_none)
        && aggregate.aggr_expr().iter().all(|aggr| {
            aggr.groups_accumulator_supported()
                && !aggr.is_distinct()
                && aggr.order_bys().is_empty()
        });
    if !shape {
        return Ok(None);
    }
    let input = aggregate.input_schema();
    let mut columns = Vec::new();
    for (expr, _) in group_by.expr() {
        let Some(column) = expr.downcast_ref::<Column>() else {
            return Ok(None);
        };
        if input.field(column.index()).data_type() != &DataType::Utf8View {
            return Ok(None);
        }
        columns.push(column.index());
    }
    Ok(Some(columns))
}

/// A partial aggregation numbering each batch's distinct group views (module text).
#[derive(Debug)]
pub struct LowCardinalityGroupByExec {
    /// The partial aggregation this stands for: its input, groups and aggregates, its
    /// plan properties, and the fallback for a column that is not low-cardinality.
    aggregate: AggregateExec,
    /// The input columns grouped by, in the group-by's order.
    columns: Vec<usize>,
    metrics: ExecutionPlanMetricsSet,
}

impl LowCardinalityGroupByExec {
    fn new(aggregate: AggregateExec, columns: Vec<usize>) -> Self {
        Self {
            aggregate,
            columns,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for LowCardinalityGroupByExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let groups: Vec<&str> = self
            .aggregate
            .group_expr()
            .expr()
            .iter()
            .map(|(_, name)| name.as_str())
            .collect();
        let aggregates: Vec<&str> = self
            .aggregate
            .aggr_expr()
            .iter()
            .map(|aggr| aggr.name())
            .collect();
        write!(
            f,
            "LowCardinalityGroupByExec: mode=Partial, gby=[{}], aggr=[{}]",
            groups.join(", "),
            aggregates.join(", ")
        )
    }
}

impl ExecutionPlan for LowCardinalityGroupByExec {
    fn name(&self) -> &'static str {
        "LowCardinalityGroupByExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.aggregate.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.aggregate.input()]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.aggregate.apply_expressions(f)
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        self.aggregate.input_distribution_requirements()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        self.aggregate.maintains_input_order()
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let aggregate = Arc::new(self.aggregate.clone()).replace_children(children, options)?;
        let aggregate = aggregate.downcast_ref::<AggregateExec>().ok_or_else(|| {
            DataFusionError::Internal("an aggregation stays an aggregation".into())
        })?;
        Ok(Arc::new(Self::new(aggregate.clone(), self.columns.clone())))
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
        self.aggregate.child_stats_requests(partition)
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        self.aggregate.statistics_from_inputs(input_stats, args)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let mut input = self.aggregate.input().execute(partition, context.clone())?;
        let aggregate = self.aggregate.clone();
        let mut groups = Groups::new(&self.aggregate, self.columns.clone())?;
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let schema = self.schema();
        let batch_rows = context.session_config().batch_size();
        let states = futures::stream::once(async move {
            while let Some(batch) = input.next().await {
                let batch = batch?;
                let timer = baseline.elapsed_compute().timer();
                let low = groups.update(&batch)?;
                timer.done();
                if !low {
                    // Not low-cardinality after all: what is counted so far, then DataFusion's
                    // own aggregation over the rest of the input.
                    let counted = groups.emit(&schema, batch_rows)?;
                    for batch in &counted {
                        baseline.record_output(batch.num_rows());
                    }
                    let rest = datafusion_aggregation(&aggregate, input, context)?;
                    let counted = futures::stream::iter(counted.into_iter().map(Ok));
                    return Ok::<_, DataFusionError>(counted.chain(rest).boxed());
                }
            }
            let counted = groups.emit(&schema, batch_rows)?;
            for batch in &counted {
                baseline.record_output(batch.num_rows());
            }
            Ok(futures::stream::iter(counted.into_iter().map(Ok)).boxed())
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            states,
        )))
    }
}

/// DataFusion's partial aggregation of `aggregate` over the rest of one partition's input.
fn datafusion_aggregation(
    aggregate: &AggregateExec,
    input: SendableRecordBatchStream,
    context: Arc<TaskContext>,
) -> Result<SendableRecordBatchStream> {
    let schema = input.schema();
    let rest = RestOfInput {
        schema: schema.clone(),
        input: Mutex::new(Some(input)),
    };
    let rest: Arc<dyn ExecutionPlan> = Arc::new(StreamingTableExec::try_new(
        schema,
        vec![Arc::new(rest)],
        None,
        [],
        false,
        None,
    )?);
    Arc::new(aggregate.clone())
        .replace_children(
            vec![rest],
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )?
        .execute(0, context)
}

/// The groups of one partition and their accumulators.
struct Groups {
    /// For each group column: the input column, its distinct values in first-seen order
    /// (`None` for NULL) and their numbers, and the numbers of this batch's distinct views.
    columns: Vec<GroupColumn>,
    /// With two or more columns, each combination of column numbers (packed 32 bits each)
    /// and its group; with one, a group is the column's number.
    combinations: ViewKeys,
    /// Each group's packed column numbers, in group order.
    group_keys: Vec<u128>,
    arguments: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
}

struct GroupColumn {
    input: usize,
    values: ColumnValues,
    /// This batch's distinct views (and a NULL key) and their value numbers.
    seen: ViewKeys,
}

/// A group column's distinct values in first-seen order (`None` for NULL), and their numbers.
#[derive(Default)]
struct ColumnValues {
    values: Vec<Option<String>>,
    number_of: HashMap<String, u32>,
    null_number: Option<u32>,
}

impl ColumnValues {
    /// The number of `value`, a new one for a value not seen before.
    fn number(&mut self, value: Option<&str>) -> u32 {
        let known = match value {
            None => self.null_number,
            Some(value) => self.number_of.get(value).copied(),
        };
        if let Some(number) = known {
            return number;
        }
        let number = u32::try_from(self.values.len()).unwrap_or(u32::MAX - 1);
        self.values.push(value.map(str::to_string));
        match value {
            None => self.null_number = Some(number),
            Some(value) => {
                self.number_of.insert(value.to_string(), number);
            }
        }
        number
    }
}

/// A NULL's view is not defined, so NULLs take a key no view has: a view's length is in its
/// low 32 bits, and no string is 4 GiB long.
const NULL_KEY: u128 = u32::MAX as u128;

impl GroupColumn {
    /// Each row's value number.
    fn numbers(&mut self, batch: &RecordBatch) -> Result<Vec<u32>> {
        let column = batch.column(self.input);
        let strings: &StringViewArray = column.as_string_view_opt().ok_or_else(|| {
            DataFusionError::Internal(format!(
                "a low-cardinality group column must be Utf8View, not {}",
                column.data_type()
            ))
        })?;
        let (seen, values) = (&mut self.seen, &mut self.values);
        seen.clear();
        let views = strings.views();
        let numbers = match strings.nulls().filter(|nulls| nulls.null_count() > 0) {
            None => (0..strings.len())
                .map(|row| {
                    seen.find_or_insert(views[row], || values.number(Some(strings.value(row))))
                })
                .collect(),
            Some(nulls) => (0..strings.len())
                .map(|row| {
                    if nulls.is_null(row) {
                        seen.find_or_insert(NULL_KEY, || values.number(None))
                    } else {
                        seen.find_or_insert(views[row], || values.number(Some(strings.value(row))))
                    }
                })
                .collect(),
        };
        Ok(numbers)
    }
}

impl Groups {
    fn new(aggregate: &AggregateExec, columns: Vec<usize>) -> Result<Self> {
        let accumulators = aggregate
            .aggr_expr()
            .iter()
            .map(|aggr| aggr.create_groups_accumulator())
            .collect::<Result<_>>()?;
        Ok(Self {
            columns: columns
                .into_iter()
                .map(|input| GroupColumn {
                    input,
                    values: ColumnValues::default(),
                    seen: ViewKeys::default(),
                })
                .collect(),
            combinations: ViewKeys::default(),
            group_keys: Vec::new(),
            arguments: aggregate
                .aggr_expr()
                .iter()
                .map(|aggr| aggr.expressions())
                .collect(),
            accumulators,
        })
    }

    /// Adds `batch` to the groups. False when its group columns turned out not to be
    /// low-cardinality (the batch is counted all the same).
    fn update(&mut self, batch: &RecordBatch) -> Result<bool> {
        let rows = batch.num_rows();
        let numbers = self
            .columns
            .iter_mut()
            .map(|column| column.numbers(batch))
            .collect::<Result<Vec<_>>>()?;
        let group_of_row: Vec<usize> = if let [numbers] = numbers.as_slice() {
            numbers.iter().map(|&number| number as usize).collect()
        } else {
            let (combinations, group_keys) = (&mut self.combinations, &mut self.group_keys);
            (0..rows)
                .map(|row| {
                    let key = numbers
                        .iter()
                        .enumerate()
                        .fold(0u128, |key, (at, numbers)| {
                            key | u128::from(numbers[row]) << (32 * at)
                        });
                    combinations.find_or_insert(key, || {
                        group_keys.push(key);
                        u32::try_from(group_keys.len() - 1).unwrap_or(u32::MAX - 1)
                    }) as usize
                })
                .collect()
        };
        let groups = self.groups();
        for (arguments, accumulator) in self.arguments.iter().zip(&mut self.accumulators) {
            let values = arguments
                .iter()
                .map(|argument| argument.evaluate(batch)?.into_array(rows))
                .collect::<Result<Vec<ArrayRef>>>()?;
            accumulator.update_batch(&values, &group_of_row, None, groups)?;
        }
        let low = groups <= MAX_GROUPS
            && self
                .columns
                .iter()
                .all(|column| column.seen.len() <= MAX_DISTINCT_PER_BATCH);
        Ok(low)
    }

    /// How many groups there are: with one column, its distinct values; with more, the
    /// combinations seen.
    fn groups(&self) -> usize {
        match self.columns.as_slice() {
            [column] => column.values.values.len(),
            _ => self.group_keys.len(),
        }
    }

    /// The groups' values and partial states, in batches of at most `batch_rows` rows. The
    /// accumulators are emptied; the node emits once (at the end, or before handing over).
    fn emit(&mut self, schema: &SchemaRef, batch_rows: usize) -> Result<Vec<RecordBatch>> {
        let groups = self.groups();
        if groups == 0 {
            return Ok(Vec::new());
        }
        let mut columns: Vec<ArrayRef> = Vec::new();
        for (at, column) in self.columns.iter().enumerate() {
            let values = &column.values.values;
            let strings: StringViewArray = if self.columns.len() == 1 {
                values.iter().map(Option::as_deref).collect()
            } else {
                self.group_keys
                    .iter()
                    .map(|key| values[(key >> (32 * at)) as u32 as usize].as_deref())
                    .collect()
            };
            columns.push(Arc::new(strings));
        }
        for accumulator in &mut self.accumulators {
            columns.extend(accumulator.state(EmitTo::All)?);
        }
        let all = RecordBatch::try_new_with_options(
            schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(groups)),
        )?;
        let batch_rows = batch_rows.max(1);
        Ok((0..all.num_rows())
            .step_by(batch_rows)
            .map(|offset| all.slice(offset, batch_rows.min(all.num_rows() - offset)))
            .collect())
    }
}

/// The rest of one partition's input, as a stream DataFusion's aggregation can run on (in
/// a `StreamingTableExec`). It can be read once.
struct RestOfInput {
    schema: SchemaRef,
    input: Mutex<Option<SendableRecordBatchStream>>,
}

impl fmt::Debug for RestOfInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RestOfInput")
    }
}

impl PartitionStream for RestOfInput {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _: Arc<TaskContext>) -> SendableRecordBatchStream {
        let taken = self.input.lock().ok().and_then(|mut input| input.take());
        taken.unwrap_or_else(|| {
            let again = DataFusionError::Internal("the rest of an input is read once".into());
            Box::pin(RecordBatchStreamAdapter::new(
                self.schema.clone(),
                futures::stream::once(async move { Err(again) }),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::Int64Array;
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

    /// Short values (held in the view) and long ones (references into a buffer), one the
    /// empty string, two alike but for their tails.
    const WORDS: &[&str] = &[
        "511002",
        "511011",
        "市中区",
        "威远县",
        "资中县联合执法大队",
        "资中县联合执法大队二中队",
        "占道经营",
        "",
    ];

    /// `a` and `b` of a few values (with NULLs when asked), `many` distinct on every row
    /// (a column that is not low-cardinality), `n` a number.
    fn table(random: &mut StdRng, rows: usize, nulls: bool, batch_rows: usize) -> Arc<MemTable> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8View, true),
            Field::new("b", DataType::Utf8View, true),
            Field::new("many", DataType::Utf8View, false),
            Field::new("n", DataType::Int64, true),
        ]));
        let word = |random: &mut StdRng| {
            (!nulls || random.random_range(0..5) > 0)
                .then(|| WORDS[random.random_range(0..WORDS.len())].to_string())
        };
        let a: Vec<Option<String>> = (0..rows).map(|_| word(random)).collect();
        let b: Vec<Option<String>> = (0..rows).map(|_| word(random)).collect();
        let many: Vec<String> = (0..rows).map(|row| format!("川K{row:05}")).collect();
        let n: Vec<Option<i64>> = (0..rows)
            .map(|_| (random.random_range(0..7) > 0).then(|| random.random_range(-50..50)))
            .collect();
        let step = batch_rows.max(1);
        let batches = (0..rows)
            .step_by(step)
            .map(|start| {
                let end = (start + step).min(rows);
                RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(StringViewArray::from_iter(
                            a[start..end].iter().map(Option::as_deref),
                        )),
                        Arc::new(StringViewArray::from_iter(
                            b[start..end].iter().map(Option::as_deref),
                        )),
                        Arc::new(StringViewArray::from_iter_values(many[start..end].iter())),
                        Arc::new(Int64Array::from(n[start..end].to_vec())),
                    ],
                )
                .expect("batch")
            })
            .collect();
        Arc::new(MemTable::try_new(schema, vec![batches]).expect("table"))
    }

    fn context(hub: bool, events: Arc<MemTable>) -> SessionContext {
        // The hub's rule list, or DataFusion's own.
        let rules = match hub {
            true => crate::physical_rules(false),
            false => PhysicalOptimizer::new().rules,
        };
        let state = SessionStateBuilder::new()
            .with_default_features()
            .with_config(
                SessionConfig::new()
                    .with_target_partitions(2)
                    .with_batch_size(64),
            )
            .with_physical_optimizer_rules(rules)
            .build();
        let ctx = SessionContext::new_with_state(state);
        ctx.register_table("t", events).expect("register");
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

    /// The same answers as DataFusion's aggregation on random tables: one and two group
    /// columns, NULL groups, NULL arguments, several aggregates, a filter below, batches of
    /// one row and of many, empty tables, and a column that is not low-cardinality (which
    /// falls back to DataFusion part-way).
    #[tokio::test]
    async fn answers_equal_datafusions_aggregation() {
        let mut random = StdRng::seed_from_u64(1302);
        let queries = [
            (
                "SELECT a, count(*), count(n), sum(n), min(n), max(n), avg(n) FROM t \
              GROUP BY a ORDER BY a",
                true,
            ),
            (
                "SELECT a, b, count(*) AS rows FROM t WHERE n % 3 <> 0 GROUP BY a, b \
              ORDER BY a, b",
                true,
            ),
            (
                "SELECT b, a, sum(n), min(a) FROM t GROUP BY b, a ORDER BY b, a",
                true,
            ),
            (
                "SELECT count(*), sum(c), sum(s) FROM (SELECT many, count(*) AS c, sum(n) AS s \
              FROM t GROUP BY many)",
                true,
            ),
            // DataFusion groups by (a, n) first, then counts per a: the second is replaced.
            (
                "SELECT a, count(DISTINCT n) FROM t GROUP BY a ORDER BY a",
                true,
            ),
            // An ordered aggregate keeps DataFusion's aggregation.
            (
                "SELECT a, first_value(n ORDER BY n DESC NULLS LAST) FROM t GROUP BY a ORDER BY a",
                false,
            ),
        ];
        let mut replaced = 0;
        for round in 0..30 {
            let rows = [0, 1, 300, 2500, 5000][round % 5];
            let batch_rows = [1, 7, 1500, 8192][round % 4];
            let events = table(&mut random, rows, round % 2 == 0, batch_rows);
            let plain = context(false, events.clone());
            let hub = context(true, events);
            for (sql, low_cardinality) in queries {
                let (expected, _) = answer(&plain, sql).await;
                let (got, plan) = answer(&hub, sql).await;
                assert_eq!(got, expected, "round {round}: {sql}\n{plan}");
                // A small table is aggregated in one step (no partial aggregation to replace).
                let used = plan.contains("LowCardinalityGroupByExec");
                assert!(low_cardinality || !used, "round {round}: {sql}\n{plan}");
                replaced += usize::from(used);
            }
        }
        // Every query that may use it did, in each round of 300 rows or more.
        assert!(replaced >= 18 * 5, "{replaced}");
    }

    /// More groups than [`MAX_GROUPS`] in small batches: the states so far go out, DataFusion
    /// aggregates the rest, and the final step merges both.
    #[tokio::test]
    async fn more_groups_than_the_limit_hand_over_to_datafusion() {
        let mut random = StdRng::seed_from_u64(65);
        // Two partitions share the rows, so each must pass the limit on its own.
        let rows = 2 * MAX_GROUPS + 10_000;
        let events = table(&mut random, rows, false, 1000);
        let sql = "SELECT count(*), sum(c), min(c), max(c) FROM \
                   (SELECT many, count(*) AS c FROM t GROUP BY many)";
        let (expected, _) = answer(&context(false, events.clone()), sql).await;
        let (got, plan) = answer(&context(true, events), sql).await;
        assert!(plan.contains("LowCardinalityGroupByExec"), "{plan}");
        assert_eq!(got, expected);
        assert!(got.contains(&format!("| {rows} ")), "{got}");
    }
}
