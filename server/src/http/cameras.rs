//! Routes of the camera registry. Bodies and query strings are parsed here; the work is
//! [`CameraRegistry`](cityhub_catalog::camera::CameraRegistry)'s.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use cityhub_catalog::CatalogError;
use cityhub_catalog::camera::CameraRegistry;
use cityhub_catalog::camera::registry::{BatchItem, ChangesAnswer};
use cityhub_catalog::camera::status::Status;
use cityhub_catalog::camera::{
    CameraQuery, ChannelFields, FieldError, Registered, ReportKind, StatsGroup, StatsWindow,
};
use cityhub_catalog::gb28181;
use cityhub_catalog::region::Scope;
use cityhub_query::endpoint::events::OpenStream;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{JsonBody, QueryParams, read_limited};
use crate::state::AppState;

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1_000;

/// The items of a batch body: a JSON array, or NDJSON (one object per line). A line that
/// is not JSON is that item's error; a body that is not an array is the request's.
fn batch_items(headers: &HeaderMap, body: &[u8]) -> Result<Vec<BatchItem>, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let text = std::str::from_utf8(body)
        .map_err(|err| ApiError::bad_request(format!("the body is not UTF-8: {err}")))?;
    let essence = content_type.split(';').next().unwrap_or("").trim();
    match essence {
        "application/x-ndjson" | "application/jsonl" | "application/json-lines" => Ok(text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(index, line)| {
                let value = serde_json::from_str::<Value>(line)
                    .map_err(|err| FieldError::new("line", format!("not a JSON object: {err}")));
                (Some(index + 1), value)
            })
            .collect()),
        "application/json" | "" => {
            let raw: Vec<&RawValue> = serde_json::from_str(text).map_err(|err| {
                ApiError::bad_request(format!(
                    "the body must be a JSON array of objects (or NDJSON with Content-Type: \
                     application/x-ndjson): {err}"
                ))
            })?;
            Ok(raw
                .into_iter()
                .map(|item| {
                    let value = serde_json::from_str::<Value>(item.get())
                        .map_err(|err| FieldError::new("item", err.to_string()));
                    (None, value)
                })
                .collect())
        }
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("{other:?}: send application/json (an array) or application/x-ndjson"),
        )),
    }
}

/// The items of a batch request's body, read up to the server's body limit.
async fn read_batch(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<BatchItem>, ApiError> {
    let body = read_limited(body, headers, state.config.server.max_body_bytes).await?;
    batch_items(headers, &body)
}

/// `PUT /api/v1/cameras/{id}`: registers or updates one channel's reported values.
#[utoipa::path(put, operation_id = "put_camera", path = "/cameras/{id}", tag = "cameras",
    params(("id" = String, Path, description = "The channel's 20-digit GB/T 28181 id", example = "51102500001320000017")),
    request_body(content = ChannelFields, description = "The channel's reported values (an `id` in the body must equal the URL's)"),
    responses(
        (status = CREATED, description = "A new (or restored) channel, as `GET` shows it", body = Object),
        (status = OK, description = "An updated channel, as `GET` shows it", body = Object)))]
pub async fn put_camera(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let (outcome, answer) = state.cameras.register(&caller.0, &id, body).await?;
    let status = match outcome {
        Registered::Created | Registered::Restored => StatusCode::CREATED,
        Registered::Updated => StatusCode::OK,
    };
    Ok((status, Json(answer)).into_response())
}

/// `GET /api/v1/cameras/{id}`.
#[utoipa::path(get, operation_id = "get_camera", path = "/cameras/{id}", tag = "cameras",
    params(("id" = String, Path, description = "The channel's 20-digit GB/T 28181 id", example = "51102500001320000017")),
    responses((status = OK, description = "The channel: decoded id, status and since when, GCJ-02 position, stream URLs, its `reported` and `curated` values", body = Object)))]
pub async fn get_camera(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let scope = caller.0.scope();
    Ok(Json(state.cameras.camera(&id, scope.as_ref()).await?).into_response())
}

