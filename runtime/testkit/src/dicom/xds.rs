//! XDS DocumentEntry metadata (ITI TF-3 4.2.3.2) for what this module makes: the KOS manifest of a study
//! (XDS-I.b, RAD TF-3 4.68.4.1.2.3) and its radiology report.
//!
//! Codes follow docs/DOMAIN.md: a manifest has mimeType `application/dicom`, formatCode = the KOS SOP class
//! (scheme `1.2.840.10008.2.6.1`), eventCodeList = modalities (scheme `DCM`), classCode `IMAGES` (scheme
//! `1.3.6.1.4.1.19376.1.2.6.1`, the IHE XDS class code set the Dutch and European imaging profiles use) and
//! a referenceIdList with accession number and Study Instance UID. A report has classCode `9491000146107`
//! and typeCode `722124004` (SNOMED CT), formatCode `urn:ihe:rad:PDF` or `urn:ihe:rad:TEXT` (scheme
//! `1.3.6.1.4.1.19376.1.2.3`) and the same accession number. Display names are descriptive; peers match
//! on code and scheme. Times are converted to UTC DTM (`YYYYMMDDhhmmss`).

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{Offset, TimeZone};
use sha1::{Digest, Sha1};

use super::kos::{Kos, KosOptions, build_kos};
use super::report::{RadiologyReport, ReportAuthor, cda, pdf};
use super::store::StoredInstance;
use super::uid::{derived_uid, derived_uuid};
use super::{DicomError, InstanceInfo};
use crate::model::{
    AuthorInstitution, Bsn, Code, DocumentEntry, FacilityType, HomeCommunityId, KOS_FORMAT_SCHEME,
    KOS_SOP_CLASS, PDF_FORMAT_CODE, REPORT_CLASS_CODE, REPORT_TYPE_CODE, ReferenceId,
    reference_type,
};

/// availabilityStatus of a published entry.
pub const APPROVED: &str = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved";
pub use super::codes::{IHE_CLASS_CODE_SCHEME, IMAGES_CLASS_CODE, LOINC};
/// Code system of IHE format codes (`urn:ihe:rad:PDF`, `urn:ihe:rad:TEXT`).
pub const IHE_FORMAT_CODE_SCHEME: &str = "1.3.6.1.4.1.19376.1.2.3";
/// formatCode of an XDS-I CDA wrapped text report.
pub const CDA_TEXT_FORMAT_CODE: &str = "urn:ihe:rad:TEXT";
/// SNOMED CT code system OID.
pub const SNOMED_CT: &str = "2.16.840.1.113883.6.96";

/// The report format of a published report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    /// `application/pdf`, formatCode `urn:ihe:rad:PDF`.
    Pdf,
    /// HL7 CDA R2 as `text/xml`, formatCode `urn:ihe:rad:TEXT`.
    Cda,
}

impl ReportFormat {
    /// The mimeType.
    pub fn mime_type(self) -> &'static str {
        match self {
            ReportFormat::Pdf => "application/pdf",
            ReportFormat::Cda => "text/xml",
        }
    }

    /// The formatCode.
    pub fn format_code(self) -> Code {
        match self {
            ReportFormat::Pdf => Code::new(
                PDF_FORMAT_CODE,
                IHE_FORMAT_CODE_SCHEME,
                "Radiology XDS-I PDF",
            ),
            ReportFormat::Cda => Code::new(
                CDA_TEXT_FORMAT_CODE,
                IHE_FORMAT_CODE_SCHEME,
                "XDS-I CDA Wrapped Text Report",
            ),
        }
    }

    /// The document's uniqueId: the report's document UID for CDA (it is the CDA `id/@root`), a UID derived
    /// from it for PDF, so that both formats of one report can be published side by side.
    pub fn unique_id(self, report: &RadiologyReport) -> String {
        match self {
            ReportFormat::Cda => report.document_uid.clone(),
            ReportFormat::Pdf => derived_uid("duo-report-pdf", &report.document_uid),
        }
    }
}

