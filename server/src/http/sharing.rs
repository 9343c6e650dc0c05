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
use cityhub_catalog::{AuditFilter, ShareRequest, ShareStatus};
use serde::Deserialize;
use serde_json::Value;

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{JsonBody, QueryParams};
use crate::state::AppState;

/// `POST /api/v1/tokens` (admin): the token is in this answer and nowhere else.
pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<NewToken>,
) -> Result<Response, ApiError> {
    let (principal, token) = state.sharing.create_token(&caller.0, body, "api").await?;
    let mut body = serde_json::to_value(&principal).map_err(ApiError::internal_from)?;
    body["token"] = token.plaintext.into();
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `GET /api/v1/tokens` (admin): every token's metadata, never the token.
pub async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let now = Utc::now();
    let tokens: Vec<Value> = state
        .sharing
        .tokens(&caller.0)
        .await?
        .into_iter()
        .map(|principal| {
            let mut value = serde_json::to_value(&principal).unwrap_or_default();
            value["status"] = principal.token_status(now).into();
            value
        })
        .collect();
    Ok(Json(tokens).into_response())
}

/// `DELETE /api/v1/tokens/{id}`: admins revoke any token, anyone their own.
pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    Ok(Json(state.sharing.revoke_token(&caller.0, id).await?).into_response())
}

/// `POST /api/v1/datasets/{name}/share-requests`: a department applies to read a dataset.
pub async fn apply(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<Application>,
) -> Result<Response, ApiError> {
    let request = state.sharing.apply(&caller.0, &name, body).await?;
    Ok((
        StatusCode::CREATED,
        Json(with_overdue(&request, Utc::now())),
    )
        .into_response())
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
    let now = Utc::now();
    let requests: Vec<Value> = state
        .sharing
        .requests(&caller.0, status)
        .await?
        .iter()
        .map(|request| with_overdue(request, now))
        .collect();
    Ok(Json(requests).into_response())
}

/// `GET /api/v1/share-requests/{id}`: a request the caller is party to.
pub async fn get_request(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let request = state.sharing.request(&caller.0, id).await?;
    Ok(Json(with_overdue(&request, Utc::now())).into_response())
}

/// `POST /api/v1/share-requests/{id}/approve`
pub async fn approve(
    state: State<AppState>,
    caller: Caller,
    id: Path<i64>,
    JsonBody(body): JsonBody<ShareAnswer>,
) -> Result<Response, ApiError> {
    decide(state, caller, id, body, true).await
}

/// `POST /api/v1/share-requests/{id}/reject`: a reason is required.
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
    let mut answer = with_overdue(&request, Utc::now());
    answer["grant"] = serde_json::to_value(&grant).map_err(ApiError::internal_from)?;
    Ok(Json(answer).into_response())
}

/// `GET /api/v1/grants`: grants the caller's department holds and gives (admins: all),
/// each marked `active`.
pub async fn list_grants(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let now = Utc::now();
    let body: Vec<Value> = state
        .sharing
        .grants(&caller.0)
        .await?
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
    Ok(Json(
        state
            .sharing
            .revoke_grant(&caller.0, id, &body.reason)
            .await?,
    )
    .into_response())
}

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
    let filter = AuditFilter {
        since: query.since,
        principal: query.principal,
        dataset: query.dataset,
        action: query.action,
        after_id: query.after,
        limit: query.limit.unwrap_or(1000).clamp(1, 10_000),
    };
    Ok(Json(state.sharing.audit_entries(&caller.0, filter).await?).into_response())
}
