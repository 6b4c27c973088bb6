//! The runtime's configuration file: one YAML document per hospital connection.
//!
//! This type is the contract between the operator and the runtime: the operator renders exactly this
//! structure into the gateway's ConfigMap (`duo-operator` depends on this crate for it), and
//! `duo-gateway serve --config <file>` parses it. Field names are camelCase. Unknown fields are errors, so
//! a typo never silently falls back to a default.
//!
//! Errors: [`Config::load`] / [`Config::parse`] return a [`ConfigError`] whose message is one line naming
//! the field (`communities[1].queryUrl: ...`).

mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::{DataCategory, FacilityType, HomeCommunityId, PurposeOfUse, Ura};
use crate::pki::{CertificateIdentity, DistinguishedName, SpkiSha256};

pub use validate::{ConfigError, is_dns_name};

/// The whole runtime configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// The hospital (data holder and requester) this gateway acts for.
    pub organization: OrganizationConfig,
    /// Listeners, TLS identity and request limits.
    pub server: ServerConfig,
    /// The hospital's own community: where the responding gateway finds its data.
    pub local: LocalBackend,
    /// Remote communities the initiating gateway may query (other DUO gateways, TLB nodes).
    #[serde(default)]
    pub communities: Vec<RemoteCommunity>,
    /// Initiating-side behaviour: localisation and fan-out.
    #[serde(default)]
    pub initiating: InitiatingConfig,
    /// Consent checks at the responding side (Mitz closed question).
    pub consent: ConsentConfig,
    /// Mitz connection (closed question, open question, subscriptions). Required unless consent is
    /// `permitAll` and localisation is `allCommunities`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mitz: Option<MitzConfig>,
    /// Registration with Mitz as data holder (a FHIR Subscription per patient, so that localisation
    /// finds this hospital), and what triggers it. Default: off.
    #[serde(default)]
    pub registration: RegistrationConfig,
    /// Audit trail sinks (NEN 7513).
    #[serde(default)]
    pub audit: AuditConfig,
    /// ITI-40 XUA assertions: how the ones this gateway issues are signed, and how received ones are
    /// checked (the issuer trust lists are per community, `communities[].trustedIssuers`).
    #[serde(default)]
    pub xua: XuaConfig,
    /// Explicit opt-in to plain `http://` endpoints (a PACS on the same host, test set-ups). Default
    /// false: every endpoint must be `https://`.
    #[serde(default)]
    pub allow_plain_http: bool,
    /// TLS protocol versions of every connection the gateway accepts or makes (server listener, peers,
    /// local infrastructure, Mitz, the audit record repository).
    #[serde(default)]
    pub tls_policy: TlsPolicyConfig,
    /// Revocation checking (CRL, OCSP) of every certificate the gateway relies on: peers' client and
    /// server certificates, Mitz's server certificate, the trusted front end's and its own.
    #[serde(default)]
    pub revocation: RevocationConfig,
}

/// TLS versions, per the NCSC TLS guidelines the Dutch agreements refer to. Cipher suites are fixed
/// to the NCSC "good" set whatever the version: TLS 1.3's AEAD suites, and for TLS 1.2 only ECDHE key
/// exchange with AES-GCM or ChaCha20-Poly1305 (see `duo_runtime::tls`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsPolicyConfig {
    /// Lowest TLS version accepted and offered: `TLSv1.2` (default: TLS 1.3 and 1.2) or `TLSv1.3` (TLS
    /// 1.3 only, as the Twiin network agreement TW-LA-TA-001 asks).
    #[serde(default)]
    pub min_version: TlsVersion,
}

/// A TLS protocol version, spelt as OpenSSL and nginx spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
pub enum TlsVersion {
    /// TLS 1.2 (RFC 5246).
    #[default]
    #[serde(rename = "TLSv1.2")]
    Tls12,
    /// TLS 1.3 (RFC 8446).
    #[serde(rename = "TLSv1.3")]
    Tls13,
}

