//! The TLS policy seen from outside, with OpenSSL's own tools: `openssl s_client` against a running
//! gateway and `openssl s_server` as the peer of the gateway's outbound client.
//! - Default (`minVersion: TLSv1.2`): TLS 1.3 and TLS 1.2 with ECDHE suites are served; TLS 1.2 with
//!   RSA key exchange or a CBC suite is refused.
//! - `minVersion: TLSv1.3`: TLS 1.2 is refused, TLS 1.3 served; the outbound client refuses a TLS
//!   1.2-only server.
//! - RSA 2048 and 4096 certificates shaped like UZI server certificates (otherName 2.5.5.5) work as the
//!   gateway's server certificate, as client certificates and as outbound client certificates.
//!
//! Without openssl the tests say so and pass, unless `CI` or `DUO_REQUIRE_TOOLS=1` is set.

mod openssl_pki;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use duo_runtime::config::{RevocationConfig, TlsVersion};
use duo_runtime::server::run;
use duo_runtime::tls::{TlsMaterial, TlsPolicy};
use openssl_pki::{Leaf, LeafSpec, OpensslCa, Proc, free_port, gateway_config, tools_present};

/// What `openssl s_client` saw.
struct Seen {
    /// Negotiated protocol, e.g. `TLSv1.3`, when the handshake completed.
    protocol: Option<String>,
    /// Negotiated cipher (OpenSSL's name).
    cipher: Option<String>,
    /// The HTTP status line of the answer to one request, when one came.
    status: Option<String>,
    output: String,
}

/// Connects with `openssl s_client` presenting `client`, with `extra` options (e.g. `-tls1_2`), sends
/// one HTTP request and reads the answer.
fn s_client(ca: &OpensslCa, client: &Leaf, port: u16, extra: &[&str]) -> Seen {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args([
            "-servername",
            "localhost",
            "-verify_return_error",
            "-ign_eof",
        ])
        .arg("-CAfile")
        .arg(ca.ca_file())
        .arg("-cert")
        .arg(&client.cert)
        .arg("-key")
        .arg(&client.key)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"GET /api/v1/openapi.yaml HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // "New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384"
    let (protocol, cipher) = output
        .lines()
        .find_map(|l| l.strip_prefix("New, "))
        .filter(|l| !l.starts_with("(NONE)"))
        .and_then(|l| l.split_once(", Cipher is "))
        .map(|(p, c)| (Some(p.to_owned()), Some(c.trim().to_owned())))
        .unwrap_or((None, None));
    let status = output
        .lines()
        .find(|l| l.starts_with("HTTP/1.1 "))
        .map(str::to_owned);
    Seen {
        protocol,
        cipher,
        status,
        output,
    }
}

fn served(s: &Seen) -> bool {
    s.status.as_deref().is_some_and(|l| l.contains(" 200 "))
}

async fn start(dir: &std::path::Path, ca: &OpensslCa, gw: &Leaf, min: TlsVersion) -> run::Running {
    let cfg = gateway_config(
        dir,
        "00000001",
        ca.tls(gw),
        RevocationConfig::default(),
        min,
    );
    run::start(cfg, None, run::default_hooks()).await.unwrap()
}

fn no_crl(bits: u32, ura: &str) -> LeafSpec {
    LeafSpec {
        crl: false,
        ..LeafSpec::uzi(ura, bits)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s_client_sees_the_policy_with_rsa_2048_and_4096_certificates() {
    if !tools_present() {
        return;
    }
    duo_runtime::tls::install_crypto_provider();
    for bits in [2048, 4096] {
        let dir = tempfile::tempdir().unwrap();
        let ca = OpensslCa::new(dir.path(), 2048);
        let gw = ca.issue("gateway", &no_crl(bits, "00000001"));
        let peer = ca.issue("peer", &no_crl(bits, "00000002"));
        // the UZI otherName of the openssl-made certificate is read as such
        let info = duo_runtime::pki::leaf_info(&std::fs::read(&gw.cert).unwrap()).unwrap();
        assert_eq!(info.ura.map(|u| u.to_string()).as_deref(), Some("00000001"));

        let g = start(dir.path(), &ca, &gw, TlsVersion::Tls12).await;
        let port = g.addr.port();
        let (ca_ref, peer_ref) = (&ca, &peer);
        let run = |extra: &'static [&'static str]| {
            let seen = s_client(ca_ref, peer_ref, port, extra);
            (
                seen.protocol.clone(),
                seen.cipher.clone(),
                served(&seen),
                seen.output,
            )
        };
        let (p, c, ok, out) = tokio::task::block_in_place(|| run(&["-tls1_3"]));
        assert!(ok, "RSA {bits}, TLS 1.3: {out}");
        assert_eq!(p.as_deref(), Some("TLSv1.3"), "{out}");
        assert!(c.is_some_and(|c| c.starts_with("TLS_")), "{out}");
        let (p, c, ok, out) = tokio::task::block_in_place(|| run(&["-tls1_2"]));
        assert!(ok, "RSA {bits}, TLS 1.2: {out}");
        assert_eq!(p.as_deref(), Some("TLSv1.2"), "{out}");
        let c = c.unwrap_or_default();
        assert!(
            c.starts_with("ECDHE-RSA-") && (c.contains("GCM") || c.contains("CHACHA20")),
            "{c}: {out}"
        );
        // TLS 1.2 without ECDHE, or with CBC: refused
        for weak in [
            "AES256-GCM-SHA384",
            "AES128-SHA256",
            "ECDHE-RSA-AES256-SHA384",
            "ECDHE-RSA-AES128-SHA",
            "DHE-RSA-AES256-GCM-SHA384",
        ] {
            let args: &'static [&'static str] =
                Box::leak(vec!["-tls1_2", "-cipher", weak].into_boxed_slice());
            let (p, _, ok, out) = tokio::task::block_in_place(|| run(args));
            assert!(!ok && p.is_none(), "{weak} must be refused: {out}");
            // refused by the gateway (OpenSSL itself offers these suites)
            assert!(out.contains("handshake failure"), "{weak}: {out}");
        }
        g.stop().await;

        let g = start(dir.path(), &ca, &gw, TlsVersion::Tls13).await;
        let port = g.addr.port();
        let run = |extra: &'static [&'static str]| {
            let seen = s_client(&ca, &peer, port, extra);
            (seen.protocol.clone(), served(&seen), seen.output)
        };
        let (p, ok, out) = tokio::task::block_in_place(|| run(&["-tls1_2"]));
        assert!(
            !ok && p.is_none(),
            "TLS 1.3 only: TLS 1.2 must be refused: {out}"
        );
        assert!(out.contains("protocol version"), "{out}");
        let (p, ok, out) = tokio::task::block_in_place(|| run(&["-tls1_3"]));
        assert!(ok, "RSA {bits}, TLS 1.3 only: {out}");
        assert_eq!(p.as_deref(), Some("TLSv1.3"));
        g.stop().await;
    }
}

