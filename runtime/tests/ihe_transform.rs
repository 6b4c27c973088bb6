//! Acceptance (issue 2): wire ExtrinsicObject ⇄ model DocumentEntry, and parse → write → parse is
//! lossless for every field the model holds, through real XML.

mod common;
#[path = "common/fixtures.rs"]
mod fixtures;

use duo_runtime::ihe::ebrim::Identifiable;
use duo_runtime::ihe::query::AdhocQueryResponse;
use duo_runtime::ihe::soap::{SoapHeader, Transaction};
use duo_runtime::ihe::transform::{
    document_entries, document_entry_from_wire, document_entry_to_wire, uuids,
};
use duo_runtime::ihe::{read_bare, read_soap, write_soap};
use duo_runtime::model::{Code, DocumentEntry, DocumentKind};
use duo_runtime::xml::Limits;

fn through_xml(entries: &[DocumentEntry]) -> Vec<DocumentEntry> {
    let resp = AdhocQueryResponse::new(
        entries
            .iter()
            .map(|d| Identifiable::ExtrinsicObject(document_entry_to_wire(d)))
            .collect(),
        Vec::new(),
    );
    let h = SoapHeader::request(Transaction::Iti38.response_action(), None);
    let xml = write_soap(&h, &resp);
    let (_, back): (SoapHeader, AdhocQueryResponse) =
        read_soap(xml.as_bytes(), &Limits::default()).unwrap();
    let (ok, errs) = document_entries(&back.objects);
    assert!(errs.is_empty(), "{errs:?}");
    ok
}

#[test]
fn model_fields_survive_wire_and_xml() {
    let entries: Vec<DocumentEntry> = (0..4)
        .map(|i| {
            if i == 3 {
                fixtures::report_entry(i)
            } else {
                fixtures::kos_entry(i)
            }
        })
        .collect();
    let back = through_xml(&entries);
    assert_eq!(back, entries);
    // a second pass is identical too (canonical output)
    assert_eq!(through_xml(&back), entries);
    // imaging views
    let kos = &back[0];
    assert_eq!(kos.kind(), DocumentKind::ImagingManifest);
    assert_eq!(
        kos.study_instance_uid(),
        Some("1.2.826.0.1.3680043.10.511.1.0")
    );
    assert_eq!(kos.accession_number(), Some("ACC000000"));
    assert_eq!(kos.modalities().collect::<Vec<_>>(), ["CT", "MR"]);
    assert_eq!(
        kos.author_institutions[0].ura.as_ref().map(|u| u.as_str()),
        Some("12345678")
    );
    assert_eq!(back[3].kind(), DocumentKind::Report);
    assert_eq!(back[3].accession_number(), Some("ACC000003"));
}

#[test]
fn sparse_entries_survive_too() {
    let minimal = DocumentEntry {
        entry_uuid: "urn:uuid:00000000-0000-4000-8000-000000000001".into(),
        unique_id: "1.2.3".into(),
        patient_id: "x^^^&1.2&ISO".into(),
        status: "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved".into(),
        mime_type: "text/plain".into(),
        // escaping: quotes, ampersands, angle brackets, non-ASCII
        title: r#"a "b" & <c> é"#.into(),
        confidentiality_codes: vec![Code::new("N", "x", ""), Code::new("R", "x", "Restricted")],
        ..DocumentEntry::default()
    };
    assert_eq!(through_xml(std::slice::from_ref(&minimal)), vec![minimal]);
}

