//! Exactly once under kill -9: while a producer writes steadily, the `recon`
//! binary is killed with SIGKILL at random moments and restarted, ten times.
//! Afterwards the (partition, offset) pairs in `output/partial_stream_index`
//! are exactly the produced ones — none missing, none twice.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use recon_integration_tests::{Broker, free_port, produce_events, recon_binary};

const TOPIC: &str = "transactions_topic";
const CYCLES: usize = 10;

fn start_recon(warehouse: &Path, broker: &str) -> Child {
    Command::new(recon_binary())
        .arg("serve")
        .arg("--warehouse")
        .arg(warehouse)
        .args(["--flight-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--http-addr", "127.0.0.1:0"])
        .args(["--kafka-brokers", broker])
        .args([
            "--kafka-flush-interval-secs",
            "1",
            "--kafka-flush-rows",
            "300",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Every (partition, offset) in the committed segment files.
fn persisted_positions(warehouse: &Path) -> Vec<(i32, i64)> {
    let dir = warehouse.join("output/partial_stream_index");
    let mut positions = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let file = std::fs::File::open(entry.unwrap().path()).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch: RecordBatch = batch.unwrap();
            let partitions = batch
                .column_by_name("kafka_partition")
                .unwrap()
                .as_primitive::<Int32Type>();
            let offsets = batch
                .column_by_name("kafka_offset")
                .unwrap()
                .as_primitive::<Int64Type>();
            positions.extend(
                partitions
                    .values()
                    .iter()
                    .copied()
                    .zip(offsets.values().iter().copied()),
            );
        }
    }
    positions
}

/// A small deterministic generator for the kill moments.
struct Lcg(u64);

impl Lcg {
    fn next_ms(&mut self, from: u64, to: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        from + (self.0 >> 33) % (to - from)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_steady_produce_loses_and_duplicates_nothing() {
    let broker = Broker::start();
    broker.create_topic(TOPIC, 3).await;
    let warehouse = tempfile::tempdir().unwrap();

    // Steady produce in the background until told to stop; remembers what was acknowledged.
    let producing = Arc::new(AtomicBool::new(true));
    let producer = broker.producer();
    let flag = Arc::clone(&producing);
    let produced = tokio::spawn(async move {
        let mut acked = BTreeSet::new();
        let mut i = 0;
        while flag.load(Ordering::Relaxed) {
            acked.extend(produce_events(&producer, TOPIC, i..i + 50, |_| None).await);
            i += 50;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        acked
    });

    let mut rng = Lcg(0x5EED);
    for _ in 0..CYCLES {
        let mut child = start_recon(warehouse.path(), &broker.address);
        tokio::time::sleep(Duration::from_millis(rng.next_ms(300, 2500))).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    producing.store(false, Ordering::Relaxed);
    let acked = produced.await.unwrap();
    assert!(acked.len() > 1000, "only {} records produced", acked.len());

    // A last clean run drains the topic and flushes; SIGTERM, then compare.
    let mut child = start_recon(warehouse.path(), &broker.address);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let checkpoint = warehouse
            .path()
            .join("output/_checkpoints/ingest-transactions_topic.json");
        let done = std::fs::read(&checkpoint).ok().is_some_and(|bytes| {
            let cp: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let next = &cp["next_offsets"];
            (0..3).all(|p| {
                let last = acked.iter().filter(|(q, _)| *q == p).map(|(_, o)| *o).max();
                last.is_none_or(|last| next[p.to_string()].as_i64().is_some_and(|n| n > last))
            })
        });
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ingest did not catch up within 60 s"
        );
    }
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());

    let positions = persisted_positions(warehouse.path());
    let distinct: BTreeSet<(i32, i64)> = positions.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        positions.len(),
        "duplicated (partition, offset) pairs"
    );
    assert_eq!(
        distinct, acked,
        "persisted positions differ from the produced ones"
    );
}
