//! Sharing between departments: share requests, the grants an approval creates, what a
//! principal may read of a dataset, and the audit log that records it all.
//!
//! The rules (DESIGN §5, `shared/domain/sharing-and-masking.md`):
//! - the owner department and admins read everything, unmasked;
//! - `unconditional` datasets: every department reads every column, sensitive ones masked;
//! - `conditional` datasets: only departments holding an active grant, limited to the
//!   grant's columns; sensitive columns masked unless the grant names them unmasked;
//! - `none` datasets: the owner only; everyone else cannot tell them from missing ones.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Duration, Utc, Weekday};
use serde::{Deserialize, Serialize};

use crate::CatalogError;
use crate::model::{Dataset, Principal, Sharing};

/// Where a share request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShareStatus {
    Pending,
    Approved,
    Rejected,
}

impl ShareStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ShareStatus::Pending => "pending",
            ShareStatus::Approved => "approved",
            ShareStatus::Rejected => "rejected",
        }
    }
}

impl std::str::FromStr for ShareStatus {
    type Err = CatalogError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "pending" => Ok(ShareStatus::Pending),
            "approved" => Ok(ShareStatus::Approved),
            "rejected" => Ok(ShareStatus::Rejected),
            other => Err(CatalogError::invalid(
                "status",
                format!("{other:?} is not a request status: use pending, approved or rejected"),
            )),
        }
    }
}

/// A department's application to read a dataset.
#[derive(Debug, Clone)]
pub struct NewShareRequest {
    pub dataset_id: i64,
    pub department: String,
    pub requested_by: i64,
    pub purpose: String,
    /// The columns wanted; `None` for all.
    pub columns: Option<Vec<String>>,
    /// Sensitive columns wanted unmasked.
    pub unmasked: Vec<String>,
    pub until: Option<DateTime<Utc>>,
    pub answer_due_at: DateTime<Utc>,
}

/// A share request as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShareRequest {
    pub id: i64,
    pub dataset: String,
    /// The owner of the dataset, who decides.
    pub owner: String,
    /// The department applying.
    pub department: String,
    pub requested_by: String,
    pub purpose: String,
    pub columns: Option<Vec<String>>,
    pub unmasked: Vec<String>,
    pub until: Option<DateTime<Utc>>,
    pub status: ShareStatus,
    pub created_at: DateTime<Utc>,
    pub answer_due_at: DateTime<Utc>,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    pub grant_id: Option<i64>,
}

impl ShareRequest {
    /// A pending request past its answer deadline.
    pub fn overdue(&self, now: DateTime<Utc>) -> bool {
        self.status == ShareStatus::Pending && now > self.answer_due_at
    }
}

/// The owner's answer to a share request.
#[derive(Debug, Clone)]
pub struct Decision {
    pub request_id: i64,
    pub decided_by: i64,
    pub approve: bool,
    pub reason: Option<String>,
    /// Approvals may narrow the columns (never widen them).
    pub columns: Option<Vec<String>>,
    pub unmasked: Option<Vec<String>>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A department's right to read a dataset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Grant {
    pub id: i64,
    pub dataset: String,
    #[serde(skip)]
    pub dataset_id: i64,
    pub department: String,
    pub request_id: Option<i64>,
    pub columns: Option<Vec<String>>,
    pub unmasked: Vec<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoke_reason: Option<String>,
}

impl Grant {
    /// Neither revoked nor expired at `now`.
    pub fn active(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|expires| expires > now)
    }
}

/// What one principal may do with one dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Owner or admin: every column, unmasked.
    Full,
    /// A reader: `columns` (all when `None`); sensitive columns masked except `unmasked`.
    /// `trusted` readers hold a grant and get the milder masks of the trusted tier.
    Read {
        columns: Option<BTreeSet<String>>,
        unmasked: BTreeSet<String>,
        trusted: bool,
    },
    /// Visible in the shared catalogue, readable after an approved share request.
    Apply,
    /// Not even its existence may be revealed.
    Hidden,
}

impl Access {
    pub fn readable(&self) -> bool {
        matches!(self, Access::Full | Access::Read { .. })
    }

    /// How the catalogue describes the caller's access.
    pub fn label(&self) -> &'static str {
        match self {
            Access::Full => "owner",
            Access::Read { trusted: true, .. } => "granted",
            Access::Read { .. } => "read",
            Access::Apply => "apply",
            Access::Hidden => "none",
        }
    }
}

