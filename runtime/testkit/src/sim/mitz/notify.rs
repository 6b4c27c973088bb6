//! Consent notifications: the FHIR transaction Bundle Mitz pushes to a subscriber when a consent changes
//! (shape of `testdata/mitz/fhir/example_notification_bundle.xml`), in XML or JSON, and its delivery over
//! mutual TLS with retries.
//!
//! Per changed rule the Bundle holds one `Consent` (profile `Consent-Mitz-Notify|3.8.0`): status `active`
//! with `provision.type` `permit` for Permit, status `inactive` without `provision.type` for anything else
//! (Deny, NotApplicable = withdrawn, Indeterminate); then the `Patient` (BSN) and the `Organization` (the
//! holder's URA and, when registered, its facility type). Mitz's consents are per category of requesting
//! organisation (OTV-ProviderCategory), the simulator's rules per requesting URA: every Consent names the
//! category RPZAC104 (hospitals, the requesters of DUO). A rule without a data category is written with
//! the project's default category ([`DataCategory::default`], GGC002).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use super::ConsentRule;
use super::registry::{NotificationPayload, Registration};
use super::subscription::FHIR_NS;
use crate::consent::xacml::Decision;
use crate::model::DataCategory;
use crate::tls::OutboundClient;
use crate::xml::Writer;

const PROFILE: &str = "http://vzvz.nl/fhir/StructureDefinition/Consent-Mitz-Notify|3.8.0";
const PROVIDER_CATEGORY: &str = "http://fhir.nl/StructureDefinition/OTV-ProviderCategory";
const PROVIDER_CATEGORY_SYSTEM: &str =
    "http://fhir.nl/otv/CodeSystem/raadplegende-zorgaanbiedercategorie";
const HOSPITALS: (&str, &str) = (
    "RPZAC104",
    "Ziekenhuizen, medische centra, klinieken, laboratoria en diagnostische centra",
);
const SCOPE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/consentscope";
const CATEGORY_SYSTEM: &str = "http://fhir.nl/otv/CodeSystem/gegevenscategorie";
const PARTICIPATION_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
const ACT_REASON_SYSTEM: &str = "http://hl7.org/fhir/v3/ActReason";
/// The identifier system of a BSN in a notification.
pub const BSN_SYSTEM: &str = "http://fhir.nl/fhir/NamingSystem/bsn";
/// The identifier system of a URA in a notification.
pub const URA_SYSTEM: &str = "http://fhir.nl/fhir/NamingSystem/ura";
const ORGANIZATION_TYPE_SYSTEM: &str = "http://nictiz.nl/fhir/NamingSystem/organization-type";
/// The terminology version the sample's codings carry.
const VERSION: &str = "3960100";
const XHTML_NS: &str = "http://www.w3.org/1999/xhtml";

/// Display names of the data categories the project names (docs/DOMAIN.md); others are written without.
fn category_display(c: &DataCategory) -> Option<&'static str> {
    match c.as_str() {
        "GGC002" => Some("Behandelgegevens"),
        "GGC007" => Some("Medische Beelden"),
        _ => None,
    }
}

/// One Consent of a Bundle, with what the writers need.
struct ConsentEntry {
    id: String,
    permit: bool,
    category: DataCategory,
    text: String,
}

