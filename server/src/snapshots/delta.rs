//! An index snapshot folder as a Delta Lake table (delta-rs): `output/<view>/`
//! holds `_delta_log/` and the data files, every refresh is one commit —
//! Overwrite for a full refresh, an Overwrite with a replace-where predicate
//! for an incremental one — and what the next incremental refresh needs is kept
//! in the commit's own metadata (`recon` key of `commitInfo`), so any Delta
//! reader (Spark, DuckDB, polars, pandas) sees exactly the current version and
//! recon needs no manifest of its own. This file creates the table (and
//! changes its schema) with delta-rs's write operation and reads its log;
//! `writer.rs` writes every other refresh.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Column;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::{Expr, LogicalPlan, col, lit};
use datafusion::logical_expr::{LogicalPlanBuilder, cast};
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use deltalake::delta_datafusion::planner::DeltaPlanner;
use deltalake::kernel::StructType;
use deltalake::kernel::engine::arrow_conversion::{TryIntoArrow, TryIntoKernel};
use deltalake::kernel::transaction::CommitProperties;
use deltalake::logstore::{LogStore, LogStoreFactory, ObjectStoreRef, StorageConfig};
use deltalake::operations::vacuum::VacuumMode;
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

use super::writer;
use crate::id_set::IdSet;
use crate::warehouse::Warehouse;

/// Zstandard level of the data files: fast to write, compact to read.
pub const SNAPSHOT_ZSTD_LEVEL: i32 = 1;

/// Size a data file is cut at. Rows reach each writer roughly in the order
/// their transactions arrived (the latest-event index scans in arrival order),
/// so a file holds a stretch of time, and an incremental refresh rewrites
/// only the files that held the changed transactions: at 8 MiB, a `final_index`
/// of 5 M transactions is about 20 files, and changes to the newest 10,000
/// rewrite the newest file of each writer.
pub const TARGET_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// The key of recon's own entry in a commit's `commitInfo`.
pub const COMMIT_KEY: &str = "recon";

/// What a refresh records in its commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefreshRecord {
    /// Unique id of the refresh run.
    pub run_id: String,
    /// `full` or `incremental`.
    pub kind: String,
    /// When the refresh started, milliseconds since the epoch (its duration
    /// ends at the commit's timestamp).
    pub started_at_ms: i64,
    /// The refresh's inputs, for the next incremental refresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<serde_json::Value>,
}

/// One version of a view's table, from its commit.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    /// The Delta version.
    pub version: u64,
    /// Commit time, milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// Delta's operation (`WRITE`, `VACUUM END`, …).
    pub operation: String,
    /// Rows the commit added, from delta-rs's operation metrics.
    pub rows_added: u64,
    /// Data files it added (new rows, and rows kept from rewritten files).
    pub files_added: u64,
    /// Data files it removed (replaced, or rewritten without the replaced rows).
    pub files_removed: u64,
    /// recon's record, for the commits of refreshes.
    pub refresh: Option<RefreshRecord>,
}

pub(super) fn delta_error(e: deltalake::DeltaTableError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// Version `version` from its commit file: the `commitInfo` line's time,
/// operation and recon record (a commit without one reads as an unnamed operation).
fn commit_version(version: u64, commit: &[u8]) -> Version {
    let info = commit
        .split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice::<serde_json::Value>(line).ok())
        .find_map(|mut action| action.get_mut("commitInfo").map(serde_json::Value::take))
        .unwrap_or_default();
    Version {
        version,
        timestamp_ms: info["timestamp"].as_i64().unwrap_or(0),
        operation: info["operation"].as_str().unwrap_or_default().to_owned(),
        rows_added: info["operationMetrics"]["num_added_rows"]
            .as_u64()
            .unwrap_or(0),
        files_added: info["operationMetrics"]["num_added_files"]
            .as_u64()
            .unwrap_or(0),
        files_removed: info["operationMetrics"]["num_removed_files"]
            .as_u64()
            .unwrap_or(0),
        refresh: serde_json::from_value(info[COMMIT_KEY].clone()).ok(),
    }
}

