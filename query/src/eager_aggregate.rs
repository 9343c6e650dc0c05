//! Aggregating a large table before joining it to a small one.
//!
//! The analysts' commonest join is a feed against a dimension table, grouped by the
//! dimension's columns:
//!
//! ```sql
//! SELECT c.name, count(*), avg(e.speed)
//! FROM events e JOIN counties c ON e.county_code = c.code GROUP BY c.name
//! ```
//!
//! DataFusion 55 probes the join with all 10M event rows, copies the county name onto each
//! of them and then groups 10M rows by that name (2x DuckDB's time, BENCHMARKS.md). The
//! same answer comes from grouping the events by the join key first (10M rows to 5), joining
//! those 5 rows, and combining the partial results per name:
//!
//! ```text
//! Aggregate(G; A) over (F JOIN D ON f = d)
//!   ≡  Project(combine(A)) over Aggregate(G; merge(A)) over
//!        (Aggregate(f; partial(A)) over F) JOIN D ON f = d
//! ```
//!
//! It holds for an inner join whatever the keys' duplicates or NULLs: a row of F meets the
//! same rows of D as the partial row of its key does, and a NULL key meets none either way.
//! The rule only rewrites what it can combine exactly: an inner equi-join without a further
//! join condition, every grouping expression over D's columns alone (so at least one), and
//! aggregates `count`, `sum`, `min`, `max` and `avg` without `DISTINCT`, `FILTER` or
//! `ORDER BY`, over F's columns alone. If the combined result types differ from the
//! original's (a decimal `sum` widens twice), it keeps DataFusion's plan.

