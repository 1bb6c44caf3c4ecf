//! Planning and running SQL for the Flight SQL service: the query life cycle
//! (plan at GetFlightInfo, run at DoGet), prepared statements, and the limits of
//! DESIGN §6.
//!
//! - A statement is parsed once; `?` placeholders (JDBC/ADBC style) become `$1,
//!   $2, …` so DataFusion can bind them.
//! - GetFlightInfo plans the query and keeps the plan under a random id for
//!   [`PENDING_TTL`]; the ticket carries that id (and the SQL, so a ticket can be
//!   redeemed again after the plan expired).
//! - Every statement is checked by the [`StatementPolicy`] (expression depth,
//!   no writes or DDL anywhere in the plan, built-in names reserved) and planned
//!   on the [`QueryRuntime`], never on the threads that answer gRPC and HTTP.
//! - DoGet takes a slot (at most `max_concurrent_queries` run at once, others get
//!   ResourceExhausted), builds a physical plan in a session of its own with a
//!   per-query memory pool, and runs it in a task on the query runtime that
//!   hands batches to the response stream through a small channel. The task
//!   ends, and gives its slot back, at the query timeout (counted from the
//!   start, also while a client has stopped reading), on
//!   CancelFlightInfo/CancelQuery, or when the client goes away (dropping the
//!   response stream aborts the task and with it the DataFusion tasks).
//! - One log line per query when its stream ends: id, duration, rows, bytes, outcome.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{GreedyMemoryPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::execute_stream;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Expr, Value, visit_expressions_mut};
use futures::{FutureExt, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{info, warn};

use super::error::status_from_datafusion;
use crate::config::Limits;
pub use crate::policy::StatementKind;
use crate::policy::StatementPolicy;
use crate::query_runtime::{AbortOnDrop, QueryRuntime, TaskFailed};
use crate::snapshots::Materializer;

/// How long a plan made by GetFlightInfo waits for its DoGet.
pub const PENDING_TTL: Duration = Duration::from_secs(600);
/// The most parameter data one DoPut may bind (Arrow in-memory bytes).
pub const MAX_PARAMETER_BYTES: usize = 1 << 20;

/// What a ticket's statement handle says (JSON inside `TicketStatementQuery`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TicketHandle {
    /// The planned query's id.
    pub id: String,
    /// The SQL, to plan again if the kept plan expired; absent when parameters
    /// were bound (they live only on the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
}

impl TicketHandle {
    /// Encodes the handle for a ticket.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes a handle, refusing bytes we did not make.
    pub fn decode(bytes: &[u8]) -> Result<Self, Status> {
        serde_json::from_slice(bytes)
            .map_err(|e| Status::invalid_argument(format!("invalid ticket: {e}")))
    }
}

/// A prepared statement: its SQL, its plan with placeholders, and the
/// parameter row bound by the last DoPut.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The statement text.
    pub sql: String,
    /// The plan, placeholders unbound.
    pub plan: LogicalPlan,
    /// Query or update.
    pub kind: StatementKind,
    /// The parameters' schema (`$1`, `$2`, … in order).
    pub parameter_schema: SchemaRef,
    /// Parameter rows bound by DoPut (one execution per row for updates).
    pub parameters: Vec<Vec<ScalarValue>>,
}

#[derive(Debug, Default)]
struct Registry {
    pending: HashMap<String, PendingEntry>,
    running: HashMap<String, CancellationToken>,
    cancelled: HashMap<String, Instant>,
    prepared: HashMap<String, Prepared>,
}

#[derive(Debug)]
struct PendingEntry(Box<LogicalPlan>, Instant);

/// Plans and runs SQL under the configured limits.
#[derive(Clone)]
pub struct QueryEngine {
    ctx: SessionContext,
    limits: Limits,
    runtime: Arc<QueryRuntime>,
    policy: Arc<StatementPolicy>,
    slots: Arc<Semaphore>,
    registry: Arc<Mutex<Registry>>,
    stats: Arc<EngineStats>,
    materializer: Option<Arc<Materializer>>,
}

