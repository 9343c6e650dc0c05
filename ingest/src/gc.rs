//! Retention and garbage collection: replaced snapshots expire after their retention, the
//! files only they named are deleted, and so are orphans (files that no snapshot names,
//! left by a crash between a file's write and its commit) once they are older than the
//! grace.
//!
//! Order makes it crash-safe: the catalog forgets expired snapshots and their files in one
//! transaction first, the objects are deleted after. A crash in between leaves objects that
//! the catalog no longer names: orphans, which the next run deletes. The other way round a
//! crash could leave the catalog naming a deleted file.
//!
//! Nothing a reader may still read is deleted: a query reads the snapshot that was current
//! when it started, and a snapshot expires only `snapshot_days` (at least one) after a
//! newer one replaced it, far longer than any query may run (`query.timeout_secs`). A file
//! written for a commit that has not happened yet is younger than the orphan grace.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::time::Instant;

use chrono::{DateTime, Utc};
use cityhub_catalog::{Action, AuditEvent, Outcome, Principal};
use cityhub_config::Config;
use serde::Serialize;
use serde_json::json;

use crate::{Ingest, IngestError};

/// Where the hub's data files live in the object store: `datasets/{dataset_id}/...`.
const DATA_PREFIX: &str = "datasets/";

/// `[retention]`, as garbage collection uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionPolicy {
    pub snapshot_days: u64,
    pub orphan_grace_secs: u64,
}

impl RetentionPolicy {
    pub fn from_config(config: &Config) -> Self {
        Self {
            snapshot_days: config.retention.snapshot_days,
            orphan_grace_secs: config.retention.orphan_grace_secs,
        }
    }
}

/// Why a file was (or would be) deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Only expired snapshots named it.
    Expired,
    /// No snapshot ever named it (or the catalog forgot it and its deletion failed).
    Orphan,
}

/// One file garbage collection deleted, or would delete in a dry run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removed {
    /// `department.table`, when the dataset still exists.
    pub dataset: Option<String>,
    pub key: String,
    pub bytes: u64,
    pub reason: Reason,
}

/// What one garbage collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub datasets: usize,
    pub snapshots_expired: usize,
    pub files_expired: usize,
    pub orphans: usize,
    pub bytes_reclaimed: u64,
    /// Deletions the object store refused; the files stay as orphans for the next run.
    pub failures: usize,
    pub removed: Vec<Removed>,
}

