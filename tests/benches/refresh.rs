//! Index refresh benchmark (DESIGN §4; not a test). For each scale (default
//! 1 M and 5 M transactions, `BENCH_SCALES=1000000,5000000`):
//!
//! 1. a seeded warehouse ([`recon_integration_tests::scale`]): the transactions
//!    as persisted ingest segments, statements (≈80 % matched), ML signals
//!    (≈90 %), merchants and policies, all Parquet;
//! 2. `recon serve` (release) over it; after a first, untimed refresh of each
//!    view, which makes it load its tables into memory and create the views'
//!    Delta tables (their times printed apart: an always-on server pays this
//!    once), `REFRESH INDEX … FULL` of `batch_index`, `final_index`,
//!    `merchant_daily_kpi` in turn, each timed from the client;
//! 3. DuckDB (`scripts/duckdb_refresh.py` in the bench venv) computing the same
//!    SQL from the same files to Parquet with the same compression, in the same
//!    run and on the same cores; steps 2 and 3 alternate for `BENCH_ROUNDS`
//!    rounds (default 3) and the medians are printed, with the ratio
//!    recon / DuckDB (≤ 1.0 = recon faster; each round's times go to stderr);
//! 4. at the largest scale, 10 000 more transactions arrive (as ingest segments;
//!    the server is restarted to see them, then warmed up by an untimed query)
//!    and `batch_index` and `final_index` are refreshed again — incrementally,
//!    from the snapshots of step 2 — next to a forced full refresh
//!    (`REFRESH INDEX final_index FULL`) in the same run, as a ratio; then a
//!    later event for each of the 10 000 most recent original transactions, and
//!    the incremental refreshes again, with the data files each commit added and
//!    removed (what part of the Delta table an incremental refresh rewrites);
//! 5. `SELECT count(*)` and a full scan (all rows and columns over Flight SQL)
//!    of `final_index_snapshot` after the full refreshes and after the
//!    incremental ones (reads of a table with more, rewritten files).
//!
//! `scripts/bench-refresh.sh` builds and runs it (`BENCH_KEEP_WAREHOUSE=DIR` keeps
//! a copy of the data set). Without `--bench` (under
//! `cargo test --benches`) it only writes and checks a tiny warehouse.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench fails loudly

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use arrow_flight::sql::client::FlightSqlServiceClient;
use recon_integration_tests::scale::{
    append_scale_transactions, append_status_updates, write_scale_warehouse,
};
use recon_integration_tests::{KillOnDrop, connect_when_listening, free_port, recon_serve};
use tonic::transport::Channel;