/// delta-rs finds a table's log store by URL scheme and knows only local
/// and in-memory ones without its cloud features; recon hands it the
/// warehouse's own store, so S3 needs only delta-rs's default log store
/// (commits as create-only puts, which S3 and MinIO honour).
fn register_log_stores() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for scheme in ["s3://", "s3a://"] {
            if let Ok(url) = url::Url::parse(scheme) {
                deltalake::logstore::logstore_factories()
                    .insert(url, Arc::new(DefaultLogStores) as Arc<dyn LogStoreFactory>);
            }
        }
    });
}

/// [`register_log_stores`]' factory: delta-rs's default log store.
struct DefaultLogStores;

impl LogStoreFactory for DefaultLogStores {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &url::Url,
        options: &StorageConfig,
    ) -> deltalake::DeltaResult<Arc<dyn LogStore>> {
        Ok(deltalake::logstore::default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

/// Delta's type for timestamps of every unit and zone: microseconds, UTC. A
/// timestamp without a zone is read as UTC (DESIGN §3), so the table needs
/// no `timestampNtz` feature and keeps protocol reader 1 / writer 2, which
/// every Delta reader accepts.
fn delta_timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// `plan` with its timestamp columns cast to [`delta_timestamp`].
fn with_delta_types(plan: LogicalPlan) -> Result<LogicalPlan> {
    let schema = plan.schema().clone();
    if !schema
        .fields()
        .iter()
        .any(|f| matches!(f.data_type(), DataType::Timestamp(..)))
    {
        return Ok(plan);
    }
    let columns = schema.iter().map(|(qualifier, field)| {
        let column = Expr::Column(Column::new(qualifier.cloned(), field.name()));
        match field.data_type() {
            DataType::Timestamp(..) => cast(column, delta_timestamp()).alias(field.name()),
            _ => column,
        }
    });
    LogicalPlanBuilder::from(plan).project(columns)?.build()
}

/// delta-rs's default for the columns a data file keeps statistics of.
pub(super) const DEFAULT_INDEXED_COLUMNS: u64 = 32;

/// Rows per Parquet row group: small enough that a file is cut close to
/// [`TARGET_FILE_BYTES`] (a writer can only cut between row groups).
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Largest dictionary a column chunk builds before it falls back to plain
/// encoding. Low-cardinality columns (currencies, statuses, merchants) stay
/// far below it; an id column, whose values are all distinct, gives up after
/// a few thousand values instead of interning a megabyte of them in every
/// row group (a quarter of a refresh's CPU time at Parquet's 1 MiB default).
pub const DICTIONARY_PAGE_BYTES: usize = 64 * 1024;

/// How the data files are encoded.
pub(super) fn writer_properties() -> Result<WriterProperties> {
    let compression = ZstdLevel::try_new(SNAPSHOT_ZSTD_LEVEL)
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(compression))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_dictionary_page_size_limit(DICTIONARY_PAGE_BYTES)
        .build())
}

/// The table's schema as Arrow, when `plan` (with Delta's types) writes the
/// same columns of the same types: the case of every refresh but the first
/// one and the one after a change of the view's SQL.
fn unchanged_schema(table: &DeltaTable, plan: &LogicalPlan) -> Result<Option<SchemaRef>> {
    let external = |e: datafusion::arrow::error::ArrowError| DataFusionError::External(Box::new(e));
    let current = table.snapshot().map_err(delta_error)?.schema();
    let written: StructType = plan
        .schema()
        .as_arrow()
        .try_into_kernel()
        .map_err(external)?;
    if written.fields().ne(current.fields()) {
        return Ok(None);
    }
    let arrow: Schema = current.as_ref().try_into_arrow().map_err(external)?;
    Ok(Some(Arc::new(arrow)))
}

