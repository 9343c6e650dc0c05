//! Optimized plans of SQL asked again, kept per principal and reused while nothing they
//! depend on has changed.
//!
//! Dashboards, BI tools and scripts send the same SQL text over and over; parsing it,
//! turning it into a logical plan and running DataFusion's ~30 logical optimizer rules cost
//! more than answering a small query (`SELECT count(*)` of a code table: about half of the
//! engine's time per request; BENCHMARKS.md, "SQL against DuckDB", the run of 2026-12-07
//! 05:01 UTC).
//!
//! A logical plan depends on the SQL text, on who asks (their role, department and region
//! scope decide masks and row filters) and on each table it names: the dataset's columns,
//! snapshot and sharing, and how this principal may read it. An entry is keyed by the SQL
//! and the principal's id, and keeps the principal and the state of every table the
//! unoptimized plan named; it is reused only when all of them are equal to what the
//! request's own view says now. A new snapshot, a changed grant, an expired grant or a
//! renamed column changes that state, so the next request plans afresh.
//!
//! A kept plan holds no table, only each scan's columns, and a reused plan reads nothing
//! through the request that planned it: every table scan is bound again to the table this
//! request's view resolves (its snapshot, its masks, its row filters, its audit log of what
//! was read), and the plan is dropped if a table's columns differ from the cached scan's.
//! Physical planning, where files are pruned and statistics chosen, runs for every request.
//!
//! Not cached: statements with parameters, `EXPLAIN`, and plans that call a function
//! whose answer is not fixed by its arguments (`now()`, `current_date`, `random()`): the
//! optimizer folds `now()` into the plan as a constant.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cityhub_catalog::{Access, Dataset, Principal};
use datafusion::catalog::TableProvider;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{ResolvedTableReference, TableReference};
use datafusion::datasource::provider_as_source;
use datafusion::error::Result;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalTableSource, Volatility};

use crate::time_travel::split_table_name;
use crate::view::{CATALOG_NAME, RequestView, SYSTEM_SCHEMA};

/// Optimized plans by SQL text and principal.
pub(crate) struct PlanCache {
    plans: Option<moka::sync::Cache<(String, i64), Arc<CachedPlan>>>,
    /// Plans reused so far, for tests and benchmarks (`/metrics` has them by outcome).
    reused: AtomicU64,
}

/// An optimized plan and what it was planned against.
struct CachedPlan {
    optimized: LogicalPlan,
    principal: Principal,
    tables: Vec<(ResolvedTableReference, TableState)>,
}

/// What a plan depends on of one table it names.
#[derive(Debug, Clone, PartialEq)]
enum TableState {
    /// A dataset as the principal may read it (the grant's columns, masks and rows).
    Dataset(Box<(Dataset, Access)>),
    /// A `hub` system table or an `information_schema` table: fixed columns, rows read at
    /// scan time from the request's view.
    System,
}

impl PlanCache {
    /// A cache of at most `entries` plans; 0 turns it off.
    pub(crate) fn new(entries: u64) -> Self {
        Self {
            plans: (entries > 0).then(|| moka::sync::Cache::new(entries)),
            reused: AtomicU64::new(0),
        }
    }

    /// How many plans were reused so far.
    pub(crate) fn reused(&self) -> u64 {
        self.reused.load(Ordering::Relaxed)
    }

    /// The cached plan of `sql` for this request, bound to the request's tables, when the
    /// principal and every table it names are as they were when it was planned.
    pub(crate) async fn reuse(
        &self,
        sql: &str,
        state: &SessionState,
        view: &RequestView,
    ) -> Result<Option<LogicalPlan>> {
        let Some(plans) = &self.plans else {
            return Ok(None);
        };
        let Some(cached) = plans.get(&(sql.to_string(), view.principal.id)) else {
            metrics::counter!("cityhub_query_plans_total", "outcome" => "planned").increment(1);
            return Ok(None);
        };
        let unchanged = cached.principal == view.principal
            && cached.tables.iter().all(|(name, then)| match then {
                TableState::System => is_system_table(name),
                TableState::Dataset(then) => readable_dataset(view, name) == Some(&**then),
            });
        let rebound = match unchanged {
            true => rebind(&cached.optimized, state).await?,
            false => None,
        };
        let outcome = match rebound {
            Some(_) => {
                self.reused.fetch_add(1, Ordering::Relaxed);
                "reused"
            }
            None => "replanned",
        };
        metrics::counter!("cityhub_query_plans_total", "outcome" => outcome).increment(1);
        Ok(rebound)
    }

