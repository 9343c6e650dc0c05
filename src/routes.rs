//! HTTP routes. Handlers stay thin: parse, check the caller, call one library function,
//! answer.

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use cityhub_catalog::sharing::access;
use cityhub_catalog::{Access, AuditEvent, Dataset, DatasetName, NewDataset, Role};
use cityhub_ingest::{Format, IngestError, PushRequest};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::cameras;
use crate::endpoints;
use crate::error::ApiError;
use crate::sharing;
use crate::state::AppState;
use crate::telemetry;

/// The whole HTTP surface of the hub.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route(
            "/departments",
            get(list_departments).post(create_department),
        )
        .route("/datasets", get(list_datasets).post(create_dataset))
        .route("/datasets/{name}", get(get_dataset))
        .route("/datasets/{name}/snapshots", get(list_snapshots))
        .route(
            "/datasets/{name}/rows",
            // The push handler enforces the configured limit itself, with a JSON answer.
            post(push_rows).layer(DefaultBodyLimit::disable()),
        )
        .route("/sql", post(crate::sql::run_sql))
        .route("/datasets/{name}/share-requests", post(sharing::apply))
        .route("/share-requests", get(sharing::list_requests))
        .route("/share-requests/{id}", get(sharing::get_request))
        .route("/share-requests/{id}/approve", post(sharing::approve))
        .route("/share-requests/{id}/reject", post(sharing::reject))
        .route("/grants", get(sharing::list_grants))
        .route("/grants/{id}/revoke", post(sharing::revoke_grant))
        .route(
            "/tokens",
            get(sharing::list_tokens).post(sharing::create_token),
        )
        .route("/tokens/{id}", delete(sharing::revoke_token))
        .route("/audit", get(sharing::read_audit))
        .route("/ingest/status", get(ingest_status))
        .route("/cameras", get(cameras::search))
        .route("/cameras/stats", get(cameras::stats))
        .route(
            "/cameras/batch",
            post(cameras::register_batch).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/cameras/keepalive",
            post(cameras::keepalive).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/cameras/events",
            post(cameras::events).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/cameras/{id}",
            get(cameras::get_camera).put(cameras::put_camera),
        )
        .route(
            "/cameras/{id}/curated",
            axum::routing::put(cameras::put_curated).delete(cameras::delete_curated),
        )
        .route("/endpoints", get(endpoints::list))
        .route(
            "/endpoints/{name}",
            get(endpoints::result).put(endpoints::save),
        )
        .route("/endpoints/{name}/events", get(endpoints::events))
        .route("/endpoints/{name}/definition", get(endpoints::definition))
        .fallback(api_not_found);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/api/v1", api)
        .fallback(api_not_found)
        .layer(axum::middleware::from_fn(telemetry::record_request))
        .with_state(state)
}

/// Query parameters whose rejections (an unknown or malformed parameter) use the hub's
/// error shape.
pub struct QueryParams<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S>
    for QueryParams<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| QueryParams(value))
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
    }
}

/// A JSON body whose rejections use the hub's error shape.
pub struct JsonBody<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(JsonBody(value)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            )),
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text())),
        }
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state
        .catalog
        .department(cityhub_catalog::ADMIN_DEPARTMENT)
        .await
    {
        Ok(_) => (StatusCode::OK, "ready\n").into_response(),
        Err(err) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("the catalog is not reachable: {err}"),
        )
        .into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    sharing::update_share_gauges(&state).await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn api_not_found() -> ApiError {
    ApiError::not_found("no such route; see /api/v1/openapi.json and the README for the API")
}

// ----------------------------------------------------------------------------------------
// Departments

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewDepartment {
    code: String,
    name: String,
}

async fn create_department(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<NewDepartment>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin], "creating a department")?;
    let department = state
        .catalog
        .create_department(&body.code, &body.name)
        .await?;
    state.audit.record(
        AuditEvent::by(&caller.0, "department_create", "ok")
            .detail(json!({"code": department.code, "name": department.name})),
    );
    tracing::info!(code = %department.code, by = %caller.0.name, "Created a department.");
    Ok((StatusCode::CREATED, Json(department)).into_response())
}

