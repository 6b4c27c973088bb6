//! Certificate revocation checking: CRLs (RFC 5280) and OCSP (RFC 6960) for every certificate the
//! gateway relies on — peers' client certificates and the trusted front end's on the mutual-TLS
//! listener, peers', the local infrastructure's and Mitz's server certificates on outbound
//! connections, and the gateway's own certificate (at start and after every refresh).
//!
//! Rules (`revocation` in the configuration, [`crate::config::RevocationConfig`]):
//!
//! - **Only verified chains lead to fetches.** A certificate's chain is verified against the trust
//!   bundle first; only then are the CRL distribution points of the certificates on the verified path
//!   and the OCSP responder of the end-entity certificate fetched. A peer cannot make the gateway fetch
//!   a URL its CA did not sign. Only `http://` URLs are fetched (CRLs and OCSP answers are signed;
//!   https and LDAP are not used), never through a proxy, never following a redirect, at most
//!   `fetchTimeoutMs` per fetch and `maxCrlBytes` per CRL (64 KiB per OCSP answer), at most 4
//!   distribution points and 2 responders per certificate.
//! - **Checked before use.** A CRL is kept only when it is signed by the issuer of the certificate that
//!   named it (or, for `crlUrls`, by a CA of a trust bundle or a verified path); an OCSP answer only when
//!   [`ocsp::check`] accepts it. A bad fetch never replaces the last good data.
//! - **Cached and refreshed.** Every CRL and OCSP answer is refreshed every `refreshIntervalSeconds`
//!   (at most an hour) and when its nextUpdate passes, in the background; a failed fetch is retried
//!   within 30 s. The first connection with a certificate whose data is not cached yet waits for it
//!   (at most `fetchTimeoutMs`; concurrent connections share one fetch).
//! - **Decision for the end-entity certificate:** a CRL or OCSP answer that lists it as revoked refuses
//!   it at once, however old the data. Otherwise it is good when a *usable* CRL covers it (webpki's
//!   rules: same issuer, matching distribution point) or a usable OCSP answer (fetched, or stapled by a
//!   server) says good. Usable means: now is before nextUpdate (or fetch time plus the refresh interval
//!   when there is none) plus `graceSeconds`. Without usable data, `whenUnavailable` decides (default
//!   `refuse`); a certificate that names no distribution point and no responder and is covered by no
//!   CRL of `crlUrls` is decided by `withoutSource` (default `accept`, counted as `unchecked`).
//!   Intermediate CAs on the path are refused when a cached CRL lists them; unavailable data about them
//!   does not refuse.
//! - **Open connections.** When new data revokes a certificate or makes data unusable, the
//!   [`Checker::generation`] changes: the listener re-checks the client certificate of every open
//!   connection at its next request, and the gateway rebuilds its outbound clients (new connection
//!   pools).
//! - **Seen.** `duo_revocation_checks_total{result}` counts every decision (`good`, `revoked`,
//!   `unavailableRefused`, `unavailableAccepted`, `unchecked`, `uncheckedRefused`),
//!   `duo_revocation_fetches_total{kind,result}` every fetch, `duo_revocation_unusable_sources{kind}`
//!   the CRL URLs and OCSP answers without usable data, `duo_own_certificate_revoked` the gateway's own
//!   certificate; a fetch failure and a source turning unusable are logged once per change.
//!
//! rustls' own CRL support does the chain and CRL check of every handshake
//! ([`verifier::ClientVerifier`], [`verifier::ServerVerifier`] wrap `WebPkiClientVerifier` /
//! `WebPkiServerVerifier` built `with_crls`, rebuilt when the CRL set changes); the policy above is
//! applied on top with webpki's revocation options.

mod crl;
mod ocsp;
mod sig;
#[cfg(test)]
mod tests;
pub mod verifier;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex, Weak};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, TrustAnchor, UnixTime};
use tokio::sync::{mpsc, watch};
use x509_cert::der::asn1::AnyRef;
use x509_cert::der::oid::db::rfc5280::ID_AD_OCSP;
use x509_cert::der::{Decode, Encode, Tag};
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{AuthorityInfoAccessSyntax, CrlDistributionPoints};

use crate::config::{RevocationConfig, RevocationFallback};

pub use verifier::{ClientVerifier, ServerVerifier};

/// Most CRL distribution points used per certificate.
const MAX_DPS_PER_CERT: usize = 4;
/// Most OCSP responders asked per certificate.
const MAX_OCSP_URLS: usize = 2;
/// Most CRL URLs and OCSP answers kept; beyond that the least recently used are dropped.
const MAX_CRL_ENTRIES: usize = 256;
const MAX_OCSP_ENTRIES: usize = 10_000;
/// Entries not consulted for this long are dropped (configured CRLs stay).
const IDLE_EVICTION: SignedDuration = SignedDuration::from_hours(24);
/// Most seconds before a failed fetch is tried again.
const RETRY_SECONDS: i64 = 30;
/// Fetches running at once.
const CONCURRENT_FETCHES: usize = 4;

pub use crate::config::is_fetchable_url;

// --- metrics (process-wide: one gateway per process in production) ----------------------------

/// Labels of `duo_revocation_checks_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    /// `good`, `revoked`, `unavailableRefused`, `unavailableAccepted`, `unchecked`, `uncheckedRefused`.
    pub result: String,
}

/// Labels of `duo_revocation_fetches_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FetchLabels {
    /// `crl` or `ocsp`.
    pub kind: String,
    /// `ok` or `error`.
    pub result: String,
}

/// Labels of `duo_revocation_unusable_sources`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `crl` or `ocsp`.
    pub kind: String,
}

/// The revocation metrics, shared by every checker of the process.
pub struct RevocationMetrics {
    /// `duo_revocation_checks_total{result}`: decisions about end-entity certificates.
    pub checks: Family<CheckLabels, Counter>,
    /// `duo_revocation_fetches_total{kind,result}`: CRL and OCSP fetches.
    pub fetches: Family<FetchLabels, Counter>,
    /// `duo_revocation_unusable_sources{kind}`: CRL URLs / OCSP answers whose last good data is past
    /// nextUpdate plus the grace, or that never gave good data.
    pub unusable: Family<KindLabels, Gauge>,
    /// `duo_own_certificate_revoked`: 1 while the gateway's own certificate is known to be revoked.
    pub own_revoked: Gauge,
}

/// The process's revocation metrics.
pub static METRICS: LazyLock<RevocationMetrics> = LazyLock::new(|| RevocationMetrics {
    checks: Family::default(),
    fetches: Family::default(),
    unusable: Family::default(),
    own_revoked: Gauge::default(),
});

