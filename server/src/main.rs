//! `recon`: the server binary. A thin shell over the library: parse the command
//! line, load the configuration, set up logging, run the command.

use clap::{Parser, Subcommand};
use recon_server::config::ConfigArgs;
use tracing_subscriber::EnvFilter;

/// recon: payment reconciliation as a live SQL service.
#[derive(Debug, Parser)]
#[command(name = "recon", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: Arrow Flight SQL over the warehouse's tables, until
    /// SIGINT/SIGTERM. Logs go to stderr; `RUST_LOG` sets the level (default info).
    Serve(ConfigArgs),
    /// Print the effective configuration (defaults, file, env and flags) as TOML.
    PrintConfig(ConfigArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::PrintConfig(args) => {
            print!("{}", toml::to_string(&args.load()?)?);
            Ok(())
        }
        Command::Serve(args) => {
            let config = args.load()?;
            tracing_subscriber::fmt()
                .with_env_filter(
                    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
                )
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(recon_server::serve::run(config))
        }
    }
}
