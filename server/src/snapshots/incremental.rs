//! What an incremental refresh needs to know: the inputs a snapshot was
//! computed from (the next Kafka offset per partition, and a fingerprint of
//! the batch files the view reads), and — against the current inputs — which
//! transactions changed since. Only the transaction-keyed views of the default
//! SQL refresh incrementally; a change to their batch inputs (new statement,
//! signal or policy files), or offsets that went back (a replaced topic)
//! make the next refresh a full one.

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Int32Type, Int64Type};
use datafusion::error::Result;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

use crate::warehouse::Warehouse;

/// What a snapshot was computed from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inputs {
    /// Next offset after the newest event held, per Kafka partition, when the
    /// refresh started (events at or after it may or may not be included).
    pub next_offsets: BTreeMap<i32, i64>,
    /// Fingerprint of the batch tables' files the view reads.
    pub batch_files: String,
}

/// The key columns of a view that refreshes incrementally.
pub fn key_of(view: &str) -> Option<&'static [&'static str]> {
    match view {
        "batch_index" | "final_index" => Some(&["transaction_id"]),
        _ => None,
    }
}

/// The batch tables a view reads (through its SQL and the views it uses).
fn batch_tables(view: &str) -> &'static [&'static str] {
    match view {
        "batch_index" => &["aggregator_statements"],
        "final_index" => &["aggregator_statements", "ml_fraud_signals", "policy_data"],
        _ => &[
            "aggregator_statements",
            "ml_fraud_signals",
            "policy_data",
            "merchants",
        ],
    }
}

/// The inputs as they are now.
pub async fn current(ctx: &SessionContext, warehouse: &Warehouse, view: &str) -> Result<Inputs> {
    Ok(Inputs {
        next_offsets: next_offsets(ctx).await?,
        batch_files: fingerprint(warehouse, batch_tables(view)).await?,
    })
}

/// Per partition, one past the greatest offset in `transactions`.
async fn next_offsets(ctx: &SessionContext) -> Result<BTreeMap<i32, i64>> {
    let batches = ctx
        .sql(
            "SELECT kafka_partition, max(kafka_offset) + 1 FROM transactions \
             WHERE kafka_partition IS NOT NULL GROUP BY kafka_partition",
        )
        .await?
        .collect()
        .await?;
    let mut out = BTreeMap::new();
    for batch in &batches {
        let partitions = batch.column(0).as_primitive::<Int32Type>();
        let offsets = batch.column(1).as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            if partitions.is_valid(i) && offsets.is_valid(i) {
                out.insert(partitions.value(i), offsets.value(i));
            }
        }
    }
    Ok(out)
}

/// Name, size and modification time of every file of `tables`, hashed (FNV-1a:
/// stable across builds, unlike std's hasher).
async fn fingerprint(warehouse: &Warehouse, tables: &[&str]) -> Result<String> {
    let store = warehouse.store();
    let mut entries = Vec::new();
    for table in tables {
        let location = warehouse.path(&crate::tables::batch_location(table))?;
        // A single file, or a folder of part files.
        let single = store.head(&location).await.ok();
        let listed: Vec<_> = store.list(Some(&location)).try_collect().await?;
        for meta in single.into_iter().chain(listed) {
            entries.push(format!(
                "{}|{}|{}",
                meta.location, meta.size, meta.last_modified
            ));
        }
    }
    entries.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in entries.join("\n").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    Ok(format!("{}:{hash:016x}", entries.len()))
}

/// Whether an incremental refresh from `previous` to `now` is sound: same
/// batch files, and no partition's offsets went back.
pub fn can_follow(previous: &Inputs, now: &Inputs) -> bool {
    previous.batch_files == now.batch_files
        && previous
            .next_offsets
            .iter()
            .all(|(p, o)| now.next_offsets.get(p).is_some_and(|n| n >= o))
}

/// Transaction ids with an event at or after `since` (or in a partition
/// `since` does not know), distinct.
pub async fn changed_ids(ctx: &SessionContext, since: &BTreeMap<i32, i64>) -> Result<Vec<String>> {
    let mut conditions: Vec<String> = since
        .iter()
        .map(|(p, o)| format!("(kafka_partition = {p} AND kafka_offset >= {o})"))
        .collect();
    let known: Vec<String> = since.keys().map(ToString::to_string).collect();
    conditions.push(if known.is_empty() {
        "kafka_partition IS NOT NULL".to_owned()
    } else {
        format!("kafka_partition NOT IN ({})", known.join(", "))
    });
    let sql = format!(
        "SELECT DISTINCT transaction_id FROM transactions \
         WHERE transaction_id IS NOT NULL AND ({})",
        conditions.join(" OR ")
    );
    let batches: Vec<RecordBatch> = ctx.sql(&sql).await?.collect().await?;
    let mut ids = Vec::new();
    for batch in &batches {
        let column = datafusion::arrow::compute::cast(
            batch.column(0),
            &datafusion::arrow::datatypes::DataType::Utf8,
        )?;
        ids.extend(
            column
                .as_string::<i32>()
                .iter()
                .flatten()
                .map(str::to_owned),
        );
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(offsets: &[(i32, i64)], files: &str) -> Inputs {
        Inputs {
            next_offsets: offsets.iter().copied().collect(),
            batch_files: files.into(),
        }
    }

    #[test]
    fn follows_only_same_files_and_offsets_forward() {
        let before = inputs(&[(0, 10), (1, 5)], "a");
        assert!(can_follow(
            &before,
            &inputs(&[(0, 10), (1, 7), (2, 1)], "a")
        ));
        assert!(!can_follow(&before, &inputs(&[(0, 10), (1, 7)], "b")));
        assert!(!can_follow(&before, &inputs(&[(0, 9), (1, 7)], "a")));
        assert!(!can_follow(&before, &inputs(&[(0, 10)], "a")));
    }
}
