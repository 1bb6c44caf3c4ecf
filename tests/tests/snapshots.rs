//! Materialised index snapshots through Flight SQL: `REFRESH INDEX` as an
//! update, as a query, as a prepared statement and as a Flight action;
//! `<view>_snapshot` equals the view at refresh time; `index_snapshots`; the
//! retention count; leftovers of an interrupted refresh; a restart;
//! incremental refreshes after new and updated transactions (only their rows
//! recomputed, the snapshot still equal to the view), and what makes a refresh
//! full again.

use arrow::array::{Array, StringArray};
use arrow_flight::Action;
use futures::TryStreamExt;
use recon_integration_tests::scale::{
    append_scale_transactions, append_status_updates, write_scale_warehouse,
};
use recon_integration_tests::{TestServer, first_row, query, rows, table};
use tonic::Code;

const TRANSACTIONS: usize = 3_000;

async fn server(retention: usize) -> TestServer {
    let warehouse = tempfile::tempdir().expect("tempdir");
    write_scale_warehouse(warehouse.path(), 0, TRANSACTIONS, 7);
    TestServer::start_in(warehouse, |c| c.indexes.snapshot_retention = retention).await
}

async fn count(
    client: &mut arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>,
    sql: &str,
) -> String {
    table(&query(client, sql).await.expect(sql))
}

