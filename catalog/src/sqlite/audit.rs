//! The audit log in SQLite: appended in batches, read in pages, purged past retention.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use super::*;
use crate::audit::{AuditEntry, AuditEvent, AuditFilter};
use crate::store::AuditStore;

fn insert_audit(conn: &Connection, event: &AuditEvent) -> Result<()> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO audit_log (at, principal_id, principal, department, action, outcome, \
         dataset, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    insert.execute(params![
        time_text(event.at),
        event.principal_id,
        event.principal,
        event.department,
        event.action.as_str(),
        event.outcome.as_str(),
        event.dataset,
        serde_json::to_string(&event.detail)?,
    ])?;
    Ok(())
}

pub fn append_audit(conn: &mut Connection, events: &[AuditEvent]) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for event in events {
        insert_audit(&tx, event)?;
    }
    tx.commit()?;
    Ok(())
}

pub fn audit_entries(conn: &Connection, filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, at, principal_id, principal, department, action, outcome, dataset, detail \
         FROM audit_log WHERE (?1 IS NULL OR at >= ?1) AND (?2 IS NULL OR principal = ?2) \
         AND (?3 IS NULL OR dataset = ?3 OR EXISTS (SELECT 1 FROM \
         json_each(audit_log.detail, '$.datasets') AS read WHERE read.value = ?3)) AND (?4 IS NULL OR action = ?4) \
         AND (?5 IS NULL OR id > ?5) AND (?7 IS NULL OR at < ?7) ORDER BY id LIMIT ?6",
    )?;
    let rows = stmt.query_map(
        params![
            filter.since.map(time_text),
            filter.principal,
            filter.dataset,
            filter.action,
            filter.after_id,
            filter.limit as i64,
            filter.until.map(time_text)
        ],
        |row| {
            Ok(AuditEntry {
                id: row.get(0)?,
                event: AuditEvent {
                    at: parse_time(row.get(1)?)?,
                    principal_id: row.get(2)?,
                    principal: row.get(3)?,
                    department: row.get(4)?,
                    action: parse_text(row.get(5)?)?,
                    outcome: parse_text(row.get(6)?)?,
                    dataset: row.get(7)?,
                    detail: parse_json(row.get(8)?)?,
                },
            })
        },
    )?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub fn purge_audit(conn: &mut Connection, cutoff: DateTime<Utc>, purge: AuditEvent) -> Result<u64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: String = tx.query_row(
        "SELECT cutoff FROM audit_retention WHERE only_row = 1",
        [],
        |row| row.get(0),
    )?;
    let cutoff_text = time_text(cutoff);
    if cutoff_text > current {
        tx.execute(
            "UPDATE audit_retention SET cutoff = ?1 WHERE only_row = 1",
            [&cutoff_text],
        )?;
    }
    let deleted = tx.execute("DELETE FROM audit_log WHERE at < ?1", [&cutoff_text])? as u64;
    let mut purge = purge;
    if let serde_json::Value::Object(detail) = &mut purge.detail {
        detail.insert("deleted".into(), deleted.into());
        detail.insert("cutoff".into(), cutoff_text.clone().into());
    }
    insert_audit(&tx, &purge)?;
    tx.commit()?;
    Ok(deleted)
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit(&self, events: Vec<AuditEvent>) -> Result<()> {
        self.write(move |conn| append_audit(conn, &events)).await
    }

    async fn audit_entries(&self, filter: AuditFilter) -> Result<Vec<AuditEntry>> {
        self.read(move |conn| audit_entries(conn, &filter)).await
    }

    async fn purge_audit(&self, cutoff: DateTime<Utc>, purge: AuditEvent) -> Result<u64> {
        self.write(move |conn| purge_audit(conn, cutoff, purge))
            .await
    }
}