    /// Keeps the optimized plan of `sql` for the next request of the same principal, when
    /// the plan may be reused (see the module's documentation).
    pub(crate) fn keep(
        &self,
        sql: &str,
        state: &SessionState,
        view: &RequestView,
        planned: &LogicalPlan,
        optimized: &LogicalPlan,
    ) -> Result<()> {
        let Some(plans) = &self.plans else {
            return Ok(());
        };
        if !reusable(planned)? {
            return Ok(());
        }
        let defaults = &state.config_options().catalog;
        let mut tables = Vec::new();
        for name in scanned_tables(planned)? {
            let name = name.resolve(&defaults.default_catalog, &defaults.default_schema);
            if tables.iter().any(|(known, _)| *known == name) {
                continue;
            }
            let Some(now) = table_state(view, &name) else {
                return Ok(());
            };
            tables.push((name, now));
        }
        plans.insert(
            (sql.to_string(), view.principal.id),
            Arc::new(CachedPlan {
                optimized: unbound(optimized)?,
                principal: view.principal.clone(),
                tables,
            }),
        );
        Ok(())
    }
}

/// The state of a table as `view` resolves it now; `None` for a table the view does not
/// let its principal read (the plan must be made again, and refused), or one outside the
/// hub's catalog.
fn table_state(view: &RequestView, name: &ResolvedTableReference) -> Option<TableState> {
    if is_system_table(name) {
        return Some(TableState::System);
    }
    let read = readable_dataset(view, name)?;
    Some(TableState::Dataset(Box::new(read.clone())))
}

/// Whether `name` is a `hub` system table or an `information_schema` table.
fn is_system_table(name: &ResolvedTableReference) -> bool {
    *name.catalog == *CATALOG_NAME
        && (*name.schema == *SYSTEM_SCHEMA || *name.schema == *"information_schema")
}

/// The dataset `name` resolves to in `view`, with how its principal may read it.
fn readable_dataset<'v>(
    view: &'v RequestView,
    name: &ResolvedTableReference,
) -> Option<&'v (Dataset, Access)> {
    if *name.catalog != *CATALOG_NAME {
        return None;
    }
    let (table, _as_of) = split_table_name(&name.table);
    view.readable(&name.schema, table)
}

/// Whether a plan may be reused: no parameters, no `EXPLAIN` (its text shows the plans
/// and timings of one run), no function whose answer changes between calls.
fn reusable(plan: &LogicalPlan) -> Result<bool> {
    if !matches!(
        plan,
        LogicalPlan::Projection(_)
            | LogicalPlan::Filter(_)
            | LogicalPlan::Aggregate(_)
            | LogicalPlan::Sort(_)
            | LogicalPlan::Limit(_)
            | LogicalPlan::Join(_)
            | LogicalPlan::Union(_)
            | LogicalPlan::Distinct(_)
            | LogicalPlan::Window(_)
            | LogicalPlan::SubqueryAlias(_)
            | LogicalPlan::TableScan(_)
    ) {
        return Ok(false);
    }
    let mut fixed = true;
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|expr| {
                let changing = match expr {
                    Expr::Placeholder(_) => true,
                    Expr::ScalarFunction(call) => {
                        call.func.signature().volatility != Volatility::Immutable
                    }
                    _ => false,
                };
                if changing {
                    fixed = false;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })?;
    Ok(fixed)
}

/// The tables a plan scans, subqueries included, as named in it.
fn scanned_tables(plan: &LogicalPlan) -> Result<Vec<TableReference>> {
    let mut tables = Vec::new();
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            tables.push(scan.table_name.clone());
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(tables)
}

/// `plan` with every scan's table replaced by its columns alone: a kept plan must not hold
/// the request's tables (their read log, the rows of `hub` tables built for it) alive.
fn unbound(plan: &LogicalPlan) -> Result<LogicalPlan> {
    let unbound = plan
        .clone()
        .transform_up_with_subqueries(|node| match node {
            LogicalPlan::TableScan(mut scan) => {
                scan.source = Arc::new(LogicalTableSource::new(scan.source.schema()));
                Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
            }
            other => Ok(Transformed::no(other)),
        })?;
    Ok(unbound.data)
}

