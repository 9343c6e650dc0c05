//! Ingest errors: each variant maps to one HTTP status and one error code in the server.

use cityhub_catalog::CatalogError;

use crate::decode::Format;
use crate::push::PushOutcome;

/// What can go wrong while taking data in.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("dataset {0:?} does not exist")]
    DatasetNotFound(String),

    #[error("{0}")]
    Forbidden(String),

    #[error("Content-Type {0:?} is not a format the hub reads")]
    UnsupportedFormat(String),

    #[error("the body is empty; send at least one row")]
    EmptyBody,

    #[error("the {format} body is malformed: {message}")]
    Malformed { format: Format, message: String },

    /// The input's columns do not fit the dataset (unknown, missing or incompatible).
    #[error("the body does not fit the dataset's schema: {0}")]
    SchemaMismatch(String),

    /// Some rows are bad and the push was all-or-nothing (or no row was good).
    #[error("{} of the rows were rejected; nothing was committed", .0.rows_rejected)]
    Rejected(Box<PushOutcome>),

    #[error(
        "the Idempotency-Key {0:?} was already used for a different request; use a new key for new data"
    )]
    IdempotencyMismatch(String),

    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },

    #[error("reading the input failed: {0}")]
    Read(String),

    #[error("object storage failed: {0}")]
    Storage(String),

    #[error("{0}")]
    Catalog(#[from] CatalogError),

    /// Other writers kept committing first; the push may be retried.
    #[error("the dataset is too busy: {attempts} commit attempts lost to concurrent writers")]
    Contention { attempts: u32 },

    #[error("internal error: {0}")]
    Internal(String),
}

impl IngestError {
    /// A refused write as the caller sees it: a hidden dataset does not exist for them.
    pub fn refused(
        dataset: &cityhub_catalog::Dataset,
        refusal: cityhub_catalog::access::PushRefusal,
    ) -> Self {
        match refusal {
            cityhub_catalog::access::PushRefusal::Hidden => {
                IngestError::DatasetNotFound(dataset.name.to_string())
            }
            cityhub_catalog::access::PushRefusal::Forbidden(message) => {
                IngestError::Forbidden(message)
            }
        }
    }
}
