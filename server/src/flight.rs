//! The Arrow Flight SQL door: ADBC (Python, R, Go), pyarrow.flight and the Flight SQL JDBC
//! driver (DBeaver) fetch results as Arrow batches over gRPC.
//!
//! One query path, several doors: statements run through the same
//! [`cityhub_query::QueryEngine`] as `POST /api/v1/sql`, with the caller's view, masking,
//! closed SQL surface, limits and audit (`via: flight`). Every call carries the caller's
//! token (`authorization: Bearer`, or a handshake with the token as password); a ticket
//! names a statement, never a right to read: `DoGet` runs it as the caller of `DoGet`.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandStatementQuery, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightDescriptor,
    FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage, SchemaAsIpc,
    Ticket,
};
use base64::Engine as _;
use cityhub_catalog::{Principal, Role};
use cityhub_query::{Origin, QueryError, QueryResult, Via};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::common::ScalarValue;
use futures::{Stream, TryStreamExt};
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use crate::cancel::UntilCancelled;
use crate::state::AppState;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Serves Flight SQL on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let address = listener.local_addr().ok();
    tracing::info!(
        address = ?address,
        "cityhub speaks Arrow Flight SQL on {} (authorization: Bearer <token>).",
        address.map(|a| a.to_string()).unwrap_or_default()
    );
    let service = FlightServiceServer::new(FlightDoor::new(state))
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(usize::MAX);
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
}

/// How long a statement started by GetFlightInfo waits for its DoGet.
const PARKED_FOR: Duration = Duration::from_secs(60);

struct Parked {
    principal: i64,
    result: QueryResult,
    since: Instant,
}

/// The Flight SQL service of one hub process.
pub struct FlightDoor {
    state: AppState,
    /// Statements started by GetFlightInfo, waiting for their DoGet.
    parked: Mutex<HashMap<String, Parked>>,
    /// Running statements by ticket, so that CancelFlightInfo reaches their streams.
    running: Arc<Mutex<HashMap<String, watch::Sender<bool>>>>,
}

impl FlightDoor {
    pub fn new(state: AppState) -> Self {
        Self {
            state,
            parked: Mutex::default(),
            running: Arc::default(),
        }
    }

    /// The caller of a request: `authorization: Bearer <token>`, or Basic with the token
    /// as the password (what a handshake sends). Only analysts and admins query.
    async fn caller(&self, metadata: &MetadataMap) -> Result<Principal, Status> {
        let token = token_of(metadata)?;
        let principal = self
            .state
            .sharing
            .authenticate(&token)
            .await
            .map_err(|err| Status::unauthenticated(err.to_string()))?;
        if !matches!(principal.role, Role::Admin | Role::Analyst) {
            return Err(Status::permission_denied(format!(
                "a {} token cannot run SQL; use an analyst token",
                principal.role
            )));
        }
        if let Err(wait) = self
            .state
            .limiter
            .check(principal.id, principal.rate_limit_per_second)
        {
            metrics::counter!("cityhub_rate_limited_total").increment(1);
            return Err(Status::resource_exhausted(format!(
                "this token's rate limit is exceeded; retry in {} ms",
                wait.as_millis().max(1)
            )));
        }
        Ok(principal)
    }

