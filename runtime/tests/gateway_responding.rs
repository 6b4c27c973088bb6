//! The responding side over the real HTTP/TLS stack (issue 3 and 4): `home` on everything returned
//! and the homeCommunityId errors; canonical answers whatever quirks the local TLB node has; consent
//! with the Mitz simulator (only Permit discloses; every failure discloses nothing, looks like "no
//! data" and is audited with its reason); the requester's organisation checked against the client
//! certificate, and a platform gateway speaking for an organisation it is configured for.

mod common;
mod gateway_support;
mod sim_support;

use std::collections::BTreeSet;

use duo_runtime::audit::{AuditEvent, AuditRecord, Outcome, Side};
use duo_runtime::config::{CommunityOrganization, TlsConfig};
use duo_runtime::consent::Decision;
use duo_runtime::gateway::responding::push_document;
use duo_runtime::ihe::ebrim::ResponseStatus;
use duo_runtime::ihe::mtom::{self, MtomLimits};
use duo_runtime::ihe::query::ReturnType;
use duo_runtime::ihe::retrieve::{
    Content, DocumentRequest, RetrieveDocumentSetRequest, RetrieveDocumentSetResponse,
    RetrieveImagingDocumentSetRequest,
};
use duo_runtime::ihe::soap::Transaction;
use duo_runtime::ihe::{FaultCode, read_soap};
use duo_runtime::model::{Bsn, HomeCommunityId, Ura};
use duo_runtime::pki::generate::Ca;
use duo_runtime::tls::TlsMaterial;
use duo_runtime::xml::Limits;
use duo_testkit::sim::faults::{Faults, RetrieveEncoding};
use duo_testkit::sim::mitz::{ConsentRule, FaultRule, MitzSimConfig};
use duo_testkit::sim::seed::{SeededStudy, sha256_hex};
use gateway_support::*;

const OTHER: &str = "urn:oid:2.16.528.1.1007.99.405.1";

fn ts() -> Vec<String> {
    vec![duo_runtime::dicom::transfer_syntax::EXPLICIT_VR_LITTLE_ENDIAN.to_owned()]
}

/// Hospital A (XDS, the asking side), B (XDS) and C (TLB), 2 studies each.
async fn abc() -> World {
    build(options(
        vec![
            spec("A", Kind::Xds, 2, Decision::Permit),
            spec("B", Kind::Xds, 2, Decision::Permit),
            spec("C", Kind::Tlb, 2, Decision::Permit),
        ],
        LocalizationMode::Mitz,
    ))
    .await
}

fn manifests(study: &[SeededStudy], home: Option<&HomeCommunityId>) -> RetrieveDocumentSetRequest {
    RetrieveDocumentSetRequest {
        documents: study
            .iter()
            .map(|s| DocumentRequest {
                home_community_id: home.cloned(),
                repository_unique_id: s.repository_unique_id.clone(),
                document_unique_id: s.manifest.unique_id.clone(),
            })
            .collect(),
    }
}

fn images(s: &SeededStudy, home: Option<&HomeCommunityId>) -> RetrieveImagingDocumentSetRequest {
    let ts = ts();
    let refs: Vec<&str> = ts.iter().map(String::as_str).collect();
    s.imaging_request(home, &refs)
}

fn inline(d: &duo_runtime::ihe::retrieve::DocumentResponse) -> &[u8] {
    match &d.content {
        Content::Inline(b) => b,
        Content::Include(c) => panic!("unresolved {c}"),
    }
}

/// A canonical retrieve answer: MTOM (`multipart/related` of XOP), one binary part per document
/// referenced by an `xop:Include` (never inline base64), the body valid against the XDS.b schema.
/// Returns it with the documents resolved.
fn canonical_retrieve(a: &Answer, tx: Transaction) -> RetrieveDocumentSetResponse {
    assert_eq!(a.status, 200, "{}", a.text());
    let ct = a.content_type.to_ascii_lowercase();
    assert!(
        ct.starts_with("multipart/related") && ct.contains("application/xop+xml"),
        "{tx}: {ct}"
    );
    let (root, parts) =
        mtom::soap_envelope(&a.content_type, a.body.clone(), &MtomLimits::default()).unwrap();
    let (_, raw) = read_soap::<RetrieveDocumentSetResponse>(&root, &Limits::default()).unwrap();
    assert!(
        raw.documents
            .iter()
            .all(|d| matches!(d.content, Content::Include(_))),
        "{tx}: documents as xop:Include"
    );
    assert_eq!(
        parts.len(),
        raw.documents.len(),
        "{tx}: one part per document"
    );
    sim_support::validate_retrieve(
        &sim_support::Answer {
            status: a.status,
            content_type: a.content_type.clone(),
            body: a.body.clone(),
        },
        &format!("{tx} answer"),
    );
    a.retrieve(tx)
}

