//! The XDS-I.b affinity domain simulator over HTTP: ITI-18 stored queries, ITI-43 and RAD-69 retrieves,
//! the NIST `ids_4812` RAD-69 cases with the simulator configured as their test plans describe, SOAP
//! faults for unreadable requests, every fault knob, and mutual TLS. Every answer is read by the ihe
//! codec and validated with xmllint.

mod common;
mod sim_support;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use duo_runtime::ihe::ebrim::{ErrorCode, Identifiable, ResponseStatus};
use duo_runtime::ihe::mtom::{self, MtomLimits, RetrieveResponseReader};
use duo_runtime::ihe::query::{AdhocQuery, AdhocQueryRequest, ReturnType, StoredQuery, param};
use duo_runtime::ihe::retrieve::{
    DocumentRequest, RetrieveDocumentSetRequest, RetrieveImagingDocumentSetRequest,
};
use duo_runtime::ihe::soap::{FaultCode, SoapHeader, Transaction};
use duo_runtime::ihe::transform::document_entries;
use duo_runtime::ihe::{read_bare, write_soap};
use duo_runtime::model::{AuthorInstitution, reference_type};
use duo_runtime::xml::Limits;
use duo_testkit::dicom::synth::{SynthConfig, SynthPatient, generate_study};
use duo_testkit::sim::faults::{Endpoint, Faults, RetrieveEncoding};
use duo_testkit::sim::seed::{CommunitySeed, SeededStudy, seed_patient, sha256_hex, with_uids};
use duo_testkit::sim::serve::{RunningSim, Transport};
use duo_testkit::sim::xds::{XdsConfig, XdsSim, paths};
use sim_support as s;

const REPO: &str = "1.2.826.0.1.3680043.10.1234.1";
const IDS: &str = "1.2.826.0.1.3680043.10.1234.2";
const APPROVED: &str = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved";

fn community() -> CommunitySeed {
    CommunitySeed::new(
        AuthorInstitution {
            name: "Ziekenhuis West".into(),
            ura: Some("87654321".parse().unwrap()),
        },
        "V4".parse().unwrap(),
        REPO,
        IDS,
        None,
    )
}

/// A running affinity domain with 3 studies (6 DocumentEntries) of the example patient.
async fn domain(config: XdsConfig) -> (XdsSim, RunningSim, Vec<SeededStudy>) {
    let sim = XdsSim::new(config);
    let studies = seed_patient(
        &sim.store,
        &community(),
        &SynthConfig::default(),
        &SynthPatient::example(),
        21,
        3,
    )
    .unwrap();
    let running = sim.start(Transport::Plain).await.unwrap();
    (sim, running, studies)
}

fn find_documents(return_type: ReturnType) -> AdhocQueryRequest {
    let mut q = AdhocQuery::new(StoredQuery::FindDocuments);
    q.set_single(param::DE_PATIENT_ID, &SynthPatient::example().bsn.to_cx());
    q.add_list(param::DE_STATUS, &[APPROVED]);
    AdhocQueryRequest::new(q, return_type)
}

fn codes(r: &duo_runtime::ihe::query::AdhocQueryResponse) -> Vec<String> {
    r.errors
        .iter()
        .map(|e| e.error_code.as_str().to_owned())
        .collect()
}