const VIEWS: [&str; 3] = ["batch_index", "final_index", "merchant_daily_kpi"];
const ADDED: usize = 10_000;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if !full {
        let dir = tempfile::tempdir().unwrap();
        write_scale_warehouse(dir.path(), 0, 1_000, 1);
        assert!(dir.path().join("output/partial_stream_index").is_dir());
        return;
    }
    let scales: Vec<usize> = std::env::var("BENCH_SCALES")
        .unwrap_or_else(|_| "1000000,5000000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .replace('_', "")
                .parse()
                .expect("BENCH_SCALES: numbers")
        })
        .collect();
    let python = std::env::var("BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let rounds_wanted: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3)
        .max(1);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    println!("| transactions | view | rows | recon s | DuckDB s | recon/DuckDB |");
    println!("|---|---|---|---|---|---|");
    for (i, &n) in scales.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        write_scale_warehouse(dir.path(), 0, n, 42);
        if let Ok(keep) = std::env::var("BENCH_KEEP_WAREHOUSE") {
            // For profiling by hand: a copy of the data set that outlives the run.
            let status = Command::new("cp")
                .arg("-r")
                .arg(dir.path())
                .arg(&keep)
                .status();
            assert!(status.is_ok_and(|s| s.success()), "cp to {keep}");
        }
        eprintln!(
            "wrote {n} transactions in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        // Rounds alternate recon and DuckDB on the same cores; the medians
        // are compared (the machines are shared and noisy).
        let (child, mut client) = runtime.block_on(start_warmed_up(dir.path(), &VIEWS));
        let mut rounds: Vec<(Vec<(i64, f64)>, serde_json::Value)> = Vec::new();
        for _ in 0..rounds_wanted {
            let recon = runtime.block_on(refresh_full(&mut client, &VIEWS));
            rounds.push((recon, duckdb(&python, dir.path())));
        }
        let reads_before = runtime.block_on(snapshot_reads(&mut client));
        drop(client);
        drop(child); // stopped before the incremental part starts its own server
        let mut total = (0.0, 0.0);
        for (v, view) in VIEWS.iter().enumerate() {
            let rows = rounds[0].0[v].0;
            let peer_rows = rounds[0].1[view]["rows"].as_i64().unwrap();
            assert_eq!(
                rows, peer_rows,
                "{view}: recon and DuckDB disagree on the row count"
            );
            let seconds = median(rounds.iter().map(|r| r.0[v].1).collect());
            let peer = median(
                rounds
                    .iter()
                    .map(|r| r.1[view]["seconds"].as_f64().unwrap())
                    .collect(),
            );
            total = (total.0 + seconds, total.1 + peer);
            println!(
                "| {n} | {view} | {rows} | {seconds:.2} | {peer:.2} | {:.2} |",
                seconds / peer
            );
        }
        println!(
            "| {n} | all three | | {:.2} | {:.2} | {:.2} |",
            total.0,
            total.1,
            total.0 / total.1
        );
        for (r, (recon, duck)) in rounds.iter().enumerate() {
            let times: Vec<String> = VIEWS
                .iter()
                .zip(recon)
                .map(|(view, (_, s))| {
                    format!(
                        "{view} {s:.2}/{:.2}",
                        duck[view]["seconds"].as_f64().unwrap()
                    )
                })
                .collect();
            eprintln!("round {}: recon/DuckDB s: {}", r + 1, times.join(", "));
        }
        if i + 1 == scales.len() {
            print_reads("after the full refreshes", reads_before);
            append_scale_transactions(dir.path(), n, ADDED, 43);
            let statements = [
                "REFRESH INDEX batch_index",
                "REFRESH INDEX final_index",
                "REFRESH INDEX final_index FULL",
            ];
            let (after, _) = runtime.block_on(run_after_warm_up(dir.path(), &statements));
            println!(
                "\n| after {ADDED} new transactions at {n} | kind, files added, files removed | rows written | s |"
            );
            println!("|---|---|---|---|");
            for (statement, (kind, rows, seconds)) in statements.iter().zip(&after) {
                println!("| `{statement}` | {kind} | {rows} | {seconds:.2} |");
            }
            println!(
                "| incremental / full (final_index) | | | {:.3} |",
                after[1].2 / after[2].2
            );
            // Then a later event (a status change) for each of the ADDED most
            // recent of the original transactions: their rows are replaced.
            let recent: Vec<usize> = (n - ADDED..n).collect();
            append_status_updates(dir.path(), &recent, n + ADDED);
            let statements = ["REFRESH INDEX batch_index", "REFRESH INDEX final_index"];
            let (after, reads_after) = runtime.block_on(run_after_warm_up(dir.path(), &statements));
            println!(
                "\n| after {ADDED} updated transactions at {n} | kind, files added, files removed | rows written | s |"
            );
            println!("|---|---|---|---|");
            for (statement, (kind, rows, seconds)) in statements.iter().zip(&after) {
                println!("| `{statement}` | {kind} | {rows} | {seconds:.2} |");
            }
            print_reads(
                "after the incremental refreshes of new and updated transactions",
                reads_after,
            );
        }
    }
}

/// Starts recon over `warehouse` and makes it ready for timed refreshes of `views`.
async fn start_warmed_up(
    warehouse: &Path,
    views: &[&str],
) -> (KillOnDrop, FlightSqlServiceClient<Channel>) {
    let port = free_port();
    let mut child = KillOnDrop(
        recon_serve(warehouse, port)
            .spawn()
            .expect("start recon (cargo build --release -p recon-server)"),
    );
    let mut client: FlightSqlServiceClient<Channel> = connect_when_listening(
        &format!("http://127.0.0.1:{port}"),
        &mut child.0,
        Duration::from_secs(120),
    )
    .await;
    // An always-on server has its tables in memory and its views' Delta tables
    // created: a first, untimed refresh of each view makes it load the tables
    // (Parquet → Arrow, the latest-event index) and create the table (the one
    // write that goes through delta-rs's write operation, which sets the
    // schema); their times are printed apart, as the cold start.
    for view in views {
        let started = Instant::now();
        client
            .execute_update(format!("REFRESH INDEX {view}"), None)
            .await
            .expect("warm-up refresh");
        eprintln!(
            "cold start: first refresh of {view} took {:.2} s (not in the table)",
            started.elapsed().as_secs_f64()
        );
    }
    (child, client)
}

