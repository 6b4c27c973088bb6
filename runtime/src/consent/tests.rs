use std::sync::atomic::{AtomicU64, Ordering};

use super::*;
use crate::audit::{AuditLog, AuditRecord, AuditSource, HolderRecord, Outcome, Side};
use crate::ihe::soap::Transaction;
use crate::xml::Limits;
use duo_testkit::sim::mitz::MitzSimConfig;
use duo_testkit::sim::mitz::env::SimEnv;
use duo_testkit::test_pki::{Pki, bsns, requester};

const HOLDER: &str = "00000659";

fn service(env: &SimEnv, deadline_ms: u64, cache: Duration) -> ConsentService {
    ConsentService::new(
        ConsentMode::Mitz,
        "GGC002".parse().unwrap(),
        HOLDER.parse().unwrap(),
        "V6".parse().unwrap(),
        Some(mitz_client(env, deadline_ms)),
        cache,
    )
}

fn sim_config(yaml: &str) -> MitzSimConfig {
    MitzSimConfig::parse(yaml).unwrap()
}

/// Patients with one behaviour each: decision rules and fault injection.
fn scenario() -> (MitzSimConfig, Vec<(&'static str, Bsn)>) {
    let p = bsns(8);
    let names = [
        "permit",
        "deny",
        "notApplicable",
        "indeterminate",
        "timeout",
        "http500",
        "garbage",
        "tls",
    ];
    let yaml = format!(
        r#"
consents:
  - {{ patient: "{permit}", holder: "{HOLDER}", decision: Permit }}
  - {{ patient: "{deny}", holder: "{HOLDER}", decision: Deny }}
  - {{ patient: "{ind}", holder: "{HOLDER}", decision: Indeterminate }}
  - {{ patient: "{timeout}", holder: "{HOLDER}", decision: Permit }}
  - {{ patient: "{h500}", holder: "{HOLDER}", decision: Permit }}
  - {{ patient: "{garbage}", holder: "{HOLDER}", decision: Permit }}
  - {{ patient: "{tls}", holder: "{HOLDER}", decision: Permit }}
faults:
  - {{ patient: "{timeout}", delayMs: 1500 }}
  - {{ patient: "{h500}", httpStatus: 500 }}
  - {{ patient: "{garbage}", garbage: true }}
"#,
        permit = p[0],
        deny = p[1],
        ind = p[3],
        timeout = p[4],
        h500 = p[5],
        garbage = p[6],
        tls = p[7],
    );
    (sim_config(&yaml), names.into_iter().zip(p).collect())
}

#[tokio::test]
async fn only_permit_discloses_and_every_other_answer_leaves_an_audit_record_with_its_reason() {
    let (cfg, patients) = scenario();
    let env = SimEnv::start(cfg).await;
    let svc = service(&env, 300, Duration::ZERO);
    // a gateway whose client certificate Mitz does not accept: a TLS failure
    let stranger = Pki::new("Unknown CA");
    let bad_tls = stranger.material(&stranger.leaf("gw", &["gw"]));
    let tls_svc = ConsentService::new(
        ConsentMode::Mitz,
        "GGC002".parse().unwrap(),
        HOLDER.parse().unwrap(),
        "V6".parse().unwrap(),
        Some(Arc::new(
            MitzClient::with_tls(&env.mitz_config(2_000, 0), &bad_tls).unwrap(),
        )),
        Duration::ZERO,
    );
    let (log, mem) = AuditLog::memory(
        AuditSource {
            source_id: "urn:oid:2.16.528.1.1007.3.3.659.1".into(),
            enterprise_site_id: HOLDER.into(),
        },
        None,
    );
    let who = requester("00000666");
    let mut expectations = Vec::new();
    for (name, patient) in &patients {
        let s = if *name == "tls" { &tls_svc } else { &svc };
        let o = s.check(patient, &who).await;
        let rec = AuditRecord::consent_decision(
            Transaction::Iti38,
            Side::Responding,
            patient,
            Some(&who),
            HolderRecord {
                ura: Some(HOLDER.parse().unwrap()),
                home_community_id: None,
            },
            &o,
        );
        log.record(&rec).await.unwrap();
        expectations.push((*name, o));
    }
    let lines = mem.lines();
    assert_eq!(lines.len(), patients.len(), "one audit record per decision");
    for ((name, o), line) in expectations.iter().zip(&lines) {
        let rec: AuditRecord = serde_json::from_str(line).unwrap();
        let c = rec.consent.as_ref().unwrap();
        match *name {
            "permit" => {
                assert!(o.discloses(), "{o:?}");
                assert_eq!(
                    (o.decision, &o.source),
                    (Decision::Permit, &ConsentSource::Mitz)
                );
                assert_eq!(o.detail.as_deref(), Some("Consent granted"));
                assert_eq!(rec.outcome, Outcome::Success);
                assert!(c.disclosed);
                continue;
            }
            "deny" => {
                assert_eq!(
                    (o.decision, &o.source),
                    (Decision::Deny, &ConsentSource::Mitz)
                );
                assert!(line.contains("No consent found"), "{line}");
            }
            "notApplicable" => {
                assert_eq!(o.decision, Decision::NotApplicable);
                assert_eq!(o.source, ConsentSource::Mitz);
            }
            "indeterminate" => {
                assert_eq!(o.decision, Decision::Indeterminate);
                assert_eq!(o.source, ConsentSource::Mitz);
            }
            "timeout" => {
                assert!(
                    matches!(
                        o.source,
                        ConsentSource::Failure(MitzError::Timeout { after_ms: 300 })
                    ),
                    "{o:?}"
                );
                assert!(line.contains("timeout"), "{line}");
            }
            "http500" => {
                assert!(
                    matches!(
                        o.source,
                        ConsentSource::Failure(MitzError::Http { status: 500, .. })
                    ),
                    "{o:?}"
                );
                assert!(line.contains("HTTP 500"), "{line}");
            }
            "garbage" => {
                assert!(
                    matches!(o.source, ConsentSource::Failure(MitzError::Unparseable(_))),
                    "{o:?}"
                );
                assert!(line.contains("unparseable"), "{line}");
            }
            "tls" => {
                assert!(
                    matches!(o.source, ConsentSource::Failure(MitzError::Tls(_))),
                    "{o:?}"
                );
                assert!(line.contains("TLS"), "{line}");
            }
            other => panic!("{other}"),
        }
        assert!(!o.discloses(), "{name} disclosed: {o:?}");
        assert!(!c.disclosed, "{name}");
        assert_eq!(rec.outcome, Outcome::Denied, "{name}");
        assert_eq!(c.decision, o.decision);
        assert_eq!(c.source, o.source.as_str());
        if matches!(o.source, ConsentSource::Failure(_)) {
            assert_eq!(o.decision, Decision::Indeterminate, "{name}");
            assert_eq!(c.source, "failure");
            assert!(c.reason.is_some(), "{name}: a failure records its reason");
        }
    }
    // the TLS-failing client never got a question through
    assert_eq!(env.sim.stats().closed_questions, 7);
    env.sim.shutdown().await;
}

#[tokio::test]
async fn permit_and_deny_are_cached_nothing_else() {
    let p = bsns(5);
    let env = SimEnv::start(sim_config(&format!(
        r#"
consents:
  - {{ patient: "{}", holder: "{HOLDER}", decision: Permit }}
  - {{ patient: "{}", holder: "{HOLDER}", decision: Deny }}
  - {{ patient: "{}", holder: "{HOLDER}", decision: Indeterminate }}
  - {{ patient: "{}", holder: "{HOLDER}", decision: Permit }}
faults:
  - {{ patient: "{}", httpStatus: 500 }}
"#,
        p[0], p[1], p[3], p[4], p[4]
    )))
    .await;
    let now = Arc::new(Mutex::new(Instant::now()));
    let clock = {
        let now = now.clone();
        Arc::new(move || *now.lock().unwrap())
    };
    let svc = service(&env, 2_000, Duration::from_secs(60)).with_clock(clock);
    let who = requester("00000666");
    let asked = || env.sim.stats().closed_questions;

    // Permit: asked once, then from the cache
    assert_eq!(svc.check(&p[0], &who).await.source, ConsentSource::Mitz);
    let again = svc.check(&p[0], &who).await;
    assert!(again.discloses());
    assert_eq!(
        (again.decision, again.source),
        (Decision::Permit, ConsentSource::Cache)
    );
    assert_eq!(asked(), 1);
    // Deny: cached too
    svc.check(&p[1], &who).await;
    let d = svc.check(&p[1], &who).await;
    assert_eq!(
        (d.decision, d.source),
        (Decision::Deny, ConsentSource::Cache)
    );
    assert_eq!(asked(), 2);
    // NotApplicable and Indeterminate are asked every time
    for patient in [&p[2], &p[3]] {
        svc.check(patient, &who).await;
        let o = svc.check(patient, &who).await;
        assert_eq!(o.source, ConsentSource::Mitz);
    }
    assert_eq!(asked(), 6);
    // failures are not cached
    for _ in 0..2 {
        assert!(matches!(
            svc.check(&p[4], &who).await.source,
            ConsentSource::Failure(_)
        ));
    }
    assert_eq!(asked(), 8);
    // the key holds the requester's organisation and role
    let other_org = requester("00000777");
    assert_eq!(
        svc.check(&p[0], &other_org).await.source,
        ConsentSource::Mitz
    );
    let mut other_role = who.clone();
    other_role.role = "01.039".parse().unwrap();
    assert_eq!(
        svc.check(&p[0], &other_role).await.source,
        ConsentSource::Mitz
    );
    // ... and the professional (issue 12: every input of the question is in the key)
    let mut colleague = who.clone();
    colleague.uzi = "000012345".parse().unwrap();
    assert_eq!(
        svc.check(&p[0], &colleague).await.source,
        ConsentSource::Mitz
    );
    assert_eq!(asked(), 11);
    // after cacheSeconds the question is asked again
    *now.lock().unwrap() += Duration::from_secs(61);
    assert_eq!(svc.check(&p[0], &who).await.source, ConsentSource::Mitz);
    assert_eq!(asked(), 12);
    env.sim.shutdown().await;
}

#[tokio::test]
async fn a_zero_cache_lifetime_disables_the_cache() {
    let p = bsns(1);
    let env = SimEnv::start(sim_config(&format!(
        "consents:\n  - {{ patient: \"{}\", holder: \"{HOLDER}\", decision: Permit }}\n",
        p[0]
    )))
    .await;
    let svc = service(&env, 2_000, Duration::ZERO);
    for _ in 0..3 {
        assert_eq!(
            svc.check(&p[0], &requester("00000666")).await.source,
            ConsentSource::Mitz
        );
    }
    assert_eq!(env.sim.stats().closed_questions, 3);
    env.sim.shutdown().await;
}

#[tokio::test]
async fn permit_all_is_visible_in_the_outcome_and_asks_no_one() {
    let svc = ConsentService::new(
        ConsentMode::PermitAll,
        "GGC002".parse().unwrap(),
        HOLDER.parse().unwrap(),
        "V6".parse().unwrap(),
        None,
        Duration::from_secs(60),
    );
    let o = svc.check(&bsns(1)[0], &requester("00000666")).await;
    assert!(o.discloses());
    assert_eq!(o.source, ConsentSource::PermitAll);
    assert!(o.reason().contains("permitAll"), "{}", o.reason());
    let rec = ConsentRecord::from(&o);
    assert_eq!(rec.source, "permitAll");
    assert!(rec.reason.unwrap().contains("not checked"));
}

#[tokio::test]
async fn mitz_mode_without_a_client_fails_closed() {
    let svc = ConsentService::new(
        ConsentMode::Mitz,
        "GGC002".parse().unwrap(),
        HOLDER.parse().unwrap(),
        "V6".parse().unwrap(),
        None,
        Duration::from_secs(60),
    );
    let o = svc.check(&bsns(1)[0], &requester("00000666")).await;
    assert!(!o.discloses());
    assert!(matches!(
        o.source,
        ConsentSource::Failure(MitzError::NotConfigured(_))
    ));
}

#[tokio::test]
async fn several_categories_in_one_question() {
    let p = bsns(1);
    let env = SimEnv::start(sim_config(&format!(
        r#"
consents:
  - {{ patient: "{0}", holder: "{HOLDER}", category: GGC002, decision: Permit }}
  - {{ patient: "{0}", holder: "{HOLDER}", category: GGC007, decision: Deny }}
"#,
        p[0]
    )))
    .await;
    let svc = service(&env, 2_000, Duration::from_secs(60));
    let cats: Vec<DataCategory> = ["GGC007", "GGC002"]
        .iter()
        .map(|c| c.parse().unwrap())
        .collect();
    let got = svc
        .check_categories(&p[0], &requester("00000666"), &cats)
        .await;
    assert_eq!(got[0].category.as_str(), "GGC007");
    assert_eq!(got[0].decision, Decision::Deny);
    assert_eq!(got[1].decision, Decision::Permit);
    assert_eq!(env.sim.stats().closed_questions, 1);
    // both cached now; a new category is asked alone
    let cats3: Vec<DataCategory> = ["GGC002", "GGC012", "GGC007"]
        .iter()
        .map(|c| c.parse().unwrap())
        .collect();
    let got = svc
        .check_categories(&p[0], &requester("00000666"), &cats3)
        .await;
    let s: Vec<(&str, Decision, &str)> = got
        .iter()
        .map(|o| (o.category.as_str(), o.decision, o.source.as_str()))
        .collect();
    assert_eq!(
        s,
        vec![
            ("GGC002", Decision::Permit, "cache"),
            ("GGC012", Decision::NotApplicable, "mitz"),
            ("GGC007", Decision::Deny, "cache"),
        ]
    );
    assert_eq!(env.sim.stats().closed_questions, 2);
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_checks_disclose_exactly_the_permits() {
    // 50 patients; patient i: Permit for everyone when i % 3 == 0, Deny when i % 3 == 1, nothing on
    // record (NotApplicable) when i % 3 == 2; and for organisation 00000004 a specific Permit on every
    // patient with i % 5 == 0 (overriding a Deny or nothing). 4 requesting organisations each: 200 checks.
    let patients = bsns(50);
    let mut yaml = String::from("consents:\n");
    for (i, p) in patients.iter().enumerate() {
        match i % 3 {
            0 => yaml.push_str(&format!(
                "  - {{ patient: \"{p}\", holder: \"{HOLDER}\", decision: Permit }}\n"
            )),
            1 => yaml.push_str(&format!(
                "  - {{ patient: \"{p}\", holder: \"{HOLDER}\", decision: Deny }}\n"
            )),
            _ => {}
        }
        if i % 5 == 0 {
            yaml.push_str(&format!(
                "  - {{ patient: \"{p}\", holder: \"{HOLDER}\", requester: \"00000004\", decision: Permit }}\n"
            ));
        }
    }
    let env = SimEnv::start(sim_config(&yaml)).await;
    let svc = Arc::new(service(&env, 10_000, Duration::ZERO));
    let orgs = ["00000001", "00000002", "00000003", "00000004"];
    let mut expected = 0u64;
    for i in 0..patients.len() {
        for org in orgs {
            if i % 3 == 0 || (org == "00000004" && i % 5 == 0) {
                expected += 1;
            }
        }
    }
    let disclosed = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, p) in patients.iter().enumerate() {
        for org in orgs {
            let svc = svc.clone();
            let p = p.clone();
            let disclosed = disclosed.clone();
            tasks.spawn(async move {
                let o = svc.check(&p, &requester(org)).await;
                assert!(
                    !matches!(o.source, ConsentSource::Failure(_)),
                    "check {i} {org} failed: {o:?}"
                );
                if o.discloses() {
                    disclosed.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    assert_eq!(env.sim.stats().closed_questions, 200);
    assert_eq!(disclosed.load(Ordering::SeqCst), expected);
    env.sim.shutdown().await;
}

#[test]
fn the_cache_remembers_only_permit_and_deny() {
    let c = ConsentCache::new(Duration::from_secs(60), Arc::new(Instant::now));
    let q = ClosedQuestion {
        patient: bsns(1)[0].clone(),
        holder_ura: HOLDER.parse().unwrap(),
        holder_facility_type: "V6".parse().unwrap(),
        categories: Vec::new(),
        requester: requester("00000666"),
        mandated: None,
    };
    let k = |cat: &str| CacheKey::of(&q, &cat.parse().unwrap());
    c.put(k("GGC001"), Decision::Permit);
    c.put(k("GGC002"), Decision::Deny);
    c.put(k("GGC003"), Decision::NotApplicable);
    c.put(k("GGC004"), Decision::Indeterminate);
    assert_eq!(c.get(&k("GGC001")), Some(Decision::Permit));
    assert_eq!(c.get(&k("GGC002")), Some(Decision::Deny));
    assert_eq!(c.get(&k("GGC003")), None);
    assert_eq!(c.get(&k("GGC004")), None);
}

#[tokio::test]
async fn the_service_is_built_from_the_runtime_configuration() {
    let p = bsns(1);
    let env = SimEnv::start(sim_config(&format!(
        "consents:\n  - {{ patient: \"{}\", holder: \"{HOLDER}\", requester: \"00000666\", decision: Permit }}\n",
        p[0]
    )))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let client = env.pki.leaf("gateway.test", &["gateway.test"]);
    let tls = env.pki.write(dir.path(), "mitz-client", &client);
    let yaml = format!(
        r#"
organization: {{ ura: "{HOLDER}", name: Ziekenhuis, facilityType: V6, homeCommunityId: "urn:oid:2.16.528.1.1007.3.3.659.1" }}
server:
  tls: {{ certFile: /etc/duo/tls.crt, keyFile: /etc/duo/tls.key, trustBundleFile: /etc/duo/ca.crt }}
local: {{ kind: dicomweb, baseUrl: "https://pacs.example/dicom-web", repositoryUniqueId: "1.2.3" }}
consent: {{ mode: mitz, category: GGC002 }}
mitz:
  closedQuestionUrl: "{url}"
  openQuestionUrl: "{open}"
  tls: {{ certFile: "{cert}", keyFile: "{key}", trustBundleFile: "{ca}" }}
  deadlineMs: 2000
  cacheSeconds: 60
"#,
        url = env.sim.closed_question_url(),
        open = env.sim.open_question_url(),
        cert = tls.cert_file.display(),
        key = tls.key_file.display(),
        ca = tls.trust_bundle_file.display(),
    );
    let config = crate::config::Config::parse(&yaml).unwrap();
    let svc = ConsentService::from_config(&config).unwrap();
    assert_eq!(svc.mode(), ConsentMode::Mitz);
    let o = svc.check(&p[0], &requester("00000666")).await;
    assert!(o.discloses(), "{o:?}");
    assert_eq!(
        svc.check(&p[0], &requester("00000666")).await.source,
        ConsentSource::Cache
    );
    assert!(!svc.check(&p[0], &requester("00000777")).await.discloses());

    // mode mitz without a mitz section is refused; unreadable TLS files name the field
    let mut no_mitz = config.clone();
    no_mitz.mitz = None;
    assert!(matches!(
        ConsentService::from_config(&no_mitz),
        Err(ConsentSetupError::NoMitz)
    ));
    let mut bad = config.clone();
    if let Some(m) = bad.mitz.as_mut() {
        m.tls.key_file = dir.path().join("missing.key");
    }
    let e = ConsentService::from_config(&bad).unwrap_err();
    assert!(e.to_string().contains("missing.key"), "{e}");
    env.sim.shutdown().await;
}

/// A Mitz that answers from a rule over the whole question (in process, through the transport seam),
/// in the format of the derived samples, and counts the questions.
struct RuleMitz {
    permit: fn(&ClosedQuestion) -> bool,
    asked: AtomicU64,
}

impl ClosedQuestionTransport for RuleMitz {
    fn send<'a>(
        &'a self,
        q: &'a ClosedQuestion,
    ) -> crate::backend::BoxFut<'a, Result<Bytes, MitzError>> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        let decision = if (self.permit)(q) {
            Decision::Permit
        } else {
            Decision::Deny
        };
        let results: Vec<CategoryDecision> = q
            .categories
            .iter()
            .map(|c| CategoryDecision {
                category: c.clone(),
                decision,
                status_code: None,
                status_message: None,
            })
            .collect();
        let body = xacml::write_closed_answer(&results, q.categories.len() > 1);
        Box::pin(async move { Ok(Bytes::from(body)) })
    }
}

#[tokio::test]
async fn a_cached_answer_is_reused_only_for_exactly_its_question() {
    // issue 12, defect 3: a Permit cached for purpose TREAT was reused for another purpose of use,
    // another UZI number and another facility type; a Deny cached for one purpose blocked another
    let mitz = Arc::new(RuleMitz {
        // Mitz permits exactly: radiologist 000095254 of a V6 hospital, for treatment
        permit: |q| {
            q.requester.purpose_of_use.as_str() == "TREAT"
                && q.requester.uzi.as_str() == "000095254"
                && q.requester.facility_type.as_str() == "V6"
        },
        asked: AtomicU64::new(0),
    });
    let svc = ConsentService::with_transport(
        ConsentMode::Mitz,
        "GGC002".parse().unwrap(),
        HOLDER.parse().unwrap(),
        "V6".parse().unwrap(),
        Some(mitz.clone()),
        Limits::default(),
        Duration::from_secs(60),
    );
    let p = bsns(1).remove(0);
    let mut treat = requester("00000666");
    treat.uzi = "000095254".parse().unwrap();
    treat.facility_type = "V6".parse().unwrap();
    let asked = || mitz.asked.load(Ordering::SeqCst);
    let o = svc.check(&p, &treat).await;
    assert!(o.discloses(), "{o:?}");
    assert_eq!(svc.check(&p, &treat).await.source, ConsentSource::Cache);
    assert_eq!(asked(), 1);
    let mut other_purpose = treat.clone();
    other_purpose.purpose_of_use = "EMERGENCY".parse().unwrap();
    let mut other_uzi = treat.clone();
    other_uzi.uzi = "000012345".parse().unwrap();
    let mut other_facility = treat.clone();
    other_facility.facility_type = "Z3".parse().unwrap();
    for (what, r) in [
        ("purpose of use", &other_purpose),
        ("UZI number", &other_uzi),
        ("facility type", &other_facility),
    ] {
        let o = svc.check(&p, r).await;
        assert_eq!(o.source, ConsentSource::Mitz, "{what}: asked, not cached");
        assert!(
            !o.discloses(),
            "{what}: the cached Permit was reused: {o:?}"
        );
        // the Deny now cached for this question does not block the original one
        assert!(svc.check(&p, &treat).await.discloses(), "{what}");
    }
    assert_eq!(asked(), 4);
    // a Deny cached first blocks nothing else either
    let svc = ConsentService::with_transport(
        ConsentMode::Mitz,
        "GGC002".parse().unwrap(),
        HOLDER.parse().unwrap(),
        "V6".parse().unwrap(),
        Some(mitz.clone()),
        Limits::default(),
        Duration::from_secs(60),
    );
    assert!(!svc.check(&p, &other_purpose).await.discloses());
    let o = svc.check(&p, &treat).await;
    assert_eq!(
        (o.decision, o.source),
        (Decision::Permit, ConsentSource::Mitz)
    );
}

/// A Mitz client of this build with the identity the simulator trusts (the test kit's own
/// `SimEnv::client` returns the library build's type, another type in this crate's unit tests).
fn mitz_client(env: &SimEnv, deadline_ms: u64) -> std::sync::Arc<crate::consent::MitzClient> {
    std::sync::Arc::new(
        crate::consent::MitzClient::with_tls(&env.mitz_config(deadline_ms, 0), &env.client_tls)
            .unwrap(),
    )
}