/// How certificates are checked for revocation (see `duo_runtime::revocation` for the rules in full).
///
/// A certificate's chain is first verified against the trust bundle; only then are the CRL
/// distribution points and the OCSP responder it names fetched (over plain HTTP, no redirects, bounded
/// in size and time), cached, and refreshed every `refreshIntervalSeconds` and when a CRL's nextUpdate
/// passes. A revoked certificate is refused at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevocationConfig {
    /// Whether certificates are checked at all (default true). `false` only for closed test beds.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Seconds between refreshes of every cached CRL and OCSP answer (default and most 3600: the Twiin
    /// agreement asks for a check at least every hour).
    #[serde(default = "default_refresh_seconds")]
    pub refresh_interval_seconds: u64,
    /// Seconds the last good CRL or OCSP answer stays usable after its nextUpdate when no newer one
    /// can be fetched (default 3600).
    #[serde(default = "default_grace_seconds")]
    pub grace_seconds: u64,
    /// What happens to a certificate whose revocation status cannot be established from usable data
    /// (none fetched, or the last good data is past nextUpdate plus the grace): `refuse` (default) or
    /// `accept`. Either way `duo_revocation_checks_total` counts it and a warning is logged.
    #[serde(default)]
    pub when_unavailable: RevocationFallback,
    /// What happens to a certificate that names no CRL distribution point and no OCSP responder and is
    /// not covered by a CRL of `crlUrls`: `accept` (default; counted as `unchecked`) or `refuse`.
    #[serde(default = "accept")]
    pub without_source: RevocationFallback,
    /// Whether the OCSP responder a certificate names is asked when no usable CRL covers it (default
    /// true). A response stapled by a server is always used.
    #[serde(default = "yes")]
    pub ocsp: bool,
    /// Extra CRLs (`http://` URLs), fetched from the start and on every refresh, for CAs whose
    /// certificates name no distribution point or whose CRL is published elsewhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crl_urls: Vec<String>,
    /// Milliseconds one CRL or OCSP fetch may take, connection included (default 5,000). A handshake
    /// that needs data not yet cached waits at most this long.
    #[serde(default = "default_fetch_timeout_ms")]
    pub fetch_timeout_ms: u64,
    /// Largest CRL accepted, bytes (default 32 MiB); a larger answer is abandoned.
    #[serde(default = "default_max_crl_bytes")]
    pub max_crl_bytes: u64,
}

/// See [`RevocationConfig::when_unavailable`] and [`RevocationConfig::without_source`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum RevocationFallback {
    /// Refuse the certificate (fail closed).
    #[default]
    Refuse,
    /// Accept the certificate, counted and logged (fail open).
    Accept,
}

fn accept() -> RevocationFallback {
    RevocationFallback::Accept
}
fn default_refresh_seconds() -> u64 {
    3600
}
fn default_grace_seconds() -> u64 {
    3600
}
fn default_fetch_timeout_ms() -> u64 {
    5_000
}
fn default_max_crl_bytes() -> u64 {
    32 * 1024 * 1024
}

impl Default for RevocationConfig {
    fn default() -> Self {
        RevocationConfig {
            enabled: true,
            refresh_interval_seconds: default_refresh_seconds(),
            grace_seconds: default_grace_seconds(),
            when_unavailable: RevocationFallback::Refuse,
            without_source: RevocationFallback::Accept,
            ocsp: true,
            crl_urls: Vec::new(),
            fetch_timeout_ms: default_fetch_timeout_ms(),
            max_crl_bytes: default_max_crl_bytes(),
        }
    }
}

/// The organisation this gateway serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrganizationConfig {
    /// URA (8 digits). Must equal the URA in the server certificate.
    pub ura: Ura,
    /// Display name.
    pub name: String,
    /// Zorgaanbiedercategorie of the hospital, e.g. `V6`.
    pub facility_type: FacilityType,
    /// homeCommunityId this gateway answers as (`urn:oid:...`).
    pub home_community_id: HomeCommunityId,
}

/// Listeners, TLS and limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerConfig {
    /// HTTPS listener for every SOAP and API endpoint (mutual TLS). Default `0.0.0.0:8443`.
    #[serde(default = "default_listen")]
    #[schemars(with = "String")]
    pub listen: SocketAddr,
    /// Plain-HTTP listener for `/healthz`, `/readyz` and `/metrics` only (kubelet probes and Prometheus
    /// cannot present a client certificate). Default `0.0.0.0:8080`.
    #[serde(default = "default_ops_listen")]
    #[schemars(with = "String")]
    pub ops_listen: SocketAddr,
    /// The hospital's TLS identity and trust.
    pub tls: TlsConfig,
    /// Limits on inbound requests.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Seconds between checks of the config and certificate files for changes (hot reload). Default 5.
    #[serde(default = "default_reload_seconds")]
    pub reload_interval_seconds: u64,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8443))
}
fn default_ops_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8080))
}
fn default_reload_seconds() -> u64 {
    5
}

/// PEM files of the hospital's identity (UZI server or PKIoverheid certificate) and its trust bundle.
///
/// The same certificate is the server certificate inbound and the client certificate outbound.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, PEM (leaf first).
    pub cert_file: PathBuf,
    /// Private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CA certificates, PEM, that peers' certificates must chain to (inbound client certificates and
    /// outbound server certificates).
    pub trust_bundle_file: PathBuf,
}