#[tokio::test]
async fn home_is_set_on_everything_and_community_ids_are_checked() {
    let w = abc().await;
    let r = requester(&w, 0);
    let bsn = w.patient.bsn.clone();
    for i in [1, 2] {
        let h = &w.hospitals[i];
        let home = h.home.clone();
        // the TLB node leaves `home` off (a peer breaking ITI TF-2b 3.38.4.1.2.1); XDS never has it
        h.control.set_faults(Faults {
            omit_home: true,
            ..Faults::default()
        });
        for rt in [ReturnType::LeafClass, ReturnType::ObjectRef] {
            for at in [None, Some(home.to_string())] {
                let q = to_gateway(
                    &w,
                    0,
                    i,
                    Transaction::Iti38,
                    &r,
                    Some(&bsn),
                    &find_documents(&bsn, at.as_deref(), rt),
                )
                .await
                .query(Transaction::Iti38);
                assert_eq!(q.status, ResponseStatus::Success, "{i} {rt:?} {at:?}");
                assert_eq!(q.objects.len(), 4);
                assert!(
                    q.objects.iter().all(|o| o.home() == Some(&home)),
                    "{i} {rt:?}: every object carries {home}"
                );
            }
        }
        // a query by id names this gateway's community: answered, with home
        let uid = h.studies[0].manifest.unique_id.clone();
        let q = to_gateway(
            &w,
            0,
            i,
            Transaction::Iti38,
            &r,
            Some(&bsn),
            &get_documents(&[uid.as_str()], Some(&home.to_string())),
        )
        .await
        .query(Transaction::Iti38);
        assert_eq!(
            (q.status, q.objects.len()),
            (ResponseStatus::Success, 1),
            "{i}"
        );
        assert_eq!(q.objects[0].home(), Some(&home));
        // ITI-39 and RAD-75: HomeCommunityId on every DocumentResponse, the exact bytes
        let a = to_gateway(
            &w,
            0,
            i,
            Transaction::Iti39,
            &r,
            Some(&bsn),
            &manifests(&h.studies, Some(&home)),
        )
        .await;
        let resp = canonical_retrieve(&a, Transaction::Iti39);
        assert_eq!(
            resp.response.status,
            ResponseStatus::Success,
            "{:?}",
            resp.response
        );
        assert_eq!(resp.documents.len(), 2);
        for (d, s) in resp.documents.iter().zip(&h.studies) {
            assert_eq!(d.meta.home_community_id.as_ref(), Some(&home));
            assert_eq!(sha256_hex(inline(d)), s.manifest.sha256);
        }
        let st = &h.studies[1];
        let a = to_gateway(
            &w,
            0,
            i,
            Transaction::Rad75,
            &r,
            Some(&bsn),
            &images(st, Some(&home)),
        )
        .await;
        let resp = canonical_retrieve(&a, Transaction::Rad75);
        assert_eq!(
            resp.response.status,
            ResponseStatus::Success,
            "{:?}",
            resp.response
        );
        assert_eq!(resp.documents.len(), st.instances.len());
        for d in &resp.documents {
            assert_eq!(d.meta.home_community_id.as_ref(), Some(&home));
            let want = st.instance(&d.meta.document_unique_id).unwrap();
            assert_eq!(sha256_hex(inline(d)), want.sha256);
        }
        h.control.reset_faults();

        // another community named: XDSUnknownCommunity; none named for a query by id or a retrieve:
        // XDSMissingHomeCommunityId; the local community is not asked
        let before = h.control.total_requests();
        let other: HomeCommunityId = OTHER.parse().unwrap();
        let q = to_gateway(
            &w,
            0,
            i,
            Transaction::Iti38,
            &r,
            Some(&bsn),
            &find_documents(&bsn, Some(OTHER), ReturnType::LeafClass),
        )
        .await
        .query(Transaction::Iti38);
        assert_eq!(q.status, ResponseStatus::Failure);
        assert_eq!(q.errors[0].error_code.as_str(), "XDSUnknownCommunity");
        let q = to_gateway(
            &w,
            0,
            i,
            Transaction::Iti38,
            &r,
            Some(&bsn),
            &get_documents(&[uid.as_str()], None),
        )
        .await
        .query(Transaction::Iti38);
        assert_eq!(q.status, ResponseStatus::Failure);
        assert_eq!(
            errors(&q.errors),
            [("XDSMissingHomeCommunityId".to_string(), home.to_string())]
        );
        for (req_home, code) in [
            (Some(&other), "XDSUnknownCommunity"),
            (None, "XDSMissingHomeCommunityId"),
        ] {
            let a = to_gateway(
                &w,
                0,
                i,
                Transaction::Iti39,
                &r,
                Some(&bsn),
                &manifests(&h.studies, req_home),
            )
            .await
            .retrieve(Transaction::Iti39);
            assert_eq!(a.response.status, ResponseStatus::Failure, "{code}");
            assert!(a.documents.is_empty());
            assert_eq!(a.response.errors.len(), 2);
            assert!(
                a.response
                    .errors
                    .iter()
                    .all(|e| e.error_code.as_str() == code),
                "{:?}",
                a.response.errors
            );
            let a = to_gateway(
                &w,
                0,
                i,
                Transaction::Rad75,
                &r,
                Some(&bsn),
                &images(st, req_home),
            )
            .await
            .retrieve(Transaction::Rad75);
            assert_eq!(a.response.status, ResponseStatus::Failure, "{code}");
            assert!(a.documents.is_empty());
            assert!(
                a.response
                    .errors
                    .iter()
                    .all(|e| e.error_code.as_str() == code),
                "{:?}",
                a.response.errors
            );
        }
        assert_eq!(
            h.control.total_requests(),
            before,
            "local community not asked"
        );
    }
    w.stop().await;
}

