//! The simple and extended query protocols over the hub's query engine.
//!
//! Statements are read with PostgreSQL's grammar (and the rewrites PostgreSQL clients
//! need, such as `::regclass`); session statements (`SET`, `SHOW`, `BEGIN`, cursors) are
//! answered here, everything else goes to [`cityhub_query::QueryEngine`] as SQL text, the
//! same way `POST /api/v1/sql` sends it, so refusals read the same on both doors.

use std::fmt::Debug;
use std::sync::Arc;

use arrow_pg::datatypes::df::deserialize_parameters_with_server_types;
use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type};
use async_trait::async_trait;
use cityhub_query::{Batches, Origin, Via};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::sql::sqlparser::ast::{CloseCursor, FetchDirection, Statement, Value};
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use futures::{Sink, SinkExt, Stream, StreamExt};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::{MemPortalStore, PortalStore};
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::data::DataRow;
use pgwire::types::format::FormatOptions;

use super::errors::{self, cancelled, error, from_query};
use super::session::{CancelWatch, Session};
use crate::cancel::UntilCancelled;
use crate::state::AppState;
use cityhub_query::pg::VERSION;

/// A statement as the PostgreSQL door keeps it between Parse and Execute.
#[derive(Debug, Clone)]
pub struct PgStatement {
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    /// SQL for the engine; `described` once planned for Describe (extended protocol).
    Query {
        sql: String,
        described: Option<Described>,
    },
    Begin,
    /// `COMMIT` or `ROLLBACK`: nothing to commit, the surface is read-only.
    End {
        tag: &'static str,
    },
    Set {
        name: String,
        value: String,
    },
    /// `SHOW name`, or `SHOW ALL` with `None`.
    Show {
        name: Option<String>,
    },
    Declare {
        cursor: String,
        sql: String,
        binary: bool,
        described: Option<Described>,
    },
    /// `FETCH count FROM cursor` (0: all that is left).
    Fetch {
        cursor: String,
        count: usize,
        schema: Option<SchemaRef>,
    },
    Close {
        cursor: Option<String>,
    },
    /// Accepted and answered with its tag, changing nothing (`DISCARD ALL`, `DEALLOCATE`).
    Accepted {
        tag: &'static str,
    },
}

#[derive(Debug, Clone)]
struct Described {
    parameters: Vec<Option<DataType>>,
    schema: SchemaRef,
}

pub struct PgQueries {
    state: AppState,
    parser: Arc<StatementParser>,
}

impl PgQueries {
    pub fn new(state: AppState) -> Self {
        Self {
            parser: Arc::new(StatementParser {
                state: state.clone(),
                grammar: PostgresCompatibilityParser::new(),
            }),
            state,
        }
    }

    /// Starts a query for the session: its columns, and its rows as they come.
    async fn start_query(
        &self,
        session: &Session,
        sql: &str,
        params: Vec<ScalarValue>,
        format: &Format,
        options: Arc<FormatOptions>,
    ) -> PgWireResult<(SchemaRef, QueryResponse)> {
        self.check_rate(session)?;
        let result = self
            .state
            .query
            .execute_typed(&session.principal, sql, params, &origin(session))
            .await
            .map_err(|err| from_query(&err))?;
        let fields = Arc::new(arrow_schema_to_pg_fields(
            &result.schema,
            format,
            Some(options),
        )?);
        let rows = rows(result.batches, fields.clone(), session.cancel_watch());
        Ok((result.schema, QueryResponse::new(fields, rows)))
    }

    /// The token's rate limit holds on every door: each statement that runs counts.
    fn check_rate(&self, session: &Session) -> PgWireResult<()> {
        let principal = &session.principal;
        self.state
            .limiter
            .check(principal.id, principal.rate_limit_per_second)
            .map_err(|wait| {
                metrics::counter!("cityhub_rate_limited_total").increment(1);
                error(
                    "53400",
                    format!(
                        "this token's rate limit is exceeded; retry in {} ms",
                        wait.as_millis().max(1)
                    ),
                )
            })
    }

