//! Persisting the live tail exactly once (DESIGN §5): Parquet segment files
//! under `output/partial_stream_index/` (good events) and
//! `output/transactions_rejects/` (rejects), and checkpoint files holding, per
//! partition, the next offset to consume.
//!
//! A flush writes, for each partition, the records consumed since the last
//! flush as a file named after the partition and its first and last offset
//! (`p00001-00000000000000000042-00000000000000000097.parquet`), create-only, then
//! replaces the server's checkpoint file (an atomic put). So:
//! - a segment is committed iff its last offset is below the checkpoint's next
//!   offset for its partition;
//! - a crash between the two steps leaves segments past the checkpoint
//!   ("orphans"); a single server deletes them at its next start and consumes
//!   those records again;
//! - a retried write of the same range finds its file already there (create-only)
//!   and moves on.
//!
//! Several servers in one consumer group share the folders: each writes its own
//! checkpoint file (`ingest-<topic>/<member>.json`; a single server writes
//! `ingest-<topic>.json`), and the checkpoint of a partition is the highest next
//! offset any of them committed. When a partition moves between servers, two of
//! them may persist overlapping ranges of it (and a crashed one's orphan may
//! become committed later), so readers take each offset once: committed ranges
//! in order of first offset, each read only from where the previous ones ended
//! ([`plan`]). Kafka offsets are immutable, so either copy of an offset holds the
//! same record.
//!
//! Consumed offsets include rejected records, so a partition whose new records
//! were all rejected writes only a rejects segment; the checkpoint still advances.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::array::{Int32Array, Int64Array};
use datafusion::arrow::compute::kernels::cmp::{eq, gt_eq};
use datafusion::arrow::compute::{concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::{Int32Type, Int64Type};
use datafusion::error::{DataFusionError, Result};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tracing::{info, warn};

use super::decode::{OFFSET_COLUMN, PARTITION_COLUMN, REJECTS_SCHEMA, TRANSACTIONS_SCHEMA};
use crate::warehouse::{Warehouse, parquet_bytes, read_json_or_default};

/// Folder of the persisted good events (the partial stream index).
pub const SEGMENTS_DIR: &str = "output/partial_stream_index";
/// Folder of the persisted rejects.
pub const REJECTS_DIR: &str = "output/transactions_rejects";
/// Folder of the ingest checkpoints (one file per topic, or a folder per topic
/// with one file per group member).
pub const CHECKPOINT_DIR: &str = "output/_checkpoints";

/// Where ingest stands: the next offset to consume in each partition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Partition → next offset to consume.
    pub next_offsets: BTreeMap<i32, i64>,
    /// When it was written (RFC 3339).
    pub written_at: String,
}

impl Checkpoint {
    /// The next offset of `partition` (0 when it has none: nothing committed).
    pub fn next(&self, partition: i32) -> i64 {
        self.next_offsets.get(&partition).copied().unwrap_or(0)
    }

    /// Takes, per partition, the higher next offset of `self` and `other`.
    fn merge(&mut self, other: &Checkpoint) {
        for (&partition, &next) in &other.next_offsets {
            let mine = self.next_offsets.entry(partition).or_insert(next);
            *mine = (*mine).max(next);
        }
        if other.written_at > self.written_at {
            self.written_at.clone_from(&other.written_at);
        }
    }
}

/// The consumed offset range of one partition since the last flush.
pub type Ranges = BTreeMap<i32, (i64, i64)>;

/// Partition → next offset (what a checkpoint holds, or how far the live
/// tables reach).
pub type Offsets = BTreeMap<i32, i64>;

/// Committed segments read back, and how far they reach per partition.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Rows of `transactions`.
    pub transactions: Vec<RecordBatch>,
    /// Rows of `transactions_rejects`.
    pub rejects: Vec<RecordBatch>,
    /// Per partition read, the offset after the last one read.
    pub next: Offsets,
}

/// One committed range to read: the file's (first, last) offsets, and the
/// offset reading starts at (above `first` when earlier ranges cover the start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// First offset in the file name.
    pub first: i64,
    /// Last offset in the file name.
    pub last: i64,
    /// Rows below this offset are skipped.
    pub from: i64,
}

