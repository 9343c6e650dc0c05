//! The HTTP API: this file is the router (and with it the OpenAPI document) and nothing else. Handlers parse the request,
//! call one library function and answer; each resource has its own file.

pub mod auth;
pub mod cameras;
pub mod console;
pub mod datasets;
pub mod endpoints;
pub mod error;
pub mod extract;
pub mod health;
pub mod images;
pub mod openapi;
pub mod sharing;
pub mod sql;
pub mod viid;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Extension};
use axum::routing::get;
use utoipa::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

pub use error::ApiError;

use crate::state::AppState;
use crate::telemetry;

/// The whole HTTP surface of the hub.
pub fn router(state: AppState) -> Router {
    let (router, openapi) = routes().split_for_parts();
    let document = Arc::new(openapi::Document::render(&finish(openapi)));
    router
        .route("/console", get(console::redirect))
        .route("/console/", get(console::index))
        .route("/console/{*path}", get(console::file))
        .merge(viid::router())
        // Image keys hold slashes, which the OpenAPI router's paths cannot capture; the
        // route is described in docs/viid.md.
        .route("/api/v1/images/{*key}", get(images::get_image))
        .fallback(health::not_found)
        .layer(Extension(document))
        .layer(axum::middleware::from_fn(telemetry::record_request))
        .with_state(state)
}

/// The OpenAPI document of [`router`]: every route with its parameters, bodies and answers.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    finish(routes().into_openapi())
}

fn finish(mut openapi: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    openapi.info.version = env!("CARGO_PKG_VERSION").to_string();
    openapi::add_common_answers(&mut openapi);
    openapi
}

/// Every route, registered with its `#[utoipa::path]` so that the router and the OpenAPI
/// document are made from the same list: a route cannot be served without its entry.
fn routes() -> OpenApiRouter<AppState> {
    let api = OpenApiRouter::new()
        .routes(routes!(
            datasets::list_departments,
            datasets::create_department
        ))
        .routes(routes!(datasets::list_datasets, datasets::create_dataset))
        .routes(routes!(datasets::get_dataset, datasets::change_dataset))
        .routes(routes!(datasets::list_snapshots))
        .routes(routes!(datasets::compact))
        .routes(routes!(datasets::delete_rows))
        // The push handler enforces the configured limit itself, with a JSON answer.
        .routes(routes!(datasets::push_rows).layer(DefaultBodyLimit::disable()))
        .routes(routes!(sql::run_sql))
        .routes(routes!(sharing::apply))
        .routes(routes!(sharing::list_requests))
        .routes(routes!(sharing::get_request))
        .routes(routes!(sharing::approve))
        .routes(routes!(sharing::reject))
        .routes(routes!(sharing::list_grants))
        .routes(routes!(sharing::revoke_grant))
        .routes(routes!(sharing::list_tokens, sharing::create_token))
        .routes(routes!(sharing::revoke_token))
        .routes(routes!(sharing::read_audit))
        .routes(routes!(sharing::whoami))
        .routes(routes!(datasets::ingest_status))
        .routes(routes!(cameras::search))
        .routes(routes!(cameras::stats))
        .routes(routes!(cameras::changes))
        .routes(routes!(cameras::register_batch).layer(DefaultBodyLimit::disable()))
        .routes(routes!(cameras::keepalive).layer(DefaultBodyLimit::disable()))
        .routes(routes!(cameras::events).layer(DefaultBodyLimit::disable()))
        .routes(routes!(cameras::alarms).layer(DefaultBodyLimit::disable()))
        .routes(routes!(cameras::positions).layer(DefaultBodyLimit::disable()))
        .routes(routes!(cameras::get_camera, cameras::put_camera))
        .routes(routes!(cameras::put_curated, cameras::delete_curated))
        .routes(routes!(endpoints::list))
        .routes(routes!(endpoints::result, endpoints::save))
        .routes(routes!(endpoints::events))
        .routes(routes!(endpoints::definition))
        .routes(routes!(openapi::document))
        .fallback(health::not_found);
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .nest("/api/v1", api)
}
