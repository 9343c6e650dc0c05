//! The cityhub catalog: the metadata of everything the hub holds.
//!
//! Layout:
//! - [`model`]: departments, principals and roles, datasets with their columns, schema
//!   versions, snapshots and files: plain data with validation.
//! - [`access`]: every access rule (who may see, read, push, register, act for whom).
//! - [`audit`]: audit events with a closed set of actions and outcomes, and the writer.
//! - [`store`]: one store trait per domain (datasets, sharing, audit, cameras, endpoints);
//!   [`CatalogStore`] is all of them, the only way the hub reads or changes metadata.
//! - [`sqlite`]: the embedded implementation, one file per domain (numbered migrations in
//!   `migrations/`); [`postgres`]: the same on PostgreSQL for several nodes
//!   (`migrations/postgres/`).
//! - [`sharing`]: share requests and grants, and [`SharingService`]: departments, tokens,
//!   applications, decisions, revocations and audit retention, each checked and audited.
//! - [`gb28181`]: GB/T 28181 device and channel ids, validated and decoded.
//! - [`camera`]: the camera registry's records, status state machine, signals, streams.
//! - [`endpoint`]: dashboard endpoints (saved, parameterised SQL) and typed parameters.
//! - [`versions`]: each dataset's current snapshot as this process knows it, and news of
//!   commits and of rights, for caches keyed by snapshot.
//! - [`token`] and [`principals`]: bearer tokens, stored only as hashes, and a short-lived
//!   cache of their principals.
//! - [`clock`]: where the time of day is read, so tests choose the hour.
//! - [`viid`]: GA/T 1400 accounts (digest credentials) and their registrations.
//!
//! The catalog knows nothing of DataFusion, Parquet or HTTP: it records which files make up
//! which snapshot, and commits a new snapshot in one transaction guarded by its parent.

pub mod access;
pub mod audit;
pub mod camera;
pub mod clock;
pub mod endpoint;
pub mod error;
pub mod feeds;
pub mod gb28181;
pub mod lifecycle;
pub mod model;
pub mod postgres;
pub mod principals;
pub mod region;
pub mod sharing;
pub mod sqlite;
pub mod store;
pub mod token;
pub mod versions;
pub mod viid;

use std::sync::Arc;

pub use access::Access;
pub use audit::{Action, AuditEntry, AuditEvent, AuditFilter, AuditLog, Outcome};
pub use error::{CatalogError, Result};
pub use lifecycle::{
    DatasetChange, ExpiredSnapshots, SnapshotSummary, check_evolution, validate_primary_key,
    validate_region, validate_sort_key,
};
pub use model::*;
pub use postgres::PostgresStore;
pub use sharing::SharingService;
pub use sharing::{Grant, ShareRequest, ShareStatus};
pub use sqlite::SqliteStore;
pub use store::{
    AuditStore, CameraStore, CatalogStore, DatasetStore, EndpointStore, SharingStore, ViidStore,
};

/// A shared handle on the catalog store.
pub type Catalog = Arc<dyn CatalogStore>;

/// Opens the catalog the configuration names (creating and migrating it if needed): the
/// embedded SQLite file, or a PostgreSQL database shared by several nodes.
pub async fn open(config: &cityhub_config::Config) -> Result<Catalog> {
    let url = config.catalog_url();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(PostgresStore::open_url(&url).await?));
    }
    let store = SqliteStore::open_url(&url, config.catalog.busy_timeout_ms)?;
    Ok(Arc::new(store))
}

#[cfg(test)]
mod tests;
