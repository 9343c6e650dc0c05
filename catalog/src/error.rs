//! Catalog errors: each variant is a distinct answer a caller can act on.

/// What can go wrong in the catalog.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CatalogError {
    /// A field of a request is not acceptable; `field` names it.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },

    #[error("{what} {name:?} already exists")]
    AlreadyExists { what: &'static str, name: String },

    #[error("{what} {name:?} does not exist")]
    NotFound { what: &'static str, name: String },

    /// Another writer committed first; re-read the dataset and try again.
    #[error(
        "dataset {dataset_id} moved from snapshot {expected:?} to {actual:?} while this commit was prepared"
    )]
    Conflict {
        dataset_id: i64,
        expected: Option<i64>,
        actual: Option<i64>,
    },

    /// A schema change that old files could not be read under; one sentence per column.
    #[error("the schema change is refused: {}", .0.join("; "))]
    SchemaChange(Vec<String>),

    /// A change that removes files (a compaction, a delete) found some of them already
    /// removed by another commit since it read them; it must be planned again.
    #[error(
        "{} file(s) this change read were removed by another commit meanwhile (first: {}); plan it again",
        .paths.len(), .paths.first().map(String::as_str).unwrap_or("")
    )]
    FilesGone { dataset_id: i64, paths: Vec<String> },

    #[error(
        "the Idempotency-Key {key:?} was already used for a different request; use a new key for new data"
    )]
    IdempotencyMismatch { key: String },

    /// A stream partition's stored offset is not what the committer expected: another
    /// worker consumed it since (after a rebalance). The committer must re-read and seek.
    #[error(
        "partition {partition} of {topic} is at offset {actual:?} in the catalog, not {expected:?}: another worker took it over"
    )]
    OffsetConflict {
        topic: String,
        partition: i32,
        expected: Option<i64>,
        actual: Option<i64>,
    },

    /// No valid token came with the request; the message says what was wrong with it.
    #[error("{0}")]
    Unauthenticated(String),

    /// The caller may not do this; the message says who may.
    #[error("{0}")]
    Forbidden(String),

    /// The thing exists but is not in a state that allows the change (a request already
    /// decided, a grant already revoked).
    #[error("{0}")]
    WrongState(String),

    /// A change feed's cursor is older than what retention kept: the consumer must read the
    /// whole state again; the message says how.
    #[error("{0}")]
    ResyncRequired(String),

    /// The underlying database failed; not the caller's fault.
    #[error("catalog storage failed: {0}")]
    Storage(String),
}

impl CatalogError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        CatalogError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<rusqlite::Error> for CatalogError {
    fn from(err: rusqlite::Error) -> Self {
        CatalogError::Storage(err.to_string())
    }
}

impl From<serde_json::Error> for CatalogError {
    fn from(err: serde_json::Error) -> Self {
        CatalogError::Storage(format!("stored JSON is unreadable: {err}"))
    }
}

pub type Result<T, E = CatalogError> = std::result::Result<T, E>;
