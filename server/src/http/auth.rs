//! Bearer-token authentication: every `/api/v1` handler takes a [`Caller`].

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use cityhub_catalog::{Principal, Role};

use super::error::ApiError;
use crate::state::AppState;

/// The token of an `Authorization: Bearer <token>` header, if it is one.
pub fn bearer(header: &axum::http::HeaderValue) -> Option<&str> {
    header
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
}

/// The authenticated principal of a request.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized("send an Authorization: Bearer <token> header")
        })?;
        let token = bearer(header).ok_or_else(|| {
            ApiError::unauthorized("the Authorization header must be Bearer <token>")
        })?;
        let principal = state.sharing.authenticate(token).await?;
        // Dashboard tokens sit in screens on walls: they read dashboard endpoints, the
        // camera statistics (counts and rates, nothing about a person) and who they are,
        // so a leaked one exposes only what a wall screen shows.
        let path = parts.uri.path();
        let path = path.strip_prefix("/api/v1").unwrap_or(path);
        let wall_screen_path =
            path.starts_with("/endpoints") || path == "/cameras/stats" || path == "/me";
        if principal.role == Role::Dashboard && !wall_screen_path {
            return Err(ApiError::forbidden(
                "a dashboard token reads dashboard endpoints (/api/v1/endpoints/...) and \
                 camera statistics only; use an analyst token for SQL and the catalogue",
            ));
        }
        if let Err(wait) = state
            .limiter
            .check(principal.id, principal.rate_limit_per_second)
        {
            metrics::counter!("cityhub_rate_limited_total").increment(1);
            return Err(ApiError::too_many_requests(wait));
        }
        Ok(Caller(principal))
    }
}