/// `PUT /api/v1/cameras/{id}/curated`: replaces the operators' overrides of a channel.
#[utoipa::path(put, operation_id = "put_camera_curated", path = "/cameras/{id}/curated", tag = "cameras",
    params(("id" = String, Path, description = "The channel's 20-digit GB/T 28181 id", example = "51102500001320000017")),
    request_body(content = ChannelFields, description = "The operators' overrides, replacing the previous ones"),
    responses((status = OK, description = "The channel with its overrides", body = Object)))]
pub async fn put_curated(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    Ok(Json(state.cameras.curate(&caller.0, &id, body).await?).into_response())
}

/// `DELETE /api/v1/cameras/{id}/curated`: drops every override.
#[utoipa::path(delete, operation_id = "delete_camera_curated", path = "/cameras/{id}/curated", tag = "cameras",
    params(("id" = String, Path, description = "The channel's 20-digit GB/T 28181 id", example = "51102500001320000017")),
    responses((status = OK, description = "The channel without overrides", body = Object)))]
pub async fn delete_curated(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.cameras.curate(&caller.0, &id, json!({})).await?).into_response())
}

/// `POST /api/v1/cameras/batch`: registers many channels; refused items are listed.
#[utoipa::path(post, operation_id = "register_cameras", path = "/cameras/batch", tag = "cameras",
    request_body(description = "Channel records `{id, ...}`, as a JSON array or NDJSON", content(
        (Vec<ChannelRecord> = "application/json"), (String = "application/x-ndjson"))),
    responses((status = OK, description = "`{accepted, created, updated, restored, rejected, errors: [{item, line?, id, field, message}]}`", body = Object)))]
pub async fn register_batch(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let items = read_batch(&state, &headers, body).await?;
    Ok(Json(state.cameras.register_batch(&caller.0, items).await?).into_response())
}

/// `POST /api/v1/cameras/keepalive`: `[{id, at?}]`; a device id marks its channels.
#[utoipa::path(post, operation_id = "camera_keepalive", path = "/cameras/keepalive", tag = "cameras",
    request_body(description = "`[{id, at?}]` (`at`: RFC 3339 or Unix ms; default now); a device id marks its channels", content(
        (Vec<Object> = "application/json"), (String = "application/x-ndjson"))),
    responses((status = OK, description = "What was accepted and which items were refused, by field", body = Object)))]
pub async fn keepalive(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    signals(state, caller, headers, body, true).await
}

/// `POST /api/v1/cameras/events`: catalog NOTIFY events `[{id, event, at?, channel?}]`.
#[utoipa::path(post, operation_id = "camera_events", path = "/cameras/events", tag = "cameras",
    request_body(description = "`[{id, event, at?, channel?}]`, event ON, OFF, VLOST, DEFECT, ADD, DEL or UPDATE", content(
        (Vec<Object> = "application/json"), (String = "application/x-ndjson"))),
    responses((status = OK, description = "What was accepted and which items were refused, by field", body = Object)))]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    signals(state, caller, headers, body, false).await
}

/// `POST /api/v1/cameras/alarms`: GB/T 28181 alarms of registered channels and devices.
#[utoipa::path(post, operation_id = "camera_alarms", path = "/cameras/alarms", tag = "cameras",
    request_body(description = "`[{id, priority, method, type?, at, description?, longitude?, latitude?}]`: AlarmPriority 1-4, AlarmMethod 1-7, AlarmType of methods 2, 5 and 6; `at` RFC 3339, GB/T 28181 local time (Beijing) or Unix ms", content(
        (Vec<Object> = "application/json"), (String = "application/x-ndjson"))),
    responses((status = OK, description = "`{accepted, duplicates, rejected, errors: [{item, line?, id, field, message}]}`; an alarm sent before is a duplicate, kept once", body = Object)))]
pub async fn alarms(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    reports(state, caller, headers, body, ReportKind::Alarm).await
}

