//! What an incremental refresh needs to know: the inputs a snapshot was
//! computed from (the next Kafka offset per partition, and a fingerprint of
//! the batch files the view reads), and — against the current inputs — which
//! transactions changed since. Only the transaction-keyed views of the default
//! SQL refresh incrementally; a change to their batch inputs (new statement,
//! signal or policy files), or offsets that went back (a replaced topic)
//! make the next refresh a full one.

use std::collections::{BTreeMap, HashSet};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int32Type, Int64Type};
use datafusion::error::{DataFusionError, Result};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

use crate::id_set::{IdSet, KEY as TRANSACTION_ID};
use crate::ingest::decode::{OFFSET_COLUMN, PARTITION_COLUMN};
use crate::ingest::live::LiveTable;
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

/// The inputs as they are now (`events`: the live `transactions` table).
pub async fn current(events: &LiveTable, warehouse: &Warehouse, view: &str) -> Result<Inputs> {
    Ok(Inputs {
        next_offsets: events.next_offsets(),
        batch_files: fingerprint(warehouse, batch_tables(view)).await?,
    })
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
/// `since` does not know): read from the batches that hold such events.
pub fn changed_ids(events: &LiveTable, since: &BTreeMap<i32, i64>) -> Result<IdSet> {
    let mut ids = HashSet::new();
    for batch in events.batches_since(since) {
        let column = |name: &str| {
            batch.column_by_name(name).ok_or_else(|| {
                DataFusionError::Internal(format!("transactions batch without {name}"))
            })
        };
        let transactions = cast(column(TRANSACTION_ID)?, &DataType::Utf8)?;
        let transactions = transactions.as_string::<i32>();
        let partitions = column(PARTITION_COLUMN)?.as_primitive::<Int32Type>();
        let offsets = column(OFFSET_COLUMN)?.as_primitive::<Int64Type>();
        for row in 0..batch.num_rows() {
            if transactions.is_null(row) || partitions.is_null(row) || offsets.is_null(row) {
                continue;
            }
            let new = since
                .get(&partitions.value(row))
                .is_none_or(|from| offsets.value(row) >= *from);
            if new && !ids.contains(transactions.value(row)) {
                ids.insert(transactions.value(row).to_owned());
            }
        }
    }
    Ok(IdSet::new(ids))
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

    #[test]
    fn changed_ids_are_those_with_events_past_the_offsets() {
        use datafusion::arrow::array::{Int32Array, Int64Array, RecordBatch, StringArray};
        use datafusion::arrow::datatypes::{Field, Schema};
        use std::sync::Arc;
        let schema = Arc::new(Schema::new(vec![
            Field::new(TRANSACTION_ID, DataType::Utf8, true),
            Field::new(PARTITION_COLUMN, DataType::Int32, false),
            Field::new(OFFSET_COLUMN, DataType::Int64, false),
        ]));
        let events = LiveTable::new(Arc::clone(&schema));
        let batch = |rows: &[(Option<&str>, i32, i64)]| {
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(StringArray::from(
                        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                    )),
                    Arc::new(Int32Array::from(
                        rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                    )),
                    Arc::new(Int64Array::from(
                        rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                    )),
                ],
            )
            .unwrap()
        };
        events.append_flushed(vec![batch(&[(Some("A"), 0, 0), (Some("B"), 1, 0)])]);
        events.append(batch(&[(Some("C"), 0, 1), (Some("A"), 0, 2), (None, 0, 3)]));
        events.append(batch(&[(Some("D"), 2, 0), (Some("B"), 1, 1)]));
        let since = BTreeMap::from([(0, 2), (1, 1)]);
        // A at offset 2 of partition 0, B at 1 of 1, D of an unknown
        // partition; C (offset 1) is older, the NULL id is no transaction.
        assert_eq!(
            changed_ids(&events, &since).unwrap().as_slice(),
            ["A", "B", "D"]
        );
        let after = events.next_offsets();
        assert_eq!(after, BTreeMap::from([(0, 4), (1, 2), (2, 1)]));
        assert!(changed_ids(&events, &after).unwrap().is_empty());
    }
}
