//! `index_snapshots`: every version of every view's table still in its Delta
//! log, newest first per view — refreshes (`full`, `incremental`) and
//! maintenance commits (vacuum) — with whether it is the current one and
//! whether it can still be read with `index_at`.

use std::sync::{Arc, LazyLock, Weak};

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::error::Result;

use super::{Materializer, Snapshot};
use crate::ingest::live::SystemTable;

/// The columns of `index_snapshots` (and of a `REFRESH INDEX` result).
pub static SNAPSHOTS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("view", DataType::Utf8, false),
        Field::new("version", DataType::Int64, true),
        Field::new("run_id", DataType::Utf8, true),
        Field::new(
            "created_at",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("operation", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("rows", DataType::Int64, false),
        Field::new("files_added", DataType::Int64, false),
        Field::new("files_removed", DataType::Int64, false),
        Field::new("duration_ms", DataType::Int64, false),
        Field::new("location", DataType::Utf8, false),
        Field::new("current", DataType::Boolean, false),
        Field::new("readable", DataType::Boolean, false),
    ]))
});

/// Rows describing `snapshots` (newest first per view) in [`SNAPSHOTS_SCHEMA`]:
/// the newest of each view that is not maintenance is current; versions from
/// `oldest_readable(view)` on are readable.
pub fn snapshots_batch(
    snapshots: &[Snapshot],
    oldest_readable: &dyn Fn(&str) -> u64,
) -> Result<RecordBatch> {
    let int = |f: &dyn Fn(&Snapshot) -> u64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(
            snapshots
                .iter()
                .map(|s| i64::try_from(f(s)).unwrap_or(i64::MAX)),
        ))
    };
    let text = |f: &dyn Fn(&Snapshot) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(snapshots.iter().map(f)))
    };
    // The first row of each view that is not maintenance.
    let mut seen: Vec<&str> = Vec::new();
    let current: Vec<bool> = snapshots
        .iter()
        .map(|s| {
            let first = s.kind != "maintenance" && !seen.contains(&s.view.as_str());
            if first {
                seen.push(&s.view);
            }
            first
        })
        .collect();
    let readable: Vec<bool> = snapshots
        .iter()
        .map(|s| s.version.is_some_and(|v| v >= oldest_readable(&s.view)))
        .collect();
    let columns: Vec<ArrayRef> = vec![
        text(&|s| s.view.as_str()),
        Arc::new(Int64Array::from_iter(snapshots.iter().map(|s| {
            s.version.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
        }))),
        Arc::new(StringArray::from_iter(
            snapshots.iter().map(|s| s.run_id.as_deref()),
        )),
        Arc::new(
            TimestampMillisecondArray::from_iter_values(snapshots.iter().map(|s| s.created_at_ms))
                .with_timezone("UTC"),
        ),
        text(&|s| s.operation.as_str()),
        text(&|s| s.kind.as_str()),
        int(&|s| s.rows),
        int(&|s| s.files_added),
        int(&|s| s.files_removed),
        int(&|s| s.duration_ms),
        text(&|s| s.location.as_str()),
        Arc::new(BooleanArray::from(current)),
        Arc::new(BooleanArray::from(readable)),
    ];
    Ok(RecordBatch::try_new(
        Arc::clone(&SNAPSHOTS_SCHEMA),
        columns,
    )?)
}

/// `index_snapshots`, read from the materializer at each scan.
pub(super) fn snapshots_table(materializer: Weak<Materializer>) -> SystemTable {
    SystemTable::new(Arc::clone(&SNAPSHOTS_SCHEMA), move || {
        let Some(materializer) = materializer.upgrade() else {
            return snapshots_batch(&[], &|_| 0);
        };
        let snapshots = materializer.snapshots();
        snapshots_batch(&snapshots, &|view| materializer.oldest_readable(view))
    })
}
