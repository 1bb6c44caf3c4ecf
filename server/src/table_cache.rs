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
//!
//! A copy of a table with a `transaction_id` column (statements, signals) also
//! holds its rows' order by that column ([`KeyIndex`], 8 bytes a row), so a scan
//! filtered on `transaction_id IN (…)` — what an incremental index refresh
//! asks for — reads just those rows instead of testing every row.

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

use crate::id_set::{KEY, wanted_ids};

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
    index: Option<KeyIndex>,
}

/// The rows of a copy in the order of their key (rows with a NULL key left
/// out): (batch, row), batches numbered across partitions in order.
#[derive(Debug)]
struct KeyIndex {
    column: usize,
    order: Vec<(u32, u32)>,
}

/// A batch's key column, for comparisons.
enum Keys<'a> {
    Utf8(&'a datafusion::arrow::array::StringArray),
    Large(&'a datafusion::arrow::array::LargeStringArray),
    View(&'a datafusion::arrow::array::StringViewArray),
}

impl<'a> Keys<'a> {
    /// The key columns of `batches`, if every one is of a string type.
    fn all(batches: &[&'a RecordBatch], column: usize) -> Option<Vec<Self>> {
        batches.iter().map(|b| Self::of(b, column)).collect()
    }

    fn of(batch: &'a RecordBatch, column: usize) -> Option<Self> {
        use datafusion::arrow::array::AsArray;
        let array = batch.column(column);
        match array.data_type() {
            datafusion::arrow::datatypes::DataType::Utf8 => Some(Self::Utf8(array.as_string())),
            datafusion::arrow::datatypes::DataType::LargeUtf8 => {
                Some(Self::Large(array.as_string()))
            }
            datafusion::arrow::datatypes::DataType::Utf8View => {
                Some(Self::View(array.as_string_view()))
            }
            _ => None,
        }
    }

    fn get(&self, row: usize) -> Option<&'a str> {
        use datafusion::arrow::array::Array;
        match self {
            Self::Utf8(a) => a.is_valid(row).then(|| a.value(row)),
            Self::Large(a) => a.is_valid(row).then(|| a.value(row)),
            Self::View(a) => a.is_valid(row).then(|| a.value(row)),
        }
    }
}

impl KeyIndex {
    /// The order of `batches` by their `KEY` column, if they have one of a
    /// string type.
    fn build(batches: &[&RecordBatch]) -> Option<Self> {
        let column = batches.first()?.schema().index_of(KEY).ok()?;
        let keys = Keys::all(batches, column)?;
        let mut order = Vec::new();
        for (b, batch) in batches.iter().enumerate() {
            let b = u32::try_from(b).ok()?;
            for row in 0..batch.num_rows() {
                if keys[b as usize].get(row).is_some() {
                    order.push((b, u32::try_from(row).ok()?));
                }
            }
        }
        let key = |&(b, r): &(u32, u32)| keys[b as usize].get(r as usize);
        order.sort_unstable_by(|x, y| key(x).cmp(&key(y)));
        Some(Self { column, order })
    }

    fn bytes(&self) -> usize {
        self.order.capacity() * std::mem::size_of::<(u32, u32)>()
    }

    /// The rows of `batches` whose key is one of `ids`, as one batch.
    fn lookup(&self, batches: &[&RecordBatch], ids: &[&str]) -> Result<RecordBatch> {
        let keys = Keys::all(batches, self.column)
            .ok_or_else(|| DataFusionError::Internal(format!("{KEY} is not a string")))?;
        let key = |&(b, r): &(u32, u32)| keys[b as usize].get(r as usize);
        let mut rows = Vec::new();
        for &id in ids {
            let start = self.order.partition_point(|p| key(p) < Some(id));
            rows.extend(
                self.order[start..]
                    .iter()
                    .take_while(|p| key(p) == Some(id))
                    .map(|&(b, r)| (b as usize, r as usize)),
            );
        }
        rows.sort_unstable();
        rows.dedup();
        let schema = batches
            .first()
            .map(|b| b.schema())
            .ok_or_else(|| DataFusionError::Internal("lookup in an empty copy".into()))?;
        if rows.is_empty() {
            return Ok(RecordBatch::new_empty(schema));
        }
        Ok(datafusion::arrow::compute::interleave_record_batch(
            batches, &rows,
        )?)
    }
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
                Ok((partitions, mut bytes)) => {
                    // Sorting millions of keys takes a while: off the async threads.
                    let ordered = tokio::task::spawn_blocking(move || {
                        let batches: Vec<&RecordBatch> = partitions.iter().flatten().collect();
                        let index = KeyIndex::build(&batches);
                        (partitions, index)
                    })
                    .await;
                    let Ok((partitions, index)) = ordered else {
                        budget.used.fetch_sub(bytes, Ordering::Relaxed);
                        warn!(table = %name, "table not cached: its key order failed");
                        return;
                    };
                    let index_bytes = index.as_ref().map_or(0, KeyIndex::bytes);
                    budget.used.fetch_add(index_bytes, Ordering::Relaxed);
                    bytes += index_bytes;
                    let copy = Arc::new(Copy {
                        files,
                        partitions,
                        bytes,
                        index,
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
            let wanted = copy
                .index
                .as_ref()
                .and_then(|index| Some((index, filters.iter().find_map(wanted_ids)?)));
            if let Some((index, ids)) = wanted {
                let batches: Vec<&RecordBatch> = copy.partitions.iter().flatten().collect();
                let rows = index.lookup(&batches, &ids)?;
                return MemorySourceConfig::try_new_exec(
                    &[vec![rows]],
                    self.schema(),
                    projection.cloned(),
                )
                .map(|exec| exec as Arc<dyn ExecutionPlan>);
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray, Int64Array, StringViewArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn batch(ids: &[Option<&str>], first: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new(KEY, DataType::Utf8View, true),
        ]));
        let n = Int64Array::from_iter_values(first..first + ids.len() as i64);
        RecordBatch::try_new(
            schema,
            vec![Arc::new(n), Arc::new(StringViewArray::from(ids.to_vec()))],
        )
        .unwrap()
    }

    #[test]
    fn the_key_order_finds_every_row_of_the_wanted_ids() {
        let batches = [
            batch(
                &[Some("T-b-long-enough-to-be-out-of-line"), None, Some("T-a")],
                0,
            ),
            batch(
                &[
                    Some("T-c"),
                    Some("T-a"),
                    Some("T-b-long-enough-to-be-out-of-line"),
                ],
                3,
            ),
        ];
        let refs: Vec<&RecordBatch> = batches.iter().collect();
        let index = KeyIndex::build(&refs).unwrap();
        assert_eq!(index.order.len(), 5, "the NULL key is left out");
        let found = index
            .lookup(
                &refs,
                &["T-a", "T-zz", "T-b-long-enough-to-be-out-of-line", "T-a"],
            )
            .unwrap();
        let n: Vec<i64> = found
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .values()
            .to_vec();
        assert_eq!(n, [0, 2, 4, 5], "each row once, in table order");
        let ids = found.column(1).as_string_view();
        assert!((0..found.num_rows()).all(|i| ids.is_valid(i)));
        assert_eq!(index.lookup(&refs, &["nope"]).unwrap().num_rows(), 0);
    }

    #[test]
    fn a_table_without_a_string_key_has_no_order() {
        let schema = Arc::new(Schema::new(vec![Field::new(KEY, DataType::Int64, false)]));
        let ints = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1]))]).unwrap();
        assert!(KeyIndex::build(&[&ints]).is_none());
        let schema = Arc::new(Schema::new(vec![Field::new(
            "other",
            DataType::Utf8,
            false,
        )]));
        let other = RecordBatch::try_new(
            schema,
            vec![Arc::new(datafusion::arrow::array::StringArray::from(vec![
                "x",
            ]))],
        )
        .unwrap();
        assert!(KeyIndex::build(&[&other]).is_none());
    }
}
