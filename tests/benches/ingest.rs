//! Kafka ingest benchmark (DESIGN §5; not a test). On one tansu broker:
//!
//! 1. produce N seed-shaped transaction messages (~200 bytes, JSON);
//! 2. a bare rdkafka consumer that only counts them: its rate is the ceiling;
//! 3. `recon serve` (release) consumes the same topic from the beginning into
//!    queryable Arrow (and Parquet segments): rate until `count(*)` of
//!    `transactions` is N;
//! 4. freshness: 2,000 more messages at ~1,000/s while a client polls
//!    `count(*)`; per message, produce → visible, p50/p99;
//! 5. recon's peak RSS, and the CPU seconds it used while ingesting (messages
//!    per CPU-second is the per-core rate, independent of the broker's speed).
//!
//! `scripts/bench-ingest.sh` builds and runs it. `BENCH_MESSAGES` (default
//! 2_000_000). Without `--bench` (under `cargo test --benches`) it only checks
//! that it can produce and count a few messages, without starting recon.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench fails loudly

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use arrow_flight::sql::client::FlightSqlServiceClient;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use recon_integration_tests::{
    Broker, KillOnDrop, connect_when_listening, event_json, free_port, query, recon_binary,
};
use tonic::transport::Channel;

const TOPIC: &str = "transactions_topic";
const PARTITIONS: i32 = 2;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(if full { 2_000_000 } else { 1_000 });
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let broker = Broker::start();
    runtime.block_on(broker.create_topic(TOPIC, PARTITIONS));
    let started = Instant::now();
    let producer = fast_producer(&broker.address);
    runtime.block_on(produce(&producer, 0, n));
    println!(
        "produced {n} messages in {:.1} s ({:.0} k msgs/s)",
        started.elapsed().as_secs_f64(),
        n as f64 / started.elapsed().as_secs_f64() / 1e3
    );
    let bare = bare_consume(&broker.address, n);
    println!(
        "bare rdkafka consumer: {:.0} k msgs/s",
        n as f64 / bare.as_secs_f64() / 1e3
    );
    if !full {
        return;
    }
    let warehouse = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut recon = KillOnDrop(
        Command::new(recon_binary())
            .arg("serve")
            .arg("--warehouse")
            .arg(warehouse.path())
            .args(["--flight-addr", &format!("127.0.0.1:{port}")])
            .args(["--http-addr", "127.0.0.1:0"])
            .args(["--kafka-brokers", &broker.address])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start recon (cargo build --release -p recon-server)"),
    );
    runtime.block_on(async {
        let url = format!("http://127.0.0.1:{port}");
        let mut client = connect_when_listening(&url, &mut recon.0, Duration::from_secs(60)).await;
        let cpu_before = cpu_seconds(recon.0.id());
        let started = Instant::now();
        wait_for_records(&mut client, n).await;
        let took = started.elapsed();
        let cpu = cpu_seconds(recon.0.id()) - cpu_before;
        let rate = n as f64 / took.as_secs_f64();
        let bare_rate = n as f64 / bare.as_secs_f64();
        println!(
            "recon ingest: {:.0} k msgs/s ({:.2}x the bare consumer); {:.1} CPU s used = {:.0} k msgs per CPU-second",
            rate / 1e3,
            rate / bare_rate,
            cpu,
            n as f64 / cpu / 1e3
        );
        freshness(&producer, &mut client, n).await;
    });
    let rss = std::fs::read_to_string(format!("/proc/{}/status", recon.0.id()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_owned)
        });
    println!("recon peak RSS: {}", rss.unwrap_or_else(|| "n/a".into()));
}

/// User + system CPU seconds a process has used (from /proc; 100 ticks/s).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields after the name start at "state" (field 3): utime is field 14, stime 15.
    (ticks(11) + ticks(12)) / 100.0
}

fn fast_producer(address: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", address)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap()
}

/// Produces messages `from..to` (keys = transaction ids), waiting for all acks.
async fn produce(producer: &FutureProducer, from: usize, to: usize) {
    let mut inflight = Vec::with_capacity(10_000);
    for i in from..to {
        let id = format!("{i:08x}-7d1e-4c2a-9b3f-{i:012x}");
        let payload = event_json(
            &id,
            "MCH-A001",
            10.0 + (i % 1000) as f64,
            "APPROVED",
            "2026-11-24T10:00:00.123456",
        );
        let record = FutureRecord::to(TOPIC).key(&id).payload(&payload);
        inflight.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
        if inflight.len() == 10_000 {
            for f in inflight.drain(..) {
                f.await.unwrap().map_err(|(e, _)| e).unwrap();
            }
        }
    }
    for f in inflight {
        f.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
}

/// Counts `n` messages from the beginning of every partition; the time it took.
fn bare_consume(address: &str, n: usize) -> Duration {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", address)
        .set("group.id", "bench-bare")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "50")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        list.add_partition_offset(TOPIC, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).unwrap();
    let started = Instant::now();
    let mut count = 0;
    while count < n {
        if let Some(message) = consumer.poll(Duration::from_secs(5)) {
            message.unwrap();
            count += 1;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "bare consumer stalled at {count}"
        );
    }
    started.elapsed()
}

async fn count(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> i64 {
    let batches = query(client, sql).await.unwrap();
    batches
        .first()
        .filter(|b| b.num_rows() > 0)
        .map_or(0, |b| b.column(0).as_primitive::<Int64Type>().value(0))
}

async fn wait_for_records(client: &mut FlightSqlServiceClient<Channel>, n: usize) {
    // Queryable rows, not just consumed records.
    let sql = "SELECT count(*) FROM transactions";
    let deadline = Instant::now() + Duration::from_secs(900);
    while count(client, sql).await < n as i64 {
        assert!(
            Instant::now() < deadline,
            "recon did not ingest {n} messages in 900 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Produces 2,000 messages at ~1,000/s; a poller records when each becomes visible.
async fn freshness(
    producer: &FutureProducer,
    client: &mut FlightSqlServiceClient<Channel>,
    base: usize,
) {
    const EXTRA: usize = 2_000;
    let sent_at = std::sync::Arc::new(std::sync::Mutex::new(vec![None::<Instant>; EXTRA]));
    let times = std::sync::Arc::clone(&sent_at);
    let producer = producer.clone();
    let sender = tokio::spawn(async move {
        for i in 0..EXTRA {
            let id = format!("fresh-{i}");
            let payload = event_json(&id, "MCH-A001", 1.0, "PENDING", "2026-11-24T10:00:00");
            let record = FutureRecord::to(TOPIC).key(&id).payload(&payload);
            times.lock().unwrap()[i] = Some(Instant::now());
            producer
                .send(record, Duration::from_secs(10))
                .await
                .map_err(|(e, _)| e)
                .unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    let mut latencies = Vec::with_capacity(EXTRA);
    let mut seen = 0usize;
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen < EXTRA {
        let visible = (count(client, "SELECT count(*) FROM transactions").await as usize)
            .saturating_sub(base);
        let now = Instant::now();
        {
            let sent = sent_at.lock().unwrap();
            for t in sent[seen..visible.min(EXTRA)].iter().flatten() {
                latencies.push(now.duration_since(*t));
            }
        }
        seen = seen.max(visible.min(EXTRA));
        assert!(Instant::now() < deadline, "freshness run stalled at {seen}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sender.await.unwrap();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "freshness (produce → visible to a query, {} messages at ~1k/s): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        latencies.len(),
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
}
