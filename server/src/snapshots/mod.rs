//! Materialised snapshots of the index views (DESIGN §4): each view's output
//! folder `output/<view>/` is a Delta Lake table ([`delta`]), and a refresh is
//! one commit to it — an Overwrite for a full refresh, an Overwrite of the
//! changed transactions' rows (replace-where) for an incremental one. Delta's
//! commit protocol means readers, recon's and any other Delta reader's (Spark,
//! DuckDB, polars, pandas), never see a half-written snapshot, and a refresh
//! that fails or is killed leaves the previous version current; its stray files
//! go at the next vacuum.
//!
//! The current version is the table `<view>_snapshot`; every version still in
//! the log is a row of `index_snapshots`, and the kept ones are readable with
//! the table function `index_at` ([`time_travel`]). A refresh runs on demand
//! ([`Materializer::refresh`], reached through `REFRESH INDEX <view> [FULL]`
//! and the `RefreshIndex` Flight action) and on a schedule
//! ([`Materializer::run_schedule`]). After each refresh the newest
//! `snapshot_retention` refreshes stay readable: older data files are vacuumed
//! and the log is checkpointed and cleaned.
//!
//! `batch_index` and `final_index` refresh incrementally when they can
//! ([`incremental`]): only the transactions with new events since the previous
//! refresh are recomputed; when a batch input changed, or the changed
//! transactions pass [`MAX_DELTA_SHARE`] of the table, the refresh is full.
//! A warehouse of the layout before Delta Lake ([`legacy`]) keeps serving its
//! newest old snapshot until the first refresh, which removes the old folders.

pub mod delta;
pub mod history;
pub mod incremental;
pub mod legacy;
pub mod time_travel;
mod writer;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use serde::Serialize;
use tracing::{debug, error, info, warn};

use crate::id_set::IdSet;
use crate::ingest::live::LiveTable;
use crate::warehouse::Warehouse;
use delta::{IndexTable, RefreshRecord};
pub use history::{SNAPSHOTS_SCHEMA, snapshots_batch};
use incremental::Inputs;

/// The views that are materialised, in dependency order.
pub const VIEWS: [&str; 3] = ["batch_index", "final_index", "merchant_daily_kpi"];

/// Share of the table's rows the changed transactions may reach before a
/// refresh is a full one instead of an incremental one.
pub const MAX_DELTA_SHARE: f64 = 0.25;

/// How a refresh may go about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshMode {
    /// Incremental when the view and its inputs allow, full otherwise.
    Auto,
    /// Recompute the whole view.
    Full,
}

/// One version of a view's table: what `index_snapshots` lists and what a
/// refresh returns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// The view it is a copy of.
    pub view: String,
    /// The Delta version; `None` for a snapshot of the layout before Delta Lake.
    pub version: Option<u64>,
    /// The refresh run that wrote it (none for maintenance commits).
    pub run_id: Option<String>,
    /// Commit time, milliseconds since the epoch (UTC).
    pub created_at_ms: i64,
    /// Delta's operation (`WRITE`, `VACUUM END`, …).
    pub operation: String,
    /// `full` or `incremental` for a refresh's commit, `maintenance` for
    /// others (vacuum), `unchanged` for a refresh that found nothing to do
    /// (no commit; the version is the current one), `legacy` for an old-layout snapshot.
    pub kind: String,
    /// Rows the refresh wrote.
    pub rows: u64,
    /// Data files the commit added.
    pub files_added: u64,
    /// Data files the commit removed (an incremental refresh rewrites the
    /// files that held the changed transactions' old rows).
    pub files_removed: u64,
    /// From the refresh's start to its commit.
    pub duration_ms: u64,
    /// The table's folder, relative to the warehouse root (ends in `/`).
    pub location: String,
    /// What it was computed from.
    #[serde(skip)]
    pub inputs: Option<Inputs>,
}

impl Snapshot {
    fn from_version(view: &str, version: delta::Version) -> Self {
        let (kind, run_id, duration_ms, inputs) = match version.refresh {
            Some(r) => (
                r.kind,
                Some(r.run_id),
                u64::try_from(version.timestamp_ms - r.started_at_ms).unwrap_or(0),
                r.inputs.and_then(|v| serde_json::from_value(v).ok()),
            ),
            None => ("maintenance".to_owned(), None, 0, None),
        };
        Self {
            view: view.to_owned(),
            version: Some(version.version),
            run_id,
            created_at_ms: version.timestamp_ms,
            operation: version.operation,
            kind,
            rows: version.rows_added,
            files_added: version.files_added,
            files_removed: version.files_removed,
            duration_ms,
            location: format!("output/{view}/"),
            inputs,
        }
    }

