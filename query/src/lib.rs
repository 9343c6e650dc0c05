//! cityhub SQL: Apache DataFusion over the catalog's snapshots.
//!
//! Layout:
//! - [`QueryEngine`] (this file): one DataFusion runtime per process, so Parquet footers and
//!   statistics stay cached across queries; per query a session whose catalog is the
//!   caller's [`view::RequestView`] and whose memory pool is the query's own.
//! - [`view`]: the per-request catalog: schema = department, table = dataset, pinned to the
//!   snapshot current at the request's start; `hub.*` system tables.
//! - [`table`]: a snapshot as a table: exactly its files, pruned by catalog statistics.
//! - [`guard`]: the closed, read-only SQL surface.
//! - [`endpoint`]: dashboard endpoints: their sources, typed parameters, the result cache
//!   and its invalidation, and streams of new results.
//! - [`encode`]: streaming result encoders (JSON, NDJSON, CSV, Arrow IPC, Parquet).
//! - [`distributed`]: queries on a Ballista cluster, and the codecs that carry the hub's
//!   tables and operators to it.

pub mod cameras;
pub mod distributed;
pub mod encode;
pub mod endpoint;
pub mod error;
pub mod guard;
mod lookup_join;
mod low_cardinality_group_by;
pub mod mask;
mod not_in;
pub mod pg;
mod plan_cache;
pub mod reader;
pub mod rewrite;
pub mod table;
pub mod time_travel;
mod utc_time;
pub mod view;
mod view_keys;

use cityhub_catalog::camera::CameraSettings;
use cityhub_catalog::clock::Clock;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use cityhub_catalog::{Action, AuditEvent, AuditLog, Catalog, Outcome, Principal};
use cityhub_config::QueryConfig;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{CatalogProviderList, MemoryCatalogProviderList};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::execute_stream;
use datafusion::prelude::{SQLOptions, SessionConfig};
use futures::{Stream, StreamExt};
use object_store::ObjectStore;

pub use encode::ResultFormat;
pub use error::QueryError;
pub use reader::{MASKED_FIELD_METADATA, ReadLog};
use view::{CATALOG_NAME, FileListCache, Pins, RequestView, SYSTEM_SCHEMA, ViewContext};

/// Where the engine finds Parquet files: the hub's object store, registered under this URL
/// (a Ballista executor registers the hub's store under it too).
pub const STORE_URL: &str = "cityhub://objects";

/// The SQL engine of one hub process.
#[derive(Clone)]
pub struct QueryEngine {
    catalog: Catalog,
    runtime: Arc<RuntimeEnv>,
    files: Arc<FileListCache>,
    store_url: ObjectStoreUrl,
    config: QueryConfig,
    running: Arc<AtomicUsize>,
    audit: AuditLog,
    cameras: CameraSettings,
    /// What `now()` reads: the hub's clock, so that a hub run on another clock (tests, the
    /// demo at a fixed hour) sees its own time in SQL too.
    clock: Clock,
    /// Sessions prepared once (functions, rules, settings), which each query clones and
    /// gives its own view of the catalog: building one per query cost more than planning
    /// `SELECT count(*)`. One for HTTP and Flight, one with PostgreSQL's types.
    base: Arc<BaseSessions>,
    /// Each query's memory pool, in bytes: worked out once at start (the default reads
    /// the machine's memory), not per query.
    memory_limit: usize,
    /// The Ballista cluster that runs queries over datasets (`query.engine = "ballista"`).
    cluster: Option<Arc<Cluster>>,
    /// Optimized plans of SQL asked again (`query.plan_cache_entries`).
    plans: Arc<plan_cache::PlanCache>,
}

/// A Ballista cluster, as the hub submits queries to it.
struct Cluster {
    /// `host:port` of the scheduler's gRPC service.
    address: String,
    /// As configured (`df://host:port`), for messages.
    shown: String,
    fallback: bool,
    /// Sends a logical plan to the scheduler and streams back the result.
    planner: Arc<dyn datafusion::execution::context::QueryPlanner + Send + Sync>,
}

