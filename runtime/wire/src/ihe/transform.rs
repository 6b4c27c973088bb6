//! Wire ⇄ domain: `rim:ExtrinsicObject` ⇄ [`DocumentEntry`] (ITI TF-3 4.2.3.2 "Document Entry
//! Attributes", 4.2.5 "Metadata UUIDs"; RAD TF-3 4.68.4.1.2.3 for XDS-I.b manifests).
//!
//! Reading takes what the model holds and ignores the rest (authorPerson, sourcePatientInfo ...);
//! writing produces a complete, schema-valid ExtrinsicObject with fresh `urn:uuid:` ids for its
//! classifications and external identifiers. For every field of [`DocumentEntry`],
//! `from_wire(to_wire(e)) == e`.

use crate::model::{AuthorInstitution, Code, DocumentEntry, HomeCommunityId, ReferenceId};

use super::ebrim::{
    Classification, ExternalIdentifier, ExtrinsicObject, Identifiable, RegistryObject, Slot,
    first_value, intl,
};

/// Classification schemes, external identifier schemes and object types of XDS metadata
/// (ITI TF-3 4.2.5.1, verified against IPF and the NIST toolkit sources).
pub mod uuids {
    /// DocumentEntry objectType, stable document.
    pub const DOCUMENT_ENTRY_STABLE: &str = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1";
    /// DocumentEntry objectType, on-demand document.
    pub const DOCUMENT_ENTRY_ON_DEMAND: &str = "urn:uuid:34268e47-fdf5-41a6-ba33-82133c465248";
    /// DocumentEntry.author.
    pub const AUTHOR: &str = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d";
    /// DocumentEntry.classCode.
    pub const CLASS_CODE: &str = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a";
    /// DocumentEntry.confidentialityCode.
    pub const CONFIDENTIALITY_CODE: &str = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f";
    /// DocumentEntry.eventCodeList.
    pub const EVENT_CODE_LIST: &str = "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4";
    /// DocumentEntry.formatCode.
    pub const FORMAT_CODE: &str = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d";
    /// DocumentEntry.healthcareFacilityTypeCode.
    pub const HEALTHCARE_FACILITY_TYPE_CODE: &str = "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1";
    /// DocumentEntry.practiceSettingCode.
    pub const PRACTICE_SETTING_CODE: &str = "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead";
    /// DocumentEntry.typeCode.
    pub const TYPE_CODE: &str = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983";
    /// DocumentEntry.patientId (ExternalIdentifier).
    pub const PATIENT_ID: &str = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427";
    /// DocumentEntry.uniqueId (ExternalIdentifier).
    pub const UNIQUE_ID: &str = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab";
    /// SubmissionSet classification node (RegistryPackage classified as SubmissionSet).
    pub const SUBMISSION_SET: &str = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd";
    /// SubmissionSet.uniqueId.
    pub const SUBMISSION_SET_UNIQUE_ID: &str = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8";
    /// SubmissionSet.sourceId.
    pub const SUBMISSION_SET_SOURCE_ID: &str = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832";
    /// SubmissionSet.patientId.
    pub const SUBMISSION_SET_PATIENT_ID: &str = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446";
}

/// Slot names of DocumentEntry attributes (ITI TF-3 Table 4.2.3.2-1).
pub mod slot {
    /// creationTime.
    pub const CREATION_TIME: &str = "creationTime";
    /// serviceStartTime.
    pub const SERVICE_START_TIME: &str = "serviceStartTime";
    /// serviceStopTime.
    pub const SERVICE_STOP_TIME: &str = "serviceStopTime";
    /// languageCode.
    pub const LANGUAGE_CODE: &str = "languageCode";
    /// repositoryUniqueId.
    pub const REPOSITORY_UNIQUE_ID: &str = "repositoryUniqueId";
    /// size.
    pub const SIZE: &str = "size";
    /// hash.
    pub const HASH: &str = "hash";
    /// sourcePatientId.
    pub const SOURCE_PATIENT_ID: &str = "sourcePatientId";
    /// referenceIdList (CXi values).
    pub const REFERENCE_ID_LIST: &str = "urn:ihe:iti:xds:2013:referenceIdList";
    /// codingScheme of a code classification.
    pub const CODING_SCHEME: &str = "codingScheme";
    /// authorInstitution (XON) of an author classification.
    pub const AUTHOR_INSTITUTION: &str = "authorInstitution";
}