/// Which committed ranges of one partition to read so that every offset in
/// `[from, upto)` is read once: ranges in order of first offset, each from
/// where the ranges before it ended; ranges not below `upto` are uncommitted.
/// Returns the pieces and the offset after the last one read (`from` when
/// nothing is read; the lowest first offset when `from` is None).
pub fn plan(
    ranges: &BTreeSet<(i64, i64)>,
    from: Option<i64>,
    upto: i64,
) -> (Vec<Piece>, Option<i64>) {
    let mut next = from;
    let mut pieces = Vec::new();
    for &(first, last) in ranges {
        if last >= upto || next.is_some_and(|n| last < n) {
            continue;
        }
        let start = next.map_or(first, |n| n.max(first));
        pieces.push(Piece {
            first,
            last,
            from: start,
        });
        next = Some(last + 1);
    }
    (pieces, next)
}

/// Reads and writes segments and the checkpoints of one topic.
#[derive(Debug, Clone)]
pub struct SegmentStore {
    store: Arc<dyn ObjectStore>,
    segments: Path,
    rejects: Path,
    /// The single-server checkpoint file.
    single: Path,
    /// The folder of the group members' checkpoint files.
    members: Path,
    /// The file this server writes its checkpoint to.
    own: Path,
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

/// The segment files of both folders, by partition and range.
#[derive(Debug, Default)]
struct Listing {
    ranges: BTreeMap<i32, BTreeSet<(i64, i64)>>,
    files: BTreeSet<Path>,
}

impl SegmentStore {
    /// The segment store of `topic` in `warehouse`, for a single server.
    pub fn new(warehouse: &Warehouse, topic: &str) -> Result<Self> {
        let single = warehouse.path(&format!("{CHECKPOINT_DIR}/ingest-{topic}.json"))?;
        Ok(Self {
            store: warehouse.store(),
            segments: warehouse.path(SEGMENTS_DIR)?,
            rejects: warehouse.path(REJECTS_DIR)?,
            members: warehouse.path(&format!("{CHECKPOINT_DIR}/ingest-{topic}"))?,
            own: single.clone(),
            single,
        })
    }

    /// The same store for `member` of a consumer group: its checkpoint goes to
    /// its own file, next to the other members'.
    pub fn for_member(self, member: &str) -> Result<Self> {
        let file = format!("{member}.json");
        if member.is_empty() || Path::parse(&file).is_err() || file.contains('/') {
            return Err(DataFusionError::Configuration(format!(
                "kafka.member {member:?} cannot name a checkpoint file"
            )));
        }
        Ok(Self {
            own: self.members.clone().join(file.as_str()),
            ..self
        })
    }

    /// The committed checkpoint: per partition, the highest next offset in the
    /// single-server file and any group member's file (empty when none exists).
    pub async fn load_checkpoint(&self) -> Result<Checkpoint> {
        let mut merged: Checkpoint =
            read_json_or_default(self.store.as_ref(), &self.single, "corrupt checkpoint").await?;
        let files: Vec<_> = self.store.list(Some(&self.members)).try_collect().await?;
        for meta in files {
            let member: Checkpoint =
                read_json_or_default(self.store.as_ref(), &meta.location, "corrupt checkpoint")
                    .await?;
            merged.merge(&member);
        }
        Ok(merged)
    }

    async fn list(&self) -> Result<Listing> {
        let mut listing = Listing::default();
        for dir in [&self.segments, &self.rejects] {
            let files: Vec<_> = self.store.list(Some(dir)).try_collect().await?;
            for meta in files {
                let Some((partition, first, last)) =
                    meta.location.filename().and_then(parse_segment_name)
                else {
                    continue;
                };
                listing
                    .ranges
                    .entry(partition)
                    .or_default()
                    .insert((first, last));
                listing.files.insert(meta.location);
            }
        }
        Ok(listing)
    }

