//! `GET /metrics` in the Prometheus text format (DESIGN §7): ingest records,
//! rejects, flushes and lag per partition; query count, failures, rows and a
//! latency histogram; snapshot refresh runs, failures and durations; ML signals
//! accepted. Counters only grow; rates come from PromQL's `rate()`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::flight::queries::EngineStats;
use crate::ingest::status::IngestStatus;
use crate::snapshots::Materializer;

/// Upper bounds (seconds) of the query latency buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

/// A latency histogram with fixed buckets, updated without locks.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket (not cumulative); the last slot is `+Inf`.
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, seconds: f64) {
        let slot = LATENCY_BUCKETS
            .iter()
            .position(|&upper| seconds <= upper)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        // Truncation to whole microseconds is fine for a sum.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        self.sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = LATENCY_BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), ToString::to_string);
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        #[allow(clippy::cast_precision_loss)]
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

/// Everything `/metrics` reports on.
#[derive(Debug)]
pub struct Sources<'a> {
    /// Query counters and latency.
    pub queries: &'a EngineStats,
    /// Ingest figures (None without Kafka).
    pub ingest: Option<&'a IngestStatus>,
    /// Snapshot refreshes.
    pub materializer: &'a Materializer,
    /// ML signals accepted over HTTP and bulk ingest.
    pub signals_accepted: u64,
    /// Failed logins (Flight SQL and HTTP).
    pub failed_logins: u64,
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// The Prometheus text exposition of `sources`.
pub fn render(sources: &Sources<'_>) -> String {
    let mut out = String::new();
    let q = sources.queries;
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    metric(
        &mut out,
        "recon_queries_total",
        "counter",
        "Queries started.",
        load(&q.started),
    );
    metric(
        &mut out,
        "recon_query_failures_total",
        "counter",
        "Queries refused or failed.",
        load(&q.failed),
    );
    metric(
        &mut out,
        "recon_query_rows_total",
        "counter",
        "Rows streamed to clients.",
        load(&q.rows),
    );
    q.latency.render(
        &mut out,
        "recon_query_duration_seconds",
        "Wall time of queries, start to end of stream.",
    );
    if let Some(ingest) = sources.ingest {
        let totals = ingest.totals();
        metric(
            &mut out,
            "recon_ingest_records_total",
            "counter",
            "Kafka records consumed (good and rejected).",
            totals.records,
        );
        metric(
            &mut out,
            "recon_ingest_rejects_total",
            "counter",
            "Kafka records sent to transactions_rejects.",
            totals.rejects,
        );
        metric(
            &mut out,
            "recon_ingest_flushes_total",
            "counter",
            "Segment flushes committed.",
            totals.flushes,
        );
        let _ = writeln!(
            out,
            "# HELP recon_ingest_lag Records the broker holds that ingest has not consumed.\n# TYPE recon_ingest_lag gauge"
        );
        for (partition, lag) in ingest.lags() {
            let _ = writeln!(out, "recon_ingest_lag{{partition=\"{partition}\"}} {lag}");
        }
    }
    let stats = sources.materializer.stats();
    metric(
        &mut out,
        "recon_refresh_runs_total",
        "counter",
        "Snapshot refreshes completed.",
        load(&stats.runs),
    );
    metric(
        &mut out,
        "recon_refresh_failures_total",
        "counter",
        "Snapshot refreshes failed.",
        load(&stats.failures),
    );
    #[allow(clippy::cast_precision_loss)]
    let seconds = load(&stats.total_ms) as f64 / 1e3;
    metric(
        &mut out,
        "recon_refresh_duration_seconds_total",
        "counter",
        "Time spent in completed refreshes.",
        seconds,
    );
    let _ = writeln!(
        out,
        "# HELP recon_snapshot_rows Rows of the current snapshot.\n# TYPE recon_snapshot_rows gauge"
    );
    for (view, rows) in sources.materializer.current_rows() {
        let _ = writeln!(out, "recon_snapshot_rows{{view=\"{view}\"}} {rows}");
    }
    metric(
        &mut out,
        "recon_ml_signals_accepted_total",
        "counter",
        "ML fraud signals stored.",
        sources.signals_accepted,
    );
    metric(
        &mut out,
        "recon_auth_failures_total",
        "counter",
        "Failed logins: wrong user or password, or refused while the peer must wait.",
        sources.failed_logins,
    );
    out
}
