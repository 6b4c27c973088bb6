//! The custom resources: `DuoGateway`, `DuoCommunity` and `MitzConnection` (group
//! `duo.beeldbeschikbaarheid.nl`, version `v1alpha1`).
//!
//! Field values are plain strings in the Rust types: the API server checks their shape with CEL rules
//! (URA 8 digits, `urn:oid:` homeCommunityIds, http(s) URLs, enums), and the operator's validate step
//! parses them into the runtime's domain types. An object that slipped past the schema therefore still
//! deserialises, and the operator can say in its status what is wrong instead of failing to read it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every DUO resource.
pub const GROUP: &str = "duo.beeldbeschikbaarheid.nl";
/// Annotation that pauses reconciliation of a DuoGateway while it is `"true"` (any case: `True`, `TRUE`
/// too): children stay as they are. Any other value, or no annotation, reconciles.
pub const PAUSED_ANNOTATION: &str = "duo.beeldbeschikbaarheid.nl/paused";

/// Whether `gw` carries [`PAUSED_ANNOTATION`] with the value `true`, case-insensitively.
pub fn is_paused(gw: &DuoGateway) -> bool {
    use kube::ResourceExt;
    gw.annotations()
        .get(PAUSED_ANNOTATION)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}
/// Label on a DuoCommunity that the operator published for a DuoGateway (value: the gateway's name).
pub const PUBLISHED_BY_LABEL: &str = "duo.beeldbeschikbaarheid.nl/published-by";

// --- schema helpers: CEL rules the API server enforces -------------------------------------------

fn ura_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "maxLength": 8,
        "x-kubernetes-validations": [
            {"rule": "self.matches('^[0-9]{8}$')", "message": "must be a URA: exactly 8 digits"}
        ]
    })
}

fn home_community_id_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "maxLength": 64,
        "x-kubernetes-validations": [
            {"rule": "self.matches('^urn:oid:[0-2](\\\\.(0|[1-9][0-9]*))+$')",
             "message": "must be a homeCommunityId: urn:oid: followed by a dotted-decimal OID, at most 64 characters"}
        ]
    })
}

fn home_community_ids_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": 100,
        "x-kubernetes-list-type": "set",
        "items": {
            "type": "string",
            "maxLength": 64,
            "x-kubernetes-validations": [
                {"rule": "self.matches('^urn:oid:[0-2](\\\\.(0|[1-9][0-9]*))+$')",
                 "message": "must be a homeCommunityId: urn:oid: followed by a dotted-decimal OID, at most 64 characters"}
            ]
        }
    })
}

fn oid_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "maxLength": 128,
        "x-kubernetes-validations": [
            {"rule": "self.matches('^[0-2](\\\\.(0|[1-9][0-9]*))+$')", "message": "must be a dotted-decimal OID"}
        ]
    })
}

fn url_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "maxLength": 2048,
        "x-kubernetes-validations": [
            {"rule": "isURL(self) && (self.startsWith('https://') || self.startsWith('http://'))",
             "message": "must be an absolute https:// URL (http:// only with allowPlainHttp)"}
        ]
    })
}

fn opt_url_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    url_schema(g)
}

fn crl_urls_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": 32,
        "items": {
            "type": "string",
            "maxLength": 2048,
            "x-kubernetes-validations": [
                {"rule": "isURL(self) && self.startsWith('http://')",
                 "message": "must be an absolute http:// URL (CRLs are signed and fetched over plain http)"}
            ]
        }
    })
}

fn code_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "maxLength": 32,
        "x-kubernetes-validations": [
            {"rule": "self.matches('^[A-Za-z0-9._-]+$')", "message": "must be a code: letters, digits, '.', '-' or '_'"}
        ]
    })
}

fn name_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "minLength": 1, "maxLength": 253})
}

fn default_replicas() -> i32 {
    2
}
fn default_deadline_ms() -> i64 {
    10_000
}
fn default_mitz_deadline_ms() -> i64 {
    3_000
}
fn default_cache_seconds() -> i64 {
    60
}
fn default_true() -> bool {
    true
}
fn default_ca_key() -> String {
    "ca.crt".into()
}

// --- DuoGateway -----------------------------------------------------------------------------------

