//! The DSUB registration trigger of an XDS hospital (issue 14), end to end: two hospitals' gateways,
//! the Mitz simulator (open question answered from registrations only), and a DSUB notification broker
//! over hospital B's XDS store (ITI-52 in, ITI-53 out, over mutual TLS). A study newly published at B
//! reaches Mitz as a registration through the broker's Notify; the Notify is acknowledged only once
//! Mitz accepted, so a Mitz outage loses nothing and doubles nothing.

mod gateway_support;

use std::time::{Duration, Instant};

use duo_runtime::audit::AuditEvent;
use duo_runtime::config::{DsubConfig, DsubTopic, RegistrationConfig, RegistrationMode};
use duo_runtime::consent::Decision;
use duo_runtime::ihe::dsub::{NOTIFY_ACTION, Notify};
use duo_runtime::ihe::soap::SoapHeader;
use duo_runtime::ihe::write_soap;
use duo_runtime::model::DocumentEntry;
use duo_testkit::sim::dsub::Broker;
use duo_testkit::sim::mitz::MitzSim;
use duo_testkit::sim::serve::RunningSim;
use gateway_support::*;
use serde_json::Value;

const B: usize = 1;
/// The DNS name of the broker's client certificate, the one B accepts Notify from.
const BROKER_NAME: &str = "broker.xds.test";

/// A and B (XDS, localisation `mitz`), a Mitz simulator that knows A's data of the patient but not
/// B's (B has not registered it), and a broker over B's store re-sending every 200 ms; B is subscribed
/// at the broker (waited for).
async fn world() -> (World, MitzSim, Broker, RunningSim) {
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
            "mitz-dsub",
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
    let (broker, broker_sim) = w
        .start_broker(B, &[BROKER_NAME], Duration::from_millis(200))
        .await
        .unwrap();
    let gw = w.hospitals[B].gateway_url();
    let broker_url = broker.subscribe_url();
    w.reconfigure(B, |c| {
        let m = c.mitz.as_mut().unwrap();
        m.subscription_url = Some(format!(
            "https://localhost:{port}/abonnementen/fhir/Subscription"
        ));
        m.notification_client_names = vec!["mitz.test".into()];
        c.registration = RegistrationConfig {
            mode: RegistrationMode::Mitz,
            notification_endpoint: Some(format!("{gw}/mitz/notifications")),
            source_system: None,
            max_attempts: 3,
            dsub: Some(DsubConfig {
                broker_url,
                recipient_url: format!("{gw}/dsub/notify"),
                broker_client_names: vec![BROKER_NAME.into()],
                topic: DsubTopic::FullDocumentEntry,
                renew_seconds: 3_600,
            }),
        };
    })
    .await
    .unwrap();
    wait_for("B's ITI-52 subscription", || {
        broker.stats().subscriptions == 1
    })
    .await;
    let subs = broker.subscriptions();
    assert_eq!(subs[0].consumer, format!("{gw}/dsub/notify"), "{subs:?}");
    assert_eq!(
        subs[0].patient_id, None,
        "not patient-independent: {subs:?}"
    );
    (w, mitz, broker, broker_sim)
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what}: not within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A's timeline of the patient (localisation mitz).
async fn a_timeline(w: &World) -> Value {
    let a = timeline(w, 0, &requester(w, 0), w.patient.bsn.as_str()).await;
    assert_eq!(a.status, 200, "{}", a.text());
    a.json()
}

/// Whether A's timeline shows study `uid` from B.
async fn a_sees_study_of_b(w: &World, uid: &str) -> bool {
    let b_home = w.hospitals[B].home.to_string();
    studies(&a_timeline(w).await)
        .get(uid)
        .is_some_and(|homes| homes.contains(&b_home))
}

fn b_registrations(w: &World, mitz: &MitzSim) -> usize {
    mitz.registrations()
        .iter()
        .filter(|r| r.holder == w.hospitals[B].spec.ura)
        .count()
}