/// What every entry of one publishing organisation shares.
#[derive(Debug, Clone)]
pub struct Publisher {
    /// authorInstitution: name and URA (written as XON with the URA OID).
    pub institution: AuthorInstitution,
    /// healthcareFacilityTypeCode (zorgaanbiedercategorie).
    pub facility_type: FacilityType,
    /// repositoryUniqueId of the repository that holds the documents.
    pub repository_unique_id: String,
    /// homeCommunityId, when the entries are returned across communities.
    pub home_community_id: Option<HomeCommunityId>,
    /// languageCode, e.g. `nl-NL`.
    pub language_code: String,
    /// Local time zone of DICOM dates and times that do not state their offset.
    pub time_zone: TimeZone,
}

/// The DocumentEntry of a KOS manifest for patient `bsn`.
///
/// Fields: uniqueId = KOS SOP Instance UID; entryUUID derived from it; patientId and sourcePatientId the BSN
/// as CX; serviceStartTime = study date/time and creationTime = manifest content date/time, both in UTC;
/// eventCodeList = the manifest's modalities; size and SHA-1 of the KOS bytes; title = study description.
///
/// Errors: [`DicomError::Inconsistent`] when the manifest references no study.
pub fn manifest_entry(p: &Publisher, bsn: &Bsn, kos: &Kos) -> Result<DocumentEntry, DicomError> {
    let m = &kos.manifest;
    let study = m
        .study()
        .ok_or_else(|| DicomError::Inconsistent("the manifest references no study".into()))?;
    let offset = &m.timezone_offset;
    let mut reference_ids = Vec::new();
    if !study.accession_number.is_empty() {
        reference_ids.push(accession_reference(
            &study.accession_number,
            &m.accession_authority,
        ));
    }
    reference_ids.push(ReferenceId {
        id: study.study_instance_uid.clone(),
        assigning_authority: String::new(),
        id_type: reference_type::STUDY_INSTANCE_UID.into(),
    });
    let title = if study.description.is_empty() {
        "Beeldvormend onderzoek".to_owned()
    } else {
        study.description.clone()
    };
    Ok(DocumentEntry {
        entry_uuid: entry_uuid(&m.sop_instance_uid),
        unique_id: m.sop_instance_uid.clone(),
        home_community_id: p.home_community_id.clone(),
        repository_unique_id: p.repository_unique_id.clone(),
        patient_id: bsn.to_cx(),
        status: APPROVED.into(),
        mime_type: "application/dicom".into(),
        title,
        comments: format!(
            "{} series, {} instances",
            study.number_of_series(),
            study.number_of_instances()
        ),
        class_code: Some(Code::new(
            IMAGES_CLASS_CODE,
            IHE_CLASS_CODE_SCHEME,
            "Images",
        )),
        type_code: Some(Code::new("18748-4", LOINC, "Diagnostic imaging study")),
        format_code: Some(Code::new(
            KOS_SOP_CLASS,
            KOS_FORMAT_SCHEME,
            "Key Object Selection Document",
        )),
        healthcare_facility_type_code: Some(facility_code(&p.facility_type)),
        practice_setting_code: Some(Code::new("394914008", SNOMED_CT, "Radiology")),
        confidentiality_codes: vec![Code::new("N", "2.16.840.1.113883.5.25", "normal")],
        event_codes: m
            .modalities()
            .iter()
            .map(|mo| Code::new(mo, "DCM", modality_display(mo)))
            .collect(),
        creation_time: utc_dtm(&m.content_date, &m.content_time, offset, &p.time_zone),
        service_start_time: utc_dtm(&study.study_date, &study.study_time, offset, &p.time_zone),
        service_stop_time: String::new(),
        language_code: p.language_code.clone(),
        size: Some(kos.bytes.len() as u64),
        hash: sha1_hex(&kos.bytes),
        author_institutions: vec![p.institution.clone()],
        reference_ids,
        source_patient_id: bsn.to_cx(),
    })
}

