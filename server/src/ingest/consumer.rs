//! The Kafka consumer: recovers the persisted segments, then gets its
//! partitions one of two ways (`kafka.assignment`):
//! - `manual`: assigns itself every partition of the topic at its checkpointed
//!   offset (new partitions from the beginning) and looks for new partitions
//!   every [`DISCOVERY_INTERVAL`];
//! - `group`: subscribes, and the consumer group shares the partitions among the
//!   servers ([`super::group`]); partitions of other members are followed from
//!   their persisted segments every [`FOLLOW_INTERVAL`].
//!
//! It turns what arrives into small Arrow batches at least every [`BATCH_WAIT`]
//! so events are queryable well within a second, and flushes the tail to Parquet
//! segments every `flush_interval_secs` / `flush_rows` ([`super::segments`]).
//! The checkpoints are the truth about where ingest stands; offsets are also
//! committed to the group, for lag tools only. An unreachable broker is retried
//! by librdkafka; the server keeps serving.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;
use tracing::{info, warn};

use super::IngestTables;
use super::decode::{Decoder, RawRecord};
use super::group::{Change, IngestContext, Positions};
use super::segments::{Checkpoint, Offsets, Ranges, SegmentStore};
use crate::config::{Assignment, Kafka};

/// How often the topic's partition list is read again (manual assignment).
pub const DISCOVERY_INTERVAL: Duration = Duration::from_secs(5);
/// How often the other group members' checkpoints are read (group assignment).
pub const FOLLOW_INTERVAL: Duration = Duration::from_secs(2);
/// The longest a received record waits before it is decoded and visible.
pub const BATCH_WAIT: Duration = Duration::from_millis(100);
/// How often a status line is logged.
pub const STATUS_LOG_INTERVAL: Duration = Duration::from_secs(30);
/// Records per decoded batch at most.
pub const BATCH_MAX: usize = 50_000;

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// The consumer, with the rebalance callback of group mode.
type KafkaConsumer = StreamConsumer<IngestContext>;

/// Builds the consumer from the `[kafka]` settings (`properties` last, so they
/// can change any of ours).
fn consumer(config: &Kafka, positions: &Positions) -> Result<KafkaConsumer, KafkaError> {
    let mut client = ClientConfig::new();
    client
        .set(
            "bootstrap.servers",
            config.brokers.as_deref().unwrap_or_default(),
        )
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "50")
        .set("message.max.bytes", "10000000");
    if config.assignment == Assignment::Group {
        // Partitions added to the topic reach the group within seconds.
        client.set("topic.metadata.refresh.interval.ms", "5000");
    }
    for (key, value) in &config.properties {
        client.set(key, value);
    }
    client.create_with_context(IngestContext::new(&config.topic, positions.clone()))
}

