//! The reconcilers: fetch → validate → build → apply → status for DuoGateway, and a status-only
//! reconciler for MitzConnection.
//!
//! A spec that cannot be applied (missing Secret, bad certificate, URA mismatch, invalid configuration)
//! sets `Degraded=True` / `Ready=False` with the reason and applies nothing, so the last good children
//! keep running. Status is written with server-side apply only when it changed, and the controller
//! ignores events that change neither generation, annotations nor finalizers, so the operator's own
//! status writes cause no work.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use duo_core::pki::CertificateInfo;
use jiff::Timestamp;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::build::{self, FIELD_MANAGER};
use crate::condition::{ConditionStatus, ConditionType, Reason};
use crate::crd::{
    CertificateStatus, DuoCommunity, DuoGateway, DuoGatewayStatus, MitzConnection,
    MitzConnectionStatus, PAUSED_ANNOTATION, TrustBundleRef, XuaStatus,
};
use crate::metrics::{Metrics, ModeLabels};
use crate::validate::{self, CertProblem, OwnRevocation};

/// The wire string of [`ConditionType::CommunitiesSkipped`] (kept for the integration tests and other
/// readers of the status).
pub const COMMUNITIES_SKIPPED: &str = ConditionType::CommunitiesSkipped.as_str();

/// Finalizer on every DuoGateway: its children are deleted before the gateway goes.
pub const FINALIZER: &str = "duo.beeldbeschikbaarheid.nl/cleanup";

/// Errors that make a reconciliation retry (API failures). Spec problems are not errors: they are
/// reported in status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The finalizer helper failed (adding/removing the finalizer or the cleanup).
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// The object lacks namespace or uid (never for objects read from the API server).
    #[error("object without {0}")]
    Incomplete(&'static str),
}

impl Error {
    /// Short class for the error metric.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Finalizer(_) => "finalizer",
            Error::Incomplete(_) => "incomplete",
        }
    }
}

/// Shared state of the reconcilers.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Operator metrics.
    pub metrics: Arc<Metrics>,
    /// Event recorder.
    pub recorder: Recorder,
    /// Default gateway image (`--gateway-image`).
    pub gateway_image: String,
    /// Every DuoCommunity the operator sees (reflector store).
    pub communities: Store<DuoCommunity>,
    /// Every MitzConnection the operator sees (reflector store).
    pub mitz: Store<MitzConnection>,
    /// The namespaces the operator watches (`--watch-namespaces`); the stores hold only their objects.
    pub scope: crate::scope::Scope,
    /// Per gateway (`namespace/name`): digest of the children last applied and when. An unchanged
    /// digest skips the server-side apply calls (most reconciliations are triggered by peers and change
    /// nothing); after [`APPLY_REFRESH`] the children are applied again anyway, which corrects drift.
    pub applied: std::sync::Mutex<std::collections::HashMap<String, (String, Instant)>>,
    /// Per gateway (`namespace/name`): the revocation checker of its `revocation` configuration, kept
    /// between reconciliations so that its CRL / OCSP cache and background refresh survive; replaced
    /// when the configuration changes, dropped when the gateway is deleted.
    pub revocation:
        std::sync::Mutex<std::collections::HashMap<String, duo_trust::revocation::Checker>>,
    /// Most gateways whose pods roll at once because the operator's default image changed
    /// (`--max-concurrent-rollouts`; 0: no cap). Changes of a gateway's own spec are never held back.
    pub rollout_cap: std::sync::atomic::AtomicUsize,
    /// Gateways (`namespace/name`) whose Deployment is rolling out, as last seen; also the gate that
    /// makes the cap's check-and-apply one step across concurrent reconciliations.
    pub rollouts: tokio::sync::Mutex<BTreeMap<String, Instant>>,
}

/// How long a rollout counts against the cap at most: one that has not finished by then (a Deployment
/// that cannot become available, e.g. a nodeSelector no node matches) no longer holds back the others.
/// Deployment's own default `progressDeadlineSeconds` is 600.
pub const ROLLOUT_SLOT: Duration = Duration::from_secs(600);

/// Default of `--max-concurrent-rollouts`.
pub const DEFAULT_MAX_CONCURRENT_ROLLOUTS: usize = 2;

/// How long an applied set of children is trusted before it is applied again although unchanged.
pub const APPLY_REFRESH: Duration = Duration::from_secs(600);

/// A spec problem: the reason of the `Degraded=True` / `Ready=False` conditions (a MitzConnection's
/// `Ready=False`) and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Why (`SecretMissing`, `CertificateExpired`, `InvalidSpec`, ...: the "spec that cannot be
    /// applied" group of [`Reason`]).
    pub reason: Reason,
    /// One line for people.
    pub message: String,
}

fn problem(reason: Reason, message: impl Into<String>) -> Problem {
    Problem {
        reason,
        message: message.into(),
    }
}

/// Everything built from a valid spec, ready to apply.
struct Prepared {
    config_yaml: String,
    config: duo_core::config::Config,
    checksum: String,
    mitz: Option<MitzConnection>,
    certificate: CertificateInfo,
    revocation: OwnRevocation,
    communities: usize,
    skipped: Vec<build::SkippedCommunity>,
    xua: XuaStatus,
    /// The validated certificate material, `(key of the material Secret, bytes)`.
    material: Vec<(&'static str, Vec<u8>)>,
    /// PEM of the leaf that signs the gateway's XUA assertions, for the published DuoCommunity.
    signing_pem: Option<String>,
}

/// What a reconciliation did, for the status.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Children applied from the current spec.
    Applied {
        /// The hospital's certificate.
        certificate: Box<CertificateInfo>,
        /// Its revocation status (the `CertificateRevoked` condition).
        revocation: OwnRevocation,
        /// Communities in the rendered configuration.
        communities: i32,
        /// Checksum on the pod template.
        checksum: String,
        /// Selected communities left out of the configuration, and why.
        skipped: Vec<build::SkippedCommunity>,
        /// XUA trust in force.
        xua: Option<Box<XuaStatus>>,
        /// Why a new operator image was held back by the rollout cap (`Progressing=True`,
        /// `RolloutQueued`); `None` when nothing waits.
        rollout_queued: Option<String>,
    },
    /// The spec cannot be applied; nothing was changed.
    Degraded(Problem),
    /// Reconciliation is paused by annotation.
    Paused,
}

/// `tls.crt` and `tls.key` of a `kubernetes.io/tls` Secret, read with one GET.
async fn tls_pair(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
) -> Result<Result<(Vec<u8>, Vec<u8>), Problem>, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let Some(secret) = api.get_opt(name).await? else {
        return Ok(Err(problem(
            Reason::SecretMissing,
            format!("{what}: Secret {name:?} not found"),
        )));
    };
    let get = |key: &str| match secret.data.as_ref().and_then(|d| d.get(key)) {
        Some(v) if !v.0.is_empty() => Ok(v.0.clone()),
        _ => Err(problem(
            Reason::SecretIncomplete,
            format!("{what}: Secret {name:?} has no key {key:?}"),
        )),
    };
    Ok(get("tls.crt").and_then(|c| get("tls.key").map(|k| (c, k))))
}

async fn secret_key(
    client: &Client,
    ns: &str,
    name: &str,
    key: &str,
    what: &str,
) -> Result<Result<Vec<u8>, Problem>, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let Some(secret) = api.get_opt(name).await? else {
        return Ok(Err(problem(
            Reason::SecretMissing,
            format!("{what}: Secret {name:?} not found"),
        )));
    };
    match secret.data.as_ref().and_then(|d| d.get(key)) {
        Some(v) if !v.0.is_empty() => Ok(Ok(v.0.clone())),
        _ => Ok(Err(problem(
            Reason::SecretIncomplete,
            format!("{what}: Secret {name:?} has no key {key:?}"),
        ))),
    }
}

async fn trust_bundle(
    client: &Client,
    ns: &str,
    r: &TrustBundleRef,
    what: &str,
) -> Result<Result<Vec<u8>, Problem>, Error> {
    let bytes = match (&r.config_map, &r.secret) {
        (Some(cm), None) => {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
            let Some(map) = api.get_opt(&cm.name).await? else {
                return Ok(Err(problem(
                    Reason::TrustBundleMissing,
                    format!("{what}: ConfigMap {:?} not found", cm.name),
                )));
            };
            match map.data.as_ref().and_then(|d| d.get(&cm.key)) {
                Some(v) => v.as_bytes().to_vec(),
                None => {
                    return Ok(Err(problem(
                        Reason::TrustBundleMissing,
                        format!("{what}: ConfigMap {:?} has no key {:?}", cm.name, cm.key),
                    )));
                }
            }
        }
        (None, Some(s)) => match secret_key(client, ns, &s.name, &s.key, what).await? {
            Ok(b) => b,
            Err(p) => return Ok(Err(problem(Reason::TrustBundleMissing, p.message))),
        },
        _ => {
            return Ok(Err(problem(
                Reason::InvalidSpec,
                format!("{what}: set exactly one of configMap or secret"),
            )));
        }
    };
    Ok(validate::check_trust_bundle(&bytes)
        .map(|_| bytes)
        .map_err(|e| problem(Reason::TrustBundleInvalid, format!("{what}: {e}"))))
}

macro_rules! try_problem {
    ($e:expr) => {
        match $e? {
            Ok(v) => v,
            Err(p) => return Ok(Err(p)),
        }
    };
}

fn cert_problem(what: &str, e: CertProblem) -> Problem {
    problem(e.reason(), format!("{what}: {e}"))
}