/// One hospital connection: the organisation, its local infrastructure (XDS-I.b affinity domain or TLB
/// node), consent and localisation via Mitz, its TLS identity, and which communities it may query. The
/// operator runs a `duo-gateway` Deployment for it and publishes it as a DuoCommunity.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "duo.beeldbeschikbaarheid.nl",
    version = "v1alpha1",
    kind = "DuoGateway",
    doc = "One hospital connection (kubectl explain duogateway.spec): the organisation (URA, name, facility type, homeCommunityId), its local infrastructure (connection.xds: an XDS-I.b affinity domain; or connection.tlb: a TLB node), consent and localisation through a MitzConnection (or permitAll / allCommunities for tests), the Secret with its TLS certificate and key, and which DuoCommunities it may query (communities.selector). The operator runs a duo-gateway Deployment for it and publishes it as a DuoCommunity.",
    plural = "duogateways",
    singular = "duogateway",
    shortname = "dgw",
    namespaced,
    status = "DuoGatewayStatus",
    category = "duo",
    printcolumn = r#"{"name":"URA","type":"string","jsonPath":".spec.organization.ura","description":"URA of the hospital"}"#,
    printcolumn = r#"{"name":"Connection","type":"string","jsonPath":".status.connectionKind","description":"Local infrastructure: xds or tlb"}"#,
    printcolumn = r#"{"name":"Localization","type":"string","jsonPath":".spec.localization","priority":1,"description":"mitz or allCommunities"}"#,
    printcolumn = r#"{"name":"Consent","type":"string","jsonPath":".status.consentMode","description":"mitz or permitAll"}"#,
    printcolumn = r#"{"name":"Peers","type":"integer","jsonPath":".status.communities","description":"DuoCommunities in the applied configuration"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason","description":"Why Ready is what it is (Available, RollingOut, SecretMissing, ...)"}"#,
    printcolumn = r#"{"name":"Paused","type":"string","jsonPath":".metadata.annotations.duo\\.beeldbeschikbaarheid\\.nl/paused","priority":1,"description":"The pause annotation"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = kube::core::Rule::new("size(self.metadata.name) <= 50").message("metadata.name must be at most 50 characters (child names add a suffix)"),
)]
#[x_kube(
    validation = kube::core::Rule::new("(has(self.allowPlainHttp) && self.allowPlainHttp) || !has(self.connection.xds) || (self.connection.xds.registryUrl.startsWith('https://') && (!has(self.connection.xds.repositories) || self.connection.xds.repositories.all(r, r.url.startsWith('https://'))) && (!has(self.connection.xds.imagingDocumentSources) || self.connection.xds.imagingDocumentSources.all(r, r.url.startsWith('https://'))))").message("connection.xds endpoints must be https:// unless allowPlainHttp is true"),
    validation = kube::core::Rule::new("(has(self.allowPlainHttp) && self.allowPlainHttp) || !has(self.connection.tlb) || (self.connection.tlb.queryUrl.startsWith('https://') && self.connection.tlb.retrieveUrl.startsWith('https://') && self.connection.tlb.imagingRetrieveUrl.startsWith('https://') && (!has(self.connection.tlb.dicomwebUrl) || self.connection.tlb.dicomwebUrl.startsWith('https://')))").message("connection.tlb endpoints must be https:// unless allowPlainHttp is true"),
    validation = kube::core::Rule::new("has(self.mitz) || (has(self.consent) && has(self.consent.mode) && self.consent.mode == 'permitAll' && has(self.localization) && self.localization == 'allCommunities')").message("mitz is required unless consent.mode is permitAll and localization is allCommunities"),
)]
#[serde(rename_all = "camelCase")]
pub struct DuoGatewaySpec {
    /// The hospital this gateway acts for (data holder and requester).
    pub organization: GatewayOrganization,
    /// The hospital's own community: exactly one of `xds` (an XDS-I.b affinity domain) or `tlb` (a TLB
    /// node reached over XCA-I).
    pub connection: Connection,
    /// Mitz connection used for the closed question (consent) and the open question (localisation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mitz: Option<MitzRef>,
    /// Consent enforcement at the responding side.
    #[serde(default)]
    pub consent: Consent,
    /// How the initiating side chooses which communities to ask: `mitz` asks Mitz's open question and
    /// queries only the communities it names (the Twiin rule); `allCommunities` asks every selected
    /// community (the proof-of-concept mode). Shown in status and in the operator's metrics.
    #[serde(default)]
    pub localization: Localization,
    /// Front ends (EHR, viewer portal) whose TLS client certificates may use the gateway's initiating
    /// side: the JSON timeline API (stating the professional in `X-DUO-*` headers) and the local SOAP
    /// routes. Each certificate by `issuer` and `subject`, or by `spkiSha256`. The hospital's own
    /// certificate may always use them. Never by DNS name: any CA in the trust bundle can issue one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub trusted_front_ends: Vec<TrustedFrontEnd>,
    /// The hospital's TLS identity (UZI server certificate) and the CAs its peers' certificates chain to.
    pub tls: GatewayTls,
    /// Which DuoCommunity resources this gateway may query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub communities: Option<CommunitySelection>,
    /// How this gateway is published as a DuoCommunity for other gateways in the cluster.
    #[serde(default)]
    pub publish: Publish,
    /// Registration with Mitz as data holder (a FHIR Subscription per patient, so that Mitz's open
    /// question names this hospital; Mitz then delivers the patient's consent changes to the gateway's
    /// `/mitz/notifications` at `https://<publish.address>`). Default: off (e.g. a TLB hospital whose
    /// node registers itself). `mitz` needs `publish.address`, and the MitzConnection's `subscriptionUrl`
    /// and `notificationClientNames`.
    #[serde(default)]
    pub registration: Registration,
    /// Number of gateway pods (default 2). A PodDisruptionBudget is created when greater than 1.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 50))]
    pub replicas: i32,
    /// Compute resources of the gateway container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Container image override (default: the operator's `--gateway-image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// Where and how the gateway pods run: image pull Secrets, node selection, tolerations, affinity,
    /// topology spread, priority, and extra pod labels and annotations. Everything is optional; by
    /// default the pods only get a preferred anti-affinity over nodes when more than one replica runs.
    #[serde(default)]
    pub workload: Workload,
    /// The gateway's Service (`duo-<name>`): its type (default `ClusterIP`), annotations (e.g. for a
    /// cloud load balancer), the source ranges a load balancer admits and its external traffic policy.
    #[serde(default)]
    pub service: GatewayService,
    /// Explicit opt-in to plain `http://` endpoints (test set-ups). Default false.
    #[serde(default)]
    pub allow_plain_http: bool,
    /// TLS versions of the gateway's listener and outbound connections.
    #[serde(default)]
    pub tls_policy: TlsPolicy,
    /// Revocation checking (CRL, OCSP) of peers', Mitz's, the front end's and the gateway's own
    /// certificates. The operator also checks the gateway's own certificate and reports it in the
    /// `CertificateRevoked` condition.
    #[serde(default)]
    pub revocation: Revocation,
    /// ITI-40 XUA assertions: who signs the ones this gateway issues, what it accepts from peers.
    #[serde(default)]
    pub xua: GatewayXua,
}

/// Label keys the operator sets on the gateway's pods (the first two select them for the Deployment,
/// Service, PodDisruptionBudget and NetworkPolicy): `spec.workload.podLabels` may not set them.
pub const RESERVED_POD_LABELS: [&str; 4] = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
];
/// Prefix of the annotations the operator sets on the pod template (the configuration checksum that
/// rolls the pods): `spec.workload.podAnnotations` may not use it.
pub const RESERVED_ANNOTATION_PREFIX: &str = "duo.beeldbeschikbaarheid.nl/";

fn pod_labels_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 64,
        "additionalProperties": {"type": "string", "maxLength": 63},
        "x-kubernetes-validations": [
            {"rule": "!('app.kubernetes.io/name' in self) && !('app.kubernetes.io/instance' in self) && !('app.kubernetes.io/managed-by' in self) && !('app.kubernetes.io/part-of' in self)",
             "message": "podLabels may not set app.kubernetes.io/name, app.kubernetes.io/instance, app.kubernetes.io/managed-by or app.kubernetes.io/part-of: the operator sets them, and the first two select the gateway's pods"}
        ]
    })
}

fn pod_annotations_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 64,
        "additionalProperties": {"type": "string", "maxLength": 4096},
        "x-kubernetes-validations": [
            {"rule": "self.all(k, !k.startsWith('duo.beeldbeschikbaarheid.nl/'))",
             "message": "podAnnotations may not use the prefix duo.beeldbeschikbaarheid.nl/: the operator's own annotations (the configuration checksum) use it"}
        ]
    })
}

