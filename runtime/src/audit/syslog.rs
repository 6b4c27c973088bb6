//! ATNA audit messages over syslog: RFC 5424 messages (PRI `<85>`: facility 10 security/authorization,
//! severity 5 notice; MSGID `IHE+RFC-3881`; DICOM PS3.15 A.6 and IHE ITI-20) sent over TLS (RFC 5425) with
//! octet-counting framing (`MSG-LEN SP SYSLOG-MSG`), mutual TLS with the gateway's certificate.
//!
//! [`SyslogSender`] owns one connection in a background task: messages are queued (bounded,
//! [`QUEUE`] messages), written in order, and on a write error the connection is made again and the
//! message retried (3 attempts with back-off) before it is counted as failed. A full queue counts the
//! message as dropped. The JSON-lines record is the primary audit record and never waits for syslog.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::AuditError;
use crate::config::SyslogConfig;
use crate::ihe::xua::format_instant;
use crate::tls::{TlsMaterial, load_roots};

/// PRI of every audit message: facility 10 (security/authorization) × 8 + severity 5 (notice).
pub const PRI: u8 = 85;
/// MSGID of every audit message (IHE ITI-20).
pub const MSGID: &str = "IHE+RFC-3881";
/// APP-NAME of the messages.
pub const APP_NAME: &str = "duo-gateway";
/// Messages waiting to be sent at most; more are dropped (and counted).
pub const QUEUE: usize = 10_000;

/// The RFC 5425 frame of one RFC 5424 message carrying `xml` (the audit message) as MSG, with a UTF-8
/// BOM (RFC 5424 6.4) and no structured data.
pub fn frame(xml: &str, time: Timestamp) -> Vec<u8> {
    let msg = format!(
        "<{PRI}>1 {} {} {APP_NAME} {} {MSGID} - \u{FEFF}{xml}",
        format_instant(time),
        hostname(),
        std::process::id()
    );
    let mut out = format!("{} ", msg.len()).into_bytes();
    out.extend_from_slice(msg.as_bytes());
    out
}

/// The HOSTNAME field: `$HOSTNAME`, else the kernel's host name, else `-`; printable US-ASCII, at most
/// 255 characters (RFC 5424 6.2.4).
fn hostname() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(read_hostname)
}

fn read_hostname() -> String {
    let raw = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .unwrap_or_default();
    let h: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    if h.is_empty() { "-".into() } else { h }
}

/// Counters of a [`SyslogSender`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyslogStats {
    /// Messages written to the connection.
    pub sent: u64,
    /// Messages given up after the retries.
    pub failed: u64,
    /// Messages not queued because the queue was full.
    pub dropped: u64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

enum Msg {
    Frame(Vec<u8>),
    Flush(oneshot::Sender<()>),
}

/// Sends framed messages to one syslog TLS receiver in the background.
#[derive(Clone)]
pub struct SyslogSender {
    tx: mpsc::Sender<Msg>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for SyslogSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyslogSender")
            .field("stats", &self.stats())
            .finish()
    }
}

impl SyslogSender {
    /// Starts the sender for `cfg` (address, server name, trust bundle) presenting `identity`'s
    /// certificate. Needs a Tokio runtime. Connecting happens on the first message, so a receiver that
    /// is down does not stop the gateway. Errors: unreadable trust bundle, unusable identity, bad address.
    pub fn start(cfg: &SyslogConfig, identity: &TlsMaterial) -> Result<SyslogSender, AuditError> {
        let roots =
            load_roots(&cfg.trust_bundle_file).map_err(|e| AuditError::Syslog(e.to_string()))?;
        let material = TlsMaterial {
            chain: identity.chain.clone(),
            key: identity.key.clone_key(),
            roots: Arc::new(roots),
            policy: identity.policy.clone(),
        };
        let client = material
            .client_config()
            .map_err(|e| AuditError::Syslog(e.to_string()))?;
        let host = host_of(&cfg.address).ok_or_else(|| {
            AuditError::Syslog(format!("address {:?} is not host:port", cfg.address))
        })?;
        let name = cfg.server_name.clone().unwrap_or(host);
        let server_name = match name.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(name.clone())
                .map_err(|e| AuditError::Syslog(format!("server name {name:?}: {e}")))?,
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let counters = Arc::new(Counters::default());
        tokio::spawn(run(
            rx,
            cfg.address.clone(),
            server_name,
            TlsConnector::from(client),
            counters.clone(),
        ));
        Ok(SyslogSender { tx, counters })
    }

    /// Queues one frame (see [`frame`]); a full queue drops it and counts it.
    pub fn send(&self, frame: Vec<u8>) {
        if self.tx.try_send(Msg::Frame(frame)).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::SeqCst);
            tracing::warn!(
                "ATNA syslog queue full: audit message dropped (the JSON record is kept)"
            );
        }
    }

    /// Waits until every frame queued before this call is sent or given up.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// The counters.
    pub fn stats(&self) -> SyslogStats {
        SyslogStats {
            sent: self.counters.sent.load(Ordering::SeqCst),
            failed: self.counters.failed.load(Ordering::SeqCst),
            dropped: self.counters.dropped.load(Ordering::SeqCst),
        }
    }
}

fn host_of(address: &str) -> Option<String> {
    let (host, port) = address.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| host.to_owned())
}

async fn connect(
    address: &str,
    name: &ServerName<'static>,
    connector: &TlsConnector,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(address))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout"))??;
    tcp.set_nodelay(true)?;
    tokio::time::timeout(Duration::from_secs(5), connector.connect(name.clone(), tcp))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timeout"))?
}

async fn run(
    mut rx: mpsc::Receiver<Msg>,
    address: String,
    name: ServerName<'static>,
    connector: TlsConnector,
    counters: Arc<Counters>,
) {
    let mut conn: Option<TlsStream<TcpStream>> = None;
    while let Some(msg) = rx.recv().await {
        let frame = match msg {
            Msg::Flush(done) => {
                let _ = done.send(());
                continue;
            }
            Msg::Frame(f) => f,
        };
        let mut sent = false;
        for attempt in 0..3u32 {
            if conn.is_none() {
                match connect(&address, &name, &connector).await {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        tracing::warn!(%address, error = %e, "ATNA syslog connect failed");
                        tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                        continue;
                    }
                }
            }
            if let Some(c) = conn.as_mut() {
                let r = async {
                    c.write_all(&frame).await?;
                    c.flush().await
                }
                .await;
                match r {
                    Ok(()) => {
                        sent = true;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(%address, error = %e, "ATNA syslog write failed; reconnecting");
                        conn = None;
                    }
                }
            }
        }
        if sent {
            counters.sent.fetch_add(1, Ordering::SeqCst);
        } else {
            counters.failed.fetch_add(1, Ordering::SeqCst);
            tracing::error!(%address, "ATNA audit message not delivered (the JSON record is kept)");
        }
    }
    if let Some(mut c) = conn {
        let _ = c.shutdown().await;
    }
}