async fn list_departments(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Response, ApiError> {
    Ok(Json(state.catalog.list_departments().await?).into_response())
}

// ----------------------------------------------------------------------------------------
// Datasets

/// Looks a dataset up for a caller; invisible datasets answer exactly like missing ones.
pub(crate) async fn visible_dataset(
    state: &AppState,
    caller: &Caller,
    name: &str,
) -> Result<Dataset, ApiError> {
    let parsed = DatasetName::parse(name)?;
    match state.catalog.dataset(&parsed).await? {
        Some(dataset) if caller.0.may_see(&dataset) => Ok(dataset),
        _ => Err(IngestError::DatasetNotFound(name.to_string()).into()),
    }
}

async fn create_dataset(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(new): JsonBody<NewDataset>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin, Role::Producer], "registering a dataset")?;
    if !caller.0.acts_for(new.name.department()) {
        return Err(ApiError::forbidden(format!(
            "a producer of {} can register datasets only in its own department, not in {}",
            caller.0.department,
            new.name.department()
        )));
    }
    let dataset = state.catalog.create_dataset(new).await?;
    state.audit.record(
        AuditEvent::by(&caller.0, "dataset_create", "ok")
            .dataset(dataset.name.to_string())
            .detail(json!({"sharing": dataset.sharing, "classification": dataset.classification})),
    );
    tracing::info!(dataset = %dataset.name, by = %caller.0.name, "Registered a dataset.");
    Ok((StatusCode::CREATED, Json(dataset)).into_response())
}

/// The shared catalogue: every dataset the caller may know of, each with `access`: `owner`
/// (yours, or you are an admin), `read` (unconditional: masked), `granted` (through an
/// active grant) or `apply` (conditional: apply with a share request).
async fn list_datasets(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let grants = state
        .catalog
        .grants_held_by(Some(&caller.0.department))
        .await?;
    let now = chrono::Utc::now();
    let mut datasets = Vec::new();
    for dataset in state.catalog.list_datasets().await? {
        let how = access(&caller.0, &dataset, &grants, now);
        if how == Access::Hidden {
            continue;
        }
        let mut value = serde_json::to_value(&dataset).map_err(ApiError::internal_from)?;
        value["access"] = how.label().into();
        datasets.push(value);
    }
    Ok(Json(datasets).into_response())
}

async fn get_dataset(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let dataset = visible_dataset(&state, &caller, &name).await?;
    let versions = state.catalog.schema_versions(dataset.id).await?;
    let mut body = serde_json::to_value(&dataset).map_err(|e| ApiError::internal(e.to_string()))?;
    if let Value::Object(object) = &mut body {
        object.insert("schema_versions".into(), json!(versions));
    }
    Ok(Json(body).into_response())
}

async fn list_snapshots(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let dataset = visible_dataset(&state, &caller, &name).await?;
    Ok(Json(state.catalog.snapshots(dataset.id).await?).into_response())
}

#[derive(Deserialize)]
struct PushParams {
    #[serde(default)]
    partial: bool,
}

async fn push_rows(
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
    let principal = caller.0.clone();
    let dataset = name.clone();
    let result = tokio::spawn(async move { ingest.push(&principal, &dataset, request).await })
        .await
        .map_err(|err| ApiError::internal(format!("the push task failed: {err}")))?;
    audit_push(&state, &caller, &name, &result);
    let outcome = result?;
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
async fn ingest_status(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let visible: std::collections::HashSet<String> = state
        .catalog
        .list_datasets()
        .await?
        .into_iter()
        .filter(|d| caller.0.may_see(d))
        .map(|d| d.name.to_string())
        .collect();
    let mut partitions = state.kafka.snapshot();
    // The camera registry's feeds (`hub.cameras`, ...) are the operators' business.
    let admin = caller.0.role == Role::Admin;
    partitions.retain(|status| {
        visible.contains(&status.dataset)
            || (admin && cityhub_catalog::camera::CameraFeed::of_dataset(&status.dataset).is_some())
    });
    Ok(Json(json!({ "partitions": partitions })).into_response())
}

/// Records a push in the audit log: what was committed, or why nothing was.
fn audit_push(
    state: &AppState,
    caller: &Caller,
    dataset: &str,
    result: &Result<cityhub_ingest::PushOutcome, IngestError>,
) {
    let event = match result {
        Ok(outcome) => AuditEvent::by(&caller.0, "push", "ok").detail(json!({
            "rows_accepted": outcome.rows_accepted,
            "rows_rejected": outcome.rows_rejected,
            "snapshot_id": outcome.snapshot_id,
            "replayed": outcome.replayed,
        })),
        Err(err) => {
            let outcome = match err {
                IngestError::Forbidden(_) | IngestError::DatasetNotFound(_) => "refused",
                _ => "failed",
            };
            AuditEvent::by(&caller.0, "push", outcome).detail(json!({"error": err.to_string()}))
        }
    };
    state.audit.record(event.dataset(dataset));
}

/// Reads a request body up to `limit` bytes, answering 413 beyond it.
pub(crate) async fn read_limited(
    body: Body,
    headers: &HeaderMap,
    limit: u64,
) -> Result<bytes::Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "the body is larger than the limit of {limit} bytes (server.max_body_bytes); \
                 split it into several pushes"
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large());
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => Ok(bytes),
        Err(err) => {
            let over_limit = std::error::Error::source(&err)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            if over_limit {
                Err(too_large())
            } else {
                Err(ApiError::bad_request(format!(
                    "the body could not be read: {err}"
                )))
            }
        }
    }
}
