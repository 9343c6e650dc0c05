//! Liveness, readiness, metrics, and the answer for routes that do not exist.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::auth::bearer;
use super::error::ApiError;
use super::openapi::ErrorAnswer;
use crate::serve::peer_address;
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
    responses(
        (status = OK, description = "Prometheus text exposition: requests by route and status, rows and bytes pushed, commit latency, Kafka lag, camera keepalives and status counts", body = String, content_type = "text/plain; version=0.0.4"),
        (status = UNAUTHORIZED, description = "`unauthorized`: `server.metrics_token` is set and the request does not carry it as a bearer token", body = ErrorAnswer),
        (status = FORBIDDEN, description = "`forbidden`: no `server.metrics_token` is set and the caller is not on the loopback interface", body = ErrorAnswer)))]
pub async fn metrics(State(state): State<AppState>, request: Request) -> Response {
    // The series are labelled with endpoint, dataset and topic names, which not every
    // caller may know: a token, or else loopback only.
    let token = &state.config.server.metrics_token;
    if token.is_empty() {
        let local = peer_address(request.extensions()).is_none_or(|peer| peer.ip().is_loopback());
        if !local {
            return ApiError::forbidden(
                "the metrics answer only on the loopback interface; set server.metrics_token \
                 to scrape them from elsewhere with that bearer token",
            )
            .into_response();
        }
    } else {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(bearer);
        if !presented.is_some_and(|presented| same_secret(presented, token)) {
            return ApiError::unauthorized(
                "the metrics need the bearer token of server.metrics_token",
            )
            .into_response();
        }
    }
    state.sharing.update_gauges().await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// Equal strings, compared in a time that does not tell how much of a guess was right.
fn same_secret(presented: &str, secret: &str) -> bool {
    presented.len() == secret.len()
        && presented
            .bytes()
            .zip(secret.bytes())
            .fold(0_u8, |differ, (a, b)| differ | (a ^ b))
            == 0
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route; the README's \"HTTP API\" section lists every route")
}
