//! The XDS-I.b imaging manifest: a DICOM Key Object Selection (KOS) Document that lists every instance of a
//! study and where to retrieve it, and its parser.
//!
//! Built per DICOM PS3.3 A.35.4 (Key Object Selection Document IOD: Patient, General Study, Key Object
//! Document Series, General Equipment, Key Object Document, SR Document Content, SOP Common) with
//! template TID 2010 and the XDS-I.b rules of IHE RAD TF-3 4.68.4.1.2.2 / RAD TF-3 (KOS manifest):
//! document title (113030, DCM, "Manifest"); Current Requested Procedure Evidence Sequence (0040,A375)
//! study → series with Retrieve Location UID (0040,E011) = the imaging document source's uniqueId →
//! Referenced SOP Sequence; one IMAGE (or COMPOSITE for non-images) content item per instance; Referenced
//! Request Sequence (0040,A370) with the accession number. Patient and study attributes are copied from the
//! instances.
//!
//! Beyond the IOD, each series item of the evidence sequence also carries Modality, Series Number and
//! Series Description, as the IHE MADO profile (Manifest-based Access to DICOM Objects) does, so that a
//! parsed manifest still knows its modalities.

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use serde::{Deserialize, Serialize};

use super::dataset::{code_item, encode, issuer_item, put_seq, put_str};
use super::instance::{item_text, text};
use super::uid::derived_uid;
use super::{DicomError, InstanceInfo};
use crate::model::{Code, ImagingInstance, ImagingSeries, ImagingStudy, KOS_SOP_CLASS};
use dicom_core::VR;

/// Concept name of the XDS-I.b manifest title (CID 7010): (113030, DCM, "Manifest").
pub const MANIFEST_TITLE: (&str, &str, &str) = ("113030", "DCM", "Manifest");

/// Replaces the patient identity of the instances in the manifest: the XDS affinity domain's patient id
/// (for DUO the BSN) when the instances carry a local one. The instances' own id goes to Other Patient
/// IDs Sequence (0010,1002).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KosPatient {
    /// Patient ID (0010,0020).
    pub id: String,
    /// Issuer of Patient ID (0010,0021), e.g. `NLMINBIZA`.
    pub issuer: String,
    /// Universal Entity ID of the issuer (OID), e.g. the BSN OID `2.16.840.1.113883.2.4.6.3`.
    pub authority_oid: String,
    /// Patient's Name; `None` keeps the instances' name.
    pub name: Option<String>,
}

/// How to build a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KosOptions {
    /// Retrieve Location UID (0040,E011) of every series: the imaging document source's uniqueId, which
    /// consumers send as RepositoryUniqueId in RAD-69 / RAD-75.
    pub retrieve_location_uid: String,
    /// Retrieve AE Title (0008,0054), when the source also offers DIMSE retrieval.
    pub retrieve_ae_title: Option<String>,
    /// SOP Instance UID of the manifest; `None` derives a stable `2.25` UID from the study and location.
    pub sop_instance_uid: Option<String>,
    /// Series Instance UID of the manifest; `None` derives one like the SOP Instance UID.
    pub series_instance_uid: Option<String>,
    /// Content Date/Time of the manifest (local time, DICOM DA and TM); `None` uses the study date and time.
    pub content_date_time: Option<(String, String)>,
    /// Manufacturer (0008,0070) of the manifest; empty writes `DUO`.
    pub manufacturer: String,
    /// Institution Name (0008,0080); `None` copies it from the instances.
    pub institution_name: Option<String>,
    /// Patient identity to write instead of the instances' one.
    pub patient: Option<KosPatient>,
    /// Text of a Key Object Description content item (113012, DCM), when wanted.
    pub description: Option<String>,
}