    /// Whether a refresh wrote it (its data is a computed view).
    pub fn is_refresh(&self) -> bool {
        matches!(self.kind.as_str(), "full" | "incremental")
    }
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
    /// The live `transactions` table (how far it reaches, what changed).
    events: Arc<LiveTable>,
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
    index: IndexTable,
    table: Arc<SnapshotTable>,
    state: RwLock<ViewState>,
}

impl ViewSnapshots {
    /// The state, read in place (no copy of the history).
    fn state(&self) -> std::sync::RwLockReadGuard<'_, ViewState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// What is known of a view's table, kept up to date by its refreshes.
#[derive(Debug, Clone, Default)]
struct ViewState {
    /// Every version in the log, newest first (or the old layout's snapshot).
    history: Vec<Snapshot>,
    /// The oldest version still readable.
    oldest_readable: u64,
    /// Rows of the current version.
    rows: u64,
    /// The old layout is still there, to be removed after the first commit.
    legacy: bool,
}

impl ViewState {
    /// The newest refresh's commit.
    fn current(&self) -> Option<&Snapshot> {
        self.history.iter().find(|s| s.is_refresh())
    }
}

/// The oldest of the newest `keep` refreshes in `history` (newest first).
fn oldest_kept(history: &[Snapshot], keep: usize) -> u64 {
    history
        .iter()
        .filter(|s| s.is_refresh())
        .filter_map(|s| s.version)
        .take(keep.max(1))
        .last()
        .unwrap_or(0)
}

impl Materializer {
    /// Loads each view's table and registers `<view>_snapshot`,
    /// `index_snapshots` and `index_at` in `ctx` (the views must already exist).
    /// `incremental`: whether the views are the built-in ones, whose keys
    /// incremental refreshes rely on.
    pub async fn open(
        ctx: &SessionContext,
        events: Arc<LiveTable>,
        warehouse: &Warehouse,
        retention: usize,
        incremental: bool,
    ) -> Result<Arc<Self>> {
        let retention = retention.max(1);
        let mut views = Vec::new();
        for view in VIEWS {
            let schema = Arc::new(ctx.table(view).await?.schema().as_arrow().clone());
            let index = IndexTable::new(warehouse, view);
            let table = Arc::new(SnapshotTable::new(delta::reader_schema(&schema)?));
            let mut state = ViewState::default();
            let loaded = match index.load().await {
                Ok(loaded) => loaded,
                // A corrupt or foreign log: this view's snapshot stays empty
                // and its refreshes fail with the same error; the others run.
                Err(e) => {
                    error!(view, error = %e, "the view's Delta table cannot be read");
                    None
                }
            };
            if let Some(delta) = loaded {
                let provider = IndexTable::provider(&delta, &ctx.state()).await?;
                state.rows = count_rows(ctx, Arc::clone(&provider)).await?;
                table.switch(provider);
                state.history = history(&index, view).await?;
                state.oldest_readable = oldest_kept(&state.history, retention);
                // A refresh killed between its commit and the clean-up.
                state.legacy = legacy::newest(warehouse, view).await?.is_some();
                info!(view, version = ?delta.version(), rows = state.rows, "snapshot loaded");
            } else if let Some(old) = legacy::newest(warehouse, view).await? {
                let key = incremental::key_of(view).unwrap_or(&[]);
                table.switch(old.table(warehouse, key, Arc::clone(&schema))?);
                state.rows = old.rows;
                state.legacy = true;
                state.history = vec![Snapshot {
                    view: view.to_owned(),
                    version: None,
                    run_id: Some(old.run_id.clone()),
                    created_at_ms: 0,
                    operation: "LEGACY".to_owned(),
                    kind: "legacy".to_owned(),
                    rows: old.rows,
                    files_added: 0,
                    files_removed: 0,
                    duration_ms: 0,
                    location: old.location.clone(),
                    inputs: None,
                }];
                info!(view, run_id = %old.run_id, "snapshot of the layout before Delta Lake loaded; the next refresh upgrades it");
            }
            ctx.register_table(
                format!("{view}_snapshot"),
                Arc::clone(&table) as Arc<dyn TableProvider>,
            )?;
            views.push(ViewSnapshots {
                view,
                lock: tokio::sync::Mutex::new(()),
                index,
                table,
                state: RwLock::new(state),
            });
        }
        let materializer = Arc::new(Self {
            ctx: ctx.clone(),
            events,
            warehouse: warehouse.clone(),
            retention,
            incremental,
            views,
            stats: RefreshStats::default(),
        });
        ctx.register_table(
            "index_snapshots",
            Arc::new(history::snapshots_table(Arc::downgrade(&materializer))),
        )?;
        ctx.register_udtf(
            time_travel::FUNCTION,
            Arc::new(time_travel::IndexAt::new(Arc::downgrade(&materializer))),
        );
        Ok(materializer)
    }

