//! The Arrow Flight SQL service (DESIGN §6) on arrow-flight's
//! [`FlightSqlService`]: handshake, catalog calls, statement queries and
//! updates, prepared statements with parameters, cancellation. Planning,
//! limits and streaming live in [`super::queries`]; this file translates
//! between Flight SQL messages and those calls.

use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, XdbcTypeInfoData};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any, Command,
    CommandGetCatalogs, CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys,
    CommandGetImportedKeys, CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandGetXdbcTypeInfo, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementIngest, CommandStatementQuery,
    CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, BasicAuth, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightData,
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    SchemaAsIpc, Ticket, decode::FlightRecordBatchStream,
};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use super::auth::{Authenticator, Identity, Role, parse_basic};
use super::catalog_info;
use super::queries::{
    MAX_PARAMETER_BYTES, Prepared, QueryEngine, StatementKind, TicketHandle, bind_row, new_id,
    require_query,
};

type FlightStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

/// The Flight SQL service of one recon server.
#[derive(Clone)]
pub struct ReconFlightSql {
    engine: QueryEngine,
    auth: Arc<Authenticator>,
    sql_info: Arc<SqlInfoData>,
    xdbc: Arc<XdbcTypeInfoData>,
    bulk: Option<BulkIngest>,
}

/// Where bulk ingest (`CommandStatementIngest`) writes.
#[derive(Debug, Clone)]
pub struct BulkIngest {
    /// The warehouse holding the batch tables.
    pub warehouse: crate::warehouse::Warehouse,
    /// ML signals accepted (shared with the HTTP API, for `/metrics`).
    pub signals_accepted: Arc<std::sync::atomic::AtomicU64>,
}

/// Largest bulk ingest accepted in one call (it is written as one Parquet file).
pub const MAX_INGEST_BYTES: usize = 1 << 30;

impl ReconFlightSql {
    /// A service answering from `engine`, logging in through `auth`.
    pub fn new(
        engine: QueryEngine,
        auth: Arc<Authenticator>,
        sql_info: SqlInfoData,
        xdbc: XdbcTypeInfoData,
    ) -> Self {
        Self {
            engine,
            auth,
            sql_info: Arc::new(sql_info),
            xdbc: Arc::new(xdbc),
            bulk: None,
        }
    }

    /// Turns on bulk ingest into the batch tables.
    pub fn with_bulk_ingest(mut self, bulk: BulkIngest) -> Self {
        self.bulk = Some(bulk);
        self
    }

    /// Who sent `request` (set by the auth layer). Without it, the least
    /// privilege when authentication is on.
    fn identity<T>(&self, request: &Request<T>) -> Identity {
        match request.extensions().get::<Identity>() {
            Some(identity) => identity.clone(),
            None if !self.auth.enabled() => Identity::anonymous(),
            None => Identity {
                user: "unknown".to_owned(),
                role: Role::Read,
            },
        }
    }

    /// Starts `plan` and streams its batches as Flight data.
    async fn stream_query(
        &self,
        id: String,
        plan: datafusion::logical_expr::LogicalPlan,
        sql: &str,
    ) -> Result<Response<FlightStream>, Status> {
        let run = self.engine.run(id, plan, sql).await?;
        let log = Arc::clone(&run.log);
        let batches = run.batches.map_err(|s| FlightError::Tonic(Box::new(s)));
        let flight = FlightDataEncoderBuilder::new()
            .with_schema(run.schema)
            .build(batches)
            .map(move |item| match item {
                Ok(data) => {
                    log.add_bytes(data.data_header.len() + data.data_body.len());
                    Ok(data)
                }
                Err(e) => Err(Status::from(e)),
            });
        Ok(Response::new(Box::pin(flight)))
    }