impl Cluster {
    fn new(config: &QueryConfig) -> Option<Self> {
        if config.engine != cityhub_config::QueryEngineKind::Ballista {
            return None;
        }
        let (host, port) = cityhub_config::ballista_scheduler_address(&config.ballista_scheduler)?;
        let url = format!("http://{host}:{port}");
        let planner = ballista_core::planner::BallistaQueryPlanner::<
            datafusion_proto::protobuf::LogicalPlanNode,
        >::with_extension(
            url.clone(),
            ballista_core::config::BallistaConfig::default(),
            Arc::new(distributed::HubLogicalCodec::default()),
        );
        Some(Self {
            address: format!("{host}:{port}"),
            shown: config.ballista_scheduler.clone(),
            fallback: config.ballista_fallback,
            planner: Arc::new(planner),
        })
    }

    /// Whether the scheduler answers a connection within two seconds; why not if not.
    async fn reachable(&self) -> Result<(), String> {
        let connect = tokio::net::TcpStream::connect(&self.address);
        match tokio::time::timeout(Duration::from_secs(2), connect).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err("no answer within 2 s".into()),
        }
    }
}

struct BaseSessions {
    plain: SessionState,
    postgres: SessionState,
}

/// The front door a query came through: named in its audit entry and counted per door in
/// `/metrics` (`cityhub_queries_total{via}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Http,
    /// The PostgreSQL wire protocol: the session also has `pg_catalog` and PostgreSQL's
    /// functions (see [`pg`]).
    Pg,
    Flight,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Http => "http",
            Via::Pg => "pg",
            Via::Flight => "flight",
        }
    }
}

/// Where a query came from, beyond its token.
#[derive(Debug, Clone)]
pub struct Origin {
    pub via: Via,
    /// The user name a PostgreSQL client gave at login: free text, recorded in the audit
    /// as the client said it (the token, not this name, decides what may be read).
    pub client_user: Option<String>,
    /// The connection's `pg_catalog` (PostgreSQL clients): its oids stay the same from one
    /// statement to the next. A PostgreSQL query without one gets a fresh one.
    pub pg_catalog: Option<Arc<pg::PgSessionCatalog>>,
}

impl Origin {
    pub fn http() -> Self {
        Self {
            via: Via::Http,
            client_user: None,
            pg_catalog: None,
        }
    }
}

/// What a statement needs and gives, known before it runs: the front doors' prepared
/// statements describe themselves with it.
#[derive(Debug, Clone)]
pub struct Described {
    /// The types of `$1`, `$2`, ... in order, where the planner could infer them.
    pub parameters: Vec<Option<DataType>>,
    /// The columns of its result.
    pub schema: SchemaRef,
}

/// A table a principal may read, as the metadata calls of clients list it.
#[derive(Debug, Clone)]
pub struct ReadableTable {
    /// The department (or `hub`).
    pub schema: String,
    pub table: String,
    /// Its columns as the principal sees them (masked columns are strings).
    pub columns: SchemaRef,
}

/// A query's stream of batches.
pub type Batches = Pin<Box<dyn Stream<Item = Result<RecordBatch, QueryError>> + Send>>;

/// A running query: its schema and its batches, ready to be encoded.
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Batches,
    /// The sensitive columns the query read, complete once the batches have ended.
    pub reads: Arc<ReadLog>,
}