/// A notification for one registration: the ids are fresh uuids, `date_time` is RFC 3339.
pub(super) struct Notification<'a> {
    registration: &'a Registration,
    bundle_id: String,
    patient_id: String,
    organization_id: String,
    date_time: String,
    consents: Vec<ConsentEntry>,
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl<'a> Notification<'a> {
    /// The notification of `rules` (all for the registration's patient and holder) to `registration`.
    pub(super) fn new(registration: &'a Registration, rules: &[ConsentRule]) -> Notification<'a> {
        let consents = rules
            .iter()
            .map(|r| {
                let category = r.category.clone().unwrap_or_default();
                let permit = r.decision == Decision::Permit;
                let what = category_display(&category).unwrap_or(category.as_str());
                let text = format!(
                    "De patiënt verleent {}toestemming om {what} beschikbaar te stellen aan \
                     behandelaren in {}.",
                    if permit { "" } else { "geen " },
                    HOSPITALS.1
                );
                ConsentEntry {
                    id: uuid(),
                    permit,
                    category,
                    text,
                }
            })
            .collect();
        Notification {
            registration,
            bundle_id: uuid(),
            patient_id: uuid(),
            organization_id: uuid(),
            date_time: jiff::Timestamp::now().to_string(),
            consents,
        }
    }

    /// The Bundle in the registration's payload format, with its `Content-Type`.
    pub(super) fn body(&self) -> (&'static str, String) {
        let p = self.registration.payload;
        let body = match p {
            NotificationPayload::Xml => self.xml(),
            NotificationPayload::Json => self.json().to_string(),
        };
        (p.mime(), body)
    }

    /// The Bundle as FHIR XML.
    pub(super) fn xml(&self) -> String {
        let mut w = Writer::with_capacity(4096);
        w.decl();
        w.start("Bundle").attr("xmlns", FHIR_NS);
        value(&mut w, "id", &self.bundle_id);
        value(&mut w, "type", "transaction");
        for c in &self.consents {
            w.start("entry");
            value(&mut w, "fullUrl", &format!("urn:uuid:{}", c.id));
            w.start("resource").start("Consent");
            value(&mut w, "id", &c.id);
            w.start("meta");
            value(&mut w, "profile", PROFILE);
            w.end();
            w.start("text");
            value(&mut w, "status", "generated");
            w.start("div").attr("xmlns", XHTML_NS).text(&c.text).end();
            w.end();
            w.start("extension").attr("url", PROVIDER_CATEGORY);
            w.start("valueCodeableConcept");
            coding(
                &mut w,
                PROVIDER_CATEGORY_SYSTEM,
                Some(VERSION),
                HOSPITALS.0,
                Some(HOSPITALS.1),
            );
            w.end().end();
            value(
                &mut w,
                "status",
                if c.permit { "active" } else { "inactive" },
            );
            w.start("scope");
            coding(&mut w, SCOPE_SYSTEM, Some(VERSION), "patient-privacy", None);
            w.end();
            w.start("category");
            coding(
                &mut w,
                CATEGORY_SYSTEM,
                Some(VERSION),
                c.category.as_str(),
                category_display(&c.category),
            );
            w.end();
            w.start("patient");
            value(
                &mut w,
                "reference",
                &format!("urn:uuid:{}", self.patient_id),
            );
            w.end();
            value(&mut w, "dateTime", &self.date_time);
            w.start("provision");
            if c.permit {
                value(&mut w, "type", "permit");
            }
            w.start("actor").start("role");
            coding(&mut w, PARTICIPATION_SYSTEM, None, "CST", None);
            w.end();
            w.start("reference");
            value(
                &mut w,
                "reference",
                &format!("urn:uuid:{}", self.organization_id),
            );
            w.end().end();
            w.start("purpose");
            value(&mut w, "system", ACT_REASON_SYSTEM);
            value(&mut w, "code", "TREAT");
            w.end();
            w.end(); // provision
            w.end().end(); // Consent, resource
            request(&mut w, "Consent");
            w.end();
        }
        let reg = self.registration;
        w.start("entry");
        value(&mut w, "fullUrl", &format!("urn:uuid:{}", self.patient_id));
        w.start("resource").start("Patient");
        value(&mut w, "id", &self.patient_id);
        w.start("identifier");
        value(&mut w, "system", BSN_SYSTEM);
        value(&mut w, "value", reg.patient.as_str());
        w.end();
        w.end().end();
        request(&mut w, "Patient");
        w.end();
        w.start("entry");
        value(
            &mut w,
            "fullUrl",
            &format!("urn:uuid:{}", self.organization_id),
        );
        w.start("resource").start("Organization");
        value(&mut w, "id", &self.organization_id);
        w.start("identifier");
        value(&mut w, "system", URA_SYSTEM);
        value(&mut w, "value", reg.holder.as_str());
        w.end();
        if let Some(t) = &reg.provider_type {
            w.start("type");
            coding(
                &mut w,
                ORGANIZATION_TYPE_SYSTEM,
                Some(VERSION),
                t.as_str(),
                None,
            );
            w.end();
        }
        w.end().end();
        request(&mut w, "Organization");
        w.end();
        w.finish()
    }

    /// The Bundle as FHIR JSON (the same content as [`Notification::xml`]).
    pub(super) fn json(&self) -> Value {
        let coding = |system: &str, version: Option<&str>, code: &str, display: Option<&str>| {
            let mut c = json!({ "system": system });
            if let Some(v) = version {
                c["version"] = json!(v);
            }
            c["code"] = json!(code);
            if let Some(d) = display {
                c["display"] = json!(d);
            }
            c
        };
        let reg = self.registration;
        let mut entries: Vec<Value> = self
            .consents
            .iter()
            .map(|c| {
                let mut provision = json!({});
                if c.permit {
                    provision["type"] = json!("permit");
                }
                provision["actor"] = json!([{
                    "role": { "coding": [coding(PARTICIPATION_SYSTEM, None, "CST", None)] },
                    "reference": { "reference": format!("urn:uuid:{}", self.organization_id) }
                }]);
                provision["purpose"] = json!([{ "system": ACT_REASON_SYSTEM, "code": "TREAT" }]);
                json!({
                    "fullUrl": format!("urn:uuid:{}", c.id),
                    "resource": {
                        "resourceType": "Consent",
                        "id": c.id,
                        "meta": { "profile": [PROFILE] },
                        "text": {
                            "status": "generated",
                            "div": format!("<div xmlns=\"{XHTML_NS}\">{}</div>",
                                quick_xml::escape::escape(c.text.as_str())),
                        },
                        "extension": [{
                            "url": PROVIDER_CATEGORY,
                            "valueCodeableConcept": { "coding": [coding(
                                PROVIDER_CATEGORY_SYSTEM, Some(VERSION), HOSPITALS.0, Some(HOSPITALS.1)
                            )] }
                        }],
                        "status": if c.permit { "active" } else { "inactive" },
                        "scope": { "coding": [coding(SCOPE_SYSTEM, Some(VERSION), "patient-privacy", None)] },
                        "category": [{ "coding": [coding(
                            CATEGORY_SYSTEM, Some(VERSION), c.category.as_str(), category_display(&c.category)
                        )] }],
                        "patient": { "reference": format!("urn:uuid:{}", self.patient_id) },
                        "dateTime": self.date_time,
                        "provision": provision,
                    },
                    "request": { "method": "POST", "url": "Consent" }
                })
            })
            .collect();
        entries.push(json!({
            "fullUrl": format!("urn:uuid:{}", self.patient_id),
            "resource": {
                "resourceType": "Patient",
                "id": self.patient_id,
                "identifier": [{ "system": BSN_SYSTEM, "value": reg.patient.as_str() }]
            },
            "request": { "method": "POST", "url": "Patient" }
        }));
        let mut org = json!({
            "resourceType": "Organization",
            "id": self.organization_id,
            "identifier": [{ "system": URA_SYSTEM, "value": reg.holder.as_str() }]
        });
        if let Some(t) = &reg.provider_type {
            org["type"] = json!([{ "coding": [coding(
                ORGANIZATION_TYPE_SYSTEM, Some(VERSION), t.as_str(), None
            )] }]);
        }
        entries.push(json!({
            "fullUrl": format!("urn:uuid:{}", self.organization_id),
            "resource": org,
            "request": { "method": "POST", "url": "Organization" }
        }));
        json!({
            "resourceType": "Bundle",
            "id": self.bundle_id,
            "type": "transaction",
            "entry": entries
        })
    }
}

/// `<name value="v"/>`.
fn value(w: &mut Writer, name: &str, v: &str) {
    w.start(name).attr("value", v).end();
}

fn coding(w: &mut Writer, system: &str, version: Option<&str>, code: &str, display: Option<&str>) {
    w.start("coding");
    value(w, "system", system);
    if let Some(v) = version {
        value(w, "version", v);
    }
    value(w, "code", code);
    if let Some(d) = display {
        value(w, "display", d);
    }
    w.end();
}

fn request(w: &mut Writer, url: &str) {
    w.start("request");
    value(w, "method", "POST");
    value(w, "url", url);
    w.end();
}

/// Attempts per delivery: the first and up to 3 retries.
pub(super) const ATTEMPTS: u32 = 4;
/// Wait before the first retry; doubled before each next one.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Deadline of one attempt (connect, send, answer).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Delivers notifications and counts them.
pub(super) struct Notifier {
    /// Mutual TLS with the simulator's identity, no redirects ([`crate::tls::TlsMaterial::http_client`]).
    pub client: OutboundClient,
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    /// Deliveries started and not yet finished.
    pub in_flight: AtomicU64,
    /// The runtime the simulator was started on, where deliveries run (so a rule can be set from any
    /// thread).
    pub runtime: tokio::runtime::Handle,
}

impl Notifier {
    /// Starts delivering `body` to `endpoint` in the background: up to [`ATTEMPTS`] POSTs, until one is
    /// answered 2xx; counted sent or failed once finished.
    pub(super) fn spawn(
        self: &Arc<Self>,
        endpoint: String,
        content_type: &'static str,
        body: String,
    ) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let me = self.clone();
        self.runtime.spawn(async move {
            let mut backoff = FIRST_BACKOFF;
            let mut ok = false;
            for attempt in 0..ATTEMPTS {
                if attempt > 0 {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                let sent = me
                    .client
                    .post(&endpoint)
                    .timeout(ATTEMPT_TIMEOUT)
                    .header(reqwest::header::CONTENT_TYPE, content_type)
                    .body(body.clone())
                    .send()
                    .await;
                match sent {
                    Ok(resp) if resp.status().is_success() => {
                        ok = true;
                        break;
                    }
                    Ok(resp) => tracing::info!(
                        endpoint, status = %resp.status(), attempt, "notification refused"
                    ),
                    Err(e) => {
                        tracing::info!(endpoint, error = %e, attempt, "notification not delivered")
                    }
                }
            }
            if ok {
                me.sent.fetch_add(1, Ordering::SeqCst);
            } else {
                me.failed.fetch_add(1, Ordering::SeqCst);
            }
            me.in_flight.fetch_sub(1, Ordering::SeqCst);
        });
    }
}
