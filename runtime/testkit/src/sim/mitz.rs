//! A Mitz simulator: an HTTPS server with mutual TLS that answers the closed question, the open question
//! and subscriptions from a YAML file of consents, in Mitz's formats.
//!
//! Endpoints (`{base}` = `basePath` of the file, default empty):
//! - `POST {base}/geslotenautorisatievraag/xacml3`: the closed question ([`crate::consent::xacml`]). The
//!   answer has the exact format of `testdata/mitz/xacml/derived/*.xml`, one `Result` per asked category;
//!   when more than one category is asked, every `Result` also echoes its category (XACML 3.0 §5.47).
//! - `POST {base}/openautorisatievraag`: the open question ([`crate::localization`]); the requester comes
//!   from the XUA assertion in the WS-Security header (audience [`xua::MITZ_AUDIENCE`], validity checked,
//!   signature not checked); a missing or invalid assertion is a SOAP Sender fault with HTTP 400.
//! - `POST {base}/abonnementen/fhir/Subscription`: a FHIR `Subscription` in XML or JSON as in
//!   `testdata/mitz/fhir/example_subscription.xml` (reason `OTV`, criteria
//!   `Consent?_query=otv&patientid=..&providerid=..&providertype=..`, rest-hook channel); answered 201 with
//!   `Location: Subscription/<id>`. A subscription with a `GatewaySystem` extension adds a location for the
//!   open question (`SourceSystem` becomes its source id).
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
//! locations:                         # for the open question
//!   - patient: "900186021"
//!     homeCommunityId: urn:oid:2.16.528.1.1007.3.3.659.1
//!     holder: "00000659"
//!     sourceId: urn:oid:2.16.528.1.1007.3.3.659.1.1   # optional
//!     category: GGC002                                 # optional, see below
//! faults:                            # fault injection per patient, for tests
//!   - patient: "900186021"
//!     delayMs: 5000                  # answer late
//!     httpStatus: 500                # answer with this status and an empty body
//!     garbage: true                  # answer 200 with a body that is not XML
//! ```
//!
//! Rule choice: among the rules for (patient, holder) whose `requester` and `category` are absent or
//! equal to the question's, the most specific wins (requester counts more than category); the first in
//! the file wins a tie. The open question lists a location when this rule choice gives Permit for the
//! requester's URA and the location's `category` (without one, only rules without a category count).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
use crate::model::{Bsn, DataCategory, HomeCommunityId, Ura};
use crate::tls::{TlsError, TlsMaterial};
use crate::xml::{Limits, Reader};

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
    /// Where patients' data is, for the open question.
    #[serde(default)]
    pub locations: Vec<LocationRule>,
    /// Fault injection per patient.
    #[serde(default)]
    pub faults: Vec<FaultRule>,
}

fn not_applicable() -> Decision {
    Decision::NotApplicable
}

impl Default for MitzSimConfig {
    /// No rules, no locations, no faults: every question is answered NotApplicable.
    fn default() -> Self {
        MitzSimConfig {
            base_path: String::new(),
            default_decision: Decision::NotApplicable,
            consents: Vec::new(),
            locations: Vec::new(),
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
        let mut best: Option<(u8, Decision)> = None;
        for r in &self.consents {
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
        best.map_or(self.default_decision, |(_, d)| d)
    }
}

/// Requests served, per endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SimStats {
    /// Closed questions received.
    pub closed_questions: u64,
    /// Open questions received.
    pub open_questions: u64,
    /// Subscriptions received.
    pub subscriptions: u64,
}

struct SimState {
    config: MitzSimConfig,
    extra_locations: Mutex<Vec<LocationRule>>,
    closed: AtomicU64,
    open: AtomicU64,
    subscriptions: AtomicU64,
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

