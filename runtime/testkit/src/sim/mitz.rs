//! A Mitz simulator: an HTTPS server with mutual TLS that answers the closed question, the open question
//! and subscriptions from a YAML file of consents, in Mitz's formats, keeps the registrations made by
//! subscriptions and pushes consent notifications to them.
//!
//! Endpoints (`{base}` = `basePath` of the file, default empty):
//! - `POST {base}/geslotenautorisatievraag/xacml3`: the closed question ([`crate::consent::xacml`]). The
//!   answer has the exact format of `testdata/mitz/xacml/derived/*.xml`, one `Result` per asked category;
//!   when more than one category is asked, every `Result` also echoes its category (XACML 3.0 §5.47).
//! - `POST {base}/openautorisatievraag`: the open question ([`crate::localization`]); the requester comes
//!   from the XUA assertion in the WS-Security header (audience [`xua::MITZ_AUDIENCE`], validity checked,
//!   signature not checked); a missing or invalid assertion is a SOAP Sender fault with HTTP 400. It is
//!   answered **only from registrations** (as Mitz does): a registration's community is listed when the
//!   rule choice below gives Permit for the requester's URA; registrations that differ only in provider
//!   type are listed once.
//! - `POST {base}/abonnementen/fhir/Subscription`: a FHIR `Subscription` in XML or JSON as in
//!   `testdata/mitz/fhir/example_subscription.xml` (reason `OTV`, criteria
//!   `Consent?_query=otv&patientid=<BSN>&providerid=<URA>&providertype=<facility type>`, rest-hook channel
//!   with an `https://` endpoint without userinfo, payload `application/fhir+xml` or
//!   `application/fhir+json` (absent: the request's format), extension `GatewaySystem` required,
//!   `SourceSystem` optional). It registers the holder ([`Registration`], key (patient, holder, provider
//!   type, GatewaySystem)) and is answered 201 with `Location: Subscription/sim-<n>`. Refused, registering
//!   nothing: malformed (400), a broken rule (422: a criteria parameter or extension given twice, an
//!   unknown criteria parameter or provider type, more than 16 extensions, ...), a second Subscription
//!   for a registered key (409, OperationOutcome issue code `duplicate` naming the existing id). Errors
//!   are OperationOutcomes in the request's format (XML for an XML request, JSON otherwise).
//! - Admin (same listener, same client certificates): `POST {base}/admin/down` and `POST {base}/admin/up`
//!   (204) make every other endpoint answer 503 (a SOAP Receiver fault for the questions, an
//!   OperationOutcome `transient` for subscriptions) until up again ([`MitzSim::set_down`]);
//!   `POST {base}/admin/consents` with one JSON [`ConsentRule`] (as in the file, camelCase) adds or
//!   replaces that rule and notifies ([`MitzSim::set_consent`]); answered 200 `{"notifications": n}`.
//!
//! Notifications: when a rule for (patient, holder) changes, every registration of that patient and
//! holder with an endpoint gets one FHIR transaction Bundle of the changed rules ([`notify`]) by HTTPS POST
//! with the simulator's own certificate as client certificate, `Content-Type` per its payload, no
//! redirects followed; a delivery not answered 2xx is retried up to 3 times (backoff 100, 200, 400 ms),
//! then counted failed ([`SimStats`]). Deliveries run in the background; the admin answer does not wait.
//!
//! The consents file ([`MitzSimConfig`], YAML, camelCase):
//!
//! ```yaml
//! defaultDecision: NotApplicable     # when no rule matches (default NotApplicable)
//! consents:
//!   - patient: "900186021"           # BSN
//!     holder: "00000659"             # data holder URA
//!     requester: "00000666"          # optional: only for this requesting organisation
//!     category: GGC002               # optional: only for this data category
//!     decision: Permit               # Permit | Deny | NotApplicable | Indeterminate
//! locations:                         # registrations made before the simulator started (no notifications)
//!   - patient: "900186021"
//!     homeCommunityId: urn:oid:2.16.528.1.1007.3.3.659.1
//!     holder: "00000659"
//!     sourceId: urn:oid:2.16.528.1.1007.3.3.659.1.1   # optional
//!     category: GGC002                                 # optional, see below
//! providerTypes: [V4, V5, V6, Z3]    # facility types a Subscription may name (default: B1 V4 V5 V6 Z3 Z4 Z5,
//!                                    # those of docs/DOMAIN.md and the sample Subscription)
//! faults:                            # fault injection per patient, for tests
//!   - patient: "900186021"
//!     delayMs: 5000                  # answer late
//!     httpStatus: 500                # answer with this status and an empty body
//!     garbage: true                  # answer 200 with a body that is not XML
//! ```
//!
//! Rule choice: among the rules for (patient, holder) whose `requester` and `category` are absent or
//! equal to the question's, the most specific wins (requester counts more than category); the first in
//! the file wins a tie. The open question lists a registration when this rule choice gives Permit for the
//! requester's URA and the registration's `category` (without one, only rules without a category count).
//! The rules are live: [`MitzSim::set_consent`], `POST {base}/admin/consents` and
//! [`MitzSim::replace_consents`] (the `mitz-sim` command's reload of the file) change them for every
//! later question. `locations`, `faults` and `providerTypes` are read once, at start.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use crate::consent::xacml::{self, CategoryDecision, Decision};
use crate::ihe::soap::{self, Fault, FaultCode, SoapHeader};
use crate::ihe::xua::{self, SignatureNotChecked, Validation};
use crate::localization::{self, PatientLocation};
use crate::model::{Bsn, DataCategory, FacilityType, HomeCommunityId, Ura};
use crate::tls::{TlsError, TlsMaterial};
use crate::xml::Limits;