/// `REFRESH INDEX <view> FULL` of `views` in turn: (rows, seconds) each.
async fn refresh_full(
    client: &mut FlightSqlServiceClient<Channel>,
    views: &[&str],
) -> Vec<(i64, f64)> {
    let mut out = Vec::new();
    for view in views {
        let started = Instant::now();
        let rows = client
            .execute_update(format!("REFRESH INDEX {view} FULL"), None)
            .await
            .expect("refresh");
        out.push((rows, started.elapsed().as_secs_f64()));
    }
    out
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

/// Times `SELECT count(*)` and a full scan (`EXPLAIN ANALYZE SELECT *`: every
/// row and column read in the server, none sent) of `final_index_snapshot`:
/// (count s, scan s, rows).
async fn snapshot_reads(client: &mut FlightSqlServiceClient<Channel>) -> Reads {
    let started = Instant::now();
    let count = recon_integration_tests::query(client, "SELECT count(*) FROM final_index_snapshot")
        .await
        .expect("count the snapshot");
    let seconds = started.elapsed().as_secs_f64();
    let rows = recon_integration_tests::first_row(&recon_integration_tests::table(&count))
        .parse()
        .expect("a count");
    let started = Instant::now();
    recon_integration_tests::query(client, "EXPLAIN ANALYZE SELECT * FROM final_index_snapshot")
        .await
        .expect("scan the snapshot");
    (seconds, started.elapsed().as_secs_f64(), rows)
}

/// [`snapshot_reads`]' figures.
type Reads = (f64, f64, usize);

/// Prints [`snapshot_reads`]' figures as a table.
fn print_reads(when: &str, (count, scan, rows): Reads) {
    println!("\n| `final_index_snapshot` {when} | count(*) s | full scan s | rows scanned |");
    println!("|---|---|---|---|");
    println!("| | {count:.3} | {scan:.2} | {rows} |");
}

/// Starts recon over `warehouse`, warms it up with an untimed query over every
/// index (tables loaded, latest-event index built), then runs `statements` in
/// turn: (snapshot kind, rows written, seconds) each.
async fn run_after_warm_up(
    warehouse: &Path,
    statements: &[&str],
) -> (Vec<(String, i64, f64)>, Reads) {
    let port = free_port();
    let mut child = KillOnDrop(recon_serve(warehouse, port).spawn().expect("start recon"));
    let mut client: FlightSqlServiceClient<Channel> = connect_when_listening(
        &format!("http://127.0.0.1:{port}"),
        &mut child.0,
        Duration::from_secs(120),
    )
    .await;
    for _ in 0..2 {
        let started = Instant::now();
        recon_integration_tests::query(
            &mut client,
            "SELECT (SELECT count(*) FROM final_index) + (SELECT count(*) FROM batch_index)",
        )
        .await
        .expect("warm-up query");
        eprintln!(
            "warm-up query: {:.2} s (not in the table)",
            started.elapsed().as_secs_f64()
        );
    }
    let mut out = Vec::new();
    for statement in statements {
        let started = Instant::now();
        let rows = client
            .execute_update((*statement).to_owned(), None)
            .await
            .expect("refresh");
        let seconds = started.elapsed().as_secs_f64();
        let view = statement.split_whitespace().nth(2).unwrap();
        let kind = recon_integration_tests::query(
            &mut client,
            &format!(
                "SELECT kind, files_added, files_removed FROM index_snapshots \
                 WHERE current AND view = '{view}'"
            ),
        )
        .await
        .unwrap();
        let kind = recon_integration_tests::first_row(&recon_integration_tests::table(&kind));
        out.push((kind, rows, seconds));
    }
    (out, snapshot_reads(&mut client).await)
}

fn duckdb(python: &str, warehouse: &Path) -> serde_json::Value {
    let out = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/duckdb_refresh.py");
    let output = Command::new(python)
        .arg(script)
        .arg(warehouse)
        .arg(out.path())
        .output()
        .expect("run python (BENCH_PYTHON) with duckdb");
    assert!(
        output.status.success(),
        "duckdb_refresh.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("duckdb_refresh.py prints JSON")
}