/// Counters over all queries (exported as metrics).
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Queries started.
    pub started: AtomicU64,
    /// Queries that failed (planning or execution).
    pub failed: AtomicU64,
    /// Rows streamed.
    pub rows: AtomicU64,
    /// Wall time of queries, start to end of stream.
    pub latency: crate::metrics::Histogram,
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEngine")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// A new query id or prepared-statement handle.
pub fn new_id() -> String {
    super::random_hex(16)
}

impl QueryEngine {
    /// An engine over `ctx` with `limits`, running queries on a runtime of its
    /// own. Every table registered in `ctx` now is reserved (built in).
    pub fn new(ctx: SessionContext, limits: Limits) -> std::io::Result<Self> {
        let slots = Arc::new(Semaphore::new(limits.max_concurrent_queries));
        let runtime = QueryRuntime::new(limits.query_threads)?;
        let mib = |m: u64| usize::try_from(m.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        let max_value = mib(limits.max_value_mb);
        let max_call = match limits.query_memory_mb {
            0 => usize::MAX,
            m => mib(m),
        };
        crate::value_limits::register(&ctx, max_value, max_call);
        let policy = Arc::new(StatementPolicy::new(&ctx, limits.max_expression_depth));
        Ok(Self {
            ctx,
            limits,
            runtime,
            policy,
            slots,
            registry: Arc::default(),
            stats: Arc::default(),
            materializer: None,
        })
    }

    /// The runtime queries execute on.
    pub fn runtime(&self) -> &Arc<QueryRuntime> {
        &self.runtime
    }

    /// Runs `work` on the query runtime; a panic in it is an Internal error.
    async fn on_runtime<T, F>(&self, work: F) -> Result<T, Status>
    where
        F: std::future::Future<Output = Result<T, Status>> + Send + 'static,
        T: Send + 'static,
    {
        self.runtime
            .run(work)
            .await
            .unwrap_or_else(|e| Err(task_failed(&e)))
    }

    /// Lets `REFRESH INDEX` statements refresh snapshots through `materializer`.
    pub fn with_materializer(mut self, materializer: Arc<Materializer>) -> Self {
        self.materializer = Some(materializer);
        self
    }

    /// The index snapshots, when materialisation is on.
    pub fn materializer(&self) -> Option<&Arc<Materializer>> {
        self.materializer.as_ref()
    }

    /// The session every query starts from.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Counters over all queries.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Parses and plans one statement; `?` placeholders become `$1, $2, …`.
    /// A refused statement is logged (and counted) here, as its query line.
    pub async fn plan(&self, sql: &str) -> Result<(LogicalPlan, StatementKind), Status> {
        let engine = self.clone();
        let owned = sql.to_owned();
        let result = self
            .on_runtime(async move { engine.plan_inner(&owned).await })
            .await;
        if let Err(status) = &result {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            warn!(code = ?status.code(), error = %status.message(), sql = %preview(sql), "query refused");
        }
        result
    }

    async fn plan_inner(&self, sql: &str) -> Result<(LogicalPlan, StatementKind), Status> {
        if let Some(target) = crate::snapshots::parse_refresh(sql) {
            let (view, mode) = target.map_err(|e| status_from_datafusion(&e))?;
            let materializer = self
                .materializer
                .as_ref()
                .ok_or_else(|| Status::unimplemented("this server does not materialise indexes"))?;
            let plan = crate::snapshots::refresh_plan(materializer, view, mode)
                .map_err(|e| status_from_datafusion(&e))?;
            return Ok((plan, StatementKind::Refresh));
        }
        let state = self.ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        let mut statement = state
            .sql_to_statement(sql, &dialect)
            .map_err(|e| status_from_datafusion(&e))?;
        self.policy.check_depth(&statement).map_err(refused)?;
        number_question_marks(&mut statement);
        let plan = state
            .statement_to_plan(statement)
            .await
            .map_err(|e| status_from_datafusion(&e))?;
        let kind = self.policy.check_plan(&plan).map_err(refused)?;
        Ok((plan, kind))
    }

    /// Plans a query for GetFlightInfo and keeps the plan for DoGet; returns the
    /// ticket handle and the result schema.
    pub fn keep_pending(
        &self,
        plan: LogicalPlan,
        sql: Option<String>,
    ) -> (TicketHandle, SchemaRef) {
        let schema = flight_schema(plan.schema().as_arrow());
        let id = new_id();
        let mut registry = self.registry();
        let now = Instant::now();
        registry
            .pending
            .retain(|_, PendingEntry(_, created)| now.duration_since(*created) < PENDING_TTL);
        registry
            .pending
            .insert(id.clone(), PendingEntry(Box::new(plan), now));
        (TicketHandle { id, sql }, schema)
    }

    /// The plan a ticket refers to: the kept one (checked when it was
    /// planned), or the SQL planned again and checked by `permit`.
    pub async fn redeem(
        &self,
        handle: &TicketHandle,
        permit: impl FnOnce(StatementKind) -> Result<(), Status>,
    ) -> Result<LogicalPlan, Status> {
        let kept = self.registry().pending.remove(&handle.id);
        if let Some(PendingEntry(plan, _)) = kept {
            return Ok(*plan);
        }
        match &handle.sql {
            Some(sql) => {
                let (plan, kind) = self.plan(sql).await?;
                require_query(kind)?;
                permit(kind)?;
                Ok(plan)
            }
            None => Err(Status::not_found(
                "ticket expired: call GetFlightInfo again",
            )),
        }
    }

    /// Starts running `plan` (the DoGet side): takes a slot, applies the memory
    /// limit and timeout, and returns the batch stream with its schema.
    pub async fn run(&self, id: String, plan: LogicalPlan, sql: &str) -> Result<QueryRun, Status> {
        self.stats.started.fetch_add(1, Ordering::Relaxed);
        let result = self.start(id, plan, sql).await;
        if result.is_err() {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn start(&self, id: String, plan: LogicalPlan, sql: &str) -> Result<QueryRun, Status> {
        let permit = Arc::clone(&self.slots).try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "too many queries running (limit {}); try again later",
                self.limits.max_concurrent_queries
            ))
        })?;
        if self.registry().cancelled.remove(&id).is_some() {
            return Err(Status::cancelled("query was cancelled"));
        }
        let started = Instant::now();
        let schema = flight_schema(plan.schema().as_arrow());
        let engine = self.clone();
        let stream = self
            .on_runtime(async move {
                engine
                    .execute(plan)
                    .await
                    .map_err(|e| status_from_datafusion(&e))
            })
            .await?;
        let token = CancellationToken::new();
        self.registry().running.insert(id.clone(), token.clone());
        let log = Arc::new(QueryLog {
            id: id.clone(),
            sql: preview(sql),
            started,
            rows: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            outcome: Mutex::new(None),
            registry: Arc::clone(&self.registry),
            stats: Arc::clone(&self.stats),
        });
        let timeout = (self.limits.query_timeout_secs > 0)
            .then(|| Duration::from_secs(self.limits.query_timeout_secs));
        let (sender, receiver) = mpsc::channel(2);
        let ended = Arc::new(Mutex::new(None));
        let producer = self.runtime.spawn(produce(Producer {
            stream,
            sender,
            token,
            deadline: timeout.map(|t| (tokio::time::Instant::from_std(started) + t, t)),
            log: Arc::clone(&log),
            ended: Arc::clone(&ended),
            _permit: permit,
        }));
        Ok(QueryRun {
            schema,
            batches: LimitedStream {
                receiver,
                ended,
                log: Arc::clone(&log),
                done: false,
                _producer: producer,
            },
            log,
        })
    }

    /// Executes a plan in a session of its own whose memory pool has the
    /// per-query limit.
    async fn execute(
        &self,
        plan: LogicalPlan,
    ) -> Result<SendableRecordBatchStream, DataFusionError> {
        let base = self.ctx.state();
        let state = if self.limits.query_memory_mb > 0 {
            let bytes = usize::try_from(self.limits.query_memory_mb.saturating_mul(1 << 20))
                .unwrap_or(usize::MAX);
            let pool = TrackConsumersPool::new(GreedyMemoryPool::new(bytes), NonZeroUsize::MIN);
            // No spilling for client queries: one over its memory fails with
            // ResourcesExhausted. DataFusion 55's spilling RepartitionExec can
            // park every worker for good under a memory limit (apache/datafusion
            // #24883), and spill files would land outside the warehouse.
            let runtime = RuntimeEnvBuilder::from_runtime_env(base.runtime_env())
                .with_memory_pool(Arc::new(pool))
                .with_disk_manager_builder(
                    DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
                )
                .build_arc()?;
            SessionStateBuilder::new_from_existing(base)
                .with_runtime_env(runtime)
                .build()
        } else {
            base
        };
        let physical = state.create_physical_plan(&plan).await?;
        execute_stream(physical, state.task_ctx())
    }

    /// Runs an update statement (CREATE VIEW / DROP VIEW, REFRESH INDEX) and
    /// returns its row count (rows written for a refresh, else 0).
    pub async fn update(&self, plan: LogicalPlan, kind: StatementKind) -> Result<i64, Status> {
        let ctx = self.ctx.clone();
        let batches = self
            .on_runtime(async move {
                ctx.execute_logical_plan(plan)
                    .await
                    .map_err(|e| status_from_datafusion(&e))?
                    .collect()
                    .await
                    .map_err(|e| status_from_datafusion(&e))
            })
            .await?;
        Ok(if kind == StatementKind::Refresh {
            crate::snapshots::refreshed_rows(&batches)
        } else {
            0
        })
    }

    /// Cancels a query by id: a running one stops at its next batch, a pending
    /// one is dropped and refused if its ticket is redeemed later.
    pub fn cancel(&self, id: &str) -> bool {
        let mut registry = self.registry();
        let was_pending = registry.pending.remove(id).is_some();
        let now = Instant::now();
        registry
            .cancelled
            .retain(|_, at| now.duration_since(*at) < PENDING_TTL);
        registry.cancelled.insert(id.to_owned(), now);
        match registry.running.get(id) {
            Some(token) => {
                token.cancel();
                true
            }
            None => was_pending,
        }
    }

    /// Creates a prepared statement and returns its handle.
    pub async fn prepare(&self, sql: &str) -> Result<(String, Prepared), Status> {
        let (plan, kind) = self.plan(sql).await?;
        let (plan, parameter_schema) = self
            .on_runtime(async move {
                let schema = parameter_schema(&plan).map_err(|e| status_from_datafusion(&e))?;
                Ok((plan, schema))
            })
            .await?;
        let prepared = Prepared {
            sql: sql.to_owned(),
            plan,
            kind,
            parameter_schema,
            parameters: Vec::new(),
        };
        let handle = new_id();
        self.registry()
            .prepared
            .insert(handle.clone(), prepared.clone());
        Ok((handle, prepared))
    }

    /// The prepared statement behind `handle`.
    pub fn prepared(&self, handle: &[u8]) -> Result<Prepared, Status> {
        let key = std::str::from_utf8(handle).unwrap_or_default();
        self.registry()
            .prepared
            .get(key)
            .cloned()
            .ok_or_else(|| Status::not_found("unknown or closed prepared statement"))
    }

    /// Binds parameter rows (from DoPut) to a prepared statement.
    pub fn bind(&self, handle: &[u8], batches: &[RecordBatch]) -> Result<(), Status> {
        let prepared = self.prepared(handle)?;
        let rows = parameter_rows(&prepared.parameter_schema, batches)?;
        let key = std::str::from_utf8(handle).unwrap_or_default();
        if let Some(p) = self.registry().prepared.get_mut(key) {
            p.parameters = rows;
        }
        Ok(())
    }

    /// Closes a prepared statement (unknown handles are fine: closing is idempotent).
    pub fn close(&self, handle: &[u8]) {
        let key = std::str::from_utf8(handle).unwrap_or_default();
        self.registry().prepared.remove(key);
    }
}

