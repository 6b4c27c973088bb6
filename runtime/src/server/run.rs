//! Starting, reloading and stopping a gateway: `duo-gateway serve` and the in-process gateways of the
//! demo and the tests.
//!
//! Hot reload: every `server.reloadIntervalSeconds` the config file and every TLS file it names are
//! fingerprinted (content, so Kubernetes' symlink swaps of ConfigMap and Secret mounts are seen). On a
//! change the new configuration is validated and a new snapshot built; only when that succeeds does it
//! replace the old one (new requests and new TLS handshakes use it, requests in flight finish on the
//! old one). A bad change is logged and counted (`duo_config_reloads_total{result="rejected"}`) and the
//! running gateway stays as it was.
//!
//! Revocation ([`crate::revocation`]): the gateway's own certificate is checked before it starts (a
//! revoked one is refused, as is a reload to one) and again whenever revocation data changes and every
//! refresh interval (`duo_own_certificate_revoked`, an error log line). When data newly revokes a
//! certificate, open connections re-check their client certificate at their next request
//! ([`super::listener::ConnectionGate`]) and the snapshot is rebuilt, so outbound connection pools to a
//! revoked server are dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::app;
use super::listener::{ConnectionGate, serve_plain, serve_tls};
use super::metrics::{Metrics, ReloadLabels};
use crate::config::Config;
use crate::gateway::{Gateway, Hooks, Shared};

/// Builds the consent / localisation / audit services for a configuration (see
/// [`crate::gateway::hooks::from_config`], the production factory: [`default_hooks`]).
pub type HookFactory =
    Arc<dyn Fn(Config) -> crate::backend::BoxFut<'static, Result<Hooks, String>> + Send + Sync>;

/// The production hook factory: [`crate::gateway::hooks::from_config`].
pub fn default_hooks() -> HookFactory {
    Arc::new(|c: Config| Box::pin(async move { crate::gateway::hooks::from_config(&c).await }))
}

/// Why a gateway did not start. One line each.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    /// Certificates, keys or hooks could not be built.
    #[error("{0}")]
    Build(String),
    /// A listener could not be bound.
    #[error("{field}: cannot listen on {addr}: {err}")]
    Bind {
        /// The configuration field naming the address (`server.listen`, `server.opsListen`).
        field: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        err: std::io::Error,
    },
}

