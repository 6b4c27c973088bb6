//! Simulators of the parts with no public implementation, following the published wire formats exactly
//! and tested against the samples in `testdata/`: an XDS-I.b affinity domain (registry, repository,
//! imaging document source) with a DSUB notification broker ([`dsub`], ITI-52 in, ITI-53 out), a TLB node
//! (XCA-I responding gateway) and [`mitz`] (closed question, open question, subscriptions). The demo and the tests use them.

pub mod bed;
pub mod dicomweb;
pub mod dsub;
pub mod faults;
pub mod mitz;
pub mod registry;
mod retrieve;
pub mod seed;
pub mod serve;
pub mod store;
pub mod tlb;
pub mod wire;
pub mod xds;