use registry::Registry;
pub use registry::{NotificationPayload, Registration};
use subscription::Refusal;

/// The simulator's consents file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MitzSimConfig {
    /// Path prefix of every endpoint, e.g. `/mitz` (default empty).
    #[serde(default)]
    pub base_path: String,
    /// Decision when no rule matches (default NotApplicable: no consent on record).
    #[serde(default = "not_applicable")]
    pub default_decision: Decision,
    /// Consent rules.
    #[serde(default)]
    pub consents: Vec<ConsentRule>,
    /// Registrations made before the simulator started (the open question's locations); they get no
    /// notifications.
    #[serde(default)]
    pub locations: Vec<LocationRule>,
    /// Facility types (`providertype`) a Subscription may name; default [`default_provider_types`].
    #[serde(default = "default_provider_types")]
    pub provider_types: Vec<FacilityType>,
    /// Fault injection per patient.
    #[serde(default)]
    pub faults: Vec<FaultRule>,
}

fn not_applicable() -> Decision {
    Decision::NotApplicable
}

/// The facility types (code system `2.16.840.1.113883.2.4.15.1060`) named in docs/DOMAIN.md and the
/// sample Subscription: B1, V4, V5, V6, Z3, Z4, Z5. The full value set is not public; a file can list
/// more.
pub fn default_provider_types() -> Vec<FacilityType> {
    ["B1", "V4", "V5", "V6", "Z3", "Z4", "Z5"]
        .iter()
        .filter_map(|t| t.parse().ok())
        .collect()
}

impl Default for MitzSimConfig {
    /// No rules, no locations, no faults: every question is answered NotApplicable.
    fn default() -> Self {
        MitzSimConfig {
            base_path: String::new(),
            default_decision: Decision::NotApplicable,
            consents: Vec::new(),
            locations: Vec::new(),
            provider_types: default_provider_types(),
            faults: Vec::new(),
        }
    }
}

/// One consent rule (see the module documentation for how rules are chosen).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsentRule {
    /// The patient's BSN.
    pub patient: Bsn,
    /// The data holder's URA.
    pub holder: Ura,
    /// Only for this requesting organisation.
    #[serde(default)]
    pub requester: Option<Ura>,
    /// Only for this data category.
    #[serde(default)]
    pub category: Option<DataCategory>,
    /// The decision.
    pub decision: Decision,
}

/// A community holding a patient's data.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocationRule {
    /// The patient's BSN.
    pub patient: Bsn,
    /// The community.
    pub home_community_id: HomeCommunityId,
    /// The data holder's URA.
    pub holder: Ura,
    /// The source system (`urn:oid:...`).
    #[serde(default)]
    pub source_id: Option<String>,
    /// The category whose consent decides whether the location is shown.
    #[serde(default)]
    pub category: Option<DataCategory>,
}

/// Faults to inject for one patient, in this order: delay, then HTTP status or garbage.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultRule {
    /// The patient's BSN.
    pub patient: Bsn,
    /// Milliseconds to wait before answering.
    #[serde(default)]
    pub delay_ms: u64,
    /// Answer with this HTTP status and an empty body (as the nuts-knooppunt Mitz mock does for errors).
    #[serde(default)]
    pub http_status: Option<u16>,
    /// Answer 200 with a body that is not XML.
    #[serde(default)]
    pub garbage: bool,
}

