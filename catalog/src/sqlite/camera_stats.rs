//! Camera statistics in two passes over SQLite: the status history's transitions in the
//! window, then every channel; [`crate::camera::tally`] adds them up.

use rusqlite::types::ValueRef;
use rusqlite::{Connection, named_params};

use super::cameras::VIDEO_TYPES;
use crate::camera::StatsGroup;
use crate::camera::StatusEvent;
use crate::camera::status::{Liveness, Notified, Status};
use crate::camera::tally::{self, ChannelPass, ChannelRow, GroupValue, Walks};
use crate::error::Result;

fn status_of(value: ValueRef<'_>) -> Status {
    tally::status_of(value.as_str().ok())
}

fn id_key(value: ValueRef<'_>) -> Option<u128> {
    tally::id_key(value.as_bytes().ok()?)
}

/// The window's transitions, walked per channel in time order (their index gives that
/// order; no sorting).
pub fn transition_pass(conn: &Connection, since: i64, now: i64) -> Result<Walks> {
    let mut walks = Walks::default();
    let mut stmt = conn.prepare_cached(
        "SELECT camera_id, at, previous, status FROM camera_status_events \
         WHERE at >= :since AND at < :now ORDER BY at, seq",
    )?;
    let mut rows = stmt.query(named_params! {":since": since, ":now": now})?;
    while let Some(row) = rows.next()? {
        let Some(key) = id_key(row.get_ref(0)?) else {
            continue;
        };
        let at: i64 = row.get(1)?;
        tally::walk(
            &mut walks,
            key,
            at,
            status_of(row.get_ref(2)?),
            status_of(row.get_ref(3)?),
        );
    }
    Ok(walks)
}

/// A group column's value, compared with a known group's without allocating.
pub(crate) fn matches(group: &GroupValue, value: ValueRef<'_>) -> bool {
    match (group, value) {
        (GroupValue::Null, ValueRef::Null) => true,
        (GroupValue::Integer(a), ValueRef::Integer(b)) => *a == b,
        (GroupValue::Text(a), ValueRef::Text(b)) => a.as_slice() == b,
        _ => false,
    }
}

pub(crate) fn group_value(value: ValueRef<'_>) -> GroupValue {
    match value {
        ValueRef::Integer(n) => GroupValue::Integer(n),
        ValueRef::Text(t) | ValueRef::Blob(t) => GroupValue::Text(t.to_vec()),
        ValueRef::Null | ValueRef::Real(_) => GroupValue::Null,
    }
}

/// Every video channel's narrow liveness row: group, status now, completeness, and the
/// online time of the channels whose status held throughout the window.
pub fn channel_pass(
    conn: &Connection,
    group: StatsGroup,
    since: i64,
    now: i64,
    liveness: Liveness,
    scope: Option<&crate::camera::CameraScope>,
) -> Result<ChannelPass> {
    let mut pass = ChannelPass::default();
    let column = group.column();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT id, {column}, notified, last_seen_at, complete, registered_at, recorded_status, \
         recorded_since FROM camera_live WHERE deleted_at IS NULL AND type_code IN {VIDEO_TYPES}{}",
        scope
            .map(|scope| format!(" AND {}", scope.sql("")))
            .unwrap_or_default()
    ))?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let key_value = row.get_ref(1)?;
        let index = pass.group(|g| matches(g, key_value), || group_value(key_value));
        let channel = ChannelRow {
            key: id_key(row.get_ref(0)?),
            notified: row.get_ref(2)?.as_str().ok().and_then(Notified::parse),
            last_seen_at: row.get_ref(3)?.as_i64_or_null().unwrap_or(None),
            complete: row.get_ref(4)?.as_i64().unwrap_or(0) != 0,
            registered_at: row.get_ref(5)?.as_i64().unwrap_or(i64::MAX),
            recorded: status_of(row.get_ref(6)?),
            recorded_since: row.get_ref(7)?.as_i64_or_null().unwrap_or(None),
        };
        pass.add(index, channel, since, now, liveness);
    }
    Ok(pass)
}

pub fn status_events(conn: &Connection, after_seq: i64, limit: usize) -> Result<Vec<StatusEvent>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, camera_id, at, previous, status, cause FROM camera_status_events \
         WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt.query_map(rusqlite::params![after_seq, limit as i64], |row| {
        let previous: String = row.get(3)?;
        let status: String = row.get(4)?;
        Ok(StatusEvent {
            seq: row.get(0)?,
            camera_id: row.get(1)?,
            at: row.get(2)?,
            previous: Status::parse(&previous).unwrap_or(Status::Unknown),
            status: Status::parse(&status).unwrap_or(Status::Unknown),
            cause: row.get(5)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Evaluates the registry's status SQL on given evidence (for the test that holds it to
/// the Rust rule).
#[cfg(test)]
pub fn status_in_sql(
    conn: &Connection,
    live: &crate::camera::status::LiveState,
    now: i64,
    liveness: Liveness,
) -> Status {
    use super::cameras::STATUS_SQL;
    let sql = format!(
        "SELECT {STATUS_SQL} FROM (SELECT :notified AS notified, :last_seen_at AS last_seen_at)"
    );
    let text: String = conn
        .query_row(
            &sql,
            named_params! {
                ":notified": live.notified.map(Notified::as_str),
                ":last_seen_at": live.last_seen_at,
                ":now": now,
                ":timeout": liveness.timeout_ms(),
            },
            |row| row.get(0),
        )
        .expect("status SQL runs");
    Status::parse(&text).expect("a status")
}
