//! The camera catalogue's change feed in SQLite: changes appended by the registry's writes,
//! read back in order, and deleted by retention from the head.
//!
//! Every write runs on the one writer connection, so a change's sequence number is given as
//! it is written, one past the last (or past what retention deleted, so that numbers are
//! never reused).

use rusqlite::{Connection, OptionalExtension, Row, Transaction, named_params};

use crate::camera::changes::{CameraChange, ChangeKind, ChangePage, ChangedValues, StoredChange};
use crate::camera::status::{LiveState, Notified, Status};
use crate::camera::{ChannelFields, FieldError};
use crate::error::{CatalogError, Result};

/// Appends one change.
pub(crate) fn append(tx: &Transaction<'_>, change: &CameraChange) -> Result<()> {
    let values = change.values.as_ref();
    let record = values
        .map(|values| serde_json::to_string(&values.fields))
        .transpose()?;
    tx.prepare_cached(
        "INSERT INTO camera_changes (seq, camera_id, at, change, region_code, civil_code, \
         civil_code_before, record, longitude, latitude, complete, registered_at, updated_at, \
         notified, last_seen_at, recorded_status, recorded_since, cause) \
         VALUES (max(coalesce((SELECT max(seq) FROM camera_changes), 0), \
         (SELECT purged_through FROM camera_change_state)) + 1, :camera_id, :at, :change, \
         :region_code, :civil_code, :civil_code_before, :record, :longitude, :latitude, \
         :complete, :registered_at, :updated_at, :notified, :last_seen_at, :recorded_status, :recorded_since, :cause)",
    )?
    .execute(named_params! {
        ":camera_id": change.camera_id,
        ":at": change.at,
        ":change": change.kind.as_str(),
        ":region_code": change.region_code,
        ":civil_code": change.civil_code,
        ":civil_code_before": change.civil_code_before,
        ":record": record,
        ":longitude": values.and_then(|v| v.fields.longitude),
        ":latitude": values.and_then(|v| v.fields.latitude),
        ":complete": values.map(|v| v.complete),
        ":registered_at": values.map(|v| v.registered_at),
        ":updated_at": values.map(|v| v.updated_at),
        ":notified": change.live.notified.map(Notified::as_str),
        ":last_seen_at": change.live.last_seen_at,
        ":recorded_status": change.live.recorded.map(Status::as_str),
        ":recorded_since": change.live.recorded_since,
        ":cause": change.cause,
    })?;
    Ok(())
}

/// The civil code a channel shows now (the scope of a town-level consumer).
pub(crate) fn civil_code(tx: &Transaction<'_>, id: &str) -> Result<Option<String>> {
    Ok(tx
        .prepare_cached("SELECT civil_code FROM cameras WHERE id = ?1")?
        .query_row([id], |row| row.get(0))
        .optional()?
        .flatten())
}

/// Appends a change of a channel's status or NOTIFY state.
pub(crate) fn append_status(
    tx: &Transaction<'_>,
    id: &str,
    at: i64,
    live: &LiveState,
    cause: Option<&str>,
) -> Result<()> {
    let civil = civil_code(tx, id)?;
    let change = CameraChange::status(id, at, civil, *live, cause).map_err(invalid_id)?;
    append(tx, &change)
}

/// Appends the deletion of a channel.
pub(crate) fn append_deleted(tx: &Transaction<'_>, id: &str, at: i64) -> Result<()> {
    let civil = civil_code(tx, id)?;
    let change = CameraChange::deleted(id, at, civil).map_err(invalid_id)?;
    append(tx, &change)
}

fn invalid_id(err: FieldError) -> CatalogError {
    CatalogError::invalid(err.field, err.message)
}

const CHANGE_COLUMNS: &str = "seq, camera_id, at, change, region_code, civil_code, \
     civil_code_before, record, longitude, latitude, complete, registered_at, updated_at, \
     notified, last_seen_at, recorded_status, recorded_since, cause";

