//! Registration with Mitz as data holder and Mitz's consent notifications (issue 14), end to end: two
//! hospitals' gateways, the Mitz simulator (which answers the open question only from registrations and
//! pushes notifications over mutual TLS), the JSON timeline and the audit files.

mod gateway_support;

use std::sync::Arc;
use std::time::Duration;

use duo_runtime::audit::{AuditEvent, Outcome};
use duo_runtime::config::{RegistrationConfig, RegistrationMode};
use duo_runtime::consent::{Decision, MitzClient};
use duo_runtime::registration::{Registered, Registrar, RegistrationError};
use duo_testkit::sim::mitz::{ConsentRule, MitzSim};
use gateway_support::*;
use serde_json::Value;

const B: usize = 1;

/// A and B (XDS hospitals, localisation `mitz`, cache 60 s) and a Mitz simulator of the world's CA
/// (`localhost`, `mitz.test`) that knows of A's data of the patient but not of B's: B has not
/// registered it. B registers with that simulator and takes notifications from `notifier`.
async fn world(notifier: &str) -> (World, MitzSim) {
    let mut w = build(options(
        vec![
            spec("A", Kind::Xds, 1, Decision::Permit),
            spec("B", Kind::Xds, 1, Decision::Permit),
        ],
        LocalizationMode::Mitz,
    ))
    .await;
    let b_ura = w.hospitals[B].spec.ura.clone();
    let mut cfg = w.mitz_config.clone();
    cfg.locations.retain(|l| l.holder != b_ura);
    let (_, tls) = w
        .issue(
            "mitz-reg",
            world::plain_spec("Mitz test", &["localhost", "mitz.test"]),
        )
        .unwrap();
    let mitz = duo_testkit::sim::mitz::start(cfg, "127.0.0.1:0".parse().unwrap(), &tls)
        .await
        .unwrap();
    let port = mitz.local_addr().port();
    for i in 0..2 {
        use_mitz(&mut w, i, port, 3_000, 60).await;
    }
    let endpoint = format!("{}/mitz/notifications", w.hospitals[B].gateway_url());
    let notifier = notifier.to_owned();
    w.reconfigure(B, |c| {
        let m = c.mitz.as_mut().unwrap();
        m.subscription_url = Some(format!(
            "https://localhost:{port}/abonnementen/fhir/Subscription"
        ));
        m.notification_client_names = vec![notifier];
        c.registration = RegistrationConfig {
            mode: RegistrationMode::Mitz,
            notification_endpoint: Some(endpoint),
            source_system: None,
            max_attempts: 3,
            dsub: None,
        };
    })
    .await
    .unwrap();
    (w, mitz)
}

/// How many documents community `home` contributed to a timeline (0 when it was not asked).
fn documents_of(t: &Value, home: &str) -> u64 {
    t["communities"]
        .as_array()
        .unwrap_or_else(|| panic!("no communities: {t}"))
        .iter()
        .find(|c| c["homeCommunityId"] == home)
        .and_then(|c| c["documents"].as_u64())
        .unwrap_or(0)
}

async fn a_sees_of_b(w: &World) -> u64 {
    let a = timeline(w, 0, &requester(w, 0), w.patient.bsn.as_str()).await;
    assert_eq!(a.status, 200, "{}", a.text());
    documents_of(&a.json(), &w.hospitals[B].home.to_string())
}

