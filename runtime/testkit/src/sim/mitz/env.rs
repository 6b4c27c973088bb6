//! A running Mitz simulator with its own test PKI and a client identity it trusts, for tests of the
//! gateway's Mitz clients (consent, localisation) and of the simulator itself, and a notification
//! receiver (an HTTPS endpoint with mutual TLS that records what the simulator pushes).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rustls::pki_types::CertificateDer;

use super::{MitzSim, MitzSimConfig, start};
use crate::config::{MitzConfig, TlsConfig};
use crate::consent::MitzClient;
use crate::gateway::identity::PeerCertificate;
use crate::sim::serve::{self, RunningSim, Transport};
use crate::test_pki::Pki;
use crate::tls::TlsMaterial;

/// A running simulator with a test PKI, and the client identity that it trusts.
pub struct SimEnv {
    /// The running simulator.
    pub sim: MitzSim,
    /// The CA that issued the simulator's and the client's certificates.
    pub pki: Pki,
    /// The client identity (`gateway.test`) the simulator trusts.
    pub client_tls: TlsMaterial,
    /// The simulator's own identity (`mitz.test`), also its client certificate for notifications.
    pub server_tls: TlsMaterial,
}

impl SimEnv {
    /// Starts the simulator with `config` on a loopback port. Panics when it cannot (tests only).
    pub async fn start(config: MitzSimConfig) -> SimEnv {
        crate::tls::install_crypto_provider();
        let pki = Pki::new("Mitz test CA");
        let server = pki.leaf("mitz.test", &["localhost", "127.0.0.1"]);
        let client = pki.leaf("gateway.test", &["gateway.test"]);
        let server_tls = pki.material(&server);
        let sim = start(config, SocketAddr::from(([127, 0, 0, 1], 0)), &server_tls)
            .await
            .unwrap();
        let client_tls = pki.material(&client);
        SimEnv {
            sim,
            pki,
            client_tls,
            server_tls,
        }
    }

    /// A notification receiver with a certificate of this PKI for `localhost` and `127.0.0.1`, accepting
    /// client certificates of this PKI (so the simulator's). Panics when it cannot start (tests only).
    pub async fn receiver(&self) -> NotificationReceiver {
        let leaf = self.pki.leaf("receiver.test", &["localhost", "127.0.0.1"]);
        NotificationReceiver::start(&self.pki.material(&leaf)).await
    }

    /// A MitzConfig for this simulator (the TLS paths are not read: see [`SimEnv::client`]).
    pub fn mitz_config(&self, deadline_ms: u64, cache_seconds: u64) -> MitzConfig {
        MitzConfig {
            closed_question_url: self.sim.closed_question_url(),
            open_question_url: Some(self.sim.open_question_url()),
            subscription_url: Some(self.sim.subscription_url()),
            tls: TlsConfig {
                cert_file: "/unused".into(),
                key_file: "/unused".into(),
                trust_bundle_file: "/unused".into(),
            },
            deadline_ms,
            cache_seconds,
            notification_client_names: Vec::new(),
        }
    }

    /// A Mitz client with the trusted client identity.
    pub fn client(&self, deadline_ms: u64) -> Arc<MitzClient> {
        Arc::new(MitzClient::with_tls(&self.mitz_config(deadline_ms, 0), &self.client_tls).unwrap())
    }
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// The request path.
    pub path: String,
    /// The `Content-Type` header.
    pub content_type: String,
    /// The body, as received.
    pub body: Bytes,
    /// The client certificate the request came with (leaf, DER).
    pub client_certificate: Option<CertificateDer<'static>>,
}

#[derive(Default)]
struct ReceiverState {
    received: Mutex<Vec<Received>>,
    status: AtomicU16,
}

/// An HTTPS endpoint with mutual TLS that records every POST and answers it with a settable status
/// (default 200; a 3xx answer carries `Location: /elsewhere`, which the simulator must not follow).
pub struct NotificationReceiver {
    run: RunningSim,
    state: Arc<ReceiverState>,
}

impl NotificationReceiver {
    /// Starts on a loopback port with `tls` (its certificate must name `127.0.0.1`). Panics when it
    /// cannot (tests only).
    pub async fn start(tls: &TlsMaterial) -> NotificationReceiver {
        let state = Arc::new(ReceiverState {
            status: AtomicU16::new(200),
            ..ReceiverState::default()
        });
        let router = axum::Router::new()
            .fallback(axum::routing::post(record))
            .with_state(state.clone());
        let run = serve::start(router, Transport::mutual_tls(tls).unwrap())
            .await
            .unwrap();
        NotificationReceiver { run, state }
    }

    /// `https://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        self.run.url(path)
    }

    /// Answers every later request with `status`.
    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    /// Every request received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.state
            .received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The requests received on `path`.
    pub fn received_on(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Stops the receiver.
    pub async fn stop(self) {
        self.run.stop().await;
    }
}

async fn record(
    State(st): State<Arc<ReceiverState>>,
    peer: Option<axum::Extension<PeerCertificate>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    st.received
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Received {
            path: uri.path().to_owned(),
            content_type,
            body,
            client_certificate: peer.and_then(|p| p.0.chain.first().cloned()),
        });
    let status = StatusCode::from_u16(st.status.load(Ordering::SeqCst))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_redirection() {
        return (status, [(header::LOCATION, "/elsewhere")]).into_response();
    }
    status.into_response()
}
