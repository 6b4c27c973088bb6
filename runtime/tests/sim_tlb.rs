//! The TLB node simulator (XCA-I responding gateway) over HTTP: ITI-38 with the homeCommunityId rules,
//! ITI-39 with the NIST 12312 requests, RAD-75 with the NIST `rig_*` requests against the node configured
//! as `rig_5419` describes, DICOMweb QIDO-RS / WADO-RS, and its fault knobs. Every SOAP answer is read by
//! the ihe codec and validated with xmllint.

mod common;
mod sim_support;

use duo_runtime::dicom::read_instance;
use duo_runtime::ihe::ebrim::{Identifiable, ResponseStatus};
use duo_runtime::ihe::mtom::{self, MtomLimits};
use duo_runtime::ihe::query::{AdhocQuery, AdhocQueryRequest, ReturnType, StoredQuery, param};
use duo_runtime::ihe::retrieve::{
    Content, DocumentRequest, RetrieveDocumentSetRequest, RetrieveImagingDocumentSetRequest,
    SeriesRequest, StudyRequest,
};
use duo_runtime::ihe::soap::Transaction;
use duo_runtime::model::{AuthorInstitution, HomeCommunityId};
use duo_testkit::dicom::synth::{SynthConfig, SynthPatient, generate_study};
use duo_testkit::sim::dicomweb::QidoEmpty;
use duo_testkit::sim::faults::{Endpoint, Faults};
use duo_testkit::sim::seed::{CommunitySeed, SeededStudy, seed_patient, sha256_hex, with_uids};
use duo_testkit::sim::serve::{RunningSim, Transport};
use duo_testkit::sim::tlb::{TlbConfig, TlbSim, paths};
use serde_json::Value;
use sim_support as s;

const HOME: &str = "urn:oid:2.16.528.1.1007.99.2.77";
const REPO: &str = "2.16.528.1.1007.99.2.77.1";
const IDS: &str = "2.16.528.1.1007.99.2.77.2";
const APPROVED: &str = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved";

fn home() -> HomeCommunityId {
    HOME.parse().unwrap()
}

/// A node with 2 studies of the example patient.
async fn node(config: TlbConfig) -> (TlbSim, RunningSim, Vec<SeededStudy>) {
    let sim = TlbSim::new(config);
    let c = CommunitySeed::new(
        AuthorInstitution {
            name: "Kliniek Twiin".into(),
            ura: Some("11223344".parse().unwrap()),
        },
        "Z4".parse().unwrap(),
        REPO,
        IDS,
        Some(home()),
    );
    let studies = seed_patient(
        &sim.store,
        &c,
        &SynthConfig::default(),
        &SynthPatient::example(),
        77,
        2,
    )
    .unwrap();
    let run = sim.start(Transport::Plain).await.unwrap();
    (sim, run, studies)
}

fn find_documents(home: Option<&str>, rt: ReturnType) -> AdhocQueryRequest {
    let mut q = AdhocQuery::new(StoredQuery::FindDocuments);
    q.home = home.map(|h| h.parse().unwrap());
    q.set_single(param::DE_PATIENT_ID, &SynthPatient::example().bsn.to_cx());
    q.add_list(param::DE_STATUS, &[APPROVED]);
    AdhocQueryRequest::new(q, rt)
}

fn codes(errors: &[duo_runtime::ihe::RegistryError]) -> Vec<String> {
    let mut c: Vec<String> = errors
        .iter()
        .map(|e| e.error_code.as_str().to_owned())
        .collect();
    c.dedup();
    c
}