/// Assigns partitions of the topic not assigned yet; returns the ones added.
/// Partitions in `resume` start at their checkpointed offset, others at the beginning.
async fn discover(
    consumer: &Arc<KafkaConsumer>,
    topic: &str,
    resume: &Offsets,
    assigned: &mut BTreeSet<i32>,
) -> Result<Vec<i32>, String> {
    let c = Arc::clone(consumer);
    let name = topic.to_owned();
    let partitions: Vec<i32> = tokio::task::spawn_blocking(move || {
        let metadata = c.fetch_metadata(Some(&name), Duration::from_secs(5))?;
        Ok::<_, KafkaError>(
            metadata
                .topics()
                .iter()
                .filter(|t| t.name() == name && t.error().is_none())
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect(),
        )
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    let mut new = TopicPartitionList::new();
    let mut added = Vec::new();
    for p in partitions {
        if !assigned.insert(p) {
            continue;
        }
        added.push(p);
        let start = resume
            .get(&p)
            .map_or(Offset::Beginning, |&n| Offset::Offset(n));
        new.add_partition_offset(topic, p, start)
            .map_err(|e| e.to_string())?;
    }
    if !added.is_empty() {
        consumer
            .incremental_assign(&new)
            .map_err(|e| e.to_string())?;
        info!(topic, ?added, total = assigned.len(), "partitions assigned");
    }
    Ok(added)
}

/// The consumer loop's state between records.
struct Ingest {
    config: Kafka,
    tables: IngestTables,
    segments: SegmentStore,
    checkpoint: Checkpoint,
    consumer: Arc<KafkaConsumer>,
    /// The partitions this server consumes now.
    assigned: BTreeSet<i32>,
    /// How far the live tables reach per partition.
    positions: Positions,
    decoder: Decoder,
    /// Records pushed to the decoder but not yet appended to the live tables.
    pending: usize,
    batch_started: Instant,
    /// Offsets consumed since the last flush, per partition.
    ranges: Ranges,
    last_flush: Instant,
}

impl Ingest {
    fn take(&mut self, message: &rdkafka::message::BorrowedMessage<'_>) {
        let (partition, offset) = (message.partition(), message.offset());
        if let Err(next) = self.positions.claim(partition, offset) {
            let problem = already_held(next, partition, offset);
            warn!("{problem}");
            self.tables.status.error(Some(problem));
            return;
        }
        if self.pending == 0 {
            self.batch_started = Instant::now();
        }
        self.decoder.push(
            &RawRecord {
                partition,
                offset,
                key: message.key(),
                payload: message.payload(),
            },
            now_micros(),
        );
        self.pending += 1;
        self.tables.status.update(partition, |s| {
            s.records += 1;
            s.consumed_offset = Some(offset + 1);
        });
        self.ranges
            .entry(partition)
            .and_modify(|r| r.1 = offset)
            .or_insert((offset, offset));
    }

    /// Makes decoded records visible to queries.
    fn publish(&mut self) {
        if self.pending > 0 {
            let decoded = self.decoder.finish();
            count_rejects(&self.tables.status, &decoded.rejects);
            self.tables.transactions.append(decoded.transactions);
            self.tables.rejects.append(decoded.rejects);
            self.pending = 0;
        }
    }

    /// Logs where ingest stands (also queryable as `ingest_status`).
    fn report(&self) {
        let status = &self.tables.status;
        info!(
            partitions = self.assigned.len(),
            events = self.tables.transactions.num_rows(),
            rejects = self.tables.rejects.num_rows(),
            unflushed = self.tables.transactions.unflushed_rows(),
            lag = status.total_lag(),
            checkpoint = ?self.checkpoint.next_offsets,
            "ingest status"
        );
    }

    /// Whether the unpersisted tail reached its bound (consumption pauses).
    fn over_bound(&self) -> bool {
        self.tables.transactions.unflushed_rows()
            + self.tables.rejects.unflushed_rows()
            + self.pending
            >= self.config.max_unflushed_rows
    }

    /// Reads the brokers' high watermarks of the assigned partitions.
    async fn refresh_watermarks(&self) {
        let consumer = Arc::clone(&self.consumer);
        let topic = self.config.topic.clone();
        let partitions: Vec<i32> = self.assigned.iter().copied().collect();
        let status = self.tables.status.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for p in partitions {
                match consumer.fetch_watermarks(&topic, p, Duration::from_secs(1)) {
                    Ok((_, high)) => status.update(p, |s| s.high_watermark = Some(high)),
                    Err(e) => status.error(Some(format!("watermarks of partition {p}: {e}"))),
                }
            }
        })
        .await;
    }

    fn flush_due(&self) -> bool {
        !self.ranges.is_empty()
            && (self.last_flush.elapsed() >= Duration::from_secs(self.config.flush_interval_secs)
                || self.tables.transactions.unflushed_rows() >= self.config.flush_rows)
    }

    /// Persists everything consumed since the last flush (segments, then the
    /// checkpoint). On failure the records stay unflushed and are retried.
    async fn flush(&mut self) {
        self.publish();
        self.last_flush = Instant::now();
        if self.ranges.is_empty() {
            return;
        }
        let (transactions, t_mark) = self.tables.transactions.unflushed();
        let (rejects, r_mark) = self.tables.rejects.unflushed();
        let started = Instant::now();
        match self
            .segments
            .commit(&self.ranges, &transactions, &rejects, &mut self.checkpoint)
            .await
        {
            Ok(files) => {
                self.tables
                    .status
                    .flushed(now_micros(), &self.checkpoint.next_offsets);
                self.tables.status.error(None);
                self.tables.transactions.mark_flushed(t_mark);
                self.tables.rejects.mark_flushed(r_mark);
                let rows: usize = transactions.iter().map(|b| b.num_rows()).sum();
                info!(
                    files,
                    rows,
                    ms = started.elapsed().as_millis() as u64,
                    "tail flushed"
                );
                self.ranges.clear();
                self.commit_group_offsets();
            }
            Err(e) => {
                warn!(error = %e, "flush failed; retrying");
                self.tables.status.error(Some(format!("flush failed: {e}")));
            }
        }
    }

    /// Tells the consumer group where we are, for external lag tools only (in
    /// group mode only for the partitions this server consumes).
    fn commit_group_offsets(&self) {
        let mut list = TopicPartitionList::new();
        for (&partition, &next) in &self.checkpoint.next_offsets {
            if self.config.assignment == Assignment::Group && !self.assigned.contains(&partition) {
                continue;
            }
            if list
                .add_partition_offset(&self.config.topic, partition, Offset::Offset(next))
                .is_err()
            {
                return;
            }
        }
        if list.count() == 0 {
            return;
        }
        if let Err(e) = self.consumer.commit(&list, CommitMode::Async) {
            warn!(error = %e, "cannot commit offsets to the group (lag tools only)");
        }
    }

    /// Assigns partitions that appeared since the last look (manual assignment).
    async fn discover(&mut self) {
        let topic = self.config.topic.clone();
        let resume = self.positions.all();
        match discover(&self.consumer, &topic, &resume, &mut self.assigned).await {
            Ok(added) => {
                for p in added {
                    self.tables.status.update(p, |s| s.assigned = true);
                }
            }
            Err(e) => {
                warn!(error = %e, "partition discovery failed; retrying");
                self.tables.status.error(Some(format!("discovery: {e}")));
            }
        }
    }

    /// Applies the group's assignment changes; what was consumed of revoked
    /// partitions is flushed at once, so their new owner finds it persisted.
    async fn apply_changes(&mut self) {
        let mut revoked = false;
        for change in self.positions.take_changes() {
            let (partitions, now) = match change {
                Change::Assigned(partitions) => (partitions, true),
                Change::Revoked(partitions) => {
                    revoked = true;
                    (partitions, false)
                }
            };
            for p in partitions {
                self.tables.status.update(p, |s| s.assigned = now);
                if now {
                    self.assigned.insert(p);
                } else {
                    self.assigned.remove(&p);
                }
            }
        }
        if revoked {
            self.flush().await;
        }
    }

    /// Loads what other group members committed of the partitions this server
    /// does not consume, from where the live tables reach.
    async fn follow(&mut self) {
        let checkpoint = match self.segments.load_checkpoint().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot read the group's checkpoints; retrying");
                return;
            }
        };
        let behind: BTreeSet<i32> = checkpoint
            .next_offsets
            .iter()
            .filter(|&(p, &next)| {
                !self.assigned.contains(p)
                    && !self.ranges.contains_key(p)
                    && self.positions.get(*p).is_none_or(|held| held < next)
            })
            .map(|(&p, _)| p)
            .collect();
        if behind.is_empty() {
            return;
        }
        match self
            .segments
            .load(&checkpoint, &self.positions.all(), Some(&behind))
            .await
        {
            Ok(loaded) => {
                for (&p, &next) in &loaded.next {
                    self.positions.advance(p, next);
                    self.tables
                        .status
                        .update(p, |s| s.checkpoint_offset = Some(next));
                }
                let rows = self.tables.append_persisted(loaded);
                info!(rows, partitions = ?behind, "loaded other members' segments");
            }
            Err(e) => warn!(error = %e, "cannot load other members' segments; retrying"),
        }
    }
}

