//! Materialised snapshots of the index views (DESIGN §4): a refresh computes a
//! view and writes it as Parquet under `output/<view>/snapshot-<run id>/`, then
//! switches `output/<view>/_manifest.json` (one atomic put) to name the new
//! snapshot. Readers only follow the manifest, so they never see a partial
//! snapshot, and a refresh that fails or is killed leaves the previous one in
//! place (its half-written folder is removed by the next refresh). The manifest
//! keeps the newest `snapshot_retention` snapshots; older folders are deleted.
//!
//! The newest snapshot is the table `<view>_snapshot`; every kept snapshot is a
//! row of `index_snapshots`. A refresh runs on demand ([`Materializer::refresh`],
//! reached through `REFRESH INDEX <view> [FULL]` and the `RefreshIndex` Flight
//! action) and on a schedule ([`Materializer::run_schedule`]).
//!
//! `batch_index` and `final_index` refresh incrementally when they can
//! ([`incremental`]): only the transactions with new events since the previous
//! snapshot are recomputed and written as a new layer over the previous
//! snapshot's layers ([`layers`]); after [`MAX_LAYERS`] layers, when the
//! changed rows pass [`MAX_DELTA_SHARE`] of the base, or when a batch input
//! changed, the refresh is a full one again.

pub mod delta;
pub mod incremental;
pub mod layers;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::Session;
use datafusion::config::TableParquetOptions;
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionContext, col, lit};
use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::ingest::live::SystemTable;
use crate::warehouse::Warehouse;
use incremental::Inputs;
use layers::{Layer, layered_table};

/// Parquet compression of snapshot files: fast to write, compact to read.
pub const SNAPSHOT_COMPRESSION: &str = "zstd(1)";

/// The views that are materialised, in dependency order.
pub const VIEWS: [&str; 3] = ["batch_index", "final_index", "merchant_daily_kpi"];

/// Layers a snapshot may have before the next refresh is a full one.
pub const MAX_LAYERS: usize = 8;
/// Share of the base layer's rows the incremental layers may reach before the
/// next refresh is a full one.
pub const MAX_DELTA_SHARE: f64 = 0.25;

/// How a refresh may go about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshMode {
    /// Incremental when the view and its inputs allow, full otherwise.
    Auto,
    /// Recompute the whole view.
    Full,
}

/// One materialised snapshot, as recorded in its view's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The view it is a copy of.
    pub view: String,
    /// Unique id of the refresh run (`<UTC time>-<random>`).
    pub run_id: String,
    /// When the refresh started, milliseconds since the epoch (UTC).
    pub created_at_ms: i64,
    /// Rows written.
    pub rows: u64,
    /// How long the refresh took.
    pub duration_ms: u64,
    /// Its folder, relative to the warehouse root (ends in `/`).
    pub location: String,
    /// Its Parquet files, names inside `location`.
    pub files: Vec<String>,
    /// Earlier layers it builds on, oldest first; empty for a full snapshot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub base: Vec<Layer>,
    /// What it was computed from (absent in manifests of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Inputs>,
}

impl Snapshot {
    /// Every layer, oldest first: the base, then the files this run wrote.
    pub fn layers(&self) -> Vec<Layer> {
        let mut layers = self.base.clone();
        layers.push(Layer {
            location: self.location.clone(),
            files: self.files.clone(),
            rows: self.rows,
        });
        layers
    }

    /// `full` or `incremental`.
    pub fn kind(&self) -> &'static str {
        if self.base.is_empty() {
            "full"
        } else {
            "incremental"
        }
    }
}

/// `output/<view>/_manifest.json`: the kept snapshots, newest first.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    snapshots: Vec<Snapshot>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct RefreshStats {
    /// Refreshes that completed.
    pub runs: AtomicU64,
    /// Refreshes that failed.
    pub failures: AtomicU64,
    /// Sum of the completed refreshes' durations.
    pub total_ms: AtomicU64,
}

/// Why a refresh did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// Not one of [`VIEWS`].
    #[error("unknown index {0:?}: expected one of batch_index, final_index, merchant_daily_kpi")]
    UnknownView(String),
    /// Computing or writing the snapshot failed; the previous one stays.
    #[error("refresh of {view} failed (the previous snapshot is kept): {source}")]
    Failed {
        /// The view.
        view: String,
        /// The cause.
        source: DataFusionError,
    },
}

/// Refreshes snapshots and serves them as tables.
pub struct Materializer {
    ctx: SessionContext,
    warehouse: Warehouse,
    retention: usize,
    /// Whether incremental refreshes are allowed (the views are the built-in ones).
    incremental: bool,
    views: Vec<ViewSnapshots>,
    stats: RefreshStats,
}