/// Bounds on what a peer can make the gateway parse (hostile input, see `ihe` and `xml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest SOAP request body in bytes (default 10 MiB). Retrieve responses relayed as MTOM are
    /// streamed and not bounded by this.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    /// Largest XML nesting depth (default 64).
    #[serde(default = "default_max_depth")]
    pub max_xml_depth: usize,
    /// Most XML elements in one message (default 2,000,000).
    #[serde(default = "default_max_elements")]
    pub max_xml_elements: usize,
    /// Largest inline (base64, non-MTOM) document accepted in a retrieve response, bytes (default
    /// 16 MiB). Such an answer is held in memory whole (the SOAP envelope before the documents can be
    /// relayed): its root may be 4/3 of this plus 64 KiB, and it must fit `maxBufferedAnswerBytes`.
    /// MTOM documents are streamed and not bounded by this.
    #[serde(default = "default_max_inline")]
    pub max_inline_document_bytes: u64,
    /// Most bytes of peers' answers the gateway holds in memory at once, across all requests
    /// (default 32 MiB): buffered root parts and plain SOAP answers with their inline documents, and the
    /// look-ahead of relayed retrieves. An answer whose root does not fit is refused at once and
    /// reported as that community's error; a look-ahead that does not fit stops early.
    #[serde(default = "default_max_buffered_answer")]
    pub max_buffered_answer_bytes: u64,
    /// Bytes of a retrieve answer read ahead before the first byte goes to a local consumer
    /// (ITI-43 / RAD-69, default 2 MiB per request): an answer that ends within it is checked whole,
    /// so its root lists exactly the documents delivered; a longer one streams on and reports a
    /// document that fails later in a final-status part (see `ihe::mtom::RetrieveResponseWriter`).
    #[serde(default = "default_retrieve_lookahead")]
    pub retrieve_lookahead_bytes: u64,
    /// Seconds a request may take end to end before the server answers with a fault (default 120).
    #[serde(default = "default_request_timeout")]
    pub request_timeout_seconds: u64,
    /// Most timeline queries (JSON API) in progress at once (default 64); one more is answered 503
    /// at once instead of queueing, so an overloaded gateway sheds load instead of growing its memory.
    #[serde(default = "default_max_timelines")]
    pub max_concurrent_timelines: usize,
}

fn default_max_timelines() -> usize {
    64
}

fn default_max_body() -> u64 {
    10 * 1024 * 1024
}
fn default_max_depth() -> usize {
    64
}
fn default_max_elements() -> usize {
    2_000_000
}
fn default_max_inline() -> u64 {
    16 * 1024 * 1024
}
fn default_max_buffered_answer() -> u64 {
    32 * 1024 * 1024
}
fn default_retrieve_lookahead() -> u64 {
    2 * 1024 * 1024
}
fn default_request_timeout() -> u64 {
    120
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: default_max_body(),
            max_xml_depth: default_max_depth(),
            max_xml_elements: default_max_elements(),
            max_inline_document_bytes: default_max_inline(),
            max_buffered_answer_bytes: default_max_buffered_answer(),
            retrieve_lookahead_bytes: default_retrieve_lookahead(),
            request_timeout_seconds: default_request_timeout(),
            max_concurrent_timelines: default_max_timelines(),
        }
    }
}

fn default_deadline_ms() -> u64 {
    10_000
}

/// The local infrastructure: an XDS-I.b affinity domain, a TLB node (remote XCA-I gateway) or a PACS
/// with DICOMweb.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum LocalBackend {
    /// XDS-I.b: registry (ITI-18), repositories (ITI-43), imaging document sources (RAD-69).
    Xds(XdsBackendConfig),
    /// A TLB node or other XCA-I responding gateway (ITI-38, ITI-39, RAD-75), optionally with DICOMweb.
    Xca(XcaBackendConfig),
    /// A PACS with DICOMweb (QIDO-RS, WADO-RS) only.
    Dicomweb(DicomwebBackendConfig),
}

/// Endpoints of an XDS-I.b affinity domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct XdsBackendConfig {
    /// Registry stored query endpoint (ITI-18).
    pub registry_url: String,
    /// Document repositories (ITI-43), by repositoryUniqueId.
    #[serde(default)]
    pub repositories: Vec<Endpoint>,
    /// Imaging document sources (RAD-69), by their unique id (the RepositoryUniqueId of RAD-69 requests).
    #[serde(default)]
    pub imaging_document_sources: Vec<Endpoint>,
    /// Milliseconds the gateway waits for this infrastructure per call (default 10,000).
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
}

/// A unique id (OID) and its URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    /// repositoryUniqueId / imaging document source id (OID).
    pub unique_id: String,
    /// SOAP endpoint URL.
    pub url: String,
}