    /// Answers a session statement, or runs a query (parameters already bound).
    #[allow(clippy::too_many_arguments)]
    async fn answer(
        &self,
        session: &Session,
        kind: &Kind,
        params: Vec<ScalarValue>,
        format: &Format,
        options: Arc<FormatOptions>,
        cursors: &MemPortalStore<PgStatement>,
    ) -> PgWireResult<Response> {
        Ok(match kind {
            Kind::Query { sql, .. } => {
                let (_, rows) = self
                    .start_query(session, sql, params, format, options)
                    .await?;
                Response::Query(rows)
            }
            Kind::Begin => Response::TransactionStart(Tag::new("BEGIN")),
            Kind::End { tag } => {
                // Cursors declared WITHOUT HOLD end with their transaction.
                session.close_cursors(None);
                Response::TransactionEnd(Tag::new(tag))
            }
            Kind::Set { name, value } => {
                session.set(name, value);
                Response::Execution(Tag::new("SET"))
            }
            Kind::Show { name } => Response::Query(show(session, name.as_deref())?),
            Kind::Declare {
                cursor,
                sql,
                binary,
                ..
            } => {
                let format = match binary {
                    true => Format::UnifiedBinary,
                    false => Format::UnifiedText,
                };
                let (schema, response) = self
                    .start_query(session, sql, params, &format, options)
                    .await?;
                let statement = PgStatement {
                    kind: Kind::Query {
                        sql: sql.clone(),
                        described: Some(Described {
                            parameters: Vec::new(),
                            schema: schema.clone(),
                        }),
                    },
                };
                // A cursor is a portal by its name: psycopg describes it as one.
                let portal = Portal::new_cursor(
                    cursor.clone(),
                    Arc::new(StoredStatement::new(cursor.clone(), statement, Vec::new())),
                );
                portal.start(response).await;
                cursors.put_portal(Arc::new(portal));
                session.open_cursor(cursor, schema);
                Response::Execution(Tag::new("DECLARE CURSOR"))
            }
            Kind::Fetch { cursor, count, .. } => {
                let Some(portal) = cursors
                    .get_portal(cursor)
                    .and_then(|entry| entry.value().cloned())
                else {
                    return Err(error(
                        "34000",
                        format!("cursor \"{cursor}\" does not exist"),
                    ));
                };
                let fetched = portal.fetch(*count).await?;
                let mut response = fetched.response;
                response.set_command_tag("FETCH");
                Response::Query(response)
            }
            Kind::Close { cursor } => {
                match cursor {
                    Some(name) => cursors.rm_portal(name),
                    None => cursors.clear_portals(),
                }
                session.close_cursors(cursor.as_deref());
                Response::Execution(Tag::new("CLOSE CURSOR"))
            }
            Kind::Accepted { tag } => Response::Execution(Tag::new(tag)),
        })
    }
}

fn origin(session: &Session) -> Origin {
    Origin {
        via: Via::Pg,
        client_user: Some(session.user.clone()),
        pg_catalog: Some(session.pg_catalog.clone()),
    }
}

/// The connection's portals, where declared cursors live beside the extended protocol's.
fn portals<S: PortalStore>(store: &S) -> PgWireResult<&MemPortalStore<PgStatement>> {
    store
        .as_any()
        .downcast_ref::<MemPortalStore<PgStatement>>()
        .ok_or_else(|| error("XX000", "the connection's portal store is not the hub's"))
}

/// The session of a logged-in connection.
fn session_of<C: ClientInfo>(client: &C) -> PgWireResult<Arc<Session>> {
    client
        .session_extensions()
        .get::<Session>()
        .ok_or_else(|| errors::fatal("28000", "the connection has not logged in".to_string()))
}