/// Fails unless the statement is a query.
pub fn require_query(kind: StatementKind) -> Result<(), Status> {
    match kind {
        StatementKind::Query | StatementKind::Refresh => Ok(()),
        StatementKind::Update => Err(Status::invalid_argument(
            "this statement does not return rows: execute it as an update (CommandStatementUpdate)",
        )),
    }
}

/// Binds one parameter row to a plan, casting values to the types the plan expects.
pub fn bind_row(
    prepared: &Prepared,
    row: Option<&Vec<ScalarValue>>,
) -> Result<LogicalPlan, Status> {
    let expected = prepared.parameter_schema.fields().len();
    let Some(row) = row else {
        if expected == 0 {
            return Ok(prepared.plan.clone());
        }
        return Err(Status::invalid_argument(format!(
            "the statement has {expected} parameter(s) but none were bound"
        )));
    };
    if row.len() != expected {
        return Err(Status::invalid_argument(format!(
            "the statement has {expected} parameter(s) but {} were bound",
            row.len()
        )));
    }
    let values = row
        .iter()
        .zip(prepared.parameter_schema.fields())
        .map(|(value, field)| match field.data_type() {
            DataType::Null => Ok(value.clone()),
            t if value.data_type() == *t => Ok(value.clone()),
            t => value.cast_to(t).map_err(|e| status_from_datafusion(&e)),
        })
        .collect::<Result<Vec<_>, _>>()?;
    prepared
        .plan
        .clone()
        .with_param_values(ParamValues::List(
            values.into_iter().map(Into::into).collect(),
        ))
        .map_err(|e| status_from_datafusion(&e))
}