#[tokio::test]
async fn cross_gateway_query_and_home_community_rules() {
    let (_sim, run, studies) = node(TlbConfig::new(home())).await;
    let url = run.url(paths::ITI38);
    let tx = Transaction::Iti38;
    for rt in [ReturnType::LeafClass, ReturnType::ObjectRef] {
        // without @home (FindDocuments names the patient), with ours, with ours lacking `urn:oid:`
        for h in [None, Some(HOME), Some("2.16.528.1.1007.99.2.77")] {
            let r = s::query(&url, tx, &find_documents(h, rt)).await;
            assert_eq!(r.status, ResponseStatus::Success, "{h:?}");
            assert_eq!(r.objects.len(), 4);
            assert_eq!(r.objects_missing_home().count(), 0);
            assert!(r.objects.iter().all(|o| o.home() == Some(&home())));
        }
    }
    // another community
    let r = s::query(
        &url,
        tx,
        &find_documents(Some("urn:oid:1.2.3.4.5"), ReturnType::LeafClass),
    )
    .await;
    assert_eq!(r.status, ResponseStatus::Failure);
    assert_eq!(codes(&r.errors), ["XDSUnknownCommunity"]);
    assert_eq!(r.errors[0].location.as_deref(), Some("urn:oid:1.2.3.4.5"));
    // GetDocuments must name the community (ITI TF-2b 3.38.4.1.2.1)
    let get = |h: Option<HomeCommunityId>| {
        let mut q = AdhocQuery::new(StoredQuery::GetDocuments);
        q.home = h;
        q.add_list(
            param::DE_UNIQUE_ID,
            &[studies[0].manifest.unique_id.as_str()],
        );
        AdhocQueryRequest::new(q, ReturnType::LeafClass)
    };
    let r = s::query(&url, tx, &get(None)).await;
    assert_eq!(r.status, ResponseStatus::Failure);
    assert_eq!(codes(&r.errors), ["XDSMissingHomeCommunityId"]);
    let r = s::query(&url, tx, &get(Some(home()))).await;
    assert_eq!((r.status, r.objects.len()), (ResponseStatus::Success, 1));
    let Identifiable::ExtrinsicObject(eo) = &r.objects[0] else {
        panic!("LeafClass")
    };
    assert_eq!(eo.object.home, Some(home()));
    // parameter errors still come back as RegistryErrors
    let mut bad = find_documents(None, ReturnType::LeafClass);
    bad.query.add_list(param::DE_CLASS_CODE, &["IMAGES"]);
    let r = s::query(&url, tx, &bad).await;
    assert_eq!(codes(&r.errors), ["XDSRegistryError"]);
}

/// NIST 12312: ITI-39 to a responding gateway, with and without HomeCommunityId.
#[tokio::test]
async fn nist_12312_cross_gateway_retrieve() {
    let (_sim, run, studies) = node(TlbConfig::new(home())).await;
    let url = run.url(paths::ITI39);
    let st = &studies[0];
    let fill = |file: &str, doc: &str| {
        let t =
            String::from_utf8(common::read(&format!("ihe/samples/testkit/12312/{file}"))).unwrap();
        t.replace("$home$", HOME)
            .replace("$repositoryuid$", REPO)
            .replace("$docuid$", doc)
    };
    let send = |bare: String| {
        let url = url.clone();
        async move {
            let a = s::post(
                &url,
                &s::soap_ct(Transaction::Iti39.request_action()),
                s::envelope_around(Transaction::Iti39, &bare).into_bytes(),
            )
            .await;
            s::retrieve_response(&a, Transaction::Iti39)
        }
    };
    for (file, doc) in [
        ("correct/query1.xml", &st.report),
        ("correct/query2.xml", &st.manifest),
    ] {
        let r = send(fill(file, &doc.unique_id)).await;
        assert_eq!(r.response.status, ResponseStatus::Success, "{file}");
        assert_eq!(r.documents.len(), 1);
        let d = &r.documents[0];
        assert_eq!(d.meta.home_community_id, Some(home()));
        assert_eq!(d.meta.repository_unique_id, REPO);
        assert_eq!(d.meta.document_unique_id, doc.unique_id);
        assert_eq!(d.meta.mime_type, doc.mime_type);
        let Content::Inline(b) = &d.content else {
            panic!()
        };
        assert_eq!(sha256_hex(b), doc.sha256);
    }
    let plan = String::from_utf8(common::read(
        "ihe/samples/testkit/12312/missing_home/testplan.xml",
    ))
    .unwrap();
    assert!(plan.contains("<ExpectedErrorCode>XDSMissingHomeCommunityId</ExpectedErrorCode>"));
    let r = send(fill("missing_home/query.xml", &st.report.unique_id)).await;
    assert_eq!(r.response.status, ResponseStatus::Failure);
    assert_eq!(codes(&r.response.errors), ["XDSMissingHomeCommunityId"]);
    assert!(r.documents.is_empty(), "NoDocuments assertion");
    // another community, and an unknown document next to a known one
    let doc = |h: &str, uid: &str| DocumentRequest {
        home_community_id: Some(h.parse().unwrap()),
        repository_unique_id: REPO.into(),
        document_unique_id: uid.into(),
    };
    let r = s::retrieve(
        &url,
        Transaction::Iti39,
        &RetrieveDocumentSetRequest {
            documents: vec![doc("urn:oid:1.2.3", &st.report.unique_id)],
        },
    )
    .await;
    assert_eq!(codes(&r.response.errors), ["XDSUnknownCommunity"]);
    let r = s::retrieve(
        &url,
        Transaction::Iti39,
        &RetrieveDocumentSetRequest {
            documents: vec![doc(HOME, &st.report.unique_id), doc(HOME, "1.2.3.4")],
        },
    )
    .await;
    assert_eq!(r.response.status, ResponseStatus::PartialSuccess);
    assert_eq!(codes(&r.response.errors), ["XDSDocumentUniqueIdError"]);
}