/// Endpoints of a remote XCA-I responding gateway used as the local backend (a TLB node).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct XcaBackendConfig {
    /// The node's homeCommunityId, sent in ITI-38 `@home` and ITI-39/RAD-75 HomeCommunityId.
    pub home_community_id: HomeCommunityId,
    /// ITI-38 Cross Gateway Query endpoint.
    pub query_url: String,
    /// ITI-39 Cross Gateway Retrieve endpoint.
    pub retrieve_url: String,
    /// RAD-75 Cross Gateway Retrieve Imaging Document Set endpoint.
    pub imaging_retrieve_url: String,
    /// Optional DICOMweb base URL (QIDO-RS / WADO-RS) of the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dicomweb_url: Option<String>,
    /// Milliseconds the gateway waits for this infrastructure per call (default 10,000).
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
}

/// A DICOMweb PACS as the local backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DicomwebBackendConfig {
    /// Base URL of the DICOMweb service (QIDO-RS `{base}/studies`, WADO-RS `{base}/studies/{uid}/...`).
    pub base_url: String,
    /// The id this gateway presents as RepositoryUniqueId for the PACS's documents and instances (OID).
    pub repository_unique_id: String,
    /// Milliseconds the gateway waits for this infrastructure per call (default 10,000).
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
}

/// A remote community the initiating gateway may query: another DUO gateway or a TLB node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RemoteCommunity {
    /// The community's homeCommunityId.
    pub home_community_id: HomeCommunityId,
    /// Display name.
    pub name: String,
    /// Organisations whose data this community holds, and for which its gateway may speak as requester
    /// (a platform gateway serving several organisations).
    #[serde(default)]
    pub organizations: Vec<CommunityOrganization>,
    /// ITI-38 endpoint of its responding gateway.
    pub query_url: String,
    /// ITI-39 endpoint.
    pub retrieve_url: String,
    /// RAD-75 endpoint.
    pub imaging_retrieve_url: String,
    /// Host to connect to instead of the endpoints' own host (a DNS name or an IP address, no port): the
    /// connection goes to this host's addresses on the URL's port, while TLS still sends the URL's host
    /// as SNI and verifies the peer's certificate against it (as `curl --connect-to`). This lets a peer in
    /// the same cluster be reached through its Service (`duo-west.hospital-west.svc`) while its real UZI
    /// or PKIoverheid certificate names only its published host (`duo.west.example`). Absent: connect to
    /// the URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_to: Option<String>,
    /// URA in the community gateway's own certificate, when it is a UZI server certificate. Used to
    /// recognise the community when it calls this gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_ura: Option<Ura>,
    /// Issuer trust list: the IdPs (issuer name and certificates, as in the Technical Agreement's
    /// connection document) whose signed XUA assertions this gateway accepts from this community.
    /// Empty: no assertion of this community is accepted (unless `xua.allowUnsigned` and unsigned).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_issuers: Vec<TrustedIssuerConfig>,
    /// Milliseconds to wait for this community (default 10,000).
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
    /// The homeCommunityIds this community's responding gateway fronts besides its own (a platform such
    /// as a TLB node serving several hospitals; IHE CP-ITI-1301 Target Communities, Twiin consultation
    /// text, docs/DOMAIN.md "Target communities"). When Mitz names some of them, this community is asked
    /// once, with exactly the named ones in the ITI-38 `$targetCommunityIdList` parameter; documents it
    /// answers for any community outside its own id and the ids asked are left out. Empty (the default):
    /// it fronts only itself and is asked as before. An id may be fronted by one community only, and
    /// none may be another configured community's own id or this gateway's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fronted_communities: Vec<HomeCommunityId>,
}

impl RemoteCommunity {
    /// Whether this community's responding gateway answers for `home`: its own id or one it fronts.
    pub fn answers_for(&self, home: &HomeCommunityId) -> bool {
        &self.home_community_id == home || self.fronted_communities.contains(home)
    }
}

/// One IdP of a community's issuer trust list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrustedIssuerConfig {
    /// The `saml2:Issuer` value of its assertions (compared exactly), e.g. `urn:oid:<homeCommunityId>`.
    pub issuer: String,
    /// Its signing certificates, PEM (one or more `CERTIFICATE` blocks; several during a rollover). Only
    /// these keys are tried; each counts within its validity period.
    pub certificates: String,
}

