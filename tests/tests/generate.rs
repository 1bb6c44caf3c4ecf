//! `recon-cli generate` end to end at a small scale: a real tansu broker, the
//! server consuming it, the generator producing events, appending batch tables
//! through bulk ingest and POSTing signals; then the seed's referential ratios
//! are checked through SQL (≈80 % of statements and ≈90 % of signals refer to a
//! real transaction) along with the exact counts.

use std::process::Command;

use recon_integration_tests::{Broker, TestServer, query, recon_binary, rows};

const TRANSACTIONS: usize = 3_000;
const STATEMENTS: usize = 2_000;
const SIGNALS: usize = 2_000;

/// The single number a query returns, as f64.
async fn number(server: &TestServer, sql: &str) -> f64 {
    let batches = query(&mut server.sql_client().await, sql).await.expect(sql);
    let column = arrow::compute::cast(batches[0].column(0), &arrow::datatypes::DataType::Float64)
        .expect("a number");
    column
        .as_any()
        .downcast_ref::<arrow::array::Float64Array>()
        .expect("float64")
        .value(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_data_keeps_the_seed_ratios() {
    let broker = Broker::start();
    let address = broker.address.clone();
    let warehouse = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(warehouse, move |c| c.kafka.brokers = Some(address)).await;
    let port = server.url.rsplit(':').next().unwrap().to_owned();
    let cli = recon_binary().with_file_name("recon-cli");
    let args = [
        "--port".to_owned(),
        port,
        "generate".into(),
        "--quiet".into(),
        "--wait".into(),
        format!("--transactions={TRANSACTIONS}"),
        format!("--statements={STATEMENTS}"),
        format!("--signals={SIGNALS}"),
        "--signals-per-post=700".into(),
        "--rows-per-file=900".into(),
        "--merchants=25".into(),
        "--policies=12".into(),
        "--status-updates=0.1".into(),
        format!("--kafka-brokers={}", broker.address),
        format!("--http-url={}", server.http_url),
    ];
    let out = tokio::task::spawn_blocking(move || Command::new(cli).args(args).output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("generated"), "{stderr}");

    // Counts: every transaction once in the latest view, the status updates as
    // extra events of the same transactions, every batch row stored.
    let count = |t: &str| format!("SELECT count(*) FROM {t}");
    assert_eq!(
        number(&server, &count("transactions_latest")).await,
        TRANSACTIONS as f64
    );
    let events = number(&server, &count("transactions")).await;
    assert!(
        (TRANSACTIONS as f64 * 1.07..=TRANSACTIONS as f64 * 1.13).contains(&events),
        "{events} events"
    );
    let updated = number(
        &server,
        "SELECT count(*) FROM transactions_latest t WHERE t.event_time > \
         (SELECT min(e.event_time) FROM transactions e WHERE e.transaction_id = t.transaction_id)",
    )
    .await;
    assert_eq!(
        updated,
        events - TRANSACTIONS as f64,
        "updates are later events"
    );
    assert_eq!(
        number(&server, &count("aggregator_statements")).await,
        STATEMENTS as f64
    );
    assert_eq!(
        number(&server, &count("ml_fraud_signals")).await,
        SIGNALS as f64
    );
    assert_eq!(number(&server, &count("merchants")).await, 25.0);
    assert_eq!(number(&server, &count("policy_data")).await, 12.0);
    assert_eq!(number(&server, &count("transactions_rejects")).await, 0.0);

    // The seed's ratios, measured through the same joins the indexes use.
    let matched = |table: &str| {
        format!(
            "SELECT avg(CASE WHEN t.transaction_id IS NULL THEN 0.0 ELSE 1.0 END) \
             FROM {table} x LEFT JOIN transactions_latest t ON x.transaction_id = t.transaction_id"
        )
    };
    let matched_statements = number(&server, &matched("aggregator_statements")).await;
    assert!(
        (0.76..=0.84).contains(&matched_statements),
        "{matched_statements}"
    );
    let matched_signals = number(&server, &matched("ml_fraud_signals")).await;
    assert!(
        (0.87..=0.93).contains(&matched_signals),
        "{matched_signals}"
    );
    // Matched statements mostly post the exact amount; some are off.
    let exact = number(
        &server,
        "SELECT avg(CASE WHEN discrepancy = 0 THEN 1.0 ELSE 0.0 END) FROM batch_index \
         WHERE reconciliation_status = 'MATCHED'",
    )
    .await;
    assert!((0.6..=0.8).contains(&exact), "{exact}");
    // Every merchant a transaction names exists; some policies are global.
    assert_eq!(
        number(
            &server,
            "SELECT count(*) FROM transactions_latest t LEFT JOIN merchants m \
             ON t.merchant_id = m.merchant_id WHERE m.merchant_id IS NULL",
        )
        .await,
        0.0
    );
    let batches = query(
        &mut server.sql_client().await,
        "SELECT policy_id FROM policy_data WHERE merchant_id IS NULL",
    )
    .await
    .unwrap();
    assert!(rows(&batches) > 0);
    server.stop().await;
    broker.kill();
}