impl RevocationMetrics {
    /// Registers the metrics in `registry` (the gateway's, prefix `duo`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "revocation_checks",
            "Revocation decisions about certificates by result",
            self.checks.clone(),
        );
        registry.register(
            "revocation_fetches",
            "CRL and OCSP fetches by kind and result",
            self.fetches.clone(),
        );
        registry.register(
            "revocation_unusable_sources",
            "CRL URLs and OCSP answers without usable data (past nextUpdate plus grace, or none)",
            self.unusable.clone(),
        );
        registry.register(
            "own_certificate_revoked",
            "1 while the gateway's own certificate is known to be revoked",
            self.own_revoked.clone(),
        );
    }

    pub(crate) fn check(&self, result: &str) {
        self.checks
            .get_or_create(&CheckLabels {
                result: result.into(),
            })
            .inc();
    }

    fn fetch(&self, kind: &str, ok: bool) {
        self.fetches
            .get_or_create(&FetchLabels {
                kind: kind.into(),
                result: if ok { "ok" } else { "error" }.into(),
            })
            .inc();
    }
}

// --- the decision -----------------------------------------------------------------------------

/// Where a decision came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A CRL, fetched from this URL.
    Crl(String),
    /// An OCSP answer from this responder (or `stapled`).
    Ocsp(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Crl(u) => write!(f, "CRL {u}"),
            Source::Ocsp(u) => write!(f, "OCSP {u}"),
        }
    }
}

/// What the revocation check says about an end-entity certificate whose chain verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Usable data says it is not revoked.
    Good(Source),
    /// Data (usable or not) says it is revoked.
    Revoked(Source),
    /// It names sources, but none gave usable data; `accepted` per `whenUnavailable`.
    Unavailable {
        /// Whether the policy accepts it.
        accepted: bool,
        /// Why there is no usable data (one line).
        detail: String,
    },
    /// It names no source and no configured CRL covers it; `accepted` per `withoutSource`.
    Unchecked {
        /// Whether the policy accepts it.
        accepted: bool,
    },
}

impl Verdict {
    /// Whether the certificate may be used.
    pub fn accepted(&self) -> bool {
        match self {
            Verdict::Good(_) => true,
            Verdict::Revoked(_) => false,
            Verdict::Unavailable { accepted, .. } | Verdict::Unchecked { accepted } => *accepted,
        }
    }

    fn metric(&self) -> &'static str {
        match self {
            Verdict::Good(_) => "good",
            Verdict::Revoked(_) => "revoked",
            Verdict::Unavailable { accepted: true, .. } => "unavailableAccepted",
            Verdict::Unavailable {
                accepted: false, ..
            } => "unavailableRefused",
            Verdict::Unchecked { accepted: true } => "unchecked",
            Verdict::Unchecked { accepted: false } => "uncheckedRefused",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Good(s) => write!(f, "not revoked ({s})"),
            Verdict::Revoked(s) => write!(f, "revoked ({s})"),
            Verdict::Unavailable { accepted, detail } => write!(
                f,
                "revocation status unavailable ({detail}); {}",
                if *accepted { "accepted" } else { "refused" }
            ),
            Verdict::Unchecked { accepted } => write!(
                f,
                "certificate names no CRL or OCSP responder; {}",
                if *accepted { "accepted" } else { "refused" }
            ),
        }
    }
}

/// Which purpose the end-entity certificate is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A TLS client (the listener's peers, the trusted front end).
    Client,
    /// A TLS server (peers, Mitz, the local infrastructure; the gateway's own certificate).
    Server,
}

impl Usage {
    fn key_usage(self) -> webpki::KeyUsage {
        match self {
            Usage::Client => webpki::KeyUsage::client_auth(),
            Usage::Server => webpki::KeyUsage::server_auth(),
        }
    }
}

/// Why a chain could not be checked at all (it does not verify against the trust bundle).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ChainError(pub String);

// --- cache ------------------------------------------------------------------------------------

#[derive(Debug)]
struct Fetch {
    /// A fetch is running.
    in_flight: bool,
    /// Fetches tried.
    attempts: u64,
    /// Last failure, for logs and messages.
    last_error: Option<String>,
    /// When the next background fetch is due.
    next: Timestamp,
    /// Last time a check consulted the entry.
    used: Timestamp,
    /// Whether the entry's data was usable at the last look (to log and count changes once).
    usable: bool,
}

impl Fetch {
    fn new(now: Timestamp) -> Fetch {
        Fetch {
            in_flight: false,
            attempts: 0,
            last_error: None,
            next: now,
            used: now,
            usable: false,
        }
    }
}

/// (issuer Name DER, issuer SubjectPublicKeyInfo DER) of a CA that may sign a CRL.
type IssuerKey = (Vec<u8>, Vec<u8>);

#[derive(Debug)]
struct CrlEntry {
    /// Named in `crlUrls`: fetched from the start, never evicted, issuer looked up by name.
    configured: bool,
    /// (issuer Name DER, issuer SubjectPublicKeyInfo DER) of the certificates that named this URL.
    issuers: Vec<IssuerKey>,
    good: Option<(Arc<crl::Crl>, Timestamp)>,
    fetch: Fetch,
}

#[derive(Debug)]
struct OcspEntry {
    urls: Vec<String>,
    query: ocsp::Query,
    good: Option<(ocsp::Answer, Timestamp, String)>,
    fetch: Fetch,
}

#[derive(Debug, Default)]
struct State {
    crls: HashMap<String, CrlEntry>,
    ocsp: HashMap<Vec<u8>, OcspEntry>,
    /// CA keys by subject Name DER: trust anchors of every verifier and intermediates of verified
    /// paths; the candidates for a configured CRL's signature.
    issuers: HashMap<Vec<u8>, Vec<Vec<u8>>>,
}

enum Job {
    Crl(String),
    Ocsp(Vec<u8>),
}

struct Inner {
    cfg: RevocationConfig,
    state: Mutex<State>,
    settled: Condvar,
    jobs: mpsc::UnboundedSender<Job>,
    /// Bumped whenever the CRL set changes (rustls verifiers rebuild).
    crl_generation: AtomicU64,
    /// Bumped when data newly revokes a certificate or turns unusable (open connections re-check).
    generation: watch::Sender<u64>,
}

/// A revocation checker: cache, background fetcher and policy. Cheap to clone; one per distinct
/// `revocation` configuration in the process ([`checker`]), so reloads keep the cache.
#[derive(Clone)]
pub struct Checker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checker")
            .field("config", &self.inner.cfg)
            .finish()
    }
}

