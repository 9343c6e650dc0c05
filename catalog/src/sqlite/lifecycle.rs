//! The catalog side of a dataset's lifecycle in SQLite: schema changes and the expiry of
//! replaced snapshots with the files only they named.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::datasets::{DATASET_COLUMNS, DATASET_FROM, dataset_from_row};
use super::*;

/// Changes a dataset's columns and/or sort key in one transaction (see
/// [`crate::store::DatasetStore::change_dataset`]).
pub(super) fn change(
    conn: &mut Connection,
    dataset_id: i64,
    change: DatasetChange,
) -> Result<Dataset> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let by_id = format!("SELECT {DATASET_COLUMNS} FROM {DATASET_FROM} WHERE d.id = ?1");
    let current = tx
        .query_row(&by_id, [dataset_id], dataset_from_row)
        .optional()?
        .ok_or_else(|| CatalogError::NotFound {
            what: "dataset",
            name: dataset_id.to_string(),
        })?;
    // Resolved inside the write transaction: against the schema that is current.
    let settings = change.resolve(&current)?;
    if let Some(columns) = &settings.new_columns {
        let version = current.schema_version + 1;
        let at = time_text(now());
        tx.execute(
            "INSERT INTO schema_versions (dataset_id, version, columns, created_at) \
                 VALUES (?1, ?2, ?3, ?4)",
            params![dataset_id, version, serde_json::to_string(columns)?, at],
        )?;
        tx.execute(
            "UPDATE datasets SET schema_version = ?1, updated_at = ?2 WHERE id = ?3",
            params![version, at, dataset_id],
        )?;
    }
    if let Some(retention) = &settings.row_retention {
        tx.execute(
            "UPDATE datasets SET row_retention = ?1 WHERE id = ?2",
            params![serde_json::to_string(retention)?, dataset_id],
        )?;
    }
    tx.execute(
        "UPDATE datasets SET region_column = ?1, region_free = ?2, sort_key = ?3 WHERE id = ?4",
        params![
            settings.region_column,
            settings.region_free,
            serde_json::to_string(&settings.sort_key)?,
            dataset_id
        ],
    )?;
    let changed = tx.query_row(&by_id, [dataset_id], dataset_from_row)?;
    tx.commit()?;
    Ok(changed)
}

/// Garbage collection's catalog step (see [`crate::store::DatasetStore::expire_snapshots`]).
pub(super) fn expire(
    conn: &mut Connection,
    dataset_id: i64,
    replaced_before: DateTime<Utc>,
    dry_run: bool,
    at: DateTime<Utc>,
) -> Result<ExpiredSnapshots> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let expired = expired_in(&tx, dataset_id, &time_text(replaced_before))?;
    if dry_run {
        return Ok(expired);
    }
    if let Some(&newest_expired) = expired.snapshots.last() {
        // The oldest kept snapshot's parent is gone; every older one goes too.
        tx.execute(
            "UPDATE snapshots SET parent_id = NULL WHERE dataset_id = ?1 \
                 AND parent_id = ?2",
            params![dataset_id, newest_expired],
        )?;
        tx.execute(
            "DELETE FROM snapshots WHERE dataset_id = ?1 AND id <= ?2",
            params![dataset_id, newest_expired],
        )?;
        let mut forget =
            tx.prepare_cached("DELETE FROM files WHERE dataset_id = ?1 AND path = ?2")?;
        for file in &expired.files {
            forget.execute(params![dataset_id, file.path])?;
        }
    }
    tx.execute(
        "UPDATE datasets SET last_gc_at = ?1 WHERE id = ?2",
        params![time_text(at), dataset_id],
    )?;
    tx.commit()?;
    Ok(expired)
}

/// The snapshots of a dataset that were replaced before `replaced_before` (their successor
/// was committed before it) and are not current, oldest first, with the files that only
/// they name. A snapshot stays readable for the whole retention after it stopped being
/// current, so a time-travelling read of any instant within it finds its snapshot.
fn expired_in(
    conn: &Connection,
    dataset_id: i64,
    replaced_before: &str,
) -> Result<ExpiredSnapshots> {
    // Snapshots form one chain by seq: s is replaced when s.seq + 1 was committed.
    let newest: Option<(i64, i64)> = conn
        .query_row(
            "SELECT s.id, s.seq FROM snapshots s JOIN snapshots next \
             ON next.dataset_id = s.dataset_id AND next.seq = s.seq + 1 \
             WHERE s.dataset_id = ?1 AND next.created_at < ?2 ORDER BY s.seq DESC LIMIT 1",
            params![dataset_id, replaced_before],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    let Some((_, newest_seq)) = newest else {
        return Ok(ExpiredSnapshots::default());
    };
    let mut ids = conn.prepare_cached(
        "SELECT id FROM snapshots WHERE dataset_id = ?1 AND seq <= ?2 ORDER BY seq",
    )?;
    let snapshots = ids
        .query_map(params![dataset_id, newest_seq], |row| row.get(0))?
        .collect::<rusqlite::Result<Vec<i64>>>()?;
    // A file removed at seq r is live up to r - 1: no kept snapshot (seq > newest_seq)
    // names it when r <= newest_seq + 1.
    let mut files = conn.prepare_cached(
        "SELECT path, rows, bytes, stats FROM files WHERE dataset_id = ?1 \
         AND removed_seq IS NOT NULL AND removed_seq <= ?2 ORDER BY removed_seq, path",
    )?;
    let files = files
        .query_map(params![dataset_id, newest_seq + 1], |row| {
            Ok(DataFile {
                path: row.get(0)?,
                rows: row.get(1)?,
                bytes: row.get(2)?,
                stats: parse_json(row.get(3)?)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(ExpiredSnapshots { snapshots, files })
}
