//! The DICOM layer: reading DICOM Part 10 files and building and parsing XDS-I.b KOS manifests. Synthetic
//! studies, reports, their XDS metadata, the simulated instance store and the corpus loader are the test
//! kit's (`duo_testkit::dicom`).
//!
//! Parts (each with its tests beside it):
//! - [`instance`]: one Part 10 file (bytes) → [`InstanceInfo`], with typed errors ([`DicomError`]) and a
//!   length guard so hostile input can neither panic nor make the parser allocate gigabytes.
//! - [`kos`]: the XDS-I.b manifest (DICOM Key Object Selection Document, PS3.3 A.35.4, RAD TF-3 4.68.4.1.2.2)
//!   and its parser into [`crate::model::ImagingStudy`].
//! - [`dataset`]: element helpers and the Part 10 encoder shared by the KOS writer and the test kit's
//!   synthetic studies.
//!
//! This module knows nothing of SOAP, HTTP or ebRIM; the CDA report is written as text, never parsed.

pub mod codes;
pub mod dataset;
mod guard;
pub mod instance;
pub mod kos;
pub mod uid;

pub use instance::{InstanceInfo, read_instance, read_instance_header};
pub use kos::{Kos, KosManifest, KosOptions, KosPatient, build_kos, parse_kos};

/// Transfer syntax UIDs this module writes or names (PS3.6 Table A-1).
pub mod transfer_syntax {
    /// Implicit VR Little Endian, the DICOM default.
    pub const IMPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2";
    /// Explicit VR Little Endian: every file this module writes uses it.
    pub const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";
    /// Deflated Explicit VR Little Endian (not readable here: no deflate codec is built in).
    pub const DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1.99";
    /// Explicit VR Big Endian (retired, still found in archives).
    pub const EXPLICIT_VR_BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";
}

/// Implementation Class UID (0002,0012) written into the File Meta Information of every file this module
/// creates (PS3.7 D.3.3.2): a fixed `2.25` UUID-derived UID identifying the DUO gateway's DICOM writer.
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.163683643312038476096533472341588330710";

/// Implementation Version Name (0002,0013), at most 16 characters (SH).
pub const IMPLEMENTATION_VERSION_NAME: &str = "DUO_GATEWAY_01";

/// Why DICOM input was rejected or output could not be made. Each message names the reason and, where
/// there is one, the attribute (name and tag) or byte offset at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DicomError {
    /// The bytes are not a DICOM Part 10 file: no `DICM` prefix after a 128-byte preamble or at the start
    /// (PS3.10 7.1).
    #[error("not a DICOM Part 10 file: {0}")]
    NotPart10(String),
    /// The encoding is broken: an element or item runs past the end of the data, a length is impossible,
    /// nesting is too deep, or the parser gave up (its message is kept).
    #[error("malformed DICOM data: {0}")]
    Malformed(String),
    /// The transfer syntax cannot be decoded here (e.g. deflate, or an unknown private UID).
    #[error("unsupported transfer syntax {0}")]
    UnsupportedTransferSyntax(String),
    /// A valid but rare encoding the DICOM parser cannot read (named in the message).
    #[error("unsupported encoding: {0}")]
    UnsupportedEncoding(String),
    /// A required attribute is absent or empty.
    #[error("missing {0}")]
    MissingAttribute(&'static str),
    /// An attribute is present but its value cannot be used.
    #[error("invalid {attribute}: {reason}")]
    InvalidAttribute {
        /// Name and tag, e.g. `SOP Class UID (0008,0016)`.
        attribute: &'static str,
        /// What is wrong with the value.
        reason: String,
    },
    /// The object is a valid DICOM file but not a Key Object Selection Document.
    #[error("not a Key Object Selection Document: SOP Class UID is {0:?}")]
    NotKos(String),
    /// The input set is not usable for what was asked (e.g. instances of two studies for one manifest).
    #[error("inconsistent input: {0}")]
    Inconsistent(String),
    /// A value given to a generator is out of range (e.g. a UID root that makes UIDs longer than 64 chars).
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// Writing a DICOM object failed (an internal error: the message of the encoder is kept).
    #[error("cannot encode DICOM object: {0}")]
    Encode(String),
    /// A file or folder could not be read.
    #[error("cannot read {path}: {reason}")]
    Io {
        /// The path.
        path: String,
        /// The OS error text.
        reason: String,
    },
}

/// The message of an error and every source below it, joined with `: ` (dicom-rs errors nest their cause).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.ends_with(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}