static CHECKERS: LazyLock<Mutex<Vec<Weak<Inner>>>> = LazyLock::new(|| Mutex::new(Vec::new()));

/// The process's checker for `cfg`: `None` when revocation checking is off. The same configuration
/// gets the same checker (and cache) for as long as one is in use.
pub fn checker(cfg: &RevocationConfig) -> Option<Checker> {
    if !cfg.enabled {
        return None;
    }
    let mut all = CHECKERS.lock().unwrap_or_else(|p| p.into_inner());
    all.retain(|w| w.strong_count() > 0);
    if let Some(inner) = all.iter().filter_map(Weak::upgrade).find(|i| &i.cfg == cfg) {
        return Some(Checker { inner });
    }
    let c = Checker::new(cfg.clone());
    all.push(Arc::downgrade(&c.inner));
    Some(c)
}

fn now_ts() -> Timestamp {
    Timestamp::now()
}

fn unix_to_ts(t: UnixTime) -> Timestamp {
    Timestamp::from_second(i64::try_from(t.as_secs()).unwrap_or(i64::MAX)).unwrap_or(Timestamp::MAX)
}

fn ts_to_unix(t: Timestamp) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(
        u64::try_from(t.as_second()).unwrap_or(0),
    ))
}

impl Checker {
    /// A new checker with its own cache and fetcher thread (prefer [`checker`]). The fetcher stops
    /// when the last clone is dropped.
    pub fn new(cfg: RevocationConfig) -> Checker {
        let (tx, rx) = mpsc::unbounded_channel();
        let now = now_ts();
        let mut state = State::default();
        for url in &cfg.crl_urls {
            state.crls.insert(
                url.clone(),
                CrlEntry {
                    configured: true,
                    issuers: Vec::new(),
                    good: None,
                    fetch: Fetch::new(now),
                },
            );
        }
        let inner = Arc::new(Inner {
            cfg,
            state: Mutex::new(state),
            settled: Condvar::new(),
            jobs: tx,
            crl_generation: AtomicU64::new(0),
            generation: watch::channel(0).0,
        });
        let weak = Arc::downgrade(&inner);
        let timeout = Duration::from_millis(inner.cfg.fetch_timeout_ms);
        let spawned = std::thread::Builder::new()
            .name("duo-revocation".into())
            .spawn(move || fetcher(weak, rx, timeout));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "revocation fetcher thread did not start; nothing will be fetched");
        }
        Checker { inner }
    }

    /// The configuration.
    pub fn config(&self) -> &RevocationConfig {
        &self.inner.cfg
    }

    /// Changes whenever new data revokes a certificate or makes data unusable.
    pub fn generation(&self) -> u64 {
        *self.inner.generation.borrow()
    }

    /// A receiver that sees every [`Checker::generation`] change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    fn bump(&self) {
        self.inner.generation.send_modify(|g| *g += 1);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn crl_generation(&self) -> u64 {
        self.inner.crl_generation.load(Ordering::SeqCst)
    }

    /// Every good CRL held, DER (for rustls' verifier builders).
    fn crl_ders(&self) -> Vec<CertificateRevocationListDer<'static>> {
        self.lock()
            .crls
            .values()
            .filter_map(|e| e.good.as_ref().map(|(c, _)| c.der.clone()))
            .collect()
    }

    /// Records the trust anchors of a verifier as CA keys that may sign configured CRLs.
    pub(crate) fn register_anchors(&self, roots: &RootCertStore) {
        let mut added = false;
        {
            let mut st = self.lock();
            for ta in &roots.roots {
                let Ok(subject) =
                    AnyRef::new(Tag::Sequence, ta.subject.as_ref()).and_then(|a| a.to_der())
                else {
                    continue;
                };
                let spki = webpki::spki_for_anchor(ta).as_ref().to_vec();
                added |= add_issuer(&mut st, subject, spki);
            }
        }
        if added {
            self.retry_configured();
        }
    }

    /// Configured CRLs that could not be verified yet are fetched again now that more CA keys are known.
    fn retry_configured(&self) {
        let now = now_ts();
        let mut st = self.lock();
        for e in st.crls.values_mut() {
            if e.configured && e.good.is_none() && !e.fetch.in_flight {
                e.fetch.next = now;
            }
        }
    }

    /// Usable-until of data with `next_update` fetched at `fetched`.
    fn usable_until(&self, next_update: Option<Timestamp>, fetched: Timestamp) -> Timestamp {
        let due = next_update.unwrap_or_else(|| {
            fetched + SignedDuration::from_secs(self.inner.cfg.refresh_interval_seconds as i64)
        });
        due + SignedDuration::from_secs(self.inner.cfg.grace_seconds as i64)
    }

    /// Decides about `ee` (with `intermediates` as presented) for `usage` at `now`, against `roots`;
    /// `stapled` is a server's stapled OCSP answer (empty when none). Fetches and waits for data not
    /// cached yet (blocking, at most `fetchTimeoutMs`). Counts the decision. Errors: the chain does
    /// not verify, so nothing was fetched.
    pub fn decide(
        &self,
        roots: &RootCertStore,
        ee: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        usage: Usage,
        stapled: &[u8],
        now: UnixTime,
    ) -> Result<Verdict, ChainError> {
        let verdict = self.decide_uncounted(roots, ee, intermediates, usage, stapled, now)?;
        METRICS.check(verdict.metric());
        Ok(verdict)
    }

    fn decide_uncounted(
        &self,
        roots: &RootCertStore,
        ee: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        usage: Usage,
        stapled: &[u8],
        now: UnixTime,
    ) -> Result<Verdict, ChainError> {
        let plan = Plan::of(roots, ee, intermediates, usage, now)?;
        let cfg = &self.inner.cfg;
        let t = unix_to_ts(now);
        // 1. CRLs named on the path: register, fetch what was never fetched, wait for it
        let crl_urls = self.register_crls(&plan, t);
        self.wait(&crl_urls, &[]);
        let named: Vec<String> = plan.crls.iter().map(|c| c.url.clone()).collect();
        let (all, usable, detail) = self.crls_for(&crl_urls, &named, t);
        // 2. listed anywhere, even in data too old to vouch for anything: revoked
        if let Some(src) = revoked_by(&all, roots, ee, intermediates, usage, now) {
            return Ok(Verdict::Revoked(src));
        }
        // 3. covered by usable CRL data
        if let Some(src) = covered_by(&usable, roots, ee, intermediates, usage, now) {
            return Ok(Verdict::Good(src));
        }
        let mut details = detail;
        // 4. OCSP: stapled, then the responder
        if cfg.ocsp
            && let Some(q) = &plan.ocsp
        {
            if !stapled.is_empty() {
                match ocsp::check(stapled, &q.query, now) {
                    Ok(a) if self.usable_until(a.next_update, a.this_update) >= t => match a.status
                    {
                        ocsp::Status::Good => {
                            return Ok(Verdict::Good(Source::Ocsp("stapled".into())));
                        }
                        ocsp::Status::Revoked => {
                            return Ok(Verdict::Revoked(Source::Ocsp("stapled".into())));
                        }
                        ocsp::Status::Unknown => details.push("stapled OCSP: unknown".into()),
                    },
                    Ok(a) if a.status == ocsp::Status::Revoked => {
                        return Ok(Verdict::Revoked(Source::Ocsp("stapled".into())));
                    }
                    Ok(_) => details.push("stapled OCSP answer is too old".into()),
                    Err(e) => details.push(format!("stapled OCSP: {e}")),
                }
            }
            if !q.urls.is_empty() {
                self.register_ocsp(q, t);
                self.wait(&[], std::slice::from_ref(&q.query.key));
                match self.ocsp_for(&q.query.key, t) {
                    Ok((ocsp::Status::Good, url)) => return Ok(Verdict::Good(Source::Ocsp(url))),
                    Ok((ocsp::Status::Revoked, url)) => {
                        return Ok(Verdict::Revoked(Source::Ocsp(url)));
                    }
                    Ok((ocsp::Status::Unknown, url)) => {
                        details.push(format!("OCSP {url}: the responder does not know it"));
                    }
                    Err(d) => details.push(d),
                }
            }
        }
        // 5. nothing usable
        let has_source = !named.is_empty()
            || (cfg.ocsp && plan.ocsp.as_ref().is_some_and(|q| !q.urls.is_empty()))
            || covered_by(&all, roots, ee, intermediates, usage, now).is_some();
        if !has_source {
            return Ok(Verdict::Unchecked {
                accepted: cfg.without_source == RevocationFallback::Accept,
            });
        }
        let detail = if details.is_empty() {
            "no CRL or OCSP answer".to_owned()
        } else {
            details.join("; ")
        };
        Ok(Verdict::Unavailable {
            accepted: cfg.when_unavailable == RevocationFallback::Accept,
            detail,
        })
    }

    /// Registers the distribution points of `plan` (and the configured CRLs) and starts fetches of
    /// those never fetched. Returns the URLs that may hold a CRL for the path.
    fn register_crls(&self, plan: &Plan, t: Timestamp) -> Vec<String> {
        let mut urls = Vec::new();
        let mut jobs = Vec::new();
        let mut new_issuer = false;
        {
            let mut st = self.lock();
            for (name, spki) in &plan.intermediate_issuers {
                new_issuer |= add_issuer(&mut st, name.clone(), spki.clone());
            }
            for target in &plan.crls {
                if !st.crls.contains_key(&target.url) && st.crls.len() >= MAX_CRL_ENTRIES {
                    evict_crl(&mut st);
                }
                let e = st
                    .crls
                    .entry(target.url.clone())
                    .or_insert_with(|| CrlEntry {
                        configured: false,
                        issuers: Vec::new(),
                        good: None,
                        fetch: Fetch::new(t),
                    });
                let pair = (target.issuer_name.clone(), target.issuer_spki.clone());
                if !e.issuers.contains(&pair) && e.issuers.len() < 4 {
                    e.issuers.push(pair);
                }
                e.fetch.used = t;
                if e.good.is_none() && e.fetch.attempts == 0 && !e.fetch.in_flight {
                    e.fetch.in_flight = true;
                    jobs.push(Job::Crl(target.url.clone()));
                }
                if !urls.contains(&target.url) {
                    urls.push(target.url.clone());
                }
            }
            for (url, e) in st.crls.iter_mut() {
                if e.configured {
                    e.fetch.used = t;
                    if !urls.contains(url) {
                        urls.push(url.clone());
                    }
                }
            }
        }
        for j in jobs {
            let _ = self.inner.jobs.send(j);
        }
        if new_issuer {
            self.retry_configured();
        }
        urls
    }

    fn register_ocsp(&self, q: &OcspPlan, t: Timestamp) {
        let job = {
            let mut st = self.lock();
            if !st.ocsp.contains_key(&q.query.key) && st.ocsp.len() >= MAX_OCSP_ENTRIES {
                evict_ocsp(&mut st);
            }
            let e = st
                .ocsp
                .entry(q.query.key.clone())
                .or_insert_with(|| OcspEntry {
                    urls: q.urls.clone(),
                    query: q.query.clone(),
                    good: None,
                    fetch: Fetch::new(t),
                });
            e.fetch.used = t;
            if e.good.is_none() && e.fetch.attempts == 0 && !e.fetch.in_flight {
                e.fetch.in_flight = true;
                Some(Job::Ocsp(q.query.key.clone()))
            } else {
                None
            }
        };
        if let Some(j) = job {
            let _ = self.inner.jobs.send(j);
        }
    }

    /// Waits (blocking, at most `fetchTimeoutMs`) until none of `crls` / `ocsp` has a first fetch
    /// running. On a multi-threaded Tokio worker the runtime is told first, so other tasks move on.
    fn wait(&self, crls: &[String], ocsp: &[Vec<u8>]) {
        let pending = |st: &State| {
            crls.iter().any(|u| {
                st.crls
                    .get(u)
                    .is_some_and(|e| e.good.is_none() && e.fetch.in_flight)
            }) || ocsp.iter().any(|k| {
                st.ocsp
                    .get(k)
                    .is_some_and(|e| e.good.is_none() && e.fetch.in_flight)
            })
        };
        if !pending(&self.lock()) {
            return;
        }
        let deadline = std::time::Instant::now()
            + Duration::from_millis(self.inner.cfg.fetch_timeout_ms + 250);
        let block = || {
            let mut st = self.lock();
            while pending(&st) {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                st = match self.inner.settled.wait_timeout(st, left) {
                    Ok((g, _)) => g,
                    Err(p) => p.into_inner().0,
                };
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(block)
            }
            _ => block(),
        }
    }

    /// The CRLs of `urls`: all good ones, the usable ones at `t`, and why those of `named` (the ones
    /// the path names) are not usable.
    #[allow(clippy::type_complexity)]
    fn crls_for(
        &self,
        urls: &[String],
        named: &[String],
        t: Timestamp,
    ) -> (
        Vec<(String, Arc<crl::Crl>)>,
        Vec<(String, Arc<crl::Crl>)>,
        Vec<String>,
    ) {
        let st = self.lock();
        let mut all = Vec::new();
        let mut usable = Vec::new();
        let mut why = Vec::new();
        for u in urls {
            let Some(e) = st.crls.get(u) else { continue };
            match &e.good {
                Some((c, fetched)) => {
                    all.push((u.clone(), c.clone()));
                    let until = self.usable_until(c.next_update, *fetched);
                    if until >= t {
                        usable.push((u.clone(), c.clone()));
                    } else if named.contains(u) {
                        why.push(format!(
                            "CRL {u}: last good CRL (thisUpdate {}, nextUpdate {}) is past its grace{}",
                            c.this_update,
                            c.next_update
                                .map(|n| n.to_string())
                                .unwrap_or_else(|| "none".into()),
                            e.fetch
                                .last_error
                                .as_ref()
                                .map(|x| format!(", last fetch: {x}"))
                                .unwrap_or_default()
                        ));
                    }
                }
                None if !named.contains(u) => {}
                None => why.push(format!(
                    "CRL {u}: {}",
                    e.fetch
                        .last_error
                        .clone()
                        .unwrap_or_else(|| "not fetched yet".into())
                )),
            }
        }
        (all, usable, why)
    }

    /// The usable OCSP status of `key` at `t` (with the responder URL), or why there is none.
    fn ocsp_for(&self, key: &[u8], t: Timestamp) -> Result<(ocsp::Status, String), String> {
        let st = self.lock();
        let Some(e) = st.ocsp.get(key) else {
            return Err("OCSP: no answer".into());
        };
        match &e.good {
            Some((a, _fetched, url)) => {
                if a.status == ocsp::Status::Revoked
                    || self.usable_until(a.next_update, a.this_update) >= t
                {
                    Ok((a.status, url.clone()))
                } else {
                    Err(format!(
                        "OCSP {url}: last good answer (thisUpdate {}) is past its grace{}",
                        a.this_update,
                        e.fetch
                            .last_error
                            .as_ref()
                            .map(|x| format!(", last fetch: {x}"))
                            .unwrap_or_default()
                    ))
                }
            }
            None => Err(format!(
                "OCSP {}: {}",
                e.urls.join(", "),
                e.fetch
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "no answer yet".into())
            )),
        }
    }

    /// Checks the gateway's own certificate chain (`chain`, leaf first) against `roots`, in a blocking
    /// task. A chain that does not verify against `roots` gives `Err` (nothing fetched).
    pub async fn check_own(
        &self,
        chain: Vec<CertificateDer<'static>>,
        roots: Arc<RootCertStore>,
    ) -> Result<Verdict, ChainError> {
        self.register_anchors(&roots);
        let me = self.clone();
        let verdict = tokio::task::spawn_blocking(move || {
            let Some((leaf, rest)) = chain.split_first() else {
                return Err(ChainError("no certificate".into()));
            };
            let now = UnixTime::now();
            me.decide_uncounted(&roots, leaf, rest, Usage::Server, &[], now)
        })
        .await
        .map_err(|e| ChainError(format!("check did not finish: {e}")))??;
        METRICS
            .own_revoked
            .set(i64::from(matches!(verdict, Verdict::Revoked(_))));
        Ok(verdict)
    }

    // --- background side ----------------------------------------------------------------------

    /// Jobs due at `t`; marks them in flight.
    fn due(&self, t: Timestamp) -> Vec<Job> {
        let mut st = self.lock();
        let mut jobs = Vec::new();
        let idle = t - IDLE_EVICTION;
        st.crls.retain(|_, e| e.configured || e.fetch.used >= idle);
        st.ocsp.retain(|_, e| e.fetch.used >= idle);
        for (url, e) in st.crls.iter_mut() {
            if !e.fetch.in_flight && e.fetch.next <= t {
                e.fetch.in_flight = true;
                jobs.push(Job::Crl(url.clone()));
            }
        }
        for (key, e) in st.ocsp.iter_mut() {
            if !e.fetch.in_flight && e.fetch.next <= t {
                e.fetch.in_flight = true;
                jobs.push(Job::Ocsp(key.clone()));
            }
        }
        jobs
    }

    /// Counts unusable sources and notes changes: a source turning unusable is logged once and bumps
    /// the generation (open connections re-check).
    fn survey(&self, t: Timestamp) {
        let mut changed = false;
        let (mut crl_bad, mut ocsp_bad) = (0i64, 0i64);
        {
            let mut st = self.lock();
            let cfg = &self.inner.cfg;
            let until = |next: Option<Timestamp>, fetched: Timestamp| {
                let due = next.unwrap_or_else(|| {
                    fetched + SignedDuration::from_secs(cfg.refresh_interval_seconds as i64)
                });
                due + SignedDuration::from_secs(cfg.grace_seconds as i64)
            };
            for (url, e) in st.crls.iter_mut() {
                let ok = e
                    .good
                    .as_ref()
                    .is_some_and(|(c, f)| until(c.next_update, *f) >= t);
                if !ok {
                    crl_bad += 1;
                }
                if e.fetch.usable && !ok {
                    changed = true;
                    tracing::warn!(url = %url, last_error = ?e.fetch.last_error, policy = ?cfg.when_unavailable,
                        "revocation: the last good CRL is past nextUpdate plus grace; certificates it covers now follow whenUnavailable");
                }
                e.fetch.usable = ok;
            }
            for e in st.ocsp.values_mut() {
                let ok = e
                    .good
                    .as_ref()
                    .is_some_and(|(a, _, _)| until(a.next_update, a.this_update) >= t);
                if !ok {
                    ocsp_bad += 1;
                }
                if e.fetch.usable && !ok {
                    changed = true;
                    tracing::warn!(urls = ?e.urls, last_error = ?e.fetch.last_error, policy = ?cfg.when_unavailable,
                        "revocation: the last good OCSP answer is past nextUpdate plus grace");
                }
                e.fetch.usable = ok;
            }
        }
        for (kind, n) in [("crl", crl_bad), ("ocsp", ocsp_bad)] {
            METRICS
                .unusable
                .get_or_create(&KindLabels { kind: kind.into() })
                .set(n);
        }
        if changed {
            self.bump();
        }
    }

    /// What a CRL fetch of `url` needs: whether it is configured, and the (name, key) candidates.
    fn crl_issuers(&self, url: &str) -> Option<(bool, Vec<IssuerKey>)> {
        let st = self.lock();
        let e = st.crls.get(url)?;
        Some((e.configured, e.issuers.clone()))
    }

    /// Keys registered for the CA named `name` (Name DER).
    fn keys_for(&self, name: &[u8]) -> Vec<Vec<u8>> {
        self.lock().issuers.get(name).cloned().unwrap_or_default()
    }

    fn retry_at(&self, t: Timestamp) -> Timestamp {
        t + SignedDuration::from_secs(
            RETRY_SECONDS.min(self.inner.cfg.refresh_interval_seconds as i64),
        )
    }

    fn next_after_success(&self, t: Timestamp, next_update: Option<Timestamp>) -> Timestamp {
        let mut next =
            t + SignedDuration::from_secs(self.inner.cfg.refresh_interval_seconds as i64);
        if let Some(n) = next_update
            && n > t
            && n < next
        {
            next = n;
        }
        next.max(t + SignedDuration::from_secs(1))
    }

    fn settle_crl(&self, url: &str, result: Result<crl::Crl, String>) {
        let t = now_ts();
        METRICS.fetch("crl", result.is_ok());
        let (revokes_more, set_changed) = {
            let mut st = self.lock();
            let retry = self.retry_at(t);
            let Some(e) = st.crls.get_mut(url) else {
                return;
            };
            e.fetch.in_flight = false;
            e.fetch.attempts += 1;
            // CRLs come over plain http: an older CRL (a replay, a stale mirror) must not replace the
            // newer one held, or a certificate it revoked would be accepted again
            let result = match (result, &e.good) {
                (Ok(new), Some((old, _)))
                    if new.this_update < old.this_update
                        || (new.this_update == old.this_update
                            && !old.serials.is_subset(&new.serials)) =>
                {
                    Err(format!(
                        "the CRL fetched (thisUpdate {}) is older than the one held (thisUpdate {}), or lists fewer revocations with the same thisUpdate: kept the newer",
                        new.this_update, old.this_update
                    ))
                }
                (r, _) => r,
            };
            match result {
                Ok(new) => {
                    e.fetch.next = self.next_after_success(t, new.next_update);
                    e.fetch.last_error = None;
                    let old = e.good.take();
                    let revokes_more = match &old {
                        None => !new.serials.is_empty(),
                        Some((o, _)) => new.serials.iter().any(|s| !o.serials.contains(s)),
                    };
                    let set_changed = old.as_ref().is_none_or(|(o, _)| o.der != new.der);
                    // data that becomes usable again matters only to the next handshakes
                    e.good = Some((Arc::new(new), t));
                    (revokes_more, set_changed)
                }
                Err(err) => {
                    if e.fetch.last_error.as_deref() != Some(err.as_str()) {
                        tracing::warn!(url = %url, error = %err, "revocation: CRL fetch failed; the last good CRL stays");
                    }
                    e.fetch.last_error = Some(err);
                    e.fetch.next = retry;
                    (false, false)
                }
            }
        };
        if set_changed {
            self.inner.crl_generation.fetch_add(1, Ordering::SeqCst);
        }
        if revokes_more {
            self.bump();
        }
        self.inner.settled.notify_all();
    }

    fn settle_ocsp(&self, key: &[u8], result: Result<(ocsp::Answer, String), String>) {
        let t = now_ts();
        METRICS.fetch("ocsp", result.is_ok());
        let newly_revoked = {
            let mut st = self.lock();
            let retry = self.retry_at(t);
            let Some(e) = st.ocsp.get_mut(key) else {
                return;
            };
            e.fetch.in_flight = false;
            e.fetch.attempts += 1;
            // OCSP answers come over plain http and carry no nonce: an older answer (a replay) must not
            // replace the one held, and a certificate once answered revoked stays revoked (RFC 5280
            // §5.3.1: revocation is permanent; certificateHold is not used for UZI certificates)
            let result = match (result, &e.good) {
                (Ok((a, _)), Some((held, _, _))) if a.this_update < held.this_update => Err(format!(
                    "the OCSP answer (thisUpdate {}) is older than the one held (thisUpdate {}): kept the newer",
                    a.this_update, held.this_update
                )),
                (Ok((a, _)), Some((held, _, _)))
                    if held.status == ocsp::Status::Revoked && a.status != ocsp::Status::Revoked =>
                {
                    Err("the OCSP responder no longer says revoked: a revoked certificate stays revoked".to_owned())
                }
                (r, _) => r,
            };
            match result {
                Ok((a, url)) => {
                    e.fetch.next = self.next_after_success(t, a.next_update);
                    e.fetch.last_error = None;
                    let was = e.good.as_ref().map(|g| g.0.status);
                    e.good = Some((a, t, url));
                    a.status == ocsp::Status::Revoked && was != Some(ocsp::Status::Revoked)
                }
                Err(err) => {
                    if e.fetch.last_error.as_deref() != Some(err.as_str()) {
                        tracing::warn!(urls = ?e.urls, error = %err, "revocation: OCSP fetch failed; the last good answer stays");
                    }
                    e.fetch.last_error = Some(err);
                    e.fetch.next = retry;
                    false
                }
            }
        };
        if newly_revoked {
            self.bump();
        }
        self.inner.settled.notify_all();
    }

    fn ocsp_job(&self, key: &[u8]) -> Option<(Vec<String>, ocsp::Query)> {
        let st = self.lock();
        st.ocsp.get(key).map(|e| (e.urls.clone(), e.query.clone()))
    }
}

