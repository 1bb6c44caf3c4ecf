//! Printing query results: an aligned table, CSV, JSON lines or Parquet.

use arrow::array::RecordBatch;
use arrow::datatypes::Schema;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// An aligned text table.
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON object per line.
    Json,
    /// A Parquet file (zstd); binary, so best with `--output`.
    Parquet,
}

/// Writes `batches` to `out` in `format`. `schema` is the result's schema, used
/// when there are no batches (a CSV header or an empty Parquet file still
/// carries the columns).
pub fn write(
    batches: &[RecordBatch],
    schema: &Schema,
    format: Format,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    match format {
        Format::Table => writeln!(
            out,
            "{}",
            arrow::util::pretty::pretty_format_batches(batches)?
        )?,
        Format::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(out);
            for batch in batches {
                writer.write(batch)?;
            }
            if batches.is_empty() {
                writer.write(&RecordBatch::new_empty(schema.clone().into()))?;
            }
        }
        Format::Json => {
            let mut writer = arrow::json::LineDelimitedWriter::new(out);
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            writer.write_batches(&refs)?;
            writer.finish()?;
        }
        Format::Parquet => write_parquet(batches, schema, out)?,
    }
    Ok(())
}

/// Parquet needs a seekable-free writer only for its footer, so it is built in
/// memory and copied to `out` (results printed by a CLI fit in memory anyway).
fn write_parquet(
    batches: &[RecordBatch],
    schema: &Schema,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .build();
    let mut buffer = Vec::new();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(&mut buffer, schema.clone().into(), Some(props))?;
    for batch in batches {
        writer.write(batch)?;
    }
    writer.close()?;
    out.write_all(&buffer)?;
    Ok(())
}
