//! Against S3-compatible storage (moto): ingest with the warehouse on `s3://`
//! (segments and checkpoint written with create-only puts, recovered after a
//! restart), and a broker restart in the middle of a stream (tansu keeps its
//! topics in S3 too), after which ingest resumes by itself.
//!
//! recon runs as its binary here, with the S3 settings in its environment.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use arrow_flight::sql::client::FlightSqlServiceClient;
use rdkafka::producer::FutureRecord;
use std::process::{Child, Command, Stdio};

use recon_integration_tests::{
    Broker, S3Server, connect_when_listening, event_json, free_port, query, recon_binary, table,
};
use tonic::transport::Channel;

const TOPIC: &str = "transactions_topic";
const COUNTS: &str =
    "SELECT count(*) AS n, count(DISTINCT (kafka_partition, kafka_offset)) AS d FROM transactions";

async fn produce(broker: &Broker, from: usize, to: usize) {
    let producer = broker.producer();
    for i in from..to {
        let payload = event_json(
            &format!("T-{i}"),
            "MCH-A1",
            1.0,
            "PENDING",
            "2026-11-24T10:00:00",
        );
        producer
            .send(
                FutureRecord::<str, str>::to(TOPIC).payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

async fn wait_for(client: &mut FlightSqlServiceClient<Channel>, n: usize) {
    let expected = format!("| {n} | {n} |");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = table(&query(client, COUNTS).await.unwrap());
        if got.contains(&expected) {
            return;
        }
        assert!(Instant::now() < deadline, "expected {n} events, got\n{got}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `recon serve` (the binary) with the warehouse on S3.
struct Recon {
    child: Child,
    url: String,
}

impl Recon {
    fn start(s3: &S3Server, broker: &str) -> Self {
        let port = free_port();
        let child = Command::new(recon_binary())
            .args(["serve", "--warehouse", "s3://recon-warehouse/prod"])
            .args(["--flight-addr", &format!("127.0.0.1:{port}")])
            .args(["--http-addr", "127.0.0.1:0"])
            .args([
                "--kafka-brokers",
                broker,
                "--kafka-flush-interval-secs",
                "1",
            ])
            .envs(s3.env())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn client(&mut self) -> FlightSqlServiceClient<Channel> {
        connect_when_listening(&self.url, &mut self.child, Duration::from_secs(30)).await
    }

    fn stop(mut self) {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(
            self.child.wait().unwrap().success(),
            "recon exits 0 on SIGTERM"
        );
    }
}

#[tokio::test]
async fn s3_warehouse_and_a_broker_restart_mid_stream() {
    let s3 = S3Server::start(&["tansu-log", "recon-warehouse"]);
    let port = free_port();
    let broker = Broker::start_on(port, "s3://tansu-log/", &s3.env());
    broker.create_topic(TOPIC, 2).await;
    let mut recon = Recon::start(&s3, &broker.address);
    let mut client = recon.client().await;
    produce(&broker, 0, 100).await;
    wait_for(&mut client, 100).await;

    // The broker goes away mid-stream and comes back on the same port and storage.
    broker.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let broker = Broker::start_on(port, "s3://tansu-log/", &s3.env());
    produce(&broker, 100, 150).await;
    wait_for(&mut client, 150).await;

    // A restart of recon recovers everything from the S3 warehouse.
    recon.stop();
    let mut recon = Recon::start(&s3, &broker.address);
    let mut client = recon.client().await;
    wait_for(&mut client, 150).await;
    produce(&broker, 150, 160).await;
    wait_for(&mut client, 160).await;
    recon.stop();
}
