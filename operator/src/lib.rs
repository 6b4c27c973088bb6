//! `duo-operator`: reconciles DuoGateway, DuoCommunity and MitzConnection resources into running DUO
//! gateways.
//!
//! Pipeline per DuoGateway (docs/ARCHITECTURE.md "The operator"): **fetch** the resource and what it
//! references ([`reconcile`]) → **validate** certificates and references ([`validate`]) → **build** the
//! runtime config and child objects with pure functions ([`build`]) → **apply** with server-side apply
//! under one field manager → **status** with conditions Ready / Progressing / Degraded (types and reasons
//! in [`condition`]).

pub mod build;
pub mod condition;
pub mod crd;
pub mod metrics;
pub mod reconcile;
pub mod run;
pub mod scope;
pub mod validate;

/// Registry and organisation of the project's container images (`images/`, the charts' defaults).
pub const IMAGE_PREFIX: &str = "ghcr.io/duo-beeldbeschikbaarheid";

/// The gateway image the operator runs when a DuoGateway sets no `spec.image`:
/// `ghcr.io/duo-beeldbeschikbaarheid/duo-gateway:<crate version>`. The operator chart's
/// `gatewayImage` defaults render exactly this (checked by `operator/tests/helm.rs`), and the images are
/// tagged with the workspace version (README, "Container images").
pub const DEFAULT_GATEWAY_IMAGE: &str = concat!(
    "ghcr.io/duo-beeldbeschikbaarheid/duo-gateway:",
    env!("CARGO_PKG_VERSION")
);

/// Every CRD the operator serves, in a stable order (`duo-operator crd` writes one file per CRD).
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt;
    vec![
        crd::DuoGateway::crd(),
        crd::DuoCommunity::crd(),
        crd::MitzConnection::crd(),
    ]
}
