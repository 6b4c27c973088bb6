//! The initiating side over the real HTTP/TLS stack, on loopback worlds of hospitals (issue 3 and 4):
//! aggregation of the fan-out (Success / PartialSuccess / Failure), the deadline of a slow community,
//! routing by homeCommunityId (unknown or missing ones cause no outbound call at all), and
//! localisation (Mitz open question failing, naming only some communities, or `allCommunities`).

mod gateway_support;

use std::collections::BTreeSet;
use std::time::Duration;

use duo_runtime::consent::Decision;
use duo_runtime::ihe::ebrim::ResponseStatus;
use duo_runtime::ihe::query::ReturnType;
use duo_runtime::ihe::retrieve::{DocumentRequest, RetrieveDocumentSetRequest};
use duo_runtime::ihe::soap::Transaction;
use duo_testkit::sim::faults::{Endpoint, Faults};
use duo_testkit::sim::mitz::{FaultRule, LocationRule};
use duo_testkit::sim::seed::sha256_hex;
use gateway_support::*;
use tokio::sync::RwLock;

/// The deadline test measures time: it runs alone, the others of this file share the machine.
static TIMING: RwLock<()> = RwLock::const_new(());

const UNKNOWN: &str = "urn:oid:2.16.528.1.1007.99.404.1";

fn ts() -> &'static [&'static str] {
    &[duo_runtime::dicom::transfer_syntax::EXPLICIT_VR_LITTLE_ENDIAN]
}

/// Hospital A (XDS, where the clinician asks), B (XDS) and C (TLB), `n` studies each.
async fn abc(n: usize, localization: LocalizationMode) -> World {
    build(options(
        vec![
            spec("A", Kind::Xds, n, Decision::Permit),
            spec("B", Kind::Xds, n, Decision::Permit),
            spec("C", Kind::Tlb, n, Decision::Permit),
        ],
        localization,
    ))
    .await
}