/// Why the simulator did not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The consents file could not be read or parsed.
    #[error("{0}")]
    Config(String),
    /// The TLS material is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {err}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        err: std::io::Error,
    },
}

impl MitzSimConfig {
    /// Reads a consents file. Errors name the file and the field.
    pub fn load(path: &Path) -> Result<MitzSimConfig, SimError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SimError::Config(format!("{}: {e}", path.display())))?;
        MitzSimConfig::parse(&text)
            .map_err(|e| SimError::Config(format!("{}: {e}", path.display())))
    }

    /// Parses YAML text.
    pub fn parse(text: &str) -> Result<MitzSimConfig, String> {
        let mut path = String::new();
        let parsed = serde_saphyr::with_deserializer_from_str(text, |de| {
            serde_path_to_error::deserialize::<_, MitzSimConfig>(de).map_err(|e| {
                path = e.path().to_string();
                e.into_inner()
            })
        });
        parsed.map_err(|e| {
            let first = e.to_string();
            let first = first.lines().next().unwrap_or("invalid YAML").to_owned();
            if path.is_empty() || path == "." {
                first
            } else {
                format!("{path}: {first}")
            }
        })
    }

    /// The decision for a question, with the rule choice of the module documentation. `category` `None`
    /// considers only rules without a category.
    pub fn decide(
        &self,
        patient: &Bsn,
        holder: &Ura,
        requester: &Ura,
        category: Option<&DataCategory>,
    ) -> Decision {
        decide(
            &self.consents,
            self.default_decision,
            patient,
            holder,
            requester,
            category,
        )
    }
}

impl ConsentRule {
    /// Whether `other` is the rule for the same (patient, holder, requester, category).
    pub fn same_key(&self, other: &ConsentRule) -> bool {
        self.patient == other.patient
            && self.holder == other.holder
            && self.requester == other.requester
            && self.category == other.category
    }
}

/// The rule choice of the module documentation over `rules`; `default` when none matches.
fn decide(
    rules: &[ConsentRule],
    default: Decision,
    patient: &Bsn,
    holder: &Ura,
    requester: &Ura,
    category: Option<&DataCategory>,
) -> Decision {
    let mut best: Option<(u8, Decision)> = None;
    for r in rules {
        if &r.patient != patient || &r.holder != holder {
            continue;
        }
        if r.requester.as_ref().is_some_and(|u| u != requester) {
            continue;
        }
        match (&r.category, category) {
            (None, _) => {}
            (Some(rc), Some(c)) if rc == c => {}
            _ => continue,
        }
        let spec = 2 * u8::from(r.requester.is_some()) + u8::from(r.category.is_some());
        if best.is_none_or(|(s, _)| spec > s) {
            best = Some((spec, r.decision));
        }
    }
    best.map_or(default, |(_, d)| d)
}

/// The changes from `old` to `new` rules, keyed by (patient, holder, requester, category): every rule of
/// `new` that is not in `old` with the same decision, and every key of `old` missing from `new` as
/// withdrawn (decision NotApplicable). The first rule of a key counts, as in the rule choice.
pub fn consent_changes(old: &[ConsentRule], new: &[ConsentRule]) -> Vec<ConsentRule> {
    let first = |rules: &[ConsentRule], r: &ConsentRule| -> Option<Decision> {
        rules.iter().find(|x| x.same_key(r)).map(|x| x.decision)
    };
    let mut changes: Vec<ConsentRule> = Vec::new();
    for (i, r) in new.iter().enumerate() {
        if new[..i].iter().any(|x| x.same_key(r)) {
            continue;
        }
        if first(old, r) != Some(r.decision) {
            changes.push(r.clone());
        }
    }
    for (i, r) in old.iter().enumerate() {
        if old[..i].iter().any(|x| x.same_key(r)) || first(new, r).is_some() {
            continue;
        }
        changes.push(ConsentRule {
            decision: Decision::NotApplicable,
            ..r.clone()
        });
    }
    changes
}

/// Requests served, per endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SimStats {
    /// Closed questions received.
    pub closed_questions: u64,
    /// Open questions received.
    pub open_questions: u64,
    /// Subscription requests received (also those refused, and those answered 503 while down).
    pub subscriptions: u64,
    /// Distinct registrations made by Subscriptions (a refused or duplicate Subscription makes none;
    /// the file's `locations` are not counted).
    pub registrations: u64,
    /// Notification deliveries answered 2xx.
    pub notifications_sent: u64,
    /// Notification deliveries that failed every attempt.
    pub notifications_failed: u64,
}

