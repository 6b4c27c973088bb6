//! 200 concurrent timeline queries with mixed Mitz consents (issue 4 acceptance): four hospitals ask
//! each other, every (requesting organisation, data holder) pair with its own decision (Permit, Deny,
//! NotApplicable, Indeterminate), requesters with several roles. The disclosures are counted three
//! ways (from the answers, from `duo_disclosures_total`, from the audit files of the responding
//! gateways) and must equal the number of Permit decisions; every disclosure has exactly one audit
//! record, and no pair without Permit ever got anything.

mod gateway_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use duo_runtime::audit::{AuditEvent, Outcome, Side};
use duo_runtime::consent::Decision;
use duo_testkit::sim::mitz::ConsentRule;
use gateway_support::*;

const QUERIES: usize = 200;
const ROLES: [&str; 3] = ["01.015", "01.018", "01.055"];

/// The decision Mitz gives requester organisation `i` for data held by `j`.
fn decision(i: usize, j: usize) -> Decision {
    use Decision::*;
    const TABLE: [[Decision; 4]; 4] = [
        // holder:  A              B              C              D
        [Permit, Permit, Deny, Permit],          // A asks
        [Permit, Permit, Permit, NotApplicable], // B asks
        [Deny, Permit, Permit, Indeterminate],   // C asks
        [Permit, Deny, Permit, Permit],          // D asks
    ];
    TABLE[i][j]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disclosures_equal_permits_and_each_has_one_audit_record() {
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
    let n = w.hospitals.len();
    let uras: Vec<_> = w.hospitals.iter().map(|h| h.spec.ura.clone()).collect();
    let homes: Vec<String> = w.hospitals.iter().map(|h| h.home.to_string()).collect();
    let category = w.hospitals[0].config.consent.category.clone();
    let bsn = w.patient.bsn.clone();
    let mut cfg = w.mitz_config.clone();
    for i in 0..n {
        for j in (0..n).filter(|j| *j != i) {
            cfg.consents.push(ConsentRule {
                patient: bsn.clone(),
                holder: uras[j].clone(),
                requester: Some(uras[i].clone()),
                category: Some(category.clone()),
                decision: decision(i, j),
            });
        }
    }
    let mitz = start_mitz(&w, "mitz-mixed", cfg).await;
    for i in 0..n {
        use_mitz(&mut w, i, mitz.local_addr().port(), 20_000, 60).await;
        // generous deadlines: under load nothing may be cut off between disclosure and answer
        w.reconfigure(i, |c| {
            for r in &mut c.communities {
                r.deadline_ms = 60_000;
            }
        })
        .await
        .unwrap();
    }
    let clients: Vec<reqwest::Client> = (0..n).map(|i| front_end(&w, i)).collect();

    let started = Instant::now();
    let answers = futures::future::join_all((0..QUERIES).map(|q| {
        let i = q % n;
        let r = requester_with(&w, i, &format!("90000{q:04}"), ROLES[q % ROLES.len()]);
        let (w, client, bsn) = (&w, &clients[i], bsn.to_string());
        async move { (i, timeline_with(client, w, i, &r, &bsn).await) }
    }))
    .await;
    let took = started.elapsed();
    eprintln!("{QUERIES} concurrent timelines answered in {took:?}");

    // from the answers: a remote community disclosed its entries (ITI-38) and its manifests (ITI-39)
    let mut from_answers = 0usize;
    let mut expected = 0usize;
    for (i, a) in &answers {
        assert_eq!(a.status, 200, "{}", a.text());
        let t = a.json();
        assert_eq!(t["status"], "Success", "a refusal is no error: {t}");
        for j in (0..n).filter(|j| j != i) {
            let permit = decision(*i, j) == Decision::Permit;
            expected += 2 * usize::from(permit);
            let entries = t["communities"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["homeCommunityId"] == homes[j].as_str())
                .map(|c| c["documents"].as_u64().unwrap())
                .unwrap_or_else(|| panic!("{} not asked by {}", homes[j], homes[*i]));
            let manifests = t["studies"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|s| s["retrieve"].as_array().unwrap())
                .any(|r| r["homeCommunityId"] == homes[j].as_str());
            assert_eq!(entries > 0, permit, "{i} asks {j}: {t}");
            assert_eq!(manifests, permit, "{i} asks {j}: {t}");
            from_answers += usize::from(entries > 0) + usize::from(manifests);
        }
    }
    assert_eq!(from_answers, expected);

    // from the gateways: disclosures and Permit decisions
    let mut disclosed = 0.0;
    let mut permits = 0.0;
    for h in &w.hospitals {
        let m = metrics_text(h).await;
        disclosed += metric(&m, "duo_disclosures_total", &[]);
        permits += metric(&m, "duo_consent_decisions_total", &[("decision", "Permit")]);
    }
    assert_eq!(disclosed, expected as f64, "duo_disclosures_total");
    assert_eq!(permits, expected as f64, "Permit decisions");

    // from the audit files of the responding gateways
    let mut disclosure_records = 0usize;
    let mut permit_records = 0usize;
    for (j, h) in w.hospitals.iter().enumerate() {
        let records = audit(h);
        let responding: Vec<_> = records
            .iter()
            .filter(|r| r.side == Side::Responding)
            .collect();
        let mut per_message: BTreeMap<String, usize> = BTreeMap::new();
        for r in &responding {
            let who = r.requester.as_ref().expect("requester recorded");
            let i = uras.iter().position(|u| u == &who.ura).unwrap();
            match r.event {
                AuditEvent::ConsentDecision => {
                    let c = r.consent.as_ref().unwrap();
                    assert_eq!(c.decision, decision(i, j), "{r:?}");
                    assert_eq!(c.disclosed, c.decision == Decision::Permit);
                    permit_records += usize::from(c.decision == Decision::Permit);
                }
                AuditEvent::Query | AuditEvent::Retrieve => {
                    let disclosure = !r.document_ids.is_empty()
                        && matches!(r.outcome, Outcome::Success | Outcome::PartialSuccess);
                    if disclosure {
                        assert_eq!(decision(i, j), Decision::Permit, "{r:?}");
                        *per_message
                            .entry(r.message_id.clone().expect("messageId recorded"))
                            .or_default() += 1;
                        disclosure_records += 1;
                    } else if decision(i, j) != Decision::Permit {
                        assert_eq!(r.outcome, Outcome::Denied, "{r:?}");
                    }
                }
                AuditEvent::Localization => panic!("localisation at the responding side"),
                AuditEvent::Registration | AuditEvent::ConsentNotification => {}
            }
        }
        let twice: Vec<_> = per_message.iter().filter(|(_, c)| **c != 1).collect();
        assert!(
            twice.is_empty(),
            "requests with several disclosure records: {twice:?}"
        );
        // every timeline asked of this gateway as initiator is audited once
        let timelines = records
            .iter()
            .filter(|r| r.side == Side::Initiating && r.transaction.name() == "JSON-TIMELINE")
            .count();
        assert_eq!(timelines, QUERIES / n, "{}", homes[j]);
    }
    assert_eq!(disclosure_records, expected, "disclosure records");
    assert_eq!(permit_records, expected, "Permit decision records");
    let distinct: BTreeSet<usize> = answers.iter().map(|(i, _)| *i).collect();
    assert_eq!(distinct.len(), n);
    mitz.shutdown().await;
    w.stop().await;
}
