//! Regression tests of issue 12 for the responding side's disclosure gate, one per defect, against a
//! local community that misbehaves on purpose and the Mitz simulator over mutual TLS: defect 1 (consent
//! bypass by query shape), defect 6 (RAD-75 series and instances checked by the backend only), defect 10
//! (audit records: purpose of use, only what left, exactly one record per answer). The generated suite
//! (`consent_suite`) covers the classes; these name the reported cases.

mod disclosure_support;

use std::sync::Arc;
use std::time::Duration;

use duo_runtime::audit::{AuditEvent, AuditRecord, Outcome, Side};
use duo_runtime::config::{ConsentMode, MitzConfig};
use duo_runtime::consent::{ConsentService, Decision, MitzClient};
use duo_runtime::ihe::ebrim::ResponseStatus;
use duo_runtime::ihe::mtom::{self, MtomLimits};
use duo_runtime::ihe::query::{
    AdhocQuery, AdhocQueryRequest, AdhocQueryResponse, ReturnType, StoredQuery, param,
};
use duo_runtime::ihe::retrieve::{
    DocumentRequest, RetrieveDocumentSetRequest, RetrieveDocumentSetResponse,
    RetrieveImagingDocumentSetRequest, SeriesRequest, StudyRequest,
};
use duo_runtime::ihe::soap::{SoapHeader, Transaction};
use duo_runtime::ihe::xua::{UnsignedAssertions, XuaAssertion};
use duo_runtime::ihe::{Message, read_soap, write_soap};
use duo_runtime::model::{Bsn, Requester};
use duo_runtime::tls::TlsMaterial;
use duo_runtime::xml::Limits;
use duo_testkit::sim::mitz::{ConsentRule, MitzSim, MitzSimConfig};
use serde_json::Value;

use disclosure_support::*;

/// Patients 0 and 1 permit the radiologist of ORG_X; patient 2 denies; the others have nothing on
/// record.
async fn mitz(w: &World) -> (MitzSim, ConsentService) {
    let holder: duo_runtime::model::Ura = HOLDER.parse().unwrap();
    let rule = |p: usize, decision: Decision| ConsentRule {
        patient: w.model.patients[p].bsn.clone(),
        holder: holder.clone(),
        requester: Some(ORG_X.parse().unwrap()),
        category: Some(CATEGORY.parse().unwrap()),
        decision,
    };
    let cfg = MitzSimConfig {
        consents: vec![
            rule(0, Decision::Permit),
            rule(1, Decision::Permit),
            rule(2, Decision::Deny),
        ],
        ..MitzSimConfig::default()
    };
    let server = w.pki.plain("mitz", "Mitz test", &["localhost"]).unwrap();
    let sim = duo_testkit::sim::mitz::start(
        cfg,
        "127.0.0.1:0".parse().unwrap(),
        &TlsMaterial::load(&server).unwrap(),
    )
    .await
    .unwrap();
    let client = MitzClient::with_tls(
        &MitzConfig {
            closed_question_url: format!(
                "https://localhost:{}/geslotenautorisatievraag/xacml3",
                sim.local_addr().port()
            ),
            open_question_url: None,
            subscription_url: None,
            tls: w.holder_tls.clone(),
            deadline_ms: 5_000,
            cache_seconds: 0,
            notification_client_names: Vec::new(),
        },
        &TlsMaterial::load(&w.holder_tls).unwrap(),
    )
    .unwrap();
    let svc = ConsentService::new(
        ConsentMode::Mitz,
        CATEGORY.parse().unwrap(),
        HOLDER.parse().unwrap(),
        "V6".parse().unwrap(),
        Some(Arc::new(client)),
        Duration::ZERO,
    );
    (sim, svc)
}

/// The radiologist of the requesting hospital (the client certificate's organisation), purpose TREAT.
fn radiologist() -> Requester {
    Requester {
        uzi: "000095254".parse().unwrap(),
        role: "01.015".parse().unwrap(),
        ura: ORG_X.parse().unwrap(),
        facility_type: "V6".parse().unwrap(),
        purpose_of_use: "TREAT".parse().unwrap(),
        name: None,
    }
}

