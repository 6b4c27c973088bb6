//! Target communities (issue 14, item 5; IHE CP-ITI-1301, the Twiin consultation text of ITI-38,
//! docs/DOMAIN.md): over the real HTTP/TLS stack, a platform community fronting two hospitals (the test
//! kit's TLB node simulator with two fronted stores) is asked once with both ids when Mitz names both and
//! once with one id when Mitz names one; a hostile platform that answers for a hospital it was not asked
//! for has those documents left out; a PartialSuccess naming an id the platform does not know is no
//! error; and the responding side's three `$targetCommunityIdList` cases (absent, empty, unknown ids)
//! plus "our id only" and "unknown ids only" at a DUO gateway's ITI-38 listener.

mod gateway_support;

use std::collections::BTreeSet;
use std::sync::Arc;

use duo_runtime::config::RemoteCommunity;
use duo_runtime::consent::Decision;
use duo_runtime::ihe::ebrim::{ErrorCode, ResponseStatus, Severity};
use duo_runtime::ihe::query::{AdhocQueryResponse, ReturnType, param};
use duo_runtime::ihe::retrieve::{DocumentRequest, RetrieveDocumentSetRequest};
use duo_runtime::ihe::soap::Transaction;
use duo_runtime::model::{AuthorInstitution, HomeCommunityId};
use duo_testkit::dicom::synth::SynthConfig;
use duo_testkit::sim::faults::Endpoint;
use duo_testkit::sim::mitz::{ConsentRule, LocationRule, MitzSim};
use duo_testkit::sim::seed::{CommunitySeed, SeededStudy, seed_patient};
use duo_testkit::sim::serve::{RunningSim, Transport};
use duo_testkit::sim::store::Store;
use duo_testkit::sim::tlb::{FrontedCommunity, TlbConfig, TlbSim};
use gateway_support::*;

const PLATFORM: &str = "urn:oid:2.16.528.1.1007.99.777.1";
const H1: &str = "urn:oid:2.16.528.1.1007.99.777.11";
const H2: &str = "urn:oid:2.16.528.1.1007.99.777.12";
/// Configured as fronted by the platform, but the platform does not know it.
const H3: &str = "urn:oid:2.16.528.1.1007.99.777.13";
const UNKNOWN: &str = "urn:oid:2.16.528.1.1007.99.404.1";

fn hc(s: &str) -> HomeCommunityId {
    s.parse().unwrap()
}

/// The platform node: its own store empty, H1 and H2 behind it with one study of the world's patient
/// each. Returns the simulator, its server and the studies of H1 and H2.
async fn platform(w: &World) -> (TlbSim, RunningSim, SeededStudy, SeededStudy) {
    let mut fronted = Vec::new();
    let mut uids = Vec::new();
    for (k, home) in [(11, H1), (12, H2)] {
        let store = Arc::new(Store::new());
        let community = CommunitySeed::new(
            AuthorInstitution {
                name: format!("Ziekenhuis {k}"),
                ura: Some(format!("100000{k}").parse().unwrap()),
            },
            "V6".parse().unwrap(),
            &format!("2.16.528.1.1007.99.777.{k}.1"),
            &format!("2.16.528.1.1007.99.777.{k}.2"),
            Some(hc(home)),
        );
        let s = seed_patient(
            &store,
            &community,
            &SynthConfig::default(),
            &w.patient,
            7_000 + k,
            1,
        )
        .unwrap();
        uids.push(s[0].clone());
        fronted.push(FrontedCommunity {
            home_community_id: hc(home),
            store,
        });
    }
    let sim = TlbSim::new(TlbConfig {
        fronted,
        ..TlbConfig::new(hc(PLATFORM))
    });
    let (_, tls) = w
        .issue("platform", world::plain_spec("Platform", &["localhost"]))
        .unwrap();
    let running = sim
        .start(Transport::mutual_tls(&tls).unwrap())
        .await
        .unwrap();
    let h2 = uids.pop().unwrap();
    let h1 = uids.pop().unwrap();
    (sim, running, h1, h2)
}

