//! Routes of the camera registry. Bodies and query strings are parsed here; the work is
//! [`CameraRegistry`](cityhub_catalog::camera::CameraRegistry)'s.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cityhub_catalog::camera::registry::BatchItem;
use cityhub_catalog::camera::status::Status;
use cityhub_catalog::camera::{CameraQuery, FieldError, Registered, StatsGroup};
use cityhub_catalog::gb28181;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

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

/// `PUT /api/v1/cameras/{id}`: registers or updates one channel's reported values.
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
pub async fn get_camera(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let scope = caller.0.scope();
    Ok(Json(state.cameras.camera(&id, scope.as_ref()).await?).into_response())
}

/// `PUT /api/v1/cameras/{id}/curated`: replaces the operators' overrides of a channel.
pub async fn put_curated(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    Ok(Json(state.cameras.curate(&caller.0, &id, body).await?).into_response())
}

/// `DELETE /api/v1/cameras/{id}/curated`: drops every override.
pub async fn delete_curated(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.cameras.curate(&caller.0, &id, json!({})).await?).into_response())
}

/// `POST /api/v1/cameras/batch`: registers many channels; refused items are listed.
pub async fn register_batch(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_limited(body, &headers, state.config.server.max_body_bytes).await?;
    let items = batch_items(&headers, &body)?;
    Ok(Json(state.cameras.register_batch(&caller.0, items).await?).into_response())
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
    let body = read_limited(body, &headers, state.config.server.max_body_bytes).await?;
    let items = batch_items(&headers, &body)?;
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsParams {
    group_by: Option<String>,
    window_hours: Option<String>,
}

/// `GET /api/v1/cameras/stats?group_by=region|industry|position_type|type|department&window_hours=24`.
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
    let scope = caller.0.scope();
    Ok(Json(state.cameras.stats(group, group_text, hours, scope).await?).into_response())
}