const RIG_HOME: &str = "urn:oid:1.3.6.1.4.1.21367.13.70.201";
const RIG_E: &str = "1.3.6.1.4.1.21367.13.71.201.1";
const RIG_F: &str = "1.3.6.1.4.1.21367.13.71.201.2";

/// The node as `rig_5419` describes the responding imaging gateway's environment: homeCommunityId
/// `…13.70.201`, imaging document sources E and F (the unknown `…201.2.999` not configured), holding the
/// instances the `rig_*` requests name, in Explicit VR Little Endian; the single image of `rig_5420`
/// also in JPEG Lossless (`rig_5422`, `rig_5423`) but not in JPEG Baseline (`rig_5424`). Returns whether
/// the JPEG Lossless encoding could be made (dcmtk).
fn rig_node(sim: &TlbSim) -> bool {
    let p = SynthPatient::example();
    let study = generate_study(&SynthConfig::default(), &p, 5419).unwrap();
    let src = &study.instances[0].bytes;
    let add = |source: &str, st: &str, se: &str, sop: &str| {
        let (info, bytes) = with_uids(src, st, se, sop).unwrap();
        sim.store.add_instance(source, info, bytes.clone()).unwrap();
        bytes
    };
    let pre = "1.3.6.1.4.1.21367.201599.";
    let single = add(
        RIG_E,
        &format!("{pre}1.201606021454002"),
        &format!("{pre}2.201606021454003"),
        &format!("{pre}3.201606021454003.1"),
    );
    add(
        RIG_E,
        &format!("{pre}1.201606021454006"),
        &format!("{pre}2.201606021454007"),
        &format!("{pre}3.201606021454007.1"),
    );
    add(
        RIG_E,
        &format!("{pre}1.201607011605055"),
        &format!("{pre}2.201607011605056"),
        &format!("{pre}3.201607011605056.1"),
    );
    for k in 1..=5 {
        add(
            RIG_F,
            &format!("{pre}1.201606061008030"),
            &format!("{pre}2.201606061008031"),
            &format!("{pre}3.201606061008031.{k}"),
        );
    }
    add(
        RIG_F,
        &format!("{pre}1.201607011606000"),
        &format!("{pre}2.201607011606000"),
        &format!("{pre}3.201607011606000.1"),
    );
    match s::jpeg_lossless(&single) {
        None => false,
        Some(jpeg) => {
            let info = read_instance(&jpeg).unwrap();
            assert_eq!(info.transfer_syntax_uid, "1.2.840.10008.1.2.4.70");
            sim.store.add_instance(RIG_E, info, jpeg.into()).unwrap();
            true
        }
    }
}