/// A manifest as read back (or as built): the study facts and the referenced instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct KosManifest {
    /// SOP Instance UID of the KOS: the DocumentEntry uniqueId.
    pub sop_instance_uid: String,
    /// Series Instance UID of the KOS.
    pub series_instance_uid: String,
    /// Document title (Concept Name Code Sequence of the root container).
    pub title: Code,
    /// Patient ID.
    pub patient_id: String,
    /// Issuer of Patient ID.
    pub issuer_of_patient_id: String,
    /// Universal Entity ID of the patient id issuer.
    pub patient_id_authority: String,
    /// Patient's Name, PN.
    pub patient_name: String,
    /// Content Date (DA) of the manifest.
    pub content_date: String,
    /// Content Time (TM) of the manifest.
    pub content_time: String,
    /// Timezone Offset From UTC, when stated.
    pub timezone_offset: String,
    /// Universal Entity ID of the Issuer of Accession Number Sequence, when stated.
    pub accession_authority: String,
    /// The referenced studies: the manifest's own study (its Study Instance UID) first. Series carry
    /// their Retrieve Location UID; modality when the manifest states it per series.
    pub studies: Vec<ImagingStudy>,
}

impl KosManifest {
    /// The manifest's own study (the first of [`KosManifest::studies`]).
    pub fn study(&self) -> Option<&ImagingStudy> {
        self.studies.first()
    }

    /// Distinct modalities over all series, in order of appearance.
    pub fn modalities(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in self.studies.iter().flat_map(|s| &s.series) {
            if !s.modality.is_empty() && !out.contains(&s.modality) {
                out.push(s.modality.clone());
            }
        }
        out
    }
}

/// A built manifest: its Part 10 encoding and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kos {
    /// The KOS as a Part 10 file (Explicit VR Little Endian).
    pub bytes: Vec<u8>,
    /// What [`parse_kos`] returns for `bytes`.
    pub manifest: KosManifest,
}

