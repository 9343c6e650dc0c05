//! The Ballista scheduler and executor that `cityhub scheduler` and `cityhub executor` run,
//! for `query.engine = "ballista"` (queries bigger than one node).
//!
//! They are Ballista 55's own, embedded in the hub's binary so that they carry the hub's
//! codecs ([`cityhub_query::distributed`]): a plan the hub built for a caller (its view,
//! masks, row scopes and pinned snapshots) runs on the executors as the hub planned it.
//! Executors read the objects the hub's catalog names from the hub's own store
//! (`storage.url`), under the URL the hub's plans use.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ballista_core::error::BallistaError;
use ballista_core::utils::default_session_builder;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;
use ballista_scheduler::scheduler_server::SessionBuilder;
use cityhub_config::Config;
use cityhub_query::distributed::{HubLogicalCodec, HubPhysicalCodec};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::SessionConfig;
use object_store::ObjectStore;

/// Runs a scheduler listening on `bind` until the process ends. `external_host` is the
/// name executors and hubs reach it by (default: the address bound). Planning a scan looks
/// at the objects' store, so the scheduler opens the store of `config` (`storage.url`).
pub async fn run_scheduler(
    config: &Config,
    bind: SocketAddr,
    external_host: Option<String>,
) -> Result<(), BallistaError> {
    let (store_url, store) = hub_store(config)?;
    let sessions: SessionBuilder = Arc::new(move |session: SessionConfig| {
        let state = default_session_builder(session)?;
        state
            .runtime_env()
            .register_object_store(store_url.as_ref(), Arc::clone(&store));
        Ok(state)
    });
    let config = SchedulerConfig {
        override_session_builder: Some(sessions),
        bind_host: bind.ip().to_string(),
        bind_port: bind.port(),
        external_host: external_host.unwrap_or_else(|| bind.ip().to_string()),
        override_logical_codec: Some(Arc::new(HubLogicalCodec::default())),
        override_physical_codec: Some(Arc::new(HubPhysicalCodec::default())),
        ..SchedulerConfig::default()
    };
    let cluster = BallistaCluster::new_from_config(&config).await?;
    tracing::info!(%bind, "The Ballista scheduler is listening.");
    start_server(cluster, bind, Arc::new(config)).await
}

/// How an executor is started.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The scheduler, `df://host:port`.
    pub scheduler: String,
    /// Where its Arrow Flight service (shuffle reads, results) listens.
    pub bind: SocketAddr,
    /// Where its gRPC service listens (default: the Flight port + 1).
    pub grpc_port: Option<u16>,
    /// The name the scheduler and the other executors reach it by (default: the address
    /// bound).
    pub external_host: Option<String>,
    /// Tasks it runs at once (default: one per core).
    pub concurrent_tasks: Option<usize>,
    /// Where it keeps shuffle files (default: a temporary folder).
    pub work_dir: Option<PathBuf>,
}

/// Runs an executor until the process ends. It reads objects from the store of `config`
/// (`storage.url`), with each task's memory limited as a hub limits a query's.
pub async fn run_executor(config: &Config, options: ExecutorOptions) -> Result<(), BallistaError> {
    let (host, port) =
        cityhub_config::ballista_scheduler_address(&options.scheduler).ok_or_else(|| {
            BallistaError::Configuration(format!(
                "--scheduler {:?} must be the scheduler as df://host:port",
                options.scheduler
            ))
        })?;
    let (store_url, store) = hub_store(config)?;
    let memory = cityhub_query::query_memory_limit(&config.query);
    let runtime = Arc::new(move |_: &SessionConfig| {
        let pool = FairSpillPool::new(usize::try_from(memory).unwrap_or(usize::MAX));
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(pool))
            .build_arc()?;
        runtime.register_object_store(store_url.as_ref(), Arc::clone(&store));
        Ok(runtime)
    });
    let defaults = ExecutorProcessConfig::default();
    let process = ExecutorProcessConfig {
        bind_host: options.bind.ip().to_string(),
        external_host: options
            .external_host
            .or_else(|| Some(options.bind.ip().to_string())),
        port: options.bind.port(),
        grpc_port: options
            .grpc_port
            .unwrap_or_else(|| options.bind.port().saturating_add(1)),
        scheduler_host: host.to_string(),
        scheduler_port: port,
        scheduler_connect_timeout_seconds: 30,
        vcores: options.concurrent_tasks.unwrap_or(defaults.vcores),
        work_dir: options.work_dir.map(|dir| dir.display().to_string()),
        override_logical_codec: Some(Arc::new(HubLogicalCodec::default())),
        override_physical_codec: Some(Arc::new(HubPhysicalCodec::default())),
        override_runtime_producer: Some(runtime),
        ..defaults
    };
    tracing::info!(
        bind = %options.bind,
        scheduler = %options.scheduler,
        storage = %config.storage_url(),
        "The Ballista executor is starting."
    );
    start_executor_process(Arc::new(process)).await
}

/// The hub's object store (`storage.url` of `config`) and the URL its plans name it by.
fn hub_store(config: &Config) -> Result<(ObjectStoreUrl, Arc<dyn ObjectStore>), BallistaError> {
    let storage = cityhub_ingest::storage::Storage::open(&config.storage_url())
        .map_err(|err| BallistaError::Configuration(err.to_string()))?;
    Ok((
        ObjectStoreUrl::parse(cityhub_query::STORE_URL)?,
        storage.store(),
    ))
}