#[tokio::test]
async fn nist_rig_rad75_cases() {
    let sim = TlbSim::new(TlbConfig::new(RIG_HOME.parse().unwrap()));
    let have_jpeg = rig_node(&sim);
    let run = sim.start(Transport::Plain).await.unwrap();
    let url = run.url(paths::RAD75);
    let mut table = Vec::new();
    let mut ran = 0;
    for req_file in common::files_under("ihe/samples/testkit")
        .into_iter()
        .filter(|p| p.ends_with("Rad75RetrieveRequest/RAD-75Request.xml"))
    {
        let test_dir = req_file.parent().unwrap().parent().unwrap();
        let test = test_dir.file_name().unwrap().to_string_lossy().into_owned();
        if !have_jpeg && (test == "rig_5422" || test == "rig_5423") {
            eprintln!("SKIP {test}: needs the JPEG Lossless encoding made with dcmtk");
            continue;
        }
        let step_plan =
            std::fs::read_to_string(req_file.parent().unwrap().join("testplan.xml")).unwrap();
        let validate_plan =
            std::fs::read_to_string(test_dir.join("ValidateRad75Response/testplan.xml")).unwrap();
        let want_status = match step_plan
            .split("<ExpectedStatus>")
            .nth(1)
            .and_then(|t| t.split('<').next())
            .unwrap()
            .trim()
        {
            "Success" => ResponseStatus::Success,
            "PartialSuccess" => ResponseStatus::PartialSuccess,
            _ => ResponseStatus::Failure,
        };
        let mut want_codes: Vec<String> = validate_plan
            .split("errorCode=\"")
            .skip(1)
            .map(|t| t.split('"').next().unwrap().to_owned())
            .collect();
        want_codes.dedup();
        // the DocumentResponses of the gold standard ("sameRetImgs")
        let mut want_docs: Vec<String> = validate_plan
            .split("<xdsb:DocumentUniqueId>")
            .skip(1)
            .map(|t| t.split('<').next().unwrap().trim().to_owned())
            .collect();
        want_docs.sort();
        let bare = std::fs::read_to_string(&req_file).unwrap();
        let a = s::post(
            &url,
            &s::soap_ct(Transaction::Rad75.request_action()),
            s::envelope_around(Transaction::Rad75, &bare).into_bytes(),
        )
        .await;
        let r = s::retrieve_response(&a, Transaction::Rad75);
        let got_codes = codes(&r.response.errors);
        let mut got_docs: Vec<String> = r
            .documents
            .iter()
            .map(|d| d.meta.document_unique_id.clone())
            .collect();
        got_docs.sort();
        table.push(format!(
            "{test}  expected {want_status:?} {want_codes:?} {} docs, got {:?} {got_codes:?} {} docs",
            want_docs.len(),
            r.response.status,
            got_docs.len()
        ));
        assert_eq!(r.response.status, want_status, "{test}");
        assert_eq!(got_codes, want_codes, "{test}");
        assert_eq!(got_docs, want_docs, "{test}");
        for d in &r.documents {
            assert_eq!(
                d.meta
                    .home_community_id
                    .as_ref()
                    .map(ToString::to_string)
                    .as_deref(),
                Some(RIG_HOME),
                "{test}"
            );
            assert_eq!(d.meta.mime_type, "application/dicom");
            let Content::Inline(b) = &d.content else {
                panic!()
            };
            let info = read_instance(b).unwrap();
            assert_eq!(info.sop_instance_uid, d.meta.document_unique_id);
            if test == "rig_5422" || test == "rig_5423" {
                assert_eq!(info.transfer_syntax_uid, "1.2.840.10008.1.2.4.70", "{test}");
            }
        }
        ran += 1;
    }
    eprintln!("{}", table.join("\n"));
    assert!(ran >= 9, "only {ran} rig_* requests ran");
}

