//! Outermost layer: listeners, TLS termination, tower layers, the ops endpoints. Holds no business rules.

pub mod app;
pub mod listener;
/// The metrics are the gateway's ([`crate::gateway::metrics`]); the ops listener serves them.
pub use crate::gateway::metrics;
pub mod run;
