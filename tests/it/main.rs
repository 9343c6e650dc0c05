//! The end-to-end tests: one binary (each test binary links DataFusion and rdkafka), one
//! module per area. Every test starts the real hub on port 0 with a temp data folder.
//!
//! Run one area with `cargo test --test it -- push::`.

mod support;

mod api;
mod ballista_cluster;
mod cameras;
mod cli;
mod cluster;
mod console;
mod crash;
mod endpoints;
mod flight;
mod hardening;
mod kafka;
mod kafka_broker;
mod kafka_cameras;
mod lifecycle;
mod openapi;
mod pg;
mod push;
mod regions;
mod sharing;
mod sql;
mod upsert;
mod viid;
