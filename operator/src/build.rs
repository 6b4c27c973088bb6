//! Pure builders: from a DuoGateway and what it references to the runtime configuration and every child
//! object (ConfigMap, Deployment, Service, PodDisruptionBudget, NetworkPolicy, ServiceAccount, published
//! DuoCommunity). No I/O: the reconciler fetches, these functions decide, the reconciler applies.

use std::collections::{BTreeMap, BTreeSet};

use duo_core::config::{
    self as rc, AuditConfig, Config, ConsentConfig, FrontEndCertificate, InitiatingConfig,
    LimitsConfig, LocalBackend, MitzConfig, OrganizationConfig, RemoteCommunity, ServerConfig,
    TlsConfig, TrustedFrontEnd,
};
use duo_core::model::{DataCategory, FacilityType, HomeCommunityId, PurposeOfUse, Ura};
use duo_core::pki::{DistinguishedName, SpkiSha256};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort,
    EmptyDirVolumeSource, HTTPGetAction, KeyToPath, PodAffinityTerm, PodAntiAffinity,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, Secret,
    SecretVolumeSource, SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec,
    TopologySpreadConstraint, Volume, VolumeMount, WeightedPodAffinityTerm,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use crate::condition::Reason;
use crate::crd::{
    self as crd, CommunityEndpoints, CommunityIssuer, CommunityOrganization, CommunityTrust,
    ConsentMode, DuoCommunity, DuoCommunitySpec, DuoGateway, Localization, MitzConnection,
    PUBLISHED_BY_LABEL, RESERVED_ANNOTATION_PREFIX, RESERVED_POD_LABELS, RevocationFallback,
    ServiceType, TlsMinVersion,
};

/// Container port of every SOAP and API route (HTTPS, mutual TLS).
pub const HTTPS_PORT: i32 = 8443;
/// Container port of `/healthz`, `/readyz` and `/metrics` (plain HTTP).
pub const OPS_PORT: i32 = 8080;
/// Where the runtime configuration is mounted, and the file the pod's `--config` names.
pub const CONFIG_DIR: &str = "/etc/duo/config";
/// Key of the configuration in the ConfigMap.
pub const CONFIG_KEY: &str = "config.yaml";
/// Mount folder of the hospital's `kubernetes.io/tls` Secret.
pub const TLS_DIR: &str = "/etc/duo/tls";
/// Mount folder of the hospital's trust bundle (file `ca.crt`).
pub const TRUST_DIR: &str = "/etc/duo/trust";
/// Mount folder of the Mitz client certificate Secret.
pub const MITZ_DIR: &str = "/etc/duo/mitz";
/// Mount folder of the Mitz trust bundle (file `ca.crt`).
pub const MITZ_TRUST_DIR: &str = "/etc/duo/mitz-trust";
/// Mount folder of a separate XUA signing key Secret (`spec.xua.signingSecretName`).
pub const XUA_SIGNING_DIR: &str = "/etc/duo/xua-signing";
/// Pod-template annotation holding [`checksum`]: a change rolls the pods.
pub const CHECKSUM_ANNOTATION: &str = "duo.beeldbeschikbaarheid.nl/checksum";
/// The only field manager the operator applies with.
pub const FIELD_MANAGER: &str = "duo-operator";
/// User and group id the gateway runs as (distroless `nonroot`).
pub const RUN_AS: i64 = 65532;

/// Routes of the runtime on [`HTTPS_PORT`] that a published DuoCommunity points at.
pub const ITI38_PATH: &str = "/xca/iti38";
/// ITI-39 route.
pub const ITI39_PATH: &str = "/xca/iti39";
/// RAD-75 route.
pub const RAD75_PATH: &str = "/xcai/rad75";

/// Why a spec cannot be turned into a runtime configuration. `field` is the spec path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct BuildError {
    /// Field of the DuoGateway (or referenced resource) at fault, e.g. `spec.organization.ura`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn bad(field: impl Into<String>, message: impl std::fmt::Display) -> BuildError {
    BuildError {
        field: field.into(),
        message: message.to_string(),
    }
}

/// Name of the Deployment, Service, ServiceAccount, PodDisruptionBudget and NetworkPolicy of a gateway.
pub fn child_name(gw: &DuoGateway) -> String {
    format!("duo-{}", gw.name_any())
}

/// Name of the gateway's ConfigMap.
pub fn config_map_name(gw: &DuoGateway) -> String {
    format!("duo-{}-config", gw.name_any())
}

/// Name of the operator-owned Secret with the gateway's validated certificate material (what the pods
/// mount; see [`material_secret`]).
pub fn material_secret_name(gw: &DuoGateway) -> String {
    format!("duo-{}-material", gw.name_any())
}

/// Keys of the material Secret, in the order of the checksum: the hospital's certificate chain and key,
/// its trust bundle, the separate XUA signing pair (optional) and the Mitz client pair and trust bundle
/// (optional).
pub mod material {
    /// The hospital's TLS certificate chain (PEM).
    pub const TLS_CRT: &str = "tls.crt";
    /// Its private key (PEM).
    pub const TLS_KEY: &str = "tls.key";
    /// The CAs peers' certificates chain to (PEM).
    pub const TRUST: &str = "trust";
    /// The separate XUA signing certificate (`spec.xua.signingSecretName`).
    pub const XUA_CRT: &str = "xua.crt";
    /// Its key.
    pub const XUA_KEY: &str = "xua.key";
    /// The Mitz client certificate.
    pub const MITZ_CRT: &str = "mitz.crt";
    /// Its key.
    pub const MITZ_KEY: &str = "mitz.key";
    /// The CAs Mitz's server certificate chains to.
    pub const MITZ_TRUST: &str = "mitz-trust";
}

/// Where peers reach `gw`: `(host, port)` from `spec.publish.address` (port 443 when it names none),
/// else the Service's name `duo-<name>.<namespace>.svc` on [`HTTPS_PORT`]. Errors name the field.
/// The runtime's `registration` section of `gw`: off, or `mitz` with the notification endpoint at the
/// published address (`https://<publish.address>/mitz/notifications`). Errors: `mitz` without
/// `spec.publish.address` (Mitz must reach the endpoint from outside the cluster), without a MitzConnection
/// `subscriptionUrl` or `notificationClientNames`, or a bad `sourceSystem`.
fn registration(
    gw: &DuoGateway,
    mitz: Option<&MitzConfig>,
) -> Result<rc::RegistrationConfig, BuildError> {
    let r = &gw.spec.registration;
    if r.mode == crd::RegistrationMode::Off {
        return Ok(rc::RegistrationConfig::default());
    }
    let field = "spec.registration.mode";
    if gw.spec.publish.address.is_none() {
        return Err(bad(
            field,
            "mitz needs spec.publish.address: Mitz delivers consent notifications to https://<address>/mitz/notifications",
        ));
    }
    let (host, port) = published_address(gw)?;
    let Some(m) = mitz else {
        return Err(bad(field, "mitz needs spec.mitz (a MitzConnection)"));
    };
    if m.subscription_url.is_none() {
        return Err(bad(
            field,
            "mitz needs the MitzConnection's spec.subscriptionUrl",
        ));
    }
    if m.notification_client_names.is_empty() {
        return Err(bad(
            field,
            "mitz needs the MitzConnection's spec.notificationClientNames (the DNS names of Mitz's client certificate)",
        ));
    }
    let source_system = match &r.source_system {
        None => None,
        Some(s) => Some(
            s.parse()
                .map_err(|e| bad("spec.registration.sourceSystem", e))?,
        ),
    };
    let authority = if port == 443 {
        host
    } else {
        format!("{host}:{port}")
    };
    let dsub = match &r.dsub {
        None => None,
        Some(d) => Some(rc::DsubConfig {
            broker_url: d.broker_url.clone(),
            recipient_url: format!("https://{authority}/dsub/notify"),
            broker_client_names: d.broker_client_names.clone(),
            topic: rc::DsubTopic::FullDocumentEntry,
            renew_seconds: u64::try_from(d.renew_seconds).map_err(|_| {
                bad(
                    "spec.registration.dsub.renewSeconds",
                    "must not be negative",
                )
            })?,
        }),
    };
    Ok(rc::RegistrationConfig {
        dsub,
        mode: rc::RegistrationMode::Mitz,
        notification_endpoint: Some(format!("https://{authority}/mitz/notifications")),
        source_system,
        max_attempts: u32::try_from(r.max_attempts)
            .ok()
            .filter(|n| (1..=20).contains(n))
            .ok_or_else(|| bad("spec.registration.maxAttempts", "must be 1 to 20"))?,
    })
}

pub fn published_address(gw: &DuoGateway) -> Result<(String, u16), BuildError> {
    match &gw.spec.publish.address {
        None => Ok((service_host(gw), u16::try_from(HTTPS_PORT).unwrap_or(8443))),
        Some(a) => {
            let field = "spec.publish.address";
            let (host, port) = match a.rsplit_once(':') {
                Some((h, p)) => (
                    h,
                    p.parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| bad(field, format!("{a:?}: port must be 1 to 65535")))?,
                ),
                None => (a.as_str(), 443),
            };
            if !rc::is_dns_name(host) {
                return Err(bad(
                    field,
                    format!("{a:?}: must be a host name, optionally with :port"),
                ));
            }
            // an IPv4 address looks like a host name; certificates name hosts (peers verify an IP
            // address against iPAddress entries, which the operator does not check)
            if host
                .rsplit('.')
                .next()
                .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(bad(
                    field,
                    format!("{a:?}: must be a host name, not an IP address"),
                ));
            }
            if i32::from(port) == OPS_PORT {
                return Err(bad(
                    field,
                    format!("{a:?}: port {OPS_PORT} is the gateway's plain-HTTP ops port"),
                ));
            }
            Ok((host.to_ascii_lowercase(), port))
        }
    }
}

/// The cluster DNS name of the gateway's Service, `duo-<name>.<namespace>.svc`.
pub fn service_host(gw: &DuoGateway) -> String {
    format!(
        "{}.{}.svc",
        child_name(gw),
        gw.namespace().unwrap_or_else(|| "default".into())
    )
}

/// Whether the certificate's dNSNames cover `host`: equal (ASCII case-insensitive), or a `*.` wildcard
/// whose suffix equals everything after `host`'s first label (RFC 6125 §6.4.3: one whole left-most
/// label only).
pub fn certificate_names_host(dns_names: &[String], host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    dns_names.iter().any(|n| {
        let n = n.to_ascii_lowercase();
        match n.strip_prefix("*.") {
            Some(suffix) => host
                .split_once('.')
                .is_some_and(|(first, rest)| !first.is_empty() && rest == suffix),
            None => n == host,
        }
    })
}

/// Labels that select the gateway's pods.
pub fn selector_labels(gw: &DuoGateway) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            "duo-gateway".to_owned(),
        ),
        ("app.kubernetes.io/instance".to_owned(), gw.name_any()),
    ])
}

/// Labels on every child: the selector labels plus managed-by and part-of.
pub fn labels(gw: &DuoGateway) -> BTreeMap<String, String> {
    let mut l = selector_labels(gw);
    l.insert("app.kubernetes.io/managed-by".into(), "duo-operator".into());
    l.insert("app.kubernetes.io/part-of".into(), "duo".into());
    l
}

fn meta(gw: &DuoGateway, name: String, owner: &OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: gw.namespace(),
        labels: Some(labels(gw)),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// Refuses the workload and Service settings that would take over what the operator owns or that the
/// API server refuses on the Service (the CRD's CEL rules say the same at admission; this holds for a
/// spec that got past them, e.g. under an older CRD): `spec.workload.podLabels` setting one of
/// [`RESERVED_POD_LABELS`] (they select the pods), `spec.workload.podAnnotations` with
/// [`RESERVED_ANNOTATION_PREFIX`], `spec.service.externalTrafficPolicy` on a `ClusterIP` Service and
/// `spec.service.loadBalancerSourceRanges` without `LoadBalancer`.
pub fn check_workload(gw: &DuoGateway) -> Result<(), BuildError> {
    let w = &gw.spec.workload;
    let taken: Vec<&str> = RESERVED_POD_LABELS
        .into_iter()
        .filter(|k| w.pod_labels.contains_key(*k))
        .collect();
    if !taken.is_empty() {
        return Err(bad(
            "spec.workload.podLabels",
            format!(
                "may not set {}: the operator sets them, and app.kubernetes.io/name and instance select the gateway's pods",
                taken.join(", ")
            ),
        ));
    }
    if let Some(k) = w
        .pod_annotations
        .keys()
        .find(|k| k.starts_with(RESERVED_ANNOTATION_PREFIX))
    {
        return Err(bad(
            "spec.workload.podAnnotations",
            format!("may not set {k:?}: the prefix {RESERVED_ANNOTATION_PREFIX} is the operator's"),
        ));
    }
    let s = &gw.spec.service;
    if s.external_traffic_policy.is_some() && s.type_ == ServiceType::ClusterIP {
        return Err(bad(
            "spec.service.externalTrafficPolicy",
            "may only be set when spec.service.type is NodePort or LoadBalancer",
        ));
    }
    if !s.load_balancer_source_ranges.is_empty() && s.type_ != ServiceType::LoadBalancer {
        return Err(bad(
            "spec.service.loadBalancerSourceRanges",
            "may only be set when spec.service.type is LoadBalancer",
        ));
    }
    Ok(())
}

/// A selected DuoCommunity that was left out of a gateway's configuration, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedCommunity {
    /// `namespace/name` of the DuoCommunity.
    pub community: String,
    /// The `CommunitiesSkipped` reason: [`Reason::CommunityInvalid`] or
    /// [`Reason::DuplicateHomeCommunityId`].
    pub reason: Reason,
    /// What is wrong, naming the DuoCommunity and its field.
    pub message: String,
}

