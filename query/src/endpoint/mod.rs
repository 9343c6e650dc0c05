//! Dashboard endpoints: saved, parameterised SQL served from a result cache that changes
//! only when the data does.
//!
//! Layout:
//! - [`plan`]: what an endpoint's SQL reads (its sources), and running it with typed
//!   parameters on the snapshots a cache key names;
//! - [`service`]: [`Endpoints`], the definitions this process serves, a call's cache key,
//!   answers with `ETag`s, saving, and the poller that learns of other processes' changes;
//! - [`cache`]: the result cache (moka), bounded in bytes, one computation per key;
//! - [`events`]: a stream of new results for one call, for server-sent events.
//!
//! Nothing here knows HTTP: every front door maps [`EndpointError`] to its own answers.

pub mod cache;
pub mod events;
pub mod plan;
pub mod service;

pub use cache::{CachedResult, Key};
pub use events::EndpointEvent;
pub use plan::Source;
pub use service::{Answer, Call, Endpoints, Loaded, tag_of};

use cityhub_catalog::CatalogError;

use crate::QueryError;

/// What can go wrong with an endpoint call or definition.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EndpointError {
    /// No endpoint has this name.
    #[error("no endpoint is named {0:?}")]
    NotFound(String),
    /// The caller may not call or change it; the message says who may.
    #[error("{0}")]
    Forbidden(String),
    /// A field of a definition is wrong; `field` names it.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// A call's parameters are wrong (unknown, repeated, out of bounds, wrong type).
    #[error("{0}")]
    BadCall(String),
    /// The caller accepts no format endpoints answer in.
    #[error("{0}")]
    NotAcceptable(String),
    /// Planning or running the query failed.
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl EndpointError {
    /// The same error with `endpoint NAME: ` before its message (a stored definition that
    /// no longer plans).
    pub(crate) fn of_endpoint(self, name: &str) -> Self {
        match self {
            EndpointError::Query(QueryError::Invalid {
                message,
                line,
                column,
            }) => EndpointError::Query(QueryError::Invalid {
                message: format!("endpoint {name}: {message}"),
                line,
                column,
            }),
            EndpointError::Query(QueryError::Forbidden(message)) => {
                EndpointError::Query(QueryError::Forbidden(format!("endpoint {name}: {message}")))
            }
            EndpointError::Query(QueryError::Unsupported(message)) => EndpointError::Query(
                QueryError::Unsupported(format!("endpoint {name}: {message}")),
            ),
            other => other,
        }
    }
}
