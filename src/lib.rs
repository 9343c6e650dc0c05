//! cityhub: the data-sharing and video-resource hub of a city.
//!
//! This crate is the glue: the CLI (`main.rs`), HTTP routes, wiring and shutdown. The
//! work happens in the library crates:
//! - `cityhub-config`: layered configuration;
//! - `cityhub-catalog`: the metadata catalog (SQLite);
//! - `cityhub-ingest`: decoding, validation, Parquet files and snapshot commits;
//! - `cityhub-query`: SQL over the snapshots (DataFusion).

pub mod auth;
pub mod camera_import;
pub mod cameras;
pub mod demo;
pub mod demo_cameras;
pub mod demo_endpoints;
pub mod endpoint_cache;
pub mod endpoint_service;
pub mod endpoints;
pub mod error;
pub mod principals;
pub mod ratelimit;
pub mod routes;
pub mod server;
pub mod sharing;
pub mod sql;
pub mod state;
pub mod telemetry;

pub use state::AppState;
