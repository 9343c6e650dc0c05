//! The HTTP API: this file is the router and nothing else. Handlers parse the request,
//! call one library function and answer; each resource has its own file.

pub mod auth;
pub mod cameras;
pub mod datasets;
pub mod endpoints;
pub mod error;
pub mod extract;
pub mod health;
pub mod sharing;
pub mod sql;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};

pub use error::ApiError;

use crate::state::AppState;
use crate::telemetry;

/// The whole HTTP surface of the hub.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route(
            "/departments",
            get(datasets::list_departments).post(datasets::create_department),
        )
        .route(
            "/datasets",
            get(datasets::list_datasets).post(datasets::create_dataset),
        )
        .route(
            "/datasets/{name}",
            get(datasets::get_dataset).patch(datasets::change_dataset),
        )
        .route("/datasets/{name}/snapshots", get(datasets::list_snapshots))
        .route("/datasets/{name}/compact", post(datasets::compact))
        .route("/datasets/{name}/deletes", post(datasets::delete_rows))
        .route(
            "/datasets/{name}/rows",
            // The push handler enforces the configured limit itself, with a JSON answer.
            post(datasets::push_rows).layer(DefaultBodyLimit::disable()),
        )
        .route("/sql", post(sql::run_sql))
        .route("/datasets/{name}/share-requests", post(sharing::apply))
        .route("/share-requests", get(sharing::list_requests))
        .route("/share-requests/{id}", get(sharing::get_request))
        .route("/share-requests/{id}/approve", post(sharing::approve))
        .route("/share-requests/{id}/reject", post(sharing::reject))
        .route("/grants", get(sharing::list_grants))
        .route("/grants/{id}/revoke", post(sharing::revoke_grant))
        .route(
            "/tokens",
            get(sharing::list_tokens).post(sharing::create_token),
        )
        .route("/tokens/{id}", delete(sharing::revoke_token))
        .route("/audit", get(sharing::read_audit))
        .route("/ingest/status", get(datasets::ingest_status))
        .route("/cameras", get(cameras::search))
        .route("/cameras/stats", get(cameras::stats))
        .route(
            "/cameras/batch",
            post(cameras::register_batch).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/cameras/keepalive",
            post(cameras::keepalive).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/cameras/events",
            post(cameras::events).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/cameras/{id}",
            get(cameras::get_camera).put(cameras::put_camera),
        )
        .route(
            "/cameras/{id}/curated",
            put(cameras::put_curated).delete(cameras::delete_curated),
        )
        .route("/endpoints", get(endpoints::list))
        .route(
            "/endpoints/{name}",
            get(endpoints::result).put(endpoints::save),
        )
        .route("/endpoints/{name}/events", get(endpoints::events))
        .route("/endpoints/{name}/definition", get(endpoints::definition))
        .fallback(health::not_found);
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .nest("/api/v1", api)
        .fallback(health::not_found)
        .layer(axum::middleware::from_fn(telemetry::record_request))
        .with_state(state)
}