fn envelope<T: Message>(tx: Transaction, patient: Option<&Bsn>, body: &T) -> String {
    let mut a = XuaAssertion::new(
        radiologist(),
        "urn:oid:2.16.528.1.1007.99.1",
        HOME,
        jiff::Timestamp::now(),
    );
    a.patient = patient.cloned();
    let mut h = SoapHeader::request(tx.request_action(), Some("https://localhost/"));
    h.other = vec![a.security_header(&UnsignedAssertions).unwrap()];
    write_soap(&h, body)
}

/// Sends `body` to a gateway around `hostility` and the Mitz simulator; returns the answer and the audit
/// trail (typed and as JSON).
async fn ask<T: Message>(
    w: &World,
    hostility: Hostility,
    tx: Transaction,
    patient: Option<&Bsn>,
    body: &T,
) -> (Reply, Vec<AuditRecord>, Vec<Value>) {
    let (sim, consent) = mitz(w).await;
    let (g, mem) = gateway_with(w, local(w, hostility), consent);
    let reply = in_process(Arc::new(g), w.peer.clone(), tx, envelope(tx, patient, body)).await;
    sim.shutdown().await;
    let json = mem
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (reply, mem.records(), json)
}

fn query(reply: &Reply) -> AdhocQueryResponse {
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    read_soap::<AdhocQueryResponse>(&reply.body, &Limits::default())
        .unwrap()
        .1
}

fn retrieved(reply: &Reply) -> RetrieveDocumentSetResponse {
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    mtom::read_retrieve_response(
        &reply.content_type,
        reply.body.clone(),
        &MtomLimits::default(),
    )
    .unwrap()
    .1
}

fn has(reply: &Reply, token: &str) -> bool {
    memchr::memmem::find(&reply.body, token.as_bytes()).is_some()
}

/// The responding query or retrieve records.
fn answers(records: &[AuditRecord], event: AuditEvent) -> Vec<&AuditRecord> {
    records
        .iter()
        .filter(|r| r.event == event && r.side == Side::Responding)
        .collect()
}

#[tokio::test]
async fn defect_1_a_permitted_patient_slot_opens_no_other_patients_entry() {
    let w = world();
    let (a, b) = (&w.model.patients[0], &w.model.patients[3]);
    // GetDocuments naming a document of B, with an extra $XDSDocumentEntryPatientId slot for A (who has
    // a Permit): a registry evaluates GetDocuments by id and ignores the patient slot
    let mut q = AdhocQuery::new(StoredQuery::GetDocuments);
    q.home = Some(HOME.parse().unwrap());
    q.add_list(
        param::DE_UNIQUE_ID,
        std::slice::from_ref(&b.docs[0].unique_id),
    );
    q.set_single(param::DE_PATIENT_ID, &a.bsn.to_cx());
    for rt in [ReturnType::LeafClass, ReturnType::ObjectRef] {
        let req = AdhocQueryRequest::new(q.clone(), rt);
        let (reply, records, _) = ask(
            &w,
            Hostility::default(),
            Transaction::Iti38,
            Some(&a.bsn),
            &req,
        )
        .await;
        let resp = query(&reply);
        assert_eq!(resp.status, ResponseStatus::Success, "{rt:?}");
        assert!(resp.objects.is_empty(), "{rt:?}: {:?}", resp.objects);
        assert!(
            !has(&reply, &b.docs[0].entry_uuid),
            "{rt:?}: B's entry left"
        );
        assert!(!has(&reply, b.bsn.as_str()), "{rt:?}: B's BSN left");
        // the audit does not file B's document under A (or anyone)
        for r in &records {
            assert!(
                !r.document_ids.contains(&b.docs[0].unique_id),
                "{rt:?}: {r:?}"
            );
        }
        let q = answers(&records, AuditEvent::Query);
        assert_eq!(q.len(), 1, "{rt:?}: {records:#?}");
        assert_eq!(q[0].outcome, Outcome::Denied, "{rt:?}");
    }
    // the same document asked with A's own document and a registry that returns everything: one
    // request reaching two patients is answered for none
    let mut q = AdhocQuery::new(StoredQuery::FindDocuments);
    q.set_single(param::DE_PATIENT_ID, &a.bsn.to_cx());
    q.add_list(param::DE_STATUS, &[APPROVED]);
    let (reply, records, _) = ask(
        &w,
        Hostility {
            ignore_query: true,
            ..Hostility::default()
        },
        Transaction::Iti38,
        Some(&a.bsn),
        &AdhocQueryRequest::new(q, ReturnType::LeafClass),
    )
    .await;
    assert!(query(&reply).objects.is_empty());
    assert!(!has(&reply, b.bsn.as_str()));
    assert_eq!(
        answers(&records, AuditEvent::Query)[0].outcome,
        Outcome::Denied
    );
    // a query by id for A's own documents only is answered
    let mut q = AdhocQuery::new(StoredQuery::GetDocuments);
    q.home = Some(HOME.parse().unwrap());
    let ids: Vec<String> = a.docs.iter().map(|d| d.entry_uuid.clone()).collect();
    q.add_list(param::DE_ENTRY_UUID, &ids);
    let (reply, records, _) = ask(
        &w,
        Hostility::default(),
        Transaction::Iti38,
        None,
        &AdhocQueryRequest::new(q, ReturnType::LeafClass),
    )
    .await;
    assert_eq!(query(&reply).objects.len(), a.docs.len());
    assert_eq!(
        answers(&records, AuditEvent::Query)[0].patient.as_ref(),
        Some(&a.bsn)
    );
}