use std::any::Any;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, DFSchema, Result};
use datafusion::functions::core::expr_fn::coalesce;
use datafusion::functions_aggregate::average::Avg;
use datafusion::functions_aggregate::count::Count;
use datafusion::functions_aggregate::expr_fn::{count, max, min, sum};
use datafusion::functions_aggregate::min_max::{Max, Min};
use datafusion::functions_aggregate::sum::Sum;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{
    Aggregate, Expr, Join, JoinType, LogicalPlan, LogicalPlanBuilder, cast, col, lit,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// The rewrite, as a DataFusion optimizer rule.
#[derive(Debug, Default)]
pub struct EagerAggregate;

impl OptimizerRule for EagerAggregate {
    fn name(&self) -> &str {
        "cityhub_eager_aggregate"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(aggregate) = &plan else {
            return Ok(Transformed::no(plan));
        };
        match rewrite_aggregate(aggregate)? {
            Some(rewritten) => Ok(Transformed::yes(rewritten)),
            None => Ok(Transformed::no(plan)),
        }
    }
}

/// How one aggregate is computed in two steps.
enum Split {
    /// `count(x)`: counts per key, summed (0, not NULL, when nothing was counted).
    Count,
    /// `sum`, `min` and `max` merge with themselves.
    Same,
    /// `avg(x)`: sums and counts per key; their sums divided.
    Average,
}

fn rewrite_aggregate(aggregate: &Aggregate) -> Result<Option<LogicalPlan>> {
    // The join, possibly under a projection of plain columns (which names the same columns).
    let join = match aggregate.input.as_ref() {
        LogicalPlan::Join(join) => join,
        LogicalPlan::Projection(projection)
            if projection
                .expr
                .iter()
                .all(|expr| matches!(expr, Expr::Column(_))) =>
        {
            match projection.input.as_ref() {
                LogicalPlan::Join(join) => join,
                _ => return Ok(None),
            }
        }
        _ => return Ok(None),
    };
    if join.join_type != JoinType::Inner
        || join.filter.is_some()
        || join.null_aware
        || join.on.is_empty()
        || aggregate.group_expr.is_empty()
        || aggregate
            .group_expr
            .iter()
            .any(|expr| matches!(expr, Expr::GroupingSet(_)))
    {
        return Ok(None);
    }
    // D is the side the groups come from; F, the side aggregated first.
    let over = |expr: &Expr, schema: &DFSchema| {
        expr.column_refs()
            .iter()
            .all(|column| schema.has_column(column))
    };
    let (left, right) = (join.left.schema(), join.right.schema());
    let fact_is_left = if aggregate.group_expr.iter().all(|expr| over(expr, right)) {
        true
    } else if aggregate.group_expr.iter().all(|expr| over(expr, left)) {
        false
    } else {
        return Ok(None);
    };
    let (fact, fact_schema) = if fact_is_left {
        (&join.left, left)
    } else {
        (&join.right, right)
    };
    // Already aggregated (by this rule on an earlier pass, or by the query itself).
    if matches!(fact.as_ref(), LogicalPlan::Aggregate(_)) {
        return Ok(None);
    }

    let mut partial = Vec::new();
    let mut merged = Vec::new();
    let mut splits = Vec::new();
    for (index, expr) in aggregate.aggr_expr.iter().enumerate() {
        let Expr::AggregateFunction(AggregateFunction { func, params }) = expr.clone().unalias()
        else {
            return Ok(None);
        };
        if params.distinct
            || params.filter.is_some()
            || !params.order_by.is_empty()
            || params.null_treatment.is_some()
            || params.args.len() != 1
            || !over(&params.args[0], fact_schema)
        {
            return Ok(None);
        }
        let argument = params.args[0].clone();
        let name = |part: &str| format!("__cityhub_{part}_{index}");
        let inner: &dyn Any = func.inner().as_ref();
        let split = if inner.is::<Count>() {
            partial.push(count(argument).alias(name("partial")));
            merged.push(sum(col(name("partial"))).alias(name("merged")));
            Split::Count
        } else if inner.is::<Sum>() || inner.is::<Min>() || inner.is::<Max>() {
            let step = |expr: Expr| {
                if inner.is::<Sum>() {
                    sum(expr)
                } else if inner.is::<Min>() {
                    min(expr)
                } else {
                    max(expr)
                }
            };
            partial.push(step(argument).alias(name("partial")));
            merged.push(step(col(name("partial"))).alias(name("merged")));
            Split::Same
        } else if inner.is::<Avg>() {
            partial.push(sum(argument.clone()).alias(name("partial_sum")));
            partial.push(count(argument).alias(name("partial_count")));
            merged.push(sum(col(name("partial_sum"))).alias(name("merged_sum")));
            merged.push(sum(col(name("partial_count"))).alias(name("merged_count")));
            Split::Average
        } else {
            return Ok(None);
        };
        splits.push(split);
    }

    // F grouped by its join keys, joined to D on the same keys.
    let mut fact_keys = Vec::new();
    let mut on = Vec::new();
    for (index, (left_key, right_key)) in join.on.iter().enumerate() {
        let (fact_key, dimension_key) = if fact_is_left {
            (left_key, right_key)
        } else {
            (right_key, left_key)
        };
        let name = format!("__cityhub_key_{index}");
        fact_keys.push(fact_key.clone().alias(&name));
        on.push((col(name), dimension_key.clone()));
    }
    let pre_aggregated = LogicalPlanBuilder::from(Arc::clone(fact))
        .aggregate(fact_keys, partial)?
        .build()?;
    let dimension = if fact_is_left {
        &join.right
    } else {
        &join.left
    };
    let joined = Join::try_new(
        Arc::new(pre_aggregated),
        Arc::clone(dimension),
        on,
        None,
        JoinType::Inner,
        join.join_constraint,
        join.null_equality,
        false,
    )?;
    let grouped = LogicalPlanBuilder::from(LogicalPlan::Join(joined))
        .aggregate(aggregate.group_expr.clone(), merged)?
        .build()?;

    // The original's columns, under the original's names.
    let groups = aggregate.group_expr.len();
    let mut columns: Vec<Expr> = (0..groups)
        .map(|index| Expr::Column(Column::from(grouped.schema().qualified_field(index))))
        .collect();
    for (index, split) in splits.iter().enumerate() {
        let merged = |part: &str| col(format!("__cityhub_{part}_{index}"));
        columns.push(match split {
            Split::Count => coalesce(vec![merged("merged"), lit(0_i64)]),
            Split::Same => merged("merged"),
            // The sum is NULL exactly when nothing was counted, so no division by zero.
            Split::Average => {
                cast(merged("merged_sum"), DataType::Float64)
                    / cast(merged("merged_count"), DataType::Float64)
            }
        });
    }
    let columns = columns
        .into_iter()
        .enumerate()
        .map(|(index, expr)| {
            let (qualifier, field) = aggregate.schema.qualified_field(index);
            match &expr {
                Expr::Column(column)
                    if column.relation.as_ref() == qualifier && column.name == *field.name() =>
                {
                    expr
                }
                _ => expr.alias_qualified(qualifier.cloned(), field.name()),
            }
        })
        .collect::<Vec<_>>();
    let rewritten = LogicalPlanBuilder::from(grouped)
        .project(columns)?
        .build()?;

    // Only an exact match of names and types replaces the original.
    let same = rewritten.schema().fields().len() == aggregate.schema.fields().len()
        && rewritten.schema().iter().zip(aggregate.schema.iter()).all(
            |((new_qualifier, new), (old_qualifier, old))| {
                new_qualifier == old_qualifier
                    && new.name() == old.name()
                    && new.data_type() == old.data_type()
            },
        );
    Ok(same.then_some(rewritten))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::SessionContext;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn maybe<T>(random: &mut StdRng, value: T) -> Option<T> {
        random.random_range(0..8).ne(&0).then_some(value)
    }

    /// A fact table `f` and a dimension table `d` with NULL and duplicate keys. Floats hold
    /// whole numbers, so sums do not depend on the order they are added in.
    fn context(rewrite: bool, random: &mut StdRng) -> SessionContext {
        let rows = random.random_range(0..200);
        let keys = random.random_range(1..8);
        let mut column = |f: &mut dyn FnMut(&mut StdRng) -> Option<i64>| -> Vec<Option<i64>> {
            (0..rows).map(|_| f(random)).collect()
        };
        let k = column(&mut |r| {
            let key = r.random_range(0..keys);
            maybe(r, key)
        });
        let k2 = column(&mut |r| Some(r.random_range(0..2)));
        let v = column(&mut |r| {
            let value = r.random_range(-50..50);
            maybe(r, value)
        });
        let w: Vec<Option<f64>> = column(&mut |r| {
            let value = r.random_range(0..1000);
            maybe(r, value)
        })
        .into_iter()
        .map(|value| value.map(|value| value as f64))
        .collect();
        let s: Vec<Option<String>> = column(&mut |r| {
            let value = r.random_range(0..30);
            maybe(r, value)
        })
        .into_iter()
        .map(|value| value.map(|value| format!("s{value}")))
        .collect();
        let fact = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("k", DataType::Int64, true),
                Field::new("k2", DataType::Int64, false),
                Field::new("v", DataType::Int64, true),
                Field::new("w", DataType::Float64, true),
                Field::new("s", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(Int64Array::from(k)),
                Arc::new(Int64Array::from(k2)),
                Arc::new(Int64Array::from(v)),
                Arc::new(Float64Array::from(w)),
                Arc::new(StringArray::from(s)),
            ],
        )
        .expect("fact");
        let dimension_rows = random.random_range(0..12);
        let dimension = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("k", DataType::Int64, true),
                Field::new("k2", DataType::Int64, false),
                Field::new("name", DataType::Utf8, false),
                Field::new("grp", DataType::Int64, true),
            ])),
            vec![
                Arc::new(Int64Array::from(
                    (0..dimension_rows)
                        .map(|_| {
                            let key = random.random_range(0..keys + 1);
                            maybe(random, key)
                        })
                        .collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from_iter_values(
                    (0..dimension_rows).map(|_| random.random_range(0..2)),
                )),
                Arc::new(StringArray::from_iter_values(
                    (0..dimension_rows).map(|_| format!("n{}", random.random_range(0..4))),
                )),
                Arc::new(Int64Array::from(
                    (0..dimension_rows)
                        .map(|_| {
                            let group = random.random_range(0..3);
                            maybe(random, group)
                        })
                        .collect::<Vec<_>>(),
                )),
            ],
        )
        .expect("dimension");
        let mut builder = SessionStateBuilder::new().with_default_features();
        if rewrite {
            builder = builder.with_optimizer_rule(Arc::new(EagerAggregate));
        }
        let ctx = SessionContext::new_with_state(builder.build());
        for (name, batch) in [("f", fact), ("d", dimension)] {
            let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).expect("table");
            ctx.register_table(name, Arc::new(table)).expect("register");
        }
        ctx
    }

    async fn answer(ctx: &SessionContext, sql: &str) -> String {
        let frame = ctx.sql(sql).await.expect(sql);
        let schema = format!("{:?}", frame.schema().fields());
        let batches = frame.collect().await.expect(sql);
        format!(
            "{schema}\n{}",
            pretty_format_batches(&batches).expect("format")
        )
    }

    const QUERIES: &[&str] = &[
        "SELECT d.name, count(*), count(f.v), sum(f.v), min(f.s), max(f.w), avg(f.v), avg(f.w) \
         FROM f JOIN d ON f.k = d.k GROUP BY d.name ORDER BY d.name",
        "SELECT d.grp, d.name, sum(f.w) AS total, max(f.v) FROM d JOIN f ON d.k = f.k \
         GROUP BY d.grp, d.name ORDER BY d.grp NULLS FIRST, d.name",
        "SELECT d.name, count(*) AS n FROM f JOIN d ON f.k = d.k AND f.k2 = d.k2 \
         WHERE f.v > 3 GROUP BY d.name HAVING count(*) > 1 ORDER BY d.name",
        "SELECT d.grp + 1 AS g, min(f.v) FROM f JOIN d USING (k) GROUP BY d.grp + 1 ORDER BY g",
        // Not rewritten: a distinct count, a group over F, a join condition beyond the keys.
        "SELECT d.name, count(DISTINCT f.v) FROM f JOIN d ON f.k = d.k GROUP BY d.name ORDER BY 1",
        "SELECT f.s, count(*) FROM f JOIN d ON f.k = d.k GROUP BY f.s ORDER BY 1 NULLS FIRST",
        "SELECT d.name, count(*) FROM f JOIN d ON f.k = d.k AND f.v < d.grp \
         GROUP BY d.name ORDER BY 1",
    ];

    #[tokio::test]
    async fn pre_aggregating_gives_the_same_answers_on_random_tables() {
        for seed in 0..40 {
            let plain = context(false, &mut StdRng::seed_from_u64(seed));
            let rewritten = context(true, &mut StdRng::seed_from_u64(seed));
            for sql in QUERIES {
                assert_eq!(
                    answer(&rewritten, sql).await,
                    answer(&plain, sql).await,
                    "seed {seed}: {sql}"
                );
            }
        }
    }

    #[tokio::test]
    async fn the_large_side_is_grouped_by_the_join_key_below_the_join() {
        let ctx = context(true, &mut StdRng::seed_from_u64(7));
        let plan = |sql: &'static str| {
            let ctx = ctx.clone();
            async move {
                ctx.sql(sql)
                    .await
                    .expect("plan")
                    .into_optimized_plan()
                    .expect("optimize")
                    .display_indent()
                    .to_string()
            }
        };
        let text =
            plan("SELECT d.name, count(*), avg(f.w) FROM f JOIN d ON f.k = d.k GROUP BY d.name")
                .await;
        let join = text.find("Inner Join").expect(&text);
        let pre = text
            .find("Aggregate: groupBy=[[f.k AS __cityhub_key_0]]")
            .expect(&text);
        assert!(pre > join, "{text}");
        assert_eq!(text.matches("Aggregate:").count(), 2, "{text}");

        let text =
            plan("SELECT d.name, count(DISTINCT f.v) FROM f JOIN d ON f.k = d.k GROUP BY d.name")
                .await;
        assert!(!text.contains("__cityhub_key"), "{text}");
    }
}
