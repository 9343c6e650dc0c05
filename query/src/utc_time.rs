//! Time arithmetic on UTC timestamps without per-row time-zone work.
//!
//! Every timestamp the hub stores is tagged `UTC`, and the analysts' idiom for a Beijing day
//! is `date_trunc('day', seen_at + INTERVAL '8 hours')`. Arrow and DataFusion 55 treat a
//! tagged timestamp as zoned: the interval is added and the day truncated value by value
//! through chrono with a time-zone lookup, while an untagged timestamp gets integer
//! arithmetic. Over 10M rows that made the Beijing-day group-by 1.8x DuckDB's time
//! (BENCHMARKS.md). In UTC an hour and a day always have the same length, so for UTC the
//! integer paths give the same answers. This rule uses them:
//!
//! - `ts ± INTERVAL` with no months (and no days unless the zone is UTC) becomes
//!   `ts ± DURATION`: arrow adds a duration with a checked integer add (out-of-range
//!   timestamps still fail, as they do with the interval);
//! - `date_trunc` and `date_part` over a UTC timestamp see it untagged (a relabelling, not a
//!   conversion), so DataFusion takes its own integer fast path, and the result is tagged
//!   `UTC` again.
//!
//! Names are kept: a rewritten expression keeps its original name (an alias where it
//! changed), so results and `EXPLAIN` column names do not depend on the rule.

use std::any::Any;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{
    ArrowTimestampType, DataType, Field, FieldRef, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::functions::datetime::date_part::DatePartFunc;
use datafusion::functions::datetime::date_trunc::DateTruncFunc;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Documentation, Expr, ExprSchemable, LogicalPlan, Operator,
    ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    simplify::ExprSimplifyResult,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// The rewrite, as a DataFusion optimizer rule.
#[derive(Debug, Default)]
pub struct UtcTimeArithmetic;

impl OptimizerRule for UtcTimeArithmetic {
    fn name(&self) -> &str {
        "cityhub_utc_time_arithmetic"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        // A scan's pushed-down filters are copies of filters above it, rewritten there.
        if plan.inputs().is_empty() {
            return Ok(Transformed::no(plan));
        }
        let schema = merge_schema(&plan.inputs());
        let names = NamePreserver::new(&plan);
        plan.map_expressions(|expr| {
            let name = names.save(&expr);
            let rewritten = expr.transform_up(|expr| rewrite_expr(expr, &schema))?;
            Ok(if rewritten.transformed {
                rewritten.update_data(|expr| name.restore(expr))
            } else {
                rewritten
            })
        })
    }
}

fn rewrite_expr(expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    match expr {
        Expr::BinaryExpr(binary) => {
            let shifted = match (binary.op, &*binary.left, &*binary.right) {
                (Operator::Plus | Operator::Minus, timestamp, Expr::Literal(interval, _)) => {
                    as_duration(interval, &timestamp.get_type(schema)?)
                        .map(|duration| (binary.left.clone(), duration))
                }
                (Operator::Plus, Expr::Literal(interval, _), timestamp) => {
                    as_duration(interval, &timestamp.get_type(schema)?)
                        .map(|duration| (binary.right.clone(), duration))
                }
                _ => None,
            };
            Ok(match shifted {
                // `INTERVAL + ts` is written back as `ts + DURATION`: addition commutes.
                Some((timestamp, duration)) => Transformed::yes(Expr::BinaryExpr(BinaryExpr::new(
                    timestamp,
                    binary.op,
                    Box::new(Expr::Literal(duration, None)),
                ))),
                None => Transformed::no(Expr::BinaryExpr(binary)),
            })
        }
        Expr::ScalarFunction(function) if wants_untagged(&function, schema)? => {
            let untagged = ScalarUDF::new_from_impl(UtcAsUntagged {
                inner: Arc::clone(&function.func),
            });
            Ok(Transformed::yes(Expr::ScalarFunction(
                ScalarFunction::new_udf(Arc::new(untagged), function.args),
            )))
        }
        other => Ok(Transformed::no(other)),
    }
}

/// True for DataFusion's own `date_trunc` / `date_part` over a UTC timestamp.
fn wants_untagged(function: &ScalarFunction, schema: &DFSchema) -> Result<bool> {
    let inner: &dyn Any = function.func.inner().as_ref();
    if !(inner.is::<DateTruncFunc>() || inner.is::<DatePartFunc>()) {
        return Ok(false);
    }
    let Some(argument) = function.args.get(1) else {
        return Ok(false);
    };
    Ok(matches!(argument.get_type(schema)?, DataType::Timestamp(_, Some(zone)) if is_utc(&zone)))
}

/// The zone names that mean UTC. Anything else keeps DataFusion's zoned path, which is
/// always right, only slower.
fn is_utc(zone: &str) -> bool {
    matches!(
        zone,
        "UTC" | "utc" | "Z" | "+00:00" | "+0000" | "+00" | "Etc/UTC"
    )
}

/// `interval` as a duration in the timestamp's unit, when adding it is the same whatever
/// the date: no months (their length varies), and no days unless the zone is UTC or absent
/// (a day in a zone with summer time can be 23 or 25 hours).
fn as_duration(interval: &ScalarValue, timestamp: &DataType) -> Option<ScalarValue> {
    let DataType::Timestamp(unit, zone) = timestamp else {
        return None;
    };
    let (days, nanos) = match interval {
        ScalarValue::IntervalMonthDayNano(Some(value)) if value.months == 0 => {
            (i64::from(value.days), value.nanoseconds)
        }
        ScalarValue::IntervalDayTime(Some(value)) => (
            i64::from(value.days),
            i64::from(value.milliseconds).checked_mul(1_000_000)?,
        ),
        _ => return None,
    };
    let fixed_days = zone.as_deref().is_none_or(is_utc);
    if days != 0 && !fixed_days {
        return None;
    }
    let nanos = days.checked_mul(86_400_000_000_000)?.checked_add(nanos)?;
    let per_unit = match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    };
    // An interval finer than the column's unit keeps arrow's own rounding.
    if nanos % per_unit != 0 {
        return None;
    }
    let amount = Some(nanos / per_unit);
    Some(match unit {
        TimeUnit::Second => ScalarValue::DurationSecond(amount),
        TimeUnit::Millisecond => ScalarValue::DurationMillisecond(amount),
        TimeUnit::Microsecond => ScalarValue::DurationMicrosecond(amount),
        TimeUnit::Nanosecond => ScalarValue::DurationNanosecond(amount),
    })
}

