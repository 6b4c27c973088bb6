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
    /// Register patients with Mitz as data holder (back-fill): one BSN per line of FILE, optionally
    /// followed by `,YYYY-MM-DD` (birth date); blank lines and lines starting with `#` are skipped.
    /// Progress goes to stderr, a summary to stdout. Exit 0 when every patient is registered (or was),
    /// 1 when any line failed (each named with its reason), 2 when nothing could be tried.
    MitzRegister {
        /// Path of the gateway's YAML configuration (its `mitz` and `registration` sections are used).
        #[arg(long, short, env = "DUO_CONFIG")]
        config: PathBuf,
        /// The file of BSNs (`-` for standard input).
        #[arg(long)]
        from: PathBuf,
        /// Registrations in flight at once (1 to 16).
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=16))]
        concurrency: u16,
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
        Command::MitzRegister {
            config,
            from,
            concurrency,
        } => {
            let Some(rt) = async_runtime() else {
                return ExitCode::from(2);
            };
            match rt.block_on(mitz_register(&config, &from, usize::from(concurrency))) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("duo-gateway mitz-register: {e}");
                    ExitCode::from(2)
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

/// One line of a back-fill file: its number, and the patient or why the line is not one.
type Line = (
    usize,
    Result<(duo_runtime::model::Bsn, Option<jiff::civil::Date>), String>,
);

/// Reads a back-fill file (see `mitz-register`).
fn read_backfill(text: &str) -> Vec<Line> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(i, l)| {
            let mut parts = l.splitn(2, ',');
            let bsn = parts.next().unwrap_or("");
            let birth = parts.next();
            (
                i + 1,
                duo_runtime::gateway::mitz_api::read_patient(bsn, birth),
            )
        })
        .collect()
}

/// `mitz-register`: registers every patient of the file; the exit code says whether all succeeded.
async fn mitz_register(
    config: &std::path::Path,
    from: &std::path::Path,
    concurrency: usize,
) -> Result<ExitCode, String> {
    use futures::StreamExt;
    duo_runtime::tls::install_crypto_provider();
    let cfg = duo_runtime::config::Config::load(config).map_err(|e| e.to_string())?;
    if cfg.registration.mode != duo_runtime::config::RegistrationMode::Mitz {
        return Err(format!(
            "{}: registration.mode is not mitz; nothing is registered",
            config.display()
        ));
    }
    let text = if from.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| format!("standard input: {e}"))?
    } else {
        std::fs::read_to_string(from).map_err(|e| format!("{}: {e}", from.display()))?
    };
    let lines = read_backfill(&text);
    if lines.is_empty() {
        return Err(format!("{}: no BSN in the file", from.display()));
    }
    let hooks = duo_runtime::gateway::hooks::from_config(&cfg).await?;
    let metrics = duo_runtime::gateway::metrics::Metrics::new();
    let total = lines.len();
    let (mut new, mut already, mut failed) = (0usize, 0usize, Vec::new());
    let mut results = futures::stream::iter(lines)
        .map(|(n, parsed)| {
            let (hooks, metrics) = (&hooks, &metrics);
            async move {
                let outcome = match parsed {
                    Ok((bsn, birth)) => hooks
                        .register(metrics, &bsn, birth, "cli")
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e),
                };
                (n, outcome)
            }
        })
        .buffer_unordered(concurrency);
    let mut done = 0;
    while let Some((n, outcome)) = results.next().await {
        done += 1;
        match &outcome {
            Ok(r) => {
                eprintln!("[{done}/{total}] line {n}: {}", r.as_str());
                match r {
                    duo_runtime::registration::Registered::New { .. } => new += 1,
                    duo_runtime::registration::Registered::Already { .. } => already += 1,
                }
            }
            Err(e) => {
                eprintln!("[{done}/{total}] line {n}: failed: {e}");
                failed.push((n, e.clone()));
            }
        }
    }
    failed.sort();
    println!(
        "registered: {new}, already registered: {already}, failed: {}",
        failed.len()
    );
    for (n, e) in &failed {
        println!("  line {n}: {e}");
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