/// `openssl s_server` with `leaf`, requiring a client certificate of the CA, limited to `version`
/// (`-tls1_2` / `-tls1_3`), answering every request with its status page (`-www`).
fn s_server(ca: &OpensslCa, leaf: &Leaf, version: &str) -> (Proc, u16) {
    let port = free_port();
    let mut child = Command::new("openssl")
        .args(["s_server", "-www", "-Verify", "1", version, "-accept"])
        .arg(port.to_string())
        .arg("-cert")
        .arg(&leaf.cert)
        .arg("-key")
        .arg(&leaf.key)
        .arg("-CAfile")
        .arg(ca.ca_file())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut told = false;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if !told && line.starts_with("ACCEPT") {
                let _ = tx.send(());
                told = true;
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("openssl s_server did not start");
    (Proc(child), port)
}

async fn fetch(m: &TlsMaterial, port: u16) -> Result<u16, String> {
    let c = m.http_client(Duration::from_secs(10)).unwrap();
    match c.get(format!("https://127.0.0.1:{port}/")).send().await {
        Ok(r) => Ok(r.status().as_u16()),
        Err(e) => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(i) = src {
                s.push_str(": ");
                s.push_str(&i.to_string());
                src = i.source();
            }
            Err(s)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_client_follows_the_policy_against_s_server() {
    if !tools_present() {
        return;
    }
    duo_runtime::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = OpensslCa::new(dir.path(), 4096);
    let gw = ca.issue("gateway", &no_crl(4096, "00000001"));
    let peer = ca.issue("peer", &no_crl(2048, "00000002"));
    let m = |min| {
        TlsMaterial::load(&ca.tls(&gw))
            .unwrap()
            .with_policy(TlsPolicy {
                min_version: min,
                revocation: None,
            })
    };
    let (_s12, port12) = s_server(&ca, &peer, "-tls1_2");
    let (_s13, port13) = s_server(&ca, &peer, "-tls1_3");
    assert_eq!(fetch(&m(TlsVersion::Tls12), port12).await, Ok(200));
    assert_eq!(fetch(&m(TlsVersion::Tls12), port13).await, Ok(200));
    let e = fetch(&m(TlsVersion::Tls13), port12).await.unwrap_err();
    assert!(e.to_lowercase().contains("protocol"), "{e}");
    assert_eq!(fetch(&m(TlsVersion::Tls13), port13).await, Ok(200));
}

#[test]
fn only_ncsc_good_suites_are_offered() {
    use rustls::CipherSuite::*;
    let allowed = [
        TLS13_AES_256_GCM_SHA384,
        TLS13_CHACHA20_POLY1305_SHA256,
        TLS13_AES_128_GCM_SHA256,
        TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ];
    let p = duo_runtime::tls::provider();
    assert_eq!(p.cipher_suites.len(), allowed.len());
    for s in &p.cipher_suites {
        assert!(allowed.contains(&s.suite()), "{:?}", s.suite());
    }
    let groups: Vec<_> = p.kx_groups.iter().map(|g| g.name()).collect();
    assert_eq!(
        groups,
        vec![
            rustls::NamedGroup::X25519,
            rustls::NamedGroup::secp256r1,
            rustls::NamedGroup::secp384r1
        ]
    );
}
