//! Routes of departments and datasets: the shared catalogue, registration, snapshots,
//! pushes, and the Kafka feeds' status.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cityhub_catalog::access::{rows_limited, visible_dataset};
use cityhub_catalog::{
    Access, Dataset, DatasetChange, DatasetName, Department, NewDataset, SchemaVersion, Snapshot,
};
use cityhub_ingest::{
    CompactionReport, Format, IngestError, PushOutcome, PushRequest, StorageHealth,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{JsonBody, QueryParams, read_limited};
use super::openapi::{Binary, ErrorAnswer};
use crate::deletes::DeleteReport;
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDepartment {
    /// Lowercase ASCII code such as `gongan`; the SQL schema of its datasets.
    #[schema(example = "gongan")]
    code: String,
    /// Display name, usually Chinese (公安局).
    name: String,
}

/// A dataset of the shared catalogue and the caller's access to it. The counts (`rows`,
/// `bytes`, `files`) are `null` for a caller that may read only some of its rows.
#[derive(Serialize, ToSchema)]
pub struct ListedDataset {
    #[serde(flatten)]
    dataset: Dataset,
    /// `owner` (yours, or you are an admin), `read` (unconditional: masked), `granted`
    /// (through an active grant) or `apply` (conditional: apply with a share request).
    access: &'static str,
}

/// One dataset with every schema version and, for a caller that may read all its rows,
/// its storage (counts `null` otherwise, as in the catalogue).
#[derive(Serialize, ToSchema)]
pub struct DatasetDetail {
    #[serde(flatten)]
    dataset: Dataset,
    schema_versions: Vec<SchemaVersion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    storage: Option<StorageHealth>,
}

/// `POST /api/v1/departments` (admins).
#[utoipa::path(post, path = "/departments", tag = "catalogue",
    request_body = NewDepartment,
    responses((status = CREATED, description = "The new department", body = Department)))]
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
#[utoipa::path(get, path = "/departments", tag = "catalogue",
    responses((status = OK, description = "Every department", body = Vec<Department>)))]
pub async fn list_departments(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Response, ApiError> {
    Ok(Json(state.catalog.list_departments().await?).into_response())
}

/// `POST /api/v1/datasets`: admins, or producers in their own department.
#[utoipa::path(post, path = "/datasets", tag = "catalogue",
    request_body = NewDataset,
    responses((status = CREATED, description = "The registered dataset", body = Dataset)))]
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
#[utoipa::path(get, path = "/datasets", tag = "catalogue",
    responses((status = OK, description = "The datasets the caller may know of", body = Vec<ListedDataset>)))]
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
        let limited = rows_limited(&caller.0, &dataset, &how);
        let listed = ListedDataset {
            dataset,
            access: how.label(),
        };
        let mut value = serde_json::to_value(&listed).map_err(ApiError::internal_from)?;
        if limited {
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
#[utoipa::path(get, path = "/datasets/{name}", tag = "catalogue",
    params(("name" = String, Path, description = "The dataset, `department.table`", example = "zhili.hotline_cases")),
    responses((status = OK, description = "The dataset, its schema versions and (for who may read all its rows) its storage", body = DatasetDetail)))]
pub async fn get_dataset(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let dataset = visible_dataset(&state.catalog, &caller.0, &name).await?;
    let schema_versions = state.catalog.schema_versions(dataset.id).await?;
    let limited = rows_limited(
        &caller.0,
        &dataset,
        &state.sharing.access_to(&caller.0, &dataset).await?,
    );
    // Storage health counts files and rows of the whole dataset.
    let storage = match limited {
        true => None,
        false => Some(
            state
                .ingest
                .storage_health(&dataset, &state.compaction)
                .await?,
        ),
    };
    let detail = DatasetDetail {
        dataset,
        schema_versions,
        storage,
    };
    let mut body = serde_json::to_value(&detail).map_err(ApiError::internal_from)?;
    if limited {
        hide_counts(&mut body);
    }
    Ok(Json(body).into_response())
}