/// Why an ExtrinsicObject is not a usable DocumentEntry. Each maps to XDSRegistryMetadataError for the
/// peer (see [`TransformError::to_registry_error`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransformError {
    /// A required attribute is absent (objectType, status, uniqueId, patientId ...).
    #[error("DocumentEntry {entry}: missing {what}")]
    Missing {
        /// entryUUID.
        entry: String,
        /// The missing attribute.
        what: &'static str,
    },
    /// A value that does not parse.
    #[error("DocumentEntry {entry}: invalid {what}: {value}")]
    Invalid {
        /// entryUUID.
        entry: String,
        /// The attribute.
        what: &'static str,
        /// The value.
        value: String,
    },
}

impl TransformError {
    /// An XDSRegistryMetadataError naming the entry.
    pub fn to_registry_error(&self) -> super::RegistryError {
        let entry = match self {
            TransformError::Missing { entry, .. } | TransformError::Invalid { entry, .. } => entry,
        };
        super::RegistryError::new(super::ErrorCode::XDSRegistryMetadataError, self.to_string())
            .at(entry.clone())
    }
}

fn code_of(c: &Classification) -> Code {
    Code {
        code: c.node_representation.clone().unwrap_or_default(),
        scheme: c
            .object
            .slot_value(slot::CODING_SCHEME)
            .unwrap_or("")
            .to_owned(),
        display: first_value(&c.object.name).to_owned(),
    }
}

/// Maps a wire ExtrinsicObject to a DocumentEntry.
///
/// Errors: [`TransformError::Missing`] when objectType is not a DocumentEntry type or absent, or
/// status, uniqueId or patientId is absent (the NIST samples `sq-resp-lc-no-objectType.xml` and
/// `-no-status.xml` are such metadata errors); [`TransformError::Invalid`] for a size that is not a
/// number. A missing `home` is not an error here: it is `None`, see
/// [`super::query::AdhocQueryResponse::missing_home_errors`].
pub fn document_entry_from_wire(eo: &ExtrinsicObject) -> Result<DocumentEntry, TransformError> {
    let o = &eo.object;
    let entry = o.id.clone();
    let missing = |what| TransformError::Missing {
        entry: entry.clone(),
        what,
    };
    match o.object_type.as_deref() {
        Some(uuids::DOCUMENT_ENTRY_STABLE) | Some(uuids::DOCUMENT_ENTRY_ON_DEMAND) => {}
        _ => return Err(missing("objectType (DocumentEntry stable or on-demand)")),
    }
    let status = o.status.clone().ok_or_else(|| missing("status"))?;
    let unique_id = o
        .external_id(uuids::UNIQUE_ID)
        .ok_or_else(|| missing("uniqueId"))?
        .to_owned();
    let patient_id = o
        .external_id(uuids::PATIENT_ID)
        .ok_or_else(|| missing("patientId"))?
        .to_owned();
    let sv = |name: &str| o.slot_value(name).unwrap_or("").to_owned();
    let size = match o.slot_value(slot::SIZE) {
        None => None,
        Some(s) => Some(
            s.trim()
                .parse::<u64>()
                .map_err(|_| TransformError::Invalid {
                    entry: entry.clone(),
                    what: "size",
                    value: s.to_owned(),
                })?,
        ),
    };
    let single = |scheme: &str| o.classifications_by(scheme).next().map(code_of);
    let many = |scheme: &str| {
        o.classifications_by(scheme)
            .map(code_of)
            .collect::<Vec<_>>()
    };
    let author_institutions = o
        .classifications_by(uuids::AUTHOR)
        .flat_map(|c| {
            c.object
                .slot(slot::AUTHOR_INSTITUTION)
                .map(|s| s.values.as_slice())
                .unwrap_or(&[])
        })
        .map(|x| AuthorInstitution::parse_xon(x))
        .collect();
    let reference_ids = o
        .slot(slot::REFERENCE_ID_LIST)
        .map(|s| {
            s.values
                .iter()
                .filter_map(|v| ReferenceId::parse_cxi(v))
                .collect()
        })
        .unwrap_or_default();
    Ok(DocumentEntry {
        entry_uuid: o.id.clone(),
        unique_id,
        home_community_id: o.home.clone(),
        repository_unique_id: sv(slot::REPOSITORY_UNIQUE_ID),
        patient_id,
        status,
        mime_type: eo.mime_type.clone().unwrap_or_default(),
        title: first_value(&o.name).to_owned(),
        comments: first_value(&o.description).to_owned(),
        class_code: single(uuids::CLASS_CODE),
        type_code: single(uuids::TYPE_CODE),
        format_code: single(uuids::FORMAT_CODE),
        healthcare_facility_type_code: single(uuids::HEALTHCARE_FACILITY_TYPE_CODE),
        practice_setting_code: single(uuids::PRACTICE_SETTING_CODE),
        confidentiality_codes: many(uuids::CONFIDENTIALITY_CODE),
        event_codes: many(uuids::EVENT_CODE_LIST),
        creation_time: sv(slot::CREATION_TIME),
        service_start_time: sv(slot::SERVICE_START_TIME),
        service_stop_time: sv(slot::SERVICE_STOP_TIME),
        language_code: sv(slot::LANGUAGE_CODE),
        size,
        hash: sv(slot::HASH),
        author_institutions,
        reference_ids,
        source_patient_id: sv(slot::SOURCE_PATIENT_ID),
    })
}