/// The runtime configuration for `gw`, with `communities` (already selected) and its MitzConnection.
/// Errors name the offending field of the gateway or its MitzConnection; the result has passed
/// [`Config::validate`]. Communities that cannot be used are left out silently; [`resolve`] says which.
pub fn runtime_config(
    gw: &DuoGateway,
    communities: &[DuoCommunity],
    mitz: Option<&MitzConnection>,
) -> Result<Config, BuildError> {
    resolve(gw, communities, mitz, &BTreeSet::new()).map(|(c, _)| c)
}

/// Whether `c` is the DuoCommunity the operator publishes for `gw` itself.
pub fn is_published_by(c: &DuoCommunity, gw: &DuoGateway) -> bool {
    c.namespace() == gw.namespace()
        && c.name_any() == gw.name_any()
        && c.labels().get(PUBLISHED_BY_LABEL) == Some(&gw.name_any())
}

fn community_field(runtime_field: &str) -> &'static str {
    match runtime_field.rsplit('.').next().unwrap_or("") {
        "homeCommunityId" => "spec.homeCommunityId",
        "queryUrl" => "spec.endpoints.queryUrl",
        "retrieveUrl" => "spec.endpoints.retrieveUrl",
        "imagingRetrieveUrl" => "spec.endpoints.imagingRetrieveUrl",
        "deadlineMs" => "spec.deadlineMs",
        "connectTo" => "spec.endpoints.connectTo",
        f if f.starts_with("frontedCommunities") => "spec.frontedCommunities",
        _ => "spec",
    }
}

fn remote_community(c: &DuoCommunity) -> Result<RemoteCommunity, BuildError> {
    let f = |n: &str| format!("spec.{n}");
    let hcid: HomeCommunityId = c
        .spec
        .home_community_id
        .parse()
        .map_err(|e| bad(f("homeCommunityId"), e))?;
    let mut organizations = Vec::new();
    for (i, o) in c.spec.organizations.iter().enumerate() {
        organizations.push(rc::CommunityOrganization {
            ura: o
                .ura
                .parse()
                .map_err(|e| bad(f(&format!("organizations[{i}].ura")), e))?,
            name: o.name.clone(),
        });
    }
    let certificate_ura = match &c.spec.trust.certificate_ura {
        Some(u) => Some(u.parse().map_err(|e| bad(f("trust.certificateUra"), e))?),
        None => None,
    };
    let trusted_issuers = c
        .spec
        .trust
        .issuers
        .iter()
        .map(|i| rc::TrustedIssuerConfig {
            issuer: i.issuer.clone(),
            certificates: i.certificates.clone(),
        })
        .collect();
    let mut fronted_communities = Vec::new();
    for (i, h) in c.spec.fronted_communities.iter().enumerate() {
        fronted_communities.push(
            h.parse()
                .map_err(|e| bad(f(&format!("frontedCommunities[{i}]")), e))?,
        );
    }
    Ok(RemoteCommunity {
        home_community_id: hcid,
        name: c.spec.name.clone(),
        organizations,
        query_url: c.spec.endpoints.query_url.clone(),
        retrieve_url: c.spec.endpoints.retrieve_url.clone(),
        imaging_retrieve_url: c.spec.endpoints.imaging_retrieve_url.clone(),
        connect_to: c.spec.endpoints.connect_to.clone(),
        certificate_ura,
        trusted_issuers,
        deadline_ms: positive(&f("deadlineMs"), c.spec.deadline_ms)?,
        fronted_communities,
    })
}

/// Like [`runtime_config`], and also returns the selected communities that were left out: one that does
/// not parse or validate (a plain `http://` endpoint for a gateway without `allowPlainHttp`, ...), one
/// whose homeCommunityId is the gateway's own, and of several with one homeCommunityId every one but
/// the one [`precedence`] puts first. The DuoCommunity the operator publishes for `gw` itself is left
/// out silently. One bad or duplicate community therefore never blocks the others, and a duplicate made
/// later cannot displace a peer (see [`precedence`]). `authentic` holds the `namespace/name` of the
/// selected DuoCommunities the operator verified as published for a live DuoGateway of that
/// homeCommunityId (the reconciler looks that up; see [`claims_published`]).
pub fn resolve(
    gw: &DuoGateway,
    communities: &[DuoCommunity],
    mitz: Option<&MitzConnection>,
    authentic: &BTreeSet<String>,
) -> Result<(Config, Vec<SkippedCommunity>), BuildError> {
    let mut config = base_config(gw, mitz)?;
    config
        .validate()
        .map_err(|e| match (e.field.strip_prefix("mitz."), mitz) {
            // name the MitzConnection and its field, not a path in the rendered file
            (Some(f), Some(m)) => bad(
                format!("MitzConnection {}: spec.{f}", m.name_any()),
                e.message,
            ),
            _ => bad(format!("runtime config {}", e.field), e.message),
        })?;
    let mut skipped = Vec::new();
    let mut parsed = Vec::new();
    for c in communities.iter().filter(|c| !is_published_by(c, gw)) {
        match remote_community(c) {
            Ok(r) => parsed.push((c, r)),
            Err(e) => skipped.push(SkippedCommunity {
                community: community_id(c),
                reason: Reason::CommunityInvalid,
                message: format!("DuoCommunity {}: {e}", community_id(c)),
            }),
        }
    }
    // a homeCommunityId in a URA's OID arc belongs to that organisation: only a community whose
    // certificate URA is that URA may claim it (a copy with another certificate never competes)
    parsed.retain(|(c, r)| {
        let hcid = r.home_community_id.to_string();
        let Some(arc) = ura_of_arc(&hcid) else {
            return true;
        };
        let ok = r
            .certificate_ura
            .as_ref()
            .is_some_and(|u| same_ura(arc, u.as_str()));
        if !ok {
            skipped.push(SkippedCommunity {
                community: community_id(c),
                reason: Reason::CommunityInvalid,
                message: format!(
                    "DuoCommunity {}: spec.homeCommunityId {hcid} is in the OID arc of URA {arc} (2.16.528.1.1007.3.3.<URA>), but spec.trust.certificateUra is {}",
                    community_id(c),
                    r.certificate_ura
                        .as_ref()
                        .map_or("not set", |u| u.as_str())
                ),
            });
        }
        ok
    });
    // per homeCommunityId, the community that wins it
    let own_ns = gw.namespace().unwrap_or_default();
    let mut winner: BTreeMap<String, (&DuoCommunity, Precedence)> = BTreeMap::new();
    for (c, r) in &parsed {
        let p = precedence(c, &own_ns, authentic);
        let e = winner
            .entry(r.home_community_id.to_string())
            .or_insert((c, p.clone()));
        if p < e.1 {
            *e = (c, p);
        }
    }
    let home = config.organization.home_community_id.clone();
    // fronted communities (target communities): a community fronting another selected community's own
    // homeCommunityId, or this gateway's, is left out whatever the order (it would otherwise be asked
    // in that community's place); of several fronting one id, the one `precedence` puts first is kept
    let mut fronter: BTreeMap<String, (&DuoCommunity, Precedence)> = BTreeMap::new();
    for (c, r) in &parsed {
        if community_id(winner[&r.home_community_id.to_string()].0) != community_id(c) {
            continue;
        }
        let p = precedence(c, &own_ns, authentic);
        for h in &r.fronted_communities {
            let e = fronter.entry(h.to_string()).or_insert((c, p.clone()));
            if p < e.1 {
                *e = (c, p.clone());
            }
        }
    }
    for (c, r) in parsed {
        let taken = r.fronted_communities.iter().find_map(|h| {
            let id = h.to_string();
            if h == &home {
                Some(format!("{id} is this gateway's own homeCommunityId"))
            } else if let Some((w, _)) = winner.get(&id) {
                Some(format!(
                    "{id} is DuoCommunity {}'s own homeCommunityId",
                    community_id(w)
                ))
            } else {
                match fronter.get(&id) {
                    Some((w, wp)) if community_id(w) != community_id(c) => Some(format!(
                        "{id} is already fronted by DuoCommunity {}, which is kept ({})",
                        community_id(w),
                        wp.why_over(&precedence(c, &own_ns, authentic))
                    )),
                    _ => None,
                }
            }
        });
        if let Some(why) = taken {
            skipped.push(SkippedCommunity {
                community: community_id(c),
                reason: Reason::CommunityInvalid,
                message: format!(
                    "DuoCommunity {}: spec.frontedCommunities: {why}",
                    community_id(c)
                ),
            });
            continue;
        }
        if r.home_community_id == home {
            skipped.push(SkippedCommunity {
                community: community_id(c),
                reason: Reason::DuplicateHomeCommunityId,
                message: format!(
                    "DuoCommunity {}: spec.homeCommunityId {} is this gateway's own homeCommunityId",
                    community_id(c),
                    r.home_community_id
                ),
            });
            continue;
        }
        let (w, wp) = &winner[&r.home_community_id.to_string()];
        if community_id(w) != community_id(c) {
            skipped.push(SkippedCommunity {
                community: community_id(c),
                reason: Reason::DuplicateHomeCommunityId,
                message: format!(
                    "DuoCommunity {}: spec.homeCommunityId {} is already DuoCommunity {}'s ({}), which is kept",
                    community_id(c),
                    r.home_community_id,
                    community_id(w),
                    wp.why_over(&precedence(c, &own_ns, authentic))
                ),
            });
            continue;
        }
        config.communities.push(r);
        if let Err(e) = config.validate() {
            config.communities.pop();
            skipped.push(SkippedCommunity {
                community: community_id(c),
                reason: Reason::CommunityInvalid,
                message: format!(
                    "DuoCommunity {}: {}: {}",
                    community_id(c),
                    community_field(&e.field),
                    e.message
                ),
            });
        }
    }
    Ok((config, skipped))
}

/// `namespace/name` of a DuoCommunity.
pub fn community_id(c: &DuoCommunity) -> String {
    format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any())
}

/// Whether `c` says it was published by the operator for a DuoGateway: the [`PUBLISHED_BY_LABEL`] and a
/// controlling owner reference to a DuoGateway of that name. Anyone who may create DuoCommunities can
/// write both, so the reconciler checks the claim against the DuoGateway itself (same namespace, the
/// owner's uid, the same homeCommunityId) before it counts as authentic in [`resolve`]. Returns the
/// claimed gateway's name and uid.
pub fn claims_published(c: &DuoCommunity) -> Option<(String, String)> {
    let by = c.labels().get(PUBLISHED_BY_LABEL)?;
    c.owner_references()
        .iter()
        .find(|o| {
            o.kind == "DuoGateway"
                && o.controller == Some(true)
                && &o.name == by
                && c.name_any() == *by
        })
        .map(|o| (o.name.clone(), o.uid.clone()))
}

/// How strongly a DuoCommunity holds its homeCommunityId against another selected one with the same id;
/// smaller wins. In order: published by the operator for a live DuoGateway of that id (verified, see
/// [`claims_published`]); in the selecting gateway's own namespace; created earlier; then by
/// `namespace/name`. So a tenant who may create DuoCommunities in a selected namespace cannot displace
/// an existing peer by copying its homeCommunityId: the copy is skipped and named instead.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Precedence {
    not_published: bool,
    other_namespace: bool,
    created: jiff::Timestamp,
    id: String,
}

impl Precedence {
    /// What decided between this one (the winner) and `loser`, for the status message.
    fn why_over(&self, loser: &Precedence) -> &'static str {
        if self.not_published != loser.not_published {
            "published by the operator for its DuoGateway"
        } else if self.other_namespace != loser.other_namespace {
            "in this gateway's namespace"
        } else if self.created != loser.created {
            "created earlier"
        } else {
            "first by namespace/name"
        }
    }
}

/// The URA root of the UZI register (DOMAIN.md: URA `2.16.528.1.1007.3.3`, 8 digits), as a
/// homeCommunityId prefix.
const URA_ARC: &str = "urn:oid:2.16.528.1.1007.3.3.";

/// The URA whose OID arc `hcid` lies in (`urn:oid:2.16.528.1.1007.3.3.<URA>[...]`), without leading
/// zeros (an OID arc has none); `None` for any other homeCommunityId. Only that organisation allocates
/// identifiers under its arc, so a community claiming one must be that organisation's.
pub fn ura_of_arc(hcid: &str) -> Option<&str> {
    let arc = hcid.strip_prefix(URA_ARC)?.split('.').next()?;
    (!arc.is_empty() && arc.len() <= 8 && arc.bytes().all(|b| b.is_ascii_digit())).then_some(arc)
}

/// Whether URA `ura` (8 digits) is the one of arc `arc` ([`ura_of_arc`]).
fn same_ura(arc: &str, ura: &str) -> bool {
    arc.trim_start_matches('0') == ura.trim_start_matches('0')
}

/// The [`Precedence`] of `c` for a gateway in `own_ns`.
pub fn precedence(c: &DuoCommunity, own_ns: &str, authentic: &BTreeSet<String>) -> Precedence {
    Precedence {
        not_published: !authentic.contains(&community_id(c)),
        other_namespace: c.namespace().as_deref() != Some(own_ns),
        // a missing timestamp (never from the API server) sorts last
        created: c
            .meta()
            .creation_timestamp
            .as_ref()
            .map_or(jiff::Timestamp::MAX, |t| t.0),
        id: community_id(c),
    }
}

