//! Appending rows to a batch table (DESIGN §2, §7): what `POST /ml_signals` and
//! Flight SQL bulk ingest (`CommandStatementIngest`) share. Rows are checked
//! against the table's contract schema (missing nullable columns become NULL,
//! compatible types are cast, unknown columns are refused), then written as one
//! new Parquet file `batch_parquet_data/<table>.parquet/part-<time>-<random>.parquet`
//! with a create-only put, and synced to disk on local warehouses, before the
//! caller reports success. The next query lists the new file.
//!
//! A table stored as one single file (`<table>.parquet` written by pandas, say)
//! is first moved into the folder as `legacy.parquet`, so both forms keep working.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, new_null_array};
use datafusion::arrow::compute::{CastOptions, cast_with_options, concat_batches};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::util::display::FormatOptions;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use parquet::basic::{Compression, ZstdLevel};

use crate::tables::{BATCH_TABLES, batch_location, batch_schema};
use crate::warehouse::{Warehouse, parquet_bytes};

/// Why rows were not appended.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Not a batch table.
    #[error("{0:?} is not a batch table: rows can be added to {tables}", tables = BATCH_TABLES.join(", "))]
    UnknownTable(String),
    /// The rows do not fit the table's contract schema.
    #[error("{0}")]
    Invalid(String),
    /// Writing to the warehouse failed; nothing was added.
    #[error("cannot write to the warehouse: {0}")]
    Storage(String),
}

impl AppendError {
    /// The gRPC status a Flight client sees.
    pub fn into_status(self) -> tonic::Status {
        match self {
            Self::UnknownTable(_) => tonic::Status::not_found(self.to_string()),
            Self::Invalid(_) => tonic::Status::invalid_argument(self.to_string()),
            Self::Storage(_) => tonic::Status::unavailable(self.to_string()),
        }
    }
}

/// The ML signals table, whose rows [`check_signals`] checks.
pub const SIGNALS_TABLE: &str = "ml_fraud_signals";

/// Checks `batches` against `table`'s contract schema and returns them as one
/// batch in that schema.
pub fn conform(table: &str, batches: &[RecordBatch]) -> Result<RecordBatch, AppendError> {
    let schema = batch_schema(table).ok_or_else(|| AppendError::UnknownTable(table.to_owned()))?;
    let conformed = batches
        .iter()
        .map(|b| conform_batch(&schema, b))
        .collect::<Result<Vec<_>, _>>()?;
    concat_batches(&schema, &conformed).map_err(|e| AppendError::Invalid(e.to_string()))
}

