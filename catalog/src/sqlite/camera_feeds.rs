//! The camera registry's Kafka feeds in SQLite: stored offsets, a batch applied with its
//! offset and dead letters in one transaction, and the dead letters read back.

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::camera_alarms::record_one;
use super::cameras::{register_one, signal_one};
use crate::camera::{CameraFeed, CameraOp, CameraStreamCommit, CameraStreamOutcome};
use crate::error::Result;
use crate::model::{RejectedRecord, StoredRejection};

/// The stored next offsets of a camera feed: (topic, partition, next offset).
pub fn stream_offsets(conn: &Connection, feed: CameraFeed) -> Result<Vec<(String, i32, i64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT topic, partition, next_offset FROM camera_stream_offsets WHERE feed = ?1 \
         ORDER BY topic, partition",
    )?;
    let rows = stmt.query_map([feed.dataset()], |row| {
        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

fn keep_dead_letter(tx: &Transaction<'_>, feed: CameraFeed, record: &RejectedRecord) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO camera_rejected_records (feed, topic, partition, \"offset\", key, payload, \
         error, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(rusqlite::params![
        feed.dataset(),
        record.topic,
        record.partition,
        record.offset,
        record.key,
        record.payload,
        record.error,
        super::time_text(super::now()),
    ])?;
    Ok(())
}

/// Applies a Kafka batch to the registry with its offset, in one transaction.
pub fn commit_stream(
    conn: &mut Connection,
    commit: CameraStreamCommit,
) -> Result<CameraStreamOutcome> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let feed = commit.feed;
    let advance = &commit.offset;
    let actual: Option<i64> = tx
        .prepare_cached(
            "SELECT next_offset FROM camera_stream_offsets WHERE feed = ?1 AND topic = ?2 \
             AND partition = ?3",
        )?
        .query_row(
            rusqlite::params![feed.dataset(), advance.topic, advance.partition],
            |row| row.get(0),
        )
        .optional()?;
    advance.check_stored(actual)?;
    let mut outcome = CameraStreamOutcome::default();
    for (mut origin, op) in commit.items {
        let result = match op {
            CameraOp::Register(report) => {
                register_one(&tx, *report, None, commit.at, commit.at)?.map(|_| 1)
            }
            CameraOp::Signal(signal) => signal_one(&tx, signal, None, commit.liveness, commit.at)?,
            CameraOp::Report(report) => record_one(&tx, &report, None, commit.at)?.map(|_| 1),
        };
        match result {
            Ok(_) => outcome.applied += 1,
            Err(err) => {
                origin.error = err.to_string();
                keep_dead_letter(&tx, feed, &origin)?;
                outcome.rejected += 1;
            }
        }
    }
    for record in &commit.rejected {
        keep_dead_letter(&tx, feed, record)?;
        outcome.rejected += 1;
    }
    tx.prepare_cached(
        "INSERT INTO camera_stream_offsets (feed, topic, partition, next_offset, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (feed, topic, partition) DO UPDATE SET \
         next_offset = excluded.next_offset, updated_at = excluded.updated_at",
    )?
    .execute(rusqlite::params![
        feed.dataset(),
        advance.topic,
        advance.partition,
        advance.next,
        super::time_text(super::now()),
    ])?;
    tx.commit()?;
    Ok(outcome)
}

/// Dead letters of the camera feeds after `after_id`, oldest first.
pub fn rejected_records(
    conn: &Connection,
    after_id: i64,
    limit: usize,
) -> Result<Vec<StoredRejection>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, feed, topic, partition, \"offset\", key, payload, error, at \
         FROM camera_rejected_records WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = stmt.query_map(rusqlite::params![after_id, limit as i64], |row| {
        super::rejection_from_row(row)
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}
