//! The bed of the relay tests: a throwaway PKI, the hostile peer, a real `duo-gateway serve` process
//! (the binary cargo built for this test) whose one remote community is the peer, its audit file read
//! as it grows, and a client with the hospital's own certificate (a local consumer).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

use duo_runtime::audit::AuditRecord;
use duo_runtime::config::{
    CommunityOrganization, Config, Endpoint as EndpointConfig, LocalBackend, RemoteCommunity,
    XdsBackendConfig,
};
use duo_runtime::tls::TlsMaterial;
use duo_testkit::sim::bed::{Hospital, Pki, test_config};

use super::peer::{self, Peer};
use super::{DEADLINE_MS, GATEWAY_HOME, PEER_HOME};

/// A running `duo-gateway serve`; killed when dropped.
pub struct Gateway {
    child: Child,
    /// Main (mutual TLS) listener.
    pub addr: SocketAddr,
    /// Ops listener.
    pub ops: SocketAddr,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    /// `VmHWM` (peak resident set over the process's life), KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

fn start_gateway(config: &Config, dir: &std::path::Path) -> Gateway {
    let file = dir.join("gateway.yaml");
    std::fs::write(&file, config.to_yaml()).unwrap();
    // DUO_RELAY_GATEWAY_BIN: another build to check (e.g. main's, to see a regression test fail)
    let bin = std::env::var("DUO_RELAY_GATEWAY_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_duo-gateway").to_owned());
    let mut child = Command::new(bin)
        .arg("serve")
        .arg("--config")
        .arg(&file)
        .env("RUST_LOG", "warn,duo_gateway=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = dir.join("gateway.log");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut f = std::fs::File::create(&log).ok();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(f) = f.as_mut() {
                use std::io::Write;
                let _ = writeln!(f, "{line}");
            }
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && v["fields"]["message"] == "duo-gateway serving"
            {
                let parse = |k: &str| v["fields"][k].as_str().and_then(|s| s.parse().ok());
                if let (Some(a), Some(o)) = (parse("listen"), parse("ops")) {
                    let _ = tx.send((a, o));
                }
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok((addr, ops)) => Gateway { child, addr, ops },
        Err(_) => {
            let _ = child.kill();
            panic!(
                "duo-gateway did not start: {}",
                std::fs::read_to_string(dir.join("gateway.log")).unwrap_or_default()
            );
        }
    }
}

/// The audit file, read as it grows, records indexed by `messageId`.
pub struct AuditTail {
    path: PathBuf,
    state: Mutex<(usize, Vec<AuditRecord>)>,
}

impl AuditTail {
    /// Every record so far (reads what was added since the last call).
    pub fn records(&self) -> Vec<AuditRecord> {
        let mut st = self.state.lock().unwrap();
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        // whole lines only: the gateway may be writing the next one
        let upto = text.rfind('\n').map_or(0, |i| i + 1);
        if upto > st.0 {
            let new: Vec<AuditRecord> = text[st.0..upto]
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect();
            st.1.extend(new);
            st.0 = upto;
        }
        st.1.clone()
    }

    /// The records whose `messageId` is `id`.
    pub fn by_message_id(&self, id: &str) -> Vec<AuditRecord> {
        let mut index: HashMap<&str, Vec<&AuditRecord>> = HashMap::new();
        let all = self.records();
        for r in &all {
            if let Some(m) = &r.message_id {
                index.entry(m.as_str()).or_default().push(r);
            }
        }
        index
            .get(id)
            .map(|v| v.iter().map(|r| (*r).clone()).collect())
            .unwrap_or_default()
    }
}

/// Everything a relay test needs.
pub struct Bed {
    /// The hostile peer.
    pub peer: Peer,
    /// The gateway process.
    pub gateway: Gateway,
    /// A local consumer (the hospital's own certificate).
    pub client: reqwest::Client,
    /// The gateway's audit trail.
    pub audit: AuditTail,
    _dir: tempfile::TempDir,
}

impl Bed {
    /// `https://localhost:<port><path>` of the gateway.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.gateway.addr.port())
    }

    /// The gateway's `/metrics` text.
    pub async fn metrics(&self) -> String {
        duo_runtime::tls::plain_http_client(Duration::from_secs(5))
            .unwrap()
            .get(format!("http://{}/metrics", self.gateway.ops))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// Starts the peer and a gateway whose only community is the peer (deadline [`DEADLINE_MS`]), with
/// the configuration's defaults otherwise (consent `permitAll`, localisation `allCommunities`, no
/// local community in the fan-out).
pub async fn start() -> Bed {
    duo_runtime::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "DUO relay mutation CA").unwrap();
    let peer = peer::start().await;
    let h = Hospital::new("10000200", "Ziekenhuis Relay", GATEWAY_HOME);
    let tls = pki.hospital("gateway", &h.ura, &h.name).unwrap();
    let audit_file = dir.path().join("audit.jsonl");
    let mut config = test_config(
        &h,
        tls.clone(),
        LocalBackend::Xds(XdsBackendConfig {
            // never asked: the fan-out leaves the local community out, retrieves name the peer
            registry_url: peer.url("/iti18"),
            repositories: Vec::new(),
            imaging_document_sources: vec![EndpointConfig {
                unique_id: "2.16.528.1.1007.3.3.10000200.9".into(),
                url: peer.url("/rad69"),
            }],
            deadline_ms: DEADLINE_MS,
        }),
        &audit_file,
        &[],
    );
    config.initiating.include_local = false;
    config.communities.push(RemoteCommunity {
        home_community_id: PEER_HOME.parse().unwrap(),
        name: "Hostile peer".into(),
        organizations: vec![CommunityOrganization {
            ura: "10000300".parse().unwrap(),
            name: "Ziekenhuis Peer".into(),
        }],
        query_url: peer.url("/iti38"),
        retrieve_url: peer.url("/iti39"),
        imaging_retrieve_url: peer.url("/rad75"),
        connect_to: None,
        certificate_ura: None,
        // the peer never calls this gateway: nothing of it to trust
        trusted_issuers: Vec::new(),
        deadline_ms: DEADLINE_MS,
        fronted_communities: Vec::new(),
    });
    let gateway = start_gateway(&config, dir.path());
    let client = TlsMaterial::load(&tls)
        .unwrap()
        .http_client(Duration::from_secs(5))
        .unwrap()
        .into();
    Bed {
        peer,
        gateway,
        client,
        audit: AuditTail {
            path: audit_file,
            state: Mutex::new((0, Vec::new())),
        },
        _dir: dir,
    }
}
