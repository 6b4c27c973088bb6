//! Simulators of the parts that have no public implementation, following the published formats exactly and
//! tested against the samples in `testdata/`: [`mitz`] (closed question, open question, subscriptions).

pub mod mitz;