#[tokio::test]
async fn registry_stored_queries() {
    let (_sim, run, studies) = domain(XdsConfig::default()).await;
    let url = run.url(paths::ITI18);
    let tx = Transaction::Iti18;

    // FindDocuments, LeafClass: every manifest and report, complete metadata, no home (an XDS registry)
    let r = s::query(&url, tx, &find_documents(ReturnType::LeafClass)).await;
    assert_eq!(r.status, ResponseStatus::Success);
    let (entries, errs) = document_entries(&r.objects);
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(entries.len(), 6);
    assert!(entries.iter().all(|e| e.home_community_id.is_none()));
    for st in &studies {
        assert!(entries.iter().any(|e| e.unique_id == st.manifest.unique_id
            && e.study_instance_uid() == Some(st.study_instance_uid.as_str())));
        assert!(entries.iter().any(|e| e.unique_id == st.report.unique_id
            && e.accession_number() == Some(st.accession_number.as_str())));
    }

    // ObjectRef
    let r = s::query(&url, tx, &find_documents(ReturnType::ObjectRef)).await;
    assert_eq!(r.objects.len(), 6);
    assert!(
        r.objects
            .iter()
            .all(|o| matches!(o, Identifiable::ObjectRef(_)))
    );

    // a class code narrows to the manifests; a code of another scheme matches nothing
    let mut req = find_documents(ReturnType::LeafClass);
    req.query
        .add_list(param::DE_CLASS_CODE, &["IMAGES^^1.3.6.1.4.1.19376.1.2.6.1"]);
    assert_eq!(s::query(&url, tx, &req).await.objects.len(), 3);
    let mut req = find_documents(ReturnType::LeafClass);
    req.query.add_list(param::DE_CLASS_CODE, &["IMAGES^^9.9"]);
    let r = s::query(&url, tx, &req).await;
    assert_eq!((r.status, r.objects.len()), (ResponseStatus::Success, 0));

    // FindDocumentsByReferenceId: by accession number the manifest and its report, by Study Instance
    // UID the manifest only
    let by_ref = |value: String| {
        let mut q = AdhocQuery::new(StoredQuery::FindDocumentsByReferenceId);
        q.set_single(param::DE_PATIENT_ID, &SynthPatient::example().bsn.to_cx());
        q.add_list(param::DE_STATUS, &[APPROVED]);
        q.add_list(param::DE_REFERENCE_ID_LIST, &[value]);
        AdhocQueryRequest::new(q, ReturnType::LeafClass)
    };
    let st = &studies[1];
    let r = s::query(
        &url,
        tx,
        &by_ref(format!(
            "{}^^^^{}",
            st.accession_number,
            reference_type::ACCESSION
        )),
    )
    .await;
    let (entries, _) = document_entries(&r.objects);
    let mut uids: Vec<_> = entries.iter().map(|e| e.unique_id.clone()).collect();
    uids.sort();
    let mut want = vec![st.manifest.unique_id.clone(), st.report.unique_id.clone()];
    want.sort();
    assert_eq!(uids, want);
    let r = s::query(
        &url,
        tx,
        &by_ref(format!(
            "{}^^^^{}",
            st.study_instance_uid,
            reference_type::STUDY_INSTANCE_UID
        )),
    )
    .await;
    assert_eq!(r.objects.len(), 1);

    // GetDocuments: known and unknown entryUUIDs → Success with what is known
    let mut q = AdhocQuery::new(StoredQuery::GetDocuments);
    q.add_list(
        param::DE_ENTRY_UUID,
        &[
            st.manifest.entry_uuid.as_str(),
            "urn:uuid:00000000-0000-4000-8000-000000000000",
        ],
    );
    let r = s::query(&url, tx, &AdhocQueryRequest::new(q, ReturnType::LeafClass)).await;
    assert_eq!((r.status, r.objects.len()), (ResponseStatus::Success, 1));
    let mut q = AdhocQuery::new(StoredQuery::GetDocuments);
    q.add_list(
        param::DE_ENTRY_UUID,
        &["urn:uuid:00000000-0000-4000-8000-000000000000"],
    );
    let r = s::query(&url, tx, &AdhocQueryRequest::new(q, ReturnType::LeafClass)).await;
    assert_eq!(
        (r.status, r.objects.len(), r.errors.len()),
        (ResponseStatus::Success, 0, 0)
    );
    // both EntryUUID and UniqueId
    let mut q = AdhocQuery::new(StoredQuery::GetDocuments);
    q.add_list(param::DE_ENTRY_UUID, &[st.manifest.entry_uuid.as_str()]);
    q.add_list(param::DE_UNIQUE_ID, &[st.manifest.unique_id.as_str()]);
    let r = s::query(&url, tx, &AdhocQueryRequest::new(q, ReturnType::LeafClass)).await;
    assert_eq!(r.status, ResponseStatus::Failure);
    assert_eq!(codes(&r), ["XDSStoredQueryParamNumber"]);

    // missing required parameter, unknown stored query
    let mut q = AdhocQuery::new(StoredQuery::FindDocuments);
    q.set_single(param::DE_PATIENT_ID, &SynthPatient::example().bsn.to_cx());
    let r = s::query(&url, tx, &AdhocQueryRequest::new(q, ReturnType::LeafClass)).await;
    assert_eq!(r.status, ResponseStatus::Failure);
    assert_eq!(codes(&r), ["XDSStoredQueryMissingParam"]);
    let mut req = find_documents(ReturnType::LeafClass);
    req.query.id = "urn:uuid:11111111-2222-4333-8444-555555555555".into();
    let r = s::query(&url, tx, &req).await;
    assert_eq!(codes(&r), ["XDSUnknownStoredQuery"]);
    assert_eq!(r.status, ResponseStatus::Failure);
}