impl QueryEngine {
    /// Creates the engine over the catalog and the object store holding the files; every
    /// query is recorded in `audit`; `cameras` tells how `hub.cameras` judges liveness.
    pub fn new(
        catalog: Catalog,
        store: Arc<dyn ObjectStore>,
        config: QueryConfig,
        audit: AuditLog,
        cameras: CameraSettings,
    ) -> Result<Self, QueryError> {
        let store_url = ObjectStoreUrl::parse(STORE_URL).map_err(QueryError::internal)?;
        let runtime = RuntimeEnvBuilder::new()
            .build_arc()
            .map_err(QueryError::internal)?;
        runtime.register_object_store(store_url.as_ref(), store);
        // The hub's plan rewrites go first: they must see subqueries before DataFusion
        // decorrelates them.
        let mut rules = datafusion::optimizer::Optimizer::new().rules;
        rules.insert(0, Arc::new(not_in::NotInToAntiJoin));
        // Last, so it sees the simplifier's folded interval literals.
        rules.push(Arc::new(utc_time::UtcTimeArithmetic));
        let mut settings = session_config(&config)?;
        let cluster = Cluster::new(&config).map(Arc::new);
        if cluster.is_some() {
            // Ballista's settings for plans it runs: no dynamic filters (a filter built in
            // one stage never reaches a scan in another, which then waits forever), scalar
            // subqueries as joins (their physical form cannot cross stages), sort-merge
            // joins (they spill), no round-robin repartitions. The hub optimizes the plan
            // it sends, so its sessions take them too.
            settings = ballista_core::extension::SessionConfigExt::upgrade_for_ballista(settings);
        }
        let plain = SessionStateBuilder::new()
            .with_default_features()
            .with_optimizer_rules(rules)
            .with_physical_optimizer_rules(physical_rules(cluster.is_some()))
            .with_config(settings)
            .with_runtime_env(runtime.clone())
            .build();
        // `::regclass` and the other oid aliases PostgreSQL clients cast to.
        let postgres = SessionStateBuilder::new_from_existing(plain.clone())
            .with_type_planner(Arc::new(
                datafusion_pg_catalog::pg_catalog::oid_type_planner::PgOidTypePlanner,
            ))
            .build();
        let memory_limit = usize::try_from(query_memory_limit(&config)).unwrap_or(usize::MAX);
        Ok(Self {
            cluster,
            plans: Arc::new(plan_cache::PlanCache::new(config.plan_cache_entries)),
            base: Arc::new(BaseSessions { plain, postgres }),
            memory_limit,
            catalog,
            runtime,
            files: Arc::new(FileListCache::default()),
            store_url,
            config,
            running: Arc::new(AtomicUsize::new(0)),
            audit,
            cameras,
            clock: Clock::system(),
        })
    }