/// The DuoCommunities `gw` selects, sorted by namespace and name.
pub fn selected_communities(
    gw: &DuoGateway,
    all: &[Arc<DuoCommunity>],
) -> Result<Vec<DuoCommunity>, Problem> {
    let Some(sel) = &gw.spec.communities else {
        return Ok(Vec::new());
    };
    let selector: Selector = sel.selector.clone().try_into().map_err(|e| {
        problem(
            Reason::InvalidSpec,
            format!("spec.communities.selector: {e}"),
        )
    })?;
    let own_ns = gw.namespace().unwrap_or_default();
    let namespaces = sel.namespaces.clone().unwrap_or_else(|| vec![own_ns]);
    let mut out: Vec<DuoCommunity> = all
        .iter()
        .filter(|c| c.meta().deletion_timestamp.is_none())
        .filter(|c| c.namespace().is_some_and(|ns| namespaces.contains(&ns)))
        .filter(|c| selector.matches(c.labels()))
        .map(|c| (**c).clone())
        .collect();
    out.sort_by_key(|c| (c.namespace(), c.name_any()));
    Ok(out)
}

/// Several problems found at once, as one: the first one's reason, every message joined with "; ", so
/// that a user fixes every missing prerequisite in one go instead of one per reconciliation.
fn combine(problems: Vec<Problem>) -> Option<Problem> {
    let reason = problems.first()?.reason;
    let message = problems
        .iter()
        .map(|p| p.message.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    Some(problem(reason, message))
}

/// `Some(v)` for a found value; a problem goes into `problems` and gives `None`.
fn found<T>(r: Result<T, Problem>, problems: &mut Vec<Problem>) -> Option<T> {
    r.map_err(|p| problems.push(p)).ok()
}

/// Fetch and validate everything `gw` references, and build its configuration. Every prerequisite is
/// looked at even when an earlier one is missing, and all problems are reported together.
async fn prepare(
    gw: &DuoGateway,
    ctx: &Context,
    now: Timestamp,
) -> Result<Result<Prepared, Problem>, Error> {
    use build::material::*;
    let ns = gw.namespace().ok_or(Error::Incomplete("namespace"))?;
    let c = &ctx.client;
    let s = &gw.spec;
    let mut problems = Vec::new();
    if s.connection.kind().is_none() {
        problems.push(problem(
            Reason::InvalidSpec,
            "spec.connection: set exactly one of xds or tlb",
        ));
    }
    let address = found(
        build::published_address(gw).map_err(|e| problem(Reason::InvalidSpec, e.to_string())),
        &mut problems,
    );
    if let Err(e) = build::check_workload(gw) {
        problems.push(problem(Reason::InvalidSpec, e.to_string()));
    }
    let what = format!("spec.tls.secretName ({})", s.tls.secret_name);
    let tls = found(
        tls_pair(c, &ns, &s.tls.secret_name, &what).await?,
        &mut problems,
    );
    let certificate = tls.as_ref().and_then(|(cert, key)| {
        found(
            validate::check_certificate(cert, key, Some(&s.organization.ura), now)
                .map_err(|e| cert_problem(&what, e)),
            &mut problems,
        )
    });
    // peers verify the certificate against the published host: refuse an address it does not name
    if let (Some(info), Some((host, _)), Some(_)) = (&certificate, &address, &s.publish.address)
        && s.publish.enabled
        && !build::certificate_names_host(&info.dns_names, host)
    {
        problems.push(problem(
            Reason::CertificateNameMismatch,
            format!(
                "{what}: the certificate names {:?}, not spec.publish.address host {host:?}; peers verify it against that name",
                info.dns_names
            ),
        ));
    }
    let trust = found(
        trust_bundle(c, &ns, &s.tls.trust_bundle, "spec.tls.trustBundle").await?,
        &mut problems,
    );
    // the key that signs the gateway's XUA assertions: a separate IdP Secret, or the TLS one
    let signing = match &s.xua.signing_secret_name {
        Some(name) => {
            let what = format!("spec.xua.signingSecretName ({name})");
            found(tls_pair(c, &ns, name, &what).await?, &mut problems).and_then(|(xc, xk)| {
                found(
                    validate::check_xua_signing(&xc, &xk, now).map_err(|e| cert_problem(&what, e)),
                    &mut problems,
                )
                .map(|info| (info, xc, xk))
            })
        }
        None => {
            if let (Some((cert, key)), Some(_)) = (&tls, &certificate)
                && let Err(e) = validate::check_xua_signing(cert, key, now)
            {
                problems.push(cert_problem(&format!("{what} (XUA signing key)"), e));
            }
            None
        }
    };
    let mut mitz_material: Vec<(&str, Vec<u8>)> = Vec::new();
    let mitz = match &s.mitz {
        None => None,
        Some(r) => match ctx
            .mitz
            .get(&ObjectRef::new(&r.connection_name).within(&ns))
        {
            None => {
                problems.push(problem(
                    Reason::MitzConnectionMissing,
                    format!(
                        "spec.mitz.connectionName: MitzConnection {:?} not found",
                        r.connection_name
                    ),
                ));
                None
            }
            Some(m) => {
                let what = format!(
                    "MitzConnection {}: clientCertificateSecretName ({})",
                    r.connection_name, m.spec.client_certificate_secret_name
                );
                let pair = found(
                    tls_pair(c, &ns, &m.spec.client_certificate_secret_name, &what).await?,
                    &mut problems,
                );
                if let Some((mcert, mkey)) = pair {
                    if let Err(e) = validate::check_certificate(&mcert, &mkey, None, now) {
                        problems.push(cert_problem(&what, e));
                    }
                    mitz_material.extend([(MITZ_CRT, mcert), (MITZ_KEY, mkey)]);
                }
                let what = format!("MitzConnection {}: trustBundle", r.connection_name);
                if let Some(t) = found(
                    trust_bundle(c, &ns, &m.spec.trust_bundle, &what).await?,
                    &mut problems,
                ) {
                    mitz_material.push((MITZ_TRUST, t));
                }
                Some((*m).clone())
            }
        },
    };
    if let Some(p) = combine(problems) {
        return Ok(Err(p));
    }
    let (Some((cert, key)), Some(certificate), Some(trust)) = (tls, certificate, trust) else {
        return Err(Error::Incomplete("prerequisites"));
    };
    let signing_info = signing
        .as_ref()
        .map(|(i, _, _)| i.clone())
        .unwrap_or_else(|| certificate.clone());
    let mut material: Vec<(&str, Vec<u8>)> = vec![(TLS_CRT, cert), (TLS_KEY, key), (TRUST, trust)];
    if let Some((_, xcert, xkey)) = signing {
        material.extend([(XUA_CRT, xcert), (XUA_KEY, xkey)]);
    }
    material.extend(mitz_material);
    ctx.communities.wait_until_ready().await.ok();
    let communities = match selected_communities(gw, &ctx.communities.state()) {
        Ok(c) => c,
        Err(p) => return Ok(Err(p)),
    };
    let authentic = authentic_published(c, &communities).await?;
    let (config, mut skipped) = match build::resolve(gw, &communities, mitz.as_ref(), &authentic) {
        Ok(c) => c,
        Err(e) => return Ok(Err(problem(Reason::InvalidSpec, e.to_string()))),
    };
    // selected namespaces the operator does not watch come first: the condition's reason names them
    skipped.splice(
        0..0,
        crate::scope::unwatched_community_namespaces(gw, &ctx.scope),
    );
    let revocation =
        own_revocation(gw, ctx, &config.revocation, &material[0].1, &material[2].1).await;
    let config_yaml = config.to_yaml();
    let refs: Vec<(&str, &[u8])> = material.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    let checksum = build::checksum(&config_yaml, &refs);
    let xua = XuaStatus {
        issuer: config.xua_issuer(),
        signing_certificate: Some(certificate_status(&signing_info)),
        trusted_issuers: i32::try_from(
            config
                .communities
                .iter()
                .map(|c| c.trusted_issuers.len())
                .sum::<usize>(),
        )
        .unwrap_or(i32::MAX),
        unsigned_allowed: config.xua.allow_unsigned,
    };
    let signing_pem = leaf_pem(
        material
            .iter()
            .find(|(k, _)| *k == XUA_CRT)
            .unwrap_or(&material[0])
            .1
            .as_slice(),
    );
    Ok(Ok(Prepared {
        xua,
        communities: config.communities.len(),
        config_yaml,
        config,
        checksum,
        mitz,
        certificate,
        revocation,
        skipped,
        material,
        signing_pem,
    }))
}

/// Of the selected `communities` that share a homeCommunityId with another one, the `namespace/name` of
/// those the operator really published: each claims it ([`build::claims_published`]) and the DuoGateway
/// it names exists in its namespace with the owner reference's uid and the same homeCommunityId. Looked
/// up only for duplicates (usually none), one GET each.
async fn authentic_published(
    client: &Client,
    communities: &[DuoCommunity],
) -> Result<std::collections::BTreeSet<String>, Error> {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for c in communities {
        *count.entry(c.spec.home_community_id.as_str()).or_default() += 1;
    }
    let mut out = std::collections::BTreeSet::new();
    for c in communities {
        if count[c.spec.home_community_id.as_str()] < 2 {
            continue;
        }
        let (Some((name, uid)), Some(ns)) = (build::claims_published(c), c.namespace()) else {
            continue;
        };
        let owner = Api::<DuoGateway>::namespaced(client.clone(), &ns)
            .get_opt(&name)
            .await?;
        if owner.is_some_and(|g| {
            g.uid().as_deref() == Some(uid.as_str())
                && g.spec.publish.enabled
                && g.spec.organization.home_community_id == c.spec.home_community_id
        }) {
            out.insert(build::community_id(c));
        }
    }
    Ok(out)
}

/// Checks the gateway's own certificate (`cert` PEM, verified against `trust` PEM first) for
/// revocation with the checker of `cfg`, kept in [`Context::revocation`] for the gateway.
async fn own_revocation(
    gw: &DuoGateway,
    ctx: &Context,
    cfg: &duo_core::config::RevocationConfig,
    cert: &[u8],
    trust: &[u8],
) -> OwnRevocation {
    let key = format!("{}/{}", gw.namespace().unwrap_or_default(), gw.name_any());
    let checker = {
        let mut all = ctx.revocation.lock().unwrap_or_else(|p| p.into_inner());
        match duo_trust::revocation::checker(cfg) {
            None => {
                all.remove(&key);
                return OwnRevocation::disabled();
            }
            Some(c) => {
                all.insert(key, c.clone());
                c
            }
        }
    };
    validate::check_own_revocation(&checker, cert, trust).await
}

/// Server-side apply of `obj` with the operator's field manager; `dry` asks the API server to validate
/// and admit it without storing anything (`dryRun=All`).
async fn apply_with<K>(client: &Client, ns: &str, obj: &K, dry: bool) -> Result<K, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let name = obj.meta().name.clone().ok_or(Error::Incomplete("name"))?;
    let mut params = PatchParams::apply(FIELD_MANAGER).force();
    if dry {
        params = params.dry_run();
    }
    Ok(api.patch(&name, &params, &Patch::Apply(obj)).await?)
}