    /// Refresh counters.
    pub fn stats(&self) -> &RefreshStats {
        &self.stats
    }

    /// Every version in the log, newest first per view.
    pub fn snapshots(&self) -> Vec<Snapshot> {
        self.views
            .iter()
            .flat_map(|v| read_lock(&v.state).history)
            .collect()
    }

    /// Rows of each view's current snapshot.
    pub fn current_rows(&self) -> Vec<(&'static str, u64)> {
        self.views
            .iter()
            .map(|v| (v.view, v.state().rows))
            .collect()
    }

    /// The oldest version of `view` still readable (0 for an unknown view).
    fn oldest_readable(&self, view: &str) -> u64 {
        self.views
            .iter()
            .find(|v| v.view == view)
            .map_or(0, |v| v.state().oldest_readable)
    }

    /// `(history, oldest readable version, table)` of `view`, for time travel.
    fn versions(&self, view: &str) -> Option<(Vec<Snapshot>, u64, IndexTable, SchemaRef)> {
        let slot = self
            .views
            .iter()
            .find(|v| v.view.eq_ignore_ascii_case(view))?;
        let state = read_lock(&slot.state);
        Some((
            state.history,
            state.oldest_readable,
            slot.index.clone(),
            slot.table.schema(),
        ))
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
                info!(view = slot.view, run_id = ?s.run_id, version = ?s.version, kind = %s.kind, rows = s.rows, ms = s.duration_ms, "snapshot refreshed");
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
        // Read before the view is computed: events after these offsets may or
        // may not be in this snapshot, so the next incremental refresh redoes them.
        let inputs = incremental::current(&self.events, &self.warehouse, slot.view).await?;
        let inputs_ms = elapsed_ms(started);
        let state = read_lock(&slot.state);
        let delta = match (mode, state.legacy) {
            (RefreshMode::Full, _) | (_, true) => None,
            (RefreshMode::Auto, false) => self.delta(slot.view, &state, &inputs).await?,
        };
        let changes_ms = elapsed_ms(started) - inputs_ms;
        let mut frame = self.ctx.table(slot.view).await?;
        let mut replace = None;
        let kind = match delta {
            Some((_, ids)) if ids.is_empty() => {
                // Nothing changed: no commit, the current version stays.
                let mut unchanged = state.current().cloned().unwrap_or_else(|| Snapshot {
                    view: slot.view.to_owned(),
                    version: None,
                    run_id: None,
                    created_at_ms: 0,
                    operation: String::new(),
                    kind: String::new(),
                    rows: 0,
                    files_added: 0,
                    files_removed: 0,
                    duration_ms: 0,
                    location: format!("output/{}/", slot.view),
                    inputs: None,
                });
                unchanged.run_id = Some(run_id);
                unchanged.kind = "unchanged".to_owned();
                unchanged.rows = 0;
                unchanged.files_added = 0;
                unchanged.files_removed = 0;
                unchanged.duration_ms = elapsed_ms(started);
                // Still the time for retention: what a failed or killed
                // refresh left goes now.
                if let Some(table) = slot.index.load().await?
                    && let Err(e) = self.maintain(slot, table, state, false).await
                {
                    warn!(view = slot.view, error = %e, "cannot clean up old snapshots");
                }
                return Ok(unchanged);
            }
            Some((key, ids)) => {
                frame = frame.filter(ids.filter(key))?;
                replace = Some((key, ids));
                "incremental"
            }
            None => "full",
        };
        let record = RefreshRecord {
            run_id,
            kind: kind.to_owned(),
            started_at_ms: now.timestamp_millis(),
            inputs: Some(
                serde_json::to_value(&inputs)
                    .map_err(|e| DataFusionError::External(Box::new(e)))?,
            ),
        };
        let phase = Instant::now();
        let table = slot
            .index
            .write(
                &self.ctx.state(),
                frame.into_unoptimized_plan(),
                replace.as_ref().map(|(key, ids)| (*key, ids)),
                &record,
            )
            .await?;
        let version = table.version().unwrap_or(0);
        let write_ms = elapsed_ms(phase);
        let phase = Instant::now();
        // Committed: from here on this version is the current one.
        let provider = IndexTable::provider(&table, &self.ctx.state()).await?;
        let rows = count_rows(&self.ctx, Arc::clone(&provider)).await?;
        let count_ms = elapsed_ms(phase);
        slot.table.switch(provider);
        let snapshot = Snapshot::from_version(slot.view, slot.index.version_info(version).await?);
        let mut state = state;
        state.history.retain(|s| s.version.is_some());
        state.history.insert(0, snapshot.clone());
        state.rows = rows;
        state.oldest_readable = oldest_kept(&state.history, self.retention);
        *slot.state.write().unwrap_or_else(|e| e.into_inner()) = state.clone();
        let phase = Instant::now();
        if let Err(e) = self.maintain(slot, table, state, true).await {
            warn!(view = slot.view, error = %e, "cannot clean up old snapshots");
        }
        debug!(
            view = slot.view,
            inputs_ms,
            changes_ms,
            write_ms,
            count_ms,
            maintain_ms = elapsed_ms(phase),
            "refresh phases"
        );
        Ok(snapshot)
    }

