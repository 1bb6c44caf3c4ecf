//! Materialised index snapshots through Flight SQL: `REFRESH INDEX` as an
//! update, as a query, as a prepared statement and as a Flight action;
//! `<view>_snapshot` equals the view at refresh time; `index_snapshots`; the
//! retention count (old versions' files vacuumed, time travel refused with the
//! readable range); leftovers of an interrupted refresh; a restart; time
//! travel with `index_at`; incremental refreshes after new and updated
//! transactions (only their rows recomputed, the snapshot still equal to the
//! view), and what makes a refresh full again; the upgrade of a warehouse
//! written in the layout before Delta Lake.

use arrow::array::{Array, StringArray};
use arrow_flight::Action;
use futures::TryStreamExt;
use recon_integration_tests::scale::{
    append_scale_transactions, append_status_updates, write_scale_warehouse,
};
use recon_integration_tests::{TestServer, delta, first_row, query, rows, status_of, table};
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

/// The data files in `view`'s folder are exactly those its readable refresh
/// versions use (nothing vacuumed too early, nothing left behind).
async fn assert_files_are_the_kept_versions(server: &TestServer, view: &str, kept: usize) {
    let root = server.warehouse.path();
    let used = delta::files_of_refreshes(root, view, kept).await;
    assert_eq!(delta::files_on_disk(root, view), used, "{view}");
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

    // index_snapshots: two refreshes of final_index (retention 2), the newest current.
    let listed = count(
        &mut client,
        "SELECT view, count(*) AS kept, sum(CASE WHEN current THEN 1 ELSE 0 END) AS current \
         FROM index_snapshots WHERE kind IN ('full', 'incremental') AND readable \
         GROUP BY view ORDER BY view",
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

    // Time travel: the first refresh's version, by number and by its time.
    let first = count(
        &mut client,
        "SELECT version, created_at FROM index_snapshots \
         WHERE view = 'final_index' AND kind = 'full' ORDER BY version LIMIT 1",
    )
    .await;
    let first_version: u64 = first_row(&first)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let at_first = format!("SELECT count(*) AS n FROM index_at('final_index', {first_version})");
    assert_eq!(count(&mut client, &at_first).await, table(&live), "{first}");
    assert_eq!(snapshot["version"].as_u64(), Some(first_version + 1));
    // The version current a moment after the first commit is the first one.
    let first_at = first_row(&first)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned();
    let at_time = count(
        &mut client,
        &format!(
            "SELECT count(*) AS n FROM index_at('final_index', \
               TIMESTAMP '{first_at}' + INTERVAL '1 millisecond')"
        ),
    )
    .await;
    assert_eq!(at_time, table(&live), "{first_at}");

    // A third refresh: the first version's files are vacuumed, and reading
    // it is refused with the versions that are readable.
    client
        .execute_update("REFRESH INDEX final_index FULL".into(), None)
        .await
        .unwrap();
    assert_files_are_the_kept_versions(&server, "final_index", 2).await;
    let mut raw = server.flight_client().await;
    let gone = status_of(&mut raw, &at_first).await.unwrap_err();
    assert_eq!(gone.code(), Code::InvalidArgument, "{gone}");
    assert!(
        gone.message().contains(&format!(
            "version {first_version} of final_index is not kept"
        )),
        "{gone}"
    );
    for bad in [
        "SELECT * FROM index_at('nope', 1)",
        "SELECT * FROM index_at('final_index')",
        "SELECT * FROM index_at('final_index', 'yesterday-ish')",
        "SELECT * FROM index_at('final_index', TIMESTAMP '2001-01-01 00:00:00')",
    ] {
        let err = status_of(&mut raw, bad).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}: {err}");
    }
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
    // What a refresh killed mid-write leaves: a data file no commit names.
    let leftover = server
        .warehouse
        .path()
        .join("output/final_index/part-00000-killed-c000.zstd.parquet");
    std::fs::write(&leftover, b"half a file").unwrap();
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
    assert_files_are_the_kept_versions(&server, "final_index", 3).await;
    server.stop().await;
}