/// `xml` with the ids of Classifications and ExternalIdentifiers blanked: a registry mints them per
/// answer (ebRIM 3.0 lets it), so only they may differ between two answers about the same entries.
fn stable_ids(xml: &str) -> String {
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(p) = rest.find(" id=\"") {
        let tag_start = rest[..p].rfind('<').unwrap_or(0);
        let tag = &rest[tag_start..p];
        let value_start = p + 5;
        let value_end = value_start + rest[value_start..].find('"').unwrap();
        out.push_str(&rest[..value_start]);
        if tag.ends_with(":Classification") || tag.ends_with(":ExternalIdentifier") {
            out.push('*');
        } else {
            out.push_str(&rest[value_start..value_end]);
        }
        rest = &rest[value_end..];
    }
    out.push_str(rest);
    out
}

fn first_difference(a: &str, b: &str) -> Option<usize> {
    let n = a
        .bytes()
        .zip(b.bytes())
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    (n < a.len().max(b.len())).then_some(n)
}

#[tokio::test]
async fn quirky_local_tlb_node_still_gives_canonical_answers() {
    let w = abc().await;
    let r = requester(&w, 0);
    let bsn = w.patient.bsn.clone();
    let c = &w.hospitals[2];
    let home = c.home.clone();
    let query = find_documents(&bsn, None, ReturnType::LeafClass);
    let iti38 = || to_gateway(&w, 0, 2, Transaction::Iti38, &r, Some(&bsn), &query);
    let plain = iti38().await;
    let plain_body = stable_ids(&common::body_of(&plain.body));
    sim_support::validate_envelope(
        &plain.body,
        &[sim_support::QUERY_IPF, sim_support::QUERY_NIST],
        "ITI-38 answer",
    );
    let quirks = [
        Faults {
            foreign_prefixes: true,
            ..Faults::default()
        },
        Faults {
            retrieve_encoding: RetrieveEncoding::PlainSoapBase64,
            ..Faults::default()
        },
        Faults {
            retrieve_encoding: RetrieveEncoding::MtomBase64Root,
            ..Faults::default()
        },
        Faults {
            foreign_prefixes: true,
            omit_home: true,
            retrieve_encoding: RetrieveEncoding::MtomBase64Root,
            ..Faults::default()
        },
    ];
    for f in quirks {
        c.control.set_faults(f.clone());
        // the query answer is the same document as without the quirk
        let q = iti38().await;
        assert_eq!(q.status, 200);
        let quirky_body = stable_ids(&common::body_of(&q.body));
        if let Some(at) = first_difference(&quirky_body, &plain_body) {
            panic!(
                "{f:?}: the answer differs from the plain one at byte {at}: {:?} vs {:?}",
                &quirky_body[at.saturating_sub(80)..(at + 80).min(quirky_body.len())],
                &plain_body[at.saturating_sub(80)..(at + 80).min(plain_body.len())]
            );
        }
        // retrieves come out as MTOM with XOP parts and the exact bytes
        let a = to_gateway(
            &w,
            0,
            2,
            Transaction::Iti39,
            &r,
            Some(&bsn),
            &manifests(&c.studies, Some(&home)),
        )
        .await;
        let resp = canonical_retrieve(&a, Transaction::Iti39);
        assert_eq!(resp.response.status, ResponseStatus::Success, "{f:?}");
        for (d, s) in resp.documents.iter().zip(&c.studies) {
            assert_eq!(sha256_hex(inline(d)), s.manifest.sha256, "{f:?}");
            assert_eq!(d.meta.home_community_id.as_ref(), Some(&home));
        }
        let st = &c.studies[0];
        let a = to_gateway(
            &w,
            0,
            2,
            Transaction::Rad75,
            &r,
            Some(&bsn),
            &images(st, Some(&home)),
        )
        .await;
        let resp = canonical_retrieve(&a, Transaction::Rad75);
        assert_eq!(resp.response.status, ResponseStatus::Success, "{f:?}");
        assert_eq!(resp.documents.len(), st.instances.len());
        for d in &resp.documents {
            let want = st.instance(&d.meta.document_unique_id).unwrap();
            assert_eq!(sha256_hex(inline(d)), want.sha256, "{f:?}");
        }
    }
    w.stop().await;
}

/// A valid BSN (11-check) other than `not`, for a patient of whom nobody holds data.
fn other_bsn(not: &Bsn) -> Bsn {
    (100_000_000u32..)
        .filter_map(|n| n.to_string().parse::<Bsn>().ok())
        .find(|b| b != not)
        .unwrap()
}