async fn delete_if_present<K>(client: &Client, ns: &str, name: &str) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether `meta` carries an owner reference to the object with `uid`.
fn owned_by(meta: &kube::core::ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .as_ref()
        .is_some_and(|refs| refs.iter().any(|r| r.uid == uid))
}

/// `Some(problem)` when an object `K` named `name` exists in `ns` but is not owned by the gateway with
/// `uid`: the operator never takes over (and later deletes) an object it did not create.
async fn foreign_child<K>(
    client: &Client,
    ns: &str,
    name: &str,
    uid: &str,
) -> Result<Option<String>, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<kube::core::PartialObjectMeta<K>> = Api::namespaced(client.clone(), ns);
    Ok(match api.get_metadata_opt(name).await? {
        Some(existing) if !owned_by(&existing.metadata, uid) => {
            Some(format!("{} {name}", K::kind(&())))
        }
        _ => None,
    })
}

/// The API server's answer when it refused an apply (invalid, forbidden, rejected by admission, or a
/// conversion failure it reports as 500 such as an unparseable quantity): reported in status and
/// retried. Transport errors are not answers and stay plain errors.
fn rejected(e: &kube::Error) -> Option<String> {
    match e {
        kube::Error::Api(s) => Some(format!("{} (HTTP {})", s.message, s.code)),
        _ => None,
    }
}

/// Applies `obj` (only validates it with `dry`); an object the API server rejects becomes an
/// `ApplyFailed` problem naming it.
async fn apply_or_problem<K>(
    client: &Client,
    ns: &str,
    obj: &K,
    dry: bool,
) -> Result<Result<K, Problem>, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    match apply_with(client, ns, obj, dry).await {
        Ok(o) => Ok(Ok(o)),
        Err(Error::Kube(e)) => match rejected(&e) {
            Some(message) => Ok(Err(problem(
                Reason::ApplyFailed,
                format!(
                    "{} {}: {message}",
                    K::kind(&()),
                    obj.meta().name.clone().unwrap_or_default()
                ),
            ))),
            None => Err(Error::Kube(e)),
        },
        Err(e) => Err(e),
    }
}

