//! In-memory copies of the batch tables, so queries stream decoded Arrow data
//! instead of decoding Parquet every time (what ROAPI does for all its tables),
//! without giving up "files that arrive are seen by the next query".
//!
//! [`CachedTable`] wraps a table's [`ListingTable`]. Every scan lists the table's
//! files (one `LIST`/`HEAD`, cheap) and compares them — names, sizes, modification
//! times — with the files of the in-memory copy:
//! - same files: the scan reads the copy (`MemorySourceConfig`);
//! - otherwise: the scan reads the Parquet files (always current), and a load of
//!   the new file set starts in the background; the next scans use it once done.
//!
//! All tables share one byte budget (`tables.cache_mb`); a table whose files
//! would not fit is simply not cached. Filters are declared inexact, so DataFusion
//! keeps applying them above the in-memory scan, and they still prune Parquet.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use tracing::{info, warn};

/// Parquet bytes are assumed to grow by at most this factor when decoded; a
/// load is not started when the files' size times this exceeds the free budget.
const DECODE_GROWTH: u64 = 4;

/// The files a copy was made from: (path, size, modified ms), sorted.
type Fingerprint = Vec<(String, u64, i64)>;

/// The memory budget shared by every cached table.
#[derive(Debug, Clone)]
pub struct CacheBudget {
    limit: usize,
    used: Arc<AtomicUsize>,
}

impl CacheBudget {
    /// A budget of `limit` bytes (0 turns caching off).
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            used: Arc::default(),
        }
    }

    /// Bytes held by all copies.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn free(&self) -> usize {
        self.limit.saturating_sub(self.used())
    }
}

#[derive(Debug)]
struct Copy {
    files: Fingerprint,
    partitions: Vec<Vec<RecordBatch>>,
    bytes: usize,
}

#[derive(Debug, Default)]
struct State {
    copy: Option<Arc<Copy>>,
    /// The file set being loaded, or last found too big to cache.
    attempted: Option<Fingerprint>,
}

/// A listing table with an in-memory copy (see the module docs).
#[derive(Debug)]
pub struct CachedTable {
    name: String,
    inner: Arc<ListingTable>,
    store: Arc<dyn ObjectStore>,
    location: Path,
    budget: CacheBudget,
    state: Arc<Mutex<State>>,
}

impl CachedTable {
    /// Caches `inner`, whose files are `location` in `store` (a file or a folder).
    pub fn new(
        name: &str,
        inner: Arc<ListingTable>,
        store: Arc<dyn ObjectStore>,
        location: Path,
        budget: CacheBudget,
    ) -> Self {
        Self {
            name: name.to_owned(),
            inner,
            store,
            location,
            budget,
            state: Arc::default(),
        }
    }