    /// Reads every committed segment back, each offset once. With
    /// `delete_orphans` the segments past `checkpoint` (orphans of a crash
    /// between a segment and its checkpoint) are deleted first. Only a single
    /// server may do that: in a group another member may be about to commit them.
    pub async fn recover(&self, checkpoint: &Checkpoint, delete_orphans: bool) -> Result<Loaded> {
        let listing = self.list().await?;
        if delete_orphans {
            self.delete_orphans(&listing, checkpoint).await?;
        }
        // The listing still names the deleted files; `plan` never reads a
        // range past the checkpoint.
        self.load_listed(&listing, checkpoint, &Offsets::new(), None)
            .await
    }

    async fn delete_orphans(&self, listing: &Listing, checkpoint: &Checkpoint) -> Result<()> {
        for location in &listing.files {
            let Some((partition, _, last)) = location.filename().and_then(parse_segment_name)
            else {
                continue;
            };
            if last >= checkpoint.next(partition) {
                warn!(file = %location, "deleting a segment written after the last checkpoint");
                self.store.delete(location).await?;
            }
        }
        Ok(())
    }

    /// Reads the committed segments of `partitions` (all when None) from
    /// `from` (the start when a partition is missing) up to `checkpoint`, each
    /// offset once ([`plan`]).
    pub async fn load(
        &self,
        checkpoint: &Checkpoint,
        from: &Offsets,
        partitions: Option<&BTreeSet<i32>>,
    ) -> Result<Loaded> {
        let listing = self.list().await?;
        self.load_listed(&listing, checkpoint, from, partitions)
            .await
    }

    async fn load_listed(
        &self,
        listing: &Listing,
        checkpoint: &Checkpoint,
        from: &Offsets,
        partitions: Option<&BTreeSet<i32>>,
    ) -> Result<Loaded> {
        let mut loaded = Loaded::default();
        for (&partition, ranges) in &listing.ranges {
            if partitions.is_some_and(|wanted| !wanted.contains(&partition)) {
                continue;
            }
            let start = from.get(&partition).copied();
            let (pieces, next) = plan(ranges, start, checkpoint.next(partition));
            for piece in pieces {
                let name = segment_name(partition, piece.first, piece.last);
                let (dir_t, dir_r) = (
                    self.segments.clone().join(name.as_str()),
                    self.rejects.clone().join(name.as_str()),
                );
                if listing.files.contains(&dir_t) {
                    loaded.transactions.extend(self.read(&dir_t, piece).await?);
                }
                if listing.files.contains(&dir_r) {
                    loaded.rejects.extend(self.read(&dir_r, piece).await?);
                }
            }
            if let Some(next) = next {
                loaded.next.insert(partition, next);
            }
        }
        Ok(loaded)
    }