    /// A FlightInfo whose one endpoint's ticket runs `statement`.
    ///
    /// The statement is planned and started here, and its (lazy) stream waits for the
    /// `DoGet` that follows, so that a statement is planned once, as over HTTP. A `DoGet`
    /// by another principal, or after [`PARKED_FOR`], plans it again under its own caller.
    async fn statement_info(
        &self,
        principal: &Principal,
        statement: StatementHandle,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let result = self.start(principal, &statement).await?;
        let schema = result.schema.clone();
        self.park(&statement.id, principal, result);
        let ticket = TicketStatementQuery {
            statement_handle: statement.encode()?.into(),
        };
        let endpoint =
            FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec()));
        FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|err| Status::internal(err.to_string()))
            .map(|info| {
                info.with_endpoint(endpoint)
                    .with_descriptor(descriptor)
                    .with_total_records(-1)
                    .with_total_bytes(-1)
            })
    }

    /// Plans and starts a statement with its bound parameters.
    async fn start(
        &self,
        principal: &Principal,
        statement: &StatementHandle,
    ) -> Result<QueryResult, Status> {
        self.state
            .query
            .execute_typed(
                principal,
                &statement.sql,
                statement.parameters()?,
                &origin(),
            )
            .await
            .map_err(status)
    }

    /// Keeps a started statement for its `DoGet`; statements left longer than
    /// [`PARKED_FOR`] are dropped (and audited as cancelled: they were never read).
    fn park(&self, id: &str, principal: &Principal, result: QueryResult) {
        let mut parked = self.parked.lock().unwrap_or_else(PoisonError::into_inner);
        parked.retain(|_, statement| statement.since.elapsed() < PARKED_FOR);
        parked.insert(
            id.to_string(),
            Parked {
                principal: principal.id,
                result,
                since: Instant::now(),
            },
        );
    }

    /// The started statement `id`, if `principal` started it.
    fn unpark(&self, id: &str, principal: &Principal) -> Option<QueryResult> {
        let mut parked = self.parked.lock().unwrap_or_else(PoisonError::into_inner);
        // Another caller's DoGet neither reads nor disturbs it.
        if parked.get(id)?.principal != principal.id {
            return None;
        }
        parked.remove(id).map(|statement| statement.result)
    }

    /// Runs a statement for `DoGet` and streams its batches as Arrow IPC, uncompressed
    /// (the Flight SQL JDBC driver reads no compressed streams).
    async fn run_statement(
        &self,
        principal: &Principal,
        statement: StatementHandle,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        let result = match self.unpark(&statement.id, principal) {
            Some(started) => started,
            None => self.start(principal, &statement).await?,
        };
        let (cancel, cancelled) = watch::channel(false);
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(statement.id.clone(), cancel);
        let entry = RunningEntry {
            running: self.running.clone(),
            id: statement.id,
        };
        let until = async move {
            // The statement stays cancellable while its stream lives.
            let _entry = entry;
            let mut cancelled = cancelled;
            let _ = cancelled.wait_for(|yes| *yes).await;
        };
        let batches = UntilCancelled::new(
            result.batches,
            until,
            || {
                FlightError::Tonic(Box::new(Status::cancelled(
                    "the statement was cancelled (CancelFlightInfo)",
                )))
            },
            |err| FlightError::Tonic(Box::new(status(err))),
        );
        let encoded = FlightDataEncoderBuilder::new()
            .with_schema(result.schema)
            .with_options(IpcWriteOptions::default())
            .build(batches)
            .map_err(|err| match err {
                FlightError::Tonic(status) => *status,
                other => Status::internal(other.to_string()),
            });
        Ok(Response::new(Box::pin(encoded)))
    }
}

fn origin() -> Origin {
    Origin {
        via: Via::Flight,
        client_user: None,
        pg_catalog: None,
    }
}

/// The token a request carries.
fn token_of(metadata: &MetadataMap) -> Result<String, Status> {
    let header = metadata
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| {
            Status::unauthenticated("send authorization: Bearer <token> (a cityhub token)")
        })?;
    if let Some(token) = header.strip_prefix("Bearer ") {
        return Ok(token.trim().to_string());
    }
    if let Some(basic) = header.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| {
                Status::unauthenticated("the Basic credentials are not base64 of user:token")
            })?;
        let (_user, token) = decoded
            .split_once(':')
            .ok_or_else(|| Status::unauthenticated("Basic credentials are user:token"))?;
        return Ok(token.to_string());
    }
    Err(Status::unauthenticated(
        "the authorization header must be Bearer <token> or Basic user:token",
    ))
}

/// A query error as a gRPC status, with HTTP's message.
fn status(err: QueryError) -> Status {
    let message = err.to_string();
    match err {
        QueryError::Forbidden(_) => Status::permission_denied(message),
        QueryError::Unsupported(_) | QueryError::NotAcceptable(_) => Status::unimplemented(message),
        QueryError::Invalid { .. } | QueryError::Parameter(_) => Status::invalid_argument(message),
        QueryError::Timeout(_) => Status::deadline_exceeded(message),
        QueryError::MemoryLimit(_) => Status::resource_exhausted(message),
        QueryError::Unavailable(_) => Status::unavailable(message),
        QueryError::Internal(_) => Status::internal(message),
    }
}