/// `text` with every occurrence of `from[i]` replaced by `to[i]`, and MessageIDs blanked.
fn normalised(text: &str, from: &[String], to: &[String]) -> String {
    let mut t = text.to_owned();
    for (f, x) in from.iter().zip(to) {
        t = t.replace(f.as_str(), x);
    }
    t
}

/// The document request of `req` with its uniqueIds replaced by ones nobody holds.
fn unknown_uids(uids: &[String]) -> Vec<String> {
    (0..uids.len())
        .map(|i| format!("2.25.{}", 900_000_000_000u64 + i as u64))
        .collect()
}

/// What the responding gateway must show when consent is not given: the body of an answer is the same
/// as for a request about data nobody holds.
struct Probe {
    iti38: Answer,
    iti39: Answer,
    rad75: Answer,
}

async fn probe(w: &World, bsn: &Bsn) -> Probe {
    let r = requester(w, 0);
    let b = &w.hospitals[1];
    Probe {
        iti38: to_gateway(
            w,
            0,
            1,
            Transaction::Iti38,
            &r,
            Some(bsn),
            &find_documents(bsn, None, ReturnType::LeafClass),
        )
        .await,
        iti39: to_gateway(
            w,
            0,
            1,
            Transaction::Iti39,
            &r,
            Some(bsn),
            &manifests(&b.studies, Some(&b.home)),
        )
        .await,
        rad75: to_gateway(
            w,
            0,
            1,
            Transaction::Rad75,
            &r,
            Some(bsn),
            &images(&b.studies[0], Some(&b.home)),
        )
        .await,
    }
}

/// The same requests about things nobody holds: a patient without data (ITI-38, RAD-75 of an unknown
/// study) whose consent Mitz permits, and unknown documents (ITI-39).
async fn probe_nothing(w: &World, bsn: &Bsn, nobody: &Bsn) -> (Probe, Vec<String>, Vec<String>) {
    let r = requester(w, 0);
    let b = &w.hospitals[1];
    let mut docs = manifests(&b.studies, Some(&b.home));
    let real_docs: Vec<String> = docs
        .documents
        .iter()
        .map(|d| d.document_unique_id.clone())
        .collect();
    let fake_docs = unknown_uids(&real_docs);
    for (d, f) in docs.documents.iter_mut().zip(&fake_docs) {
        d.document_unique_id = f.clone();
    }
    let mut img = images(&b.studies[0], Some(&b.home));
    let mut real_img = vec![img.studies[0].study_instance_uid.clone()];
    let mut fake_img = vec!["2.25.800000000000".to_owned()];
    img.studies[0].study_instance_uid = fake_img[0].clone();
    let mut n = 0;
    for se in &mut img.studies[0].series {
        for d in &mut se.documents {
            real_img.push(d.document_unique_id.clone());
            n += 1;
            let f = format!("2.25.{}", 700_000_000_000u64 + n);
            fake_img.push(f.clone());
            d.document_unique_id = f;
        }
    }
    let p = Probe {
        iti38: to_gateway(
            w,
            0,
            1,
            Transaction::Iti38,
            &r,
            Some(nobody),
            &find_documents(nobody, None, ReturnType::LeafClass),
        )
        .await,
        iti39: to_gateway(w, 0, 1, Transaction::Iti39, &r, Some(bsn), &docs).await,
        rad75: to_gateway(w, 0, 1, Transaction::Rad75, &r, Some(nobody), &img).await,
    };
    // map the fake ids of the answers back onto the real ones, so the texts compare
    let mut from = fake_docs;
    from.extend(fake_img);
    let mut to = real_docs;
    to.append(&mut real_img);
    (p, from, to)
}

/// The root SOAP body of a (possibly MTOM) answer as text.
fn root_body(a: &Answer) -> String {
    let (root, _) =
        mtom::soap_envelope(&a.content_type, a.body.clone(), &MtomLimits::default()).unwrap();
    common::body_of(&root)
}

/// The consent records of `patient` at a gateway since `from`.
fn consent_records(all: &[AuditRecord], from: usize, patient: &Bsn) -> Vec<AuditRecord> {
    all[from..]
        .iter()
        .filter(|r| r.event == AuditEvent::ConsentDecision && r.patient.as_ref() == Some(patient))
        .cloned()
        .collect()
}

/// (case, Mitz's decision for the patient, fault injected for the patient, decision expected at the
/// gateway, its source, words of the reason the audit record must give)
type Case = (
    &'static str,
    Decision,
    Option<FaultRule>,
    Decision,
    &'static str,
    &'static str,
);

