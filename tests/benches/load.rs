//! Concurrent-client benchmark (issue: query isolation; not a test): 32 Flight
//! SQL clients each send 100 queries — point lookups on `transactions_latest`,
//! a GROUP BY over `aggregator_statements`, a join of statements and signals,
//! and one of the five functions — against one `recon serve` binary over a
//! seeded warehouse. Prints the error count (it must be 0), the query rate and
//! the latency p50/p90/p99/max per kind and overall.
//!
//! Run with `cargo bench -p recon-integration-tests --bench load` (or
//! `RECON_BIN=target/release/recon` for the release binary). Environment:
//! `BENCH_TRANSACTIONS` (default 200,000), `BENCH_CLIENTS` (32),
//! `BENCH_QUERIES` (100 per client). Without `--bench` (as under
//! `cargo test --benches`) it runs 4 clients × 8 queries over 2,000
//! transactions once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench fails loudly

use std::time::{Duration, Instant};

use recon_integration_tests::scale::write_scale_warehouse;
use recon_integration_tests::{ReconProcess, TestServer, free_port, query, recon_serve, rows};

const KINDS: [&str; 4] = ["point lookup", "GROUP BY", "join", "function"];

fn sql(kind: usize, i: usize, transactions: usize) -> String {
    let id = format!("TX-{:010}", (i * 7919) % transactions);
    match kind {
        0 => format!("SELECT * FROM transactions_latest WHERE transaction_id = '{id}'"),
        1 => "SELECT substr(posting_date, 1, 7) AS month, count(*), sum(amount_posted) \
              FROM aggregator_statements GROUP BY 1 ORDER BY 1"
            .to_owned(),
        2 => "SELECT count(*), avg(f.fraud_score) FROM aggregator_statements s \
              JOIN ml_fraud_signals f ON s.transaction_id = f.transaction_id \
              WHERE s.amount_posted > 500"
            .to_owned(),
        _ => format!(
            "SELECT calc_discrepancy(fee_charged, amount_posted) AS d FROM aggregator_statements \
             WHERE transaction_id = '{id}'"
        ),
    }
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn print_line(label: &str, latencies: &mut [Duration]) {
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{label:<14} {:>6} queries  p50 {:>7.2} ms  p90 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
        latencies.len(),
        ms(percentile(latencies, 0.50)),
        ms(percentile(latencies, 0.90)),
        ms(percentile(latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default()),
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let transactions = env_or("BENCH_TRANSACTIONS", if full { 200_000 } else { 2_000 });
    let clients = env_or("BENCH_CLIENTS", if full { 32 } else { 4 });
    let per_client = env_or("BENCH_QUERIES", if full { 100 } else { 8 });
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    write_scale_warehouse(dir.path(), 0, transactions, 7);
    println!(
        "data: {transactions} transactions with their statements and signals, written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // The full run measures the binary; the smoke run (no binary built yet
    // under `cargo test --benches`) an in-process server.
    let mut process = None;
    let mut in_process = None;
    let client = if full {
        let port = free_port();
        let server = process.insert(ReconProcess::spawn(
            &mut recon_serve(dir.path(), port),
            port,
        ));
        runtime.block_on(server.client())
    } else {
        let server = runtime.block_on(TestServer::start_in(dir, |_| {}));
        runtime.block_on(in_process.insert(server).sql_client())
    };
    runtime.block_on(async {
        // Warm up: the batch tables load into memory, the latest index builds.
        for kind in 0..KINDS.len() {
            let mut c = client.clone();
            query(&mut c, &sql(kind, 0, transactions)).await.unwrap();
        }
        let started = Instant::now();
        let mut tasks = Vec::new();
        for client_no in 0..clients {
            let mut c = client.clone();
            tasks.push(tokio::spawn(async move {
                let mut latencies: Vec<(usize, Duration)> = Vec::new();
                let mut errors = Vec::new();
                for q in 0..per_client {
                    let kind = (client_no + q) % KINDS.len();
                    let text = sql(kind, client_no * per_client + q, transactions);
                    let t = Instant::now();
                    match query(&mut c, &text).await {
                        Ok(batches) => {
                            let _ = rows(&batches);
                            latencies.push((kind, t.elapsed()));
                        }
                        Err(e) => errors.push(format!("{}: {e:#}", KINDS[kind])),
                    }
                }
                (latencies, errors)
            }));
        }
        let mut all = Vec::new();
        let mut errors = Vec::new();
        for task in tasks {
            let (latencies, errs) = task.await.unwrap();
            all.extend(latencies);
            errors.extend(errs);
        }
        let wall = started.elapsed();
        println!(
            "{clients} clients × {per_client} queries: {} ok, {} errors in {:.2} s ({:.0} queries/s)",
            all.len(),
            errors.len(),
            wall.as_secs_f64(),
            all.len() as f64 / wall.as_secs_f64()
        );
        for (kind, label) in KINDS.iter().enumerate() {
            let mut of_kind: Vec<Duration> =
                all.iter().filter(|(k, _)| *k == kind).map(|(_, d)| *d).collect();
            print_line(label, &mut of_kind);
        }
        let mut overall: Vec<Duration> = all.iter().map(|(_, d)| *d).collect();
        print_line("all", &mut overall);
        for e in errors.iter().take(5) {
            println!("error: {e}");
        }
        assert!(errors.is_empty(), "{} queries failed", errors.len());
    });
    if let Some(server) = process {
        server.stop();
    }
    if let Some(server) = in_process {
        runtime.block_on(server.stop());
    }
}