fn conform_batch(schema: &SchemaRef, batch: &RecordBatch) -> Result<RecordBatch, AppendError> {
    let given = batch.schema();
    if let Some(extra) = given
        .fields()
        .iter()
        .find(|f| schema.field_with_name(f.name()).is_err())
    {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        return Err(AppendError::Invalid(format!(
            "unknown column {:?}: the table's columns are {}",
            extra.name(),
            names.join(", ")
        )));
    }
    let options = CastOptions {
        safe: false,
        format_options: FormatOptions::default(),
    };
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) => cast_with_options(column, field.data_type(), &options).map_err(|e| {
                AppendError::Invalid(format!(
                    "column {:?}: cannot use {} as {}: {e}",
                    field.name(),
                    column.data_type(),
                    field.data_type()
                ))
            }),
            None => Ok(new_null_array(field.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<ArrayRef>, _>>()?;
    RecordBatch::try_new(Arc::clone(schema), columns)
        .map_err(|e| AppendError::Invalid(e.to_string()))
}

/// The rules every stored ML signal meets, whichever way it arrives (`POST
/// /ml_signals` or bulk ingest): `fraud_signal_id` and `transaction_id`
/// present and not blank, `fraud_score` a number in [0, 1] (not NULL, not NaN),
/// `inference_time` ISO-8601 when given. A missing `inference_time` becomes
/// `received` (the time of receipt). `batch` is in the contract schema
/// ([`conform`]); the first bad row is named (`signal 3: …`) when there are
/// several.
pub fn check_signals(
    batch: &RecordBatch,
    received: chrono::DateTime<chrono::Utc>,
) -> Result<RecordBatch, AppendError> {
    use datafusion::arrow::array::{Array, Float64Array, StringArray};
    let text = |name: &str| {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            .ok_or_else(|| {
                AppendError::Invalid(format!("ml_fraud_signals has no text column {name}"))
            })
    };
    let ids = text("fraud_signal_id")?;
    let transactions = text("transaction_id")?;
    let times = text("inference_time")?;
    let scores = batch
        .column_by_name("fraud_score")
        .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
        .ok_or_else(|| AppendError::Invalid("ml_fraud_signals has no fraud_score".into()))?;
    let several = batch.num_rows() > 1;
    let at = |row: usize, reason: String| {
        AppendError::Invalid(if several {
            format!("signal {row}: {reason}")
        } else {
            reason
        })
    };
    for row in 0..batch.num_rows() {
        for (name, column) in [("fraud_signal_id", ids), ("transaction_id", transactions)] {
            if column.is_null(row) {
                return Err(at(row, format!("missing field `{name}`")));
            }
            if column.value(row).trim().is_empty() {
                return Err(at(row, format!("{name} is empty")));
            }
        }
        if scores.is_null(row) {
            return Err(at(row, "missing field `fraud_score`".into()));
        }
        let score = scores.value(row);
        if !(0.0..=1.0).contains(&score) {
            return Err(at(row, format!("fraud_score {score} is outside [0, 1]")));
        }
        if times.is_valid(row) && !is_iso_8601(times.value(row)) {
            return Err(at(
                row,
                format!(
                    "inference_time {:?} is not an ISO-8601 date-time",
                    times.value(row)
                ),
            ));
        }
    }
    if times.null_count() == 0 {
        return Ok(batch.clone());
    }
    let default_time = received.format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
    let filled: StringArray = times
        .iter()
        .map(|t| Some(t.unwrap_or(&default_time)))
        .collect();
    let schema = batch.schema();
    let columns = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, column)| {
            if field.name() == "inference_time" {
                Arc::new(filled.clone()) as ArrayRef
            } else {
                Arc::clone(column)
            }
        })
        .collect();
    RecordBatch::try_new(schema, columns).map_err(|e| AppendError::Invalid(e.to_string()))
}

/// An RFC 3339 date-time, or one without a zone (`2024-01-01T00:00:00.5`).
pub fn is_iso_8601(text: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(text).is_ok()
        || text.parse::<chrono::NaiveDateTime>().is_ok()
}

/// Appends `batch` (already in the contract schema, see [`conform`]) to
/// `table` as a new Parquet file; returns the rows written once they are on
/// storage.
pub async fn append(
    warehouse: &Warehouse,
    table: &str,
    batch: &RecordBatch,
) -> Result<usize, AppendError> {
    if batch.num_rows() == 0 {
        return Ok(0);
    }
    let storage = |e: &dyn std::fmt::Display| AppendError::Storage(e.to_string());
    let folder = batch_location(table);
    move_single_file_into_folder(warehouse, &folder).await?;
    let name = format!(
        "{folder}/part-{}-{}.parquet",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%6fZ"),
        crate::flight::random_hex(4)
    );
    let bytes =
        parquet_bytes(batch, Compression::ZSTD(ZstdLevel::default())).map_err(|e| storage(&e))?;
    let path = warehouse.path(&name).map_err(|e| storage(&e))?;
    let create = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    warehouse
        .store()
        .put_opts(&path, PutPayload::from(bytes), create)
        .await
        .map_err(|e| storage(&e))?;
    sync_local(warehouse, &name).map_err(|e| storage(&e))?;
    Ok(batch.num_rows())
}

