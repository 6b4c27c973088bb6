//! The DUO gateway runtime.
//!
//! Layers, outermost first (see `ARCHITECTURE.md`): [`server`] (routes, TLS, metrics) → [`gateway`]
//! (initiating and responding side) → [`timeline`] → [`consent`] / [`localization`] (Mitz) →
//! [`backend`] (one trait per kind of community) → [`ihe`] (wire types and codecs) → [`model`].
//! [`audit`] records every query, retrieve and consent decision; [`config`] is the configuration file the
//! operator renders. [`sim`] holds the simulators of parts with no public implementation (XDS-I.b
//! registry/repository/imaging document source, TLB node, Mitz) and [`demo`] the embedded default.
//! [`dicom`] reads, generates and publishes DICOM: instances, KOS manifests, reports and their XDS metadata.

pub mod audit;
pub mod backend;
pub mod config;
pub mod consent;
pub mod demo;
pub mod dicom;
pub mod gateway;
pub mod ihe;
pub mod localization;
pub mod model;
pub mod pki;
pub mod server;
pub mod sim;
pub mod timeline;
pub mod tls;
pub mod xml;

#[cfg(test)]
pub(crate) mod test_pki;