fn add_issuer(st: &mut State, name: Vec<u8>, spki: Vec<u8>) -> bool {
    let keys = st.issuers.entry(name).or_default();
    if keys.contains(&spki) || keys.len() >= 8 {
        return false;
    }
    keys.push(spki);
    true
}

fn evict_crl(st: &mut State) {
    if let Some(url) = st
        .crls
        .iter()
        .filter(|(_, e)| !e.configured && !e.fetch.in_flight)
        .min_by_key(|(_, e)| e.fetch.used)
        .map(|(u, _)| u.clone())
    {
        st.crls.remove(&url);
    }
}

fn evict_ocsp(st: &mut State) {
    if let Some(k) = st
        .ocsp
        .iter()
        .filter(|(_, e)| !e.fetch.in_flight)
        .min_by_key(|(_, e)| e.fetch.used)
        .map(|(k, _)| k.clone())
    {
        st.ocsp.remove(&k);
    }
}

/// What [`webpki_check`] asks of the CRLs.
#[derive(Clone, Copy)]
enum CrlQuestion {
    /// Does a CRL list any certificate of the path (unknown status allowed)?
    RevokedOnPath,
    /// Does a CRL cover the end-entity certificate (unknown status denied)?
    CoversEndEntity,
}

/// webpki's check of the path with `crls`: `Ok(true)` covered and not revoked, `Ok(false)` not
/// covered, `Err` revoked (or a CRL webpki refuses).
fn webpki_check(
    crls: &[(String, Arc<crl::Crl>)],
    roots: &RootCertStore,
    ee: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    usage: Usage,
    now: UnixTime,
    question: CrlQuestion,
) -> Result<bool, webpki::Error> {
    let (depth, unknown) = match question {
        CrlQuestion::RevokedOnPath => (
            webpki::RevocationCheckDepth::Chain,
            webpki::UnknownStatusPolicy::Allow,
        ),
        CrlQuestion::CoversEndEntity => (
            webpki::RevocationCheckDepth::EndEntity,
            webpki::UnknownStatusPolicy::Deny,
        ),
    };
    if crls.is_empty() {
        return Ok(false);
    }
    let refs: Vec<&webpki::CertRevocationList<'static>> =
        crls.iter().map(|(_, c)| c.list.as_ref()).collect();
    let Ok(builder) = webpki::RevocationOptionsBuilder::new(&refs) else {
        return Ok(false);
    };
    let options = builder
        .with_depth(depth)
        .with_status_policy(unknown)
        .with_expiration_policy(webpki::ExpirationPolicy::Ignore)
        .build();
    let cert = webpki::EndEntityCert::try_from(ee)?;
    let algs = rustls::crypto::ring::default_provider()
        .signature_verification_algorithms
        .all;
    match cert.verify_for_usage(
        algs,
        &roots.roots,
        intermediates,
        now,
        usage.key_usage(),
        Some(options),
        None,
    ) {
        Ok(_) => Ok(true),
        Err(webpki::Error::UnknownRevocationStatus) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The CRL among `crls` that lists a certificate of the path as revoked, if any.
fn revoked_by(
    crls: &[(String, Arc<crl::Crl>)],
    roots: &RootCertStore,
    ee: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    usage: Usage,
    now: UnixTime,
) -> Option<Source> {
    for c in crls {
        let r = webpki_check(
            std::slice::from_ref(c),
            roots,
            ee,
            intermediates,
            usage,
            now,
            CrlQuestion::RevokedOnPath,
        );
        if matches!(r, Err(webpki::Error::CertRevoked)) {
            return Some(Source::Crl(c.0.clone()));
        }
    }
    None
}

/// The CRL among `crls` that covers the end-entity certificate (and does not list it).
fn covered_by(
    crls: &[(String, Arc<crl::Crl>)],
    roots: &RootCertStore,
    ee: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    usage: Usage,
    now: UnixTime,
) -> Option<Source> {
    crls.iter()
        .find(|c| {
            matches!(
                webpki_check(
                    std::slice::from_ref(*c),
                    roots,
                    ee,
                    intermediates,
                    usage,
                    now,
                    CrlQuestion::CoversEndEntity,
                ),
                Ok(true)
            )
        })
        .map(|c| Source::Crl(c.0.clone()))
}

// --- what a verified path names ----------------------------------------------------------------

struct CrlTarget {
    url: String,
    issuer_name: Vec<u8>,
    issuer_spki: Vec<u8>,
}

struct OcspPlan {
    urls: Vec<String>,
    query: ocsp::Query,
}

/// What the verified path of one end-entity certificate names: CRL distribution points of every
/// certificate on it (with the key that must have signed each CRL), the end entity's OCSP responders
/// and question, and the intermediates as CA keys.
struct Plan {
    crls: Vec<CrlTarget>,
    ocsp: Option<OcspPlan>,
    intermediate_issuers: Vec<IssuerKey>,
}

fn chain_err(e: impl std::fmt::Display) -> ChainError {
    ChainError(e.to_string())
}

/// HTTP URIs of a certificate's full-name distribution points (no reason-partitioned or indirect
/// ones, which webpki does not use either).
fn distribution_points(cert: &x509_cert::Certificate) -> Vec<String> {
    let Ok(Some((_, dps))) = cert.tbs_certificate.get::<CrlDistributionPoints>() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for dp in dps.0 {
        if dp.reasons.is_some() || dp.crl_issuer.is_some() {
            continue;
        }
        let Some(DistributionPointName::FullName(names)) = dp.distribution_point else {
            continue;
        };
        for n in names {
            if let GeneralName::UniformResourceIdentifier(u) = n
                && is_fetchable_url(u.as_str())
                && out.len() < MAX_DPS_PER_CERT
                && !out.iter().any(|o| o == u.as_str())
            {
                out.push(u.as_str().to_owned());
            }
        }
    }
    out
}

fn ocsp_urls(cert: &x509_cert::Certificate) -> Vec<String> {
    let Ok(Some((_, aia))) = cert.tbs_certificate.get::<AuthorityInfoAccessSyntax>() else {
        return Vec::new();
    };
    aia.0
        .into_iter()
        .filter(|d| d.access_method == ID_AD_OCSP)
        .filter_map(|d| match d.access_location {
            GeneralName::UniformResourceIdentifier(u) if is_fetchable_url(u.as_str()) => {
                Some(u.as_str().to_owned())
            }
            _ => None,
        })
        .take(MAX_OCSP_URLS)
        .collect()
}

impl Plan {
    fn of(
        roots: &RootCertStore,
        ee: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        usage: Usage,
        now: UnixTime,
    ) -> Result<Plan, ChainError> {
        let algs = rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .all;
        let cert = webpki::EndEntityCert::try_from(ee).map_err(chain_err)?;
        let path = cert
            .verify_for_usage(
                algs,
                &roots.roots,
                intermediates,
                now,
                usage.key_usage(),
                None,
                None,
            )
            .map_err(chain_err)?;
        // the path from the end entity up: each certificate with the SPKI of its issuer
        let mut certs: Vec<Vec<u8>> = vec![ee.as_ref().to_vec()];
        certs.extend(
            path.intermediate_certificates()
                .map(|c| c.der().as_ref().to_vec()),
        );
        let mut issuer_spkis: Vec<Vec<u8>> = path
            .intermediate_certificates()
            .map(|c| c.subject_public_key_info().as_ref().to_vec())
            .collect();
        issuer_spkis.push(webpki::spki_for_anchor(path.anchor()).as_ref().to_vec());
        let ee_issuer_anchor: TrustAnchor<'static> = match path.intermediate_certificates().next() {
            Some(i) => webpki::anchor_from_trusted_cert(&i.der())
                .map_err(chain_err)?
                .to_owned(),
            None => path.anchor().to_owned(),
        };
        let mut plan = Plan {
            crls: Vec::new(),
            ocsp: None,
            intermediate_issuers: Vec::new(),
        };
        for (i, (der, issuer_spki)) in certs.iter().zip(&issuer_spkis).enumerate() {
            let parsed = x509_cert::Certificate::from_der(der).map_err(|e| {
                ChainError(format!(
                    "certificate {} of the path cannot be read: {e}",
                    i + 1
                ))
            })?;
            let issuer_name = parsed.tbs_certificate.issuer.to_der().map_err(chain_err)?;
            if i > 0 {
                let subject = parsed.tbs_certificate.subject.to_der().map_err(chain_err)?;
                let spki = parsed
                    .tbs_certificate
                    .subject_public_key_info
                    .to_der()
                    .map_err(chain_err)?;
                plan.intermediate_issuers.push((subject, spki));
            }
            for url in distribution_points(&parsed) {
                plan.crls.push(CrlTarget {
                    url,
                    issuer_name: issuer_name.clone(),
                    issuer_spki: issuer_spki.clone(),
                });
            }
            if i == 0 {
                let urls = ocsp_urls(&parsed);
                let query = ocsp::query(
                    &issuer_name,
                    parsed.tbs_certificate.serial_number.as_bytes(),
                    ocsp::Issuer {
                        spki: issuer_spki.clone(),
                        anchor: ee_issuer_anchor.clone(),
                    },
                )
                .map_err(|e| ChainError(format!("OCSP question: {e}")))?;
                plan.ocsp = Some(OcspPlan { urls, query });
            }
        }
        Ok(plan)
    }
}

// --- the fetcher thread ----------------------------------------------------------------------

/// The User-Agent of revocation fetches (a CA's web server log then says who fetched).
const USER_AGENT: &str = concat!("duo-gateway/", env!("CARGO_PKG_VERSION"), " revocation");

/// The fetcher's HTTP client: built by the one constructor of outbound clients (no redirects, no proxy,
/// HTTP/1.1), plain `http://` only (CRLs and OCSP answers are signed), each fetch bounded by `timeout`
/// as a whole (see [`fetch_crl`] and [`fetch_ocsp`]).
fn http_client(timeout: Duration) -> Result<reqwest::Client, String> {
    crate::tls::outbound_client(timeout, None)
        .map(reqwest::Client::from)
        .map_err(|e| e.to_string())
}

/// Reads at most `max` bytes of a 200 answer.
async fn read_body(resp: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    use futures::StreamExt;
    if resp.status() != reqwest::StatusCode::OK {
        return Err(format!("HTTP {}", resp.status().as_u16()));
    }
    if resp.content_length().is_some_and(|l| l > max as u64) {
        return Err(format!("larger than {max} bytes"));
    }
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("reading: {e}"))?;
        if body.len() + chunk.len() > max {
            return Err(format!("larger than {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn fetch_crl(
    checker: &Checker,
    http: &reqwest::Client,
    url: &str,
) -> Result<crl::Crl, String> {
    let max = usize::try_from(checker.inner.cfg.max_crl_bytes).unwrap_or(usize::MAX);
    let resp = http
        .get(url)
        .timeout(Duration::from_millis(checker.inner.cfg.fetch_timeout_ms))
        .header(http::header::USER_AGENT, USER_AGENT)
        .send()
        .await
        .map_err(|e| format!("fetch: {}", error_chain(&e)))?;
    let body = read_body(resp, max).await?;
    let (configured, issuers) = checker.crl_issuers(url).ok_or("no longer wanted")?;
    let me = checker.clone();
    // decoding and checking a large CRL is CPU work: off the fetcher's event loop
    tokio::task::spawn_blocking(move || {
        let mut last = Err("no issuer known for this CRL".to_owned());
        for (name, key) in &issuers {
            last = crl::read(&body, Some(name), std::slice::from_ref(key));
            if last.is_ok() {
                return last;
            }
        }
        if configured {
            // a configured CRL: any CA of that name from a trust bundle or a verified path
            let name = crl::issuer_of(&body)?;
            last = crl::read(&body, Some(&name), &me.keys_for(&name));
        }
        last
    })
    .await
    .map_err(|e| format!("check: {e}"))?
}

async fn fetch_ocsp(
    http: &reqwest::Client,
    timeout: Duration,
    urls: &[String],
    q: &ocsp::Query,
) -> Result<(ocsp::Answer, String), String> {
    let mut errors = Vec::new();
    for url in urls {
        let result = async {
            let resp = http
                .post(url)
                .timeout(timeout)
                .header(http::header::USER_AGENT, USER_AGENT)
                .header(http::header::CONTENT_TYPE, "application/ocsp-request")
                .header(http::header::ACCEPT, "application/ocsp-response")
                .body(q.request.clone())
                .send()
                .await
                .map_err(|e| format!("fetch: {}", error_chain(&e)))?;
            let body = read_body(resp, ocsp::MAX_RESPONSE_BYTES).await?;
            ocsp::check(&body, q, UnixTime::now())
        }
        .await;
        match result {
            Ok(a) => return Ok((a, url.clone())),
            Err(e) => errors.push(format!("{url}: {e}")),
        }
    }
    Err(errors.join("; "))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

fn fetcher(weak: Weak<Inner>, mut rx: mpsc::UnboundedReceiver<Job>, timeout: Duration) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "revocation fetcher: no runtime");
            return;
        }
    };
    rt.block_on(async move {
        let http = match http_client(timeout) {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "revocation fetcher: no HTTP client");
                return;
            }
        };
        let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_FETCHES));
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let jobs = tokio::select! {
                job = rx.recv() => match job {
                    Some(j) => vec![j],
                    None => return,
                },
                _ = tick.tick() => {
                    let Some(inner) = weak.upgrade() else { return };
                    let c = Checker { inner };
                    let t = now_ts();
                    c.survey(t);
                    c.due(t)
                }
            };
            for job in jobs {
                let weak = weak.clone();
                let http = http.clone();
                let permits = permits.clone();
                tokio::spawn(async move {
                    let _permit = permits.acquire_owned().await;
                    let Some(inner) = weak.upgrade() else { return };
                    let c = Checker { inner };
                    match job {
                        Job::Crl(url) => {
                            let r = fetch_crl(&c, &http, &url).await;
                            c.settle_crl(&url, r);
                        }
                        Job::Ocsp(key) => {
                            let Some((urls, q)) = c.ocsp_job(&key) else {
                                return;
                            };
                            let r = fetch_ocsp(&http, timeout, &urls, &q).await;
                            c.settle_ocsp(&key, r);
                        }
                    }
                });
            }
        }
    });
}

/// For tests: the unix time `t` as rustls takes it.
#[doc(hidden)]
pub fn unix_time(t: Timestamp) -> UnixTime {
    ts_to_unix(t)
}