    /// The engine reading `now()` from `clock`.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Queries whose result stream is still open (finished or dropped ones are not).
    pub fn running_queries(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// How many queries reused the optimized plan of the same SQL asked before.
    pub fn plans_reused(&self) -> u64 {
        self.plans.reused()
    }

    /// The catalog the engine reads.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// A runtime for one query: the process's caches and object stores, with a memory pool
    /// of the query's own so that one query cannot starve the others.
    fn query_runtime(&self) -> Arc<RuntimeEnv> {
        Arc::new(RuntimeEnv {
            memory_pool: Arc::new(FairSpillPool::new(self.memory_limit)),
            disk_manager: self.runtime.disk_manager.clone(),
            cache_manager: self.runtime.cache_manager.clone(),
            object_store_registry: self.runtime.object_store_registry.clone(),
        })
    }

    fn view_context(&self) -> ViewContext {
        ViewContext {
            catalog: self.catalog.clone(),
            files: self.files.clone(),
            store_url: self.store_url.clone(),
            audit: self.audit.clone(),
            cameras: self.cameras.clone(),
            clock: self.clock,
        }
    }

    fn session_config(&self) -> SessionConfig {
        self.base.plain.config().clone()
    }

    /// Plans `sql` for `principal` and starts it. Parameters bind `$1`, `$2`, ... as values.
    /// The query is audited when its result stream ends (or is dropped), or at once when it
    /// fails before producing one.
    pub async fn execute(
        &self,
        principal: &Principal,
        sql: &str,
        params: &[serde_json::Value],
    ) -> Result<QueryResult, QueryError> {
        require_sql_role(principal)?;
        let values = params
            .iter()
            .enumerate()
            .map(|(index, value)| parameter(index, value))
            .collect::<Result<Vec<_>, _>>();
        let bindings = (!params.is_empty()).then(|| values.map(ParamValues::from));
        let audited = serde_json::Value::Array(params.to_vec());
        self.run(
            principal,
            sql,
            bindings,
            audited,
            &Pins::default(),
            &Origin::http(),
        )
        .await
    }

    /// The schemas and tables `principal` may read, with their columns: the same view its
    /// queries get, so a client's table list never shows what a query would refuse.
    pub async fn readable_tables(
        &self,
        principal: &Principal,
    ) -> Result<(Vec<String>, Vec<ReadableTable>), QueryError> {
        require_sql_role(principal)?;
        let view = Arc::new(
            RequestView::load(
                &self.view_context(),
                principal.clone(),
                Arc::default(),
                &Pins::default(),
            )
            .await
            .map_err(QueryError::from_datafusion)?,
        );
        let catalog = view.catalog_provider();
        let mut schemas = catalog.schema_names();
        schemas.sort();
        let mut tables = Vec::new();
        for schema_name in &schemas {
            let Some(schema) = catalog.schema(schema_name) else {
                continue;
            };
            let mut names = schema.table_names();
            names.sort();
            for table in names {
                if let Some(provider) = schema
                    .table(&table)
                    .await
                    .map_err(QueryError::from_datafusion)?
                {
                    tables.push(ReadableTable {
                        schema: schema_name.clone(),
                        table,
                        columns: provider.schema(),
                    });
                }
            }
        }
        Ok((schemas, tables))
    }

    /// Runs `sql` with parameters already typed by the front door (PostgreSQL's Bind, Flight
    /// SQL's parameter batches), as [`Self::execute`] does.
    pub async fn execute_typed(
        &self,
        principal: &Principal,
        sql: &str,
        params: Vec<ScalarValue>,
        origin: &Origin,
    ) -> Result<QueryResult, QueryError> {
        require_sql_role(principal)?;
        let audited = serde_json::Value::Array(
            params
                .iter()
                .map(|value| match value.is_null() {
                    true => serde_json::Value::Null,
                    false => serde_json::Value::String(value.to_string()),
                })
                .collect(),
        );
        let bindings = (!params.is_empty()).then(|| Ok(ParamValues::from(params)));
        self.run(principal, sql, bindings, audited, &Pins::default(), origin)
            .await
    }

    /// Plans `sql` for `principal` without running it: its parameters and result columns,
    /// for a front door's prepared statement. A refusal (a conditional dataset without a
    /// grant, DDL) is audited here, since such a statement never runs.
    pub async fn describe(
        &self,
        principal: &Principal,
        sql: &str,
        origin: &Origin,
    ) -> Result<Described, QueryError> {
        require_sql_role(principal)?;
        let trail = AuditTrail::new(self, principal, sql, serde_json::Value::Null, origin);
        let planned = self
            .plan(
                principal,
                sql,
                trail.reads.clone(),
                &Pins::default(),
                origin,
            )
            .await
            .and_then(|(_state, plan, _view)| {
                let types = plan
                    .get_parameter_types()
                    .map_err(QueryError::from_datafusion)?;
                // `$1`, `$2`, ...: a placeholder the query does not use still has a place.
                let count = types
                    .keys()
                    .filter_map(|name| name.strip_prefix('$')?.parse::<usize>().ok())
                    .max()
                    .unwrap_or(0);
                let parameters = (1..=count)
                    .map(|index| types.get(&format!("${index}")).cloned().flatten())
                    .collect();
                Ok(Described {
                    parameters,
                    schema: Arc::new(plan.schema().as_arrow().clone()),
                })
            });
        match planned {
            Ok(described) => {
                trail.discard();
                Ok(described)
            }
            Err(err) => {
                trail.finish(outcome_of(&err), 0, Some(&err.to_string()));
                Err(err)
            }
        }
    }

    /// Runs one statement with its audit trail: `bindings` are the parameter values (or
    /// the error reading them), `pins` fixes tables to given snapshots.
    async fn run(
        &self,
        principal: &Principal,
        sql: &str,
        bindings: Option<Result<ParamValues, QueryError>>,
        audited_params: serde_json::Value,
        pins: &Pins,
        origin: &Origin,
    ) -> Result<QueryResult, QueryError> {
        metrics::counter!("cityhub_queries_total", "via" => origin.via.as_str()).increment(1);
        let trail = AuditTrail::new(self, principal, sql, audited_params, origin);
        let started = match bindings.transpose() {
            Ok(bindings) => {
                self.start(principal, sql, bindings, trail.reads.clone(), pins, origin)
                    .await
            }
            Err(err) => Err(err),
        };
        match started {
            Ok((schema, batches)) => Ok(QueryResult {
                schema,
                reads: trail.reads.clone(),
                batches: Box::pin(Audited {
                    inner: batches,
                    trail: Some(trail),
                    rows: 0,
                    error: None,
                    finished: false,
                }),
            }),
            Err(err) => {
                trail.finish(outcome_of(&err), 0, Some(&err.to_string()));
                Err(err)
            }
        }
    }

    /// Plans a statement for `principal` in a fresh session over its view of the catalog.
    async fn plan(
        &self,
        principal: &Principal,
        sql: &str,
        reads: Arc<ReadLog>,
        pins: &Pins,
        origin: &Origin,
    ) -> Result<(SessionState, LogicalPlan, Arc<RequestView>), QueryError> {
        let (state, view) = self.session(principal, reads, pins, origin).await?;
        let plan = plan_statement(&state, sql).await?;
        Ok((state, plan, view))
    }

    /// A fresh session whose catalog is `principal`'s view, `now()` fixed to the hub's
    /// clock.
    async fn session(
        &self,
        principal: &Principal,
        reads: Arc<ReadLog>,
        pins: &Pins,
        origin: &Origin,
    ) -> Result<(SessionState, Arc<RequestView>), QueryError> {
        let view = Arc::new(
            RequestView::load(&self.view_context(), principal.clone(), reads, pins)
                .await
                .map_err(QueryError::from_datafusion)?,
        );
        let postgres = origin.via == Via::Pg;
        let catalog = match (postgres, &origin.pg_catalog) {
            (true, Some(session)) => session.with_view(view.catalog_provider()),
            (true, None) => pg::PgSessionCatalog::new()
                .map_err(QueryError::from_datafusion)?
                .with_view(view.catalog_provider()),
            (false, _) => view.catalog_provider(),
        };
        let catalogs = Arc::new(MemoryCatalogProviderList::new());
        catalogs.register_catalog(CATALOG_NAME.to_string(), catalog);
        let mut state = if postgres {
            self.base.postgres.clone()
        } else {
            self.base.plain.clone()
        };
        state.register_catalog_list(catalogs as Arc<dyn CatalogProviderList>);
        if postgres {
            pg::prepare(&mut state).map_err(QueryError::from_datafusion)?;
        }
        // Fixes now() for the whole query, as SessionContext does for each statement;
        // without a start time the planner cannot fold now() into a constant.
        let options = state.config_options().clone();
        state.execution_props_mut().mark_start_execution(options);
        state.execution_props_mut().query_execution_start_time = Some(self.clock.now());
        Ok((state, view))
    }

    /// Plans, binds and starts a statement: its schema and its batches.
    async fn start(
        &self,
        principal: &Principal,
        sql: &str,
        bindings: Option<ParamValues>,
        reads: Arc<ReadLog>,
        pins: &Pins,
        origin: &Origin,
    ) -> Result<(SchemaRef, Batches), QueryError> {
        let (state, view) = self.session(principal, reads, pins, origin).await?;
        // The PostgreSQL door's sessions carry per-connection catalogs, and a cluster
        // plans on its own: plans are kept for HTTP and Flight SQL on this hub.
        let keeps_plans = bindings.is_none() && origin.via != Via::Pg && self.cluster.is_none();
        if keeps_plans
            && let Some(optimized) = self
                .plans
                .reuse(sql, &state, &view)
                .await
                .map_err(QueryError::from_datafusion)?
        {
            return self.run_optimized(&state, &optimized).await;
        }
        let plan = plan_statement(&state, sql).await?;
        let plan = match bindings {
            None => plan,
            Some(values) => plan
                .with_param_values(values)
                .map_err(QueryError::from_datafusion)?,
        };
        if let Some(cluster) = &self.cluster
            && distributed::runs_on_cluster(&plan).map_err(QueryError::from_datafusion)?
        {
            match cluster.reachable().await {
                Ok(()) => return self.start_on_cluster(cluster, &state, &plan).await,
                Err(why) if cluster.fallback => tracing::warn!(
                    scheduler = %cluster.shown,
                    error = %why,
                    "The Ballista scheduler cannot be reached, so this query runs on this hub \
                     (query.ballista_fallback is on)."
                ),
                Err(why) => {
                    return Err(QueryError::Unavailable(format!(
                        "the Ballista scheduler at {} cannot be reached ({why}); nothing ran. \
                         Try again later, or ask an operator to start it or to set \
                         query.ballista_fallback = true",
                        cluster.shown
                    )));
                }
            }
        }
        let optimized = state.optimize(&plan).map_err(QueryError::from_datafusion)?;
        if keeps_plans {
            self.plans
                .keep(sql, &state, &view, &plan, &optimized)
                .map_err(QueryError::from_datafusion)?;
        }
        self.run_optimized(&state, &optimized).await
    }

    /// Plans an optimized logical plan physically and starts it.
    async fn run_optimized(
        &self,
        state: &SessionState,
        optimized: &LogicalPlan,
    ) -> Result<(SchemaRef, Batches), QueryError> {
        let physical = state
            .query_planner()
            .create_physical_plan(optimized, state)
            .await
            .map_err(QueryError::from_datafusion)?;
        self.run_physical(state, physical)
    }

    /// Starts a physical plan: its schema and its batches, counted as running and ended by
    /// the deadline. Planning used the shared runtime (object stores, caches); running gets
    /// a memory pool of the query's own.
    fn run_physical(
        &self,
        state: &SessionState,
        physical: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    ) -> Result<(SchemaRef, Batches), QueryError> {
        let task = TaskContext::from(state).with_runtime(self.query_runtime());
        let stream =
            execute_stream(physical, Arc::new(task)).map_err(QueryError::from_datafusion)?;
        let schema = stream.schema();
        let deadline = Duration::from_secs(self.config.timeout_secs);
        let batches = WithDeadline::new(stream, deadline, Running::start(&self.running))
            .map(move |batch| batch.map_err(QueryError::from_datafusion));
        Ok((schema, Box::pin(batches)))
    }
}

impl QueryEngine {
    /// Sends a planned query to the Ballista cluster and streams back its result. The hub
    /// optimizes the plan (its own rules included) and notes what it reads; the scheduler
    /// plans the scans, masks and row scopes from the tables the plan carries.
    async fn start_on_cluster(
        &self,
        cluster: &Cluster,
        state: &SessionState,
        plan: &LogicalPlan,
    ) -> Result<(SchemaRef, Batches), QueryError> {
        let optimized = state.optimize(plan).map_err(QueryError::from_datafusion)?;
        distributed::record_reads(&optimized).map_err(QueryError::from_datafusion)?;
        let physical = cluster
            .planner
            .create_physical_plan(&optimized, state)
            .await
            .map_err(QueryError::from_datafusion)?;
        tracing::debug!(scheduler = %cluster.shown, "A query goes to the Ballista cluster.");
        self.run_physical(state, physical)
    }
}

/// The memory one query may use: the configured limit, or by default a quarter of the
/// machine's memory and at least 2 GiB.
pub fn query_memory_limit(config: &QueryConfig) -> u64 {
    const FLOOR: u64 = 2 * 1024 * 1024 * 1024;
    if config.memory_limit_bytes > 0 {
        return config.memory_limit_bytes;
    }
    physical_memory().map_or(FLOOR, |total| (total / 4).max(FLOOR))
}

/// The machine's memory from `/proc/meminfo` (`None` where there is none).
fn physical_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// DataFusion's physical optimizer rules, with the hub's lookup join and low-cardinality
/// group-by placed after the plan's joins and aggregation steps are settled and before
/// dynamic filters are pushed into scans (they name the node they come from). Not for a
/// Ballista cluster, which receives the plan serialized and knows only DataFusion's own
/// nodes. The unit tests of both rules plan with this list.
pub(crate) fn physical_rules(
    on_cluster: bool,
) -> Vec<Arc<dyn datafusion::physical_optimizer::PhysicalOptimizerRule + Send + Sync>> {
    let mut rules = datafusion::physical_optimizer::optimizer::PhysicalOptimizer::new().rules;
    if !on_cluster {
        // Placed at the end instead, the rules would replace joins whose dynamic filters
        // were already pushed and never get filled. Without that rule (a DataFusion that
        // renamed it), plan as DataFusion does; the rules' unit tests, which expect the
        // hub's nodes in their plans, then fail.
        let Some(before) = rules
            .iter()
            .position(|rule| rule.name() == "FilterPushdown(Post)")
        else {
            tracing::warn!(
                "DataFusion's post-optimization filter pushdown was not found; the lookup join \
                 and the low-cardinality group-by are off."
            );
            return rules;
        };
        rules.insert(before, Arc::new(lookup_join::LookupJoinRule));
        rules.insert(
            before + 1,
            Arc::new(low_cardinality_group_by::LowCardinalityGroupByRule),
        );
    }
    rules
}

/// The settings of every query session: the hub's choices, then `query.engine_options`.
fn session_config(query: &QueryConfig) -> Result<SessionConfig, QueryError> {
    let mut config = SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema(CATALOG_NAME, SYSTEM_SCHEMA)
        .with_create_default_catalog_and_schema(false);
    if query.target_partitions > 0 {
        config = config.with_target_partitions(query.target_partitions as usize);
    }
    let options = config.options_mut();
    options.sql_parser.collect_spans = true;
    options.sql_parser.enable_ident_normalization = true;
    for (name, value) in &query.engine_options {
        options.set(name, value).map_err(|err| {
            QueryError::internal(format!(
                "query.engine_options: {name} = {value:?} is refused: {}",
                err.strip_backtrace()
            ))
        })?;
    }
    Ok(config)
}

/// Turns one read-only statement into a logical plan in `state`: time travel folded into
/// table names, the guard's closed SQL surface, no DDL, DML or `SET`.
async fn plan_statement(state: &SessionState, sql: &str) -> Result<LogicalPlan, QueryError> {
    let sql = time_travel::rewrite(sql)?;
    let statement = guard::check(&sql)?;
    let plan = state
        .statement_to_plan(statement)
        .await
        .map_err(QueryError::from_datafusion)?;
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(&plan)
        .map_err(|err| QueryError::Unsupported(err.strip_backtrace()))?;
    Ok(plan)
}

/// SQL is the analysts' (and admins') door; producers push, dashboards read endpoints.
fn require_sql_role(principal: &Principal) -> Result<(), QueryError> {
    cityhub_catalog::access::require_role(
        principal,
        cityhub_catalog::access::SQL_ROLES,
        "running SQL",
    )
    .map_err(|err| QueryError::Forbidden(err.to_string()))
}

/// How a query that failed before it produced a stream is audited.
fn outcome_of(err: &QueryError) -> Outcome {
    match err {
        QueryError::Forbidden(_) | QueryError::Unsupported(_) => Outcome::Refused,
        _ => Outcome::Failed,
    }
}

/// A JSON parameter as a typed SQL value (`$1` is `params[0]`).
fn parameter(index: usize, value: &serde_json::Value) -> Result<ScalarValue, QueryError> {
    use serde_json::Value;
    let bad = |why: &str| QueryError::Parameter(format!("params[{index}] (${}) {why}", index + 1));
    Ok(match value {
        Value::Null => ScalarValue::Null,
        Value::Bool(b) => ScalarValue::Boolean(Some(*b)),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => ScalarValue::Int64(Some(i)),
            (None, Some(f)) => ScalarValue::Float64(Some(f)),
            (None, None) => return Err(bad("is a number out of range")),
        },
        Value::String(s) => ScalarValue::Utf8(Some(s.clone())),
        Value::Array(_) | Value::Object(_) => {
            return Err(bad("must be a string, number, boolean or null"));
        }
    })
}

