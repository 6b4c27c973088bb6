//! `duo-gateway`: the DUO gateway runtime and its companions (demo, simulators, config check).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "duo-gateway", version, about = "DUO imaging gateway (XCA-I, Mitz consent, imaging timeline)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway with a configuration file (reloaded, with its certificates, when they change).
    Serve {
        /// Path of the YAML configuration.
        #[arg(long, short, env = "DUO_CONFIG")]
        config: PathBuf,
    },
    /// Validate a configuration file and exit (0 when valid, 1 with a one-line reason otherwise).
    CheckConfig {
        /// Path of the YAML configuration.
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(std::io::stderr).try_init();
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
        Command::Serve { config } => {
            init_tracing();
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("duo-gateway: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            rt.block_on(serve(config))
        }
    }
}

async fn serve(path: PathBuf) -> ExitCode {
    duo_runtime::tls::install_crypto_provider();
    let config = match duo_runtime::config::Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let hooks: duo_runtime::server::run::HookFactory = Arc::new(duo_runtime::gateway::hooks::from_config);
    let running = match duo_runtime::server::run::start(config, Some(path), hooks).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("duo-gateway: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(listen = %running.addr, ops = %running.ops_addr, "duo-gateway serving");
    duo_runtime::server::run::shutdown_signal().await;
    tracing::info!("shutting down: draining open requests");
    running.stop().await;
    ExitCode::SUCCESS
}
