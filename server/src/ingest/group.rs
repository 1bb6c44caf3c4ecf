//! Where the live tables stand per partition, and the consumer-group side of
//! ingest (DESIGN §5, §9: several servers in one consumer group share a topic).
//!
//! [`Positions`] holds, per partition, the offset after the last record the
//! live tables hold (consumed, or loaded from segments), shared between the
//! consumer loop and the rebalance callback of [`IngestContext`]:
//! - when the group assigns partitions, each starts at its position (or the
//!   beginning), so no record is taken into memory twice, and the truth stays
//!   our checkpoints, not the group's committed offsets;
//! - assignments and revocations are queued as [`Change`]s for the consumer
//!   loop, which flushes at once what it consumed of a revoked partition.
//!
//! Partitions other members consume are *followed*: the loop reads the
//! members' checkpoints and loads the segments committed past the position
//! ([`super::segments::SegmentStore::load`]), so every server answers for the
//! whole topic — its own partitions within a second, the others' as they are
//! persisted (every `flush_interval_secs`).

use std::sync::{Arc, Mutex, MutexGuard};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaResult;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use super::segments::Offsets;

/// A change of this server's partitions, made by the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// These partitions are now consumed here.
    Assigned(Vec<i32>),
    /// These partitions went to another member (or the server is leaving).
    Revoked(Vec<i32>),
}

#[derive(Debug, Default)]
struct Inner {
    next: Offsets,
    changes: Vec<Change>,
}

/// Per partition, the offset after the last record in the live tables; and
/// the group's changes not yet handled by the consumer loop.
#[derive(Debug, Clone, Default)]
pub struct Positions {
    inner: Arc<Mutex<Inner>>,
}

impl Positions {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Positions starting at `next`.
    pub fn new(next: Offsets) -> Self {
        let positions = Self::default();
        positions.lock().next = next;
        positions
    }

    /// The offset after the last record held of `partition`.
    pub fn get(&self, partition: i32) -> Option<i64> {
        self.lock().next.get(&partition).copied()
    }

    /// All positions.
    pub fn all(&self) -> Offsets {
        self.lock().next.clone()
    }

    /// Claims the record at `offset` of `partition` for the live tables: Ok
    /// and the position moves past it, or Err(position) when the tables hold
    /// it already. One lock per record.
    pub fn claim(&self, partition: i32, offset: i64) -> Result<(), i64> {
        let mut inner = self.lock();
        let position = inner.next.entry(partition).or_insert(offset);
        if offset < *position {
            return Err(*position);
        }
        *position = offset + 1;
        Ok(())
    }

    /// Records that the live tables now hold `partition` up to `next` (exclusive).
    pub fn advance(&self, partition: i32, next: i64) {
        let mut inner = self.lock();
        let position = inner.next.entry(partition).or_insert(next);
        *position = (*position).max(next);
    }

    /// Takes the group's changes queued since the last call.
    pub fn take_changes(&self) -> Vec<Change> {
        std::mem::take(&mut self.lock().changes)
    }

    fn push(&self, change: Change) {
        self.lock().changes.push(change);
    }
}

/// The consumer's context: the rebalance callback for group mode.
#[derive(Debug, Clone)]
pub struct IngestContext {
    topic: String,
    positions: Positions,
}

impl IngestContext {
    /// The context of the consumer of `topic`.
    pub fn new(topic: &str, positions: Positions) -> Self {
        Self {
            topic: topic.to_owned(),
            positions,
        }
    }

    fn partitions(&self, list: &TopicPartitionList) -> Vec<i32> {
        list.elements()
            .iter()
            .filter(|e| e.topic() == self.topic)
            .map(|e| e.partition())
            .collect()
    }

    fn assign(
        &self,
        consumer: &BaseConsumer<Self>,
        list: &mut TopicPartitionList,
    ) -> KafkaResult<()> {
        let partitions = self.partitions(list);
        for &p in &partitions {
            let start = self
                .positions
                .get(p)
                .map_or(Offset::Beginning, Offset::Offset);
            list.set_partition_offset(&self.topic, p, start)?;
        }
        info!(?partitions, "the group assigned partitions");
        self.positions.push(Change::Assigned(partitions));
        match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_assign(list),
            _ => consumer.assign(list),
        }
    }

    fn revoke(&self, consumer: &BaseConsumer<Self>, list: &TopicPartitionList) -> KafkaResult<()> {
        let partitions = self.partitions(list);
        info!(?partitions, "the group revoked partitions");
        self.positions.push(Change::Revoked(partitions));
        match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_unassign(list),
            _ => consumer.unassign(),
        }
    }
}

impl ClientContext for IngestContext {}

impl ConsumerContext for IngestContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        list: &mut TopicPartitionList,
    ) {
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.assign(consumer, list),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.revoke(consumer, list),
            other => {
                warn!(error = ?other, "rebalance failed; partitions released");
                self.revoke(consumer, list)
            }
        };
        if let Err(e) = result {
            warn!(error = %e, "cannot apply the group's assignment");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_only_move_forward_and_changes_are_taken_once() {
        let positions = Positions::new([(0, 10)].into());
        positions.advance(0, 5);
        positions.advance(0, 12);
        positions.advance(1, 3);
        assert_eq!(positions.all(), [(0, 12), (1, 3)].into());
        assert_eq!(positions.claim(0, 11), Err(12));
        assert_eq!(positions.claim(0, 12), Ok(()));
        assert_eq!(positions.claim(2, 7), Ok(()));
        assert_eq!(positions.all(), [(0, 13), (1, 3), (2, 8)].into());
        positions.push(Change::Assigned(vec![0, 1]));
        positions.push(Change::Revoked(vec![1]));
        assert_eq!(
            positions.take_changes(),
            vec![Change::Assigned(vec![0, 1]), Change::Revoked(vec![1])]
        );
        assert!(positions.take_changes().is_empty());
    }
}
