//! The index views on a small hand-checked data set: events from a real broker
//! (a transaction with two events, one without statements), statements (one
//! transaction with two, one statement without a transaction), policies (global,
//! merchant-specific, inactive) and ML signals (one for an unknown transaction).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use rdkafka::producer::FutureRecord;
use recon_integration_tests::{
    Broker, TestServer, batch, event_json, eventually, floats, sample_signals, strings,
    write_parquet,
};

/// Expected values are Python's: `round(2.675 - 2.6, 2) == 0.07` (the
/// difference is 0.07499999999999973), `round(95 * 1.1, 2) == 104.5`.
#[tokio::test]
async fn views_compute_the_hand_checked_rows() {
    let broker = Broker::start();
    broker.create_topic("transactions_topic", 1).await;
    let address = broker.address.clone();
    let server = TestServer::start(move |c| c.kafka.brokers = Some(address)).await;
    let data = server.warehouse.path().join("batch_parquet_data");
    write_parquet(&data.join("ml_fraud_signals.parquet"), &sample_signals());
    // T-1 has two statements; STMT-9 belongs to no transaction.
    write_parquet(
        &data.join("aggregator_statements.parquet"),
        &batch(vec![
            (
                "statement_id",
                strings(&[
                    Some("STMT-1"),
                    Some("STMT-1b"),
                    Some("STMT-2"),
                    Some("STMT-9"),
                ]),
            ),
            (
                "transaction_id",
                strings(&[Some("T-1"), Some("T-1"), Some("T-2"), Some("T-404")]),
            ),
            ("posting_date", strings(&[Some("2026-11-24"); 4])),
            (
                "amount_posted",
                floats(&[Some(100.0), Some(95.0), Some(2.675), Some(7.0)]),
            ),
            (
                "fee_charged",
                floats(&[Some(1.5), Some(1.0), Some(0.05), Some(0.1)]),
            ),
        ]),
    );
    // A global KYC policy, an AML policy for MCH-B2 only, an inactive BLACKLIST for MCH-A1.
    write_parquet(
        &data.join("policy_data.parquet"),
        &batch(vec![
            (
                "policy_id",
                strings(&[Some("POL-1"), Some("POL-2"), Some("POL-3")]),
            ),
            (
                "policy_type",
                strings(&[Some("KYC"), Some("BLACKLIST"), Some("AML")]),
            ),
            ("rule_description", strings(&[None, None, None])),
            (
                "active_flag",
                std::sync::Arc::new(arrow::array::BooleanArray::from(vec![true, false, true])),
            ),
            (
                "merchant_id",
                strings(&[None, Some("MCH-A1"), Some("MCH-B2")]),
            ),
        ]),
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
         FROM batch_index ORDER BY transaction_id, statement_id",
        "+----------------+----------+--------------+---------------+-------------+-----------------------+\n\
         | transaction_id | status   | statement_id | amount_posted | discrepancy | reconciliation_status |\n\
         +----------------+----------+--------------+---------------+-------------+-----------------------+\n\
         | T-1            | APPROVED | STMT-1       | 100.0         | 10.0        | MATCHED               |\n\
         | T-1            | APPROVED | STMT-1b      | 95.0          | 5.0         | MATCHED               |\n\
         | T-2            | DECLINED | STMT-2       | 2.675         | 0.07        | MATCHED               |\n\
         | T-5            | PENDING  |              |               | 0.0         | UNMATCHED             |\n\
         +----------------+----------+--------------+---------------+-------------+-----------------------+",
    )
    .await;
    eventually(
        &mut client,
        "SELECT transaction_id, fraud_score, policy_flags, risk_label, masked_user, final_status \
         FROM final_index ORDER BY transaction_id, risk_label",
        "+----------------+-------------+--------------+--------------+-------------+--------------+\n\
         | transaction_id | fraud_score | policy_flags | risk_label   | masked_user | final_status |\n\
         +----------------+-------------+--------------+--------------+-------------+--------------+\n\
         | T-1            | 0.81        | KYC          | HIGH_RISK    | US*****     | APPROVED     |\n\
         | T-1            | 0.81        | KYC          | HIGH_RISK    | US*****     | APPROVED     |\n\
         | T-2            |             | AML,KYC      | REQUIRES_KYC | US*****     | DECLINED     |\n\
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
         | MCH-A1      | 2026-11-24 | 2        | 95.0        | 1               | 15.0              | 104.5        |\n\
         | MCH-B2      | 2026-11-24 | 1        | 2.6         | 0               | 0.07              | 2.6          |\n\
         +-------------+------------+----------+-------------+-----------------+-------------------+--------------+",
    )
    .await;
    server.stop().await;
}