fn new_id() -> String {
    format!("urn:uuid:{}", uuid::Uuid::new_v4())
}

fn code_classification(entry: &str, scheme: &str, c: &Code) -> Classification {
    let mut object = RegistryObject::with_id(new_id());
    object
        .slots
        .push(Slot::new(slot::CODING_SCHEME, [c.scheme.as_str()]));
    object.name = intl(&c.display);
    Classification {
        object,
        classification_scheme: Some(scheme.to_owned()),
        classified_object: entry.to_owned(),
        classification_node: None,
        node_representation: Some(c.code.clone()),
    }
}

fn external_id(entry: &str, scheme: &str, name: &str, value: &str) -> ExternalIdentifier {
    let mut object = RegistryObject::with_id(new_id());
    object.name = intl(name);
    ExternalIdentifier {
        object,
        registry_object: entry.to_owned(),
        identification_scheme: scheme.to_owned(),
        value: value.to_owned(),
    }
}

/// Maps a DocumentEntry to a wire ExtrinsicObject (objectType stable, `home` when known), in the
/// attribute order of ITI TF-3 4.2.3.2: slots, Name, Description, classifications (author, classCode,
/// confidentialityCode, eventCodeList, formatCode, healthcareFacilityTypeCode, practiceSettingCode,
/// typeCode), external identifiers (patientId, uniqueId).
pub fn document_entry_to_wire(d: &DocumentEntry) -> ExtrinsicObject {
    let id = d.entry_uuid.as_str();
    let mut o = RegistryObject::with_id(id);
    o.home = d.home_community_id.clone();
    o.object_type = Some(uuids::DOCUMENT_ENTRY_STABLE.to_owned());
    o.status = Some(d.status.clone());
    let mut put = |name: &str, v: &str| {
        if !v.is_empty() {
            o.slots.push(Slot::new(name, [v]));
        }
    };
    put(slot::CREATION_TIME, &d.creation_time);
    put(slot::HASH, &d.hash);
    put(slot::LANGUAGE_CODE, &d.language_code);
    put(slot::REPOSITORY_UNIQUE_ID, &d.repository_unique_id);
    put(slot::SERVICE_START_TIME, &d.service_start_time);
    put(slot::SERVICE_STOP_TIME, &d.service_stop_time);
    if let Some(s) = d.size {
        put(slot::SIZE, &s.to_string());
    }
    put(slot::SOURCE_PATIENT_ID, &d.source_patient_id);
    if !d.reference_ids.is_empty() {
        o.slots.push(Slot::new(
            slot::REFERENCE_ID_LIST,
            d.reference_ids.iter().map(ReferenceId::to_cxi),
        ));
    }
    o.name = intl(&d.title);
    o.description = intl(&d.comments);
    if !d.author_institutions.is_empty() {
        let mut a = RegistryObject::with_id(new_id());
        a.slots.push(Slot::new(
            slot::AUTHOR_INSTITUTION,
            d.author_institutions.iter().map(AuthorInstitution::to_xon),
        ));
        o.classifications.push(Classification {
            object: a,
            classification_scheme: Some(uuids::AUTHOR.to_owned()),
            classified_object: id.to_owned(),
            classification_node: None,
            node_representation: Some(String::new()),
        });
    }
    let mut code = |scheme: &str, c: &Code| {
        o.classifications.push(code_classification(id, scheme, c));
    };
    if let Some(c) = &d.class_code {
        code(uuids::CLASS_CODE, c);
    }
    for c in &d.confidentiality_codes {
        code(uuids::CONFIDENTIALITY_CODE, c);
    }
    for c in &d.event_codes {
        code(uuids::EVENT_CODE_LIST, c);
    }
    if let Some(c) = &d.format_code {
        code(uuids::FORMAT_CODE, c);
    }
    if let Some(c) = &d.healthcare_facility_type_code {
        code(uuids::HEALTHCARE_FACILITY_TYPE_CODE, c);
    }
    if let Some(c) = &d.practice_setting_code {
        code(uuids::PRACTICE_SETTING_CODE, c);
    }
    if let Some(c) = &d.type_code {
        code(uuids::TYPE_CODE, c);
    }
    o.external_identifiers.push(external_id(
        id,
        uuids::PATIENT_ID,
        "XDSDocumentEntry.patientId",
        &d.patient_id,
    ));
    o.external_identifiers.push(external_id(
        id,
        uuids::UNIQUE_ID,
        "XDSDocumentEntry.uniqueId",
        &d.unique_id,
    ));
    ExtrinsicObject {
        object: o,
        mime_type: Some(d.mime_type.clone()),
        is_opaque: None,
        content_version: None,
    }
}