/// `POST /api/v1/cameras/positions`: MobilePosition reports of registered devices.
#[utoipa::path(post, operation_id = "camera_positions", path = "/cameras/positions", tag = "cameras",
    request_body(description = "`[{id, at, longitude, latitude, speed?, direction?, altitude?}]`: WGS-84 degrees, km/h, degrees clockwise from north, metres", content(
        (Vec<Object> = "application/json"), (String = "application/x-ndjson"))),
    responses((status = OK, description = "`{accepted, duplicates, rejected, errors: [{item, line?, id, field, message}]}`; a position of a device and time sent before is a duplicate, kept once", body = Object)))]
pub async fn positions(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    reports(state, caller, headers, body, ReportKind::Position).await
}

async fn reports(
    state: AppState,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
    kind: ReportKind,
) -> Result<Response, ApiError> {
    let items = read_batch(&state, &headers, body).await?;
    Ok(Json(state.cameras.reports(&caller.0, items, kind).await?).into_response())
}

async fn signals(
    state: AppState,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
    keepalive: bool,
) -> Result<Response, ApiError> {
    let items = read_batch(&state, &headers, body).await?;
    Ok(Json(state.cameras.signals(&caller.0, items, keepalive).await?).into_response())
}

fn number_param<T: std::str::FromStr>(
    name: &str,
    value: Option<&str>,
    meaning: &str,
) -> Result<Option<T>, ApiError> {
    value
        .map(|text| {
            text.parse::<T>()
                .map_err(|_| ApiError::bad_request(format!("{name}: {text:?} is not {meaning}")))
        })
        .transpose()
}

/// One channel record of a batch: its id and its reported values. The registry reads
/// each record as JSON ([`ChannelReport::from_json`]); this type is its shape.
///
/// [`ChannelReport::from_json`]: cityhub_catalog::camera::ChannelReport::from_json
#[derive(serde::Serialize, ToSchema)]
pub struct ChannelRecord {
    /// The channel's 20-digit GB/T 28181 id.
    #[schema(example = "51102500001320000017")]
    pub id: String,
    #[serde(flatten)]
    pub fields: ChannelFields,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// A GB/T 2260 region code at any level: `51`, `5110`, `511025`.
    region: Option<String>,
    /// `online`, `offline` or `unknown`.
    status: Option<String>,
    /// The industry code of the id (digits 11-12).
    industry: Option<String>,
    /// The type code of the id (digits 11-13), e.g. `132`.
    #[serde(rename = "type")]
    type_code: Option<String>,
    /// The owning department's code.
    department: Option<String>,
    /// `minLon,minLat,maxLon,maxLat` in WGS-84 degrees.
    bbox: Option<String>,
    /// Channels in a page, 1..1000 (default 100).
    limit: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

impl SearchParams {
    fn query(self) -> Result<CameraQuery, ApiError> {
        if let Some(region) = &self.region
            && (region.len() < 2
                || region.len() > 6
                || region.len() % 2 != 0
                || !region.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(ApiError::bad_request(format!(
                "region: {region:?} is not a GB/T 2260 code (51, 5110, 511000, 511025, ...)"
            )));
        }
        let status = self
            .status
            .as_deref()
            .map(|text| {
                Status::parse(text).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "status: {text:?} is not online, offline or unknown"
                    ))
                })
            })
            .transpose()?;
        let bbox = self
            .bbox
            .as_deref()
            .map(|text| {
                let numbers: Vec<f64> = text
                    .split(',')
                    .map(|n| n.trim().parse::<f64>())
                    .collect::<Result<_, _>>()
                    .map_err(|_| {
                        ApiError::bad_request(format!(
                            "bbox: {text:?} is not minLon,minLat,maxLon,maxLat"
                        ))
                    })?;
                match numbers[..] {
                    [min_lon, min_lat, max_lon, max_lat]
                        if min_lon <= max_lon
                            && min_lat <= max_lat
                            && (-180.0..=180.0).contains(&min_lon)
                            && (-180.0..=180.0).contains(&max_lon)
                            && (-90.0..=90.0).contains(&min_lat)
                            && (-90.0..=90.0).contains(&max_lat) =>
                    {
                        Ok([min_lon, min_lat, max_lon, max_lat])
                    }
                    _ => Err(ApiError::bad_request(format!(
                        "bbox: {text:?} must be minLon,minLat,maxLon,maxLat in WGS-84 degrees, \
                         minimums first"
                    ))),
                }
            })
            .transpose()?;
        let limit = number_param::<usize>("limit", self.limit.as_deref(), "a number")?
            .unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ApiError::bad_request(format!(
                "limit: {limit} is outside 1..{MAX_PAGE}"
            )));
        }
        if let Some(cursor) = &self.cursor {
            gb28181::parse(cursor).map_err(|_| {
                ApiError::bad_request("cursor: use the next_cursor of the previous page")
            })?;
        }
        Ok(CameraQuery {
            region: self.region,
            status,
            industry: number_param(
                "industry",
                self.industry.as_deref(),
                "an industry code (00-99)",
            )?,
            type_code: number_param("type", self.type_code.as_deref(), "a type code (e.g. 132)")?,
            department: self.department,
            bbox,
            after: self.cursor,
            limit,
            scope: None,
        })
    }
}

