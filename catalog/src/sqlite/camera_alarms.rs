//! SQLite statements of the alarm and position histories: appending a report of a
//! registered channel or device (once, however often it is sent), reading them in the
//! order received, and deleting what is past retention.

use rusqlite::{Connection, Row, Transaction, TransactionBehavior};

use crate::camera::alarms::{CameraAlarm, CameraPosition, StoredAlarm, StoredPosition};
use crate::camera::{CameraReport, FieldError, rules};
use crate::error::Result;

use super::cameras::owner;

/// Appends `reports` in one transaction; each answers whether it is new or why it was
/// refused.
pub fn record_reports(
    conn: &mut Connection,
    reports: Vec<CameraReport>,
    acting_for: Option<String>,
    received_at: i64,
) -> Result<Vec<std::result::Result<bool, FieldError>>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(reports.len());
    for report in &reports {
        outcomes.push(record_one(&tx, report, acting_for.as_deref(), received_at)?);
    }
    tx.commit()?;
    Ok(outcomes)
}

/// Appends one report, unless its source is unknown or not the caller's.
pub(crate) fn record_one(
    tx: &Transaction<'_>,
    report: &CameraReport,
    acting_for: Option<&str>,
    received_at: i64,
) -> Result<std::result::Result<bool, FieldError>> {
    let owner = owner(tx, report.id())?;
    if let Err(err) = rules::may_report(
        report.id(),
        owner.as_ref().map(Option::as_deref),
        acting_for,
    ) {
        return Ok(Err(err));
    }
    // OR IGNORE: a report already kept (the unique key) is not kept twice.
    let inserted = match report {
        CameraReport::Alarm(a) => tx
            .prepare_cached(
                "INSERT OR IGNORE INTO camera_alarms (camera_id, at, priority, method, \
                 alarm_type, description, longitude, latitude, received_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(rusqlite::params![
                a.id,
                a.at,
                a.priority,
                a.method,
                a.alarm_type,
                a.description,
                a.longitude,
                a.latitude,
                received_at
            ])?,
        CameraReport::Position(p) => tx
            .prepare_cached(
                "INSERT OR IGNORE INTO camera_positions (camera_id, at, longitude, latitude, \
                 speed, direction, altitude, received_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(rusqlite::params![
                p.id,
                p.at,
                p.longitude,
                p.latitude,
                p.speed,
                p.direction,
                p.altitude,
                received_at
            ])?,
    };
    Ok(Ok(inserted == 1))
}

fn alarm_from_row(row: &Row<'_>) -> rusqlite::Result<StoredAlarm> {
    Ok(StoredAlarm {
        seq: row.get(0)?,
        received_at: row.get(9)?,
        alarm: CameraAlarm {
            id: row.get(1)?,
            at: row.get(2)?,
            priority: row.get(3)?,
            method: row.get(4)?,
            alarm_type: row.get(5)?,
            description: row.get(6)?,
            longitude: row.get(7)?,
            latitude: row.get(8)?,
        },
    })
}

fn position_from_row(row: &Row<'_>) -> rusqlite::Result<StoredPosition> {
    Ok(StoredPosition {
        seq: row.get(0)?,
        received_at: row.get(8)?,
        position: CameraPosition {
            id: row.get(1)?,
            at: row.get(2)?,
            longitude: row.get(3)?,
            latitude: row.get(4)?,
            speed: row.get(5)?,
            direction: row.get(6)?,
            altitude: row.get(7)?,
        },
    })
}

pub fn alarms(conn: &Connection, after_seq: i64, limit: usize) -> Result<Vec<StoredAlarm>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, camera_id, at, priority, method, alarm_type, description, longitude, \
         latitude, received_at FROM camera_alarms WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt.query_map(rusqlite::params![after_seq, limit as i64], alarm_from_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub fn positions(conn: &Connection, after_seq: i64, limit: usize) -> Result<Vec<StoredPosition>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, camera_id, at, longitude, latitude, speed, direction, altitude, \
         received_at FROM camera_positions WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt.query_map(
        rusqlite::params![after_seq, limit as i64],
        position_from_row,
    )?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

fn report_table(positions: bool) -> &'static str {
    if positions {
        "camera_positions"
    } else {
        "camera_alarms"
    }
}

/// When the oldest kept alarm (`positions` false) or position happened (an index probe).
pub fn oldest_report(conn: &Connection, positions: bool) -> Result<Option<i64>> {
    let table = report_table(positions);
    Ok(conn
        .prepare_cached(&format!("SELECT min(at) FROM {table}"))?
        .query_row([], |row| row.get(0))?)
}

/// The alarms (`positions` false) or positions of before `before`: deletes at most
/// `limit` of them, oldest first, and returns how many. Retention deletes in such chunks so
/// that a first purge of a long history does not hold the writer for long.
pub fn purge_chunk(
    conn: &mut Connection,
    positions: bool,
    before: i64,
    limit: usize,
) -> Result<u64> {
    let table = report_table(positions);
    let deleted = conn.execute(
        &format!(
            "DELETE FROM {table} WHERE seq IN \
             (SELECT seq FROM {table} WHERE at < ?1 ORDER BY at LIMIT ?2)"
        ),
        rusqlite::params![before, limit as i64],
    )?;
    Ok(deleted as u64)
}