/// The platform as a community of hospital A's gateway, fronting `fronts`.
fn platform_community(sim: &RunningSim, fronts: &[&str]) -> RemoteCommunity {
    let base = format!("https://localhost:{}", sim.addr().port());
    RemoteCommunity {
        home_community_id: hc(PLATFORM),
        name: "Platform".into(),
        organizations: Vec::new(),
        query_url: format!("{base}/xca/iti38"),
        retrieve_url: format!("{base}/xca/iti39"),
        imaging_retrieve_url: format!("{base}/xcai/rad75"),
        connect_to: None,
        certificate_ura: None,
        trusted_issuers: Vec::new(),
        deadline_ms: 5_000,
        fronted_communities: fronts.iter().map(|h| hc(h)).collect(),
    }
}

/// A Mitz simulator that knows the world's patient only at `homes`, used by hospital A's gateway.
async fn mitz_naming(w: &mut World, name: &str, homes: &[&str]) -> MitzSim {
    let bsn = w.patient.bsn.clone();
    let mut cfg = w.mitz_config.clone();
    cfg.locations.retain(|l| l.patient != bsn);
    // the open question lists a location when the holder's category-less rule permits
    cfg.consents.push(ConsentRule {
        patient: bsn.clone(),
        holder: "10000077".parse().unwrap(),
        requester: None,
        category: None,
        decision: Decision::Permit,
    });
    for h in homes {
        cfg.locations.push(LocationRule {
            patient: bsn.clone(),
            home_community_id: hc(h),
            holder: "10000077".parse().unwrap(),
            source_id: None,
            category: None,
        });
    }
    let mitz = start_mitz(w, name, cfg).await;
    use_mitz(w, 0, mitz.local_addr().port(), 3_000, 0).await;
    mitz
}

/// Hospital A (XDS, Mitz localisation; A's own community not asked) and B (XDS).
async fn world_ab() -> World {
    let mut w = build(options(
        vec![
            spec("A", Kind::Xds, 1, Decision::Permit),
            spec("B", Kind::Xds, 1, Decision::Permit),
        ],
        LocalizationMode::Mitz,
    ))
    .await;
    w.reconfigure(0, |c| c.initiating.include_local = false)
        .await
        .unwrap();
    w
}

fn homes_of(r: &AdhocQueryResponse) -> BTreeSet<String> {
    r.objects
        .iter()
        .map(|o| o.home().map(|h| h.to_string()).unwrap_or_default())
        .collect()
}

fn ids_of(r: &AdhocQueryResponse) -> Vec<String> {
    r.objects
        .iter()
        .map(|o| o.id().unwrap_or_default().to_owned())
        .collect()
}

fn list(ids: &[&str]) -> Vec<Option<Vec<String>>> {
    vec![Some(ids.iter().map(|s| s.to_string()).collect())]
}

