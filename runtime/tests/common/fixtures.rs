//! Realistic messages for the wire tests and the benchmarks (shared with `benches/ihe.rs` by path).
#![allow(dead_code)]

use bytes::Bytes;
use duo_runtime::ihe::ebrim::{
    Association, Classification, ErrorCode, ExternalIdentifier, Identifiable, ObjectRef,
    RegistryError, RegistryObject, RegistryPackage, Slot, association_type, availability, intl,
};
use duo_runtime::ihe::query::{
    AdhocQuery, AdhocQueryRequest, AdhocQueryResponse, ReturnType, StoredQuery, param,
};
use duo_runtime::ihe::retrieve::{
    Content, DocumentRequest, DocumentResponse, DocumentResponseMeta, RegistryResponse,
    RetrieveDocumentSetRequest, RetrieveDocumentSetResponse, RetrieveImagingDocumentSetRequest,
    SeriesRequest, StudyRequest,
};
use duo_runtime::ihe::transform::{document_entry_to_wire, uuids};
use duo_runtime::model::{
    AuthorInstitution, Code, DocumentEntry, HomeCommunityId, ReferenceId, reference_type,
};

pub const HOME: &str = "urn:oid:1.3.6.1.4.1.21367.13.70.201";
pub const PATIENT: &str = "999911120^^^&2.16.840.1.113883.2.4.6.3&ISO";

pub fn home() -> HomeCommunityId {
    HOME.parse().unwrap()
}

/// A KOS manifest DocumentEntry of a CT/MR study with every field the model holds.
pub fn kos_entry(i: usize) -> DocumentEntry {
    DocumentEntry {
        entry_uuid: format!("urn:uuid:7d1c2b4e-0000-4000-8000-{i:012}"),
        unique_id: format!("1.2.826.0.1.3680043.10.511.3.{i}"),
        home_community_id: Some(home()),
        repository_unique_id: "1.3.6.1.4.1.21367.13.71.201.1".into(),
        patient_id: PATIENT.into(),
        status: availability::APPROVED.into(),
        mime_type: "application/dicom".into(),
        title: format!("CT thorax met contrast {i}"),
        comments: "Röntgen & CT <spoed>".into(),
        class_code: Some(Code::new(
            "IMAGES",
            "2.16.840.1.113883.2.4.3.111.5.10.1",
            "Beelden",
        )),
        type_code: Some(Code::new(
            "18748-4",
            "2.16.840.1.113883.6.1",
            "Diagnostic imaging study",
        )),
        format_code: Some(Code::new(
            "1.2.840.10008.5.1.4.1.1.88.59",
            "1.2.840.10008.2.6.1",
            "Key Object Selection Document",
        )),
        healthcare_facility_type_code: Some(Code::new(
            "V6",
            "2.16.840.1.113883.2.4.15.1060",
            "Algemeen ziekenhuis",
        )),
        practice_setting_code: Some(Code::new("0362", "2.16.840.1.113883.2.4.6.7", "Radiologie")),
        confidentiality_codes: vec![Code::new("N", "2.16.840.1.113883.5.25", "Normal")],
        event_codes: vec![
            Code::new("CT", "DCM", "Computed Tomography"),
            Code::new("MR", "DCM", "Magnetic Resonance"),
            Code::new("T-D3000", "SRT", "Chest"),
        ],
        creation_time: "20240115093000".into(),
        service_start_time: "20240115090000".into(),
        service_stop_time: "20240115091500".into(),
        language_code: "nl-NL".into(),
        size: Some(123_456 + i as u64),
        hash: "da39a3ee5e6b4b0d3255bfef95601890afd80709".into(),
        author_institutions: vec![
            AuthorInstitution::parse_xon("Ziekenhuis A^^^^^&2.16.528.1.1007.3.3&ISO^^^^12345678"),
            AuthorInstitution::parse_xon("Radiologie B.V."),
        ],
        reference_ids: vec![
            ReferenceId {
                id: format!("ACC{i:06}"),
                assigning_authority: "&1.2.3.4&ISO".into(),
                id_type: reference_type::ACCESSION.into(),
            },
            ReferenceId {
                id: format!("1.2.826.0.1.3680043.10.511.1.{i}"),
                assigning_authority: String::new(),
                id_type: reference_type::STUDY_INSTANCE_UID.into(),
            },
        ],
        source_patient_id: "12345^^^&1.2.3.4.5&ISO".into(),
    }
}

