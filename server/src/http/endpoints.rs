//! Dashboard endpoint routes: save a definition, read a result (with `ETag`/304), listen
//! for new results (server-sent events). The work is [`Endpoints`]'.
//!
//! [`Endpoints`]: cityhub_query::endpoint::Endpoints

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use cityhub_catalog::endpoint::{EndpointSpec, Saved, check_name};
use cityhub_query::ResultFormat;
use cityhub_query::endpoint::{Answer, EndpointEvent, Loaded, Source};
use futures::StreamExt;
use serde_json::{Value, json};

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{JsonBody, QueryParams};
use super::openapi::Binary;
use crate::state::AppState;

/// `PUT /api/v1/endpoints/{name}`: the definition as JSON; an admin adds `owner`.
#[utoipa::path(put, operation_id = "save_endpoint", path = "/endpoints/{name}", tag = "endpoints",
    params(("name" = String, Path, description = "The endpoint's name", example = "camera-online-rate")),
    request_body(content = EndpointSpec, description = "The definition; an admin adds `owner` (a department code)"),
    responses(
        (status = CREATED, description = "A new endpoint: its definition, `saved: created`", body = Object),
        (status = OK, description = "A new version (`saved: updated`) or the same definition (`saved: unchanged`)", body = Object)))]
pub async fn save(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(mut object): JsonBody<serde_json::Map<String, Value>>,
) -> Result<Response, ApiError> {
    check_name(&name).map_err(|err| ApiError::bad_request(err.to_string()))?;
    let owner = match object.remove("owner") {
        None => None,
        Some(Value::String(owner)) => Some(owner),
        Some(other) => {
            return Err(invalid(
                "owner",
                &format!("must be a department code, not {other}"),
            ));
        }
    };
    let spec: EndpointSpec = serde_path_to_error::deserialize(Value::Object(object))
        .map_err(|err| invalid(&err.path().to_string(), &err.inner().to_string()))?;
    spec.check()
        .map_err(|err| invalid(&err.field, &err.message))?;

    let (loaded, saved) = state.endpoints.save(&caller.0, &name, owner, spec).await?;
    let status = match saved {
        Saved::Created => StatusCode::CREATED,
        Saved::Updated | Saved::Unchanged => StatusCode::OK,
    };
    let mut answer = definition_json(&loaded);
    answer["saved"] = match saved {
        Saved::Created => "created",
        Saved::Updated => "updated",
        Saved::Unchanged => "unchanged",
    }
    .into();
    Ok((status, axum::Json(answer)).into_response())
}

fn invalid(field: &str, message: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_field",
        format!("{field}: {message}"),
    )
}

fn definition_json(loaded: &Loaded) -> Value {
    let endpoint = &loaded.endpoint;
    json!({
        "name": endpoint.name,
        "version": endpoint.version,
        "owner": endpoint.owner,
        "created_at": endpoint.created_at,
        "sql": endpoint.spec.sql,
        "description": endpoint.spec.description,
        "params": endpoint.spec.params,
        "max_age_s": endpoint.spec.max_age_s,
        "refresh_s": endpoint.spec.refresh_s,
        "allowed_departments": endpoint.spec.allowed_departments,
        "stale_while_revalidate_s": endpoint.spec.stale_while_revalidate_s,
        "sources": loaded.sources.iter().map(|s| match s {
            Source::Dataset { name, .. } => name.clone(),
            Source::Catalog => "catalog".to_string(),
            Source::Live(what) => format!("live: {what}"),
            Source::CallerRegion => "caller region".to_string(),
        }).collect::<Vec<_>>(),
        "executions": loaded.executions(),
    })
}

/// `GET /api/v1/endpoints`: the endpoints the caller may call (admins: all).
#[utoipa::path(get, operation_id = "list_endpoints", path = "/endpoints", tag = "endpoints",
    responses((status = OK, description = "`{endpoints: [...]}`: those the caller may call, with sources and executions", body = Object)))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let answer: Vec<Value> = state
        .endpoints
        .list(&caller.0)
        .await?
        .iter()
        .map(|loaded| definition_json(loaded))
        .collect();
    Ok(axum::Json(json!({ "endpoints": answer })).into_response())
}

/// `GET /api/v1/endpoints/{name}/definition`: the current definition and every version.
#[utoipa::path(get, operation_id = "endpoint_definition", path = "/endpoints/{name}/definition", tag = "endpoints",
    params(("name" = String, Path, description = "The endpoint's name", example = "camera-online-rate")),
    responses((status = OK, description = "The current definition, its sources, executions and every version", body = Object)))]