#[tokio::test]
async fn a_platform_is_asked_once_with_exactly_the_ids_mitz_names() {
    let mut w = world_ab().await;
    let (sim, running, s1, s2) = platform(&w).await;
    let (uid1, uid2) = (s1.study_instance_uid.clone(), s2.study_instance_uid.clone());
    w.reconfigure(0, |c| {
        c.communities.push(platform_community(&running, &[H1, H2]))
    })
    .await
    .unwrap();
    let r = requester(&w, 0);
    let bsn = w.patient.bsn.clone();
    let find = find_documents(&bsn, None, ReturnType::LeafClass);

    // Mitz names both hospitals behind the platform: one ITI-38 to the platform, listing both
    let _mitz = mitz_naming(&mut w, "mitz-both", &[H1, H2]).await;
    sim.control.clear_log();
    let t = timeline(&w, 0, &r, bsn.as_str()).await;
    assert_eq!(t.status, 200, "{}", t.text());
    let t = t.json();
    assert_eq!(t["status"], "Success", "{t}");
    assert!(timeline_errors(&t).is_empty(), "{t}");
    assert_eq!(sim.control.requests(Endpoint::Iti38), 1, "asked once");
    // the manifests of both hospitals were fetched through the platform (ITI-39), each from its own
    assert!(sim.control.requests(Endpoint::Iti39) >= 1);
    assert_eq!(sim.target_lists(), list(&[H1, H2]));
    let got: BTreeSet<String> = studies(&t).into_keys().collect();
    assert_eq!(got, BTreeSet::from([uid1.clone(), uid2.clone()]), "{t}");
    // the timeline names each study's own hospital as its source
    assert_eq!(studies(&t)[&uid1], [H1]);
    // ITI-18 of a local consumer goes through the same fan-out
    sim.clear_target_lists();
    let a = local(&w, 0, Transaction::Iti18, Some(&r), Some(&bsn), &find)
        .await
        .query(Transaction::Iti18);
    assert_eq!(a.status, ResponseStatus::Success, "{:?}", a.errors);
    assert_eq!(sim.target_lists(), list(&[H1, H2]));
    assert_eq!(homes_of(&a), BTreeSet::from([H1.to_owned(), H2.to_owned()]));
    // a consumer naming a hospital behind the platform in @home reaches it through the platform, with
    // only that id in the list
    sim.clear_target_lists();
    let by_home = find_documents(&bsn, Some(H1), ReturnType::LeafClass);
    let a = local(&w, 0, Transaction::Iti18, Some(&r), Some(&bsn), &by_home)
        .await
        .query(Transaction::Iti18);
    assert_eq!(a.status, ResponseStatus::Success, "{:?}", a.errors);
    assert_eq!(sim.target_lists(), list(&[H1]));
    assert_eq!(homes_of(&a), BTreeSet::from([H1.to_owned()]));
    // and a document of that hospital is retrieved through the platform (ITI-43 → ITI-39)
    let retrieves = sim.control.requests(Endpoint::Iti39);
    let got = local(
        &w,
        0,
        Transaction::Iti43,
        Some(&r),
        Some(&bsn),
        &RetrieveDocumentSetRequest {
            documents: vec![DocumentRequest {
                home_community_id: Some(hc(H1)),
                repository_unique_id: s1.repository_unique_id.clone(),
                document_unique_id: s1.manifest.unique_id.clone(),
            }],
        },
    )
    .await
    .retrieve(Transaction::Iti43);
    assert_eq!(
        got.response.status,
        ResponseStatus::Success,
        "{:?}",
        got.response.errors
    );
    assert_eq!(got.documents.len(), 1);
    assert_eq!(sim.control.requests(Endpoint::Iti39), retrieves + 1);

    // Mitz names one of them: one ITI-38 listing that one only, and only its documents
    let _mitz = mitz_naming(&mut w, "mitz-one", &[H2]).await;
    sim.control.clear_log();
    sim.clear_target_lists();
    let t = timeline(&w, 0, &r, bsn.as_str()).await.json();
    assert_eq!(t["status"], "Success", "{t}");
    assert_eq!(sim.control.requests(Endpoint::Iti38), 1);
    assert_eq!(sim.target_lists(), list(&[H2]));
    let got: BTreeSet<String> = studies(&t).into_keys().collect();
    assert_eq!(got, BTreeSet::from([uid2.clone()]), "{t}");
    // a list a consumer puts in its own ITI-18 is never passed on: only what Mitz named is asked
    sim.clear_target_lists();
    let mut own_list = find.clone();
    own_list
        .query
        .set_target_communities(&[hc(H1), hc(H2), hc(UNKNOWN)]);
    let a = local(&w, 0, Transaction::Iti18, Some(&r), Some(&bsn), &own_list)
        .await
        .query(Transaction::Iti18);
    assert_eq!(sim.target_lists(), list(&[H2]));
    assert_eq!(homes_of(&a), BTreeSet::from([H2.to_owned()]));

    // Mitz names neither: the platform is not asked at all
    let _mitz = mitz_naming(&mut w, "mitz-none", &[UNKNOWN]).await;
    sim.control.clear_log();
    let t = timeline(&w, 0, &r, bsn.as_str()).await;
    assert_eq!(t.status, 200, "{}", t.text());
    assert_eq!(sim.control.requests(Endpoint::Iti38), 0);
    running.stop().await;
    w.stop().await;
}

