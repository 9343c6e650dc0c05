//! The one place where library errors become HTTP answers.
//!
//! Every error is `{"error": {"code": "snake_case_code", "message": "..."}}`; a rejected push
//! adds the push answer's fields (`rows_rejected`, `rejected`, ...) beside `error`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cityhub_catalog::CatalogError;
use cityhub_ingest::IngestError;
use cityhub_query::QueryError;
use cityhub_query::endpoint::EndpointError;
use serde_json::{Value, json};

use super::openapi::{ErrorAnswer, ErrorDetail};

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra top-level fields (the push answer of a 422).
    pub extra: Option<Value>,
    /// Seconds a client should wait before retrying (429).
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            extra: None,
            retry_after_secs: None,
        }
    }

    pub fn too_many_requests(wait: std::time::Duration) -> Self {
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut error = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "this token is over its request rate (server.rate_limit_per_second); retry in \
                 {seconds} s"
            ),
        );
        error.retry_after_secs = Some(seconds);
        error
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub fn internal_from(err: impl std::fmt::Display) -> Self {
        Self::internal(err.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "A request failed on the server side.");
        }
        let answer = ErrorAnswer {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        let mut body = serde_json::to_value(answer).unwrap_or_default();
        if let (Some(Value::Object(extra)), Some(object)) = (self.extra, body.as_object_mut()) {
            object.extend(extra);
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"cityhub\""),
            );
        }
        response
    }
}

impl From<CatalogError> for ApiError {
    fn from(err: CatalogError) -> Self {
        let message = err.to_string();
        match err {
            CatalogError::Invalid { .. } => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_field", message)
            }
            CatalogError::AlreadyExists { .. } => {
                Self::new(StatusCode::CONFLICT, "already_exists", message)
            }
            CatalogError::NotFound { .. } => Self::not_found(message),
            CatalogError::Conflict { .. } => {
                Self::new(StatusCode::CONFLICT, "commit_conflict", message)
            }
            CatalogError::SchemaChange(ref problems) => {
                let mut error = Self::new(StatusCode::CONFLICT, "schema_change_refused", message);
                error.extra = Some(serde_json::json!({ "problems": problems }));
                error
            }
            CatalogError::FilesGone { .. } => {
                Self::new(StatusCode::CONFLICT, "files_gone", message)
            }
            CatalogError::IdempotencyMismatch { .. } => {
                Self::new(StatusCode::CONFLICT, "idempotency_key_reused", message)
            }
            CatalogError::WrongState(_) => Self::new(StatusCode::CONFLICT, "wrong_state", message),
            CatalogError::ResyncRequired(_) => {
                Self::new(StatusCode::GONE, "resync_required", message)
            }
            CatalogError::Forbidden(_) => Self::forbidden(message),
            CatalogError::Unauthenticated(_) => Self::unauthorized(message),
            CatalogError::OffsetConflict { .. } => {
                Self::new(StatusCode::CONFLICT, "offset_conflict", message)
            }
            CatalogError::Storage(_) => Self::internal(message),
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(err: IngestError) -> Self {
        let message = err.to_string();
        match err {
            IngestError::DatasetNotFound(_) => Self::not_found(message),
            IngestError::Forbidden(_) => Self::forbidden(message),
            IngestError::UnsupportedFormat(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "{message}; send one of {}",
                    cityhub_ingest::decode::SUPPORTED_CONTENT_TYPES
                ),
            ),
            IngestError::EmptyBody => Self::new(StatusCode::BAD_REQUEST, "empty_body", message),
            IngestError::Malformed { .. } => {
                Self::new(StatusCode::BAD_REQUEST, "malformed_body", message)
            }
            IngestError::SchemaMismatch(_) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "schema_mismatch", message)
            }
            IngestError::Rejected(outcome) => {
                let mut error = Self::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "rows_rejected",
                    if outcome.rows_accepted == 0 && outcome.rows_rejected > 0 {
                        format!(
                            "{} row(s) were rejected and nothing was committed; fix them, or \
                             send ?partial=true to commit the good rows",
                            outcome.rows_rejected
                        )
                    } else {
                        message
                    },
                );
                error.extra = serde_json::to_value(&*outcome).ok();
                error
            }
            IngestError::IdempotencyMismatch(_) => {
                Self::new(StatusCode::CONFLICT, "idempotency_key_reused", message)
            }
            IngestError::Invalid { .. } => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_field", message)
            }
            IngestError::Read(_) => Self::bad_request(message),
            IngestError::Catalog(inner) => inner.into(),
            IngestError::Contention { .. } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "busy", message)
            }
            IngestError::Storage(_) | IngestError::Internal(_) => Self::internal(message),
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(err: QueryError) -> Self {
        let message = err.to_string();
        match err {
            QueryError::Forbidden(_) | QueryError::Unsupported(_) => {
                Self::new(StatusCode::FORBIDDEN, "forbidden", message)
            }
            QueryError::Invalid { line, column, .. } => {
                let mut error = Self::new(StatusCode::BAD_REQUEST, "invalid_sql", message);
                if let (Some(line), Some(column)) = (line, column) {
                    error.extra = Some(json!({"position": {"line": line, "column": column}}));
                }
                error
            }
            QueryError::Parameter(_) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_parameter", message)
            }
            QueryError::NotAcceptable(_) => {
                Self::new(StatusCode::NOT_ACCEPTABLE, "not_acceptable", message)
            }
            QueryError::Timeout(_) => {
                Self::new(StatusCode::GATEWAY_TIMEOUT, "query_timeout", message)
            }
            QueryError::MemoryLimit(_) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "memory_limit_exceeded",
                message,
            ),
            QueryError::Unavailable(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "engine_unavailable",
                message,
            ),
            QueryError::Internal(_) => Self::internal(message),
        }
    }
}

impl From<EndpointError> for ApiError {
    fn from(err: EndpointError) -> Self {
        let message = err.to_string();
        match err {
            EndpointError::NotFound(_) => Self::not_found(message),
            EndpointError::Forbidden(_) => Self::forbidden(message),
            EndpointError::Invalid { .. } => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_field", message)
            }
            EndpointError::BadCall(_) => Self::bad_request(message),
            EndpointError::NotAcceptable(_) => {
                Self::new(StatusCode::NOT_ACCEPTABLE, "not_acceptable", message)
            }
            EndpointError::Query(inner) => inner.into(),
            EndpointError::Catalog(inner) => inner.into(),
        }
    }
}

impl From<crate::deletes::DeleteError> for ApiError {
    fn from(err: crate::deletes::DeleteError) -> Self {
        match err {
            crate::deletes::DeleteError::Ingest(inner) => inner.into(),
            crate::deletes::DeleteError::Query(inner) => inner.into(),
        }
    }
}
