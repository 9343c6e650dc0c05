//! Dashboard endpoints on the engine: which tables a saved query reads, and running it with
//! named, typed parameters on the snapshots its cache key names.
//!
//! A result cache needs, for every call, the versions of everything the answer depends on.
//! The SQL of an endpoint version never changes, so its sources are learned once by
//! planning it; after that a call only looks the versions up.

use std::collections::{BTreeSet, HashMap};

use cityhub_catalog::Principal;
use cityhub_catalog::endpoint::{CALLER_REGION, EndpointSpec, ParamValue};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};

use crate::view::{CATALOG_NAME, Pins, SYSTEM_SCHEMA};
use crate::{QueryEngine, QueryError, QueryResult};

/// Something an endpoint's result depends on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// A department's dataset: the result changes when it commits a snapshot.
    Dataset { id: i64, name: String },
    /// The catalog's listings (`hub.datasets`, `hub.snapshots`, `information_schema`):
    /// change with any commit or new dataset.
    Catalog,
    /// Something that changes without a commit (`hub.cameras`, whose statuses follow the
    /// clock; `now()` and other non-deterministic functions): recomputed on a timer.
    Live(String),
    /// `$caller_region`: the calling principal's region scope, bound per call.
    CallerRegion,
}

/// System tables that change with every commit or new dataset.
const CATALOG_TABLES: &[&str] = &["datasets", "snapshots"];
/// System tables that never change while the hub runs.
const STATIC_TABLES: &[&str] = &["regions"];

impl QueryEngine {
    /// Plans an endpoint's SQL as `principal` (its owner) and answers what the result
    /// depends on. Checks that every `$name` in the SQL is a declared parameter and every
    /// declared parameter is used.
    pub async fn endpoint_sources(
        &self,
        principal: &Principal,
        spec: &EndpointSpec,
    ) -> Result<Vec<Source>, QueryError> {
        let (_, plan, view) = self
            .plan(
                principal,
                &spec.sql,
                Default::default(),
                &Pins::default(),
                &crate::Origin::http(),
            )
            .await?;
        let used: BTreeSet<String> = plan
            .get_parameter_names()
            .map_err(QueryError::from_datafusion)?
            .into_iter()
            .map(|id| id.trim_start_matches('$').to_string())
            .collect();
        let mut sources = BTreeSet::new();
        for name in &used {
            if name == CALLER_REGION {
                sources.insert(Source::CallerRegion);
                continue;
            }
            if name.parse::<usize>().is_ok() {
                return Err(QueryError::Parameter(format!(
                    "${name}: endpoints name their parameters ($region, $day), not number them"
                )));
            }
            if !spec.params.iter().any(|p| &p.name == name) {
                return Err(QueryError::Parameter(format!(
                    "${name} is in the SQL but not declared in params"
                )));
            }
        }
        if let Some((index, param)) = spec
            .params
            .iter()
            .enumerate()
            .find(|(_, p)| !used.contains(&p.name))
        {
            return Err(QueryError::Parameter(format!(
                "params[{index}] ({}) is declared but the SQL has no ${}",
                param.name, param.name
            )));
        }

        plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                let name = scan.table_name.clone().resolve(CATALOG_NAME, SYSTEM_SCHEMA);
                let (schema, table) = (name.schema.as_ref(), name.table.as_ref());
                // A time-travelling read changes at most when its dataset does (then an
                // instant may name a newer snapshot); it is a source like the dataset.
                let (table, _) = crate::time_travel::split_table_name(table);
                let source = match view.readable(schema, table) {
                    Some((dataset, _)) => Some(Source::Dataset {
                        id: dataset.id,
                        name: dataset.name.to_string(),
                    }),
                    None if schema != SYSTEM_SCHEMA || CATALOG_TABLES.contains(&table) => {
                        Some(Source::Catalog)
                    }
                    None if STATIC_TABLES.contains(&table) => None,
                    None => Some(Source::Live(format!("{schema}.{table}"))),
                };
                sources.extend(source);
            }
            node.apply_expressions(|expr| {
                expr.apply(|e| {
                    if let Expr::ScalarFunction(call) = e
                        && call.func.signature().volatility != Volatility::Immutable
                    {
                        sources.insert(Source::Live(format!("{}()", call.func.name())));
                    }
                    Ok(TreeNodeRecursion::Continue)
                })
            })?;
            Ok(TreeNodeRecursion::Continue)
        })
        .map_err(QueryError::from_datafusion)?;
        Ok(sources.into_iter().collect())
    }

    /// Runs an endpoint's SQL as `principal` with its parameters bound by name, reading
    /// each pinned dataset at the given snapshot. Audited like any query.
    pub async fn execute_endpoint(
        &self,
        principal: &Principal,
        sql: &str,
        params: &[(String, ParamValue)],
        pins: &Pins,
    ) -> Result<QueryResult, QueryError> {
        let bindings = (!params.is_empty()).then(|| {
            Ok(ParamValues::from(
                params
                    .iter()
                    .map(|(name, value)| (name.clone(), scalar(value)))
                    .collect::<HashMap<String, ScalarValue>>(),
            ))
        });
        let audited = serde_json::Value::Object(
            params
                .iter()
                .map(|(name, value)| (name.clone(), value.to_string().into()))
                .collect(),
        );
        self.run(
            principal,
            sql,
            bindings,
            audited,
            pins,
            &crate::Origin::http(),
        )
        .await
    }
}

/// A parameter value as the SQL value it is bound as.
pub fn scalar(value: &ParamValue) -> ScalarValue {
    match value {
        ParamValue::Int(v) => ScalarValue::Int64(Some(*v)),
        ParamValue::Float(v) => ScalarValue::Float64(Some(*v)),
        ParamValue::Text(v) => ScalarValue::Utf8(Some(v.clone())),
        ParamValue::Bool(v) => ScalarValue::Boolean(Some(*v)),
        ParamValue::Date(v) => {
            let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
            ScalarValue::Date32(i32::try_from((*v - epoch).num_days()).ok())
        }
        ParamValue::Timestamp(v) => ScalarValue::TimestampMicrosecond(Some(*v), Some("UTC".into())),
    }
}
