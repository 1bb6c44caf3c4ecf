//! A seeded warehouse at any scale, for refresh tests and benchmarks: the
//! transactions as persisted ingest segments (`output/partial_stream_index/`
//! plus the checkpoint, exactly what Kafka ingest leaves behind), and the batch
//! tables in the seed's proportions — statements for ≈80 % of transactions
//! (most with amount deltas of a few cents, some with none) plus a few for
//! unknown transactions, ML signals for ≈90 %, global and merchant policies.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use recon_server::ingest::decode::TRANSACTIONS_SCHEMA;
use recon_server::ingest::segments::{CHECKPOINT_DIR, Checkpoint, SEGMENTS_DIR, segment_name};
use recon_server::tables::{batch_location, batch_schema};

use crate::write_parquet;

/// Rows per segment file.
const SEGMENT_ROWS: usize = 500_000;
/// Merchants in the data set.
pub const MERCHANTS: usize = 200;
const STATUSES: [&str; 4] = ["PENDING", "APPROVED", "DECLINED", "REFUNDED"];
const CURRENCIES: [&str; 3] = ["USD", "EUR", "GBP"];
/// 2026-11-01T00:00:00Z in microseconds.
const BASE_MICROS: i64 = 1_793_577_600_000_000;

/// Writes merchants, policies, `transactions` events (offsets `first..first+n`
/// of partition 0) with their statements and signals, and a checkpoint after
/// the last event. Call again with a later `first` to add transactions.
pub fn write_scale_warehouse(root: &Path, first: usize, n: usize, seed: u64) {
    write_scale(root, first, n, seed, true);
}

/// Adds transactions `first..first+n` as new events only (no statements or
/// signals for them yet): what Kafka ingest leaves after they arrive.
pub fn append_scale_transactions(root: &Path, first: usize, n: usize, seed: u64) {
    write_scale(root, first, n, seed, false);
}

/// Adds one later event (status `REFUNDED`, an hour after the first event) for
/// each of the existing transactions `ids`, at offsets `first..` of partition 0.
pub fn append_status_updates(root: &Path, ids: &[usize], first: usize) {
    let mut rng = StdRng::seed_from_u64(first as u64);
    let base = transactions(&mut rng, first, first + ids.len());
    let mut columns = base.columns().to_vec();
    columns[0] = strings(ids.iter().map(|i| Some(format!("TX-{i:010}"))));
    columns[5] = strings(ids.iter().map(|_| Some("REFUNDED".to_owned())));
    let times = ids
        .iter()
        .map(|&i| BASE_MICROS + (i as i64) * 1_000_000 + 3_600_000_000);
    columns[6] = Arc::new(TimestampMicrosecondArray::from_iter_values(times).with_timezone("UTC"));
    let batch = RecordBatch::try_new(base.schema(), columns).expect("updates");
    let last = first + ids.len() - 1;
    write_parquet(
        &root
            .join(SEGMENTS_DIR)
            .join(segment_name(0, first as i64, last as i64)),
        &batch,
    );
    write_checkpoint(root, last + 1);
}

fn write_checkpoint(root: &Path, next: usize) {
    let checkpoint = Checkpoint {
        next_offsets: [(0, next as i64)].into(),
        written_at: "2026-11-01T00:00:00Z".into(),
    };
    let path = root
        .join(CHECKPOINT_DIR)
        .join("ingest-transactions_topic.json");
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, serde_json::to_vec(&checkpoint).expect("json")).expect("checkpoint");
}

fn write_scale(root: &Path, first: usize, n: usize, seed: u64, with_batch_rows: bool) {
    let mut rng = StdRng::seed_from_u64(seed ^ first as u64);
    if first == 0 {
        write_parquet(&root.join(batch_location("merchants")), &merchants());
        write_parquet(&root.join(batch_location("policy_data")), &policies());
    }
    let mut start = first;
    while start < first + n {
        let end = (start + SEGMENT_ROWS).min(first + n);
        let tx = transactions(&mut rng, start, end);
        let name = segment_name(0, start as i64, end as i64 - 1);
        write_parquet(&root.join(SEGMENTS_DIR).join(name), &tx);
        start = end;
        if !with_batch_rows {
            continue;
        }
        let part = format!("part-{:010}.parquet", end - tx.num_rows());
        write_parquet(
            &root
                .join(batch_location("aggregator_statements"))
                .join(&part),
            &statements(&mut rng, &tx),
        );
        write_parquet(
            &root.join(batch_location("ml_fraud_signals")).join(&part),
            &signals(&mut rng, &tx),
        );
    }
    write_checkpoint(root, first + n);
}

fn merchant_id(i: usize) -> String {
    // A third of the merchants get the MCH-A prefix (the seed's KPI multiplier).
    let group = ["A", "B", "C"][i % 3];
    format!("MCH-{group}{i:04}")
}

fn strings(values: impl IntoIterator<Item = Option<String>>) -> ArrayRef {
    Arc::new(values.into_iter().collect::<StringArray>())
}

fn contract(table: &str, columns: Vec<ArrayRef>) -> RecordBatch {
    RecordBatch::try_new(batch_schema(table).expect("batch table"), columns).expect("batch")
}

