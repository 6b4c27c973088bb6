use super::*;
use crate::model::{
    AuthorInstitution, Code, ImagingInstance, ImagingSeries, ReferenceId, reference_type,
};

fn hcid(s: &str) -> HomeCommunityId {
    s.parse().unwrap()
}

fn manifest(uid: &str, study: &str, acc: &str, date: &str, modality: &str) -> DocumentEntry {
    DocumentEntry {
        entry_uuid: format!("urn:uuid:{uid}"),
        unique_id: uid.into(),
        mime_type: "application/dicom".into(),
        repository_unique_id: "1.2.3.9".into(),
        service_start_time: date.into(),
        title: format!("{modality} study"),
        event_codes: vec![Code::new(modality, "DCM", modality)],
        reference_ids: vec![
            ReferenceId {
                id: study.into(),
                assigning_authority: String::new(),
                id_type: reference_type::STUDY_INSTANCE_UID.into(),
            },
            ReferenceId {
                id: acc.into(),
                assigning_authority: String::new(),
                id_type: reference_type::ACCESSION.into(),
            },
        ],
        author_institutions: vec![AuthorInstitution {
            name: "Ziekenhuis A".into(),
            ura: Some("12345678".parse().unwrap()),
        }],
        ..Default::default()
    }
}

fn report(uid: &str, acc: &str) -> DocumentEntry {
    DocumentEntry {
        unique_id: uid.into(),
        mime_type: "application/pdf".into(),
        repository_unique_id: "1.2.3.9".into(),
        title: "Verslag".into(),
        class_code: Some(Code::new(
            crate::model::REPORT_CLASS_CODE,
            "2.16.840.1.113883.6.96",
            "Radiologieverslag",
        )),
        reference_ids: vec![ReferenceId {
            id: acc.into(),
            assigning_authority: String::new(),
            id_type: reference_type::ACCESSION.into(),
        }],
        ..Default::default()
    }
}

fn community(h: &str, name: &str, entries: Vec<DocumentEntry>) -> CommunityResult {
    CommunityResult {
        home_community_id: Some(hcid(h)),
        name: name.into(),
        entries,
        ..Default::default()
    }
}

#[test]
fn merges_on_study_uid_keeps_both_sources_newest_first() {
    let a = community(
        "urn:oid:1.1",
        "A",
        vec![
            manifest("1.9.1", "1.2.840.1", "ACC1", "20240105", "CT"),
            report("1.9.2", "ACC1"),
        ],
    );
    let b = community(
        "urn:oid:1.2",
        "B",
        vec![
            manifest("1.9.3", "1.2.840.1", "ACC1", "20240105", "CT"),
            manifest("1.9.4", "1.2.840.2", "ACC2", "20250101", "MR"),
        ],
    );
    let (list, unmatched) = merge(&[a, b]);
    assert!(unmatched.is_empty());
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].study_instance_uid, "1.2.840.2", "newest first");
    let shared = &list[1];
    assert_eq!(shared.sources.len(), 2);
    assert_eq!(shared.sources[0].home_community_id, hcid("1.1"));
    assert_eq!(shared.sources[1].home_community_id, hcid("1.2"));
    assert_eq!(shared.reports.len(), 1);
    assert_eq!(shared.reports[0].sources.len(), 1);
    assert_eq!(shared.modalities, vec!["CT".to_string()]);
    assert_eq!(
        shared.sources[0]
            .organization
            .as_ref()
            .unwrap()
            .ura
            .as_str(),
        "12345678"
    );
}

#[test]
fn a_report_held_by_two_communities_is_listed_once_with_both_sources() {
    let a = community(
        "urn:oid:1.1",
        "A",
        vec![
            manifest("1.9.1", "1.2.840.1", "ACC1", "20240105", "CT"),
            report("1.9.2", "ACC1"),
        ],
    );
    let b = community(
        "urn:oid:1.2",
        "B",
        vec![
            manifest("1.9.3", "1.2.840.1", "ACC1", "20240105", "CT"),
            report("1.9.2", "ACC1"),
        ],
    );
    let (list, _) = merge(&[a, b]);
    assert_eq!(list[0].reports.len(), 1);
    assert_eq!(list[0].reports[0].sources.len(), 2);
}

#[test]
fn manifest_details_fill_counts_and_retrieve_references() {
    let mut a = community(
        "urn:oid:1.1",
        "A",
        vec![manifest("1.9.1", "1.2.840.1", "ACC1", "", "CT")],
    );
    a.manifests.insert(
        "1.9.1".into(),
        ImagingStudy {
            study_instance_uid: "1.2.840.1".into(),
            study_date: "20230102".into(),
            study_time: "101500.123".into(),
            body_part: "CHEST".into(),
            series: vec![ImagingSeries {
                series_instance_uid: "1.2.840.1.1".into(),
                modality: "CT".into(),
                retrieve_location_uid: "1.2.3.77".into(),
                instances: vec![
                    ImagingInstance {
                        sop_instance_uid: "1.2.840.1.1.1".into(),
                        sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                    },
                    ImagingInstance {
                        sop_instance_uid: "1.2.840.1.1.2".into(),
                        sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                    },
                ],
            }],
            ..Default::default()
        },
    );
    let (list, _) = merge(&[a]);
    let e = &list[0];
    assert_eq!(e.date, "20230102101500");
    assert_eq!(e.number_of_series, Some(1));
    assert_eq!(e.number_of_instances, Some(2));
    assert_eq!(e.body_part, "CHEST");
    assert_eq!(e.retrieve[0].series[0].repository_unique_id, "1.2.3.77");
    assert_eq!(e.retrieve[0].series[0].sop_instance_uids.len(), 2);
}

#[test]
fn unmatched_reports_and_uidless_manifests_are_not_lost() {
    let mut m = manifest("1.9.9", "x", "ACC9", "2020", "US");
    m.reference_ids
        .retain(|r| r.id_type != reference_type::STUDY_INSTANCE_UID);
    let a = community("urn:oid:1.1", "A", vec![m, report("1.9.8", "OTHER")]);
    let (list, unmatched) = merge(&[a]);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].study_instance_uid, "1.9.9");
    assert_eq!(unmatched.len(), 1);
    assert_eq!(unmatched[0].accession_number, "OTHER");
}

#[test]
fn partial_dates_sort_stably() {
    let a = community(
        "urn:oid:1.1",
        "A",
        vec![
            manifest("1", "s1", "a1", "2024", "CT"),
            manifest("2", "s2", "a2", "20240601", "CT"),
            manifest("3", "s3", "a3", "", "CT"),
        ],
    );
    let (list, _) = merge(&[a]);
    let order: Vec<&str> = list.iter().map(|e| e.study_instance_uid.as_str()).collect();
    assert_eq!(order, vec!["s2", "s1", "s3"]);
}