    /// The current files: the single file at `location`, or the `.parquet`
    /// files directly inside it.
    async fn files(&self) -> Result<Fingerprint> {
        let meta = |m: object_store::ObjectMeta| {
            (
                m.location.to_string(),
                m.size,
                m.last_modified.timestamp_millis(),
            )
        };
        let mut files = match self.store.head(&self.location).await {
            Ok(m) => vec![meta(m)],
            Err(object_store::Error::NotFound { .. }) => self
                .store
                .list_with_delimiter(Some(&self.location))
                .await
                .map(|listing| {
                    listing
                        .objects
                        .into_iter()
                        .filter(|m| m.location.as_ref().ends_with(".parquet"))
                        .map(meta)
                        .collect()
                })
                .or_else(|e| match e {
                    object_store::Error::NotFound { .. } => Ok(Vec::new()),
                    e => Err(e),
                })?,
            Err(e) => return Err(e.into()),
        };
        files.sort();
        Ok(files)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The copy, if it was made from exactly `files`.
    fn copy_of(&self, files: &Fingerprint) -> Option<Arc<Copy>> {
        self.lock()
            .copy
            .as_ref()
            .filter(|c| &c.files == files)
            .cloned()
    }

    /// Starts loading `files` in the background unless that was tried already
    /// or cannot fit.
    async fn start_load(&self, state: &dyn Session, files: Fingerprint) -> Result<()> {
        if self.budget.limit == 0 || files.is_empty() {
            return Ok(());
        }
        {
            let mut s = self.lock();
            if s.attempted.as_ref() == Some(&files) {
                return Ok(());
            }
            s.attempted = Some(files.clone());
        }
        let on_disk: u64 = files.iter().map(|f| f.1).sum();
        let current = self.copy_of(&files).map_or(0, |c| c.bytes);
        let free = (self.budget.free() + current) as u64;
        if on_disk.saturating_mul(DECODE_GROWTH) > free {
            info!(table = %self.name, on_disk, free, "table too big for the cache; reading Parquet");
            return Ok(());
        }
        let plan = self.inner.scan(state, None, &[], None).await?;
        let task_ctx = state.task_ctx();
        let name = self.name.clone();
        let budget = self.budget.clone();
        let shared = Arc::clone(&self.state);
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            match load(plan, task_ctx, &budget).await {
                Ok((partitions, bytes)) => {
                    let copy = Arc::new(Copy {
                        files,
                        partitions,
                        bytes,
                    });
                    let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
                    let old = s.copy.replace(copy).map_or(0, |c| c.bytes);
                    budget.used.fetch_sub(old, Ordering::Relaxed);
                    info!(table = %name, bytes, ms = started.elapsed().as_millis() as u64, "table cached in memory");
                }
                Err(e) => warn!(table = %name, error = %e, "table not cached"),
            }
        });
        Ok(())
    }

    /// Loads the table now (at start-up), so the first queries hit memory.
    pub async fn warm(&self, state: &dyn Session) -> Result<()> {
        let files = self.files().await?;
        self.start_load(state, files).await
    }
}

/// Reads every partition of `plan`, counting bytes against the budget.
async fn load(
    plan: Arc<dyn ExecutionPlan>,
    task_ctx: Arc<TaskContext>,
    budget: &CacheBudget,
) -> Result<(Vec<Vec<RecordBatch>>, usize)> {
    let partitions = plan.properties().partitioning.partition_count();
    let reads = (0..partitions).map(|i| {
        let plan = Arc::clone(&plan);
        let task_ctx = Arc::clone(&task_ctx);
        async move {
            let mut batches = Vec::new();
            let mut bytes = 0;
            let mut stream = plan.execute(i, task_ctx)?;
            while let Some(batch) = stream.try_next().await? {
                let size = batch.get_array_memory_size();
                bytes += size;
                if budget.used.fetch_add(size, Ordering::Relaxed) + size > budget.limit {
                    budget.used.fetch_sub(bytes, Ordering::Relaxed);
                    return Err(DataFusionError::ResourcesExhausted(
                        "table cache budget exceeded".into(),
                    ));
                }
                batches.push(batch);
            }
            Ok::<_, DataFusionError>((batches, bytes))
        }
    });
    let results = futures::future::join_all(reads).await;
    let mut partitions = Vec::new();
    let mut total = 0;
    let mut failure = None;
    for result in results {
        match result {
            Ok((batches, bytes)) => {
                total += bytes;
                partitions.push(batches);
            }
            Err(e) => failure = Some(e),
        }
    }
    if let Some(e) = failure {
        budget.used.fetch_sub(total, Ordering::Relaxed);
        return Err(e);
    }
    Ok((partitions, total))
}

#[async_trait]
impl TableProvider for CachedTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let files = self.files().await?;
        if let Some(copy) = self.copy_of(&files) {
            let exec = MemorySourceConfig::try_new_exec(
                &copy.partitions,
                self.schema(),
                projection.cloned(),
            )?;
            return Ok(exec);
        }
        self.start_load(state, files).await?;
        self.inner.scan(state, projection, filters, limit).await
    }
}