impl std::fmt::Debug for Materializer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Materializer")
            .field("warehouse", &self.warehouse)
            .field("retention", &self.retention)
            .field("incremental", &self.incremental)
            .field("views", &self.views)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct ViewSnapshots {
    view: &'static str,
    /// One refresh of a view at a time.
    lock: tokio::sync::Mutex<()>,
    table: Arc<SnapshotTable>,
    /// The manifest's snapshots, newest first.
    kept: RwLock<Vec<Snapshot>>,
}

impl Materializer {
    /// Loads each view's manifest and registers `<view>_snapshot` and
    /// `index_snapshots` in `ctx` (the views must already exist).
    /// `incremental`: whether the views are the built-in ones, whose keys
    /// incremental refreshes rely on.
    pub async fn open(
        ctx: &SessionContext,
        warehouse: &Warehouse,
        retention: usize,
        incremental: bool,
    ) -> Result<Arc<Self>> {
        let mut views = Vec::new();
        for view in VIEWS {
            let schema = Arc::new(ctx.table(view).await?.schema().as_arrow().clone());
            let manifest = read_manifest(warehouse, view).await?;
            let table = Arc::new(SnapshotTable::new(Arc::clone(&schema)));
            if let Some(newest) = manifest.snapshots.first() {
                table.switch(snapshot_table(warehouse, newest, schema)?);
                info!(view, run_id = %newest.run_id, rows = newest.rows, "snapshot loaded");
            }
            ctx.register_table(
                format!("{view}_snapshot"),
                Arc::clone(&table) as Arc<dyn TableProvider>,
            )?;
            views.push(ViewSnapshots {
                view,
                lock: tokio::sync::Mutex::new(()),
                table,
                kept: RwLock::new(manifest.snapshots),
            });
        }
        let materializer = Arc::new(Self {
            ctx: ctx.clone(),
            warehouse: warehouse.clone(),
            retention: retention.max(1),
            incremental,
            views,
            stats: RefreshStats::default(),
        });
        ctx.register_table(
            "index_snapshots",
            Arc::new(snapshots_table(Arc::downgrade(&materializer))),
        )?;
        Ok(materializer)
    }

    /// Refresh counters.
    pub fn stats(&self) -> &RefreshStats {
        &self.stats
    }

    /// Every kept snapshot, newest first per view.
    pub fn snapshots(&self) -> Vec<Snapshot> {
        self.views
            .iter()
            .flat_map(|v| read_lock(&v.kept).clone())
            .collect()
    }

    /// Computes `view` now (incrementally when it can) and makes the result
    /// its current snapshot.
    pub async fn refresh(&self, view: &str) -> Result<Snapshot, RefreshError> {
        self.refresh_with(view, RefreshMode::Auto).await
    }