/// A record below `next` (the offset after the last one the live tables hold
/// of its partition) is held already: the topic was recreated or truncated
/// (offsets went back). Taking it would duplicate it and overlap committed
/// segments, so it is skipped and reported instead.
fn already_held(next: i64, partition: i32, offset: i64) -> String {
    format!(
        "partition {partition}: offset {offset} is below the checkpoint ({next}); the topic was \
         recreated or truncated; records skipped (remove the checkpoint to re-ingest)"
    )
}

/// Counts reject rows per partition in the status table.
fn count_rejects(
    status: &super::status::IngestStatus,
    rejects: &datafusion::arrow::array::RecordBatch,
) {
    if let Ok(partitions) = super::segments::partitions(rejects) {
        for p in partitions.values() {
            status.update(*p, |s| s.rejects += 1);
        }
    }
}

/// Runs ingest until `stop` turns true: recovers persisted segments, resumes
/// after the checkpoint, consumes, flushes, and flushes once more at the end.
pub async fn run(
    config: Kafka,
    tables: IngestTables,
    segments: SegmentStore,
    mut stop: watch::Receiver<bool>,
) {
    let group = config.assignment == Assignment::Group;
    // Only a single server may delete orphans: in a group another member may be
    // about to commit them.
    let (checkpoint, positions) = match recover(&segments, &tables, !group).await {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "cannot read the ingest checkpoint or segments; ingest is off");
            return;
        }
    };
    let positions = Positions::new(positions);
    let consumer = match consumer(&config, &positions) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            warn!(error = %e, "cannot create the Kafka consumer; ingest is off");
            return;
        }
    };
    if group && let Err(e) = consumer.subscribe(&[config.topic.as_str()]) {
        warn!(error = %e, "cannot subscribe to the topic; ingest is off");
        return;
    }
    info!(brokers = config.brokers.as_deref().unwrap_or_default(), topic = %config.topic,
          resume = ?checkpoint.next_offsets, "Kafka ingest starting");
    let mut ingest = Ingest {
        decoder: Decoder::new(config.max_record_bytes),
        config,
        tables,
        segments,
        checkpoint,
        consumer,
        assigned: BTreeSet::new(),
        positions,
        pending: 0,
        batch_started: Instant::now(),
        ranges: Ranges::new(),
        last_flush: Instant::now(),
    };
    ingest.tables.status.set_topic(&ingest.config.topic);
    let checkpointed = ingest.checkpoint.next_offsets.clone();
    ingest.tables.status.flushed(now_micros(), &checkpointed);
    let mut next_discovery = Instant::now();
    let mut next_follow = Instant::now();
    let mut next_report = Instant::now() + STATUS_LOG_INTERVAL;
    let mut paused = false;
    while !*stop.borrow() {
        ingest.apply_changes().await;
        if group && Instant::now() >= next_follow {
            ingest.follow().await;
            next_follow = Instant::now() + FOLLOW_INTERVAL;
        }
        if Instant::now() >= next_discovery {
            if !group {
                ingest.discover().await;
            }
            ingest.refresh_watermarks().await;
            next_discovery = Instant::now() + DISCOVERY_INTERVAL;
        }
        if Instant::now() >= next_report {
            ingest.report();
            next_report = Instant::now() + STATUS_LOG_INTERVAL;
        }
        if ingest.over_bound() {
            ingest.flush().await;
            if ingest.over_bound() {
                if !paused {
                    warn!("unflushed tail at its bound: consumption paused until a flush succeeds");
                    paused = true;
                }
                tokio::select! {
                    _ = stop.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                continue;
            }
        }
        if paused {
            info!("consumption resumed");
            paused = false;
        }
        let wait = if ingest.pending == 0 {
            BATCH_WAIT
        } else {
            BATCH_WAIT.saturating_sub(ingest.batch_started.elapsed())
        };
        let consumer = Arc::clone(&ingest.consumer);
        tokio::select! {
            _ = stop.changed() => {}
            received = tokio::time::timeout(wait, consumer.recv()) => match received {
                Ok(Ok(message)) => ingest.take(&message),
                Ok(Err(e)) => {
                    warn!(error = %e, "Kafka receive error; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(_) => {}
            }
        }
        if ingest.pending >= BATCH_MAX || ingest.batch_started.elapsed() >= BATCH_WAIT {
            ingest.publish();
        }
        if ingest.flush_due() {
            ingest.flush().await;
        }
    }
    ingest.flush().await;
    info!("Kafka ingest stopped");
}

/// Reads the checkpoint and the committed segments back into the live tables
/// (also what a server without Kafka shows: the persisted stream). Returns the
/// checkpoint and how far the live tables now reach per partition.
pub async fn recover(
    segments: &SegmentStore,
    tables: &IngestTables,
    delete_orphans: bool,
) -> datafusion::error::Result<(Checkpoint, Offsets)> {
    let checkpoint = segments.load_checkpoint().await?;
    let mut loaded = segments.recover(&checkpoint, delete_orphans).await?;
    let next = std::mem::take(&mut loaded.next);
    let rows = tables.append_persisted(loaded);
    info!(
        rows,
        partitions = checkpoint.next_offsets.len(),
        "ingest state recovered"
    );
    Ok((checkpoint, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_below_the_checkpoint_are_refused() {
        let positions = Positions::new([(0, 10)].into());
        assert!(positions.claim(0, 10).is_ok());
        assert!(positions.claim(1, 0).is_ok());
        let next = positions.claim(0, 3).unwrap_err();
        let problem = already_held(next, 0, 3);
        assert!(problem.contains("below the checkpoint (11)"), "{problem}");
    }
}
