//! Runs every `tests/slt/*.slt` file through the `datafusion-sqllogictest`
//! engine, in a session with the five functions registered (default rules).
//!
//! `cargo test -p recon-udfs --test sqllogictests` checks the files; add
//! `-- --complete` to rewrite their expected results from the current output.
//! Any failing record fails the test, with every error listed.

use std::path::{Path, PathBuf};

use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_sqllogictest::{DataFusion, df_value_validator, value_normalizer};
use indicatif::ProgressBar;
use sqllogictest::strict_column_validator;

fn slt_files() -> Vec<PathBuf> {
    // Read at run time: a build reused from another checkout must test this one's files.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let dir = manifest.join("tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/slt exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    files
}

fn session() -> SessionContext {
    let ctx = SessionContext::new_with_config(
        SessionConfig::new()
            .with_target_partitions(2)
            .with_information_schema(true),
    );
    recon_udfs::register_all(&ctx, &recon_udfs::Rules::default());
    ctx
}

fn runner(
    path: &Path,
) -> sqllogictest::Runner<DataFusion, impl sqllogictest::MakeConnection<Conn = DataFusion>> {
    let relative = PathBuf::from(path.file_name().expect("file name"));
    let mut runner = sqllogictest::Runner::new(move || {
        let relative = relative.clone();
        async move { Ok(DataFusion::new(session(), relative, ProgressBar::hidden())) }
    });
    runner.with_column_validator(strict_column_validator);
    runner.with_normalizer(value_normalizer);
    runner.with_validator(df_value_validator);
    runner
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let complete = std::env::args().any(|a| a == "--complete");
    let files = slt_files();
    assert!(!files.is_empty(), "no .slt files found");
    let mut failures = Vec::new();
    for path in &files {
        let mut runner = runner(path);
        let result = if complete {
            runner
                .update_test_file(
                    path,
                    " ",
                    df_value_validator,
                    value_normalizer,
                    strict_column_validator,
                )
                .await
                .map_err(|e| e.to_string())
        } else {
            runner.run_file_async(path).await.map_err(|e| e.to_string())
        };
        match result {
            Ok(()) => println!("ok   {}", path.display()),
            Err(e) => {
                println!("FAIL {}\n{e}", path.display());
                failures.push(path.clone());
            }
        }
    }
    println!(
        "{} passed, {} failed",
        files.len() - failures.len(),
        failures.len()
    );
    if !failures.is_empty() {
        std::process::exit(1);
    }
}