/// `plan` with every scan reading the table `state` resolves for its name; `None` when a
/// table cannot be resolved or its columns differ from the scan's.
async fn rebind(plan: &LogicalPlan, state: &SessionState) -> Result<Option<LogicalPlan>> {
    let mut providers: HashMap<TableReference, Arc<dyn TableProvider>> = HashMap::new();
    for name in scanned_tables(plan)? {
        if providers.contains_key(&name) {
            continue;
        }
        // Whatever cannot be resolved now is planned afresh, which says why if it fails.
        let Ok(schema) = state.schema_for_ref(name.clone()) else {
            return Ok(None);
        };
        let Ok(Some(provider)) = schema.table(name.table()).await else {
            return Ok(None);
        };
        providers.insert(name, provider);
    }
    let mut all_bound = true;
    let rebound = plan
        .clone()
        .transform_up_with_subqueries(|node| match node {
            LogicalPlan::TableScan(mut scan) => {
                let Some(provider) = providers
                    .get(&scan.table_name)
                    .filter(|provider| provider.schema() == scan.source.schema())
                else {
                    all_bound = false;
                    return Ok(Transformed::new(
                        LogicalPlan::TableScan(scan),
                        false,
                        TreeNodeRecursion::Stop,
                    ));
                };
                scan.source = provider_as_source(provider.clone());
                Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
            }
            other => Ok(Transformed::no(other)),
        })?
        .data;
    Ok(all_bound.then_some(rebound))
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    use super::*;

    async fn reusable_sql(sql: &str) -> bool {
        let context = SessionContext::new();
        let plan = context
            .state()
            .create_logical_plan(sql)
            .await
            .expect("plans");
        reusable(&plan).expect("walks")
    }

    /// A context holding table `t` with the given column type and values.
    fn context_with(values: Vec<i64>, as_text: bool) -> SessionContext {
        use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        use datafusion::arrow::record_batch::RecordBatch;
        use datafusion::datasource::MemTable;
        let (kind, column): (DataType, ArrayRef) = match as_text {
            false => (DataType::Int64, Arc::new(Int64Array::from(values))),
            true => (
                DataType::Utf8,
                Arc::new(StringArray::from_iter_values(
                    values.iter().map(|v| v.to_string()),
                )),
            ),
        };
        let schema = Arc::new(Schema::new(vec![Field::new("a", kind, false)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![column]).expect("batch");
        let table = MemTable::try_new(schema, vec![vec![batch]]).expect("table");
        let context = SessionContext::new();
        context
            .register_table("t", Arc::new(table))
            .expect("registers");
        context
    }

    #[tokio::test]
    async fn a_kept_plan_holds_no_table_and_reads_the_tables_it_is_bound_to() {
        let sql = "SELECT a, (SELECT max(a) FROM t) AS top FROM t \
                   WHERE a IN (SELECT a FROM t WHERE a > 1) ORDER BY a";
        let first = context_with(vec![1, 2, 3], false);
        let optimized = first
            .state()
            .optimize(&first.state().create_logical_plan(sql).await.expect("plans"))
            .expect("optimizes");
        let kept = unbound(&optimized).expect("unbinds");
        let mut scans = 0;
        kept.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                scans += 1;
                assert!(
                    datafusion::datasource::source_as_provider(&scan.source).is_err(),
                    "a kept scan holds its columns only"
                );
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .expect("walks");
        assert!(scans >= 2, "{kept}");

        // Bound in another session, the plan reads that session's rows.
        let second = context_with(vec![5, 6, 7, 8], false);
        let state = second.state();
        let bound = rebind(&kept, &state)
            .await
            .expect("rebinds")
            .expect("same columns");
        let physical = state
            .query_planner()
            .create_physical_plan(&bound, &state)
            .await
            .expect("plans physically");
        let batches = datafusion::physical_plan::collect(physical, second.task_ctx())
            .await
            .expect("runs");
        let shown = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .expect("formats")
            .to_string();
        for row in ["| 5 | 8   |", "| 8 | 8   |"] {
            assert!(shown.contains(row), "{shown}");
        }

        // A table whose columns changed is not bound: the statement is planned afresh.
        let changed = context_with(vec![1], true);
        assert!(
            rebind(&kept, &changed.state())
                .await
                .expect("rebinds")
                .is_none()
        );
    }

    #[tokio::test]
    async fn plans_that_read_the_clock_take_parameters_or_explain_are_not_kept() {
        assert!(reusable_sql("SELECT 1 AS one").await);
        assert!(reusable_sql("SELECT upper('a') AS a ORDER BY a LIMIT 1").await);
        assert!(!reusable_sql("SELECT now()").await);
        assert!(!reusable_sql("SELECT current_date").await);
        assert!(!reusable_sql("SELECT random()").await);
        assert!(!reusable_sql("SELECT 1 WHERE 2 > $1").await);
        assert!(
            !reusable_sql("SELECT (SELECT now()) AS at").await,
            "in a subquery"
        );
        assert!(!reusable_sql("EXPLAIN SELECT 1").await);
    }
}
