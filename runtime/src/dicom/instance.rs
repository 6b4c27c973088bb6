//! Reading one DICOM Part 10 file (PS3.10 7.1) into the facts the gateway needs: [`InstanceInfo`].
//!
//! Input is untrusted (files from a PACS folder, manifests from a peer): the bytes are first checked by a
//! structural scan (`guard`) so that no declared length or nesting depth can exhaust memory or stack, then
//! parsed with dicom-rs. Any parser panic is caught and reported as [`DicomError::Malformed`].

use std::panic::{AssertUnwindSafe, catch_unwind};

use dicom_core::Tag;
use dicom_core::value::{PrimitiveValue, Value};
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use serde::{Deserialize, Serialize};

use super::{DicomError, error_chain, guard};

/// What the gateway knows about one DICOM instance, read from its Part 10 encoding.
///
/// Text values are as decoded by the file's Specific Character Set, with trailing spaces and NULs removed;
/// absent optional attributes are empty strings (or `None` for numbers). DA/TM values are kept as DICOM
/// text (`YYYYMMDD`, `HHMMSS[.F]`), PN values in DICOM form (`Family^Given`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct InstanceInfo {
    /// SOP Class UID (0008,0016).
    pub sop_class_uid: String,
    /// SOP Instance UID (0008,0018): the DocumentUniqueId of RAD-69 / RAD-75.
    pub sop_instance_uid: String,
    /// Study Instance UID (0020,000D).
    pub study_instance_uid: String,
    /// Series Instance UID (0020,000E).
    pub series_instance_uid: String,
    /// Transfer Syntax UID (0002,0010) of this encoding.
    pub transfer_syntax_uid: String,
    /// Patient ID (0010,0020).
    pub patient_id: String,
    /// Issuer of Patient ID (0010,0021).
    pub issuer_of_patient_id: String,
    /// Universal Entity ID (0040,0032) of the Issuer of Patient ID Qualifiers Sequence (0010,0024): the
    /// assigning authority OID (for a BSN `2.16.840.1.113883.2.4.6.3`).
    pub patient_id_authority: String,
    /// Patient's Name (0010,0010), PN.
    pub patient_name: String,
    /// Patient's Birth Date (0010,0030), DA.
    pub patient_birth_date: String,
    /// Patient's Sex (0010,0040): `M`, `F`, `O` or empty.
    pub patient_sex: String,
    /// Modality (0008,0060), e.g. `CT`.
    pub modality: String,
    /// Study Date (0008,0020), DA.
    pub study_date: String,
    /// Study Time (0008,0030), TM.
    pub study_time: String,
    /// Timezone Offset From UTC (0008,0201), `+HHMM` / `-HHMM`, when the file states it.
    pub timezone_offset: String,
    /// Study Description (0008,1030).
    pub study_description: String,
    /// Series Description (0008,103E).
    pub series_description: String,
    /// Accession Number (0008,0050).
    pub accession_number: String,
    /// Universal Entity ID (0040,0032) of the Issuer of Accession Number Sequence (0008,0051): the OID
    /// that scopes the accession number, when given.
    pub accession_authority: String,
    /// Referring Physician's Name (0008,0090), PN.
    pub referring_physician_name: String,
    /// Study ID (0020,0010).
    pub study_id: String,
    /// Body Part Examined (0018,0015), e.g. `CHEST`.
    pub body_part: String,
    /// Institution Name (0008,0080).
    pub institution_name: String,
    /// Series Number (0020,0011), when present and a valid IS.
    pub series_number: Option<i32>,
    /// Instance Number (0020,0013), when present and a valid IS.
    pub instance_number: Option<i32>,
    /// Whether the object is an image (has Rows and Columns, the Image Pixel module): a KOS references it
    /// with value type IMAGE rather than COMPOSITE.
    pub is_image: bool,
}

/// Reads a whole Part 10 file, pixel data included, and returns its facts.
///
/// Reading everything validates the encoding to the end: a file truncated inside its pixel data is an
/// error here. Accepts files with or without the 128-byte preamble.
///
/// Errors: [`DicomError::NotPart10`] without the `DICM` prefix; [`DicomError::Malformed`] for a broken
/// encoding; [`DicomError::UnsupportedTransferSyntax`] for deflate or unknown syntaxes;
/// [`DicomError::MissingAttribute`] when SOP Class/Instance, Study or Series Instance UID is absent.
pub fn read_instance(bytes: &[u8]) -> Result<InstanceInfo, DicomError> {
    let obj = open(bytes, false)?;
    InstanceInfo::from_object(&obj)
}

/// Like [`read_instance`] but stops before Pixel Data (7FE0,0010): for large files where only the header
/// matters. A truncated pixel data element is not detected.
pub fn read_instance_header(bytes: &[u8]) -> Result<InstanceInfo, DicomError> {
    let obj = open(bytes, true)?;
    InstanceInfo::from_object(&obj)
}