#[tokio::test]
async fn only_permit_discloses_and_every_refusal_looks_like_no_data() {
    let mut w = abc().await;
    let bsn = w.patient.bsn.clone();
    let nobody = other_bsn(&bsn);
    let a_ura: Ura = w.hospitals[0].spec.ura.clone();
    let b_ura: Ura = w.hospitals[1].spec.ura.clone();
    let b_home = w.hospitals[1].home.to_string();
    let category = w.hospitals[1].config.consent.category.clone();
    let rule = |patient: &Bsn, d: Decision| ConsentRule {
        patient: patient.clone(),
        holder: b_ura.clone(),
        requester: Some(a_ura.clone()),
        category: Some(category.clone()),
        decision: d,
    };
    let fault = |delay_ms: u64, http_status: Option<u16>, garbage: bool| FaultRule {
        patient: bsn.clone(),
        delay_ms,
        http_status,
        garbage,
    };
    let cases: Vec<Case> = vec![
        (
            "permit",
            Decision::Permit,
            None,
            Decision::Permit,
            "mitz",
            "Consent granted",
        ),
        (
            "deny",
            Decision::Deny,
            None,
            Decision::Deny,
            "mitz",
            "No consent found",
        ),
        (
            "not-applicable",
            Decision::NotApplicable,
            None,
            Decision::NotApplicable,
            "mitz",
            "No applicable consent",
        ),
        (
            "indeterminate",
            Decision::Indeterminate,
            None,
            Decision::Indeterminate,
            "mitz",
            "Could not be evaluated",
        ),
        (
            "timeout",
            Decision::Permit,
            Some(fault(1_500, None, false)),
            Decision::Indeterminate,
            "failure",
            "timeout: no answer from Mitz within 300 ms",
        ),
        (
            "http-500",
            Decision::Permit,
            Some(fault(0, Some(500), false)),
            Decision::Indeterminate,
            "failure",
            "Mitz answered HTTP 500",
        ),
        (
            "garbage",
            Decision::Permit,
            Some(fault(0, None, true)),
            Decision::Indeterminate,
            "failure",
            "unparseable answer from Mitz",
        ),
        (
            "tls",
            Decision::Permit,
            None,
            Decision::Indeterminate,
            "failure",
            "TLS error talking to Mitz",
        ),
    ];
    let other_ca = Ca::new("Not the Mitz CA").unwrap();
    for (case, decision, fault, expected, source, reason) in cases {
        let mut cfg: MitzSimConfig = w.mitz_config.clone();
        cfg.consents.push(rule(&bsn, decision));
        cfg.consents.push(rule(&nobody, Decision::Permit));
        cfg.faults.extend(fault);
        let mitz = if case == "tls" {
            // Mitz presents a certificate of a CA the gateway does not trust
            let c = other_ca
                .issue(&world::plain_spec("Mitz elsewhere", &["localhost"]))
                .unwrap();
            let dir = w.dir.path();
            std::fs::write(dir.join("mitz-other.crt"), &c.cert_pem).unwrap();
            std::fs::write(dir.join("mitz-other.key"), &c.key_pem).unwrap();
            let tls = TlsMaterial::load(&TlsConfig {
                cert_file: dir.join("mitz-other.crt"),
                key_file: dir.join("mitz-other.key"),
                trust_bundle_file: w.ca_file.clone(),
            })
            .unwrap();
            duo_testkit::sim::mitz::start(cfg, "127.0.0.1:0".parse().unwrap(), &tls)
                .await
                .unwrap()
        } else {
            start_mitz(&w, &format!("mitz-{case}"), cfg).await
        };
        use_mitz(&mut w, 1, mitz.local_addr().port(), 300, 0).await;
        let b = &w.hospitals[1];
        let audit_from = audit(b).len();
        let disclosed_before = metric_of(b, "duo_disclosures_total", &[]).await;

        let got = probe(&w, &bsn).await;
        let all = audit(b);
        let q = got.iti38.query(Transaction::Iti38);
        let i39 = got.iti39.retrieve(Transaction::Iti39);
        let r75 = got.rad75.retrieve(Transaction::Rad75);
        let disclosed = metric_of(b, "duo_disclosures_total", &[]).await - disclosed_before;
        if expected == Decision::Permit {
            assert_eq!(q.status, ResponseStatus::Success, "{case}");
            assert_eq!(q.objects.len(), 4, "{case}");
            assert_eq!(i39.documents.len(), 2, "{case}");
            assert_eq!(r75.documents.len(), b.studies[0].instances.len(), "{case}");
            assert_eq!(disclosed, 3.0, "{case}");
        } else {
            // nothing disclosed, and nothing tells the requester that there was something
            assert_eq!(q.status, ResponseStatus::Success, "{case}: {:?}", q.errors);
            assert!(q.objects.is_empty() && q.errors.is_empty(), "{case}");
            assert!(i39.documents.is_empty(), "{case}");
            assert!(r75.documents.is_empty(), "{case}");
            assert_eq!(disclosed, 0.0, "{case}");
            let (none, from, to) = probe_nothing(&w, &bsn, &nobody).await;
            for (what, x, y) in [
                ("ITI-38", &got.iti38, &none.iti38),
                ("ITI-39", &got.iti39, &none.iti39),
                ("RAD-75", &got.rad75, &none.rad75),
            ] {
                assert_eq!(x.status, y.status, "{case} {what}");
                assert_eq!(
                    root_body(x),
                    normalised(&root_body(y), &from, &to),
                    "{case} {what}: the refusal differs from an answer about nothing"
                );
            }
        }

        // every decision is audited with its reason; the query record says what was disclosed
        let decisions = consent_records(&all, audit_from, &bsn);
        assert_eq!(
            decisions.len(),
            3,
            "{case}: ITI-38, ITI-39, RAD-75 each asked once"
        );
        for d in &decisions {
            let c = d.consent.as_ref().unwrap();
            assert_eq!(c.decision, expected, "{case}");
            assert_eq!(c.source, source, "{case}");
            assert_eq!(c.disclosed, expected == Decision::Permit, "{case}");
            assert!(
                c.reason.as_deref().unwrap_or("").contains(reason),
                "{case}: {c:?}"
            );
            assert_eq!(d.side, Side::Responding);
            assert_eq!(d.requester.as_ref().unwrap().ura, a_ura);
            let holder = d.data_holder.as_ref().unwrap();
            assert_eq!(
                holder.home_community_id.as_ref().unwrap().to_string(),
                b_home
            );
            if expected != Decision::Permit {
                assert_eq!(d.outcome, Outcome::Denied, "{case}");
                assert!(
                    d.outcome_detail.as_deref().unwrap_or("").contains(reason),
                    "{case}: {d:?}"
                );
            }
        }
        let query = all[audit_from..]
            .iter()
            .find(|x| x.event == AuditEvent::Query && x.patient.as_ref() == Some(&bsn))
            .unwrap();
        if expected == Decision::Permit {
            assert_eq!(query.outcome, Outcome::Success);
            assert_eq!(query.document_ids.len(), 4);
        } else {
            assert_eq!(query.outcome, Outcome::Denied, "{case}");
            assert!(query.document_ids.is_empty());
        }

        // the requester's timeline shows nothing of B and no error about B either
        let t = timeline(&w, 0, &requester(&w, 0), bsn.as_str())
            .await
            .json();
        let from_b: BTreeSet<String> = studies(&t)
            .into_iter()
            .filter(|(_, homes)| homes.contains(&b_home))
            .map(|(s, _)| s)
            .collect();
        if expected == Decision::Permit {
            assert_eq!(from_b.len(), 2, "{case}");
        } else {
            assert!(from_b.is_empty(), "{case}: {from_b:?}");
        }
        assert!(
            timeline_errors(&t).iter().all(|(_, l)| l != &b_home),
            "{case}: {t}"
        );
        mitz.shutdown().await;
    }
    w.stop().await;
}