#[tokio::test]
async fn rad75_community_rules() {
    let sim = TlbSim::new(TlbConfig::new(RIG_HOME.parse().unwrap()));
    rig_node(&sim);
    let run = sim.start(Transport::Plain).await.unwrap();
    let url = run.url(paths::RAD75);
    let req = |home: Option<&str>| RetrieveImagingDocumentSetRequest {
        studies: vec![StudyRequest {
            study_instance_uid: "1.3.6.1.4.1.21367.201599.1.201606021454006".into(),
            series: vec![SeriesRequest {
                series_instance_uid: "1.3.6.1.4.1.21367.201599.2.201606021454007".into(),
                documents: vec![DocumentRequest {
                    home_community_id: home.map(|h| h.parse().unwrap()),
                    repository_unique_id: RIG_E.into(),
                    document_unique_id: "1.3.6.1.4.1.21367.201599.3.201606021454007.1".into(),
                }],
            }],
        }],
        transfer_syntaxes: vec!["1.2.840.10008.1.2.1".into()],
    };
    let r = s::retrieve(&url, Transaction::Rad75, &req(None)).await;
    assert_eq!(codes(&r.response.errors), ["XDSMissingHomeCommunityId"]);
    let r = s::retrieve(
        &url,
        Transaction::Rad75,
        &req(Some("urn:oid:1.3.6.1.4.1.21367.13.70.202")),
    )
    .await;
    assert_eq!(codes(&r.response.errors), ["XDSUnknownCommunity"]);
    let r = s::retrieve(&url, Transaction::Rad75, &req(Some(RIG_HOME))).await;
    assert_eq!(r.response.status, ResponseStatus::Success);
    // omit_home: DocumentResponses without HomeCommunityId (what an initiating gateway must flag)
    sim.control.set_faults(Faults {
        omit_home: true,
        ..Faults::default()
    });
    let r = s::retrieve(&url, Transaction::Rad75, &req(Some(RIG_HOME))).await;
    assert_eq!(r.documents.len(), 1);
    assert_eq!(r.missing_home_errors().len(), 1);
}

fn json(a: &s::Answer) -> Vec<Value> {
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.content_type, "application/dicom+json");
    match serde_json::from_slice::<Value>(&a.body).unwrap() {
        Value::Array(v) => v,
        other => panic!("{other}"),
    }
}

fn value<'a>(o: &'a Value, tag: &str) -> &'a Value {
    &o[tag]["Value"][0]
}

