//! The camera catalogue's change feed in PostgreSQL (see the SQLite store for the rules).
//!
//! Transactions of several nodes commit in another order than they write, so a change gets
//! its place in the feed (`seq`) only once it is committed: the first read after the commit
//! numbers every unnumbered change, in write (`id`) order, under an advisory lock. A cursor
//! therefore never passes a change that commits later; it sees it after its cursor. The
//! changes of one channel are written under that channel's row lock, so their write order is
//! their order.

use tokio_postgres::Row;

use super::cameras::Tx;
use super::*;
use crate::camera::alarms::PURGE_CHUNK;
use crate::camera::changes::{CameraChange, ChangeKind, ChangePage, ChangedValues, StoredChange};
use crate::camera::status::{LiveState, Notified, Status};
use crate::camera::{ChannelFields, FieldError};

/// Held while changes are numbered and while retention deletes them; any constant works as
/// long as every node uses the same.
const NUMBERING_LOCK: i64 = 0x0063_616d_6368_6773;

/// Appends one change (unnumbered).
pub(super) async fn append(tx: &Tx<'_>, change: &CameraChange) -> Result<()> {
    let values = change.values.as_ref();
    let record = values
        .map(|values| serde_json::to_string(&values.fields))
        .transpose()?;
    let statement = tx
        .prepare_cached(
            "INSERT INTO camera_changes (camera_id, at, change, region_code, civil_code, \
             civil_code_before, record, longitude, latitude, complete, registered_at, \
             updated_at, notified, last_seen_at, recorded_status, recorded_since, cause) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
             $17)",
        )
        .await?;
    tx.execute(
        &statement,
        &[
            &change.camera_id,
            &change.at,
            &change.kind.as_str(),
            &change.region_code,
            &change.civil_code,
            &change.civil_code_before,
            &record,
            &values.and_then(|v| v.fields.longitude),
            &values.and_then(|v| v.fields.latitude),
            &values.map(|v| v.complete),
            &values.map(|v| v.registered_at),
            &values.map(|v| v.updated_at),
            &change.live.notified.map(Notified::as_str),
            &change.live.last_seen_at,
            &change.live.recorded.map(Status::as_str),
            &change.live.recorded_since,
            &change.cause,
        ],
    )
    .await?;
    Ok(())
}

async fn civil_code(tx: &Tx<'_>, id: &str) -> Result<Option<String>> {
    let statement = tx
        .prepare_cached("SELECT civil_code FROM cameras WHERE id = $1")
        .await?;
    Ok(tx
        .query_opt(&statement, &[&id])
        .await?
        .map(|row| row.try_get::<_, Option<String>>(0))
        .transpose()?
        .flatten())
}

/// Appends a change of a channel's status or NOTIFY state.
pub(super) async fn append_status(
    tx: &Tx<'_>,
    id: &str,
    at: i64,
    live: &LiveState,
    cause: Option<&str>,
) -> Result<()> {
    let civil = civil_code(tx, id).await?;
    let change = CameraChange::status(id, at, civil, *live, cause).map_err(invalid_id)?;
    append(tx, &change).await
}

/// Appends the deletion of a channel.
pub(super) async fn append_deleted(tx: &Tx<'_>, id: &str, at: i64) -> Result<()> {
    let civil = civil_code(tx, id).await?;
    let change = CameraChange::deleted(id, at, civil).map_err(invalid_id)?;
    append(tx, &change).await
}

fn invalid_id(err: FieldError) -> CatalogError {
    CatalogError::invalid(err.field, err.message)
}

fn change_from_row(row: &Row) -> Result<StoredChange> {
    let kind: String = row.try_get(3)?;
    let kind = ChangeKind::parse(&kind).ok_or_else(|| {
        CatalogError::Storage(format!("camera_changes holds an unknown change {kind:?}"))
    })?;
    let values = match (
        kind.carries_record(),
        optional_json::<ChannelFields>(row, 7)?,
    ) {
        (true, Some(fields)) => Some(ChangedValues {
            fields: ChannelFields {
                longitude: row.try_get(8)?,
                latitude: row.try_get(9)?,
                ..fields
            },
            complete: row.try_get(10)?,
            registered_at: row.try_get(11)?,
            updated_at: row.try_get(12)?,
        }),
        (true, None) => {
            return Err(CatalogError::Storage(
                "camera_changes holds a change of values without them".into(),
            ));
        }
        (false, _) => None,
    };
    let notified: Option<String> = row.try_get(13)?;
    let recorded: Option<String> = row.try_get(15)?;
    Ok(StoredChange {
        seq: row.try_get(0)?,
        change: CameraChange {
            camera_id: row.try_get(1)?,
            at: row.try_get(2)?,
            kind,
            region_code: row.try_get(4)?,
            civil_code: row.try_get(5)?,
            civil_code_before: row.try_get(6)?,
            values,
            live: LiveState {
                notified: notified.as_deref().and_then(Notified::parse),
                notified_at: None,
                last_seen_at: row.try_get(14)?,
                recorded: recorded.as_deref().and_then(Status::parse),
                recorded_since: row.try_get(16)?,
            },
            cause: row.try_get(17)?,
        },
    })
}