/// The DocumentEntries of a query response: each ExtrinsicObject mapped, errors collected per entry so
/// one bad entry does not hide the others.
pub fn document_entries(objects: &[Identifiable]) -> (Vec<DocumentEntry>, Vec<TransformError>) {
    let mut ok = Vec::new();
    let mut errs = Vec::new();
    for o in objects {
        if let Identifiable::ExtrinsicObject(eo) = o {
            match document_entry_from_wire(eo) {
                Ok(d) => ok.push(d),
                Err(e) => errs.push(e),
            }
        }
    }
    (ok, errs)
}

/// Whether a DocumentEntry lacks `home` (an initiating gateway answers XDSMissingHomeCommunityId for it,
/// ITI TF-2b 3.38.4.1.2.1); `from` is the community it came from, for the error location.
pub fn missing_home(
    d: &DocumentEntry,
    from: Option<&HomeCommunityId>,
) -> Option<super::RegistryError> {
    if d.home_community_id.is_some() {
        return None;
    }
    let e = super::RegistryError::new(
        super::ErrorCode::XDSMissingHomeCommunityId,
        format!("DocumentEntry {} has no homeCommunityId", d.entry_uuid),
    );
    Some(match from {
        Some(h) => e.at(h.to_string()),
        None => e,
    })
}