/// Parses a Part 10 file into a dicom-rs object after the structural scan; `stop_before_pixel_data` reads
/// only up to Pixel Data.
pub fn open(bytes: &[u8], stop_before_pixel_data: bool) -> Result<DefaultDicomObject, DicomError> {
    let scan = guard::scan(bytes)?;
    let mut options = OpenFileOptions::new().read_preamble(if scan.preamble {
        ReadPreamble::Always
    } else {
        ReadPreamble::Never
    });
    if stop_before_pixel_data {
        options = options.read_until(tags::PIXEL_DATA);
    }
    // The scan makes panics unlikely; a panic left in the parser must still not take the process down.
    let result = catch_unwind(AssertUnwindSafe(|| options.from_reader(bytes)));
    match result {
        Ok(Ok(obj)) => Ok(obj),
        Ok(Err(e)) => {
            let msg = error_chain(&e);
            if msg.contains("nsupported") || msg.contains("nrecognized transfer syntax") {
                Err(DicomError::UnsupportedTransferSyntax(format!(
                    "{}: {msg}",
                    scan.transfer_syntax
                )))
            } else {
                Err(DicomError::Malformed(msg))
            }
        }
        Err(_) => Err(DicomError::Malformed(
            "the DICOM parser failed on this input".into(),
        )),
    }
}

impl InstanceInfo {
    /// Extracts the facts from a parsed object. Requires SOP Class UID, SOP Instance UID (either may come
    /// from the File Meta Information when the data set lacks it), Study and Series Instance UID.
    pub(crate) fn from_object(obj: &DefaultDicomObject) -> Result<InstanceInfo, DicomError> {
        let meta = obj.meta();
        let sop_class_uid = non_empty(
            text(obj, tags::SOP_CLASS_UID),
            meta.media_storage_sop_class_uid(),
        );
        let sop_instance_uid = non_empty(
            text(obj, tags::SOP_INSTANCE_UID),
            meta.media_storage_sop_instance_uid(),
        );
        let info = InstanceInfo {
            sop_class_uid: required(sop_class_uid, "SOP Class UID (0008,0016)")?,
            sop_instance_uid: required(sop_instance_uid, "SOP Instance UID (0008,0018)")?,
            study_instance_uid: required(
                text(obj, tags::STUDY_INSTANCE_UID),
                "Study Instance UID (0020,000D)",
            )?,
            series_instance_uid: required(
                text(obj, tags::SERIES_INSTANCE_UID),
                "Series Instance UID (0020,000E)",
            )?,
            transfer_syntax_uid: meta.transfer_syntax().to_owned(),
            patient_id: text(obj, tags::PATIENT_ID),
            issuer_of_patient_id: text(obj, tags::ISSUER_OF_PATIENT_ID),
            patient_id_authority: item_text(
                obj,
                tags::ISSUER_OF_PATIENT_ID_QUALIFIERS_SEQUENCE,
                tags::UNIVERSAL_ENTITY_ID,
            ),
            patient_name: text(obj, tags::PATIENT_NAME),
            patient_birth_date: text(obj, tags::PATIENT_BIRTH_DATE),
            patient_sex: text(obj, tags::PATIENT_SEX),
            modality: text(obj, tags::MODALITY),
            study_date: text(obj, tags::STUDY_DATE),
            study_time: text(obj, tags::STUDY_TIME),
            timezone_offset: text(obj, tags::TIMEZONE_OFFSET_FROM_UTC),
            study_description: text(obj, tags::STUDY_DESCRIPTION),
            series_description: text(obj, tags::SERIES_DESCRIPTION),
            accession_number: text(obj, tags::ACCESSION_NUMBER),
            accession_authority: item_text(
                obj,
                tags::ISSUER_OF_ACCESSION_NUMBER_SEQUENCE,
                tags::UNIVERSAL_ENTITY_ID,
            ),
            referring_physician_name: text(obj, tags::REFERRING_PHYSICIAN_NAME),
            study_id: text(obj, tags::STUDY_ID),
            body_part: text(obj, tags::BODY_PART_EXAMINED),
            institution_name: text(obj, tags::INSTITUTION_NAME),
            series_number: int(obj, tags::SERIES_NUMBER),
            instance_number: int(obj, tags::INSTANCE_NUMBER),
            is_image: obj.get(tags::ROWS).is_some() && obj.get(tags::COLUMNS).is_some(),
        };
        Ok(info)
    }
}

fn non_empty(a: String, b: &str) -> String {
    if a.is_empty() { b.to_owned() } else { a }
}

fn required(v: String, name: &'static str) -> Result<String, DicomError> {
    if v.is_empty() {
        Err(DicomError::MissingAttribute(name))
    } else {
        Ok(v)
    }
}

/// The text of an element, trimmed of DICOM padding (spaces, NULs); empty when absent or not text.
///
/// An element written with VR UN (some converters write every element so, PS3.5 6.2.2) holds the raw
/// bytes of its value: they are decoded as text, as pydicom does for attributes it knows to be text.
pub(crate) fn text(obj: &InMemDicomObject, tag: Tag) -> String {
    match obj.get(tag) {
        Some(e) => match e.value() {
            Value::Primitive(PrimitiveValue::U8(raw)) => {
                trim(&String::from_utf8_lossy(raw)).to_owned()
            }
            _ => match e.to_str() {
                Ok(s) => trim(&s).to_owned(),
                Err(_) => String::new(),
            },
        },
        None => String::new(),
    }
}

