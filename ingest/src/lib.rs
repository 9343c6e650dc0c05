//! cityhub ingest: how data gets into the hub.
//!
//! Layout:
//! - [`decode`]: the five body formats (NDJSON, JSON array, CSV, Arrow IPC, Parquet) into
//!   Arrow batches of a dataset's schema, with per-row rejections.
//! - [`value`]: one field of text input to one typed cell (types, timestamps, decimals).
//! - [`parquet_file`]: Parquet encoding and the per-file statistics the catalog keeps.
//! - [`storage`]: the object store, with durable local writes.
//! - [`snapshot`]: writing files and committing them as a snapshot, retrying lost races.
//! - [`push`]: the HTTP push operation (validation, idempotency, all-or-nothing).
//! - [`import`]: streaming bulk loads of local files, with schema inference.
//! - [`kafka`]: department topics consumed into datasets exactly once, with dead letters.
//!
//! The order of a write never changes: files first (`PutMode::Create`, synced), then one
//! catalog transaction. A crash in between leaves an orphan file that no snapshot names,
//! never a half-visible snapshot.

pub mod decode;
pub mod error;
pub mod import;
pub mod infer;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod parquet_file;
pub mod push;
pub mod snapshot;
pub mod storage;
pub mod value;

pub use decode::{Format, RowError};
pub use error::IngestError;
pub use push::{PushOutcome, PushRequest};
pub use snapshot::Ingest;
pub use storage::Storage;