/// A running gateway.
pub struct Running {
    /// Bound address of the mutual-TLS listener.
    pub addr: SocketAddr,
    /// Bound address of the ops listener.
    pub ops_addr: SocketAddr,
    /// The current snapshot.
    pub shared: Arc<Shared>,
    shutdown: CancellationToken,
    ready: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets open requests finish (bounded), and returns when everything is down.
    pub async fn stop(self) {
        self.ready.store(false, Ordering::SeqCst);
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// A token that stops the gateway when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the gateway has stopped (after the token was cancelled).
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

async fn build(
    config: Config,
    hooks: &HookFactory,
    metrics: &Arc<Metrics>,
) -> Result<Gateway, StartError> {
    let h = hooks(config.clone()).await.map_err(StartError::Build)?;
    Gateway::build(config, h, metrics.clone()).map_err(|e| StartError::Build(e.to_string()))
}

/// Checks the gateway's own certificate for revocation (when its policy checks revocation). Errors:
/// revoked (the one-line reason). A chain that does not verify against the trust bundle cannot be
/// checked: logged, not an error (peers verify it against their own bundles).
async fn check_own_certificate(g: &Gateway) -> Result<(), String> {
    let Some(checker) = &g.tls.policy.revocation else {
        return Ok(());
    };
    let file = g.config.server.tls.cert_file.display();
    match checker
        .check_own(g.tls.chain.clone(), g.tls.roots.clone())
        .await
    {
        Ok(crate::revocation::Verdict::Revoked(src)) => {
            tracing::error!(certificate = %file, source = %src, "the gateway's own certificate is revoked");
            Err(format!(
                "server.tls.certFile: {file}: the gateway's own certificate is revoked ({src})"
            ))
        }
        Ok(v) => {
            // debug: a start that fails next (e.g. the listen address taken) stays one line
            tracing::debug!(certificate = %file, verdict = %v, "own certificate revocation status");
            Ok(())
        }
        Err(e) => {
            tracing::warn!(certificate = %file, error = %e, "own certificate not checked for revocation: its chain does not verify against server.tls.trustBundleFile");
            Ok(())
        }
    }
}

/// The listener's [`ConnectionGate`]: the current snapshot's checker and trust bundle.
struct SnapshotGate(Arc<Shared>);

impl ConnectionGate for SnapshotGate {
    fn generation(&self) -> u64 {
        self.0
            .current()
            .tls
            .policy
            .revocation
            .as_ref()
            .map_or(0, |c| c.generation())
    }

    fn recheck(&self, chain: &[rustls::pki_types::CertificateDer<'static>]) -> Result<(), String> {
        let g = self.0.current();
        match &g.tls.policy.revocation {
            Some(c) => crate::revocation::verifier::recheck_client(c, &g.tls.roots, chain),
            None => Ok(()),
        }
    }
}

/// Files whose change reloads the gateway: the config file and every TLS and XUA signing file it names.
fn watched_files(config_path: &Path, c: &Config) -> Vec<PathBuf> {
    let mut v = vec![config_path.to_path_buf()];
    let t = &c.server.tls;
    v.extend([
        t.cert_file.clone(),
        t.key_file.clone(),
        t.trust_bundle_file.clone(),
    ]);
    if let Some(m) = &c.mitz {
        v.extend([
            m.tls.cert_file.clone(),
            m.tls.key_file.clone(),
            m.tls.trust_bundle_file.clone(),
        ]);
    }
    if let Some(s) = &c.audit.syslog {
        v.push(s.trust_bundle_file.clone());
    }
    if let Some(s) = &c.xua.signing {
        v.extend([s.cert_file.clone(), s.key_file.clone()]);
    }
    v
}

fn fingerprint(files: &[PathBuf]) -> Vec<u8> {
    let mut h = Sha256::new();
    for f in files {
        h.update(f.to_string_lossy().as_bytes());
        match std::fs::read(f) {
            Ok(b) => h.update(&b),
            Err(e) => h.update(e.to_string().as_bytes()),
        }
    }
    h.finalize().to_vec()
}

/// Everything [`start`] checks before it binds its listeners: the configuration's rules, the TLS
/// files (certificate, key matching it, trust bundle) of the server, Mitz and syslog, the Mitz clients,
/// and the audit sink (a file sink is opened for appending, so it is created when absent). Binds and
/// sends nothing. Errors: the one-line reason `start` would give.
pub async fn check(config: Config, hooks: &HookFactory) -> Result<(), StartError> {
    prepare(config, hooks, &Arc::new(Metrics::new())).await?;
    Ok(())
}

/// What [`start`] and [`check`] share: the configuration's rules, then the gateway snapshot and its
/// server TLS configuration.
async fn prepare(
    config: Config,
    hooks: &HookFactory,
    metrics: &Arc<Metrics>,
) -> Result<(Gateway, Arc<rustls::ServerConfig>), StartError> {
    config.validate()?;
    let gateway = build(config, hooks, metrics).await?;
    let server_tls = gateway
        .tls
        .server_config()
        .map_err(|e| StartError::Build(e.to_string()))?;
    Ok((gateway, server_tls))
}

/// Starts a gateway for `config`. With `config_path`, the file (and the TLS files it names) are watched
/// and reloaded on change.
pub async fn start(
    config: Config,
    config_path: Option<PathBuf>,
    hooks: HookFactory,
) -> Result<Running, StartError> {
    let metrics = Arc::new(Metrics::new());
    let listen = config.server.listen;
    let ops_listen = config.server.ops_listen;
    let interval = Duration::from_secs(config.server.reload_interval_seconds.max(1));
    let (gateway, server_tls) = prepare(config.clone(), &hooks, &metrics).await?;
    check_own_certificate(&gateway)
        .await
        .map_err(StartError::Build)?;
    let shared = Arc::new(Shared::new(gateway));
    let (tls_tx, tls_rx) = watch::channel(server_tls);
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|err| StartError::Bind {
            field: "server.listen",
            addr: listen,
            err,
        })?;
    let ops = TcpListener::bind(ops_listen)
        .await
        .map_err(|err| StartError::Bind {
            field: "server.opsListen",
            addr: ops_listen,
            err,
        })?;
    let addr = listener.local_addr().map_err(|err| StartError::Bind {
        field: "server.listen",
        addr: listen,
        err,
    })?;
    let ops_addr = ops.local_addr().map_err(|err| StartError::Bind {
        field: "server.opsListen",
        addr: ops_listen,
        err,
    })?;
    let shutdown = CancellationToken::new();
    let ready = Arc::new(AtomicBool::new(false));
    let mut tasks = vec![
        tokio::spawn(serve_tls(
            listener,
            tls_rx,
            app::router(shared.clone()),
            shutdown.clone(),
            Some(Arc::new(SnapshotGate(shared.clone()))),
        )),
        tokio::spawn(watch_revocation(
            shared.clone(),
            hooks.clone(),
            metrics.clone(),
            shutdown.clone(),
        )),
        // the DSUB subscription (ITI-52) of registration.dsub, kept up while the gateway runs
        tokio::spawn(crate::gateway::dsub::subscriber(
            shared.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(serve_plain(
            ops,
            app::ops_router(shared.clone(), ready.clone()),
            shutdown.clone(),
        )),
    ];
    if let Some(path) = config_path {
        let shared = shared.clone();
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let mut files = watched_files(&path, &config);
            let mut last = fingerprint(&files);
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(interval) => {}
                }
                let now = fingerprint(&files);
                if now == last {
                    continue;
                }
                last = now;
                let result = async {
                    let c = Config::load(&path).map_err(|e| e.to_string())?;
                    let g = build(c.clone(), &hooks, &metrics).await.map_err(|e| e.to_string())?;
                    check_own_certificate(&g).await?;
                    let tls = g.tls.server_config().map_err(|e| e.to_string())?;
                    Ok::<_, String>((c, g, tls))
                }
                .await;
                match result {
                    Ok((c, g, tls)) => {
                        shared.replace(g);
                        let _ = tls_tx.send(tls);
                        files = watched_files(&path, &c);
                        last = fingerprint(&files);
                        metrics.config_reloads.get_or_create(&ReloadLabels { result: "applied".into() }).inc();
                        tracing::info!("configuration and certificates reloaded");
                    }
                    Err(e) => {
                        metrics.config_reloads.get_or_create(&ReloadLabels { result: "rejected".into() }).inc();
                        tracing::error!(error = %e, "reload rejected; the running configuration stays");
                    }
                }
            }
        }));
    }
    ready.store(true, Ordering::SeqCst);
    Ok(Running {
        addr,
        ops_addr,
        shared,
        shutdown,
        ready,
        tasks,
    })
}

