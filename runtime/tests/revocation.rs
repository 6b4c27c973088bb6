//! Revocation with real parts: a CA run with `openssl ca` (RSA, UZI-shaped certificates), its CRL
//! published over HTTP on loopback by `python3 -m http.server`, `openssl ocsp` as OCSP responder, and
//! `duo-gateway` running in this process (`server::run::start`). Checked:
//! - a revoked peer (client certificate) and a revoked trusted front end are refused by the listener,
//!   their good counterparts served; the gateway does not start with its own certificate revoked;
//! - a revoked Mitz server certificate (OCSP only) is refused by the Mitz client, a good one used;
//! - an outbound client refuses a revoked server certificate (CRL);
//! - a CRL that cannot be fetched follows `whenUnavailable` (refuse / accept, counted);
//! - a certificate revoked while the gateway runs is refused after the next refresh (refresh interval
//!   1 s): new connections by the CRL and by OCSP, an open keep-alive connection at its next request.
//!
//! Without openssl or python3 the tests say so and pass, unless `CI` or `DUO_REQUIRE_TOOLS=1` is set.

mod openssl_pki;

use std::time::{Duration, Instant};

use duo_runtime::config::{MitzConfig, RevocationConfig, RevocationFallback, TlsVersion};
use duo_runtime::consent::MitzClient;
use duo_runtime::server::run;
use duo_runtime::tls::{TlsMaterial, TlsPolicy};
use duo_testkit::sim::mitz::{self as mitz_sim, MitzSimConfig};
use openssl_pki::{Leaf, LeafSpec, OpensslCa, gateway_config, tools_present};

const BSN: &str = "900186021";

fn material(ca: &OpensslCa, leaf: &Leaf) -> TlsMaterial {
    TlsMaterial::load(&ca.tls(leaf)).unwrap()
}

/// An HTTPS client presenting `leaf` and trusting the CA (no revocation checking of its own).
fn client(ca: &OpensslCa, leaf: &Leaf) -> reqwest::Client {
    material(ca, leaf)
        .http_client(Duration::from_secs(10))
        .unwrap()
        .into()
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(i) = src {
        s.push_str(": ");
        s.push_str(&i.to_string());
        src = i.source();
    }
    s
}

/// The status of a GET, or the error chain.
async fn get(c: &reqwest::Client, url: &str) -> Result<u16, String> {
    match c.get(url).send().await {
        Ok(r) => {
            let s = r.status().as_u16();
            let _ = r.bytes().await;
            Ok(s)
        }
        Err(e) => Err(chain(&e)),
    }
}

/// A timeline request as the trusted front end sends it.
async fn timeline(c: &reqwest::Client, port: u16) -> Result<u16, String> {
    let url = format!("https://127.0.0.1:{port}/api/v1/patients/{BSN}/timeline");
    match c
        .get(url)
        .header("X-DUO-Requester-UZI", "900000001")
        .header("X-DUO-Requester-Role", "01.015")
        .send()
        .await
    {
        Ok(r) => Ok(r.status().as_u16()),
        Err(e) => Err(chain(&e)),
    }
}

