//! The Kafka consumer: assigns itself every partition of the topic (starting
//! from the beginning until checkpoints exist), looks for new partitions every
//! [`DISCOVERY_INTERVAL`], and turns what arrives into small Arrow batches at
//! least every [`BATCH_WAIT`] so events are queryable well within a second.
//! An unreachable broker is retried by librdkafka; the server keeps serving.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;
use tracing::{info, warn};

use super::IngestTables;
use super::decode::{Decoder, RawRecord};
use crate::config::Kafka;

/// How often the topic's partition list is read again.
pub const DISCOVERY_INTERVAL: Duration = Duration::from_secs(5);
/// The longest a received record waits before it is decoded and visible.
pub const BATCH_WAIT: Duration = Duration::from_millis(100);
/// Records per decoded batch at most.
pub const BATCH_MAX: usize = 50_000;

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Builds the consumer from the `[kafka]` settings.
fn consumer(config: &Kafka) -> Result<StreamConsumer, KafkaError> {
    ClientConfig::new()
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
        .set("message.max.bytes", "10000000")
        .create()
}

/// Assigns partitions of the topic not assigned yet; returns how many were added.
async fn discover(
    consumer: &Arc<StreamConsumer>,
    topic: &str,
    assigned: &mut BTreeSet<i32>,
) -> Result<usize, String> {
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
    for p in partitions {
        if !assigned.insert(p) {
            continue;
        }
        new.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    let added = new.count();
    if added > 0 {
        consumer
            .incremental_assign(&new)
            .map_err(|e| e.to_string())?;
        info!(topic, added, total = assigned.len(), "partitions assigned");
    }
    Ok(added)
}

/// Runs ingest until `stop` turns true.
pub async fn run(config: Kafka, tables: IngestTables, mut stop: watch::Receiver<bool>) {
    let consumer = match consumer(&config) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            warn!(error = %e, "cannot create the Kafka consumer; ingest is off");
            return;
        }
    };
    info!(brokers = config.brokers.as_deref().unwrap_or_default(), topic = %config.topic, "Kafka ingest starting");
    let mut assigned = BTreeSet::new();
    let mut next_discovery = Instant::now();
    let mut decoder = Decoder::new(config.max_record_bytes);
    let mut pending = 0usize;
    let mut batch_started = Instant::now();
    loop {
        if *stop.borrow() {
            break;
        }
        if Instant::now() >= next_discovery {
            if let Err(e) = discover(&consumer, &config.topic, &mut assigned).await {
                warn!(error = %e, "partition discovery failed; retrying");
            }
            next_discovery = Instant::now() + DISCOVERY_INTERVAL;
        }
        let wait = if pending == 0 {
            BATCH_WAIT
        } else {
            BATCH_WAIT.saturating_sub(batch_started.elapsed())
        };
        tokio::select! {
            _ = stop.changed() => {}
            received = tokio::time::timeout(wait, consumer.recv()) => match received {
                Ok(Ok(message)) => {
                    if pending == 0 {
                        batch_started = Instant::now();
                    }
                    decoder.push(
                        &RawRecord {
                            partition: message.partition(),
                            offset: message.offset(),
                            key: message.key(),
                            payload: message.payload(),
                        },
                        now_micros(),
                    );
                    pending += 1;
                }
                Ok(Err(e)) => {
                    warn!(error = %e, "Kafka receive error; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(_) => {}
            }
        }
        if pending > 0 && (pending >= BATCH_MAX || batch_started.elapsed() >= BATCH_WAIT) {
            let decoded = decoder.finish();
            tables.transactions.append(decoded.transactions);
            tables.rejects.append(decoded.rejects);
            pending = 0;
        }
    }
    if pending > 0 {
        let decoded = decoder.finish();
        tables.transactions.append(decoded.transactions);
        tables.rejects.append(decoded.rejects);
    }
    info!("Kafka ingest stopped");
}