fn snapshot_folders(server: &TestServer, view: &str) -> Vec<String> {
    let dir = server.warehouse.path().join("output").join(view);
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
                .filter(|n| n.starts_with("snapshot-"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn refresh_as_update_query_prepared_and_action() {
    let server = server(2).await;
    let mut client = server.sql_client().await;

    // Before any refresh the snapshot table exists and is empty.
    let empty = query(&mut client, "SELECT * FROM final_index_snapshot")
        .await
        .unwrap();
    assert_eq!(rows(&empty), 0);

    // As an update: the count is the rows written, and equals the view's.
    let written = client
        .execute_update("REFRESH INDEX final_index".into(), None)
        .await
        .expect("refresh");
    let live = query(&mut client, "SELECT count(*) AS n FROM final_index")
        .await
        .unwrap();
    assert!(
        written > i64::try_from(TRANSACTIONS).unwrap() / 2,
        "{written}"
    );
    assert_eq!(
        table(&live),
        table(
            &query(
                &mut client,
                "SELECT count(*) AS n FROM final_index_snapshot"
            )
            .await
            .unwrap()
        )
    );
    // Same rows, all columns but the refresh timestamp.
    let columns = "transaction_id, merchant_id, user_id, amount, currency, status, discrepancy, \
        reconciliation_status, fraud_signal_id, fraud_score, inference_time, policy_flags, risk_label, \
        masked_user, final_status, processed_at";
    let differ = format!(
        "SELECT count(*) AS n FROM (SELECT {columns} FROM final_index EXCEPT ALL SELECT {columns} FROM final_index_snapshot)"
    );
    assert_eq!(
        count(&mut client, &differ).await,
        count(&mut client, "SELECT 0 AS n").await
    );

    // As a query: one row describing the snapshot.
    let described = query(&mut client, "refresh index batch_index;")
        .await
        .unwrap();
    assert_eq!(rows(&described), 1);
    let view = described[0].column_by_name("view").unwrap();
    let view = view.as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!(view.value(0), "batch_index");

    // As a prepared statement.
    let mut prepared = client
        .prepare("REFRESH INDEX merchant_daily_kpi".into(), None)
        .await
        .expect("prepare");
    let kpi_rows = prepared.execute_update().await.expect("prepared refresh");
    let live_kpi = query(&mut client, "SELECT count(*) AS n FROM merchant_daily_kpi")
        .await
        .unwrap();
    assert!(
        table(&live_kpi).contains(&kpi_rows.to_string()),
        "{kpi_rows} vs {}",
        table(&live_kpi)
    );

    // As a Flight action: JSON of the new snapshot (FULL: nothing changed,
    // so an incremental refresh would write no rows).
    let mut flight = server.flight_client().await;
    let results: Vec<_> = flight
        .do_action(Action::new("RefreshIndex", "final_index FULL"))
        .await
        .expect("action")
        .into_inner()
        .try_collect()
        .await
        .expect("results");
    let snapshot: serde_json::Value = serde_json::from_slice(&results[0].body).expect("json");
    assert_eq!(snapshot["view"], "final_index");
    assert_eq!(snapshot["rows"].as_i64(), Some(written));

    // index_snapshots: two kept for final_index (retention 2), the newest current.
    let listed = count(
        &mut client,
        "SELECT view, count(*) AS kept, sum(CASE WHEN current THEN 1 ELSE 0 END) AS current \
         FROM index_snapshots GROUP BY view ORDER BY view",
    )
    .await;
    assert!(
        listed.contains("| batch_index        | 1    | 1       |"),
        "{listed}"
    );
    assert!(
        listed.contains("| final_index        | 2    | 1       |"),
        "{listed}"
    );
    let current = count(
        &mut client,
        "SELECT run_id FROM index_snapshots WHERE view = 'final_index' AND current",
    )
    .await;
    assert!(
        current.contains(snapshot["run_id"].as_str().unwrap()),
        "{current}"
    );

    // A third refresh retires the oldest folder.
    client
        .execute_update("REFRESH INDEX final_index FULL".into(), None)
        .await
        .unwrap();
    assert_eq!(snapshot_folders(&server, "final_index").len(), 2);
    server.stop().await;
}

#[tokio::test]
async fn bad_refresh_statements_are_invalid_argument() {
    let server = server(3).await;
    let mut client = server.sql_client().await;
    for sql in [
        "REFRESH INDEX nope",
        "REFRESH final_index",
        "REFRESH INDEX final_index now",
        "REFRESH INDEX final_index FULL please",
    ] {
        let err = client.execute_update(sql.into(), None).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("expected REFRESH INDEX <view> [FULL]"),
            "{sql}: {err}"
        );
    }
    let mut flight = server.flight_client().await;
    let status = flight
        .do_action(Action::new("RefreshIndex", "nope"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    server.stop().await;
}

#[tokio::test]
async fn leftovers_are_removed_and_snapshots_survive_a_restart() {
    let server = server(3).await;
    let mut client = server.sql_client().await;
    client
        .execute_update("REFRESH INDEX final_index".into(), None)
        .await
        .unwrap();
    let before = count(
        &mut client,
        "SELECT run_id, rows FROM index_snapshots WHERE current AND view = 'final_index'",
    )
    .await;
    // What a refresh killed mid-write leaves: a folder the manifest does not name.
    let leftover = server
        .warehouse
        .path()
        .join("output/final_index/snapshot-killed");
    std::fs::create_dir_all(&leftover).unwrap();
    std::fs::write(leftover.join("part-0.parquet"), b"half a file").unwrap();
    assert_eq!(
        count(&mut client, "SELECT count(*) FROM final_index_snapshot")
            .await
            .lines()
            .count(),
        5
    );

    let warehouse = server.stop_keeping_warehouse().await;
    let server = TestServer::start_in(warehouse, |_| {}).await;
    let mut client = server.sql_client().await;
    let after = count(
        &mut client,
        "SELECT run_id, rows FROM index_snapshots WHERE current AND view = 'final_index'",
    )
    .await;
    assert_eq!(before, after);
    let live = count(&mut client, "SELECT count(*) AS n FROM final_index").await;
    let snap = count(
        &mut client,
        "SELECT count(*) AS n FROM final_index_snapshot",
    )
    .await;
    assert_eq!(live, snap);
    client
        .execute_update("REFRESH INDEX final_index FULL".into(), None)
        .await
        .unwrap();
    assert!(
        !leftover.exists(),
        "the next refresh removes what a killed one left"
    );
    assert_eq!(snapshot_folders(&server, "final_index").len(), 2);
    server.stop().await;
}

/// The rows of `view` minus those of its snapshot, and the other way round,
/// over every column but the refresh timestamp: "0 0" when they are equal.
async fn difference(
    client: &mut arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>,
    view: &str,
) -> String {
    let columns = match view {
        "batch_index" => {
            "transaction_id, merchant_id, user_id, amount, currency, status, statement_id, \
             posting_date, amount_posted, fee_charged, discrepancy, reconciliation_status"
        }
        _ => {
            "transaction_id, merchant_id, user_id, amount, currency, status, discrepancy, \
             reconciliation_status, fraud_signal_id, fraud_score, inference_time, policy_flags, \
             risk_label, masked_user, final_status, processed_at"
        }
    };
    let sql = format!(
        "SELECT (SELECT count(*) FROM (SELECT {columns} FROM {view} EXCEPT ALL \
           SELECT {columns} FROM {view}_snapshot)) AS missing, \
           (SELECT count(*) FROM (SELECT {columns} FROM {view}_snapshot EXCEPT ALL \
           SELECT {columns} FROM {view})) AS extra"
    );
    first_row(&count(client, &sql).await)
}

async fn current_kind(
    client: &mut arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>,
    view: &str,
) -> String {
    let sql = format!("SELECT kind, layers FROM index_snapshots WHERE current AND view = '{view}'");
    first_row(&count(client, &sql).await)
}

#[tokio::test]
async fn incremental_refresh_recomputes_only_changed_transactions() {
    let server = server(3).await;
    let mut client = server.sql_client().await;
    for view in ["batch_index", "final_index"] {
        client
            .execute_update(format!("REFRESH INDEX {view}"), None)
            .await
            .unwrap();
        assert_eq!(current_kind(&mut client, view).await, "full 1");
    }
    // 40 new transactions and a later event for 25 existing ones arrive.
    let warehouse = server.stop_keeping_warehouse().await;
    append_scale_transactions(warehouse.path(), TRANSACTIONS, 40, 9);
    let updated: Vec<usize> = (0..25).map(|i| i * 97).collect();
    append_status_updates(warehouse.path(), &updated, TRANSACTIONS + 40);
    let server = TestServer::start_in(warehouse, |_| {}).await;
    let mut client = server.sql_client().await;
    let updated_ids = updated
        .iter()
        .map(|i| format!("'TX-{i:010}'"))
        .collect::<Vec<_>>()
        .join(", ");
    for view in ["batch_index", "final_index"] {
        let written = client
            .execute_update(format!("REFRESH INDEX {view}"), None)
            .await
            .unwrap();
        assert_eq!(current_kind(&mut client, view).await, "incremental 2");
        // Exactly the changed transactions' rows were written.
        let changed = count(
            &mut client,
            &format!(
                "SELECT count(*) AS n FROM {view} WHERE transaction_id >= 'TX-{TRANSACTIONS:010}' \
                 OR transaction_id IN ({updated_ids})"
            ),
        )
        .await;
        assert!(
            changed.contains(&format!("| {written} ")),
            "{written} vs {changed}"
        );
        assert!(written >= 65, "{written}");
        assert_eq!(difference(&mut client, view).await, "0 0", "{view}");
        // The updated transactions' old rows are gone from the snapshot.
        let old = count(
            &mut client,
            &format!(
                "SELECT count(*) AS n FROM {view}_snapshot \
                 WHERE transaction_id IN ({updated_ids}) AND status <> 'REFUNDED'"
            ),
        )
        .await;
        assert!(old.contains("| 0 "), "{old}");
    }
    // Nothing new: an incremental refresh writes nothing and changes nothing.
    let written = client
        .execute_update("REFRESH INDEX final_index".into(), None)
        .await
        .unwrap();
    assert_eq!(written, 0);
    assert_eq!(
        current_kind(&mut client, "final_index").await,
        "incremental 3"
    );
    assert_eq!(difference(&mut client, "final_index").await, "0 0");

    // A layered snapshot survives a restart.
    let warehouse = server.stop_keeping_warehouse().await;
    let server = TestServer::start_in(warehouse, |_| {}).await;
    let mut client = server.sql_client().await;
    assert_eq!(difference(&mut client, "final_index").await, "0 0");

    // New statement files change a batch input: the next refresh is full.
    recon_integration_tests::write_parquet(
        &server
            .warehouse
            .path()
            .join("batch_parquet_data/aggregator_statements.parquet/extra.parquet"),
        &recon_integration_tests::sample_statements(),
    );
    client
        .execute_update("REFRESH INDEX final_index".into(), None)
        .await
        .unwrap();
    assert_eq!(current_kind(&mut client, "final_index").await, "full 1");
    assert_eq!(difference(&mut client, "final_index").await, "0 0");
    // FULL forces a full refresh.
    client
        .execute_update("REFRESH INDEX batch_index FULL".into(), None)
        .await
        .unwrap();
    assert_eq!(current_kind(&mut client, "batch_index").await, "full 1");
    assert_eq!(difference(&mut client, "batch_index").await, "0 0");
    server.stop().await;
}
