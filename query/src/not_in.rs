//! `x NOT IN (subquery)` without DataFusion's null-aware anti join.
//!
//! SQL's `NOT IN` is three-valued: a NULL `x`, or a NULL anywhere in the subquery, makes it
//! NULL rather than TRUE. DataFusion keeps that meaning with a null-aware anti join, which
//! must hold the *outer* side in memory and probe it with the subquery: for
//! `events.county_code NOT IN (SELECT code FROM counties)` that is a hash table of 10M rows
//! built to be probed by 5 (7.5x DuckDB's time, BENCHMARKS.md). A `NOT EXISTS` has no NULL
//! semantics, so DataFusion builds the small side and streams the large one.
//!
//! In a filter (where NULL and FALSE both drop the row) the two are equivalent once the
//! subquery's shape is known:
//!
//! ```text
//! x NOT IN (S)  ≡  NOT EXISTS (S WHERE c = x)
//!                  AND (state(S) = 0 OR (state(S) = 1 AND x IS NOT NULL))
//! ```
//!
//! where `state(S)` is 0 when S is empty (then `NOT IN` is TRUE for every x, NULL too),
//! 1 when S has rows and no NULL (TRUE exactly for a non-NULL x matching nothing) and
//! 2 when S holds a NULL (never TRUE). `state` is one uncorrelated scalar subquery over S:
//! S is read twice, and it is the small side. The rule runs before DataFusion's own
//! subquery decorrelation and only rewrites top-level conjuncts of a filter, over a plain
//! column, with an uncorrelated subquery; whatever else keeps DataFusion's plan. When
//! neither side can be NULL DataFusion already plans a plain anti join and nothing changes.

