//! The hub's errors as PostgreSQL errors: the same message as over HTTP, with the SQLSTATE
//! a PostgreSQL client acts on.

use cityhub_query::QueryError;
use pgwire::error::{ErrorInfo, PgWireError};

/// An error that ends the connection (a failed login).
pub fn fatal(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_string(),
        code.to_string(),
        message,
    )))
}

/// An error that ends the statement; the session goes on.
pub fn error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        code.to_string(),
        message.into(),
    )))
}

/// SQLSTATE 57014, as PostgreSQL answers a statement stopped by a CancelRequest.
pub fn cancelled() -> PgWireError {
    error("57014", "canceling statement due to user request")
}

/// The SQLSTATE of a query error.
pub fn sqlstate(err: &QueryError) -> &'static str {
    match err {
        // insufficient_privilege: a conditional dataset without a grant, out of scope.
        QueryError::Forbidden(_) => "42501",
        // feature_not_supported: DDL, DML, COPY, file tables on a read-only surface.
        QueryError::Unsupported(_) => "0A000",
        QueryError::Invalid { message, .. } if message.starts_with("the SQL does not parse") => {
            "42601"
        }
        // syntax_error_or_access_rule_violation: unknown tables and columns, bad types.
        QueryError::Invalid { .. } => "42000",
        QueryError::Parameter(_) => "22023",
        QueryError::NotAcceptable(_) => "0A000",
        // query_canceled, as PostgreSQL's statement_timeout answers.
        QueryError::Timeout(_) => "57014",
        QueryError::MemoryLimit(_) => "53200",
        // connection_exception: the engine behind the hub cannot be reached.
        QueryError::Unavailable(_) => "08006",
        QueryError::Internal(_) => "XX000",
    }
}

pub fn from_query(err: &QueryError) -> PgWireError {
    error(sqlstate(err), err.to_string())
}
