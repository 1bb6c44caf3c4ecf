//! `recon-cli` against a running server: `sql` in each format (Parquet read
//! back), `--output`, `refresh`, `status`, the shell fed through standard
//! input, and errors (bad SQL, unreachable server) as a non-zero exit with the
//! server's message.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use recon_integration_tests::{TestServer, free_port, recon_binary};

fn cli(port: u16, args: &[&str]) -> Output {
    let bin = recon_binary().with_file_name("recon-cli");
    assert!(
        bin.exists(),
        "build it first: cargo build -p recon-client --bin recon-cli"
    );
    Command::new(bin)
        .args(["--port", &port.to_string()])
        .args(args)
        .output()
        .expect("run recon-cli")
}

/// Runs the shell with `input` on standard input.
fn shell(port: u16, input: &str) -> Output {
    let bin = recon_binary().with_file_name("recon-cli");
    let home = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(bin)
        .args(["--port", &port.to_string()])
        .env("HOME", home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run recon-cli");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes())
        .expect("write the input");
    child.wait_with_output().expect("shell output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_formats_refresh_and_errors() {
    let server = TestServer::start(|_| {}).await;
    let port: u16 = server.url.rsplit(':').next().unwrap().parse().unwrap();
    let sql = "SELECT merchant_id, merchant_name FROM merchants ORDER BY merchant_id LIMIT 2";
    let table = tokio::task::spawn_blocking(move || cli(port, &["sql", sql]))
        .await
        .unwrap();
    assert!(table.status.success(), "{}", text(&table.stderr));
    let out = text(&table.stdout);
    assert!(out.starts_with("+-------------+"), "{out}");
    assert!(out.contains("| merchant_id | merchant_name |"), "{out}");

    let csv = tokio::task::spawn_blocking(move || cli(port, &["sql", sql, "--format", "csv"]))
        .await
        .unwrap();
    let out = text(&csv.stdout);
    assert_eq!(
        out.lines().next(),
        Some("merchant_id,merchant_name"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 3, "{out}");

    let file = server.warehouse.path().join("out.json");
    let path = file.display().to_string();
    let json = tokio::task::spawn_blocking(move || {
        cli(port, &["sql", sql, "--format", "json", "--output", &path])
    })
    .await
    .unwrap();
    assert!(json.status.success(), "{}", text(&json.stderr));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0]["merchant_id"].is_string());

    let file = server.warehouse.path().join("out.parquet");
    let path = file.display().to_string();
    let parquet = tokio::task::spawn_blocking(move || {
        cli(
            port,
            &["sql", sql, "--format", "parquet", "--output", &path],
        )
    })
    .await
    .unwrap();
    assert!(parquet.status.success(), "{}", text(&parquet.stderr));
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&file).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    let batches: Vec<_> = reader.map(Result::unwrap).collect();
    let expected = recon_integration_tests::query(&mut server.sql_client().await, sql)
        .await
        .unwrap();
    assert_eq!(
        recon_integration_tests::table(&batches),
        recon_integration_tests::table(&expected)
    );

    let refresh = tokio::task::spawn_blocking(move || cli(port, &["refresh", "final_index"]))
        .await
        .unwrap();
    assert!(refresh.status.success(), "{}", text(&refresh.stderr));
    assert!(text(&refresh.stdout).contains("final_index"));

    let bad = tokio::task::spawn_blocking(move || cli(port, &["sql", "SELEC nonsense"]))
        .await
        .unwrap();
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("SELEC"), "{}", text(&bad.stderr));
    let missing = tokio::task::spawn_blocking(move || cli(port, &["sql", "SELECT * FROM nope"]))
        .await
        .unwrap();
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("nope"),
        "{}",
        text(&missing.stderr)
    );

    let closed = free_port();
    let unreachable = tokio::task::spawn_blocking(move || cli(closed, &["sql", "SELECT 1"]))
        .await
        .unwrap();
    assert!(!unreachable.status.success());
    assert!(
        text(&unreachable.stderr).contains("cannot connect"),
        "{}",
        text(&unreachable.stderr)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_and_status() {
    let server = TestServer::start(|_| {}).await;
    let port: u16 = server.url.rsplit(':').next().unwrap().parse().unwrap();
    let input = "\\d\n\\d merchants\nSELECT count(*)\n  AS merchant_count\nFROM merchants;\n\
                 SELEC broken;\n\\d no_such_table\nSELECT 'still' AS going;\n\\q\nSELECT 'after quit';\n";
    let out = tokio::task::spawn_blocking(move || shell(port, input))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    // \d lists the tables, \d NAME describes one.
    assert!(stdout.contains("| aggregator_statements"), "{stdout}");
    assert!(stdout.contains("| merchant_name"), "{stdout}");
    // A statement over three lines, its count matching a direct query.
    let expected = recon_integration_tests::query(
        &mut server.sql_client().await,
        "SELECT count(*) AS merchant_count FROM merchants",
    )
    .await
    .unwrap();
    let expected = recon_integration_tests::table(&expected);
    let count_line = expected.lines().nth(3).unwrap();
    assert!(stdout.contains(count_line), "{stdout}");
    // Errors are reported and the shell goes on; nothing runs after \q.
    assert!(stderr.contains("SELEC"), "{stderr}");
    assert!(stderr.contains("no table named no_such_table"), "{stderr}");
    assert!(stdout.contains("| still"), "{stdout}");
    assert!(!stdout.contains("after quit"), "{stdout}");

    let status = tokio::task::spawn_blocking(move || cli(port, &["status"]))
        .await
        .unwrap();
    assert!(status.status.success(), "{}", text(&status.stderr));
    let stdout = text(&status.stdout);
    assert!(stdout.contains("Ingest"), "{stdout}");
    assert!(stdout.contains("Index snapshots"), "{stdout}");
    let merchants = recon_integration_tests::query(
        &mut server.sql_client().await,
        "SELECT count(*) FROM merchants",
    )
    .await
    .unwrap();
    let n = recon_integration_tests::first_row(&recon_integration_tests::table(&merchants));
    let row = stdout
        .lines()
        .find(|l| l.starts_with("| merchants "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(row.contains(&format!("| {n} ")), "{row} vs {n}");
    server.stop().await;
}
