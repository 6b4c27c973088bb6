//! `duo-gateway`: the DUO gateway runtime and its companions (demo, simulators, config check).

use std::net::SocketAddr;
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
    /// Run the Mitz simulator (closed question, open question, subscriptions) over mutual TLS until
    /// interrupted. The consents file format is documented in `duo_runtime::sim::mitz`.
    MitzSim {
        /// YAML file of consents, locations and faults.
        #[arg(long)]
        config: PathBuf,
        /// Address to listen on, e.g. 127.0.0.1:8444.
        #[arg(long)]
        listen: SocketAddr,
        /// Server certificate chain, PEM.
        #[arg(long)]
        cert: PathBuf,
        /// Server private key, PEM.
        #[arg(long)]
        key: PathBuf,
        /// CA certificates, PEM, that clients' certificates must chain to.
        #[arg(long)]
        trust_bundle: PathBuf,
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
        Command::MitzSim {
            config,
            listen,
            cert,
            key,
            trust_bundle,
        } => match run_mitz_sim(config, listen, cert, key, trust_bundle) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mitz-sim: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run_mitz_sim(
    config: PathBuf,
    listen: SocketAddr,
    cert_file: PathBuf,
    key_file: PathBuf,
    trust_bundle_file: PathBuf,
) -> Result<(), String> {
    use duo_runtime::sim::mitz;
    let cfg = mitz::MitzSimConfig::load(&config).map_err(|e| e.to_string())?;
    let tls = duo_runtime::tls::TlsMaterial::load(&duo_runtime::config::TlsConfig {
        cert_file,
        key_file,
        trust_bundle_file,
    })
    .map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let sim = mitz::start(cfg, listen, &tls)
            .await
            .map_err(|e| e.to_string())?;
        println!("mitz-sim listening on {}", sim.base_url());
        tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
        sim.shutdown().await;
        Ok(())
    })
}