/// Applies every child of `gw` and deletes the ones the spec no longer asks for. Returns the Deployment
/// as the API server has it (with its status), or the problem that stopped it: a child name taken by an
/// object the gateway does not own (`ChildConflict`, nothing applied), or a child the API server rejects
/// (`ApplyFailed`).
async fn apply_children(
    gw: &DuoGateway,
    ctx: &Context,
    p: &Prepared,
) -> Result<Result<Applied, Problem>, Error> {
    let ns = gw.namespace().ok_or(Error::Incomplete("namespace"))?;
    let uid = gw.uid().ok_or(Error::Incomplete("uid"))?;
    let owner = gw
        .controller_owner_ref(&())
        .ok_or(Error::Incomplete("uid"))?;
    let c = &ctx.client;
    let sa = build::service_account(gw, &owner);
    let material: Vec<(&str, &[u8])> = p.material.iter().map(|(k, v)| (*k, v.as_slice())).collect();
    let secret = build::material_secret(gw, &owner, &material, &p.checksum);
    let cm = build::config_map(gw, &owner, &p.config_yaml);
    let svc = build::service(gw, &owner);
    let key = format!("{ns}/{}", gw.name_any());
    let current = Api::<Deployment>::namespaced(c.clone(), &ns)
        .get_opt(&build::child_name(gw))
        .await?;
    // the rollout cap: a new operator default image rolls at most `rollout_cap` gateways at once; the
    // others keep their image (the rest of the spec is applied) until a rollout finishes
    let mut image = ctx.gateway_image.clone();
    let mut queued = None;
    let mut gate = None;
    if gw.spec.image.is_none()
        && let Some(old) = current.as_ref().and_then(build::container_image)
        && old != ctx.gateway_image
    {
        let rolling = ctx.rollouts.lock().await;
        let cap = ctx.rollout_cap.load(std::sync::atomic::Ordering::Relaxed);
        let others: Vec<&String> = rolling
            .iter()
            .filter(|(k, since)| **k != key && since.elapsed() < ROLLOUT_SLOT)
            .map(|(k, _)| k)
            .collect();
        if cap > 0 && others.len() >= cap {
            queued = Some(format!(
                "the new gateway image {} waits: {} gateways are rolling out ({}), at most {cap} at once (--max-concurrent-rollouts)",
                ctx.gateway_image,
                others.len(),
                others
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            image = old;
        }
        gate = Some(rolling);
    }
    let dep = build::deployment(gw, &owner, p.mitz.as_ref(), &image, &p.checksum);
    let pdb = build::pod_disruption_budget(gw, &owner);
    let np = build::network_policy(gw, &owner, &p.config);
    let digest = {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let json =
            serde_json::to_vec(&(&sa, &secret, &cm, &svc, &dep, &pdb, &np)).unwrap_or_default();
        h.update(&json);
        hex::encode(h.finalize())
    };
    let fresh = ctx
        .applied
        .lock()
        .ok()
        .and_then(|m| m.get(&key).cloned())
        .is_some_and(|(d, at)| d == digest && at.elapsed() < APPLY_REFRESH);
    if fresh {
        // nothing to change: only the Deployment's status is needed (everything is re-applied when it
        // disappeared, or when the copy the pods start from no longer holds exactly the validated
        // material: deleted or edited by hand)
        let material_intact = Api::<Secret>::namespaced(c.clone(), &ns)
            .get_opt(&build::material_secret_name(gw))
            .await?
            .is_some_and(|s| s.data == secret.data);
        if material_intact && let Some(d) = current {
            return Ok(Ok(Applied {
                deployment: d,
                rollout_queued: queued,
            }));
        }
    }
    if let Ok(mut m) = ctx.applied.lock() {
        m.remove(&key);
    }
    let name = build::child_name(gw);
    let mut foreign = Vec::new();
    foreign.extend(foreign_child::<ServiceAccount>(c, &ns, &name, &uid).await?);
    foreign.extend(foreign_child::<Secret>(c, &ns, &build::material_secret_name(gw), &uid).await?);
    foreign.extend(foreign_child::<ConfigMap>(c, &ns, &build::config_map_name(gw), &uid).await?);
    foreign.extend(foreign_child::<Service>(c, &ns, &name, &uid).await?);
    foreign.extend(foreign_child::<Deployment>(c, &ns, &name, &uid).await?);
    foreign.extend(foreign_child::<PodDisruptionBudget>(c, &ns, &name, &uid).await?);
    foreign.extend(foreign_child::<NetworkPolicy>(c, &ns, &name, &uid).await?);
    if !foreign.is_empty() {
        return Ok(Err(problem(
            Reason::ChildConflict,
            format!(
                "{} already exist(s) and not owned by this DuoGateway; nothing applied (rename or delete it)",
                foreign.join(", ")
            ),
        )));
    }
    // every child is first validated and admitted without being stored (dryRun=All): one the API
    // server refuses (e.g. an unparseable resource quantity) must not leave the others half-applied,
    // since the running pods pick up a new ConfigMap by themselves (hot reload)
    let mut deployment = None;
    for dry in [true, false] {
        try_problem!(apply_or_problem(c, &ns, &sa, dry).await);
        // before the Deployment: a new pod template must find the material it names
        try_problem!(apply_or_problem(c, &ns, &secret, dry).await);
        try_problem!(apply_or_problem(c, &ns, &cm, dry).await);
        try_problem!(apply_or_problem(c, &ns, &svc, dry).await);
        deployment = Some(try_problem!(apply_or_problem(c, &ns, &dep, dry).await));
        if let Some(pdb) = &pdb {
            try_problem!(apply_or_problem(c, &ns, pdb, dry).await);
        }
        try_problem!(apply_or_problem(c, &ns, &np, dry).await);
    }
    let deployment = deployment.ok_or(Error::Incomplete("deployment"))?;
    if pdb.is_none() {
        delete_owned::<PodDisruptionBudget>(c, &ns, &name, &uid).await?;
    }
    if let Some(mut rolling) = gate
        && queued.is_none()
    {
        // counted from now on, before the Deployment controller has even seen the new template
        rolling.insert(key.clone(), Instant::now());
    }
    if let Ok(mut m) = ctx.applied.lock() {
        m.insert(key, (digest, Instant::now()));
    }
    Ok(Ok(Applied {
        deployment,
        rollout_queued: queued,
    }))
}

/// The Deployment as applied (with its status) and, when the rollout cap held back a new operator
/// image, why.
struct Applied {
    deployment: Deployment,
    rollout_queued: Option<String>,
}

/// Publishes `gw` as a DuoCommunity (or removes the published one when publishing is off), with
/// `signing_pem` (the validated XUA signing certificate). Runs only after the current spec was applied:
/// peers see what the pods present, never a refused spec's values nor a gateway that never ran. Returns
/// a problem only when the API server rejects it or the name is taken.
async fn publish(
    gw: &DuoGateway,
    ctx: &Context,
    signing_pem: Option<&str>,
) -> Result<Option<Problem>, Error> {
    let ns = gw.namespace().ok_or(Error::Incomplete("namespace"))?;
    let owner = gw
        .controller_owner_ref(&())
        .ok_or(Error::Incomplete("uid"))?;
    let c = &ctx.client;
    let Some(community) = build::published_community(gw, &owner, signing_pem) else {
        delete_published(c, &ns, gw).await?;
        return Ok(None);
    };
    // never take over a hand-written DuoCommunity that happens to have the gateway's name
    let existing = Api::<DuoCommunity>::namespaced(c.clone(), &ns)
        .get_opt(&gw.name_any())
        .await?;
    if let Some(e) = &existing {
        if e.labels().get(crate::crd::PUBLISHED_BY_LABEL) != Some(&gw.name_any()) {
            tracing::warn!(
                gateway = %format!("{ns}/{}", gw.name_any()),
                "not publishing: a DuoCommunity with this name exists and was not published by the operator"
            );
            return Ok(Some(problem(
                Reason::PublishConflict,
                format!(
                    "DuoCommunity {ns}/{} exists and was not published for this gateway; it is left as it is and this gateway is not published (rename or delete it, or set publish.enabled: false)",
                    gw.name_any()
                ),
            )));
        }
        let wanted = community
            .labels()
            .iter()
            .all(|(k, v)| e.labels().get(k) == Some(v));
        if e.spec == community.spec && wanted && owned_by(&e.metadata, &owner.uid) {
            return Ok(None);
        }
    }
    Ok(apply_or_problem(c, &ns, &community, false).await?.err())
}

/// The leaf (first) certificate of a PEM chain, as PEM; `None` when it does not parse.
fn leaf_pem(chain: &[u8]) -> Option<String> {
    let certs = duo_core::pki::parse_certificates(chain).ok()?;
    Some(duo_core::pki::der_to_pem(
        "CERTIFICATE",
        certs.first()?.as_ref(),
    ))
}

/// Deletes `K` named `name` in `ns` only when the gateway with `uid` owns it.
async fn delete_owned<K>(client: &Client, ns: &str, name: &str, uid: &str) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<kube::core::PartialObjectMeta<K>> = Api::namespaced(client.clone(), ns);
    match api.get_metadata_opt(name).await? {
        Some(existing) if owned_by(&existing.metadata, uid) => {
            delete_if_present::<K>(client, ns, name).await
        }
        _ => Ok(()),
    }
}

/// Deletes the published DuoCommunity of `gw`, but only one the operator published for it.
async fn delete_published(c: &Client, ns: &str, gw: &DuoGateway) -> Result<(), Error> {
    let api: Api<DuoCommunity> = Api::namespaced(c.clone(), ns);
    if let Some(existing) = api.get_opt(&gw.name_any()).await?
        && existing.labels().get(crate::crd::PUBLISHED_BY_LABEL) == Some(&gw.name_any())
    {
        delete_if_present::<DuoCommunity>(c, ns, &gw.name_any()).await?;
    }
    Ok(())
}

/// Deletes every child `gw` owns (finalizer cleanup; envtest-style clusters have no garbage collector).
async fn cleanup(gw: &DuoGateway, ctx: &Context) -> Result<Action, Error> {
    let ns = gw.namespace().ok_or(Error::Incomplete("namespace"))?;
    let c = &ctx.client;
    let name = build::child_name(gw);
    let uid = gw.uid().ok_or(Error::Incomplete("uid"))?;
    // only what this gateway owns: an object of the same name that someone else made stays
    delete_owned::<Deployment>(c, &ns, &name, &uid).await?;
    delete_owned::<Service>(c, &ns, &name, &uid).await?;
    delete_owned::<PodDisruptionBudget>(c, &ns, &name, &uid).await?;
    delete_owned::<NetworkPolicy>(c, &ns, &name, &uid).await?;
    delete_owned::<ServiceAccount>(c, &ns, &name, &uid).await?;
    delete_owned::<ConfigMap>(c, &ns, &build::config_map_name(gw), &uid).await?;
    delete_owned::<Secret>(c, &ns, &build::material_secret_name(gw), &uid).await?;
    delete_published(c, &ns, gw).await?;
    if let Ok(mut m) = ctx.applied.lock() {
        m.remove(&format!("{ns}/{}", gw.name_any()));
    }
    if let Ok(mut m) = ctx.revocation.lock() {
        m.remove(&format!("{ns}/{}", gw.name_any()));
    }
    ctx.rollouts
        .lock()
        .await
        .remove(&format!("{ns}/{}", gw.name_any()));
    ctx.metrics
        .set_gateway_modes(&format!("{ns}/{}", gw.name_any()), None);
    Ok(Action::await_change())
}

/// The wire string of [`ConditionType::CertificateRevoked`] (kept for the readers of the status).
pub const CERTIFICATE_REVOKED: &str = ConditionType::CertificateRevoked.as_str();

/// A condition that holds (`True`) or not (`False`); see [`condition_with`].
fn condition(
    type_: ConditionType,
    status: bool,
    reason: Reason,
    message: &str,
    generation: Option<i64>,
    previous: &[Condition],
    now: Timestamp,
) -> Condition {
    condition_with(
        type_,
        status.into(),
        reason,
        message,
        generation,
        previous,
        now,
    )
}

/// A condition with `status` `True`, `False` or `Unknown`; the transition time is kept while the
/// status stays the same.
fn condition_with(
    type_: ConditionType,
    status: ConditionStatus,
    reason: Reason,
    message: &str,
    generation: Option<i64>,
    previous: &[Condition],
    now: Timestamp,
) -> Condition {
    let last = previous
        .iter()
        .find(|c| type_.is(c) && c.status == status.as_str())
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.as_str().into(),
        status: status.as_str().into(),
        reason: reason.as_str().into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: last,
    }
}

/// Whether a Deployment has rolled out its current spec to `replicas` available pods.
fn rollout(deployment: Option<&Deployment>, replicas: i32) -> (bool, i32, String) {
    let Some(d) = deployment else {
        return (false, 0, "the Deployment does not exist yet".into());
    };
    let st = d.status.clone().unwrap_or_default();
    let ready = st.ready_replicas.unwrap_or(0);
    let current = st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    let updated = st.updated_replicas.unwrap_or(0);
    let available = st.available_replicas.unwrap_or(0);
    let done = current
        && updated >= replicas
        && available >= replicas
        && st.replicas.unwrap_or(0) <= replicas.max(updated);
    let msg = if done {
        format!("{available}/{replicas} pods available")
    } else {
        format!("rollout in progress: {updated}/{replicas} updated, {available} available")
    };
    (done, ready, msg)
}

fn certificate_status(c: &CertificateInfo) -> CertificateStatus {
    CertificateStatus {
        not_after: c.not_after.to_string(),
        ura: c.ura.as_ref().map(|u| u.as_str().to_owned()),
        subject: c.subject.clone(),
    }
}