#[tokio::test]
async fn registry_with_a_home_community_id_writes_it() {
    let home = "urn:oid:1.2.826.0.1.3680043.10.1234".parse().unwrap();
    let (_sim, run, _) = domain(XdsConfig {
        home_community_id: Some(home),
    })
    .await;
    let url = run.url(paths::ITI18);
    for rt in [ReturnType::LeafClass, ReturnType::ObjectRef] {
        let r = s::query(&url, Transaction::Iti18, &find_documents(rt)).await;
        assert_eq!(r.objects.len(), 6);
        assert_eq!(r.objects_missing_home().count(), 0);
    }
}

/// The NIST message-validator stored-query samples: each gets the error its defect calls for.
#[tokio::test]
async fn registry_parameter_rules_on_the_nist_samples() {
    let (_sim, run, _) = domain(XdsConfig::default()).await;
    let url = run.url(paths::ITI18);
    for (file, expected) in [
        ("sq-req.xml", None),
        ("sq-req-bad-code.xml", Some("XDSRegistryError")),
        ("sq-req-bad-pid-format.xml", Some("XDSRegistryError")),
        ("sq-req-bad-stat-format1.xml", Some("XDSRegistryError")),
        ("sq-req-bad-stat-format2.xml", Some("XDSRegistryError")),
        (
            "sq-req-missing-stat.xml",
            Some("XDSStoredQueryMissingParam"),
        ),
    ] {
        let bare = String::from_utf8(common::read(&format!(
            "ihe/samples/messagevalidator/{file}"
        )))
        .unwrap();
        // the codec reads the sample (so the error is about parameters, not XML)
        read_bare::<AdhocQueryRequest>(bare.as_bytes(), &Limits::default()).unwrap();
        let env = s::envelope_around(Transaction::Iti18, &bare);
        let a = s::post(
            &url,
            &s::soap_ct(Transaction::Iti18.request_action()),
            env.into_bytes(),
        )
        .await;
        let r = s::query_response(&a, Transaction::Iti18);
        match expected {
            None => {
                assert_eq!(r.status, ResponseStatus::Success, "{file}");
                assert!(r.errors.is_empty(), "{file}");
            }
            Some(code) => {
                assert_eq!(r.status, ResponseStatus::Failure, "{file}");
                assert_eq!(codes(&r), [code], "{file}");
            }
        }
    }
}

