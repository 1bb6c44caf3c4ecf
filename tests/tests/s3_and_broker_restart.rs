//! Against S3-compatible storage (moto): ingest with the warehouse on `s3://`
//! (segments and checkpoint written with create-only puts, recovered after a
//! restart), and a broker restart in the middle of a stream (tansu keeps its
//! topics in S3 too), after which ingest resumes by itself; and a partition
//! added to the topic while recon runs, which the partition discovery finds.
//!
//! recon runs as its binary here, with the S3 settings in its environment.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use arrow_flight::sql::client::FlightSqlServiceClient;

use object_store::ObjectStoreExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use recon_integration_tests::{
    Broker, COUNTS, ReconProcess, S3Server, counts, eventually, eventually_within, free_port,
    produce_events, recon_serve,
};
use tonic::transport::Channel;

const TOPIC: &str = "transactions_topic";

async fn produce(broker: &Broker, from: usize, to: usize) {
    produce_events(&broker.producer(), TOPIC, from..to, |_| None).await;
}

/// Waits (up to 60 s: a broker restart is in the way) until `transactions`
/// holds `n` events, each once.
async fn wait_for(client: &mut FlightSqlServiceClient<Channel>, n: usize) {
    eventually_within(client, COUNTS, &counts(n), Duration::from_secs(60)).await;
}

/// `recon serve` (the binary) with the warehouse on S3.
fn start_recon(s3: &S3Server, broker: &str) -> ReconProcess {
    let port = free_port();
    ReconProcess::spawn(
        recon_serve("s3://recon-warehouse/prod", port)
            .args(["--kafka-brokers", broker])
            .args(["--kafka-flush-interval-secs", "1"])
            .envs(s3.env()),
        port,
    )
}

#[tokio::test]
async fn s3_warehouse_and_a_broker_restart_mid_stream() {
    let s3 = S3Server::start(&["tansu-log", "recon-warehouse"]);
    let port = free_port();
    let broker = Broker::start_on(port, "s3://tansu-log/", &s3.env());
    broker.create_topic(TOPIC, 2).await;
    let mut recon = start_recon(&s3, &broker.address);
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
    let mut recon = start_recon(&s3, &broker.address);
    let mut client = recon.client().await;
    wait_for(&mut client, 150).await;
    produce(&broker, 150, 160).await;
    wait_for(&mut client, 160).await;
    recon.stop();
}

/// Adds a partition to `topic` in the running broker. tansu 0.6.0 has no
/// CreatePartitions API (rdkafka's `create_partitions` gets UnsupportedFeature),
/// so the partition is added where tansu records it: the topic's
/// `num_partitions` in its cluster metadata (`meta.json` in its bucket), which the
/// running broker reads again (conditional GET) on every metadata request.
async fn add_partition(s3: &S3Server, bucket: &str, topic: &str) -> i64 {
    let store = AmazonS3Builder::new()
        .with_endpoint(&s3.endpoint)
        .with_allow_http(true)
        .with_bucket_name(bucket)
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .with_region("us-east-1")
        .build()
        .unwrap();
    let path = Path::from("clusters/tansu_cluster/meta.json");
    let bytes = store.get(&path).await.unwrap().bytes().await.unwrap();
    let mut meta: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let partitions = &mut meta["topics"][topic]["topic"]["num_partitions"];
    let added = partitions
        .as_i64()
        .expect("num_partitions in tansu's meta.json")
        + 1;
    *partitions = added.into();
    store
        .put(&path, serde_json::to_vec(&meta).unwrap().into())
        .await
        .unwrap();
    added
}