/// The status for `gw` after `outcome`, given its Deployment (as applied or as found). Pure.
pub fn gateway_status(
    gw: &DuoGateway,
    outcome: &Outcome,
    deployment: Option<&Deployment>,
    now: Timestamp,
) -> DuoGatewayStatus {
    let prev = gw.status.clone().unwrap_or_default();
    let gen_ = gw.meta().generation;
    let pc = &prev.conditions;
    let mut st = DuoGatewayStatus {
        observed_generation: gen_,
        conditions: Vec::new(),
        connection_kind: gw.spec.connection.kind().map(|k| k.as_str().to_owned()),
        localization: Some(gw.spec.localization.as_str().to_owned()),
        consent_mode: Some(match gw.spec.consent.mode {
            crate::crd::ConsentMode::Mitz => "mitz".to_owned(),
            crate::crd::ConsentMode::PermitAll => "permitAll".to_owned(),
        }),
        registration_mode: Some(match gw.spec.registration.mode {
            crate::crd::RegistrationMode::Mitz => "mitz".to_owned(),
            crate::crd::RegistrationMode::Off => "off".to_owned(),
        }),
        ready_replicas: 0,
        communities: prev.communities,
        certificate: prev.certificate.clone(),
        applied_checksum: prev.applied_checksum.clone(),
        xua: prev.xua.clone(),
    };
    let (done, ready, rollout_msg) = rollout(deployment, gw.spec.replicas);
    st.ready_replicas = ready;
    match outcome {
        Outcome::Applied {
            certificate,
            revocation,
            communities,
            checksum,
            skipped,
            xua,
            rollout_queued,
        } => {
            st.communities = *communities;
            st.applied_checksum = Some(checksum.clone());
            st.certificate = Some(certificate_status(certificate));
            if let Some(x) = xua {
                st.xua = Some((**x).clone());
            }
            let (ready_reason, progressing_reason) = if done {
                (Reason::Available, Reason::Complete)
            } else {
                (Reason::RollingOut, Reason::RollingOut)
            };
            st.conditions.push(condition(
                ConditionType::Ready,
                done,
                ready_reason,
                &rollout_msg,
                gen_,
                pc,
                now,
            ));
            st.conditions.push(match rollout_queued {
                Some(why) => condition(
                    ConditionType::Progressing,
                    true,
                    Reason::RolloutQueued,
                    why,
                    gen_,
                    pc,
                    now,
                ),
                None => condition(
                    ConditionType::Progressing,
                    !done,
                    progressing_reason,
                    &rollout_msg,
                    gen_,
                    pc,
                    now,
                ),
            });
            st.conditions.push(condition(
                ConditionType::Degraded,
                false,
                Reason::Reconciled,
                "the current spec is applied",
                gen_,
                pc,
                now,
            ));
            let soon = validate::expires_soon(certificate, now);
            let msg = format!("the TLS certificate expires at {}", certificate.not_after);
            let reason = if soon {
                Reason::CertificateExpiresSoon
            } else {
                Reason::CertificateValid
            };
            st.conditions.push(condition(
                ConditionType::CertificateExpiring,
                soon,
                reason,
                &msg,
                gen_,
                pc,
                now,
            ));
            st.conditions.push(condition_with(
                ConditionType::CertificateRevoked,
                revocation.status,
                revocation.reason,
                &revocation.message,
                gen_,
                pc,
                now,
            ));
            let (reason, msg) = match skipped.first() {
                None => (
                    Reason::AllCommunitiesUsed,
                    "every selected community is in the configuration".to_owned(),
                ),
                Some(first) => (
                    first.reason,
                    format!(
                        "left out of the configuration: {}",
                        skipped
                            .iter()
                            .map(|s| s.message.as_str())
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                ),
            };
            st.conditions.push(condition(
                ConditionType::CommunitiesSkipped,
                !skipped.is_empty(),
                reason,
                &msg,
                gen_,
                pc,
                now,
            ));
        }
        Outcome::Degraded(p) => {
            let kept = if deployment.is_some() {
                "; the last applied configuration keeps running"
            } else {
                ""
            };
            let msg = format!("{}{kept}", p.message);
            st.conditions.push(condition(
                ConditionType::Ready,
                false,
                p.reason,
                &msg,
                gen_,
                pc,
                now,
            ));
            st.conditions.push(condition(
                ConditionType::Progressing,
                false,
                p.reason,
                &msg,
                gen_,
                pc,
                now,
            ));
            st.conditions.push(condition(
                ConditionType::Degraded,
                true,
                p.reason,
                &p.message,
                gen_,
                pc,
                now,
            ));
            match p.reason {
                // an expired certificate is past expiring: say so rather than keep `CertificateValid`
                Reason::CertificateExpired => st.conditions.push(condition(
                    ConditionType::CertificateExpiring,
                    true,
                    Reason::CertificateExpired,
                    &p.message,
                    gen_,
                    pc,
                    now,
                )),
                _ => st
                    .conditions
                    .extend(ConditionType::CertificateExpiring.find(pc).cloned()),
            }
            // what is known about the certificate and the communities stays as it was
            st.conditions
                .extend(ConditionType::CertificateRevoked.find(pc).cloned());
            st.conditions
                .extend(ConditionType::CommunitiesSkipped.find(pc).cloned());
            if let Reason::ApplyFailed = p.reason {
                // the API server refused part of this generation: it is not applied
                st.observed_generation = prev.observed_generation;
            }
        }
        Outcome::Paused => {
            for c in pc.iter().filter(|c| !ConditionType::Progressing.is(c)) {
                st.conditions.push(c.clone());
            }
            let msg = format!("reconciliation paused by annotation {PAUSED_ANNOTATION}");
            st.conditions.push(condition(
                ConditionType::Progressing,
                false,
                Reason::Paused,
                &msg,
                gen_,
                pc,
                now,
            ));
            st.observed_generation = prev.observed_generation;
        }
    }
    st
}

fn status_changed(old: &DuoGatewayStatus, new: &DuoGatewayStatus) -> bool {
    old != new
}

async fn write_status<K>(api: &Api<K>, name: &str, status: &impl Serialize) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

async fn publish_event(
    ctx: &Context,
    gw: &DuoGateway,
    type_: EventType,
    reason: Reason,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.as_str().into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &gw.object_ref(&())).await {
        tracing::warn!(error = %e, "cannot publish event");
    }
}

/// The condition of `type_` in `st` when it is `True`.
fn true_condition(st: &DuoGatewayStatus, type_: ConditionType) -> Option<&Condition> {
    type_
        .find(&st.conditions)
        .filter(|c| c.status == ConditionStatus::True.as_str())
}

fn condition_true(st: &DuoGatewayStatus, type_: ConditionType) -> bool {
    true_condition(st, type_).is_some()
}

/// Reconciles one DuoGateway (with its finalizer).
pub async fn reconcile_gateway(gw: Arc<DuoGateway>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let ns = gw.namespace().ok_or(Error::Incomplete("namespace"))?;
    let api: Api<DuoGateway> = Api::namespaced(ctx.client.clone(), &ns);
    let label = std::sync::Mutex::new("deleted");
    let result = finalizer(&api, FINALIZER, gw, |event| async {
        match event {
            FinalizerEvent::Apply(gw) => {
                let (action, l) = apply_gateway(&gw, &ctx).await?;
                if let Ok(mut g) = label.lock() {
                    *g = l;
                }
                Ok(action)
            }
            FinalizerEvent::Cleanup(gw) => cleanup(&gw, &ctx).await,
        }
    })
    .await;
    match result {
        Ok(action) => {
            let outcome = label.lock().map(|g| *g).unwrap_or("applied");
            ctx.metrics
                .reconciled("DuoGateway", outcome, started.elapsed());
            Ok(action)
        }
        Err(
            kube::runtime::finalizer::Error::ApplyFailed(e)
            | kube::runtime::finalizer::Error::CleanupFailed(e),
        ) => {
            ctx.metrics
                .reconciled("DuoGateway", "error", started.elapsed());
            Err(e)
        }
        Err(e) => {
            ctx.metrics
                .reconciled("DuoGateway", "error", started.elapsed());
            Err(Error::Finalizer(e.to_string()))
        }
    }
}

async fn apply_gateway(gw: &DuoGateway, ctx: &Context) -> Result<(Action, &'static str), Error> {
    let ns = gw.namespace().ok_or(Error::Incomplete("namespace"))?;
    let name = gw.name_any();
    let api: Api<DuoGateway> = Api::namespaced(ctx.client.clone(), &ns);
    let now = Timestamp::now();
    tracing::debug!(gateway = %format!("{ns}/{name}"), "reconciling");
    let consent = match gw.spec.consent.mode {
        crate::crd::ConsentMode::Mitz => "mitz",
        crate::crd::ConsentMode::PermitAll => "permitAll",
    };
    ctx.metrics.set_gateway_modes(
        &format!("{ns}/{name}"),
        Some(ModeLabels {
            localization: gw.spec.localization.as_str().into(),
            consent: consent.into(),
        }),
    );
    let paused = crate::crd::is_paused(gw);
    let (outcome, deployment, label) = if paused {
        let d = Api::<Deployment>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&build::child_name(gw))
            .await?;
        (Outcome::Paused, d, "paused")
    } else {
        let prepared = match prepare(gw, ctx, now).await? {
            Ok(p) => match apply_children(gw, ctx, &p).await? {
                Ok(a) => Ok((p, a)),
                Err(problem) => Err(problem),
            },
            Err(problem) => Err(problem),
        };
        // only from an applied spec: a refused one leaves the published DuoCommunity as it was
        let published = match &prepared {
            Ok((p, _)) => publish(gw, ctx, p.signing_pem.as_deref()).await?,
            Err(_) => None,
        };
        match (prepared, published) {
            (Ok((p, a)), None) => {
                let o = Outcome::Applied {
                    certificate: Box::new(p.certificate.clone()),
                    revocation: p.revocation.clone(),
                    communities: i32::try_from(p.communities).unwrap_or(i32::MAX),
                    checksum: p.checksum.clone(),
                    skipped: p.skipped.clone(),
                    xua: Some(Box::new(p.xua.clone())),
                    rollout_queued: a.rollout_queued,
                };
                (o, Some(a.deployment), "applied")
            }
            (Ok((_, a)), Some(p)) => (Outcome::Degraded(p), Some(a.deployment), "degraded"),
            (Err(p), _) => {
                // "detail", not "message": the JSON formatter already writes the event text as "message"
                tracing::info!(gateway = %format!("{ns}/{name}"), reason = %p.reason, detail = %p.message, "not applied");
                let d = Api::<Deployment>::namespaced(ctx.client.clone(), &ns)
                    .get_opt(&build::child_name(gw))
                    .await?;
                (Outcome::Degraded(p), d, "degraded")
            }
        }
    };
    // what the rollout cap counts: gateways whose Deployment has not finished rolling out (a paused
    // one is not the operator's to roll, and must not hold a slot while nobody reconciles it)
    {
        let done = rollout(deployment.as_ref(), gw.spec.replicas).0;
        let mut rolling = ctx.rollouts.lock().await;
        let key = format!("{ns}/{name}");
        if paused || done || deployment.is_none() {
            rolling.remove(&key);
        } else if !matches!(
            &outcome,
            Outcome::Applied {
                rollout_queued: Some(_),
                ..
            }
        ) {
            rolling.entry(key).or_insert_with(Instant::now);
        }
    }
    let old = gw.status.clone().unwrap_or_default();
    let new = gateway_status(gw, &outcome, deployment.as_ref(), now);
    if status_changed(&old, &new) {
        write_status(&api, &name, &new).await?;
    }
    if condition_true(&new, ConditionType::CertificateExpiring)
        && !condition_true(&old, ConditionType::CertificateExpiring)
    {
        let note = new
            .certificate
            .as_ref()
            .map(|c| format!("TLS certificate expires at {}", c.not_after))
            .unwrap_or_default();
        publish_event(
            ctx,
            gw,
            EventType::Warning,
            Reason::CertificateExpiresSoon,
            note,
        )
        .await;
    }
    if !condition_true(&old, ConditionType::CertificateRevoked)
        && let Some(c) = true_condition(&new, ConditionType::CertificateRevoked)
    {
        tracing::warn!(gateway = %format!("{ns}/{name}"), detail = %c.message, "the gateway's own certificate is revoked");
        publish_event(
            ctx,
            gw,
            EventType::Warning,
            Reason::CertificateRevoked,
            c.message.clone(),
        )
        .await;
    }
    let skipped_now = true_condition(&new, ConditionType::CommunitiesSkipped);
    let skipped_before =
        true_condition(&old, ConditionType::CommunitiesSkipped).map(|c| c.message.as_str());
    if let Some(c) = skipped_now
        && skipped_before != Some(c.message.as_str())
    {
        publish_event(
            ctx,
            gw,
            EventType::Warning,
            Reason::CommunitySkipped,
            c.message.clone(),
        )
        .await;
    }
    let degraded_before = true_condition(&old, ConditionType::Degraded);
    match &outcome {
        Outcome::Degraded(p) => {
            // a new event whenever what is wrong changes, also within one reason (another Secret is
            // missing now): an event never keeps naming an object that exists by now
            let was = degraded_before.map(|c| (c.reason.as_str(), c.message.as_str()));
            if was != Some((p.reason.as_str(), p.message.as_str())) {
                publish_event(ctx, gw, EventType::Warning, p.reason, p.message.clone()).await;
            }
        }
        Outcome::Applied { .. } => {
            if let Some(c) = degraded_before {
                publish_event(
                    ctx,
                    gw,
                    EventType::Normal,
                    Reason::Recovered,
                    format!(
                        "the current spec is applied; cleared: {} ({})",
                        c.reason, c.message
                    ),
                )
                .await;
            }
        }
        Outcome::Paused => {}
    }
    let requeue = match outcome {
        // the rollout cap: look again soon (a finishing rollout also triggers a reconciliation of its
        // own gateway, not of the queued ones)
        Outcome::Applied {
            rollout_queued: Some(_),
            ..
        } => Duration::from_secs(15),
        // possibly transient (conflict, throttling), or waiting for someone to remove an object in the way
        Outcome::Degraded(Problem {
            reason: Reason::ApplyFailed | Reason::ChildConflict,
            ..
        }) => Duration::from_secs(30),
        Outcome::Degraded(_) => Duration::from_secs(300),
        // the own certificate's revocation status is looked at again after every refresh
        _ if gw.spec.revocation.enabled => Duration::from_secs(
            u64::try_from(gw.spec.revocation.refresh_interval_seconds)
                .unwrap_or(3600)
                .clamp(1, 3600),
        ),
        _ => Duration::from_secs(3600),
    };
    Ok((Action::requeue(requeue), label))
}

