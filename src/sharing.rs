//! Routes of the access model: tokens, share requests and their decisions, grants, and
//! the audit log. Every change here is audited.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use cityhub_catalog::sharing::{
    Decision, NewShareRequest, validate_columns_asked, working_days_after,
};
use cityhub_catalog::token::Token;
use cityhub_catalog::{
    AuditEvent, AuditFilter, CatalogError, NewPrincipal, Principal, Role, ShareRequest, ShareStatus,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::routes::{JsonBody, QueryParams, visible_dataset};
use crate::state::AppState;

// ----------------------------------------------------------------------------------------
// Tokens

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    department: String,
    role: Role,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    rate_limit_per_second: Option<u32>,
}

/// `POST /api/v1/tokens` (admin): the token is in this answer and nowhere else.
pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<NewToken>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin], "creating a token")?;
    if body.expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(CatalogError::invalid("expires_at", "must be in the future").into());
    }
    let token = Token::generate();
    let principal = state
        .catalog
        .create_principal(
            NewPrincipal {
                name: body
                    .name
                    .unwrap_or_else(|| format!("{}-{}", body.department, body.role)),
                department: body.department,
                role: body.role,
                expires_at: body.expires_at,
                rate_limit_per_second: body.rate_limit_per_second,
            },
            &token.hash,
        )
        .await?;
    state.audit.record(
        AuditEvent::by(&caller.0, "token_create", "ok").detail(json!({
            "token_id": principal.id,
            "name": principal.name,
            "department": principal.department,
            "role": principal.role,
            "expires_at": principal.expires_at,
        })),
    );
    tracing::info!(token_id = principal.id, department = %principal.department, role = %principal.role, by = %caller.0.name, "Created a token.");
    let mut body = serde_json::to_value(&principal).map_err(ApiError::internal_from)?;
    body["token"] = token.plaintext.into();
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `GET /api/v1/tokens` (admin): every token's metadata, never the token.
pub async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin], "listing tokens")?;
    let now = Utc::now();
    let tokens: Vec<Value> = state
        .catalog
        .list_principals()
        .await?
        .into_iter()
        .map(|principal| {
            let status = token_status(&principal, now);
            let mut value = serde_json::to_value(&principal).unwrap_or_default();
            value["status"] = status.into();
            value
        })
        .collect();
    Ok(Json(tokens).into_response())
}

fn token_status(principal: &Principal, now: DateTime<Utc>) -> &'static str {
    if principal.revoked_at.is_some() {
        "revoked"
    } else if principal.expires_at.is_some_and(|at| at <= now) {
        "expired"
    } else {
        "active"
    }
}

/// `DELETE /api/v1/tokens/{id}`: admins revoke any token, anyone their own.
pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    if caller.0.role != Role::Admin && caller.0.id != id {
        return Err(ApiError::forbidden(
            "revoking another principal's token needs the admin role",
        ));
    }
    let principal = state.catalog.revoke_principal(id).await?;
    state.principals.forget(id);
    state.audit.record(
        AuditEvent::by(&caller.0, "token_revoke", "ok").detail(json!({
            "token_id": principal.id,
            "name": principal.name,
            "department": principal.department,
        })),
    );
    tracing::info!(token_id = id, by = %caller.0.name, "Revoked a token.");
    Ok(Json(principal).into_response())
}

// ----------------------------------------------------------------------------------------
// Share requests

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Application {
    purpose: String,
    #[serde(default)]
    columns: Option<Vec<String>>,
    #[serde(default)]
    unmasked: Vec<String>,
    #[serde(default)]
    until: Option<DateTime<Utc>>,
}

