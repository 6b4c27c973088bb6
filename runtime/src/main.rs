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
    /// Run the gateway with a configuration file (reloaded, with its certificates, when they change).
    Serve {
        /// Path of the YAML configuration.
        #[arg(long, short, env = "DUO_CONFIG")]
        config: PathBuf,
    },
    /// The main job on the embedded default: four hospitals (XDS, XDS, TLB, and one without consent) with
    /// their own gateways on loopback; a timeline query, a verified RAD-75 retrieve, the audit trail.
    Demo {
        /// Exit after the run instead of serving.
        #[arg(long)]
        once: bool,
        /// Print one JSON document instead of tables.
        #[arg(long)]
        json: bool,
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

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
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
        Command::Demo { once, json } => {
            if std::env::var_os("RUST_LOG").is_some() {
                init_tracing();
            }
            demo(once, json)
        }
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
            init_tracing();
            let Some(rt) = async_runtime() else {
                return ExitCode::FAILURE;
            };
            rt.block_on(serve(config))
        }
        Command::MitzSim {
            config,
            listen,
            cert,
            key,
            trust_bundle,
        } => match mitz_sim(config, listen, cert, key, trust_bundle) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mitz-sim: {e}");
                ExitCode::FAILURE
            }
        },
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

/// Without the test kit (the container image): what a user who asks for the demo or a simulator gets.
#[cfg(not(feature = "testkit"))]
const NO_TESTKIT: &str = "this duo-gateway is built without the test kit (feature `testkit`; the container image leaves it out): run the demo and the simulators from a development build, `cargo run --release -p duo-runtime --bin duo-gateway -- demo`";

#[cfg(feature = "testkit")]
fn demo(once: bool, json: bool) -> ExitCode {
    let Some(rt) = async_runtime() else {
        return ExitCode::FAILURE;
    };
    let code = rt.block_on(duo_runtime::demo::run(duo_runtime::demo::DemoOptions {
        once,
        json,
    }));
    ExitCode::from(code as u8)
}

#[cfg(not(feature = "testkit"))]
fn demo(_once: bool, _json: bool) -> ExitCode {
    eprintln!("duo-gateway demo: {NO_TESTKIT}");
    ExitCode::from(2)
}

#[cfg(not(feature = "testkit"))]
fn mitz_sim(
    _config: PathBuf,
    _listen: SocketAddr,
    _cert_file: PathBuf,
    _key_file: PathBuf,
    _trust_bundle_file: PathBuf,
) -> Result<(), String> {
    Err(NO_TESTKIT.into())
}

#[cfg(feature = "testkit")]
fn mitz_sim(
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