#[async_trait]
impl SimpleQueryHandler for PgQueries {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = session_of(client)?;
        let statements = self.parser.split(query)?;
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut responses = Vec::with_capacity(statements.len());
        for kind in statements {
            let kind = self.parser.resolve(&session, kind, false).await;
            let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
            let cursors = portals(client.portal_store())?;
            let answered = match kind {
                Ok(kind) => {
                    let format = Format::UnifiedText;
                    self.answer(&session, &kind, Vec::new(), &format, options, cursors)
                        .await
                }
                Err(err) => Err(err),
            };
            match answered {
                Ok(response) => responses.push(response),
                // PostgreSQL stops at the first failing statement of a simple query.
                Err(err) => {
                    responses.push(Response::Error(Box::new(ErrorInfo::from(err))));
                    break;
                }
            }
        }
        Ok(responses)
    }
}

#[async_trait]
impl ExtendedQueryHandler for PgQueries {
    type Statement = PgStatement;
    type QueryParser = StatementParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = session_of(client)?;
        let kind = &portal.statement.statement.kind;
        let params = match kind {
            Kind::Query { described, .. } | Kind::Declare { described, .. } => {
                parameters(portal, described.as_ref())?
            }
            _ => Vec::new(),
        };
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        let cursors = portals(client.portal_store())?;
        let response = self
            .answer(
                &session,
                kind,
                params,
                &portal.result_column_format,
                options,
                cursors,
            )
            .await?;
        match response {
            // Without a row limit pgwire would gather every row before sending: send them
            // as the engine makes them, and let pgwire close with the command tag.
            Response::Query(mut rows) if max_rows == 0 => {
                let tag = rows.command_tag().to_string();
                let mut sent = 0;
                while let Some(row) = rows.data_rows().next().await {
                    client.feed(PgWireBackendMessage::DataRow(row?)).await?;
                    sent += 1;
                }
                Ok(Response::Execution(Tag::new(&tag).with_rows(sent)))
            }
            other => Ok(other),
        }
    }
}

/// The bound parameters of a portal as typed values: the client's types where it sent
/// them, else the types the planner inferred, else text.
fn parameters(
    portal: &Portal<PgStatement>,
    described: Option<&Described>,
) -> PgWireResult<Vec<ScalarValue>> {
    let inferred: Vec<Option<&DataType>> = described
        .map(|d| d.parameters.iter().map(Option::as_ref).collect())
        .unwrap_or_default();
    let server_types: Vec<Type> = inferred
        .iter()
        .map(|data_type| wire_type(*data_type))
        .collect();
    let server_types: Vec<Option<&Type>> = server_types.iter().map(Some).collect();
    let values = deserialize_parameters_with_server_types(portal, &inferred, &server_types)?;
    Ok(match values {
        datafusion::common::ParamValues::List(values) => {
            values.into_iter().map(|value| value.value).collect()
        }
        datafusion::common::ParamValues::Map(_) => Vec::new(),
    })
}

/// The PostgreSQL type a parameter is announced as: text where nothing says otherwise.
fn wire_type(data_type: Option<&DataType>) -> Type {
    data_type
        .and_then(|data_type| into_pg_type(data_type).ok())
        .unwrap_or(Type::TEXT)
}

pub struct StatementParser {
    state: AppState,
    grammar: PostgresCompatibilityParser,
}

impl StatementParser {
    /// Splits a query string into statements, read with PostgreSQL's grammar. What that
    /// grammar cannot read goes to the engine as it is, so that the error is the engine's
    /// (the same as over HTTP, with its line and column).
    fn split(&self, query: &str) -> PgWireResult<Vec<Kind>> {
        let statements = match self.grammar.parse(query) {
            Ok(statements) => statements,
            Err(_) => {
                return Ok(vec![Kind::Query {
                    sql: query.to_string(),
                    described: None,
                }]);
            }
        };
        statements.iter().map(kind_of).collect()
    }

    /// Fills in what a statement needs to describe itself: the engine's plan of a query,
    /// a cursor's columns. Only the extended protocol describes (`describe`).
    async fn resolve(&self, session: &Session, kind: Kind, describe: bool) -> PgWireResult<Kind> {
        Ok(match kind {
            Kind::Query { sql, .. } if describe => {
                let described = self.describe(session, &sql).await?;
                Kind::Query {
                    sql,
                    described: Some(described),
                }
            }
            Kind::Declare {
                cursor,
                sql,
                binary,
                ..
            } if describe => {
                let described = self.describe(session, &sql).await?;
                Kind::Declare {
                    cursor,
                    sql,
                    binary,
                    described: Some(described),
                }
            }
            Kind::Fetch { cursor, count, .. } => {
                let schema = session
                    .cursor(&cursor)
                    .ok_or_else(|| error("34000", format!("cursor \"{cursor}\" does not exist")))?;
                Kind::Fetch {
                    cursor,
                    count,
                    schema: Some(schema),
                }
            }
            other => other,
        })
    }