/// ITI-40 XUA assertions: signing out, verification in (README "Trust model").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct XuaConfig {
    /// `saml2:Issuer` of the assertions this gateway issues (default: `organization.homeCommunityId`,
    /// `urn:oid:...`). Peers put it, with the signing certificate, in their issuer trust list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Key and certificate that sign them (default: `server.tls.certFile` / `keyFile`, the hospital's
    /// server certificate). A separate IdP key is allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<XuaSigningConfig>,
    /// Whether the assertion of the Mitz open question is signed (default true; Mitz's handbook is not
    /// public).
    #[serde(default = "yes")]
    pub sign_mitz_open_question: bool,
    /// Audiences a received assertion may be restricted to (default: `organization.homeCommunityId`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Clock difference tolerated on NotBefore / NotOnOrAfter, seconds (default 60, at most 300).
    #[serde(default = "default_clock_skew")]
    pub clock_skew_seconds: u64,
    /// Longest validity accepted, NotOnOrAfter minus NotBefore, seconds (default 600: Twiin's 10 minutes).
    #[serde(default = "default_max_lifetime")]
    pub max_lifetime_seconds: u64,
    /// Purposes of use accepted (default `[TREAT]`).
    #[serde(default = "default_purposes")]
    pub allowed_purposes_of_use: Vec<PurposeOfUse>,
    /// Accept requests whose assertion is unsigned, or that carry none (default false). Only for a
    /// conformance harness that cannot sign (NIST tools, zeep); shown as `duo_xua_unsigned_allowed 1`
    /// in `/metrics` and in the DuoGateway status. A signature that is present is always verified.
    #[serde(default)]
    pub allow_unsigned: bool,
}

/// The key pair that signs outbound assertions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct XuaSigningConfig {
    /// Certificate chain, PEM (leaf first); the leaf goes into every signature's KeyInfo.
    pub cert_file: PathBuf,
    /// Private key, PEM (PKCS#8, or PKCS#1 for RSA). RSA signs RSA-SHA256, EC P-256 ECDSA-SHA256.
    pub key_file: PathBuf,
}

fn default_clock_skew() -> u64 {
    60
}
fn default_max_lifetime() -> u64 {
    600
}
fn default_purposes() -> Vec<PurposeOfUse> {
    vec![PurposeOfUse::default()]
}

impl Default for XuaConfig {
    fn default() -> Self {
        XuaConfig {
            issuer: None,
            signing: None,
            sign_mitz_open_question: true,
            audiences: Vec::new(),
            clock_skew_seconds: default_clock_skew(),
            max_lifetime_seconds: default_max_lifetime(),
            allowed_purposes_of_use: default_purposes(),
            allow_unsigned: false,
        }
    }
}

impl Config {
    /// The `saml2:Issuer` this gateway writes (`xua.issuer`, default the homeCommunityId).
    pub fn xua_issuer(&self) -> String {
        self.xua
            .issuer
            .clone()
            .unwrap_or_else(|| self.organization.home_community_id.to_string())
    }

    /// The audiences a received assertion may name (`xua.audiences`, default the homeCommunityId).
    pub fn xua_audiences(&self) -> Vec<String> {
        if self.xua.audiences.is_empty() {
            vec![self.organization.home_community_id.to_string()]
        } else {
            self.xua.audiences.clone()
        }
    }

    /// The certificate and key files that sign outbound assertions (`xua.signing`, default `server.tls`).
    pub fn xua_signing_files(&self) -> (&Path, &Path) {
        match &self.xua.signing {
            Some(s) => (&s.cert_file, &s.key_file),
            None => (&self.server.tls.cert_file, &self.server.tls.key_file),
        }
    }
}

/// An organisation served by a community.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommunityOrganization {
    /// URA.
    pub ura: Ura,
    /// Display name.
    #[serde(default)]
    pub name: String,
}

/// How the initiating gateway chooses whom to ask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InitiatingConfig {
    /// Localisation mode.
    #[serde(default)]
    pub localization: LocalizationMode,
    /// Whether the hospital's own community is part of every timeline (default true).
    #[serde(default = "yes")]
    pub include_local: bool,
    /// Whether the timeline retrieves each study's KOS manifest to count series and instances and list
    /// the retrieve references (default true).
    #[serde(default = "yes")]
    pub manifest_details: bool,
    /// Trusted front ends: the client certificates (besides the hospital's own) that may use the
    /// initiating gateway and state the requester's identity in HTTP headers on the JSON API.
    #[serde(default)]
    pub trusted_front_end: TrustedFrontEnd,
    /// Whether a local ITI-18 / ITI-43 / RAD-69 request must carry an ITI-40 XUA assertion (default
    /// true). Without one there is no requester to state to other communities or to audit, so the
    /// request is refused. `false` only for a conformance harness that sends none (the NIST tools):
    /// then outbound requests carry no assertion and a consent-checking community discloses nothing.
    #[serde(default = "yes")]
    pub require_assertion: bool,
}