fn base_config(gw: &DuoGateway, mitz: Option<&MitzConnection>) -> Result<Config, BuildError> {
    let s = &gw.spec;
    let mitz_connection = mitz;
    let ura: Ura = s
        .organization
        .ura
        .parse()
        .map_err(|e| bad("spec.organization.ura", e))?;
    let home: HomeCommunityId = s
        .organization
        .home_community_id
        .parse()
        .map_err(|e| bad("spec.organization.homeCommunityId", e))?;
    if let Some(arc) = ura_of_arc(&s.organization.home_community_id)
        && !same_ura(arc, ura.as_str())
    {
        // otherwise anyone could publish a gateway under another hospital's identifier
        return Err(bad(
            "spec.organization.homeCommunityId",
            format!(
                "{} is in the OID arc of URA {arc} (2.16.528.1.1007.3.3.<URA>), not of this organisation's URA {}",
                s.organization.home_community_id, s.organization.ura
            ),
        ));
    }
    let facility: FacilityType = s
        .organization
        .facility_type
        .parse()
        .map_err(|e| bad("spec.organization.facilityType", e))?;
    let local = match (&s.connection.xds, &s.connection.tlb) {
        (Some(x), None) => LocalBackend::Xds(rc::XdsBackendConfig {
            registry_url: x.registry_url.clone(),
            repositories: x
                .repositories
                .iter()
                .map(|r| rc::Endpoint {
                    unique_id: r.unique_id.clone(),
                    url: r.url.clone(),
                })
                .collect(),
            imaging_document_sources: x
                .imaging_document_sources
                .iter()
                .map(|r| rc::Endpoint {
                    unique_id: r.unique_id.clone(),
                    url: r.url.clone(),
                })
                .collect(),
            deadline_ms: positive("spec.connection.xds.deadlineMs", x.deadline_ms)?,
        }),
        (None, Some(t)) => LocalBackend::Xca(rc::XcaBackendConfig {
            home_community_id: t
                .home_community_id
                .parse()
                .map_err(|e| bad("spec.connection.tlb.homeCommunityId", e))?,
            query_url: t.query_url.clone(),
            retrieve_url: t.retrieve_url.clone(),
            imaging_retrieve_url: t.imaging_retrieve_url.clone(),
            dicomweb_url: t.dicomweb_url.clone(),
            deadline_ms: positive("spec.connection.tlb.deadlineMs", t.deadline_ms)?,
        }),
        _ => return Err(bad("spec.connection", "set exactly one of xds or tlb")),
    };
    let mitz = match (&s.mitz, mitz) {
        (None, _) => None,
        (Some(r), None) => {
            return Err(bad(
                "spec.mitz.connectionName",
                format!("MitzConnection {:?} not found", r.connection_name),
            ));
        }
        (Some(_), Some(m)) => Some(MitzConfig {
            closed_question_url: m.spec.closed_question_url.clone(),
            open_question_url: m.spec.open_question_url.clone(),
            subscription_url: m.spec.subscription_url.clone(),
            tls: TlsConfig {
                cert_file: format!("{MITZ_DIR}/tls.crt").into(),
                key_file: format!("{MITZ_DIR}/tls.key").into(),
                trust_bundle_file: format!("{MITZ_TRUST_DIR}/ca.crt").into(),
            },
            deadline_ms: positive("MitzConnection spec.deadlineMs", m.spec.deadline_ms)?,
            cache_seconds: u64::try_from(m.spec.cache_seconds)
                .map_err(|_| bad("MitzConnection spec.cacheSeconds", "must not be negative"))?,
            notification_client_names: m.spec.notification_client_names.clone(),
        }),
    };
    let category: DataCategory = s
        .consent
        .category
        .parse()
        .map_err(|e| bad("spec.consent.category", e))?;
    let x = &s.xua;
    let mut purposes = Vec::with_capacity(x.allowed_purposes_of_use.len());
    for (i, p) in x.allowed_purposes_of_use.iter().enumerate() {
        purposes.push(
            p.parse::<PurposeOfUse>()
                .map_err(|e| bad(format!("spec.xua.allowedPurposesOfUse[{i}]"), e))?,
        );
    }
    let xua = rc::XuaConfig {
        issuer: x.issuer.clone(),
        signing: x
            .signing_secret_name
            .as_ref()
            .map(|_| rc::XuaSigningConfig {
                cert_file: format!("{XUA_SIGNING_DIR}/tls.crt").into(),
                key_file: format!("{XUA_SIGNING_DIR}/tls.key").into(),
            }),
        sign_mitz_open_question: x.sign_mitz_open_question,
        audiences: x.audiences.clone(),
        clock_skew_seconds: u64::try_from(x.clock_skew_seconds)
            .map_err(|_| bad("spec.xua.clockSkewSeconds", "must not be negative"))?,
        max_lifetime_seconds: positive("spec.xua.maxLifetimeSeconds", x.max_lifetime_seconds)?,
        allowed_purposes_of_use: purposes,
        allow_unsigned: x.allow_unsigned,
    };
    Ok(Config {
        organization: OrganizationConfig {
            ura,
            name: s.organization.name.clone(),
            facility_type: facility,
            home_community_id: home,
        },
        server: ServerConfig {
            listen: ([0, 0, 0, 0], HTTPS_PORT as u16).into(),
            ops_listen: ([0, 0, 0, 0], OPS_PORT as u16).into(),
            tls: TlsConfig {
                cert_file: format!("{TLS_DIR}/tls.crt").into(),
                key_file: format!("{TLS_DIR}/tls.key").into(),
                trust_bundle_file: format!("{TRUST_DIR}/ca.crt").into(),
            },
            limits: LimitsConfig::default(),
            reload_interval_seconds: 5,
        },
        local,
        communities: Vec::new(),
        initiating: InitiatingConfig {
            localization: match s.localization {
                Localization::Mitz => rc::LocalizationMode::Mitz,
                Localization::AllCommunities => rc::LocalizationMode::AllCommunities,
            },
            include_local: true,
            manifest_details: true,
            trusted_front_end: trusted_front_ends(&s.trusted_front_ends)?,
            require_assertion: true,
        },
        registration: registration(gw, mitz.as_ref())?,
        consent: ConsentConfig {
            mode: match s.consent.mode {
                ConsentMode::Mitz => rc::ConsentMode::Mitz,
                ConsentMode::PermitAll => rc::ConsentMode::PermitAll,
            },
            category,
            default_purpose_of_use: PurposeOfUse::default(),
        },
        revocation: revocation_config(gw, mitz_connection)?,
        mitz,
        audit: AuditConfig::default(),
        allow_plain_http: s.allow_plain_http,
        tls_policy: rc::TlsPolicyConfig {
            min_version: match s.tls_policy.min_version {
                TlsMinVersion::Tls12 => rc::TlsVersion::Tls12,
                TlsMinVersion::Tls13 => rc::TlsVersion::Tls13,
            },
        },
        xua,
    })
}

/// `spec.trustedFrontEnds` as the runtime's `initiating.trustedFrontEnd`: each name parsed as RFC 4514
/// and each pin as base64 SHA-256, each entry in exactly one form (the CEL rule says so too; an object
/// that slipped past it is refused here, naming the field).
fn trusted_front_ends(
    entries: &[crate::crd::TrustedFrontEnd],
) -> Result<TrustedFrontEnd, BuildError> {
    let mut certificates = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let f = |n: &str| format!("spec.trustedFrontEnds[{i}]{n}");
        let name = |n: &str, v: &Option<String>| -> Result<Option<DistinguishedName>, BuildError> {
            v.as_deref()
                .map(|t| t.parse().map_err(|e| bad(f(n), e)))
                .transpose()
        };
        let c = FrontEndCertificate {
            issuer: name(".issuer", &e.issuer)?,
            subject: name(".subject", &e.subject)?,
            spki_sha256: e
                .spki_sha256
                .as_deref()
                .map(|t| {
                    t.parse::<SpkiSha256>()
                        .map_err(|e| bad(f(".spkiSha256"), e))
                })
                .transpose()?,
        };
        match (&c.issuer, &c.subject, &c.spki_sha256) {
            (Some(_), Some(_), None) | (None, None, Some(_)) => certificates.push(c),
            _ => {
                return Err(bad(
                    f(""),
                    "set issuer and subject, or spkiSha256: not both, and never a name alone",
                ));
            }
        }
    }
    Ok(TrustedFrontEnd {
        certificates,
        certificate_dns_names: Vec::new(),
    })
}

/// The runtime's `revocation` section: the gateway's `spec.revocation` with the CRL URLs of its
/// MitzConnection added (duplicates once). The runtime's own validation checks ranges and URLs again.
fn revocation_config(
    gw: &DuoGateway,
    mitz: Option<&MitzConnection>,
) -> Result<rc::RevocationConfig, BuildError> {
    let r = &gw.spec.revocation;
    let fallback = |f: RevocationFallback| match f {
        RevocationFallback::Refuse => rc::RevocationFallback::Refuse,
        RevocationFallback::Accept => rc::RevocationFallback::Accept,
    };
    let mut crl_urls: Vec<String> = Vec::new();
    for u in r
        .crl_urls
        .iter()
        .chain(mitz.iter().flat_map(|m| m.spec.crl_urls.iter()))
    {
        if !crl_urls.contains(u) {
            crl_urls.push(u.clone());
        }
    }
    let non_negative =
        |field: &str, v: i64| u64::try_from(v).map_err(|_| bad(field, "must not be negative"));
    Ok(rc::RevocationConfig {
        enabled: r.enabled,
        refresh_interval_seconds: positive(
            "spec.revocation.refreshIntervalSeconds",
            r.refresh_interval_seconds,
        )?,
        grace_seconds: non_negative("spec.revocation.graceSeconds", r.grace_seconds)?,
        when_unavailable: fallback(r.when_unavailable),
        without_source: fallback(r.without_source),
        ocsp: r.ocsp,
        crl_urls,
        fetch_timeout_ms: positive("spec.revocation.fetchTimeoutMs", r.fetch_timeout_ms)?,
        ..rc::RevocationConfig::default()
    })
}

fn positive(field: &str, v: i64) -> Result<u64, BuildError> {
    u64::try_from(v)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| bad(field, "must be greater than 0"))
}

/// SHA-256 (hex) of the rendered configuration and the certificate material the pods mount, in a fixed
/// order. `material` is `(name, bytes)` pairs; a change in any of them changes the checksum.
pub fn checksum(config_yaml: &str, material: &[(&str, &[u8])]) -> String {
    let mut h = Sha256::new();
    h.update(b"config\0");
    h.update((config_yaml.len() as u64).to_be_bytes());
    h.update(config_yaml.as_bytes());
    for (name, bytes) in material {
        h.update(name.as_bytes());
        h.update(b"\0");
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    }
    hex::encode(h.finalize())
}

/// The ConfigMap holding `config.yaml`.
pub fn config_map(gw: &DuoGateway, owner: &OwnerReference, config_yaml: &str) -> ConfigMap {
    ConfigMap {
        metadata: meta(gw, config_map_name(gw), owner),
        data: Some(BTreeMap::from([(
            CONFIG_KEY.to_owned(),
            config_yaml.to_owned(),
        )])),
        ..ConfigMap::default()
    }
}

/// The operator-owned Secret the pods mount their certificates from: a copy of the material the operator
/// validated (`(key, bytes)` pairs, keys from [`material`]), with `checksum` (of the configuration and
/// this material, as on the pod template) in [`CHECKSUM_ANNOTATION`]. Written only after validation, so a
/// refused edit of the user's Secrets never reaches a pod, not even after a restart.
pub fn material_secret(
    gw: &DuoGateway,
    owner: &OwnerReference,
    material: &[(&str, &[u8])],
    checksum: &str,
) -> Secret {
    let mut metadata = meta(gw, material_secret_name(gw), owner);
    metadata.annotations = Some(BTreeMap::from([(
        CHECKSUM_ANNOTATION.to_owned(),
        checksum.to_owned(),
    )]));
    Secret {
        metadata,
        type_: Some("Opaque".into()),
        data: Some(
            material
                .iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.to_vec())))
                .collect(),
        ),
        immutable: Some(false),
        ..Secret::default()
    }
}

/// The ServiceAccount of the pods (no token mounted: the gateway never talks to the API server).
pub fn service_account(gw: &DuoGateway, owner: &OwnerReference) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(gw, child_name(gw), owner),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

/// Name of the gateway container (and the command it runs).
pub const CONTAINER_NAME: &str = "duo-gateway";

/// Volume `name` holding `items` (`(key, file)` pairs) of the gateway's material Secret (0440). Every
/// certificate and key the pod reads comes from that operator-owned copy, never from the user's Secrets,
/// so a restart after a refused edit still starts with the last good material.
fn material_volume(gw: &DuoGateway, name: &str, items: &[(&str, &str)]) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(material_secret_name(gw)),
            items: Some(
                items
                    .iter()
                    .map(|(key, path)| KeyToPath {
                        key: (*key).to_owned(),
                        path: (*path).to_owned(),
                        mode: None,
                    })
                    .collect(),
            ),
            default_mode: Some(0o440),
            optional: Some(false),
        }),
        ..Volume::default()
    }
}