/// Follows the current snapshot's revocation checker: when its generation changes (data newly revokes
/// a certificate or turned unusable) the snapshot is rebuilt from its own configuration, which gives
/// new outbound clients (pooled connections to a revoked server end with the old snapshot), and the
/// own certificate is checked again; the own certificate is also checked every refresh interval.
async fn watch_revocation(
    shared: Arc<Shared>,
    hooks: HookFactory,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    loop {
        let g = shared.current();
        let Some(checker) = g.tls.policy.revocation.clone() else {
            // no checking in this snapshot: look again later (a reload may switch it on)
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(30)) => continue,
            }
        };
        let mut rx = checker.subscribe();
        let seen = *rx.borrow_and_update();
        let period = Duration::from_secs(checker.config().refresh_interval_seconds.max(1));
        let changed = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = rx.changed() => r.is_ok(),
            _ = tokio::time::sleep(period) => false,
        };
        if changed && checker.generation() != seen {
            let c = (*shared.current().config).clone();
            match build(c, &hooks, &metrics).await {
                Ok(g) => {
                    shared.replace(g);
                    tracing::info!("revocation data changed: outbound clients rebuilt");
                }
                Err(e) => {
                    tracing::error!(error = %e, "revocation data changed but the snapshot could not be rebuilt");
                }
            }
        }
        // logs and sets duo_own_certificate_revoked; a running gateway keeps serving
        let _ = check_own_certificate(&shared.current()).await;
    }
}

/// Waits for SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
