//! In-memory, append-only tables fed by ingest (`transactions`,
//! `transactions_rejects`): a query sees every batch appended before it was planned.
//! Each batch's Kafka offset range per partition is kept beside it, so how far
//! the table reaches and which batches hold events after a given offset are
//! answered without reading the rows (what an incremental index refresh asks).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::datatypes::{Int32Type, Int64Type};
use datafusion::catalog::Session;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

/// How many partitions a scan of a live table is split into.
const SCAN_PARTITIONS: usize = 2;

/// An append-only table held in memory. It also remembers which of its
/// batches are not persisted yet (see [`super::segments`]); batches read back
/// from segments may arrive between them (a group member following others).
#[derive(Debug)]
pub struct LiveTable {
    schema: SchemaRef,
    batches: RwLock<Batches>,
}

/// Per Kafka partition, the highest offset of a batch's events.
type Span = Vec<(i32, i64)>;

#[derive(Debug, Default)]
struct Batches {
    all: Vec<RecordBatch>,
    /// Beside each of `all`, its [`Span`] (empty without Kafka columns).
    spans: Vec<Span>,
    /// Positions in `all` of the batches not persisted yet, oldest first.
    unflushed: Vec<usize>,
}

impl LiveTable {
    /// An empty table with `schema`.
    pub fn new(schema: SchemaRef) -> Self {
        Self {
            schema,
            batches: RwLock::default(),
        }
    }

    /// Appends a batch (ignored when empty); visible to the next query.
    pub fn append(&self, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            let span = span(&batch);
            let mut b = self.write();
            let at = b.all.len();
            b.all.push(batch);
            b.spans.push(span);
            b.unflushed.push(at);
        }
    }

    /// Appends batches read back from persisted segments (already flushed).
    pub fn append_flushed(&self, batches: Vec<RecordBatch>) {
        let batches: Vec<(RecordBatch, Span)> = batches
            .into_iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| {
                let span = span(&b);
                (b, span)
            })
            .collect();
        let mut b = self.write();
        for (batch, span) in batches {
            b.all.push(batch);
            b.spans.push(span);
        }
    }

    /// The batches not persisted yet, and a mark to pass to [`Self::mark_flushed`].
    pub fn unflushed(&self) -> (Vec<RecordBatch>, usize) {
        let b = self.read();
        let batches = b.unflushed.iter().map(|&i| b.all[i].clone()).collect();
        (batches, b.unflushed.len())
    }

    /// Records that the batches [`Self::unflushed`] returned with `mark` are persisted.
    pub fn mark_flushed(&self, mark: usize) {
        let mut b = self.write();
        let done = mark.min(b.unflushed.len());
        b.unflushed.drain(..done);
    }

    /// Rows not persisted yet.
    pub fn unflushed_rows(&self) -> usize {
        let b = self.read();
        b.unflushed.iter().map(|&i| b.all[i].num_rows()).sum()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Batches> {
        self.batches.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Batches> {
        self.batches.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Rows held.
    pub fn num_rows(&self) -> usize {
        self.snapshot().iter().map(RecordBatch::num_rows).sum()
    }

    /// The batches appended so far.
    pub fn snapshot(&self) -> Vec<RecordBatch> {
        self.read().all.clone()
    }

    /// Per Kafka partition, one past the greatest offset held.
    pub fn next_offsets(&self) -> BTreeMap<i32, i64> {
        let mut next = BTreeMap::new();
        for &(partition, high) in self.read().spans.iter().flatten() {
            let at = next.entry(partition).or_insert(high + 1);
            *at = (*at).max(high + 1);
        }
        next
    }

    /// The batches holding an event at or after `since`'s offset of its
    /// partition, or of a partition `since` does not name.
    pub fn batches_since(&self, since: &BTreeMap<i32, i64>) -> Vec<RecordBatch> {
        let b = self.read();
        b.all
            .iter()
            .zip(&b.spans)
            .filter(|(_, span)| {
                span.iter()
                    .any(|(p, high)| since.get(p).is_none_or(|from| high >= from))
            })
            .map(|(batch, _)| batch.clone())
            .collect()
    }
}

/// A batch's [`Span`] (from the rows that have both Kafka columns).
fn span(batch: &RecordBatch) -> Span {
    use super::decode::{OFFSET_COLUMN, PARTITION_COLUMN};
    let (Some(partitions), Some(offsets)) = (
        batch.column_by_name(PARTITION_COLUMN),
        batch.column_by_name(OFFSET_COLUMN),
    ) else {
        return Span::new();
    };
    let (Some(partitions), Some(offsets)) = (
        partitions.as_primitive_opt::<Int32Type>(),
        offsets.as_primitive_opt::<Int64Type>(),
    ) else {
        return Span::new();
    };
    let mut highest: BTreeMap<i32, i64> = BTreeMap::new();
    for row in 0..batch.num_rows() {
        if partitions.is_valid(row) && offsets.is_valid(row) {
            let offset = offsets.value(row);
            let high = highest.entry(partitions.value(row)).or_insert(offset);
            *high = (*high).max(offset);
        }
    }
    highest.into_iter().collect()
}

#[async_trait]
impl TableProvider for LiveTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        memory_scan(self.snapshot(), self.schema(), projection)
    }
}