#[test]
fn nist_sample_maps_to_the_model() {
    let doc = common::read("ihe/samples/messagevalidator/sq-resp-lc.xml");
    let r: AdhocQueryResponse = read_bare(&doc, &Limits::default()).unwrap();
    let Identifiable::ExtrinsicObject(eo) = &r.objects[0] else {
        panic!("first object")
    };
    let d = document_entry_from_wire(eo).unwrap();
    assert_eq!(
        d.entry_uuid,
        "urn:uuid:974330cc-26ff-4ef8-aca5-f71efc3f1fb0"
    );
    assert_eq!(d.unique_id, "1.42.20100312104638.15");
    assert_eq!(
        d.patient_id,
        "c4d77e21d0dd487^^^&1.3.6.1.4.1.21367.2005.3.7&ISO"
    );
    assert_eq!(d.home_community_id, None, "home=\"\" reads as absent");
    assert_eq!(d.mime_type, "text/xml");
    assert_eq!(d.title, "DocA");
    assert_eq!(
        d.class_code,
        Some(Code::new(
            "History and Physical",
            "Connect-a-thon classCodes",
            "History and Physical"
        ))
    );
    assert_eq!(
        d.type_code.as_ref().map(|c| c.code.as_str()),
        Some("34108-1")
    );
    assert_eq!(
        d.format_code.as_ref().map(|c| c.code.as_str()),
        Some("CDAR2/IHE 1.0")
    );
    assert_eq!(
        d.practice_setting_code.as_ref().map(|c| c.display.as_str()),
        Some("Dialysis")
    );
    assert_eq!(
        d.event_codes
            .iter()
            .map(|c| (c.code.as_str(), c.scheme.as_str()))
            .collect::<Vec<_>>(),
        [("T-D4909", "SNM3"), ("T-62002", "SNM3")]
    );
    assert_eq!(d.confidentiality_codes.len(), 1);
    assert_eq!(
        d.author_institutions
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>(),
        [
            "Cleveland Clinic",
            "Parma Community",
            "Cleveland Clinic",
            "Berea Community"
        ]
    );
    assert_eq!(d.creation_time, "20061224");
    assert_eq!(d.size, Some(36));
    assert_eq!(d.repository_unique_id, "1.19.6.24.109.42.1");
    assert_eq!(d.source_patient_id, "89765a87b^^^&3.4.5&ISO");
    // and back: the written form carries the same model fields (with home now set)
    let mut d2 = d.clone();
    d2.home_community_id = Some(fixtures::home());
    assert_eq!(through_xml(std::slice::from_ref(&d2)), vec![d2]);
}

#[test]
fn written_extrinsic_object_has_the_xds_shape() {
    let eo = document_entry_to_wire(&fixtures::kos_entry(1));
    let o = &eo.object;
    assert_eq!(o.object_type.as_deref(), Some(uuids::DOCUMENT_ENTRY_STABLE));
    assert_eq!(
        o.home.as_ref().map(|h| h.to_string()).as_deref(),
        Some(fixtures::HOME)
    );
    for scheme in [
        uuids::AUTHOR,
        uuids::CLASS_CODE,
        uuids::CONFIDENTIALITY_CODE,
        uuids::EVENT_CODE_LIST,
        uuids::FORMAT_CODE,
        uuids::HEALTHCARE_FACILITY_TYPE_CODE,
        uuids::PRACTICE_SETTING_CODE,
        uuids::TYPE_CODE,
    ] {
        let c = o
            .classifications_by(scheme)
            .next()
            .unwrap_or_else(|| panic!("{scheme}"));
        assert_eq!(c.classified_object, o.id);
        assert!(c.object.id.starts_with("urn:uuid:"));
        if scheme != uuids::AUTHOR {
            assert!(c.object.slot_value("codingScheme").is_some(), "{scheme}");
        } else {
            assert_eq!(c.node_representation.as_deref(), Some(""));
        }
    }
    for (scheme, name) in [
        (uuids::PATIENT_ID, "XDSDocumentEntry.patientId"),
        (uuids::UNIQUE_ID, "XDSDocumentEntry.uniqueId"),
    ] {
        let e = o
            .external_identifiers
            .iter()
            .find(|e| e.identification_scheme == scheme)
            .unwrap();
        assert_eq!(duo_runtime::ihe::ebrim::first_value(&e.object.name), name);
        assert_eq!(e.registry_object, o.id);
    }
    assert_eq!(
        o.slot("urn:ihe:iti:xds:2013:referenceIdList")
            .unwrap()
            .values,
        [
            "ACC000001^^^&1.2.3.4&ISO^urn:ihe:iti:xds:2013:accession",
            "1.2.826.0.1.3680043.10.511.1.1^^^^urn:ihe:iti:xds:2016:studyInstanceUID"
        ]
    );
}
