//! The `ingest_status` system table: per partition where ingest stands —
//! whether this server consumes it now, checkpointed and consumed offsets, the
//! broker's high watermark, lag, record and reject counts this run, the last
//! flush, and the last broker error.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock, Mutex};

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::error::Result;

/// One partition's figures.
#[derive(Debug, Clone, Default)]
pub struct PartitionStatus {
    /// Whether this server consumes the partition now (in a consumer group,
    /// the others' partitions are only read from their persisted segments).
    pub assigned: bool,
    /// Next offset after the last checkpoint.
    pub checkpoint_offset: Option<i64>,
    /// Next offset after the last record consumed.
    pub consumed_offset: Option<i64>,
    /// The broker's high watermark (next offset to be written).
    pub high_watermark: Option<i64>,
    /// Records consumed since start.
    pub records: i64,
    /// Of which rejected.
    pub rejects: i64,
}

#[derive(Debug, Default)]
struct Inner {
    topic: String,
    partitions: BTreeMap<i32, PartitionStatus>,
    last_flush_micros: Option<i64>,
    last_error: Option<String>,
    flushes: i64,
}

/// Ingest counters over all partitions.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    /// Records consumed.
    pub records: i64,
    /// Of which rejected.
    pub rejects: i64,
    /// Flushes committed.
    pub flushes: i64,
}

/// Shared between the consumer (writer) and the table (reader).
#[derive(Debug, Clone, Default)]
pub struct IngestStatus {
    inner: Arc<Mutex<Inner>>,
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let ts = super::decode::timestamp();
    Arc::new(Schema::new(vec![
        Field::new("topic", DataType::Utf8, false),
        // NULL in the one row shown while no partition is known (e.g. the broker is unreachable).
        Field::new("partition", DataType::Int32, true),
        Field::new("assigned", DataType::Boolean, false),
        Field::new("checkpoint_offset", DataType::Int64, true),
        Field::new("consumed_offset", DataType::Int64, true),
        Field::new("high_watermark", DataType::Int64, true),
        Field::new("lag", DataType::Int64, true),
        Field::new("records", DataType::Int64, false),
        Field::new("rejects", DataType::Int64, false),
        Field::new("flushes", DataType::Int64, false),
        Field::new("last_flush", ts, true),
        Field::new("last_error", DataType::Utf8, true),
    ]))
});

impl IngestStatus {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Names the topic.
    pub fn set_topic(&self, topic: &str) {
        self.lock().topic = topic.to_owned();
    }

    /// Changes one partition's figures.
    pub fn update(&self, partition: i32, f: impl FnOnce(&mut PartitionStatus)) {
        f(self.lock().partitions.entry(partition).or_default());
    }

    /// Records a successful flush at `micros`.
    pub fn flushed(&self, micros: i64, checkpoint: &BTreeMap<i32, i64>) {
        let mut inner = self.lock();
        inner.last_flush_micros = Some(micros);
        inner.flushes += 1;
        for (&p, &next) in checkpoint {
            inner.partitions.entry(p).or_default().checkpoint_offset = Some(next);
        }
    }

    /// Records the latest broker or storage error (None clears it).
    pub fn error(&self, error: Option<String>) {
        self.lock().last_error = error;
    }

    /// Total lag over all partitions (records the broker has that ingest has not consumed).
    pub fn total_lag(&self) -> i64 {
        self.lock().partitions.values().filter_map(lag).sum()
    }

    /// Records, rejects and flushes since start, over all partitions.
    pub fn totals(&self) -> Totals {
        let inner = self.lock();
        Totals {
            records: inner.partitions.values().map(|s| s.records).sum(),
            rejects: inner.partitions.values().map(|s| s.rejects).sum(),
            flushes: inner.flushes,
        }
    }

    /// Lag per partition, where the high watermark is known.
    pub fn lags(&self) -> Vec<(i32, i64)> {
        self.lock()
            .partitions
            .iter()
            .filter_map(|(p, s)| Some((*p, lag(s)?)))
            .collect()
    }

    /// The table's one batch.
    pub fn batch(&self) -> Result<RecordBatch> {
        let inner = self.lock();
        let waiting = PartitionStatus::default();
        let mut rows: Vec<(Option<i32>, &PartitionStatus)> = inner
            .partitions
            .iter()
            .map(|(p, s)| (Some(*p), s))
            .collect();
        if rows.is_empty() && !inner.topic.is_empty() {
            rows.push((None, &waiting));
        }
        let n = rows.len();
        let col = |f: &dyn Fn(&PartitionStatus) -> Option<i64>| -> ArrayRef {
            Arc::new(Int64Array::from(
                rows.iter().map(|(_, s)| f(s)).collect::<Vec<_>>(),
            ))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![inner.topic.as_str(); n])),
            Arc::new(Int32Array::from(
                rows.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            )),
            Arc::new(BooleanArray::from(
                rows.iter().map(|(_, s)| s.assigned).collect::<Vec<_>>(),
            )),
            col(&|s| s.checkpoint_offset),
            col(&|s| s.consumed_offset),
            col(&|s| s.high_watermark),
            col(&lag),
            col(&|s| Some(s.records)),
            col(&|s| Some(s.rejects)),
            Arc::new(Int64Array::from(vec![inner.flushes; n])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![inner.last_flush_micros; n])
                    .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from(vec![inner.last_error.as_deref(); n])),
        ];
        Ok(RecordBatch::try_new(Arc::clone(&SCHEMA), columns)?)
    }
}

/// Records the broker has that ingest has not consumed; only for partitions
/// this server consumes.
fn lag(s: &PartitionStatus) -> Option<i64> {
    if !s.assigned {
        return None;
    }
    let hw = s.high_watermark?;
    let position = s.consumed_offset.or(s.checkpoint_offset).unwrap_or(0);
    Some((hw - position).max(0))
}

/// The `ingest_status` table.
pub fn table(status: IngestStatus) -> super::live::SystemTable {
    super::live::SystemTable::new(Arc::clone(&SCHEMA), move || status.batch())
}
