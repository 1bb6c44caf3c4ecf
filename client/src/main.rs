//! `recon-cli`: placeholder until the Flight SQL server exists; it only reports its version.

fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("--version") | Some("-V") => {
            println!("recon-cli {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        _ => anyhow::bail!(
            "recon-cli {}: no commands are implemented yet",
            env!("CARGO_PKG_VERSION")
        ),
    }
}
