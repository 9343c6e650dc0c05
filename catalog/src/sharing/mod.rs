//! Sharing between departments: share requests, the grants an approval creates, what a
//! principal may read of a dataset, and the audit log that records it all.
//!
//! The rules (DESIGN §5, `shared/domain/sharing-and-masking.md`):
//! - the owner department and admins read everything, unmasked;
//! - `unconditional` datasets: every department reads every column, sensitive ones masked;
//! - `conditional` datasets: only departments holding an active grant, limited to the
//!   grant's columns; sensitive columns masked unless the grant names them unmasked;
//! - `none` datasets: the owner only; everyone else cannot tell them from missing ones;
//! - a grant may be limited to rows (regions, a start time), and a region-scoped principal
//!   sees only the rows inside its region, whatever it holds.

pub mod service;

pub use service::{Application, NewToken, ShareAnswer, SharingService};

use chrono::{DateTime, Datelike, Duration, Utc, Weekday};
use serde::{Deserialize, Serialize};

use crate::CatalogError;
use crate::model::{Dataset, Sharing};
use crate::region::Scope;

/// Where a share request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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

/// Rows a share request asks for and a grant allows: those whose region lies inside one
/// of `regions` (codes of the city, its counties or towns) and whose time is at or after
/// `since` (the dataset's [`Dataset::time_column`]). Either may be left out, not both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RowLimit {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
}

impl RowLimit {
    /// The scopes of `regions` (validated when the request was made).
    pub fn scopes(&self) -> Vec<Scope> {
        self.regions
            .iter()
            .filter_map(|code| Scope::of(code).ok())
            .collect()
    }
}

/// Checks the rows a share request or an approval names against the dataset and answers
/// them with each region as its current scope code. Problems name the field.
pub fn validate_rows_asked(dataset: &Dataset, rows: &RowLimit) -> Result<RowLimit, CatalogError> {
    if dataset.sharing == Sharing::Unconditional {
        return Err(CatalogError::invalid(
            "rows",
            format!(
                "{} is shared unconditionally: every row is readable already, so a request \
                 for it only asks to unmask columns",
                dataset.name
            ),
        ));
    }
    if rows.regions.is_empty() && rows.since.is_none() {
        return Err(CatalogError::invalid(
            "rows",
            "name regions, since or both; leave rows out to ask for every row",
        ));
    }
    if !rows.regions.is_empty() && dataset.region_column.is_none() {
        return Err(CatalogError::invalid(
            "rows.regions",
            format!(
                "{} declares no region_column, so its rows cannot be limited by region",
                dataset.name
            ),
        ));
    }
    if rows.since.is_some() && dataset.time_column().is_none() {
        return Err(CatalogError::invalid(
            "rows.since",
            format!(
                "{} has no timestamp column, so its rows cannot be limited by time",
                dataset.name
            ),
        ));
    }
    let mut regions = Vec::with_capacity(rows.regions.len());
    for (index, code) in rows.regions.iter().enumerate() {
        let scope = Scope::of(code)
            .map_err(|message| CatalogError::invalid(format!("rows.regions[{index}]"), message))?;
        regions.push(scope.code().to_string());
    }
    Ok(RowLimit {
        regions,
        since: rows.since,
    })
}

/// Refuses an approval's rows that are not inside what was asked for (`asked: None`: every
/// row, so anything narrows it).
pub fn check_rows_narrowing(
    asked: Option<&RowLimit>,
    given: &RowLimit,
) -> Result<(), CatalogError> {
    let Some(asked) = asked else {
        return Ok(());
    };
    if !asked.regions.is_empty() {
        let asked_scopes = asked.scopes();
        if given.regions.is_empty() {
            return Err(CatalogError::invalid(
                "rows.regions",
                "the request asked for some regions only; an approval can only narrow them",
            ));
        }
        for (index, scope) in given.scopes().iter().enumerate() {
            if !asked_scopes.iter().any(|a| scope.within(a)) {
                return Err(CatalogError::invalid(
                    format!("rows.regions[{index}]"),
                    format!(
                        "{} is not inside the regions asked for ({}); an approval can only \
                         narrow them",
                        scope.code(),
                        asked.regions.join(", ")
                    ),
                ));
            }
        }
    }
    if let Some(since) = asked.since
        && given.since.is_none_or(|given| given < since)
    {
        return Err(CatalogError::invalid(
            "rows.since",
            format!(
                "the request asked for rows since {}; an approval can only start later",
                since.to_rfc3339()
            ),
        ));
    }
    Ok(())
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
    /// The rows wanted; `None` for all.
    pub rows: Option<RowLimit>,
    pub until: Option<DateTime<Utc>>,
    pub answer_due_at: DateTime<Utc>,
}

/// A share request as stored.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
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
    pub rows: Option<RowLimit>,
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
    /// Approvals may narrow the rows (never widen them); `None`: as asked.
    pub rows: Option<RowLimit>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// What an approval grants: the decision's narrowing where it gives one, else what was asked.
pub struct GrantTerms {
    pub columns: Option<Vec<String>>,
    pub unmasked: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub rows: Option<RowLimit>,
}

impl Decision {
    /// Refuses a decision on a request that is no longer pending.
    pub fn check_pending(request: &ShareRequest) -> Result<(), CatalogError> {
        if request.status == ShareStatus::Pending {
            return Ok(());
        }
        Err(CatalogError::WrongState(format!(
            "share request {} was already {} on {}",
            request.id,
            request.status.as_str(),
            request
                .decided_at
                .map(|t| t.to_rfc3339())
                .unwrap_or_default()
        )))
    }

    /// The terms of the grant this decision creates on `request` (if it approves).
    pub fn grant_terms(&self, request: &ShareRequest) -> GrantTerms {
        GrantTerms {
            columns: self.columns.clone().or(request.columns.clone()),
            unmasked: self
                .unmasked
                .clone()
                .unwrap_or_else(|| request.unmasked.clone()),
            expires_at: self.expires_at.or(request.until),
            rows: self.rows.clone().or(request.rows.clone()),
        }
    }
}

/// A department's right to read a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Grant {
    pub id: i64,
    pub dataset: String,
    #[serde(skip)]
    pub dataset_id: i64,
    pub department: String,
    pub request_id: Option<i64>,
    pub columns: Option<Vec<String>>,
    pub unmasked: Vec<String>,
    /// The rows it allows; `None`: every row.
    pub rows: Option<RowLimit>,
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