/// Retry policy: API errors retry after 10 s.
pub fn gateway_error_policy(_gw: Arc<DuoGateway>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %error, "DuoGateway reconciliation failed");
    ctx.metrics.error("DuoGateway", error.metric_reason());
    Action::requeue(Duration::from_secs(10))
}

/// Reconciles one MitzConnection: checks its client certificate and trust bundle, writes `Ready`.
pub async fn reconcile_mitz(m: Arc<MitzConnection>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let ns = m.namespace().ok_or(Error::Incomplete("namespace"))?;
    let now = Timestamp::now();
    let c = &ctx.client;
    let what = format!(
        "spec.clientCertificateSecretName ({})",
        m.spec.client_certificate_secret_name
    );
    let checked: Result<CertificateInfo, Problem> = async {
        let (cert, key) =
            match tls_pair(c, &ns, &m.spec.client_certificate_secret_name, &what).await? {
                Ok(v) => v,
                Err(p) => return Ok::<_, Error>(Err(p)),
            };
        let info = match validate::check_certificate(&cert, &key, None, now) {
            Ok(i) => i,
            Err(e) => return Ok(Err(cert_problem(&what, e))),
        };
        if let Err(p) = trust_bundle(c, &ns, &m.spec.trust_bundle, "spec.trustBundle").await? {
            return Ok(Err(p));
        }
        if let Some((field, url)) = m.spec.plain_http_endpoint() {
            // the CRD's CEL rule refuses this now; objects stored before it still say so here
            return Ok(Err(problem(
                Reason::InvalidSpec,
                format!(
                    "{field}: {url:?} is plain http; use https or set spec.allowPlainHttp: true"
                ),
            )));
        }
        if let Some((field, url)) = m.spec.placeholder_endpoint() {
            return Ok(Err(problem(
                Reason::PlaceholderEndpoint,
                format!(
                    "{field}: {url:?} is a placeholder (a host reserved for examples, RFC 2606); set Mitz's real endpoint"
                ),
            )));
        }
        Ok(Ok(info))
    }
    .await?;
    let prev = m.status.clone().unwrap_or_default();
    let st = mitz_status(&m, &checked, now);
    let outcome = if checked.is_ok() {
        "applied"
    } else {
        "degraded"
    };
    if st != prev {
        write_status(
            &Api::<MitzConnection>::namespaced(c.clone(), &ns),
            &m.name_any(),
            &st,
        )
        .await?;
    }
    ctx.metrics
        .reconciled("MitzConnection", outcome, started.elapsed());
    Ok(Action::requeue(Duration::from_secs(if checked.is_ok() {
        3600
    } else {
        300
    })))
}

/// The status of MitzConnection `m` after its check: `checked` is what its client certificate says, or
/// the problem that makes it unusable. `Ready` says which; the last good certificate is kept. Pure.
pub fn mitz_status(
    m: &MitzConnection,
    checked: &Result<CertificateInfo, Problem>,
    now: Timestamp,
) -> MitzConnectionStatus {
    let prev = m.status.clone().unwrap_or_default();
    let gen_ = m.meta().generation;
    let mut st = MitzConnectionStatus {
        observed_generation: gen_,
        conditions: Vec::new(),
        certificate: prev.certificate.clone(),
    };
    match checked {
        Ok(info) => {
            st.certificate = Some(CertificateStatus {
                not_after: info.not_after.to_string(),
                ura: info.ura.as_ref().map(|u| u.as_str().to_owned()),
                subject: info.subject.clone(),
            });
            st.conditions.push(condition(
                ConditionType::Ready,
                true,
                Reason::CertificateValid,
                "client certificate and trust bundle are valid",
                gen_,
                &prev.conditions,
                now,
            ));
        }
        Err(p) => {
            st.conditions.push(condition(
                ConditionType::Ready,
                false,
                p.reason,
                &p.message,
                gen_,
                &prev.conditions,
                now,
            ));
        }
    }
    st
}

/// Retry policy of the MitzConnection reconciler.
pub fn mitz_error_policy(_m: Arc<MitzConnection>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %error, "MitzConnection reconciliation failed");
    ctx.metrics.error("MitzConnection", error.metric_reason());
    Action::requeue(Duration::from_secs(10))
}

/// Gateways that reference Secret or ConfigMap `name` in `ns` (TLS Secret, trust bundles, Mitz client
/// certificate through their MitzConnection).
pub fn gateways_referencing(
    gateways: &[Arc<DuoGateway>],
    mitz: &Store<MitzConnection>,
    ns: &str,
    name: &str,
    is_secret: bool,
) -> Vec<ObjectRef<DuoGateway>> {
    let refers = |t: &TrustBundleRef| {
        if is_secret {
            t.secret.as_ref().is_some_and(|k| k.name == name)
        } else {
            t.config_map.as_ref().is_some_and(|k| k.name == name)
        }
    };
    gateways
        .iter()
        .filter(|g| g.namespace().as_deref() == Some(ns))
        .filter(|g| {
            let s = &g.spec;
            (is_secret
                && (s.tls.secret_name == name
                    || s.xua.signing_secret_name.as_deref() == Some(name)
                    // the operator's own copy: a deleted or edited one is restored at once
                    || build::material_secret_name(g) == name))
                // a foreign ConfigMap in the way of the gateway's own (ChildConflict) went away
                || (!is_secret && build::config_map_name(g) == name)
                || refers(&s.tls.trust_bundle)
                || s.mitz.as_ref().is_some_and(|r| {
                    mitz.get(&ObjectRef::new(&r.connection_name).within(ns))
                        .is_some_and(|m| {
                            (is_secret && m.spec.client_certificate_secret_name == name)
                                || refers(&m.spec.trust_bundle)
                        })
                })
        })
        .map(|g| ObjectRef::from_obj(g.as_ref()))
        .collect()
}