/// The gateway's ConfigMap as volume `config` holding [`CONFIG_KEY`] (0440).
fn config_volume(gw: &DuoGateway) -> Volume {
    Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map_name(gw),
            items: Some(vec![KeyToPath {
                key: CONFIG_KEY.into(),
                path: CONFIG_KEY.into(),
                mode: None,
            }]),
            default_mode: Some(0o440),
            optional: Some(false),
        }),
        ..Volume::default()
    }
}

/// The writable scratch volume `tmp` (the root filesystem is read-only).
fn tmp_volume() -> Volume {
    Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

/// Read-only mount of volume `name` at `path`.
fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// Writable mount of [`tmp_volume`] at `/tmp`.
fn tmp_mount() -> VolumeMount {
    VolumeMount {
        name: "tmp".into(),
        mount_path: "/tmp".into(),
        ..VolumeMount::default()
    }
}

/// The pod's volumes and the container's mounts of them, in the same order: the configuration, the
/// hospital's certificate pair and trust bundle, `/tmp`; the Mitz client pair and trust bundle when the
/// gateway uses Mitz and its MitzConnection (`mitz`) was found; the XUA signing pair when
/// `spec.xua.signingSecretName` is set. Certificates come from the material Secret ([`material_secret`])
/// under the file names the runtime reads; the mount folders are the ones [`runtime_config`] names.
fn volumes_and_mounts(
    gw: &DuoGateway,
    mitz: Option<&MitzConnection>,
) -> (Vec<Volume>, Vec<VolumeMount>) {
    use material::*;
    let s = &gw.spec;
    let pair = |crt, key| [(crt, "tls.crt"), (key, "tls.key")];
    let mut volumes = vec![
        config_volume(gw),
        material_volume(gw, "tls", &pair(TLS_CRT, TLS_KEY)),
        material_volume(gw, "trust", &[(TRUST, "ca.crt")]),
        tmp_volume(),
    ];
    let mut mounts = vec![
        mount("config", CONFIG_DIR),
        mount("tls", TLS_DIR),
        mount("trust", TRUST_DIR),
        tmp_mount(),
    ];
    if let (Some(_), Some(_)) = (&s.mitz, mitz) {
        volumes.push(material_volume(gw, "mitz", &pair(MITZ_CRT, MITZ_KEY)));
        volumes.push(material_volume(gw, "mitz-trust", &[(MITZ_TRUST, "ca.crt")]));
        mounts.push(mount("mitz", MITZ_DIR));
        mounts.push(mount("mitz-trust", MITZ_TRUST_DIR));
    }
    if s.xua.signing_secret_name.is_some() {
        volumes.push(material_volume(gw, "xua-signing", &pair(XUA_CRT, XUA_KEY)));
        mounts.push(mount("xua-signing", XUA_SIGNING_DIR));
    }
    (volumes, mounts)
}

/// An HTTP GET probe of `path` on the `ops` port every `period` seconds, failing after `failures`
/// misses of 2 s each.
fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("ops".into()),
            scheme: Some("HTTP".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

/// `/readyz` every 5 s, out of the Service after 3 misses (the runtime is not ready until its
/// configuration and certificates are loaded).
fn readiness_probe() -> Probe {
    probe("/readyz", 5, 3)
}

/// `/healthz` every 10 s, restarted after 6 misses (a minute).
fn liveness_probe() -> Probe {
    probe("/healthz", 10, 6)
}

/// The container's ports: `https` ([`HTTPS_PORT`]) and `ops` ([`OPS_PORT`]), TCP.
fn container_ports() -> Vec<ContainerPort> {
    vec![
        ContainerPort {
            name: Some("https".into()),
            container_port: HTTPS_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        },
        ContainerPort {
            name: Some("ops".into()),
            container_port: OPS_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        },
    ]
}

/// The `RuntimeDefault` seccomp profile (Pod Security Standard "restricted").
fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    }
}

/// The container's security context ("restricted"): no privilege escalation, read-only root
/// filesystem, non-root [`RUN_AS`], every capability dropped, `RuntimeDefault` seccomp.
fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..SecurityContext::default()
    }
}

/// The pod's security context: non-root [`RUN_AS`] user, group and fsGroup (so the 0440 volumes are
/// readable), `RuntimeDefault` seccomp.
fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        fs_group: Some(RUN_AS),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..PodSecurityContext::default()
    }
}

/// The gateway container: `duo-gateway serve --config <CONFIG_DIR>/<CONFIG_KEY>` from `spec.image`
/// (default `image`), with `spec.resources`, the probes, the restricted security context and `mounts`.
fn gateway_container(gw: &DuoGateway, image: &str, mounts: Vec<VolumeMount>) -> Container {
    let s = &gw.spec;
    Container {
        name: CONTAINER_NAME.into(),
        image: Some(s.image.clone().unwrap_or_else(|| image.to_owned())),
        command: Some(vec![CONTAINER_NAME.into()]),
        args: Some(vec![
            "serve".into(),
            "--config".into(),
            format!("{CONFIG_DIR}/{CONFIG_KEY}"),
        ]),
        ports: Some(container_ports()),
        readiness_probe: Some(readiness_probe()),
        liveness_probe: Some(liveness_probe()),
        resources: s.resources.clone(),
        security_context: Some(container_security_context()),
        volume_mounts: Some(mounts),
        ..Container::default()
    }
}

/// The pod spec: the one `container`, the gateway's ServiceAccount without a token (the gateway never
/// talks to the API server), no service links, the pod security context and `volumes`; and the
/// placement of `spec.workload` (image pull Secrets, node selector, tolerations, [`affinity`],
/// [`topology_spread_constraints`], priority class), each left out when not given.
fn pod_spec(gw: &DuoGateway, container: Container, volumes: Vec<Volume>) -> PodSpec {
    let w = &gw.spec.workload;
    PodSpec {
        containers: vec![container],
        service_account_name: Some(child_name(gw)),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(pod_security_context()),
        volumes: Some(volumes),
        image_pull_secrets: non_empty(&w.image_pull_secrets),
        node_selector: (!w.node_selector.is_empty()).then(|| w.node_selector.clone()),
        tolerations: non_empty(&w.tolerations),
        affinity: affinity(gw),
        topology_spread_constraints: non_empty(&topology_spread_constraints(gw)),
        priority_class_name: w.priority_class_name.clone(),
        ..PodSpec::default()
    }
}

fn non_empty<T: Clone>(v: &[T]) -> Option<Vec<T>> {
    (!v.is_empty()).then(|| v.to_vec())
}

/// `spec.workload.affinity` as given; when it has no `podAntiAffinity` and more than one replica
/// runs, plus a *preferred* (weight 100) anti-affinity over `kubernetes.io/hostname` for the pods with
/// the gateway's [`selector_labels`]: the scheduler puts replicas on different nodes where it can, and
/// still runs them all on a single-node cluster (a required rule would leave them Pending). `None`
/// when nothing is left.
fn affinity(gw: &DuoGateway) -> Option<Affinity> {
    let mut a = gw.spec.workload.affinity.clone().unwrap_or_default();
    if a.pod_anti_affinity.is_none() && gw.spec.replicas > 1 {
        a.pod_anti_affinity = Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector_labels(gw)),
                            match_expressions: None,
                        }),
                        topology_key: "kubernetes.io/hostname".into(),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            required_during_scheduling_ignored_during_execution: None,
        });
    }
    (a != Affinity::default()).then_some(a)
}

/// `spec.workload.topologySpreadConstraints`, a constraint without `labelSelector` given the gateway's
/// [`selector_labels`] (without one it would count no pods and spread nothing).
fn topology_spread_constraints(gw: &DuoGateway) -> Vec<TopologySpreadConstraint> {
    let mut v = gw.spec.workload.topology_spread_constraints.clone();
    for c in &mut v {
        c.label_selector.get_or_insert_with(|| LabelSelector {
            match_labels: Some(selector_labels(gw)),
            match_expressions: None,
        });
    }
    v
}

/// The pod template: `spec.workload.podLabels` and the child labels (which include the selector
/// labels), `spec.workload.podAnnotations` and the [`CHECKSUM_ANNOTATION`] with `checksum` (a change
/// rolls the pods), and the gateway container with its volumes.
fn pod_template(
    gw: &DuoGateway,
    mitz: Option<&MitzConnection>,
    image: &str,
    checksum: &str,
) -> PodTemplateSpec {
    let (volumes, mounts) = volumes_and_mounts(gw, mitz);
    // the user's pod labels and annotations first: the operator's own always win (check_workload
    // refuses a spec that tries, this keeps the selector even if such a spec got through)
    let mut template_labels = gw.spec.workload.pod_labels.clone();
    template_labels.extend(labels(gw));
    template_labels.extend(selector_labels(gw));
    let mut annotations = gw.spec.workload.pod_annotations.clone();
    annotations.insert(CHECKSUM_ANNOTATION.to_owned(), checksum.to_owned());
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(template_labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(pod_spec(gw, gateway_container(gw, image, mounts), volumes)),
    }
}

/// Rolling updates that never take a pod away before its replacement is ready: maxSurge 1,
/// maxUnavailable 0.
fn rolling_update_strategy() -> DeploymentStrategy {
    DeploymentStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDeployment {
            max_surge: Some(IntOrString::Int(1)),
            max_unavailable: Some(IntOrString::Int(0)),
        }),
    }
}

/// The gateway Deployment: restricted pod security, config and certificates mounted read-only, probes
/// on the ops port, and the `checksum` annotation on the pod template so that a change rolls the pods.
/// Rolling updates never take a pod away before its replacement is ready (maxUnavailable 0). Composed
/// of the small builders below it: `pod_template` (→ `pod_spec`, `gateway_container`,
/// `volumes_and_mounts`, the probes and security contexts) and `rolling_update_strategy`.
pub fn deployment(
    gw: &DuoGateway,
    owner: &OwnerReference,
    mitz: Option<&MitzConnection>,
    image: &str,
    checksum: &str,
) -> Deployment {
    Deployment {
        metadata: meta(gw, child_name(gw), owner),
        spec: Some(DeploymentSpec {
            replicas: Some(gw.spec.replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(gw)),
                match_expressions: None,
            },
            strategy: Some(rolling_update_strategy()),
            template: pod_template(gw, mitz, image, checksum),
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// The image of the gateway container in `d`'s pod template, if any.
pub fn container_image(d: &Deployment) -> Option<String> {
    d.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == CONTAINER_NAME)?
        .image
        .clone()
}

/// The Service: `https` 8443 (peers and local consumers), `ops` 8080 (metrics scraping; only on a
/// ClusterIP Service, never exposed on a node port or load balancer), and `published`
/// on the port of `spec.publish.address` when that is neither of them (443 for an address without a
/// port), to the same `https` container port: a peer in the cluster connects to this Service on the
/// published URL's port (`endpoints.connectTo`). The type, annotations, `loadBalancerSourceRanges` (only
/// for `LoadBalancer`) and `externalTrafficPolicy` (only for `NodePort` and `LoadBalancer`: the API
/// server refuses both elsewhere) of `spec.service`.
pub fn service(gw: &DuoGateway, owner: &OwnerReference) -> Service {
    let s = &gw.spec.service;
    let external = s.type_ != ServiceType::ClusterIP;
    let load_balancer = s.type_ == ServiceType::LoadBalancer;
    let port = |name: &str, number: i32, target: &str| ServicePort {
        name: Some(name.into()),
        port: number,
        target_port: Some(IntOrString::String(target.into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    };
    let mut ports = vec![port("https", HTTPS_PORT, "https")];
    if !external {
        // plain HTTP (/metrics, probes): never on a NodePort or load balancer, where peers or the
        // internet would reach it; scrape the pods' ops port instead (PodMonitor)
        ports.push(port("ops", OPS_PORT, "ops"));
    }
    if let Ok((_, p)) = published_address(gw)
        && ![HTTPS_PORT, OPS_PORT].contains(&i32::from(p))
    {
        ports.push(port("published", i32::from(p), "https"));
    }
    Service {
        metadata: ObjectMeta {
            annotations: (!s.annotations.is_empty()).then(|| s.annotations.clone()),
            ..meta(gw, child_name(gw), owner)
        },
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(gw)),
            ports: Some(ports),
            type_: Some(s.type_.as_str().into()),
            external_traffic_policy: s
                .external_traffic_policy
                .filter(|_| external)
                .map(|p| p.as_str().into()),
            load_balancer_source_ranges: non_empty(&s.load_balancer_source_ranges)
                .filter(|_| load_balancer),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// A PodDisruptionBudget allowing one pod down at a time, only when more than one replica runs
/// (with one replica a PDB would block node drains).
pub fn pod_disruption_budget(
    gw: &DuoGateway,
    owner: &OwnerReference,
) -> Option<PodDisruptionBudget> {
    (gw.spec.replicas > 1).then(|| PodDisruptionBudget {
        metadata: meta(gw, child_name(gw), owner),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(gw)),
                match_expressions: None,
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    })
}

/// TCP ports of every endpoint in `config` (scheme default when the URL names none), sorted; with
/// revocation checking on, also port 80 and the ports of `revocation.crlUrls` (CRLs and OCSP).
pub fn egress_ports(config: &Config) -> BTreeSet<u16> {
    let mut urls: Vec<&str> = Vec::new();
    match &config.local {
        LocalBackend::Xds(x) => {
            urls.push(&x.registry_url);
            urls.extend(x.repositories.iter().map(|r| r.url.as_str()));
            urls.extend(x.imaging_document_sources.iter().map(|r| r.url.as_str()));
        }
        LocalBackend::Xca(x) => {
            urls.extend([
                x.query_url.as_str(),
                x.retrieve_url.as_str(),
                x.imaging_retrieve_url.as_str(),
            ]);
            urls.extend(x.dicomweb_url.as_deref());
        }
        LocalBackend::Dicomweb(d) => urls.push(&d.base_url),
    }
    for c in &config.communities {
        urls.extend([
            c.query_url.as_str(),
            c.retrieve_url.as_str(),
            c.imaging_retrieve_url.as_str(),
        ]);
    }
    if let Some(m) = &config.mitz {
        urls.push(&m.closed_question_url);
        urls.extend(m.open_question_url.as_deref());
        urls.extend(m.subscription_url.as_deref());
    }
    let mut ports: BTreeSet<u16> = urls.into_iter().filter_map(url_port).collect();
    if config.revocation.enabled {
        // CRL distribution points and OCSP responders named in certificates are plain http; other
        // ports only when a configured CRL URL names one
        ports.insert(80);
        ports.extend(
            config
                .revocation
                .crl_urls
                .iter()
                .filter_map(|u| url_port(u)),
        );
    }
    ports
}

fn url_port(url: &str) -> Option<u16> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    // an IPv6 literal keeps its colons inside brackets
    let after_host = host_port.rsplit_once(']').map_or(host_port, |(_, p)| p);
    match after_host.rsplit_once(':') {
        Some((_, p)) if !p.is_empty() => p.parse().ok(),
        _ => match scheme.to_ascii_lowercase().as_str() {
            "https" => Some(443),
            "http" => Some(80),
            _ => None,
        },
    }
}

/// The NetworkPolicy: inbound only on the two container ports; outbound only DNS and the TCP ports of
/// the configured endpoints (backends, communities, Mitz).
pub fn network_policy(gw: &DuoGateway, owner: &OwnerReference, config: &Config) -> NetworkPolicy {
    let tcp = |p: i32| NetworkPolicyPort {
        port: Some(IntOrString::Int(p)),
        protocol: Some("TCP".into()),
        end_port: None,
    };
    let mut egress_ports = vec![
        NetworkPolicyPort {
            port: Some(IntOrString::Int(53)),
            protocol: Some("UDP".into()),
            end_port: None,
        },
        tcp(53),
    ];
    egress_ports.extend(egress_ports_of(config).map(tcp));
    NetworkPolicy {
        metadata: meta(gw, child_name(gw), owner),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(gw)),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: None,
                ports: Some(vec![tcp(HTTPS_PORT), tcp(OPS_PORT)]),
            }]),
            egress: Some(vec![NetworkPolicyEgressRule {
                to: None,
                ports: Some(egress_ports),
            }]),
        }),
    }
}

