//! A refresh killed with SIGKILL leaves the previous snapshot readable and
//! complete: the `recon` binary refreshes `final_index` once, then, six times,
//! starts another refresh and is killed at a random moment inside it. After each
//! kill the manifest still names a snapshot whose files all exist; after the
//! restart `final_index_snapshot` has every row and `index_snapshots` names
//! the manifest's run. Even cycles kill at a random moment of the refresh, odd
//! ones just after the new snapshot's folder appears; at least one kill must
//! land while the new snapshot was being written (its half-written folder is
//! found beside the manifest), and the next successful refresh removes such
//! folders.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use arrow_flight::sql::client::FlightSqlServiceClient;
use rand::{Rng, SeedableRng};
use recon_integration_tests::scale::write_scale_warehouse;
use recon_integration_tests::{
    KillOnDrop, connect_when_listening, free_port, query, recon_serve, table,
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

fn snapshot_folders(warehouse: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(warehouse.join("output/final_index"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("snapshot-"))
        .collect();
    names.sort();
    names
}

/// (current run id, its files, folders the manifest does not name).
fn on_disk(warehouse: &Path) -> (String, Vec<String>, Vec<String>) {
    let dir = warehouse.join("output/final_index");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("_manifest.json")).unwrap()).unwrap();
    let current = &manifest["snapshots"][0];
    let run_id = current["run_id"].as_str().unwrap().to_owned();
    let location = current["location"].as_str().unwrap();
    let files: Vec<String> = current["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| format!("{location}{}", f.as_str().unwrap()))
        .collect();
    let named: Vec<String> = manifest["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["run_id"].as_str().unwrap().to_owned())
        .collect();
    let orphans = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("snapshot-") && !named.iter().any(|r| n.ends_with(r.as_str())))
        .collect();
    (run_id, files, orphans)
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
            // Just after the new snapshot's folder appears: mid-write.
            let known = snapshot_folders(warehouse.path());
            let deadline = Instant::now() + Duration::from_secs(60);
            while snapshot_folders(warehouse.path()) == known && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..20))).await;
        }
        server.0.kill().unwrap();
        server.0.wait().unwrap();
        refresh.abort();

        let (run_id, files, orphans) = on_disk(warehouse.path());
        for file in &files {
            assert!(
                warehouse.path().join(file).is_file(),
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
            "cycle {cycle}: {run} is not the manifest's {run_id}"
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
    let (_, _, orphans) = on_disk(warehouse.path());
    assert!(orphans.is_empty(), "left behind: {orphans:?}");
}