/// `inner` (`date_trunc` or `date_part`) handed its UTC timestamp untagged: how a plan
/// decoded on a Ballista scheduler or executor gets back what this rule wrote.
pub(crate) fn untagged(inner: Arc<ScalarUDF>) -> ScalarUDF {
    ScalarUDF::new_from_impl(UtcAsUntagged { inner })
}

/// True for a function this rule wrote (it has the name of the function it wraps, so
/// only its type tells it apart).
pub(crate) fn is_untagged(udf: &ScalarUDF) -> bool {
    let inner: &dyn Any = udf.inner().as_ref();
    inner.is::<UtcAsUntagged>()
}

/// DataFusion's `date_trunc` or `date_part`, handed its UTC timestamp untagged. Same name,
/// signature and result type as the function it wraps.
#[derive(Debug, PartialEq, Eq, Hash)]
struct UtcAsUntagged {
    inner: Arc<ScalarUDF>,
}

impl ScalarUDFImpl for UtcAsUntagged {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.inner.simplify(args, info)
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.preserves_lex_ordering(inputs)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let zone = match args.arg_fields.get(1).map(|field| field.data_type()) {
            Some(DataType::Timestamp(_, Some(zone))) if is_utc(zone) => Arc::clone(zone),
            _ => return self.inner.invoke_with_args(args),
        };
        args.args[1] = match &args.args[1] {
            ColumnarValue::Array(array) => ColumnarValue::Array(retag(array, None)),
            ColumnarValue::Scalar(_) => return self.inner.invoke_with_args(args),
        };
        args.arg_fields[1] = untagged_field(&args.arg_fields[1]);
        let tagged_result = matches!(
            args.return_field.data_type(),
            DataType::Timestamp(_, Some(_))
        );
        if tagged_result {
            args.return_field = untagged_field(&args.return_field);
        }
        let result = self.inner.invoke_with_args(args)?;
        Ok(match result {
            ColumnarValue::Array(array) if tagged_result => {
                ColumnarValue::Array(retag(&array, Some(zone)))
            }
            other => other,
        })
    }
}

