//! The audit log: what happened ([`AuditEvent`], with a closed set of [`Action`]s and
//! [`Outcome`]s), and its writer.
//!
//! The writer: callers hand over events without waiting for the database, one task
//! writes them in batches (one transaction per batch), and [`AuditLog::flush`] waits until
//! everything handed over so far is stored: readers of the log flush first, and so does a
//! shutting-down server, so no handed-over event is lost by a clean stop.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::Catalog;
use crate::error::CatalogError;
use crate::model::Principal;

/// What was done. Stored and shown as its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A SQL query (HTTP, CLI or an endpoint computation).
    Query,
    /// Rows pushed over HTTP.
    Push,
    /// A file bulk-loaded with `cityhub import`.
    Import,
    /// A batch of Kafka messages committed to a dataset.
    KafkaFlush,
    DatasetCreate,
    /// A dataset's columns or sort key changed (a new schema version).
    DatasetChange,
    DepartmentCreate,
    ShareRequest,
    ShareDecision,
    GrantRevoke,
    TokenCreate,
    TokenRevoke,
    AuditPurge,
    CameraRegister,
    CameraCurate,
    CameraImport,
    EndpointSaved,
    /// A dashboard endpoint's result holding personal data was delivered.
    EndpointRead,
    /// Small files of a dataset merged (on request or by the hub's own policy).
    Compact,
    /// Expired snapshots and files no snapshot names deleted.
    Gc,
    /// Rows matching a predicate deleted from a dataset (the predicate is in the detail).
    Delete,
    /// GA/T 1400 records received from a platform (`/VIID/...`).
    ViidReceive,
    /// A GA/T 1400 account created, registered or unregistered.
    ViidAccount,
    /// An image of a GA/T 1400 record served (`GET /api/v1/images/{key}`), or refused.
    ImageRead,
}

/// Every action, for listings and error messages.
pub const ACTIONS: &[Action] = &[
    Action::Query,
    Action::Push,
    Action::Import,
    Action::KafkaFlush,
    Action::DatasetCreate,
    Action::DatasetChange,
    Action::DepartmentCreate,
    Action::ShareRequest,
    Action::ShareDecision,
    Action::GrantRevoke,
    Action::TokenCreate,
    Action::TokenRevoke,
    Action::AuditPurge,
    Action::CameraRegister,
    Action::CameraCurate,
    Action::CameraImport,
    Action::EndpointSaved,
    Action::EndpointRead,
    Action::Compact,
    Action::Gc,
    Action::Delete,
    Action::ViidReceive,
    Action::ViidAccount,
    Action::ImageRead,
];

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Query => "query",
            Action::Push => "push",
            Action::Import => "import",
            Action::KafkaFlush => "kafka_flush",
            Action::DatasetCreate => "dataset_create",
            Action::DatasetChange => "dataset_change",
            Action::DepartmentCreate => "department_create",
            Action::ShareRequest => "share_request",
            Action::ShareDecision => "share_decision",
            Action::GrantRevoke => "grant_revoke",
            Action::TokenCreate => "token_create",
            Action::TokenRevoke => "token_revoke",
            Action::AuditPurge => "audit_purge",
            Action::CameraRegister => "camera_register",
            Action::CameraCurate => "camera_curate",
            Action::CameraImport => "camera_import",
            Action::EndpointSaved => "endpoint_saved",
            Action::EndpointRead => "endpoint_read",
            Action::Compact => "compact",
            Action::Gc => "gc",
            Action::Delete => "delete",
            Action::ViidReceive => "viid_receive",
            Action::ViidAccount => "viid_account",
            Action::ImageRead => "image_read",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Action {
    type Err = CatalogError;

    fn from_str(text: &str) -> Result<Self, CatalogError> {
        ACTIONS
            .iter()
            .copied()
            .find(|action| action.as_str() == text)
            .ok_or_else(|| {
                let known: Vec<&str> = ACTIONS.iter().map(|a| a.as_str()).collect();
                CatalogError::invalid(
                    "action",
                    format!(
                        "{text:?} is not an audit action; one of {}",
                        known.join(", ")
                    ),
                )
            })
    }
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    /// Not allowed (no right, hidden dataset).
    Refused,
    /// Allowed but it did not work (bad input, a failure).
    Failed,
    /// Stopped before it finished (a query whose client went away).
    Cancelled,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Outcome {
    type Err = CatalogError;

    fn from_str(text: &str) -> Result<Self, CatalogError> {
        match text {
            "ok" => Ok(Outcome::Ok),
            "refused" => Ok(Outcome::Refused),
            "failed" => Ok(Outcome::Failed),
            "cancelled" => Ok(Outcome::Cancelled),
            other => Err(CatalogError::invalid(
                "outcome",
                format!("{other:?} is not ok, refused, failed or cancelled"),
            )),
        }
    }
}

/// One action to record in the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEvent {
    pub at: DateTime<Utc>,
    pub principal_id: Option<i64>,
    pub principal: Option<String>,
    pub department: Option<String>,
    pub action: Action,
    pub outcome: Outcome,
    /// The dataset acted on, when there is one (queries: the first one read).
    pub dataset: Option<String>,
    /// Everything else, as a JSON object.
    pub detail: serde_json::Value,
}

