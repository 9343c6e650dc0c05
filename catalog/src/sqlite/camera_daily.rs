//! The daily roll-ups of the camera status history on SQLite: which days to compute, the
//! channels and transitions they are computed from, and their rows; the computation itself
//! is [`crate::camera::daily`].

use std::ops::RangeInclusive;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, named_params};

use super::camera_stats::group_value;
use super::cameras::{VIDEO_TYPES, sweep};
use crate::camera::daily::{
    self, ChannelDay, DailyRow, DayChannel, DayGroup, HistoryRow, RollUpState, day_start,
};
use crate::camera::status::{Liveness, Status};
use crate::camera::tally::{self, GroupValue};
use crate::camera::{CameraScope, StatsGroup};
use crate::error::Result;

/// Catches the history up to `now`, then rolls up every finished day that is missing or
/// was changed since the last roll-up, a few days per transaction. Returns the days done.
pub fn roll_up_days(
    conn: &mut Connection,
    now: i64,
    liveness: Liveness,
    retention_days: u32,
) -> Result<Vec<i32>> {
    sweep(conn, now, liveness)?;
    let kept_from = daily::beijing_day(now) - retention_days as i32;
    let oldest: Option<i32> =
        conn.query_row("SELECT MIN(day) FROM camera_daily_days", [], |row| {
            row.get(0)
        })?;
    // Checked first: most rounds have nothing to purge, and a write would cost a commit.
    if oldest.is_some_and(|day| day < kept_from) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for table in ["camera_daily", "camera_daily_groups", "camera_daily_days"] {
            tx.execute(&format!("DELETE FROM {table} WHERE day < ?1"), [kept_from])?;
        }
        tx.commit()?;
    }
    let (state, history_seq) = read_state(conn, kept_from)?;
    let Some(days) = daily::days_to_roll_up(&state, now, retention_days) else {
        return Ok(Vec::new());
    };
    let last = *days.end();
    let mut done = Vec::new();
    for chunk in daily::chunks(days) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let channels = channels_for(&tx, &chunk)?;
        let history = history_in(&tx, &chunk)?;
        let rows = daily::roll_up(&channels, &history, chunk.clone());
        write_days(&tx, &chunk, &channels, &rows, now)?;
        if *chunk.end() == last {
            // Only once every day is written may the next round look at newer history alone.
            tx.execute(
                "INSERT INTO camera_daily_state (id, history_seq) VALUES (1, ?1) \
                 ON CONFLICT (id) DO UPDATE SET history_seq = excluded.history_seq",
                [history_seq],
            )?;
        }
        tx.commit()?;
        done.extend(chunk);
    }
    Ok(done)
}

/// What decides the days to roll up, and the newest history row now.
fn read_state(conn: &Connection, kept_from: i32) -> Result<(RollUpState, i64)> {
    let first_registered_at: Option<i64> = conn.query_row(
        // Of any channel, video or not: the index answers at once, and a day or two
        // too many before the first video channel are rolled up empty.
        "SELECT MIN(registered_at) FROM camera_live",
        [],
        |row| row.get(0),
    )?;
    let rolled = conn
        .prepare_cached("SELECT day FROM camera_daily_days WHERE day >= ?1 ORDER BY day")?
        .query_map([kept_from], |row| row.get(0))?
        .collect::<rusqlite::Result<Vec<i32>>>()?;
    let seen: i64 = conn
        .query_row(
            "SELECT history_seq FROM camera_daily_state WHERE id = 1",
            [],
            |row| row.get(0),
        )
        .optional()?
        .unwrap_or(0);
    let earliest_new_transition: Option<i64> = conn.query_row(
        // NOT INDEXED: with the index on `at`, SQLite would look for the minimum by walking
        // the whole index for a row past `seq`; the rowid range holds only the new rows.
        "SELECT MIN(at) FROM camera_status_events NOT INDEXED WHERE seq > ?1",
        [seen],
        |row| row.get(0),
    )?;
    let newest: i64 = conn.query_row(
        "SELECT COALESCE(MAX(seq), 0) FROM camera_status_events",
        [],
        |row| row.get(0),
    )?;
    let state = RollUpState {
        first_registered_at,
        rolled,
        earliest_new_transition,
    };
    Ok((state, newest))
}

/// The video channels registered during `days`, with their status as the first starts.
fn channels_for(tx: &Transaction<'_>, days: &RangeInclusive<i32>) -> Result<Vec<DayChannel>> {
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT l.id, l.region_code, l.industry, l.type_code, l.position_type, l.department, \
         l.registered_at, l.deleted_at, \
         (SELECT e.status FROM camera_status_events e WHERE e.camera_id = l.id AND e.at < :start \
          ORDER BY e.at DESC, e.seq DESC LIMIT 1) \
         FROM camera_live l WHERE l.type_code IN {VIDEO_TYPES} AND l.registered_at < :end \
         AND (l.deleted_at IS NULL OR l.deleted_at > :start)"
    ))?;
    let rows = stmt.query_map(
        named_params! {":start": day_start(*days.start()), ":end": day_start(days.end() + 1)},
        |row| {
            Ok(DayChannel {
                id: row.get(0)?,
                group: DayGroup {
                    region_code: row.get(1)?,
                    industry: row.get(2)?,
                    type_code: row.get(3)?,
                    position_type: row.get(4)?,
                    department: row.get(5)?,
                },
                registered_at: row.get(6)?,
                deleted_at: row.get(7)?,
                status_at_start: tally::status_of(row.get_ref(8)?.as_str().ok()),
            })
        },
    )?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The transitions inside `days`, in time order.