#[tokio::test]
async fn unreadable_requests_get_soap_faults() {
    let (_sim, run, _) = domain(XdsConfig::default()).await;
    let url = run.url(paths::ITI18);
    let req = find_documents(ReturnType::LeafClass);

    // an ITI-38 action at the ITI-18 endpoint
    let h = SoapHeader::request(Transaction::Iti38.request_action(), None);
    let a = s::post(
        &url,
        "application/soap+xml",
        write_soap(&h, &req).into_bytes(),
    )
    .await;
    let f = s::fault_of(&a);
    assert_eq!((a.status, f.code), (400, FaultCode::Sender));
    assert_eq!(f.subcode.as_deref(), Some("wsa:ActionNotSupported"));
    // no Action
    let h = SoapHeader::request("", None);
    let a = s::post(
        &url,
        "application/soap+xml",
        write_soap(&h, &req).into_bytes(),
    )
    .await;
    assert_eq!(
        s::fault_of(&a).subcode.as_deref(),
        Some("wsa:MessageAddressingHeaderRequired")
    );
    // not XML
    let a = s::post(&url, "application/soap+xml", b"\x00 not xml".to_vec()).await;
    assert_eq!(s::fault_of(&a).code, FaultCode::Sender);
    // SOAP 1.1
    let a = s::post(
        &url,
        "text/xml",
        br#"<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body/></e:Envelope>"#
            .to_vec(),
    )
    .await;
    assert_eq!(
        (a.status, s::fault_of(&a).code),
        (500, FaultCode::VersionMismatch)
    );
    // a body that is not an AdhocQueryRequest
    let h = SoapHeader::request(Transaction::Iti18.request_action(), None);
    let a = s::post(
        &url,
        "application/soap+xml",
        write_soap(&h, &RetrieveDocumentSetRequest::default()).into_bytes(),
    )
    .await;
    assert_eq!(s::fault_of(&a).code, FaultCode::Sender);
    // truncated MTOM
    let (ct, body) = mtom::wrap_root(&write_soap(&h, &req), Transaction::Iti18.request_action());
    let a = s::post(&url, &ct, body[..body.len() - 20].to_vec()).await;
    assert_eq!(s::fault_of(&a).code, FaultCode::Sender);
    // the same request as MTOM (root part only) is answered
    let a = s::post(&url, &ct, body).await;
    let r = s::query_response(&a, Transaction::Iti18);
    assert_eq!(r.objects.len(), 6);
    // the fault names the request it answers
    let a = s::post(
        &url,
        "application/soap+xml",
        write_soap(
            &SoapHeader::request(Transaction::Rad69.request_action(), None),
            &req,
        )
        .into_bytes(),
    )
    .await;
    assert!(a.text().contains("RelatesTo"), "{}", a.text());
}

#[tokio::test]
async fn repository_retrieve() {
    let (_sim, run, studies) = domain(XdsConfig::default()).await;
    let url = run.url(paths::ITI43);
    let st = &studies[0];
    let doc = |repo: &str, uid: &str| DocumentRequest {
        home_community_id: None,
        repository_unique_id: repo.into(),
        document_unique_id: uid.into(),
    };
    let req = RetrieveDocumentSetRequest {
        documents: vec![
            doc(REPO, &st.manifest.unique_id),
            doc(REPO, "1.2.3.999"),
            doc(REPO, &st.report.unique_id),
        ],
    };
    let a = s::send(&url, Transaction::Iti43, &req).await;
    assert!(
        a.content_type.starts_with("multipart/related"),
        "{}",
        a.content_type
    );
    let ct = mtom::ContentType::parse(&a.content_type).unwrap();
    let parts = mtom::read_multipart(&ct, &a.body, &MtomLimits::default()).unwrap();
    assert_eq!(parts.len(), 3, "root plus one part per document");
    let r = s::retrieve_response(&a, Transaction::Iti43);
    assert_eq!(r.response.status, ResponseStatus::PartialSuccess);
    assert_eq!(r.response.errors.len(), 1);
    assert_eq!(
        r.response.errors[0].error_code,
        ErrorCode::XDSDocumentUniqueIdError
    );
    assert_eq!(r.response.errors[0].location.as_deref(), Some("1.2.3.999"));
    assert_eq!(r.documents.len(), 2);
    for (d, want) in r.documents.iter().zip([&st.manifest, &st.report]) {
        assert_eq!(d.meta.document_unique_id, want.unique_id);
        assert_eq!(d.meta.mime_type, want.mime_type);
        let duo_runtime::ihe::retrieve::Content::Inline(b) = &d.content else {
            panic!("resolved")
        };
        assert_eq!(sha256_hex(b), want.sha256);
    }
    // an unknown repository
    let r = s::retrieve(
        &url,
        Transaction::Iti43,
        &RetrieveDocumentSetRequest {
            documents: vec![doc("9.9.9", &st.manifest.unique_id)],
        },
    )
    .await;
    assert_eq!(r.response.status, ResponseStatus::Failure);
    assert_eq!(
        r.response.errors[0].error_code,
        ErrorCode::XDSUnknownRepositoryId
    );
}

