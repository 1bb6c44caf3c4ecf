//! `recon`: the server binary. The Flight SQL server (`recon serve`) is the next
//! issue; until then the binary only reports its version.

fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("--version") | Some("-V") => {
            println!("recon {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        _ => anyhow::bail!(
            "recon {}: `recon serve` is not implemented yet",
            env!("CARGO_PKG_VERSION")
        ),
    }
}
