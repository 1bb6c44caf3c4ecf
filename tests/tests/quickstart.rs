//! The README's first command, `scripts/quickstart.sh`, run non-interactively
//! (`--exit-after-print`) on free loopback ports with the binaries the test
//! build made: it must start the broker and the server, generate data, refresh
//! the indexes and print the connection details and the example queries'
//! results — then stop everything it started.

use std::process::Command;

use recon_integration_tests::{free_port, recon_binary};

#[test]
fn quickstart_prints_connection_details_and_results() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let quickstart_dir = dir.path().join("qs");
    let flight_port = free_port();
    let out = Command::new("bash")
        .arg(root.join("scripts/quickstart.sh"))
        .args(["--exit-after-print", "--transactions", "3000"])
        .env("QUICKSTART_DIR", &quickstart_dir)
        .env("RECON_BIN_DIR", recon_binary().parent().unwrap())
        .env("BROKER_PORT", free_port().to_string())
        .env("FLIGHT_PORT", flight_port.to_string())
        .env("HTTP_PORT", free_port().to_string())
        .output()
        .expect("run the quickstart");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("jdbc:arrow-flight-sql://127.0.0.1:{flight_port}")),
        "{stdout}"
    );
    assert!(stdout.contains("adbc_driver_flightsql"), "{stdout}");
    // The example queries printed result tables with data in them.
    assert!(stdout.contains("| reconciliation_status |"), "{stdout}");
    assert!(stdout.contains("| MATCHED "), "{stdout}");
    assert!(stdout.contains("| UNMATCHED "), "{stdout}");
    assert!(stdout.contains("| merchant_kpi"), "{stdout}");
    for view in ["batch_index", "final_index", "merchant_daily_kpi"] {
        assert!(stdout.contains(&format!("| {view} ")), "{stdout}");
    }
    // Everything it started is stopped: the Flight port is free again.
    assert!(std::net::TcpListener::bind(("127.0.0.1", flight_port)).is_ok());
    assert!(quickstart_dir.join("logs/recon.log").exists());
}