/// The DocumentEntry of a radiology report in `format`, `bytes` being the document as published.
///
/// Fields: uniqueId per [`ReportFormat::unique_id`]; classCode `9491000146107` and typeCode `722124004`
/// (SNOMED CT); formatCode and mimeType of the format; referenceIdList with the accession number only (the
/// report is linked to its study by accession, docs/DOMAIN.md); eventCodeList the study's modalities;
/// serviceStartTime the study time, creationTime the report time (UTC); size and SHA-1 of `bytes`.
pub fn report_entry(
    p: &Publisher,
    report: &RadiologyReport,
    format: ReportFormat,
    bytes: &[u8],
) -> DocumentEntry {
    let unique_id = format.unique_id(report);
    let offset = &report.timezone_offset;
    let authority = report.accession_authority.clone().unwrap_or_default();
    DocumentEntry {
        entry_uuid: entry_uuid(&unique_id),
        unique_id,
        home_community_id: p.home_community_id.clone(),
        repository_unique_id: p.repository_unique_id.clone(),
        patient_id: report.patient.bsn.to_cx(),
        status: APPROVED.into(),
        mime_type: format.mime_type().into(),
        title: report.title(),
        comments: String::new(),
        class_code: Some(Code::new(REPORT_CLASS_CODE, SNOMED_CT, "Radiologieverslag")),
        type_code: Some(Code::new(REPORT_TYPE_CODE, SNOMED_CT, "Radiology report")),
        format_code: Some(format.format_code()),
        healthcare_facility_type_code: Some(facility_code(&p.facility_type)),
        practice_setting_code: Some(Code::new("394914008", SNOMED_CT, "Radiology")),
        confidentiality_codes: vec![Code::new("N", "2.16.840.1.113883.5.25", "normal")],
        event_codes: report
            .modalities
            .iter()
            .map(|mo| Code::new(mo, "DCM", modality_display(mo)))
            .collect(),
        creation_time: utc_dtm(
            &report.report_date,
            &report.report_time,
            offset,
            &p.time_zone,
        ),
        service_start_time: utc_dtm(&report.study_date, &report.study_time, offset, &p.time_zone),
        service_stop_time: String::new(),
        language_code: p.language_code.clone(),
        size: Some(bytes.len() as u64),
        hash: sha1_hex(bytes),
        author_institutions: vec![p.institution.clone()],
        reference_ids: if report.accession_number.is_empty() {
            Vec::new()
        } else {
            vec![accession_reference(&report.accession_number, &authority)]
        },
        source_patient_id: report.patient.bsn.to_cx(),
    }
}

/// Everything an XDS-I.b community publishes for one study: the instances (for the imaging document
/// source), the manifest and the report (for the repository) and their DocumentEntries (for the registry).
#[derive(Debug, Clone)]
pub struct PublishedStudy {
    /// The study's instances.
    pub instances: Vec<StoredInstance>,
    /// The KOS manifest.
    pub kos: Kos,
    /// The manifest's DocumentEntry.
    pub manifest_entry: DocumentEntry,
    /// The report's content.
    pub report: RadiologyReport,
    /// The report's format.
    pub report_format: ReportFormat,
    /// The report document as published (PDF or CDA bytes).
    pub report_bytes: Vec<u8>,
    /// The report's DocumentEntry.
    pub report_entry: DocumentEntry,
}

/// Builds manifest, report and both DocumentEntries for one study's `instances`, for patient `bsn`.
///
/// `kos` gives the retrieve location (the imaging document source's uniqueId) and, for instances that carry
/// a local patient id, the identity to publish under. The report is written by `author` in `format`;
/// `seed` picks its texts.
///
/// Errors: those of [`build_kos`], [`manifest_entry`] and [`RadiologyReport::for_study`].
pub fn publish_study(
    p: &Publisher,
    bsn: &Bsn,
    instances: Vec<StoredInstance>,
    kos: &KosOptions,
    author: ReportAuthor,
    format: ReportFormat,
    seed: u64,
) -> Result<PublishedStudy, DicomError> {
    let infos: Vec<InstanceInfo> = instances.iter().map(|i| i.info.clone()).collect();
    let kos = build_kos(&infos, kos)?;
    let manifest_entry = manifest_entry(p, bsn, &kos)?;
    let report =
        RadiologyReport::for_study(&infos, bsn.clone(), author, p.institution.clone(), seed)?;
    let report_bytes = match format {
        ReportFormat::Pdf => pdf(&report),
        ReportFormat::Cda => cda(&report),
    };
    let report_entry = report_entry(p, &report, format, &report_bytes);
    Ok(PublishedStudy {
        instances,
        kos,
        manifest_entry,
        report,
        report_format: format,
        report_bytes,
        report_entry,
    })
}

