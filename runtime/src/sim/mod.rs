//! Simulators of the parts with no public implementation: an XDS-I.b affinity domain (registry,
//! repository, imaging document source), a TLB node (XCA-I responding gateway) and Mitz. They follow the
//! published wire formats exactly and are used by the demo and the tests.

pub mod dicomweb;
pub mod faults;
pub mod registry;
mod retrieve;
pub mod seed;
pub mod serve;
pub mod store;
pub mod tlb;
pub mod wire;
pub mod xds;
