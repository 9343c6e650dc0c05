//! The access model's operations: departments, tokens, share requests and their decisions,
//! grants, and the audit log's retention. Each checks who may do it ([`crate::access`]),
//! changes the catalog, records an audit event, and announces changes of rights to this
//! process's caches ([`DataVersions::access_changed`]).
//!
//! Every front door (HTTP, the CLI) calls these, so a token made from the command line is
//! audited exactly like one made over HTTP.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use super::{
    Decision, Grant, NewShareRequest, RowLimit, ShareRequest, ShareStatus, check_rows_narrowing,
    validate_columns_asked, validate_rows_asked, working_days_after,
};
use crate::Catalog;
use crate::access::{ADMIN_ROLES, Access, SHARING_ROLES, access, require_role, visible_dataset};
use crate::audit::{Action, AuditEntry, AuditEvent, AuditFilter, AuditLog, Outcome};
use crate::clock::Clock;
use crate::error::{CatalogError, Result};
use crate::model::{Dataset, Department, NewPrincipal, Principal, Role};
use crate::principals::PrincipalCache;
use crate::region::Scope;
use crate::token::{Token, hash_token};
use crate::versions::DataVersions;

/// A token to make: for whom, with which role, until when.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub department: String,
    pub role: Role,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub rate_limit_per_second: Option<u32>,
    /// A region scope (analyst and dashboard tokens of a county's or a town's centre):
    /// `511025`, `511025100`; the city `511000` limits to the city's own codes.
    #[serde(default)]
    pub region: Option<String>,
}

/// A department's application to read a dataset.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Application {
    pub purpose: String,
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    #[serde(default)]
    pub unmasked: Vec<String>,
    /// Only some rows (regions, a start time); `None`: every row.
    #[serde(default)]
    pub rows: Option<RowLimit>,
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
}

/// The owner's answer to a share request.
#[derive(Debug, Clone, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShareAnswer {
    #[serde(default)]
    pub reason: Option<String>,
    /// Approvals only: a narrower column list than asked for.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Approvals only: fewer unmasked columns than asked for.
    #[serde(default)]
    pub unmasked: Option<Vec<String>>,
    /// Approvals only: fewer rows than asked for.
    #[serde(default)]
    pub rows: Option<RowLimit>,
    /// Approvals only: when the grant lapses (default: the `until` asked for).
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// The access model of one hub process.
#[derive(Clone)]
pub struct SharingService {
    catalog: Catalog,
    audit: AuditLog,
    versions: Arc<DataVersions>,
    principals: PrincipalCache,
    clock: Clock,
    /// Working days an owner has to answer a share request (`sharing.answer_within_working_days`).
    answer_within_working_days: u32,
}

impl SharingService {
    pub fn new(
        catalog: Catalog,
        audit: AuditLog,
        versions: Arc<DataVersions>,
        clock: Clock,
        answer_within_working_days: u32,
    ) -> Self {
        Self {
            catalog,
            audit,
            versions,
            principals: PrincipalCache::default(),
            clock,
            answer_within_working_days,
        }
    }

    /// The principal holding `token` if it is valid now. Principals are cached for up to
    /// [`crate::principals::TTL`]; revocations through this process take effect at once.
    pub async fn authenticate(&self, token: &str) -> Result<Principal> {
        let token_hash = hash_token(token);
        let principal = match self.principals.get(&token_hash) {
            Some(principal) => principal,
            None => {
                let principal = self
                    .catalog
                    .principal_by_token_hash(&token_hash)
                    .await?
                    .ok_or_else(|| {
                        CatalogError::Unauthenticated("the token is not valid".into())
                    })?;
                self.principals.insert(token_hash, principal.clone());
                principal
            }
        };
        if principal.revoked_at.is_some() {
            return Err(CatalogError::Unauthenticated(
                "the token has been revoked".into(),
            ));
        }
        if principal
            .expires_at
            .is_some_and(|at| at <= self.clock.now())
        {
            return Err(CatalogError::Unauthenticated(
                "the token has expired".into(),
            ));
        }
        Ok(principal)
    }

    /// Creates a department (admins).
    pub async fn create_department(
        &self,
        by: &Principal,
        code: &str,
        name: &str,
    ) -> Result<Department> {
        require_role(by, ADMIN_ROLES, "creating a department")?;
        let department = self.catalog.create_department(code, name).await?;
        self.audit.record(
            AuditEvent::by(by, Action::DepartmentCreate, Outcome::Ok)
                .detail(json!({"code": department.code, "name": department.name})),
        );
        tracing::info!(code = %department.code, by = %by.name, "Created a department.");
        Ok(department)
    }

