//! `recon-cli`: the command line for a recon server. `sql` runs one statement
//! and prints its result (table, CSV, JSON lines or Parquet), no command opens
//! the interactive shell, `refresh` writes an index snapshot, `status` shows
//! ingest, tables and snapshots, `generate` produces the seed's data set at
//! any scale. Connection flags also read `RECON_HOST`, `RECON_PORT`,
//! `RECON_USER`, `RECON_PASSWORD`, `RECON_TLS`. Errors (unreachable server,
//! bad SQL) print the server's message and exit 1.

use std::io::Write;

use clap::{Parser, Subcommand};
use recon_client::generate::{GenerateArgs, HttpAuth};
use recon_client::{Connection, Format};

#[derive(Debug, Parser)]
#[command(
    name = "recon-cli",
    version,
    about = "Command line for the recon Flight SQL server (no command: interactive shell)"
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
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs one SQL statement and prints its result.
    Sql {
        /// The statement.
        query: String,
        /// Output format (parquet is binary: use it with --output).
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// Write to this file instead of standard output.
        #[arg(long)]
        output: Option<std::path::PathBuf>,
    },
    /// The interactive shell (also what no command does).
    Repl,
    /// Refreshes an index snapshot (batch_index, final_index, merchant_daily_kpi).
    Refresh {
        /// The view.
        view: String,
    },
    /// Ingest lag per partition, table row counts, current index snapshots.
    Status,
    /// Generates the seed's data set: events to Kafka, batch tables into the
    /// warehouse (bulk ingest), ML signals to POST /ml_signals.
    Generate(GenerateArgs),
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
    match cli.command.unwrap_or(Command::Repl) {
        Command::Sql {
            query,
            format,
            output,
        } => {
            let result = recon_client::query(&mut client, &query).await?;
            match output {
                Some(path) => {
                    let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
                    recon_client::write(&result.batches, &result.schema, format, &mut file)?;
                    file.flush()?;
                }
                None => recon_client::write(
                    &result.batches,
                    &result.schema,
                    format,
                    &mut std::io::stdout().lock(),
                )?,
            }
        }
        Command::Repl => recon_client::repl::run(&mut client).await?,
        Command::Refresh { view } => {
            let result = recon_client::query(&mut client, &format!("REFRESH INDEX {view}")).await?;
            let mut out = std::io::stdout().lock();
            recon_client::write(&result.batches, &result.schema, Format::Table, &mut out)?;
        }
        Command::Status => {
            recon_client::status::report(&mut client, &mut std::io::stdout().lock()).await?;
        }
        Command::Generate(args) => {
            let auth = HttpAuth {
                basic: connection.user.clone().zip(connection.password.clone()),
            };
            recon_client::generate::run(&mut client, &args, &auth).await?;
        }
    }
    Ok(())
}
