//! The community backends against their simulators over mutual TLS (issue 3 "each backend against its
//! simulator"): `XdsCommunity` against the XDS-I.b affinity domain simulator (ITI-18, ITI-43, RAD-69
//! streamed), `XcaCommunity` against the TLB node simulator (ITI-38, ITI-39, RAD-75), and
//! `DicomwebCommunity` against the TLB node's DICOMweb routes (QIDO-RS / WADO-RS). Every retrieved
//! byte is compared (SHA-256) with what the simulator was seeded with.

mod gateway_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use duo_runtime::backend::dicomweb::DicomwebCommunity;
use duo_runtime::backend::soap_client::SoapClient;
use duo_runtime::backend::xca::{XcaCommunity, XcaEndpoints};
use duo_runtime::backend::xds::XdsCommunity;
use duo_runtime::backend::{BackendError, CallContext, Community, RetrieveStream};
use duo_runtime::config::LocalBackend;
use duo_runtime::consent::Decision;
use duo_runtime::dicom::parse_kos;
use duo_runtime::gateway::timeline_api::collect_documents;
use duo_runtime::ihe::ebrim::{ErrorCode, Identifiable, ResponseStatus};
use duo_runtime::ihe::mtom::{MtomLimits, RetrieveItem};
use duo_runtime::ihe::query::{AdhocQuery, AdhocQueryRequest, ReturnType, StoredQuery, param};
use duo_runtime::ihe::retrieve::{DocumentRequest, RetrieveDocumentSetRequest};
use duo_runtime::ihe::transform::document_entries;
use duo_runtime::ihe::{RegistryError, Transaction};
use duo_runtime::model::{DocumentKind, reference_type};
use duo_runtime::tls::TlsMaterial;
use duo_testkit::sim::faults::{Endpoint, Faults};
use duo_testkit::sim::seed::{SeededStudy, sha256_hex};
use futures::StreamExt;
use gateway_support::*;

/// Hospital A on XDS (2 studies), hospital B on TLB (2 studies).
async fn world() -> World {
    build(options(
        vec![
            spec("A", Kind::Xds, 2, Decision::Permit),
            spec("B", Kind::Tlb, 2, Decision::Permit),
        ],
        LocalizationMode::AllCommunities,
    ))
    .await
}

/// A SOAP client with hospital A's gateway identity (what its backends use).
fn client(w: &World) -> SoapClient {
    let http = TlsMaterial::load(&w.hospitals[0].config.server.tls)
        .unwrap()
        .http_client(Duration::from_secs(5))
        .unwrap();
    SoapClient::new(http, MtomLimits::default(), Duration::from_secs(5))
}

fn xds(w: &World) -> XdsCommunity {
    let LocalBackend::Xds(x) = &w.hospitals[0].config.local else {
        panic!("A is on XDS")
    };
    XdsCommunity::new(
        &x.registry_url,
        &x.repositories,
        &x.imaging_document_sources,
        client(w),
    )
}

fn tlb_endpoints(w: &World) -> XcaEndpoints {
    let LocalBackend::Xca(x) = &w.hospitals[1].config.local else {
        panic!("B is on TLB")
    };
    XcaEndpoints {
        home_community_id: x.home_community_id.clone(),
        query_url: x.query_url.clone(),
        retrieve_url: x.retrieve_url.clone(),
        imaging_retrieve_url: x.imaging_retrieve_url.clone(),
        fronted_communities: Vec::new(),
    }
}

/// The repository id the DICOMweb backend presents for the PACS.
const PACS_REPO: &str = "2.16.528.1.1007.99.3.1";

fn dicomweb(w: &World) -> DicomwebCommunity {
    let LocalBackend::Xca(x) = &w.hospitals[1].config.local else {
        panic!("B is on TLB")
    };
    DicomwebCommunity::new(
        x.dicomweb_url.as_deref().unwrap(),
        PACS_REPO,
        &w.hospitals[1].config.organization,
        client(w),
    )
}

