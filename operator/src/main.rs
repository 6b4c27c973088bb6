//! `duo-operator`: reconciles DuoGateway, DuoCommunity and MitzConnection resources.
//!
//! `duo-operator crd --out-dir DIR` writes one YAML file per CRD; `duo-operator run` runs the controllers.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "duo-operator",
    version,
    about = "Kubernetes operator for DUO imaging gateways"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the CustomResourceDefinitions as YAML, one file per CRD (`<plural>.<group>.yaml`), or print
    /// them all to stdout when no directory is given.
    Crd {
        /// Folder to write into (created when missing).
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Run the controllers (leader-elected) until SIGTERM or SIGINT.
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Listener for /metrics, /healthz and /readyz (plain HTTP).
    #[arg(long, env = "DUO_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: std::net::SocketAddr,
    /// Gateway image used when a DuoGateway sets no `spec.image`.
    #[arg(long, env = "DUO_GATEWAY_IMAGE", default_value = duo_operator::DEFAULT_GATEWAY_IMAGE)]
    gateway_image: String,
    /// Namespace of the leader-election Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, env = "DUO_LEASE_NAME", default_value = "duo-operator")]
    lease_name: String,
    /// Identity of this replica in the Lease (default: the pod name, else a random id).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds the Lease stays valid without renewal.
    #[arg(long, default_value_t = 15)]
    lease_seconds: u64,
    /// Most reconciliations in parallel.
    #[arg(long, default_value_t = 16)]
    concurrency: u16,
    /// Most gateways whose pods roll at once because the default gateway image (--gateway-image)
    /// changed, e.g. after an operator upgrade; the others wait with Progressing=True, RolloutQueued.
    /// 0: no cap. A change of a gateway's own spec is never held back.
    #[arg(long, env = "DUO_MAX_CONCURRENT_ROLLOUTS", default_value_t = duo_operator::reconcile::DEFAULT_MAX_CONCURRENT_ROLLOUTS)]
    max_concurrent_rollouts: usize,
    /// Watch and act in these namespaces only (comma-separated, e.g. `hosp-a,hosp-b`); unset: every
    /// namespace. The operator then needs its permissions in these namespaces only (the chart's
    /// `watchNamespaces`: a Role per namespace instead of a ClusterRole).
    #[arg(long, env = "DUO_WATCH_NAMESPACES", value_delimiter = ',')]
    watch_namespaces: Vec<String>,
    /// Log format: `json` (one JSON object per line) or `text`.
    #[arg(long, env = "DUO_LOG_FORMAT", default_value = "json", value_parser = ["json", "text"])]
    log_format: String,
}

fn init_logs(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,kube_runtime=warn,kube_lease_manager=warn"));
    if format == "json" {
        tracing_subscriber::fmt()
            .json()
            .with_current_span(false)
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
}

fn run(args: RunArgs) -> Result<(), String> {
    let scope = duo_operator::scope::Scope::from_namespaces(&args.watch_namespaces)?;
    init_logs(&args.log_format);
    let identity = args
        .identity
        .unwrap_or_else(|| format!("duo-operator-{}", std::process::id()));
    let settings = duo_operator::run::Settings {
        metrics_addr: args.metrics_addr,
        gateway_image: args.gateway_image,
        lease_namespace: args.lease_namespace,
        lease_name: args.lease_name,
        identity,
        lease_seconds: args.lease_seconds,
        concurrency: args.concurrency,
        max_concurrent_rollouts: args.max_concurrent_rollouts,
        scope,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(duo_operator::run::run(settings))
        .map_err(|e| format!("{e:#}"))
}

fn crd_yaml(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> Result<String, String> {
    let value = serde_json::to_value(crd).map_err(|e| e.to_string())?;
    serde_saphyr::to_string(&value).map_err(|e| e.to_string())
}

fn write_crds(out_dir: Option<PathBuf>) -> Result<(), String> {
    let crds = duo_operator::crds();
    match out_dir {
        None => {
            for c in &crds {
                print!("---\n{}", crd_yaml(c)?);
            }
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            for c in &crds {
                let name = c.metadata.name.clone().unwrap_or_default();
                let path = dir.join(format!("{name}.yaml"));
                let text = format!(
                    "# Generated by `duo-operator crd`; do not edit (scripts/gen-crds.sh).\n{}",
                    crd_yaml(c)?
                );
                std::fs::write(&path, text)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd { out_dir } => write_crds(out_dir),
        Command::Run(args) => run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("duo-operator: {e}");
            ExitCode::FAILURE
        }
    }
}
