//! Domain view of XDS metadata: DocumentEntry with its imaging metadata, studies and organisations.
//!
//! These types know nothing of ebRIM: `ihe::transform` maps between them and the wire types
//! (ITI TF-3 4.2.3.2 "Document Entry Attributes", RAD TF-3 4.68.4.1.2.3 for XDS-I.b manifests).

use serde::{Deserialize, Serialize};

use super::ids::{FacilityType, HomeCommunityId, Ura};

/// A coded value as XDS carries it in a Classification: code, coding scheme and display name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Code {
    /// The code (`nodeRepresentation`).
    pub code: String,
    /// The coding scheme (slot `codingScheme`), e.g. `DCM` or `2.16.840.1.113883.6.96`.
    pub scheme: String,
    /// The display name (`Name/LocalizedString/@value`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub display: String,
}

impl Code {
    /// A code with scheme and display name.
    pub fn new(code: &str, scheme: &str, display: &str) -> Code {
        Code {
            code: code.into(),
            scheme: scheme.into(),
            display: display.into(),
        }
    }
}

/// Known reference id types (ITI TF-3 Table 4.2.3.2-1, referenceIdList; CXi component 5).
pub mod reference_type {
    /// Accession number.
    pub const ACCESSION: &str = "urn:ihe:iti:xds:2013:accession";
    /// Study Instance UID (XDS-I.b, CP-RAD-..., 2016).
    pub const STUDY_INSTANCE_UID: &str = "urn:ihe:iti:xds:2016:studyInstanceUID";
    /// Order / referral number.
    pub const REFERRAL: &str = "urn:ihe:iti:xds:2013:referral";
    /// Placer order number.
    pub const ORDER: &str = "urn:ihe:iti:xds:2013:order";
}

/// One entry of a DocumentEntry's referenceIdList, in CXi form `id^^^assigningAuthority^type`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReferenceId {
    /// CXi component 1.
    pub id: String,
    /// CXi component 4 (assigning authority, HD form), may be empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub assigning_authority: String,
    /// CXi component 5: the identifier type, see [`reference_type`].
    pub id_type: String,
}

impl ReferenceId {
    /// Parses `id^^^authority^type`; `None` when there is no id or no type.
    pub fn parse_cxi(s: &str) -> Option<ReferenceId> {
        let mut parts = s.split('^');
        let id = parts.next()?.trim();
        let _c2 = parts.next();
        let _c3 = parts.next();
        let authority = parts.next().unwrap_or("").trim();
        let id_type = parts.next().unwrap_or("").trim();
        if id.is_empty() || id_type.is_empty() {
            return None;
        }
        Some(ReferenceId {
            id: id.into(),
            assigning_authority: authority.into(),
            id_type: id_type.into(),
        })
    }

    /// The CXi text: `id^^^authority^type`.
    pub fn to_cxi(&self) -> String {
        format!(
            "{}^^^{}^{}",
            self.id, self.assigning_authority, self.id_type
        )
    }
}

/// What a DocumentEntry is, for the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DocumentKind {
    /// A KOS manifest of an imaging study (formatCode `1.2.840.10008.5.1.4.1.1.88.59`, or mimeType
    /// `application/dicom`).
    ImagingManifest,
    /// A radiology report (PDF or CDA), linked to its study by accession number.
    Report,
    /// Anything else.
    Other,
}

/// DICOM SOP class / formatCode of a Key Object Selection document (the XDS-I.b manifest).
pub const KOS_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.88.59";
/// Coding scheme of formatCode values that are DICOM SOP classes.
pub const KOS_FORMAT_SCHEME: &str = "1.2.840.10008.2.6.1";
/// SNOMED CT classCode of a radiology report used by Twiin (docs/DOMAIN.md).
pub const REPORT_CLASS_CODE: &str = "9491000146107";
/// SNOMED CT typeCode of a radiology report used by Twiin.
pub const REPORT_TYPE_CODE: &str = "722124004";
/// formatCode of a PDF report in XDS-I (`urn:ihe:rad:PDF`).
pub const PDF_FORMAT_CODE: &str = "urn:ihe:rad:PDF";

/// The document author's institution: name and, where given as an XON with the URA OID, the URA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AuthorInstitution {
    /// XON component 1.
    pub name: String,
    /// XON component 10 when component 6 names the URA assigning authority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ura: Option<Ura>,
}

impl AuthorInstitution {
    /// Parses XON `name^^^^^&oid&ISO^^^^id`.
    pub fn parse_xon(s: &str) -> AuthorInstitution {
        let parts: Vec<&str> = s.split('^').collect();
        let name = parts.first().copied().unwrap_or("").to_owned();
        let authority = parts.get(5).copied().unwrap_or("");
        let id = parts.get(9).copied().unwrap_or("");
        let ura = if authority.contains(Ura::OID) {
            id.parse().ok()
        } else {
            None
        };
        AuthorInstitution { name, ura }
    }