fn yes() -> bool {
    true
}

impl Default for InitiatingConfig {
    fn default() -> Self {
        InitiatingConfig {
            localization: LocalizationMode::default(),
            include_local: true,
            manifest_details: true,
            trusted_front_end: TrustedFrontEnd::default(),
            require_assertion: true,
        }
    }
}

/// `mitz`: ask Mitz's open question and query only the communities it names (the Twiin rule; the
/// default). `allCommunities`: ask every configured community (the proof-of-concept mode, before
/// localisation existed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum LocalizationMode {
    /// Open question to Mitz; no broadcast when Mitz cannot answer.
    #[default]
    Mitz,
    /// Every configured community.
    AllCommunities,
}

/// The front ends (EHR, viewer portal) allowed to use the initiating gateway: the JSON API (where they
/// state the requester in `X-DUO-*` headers) and the local SOAP routes (ITI-18, ITI-43, RAD-69). The
/// hospital's own certificate (its URA) may always use them.
///
/// A front end is recognised by its TLS client certificate, which must chain to
/// `server.tls.trustBundleFile` and match one entry of `certificates` (issue 12, defect 9: a DNS name
/// alone matched a certificate of any CA in the trust bundle that carried it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrustedFrontEnd {
    /// The front ends' client certificates, each by issuer and subject or by SPKI pin.
    #[serde(default)]
    pub certificates: Vec<FrontEndCertificate>,
    /// Removed: DNS names identified a front end by a name any CA in the trust bundle can put in a
    /// certificate. Kept only so that a configuration that still sets it is refused with the way to
    /// migrate ([`Config::validate`]); never matched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(skip)]
    pub certificate_dns_names: Vec<String>,
}

/// One trusted front-end certificate: **either** `issuer` and `subject` (both: the certificate must
/// have exactly these names) **or** `spkiSha256` (the certificate's public key), never both and never
/// one name alone. The pin survives a re-issue with the same key and binds to the key itself; issuer
/// and subject survive a key change but trust the issuing CA not to issue that subject twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FrontEndCertificate {
    /// Issuer distinguished name, RFC 4514 (`openssl x509 -noout -issuer -nameopt RFC2253`), e.g.
    /// `CN=UZI-register Private Server CA G1,O=CIBG,C=NL`. Compared RDN by RDN, values exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<DistinguishedName>,
    /// Subject distinguished name, RFC 4514 (`openssl x509 -noout -subject -nameopt RFC2253`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<DistinguishedName>,
    /// SHA-256 of the certificate's DER SubjectPublicKeyInfo, base64 (RFC 7469 `pin-sha256`):
    /// `openssl x509 -noout -pubkey | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary |
    /// base64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spki_sha256: Option<SpkiSha256>,
}

impl FrontEndCertificate {
    /// The entry that names this DER certificate by issuer and subject. Errors: not a certificate, or a
    /// name this module cannot read as text (pin such a certificate with [`FrontEndCertificate::pin_of`]).
    pub fn issuer_and_subject_of(der: &[u8]) -> Result<FrontEndCertificate, crate::pki::PkiError> {
        let id = crate::pki::certificate_identity(der)?;
        let unreadable =
            || crate::pki::PkiError::Certificate("a name holds a value that is not text".into());
        Ok(FrontEndCertificate {
            issuer: Some(id.issuer.ok_or_else(unreadable)?),
            subject: Some(id.subject.ok_or_else(unreadable)?),
            spki_sha256: None,
        })
    }

    /// The entry that pins this DER certificate's public key. Errors: not a certificate.
    pub fn pin_of(der: &[u8]) -> Result<FrontEndCertificate, crate::pki::PkiError> {
        Ok(FrontEndCertificate {
            issuer: None,
            subject: None,
            spki_sha256: Some(crate::pki::certificate_identity(der)?.spki_sha256),
        })
    }

    /// Whether a client certificate of this identity is this front end. An entry that sets neither
    /// form, or both (refused by validation), matches nothing.
    pub fn matches(&self, id: &CertificateIdentity) -> bool {
        match (&self.issuer, &self.subject, &self.spki_sha256) {
            (Some(i), Some(s), None) => {
                id.issuer.as_ref() == Some(i) && id.subject.as_ref() == Some(s)
            }
            (None, None, Some(p)) => &id.spki_sha256 == p,
            _ => false,
        }
    }
}

/// Consent enforcement at the responding side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsentConfig {
    /// `mitz` (default): ask the closed question, disclose only on Permit. `permitAll`: no check; only
    /// for test environments, visible in metrics and every audit record.
    #[serde(default)]
    pub mode: ConsentMode,
    /// Mitz data category asked for (default `GGC002`; which category imaging needs is not public).
    #[serde(default)]
    pub category: DataCategory,
    /// Purpose of use assumed when the requester's assertion states none (default `TREAT`).
    #[serde(default)]
    pub default_purpose_of_use: PurposeOfUse,
}

