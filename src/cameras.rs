//! Routes of the camera registry: registration (one or a batch), curated overrides,
//! keepalives and NOTIFY events, lookup, search and statistics.
//!
//! Batches answer per item: each refused item is listed with its position, id, field and
//! reason, and the valid items are applied.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use cityhub_catalog::camera::{
    CameraQuery, CameraRecord, CameraSettings, CameraSources, CameraStats, ChannelFields,
    ChannelReport, FieldError, Registered, SignalKind, StatsGroup, now_ms, parse_signal,
    position_type_name, wgs84_to_gcj02,
};
use cityhub_catalog::camera_status::Status;
use cityhub_catalog::{AuditEvent, Role, gb28181, region};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::routes::{JsonBody, QueryParams, read_limited};
use crate::state::AppState;

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1_000;

/// The department a writer may act for (`None`: an admin, any department).
fn acting_for(caller: &Caller, doing: &str) -> Result<Option<String>, ApiError> {
    caller.require(&[Role::Admin, Role::Producer], doing)?;
    Ok((caller.0.role != Role::Admin).then(|| caller.0.department.clone()))
}

fn time_text(ms: i64) -> Option<String> {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// A channel as answers show it: its values, the decoded id, derived coordinates and
/// streams, and the live status at `now`.
pub fn camera_json(record: &CameraRecord, settings: &CameraSettings, now: i64) -> Value {
    let mut object = match serde_json::to_value(&record.fields) {
        Ok(Value::Object(object)) => object,
        _ => Map::new(),
    };
    let id = &record.id;
    let county = region::region(id.current_region_code);
    let (status, since) = record.live.status_and_since(now, settings.liveness);
    object.insert("id".into(), json!(id.id));
    let decoded = json!({
        "region_code": id.region_code,
        "region_name": id.region_name,
        "county_code": id.current_region_code,
        "county_name": county.map(|r| r.name),
        "industry": id.industry,
        "industry_name": id.industry_name,
        "type": id.type_code,
        "type_name": id.type_name,
        "network": id.network,
        "network_name": id.network_name,
        "serial": id.serial,
        "status": status.as_str(),
        "status_since": since.and_then(time_text),
        "last_keepalive_at": record.live.last_seen_at.and_then(time_text),
        "notified": record.live.notified.map(|n| n.as_str()),
        "complete": record.complete,
        "registered_at": time_text(record.registered_at),
        "updated_at": time_text(record.updated_at),
    });
    if let Value::Object(decoded) = decoded {
        object.extend(decoded);
    }
    if let (Some(lon), Some(lat)) = (record.fields.longitude, record.fields.latitude) {
        let (gcj_lon, gcj_lat) = wgs84_to_gcj02(lon, lat);
        object.insert(
            "gcj02".into(),
            json!({"longitude": gcj_lon, "latitude": gcj_lat}),
        );
    }
    if let Some(position) = record.fields.position_type {
        object.insert(
            "position_type_name".into(),
            json!(position_type_name(position)),
        );
    }
    let streams = settings.streams(record);
    if !streams.is_empty() {
        object.insert("streams".into(), json!(streams));
    }
    Value::Object(object)
}

fn item_error(err: &FieldError, item: usize, line: Option<usize>, id: Option<&str>) -> Value {
    let mut value = json!({
        "item": item,
        "field": err.field,
        "message": err.message,
    });
    if let Some(line) = line {
        value["line"] = json!(line);
    }
    if let Some(id) = id {
        value["id"] = json!(id);
    }
    value
}

/// One item of a batch: its NDJSON line (for NDJSON bodies) and its JSON value, or why it
/// is not JSON.
type BatchItem = (Option<usize>, Result<Value, FieldError>);

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

fn id_of(value: &Result<Value, FieldError>) -> Option<String> {
    value
        .as_ref()
        .ok()
        .and_then(|v| v.get("id"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn single_error(err: FieldError) -> ApiError {
    let message = format!("{}: {}", err.field, err.message);
    if err.forbidden {
        ApiError::forbidden(message)
    } else {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", message)
    }
}

/// `PUT /api/v1/cameras/{id}`: registers or updates one channel's reported values.
pub async fn put_camera(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let acting = acting_for(&caller, "registering a camera")?;
    let report = ChannelReport::from_json(body, Some(&id)).map_err(single_error)?;
    let mut outcomes = state
        .catalog
        .register_cameras(vec![report], acting, now_ms())
        .await?;
    let outcome = outcomes
        .pop()
        .ok_or_else(|| ApiError::internal("the registry answered no outcome"))?
        .map_err(single_error)?;
    state.audit.record(
        AuditEvent::by(&caller.0, "camera_register", "ok")
            .detail(json!({"id": id, "outcome": outcome})),
    );
    let status = match outcome {
        Registered::Created | Registered::Restored => StatusCode::CREATED,
        Registered::Updated => StatusCode::OK,
    };
    let answer = camera_answer(&state, &id).await?;
    Ok((status, Json(answer)).into_response())
}

async fn camera_answer(state: &AppState, id: &str) -> Result<Value, ApiError> {
    let (record, CameraSources { reported, curated }) =
        state.catalog.camera(id).await?.ok_or_else(|| {
            ApiError::not_found(format!("camera {id} is not registered (or was deleted)"))
        })?;
    let mut answer = camera_json(&record, &state.cameras, now_ms());
    answer["reported"] = json!(reported);
    answer["curated"] = json!(curated);
    Ok(answer)
}

/// `GET /api/v1/cameras/{id}`.
pub async fn get_camera(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    gb28181::parse(&id).map_err(|err| single_error(err.into()))?;
    Ok(Json(camera_answer(&state, &id).await?).into_response())
}

/// `PUT /api/v1/cameras/{id}/curated`: replaces the operators' overrides of a channel.
pub async fn put_curated(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    curate(state, caller, id, body).await
}

/// `DELETE /api/v1/cameras/{id}/curated`: drops every override.
pub async fn delete_curated(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    curate(state, caller, id, json!({})).await
}

async fn curate(
    state: AppState,
    caller: Caller,
    id: String,
    body: Value,
) -> Result<Response, ApiError> {
    let acting = acting_for(&caller, "curating a camera")?;
    gb28181::parse(&id).map_err(|err| single_error(err.into()))?;
    let Value::Object(object) = body else {
        return Err(ApiError::bad_request(
            "the curated values are a JSON object",
        ));
    };
    let curated = ChannelFields::from_json(object).map_err(single_error)?;
    curated.validate().map_err(single_error)?;
    state
        .catalog
        .curate_camera(id.clone(), curated.clone(), acting, now_ms())
        .await?;
    state.audit.record(
        AuditEvent::by(&caller.0, "camera_curate", "ok")
            .detail(json!({"id": id, "curated": curated})),
    );
    Ok(Json(camera_answer(&state, &id).await?).into_response())
}

/// `POST /api/v1/cameras/batch`: registers many channels; refused items are listed.
pub async fn register_batch(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let acting = acting_for(&caller, "registering cameras")?;
    let body = read_limited(body, &headers, state.config.server.max_body_bytes).await?;
    let items = batch_items(&headers, &body)?;
    let mut errors = Vec::new();
    let mut reports = Vec::with_capacity(items.len());
    let mut positions = Vec::with_capacity(items.len());
    let mut first_seen: std::collections::HashMap<String, usize> = Default::default();
    for (item, (line, value)) in items.into_iter().enumerate() {
        let id = id_of(&value);
        let report = value.and_then(|value| ChannelReport::from_json(value, None));
        match report {
            Ok(report) => {
                if let Some(first) = first_seen.get(&report.id.id) {
                    let err = FieldError::new(
                        "id",
                        format!("duplicate of item {first} in this batch; send each channel once"),
                    );
                    errors.push(item_error(&err, item, line, id.as_deref()));
                    continue;
                }
                first_seen.insert(report.id.id.clone(), item);
                positions.push((item, line, report.id.id.clone()));
                reports.push(report);
            }
            Err(err) => errors.push(item_error(&err, item, line, id.as_deref())),
        }
    }
    let outcomes = state
        .catalog
        .register_cameras(reports, acting, now_ms())
        .await?;
    let (mut created, mut updated, mut restored) = (0u64, 0u64, 0u64);
    for ((item, line, id), outcome) in positions.into_iter().zip(outcomes) {
        match outcome {
            Ok(Registered::Created) => created += 1,
            Ok(Registered::Updated) => updated += 1,
            Ok(Registered::Restored) => restored += 1,
            Err(err) => errors.push(item_error(&err, item, line, Some(&id))),
        }
    }
    errors.sort_by_key(|e| e["item"].as_u64());
    let accepted = created + updated + restored;
    metrics::counter!("cityhub_camera_registrations_total").increment(accepted);
    state.audit.record(
        AuditEvent::by(&caller.0, "camera_register", "ok").detail(json!({
            "accepted": accepted,
            "rejected": errors.len(),
        })),
    );
    tracing::info!(
        accepted,
        rejected = errors.len(),
        by = %caller.0.name,
        "Registered a batch of cameras."
    );
    Ok(Json(json!({
        "accepted": accepted,
        "created": created,
        "updated": updated,
        "restored": restored,
        "rejected": errors.len(),
        "errors": errors,
    }))
    .into_response())
}

/// `POST /api/v1/cameras/keepalive`: `[{id, at?}]`; a device id marks its channels.
pub async fn keepalive(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    signals(state, caller, headers, body, true).await
}

/// `POST /api/v1/cameras/events`: catalog NOTIFY events `[{id, event, at?, channel?}]`.
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    signals(state, caller, headers, body, false).await
}

async fn signals(
    state: AppState,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
    keepalive: bool,
) -> Result<Response, ApiError> {
    let doing = if keepalive {
        "sending keepalives"
    } else {
        "sending camera events"
    };
    let acting = acting_for(&caller, doing)?;
    let body = read_limited(body, &headers, state.config.server.max_body_bytes).await?;
    let items = batch_items(&headers, &body)?;
    let now = now_ms();
    let mut errors = Vec::new();
    let mut signals = Vec::with_capacity(items.len());
    let mut positions = Vec::with_capacity(items.len());
    for (item, (line, value)) in items.into_iter().enumerate() {
        let id = id_of(&value);
        match value.and_then(|value| parse_signal(value, now, keepalive)) {
            Ok(signal) => {
                positions.push((item, line, signal.id.clone()));
                signals.push(signal);
            }
            Err(err) => errors.push(item_error(&err, item, line, id.as_deref())),
        }
    }
    let events: Vec<&'static str> = signals
        .iter()
        .map(|s| match &s.kind {
            SignalKind::Keepalive => "keepalive",
            SignalKind::Event(event, _) => event.as_str(),
        })
        .collect();
    let outcomes = state
        .catalog
        .camera_signals(signals, acting, state.cameras.liveness)
        .await?;
    let mut accepted = 0u64;
    let mut marked = 0u64;
    for (((item, line, id), outcome), event) in positions.into_iter().zip(outcomes).zip(events) {
        match outcome {
            Ok(channels) => {
                accepted += 1;
                marked += channels as u64;
                if !keepalive {
                    metrics::counter!("cityhub_camera_events_total", "event" => event).increment(1);
                }
            }
            Err(err) => errors.push(item_error(&err, item, line, Some(&id))),
        }
    }
    if keepalive {
        metrics::counter!("cityhub_camera_keepalives_total").increment(accepted);
    }
    errors.sort_by_key(|e| e["item"].as_u64());
    Ok(Json(json!({
        "accepted": accepted,
        "channels_marked": marked,
        "rejected": errors.len(),
        "errors": errors,
    }))
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    region: Option<String>,
    status: Option<String>,
    industry: Option<String>,
    #[serde(rename = "type")]
    type_code: Option<String>,
    department: Option<String>,
    bbox: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
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
        })
    }
}

/// `GET /api/v1/cameras?region=&status=&industry=&type=&department=&bbox=&limit=&cursor=`.
pub async fn search(
    State(state): State<AppState>,
    _caller: Caller,
    QueryParams(params): QueryParams<SearchParams>,
) -> Result<Response, ApiError> {
    let mut query = params.query()?;
    let limit = query.limit;
    // One more than asked tells whether there is a next page.
    query.limit = limit + 1;
    let settings = &state.cameras;
    let now = now_ms();
    let mut records = state
        .catalog
        .search_cameras(query, now, settings.liveness)
        .await?;
    let next_cursor = if records.len() > limit {
        records.truncate(limit);
        records.last().map(|r| r.id.id.clone())
    } else {
        None
    };
    let cameras: Vec<Value> = records
        .iter()
        .map(|r| camera_json(r, settings, now))
        .collect();
    Ok(Json(json!({"cameras": cameras, "next_cursor": next_cursor})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsParams {
    group_by: Option<String>,
    window_hours: Option<String>,
}

fn group_name(group: StatsGroup, key: Option<&str>) -> Option<String> {
    let key = key?;
    match group {
        StatsGroup::Region => region::region(key).map(|r| r.name.to_string()),
        StatsGroup::Industry => key
            .parse()
            .ok()
            .map(|code| gb28181::industry_name(code).to_string()),
        StatsGroup::PositionType => key
            .parse()
            .ok()
            .and_then(position_type_name)
            .map(str::to_string),
        StatsGroup::Type => key
            .parse()
            .ok()
            .and_then(gb28181::type_name)
            .map(str::to_string),
        StatsGroup::Department => None,
    }
}

fn stats_json(group: StatsGroup, stats: &CameraStats) -> Value {
    let mut value = json!(stats);
    value["name"] = json!(group_name(group, stats.key.as_deref()));
    value
}

/// `GET /api/v1/cameras/stats?group_by=region|industry|position_type|type|department&window_hours=24`.
pub async fn stats(
    State(state): State<AppState>,
    _caller: Caller,
    QueryParams(params): QueryParams<StatsParams>,
) -> Result<Response, ApiError> {
    let group_text = params.group_by.as_deref().unwrap_or("region");
    let group = StatsGroup::parse(group_text).ok_or_else(|| {
        ApiError::bad_request(format!(
            "group_by: {group_text:?} is not one of {}",
            StatsGroup::NAMES
        ))
    })?;
    let hours: i64 = number_param(
        "window_hours",
        params.window_hours.as_deref(),
        "a number of hours",
    )?
    .unwrap_or(24);
    if !(1..=24 * 366).contains(&hours) {
        return Err(ApiError::bad_request(
            "window_hours: must be between 1 and 8784 (a year)",
        ));
    }
    let now = now_ms();
    let since = now - hours * 3_600_000;
    let (groups, overall) = state
        .catalog
        .camera_stats(group, since, now, state.cameras.liveness)
        .await?;
    let groups: Vec<Value> = groups.iter().map(|g| stats_json(group, g)).collect();
    let mut overall = json!(overall);
    if let Some(object) = overall.as_object_mut() {
        object.remove("key");
    }
    Ok(Json(json!({
        "group_by": group_text,
        "window": {"from": time_text(since), "to": time_text(now), "hours": hours},
        "groups": groups,
        "overall": overall,
    }))
    .into_response())
}

/// Keeps the status history caught up and the camera gauges fresh, every
/// `cameras.sweep_interval_secs`, until aborted. Reads never depend on it (the status is
/// computed when read).
pub async fn sweep_loop(state: AppState) {
    let interval = std::time::Duration::from_secs(state.config.cameras.sweep_interval_secs);
    let liveness = state.cameras.liveness;
    loop {
        let now = now_ms();
        // The gauges need the counts, not availability: an empty window skips reading
        // the history (the sweep before the statistics is the point of the call).
        match state
            .catalog
            .camera_stats(StatsGroup::Region, now, now, liveness)
            .await
        {
            Ok((groups, _)) => {
                for group in groups {
                    let region = group.key.unwrap_or_default();
                    metrics::gauge!("cityhub_cameras", "region" => region.clone(), "status" => "online")
                        .set(group.online as f64);
                    metrics::gauge!("cityhub_cameras", "region" => region.clone(), "status" => "offline")
                        .set(group.offline as f64);
                    metrics::gauge!("cityhub_cameras", "region" => region, "status" => "unknown")
                        .set(group.unknown as f64);
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "Could not sweep the camera registry; will retry.")
            }
        }
        tokio::time::sleep(interval).await;
    }
}