#[tokio::test]
async fn requester_organisation_must_be_the_certificates_or_one_it_speaks_for() {
    let mut w = abc().await;
    let bsn = w.patient.bsn.clone();
    let r = requester(&w, 0);
    let platform_org: Ura = "10000077".parse().unwrap();
    let stranger_org: Ura = "10000078".parse().unwrap();
    let query = find_documents(&bsn, None, ReturnType::LeafClass);
    let b = 1;
    let sim_before = w.hospitals[b].control.total_requests();
    let mitz_before = w.mitz.stats().closed_questions;

    // A's certificate, C's organisation in the assertion: refused before anything is read
    let c_org = w.hospitals[2].spec.ura.clone();
    let claims = for_organisation(&r, &c_org);
    for (tx, a) in [
        (
            Transaction::Iti38,
            to_gateway(&w, 0, b, Transaction::Iti38, &claims, Some(&bsn), &query).await,
        ),
        (
            Transaction::Iti39,
            to_gateway(
                &w,
                0,
                b,
                Transaction::Iti39,
                &claims,
                Some(&bsn),
                &manifests(&w.hospitals[b].studies, Some(&w.hospitals[b].home)),
            )
            .await,
        ),
        (
            Transaction::Rad75,
            to_gateway(
                &w,
                0,
                b,
                Transaction::Rad75,
                &claims,
                Some(&bsn),
                &images(&w.hospitals[b].studies[0], Some(&w.hospitals[b].home)),
            )
            .await,
        ),
    ] {
        assert_eq!(a.status, 400, "{tx}: {}", a.text());
        let f = a.fault();
        assert_eq!(f.code, FaultCode::Sender, "{tx}");
        assert!(
            f.reason.contains(c_org.as_str()) && f.reason.contains("does not match"),
            "{tx}: {}",
            f.reason
        );
    }
    // a certificate without a URA (the viewer front end's) may not speak for anyone
    let url = format!("{}/xca/iti38", w.hospitals[b].gateway_url());
    let a = soap(
        &front_end(&w, 0),
        &url,
        Transaction::Iti38,
        vec![xua(&r, Some(&bsn), &w.hospitals[b].home.to_string())],
        &query,
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.text());
    assert_eq!(a.fault().code, FaultCode::Sender);
    let m = metrics_text(&w.hospitals[b]).await;
    assert_eq!(
        metric(&m, "duo_requests_total", &[("outcome", "refused")]),
        4.0
    );
    // every refusal leaves an audit record: failure, the reason, the caller's address
    let refusals: Vec<AuditRecord> = audit(&w.hospitals[b])
        .into_iter()
        .filter(|r| {
            r.outcome == Outcome::Failure
                && r.outcome_detail
                    .as_deref()
                    .is_some_and(|d| d.starts_with("refused"))
        })
        .collect();
    assert_eq!(refusals.len(), 4, "{refusals:#?}");
    assert!(
        refusals
            .iter()
            .all(|r| r.side == Side::Responding && r.remote_address.as_deref() == Some("127.0.0.1")),
        "{refusals:#?}"
    );
    assert_eq!(
        w.hospitals[b].control.total_requests(),
        sim_before,
        "nothing read"
    );
    assert_eq!(
        w.mitz.stats().closed_questions,
        mitz_before,
        "Mitz not asked"
    );

    // A is a platform gateway: B is configured to let A's certificate speak for another organisation
    let a_home = w.hospitals[0].home.clone();
    let a_ura = w.hospitals[0].spec.ura.clone();
    let platform = for_organisation(&r, &platform_org);
    // listing the organisation without naming the certificate's URA is not enough
    w.reconfigure(b, |c| {
        let e = c
            .communities
            .iter_mut()
            .find(|x| x.home_community_id == a_home)
            .unwrap();
        e.certificate_ura = None;
        e.organizations.push(CommunityOrganization {
            ura: platform_org.clone(),
            name: "Kliniek via platform".into(),
        });
    })
    .await
    .unwrap();
    let a = to_gateway(&w, 0, b, Transaction::Iti38, &platform, Some(&bsn), &query).await;
    assert_eq!(a.status, 400, "{}", a.text());
    w.reconfigure(b, |c| {
        let e = c
            .communities
            .iter_mut()
            .find(|x| x.home_community_id == a_home)
            .unwrap();
        e.certificate_ura = Some(a_ura.clone());
    })
    .await
    .unwrap();
    let q = to_gateway(&w, 0, b, Transaction::Iti38, &platform, Some(&bsn), &query)
        .await
        .query(Transaction::Iti38);
    assert_eq!(q.status, ResponseStatus::Success, "{:?}", q.errors);
    assert_eq!(
        q.objects.len(),
        4,
        "consent asked for the platform's organisation, Permit"
    );
    let last = audit(&w.hospitals[b])
        .into_iter()
        .rev()
        .find(|x| x.event == AuditEvent::ConsentDecision)
        .unwrap();
    assert_eq!(
        last.requester.unwrap().ura,
        platform_org,
        "asked for whom it speaks"
    );
    // an organisation the platform is not configured for stays refused
    let a = to_gateway(
        &w,
        0,
        b,
        Transaction::Iti38,
        &for_organisation(&r, &stranger_org),
        Some(&bsn),
        &query,
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.text());
    // and C's certificate may not use A's platform organisations
    let a = to_gateway(&w, 2, b, Transaction::Iti38, &platform, Some(&bsn), &query).await;
    assert_eq!(a.status, 400, "{}", a.text());
    w.stop().await;
}

