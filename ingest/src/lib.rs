//! cityhub ingest: how data gets into the hub.
//!
//! Layout:
//! - [`decode`]: the five body formats (NDJSON, JSON array, CSV, Arrow IPC, Parquet) into
//!   Arrow batches of a dataset's schema, with per-row rejections.
//! - [`value`]: one field of text input to one typed cell (types, timestamps, decimals).
//! - [`parquet_file`]: Parquet encoding and the per-file statistics the catalog keeps.
//! - [`storage`]: the object store, with durable local writes.
//! - [`Ingest`] (this file): the service every front door writes through.
//! - [`commit`]: writing files and committing them as a snapshot, retrying lost races; the
//!   one commit path of every write.
//! - [`push`]: the push operation (validation, idempotency, all-or-nothing).
//! - [`register`]: registering a dataset.
//! - [`import`]: streaming bulk loads of local files, with schema inference.
//! - [`upsert`]: keyed datasets, one row per primary key, kept so by every commit.
//! - [`kafka`]: department topics consumed into datasets exactly once, with dead letters.
//! - [`viid`]: GA/T 1400 records (vehicles, faces, persons, devices) and their images.
//!
//! Every write is audited here, whichever front door made it.
//!
//! The order of a write never changes: files first (`PutMode::Create`, synced), then one
//! catalog transaction. A crash in between leaves an orphan file that no snapshot names,
//! never a half-visible snapshot.

pub mod commit;
pub mod compact;
pub mod decode;
pub mod error;
pub mod gc;
pub mod import;
pub mod infer;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod parquet_file;
pub mod push;
pub mod register;
pub mod storage;
pub mod upsert;
pub mod value;
pub mod viid;

pub use compact::{CompactionPolicy, CompactionReport, StorageHealth};
pub use decode::{Format, RowError};
pub use error::IngestError;
pub use gc::{GcReport, RetentionPolicy};
pub use push::{PushOutcome, PushRequest};
pub use storage::Storage;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cityhub_catalog::versions::DataVersions;
use cityhub_catalog::{AuditLog, Catalog};
use cityhub_config::IngestConfig;

/// Commits of one dataset in this process, one at a time, with the last snapshot id seen.
type CommitQueue = Arc<tokio::sync::Mutex<Option<i64>>>;

/// The ingest service: the catalog, the object store and the ingest settings.
#[derive(Clone)]
pub struct Ingest {
    pub(crate) catalog: Catalog,
    pub(crate) storage: Storage,
    pub(crate) config: IngestConfig,
    /// Where every write (push, import, Kafka flush, registration) is recorded.
    pub(crate) audit: AuditLog,
    /// One queue per dataset for this process's commits, holding the last snapshot id this
    /// process saw. Without it, N concurrent pushes to one dataset would all race for the
    /// same parent and each lose O(N) times; with it, commits in one process follow each
    /// other and only other processes' commits cause a retry.
    commit_queues: Arc<Mutex<HashMap<i64, CommitQueue>>>,
    /// Told of every snapshot this process commits, for the caches keyed by snapshot.
    versions: Arc<DataVersions>,
    /// Pushes and Kafka flushes in flight: compaction paces itself while there are any.
    pub(crate) foreground: Arc<AtomicUsize>,
}

/// A foreground write (a push, a Kafka flush) counted while it lives.
pub(crate) struct ForegroundWrite(Arc<AtomicUsize>);

impl Drop for ForegroundWrite {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Ingest {
    /// The ingest service over `catalog` and `storage`; every write it makes is recorded in
    /// `audit`, and every commit announced to `versions`.
    pub fn new(
        catalog: Catalog,
        storage: Storage,
        config: IngestConfig,
        audit: AuditLog,
        versions: Arc<DataVersions>,
    ) -> Self {
        Self {
            catalog,
            storage,
            config,
            audit,
            commit_queues: Arc::default(),
            versions,
            foreground: Arc::default(),
        }
    }

    /// The current snapshots as this process knows them: updated by its own commits at
    /// once, and by whoever polls the catalog for other processes' commits.
    pub fn versions(&self) -> &Arc<DataVersions> {
        &self.versions
    }

    pub(crate) fn commit_queue(&self, dataset_id: i64) -> CommitQueue {
        let mut queues = self
            .commit_queues
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        queues.entry(dataset_id).or_default().clone()
    }

    /// Counts a push or Kafka flush as in flight until the guard drops.
    pub(crate) fn foreground_write(&self) -> ForegroundWrite {
        self.foreground.fetch_add(1, Ordering::Relaxed);
        ForegroundWrite(self.foreground.clone())
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }
}