/// What a ticket or a prepared statement's handle names: the SQL, the values bound to its
/// parameters (a one-row Arrow IPC stream), and an id by which CancelFlightInfo finds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StatementHandle {
    id: String,
    sql: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    params: Option<String>,
}

impl StatementHandle {
    /// A statement of a client's SQL, whose `?` placeholders (JDBC's, ADBC's) become
    /// `$1`, `$2`, ...
    fn new(sql: &str) -> Result<Self, Status> {
        Ok(Self {
            id: uuid::Uuid::new_v4().to_string(),
            sql: cityhub_query::guard::number_question_marks(sql).map_err(status)?,
            params: None,
        })
    }

    fn encode(&self) -> Result<Vec<u8>, Status> {
        serde_json::to_vec(self).map_err(|err| Status::internal(err.to_string()))
    }

    fn decode(bytes: &[u8]) -> Result<Self, Status> {
        serde_json::from_slice(bytes)
            .map_err(|_| Status::invalid_argument("the statement handle is not one this hub made"))
    }

    /// Binds the first row of `batch` as `$1`, `$2`, ...
    fn bind(&mut self, batch: &RecordBatch) -> Result<(), Status> {
        if batch.num_rows() != 1 {
            return Err(Status::invalid_argument(format!(
                "bind one row of parameters at a time (this batch has {})",
                batch.num_rows()
            )));
        }
        let mut bytes = Vec::new();
        let mut writer =
            datafusion::arrow::ipc::writer::StreamWriter::try_new(&mut bytes, &batch.schema())
                .map_err(|err| Status::internal(err.to_string()))?;
        writer
            .write(batch)
            .and_then(|()| writer.finish())
            .map_err(|err| Status::internal(err.to_string()))?;
        self.params = Some(base64::engine::general_purpose::STANDARD.encode(bytes));
        Ok(())
    }

    fn parameters(&self) -> Result<Vec<ScalarValue>, Status> {
        let Some(encoded) = &self.params else {
            return Ok(Vec::new());
        };
        let bad = |what: String| Status::invalid_argument(format!("the bound parameters: {what}"));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|err| bad(err.to_string()))?;
        let reader = datafusion::arrow::ipc::reader::StreamReader::try_new(bytes.as_slice(), None)
            .map_err(|err| bad(err.to_string()))?;
        let mut values = Vec::new();
        for batch in reader {
            let batch = batch.map_err(|err| bad(err.to_string()))?;
            for column in batch.columns() {
                values.push(
                    ScalarValue::try_from_array(column, 0).map_err(|err| bad(err.to_string()))?,
                );
            }
        }
        Ok(values)
    }
}

/// What the hub says of itself to GetSqlInfo (JDBC's DatabaseMetaData, DBeaver).
fn sql_info() -> &'static SqlInfoData {
    static INFO: OnceLock<SqlInfoData> = OnceLock::new();
    INFO.get_or_init(|| {
        let mut builder = SqlInfoDataBuilder::new();
        builder.append(SqlInfo::FlightSqlServerName, "cityhub");
        builder.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        builder.append(SqlInfo::FlightSqlServerArrowVersion, "59");
        builder.append(SqlInfo::FlightSqlServerReadOnly, true);
        builder.append(SqlInfo::FlightSqlServerSql, true);
        builder.append(SqlInfo::FlightSqlServerSubstrait, false);
        builder.append(SqlInfo::FlightSqlServerTransaction, 0_i32);
        builder.append(SqlInfo::FlightSqlServerCancel, true);
        builder.append(SqlInfo::SqlDdlCatalog, false);
        builder.append(SqlInfo::SqlDdlSchema, false);
        builder.append(SqlInfo::SqlDdlTable, false);
        builder.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        builder.append(SqlInfo::SqlIdentifierCase, 1_i32);
        builder.append(SqlInfo::SqlQuotedIdentifierCase, 3_i32);
        builder.append(SqlInfo::SqlSchemaTerm, "department");
        builder.append(SqlInfo::SqlCatalogTerm, "hub");
        // Built from constants that fit their slots: it cannot fail.
        builder
            .build()
            .unwrap_or_else(|err| panic!("the hub's SqlInfo: {err}"))
    })
}

