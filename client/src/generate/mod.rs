//! `recon-cli generate`: the seed's `end_to_end_data_setup.py` at any scale,
//! seeded and reproducible. Merchants, aggregator statements and policies go
//! into the warehouse as Parquet through the server's bulk ingest (so the same
//! command works for local and `s3://` warehouses), transaction events go to
//! Kafka (JSON, key = transaction id), ML fraud signals are POSTed to the
//! server's `/ml_signals`. Each step shows a progress bar on a terminal and
//! logs one summary line; `--wait` then waits until the server has ingested
//! every event produced.

pub mod data;
mod kafka;

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub use data::{Dataset, Params};

use crate::{Client, append};

/// `generate`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    /// Merchants.
    #[arg(long, default_value_t = 10)]
    pub merchants: usize,
    /// Transactions (one Kafka event each).
    #[arg(long, default_value_t = 50)]
    pub transactions: usize,
    /// Share of transactions that later get a status-update event (0..1).
    #[arg(long, default_value_t = 0.0)]
    pub status_updates: f64,
    /// Aggregator statements.
    #[arg(long, default_value_t = 30)]
    pub statements: usize,
    /// Share of statements that match a real transaction.
    #[arg(long, default_value_t = 0.8)]
    pub match_prob: f64,
    /// Policies.
    #[arg(long, default_value_t = 5)]
    pub policies: usize,
    /// ML fraud signals.
    #[arg(long, default_value_t = 15)]
    pub signals: usize,
    /// Share of signals that reference a real transaction.
    #[arg(long, default_value_t = 0.9)]
    pub fraud_match_prob: f64,
    /// Random seed: the same seed and counts give the same data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Events fall in the 30 days before this time (RFC 3339, or `now`).
    #[arg(long, default_value = "2025-01-19T00:00:00Z")]
    pub end_time: String,
    /// Kafka bootstrap servers.
    #[arg(long, env = "RECON_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    /// Kafka topic (created with --partitions when missing).
    #[arg(long, env = "RECON_KAFKA_TOPIC", default_value = "transactions_topic")]
    pub topic: String,
    /// Partitions of a topic this command creates.
    #[arg(long, default_value_t = 2)]
    pub partitions: i32,
    /// The server's HTTP address, for POST /ml_signals.
    #[arg(long, env = "RECON_HTTP_URL", default_value = "http://127.0.0.1:8080")]
    pub http_url: String,
    /// Signals per POST (each POST becomes one Parquet file).
    #[arg(long, default_value_t = 20_000)]
    pub signals_per_post: usize,
    /// Statement rows per bulk-ingest call (each call becomes one Parquet file).
    #[arg(long, default_value_t = 250_000)]
    pub rows_per_file: usize,
    /// Wait until the server has ingested every event produced.
    #[arg(long)]
    pub wait: bool,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

impl GenerateArgs {
    fn params(&self) -> anyhow::Result<Params> {
        for (name, p) in [
            ("--status-updates", self.status_updates),
            ("--match-prob", self.match_prob),
            ("--fraud-match-prob", self.fraud_match_prob),
        ] {
            anyhow::ensure!((0.0..=1.0).contains(&p), "{name} must be in 0..1, not {p}");
        }
        anyhow::ensure!(
            self.signals_per_post > 0 && self.rows_per_file > 0,
            "--signals-per-post and --rows-per-file must be positive"
        );
        let end_time = if self.end_time == "now" {
            Utc::now()
        } else {
            DateTime::parse_from_rfc3339(&self.end_time)
                .with_context(|| format!("--end-time {:?} is not RFC 3339", self.end_time))?
                .to_utc()
        };
        Ok(Params {
            merchants: self.merchants,
            transactions: self.transactions,
            status_updates: self.status_updates,
            statements: self.statements,
            match_prob: self.match_prob,
            policies: self.policies,
            signals: self.signals,
            fraud_match_prob: self.fraud_match_prob,
            seed: self.seed,
            end_time,
        })
    }
}

/// Credentials for the HTTP API when the server has authentication on.
#[derive(Debug, Clone, Default)]
pub struct HttpAuth {
    /// User and password (Basic).
    pub basic: Option<(String, String)>,
}

/// What a run produced.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Kafka events produced.
    pub events: usize,
    /// Next offset after the last event produced, per partition.
    pub next_offsets: Vec<(i32, i64)>,
    /// Rows appended per table.
    pub merchants: i64,
    /// Statements appended.
    pub statements: i64,
    /// Policies appended.
    pub policies: i64,
    /// Signals accepted by the HTTP API.
    pub signals: usize,
}

