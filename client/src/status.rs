//! `recon-cli status`: one overview of a running server — ingest position and
//! lag per partition, row counts of the tables, and the current snapshot of
//! each index — gathered with ordinary SQL over Flight SQL.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};

use crate::output::{Format, write};
use crate::{Client, query};

/// Tables whose row counts the overview shows.
pub const TABLES: [&str; 7] = [
    "transactions",
    "transactions_latest",
    "transactions_rejects",
    "aggregator_statements",
    "merchants",
    "policy_data",
    "ml_fraud_signals",
];

const INGEST_SQL: &str = "SELECT topic, partition, assigned, consumed_offset, high_watermark, \
     lag, records, rejects, last_flush, last_error FROM ingest_status ORDER BY partition";
const SNAPSHOTS_SQL: &str = "SELECT view, version, kind, run_id, created_at, rows, duration_ms \
     FROM index_snapshots WHERE current ORDER BY view";

/// Writes the overview to `out`. A section the server cannot answer (e.g. no
/// Kafka ingest configured) shows the server's message instead.
pub async fn report(client: &mut Client, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    writeln!(out, "Ingest")?;
    section(client, INGEST_SQL, out).await?;
    writeln!(out, "\nTables")?;
    let counts = row_counts(client).await?;
    write(
        std::slice::from_ref(&counts),
        &counts.schema(),
        Format::Table,
        out,
    )?;
    writeln!(out, "\nIndex snapshots (current)")?;
    section(client, SNAPSHOTS_SQL, out).await?;
    Ok(())
}

async fn section(
    client: &mut Client,
    sql: &str,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    match query(client, sql).await {
        Ok(result) if result.num_rows() == 0 => writeln!(out, "(none)")?,
        Ok(result) => write(&result.batches, &result.schema, Format::Table, out)?,
        Err(e) => writeln!(out, "(unavailable: {e})")?,
    }
    Ok(())
}

/// One row per table: its name and row count (NULL with a note when the table
/// cannot be counted).
async fn row_counts(client: &mut Client) -> anyhow::Result<RecordBatch> {
    let mut counts = Vec::new();
    let mut notes = Vec::new();
    for table in TABLES {
        match count(client, table).await {
            Ok(n) => {
                counts.push(Some(n));
                notes.push(None);
            }
            Err(e) => {
                counts.push(None);
                notes.push(Some(first_line(&e.to_string())));
            }
        }
    }
    let schema = Schema::new(vec![
        Field::new("table", DataType::Utf8, false),
        Field::new("rows", DataType::Int64, true),
        Field::new("note", DataType::Utf8, true),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(TABLES.to_vec())),
        Arc::new(Int64Array::from(counts)),
        Arc::new(StringArray::from(notes)),
    ];
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}

/// `SELECT count(*)` of one table.
pub async fn count(client: &mut Client, table: &str) -> anyhow::Result<i64> {
    let result = query(client, &format!("SELECT count(*) AS n FROM {table}")).await?;
    first_i64(&result.batches).ok_or_else(|| anyhow::anyhow!("no count returned for {table}"))
}

/// The first column of the first row, as an i64.
pub fn first_i64(batches: &[RecordBatch]) -> Option<i64> {
    let batch = batches.iter().find(|b| b.num_rows() > 0)?;
    let column = arrow::compute::cast(batch.column(0), &DataType::Int64).ok()?;
    let values = column.as_any().downcast_ref::<Int64Array>()?;
    values.is_valid(0).then(|| values.value(0))
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}