fn change_from_row(row: &Row<'_>) -> rusqlite::Result<StoredChange> {
    let kind: String = row.get(3)?;
    let kind = ChangeKind::parse(&kind).ok_or_else(|| conversion(3, "an unknown change kind"))?;
    let record: Option<String> = row.get(7)?;
    let values = match (kind.carries_record(), record) {
        (true, Some(record)) => Some(ChangedValues {
            fields: ChannelFields {
                longitude: row.get(8)?,
                latitude: row.get(9)?,
                ..super::parse_json::<ChannelFields>(record)?
            },
            complete: row.get(10)?,
            registered_at: row.get(11)?,
            updated_at: row.get(12)?,
        }),
        (true, None) => return Err(conversion(7, "a change of values without them")),
        (false, _) => None,
    };
    let notified: Option<String> = row.get(13)?;
    let recorded: Option<String> = row.get(15)?;
    Ok(StoredChange {
        seq: row.get(0)?,
        change: CameraChange {
            camera_id: row.get(1)?,
            at: row.get(2)?,
            kind,
            region_code: row.get(4)?,
            civil_code: row.get(5)?,
            civil_code_before: row.get(6)?,
            values,
            live: LiveState {
                notified: notified.as_deref().and_then(Notified::parse),
                notified_at: None,
                last_seen_at: row.get(14)?,
                recorded: recorded.as_deref().and_then(Status::parse),
                recorded_since: row.get(16)?,
            },
            cause: row.get(17)?,
        },
    })
}

fn conversion(column: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        column,
        rusqlite::types::Type::Text,
        format!("camera_changes holds {what}").into(),
    )
}

/// The changes after `after_seq`, in order, with the last place retention deleted.
pub fn changes(conn: &Connection, after_seq: i64, limit: usize) -> Result<ChangePage> {
    let changes = conn
        .prepare_cached(&format!(
            "SELECT {CHANGE_COLUMNS} FROM camera_changes WHERE seq > ?1 ORDER BY seq LIMIT ?2"
        ))?
        .query_map(rusqlite::params![after_seq, limit as i64], change_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(ChangePage {
        changes,
        purged_through: conn
            .prepare_cached("SELECT purged_through FROM camera_change_state")?
            .query_row([], |row| row.get(0))?,
        head: head(conn)?,
    })
}

/// The newest change's number (or what retention deleted last, when none is kept).
pub fn head(conn: &Connection) -> Result<i64> {
    Ok(conn
        .prepare_cached(
            "SELECT max(coalesce((SELECT max(seq) FROM camera_changes), 0), purged_through) \
             FROM camera_change_state",
        )?
        .query_row([], |row| row.get(0))?)
}

/// When the oldest kept change was recorded (a primary-key probe), to spare the writer the
/// rounds with nothing to delete.
pub fn oldest(conn: &Connection) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT at FROM camera_changes ORDER BY seq LIMIT 1")?
        .query_row([], |row| row.get(0))
        .optional()?)
}

/// Deletes at most `limit` changes from the head of the feed that were recorded before
/// `before`, stopping at the first younger one; returns how many.
pub fn purge_chunk(conn: &mut Connection, before: i64, limit: usize) -> Result<u64> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let head: Vec<(i64, i64)> = tx
        .prepare_cached("SELECT seq, at FROM camera_changes ORDER BY seq LIMIT ?1")?
        .query_map([limit as i64], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let Some(through) = head
        .iter()
        .take_while(|(_, at)| *at < before)
        .map(|(seq, _)| *seq)
        .last()
    else {
        return Ok(0);
    };
    let deleted = tx.execute("DELETE FROM camera_changes WHERE seq <= ?1", [through])?;
    tx.execute(
        "UPDATE camera_change_state SET purged_through = max(purged_through, ?1)",
        [through],
    )?;
    tx.commit()?;
    Ok(deleted as u64)
}