/// `GET /api/v1/cameras?region=&status=&industry=&type=&department=&bbox=&limit=&cursor=`.
#[utoipa::path(get, operation_id = "search_cameras", path = "/cameras", tag = "cameras",
    params(SearchParams),
    responses((status = OK, description = "`{cameras: [...], next_cursor}`, ordered by id", body = Object)))]
pub async fn search(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(params): QueryParams<SearchParams>,
) -> Result<Response, ApiError> {
    let query = CameraQuery {
        scope: caller.0.scope(),
        ..params.query()?
    };
    Ok(Json(state.cameras.search(query).await?).into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ChangesParams {
    /// Where to read from: the `next_cursor` of the previous page, or the `change_cursor` of
    /// a listing's first page (`GET /api/v1/cameras`); 0 (default) for every change kept.
    since: Option<String>,
    /// How many changes to read, 1..1000 (default 100). A region-scoped caller may get fewer
    /// (other regions' changes are skipped); `more` says whether to read on.
    limit: Option<String>,
}

/// How often a stream of changes looks for new ones (changes made by other nodes and
/// Kafka feeds reach no in-process notice, so the stream polls).
const CHANGE_POLL: Duration = Duration::from_secs(1);

/// `GET /api/v1/cameras/changes?since=&limit=`: the catalogue's changes in order, or with
/// `Accept: text/event-stream` the same as server-sent events that go on as changes come.
#[utoipa::path(get, operation_id = "camera_changes", path = "/cameras/changes", tag = "cameras",
    params(ChangesParams),
    responses(
        (status = OK, description = "`{changes: [{seq, id, at, change, camera | status, status_since, notified, cause}], next_cursor, more}`: `change` is registered, updated, restored or curated (with the whole `camera` as `GET /api/v1/cameras` lists it, less `last_keepalive_at`), status, or deleted (`left_scope` when a town's channel moved out of it). As server-sent events: `event: change` (`id` is its `seq`; reconnect with `Last-Event-ID`), heartbeats, and `event: resync` if the consumer falls behind retention", body = Object),
        (status = GONE, description = "The cursor is older than what `cameras.change_retention_days` kept: list `GET /api/v1/cameras` again and follow from its `change_cursor`", body = Object)))]