    /// The XON text; with a URA, `name^^^^^&2.16.528.1.1007.3.3&ISO^^^^<ura>`.
    pub fn to_xon(&self) -> String {
        match &self.ura {
            Some(u) => format!("{}^^^^^&{}&ISO^^^^{}", self.name, Ura::OID, u),
            None => self.name.clone(),
        }
    }
}

/// A DocumentEntry (stable, `urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1`) as the gateway needs it.
///
/// Fields follow ITI TF-3 4.2.3.2; times are kept as the DTM text XDS carries (`YYYY[MM[DD[hh[mm[ss]]]]]`, UTC).
/// Imaging fields (`study_instance_uid`, `accession_number`, `modalities`) are derived views of
/// `reference_ids` and `event_codes`, see the accessor methods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct DocumentEntry {
    /// entryUUID (`ExtrinsicObject/@id`), `urn:uuid:...`.
    pub entry_uuid: String,
    /// uniqueId (ExternalIdentifier `urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab`). For a KOS manifest
    /// this is the SOP Instance UID of the KOS object.
    pub unique_id: String,
    /// homeCommunityId of the community that holds the document (`@home`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_community_id: Option<HomeCommunityId>,
    /// repositoryUniqueId slot.
    pub repository_unique_id: String,
    /// Patient id in CX form (ExternalIdentifier `urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427`).
    pub patient_id: String,
    /// availabilityStatus, e.g. `urn:oasis:names:tc:ebxml-regrep:StatusType:Approved`.
    pub status: String,
    /// mimeType.
    pub mime_type: String,
    /// Title (`Name`).
    #[serde(default)]
    pub title: String,
    /// Comments (`Description`).
    #[serde(default)]
    pub comments: String,
    /// classCode.
    #[serde(default)]
    pub class_code: Option<Code>,
    /// typeCode.
    #[serde(default)]
    pub type_code: Option<Code>,
    /// formatCode.
    #[serde(default)]
    pub format_code: Option<Code>,
    /// healthcareFacilityTypeCode.
    #[serde(default)]
    pub healthcare_facility_type_code: Option<Code>,
    /// practiceSettingCode.
    #[serde(default)]
    pub practice_setting_code: Option<Code>,
    /// confidentialityCode (0..n).
    #[serde(default)]
    pub confidentiality_codes: Vec<Code>,
    /// eventCodeList: for imaging, the modalities (DICOM CID 29, scheme `DCM`) and anatomic region.
    #[serde(default)]
    pub event_codes: Vec<Code>,
    /// creationTime (DTM).
    #[serde(default)]
    pub creation_time: String,
    /// serviceStartTime (DTM): for imaging, the study date/time.
    #[serde(default)]
    pub service_start_time: String,
    /// serviceStopTime (DTM).
    #[serde(default)]
    pub service_stop_time: String,
    /// languageCode.
    #[serde(default)]
    pub language_code: String,
    /// size in bytes.
    #[serde(default)]
    pub size: Option<u64>,
    /// SHA-1 hash, hex.
    #[serde(default)]
    pub hash: String,
    /// authorInstitution of the (first) author.
    #[serde(default)]
    pub author_institutions: Vec<AuthorInstitution>,
    /// referenceIdList (CXi).
    #[serde(default)]
    pub reference_ids: Vec<ReferenceId>,
    /// sourcePatientId (CX).
    #[serde(default)]
    pub source_patient_id: String,
}

impl DocumentEntry {
    /// Study Instance UID from the referenceIdList (type `urn:ihe:iti:xds:2016:studyInstanceUID`).
    pub fn study_instance_uid(&self) -> Option<&str> {
        self.reference(reference_type::STUDY_INSTANCE_UID)
    }

    /// Accession number from the referenceIdList (type `urn:ihe:iti:xds:2013:accession`).
    pub fn accession_number(&self) -> Option<&str> {
        self.reference(reference_type::ACCESSION)
    }

    fn reference(&self, t: &str) -> Option<&str> {
        self.reference_ids
            .iter()
            .find(|r| r.id_type == t)
            .map(|r| r.id.as_str())
    }

    /// Modalities: eventCodeList entries with coding scheme `DCM` (DICOM CID 29).
    pub fn modalities(&self) -> impl Iterator<Item = &str> {
        self.event_codes
            .iter()
            .filter(|c| c.scheme == "DCM" || c.scheme == "1.2.840.10008.2.16.4")
            .map(|c| c.code.as_str())
    }

