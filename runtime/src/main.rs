//! `duo-gateway`: the DUO gateway runtime (`serve`) and its configuration check. The demo and the
//! simulators are the test kit's binary, `duo-testbed` (runtime/testkit).

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
    /// Run the gateway with a configuration file (reloaded, with its certificates, when they change).
    Serve {
        /// Path of the YAML configuration.
        #[arg(long, short, env = "DUO_CONFIG")]
        config: PathBuf,
    },
    /// Validate a configuration file as `serve` would load it (fields, then the TLS files, Mitz
    /// clients and audit sink it names) and exit: 0 when valid, 1 with a one-line reason otherwise.
    CheckConfig {
        /// Path of the YAML configuration.
        #[arg(long, short)]
        config: PathBuf,
        /// Check the fields only, not the files they name (a config checked away from its host,
        /// e.g. in a GitOps pipeline).
        #[arg(long)]
        fields_only: bool,
    },
}

/// The multi-threaded tokio runtime; `None` (after a one-line reason on stderr) when the OS refuses it.
fn async_runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("duo-gateway: cannot start the async runtime: {e}");
            None
        }
    }
}

fn main() -> ExitCode {
    duo_runtime::tune_allocator();
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig {
            config,
            fields_only,
        } => {
            let Some(rt) = async_runtime() else {
                return ExitCode::FAILURE;
            };
            match rt.block_on(check_config(&config, fields_only)) {
                Ok(()) => {
                    println!("{}: valid", config.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve { config } => {
            duo_runtime::init_tracing();
            let Some(rt) = async_runtime() else {
                return ExitCode::FAILURE;
            };
            rt.block_on(serve(config))
        }
    }
}

/// `check-config`: the file as `serve` would load it, TLS files and Mitz clients included.
async fn check_config(path: &std::path::Path, fields_only: bool) -> Result<(), String> {
    duo_runtime::tls::install_crypto_provider();
    let config = duo_runtime::config::Config::load(path).map_err(|e| e.to_string())?;
    if fields_only {
        return Ok(());
    }
    duo_runtime::server::run::check(config, &duo_runtime::server::run::default_hooks())
        .await
        .map_err(|e| format!("duo-gateway: {e}"))
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
    let hooks = duo_runtime::server::run::default_hooks();
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
