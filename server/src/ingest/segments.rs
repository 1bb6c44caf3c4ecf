//! Persisting the live tail exactly once (DESIGN §5): Parquet segment files
//! under `output/partial_stream_index/` (good events) and
//! `output/transactions_rejects/` (rejects), and a checkpoint file holding, per
//! partition, the next offset to consume.
//!
//! A flush writes, for each partition, the records consumed since the last
//! flush as a file named after the partition and its first and last offset
//! (`p00001-00000000000000000042-00000000000000000097.parquet`), create-only, then
//! replaces the checkpoint (an atomic put). So:
//! - a segment is committed iff its last offset is below the checkpoint's next
//!   offset for its partition;
//! - a crash between the two steps leaves segments past the checkpoint
//!   ("orphans"); the next start deletes them and consumes those records again;
//! - a retried write of the same range finds its file already there (create-only)
//!   and moves on.
//!
//! Consumed offsets include rejected records, so a partition whose new records
//! were all rejected writes only a rejects segment; the checkpoint still advances.

use std::collections::BTreeMap;

use bytes::Bytes;
use datafusion::arrow::array::Int32Array;
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::compute::kernels::cmp::eq;
use datafusion::arrow::compute::{concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::Int32Type;
use datafusion::error::{DataFusionError, Result};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tracing::{info, warn};

use super::decode::{PARTITION_COLUMN, REJECTS_SCHEMA, TRANSACTIONS_SCHEMA};
use crate::warehouse::{Warehouse, parquet_bytes, read_json_or_default};

/// Folder of the persisted good events (the partial stream index).
pub const SEGMENTS_DIR: &str = "output/partial_stream_index";
/// Folder of the persisted rejects.
pub const REJECTS_DIR: &str = "output/transactions_rejects";
/// Folder of the ingest checkpoints (one file per topic).
pub const CHECKPOINT_DIR: &str = "output/_checkpoints";

/// Where ingest stands: the next offset to consume in each partition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Partition → next offset to consume.
    pub next_offsets: BTreeMap<i32, i64>,
    /// When it was written (RFC 3339).
    pub written_at: String,
}

/// The consumed offset range of one partition since the last flush.
pub type Ranges = BTreeMap<i32, (i64, i64)>;

/// Reads and writes segments and the checkpoint of one topic.
#[derive(Debug, Clone)]
pub struct SegmentStore {
    store: Arc<dyn ObjectStore>,
    segments: Path,
    rejects: Path,
    checkpoint: Path,
}

/// The file name of a segment.
pub fn segment_name(partition: i32, first: i64, last: i64) -> String {
    format!("p{partition:05}-{first:020}-{last:020}.parquet")
}

/// (partition, first, last) of a segment file name.
pub fn parse_segment_name(name: &str) -> Option<(i32, i64, i64)> {
    let stem = name.strip_prefix('p')?.strip_suffix(".parquet")?;
    let mut parts = stem.split('-');
    let partition = parts.next()?.parse().ok()?;
    let first = parts.next()?.parse().ok()?;
    let last = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((partition, first, last))
}

