//! Running a gateway from a configuration file (issue 3 "Configuration"): hot reload of the file and of
//! the TLS files it names while requests are in flight, broken edits rejected while the last good
//! configuration keeps serving, the ops listener (`/healthz`, `/readyz`, `/metrics`), and the CLI's
//! one-line errors naming the field (`duo-gateway check-config`, `duo-gateway serve`).

mod gateway_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duo_runtime::config::{Config, LocalizationMode, RemoteCommunity};
use duo_runtime::consent::Decision;
use duo_runtime::ihe::query::{AdhocQueryRequest, AdhocQueryResponse};
use duo_runtime::ihe::soap::{SoapHeader, Transaction};
use duo_runtime::ihe::{read_soap, write_soap};
use duo_runtime::pki::generate::{Ca, ServerCertSpec};
use duo_runtime::server::listener::PeerCertificate;
use duo_runtime::server::run::{self, Running};
use duo_runtime::tls::TlsMaterial;
use duo_runtime::xml::Limits;
use duo_testkit::sim::faults::Faults;
use duo_testkit::sim::serve::{RunningSim, Transport};
use gateway_support::*;

/// The leaf certificate (DER) a fresh TLS handshake with `addr` presents.
async fn server_certificate(addr: SocketAddr, client: &TlsMaterial) -> Vec<u8> {
    let connector = tokio_rustls::TlsConnector::from(client.client_config().unwrap());
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn der_of(pem: &str) -> Vec<u8> {
    duo_runtime::pki::parse_certificates(pem.as_bytes()).unwrap()[0].to_vec()
}

/// A community that records the client certificate (leaf, DER) of every ITI-38 it gets and answers
/// "nothing found".
async fn recorder(w: &World) -> (RunningSim, Arc<Mutex<Vec<Vec<u8>>>>) {
    let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let log = seen.clone();
    let router = axum::Router::new().route(
        "/xca/iti38",
        axum::routing::post(move |req: axum::extract::Request| {
            let log = log.clone();
            async move {
                let leaf = req
                    .extensions()
                    .get::<PeerCertificate>()
                    .and_then(|p| p.leaf())
                    .map(|c| c.to_vec())
                    .unwrap_or_default();
                log.lock().unwrap().push(leaf);
                let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                    .await
                    .unwrap();
                let (h, _) = read_soap::<AdhocQueryRequest>(&body, &Limits::default()).unwrap();
                let xml = write_soap(
                    &SoapHeader::response(Transaction::Iti38.response_action(), &h),
                    &AdhocQueryResponse::new(Vec::new(), Vec::new()),
                );
                ([("content-type", "application/soap+xml")], xml)
            }
        }),
    );
    let (_, tls) = w
        .issue("recorder", world::plain_spec("Recorder", &["localhost"]))
        .unwrap();
    let sim = duo_testkit::sim::serve::start(router, Transport::mutual_tls(&tls).unwrap())
        .await
        .unwrap();
    (sim, seen)
}

fn recorder_community(sim: &RunningSim) -> RemoteCommunity {
    let base = format!("https://localhost:{}", sim.addr().port());
    RemoteCommunity {
        home_community_id: "urn:oid:2.16.528.1.1007.99.77.1".parse().unwrap(),
        name: "Recorder".into(),
        organizations: Vec::new(),
        query_url: format!("{base}/xca/iti38"),
        retrieve_url: format!("{base}/xca/iti39"),
        imaging_retrieve_url: format!("{base}/xcai/rad75"),
        connect_to: None,
        certificate_ura: None,
        trusted_issuers: Vec::new(),
        deadline_ms: 5_000,
        fronted_communities: Vec::new(),
    }
}

/// Waits until `duo_config_reloads_total{result}` of the gateway reaches `n`.
async fn reloads(ops: SocketAddr, result: &str, n: f64) {
    reloads_to(ops, result, n, true).await
}

/// Waits until `duo_config_reloads_total{result}` reaches `n` (exactly `n` when `exact`).
async fn reloads_to(ops: SocketAddr, result: &str, n: f64, exact: bool) {
    let started = Instant::now();
    loop {
        let text = duo_runtime::tls::plain_http_client(Duration::from_secs(5))
            .unwrap()
            .get(format!("http://{ops}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let v = metric(&text, "duo_config_reloads_total", &[("result", result)]);
        if v >= n {
            if exact {
                assert_eq!(v, n, "{result} reloads");
            }
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "no {result} reload #{n} within 8 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn get(url: String) -> (u16, String) {
    let r = duo_runtime::tls::plain_http_client(Duration::from_secs(5))
        .unwrap()
        .get(url)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// GET the timeline of the world's patient at the gateway `g` as hospital A's radiologist.
async fn timeline_at(client: &reqwest::Client, g: &Running, w: &World) -> (u16, serde_json::Value) {
    let r = requester(w, 0);
    let resp = client
        .get(format!(
            "https://localhost:{}/api/v1/patients/{}/timeline",
            g.addr.port(),
            w.patient.bsn
        ))
        .header("X-DUO-Requester-UZI", r.uzi.as_str())
        .header("X-DUO-Requester-Role", r.role.as_str())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

fn study_set(t: &serde_json::Value) -> std::collections::BTreeSet<String> {
    studies(t).into_keys().collect()
}

fn seeded_set(w: &World, hospitals: &[usize]) -> std::collections::BTreeSet<String> {
    hospitals.iter().flat_map(|i| seeded(w, *i)).collect()
}

#[tokio::test]
async fn config_and_certificates_reload_without_dropping_requests() {
    let w = build(options(
        vec![
            spec("A", Kind::Xds, 1, Decision::Permit),
            spec("B", Kind::Tlb, 1, Decision::Permit),
            spec("C", Kind::Tlb, 1, Decision::Permit),
        ],
        LocalizationMode::AllCommunities,
    ))
    .await;
    let dir = w.dir.path().to_path_buf();
    // a second gateway of hospital A, run from a file the way `duo-gateway serve` runs it; its
    // remote community is B's TLB node, later C's
    let a_ura = w.hospitals[0].spec.ura.clone();
    let issue = |name: &str| {
        let (tls, _) = w
            .issue(
                name,
                ServerCertSpec::uzi(a_ura.clone(), "Ziekenhuis A", &["localhost"], 30),
            )
            .unwrap();
        (
            std::fs::read_to_string(&tls.cert_file).unwrap(),
            std::fs::read_to_string(&tls.key_file).unwrap(),
        )
    };
    let (cert1, key1) = issue("g-1");
    let (cert2, key2) = issue("g-2");
    let (cert_file, key_file) = (dir.join("g.crt"), dir.join("g.key"));
    std::fs::write(&cert_file, &cert1).unwrap();
    std::fs::write(&key_file, &key1).unwrap();
    let node_b = node_community(&w, 1, 5_000);
    let node_c = node_community(&w, 2, 5_000);
    let (rec_sim, presented) = recorder(&w).await;
    let rec = recorder_community(&rec_sim);
    let mut config: Config = w.hospitals[0].config.clone();
    config.server.tls.cert_file = cert_file.clone();
    config.server.tls.key_file = key_file.clone();
    config.server.reload_interval_seconds = 1;
    config.audit.sink = dir.join("audit-g.jsonl").to_string_lossy().into_owned();
    config.communities = vec![node_b.clone(), rec.clone()];
    let path = dir.join("g.yaml");
    std::fs::write(&path, config.to_yaml()).unwrap();
    let g = run::start(
        Config::load(&path).unwrap(),
        Some(path.clone()),
        run::default_hooks(),
    )
    .await
    .unwrap();
    let ops = g.ops_addr;
    let client = front_end(&w, 0);
    let viewer = &w.hospitals[0].front_end;

    // the ops listener
    assert_eq!(
        get(format!("http://{ops}/healthz")).await,
        (200, "ok".into())
    );
    assert_eq!(
        get(format!("http://{ops}/readyz")).await,
        (200, "ready".into())
    );
    assert_eq!(server_certificate(g.addr, viewer).await, der_of(&cert1));

    let (status, t) = timeline_at(&client, &g, &w).await;
    assert_eq!(
        (status, t["status"].as_str()),
        (200, Some("Success")),
        "{t}"
    );
    assert_eq!(study_set(&t), seeded_set(&w, &[0, 1]));
    w.hospitals[1].control.set_faults(Faults {
        http_500: true,
        ..Faults::default()
    });
    let (_, t) = timeline_at(&client, &g, &w).await;
    assert_eq!(t["status"], "PartialSuccess", "{t}");
    w.hospitals[1].control.reset_faults();
    let (_, m) = get(format!("http://{ops}/metrics")).await;
    let b_node = node_b.home_community_id.to_string();
    let labels = [("community", b_node.as_str()), ("transaction", "ITI-38")];
    assert_eq!(
        metric(&m, "duo_community_request_duration_seconds_count", &labels),
        2.0,
        "{m}"
    );
    assert!(metric(&m, "duo_community_request_duration_seconds_sum", &labels) > 0.0);
    assert_eq!(
        metric(
            &m,
            "duo_community_errors_total",
            &[("community", b_node.as_str()), ("code", "http")]
        ),
        1.0
    );
    assert_eq!(metric(&m, "duo_fanout_size_count", &[]), 2.0);
    assert_eq!(
        metric(&m, "duo_fanout_size_sum", &[]),
        6.0,
        "local + B + recorder, twice"
    );
    assert_eq!(
        metric(&m, "duo_requests_total", &[("endpoint", "timeline")]),
        2.0
    );

    // a request in flight (B's node answers slowly) while the community changes to C and the
    // certificate rotates: it finishes on the configuration it started with
    w.hospitals[1].control.set_faults(Faults {
        delay_ms: 2_000,
        ..Faults::default()
    });
    let in_flight = {
        let client = client.clone();
        let url = format!(
            "https://localhost:{}/api/v1/patients/{}/timeline",
            g.addr.port(),
            w.patient.bsn
        );
        let r = requester(&w, 0);
        tokio::spawn(async move {
            let resp = client
                .get(url)
                .header("X-DUO-Requester-UZI", r.uzi.as_str())
                .header("X-DUO-Requester-Role", r.role.as_str())
                .send()
                .await
                .unwrap();
            (
                resp.status().as_u16(),
                resp.json::<serde_json::Value>().await.unwrap(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(&cert_file, &cert2).unwrap();
    std::fs::write(&key_file, &key2).unwrap();
    config.communities = vec![node_c.clone(), rec.clone()];
    std::fs::write(&path, config.to_yaml()).unwrap();
    reloads(ops, "applied", 1.0).await;
    assert!(
        !in_flight.is_finished(),
        "the reload came while the request ran"
    );
    let (status, t) = in_flight.await.unwrap();
    assert_eq!(
        (status, t["status"].as_str()),
        (200, Some("Success")),
        "{t}"
    );
    assert_eq!(study_set(&t), seeded_set(&w, &[0, 1]), "old configuration");
    w.hospitals[1].control.reset_faults();
    let (status, t) = timeline_at(&client, &g, &w).await;
    assert_eq!(
        (status, t["status"].as_str()),
        (200, Some("Success")),
        "{t}"
    );
    assert_eq!(study_set(&t), seeded_set(&w, &[0, 2]), "new configuration");
    assert_eq!(server_certificate(g.addr, viewer).await, der_of(&cert2));
    // outbound calls present the hospital's certificate: the old one before, the new one after
    {
        let seen = presented.lock().unwrap();
        assert_eq!(seen.first(), Some(&der_of(&cert1)));
        assert_eq!(seen.last(), Some(&der_of(&cert2)));
    }

    // broken edits are rejected and the running configuration stays: invalid YAML, then a key that
    // is not a key
    let b_before = w.hospitals[1].control.total_requests();
    std::fs::write(&path, "organization: [\n").unwrap();
    reloads(ops, "rejected", 1.0).await;
    let (_, t) = timeline_at(&client, &g, &w).await;
    assert_eq!(study_set(&t), seeded_set(&w, &[0, 2]));
    std::fs::write(&path, config.to_yaml()).unwrap();
    std::fs::write(&key_file, "-----BEGIN PRIVATE KEY-----\nbroken\n").unwrap();
    reloads(ops, "rejected", 2.0).await;
    let (_, t) = timeline_at(&client, &g, &w).await;
    assert_eq!(t["status"], "Success", "{t}");
    assert_eq!(study_set(&t), seeded_set(&w, &[0, 2]));
    assert_eq!(server_certificate(g.addr, viewer).await, der_of(&cert2));
    assert_eq!(
        w.hospitals[1].control.total_requests(),
        b_before,
        "B stays out"
    );
    // repaired: applied again
    std::fs::write(&key_file, &key2).unwrap();
    reloads(ops, "applied", 2.0).await;
    // a certificate of another organisation, then an expired one of A: rejected, cert2 keeps serving
    let other = |name: &str, spec: ServerCertSpec| {
        let (tls, _) = w.issue(name, spec).unwrap();
        (
            std::fs::read_to_string(&tls.cert_file).unwrap(),
            std::fs::read_to_string(&tls.key_file).unwrap(),
        )
    };
    let (wrong_cert, wrong_key) = other(
        "g-wrong-ura",
        ServerCertSpec::uzi(
            w.hospitals[1].spec.ura.clone(),
            "Ziekenhuis B",
            &["localhost"],
            30,
        ),
    );
    let mut expired = ServerCertSpec::uzi(a_ura.clone(), "Ziekenhuis A", &["localhost"], 30);
    expired.not_before = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(48);
    expired.not_after = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
    let (old_cert, old_key) = other("g-expired", expired);
    for (c, k) in [(&wrong_cert, &wrong_key), (&old_cert, &old_key)] {
        // two files: the poll may see one of them changed first, which is rejected too
        let before = metric(
            &get(format!("http://{ops}/metrics")).await.1,
            "duo_config_reloads_total",
            &[("result", "rejected")],
        );
        std::fs::write(&key_file, k).unwrap();
        std::fs::write(&cert_file, c).unwrap();
        reloads_to(ops, "rejected", before + 1.0, false).await;
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(server_certificate(g.addr, viewer).await, der_of(&cert2));
        let (_, t) = timeline_at(&client, &g, &w).await;
        assert_eq!(t["status"], "Success", "{t}");
    }
    std::fs::write(&cert_file, &cert2).unwrap();
    std::fs::write(&key_file, &key2).unwrap();
    reloads(ops, "applied", 3.0).await;
    let (_, m) = get(format!("http://{ops}/metrics")).await;
    assert_eq!(
        metric(&m, "duo_fanout_size_count", &[]),
        8.0,
        "metrics survive reloads"
    );
    assert_eq!(get(format!("http://{ops}/readyz")).await.0, 200);
    g.stop().await;
    rec_sim.stop().await;
    w.stop().await;
}

/// Runs the CLI; kills it after 20 s. Returns (exit code, stdout, stderr).
fn cli(args: &[&str]) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_duo-gateway"))
        .args(args)
        .env_remove("DUO_CONFIG")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("{args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts a failed run with exactly one line on stderr naming every one of `words`.
fn one_line_error(what: &str, (code, stdout, stderr): (i32, String, String), words: &[&str]) {
    assert_eq!(code, 1, "{what}: exit code; stderr: {stderr}");
    assert!(stdout.trim().is_empty(), "{what}: stdout {stdout:?}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{what}: one line, got {stderr:?}");
    for w in words {
        assert!(lines[0].contains(w), "{what}: {:?} lacks {w:?}", lines[0]);
    }
}

const EXAMPLE: &str = include_str!("../examples/gateway.yaml");

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn cli_config_errors_are_one_line_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ok = write(d, "ok.yaml", EXAMPLE);
    let (code, stdout, _) = cli(&[
        "check-config",
        "--fields-only",
        "--config",
        ok.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    assert!(stdout.contains("valid"), "{stdout}");
    // without --fields-only the files it names are checked too: the example's are not on this host
    one_line_error(
        "example's files absent",
        cli(&["check-config", "--config", ok.to_str().unwrap()]),
        &["/etc/duo/", "No such file"],
    );

    let cases: &[(&str, &str, &[&str])] = &[
        (
            "\"12345678\"",
            "\"1234567\"",
            &["organization.ura", "1234567"],
        ),
        (
            "facilityType: V6",
            "facilityTyp: V6",
            &["organization.facilityTyp", "unknown field"],
        ),
        (
            "https://duo.west.example/xca/iti38",
            "http://duo.west.example/xca/iti38",
            &["communities[0].queryUrl", "plain http"],
        ),
        (
            "deadlineMs: 5000",
            "deadlineMs: -1",
            &["communities[0].deadlineMs"],
        ),
        ("kind: xds", "kind: ftp", &["local.kind", "ftp"]),
        (
            "uniqueId: 1.2.3.4.1",
            "uniqueId: one.two",
            &["local.repositories[0].uniqueId", "not an OID"],
        ),
        ("  mode: mitz", "  mode: sometimes", &["consent.mode"]),
        ("sink: stdout", "sink: [stdout", &["audit.sink", "line"]),
    ];
    for (from, to, words) in cases {
        assert!(EXAMPLE.contains(from), "{from}");
        let p = write(d, "broken.yaml", &EXAMPLE.replacen(from, to, 1));
        let p = p.to_str().unwrap();
        one_line_error(
            &format!("check-config {to}"),
            cli(&["check-config", "--config", p]),
            words,
        );
        // serve refuses the same file the same way, before binding anything
        one_line_error(
            &format!("serve {to}"),
            cli(&["serve", "--config", p]),
            words,
        );
    }
    // a required section missing
    let start = EXAMPLE.find("mitz:\n  closedQuestionUrl").unwrap();
    let end = EXAMPLE.find("audit:").unwrap();
    let no_mitz = write(
        d,
        "no-mitz.yaml",
        &format!("{}{}", &EXAMPLE[..start], &EXAMPLE[end..]),
    );
    one_line_error(
        "no mitz",
        cli(&["check-config", "--config", no_mitz.to_str().unwrap()]),
        &["mitz", "required"],
    );
    // no file at all
    one_line_error(
        "missing file",
        cli(&[
            "check-config",
            "--config",
            d.join("nothere.yaml").to_str().unwrap(),
        ]),
        &["cannot read", "nothere.yaml"],
    );
}

#[test]
fn cli_serve_start_errors_are_one_line_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // a valid identity, a configuration that needs no Mitz
    let ca = Ca::new("CLI test CA").unwrap();
    let c = ca
        .issue(&ServerCertSpec::uzi(
            "12345678".parse().unwrap(),
            "Ziekenhuis Oost",
            &["localhost"],
            30,
        ))
        .unwrap();
    let crt = write(d, "tls.crt", &c.cert_pem);
    let key = write(d, "tls.key", &c.key_pem);
    let bundle = write(d, "ca.crt", &ca.cert_pem);
    let start = EXAMPLE.find("mitz:\n  closedQuestionUrl").unwrap();
    let end = EXAMPLE.find("audit:").unwrap();
    let base = format!("{}{}", &EXAMPLE[..start], &EXAMPLE[end..])
        .replace("  mode: mitz", "  mode: permitAll")
        .replace(
            "consent:",
            "initiating:\n  localization: allCommunities\nconsent:",
        )
        .replace("/etc/duo/tls/tls.crt", crt.to_str().unwrap())
        .replace("/etc/duo/tls/tls.key", key.to_str().unwrap())
        .replace("/etc/duo/trust/ca.crt", bundle.to_str().unwrap());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    // serve refuses, and check-config finds the same reason (but binds nothing, so not the taken
    // addresses)
    let serve = |name: &str, text: String| {
        let p = write(d, name, &text);
        let served = cli(&["serve", "--config", p.to_str().unwrap()]);
        if !name.contains("taken") {
            let checked = cli(&["check-config", "--config", p.to_str().unwrap()]);
            assert_eq!(
                (checked.0, checked.2.trim()),
                (served.0, served.2.trim()),
                "{name}: check-config and serve differ"
            );
        }
        served
    };
    let listen = |text: &str, main: &str, ops: &str| {
        text.replace("0.0.0.0:8443", main)
            .replace("0.0.0.0:8080", ops)
    };
    one_line_error(
        "certificate file missing",
        serve(
            "no-cert.yaml",
            listen(&base, "127.0.0.1:0", "127.0.0.1:0")
                .replace(crt.to_str().unwrap(), d.join("gone.crt").to_str().unwrap()),
        ),
        &["server.tls", "gone.crt"],
    );
    one_line_error(
        "key that is no key",
        serve("bad-key.yaml", {
            let bad = write(d, "bad.key", "-----BEGIN PRIVATE KEY-----\nbroken\n");
            listen(&base, "127.0.0.1:0", "127.0.0.1:0")
                .replace(key.to_str().unwrap(), bad.to_str().unwrap())
        }),
        &["server.tls", "bad.key"],
    );
    one_line_error(
        "audit file in a missing folder",
        serve(
            "no-audit.yaml",
            listen(&base, "127.0.0.1:0", "127.0.0.1:0").replace(
                "sink: stdout",
                &format!("sink: {}", d.join("none/audit.jsonl").display()),
            ),
        ),
        &["audit.sink", "none/audit.jsonl"],
    );
    one_line_error(
        "listen address taken",
        serve("taken.yaml", listen(&base, &taken_addr, "127.0.0.1:0")),
        &["server.listen", &taken_addr],
    );
    one_line_error(
        "ops address taken",
        serve("ops-taken.yaml", listen(&base, "127.0.0.1:0", &taken_addr)),
        &["server.opsListen", &taken_addr],
    );
    drop(taken);
}