/// The table types the hub lists.
const TABLE_TYPES: &[&str] = &["TABLE"];

fn ipc_schema(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let message: IpcMessage = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|err: datafusion::arrow::error::ArrowError| Status::internal(err.to_string()))?;
    Ok(message.0)
}

/// One batch (a metadata answer) as a DoGet stream.
fn one_batch<E: std::fmt::Display>(
    batch: Result<RecordBatch, E>,
) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
    let batch = batch.map_err(|err| Status::internal(err.to_string()))?;
    let schema = batch.schema();
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::iter([Ok(batch)]))
        .map_err(|err| Status::internal(err.to_string()));
    Ok(Response::new(Box::pin(stream)))
}

fn metadata_info<T: ProstMessageExt>(
    command: T,
    schema: &Schema,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(command.as_any().encode_to_vec()));
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|err| Status::internal(err.to_string()))?
        .with_endpoint(endpoint)
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

#[tonic::async_trait]
impl FlightSqlService for FlightDoor {
    type FlightService = FlightDoor;

    /// Basic user:token in, the token back as a bearer for the calls that follow.
    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<BoxStream<HandshakeResponse>>, Status> {
        let principal = self.caller(request.metadata()).await?;
        let token = token_of(request.metadata())?;
        tracing::debug!(
            principal = principal.name,
            "A Flight SQL client shook hands."
        );
        let answer = HandshakeResponse {
            protocol_version: 0,
            payload: Default::default(),
        };
        let mut response: Response<BoxStream<HandshakeResponse>> =
            Response::new(Box::pin(futures::stream::iter([Ok(answer)])));
        let bearer = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::invalid_argument("the token is not a valid header value"))?;
        response.metadata_mut().insert("authorization", bearer);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let principal = self.caller(request.metadata()).await?;
        let info = self
            .statement_info(
                &principal,
                StatementHandle::new(&query.query)?,
                request.into_inner(),
            )
            .await?;
        Ok(Response::new(info))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        let principal = self.caller(request.metadata()).await?;
        let statement = StatementHandle::decode(&ticket.statement_handle)?;
        self.run_statement(&principal, statement).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let principal = self.caller(request.metadata()).await?;
        let statement = StatementHandle::new(&query.query)?;
        let described = self
            .state
            .query
            .describe(&principal, &statement.sql, &origin())
            .await
            .map_err(status)?;
        // Parameters the planner could not type are announced as text.
        let parameters = Schema::new(
            described
                .parameters
                .iter()
                .enumerate()
                .map(|(index, data_type)| {
                    Field::new(
                        format!("${}", index + 1),
                        data_type.clone().unwrap_or(DataType::Utf8),
                        true,
                    )
                })
                .collect::<Vec<_>>(),
        );
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: statement.encode()?.into(),
            dataset_schema: ipc_schema(&described.schema)?,
            parameter_schema: ipc_schema(&parameters)?,
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        self.caller(request.metadata()).await?;
        let mut statement = StatementHandle::decode(&query.prepared_statement_handle)?;
        let stream = request
            .into_inner()
            .map_err(|status| FlightError::Tonic(Box::new(status)));
        let batches: Vec<RecordBatch> =
            arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(stream)
                .try_collect()
                .await
                .map_err(|err| Status::invalid_argument(format!("the parameters: {err}")))?;
        if let Some(batch) = batches.iter().find(|batch| batch.num_rows() > 0) {
            statement.bind(batch)?;
        }
        // A new id: each binding runs, and is cancelled, on its own.
        statement.id = uuid::Uuid::new_v4().to_string();
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(statement.encode()?.into()),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let principal = self.caller(request.metadata()).await?;
        let statement = StatementHandle::decode(&query.prepared_statement_handle)?;
        let info = self
            .statement_info(&principal, statement, request.into_inner())
            .await?;
        Ok(Response::new(info))
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        let principal = self.caller(request.metadata()).await?;
        let statement = StatementHandle::decode(&query.prepared_statement_handle)?;
        self.run_statement(&principal, statement).await
    }

    /// Handles hold everything; there is nothing to free.
    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        self.caller(request.metadata()).await?;
        Ok(())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(request.metadata()).await?;
        let schema = query.into_builder().schema();
        metadata_info(query, &schema, request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        self.caller(request.metadata()).await?;
        let mut builder = query.into_builder();
        builder.append(cityhub_query::view::CATALOG_NAME);
        one_batch(builder.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(request.metadata()).await?;
        let schema = query.clone().into_builder().schema();
        metadata_info(query, &schema, request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        let principal = self.caller(request.metadata()).await?;
        let (schemas, _) = self
            .state
            .query
            .readable_tables(&principal)
            .await
            .map_err(status)?;
        let mut builder = query.into_builder();
        for schema in schemas {
            builder.append(cityhub_query::view::CATALOG_NAME, schema);
        }
        one_batch(builder.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(request.metadata()).await?;
        let schema = query.clone().into_builder().schema();
        metadata_info(query, &schema, request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        let principal = self.caller(request.metadata()).await?;
        let (_, tables) = self
            .state
            .query
            .readable_tables(&principal)
            .await
            .map_err(status)?;
        let mut builder = query.into_builder();
        for table in tables {
            builder
                .append(
                    cityhub_query::view::CATALOG_NAME,
                    &table.schema,
                    &table.table,
                    TABLE_TYPES[0],
                    &table.columns,
                )
                .map_err(|err| Status::internal(err.to_string()))?;
        }
        one_batch(builder.build())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(request.metadata()).await?;
        metadata_info(query, &table_types_schema(), request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        _query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        self.caller(request.metadata()).await?;
        one_batch(RecordBatch::try_new(
            Arc::new(table_types_schema()),
            vec![Arc::new(datafusion::arrow::array::StringArray::from(
                TABLE_TYPES.to_vec(),
            ))],
        ))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(request.metadata()).await?;
        metadata_info(query, &sql_info().schema(), request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        self.caller(request.metadata()).await?;
        one_batch(query.into_builder(sql_info()).build())
    }

    /// CancelFlightInfo: stops the statement its ticket names, if it is running.
    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        if request.get_ref().r#type != "CancelFlightInfo" {
            return Err(Status::invalid_argument(format!(
                "unknown action {}",
                request.get_ref().r#type
            )));
        }
        self.caller(request.metadata()).await?;
        let cancel = CancelFlightInfoRequest::decode(request.get_ref().body.clone())
            .map_err(|err| Status::invalid_argument(err.to_string()))?;
        let mut outcome = CancelStatus::NotCancellable;
        for endpoint in cancel.info.map(|info| info.endpoint).unwrap_or_default() {
            let Some(ticket) = endpoint.ticket else {
                continue;
            };
            let Some(id) = statement_id(&ticket.ticket) else {
                continue;
            };
            // Started but not fetched yet: dropping it cancels it.
            let parked = self
                .parked
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
            if parked.is_some() {
                outcome = CancelStatus::Cancelled;
            }
            let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(sender) = running.get(&id) {
                sender.send_replace(true);
                outcome = CancelStatus::Cancelled;
            }
        }
        let result = CancelFlightInfoResult::new(outcome);
        let body = arrow_flight::Result {
            body: result.encode_to_vec().into(),
        };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(body)]))))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

fn table_types_schema() -> Schema {
    Schema::new(vec![Field::new("table_type", DataType::Utf8, false)])
}

/// The statement id inside a ticket (a statement's or a prepared statement's).
fn statement_id(ticket: &[u8]) -> Option<String> {
    let any = Any::decode(ticket).ok()?;
    let handle = if let Ok(Some(statement)) = any.unpack::<TicketStatementQuery>() {
        statement.statement_handle
    } else if let Ok(Some(prepared)) = any.unpack::<CommandPreparedStatementQuery>() {
        prepared.prepared_statement_handle
    } else {
        return None;
    };
    StatementHandle::decode(&handle)
        .ok()
        .map(|handle| handle.id)
}

/// Removes a statement from the running ones when its stream ends or is dropped.
struct RunningEntry {
    running: Arc<Mutex<HashMap<String, watch::Sender<bool>>>>,
    id: String,
}

impl Drop for RunningEntry {
    fn drop(&mut self) {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}