    /// Makes a principal and its token (admins); `via` says which front door (`api`, `cli`).
    /// The token is in the answer and nowhere else.
    pub async fn create_token(
        &self,
        by: &Principal,
        new: NewToken,
        via: &str,
    ) -> Result<(Principal, Token)> {
        require_role(by, ADMIN_ROLES, "creating a token")?;
        if new.expires_at.is_some_and(|at| at <= self.clock.now()) {
            return Err(CatalogError::invalid("expires_at", "must be in the future"));
        }
        let region = match new.region.as_deref() {
            None => None,
            Some(_) if !matches!(new.role, Role::Analyst | Role::Dashboard) => {
                return Err(CatalogError::invalid(
                    "region",
                    format!(
                        "a region scope limits what a governance centre reads; it is for \
                         analyst and dashboard tokens, not {} tokens",
                        new.role
                    ),
                ));
            }
            Some(code) => Some(
                Scope::of(code)
                    .map_err(|message| CatalogError::invalid("region", message))?
                    .code()
                    .to_string(),
            ),
        };
        let token = Token::generate();
        let principal = self
            .catalog
            .create_principal(
                NewPrincipal {
                    name: new
                        .name
                        .unwrap_or_else(|| format!("{}-{}", new.department, new.role)),
                    department: new.department,
                    role: new.role,
                    expires_at: new.expires_at,
                    rate_limit_per_second: new.rate_limit_per_second,
                    region,
                },
                &token.hash,
            )
            .await?;
        self.audit.record(
            AuditEvent::by(by, Action::TokenCreate, Outcome::Ok).detail(json!({
                "token_id": principal.id,
                "name": principal.name,
                "department": principal.department,
                "role": principal.role,
                "region": principal.region,
                "expires_at": principal.expires_at,
                "via": via,
            })),
        );
        tracing::info!(token_id = principal.id, department = %principal.department, role = %principal.role, region = principal.region.as_deref().unwrap_or("none"), by = %by.name, via, "Created a token.");
        Ok((principal, token))
    }

    /// Every principal's metadata, newest first (admins; never the tokens).
    pub async fn tokens(&self, by: &Principal) -> Result<Vec<Principal>> {
        require_role(by, ADMIN_ROLES, "listing tokens")?;
        self.catalog.list_principals().await
    }

    /// Share requests made by or addressed to `by`'s department (admins: all), newest first.
    pub async fn requests(
        &self,
        by: &Principal,
        status: Option<ShareStatus>,
    ) -> Result<Vec<ShareRequest>> {
        let department = (by.role != Role::Admin).then_some(by.department.as_str());
        self.catalog.list_share_requests(department, status).await
    }

    /// Revokes a token at once: admins any, everybody their own.
    pub async fn revoke_token(&self, by: &Principal, id: i64) -> Result<Principal> {
        if by.role != Role::Admin && by.id != id {
            return Err(CatalogError::Forbidden(
                "revoking another principal's token needs the admin role".into(),
            ));
        }
        let principal = self.catalog.revoke_principal(id).await?;
        self.principals.forget(id);
        self.audit.record(
            AuditEvent::by(by, Action::TokenRevoke, Outcome::Ok).detail(json!({
                "token_id": principal.id,
                "name": principal.name,
                "department": principal.department,
            })),
        );
        tracing::info!(token_id = id, by = %by.name, "Revoked a token.");
        Ok(principal)
    }

    /// Files `by`'s department's application to read `dataset`.
    pub async fn apply(
        &self,
        by: &Principal,
        dataset: &str,
        application: Application,
    ) -> Result<ShareRequest> {
        require_role(by, SHARING_ROLES, "applying for a dataset")?;
        let dataset = visible_dataset(&self.catalog, by, dataset).await?;
        if dataset.owner == by.department {
            return Err(CatalogError::invalid(
                "dataset",
                format!(
                    "{} belongs to your department already; there is nothing to apply for",
                    dataset.name
                ),
            ));
        }
        if application.purpose.trim().chars().count() < 4 {
            return Err(CatalogError::invalid(
                "purpose",
                "say what the data is for (at least 4 characters), e.g. 流动人口核查",
            ));
        }
        let now = self.clock.now();
        if application.until.is_some_and(|until| until <= now) {
            return Err(CatalogError::invalid("until", "must be in the future"));
        }
        validate_columns_asked(
            &dataset,
            application.columns.as_deref(),
            &application.unmasked,
        )?;
        let rows = application
            .rows
            .as_ref()
            .map(|rows| validate_rows_asked(&dataset, rows))
            .transpose()?;
        let request = self
            .catalog
            .create_share_request(NewShareRequest {
                dataset_id: dataset.id,
                department: by.department.clone(),
                requested_by: by.id,
                purpose: application.purpose.trim().to_string(),
                columns: application.columns,
                unmasked: application.unmasked,
                rows,
                until: application.until,
                answer_due_at: working_days_after(now, self.answer_within_working_days),
            })
            .await?;
        self.audit.record(
            AuditEvent::by(by, Action::ShareRequest, Outcome::Ok)
                .dataset(&request.dataset)
                .detail(json!({
                    "request_id": request.id,
                    "purpose": request.purpose,
                    "columns": request.columns,
                    "unmasked": request.unmasked,
                    "rows": request.rows,
                    "until": request.until,
                })),
        );
        tracing::info!(request_id = request.id, dataset = %request.dataset, department = %request.department, "A department applied for a dataset.");
        Ok(request)
    }

