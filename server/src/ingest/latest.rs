//! `transactions_latest` as a maintained table instead of a window query: one
//! row per `transaction_id`, its latest event (greatest `event_time`, ties by
//! the greater partition, then offset). An index from transaction id to the
//! position of its latest event is brought up to date with the batches
//! appended since the last scan (so each event is looked at once), and a scan
//! returns every batch filtered by its "is latest" mask. This replaces a sort
//! of every event per query — the largest cost of the index views.
//!
//! A scan filtered on `transaction_id = 'x'`, `transaction_id IN (…)` or a set
//! of ids ([`crate::id_set`], what an incremental index refresh asks for)
//! looks the ids up in the index and returns just their rows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, AsArray, BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::compute::interleave_record_batch;
use datafusion::arrow::datatypes::{SchemaRef, TimestampMicrosecondType};
use datafusion::catalog::Session;
use datafusion::common::{Constraint, Constraints};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

use super::live::{LiveTable, memory_scan};
use crate::id_set::wanted_ids;

/// Where an event is and how it ranks: (event_time, partition, offset).
#[derive(Debug, Clone, Copy)]
struct Position {
    batch: u32,
    row: u32,
    rank: (i64, i32, i64),
}

#[derive(Debug, Default)]
struct Index {
    latest: HashMap<Box<str>, Position>,
    /// Per batch of the source: which rows are the latest of their transaction.
    masks: Vec<Vec<bool>>,
    /// Per batch: the filtered batch, until its mask changes.
    filtered: Vec<Option<RecordBatch>>,
}

/// The `transactions_latest` table over the live `transactions` table.
#[derive(Debug)]
pub struct LatestTable {
    source: Arc<LiveTable>,
    index: Mutex<Index>,
    /// `transaction_id` is the primary key (what [`crate::keyed_join`] needs).
    key: Constraints,
}

impl LatestTable {
    /// The latest events of `source`.
    pub fn new(source: Arc<LiveTable>) -> Self {
        let key = source
            .schema()
            .index_of("transaction_id")
            .map(|i| Constraints::new_unverified(vec![Constraint::PrimaryKey(vec![i])]))
            .unwrap_or_default();
        Self {
            source,
            index: Mutex::default(),
            key,
        }
    }

    /// The source's batches and the index, brought up to date with them.
    fn current(&self) -> Result<(Vec<RecordBatch>, std::sync::MutexGuard<'_, Index>)> {
        let all = self.source.snapshot();
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        for (i, batch) in all.iter().enumerate().skip(index.masks.len()) {
            index.add(i, batch)?;
        }
        Ok((all, index))
    }

    /// The latest events of the transactions `ids` (each at most once), as one batch.
    pub fn lookup(&self, ids: &[&str]) -> Result<RecordBatch> {
        let (all, index) = self.current()?;
        let mut positions: Vec<(usize, usize)> = ids
            .iter()
            .filter_map(|id| index.latest.get(*id))
            .map(|p| (p.batch as usize, p.row as usize))
            .collect();
        drop(index);
        positions.sort_unstable();
        positions.dedup();
        let batches: Vec<&RecordBatch> = all.iter().collect();
        if positions.is_empty() {
            return Ok(RecordBatch::new_empty(self.schema()));
        }
        Ok(interleave_record_batch(&batches, &positions)?)
    }

    /// The latest event of every transaction, as filtered batches.
    pub fn batches(&self) -> Result<Vec<RecordBatch>> {
        let (all, mut index) = self.current()?;
        let mut out = Vec::with_capacity(all.len());
        for (i, batch) in all.iter().enumerate() {
            if index.filtered[i].is_none() {
                let mask = BooleanArray::from(index.masks[i].clone());
                index.filtered[i] = Some(filter_record_batch(batch, &mask)?);
            }
            if let Some(filtered) = index.filtered[i].as_ref().filter(|f| f.num_rows() > 0) {
                out.push(filtered.clone());
            }
        }
        Ok(out)
    }
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| DataFusionError::Internal(format!("transactions batch without {name}")))
}