#[tokio::test]
async fn a_foreign_delta_log_stops_only_that_views_refresh() {
    let server = server(3).await;
    let mut client = server.sql_client().await;
    for view in ["batch_index", "final_index"] {
        refresh(&mut client, view).await;
    }
    let warehouse = server.stop_keeping_warehouse().await;
    // final_index's log replaced by one that is not Delta's.
    let log = warehouse.path().join("output/final_index/_delta_log");
    std::fs::remove_dir_all(&log).unwrap();
    std::fs::create_dir(&log).unwrap();
    std::fs::write(
        log.join("00000000000000000000.json"),
        b"{\"not\": \"a Delta action\"}\nnot JSON at all\n",
    )
    .unwrap();

    // The server starts, and the other views keep refreshing.
    let server = TestServer::start_in(warehouse, |_| {}).await;
    let mut client = server.sql_client().await;
    let err = client
        .execute_update("REFRESH INDEX final_index".into(), None)
        .await
        .expect_err("a foreign log stops the refresh");
    let message = err.to_string();
    assert!(
        message.contains("the Delta log of output/final_index/ cannot be read"),
        "{message}"
    );
    for view in ["batch_index", "merchant_daily_kpi"] {
        client
            .execute_update(format!("REFRESH INDEX {view} FULL"), None)
            .await
            .unwrap_or_else(|e| panic!("{view}: {e}"));
    }
    let live = count(&mut client, "SELECT count(*) AS n FROM batch_index").await;
    let snap = count(
        &mut client,
        "SELECT count(*) AS n FROM batch_index_snapshot",
    )
    .await;
    assert_eq!(live, snap);
    // The broken view's table was left as it was, for its owner to repair.
    assert!(log.join("00000000000000000000.json").exists());
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

/// `REFRESH INDEX <view>` (incremental where it can be): the rows it wrote.
async fn refresh(
    client: &mut arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>,
    view: &str,
) -> i64 {
    client
        .execute_update(format!("REFRESH INDEX {view}"), None)
        .await
        .unwrap_or_else(|e| panic!("REFRESH INDEX {view}: {e}"))
}

async fn current_kind(
    client: &mut arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>,
    view: &str,
) -> String {
    let sql = format!("SELECT kind FROM index_snapshots WHERE current AND view = '{view}'");
    first_row(&count(client, &sql).await)
}

#[tokio::test]
async fn incremental_refresh_recomputes_only_changed_transactions() {
    let server = server(3).await;
    let mut client = server.sql_client().await;
    for view in ["batch_index", "final_index"] {
        refresh(&mut client, view).await;
        assert_eq!(current_kind(&mut client, view).await, "full");
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
        let written = refresh(&mut client, view).await;
        assert_eq!(current_kind(&mut client, view).await, "incremental");
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
        "incremental"
    );
    assert_eq!(difference(&mut client, "final_index").await, "0 0");
    // The version before the incremental one still has the old rows (the
    // updated transactions' earlier statuses, most not REFUNDED).
    let refreshes: Vec<u64> = delta::versions(server.warehouse.path(), "final_index")
        .await
        .into_iter()
        .filter(|v| v.refresh.is_some())
        .map(|v| v.version)
        .collect();
    let before = count(
        &mut client,
        &format!(
            "SELECT count(*) AS n FROM index_at('final_index', {}) \
             WHERE transaction_id IN ({updated_ids}) AND status <> 'REFUNDED'",
            refreshes[1]
        ),
    )
    .await;
    let before: i64 = first_row(&before).trim().parse().unwrap();
    assert!(before > 0, "{refreshes:?}");

    // An incremental version survives a restart.
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
    assert_eq!(current_kind(&mut client, "final_index").await, "full");
    assert_eq!(difference(&mut client, "final_index").await, "0 0");
    // FULL forces a full refresh.
    client
        .execute_update("REFRESH INDEX batch_index FULL".into(), None)
        .await
        .unwrap();
    assert_eq!(current_kind(&mut client, "batch_index").await, "full");
    assert_eq!(difference(&mut client, "batch_index").await, "0 0");
    server.stop().await;
}

#[tokio::test]
async fn a_warehouse_of_the_layout_before_delta_upgrades() {
    let server = server(3).await;
    let mut client = server.sql_client().await;
    let rows_now = query(&mut client, "SELECT * FROM final_index")
        .await
        .unwrap();
    let warehouse = server.stop_keeping_warehouse().await;
    // What recon wrote before Delta Lake: snapshot folders and a manifest
    // naming them, newest first.
    let dir = warehouse.path().join("output/final_index");
    let batch = arrow::compute::concat_batches(&rows_now[0].schema(), &rows_now).unwrap();
    for run in ["20261101T000000000Z-old1", "20261102T000000000Z-old2"] {
        std::fs::create_dir_all(dir.join(format!("snapshot-{run}"))).unwrap();
        recon_integration_tests::write_parquet(
            &dir.join(format!("snapshot-{run}/part-0.parquet")),
            &batch,
        );
    }
    let manifest = serde_json::json!({"snapshots": [
        {"view": "final_index", "run_id": "20261102T000000000Z-old2", "created_at_ms": 1,
         "rows": batch.num_rows(), "duration_ms": 1,
         "location": "output/final_index/snapshot-20261102T000000000Z-old2/",
         "files": ["part-0.parquet"]},
        {"view": "final_index", "run_id": "20261101T000000000Z-old1", "created_at_ms": 0,
         "rows": batch.num_rows(), "duration_ms": 1,
         "location": "output/final_index/snapshot-20261101T000000000Z-old1/",
         "files": ["part-0.parquet"]}
    ]});
    std::fs::write(dir.join("_manifest.json"), manifest.to_string()).unwrap();

    // The old snapshot is served until the first refresh.
    let server = TestServer::start_in(warehouse, |_| {}).await;
    let mut client = server.sql_client().await;
    assert_eq!(
        count(
            &mut client,
            "SELECT count(*) AS n FROM final_index_snapshot"
        )
        .await,
        count(&mut client, "SELECT count(*) AS n FROM final_index").await
    );
    assert_eq!(difference(&mut client, "final_index").await, "0 0");
    assert_eq!(current_kind(&mut client, "final_index").await, "legacy");

    // The first refresh writes the Delta table and removes the old layout.
    client
        .execute_update("REFRESH INDEX final_index".into(), None)
        .await
        .unwrap();
    assert_eq!(current_kind(&mut client, "final_index").await, "full");
    assert_eq!(difference(&mut client, "final_index").await, "0 0");
    let left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("snapshot-") || n == "_manifest.json")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_files_are_the_kept_versions(&server, "final_index", 3).await;
    server.stop().await;
}
