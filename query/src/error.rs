//! Query errors, each with the HTTP status the server gives it.

use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::parser::ParserError;

/// Prefix of the timeout error raised by the engine's deadline.
pub(crate) const TIMEOUT_MARKER: &str = "the query ran longer than the limit of ";

/// A query named a conditional dataset without holding a grant.
#[derive(Debug, thiserror::Error)]
#[error(
    "{dataset} is shared on condition and your department holds no active grant for it; \
     apply with POST /api/v1/datasets/{dataset}/share-requests {{\"purpose\": \"...\"}} \
     and query it once its owner approves"
)]
pub struct NeedsGrant {
    pub dataset: String,
}

/// A region-scoped principal named a dataset that says nothing of regions.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct OutOfScope {
    pub message: String,
}

/// A time-travelling read named a snapshot that is not (or no longer) there.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct NotReadable {
    pub message: String,
}

/// What can go wrong with a query.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QueryError {
    /// The caller may not read this: its role, a conditional dataset without a grant, a
    /// dataset outside its region.
    #[error("{0}")]
    Forbidden(String),

    /// Not on this surface for anyone: DDL, DML, COPY, settings, file and URL tables,
    /// several statements in one request.
    #[error("{0}")]
    Unsupported(String),

    /// The SQL is wrong: syntax, unknown table or column, wrong types. `line` and `column`
    /// point into the SQL where DataFusion knows the place.
    #[error("{message}")]
    Invalid {
        message: String,
        line: Option<u64>,
        column: Option<u64>,
    },

    /// A parameter could not be bound.
    #[error("{0}")]
    Parameter(String),

    /// No result format the client accepts.
    #[error("{0}")]
    NotAcceptable(String),

    #[error("{0}")]
    Timeout(String),

    /// The query needed more memory than its limit and could not spill.
    #[error("{0}")]
    MemoryLimit(String),

    /// The engine that should run the query cannot be reached (the Ballista scheduler is
    /// down and `query.ballista_fallback` is off): nothing ran; try again later.
    #[error("{0}")]
    Unavailable(String),

    #[error("{0}")]
    Internal(String),
}

impl QueryError {
    pub(crate) fn internal(err: impl std::fmt::Display) -> Self {
        QueryError::Internal(err.to_string())
    }

    /// Sorts a DataFusion error into what the caller did wrong and what the hub did.
    pub fn from_datafusion(err: DataFusionError) -> Self {
        let position = err
            .diagnostic()
            .and_then(|d| d.span)
            .filter(|span| span.start.line > 0)
            .map(|span| (span.start.line, span.start.column));
        let message = err.strip_backtrace();
        let root = err.find_root();
        if let DataFusionError::External(inner) = root
            && let Some(needs) = inner.downcast_ref::<NeedsGrant>()
        {
            return QueryError::Forbidden(needs.to_string());
        }
        if let DataFusionError::External(inner) = root
            && let Some(refused) = inner.downcast_ref::<OutOfScope>()
        {
            return QueryError::Forbidden(refused.to_string());
        }
        if let DataFusionError::External(inner) = root
            && let Some(not_readable) = inner.downcast_ref::<NotReadable>()
        {
            return QueryError::Invalid {
                message: not_readable.to_string(),
                line: None,
                column: None,
            };
        }
        if let DataFusionError::SQL(parser, _) = root {
            return syntax_error(parser, position);
        }
        match root {
            DataFusionError::ResourcesExhausted(_) => QueryError::MemoryLimit(format!(
                "the query needs more memory than its limit (query.memory_limit_bytes): {message}"
            )),
            DataFusionError::Execution(text) if text.starts_with(TIMEOUT_MARKER) => {
                QueryError::Timeout(format!(
                    "{text} (query.timeout_secs); narrow the query or ask an operator"
                ))
            }
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_) => QueryError::Invalid {
                message,
                line: position.map(|p| p.0),
                column: position.map(|p| p.1),
            },
            DataFusionError::Execution(_) | DataFusionError::ArrowError(..) => {
                // Runtime errors caused by the data or the query (casts, division by
                // zero) are the caller's to fix.
                QueryError::Invalid {
                    message,
                    line: None,
                    column: None,
                }
            }
            _ => QueryError::Internal(message),
        }
    }
}

/// A parser's complaint as a sentence, with the place it names (`... at Line: 1, Column: 1`)
/// moved into `line` and `column`.
fn syntax_error(parser: &ParserError, position: Option<(u64, u64)>) -> QueryError {
    let text = match parser {
        ParserError::TokenizerError(text) | ParserError::ParserError(text) => text.as_str(),
        ParserError::RecursionLimitExceeded => "the query nests too deeply",
    };
    let (text, place) = match text.rsplit_once(" at Line: ") {
        Some((before, place)) => {
            let place = place.split_once(", Column: ").and_then(|(line, column)| {
                Some((line.trim().parse().ok()?, column.trim().parse().ok()?))
            });
            (before, place)
        }
        None => (text, None),
    };
    let position = position.or(place);
    let text = text.replacen("Expected: ", "expected ", 1);
    let mut message = format!("the SQL does not parse: {text}");
    if let Some((line, column)) = position {
        message.push_str(&format!(" (line {line}, column {column})"));
    }
    QueryError::Invalid {
        message,
        line: position.map(|p| p.0),
        column: position.map(|p| p.1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_syntax_error_is_a_sentence_with_its_place() {
        let err = datafusion::sql::parser::DFParser::parse_sql("SELEC 1").expect_err("bad SQL");
        match QueryError::from_datafusion(err) {
            QueryError::Invalid {
                message,
                line,
                column,
            } => {
                assert_eq!(
                    message,
                    "the SQL does not parse: expected an SQL statement, found: SELEC (line 1, column 1)"
                );
                assert!(!message.contains("ParserError"), "{message}");
                assert_eq!((line, column), (Some(1), Some(1)));
            }
            other => panic!("{other:?}"),
        }
    }
}