struct SimState {
    /// The file as read at start (`consents` there is not used after start: see `rules`).
    config: MitzSimConfig,
    /// The live rule set.
    rules: RwLock<Vec<ConsentRule>>,
    registry: Mutex<Registry>,
    down: AtomicBool,
    notifier: Arc<notify::Notifier>,
    closed: AtomicU64,
    open: AtomicU64,
    subscriptions: AtomicU64,
    registrations: AtomicU64,
    next_id: AtomicU64,
    limits: Limits,
    /// The body of the last open question, as received (tests check its signed assertion).
    last_open: Mutex<Option<Bytes>>,
}

/// A running simulator. Dropping it stops accepting connections.
pub struct MitzSim {
    addr: SocketAddr,
    base_path: String,
    state: Arc<SimState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MitzSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MitzSim").field("addr", &self.addr).finish()
    }
}

impl MitzSim {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://<addr><basePath>`.
    pub fn base_url(&self) -> String {
        format!("https://{}{}", self.addr, self.base_path)
    }

    /// `{base}/geslotenautorisatievraag/xacml3`.
    pub fn closed_question_url(&self) -> String {
        format!("{}/geslotenautorisatievraag/xacml3", self.base_url())
    }

    /// `{base}/openautorisatievraag`.
    pub fn open_question_url(&self) -> String {
        format!("{}/openautorisatievraag", self.base_url())
    }

    /// `{base}/abonnementen/fhir/Subscription`.
    pub fn subscription_url(&self) -> String {
        format!("{}/abonnementen/fhir/Subscription", self.base_url())
    }

    /// `{base}/admin/<action>`: `down`, `up` or `consents` (see the module documentation).
    pub fn admin_url(&self, action: &str) -> String {
        format!("{}/admin/{action}", self.base_url())
    }

    /// Requests served, registrations made and notifications delivered so far.
    pub fn stats(&self) -> SimStats {
        let st = &self.state;
        SimStats {
            closed_questions: st.closed.load(Ordering::SeqCst),
            open_questions: st.open.load(Ordering::SeqCst),
            subscriptions: st.subscriptions.load(Ordering::SeqCst),
            registrations: st.registrations.load(Ordering::SeqCst),
            notifications_sent: st.notifier.sent.load(Ordering::SeqCst),
            notifications_failed: st.notifier.failed.load(Ordering::SeqCst),
        }
    }

    /// Every registration (seeded from the file's `locations` first, then those made by Subscriptions,
    /// in order).
    pub fn registrations(&self) -> Vec<Registration> {
        lock(&self.state.registry).all().to_vec()
    }

    /// Takes Mitz down (`true`: every non-admin endpoint answers 503) or up again.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// Whether the simulator is down ([`MitzSim::set_down`]).
    pub fn is_down(&self) -> bool {
        self.state.down.load(Ordering::SeqCst)
    }

