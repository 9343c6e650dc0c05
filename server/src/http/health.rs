//! Liveness, readiness, metrics, and the answer for routes that do not exist.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::openapi::ErrorAnswer;
use crate::state::AppState;

#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = OK, description = "The process is up", body = String, content_type = "text/plain")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = OK, description = "The catalog is reachable", body = String, content_type = "text/plain"),
        (status = SERVICE_UNAVAILABLE, description = "`not_ready`: the catalog is not reachable", body = ErrorAnswer)))]
pub async fn readyz(State(state): State<AppState>) -> Response {
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

#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = OK, description = "Prometheus text exposition: requests by route and status, rows and bytes pushed, commit latency, Kafka lag, camera keepalives and status counts", body = String, content_type = "text/plain; version=0.0.4")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    state.sharing.update_gauges().await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route; the README's \"HTTP API\" section lists every route")
}
