//! `duo-gateway`: the DUO gateway runtime and its companions (demo, simulators, config check).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "duo-gateway",
    version,
    about = "DUO imaging gateway (XCA-I, Mitz consent, imaging timeline)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file and exit (0 when valid, 1 with a one-line reason otherwise).
    CheckConfig {
        /// Path of the YAML configuration.
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match duo_runtime::config::Config::load(&config) {
            Ok(_) => {
                println!("{}: valid", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
    }
}