impl Index {
    /// Ranks the events of batch `i` against the latest ones seen so far.
    fn add(&mut self, i: usize, batch: &RecordBatch) -> Result<()> {
        let ids = column::<StringArray>(batch, "transaction_id")?;
        let times = batch
            .column_by_name("event_time")
            .ok_or_else(|| DataFusionError::Internal("no event_time".into()))?
            .as_primitive::<TimestampMicrosecondType>();
        let partitions = column::<Int32Array>(batch, "kafka_partition")?;
        let offsets = column::<Int64Array>(batch, "kafka_offset")?;
        let batch_no = u32::try_from(i).map_err(|e| DataFusionError::External(Box::new(e)))?;
        self.masks.push(vec![false; batch.num_rows()]);
        self.filtered.push(None);
        for row in 0..batch.num_rows() {
            if ids.is_null(row) {
                continue;
            }
            let position = Position {
                batch: batch_no,
                row: u32::try_from(row).map_err(|e| DataFusionError::External(Box::new(e)))?,
                rank: (times.value(row), partitions.value(row), offsets.value(row)),
            };
            let id = ids.value(row);
            let previous = match self.latest.get_mut(id) {
                Some(current) if current.rank >= position.rank => continue,
                Some(current) => Some(std::mem::replace(current, position)),
                None => {
                    self.latest.insert(id.into(), position);
                    None
                }
            };
            if let Some(old) = previous {
                self.masks[old.batch as usize][old.row as usize] = false;
                self.filtered[old.batch as usize] = None;
            }
            self.masks[i][row] = true;
        }
        Ok(())
    }
}