/// The modalities of a set of instances, distinct, in order of appearance (for eventCodeList).
pub fn modalities(instances: &[InstanceInfo]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for i in instances {
        if !i.modality.is_empty() && !out.contains(&i.modality) {
            out.push(i.modality.clone());
        }
    }
    out
}

fn accession_reference(accession: &str, authority_oid: &str) -> ReferenceId {
    ReferenceId {
        id: accession.to_owned(),
        // CXi component 4 in HD form `&OID&ISO` (ITI TF-3 Table 4.2.3.2-1, referenceIdList)
        assigning_authority: if authority_oid.is_empty() {
            String::new()
        } else {
            format!("&{authority_oid}&ISO")
        },
        id_type: reference_type::ACCESSION.into(),
    }
}

fn facility_code(f: &FacilityType) -> Code {
    let display = match f.as_str() {
        "V4" => "Ziekenhuis",
        "V5" => "Universitair medisch centrum",
        "V6" => "Algemeen ziekenhuis",
        "Z4" => "Zelfstandig behandelcentrum",
        "Z5" => "Diagnostisch centrum",
        "B1" => "Beeldvormende diagnostiek",
        _ => "",
    };
    Code::new(f.as_str(), FacilityType::CODE_SYSTEM, display)
}

/// Display name of a DICOM CID 29 acquisition modality.
pub fn modality_display(code: &str) -> &'static str {
    match code {
        "CT" => "Computed Tomography",
        "MR" => "Magnetic Resonance",
        "CR" => "Computed Radiography",
        "DX" => "Digital Radiography",
        "US" => "Ultrasound",
        "MG" => "Mammography",
        "NM" => "Nuclear Medicine",
        "PT" => "Positron emission tomography",
        "XA" => "X-Ray Angiography",
        "RF" => "Radio Fluoroscopy",
        "OT" => "Other",
        _ => "",
    }
}

/// `urn:uuid:` + a version 8 UUID derived from the uniqueId, so that republishing gives the same entryUUID.
fn entry_uuid(unique_id: &str) -> String {
    format!(
        "urn:uuid:{}",
        derived_uuid(&[b"duo-entry", unique_id.as_bytes()])
    )
}

/// Lower-case hex SHA-1 of the document (ITI TF-3 4.2.3.2.18 hash).
pub fn sha1_hex(bytes: &[u8]) -> String {
    hex::encode(Sha1::digest(bytes))
}

/// DICOM DA + TM local time → XDS DTM in UTC (ITI TF-3 Table 4.2.3.1.7-2).
///
/// `offset` is a DICOM Timezone Offset From UTC (`+HHMM`); when it is empty or malformed, `tz` decides.
/// A date without time gives `YYYYMMDD` (no conversion is possible without a time); no valid date gives an
/// empty string. TM may be `HH`, `HHMM`, `HHMMSS[.F]` or the old `HH:MM:SS` form.
pub fn utc_dtm(date: &str, time: &str, offset: &str, tz: &TimeZone) -> String {
    let d = date.trim().replace('.', "");
    let (Some(y), Some(mo), Some(da)) = (num(&d, 0, 4), num(&d, 4, 2), num(&d, 6, 2)) else {
        return String::new();
    };
    let Ok(date) = Date::new(y as i16, mo as i8, da as i8) else {
        return String::new();
    };
    let t: String = time
        .trim()
        .chars()
        .filter(|c| *c != ':')
        .take_while(|c| c.is_ascii_digit())
        .collect();
    let Some(h) = num(&t, 0, 2) else {
        return format!("{:04}{:02}{:02}", date.year(), date.month(), date.day());
    };
    let mi = num(&t, 2, 2).unwrap_or(0);
    let s = num(&t, 4, 2).unwrap_or(0);
    let Ok(time) = Time::new(h as i8, mi as i8, s.min(59) as i8, 0) else {
        return format!("{:04}{:02}{:02}", date.year(), date.month(), date.day());
    };
    let local = DateTime::from_parts(date, time);
    let zone = match parse_offset(offset) {
        Some(o) => TimeZone::fixed(o),
        None => tz.clone(),
    };
    match zone.to_ambiguous_zoned(local).compatible() {
        Ok(z) => z
            .with_time_zone(TimeZone::UTC)
            .strftime("%Y%m%d%H%M%S")
            .to_string(),
        Err(_) => String::new(),
    }
}

