//! Several servers in one consumer group (`--kafka-assignment group`) share a
//! topic and one warehouse: the group splits the partitions between them, each
//! answers for the whole topic (its own partitions live, the others' from their
//! persisted segments), a member that stops hands its partitions over, and a
//! restarted member rejoins. Afterwards the warehouse holds every produced
//! (partition, offset) once, as a server reading it shows.
//!
//! Not tested here: a member killed with SIGKILL. tansu 0.6.0 notices the
//! missed heartbeats but keeps assigning partitions to the dead member (and
//! does not form a group of static members, `group.instance.id`, at all), so
//! its partitions would never move. Exactly-once under SIGKILL is the same
//! segment/checkpoint code as the single server's (`kafka_crash.rs`); the
//! overlapping ranges a hand-over can leave are unit-tested in
//! `ingest::segments`.
//!
//! The servers are the `recon` binary, against a real tansu broker.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, BooleanArray};
use arrow::datatypes::{Int32Type, Int64Type};
use arrow_flight::sql::client::FlightSqlServiceClient;
use rdkafka::producer::FutureProducer;
use recon_integration_tests::{
    Broker, COUNTS, ReconProcess, counts, eventually, free_port, produce_events, query, recon_serve,
};
use tonic::transport::Channel;

const TOPIC: &str = "transactions_topic";
const PARTITIONS: i32 = 4;

/// A group member named `member` (no Kafka when `broker` is None).
fn start_member(warehouse: &Path, broker: Option<&str>, member: &str) -> ReconProcess {
    let port = free_port();
    let mut command = recon_serve(warehouse, port);
    if let Some(broker) = broker {
        command
            .args(["--kafka-brokers", broker])
            .args(["--kafka-assignment", "group", "--kafka-member", member])
            .args(["--kafka-flush-interval-secs", "1"])
            // Shorter than the 45 s default: the group notices a silent member sooner.
            .args([
                "--kafka-properties",
                "session.timeout.ms=6000,heartbeat.interval.ms=1000",
            ]);
    }
    ReconProcess::spawn(&mut command, port)
}

/// Produces events `from..to`, event `i` to partition `i % PARTITIONS`; returns
/// the acknowledged (partition, offset) pairs.
async fn produce(producer: &FutureProducer, from: usize, to: usize) -> BTreeSet<(i32, i64)> {
    produce_events(producer, TOPIC, from..to, |i| {
        Some(i32::try_from(i).expect("small") % PARTITIONS)
    })
    .await
}

/// The partitions the server consumes now.
async fn assigned(client: &mut FlightSqlServiceClient<Channel>) -> BTreeSet<i32> {
    let batches = query(client, "SELECT partition, assigned FROM ingest_status")
        .await
        .unwrap();
    let mut partitions = BTreeSet::new();
    for batch in batches {
        let ids = batch.column(0).as_primitive::<Int32Type>();
        let flags: &BooleanArray = batch.column(1).as_boolean();
        for row in 0..batch.num_rows() {
            if flags.value(row) && !ids.is_null(row) {
                partitions.insert(ids.value(row));
            }
        }
    }
    partitions
}

/// Waits until the servers' assignments are disjoint, cover every partition,
/// and (with several servers) none is empty.
async fn wait_for_split(clients: &mut [&mut FlightSqlServiceClient<Channel>]) {
    let all: BTreeSet<i32> = (0..PARTITIONS).collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut sets = Vec::new();
        for client in clients.iter_mut() {
            sets.push(assigned(client).await);
        }
        let total: usize = sets.iter().map(BTreeSet::len).sum();
        let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
        if union == all && total == all.len() && sets.iter().all(|s| !s.is_empty()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the group did not split the partitions: {sets:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn records(client: &mut FlightSqlServiceClient<Channel>) -> i64 {
    let batches = query(client, "SELECT sum(records) FROM ingest_status")
        .await
        .unwrap();
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

/// Every (partition, offset) a server shows in `transactions`.
async fn positions(client: &mut FlightSqlServiceClient<Channel>) -> BTreeSet<(i32, i64)> {
    let batches = query(
        client,
        "SELECT kafka_partition, kafka_offset FROM transactions",
    )
    .await
    .unwrap();
    let mut all = BTreeSet::new();
    for batch in batches {
        let partitions = batch.column(0).as_primitive::<Int32Type>();
        let offsets = batch.column(1).as_primitive::<Int64Type>();
        all.extend(
            partitions
                .values()
                .iter()
                .copied()
                .zip(offsets.values().iter().copied()),
        );
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_group_shares_the_topic_and_hands_partitions_over() {
    let broker = Broker::start();
    broker.create_topic(TOPIC, PARTITIONS).await;
    let warehouse = tempfile::tempdir().unwrap();
    let mut a = start_member(warehouse.path(), Some(&broker.address), "a");
    let mut b = start_member(warehouse.path(), Some(&broker.address), "b");
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    wait_for_split(&mut [&mut ca, &mut cb]).await;

    // Each consumes its share, and shows the whole topic.
    let producer = broker.producer();
    let mut acked = produce(&producer, 0, 400).await;
    eventually(&mut ca, COUNTS, &counts(400)).await;
    eventually(&mut cb, COUNTS, &counts(400)).await;
    let (ra, rb) = (records(&mut ca).await, records(&mut cb).await);
    assert!(
        ra > 0 && rb > 0 && ra + rb == 400,
        "split of the work: {ra} + {rb}"
    );

    // A member leaves; the other takes over its partitions.
    a.stop();
    acked.extend(produce(&producer, 400, 800).await);
    let deadline = Instant::now() + Duration::from_secs(90);
    while assigned(&mut cb).await.len() < PARTITIONS as usize {
        assert!(
            Instant::now() < deadline,
            "b never took over a's partitions"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eventually(&mut cb, COUNTS, &counts(800)).await;

    // The killed member comes back (same name, so the same checkpoint file).
    let mut a = start_member(warehouse.path(), Some(&broker.address), "a");
    let mut ca = a.client().await;
    wait_for_split(&mut [&mut ca, &mut cb]).await;
    acked.extend(produce(&producer, 800, 1000).await);
    eventually(&mut ca, COUNTS, &counts(1000)).await;
    eventually(&mut cb, COUNTS, &counts(1000)).await;
    assert_eq!(positions(&mut ca).await, acked);

    a.stop();
    b.stop();

    // What the group persisted, read back by a server without Kafka: every
    // produced position, once.
    let mut reader = start_member(warehouse.path(), None, "reader");
    let mut client = reader.client().await;
    eventually(&mut client, COUNTS, &counts(1000)).await;
    assert_eq!(positions(&mut client).await, acked);
    reader.stop();
}