    /// Classifies the entry as imaging manifest, radiology report or other.
    ///
    /// A manifest has formatCode = the KOS SOP class or mimeType `application/dicom`; a report has the
    /// Twiin report classCode/typeCode, the `urn:ihe:rad:PDF` formatCode, or is a PDF/CDA that carries an
    /// accession number but no Study Instance UID of its own.
    pub fn kind(&self) -> DocumentKind {
        let format = self
            .format_code
            .as_ref()
            .map(|c| c.code.as_str())
            .unwrap_or("");
        if format == KOS_SOP_CLASS || self.mime_type == "application/dicom" {
            return DocumentKind::ImagingManifest;
        }
        let class = self
            .class_code
            .as_ref()
            .map(|c| c.code.as_str())
            .unwrap_or("");
        let typ = self
            .type_code
            .as_ref()
            .map(|c| c.code.as_str())
            .unwrap_or("");
        let pdf_or_cda = matches!(
            self.mime_type.as_str(),
            "application/pdf" | "text/xml" | "application/xml" | "application/hl7-v3+xml"
        );
        if class == REPORT_CLASS_CODE
            || typ == REPORT_TYPE_CODE
            || format == PDF_FORMAT_CODE
            || (pdf_or_cda && self.accession_number().is_some())
        {
            return DocumentKind::Report;
        }
        DocumentKind::Other
    }
}

/// A healthcare organisation as the timeline names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Organization {
    /// URA.
    pub ura: Ura,
    /// Human-readable name.
    pub name: String,
    /// Zorgaanbiedercategorie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facility_type: Option<FacilityType>,
    /// The community through which its data is reachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_community_id: Option<HomeCommunityId>,
}

/// One DICOM instance of a study (from a KOS manifest or QIDO-RS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImagingInstance {
    /// SOP Instance UID (0008,0018): the DocumentUniqueId in RAD-69/RAD-75.
    pub sop_instance_uid: String,
    /// SOP Class UID (0008,0016).
    pub sop_class_uid: String,
}

/// One series of a study.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImagingSeries {
    /// Series Instance UID (0020,000E).
    pub series_instance_uid: String,
    /// Modality (0008,0060), when known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub modality: String,
    /// Where the instances can be retrieved (RAD-69/RAD-75 RepositoryUniqueId: the imaging document
    /// source's unique id, KOS Retrieve Location UID (0040,E011)).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub retrieve_location_uid: String,
    /// The instances.
    pub instances: Vec<ImagingInstance>,
}

/// The content of an imaging study as a KOS manifest or QIDO-RS describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ImagingStudy {
    /// Study Instance UID (0020,000D).
    pub study_instance_uid: String,
    /// Accession number (0008,0050).
    #[serde(default)]
    pub accession_number: String,
    /// Study date (0008,0020) and time (0008,0030), as DICOM DA/TM text.
    #[serde(default)]
    pub study_date: String,
    /// Study time, DICOM TM.
    #[serde(default)]
    pub study_time: String,
    /// Study description (0008,1030).
    #[serde(default)]
    pub description: String,
    /// Body part examined (0018,0015) where known.
    #[serde(default)]
    pub body_part: String,
    /// Series with their instances.
    pub series: Vec<ImagingSeries>,
}

impl ImagingStudy {
    /// Number of series.
    pub fn number_of_series(&self) -> usize {
        self.series.len()
    }

    /// Number of instances over all series.
    pub fn number_of_instances(&self) -> usize {
        self.series.iter().map(|s| s.instances.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cxi_round_trip() {
        let r = ReferenceId::parse_cxi("1.2.3.4^^^^urn:ihe:iti:xds:2016:studyInstanceUID").unwrap();
        assert_eq!(r.id, "1.2.3.4");
        assert_eq!(r.assigning_authority, "");
        assert_eq!(
            r.to_cxi(),
            "1.2.3.4^^^^urn:ihe:iti:xds:2016:studyInstanceUID"
        );
        let a = ReferenceId::parse_cxi("ACC1^^^&1.2.3&ISO^urn:ihe:iti:xds:2013:accession").unwrap();
        assert_eq!(a.assigning_authority, "&1.2.3&ISO");
        assert!(ReferenceId::parse_cxi("^^^^x").is_none());
        assert!(ReferenceId::parse_cxi("abc").is_none());
    }

    #[test]
    fn xon_with_ura() {
        let a =
            AuthorInstitution::parse_xon("Ziekenhuis A^^^^^&2.16.528.1.1007.3.3&ISO^^^^12345678");
        assert_eq!(a.name, "Ziekenhuis A");
        assert_eq!(a.ura.as_ref().map(|u| u.as_str()), Some("12345678"));
        assert_eq!(AuthorInstitution::parse_xon(&a.to_xon()), a);
        assert_eq!(AuthorInstitution::parse_xon("Cleveland Clinic").ura, None);
    }

    #[test]
    fn kinds() {
        let mut d = DocumentEntry {
            mime_type: "application/dicom".into(),
            ..Default::default()
        };
        assert_eq!(d.kind(), DocumentKind::ImagingManifest);
        d.mime_type = "application/pdf".into();
        assert_eq!(d.kind(), DocumentKind::Other);
        d.reference_ids.push(ReferenceId {
            id: "A1".into(),
            assigning_authority: String::new(),
            id_type: reference_type::ACCESSION.into(),
        });
        assert_eq!(d.kind(), DocumentKind::Report);
        assert_eq!(d.accession_number(), Some("A1"));
    }
}
