//! `recon-cli`: run SQL against a recon server and print the result
//! (`sql`), or refresh an index snapshot (`refresh`). Connection flags also
//! read `RECON_HOST`, `RECON_PORT`, `RECON_USER`, `RECON_PASSWORD`, `RECON_TLS`.
//! Errors (unreachable server, bad SQL) print the server's message and exit 1.

use std::io::Write;

use clap::{Parser, Subcommand};
use recon_client::{Connection, Format};

#[derive(Debug, Parser)]
#[command(
    name = "recon-cli",
    version,
    about = "Command line for the recon Flight SQL server"
)]
struct Cli {
    /// Server host.
    #[arg(long, env = "RECON_HOST", default_value = "127.0.0.1", global = true)]
    host: String,
    /// Flight SQL port.
    #[arg(long, env = "RECON_PORT", default_value_t = 50051, global = true)]
    port: u16,
    /// User (Basic login); with --password.
    #[arg(long, env = "RECON_USER", global = true)]
    user: Option<String>,
    /// Password for --user.
    #[arg(long, env = "RECON_PASSWORD", global = true)]
    password: Option<String>,
    /// Connect with TLS.
    #[arg(long, env = "RECON_TLS", global = true)]
    tls: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs one SQL statement and prints its result.
    Sql {
        /// The statement.
        query: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// Write to this file instead of standard output.
        #[arg(long)]
        output: Option<std::path::PathBuf>,
    },
    /// Refreshes an index snapshot (batch_index, final_index, merchant_daily_kpi).
    Refresh {
        /// The view.
        view: String,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let connection = Connection {
        host: cli.host,
        port: cli.port,
        user: cli.user,
        password: cli.password,
        tls: cli.tls,
    };
    let mut client = connection.connect().await?;
    match cli.command {
        Command::Sql {
            query,
            format,
            output,
        } => {
            let batches = recon_client::query(&mut client, &query).await?;
            match output {
                Some(path) => {
                    let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
                    recon_client::write(&batches, format, &mut file)?;
                    file.flush()?;
                }
                None => recon_client::write(&batches, format, &mut std::io::stdout().lock())?,
            }
        }
        Command::Refresh { view } => {
            let batches =
                recon_client::query(&mut client, &format!("REFRESH INDEX {view}")).await?;
            recon_client::write(&batches, Format::Table, &mut std::io::stdout().lock())?;
        }
    }
    Ok(())
}
