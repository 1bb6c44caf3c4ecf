//! An index snapshot folder as a Delta Lake table (delta-rs): `output/<view>/`
//! holds `_delta_log/` and the data files, every refresh is one commit —
//! Overwrite for a full refresh, an Overwrite with a replace-where predicate
//! for an incremental one — and what the next incremental refresh needs is kept
//! in the commit's own metadata (`recon` key of `commitInfo`), so any Delta
//! reader (Spark, DuckDB, polars, pandas) sees exactly the current version and
//! recon needs no manifest of its own.

use std::sync::Arc;

use datafusion::catalog::{Session, TableProvider};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::{Expr, LogicalPlan};
use deltalake::delta_datafusion::planner::DeltaPlanner;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::warehouse::Warehouse;

/// The key of recon's own entry in a commit's `commitInfo`.
pub const COMMIT_KEY: &str = "recon";

/// What a refresh records in its commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefreshRecord {
    /// Unique id of the refresh run.
    pub run_id: String,
    /// `full` or `incremental`.
    pub kind: String,
    /// Rows the refresh wrote.
    pub rows: u64,
    /// How long computing and writing took, before the commit.
    pub duration_ms: u64,
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
    /// recon's record, for the commits of refreshes.
    pub refresh: Option<RefreshRecord>,
}

fn delta_error(e: deltalake::DeltaTableError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// A view's Delta table in the warehouse.
#[derive(Debug, Clone)]
pub struct IndexTable {
    warehouse: Warehouse,
    location: String,
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
        table.load().await.map_err(delta_error)?;
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
    /// `replace` only the rows matching it (which every new row must match).
    pub async fn write(
        &self,
        session: &SessionState,
        plan: LogicalPlan,
        replace: Option<Expr>,
        record: &RefreshRecord,
    ) -> Result<DeltaTable> {
        let table = match self.load().await? {
            Some(table) => table,
            None => self.builder()?.build().map_err(delta_error)?,
        };
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
            .with_commit_properties(
                CommitProperties::default().with_metadata([(COMMIT_KEY.to_owned(), metadata)]),
            );
        if let Some(predicate) = replace {
            write = write.with_replace_where(predicate);
        }
        write.await.map_err(delta_error)
    }

    /// Every version still in the log, newest first.
    pub async fn history(table: &DeltaTable) -> Result<Vec<Version>> {
        let commits: Vec<_> = table
            .history(None)
            .try_collect()
            .await
            .map_err(delta_error)?;
        let newest = table.version().unwrap_or(0);
        Ok(commits
            .into_iter()
            .zip((0..=newest).rev())
            .map(|(c, version)| Version {
                version,
                timestamp_ms: c.timestamp.unwrap_or(0),
                operation: c.operation.clone().unwrap_or_default(),
                refresh: c
                    .info
                    .get(COMMIT_KEY)
                    .and_then(|v| serde_json::from_value(v.clone()).ok()),
            })
            .collect())
    }

    /// Keeps the newest `keep` versions readable: data files no kept version
    /// uses are vacuumed, the log is checkpointed, and commit files older than
    /// the checkpoint go once past the table's log retention.
    pub async fn retain(table: DeltaTable, keep: usize) -> Result<DeltaTable> {
        let newest = table.version().unwrap_or(0);
        let oldest = newest.saturating_sub(keep.max(1) as u64 - 1);
        let kept: Vec<u64> = (oldest..=newest).collect();
        let (table, metrics) = table
            .vacuum()
            .with_keep_versions(&kept)
            .with_retention_period(chrono::Duration::zero())
            .with_enforce_retention_duration(false)
            .await
            .map_err(delta_error)?;
        tracing::debug!(deleted = metrics.files_deleted.len(), "vacuumed");
        deltalake::checkpoints::create_checkpoint(&table, None)
            .await
            .map_err(delta_error)?;
        deltalake::checkpoints::cleanup_metadata(&table, None)
            .await
            .map_err(delta_error)?;
        Ok(table)
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
    use datafusion::prelude::{SessionContext, col, lit};

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
            rows,
            duration_ms: 1,
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
        let ids: Vec<Expr> = (1..=10).map(|i| lit(format!("T-{i}"))).collect();
        let table = index
            .write(
                &ctx.state(),
                changed,
                Some(col("transaction_id").in_list(ids, false)),
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

        let history = IndexTable::history(&table).await.unwrap();
        assert_eq!(history.len(), 2);
        assert_eq!(history[0].version, 1);
        assert_eq!(history[0].refresh.as_ref().unwrap().kind, "incremental");
        assert_eq!(history[1].refresh.as_ref().unwrap().rows, 1000);

        let v0 = index.load_version(0).await.unwrap();
        let provider = IndexTable::provider(&v0, &ctx.state()).await.unwrap();
        assert_eq!(count(&ctx, provider).await, 1000);
    }

    #[tokio::test]
    async fn retention_keeps_the_newest_versions_readable() {
        let (_dir, ctx, index) = local_table("batch_index");
        let mut table = None;
        for i in 1..=5 {
            let plan = ctx
                .sql(&format!("SELECT value AS v FROM generate_series(1, {i})"))
                .await
                .unwrap()
                .into_unoptimized_plan();
            table = Some(
                index
                    .write(&ctx.state(), plan, None, &record("full", i))
                    .await
                    .unwrap(),
            );
        }
        let table = IndexTable::retain(table.unwrap(), 2).await.unwrap();
        // Versions 3 and 4 (2 and 5 rows... 4 and 5 rows) stay readable, 0..=2 do not.
        for version in [3, 4] {
            let t = index.load_version(version).await.unwrap();
            let provider = IndexTable::provider(&t, &ctx.state()).await.unwrap();
            assert_eq!(count(&ctx, provider).await, version as i64 + 1);
        }
        let old = index.load_version(1).await.unwrap();
        let provider = IndexTable::provider(&old, &ctx.state()).await.unwrap();
        let read = ctx.read_table(provider).unwrap().collect().await;
        assert!(read.is_err(), "version 1's files should be gone");
        assert!(table.version().unwrap() >= 4);
    }
}
