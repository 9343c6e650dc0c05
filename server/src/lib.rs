//! cityhub-server: the hub's front doors and background tasks.
//!
//! Layout:
//! - [`state`]: [`AppState`], what every front door shares (catalog, ingest, query,
//!   endpoints, audit), opened from the configuration;
//! - [`http`]: the HTTP API (axum on hyper): the router, extractors, the one mapping of
//!   library errors to HTTP answers, authentication and rate limits, one file per resource;
//! - [`flight`]: Arrow Flight SQL (ADBC, pyarrow, JDBC) over the same query engine;
//! - [`pg`]: the PostgreSQL wire protocol (psql, DBeaver, Grafana, psycopg) over the same
//!   query engine as HTTP;
//! - [`notify`]: GA/T 1400 notifications to the upper platforms that subscribed;
//! - [`ratelimit`]: per-token request rates, for every front door;
//! - [`serve`]: serving on an already bound listener until a shutdown future resolves;
//! - [`tasks`]: background jobs of a running hub (camera sweeper, audit purge);
//! - [`telemetry`]: logging and the Prometheus registry.
//!
//! This is the only crate that knows axum, tower, hyper, pgwire and tonic. Handlers parse the request,
//! call one library function and answer: business rules, audit and cache invalidation live
//! in the libraries, so every front door behaves the same.

pub mod cancel;
pub mod deletes;
pub mod flight;
pub mod http;
pub mod notify;
pub mod pg;
pub mod query_cluster;
pub mod ratelimit;
pub mod serve;
pub mod state;
pub mod tasks;
pub mod telemetry;

pub use state::{AppState, OpenError};