#[tokio::test]
async fn consent_for_one_patient_opens_nothing_of_another() {
    let mut w = abc().await;
    let patient = w.patient.bsn.clone();
    let other = other_bsn(&patient);
    let (a_ura, b_ura) = (
        w.hospitals[0].spec.ura.clone(),
        w.hospitals[1].spec.ura.clone(),
    );
    let category = w.hospitals[1].config.consent.category.clone();
    // A may see B's data of `other` (who has none), not of the patient
    let mut cfg = w.mitz_config.clone();
    for (p, d) in [(&patient, Decision::Deny), (&other, Decision::Permit)] {
        cfg.consents.push(ConsentRule {
            patient: p.clone(),
            holder: b_ura.clone(),
            requester: Some(a_ura.clone()),
            category: Some(category.clone()),
            decision: d,
        });
    }
    let mitz = start_mitz(&w, "mitz-deputy", cfg).await;
    use_mitz(&mut w, 1, mitz.local_addr().port(), 3_000, 0).await;
    let r = requester(&w, 0);
    let b = &w.hospitals[1];
    let disclosed = metric_of(b, "duo_disclosures_total", &[]).await;
    // the patient's manifests and images, asked with an assertion naming the permitted patient
    let i39 = to_gateway(
        &w,
        0,
        1,
        Transaction::Iti39,
        &r,
        Some(&other),
        &manifests(&b.studies, Some(&b.home)),
    )
    .await
    .retrieve(Transaction::Iti39);
    assert!(i39.documents.is_empty(), "{:?}", i39.response);
    assert!(
        i39.response
            .errors
            .iter()
            .all(|e| e.error_code.as_str() == "XDSDocumentUniqueIdError")
    );
    let r75 = to_gateway(
        &w,
        0,
        1,
        Transaction::Rad75,
        &r,
        Some(&other),
        &images(&b.studies[0], Some(&b.home)),
    )
    .await
    .retrieve(Transaction::Rad75);
    assert!(r75.documents.is_empty(), "{:?}", r75.response);
    // the patient's entries, asked in a query about the patient with an assertion naming the other
    let q = to_gateway(
        &w,
        0,
        1,
        Transaction::Iti38,
        &r,
        Some(&other),
        &find_documents(&patient, None, ReturnType::LeafClass),
    )
    .await
    .query(Transaction::Iti38);
    assert!(q.objects.is_empty());
    // a query by id finds the documents' patient in the registry and asks about that one
    let uids: Vec<&str> = b
        .studies
        .iter()
        .map(|s| s.manifest.unique_id.as_str())
        .collect();
    let q = to_gateway(
        &w,
        0,
        1,
        Transaction::Iti38,
        &r,
        Some(&other),
        &get_documents(&uids, Some(&b.home.to_string())),
    )
    .await
    .query(Transaction::Iti38);
    assert_eq!(q.status, ResponseStatus::Success, "{:?}", q.errors);
    assert!(q.objects.is_empty(), "{:?}", q.objects);
    // and without any patient in the assertion, ITI-39 asks about the documents' own patient
    let i39 = to_gateway(
        &w,
        0,
        1,
        Transaction::Iti39,
        &r,
        None,
        &manifests(&b.studies, Some(&b.home)),
    )
    .await
    .retrieve(Transaction::Iti39);
    assert!(i39.documents.is_empty());
    assert_eq!(metric_of(b, "duo_disclosures_total", &[]).await, disclosed);
    mitz.shutdown().await;
    w.stop().await;
}

