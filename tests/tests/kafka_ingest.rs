//! Kafka ingest against a real broker (tansu): produced events become queryable
//! through Flight SQL, malformed records land in `transactions_rejects` with a
//! reason, and `transactions_latest` keeps the latest event per transaction.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use recon_integration_tests::{
    Broker, COUNTS, TestServer, counts, event_json, eventually, produce, query, table,
};

#[tokio::test]
async fn produced_events_are_queryable_and_bad_records_rejected() {
    let broker = Broker::start();
    let topic = "transactions_topic";
    broker.create_topic(topic, 2).await;
    let address = broker.address.clone();
    let server = TestServer::start(move |c| c.kafka.brokers = Some(address)).await;
    let mut client = server.sql_client().await;

    let t0 = "2026-11-24T10:00:00";
    let t1 = "2026-11-24T10:05:00";
    produce(
        &broker,
        topic,
        &[
            (
                Some("T-1"),
                event_json("T-1", "MCH-A1", 10.0, "PENDING", t0).into_bytes(),
            ),
            (
                Some("T-2"),
                event_json("T-2", "MCH-B2", 20.5, "APPROVED", t0).into_bytes(),
            ),
            (
                Some("T-1"),
                event_json("T-1", "MCH-A1", 10.0, "APPROVED", t1).into_bytes(),
            ),
            (Some("bad-1"), b"{not json".to_vec()),
            (Some("bad-2"), br#"{"transaction_id": "T-9"}"#.to_vec()),
            (
                None,
                event_json("T-3", "MCH-A1", 1.0, "LOST", t0).into_bytes(),
            ),
        ],
    )
    .await;

    eventually(
        &mut client,
        "SELECT transaction_id, status, amount FROM transactions_latest ORDER BY 1",
        "+----------------+----------+--------+\n\
         | transaction_id | status   | amount |\n\
         +----------------+----------+--------+\n\
         | T-1            | APPROVED | 10.0   |\n\
         | T-2            | APPROVED | 20.5   |\n\
         +----------------+----------+--------+",
    )
    .await;
    eventually(
        &mut client,
        "SELECT count(*) AS events, count(DISTINCT (kafka_partition, kafka_offset)) AS distinct_positions FROM transactions",
        "+--------+--------------------+\n\
         | events | distinct_positions |\n\
         +--------+--------------------+\n\
         | 3      | 3                  |\n\
         +--------+--------------------+",
    )
    .await;
    eventually(
        &mut client,
        "SELECT key, \
                CASE WHEN error LIKE '%missing field%' THEN 'missing' \
                     WHEN error LIKE 'invalid transaction JSON%' THEN 'json' \
                     WHEN error LIKE 'status%' THEN 'status' ELSE error END AS reason \
         FROM transactions_rejects ORDER BY reason",
        "+-------+---------+\n\
         | key   | reason  |\n\
         +-------+---------+\n\
         | bad-1 | json    |\n\
         | bad-2 | missing |\n\
         |       | status  |\n\
         +-------+---------+",
    )
    .await;
    eventually(
        &mut client,
        "SELECT count(*) AS partitions, sum(records) AS records, sum(rejects) AS rejects, \
                sum(lag) AS lag FROM ingest_status",
        "+------------+---------+---------+-----+\n\
         | partitions | records | rejects | lag |\n\
         +------------+---------+---------+-----+\n\
         | 2          | 6       | 3       | 0   |\n\
         +------------+---------+---------+-----+",
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_restart_loses_nothing_and_duplicates_nothing() {
    let broker = Broker::start();
    let topic = "transactions_topic";
    broker.create_topic(topic, 3).await;
    let batch = |from: usize, to: usize| -> Vec<(Option<&'static str>, Vec<u8>)> {
        (from..to)
            .map(|i| {
                let id = format!("T-{i}");
                (
                    None,
                    event_json(&id, "MCH-A1", i as f64, "PENDING", "2026-11-24T10:00:00")
                        .into_bytes(),
                )
            })
            .collect()
    };
    let address = broker.address.clone();
    let with_broker = move |c: &mut recon_server::config::Config| {
        c.kafka.brokers = Some(address.clone());
        c.kafka.flush_interval_secs = 1;
        // A small bound: ingest must flush (and pause when it cannot) to go on.
        c.kafka.max_unflushed_rows = 64;
    };
    let server = TestServer::start(with_broker.clone()).await;
    let mut client = server.sql_client().await;
    produce(&broker, topic, &batch(0, 300)).await;
    eventually(&mut client, COUNTS, &counts(300)).await;
    let warehouse = server.stop_keeping_warehouse().await;
    let segments = std::fs::read_dir(warehouse.path().join("output/partial_stream_index"))
        .unwrap()
        .count();
    assert!(segments >= 1, "the tail was flushed to Parquet segments");

    // Events produced while the server is down are picked up after the restart.
    produce(&broker, topic, &batch(300, 400)).await;
    let server = TestServer::start_in(warehouse, with_broker).await;
    let mut client = server.sql_client().await;
    eventually(&mut client, COUNTS, &counts(400)).await;
    produce(&broker, topic, &batch(400, 450)).await;
    eventually(&mut client, COUNTS, &counts(450)).await;
    server.stop().await;
}

/// A topic created after the server started: its partitions are found by the
/// periodic discovery. (A partition added to a running topic is tested in
/// `s3_and_broker_restart.rs`, where tansu keeps its metadata in S3.)
#[tokio::test]
async fn partitions_that_appear_while_running_are_consumed() {
    let broker = Broker::start();
    let topic = "transactions_topic";
    let address = broker.address.clone();
    let server = TestServer::start(move |c| c.kafka.brokers = Some(address)).await;
    let mut client = server.sql_client().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    broker.create_topic(topic, 2).await;
    let producer = broker.producer();
    recon_integration_tests::produce_events(&producer, topic, 0..2, |i| i32::try_from(i).ok())
        .await;
    eventually(
        &mut client,
        "SELECT kafka_partition, count(*) AS n FROM transactions GROUP BY 1 ORDER BY 1",
        "+-----------------+---+\n\
         | kafka_partition | n |\n\
         +-----------------+---+\n\
         | 0               | 1 |\n\
         | 1               | 1 |\n\
         +-----------------+---+",
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn an_unreachable_broker_is_reported_and_sql_keeps_working() {
    let closed = recon_integration_tests::free_port();
    let server =
        TestServer::start(move |c| c.kafka.brokers = Some(format!("127.0.0.1:{closed}"))).await;
    let mut client = server.sql_client().await;
    eventually(
        &mut client,
        "SELECT partition IS NULL AS waiting, last_error IS NOT NULL AS reported FROM ingest_status",
        "+---------+----------+\n| waiting | reported |\n+---------+----------+\n| true    | true     |\n+---------+----------+",
    )
    .await;
    let merchants = query(&mut client, "SELECT count(*) FROM merchants")
        .await
        .unwrap();
    assert!(table(&merchants).contains("| 3 "), "{}", table(&merchants));
    server.stop().await;
}
