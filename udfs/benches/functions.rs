//! Criterion benches for the five functions, each next to the fastest equivalent
//! we could write from DataFusion's built-in expressions.
//!
//! Every case evaluates a physical expression over one seeded 8192-row batch
//! (about 5% NULLs), single-threaded, so rows/s is per core. After criterion's
//! own report, a table prints rows/s for recon and the built-in equivalent and
//! their ratio, all measured in this run.
//!
//! Run: `cargo bench -p recon-udfs --bench functions`

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use datafusion::arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::DFSchema;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ROWS: usize = 8192;

/// One function: the recon calls (array, scalar) and its built-in equivalent.
struct Case {
    name: &'static str,
    recon_array: &'static str,
    /// With one argument constant; `None` where the only argument would be constant.
    recon_scalar: Option<&'static str>,
    builtin: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "calc_discrepancy",
        recon_array: "calc_discrepancy(amount, amount_posted)",
        recon_scalar: Some("calc_discrepancy(amount, 100.0)"),
        builtin: "coalesce(round(amount_posted - amount, 2), 0.0)",
    },
    Case {
        name: "kpi_calculation",
        recon_array: "kpi_calculation(merchant_id, amount)",
        recon_scalar: Some("kpi_calculation('MCH-A001', amount)"),
        builtin: "CASE WHEN starts_with(merchant_id, 'MCH-A') THEN round(coalesce(amount, 0.0) * 1.1, 2) \
                  ELSE round(coalesce(amount, 0.0), 2) END",
    },
    Case {
        name: "flag_compliance",
        recon_array: "flag_compliance(fraud_score, policy_flags)",
        recon_scalar: Some("flag_compliance(fraud_score, 'AML,KYC')"),
        builtin: "CASE WHEN coalesce(fraud_score, 0.0) > 0.8 OR upper(coalesce(policy_flags, '')) LIKE '%BLACKLIST%' \
                  THEN 'HIGH_RISK' WHEN upper(coalesce(policy_flags, '')) LIKE '%KYC%' THEN 'REQUIRES_KYC' ELSE 'OK' END",
    },
    Case {
        name: "mask_sensitive",
        recon_array: "mask_sensitive(user_id)",
        recon_scalar: None,
        builtin: "coalesce(rpad(left(user_id, 2), character_length(user_id), '*'), '')",
    },
    Case {
        name: "derive_status",
        recon_array: "derive_status(status, bank_status)",
        recon_scalar: Some("derive_status(status, 'MATCHED')"),
        builtin: "CASE WHEN bank_status IS NULL OR bank_status = '' THEN coalesce(nullif(status, ''), 'UNKNOWN') \
                  WHEN upper(bank_status) = 'MATCHED' THEN coalesce(nullif(status, ''), 'MATCHED') \
                  WHEN upper(bank_status) = 'UNMATCHED' THEN 'DISCREPANCY' \
                  ELSE coalesce(nullif(status, ''), bank_status) END",
    },
];

/// The seeded input batch: the columns the reconciliation views feed the functions.
fn batch() -> RecordBatch {
    let mut rng = StdRng::seed_from_u64(42);
    let mut maybe = |rng: &mut StdRng| rng.random_bool(0.95);
    let money = |rng: &mut StdRng, m: &mut dyn FnMut(&mut StdRng) -> bool| -> Float64Array {
        (0..ROWS)
            .map(|_| m(rng).then(|| (rng.random_range(5.0..1500.0f64) * 100.0).round() / 100.0))
            .collect()
    };
    let amount = money(&mut rng, &mut maybe);
    let posted = money(&mut rng, &mut maybe);
    let score: Float64Array = (0..ROWS)
        .map(|_| maybe(&mut rng).then(|| rng.random::<f64>()))
        .collect();
    let pick =
        |rng: &mut StdRng, options: &[&str]| options[rng.random_range(0..options.len())].to_owned();
    let flags: StringArray = (0..ROWS)
        .map(|_| {
            maybe(&mut rng).then(|| {
                pick(
                    &mut rng,
                    &[
                        "KYC",
                        "AML",
                        "REGIONAL_LIMIT",
                        "BLACKLIST",
                        "AML,KYC",
                        "kyc,regional_limit",
                    ],
                )
            })
        })
        .collect();
    let users: StringArray = (0..ROWS)
        .map(|_| maybe(&mut rng).then(|| format!("USR-{:04}", rng.random_range(0..10_000))))
        .collect();
    let merchants: StringArray = (0..ROWS)
        .map(|_| {
            maybe(&mut rng).then(|| {
                format!(
                    "MCH-{}{:03}",
                    pick(&mut rng, &["A", "B", "C"]),
                    rng.random_range(0..1000)
                )
            })
        })
        .collect();
    let status: StringArray = (0..ROWS)
        .map(|_| {
            maybe(&mut rng)
                .then(|| pick(&mut rng, &["PENDING", "APPROVED", "DECLINED", "REFUNDED"]))
        })
        .collect();
    let bank: StringArray = (0..ROWS)
        .map(|_| maybe(&mut rng).then(|| pick(&mut rng, &["MATCHED", "UNMATCHED", "matched", ""])))
        .collect();
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("amount", Arc::new(amount)),
        ("amount_posted", Arc::new(posted)),
        ("fraud_score", Arc::new(score)),
        ("policy_flags", Arc::new(flags)),
        ("user_id", Arc::new(users)),
        ("merchant_id", Arc::new(merchants)),
        ("status", Arc::new(status)),
        ("bank_status", Arc::new(bank)),
    ];
    let schema = Schema::new(
        columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    );
    RecordBatch::try_new(
        Arc::new(schema),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .expect("valid batch")
}