/// `plan` with each column cast to its type in `target` (same names, in order).
pub(super) fn cast_to(plan: LogicalPlan, target: &Schema) -> Result<LogicalPlan> {
    let columns = plan
        .schema()
        .iter()
        .zip(target.fields())
        .map(|((qualifier, field), want)| {
            let column = Expr::Column(Column::new(qualifier.cloned(), field.name()));
            if field.data_type() == want.data_type() {
                column
            } else {
                cast(column, want.data_type().clone()).alias(field.name())
            }
        })
        .collect::<Vec<_>>();
    LogicalPlanBuilder::from(plan).project(columns)?.build()
}

/// The rows of transactions `ids` for delta-rs's replace-where: `key IN
/// (ids)` as literals (delta-rs writes the predicate into its log, so it
/// must be plain SQL; only the rare write through delta-rs uses it) with the
/// ids' range as well, which lets it skip by the files' statistics the data
/// files outside it (an IN list this long is not used for that).
fn replaced_rows(key: &str, ids: &IdSet) -> Expr {
    let ids = ids.as_slice();
    let changed = col(key).in_list(ids.iter().map(|id| lit(id.as_str())).collect(), false);
    match (ids.first(), ids.last()) {
        (Some(low), Some(high)) => col(key)
            .gt_eq(lit(low.as_str()))
            .and(col(key).lt_eq(lit(high.as_str())))
            .and(changed),
        _ => changed,
    }
}

/// The schema `<view>_snapshot` has for a view of `schema`: what reading the
/// Delta table gives (Delta's types, strings as views).
pub fn reader_schema(schema: &Schema) -> Result<SchemaRef> {
    let external = |e: datafusion::arrow::error::ArrowError| DataFusionError::External(Box::new(e));
    let written = Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Timestamp(..) => {
                    Arc::new(f.as_ref().clone().with_data_type(delta_timestamp()))
                }
                _ => Arc::clone(f),
            })
            .collect::<Vec<_>>(),
    );
    let kernel: StructType = (&written).try_into_kernel().map_err(external)?;
    let read: Schema = (&kernel).try_into_arrow().map_err(external)?;
    let fields = read.fields().iter().map(|f| match f.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 => {
            Arc::new(f.as_ref().clone().with_data_type(DataType::Utf8View))
        }
        DataType::Binary | DataType::LargeBinary => {
            Arc::new(f.as_ref().clone().with_data_type(DataType::BinaryView))
        }
        _ => Arc::clone(f),
    });
    Ok(Arc::new(Schema::new(fields.collect::<Vec<_>>())))
}

/// A view's Delta table in the warehouse.
#[derive(Debug, Clone)]
pub struct IndexTable {
    pub(super) warehouse: Warehouse,
    pub(super) location: String,
}

impl IndexTable {
    /// The table of `view`: `output/<view>/`.
    pub fn new(warehouse: &Warehouse, view: &str) -> Self {
        Self {
            warehouse: warehouse.clone(),
            location: format!("output/{view}/"),
        }
    }

    fn builder(&self) -> Result<DeltaTableBuilder> {
        register_log_stores();
        let url = self.warehouse.url(&self.location)?;
        Ok(DeltaTableBuilder::from_url(url.clone())
            .map_err(delta_error)?
            .with_storage_backend(self.warehouse.store(), url))
    }

    /// Whether the table has a log yet (its first commit was written).
    pub async fn exists(&self) -> Result<bool> {
        let log = self
            .warehouse
            .path(&format!("{}_delta_log/", self.location))?;
        let first = self.warehouse.store().list(Some(&log)).next().await;
        Ok(first.transpose()?.is_some())
    }

    /// The newest version, or `None` before the first commit.
    pub async fn load(&self) -> Result<Option<DeltaTable>> {
        if !self.exists().await? {
            return Ok(None);
        }
        let mut table = self.builder()?.build().map_err(delta_error)?;
        table.load().await.map_err(|e| {
            DataFusionError::Execution(format!(
                "the Delta log of {} cannot be read, so the view is not refreshed until \
                 the folder is repaired or removed (its next refresh then starts a new \
                 table): {e}",
                self.location
            ))
        })?;
        Ok(Some(table))
    }

