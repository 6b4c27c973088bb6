//! The mutual-TLS accept loop: every connection is TLS-terminated with the *current* server
//! configuration (so a rotated certificate or trust bundle applies to new connections without dropping
//! open ones), the client's certificate is attached to each request as a [`PeerCertificate`], and
//! shutdown is graceful (open requests finish).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Defined by the gateway, which uses it (identity, audit); the listener attaches it to each request.
pub use crate::gateway::identity::PeerCertificate;

/// Re-checks the client certificate of an open connection when revocation data changed since it was
/// last checked (a certificate revoked while its connection stays open is refused at its next request).
pub trait ConnectionGate: Send + Sync + 'static {
    /// Changes whenever the certificates of open connections must be checked again.
    fn generation(&self) -> u64;
    /// Checks `chain` (leaf first) again; `Err` is why it is refused now.
    fn recheck(&self, chain: &[CertificateDer<'static>]) -> Result<(), String>;
}

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open requests may run after shutdown was asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `router` over mutual TLS on `listener` until `shutdown` is cancelled, then drains.
///
/// `tls` always holds the configuration to use for the next handshake; `gate`, when given, re-checks
/// a connection's client certificate before a request when its generation changed since the last
/// check (a refused connection gets 403 with `Connection: close`).
pub async fn serve_tls(
    listener: TcpListener,
    tls: watch::Receiver<Arc<ServerConfig>>,
    router: Router,
    shutdown: CancellationToken,
    gate: Option<Arc<dyn ConnectionGate>>,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, remote) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = TlsAcceptor::from(tls.borrow().clone());
        let router = router.clone();
        let watcher = graceful.watcher();
        let gate = gate.clone();
        // taken before the handshake: data that changes during it makes the first request re-check
        let checked = Arc::new(AtomicU64::new(gate.as_ref().map_or(0, |g| g.generation())));
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::info!(%remote, error = %e, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::info!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            let peer = stream
                .get_ref()
                .1
                .peer_certificates()
                .map(|c| c.to_vec())
                .unwrap_or_default();
            let peer = PeerCertificate {
                chain: Arc::new(peer),
                remote: Some(remote),
            };
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    let refused = gate.as_ref().and_then(|g| {
                        let now = g.generation();
                        if now == checked.load(Ordering::SeqCst) {
                            return None;
                        }
                        match g.recheck(&peer.chain) {
                            Ok(()) => {
                                checked.store(now, Ordering::SeqCst);
                                None
                            }
                            Err(e) => Some(e),
                        }
                    });
                    req.extensions_mut().insert(peer.clone());
                    req.extensions_mut().insert(RemoteAddr(remote));
                    let router = router.clone();
                    async move {
                        if let Some(reason) = refused {
                            tracing::warn!(%remote, reason = %reason, "open connection refused: its client certificate no longer passes");
                            let mut resp = axum::response::Response::new(axum::body::Body::from(
                                "client certificate refused\n",
                            ));
                            *resp.status_mut() = http::StatusCode::FORBIDDEN;
                            resp.headers_mut().insert(
                                http::header::CONNECTION,
                                http::HeaderValue::from_static("close"),
                            );
                            return Ok(resp);
                        }
                        router.oneshot(req).await
                    }
                },
            );
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("open connections did not finish within {DRAIN_TIMEOUT:?}");
    }
}

/// The remote socket address of a request's connection.
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub SocketAddr);

/// Serves `router` over plain HTTP (the ops listener: health and metrics) until `shutdown`.
pub async fn serve_plain(listener: TcpListener, router: Router, shutdown: CancellationToken) {
    let _ = axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
}