use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, Result};
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::logical_expr::expr::InSubquery;
use datafusion::logical_expr::utils::{conjunction, split_conjunction_owned};
use datafusion::logical_expr::{
    Expr, ExprSchemable, Filter, LogicalPlan, LogicalPlanBuilder, lit, not_exists, out_ref_col,
    scalar_subquery, when,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// The rewrite, as a DataFusion optimizer rule (placed before its decorrelation).
#[derive(Debug, Default)]
pub struct NotInToAntiJoin;

impl OptimizerRule for NotInToAntiJoin {
    fn name(&self) -> &str {
        "cityhub_not_in_to_anti_join"
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
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Filter(filter) = plan else {
            return Ok(Transformed::no(plan));
        };
        let mut changed = false;
        let mut conjuncts = Vec::new();
        for conjunct in split_conjunction_owned(filter.predicate.clone()) {
            match rewrite_not_in(&conjunct, &filter.input, config)? {
                Some(rewritten) => {
                    changed = true;
                    conjuncts.extend(rewritten);
                }
                None => conjuncts.push(conjunct),
            }
        }
        if !changed {
            return Ok(Transformed::no(LogicalPlan::Filter(filter)));
        }
        let predicate = conjunction(conjuncts).unwrap_or_else(|| lit(true));
        let rewritten = Filter::try_new(predicate, filter.input)?;
        Ok(Transformed::yes(LogicalPlan::Filter(rewritten)))
    }
}

/// The conjuncts replacing `conjunct` when it is a `column NOT IN (uncorrelated subquery)`
/// that may meet a NULL.
fn rewrite_not_in(
    conjunct: &Expr,
    input: &LogicalPlan,
    config: &dyn OptimizerConfig,
) -> Result<Option<Vec<Expr>>> {
    let Expr::InSubquery(InSubquery {
        expr,
        subquery,
        negated: true,
    }) = conjunct
    else {
        return Ok(None);
    };
    let Expr::Column(outer) = expr.as_ref() else {
        return Ok(None);
    };
    if !subquery.outer_ref_columns.is_empty() || subquery.subquery.schema().fields().len() != 1 {
        return Ok(None);
    }
    let outer_schema = input.schema();
    let outer_nullable = expr.nullable(outer_schema)?;
    let values = subquery.subquery.as_ref();
    let inner = Expr::Column(Column::from(values.schema().qualified_field(0)));
    let inner_nullable = values.schema().field(0).is_nullable();
    if !outer_nullable && !inner_nullable {
        // DataFusion plans a plain anti join itself.
        return Ok(None);
    }
    let outer_type = expr.get_type(outer_schema)?;
    // The subquery inside the `NOT EXISTS` gets a name of its own: over the outer query's
    // own table, its column would otherwise meet itself once decorrelated.
    let alias = config.alias_generator().next("__cityhub_not_in");
    let aliased = LogicalPlanBuilder::from(values.clone())
        .alias(alias)?
        .build()?;
    let aliased_inner = Expr::Column(Column::from(aliased.schema().qualified_field(0)));
    let matching = LogicalPlanBuilder::from(aliased)
        .filter(aliased_inner.eq(out_ref_col(outer_type, outer.clone())))?
        .build()?;
    let state = LogicalPlanBuilder::from(values.clone())
        .aggregate(
            Vec::<Expr>::new(),
            vec![count(lit(1)).alias("rows"), count(inner).alias("values")],
        )?
        .project(vec![
            when(
                Expr::Column(Column::from_name("rows")).eq(lit(0i64)),
                lit(0i64),
            )
            .when(
                Expr::Column(Column::from_name("values"))
                    .eq(Expr::Column(Column::from_name("rows"))),
                lit(1i64),
            )
            .otherwise(lit(2i64))?
            .alias("state"),
        ])?
        .build()?;
    let state = scalar_subquery(Arc::new(state));
    let may_hold = state
        .clone()
        .eq(lit(0i64))
        .or(state.eq(lit(1i64)).and(expr.as_ref().clone().is_not_null()));
    Ok(Some(vec![not_exists(Arc::new(matching)), may_hold]))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::optimizer::Optimizer;
    use datafusion::prelude::SessionContext;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn table(name: &str, nullable: bool, values: &[Option<i64>]) -> (String, Arc<MemTable>) {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "v",
            DataType::Int64,
            nullable,
        )]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(values.to_vec()))],
        )
        .expect("batch");
        let table = MemTable::try_new(schema, vec![vec![batch]]).expect("table");
        (name.to_string(), Arc::new(table))
    }

    fn context(rewrite: bool, tables: &[(String, Arc<MemTable>)]) -> SessionContext {
        let mut rules = Optimizer::new().rules;
        if rewrite {
            rules.insert(0, Arc::new(NotInToAntiJoin));
        }
        let state = SessionStateBuilder::new()
            .with_default_features()
            .with_optimizer_rules(rules)
            .build();
        let ctx = SessionContext::new_with_state(state);
        for (name, table) in tables {
            ctx.register_table(name.as_str(), table.clone())
                .expect("register");
        }
        ctx
    }

    async fn answer(ctx: &SessionContext, sql: &str) -> Vec<Option<i64>> {
        let batches = ctx
            .sql(sql)
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run");
        let mut values: Vec<Option<i64>> = batches
            .iter()
            .flat_map(|batch| {
                let column = batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .expect("int64")
                    .clone();
                column.iter().collect::<Vec<_>>()
            })
            .collect();
        values.sort();
        values
    }

    async fn plan_text(ctx: &SessionContext, sql: &str) -> String {
        let plan = ctx
            .sql(sql)
            .await
            .expect("plan")
            .into_optimized_plan()
            .expect("optimize");
        plan.display_indent().to_string()
    }

    /// The same answers as DataFusion's null-aware anti join on random tables with NULLs
    /// on either side, empty subqueries, all-NULL subqueries and non-nullable columns.
    #[tokio::test]
    async fn answers_equal_the_null_aware_join() {
        let mut random = StdRng::seed_from_u64(1400);
        let queries = [
            "SELECT v FROM outer_t WHERE v NOT IN (SELECT v FROM inner_t)",
            "SELECT v FROM outer_t WHERE v NOT IN (SELECT v FROM inner_t WHERE v > 2) AND v <> 7",
            "SELECT v FROM outer_t WHERE v NOT IN (SELECT v + 1 FROM inner_t)",
            "SELECT v FROM outer_t WHERE v NOT IN (SELECT v FROM inner_t WHERE v IS NOT NULL)",
            "SELECT v FROM outer_t WHERE v NOT IN (SELECT v FROM inner_t WHERE false)",
            // The outer table itself in the subquery: its column must not meet itself.
            "SELECT v FROM outer_t WHERE v NOT IN (SELECT v FROM outer_t WHERE v > 3)",
            "SELECT v FROM outer_t WHERE v NOT IN (SELECT v FROM outer_t WHERE v > 3) \
             AND v NOT IN (SELECT v FROM inner_t)",
        ];
        for round in 0..60 {
            let sample = |random: &mut StdRng, len: usize, nulls: bool| -> Vec<Option<i64>> {
                (0..len)
                    .map(|_| {
                        (!nulls || random.random_range(0..4) > 0)
                            .then(|| random.random_range(0..10))
                    })
                    .collect()
            };
            let outer_nulls = round % 2 == 0;
            let inner_nulls = round % 3 == 0;
            let outer_len = random.random_range(0..30);
            let inner_len = if round % 5 == 0 {
                0
            } else {
                random.random_range(1..8)
            };
            let outer_values = sample(&mut random, outer_len, outer_nulls);
            let inner_values = sample(&mut random, inner_len, inner_nulls);
            let tables = [
                table("outer_t", outer_nulls, &outer_values),
                table("inner_t", inner_nulls, &inner_values),
            ];
            let reference = context(false, &tables);
            let rewritten = context(true, &tables);
            for sql in queries {
                assert_eq!(
                    answer(&rewritten, sql).await,
                    answer(&reference, sql).await,
                    "{sql} with outer {outer_values:?} and inner {inner_values:?}"
                );
            }
        }
    }

    #[tokio::test]
    async fn the_rewritten_plan_has_no_null_aware_join() {
        let tables = [
            table("outer_t", true, &[Some(1), None, Some(3)]),
            table("inner_t", false, &[Some(1)]),
        ];
        let sql = "SELECT v FROM outer_t WHERE v NOT IN (SELECT v FROM inner_t)";
        assert!(
            plan_text(&context(false, &tables), sql)
                .await
                .contains("null_aware")
        );
        let plan = plan_text(&context(true, &tables), sql).await;
        assert!(!plan.contains("null_aware"), "{plan}");
        assert!(plan.contains("LeftAnti"), "{plan}");
        // Projections and other expressions are not filters: NULL and FALSE differ there.
        let projected = "SELECT v NOT IN (SELECT v FROM inner_t) FROM outer_t";
        assert_eq!(
            plan_text(&context(true, &tables), projected).await,
            plan_text(&context(false, &tables), projected).await
        );
    }
}