/// Generates and sends the whole data set.
pub async fn run(
    client: &mut Client,
    args: &GenerateArgs,
    auth: &HttpAuth,
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let params = args.params()?;
    let dataset = Dataset::new(params.clone());
    let mut summary = Summary::default();
    let progress = Progress { quiet: args.quiet };

    let step = progress.step("merchants → warehouse", 1);
    summary.merchants = append(client, "merchants", vec![dataset.merchants()]).await?;
    step.done(summary.merchants as u64);

    let events = dataset.event_count();
    let step = progress.step("transactions → Kafka", events as u64);
    let produced = kafka::produce(args, &dataset, &step.bar).await?;
    summary.events = events;
    summary.next_offsets = produced;
    step.done(events as u64);

    let step = progress.step("statements → warehouse", params.statements as u64);
    let mut from = 0;
    while from < params.statements {
        let to = (from + args.rows_per_file).min(params.statements);
        let batch = dataset.statements(from, to);
        summary.statements += append(client, "aggregator_statements", vec![batch]).await?;
        step.bar.set_position(to as u64);
        from = to;
    }
    step.done(params.statements as u64);

    let step = progress.step("policies → warehouse", params.policies as u64);
    if params.policies > 0 {
        summary.policies = append(client, "policy_data", vec![dataset.policies()]).await?;
    }
    step.done(params.policies as u64);

    let step = progress.step("ML signals → /ml_signals", params.signals as u64);
    summary.signals = post_signals(args, auth, &dataset, &step.bar).await?;
    step.done(params.signals as u64);

    if args.wait {
        let step = progress.step("waiting for ingest", events as u64);
        wait_for_ingest(client, &summary.next_offsets, &step.bar).await?;
        step.done(events as u64);
    }
    eprintln!(
        "generated {} events, {} merchants, {} statements, {} policies, {} signals in {:.1} s",
        summary.events,
        summary.merchants,
        summary.statements,
        summary.policies,
        summary.signals,
        started.elapsed().as_secs_f64()
    );
    Ok(summary)
}

/// POSTs the signals in chunks; every chunk must be accepted (201).
async fn post_signals(
    args: &GenerateArgs,
    auth: &HttpAuth,
    dataset: &Dataset,
    bar: &ProgressBar,
) -> anyhow::Result<usize> {
    let url = format!("{}/ml_signals", args.http_url.trim_end_matches('/'));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let total = dataset.params().signals;
    let mut from = 0;
    while from < total {
        let to = (from + args.signals_per_post).min(total);
        let body = serde_json::to_vec(&dataset.signals(from, to))?;
        let mut request = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body);
        if let Some((user, password)) = &auth.basic {
            request = request.basic_auth(user, Some(password));
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot POST to {url}"))?;
        let status = response.status();
        if status != reqwest::StatusCode::CREATED {
            let text = response.text().await.unwrap_or_default();
            anyhow::bail!("POST {url} answered {status}: {text}");
        }
        bar.set_position(to as u64);
        from = to;
    }
    Ok(total)
}

/// Polls the server until `transactions` holds every produced offset.
async fn wait_for_ingest(
    client: &mut Client,
    next_offsets: &[(i32, i64)],
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let sql = "SELECT kafka_partition, max(kafka_offset) + 1 AS next FROM transactions \
               GROUP BY kafka_partition";
    loop {
        let result = crate::query(client, sql).await?;
        let seen = kafka::partition_offsets(&result.batches);
        let missing: i64 = next_offsets
            .iter()
            .map(|(p, want)| {
                let have = seen.get(p).copied().unwrap_or(0);
                (want - have).max(0)
            })
            .sum();
        let total = bar.length().unwrap_or(0);
        bar.set_position(total.saturating_sub(missing as u64));
        if missing == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the server has not ingested {missing} events after 10 minutes: \
             is it running with --kafka-brokers for this broker and topic?"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Progress bars (on a terminal) and one summary line per step.
#[derive(Debug, Clone, Copy)]
struct Progress {
    quiet: bool,
}

/// One step in progress.
#[derive(Debug)]
struct Step {
    name: &'static str,
    bar: ProgressBar,
    started: Instant,
}

impl Progress {
    fn step(&self, name: &'static str, len: u64) -> Step {
        let bar = ProgressBar::with_draw_target(
            Some(len),
            if self.quiet {
                ProgressDrawTarget::hidden()
            } else {
                ProgressDrawTarget::stderr()
            },
        );
        if let Ok(style) = ProgressStyle::with_template(
            "{msg:26} [{bar:30}] {human_pos}/{human_len} {per_sec:>12} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(name);
        Step {
            name,
            bar,
            started: Instant::now(),
        }
    }
}

impl Step {
    fn done(self, count: u64) {
        self.bar.finish_and_clear();
        let secs = self.started.elapsed().as_secs_f64();
        eprintln!("{:26} {count:>10} in {secs:6.2} s", self.name);
    }
}
