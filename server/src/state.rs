//! What every front door shares: configuration, catalog, ingest, query, endpoints, the
//! access model, the camera registry and metrics, opened from the configuration.

use std::sync::Arc;

use cityhub_catalog::camera::{CameraFeed, CameraRegistry, CameraSettings};
use cityhub_catalog::clock::Clock;
use cityhub_catalog::{AuditLog, Catalog, CatalogError, Principal, Role, SharingService};
use cityhub_config::Config;
use cityhub_ingest::kafka::{ClusterFeedStatus, StatusBoard};
use cityhub_ingest::viid::{ViidReceiver, ViidSettings};
use cityhub_ingest::{CompactionPolicy, Ingest, IngestError, RetentionPolicy, Storage};
use cityhub_query::endpoint::Endpoints;
use cityhub_query::{QueryEngine, QueryError};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::ratelimit::RateLimiter;
use crate::telemetry;

/// Why a hub could not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("opening the catalog: {0}")]
    Catalog(#[from] CatalogError),
    #[error("opening the object store: {0}")]
    Storage(#[from] IngestError),
    #[error("starting the query engine: {0}")]
    Query(#[from] QueryError),
}

/// Shared state of a running hub: one allocation, so that handing it to each request costs
/// one reference count rather than one per part (axum clones the state for every request).
#[derive(Clone)]
pub struct AppState(Arc<Parts>);

impl std::ops::Deref for AppState {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0
    }
}

/// What the front doors share.
pub struct Parts {
    pub config: Arc<Config>,
    pub catalog: Catalog,
    pub ingest: Ingest,
    pub query: QueryEngine,
    pub metrics: PrometheusHandle,
    /// Where every query, push, share decision and token change is recorded.
    pub audit: AuditLog,
    pub limiter: Arc<RateLimiter>,
    /// Departments, tokens, share requests, grants: the access model's operations.
    pub sharing: SharingService,
    /// Offsets, lag and rates of the Kafka feeds this process runs.
    pub kafka: StatusBoard,
    /// The camera registry's operations, with the liveness rule and stream templates.
    pub cameras: CameraRegistry,
    /// Dashboard endpoints and their result cache.
    pub endpoints: Arc<Endpoints>,
    /// The GA/T 1400 receiver: records and images into the `viid_*` datasets.
    pub viid: ViidReceiver,
    /// Where the time of day is read (the demo city, endpoints' `today`).
    pub clock: Clock,
    /// When and how datasets' small files are merged.
    pub compaction: CompactionPolicy,
    /// How long replaced snapshots stay readable; when orphan files go.
    pub retention: RetentionPolicy,
    /// This node among the nodes on one catalog (host, address, data folder): the holder
    /// named in the leases of cluster-wide jobs.
    pub node: String,
}

impl AppState {
    /// Opens the catalog and the object store the configuration names, and starts the
    /// audit writer and the endpoints' poller (so it must run inside a tokio runtime).
    pub async fn open(config: Config) -> Result<Self, OpenError> {
        Self::open_with_clock(config, Clock::system()).await
    }

    /// [`Self::open`] with the clock the hub reads the time of day from.
    pub async fn open_with_clock(config: Config, clock: Clock) -> Result<Self, OpenError> {
        let catalog = cityhub_catalog::open(&config).await?;
        let storage = Storage::open(&config.storage_url())?;
        let audit = AuditLog::start(catalog.clone());
        let settings = CameraSettings::from_config(&config.cameras);
        let query = QueryEngine::new(
            catalog.clone(),
            storage.store(),
            config.query.clone(),
            audit.clone(),
            settings.clone(),
        )?
        .with_clock(clock);
        let limiter = Arc::new(RateLimiter::new(
            config.server.rate_limit_per_second,
            config.server.rate_limit_burst,
        ));
        // One record of data and rights changes for the whole process: commits announce
        // themselves there, sharing decisions too, and the endpoint cache listens.
        let versions = Arc::default();
        let ingest = Ingest::new(
            catalog.clone(),
            storage,
            config.ingest.clone(),
            audit.clone(),
            Arc::clone(&versions),
        );
        let viid = ViidReceiver::new(
            ingest.clone(),
            ViidSettings {
                retention_days: config.viid.retention_days,
                max_image_bytes: config.viid.max_image_bytes,
            },
        );
        let sharing = SharingService::new(
            catalog.clone(),
            audit.clone(),
            Arc::clone(&versions),
            clock,
            config.sharing.answer_within_working_days as u32,
        );
        let endpoints = Arc::new(Endpoints::new(
            query.clone(),
            audit.clone(),
            versions,
            config.endpoints.clone(),
            clock,
        ));
        // Watches the catalog for commits, grants and definitions of other processes.
        tokio::spawn(endpoints.clone().run());
        let node = node_name(&config);
        Ok(Self(Arc::new(Parts {
            compaction: CompactionPolicy::from_config(&config),
            retention: RetentionPolicy::from_config(&config),
            config: Arc::new(config),
            cameras: CameraRegistry::new(catalog.clone(), audit.clone(), settings)
                .with_clock(clock),
            catalog,
            ingest,
            query,
            metrics: telemetry::metrics_handle(),
            audit,
            limiter,
            sharing,
            kafka: StatusBoard::new(node.clone()),
            endpoints,
            viid,
            clock,
            node,
        })))
    }

    /// Every node's Kafka feeds and their partitions, as far as `caller` may see their
    /// datasets (admins: the camera registry's feeds too).
    pub async fn feed_status(&self, caller: &Principal) -> Result<ClusterFeedStatus, CatalogError> {
        let visible: std::collections::HashSet<String> = self
            .catalog
            .list_datasets()
            .await?
            .into_iter()
            // A feed's offsets, rates and dead letters cover every region's rows: a
            // region-scoped reader sees the feeds of region-free datasets only.
            .filter(|d| caller.may_see(d) && (caller.region.is_none() || d.region_free))
            .map(|d| d.name.to_string())
            .collect();
        // The camera registry's feeds (`hub.cameras`, ...) are the operators' business.
        let admin = caller.role == Role::Admin;
        // Wall time, as the nodes' reports are stamped: silence is elapsed time between
        // processes, not a time of day.
        ClusterFeedStatus::read(&self.catalog, &self.kafka, chrono::Utc::now(), |dataset| {
            visible.contains(dataset) || (admin && CameraFeed::of_dataset(dataset).is_some())
        })
        .await
    }
}

/// A name for this node that no other node on the catalog has, and that stays the same
/// when it restarts (so that it takes its own job leases back at once, instead of waiting
/// for them to expire as another node would): the host, the address it serves and its
/// data folder.
fn node_name(config: &Config) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "node".into());
    format!(
        "{host} {} {}",
        config.server.bind,
        config.data_dir().display()
    )
}