/// A sample of `/metrics`: the value of `name{labels}`, 0 when absent.
async fn metric(ops: std::net::SocketAddr, name: &str, label: &str) -> f64 {
    let text = duo_runtime::tls::plain_http_client(Duration::from_secs(5))
        .unwrap()
        .get(format!("http://{ops}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(name) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn openapi(port: u16) -> String {
    format!("https://127.0.0.1:{port}/api/v1/openapi.yaml")
}

fn revocation(refresh: u64) -> RevocationConfig {
    RevocationConfig {
        refresh_interval_seconds: refresh,
        ..RevocationConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_refuses_a_revoked_peer_and_front_end_and_own_certificate() {
    if !tools_present() {
        return;
    }
    duo_runtime::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = OpensslCa::new(dir.path(), 2048);
    let gw = ca.issue("gateway", &LeafSpec::uzi("00000001", 2048));
    let peer = ca.issue("peer", &LeafSpec::uzi("00000002", 2048));
    let revoked_peer = ca.issue("revoked-peer", &LeafSpec::uzi("00000003", 4096));
    let fe_spec = LeafSpec {
        dns: vec!["frontend.local".into()],
        ..LeafSpec::uzi("00000001", 2048)
    };
    let fe = ca.issue("frontend", &fe_spec);
    let revoked_fe = ca.issue("revoked-frontend", &fe_spec);
    let revoked_gw = ca.issue("revoked-gateway", &LeafSpec::uzi("00000001", 2048));
    for l in [&revoked_peer, &revoked_fe, &revoked_gw] {
        ca.revoke(l);
    }
    ca.publish_crl(3600);
    let _web = ca.serve_crl();

    let cfg = gateway_config(
        dir.path(),
        "00000001",
        ca.tls(&gw),
        revocation(3600),
        TlsVersion::Tls12,
    );
    let g = run::start(cfg.clone(), None, run::default_hooks())
        .await
        .unwrap();
    let port = g.addr.port();

    assert_eq!(get(&client(&ca, &peer), &openapi(port)).await, Ok(200));
    let e = get(&client(&ca, &revoked_peer), &openapi(port))
        .await
        .unwrap_err();
    assert!(e.contains("CertificateRevoked"), "{e}");

    let status = timeline(&client(&ca, &fe), port).await.unwrap();
    assert_ne!(status, 403, "the front end is recognised");
    let e = timeline(&client(&ca, &revoked_fe), port).await.unwrap_err();
    assert!(e.contains("CertificateRevoked"), "{e}");

    let refused = metric(
        g.ops_addr,
        "duo_revocation_checks_total",
        "result=\"revoked\"",
    )
    .await;
    assert!(refused >= 2.0, "revoked decisions counted: {refused}");
    assert_eq!(
        metric(g.ops_addr, "duo_own_certificate_revoked", "").await,
        0.0
    );
    g.stop().await;

    // the gateway does not start with its own certificate revoked
    let mut bad = cfg;
    bad.server.tls = ca.tls(&revoked_gw);
    let e = run::start(bad, None, run::default_hooks())
        .await
        .err()
        .expect("refused");
    let e = e.to_string();
    assert!(
        e.contains("server.tls.certFile") && e.contains("revoked"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mitz_and_peer_server_certificates_are_checked_outbound() {
    if !tools_present() {
        return;
    }
    duo_runtime::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = OpensslCa::new(dir.path(), 2048);
    let gw = ca.issue("gateway", &LeafSpec::uzi("00000001", 2048));
    let ocsp_only = |bits| LeafSpec {
        ura: None,
        dns: vec!["localhost".into()],
        crl: false,
        ocsp: true,
        bits,
    };
    let mitz_good = ca.issue("mitz", &ocsp_only(2048));
    let mitz_revoked = ca.issue("mitz-revoked", &ocsp_only(4096));
    let peer_revoked = ca.issue("peer-server-revoked", &LeafSpec::uzi("00000005", 2048));
    ca.revoke(&mitz_revoked);
    ca.revoke(&peer_revoked);
    ca.publish_crl(3600);
    let _web = ca.serve_crl();
    let _ocsp = ca.serve_ocsp();

    let cfg = gateway_config(
        dir.path(),
        "00000001",
        ca.tls(&gw),
        revocation(3600),
        TlsVersion::Tls12,
    );
    let policy = TlsPolicy::from_config(&cfg);
    let sim = |leaf: &Leaf| {
        let m = material(&ca, leaf);
        async move {
            mitz_sim::start(MitzSimConfig::default(), "127.0.0.1:0".parse().unwrap(), &m)
                .await
                .unwrap()
        }
    };
    let good = sim(&mitz_good).await;
    let revoked = sim(&mitz_revoked).await;
    let ask = |addr: std::net::SocketAddr| {
        let cfg = MitzConfig {
            closed_question_url: format!(
                "https://127.0.0.1:{}/geslotenautorisatievraag/xacml3",
                addr.port()
            ),
            open_question_url: None,
            subscription_url: None,
            tls: ca.tls(&gw),
            deadline_ms: 10_000,
            cache_seconds: 0,
            notification_client_names: Vec::new(),
        };
        let client = MitzClient::with_policy(&cfg, policy.clone()).unwrap();
        async move {
            client
                .post(client.closed_question_url(), "<not-a-question/>".into())
                .await
        }
    };
    // the good Mitz answers (its HTTP 400 to this non-question proves the TLS connection was made)
    if let Err(e) = ask(good.local_addr()).await {
        assert_ne!(e.kind(), "tls", "{e}");
    }
    let e = ask(revoked.local_addr()).await.unwrap_err();
    assert_eq!(e.kind(), "tls", "{e}");
    assert!(e.to_string().contains("Revoked"), "{e}");

    // a peer's server certificate, revoked in the CRL: the gateway's outbound client refuses it
    let peer_server =
        duo_testkit::sim::serve::Transport::mutual_tls(&material(&ca, &peer_revoked)).unwrap();
    let router = axum::Router::new().route("/", axum::routing::get(|| async { "peer" }));
    let served = duo_testkit::sim::serve::start(router, peer_server)
        .await
        .unwrap();
    let outbound = material(&ca, &gw)
        .with_policy(policy.clone())
        .http_client(Duration::from_secs(10))
        .unwrap();
    let e = get(
        &outbound,
        &format!("https://127.0.0.1:{}/", served.addr().port()),
    )
    .await
    .unwrap_err();
    assert!(e.contains("Revoked"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_that_cannot_be_fetched_follows_the_policy() {
    if !tools_present() {
        return;
    }
    duo_runtime::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = OpensslCa::new(dir.path(), 2048);
    let gw = ca.issue("gateway", &LeafSpec::uzi("00000001", 2048));
    let peer = ca.issue("peer", &LeafSpec::uzi("00000002", 2048));
    // no CRL server runs: every fetch fails (connection refused)
    let strict = gateway_config(
        dir.path(),
        "00000001",
        ca.tls(&gw),
        RevocationConfig {
            fetch_timeout_ms: 2_000,
            ..revocation(3600)
        },
        TlsVersion::Tls12,
    );
    let g = run::start(strict.clone(), None, run::default_hooks())
        .await
        .unwrap();
    // rustls, like OpenSSL, answers an undeterminable revocation status with the unknown_ca alert.
    // Every attempt must fail; on a loaded machine the client's connection pool can report the closed
    // connection ("connection was not ready") before it reads the alert, so the alert must be seen in
    // one of three attempts, each on a new client.
    let mut errors = Vec::new();
    for _ in 0..3 {
        let e = get(&client(&ca, &peer), &openapi(g.addr.port()))
            .await
            .unwrap_err();
        let alert = e.contains("UnknownCA");
        errors.push(e);
        if alert {
            break;
        }
    }
    assert!(errors.iter().any(|e| e.contains("UnknownCA")), "{errors:?}");
    assert!(
        metric(
            g.ops_addr,
            "duo_revocation_checks_total",
            "unavailableRefused"
        )
        .await
            >= 1.0
    );
    assert!(
        metric(
            g.ops_addr,
            "duo_revocation_fetches_total",
            "kind=\"crl\",result=\"error\""
        )
        .await
            >= 1.0
    );
    g.stop().await;

    let mut lenient = strict;
    lenient.revocation.when_unavailable = RevocationFallback::Accept;
    let g = run::start(lenient, None, run::default_hooks())
        .await
        .unwrap();
    assert_eq!(
        get(&client(&ca, &peer), &openapi(g.addr.port())).await,
        Ok(200)
    );
    assert!(
        metric(
            g.ops_addr,
            "duo_revocation_checks_total",
            "unavailableAccepted"
        )
        .await
            >= 1.0
    );
    assert!(
        metric(
            g.ops_addr,
            "duo_revocation_unusable_sources",
            "kind=\"crl\""
        )
        .await
            >= 1.0
    );
    g.stop().await;
}

/// Retries `f` until it returns true (at most `secs`).
async fn eventually<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_revoked_while_running_is_refused_after_the_next_refresh() {
    if !tools_present() {
        return;
    }
    duo_runtime::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = OpensslCa::new(dir.path(), 2048);
    let gw = ca.issue("gateway", &LeafSpec::uzi("00000001", 2048));
    let by_crl = ca.issue("peer-crl", &LeafSpec::uzi("00000002", 2048));
    let by_ocsp = ca.issue(
        "peer-ocsp",
        &LeafSpec {
            crl: false,
            ocsp: true,
            ..LeafSpec::uzi("00000003", 2048)
        },
    );
    ca.publish_crl(3600);
    let _web = ca.serve_crl();
    let _ocsp = ca.serve_ocsp();
    let cfg = gateway_config(
        dir.path(),
        "00000001",
        ca.tls(&gw),
        revocation(1),
        TlsVersion::Tls12,
    );
    let g = run::start(cfg, None, run::default_hooks()).await.unwrap();
    let port = g.addr.port();
    let kept = client(&ca, &by_crl);
    assert_eq!(get(&kept, &openapi(port)).await, Ok(200));
    assert_eq!(get(&client(&ca, &by_ocsp), &openapi(port)).await, Ok(200));

    ca.revoke(&by_crl);
    ca.revoke(&by_ocsp);
    ca.publish_crl(3600);
    // openssl ocsp reads index.txt again when it changes

    // the open keep-alive connection: refused at its next request once the refresh saw the CRL
    eventually(10, "open connection refused", || {
        let kept = kept.clone();
        async move { get(&kept, &openapi(port)).await == Ok(403) }
    })
    .await;
    // new connections: refused in the handshake
    let e = get(&client(&ca, &by_crl), &openapi(port))
        .await
        .unwrap_err();
    assert!(e.contains("CertificateRevoked"), "{e}");
    eventually(10, "OCSP revocation seen", || {
        let c = client(&ca, &by_ocsp);
        async move {
            get(&c, &openapi(port))
                .await
                .is_err_and(|e| e.contains("CertificateRevoked"))
        }
    })
    .await;
    g.stop().await;
}
