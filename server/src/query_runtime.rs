//! Where queries execute: a thread pool of their own, apart from the runtime
//! that answers gRPC and HTTP, so a CPU-bound query can never stall Flight
//! metadata calls, `/healthz` or new connections.
//!
//! - [`QueryRuntime`]: a multi-threaded tokio runtime whose threads have large
//!   stacks (planning and evaluating deep expressions recurses), used for
//!   planning, binding and running every client statement and every refresh.
//! - [`YieldingJoins`]: a physical optimizer rule that makes joins yield to the
//!   scheduler. A join can produce many output batches from one input batch
//!   without polling its inputs (a cross join of two large inputs), so the
//!   cooperative budget that DataFusion's sources consume never runs out and a
//!   timed-out or cancelled query would keep its core busy. Wrapping each join
//!   in DataFusion's [`CooperativeExec`] spends budget on every batch the join
//!   emits; once the budget is spent the task yields and a cancel or timeout
//!   takes effect.

use std::future::Future;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::error::Result as DfResult;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coop::CooperativeExec;
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
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map_err(|e| TaskFailed(panic_message(e)))
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
    let payload = e.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned())
}

/// Wraps every join in a [`CooperativeExec`] (see the module docs). Runs last,
/// after DataFusion's own rules.
#[derive(Debug, Default)]
pub struct YieldingJoins;

impl PhysicalOptimizerRule for YieldingJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if node.name().contains("Join") {
                let wrapped: Arc<dyn ExecutionPlan> = Arc::new(CooperativeExec::new(node));
                Ok(Transformed::yes(wrapped))
            } else {
                Ok(Transformed::no(node))
            }
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
