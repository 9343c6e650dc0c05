//! Dashboard endpoint routes: save a definition, read a result (with `ETag`/304), listen
//! for new results (server-sent events). The work is in [`crate::endpoint_service`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use cityhub_catalog::endpoint::{EndpointSpec, Saved, check_name};
use cityhub_catalog::{Principal, Role};
use cityhub_query::ResultFormat;
use futures::Stream;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::endpoint_service::{Call, Endpoints, Loaded, tag_of};
use crate::error::ApiError;
use crate::routes::{JsonBody, QueryParams};
use crate::state::AppState;

/// `PUT /api/v1/endpoints/{name}`: the definition as JSON; an admin adds `owner`.
pub async fn save(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(mut object): JsonBody<serde_json::Map<String, Value>>,
) -> Result<Response, ApiError> {
    caller.require(
        &[Role::Admin, Role::Producer, Role::Analyst],
        "saving a dashboard endpoint",
    )?;
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
            cityhub_query::endpoint::Source::Dataset { name, .. } => name.clone(),
            cityhub_query::endpoint::Source::Catalog => "catalog".to_string(),
            cityhub_query::endpoint::Source::Live(what) => format!("live: {what}"),
        }).collect::<Vec<_>>(),
        "executions": loaded.executions(),
    })
}

/// The endpoint, if `caller` may call it: 404 when it does not exist, 403 when its owner
/// has not shared it with the caller's department.
async fn callable(
    endpoints: &Endpoints,
    caller: &Principal,
    name: &str,
) -> Result<Arc<Loaded>, ApiError> {
    let loaded = endpoints
        .get(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no endpoint is named {name:?}")))?;
    if caller.role != Role::Admin && !loaded.endpoint.callable_by(&caller.department) {
        return Err(ApiError::forbidden(format!(
            "endpoint {name} belongs to department {} and is not shared with department {}; \
             its owner can add {} to allowed_departments",
            loaded.endpoint.owner, caller.department, caller.department
        )));
    }
    Ok(loaded)
}

/// `GET /api/v1/endpoints`: the endpoints the caller may call (admins: all).
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
pub async fn definition(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let loaded = callable(&state.endpoints, &caller.0, &name).await?;
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

/// The formats endpoints answer in, and the `ETag` suffix of each.
fn endpoint_format(headers: &HeaderMap) -> Result<(ResultFormat, &'static str), ApiError> {
    let format =
        ResultFormat::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()))?;
    match format {
        ResultFormat::Json => Ok((format, "json")),
        ResultFormat::Csv => Ok((format, "csv")),
        ResultFormat::ArrowIpc => Ok((format, "arrow")),
        _ => Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            "endpoints answer in application/json, text/csv or application/vnd.apache.arrow.stream",
        )),
    }
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
pub async fn result(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    QueryParams(query): QueryParams<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let endpoints = &state.endpoints;
    let loaded = callable(endpoints, &caller.0, &name).await?;
    let (format, suffix) = endpoint_format(&headers)?;
    let call = endpoints.call(loaded, &query)?;
    let spec = &call.loaded.endpoint.spec;
    let cache_control = match spec.stale_while_revalidate_s {
        Some(window) => format!(
            "private, max-age={}, stale-while-revalidate={window}",
            spec.max_age_s
        ),
        None => format!("private, max-age={}", spec.max_age_s),
    };
    let headers_of = |response: &mut Response, etag: &str| -> Result<(), ApiError> {
        let h = response.headers_mut();
        h.insert(header::ETAG, header_value(etag)?);
        h.insert(header::CACHE_CONTROL, header_value(&cache_control)?);
        h.insert(
            header::VARY,
            HeaderValue::from_static("Accept, Authorization"),
        );
        Ok(())
    };
    let not_modified = |etag: &str| -> Result<Response, ApiError> {
        metrics::counter!("cityhub_endpoint_not_modified_total").increment(1);
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        headers_of(&mut response, etag)?;
        Ok(response)
    };
    let etag = format!("\"{}-{suffix}\"", call.tag);
    if matches(&headers, &etag) {
        return not_modified(&etag);
    }
    let result = endpoints.result(&call).await?;
    // A stale answer (stale-while-revalidate) carries the ETag of what it is.
    let etag = if result.key == call.key {
        etag
    } else {
        let stale = format!("\"{}-{suffix}\"", tag_of(&result.key));
        if matches(&headers, &stale) {
            return not_modified(&stale);
        }
        stale
    };
    let (body, grew) = result.body(format).await?;
    if grew {
        endpoints.cache.grew();
    }
    endpoints.audit_delivery(&caller.0, &call, &result);
    let mut response = (
        [(header::CONTENT_TYPE, format.content_type())],
        Body::from(body),
    )
        .into_response();
    headers_of(&mut response, &etag)?;
    Ok(response)
}

fn header_value(text: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(text).map_err(ApiError::internal_from)
}

