//! The Kafka side of `generate`: create the topic when it is missing, produce
//! the events as fast as the broker takes them (batched, acknowledged), and
//! report where each partition ended.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use arrow::array::{Array, Int32Array, Int64Array, RecordBatch};
use indicatif::ProgressBar;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use super::{Dataset, GenerateArgs};

/// Events in flight before waiting for their acknowledgements.
const IN_FLIGHT: usize = 20_000;

/// Produces every event of `dataset`; returns the next offset after the last
/// acknowledged event, per partition.
pub(super) async fn produce(
    args: &GenerateArgs,
    dataset: &Dataset,
    bar: &ProgressBar,
) -> anyhow::Result<Vec<(i32, i64)>> {
    ensure_topic(args).await?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.kafka_brokers)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("message.timeout.ms", "60000")
        .create()
        .context("cannot create the Kafka producer")?;
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let mut in_flight = Vec::with_capacity(IN_FLIGHT);
    let mut sent = 0u64;
    for (key, value) in dataset.events() {
        let record = FutureRecord::to(&args.topic).key(&key).payload(&value);
        // The queue holds far more than IN_FLIGHT, so it cannot be full here.
        let delivery = producer
            .send_result(record)
            .map_err(|(e, _)| e)
            .context("queueing an event")?;
        in_flight.push(delivery);
        if in_flight.len() == IN_FLIGHT {
            sent += acknowledge(&mut in_flight, &mut next).await?;
            bar.set_position(sent);
        }
    }
    acknowledge(&mut in_flight, &mut next).await?;
    producer
        .flush(Timeout::After(Duration::from_secs(60)))
        .context("flushing the Kafka producer")?;
    Ok(next.into_iter().collect())
}

/// Waits for every pending delivery, recording the highest offset per partition.
async fn acknowledge(
    in_flight: &mut Vec<DeliveryFuture>,
    next: &mut BTreeMap<i32, i64>,
) -> anyhow::Result<u64> {
    let count = in_flight.len() as u64;
    for delivery in futures::future::join_all(in_flight.drain(..)).await {
        let delivered = delivery
            .context("the producer stopped before the event was acknowledged")?
            .map_err(|(e, _)| e)
            .context("producing an event")?;
        let entry = next.entry(delivered.partition).or_insert(0);
        *entry = (*entry).max(delivered.offset + 1);
    }
    Ok(count)
}

/// Creates the topic with `--partitions` unless it exists.
async fn ensure_topic(args: &GenerateArgs) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.kafka_brokers)
        .create()
        .context("cannot create the Kafka admin client")?;
    let topic = NewTopic::new(&args.topic, args.partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics([&topic], &options)
        .await
        .with_context(|| format!("cannot reach the Kafka broker at {}", args.kafka_brokers))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(KafkaError::AdminOp(code)).context(format!("creating topic {name}"));
            }
        }
    }
    Ok(())
}

/// (partition, next offset) pairs from a two-column query result.
pub(super) fn partition_offsets(batches: &[RecordBatch]) -> BTreeMap<i32, i64> {
    let mut out = BTreeMap::new();
    for batch in batches {
        let partitions = batch.column(0).as_any().downcast_ref::<Int32Array>();
        let offsets = batch.column(1).as_any().downcast_ref::<Int64Array>();
        if let (Some(partitions), Some(offsets)) = (partitions, offsets) {
            for i in 0..batch.num_rows() {
                if partitions.is_valid(i) && offsets.is_valid(i) {
                    out.insert(partitions.value(i), offsets.value(i));
                }
            }
        }
    }
    out
}
