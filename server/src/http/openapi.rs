//! The OpenAPI 3 document of the HTTP API, served at `GET /api/v1/openapi.json`.
//!
//! It is not written by hand: [`super::router`] registers every handler through
//! `utoipa_axum::routes!`, which reads each handler's `#[utoipa::path]` (method, path,
//! parameters, body, answers) at the same time as it routes it. A route therefore cannot
//! exist without its entry. This file adds what is common to all of them: the bearer
//! token, the error shape, and the tags.

use std::sync::Arc;

use axum::extract::Extension;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{OpenApi, RefOr, ResponseBuilder, Responses};

/// Every error answer: `{"error": {"code", "message"}}`. A rejected push (422) adds the
/// push answer's fields beside `error`; a 429 carries `Retry-After`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorAnswer {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable snake_case code: `bad_request`, `invalid_field`, `unauthorized`,
    /// `forbidden`, `not_found`, `already_exists`, `conflict`, `rate_limited`, ...
    #[schema(example = "invalid_field")]
    pub code: String,
    /// What went wrong and what to do, for a person.
    pub message: String,
}

/// A body of raw bytes (Arrow IPC streams, Parquet files).
pub struct Binary;

impl utoipa::PartialSchema for Binary {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Binary,
            )))
            .description(Some("Raw bytes"))
            .into()
    }
}

impl ToSchema for Binary {}

/// The parts of the document that no handler states: title, tags, the bearer scheme.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "cityhub",
        description = "The data-sharing and video-resource hub of a city: department feeds, \
                       the shared catalogue, SQL, sharing and approvals, the camera registry, \
                       dashboard endpoints. Every `/api/v1` route but this document takes \
                       `Authorization: Bearer <token>`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    tags(
        (name = "health", description = "Liveness, readiness and Prometheus metrics"),
        (name = "catalogue", description = "Departments and datasets: registration, schema \
                                            versions, snapshots, storage"),
        (name = "ingest", description = "Pushes, deletes, compaction and the Kafka feeds"),
        (name = "sql", description = "Read-only SQL over every dataset the caller may read"),
        (name = "sharing", description = "Tokens, share requests, grants and the audit log"),
        (name = "cameras", description = "The camera registry (GB/T 28181 channels)"),
        (name = "endpoints", description = "Saved queries for dashboards, cached until the \
                                            data changes"),
    ),
    components(schemas(ErrorAnswer, ErrorDetail)),
)]
pub struct ApiDoc;

/// Routes that answer without a token.
const OPEN_PATHS: &[&str] = &["/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"];

/// Adds the bearer scheme to every `/api/v1` operation and the error answers to every
/// operation, so that no handler has to repeat them. Runs once the routes are in (a
/// `modifiers(...)` of the derive would run before there are any paths).
pub fn add_common_answers(openapi: &mut OpenApi) {
    let components = openapi.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "A hub token (`chub_...`), made with `cityhub token create` or `POST \
                         /api/v1/tokens`",
                ))
                .build(),
        ),
    );
    for (path, item) in openapi.paths.paths.iter_mut() {
        let open = OPEN_PATHS.contains(&path.as_str());
        for operation in operations(item) {
            if !open {
                operation.security = Some(vec![SecurityRequirement::new(
                    "bearer",
                    Vec::<String>::new(),
                )]);
            }
            add_error_answers(&mut operation.responses, open);
        }
    }
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.patch.as_mut(),
    ]
    .into_iter()
    .flatten()
}

fn add_error_answers(responses: &mut Responses, open: bool) {
    let error = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    utoipa::openapi::ContentBuilder::new()
                        .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                            "ErrorAnswer",
                        ))))
                        .build(),
                )
                .build(),
        )
    };
    let mut add = |status: &str, description: &str| {
        responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| error(description));
    };
    if !open {
        add("401", "No token, or a wrong, revoked or expired one");
        add("403", "The token's role or department may not do this");
        add(
            "429",
            "Over the token's request rate; `Retry-After` says when to retry",
        );
    }
    add(
        "default",
        "An error: `{\"error\": {\"code\", \"message\"}}` (400 for bad input, naming the \
         field; 404 for what does not exist or is not visible to the caller; 5xx on the \
         server's side)",
    );
}

/// `GET /api/v1/openapi.json`: this document (no token).
#[utoipa::path(
    get, operation_id = "openapi_document",
    path = "/openapi.json",
    tag = "health",
    responses((status = OK, description = "The OpenAPI 3.1 document of this API", content_type = "application/json"))
)]
pub async fn document(Extension(document): Extension<Arc<Document>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.0.clone(),
    )
        .into_response()
}

/// The document as served, rendered once when the router is built.
#[derive(Clone)]
pub struct Document(pub bytes::Bytes);

impl Document {
    pub fn render(openapi: &OpenApi) -> Self {
        // Serialising a tree of plain maps and strings cannot fail.
        Self(bytes::Bytes::from(
            openapi.to_pretty_json().unwrap_or_default(),
        ))
    }
}