/// A radiology report (PDF) linked to its study by accession number.
pub fn report_entry(i: usize) -> DocumentEntry {
    DocumentEntry {
        entry_uuid: format!("urn:uuid:9e8f7a6b-0000-4000-8000-{i:012}"),
        unique_id: format!("2.25.{}", 1000 + i),
        mime_type: "application/pdf".into(),
        title: "Verslag CT thorax".into(),
        class_code: Some(Code::new(
            "9491000146107",
            "2.16.840.1.113883.6.96",
            "Radiologieverslag",
        )),
        type_code: Some(Code::new("722124004", "2.16.840.1.113883.6.96", "Report")),
        format_code: Some(Code::new(
            "urn:ihe:rad:PDF",
            "1.3.6.1.4.1.19376.1.2.3",
            "PDF",
        )),
        event_codes: Vec::new(),
        reference_ids: vec![ReferenceId {
            id: format!("ACC{i:06}"),
            assigning_authority: "&1.2.3.4&ISO".into(),
            id_type: reference_type::ACCESSION.into(),
        }],
        ..kos_entry(i)
    }
}

/// A LeafClass response: `n` DocumentEntries (every tenth a report), a SubmissionSet with its
/// classification and HasMember association, an error (PartialSuccess).
pub fn query_response(n: usize) -> AdhocQueryResponse {
    let mut objects: Vec<Identifiable> = (0..n)
        .map(|i| {
            let d = if i % 10 == 9 {
                report_entry(i)
            } else {
                kos_entry(i)
            };
            Identifiable::ExtrinsicObject(document_entry_to_wire(&d))
        })
        .collect();
    let ss_id = "urn:uuid:5b9f1e2d-0000-4000-8000-000000000001";
    let mut ss = RegistryObject::with_id(ss_id);
    ss.home = Some(home());
    ss.object_type =
        Some("urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:RegistryPackage".into());
    ss.status = Some(availability::APPROVED.into());
    ss.slots
        .push(Slot::new("submissionTime", ["20240115093500"]));
    ss.name = intl("Beelden CT thorax");
    ss.classifications.push(Classification {
        object: {
            let mut o = RegistryObject::with_id("urn:uuid:5b9f1e2d-0000-4000-8000-000000000002");
            o.slots
                .push(Slot::new("codingScheme", ["2.16.840.1.113883.6.96"]));
            o.name = intl("Radiologie");
            o
        },
        classification_scheme: Some("urn:uuid:aa543740-bdda-424e-8c96-df4873be8500".into()),
        classified_object: ss_id.into(),
        classification_node: None,
        node_representation: Some("394914008".into()),
    });
    for (scheme, name, value) in [
        (
            uuids::SUBMISSION_SET_UNIQUE_ID,
            "XDSSubmissionSet.uniqueId",
            "1.2.3.4.5.6",
        ),
        (
            uuids::SUBMISSION_SET_SOURCE_ID,
            "XDSSubmissionSet.sourceId",
            "1.2.3.4",
        ),
        (
            uuids::SUBMISSION_SET_PATIENT_ID,
            "XDSSubmissionSet.patientId",
            PATIENT,
        ),
    ] {
        let mut o = RegistryObject::with_id(format!(
            "urn:uuid:5b9f1e2d-0000-4000-8000-{:012}",
            value.len()
        ));
        o.name = intl(name);
        ss.external_identifiers.push(ExternalIdentifier {
            object: o,
            registry_object: ss_id.into(),
            identification_scheme: scheme.into(),
            value: value.into(),
        });
    }
    objects.push(Identifiable::RegistryPackage(RegistryPackage {
        object: ss,
    }));
    objects.push(Identifiable::Classification(Classification {
        object: RegistryObject::with_id("urn:uuid:5b9f1e2d-0000-4000-8000-000000000003"),
        classification_scheme: None,
        classified_object: ss_id.into(),
        classification_node: Some(uuids::SUBMISSION_SET.into()),
        node_representation: None,
    }));
    if n > 0 {
        let mut a = RegistryObject::with_id("urn:uuid:5b9f1e2d-0000-4000-8000-000000000004");
        a.slots.push(Slot::new("SubmissionSetStatus", ["Original"]));
        objects.push(Identifiable::Association(Association {
            object: a,
            association_type: association_type::HAS_MEMBER.into(),
            source_object: ss_id.into(),
            target_object: format!("urn:uuid:7d1c2b4e-0000-4000-8000-{:012}", 0),
        }));
    }
    let errors = vec![
        RegistryError::new(
            ErrorCode::XDSUnavailableCommunity,
            "community 1.2.3.9 did not answer in 10 s",
        )
        .at("urn:oid:1.2.3.9"),
        RegistryError::new(ErrorCode::XDSRegistryError, "stale index").warning(),
    ];
    AdhocQueryResponse::new(objects, errors)
}

