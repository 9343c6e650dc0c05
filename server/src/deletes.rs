//! Deletes: `POST /api/v1/datasets/{name}/deletes {"where": "..."}` removes the rows matching
//! a predicate by rewriting only the files that hold them, as one `delete` snapshot.
//!
//! The query engine finds the files (pruned by their statistics, then counted) and the rows
//! each keeps; ingest writes the rewrites and commits them. The commit rebases over appends
//! that landed meanwhile (rows pushed after the delete read the dataset are not deleted);
//! if a compaction or another delete removed a file it read, it is planned again. The old
//! files stay readable by time travel until retention expires their snapshots: only then is
//! the erasure complete.

use std::time::Instant;

use cityhub_catalog::{
    Action, AuditEvent, CatalogError, ColumnType, DataFile, DatasetName, Operation, Outcome,
    Principal,
};
use cityhub_ingest::IngestError;
use cityhub_query::QueryError;
use serde::Serialize;
use serde_json::json;

use crate::state::AppState;

/// How often a delete that lost its files to another change is planned again.
const ATTEMPTS: u32 = 3;

/// What a delete did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DeleteReport {
    pub rows_deleted: u64,
    pub files_rewritten: usize,
    /// The `delete` snapshot; `None` when no row matched.
    pub snapshot_id: Option<i64>,
}

/// Why a delete failed.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Query(#[from] QueryError),
}

impl From<CatalogError> for DeleteError {
    fn from(err: CatalogError) -> Self {
        DeleteError::Ingest(err.into())
    }
}

/// Deletes the rows of `name` that `predicate` matches, for `by` (admins and the owner's
/// producers) or for the hub's own row retention (`None`); audited with the predicate
/// whatever the outcome.
pub async fn delete_rows(
    state: &AppState,
    by: Option<&Principal>,
    name: &DatasetName,
    predicate: &str,
) -> Result<DeleteReport, DeleteError> {
    let started = Instant::now();
    state
        .ingest
        .maintained_dataset(by, name, "deleting rows of")
        .await?;
    let mut attempt = 1;
    let result = loop {
        match delete_once(state, name, predicate).await {
            Err(DeleteError::Ingest(IngestError::Catalog(CatalogError::FilesGone { .. })))
                if attempt < ATTEMPTS =>
            {
                attempt += 1;
            }
            other => break other,
        }
    };
    let outcome = match &result {
        Ok(_) => Outcome::Ok,
        Err(DeleteError::Query(
            QueryError::Invalid { .. } | QueryError::Forbidden(_) | QueryError::Unsupported(_),
        )) => Outcome::Refused,
        Err(_) => Outcome::Failed,
    };
    let detail = match &result {
        Ok(report) => json!({"where": predicate, "rows_deleted": report.rows_deleted,
            "files_rewritten": report.files_rewritten, "snapshot_id": report.snapshot_id}),
        Err(err) => json!({"where": predicate, "error": err.to_string()}),
    };
    let event = match by {
        Some(principal) => AuditEvent::by(principal, Action::Delete, outcome),
        None => AuditEvent::by_hub(Action::Delete, outcome),
    };
    state
        .audit
        .record(event.dataset(name.to_string()).detail(detail));
    metrics::counter!("cityhub_deletes_total",
        "outcome" => if result.is_ok() { "ok" } else { "failed" })
    .increment(1);
    if let Ok(report) = &result {
        metrics::counter!("cityhub_rows_deleted_total").increment(report.rows_deleted);
        tracing::info!(dataset = %name, by = by.map_or("cityhub", |p| p.name.as_str()),
            rows = report.rows_deleted,
            files = report.files_rewritten, seconds = started.elapsed().as_secs_f64(),
            "Deleted rows from a dataset.");
    }
    result
}

/// Row retention: deletes, in every dataset that declares one, the rows whose aged column is
/// more than its `days` before `now`. Answers the rows deleted; one dataset's failure is
/// logged and does not stop the others.
pub async fn expire_rows(
    state: &AppState,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<u64, DeleteError> {
    let mut deleted = 0;
    for dataset in state.catalog.list_datasets().await? {
        let Some(retention) = &dataset.row_retention else {
            continue;
        };
        let cutoff = now - chrono::Duration::days(i64::from(retention.days));
        let aged = dataset.columns.iter().find(|c| c.name == retention.column);
        let literal = match aged.map(|c| c.column_type) {
            Some(ColumnType::Date) => format!("DATE '{}'", cutoff.format("%Y-%m-%d")),
            _ => format!("TIMESTAMP '{}'", cutoff.to_rfc3339()),
        };
        let predicate = format!("\"{}\" < {literal}", retention.column);
        match delete_rows(state, None, &dataset.name, &predicate).await {
            Ok(report) => deleted += report.rows_deleted,
            Err(err) => tracing::warn!(dataset = %dataset.name, error = %err,
                "Could not delete rows past their retention; the next round tries again."),
        }
    }
    Ok(deleted)
}

async fn delete_once(
    state: &AppState,
    name: &DatasetName,
    predicate: &str,
) -> Result<DeleteReport, DeleteError> {
    let dataset = state
        .catalog
        .dataset(name)
        .await?
        .ok_or_else(|| IngestError::DatasetNotFound(name.to_string()))?;
    let files = state.ingest.live_files(&dataset).await?;
    let matching = state
        .query
        .files_matching(&dataset, files.into(), predicate)
        .await?;
    if matching.is_empty() {
        return Ok(DeleteReport {
            rows_deleted: 0,
            files_rewritten: 0,
            snapshot_id: None,
        });
    }
    let mut written: Vec<DataFile> = Vec::new();
    let rewritten = async {
        for matched in &matching {
            let kept = state
                .query
                .rows_kept(&dataset, &matched.file, predicate)
                .await?;
            if !kept.is_empty() {
                let file = state
                    .ingest
                    .write_file_labelled(&dataset, kept, "delete")
                    .await?;
                written.push(file);
            }
        }
        let removed = matching.iter().map(|m| m.file.path.clone()).collect();
        Ok::<_, DeleteError>(
            state
                .ingest
                .commit_rewrite(&dataset, Operation::Delete, removed, written.clone())
                .await?,
        )
    }
    .await;
    match rewritten {
        Ok(snapshot) => Ok(DeleteReport {
            rows_deleted: matching.iter().map(|m| m.rows).sum(),
            files_rewritten: matching.len(),
            snapshot_id: Some(snapshot.id),
        }),
        Err(err) => {
            // Nothing was committed: the rewrites are orphans, remove them now.
            for file in &written {
                state.ingest.storage().delete(&file.path).await;
            }
            Err(err)
        }
    }
}