pub async fn definition(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let loaded = state.endpoints.callable(&caller.0, &name).await?;
    let mut answer = definition_json(&loaded);
    let history = state.catalog.endpoint_history(&name).await?;
    answer["versions"] = history
        .iter()
        .map(|e| {
            json!({
                "version": e.version,
                "owner": e.owner,
                "created_at": e.created_at,
                "created_by": e.created_by,
                "sql": e.spec.sql,
            })
        })
        .collect();
    Ok(axum::Json(answer).into_response())
}

/// Whether an `If-None-Match` header names `etag` (or is `*`).
fn matches(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*")
}

/// `GET /api/v1/endpoints/{name}?param=value`: the result, with `ETag` and
/// `Cache-Control`; 304 when `If-None-Match` names the current `ETag`.
#[utoipa::path(get, operation_id = "endpoint_result", path = "/endpoints/{name}", tag = "endpoints",
    params(("name" = String, Path, description = "The endpoint's name", example = "camera-online-rate"),
        ("params" = Option<Object>, Query, style = Form, explode, description = "The endpoint's declared parameters, `?name=value`"),
        ("Accept" = Option<String>, Header, description = "`application/json` (default), `text/csv`, `application/x-ndjson` or `application/vnd.apache.arrow.stream`"),
        ("If-None-Match" = Option<String>, Header, description = "An `ETag` of an earlier answer: 304 while it is current")),
    responses(
        (status = OK, description = "The result, with `ETag` and `Cache-Control`", content(
            (Vec<Object> = "application/json"), (String = "text/csv"), (String = "application/x-ndjson"), (Binary = "application/vnd.apache.arrow.stream"))),
        (status = NOT_MODIFIED, description = "The result named by `If-None-Match` is current")))]
pub async fn result(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    QueryParams(query): QueryParams<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let format =
        ResultFormat::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()))?;
    let answer = state
        .endpoints
        .answer(&caller.0, &name, &query, format, |etag| {
            matches(&headers, etag)
        })
        .await?;
    let (mut response, etag, cache_control) = match answer {
        Answer::NotModified {
            etag,
            cache_control,
        } => (
            StatusCode::NOT_MODIFIED.into_response(),
            etag,
            cache_control,
        ),
        Answer::Body {
            etag,
            cache_control,
            body,
        } => (
            (
                [(header::CONTENT_TYPE, format.content_type())],
                Body::from(body),
            )
                .into_response(),
            etag,
            cache_control,
        ),
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, header_value(&etag)?);
    h.insert(header::CACHE_CONTROL, header_value(&cache_control)?);
    h.insert(
        header::VARY,
        HeaderValue::from_static("Accept, Authorization"),
    );
    Ok(response)
}

fn header_value(text: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(text).map_err(ApiError::internal_from)
}

/// `GET /api/v1/endpoints/{name}/events?param=value`: server-sent events. `result` events
/// carry the JSON result (`id` is its `ETag` key): the current one at once, then a new one
/// after each change of a source (debounced); comments keep the stream alive. A client
/// reconnecting with `Last-Event-ID` gets no copy of what it has.
#[utoipa::path(get, operation_id = "endpoint_events", path = "/endpoints/{name}/events", tag = "endpoints",
    params(("name" = String, Path, description = "The endpoint's name", example = "camera-online-rate"),
        ("params" = Option<Object>, Query, style = Form, explode, description = "The endpoint's declared parameters, `?name=value`")),
    responses((status = OK, description = "Server-sent events: `event: result` with the result now and after each change (`id` is its ETag), heartbeats", content_type = "text/event-stream", body = String)))]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    QueryParams(query): QueryParams<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let last_seen = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let heartbeat = Duration::from_secs(state.endpoints.config().heartbeat_secs);
    let stream = state
        .endpoints
        .listen(caller.0, name, query, last_seen)
        .await?
        .map(|event| Ok::<_, Infallible>(sse_event(event)));
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(heartbeat).text("heartbeat"))
        .into_response())
}

fn sse_event(event: EndpointEvent) -> Event {
    match event {
        EndpointEvent::Result { id, json } => Event::default().event("result").id(id).data(json),
        EndpointEvent::Error(err) => {
            let err = ApiError::from(err);
            Event::default()
                .event("error")
                .data(json!({"error": {"code": err.code, "message": err.message}}).to_string())
        }
    }
}
