//! The embedded catalog on SQLite.
//!
//! One writer connection and a few reader connections on a WAL-mode database file. Writes
//! run `BEGIN IMMEDIATE` so that the parent-snapshot check and the insert of the new snapshot
//! happen under the write lock: two writers can never both see the same parent and both win.
//! `synchronous = FULL` makes a committed transaction survive a power cut, which is what
//! "an acknowledged push is durable" needs. Other processes (an `import` next to a running
//! server) wait for the lock up to `busy_timeout`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use rusqlite::{Connection, Row, TransactionBehavior};

use crate::error::{CatalogError, Result};
use crate::lifecycle::{DatasetChange, ExpiredSnapshots, SnapshotSummary, validate_new_dataset};
use crate::model::{
    Commit, CommitOutcome, DataFile, Dataset, DatasetName, Department, IdempotencyRecord,
    NewDataset, NewPrincipal, Operation, Principal, RejectedRecord, SchemaVersion, Snapshot,
    StoredRejection, StreamOffset, StreamProgress,
};

mod audit;
mod camera_alarms;
mod camera_changes;
mod camera_daily;
mod camera_feeds;
mod camera_search;
pub(crate) mod camera_stats;
pub(crate) mod cameras;
mod datasets;
pub(crate) mod endpoints;
mod lifecycle;
mod sharing;
mod viid;

pub(crate) use datasets::{PRINCIPAL_COLUMNS, principal_from_row};

/// Numbered migrations; the database's `user_version` is the last one applied.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/0001_init.sql")),
    (2, include_str!("../../migrations/0002_sharing_audit.sql")),
    (3, include_str!("../../migrations/0003_streams.sql")),
    (4, include_str!("../../migrations/0004_cameras.sql")),
    (5, include_str!("../../migrations/0005_endpoints.sql")),
    (6, include_str!("../../migrations/0006_lifecycle.sql")),
    (7, include_str!("../../migrations/0007_primary_key.sql")),
    (8, include_str!("../../migrations/0008_regions.sql")),
    (9, include_str!("../../migrations/0009_job_leases.sql")),
    (10, include_str!("../../migrations/0010_feed_workers.sql")),
    (11, include_str!("../../migrations/0011_camera_daily.sql")),
    (12, include_str!("../../migrations/0012_camera_alarms.sql")),
    (13, include_str!("../../migrations/0013_camera_changes.sql")),
    (14, include_str!("../../migrations/0014_viid_accounts.sql")),
];

const READERS: usize = 4;

/// The SQLite catalog store.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

impl SqliteStore {
    /// Opens (creating if needed) the catalog database at `path` and migrates it.
    pub fn open(path: &Path, busy_timeout_ms: u64) -> Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|err| {
                CatalogError::Storage(format!("cannot create {}: {err}", parent.display()))
            })?;
        }
        let writer = connect(path, busy_timeout_ms)?;
        migrate(&writer)?;
        let readers = (0..READERS)
            .map(|_| connect(path, busy_timeout_ms).map(Mutex::new))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                writer: Mutex::new(writer),
                readers,
                next_reader: AtomicUsize::new(0),
            }),
        })
    }

    /// Opens the store named by a `sqlite://` URL.
    pub fn open_url(url: &str, busy_timeout_ms: u64) -> Result<Self> {
        let path = url.strip_prefix("sqlite://").ok_or_else(|| {
            CatalogError::invalid("catalog.url", format!("{url:?} is not a sqlite:// URL"))
        })?;
        Self::open(Path::new(path), busy_timeout_ms)
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `work` on the writer connection on a blocking thread.
    async fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner
                .writer
                .lock()
                .map_err(|_| CatalogError::Storage("the writer connection was poisoned".into()))?;
            work(&mut conn)
        })
        .await
        .map_err(|err| CatalogError::Storage(format!("catalog task failed: {err}")))?
    }

    /// Runs `work` on one of the reader connections on a blocking thread.
    async fn read<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let index = inner.next_reader.fetch_add(1, Ordering::Relaxed) % inner.readers.len();
            let conn = inner.readers[index]
                .lock()
                .map_err(|_| CatalogError::Storage("a reader connection was poisoned".into()))?;
            work(&conn)
        })
        .await
        .map_err(|err| CatalogError::Storage(format!("catalog task failed: {err}")))?
    }
}

fn connect(path: &Path, busy_timeout_ms: u64) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_millis(busy_timeout_ms))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // The camera registry is read whole by statistics and searched at random by lookups
    // and keepalives: 100,000 channels are ~70 MB of pages, which SQLite's default 2 MB
    // cache would re-read from the OS for every statistic. Memory-mapped reads and a
    // larger cache keep them at hand.
    conn.pragma_update(None, "cache_size", -65_536)?;
    conn.pragma_update(None, "mmap_size", 1_073_741_824i64)?;
    // Keepalives rewrite pages all over the liveness table; checkpointing the WAL every
    // 64 MB instead of every 4 MB copies a page rewritten by many batches to the database
    // once, not once per batch.
    conn.pragma_update(None, "wal_autocheckpoint", 16_384)?;
    Ok(conn)
}

fn migrate(conn: &Connection) -> Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let newest = MIGRATIONS.last().map(|(version, _)| *version).unwrap_or(0);
    if current > newest {
        return Err(CatalogError::Storage(format!(
            "the catalog is at version {current}, newer than this cityhub knows ({newest}); \
             upgrade cityhub"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        // Each migration and its version bump commit together, so a crash mid-way
        // leaves the catalog at the previous version, ready to retry.
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {sql}; PRAGMA user_version = {version}; COMMIT;"
        ))
        .map_err(|err| {
            let _ = conn.execute_batch("ROLLBACK");
            CatalogError::Storage(format!("catalog migration {version} failed: {err}"))
        })?;
        tracing::info!(version, "Applied catalog migration.");
    }
    Ok(())
}

/// Now, at the microsecond precision the catalog stores, so that a value returned from a
/// write equals the same value read back.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

pub(crate) fn time_text(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub(crate) fn parse_time(text: String) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(&text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|err| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(err))
        })
}

pub(crate) fn parse_optional_time(text: Option<String>) -> rusqlite::Result<Option<DateTime<Utc>>> {
    text.map(parse_time).transpose()
}

pub(crate) fn parse_text<T: std::str::FromStr>(text: String) -> rusqlite::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    text.parse().map_err(|err: T::Err| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(err))
    })
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(text: String) -> rusqlite::Result<T> {
    serde_json::from_str(&text).map_err(|err| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(err))
    })
}

/// A dead letter as both dead-letter tables store it: id, dataset (or feed), topic,
/// partition, offset, key, payload, error, time.
pub(crate) fn rejection_from_row(row: &Row<'_>) -> rusqlite::Result<StoredRejection> {
    Ok(StoredRejection {
        id: row.get(0)?,
        dataset: row.get(1)?,
        record: RejectedRecord {
            topic: row.get(2)?,
            partition: row.get(3)?,
            offset: row.get(4)?,
            key: row.get(5)?,
            payload: row.get(6)?,
            error: row.get(7)?,
        },
        at: parse_time(row.get(8)?)?,
    })
}
