//! The gateway's Mitz endpoints as data holder:
//!
//! - `POST /api/v1/registrations` (the hospital's own certificate or a trusted front end, as the JSON
//!   timeline API): body `{"bsn": "<BSN>", "birthDate": "YYYY-MM-DD"}` (`birthDate` optional). Answers
//!   only after Mitz accepted: `201` `{"bsn", "outcome": "registered", "subscriptionId"}` or `200` with
//!   `"outcome": "alreadyRegistered"`; errors are `{"error": "..."}` with 400 (body), 403 (caller),
//!   409 (registration is off), 502 (Mitz refused) or 503 (Mitz did not accept in `maxAttempts`).
//! - `POST /mitz/notifications`: Mitz's consent notifications (rest-hook; a FHIR transaction Bundle in
//!   XML as `testdata/mitz/fhir/example_notification_bundle.xml`, or JSON), accepted only from a client
//!   certificate naming one of `mitz.notificationClientNames` (DNS subjectAltName). Every cached consent
//!   decision about each patient of the Bundle is dropped at once, and each patient's drop is audited
//!   (event `consentNotification`, naming the Bundle and its Consents). Refusals are FHIR
//!   `OperationOutcome`s (403 not Mitz, 400 unreadable or breaking a rule of
//!   [`duo_wire::mitz::notification`]) and change nothing.
//!
//! What a notification says is not believed: it only makes the gateway forget, so the next question
//! about the patient goes to Mitz (closed question). A forged notification could at most cost Mitz
//! questions; the certificate check stops even that.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};

use super::Gateway;
use super::identity::{self, PeerCertificate, Refusal};
use crate::audit::{AuditEvent, AuditRecord, AuditTransaction, Outcome, Side};
use crate::model::Bsn;
use crate::registration::{Registered, RegistrationError};
use duo_wire::mitz::notification::{self, ConsentNotification};
use duo_wire::mitz::subscription::{FHIR_JSON, FHIR_XML};

/// The body of `POST /api/v1/registrations`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistrationRequest {
    /// The patient's BSN (9 digits, 11-check).
    pub bsn: String,
    /// The patient's birth date, `YYYY-MM-DD`, when known.
    #[serde(default)]
    pub birth_date: Option<String>,
}

/// The answer of `POST /api/v1/registrations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationAnswer {
    /// The patient.
    pub bsn: String,
    /// `registered` or `alreadyRegistered`.
    pub outcome: String,
    /// Mitz's subscription id, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_id: Option<String>,
}

impl IntoResponse for RegistrationAnswer {
    fn into_response(self) -> Response {
        let status = if self.outcome == "registered" {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        (status, axum::Json(self)).into_response()
    }
}

/// Why `POST /api/v1/registrations` registered nothing: JSON `{"error": "<message>"}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationApiError {
    /// The body is not a registration request, or its BSN or birth date is invalid (400).
    #[error("{0}")]
    Request(String),
    /// The caller is neither this hospital nor a trusted front end (403).
    #[error("{0}")]
    Caller(String),
    /// Mitz did not register it (409 when registration is off, 502 refused, 503 unavailable).
    #[error("{0}")]
    Registration(#[from] RegistrationError),
}

impl RegistrationApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            RegistrationApiError::Request(_) => StatusCode::BAD_REQUEST,
            RegistrationApiError::Caller(_) => StatusCode::FORBIDDEN,
            RegistrationApiError::Registration(RegistrationError::Off) => StatusCode::CONFLICT,
            RegistrationApiError::Registration(RegistrationError::Refused { .. }) => {
                StatusCode::BAD_GATEWAY
            }
            RegistrationApiError::Registration(RegistrationError::Unavailable { .. }) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }
}