    /// The table at `version`.
    pub async fn load_version(&self, version: u64) -> Result<DeltaTable> {
        self.builder()?
            .with_version(version)
            .load()
            .await
            .map_err(delta_error)
    }

    /// Writes `plan`'s rows as one commit: the whole table, or with
    /// `replace` only the rows of those transactions (`(key column, ids)`;
    /// every row of `plan` must be one of them).
    pub async fn write(
        &self,
        session: &SessionState,
        plan: LogicalPlan,
        replace: Option<(&str, &IdSet)>,
        record: &RefreshRecord,
    ) -> Result<DeltaTable> {
        let plan = with_delta_types(plan)?;
        let table = match self.load().await? {
            Some(table) => match unchanged_schema(&table, &plan)? {
                // The usual case: recon's parallel writers (writer.rs).
                Some(target) => {
                    let written = writer::Written {
                        index: self,
                        session,
                        record,
                    };
                    return match replace {
                        None => written.overwrite(table, plan, &target).await,
                        Some((key, ids)) => written.replace(table, plan, &target, key, ids).await,
                    };
                }
                None => table,
            },
            None => self.builder()?.build().map_err(delta_error)?,
        };
        // The first write, and the one after a change of the view's SQL:
        // delta-rs's write, which creates or changes the table's schema.
        let metadata =
            serde_json::to_value(record).map_err(|e| DataFusionError::External(Box::new(e)))?;
        // delta-rs plans its write with nodes of its own: its planner on top
        // of the caller's session (functions, object stores, config).
        let session = SessionStateBuilder::new_from_existing(session.clone())
            .with_query_planner(DeltaPlanner::new())
            .build();
        let mut write = table
            .write(Vec::new())
            .with_input_plan(plan)
            .with_session_state(Arc::new(session))
            .with_save_mode(SaveMode::Overwrite)
            .with_target_file_size(std::num::NonZeroU64::new(TARGET_FILE_BYTES))
            .with_writer_properties(writer_properties()?)
            // No retry on top of a commit another writer made meanwhile: of
            // two refreshes racing from one version, one wins, the other fails.
            .with_commit_properties(
                CommitProperties::default()
                    .with_metadata([(COMMIT_KEY.to_owned(), metadata)])
                    .with_max_retries(0),
            );
        write = match replace {
            Some((key, ids)) => write.with_replace_where(replaced_rows(key, ids)),
            // A full refresh may follow a change of the view's SQL.
            None => write.with_schema_mode(SchemaMode::Overwrite),
        };
        write.await.map_err(|e| self.commit_error(e))
    }

    /// A failed write or commit; losing a race to another writer says so.
    pub(super) fn commit_error(&self, e: deltalake::DeltaTableError) -> DataFusionError {
        match e {
            deltalake::DeltaTableError::Transaction { .. }
            | deltalake::DeltaTableError::VersionAlreadyExists(_) => {
                DataFusionError::Execution(format!(
                    "another writer committed to {} first, so this refresh was not applied \
                     (the other one's version is current): {e}",
                    self.location
                ))
            }
            other => delta_error(other),
        }
    }