#[tokio::test]
async fn a_hostile_platform_cannot_slip_in_a_hospital_it_was_not_asked_for() {
    let mut w = world_ab().await;
    let (sim, running, s1, s2) = platform(&w).await;
    let (uid1, uid2) = (s1.study_instance_uid, s2.study_instance_uid);
    // A's configuration says the platform also fronts H3, which the platform itself does not know
    w.reconfigure(0, |c| {
        c.communities
            .push(platform_community(&running, &[H1, H2, H3]))
    })
    .await
    .unwrap();
    let r = requester(&w, 0);
    let bsn = w.patient.bsn.clone();
    let find = find_documents(&bsn, None, ReturnType::LeafClass);
    let _mitz = mitz_naming(&mut w, "mitz-h1", &[H1]).await;

    // the platform ignores the list and answers for H1 and H2: H2's documents are left out, with a
    // warning naming the platform; H1's pass
    sim.set_ignore_target_list(true);
    let a = local(&w, 0, Transaction::Iti18, Some(&r), Some(&bsn), &find)
        .await
        .query(Transaction::Iti18);
    assert_eq!(sim.target_lists(), list(&[H1]));
    assert_eq!(
        homes_of(&a),
        BTreeSet::from([H1.to_owned()]),
        "{:?}",
        a.objects
    );
    assert_eq!(a.status, ResponseStatus::Success, "{:?}", a.errors);
    let left_out: Vec<_> = a
        .errors
        .iter()
        .filter(|e| e.location.as_deref() == Some(PLATFORM))
        .collect();
    assert_eq!(left_out.len(), 1, "{:?}", a.errors);
    assert_eq!(left_out[0].severity, Severity::Warning);
    assert!(
        left_out[0].code_context.contains("not asked for") && left_out[0].code_context.contains(H2),
        "{}",
        left_out[0].code_context
    );
    let t = timeline(&w, 0, &r, bsn.as_str()).await.json();
    let got: BTreeSet<String> = studies(&t).into_keys().collect();
    assert_eq!(got, BTreeSet::from([uid1.clone()]), "{t}");
    assert!(!got.contains(&uid2));

    // an honest platform asked for H1 and H3 answers PartialSuccess naming H3, which it does not know:
    // no error at the initiating side, H1's documents shown
    sim.set_ignore_target_list(false);
    let _mitz = mitz_naming(&mut w, "mitz-h1-h3", &[H1, H3]).await;
    sim.clear_target_lists();
    let a = local(&w, 0, Transaction::Iti18, Some(&r), Some(&bsn), &find)
        .await
        .query(Transaction::Iti18);
    assert_eq!(sim.target_lists(), list(&[H1, H3]));
    assert_eq!(a.status, ResponseStatus::Success, "{:?}", a.errors);
    assert_eq!(homes_of(&a), BTreeSet::from([H1.to_owned()]));
    assert_eq!(
        errors(&a.errors),
        [("XDSUnknownCommunity".into(), H3.into())]
    );
    assert_eq!(a.errors[0].severity, Severity::Warning);
    let t = timeline(&w, 0, &r, bsn.as_str()).await.json();
    assert_eq!(t["status"], "Success", "{t}");
    running.stop().await;
    w.stop().await;
}