fn ctx() -> CallContext {
    CallContext::default()
}

/// Every document of a retrieve stream: (uniqueId, SHA-256), in stream order, after checking that the
/// items come as `Document(i)`, chunks, `End` for each document in index order.
async fn drain(s: RetrieveStream) -> Vec<(String, String)> {
    let metas = s.documents.clone();
    let mut items = s.items;
    let mut out = Vec::new();
    let mut cur: Option<(usize, Vec<u8>)> = None;
    let mut next = 0;
    while let Some(it) = items.next().await {
        match it.unwrap() {
            RetrieveItem::Document(i) => {
                assert!(cur.is_none(), "document {i} began inside another");
                assert_eq!(i, next, "documents in index order");
                next += 1;
                cur = Some((i, Vec::new()));
            }
            RetrieveItem::Chunk(c) => cur.as_mut().expect("chunk outside a document").1.extend(&c),
            RetrieveItem::End => {
                let (i, b) = cur.take().expect("end outside a document");
                out.push((metas[i].document_unique_id.clone(), sha256_hex(&b)));
            }
            RetrieveItem::Failed(i, why) => panic!("document {i} failed: {why}"),
        }
    }
    assert!(cur.is_none(), "stream ended inside a document");
    assert_eq!(out.len(), metas.len(), "every announced document delivered");
    out
}

fn instances(study: &SeededStudy) -> Vec<(String, String)> {
    study
        .instances
        .iter()
        .map(|i| (i.sop_instance_uid.clone(), i.sha256.clone()))
        .collect()
}

fn codes(errors: &[RegistryError]) -> Vec<&str> {
    errors.iter().map(|e| e.error_code.as_str()).collect()
}

#[tokio::test]
async fn xds_community_against_the_affinity_domain_simulator() {
    let w = world().await;
    let a = &w.hospitals[0];
    let xds = xds(&w);
    let bsn = &w.patient.bsn;

    // ITI-18: the manifests and reports of both studies, without `home` (an affinity domain has none)
    let r = xds
        .query(ctx(), find_documents(bsn, None, ReturnType::LeafClass))
        .await
        .unwrap();
    assert_eq!(r.status, ResponseStatus::Success);
    let (entries, bad) = document_entries(&r.objects);
    assert!(bad.is_empty(), "{bad:?}");
    let got: BTreeSet<&str> = entries.iter().map(|e| e.unique_id.as_str()).collect();
    let want: BTreeSet<&str> = a
        .studies
        .iter()
        .flat_map(|s| [s.manifest.unique_id.as_str(), s.report.unique_id.as_str()])
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.kind() == DocumentKind::ImagingManifest)
            .count(),
        2
    );
    // the query carried no `@home` to the registry
    let last = a.control.recorded().pop().unwrap();
    assert_eq!(last.endpoint, Endpoint::Iti18);
    assert!(!String::from_utf8_lossy(&last.body).contains(" home="));

    // ITI-43: manifest and report of the first study, byte for byte
    let s0 = &a.studies[0];
    let req = RetrieveDocumentSetRequest {
        documents: [&s0.manifest, &s0.report]
            .iter()
            .map(|d| DocumentRequest {
                home_community_id: Some(a.home.clone()),
                repository_unique_id: s0.repository_unique_id.clone(),
                document_unique_id: d.unique_id.clone(),
            })
            .collect(),
    };
    let before = a.control.requests(Endpoint::Iti43);
    let s = xds.retrieve(ctx(), req).await.unwrap();
    assert_eq!(s.response.status, ResponseStatus::Success);
    assert_eq!(
        drain(s).await,
        vec![
            (s0.manifest.unique_id.clone(), s0.manifest.sha256.clone()),
            (s0.report.unique_id.clone(), s0.report.sha256.clone()),
        ]
    );
    assert_eq!(a.control.requests(Endpoint::Iti43), before + 1, "one call");
    let rec = a.control.recorded().pop().unwrap();
    assert!(
        !String::from_utf8_lossy(&rec.body).contains("HomeCommunityId"),
        "no homeCommunityId inside the affinity domain"
    );

    // a repository the community does not have: an error, no call
    let before = a.control.total_requests();
    let s = xds
        .retrieve(
            ctx(),
            RetrieveDocumentSetRequest {
                documents: vec![DocumentRequest {
                    home_community_id: None,
                    repository_unique_id: "1.2.3.999".into(),
                    document_unique_id: s0.manifest.unique_id.clone(),
                }],
            },
        )
        .await
        .unwrap();
    assert_eq!(codes(&s.response.errors), ["XDSUnknownRepositoryId"]);
    assert_eq!(a.control.total_requests(), before);

    // RAD-69, streamed: every instance of both studies, exact bytes, one call per source
    for st in &a.studies {
        let req = st.imaging_request(
            Some(&a.home),
            &[duo_runtime::dicom::transfer_syntax::EXPLICIT_VR_LITTLE_ENDIAN],
        );
        let s = xds.retrieve_images(ctx(), req).await.unwrap();
        assert_eq!(
            s.response.status,
            ResponseStatus::Success,
            "{:?}",
            s.response
        );
        assert_eq!(drain(s).await, instances(st));
    }
    assert_eq!(a.control.requests(Endpoint::Rad69), 2);
    w.stop().await;
}

