//! `recon-cli` against a running server: `sql` in each format, `--output`,
//! `refresh`, and errors (bad SQL, unreachable server) as a non-zero exit with
//! the server's message.

use std::process::{Command, Output};

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