/// RAD-69 for the whole study, from `source` (normally the study's own imaging document source).
fn study_request(st: &SeededStudy, source: &str, ts: &[&str]) -> RetrieveImagingDocumentSetRequest {
    let mut req = st.imaging_request(None, ts);
    assert_eq!(req.documents().count(), st.instances.len());
    for se in &mut req.studies[0].series {
        for d in &mut se.documents {
            d.repository_unique_id = source.into();
        }
    }
    req
}

#[tokio::test]
async fn imaging_document_source_retrieve_streams_every_instance() {
    let (_sim, run, studies) = domain(XdsConfig::default()).await;
    let url = run.url(paths::RAD69);
    let st = &studies[2];
    let req = study_request(st, IDS, &["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.1"]);
    // buffered read, schemas checked
    let r = s::retrieve(&url, Transaction::Rad69, &req).await;
    assert_eq!(r.response.status, ResponseStatus::Success);
    assert_eq!(r.documents.len(), st.instances.len());
    // streaming read straight off the socket, part by part
    let h = SoapHeader::request(Transaction::Rad69.request_action(), None);
    let resp = s::client()
        .post(&url)
        .header(
            "content-type",
            s::soap_ct(Transaction::Rad69.request_action()),
        )
        .body(write_soap(&h, &req))
        .send()
        .await
        .unwrap();
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    let len = resp.content_length();
    let mut reader =
        RetrieveResponseReader::open(&ct, len, resp.bytes_stream(), &MtomLimits::default())
            .await
            .unwrap();
    assert_eq!(reader.header().relates_to, h.message_id);
    let mut seen = 0;
    while let Some(i) = reader.next_document().await.unwrap() {
        let meta = reader.documents()[i].clone();
        let mut bytes = Vec::new();
        while let Some(c) = reader.chunk().await.unwrap() {
            bytes.extend_from_slice(&c);
        }
        let want = st
            .instances
            .iter()
            .find(|x| x.sop_instance_uid == meta.document_unique_id)
            .unwrap();
        assert_eq!(meta.mime_type, "application/dicom");
        assert_eq!(meta.repository_unique_id, IDS);
        assert_eq!(sha256_hex(&bytes), want.sha256, "instance bytes");
        seen += 1;
    }
    assert_eq!(seen, st.instances.len());

    // an unknown imaging document source (RAD-69: XDSUnknownRepositoryId)
    let r = s::retrieve(
        &url,
        Transaction::Rad69,
        &study_request(st, "9.9.9", &["1.2.840.10008.1.2.1"]),
    )
    .await;
    assert_eq!(r.response.status, ResponseStatus::Failure);
    assert!(
        r.response
            .errors
            .iter()
            .all(|e| e.error_code == ErrorCode::XDSUnknownRepositoryId)
    );
}

/// The data the `ids_4812` test plans assume: the IDS under test is
/// `1.3.6.1.4.1.21367.13.80.110` (case 1 names it as "Expected"), it holds SOP `…059.1` in study/series
/// `…059` (case 0), SOP `…059.22` in another series of that study (case 3) and study/series `…048`
/// exist with other instances (case 4), all in Explicit VR Little Endian only (case 9).
fn ids_4812_source(sim: &XdsSim) {
    let p = SynthPatient::example();
    let study = generate_study(&SynthConfig::default(), &p, 4812).unwrap();
    let src = &study.instances[0].bytes;
    let ids = "1.3.6.1.4.1.21367.13.80.110";
    for (st, se, sop) in [
        (
            "1.3.6.1.4.1.21367.201599.1.201604020954059",
            "1.3.6.1.4.1.21367.201599.2.201604020954059",
            "1.3.6.1.4.1.21367.201599.3.201604020954059.1",
        ),
        (
            "1.3.6.1.4.1.21367.201599.1.201604020954059",
            "1.3.6.1.4.1.21367.201599.2.201604020954059.2",
            "1.3.6.1.4.1.21367.201599.3.201604020954059.22",
        ),
        (
            "1.3.6.1.4.1.21367.201599.1.201604020954048",
            "1.3.6.1.4.1.21367.201599.2.201604020954048",
            "1.3.6.1.4.1.21367.201599.3.201604020954048.1",
        ),
    ] {
        let (info, bytes) = with_uids(src, st, se, sop).unwrap();
        sim.store.add_instance(ids, info, bytes).unwrap();
    }
}

