//! `GET /api/v1/images/{key}`: one image of a GA/T 1400 record, to who may see it
//! unmasked, audited.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::auth::Caller;
use super::error::ApiError;
use crate::state::AppState;

/// Answers the image stored under `key` (the `object_key` of a `viid_images` row).
pub async fn get_image(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    let (bytes, media_type) = state.viid.image(&caller.0, &key, state.clock.now()).await?;
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(media_type)),
            // Personal data: no shared cache may keep it.
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, no-store"),
            ),
        ],
        bytes,
    )
        .into_response())
}
