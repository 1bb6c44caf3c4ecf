//! A refresh killed with SIGKILL leaves the previous snapshot readable and
//! complete: the `recon` binary refreshes `final_index` once, then, six times,
//! starts another refresh and is killed at a random moment inside it. After each
//! kill the newest Delta commit is still a refresh's whose data files all exist;
//! after the restart `final_index_snapshot` has every row and `index_snapshots`
//! names that commit's run. Even cycles kill at a random moment of the refresh,
//! odd ones just after the new version's first data file appears; at least one
//! kill must land while data files were being written (files no commit names
//! are found beside the table), and the next successful refresh vacuums them.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use arrow_flight::sql::client::FlightSqlServiceClient;
use rand::{Rng, SeedableRng};
use recon_integration_tests::scale::write_scale_warehouse;
use recon_integration_tests::{
    KillOnDrop, connect_when_listening, delta, free_port, query, recon_serve, table,
};
use tonic::transport::Channel;

const TRANSACTIONS: usize = 200_000;
const CYCLES: usize = 6;

async fn start(warehouse: &Path) -> (KillOnDrop, FlightSqlServiceClient<Channel>) {
    let port = free_port();
    let mut child = recon_serve(warehouse, port)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = connect_when_listening(
        &format!("http://127.0.0.1:{port}"),
        &mut child,
        Duration::from_secs(60),
    )
    .await;
    (KillOnDrop(child), client)
}

/// (current run id, its files, data files no version in the log uses).
async fn on_disk(warehouse: &Path) -> (String, Vec<String>, Vec<String>) {
    let (version, run_id) = delta::current_refresh(warehouse, "final_index").await;
    let files = delta::files_of(warehouse, "final_index", version).await;
    let used = delta::files_of_refreshes(warehouse, "final_index", usize::MAX).await;
    let orphans = delta::files_on_disk(warehouse, "final_index")
        .difference(&used)
        .cloned()
        .collect();
    (run_id, files.into_iter().collect(), orphans)
}

async fn snapshot_state(client: &mut FlightSqlServiceClient<Channel>) -> (String, String) {
    let count = table(
        &query(client, "SELECT count(*) AS n FROM final_index_snapshot")
            .await
            .unwrap(),
    );
    let run = table(
        &query(
            client,
            "SELECT run_id FROM index_snapshots WHERE view = 'final_index' AND current",
        )
        .await
        .unwrap(),
    );
    (count, run)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_refresh_keeps_the_previous_snapshot() {
    let warehouse = tempfile::tempdir().unwrap();
    write_scale_warehouse(warehouse.path(), 0, TRANSACTIONS, 11);
    let (server, mut client) = start(warehouse.path()).await;
    let started = Instant::now();
    let rows = client
        .execute_update("REFRESH INDEX final_index".into(), None)
        .await
        .unwrap();
    let refresh_time = started.elapsed();
    assert!(rows >= i64::try_from(TRANSACTIONS).unwrap(), "{rows}");
    let expected_count = snapshot_state(&mut client).await.0;
    assert!(
        expected_count.contains(&rows.to_string()),
        "{expected_count}"
    );
    drop(server);

    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut killed_mid_write = 0;
    for cycle in 0..CYCLES {
        let (mut server, mut client) = start(warehouse.path()).await;
        let refresh = tokio::spawn(async move {
            // FULL: with nothing new, an incremental refresh would write no folder.
            let _ = client
                .execute_update("REFRESH INDEX final_index FULL".into(), None)
                .await;
        });
        if cycle % 2 == 0 {
            // Any moment of the refresh.
            tokio::time::sleep(refresh_time.mul_f64(rng.random_range(0.1..1.0))).await;
        } else {
            // Just after the new version's first data file appears: mid-write.
            let known = delta::files_on_disk(warehouse.path(), "final_index");
            let deadline = Instant::now() + Duration::from_secs(60);
            while delta::files_on_disk(warehouse.path(), "final_index") == known
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..20))).await;
        }
        server.0.kill().unwrap();
        server.0.wait().unwrap();
        refresh.abort();

        let (run_id, files, orphans) = on_disk(warehouse.path()).await;
        for file in &files {
            assert!(
                warehouse
                    .path()
                    .join("output/final_index")
                    .join(file)
                    .is_file(),
                "cycle {cycle}: {file} missing"
            );
        }
        if !orphans.is_empty() {
            killed_mid_write += 1;
        }
        let (_server, mut client) = start(warehouse.path()).await;
        let (count, run) = snapshot_state(&mut client).await;
        assert_eq!(count, expected_count, "cycle {cycle}: snapshot incomplete");
        assert!(
            run.contains(&run_id),
            "cycle {cycle}: {run} is not the newest commit's {run_id}"
        );
    }
    assert!(
        killed_mid_write > 0,
        "no kill landed while a snapshot was being written (refresh took {refresh_time:?})"
    );

    let (_server, mut client) = start(warehouse.path()).await;
    client
        .execute_update("REFRESH INDEX final_index".into(), None)
        .await
        .unwrap();
    let (_, _, orphans) = on_disk(warehouse.path()).await;
    assert!(orphans.is_empty(), "left behind: {orphans:?}");
}
