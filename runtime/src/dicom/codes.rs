//! Code systems and codes of the XDS metadata of imaging manifests (docs/DOMAIN.md "Imaging specifics"),
//! used by the DICOMweb community's manifests and by the test kit's published studies.

/// classCode of an imaging manifest (IHE XDS class code `IMAGES`).
pub const IMAGES_CLASS_CODE: &str = "IMAGES";
/// Code system of the IHE XDS class codes.
pub const IHE_CLASS_CODE_SCHEME: &str = "1.3.6.1.4.1.19376.1.2.6.1";
/// LOINC code system OID.
pub const LOINC: &str = "2.16.840.1.113883.6.1";
