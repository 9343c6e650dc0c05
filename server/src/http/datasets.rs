//! Routes of departments and datasets: the shared catalogue, registration, snapshots,
//! pushes, and the Kafka feeds' status.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cityhub_catalog::access::{rows_limited, visible_dataset};
use cityhub_catalog::{Access, DatasetChange, DatasetName, NewDataset};
use cityhub_ingest::{Format, IngestError, PushRequest};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{JsonBody, QueryParams, read_limited};
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDepartment {
    code: String,
    name: String,
}

/// `POST /api/v1/departments` (admins).
pub async fn create_department(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<NewDepartment>,
) -> Result<Response, ApiError> {
    let department = state
        .sharing
        .create_department(&caller.0, &body.code, &body.name)
        .await?;
    Ok((StatusCode::CREATED, Json(department)).into_response())
}

/// `GET /api/v1/departments`.
pub async fn list_departments(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Response, ApiError> {
    Ok(Json(state.catalog.list_departments().await?).into_response())
}

/// `POST /api/v1/datasets`: admins, or producers in their own department.
pub async fn create_dataset(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(new): JsonBody<NewDataset>,
) -> Result<Response, ApiError> {
    let dataset = state.ingest.register_dataset(&caller.0, new).await?;
    Ok((StatusCode::CREATED, Json(dataset)).into_response())
}

/// The shared catalogue: every dataset the caller may know of, each with `access`: `owner`
/// (yours, or you are an admin), `read` (unconditional: masked), `granted` (through an
/// active grant) or `apply` (conditional: apply with a share request).
pub async fn list_datasets(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let listed = state.sharing.catalogue(&caller.0).await?;
    let mut datasets = Vec::with_capacity(listed.len());
    for (dataset, how) in listed {
        if how == Access::Hidden {
            continue;
        }
        let mut value = serde_json::to_value(&dataset).map_err(ApiError::internal_from)?;
        value["access"] = how.label().into();
        if rows_limited(&caller.0, &dataset, &how) {
            hide_counts(&mut value);
        }
        datasets.push(value);
    }
    Ok(Json(datasets).into_response())
}

/// Blanks the counts of all of a dataset's rows (`rows`, `bytes`, `files`) in its JSON,
/// for a caller that may read only some of them.
fn hide_counts(value: &mut Value) {
    for field in [
        "rows",
        "bytes",
        "files",
        "added_rows",
        "added_bytes",
        "added_files",
    ] {
        if let Some(count) = value.get_mut(field) {
            *count = Value::Null;
        }
    }
}

/// `GET /api/v1/datasets/{name}`: the dataset with every schema version.
pub async fn get_dataset(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let dataset = visible_dataset(&state.catalog, &caller.0, &name).await?;
    let versions = state.catalog.schema_versions(dataset.id).await?;
    let limited = rows_limited(
        &caller.0,
        &dataset,
        &state.sharing.access_to(&caller.0, &dataset).await?,
    );
    let mut body = serde_json::to_value(&dataset).map_err(ApiError::internal_from)?;
    if limited {
        hide_counts(&mut body);
    }
    if let Value::Object(object) = &mut body {
        object.insert("schema_versions".into(), json!(versions));
        // Storage health counts files and rows of the whole dataset.
        if !limited {
            let storage = state
                .ingest
                .storage_health(&dataset, &state.compaction)
                .await?;
            object.insert("storage".into(), json!(storage));
        }
    }
    Ok(Json(body).into_response())
}

/// `PATCH /api/v1/datasets/{name}` (admins, the owner's producers): `{columns?, sort_key?}`,
/// the full new column list; answers the dataset with its new schema version.
pub async fn change_dataset(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(change): JsonBody<DatasetChange>,
) -> Result<Response, ApiError> {
    let name = DatasetName::parse(&name)?;
    let dataset = state
        .ingest
        .change_dataset(&caller.0, &name, change)
        .await?;
    Ok(Json(dataset).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    #[serde(rename = "where")]
    predicate: String,
}

/// `POST /api/v1/datasets/{name}/deletes {"where": "..."}` (admins, the owner's producers):
/// deletes the matching rows and answers `{rows_deleted, files_rewritten, snapshot_id}`.
pub async fn delete_rows(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(request): JsonBody<DeleteRequest>,
) -> Result<Response, ApiError> {
    let name = DatasetName::parse(&name)?;
    // Its own task: a client hanging up must not cancel it between write and commit.
    let (task_state, principal) = (state.clone(), caller.0);
    let report = tokio::spawn(async move {
        crate::deletes::delete_rows(&task_state, Some(&principal), &name, &request.predicate).await
    })
    .await
    .map_err(|err| ApiError::internal(format!("the delete task failed: {err}")))??;
    Ok(Json(report).into_response())
}

/// `POST /api/v1/datasets/{name}/compact` (admins, the owner's producers): merges the
/// dataset's small files now and answers once the `compact` snapshot is committed.
pub async fn compact(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let name = DatasetName::parse(&name)?;
    // Its own task, like a push: a client hanging up must not cancel it half-way.
    let (ingest, policy, principal) = (state.ingest.clone(), state.compaction.clone(), caller.0);
    let report = tokio::spawn(async move {
        ingest
            .compact(Some(&principal), &name, &policy, &|_, _| {})
            .await
    })
    .await
    .map_err(|err| ApiError::internal(format!("the compaction task failed: {err}")))??;
    Ok(Json(report).into_response())
}

/// `GET /api/v1/datasets/{name}/snapshots`: the snapshot log, newest first.
pub async fn list_snapshots(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let dataset = visible_dataset(&state.catalog, &caller.0, &name).await?;
    let snapshots = state.catalog.snapshots(dataset.id).await?;
    let mut body = serde_json::to_value(&snapshots).map_err(ApiError::internal_from)?;
    if rows_limited(
        &caller.0,
        &dataset,
        &state.sharing.access_to(&caller.0, &dataset).await?,
    ) && let Value::Array(snapshots) = &mut body
    {
        snapshots.iter_mut().for_each(hide_counts);
    }
    Ok(Json(body).into_response())
}

#[derive(Deserialize)]
pub struct PushParams {
    #[serde(default)]
    partial: bool,
}

/// `POST /api/v1/datasets/{name}/rows`: rows in any of the push formats.
pub async fn push_rows(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    QueryParams(params): QueryParams<PushParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = Format::from_content_type(content_type)
        .ok_or_else(|| IngestError::UnsupportedFormat(content_type.to_string()))?;
    let idempotency_key = headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .map(str::to_string)
                .map_err(|_| ApiError::bad_request("the Idempotency-Key header must be ASCII"))
        })
        .transpose()?;
    let body = read_limited(body, &headers, state.config.server.max_body_bytes).await?;
    let request = PushRequest {
        format,
        body,
        partial: params.partial,
        idempotency_key,
    };
    // Run the push as its own task: a client that hangs up mid-way must not cancel it
    // between the file write and the commit (the commit either happens or it does not).
    let ingest = state.ingest.clone();
    let principal = caller.0;
    let outcome = tokio::spawn(async move { ingest.push(&principal, &name, request).await })
        .await
        .map_err(|err| ApiError::internal(format!("the push task failed: {err}")))??;
    let status = if outcome.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(outcome)).into_response())
}

/// `GET /api/v1/ingest/status`: the Kafka feeds' partitions whose datasets the caller may
/// see (admins: the camera registry's feeds too), with catalog offset, high watermark, lag,
/// last flush, rows/s and dead letters.
pub async fn ingest_status(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let partitions = state.feed_status(&caller.0).await?;
    Ok(Json(json!({ "partitions": partitions })).into_response())
}
