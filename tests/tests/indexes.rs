//! The index views on a small hand-checked data set: events from a real broker,
//! the sample warehouse's statements and policies, and ML signals.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use arrow_flight::sql::client::FlightSqlServiceClient;
use rdkafka::producer::FutureRecord;
use recon_integration_tests::{
    Broker, TestServer, event_json, query, sample_signals, table, write_parquet,
};
use tonic::transport::Channel;

async fn eventually(client: &mut FlightSqlServiceClient<Channel>, sql: &str, expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = table(&query(client, sql).await.unwrap());
        if got == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sql}\nexpected:\n{expected}\ngot:\n{got}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Expected values are Python's: `round(2.675 - 2.6, 2) == 0.07` (the
/// difference is 0.07499999999999973), `round(95 * 1.1, 2) == 104.5`.
#[tokio::test]
async fn views_compute_the_hand_checked_rows() {
    let broker = Broker::start();
    broker.create_topic("transactions_topic", 1).await;
    let address = broker.address.clone();
    let server = TestServer::start(move |c| c.kafka.brokers = Some(address)).await;
    write_parquet(
        &server
            .warehouse
            .path()
            .join("batch_parquet_data/ml_fraud_signals.parquet"),
        &sample_signals(),
    );
    let producer = broker.producer();
    let (t0, t1) = ("2026-11-24T10:00:00", "2026-11-24T11:00:00");
    for payload in [
        event_json("T-1", "MCH-A1", 90.0, "PENDING", t0),
        event_json("T-1", "MCH-A1", 90.0, "APPROVED", t1),
        event_json("T-2", "MCH-B2", 2.6, "DECLINED", t0),
        event_json("T-5", "MCH-A1", 5.0, "PENDING", t0),
    ] {
        producer
            .send(
                FutureRecord::<str, str>::to("transactions_topic").payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let mut client = server.sql_client().await;
    eventually(
        &mut client,
        "SELECT transaction_id, status, statement_id, amount_posted, discrepancy, reconciliation_status \
         FROM batch_index ORDER BY transaction_id",
        "+----------------+----------+--------------+---------------+-------------+-----------------------+\n\
         | transaction_id | status   | statement_id | amount_posted | discrepancy | reconciliation_status |\n\
         +----------------+----------+--------------+---------------+-------------+-----------------------+\n\
         | T-1            | APPROVED | STMT-1       | 100.0         | 10.0        | MATCHED               |\n\
         | T-2            | DECLINED | STMT-2       | 2.675         | 0.07        | MATCHED               |\n\
         | T-5            | PENDING  |              |               | 0.0         | UNMATCHED             |\n\
         +----------------+----------+--------------+---------------+-------------+-----------------------+",
    )
    .await;
    eventually(
        &mut client,
        "SELECT transaction_id, fraud_score, policy_flags, risk_label, masked_user, final_status \
         FROM final_index ORDER BY transaction_id",
        "+----------------+-------------+--------------+--------------+-------------+--------------+\n\
         | transaction_id | fraud_score | policy_flags | risk_label   | masked_user | final_status |\n\
         +----------------+-------------+--------------+--------------+-------------+--------------+\n\
         | T-1            | 0.81        | KYC          | HIGH_RISK    | US*****     | APPROVED     |\n\
         | T-2            |             | KYC          | REQUIRES_KYC | US*****     | DECLINED     |\n\
         | T-5            |             | KYC          | REQUIRES_KYC | US*****     | DISCREPANCY  |\n\
         +----------------+-------------+--------------+--------------+-------------+--------------+",
    )
    .await;
    eventually(
        &mut client,
        "SELECT merchant_id, day, tx_count, daily_value, unmatched_count, total_discrepancy, merchant_kpi \
         FROM merchant_daily_kpi ORDER BY merchant_id",
        "+-------------+------------+----------+-------------+-----------------+-------------------+--------------+\n\
         | merchant_id | day        | tx_count | daily_value | unmatched_count | total_discrepancy | merchant_kpi |\n\
         +-------------+------------+----------+-------------+-----------------+-------------------+--------------+\n\
         | MCH-A1      | 2026-11-24 | 2        | 95.0        | 1               | 10.0              | 104.5        |\n\
         | MCH-B2      | 2026-11-24 | 1        | 2.6         | 0               | 0.07              | 2.6          |\n\
         +-------------+------------+----------+-------------+-----------------+-------------------+--------------+",
    )
    .await;
    server.stop().await;
}