fn node_selector_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 32,
        "additionalProperties": {"type": "string", "maxLength": 63}
    })
}

fn service_annotations_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 64,
        "additionalProperties": {"type": "string", "maxLength": 4096}
    })
}

fn source_ranges_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": 128,
        "items": {"type": "string", "maxLength": 64}
    })
}

fn opt_priority_class_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "minLength": 1,
        "maxLength": 253,
        "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
    })
}

/// Where and how the gateway's pods run (`spec.workload`). Each field is copied into the Deployment's
/// pod template under the same Kubernetes name; the API server checks the embedded Kubernetes types
/// when the operator applies the Deployment (a value it refuses is reported as `ApplyFailed`, and
/// nothing is changed).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    /// Secrets (type `kubernetes.io/dockerconfigjson`, in the gateway's namespace) with the credentials
    /// for a private registry holding the gateway image: the pod's `imagePullSecrets`, e.g.
    /// `[{name: regcred}]`. At most 16.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Node labels a node must carry to run the gateway (the pod's `nodeSelector`), e.g.
    /// `{kubernetes.io/os: linux, node-role.example/dmz: "true"}`. At most 32 entries.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "node_selector_schema")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the gateway pods tolerate (the pod's `tolerations`), e.g. `[{key: dedicated, operator:
    /// Equal, value: duo, effect: NoSchedule}]`. At most 32.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub tolerations: Vec<Toleration>,
    /// Node affinity, pod affinity and pod anti-affinity (the pod's `affinity`), used as given. Without
    /// a `podAntiAffinity` and with more than one replica, the operator adds a preferred (weight 100)
    /// anti-affinity over `kubernetes.io/hostname` for the gateway's own pods, so that one node's loss
    /// does not take every replica; preferred, so a single-node cluster still runs them all. Give
    /// `podAntiAffinity: {}` to have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// How the pods spread over zones or nodes (the pod's `topologySpreadConstraints`), e.g.
    /// `[{maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway}]`.
    /// A constraint without `labelSelector` gets the gateway's pod selector labels. At most 8.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// Extra annotations on the gateway pods (e.g. for a service mesh or a log collector). At most 64,
    /// values up to 4096 characters; the prefix `duo.beeldbeschikbaarheid.nl/` is the operator's and
    /// refused. A change rolls the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "pod_annotations_schema")]
    pub pod_annotations: BTreeMap<String, String>,
    /// Extra labels on the gateway pods. At most 64, values up to 63 characters (Kubernetes label
    /// syntax). The operator's own labels (`app.kubernetes.io/name`, `instance`, `managed-by`,
    /// `part-of`) are refused: the first two select the pods. A change rolls the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "pod_labels_schema")]
    pub pod_labels: BTreeMap<String, String>,
    /// Name of a PriorityClass for the gateway pods (the pod's `priorityClassName`), so that they are
    /// not the first evicted under pressure. Default: none (the cluster's default priority).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "opt_priority_class_schema")]
    pub priority_class_name: Option<String>,
}

/// The gateway's Service (`spec.service`). Peers must reach the gateway's port 8443 with mutual TLS end
/// to end: expose it with `LoadBalancer` (or `NodePort`), or with an Ingress / Gateway API route in TLS
/// passthrough, never one that terminates TLS.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(
    validation = kube::core::Rule::new("!has(self.externalTrafficPolicy) || (has(self.type) && self.type != 'ClusterIP')").message("service.externalTrafficPolicy may only be set when service.type is NodePort or LoadBalancer (the API server refuses it on a ClusterIP Service)"),
    validation = kube::core::Rule::new("!has(self.loadBalancerSourceRanges) || size(self.loadBalancerSourceRanges) == 0 || (has(self.type) && self.type == 'LoadBalancer')").message("service.loadBalancerSourceRanges may only be set when service.type is LoadBalancer"),
)]
#[serde(rename_all = "camelCase")]
pub struct GatewayService {
    /// `ClusterIP` (default: reachable inside the cluster only), `NodePort` (also on a port of every
    /// node) or `LoadBalancer` (also through the cloud's or MetalLB's load balancer, for peers outside
    /// the cluster).
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Annotations on the Service, e.g. for a cloud load balancer
    /// (`service.beta.kubernetes.io/azure-load-balancer-internal: "true"`). At most 64, values up to
    /// 4096 characters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "service_annotations_schema")]
    pub annotations: BTreeMap<String, String>,
    /// CIDRs the load balancer admits (the Service's `loadBalancerSourceRanges`), e.g. the peers'
    /// egress ranges `["192.0.2.0/24", "2001:db8::/48"]`; only with `type: LoadBalancer`, and only
    /// where the load balancer implements it. At most 128. Default: every source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "source_ranges_schema")]
    pub load_balancer_source_ranges: Vec<String>,
    /// `Cluster` (Kubernetes' default: any node forwards, the client address is lost) or `Local`
    /// (only nodes running a gateway pod receive traffic and the client address is kept, for
    /// `loadBalancerSourceRanges` and audit); only with `type` `NodePort` or `LoadBalancer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_traffic_policy: Option<ExternalTrafficPolicy>,
}

/// The Service's `type`: `ClusterIP` (default), `NodePort` or `LoadBalancer` (see [`GatewayService`]).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum ServiceType {
    /// A cluster-internal virtual IP.
    #[default]
    ClusterIP,
    /// The cluster IP and a port on every node.
    NodePort,
    /// The node port and an external load balancer.
    LoadBalancer,
}

impl ServiceType {
    /// The Service's `spec.type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// How traffic from outside the cluster reaches the gateway pods (the Service's
/// `externalTrafficPolicy`): `Cluster` (Kubernetes' default: any node forwards, the client address is
/// lost) or `Local` (only nodes running a gateway pod receive traffic and the client address is kept,
/// for `loadBalancerSourceRanges` and audit). Only with `type` `NodePort` or `LoadBalancer`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ExternalTrafficPolicy {
    /// Any node forwards to any pod.
    Cluster,
    /// Only nodes with a gateway pod; the client's address is kept.
    Local,
}

impl ExternalTrafficPolicy {
    /// The Service's `spec.externalTrafficPolicy` value.
    pub fn as_str(self) -> &'static str {
        match self {
            ExternalTrafficPolicy::Cluster => "Cluster",
            ExternalTrafficPolicy::Local => "Local",
        }
    }
}

