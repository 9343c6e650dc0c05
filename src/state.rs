//! What every request handler shares: configuration, catalog, ingest, endpoints and metrics.

use std::sync::Arc;

use cityhub_catalog::camera::CameraSettings;
use cityhub_catalog::{AuditLog, Catalog};
use cityhub_config::Config;
use cityhub_ingest::kafka::StatusBoard;
use cityhub_ingest::{Ingest, Storage};
use cityhub_query::QueryEngine;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::endpoint_service::Endpoints;
use crate::principals::PrincipalCache;
use crate::ratelimit::RateLimiter;
use crate::telemetry;

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

/// What the handlers share.
pub struct Parts {
    pub config: Arc<Config>,
    pub catalog: Catalog,
    pub ingest: Ingest,
    pub query: QueryEngine,
    pub metrics: PrometheusHandle,
    /// Where every query, push, share decision and token change is recorded.
    pub audit: AuditLog,
    pub limiter: Arc<RateLimiter>,
    /// Principals of recently seen tokens (revocations here forget them at once).
    pub principals: Arc<PrincipalCache>,
    /// Offsets, lag and rates of the Kafka feeds this process runs.
    pub kafka: StatusBoard,
    /// Liveness rule and stream templates of the camera registry, read once from `[cameras]`.
    pub cameras: Arc<CameraSettings>,
    /// Dashboard endpoints and their result cache.
    pub endpoints: Arc<Endpoints>,
}

impl AppState {
    /// Opens the catalog and the object store the configuration names, and starts the
    /// audit writer (so it must run inside a tokio runtime).
    pub fn open(config: Config) -> anyhow::Result<Self> {
        let catalog = cityhub_catalog::open(&config)?;
        let storage = Storage::open(&config.storage_url())?;
        let audit = AuditLog::start(catalog.clone());
        let cameras = Arc::new(CameraSettings::from_config(&config.cameras));
        let query = QueryEngine::new(
            catalog.clone(),
            storage.store(),
            config.query.clone(),
            audit.clone(),
            (*cameras).clone(),
        )?;
        let limiter = Arc::new(RateLimiter::new(
            config.server.rate_limit_per_second,
            config.server.rate_limit_burst,
        ));
        let ingest = Ingest::new(catalog.clone(), storage, config.ingest.clone());
        let endpoints = Arc::new(Endpoints::new(
            query.clone(),
            audit.clone(),
            ingest.versions().clone(),
            config.endpoints.clone(),
        ));
        // Watches the catalog for commits, grants and definitions of other processes.
        tokio::spawn(endpoints.clone().run());
        Ok(Self(Arc::new(Parts {
            config: Arc::new(config),
            catalog,
            ingest,
            query,
            metrics: telemetry::metrics_handle(),
            audit,
            limiter,
            principals: Arc::default(),
            kafka: StatusBoard::default(),
            cameras,
            endpoints,
        })))
    }
}