/// The expected status (`<ExpectedStatus>`) and error codes (every `errorCode="..."`, also those the
/// test plan has commented out) of a NIST test plan.
pub fn expectations(testplan: &str) -> (ResponseStatus, Vec<String>) {
    let status = testplan
        .split("<ExpectedStatus>")
        .nth(1)
        .and_then(|t| t.split('<').next())
        .map(str::trim)
        .unwrap();
    let status = match status {
        "Success" => ResponseStatus::Success,
        "PartialSuccess" => ResponseStatus::PartialSuccess,
        "Failure" => ResponseStatus::Failure,
        other => panic!("status {other}"),
    };
    let codes = testplan
        .split("errorCode=\"")
        .skip(1)
        .map(|t| t.split('"').next().unwrap().to_owned())
        .collect();
    (status, codes)
}

#[tokio::test]
async fn nist_ids_4812_rad69_cases() {
    let sim = XdsSim::new(XdsConfig::default());
    ids_4812_source(&sim);
    let run = sim.start(Transport::Plain).await.unwrap();
    let url = run.url(paths::RAD69);
    let cases: Vec<_> = common::files_under("ihe/samples/testkit/ids_4812")
        .into_iter()
        .filter(|p| p.ends_with("RAD-69Request.xml"))
        .collect();
    assert_eq!(cases.len(), 10);
    let mut table = Vec::new();
    for req_file in cases {
        let dir = req_file.parent().unwrap();
        let case = dir.file_name().unwrap().to_string_lossy().into_owned();
        let plan = std::fs::read_to_string(dir.join("testplan.xml")).unwrap();
        let (want_status, want_codes) = expectations(&plan);
        let bare = std::fs::read_to_string(&req_file).unwrap();
        let a = s::post(
            &url,
            &s::soap_ct(Transaction::Rad69.request_action()),
            s::envelope_around(Transaction::Rad69, &bare).into_bytes(),
        )
        .await;
        let r = s::retrieve_response(&a, Transaction::Rad69);
        // distinct codes: a request with two empty UIDs gets an error for each
        let mut got: Vec<String> = r
            .response
            .errors
            .iter()
            .map(|e| e.error_code.as_str().to_owned())
            .collect();
        got.dedup();
        table.push(format!(
            "{case:55} expected {want_status:?} {want_codes:?}, got {:?} {got:?}",
            r.response.status
        ));
        assert_eq!(r.response.status, want_status, "{case}");
        assert_eq!(got, want_codes, "{case}");
        if want_status == ResponseStatus::Success {
            assert_eq!(r.documents.len(), 1);
        } else {
            assert!(r.documents.is_empty());
        }
        // the transfer-syntax error names the SOP instance (docs/DOMAIN.md)
        if case.starts_with("case-9") {
            assert_eq!(
                r.response.errors[0].location.as_deref(),
                Some("1.3.6.1.4.1.21367.201599.3.201604020954059.1")
            );
        }
    }
    eprintln!("{}", table.join("\n"));
}

