//! Fidelity: our SQL functions against CPython running the seed's functions.
//!
//! `tests/fidelity/generate.py` draws ≥100,000 seeded random inputs per function
//! plus edge cases (NULL, '', NaN, ±inf, -0.0, exact ties, huge values,
//! non-ASCII text) and computes the expected outputs with the seed's Python code.
//! This test loads those cases into a table, evaluates the function through SQL
//! (for string arguments: as Utf8, LargeUtf8 and Utf8View) and compares every
//! row, floats by their bits.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use serde_json::Value;

const ROWS: usize = 100_000;
const BATCH: usize = 8192;

/// The crate's folder, read at run time: a build reused from another checkout
/// must still read this checkout's files.
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// Runs the Python generator once per test binary and returns its output folder.
fn generated() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let here = manifest_dir().join("tests/fidelity");
        let out = std::env::temp_dir().join(format!("recon-fidelity-{}", std::process::id()));
        let status = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
            .arg(here.join("generate.py"))
            .arg(&out)
            .args(["--rows", &ROWS.to_string()])
            .current_dir(&here)
            .status()
            .expect("python3 must be installed to run the fidelity test");
        assert!(status.success(), "generate.py failed");
        out
    })
}

#[derive(Clone, Copy)]
enum Kind {
    Float,
    Text,
}

struct Cases {
    columns: Vec<ArrayRef>,
    expected: Vec<Value>,
}

fn float_of(v: &Value) -> Option<f64> {
    v.as_str()
        .map(|h| f64::from_bits(u64::from_str_radix(h, 16).expect("hex float")))
}

fn load(function: &str, kinds: &[Kind]) -> Cases {
    let text = std::fs::read_to_string(generated().join(format!("{function}.jsonl"))).unwrap();
    let rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(rows.len() >= ROWS, "{function}: only {} cases", rows.len());
    let columns = kinds
        .iter()
        .enumerate()
        .map(|(i, kind)| -> ArrayRef {
            let arg = |r: &Value| r["args"][i].clone();
            match kind {
                Kind::Float => Arc::new(
                    rows.iter()
                        .map(|r| float_of(&arg(r)))
                        .collect::<Float64Array>(),
                ),
                Kind::Text => Arc::new(
                    rows.iter()
                        .map(|r| arg(r).as_str().map(str::to_owned))
                        .collect::<StringArray>(),
                ),
            }
        })
        .collect();
    let expected = rows.into_iter().map(|mut r| r["out"].take()).collect();
    // The file is read once per function; drop it to leave /tmp clean.
    let _ = std::fs::remove_file(generated().join(format!("{function}.jsonl")));
    Cases { columns, expected }
}

/// Evaluates `sql_call` (over columns a, b) on the cases, in 8192-row batches.
async fn run(cases: &Cases, sql_call: &str) -> ArrayRef {
    let names = ["a", "b"];
    let fields: Vec<Field> = cases
        .columns
        .iter()
        .zip(names)
        .map(|(c, n)| Field::new(n, c.data_type().clone(), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let total = cases.columns[0].len();
    let batches: Vec<RecordBatch> = (0..total)
        .step_by(BATCH)
        .map(|start| {
            let len = BATCH.min(total - start);
            let cols = cases.columns.iter().map(|c| c.slice(start, len)).collect();
            RecordBatch::try_new(schema.clone(), cols).unwrap()
        })
        .collect();
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    recon_udfs::register_all(&ctx, &recon_udfs::Rules::default());
    ctx.register_table(
        "t",
        Arc::new(MemTable::try_new(schema, vec![batches]).unwrap()),
    )
    .unwrap();
    let out = ctx
        .sql(&format!("SELECT {sql_call} FROM t"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let arrays: Vec<ArrayRef> = out.iter().map(|b| b.column(0).clone()).collect();
    let refs: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
    datafusion::arrow::compute::concat(&refs).unwrap()
}

fn compare(function: &str, call: &str, got: &ArrayRef, cases: &Cases) {
    assert_eq!(got.len(), cases.expected.len(), "{call}: row count");
    assert_eq!(got.null_count(), 0, "{call}: the seed never returns None");
    let mut mismatches = Vec::new();
    for (row, want) in cases.expected.iter().enumerate() {
        let ok = match got.data_type() {
            DataType::Float64 => {
                let v = got.as_primitive::<Float64Type>().value(row);
                Some(v.to_bits()) == float_of(want).map(f64::to_bits)
            }
            DataType::Utf8 => Some(got.as_string::<i32>().value(row)) == want.as_str(),
            other => panic!("{function}: unexpected result type {other}"),
        };
        if !ok {
            let args: Vec<String> = cases
                .columns
                .iter()
                .map(|c| datafusion::arrow::util::display::array_value_to_string(c, row).unwrap())
                .collect();
            mismatches.push(format!(
                "row {row}: args {args:?} want {want} got {}",
                datafusion::arrow::util::display::array_value_to_string(got, row).unwrap()
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{call}: {} of {} rows differ from CPython, first: {:#?}",
        mismatches.len(),
        cases.expected.len(),
        &mismatches[..mismatches.len().min(10)]
    );
}

/// The string column `c` as each of the three string types.
fn string_forms(c: &str) -> [String; 3] {
    [
        c.to_owned(),
        format!("arrow_cast({c}, 'LargeUtf8')"),
        format!("arrow_cast({c}, 'Utf8View')"),
    ]
}

#[tokio::test]
async fn calc_discrepancy_matches_cpython() {
    let cases = load("calc_discrepancy", &[Kind::Float, Kind::Float]);
    let call = "calc_discrepancy(a, b)";
    compare("calc_discrepancy", call, &run(&cases, call).await, &cases);
}

#[tokio::test]
async fn flag_compliance_matches_cpython() {
    let cases = load("flag_compliance", &[Kind::Float, Kind::Text]);
    for flags in string_forms("b") {
        let call = format!("flag_compliance(a, {flags})");
        compare("flag_compliance", &call, &run(&cases, &call).await, &cases);
    }
}

#[tokio::test]
async fn mask_sensitive_matches_cpython() {
    let cases = load("mask_sensitive", &[Kind::Text]);
    for user in string_forms("a") {
        let call = format!("mask_sensitive({user})");
        compare("mask_sensitive", &call, &run(&cases, &call).await, &cases);
    }
}

#[tokio::test]
async fn derive_status_matches_cpython() {
    let cases = load("derive_status", &[Kind::Text, Kind::Text]);
    for (cur, bank) in string_forms("a")
        .into_iter()
        .zip(string_forms("b").into_iter().rev())
    {
        let call = format!("derive_status({cur}, {bank})");
        compare("derive_status", &call, &run(&cases, &call).await, &cases);
    }
}

#[tokio::test]
async fn kpi_calculation_matches_cpython() {
    let cases = load("kpi_calculation", &[Kind::Text, Kind::Float]);
    for merchant in string_forms("a") {
        let call = format!("kpi_calculation({merchant}, b)");
        compare("kpi_calculation", &call, &run(&cases, &call).await, &cases);
    }
}