/// `GET /api/v1/endpoints/{name}/events?param=value`: server-sent events. `result` events
/// carry the JSON result (`id` is its `ETag` key): the current one at once, then a new one
/// after each change of a source (debounced); comments keep the stream alive. A client
/// reconnecting with `Last-Event-ID` gets no copy of what it has.
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    QueryParams(query): QueryParams<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let endpoints = state.endpoints.clone();
    let loaded = callable(&endpoints, &caller.0, &name).await?;
    // Parameters are checked before the stream opens, so mistakes are a 400, not an event.
    endpoints.call(loaded, &query)?;
    let last_seen = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let heartbeat = Duration::from_secs(endpoints.config().heartbeat_secs);
    let stream = result_events(endpoints, caller.0, name, query, last_seen);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(heartbeat).text("heartbeat"))
        .into_response())
}

/// Counts open event streams.
struct OpenStream;

impl OpenStream {
    fn open() -> Self {
        metrics::gauge!("cityhub_endpoint_streams").increment(1.0);
        OpenStream
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        metrics::gauge!("cityhub_endpoint_streams").decrement(1.0);
    }
}

struct Listener {
    endpoints: Arc<Endpoints>,
    caller: Principal,
    name: String,
    query: Vec<(String, String)>,
    commits: tokio::sync::watch::Receiver<u64>,
    news: tokio::sync::watch::Receiver<u64>,
    closing: tokio::sync::watch::Receiver<bool>,
    last_tag: Option<String>,
    last_content: Option<u64>,
    live_until: Option<i64>,
    first: bool,
    ended: bool,
    _open: OpenStream,
}

fn result_events(
    endpoints: Arc<Endpoints>,
    caller: Principal,
    name: String,
    query: Vec<(String, String)>,
    last_seen: Option<String>,
) -> impl Stream<Item = Result<Event, Infallible>> + Send {
    let (mut commits, mut news) = endpoints.subscribe();
    commits.mark_unchanged();
    news.mark_unchanged();
    let closing = endpoints.closing();
    let listener = Listener {
        closing,
        endpoints,
        caller,
        name,
        query,
        commits,
        news,
        last_tag: last_seen,
        last_content: None,
        live_until: None,
        first: true,
        ended: false,
        _open: OpenStream::open(),
    };
    futures::stream::unfold(listener, |mut listener| async move {
        let event = listener.next_event().await?;
        Some((Ok(event), listener))
    })
}

impl Listener {
    /// Waits for the next result worth sending (or an error to report); `None` ends the
    /// stream.
    async fn next_event(&mut self) -> Option<Event> {
        if self.ended || *self.closing.borrow() {
            return None;
        }
        loop {
            if !self.first && !self.wait_for_change().await {
                return None;
            }
            self.first = false;
            let call = match self.call().await {
                Ok(call) => call,
                Err(err) => {
                    // The endpoint went away or is no longer shared: say so and stop.
                    self.ended = true;
                    return Some(error_event(&err));
                }
            };
            self.live_until = call.live_until;
            if self.last_tag.as_deref() == Some(call.tag.as_str()) {
                continue;
            }
            match self.endpoints.fresh(&call).await {
                Ok(result) => {
                    self.last_tag = Some(call.tag.clone());
                    if self.last_content == Some(result.content_hash) {
                        continue;
                    }
                    self.last_content = Some(result.content_hash);
                    self.endpoints.audit_delivery(&self.caller, &call, &result);
                    let data = String::from_utf8_lossy(result.json()).into_owned();
                    return Some(Event::default().event("result").id(call.tag).data(data));
                }
                // A failed computation is reported; the stream stays for the next change.
                Err(err) => return Some(error_event(&err)),
            }
        }
    }

    async fn call(&self) -> Result<Call, ApiError> {
        let loaded = callable(&self.endpoints, &self.caller, &self.name).await?;
        self.endpoints.call(loaded, &self.query)
    }

    /// Waits for a commit, other news, or the end of a live source's time bucket, then for
    /// the debounce pause. `false` when the hub is shutting down.
    async fn wait_for_change(&mut self) -> bool {
        let live = async {
            match self.live_until {
                Some(until) => {
                    let wait = until
                        .saturating_sub(cityhub_catalog::camera::now_ms())
                        .max(0);
                    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = self.commits.changed() => if changed.is_err() { return false },
            changed = self.news.changed() => if changed.is_err() { return false },
            _ = self.closing.wait_for(|closing| *closing) => return false,
            _ = live => {}
        }
        let pause = Duration::from_millis(self.endpoints.config().debounce_ms);
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        self.commits.mark_unchanged();
        self.news.mark_unchanged();
        true
    }
}

fn error_event(err: &ApiError) -> Event {
    Event::default()
        .event("error")
        .data(json!({"error": {"code": err.code, "message": err.message}}).to_string())
}
