//! Liveness, readiness, metrics, and the answer for routes that do not exist.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::state::AppState;

pub async fn healthz() -> &'static str {
    "ok\n"
}

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