/// What a query's audit entry needs, carried until the query ends.
struct AuditTrail {
    audit: AuditLog,
    principal: Principal,
    sql: String,
    params: serde_json::Value,
    origin: Origin,
    reads: Arc<ReadLog>,
    started: Instant,
}

impl AuditTrail {
    fn new(
        engine: &QueryEngine,
        principal: &Principal,
        sql: &str,
        params: serde_json::Value,
        origin: &Origin,
    ) -> Self {
        Self {
            audit: engine.audit.clone(),
            principal: principal.clone(),
            sql: sql.to_string(),
            params,
            origin: origin.clone(),
            reads: Arc::default(),
            started: Instant::now(),
        }
    }

    /// Writes nothing: the statement was only described, and its run will be audited.
    fn discard(self) {}

    fn finish(self, outcome: Outcome, rows: u64, error: Option<&str>) {
        let reads = self.reads.reads();
        let datasets: Vec<&String> = reads.keys().collect();
        let sensitive: Vec<serde_json::Value> = reads
            .iter()
            .flat_map(|(dataset, columns)| {
                columns.iter().map(move |(column, read)| {
                    serde_json::json!({
                        "dataset": dataset,
                        "column": column,
                        "sensitivity": read.sensitivity,
                        "masked": read.masked,
                    })
                })
            })
            .collect();
        let mut detail = serde_json::json!({
            "region": self.principal.region,
            "sql": self.sql,
            "params": self.params,
            "via": self.origin.via.as_str(),
            "datasets": datasets,
            "sensitive_columns": sensitive,
            "rows": rows,
            "duration_ms": self.started.elapsed().as_secs_f64() * 1e3,
        });
        if let Some(error) = error {
            detail["error"] = error.into();
        }
        if let Some(user) = self.origin.client_user {
            detail["client_user"] = user.into();
        }
        let mut event = AuditEvent::by(&self.principal, Action::Query, outcome).detail(detail);
        event.dataset = datasets.first().map(|d| d.to_string());
        self.audit.record(event);
    }
}