    /// The rows of one segment file from `piece.from` on.
    async fn read(&self, location: &Path, piece: Piece) -> Result<Vec<RecordBatch>> {
        let bytes = self.store.get(location).await?.bytes().await?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
        let mut batches = Vec::new();
        for batch in reader {
            let batch = batch?;
            if piece.from > piece.first {
                batches.push(rows_from_offset(&batch, piece.from)?);
            } else {
                batches.push(batch);
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
            .put(&self.own, PutPayload::from(Bytes::from(json)))
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

fn rows_from_offset(batch: &RecordBatch, from: i64) -> Result<RecordBatch> {
    let column = batch.column_by_name(OFFSET_COLUMN).ok_or_else(|| {
        DataFusionError::Internal(format!("ingest segment without {OFFSET_COLUMN}"))
    })?;
    let offsets = column.as_primitive::<Int64Type>();
    let mask = gt_eq(offsets, &Int64Array::new_scalar(from))?;
    Ok(filter_record_batch(batch, &mask)?)
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
        let loaded = store.recover(&reloaded, true).await.unwrap();
        assert_eq!(loaded.next, [(0, 10), (1, 5)].into());
        let good: usize = loaded.transactions.iter().map(RecordBatch::num_rows).sum();
        let bad: usize = loaded.rejects.iter().map(RecordBatch::num_rows).sum();
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

    #[test]
    fn plan_reads_each_offset_once() {
        let ranges: BTreeSet<(i64, i64)> = [(0, 9), (10, 19), (10, 25), (20, 30), (40, 49)].into();
        let piece = |first, last, from| Piece { first, last, from };
        // Everything committed below 50, from the start.
        let (pieces, next) = plan(&ranges, None, 50);
        assert_eq!(
            pieces,
            vec![
                piece(0, 9, 0),
                piece(10, 19, 10),
                piece(10, 25, 20),
                piece(20, 30, 26),
                piece(40, 49, 40)
            ]
        );
        assert_eq!(next, Some(50));
        // Ranges reaching the checkpoint are not committed yet.
        let (pieces, next) = plan(&ranges, None, 26);
        assert_eq!(
            pieces,
            vec![piece(0, 9, 0), piece(10, 19, 10), piece(10, 25, 20)]
        );
        assert_eq!(next, Some(26));
        // Following from an offset in the middle of a range.
        let (pieces, next) = plan(&ranges, Some(15), 31);
        assert_eq!(
            pieces,
            vec![piece(10, 19, 15), piece(10, 25, 20), piece(20, 30, 26)]
        );
        assert_eq!(next, Some(31));
        // Nothing new.
        assert_eq!(plan(&ranges, Some(50), 50), (vec![], Some(50)));
        // A topic whose first offsets were deleted by retention starts later.
        let late: BTreeSet<(i64, i64)> = [(500, 599)].into();
        assert_eq!(
            plan(&late, None, 600),
            (vec![piece(500, 599, 500)], Some(600))
        );
    }

    #[tokio::test]
    async fn group_members_overlapping_ranges_are_read_once() {
        let dir = tempfile::tempdir().unwrap();
        let warehouse = Warehouse::open(dir.path().to_str().unwrap()).unwrap();
        let a = SegmentStore::new(&warehouse, "t")
            .unwrap()
            .for_member("a")
            .unwrap();
        let b = SegmentStore::new(&warehouse, "t")
            .unwrap()
            .for_member("b")
            .unwrap();
        assert!(
            SegmentStore::new(&warehouse, "t")
                .unwrap()
                .for_member("x/y")
                .is_err()
        );

        // a persists 0..=9 of partition 0, then loses the partition to b, which
        // started from the same checkpoint (0) and persists 0..=14; a then
        // persists 10..=12 late (its flush raced the hand-over).
        let mut ca = Checkpoint::default();
        let (t, r) = decoded(0, 0..=9);
        a.commit(&[(0, (0, 9))].into(), &[t], &[r], &mut ca)
            .await
            .unwrap();
        let mut cb = Checkpoint::default();
        let (t, r) = decoded(0, 0..=14);
        b.commit(&[(0, (0, 14))].into(), &[t], &[r], &mut cb)
            .await
            .unwrap();
        let (t, r) = decoded(0, 10..=12);
        a.commit(&[(0, (10, 12))].into(), &[t], &[r], &mut ca)
            .await
            .unwrap();
        assert_eq!(ca.next_offsets, [(0, 13)].into());

        // The checkpoint is the highest of the members' files.
        let merged = a.load_checkpoint().await.unwrap();
        assert_eq!(merged.next_offsets, [(0, 15)].into());
        let loaded = b.load(&merged, &Offsets::new(), None).await.unwrap();
        let offsets: Vec<i64> = loaded
            .transactions
            .iter()
            .chain(&loaded.rejects)
            .flat_map(|batch| {
                let column = batch.column_by_name(OFFSET_COLUMN).unwrap();
                column.as_primitive::<Int64Type>().values().to_vec()
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let rows: usize = loaded
            .transactions
            .iter()
            .chain(&loaded.rejects)
            .map(RecordBatch::num_rows)
            .sum();
        assert_eq!(offsets, (0..=14).collect::<Vec<_>>());
        assert_eq!(rows, 15, "each offset once");
        assert_eq!(loaded.next, [(0, 15)].into());

        // Following from offset 10 reads only 10..=14.
        let more = b
            .load(&merged, &[(0, 10)].into(), Some(&[0].into()))
            .await
            .unwrap();
        let rows: usize = more
            .transactions
            .iter()
            .chain(&more.rejects)
            .map(RecordBatch::num_rows)
            .sum();
        assert_eq!(rows, 5);
    }
}
