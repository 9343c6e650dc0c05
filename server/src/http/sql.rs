//! The SQL route: parse the request, run one query, stream the encoded answer.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use cityhub_query::encode::encode;
use cityhub_query::{MASKED_FIELD_METADATA, ResultFormat};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::Value;

use super::auth::Caller;
use super::error::ApiError;
use super::openapi::Binary;
use crate::state::AppState;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlRequest {
    /// One read-only statement (`SELECT`, `WITH`, `EXPLAIN`, `SHOW`, `DESCRIBE`).
    #[schema(
        example = "SELECT county, count(*) FROM zhili.hotline_cases WHERE created_at > $1 GROUP BY county"
    )]
    sql: String,
    /// Values of `$1`, `$2`, ... in order.
    #[serde(default)]
    params: Vec<Value>,
}

/// `POST /api/v1/sql`: the SQL as `text/plain`, or JSON `{"sql", "params"}`.
#[utoipa::path(post, path = "/sql", tag = "sql",
    params(("Accept" = Option<String>, Header, description = "`application/json` (default), `application/x-ndjson`, `text/csv` or `application/vnd.apache.arrow.stream`")),
    request_body(description = "The SQL as text, or JSON with positional parameters (`$1`, `$2`, ...)",
        content((String = "text/plain"), (SqlRequest = "application/json"))),
    responses((status = OK, description = "The rows, streamed in the format asked for", content(
        (Vec<Object> = "application/json"),
        (String = "application/x-ndjson"),
        (String = "text/csv"),
        (Binary = "application/vnd.apache.arrow.stream")))))]
pub async fn run_sql(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let format =
        ResultFormat::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()))?;
    let (sql, params) = parse_request(&headers, &body)?;
    let result = state.query.execute(&caller.0, &sql, &params).await?;
    // Wait for the first batch before answering, so that errors that come before any row
    // (most do: memory, timeouts, bad casts) get a real status instead of a cut-off body.
    let mut batches = result.batches;
    let first = batches.next().await.transpose()?;
    let stream = futures::stream::iter(first.map(Ok)).chain(batches);
    let masked = masked_columns(&result.schema);
    let names = column_names(&result.schema);
    let bytes = encode(format, result.schema, stream);
    let mut response = (
        [(header::CONTENT_TYPE, format.content_type())],
        Body::from_stream(bytes),
    )
        .into_response();
    if let Some(masked) = masked {
        response.headers_mut().insert(MASKED_COLUMNS, masked);
    }
    if let Ok(names) = HeaderValue::from_str(&names) {
        response.headers_mut().insert(COLUMNS, names);
    }
    Ok(response)
}

/// Response header naming the result's columns in order, each percent-encoded (UTF-8) and
/// separated by commas: a streaming client knows them before the first row, and also when
/// there is none.
pub const COLUMNS: &str = "x-cityhub-columns";

fn column_names(schema: &datafusion::arrow::datatypes::Schema) -> String {
    let mut text = String::new();
    for (position, field) in schema.fields().iter().enumerate() {
        if position > 0 {
            text.push(',');
        }
        for byte in field.name().bytes() {
            if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
                text.push(char::from(byte));
            } else {
                text.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    text
}

/// Response header listing the result columns (0-based positions) that hold masked values,
/// so that a client can mark them; absent when none do. Positions, not names: names may be
/// Chinese, which a header cannot carry as is.
pub const MASKED_COLUMNS: &str = "x-cityhub-masked-columns";

fn masked_columns(schema: &datafusion::arrow::datatypes::Schema) -> Option<HeaderValue> {
    let positions: Vec<String> = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, field)| field.metadata().contains_key(MASKED_FIELD_METADATA))
        .map(|(position, _)| position.to_string())
        .collect();
    if positions.is_empty() {
        return None;
    }
    HeaderValue::from_str(&positions.join(",")).ok()
}

fn parse_request(headers: &HeaderMap, body: &[u8]) -> Result<(String, Vec<Value>), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/plain")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let (sql, params) = match content_type.as_str() {
        "application/json" => {
            let request: SqlRequest = serde_json::from_slice(body).map_err(|err| {
                ApiError::bad_request(format!(
                    "the body must be JSON {{\"sql\": \"...\", \"params\": [...]}}: {err}"
                ))
            })?;
            (request.sql, request.params)
        }
        // curl --data-binary sends form encoding unless told otherwise: read it as text.
        "text/plain" | "application/sql" | "application/x-www-form-urlencoded" | "" => {
            let sql = std::str::from_utf8(body)
                .map_err(|_| ApiError::bad_request("the SQL must be UTF-8 text"))?;
            (sql.to_string(), Vec::new())
        }
        other => {
            return Err(ApiError::new(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("send the SQL as text/plain or as application/json, not {other}"),
            ));
        }
    };
    if sql.trim().is_empty() {
        return Err(ApiError::bad_request("the request holds no SQL"));
    }
    Ok((sql, params))
}