/// DICOM values are padded with spaces (text) or NUL (UI); leading spaces are insignificant too for most VRs.
pub(crate) fn trim(s: &str) -> &str {
    s.trim_matches(|c: char| c == '\0' || c.is_whitespace())
}

/// The text of `inner` in the first item of sequence `seq`.
pub(crate) fn item_text(obj: &InMemDicomObject, seq: Tag, inner: Tag) -> String {
    obj.get(seq)
        .and_then(|e| e.items())
        .and_then(|items| items.first())
        .map(|i| text(i, inner))
        .unwrap_or_default()
}

fn int(obj: &InMemDicomObject, tag: Tag) -> Option<i32> {
    let s = text(obj, tag);
    if s.is_empty() {
        return None;
    }
    // IS may hold several values; the first is the one that counts here.
    s.split('\\')
        .next()
        .and_then(|v| trim(v).parse::<i32>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use duo_testkit::dicom::synth::{SynthConfig, SynthPatient, generate_study};

    fn sample() -> Vec<u8> {
        let cfg = SynthConfig::default();
        let patient = SynthPatient::example();
        let study = generate_study(&cfg, &patient, 7).unwrap();
        study.instances[0].bytes.to_vec()
    }

    #[test]
    fn reads_a_generated_instance() {
        let bytes = sample();
        let info = read_instance(&bytes).unwrap();
        assert_eq!(info.transfer_syntax_uid, "1.2.840.10008.1.2.1");
        assert_eq!(info.patient_id, SynthPatient::example().bsn.as_str());
        assert_eq!(info.patient_id_authority, "2.16.840.1.113883.2.4.6.3");
        assert!(info.study_instance_uid.starts_with("2.25."));
        assert!(info.is_image);
        assert_eq!(info.instance_number, Some(1));
        assert_eq!(read_instance_header(&bytes).unwrap(), info);
        // without the preamble: DICM at offset 0
        assert_eq!(read_instance(&bytes[128..]).unwrap(), info);
    }

    #[test]
    fn truncated_input_is_an_error_at_every_length() {
        let bytes = sample();
        // Pixel Data is the last element: (7FE0,0010) OW.
        let pixel = bytes
            .windows(6)
            .rposition(|w| w == [0xE0, 0x7F, 0x10, 0x00, b'O', b'W'])
            .unwrap();
        let mut accepted = 0;
        for cut in 0..bytes.len() {
            match read_instance(&bytes[..cut]) {
                // A cut exactly between two elements before Pixel Data is a shorter valid file.
                Ok(info) => {
                    assert!(
                        cut <= pixel,
                        "prefix of {cut} bytes (inside Pixel Data at {pixel}) accepted"
                    );
                    assert_eq!(
                        info.sop_instance_uid,
                        read_instance(&bytes).unwrap().sop_instance_uid
                    );
                    accepted += 1;
                }
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        }
        // at most one accepted cut per top-level element after the UIDs
        assert!(accepted < 100, "{accepted}");
        assert!(read_instance(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn garbage_and_hostile_input_never_panics() {
        assert!(matches!(read_instance(b""), Err(DicomError::NotPart10(_))));
        assert!(matches!(
            read_instance(&[0xAB; 1000]),
            Err(DicomError::NotPart10(_))
        ));
        // deterministic mutations of a valid file: flip bytes in the header region
        let bytes = sample();
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut accepted = 0;
        for _ in 0..3000 {
            let mut m = bytes.clone();
            for _ in 0..4 {
                state = duo_testkit::dicom::synth::splitmix64(state);
                let pos = 128 + (state as usize % 1400).min(m.len() - 129);
                m[pos] = (state >> 32) as u8;
            }
            if read_instance(&m).is_ok() {
                accepted += 1;
            }
        }
        // Mutating text values leaves a valid file; what matters is that nothing panicked or aborted.
        assert!(accepted < 3000);
    }

    #[test]
    fn missing_study_uid_is_named() {
        use dicom_core::{DataElement, VR};
        use dicom_object::meta::FileMetaTableBuilder;
        let obj = InMemDicomObject::from_element_iter([
            DataElement::new(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.7"),
            DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, "2.25.1"),
            DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, "2.25.2"),
        ]);
        let file = obj
            .with_meta(FileMetaTableBuilder::new().transfer_syntax("1.2.840.10008.1.2.1"))
            .unwrap();
        let mut out = Vec::new();
        file.write_all(&mut out).unwrap();
        assert_eq!(
            read_instance(&out).unwrap_err(),
            DicomError::MissingAttribute("Study Instance UID (0020,000D)")
        );
        assert_eq!(
            read_instance(&out).unwrap_err().to_string(),
            "missing Study Instance UID (0020,000D)"
        );
    }
}
