//! A running Mitz simulator with its own test PKI and a client identity it trusts, for tests of the
//! gateway's Mitz clients (consent, localisation) and of the simulator itself.

use std::net::SocketAddr;
use std::sync::Arc;

use super::{MitzSim, MitzSimConfig, start};
use crate::config::{MitzConfig, TlsConfig};
use crate::consent::MitzClient;
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
}

impl SimEnv {
    /// Starts the simulator with `config` on a loopback port. Panics when it cannot (tests only).
    pub async fn start(config: MitzSimConfig) -> SimEnv {
        crate::tls::install_crypto_provider();
        let pki = Pki::new("Mitz test CA");
        let server = pki.leaf("mitz.test", &["localhost", "127.0.0.1"]);
        let client = pki.leaf("gateway.test", &["gateway.test"]);
        let sim = start(
            config,
            SocketAddr::from(([127, 0, 0, 1], 0)),
            &pki.material(&server),
        )
        .await
        .unwrap();
        let client_tls = pki.material(&client);
        SimEnv {
            sim,
            pki,
            client_tls,
        }
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