/// What `principal` may do with `dataset`, given the active and inactive grants held by the
/// principal's department (grants of other datasets are ignored).
pub fn access(
    principal: &Principal,
    dataset: &Dataset,
    grants: &[Grant],
    now: DateTime<Utc>,
) -> Access {
    if principal.acts_for(&dataset.owner) {
        return Access::Full;
    }
    if !principal.may_see(dataset) {
        return Access::Hidden;
    }
    // Several active grants of one dataset add up: the union of their columns.
    let mut columns: Option<BTreeSet<String>> = Some(BTreeSet::new());
    let mut unmasked = BTreeSet::new();
    let mut granted = false;
    for grant in grants.iter().filter(|g| {
        g.dataset_id == dataset.id && g.department == principal.department && g.active(now)
    }) {
        granted = true;
        match (&mut columns, &grant.columns) {
            (Some(set), Some(more)) => set.extend(more.iter().cloned()),
            (_, None) => columns = None,
            (None, Some(_)) => {}
        }
        unmasked.extend(grant.unmasked.iter().cloned());
    }
    match (granted, dataset.sharing) {
        (true, _) => Access::Read {
            // An unconditional dataset is readable in full; a grant on it only unmasks.
            columns: if dataset.sharing == Sharing::Unconditional {
                None
            } else {
                columns
            },
            unmasked,
            trusted: true,
        },
        (false, Sharing::Unconditional) => Access::Read {
            columns: None,
            unmasked,
            trusted: false,
        },
        (false, _) => Access::Apply,
    }
}

/// The deadline `working_days` working days (Monday to Friday) after `from`. Public holidays
/// are not known to the hub; a city that needs them can lengthen the setting.
pub fn working_days_after(from: DateTime<Utc>, working_days: u32) -> DateTime<Utc> {
    let mut at = from;
    let mut left = working_days;
    while left > 0 {
        at += Duration::days(1);
        if !matches!(at.weekday(), Weekday::Sat | Weekday::Sun) {
            left -= 1;
        }
    }
    at
}

/// One action to record in the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub at: DateTime<Utc>,
    pub principal_id: Option<i64>,
    pub principal: Option<String>,
    pub department: Option<String>,
    /// `query`, `push`, `share_request`, `share_decision`, `grant_revoke`, `token_create`,
    /// `token_revoke`, `dataset_create`, `department_create`, `audit_purge`, `audit_read`.
    pub action: String,
    /// `ok`, `refused` or `failed`.
    pub outcome: String,
    /// The dataset acted on, when there is one (queries: the first one read).
    pub dataset: Option<String>,
    /// Everything else, as a JSON object.
    pub detail: serde_json::Value,
}

impl AuditEvent {
    /// An event by `principal` happening now.
    pub fn by(principal: &Principal, action: &str, outcome: &str) -> Self {
        Self {
            at: Utc::now(),
            principal_id: Some(principal.id),
            principal: Some(principal.name.clone()),
            department: Some(principal.department.clone()),
            action: action.to_string(),
            outcome: outcome.to_string(),
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
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    #[serde(flatten)]
    pub event: AuditEvent,
}

/// Which audit entries to read.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub since: Option<DateTime<Utc>>,
    pub principal: Option<String>,
    pub dataset: Option<String>,
    pub action: Option<String>,
    /// Entries after this id (for paging forward).
    pub after_id: Option<i64>,
    pub limit: usize,
}

/// Checks what a share request or an approval names against the dataset: known columns,
/// and only sensitive columns asked for unmasked. Problems name the field.
pub fn validate_columns_asked(
    dataset: &Dataset,
    columns: Option<&[String]>,
    unmasked: &[String],
) -> Result<(), CatalogError> {
    let known = |name: &String| dataset.columns.iter().find(|c| &c.name == name);
    for (index, name) in columns.unwrap_or_default().iter().enumerate() {
        if known(name).is_none() {
            return Err(CatalogError::invalid(
                format!("columns[{index}]"),
                format!("{name:?} is not a column of {}", dataset.name),
            ));
        }
    }
    if columns.is_some_and(|c| c.is_empty()) {
        return Err(CatalogError::invalid(
            "columns",
            "name at least one column, or leave columns out for all of them",
        ));
    }
    for (index, name) in unmasked.iter().enumerate() {
        let Some(column) = known(name) else {
            return Err(CatalogError::invalid(
                format!("unmasked[{index}]"),
                format!("{name:?} is not a column of {}", dataset.name),
            ));
        };
        if column.sensitivity.is_none() {
            return Err(CatalogError::invalid(
                format!("unmasked[{index}]"),
                format!("{name:?} carries no sensitivity tag, so it is never masked"),
            ));
        }
        if columns.is_some_and(|c| !c.contains(name)) {
            return Err(CatalogError::invalid(
                format!("unmasked[{index}]"),
                format!("{name:?} is not among the columns asked for"),
            ));
        }
    }
    Ok(())
}
