//! The catalog on PostgreSQL, for several hub nodes sharing one catalog.
//!
//! The same store traits as the SQLite catalog, with the same semantics, on a pool of
//! connections. Where SQLite serialises writers with `BEGIN IMMEDIATE`, PostgreSQL locks
//! the row that decides: a commit locks its dataset's row (`SELECT ... FOR UPDATE`) before
//! it checks the expected parent, so two nodes can never both see the same parent and both
//! win, and the loser waits for the winner instead of failing spuriously. The append-only
//! rules of the audit log are triggers in the database, so they hold for every client.

use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::watch;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Row};

use crate::error::{CatalogError, Result};
use crate::model::{RejectedRecord, StoredRejection};

mod audit;
mod camera_alarms;
mod camera_changes;
mod camera_daily;
mod cameras;
mod datasets;
mod endpoints;
mod sharing;
mod viid;

/// Numbered migrations, applied in order; `cityhub_migrations` records each one applied.
pub(crate) const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (
        2,
        include_str!("../../migrations/postgres/0002_job_leases.sql"),
    ),
    (
        3,
        include_str!("../../migrations/postgres/0003_feed_workers.sql"),
    ),
    (
        4,
        include_str!("../../migrations/postgres/0004_camera_daily.sql"),
    ),
    (
        5,
        include_str!("../../migrations/postgres/0005_camera_alarms.sql"),
    ),
    (
        6,
        include_str!("../../migrations/postgres/0006_camera_changes.sql"),
    ),
    (
        7,
        include_str!("../../migrations/postgres/0007_viid_accounts.sql"),
    ),
];

/// Any constant works; it only has to be the same for every node, so that two nodes
/// starting together migrate one after the other.
const MIGRATION_LOCK: i64 = 0x0063_6974_7968_7562;

/// Connections per node. Every catalog call holds one for a single transaction, so a
/// handful serves a node's requests; PostgreSQL's default `max_connections` (100) leaves
/// room for a dozen nodes.
const POOL_SIZE: usize = 8;

/// The channel every node LISTENs on, `cityhub_changes:` and the catalog's schema (a
/// database may hold several catalogs, one per schema; notices are database-wide). Writers
/// NOTIFY it inside their transactions, so a notice arrives only for a change that committed.
fn changes_channel(schema: &str) -> String {
    let channel = format!("cityhub_changes:{schema}");
    // PostgreSQL refuses channel names past 63 bytes: a long schema name goes by its hash.
    if channel.len() <= 63 {
        return channel;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(schema.as_bytes());
    format!("cityhub_changes:{}", hex::encode(&digest[..16]))
}

/// The PostgreSQL catalog store.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// Moves on every notice from [`CHANGES_CHANNEL`] (see [`listen_for_changes`]).
    notices: Arc<watch::Sender<u64>>,
    /// See [`changes_channel`].
    channel: Arc<str>,
    /// This store among the catalog's clients, at the head of its notices: its own notices
    /// are not news to it (this process already knows its own commits).
    origin: Arc<str>,
}

