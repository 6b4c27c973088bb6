//! The core of DUO, shared by the gateway runtime and the operator: what both must agree on, without
//! I/O or HTTP.
//!
//! - [`model`]: the domain's identifiers (BSN, URA, UZI, home community ids, data categories, ...) and
//!   the imaging study documents the timeline shows.
//! - [`config`]: the gateway configuration file (rendered by the operator, read by the gateway) and its
//!   validation, with the field path and reason of every refusal.
//! - [`pki`]: reading certificates and keys (UZI server certificates, trust bundles), their identity
//!   (URA, subject, SPKI pin), and test certificate generation.
//! - [`timeline`]: merging studies from several communities into one timeline.
//!
//! Layering (see docs/ARCHITECTURE.md): this crate depends on no other crate of the workspace; the wire
//! crate and the gateway runtime build on it, and the operator uses it for the configuration it renders.

pub mod config;
pub mod model;
pub mod pki;
pub mod timeline;
