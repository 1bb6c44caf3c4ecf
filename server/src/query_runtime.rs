//! Where queries execute: a thread pool of their own, apart from the runtime
//! that answers gRPC and HTTP, so a CPU-bound query can never stall Flight
//! metadata calls, `/healthz` or new connections.
//!
//! - [`QueryRuntime`]: a multi-threaded tokio runtime whose threads have large
//!   stacks (planning and evaluating deep expressions recurses), used for
//!   planning, binding and running every client statement and every refresh.
//! - [`YieldingJoins`]: a physical optimizer rule that makes joins yield to the
//!   scheduler, so a timed-out or cancelled query stops using its core. A
//!   join can run a long time inside one poll in two ways, and each gets its
//!   remedy:
//!   - it produces many output batches from one input batch without polling
//!     its inputs (a cross join of two large inputs): wrapping the join in
//!     DataFusion's [`CooperativeExec`] spends budget on every batch it
//!     emits, and once the budget is spent the task yields;
//!   - it works through one probe batch against every buffered row and
//!     emits nothing (a nested-loop join whose filter rejects almost every
//!     pair: 8,192 probe rows × 1 M buffered rows is seconds of CPU in one
//!     poll): its probe input is wrapped in a [`SlicedProbeExec`], which hands
//!     the join slices of each batch sized to take a few milliseconds and
//!     yields to the scheduler every [`YIELD_EVERY`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PhysicalExpr, PlanProperties,
};
use futures::{Stream, StreamExt};
use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;

/// Stack size of query threads. Memory is only committed as it is used, so a
/// large reservation costs nothing for shallow queries.
pub const QUERY_STACK_BYTES: usize = 256 << 20;

/// The query thread pool. Dropping it stops its threads without waiting (it may
/// be dropped from async code, where a blocking shutdown would panic).
#[derive(Debug)]
pub struct QueryRuntime {
    runtime: Option<Runtime>,
}

impl QueryRuntime {
    /// A pool of `threads` workers (0 = one per core).
    pub fn new(threads: usize) -> std::io::Result<Arc<Self>> {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(2, usize::from)
        } else {
            threads
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("recon-query")
            .thread_stack_size(QUERY_STACK_BYTES)
            .enable_all()
            .build()?;
        Ok(Arc::new(Self {
            runtime: Some(runtime),
        }))
    }

    /// The handle tasks are spawned on.
    pub fn handle(&self) -> &Handle {
        match &self.runtime {
            Some(runtime) => runtime.handle(),
            // `runtime` is only taken in `drop`.
            None => unreachable!("query runtime used after drop"),
        }
    }

    /// Runs `work` on the query threads; the handle aborts it when dropped.
    pub fn spawn<F>(&self, work: F) -> AbortOnDrop<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        AbortOnDrop(self.handle().spawn(work))
    }

    /// Runs `work` on the query threads and waits for it. A panic inside it
    /// comes back as an error instead of unwinding through the caller.
    pub async fn run<F>(&self, work: F) -> Result<F::Output, TaskFailed>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn(work).await
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A task on the query threads that is aborted when this handle is dropped
/// (a client that goes away stops its query).
#[derive(Debug)]
pub struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, TaskFailed>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map_err(|e| {
            let failed = TaskFailed(panic_message(e));
            tracing::warn!(error = %failed, "query task failed");
            failed
        })
    }
}

/// A query task that panicked or was stopped with the runtime.
#[derive(Debug, thiserror::Error)]
#[error("query task failed: {0}")]
pub struct TaskFailed(pub String);

fn panic_message(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return "the query runtime is shutting down".to_owned();
    }
    panic_text(e.into_panic().as_ref())
}

/// The message of a caught panic (`panic!` with a literal or a formatted string).
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned())
}

/// How long a query's task may run between two yields to the scheduler when
/// a join's probe input is polled.
pub const YIELD_EVERY: Duration = Duration::from_millis(10);

/// Wraps every join in a [`CooperativeExec`] and its probe (right) input in a
/// [`SlicedProbeExec`] (see the module docs). Runs last, after DataFusion's
/// own rules.
#[derive(Debug, Default)]
pub struct YieldingJoins;