/// Builds the XDS-I.b manifest of `instances`, all of one study.
///
/// Instances with the same SOP Instance UID (other encodings of one instance) are referenced once. Series
/// are ordered by Series Number then UID, instances by Instance Number then UID.
///
/// Errors: [`DicomError::Inconsistent`] for an empty set or instances of more than one study;
/// [`DicomError::InvalidOption`] without a retrieve location; [`DicomError::Encode`] if writing fails.
pub fn build_kos(instances: &[InstanceInfo], opts: &KosOptions) -> Result<Kos, DicomError> {
    let first = instances
        .first()
        .ok_or_else(|| DicomError::Inconsistent("no instances for the manifest".into()))?;
    let study_uid = first.study_instance_uid.clone();
    if let Some(other) = instances.iter().find(|i| i.study_instance_uid != study_uid) {
        return Err(DicomError::Inconsistent(format!(
            "instances of two studies ({study_uid} and {}) for one manifest",
            other.study_instance_uid
        )));
    }
    if opts.retrieve_location_uid.trim().is_empty() {
        return Err(DicomError::InvalidOption(
            "retrieve_location_uid is empty".into(),
        ));
    }
    let study = study_from_instances(instances, &opts.retrieve_location_uid);
    let key = format!("{study_uid}|{}", opts.retrieve_location_uid);
    let sop_uid = opts
        .sop_instance_uid
        .clone()
        .unwrap_or_else(|| derived_uid("duo-kos-sop", &key));
    let series_uid = opts
        .series_instance_uid
        .clone()
        .unwrap_or_else(|| derived_uid("duo-kos-series", &key));
    let (content_date, content_time) = match &opts.content_date_time {
        Some((d, t)) => (d.clone(), t.clone()),
        None if !first.study_date.is_empty() => {
            (first.study_date.clone(), first.study_time.clone())
        }
        None => {
            let now = jiff::Zoned::now();
            (
                super::dataset::da(now.date()),
                super::dataset::tm(now.time()),
            )
        }
    };
    let accession_authority = instances
        .iter()
        .map(|i| i.accession_authority.as_str())
        .find(|a| !a.is_empty())
        .unwrap_or("")
        .to_owned();

    let mut o = InMemDicomObject::new_empty();
    // SOP Common (C.12.1)
    put_str(&mut o, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    put_str(&mut o, tags::SOP_CLASS_UID, VR::UI, KOS_SOP_CLASS);
    put_str(&mut o, tags::SOP_INSTANCE_UID, VR::UI, &sop_uid);
    put_str(&mut o, tags::INSTANCE_CREATION_DATE, VR::DA, &content_date);
    put_str(&mut o, tags::INSTANCE_CREATION_TIME, VR::TM, &content_time);
    if !first.timezone_offset.is_empty() {
        put_str(
            &mut o,
            tags::TIMEZONE_OFFSET_FROM_UTC,
            VR::SH,
            &first.timezone_offset,
        );
    }

    // Patient (C.7.1.1), from the instances or the affinity domain identity
    let (pid, issuer, authority, name) = match &opts.patient {
        Some(p) => (
            p.id.clone(),
            p.issuer.clone(),
            p.authority_oid.clone(),
            p.name.clone().unwrap_or_else(|| first.patient_name.clone()),
        ),
        None => (
            first.patient_id.clone(),
            first.issuer_of_patient_id.clone(),
            first.patient_id_authority.clone(),
            first.patient_name.clone(),
        ),
    };
    put_str(&mut o, tags::PATIENT_NAME, VR::PN, &name);
    put_str(&mut o, tags::PATIENT_ID, VR::LO, &pid);
    if !issuer.is_empty() {
        put_str(&mut o, tags::ISSUER_OF_PATIENT_ID, VR::LO, &issuer);
    }
    if !authority.is_empty() {
        put_seq(
            &mut o,
            tags::ISSUER_OF_PATIENT_ID_QUALIFIERS_SEQUENCE,
            vec![issuer_item(&authority)],
        );
    }
    put_str(
        &mut o,
        tags::PATIENT_BIRTH_DATE,
        VR::DA,
        &first.patient_birth_date,
    );
    put_str(&mut o, tags::PATIENT_SEX, VR::CS, &first.patient_sex);
    if opts.patient.is_some() && !first.patient_id.is_empty() && first.patient_id != pid {
        let mut other = InMemDicomObject::new_empty();
        put_str(&mut other, tags::PATIENT_ID, VR::LO, &first.patient_id);
        if !first.issuer_of_patient_id.is_empty() {
            put_str(
                &mut other,
                tags::ISSUER_OF_PATIENT_ID,
                VR::LO,
                &first.issuer_of_patient_id,
            );
        }
        put_str(&mut other, tags::TYPE_OF_PATIENT_ID, VR::CS, "TEXT");
        put_seq(&mut o, tags::OTHER_PATIENT_I_DS_SEQUENCE, vec![other]);
    }

    // General Study (C.7.2.1)
    put_str(&mut o, tags::STUDY_INSTANCE_UID, VR::UI, &study_uid);
    put_str(&mut o, tags::STUDY_DATE, VR::DA, &first.study_date);
    put_str(&mut o, tags::STUDY_TIME, VR::TM, &first.study_time);
    put_str(
        &mut o,
        tags::REFERRING_PHYSICIAN_NAME,
        VR::PN,
        &first.referring_physician_name,
    );
    put_str(&mut o, tags::STUDY_ID, VR::SH, &first.study_id);
    put_str(
        &mut o,
        tags::ACCESSION_NUMBER,
        VR::SH,
        &first.accession_number,
    );
    if !accession_authority.is_empty() {
        put_seq(
            &mut o,
            tags::ISSUER_OF_ACCESSION_NUMBER_SEQUENCE,
            vec![issuer_item(&accession_authority)],
        );
    }
    if !first.study_description.is_empty() {
        put_str(
            &mut o,
            tags::STUDY_DESCRIPTION,
            VR::LO,
            &first.study_description,
        );
    }

    // Key Object Document Series (C.17.6.1)
    put_str(&mut o, tags::MODALITY, VR::CS, "KO");
    put_str(&mut o, tags::SERIES_INSTANCE_UID, VR::UI, &series_uid);
    put_str(&mut o, tags::SERIES_NUMBER, VR::IS, "1");
    put_seq(
        &mut o,
        tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE,
        Vec::new(),
    );

    // General Equipment (C.7.5.1)
    put_str(
        &mut o,
        tags::MANUFACTURER,
        VR::LO,
        if opts.manufacturer.is_empty() {
            "DUO"
        } else {
            &opts.manufacturer
        },
    );
    let institution = opts
        .institution_name
        .clone()
        .unwrap_or_else(|| first.institution_name.clone());
    if !institution.is_empty() {
        put_str(&mut o, tags::INSTITUTION_NAME, VR::LO, &institution);
    }

    // Key Object Document (C.17.6.2)
    put_str(&mut o, tags::INSTANCE_NUMBER, VR::IS, "1");
    put_str(&mut o, tags::CONTENT_DATE, VR::DA, &content_date);
    put_str(&mut o, tags::CONTENT_TIME, VR::TM, &content_time);
    if !first.accession_number.is_empty() {
        let mut req = InMemDicomObject::new_empty();
        put_str(&mut req, tags::STUDY_INSTANCE_UID, VR::UI, &study_uid);
        put_seq(&mut req, tags::REFERENCED_STUDY_SEQUENCE, Vec::new());
        put_str(
            &mut req,
            tags::ACCESSION_NUMBER,
            VR::SH,
            &first.accession_number,
        );
        if !accession_authority.is_empty() {
            put_seq(
                &mut req,
                tags::ISSUER_OF_ACCESSION_NUMBER_SEQUENCE,
                vec![issuer_item(&accession_authority)],
            );
        }
        put_str(
            &mut req,
            tags::PLACER_ORDER_NUMBER_IMAGING_SERVICE_REQUEST,
            VR::LO,
            "",
        );
        put_str(
            &mut req,
            tags::FILLER_ORDER_NUMBER_IMAGING_SERVICE_REQUEST,
            VR::LO,
            "",
        );
        put_str(&mut req, tags::REQUESTED_PROCEDURE_ID, VR::SH, "");
        put_str(
            &mut req,
            tags::REQUESTED_PROCEDURE_DESCRIPTION,
            VR::LO,
            &first.study_description,
        );
        put_seq(
            &mut req,
            tags::REQUESTED_PROCEDURE_CODE_SEQUENCE,
            Vec::new(),
        );
        put_seq(&mut o, tags::REFERENCED_REQUEST_SEQUENCE, vec![req]);
    }
    let mut series_items = Vec::new();
    let mut content_items = Vec::new();
    if let Some(d) = &opts.description {
        let mut t = InMemDicomObject::new_empty();
        put_str(&mut t, tags::RELATIONSHIP_TYPE, VR::CS, "CONTAINS");
        put_str(&mut t, tags::VALUE_TYPE, VR::CS, "TEXT");
        put_seq(
            &mut t,
            tags::CONCEPT_NAME_CODE_SEQUENCE,
            vec![code_item("113012", "DCM", "Key Object Description")],
        );
        put_str(&mut t, tags::TEXT_VALUE, VR::UT, d);
        content_items.push(t);
    }
    let images: std::collections::HashSet<&str> = instances
        .iter()
        .filter(|i| i.is_image)
        .map(|i| i.sop_instance_uid.as_str())
        .collect();
    let series_meta = |uid: &str| instances.iter().find(|i| i.series_instance_uid == uid);
    for s in &study.series {
        let mut item = InMemDicomObject::new_empty();
        put_str(
            &mut item,
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            &s.series_instance_uid,
        );
        if let Some(ae) = &opts.retrieve_ae_title {
            put_str(&mut item, tags::RETRIEVE_AE_TITLE, VR::AE, ae);
        }
        put_str(
            &mut item,
            tags::RETRIEVE_LOCATION_UID,
            VR::UI,
            &s.retrieve_location_uid,
        );
        if let Some(m) = series_meta(&s.series_instance_uid) {
            if !m.modality.is_empty() {
                put_str(&mut item, tags::MODALITY, VR::CS, &m.modality);
            }
            if let Some(n) = m.series_number {
                put_str(&mut item, tags::SERIES_NUMBER, VR::IS, &n.to_string());
            }
            if !m.series_description.is_empty() {
                put_str(
                    &mut item,
                    tags::SERIES_DESCRIPTION,
                    VR::LO,
                    &m.series_description,
                );
            }
        }
        let mut refs = Vec::new();
        for i in &s.instances {
            refs.push(sop_ref(&i.sop_class_uid, &i.sop_instance_uid));
            let mut c = InMemDicomObject::new_empty();
            put_str(&mut c, tags::RELATIONSHIP_TYPE, VR::CS, "CONTAINS");
            let value_type = if images.contains(i.sop_instance_uid.as_str()) {
                "IMAGE"
            } else {
                "COMPOSITE"
            };
            put_str(&mut c, tags::VALUE_TYPE, VR::CS, value_type);
            put_seq(
                &mut c,
                tags::REFERENCED_SOP_SEQUENCE,
                vec![sop_ref(&i.sop_class_uid, &i.sop_instance_uid)],
            );
            content_items.push(c);
        }
        put_seq(&mut item, tags::REFERENCED_SOP_SEQUENCE, refs);
        series_items.push(item);
    }
    let mut evidence = InMemDicomObject::new_empty();
    put_str(&mut evidence, tags::STUDY_INSTANCE_UID, VR::UI, &study_uid);
    put_seq(
        &mut evidence,
        tags::REFERENCED_SERIES_SEQUENCE,
        series_items,
    );
    put_seq(
        &mut o,
        tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
        vec![evidence],
    );

    // SR Document Content (C.17.3), TID 2010 root container
    put_str(&mut o, tags::VALUE_TYPE, VR::CS, "CONTAINER");
    let (code, scheme, meaning) = MANIFEST_TITLE;
    put_seq(
        &mut o,
        tags::CONCEPT_NAME_CODE_SEQUENCE,
        vec![code_item(code, scheme, meaning)],
    );
    put_str(&mut o, tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
    let mut template = InMemDicomObject::new_empty();
    put_str(&mut template, tags::MAPPING_RESOURCE, VR::CS, "DCMR");
    put_str(&mut template, tags::TEMPLATE_IDENTIFIER, VR::CS, "2010");
    put_seq(&mut o, tags::CONTENT_TEMPLATE_SEQUENCE, vec![template]);
    put_seq(&mut o, tags::CONTENT_SEQUENCE, content_items);

    let bytes = encode(o)?;
    let mut manifest = parse_kos(&bytes)?;
    // The parser sees what the file says; keep the body part the instances know for the caller.
    if let Some(s) = manifest.studies.first_mut() {
        s.body_part = study.body_part.clone();
    }
    Ok(Kos { bytes, manifest })
}

fn sop_ref(class: &str, instance: &str) -> InMemDicomObject {
    let mut r = InMemDicomObject::new_empty();
    put_str(&mut r, tags::REFERENCED_SOP_CLASS_UID, VR::UI, class);
    put_str(&mut r, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, instance);
    r
}

/// The study the instances make up (all assumed to be of one study: the first one's facts are used),
/// every series retrievable at `retrieve_location_uid`. Series are ordered by Series Number then UID,
/// instances by Instance Number then UID; a SOP Instance UID appears once.
pub fn study_from_instances(
    instances: &[InstanceInfo],
    retrieve_location_uid: &str,
) -> ImagingStudy {
    let mut sorted: Vec<&InstanceInfo> = instances.iter().collect();
    sorted.sort_by(|a, b| {
        (
            a.series_number.unwrap_or(i32::MAX),
            &a.series_instance_uid,
            a.instance_number.unwrap_or(i32::MAX),
            &a.sop_instance_uid,
        )
            .cmp(&(
                b.series_number.unwrap_or(i32::MAX),
                &b.series_instance_uid,
                b.instance_number.unwrap_or(i32::MAX),
                &b.sop_instance_uid,
            ))
    });
    let mut seen = std::collections::HashSet::new();
    let mut series: Vec<ImagingSeries> = Vec::new();
    for i in sorted {
        if !seen.insert(i.sop_instance_uid.as_str()) {
            continue;
        }
        let inst = ImagingInstance {
            sop_instance_uid: i.sop_instance_uid.clone(),
            sop_class_uid: i.sop_class_uid.clone(),
        };
        match series.last_mut() {
            Some(s) if s.series_instance_uid == i.series_instance_uid => s.instances.push(inst),
            _ => series.push(ImagingSeries {
                series_instance_uid: i.series_instance_uid.clone(),
                modality: i.modality.clone(),
                retrieve_location_uid: retrieve_location_uid.to_owned(),
                instances: vec![inst],
            }),
        }
    }
    let first = instances.first();
    let f = |g: fn(&InstanceInfo) -> &String| first.map(|i| g(i).clone()).unwrap_or_default();
    ImagingStudy {
        study_instance_uid: f(|i| &i.study_instance_uid),
        accession_number: f(|i| &i.accession_number),
        study_date: f(|i| &i.study_date),
        study_time: f(|i| &i.study_time),
        description: f(|i| &i.study_description),
        body_part: instances
            .iter()
            .map(|i| i.body_part.as_str())
            .find(|b| !b.is_empty())
            .unwrap_or("")
            .to_owned(),
        series,
    }
}

fn required_text(
    obj: &InMemDicomObject,
    tag: Tag,
    name: &'static str,
) -> Result<String, DicomError> {
    let v = text(obj, tag);
    if v.is_empty() {
        Err(DicomError::MissingAttribute(name))
    } else {
        Ok(v)
    }
}

fn items(obj: &InMemDicomObject, tag: Tag) -> &[InMemDicomObject] {
    obj.get(tag).and_then(|e| e.items()).unwrap_or(&[])
}

/// Parses a KOS manifest (Part 10 bytes, untrusted) into the studies, series and instances it references.
///
/// Errors: any [`super::read_instance`] error for a broken file; [`DicomError::NotKos`] when the SOP class
/// is not Key Object Selection; [`DicomError::MissingAttribute`] when the evidence sequence, a Study,
/// Series or referenced SOP Instance/Class UID is missing.
pub fn parse_kos(bytes: &[u8]) -> Result<KosManifest, DicomError> {
    let obj = super::instance::open(bytes, false)?;
    let sop_class = text(&obj, tags::SOP_CLASS_UID);
    let sop_class = if sop_class.is_empty() {
        obj.meta().media_storage_sop_class_uid().to_owned()
    } else {
        sop_class
    };
    if sop_class != KOS_SOP_CLASS {
        return Err(DicomError::NotKos(sop_class));
    }
    let own_study = text(&obj, tags::STUDY_INSTANCE_UID);
    let evidence = obj
        .get(tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE)
        .and_then(|e| e.items())
        .ok_or(DicomError::MissingAttribute(
            "Current Requested Procedure Evidence Sequence (0040,A375)",
        ))?;
    let requests = items(&obj, tags::REFERENCED_REQUEST_SEQUENCE);
    let mut studies = Vec::new();
    for st in evidence {
        let study_uid = required_text(
            st,
            tags::STUDY_INSTANCE_UID,
            "Study Instance UID (0020,000D) in evidence",
        )?;
        let mut series = Vec::new();
        for se in items(st, tags::REFERENCED_SERIES_SEQUENCE) {
            let mut instances = Vec::new();
            for r in items(se, tags::REFERENCED_SOP_SEQUENCE) {
                instances.push(ImagingInstance {
                    sop_instance_uid: required_text(
                        r,
                        tags::REFERENCED_SOP_INSTANCE_UID,
                        "Referenced SOP Instance UID (0008,1155)",
                    )?,
                    sop_class_uid: required_text(
                        r,
                        tags::REFERENCED_SOP_CLASS_UID,
                        "Referenced SOP Class UID (0008,1150)",
                    )?,
                });
            }
            series.push(ImagingSeries {
                series_instance_uid: required_text(
                    se,
                    tags::SERIES_INSTANCE_UID,
                    "Series Instance UID (0020,000E) in evidence",
                )?,
                modality: text(se, tags::MODALITY),
                retrieve_location_uid: text(se, tags::RETRIEVE_LOCATION_UID),
                instances,
            });
        }
        let own = study_uid == own_study;
        let accession = if own && !text(&obj, tags::ACCESSION_NUMBER).is_empty() {
            text(&obj, tags::ACCESSION_NUMBER)
        } else {
            requests
                .iter()
                .find(|r| text(r, tags::STUDY_INSTANCE_UID) == study_uid)
                .map(|r| text(r, tags::ACCESSION_NUMBER))
                .unwrap_or_default()
        };
        let study = ImagingStudy {
            study_instance_uid: study_uid,
            accession_number: accession,
            study_date: if own {
                text(&obj, tags::STUDY_DATE)
            } else {
                String::new()
            },
            study_time: if own {
                text(&obj, tags::STUDY_TIME)
            } else {
                String::new()
            },
            description: if own {
                text(&obj, tags::STUDY_DESCRIPTION)
            } else {
                String::new()
            },
            body_part: String::new(),
            series,
        };
        if own {
            studies.insert(0, study)
        } else {
            studies.push(study)
        }
    }
    let title = items(&obj, tags::CONCEPT_NAME_CODE_SEQUENCE)
        .first()
        .map(|c| {
            Code::new(
                &text(c, tags::CODE_VALUE),
                &text(c, tags::CODING_SCHEME_DESIGNATOR),
                &text(c, tags::CODE_MEANING),
            )
        })
        .unwrap_or_default();
    Ok(KosManifest {
        sop_instance_uid: required_text(
            &obj,
            tags::SOP_INSTANCE_UID,
            "SOP Instance UID (0008,0018)",
        )?,
        series_instance_uid: text(&obj, tags::SERIES_INSTANCE_UID),
        title,
        patient_id: text(&obj, tags::PATIENT_ID),
        issuer_of_patient_id: text(&obj, tags::ISSUER_OF_PATIENT_ID),
        patient_id_authority: item_text(
            &obj,
            tags::ISSUER_OF_PATIENT_ID_QUALIFIERS_SEQUENCE,
            tags::UNIVERSAL_ENTITY_ID,
        ),
        patient_name: text(&obj, tags::PATIENT_NAME),
        content_date: text(&obj, tags::CONTENT_DATE),
        content_time: text(&obj, tags::CONTENT_TIME),
        timezone_offset: text(&obj, tags::TIMEZONE_OFFSET_FROM_UTC),
        accession_authority: item_text(
            &obj,
            tags::ISSUER_OF_ACCESSION_NUMBER_SEQUENCE,
            tags::UNIVERSAL_ENTITY_ID,
        ),
        studies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use duo_testkit::dicom::synth::{SynthConfig, SynthPatient, generate_study};

    /// The study's instances read with this build's reader: the test kit links the library build of
    /// this crate, whose `InstanceInfo` is another type than this test build's.
    fn infos(s: &duo_testkit::dicom::synth::SyntheticStudy) -> Vec<InstanceInfo> {
        s.instances
            .iter()
            .map(|i| crate::dicom::read_instance(&i.bytes).unwrap())
            .collect()
    }

    fn opts() -> KosOptions {
        KosOptions {
            retrieve_location_uid: "1.3.6.1.4.1.21367.13.80.110".into(),
            ..Default::default()
        }
    }

    #[test]
    fn round_trip_keeps_every_reference() {
        let cfg = SynthConfig::default();
        for seed in 0..12 {
            let s = generate_study(&cfg, &SynthPatient::example(), seed).unwrap();
            let kos = build_kos(&infos(&s), &opts()).unwrap();
            let parsed = parse_kos(&kos.bytes).unwrap();
            assert_eq!(parsed.studies.len(), 1);
            let mut expected = s.imaging_study("1.3.6.1.4.1.21367.13.80.110");
            expected.body_part.clear();
            assert_eq!(parsed.studies[0], expected, "seed {seed}");
            assert_eq!(parsed.title, Code::new("113030", "DCM", "Manifest"));
            assert_eq!(parsed.patient_id, "999911120");
            assert_eq!(parsed.patient_id_authority, "2.16.840.1.113883.2.4.6.3");
            assert_eq!(parsed.patient_name, "Jansen-de Vries^Eline");
            assert_eq!(parsed.accession_authority, "2.16.528.1.1007.99.1.1");
            assert_eq!(parsed.modalities(), vec![s.modality.code().to_owned()]);
            assert_eq!(kos.manifest.study().unwrap().body_part, s.body_part);
            assert_eq!(kos.manifest.sop_instance_uid, parsed.sop_instance_uid);
        }
    }

    #[test]
    fn manifest_uids_are_stable_and_patient_can_be_replaced() {
        let s = generate_study(&SynthConfig::default(), &SynthPatient::example(), 5).unwrap();
        let a = build_kos(&infos(&s), &opts()).unwrap();
        let b = build_kos(&infos(&s), &opts()).unwrap();
        assert_eq!(a.bytes, b.bytes);
        let mut infos = infos(&s);
        for i in &mut infos {
            i.patient_id = "LOCAL-17".into();
            i.issuer_of_patient_id = "PACS".into();
        }
        let o = KosOptions {
            patient: Some(KosPatient {
                id: "999911120".into(),
                issuer: "NLMINBIZA".into(),
                authority_oid: "2.16.840.1.113883.2.4.6.3".into(),
                name: None,
            }),
            description: Some("Alle beelden van het onderzoek".into()),
            ..opts()
        };
        let k = build_kos(&infos, &o).unwrap();
        assert_eq!(k.manifest.patient_id, "999911120");
        let obj = crate::dicom::instance::open(&k.bytes, false).unwrap();
        assert_eq!(
            item_text(&obj, tags::OTHER_PATIENT_I_DS_SEQUENCE, tags::PATIENT_ID),
            "LOCAL-17"
        );
        // the description item is not a reference: the instance set is unchanged
        assert_eq!(
            k.manifest.studies[0].number_of_instances(),
            s.instances.len()
        );
    }

    #[test]
    fn rejects_mixed_studies_and_non_kos() {
        let p = SynthPatient::example();
        let a = generate_study(&SynthConfig::default(), &p, 1).unwrap();
        let b = generate_study(&SynthConfig::default(), &p, 2).unwrap();
        let mut mixed = infos(&a);
        mixed.extend(infos(&b));
        assert!(matches!(
            build_kos(&mixed, &opts()),
            Err(DicomError::Inconsistent(_))
        ));
        assert!(matches!(
            build_kos(&[], &opts()),
            Err(DicomError::Inconsistent(_))
        ));
        assert!(matches!(
            build_kos(&infos(&a), &KosOptions::default()),
            Err(DicomError::InvalidOption(_))
        ));
        let e = parse_kos(&a.instances[0].bytes).unwrap_err();
        assert!(
            matches!(e, DicomError::NotKos(ref c) if c == a.modality.sop_class_uid()),
            "{e}"
        );
        assert!(parse_kos(b"not dicom").is_err());
    }

    #[test]
    fn truncated_manifest_is_an_error() {
        let s = generate_study(&SynthConfig::default(), &SynthPatient::example(), 9).unwrap();
        let kos = build_kos(&infos(&s), &opts()).unwrap();
        let mut accepted = 0;
        for cut in 0..kos.bytes.len() {
            // A cut inside any element or sequence fails. A cut at an element boundary after the evidence
            // sequence leaves a shorter but valid object: it must still reference every instance, so that a
            // truncated manifest can never silently lose images.
            if let Ok(m) = parse_kos(&kos.bytes[..cut]) {
                accepted += 1;
                assert_eq!(
                    m.studies,
                    kos.manifest
                        .studies
                        .iter()
                        .cloned()
                        .map(|mut s| {
                            s.body_part.clear();
                            s
                        })
                        .collect::<Vec<_>>()
                );
            }
        }
        assert!(accepted <= 2, "{accepted} truncated manifests accepted");
    }
}