    /// Every version still in the log, newest first: each commit file of
    /// `_delta_log/` (its number is the version) with its `commitInfo`.
    pub async fn history(&self) -> Result<Vec<Version>> {
        let log = self
            .warehouse
            .path(&format!("{}_delta_log/", self.location))?;
        let store = self.warehouse.store();
        let mut commits: Vec<(u64, object_store::path::Path)> = store
            .list(Some(&log))
            .try_filter_map(|meta| async move {
                let version = meta
                    .location
                    .filename()
                    .and_then(|name| name.strip_suffix(".json"))
                    .filter(|digits| digits.len() == 20)
                    .and_then(|digits| digits.parse::<u64>().ok());
                Ok(version.map(|v| (v, meta.location)))
            })
            .try_collect()
            .await?;
        commits.sort_unstable_by_key(|(v, _)| std::cmp::Reverse(*v));
        futures::stream::iter(commits)
            .map(|(version, path)| {
                let store = Arc::clone(&store);
                async move {
                    let bytes = store.get(&path).await?.bytes().await?;
                    Ok::<_, DataFusionError>(commit_version(version, &bytes))
                }
            })
            .buffered(8)
            .try_collect()
            .await
    }

    /// The version `version` as its commit describes it.
    pub async fn version_info(&self, version: u64) -> Result<Version> {
        let path = self
            .warehouse
            .path(&format!("{}_delta_log/{version:020}.json", self.location))?;
        let bytes = self.warehouse.store().get(&path).await?.bytes().await?;
        Ok(commit_version(version, &bytes))
    }

    /// Keeps the versions from `oldest` on readable: a checkpoint of the
    /// newest version, data files no kept version uses vacuumed (with them
    /// whatever a failed or killed write left), and log entries before the
    /// newest checkpoint at or below `oldest` removed.
    /// Without `checkpoint`, the newest version has one already.
    pub async fn retain(table: DeltaTable, oldest: u64, checkpoint: bool) -> Result<DeltaTable> {
        let newest = table.version().unwrap_or(0);
        if checkpoint {
            deltalake::checkpoints::create_checkpoint(&table, None)
                .await
                .map_err(delta_error)?;
        }
        let kept: Vec<u64> = (oldest.min(newest)..=newest).collect();
        let (table, metrics) = table
            .vacuum()
            .with_keep_versions(&kept)
            // Full: also the files of writes that never committed.
            .with_mode(VacuumMode::Full)
            .with_retention_period(chrono::Duration::zero())
            .with_enforce_retention_duration(false)
            .await
            .map_err(delta_error)?;
        tracing::debug!(deleted = metrics.files_deleted.len(), "vacuumed");
        let removed = deltalake::checkpoints::cleanup_expired_logs_for(
            oldest,
            table.log_store().as_ref(),
            chrono::Utc::now().timestamp_millis(),
            None,
        )
        .await
        .map_err(delta_error)?;
        tracing::debug!(removed, "log entries removed");
        Ok(table)
    }