    /// [`Self::refresh`], choosing whether a full refresh is forced.
    pub async fn refresh_with(
        &self,
        view: &str,
        mode: RefreshMode,
    ) -> Result<Snapshot, RefreshError> {
        let slot = self
            .views
            .iter()
            .find(|v| v.view.eq_ignore_ascii_case(view))
            .ok_or_else(|| RefreshError::UnknownView(view.to_owned()))?;
        let _running = slot.lock.lock().await;
        let started = Instant::now();
        let result = self.write_snapshot(slot, mode, started).await;
        match &result {
            Ok(s) => {
                self.stats.runs.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .total_ms
                    .fetch_add(s.duration_ms, Ordering::Relaxed);
                info!(view = slot.view, run_id = %s.run_id, kind = s.kind(), rows = s.rows, ms = s.duration_ms, "snapshot refreshed");
            }
            Err(e) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                warn!(view = slot.view, error = %e, "snapshot refresh failed");
            }
        }
        result.map_err(|source| RefreshError::Failed {
            view: slot.view.to_owned(),
            source,
        })
    }

    /// Refreshes every view, in dependency order.
    pub async fn refresh_all(&self) -> Vec<Result<Snapshot, RefreshError>> {
        let mut results = Vec::new();
        for view in VIEWS {
            results.push(self.refresh(view).await);
        }
        results
    }

    /// Refreshes every view each `every` until `stop` turns true.
    pub async fn run_schedule(
        self: Arc<Self>,
        every: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    // Failures are logged and counted by refresh itself.
                    let _ = self.refresh_all().await;
                }
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        return;
                    }
                }
            }
        }
    }

    async fn write_snapshot(
        &self,
        slot: &ViewSnapshots,
        mode: RefreshMode,
        started: Instant,
    ) -> Result<Snapshot> {
        let now = chrono::Utc::now();
        let run_id = format!(
            "{}-{}",
            now.format("%Y%m%dT%H%M%S%3fZ"),
            crate::flight::random_hex(4)
        );
        let location = format!("output/{}/snapshot-{run_id}/", slot.view);
        // Read before the view is computed: events after these offsets may or
        // may not be in this snapshot, so the next incremental refresh redoes them.
        let inputs = incremental::current(&self.ctx, &self.warehouse, slot.view).await?;
        let previous = read_lock(&slot.kept).into_iter().next();
        let delta = match mode {
            RefreshMode::Full => None,
            RefreshMode::Auto => self.delta(slot.view, previous, &inputs).await?,
        };
        let mut frame = self.ctx.table(slot.view).await?;
        let mut base = Vec::new();
        if let Some((key, ids, previous)) = delta {
            let ids: Vec<Expr> = ids.into_iter().map(lit).collect();
            frame = frame.filter(col(key).in_list(ids, false))?;
            base = previous.layers();
        }
        let rows = self.write_parquet(frame, &location).await?;
        let files = self.list_files(&location).await?;
        let snapshot = Snapshot {
            view: slot.view.to_owned(),
            run_id,
            created_at_ms: now.timestamp_millis(),
            rows,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            location,
            files,
            base,
            inputs: Some(inputs),
        };
        let mut kept = read_lock(&slot.kept).clone();
        kept.insert(0, snapshot.clone());
        kept.truncate(self.retention);
        write_manifest(
            &self.warehouse,
            slot.view,
            &Manifest {
                snapshots: kept.clone(),
            },
        )
        .await?;
        // The manifest names the new snapshot: from here on it is the current one.
        slot.table.switch(snapshot_table(
            &self.warehouse,
            &snapshot,
            Arc::clone(&slot.table.schema),
        )?);
        *slot.kept.write().unwrap_or_else(|e| e.into_inner()) = kept.clone();
        if let Err(e) = self.prune(slot.view, &kept).await {
            warn!(view = slot.view, error = %e, "cannot remove old snapshots");
        }
        Ok(snapshot)
    }

    /// Whether this refresh of `view` can be incremental: its key column, the
    /// ids to recompute, and the snapshot it builds on.
    async fn delta(
        &self,
        view: &str,
        previous: Option<Snapshot>,
        now: &Inputs,
    ) -> Result<Option<(&'static str, Vec<String>, Snapshot)>> {
        let (true, Some([key]), Some(previous)) =
            (self.incremental, incremental::key_of(view), previous)
        else {
            return Ok(None);
        };
        let Some(before) = &previous.inputs else {
            return Ok(None);
        };
        if !incremental::can_follow(before, now) || previous.base.len() + 1 >= MAX_LAYERS {
            return Ok(None);
        }
        let ids = incremental::changed_ids(&self.ctx, &before.next_offsets).await?;
        let layers = previous.layers();
        let base_rows = layers.first().map_or(0, |l| l.rows);
        let delta_rows = layers.iter().skip(1).map(|l| l.rows).sum::<u64>() + ids.len() as u64;
        if delta_rows as f64 > MAX_DELTA_SHARE * base_rows as f64 {
            return Ok(None);
        }
        Ok(Some((key, ids, previous)))
    }

    /// Writes `frame` as Parquet under `location`; the rows written.
    async fn write_parquet(
        &self,
        frame: datafusion::dataframe::DataFrame,
        location: &str,
    ) -> Result<u64> {
        let mut parquet = TableParquetOptions::default();
        parquet.global.compression = Some(SNAPSHOT_COMPRESSION.into());
        let written = frame
            .write_parquet(
                self.warehouse.url(location)?.as_str(),
                DataFrameWriteOptions::new(),
                Some(parquet),
            )
            .await?;
        Ok(written
            .first()
            .and_then(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::UInt64Array>()
            })
            .map_or(0, |c| c.value(0)))
    }

    /// The Parquet files under `location`, by name.
    async fn list_files(&self, location: &str) -> Result<Vec<String>> {
        let prefix = self.warehouse.path(location)?;
        let objects: Vec<_> = self
            .warehouse
            .store()
            .list(Some(&prefix))
            .try_collect()
            .await?;
        let mut files: Vec<String> = objects
            .iter()
            .filter_map(|o| o.location.filename().map(str::to_owned))
            .filter(|name| name.ends_with(".parquet"))
            .collect();
        files.sort();
        Ok(files)
    }

    /// Deletes the folders of snapshots no longer kept, and any folder a
    /// failed or killed refresh left behind.
    async fn prune(&self, view: &str, kept: &[Snapshot]) -> Result<()> {
        let store = self.warehouse.store();
        let root = self.warehouse.path(&format!("output/{view}/"))?;
        let listing = store.list_with_delimiter(Some(&root)).await?;
        for dir in listing.common_prefixes {
            let Some(name) = dir.filename() else { continue };
            let is_kept = kept
                .iter()
                .flat_map(Snapshot::layers)
                .any(|layer| layer.location.trim_end_matches('/').ends_with(name));
            if !name.starts_with("snapshot-") || is_kept {
                continue;
            }
            let objects: Vec<_> = store.list(Some(&dir)).try_collect().await?;
            for object in objects {
                store.delete(&object.location).await?;
            }
            // A local store leaves the emptied folder behind.
            if let Some(folder) = self.warehouse.local_path(&format!("output/{view}/{name}/")) {
                let _ = std::fs::remove_dir_all(folder);
            }
            info!(view, folder = name, "snapshot folder removed");
        }
        Ok(())
    }
}