fn homes_of(r: &duo_runtime::ihe::query::AdhocQueryResponse) -> BTreeSet<String> {
    r.objects
        .iter()
        .map(|o| o.home().map(|h| h.to_string()).unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn aggregation_success_partial_success_failure() {
    let _t = TIMING.read().await;
    let mut w = abc(2, LocalizationMode::AllCommunities).await;
    // A asks its own registry (ITI-18), B's DUO gateway (ITI-38) and C's TLB node directly (ITI-38)
    let node = node_community(&w, 2, 5_000);
    let node_home = node.home_community_id.to_string();
    w.reconfigure(0, |c| {
        c.communities.retain(|r| r.name != "Ziekenhuis C");
        c.communities.push(node.clone());
    })
    .await
    .unwrap();
    let (a, b, c) = (&w.hospitals[0], &w.hospitals[1], &w.hospitals[2]);
    let (home_a, home_b) = (a.home.to_string(), b.home.to_string());
    let r = requester(&w, 0);
    let bsn = w.patient.bsn.clone();
    let find = find_documents(&bsn, None, ReturnType::LeafClass);
    let iti18 = || local(&w, 0, Transaction::Iti18, Some(&r), Some(&bsn), &find);

    // every community answers: Success with everyone's entries, each carrying its community's home
    let ok = iti18().await.query(Transaction::Iti18);
    assert_eq!(ok.status, ResponseStatus::Success, "{:?}", ok.errors);
    assert!(ok.errors.is_empty());
    assert_eq!(
        ok.objects.len(),
        12,
        "2 manifests + 2 reports from each of 3"
    );
    assert_eq!(
        homes_of(&ok),
        BTreeSet::from([home_a.clone(), home_b.clone(), node_home.clone()])
    );
    let t = timeline(&w, 0, &r, bsn.as_str()).await;
    assert_eq!(t.status, 200, "{}", t.text());
    let t = t.json();
    assert_eq!(t["status"], "Success");
    assert_eq!(studies(&t).len(), 6);

    // one community fails (three ways): PartialSuccess with its error, located at its homeCommunityId,
    // and everyone else's entries
    let faults = [
        (
            Faults {
                http_500: true,
                ..Faults::default()
            },
            "XDSUnavailableCommunity",
        ),
        (
            Faults {
                soap_fault: true,
                ..Faults::default()
            },
            "XDSRegistryError",
        ),
        (
            Faults {
                garbage_body: true,
                ..Faults::default()
            },
            "XDSRegistryError",
        ),
    ];
    for (f, code) in &faults {
        c.control.set_faults(f.clone());
        let p = iti18().await.query(Transaction::Iti18);
        assert_eq!(p.status, ResponseStatus::PartialSuccess, "{f:?}");
        assert_eq!(
            errors(&p.errors),
            [(code.to_string(), node_home.clone())],
            "{f:?}"
        );
        assert_eq!(p.objects.len(), 8);
        assert_eq!(
            homes_of(&p),
            BTreeSet::from([home_a.clone(), home_b.clone()])
        );
        let t = timeline(&w, 0, &r, bsn.as_str()).await.json();
        assert_eq!(t["status"], "PartialSuccess", "{f:?}: {t}");
        assert_eq!(timeline_errors(&t), [(code.to_string(), node_home.clone())]);
        let got: BTreeSet<String> = studies(&t).into_keys().collect();
        let want: BTreeSet<String> = seeded(&w, 0).into_iter().chain(seeded(&w, 1)).collect();
        assert_eq!(got, want, "{f:?}");
    }
    // C's node leaves `home` off: its objects cannot be retrieved, so they are left out and reported
    c.control.set_faults(Faults {
        omit_home: true,
        ..Faults::default()
    });
    let p = iti18().await.query(Transaction::Iti18);
    assert_eq!(p.status, ResponseStatus::PartialSuccess);
    assert_eq!(
        homes_of(&p),
        BTreeSet::from([home_a.clone(), home_b.clone()])
    );
    let missing = errors(&p.errors);
    assert!(!missing.is_empty());
    assert!(
        missing
            .iter()
            .all(|(code, at)| code == "XDSMissingHomeCommunityId" && at == &node_home),
        "{missing:?}"
    );
    c.control.reset_faults();
    let m = metrics_text(a).await;
    for label in ["http", "fault", "protocol"] {
        assert_eq!(
            metric(
                &m,
                "duo_community_errors_total",
                &[("community", node_home.as_str()), ("code", label)]
            ),
            2.0,
            "ITI-18 and timeline each counted a {label} error"
        );
    }

    // the same through a DUO gateway: B's registry faults, B answers Failure, A names B
    b.control.set_faults(Faults {
        http_500: true,
        only: vec![Endpoint::Iti18],
        ..Faults::default()
    });
    let p = iti18().await.query(Transaction::Iti18);
    assert_eq!(p.status, ResponseStatus::PartialSuccess);
    assert_eq!(
        errors(&p.errors),
        [("XDSUnavailableCommunity".to_string(), home_b.clone())]
    );
    assert_eq!(
        homes_of(&p),
        BTreeSet::from([home_a.clone(), node_home.clone()])
    );

    // every community fails: Failure, one error each, nothing else
    a.control.set_faults(Faults {
        soap_fault: true,
        ..Faults::default()
    });
    c.control.set_faults(Faults {
        garbage_body: true,
        ..Faults::default()
    });
    let f = iti18().await.query(Transaction::Iti18);
    assert_eq!(f.status, ResponseStatus::Failure);
    assert!(f.objects.is_empty());
    let located: BTreeSet<String> = f.errors.iter().filter_map(|e| e.location.clone()).collect();
    assert_eq!(located, BTreeSet::from([home_a, home_b, node_home]));
    assert_eq!(f.errors.len(), 3, "{:?}", f.errors);
    let t = timeline(&w, 0, &r, bsn.as_str()).await.json();
    assert_eq!(t["status"], "Failure");
    assert!(studies(&t).is_empty());
    w.stop().await;
}

#[tokio::test]
async fn a_down_and_a_slow_community_cost_no_more_than_the_deadline() {
    let _t = TIMING.write().await;
    const DEADLINE_MS: u64 = 800;
    let mut w = build(options(
        vec![
            spec("A", Kind::Xds, 1, Decision::Permit),
            spec("B", Kind::Xds, 2, Decision::Permit),
            spec("C", Kind::Tlb, 1, Decision::Permit),
            spec("D", Kind::Xds, 1, Decision::Permit),
        ],
        LocalizationMode::Mitz,
    ))
    .await;
    w.reconfigure(0, |c| {
        for r in &mut c.communities {
            r.deadline_ms = DEADLINE_MS;
        }
        if let duo_runtime::config::LocalBackend::Xds(x) = &mut c.local {
            x.deadline_ms = DEADLINE_MS;
        }
    })
    .await
    .unwrap();
    let r = requester(&w, 0);
    let bsn = w.patient.bsn.to_string();
    // warm up the connections, then take C's TLB node down and make D's registry slow
    let t = timeline(&w, 0, &r, &bsn).await.json();
    assert_eq!(t["status"], "Success", "{t}");
    w.hospitals[2].sim.shutdown_token().cancel();
    w.hospitals[3].control.set_faults(Faults {
        delay_ms: 2_000,
        ..Faults::default()
    });
    let (home_c, home_d) = (
        w.hospitals[2].home.to_string(),
        w.hospitals[3].home.to_string(),
    );

    let a = timeline(&w, 0, &r, &bsn).await;
    eprintln!(
        "timeline with a down and a slow community: {:?} (deadline {DEADLINE_MS} ms)",
        a.elapsed
    );
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(
        a.elapsed <= Duration::from_millis(DEADLINE_MS + 100),
        "timeline took {:?}, deadline {DEADLINE_MS} ms",
        a.elapsed
    );
    assert!(
        a.elapsed >= Duration::from_millis(DEADLINE_MS),
        "the slow community was given its deadline: {:?}",
        a.elapsed
    );
    let t = a.json();
    assert_eq!(t["status"], "PartialSuccess", "{t}");
    let errs = timeline_errors(&t);
    assert!(
        errs.contains(&("XDSUnavailableCommunity".into(), home_d.clone())),
        "{errs:?}"
    );
    assert!(
        errs.iter().any(|(_, l)| l == &home_c),
        "the down community is named: {errs:?}"
    );
    assert_eq!(errs.len(), 2, "{errs:?}");
    let got: BTreeSet<String> = studies(&t).into_keys().collect();
    let want: BTreeSet<String> = seeded(&w, 0).into_iter().chain(seeded(&w, 1)).collect();
    assert_eq!(got, want, "the good studies, nothing else");
    let slow = t["communities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["homeCommunityId"] == home_d.as_str())
        .unwrap();
    assert_eq!(slow["status"], "Failure");
    w.hospitals[3].control.reset_faults();
    w.stop().await;
}

#[tokio::test]
async fn slow_manifests_of_one_community_and_a_slow_query_of_another_share_the_deadline() {
    let _t = TIMING.write().await;
    const DEADLINE_MS: u64 = 800;
    let mut w = build(options(
        vec![
            spec("A", Kind::Xds, 1, Decision::Permit),
            spec("B", Kind::Xds, 1, Decision::Permit),
            spec("C", Kind::Tlb, 1, Decision::Permit),
            spec("D", Kind::Xds, 1, Decision::Permit),
        ],
        LocalizationMode::Mitz,
    ))
    .await;
    w.reconfigure(0, |c| {
        for r in &mut c.communities {
            r.deadline_ms = DEADLINE_MS;
        }
    })
    .await
    .unwrap();
    let r = requester(&w, 0);
    let bsn = w.patient.bsn.to_string();
    let t = timeline(&w, 0, &r, &bsn).await.json();
    assert_eq!(t["status"], "Success", "{t}");
    // C's node answers its queries late; D answers its query at once but its repository (the KOS
    // manifests) late
    w.hospitals[2].control.set_faults(Faults {
        delay_ms: 2_000,
        only: vec![Endpoint::Iti38],
        ..Faults::default()
    });
    w.hospitals[3].control.set_faults(Faults {
        delay_ms: 2_000,
        only: vec![Endpoint::Iti43],
        ..Faults::default()
    });
    let a = timeline(&w, 0, &r, &bsn).await;
    eprintln!(
        "timeline with a slow query and slow manifests: {:?} (deadline {DEADLINE_MS} ms)",
        a.elapsed
    );
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(
        a.elapsed <= Duration::from_millis(DEADLINE_MS + 100),
        "timeline took {:?}, deadline {DEADLINE_MS} ms",
        a.elapsed
    );
    let t = a.json();
    assert_eq!(t["status"], "PartialSuccess", "{t}");
    let home_d = w.hospitals[3].home.to_string();
    // D's studies are on the timeline (found in time), only their manifest details are missing
    let got: BTreeSet<String> = studies(&t).into_keys().collect();
    let want: BTreeSet<String> = [0, 1, 3].iter().flat_map(|i| seeded(&w, *i)).collect();
    assert_eq!(got, want, "{t}");
    assert!(
        timeline_errors(&t).iter().any(|(_, l)| l == &home_d),
        "the manifest problem is reported: {t}"
    );
    w.hospitals[2].control.reset_faults();
    w.hospitals[3].control.reset_faults();
    w.stop().await;
}

#[tokio::test]
async fn unknown_or_missing_home_community_ids_cause_no_outbound_call() {
    let _t = TIMING.read().await;
    let w = abc(1, LocalizationMode::Mitz).await;
    let r = requester(&w, 0);
    let bsn = w.patient.bsn.clone();
    let b_study = w.hospitals[1].studies[0].clone();
    let c_study = w.hospitals[2].studies[0].clone();
    let doc = |home: Option<&str>| DocumentRequest {
        home_community_id: home.map(|h| h.parse().unwrap()),
        repository_unique_id: b_study.repository_unique_id.clone(),
        document_unique_id: b_study.manifest.unique_id.clone(),
    };
    let before = traffic(&w).await;

    let cases: Vec<(&str, Answer, Transaction, &str, String)> = vec![
        (
            "ITI-43 unknown",
            local(
                &w,
                0,
                Transaction::Iti43,
                Some(&r),
                Some(&bsn),
                &RetrieveDocumentSetRequest {
                    documents: vec![doc(Some(UNKNOWN))],
                },
            )
            .await,
            Transaction::Iti43,
            "XDSUnknownCommunity",
            UNKNOWN.into(),
        ),
        (
            "ITI-43 missing",
            local(
                &w,
                0,
                Transaction::Iti43,
                Some(&r),
                Some(&bsn),
                &RetrieveDocumentSetRequest {
                    documents: vec![doc(None)],
                },
            )
            .await,
            Transaction::Iti43,
            "XDSMissingHomeCommunityId",
            b_study.manifest.unique_id.clone(),
        ),
        (
            "RAD-69 unknown",
            local(
                &w,
                0,
                Transaction::Rad69,
                Some(&r),
                Some(&bsn),
                &c_study.imaging_request(Some(&UNKNOWN.parse().unwrap()), ts()),
            )
            .await,
            Transaction::Rad69,
            "XDSUnknownCommunity",
            UNKNOWN.into(),
        ),
        (
            "RAD-69 missing",
            local(
                &w,
                0,
                Transaction::Rad69,
                Some(&r),
                Some(&bsn),
                &c_study.imaging_request(None, ts()),
            )
            .await,
            Transaction::Rad69,
            "XDSMissingHomeCommunityId",
            c_study.instances[0].sop_instance_uid.clone(),
        ),
    ];
    for (what, a, tx, code, location) in cases {
        let resp = a.retrieve(tx);
        assert_eq!(resp.response.status, ResponseStatus::Failure, "{what}");
        assert!(resp.documents.is_empty(), "{what}");
        let errs = errors(&resp.response.errors);
        assert!(!errs.is_empty(), "{what}");
        assert!(errs.iter().all(|(c, _)| c == code), "{what}: {errs:?}");
        assert_eq!(errs[0], (code.to_string(), location), "{what}");
    }
    // ITI-18 naming an unknown community, and a query by id naming none
    let q = local(
        &w,
        0,
        Transaction::Iti18,
        Some(&r),
        Some(&bsn),
        &find_documents(&bsn, Some(UNKNOWN), ReturnType::LeafClass),
    )
    .await
    .query(Transaction::Iti18);
    assert_eq!(q.status, ResponseStatus::Failure);
    assert_eq!(
        errors(&q.errors),
        [("XDSUnknownCommunity".to_string(), UNKNOWN.to_string())]
    );
    let q = local(
        &w,
        0,
        Transaction::Iti18,
        Some(&r),
        Some(&bsn),
        &get_documents(&[b_study.manifest.unique_id.as_str()], None),
    )
    .await
    .query(Transaction::Iti18);
    assert_eq!(q.status, ResponseStatus::Failure);
    assert_eq!(q.errors[0].error_code.as_str(), "XDSMissingHomeCommunityId");

    // nobody outside A heard of any of it: no simulator, no other gateway, not Mitz
    let after = traffic(&w).await;
    assert_eq!(after.sims, before.sims, "community simulators");
    assert_eq!(after.gateways[1..], before.gateways[1..], "other gateways");
    assert_eq!(after.mitz, before.mitz, "Mitz");
    w.stop().await;
}

#[tokio::test]
async fn a_retrieve_goes_only_to_the_community_named() {
    let _t = TIMING.read().await;
    let w = abc(1, LocalizationMode::Mitz).await;
    let r = requester(&w, 0);
    let bsn = w.patient.bsn.clone();
    let (a, b, c) = (&w.hospitals[0], &w.hospitals[1], &w.hospitals[2]);
    let b_study = &b.studies[0];
    let c_study = &c.studies[0];
    let before = traffic(&w).await;

    // ITI-43 naming B (plus one naming an unknown community): ITI-39 to B only
    let docs = RetrieveDocumentSetRequest {
        documents: vec![
            DocumentRequest {
                home_community_id: Some(b.home.clone()),
                repository_unique_id: b_study.repository_unique_id.clone(),
                document_unique_id: b_study.manifest.unique_id.clone(),
            },
            DocumentRequest {
                home_community_id: Some(UNKNOWN.parse().unwrap()),
                repository_unique_id: b_study.repository_unique_id.clone(),
                document_unique_id: b_study.report.unique_id.clone(),
            },
        ],
    };
    let resp = local(&w, 0, Transaction::Iti43, Some(&r), Some(&bsn), &docs)
        .await
        .retrieve(Transaction::Iti43);
    assert_eq!(resp.response.status, ResponseStatus::PartialSuccess);
    assert_eq!(
        errors(&resp.response.errors),
        [("XDSUnknownCommunity".to_string(), UNKNOWN.to_string())]
    );
    assert_eq!(resp.documents.len(), 1);
    let d = &resp.documents[0];
    assert_eq!(d.meta.home_community_id.as_ref(), Some(&b.home));
    let duo_runtime::ihe::retrieve::Content::Inline(bytes) = &d.content else {
        panic!("resolved")
    };
    assert_eq!(sha256_hex(bytes), b_study.manifest.sha256);
    let mid = traffic(&w).await;
    assert_eq!(mid.sims[0], before.sims[0], "A's own community not asked");
    assert_eq!(mid.sims[2], before.sims[2], "C not asked");
    assert_eq!(mid.gateways[2], before.gateways[2], "C's gateway not asked");
    assert!(
        b.control.requests(Endpoint::Iti43) >= 1,
        "{:?}",
        log_of(&b.control)
    );
    assert_eq!(
        metric_of(b, "duo_requests_total", &[("endpoint", "ITI-39")]).await,
        1.0
    );

    // RAD-69 naming C: RAD-75 to C only, every instance byte for byte
    let resp = local(
        &w,
        0,
        Transaction::Rad69,
        Some(&r),
        Some(&bsn),
        &c_study.imaging_request(Some(&c.home), ts()),
    )
    .await
    .retrieve(Transaction::Rad69);
    assert_eq!(
        resp.response.status,
        ResponseStatus::Success,
        "{:?}",
        resp.response
    );
    assert_eq!(resp.documents.len(), c_study.instances.len());
    for d in &resp.documents {
        let duo_runtime::ihe::retrieve::Content::Inline(bytes) = &d.content else {
            panic!("resolved")
        };
        let want = c_study.instance(&d.meta.document_unique_id).unwrap();
        assert_eq!(sha256_hex(bytes), want.sha256);
        assert_eq!(d.meta.home_community_id.as_ref(), Some(&c.home));
    }
    let end = traffic(&w).await;
    assert_eq!(end.sims[0], before.sims[0], "A's own community not asked");
    assert_eq!(end.sims[1], mid.sims[1], "B not asked");
    assert_eq!(end.gateways[1], mid.gateways[1], "B's gateway not asked");
    assert_eq!(
        c.control.requests(Endpoint::Rad75),
        1,
        "{:?}",
        log_of(&c.control)
    );

    // ITI-18 naming B: ITI-38 to B only
    let q = local(
        &w,
        0,
        Transaction::Iti18,
        Some(&r),
        Some(&bsn),
        &find_documents(&bsn, Some(&b.home.to_string()), ReturnType::LeafClass),
    )
    .await
    .query(Transaction::Iti18);
    assert_eq!(q.status, ResponseStatus::Success, "{:?}", q.errors);
    assert_eq!(homes_of(&q), BTreeSet::from([b.home.to_string()]));
    let last = traffic(&w).await;
    assert_eq!(last.sims[0], before.sims[0]);
    assert_eq!(last.sims[2], end.sims[2]);
    assert_eq!(last.gateways[2], end.gateways[2]);
    let _ = a;
    w.stop().await;
}

#[tokio::test]
async fn localisation_failure_fails_the_timeline_and_asks_no_one() {
    let _t = TIMING.read().await;
    let mut w = abc(1, LocalizationMode::Mitz).await;
    let r = requester(&w, 0);
    let bsn = w.patient.bsn.clone();
    // a Mitz that fails for this patient in every way the gateway must survive
    let cases: Vec<(&str, FaultRule, &str)> = vec![
        (
            "HTTP 500",
            FaultRule {
                patient: bsn.clone(),
                delay_ms: 0,
                http_status: Some(500),
                garbage: false,
            },
            "HTTP 500",
        ),
        (
            "garbage",
            FaultRule {
                patient: bsn.clone(),
                delay_ms: 0,
                http_status: None,
                garbage: true,
            },
            "unparseable",
        ),
        (
            "timeout",
            FaultRule {
                patient: bsn.clone(),
                delay_ms: 1_500,
                http_status: None,
                garbage: false,
            },
            "timeout",
        ),
    ];
    for (what, fault, reason) in cases {
        let mut cfg = w.mitz_config.clone();
        cfg.faults = vec![fault];
        let mitz = start_mitz(&w, &format!("mitz-{}", what.replace(' ', "-")), cfg).await;
        use_mitz(&mut w, 0, mitz.local_addr().port(), 300, 0).await;
        let before = traffic(&w).await;
        let a = timeline(&w, 0, &r, bsn.as_str()).await;
        assert_eq!(a.status, 502, "{what}: {}", a.text());
        let msg = a.json()["error"].as_str().unwrap().to_owned();
        assert!(
            msg.contains("no community was asked") && msg.contains(reason),
            "{what}: {msg}"
        );
        // the ITI-18 entrance fails the same way
        let q = local(
            &w,
            0,
            Transaction::Iti18,
            Some(&r),
            Some(&bsn),
            &find_documents(&bsn, None, ReturnType::LeafClass),
        )
        .await
        .query(Transaction::Iti18);
        assert_eq!(q.status, ResponseStatus::Failure, "{what}");
        assert!(q.objects.is_empty());
        assert!(
            q.errors[0].code_context.contains("no community was asked"),
            "{what}"
        );
        let after = traffic(&w).await;
        assert_eq!(
            after.sims, before.sims,
            "{what}: no community asked, not even A's own"
        );
        assert_eq!(after.gateways[1..], before.gateways[1..], "{what}");
        assert_eq!(mitz.stats().open_questions, 2, "{what}");
        let rec = audit(&w.hospitals[0]);
        let loc = rec
            .iter()
            .rev()
            .find(|x| x.event == duo_runtime::audit::AuditEvent::Localization)
            .unwrap();
        assert_eq!(loc.outcome, duo_runtime::audit::Outcome::Failure);
        assert!(
            loc.outcome_detail.as_deref().unwrap_or("").contains(reason),
            "{what}: {loc:?}"
        );
        mitz.shutdown().await;
    }
    // Mitz not reachable at all
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    use_mitz(&mut w, 0, port, 300, 0).await;
    let before = traffic(&w).await;
    let a = timeline(&w, 0, &r, bsn.as_str()).await;
    assert_eq!(a.status, 502, "{}", a.text());
    assert_eq!(traffic(&w).await.sims, before.sims);
    w.stop().await;
}

#[tokio::test]
async fn only_the_communities_mitz_names_and_knows_are_asked() {
    let _t = TIMING.read().await;
    let mut w = abc(1, LocalizationMode::Mitz).await;
    let r = requester(&w, 0);
    let bsn = w.patient.bsn.clone();
    // Mitz knows the patient at A, B and a community A has no configuration for; not at C
    let mut cfg = w.mitz_config.clone();
    let c_home = w.hospitals[2].home.clone();
    cfg.locations.retain(|l| l.home_community_id != c_home);
    cfg.locations.push(LocationRule {
        patient: bsn.clone(),
        home_community_id: UNKNOWN.parse().unwrap(),
        holder: "10000099".parse().unwrap(),
        source_id: None,
        category: None,
    });
    let mitz = start_mitz(&w, "mitz-some", cfg).await;
    use_mitz(&mut w, 0, mitz.local_addr().port(), 3_000, 60).await;
    let before = traffic(&w).await;
    let a = timeline(&w, 0, &r, bsn.as_str()).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let t = a.json();
    assert_eq!(
        t["status"], "Success",
        "the unknown community is no error: {t}"
    );
    assert_eq!(t["localization"], "mitz");
    let asked: BTreeSet<String> = t["communities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["homeCommunityId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        asked,
        BTreeSet::from([
            w.hospitals[0].home.to_string(),
            w.hospitals[1].home.to_string()
        ])
    );
    let got: BTreeSet<String> = studies(&t).into_keys().collect();
    let want: BTreeSet<String> = seeded(&w, 0).into_iter().chain(seeded(&w, 1)).collect();
    assert_eq!(got, want);
    let after = traffic(&w).await;
    assert_eq!(after.sims[2], before.sims[2], "C is not asked");
    assert_eq!(
        after.gateways[2], before.gateways[2],
        "C's gateway is not asked"
    );
    assert!(after.sims[1] > before.sims[1], "B is asked");
    assert_eq!(mitz.stats().open_questions, 1);
    let m = metrics_text(&w.hospitals[0]).await;
    assert_eq!(
        metric(&m, "duo_localization_mode", &[("mode", "mitz")]),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "duo_localization_mode", &[("mode", "allCommunities")]),
        0.0
    );
    w.stop().await;
}

#[tokio::test]
async fn all_communities_mode_asks_everyone_and_says_so() {
    let _t = TIMING.read().await;
    let w = abc(1, LocalizationMode::AllCommunities).await;
    let r = requester(&w, 0);
    let bsn = w.patient.bsn.clone();
    let before = traffic(&w).await;
    let a = timeline(&w, 0, &r, bsn.as_str()).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let t = a.json();
    assert_eq!(t["status"], "Success", "{t}");
    assert_eq!(t["localization"], "allCommunities");
    assert_eq!(t["communities"].as_array().unwrap().len(), 3);
    assert_eq!(studies(&t).len(), 3);
    let after = traffic(&w).await;
    assert_eq!(after.mitz.1, before.mitz.1, "no open question");
    for i in 0..3 {
        assert!(after.sims[i] > before.sims[i], "hospital {i} asked");
    }
    let m = metrics_text(&w.hospitals[0]).await;
    assert_eq!(
        metric(&m, "duo_localization_mode", &[("mode", "allCommunities")]),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "duo_localization_mode", &[("mode", "mitz")]),
        0.0
    );
    assert_eq!(metric(&m, "duo_fanout_size_count", &[]), 1.0);
    assert_eq!(metric(&m, "duo_fanout_size_sum", &[]), 3.0);
    for h in [&w.hospitals[1], &w.hospitals[2]] {
        let n = metric(
            &m,
            "duo_community_request_duration_seconds_count",
            &[
                ("community", h.home.to_string().as_str()),
                ("transaction", "ITI-38"),
            ],
        );
        assert_eq!(n, 1.0, "latency of {} recorded", h.home);
    }
    w.stop().await;
}

#[tokio::test]
async fn timelines_beyond_the_limit_are_shed_with_503() {
    let mut w = abc(1, LocalizationMode::AllCommunities).await;
    w.reconfigure(0, |c| c.server.limits.max_concurrent_timelines = 1)
        .await
        .unwrap();
    let r = requester(&w, 0);
    let bsn = w.patient.bsn.to_string();
    // B answers slowly: the first timeline holds the only permit while the second arrives
    w.hospitals[1].control.set_faults(Faults {
        delay_ms: 1_500,
        ..Faults::default()
    });
    let (first, second) = tokio::join!(timeline(&w, 0, &r, &bsn), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        timeline(&w, 0, &r, &bsn).await
    });
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(second.status, 503, "{}", second.text());
    assert!(second.text().contains("retry later"), "{}", second.text());
    // the permit is returned: the next one is served
    w.hospitals[1].control.reset_faults();
    let third = timeline(&w, 0, &r, &bsn).await;
    assert_eq!(third.status, 200, "{}", third.text());
    w.stop().await;
}
