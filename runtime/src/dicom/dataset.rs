//! Building DICOM datasets: the element helpers and the Part 10 encoder that the KOS manifest writer
//! (production: a DICOMweb community's manifests) and the synthetic studies of the test kit share.

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_object::meta::FileMetaTableBuilder;
use jiff::civil::{Date, Time};

use super::{DicomError, IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, error_chain};

/// A DICOM DA value (`YYYYMMDD`, PS3.5 Table 6.2-1) of a civil date.
pub fn da(d: Date) -> String {
    format!("{:04}{:02}{:02}", d.year(), d.month(), d.day())
}

/// A DICOM TM value (`HHMMSS`, whole seconds) of a civil time.
pub fn tm(t: Time) -> String {
    format!("{:02}{:02}{:02}", t.hour(), t.minute(), t.second())
}

/// Puts a string element of the given VR into `obj`, replacing any element with that tag.
pub fn put_str(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
}

/// Puts a sequence (SQ) of `items` into `obj`, replacing any element with that tag.
pub fn put_seq(obj: &mut InMemDicomObject, tag: Tag, items: Vec<InMemDicomObject>) {
    obj.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)));
}

/// The Issuer of Patient ID Qualifiers / Issuer of Accession Number item: Universal Entity ID (OID) of type ISO.
pub fn issuer_item(oid: &str) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    put_str(&mut item, tags::UNIVERSAL_ENTITY_ID, VR::UT, oid);
    put_str(&mut item, tags::UNIVERSAL_ENTITY_ID_TYPE, VR::CS, "ISO");
    item
}

/// A code sequence item (Code Value, Coding Scheme Designator, Code Meaning; PS3.3 Table 8.8-1).
pub fn code_item(value: &str, scheme: &str, meaning: &str) -> InMemDicomObject {
    let mut c = InMemDicomObject::new_empty();
    put_str(&mut c, tags::CODE_VALUE, VR::SH, value);
    put_str(&mut c, tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme);
    put_str(&mut c, tags::CODE_MEANING, VR::LO, meaning);
    c
}

/// Writes the object as Part 10 Explicit VR Little Endian with this program's implementation class.
pub fn encode(obj: InMemDicomObject) -> Result<Vec<u8>, DicomError> {
    let meta = FileMetaTableBuilder::new()
        .transfer_syntax(super::transfer_syntax::EXPLICIT_VR_LITTLE_ENDIAN)
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME);
    let file = obj
        .with_meta(meta)
        .map_err(|e| DicomError::Encode(error_chain(&e)))?;
    let mut out = Vec::new();
    file.write_all(&mut out)
        .map_err(|e| DicomError::Encode(error_chain(&e)))?;
    Ok(out)
}