    /// Removes what interrupted uploads left in the table's folder of a local
    /// warehouse: object_store stages a local upload as `<file>#<n>` and
    /// renames it when complete, and it lists no staged file, so a vacuum never
    /// sees them. Only call it while no write to the table is running. (On S3 an
    /// interrupted upload is an incomplete multipart upload, which the bucket's
    /// lifecycle rule `AbortIncompleteMultipartUpload` removes.)
    pub fn remove_staged_uploads(&self) -> Result<usize> {
        let Some(folder) = self.warehouse.local_path(&self.location) else {
            return Ok(0);
        };
        let mut removed = 0;
        let entries = match std::fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let staged = name
                .to_str()
                .and_then(|n| n.rsplit_once('#'))
                .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if staged && entry.file_type()?.is_file() {
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// A DataFusion table over `table`'s files at its loaded version.
    pub async fn provider(
        table: &DeltaTable,
        session: &dyn Session,
    ) -> Result<Arc<dyn TableProvider>> {
        table
            .update_datafusion_session(session)
            .map_err(delta_error)?;
        table.table_provider().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    async fn count(ctx: &SessionContext, provider: Arc<dyn TableProvider>) -> i64 {
        let batches = ctx.read_table(provider).unwrap().collect().await.unwrap();
        batches.iter().map(|b| b.num_rows() as i64).sum()
    }

    /// `view`'s table in a fresh local warehouse, and a session that reaches it.
    fn local_table(view: &str) -> (tempfile::TempDir, SessionContext, IndexTable) {
        let dir = tempfile::tempdir().unwrap();
        let warehouse = Warehouse::open(dir.path().to_str().unwrap()).unwrap();
        let ctx = SessionContext::new();
        warehouse.register(ctx.runtime_env().as_ref());
        let index = IndexTable::new(&warehouse, view);
        (dir, ctx, index)
    }

    fn record(kind: &str, rows: u64) -> RefreshRecord {
        RefreshRecord {
            run_id: format!("run-{kind}-{rows}"),
            kind: kind.into(),
            started_at_ms: 1,
            inputs: Some(serde_json::json!({"next_offsets": {"0": 5}})),
        }
    }

    #[tokio::test]
    async fn full_then_replace_where_then_time_travel() {
        let (_dir, ctx, index) = local_table("final_index");
        assert!(index.load().await.unwrap().is_none());

        let full = ctx
            .sql("SELECT concat('T-', CAST(value AS VARCHAR)) AS transaction_id, value AS amount FROM generate_series(1, 1000)")
            .await
            .unwrap()
            .into_unoptimized_plan();
        let table = index
            .write(&ctx.state(), full, None, &record("full", 1000))
            .await
            .unwrap();
        assert_eq!(table.version(), Some(0));

        let changed = ctx
            .sql("SELECT concat('T-', CAST(value AS VARCHAR)) AS transaction_id, value * 100 AS amount FROM generate_series(1, 10)")
            .await
            .unwrap()
            .into_unoptimized_plan();
        let ids = IdSet::new((1..=10).map(|i| format!("T-{i}")));
        let table = index
            .write(
                &ctx.state(),
                changed,
                Some(("transaction_id", &ids)),
                &record("incremental", 10),
            )
            .await
            .unwrap();
        assert_eq!(table.version(), Some(1));
        let provider = IndexTable::provider(&table, &ctx.state()).await.unwrap();
        assert_eq!(count(&ctx, Arc::clone(&provider)).await, 1000);
        let sum = ctx
            .read_table(provider)
            .unwrap()
            .aggregate(
                vec![],
                vec![datafusion::functions_aggregate::sum::sum(col("amount"))],
            )
            .unwrap()
            .collect()
            .await
            .unwrap();
        let sum = datafusion::arrow::util::pretty::pretty_format_batches(&sum)
            .unwrap()
            .to_string();
        // 1..1000 summed, with 1..10 multiplied by 100.
        assert!(sum.contains(&(500_500 + 55 * 99).to_string()), "{sum}");

        let history = index.history().await.unwrap();
        assert_eq!(history.len(), 2);
        assert_eq!(history[0].version, 1);
        assert_eq!(history[0].refresh.as_ref().unwrap().kind, "incremental");
        assert_eq!(history[1].refresh.as_ref().unwrap().run_id, "run-full-1000");
        assert_eq!((history[0].rows_added, history[1].rows_added), (10, 1000));

        let v0 = index.load_version(0).await.unwrap();
        let provider = IndexTable::provider(&v0, &ctx.state()).await.unwrap();
        assert_eq!(count(&ctx, provider).await, 1000);
    }

    #[tokio::test]
    async fn a_full_refresh_of_the_same_schema_replaces_every_file_in_one_commit() {
        let (_dir, ctx, index) = local_table("final_index");
        let sql = |n: u32, extra: &str| {
            format!(
                "SELECT concat('T-', CAST(value AS VARCHAR)) AS transaction_id, value AS amount, \
                 now() AS processed_at{extra} FROM generate_series(1, {n})"
            )
        };
        let plan = |sql: String| {
            let ctx = ctx.clone();
            async move { ctx.sql(&sql).await.unwrap().into_unoptimized_plan() }
        };
        let first = index
            .write(
                &ctx.state(),
                plan(sql(1000, "")).await,
                None,
                &record("full", 1000),
            )
            .await
            .unwrap();
        let files_before = first.snapshot().unwrap().log_data().num_files();
        // The same columns: recon's parallel writers, not delta-rs's write.
        let again = plan(sql(700, "")).await;
        assert!(
            unchanged_schema(&first, &with_delta_types(again.clone()).unwrap())
                .unwrap()
                .is_some()
        );
        let second = index
            .write(&ctx.state(), again, None, &record("full", 700))
            .await
            .unwrap();
        assert_eq!(second.version(), Some(1));
        let provider = IndexTable::provider(&second, &ctx.state()).await.unwrap();
        assert_eq!(count(&ctx, provider).await, 700);
        let latest = index.version_info(1).await.unwrap();
        assert_eq!(latest.rows_added, 700);
        assert_eq!(latest.files_removed as usize, files_before);
        assert_eq!(latest.refresh.unwrap().run_id, "run-full-700");
        // A new column (the view's SQL changed): delta-rs's write, new schema.
        let changed = plan(sql(10, ", 1 AS extra")).await;
        assert!(
            unchanged_schema(&second, &with_delta_types(changed.clone()).unwrap())
                .unwrap()
                .is_none()
        );
        let third = index
            .write(&ctx.state(), changed, None, &record("full", 10))
            .await
            .unwrap();
        let provider = IndexTable::provider(&third, &ctx.state()).await.unwrap();
        assert_eq!(provider.schema().fields().len(), 4);
        assert_eq!(count(&ctx, provider).await, 10);
        // Version 1 is still readable as it was.
        let v1 = index.load_version(1).await.unwrap();
        let provider = IndexTable::provider(&v1, &ctx.state()).await.unwrap();
        assert_eq!(count(&ctx, provider).await, 700);
    }

    #[tokio::test]
    async fn an_incremental_refresh_rewrites_only_the_files_holding_changed_transactions() {
        let (_dir, ctx, index) = local_table("final_index");
        // Ten files of 100 transactions each, in order (T-0000 … T-0999).
        let ids = |from: u32, to: u32| {
            format!(
                "SELECT concat('T-', lpad(CAST(value AS VARCHAR), 4, '0')) AS transaction_id, \
                 value AS amount FROM generate_series({from}, {to})"
            )
        };
        let mut table = None;
        for i in 0..10 {
            let plan = ctx
                .sql(&ids(i * 100, i * 100 + 99))
                .await
                .unwrap()
                .into_unoptimized_plan();
            // The first write creates the table, the others append to it.
            let written = match table {
                None => index
                    .write(&ctx.state(), plan, None, &record("full", 100))
                    .await
                    .unwrap(),
                Some(_) => {
                    let batch = IdSet::new((i * 100..i * 100 + 100).map(|v| format!("T-{v:04}")));
                    index
                        .write(
                            &ctx.state(),
                            plan,
                            Some(("transaction_id", &batch)),
                            &record("incremental", 100),
                        )
                        .await
                        .unwrap()
                }
            };
            table = Some(written);
        }
        let files = |t: &DeltaTable| t.snapshot().unwrap().log_data().num_files();
        assert_eq!(files(table.as_ref().unwrap()), 10);
        let version = |v| index.version_info(v);
        // Appending (new transactions) removed no file.
        assert_eq!(version(9).await.unwrap().files_removed, 0);

        // New rows for T-0150 and T-0151 (second file) and T-5000 (new).
        let changed = IdSet::new(["T-0150", "T-0151", "T-5000"].map(String::from));
        let plan = ctx
            .sql("SELECT * FROM (VALUES ('T-0150', -1), ('T-0151', -1), ('T-5000', -1)) AS v(transaction_id, amount)")
            .await
            .unwrap()
            .into_unoptimized_plan();
        let table = index
            .write(
                &ctx.state(),
                plan,
                Some(("transaction_id", &changed)),
                &record("incremental", 3),
            )
            .await
            .unwrap();
        let latest = version(10).await.unwrap();
        assert_eq!((latest.files_removed, latest.rows_added), (1, 3));
        assert_eq!(files(&table), 10);
        let provider = IndexTable::provider(&table, &ctx.state()).await.unwrap();
        let rows = ctx
            .read_table(provider)
            .unwrap()
            .aggregate(
                vec![],
                vec![
                    datafusion::functions_aggregate::count::count_all(),
                    datafusion::functions_aggregate::sum::sum(col("amount")),
                ],
            )
            .unwrap()
            .collect()
            .await
            .unwrap();
        let rows = datafusion::arrow::util::pretty::pretty_format_batches(&rows)
            .unwrap()
            .to_string();
        // 0..999 summed, without 150 and 151, with three rows of -1.
        let cells: Vec<&str> = rows
            .lines()
            .nth(3)
            .unwrap()
            .split('|')
            .map(str::trim)
            .collect();
        assert_eq!(
            cells[1..3],
            ["1001", &(499_500 - 301 - 3).to_string()],
            "{rows}"
        );
    }

    #[tokio::test]
    async fn retention_keeps_the_newest_versions_readable() {
        let (_dir, ctx, index) = local_table("batch_index");
        // As the materializer does: after each write, keep the newest two writes.
        let mut writes = Vec::new();
        for i in 1..=5 {
            let plan = ctx
                .sql(&format!("SELECT value AS v FROM generate_series(1, {i})"))
                .await
                .unwrap()
                .into_unoptimized_plan();
            let table = index
                .write(&ctx.state(), plan, None, &record("full", i))
                .await
                .unwrap();
            writes.push((table.version().unwrap(), i));
            let oldest = writes[writes.len().saturating_sub(2)].0;
            IndexTable::retain(table, oldest, true).await.unwrap();
        }
        let history = index.history().await.unwrap();
        let refreshes: Vec<u64> = history
            .iter()
            .filter(|v| v.refresh.is_some())
            .map(|v| v.version)
            .collect();
        let kept: Vec<u64> = writes[3..].iter().rev().map(|(v, _)| *v).collect();
        assert_eq!(refreshes, kept, "{history:?}");
        assert!(
            history.iter().any(|v| v.operation.starts_with("VACUUM")),
            "{history:?}"
        );
        for (version, rows) in &writes[3..] {
            let t = index.load_version(*version).await.unwrap();
            let provider = IndexTable::provider(&t, &ctx.state()).await.unwrap();
            assert_eq!(count(&ctx, provider).await, *rows as i64);
        }
        // The oldest writes' commits and files are gone.
        assert!(index.load_version(writes[1].0).await.is_err());
    }

    #[tokio::test]
    async fn readers_get_the_schema_reader_schema_predicts() {
        let (_dir, ctx, index) = local_table("merchant_daily_kpi");
        let frame = ctx
            .sql(
                "SELECT arrow_cast('m', 'Utf8View') AS merchant_id, CAST('2026-11-30' AS DATE) AS day, \
                 CAST(1.5 AS DECIMAL(12, 2)) AS value, now() AS at, \
                 arrow_cast(now(), 'Timestamp(Microsecond, None)') AS local_at, 3 AS n",
            )
            .await
            .unwrap();
        let predicted = reader_schema(frame.schema().as_arrow()).unwrap();
        let table = index
            .write(
                &ctx.state(),
                frame.into_unoptimized_plan(),
                None,
                &record("full", 1),
            )
            .await
            .unwrap();
        let provider = IndexTable::provider(&table, &ctx.state()).await.unwrap();
        // Delta's reader 1 / writer 2: no table feature (timestampNtz) needed.
        let log = std::fs::read_to_string(
            _dir.path()
                .join("output/merchant_daily_kpi/_delta_log/00000000000000000000.json"),
        )
        .unwrap();
        assert!(
            log.contains(r#"{"protocol":{"minReaderVersion":1,"minWriterVersion":2}}"#),
            "{log}"
        );
        assert_eq!(provider.schema().fields(), predicted.fields());
    }
}