/// XUA assertion signing and verification (README "Trust model").
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayXua {
    /// `saml2:Issuer` of the assertions this gateway issues (default: its homeCommunityId). Published,
    /// with the signing certificate, in the gateway's DuoCommunity (`trust.issuers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub issuer: Option<String>,
    /// Name of a `kubernetes.io/tls` Secret with a separate IdP signing key and certificate (RSA, or EC
    /// P-256 in PKCS#8). Default: `spec.tls.secretName`, the hospital's server certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "opt_name_schema")]
    pub signing_secret_name: Option<String>,
    /// Whether the assertion of the Mitz open question is signed (default true).
    #[serde(default = "yes")]
    pub sign_mitz_open_question: bool,
    /// Audiences a received assertion may be restricted to (default: the homeCommunityId).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub audiences: Vec<String>,
    /// Clock skew tolerated on NotBefore / NotOnOrAfter, seconds (default 60).
    #[serde(default = "default_clock_skew")]
    #[schemars(range(min = 0, max = 300))]
    pub clock_skew_seconds: i64,
    /// Longest assertion validity accepted, seconds (default 600, Twiin's 10 minutes).
    #[serde(default = "default_max_lifetime")]
    #[schemars(range(min = 1, max = 86400))]
    pub max_lifetime_seconds: i64,
    /// Purposes of use accepted (default `[TREAT]`).
    #[serde(default = "default_purposes")]
    #[schemars(length(min = 1, max = 20))]
    pub allowed_purposes_of_use: Vec<String>,
    /// Accept unsigned or absent assertions from peers (default false): only for a conformance
    /// harness. Shown in status (`xua.unsignedAllowed`) and the gateway's `/metrics`.
    #[serde(default)]
    pub allow_unsigned: bool,
}

fn yes() -> bool {
    true
}
fn default_clock_skew() -> i64 {
    60
}
fn default_max_lifetime() -> i64 {
    600
}
fn default_purposes() -> Vec<String> {
    vec!["TREAT".into()]
}

fn opt_name_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    name_schema(g)
}

impl Default for GatewayXua {
    fn default() -> Self {
        GatewayXua {
            issuer: None,
            signing_secret_name: None,
            sign_mitz_open_question: true,
            audiences: Vec::new(),
            clock_skew_seconds: default_clock_skew(),
            max_lifetime_seconds: default_max_lifetime(),
            allowed_purposes_of_use: default_purposes(),
            allow_unsigned: false,
        }
    }
}

/// TLS versions (NCSC TLS guidelines; cipher suites are fixed to the NCSC "good" set).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct TlsPolicy {
    /// `TLSv1.2` (default: TLS 1.3 and 1.2) or `TLSv1.3` (TLS 1.3 only, Twiin TW-LA-TA-001).
    #[serde(default)]
    pub min_version: TlsMinVersion,
}

/// See [`TlsPolicy::min_version`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum TlsMinVersion {
    /// TLS 1.3 and 1.2.
    #[default]
    #[serde(rename = "TLSv1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[serde(rename = "TLSv1.3")]
    Tls13,
}

/// Revocation checking; the runtime's `revocation` section (see the README for the rules).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Revocation {
    /// Check certificates for revocation (default true). `false` only for closed test beds.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Seconds between refreshes of cached CRLs and OCSP answers (default and most 3600).
    #[serde(default = "default_refresh_seconds")]
    #[schemars(range(min = 1, max = 3600))]
    pub refresh_interval_seconds: i64,
    /// Seconds the last good CRL or OCSP answer stays usable after its nextUpdate (default 3600).
    #[serde(default = "default_grace_seconds")]
    #[schemars(range(min = 0, max = 604800))]
    pub grace_seconds: i64,
    /// A certificate without usable revocation data: `refuse` (default) or `accept` (counted, logged).
    #[serde(default)]
    pub when_unavailable: RevocationFallback,
    /// A certificate that names no CRL and no OCSP responder: `accept` (default) or `refuse`.
    #[serde(default = "accept")]
    pub without_source: RevocationFallback,
    /// Ask the OCSP responder a certificate names when no usable CRL covers it (default true).
    #[serde(default = "default_true")]
    pub ocsp: bool,
    /// Extra CRLs (`http://` URLs) for CAs whose certificates name no distribution point.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crl_urls_schema")]
    pub crl_urls: Vec<String>,
    /// Milliseconds one CRL or OCSP fetch may take (default 5000).
    #[serde(default = "default_fetch_timeout_ms")]
    #[schemars(range(min = 100, max = 60000))]
    pub fetch_timeout_ms: i64,
}

impl Default for Revocation {
    fn default() -> Self {
        Revocation {
            enabled: true,
            refresh_interval_seconds: default_refresh_seconds(),
            grace_seconds: default_grace_seconds(),
            when_unavailable: RevocationFallback::Refuse,
            without_source: RevocationFallback::Accept,
            ocsp: true,
            crl_urls: Vec::new(),
            fetch_timeout_ms: default_fetch_timeout_ms(),
        }
    }
}

/// See [`Revocation::when_unavailable`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum RevocationFallback {
    /// Refuse the certificate.
    #[default]
    Refuse,
    /// Accept it (counted and logged).
    Accept,
}

fn accept() -> RevocationFallback {
    RevocationFallback::Accept
}
fn default_refresh_seconds() -> i64 {
    3600
}
fn default_grace_seconds() -> i64 {
    3600
}
fn default_fetch_timeout_ms() -> i64 {
    5000
}

/// One trusted front-end certificate: either `issuer` and `subject`, or `spkiSha256`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = kube::core::Rule::new("(has(self.issuer) && has(self.subject) && !has(self.spkiSha256)) || (!has(self.issuer) && !has(self.subject) && has(self.spkiSha256))").message("set issuer and subject, or spkiSha256: not both, and never a name alone"))]
#[serde(rename_all = "camelCase")]
pub struct TrustedFrontEnd {
    /// Issuer distinguished name in RFC 4514 form, as `openssl x509 -noout -issuer -nameopt RFC2253`
    /// prints it (most specific RDN first), e.g. `CN=UZI-register Private Server CA G1,O=CIBG,C=NL`.
    /// Compared RDN by RDN, values exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub issuer: Option<String>,
    /// Subject distinguished name in RFC 4514 form (`openssl x509 -noout -subject -nameopt RFC2253`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub subject: Option<String>,
    /// SHA-256 of the certificate's DER SubjectPublicKeyInfo, base64 (44 characters): `openssl x509
    /// -noout -pubkey | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[A-Za-z0-9+/]{43}=$"))]
    pub spki_sha256: Option<String>,
}

