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
    /// Print an argon2 hash of a password for `[[auth.users]]` `password_hash`.
    /// The password is read from the first line of stdin unless given.
    HashPassword {
        /// The password (prefer stdin: flags end up in shell history).
        #[arg(long)]
        password: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::HashPassword { password } => {
            let password = match password {
                Some(p) => p,
                None => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            anyhow::ensure!(!password.is_empty(), "the password is empty");
            let hash = recon_server::flight::auth::hash_password(&password)
                .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?;
            println!("{hash}");
            Ok(())
        }
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
            // The gRPC/HTTP runtime; queries run on a runtime of their own
            // (`query_runtime`). Deeper stacks than the default 2 MiB leave
            // room to clone and drop deep plans here.
            tokio::runtime::Builder::new_multi_thread()
                .thread_stack_size(16 << 20)
                .enable_all()
                .build()?
                .block_on(recon_server::serve::run(config))
        }
    }
}
