//! Routes of the access model: tokens, share requests and their decisions, grants, and
//! the audit log. The rules and the audit are [`SharingService`]'s.
//!
//! [`SharingService`]: cityhub_catalog::SharingService

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use cityhub_catalog::sharing::{Application, NewToken, ShareAnswer};
use cityhub_catalog::{AuditEntry, Grant, Principal};
use cityhub_catalog::{AuditFilter, ShareRequest, ShareStatus};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{JsonBody, QueryParams};
use crate::state::AppState;

/// `POST /api/v1/tokens` (admin): the token is in this answer and nowhere else.
#[utoipa::path(post, path = "/tokens", tag = "sharing",
    request_body = NewToken,
    responses((status = CREATED, description = "The token's metadata and, this once, the token itself", body = NewTokenAnswer)))]
pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<NewToken>,
) -> Result<Response, ApiError> {
    let (principal, token) = state.sharing.create_token(&caller.0, body, "api").await?;
    let answer = NewTokenAnswer {
        principal,
        token: token.plaintext,
    };
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// A new token's metadata and the token itself, shown this once.
#[derive(Serialize, ToSchema)]
pub struct NewTokenAnswer {
    #[serde(flatten)]
    principal: Principal,
    /// `chub_...`: keep it; the hub stores only its hash.
    token: String,
}

/// A token's metadata and where it stands.
#[derive(Serialize, ToSchema)]
pub struct ListedToken {
    #[serde(flatten)]
    principal: Principal,
    /// `active`, `expired` or `revoked`.
    status: &'static str,
}

/// `GET /api/v1/tokens` (admin): every token's metadata, never the token.
#[utoipa::path(get, path = "/tokens", tag = "sharing",
    responses((status = OK, description = "Every token's metadata (never the token)", body = Vec<ListedToken>)))]
pub async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let now = state.clock.now();
    let tokens: Vec<ListedToken> = state
        .sharing
        .tokens(&caller.0)
        .await?
        .into_iter()
        .map(|principal| ListedToken {
            status: principal.token_status(now),
            principal,
        })
        .collect();
    Ok(Json(tokens).into_response())
}

/// `DELETE /api/v1/tokens/{id}`: admins revoke any token, anyone their own.
#[utoipa::path(delete, path = "/tokens/{id}", tag = "sharing",
    params(("id" = i64, Path, description = "The token's id")),
    responses((status = OK, description = "The revoked token's metadata", body = Principal)))]
pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    Ok(Json(state.sharing.revoke_token(&caller.0, id).await?).into_response())
}

/// `POST /api/v1/datasets/{name}/share-requests`: a department applies to read a dataset.
#[utoipa::path(post, operation_id = "apply_for_dataset", path = "/datasets/{name}/share-requests", tag = "sharing",
    params(("name" = String, Path, description = "The dataset, `department.table`", example = "zhili.hotline_cases")),
    request_body = Application,
    responses((status = CREATED, description = "The share request", body = ShareRequestView)))]
pub async fn apply(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<Application>,
) -> Result<Response, ApiError> {
    let request = state.sharing.apply(&caller.0, &name, body).await?;
    Ok((
        StatusCode::CREATED,
        Json(with_overdue(request, state.clock.now())),
    )
        .into_response())
}

/// A share request and whether its answer is late.
#[derive(Serialize, ToSchema)]
pub struct ShareRequestView {
    #[serde(flatten)]
    request: ShareRequest,
    /// Pending past its answer deadline (`answer_due_at`).
    overdue: bool,
}

fn with_overdue(request: ShareRequest, now: DateTime<Utc>) -> ShareRequestView {
    ShareRequestView {
        overdue: request.overdue(now),
        request,
    }
}

/// A decided share request and the grant an approval made.
#[derive(Serialize, ToSchema)]
pub struct DecidedRequest {
    #[serde(flatten)]
    request: ShareRequestView,
    /// `null` for a rejection.
    grant: Option<Grant>,
}

/// A grant and whether it is in force.
#[derive(Serialize, ToSchema)]
pub struct GrantView {
    #[serde(flatten)]
    grant: Grant,
    /// Neither revoked nor expired.
    active: bool,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RequestFilter {
    /// Only requests in this state: `pending`, `approved` or `rejected`.
    #[serde(default)]
    status: Option<String>,
}

/// `GET /api/v1/share-requests?status=`: requests made by or addressed to the caller's
/// department (admins: all), newest first, each flagged `overdue` past its deadline.
#[utoipa::path(get, operation_id = "list_share_requests", path = "/share-requests", tag = "sharing",
    params(RequestFilter),
    responses((status = OK, description = "Requests made by or addressed to the caller's department, newest first", body = Vec<ShareRequestView>)))]
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
    let now = state.clock.now();
    let requests: Vec<ShareRequestView> = state
        .sharing
        .requests(&caller.0, status)
        .await?
        .into_iter()
        .map(|request| with_overdue(request, now))
        .collect();
    Ok(Json(requests).into_response())
}

/// `GET /api/v1/share-requests/{id}`: a request the caller is party to.
#[utoipa::path(get, operation_id = "get_share_request", path = "/share-requests/{id}", tag = "sharing",
    params(("id" = i64, Path, description = "The share request's id")),
    responses((status = OK, description = "The share request", body = ShareRequestView)))]
pub async fn get_request(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let request = state.sharing.request(&caller.0, id).await?;
    Ok(Json(with_overdue(request, state.clock.now())).into_response())
}

/// `POST /api/v1/share-requests/{id}/approve`
#[utoipa::path(post, operation_id = "approve_share_request", path = "/share-requests/{id}/approve", tag = "sharing",
    params(("id" = i64, Path, description = "The share request's id")),
    request_body = ShareAnswer,
    responses((status = OK, description = "The approved request with its grant", body = DecidedRequest)))]