/// The organisation a gateway serves.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayOrganization {
    /// URA (UZI register subscriber number, 8 digits). Must equal the URA in the TLS certificate.
    #[schemars(schema_with = "ura_schema")]
    pub ura: String,
    /// Display name of the hospital.
    #[schemars(length(min = 1, max = 200))]
    pub name: String,
    /// Zorgaanbiedercategorie (code system 2.16.840.1.113883.2.4.15.1060), e.g. `V6` general hospital.
    #[schemars(schema_with = "code_schema")]
    pub facility_type: String,
    /// homeCommunityId this gateway answers as, `urn:oid:<OID>`.
    #[schemars(schema_with = "home_community_id_schema")]
    pub home_community_id: String,
}

/// The local infrastructure: set exactly one of `xds` or `tlb`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = kube::core::Rule::new("has(self.xds) != has(self.tlb)").message("set exactly one of connection.xds or connection.tlb"))]
#[serde(rename_all = "camelCase")]
pub struct Connection {
    /// An XDS-I.b affinity domain: registry (ITI-18), repositories (ITI-43), imaging document sources (RAD-69).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xds: Option<XdsConnection>,
    /// A TLB node (Twiin) reached over XCA-I: ITI-38, ITI-39, RAD-75, optionally DICOMweb.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tlb: Option<TlbConnection>,
}

/// Which kind of local infrastructure a connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionKind {
    /// XDS-I.b affinity domain.
    Xds,
    /// TLB node.
    Tlb,
}

impl ConnectionKind {
    /// `xds` or `tlb`, as shown in status and printer columns.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionKind::Xds => "xds",
            ConnectionKind::Tlb => "tlb",
        }
    }
}

impl Connection {
    /// The kind set, `None` when neither or both are set (the CEL rule forbids both cases).
    pub fn kind(&self) -> Option<ConnectionKind> {
        match (&self.xds, &self.tlb) {
            (Some(_), None) => Some(ConnectionKind::Xds),
            (None, Some(_)) => Some(ConnectionKind::Tlb),
            _ => None,
        }
    }
}

/// Endpoints of an XDS-I.b affinity domain.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct XdsConnection {
    /// Registry Stored Query endpoint (ITI-18).
    #[schemars(schema_with = "url_schema")]
    pub registry_url: String,
    /// Document repositories (ITI-43), by repositoryUniqueId.
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub repositories: Vec<UniqueEndpoint>,
    /// Imaging document sources (RAD-69), by their unique id.
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub imaging_document_sources: Vec<UniqueEndpoint>,
    /// Milliseconds to wait for this infrastructure per call (default 10000).
    #[serde(default = "default_deadline_ms")]
    #[schemars(range(min = 1, max = 600000))]
    pub deadline_ms: i64,
}

/// A unique id (OID) and its SOAP endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UniqueEndpoint {
    /// repositoryUniqueId or imaging document source id (dotted-decimal OID).
    #[schemars(schema_with = "oid_schema")]
    pub unique_id: String,
    /// SOAP endpoint URL.
    #[schemars(schema_with = "url_schema")]
    pub url: String,
}

/// Endpoints of a TLB node (remote XCA-I responding gateway).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlbConnection {
    /// The TLB node's homeCommunityId, `urn:oid:<OID>`.
    #[schemars(schema_with = "home_community_id_schema")]
    pub home_community_id: String,
    /// ITI-38 Cross Gateway Query endpoint.
    #[schemars(schema_with = "url_schema")]
    pub query_url: String,
    /// ITI-39 Cross Gateway Retrieve endpoint.
    #[schemars(schema_with = "url_schema")]
    pub retrieve_url: String,
    /// RAD-75 Cross Gateway Retrieve Imaging Document Set endpoint.
    #[schemars(schema_with = "url_schema")]
    pub imaging_retrieve_url: String,
    /// Optional DICOMweb base URL (QIDO-RS / WADO-RS) of the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "opt_url_schema")]
    pub dicomweb_url: Option<String>,
    /// Milliseconds to wait for the node per call (default 10000).
    #[serde(default = "default_deadline_ms")]
    #[schemars(range(min = 1, max = 600000))]
    pub deadline_ms: i64,
}

/// Reference to a MitzConnection in the gateway's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MitzRef {
    /// Name of the MitzConnection.
    #[schemars(schema_with = "name_schema")]
    pub connection_name: String,
}

/// Consent enforcement (Mitz closed question) at the responding side.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Consent {
    /// `mitz` (default): ask the closed question and disclose only on Permit. `permitAll`: no check, for
    /// test environments only; visible in status, metrics and every audit record.
    #[serde(default)]
    pub mode: ConsentMode,
    /// Mitz data category (gegevenscategorie, code system 2.16.840.1.113883.2.4.3.111.5.10.1) asked for,
    /// default `GGC002`. Which category imaging needs is not public.
    #[serde(default = "default_category")]
    #[schemars(schema_with = "code_schema")]
    pub category: String,
}

fn default_category() -> String {
    "GGC002".into()
}

impl Default for Consent {
    fn default() -> Self {
        Consent {
            mode: ConsentMode::default(),
            category: default_category(),
        }
    }
}

/// See [`Consent::mode`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum ConsentMode {
    /// Mitz closed question; fail closed.
    #[default]
    Mitz,
    /// No consent check (test environments only).
    PermitAll,
}

/// See [`DuoGatewaySpec::localization`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum Localization {
    /// Mitz open question; query only the communities Mitz names; no broadcast when Mitz cannot answer.
    #[default]
    Mitz,
    /// Query every selected community.
    AllCommunities,
}

impl Localization {
    /// `mitz` or `allCommunities`.
    pub fn as_str(self) -> &'static str {
        match self {
            Localization::Mitz => "mitz",
            Localization::AllCommunities => "allCommunities",
        }
    }
}

/// TLS identity and trust of a gateway.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayTls {
    /// Name of a `kubernetes.io/tls` Secret (keys `tls.crt`, `tls.key`) holding the hospital's UZI server
    /// certificate chain and key. The certificate's URA must equal `organization.ura`.
    #[schemars(schema_with = "name_schema")]
    pub secret_name: String,
    /// CA certificates (PEM) that peers' certificates must chain to.
    pub trust_bundle: TrustBundleRef,
}