    /// Retention after each refresh (checkpoint after a commit, vacuum, log
    /// clean-up, interrupted uploads) and the removal of the layout before
    /// Delta Lake.
    async fn maintain(
        &self,
        slot: &ViewSnapshots,
        table: deltalake::DeltaTable,
        state: ViewState,
        committed: bool,
    ) -> Result<()> {
        IndexTable::retain(table, state.oldest_readable, committed).await?;
        let staged = slot.index.remove_staged_uploads()?;
        if staged > 0 {
            info!(
                view = slot.view,
                files = staged,
                "uploads an interrupted refresh left removed"
            );
        }
        let history = history(&slot.index, slot.view).await?;
        let mut current = read_lock(&slot.state);
        current.history = history;
        if state.legacy {
            legacy::remove(&self.warehouse, slot.view).await?;
            current.legacy = false;
        }
        *slot.state.write().unwrap_or_else(|e| e.into_inner()) = current;
        Ok(())
    }

    /// Whether this refresh of `view` can be incremental: its key column and
    /// the ids to recompute.
    async fn delta(
        &self,
        view: &str,
        state: &ViewState,
        now: &Inputs,
    ) -> Result<Option<(&'static str, IdSet)>> {
        let (true, Some([key]), Some(previous)) =
            (self.incremental, incremental::key_of(view), state.current())
        else {
            return Ok(None);
        };
        let Some(before) = &previous.inputs else {
            return Ok(None);
        };
        if !incremental::can_follow(before, now) {
            return Ok(None);
        }
        let ids = incremental::changed_ids(&self.events, &before.next_offsets)?;
        if ids.len() as f64 > MAX_DELTA_SHARE * state.rows as f64 {
            return Ok(None);
        }
        Ok(Some((key, ids)))
    }
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn read_lock<T: Clone>(lock: &RwLock<T>) -> T {
    lock.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// `view`'s versions, newest first.
async fn history(index: &IndexTable, view: &str) -> Result<Vec<Snapshot>> {
    Ok(index
        .history()
        .await?
        .into_iter()
        .map(|v| Snapshot::from_version(view, v))
        .collect())
}

/// Rows of `provider` (from the table's statistics where it has them).
async fn count_rows(ctx: &SessionContext, provider: Arc<dyn TableProvider>) -> Result<u64> {
    let batches = ctx
        .read_table(provider)?
        .aggregate(
            vec![],
            vec![datafusion::functions_aggregate::count::count_all()],
        )?
        .collect()
        .await?;
    Ok(batches
        .first()
        .and_then(|b| b.column(0).as_any().downcast_ref::<Int64Array>())
        .map_or(0, |c| u64::try_from(c.value(0)).unwrap_or(0)))
}

/// `<view>_snapshot`: the view's current snapshot (empty before the first refresh).
#[derive(Debug)]
pub struct SnapshotTable {
    current: RwLock<Arc<dyn TableProvider>>,
}

impl SnapshotTable {
    fn new(schema: SchemaRef) -> Self {
        Self {
            current: RwLock::new(Arc::new(EmptyTable::new(schema))),
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
    /// The current version's: a full refresh after a change of the view's
    /// SQL may change it.
    fn schema(&self) -> SchemaRef {
        self.current().schema()
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
        let batch = snapshots_batch(&[snapshot], &|_| 0)?;
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