/// A result stream that counts its rows and writes the query's audit entry when it ends:
/// `ok` after the last batch, `failed` after an error, `cancelled` when dropped early.
struct Audited {
    inner: Batches,
    trail: Option<AuditTrail>,
    rows: u64,
    error: Option<String>,
    finished: bool,
}

impl Stream for Audited {
    type Item = Result<RecordBatch, QueryError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = self.inner.poll_next_unpin(cx);
        match &next {
            Poll::Ready(Some(Ok(batch))) => self.rows += batch.num_rows() as u64,
            Poll::Ready(Some(Err(err))) => self.error = Some(err.to_string()),
            Poll::Ready(None) => self.finished = true,
            Poll::Pending => {}
        }
        next
    }
}

impl Drop for Audited {
    fn drop(&mut self) {
        if let Some(trail) = self.trail.take() {
            let outcome = match (&self.error, self.finished) {
                (Some(_), _) => Outcome::Failed,
                (None, true) => Outcome::Ok,
                (None, false) => Outcome::Cancelled,
            };
            trail.finish(outcome, self.rows, self.error.as_deref());
        }
    }
}

/// Counts a query as running until its stream is dropped: dropping the stream (a client
/// that hung up) is also what cancels DataFusion's work.
struct Running(Arc<AtomicUsize>);

