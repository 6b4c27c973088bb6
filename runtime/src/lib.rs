//! The DUO gateway runtime.
//!
//! Layers, outermost first (see docs/ARCHITECTURE.md): [`server`] (routes, TLS, metrics) → [`gateway`]
//! (initiating and responding side, their one fan-out) → [`timeline`] → [`consent`] / [`localization`] (Mitz,
//! through the one [`mitz`] client) →
//! [`backend`] (one trait per kind of community) → [`ihe`] (wire types and codecs) → [`model`].
//! [`audit`] records every query, retrieve and consent decision; [`config`] is the configuration file the
//! operator renders. [`dicom`] reads DICOM instances and builds and parses KOS manifests.
//!
//! The test kit (simulators, the demo world, synthetic DICOM and reports, test PKI) is its own crate,
//! `duo-testkit` (runtime/testkit), which depends on this one; here it is a dev-dependency only, so the
//! shipped `duo-gateway` holds none of it.

pub use duo_core::{config, model, pki, timeline};
pub use duo_trust::{revocation, tls};
pub use duo_wire::{ihe, xml};

pub mod audit;
pub mod backend;
pub mod consent;
pub mod dicom;
pub mod gateway;
pub mod limits;
pub mod localization;
pub mod mitz;
pub mod registration;
pub mod server;

/// JSON log lines on stderr, filtered by `RUST_LOG` (default `info`); for `duo-gateway` and the test
/// kit's binaries. A second call does nothing.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Tunes the C allocator for this process's pattern; `duo-gateway`, `duo-testbed` and the benchmarks call
/// it first thing, so the figures are those of the shipped binary.
///
/// A parsed ITI-38 answer is tens of thousands of small strings freed together: glibc's fastbins then
/// make every later large allocation or free walk and merge them (`malloc_consolidate`), which cost
/// about a tenth of a 1,000-entry parse. With fastbins off (`M_MXFAST` = 0) small blocks still go
/// through the per-thread cache, and freed ones merge at once.
///
/// Blocks of 1 MiB and more are mapped on their own (`M_MMAP_THRESHOLD`; setting it also stops glibc
/// from raising the threshold after each such block is freed): a peer's buffered answer (up to the
/// roots and inline documents of `maxBufferedAnswerBytes`) then goes back to the system when it is
/// dropped, and a growing buffer is moved with `mremap` instead of being copied. Without it, answers
/// handled on different threads left their blocks in each thread's arena: four 15 MiB inline answers in
/// turn took the gateway to about 90 MiB resident. No effect on other C libraries.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes an allocator parameter; it is called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MXFAST, 0);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}