async fn register_at_b(w: &World, body: Value) -> (u16, Value) {
    let r = front_end(w, B)
        .post(format!(
            "{}/api/v1/registrations",
            w.hospitals[B].gateway_url()
        ))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patient_registered_by_b_is_found_by_a_and_registered_once() {
    let (w, mitz) = world("mitz.test").await;
    let bsn = w.patient.bsn.to_string();
    assert_eq!(
        a_sees_of_b(&w).await,
        0,
        "B's data found before B registered it"
    );

    let (status, body) = register_at_b(&w, serde_json::json!({ "bsn": bsn })).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["outcome"], "registered");
    assert!(body["subscriptionId"].as_str().is_some(), "{body}");
    let (status, body) = register_at_b(&w, serde_json::json!({ "bsn": bsn })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "alreadyRegistered");
    let s = mitz.stats();
    assert_eq!((s.registrations, s.subscriptions), (1, 1), "{s:?}");
    let reg = mitz.registrations();
    let mine: Vec<_> = reg
        .iter()
        .filter(|r| r.holder == w.hospitals[B].spec.ura)
        .collect();
    assert_eq!(mine.len(), 1, "{reg:?}");

    assert!(
        a_sees_of_b(&w).await > 0,
        "B's data not found after B registered it"
    );

    let audit = audit(&w.hospitals[B]);
    let registrations: Vec<_> = audit
        .iter()
        .filter(|r| r.event == AuditEvent::Registration)
        .collect();
    assert_eq!(registrations.len(), 2, "{registrations:?}");
    assert!(
        registrations
            .iter()
            .all(|r| r.patient.as_ref().map(|p| p.as_str()) == Some(bsn.as_str()))
    );

    // bad input and strangers: refused, nothing registered
    for (body, want) in [
        (serde_json::json!({ "bsn": "123456789" }), 400),
        (
            serde_json::json!({ "bsn": bsn, "birthDate": "2099-01-01" }),
            400,
        ),
        (serde_json::json!({ "bsn": bsn, "extra": 1 }), 400),
        (serde_json::json!(["900186021"]), 400),
    ] {
        let (status, answer) = register_at_b(&w, body.clone()).await;
        assert_eq!(status, want, "{body} -> {answer}");
    }
    let stranger = front_end(&w, 0)
        .post(format!(
            "{}/api/v1/registrations",
            w.hospitals[B].gateway_url()
        ))
        .json(&serde_json::json!({ "bsn": bsn }))
        .send()
        .await
        .unwrap();
    assert_eq!(stranger.status().as_u16(), 403);
    assert_eq!(mitz.stats().subscriptions, 1);
    let m = metrics_text(&w.hospitals[B]).await;
    assert_eq!(
        metric(
            &m,
            "duo_mitz_registrations_total",
            &[("outcome", "registered")]
        ),
        1.0
    );
    mitz.shutdown().await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_consent_reaches_the_cache_through_a_notification() {
    let (w, mitz) = world("mitz.test").await;
    let bsn = w.patient.bsn.clone();
    let (status, body) = register_at_b(&w, serde_json::json!({ "bsn": bsn.to_string() })).await;
    assert_eq!(status, 201, "{body}");
    assert!(a_sees_of_b(&w).await > 0);
    let asked = mitz.stats().closed_questions;
    // cached: asking again does not reach Mitz
    assert!(a_sees_of_b(&w).await > 0);
    assert_eq!(
        mitz.stats().closed_questions,
        asked,
        "the Permit was not cached"
    );

    let deliveries = mitz.set_consent(ConsentRule {
        patient: bsn.clone(),
        holder: w.hospitals[B].spec.ura.clone(),
        requester: Some(w.hospitals[0].spec.ura.clone()),
        category: Some(w.hospitals[B].config.consent.category.clone()),
        decision: Decision::Deny,
    });
    assert_eq!(deliveries, 1);
    mitz.deliveries_settled().await;
    let s = mitz.stats();
    assert_eq!(
        (s.notifications_sent, s.notifications_failed),
        (1, 0),
        "{s:?}"
    );
    assert_eq!(
        a_sees_of_b(&w).await,
        0,
        "disclosed after the withdrawal was notified"
    );
    assert!(
        mitz.stats().closed_questions > asked,
        "Mitz not asked again"
    );

    let audit = audit(&w.hospitals[B]);
    let n: Vec<_> = audit
        .iter()
        .filter(|r| r.event == AuditEvent::ConsentNotification)
        .collect();
    assert_eq!(n.len(), 1, "{n:?}");
    assert_eq!(n[0].patient.as_ref(), Some(&bsn));
    assert_eq!(n[0].outcome, Outcome::Success);
    assert!(
        n[0].outcome_detail
            .as_deref()
            .is_some_and(|d| d.contains("Mitz notification") && d.contains("dropped")),
        "{n:?}"
    );
    let m = metrics_text(&w.hospitals[B]).await;
    assert_eq!(
        metric(
            &m,
            "duo_mitz_notifications_total",
            &[("outcome", "accepted")]
        ),
        1.0
    );
    mitz.shutdown().await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_from_anyone_but_mitz_or_unreadable_ones_change_nothing() {
    // B takes notifications only from "mitz.elsewhere": the simulator's own delivery is refused
    let (w, mitz) = world("mitz.elsewhere").await;
    let bsn = w.patient.bsn.clone();
    let (status, _) = register_at_b(&w, serde_json::json!({ "bsn": bsn.to_string() })).await;
    assert_eq!(status, 201);
    assert!(a_sees_of_b(&w).await > 0);
    mitz.set_consent(ConsentRule {
        patient: bsn.clone(),
        holder: w.hospitals[B].spec.ura.clone(),
        requester: Some(w.hospitals[0].spec.ura.clone()),
        category: Some(w.hospitals[B].config.consent.category.clone()),
        decision: Decision::Deny,
    });
    mitz.deliveries_settled().await;
    assert_eq!(mitz.stats().notifications_failed, 1);
    // the cached Permit stands (which is what a notification exists to drop)
    assert!(
        a_sees_of_b(&w).await > 0,
        "a refused notification changed the cache"
    );

    // a hospital's front end posting the sample notification: 403
    let url = format!("{}/mitz/notifications", w.hospitals[B].gateway_url());
    let sample = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/mitz/fhir/example_notification_bundle.xml"
    ))
    .unwrap();
    let r = front_end(&w, B)
        .post(&url)
        .header("content-type", "application/fhir+xml")
        .body(sample)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert!(r.text().await.unwrap().contains("OperationOutcome"));
    let m = metrics_text(&w.hospitals[B]).await;
    assert!(
        metric(
            &m,
            "duo_mitz_notifications_total",
            &[("outcome", "forbidden")]
        ) >= 2.0
    );
    assert_eq!(
        metric(
            &m,
            "duo_mitz_notifications_total",
            &[("outcome", "accepted")]
        ),
        0.0
    );
    assert!(
        !audit(&w.hospitals[B])
            .iter()
            .any(|r| r.event == AuditEvent::ConsentNotification)
    );
    mitz.shutdown().await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registrar_retries_while_mitz_is_down_and_registers_once() {
    let (w, mitz) = world("mitz.test").await;
    let cfg = w.hospitals[B].config.clone();
    let client = Arc::new(MitzClient::new(cfg.mitz.as_ref().unwrap()).unwrap());
    let registrar = |attempts: u32| {
        let mut c = cfg.clone();
        c.registration.max_attempts = attempts;
        Registrar::from_config(&c, client.clone())
            .unwrap()
            .unwrap()
            .with_first_backoff(Duration::from_millis(50))
    };
    let bsn = w.patient.bsn.clone();

    // down for good: every attempt is made, then a named failure
    mitz.set_down(true);
    let r = registrar(3);
    let e = r.register(&bsn, None).await.unwrap_err();
    assert!(
        matches!(e, RegistrationError::Unavailable { attempts: 3, .. }),
        "{e:?}"
    );
    assert_eq!(mitz.stats().registrations, 0);
    // down, then back while the registrar waits: registered once
    let r = Arc::new(registrar(6));
    let task = {
        let (r, bsn) = (r.clone(), bsn.clone());
        tokio::spawn(async move { r.register(&bsn, None).await })
    };
    tokio::time::sleep(Duration::from_millis(120)).await;
    mitz.set_down(false);
    let done = task.await.unwrap().unwrap();
    assert!(matches!(done, Registered::New { .. }), "{done:?}");
    assert_eq!(mitz.stats().registrations, 1);

    // eight at once of one patient on a fresh registrar: Mitz says it exists; no new registration
    let fresh = Arc::new(registrar(3));
    let before = mitz.stats().subscriptions;
    let all = futures::future::join_all((0..8).map(|_| {
        let (r, bsn) = (fresh.clone(), bsn.clone());
        async move { r.register(&bsn, None).await }
    }))
    .await;
    assert!(
        all.iter()
            .all(|o| matches!(o, Ok(Registered::Already { .. }))),
        "{all:?}"
    );
    assert_eq!(
        mitz.stats().subscriptions - before,
        1,
        "concurrent registrations of one patient were not one request"
    );
    assert_eq!(mitz.stats().registrations, 1);
    mitz.shutdown().await;
    w.stop().await;
}

/// `duo-gateway mitz-register`: progress, summary and exit codes, with B's configuration file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backfill_command_registers_a_file_and_names_what_failed() {
    let (w, mitz) = world("mitz.test").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("b.yaml");
    // JSON is YAML
    std::fs::write(
        &config,
        serde_json::to_string(&w.hospitals[B].config).unwrap(),
    )
    .unwrap();
    let list = dir.path().join("bsns.txt");
    let bsn = w.patient.bsn.to_string();
    std::fs::write(
        &list,
        format!(
            "# back-fill\n{bsn},1970-01-01\n\n999993653\n123456789\n{bsn}\n111222333,1970-13-01\n"
        ),
    )
    .unwrap();
    let run = |from: &std::path::Path| {
        let (config, from) = (config.clone(), from.to_path_buf());
        async move {
            tokio::task::spawn_blocking(move || {
                std::process::Command::new(env!("CARGO_BIN_EXE_duo-gateway"))
                    .args(["mitz-register", "--config"])
                    .arg(&config)
                    .arg("--from")
                    .arg(&from)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let out = run(&list).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    // the patient twice (once registered, once remembered or answered as a duplicate), a second valid
    // BSN, and two lines that are no patient
    assert!(
        stdout.starts_with("registered: 2, already registered: 1, failed: 2"),
        "{stdout}"
    );
    assert!(stdout.contains("line 5: bsn:"), "{stdout}");
    assert!(stdout.contains("line 7: birthDate"), "{stdout}");
    assert_eq!(stderr.matches("[").count(), 5, "progress lines: {stderr}");
    assert_eq!(mitz.stats().registrations, 2);

    // all done already: exit 0
    let again = dir.path().join("again.txt");
    std::fs::write(&again, format!("{bsn}\n")).unwrap();
    let out = run(&again).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .starts_with("registered: 0, already registered: 1, failed: 0")
    );

    // nothing to try: exit 2 with one line
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "# nobody\n").unwrap();
    let out = run(&empty).await;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
    let out = run(&dir.path().join("missing.txt")).await;
    assert_eq!(out.status.code(), Some(2));
    mitz.shutdown().await;
    w.stop().await;
}