/// `POST /api/v1/datasets/{name}/share-requests`: a department applies to read a dataset.
pub async fn apply(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<Application>,
) -> Result<Response, ApiError> {
    caller.require(
        &[Role::Admin, Role::Analyst, Role::Producer],
        "applying for a dataset",
    )?;
    let dataset = visible_dataset(&state, &caller, &name).await?;
    if dataset.owner == caller.0.department {
        return Err(ApiError::bad_request(format!(
            "{name} belongs to your department already; there is nothing to apply for"
        )));
    }
    if body.purpose.trim().chars().count() < 4 {
        return Err(CatalogError::invalid(
            "purpose",
            "say what the data is for (at least 4 characters), e.g. 流动人口核查",
        )
        .into());
    }
    if body.until.is_some_and(|until| until <= Utc::now()) {
        return Err(CatalogError::invalid("until", "must be in the future").into());
    }
    validate_columns_asked(&dataset, body.columns.as_deref(), &body.unmasked)?;
    let now = Utc::now();
    let due = working_days_after(now, state.config.sharing.answer_within_working_days as u32);
    let request = state
        .catalog
        .create_share_request(NewShareRequest {
            dataset_id: dataset.id,
            department: caller.0.department.clone(),
            requested_by: caller.0.id,
            purpose: body.purpose.trim().to_string(),
            columns: body.columns,
            unmasked: body.unmasked,
            until: body.until,
            answer_due_at: due,
        })
        .await?;
    state.audit.record(
        AuditEvent::by(&caller.0, "share_request", "ok")
            .dataset(&request.dataset)
            .detail(json!({
                "request_id": request.id,
                "purpose": request.purpose,
                "columns": request.columns,
                "unmasked": request.unmasked,
                "until": request.until,
            })),
    );
    tracing::info!(request_id = request.id, dataset = %request.dataset, department = %request.department, "A department applied for a dataset.");
    Ok((StatusCode::CREATED, Json(with_overdue(&request, now))).into_response())
}

fn with_overdue(request: &ShareRequest, now: DateTime<Utc>) -> Value {
    let mut value = serde_json::to_value(request).unwrap_or_default();
    value["overdue"] = request.overdue(now).into();
    value
}

#[derive(Deserialize)]
pub struct RequestFilter {
    #[serde(default)]
    status: Option<String>,
}

/// `GET /api/v1/share-requests?status=`: requests made by or addressed to the caller's
/// department (admins: all), newest first, each flagged `overdue` past its deadline.
pub async fn list_requests(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(filter): QueryParams<RequestFilter>,
) -> Result<Response, ApiError> {
    let status = filter
        .status
        .as_deref()
        .map(str::parse::<ShareStatus>)
        .transpose()?;
    let department = (caller.0.role != Role::Admin).then_some(caller.0.department.as_str());
    let now = Utc::now();
    let requests: Vec<Value> = state
        .catalog
        .list_share_requests(department, status)
        .await?
        .iter()
        .map(|request| with_overdue(request, now))
        .collect();
    Ok(Json(requests).into_response())
}

/// A request the caller is party to (applicant, owner or admin); others get 404.
async fn party_request(
    state: &AppState,
    caller: &Caller,
    id: i64,
) -> Result<ShareRequest, ApiError> {
    match state.catalog.share_request(id).await? {
        Some(request)
            if caller.0.acts_for(&request.owner) || caller.0.department == request.department =>
        {
            Ok(request)
        }
        _ => Err(CatalogError::NotFound {
            what: "share request",
            name: id.to_string(),
        }
        .into()),
    }
}