#[tokio::test]
async fn the_responding_side_honours_the_target_community_list() {
    let w = world_ab().await;
    let r = requester(&w, 1);
    let bsn = w.patient.bsn.clone();
    let home_a = w.hospitals[0].home.to_string();
    let ask = |values: Option<Vec<String>>| {
        let mut q = find_documents(&bsn, None, ReturnType::LeafClass);
        if let Some(v) = values {
            q.query.slots.push(duo_runtime::ihe::ebrim::Slot::new(
                param::TARGET_COMMUNITY_ID_LIST,
                v,
            ));
        }
        let w = &w;
        let r = &r;
        let bsn = &bsn;
        async move {
            to_gateway(w, 1, 0, Transaction::Iti38, r, Some(bsn), &q)
                .await
                .query(Transaction::Iti38)
        }
    };
    let registry = &w.hospitals[0].control;

    // absent: as before
    let before = ask(None).await;
    assert_eq!(
        before.status,
        ResponseStatus::Success,
        "{:?}",
        before.errors
    );
    assert!(before.errors.is_empty());
    assert_eq!(before.objects.len(), 2, "manifest and report");

    // our id alone: as before
    let ours = ask(Some(vec![format!("('{home_a}')")])).await;
    assert_eq!(ours.status, ResponseStatus::Success, "{:?}", ours.errors);
    assert_eq!(ids_of(&ours), ids_of(&before));

    // empty: an error, nothing disclosed
    for empty in [vec![], vec!["()".to_owned()]] {
        let asked = registry.requests(Endpoint::Iti18);
        let e = ask(Some(empty.clone())).await;
        assert_eq!(e.status, ResponseStatus::Failure, "{empty:?}");
        assert!(e.objects.is_empty());
        assert_eq!(
            errors(&e.errors),
            [("XDSRegistryError".into(), home_a.clone())]
        );
        assert_eq!(
            registry.requests(Endpoint::Iti18),
            asked,
            "registry not asked"
        );
    }

    // ours and an unknown id: PartialSuccess naming the unknown one, answered for ours
    let p = ask(Some(vec![format!("('{home_a}','{UNKNOWN}')")])).await;
    assert_eq!(p.status, ResponseStatus::PartialSuccess, "{:?}", p.errors);
    assert_eq!(ids_of(&p), ids_of(&before));
    assert_eq!(
        errors(&p.errors),
        [("XDSUnknownCommunity".into(), UNKNOWN.into())]
    );
    assert_eq!(p.errors[0].severity, Severity::Warning);
    assert_eq!(p.errors[0].error_code, ErrorCode::XDSUnknownCommunity);

    // unknown ids only: PartialSuccess naming them, nothing looked up or disclosed
    let asked = registry.requests(Endpoint::Iti18);
    let n = ask(Some(vec![format!("('{UNKNOWN}','{H1}')")])).await;
    assert_eq!(n.status, ResponseStatus::PartialSuccess);
    assert!(n.objects.is_empty());
    assert_eq!(
        errors(&n.errors),
        [
            ("XDSUnknownCommunity".into(), UNKNOWN.into()),
            ("XDSUnknownCommunity".into(), H1.into())
        ]
    );
    assert_eq!(
        registry.requests(Endpoint::Iti18),
        asked,
        "registry not asked"
    );

    // hostile lists: an id twice, an empty entry, a non-OID: refused, nothing disclosed
    for bad in [
        format!("('{home_a}','{home_a}')"),
        format!("('{home_a}','')"),
        format!("('{home_a}','<script>')"),
    ] {
        let b = ask(Some(vec![bad.clone()])).await;
        assert_eq!(b.status, ResponseStatus::Failure, "{bad}");
        assert!(b.objects.is_empty(), "{bad}");
        assert_eq!(b.errors[0].error_code, ErrorCode::XDSRegistryError, "{bad}");
    }
    // every answer left exactly one query record at A (refusals included)
    w.stop().await;
}
