//! Running a simulator on a loopback port, over plain HTTP or mutual TLS (the same accept loop as the
//! gateway: [`crate::server::listener`]).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::server::listener::{serve_plain, serve_tls};
use crate::tls::{TlsError, TlsMaterial};

/// How a simulator is reached.
#[derive(Clone)]
pub enum Transport {
    /// Plain HTTP (`http://`).
    Plain,
    /// HTTPS requiring a client certificate that chains to the configuration's trust roots
    /// (`https://`), as the gateway's peers do.
    MutualTls(Arc<ServerConfig>),
}

impl Transport {
    /// Mutual TLS with this identity and trust bundle ([`TlsMaterial::server_config`]).
    ///
    /// Errors: [`TlsError`] when rustls refuses the material.
    pub fn mutual_tls(material: &TlsMaterial) -> Result<Transport, TlsError> {
        Ok(Transport::MutualTls(material.server_config()?))
    }

    fn scheme(&self) -> &'static str {
        match self {
            Transport::Plain => "http",
            Transport::MutualTls(_) => "https",
        }
    }
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Plain => "Plain",
            Transport::MutualTls(_) => "MutualTls",
        })
    }
}

/// A simulator serving in the background. Dropping it stops accepting connections (without waiting);
/// [`RunningSim::stop`] also waits for open requests to finish.
#[derive(Debug)]
pub struct RunningSim {
    addr: SocketAddr,
    scheme: &'static str,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl RunningSim {
    /// The bound address (loopback, port chosen by the OS unless given).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>` or `https://127.0.0.1:<port>`. Over TLS the server certificate must
    /// name the IP address (subjectAltName `IP:127.0.0.1`); a caller that uses a host name instead builds
    /// the URL from [`RunningSim::addr`].
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// The URL of `path` (which starts with `/`), e.g. `sim.url(xds::paths::ITI18)`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// A token that stops the simulator when cancelled (e.g. to take a community down mid-test).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting connections and waits until open requests are done (at most the listener's drain
    /// timeout).
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Serves `router` on `127.0.0.1` on a port the OS picks.
///
/// Errors: the bind error.
pub async fn start(router: Router, transport: Transport) -> std::io::Result<RunningSim> {
    start_on(SocketAddr::from(([127, 0, 0, 1], 0)), router, transport).await
}

/// Serves `router` on `addr` (e.g. a fixed demo port).
///
/// Errors: the bind error.
pub async fn start_on(
    addr: SocketAddr,
    router: Router,
    transport: Transport,
) -> std::io::Result<RunningSim> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let scheme = transport.scheme();
    let token = shutdown.clone();
    let task = match transport {
        Transport::Plain => tokio::spawn(serve_plain(listener, router, token)),
        Transport::MutualTls(cfg) => {
            // the receiver keeps the last value when the sender is gone: no rotation for simulators
            let (_tx, rx) = watch::channel(cfg);
            tokio::spawn(serve_tls(listener, rx, router, token, None))
        }
    };
    Ok(RunningSim {
        addr,
        scheme,
        shutdown,
        task: Some(task),
    })
}