fn history_in(tx: &Transaction<'_>, days: &RangeInclusive<i32>) -> Result<Vec<HistoryRow>> {
    let mut stmt = tx.prepare_cached(
        "SELECT camera_id, at, previous, status FROM camera_status_events \
         WHERE at >= ?1 AND at < ?2 ORDER BY at, seq",
    )?;
    let mut rows = stmt.query([day_start(*days.start()), day_start(days.end() + 1)])?;
    let mut history = Vec::new();
    while let Some(row) = rows.next()? {
        let status = |i: usize| -> rusqlite::Result<Status> {
            Ok(tally::status_of(row.get_ref(i)?.as_str().ok()))
        };
        if let Some(transition) = HistoryRow::new(
            row.get_ref(0)?.as_str().unwrap_or_default(),
            row.get(1)?,
            status(2)?,
            status(3)?,
        ) {
            history.push(transition);
        }
    }
    Ok(history)
}

/// Replaces the rows of `days` with the ones computed and marks the days rolled up.
fn write_days(
    tx: &Transaction<'_>,
    days: &RangeInclusive<i32>,
    channels: &[DayChannel],
    rows: &[ChannelDay],
    now: i64,
) -> Result<()> {
    let (first, last) = (*days.start(), *days.end());
    for table in ["camera_daily", "camera_daily_groups"] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE day BETWEEN ?1 AND ?2"),
            [first, last],
        )?;
    }
    let mut insert = tx.prepare_cached(
        "INSERT INTO camera_daily (day, camera_id, region_code, industry, type_code, \
         position_type, department, observed_ms, online_ms, transitions, complete) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    for row in rows {
        let channel = &channels[row.channel];
        let group = &channel.group;
        insert.execute(rusqlite::params![
            row.day,
            channel.id,
            group.region_code,
            group.industry,
            group.type_code,
            group.position_type,
            group.department,
            row.observed_ms,
            row.online_ms,
            row.transitions,
            row.complete,
        ])?;
    }
    let mut insert = tx.prepare_cached(
        "INSERT INTO camera_daily_groups (day, region_code, industry, type_code, position_type, \
         department, channels, observed_ms, online_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for total in daily::group_days(channels, rows) {
        let group = &total.group;
        insert.execute(rusqlite::params![
            total.day,
            group.region_code,
            group.industry,
            group.type_code,
            group.position_type,
            group.department,
            total.channels,
            total.observed_ms,
            total.online_ms,
        ])?;
    }
    let mut mark = tx.prepare_cached(
        "INSERT INTO camera_daily_days (day, rolled_at) VALUES (?1, ?2) \
         ON CONFLICT (day) DO UPDATE SET rolled_at = excluded.rolled_at",
    )?;
    for day in first..=last {
        mark.execute(rusqlite::params![day, now])?;
    }
    Ok(())
}

/// The rolled-up online and observed time of `days` per group value, of the channels inside
/// `scope`: from the group totals, or for a town (known by civil code, which the totals do
/// not carry) from its channels' rows.
pub fn daily_time(
    conn: &Connection,
    group: StatsGroup,
    days: &RangeInclusive<i32>,
    scope: Option<&CameraScope>,
) -> Result<Vec<(GroupValue, i64, i64)>> {
    let column = group.column();
    let (table, condition) = daily::totals_source(scope);
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {column}, SUM(online_ms), SUM(observed_ms) FROM {table} \
         WHERE day BETWEEN ?1 AND ?2{condition} GROUP BY {column}"
    ))?;
    let rows = stmt.query_map([*days.start(), *days.end()], |row| {
        Ok((group_value(row.get_ref(0)?), row.get(1)?, row.get(2)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Rows of `hub.camera_daily` after `(day, camera id)`, in that order.
pub fn daily_rows(conn: &Connection, after: (i32, &str), limit: usize) -> Result<Vec<DailyRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT day, camera_id, region_code, industry, type_code, position_type, department, \
         observed_ms, online_ms, transitions, complete FROM camera_daily \
         WHERE (day, camera_id) > (?1, ?2) ORDER BY day, camera_id LIMIT ?3",
    )?;
    let rows = stmt.query_map(rusqlite::params![after.0, after.1, limit as i64], |row| {
        Ok(DailyRow {
            day: row.get(0)?,
            camera_id: row.get(1)?,
            group: DayGroup {
                region_code: row.get(2)?,
                industry: row.get(3)?,
                type_code: row.get(4)?,
                position_type: row.get(5)?,
                department: row.get(6)?,
            },
            observed_ms: row.get(7)?,
            online_ms: row.get(8)?,
            transitions: row.get(9)?,
            complete: row.get(10)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