impl IntoResponse for RegistrationApiError {
    fn into_response(self) -> Response {
        (
            self.status(),
            axum::Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

/// Reads a BSN and an optional birth date as the API and the back-fill command take them. Errors: one
/// line naming what is wrong.
pub fn read_patient(
    bsn: &str,
    birth_date: Option<&str>,
) -> Result<(Bsn, Option<jiff::civil::Date>), String> {
    let patient = bsn.trim().parse::<Bsn>().map_err(|e| format!("bsn: {e}"))?;
    let birth = match birth_date.map(str::trim).filter(|d| !d.is_empty()) {
        None => None,
        Some(d) => {
            let date = d
                .parse::<jiff::civil::Date>()
                .map_err(|_| format!("birthDate {d:?} is not a date YYYY-MM-DD"))?;
            if d.len() != 10 || date > jiff::Zoned::now().date() {
                return Err(format!(
                    "birthDate {d:?} is not a date YYYY-MM-DD in the past"
                ));
            }
            Some(date)
        }
    };
    Ok((patient, birth))
}

/// `POST /api/v1/registrations`. See the module documentation.
pub async fn register(
    g: Arc<Gateway>,
    peer: Option<PeerCertificate>,
    body: Bytes,
) -> Result<RegistrationAnswer, RegistrationApiError> {
    identity::local_caller(&g, peer.as_ref())
        .map_err(|r: Refusal| RegistrationApiError::Caller(r.to_string()))?;
    // an object only: serde would also take a struct from a JSON array (`["<bsn>"]`)
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| RegistrationApiError::Request(format!("body: {e}")))?;
    if !value.is_object() {
        return Err(RegistrationApiError::Request(
            "body: expected a JSON object {\"bsn\": ..., \"birthDate\": ...}".into(),
        ));
    }
    let req: RegistrationRequest = serde_json::from_value(value)
        .map_err(|e| RegistrationApiError::Request(format!("body: {e}")))?;
    let (patient, birth) =
        read_patient(&req.bsn, req.birth_date.as_deref()).map_err(RegistrationApiError::Request)?;
    let done: Registered = g.hooks.register(&g.metrics, &patient, birth, "api").await?;
    Ok(RegistrationAnswer {
        bsn: patient.to_string(),
        outcome: done.as_str().into(),
        subscription_id: done.subscription_id().map(str::to_owned),
    })
}

/// What `POST /mitz/notifications` answers: a FHIR `OperationOutcome` in the request's format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationAnswer {
    /// HTTP status.
    pub status: StatusCode,
    /// `information` (accepted) or `error`.
    pub severity: &'static str,
    /// FHIR issue type (`informational`, `forbidden`, `invalid`, `exception`).
    pub code: &'static str,
    /// One line for the sender.
    pub diagnostics: String,
    /// Answer in JSON (the request was JSON) or XML.
    pub json: bool,
}

impl IntoResponse for NotificationAnswer {
    fn into_response(self) -> Response {
        let (ct, body) = if self.json {
            (
                FHIR_JSON,
                serde_json::json!({
                    "resourceType": "OperationOutcome",
                    "issue": [{ "severity": self.severity, "code": self.code,
                                "diagnostics": self.diagnostics }]
                })
                .to_string(),
            )
        } else {
            let mut w = crate::xml::Writer::new();
            w.start("OperationOutcome")
                .attr("xmlns", duo_wire::mitz::subscription::FHIR_NS)
                .start("issue");
            w.start("severity").attr("value", self.severity).end();
            w.start("code").attr("value", self.code).end();
            w.start("diagnostics")
                .attr("value", &self.diagnostics)
                .end();
            w.end().end();
            (FHIR_XML, w.finish())
        };
        (self.status, [(header::CONTENT_TYPE, ct)], body).into_response()
    }
}

/// Whether the client certificate names one of `mitz.notificationClientNames` (DNS subjectAltName,
/// compared without case).
fn from_mitz(g: &Gateway, peer: Option<&PeerCertificate>) -> Result<(), String> {
    let names = g
        .config
        .mitz
        .as_ref()
        .map(|m| m.notification_client_names.as_slice())
        .unwrap_or_default();
    if names.is_empty() {
        return Err(
            "this gateway accepts no notifications (mitz.notificationClientNames is empty)".into(),
        );
    }
    let Some(cert) = identity::peer_info(peer) else {
        return Err("no client certificate".into());
    };
    if cert
        .dns_names
        .iter()
        .any(|d| names.iter().any(|n| n.eq_ignore_ascii_case(d)))
    {
        Ok(())
    } else {
        Err(format!(
            "the client certificate ({}) is not Mitz's (mitz.notificationClientNames)",
            cert.subject
        ))
    }
}

/// `POST /mitz/notifications`. See the module documentation.
pub async fn notify(
    g: Arc<Gateway>,
    peer: Option<PeerCertificate>,
    headers: HeaderMap,
    body: Bytes,
) -> NotificationAnswer {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let json = ct.contains("json") || (!ct.contains("xml") && body.first() == Some(&b'{'));
    let answer = |status, severity, code, diagnostics: String| NotificationAnswer {
        status,
        severity,
        code,
        diagnostics,
        json,
    };
    if let Err(why) = from_mitz(&g, peer.as_ref()) {
        g.metrics
            .count_mitz(&g.metrics.mitz_notifications, "forbidden");
        tracing::warn!(why, "consent notification refused");
        return answer(StatusCode::FORBIDDEN, "error", "forbidden", why);
    }
    let n: ConsentNotification = match notification::read_notification(&body, json, &g.xml_limits) {
        Ok(n) => n,
        Err(e) => {
            g.metrics
                .count_mitz(&g.metrics.mitz_notifications, "refused");
            tracing::warn!(error = %e, "consent notification refused");
            return answer(StatusCode::BAD_REQUEST, "error", "invalid", e.to_string());
        }
    };
    let remote = peer
        .as_ref()
        .and_then(|p| p.remote)
        .map(|a| a.ip().to_string());
    let mut dropped_total = 0;
    let mut audited = true;
    let patients = n.patients();
    for patient in &patients {
        // forget first: a notification that cannot be audited is re-sent by Mitz, and forgetting twice
        // is harmless
        let dropped = g.hooks.consent.forget_patient(patient);
        dropped_total += dropped;
        let consents: Vec<String> = n
            .consents
            .iter()
            .filter(|c| &c.patient == patient)
            .map(|c| format!("{} ({})", c.id, c.status))
            .collect();
        let mut rec = AuditRecord::new(
            AuditEvent::ConsentNotification,
            AuditTransaction::Other("MITZ-NOTIFICATION".into()),
            Side::Responding,
        );
        rec.patient = Some(patient.clone());
        rec.remote_address = remote.clone();
        rec.message_id = n.bundle_id.clone();
        rec.outcome = Outcome::Success;
        rec.outcome_detail = Some(format!(
            "Mitz notification {}: consents {}; {dropped} cached decision(s) dropped",
            n.bundle_id.as_deref().unwrap_or("(no id)"),
            consents.join(", ")
        ));
        if g.hooks.audit(&rec).await.is_err() {
            audited = false;
        }
    }
    if !audited {
        g.metrics
            .count_mitz(&g.metrics.mitz_notifications, "unaudited");
        return answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            "error",
            "exception",
            "the notification could not be audited; send it again".into(),
        );
    }
    g.metrics
        .count_mitz(&g.metrics.mitz_notifications, "accepted");
    answer(
        StatusCode::OK,
        "information",
        "informational",
        format!(
            "{dropped_total} cached consent decision(s) dropped for {} patient(s)",
            patients.len()
        ),
    )
}