fn external(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl SegmentStore {
    /// The segment store of `topic` in `warehouse`.
    pub fn new(warehouse: &Warehouse, topic: &str) -> Result<Self> {
        Ok(Self {
            store: warehouse.store(),
            segments: warehouse.path(SEGMENTS_DIR)?,
            rejects: warehouse.path(REJECTS_DIR)?,
            checkpoint: warehouse.path(&format!("{CHECKPOINT_DIR}/ingest-{topic}.json"))?,
        })
    }

    /// The last committed checkpoint (empty when none was written yet).
    pub async fn load_checkpoint(&self) -> Result<Checkpoint> {
        read_json_or_default(self.store.as_ref(), &self.checkpoint, "corrupt checkpoint").await
    }

    /// Reads the committed segments back: (transactions, rejects). Orphan
    /// segments (past the checkpoint) are skipped, and deleted when
    /// `delete_orphans` (only the server that ingests may delete them).
    pub async fn recover(
        &self,
        checkpoint: &Checkpoint,
        delete_orphans: bool,
    ) -> Result<(Vec<RecordBatch>, Vec<RecordBatch>)> {
        let transactions = self
            .recover_dir(&self.segments, checkpoint, delete_orphans)
            .await?;
        let rejects = self
            .recover_dir(&self.rejects, checkpoint, delete_orphans)
            .await?;
        Ok((transactions, rejects))
    }

    async fn recover_dir(
        &self,
        dir: &Path,
        checkpoint: &Checkpoint,
        delete_orphans: bool,
    ) -> Result<Vec<RecordBatch>> {
        let files: Vec<_> = self.store.list(Some(dir)).try_collect().await?;
        let mut committed = Vec::new();
        for meta in files {
            let Some(name) = meta.location.filename() else {
                continue;
            };
            let Some((partition, first, last)) = parse_segment_name(name) else {
                continue;
            };
            let next = checkpoint
                .next_offsets
                .get(&partition)
                .copied()
                .unwrap_or(0);
            if last < next {
                committed.push(((partition, first), meta.location));
            } else if delete_orphans {
                warn!(file = %meta.location, "deleting a segment written after the last checkpoint");
                self.store.delete(&meta.location).await?;
            }
        }
        committed.sort();
        let mut batches = Vec::new();
        for (_, location) in committed {
            let bytes = self.store.get(&location).await?.bytes().await?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
            for batch in reader {
                batches.push(batch?);
            }
        }
        Ok(batches)
    }

    /// Commits one flush: for every partition in `ranges`, its rows of
    /// `transactions` and `rejects` as create-only segment files, then the new
    /// checkpoint. Returns the files written.
    pub async fn commit(
        &self,
        ranges: &Ranges,
        transactions: &[RecordBatch],
        rejects: &[RecordBatch],
        checkpoint: &mut Checkpoint,
    ) -> Result<usize> {
        let transactions = concat_batches(&TRANSACTIONS_SCHEMA, transactions)?;
        let rejects = concat_batches(&REJECTS_SCHEMA, rejects)?;
        let mut written = 0;
        for (&partition, &(first, last)) in ranges {
            let name = segment_name(partition, first, last);
            for (dir, batch) in [(&self.segments, &transactions), (&self.rejects, &rejects)] {
                let rows = rows_of_partition(batch, partition)?;
                if rows.num_rows() > 0 {
                    self.put_create(&dir.clone().join(name.as_str()), &rows)
                        .await?;
                    written += 1;
                }
            }
        }
        let mut next = checkpoint.clone();
        for (&partition, &(_, last)) in ranges {
            next.next_offsets.insert(partition, last + 1);
        }
        next.written_at = chrono::Utc::now().to_rfc3339();
        let json = serde_json::to_vec_pretty(&next).map_err(external)?;
        self.store
            .put(&self.checkpoint, PutPayload::from(Bytes::from(json)))
            .await?;
        *checkpoint = next;
        Ok(written)
    }

    async fn put_create(&self, path: &Path, batch: &RecordBatch) -> Result<()> {
        let bytes = parquet_bytes(batch, Compression::SNAPPY)?;
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(path, PutPayload::from(bytes), options)
            .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                info!(file = %path, "segment already written by an earlier attempt");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The column of Kafka partitions of an ingest batch.
pub fn partitions(batch: &RecordBatch) -> Result<&Int32Array> {
    let column = batch.column_by_name(PARTITION_COLUMN).ok_or_else(|| {
        DataFusionError::Internal(format!("ingest batch without {PARTITION_COLUMN}"))
    })?;
    Ok(column.as_primitive::<Int32Type>())
}

fn rows_of_partition(batch: &RecordBatch, partition: i32) -> Result<RecordBatch> {
    let partitions = partitions(batch)?;
    let mask = eq(partitions, &Int32Array::new_scalar(partition))?;
    Ok(filter_record_batch(batch, &mask)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::decode::{Decoder, RawRecord};

    fn decoded(
        partition: i32,
        offsets: std::ops::RangeInclusive<i64>,
    ) -> (RecordBatch, RecordBatch) {
        let mut d = Decoder::new(1 << 20);
        for offset in offsets {
            let good = format!(
                r#"{{"transaction_id": "T-{partition}-{offset}", "merchant_id": "M", "amount": 1.0, "status": "PENDING", "event_time": "2026-11-24T10:00:00"}}"#
            );
            let payload: &[u8] = if offset % 5 == 0 {
                b"bad"
            } else {
                good.as_bytes()
            };
            d.push(
                &RawRecord {
                    partition,
                    offset,
                    key: None,
                    payload: Some(payload),
                },
                0,
            );
        }
        let out = d.finish();
        (out.transactions, out.rejects)
    }

    #[test]
    fn names_round_trip() {
        let name = segment_name(3, 42, 97);
        assert_eq!(
            name,
            "p00003-00000000000000000042-00000000000000000097.parquet"
        );
        assert_eq!(parse_segment_name(&name), Some((3, 42, 97)));
        assert_eq!(parse_segment_name("part-0.parquet"), None);
    }

    #[tokio::test]
    async fn commit_then_recover_and_orphans_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let warehouse = Warehouse::open(dir.path().to_str().unwrap()).unwrap();
        let store = SegmentStore::new(&warehouse, "t").unwrap();
        let mut checkpoint = store.load_checkpoint().await.unwrap();
        assert!(checkpoint.next_offsets.is_empty());

        let (t0, r0) = decoded(0, 0..=9);
        let (t1, r1) = decoded(1, 0..=4);
        let ranges: Ranges = [(0, (0, 9)), (1, (0, 4))].into();
        let written = store
            .commit(&ranges, &[t0, t1], &[r0, r1], &mut checkpoint)
            .await
            .unwrap();
        assert_eq!(written, 4);
        assert_eq!(checkpoint.next_offsets, [(0, 10), (1, 5)].into());

        // An orphan: written, but the checkpoint never moved past it.
        let (t2, _) = decoded(0, 10..=12);
        let orphan = warehouse
            .path(&format!("{SEGMENTS_DIR}/{}", segment_name(0, 10, 12)))
            .unwrap();
        store.put_create(&orphan, &t2).await.unwrap();

        let reloaded = store.load_checkpoint().await.unwrap();
        assert_eq!(reloaded, checkpoint);
        let (transactions, rejects) = store.recover(&reloaded, true).await.unwrap();
        let good: usize = transactions.iter().map(RecordBatch::num_rows).sum();
        let bad: usize = rejects.iter().map(RecordBatch::num_rows).sum();
        assert_eq!((good, bad), (12, 3)); // offsets 0, 5 (p0) and 0 (p1) are rejects
        assert!(
            !dir.path()
                .join(SEGMENTS_DIR)
                .join(segment_name(0, 10, 12))
                .exists()
        );

        // Writing the same range again is a no-op, not an error.
        let (t0, r0) = decoded(0, 0..=9);
        let mut again = Checkpoint::default();
        store
            .commit(&[(0, (0, 9))].into(), &[t0], &[r0], &mut again)
            .await
            .unwrap();
    }
}