fn egress_ports_of(config: &Config) -> impl Iterator<Item = i32> {
    egress_ports(config).into_iter().map(i32::from)
}

/// The DuoCommunity that publishes `gw` to other gateways in the cluster: same name and namespace,
/// endpoints on its published address ([`published_address`]; with `spec.publish.address` set, also
/// `connectTo` its Service, so that peers in the cluster connect there and verify the certificate
/// against the published host), the organisation's URA as the certificate URA, its XUA issuer with
/// `signing_certificate` (PEM of the leaf that signs its assertions) as the issuer trust list, and the
/// labels of `spec.publish.labels` plus [`PUBLISHED_BY_LABEL`]. `None` when publishing is disabled or
/// the address is invalid (the reconciler refuses such a spec before publishing).
pub fn published_community(
    gw: &DuoGateway,
    owner: &OwnerReference,
    signing_certificate: Option<&str>,
) -> Option<DuoCommunity> {
    if !gw.spec.publish.enabled {
        return None;
    }
    let ns = gw.namespace().unwrap_or_else(|| "default".into());
    let (host, port) = published_address(gw).ok()?;
    let base = if port == 443 {
        format!("https://{host}")
    } else {
        format!("https://{host}:{port}")
    };
    let connect_to = gw.spec.publish.address.as_ref().map(|_| service_host(gw));
    let mut labels = gw.spec.publish.labels.clone();
    labels.insert(PUBLISHED_BY_LABEL.into(), gw.name_any());
    labels.insert("app.kubernetes.io/managed-by".into(), "duo-operator".into());
    let mut c = DuoCommunity::new(
        &gw.name_any(),
        DuoCommunitySpec {
            home_community_id: gw.spec.organization.home_community_id.clone(),
            name: gw.spec.organization.name.clone(),
            organizations: vec![CommunityOrganization {
                ura: gw.spec.organization.ura.clone(),
                name: gw.spec.organization.name.clone(),
            }],
            endpoints: CommunityEndpoints {
                query_url: format!("{base}{ITI38_PATH}"),
                retrieve_url: format!("{base}{ITI39_PATH}"),
                imaging_retrieve_url: format!("{base}{RAD75_PATH}"),
                connect_to,
            },
            trust: CommunityTrust {
                certificate_ura: Some(gw.spec.organization.ura.clone()),
                issuers: signing_certificate
                    .map(|pem| {
                        vec![CommunityIssuer {
                            issuer: xua_issuer(gw),
                            certificates: pem.to_owned(),
                        }]
                    })
                    .unwrap_or_default(),
            },
            deadline_ms: 10_000,
            allow_plain_http: false,
            fronted_communities: Vec::new(),
        },
    );
    c.metadata.namespace = Some(ns);
    c.metadata.labels = Some(labels);
    c.metadata.owner_references = Some(vec![owner.clone()]);
    Some(c)
}

/// The `saml2:Issuer` of `gw`'s assertions: `spec.xua.issuer`, default its homeCommunityId.
pub fn xua_issuer(gw: &DuoGateway) -> String {
    gw.spec
        .xua
        .issuer
        .clone()
        .unwrap_or_else(|| gw.spec.organization.home_community_id.clone())
}