/// An ObjectRef response.
pub fn object_ref_response(n: usize) -> AdhocQueryResponse {
    AdhocQueryResponse::new(
        (0..n)
            .map(|i| {
                Identifiable::ObjectRef(ObjectRef {
                    id: format!("urn:uuid:7d1c2b4e-0000-4000-8000-{i:012}"),
                    home: Some(home()),
                    slots: Vec::new(),
                })
            })
            .collect(),
        Vec::new(),
    )
}

/// FindDocumentsByReferenceId for a Study Instance UID, with event codes (AND of ORs) and `home`.
pub fn query_request(return_type: ReturnType) -> AdhocQueryRequest {
    let mut q = AdhocQuery::new(StoredQuery::FindDocumentsByReferenceId);
    q.home = Some(home());
    q.set_single(param::DE_PATIENT_ID, PATIENT);
    q.add_list(param::DE_STATUS, &[availability::APPROVED]);
    q.add_list(
        param::DE_REFERENCE_ID_LIST,
        &["1.2.826.0.1.3680043.10.511.1.7^^^^urn:ihe:iti:xds:2016:studyInstanceUID"],
    );
    q.add_list(param::DE_EVENT_CODE_LIST, &["CT^^DCM", "MR^^DCM"]);
    q.add_list(param::DE_EVENT_CODE_LIST, &["T-D3000^^SRT"]);
    q.slots
        .push(Slot::new(param::DE_SERVICE_START_TIME_FROM, ["20230101"]));
    AdhocQueryRequest::new(q, return_type)
}

pub fn retrieve_request() -> RetrieveDocumentSetRequest {
    RetrieveDocumentSetRequest {
        documents: (0..3)
            .map(|i| DocumentRequest {
                home_community_id: Some(home()),
                repository_unique_id: "1.3.6.1.4.1.21367.13.71.201.1".into(),
                document_unique_id: format!("1.2.826.0.1.3680043.10.511.3.{i}"),
            })
            .collect(),
    }
}

pub fn imaging_request(with_home: bool) -> RetrieveImagingDocumentSetRequest {
    RetrieveImagingDocumentSetRequest {
        studies: (0..2)
            .map(|s| StudyRequest {
                study_instance_uid: format!("1.2.826.0.1.3680043.10.511.1.{s}"),
                series: (0..2)
                    .map(|se| SeriesRequest {
                        series_instance_uid: format!("1.2.826.0.1.3680043.10.511.2.{s}.{se}"),
                        documents: (0..3)
                            .map(|i| DocumentRequest {
                                home_community_id: with_home.then(home),
                                repository_unique_id: "1.3.6.1.4.1.21367.13.71.201.2".into(),
                                document_unique_id: format!(
                                    "1.2.826.0.1.3680043.10.511.4.{s}.{se}.{i}"
                                ),
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect(),
        transfer_syntaxes: vec![
            "1.2.840.10008.1.2.4.70".into(),
            "1.2.840.10008.1.2.1".into(),
        ],
    }
}

/// Deterministic pseudo-DICOM bytes (`DICM` preamble, binary body with CR/LF and boundary-like text).
pub fn dicom_bytes(i: usize, size: usize) -> Bytes {
    let mut v = vec![0u8; 128];
    v.extend_from_slice(b"DICM");
    let mut x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(1);
    while v.len() < size {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push(x as u8);
        if v.len().is_multiple_of(997) {
            v.extend_from_slice(b"\r\n--MIMEBoundary\r\n");
        }
    }
    v.truncate(size.max(132));
    // end on a byte zeep's `strip(b"\r\n")` would not eat
    if let Some(last) = v.last_mut() {
        *last = b'X';
    }
    Bytes::from(v)
}

/// A RAD-69/RAD-75 style response: `n` DICOM instances, one failing (PartialSuccess).
pub fn retrieve_response(n: usize, size: usize, with_home: bool) -> RetrieveDocumentSetResponse {
    let errors = vec![
        RegistryError::new(ErrorCode::XDSDocumentUniqueIdError, "unknown SOP instance")
            .at("1.2.826.0.1.3680043.10.511.4.9.9.9"),
    ];
    RetrieveDocumentSetResponse {
        response: RegistryResponse::derive(errors, n),
        documents: (0..n)
            .map(|i| DocumentResponse {
                meta: DocumentResponseMeta {
                    home_community_id: with_home.then(home),
                    repository_unique_id: "1.3.6.1.4.1.21367.13.71.201.2".into(),
                    document_unique_id: format!("1.2.826.0.1.3680043.10.511.4.0.0.{i}"),
                    new_repository_unique_id: None,
                    new_document_unique_id: None,
                    mime_type: "application/dicom".into(),
                },
                content: Content::Inline(dicom_bytes(i, size)),
            })
            .collect(),
    }
}