    /// The live rule set.
    pub fn consents(&self) -> Vec<ConsentRule> {
        self.state
            .rules
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Adds `rule`, or replaces the rule with the same (patient, holder, requester, category), and
    /// notifies every registration of its patient and holder that has an endpoint. Returns the number of
    /// deliveries started (in the background, on the runtime the simulator was started on; see
    /// [`MitzSim::deliveries_settled`]).
    pub fn set_consent(&self, rule: ConsentRule) -> usize {
        self.state.set_consent(rule)
    }

    /// Replaces the live rule set with `rules` (the `mitz-sim` command's reload of its file) and
    /// notifies the registrations concerned of the changes ([`consent_changes`]; one Bundle per
    /// registration holding every change for its patient and holder). A rule set by
    /// [`MitzSim::set_consent`] that `rules` lacks is withdrawn like any other. Returns (changes,
    /// deliveries started).
    pub fn replace_consents(&self, rules: Vec<ConsentRule>) -> (usize, usize) {
        let changes = {
            let mut live = self.state.rules.write().unwrap_or_else(|p| p.into_inner());
            let changes = consent_changes(&live, &rules);
            *live = rules;
            changes
        };
        (changes.len(), self.state.notify(&changes))
    }

    /// Waits until no notification delivery is in flight (for tests; polls every 10 ms).
    pub async fn deliveries_settled(&self) {
        while self.state.notifier.in_flight.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The body of the last open question received, exactly as it arrived.
    pub fn last_open_question(&self) -> Option<Bytes> {
        self.state
            .last_open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops accepting, closes open connections and waits for the accept loop to end.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for MitzSim {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Watches a consents file for the `mitz-sim` command: [`ConsentsFileWatch::poll`] reloads it when its
/// modification time changed and hands the new rules to [`MitzSim::replace_consents`].
#[derive(Debug)]
pub struct ConsentsFileWatch {
    path: std::path::PathBuf,
    modified: Option<std::time::SystemTime>,
}

impl ConsentsFileWatch {
    /// Watches `path`, taking its current modification time as already loaded.
    pub fn new(path: &Path) -> ConsentsFileWatch {
        ConsentsFileWatch {
            path: path.to_owned(),
            modified: std::fs::metadata(path).and_then(|m| m.modified()).ok(),
        }
    }

    /// Reloads the file when its modification time differs from the last one seen and replaces the
    /// simulator's rules. `Ok(None)`: unchanged; `Ok(Some((changes, deliveries)))`: reloaded. Errors: the
    /// file cannot be read or parsed ([`SimError::Config`], naming the file and field); the live rules
    /// are kept and the same modification time is not retried.
    pub fn poll(&mut self, sim: &MitzSim) -> Result<Option<(usize, usize)>, SimError> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .map_err(|e| SimError::Config(format!("{}: {e}", self.path.display())))?;
        if self.modified == Some(modified) {
            return Ok(None);
        }
        self.modified = Some(modified);
        let cfg = MitzSimConfig::load(&self.path)?;
        Ok(Some(sim.replace_consents(cfg.consents)))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SimState {
    fn set_consent(&self, rule: ConsentRule) -> usize {
        {
            let mut live = self.rules.write().unwrap_or_else(|p| p.into_inner());
            match live.iter_mut().find(|r| r.same_key(&rule)) {
                Some(r) => *r = rule.clone(),
                None => live.push(rule.clone()),
            }
        }
        self.notify(std::slice::from_ref(&rule))
    }

    /// Starts one delivery per registration with an endpoint whose patient and holder have changes.
    fn notify(&self, changes: &[ConsentRule]) -> usize {
        let registrations: Vec<Registration> = lock(&self.registry)
            .all()
            .iter()
            .filter(|r| r.endpoint.is_some())
            .cloned()
            .collect();
        let mut started = 0;
        for reg in &registrations {
            let mine: Vec<ConsentRule> = changes
                .iter()
                .filter(|c| c.patient == reg.patient && c.holder == reg.holder)
                .cloned()
                .collect();
            let Some(endpoint) = &reg.endpoint else {
                continue;
            };
            if mine.is_empty() {
                continue;
            }
            let (content_type, body) = notify::Notification::new(reg, &mine).body();
            self.notifier.spawn(endpoint.clone(), content_type, body);
            started += 1;
        }
        started
    }
}

/// Starts the simulator on `listen` (port 0 picks a free port) with `tls` as server identity; clients
/// must present a certificate that chains to `tls.roots`. Notifications are sent with `tls` as client
/// identity, trusting `tls.roots`. Returns once the socket is bound.
pub async fn start(
    config: MitzSimConfig,
    listen: SocketAddr,
    tls: &TlsMaterial,
) -> Result<MitzSim, SimError> {
    let server_config = tls.server_config()?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|err| SimError::Bind { addr: listen, err })?;
    let addr = listener
        .local_addr()
        .map_err(|err| SimError::Bind { addr: listen, err })?;
    let base_path = config.base_path.trim_end_matches('/').to_owned();
    let mut registry = Registry::default();
    for (i, l) in config.locations.iter().enumerate() {
        let seeded = Registration {
            id: format!("seed-{}", i + 1),
            patient: l.patient.clone(),
            holder: l.holder.clone(),
            provider_type: None,
            home_community_id: l.home_community_id.clone(),
            source_id: l.source_id.clone(),
            category: l.category.clone(),
            endpoint: None,
            payload: NotificationPayload::Xml,
        };
        // two equal locations in the file are one registration
        let _ = registry.add(seeded);
    }
    let notifier = Arc::new(notify::Notifier {
        client: tls.http_client(Duration::from_secs(5))?,
        sent: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        in_flight: AtomicU64::new(0),
        runtime: tokio::runtime::Handle::current(),
    });
    let state = Arc::new(SimState {
        rules: RwLock::new(config.consents.clone()),
        config,
        registry: Mutex::new(registry),
        down: AtomicBool::new(false),
        notifier,
        closed: AtomicU64::new(0),
        open: AtomicU64::new(0),
        last_open: Mutex::new(None),
        subscriptions: AtomicU64::new(0),
        registrations: AtomicU64::new(0),
        next_id: AtomicU64::new(1),
        limits: Limits {
            max_bytes: 2 * 1024 * 1024,
            ..Limits::default()
        },
    });
    let app = Router::new()
        .route(
            &format!("{base_path}/geslotenautorisatievraag/xacml3"),
            post(closed_question),
        )
        .route(
            &format!("{base_path}/openautorisatievraag"),
            post(open_question),
        )
        .route(
            &format!("{base_path}/abonnementen/fhir/Subscription"),
            post(subscription),
        )
        .route(&format!("{base_path}/admin/down"), post(admin_down))
        .route(&format!("{base_path}/admin/up"), post(admin_up))
        .route(&format!("{base_path}/admin/consents"), post(admin_consents))
        .with_state(state.clone());
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config);
    let (tx, mut rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                _ = &mut rx => break,
                accepted = listener.accept() => {
                    let Ok((tcp, _peer)) = accepted else { continue };
                    let acceptor = acceptor.clone();
                    let app = app.clone();
                    conns.spawn(async move {
                        let handshake =
                            tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await;
                        let Ok(Ok(stream)) = handshake else { return };
                        let svc = TowerToHyperService::new(app);
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        conns.abort_all();
    });
    Ok(MitzSim {
        addr,
        base_path,
        state,
        shutdown: Some(tx),
        task: Some(task),
    })
}

fn soap_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/soap+xml; charset=UTF-8")],
        body,
    )
        .into_response()
}

fn sender_fault(reason: String, request: Option<&SoapHeader>) -> Response {
    soap_response(
        StatusCode::BAD_REQUEST,
        soap::write_fault(
            &Fault {
                code: FaultCode::Sender,
                subcode: None,
                reason,
            },
            request,
        ),
    )
}

/// Applies the faults configured for `patient`; `Some` is the response to send instead of the answer.
async fn inject(state: &SimState, patient: Option<&str>) -> Option<Response> {
    let patient = patient?;
    let rule = state
        .config
        .faults
        .iter()
        .find(|f| f.patient.as_str() == patient)?;
    if rule.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(rule.delay_ms)).await;
    }
    if let Some(s) = rule.http_status {
        let status = StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Some(status.into_response());
    }
    if rule.garbage {
        return Some(soap_response(
            StatusCode::OK,
            "this is not an XACML answer <<<&&&".into(),
        ));
    }
    None
}

fn message(d: Decision) -> (&'static str, &'static str) {
    match d {
        // the messages of the derived samples (nuts-knooppunt mock and e2e test)
        Decision::Permit => (xacml::STATUS_OK, "Consent granted"),
        Decision::Deny => (xacml::STATUS_OK, "No consent found"),
        Decision::NotApplicable => (xacml::STATUS_OK, "No applicable consent"),
        Decision::Indeterminate => (xacml::STATUS_PROCESSING_ERROR, "Could not be evaluated"),
    }
}

/// The answer of a question endpoint while down: a SOAP Receiver fault with HTTP 503.
fn soap_unavailable() -> Response {
    soap_response(
        StatusCode::SERVICE_UNAVAILABLE,
        soap::write_fault(
            &Fault {
                code: FaultCode::Receiver,
                subcode: None,
                reason: "Mitz is unavailable".into(),
            },
            None,
        ),
    )
}

async fn closed_question(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
    st.closed.fetch_add(1, Ordering::SeqCst);
    if st.down.load(Ordering::SeqCst) {
        return soap_unavailable();
    }
    let (_, q) = match xacml::read_closed_question(&body, &st.limits) {
        Ok(v) => v,
        Err(e) => return sender_fault(e.to_string(), None),
    };
    if let Some(r) = inject(&st, q.get(xacml::attr::RESOURCE_ID)).await {
        return r;
    }
    let patient = q
        .get(xacml::attr::RESOURCE_ID)
        .and_then(|s| s.parse::<Bsn>().ok());
    let holder = q
        .get(xacml::attr::HOLDER_URA)
        .and_then(|s| s.parse::<Ura>().ok());
    let requester = q
        .get(xacml::attr::PROVIDER_INSTITUTION)
        .and_then(|s| s.parse::<Ura>().ok());
    let categories: Vec<Option<DataCategory>> =
        q.categories.iter().map(|c| c.parse().ok()).collect();
    let rules = st.rules.read().unwrap_or_else(|p| p.into_inner()).clone();
    let results: Vec<CategoryDecision> = if categories.is_empty() {
        vec![CategoryDecision {
            category: DataCategory::default(),
            decision: Decision::Indeterminate,
            status_code: Some(xacml::STATUS_MISSING_ATTRIBUTE.into()),
            status_message: Some("no data category (action) in the question".into()),
        }]
    } else {
        categories
            .iter()
            .map(|c| match (&patient, &holder, &requester, c) {
                (Some(p), Some(h), Some(r), Some(c)) => {
                    let d = decide(&rules, st.config.default_decision, p, h, r, Some(c));
                    let (code, msg) = message(d);
                    CategoryDecision {
                        category: c.clone(),
                        decision: d,
                        status_code: Some(code.into()),
                        status_message: Some(msg.into()),
                    }
                }
                _ => CategoryDecision {
                    category: c.clone().unwrap_or_default(),
                    decision: Decision::Indeterminate,
                    status_code: Some(xacml::STATUS_MISSING_ATTRIBUTE.into()),
                    status_message: Some(
                        "patient, data holder, requester or category missing or invalid".into(),
                    ),
                },
            })
            .collect()
    };
    soap_response(
        StatusCode::OK,
        xacml::write_closed_answer(&results, categories.len() > 1),
    )
}

async fn open_question(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
    st.open.fetch_add(1, Ordering::SeqCst);
    *st.last_open.lock().unwrap_or_else(|p| p.into_inner()) = Some(body.clone());
    if st.down.load(Ordering::SeqCst) {
        return soap_unavailable();
    }
    let (h, requested) = match localization::read_location_query(&body, &st.limits) {
        Ok(v) => v,
        Err(e) => return sender_fault(e.to_string(), None),
    };
    if let Some(r) = inject(&st, Some(requested.extension.as_str())).await {
        return r;
    }
    let mut v = Validation::now();
    v.audiences = vec![xua::MITZ_AUDIENCE.into()];
    let assertion = match xua::from_soap_header(&h, &v, &SignatureNotChecked) {
        Ok(a) => a,
        Err(e) => return sender_fault(e.to_string(), Some(&h)),
    };
    if requested.root != Bsn::OID {
        return sender_fault(
            format!(
                "RequestedPatientId root {} is not the BSN OID",
                requested.root
            ),
            Some(&h),
        );
    }
    let Ok(patient) = requested.extension.parse::<Bsn>() else {
        return sender_fault(
            format!("RequestedPatientId {:?} is not a BSN", requested.extension),
            Some(&h),
        );
    };
    let requester = &assertion.requester.ura;
    let registered: Vec<Registration> = lock(&st.registry)
        .all()
        .iter()
        .filter(|r| r.patient == patient)
        .cloned()
        .collect();
    let rules = st.rules.read().unwrap_or_else(|p| p.into_inner()).clone();
    let mut locations: Vec<PatientLocation> = Vec::new();
    let permitted = registered
        .iter()
        .filter(|l| {
            decide(
                &rules,
                st.config.default_decision,
                &patient,
                &l.holder,
                requester,
                l.category.as_ref(),
            ) == Decision::Permit
        })
        .map(|l| PatientLocation {
            home_community_id: l.home_community_id.clone(),
            corresponding_patient_id: None,
            source_id: l.source_id.clone(),
            holder_ura: Some(l.holder.clone()),
        });
    // registrations that differ only in provider type are one location
    for l in permitted {
        if !locations.contains(&l) {
            locations.push(l);
        }
    }
    soap_response(
        StatusCode::OK,
        localization::write_location_answer(&h, &requested, &locations),
    )
}

fn operation_outcome(is_xml: bool, refusal: &Refusal) -> Response {
    if is_xml {
        let mut w = crate::xml::Writer::new();
        w.decl();
        w.start("OperationOutcome")
            .attr("xmlns", subscription::FHIR_NS);
        w.start("issue");
        w.start("severity").attr("value", "error").end();
        w.start("code").attr("value", refusal.code).end();
        w.start("diagnostics")
            .attr("value", &refusal.diagnostics)
            .end();
        w.end().end();
        (
            refusal.status,
            [(header::CONTENT_TYPE, "application/fhir+xml")],
            w.finish(),
        )
            .into_response()
    } else {
        let body = serde_json::json!({
            "resourceType": "OperationOutcome",
            "issue": [{ "severity": "error", "code": refusal.code, "diagnostics": refusal.diagnostics }]
        });
        (
            refusal.status,
            [(header::CONTENT_TYPE, "application/fhir+json")],
            body.to_string(),
        )
            .into_response()
    }
}

async fn subscription(
    State(st): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    st.subscriptions.fetch_add(1, Ordering::SeqCst);
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let is_xml = ct.contains("xml") || (!ct.contains("json") && body.first() == Some(&b'<'));
    if st.down.load(Ordering::SeqCst) {
        let refusal = Refusal {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "transient",
            diagnostics: "Mitz is unavailable".into(),
        };
        return operation_outcome(is_xml, &refusal);
    }
    let parsed = if is_xml {
        subscription::read_xml(&body, &st.limits)
    } else {
        subscription::read_json(&body)
    };
    let sub = match parsed {
        Ok(s) => s,
        Err(e) => return operation_outcome(is_xml, &e),
    };
    let params = match subscription::criteria_params(&sub.criteria) {
        Ok(p) => p,
        Err(e) => return operation_outcome(is_xml, &e),
    };
    if let Some(r) = inject(&st, subscription::param(&params, "patientid")).await {
        return r;
    }
    let request_payload = if is_xml {
        NotificationPayload::Xml
    } else {
        NotificationPayload::Json
    };
    let (reason, criteria, channel_type) = (
        sub.reason.clone(),
        sub.criteria.clone(),
        sub.channel_type.clone(),
    );
    let mut reg = match subscription::registration(
        sub,
        &params,
        &st.config.provider_types,
        request_payload,
    ) {
        Ok(r) => r,
        Err(e) => return operation_outcome(is_xml, &e),
    };
    let id = {
        let mut registry = lock(&st.registry);
        if let Some(existing) = registry.existing(&reg) {
            let refusal = Refusal {
                status: StatusCode::CONFLICT,
                code: "duplicate",
                diagnostics: format!(
                    "a Subscription for this patient, provider, provider type and GatewaySystem \
                     exists: Subscription/{}",
                    existing.id
                ),
            };
            return operation_outcome(is_xml, &refusal);
        }
        let id = format!("sim-{}", st.next_id.fetch_add(1, Ordering::SeqCst));
        reg.id = id.clone();
        // checked under the same lock just above: cannot collide
        let _ = registry.add(reg);
        st.registrations.fetch_add(1, Ordering::SeqCst);
        id
    };
    let location = format!("Subscription/{id}");
    if is_xml {
        let mut w = crate::xml::Writer::new();
        w.decl();
        w.start("Subscription").attr("xmlns", subscription::FHIR_NS);
        w.start("id").attr("value", &id).end();
        w.start("status").attr("value", "requested").end();
        w.start("reason").attr("value", &reason).end();
        w.start("criteria").attr("value", &criteria).end();
        w.start("channel")
            .start("type")
            .attr("value", &channel_type)
            .end()
            .end();
        w.end();
        (
            StatusCode::CREATED,
            [
                (header::CONTENT_TYPE, "application/fhir+xml".to_owned()),
                (header::LOCATION, location),
            ],
            w.finish(),
        )
            .into_response()
    } else {
        let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("id".into(), serde_json::Value::String(id));
        }
        (
            StatusCode::CREATED,
            [
                (header::CONTENT_TYPE, "application/fhir+json".to_owned()),
                (header::LOCATION, location),
            ],
            v.to_string(),
        )
            .into_response()
    }
}

async fn admin_down(State(st): State<Arc<SimState>>) -> StatusCode {
    st.down.store(true, Ordering::SeqCst);
    StatusCode::NO_CONTENT
}

async fn admin_up(State(st): State<Arc<SimState>>) -> StatusCode {
    st.down.store(false, Ordering::SeqCst);
    StatusCode::NO_CONTENT
}

/// `POST {base}/admin/consents`: one JSON [`ConsentRule`]; 400 with the reason when it is not one.
async fn admin_consents(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
    let rule: ConsentRule = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("not a consent rule: {e}\n"),
            )
                .into_response();
        }
    };
    let started = st.set_consent(rule);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "notifications": started }).to_string(),
    )
        .into_response()
}

pub mod env;
pub mod notify;
mod registry;
mod subscription;
#[cfg(test)]
mod tests;