/// A RAD-75 request for study `study` with one series holding `docs` (SOP Instance UIDs).
fn imaging(study: &str, series: &[(&str, Vec<String>)]) -> RetrieveImagingDocumentSetRequest {
    RetrieveImagingDocumentSetRequest {
        studies: vec![StudyRequest {
            study_instance_uid: study.to_owned(),
            series: series
                .iter()
                .map(|(se, docs)| SeriesRequest {
                    series_instance_uid: (*se).to_owned(),
                    documents: docs
                        .iter()
                        .map(|d| DocumentRequest {
                            home_community_id: Some(HOME.parse().unwrap()),
                            repository_unique_id: SOURCE.into(),
                            document_unique_id: d.clone(),
                        })
                        .collect(),
                })
                .collect(),
        }],
        transfer_syntaxes: vec![EXPLICIT_LE.into()],
    }
}

#[tokio::test]
async fn defect_6_rad75_instances_leave_only_under_their_own_study_and_series() {
    let w = world();
    let (a, b) = (&w.model.patients[0], &w.model.patients[3]);
    let study = &a.studies[0];
    let own: Vec<&Instance> = a.instances.iter().filter(|i| &i.study == study).collect();
    let series = &own[0].series;
    let other_study = a
        .instances
        .iter()
        .find(|i| &i.study != study)
        .unwrap()
        .sop
        .clone();
    let others = b.instances[0].sop.clone();
    // A's own instance of this series, an instance of A's other study and one of B, all under A's
    // study and this series; an imaging document source that finds instances by SOP Instance UID alone,
    // and adds one of B's instances to every answer
    let mut asked = vec![own[0].sop.clone(), other_study.clone(), others.clone()];
    // an instance of another series of the same study, listed under this series
    if let Some(x) = own.iter().find(|i| &i.series != series) {
        asked.push(x.sop.clone());
    }
    let req = imaging(study, &[(series.as_str(), asked.clone())]);
    let (reply, records, _) = ask(
        &w,
        Hostility {
            images_anywhere: true,
            images_extra: vec![(3, 0)],
            ..Hostility::default()
        },
        Transaction::Rad75,
        Some(&a.bsn),
        &req,
    )
    .await;
    let resp = retrieved(&reply);
    let got: Vec<&str> = resp
        .documents
        .iter()
        .map(|d| d.meta.document_unique_id.as_str())
        .collect();
    assert_eq!(got, vec![own[0].sop.as_str()], "{:?}", resp.response);
    assert_eq!(resp.response.status, ResponseStatus::PartialSuccess);
    for refused in &asked[1..] {
        assert!(
            resp.response
                .errors
                .iter()
                .any(|e| e.location.as_deref() == Some(refused.as_str())
                    && e.error_code.as_str() == "XDSDocumentUniqueIdError"),
            "{refused}: {:?}",
            resp.response.errors
        );
    }
    // nothing of B in the bytes that B's SOP Instance UID was not already in the request for
    assert!(!has(&reply, b.bsn.as_str()), "B's instance bytes left");
    let r = answers(&records, AuditEvent::Retrieve);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].document_ids, vec![own[0].sop.clone()]);
}

