//! recon's own write of a refresh into a view's Delta table, for every
//! refresh whose schema is the table's (all but the first and the one after a
//! change of the view's SQL, which go through delta-rs's write operation):
//! the data files are written by delta-rs's `DeltaWriter` (Parquet, file
//! statistics, `add` actions), one writer per partition of the plan, in
//! parallel — delta-rs's write operation funnels an unpartitioned table
//! through a single encoder, which left a core idle — and committed with
//! delta-rs's `CommitBuilder` (create-only log entry, no retry on top of
//! another writer's commit).
//!
//! An incremental refresh replaces the changed transactions' rows. The data
//! files that may hold them are found by the files' `transaction_id` range
//! (statistics in the log) and then by reading only that column of those
//! files; only files with a changed transaction are rewritten, without those
//! rows. Rows reach the writers roughly in arrival order, so a file holds a
//! stretch of transactions: new transactions rewrite no file, changes to
//! recent ones rewrite the newest files.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder};
use datafusion::physical_plan::execute_stream_partitioned;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use delta_kernel::table_properties::DataSkippingNumIndexedCols;
use deltalake::DeltaTable;
use deltalake::datafile::writer::{DeltaWriter, WriterConfig};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add};
use deltalake::protocol::{DeltaOperation, SaveMode};
use futures::{StreamExt, TryStreamExt};

use super::delta::{
    COMMIT_KEY, DEFAULT_INDEXED_COLUMNS, IndexTable, RefreshRecord, TARGET_FILE_BYTES, cast_to,
    delta_error, writer_properties,
};
use crate::id_set::IdSet;

/// One refresh's write into `index`.
pub(super) struct Written<'a> {
    pub(super) index: &'a IndexTable,
    pub(super) session: &'a SessionState,
    pub(super) record: &'a RefreshRecord,
}

/// A data file of the current version that holds changed transactions.
struct Hit {
    file: deltalake::kernel::LogicalFileView,
    /// Its rows of changed transactions.
    rows: u64,
}