#[tokio::test]
async fn dicomweb_qido_and_wado() {
    let (sim, run, studies) = node(TlbConfig::new(home())).await;
    let base = run.url(paths::DICOMWEB);
    let bsn = SynthPatient::example().bsn;

    // studies of the patient
    let found = json(
        &s::get(
            &format!("{base}/studies?PatientID={bsn}"),
            Some("application/dicom+json"),
        )
        .await,
    );
    assert_eq!(found.len(), 2);
    for st in &studies {
        let o = found
            .iter()
            .find(|o| value(o, "0020000D") == st.study_instance_uid.as_str())
            .unwrap();
        assert_eq!(o["0020000D"]["vr"], "UI");
        assert_eq!(value(o, "00080050"), st.accession_number.as_str());
        assert_eq!(value(o, "00080020"), st.study_date.as_str());
        assert_eq!(value(o, "00100020"), bsn.as_str());
        assert!(value(o, "00100010")["Alphabetic"].is_string());
        assert_eq!(value(o, "00201208"), st.instances.len());
        assert_eq!(value(o, "00080061"), st.modalities[0].as_str());
        assert!(
            value(o, "00081190")
                .as_str()
                .unwrap()
                .ends_with(&st.study_instance_uid)
        );
        // tag keys in ascending order (PS3.18 F.2)
        let keys: Vec<&String> = o.as_object().unwrap().keys().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }
    // by accession, by tag key, with limit
    let st = &studies[1];
    assert_eq!(
        json(
            &s::get(
                &format!("{base}/studies?AccessionNumber={}", st.accession_number),
                None
            )
            .await
        )
        .len(),
        1
    );
    assert_eq!(
        json(&s::get(&format!("{base}/studies?00100020={bsn}&limit=1"), None).await).len(),
        1
    );
    // no match: 204 (PS3.18 8.3.4.4.1)
    let a = s::get(&format!("{base}/studies?PatientID=000000000"), None).await;
    assert_eq!(a.status, 204);
    assert!(a.body.is_empty());
    // series and instances
    let series = json(
        &s::get(
            &format!("{base}/studies/{}/series", st.study_instance_uid),
            None,
        )
        .await,
    );
    let n_series = st
        .instances
        .iter()
        .map(|i| &i.series_instance_uid)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    assert_eq!(series.len(), n_series);
    let se = value(&series[0], "0020000E").as_str().unwrap().to_owned();
    let inst = json(
        &s::get(
            &format!(
                "{base}/studies/{}/series/{se}/instances",
                st.study_instance_uid
            ),
            None,
        )
        .await,
    );
    assert_eq!(
        inst.len(),
        st.instances
            .iter()
            .filter(|i| i.series_instance_uid == se)
            .count()
    );
    assert_eq!(
        json(
            &s::get(
                &format!("{base}/studies/{}/instances", st.study_instance_uid),
                None
            )
            .await
        )
        .len(),
        st.instances.len()
    );
    // QIDO refuses XML
    assert_eq!(
        s::get(&format!("{base}/studies"), Some("application/dicom+xml"))
            .await
            .status,
        406
    );

    // WADO-RS: one instance, a series, the study; bytes as stored
    let i0 = st
        .instances
        .iter()
        .find(|i| i.series_instance_uid == se)
        .unwrap();
    let parts = |a: &s::Answer| {
        assert_eq!(a.status, 200, "{}", a.text());
        let ct = mtom::ContentType::parse(&a.content_type).unwrap();
        assert!(ct.is_multipart_related());
        assert_eq!(ct.param("type"), Some("application/dicom"));
        mtom::read_multipart(&ct, &a.body, &MtomLimits::default()).unwrap()
    };
    let a = s::get(
        &format!(
            "{base}/studies/{}/series/{se}/instances/{}",
            st.study_instance_uid, i0.sop_instance_uid
        ),
        Some("multipart/related; type=\"application/dicom\"; transfer-syntax=*"),
    )
    .await;
    let p = parts(&a);
    assert_eq!(p.len(), 1);
    assert_eq!(
        p[0].headers.content_type(),
        Some("application/dicom; transfer-syntax=1.2.840.10008.1.2.1")
    );
    assert_eq!(sha256_hex(&p[0].body), i0.sha256);
    let a = s::get(&format!("{base}/studies/{}", st.study_instance_uid), None).await;
    let p = parts(&a);
    let mut got: Vec<String> = p.iter().map(|x| sha256_hex(&x.body)).collect();
    let mut want: Vec<String> = st.instances.iter().map(|i| i.sha256.clone()).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    let a = s::get(
        &format!("{base}/studies/{}/series/{se}", st.study_instance_uid),
        None,
    )
    .await;
    assert_eq!(parts(&a).len(), inst.len());
    // a transfer syntax the node does not hold, an unknown instance, a rendered media type
    let a = s::get(
        &format!("{base}/studies/{}", st.study_instance_uid),
        Some(
            "multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.4.50",
        ),
    )
    .await;
    assert_eq!(a.status, 406);
    assert_eq!(
        s::get(&format!("{base}/studies/1.2.3.4"), None)
            .await
            .status,
        404
    );
    assert_eq!(
        s::get(
            &format!("{base}/studies/{}", st.study_instance_uid),
            Some("image/jpeg")
        )
        .await
        .status,
        406
    );

    // faults reach DICOMweb too
    sim.control.set_faults(Faults {
        garbage_body: true,
        only: vec![Endpoint::Qido],
        ..Faults::default()
    });
    let a = s::get(&format!("{base}/studies?PatientID={bsn}"), None).await;
    assert_eq!(a.status, 200);
    assert!(serde_json::from_slice::<Value>(&a.body).is_err());
    sim.control.set_faults(Faults {
        http_500: true,
        only: vec![Endpoint::Wado],
        ..Faults::default()
    });
    assert_eq!(
        s::get(&format!("{base}/studies/{}", st.study_instance_uid), None)
            .await
            .status,
        500
    );
    assert_eq!(sim.control.requests(Endpoint::Wado), 7);
}

