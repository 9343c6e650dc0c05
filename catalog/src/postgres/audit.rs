//! The audit log in PostgreSQL: appended in batches, read in pages, purged past retention.
//! The append-only rules are the migration's triggers.

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};

use super::*;
use crate::audit::{AuditEntry, AuditEvent, AuditFilter};
use crate::store::AuditStore;

/// Appends events in one statement, however many (the audit writer hands over batches).
async fn insert_audit(client: &impl Cached, events: &[AuditEvent]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let at: Vec<_> = events.iter().map(|e| e.at).collect();
    let principal_id: Vec<Option<i64>> = events.iter().map(|e| e.principal_id).collect();
    let principal: Vec<Option<&str>> = events.iter().map(|e| e.principal.as_deref()).collect();
    let department: Vec<Option<&str>> = events.iter().map(|e| e.department.as_deref()).collect();
    let action: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    let outcome: Vec<&str> = events.iter().map(|e| e.outcome.as_str()).collect();
    let dataset: Vec<Option<&str>> = events.iter().map(|e| e.dataset.as_deref()).collect();
    let detail = events
        .iter()
        .map(|e| serde_json::to_string(&e.detail))
        .collect::<serde_json::Result<Vec<_>>>()?;
    // `WITH ORDINALITY` keeps the batch's order in the ids.
    client
        .exec(
            "INSERT INTO audit_log (at, principal_id, principal, department, action, outcome, \
             dataset, detail) \
             SELECT at, principal_id, principal, department, action, outcome, dataset, detail \
             FROM unnest($1::timestamptz[], $2::bigint[], $3::text[], $4::text[], $5::text[], \
               $6::text[], $7::text[], $8::text[]) WITH ORDINALITY \
               AS e(at, principal_id, principal, department, action, outcome, dataset, detail, n) \
             ORDER BY n",
            &[
                &at,
                &principal_id,
                &principal,
                &department,
                &action,
                &outcome,
                &dataset,
                &detail,
            ],
        )
        .await?;
    Ok(())
}

#[async_trait]
impl AuditStore for PostgresStore {
    async fn append_audit(&self, events: Vec<AuditEvent>) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        insert_audit(&tx, &events).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn audit_entries(&self, filter: AuditFilter) -> Result<Vec<AuditEntry>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, at, principal_id, principal, department, action, outcome, dataset, \
                 detail FROM audit_log WHERE ($1::timestamptz IS NULL OR at >= $1) \
                 AND ($2::text IS NULL OR principal = $2) \
                 AND ($3::text IS NULL OR dataset = $3 \
                      OR coalesce(detail::jsonb -> 'datasets' ? $3, false)) \
                 AND ($4::text IS NULL OR action = $4) AND ($5::bigint IS NULL OR id > $5) \
                 AND ($7::timestamptz IS NULL OR at < $7) ORDER BY id LIMIT $6",
                &[
                    &filter.since,
                    &filter.principal,
                    &filter.dataset,
                    &filter.action,
                    &filter.after_id,
                    &(filter.limit as i64),
                    &filter.until,
                ],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(AuditEntry {
                    id: row.try_get(0)?,
                    event: AuditEvent {
                        at: row.try_get(1)?,
                        principal_id: row.try_get(2)?,
                        principal: row.try_get(3)?,
                        department: row.try_get(4)?,
                        action: parse(row, 5)?,
                        outcome: parse(row, 6)?,
                        dataset: row.try_get(7)?,
                        detail: json(row, 8)?,
                    },
                })
            })
            .collect()
    }

    async fn purge_audit(&self, cutoff: DateTime<Utc>, purge: AuditEvent) -> Result<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The cutoff only moves forward (a trigger refuses anything else); an older one
        // deletes nothing that the current one has not already allowed.
        tx.execute(
            "UPDATE audit_retention SET cutoff = $1 WHERE only_row = 1 AND cutoff < $1",
            &[&cutoff],
        )
        .await?;
        let deleted = tx
            .execute("DELETE FROM audit_log WHERE at < $1", &[&cutoff])
            .await?;
        let mut purge = purge;
        if let serde_json::Value::Object(detail) = &mut purge.detail {
            detail.insert("deleted".into(), deleted.into());
            detail.insert(
                "cutoff".into(),
                cutoff.to_rfc3339_opts(SecondsFormat::Micros, true).into(),
            );
        }
        insert_audit(&tx, std::slice::from_ref(&purge)).await?;
        tx.commit().await?;
        Ok(deleted)
    }
}