    /// Keeps a planned query for DoGet and answers with its FlightInfo, whose
    /// ticket names the kept plan.
    fn pending_info(
        &self,
        plan: datafusion::logical_expr::LogicalPlan,
        sql: Option<String>,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let (handle, schema) = self.engine.keep_pending(plan, sql);
        let ticket = TicketStatementQuery {
            statement_handle: handle.encode().into(),
        };
        flight_info(
            &schema,
            ticket.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    /// A FlightInfo for a metadata command, whose ticket is the command
    /// itself.
    fn metadata_info(
        &self,
        command: Command,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = self.metadata_schema(&command).ok_or_else(|| {
            Status::internal(format!("{} has no fixed schema", command.type_url()))
        })?;
        flight_info(
            &schema,
            command.into_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    /// The fixed schema a metadata command answers with; `None` for any other
    /// command.
    fn metadata_schema(&self, command: &Command) -> Option<SchemaRef> {
        Some(match command {
            Command::CommandGetCatalogs(q) => q.into_builder().schema(),
            Command::CommandGetDbSchemas(q) => q.clone().into_builder().schema(),
            Command::CommandGetTables(q) => q.clone().into_builder().schema(),
            Command::CommandGetTableTypes(q) => q.into_builder().schema(),
            Command::CommandGetSqlInfo(_) => self.sql_info.schema(),
            Command::CommandGetXdbcTypeInfo(_) => self.xdbc.schema(),
            Command::CommandGetPrimaryKeys(_) => Arc::new(primary_keys_schema()),
            Command::CommandGetExportedKeys(_)
            | Command::CommandGetImportedKeys(_)
            | Command::CommandGetCrossReference(_) => Arc::new(foreign_keys_schema()),
            _ => return None,
        })
    }

    /// The schema DoGet streams for `command` (Flight `GetSchema`): a
    /// statement query is planned (and checked like GetFlightInfo checks it),
    /// a prepared statement has its dataset schema, a metadata command its
    /// fixed one. Nothing is kept and nothing runs.
    async fn command_schema(
        &self,
        command: Command,
        identity: &Identity,
    ) -> Result<SchemaRef, Status> {
        match command {
            Command::CommandStatementQuery(query) => {
                let (plan, kind) = self.engine.plan(&query.query).await?;
                require_query(kind)?;
                permit(identity, kind)?;
                Ok(super::queries::flight_schema(plan.schema().as_arrow()))
            }
            Command::CommandPreparedStatementQuery(cmd) => {
                let prepared = self.engine.prepared(&cmd.prepared_statement_handle)?;
                require_query(prepared.kind)?;
                Ok(dataset_schema(&prepared))
            }
            other => self.metadata_schema(&other).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "GetSchema answers statement queries, prepared statements and metadata commands, not {}",
                    other.type_url()
                ))
            }),
        }
    }

    /// Runs a prepared query with its bound parameters.
    async fn run_prepared(&self, prepared: &Prepared) -> Result<Response<FlightStream>, Status> {
        let plan = bind_single_row(prepared)?;
        self.stream_query(new_id(), plan, &prepared.sql).await
    }
}

#[tonic::async_trait]
impl super::guard::Describe for ReconFlightSql {
    async fn describe(
        &self,
        command: Command,
        request: &Request<FlightDescriptor>,
    ) -> Result<SchemaRef, Status> {
        self.command_schema(command, &self.identity(request)).await
    }
}

impl std::fmt::Debug for ReconFlightSql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReconFlightSql")
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

/// Whether the caller's role may run a statement of `kind`.
fn permit(identity: &Identity, kind: StatementKind) -> Result<(), Status> {
    match kind {
        StatementKind::Query => Ok(()),
        StatementKind::Update => identity.require(Role::Admin, "CREATE VIEW / DROP VIEW"),
        StatementKind::Refresh => identity.require(Role::Admin, "REFRESH INDEX"),
    }
}

fn bind_single_row(prepared: &Prepared) -> Result<datafusion::logical_expr::LogicalPlan, Status> {
    require_query(prepared.kind)?;
    if prepared.parameters.len() > 1 {
        return Err(Status::invalid_argument(format!(
            "a query takes one parameter row, {} were bound",
            prepared.parameters.len()
        )));
    }
    bind_row(prepared, prepared.parameters.first())
}

/// The schema of a prepared statement's results (none for an update).
fn dataset_schema(prepared: &Prepared) -> SchemaRef {
    match prepared.kind {
        StatementKind::Query | StatementKind::Refresh => {
            super::queries::flight_schema(prepared.plan.schema().as_arrow())
        }
        StatementKind::Update => Arc::new(Schema::empty()),
    }
}