/// How many partitions the broker reports for the topic.
fn partition_count(producer: &rdkafka::producer::FutureProducer) -> usize {
    use rdkafka::producer::Producer;
    producer
        .client()
        .fetch_metadata(Some(TOPIC), Duration::from_secs(5))
        .map(|m| m.topics().iter().map(|t| t.partitions().len()).sum())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_partition_added_while_running_is_consumed() {
    let s3 = S3Server::start(&["tansu-log", "recon-warehouse"]);
    let broker = Broker::start_on(free_port(), "s3://tansu-log/", &s3.env());
    broker.create_topic(TOPIC, 1).await;
    let mut recon = start_recon(&s3, &broker.address);
    let mut client = recon.client().await;
    produce(&broker, 0, 10).await;
    wait_for(&mut client, 10).await;

    assert_eq!(add_partition(&s3, "tansu-log", TOPIC).await, 2);
    // tansu caches what it reads from its store for 5 s.
    let producer = broker.producer();
    let deadline = Instant::now() + Duration::from_secs(30);
    while partition_count(&producer) < 2 {
        assert!(
            Instant::now() < deadline,
            "the broker never showed the new partition"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    produce_events(&producer, TOPIC, 10..25, |_| Some(1)).await;
    eventually(
        &mut client,
        "SELECT kafka_partition, count(*) AS n, min(kafka_offset) AS first FROM transactions GROUP BY 1 ORDER BY 1",
        "+-----------------+----+-------+\n\
         | kafka_partition | n  | first |\n\
         +-----------------+----+-------+\n\
         | 0               | 10 | 0     |\n\
         | 1               | 15 | 0     |\n\
         +-----------------+----+-------+",
    )
    .await;
    recon.stop();
}

/// Index snapshots on S3 are Delta commits written with create-only puts: two
/// refreshes of one view racing from the same version cannot both win — the
/// first write of a table, then two overwrites of it. The log keeps one entry
/// per version and the table reads as the winner's rows.
#[tokio::test]
async fn concurrent_snapshot_commits_on_s3_cannot_both_win() {
    use datafusion::prelude::SessionContext;
    use recon_server::snapshots::delta::{IndexTable, RefreshRecord};
    use recon_server::warehouse::Warehouse;

    let s3 = S3Server::start(&["recon-warehouse"]);
    let store = AmazonS3Builder::new()
        .with_endpoint(&s3.endpoint)
        .with_allow_http(true)
        .with_bucket_name("recon-warehouse")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .with_region("us-east-1")
        .build()
        .unwrap();
    let store: std::sync::Arc<dyn object_store::ObjectStore> = std::sync::Arc::new(store);
    let warehouse = Warehouse::with_store(
        url::Url::parse("s3://recon-warehouse/race/").unwrap(),
        std::sync::Arc::clone(&store),
    );
    let ctx = SessionContext::new();
    warehouse.register(ctx.runtime_env().as_ref());
    let index = IndexTable::new(&warehouse, "final_index");
    let write = |writer: i64| {
        let (ctx, index) = (ctx.clone(), index.clone());
        async move {
            let plan = ctx
                .sql(&format!(
                    "SELECT value AS n, {writer} AS writer FROM generate_series(1, 300000)"
                ))
                .await
                .unwrap()
                .into_unoptimized_plan();
            let record = RefreshRecord {
                run_id: format!("writer-{writer}"),
                kind: "full".into(),
                started_at_ms: 0,
                inputs: None,
            };
            index.write(&ctx.state(), plan, None, &record).await
        }
    };
    for round in 0..2 {
        let (a, b) = tokio::join!(write(2 * round), write(2 * round + 1));
        let won: Vec<i64> = [(2 * round, &a), (2 * round + 1, &b)]
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(w, _)| *w)
            .collect();
        assert_eq!(won.len(), 1, "round {round}: {a:?} / {b:?}");
        let lost = a.err().or(b.err()).unwrap().to_string();
        assert!(lost.contains("another writer committed"), "{lost}");
        let history = index.history().await.unwrap();
        let versions: Vec<u64> = history.iter().map(|v| v.version).collect();
        assert_eq!(versions, (0..=round as u64).rev().collect::<Vec<_>>());
        let winner = history[0].refresh.as_ref().unwrap().run_id.clone();
        assert_eq!(winner, format!("writer-{}", won[0]));
        // The current version is the winner's rows only.
        let table = index.load().await.unwrap().unwrap();
        let provider = IndexTable::provider(&table, &ctx.state()).await.unwrap();
        let writers = ctx
            .read_table(provider)
            .unwrap()
            .aggregate(
                vec![datafusion::prelude::col("writer")],
                vec![datafusion::functions_aggregate::count::count_all()],
            )
            .unwrap()
            .collect()
            .await
            .unwrap();
        let printed = arrow::util::pretty::pretty_format_batches(&writers)
            .unwrap()
            .to_string();
        assert_eq!(printed.lines().count(), 5, "{printed}");
        assert!(printed.contains(&format!("| {} ", won[0])), "{printed}");
    }
    // What makes a commit exclusive: the store refuses a second create of a
    // version's log entry (moto honours S3's If-None-Match).
    let first = Path::from("race/output/final_index/_delta_log/00000000000000000000.json");
    let again = store
        .put_opts(
            &first,
            object_store::PutPayload::from_static(b"{}"),
            object_store::PutMode::Create.into(),
        )
        .await;
    assert!(
        matches!(again, Err(object_store::Error::AlreadyExists { .. })),
        "{again:?}"
    );
}
