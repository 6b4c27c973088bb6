//! Trust across the network, shared by the gateway runtime and the operator.
//!
//! - [`tls`]: the TLS policy of every connection (versions, cipher suites and groups, client
//!   certificates checked against the trust bundle and for revocation), and the one outbound HTTP
//!   client (no redirects followed, no plain http unless configured) that every component uses.
//! - [`revocation`]: CRL and OCSP checks of certificate chains, cached, with rollback protection and a
//!   configured fallback when revocation data cannot be had.
//!
//! Layering (see docs/ARCHITECTURE.md): builds on `duo-core` (configuration types, certificate
//! reading) only; no HTTP server.

pub(crate) use duo_core::{config, pki};

pub mod revocation;
pub mod tls;
