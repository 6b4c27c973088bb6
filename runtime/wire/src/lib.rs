//! The wire layer of DUO: what goes over the network between gateways, registries, repositories and
//! consumers, read and written, and nothing about what the gateway decides with it.
//!
//! - [`xml`]: a namespace-aware XML reader over borrowed input (no DTDs, bounded depth, elements and
//!   namespace bindings) and a writer.
//! - [`ihe`]: SOAP 1.2 envelopes and WS-Addressing, ebRIM objects and stored queries (ITI-18/38),
//!   retrieve requests and responses (ITI-39/43, RAD-69/75), MTOM/XOP (streamed), XUA assertions
//!   (ITI-40) and their XML signatures, and the transforms to and from the core model.
//! - [`mitz`]: the Mitz codecs: the closed question (XACML) and the open question (XCPD ITI-56).
//!
//! Layering (see docs/ARCHITECTURE.md): builds on `duo-core` (identifiers, certificate reading) only;
//! limits come in as values ([`xml::Limits`], [`ihe::mtom::MtomLimits`]), never as configuration types.

pub(crate) use duo_core::{model, pki};

pub mod ihe;
pub mod mitz;
pub mod xml;