/// Gateways whose community selection matches `community` (namespace and labels).
pub fn gateways_selecting(
    gateways: &[Arc<DuoGateway>],
    community: &DuoCommunity,
) -> Vec<ObjectRef<DuoGateway>> {
    let cns = community.namespace().unwrap_or_default();
    let empty = BTreeMap::new();
    let labels = community.metadata.labels.as_ref().unwrap_or(&empty);
    gateways
        .iter()
        .filter(|g| {
            let Some(sel) = &g.spec.communities else {
                return false;
            };
            let in_ns = match &sel.namespaces {
                Some(list) => list.contains(&cns),
                None => g.namespace().as_deref() == Some(cns.as_str()),
            };
            in_ns && Selector::try_from(sel.selector.clone()).is_ok_and(|s| s.matches(labels))
        })
        .map(|g| ObjectRef::from_obj(g.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::*;
    use duo_trust::revocation::{ChainError, Source, Verdict};
    use k8s_openapi::api::apps::v1::DeploymentStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn gw() -> DuoGateway {
        let mut g = DuoGateway::new(
            "oost",
            DuoGatewaySpec {
                organization: GatewayOrganization {
                    ura: "12345678".into(),
                    name: "Oost".into(),
                    facility_type: "V6".into(),
                    home_community_id: "urn:oid:1.2.3".into(),
                },
                connection: Connection {
                    xds: None,
                    tlb: None,
                },
                mitz: None,
                consent: Consent::default(),
                trusted_front_ends: Vec::new(),
                localization: Localization::AllCommunities,
                tls: GatewayTls {
                    secret_name: "tls".into(),
                    trust_bundle: TrustBundleRef {
                        config_map: Some(KeyRef {
                            name: "trust".into(),
                            key: "ca.crt".into(),
                        }),
                        secret: None,
                    },
                },
                communities: Some(CommunitySelection {
                    selector: LabelSelector {
                        match_labels: Some([("net".to_owned(), "a".to_owned())].into()),
                        match_expressions: None,
                    },
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
        g.metadata.namespace = Some("h".into());
        g.metadata.generation = Some(3);
        g
    }

    /// An applied outcome with a valid certificate, `communities` resolved, nothing skipped.
    fn applied(communities: i32, checksum: &str) -> Outcome {
        Outcome::Applied {
            certificate: Box::new(cert()),
            revocation: not_revoked(),
            communities,
            checksum: checksum.into(),
            skipped: vec![],
            xua: None,
            rollout_queued: None,
        }
    }

    fn not_revoked() -> OwnRevocation {
        OwnRevocation::from_check(Ok(Verdict::Good(Source::Crl(
            "http://crl.example/ca.crl".into(),
        ))))
    }

    fn cert() -> CertificateInfo {
        CertificateInfo {
            not_before: Timestamp::UNIX_EPOCH,
            not_after: Timestamp::now() + jiff::SignedDuration::from_hours(24 * 90),
            subject: "CN=x".into(),
            dns_names: vec![],
            ura: Some("12345678".parse().unwrap()),
            uzi: None,
        }
    }

    fn deployment(available: i32) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.generation = Some(1);
        d.status = Some(DeploymentStatus {
            observed_generation: Some(1),
            replicas: Some(2),
            updated_replicas: Some(2),
            ready_replicas: Some(available),
            available_replicas: Some(available),
            ..DeploymentStatus::default()
        });
        d
    }

    fn get<'a>(st: &'a DuoGatewayStatus, t: &str) -> &'a Condition {
        st.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn applied_and_available_is_ready() {
        let g = gw();
        let o = applied(4, "c");
        let st = gateway_status(&g, &o, Some(&deployment(2)), Timestamp::now());
        assert_eq!(get(&st, "Ready").status, "True");
        assert_eq!(get(&st, "Progressing").status, "False");
        assert_eq!(get(&st, "Degraded").status, "False");
        assert_eq!(get(&st, "CertificateExpiring").status, "False");
        assert_eq!(st.observed_generation, Some(3));
        assert_eq!(st.communities, 4);
        assert_eq!(st.ready_replicas, 2);
        assert_eq!(st.localization.as_deref(), Some("allCommunities"));
        let st = gateway_status(&g, &o, Some(&deployment(1)), Timestamp::now());
        assert_eq!(get(&st, "Ready").status, "False");
        assert_eq!(get(&st, "Progressing").reason, "RollingOut");
    }

    #[test]
    fn degraded_keeps_last_applied_checksum_and_says_why() {
        let mut g = gw();
        let o = applied(1, "good");
        g.status = Some(gateway_status(
            &g,
            &o,
            Some(&deployment(2)),
            Timestamp::now(),
        ));
        let p = problem(
            Reason::SecretMissing,
            "spec.tls.secretName (tls): Secret \"tls\" not found",
        );
        let st = gateway_status(
            &g,
            &Outcome::Degraded(p),
            Some(&deployment(2)),
            Timestamp::now(),
        );
        assert_eq!(st.applied_checksum.as_deref(), Some("good"));
        assert_eq!(get(&st, "Degraded").status, "True");
        assert_eq!(get(&st, "Degraded").reason, "SecretMissing");
        assert_eq!(get(&st, "Ready").status, "False");
        assert!(get(&st, "Ready").message.contains("keeps running"));
    }

    #[test]
    fn transition_time_is_kept_while_status_holds() {
        let mut g = gw();
        let t0 = Timestamp::from_second(1_000_000).unwrap();
        let o = applied(1, "c");
        g.status = Some(gateway_status(&g, &o, Some(&deployment(2)), t0));
        let st = gateway_status(&g, &o, Some(&deployment(2)), Timestamp::now());
        assert_eq!(get(&st, "Ready").last_transition_time.0, t0);
        assert!(
            !status_changed(g.status.as_ref().unwrap(), &st),
            "an unchanged status is not rewritten"
        );
    }

    #[test]
    fn paused_keeps_conditions_and_says_so() {
        let mut g = gw();
        let o = applied(1, "c");
        g.status = Some(gateway_status(
            &g,
            &o,
            Some(&deployment(2)),
            Timestamp::now(),
        ));
        g.metadata.generation = Some(4);
        let st = gateway_status(&g, &Outcome::Paused, Some(&deployment(2)), Timestamp::now());
        assert_eq!(get(&st, "Progressing").reason, "Paused");
        assert_eq!(
            get(&st, "Ready").status,
            "True",
            "the running gateway is still ready"
        );
        assert_eq!(
            st.observed_generation,
            Some(3),
            "generation 4 is not applied yet"
        );
        assert_eq!(st.applied_checksum.as_deref(), Some("c"));
    }

    #[test]
    fn expiring_certificate_sets_condition() {
        let g = gw();
        let mut c = cert();
        c.not_after = Timestamp::now() + jiff::SignedDuration::from_hours(24 * 10);
        let st = gateway_status(
            &g,
            &Outcome::Applied {
                certificate: Box::new(c),
                revocation: not_revoked(),
                communities: 0,
                checksum: "c".into(),
                skipped: vec![],
                xua: None,
                rollout_queued: None,
            },
            None,
            Timestamp::now(),
        );
        assert_eq!(get(&st, "CertificateExpiring").status, "True");
        assert_eq!(get(&st, "Ready").status, "False", "no Deployment yet");
    }

    #[test]
    fn expired_certificate_is_not_reported_as_valid() {
        let mut g = gw();
        let o = applied(1, "c");
        g.status = Some(gateway_status(&g, &o, None, Timestamp::now()));
        assert_eq!(
            get(g.status.as_ref().unwrap(), "CertificateExpiring").reason,
            "CertificateValid"
        );
        let p = problem(
            Reason::CertificateExpired,
            "spec.tls.secretName (tls): the certificate expired",
        );
        let st = gateway_status(&g, &Outcome::Degraded(p), None, Timestamp::now());
        let c = get(&st, "CertificateExpiring");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "CertificateExpired")
        );
    }

    #[test]
    fn revoked_certificate_sets_condition_and_degraded_keeps_it() {
        let mut g = gw();
        let o = applied(1, "c");
        g.status = Some(gateway_status(
            &g,
            &o,
            Some(&deployment(2)),
            Timestamp::now(),
        ));
        let c = get(g.status.as_ref().unwrap(), CERTIFICATE_REVOKED);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "CertificateNotRevoked")
        );
        assert!(
            c.message.contains("http://crl.example/ca.crl"),
            "{}",
            c.message
        );
        let revoked = Outcome::Applied {
            certificate: Box::new(cert()),
            revocation: OwnRevocation::from_check(Ok(Verdict::Revoked(Source::Ocsp(
                "http://ocsp.example".into(),
            )))),
            communities: 1,
            checksum: "c".into(),
            skipped: vec![],
            xua: None,
            rollout_queued: None,
        };
        let st = gateway_status(&g, &revoked, Some(&deployment(2)), Timestamp::now());
        let c = get(&st, CERTIFICATE_REVOKED);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "CertificateRevoked")
        );
        assert!(
            c.message.contains("OCSP http://ocsp.example"),
            "{}",
            c.message
        );
        assert_eq!(
            get(&st, "Ready").status,
            "True",
            "the running pods are not taken down by the operator"
        );
        assert!(status_changed(g.status.as_ref().unwrap(), &st));
        // a later spec problem keeps what is known about the certificate
        g.status = Some(st);
        let p = problem(
            Reason::InvalidSpec,
            "spec.connection: set exactly one of xds or tlb",
        );
        let st = gateway_status(
            &g,
            &Outcome::Degraded(p),
            Some(&deployment(2)),
            Timestamp::now(),
        );
        assert_eq!(get(&st, CERTIFICATE_REVOKED).status, "True");
        // unknown: every other verdict
        for (v, reason) in [
            (
                Ok(Verdict::Unavailable {
                    accepted: false,
                    detail: "CRL http://x/: connection refused".into(),
                }),
                "RevocationUnavailable",
            ),
            (
                Ok(Verdict::Unchecked { accepted: true }),
                "NoRevocationSource",
            ),
            (Err(ChainError("UnknownIssuer".into())), "ChainNotVerified"),
        ] {
            let o = Outcome::Applied {
                certificate: Box::new(cert()),
                revocation: OwnRevocation::from_check(v),
                communities: 1,
                checksum: "c".into(),
                skipped: vec![],
                xua: None,
                rollout_queued: None,
            };
            let st = gateway_status(&g, &o, Some(&deployment(2)), Timestamp::now());
            let c = get(&st, CERTIFICATE_REVOKED);
            assert_eq!((c.status.as_str(), c.reason.as_str()), ("Unknown", reason));
        }
        let o = Outcome::Applied {
            certificate: Box::new(cert()),
            revocation: OwnRevocation::disabled(),
            communities: 1,
            checksum: "c".into(),
            skipped: vec![],
            xua: None,
            rollout_queued: None,
        };
        let st = gateway_status(&g, &o, Some(&deployment(2)), Timestamp::now());
        assert_eq!(
            get(&st, CERTIFICATE_REVOKED).reason,
            "RevocationCheckDisabled"
        );
    }

    /// Every condition the reconcilers write, for every outcome and reason, at a fixed time: the status
    /// of a sequence of DuoGateway outcomes (each on top of the status before it, so that kept
    /// conditions and transition times show) and of MitzConnection checks, serialised as the status
    /// patch body and compared byte for byte with `operator/tests/golden/status.json`, captured before
    /// condition types and reasons became enums (`DUO_UPDATE_GOLDEN=1` rewrites it).
    #[test]
    fn status_matches_the_golden_file() {
        let t = |s: i64| Timestamp::from_second(1_700_000_000 + s).unwrap();
        let certificate = |days: i64| CertificateInfo {
            not_before: t(-86_400),
            not_after: t(days * 86_400),
            subject: "CN=duo.oost.example,O=Ziekenhuis Oost".into(),
            dns_names: vec!["duo.oost.example".into()],
            ura: Some("12345678".parse().unwrap()),
            uzi: None,
        };
        let with = |revocation: OwnRevocation, days: i64, skipped: Vec<build::SkippedCommunity>| {
            Outcome::Applied {
                certificate: Box::new(certificate(days)),
                revocation,
                communities: 2,
                checksum: format!("sum-{days}"),
                skipped,
                xua: Some(Box::new(XuaStatus {
                    issuer: "urn:oid:1.2.3".into(),
                    signing_certificate: None,
                    trusted_issuers: 1,
                    unsigned_allowed: false,
                })),
                rollout_queued: None,
            }
        };
        let skipped = vec![
            build::SkippedCommunity {
                community: "h/west".into(),
                reason: Reason::CommunityInvalid,
                message: "DuoCommunity h/west: spec.deadlineMs: must be greater than 0".into(),
            },
            build::SkippedCommunity {
                community: "h/noord".into(),
                reason: Reason::DuplicateHomeCommunityId,
                message: "DuoCommunity h/noord: spec.homeCommunityId urn:oid:1.2.3 is this gateway's own homeCommunityId".into(),
            },
        ];
        let src = || Source::Crl("http://crl.example/ca.crl".into());
        let mut steps: Vec<(String, Outcome, Option<Deployment>)> = vec![
            (
                "applied, available".into(),
                with(not_revoked(), 90, vec![]),
                Some(deployment(2)),
            ),
            (
                "applied, rolling out, expiring, revoked, communities skipped".into(),
                with(
                    OwnRevocation::from_check(Ok(Verdict::Revoked(Source::Ocsp(
                        "http://ocsp.example".into(),
                    )))),
                    10,
                    skipped,
                ),
                Some(deployment(1)),
            ),
            (
                "applied, no Deployment, revocation unavailable".into(),
                with(
                    OwnRevocation::from_check(Ok(Verdict::Unavailable {
                        accepted: false,
                        detail: format!("{}: connection refused", src()),
                    })),
                    90,
                    vec![],
                ),
                None,
            ),
            (
                "applied, no revocation source".into(),
                with(
                    OwnRevocation::from_check(Ok(Verdict::Unchecked { accepted: true })),
                    90,
                    vec![],
                ),
                Some(deployment(2)),
            ),
            (
                "applied, chain not verified".into(),
                with(
                    OwnRevocation::from_check(Err(ChainError("UnknownIssuer".into()))),
                    90,
                    vec![],
                ),
                Some(deployment(2)),
            ),
            (
                "applied, revocation disabled".into(),
                with(OwnRevocation::disabled(), 90, vec![]),
                Some(deployment(2)),
            ),
        ];
        for reason in [
            Reason::SecretMissing,
            Reason::SecretIncomplete,
            Reason::TrustBundleMissing,
            Reason::TrustBundleInvalid,
            Reason::InvalidSpec,
            Reason::MitzConnectionMissing,
            Reason::CertificateInvalid,
            Reason::CertificateKeyMismatch,
            Reason::CertificateNotYetValid,
            Reason::CertificateUraMismatch,
            Reason::ChildConflict,
            Reason::PublishConflict,
            Reason::ApplyFailed,
            Reason::CertificateNameMismatch,
            Reason::CertificateExpired,
        ] {
            steps.push((
                format!("degraded {reason}"),
                Outcome::Degraded(problem(reason, format!("what is wrong ({reason})"))),
                Some(deployment(2)),
            ));
        }
        steps.push((
            "degraded without a Deployment".into(),
            Outcome::Degraded(problem(Reason::SecretMissing, "no Secret")),
            None,
        ));
        steps.push((
            "applied again".into(),
            with(not_revoked(), 90, vec![]),
            Some(deployment(2)),
        ));
        let mut queued = with(not_revoked(), 90, vec![]);
        if let Outcome::Applied { rollout_queued, .. } = &mut queued {
            *rollout_queued =
                Some("the new gateway image waits: 2 gateways are rolling out".into());
        }
        steps.push((
            "applied, new image queued by the rollout cap".into(),
            queued,
            Some(deployment(2)),
        ));
        steps.push(("paused".into(), Outcome::Paused, Some(deployment(2))));
        let mut g = gw();
        let mut out = Vec::new();
        for (i, (case, outcome, d)) in steps.into_iter().enumerate() {
            g.metadata.generation = Some(3 + i as i64);
            let st = gateway_status(&g, &outcome, d.as_ref(), t(i as i64 * 60));
            out.push(serde_json::json!({"case": case, "status": st}));
            g.status = Some(st);
        }
        // the status does not read the spec: the build tests' MitzConnection serves
        let mut m = crate::build::tests::mitz();
        m.metadata.generation = Some(1);
        let checks: Vec<Result<CertificateInfo, Problem>> = vec![
            Ok(certificate(90)),
            Err(problem(
                Reason::SecretMissing,
                "spec.clientCertificateSecretName (mitz-client): Secret \"mitz-client\" not found",
            )),
            Err(problem(
                Reason::CertificateExpired,
                "the certificate expired",
            )),
            Err(problem(
                Reason::InvalidSpec,
                "spec.closedQuestionUrl: plain http",
            )),
            Err(problem(
                Reason::PlaceholderEndpoint,
                "spec.closedQuestionUrl: \"https://mitz.example.invalid/x\" is a placeholder",
            )),
            Ok(certificate(90)),
        ];
        for (i, checked) in checks.iter().enumerate() {
            let st = mitz_status(&m, checked, t(i as i64 * 60));
            out.push(
                serde_json::json!({"case": format!("MitzConnection check {i}"), "status": st}),
            );
            m.status = Some(st);
        }
        let got = serde_json::to_string_pretty(&out).unwrap() + "\n";
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/status.json");
        if std::env::var_os("DUO_UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &got).unwrap();
            return;
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (DUO_UPDATE_GOLDEN=1 writes it)", path.display()));
        assert!(
            got == want,
            "the statuses differ from {}:\n{got}",
            path.display()
        );
    }

    #[test]
    fn pause_annotation_is_case_insensitive() {
        let mut g = gw();
        assert!(!crate::crd::is_paused(&g));
        for v in ["true", "True", "TRUE"] {
            g.metadata.annotations = Some([(PAUSED_ANNOTATION.to_owned(), v.to_owned())].into());
            assert!(crate::crd::is_paused(&g), "{v}");
        }
        g.metadata.annotations = Some([(PAUSED_ANNOTATION.to_owned(), "yes".to_owned())].into());
        assert!(!crate::crd::is_paused(&g));
    }

    #[test]
    fn community_selection_by_label_and_namespace() {
        let g = Arc::new(gw());
        let mk = |ns: &str, net: &str| {
            let mut c = DuoCommunity::new(
                "c",
                DuoCommunitySpec {
                    home_community_id: "urn:oid:1.2.4".into(),
                    name: "c".into(),
                    organizations: vec![],
                    endpoints: CommunityEndpoints {
                        query_url: "https://a/1".into(),
                        retrieve_url: "https://a/2".into(),
                        imaging_retrieve_url: "https://a/3".into(),
                        connect_to: None,
                    },
                    trust: CommunityTrust::default(),
                    deadline_ms: 1000,
                    allow_plain_http: false,
                    fronted_communities: Vec::new(),
                },
            );
            c.metadata.namespace = Some(ns.into());
            c.metadata.labels = Some([("net".to_owned(), net.to_owned())].into());
            c
        };
        assert_eq!(
            gateways_selecting(std::slice::from_ref(&g), &mk("h", "a")).len(),
            1
        );
        assert_eq!(
            gateways_selecting(std::slice::from_ref(&g), &mk("h", "b")).len(),
            0
        );
        assert_eq!(
            gateways_selecting(std::slice::from_ref(&g), &mk("other", "a")).len(),
            0
        );
        let all = vec![
            Arc::new(mk("h", "a")),
            Arc::new(mk("h", "b")),
            Arc::new(mk("x", "a")),
        ];
        assert_eq!(selected_communities(&g, &all).unwrap().len(), 1);
    }
}