impl Ingest {
    /// Collects garbage over every dataset as of `now`, on behalf of `by` (an operator) or
    /// of the hub's own schedule. A dry run lists what it would delete and changes nothing.
    pub async fn collect_garbage(
        &self,
        by: Option<&Principal>,
        policy: &RetentionPolicy,
        now: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<GcReport, IngestError> {
        let started = Instant::now();
        let result = self.collect(policy, now, dry_run).await;
        if !dry_run {
            let outcome = if result.is_ok() {
                Outcome::Ok
            } else {
                Outcome::Failed
            };
            let event = match by {
                Some(principal) => AuditEvent::by(principal, Action::Gc, outcome),
                None => AuditEvent::by_hub(Action::Gc, outcome),
            };
            let detail = match &result {
                Ok(report) => json!({
                    "snapshots_expired": report.snapshots_expired,
                    "files_expired": report.files_expired,
                    "orphans": report.orphans,
                    "bytes_reclaimed": report.bytes_reclaimed,
                    "failures": report.failures,
                }),
                Err(err) => json!({"error": err.to_string()}),
            };
            self.audit.record(event.detail(detail));
            metrics::counter!("cityhub_gc_runs_total",
                "outcome" => if result.is_ok() { "ok" } else { "failed" })
            .increment(1);
            metrics::histogram!("cityhub_gc_seconds").record(started.elapsed().as_secs_f64());
        }
        if let Ok(report) = &result
            && !dry_run
        {
            metrics::counter!("cityhub_gc_snapshots_expired_total")
                .increment(report.snapshots_expired as u64);
            metrics::counter!("cityhub_gc_files_deleted_total", "reason" => "expired")
                .increment(report.files_expired as u64);
            metrics::counter!("cityhub_gc_files_deleted_total", "reason" => "orphan")
                .increment(report.orphans as u64);
            metrics::counter!("cityhub_gc_bytes_reclaimed_total").increment(report.bytes_reclaimed);
            if report.snapshots_expired + report.files_expired + report.orphans > 0 {
                tracing::info!(
                    snapshots = report.snapshots_expired,
                    expired_files = report.files_expired,
                    orphans = report.orphans,
                    bytes = report.bytes_reclaimed,
                    failures = report.failures,
                    seconds = started.elapsed().as_secs_f64(),
                    "Collected garbage: expired snapshots and files no snapshot names."
                );
            }
        }
        result
    }

    async fn collect(
        &self,
        policy: &RetentionPolicy,
        now: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<GcReport, IngestError> {
        let mut report = GcReport {
            dry_run,
            ..GcReport::default()
        };
        let datasets = self.catalog.list_datasets().await?;
        report.datasets = datasets.len();
        let names: HashMap<i64, String> = datasets
            .iter()
            .map(|d| (d.id, d.name.to_string()))
            .collect();
        let mut pending = Vec::new();
        for dataset in &datasets {
            let days = dataset
                .snapshot_retention_days
                .map(u64::from)
                .unwrap_or(policy.snapshot_days);
            let replaced_before = now - chrono::Duration::days(days as i64);
            let expired = self
                .catalog
                .expire_snapshots(dataset.id, replaced_before, dry_run, now)
                .await?;
            report.snapshots_expired += expired.snapshots.len();
            for file in expired.files {
                pending.push(Removed {
                    dataset: Some(dataset.name.to_string()),
                    key: file.path,
                    bytes: file.bytes.max(0) as u64,
                    reason: Reason::Expired,
                });
            }
        }
        // Orphans: objects under a dataset's folder that its catalog entry does not name
        // (after the step above, so a file just forgotten is not one twice).
        let expired_keys: HashSet<String> = pending.iter().map(|r| r.key.clone()).collect();
        let grace = chrono::Duration::seconds(policy.orphan_grace_secs as i64);
        let mut known: HashMap<i64, HashSet<String>> = HashMap::new();
        for object in self.storage.list(DATA_PREFIX).await? {
            if expired_keys.contains(&object.key) || now - object.modified < grace {
                continue;
            }
            let dataset_id = dataset_of(&object.key);
            if let Some(id) = dataset_id
                && names.contains_key(&id)
            {
                let paths = match known.entry(id) {
                    Entry::Occupied(entry) => entry.into_mut(),
                    Entry::Vacant(entry) => {
                        let paths = self.catalog.file_paths(id).await?;
                        entry.insert(paths.into_iter().collect())
                    }
                };
                if paths.contains(&object.key) {
                    continue;
                }
            }
            pending.push(Removed {
                dataset: dataset_id.and_then(|id| names.get(&id).cloned()),
                key: object.key,
                bytes: object.bytes,
                reason: Reason::Orphan,
            });
        }
        for removed in pending {
            if !dry_run && let Err(err) = self.storage.remove(&removed.key).await {
                tracing::warn!(key = %removed.key, error = %err,
                    "Could not delete a garbage file; the next collection tries again.");
                report.failures += 1;
                continue;
            }
            match removed.reason {
                Reason::Expired => report.files_expired += 1,
                Reason::Orphan => report.orphans += 1,
            }
            report.bytes_reclaimed += removed.bytes;
            report.removed.push(removed);
        }
        Ok(report)
    }
}

/// The dataset id in a key `datasets/{id}/...`.
fn dataset_of(key: &str) -> Option<i64> {
    key.strip_prefix(DATA_PREFIX)?
        .split('/')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_dataset() {
        assert_eq!(
            dataset_of("datasets/12/2026-11-27/00000003-abc.parquet"),
            Some(12)
        );
        assert_eq!(dataset_of("datasets/x/file.parquet"), None);
        assert_eq!(dataset_of("elsewhere/12/file.parquet"), None);
    }
}