#[tokio::test]
async fn defect_10_records_name_the_purpose_of_use_and_only_what_left() {
    let w = world();
    let (a, b) = (&w.model.patients[0], &w.model.patients[3]);
    // RAD-75 for A's study and B's study: only A's instances leave, and only A's study is recorded
    let inst = |p: &Patient, st: &str| -> Vec<String> {
        p.instances
            .iter()
            .filter(|i| i.study == st)
            .map(|i| i.sop.clone())
            .collect()
    };
    let mut req = imaging(&a.studies[0], &[]);
    for (p, st) in [(a, &a.studies[0]), (b, &b.studies[0])] {
        let mut s = StudyRequest {
            study_instance_uid: st.clone(),
            series: Vec::new(),
        };
        for (sst, se) in &p.series {
            if sst == st {
                s.series.push(SeriesRequest {
                    series_instance_uid: se.clone(),
                    documents: p
                        .instances
                        .iter()
                        .filter(|i| &i.series == se)
                        .map(|i| DocumentRequest {
                            home_community_id: Some(HOME.parse().unwrap()),
                            repository_unique_id: SOURCE.into(),
                            document_unique_id: i.sop.clone(),
                        })
                        .collect(),
                });
            }
        }
        req.studies.push(s);
    }
    req.studies.remove(0);
    let (reply, records, json) = ask(
        &w,
        Hostility::default(),
        Transaction::Rad75,
        Some(&a.bsn),
        &req,
    )
    .await;
    let resp = retrieved(&reply);
    assert_eq!(resp.documents.len(), inst(a, &a.studies[0]).len());
    let r = answers(&records, AuditEvent::Retrieve);
    assert_eq!(r.len(), 1);
    assert_eq!(
        r[0].study_ids,
        vec![a.studies[0].clone()],
        "a refused study is not disclosed"
    );
    let mut docs = r[0].document_ids.clone();
    docs.sort();
    let mut want = inst(a, &a.studies[0]);
    want.sort();
    assert_eq!(docs, want);
    // every record carries the purpose of use of the request
    for v in &json {
        if v.get("requester").is_some() {
            assert_eq!(v["requester"]["purposeOfUse"], "TREAT", "{v}");
        }
    }

    // ITI-39 for documents of A and of patient 1 (both permit): one request reaching two patients is
    // answered for none, with exactly one retrieve record
    let c = &w.model.patients[1];
    let req = RetrieveDocumentSetRequest {
        documents: [a, c]
            .iter()
            .map(|p| DocumentRequest {
                home_community_id: Some(HOME.parse().unwrap()),
                repository_unique_id: REPO.into(),
                document_unique_id: p.docs[0].unique_id.clone(),
            })
            .collect(),
    };
    let (reply, records, _) = ask(&w, Hostility::default(), Transaction::Iti39, None, &req).await;
    let resp = retrieved(&reply);
    assert!(resp.documents.is_empty(), "{:?}", resp.response);
    let r = answers(&records, AuditEvent::Retrieve);
    assert_eq!(r.len(), 1, "{records:#?}");
    assert!(r[0].document_ids.is_empty());
    assert_eq!(r[0].outcome, Outcome::Denied);

    // ITI-38 by id for A's documents: one query record naming every object that left
    let mut q = AdhocQuery::new(StoredQuery::GetDocuments);
    q.home = Some(HOME.parse().unwrap());
    let ids: Vec<String> = a.docs.iter().map(|d| d.entry_uuid.clone()).collect();
    q.add_list(param::DE_ENTRY_UUID, &ids);
    let (reply, records, json) = ask(
        &w,
        Hostility::default(),
        Transaction::Iti38,
        None,
        &AdhocQueryRequest::new(q, ReturnType::ObjectRef),
    )
    .await;
    assert_eq!(query(&reply).objects.len(), ids.len());
    assert_eq!(answers(&records, AuditEvent::Query).len(), 1);
    let rec = json.iter().find(|v| v["event"] == "query").unwrap();
    let mut named: Vec<String> = rec["objectIds"]
        .as_array()
        .map(|a| a.iter().map(|x| x.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    named.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(named, want, "{rec}");
    assert_eq!(rec["requester"]["purposeOfUse"], "TREAT");
}

#[tokio::test]
async fn iti39_asks_about_the_assertions_patient_before_the_registry_whatever_the_documents() {
    // found by the breaking run of issue 12: Mitz was asked only when the registry tied the requested
    // document to the assertion's patient, so the answer time told whose a document is
    let w = world();
    let (c, b) = (&w.model.patients[3], &w.model.patients[0]);
    let doc = |uid: &str| RetrieveDocumentSetRequest {
        documents: vec![DocumentRequest {
            home_community_id: Some(HOME.parse().unwrap()),
            repository_unique_id: REPO.into(),
            document_unique_id: uid.to_owned(),
        }],
    };
    for (name, uid) in [
        ("C's own document", c.docs[0].unique_id.clone()),
        ("B's document", b.docs[0].unique_id.clone()),
        ("an unknown document", "1.2.3.4.5.6.7.8.9".to_owned()),
    ] {
        let (reply, records, _) = ask(
            &w,
            Hostility::default(),
            Transaction::Iti39,
            Some(&c.bsn),
            &doc(&uid),
        )
        .await;
        let resp = retrieved(&reply);
        assert!(resp.documents.is_empty(), "{name}");
        let asked: Vec<&AuditRecord> = records
            .iter()
            .filter(|r| r.event == AuditEvent::ConsentDecision)
            .collect();
        assert_eq!(asked.len(), 1, "{name}: {records:#?}");
        assert_eq!(asked[0].patient.as_ref(), Some(&c.bsn), "{name}");
        assert_eq!(answers(&records, AuditEvent::Retrieve).len(), 1, "{name}");
    }
}

#[tokio::test]
async fn rad75_naming_more_studies_than_the_limit_is_refused_before_mitz_and_the_registry() {
    // found by the breaking run of issue 12: one request naming thousands of studies made as many
    // registry queries
    let w = world();
    let a = &w.model.patients[0];
    let mut req = imaging(&a.studies[0], &[]);
    req.studies = (0..=duo_runtime::gateway::responding::MAX_STUDIES_PER_RETRIEVE)
        .map(|n| StudyRequest {
            study_instance_uid: format!("1.2.826.0.1.3680043.10.9999.{n}"),
            series: vec![SeriesRequest {
                series_instance_uid: format!("1.2.826.0.1.3680043.10.9998.{n}"),
                documents: vec![DocumentRequest {
                    home_community_id: Some(HOME.parse().unwrap()),
                    repository_unique_id: SOURCE.into(),
                    document_unique_id: format!("1.2.826.0.1.3680043.10.9997.{n}"),
                }],
            }],
        })
        .collect();
    let (reply, records, _) = ask(
        &w,
        Hostility::default(),
        Transaction::Rad75,
        Some(&a.bsn),
        &req,
    )
    .await;
    let resp = retrieved(&reply);
    assert!(resp.documents.is_empty());
    assert_eq!(resp.response.status, ResponseStatus::Failure);
    assert!(
        resp.response
            .errors
            .iter()
            .any(|e| e.code_context.contains("at most")),
        "{:?}",
        resp.response.errors
    );
    assert!(
        records
            .iter()
            .all(|r| r.event != AuditEvent::ConsentDecision),
        "Mitz was asked: {records:#?}"
    );
    // the limit itself is accepted (Mitz asked, the studies are unknown)
    req.studies.pop();
    let (_, records, _) = ask(
        &w,
        Hostility::default(),
        Transaction::Rad75,
        Some(&a.bsn),
        &req,
    )
    .await;
    assert!(
        records
            .iter()
            .any(|r| r.event == AuditEvent::ConsentDecision)
    );
}
