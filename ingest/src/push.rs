//! A push: rows sent over HTTP into one dataset, committed as one snapshot.

use std::sync::Arc;

use bytes::Bytes;
use cityhub_catalog::access::may_push;
use cityhub_catalog::{
    Action, AuditEvent, CommitOutcome, Dataset, DatasetName, IdempotencyRecord, Outcome, Principal,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::Ingest;
use crate::IngestError;
use crate::decode::{Format, RowError, decode_body};

/// One push as the HTTP layer received it.
#[derive(Debug, Clone)]
pub struct PushRequest {
    pub format: Format,
    pub body: Bytes,
    /// Commit the good rows even if some are bad.
    pub partial: bool,
    pub idempotency_key: Option<String>,
}

/// The answer to a push (also the body of a 422).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PushOutcome {
    pub rows_accepted: u64,
    pub rows_rejected: u64,
    /// The snapshot that holds the rows; `null` when nothing was committed.
    pub snapshot_id: Option<i64>,
    pub rejected: Vec<RowError>,
    /// True when this answer repeats an earlier push with the same Idempotency-Key.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

/// Who may push to a dataset ([`cityhub_catalog::access::may_push`]), as an ingest error.
fn check_may_push(principal: &Principal, dataset: &Dataset) -> Result<(), IngestError> {
    may_push(principal, dataset).map_err(|refusal| IngestError::refused(dataset, refusal))
}

fn validate_idempotency_key(key: &str) -> Result<(), IngestError> {
    let ok = !key.is_empty() && key.len() <= 255 && key.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(IngestError::Invalid {
            field: "Idempotency-Key".into(),
            message: "must be 1-255 visible ASCII characters, e.g. a UUID".into(),
        })
    }
}

/// What identifies "the same request" for an idempotency key: format, mode and body.
fn request_hash(request: &PushRequest) -> String {
    let mut hasher = Sha256::new();
    hasher.update(format!("{:?}|{}|", request.format, request.partial).as_bytes());
    hasher.update(&request.body);
    hex::encode(hasher.finalize())
}

impl Ingest {
    /// Validates and commits a push. All-or-nothing unless `partial`: with any bad row the
    /// answer is `Rejected` and nothing is written. The rows are durable when this returns
    /// `Ok`. Recorded in the audit log: what was committed, or why nothing was.
    pub async fn push(
        &self,
        principal: &Principal,
        dataset_name: &str,
        request: PushRequest,
    ) -> Result<PushOutcome, IngestError> {
        let _busy = self.foreground_write();
        let result = self.push_unaudited(principal, dataset_name, request).await;
        let event = match &result {
            Ok(outcome) => AuditEvent::by(principal, Action::Push, Outcome::Ok).detail(json!({
                "rows_accepted": outcome.rows_accepted,
                "rows_rejected": outcome.rows_rejected,
                "snapshot_id": outcome.snapshot_id,
                "replayed": outcome.replayed,
            })),
            Err(err) => {
                let outcome = match err {
                    IngestError::Forbidden(_) | IngestError::DatasetNotFound(_) => Outcome::Refused,
                    _ => Outcome::Failed,
                };
                AuditEvent::by(principal, Action::Push, outcome)
                    .detail(json!({"error": err.to_string()}))
            }
        };
        self.audit.record(event.dataset(dataset_name));
        result
    }

    async fn push_unaudited(
        &self,
        principal: &Principal,
        dataset_name: &str,
        request: PushRequest,
    ) -> Result<PushOutcome, IngestError> {
        let name = DatasetName::parse(dataset_name)?;
        let dataset = self
            .catalog
            .dataset(&name)
            .await?
            .ok_or_else(|| IngestError::DatasetNotFound(name.to_string()))?;
        check_may_push(principal, &dataset)?;

        let idempotency = match &request.idempotency_key {
            Some(key) => {
                validate_idempotency_key(key)?;
                let hash = request_hash(&request);
                if let Some(done) = self.catalog.idempotency_record(dataset.id, key).await? {
                    return replay(done, &hash);
                }
                Some((key.clone(), hash))
            }
            None => None,
        };

        let columns: Arc<[_]> = dataset.columns.clone().into();
        let report_limit = self.config.max_rejected_reported as usize;
        let format = request.format;
        let body = request.body;
        let body_bytes = body.len() as u64;
        let decoded =
            tokio::task::spawn_blocking(move || decode_body(format, body, columns, report_limit))
                .await
                .map_err(|err| IngestError::Internal(format!("decoding task failed: {err}")))??;

        let rows_accepted = decoded.batch.num_rows() as u64;
        let mut outcome = PushOutcome {
            rows_accepted,
            rows_rejected: decoded.rows_rejected,
            snapshot_id: None,
            rejected: decoded.rejected,
            replayed: false,
        };
        if outcome.rows_rejected > 0 && !request.partial {
            outcome.rows_accepted = 0;
            metrics::counter!("cityhub_push_rows_rejected_total").increment(outcome.rows_rejected);
            return Err(IngestError::Rejected(Box::new(outcome)));
        }
        if rows_accepted == 0 {
            metrics::counter!("cityhub_push_rows_rejected_total").increment(outcome.rows_rejected);
            return Err(IngestError::Rejected(Box::new(outcome)));
        }

        let file = self.write_file(&dataset, vec![decoded.batch]).await?;
        let record = idempotency.map(|(key, request_hash)| IdempotencyRecord {
            key,
            request_hash,
            response: serde_json::to_string(&outcome).unwrap_or_default(),
            snapshot_id: None,
        });
        let request_hash = record.as_ref().map(|r| r.request_hash.clone());
        match self.commit_append(&dataset, vec![file], record).await? {
            CommitOutcome::Committed(snapshot) => {
                outcome.snapshot_id = Some(snapshot.id);
                metrics::counter!("cityhub_push_rows_total").increment(rows_accepted);
                metrics::counter!("cityhub_push_bytes_total").increment(body_bytes);
                if outcome.rows_rejected > 0 {
                    metrics::counter!("cityhub_push_rows_rejected_total")
                        .increment(outcome.rows_rejected);
                }
                tracing::debug!(
                    dataset = %dataset.name,
                    snapshot_id = snapshot.id,
                    rows = rows_accepted,
                    rejected = outcome.rows_rejected,
                    "Committed a push."
                );
                Ok(outcome)
            }
            // A concurrent retry with the same key won the race: answer as it did.
            CommitOutcome::Replayed(done) => replay(done, &request_hash.unwrap_or_default()),
            CommitOutcome::Progressed => Err(IngestError::Internal(
                "a push commit with a file was answered without a snapshot".into(),
            )),
        }
    }
}

fn replay(done: IdempotencyRecord, hash: &str) -> Result<PushOutcome, IngestError> {
    if done.request_hash != hash {
        return Err(IngestError::IdempotencyMismatch(done.key));
    }
    let mut outcome: PushOutcome = serde_json::from_str(&done.response)
        .map_err(|err| IngestError::Internal(format!("stored push answer unreadable: {err}")))?;
    outcome.snapshot_id = done.snapshot_id;
    outcome.replayed = true;
    Ok(outcome)
}