#[tokio::test]
async fn dicomweb_options() {
    let mut cfg = TlbConfig::new(home());
    cfg.qido_empty = QidoEmpty::EmptyArray;
    let (_sim, run, _) = node(cfg).await;
    let a = s::get(&run.url("/dicomweb/studies?PatientID=1"), None).await;
    assert_eq!(json(&a).len(), 0);
    let mut cfg = TlbConfig::new(home());
    cfg.dicomweb = false;
    let (_sim, run, _) = node(cfg).await;
    assert_eq!(
        s::get(&run.url("/dicomweb/studies"), None).await.status,
        404
    );
}

#[tokio::test]
async fn quirks_of_real_peers() {
    let (sim, run, studies) = node(TlbConfig::new(home())).await;
    let q_url = run.url(paths::ITI38);
    // objects without home
    sim.control.set_faults(Faults {
        omit_home: true,
        ..Faults::default()
    });
    let r = s::query(
        &q_url,
        Transaction::Iti38,
        &find_documents(None, ReturnType::LeafClass),
    )
    .await;
    assert_eq!(r.objects_missing_home().count(), 4);
    assert_eq!(r.missing_home_errors(Some(&home())).len(), 4);
    let r = s::query(
        &q_url,
        Transaction::Iti38,
        &find_documents(None, ReturnType::ObjectRef),
    )
    .await;
    assert_eq!(r.objects_missing_home().count(), 4);
    // other prefixes and base64 retrieves on ITI-39
    sim.control.set_faults(Faults {
        foreign_prefixes: true,
        retrieve_encoding: duo_testkit::sim::faults::RetrieveEncoding::PlainSoapBase64,
        ..Faults::default()
    });
    let a = s::send(
        &q_url,
        Transaction::Iti38,
        &find_documents(None, ReturnType::LeafClass),
    )
    .await;
    assert!(a.text().contains("<S:Envelope"));
    assert_eq!(s::query_response(&a, Transaction::Iti38).objects.len(), 4);
    let r = s::retrieve(
        &run.url(paths::ITI39),
        Transaction::Iti39,
        &RetrieveDocumentSetRequest {
            documents: vec![DocumentRequest {
                home_community_id: Some(home()),
                repository_unique_id: REPO.into(),
                document_unique_id: studies[1].manifest.unique_id.clone(),
            }],
        },
    )
    .await;
    let Content::Inline(b) = &r.documents[0].content else {
        panic!()
    };
    assert_eq!(sha256_hex(b), studies[1].manifest.sha256);
    // a SOAP fault on RAD-75 only
    sim.control.set_faults(Faults {
        soap_fault: true,
        only: vec![Endpoint::Rad75],
        ..Faults::default()
    });
    let a = s::send(
        &run.url(paths::RAD75),
        Transaction::Rad75,
        &RetrieveImagingDocumentSetRequest {
            studies: vec![StudyRequest {
                study_instance_uid: "1".into(),
                series: vec![],
            }],
            transfer_syntaxes: vec!["1.2.840.10008.1.2.1".into()],
        },
    )
    .await;
    assert_eq!(s::fault_of(&a).code, duo_runtime::ihe::FaultCode::Receiver);
    assert_eq!(
        s::query(
            &q_url,
            Transaction::Iti38,
            &find_documents(None, ReturnType::ObjectRef)
        )
        .await
        .status,
        ResponseStatus::Success
    );
}