/// The parameters of a plan as a schema `$1, $2, …` (Null where the type is open).
fn parameter_schema(plan: &LogicalPlan) -> Result<SchemaRef, DataFusionError> {
    let types = plan.get_parameter_types()?;
    let mut named: Vec<(usize, String, DataType)> = types
        .into_iter()
        .map(|(name, t)| {
            let position = name
                .strip_prefix('$')
                .and_then(|n| n.parse().ok())
                .unwrap_or(usize::MAX);
            (position, name, t.unwrap_or(DataType::Null))
        })
        .collect();
    named.sort();
    let fields: Vec<Field> = named
        .into_iter()
        .map(|(_, name, t)| Field::new(name, t, true))
        .collect();
    Ok(Arc::new(Schema::new(fields)))
}

/// Splits bound parameter batches into rows of scalars, checking their size and width.
fn parameter_rows(
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<Vec<Vec<ScalarValue>>, Status> {
    let bytes: usize = batches.iter().map(RecordBatch::get_array_memory_size).sum();
    if bytes > MAX_PARAMETER_BYTES {
        return Err(Status::invalid_argument(format!(
            "parameters too large: {bytes} bytes (limit {MAX_PARAMETER_BYTES})"
        )));
    }
    let mut rows = Vec::new();
    for batch in batches {
        if batch.num_columns() != schema.fields().len() {
            return Err(Status::invalid_argument(format!(
                "the statement has {} parameter(s) but {} column(s) were bound",
                schema.fields().len(),
                batch.num_columns()
            )));
        }
        for row in 0..batch.num_rows() {
            let values = batch
                .columns()
                .iter()
                .map(|c| ScalarValue::try_from_array(c, row))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| status_from_datafusion(&e))?;
            rows.push(values);
        }
    }
    Ok(rows)
}

