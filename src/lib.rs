//! cityhub: the data-sharing and video-resource hub of a city.
//!
//! This crate is the binary: the command line ([`cli`]) and the demo city ([`demo`]). The
//! work happens in the library crates, in one direction:
//! - `cityhub-config`: layered configuration;
//! - `cityhub-catalog`: the metadata catalog (SQLite), access rules, audit, cameras;
//! - `cityhub-ingest`: decoding, validation, Parquet files, commits, Kafka feeds;
//! - `cityhub-query`: SQL over the snapshots (DataFusion), masking, dashboard endpoints;
//! - `cityhub-server`: the HTTP API and background tasks.

pub mod cli;
pub mod demo;