/// A PEM bundle of CA certificates in a ConfigMap or a Secret: set exactly one.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = kube::core::Rule::new("has(self.configMap) != has(self.secret)").message("set exactly one of configMap or secret"))]
#[serde(rename_all = "camelCase")]
pub struct TrustBundleRef {
    /// A key of a ConfigMap in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<KeyRef>,
    /// A key of a Secret in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<KeyRef>,
}

/// A key in a ConfigMap or Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyRef {
    /// Name of the ConfigMap or Secret.
    #[schemars(schema_with = "name_schema")]
    pub name: String,
    /// Key holding the PEM bundle (default `ca.crt`).
    #[serde(default = "default_ca_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Which DuoCommunity resources a gateway may query.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommunitySelection {
    /// Label selector over DuoCommunity resources; an empty selector selects all of them.
    pub selector: LabelSelector,
    /// Namespaces to look in (default: the gateway's own namespace). When the operator watches some
    /// namespaces only (`--watch-namespaces`), one outside them is reported in `CommunitiesSkipped`
    /// (reason `NamespaceNotWatched`): its DuoCommunities cannot be seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub namespaces: Option<Vec<String>>,
}

/// Registration with Mitz as data holder (see [`DuoGatewaySpec::registration`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    /// `off` (default) or `mitz`.
    #[serde(default)]
    pub mode: RegistrationMode,
    /// The SourceSystem of each registration (`urn:oid:` id of the system holding the data). Default: the
    /// gateway's homeCommunityId.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_system: Option<String>,
    /// Attempts per registration when Mitz answers 429, 5xx or not at all (default 5).
    #[serde(default = "default_registration_attempts")]
    #[schemars(range(min = 1, max = 20))]
    pub max_attempts: i32,
    /// XDS hospitals: register each patient when the affinity domain's DSUB notification broker notifies
    /// a new DocumentEntry (ITI-52 subscription; ITI-53 Notify at `https://<publish.address>/dsub/notify`,
    /// acknowledged only after Mitz accepted). Absent: no DSUB trigger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsub: Option<RegistrationDsub>,
}

/// The DSUB trigger of a DuoGateway's registration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationDsub {
    /// The broker's ITI-52 Document Metadata Subscribe endpoint.
    pub broker_url: String,
    /// DNS names (subjectAltName) of the broker's client certificate: only it may deliver a Notify.
    #[schemars(length(min = 1, max = 16))]
    pub broker_client_names: Vec<String>,
    /// Lifetime of a subscription in seconds (default 86400); renewed after nine tenths of it.
    #[serde(default = "default_dsub_renew_seconds")]
    #[schemars(range(min = 60, max = 31536000))]
    pub renew_seconds: i64,
}

fn default_dsub_renew_seconds() -> i64 {
    86_400
}

fn default_registration_attempts() -> i32 {
    5
}

impl Default for Registration {
    fn default() -> Self {
        Registration {
            mode: RegistrationMode::default(),
            source_system: None,
            max_attempts: default_registration_attempts(),
            dsub: None,
        }
    }
}

/// See [`Registration::mode`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum RegistrationMode {
    /// The gateway registers nothing.
    #[default]
    Off,
    /// The gateway registers its hospital's patients with Mitz.
    Mitz,
}

/// How a gateway is published as a DuoCommunity.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Publish {
    /// Publish this gateway as a DuoCommunity named like the gateway (default true). A hand-written
    /// DuoCommunity of that name is never overwritten.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Labels put on the published DuoCommunity, so that other gateways' selectors can match it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The address peers reach this gateway at: `host` or `host:port` (default port 443), e.g.
    /// `duo.oost.example`. The published DuoCommunity's endpoints are `https://<address>/...`, and its
    /// `endpoints.connectTo` is this gateway's Service, so that gateways in the cluster connect to the
    /// Service while verifying the certificate against `host`; the Service also listens on the port. The
    /// TLS certificate must name `host` (a dNSName, a `*.` wildcard for its parent domain counts);
    /// otherwise the spec is refused (`CertificateNameMismatch`). Peers outside the cluster reach the
    /// address through a LoadBalancer Service or a TLS-passthrough Ingress / Gateway route (README
    /// "Exposing a gateway"). Default: the Service's own name, `duo-<name>.<namespace>.svc:8443`, which
    /// only a certificate issued for that name passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "opt_address_schema")]
    pub address: Option<String>,
}

impl Default for Publish {
    fn default() -> Self {
        Publish {
            enabled: true,
            labels: BTreeMap::new(),
            address: None,
        }
    }
}

fn opt_address_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "maxLength": 259,
        "x-kubernetes-validations": [
            {"rule": "self.matches('^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\\\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*(:[1-9][0-9]{0,4})?$')",
             "message": "must be a host name, optionally with :port (e.g. duo.oost.example or duo.oost.example:8443)"}
        ]
    })
}

fn opt_host_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "maxLength": 253,
        "x-kubernetes-validations": [
            {"rule": "self.matches('^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$') || isIP(self)",
             "message": "must be a host name or IP address, without scheme, port or path"}
        ]
    })
}

/// Observed state of a DuoGateway.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DuoGatewayStatus {
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (children applied from the current spec and the Deployment available), `Progressing`
    /// (a rollout is under way), `Degraded` (the current spec cannot be applied; the last good children
    /// keep running), `CertificateExpiring` (30 days or less left) and `CertificateRevoked` (the
    /// certificate's CRL or OCSP responder says it is revoked; `Unknown` when that cannot be found out) and
    /// `CommunitiesSkipped` (selected DuoCommunities left out of the configuration: invalid, or with a
    /// homeCommunityId that is the gateway's own or another selected community's, or in a namespace the
    /// operator does not watch; the message names each).
    #[serde(default)]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// `xds` or `tlb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_kind: Option<String>,
    /// The localisation mode in force (`mitz` or `allCommunities`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub localization: Option<String>,
    /// The consent mode in force (`mitz` or `permitAll`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_mode: Option<String>,
    /// The registration mode in force (`mitz`: the gateway registers its patients with Mitz; `off`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_mode: Option<String>,
    /// Pods of the Deployment that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Number of DuoCommunity resources resolved into the runtime configuration.
    #[serde(default)]
    pub communities: i32,
    /// The TLS certificate in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateStatus>,
    /// SHA-256 of the applied configuration and certificates (the pod template's checksum annotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_checksum: Option<String>,
    /// XUA trust in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xua: Option<XuaStatus>,
}