/// `PATCH /api/v1/datasets/{name}` (admins, the owner's producers): `{columns?, sort_key?}`,
/// the full new column list; answers the dataset with its new schema version.
#[utoipa::path(patch, path = "/datasets/{name}", tag = "catalogue",
    params(("name" = String, Path, description = "The dataset, `department.table`", example = "zhili.hotline_cases")),
    request_body = DatasetChange,
    responses(
        (status = OK, description = "The dataset with its new schema version", body = Dataset),
        (status = CONFLICT, description = "`schema_change_refused`, with `problems`", body = ErrorAnswer)))]
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    /// A SQL condition on the dataset's columns; matching rows are deleted.
    #[serde(rename = "where")]
    #[schema(example = "caller_phone = '13800000000'")]
    predicate: String,
}

/// `POST /api/v1/datasets/{name}/deletes {"where": "..."}` (admins, the owner's producers):
/// deletes the matching rows and answers `{rows_deleted, files_rewritten, snapshot_id}`.
#[utoipa::path(post, operation_id = "delete_rows", path = "/datasets/{name}/deletes", tag = "ingest",
    params(("name" = String, Path, description = "The dataset, `department.table`", example = "zhili.hotline_cases")),
    request_body = DeleteRequest,
    responses((status = OK, description = "What was deleted", body = DeleteReport)))]
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
#[utoipa::path(post, operation_id = "compact_dataset", path = "/datasets/{name}/compact", tag = "ingest",
    params(("name" = String, Path, description = "The dataset, `department.table`", example = "zhili.hotline_cases")),
    responses((status = OK, description = "What the compaction did (`snapshot_id` null: nothing to merge)", body = CompactionReport)))]
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
#[utoipa::path(get, path = "/datasets/{name}/snapshots", tag = "catalogue",
    params(("name" = String, Path, description = "The dataset, `department.table`", example = "zhili.hotline_cases")),
    responses((status = OK, description = "The snapshot log, newest first (counts null for a caller that may read only some rows)", body = Vec<Snapshot>)))]
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PushParams {
    /// Commit the good rows and list the bad ones, instead of all or nothing.
    #[serde(default)]
    partial: bool,
}

/// `POST /api/v1/datasets/{name}/rows`: rows in any of the push formats.
#[utoipa::path(post, path = "/datasets/{name}/rows", tag = "ingest",
    params(("name" = String, Path, description = "The dataset, `department.table`", example = "zhili.hotline_cases"), PushParams,
        ("Idempotency-Key" = Option<String>, Header, description = "Repeating a push with the same key answers the first push's outcome (200, `replayed`) instead of committing again")),
    request_body(description = "Rows as JSON (an array of objects), NDJSON, CSV (with a header line), Arrow IPC stream or Parquet, by `Content-Type`",
        content(
            (Vec<Object> = "application/json"),
            (String = "application/x-ndjson"),
            (String = "text/csv"),
            (Binary = "application/vnd.apache.arrow.stream"),
            (Binary = "application/vnd.apache.parquet"))),
    responses(
        (status = CREATED, description = "Committed", body = PushOutcome),
        (status = OK, description = "A replay of an earlier push with the same Idempotency-Key", body = PushOutcome),
        (status = UNPROCESSABLE_ENTITY, description = "Bad rows and nothing committed: `error` beside the push answer's fields (`rows_rejected`, `rejected`)", body = PushOutcome)))]
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

/// `GET /api/v1/ingest/status`: every node's Kafka feeds whose datasets the caller may see
/// (admins: the camera registry's feeds too), each worker with its state, and every
/// partition of their topics with its catalog offset, the worker holding it, high
/// watermark, lag, last flush, rows/s and dead letters.
#[utoipa::path(get, operation_id = "ingest_status", path = "/ingest/status", tag = "ingest",
    responses((status = OK, description = "`{feeds: [...], partitions: [...]}`: every node's Kafka feed workers the caller may see (state joining, assigned, idle, broker_unreachable or stopped; silent when its node stopped reporting; broker unreachable since, last error) and every partition of their topics with its catalog offset, worker, high watermark, lag, last flush, rows/s and dead letters", body = Object)))]
pub async fn ingest_status(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let status = state.feed_status(&caller.0).await?;
    Ok(Json(status).into_response())
}