/// A read-only system table (`ingest_status`, `index_snapshots`): its one
/// batch is computed afresh at every scan.
pub struct SystemTable {
    schema: SchemaRef,
    batch: Box<dyn Fn() -> Result<RecordBatch> + Send + Sync>,
}

impl SystemTable {
    /// A table of `schema` whose rows `batch` computes.
    pub fn new(
        schema: SchemaRef,
        batch: impl Fn() -> Result<RecordBatch> + Send + Sync + 'static,
    ) -> Self {
        Self {
            schema,
            batch: Box::new(batch),
        }
    }
}

impl std::fmt::Debug for SystemTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemTable")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl TableProvider for SystemTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        memory_scan(vec![(self.batch)()?], self.schema(), projection)
    }
}

/// A scan of in-memory `batches`, dealt round-robin into [`SCAN_PARTITIONS`]
/// partitions so both cores work.
pub fn memory_scan(
    batches: Vec<RecordBatch>,
    schema: SchemaRef,
    projection: Option<&Vec<usize>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let mut partitions = vec![Vec::new(); SCAN_PARTITIONS];
    for (i, batch) in batches.into_iter().enumerate() {
        partitions[i % SCAN_PARTITIONS].push(batch);
    }
    Ok(MemorySourceConfig::try_new_exec(
        &partitions,
        schema,
        projection.cloned(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn batch(schema: &SchemaRef, values: &[i64]) -> RecordBatch {
        let column = Arc::new(Int64Array::from(values.to_vec()));
        RecordBatch::try_new(Arc::clone(schema), vec![column]).unwrap()
    }

    #[test]
    fn batches_read_back_between_unflushed_ones_stay_flushed() {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let table = LiveTable::new(Arc::clone(&schema));
        table.append(batch(&schema, &[1, 2]));
        table.append_flushed(vec![batch(&schema, &[10, 11, 12])]);
        let (unflushed, mark) = table.unflushed();
        assert_eq!(unflushed, vec![batch(&schema, &[1, 2])]);
        assert_eq!(table.unflushed_rows(), 2);
        // Consumed while the flush was being written.
        table.append(batch(&schema, &[3]));
        table.mark_flushed(mark);
        assert_eq!(table.unflushed().0, vec![batch(&schema, &[3])]);
        assert_eq!(table.num_rows(), 6);
        // No Kafka columns: no offsets.
        assert!(table.next_offsets().is_empty());
    }

    fn events(schema: &SchemaRef, rows: &[(i32, i64)]) -> RecordBatch {
        let partitions = Int32Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>());
        let offsets = Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>());
        RecordBatch::try_new(
            Arc::clone(schema),
            vec![Arc::new(partitions), Arc::new(offsets)],
        )
        .unwrap()
    }

    #[test]
    fn offsets_per_partition_find_the_batches_after_them() {
        use crate::ingest::decode::{OFFSET_COLUMN, PARTITION_COLUMN};
        let schema = Arc::new(Schema::new(vec![
            Field::new(PARTITION_COLUMN, DataType::Int32, false),
            Field::new(OFFSET_COLUMN, DataType::Int64, false),
        ]));
        let table = LiveTable::new(Arc::clone(&schema));
        let first = events(&schema, &[(0, 0), (1, 0), (0, 1)]);
        let second = events(&schema, &[(0, 2), (1, 1)]);
        let third = events(&schema, &[(2, 5)]);
        table.append_flushed(vec![first.clone()]);
        table.append(second.clone());
        table.append(third.clone());
        assert_eq!(
            table.next_offsets(),
            BTreeMap::from([(0, 3), (1, 2), (2, 6)])
        );
        let since =
            |offsets: &[(i32, i64)]| table.batches_since(&offsets.iter().copied().collect());
        assert_eq!(since(&[(0, 3), (1, 2), (2, 6)]), Vec::<RecordBatch>::new());
        assert_eq!(since(&[(0, 3), (1, 1), (2, 6)]), vec![second.clone()]);
        // A partition the offsets do not name: its batches are new.
        assert_eq!(since(&[(0, 3), (1, 2)]), vec![third.clone()]);
        assert_eq!(since(&[]), vec![first, second, third]);
    }
}