async fn settled(broker: &Broker) {
    tokio::time::timeout(Duration::from_secs(30), broker.settled())
        .await
        .expect("the broker's notifications did not settle in 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_study_newly_published_at_b_is_registered_through_dsub_and_found_by_a() {
    let (mut w, mitz, broker, broker_sim) = world().await;
    // before: nothing of B on A's timeline (B has not registered the patient with Mitz)
    let t = a_timeline(&w).await;
    let b_home = w.hospitals[B].home.to_string();
    assert!(
        !studies(&t).values().any(|homes| homes.contains(&b_home)),
        "B's data found before B registered it: {t}"
    );
    assert_eq!(mitz.stats().registrations, 0);

    // published, the Notify held at the broker: B's registry has it, A still does not see it
    broker.hold(true);
    let study = w.publish_study(B, 4_242).unwrap();
    wait_for("the held Notify", || broker.stats().pending == 1).await;
    assert!(
        !a_sees_study_of_b(&w, &study.study_instance_uid).await,
        "the new study of B is on A's timeline before the DSUB registration"
    );
    assert_eq!(mitz.stats().registrations, 0);
    broker.hold(false);
    settled(&broker).await;
    let s = broker.stats();
    assert!(s.delivered >= 1, "{s:?}");
    assert_eq!(s.failed_attempts, 0, "{s:?}");
    assert_eq!(mitz.stats().registrations, 1);
    assert_eq!(b_registrations(&w, &mitz), 1);
    assert!(
        a_sees_study_of_b(&w, &study.study_instance_uid).await,
        "the new study of B is not on A's timeline after the DSUB registration"
    );

    // the audit names the trigger; the metric counts the accepted Notify
    let audit = audit(&w.hospitals[B]);
    let reg: Vec<_> = audit
        .iter()
        .filter(|r| r.event == AuditEvent::Registration)
        .collect();
    assert!(!reg.is_empty());
    assert!(
        reg.iter().all(|r| r
            .outcome_detail
            .as_deref()
            .is_some_and(|d| d.contains("trigger dsub"))),
        "{reg:?}"
    );
    assert_eq!(reg[0].patient.as_ref(), Some(&w.patient.bsn));
    let m = metrics_text(&w.hospitals[B]).await;
    assert!(
        metric(
            &m,
            "duo_dsub_notifications_total",
            &[("outcome", "accepted")]
        ) >= 1.0
    );
    assert_eq!(
        metric(
            &m,
            "duo_dsub_subscriptions_total",
            &[("outcome", "subscribed")]
        ),
        1.0
    );

    // a second study: notified, acknowledged, nothing new at Mitz
    w.publish_study(B, 4_243).unwrap();
    settled(&broker).await;
    assert_eq!(mitz.stats().registrations, 1);
    assert_eq!(broker.stats().failed_attempts, 0);
    broker_sim.stop().await;
    mitz.shutdown().await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_the_notify_a_does_not_see_the_study_and_mitz_down_loses_nothing_and_doubles_nothing()
 {
    let (mut w, mitz, broker, broker_sim) = world().await;
    // before: B's data is not found by A (not registered)
    let t = a_timeline(&w).await;
    let b_home = w.hospitals[B].home.to_string();
    assert!(
        !studies(&t).values().any(|homes| homes.contains(&b_home)),
        "B's data found before B registered it: {t}"
    );

    mitz.set_down(true);
    let study = w.publish_study(B, 5_151).unwrap();
    // B refuses (a Receiver fault: Mitz did not accept), the broker re-sends
    wait_for("two refused Notify attempts", || {
        broker.stats().failed_attempts >= 2
    })
    .await;
    assert_eq!(mitz.stats().registrations, 0);
    assert_eq!(broker.stats().delivered, 0);
    assert_eq!(broker.stats().pending, 1);
    let m = metrics_text(&w.hospitals[B]).await;
    assert!(
        metric(
            &m,
            "duo_dsub_notifications_total",
            &[("outcome", "unregistered")]
        ) >= 2.0
    );
    assert_eq!(
        metric(
            &m,
            "duo_dsub_notifications_total",
            &[("outcome", "accepted")]
        ),
        0.0
    );

    // Mitz back: the next re-send registers, once
    mitz.set_down(false);
    settled(&broker).await;
    let s = broker.stats();
    assert_eq!((s.delivered, s.pending), (1, 0), "{s:?}");
    assert_eq!(mitz.stats().registrations, 1);
    assert_eq!(b_registrations(&w, &mitz), 1);
    assert!(a_sees_study_of_b(&w, &study.study_instance_uid).await);
    // nothing doubled: a later study registers nothing new
    w.publish_study(B, 5_152).unwrap();
    settled(&broker).await;
    assert_eq!(mitz.stats().registrations, 1);
    assert_eq!(broker.stats().delivered, 2);
    broker_sim.stop().await;
    mitz.shutdown().await;
    w.stop().await;
}

fn entry(n: u32, patient_cx: &str) -> DocumentEntry {
    DocumentEntry {
        entry_uuid: format!("urn:uuid:00000000-0000-4000-8000-{n:012}"),
        unique_id: format!("1.2.3.4.{n}"),
        repository_unique_id: "1.2.3.10".into(),
        patient_id: patient_cx.into(),
        status: "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved".into(),
        mime_type: "application/dicom".into(),
        ..Default::default()
    }
}

fn notify_body(action: &str, entries: &[DocumentEntry]) -> String {
    write_soap(
        &SoapHeader::request(action, None),
        &Notify::full("https://broker.example/subscription/1", None, entries),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifies_from_anyone_but_the_broker_or_malformed_ones_register_nothing() {
    let (w, mitz, _broker, broker_sim) = world().await;
    let url = format!("{}/dsub/notify", w.hospitals[B].gateway_url());
    let good = notify_body(NOTIFY_ACTION, &[entry(1, &w.patient.bsn.to_cx())]);
    let post = |client: reqwest::Client, body: String| {
        let url = url.clone();
        async move {
            let r = client
                .post(&url)
                .header("content-type", "application/soap+xml; charset=UTF-8")
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };

    // not the broker: hospital A's gateway, B's own viewer, a certificate of the same CA for another name
    let (_, rogue) = w
        .issue(
            "rogue",
            world::plain_spec("Rogue broker", &["localhost", "rogue.xds.test"]),
        )
        .unwrap();
    let rogue: reqwest::Client = rogue.http_client(Duration::from_secs(5)).unwrap().into();
    for (who, client) in [
        ("A's gateway", gateway_client(&w, 0)),
        ("B's viewer", front_end(&w, B)),
        ("rogue.xds.test", rogue),
    ] {
        let (status, text) = post(client, good.clone()).await;
        assert_eq!(status, 403, "{who}: {text}");
        assert!(
            text.contains("Fault") && text.contains("broker"),
            "{who}: {text}"
        );
    }

    // the broker's identity, malformed or hostile notifications: refused (Sender), nothing registered
    let (_, twin) = w
        .issue(
            "broker-twin",
            world::plain_spec("Broker twin", &["localhost", BROKER_NAME]),
        )
        .unwrap();
    let twin: reqwest::Client = twin.http_client(Duration::from_secs(5)).unwrap().into();
    let not_bsn = notify_body(
        NOTIFY_ACTION,
        &[
            entry(1, &w.patient.bsn.to_cx()),
            entry(2, "st3498702^^^&1.3.6.1.4.1.21367.2005.3.7&ISO"),
        ],
    );
    let bad_check = notify_body(
        NOTIFY_ACTION,
        &[entry(1, "123456789^^^&2.16.840.1.113883.2.4.6.3&ISO")],
    );
    let too_many: Vec<DocumentEntry> = (0..1_001)
        .map(|n| entry(n, &w.patient.bsn.to_cx()))
        .collect();
    for (what, body, want) in [
        ("not XML", "<<<".to_owned(), "XML"),
        (
            "another action",
            notify_body(
                "urn:ihe:iti:2007:RegistryStoredQuery",
                &[entry(1, &w.patient.bsn.to_cx())],
            ),
            "ITI-53",
        ),
        ("a patient that is not a BSN", not_bsn, "not a BSN"),
        ("a BSN failing the 11-check", bad_check, "not a BSN"),
        (
            "no DocumentEntry",
            notify_body(NOTIFY_ACTION, &[]),
            "no DocumentEntry",
        ),
        (
            "1001 entries",
            notify_body(NOTIFY_ACTION, &too_many),
            "more than 1000",
        ),
        (
            "a minimal notification",
            notify_body(NOTIFY_ACTION, &[entry(1, &w.patient.bsn.to_cx())])
                .replace("ihe:FullDocumentEntry", "ihe:MinimalDocumentEntry"),
            "MinimalDocumentEntry",
        ),
    ] {
        let (status, text) = post(twin.clone(), body).await;
        assert_eq!(status, 400, "{what}: {text}");
        assert!(text.contains(want), "{what}: {want:?} not in {text}");
    }
    assert_eq!(mitz.stats().registrations, 0);
    assert_eq!(mitz.stats().subscriptions, 0);
    assert!(
        !audit(&w.hospitals[B])
            .iter()
            .any(|r| r.event == AuditEvent::Registration)
    );
    let m = metrics_text(&w.hospitals[B]).await;
    assert_eq!(
        metric(
            &m,
            "duo_dsub_notifications_total",
            &[("outcome", "forbidden")]
        ),
        3.0
    );
    assert_eq!(
        metric(
            &m,
            "duo_dsub_notifications_total",
            &[("outcome", "refused")]
        ),
        7.0
    );
    // and the twin's good Notify is taken: the identity check is what refused the others
    let (status, text) = post(twin, good).await;
    assert_eq!(status, 202, "{text}");
    assert_eq!(mitz.stats().registrations, 1);
    broker_sim.stop().await;
    mitz.shutdown().await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_retries_an_unreachable_broker_and_follows_a_changed_broker_url() {
    let (mut w, mitz, broker, broker_sim) = world().await;
    // a second broker, not listening yet: B is pointed at it and fails to subscribe, retrying
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("https://localhost:{port}/broker/iti52");
    w.reconfigure(B, |c| {
        c.registration.dsub.as_mut().unwrap().broker_url = url.clone();
    })
    .await
    .unwrap();
    let start = Instant::now();
    while metric(
        &metrics_text(&w.hospitals[B]).await,
        "duo_dsub_subscriptions_total",
        &[("outcome", "failed")],
    ) < 2.0
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no retried ITI-52 attempt"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // the broker comes up on that port: B subscribes there (the first broker keeps its old one)
    let (_, tls) = w
        .issue(
            "broker-2",
            world::plain_spec("Second broker", &["localhost", BROKER_NAME]),
        )
        .unwrap();
    let second = Broker::new(
        w.hospitals[B].store.clone(),
        &tls,
        Duration::from_millis(200),
    )
    .unwrap();
    let second_sim = second
        .start_on(
            ([127, 0, 0, 1], port).into(),
            duo_testkit::sim::serve::Transport::mutual_tls(&tls).unwrap(),
        )
        .await
        .unwrap();
    wait_for("B's subscription at the second broker", || {
        second.stats().subscriptions == 1
    })
    .await;
    assert_eq!(broker.stats().subscriptions, 1);
    // the broker counts the Subscribe when it arrives, the gateway once it has read the answer
    let start = Instant::now();
    loop {
        let m = metrics_text(&w.hospitals[B]).await;
        let subscribed = metric(
            &m,
            "duo_dsub_subscriptions_total",
            &[("outcome", "subscribed")],
        );
        if subscribed == 2.0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the gateway counted {subscribed} subscriptions, not 2"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // a study now is notified by both (each broker has B subscribed), registered once
    w.publish_study(B, 6_161).unwrap();
    settled(&second).await;
    settled(&broker).await;
    assert_eq!(second.stats().delivered, 1);
    assert_eq!(mitz.stats().registrations, 1);
    second_sim.stop().await;
    broker_sim.stop().await;
    mitz.shutdown().await;
    w.stop().await;
}