#[cfg(test)]
mod workload_tests;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crd::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    pub(crate) fn gateway() -> DuoGateway {
        let mut gw = DuoGateway::new(
            "oost",
            DuoGatewaySpec {
                organization: GatewayOrganization {
                    ura: "12345678".into(),
                    name: "Ziekenhuis Oost".into(),
                    facility_type: "V6".into(),
                    home_community_id: "urn:oid:2.16.528.1.1007.3.3.12345678.1".into(),
                },
                connection: Connection {
                    xds: Some(XdsConnection {
                        registry_url: "https://registry.oost.example/iti18".into(),
                        repositories: vec![UniqueEndpoint {
                            unique_id: "1.2.3.4.1".into(),
                            url: "https://repo.oost.example:8443/iti43".into(),
                        }],
                        imaging_document_sources: vec![UniqueEndpoint {
                            unique_id: "1.2.3.4.2".into(),
                            url: "https://ids.oost.example/rad69".into(),
                        }],
                        deadline_ms: 10_000,
                    }),
                    tlb: None,
                },
                mitz: Some(MitzRef {
                    connection_name: "mitz".into(),
                }),
                consent: Consent::default(),
                trusted_front_ends: Vec::new(),
                localization: Localization::Mitz,
                tls: GatewayTls {
                    secret_name: "oost-tls".into(),
                    trust_bundle: TrustBundleRef {
                        config_map: Some(KeyRef {
                            name: "duo-trust".into(),
                            key: "ca.crt".into(),
                        }),
                        secret: None,
                    },
                },
                communities: Some(CommunitySelection {
                    selector: LabelSelector::default(),
                    namespaces: None,
                }),
                publish: Publish::default(),
                registration: Default::default(),
                replicas: 2,
                resources: None,
                image: None,
                workload: Default::default(),
                service: Default::default(),
                allow_plain_http: false,
                xua: Default::default(),
                tls_policy: Default::default(),
                revocation: Default::default(),
            },
        );
        gw.metadata.namespace = Some("hospitals".into());
        gw.metadata.uid = Some("uid-1".into());
        gw
    }

    pub(crate) fn mitz() -> MitzConnection {
        let mut m = MitzConnection::new(
            "mitz",
            MitzConnectionSpec {
                closed_question_url: "https://mitz.example/geslotenautorisatievraag/xacml3".into(),
                open_question_url: Some("https://mitz.example/openautorisatievraag".into()),
                subscription_url: None,
                client_certificate_secret_name: "mitz-client".into(),
                trust_bundle: TrustBundleRef {
                    config_map: None,
                    secret: Some(KeyRef {
                        name: "mitz-ca".into(),
                        key: "ca.crt".into(),
                    }),
                },
                deadline_ms: 3000,
                cache_seconds: 60,
                notification_client_names: Vec::new(),
                allow_plain_http: false,
                crl_urls: Vec::new(),
            },
        );
        m.metadata.namespace = Some("hospitals".into());
        m
    }

    fn community(name: &str, hcid: &str) -> DuoCommunity {
        let mut c = DuoCommunity::new(
            name,
            DuoCommunitySpec {
                home_community_id: hcid.into(),
                name: name.into(),
                organizations: vec![CommunityOrganization {
                    ura: "87654321".into(),
                    name: "West".into(),
                }],
                endpoints: CommunityEndpoints {
                    query_url: "https://duo.west.example/xca/iti38".into(),
                    retrieve_url: "https://duo.west.example/xca/iti39".into(),
                    imaging_retrieve_url: "https://duo.west.example/xcai/rad75".into(),
                    connect_to: None,
                },
                // a community in a URA's arc carries that URA's certificate
                trust: CommunityTrust {
                    certificate_ura: ura_of_arc(hcid).map(|u| format!("{u:0>8}")),
                    ..CommunityTrust::default()
                },
                deadline_ms: 5000,
                allow_plain_http: false,
                fronted_communities: Vec::new(),
            },
        );
        c.metadata.namespace = Some("hospitals".into());
        c
    }

    fn owner(gw: &DuoGateway) -> OwnerReference {
        use kube::Resource;
        gw.controller_owner_ref(&()).unwrap()
    }

    #[test]
    fn config_renders_the_runtime_type_and_round_trips() {
        let gw = gateway();
        let west = community("west", "urn:oid:2.16.528.1.1007.3.3.87654321.1");
        let own = community("oost", "urn:oid:2.16.528.1.1007.3.3.12345678.1");
        let c = runtime_config(&gw, &[west, own], Some(&mitz())).unwrap();
        assert_eq!(c.communities.len(), 1, "own homeCommunityId skipped");
        assert_eq!(
            c.server.tls.cert_file.to_str(),
            Some("/etc/duo/tls/tls.crt")
        );
        assert_eq!(
            c.server.tls.trust_bundle_file.to_str(),
            Some("/etc/duo/trust/ca.crt")
        );
        let m = c.mitz.as_ref().unwrap();
        assert_eq!(
            m.tls.trust_bundle_file.to_str(),
            Some("/etc/duo/mitz-trust/ca.crt")
        );
        assert_eq!(m.tls.key_file.to_str(), Some("/etc/duo/mitz/tls.key"));
        let yaml = c.to_yaml();
        assert_eq!(Config::parse(&yaml).unwrap(), c);
        assert!(yaml.contains("localization: mitz"), "{yaml}");
    }

    #[test]
    fn config_errors_name_the_field() {
        let mut gw = gateway();
        gw.spec.organization.ura = "1234567".into();
        assert_eq!(
            runtime_config(&gw, &[], Some(&mitz())).unwrap_err().field,
            "spec.organization.ura"
        );
        let gw = gateway();
        let e = runtime_config(&gw, &[], None).unwrap_err();
        assert_eq!(e.field, "spec.mitz.connectionName");
        let mut gw = gateway();
        gw.spec.connection.xds.as_mut().unwrap().registry_url = "http://registry/iti18".into();
        let e = runtime_config(&gw, &[], Some(&mitz())).unwrap_err();
        assert!(e.to_string().contains("local.registryUrl"), "{e}");
        let mut gw = gateway();
        gw.spec.localization = Localization::AllCommunities;
        gw.spec.consent.mode = ConsentMode::PermitAll;
        gw.spec.mitz = None;
        assert!(runtime_config(&gw, &[], None).unwrap().mitz.is_none());
    }

    /// Issue 12, defect 9: trusted front ends by issuer and subject or by pin reach the runtime
    /// configuration parsed; a name alone, both forms, or text that is no name or pin is the field's error.
    #[test]
    fn trusted_front_ends_render_as_certificate_identities() {
        use crate::crd::TrustedFrontEnd as Entry;
        let pin = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
        let mut gw = gateway();
        gw.spec.trusted_front_ends = vec![
            Entry {
                issuer: Some("CN=UZI-register Private Server CA G1,O=CIBG,C=NL".into()),
                subject: Some("CN=epd.oost.example, O=Ziekenhuis Oost, C=NL".into()),
                spki_sha256: None,
            },
            Entry {
                spki_sha256: Some(pin.into()),
                ..Entry::default()
            },
        ];
        let c = runtime_config(&gw, &[], Some(&mitz())).unwrap();
        let t = &c.initiating.trusted_front_end;
        assert!(t.certificate_dns_names.is_empty());
        assert_eq!(t.certificates.len(), 2);
        assert_eq!(
            t.certificates[0].subject.as_ref().unwrap().to_string(),
            "CN=epd.oost.example,O=Ziekenhuis Oost,C=NL"
        );
        assert_eq!(t.certificates[1].spki_sha256.unwrap().to_string(), pin);
        let yaml = c.to_yaml();
        assert_eq!(Config::parse(&yaml).unwrap(), c, "{yaml}");
        assert!(!yaml.contains("certificateDnsNames"), "{yaml}");
        for (entry, field) in [
            (
                Entry {
                    subject: Some("CN=epd".into()),
                    ..Entry::default()
                },
                "spec.trustedFrontEnds[0]",
            ),
            (
                Entry {
                    issuer: Some("CN=CA".into()),
                    subject: Some("CN=epd".into()),
                    spki_sha256: Some(pin.into()),
                },
                "spec.trustedFrontEnds[0]",
            ),
            (
                Entry {
                    issuer: Some("CN=CA".into()),
                    subject: Some("epd.oost.example".into()),
                    spki_sha256: None,
                },
                "spec.trustedFrontEnds[0].subject",
            ),
            (
                Entry {
                    spki_sha256: Some("c2hvcnQ=".into()),
                    ..Entry::default()
                },
                "spec.trustedFrontEnds[0].spkiSha256",
            ),
        ] {
            gw.spec.trusted_front_ends = vec![entry.clone()];
            let e = runtime_config(&gw, &[], Some(&mitz())).unwrap_err();
            assert_eq!(e.field, field, "{entry:?}: {e}");
        }
    }

    #[test]
    fn deployment_is_restricted_and_mounts_what_the_config_names() {
        let gw = gateway();
        let d = deployment(&gw, &owner(&gw), Some(&mitz()), "duo/duo-gateway:1", "abc");
        let spec = d.spec.unwrap();
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        let psc = pod.security_context.unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let c = &pod.containers[0];
        let sc = c.security_context.clone().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(
            c.args.as_deref().unwrap(),
            ["serve", "--config", "/etc/duo/config/config.yaml"]
        );
        assert_eq!(
            c.readiness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/readyz")
        );
        assert_eq!(
            c.liveness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/healthz")
        );
        let mounts: Vec<_> = c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert_eq!(
            mounts,
            [
                "/etc/duo/config",
                "/etc/duo/tls",
                "/etc/duo/trust",
                "/tmp",
                "/etc/duo/mitz",
                "/etc/duo/mitz-trust"
            ]
        );
        let annotations = spec.template.metadata.unwrap().annotations.unwrap();
        assert_eq!(annotations[CHECKSUM_ANNOTATION], "abc");
        assert_eq!(c.image.as_deref(), Some("duo/duo-gateway:1"));
        let trust = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "mitz-trust")
            .unwrap();
        let item = &trust.secret.as_ref().unwrap().items.as_ref().unwrap()[0];
        assert_eq!(
            (item.key.as_str(), item.path.as_str()),
            ("mitz-trust", "ca.crt")
        );
    }

    /// A representative DuoGateway as a user writes it: XDS connection, Mitz, a separate XUA signing
    /// key, resources, an image override, three replicas and its trust bundle in a ConfigMap; the
    /// MitzConnection's trust bundle is a Secret.
    fn golden_full() -> (DuoGateway, MitzConnection) {
        let mut gw: DuoGateway = serde_json::from_value(serde_json::json!({
            "apiVersion": "duo.beeldbeschikbaarheid.nl/v1alpha1",
            "kind": "DuoGateway",
            "metadata": {"name": "oost", "namespace": "hospitals", "uid": "0d7c2f4e-1b3a-4c5d-9e8f-a1b2c3d4e5f6"},
            "spec": {
                "organization": {
                    "ura": "12345678",
                    "name": "Ziekenhuis Oost",
                    "facilityType": "V6",
                    "homeCommunityId": "urn:oid:2.16.528.1.1007.3.3.12345678.1"
                },
                "connection": {"xds": {
                    "registryUrl": "https://registry.oost.example/iti18",
                    "repositories": [{"uniqueId": "1.2.3.4.1", "url": "https://repo.oost.example/iti43"}],
                    "imagingDocumentSources": [{"uniqueId": "1.2.3.4.2", "url": "https://ids.oost.example/rad69"}]
                }},
                "mitz": {"connectionName": "mitz"},
                "tls": {
                    "secretName": "oost-tls",
                    "trustBundle": {"configMap": {"name": "duo-trust", "key": "bundle.pem"}}
                },
                "communities": {"selector": {"matchLabels": {"duo.example/network": "oost-west"}}},
                "replicas": 3,
                "resources": {
                    "requests": {"cpu": "250m", "memory": "128Mi"},
                    "limits": {"memory": "512Mi"}
                },
                "image": "registry.oost.example/duo-gateway:0.9.1",
                "xua": {"signingSecretName": "oost-xua"}
            }
        }))
        .unwrap();
        gw.metadata.generation = Some(7);
        let m: MitzConnection = serde_json::from_value(serde_json::json!({
            "apiVersion": "duo.beeldbeschikbaarheid.nl/v1alpha1",
            "kind": "MitzConnection",
            "metadata": {"name": "mitz", "namespace": "hospitals"},
            "spec": {
                "closedQuestionUrl": "https://mitz.example/geslotenautorisatievraag/xacml3",
                "openQuestionUrl": "https://mitz.example/openautorisatievraag",
                "clientCertificateSecretName": "mitz-client",
                "trustBundle": {"secret": {"name": "mitz-ca", "key": "ca.pem"}}
            }
        }))
        .unwrap();
        (gw, m)
    }

    /// The smallest DuoGateway: a TLB connection, no Mitz (permitAll, allCommunities), its trust
    /// bundle in a Secret, one replica, the operator's default image.
    fn golden_minimal() -> DuoGateway {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "duo.beeldbeschikbaarheid.nl/v1alpha1",
            "kind": "DuoGateway",
            "metadata": {"name": "west", "namespace": "tlb", "uid": "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d"},
            "spec": {
                "organization": {
                    "ura": "87654321",
                    "name": "Ziekenhuis West",
                    "facilityType": "V4",
                    "homeCommunityId": "urn:oid:2.16.528.1.1007.3.3.87654321.1"
                },
                "connection": {"tlb": {
                    "homeCommunityId": "urn:oid:2.16.840.1.113883.2.4.3.999.1",
                    "queryUrl": "https://tlb.example/xca/iti38",
                    "retrieveUrl": "https://tlb.example/xca/iti39",
                    "imagingRetrieveUrl": "https://tlb.example/xcai/rad75"
                }},
                "consent": {"mode": "permitAll"},
                "localization": "allCommunities",
                "tls": {
                    "secretName": "west-tls",
                    "trustBundle": {"secret": {"name": "west-ca", "key": "ca.crt"}}
                },
                "replicas": 1
            }
        }))
        .unwrap()
    }

    /// Compares `d` serialised (pretty JSON, as the apply body) byte for byte with
    /// `operator/tests/golden/<file>`, captured from the builder before it was split into named
    /// functions. `DUO_UPDATE_GOLDEN=1` rewrites the file instead (only for a deliberate change of the
    /// Deployment; review the diff).
    fn assert_golden(file: &str, d: &Deployment) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(file);
        let got = serde_json::to_string_pretty(d).unwrap() + "\n";
        if std::env::var_os("DUO_UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &got).unwrap();
            return;
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (DUO_UPDATE_GOLDEN=1 writes it)", path.display()));
        assert!(
            got == want,
            "the Deployment differs from {}:\n--- built ---\n{got}",
            path.display()
        );
    }

    #[test]
    fn deployment_matches_the_golden_files() {
        let (gw, m) = golden_full();
        let d = deployment(
            &gw,
            &owner(&gw),
            Some(&m),
            "ghcr.io/duo-beeldbeschikbaarheid/duo-gateway:0.1.0",
            "3f2a9c0d5e7b4a1f8c6d2e0b9a7f5c3e1d8b6a4f2c0e9d7b5a3f1e8c6d4b2a09",
        );
        assert_golden("deployment-full.json", &d);
        let gw = golden_minimal();
        let d = deployment(
            &gw,
            &owner(&gw),
            None,
            "ghcr.io/duo-beeldbeschikbaarheid/duo-gateway:0.1.0",
            "0000000000000000000000000000000000000000000000000000000000000001",
        );
        assert_golden("deployment-minimal.json", &d);
    }

    fn names_of_volumes(v: &[Volume]) -> Vec<&str> {
        v.iter().map(|v| v.name.as_str()).collect()
    }

    fn names_of_mounts(m: &[VolumeMount]) -> Vec<&str> {
        m.iter().map(|m| m.name.as_str()).collect()
    }

    #[test]
    fn volumes_and_mounts_pair_up_and_follow_the_spec() {
        let (gw, m) = golden_full();
        let (volumes, mounts) = volumes_and_mounts(&gw, Some(&m));
        assert_eq!(
            names_of_volumes(&volumes),
            [
                "config",
                "tls",
                "trust",
                "tmp",
                "mitz",
                "mitz-trust",
                "xua-signing"
            ]
        );
        assert_eq!(names_of_mounts(&mounts), names_of_volumes(&volumes));
        for mt in &mounts {
            let writable = mt.name == "tmp";
            assert_eq!(mt.read_only, (!writable).then_some(true), "{}", mt.name);
        }
        // a spec.mitz whose MitzConnection was not passed, or a MitzConnection the spec does not use,
        // mounts nothing of Mitz
        let (v, _) = volumes_and_mounts(&gw, None);
        assert_eq!(
            names_of_volumes(&v),
            ["config", "tls", "trust", "tmp", "xua-signing"]
        );
        let mut no_mitz = gw.clone();
        no_mitz.spec.mitz = None;
        no_mitz.spec.xua.signing_secret_name = None;
        let (v, mt) = volumes_and_mounts(&no_mitz, Some(&m));
        assert_eq!(names_of_volumes(&v), ["config", "tls", "trust", "tmp"]);
        assert_eq!(names_of_mounts(&mt), ["config", "tls", "trust", "tmp"]);
        // every certificate comes from the operator's material Secret, under the runtime's file names
        for (v, items) in [
            (
                &volumes[1],
                vec![("tls.crt", "tls.crt"), ("tls.key", "tls.key")],
            ),
            (&volumes[2], vec![("trust", "ca.crt")]),
            (
                &volumes[4],
                vec![("mitz.crt", "tls.crt"), ("mitz.key", "tls.key")],
            ),
            (&volumes[5], vec![("mitz-trust", "ca.crt")]),
            (
                &volumes[6],
                vec![("xua.crt", "tls.crt"), ("xua.key", "tls.key")],
            ),
        ] {
            let secret = v.secret.as_ref().unwrap();
            assert_eq!(secret.secret_name.as_deref(), Some("duo-oost-material"));
            assert_eq!(secret.default_mode, Some(0o440));
            let got: Vec<(&str, &str)> = secret
                .items
                .as_ref()
                .unwrap()
                .iter()
                .map(|i| (i.key.as_str(), i.path.as_str()))
                .collect();
            assert_eq!(got, items, "{}", v.name);
        }
    }

    #[test]
    fn material_secret_holds_what_was_validated_with_the_checksum() {
        let gw = gateway();
        let s = material_secret(
            &gw,
            &owner(&gw),
            &[(material::TLS_CRT, b"c"), (material::TRUST, b"t")],
            "sum",
        );
        assert_eq!(s.metadata.name.as_deref(), Some("duo-oost-material"));
        assert_eq!(
            s.metadata.annotations.as_ref().unwrap()[CHECKSUM_ANNOTATION],
            "sum"
        );
        assert_eq!(s.metadata.owner_references.as_ref().unwrap().len(), 1);
        let data = s.data.unwrap();
        assert_eq!(data.len(), 2);
        assert_eq!(data["tls.crt"].0, b"c");
    }

    /// Every file the rendered configuration names is in a volume mounted at its folder: what the
    /// runtime reads and what the Deployment mounts come from the same constants.
    #[test]
    fn every_file_the_config_names_is_mounted() {
        let (gw, m) = golden_full();
        let c = runtime_config(&gw, &[], Some(&m)).unwrap();
        let mitz = c.mitz.as_ref().unwrap();
        let signing = c.xua.signing.as_ref().unwrap();
        let files = [
            &c.server.tls.cert_file,
            &c.server.tls.key_file,
            &c.server.tls.trust_bundle_file,
            &mitz.tls.cert_file,
            &mitz.tls.key_file,
            &mitz.tls.trust_bundle_file,
            &signing.cert_file,
            &signing.key_file,
        ];
        let (volumes, mounts) = volumes_and_mounts(&gw, Some(&m));
        let config_file = std::path::PathBuf::from(format!("{CONFIG_DIR}/{CONFIG_KEY}"));
        for f in files.into_iter().chain([&config_file]) {
            let dir = f.parent().unwrap().to_str().unwrap();
            let name = f.file_name().unwrap().to_str().unwrap();
            let mt = mounts
                .iter()
                .find(|mt| mt.mount_path == dir)
                .unwrap_or_else(|| panic!("{} is not mounted", f.display()));
            let v = volumes.iter().find(|v| v.name == mt.name).unwrap();
            let items = v
                .secret
                .as_ref()
                .and_then(|s| s.items.clone())
                .or_else(|| v.config_map.as_ref().and_then(|c| c.items.clone()))
                .unwrap();
            assert!(
                items.iter().any(|i| i.path == name),
                "{} is not in volume {}",
                f.display(),
                v.name
            );
        }
    }

    #[test]
    fn security_contexts_are_restricted() {
        let c = container_security_context();
        assert_eq!(c.allow_privilege_escalation, Some(false));
        assert_eq!(c.read_only_root_filesystem, Some(true));
        assert_eq!(c.privileged, None);
        assert_eq!(
            (c.run_as_non_root, c.run_as_user, c.run_as_group),
            (Some(true), Some(RUN_AS), Some(RUN_AS))
        );
        let caps = c.capabilities.unwrap();
        assert_eq!((caps.drop, caps.add), (Some(vec!["ALL".to_owned()]), None));
        assert_eq!(c.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let p = pod_security_context();
        assert_eq!(
            (p.run_as_non_root, p.run_as_user, p.run_as_group, p.fs_group),
            (Some(true), Some(RUN_AS), Some(RUN_AS), Some(RUN_AS))
        );
        assert_eq!(p.seccomp_profile.unwrap().type_, "RuntimeDefault");
    }

    #[test]
    fn probes_ask_the_ops_port() {
        let ports = container_ports();
        let ops = ports
            .iter()
            .find(|p| p.name.as_deref() == Some("ops"))
            .unwrap();
        assert_eq!(ops.container_port, OPS_PORT);
        let https = ports
            .iter()
            .find(|p| p.name.as_deref() == Some("https"))
            .unwrap();
        assert_eq!(https.container_port, HTTPS_PORT);
        for (p, path) in [
            (readiness_probe(), "/readyz"),
            (liveness_probe(), "/healthz"),
        ] {
            let get = p.http_get.unwrap();
            assert_eq!(get.path.as_deref(), Some(path));
            assert_eq!(get.port, IntOrString::String("ops".into()));
            assert_eq!(get.scheme.as_deref(), Some("HTTP"));
        }
        assert!(
            liveness_probe().period_seconds.unwrap() * liveness_probe().failure_threshold.unwrap()
                > readiness_probe().period_seconds.unwrap()
                    * readiness_probe().failure_threshold.unwrap(),
            "a pod leaves the Service before it is restarted"
        );
    }

    #[test]
    fn container_runs_the_image_with_the_config_and_resources() {
        let (mut gw, _) = golden_full();
        let c = gateway_container(&gw, "default:1", vec![mount("config", CONFIG_DIR)]);
        assert_eq!(
            c.image.as_deref(),
            Some("registry.oost.example/duo-gateway:0.9.1")
        );
        assert_eq!(c.command.as_deref(), Some(&["duo-gateway".to_owned()][..]));
        assert_eq!(
            c.args.as_deref().unwrap(),
            ["serve", "--config", "/etc/duo/config/config.yaml"]
        );
        assert_eq!(c.resources, gw.spec.resources);
        assert_eq!(
            names_of_mounts(c.volume_mounts.as_ref().unwrap()),
            ["config"]
        );
        gw.spec.image = None;
        gw.spec.resources = None;
        let c = gateway_container(&gw, "default:1", vec![]);
        assert_eq!(c.image.as_deref(), Some("default:1"));
        assert_eq!(c.resources, None);
    }

    #[test]
    fn pod_template_is_selected_and_rolls_with_the_checksum() {
        let gw = golden_minimal();
        let t = pod_template(&gw, None, "img:1", "sum");
        let meta = t.metadata.unwrap();
        let labels = meta.labels.unwrap();
        for (k, v) in selector_labels(&gw) {
            assert_eq!(labels.get(&k), Some(&v), "selector label {k}");
        }
        assert_eq!(meta.annotations.unwrap()[CHECKSUM_ANNOTATION], "sum");
        let pod = t.spec.unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("duo-west"));
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.enable_service_links, Some(false));
        assert_eq!(pod.containers.len(), 1);
        let s = rolling_update_strategy();
        let r = s.rolling_update.unwrap();
        assert_eq!(r.max_unavailable, Some(IntOrString::Int(0)));
        assert_eq!(r.max_surge, Some(IntOrString::Int(1)));
    }

    #[test]
    fn checksum_changes_with_config_or_material_only() {
        let a = checksum("x: 1", &[("tls.crt", b"A")]);
        assert_eq!(a, checksum("x: 1", &[("tls.crt", b"A")]));
        assert_ne!(a, checksum("x: 2", &[("tls.crt", b"A")]));
        assert_ne!(a, checksum("x: 1", &[("tls.crt", b"B")]));
        // boundaries are length-prefixed: moving bytes between fields changes the sum
        assert_ne!(checksum("", &[("a", b"bc")]), checksum("", &[("ab", b"c")]));
    }

    #[test]
    fn pdb_only_with_several_replicas_and_egress_from_urls() {
        let mut gw = gateway();
        assert!(pod_disruption_budget(&gw, &owner(&gw)).is_some());
        gw.spec.replicas = 1;
        assert!(pod_disruption_budget(&gw, &owner(&gw)).is_none());
        let c = runtime_config(
            &gw,
            &[community("west", "urn:oid:2.16.528.1.1007.3.3.87654321.1")],
            Some(&mitz()),
        )
        .unwrap();
        assert_eq!(
            egress_ports(&c).into_iter().collect::<Vec<_>>(),
            vec![80, 443, 8443],
            "revocation on: CRLs and OCSP over http"
        );
        let mut off = c.clone();
        off.revocation.enabled = false;
        assert_eq!(
            egress_ports(&off).into_iter().collect::<Vec<_>>(),
            vec![443, 8443]
        );
        let mut extra = c.clone();
        extra.revocation.crl_urls = vec!["http://crl.example:8080/ca.crl".into()];
        assert_eq!(
            egress_ports(&extra).into_iter().collect::<Vec<_>>(),
            vec![80, 443, 8080, 8443]
        );
        let np = network_policy(&gw, &owner(&gw), &c);
        let spec = np.spec.unwrap();
        assert_eq!(spec.policy_types.unwrap(), ["Ingress", "Egress"]);
        assert_eq!(url_port("https://[::1]:9443/x"), Some(9443));
        assert_eq!(url_port("http://h/x"), Some(80));
    }

    #[test]
    fn tls_policy_and_revocation_are_rendered() {
        let mut gw = gateway();
        let c = runtime_config(&gw, &[], Some(&mitz())).unwrap();
        assert_eq!(c.tls_policy.min_version, rc::TlsVersion::Tls12);
        assert_eq!(
            c.revocation,
            rc::RevocationConfig::default(),
            "defaults agree"
        );
        gw.spec.tls_policy.min_version = TlsMinVersion::Tls13;
        gw.spec.revocation.refresh_interval_seconds = 600;
        gw.spec.revocation.grace_seconds = 0;
        gw.spec.revocation.when_unavailable = RevocationFallback::Accept;
        gw.spec.revocation.without_source = RevocationFallback::Refuse;
        gw.spec.revocation.ocsp = false;
        gw.spec.revocation.fetch_timeout_ms = 2000;
        gw.spec.revocation.crl_urls = vec![
            "http://crl.uzi.example/ca.crl".into(),
            "http://crl.mitz.example/ca.crl".into(),
        ];
        let mut m = mitz();
        m.spec.crl_urls = vec![
            "http://crl.mitz.example/ca.crl".into(),
            "http://crl.pkio.example/g3.crl".into(),
        ];
        let c = runtime_config(&gw, &[], Some(&m)).unwrap();
        assert_eq!(c.tls_policy.min_version, rc::TlsVersion::Tls13);
        let r = &c.revocation;
        assert_eq!(
            (
                r.refresh_interval_seconds,
                r.grace_seconds,
                r.fetch_timeout_ms,
                r.ocsp
            ),
            (600, 0, 2000, false)
        );
        assert_eq!(r.when_unavailable, rc::RevocationFallback::Accept);
        assert_eq!(r.without_source, rc::RevocationFallback::Refuse);
        assert_eq!(
            r.crl_urls,
            [
                "http://crl.uzi.example/ca.crl",
                "http://crl.mitz.example/ca.crl",
                "http://crl.pkio.example/g3.crl"
            ],
            "the MitzConnection's CRLs added once"
        );
        // the rendered YAML is what the gateway reads back
        let back = rc::Config::parse(&c.to_yaml()).unwrap();
        assert_eq!(back.revocation, c.revocation);
        assert_eq!(back.tls_policy, c.tls_policy);
        // stored objects the CRD rules would refuse now are reported, not rendered
        gw.spec.revocation.refresh_interval_seconds = 0;
        let e = runtime_config(&gw, &[], Some(&m)).unwrap_err().to_string();
        assert!(e.contains("spec.revocation.refreshIntervalSeconds"), "{e}");
        gw.spec.revocation.refresh_interval_seconds = 600;
        gw.spec.revocation.crl_urls = vec!["https://crl.example/ca.crl".into()];
        let e = runtime_config(&gw, &[], Some(&m)).unwrap_err().to_string();
        assert!(e.contains("revocation.crlUrls"), "{e}");
    }

    #[test]
    fn published_community_points_at_the_service() {
        let mut gw = gateway();
        gw.spec
            .publish
            .labels
            .insert("duo.example/network".into(), "oost-west".into());
        let c = published_community(&gw, &owner(&gw), None).unwrap();
        assert_eq!(
            c.spec.endpoints.query_url,
            "https://duo-oost.hospitals.svc:8443/xca/iti38"
        );
        assert_eq!(
            c.spec.endpoints.imaging_retrieve_url,
            "https://duo-oost.hospitals.svc:8443/xcai/rad75"
        );
        assert_eq!(
            c.metadata.labels.as_ref().unwrap()[PUBLISHED_BY_LABEL],
            "oost"
        );
        assert_eq!(
            c.metadata.labels.as_ref().unwrap()["duo.example/network"],
            "oost-west"
        );
        assert_eq!(c.spec.endpoints.connect_to, None);
        // published under an external name: URLs on it, connected through the Service
        gw.spec.publish.address = Some("duo.oost.example".into());
        let c = published_community(&gw, &owner(&gw), None).unwrap();
        assert_eq!(
            c.spec.endpoints.query_url,
            "https://duo.oost.example/xca/iti38"
        );
        assert_eq!(
            c.spec.endpoints.connect_to.as_deref(),
            Some("duo-oost.hospitals.svc")
        );
        let ports = |gw: &DuoGateway| -> Vec<(String, i32)> {
            service(gw, &owner(gw))
                .spec
                .unwrap()
                .ports
                .unwrap()
                .into_iter()
                .map(|p| (p.name.unwrap(), p.port))
                .collect()
        };
        assert_eq!(
            ports(&gw),
            [
                ("https".to_owned(), 8443),
                ("ops".to_owned(), 8080),
                ("published".to_owned(), 443)
            ]
        );
        gw.spec.publish.address = Some("duo.oost.example:8443".into());
        let c = published_community(&gw, &owner(&gw), None).unwrap();
        assert_eq!(
            c.spec.endpoints.retrieve_url,
            "https://duo.oost.example:8443/xca/iti39"
        );
        assert_eq!(ports(&gw).len(), 2, "8443 is the https port already");
        gw.spec.publish.enabled = false;
        assert!(published_community(&gw, &owner(&gw), None).is_none());
    }

    #[test]
    fn published_address_is_checked() {
        let mut gw = gateway();
        assert_eq!(
            published_address(&gw).unwrap(),
            ("duo-oost.hospitals.svc".to_owned(), 8443)
        );
        for (a, want) in [
            ("duo.oost.example", Some(("duo.oost.example", 443))),
            ("DUO.Oost.Example:9443", Some(("duo.oost.example", 9443))),
            ("duo.oost.example:0", None),
            ("duo.oost.example:8080", None),
            ("10.1.2.3", None),
            ("10.1.2.3:443", None),
            ("duo.oost.example:65536", None),
            ("duo.oost.example:", None),
            ("https://duo.oost.example", None),
            ("duo.oost.example/x", None),
            ("-duo.oost.example", None),
            ("duo..example", None),
            ("", None),
            ("[::1]:443", None),
        ] {
            gw.spec.publish.address = Some(a.into());
            let got = published_address(&gw).ok();
            assert_eq!(got.as_ref().map(|(h, p)| (h.as_str(), *p)), want, "{a:?}");
            if want.is_none() {
                let e = published_address(&gw).unwrap_err();
                assert_eq!(e.field, "spec.publish.address", "{a:?}");
                assert!(published_community(&gw, &owner(&gw), None).is_none());
            }
        }
    }

    #[test]
    fn certificate_names_the_host_exactly_or_by_one_wildcard_label() {
        let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(certificate_names_host(
            &names(&["duo.oost.example"]),
            "DUO.oost.example"
        ));
        assert!(certificate_names_host(
            &names(&["*.oost.example"]),
            "duo.oost.example"
        ));
        assert!(!certificate_names_host(
            &names(&["*.oost.example"]),
            "a.duo.oost.example"
        ));
        assert!(!certificate_names_host(
            &names(&["*.oost.example"]),
            "oost.example"
        ));
        assert!(!certificate_names_host(
            &names(&["duo.oost.example"]),
            "duo.west.example"
        ));
        assert!(!certificate_names_host(&names(&[]), "duo.oost.example"));
        assert!(!certificate_names_host(
            &names(&["duo-oost.hospitals.svc"]),
            "duo.oost.example"
        ));
    }

    /// The duplicate rule: of selected communities with one homeCommunityId, the one the operator
    /// verifiably published wins, then one in the gateway's namespace, then the older; a community
    /// merely claiming to be published (label and owner reference copied) is not verified and so
    /// does not win; the loser is skipped and named with the winner.
    #[test]
    fn a_duplicate_homecommunityid_keeps_one_by_precedence() {
        let gw = gateway();
        let t = |s: i64| {
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::from_second(1_700_000_000 + s).unwrap(),
            ))
        };
        let mut real = community("west", "urn:oid:1.2.4");
        real.metadata.namespace = Some("shared".into());
        real.metadata.creation_timestamp = t(100);
        let mut copy = community("west", "urn:oid:1.2.4");
        copy.metadata.namespace = Some("tenant".into());
        copy.metadata.creation_timestamp = t(50);
        copy.spec.endpoints.query_url = "https://intruder.example/xca/iti38".into();
        let kept = |authentic: &[&str], cs: &[DuoCommunity]| {
            let set: BTreeSet<String> = authentic.iter().map(|s| (*s).to_owned()).collect();
            let (c, skipped) = resolve(&gw, cs, Some(&mitz()), &set).unwrap();
            assert_eq!(c.communities.len(), 1);
            assert_eq!(skipped.len(), cs.len() - 1);
            for s in &skipped {
                assert_eq!(s.reason, Reason::DuplicateHomeCommunityId);
                assert!(s.message.contains("which is kept"), "{}", s.message);
            }
            (c.communities[0].query_url.clone(), skipped)
        };
        // verified as published: wins although created later and in another namespace
        let (url, skipped) = kept(&["shared/west"], &[real.clone(), copy.clone()]);
        assert_eq!(url, "https://duo.west.example/xca/iti38");
        assert_eq!(skipped[0].community, "tenant/west");
        assert!(skipped[0].message.contains("DuoCommunity shared/west"));
        assert!(skipped[0].message.contains("published by the operator"));
        // neither verified: the older one wins, whatever the order
        let (url, _) = kept(&[], &[real.clone(), copy.clone()]);
        assert_eq!(url, "https://intruder.example/xca/iti38");
        let (url2, _) = kept(&[], &[copy.clone(), real.clone()]);
        assert_eq!(url, url2);
        // one in the gateway's own namespace wins over an older one elsewhere
        let mut own = real.clone();
        own.metadata.namespace = Some("hospitals".into());
        let (url, _) = kept(&[], &[own, copy.clone()]);
        assert_eq!(url, "https://duo.west.example/xca/iti38");
        // the claim itself: label and controlling DuoGateway owner of the same name
        assert_eq!(claims_published(&real), None);
        real.metadata.labels = Some([(PUBLISHED_BY_LABEL.to_owned(), "west".to_owned())].into());
        real.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "duo.beeldbeschikbaarheid.nl/v1alpha1".into(),
            kind: "DuoGateway".into(),
            name: "west".into(),
            uid: "u-1".into(),
            controller: Some(true),
            block_owner_deletion: None,
        }]);
        assert_eq!(
            claims_published(&real),
            Some(("west".to_owned(), "u-1".to_owned()))
        );
    }

    /// A homeCommunityId in a URA's OID arc (2.16.528.1.1007.3.3.<URA>) belongs to that organisation:
    /// a gateway of another URA cannot take it (so it is never published), and a community claiming it
    /// is used only when its certificate URA is that URA.
    #[test]
    fn a_homecommunityid_in_a_ura_arc_belongs_to_that_ura() {
        assert_eq!(
            ura_of_arc("urn:oid:2.16.528.1.1007.3.3.87654321.1"),
            Some("87654321")
        );
        assert_eq!(
            ura_of_arc("urn:oid:2.16.528.1.1007.3.3.1234567"),
            Some("1234567")
        );
        assert_eq!(ura_of_arc("urn:oid:2.16.840.1.113883.2.4.3.111.1"), None);
        assert_eq!(ura_of_arc("urn:oid:2.16.528.1.1007.3.31.1"), None);
        assert!(same_ura("1234567", "01234567"));
        let mut gw = gateway();
        gw.spec.organization.home_community_id = "urn:oid:2.16.528.1.1007.3.3.87654321.1".into();
        let e = runtime_config(&gw, &[], Some(&mitz())).unwrap_err();
        assert_eq!(e.field, "spec.organization.homeCommunityId");
        assert!(e.message.contains("URA 87654321"), "{e}");
        let gw = gateway();
        let mut c = community("west", "urn:oid:2.16.528.1.1007.3.3.87654321.1");
        for (cert_ura, used) in [
            (None, false),
            (Some("11111111"), false),
            (Some("87654321"), true),
        ] {
            c.spec.trust.certificate_ura = cert_ura.map(str::to_owned);
            let (cfg, skipped) = resolve(
                &gw,
                std::slice::from_ref(&c),
                Some(&mitz()),
                &BTreeSet::new(),
            )
            .unwrap();
            assert_eq!(cfg.communities.len(), usize::from(used), "{cert_ura:?}");
            if !used {
                assert_eq!(skipped[0].reason, Reason::CommunityInvalid);
                assert!(
                    skipped[0].message.contains("OID arc of URA 87654321"),
                    "{}",
                    skipped[0].message
                );
            }
        }
    }

    /// Target communities: `spec.frontedCommunities` is rendered into `communities[].frontedCommunities`;
    /// a community fronting another selected community's own id, or the gateway's, is skipped whatever
    /// the order; of two fronting one id, the one in the gateway's namespace is kept.
    #[test]
    fn fronted_communities_are_rendered_and_conflicts_skipped() {
        let gw = gateway();
        let mut platform = community("platform", "urn:oid:1.2.4");
        platform.spec.fronted_communities =
            vec!["urn:oid:1.2.4.1".into(), "urn:oid:1.2.4.2".into()];
        let (cfg, skipped) = resolve(
            &gw,
            std::slice::from_ref(&platform),
            Some(&mitz()),
            &BTreeSet::new(),
        )
        .unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        let fronted: Vec<String> = cfg.communities[0]
            .fronted_communities
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(fronted, ["urn:oid:1.2.4.1", "urn:oid:1.2.4.2"]);
        // the rendered file parses and validates as the gateway reads it
        let yaml = cfg.to_yaml();
        assert!(yaml.contains("frontedCommunities"), "{yaml}");
        assert_eq!(Config::parse(&yaml).unwrap(), cfg);
        // fronting a hospital that is configured on its own: the platform is skipped, before or after it
        let hospital = community("hospital", "urn:oid:1.2.4.2");
        for order in [
            vec![platform.clone(), hospital.clone()],
            vec![hospital.clone(), platform.clone()],
        ] {
            let (cfg, skipped) = resolve(&gw, &order, Some(&mitz()), &BTreeSet::new()).unwrap();
            let used: Vec<String> = cfg
                .communities
                .iter()
                .map(|c| c.home_community_id.to_string())
                .collect();
            assert_eq!(used, ["urn:oid:1.2.4.2"]);
            assert_eq!(skipped.len(), 1);
            assert_eq!(skipped[0].community, "hospitals/platform");
            assert_eq!(skipped[0].reason, Reason::CommunityInvalid);
            assert!(
                skipped[0].message.contains("spec.frontedCommunities")
                    && skipped[0].message.contains("hospitals/hospital"),
                "{}",
                skipped[0].message
            );
        }
        // fronting the gateway's own homeCommunityId
        let mut own = platform.clone();
        own.spec.fronted_communities = vec![gw.spec.organization.home_community_id.clone()];
        let (cfg, skipped) = resolve(
            &gw,
            std::slice::from_ref(&own),
            Some(&mitz()),
            &BTreeSet::new(),
        )
        .unwrap();
        assert!(cfg.communities.is_empty());
        assert!(
            skipped[0].message.contains("own homeCommunityId"),
            "{}",
            skipped[0].message
        );
        // two platforms fronting one id: the one in the gateway's namespace is kept, whatever the order
        let mut other = community("intruder", "urn:oid:1.2.5");
        other.metadata.namespace = Some("elsewhere".into());
        other.spec.fronted_communities = vec!["urn:oid:1.2.4.1".into()];
        for order in [
            vec![other.clone(), platform.clone()],
            vec![platform.clone(), other.clone()],
        ] {
            let (cfg, skipped) = resolve(&gw, &order, Some(&mitz()), &BTreeSet::new()).unwrap();
            assert_eq!(cfg.communities.len(), 1);
            assert_eq!(
                cfg.communities[0].home_community_id.to_string(),
                "urn:oid:1.2.4"
            );
            assert_eq!(skipped[0].community, "elsewhere/intruder");
            assert!(
                skipped[0]
                    .message
                    .contains("already fronted by DuoCommunity hospitals/platform"),
                "{}",
                skipped[0].message
            );
        }
        // not a homeCommunityId: the community is skipped, naming the field
        let mut bad = platform.clone();
        bad.spec.fronted_communities = vec!["not-an-oid".into()];
        let (cfg, skipped) = resolve(
            &gw,
            std::slice::from_ref(&bad),
            Some(&mitz()),
            &BTreeSet::new(),
        )
        .unwrap();
        assert!(cfg.communities.is_empty());
        assert!(
            skipped[0].message.contains("spec.frontedCommunities[0]"),
            "{}",
            skipped[0].message
        );
    }

    #[test]
    fn remote_connect_to_is_rendered_and_checked() {
        let gw = gateway();
        let mut c = community("west", "urn:oid:1.2.4");
        c.spec.endpoints.connect_to = Some("duo-west.west.svc".into());
        let (cfg, skipped) = resolve(&gw, &[c.clone()], Some(&mitz()), &BTreeSet::new()).unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(
            cfg.communities[0].connect_to.as_deref(),
            Some("duo-west.west.svc")
        );
        for bad in ["https://x", "x:443", "x/y", "", "a..b"] {
            c.spec.endpoints.connect_to = Some(bad.into());
            let (cfg, skipped) =
                resolve(&gw, &[c.clone()], Some(&mitz()), &BTreeSet::new()).unwrap();
            assert!(cfg.communities.is_empty(), "{bad:?}");
            assert!(
                skipped[0].message.contains("spec.endpoints.connectTo"),
                "{}",
                skipped[0].message
            );
        }
    }

    #[test]
    fn registration_is_rendered_with_the_published_notification_endpoint() {
        let mut gw = gateway();
        let mut m = mitz();
        // off by default
        let c = runtime_config(&gw, &[], Some(&m)).unwrap();
        assert_eq!(c.registration, rc::RegistrationConfig::default());
        gw.spec.registration.mode = crd::RegistrationMode::Mitz;
        // every missing prerequisite is named
        let field = |gw: &DuoGateway, m: &MitzConnection| {
            let e = runtime_config(gw, &[], Some(m)).unwrap_err();
            (e.field.clone(), e.to_string())
        };
        let (f, msg) = field(&gw, &m);
        assert_eq!(f, "spec.registration.mode");
        assert!(msg.contains("publish.address"), "{msg}");
        gw.spec.publish.address = Some("duo.oost.example".into());
        assert!(field(&gw, &m).1.contains("subscriptionUrl"));
        m.spec.subscription_url =
            Some("https://mitz.example/abonnementen/fhir/Subscription".into());
        assert!(field(&gw, &m).1.contains("notificationClientNames"));
        m.spec.notification_client_names = vec!["notify.mitz.example".into()];
        let c = runtime_config(&gw, &[], Some(&m)).unwrap();
        assert_eq!(c.registration.mode, rc::RegistrationMode::Mitz);
        assert_eq!(
            c.registration.notification_endpoint.as_deref(),
            Some("https://duo.oost.example/mitz/notifications")
        );
        assert_eq!(c.registration.max_attempts, 5);
        assert_eq!(
            c.mitz.as_ref().unwrap().notification_client_names,
            ["notify.mitz.example"]
        );
        gw.spec.publish.address = Some("duo.oost.example:9443".into());
        gw.spec.registration.source_system = Some("not an oid".into());
        assert_eq!(
            runtime_config(&gw, &[], Some(&m)).unwrap_err().field,
            "spec.registration.sourceSystem"
        );
        gw.spec.registration.source_system = Some("urn:oid:1.2.3".into());
        let c = runtime_config(&gw, &[], Some(&m)).unwrap();
        assert_eq!(
            c.registration.notification_endpoint.as_deref(),
            Some("https://duo.oost.example:9443/mitz/notifications")
        );
        assert_eq!(
            c.registration
                .source_system
                .map(|s| s.to_string())
                .as_deref(),
            Some("urn:oid:1.2.3")
        );
        // the DSUB trigger: the recipient is the published address
        gw.spec.registration.dsub = Some(crd::RegistrationDsub {
            broker_url: "https://xds.oost.example/dsub/iti52".into(),
            broker_client_names: vec!["broker.oost.example".into()],
            renew_seconds: 3600,
        });
        let c = runtime_config(&gw, &[], Some(&m)).unwrap();
        let d = c.registration.dsub.unwrap();
        assert_eq!(d.recipient_url, "https://duo.oost.example:9443/dsub/notify");
        assert_eq!(d.broker_client_names, ["broker.oost.example"]);
        assert_eq!(d.renew_seconds, 3600);
        gw.spec
            .registration
            .dsub
            .as_mut()
            .unwrap()
            .broker_client_names = vec!["not a name".into()];
        assert!(runtime_config(&gw, &[], Some(&m)).is_err());
        gw.spec.registration.dsub = None;
        // a MitzConnection naming something that is no DNS name: the rendered config is refused
        m.spec.notification_client_names = vec!["https://mitz".into()];
        assert!(runtime_config(&gw, &[], Some(&m)).is_err());
    }
}