fn read_lock<T: Clone>(lock: &RwLock<T>) -> T {
    lock.read().unwrap_or_else(|e| e.into_inner()).clone()
}

fn manifest_location(view: &str) -> String {
    format!("output/{view}/_manifest.json")
}

async fn read_manifest(warehouse: &Warehouse, view: &str) -> Result<Manifest> {
    let path = warehouse.path(&manifest_location(view))?;
    crate::warehouse::read_json_or_default(
        warehouse.store().as_ref(),
        &path,
        "invalid snapshot manifest",
    )
    .await
}

/// Replaces the manifest in one put (atomic on local files and S3).
async fn write_manifest(warehouse: &Warehouse, view: &str, manifest: &Manifest) -> Result<()> {
    let path = warehouse.path(&manifest_location(view))?;
    let json =
        serde_json::to_vec_pretty(manifest).map_err(|e| DataFusionError::External(Box::new(e)))?;
    warehouse.store().put(&path, PutPayload::from(json)).await?;
    Ok(())
}

/// A table over exactly the files a snapshot's layers list.
fn snapshot_table(
    warehouse: &Warehouse,
    snapshot: &Snapshot,
    schema: SchemaRef,
) -> Result<Arc<dyn TableProvider>> {
    let key = incremental::key_of(&snapshot.view).unwrap_or(&[]);
    layered_table(warehouse, &snapshot.layers(), key, schema)
}

/// `<view>_snapshot`: the view's newest snapshot (empty before the first refresh).
#[derive(Debug)]
pub struct SnapshotTable {
    schema: SchemaRef,
    current: RwLock<Arc<dyn TableProvider>>,
}

impl SnapshotTable {
    fn new(schema: SchemaRef) -> Self {
        Self {
            current: RwLock::new(Arc::new(EmptyTable::new(Arc::clone(&schema)))),
            schema,
        }
    }

    fn switch(&self, table: Arc<dyn TableProvider>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = table;
    }

    fn current(&self) -> Arc<dyn TableProvider> {
        read_lock(&self.current)
    }
}

#[async_trait]
impl TableProvider for SnapshotTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.current().supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.current().scan(state, projection, filters, limit).await
    }
}

static SNAPSHOTS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("view", DataType::Utf8, false),
        Field::new("run_id", DataType::Utf8, false),
        Field::new(
            "created_at",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("rows", DataType::Int64, false),
        Field::new("duration_ms", DataType::Int64, false),
        Field::new("location", DataType::Utf8, false),
        Field::new("current", DataType::Boolean, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("layers", DataType::Int64, false),
    ]))
});

/// Rows describing snapshots, in [`SNAPSHOTS_SCHEMA`]; the first of each view is current.
pub fn snapshots_batch(snapshots: &[Snapshot]) -> Result<RecordBatch> {
    let int = |f: &dyn Fn(&Snapshot) -> u64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(
            snapshots
                .iter()
                .map(|s| i64::try_from(f(s)).unwrap_or(i64::MAX)),
        ))
    };
    let current: Vec<bool> = snapshots
        .iter()
        .enumerate()
        .map(|(i, s)| i == 0 || snapshots[i - 1].view != s.view)
        .collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            snapshots.iter().map(|s| s.view.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            snapshots.iter().map(|s| s.run_id.as_str()),
        )),
        Arc::new(
            TimestampMillisecondArray::from_iter_values(snapshots.iter().map(|s| s.created_at_ms))
                .with_timezone("UTC"),
        ),
        int(&|s| s.rows),
        int(&|s| s.duration_ms),
        Arc::new(StringArray::from_iter_values(
            snapshots.iter().map(|s| s.location.as_str()),
        )),
        Arc::new(BooleanArray::from(current)),
        Arc::new(StringArray::from_iter_values(
            snapshots.iter().map(Snapshot::kind),
        )),
        int(&|s| s.base.len() as u64 + 1),
    ];
    Ok(RecordBatch::try_new(
        Arc::clone(&SNAPSHOTS_SCHEMA),
        columns,
    )?)
}