#[tokio::test]
async fn fault_knobs_over_the_wire() {
    let (sim, run, studies) = domain(XdsConfig::default()).await;
    let q_url = run.url(paths::ITI18);
    let r_url = run.url(paths::RAD69);
    let q = find_documents(ReturnType::LeafClass);
    let rq = study_request(&studies[0], IDS, &["1.2.840.10008.1.2.1"]);
    let set = |f: Faults| sim.control.set_faults(f);

    // delay
    set(Faults {
        delay_ms: 300,
        ..Faults::default()
    });
    let t = Instant::now();
    assert_eq!(s::send(&q_url, Transaction::Iti18, &q).await.status, 200);
    assert!(t.elapsed().as_millis() >= 300, "{:?}", t.elapsed());

    // HTTP 500
    set(Faults {
        http_500: true,
        ..Faults::default()
    });
    let a = s::send(&q_url, Transaction::Iti18, &q).await;
    assert_eq!(a.status, 500);
    assert!(a.content_type.starts_with("text/plain"));

    // garbage
    set(Faults {
        garbage_body: true,
        ..Faults::default()
    });
    let a = s::send(&q_url, Transaction::Iti18, &q).await;
    assert_eq!(a.status, 200);
    assert!(
        duo_runtime::ihe::read_soap::<duo_runtime::ihe::query::AdhocQueryResponse>(
            &a.body,
            &Limits::default()
        )
        .is_err()
    );
    let a = s::send(&r_url, Transaction::Rad69, &rq).await;
    assert!(
        mtom::read_retrieve_response(&a.content_type, a.body.clone(), &MtomLimits::default())
            .is_err()
    );

    // SOAP fault
    set(Faults {
        soap_fault: true,
        ..Faults::default()
    });
    let a = s::send(&q_url, Transaction::Iti18, &q).await;
    assert_eq!((a.status, s::fault_of(&a).code), (500, FaultCode::Receiver));

    // scoped to RAD-69: the registry is well-behaved
    set(Faults {
        soap_fault: true,
        only: vec![Endpoint::Rad69],
        ..Faults::default()
    });
    assert_eq!(s::send(&q_url, Transaction::Iti18, &q).await.status, 200);
    assert_eq!(s::send(&r_url, Transaction::Rad69, &rq).await.status, 500);

    // retrieve encodings: the same documents three ways
    let mut seen = Vec::new();
    for enc in [
        RetrieveEncoding::Mtom,
        RetrieveEncoding::PlainSoapBase64,
        RetrieveEncoding::MtomBase64Root,
    ] {
        set(Faults {
            retrieve_encoding: enc,
            ..Faults::default()
        });
        let a = s::send(&r_url, Transaction::Rad69, &rq).await;
        match enc {
            RetrieveEncoding::PlainSoapBase64 => {
                assert!(
                    a.content_type.starts_with("application/soap+xml"),
                    "{}",
                    a.content_type
                );
                assert!(!a.text().contains("Include"));
            }
            _ => {
                let ct = mtom::ContentType::parse(&a.content_type).unwrap();
                let parts = mtom::read_multipart(&ct, &a.body, &MtomLimits::default()).unwrap();
                let want = if enc == RetrieveEncoding::Mtom {
                    1 + studies[0].instances.len()
                } else {
                    1
                };
                assert_eq!(parts.len(), want, "{enc:?}");
            }
        }
        let r = s::retrieve_response(&a, Transaction::Rad69);
        let hashes: Vec<String> = r
            .documents
            .iter()
            .map(|d| match &d.content {
                duo_runtime::ihe::retrieve::Content::Inline(b) => sha256_hex(b),
                _ => panic!(),
            })
            .collect();
        seen.push(hashes);
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[0], seen[2]);
    let want: Vec<String> = studies[0]
        .instances
        .iter()
        .map(|i| i.sha256.clone())
        .collect();
    assert_eq!(seen[0], want);

    // other prefixes: query and MTOM retrieve (the schema checks in s:: run on the rewritten XML)
    set(Faults {
        foreign_prefixes: true,
        ..Faults::default()
    });
    let a = s::send(&q_url, Transaction::Iti18, &q).await;
    assert!(a.text().contains("<urn:AdhocQueryResponse"), "{}", a.text());
    assert!(!a.text().contains("rim:ExtrinsicObject"));
    assert_eq!(s::query_response(&a, Transaction::Iti18).objects.len(), 6);
    let a = s::send(&r_url, Transaction::Rad69, &rq).await;
    assert!(a.text().contains("<urn1:RetrieveDocumentSetResponse"));
    assert_eq!(
        s::retrieve_response(&a, Transaction::Rad69).documents.len(),
        studies[0].instances.len()
    );

    // requests were all recorded, with their SOAP headers
    assert!(sim.control.requests(Endpoint::Iti18) >= 6);
    let last = sim.control.recorded().pop().unwrap();
    assert_eq!(last.endpoint, Endpoint::Rad69);
    assert_eq!(
        last.soap_header.unwrap().action,
        Transaction::Rad69.request_action()
    );
    sim.control.reset_faults();
    assert_eq!(s::send(&q_url, Transaction::Iti18, &q).await.status, 200);
}