fn physical(ctx: &SessionContext, schema: &DFSchema, sql: &str) -> Arc<dyn PhysicalExpr> {
    // The same steps a query takes: type coercion, simplification, physical planning.
    let expr = ctx.parse_sql_expr(sql, schema).expect("parses");
    let info = SimplifyContext::builder()
        .with_schema(Arc::new(schema.clone()))
        .build();
    let simplifier = ExprSimplifier::new(info);
    let expr = simplifier.coerce(expr, schema).expect("coerces");
    let expr = simplifier.simplify(expr).expect("simplifies");
    ctx.create_physical_expr(expr, schema).expect("plans")
}

/// Per-iteration times seen by criterion, per benchmark id, for the summary table.
type Samples = Arc<Mutex<BTreeMap<String, Vec<f64>>>>;

fn bench_expr(
    c: &mut Criterion,
    samples: &Samples,
    id: &str,
    expr: Arc<dyn PhysicalExpr>,
    batch: &RecordBatch,
) {
    let mut group = c.benchmark_group(id.split('/').next().unwrap_or(id));
    group.throughput(Throughput::Elements(ROWS as u64));
    let samples = samples.clone();
    let key = id.to_owned();
    group.bench_function(id.split_once('/').map_or(id, |(_, r)| r), move |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let out = expr
                    .evaluate(black_box(batch))
                    .unwrap_or_else(|e| panic!("{key}: {e}"));
                black_box(out);
            }
            let elapsed = start.elapsed();
            let per_iter = elapsed.as_secs_f64() / iters as f64;
            samples
                .lock()
                .expect("lock")
                .entry(key.clone())
                .or_default()
                .push(per_iter);
            elapsed
        })
    });
    group.finish();
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let batch = batch();
    let schema = DFSchema::try_from(batch.schema().as_ref().clone()).expect("schema");
    let ctx = SessionContext::new();
    recon_udfs::register_all(&ctx, &recon_udfs::Rules::default());
    let samples: Samples = Arc::default();
    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for case in CASES {
        let runs = [
            ("recon_array", Some(case.recon_array)),
            ("recon_scalar", case.recon_scalar),
            ("builtin", Some(case.builtin)),
        ];
        for (kind, sql) in runs.into_iter().filter_map(|(k, s)| Some((k, s?))) {
            let expr = physical(&ctx, &schema, sql);
            let out_type = expr.data_type(batch.schema().as_ref()).expect("type");
            assert!(
                matches!(
                    out_type,
                    DataType::Float64 | DataType::Utf8 | DataType::Utf8View
                ),
                "{sql}: {out_type}"
            );
            bench_expr(
                &mut c,
                &samples,
                &format!("{}/{kind}", case.name),
                expr,
                &batch,
            );
        }
    }
    c.final_summary();
    // `cargo test --benches` runs each case once as a smoke test: no table then.
    if std::env::args().any(|a| a == "--bench") {
        print_summary(&samples.lock().expect("lock"));
    }
}

fn print_summary(samples: &BTreeMap<String, Vec<f64>>) {
    let rate = |key: &str| samples.get(key).map(|s| ROWS as f64 / median(s) / 1e6);
    println!("\nrows/s per core (median of criterion samples, 8192-row batches, this run):");
    println!(
        "{:<18} {:>14} {:>14} {:>14} {:>16}",
        "function", "recon M/s", "recon scalar", "built-in M/s", "recon/built-in"
    );
    for case in CASES {
        let (Some(recon), Some(builtin)) = (
            rate(&format!("{}/recon_array", case.name)),
            rate(&format!("{}/builtin", case.name)),
        ) else {
            continue;
        };
        let scalar = rate(&format!("{}/recon_scalar", case.name))
            .map_or("n/a".to_owned(), |r| format!("{r:.1}"));
        println!(
            "{:<18} {:>14.1} {:>14} {:>14.1} {:>15.2}x",
            case.name,
            recon,
            scalar,
            builtin,
            recon / builtin
        );
    }
}