    /// A request `by` is party to (applicant, owner or admin); others get `NotFound`.
    pub async fn request(&self, by: &Principal, id: i64) -> Result<ShareRequest> {
        match self.catalog.share_request(id).await? {
            Some(request) if by.acts_for(&request.owner) || by.department == request.department => {
                Ok(request)
            }
            _ => Err(CatalogError::NotFound {
                what: "share request",
                name: id.to_string(),
            }),
        }
    }

    /// Approves or rejects a pending request as its owner (or an admin). An approval may
    /// narrow what was asked for, never widen it; a rejection must say why.
    pub async fn decide(
        &self,
        by: &Principal,
        id: i64,
        answer: ShareAnswer,
        approve: bool,
    ) -> Result<(ShareRequest, Option<Grant>)> {
        require_role(by, SHARING_ROLES, "answering a share request")?;
        let request = self.request(by, id).await?;
        if !by.acts_for(&request.owner) {
            return Err(CatalogError::Forbidden(format!(
                "only {} (the owner of {}) or an admin answers this request",
                request.owner, request.dataset
            )));
        }
        let reason = answer
            .reason
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty());
        let mut rows = None;
        if approve {
            rows = self
                .check_narrowing(
                    by,
                    &request,
                    &answer.columns,
                    &answer.unmasked,
                    &answer.rows,
                )
                .await?;
            if answer.expires_at.is_some_and(|at| at <= self.clock.now()) {
                return Err(CatalogError::invalid("expires_at", "must be in the future"));
            }
        } else {
            if reason.is_none() {
                return Err(CatalogError::invalid(
                    "reason",
                    "a rejection must say why, so that the applicant can act on it",
                ));
            }
            if answer.columns.is_some()
                || answer.unmasked.is_some()
                || answer.rows.is_some()
                || answer.expires_at.is_some()
            {
                return Err(CatalogError::invalid(
                    "columns",
                    "columns, unmasked, rows and expires_at belong to an approval, not a \
                     rejection",
                ));
            }
        }
        let (request, grant) = self
            .catalog
            .decide_share_request(Decision {
                request_id: id,
                decided_by: by.id,
                approve,
                reason: reason.clone(),
                columns: answer.columns,
                unmasked: answer.unmasked,
                rows,
                expires_at: answer.expires_at,
            })
            .await?;
        // The applicant may now read more: results cached under its rights must change.
        self.versions.access_changed();
        self.audit.record(
            AuditEvent::by(by, Action::ShareDecision, Outcome::Ok)
                .dataset(&request.dataset)
                .detail(json!({
                    "request_id": request.id,
                    "decision": request.status,
                    "applicant": request.department,
                    "reason": reason,
                    "grant": grant,
                })),
        );
        tracing::info!(request_id = id, decision = request.status.as_str(), dataset = %request.dataset, by = %by.name, "Answered a share request.");
        Ok((request, grant))
    }

    /// An approval may narrow what was asked for, never widen it; answers the approval's
    /// rows as stored (each region as its current code), if it names rows.
    async fn check_narrowing(
        &self,
        by: &Principal,
        request: &ShareRequest,
        columns: &Option<Vec<String>>,
        unmasked: &Option<Vec<String>>,
        rows: &Option<RowLimit>,
    ) -> Result<Option<RowLimit>> {
        let dataset = visible_dataset(&self.catalog, by, &request.dataset).await?;
        let columns_given = columns.as_ref().or(request.columns.as_ref());
        let unmasked_given = unmasked.as_ref().unwrap_or(&request.unmasked);
        validate_columns_asked(&dataset, columns_given.map(Vec::as_slice), unmasked_given)?;
        if let (Some(asked), Some(given)) = (&request.columns, columns)
            && let Some(extra) = given.iter().find(|c| !asked.contains(c))
        {
            return Err(CatalogError::invalid(
                "columns",
                format!("{extra:?} was not asked for; an approval can only narrow the columns"),
            ));
        }
        if let Some(extra) = unmasked_given
            .iter()
            .find(|c| !request.unmasked.contains(c))
        {
            return Err(CatalogError::invalid(
                "unmasked",
                format!("{extra:?} was not asked for unmasked; an approval can only narrow that"),
            ));
        }
        let Some(rows) = rows else {
            return Ok(None);
        };
        let rows = validate_rows_asked(&dataset, rows)?;
        check_rows_narrowing(request.rows.as_ref(), &rows)?;
        Ok(Some(rows))
    }

    /// Ends a grant at once, as the dataset's owner (or an admin); the holder's department
    /// learns only that it may not (`Forbidden`), others nothing (`NotFound`).
    pub async fn revoke_grant(&self, by: &Principal, id: i64, reason: &str) -> Result<Grant> {
        let not_found = || CatalogError::NotFound {
            what: "grant",
            name: id.to_string(),
        };
        let grant = self.catalog.grant(id).await?.ok_or_else(not_found)?;
        let owner = grant.dataset.split('.').next().unwrap_or_default();
        if !by.acts_for(owner) {
            return if by.department == grant.department {
                Err(CatalogError::Forbidden(format!(
                    "only {owner} (the owner of {}) or an admin revokes this grant",
                    grant.dataset
                )))
            } else {
                Err(not_found())
            };
        }
        require_role(by, SHARING_ROLES, "revoking a grant")?;
        if reason.trim().is_empty() {
            return Err(CatalogError::invalid("reason", "say why the grant ends"));
        }
        let grant = self.catalog.revoke_grant(id, by.id, reason.trim()).await?;
        // The holder's cached results must stop showing what the grant gave, now.
        self.versions.access_changed();
        self.audit.record(
            AuditEvent::by(by, Action::GrantRevoke, Outcome::Ok)
                .dataset(&grant.dataset)
                .detail(json!({
                    "grant_id": grant.id,
                    "department": grant.department,
                    "reason": grant.revoke_reason,
                })),
        );
        tracing::info!(grant_id = id, dataset = %grant.dataset, by = %by.name, "Revoked a grant.");
        Ok(grant)
    }

    /// Every dataset with what `by` may do with it ([`access`]).
    /// How `by` may read one dataset, by its department's grants.
    pub async fn access_to(&self, by: &Principal, dataset: &Dataset) -> Result<Access> {
        let grants = self.catalog.grants_held_by(Some(&by.department)).await?;
        Ok(access(by, dataset, &grants, self.clock.now()))
    }

    pub async fn catalogue(&self, by: &Principal) -> Result<Vec<(Dataset, Access)>> {
        let grants = self.catalog.grants_held_by(Some(&by.department)).await?;
        let now = self.clock.now();
        Ok(self
            .catalog
            .list_datasets()
            .await?
            .into_iter()
            .map(|dataset| {
                let how = access(by, &dataset, &grants, now);
                (dataset, how)
            })
            .collect())
    }

    /// Grants `by`'s department holds and gives (admins: all), newest first.
    pub async fn grants(&self, by: &Principal) -> Result<Vec<Grant>> {
        let mut grants = if by.role == Role::Admin {
            self.catalog.grants_held_by(None).await?
        } else {
            let mut grants = self.catalog.grants_held_by(Some(&by.department)).await?;
            grants.extend(self.catalog.grants_given_by(&by.department).await?);
            grants
        };
        grants.sort_by_key(|g| std::cmp::Reverse(g.id));
        grants.dedup_by_key(|g| g.id);
        Ok(grants)
    }

    /// Sets the share-request gauges of `/metrics`: pending and overdue requests.
    pub async fn update_gauges(&self) {
        if let Ok(pending) = self
            .catalog
            .list_share_requests(None, Some(ShareStatus::Pending))
            .await
        {
            let now = self.clock.now();
            let overdue = pending.iter().filter(|r| r.overdue(now)).count();
            metrics::gauge!("cityhub_share_requests_pending").set(pending.len() as f64);
            metrics::gauge!("cityhub_share_requests_overdue").set(overdue as f64);
        }
    }

    /// The audit log (admins), with everything recorded before this call.
    pub async fn audit_entries(
        &self,
        by: &Principal,
        filter: AuditFilter,
    ) -> Result<Vec<AuditEntry>> {
        require_role(by, ADMIN_ROLES, "reading the audit log")?;
        if let Some(action) = &filter.action {
            action.parse::<Action>()?;
        }
        self.audit.flush().await;
        self.catalog.audit_entries(filter).await
    }

    /// Deletes audit entries older than `retention_days`, recording the purge.
    pub async fn purge_expired_audit(&self, retention_days: u64) -> Result<u64> {
        let days = i64::try_from(retention_days).unwrap_or(i64::MAX);
        let cutoff = self.clock.now() - chrono::Duration::days(days);
        self.audit.flush().await;
        let event = AuditEvent::by_hub(Action::AuditPurge, Outcome::Ok)
            .detail(json!({"retention_days": days}));
        let deleted = self.catalog.purge_audit(cutoff, event).await?;
        tracing::info!(
            deleted,
            retention_days = days,
            "Purged audit entries past their retention."
        );
        Ok(deleted)
    }
}
