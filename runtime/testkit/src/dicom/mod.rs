//! DICOM for tests and the demo, beside the gateway's own DICOM layer (re-exported here, so
//! `duo_testkit::dicom::kos` is `duo_runtime::dicom::kos`):
//! - [`synth`]: deterministic synthetic studies (CT, MR, CR, DX, US) as valid Part 10 files with pixel data.
//! - [`report`]: a radiology report per study as PDF 1.4 and as CDA R2 (the two formats a Twiin consumer must
//!   accept).
//! - [`xds`]: [`crate::model::DocumentEntry`] metadata for a manifest and for a report (ITI TF-3 4.2.3.2).
//! - [`corpus`]: a folder of real DICOM files → studies with their manifests plus a per-file load report.
//! - [`store`]: lookup of an instance by (study, series, SOP instance) and transfer syntax selection, as an
//!   imaging document source needs for RAD-69 / RAD-75.

pub use duo_runtime::dicom::*;

pub mod corpus;
pub mod report;
pub mod store;
pub mod synth;
pub mod xds;

#[cfg(test)]
mod tool_checks;

pub use store::{Encoding, InstanceStore, LookupError, StoredInstance};