/// A FlightInfo with one endpoint on this server.
fn flight_info(
    schema: &Schema,
    ticket: Vec<u8>,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(format!("cannot encode schema: {e}")))?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

/// Streams ready-made batches (catalog answers).
fn batch_response(
    schema: SchemaRef,
    batch: Result<RecordBatch, impl std::fmt::Display>,
) -> Result<Response<FlightStream>, Status> {
    let batch = batch.map_err(|e| Status::internal(e.to_string()))?;
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::iter([Ok(batch)]))
        .map_err(Status::from);
    Ok(Response::new(Box::pin(stream)))
}

/// `schema` as an Arrow IPC schema message (prepared statements, GetSchema).
pub(super) fn ipc_schema(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let message: IpcMessage = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e| Status::internal(format!("cannot encode schema: {e}")))?;
    Ok(message.0)
}

/// Reads the record batches of a DoPut, refusing more than `limit` bytes.
async fn read_put_batches(
    request: Request<PeekableFlightDataStream>,
    limit: usize,
    what: &str,
) -> Result<Vec<RecordBatch>, Status> {
    decode_put(request.into_inner(), limit, what).await
}

/// What a client is told when decoding its Arrow IPC made arrow panic.
const MALFORMED_IPC: &str = "invalid Arrow data: malformed IPC message";

/// Decodes Flight data into record batches, refusing more than `limit` bytes.
/// Malformed Arrow IPC is InvalidArgument: arrow's IPC reader asserts on some
/// inconsistent buffers, so a panic while decoding is caught and reported as
/// the client's error rather than unwinding through the call.
pub async fn decode_put<S>(
    messages: S,
    limit: usize,
    what: &str,
) -> Result<Vec<RecordBatch>, Status>
where
    S: Stream<Item = Result<FlightData, Status>> + Send + 'static,
{
    // The first message may carry only the descriptor (no Arrow data): skip such.
    let stream = messages
        .try_filter(|data| futures::future::ready(!data.data_header.is_empty()))
        .map_err(FlightError::from);
    let batches = FlightRecordBatchStream::new_from_flight_data(stream);
    let mut batches = std::panic::AssertUnwindSafe(batches).catch_unwind();
    let mut out = Vec::new();
    let mut bytes = 0;
    while let Some(decoded) = batches.next().await {
        let batch = decoded
            .map_err(|_| {
                tracing::warn!(what, "malformed Arrow IPC made the decoder panic; refused");
                Status::invalid_argument(MALFORMED_IPC)
            })?
            .map_err(|e| match e {
                FlightError::Tonic(status) => *status,
                other => Status::invalid_argument(format!("invalid Arrow data: {other}")),
            })?;
        bytes += batch.get_array_memory_size();
        if bytes > limit {
            return Err(Status::invalid_argument(format!(
                "{what} too large: more than {limit} bytes"
            )));
        }
        out.push(batch);
    }
    Ok(out)
}

/// Bulk ingest appends to the contract's batch tables, which always exist: it
/// refuses temporary tables, other catalogs, replacing, and "fail if exists".
fn check_ingest_target(cmd: &CommandStatementIngest) -> Result<(), Status> {
    use arrow_flight::sql::TableExistsOption;
    if cmd.temporary {
        return Err(Status::invalid_argument(
            "temporary tables are not supported",
        ));
    }
    if cmd.catalog.as_deref().is_some_and(|c| c != "recon")
        || cmd.schema.as_deref().is_some_and(|s| s != "public")
    {
        return Err(Status::not_found(format!(
            "bulk ingest writes to recon.public tables, not {}.{}",
            cmd.catalog.as_deref().unwrap_or("recon"),
            cmd.schema.as_deref().unwrap_or("public")
        )));
    }
    let if_exists = cmd
        .table_definition_options
        .as_ref()
        .map_or(TableExistsOption::Unspecified, |o| o.if_exists());
    match if_exists {
        TableExistsOption::Unspecified | TableExistsOption::Append => Ok(()),
        TableExistsOption::Fail => Err(Status::already_exists(format!(
            "table {} exists (its schema is fixed by the data contract): ingest with mode \"append\"",
            cmd.table
        ))),
        TableExistsOption::Replace => Err(Status::invalid_argument(
            "replacing a batch table is not supported: ingest appends (mode \"append\")",
        )),
    }
}