pub async fn approve(
    state: State<AppState>,
    caller: Caller,
    id: Path<i64>,
    JsonBody(body): JsonBody<ShareAnswer>,
) -> Result<Response, ApiError> {
    decide(state, caller, id, body, true).await
}

/// `POST /api/v1/share-requests/{id}/reject`: a reason is required.
#[utoipa::path(post, operation_id = "reject_share_request", path = "/share-requests/{id}/reject", tag = "sharing",
    params(("id" = i64, Path, description = "The share request's id")),
    request_body = ShareAnswer,
    responses((status = OK, description = "The rejected request (`grant` null)", body = DecidedRequest)))]
pub async fn reject(
    state: State<AppState>,
    caller: Caller,
    id: Path<i64>,
    JsonBody(body): JsonBody<ShareAnswer>,
) -> Result<Response, ApiError> {
    decide(state, caller, id, body, false).await
}

async fn decide(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    body: ShareAnswer,
    approve: bool,
) -> Result<Response, ApiError> {
    let (request, grant) = state.sharing.decide(&caller.0, id, body, approve).await?;
    let answer = DecidedRequest {
        request: with_overdue(request, state.clock.now()),
        grant,
    };
    Ok(Json(answer).into_response())
}

/// `GET /api/v1/grants`: grants the caller's department holds and gives (admins: all),
/// each marked `active`.
#[utoipa::path(get, path = "/grants", tag = "sharing",
    responses((status = OK, description = "Grants held and given by the caller's department", body = Vec<GrantView>)))]
pub async fn list_grants(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let now = state.clock.now();
    let body: Vec<GrantView> = state
        .sharing
        .grants(&caller.0)
        .await?
        .into_iter()
        .map(|grant| GrantView {
            active: grant.active(now),
            grant,
        })
        .collect();
    Ok(Json(body).into_response())
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    /// Why the grant ends (recorded with it and in the audit log).
    reason: String,
}

/// `POST /api/v1/grants/{id}/revoke {reason}`: the owner (or an admin) ends a grant at once.
#[utoipa::path(post, path = "/grants/{id}/revoke", tag = "sharing",
    params(("id" = i64, Path, description = "The grant's id")),
    request_body = Revocation,
    responses((status = OK, description = "The revoked grant", body = Grant)))]
pub async fn revoke_grant(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    JsonBody(body): JsonBody<Revocation>,
) -> Result<Response, ApiError> {
    Ok(Json(
        state
            .sharing
            .revoke_grant(&caller.0, id, &body.reason)
            .await?,
    )
    .into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Entries at or after this time (RFC 3339).
    #[serde(default)]
    since: Option<DateTime<Utc>>,
    /// Entries before this time (RFC 3339).
    #[serde(default)]
    until: Option<DateTime<Utc>>,
    /// A principal's name.
    #[serde(default)]
    principal: Option<String>,
    /// A dataset, `department.table`.
    #[serde(default)]
    dataset: Option<String>,
    /// An action: `query`, `push`, `import`, `kafka_flush`, ...
    #[serde(default)]
    action: Option<String>,
    /// Entries after this id: pass the last id of a page to get the next one.
    #[serde(default)]
    after: Option<i64>,
    /// Entries in a page: default 1000, at most 10000.
    #[serde(default)]
    limit: Option<usize>,
}

/// `GET /api/v1/audit` (admin): the audit log, oldest first, in pages of `limit`
/// (default 1000, at most 10000). Read-only: no route changes or deletes entries.
#[utoipa::path(get, path = "/audit", tag = "sharing",
    params(AuditQuery),
    responses((status = OK, description = "Audit entries, oldest first", body = Vec<AuditEntry>)))]
pub async fn read_audit(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<AuditQuery>,
) -> Result<Response, ApiError> {
    let filter = AuditFilter {
        since: query.since,
        until: query.until,
        principal: query.principal,
        dataset: query.dataset,
        action: query.action,
        after_id: query.after,
        limit: query.limit.unwrap_or(1000).clamp(1, 10_000),
    };
    Ok(Json(state.sharing.audit_entries(&caller.0, filter).await?).into_response())
}

/// Who a token belongs to, with the names a person reads and what its role may do.
#[derive(Serialize, ToSchema)]
pub struct Whoami {
    #[serde(flatten)]
    principal: Principal,
    /// The department's display name (公安局).
    department_name: Option<String>,
    /// The name of the region the token is scoped to (资中县), if it has one.
    region_name: Option<String>,
    /// What the role may do: `sql`, `catalogue`, `decide`, `cameras`, `kpi`, `audit`,
    /// `tokens`. Clients show only these; the hub enforces them on every request anyway.
    can: Vec<&'static str>,
}

/// `GET /api/v1/me`: the caller's own token metadata (never the token), for clients such as
/// the console that show who is signed in. Dashboard tokens may call it too.
#[utoipa::path(get, path = "/me", tag = "sharing",
    responses((status = OK, description = "The caller: principal, department and region names, what its role may do", body = Whoami)))]
pub async fn whoami(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let principal = caller.0;
    let department_name = state
        .catalog
        .department(&principal.department)
        .await?
        .map(|d| d.name);
    let region_name = principal
        .region
        .as_deref()
        .and_then(cityhub_catalog::region::region)
        .map(|r| r.name.to_string());
    let can = cityhub_catalog::access::capabilities(principal.role);
    Ok(Json(Whoami {
        principal,
        department_name,
        region_name,
        can,
    })
    .into_response())
}