impl PhysicalOptimizerRule for YieldingJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if !node.name().contains("Join") || node.children().len() != 2 {
                return Ok(Transformed::no(node));
            }
            let children: Vec<Arc<dyn ExecutionPlan>> =
                node.children().into_iter().cloned().collect();
            let probe: Arc<dyn ExecutionPlan> =
                Arc::new(SlicedProbeExec::new(Arc::clone(&children[1])));
            let node = replace_children_if_necessary(node, vec![Arc::clone(&children[0]), probe])?;
            let wrapped: Arc<dyn ExecutionPlan> = Arc::new(CooperativeExec::new(node));
            Ok(Transformed::yes(wrapped))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "YieldingJoins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Passes its input through in slices sized so that the join consuming them
/// spends a few milliseconds per slice, and yields to the scheduler every
/// [`YIELD_EVERY`] (see the module docs). Output order and content are the
/// input's.
#[derive(Debug)]
pub struct SlicedProbeExec {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl SlicedProbeExec {
    /// Wraps `input`.
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        let properties = Arc::clone(input.properties());
        Self { input, properties }
    }
}

impl DisplayAs for SlicedProbeExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SlicedProbeExec")
    }
}

impl ExecutionPlan for SlicedProbeExec {
    fn name(&self) -> &str {
        "SlicedProbeExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(format!(
                "SlicedProbeExec takes one child, got {}",
                children.len()
            )));
        }
        Ok(Arc::new(Self::new(children.swap_remove(0))))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        Ok(Box::pin(SlicedStream {
            schema: input.schema(),
            input,
            current: None,
            offset: 0,
            slice_rows: FIRST_SLICE_ROWS,
            handed_out: None,
            last_yield: Instant::now(),
        }))
    }
}

/// Rows of the first slice; slices double while the consumer is quick.
const FIRST_SLICE_ROWS: usize = 1;
/// The consumer is quick when it comes back within this.
const QUICK: Duration = Duration::from_millis(2);

struct SlicedStream {
    schema: SchemaRef,
    input: SendableRecordBatchStream,
    current: Option<RecordBatch>,
    offset: usize,
    slice_rows: usize,
    handed_out: Option<Instant>,
    last_yield: Instant,
}

impl Stream for SlicedStream {
    type Item = DfResult<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let now = Instant::now();
        // How long the join took over the last slice sizes the next one.
        if let Some(at) = self.handed_out.take() {
            let took = now.duration_since(at);
            if took < QUICK {
                self.slice_rows = self.slice_rows.saturating_mul(2).min(1 << 20);
            } else if took > YIELD_EVERY {
                self.slice_rows = (self.slice_rows / 2).max(1);
            }
        }
        if now.duration_since(self.last_yield) >= YIELD_EVERY {
            self.last_yield = now;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        loop {
            if let Some(batch) = &self.current {
                let remaining = batch.num_rows() - self.offset;
                if remaining > 0 {
                    let n = remaining.min(self.slice_rows);
                    let slice = batch.slice(self.offset, n);
                    self.offset += n;
                    self.handed_out = Some(Instant::now());
                    return Poll::Ready(Some(Ok(slice)));
                }
                self.current = None;
            }
            match self.input.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(batch))) => {
                    self.current = Some(batch);
                    self.offset = 0;
                }
                other => return other,
            }
        }
    }
}

impl RecordBatchStream for SlicedStream {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_is_an_error_and_the_runtime_goes_on() {
        let rt = QueryRuntime::new(1).unwrap();
        let err = rt.run(async { panic!("boom") }).await.unwrap_err();
        assert!(err.0.contains("boom"), "{err}");
        assert_eq!(rt.run(async { 2 + 2 }).await.unwrap(), 4);
    }

    #[tokio::test]
    async fn query_threads_have_deep_stacks() {
        fn depth(n: u64) -> u64 {
            let pad = std::hint::black_box([0u8; 1024]);
            if n == 0 {
                u64::from(pad[0])
            } else {
                depth(n - 1) + 1
            }
        }
        // ~100 MiB of frames: far beyond a default 2 MiB thread stack.
        let rt = QueryRuntime::new(1).unwrap();
        assert_eq!(rt.run(async { depth(100_000) }).await.unwrap(), 100_000);
    }
}
