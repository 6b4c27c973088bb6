//! Outermost layer: listeners, TLS termination, tower layers, metrics. Holds no business rules.

pub mod app;
pub mod listener;
pub mod metrics;
pub mod run;