    /// Requests served so far.
    pub fn stats(&self) -> SimStats {
        SimStats {
            closed_questions: self.state.closed.load(Ordering::SeqCst),
            open_questions: self.state.open.load(Ordering::SeqCst),
            subscriptions: self.state.subscriptions.load(Ordering::SeqCst),
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

/// Starts the simulator on `listen` (port 0 picks a free port) with `tls` as server identity; clients
/// must present a certificate that chains to `tls.roots`. Returns once the socket is bound.
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
    let state = Arc::new(SimState {
        config,
        extra_locations: Mutex::new(Vec::new()),
        closed: AtomicU64::new(0),
        open: AtomicU64::new(0),
        last_open: Mutex::new(None),
        subscriptions: AtomicU64::new(0),
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

async fn closed_question(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
    st.closed.fetch_add(1, Ordering::SeqCst);
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
                    let d = st.config.decide(p, h, r, Some(c));
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
    let extra = st
        .extra_locations
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let locations: Vec<PatientLocation> = st
        .config
        .locations
        .iter()
        .chain(extra.iter())
        .filter(|l| l.patient == patient)
        .filter(|l| {
            st.config
                .decide(&patient, &l.holder, requester, l.category.as_ref())
                == Decision::Permit
        })
        .map(|l| PatientLocation {
            home_community_id: l.home_community_id.clone(),
            corresponding_patient_id: None,
            source_id: l.source_id.clone(),
            holder_ura: Some(l.holder.clone()),
        })
        .collect();
    soap_response(
        StatusCode::OK,
        localization::write_location_answer(&h, &requested, &locations),
    )
}

/// The parts of a FHIR Subscription the simulator checks.
#[derive(Debug, Default)]
struct Subscription {
    reason: String,
    criteria: String,
    channel_type: String,
    gateway_system: Option<String>,
    source_system: Option<String>,
}

fn read_subscription_json(body: &[u8]) -> Result<Subscription, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    if v.get("resourceType").and_then(|r| r.as_str()) != Some("Subscription") {
        return Err("resourceType is not Subscription".into());
    }
    let s = |p: &str| {
        v.pointer(p)
            .and_then(|x| x.as_str())
            .unwrap_or("")
            .to_owned()
    };
    let mut sub = Subscription {
        reason: s("/reason"),
        criteria: s("/criteria"),
        channel_type: s("/channel/type"),
        ..Subscription::default()
    };
    for e in v
        .get("extension")
        .and_then(|e| e.as_array())
        .into_iter()
        .flatten()
    {
        let url = e.get("url").and_then(|u| u.as_str()).unwrap_or("");
        let val = e
            .get("valueOid")
            .and_then(|u| u.as_str())
            .map(str::to_owned);
        set_extension(&mut sub, url, val);
    }
    Ok(sub)
}

fn set_extension(sub: &mut Subscription, url: &str, value: Option<String>) {
    match url {
        "http://fhir.nl/StructureDefinition/GatewaySystem" => sub.gateway_system = value,
        "http://fhir.nl/StructureDefinition/SourceSystem" => sub.source_system = value,
        _ => {}
    }
}

const FHIR_NS: &str = "http://hl7.org/fhir";

fn read_subscription_xml(body: &[u8], limits: &Limits) -> Result<Subscription, String> {
    let mut r = Reader::new(body, limits).map_err(|e| e.to_string())?;
    let root = r.root().map_err(|e| e.to_string())?;
    if !root.is(FHIR_NS, "Subscription") {
        return Err(format!("{} is not a FHIR Subscription", root.qualified()));
    }
    let mut sub = Subscription::default();
    let value = |e: &crate::xml::Elem<'_>| e.attr("value").unwrap_or("").trim().to_owned();
    (|| -> Result<(), crate::xml::XmlError> {
        while let Some(c) = r.child(&root)? {
            if c.ns.uri() != FHIR_NS {
                continue;
            }
            match c.local {
                "reason" => sub.reason = value(&c),
                "criteria" => sub.criteria = value(&c),
                "channel" => {
                    while let Some(t) = r.child(&c)? {
                        if t.is(FHIR_NS, "type") {
                            sub.channel_type = value(&t);
                        }
                    }
                }
                "extension" => {
                    let url = c.attr("url").unwrap_or("").trim().to_owned();
                    let mut v = None;
                    while let Some(x) = r.child(&c)? {
                        if x.is(FHIR_NS, "valueOid") {
                            v = Some(value(&x));
                        }
                    }
                    set_extension(&mut sub, &url, v);
                }
                _ => {}
            }
        }
        Ok(())
    })()
    .map_err(|e| e.to_string())?;
    Ok(sub)
}

fn criteria_params(criteria: &str) -> Result<HashMap<String, String>, String> {
    let Some(q) = criteria.trim().strip_prefix("Consent?") else {
        return Err("criteria must start with Consent?".into());
    };
    let mut m = HashMap::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        m.insert(dec(k), dec(v));
    }
    Ok(m)
}

fn operation_outcome(status: StatusCode, msg: &str) -> Response {
    let body = serde_json::json!({
        "resourceType": "OperationOutcome",
        "issue": [{ "severity": "error", "code": "invalid", "diagnostics": msg }]
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/fhir+json")],
        body.to_string(),
    )
        .into_response()
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
    let parsed = if is_xml {
        read_subscription_xml(&body, &st.limits)
    } else {
        read_subscription_json(&body)
    };
    let sub = match parsed {
        Ok(s) => s,
        Err(e) => return operation_outcome(StatusCode::BAD_REQUEST, &e),
    };
    let params = match criteria_params(&sub.criteria) {
        Ok(p) => p,
        Err(e) => return operation_outcome(StatusCode::BAD_REQUEST, &e),
    };
    if let Some(r) = inject(&st, params.get("patientid").map(String::as_str)).await {
        return r;
    }
    if sub.reason != "OTV" {
        return operation_outcome(StatusCode::UNPROCESSABLE_ENTITY, "reason must be OTV");
    }
    if params.get("_query").map(String::as_str) != Some("otv") {
        return operation_outcome(
            StatusCode::UNPROCESSABLE_ENTITY,
            "criteria must have _query=otv",
        );
    }
    for p in ["patientid", "providerid", "providertype"] {
        if params.get(p).is_none_or(|v| v.is_empty()) {
            return operation_outcome(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("criteria must have {p}"),
            );
        }
    }
    if sub.channel_type != "rest-hook" {
        return operation_outcome(
            StatusCode::UNPROCESSABLE_ENTITY,
            "channel.type must be rest-hook",
        );
    }
    let id = format!("sim-{}", st.next_id.fetch_add(1, Ordering::SeqCst));
    // a data holder that registers with its gateway becomes a location for the open question
    if let (Some(gw), Ok(patient), Ok(holder)) = (
        sub.gateway_system
            .as_deref()
            .map(str::parse::<HomeCommunityId>),
        params["patientid"].parse::<Bsn>(),
        params["providerid"].parse::<Ura>(),
    ) && let Ok(home_community_id) = gw
    {
        st.extra_locations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(LocationRule {
                patient,
                home_community_id,
                holder,
                source_id: sub.source_system.clone(),
                category: None,
            });
    }
    let location = format!("Subscription/{id}");
    if is_xml {
        let mut w = crate::xml::Writer::new();
        w.decl();
        w.start("Subscription").attr("xmlns", FHIR_NS);
        w.start("id").attr("value", &id).end();
        w.start("status").attr("value", "requested").end();
        w.start("reason").attr("value", &sub.reason).end();
        w.start("criteria").attr("value", &sub.criteria).end();
        w.start("channel")
            .start("type")
            .attr("value", &sub.channel_type)
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

pub mod env;
#[cfg(test)]
mod tests;