/// On a local warehouse, flushes the new file and its folder to disk (the
/// object store's put only renames a staged file into place).
fn sync_local(warehouse: &Warehouse, relative: &str) -> std::io::Result<()> {
    let Some(file) = warehouse.local_path(relative) else {
        return Ok(()); // not a local warehouse: the store's put is durable
    };
    std::fs::File::open(&file)?.sync_all()?;
    if let Some(dir) = file.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// A table kept as one file becomes a folder holding that file.
async fn move_single_file_into_folder(
    warehouse: &Warehouse,
    folder: &str,
) -> Result<(), AppendError> {
    let storage = |e: &dyn std::fmt::Display| AppendError::Storage(e.to_string());
    let store: Arc<dyn ObjectStore> = warehouse.store();
    let single = warehouse.path(folder).map_err(|e| storage(&e))?;
    let aside = warehouse
        .path(&format!("{folder}.moving"))
        .map_err(|e| storage(&e))?;
    let inside = warehouse
        .path(&format!("{folder}/legacy.parquet"))
        .map_err(|e| storage(&e))?;
    if store.head(&single).await.is_ok() {
        store
            .rename(&single, &aside)
            .await
            .map_err(|e| storage(&e))?;
    }
    // Also finishes a move that a crash interrupted.
    if store.head(&aside).await.is_ok() {
        store
            .rename(&aside, &inside)
            .await
            .map_err(|e| storage(&e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float32Array, Int32Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn signals(score: ArrayRef, extra: Option<ArrayRef>) -> RecordBatch {
        let mut fields = vec![
            Field::new("fraud_signal_id", DataType::Utf8, false),
            Field::new("fraud_score", score.data_type().clone(), true),
        ];
        let mut columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from(vec!["FS-1"])), score];
        if let Some(extra) = extra {
            fields.push(Field::new("colour", extra.data_type().clone(), true));
            columns.push(extra);
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    }

    #[test]
    fn missing_columns_are_null_and_types_are_cast() {
        let b = conform(
            "ml_fraud_signals",
            &[signals(Arc::new(Float32Array::from(vec![0.5])), None)],
        )
        .unwrap();
        assert_eq!(b.schema(), batch_schema("ml_fraud_signals").unwrap());
        assert_eq!(b.column_by_name("transaction_id").unwrap().null_count(), 1);
    }

    #[test]
    fn unknown_columns_tables_and_bad_casts_are_refused() {
        let extra = Arc::new(Int32Array::from(vec![1]));
        let err = conform(
            "ml_fraud_signals",
            &[signals(
                Arc::new(Float32Array::from(vec![0.5])),
                Some(extra),
            )],
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown column \"colour\""),
            "{err}"
        );
        let err = conform(
            "ml_fraud_signals",
            &[signals(Arc::new(StringArray::from(vec!["high"])), None)],
        )
        .unwrap_err();
        assert!(err.to_string().contains("fraud_score"), "{err}");
        assert!(matches!(
            conform("transactions", &[]).unwrap_err(),
            AppendError::UnknownTable(_)
        ));
    }

    #[tokio::test]
    async fn a_single_file_table_becomes_a_folder_and_appends_add_files() {
        let dir = tempfile::tempdir().unwrap();
        let w = Warehouse::open(dir.path().to_str().unwrap()).unwrap();
        let batch = conform(
            "ml_fraud_signals",
            &[signals(Arc::new(Float32Array::from(vec![0.5])), None)],
        )
        .unwrap();
        let single = dir
            .path()
            .join("batch_parquet_data/ml_fraud_signals.parquet");
        std::fs::create_dir_all(single.parent().unwrap()).unwrap();
        std::fs::write(&single, parquet_bytes(&batch, Compression::SNAPPY).unwrap()).unwrap();
        assert_eq!(append(&w, "ml_fraud_signals", &batch).await.unwrap(), 1);
        assert_eq!(append(&w, "ml_fraud_signals", &batch).await.unwrap(), 1);
        let mut names: Vec<String> = std::fs::read_dir(&single)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(names[0], "legacy.parquet");
        assert!(names[1].starts_with("part-") && names[1].ends_with(".parquet"));
    }
}
