//! The DUO test kit (`publish = false`, never in a shipped image): what the demo, the tests and the
//! benchmarks build their surroundings from.
//!
//! - [`sim`]: simulators of the parts with no public implementation, following the published wire formats
//!   exactly and tested against the samples in `testdata/`: an XDS-I.b affinity domain (registry,
//!   repository, imaging document source), a TLB node (XCA-I responding gateway), Mitz (closed question,
//!   open question, subscriptions), a DICOMweb PACS; and [`sim::bed`], gateways and their PKI on loopback.
//! - [`demo`]: the embedded default world and the main job (`duo-testbed demo`, the README's first command).
//! - [`dicom`]: synthetic studies and reports, their XDS metadata, the instance store of the simulated
//!   imaging document source, and the loader of a folder of real DICOM files.
//! - [`test_pki`]: throw-away CAs and leaf certificates for tests.
//!
//! Layering (docs/ARCHITECTURE.md): this crate depends on the gateway crate `duo-runtime`, never the other
//! way round (`duo-runtime` has it as a dev-dependency only, so its tests can use it); the container
//! image's `duo-gateway` is built from `duo-runtime` alone (`scripts/check-layers.sh`, `images/check.sh`).

// The gateway's layers under the names the simulators were written against (`crate::model`, ...).
pub(crate) use duo_runtime::{
    config, consent, gateway, ihe, localization, model, pki, server, tls, xml,
};

pub mod demo;
pub mod dicom;
pub mod sim;
pub mod test_pki;