/// See [`ConsentConfig::mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum ConsentMode {
    /// Mitz closed question; fail closed.
    #[default]
    Mitz,
    /// No consent check (test environments only).
    PermitAll,
}

/// Mitz endpoints and credentials (the `MitzConnection` custom resource).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MitzConfig {
    /// Closed question endpoint, `{base}/geslotenautorisatievraag/xacml3`.
    pub closed_question_url: String,
    /// Open question endpoint, `{base}/openautorisatievraag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_question_url: Option<String>,
    /// Subscription endpoint, `{base}/abonnementen/fhir/Subscription`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_url: Option<String>,
    /// Client certificate and key (PKIoverheid or GZN), and the trust bundle for Mitz's server certificate.
    pub tls: TlsConfig,
    /// Milliseconds to wait for an answer (default 3,000). No answer in time means no consent.
    #[serde(default = "default_mitz_deadline")]
    pub deadline_ms: u64,
    /// Seconds a Permit or Deny decision is cached per (patient, requester organisation, role, category);
    /// 0 disables the cache (default 60). A consent notification from Mitz drops every cached decision
    /// of its patient at once.
    #[serde(default = "default_cache_seconds")]
    pub cache_seconds: u64,
    /// DNS names (subjectAltName dNSName) of Mitz's client certificate: only a client presenting one of
    /// them (on a chain the server's trust bundle accepts) may deliver consent notifications to
    /// `POST /mitz/notifications`. Empty: notifications are refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notification_client_names: Vec<String>,
}

/// Registration with Mitz as data holder (docs/DOMAIN.md "Registration"): for every patient whose data
/// this hospital holds, a FHIR `Subscription` (reason OTV) at `mitz.subscriptionUrl`, with the rest-hook
/// channel pointing at this gateway's notification endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistrationConfig {
    /// `off` (default): this gateway registers nothing (e.g. a TLB node that registers its hospitals
    /// itself). `mitz`: register through the triggers below, `POST /api/v1/registrations` and
    /// `duo-gateway mitz-register`.
    #[serde(default)]
    pub mode: RegistrationMode,
    /// The notification endpoint given to Mitz as the rest-hook channel: this gateway's published
    /// address with path `/mitz/notifications` (e.g. `https://duo.west.example/mitz/notifications`).
    /// Required when `mode` is `mitz`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_endpoint: Option<String>,
    /// The SourceSystem extension (`urn:oid:` id of the source system holding the data). Default: the
    /// organization's homeCommunityId.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_system: Option<HomeCommunityId>,
    /// Attempts per registration when Mitz answers 429, 5xx or not at all (default 5), with exponential
    /// backoff from 500 ms (capped at 30 s; a `Retry-After` of at most 30 s is honoured).
    #[serde(default = "default_registration_attempts")]
    pub max_attempts: u32,
    /// The DSUB trigger of an XDS hospital (IHE ITI TF-2b 3.52 Document Metadata Subscribe, 3.53
    /// Document Metadata Notify): subscribe at the affinity domain's notification broker and register
    /// the patient of every new DocumentEntry it notifies. `None` (default): no DSUB subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsub: Option<DsubConfig>,
}

/// `registration.dsub`: the ITI-52 subscription of this gateway (Document Metadata Subscriber and
/// Notification Recipient) at the affinity domain's Document Metadata Notification Broker.
///
/// The subscription is patient-independent (query `SubscriptionForPatientIndependentDocumentEntry`
/// of the DSUB extensions, `urn:uuid:742790e0-aba6-43d6-9f1f-e43ed9790b79`): every new DocumentEntry of
/// the affinity domain, which for an XDS hospital is its own registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DsubConfig {
    /// The broker's ITI-52 Document Metadata Subscribe endpoint (https unless `allowPlainHttp`).
    pub broker_url: String,
    /// This gateway's ITI-53 Notification Recipient endpoint as the broker reaches it: its published
    /// address with path `/dsub/notify` (e.g. `https://duo.west.example/dsub/notify`); the
    /// `wsnt:ConsumerReference` of the subscription.
    pub recipient_url: String,
    /// The DNS names (subjectAltName) of the broker's client certificate: a Notify is accepted only
    /// from a client certificate naming one of them (compared without case). At least one.
    pub broker_client_names: Vec<String>,
    /// The topic subscribed to (ITI TF-2b 3.52.4.1.2). Only `fullDocumentEntry`
    /// (`ihe:FullDocumentEntry`, the notification carries the DocumentEntry with its patientId) is
    /// supported: `ihe:MinimalDocumentEntry` carries only ObjectRefs, from which no patient can be
    /// read without a further query.
    #[serde(default)]
    pub topic: DsubTopic,
    /// Lifetime of a subscription, seconds (default 86400): sent as `wsnt:InitialTerminationTime`
    /// (now + this); the gateway subscribes anew after nine tenths of it, before the broker drops the
    /// old one (a notification received twice registers once). Between 60 and 31,536,000.
    #[serde(default = "default_dsub_renew_seconds")]
    pub renew_seconds: u64,
}