    async fn describe(&self, session: &Session, sql: &str) -> PgWireResult<Described> {
        let described = self
            .state
            .query
            .describe(&session.principal, sql, &origin(session))
            .await
            .map_err(|err| from_query(&err))?;
        Ok(Described {
            parameters: described.parameters,
            schema: described.schema,
        })
    }
}

#[async_trait]
impl QueryParser for StatementParser {
    type Statement = PgStatement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let session = session_of(client)?;
        let mut statements = self.split(sql)?;
        if statements.len() > 1 {
            return Err(error(
                "42601",
                "cannot insert multiple commands into a prepared statement",
            ));
        }
        let Some(kind) = statements.pop() else {
            return Ok(None);
        };
        let kind = self.resolve(&session, kind, true).await?;
        Ok(Some(PgStatement { kind }))
    }

    fn get_parameter_types(&self, statement: &Self::Statement) -> PgWireResult<Vec<Type>> {
        Ok(match &statement.kind {
            Kind::Query {
                described: Some(described),
                ..
            }
            | Kind::Declare {
                described: Some(described),
                ..
            } => described
                .parameters
                .iter()
                .map(|data_type| wire_type(data_type.as_ref()))
                .collect(),
            _ => Vec::new(),
        })
    }

    fn get_result_schema(
        &self,
        statement: &Self::Statement,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        let format = format.unwrap_or(&Format::UnifiedText);
        match &statement.kind {
            Kind::Query {
                described: Some(described),
                ..
            } => arrow_schema_to_pg_fields(&described.schema, format, None),
            Kind::Fetch {
                schema: Some(schema),
                ..
            } => arrow_schema_to_pg_fields(schema, format, None),
            Kind::Show { name } => Ok(show_fields(name.as_deref())),
            _ => Ok(Vec::new()),
        }
    }
}

/// What a parsed statement is to the PostgreSQL door.
fn kind_of(statement: &Statement) -> PgWireResult<Kind> {
    Ok(match statement {
        Statement::StartTransaction { .. } => Kind::Begin,
        Statement::Commit { .. } => Kind::End { tag: "COMMIT" },
        Statement::Rollback { .. } => Kind::End { tag: "ROLLBACK" },
        Statement::Set(_) => {
            let (name, value) = set_name_and_value(&statement.to_string());
            Kind::Set { name, value }
        }
        Statement::ShowVariable { variable } => {
            let words: Vec<String> = variable
                .iter()
                .map(|word| word.value.to_ascii_lowercase())
                .collect();
            let name = match words.join(" ").as_str() {
                "all" => None,
                "transaction isolation level" => Some("transaction_isolation".to_string()),
                "time zone" => Some("timezone".to_string()),
                other => Some(other.to_string()),
            };
            Kind::Show { name }
        }
        Statement::Declare { stmts } => {
            let [declare] = stmts.as_slice() else {
                return Err(error("42601", "declare one cursor at a time"));
            };
            let (Some(cursor), Some(query)) = (declare.names.first(), declare.for_query.as_ref())
            else {
                return Err(error(
                    "42601",
                    "DECLARE needs a cursor name and FOR a query: DECLARE c CURSOR FOR SELECT ...",
                ));
            };
            if declare.scroll == Some(true) {
                return Err(error(
                    "0A000",
                    "cursors scroll forward only: declare it NO SCROLL (the default)",
                ));
            }
            Kind::Declare {
                cursor: cursor.value.clone(),
                sql: query.to_string(),
                binary: declare.binary == Some(true),
                described: None,
            }
        }
        Statement::Fetch {
            name, direction, ..
        } => Kind::Fetch {
            cursor: name.value.clone(),
            count: fetch_count(direction)?,
            schema: None,
        },
        Statement::Close { cursor } => Kind::Close {
            cursor: match cursor {
                CloseCursor::All => None,
                CloseCursor::Specific { name } => Some(name.value.clone()),
            },
        },
        // COPY FROM would write, COPY TO would read files: the same refusal as HTTP's.
        Statement::Copy { .. } => return Err(from_query(&cityhub_query::guard::refusal("COPY"))),
        Statement::Discard { .. } => Kind::Accepted { tag: "DISCARD ALL" },
        Statement::Deallocate { .. } => Kind::Accepted { tag: "DEALLOCATE" },
        other => Kind::Query {
            sql: other.to_string(),
            described: None,
        },
    })
}