impl PostgresStore {
    /// Connects to the catalog named by a `postgres://` (or `postgresql://`) URL and brings
    /// its tables to the newest version.
    pub async fn open_url(url: &str) -> Result<Self> {
        let config = tokio_postgres::Config::from_str(url).map_err(|err| {
            CatalogError::invalid(
                "catalog.url",
                format!(
                    "{} is not a PostgreSQL URL ({err}); write postgres://user:password@host:port/database",
                    redact(url)
                ),
            )
        })?;
        let manager = Manager::from_config(
            config.clone(),
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .build()
            .map_err(|err| CatalogError::Storage(format!("cannot build the pool: {err}")))?;
        let mut store = Self {
            pool,
            notices: Arc::new(watch::Sender::new(0)),
            channel: Arc::from(""),
            origin: Arc::from(hex::encode(rand::random::<[u8; 8]>())),
        };
        let schema = store.migrate().await.map_err(|err| match err {
            CatalogError::Storage(message) => CatalogError::Storage(format!(
                "cannot open the PostgreSQL catalog at {}: {message}",
                redact(url)
            )),
            other => other,
        })?;
        store.channel = Arc::from(changes_channel(&schema));
        tokio::spawn(listen_for_changes(
            config,
            store.channel.clone(),
            store.origin.clone(),
            Arc::downgrade(&store.notices),
        ));
        Ok(store)
    }

    /// A pooled connection.
    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|err| {
            CatalogError::Storage(format!("no connection to the PostgreSQL catalog: {err}"))
        })
    }

    /// Brings the tables to the newest version; answers the schema they are in.
    async fn migrate(&self) -> Result<String> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS cityhub_migrations (\
             version bigint PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
        let current: i64 = tx
            .query_one(
                "SELECT coalesce(max(version), 0) FROM cityhub_migrations",
                &[],
            )
            .await?
            .try_get(0)?;
        let newest = MIGRATIONS.last().map(|(version, _)| *version).unwrap_or(0);
        if current > newest {
            return Err(CatalogError::Storage(format!(
                "the catalog is at version {current}, newer than this cityhub knows ({newest}); \
                 upgrade cityhub"
            )));
        }
        // All pending migrations and their records commit together: a failure leaves the
        // catalog where it was, ready to retry.
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
            tx.batch_execute(sql).await.map_err(|err| {
                CatalogError::Storage(format!(
                    "catalog migration {version} failed: {}",
                    describe(&err)
                ))
            })?;
            tx.execute(
                "INSERT INTO cityhub_migrations (version) VALUES ($1)",
                &[version],
            )
            .await?;
            tracing::info!(version, "Applied catalog migration on PostgreSQL.");
        }
        let schema: String = tx
            .query_one("SELECT current_schema()", &[])
            .await?
            .try_get(0)?;
        tx.commit().await?;
        Ok(schema)
    }

    /// Tells every node, once `tx` commits, that the catalog changed (`what` is for people
    /// reading a packet trace or `pg_stat_activity`; nodes only count notices).
    async fn notify_change(&self, tx: &impl Cached, what: &str) -> Result<()> {
        let payload = format!("{} {what}", self.origin);
        tx.exec("SELECT pg_notify($1, $2)", &[&&*self.channel, &payload])
            .await?;
        Ok(())
    }
}