pub async fn changes(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(params): QueryParams<ChangesParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let last_event = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let since = number_param::<i64>(
        "since",
        last_event.or(params.since.as_deref()),
        "a change cursor (a whole number from next_cursor or change_cursor)",
    )?
    .unwrap_or(0);
    if since < 0 {
        return Err(ApiError::bad_request(format!(
            "since: {since} is not a change cursor; cursors start at 0"
        )));
    }
    let limit = number_param::<usize>("limit", params.limit.as_deref(), "a whole number")?
        .unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit: {limit} is outside 1..{MAX_PAGE}"
        )));
    }
    let scope = caller.0.scope();
    // The first page is read before answering, so that a cursor behind retention is a 410
    // either way.
    let first = state.cameras.changes(scope.as_ref(), since, limit).await?;
    let wants_events = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"));
    if !wants_events {
        return Ok(Json(first).into_response());
    }
    let mut feed = ChangeStream {
        cameras: state.cameras.clone(),
        scope,
        cursor: since,
        limit,
        queue: VecDeque::new(),
        more: false,
        ended: false,
        _open: OpenStream::open("cityhub_camera_change_streams"),
    };
    feed.take(first);
    let events = futures::stream::unfold(feed, |mut feed| async move {
        loop {
            if let Some(event) = feed.queue.pop_front() {
                return Some((Ok::<_, Infallible>(event), feed));
            }
            if feed.ended {
                return None;
            }
            if !feed.more {
                tokio::time::sleep(CHANGE_POLL).await;
            }
            let page = feed
                .cameras
                .changes(feed.scope.as_ref(), feed.cursor, feed.limit)
                .await;
            match page {
                Ok(page) => feed.take(page),
                Err(err) => {
                    // The consumer reconnects (with Last-Event-ID) or, told to resync,
                    // lists the registry again; either way this stream ends here.
                    let kind = match err {
                        CatalogError::ResyncRequired(_) => "resync",
                        _ => "error",
                    };
                    let err = ApiError::from(err);
                    let data = json!({"error": {"code": err.code, "message": err.message}});
                    feed.queue
                        .push_back(Event::default().event(kind).data(data.to_string()));
                    feed.ended = true;
                }
            }
        }
    });
    Ok(Sse::new(events)
        .keep_alive(
            KeepAlive::new()
                .interval(Duration::from_secs(15))
                .text("heartbeat"),
        )
        .into_response())
}

/// Where a stream of changes is, and the events read but not yet sent.
struct ChangeStream {
    cameras: CameraRegistry,
    scope: Option<Scope>,
    cursor: i64,
    limit: usize,
    queue: VecDeque<Event>,
    /// The last page was full: read on at once.
    more: bool,
    ended: bool,
    _open: OpenStream,
}

impl ChangeStream {
    fn take(&mut self, page: ChangesAnswer) {
        for change in page.changes {
            let event = Event::default()
                .event("change")
                .id(change["seq"].to_string())
                .data(change.to_string());
            self.queue.push_back(event);
        }
        self.cursor = page.next_cursor;
        self.more = page.more;
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StatsParams {
    /// `region` (default), `industry`, `position_type`, `type` or `department`.
    group_by: Option<String>,
    /// Hours back over which availability (完好率) is measured, 1..8784 (default 24),
    /// walked from the status history.
    window_hours: Option<String>,
    /// Instead of hours: the last whole Beijing-time days through yesterday, from the daily
    /// roll-ups (`days=30`).
    days: Option<String>,
    /// Instead of hours: the first whole day (`2026-11-01`), through `to` or yesterday.
    from: Option<String>,
    /// The last whole day (`2026-11-30`), with `from`.
    to: Option<String>,
}

/// `GET /api/v1/cameras/stats?group_by=region|industry|position_type|type|department&window_hours=24`
/// (or `&days=30`, or `&from=2026-11-01&to=2026-11-30`).
#[utoipa::path(get, operation_id = "camera_stats", path = "/cameras/stats", tag = "cameras",
    params(StatsParams),
    responses((status = OK, description = "Per group and `overall`: total, online, offline, unknown, online_rate, availability, complete, completeness; `window` says what availability covers", body = Object)))]
pub async fn stats(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(params): QueryParams<StatsParams>,
) -> Result<Response, ApiError> {
    let group_text = params.group_by.as_deref().unwrap_or("region");
    let group = StatsGroup::parse(group_text).ok_or_else(|| {
        ApiError::bad_request(format!(
            "group_by: {group_text:?} is not one of {}",
            StatsGroup::NAMES
        ))
    })?;
    let window = StatsWindow::from_params(
        params.window_hours.as_deref(),
        params.days.as_deref(),
        params.from.as_deref(),
        params.to.as_deref(),
    )
    .map_err(|err| ApiError::bad_request(format!("{}: {}", err.field, err.message)))?;
    let scope = caller.0.scope();
    Ok(Json(
        state
            .cameras
            .stats(group, group_text, window, scope)
            .await?,
    )
    .into_response())
}