/// How many rows a FETCH asks for (0: all); cursors only move forward.
fn fetch_count(direction: &FetchDirection) -> PgWireResult<usize> {
    let number = |value: &Value| match value {
        Value::Number(text, _) => text.parse::<usize>().ok(),
        _ => None,
    };
    match direction {
        FetchDirection::Next | FetchDirection::Forward { limit: None } => Ok(1),
        FetchDirection::Forward { limit: Some(limit) } | FetchDirection::Count { limit } => {
            number(&limit.value).ok_or_else(|| error("42601", "FETCH takes a whole number of rows"))
        }
        FetchDirection::All | FetchDirection::ForwardAll => Ok(0),
        _ => Err(error(
            "0A000",
            "cursors scroll forward only: FETCH NEXT, FORWARD n or ALL",
        )),
    }
}

/// `SET [SESSION | LOCAL] name { TO | = } value` as the name and the value's text.
fn set_name_and_value(text: &str) -> (String, String) {
    let rest = text.trim().trim_end_matches(';');
    let rest = rest.get(3..).unwrap_or("").trim_start();
    let rest = ["SESSION ", "LOCAL "]
        .iter()
        .find_map(|word| {
            rest.get(..word.len())
                .filter(|head| head.eq_ignore_ascii_case(word))
                .map(|_| &rest[word.len()..])
        })
        .unwrap_or(rest)
        .trim();
    let (name, value) = match rest.find(['=', ' ']) {
        Some(at) => (&rest[..at], rest[at..].trim_start_matches([' ', '='])),
        None => (rest, ""),
    };
    let value = value
        .trim()
        .strip_prefix("TO ")
        .or_else(|| value.trim().strip_prefix("to "))
        .unwrap_or(value.trim());
    let value = value.trim().trim_matches('\'').trim_matches('"');
    (name.trim().to_ascii_lowercase(), value.to_string())
}

fn show_fields(name: Option<&str>) -> Vec<FieldInfo> {
    let text = |name: &str| FieldInfo::new(name.into(), None, None, Type::TEXT, FieldFormat::Text);
    match name {
        Some(name) => vec![text(name)],
        None => vec![text("name"), text("setting")],
    }
}