/// XUA trust in force (from the applied configuration).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct XuaStatus {
    /// The issuer of this gateway's assertions.
    pub issuer: String,
    /// The certificate that signs them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_certificate: Option<CertificateStatus>,
    /// Trusted issuers over all resolved communities.
    #[serde(default)]
    pub trusted_issuers: i32,
    /// True when unsigned or absent assertions are accepted (`spec.xua.allowUnsigned`, conformance
    /// harness only).
    #[serde(default)]
    pub unsigned_allowed: bool,
}

/// What the operator read from a certificate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStatus {
    /// End of validity, RFC 3339.
    pub not_after: String,
    /// URA found in the certificate (UZI server certificate), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ura: Option<String>,
    /// Subject distinguished name.
    #[serde(default)]
    pub subject: String,
}

// --- DuoCommunity ---------------------------------------------------------------------------------

/// A remote community that gateways may query: another DUO gateway (in or outside the cluster) or a TLB
/// node. The operator also creates one for every DuoGateway (label `duo.beeldbeschikbaarheid.nl/published-by`).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "duo.beeldbeschikbaarheid.nl",
    version = "v1alpha1",
    kind = "DuoCommunity",
    doc = "A community that gateways may query: another DUO gateway (in or outside the cluster) or a TLB node, with its homeCommunityId, organisations (URA), ITI-38 / ITI-39 / RAD-75 endpoints and the trust for its certificates. The operator publishes one for every DuoGateway (label duo.beeldbeschikbaarheid.nl/published-by).",
    plural = "duocommunities",
    singular = "duocommunity",
    shortname = "dcom",
    namespaced,
    category = "duo",
    printcolumn = r#"{"name":"Community","type":"string","jsonPath":".spec.homeCommunityId"}"#,
    printcolumn = r#"{"name":"Display name","type":"string","jsonPath":".spec.name"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = kube::core::Rule::new("(has(self.allowPlainHttp) && self.allowPlainHttp) || (self.endpoints.queryUrl.startsWith('https://') && self.endpoints.retrieveUrl.startsWith('https://') && self.endpoints.imagingRetrieveUrl.startsWith('https://'))").message("endpoints must be https:// unless allowPlainHttp is true"),
)]
#[serde(rename_all = "camelCase")]
pub struct DuoCommunitySpec {
    /// The community's homeCommunityId, `urn:oid:<OID>`.
    #[schemars(schema_with = "home_community_id_schema")]
    pub home_community_id: String,
    /// Display name.
    #[schemars(length(min = 1, max = 200))]
    pub name: String,
    /// Organisations whose data this community holds and for which its gateway may speak as requester.
    #[serde(default)]
    #[schemars(length(max = 500))]
    pub organizations: Vec<CommunityOrganization>,
    /// Endpoints of the community's responding gateway.
    pub endpoints: CommunityEndpoints,
    /// How this community's gateway is recognised when it calls.
    #[serde(default)]
    pub trust: CommunityTrust,
    /// Milliseconds to wait for this community per call (default 10000).
    #[serde(default = "default_deadline_ms")]
    #[schemars(range(min = 1, max = 600000))]
    pub deadline_ms: i64,
    /// Explicit opt-in to plain `http://` endpoints (test set-ups). Default false. Only gateways that
    /// set `allowPlainHttp` themselves use such a community; the others leave it out and say so.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_plain_http: bool,
    /// The homeCommunityIds this community's responding gateway fronts besides its own (a platform such
    /// as a TLB node serving several hospitals; IHE CP-ITI-1301 Target Communities). When Mitz names
    /// some of them, the community is asked once with exactly those in the ITI-38
    /// `$targetCommunityIdList`. Empty (the default): it fronts only itself. A community that fronts
    /// another selected community's homeCommunityId or the gateway's own is left out; of two fronting
    /// one id, the one that would win a homeCommunityId (published, own namespace, older) is kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "home_community_ids_schema")]
    pub fronted_communities: Vec<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// An organisation served by a community.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommunityOrganization {
    /// URA (8 digits).
    #[schemars(schema_with = "ura_schema")]
    pub ura: String,
    /// Display name.
    #[serde(default)]
    #[schemars(length(max = 200))]
    pub name: String,
}

/// The responding gateway's endpoints.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommunityEndpoints {
    /// ITI-38 Cross Gateway Query.
    #[schemars(schema_with = "url_schema")]
    pub query_url: String,
    /// ITI-39 Cross Gateway Retrieve.
    #[schemars(schema_with = "url_schema")]
    pub retrieve_url: String,
    /// RAD-75 Cross Gateway Retrieve Imaging Document Set.
    #[schemars(schema_with = "url_schema")]
    pub imaging_retrieve_url: String,
    /// Host to connect to instead of the URLs' host (a DNS name or IP address, no port), e.g. the
    /// peer's Service `duo-west.hospital-west.svc`: connections go to its addresses on the URL's port,
    /// while TLS still verifies the peer's certificate against the URL's host (as `curl
    /// --connect-to`). The operator sets it on published DuoCommunities (`spec.publish.address`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "opt_host_schema")]
    pub connect_to: Option<String>,
}

/// Identity of the community's gateway. Its certificate must chain to the querying gateway's trust bundle.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct CommunityTrust {
    /// URA in the community gateway's UZI server certificate, used to recognise it when it calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "opt_ura_schema")]
    pub certificate_ura: Option<String>,
    /// Its XUA issuer trust list (the connection document's IdP issuer and PEM): the only signers whose
    /// assertions gateways accept from this community. A published DuoCommunity carries its gateway's
    /// own issuer and signing certificate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub issuers: Vec<CommunityIssuer>,
}

/// One IdP of a community: the `saml2:Issuer` value and its signing certificates.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommunityIssuer {
    /// The `saml2:Issuer` value, compared exactly.
    #[schemars(length(min = 1, max = 512))]
    pub issuer: String,
    /// PEM, one or more `CERTIFICATE` blocks (several during a key rollover).
    #[schemars(length(min = 1, max = 65536))]
    pub certificates: String,
}

fn opt_ura_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    ura_schema(g)
}

// --- MitzConnection -------------------------------------------------------------------------------