fn external(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl Written<'_> {
    /// A full refresh: `plan`'s rows replace every file of the current version.
    pub(super) async fn overwrite(
        &self,
        table: DeltaTable,
        plan: LogicalPlan,
        target: &SchemaRef,
    ) -> Result<DeltaTable> {
        let started = Instant::now();
        let snapshot = table.snapshot().map_err(delta_error)?;
        let log_store = table.log_store();
        let adds = self.write_files(&table, cast_to(plan, target)?).await?;
        let removes: Vec<Action> = snapshot
            .snapshot()
            .file_views(log_store.as_ref(), None)
            .map_ok(|file| Action::Remove(file.remove_action(true)))
            .try_collect()
            .await
            .map_err(delta_error)?;
        let rows = rows_of(&adds);
        self.commit(table, adds, removes, rows, None, started).await
    }

    /// An incremental refresh: `plan` holds the new rows of the transactions
    /// `ids` (of column `key`), which replace their rows in the current version.
    pub(super) async fn replace(
        &self,
        table: DeltaTable,
        plan: LogicalPlan,
        target: &SchemaRef,
        key: &str,
        ids: &IdSet,
    ) -> Result<DeltaTable> {
        let started = Instant::now();
        let ctx = SessionContext::new_with_state(self.session.clone());
        let hits = self.files_holding(&ctx, &table, key, ids).await?;
        let files_ms = started.elapsed().as_millis();
        let new_rows = LogicalPlanBuilder::from(cast_to(plan, target)?);
        let plan = if hits.is_empty() {
            new_rows.build()?
        } else {
            // The rows the rewritten files keep, next to the new rows.
            let urls = hits
                .iter()
                .map(|hit| self.file_url(&hit.file.path()))
                .collect::<Result<Vec<_>>>()?;
            let kept = ctx
                .read_parquet(urls, ParquetReadOptions::default())
                .await?
                .filter(ids.filter(key).is_not_true())?
                .into_unoptimized_plan();
            new_rows.union(cast_to(kept, target)?)?.build()?
        };
        let adds = self.write_files(&table, plan).await?;
        tracing::debug!(
            files_ms,
            compute_and_write_ms = started.elapsed().as_millis() - files_ms,
            rewritten = hits.len(),
            "incremental write"
        );
        let kept: i64 = hits
            .iter()
            .map(|hit| {
                let rows = hit.file.num_records().unwrap_or(0) as u64;
                i64::try_from(rows.saturating_sub(hit.rows)).unwrap_or(0)
            })
            .sum();
        let removes = hits
            .iter()
            .map(|hit| Action::Remove(hit.file.remove_action(true)))
            .collect();
        let predicate = format!("{key} IN (<{} changed transactions>)", ids.len());
        let rows = rows_of(&adds) - kept;
        self.commit(table, adds, removes, rows, Some(predicate), started)
            .await
    }

    /// The files of the current version with rows of `ids`: those whose
    /// `key` range (from the log's statistics) holds one of them, and of
    /// those the ones whose `key` column does.
    async fn files_holding(
        &self,
        ctx: &SessionContext,
        table: &DeltaTable,
        key: &str,
        ids: &IdSet,
    ) -> Result<Vec<Hit>> {
        let sorted = ids.as_slice();
        let snapshot = table.snapshot().map_err(delta_error)?;
        let log_store = table.log_store();
        let candidates: Vec<_> = snapshot
            .snapshot()
            .file_views(log_store.as_ref(), None)
            .try_filter(|file| {
                let range = file.stats().and_then(|stats| key_range(&stats, key));
                futures::future::ready(match range {
                    // The first id at or above the file's lowest one is at
                    // most its highest one.
                    Some((low, high)) => {
                        let first = sorted.partition_point(|id| id.as_str() < low.as_str());
                        sorted
                            .get(first)
                            .is_some_and(|id| id.as_str() <= high.as_str())
                    }
                    None => true,
                })
            })
            .try_collect()
            .await
            .map_err(delta_error)?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let mut hits = Vec::new();
        for file in candidates {
            let keys = ctx
                .read_parquet(self.file_url(&file.path())?, ParquetReadOptions::default())
                .await?
                .select_columns(&[key])?
                .collect()
                .await?;
            let mut rows = 0;
            for batch in &keys {
                let column = cast(batch.column(0), &DataType::Utf8)?;
                rows += column
                    .as_string::<i32>()
                    .iter()
                    .flatten()
                    .filter(|id| ids.contains(id))
                    .count() as u64;
            }
            if rows > 0 {
                hits.push(Hit { file, rows });
            }
        }
        Ok(hits)
    }

    /// Where a data file of the table is, as a URL of the warehouse's store.
    fn file_url(&self, path: &str) -> Result<String> {
        Ok(self
            .index
            .warehouse
            .url(&format!("{}{path}", self.index.location))?
            .to_string())
    }

    /// Writes `plan`'s rows as data files of `table`, one writer per
    /// partition of the plan, in parallel: their `add` actions.
    async fn write_files(&self, table: &DeltaTable, plan: LogicalPlan) -> Result<Vec<Add>> {
        let physical = self.session.create_physical_plan(&plan).await?;
        let schema = physical.schema();
        let indexed = table
            .snapshot()
            .map_err(delta_error)?
            .snapshot()
            .table_properties()
            .data_skipping_num_indexed_cols
            .unwrap_or(DataSkippingNumIndexedCols::NumColumns(
                DEFAULT_INDEXED_COLUMNS,
            ));
        let config = WriterConfig::new(
            Arc::clone(&schema),
            Vec::new(),
            Some(writer_properties()?),
            std::num::NonZeroU64::new(TARGET_FILE_BYTES),
            None,
            indexed,
            None,
        );
        let store = table.log_store().object_store(None);
        let mut writers = tokio::task::JoinSet::new();
        for mut stream in execute_stream_partitioned(physical, self.session.task_ctx())? {
            let mut writer = DeltaWriter::new(Arc::clone(&store), config.clone());
            let schema = Arc::clone(&schema);
            writers.spawn(async move {
                while let Some(batch) = stream.next().await {
                    // The writer wants the plan's schema exactly (field metadata too).
                    let batch =
                        RecordBatch::try_new(Arc::clone(&schema), batch?.columns().to_vec())?;
                    if let Err(e) = writer.write(&batch).await {
                        let _ = writer.abort().await;
                        return Err(delta_error(e));
                    }
                }
                writer.close().await.map_err(delta_error)
            });
        }
        let mut adds = Vec::new();
        while let Some(written) = writers.join_next().await {
            // A failed writer aborts the others (dropping the set); what they
            // uploaded is in no commit and goes at the next vacuum.
            adds.extend(written.map_err(external)??);
        }
        Ok(adds)
    }

    /// Commits `adds` and `removes` as one Write (Overwrite) of the version
    /// `table` is at, with recon's record and delta-rs's operation metrics.
    async fn commit(
        &self,
        mut table: DeltaTable,
        adds: Vec<Add>,
        removes: Vec<Action>,
        new_rows: i64,
        predicate: Option<String>,
        started: Instant,
    ) -> Result<DeltaTable> {
        let metrics = serde_json::json!({
            "num_added_files": adds.len(),
            "num_removed_files": removes.len(),
            "num_added_rows": new_rows,
            "execution_time_ms": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        });
        let mut actions: Vec<Action> = adds.into_iter().map(Action::Add).collect();
        actions.extend(removes);
        let record = serde_json::to_value(self.record).map_err(external)?;
        let snapshot = table.snapshot().map_err(delta_error)?;
        let commit = CommitBuilder::from(
            CommitProperties::default()
                .with_metadata([
                    (COMMIT_KEY.to_owned(), record),
                    ("operationMetrics".to_owned(), metrics),
                ])
                .with_max_retries(0),
        )
        .with_actions(actions)
        .build(
            Some(snapshot),
            table.log_store(),
            DeltaOperation::Write {
                mode: SaveMode::Overwrite,
                partition_by: None,
                predicate,
            },
        )
        .await
        .map_err(|e| self.index.commit_error(e))?;
        table
            .update_incremental(Some(commit.version()))
            .await
            .map_err(delta_error)?;
        Ok(table)
    }
}

/// Rows in the files of `adds`, from their statistics.
fn rows_of(adds: &[Add]) -> i64 {
    adds.iter()
        .map(|a| a.get_stats().ok().flatten().map_or(0, |s| s.num_records))
        .sum()
}

/// Strings this long or longer may be truncated in a file's statistics.
const STATS_PREFIX_CHARS: usize = 32;

/// A file's lowest and highest `key` from its statistics (JSON of the
/// `add` action), when it has both as strings.
fn key_range(stats: &str, key: &str) -> Option<(String, String)> {
    let stats: serde_json::Value = serde_json::from_str(stats).ok()?;
    let low = stats["minValues"][key].as_str()?.to_owned();
    let high = stats["maxValues"][key].as_str()?.to_owned();
    // A long string's statistics may be cut short: no range then.
    (low.len() < STATS_PREFIX_CHARS && high.len() < STATS_PREFIX_CHARS).then_some((low, high))
}