/// The answer to `SHOW name` or `SHOW ALL`.
fn show(session: &Session, name: Option<&str>) -> PgWireResult<QueryResponse> {
    let fields = Arc::new(show_fields(name));
    let rows: Vec<Vec<Option<String>>> = match name {
        Some("server_version_full") => vec![vec![Some(VERSION.to_string())]],
        Some(name) => {
            let value = session.show(name).ok_or_else(|| {
                error(
                    "42704",
                    format!("unrecognized configuration parameter \"{name}\""),
                )
            })?;
            vec![vec![Some(value)]]
        }
        None => session
            .show_all()
            .into_iter()
            .map(|(name, value)| vec![Some(name), Some(value)])
            .collect(),
    };
    let schema = Arc::new(Schema::new(
        fields
            .iter()
            .map(|field| Field::new(field.name(), DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let columns = (0..fields.len())
        .map(|index| {
            let values: Vec<Option<String>> = rows.iter().map(|row| row[index].clone()).collect();
            Arc::new(datafusion::arrow::array::StringArray::from(values)) as _
        })
        .collect();
    let batch =
        RecordBatch::try_new(schema, columns).map_err(|err| error("XX000", err.to_string()))?;
    let encoded: Vec<PgWireResult<DataRow>> = encode_recordbatch(fields.clone(), batch).collect();
    let mut response = QueryResponse::new(fields, futures::stream::iter(encoded));
    response.set_command_tag("SHOW");
    Ok(response)
}

/// A query's batches as PostgreSQL rows, encoded one batch at a time as the engine makes
/// them; a cancel request ends the stream with 57014.
fn rows(
    batches: Batches,
    fields: Arc<Vec<FieldInfo>>,
    cancel: CancelWatch,
) -> impl Stream<Item = PgWireResult<DataRow>> + Send + 'static {
    UntilCancelled::new(batches, cancel.cancelled(), cancelled, |err| {
        from_query(&err)
    })
    .flat_map(move |batch| {
        let rows: Box<dyn Iterator<Item = PgWireResult<DataRow>> + Send> = match batch {
            Ok(batch) => encode_recordbatch(fields.clone(), batch),
            Err(err) => Box::new(std::iter::once(Err(err))),
        };
        futures::stream::iter(rows)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(sql: &str) -> Kind {
        let statements = PostgresCompatibilityParser::new()
            .parse(sql)
            .expect("parses");
        kind_of(&statements[0]).expect("a kind")
    }

    #[test]
    fn set_statements_give_their_name_and_value() {
        for (sql, name, value) in [
            ("SET extra_float_digits = 3", "extra_float_digits", "3"),
            (
                "SET application_name TO 'PostgreSQL JDBC Driver'",
                "application_name",
                "PostgreSQL JDBC Driver",
            ),
            (
                "set SESSION statement_timeout = 0",
                "statement_timeout",
                "0",
            ),
            ("SET DateStyle=ISO", "datestyle", "ISO"),
        ] {
            assert_eq!(
                set_name_and_value(sql),
                (name.to_string(), value.to_string()),
                "{sql}"
            );
        }
    }

    #[test]
    fn session_statements_are_answered_by_the_door() {
        assert!(matches!(kind("BEGIN"), Kind::Begin));
        assert!(matches!(kind("COMMIT"), Kind::End { tag: "COMMIT" }));
        assert!(matches!(kind("ROLLBACK"), Kind::End { tag: "ROLLBACK" }));
        assert!(matches!(kind("SET search_path = hub"), Kind::Set { .. }));
        match kind("SHOW transaction isolation level") {
            Kind::Show { name } => assert_eq!(name.as_deref(), Some("transaction_isolation")),
            other => panic!("{other:?}"),
        }
        match kind("SHOW ALL") {
            Kind::Show { name } => assert_eq!(name, None),
            other => panic!("{other:?}"),
        }
        match kind("DECLARE c CURSOR FOR SELECT id FROM gongan.events") {
            Kind::Declare { cursor, sql, .. } => {
                assert_eq!(cursor, "c");
                assert_eq!(sql, "SELECT id FROM gongan.events");
            }
            other => panic!("{other:?}"),
        }
        match kind("FETCH FORWARD 500 FROM c") {
            Kind::Fetch { cursor, count, .. } => assert_eq!((cursor.as_str(), count), ("c", 500)),
            other => panic!("{other:?}"),
        }
        // Everything else is the engine's to run or refuse.
        assert!(matches!(kind("SELECT 1"), Kind::Query { .. }));
        assert!(matches!(
            kind("DROP TABLE gongan.events"),
            Kind::Query { .. }
        ));
    }

    #[test]
    fn cursors_move_forward_only_and_copy_is_refused() {
        let statements = PostgresCompatibilityParser::new()
            .parse("FETCH BACKWARD 1 FROM c; COPY gongan.events FROM STDIN")
            .expect("parses");
        for statement in &statements {
            let refused = kind_of(statement).expect_err("refused");
            let info = ErrorInfo::from(refused);
            assert_eq!(info.code, "0A000", "{statement}");
        }
    }
}