/// Connection to Mitz, the national consent register: closed question (consent), open question
/// (localisation) and subscription endpoints, the client certificate and the trust for Mitz's server.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "duo.beeldbeschikbaarheid.nl",
    version = "v1alpha1",
    kind = "MitzConnection",
    doc = "A connection to Mitz, the national consent register: the closed question (consent), open question (localisation) and subscription URLs, the Secret with the client certificate, the trust bundle for Mitz's server, the deadline and the cache time. DuoGateways name it in spec.mitz.",
    plural = "mitzconnections",
    singular = "mitzconnection",
    shortname = "mitz",
    namespaced,
    category = "duo",
    status = "MitzConnectionStatus",
    validation = kube::core::Rule::new("(has(self.spec.allowPlainHttp) && self.spec.allowPlainHttp) || (self.spec.closedQuestionUrl.startsWith('https://') && (!has(self.spec.openQuestionUrl) || self.spec.openQuestionUrl.startsWith('https://')) && (!has(self.spec.subscriptionUrl) || self.spec.subscriptionUrl.startsWith('https://')))").message("Mitz endpoints must be https:// unless spec.allowPlainHttp is true"),
    printcolumn = r#"{"name":"Closed question","type":"string","jsonPath":".spec.closedQuestionUrl","priority":1}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MitzConnectionSpec {
    /// Closed question endpoint, `{base}/geslotenautorisatievraag/xacml3`.
    #[schemars(schema_with = "url_schema")]
    pub closed_question_url: String,
    /// Open question endpoint, `{base}/openautorisatievraag` (required for localization `mitz`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "opt_url_schema")]
    pub open_question_url: Option<String>,
    /// Subscription endpoint, `{base}/abonnementen/fhir/Subscription`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "opt_url_schema")]
    pub subscription_url: Option<String>,
    /// Name of a `kubernetes.io/tls` Secret with the client certificate (PKIoverheid or GZN) and key.
    #[schemars(schema_with = "name_schema")]
    pub client_certificate_secret_name: String,
    /// CA certificates (PEM) Mitz's server certificate must chain to.
    pub trust_bundle: TrustBundleRef,
    /// Milliseconds to wait for an answer (default 3000); no answer in time means no consent.
    #[serde(default = "default_mitz_deadline_ms")]
    #[schemars(range(min = 1, max = 60000))]
    pub deadline_ms: i64,
    /// Seconds a Permit or Deny is cached per (patient, requester organisation, role, category);
    /// 0 disables the cache (default 60).
    #[serde(default = "default_cache_seconds")]
    #[schemars(range(min = 0, max = 3600))]
    pub cache_seconds: i64,
    /// DNS names (subjectAltName) of Mitz's client certificate: only a client presenting one of them may
    /// deliver consent notifications to a gateway's `/mitz/notifications`. Empty (default): notifications
    /// are refused, and cached decisions expire only after `cacheSeconds`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub notification_client_names: Vec<String>,
    /// Explicit opt-in to plain `http://` endpoints (test set-ups). Default false. Gateways without
    /// `allowPlainHttp` of their own still refuse an http:// Mitz.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_plain_http: bool,
    /// Extra CRLs (`http://` URLs) for the CA of Mitz's server certificate, when its certificate names
    /// none; added to the `revocation.crlUrls` of every gateway using this connection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crl_urls_schema")]
    pub crl_urls: Vec<String>,
}

impl MitzConnectionSpec {
    /// The first endpoint that is plain `http://` although `allowPlainHttp` is not set, as
    /// `(field, url)`; `None` when every endpoint is acceptable.
    pub fn plain_http_endpoint(&self) -> Option<(&'static str, &str)> {
        if self.allow_plain_http {
            return None;
        }
        [
            (
                "spec.closedQuestionUrl",
                Some(self.closed_question_url.as_str()),
            ),
            ("spec.openQuestionUrl", self.open_question_url.as_deref()),
            ("spec.subscriptionUrl", self.subscription_url.as_deref()),
        ]
        .into_iter()
        .find_map(|(f, u)| {
            u.filter(|u| !u.to_ascii_lowercase().starts_with("https://"))
                .map(|u| (f, u))
        })
    }
}

impl MitzConnectionSpec {
    /// The first endpoint whose host is a name reserved for documentation and examples (RFC 2606: the
    /// `.example` and `.invalid` top-level domains, `example.com`, `example.net`, `example.org` and
    /// their subdomains), as `(field, url)`: a placeholder copied from an example, which is never Mitz.
    pub fn placeholder_endpoint(&self) -> Option<(&'static str, &str)> {
        [
            (
                "spec.closedQuestionUrl",
                Some(self.closed_question_url.as_str()),
            ),
            ("spec.openQuestionUrl", self.open_question_url.as_deref()),
            ("spec.subscriptionUrl", self.subscription_url.as_deref()),
        ]
        .into_iter()
        .find_map(|(f, u)| {
            u.filter(|u| is_placeholder_host(url_host(u)))
                .map(|u| (f, u))
        })
    }
}

/// The host of an absolute URL (without userinfo, port or a trailing dot), lower case; empty when there
/// is none.
fn url_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host_port.starts_with('[') {
        host_port
            .split(']')
            .next()
            .unwrap_or("")
            .trim_start_matches('[')
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn is_placeholder_host(host: String) -> bool {
    let under = |d: &str| host == d || host.ends_with(&format!(".{d}"));
    [
        "example",
        "invalid",
        "example.com",
        "example.net",
        "example.org",
    ]
    .into_iter()
    .any(under)
}

/// Observed state of a MitzConnection.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MitzConnectionStatus {
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: the client certificate Secret and trust bundle are present and valid.
    #[serde(default)]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The client certificate in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn conditions_are_a_map_keyed_by_type() {
        let crd = serde_json::to_value(DuoGateway::crd()).unwrap();
        let cond = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
            ["properties"]["conditions"];
        assert_eq!(cond["x-kubernetes-list-type"], "map", "{cond}");
        assert_eq!(cond["x-kubernetes-list-map-keys"][0], "type");
    }

    #[test]
    fn schema_carries_cel_rules_and_descriptions() {
        let text = serde_json::to_string(&DuoGateway::crd()).unwrap();
        assert!(text.contains("must be a URA: exactly 8 digits"));
        assert!(text.contains("set exactly one of connection.xds or connection.tlb"));
        let crd = serde_json::to_value(DuoGateway::crd()).unwrap();
        let ura = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
            ["organization"]["properties"]["ura"];
        assert!(
            ura["description"]
                .as_str()
                .unwrap_or("")
                .contains("8 digits"),
            "{ura}"
        );
    }
}