/// Keeps a connection that LISTENs for other nodes' changes and moves `notices` on each;
/// reconnects (with a growing pause, at most 5 s) when the connection drops, and moves
/// `notices` once after every (re)connection, for what may have been missed meanwhile.
/// Ends when the store is gone.
async fn listen_for_changes(
    config: tokio_postgres::Config,
    channel: Arc<str>,
    origin: Arc<str>,
    notices: Weak<watch::Sender<u64>>,
) {
    let mut pause = Duration::from_millis(100);
    loop {
        match config.connect(tokio_postgres::NoTls).await {
            Ok((client, mut connection)) => {
                let (heard, mut news) = tokio::sync::mpsc::unbounded_channel::<()>();
                // The connection delivers notifications only to whoever polls it.
                let origin = origin.clone();
                let driver = tokio::spawn(async move {
                    loop {
                        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                            Some(Ok(AsyncMessage::Notification(notice)))
                                if !notice
                                    .payload()
                                    .strip_prefix(&*origin)
                                    .is_some_and(|rest| rest.starts_with(' ')) =>
                            {
                                if heard.send(()).is_err() {
                                    return None;
                                }
                            }
                            Some(Ok(_)) => {}
                            Some(Err(err)) => return Some(err),
                            None => return None,
                        }
                    }
                });
                match client
                    .batch_execute(&format!("LISTEN \"{}\"", channel.replace('"', "\"\"")))
                    .await
                {
                    Ok(()) => {
                        pause = Duration::from_millis(100);
                        let Some(sender) = notices.upgrade() else {
                            return;
                        };
                        sender.send_modify(|n| *n += 1);
                        drop(sender);
                        while news.recv().await.is_some() {
                            let Some(sender) = notices.upgrade() else {
                                return;
                            };
                            sender.send_modify(|n| *n += 1);
                        }
                    }
                    Err(err) => tracing::warn!(error = %describe(&err),
                        "Could not LISTEN for other nodes' catalog changes; retrying."),
                }
                drop(client);
                if let Ok(Some(err)) = driver.await {
                    tracing::warn!(error = %err,
                        "The connection that hears other nodes' catalog changes dropped; reconnecting.");
                }
            }
            Err(err) => tracing::warn!(error = %describe(&err),
                "Could not connect to hear other nodes' catalog changes; retrying."),
        }
        if notices.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// Statements run through prepared statements that each pooled connection keeps (deadpool's
/// statement cache): a statement sent as text is prepared again on every call, a second
/// round trip to the server. Used on the hot paths (commits, audit appends).
pub(super) trait Cached {
    async fn exec(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64>;
    async fn rows(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>>;
    async fn row_opt(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>>;
}

macro_rules! cached_statements {
    ($type:ty) => {
        impl Cached for $type {
            async fn exec(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
                let statement = self.prepare_cached(sql).await?;
                Ok(self.execute(&statement, params).await?)
            }

            async fn rows(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
                let statement = self.prepare_cached(sql).await?;
                Ok(self.query(&statement, params).await?)
            }

            async fn row_opt(
                &self,
                sql: &str,
                params: &[&(dyn ToSql + Sync)],
            ) -> Result<Option<Row>> {
                let statement = self.prepare_cached(sql).await?;
                Ok(self.query_opt(&statement, params).await?)
            }
        }
    };
}
cached_statements!(deadpool_postgres::Transaction<'_>);
cached_statements!(deadpool_postgres::ClientWrapper);

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// A database error with the server's own message (tokio-postgres prints only "db error")
/// and its SQLSTATE code, which does not depend on the server's language.
fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => err.to_string(),
    }
}

/// Whether an error is PostgreSQL aborting a transaction for another's sake (a deadlock or
/// a serialization failure): running it again is the documented answer.
fn is_retryable(err: &CatalogError) -> bool {
    let retryable = [
        SqlState::T_R_DEADLOCK_DETECTED.code(),
        SqlState::T_R_SERIALIZATION_FAILURE.code(),
    ];
    matches!(err, CatalogError::Storage(message)
        if retryable.iter().any(|code| message.ends_with(&format!("(SQLSTATE {code})"))))
}

impl From<tokio_postgres::Error> for CatalogError {
    fn from(err: tokio_postgres::Error) -> Self {
        CatalogError::Storage(describe(&err))
    }
}

/// Whether an error is a unique-key violation (a racing insert of the same name).
fn is_unique_violation(err: &tokio_postgres::Error) -> bool {
    err.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// Now, at the microsecond precision the catalog stores, so that a value returned from a
/// write equals the same value read back.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A text column parsed into one of the catalog's enums.
fn parse<T: FromStr>(row: &Row, index: usize) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    let text: String = row.try_get(index)?;
    text.parse().map_err(|err: T::Err| {
        CatalogError::Storage(format!("stored value {text:?} is unreadable: {err}"))
    })
}

/// A JSON text column.
fn json<T: serde::de::DeserializeOwned>(row: &Row, index: usize) -> Result<T> {
    let text: String = row.try_get(index)?;
    Ok(serde_json::from_str(&text)?)
}

/// A nullable JSON text column.
fn optional_json<T: serde::de::DeserializeOwned>(row: &Row, index: usize) -> Result<Option<T>> {
    let text: Option<String> = row.try_get(index)?;
    Ok(text.map(|text| serde_json::from_str(&text)).transpose()?)
}

/// An unsigned value kept in a wider signed column (PostgreSQL has no unsigned types):
/// `u32`s in bigint columns, GB/T 28181 code values (`u8`) in integer columns.
fn optional_unsigned<'a, Stored, Value>(row: &'a Row, index: usize) -> Result<Option<Value>>
where
    Stored: tokio_postgres::types::FromSql<'a> + Copy + std::fmt::Display,
    Value: TryFrom<Stored>,
{
    let stored: Option<Stored> = row.try_get(index)?;
    stored
        .map(|stored| {
            Value::try_from(stored).map_err(|_| {
                CatalogError::Storage(format!("stored value {stored} is out of range"))
            })
        })
        .transpose()
}

/// A dead letter as both dead-letter tables store it: id, dataset (or feed), topic,
/// partition, offset, key, payload, error, time.
fn rejection_from_row(row: &Row) -> Result<StoredRejection> {
    Ok(StoredRejection {
        id: row.try_get(0)?,
        dataset: row.try_get(1)?,
        record: RejectedRecord {
            topic: row.try_get(2)?,
            partition: row.try_get(3)?,
            offset: row.try_get(4)?,
            key: row.try_get(5)?,
            payload: row.try_get(6)?,
            error: row.try_get(7)?,
        },
        at: row.try_get(8)?,
    })
}