/// A statement the policy refused: the client's doing.
fn refused(reason: crate::policy::Refused) -> Status {
    Status::invalid_argument(reason.to_string())
}

/// A query task that panicked (the runtime has logged it): Internal for the client.
fn task_failed(e: &TaskFailed) -> Status {
    Status::internal(e.to_string())
}

/// Renames JDBC/ADBC `?` placeholders to DataFusion's positional `$1, $2, …`.
fn number_question_marks(statement: &mut DfStatement) {
    let DfStatement::Statement(inner) = statement else {
        return;
    };
    let mut n = 0;
    let _ = visit_expressions_mut(inner.as_mut(), |expr| {
        if let Expr::Value(v) = expr
            && let Value::Placeholder(p) = &mut v.value
            && p == "?"
        {
            n += 1;
            *p = format!("${n}");
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

/// The schema clients see: dictionaries are sent hydrated (see the encoder).
pub fn flight_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Dictionary(_, value) => f.as_ref().clone().with_data_type((**value).clone()),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

fn preview(sql: &str) -> String {
    let flat: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > 200 {
        flat.chars().take(200).chain("…".chars()).collect()
    } else {
        flat
    }
}

/// What one query did, logged when its stream is dropped.
#[derive(Debug)]
pub struct QueryLog {
    id: String,
    sql: String,
    started: Instant,
    rows: AtomicU64,
    bytes: AtomicU64,
    outcome: Mutex<Option<String>>,
    registry: Arc<Mutex<Registry>>,
    stats: Arc<EngineStats>,
}

impl QueryLog {
    /// Counts bytes sent to the client.
    pub fn add_bytes(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn finish(&self, outcome: &str) {
        let mut slot = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(outcome.to_owned());
        }
    }
}

impl Drop for QueryLog {
    fn drop(&mut self) {
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .running
            .remove(&self.id);
        let outcome = self
            .outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_else(|| "dropped by client".to_owned());
        let seconds = self.started.elapsed().as_secs_f64();
        self.stats.latency.observe(seconds);
        let duration_ms = seconds * 1e3;
        let rows = self.rows.load(Ordering::Relaxed);
        let bytes = self.bytes.load(Ordering::Relaxed);
        self.stats.rows.fetch_add(rows, Ordering::Relaxed);
        if outcome == "ok" {
            info!(query_id = %self.id, duration_ms, rows, bytes, outcome, sql = %self.sql, "query");
        } else {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            warn!(query_id = %self.id, duration_ms, rows, bytes, outcome, sql = %self.sql, "query");
        }
    }
}

/// A started query: the schema promised in FlightInfo and the batch stream.
#[derive(Debug)]
pub struct QueryRun {
    /// The result schema (as in FlightInfo).
    pub schema: SchemaRef,
    /// The batches, ending early on cancel or timeout.
    pub batches: LimitedStream,
    /// The log entry; keep it alive as long as the response stream.
    pub log: Arc<QueryLog>,
}

/// What the query task needs: the DataFusion stream, where to send its
/// batches, and what ends it early.
struct Producer {
    stream: SendableRecordBatchStream,
    sender: mpsc::Sender<RecordBatch>,
    token: CancellationToken,
    deadline: Option<(tokio::time::Instant, Duration)>,
    log: Arc<QueryLog>,
    ended: Arc<Mutex<Option<Status>>>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// The query task: polls the plan on the query runtime and forwards batches
/// until the plan ends, fails, is cancelled or times out. Its end releases the
/// slot and drops the DataFusion stream (stopping the plan's own tasks), even
/// while the client has stopped reading.
async fn produce(mut p: Producer) {
    let forward = async {
        while let Some(batch) = p.stream.next().await {
            let batch = batch.map_err(|e| status_from_datafusion(&e))?;
            p.log
                .rows
                .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
            if p.sender.send(batch).await.is_err() {
                return Err(Status::cancelled("client went away"));
            }
        }
        Ok(())
    };
    let deadline = async {
        match p.deadline {
            Some((at, _)) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    // A panic inside the plan ends the query with an error, never as a clean
    // (truncated) end of stream.
    let forward = std::panic::AssertUnwindSafe(forward)
        .catch_unwind()
        .map(|caught| {
            caught.unwrap_or_else(|payload| {
                let message = crate::query_runtime::panic_text(payload.as_ref());
                warn!(query_id = %p.log.id, error = %message, "query panicked");
                Err(Status::internal(format!("query panicked: {message}")))
            })
        });
    let outcome = tokio::select! {
        result = forward => result,
        () = p.token.cancelled() => Err(Status::cancelled("query cancelled")),
        () = deadline => {
            let secs = p.deadline.map_or(0, |(_, t)| t.as_secs());
            Err(Status::deadline_exceeded(format!("query timed out after {secs} s")))
        }
    };
    match outcome {
        Ok(()) => p.log.finish("ok"),
        Err(status) => {
            let label = match status.code() {
                tonic::Code::Cancelled => "cancelled".to_owned(),
                tonic::Code::DeadlineExceeded => "timeout".to_owned(),
                _ => format!("error: {}", status.message()),
            };
            p.log.finish(&label);
            *p.ended.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
        }
    }
}

/// The batch stream of one query, fed by its task on the query runtime.
/// Dropping it aborts the task.
pub struct LimitedStream {
    receiver: mpsc::Receiver<RecordBatch>,
    ended: Arc<Mutex<Option<Status>>>,
    log: Arc<QueryLog>,
    done: bool,
    _producer: AbortOnDrop<()>,
}

impl std::fmt::Debug for LimitedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimitedStream")
            .field("query_id", &self.log.id)
            .finish()
    }
}

impl LimitedStream {
    fn take_error(&self) -> Option<Status> {
        self.ended.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl Stream for LimitedStream {
    type Item = Result<RecordBatch, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        // An error (cancel, timeout) ends the stream at once, before batches
        // still buffered.
        if let Some(status) = self.take_error() {
            self.done = true;
            return Poll::Ready(Some(Err(status)));
        }
        match self.receiver.poll_recv(cx) {
            Poll::Ready(Some(batch)) => Poll::Ready(Some(Ok(batch))),
            Poll::Ready(None) => {
                self.done = true;
                // The task is gone: it either finished or left its error.
                Poll::Ready(self.take_error().map(Err))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn engine(limits: Limits) -> QueryEngine {
        let ctx = crate::session_context(&recon_udfs::Rules::default()).unwrap();
        ctx.sql("CREATE TABLE t(a INT, b VARCHAR) AS VALUES (1, 'x'), (2, 'y'), (3, 'z')")
            .await
            .unwrap();
        QueryEngine::new(ctx, limits).unwrap()
    }

    async fn collect(run: QueryRun) -> Result<usize, Status> {
        let mut batches = run.batches;
        let mut rows = 0;
        while let Some(b) = batches.next().await {
            rows += b?.num_rows();
        }
        Ok(rows)
    }

    #[tokio::test]
    async fn question_marks_become_positional_parameters() {
        let e = engine(Limits::default()).await;
        let (handle, prepared) = e
            .prepare("SELECT b FROM t WHERE a > ? AND b <> ?")
            .await
            .unwrap();
        let names: Vec<_> = prepared
            .parameter_schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["$1", "$2"]);
        let row = vec![ScalarValue::Int64(Some(1)), ScalarValue::from("z")];
        let plan = bind_row(&prepared, Some(&row)).unwrap();
        let run = e.run("q1".into(), plan, "test").await.unwrap();
        assert_eq!(collect(run).await.unwrap(), 1);
        e.close(handle.as_bytes());
        assert!(e.prepared(handle.as_bytes()).is_err());
    }

    #[tokio::test]
    async fn only_queries_and_views_are_accepted() {
        let e = engine(Limits::default()).await;
        assert_eq!(e.plan("SELECT 1").await.unwrap().1, StatementKind::Query);
        assert_eq!(
            e.plan("CREATE VIEW v AS SELECT 1").await.unwrap().1,
            StatementKind::Update
        );
        let err = e.plan("INSERT INTO t VALUES (4, 'w')").await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        let err = e.plan("DROP TABLE t").await.unwrap_err();
        assert!(err.message().contains("not supported"), "{err}");
    }

    #[tokio::test]
    async fn slots_limit_concurrent_queries() {
        let limits = Limits {
            max_concurrent_queries: 1,
            ..Limits::default()
        };
        let e = engine(limits).await;
        let (slow, _) = e
            .plan("SELECT count(*) FROM generate_series(1, 10000000000)")
            .await
            .unwrap();
        let (plan, _) = e.plan("SELECT * FROM t").await.unwrap();
        let first = e.run("a".into(), slow, "").await.unwrap();
        let err = e.run("b".into(), plan.clone(), "").await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        // Dropping the stream stops the query and frees its slot.
        drop(first);
        let mut freed = false;
        for _ in 0..100 {
            if e.run("c".into(), plan.clone(), "").await.is_ok() {
                freed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(freed, "the slot was not given back");
    }

    #[tokio::test]
    async fn cancel_stops_a_running_query() {
        let e = engine(Limits::default()).await;
        let (plan, _) = e
            .plan("SELECT count(*) FROM generate_series(1, 10000000000)")
            .await
            .unwrap();
        let run = e.run("slow".into(), plan, "").await.unwrap();
        assert!(e.cancel("slow"));
        let err = collect(run).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Cancelled);
    }

    #[tokio::test]
    async fn cancel_stops_a_cpu_bound_nested_loop_join() {
        // Almost every pair is rejected by the filter, so the join emits
        // nothing for seconds: only the sliced probe input lets it yield.
        let e = engine(Limits::default()).await;
        let (plan, _) = e
            .plan("SELECT count(*) FROM generate_series(1, 1000000) a, generate_series(1, 1000000) b WHERE a.value + b.value = 7")
            .await
            .unwrap();
        let run = e.run("nlj".into(), plan, "").await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let cancelled = Instant::now();
        assert!(e.cancel("nlj"));
        let err = collect(run).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Cancelled);
        // Without the slicer one probe batch (8,192 rows × 1 M) runs for
        // minutes in a debug build; the bound leaves room for a loaded machine.
        assert!(
            cancelled.elapsed() < Duration::from_secs(10),
            "the cancel took {:?}",
            cancelled.elapsed()
        );
    }

    #[tokio::test]
    async fn a_panic_inside_the_plan_ends_the_stream_with_an_error() {
        use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
        let e = engine(Limits::default()).await;
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int32, true)]));
        let panicking = futures::stream::poll_fn(
            |_| -> Poll<Option<datafusion::error::Result<RecordBatch>>> {
                panic!("boom in an operator")
            },
        );
        let stream: SendableRecordBatchStream =
            Box::pin(RecordBatchStreamAdapter::new(schema, panicking));
        let log = Arc::new(QueryLog {
            id: "p".into(),
            sql: String::new(),
            started: Instant::now(),
            rows: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            outcome: Mutex::new(None),
            registry: Arc::clone(&e.registry),
            stats: Arc::clone(&e.stats),
        });
        let (sender, receiver) = mpsc::channel(2);
        let ended = Arc::new(Mutex::new(None));
        let permit = Arc::clone(&e.slots).try_acquire_owned().unwrap();
        let producer = e.runtime.spawn(produce(Producer {
            stream,
            sender,
            token: CancellationToken::new(),
            deadline: None,
            log: Arc::clone(&log),
            ended: Arc::clone(&ended),
            _permit: permit,
        }));
        let mut batches = LimitedStream {
            receiver,
            ended,
            log,
            done: false,
            _producer: producer,
        };
        let err = batches.next().await.expect("an item").unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal);
        assert!(err.message().contains("boom in an operator"), "{err}");
        assert!(batches.next().await.is_none());
    }

    /// A query over its memory fails, every time: with spilling on, about one
    /// run in five of this aggregation parked all workers until the timeout
    /// (DataFusion's spilling RepartitionExec, apache/datafusion#24883).
    #[tokio::test]
    async fn memory_limit_is_resource_exhausted() {
        let limits = Limits {
            query_memory_mb: 1,
            query_timeout_secs: 20,
            ..Limits::default()
        };
        let e = engine(limits).await;
        for attempt in 0..12 {
            let (plan, _) = e
                .plan("SELECT v, count(*) FROM (SELECT value % 3000000 AS v FROM generate_series(1, 3000000)) GROUP BY v ORDER BY v")
                .await
                .unwrap();
            let err = match e.run(format!("big-{attempt}"), plan, "").await {
                Ok(run) => collect(run).await.unwrap_err(),
                Err(e) => e,
            };
            assert_eq!(
                err.code(),
                tonic::Code::ResourceExhausted,
                "attempt {attempt}: {err}"
            );
        }
    }
}