#[tokio::test]
async fn only_the_hospital_and_its_trusted_front_end_use_the_initiating_side() {
    let w = abc().await;
    let bsn = w.patient.bsn.clone();
    let r = requester(&w, 0);
    let url = format!(
        "{}/api/v1/patients/{bsn}/timeline",
        w.hospitals[0].gateway_url()
    );
    let get = |client: reqwest::Client, headers: bool| {
        let url = url.clone();
        let r = r.clone();
        async move {
            let mut req = client.get(url);
            if headers {
                req = req
                    .header("X-DUO-Requester-UZI", r.uzi.as_str())
                    .header("X-DUO-Requester-Role", r.role.as_str());
            }
            req.send().await.unwrap().status().as_u16()
        }
    };
    // another hospital's gateway is no local consumer; a local one must say who asks
    assert_eq!(get(gateway_client(&w, 1), true).await, 403);
    assert_eq!(get(front_end(&w, 0), false).await, 400);
    assert_eq!(get(front_end(&w, 1), true).await, 403, "B's viewer at A");
    let a = timeline(&w, 0, &r, "123456789").await;
    assert_eq!(a.status, 400, "BSN 11-check: {}", a.text());
    // ITI-18 from another gateway's certificate, or with another organisation's assertion
    let find = find_documents(&bsn, None, ReturnType::LeafClass);
    let u = format!("{}/xds/iti18", w.hospitals[0].gateway_url());
    let a = soap(
        &gateway_client(&w, 1),
        &u,
        Transaction::Iti18,
        vec![xua(&requester(&w, 1), Some(&bsn), "x")],
        &find,
    )
    .await;
    assert_eq!((a.status, a.fault().code), (400, FaultCode::Sender));
    let foreign = for_organisation(&r, &w.hospitals[2].spec.ura);
    let a = local(&w, 0, Transaction::Iti18, Some(&foreign), Some(&bsn), &find).await;
    assert_eq!((a.status, a.fault().code), (400, FaultCode::Sender));
    // the own front end without an assertion: no requester to state to other communities or to audit
    for tx in [Transaction::Iti18, Transaction::Iti43, Transaction::Rad69] {
        let a = match tx {
            Transaction::Iti18 => local(&w, 0, tx, None, Some(&bsn), &find).await,
            Transaction::Iti43 => {
                let req = RetrieveDocumentSetRequest {
                    documents: vec![DocumentRequest {
                        home_community_id: Some(w.hospitals[1].home.clone()),
                        repository_unique_id: "1.2.3".into(),
                        document_unique_id: "1.2.3.4".into(),
                    }],
                };
                local(&w, 0, tx, None, Some(&bsn), &req).await
            }
            _ => {
                let mut req = RetrieveImagingDocumentSetRequest {
                    studies: Vec::new(),
                    transfer_syntaxes: vec!["1.2.840.10008.1.2.1".into()],
                };
                push_document(
                    &mut req,
                    "1.2.3",
                    "1.2.3.1",
                    DocumentRequest {
                        home_community_id: Some(w.hospitals[1].home.clone()),
                        repository_unique_id: "1.2.3".into(),
                        document_unique_id: "1.2.3.1.1".into(),
                    },
                );
                local(&w, 0, tx, None, Some(&bsn), &req).await
            }
        };
        let f = a.fault();
        assert_eq!((a.status, f.code), (400, FaultCode::Sender), "{tx}");
        assert!(f.reason.contains("XUA assertion"), "{tx}: {}", f.reason);
    }
    let before = traffic(&w).await;
    assert_eq!(
        before.sims,
        vec![0, 0, 0],
        "nothing was asked on their behalf"
    );
    w.stop().await;
}