fn default_dsub_renew_seconds() -> u64 {
    86_400
}

/// See [`DsubConfig::topic`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum DsubTopic {
    /// `ihe:FullDocumentEntry`.
    #[default]
    FullDocumentEntry,
    /// `ihe:MinimalDocumentEntry` (refused by validation, see [`DsubConfig::topic`]).
    MinimalDocumentEntry,
}

fn default_registration_attempts() -> u32 {
    5
}

/// See [`RegistrationConfig::mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum RegistrationMode {
    /// No registration by this gateway.
    #[default]
    Off,
    /// This gateway registers its hospital's patients with Mitz.
    Mitz,
}

fn default_mitz_deadline() -> u64 {
    3_000
}
fn default_cache_seconds() -> u64 {
    60
}

/// Where audit records go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditConfig {
    /// JSON-lines sink: `stdout` (default) or a file path.
    #[serde(default = "default_audit_sink")]
    pub sink: String,
    /// IHE ATNA (ITI-20) over syslog RFC 5424 with TLS (RFC 5425), in addition to the JSON lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syslog: Option<SyslogConfig>,
}

fn default_audit_sink() -> String {
    "stdout".into()
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            sink: default_audit_sink(),
            syslog: None,
        }
    }
}

/// An audit record repository reachable over syslog TLS (RFC 5425).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyslogConfig {
    /// `host:port` of the syslog TLS listener.
    pub address: String,
    /// Server name to verify in its certificate (default: the host part of `address`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// CA bundle for the syslog server's certificate; the client presents the gateway's certificate.
    pub trust_bundle_file: PathBuf,
}

impl LocalBackend {
    /// Milliseconds the gateway waits for the local infrastructure per call.
    pub fn deadline_ms(&self) -> u64 {
        match self {
            LocalBackend::Xds(x) => x.deadline_ms,
            LocalBackend::Xca(x) => x.deadline_ms,
            LocalBackend::Dicomweb(x) => x.deadline_ms,
        }
    }
}

impl Config {
    /// Reads and validates a config file. Errors name the file and the field.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("", format!("cannot read {}: {e}", path.display())))?;
        Config::parse(&text)
    }

    /// Parses YAML text and validates it (see [`Config::validate`]).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut path = String::new();
        let parsed = serde_saphyr::with_deserializer_from_str(text, |de| {
            serde_path_to_error::deserialize::<_, Config>(de).map_err(|e| {
                path = e.path().to_string();
                e.into_inner()
            })
        });
        let config = parsed.map_err(|e| ConfigError::from_yaml(&path, e))?;
        config.validate()?;
        Ok(config)
    }

    /// Renders the YAML text the runtime parses (the operator writes this into the ConfigMap).
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self).expect("config serialises: plain data")
    }

    /// Semantic checks beyond the types: URLs, unique ids, Mitz present when needed. The first
    /// violation is returned, naming its field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate::validate(self)
    }
}

/// The largest root part (or plain SOAP answer) that can carry an inline document of `inline` bytes:
/// its base64 (4/3) plus 64 KiB for the envelope around it.
pub fn root_bytes_for_inline(inline: u64) -> usize {
    let inline = usize::try_from(inline).unwrap_or(usize::MAX);
    inline
        .saturating_add(inline.div_ceil(3))
        .saturating_add(64 * 1024)
}

/// Whether `url` may be fetched for revocation data: `http://`, a host, no whitespace or control
/// characters, at most 2,048 characters. https (a CRL server's own certificate would need checking
/// in turn) and LDAP distribution points are skipped.
pub fn is_fetchable_url(url: &str) -> bool {
    if url.len() > MAX_FETCH_URL_LEN || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let Some(rest) = url
        .get(..7)
        .filter(|s| s.eq_ignore_ascii_case("http://"))
        .map(|_| &url[7..])
    else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    !authority.is_empty() && !authority.contains('@') && url.parse::<http::Uri>().is_ok()
}

/// Longest revocation URL fetched, characters.
pub const MAX_FETCH_URL_LEN: usize = 2048;