/// Numbers the committed changes not yet numbered, after the newest number (or what
/// retention deleted last); answers the newest number.
async fn number(tx: &Tx<'_>) -> Result<i64> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&NUMBERING_LOCK])
        .await?;
    // A statement of its own after the lock: under READ COMMITTED it sees every number the
    // previous holder gave.
    let head: i64 = tx
        .query_one(
            "WITH base AS (SELECT greatest(coalesce((SELECT max(seq) FROM camera_changes), 0), \
             (SELECT purged_through FROM camera_change_state)) AS last), \
             pending AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM camera_changes \
             WHERE seq IS NULL), \
             numbered AS (UPDATE camera_changes c SET seq = base.last + pending.n \
             FROM base, pending WHERE c.id = pending.id RETURNING c.seq) \
             SELECT greatest((SELECT last FROM base), coalesce((SELECT max(seq) FROM numbered), 0))",
            &[],
        )
        .await?
        .try_get(0)?;
    Ok(head)
}

impl PostgresStore {
    pub(super) async fn changes_after(&self, after_seq: i64, limit: usize) -> Result<ChangePage> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let head = number(&tx).await?;
        let rows = tx
            .query(
                "SELECT seq, camera_id, at, change, region_code, civil_code, civil_code_before, \
                 record, longitude, latitude, complete, registered_at, updated_at, notified, \
                 last_seen_at, recorded_status, recorded_since, cause FROM camera_changes \
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after_seq, &(limit as i64)],
            )
            .await?;
        let purged_through: i64 = tx
            .query_one("SELECT purged_through FROM camera_change_state", &[])
            .await?
            .try_get(0)?;
        tx.commit().await?;
        Ok(ChangePage {
            changes: rows.iter().map(change_from_row).collect::<Result<_>>()?,
            purged_through,
            head,
        })
    }

    pub(super) async fn change_head(&self) -> Result<i64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let head = number(&tx).await?;
        tx.commit().await?;
        Ok(head)
    }

    /// Deletes the changes at the head of the feed recorded before `before`, up to the
    /// first younger one, a chunk per transaction (numbering first, so that none is left
    /// unnumbered behind the deleted ones).
    pub(super) async fn purge_changes(&self, before: i64) -> Result<u64> {
        let mut client = self.client().await?;
        let oldest: Option<i64> = client
            .query_opt(
                "SELECT at FROM camera_changes WHERE seq IS NOT NULL ORDER BY seq LIMIT 1",
                &[],
            )
            .await?
            .map(|row| row.try_get(0))
            .transpose()?;
        if oldest.is_none_or(|at| at >= before) {
            return Ok(0);
        }
        let mut deleted = 0;
        loop {
            let tx = client.transaction().await?;
            number(&tx).await?;
            let head = tx
                .query(
                    "SELECT seq, at FROM camera_changes WHERE seq IS NOT NULL ORDER BY seq \
                     LIMIT $1",
                    &[&(PURGE_CHUNK as i64)],
                )
                .await?;
            let mut through = None;
            for row in &head {
                let at: i64 = row.try_get(1)?;
                if at >= before {
                    break;
                }
                through = Some(row.try_get::<_, i64>(0)?);
            }
            let Some(through) = through else {
                return Ok(deleted);
            };
            let chunk = tx
                .execute("DELETE FROM camera_changes WHERE seq <= $1", &[&through])
                .await?;
            tx.execute(
                "UPDATE camera_change_state SET purged_through = greatest(purged_through, $1)",
                &[&through],
            )
            .await?;
            tx.commit().await?;
            deleted += chunk;
            if chunk < PURGE_CHUNK as u64 {
                return Ok(deleted);
            }
        }
    }
}