fn untagged_field(field: &FieldRef) -> FieldRef {
    match field.data_type() {
        DataType::Timestamp(unit, Some(_)) => Arc::new(Field::new(
            field.name(),
            DataType::Timestamp(*unit, None),
            field.is_nullable(),
        )),
        _ => Arc::clone(field),
    }
}

/// The same values under another zone tag: no copy, no conversion.
fn retag(array: &ArrayRef, zone: Option<Arc<str>>) -> ArrayRef {
    fn as_zone<T: ArrowTimestampType>(array: &ArrayRef, zone: Option<Arc<str>>) -> ArrayRef {
        Arc::new(array.as_primitive::<T>().clone().with_timezone_opt(zone))
    }
    match array.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => as_zone::<TimestampSecondType>(array, zone),
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            as_zone::<TimestampMillisecondType>(array, zone)
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            as_zone::<TimestampMicrosecondType>(array, zone)
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            as_zone::<TimestampNanosecondType>(array, zone)
        }
        _ => Arc::clone(array),
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{
        RecordBatch, TimestampMicrosecondArray, TimestampNanosecondArray,
    };
    use datafusion::arrow::datatypes::Schema;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::SessionContext;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    const MICROS_PER_DAY: i64 = 86_400_000_000;

    /// `t.us` (microseconds) and `t.ns` (nanoseconds), tagged `zone`, from the same instants.
    fn context(rewrite: bool, zone: &str, micros: &[Option<i64>]) -> SessionContext {
        let zone: Arc<str> = Arc::from(zone);
        let us = TimestampMicrosecondArray::from(micros.to_vec()).with_timezone(Arc::clone(&zone));
        let ns = TimestampNanosecondArray::from(
            micros
                .iter()
                .map(|value| value.and_then(|us| us.checked_mul(1_000)))
                .collect::<Vec<_>>(),
        )
        .with_timezone(Arc::clone(&zone));
        let schema = Arc::new(Schema::new(vec![
            Field::new("us", us.data_type().clone(), true),
            Field::new("ns", ns.data_type().clone(), true),
        ]));
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(us), Arc::new(ns)]).expect("batch");
        let mut builder = SessionStateBuilder::new().with_default_features();
        if rewrite {
            builder = builder.with_optimizer_rule(Arc::new(UtcTimeArithmetic));
        }
        let ctx = SessionContext::new_with_state(builder.build());
        let table = MemTable::try_new(schema, vec![vec![batch]]).expect("table");
        ctx.register_table("t", Arc::new(table)).expect("register");
        ctx
    }

    /// The query's answer as text (names and types included), or its error.
    async fn answer(ctx: &SessionContext, sql: &str) -> String {
        let result = async {
            let frame = ctx.sql(sql).await?;
            let schema = format!("{:?}", frame.schema().fields());
            let batches = frame.collect().await?;
            Ok::<_, datafusion::error::DataFusionError>(format!(
                "{schema}\n{}",
                pretty_format_batches(&batches)?
            ))
        }
        .await;
        match result {
            Ok(text) => text,
            Err(err) => format!("error: {}", err.strip_backtrace()),
        }
    }

    const QUERIES: &[&str] = &[
        "SELECT date_trunc('day', us + INTERVAL '8 hours') FROM t",
        "SELECT date_trunc('hour', ns - INTERVAL '1 day 30 minutes') AS h FROM t",
        "SELECT date_trunc('minute', INTERVAL '90 seconds' + us) FROM t",
        "SELECT date_trunc('week', us + INTERVAL '8 hours') AS w FROM t",
        "SELECT date_trunc('month', ns) AS m, date_trunc('year', us) FROM t",
        "SELECT extract(hour FROM us + INTERVAL '8 hours') AS h, date_part('minute', ns) FROM t",
        "SELECT extract(dow FROM us + INTERVAL '8 hours'), extract(day FROM ns) FROM t",
        "SELECT extract(epoch FROM us), extract(second FROM ns) FROM t",
        "SELECT us + INTERVAL '1 month 2 hours' AS later, ns - INTERVAL '1.5 microseconds' FROM t",
        "SELECT date_trunc('day', us + INTERVAL '8 hours') AS day, count(*) AS n FROM t \
         GROUP BY day ORDER BY day NULLS FIRST",
        "SELECT count(*) FROM t WHERE us + INTERVAL '8 hours' >= '2026-10-10T00:00:00Z'",
    ];

    fn random_instants(random: &mut StdRng) -> Vec<Option<i64>> {
        (0..64)
            .map(|_| match random.random_range(0..10) {
                0 => None,
                // Before 1970, where truncation must round down, not towards zero.
                1 => Some(random.random_range(-200 * 365 * MICROS_PER_DAY..0)),
                // Exactly on a day or an hour boundary, and just before one.
                2 => {
                    Some(random.random_range(0..30_000) * 3_600_000_000 - random.random_range(0..2))
                }
                _ => Some(random.random_range(0..60 * 365 * MICROS_PER_DAY)),
            })
            .collect()
    }

    #[tokio::test]
    async fn the_rewrite_gives_datafusions_answers_on_random_instants() {
        let mut random = StdRng::seed_from_u64(1400);
        for round in 0..20 {
            let instants = random_instants(&mut random);
            let zone = ["UTC", "+00:00", "Asia/Shanghai", "+08:00"][round % 4];
            let (plain, rewritten) = (
                context(false, zone, &instants),
                context(true, zone, &instants),
            );
            for sql in QUERIES {
                assert_eq!(
                    answer(&rewritten, sql).await,
                    answer(&plain, sql).await,
                    "{sql} in {zone} over {instants:?}"
                );
            }
        }
    }

    #[tokio::test]
    async fn out_of_range_results_still_fail() {
        // pandas' Timestamp.max, a real "far future" sentinel: 8 hours later is past what
        // nanoseconds can hold.
        let sentinel = Some(9_223_372_036_854_775);
        for zone in ["UTC", "+08:00"] {
            let (plain, rewritten) = (
                context(false, zone, &[sentinel]),
                context(true, zone, &[sentinel]),
            );
            let sql = "SELECT ns + INTERVAL '8 hours' FROM t";
            let error = answer(&rewritten, sql).await;
            assert!(error.starts_with("error:"), "{error}");
            assert!(answer(&plain, sql).await.starts_with("error:"));
        }
    }

    #[tokio::test]
    async fn utc_arithmetic_is_planned_as_durations_and_untagged_truncation() {
        let ctx = context(true, "UTC", &[Some(0)]);
        let plan = ctx
            .sql(
                "SELECT date_trunc('day', us + INTERVAL '8 hours') AS day, \
                 ns - INTERVAL '1 month' AS before FROM t",
            )
            .await
            .expect("plan")
            .into_optimized_plan()
            .expect("optimize");
        let text = plan.display_indent().to_string();
        assert!(
            text.contains("DurationMicrosecond(\"28800000000\")"),
            "{text}"
        );
        // A month has no fixed length: that interval stays.
        assert!(text.contains("IntervalMonthDayNano"), "{text}");
        let mut untagged = 0;
        plan.apply_expressions(|expr| {
            expr.apply(|expr| {
                if let Expr::ScalarFunction(function) = expr
                    && (function.func.inner().as_ref() as &dyn Any).is::<UtcAsUntagged>()
                {
                    untagged += 1;
                }
                Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
            })
        })
        .expect("walk");
        assert_eq!(untagged, 1, "{text}");

        // In a zone with summer time a day is not 24 hours: the interval is kept.
        let ctx = context(true, "Europe/Berlin", &[Some(0)]);
        let plan = ctx
            .sql("SELECT date_trunc('day', us + INTERVAL '1 day') FROM t")
            .await
            .expect("plan")
            .into_optimized_plan()
            .expect("optimize");
        let text = plan.display_indent().to_string();
        assert!(!text.contains("Duration"), "{text}");
    }
}