/// `index_snapshots`: every kept snapshot of every view.
fn snapshots_table(materializer: std::sync::Weak<Materializer>) -> SystemTable {
    SystemTable::new(Arc::clone(&SNAPSHOTS_SCHEMA), move || {
        let snapshots = materializer
            .upgrade()
            .map(|m| m.snapshots())
            .unwrap_or_default();
        snapshots_batch(&snapshots)
    })
}

/// Recognises `REFRESH INDEX <view> [FULL]` (case-insensitive, optional `;`):
/// `None` when `sql` is not a REFRESH statement, the view name and mode
/// otherwise, or an error when it is a REFRESH statement of the wrong form or view.
pub fn parse_refresh(sql: &str) -> Option<Result<(&'static str, RefreshMode)>> {
    let text = sql.trim().trim_end_matches(';');
    let mut words = text.split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("REFRESH") {
        return None;
    }
    let rest: Vec<&str> = words.collect();
    let parsed = match rest.as_slice() {
        [index, rest @ ..] if index.eq_ignore_ascii_case("INDEX") => parse_target(rest),
        _ => None,
    };
    Some(parsed.ok_or_else(|| {
        DataFusionError::Plan(format!(
            "expected REFRESH INDEX <view> [FULL], with <view> one of {}",
            VIEWS.join(", ")
        ))
    }))
}

/// `<view> [FULL]`, as in `REFRESH INDEX` and the `RefreshIndex` action's body.
pub fn parse_target(words: &[&str]) -> Option<(&'static str, RefreshMode)> {
    let (name, mode) = match words {
        [name] => (name, RefreshMode::Auto),
        [name, full] if full.eq_ignore_ascii_case("FULL") => (name, RefreshMode::Full),
        _ => return None,
    };
    let name = name.trim_matches('"');
    let view = VIEWS.into_iter().find(|v| v.eq_ignore_ascii_case(name))?;
    Some((view, mode))
}

/// The plan of `REFRESH INDEX <view>`: scanning it runs the refresh and yields
/// one `index_snapshots` row describing the new snapshot.
pub fn refresh_plan(
    materializer: &Arc<Materializer>,
    view: &'static str,
    mode: RefreshMode,
) -> Result<datafusion::logical_expr::LogicalPlan> {
    let table = Arc::new(RefreshTable {
        materializer: Arc::clone(materializer),
        view,
        mode,
    });
    datafusion::logical_expr::LogicalPlanBuilder::scan(
        "refresh_index",
        datafusion::datasource::provider_as_source(table),
        None,
    )?
    .build()
}

/// The rows a refresh wrote, from the batches its plan returned.
pub fn refreshed_rows(batches: &[RecordBatch]) -> i64 {
    batches
        .iter()
        .filter_map(|b| b.column_by_name("rows"))
        .filter_map(|c| c.as_any().downcast_ref::<Int64Array>())
        .flat_map(|c| c.iter().flatten())
        .sum()
}

/// The one-off table behind [`refresh_plan`].
#[derive(Debug)]
struct RefreshTable {
    materializer: Arc<Materializer>,
    view: &'static str,
    mode: RefreshMode,
}

#[async_trait]
impl TableProvider for RefreshTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&SNAPSHOTS_SCHEMA)
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let snapshot = self
            .materializer
            .refresh_with(self.view, self.mode)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e.into_status())))?;
        let batch = snapshots_batch(&[snapshot])?;
        crate::ingest::live::memory_scan(vec![batch], self.schema(), projection)
    }
}

impl RefreshError {
    /// The gRPC status a client sees.
    pub fn into_status(self) -> tonic::Status {
        match &self {
            Self::UnknownView(_) => tonic::Status::invalid_argument(self.to_string()),
            Self::Failed { source, .. } => {
                let code = crate::flight::error::status_from_datafusion(source).code();
                tonic::Status::new(code, self.to_string())
            }
        }
    }
}