fn num(s: &str, at: usize, len: usize) -> Option<u32> {
    s.get(at..at + len)
        .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse().ok())
}

fn parse_offset(s: &str) -> Option<Offset> {
    let s = s.trim();
    let sign = match s.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (h, m) = (num(s, 1, 2)?, num(s, 3, 2)?);
    if s.len() != 5 || h > 14 || m > 59 {
        return None;
    }
    Offset::from_seconds(sign * (h as i32 * 3600 + m as i32 * 60)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dicom::kos::{KosOptions, build_kos};
    use crate::dicom::report::{ReportAuthor, cda, pdf};
    use crate::dicom::synth::{SynthConfig, SynthPatient, generate_study};
    use crate::model::DocumentKind;

    fn publisher() -> Publisher {
        Publisher {
            institution: AuthorInstitution {
                name: "Ziekenhuis Noord".into(),
                ura: Some("12345678".parse().unwrap()),
            },
            facility_type: "V6".parse().unwrap(),
            repository_unique_id: "1.3.6.1.4.1.21367.13.80.200".into(),
            home_community_id: Some("urn:oid:1.3.6.1.4.1.21367.13.70.1".parse().unwrap()),
            language_code: "nl-NL".into(),
            time_zone: TimeZone::get("Europe/Amsterdam").unwrap(),
        }
    }

    #[test]
    fn manifest_entry_fields() {
        let p = SynthPatient::example();
        let s = generate_study(&SynthConfig::default(), &p, 4).unwrap();
        let kos = build_kos(
            &s.infos(),
            &KosOptions {
                retrieve_location_uid: "1.2.3.4".into(),
                ..Default::default()
            },
        )
        .unwrap();
        let e = manifest_entry(&publisher(), &p.bsn, &kos).unwrap();
        assert_eq!(e.kind(), DocumentKind::ImagingManifest);
        assert_eq!(e.unique_id, kos.manifest.sop_instance_uid);
        assert!(e.entry_uuid.starts_with("urn:uuid:") && e.entry_uuid.len() == 45);
        assert_eq!(e.patient_id, "999911120^^^&2.16.840.1.113883.2.4.6.3&ISO");
        assert_eq!(e.mime_type, "application/dicom");
        assert_eq!(
            e.format_code,
            Some(Code::new(
                KOS_SOP_CLASS,
                KOS_FORMAT_SCHEME,
                "Key Object Selection Document"
            ))
        );
        assert_eq!(e.class_code.as_ref().unwrap().code, "IMAGES");
        assert_eq!(e.study_instance_uid(), Some(s.study_instance_uid.as_str()));
        assert_eq!(e.accession_number(), Some(s.accession_number.as_str()));
        let cxi: Vec<String> = e.reference_ids.iter().map(|r| r.to_cxi()).collect();
        assert_eq!(
            cxi,
            vec![
                format!(
                    "{}^^^&2.16.528.1.1007.99.1.1&ISO^urn:ihe:iti:xds:2013:accession",
                    s.accession_number
                ),
                format!(
                    "{}^^^^urn:ihe:iti:xds:2016:studyInstanceUID",
                    s.study_instance_uid
                ),
            ]
        );
        assert_eq!(e.modalities().collect::<Vec<_>>(), vec![s.modality.code()]);
        assert_eq!(e.size, Some(kos.bytes.len() as u64));
        assert_eq!(e.hash.len(), 40);
        assert_eq!(e.hash, sha1_hex(&kos.bytes));
        assert_eq!(
            e.author_institutions[0].to_xon(),
            "Ziekenhuis Noord^^^^^&2.16.528.1.1007.3.3&ISO^^^^12345678"
        );
        assert_eq!(
            e.healthcare_facility_type_code.as_ref().unwrap().scheme,
            "2.16.840.1.113883.2.4.15.1060"
        );
        // the study time in UTC, with the offset the instances state
        let expected = utc_dtm(
            &s.study_date,
            &s.study_time,
            &s.timezone_offset,
            &TimeZone::UTC,
        );
        assert_eq!(e.service_start_time, expected);
        assert_eq!(e.service_start_time.len(), 14);
    }

    #[test]
    fn report_entries_for_both_formats() {
        let p = SynthPatient::example();
        let s = generate_study(&SynthConfig::default(), &p, 4).unwrap();
        let r = RadiologyReport::for_study(
            &s.infos(),
            p.bsn.clone(),
            ReportAuthor {
                name: "de Boer^Pieter".into(),
                uzi: None,
            },
            publisher().institution,
            4,
        )
        .unwrap();
        let pdf_bytes = pdf(&r);
        let cda_bytes = cda(&r);
        let a = report_entry(&publisher(), &r, ReportFormat::Pdf, &pdf_bytes);
        let b = report_entry(&publisher(), &r, ReportFormat::Cda, &cda_bytes);
        for e in [&a, &b] {
            assert_eq!(e.kind(), DocumentKind::Report);
            assert_eq!(
                e.class_code,
                Some(Code::new(REPORT_CLASS_CODE, SNOMED_CT, "Radiologieverslag"))
            );
            assert_eq!(e.type_code.as_ref().unwrap().code, REPORT_TYPE_CODE);
            assert_eq!(e.accession_number(), Some(s.accession_number.as_str()));
            assert_eq!(
                e.study_instance_uid(),
                None,
                "reports link by accession only"
            );
        }
        assert_eq!(a.format_code.as_ref().unwrap().code, "urn:ihe:rad:PDF");
        assert_eq!(a.mime_type, "application/pdf");
        assert_eq!(b.format_code.as_ref().unwrap().code, "urn:ihe:rad:TEXT");
        assert_eq!(b.mime_type, "text/xml");
        assert_eq!(b.unique_id, r.document_uid);
        assert_ne!(a.unique_id, b.unique_id);
        assert_ne!(a.entry_uuid, b.entry_uuid);
        assert_eq!(a.size, Some(pdf_bytes.len() as u64));
        assert_eq!(b.hash, sha1_hex(&cda_bytes));
    }

    #[test]
    fn utc_conversion() {
        let ams = TimeZone::get("Europe/Amsterdam").unwrap();
        // winter: UTC+1, summer: UTC+2, from the zone when no offset is stated
        assert_eq!(utc_dtm("20240115", "093000", "", &ams), "20240115083000");
        assert_eq!(
            utc_dtm("20240715", "093000.123", "", &ams),
            "20240715073000"
        );
        // the stated offset wins over the zone
        assert_eq!(utc_dtm("20240715", "0930", "+0100", &ams), "20240715083000");
        assert_eq!(
            utc_dtm("20240101", "003000", "+0200", &ams),
            "20231231223000"
        );
        assert_eq!(
            utc_dtm("20240101", "09:30:00", "", &TimeZone::UTC),
            "20240101093000"
        );
        assert_eq!(utc_dtm("20240101", "", "", &ams), "20240101");
        assert_eq!(utc_dtm("2024", "1200", "", &ams), "");
        assert_eq!(utc_dtm("20241301", "1200", "", &ams), "");
        assert_eq!(utc_dtm("20240101", "2561", "", &ams), "20240101");
        assert_eq!(sha1_hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
    }

    #[test]
    fn publish_a_synthetic_study() {
        let p = SynthPatient::example();
        let s = generate_study(&SynthConfig::default(), &p, 8).unwrap();
        let n = s.instances.len();
        let instances: Vec<StoredInstance> =
            s.instances.into_iter().map(StoredInstance::from).collect();
        let kos = KosOptions {
            retrieve_location_uid: "1.2.3.4.5".into(),
            ..Default::default()
        };
        let author = ReportAuthor {
            name: "de Boer^Pieter".into(),
            uzi: None,
        };
        let out = publish_study(
            &publisher(),
            &p.bsn,
            instances,
            &kos,
            author,
            ReportFormat::Cda,
            8,
        )
        .unwrap();
        assert_eq!(out.instances.len(), n);
        assert_eq!(out.manifest_entry.kind(), DocumentKind::ImagingManifest);
        assert_eq!(out.report_entry.kind(), DocumentKind::Report);
        // the report and the manifest name the same study by accession number
        assert_eq!(
            out.report_entry.accession_number(),
            out.manifest_entry.accession_number()
        );
        assert_eq!(out.report_entry.hash, sha1_hex(&out.report_bytes));
        assert!(out.report_bytes.starts_with(b"<?xml"));
    }
}