/// Flight SQL's schema for GetPrimaryKeys.
fn primary_keys_schema() -> Schema {
    let utf8 = |n: &str, null| Field::new(n, DataType::Utf8, null);
    Schema::new(vec![
        utf8("catalog_name", true),
        utf8("db_schema_name", true),
        utf8("table_name", false),
        utf8("column_name", false),
        utf8("key_name", true),
        Field::new("key_sequence", DataType::Int32, false),
    ])
}

/// Flight SQL's schema for GetImportedKeys, GetExportedKeys and GetCrossReference.
fn foreign_keys_schema() -> Schema {
    let utf8 = |n: &str, null| Field::new(n, DataType::Utf8, null);
    Schema::new(vec![
        utf8("pk_catalog_name", true),
        utf8("pk_db_schema_name", true),
        utf8("pk_table_name", false),
        utf8("pk_column_name", false),
        utf8("fk_catalog_name", true),
        utf8("fk_db_schema_name", true),
        utf8("fk_table_name", false),
        utf8("fk_column_name", false),
        Field::new("key_sequence", DataType::Int32, false),
        utf8("fk_key_name", true),
        utf8("pk_key_name", true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ])
}

fn empty(schema: Schema) -> Result<Response<FlightStream>, Status> {
    let schema = Arc::new(schema);
    batch_response(
        Arc::clone(&schema),
        Ok::<_, Status>(RecordBatch::new_empty(schema)),
    )
}

/// The query ids named by a FlightInfo's tickets.
fn query_ids(info: &FlightInfo) -> Vec<String> {
    info.endpoint
        .iter()
        .filter_map(|e| e.ticket.as_ref())
        .filter_map(|t| Any::decode(&*t.ticket).ok())
        .filter_map(|any| match Command::try_from(any) {
            Ok(Command::TicketStatementQuery(t)) => TicketHandle::decode(&t.statement_handle).ok(),
            _ => None,
        })
        .map(|h| h.id)
        .collect()
}

#[tonic::async_trait]
impl FlightSqlService for ReconFlightSql {
    type FlightService = ReconFlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let peer = request.remote_addr().map(|a| a.ip());
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(parse_basic)
            .transpose()?
            .flatten();
        let (user, password) = match header {
            Some(credentials) => credentials,
            None => {
                // Older clients put BasicAuth in the handshake payload.
                let mut stream = request.into_inner();
                match stream.message().await? {
                    Some(req) if !req.payload.is_empty() => {
                        let basic = BasicAuth::decode(req.payload).map_err(|e| {
                            Status::invalid_argument(format!("invalid handshake payload: {e}"))
                        })?;
                        (basic.username, basic.password)
                    }
                    _ => (String::new(), String::new()),
                }
            }
        };
        let (token, _) = self.auth.login(peer, &user, &password).await?;
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        };
        let stream: Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>> =
            Box::pin(futures::stream::iter([Ok(reply)]));
        let mut response = Response::new(stream);
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::internal("token is not a valid header"))?;
        response.metadata_mut().insert("authorization", value);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let (plan, kind) = self.engine.plan(&query.query).await?;
        require_query(kind)?;
        permit(&self.identity(&request), kind)?;
        self.pending_info(plan, Some(query.query), request)
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let prepared = self.engine.prepared(&cmd.prepared_statement_handle)?;
        let plan = bind_single_row(&prepared)?;
        let sql = prepared.parameters.is_empty().then(|| prepared.sql.clone());
        self.pending_info(plan, sql, request)
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_info(Command::CommandGetCatalogs(query), request)
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_info(Command::CommandGetDbSchemas(query), request)
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_info(Command::CommandGetTables(query), request)
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_info(Command::CommandGetTableTypes(query), request)
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_info(Command::CommandGetSqlInfo(query), request)
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_info(Command::CommandGetPrimaryKeys(query), request)
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_info(Command::CommandGetExportedKeys(query), request)
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_info(Command::CommandGetImportedKeys(query), request)
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_info(Command::CommandGetCrossReference(query), request)
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_info(Command::CommandGetXdbcTypeInfo(query), request)
    }

    async fn get_flight_info_fallback(
        &self,
        cmd: Command,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented(format!(
            "unsupported Flight SQL command {}",
            cmd.type_url()
        )))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let handle = TicketHandle::decode(&ticket.statement_handle)?;
        let identity = self.identity(&request);
        let plan = self
            .engine
            .redeem(&handle, |kind| permit(&identity, kind))
            .await?;
        let sql = handle.sql.as_deref().unwrap_or("(prepared statement)");
        self.stream_query(handle.id.clone(), plan, sql).await
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let prepared = self.engine.prepared(&query.prepared_statement_handle)?;
        self.run_prepared(&prepared).await
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let schema = query.into_builder().schema();
        batch_response(schema, catalog_info::catalogs(self.engine.context()))
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let schema = query.clone().into_builder().schema();
        batch_response(
            schema,
            catalog_info::db_schemas(self.engine.context(), query),
        )
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let schema = query.clone().into_builder().schema();
        batch_response(
            schema,
            catalog_info::tables(self.engine.context(), query).await,
        )
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let schema = query.into_builder().schema();
        batch_response(schema, catalog_info::table_types())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let schema = self.sql_info.schema();
        batch_response(schema, self.sql_info.record_batch(query.info))
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        empty(primary_keys_schema())
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        empty(foreign_keys_schema())
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        empty(foreign_keys_schema())
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        empty(foreign_keys_schema())
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let schema = self.xdbc.schema();
        batch_response(schema, self.xdbc.record_batch(query.data_type))
    }

    async fn do_get_fallback(
        &self,
        _request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Err(Status::unimplemented(format!(
            "unsupported ticket type {}",
            message.type_url
        )))
    }

    async fn do_put_statement_update(
        &self,
        cmd: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let (plan, kind) = self.engine.plan(&cmd.query).await?;
        if kind == StatementKind::Query {
            return Err(Status::invalid_argument(
                "this statement returns rows: execute it as a query",
            ));
        }
        permit(&self.identity(&request), kind)?;
        self.engine.update(plan, kind).await
    }

    async fn do_put_statement_ingest(
        &self,
        cmd: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let bulk = self
            .bulk
            .as_ref()
            .ok_or_else(|| Status::unimplemented("bulk ingest is off on this server"))?;
        self.identity(&request)
            .require(Role::Write, "bulk ingest")?;
        check_ingest_target(&cmd)?;
        let batches = read_put_batches(request, MAX_INGEST_BYTES, "bulk ingest").await?;
        let mut batch = crate::appends::conform(&cmd.table, &batches)
            .map_err(crate::appends::AppendError::into_status)?;
        let signals = cmd.table == crate::appends::SIGNALS_TABLE;
        if signals {
            // The same rules as POST /ml_signals.
            batch = crate::appends::check_signals(&batch, chrono::Utc::now())
                .map_err(crate::appends::AppendError::into_status)?;
        }
        let rows = crate::appends::append(&bulk.warehouse, &cmd.table, &batch)
            .await
            .map_err(crate::appends::AppendError::into_status)?;
        if signals {
            bulk.signals_accepted
                .fetch_add(rows as u64, std::sync::atomic::Ordering::Relaxed);
        }
        tracing::info!(table = %cmd.table, rows, "bulk ingest stored");
        Ok(i64::try_from(rows).unwrap_or(i64::MAX))
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let batches = read_put_batches(request, MAX_PARAMETER_BYTES, "parameters").await?;
        self.engine
            .bind(&query.prepared_statement_handle, &batches)?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(query.prepared_statement_handle),
        })
    }

    async fn do_put_prepared_statement_update(
        &self,
        query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let handle = query.prepared_statement_handle;
        let batches = read_put_batches(request, MAX_PARAMETER_BYTES, "parameters").await?;
        if !batches.is_empty() {
            self.engine.bind(&handle, &batches)?;
        }
        let prepared = self.engine.prepared(&handle)?;
        if prepared.kind == StatementKind::Query {
            return Err(Status::invalid_argument(
                "this statement returns rows: execute it as a query",
            ));
        }
        if prepared.parameters.is_empty() {
            return self
                .engine
                .update(bind_row(&prepared, None)?, prepared.kind)
                .await;
        }
        let mut count = 0;
        for row in &prepared.parameters {
            count += self
                .engine
                .update(bind_row(&prepared, Some(row))?, prepared.kind)
                .await?;
        }
        Ok(count)
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let identity = self.identity(&request);
        let (handle, prepared) = self.engine.prepare(&query.query).await?;
        if let Err(denied) = permit(&identity, prepared.kind) {
            self.engine.close(handle.as_bytes());
            return Err(denied);
        }
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into_bytes().into(),
            dataset_schema: ipc_schema(&dataset_schema(&prepared))?,
            parameter_schema: ipc_schema(&prepared.parameter_schema)?,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        self.engine.close(&query.prepared_statement_handle);
        Ok(())
    }

    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        _request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        let info = FlightInfo::decode(query.info)
            .map_err(|e| Status::invalid_argument(format!("invalid FlightInfo: {e}")))?;
        let cancelled = query_ids(&info).iter().any(|id| self.engine.cancel(id));
        // CancelResult (not re-exported by arrow-flight): 1 = CANCELLED, 3 = NOT_CANCELLABLE.
        Ok(ActionCancelQueryResult {
            result: if cancelled { 1 } else { 3 },
        })
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let identity = self.identity(&request);
        let action = request.into_inner();
        let body = match action.r#type.as_str() {
            "CancelFlightInfo" => self.cancel_flight_info(&action.body)?,
            REFRESH_ACTION => {
                identity.require(Role::Admin, "RefreshIndex")?;
                self.refresh_index(&action.body).await?
            }
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown action {other:?} (supported: CancelFlightInfo, {REFRESH_ACTION})"
                )));
            }
        };
        let result = arrow_flight::Result { body: body.into() };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(result)]))))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// The Flight action that refreshes an index snapshot: body = the view's name