fn merchants() -> RecordBatch {
    let ids = (0..MERCHANTS).map(merchant_id);
    contract(
        "merchants",
        vec![
            strings(ids.clone().map(Some)),
            strings((0..MERCHANTS).map(|i| Some(format!("Merchant {i}")))),
            strings((0..MERCHANTS).map(|i| Some(["LOW", "MEDIUM", "HIGH"][i % 3].to_owned()))),
            strings((0..MERCHANTS).map(|_| Some("2024-01-01".to_owned()))),
        ],
    )
}

fn policies() -> RecordBatch {
    // Global policies (merchant NULL), one inactive, and merchant-specific ones.
    let rows: Vec<(&str, bool, Option<String>)> = vec![
        ("KYC", true, None),
        ("AML", true, None),
        ("BLACKLIST", false, None),
        ("BLACKLIST", true, Some(merchant_id(7))),
        ("LIMITS", true, Some(merchant_id(8))),
        ("KYC", true, Some(merchant_id(9))),
    ];
    contract(
        "policy_data",
        vec![
            strings((0..rows.len()).map(|i| Some(format!("POL-{i}")))),
            strings(rows.iter().map(|r| Some(r.0.to_owned()))),
            strings(rows.iter().map(|r| Some(format!("{} rule", r.0)))),
            Arc::new(rows.iter().map(|r| Some(r.1)).collect::<BooleanArray>()),
            strings(rows.iter().map(|r| r.2.clone())),
        ],
    )
}

fn transactions(rng: &mut StdRng, start: usize, end: usize) -> RecordBatch {
    let n = end - start;
    let amounts: Vec<f64> = (0..n)
        .map(|_| (rng.random_range(100..100_000) as f64) / 100.0)
        .collect();
    let merchants: Vec<usize> = (0..n).map(|_| rng.random_range(0..MERCHANTS)).collect();
    let times: Vec<i64> = (start..end)
        .map(|i| BASE_MICROS + (i as i64) * 1_000_000)
        .collect();
    let columns: Vec<ArrayRef> = vec![
        strings((start..end).map(|i| Some(format!("TX-{i:010}")))),
        strings(merchants.iter().map(|&m| Some(merchant_id(m)))),
        strings((0..n).map(|_| Some(format!("USR-{:06}", rng.random_range(0..100_000))))),
        Arc::new(Float64Array::from(amounts)),
        strings((0..n).map(|_| Some(CURRENCIES[rng.random_range(0..3)].to_owned()))),
        strings((0..n).map(|_| Some(STATUSES[rng.random_range(0..4)].to_owned()))),
        Arc::new(TimestampMicrosecondArray::from(times.clone()).with_timezone("UTC")),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(times.iter().map(|t| t + 1_000_000))
                .with_timezone("UTC"),
        ),
        Arc::new(Int32Array::from(vec![0; n])),
        Arc::new(Int64Array::from_iter_values((start..end).map(|i| i as i64))),
    ];
    RecordBatch::try_new(Arc::clone(&TRANSACTIONS_SCHEMA), columns).expect("transactions")
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> &'a T {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .expect("column")
}

fn statements(rng: &mut StdRng, tx: &RecordBatch) -> RecordBatch {
    let ids = column::<StringArray>(tx, "transaction_id");
    let amounts = column::<Float64Array>(tx, "amount");
    let mut rows: Vec<(String, f64)> = Vec::new();
    for i in 0..tx.num_rows() {
        if rng.random_bool(0.8) {
            // Half exact, half off by up to ±2.00.
            let delta = if rng.random_bool(0.5) {
                0.0
            } else {
                f64::from(rng.random_range(-200..=200)) / 100.0
            };
            rows.push((ids.value(i).to_owned(), amounts.value(i) + delta));
        }
        if rng.random_bool(0.01) {
            rows.push((format!("TX-UNKNOWN-{}", rng.random::<u32>()), 10.0));
        }
    }
    contract(
        "aggregator_statements",
        vec![
            strings(
                rows.iter()
                    .map(|_| Some(format!("STMT-{:016x}", rng.random::<u64>()))),
            ),
            strings(rows.iter().map(|r| Some(r.0.clone()))),
            strings(rows.iter().map(|_| Some("2026-11-02".to_owned()))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(Float64Array::from_iter_values(
                rows.iter()
                    .map(|_| f64::from(rng.random_range(0..300)) / 100.0),
            )),
        ],
    )
}

fn signals(rng: &mut StdRng, tx: &RecordBatch) -> RecordBatch {
    let ids = column::<StringArray>(tx, "transaction_id");
    let chosen: Vec<String> = (0..tx.num_rows())
        .filter(|_| rng.random_bool(0.9))
        .map(|i| ids.value(i).to_owned())
        .collect();
    contract(
        "ml_fraud_signals",
        vec![
            strings(
                chosen
                    .iter()
                    .map(|_| Some(format!("FS-{:016x}", rng.random::<u64>()))),
            ),
            strings(chosen.iter().map(|id| Some(id.clone()))),
            Arc::new(Float64Array::from_iter_values(
                chosen
                    .iter()
                    .map(|_| f64::from(rng.random_range(0..10_000)) / 10_000.0),
            )),
            strings(chosen.iter().map(|_| Some("v1.2".to_owned()))),
            strings(
                chosen
                    .iter()
                    .map(|_| Some("2026-11-02T00:00:00".to_owned())),
            ),
        ],
    )
}