pub async fn get_request(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let request = party_request(&state, &caller, id).await?;
    Ok(Json(with_overdue(&request, Utc::now())).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    #[serde(default)]
    reason: Option<String>,
    /// Approvals only: a narrower column list than asked for.
    #[serde(default)]
    columns: Option<Vec<String>>,
    /// Approvals only: fewer unmasked columns than asked for.
    #[serde(default)]
    unmasked: Option<Vec<String>>,
    /// Approvals only: when the grant lapses (default: the `until` asked for).
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
}

/// `POST /api/v1/share-requests/{id}/approve`
pub async fn approve(
    state: State<AppState>,
    caller: Caller,
    id: Path<i64>,
    JsonBody(body): JsonBody<Answer>,
) -> Result<Response, ApiError> {
    decide(state, caller, id, body, true).await
}

/// `POST /api/v1/share-requests/{id}/reject`: a reason is required.
pub async fn reject(
    state: State<AppState>,
    caller: Caller,
    id: Path<i64>,
    JsonBody(body): JsonBody<Answer>,
) -> Result<Response, ApiError> {
    decide(state, caller, id, body, false).await
}

async fn decide(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    body: Answer,
    approve: bool,
) -> Result<Response, ApiError> {
    caller.require(
        &[Role::Admin, Role::Producer, Role::Analyst],
        "answering a share request",
    )?;
    let request = party_request(&state, &caller, id).await?;
    if !caller.0.acts_for(&request.owner) {
        return Err(ApiError::forbidden(format!(
            "only {} (the owner of {}) or an admin answers this request",
            request.owner, request.dataset
        )));
    }
    let reason = body
        .reason
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty());
    if approve {
        check_narrowing(&state, &caller, &request, &body.columns, &body.unmasked).await?;
        if body.expires_at.is_some_and(|at| at <= Utc::now()) {
            return Err(CatalogError::invalid("expires_at", "must be in the future").into());
        }
    } else {
        if reason.is_none() {
            return Err(CatalogError::invalid(
                "reason",
                "a rejection must say why, so that the applicant can act on it",
            )
            .into());
        }
        if body.columns.is_some() || body.unmasked.is_some() || body.expires_at.is_some() {
            return Err(ApiError::bad_request(
                "columns, unmasked and expires_at belong to an approval, not a rejection",
            ));
        }
    }
    let (request, grant) = state
        .catalog
        .decide_share_request(Decision {
            request_id: id,
            decided_by: caller.0.id,
            approve,
            reason: reason.clone(),
            columns: body.columns,
            unmasked: body.unmasked,
            expires_at: body.expires_at,
        })
        .await?;
    // Endpoints owned by the applicant may now read more: their cache keys change.
    state.endpoints.poke();
    state.audit.record(
        AuditEvent::by(&caller.0, "share_decision", "ok")
            .dataset(&request.dataset)
            .detail(json!({
                "request_id": request.id,
                "decision": request.status,
                "applicant": request.department,
                "reason": reason,
                "grant": grant,
            })),
    );
    tracing::info!(request_id = id, decision = request.status.as_str(), dataset = %request.dataset, by = %caller.0.name, "Answered a share request.");
    let mut answer = with_overdue(&request, Utc::now());
    answer["grant"] = serde_json::to_value(&grant).map_err(ApiError::internal_from)?;
    Ok(Json(answer).into_response())
}

/// An approval may narrow what was asked for, never widen it.
async fn check_narrowing(
    state: &AppState,
    caller: &Caller,
    request: &ShareRequest,
    columns: &Option<Vec<String>>,
    unmasked: &Option<Vec<String>>,
) -> Result<(), ApiError> {
    let dataset = visible_dataset(state, caller, &request.dataset).await?;
    let columns_given = columns.as_ref().or(request.columns.as_ref());
    let unmasked_given = unmasked.as_ref().unwrap_or(&request.unmasked);
    validate_columns_asked(&dataset, columns_given.map(Vec::as_slice), unmasked_given)?;
    if let (Some(asked), Some(given)) = (&request.columns, columns)
        && let Some(extra) = given.iter().find(|c| !asked.contains(c))
    {
        return Err(CatalogError::invalid(
            "columns",
            format!("{extra:?} was not asked for; an approval can only narrow the columns"),
        )
        .into());
    }
    if let Some(extra) = unmasked_given
        .iter()
        .find(|c| !request.unmasked.contains(c))
    {
        return Err(CatalogError::invalid(
            "unmasked",
            format!("{extra:?} was not asked for unmasked; an approval can only narrow that"),
        )
        .into());
    }
    Ok(())
}

// ----------------------------------------------------------------------------------------
// Grants