impl Running {
    fn start(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("cityhub_queries_running").increment(1.0);
        Running(counter.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("cityhub_queries_running").decrement(1.0);
    }
}

/// Ends a query stream with a timeout error once its deadline passes.
struct WithDeadline {
    inner: SendableRecordBatchStream,
    sleep: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
    expired: bool,
    _running: Running,
}

impl WithDeadline {
    fn new(inner: SendableRecordBatchStream, limit: Duration, running: Running) -> Self {
        Self {
            inner,
            sleep: Box::pin(tokio::time::sleep(limit)),
            limit,
            expired: false,
            _running: running,
        }
    }
}

impl Stream for WithDeadline {
    type Item = datafusion::error::Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.expired {
            return Poll::Ready(None);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.expired = true;
            let seconds = self.limit.as_secs();
            return Poll::Ready(Some(Err(datafusion::error::DataFusionError::Execution(
                format!("{}{seconds} s", error::TIMEOUT_MARKER),
            ))));
        }
        self.inner.poll_next_unpin(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_options_override_the_hubs_choices_and_bad_ones_are_named() {
        let mut query = QueryConfig::default();
        query
            .engine_options
            .insert("datafusion.execution.batch_size".into(), "16384".into());
        let config = session_config(&query).expect("a known option");
        assert_eq!(config.batch_size(), 16384);

        query
            .engine_options
            .insert("datafusion.execution.no_such_thing".into(), "1".into());
        let err = session_config(&query).expect_err("an unknown option");
        assert!(
            err.to_string()
                .contains("datafusion.execution.no_such_thing"),
            "{err}"
        );
        query.engine_options.clear();
        query
            .engine_options
            .insert("datafusion.execution.batch_size".into(), "many".into());
        let err = session_config(&query).expect_err("a bad value");
        assert!(err.to_string().contains("\"many\""), "{err}");
    }

    #[test]
    fn the_memory_limit_is_the_configured_one_or_a_share_of_the_machine() {
        let mut query = QueryConfig::default();
        assert!(query_memory_limit(&query) >= 2 * 1024 * 1024 * 1024);
        query.memory_limit_bytes = 5 * 1024 * 1024;
        assert_eq!(query_memory_limit(&query), 5 * 1024 * 1024);
    }
}