#[async_trait]
impl TableProvider for LatestTable {
    fn schema(&self) -> SchemaRef {
        self.source.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn constraints(&self) -> Option<&Constraints> {
        Some(&self.key)
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Inexact: the rows are looked up, and the filter still runs above.
        Ok(filters
            .iter()
            .map(|f| match wanted_ids(f) {
                Some(_) => TableProviderFilterPushDown::Inexact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // Several id filters are ANDed: any one of them bounds the rows.
        match filters.iter().find_map(wanted_ids) {
            Some(ids) => memory_scan(vec![self.lookup(&ids)?], self.schema(), projection),
            None => memory_scan(self.batches()?, self.schema(), projection),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::decode::TRANSACTIONS_SCHEMA;
    use datafusion::arrow::array::{ArrayRef, Float64Array, TimestampMicrosecondArray};

    /// (transaction_id, status, event_time, partition, offset)
    type Event<'a> = (&'a str, &'a str, i64, i32, i64);

    fn events(rows: &[Event<'_>]) -> RecordBatch {
        let s = |f: &dyn Fn(&Event<'_>) -> String| -> ArrayRef {
            Arc::new(rows.iter().map(|r| Some(f(r))).collect::<StringArray>())
        };
        let times = || -> ArrayRef {
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.2))
                    .with_timezone("UTC"),
            )
        };
        RecordBatch::try_new(
            Arc::clone(&TRANSACTIONS_SCHEMA),
            vec![
                s(&|r| r.0.to_owned()),
                s(&|_| "M".to_owned()),
                s(&|_| "U".to_owned()),
                Arc::new(Float64Array::from(vec![1.0; rows.len()])),
                s(&|_| "USD".to_owned()),
                s(&|r| r.1.to_owned()),
                times(),
                times(),
                Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.3))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.4))),
            ],
        )
        .unwrap()
    }

    fn latest(table: &LatestTable) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for b in table.batches().unwrap() {
            let ids = b.column(0).as_string::<i32>();
            let status = b.column(5).as_string::<i32>();
            for r in 0..b.num_rows() {
                out.push((ids.value(r).to_owned(), status.value(r).to_owned()));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn latest_event_wins_ties_by_partition_then_offset() {
        let source = Arc::new(LiveTable::new(Arc::clone(&TRANSACTIONS_SCHEMA)));
        let table = LatestTable::new(Arc::clone(&source));
        source.append(events(&[
            ("T1", "PENDING", 10, 0, 0),
            ("T2", "PENDING", 10, 0, 1),
            ("T1", "APPROVED", 20, 0, 2),
        ]));
        assert_eq!(
            latest(&table),
            [
                ("T1".into(), "APPROVED".into()),
                ("T2".into(), "PENDING".into())
            ]
        );
        // Later batches: an older event loses, equal times go to the greater
        // partition, then the greater offset.
        source.append(events(&[
            ("T1", "LATE-BUT-OLD", 15, 1, 0),
            ("T2", "P1", 10, 1, 5),
            ("T3", "A", 5, 0, 9),
            ("T3", "B", 5, 0, 8),
        ]));
        assert_eq!(
            latest(&table),
            [
                ("T1".into(), "APPROVED".into()),
                ("T2".into(), "P1".into()),
                ("T3".into(), "A".into())
            ]
        );
        source.append(events(&[("T2", "P1-LATER-OFFSET", 10, 1, 6)]));
        assert_eq!(latest(&table)[1], ("T2".into(), "P1-LATER-OFFSET".into()));
        assert_eq!(latest(&table).len(), 3);
    }

    #[test]
    fn lookup_returns_the_latest_row_of_each_id_once() {
        let source = Arc::new(LiveTable::new(Arc::clone(&TRANSACTIONS_SCHEMA)));
        let table = LatestTable::new(Arc::clone(&source));
        source.append(events(&[
            ("T1", "PENDING", 10, 0, 0),
            ("T2", "A", 10, 0, 1),
        ]));
        source.append(events(&[("T1", "APPROVED", 20, 0, 2)]));
        let found = table.lookup(&["T1", "T9", "T1", "T2"]).unwrap();
        let ids = found.column(0).as_string::<i32>();
        let status = found.column(5).as_string::<i32>();
        let rows: Vec<(&str, &str)> = (0..found.num_rows())
            .map(|r| (ids.value(r), status.value(r)))
            .collect();
        assert_eq!(rows, [("T2", "A"), ("T1", "APPROVED")]);
        assert_eq!(table.lookup(&["nope"]).unwrap().num_rows(), 0);
    }

    /// An incremental refresh's filter reaches the scan, which returns just
    /// the rows of its ids.
    #[tokio::test]
    async fn a_scan_filtered_by_a_set_of_ids_reads_only_them() {
        use crate::id_set::IdSet;
        use datafusion::prelude::SessionContext;
        let source = Arc::new(LiveTable::new(Arc::clone(&TRANSACTIONS_SCHEMA)));
        let table = Arc::new(LatestTable::new(Arc::clone(&source)));
        source.append(events(&[
            ("T1", "PENDING", 10, 0, 0),
            ("T2", "A", 10, 0, 1),
            ("T3", "A", 10, 0, 2),
        ]));
        source.append(events(&[("T1", "APPROVED", 20, 0, 3)]));
        let ctx = SessionContext::new();
        ctx.register_table("latest", Arc::clone(&table) as _)
            .unwrap();
        let set = IdSet::new(["T1", "T3", "T9"].map(String::from));
        let frame = ctx
            .table("latest")
            .await
            .unwrap()
            .filter(set.filter("transaction_id"))
            .unwrap();
        let plan = frame.clone().into_optimized_plan().unwrap();
        let plan = plan.display_indent().to_string();
        assert!(plan.contains("partial_filters=[recon_in_id_set("), "{plan}");
        let rows: usize = frame
            .collect()
            .await
            .unwrap()
            .iter()
            .map(RecordBatch::num_rows)
            .sum();
        assert_eq!(rows, 2);
        let scan = table
            .scan(&ctx.state(), None, &[set.filter("transaction_id")], None)
            .await
            .unwrap();
        let scanned: usize = datafusion::physical_plan::collect(scan, ctx.task_ctx())
            .await
            .unwrap()
            .iter()
            .map(RecordBatch::num_rows)
            .sum();
        assert_eq!(scanned, 2, "the scan reads only T1's latest event and T3's");
    }
}