/// `GET /api/v1/grants`: grants the caller's department holds and gives (admins: all),
/// each marked `active`.
pub async fn list_grants(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let mut grants = if caller.0.role == Role::Admin {
        state.catalog.grants_held_by(None).await?
    } else {
        let mut grants = state
            .catalog
            .grants_held_by(Some(&caller.0.department))
            .await?;
        grants.extend(state.catalog.grants_given_by(&caller.0.department).await?);
        grants
    };
    grants.sort_by_key(|g| std::cmp::Reverse(g.id));
    grants.dedup_by_key(|g| g.id);
    let now = Utc::now();
    let body: Vec<Value> = grants
        .iter()
        .map(|grant| {
            let mut value = serde_json::to_value(grant).unwrap_or_default();
            value["active"] = grant.active(now).into();
            value
        })
        .collect();
    Ok(Json(body).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    reason: String,
}

/// `POST /api/v1/grants/{id}/revoke {reason}`: the owner (or an admin) ends a grant at once.
pub async fn revoke_grant(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    JsonBody(body): JsonBody<Revocation>,
) -> Result<Response, ApiError> {
    let not_found = || -> ApiError {
        CatalogError::NotFound {
            what: "grant",
            name: id.to_string(),
        }
        .into()
    };
    let grant = state.catalog.grant(id).await?.ok_or_else(not_found)?;
    let owner = grant.dataset.split('.').next().unwrap_or_default();
    if !caller.0.acts_for(owner) {
        return if caller.0.department == grant.department {
            Err(ApiError::forbidden(format!(
                "only {owner} (the owner of {}) or an admin revokes this grant",
                grant.dataset
            )))
        } else {
            Err(not_found())
        };
    }
    caller.require(
        &[Role::Admin, Role::Producer, Role::Analyst],
        "revoking a grant",
    )?;
    if body.reason.trim().is_empty() {
        return Err(CatalogError::invalid("reason", "say why the grant ends").into());
    }
    let grant = state
        .catalog
        .revoke_grant(id, caller.0.id, body.reason.trim())
        .await?;
    // Endpoints of the holder must stop showing what the grant gave, now.
    state.endpoints.poke();
    state.audit.record(
        AuditEvent::by(&caller.0, "grant_revoke", "ok")
            .dataset(&grant.dataset)
            .detail(json!({
                "grant_id": grant.id,
                "department": grant.department,
                "reason": grant.revoke_reason,
            })),
    );
    tracing::info!(grant_id = id, dataset = %grant.dataset, by = %caller.0.name, "Revoked a grant.");
    Ok(Json(grant).into_response())
}

// ----------------------------------------------------------------------------------------
// Audit

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    #[serde(default)]
    since: Option<DateTime<Utc>>,
    #[serde(default)]
    principal: Option<String>,
    #[serde(default)]
    dataset: Option<String>,
    #[serde(default)]
    action: Option<String>,
    /// Entries after this id: pass the last id of a page to get the next one.
    #[serde(default)]
    after: Option<i64>,
    #[serde(default)]
    limit: Option<usize>,
}

/// `GET /api/v1/audit` (admin): the audit log, oldest first, in pages of `limit`
/// (default 1000, at most 10000). Read-only: no route changes or deletes entries.
pub async fn read_audit(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<AuditQuery>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin], "reading the audit log")?;
    state.audit.flush().await;
    let entries = state
        .catalog
        .audit_entries(AuditFilter {
            since: query.since,
            principal: query.principal,
            dataset: query.dataset,
            action: query.action,
            after_id: query.after,
            limit: query.limit.unwrap_or(1000).clamp(1, 10_000),
        })
        .await?;
    Ok(Json(entries).into_response())
}

/// Deletes audit entries past their retention, recording the purge; run daily by `serve`.
pub async fn purge_expired_audit(state: &AppState) -> Result<u64, CatalogError> {
    let days = state.config.audit.retention_days as i64;
    let cutoff = Utc::now() - chrono::Duration::days(days);
    state.audit.flush().await;
    let event = AuditEvent {
        at: Utc::now(),
        principal_id: None,
        principal: Some("cityhub".into()),
        department: None,
        action: "audit_purge".into(),
        outcome: "ok".into(),
        dataset: None,
        detail: json!({"retention_days": days}),
    };
    let deleted = state.catalog.purge_audit(cutoff, event).await?;
    tracing::info!(
        deleted,
        retention_days = days,
        "Purged audit entries past their retention."
    );
    Ok(deleted)
}

/// Sets the share-request gauges of `/metrics`: pending and overdue requests.
pub async fn update_share_gauges(state: &AppState) {
    if let Ok(pending) = state
        .catalog
        .list_share_requests(None, Some(ShareStatus::Pending))
        .await
    {
        let now = Utc::now();
        let overdue = pending.iter().filter(|r| r.overdue(now)).count();
        metrics::gauge!("cityhub_share_requests_pending").set(pending.len() as f64);
        metrics::gauge!("cityhub_share_requests_overdue").set(overdue as f64);
    }
}