#[tokio::test]
async fn xds_community_failures_map_to_the_right_errors() {
    let w = world().await;
    let a = &w.hospitals[0];
    let xds = xds(&w);
    let q = || find_documents(&w.patient.bsn, None, ReturnType::LeafClass);
    let cases: [(Faults, &str, ErrorCode); 3] = [
        (
            Faults {
                http_500: true,
                ..Faults::default()
            },
            "http",
            ErrorCode::XDSUnavailableCommunity,
        ),
        (
            Faults {
                soap_fault: true,
                ..Faults::default()
            },
            "fault",
            ErrorCode::XDSRegistryError,
        ),
        (
            Faults {
                garbage_body: true,
                ..Faults::default()
            },
            "protocol",
            ErrorCode::XDSRegistryError,
        ),
    ];
    for (faults, label, code) in cases {
        a.control.set_faults(faults);
        let e = xds.query(ctx(), q()).await.unwrap_err();
        assert_eq!(e.label(), label, "{e}");
        let re = e.to_registry_error(Transaction::Iti18, "urn:oid:1.2.3");
        assert_eq!(re.error_code, code, "{e}");
    }
    // slower than the caller's deadline
    a.control.set_faults(Faults {
        delay_ms: 1_000,
        ..Faults::default()
    });
    let started = std::time::Instant::now();
    let e = xds
        .query(
            CallContext {
                deadline: Some(Duration::from_millis(200)),
                ..ctx()
            },
            q(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, BackendError::Timeout(_)), "{e}");
    assert!(started.elapsed() < Duration::from_millis(900));
    assert_eq!(
        e.to_registry_error(Transaction::Iti38, "x").error_code,
        ErrorCode::XDSUnavailableCommunity
    );
    a.control.reset_faults();
    w.stop().await;
}

