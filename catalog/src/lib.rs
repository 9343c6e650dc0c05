//! The cityhub catalog: the metadata of everything the hub holds.
//!
//! Layout:
//! - [`model`]: departments, principals and roles, datasets with their columns, schema
//!   versions, snapshots and files: plain data with validation.
//! - [`store`]: the [`CatalogStore`] trait, the only way the rest of the hub reads or
//!   changes metadata.
//! - [`sqlite`]: the embedded implementation (numbered migrations in `migrations/`).
//! - [`sharing`]: share requests, grants, who may read what, and audit events.
//! - [`gb28181`]: GB/T 28181 device and channel ids, validated and decoded.
//! - [`camera`] and [`camera_status`]: the camera registry's records and the live-status
//!   state machine (keepalives, NOTIFY events, history).
//! - [`endpoint`]: dashboard endpoints (saved, parameterised SQL) and typed parameters.
//! - [`versions`]: each dataset's current snapshot as this process knows it, and news of
//!   commits, for caches keyed by snapshot.
//! - [`token`]: bearer tokens, stored only as hashes.
//!
//! The catalog knows nothing of DataFusion, Parquet or HTTP: it records which files make up
//! which snapshot, and commits a new snapshot in one transaction guarded by its parent.

pub mod audit;
pub mod camera;
pub mod camera_status;
pub mod endpoint;
pub mod error;
pub mod gb28181;
pub mod model;
pub mod region;
pub mod sharing;
pub mod sqlite;
pub mod store;
pub mod token;
pub mod versions;

use std::sync::Arc;

pub use audit::AuditLog;
pub use error::{CatalogError, Result};
pub use model::*;
pub use sharing::{Access, AuditEntry, AuditEvent, AuditFilter, Grant, ShareRequest, ShareStatus};
pub use sqlite::SqliteStore;
pub use store::CatalogStore;

/// A shared handle on the catalog store.
pub type Catalog = Arc<dyn CatalogStore>;

/// Opens the catalog the configuration names (creating and migrating it if needed).
pub fn open(config: &cityhub_config::Config) -> Result<Catalog> {
    let store = SqliteStore::open_url(&config.catalog_url(), config.catalog.busy_timeout_ms)?;
    Ok(Arc::new(store))
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_cameras;
#[cfg(test)]
mod tests_sharing;