/// (UTF-8), result = the new snapshot as JSON.
pub const REFRESH_ACTION: &str = "RefreshIndex";

impl ReconFlightSql {
    /// `RefreshIndex`: refreshes the named view's snapshot (body: `<view>`
    /// or `<view> FULL`).
    async fn refresh_index(&self, body: &[u8]) -> Result<Vec<u8>, Status> {
        let body = std::str::from_utf8(body)
            .map_err(|_| Status::invalid_argument("RefreshIndex body must be a UTF-8 view name"))?;
        let words: Vec<&str> = body.split_whitespace().collect();
        let materializer = self
            .engine
            .materializer()
            .ok_or_else(|| Status::unimplemented("this server does not materialise indexes"))?;
        let materializer = Arc::clone(materializer);
        let target = crate::snapshots::parse_target(&words);
        let name = body.trim().to_owned();
        // A refresh is a query: it runs on the query runtime.
        let snapshot = self
            .engine
            .runtime()
            .run(async move {
                match target {
                    Some((view, mode)) => materializer.refresh_with(view, mode).await,
                    None => materializer.refresh(&name).await,
                }
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(crate::snapshots::RefreshError::into_status)?;
        serde_json::to_vec(&snapshot).map_err(|e| Status::internal(e.to_string()))
    }

    /// `CancelFlightInfo`: cancels the queries a FlightInfo names.
    fn cancel_flight_info(&self, body: &[u8]) -> Result<Vec<u8>, Status> {
        let req = CancelFlightInfoRequest::decode(body).map_err(|e| {
            Status::invalid_argument(format!("invalid CancelFlightInfoRequest: {e}"))
        })?;
        let info = req
            .info
            .ok_or_else(|| Status::invalid_argument("CancelFlightInfoRequest without info"))?;
        let cancelled = query_ids(&info).iter().any(|id| self.engine.cancel(id));
        let status = if cancelled {
            CancelStatus::Cancelled
        } else {
            CancelStatus::NotCancellable
        };
        let result = CancelFlightInfoResult {
            status: status as i32,
        };
        Ok(result.encode_to_vec())
    }
}

/// Malformed input never panics through a call: mutated Arrow IPC (DoPut) and
/// tickets, with a fixed seed so a failure reproduces.
#[cfg(test)]
mod fuzz {
    use super::*;
    use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    async fn valid_messages() -> Vec<FlightData> {
        let ids: ArrayRef = Arc::new(StringArray::from(vec![
            Some("SIG-1"),
            None,
            Some("SIG-333"),
        ]));
        let scores: ArrayRef = Arc::new(Float64Array::from(vec![Some(0.5), Some(1.0), None]));
        let counts: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3]));
        let batch =
            RecordBatch::try_from_iter([("id", ids), ("score", scores), ("n", counts)]).unwrap();
        FlightDataEncoderBuilder::new()
            .build(futures::stream::iter([Ok(batch.clone()), Ok(batch)]))
            .try_collect()
            .await
            .unwrap()
    }

    fn mutate(rng: &mut StdRng, bytes: &mut Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        match rng.random_range(0..4) {
            0 => {
                for _ in 0..rng.random_range(1..8) {
                    let i = rng.random_range(0..bytes.len());
                    bytes[i] ^= 1 << rng.random_range(0..8);
                }
            }
            1 => bytes.truncate(rng.random_range(0..bytes.len())),
            2 if bytes.len() >= 4 => {
                // Offsets and lengths are 4- and 8-byte fields: overwrite one.
                let i = rng.random_range(0..bytes.len() - 3);
                let value: u32 = rng.random();
                bytes[i..i + 4].copy_from_slice(&value.to_le_bytes());
            }
            _ => {
                let i = rng.random_range(0..bytes.len());
                bytes[i] = rng.random();
            }
        }
    }

    #[tokio::test]
    async fn mutated_ipc_messages_are_invalid_argument_never_a_panic() {
        let valid = valid_messages().await;
        let decoded = decode_put(
            futures::stream::iter(valid.clone().into_iter().map(Ok)),
            usize::MAX,
            "t",
        )
        .await
        .unwrap();
        assert_eq!(decoded.len(), 2);
        let mut rng = StdRng::seed_from_u64(13);
        let (mut accepted, mut refused, mut caught) = (0, 0, 0);
        for _ in 0..10_000 {
            let mut messages = valid.clone();
            let i = rng.random_range(0..messages.len());
            let mut header = messages[i].data_header.to_vec();
            let mut body = messages[i].data_body.to_vec();
            if rng.random_bool(0.5) {
                mutate(&mut rng, &mut header);
            } else {
                mutate(&mut rng, &mut body);
            }
            messages[i].data_header = header.into();
            messages[i].data_body = body.into();
            let stream = futures::stream::iter(messages.into_iter().map(Ok));
            match decode_put(stream, 1 << 30, "fuzz").await {
                Ok(_) => accepted += 1,
                Err(status) => {
                    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
                    refused += 1;
                    caught += usize::from(status.message() == MALFORMED_IPC);
                }
            }
        }
        assert_eq!(accepted + refused, 10_000);
        assert!(
            refused > 1_000,
            "only {refused} of 10,000 mutations were refused"
        );
        println!(
            "{refused} of 10,000 mutated messages refused, {caught} of them by a caught panic"
        );
    }

    #[test]
    fn mutated_tickets_are_refused_never_a_panic() {
        let handle = TicketHandle {
            id: new_id(),
            sql: Some("SELECT 1".to_owned()),
        };
        let ticket = TicketStatementQuery {
            statement_handle: handle.encode().into(),
        }
        .as_any()
        .encode_to_vec();
        let mut rng = StdRng::seed_from_u64(14);
        for _ in 0..10_000 {
            let mut bytes = ticket.clone();
            mutate(&mut rng, &mut bytes);
            let Ok(any) = Any::decode(bytes.as_slice()) else {
                continue;
            };
            if let Ok(Command::TicketStatementQuery(t)) = Command::try_from(any) {
                let _ = TicketHandle::decode(&t.statement_handle);
            }
        }
    }
}