impl AuditEvent {
    /// An event by `principal` happening now.
    pub fn by(principal: &Principal, action: Action, outcome: Outcome) -> Self {
        Self {
            at: Utc::now(),
            principal_id: Some(principal.id),
            principal: Some(principal.name.clone()),
            department: Some(principal.department.clone()),
            action,
            outcome,
            dataset: None,
            detail: serde_json::Value::Object(Default::default()),
        }
    }

    /// An event of the hub itself (a scheduled job), not of a principal.
    pub fn by_hub(action: Action, outcome: Outcome) -> Self {
        Self {
            at: Utc::now(),
            principal_id: None,
            principal: Some("cityhub".into()),
            department: None,
            action,
            outcome,
            dataset: None,
            detail: serde_json::Value::Object(Default::default()),
        }
    }

    pub fn dataset(mut self, dataset: impl Into<String>) -> Self {
        self.dataset = Some(dataset.into());
        self
    }

    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }
}

/// A stored audit entry.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    #[serde(flatten)]
    pub event: AuditEvent,
}

/// Which audit entries to read.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub since: Option<DateTime<Utc>>,
    /// Entries before this time (exclusive).
    pub until: Option<DateTime<Utc>>,
    pub principal: Option<String>,
    pub dataset: Option<String>,
    pub action: Option<String>,
    /// Entries after this id (for paging forward).
    pub after_id: Option<i64>,
    pub limit: usize,
}

/// At most this many events go into one transaction.
const BATCH: usize = 1024;

enum Message {
    Event(Box<AuditEvent>),
    Flush(oneshot::Sender<()>),
}

/// A handle on the audit writer; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    sender: mpsc::UnboundedSender<Message>,
}

impl AuditLog {
    /// Starts the writer task on the current tokio runtime.
    pub fn start(catalog: Catalog) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(catalog, receiver));
        Self { sender }
    }

    /// Hands an event to the writer.
    pub fn record(&self, event: AuditEvent) {
        metrics::counter!("cityhub_audit_events_total", "action" => event.action.as_str())
            .increment(1);
        if self.sender.send(Message::Event(Box::new(event))).is_err() {
            tracing::error!("The audit writer has stopped; an audit event was not recorded.");
        }
    }

    /// Waits until every event recorded before this call is stored.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.sender.send(Message::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

async fn write_loop(catalog: Catalog, mut receiver: mpsc::UnboundedReceiver<Message>) {
    let mut events = Vec::new();
    let mut flushes = Vec::new();
    while let Some(first) = receiver.recv().await {
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Event(event) => events.push(*event),
                Message::Flush(done) => flushes.push(done),
            }
            if events.len() < BATCH {
                next = receiver.try_recv().ok();
            }
        }
        store(&catalog, &mut events).await;
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Stores a batch, retrying until the catalog takes it: an audit event is never dropped
/// because the database was briefly locked or unavailable.
async fn store(catalog: &Catalog, events: &mut Vec<AuditEvent>) {
    if events.is_empty() {
        return;
    }
    let mut delay = Duration::from_millis(50);
    loop {
        match catalog.append_audit(events.clone()).await {
            Ok(()) => {
                events.clear();
                return;
            }
            Err(err) => {
                tracing::error!(
                    error = %err,
                    pending = events.len(),
                    "Could not write audit events; retrying."
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