#[tokio::test]
async fn xca_community_against_the_tlb_node_simulator() {
    let w = world().await;
    let b = &w.hospitals[1];
    let ep = tlb_endpoints(&w);
    let node = ep.home_community_id.clone();
    let xca = XcaCommunity::new(ep, client(&w));
    let bsn = &w.patient.bsn;
    let requester = requester(&w, 0);
    let block = xua(&requester, Some(bsn), &node.to_string());
    let ctx = CallContext {
        header_blocks: Arc::new(vec![block]),
        deadline: None,
    };

    // ITI-38 names the node in @home; everything returned carries it; the XUA assertion travels along
    let r = xca
        .query(
            ctx.clone(),
            find_documents(bsn, None, ReturnType::LeafClass),
        )
        .await
        .unwrap();
    assert_eq!(r.status, ResponseStatus::Success, "{:?}", r.errors);
    assert_eq!(r.objects.len(), 4);
    assert!(r.objects.iter().all(|o| o.home() == Some(&node)));
    let rec = b.control.recorded().pop().unwrap();
    assert_eq!(rec.endpoint, Endpoint::Iti38);
    let h = rec.soap_header.unwrap();
    assert!(
        h.other.iter().any(|x| x.contains("Assertion")),
        "XUA assertion sent: {:?}",
        h.other
    );

    // ITI-39: the manifests of both studies, byte for byte, with the node's HomeCommunityId
    let req = RetrieveDocumentSetRequest {
        documents: b
            .studies
            .iter()
            .map(|s| DocumentRequest {
                home_community_id: None,
                repository_unique_id: s.repository_unique_id.clone(),
                document_unique_id: s.manifest.unique_id.clone(),
            })
            .collect(),
    };
    let s = xca.retrieve(ctx.clone(), req).await.unwrap();
    assert_eq!(s.response.status, ResponseStatus::Success);
    assert!(
        s.documents
            .iter()
            .all(|d| d.home_community_id == Some(node.clone()))
    );
    let want: Vec<(String, String)> = b
        .studies
        .iter()
        .map(|s| (s.manifest.unique_id.clone(), s.manifest.sha256.clone()))
        .collect();
    assert_eq!(drain(s).await, want);

    // RAD-75: every instance of the first study, exact bytes
    let st = &b.studies[0];
    let s = xca
        .retrieve_images(
            ctx,
            st.imaging_request(
                None,
                &[duo_runtime::dicom::transfer_syntax::EXPLICIT_VR_LITTLE_ENDIAN],
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        s.response.status,
        ResponseStatus::Success,
        "{:?}",
        s.response
    );
    assert_eq!(drain(s).await, instances(st));
    assert_eq!(b.control.requests(Endpoint::Rad75), 1);
    w.stop().await;
}

#[tokio::test]
async fn dicomweb_community_against_the_tlb_node_dicomweb_routes() {
    let w = world().await;
    let b = &w.hospitals[1];
    let pacs = dicomweb(&w);
    let bsn = &w.patient.bsn;

    // FindDocuments: one KOS DocumentEntry per study, from QIDO-RS
    let r = pacs
        .query(ctx(), find_documents(bsn, None, ReturnType::LeafClass))
        .await
        .unwrap();
    assert_eq!(r.status, ResponseStatus::Success);
    let (entries, bad) = document_entries(&r.objects);
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(entries.len(), b.studies.len());
    assert!(b.control.requests(Endpoint::Qido) >= 1);
    assert_eq!(b.control.requests(Endpoint::Iti38), 0, "DICOMweb only");
    for e in &entries {
        assert_eq!(e.kind(), DocumentKind::ImagingManifest, "{e:?}");
        assert_eq!(e.mime_type, "application/dicom");
        assert_eq!(e.repository_unique_id, PACS_REPO);
        assert_eq!(e.home_community_id.as_ref(), Some(&b.home));
    }
    let by_study = |uid: &str| {
        entries
            .iter()
            .find(|e| {
                e.reference_ids
                    .iter()
                    .any(|r| r.id_type == reference_type::STUDY_INSTANCE_UID && r.id == uid)
            })
            .unwrap_or_else(|| panic!("no entry for study {uid}"))
    };
    for st in &b.studies {
        let e = by_study(&st.study_instance_uid);
        assert!(
            e.reference_ids
                .iter()
                .any(|r| r.id_type == reference_type::ACCESSION && r.id == st.accession_number),
            "{e:?}"
        );
        let modalities: BTreeSet<&str> = e.event_codes.iter().map(|c| c.code.as_str()).collect();
        let want: BTreeSet<&str> = st
            .modalities
            .iter()
            .map(String::as_str)
            .filter(|m| *m != "SR" && *m != "KO")
            .collect();
        assert_eq!(modalities, want);
    }

    // the KOS is built on demand (ITI-43 semantics) and parses back to the study with every instance
    let st = &b.studies[0];
    let e = by_study(&st.study_instance_uid);
    let s = pacs
        .retrieve(
            ctx(),
            RetrieveDocumentSetRequest {
                documents: vec![DocumentRequest {
                    home_community_id: None,
                    repository_unique_id: PACS_REPO.into(),
                    document_unique_id: e.unique_id.clone(),
                }],
            },
        )
        .await
        .unwrap();
    assert_eq!(
        s.response.status,
        ResponseStatus::Success,
        "{:?}",
        s.response
    );
    let docs = collect_documents(s, 1 << 20).await.unwrap();
    assert_eq!(docs.len(), 1);
    let kos = parse_kos(&docs[0].1).unwrap();
    let study = kos.study().unwrap();
    assert_eq!(study.study_instance_uid, st.study_instance_uid);
    assert_eq!(study.accession_number, st.accession_number);
    let referenced: BTreeSet<String> = study
        .series
        .iter()
        .flat_map(|se| se.instances.iter().map(|i| i.sop_instance_uid.clone()))
        .collect();
    let seeded: BTreeSet<String> = st
        .instances
        .iter()
        .map(|i| i.sop_instance_uid.clone())
        .collect();
    assert_eq!(referenced, seeded);

    // GetDocuments and FindDocumentsByReferenceId find the same entry again
    let r = pacs
        .query(ctx(), get_documents(&[e.unique_id.as_str()], None))
        .await
        .unwrap();
    assert_eq!(r.objects.len(), 1);
    let mut q = AdhocQuery::new(StoredQuery::FindDocumentsByReferenceId);
    q.set_single(param::DE_PATIENT_ID, &bsn.to_cx());
    q.add_list(
        param::DE_REFERENCE_ID_LIST,
        &[format!(
            "{}^^^^{}",
            st.study_instance_uid,
            reference_type::STUDY_INSTANCE_UID
        )],
    );
    let r = pacs
        .query(ctx(), AdhocQueryRequest::new(q, ReturnType::ObjectRef))
        .await
        .unwrap();
    assert_eq!(r.objects.len(), 1);
    assert!(matches!(&r.objects[0], Identifiable::ObjectRef(o) if o.id == e.entry_uuid));

    // RAD-69 semantics over WADO-RS: the exact stored bytes of every instance; an unknown one is an
    // XDSDocumentUniqueIdError and does not stop the others
    let mut req = st.imaging_request(None, &["1.2.840.10008.1.2.1"]);
    for se in &mut req.studies[0].series {
        for d in &mut se.documents {
            d.repository_unique_id = PACS_REPO.into();
        }
    }
    let wado_before = b.control.requests(Endpoint::Wado);
    let mut with_unknown = req.clone();
    with_unknown.studies[0].series[0]
        .documents
        .push(DocumentRequest {
            home_community_id: None,
            repository_unique_id: PACS_REPO.into(),
            document_unique_id: "2.25.1234567890".into(),
        });
    let s = pacs.retrieve_images(ctx(), with_unknown).await.unwrap();
    assert_eq!(s.response.status, ResponseStatus::PartialSuccess);
    assert_eq!(codes(&s.response.errors), ["XDSDocumentUniqueIdError"]);
    assert_eq!(drain(s).await, instances(st));
    assert_eq!(
        b.control.requests(Endpoint::Wado) - wado_before,
        st.instances.len() as u64,
        "one WADO-RS request per instance"
    );
    w.stop().await;
}
