//! Request extractors whose rejections answer in the hub's error shape, and bounded body
//! reading.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Query, Request};
use axum::http::{HeaderMap, StatusCode, header};

use super::error::ApiError;

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

/// Why a body was not read.
pub enum BodyError {
    /// Longer than the limit (declared or as it came).
    TooLarge,
    /// The connection failed while reading.
    Unreadable(String),
}

/// Reads a request body up to `limit` bytes, refusing a longer one as soon as its declared
/// length, or the bytes that came, say so.
pub async fn read_body_within(
    body: Body,
    headers: &HeaderMap,
    limit: u64,
) -> Result<bytes::Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(BodyError::TooLarge);
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    axum::body::to_bytes(body, limit).await.map_err(|err| {
        let over_limit = std::error::Error::source(&err)
            .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
        if over_limit {
            BodyError::TooLarge
        } else {
            BodyError::Unreadable(err.to_string())
        }
    })
}

/// Reads a request body up to `limit` bytes, answering 413 beyond it.
pub async fn read_limited(
    body: Body,
    headers: &HeaderMap,
    limit: u64,
) -> Result<bytes::Bytes, ApiError> {
    read_body_within(body, headers, limit)
        .await
        .map_err(|err| match err {
            BodyError::TooLarge => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!(
                    "the body is larger than the limit of {limit} bytes (server.max_body_bytes); \
                     split it into several pushes"
                ),
            ),
            BodyError::Unreadable(err) => {
                ApiError::bad_request(format!("the body could not be read: {err}"))
            }
        })
}