#[tokio::test]
async fn stopped_simulator_refuses_connections() {
    let (_sim, run, _) = domain(XdsConfig::default()).await;
    let url = run.url(paths::ITI18);
    assert_eq!(
        s::send(
            &url,
            Transaction::Iti18,
            &find_documents(ReturnType::ObjectRef)
        )
        .await
        .status,
        200
    );
    run.stop().await;
    let h = SoapHeader::request(Transaction::Iti18.request_action(), None);
    let e = s::client()
        .post(&url)
        .body(write_soap(&h, &find_documents(ReturnType::ObjectRef)))
        .send()
        .await;
    assert!(e.is_err());
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as TLS material.
fn pki() -> (
    duo_runtime::tls::TlsMaterial,
    duo_runtime::tls::TlsMaterial,
    duo_runtime::tls::TlsMaterial,
) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use rustls::RootCertStore;
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let roots = Arc::new(roots);
    let leaf = |names: Vec<String>, issuer: &CertifiedIssuer<'_, KeyPair>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, issuer)
            .unwrap();
        duo_runtime::tls::TlsMaterial {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            roots: roots.clone(),
            policy: Default::default(),
        }
    };
    let server = leaf(vec!["127.0.0.1".into()], &ca);
    let client = leaf(vec!["client.example".into()], &ca);
    // a client of another CA
    let mut other_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    other_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let other_ca =
        CertifiedIssuer::self_signed(other_params, KeyPair::generate().unwrap()).unwrap();
    let stranger = leaf(vec!["stranger.example".into()], &other_ca);
    (server, client, stranger)
}

#[tokio::test]
async fn mutual_tls() {
    duo_runtime::tls::install_crypto_provider();
    let (server, client, stranger) = pki();
    let sim = XdsSim::new(XdsConfig::default());
    seed_patient(
        &sim.store,
        &community(),
        &SynthConfig::default(),
        &SynthPatient::example(),
        5,
        1,
    )
    .unwrap();
    let run = sim
        .start(Transport::mutual_tls(&server).unwrap())
        .await
        .unwrap();
    let url = run.url(paths::ITI18);
    assert!(url.starts_with("https://127.0.0.1:"));
    let h = SoapHeader::request(Transaction::Iti18.request_action(), None);
    let body = write_soap(&h, &find_documents(ReturnType::LeafClass));
    let http = client
        .http_client(std::time::Duration::from_secs(5))
        .unwrap();
    let r = http
        .post(&url)
        .header("content-type", "application/soap+xml")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bytes: Bytes = r.bytes().await.unwrap();
    let (_, resp) = duo_runtime::ihe::read_soap::<duo_runtime::ihe::query::AdhocQueryResponse>(
        &bytes,
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(resp.objects.len(), 2);
    // a client certificate of another CA, and no client certificate, are refused in the handshake
    let http = stranger
        .http_client(std::time::Duration::from_secs(5))
        .unwrap();
    assert!(http.post(&url).body(body.clone()).send().await.is_err());
    let no_cert = duo_runtime::tls::outbound_client(std::time::Duration::from_secs(5), {
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(client.roots.clone())
        .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Some(cfg)
    })
    .unwrap();
    assert!(no_cert.post(&url).body(body).send().await.is_err());
}
