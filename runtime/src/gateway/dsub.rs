//! The DSUB registration trigger of an XDS hospital (issue 14): this gateway is the Document Metadata
//! Subscriber and the Document Metadata Notification Recipient of IHE DSUB (ITI TF-1 26; ITI TF-2b
//! 3.52, 3.53; codec [`duo_wire::ihe::dsub`]).
//!
//! - [`subscriber`] (started with the gateway): subscribes with ITI-52 at `registration.dsub.brokerUrl`
//!   for every new DocumentEntry of the affinity domain, patient-independent (query
//!   `SubscriptionForPatientIndependentDocumentEntry` of the DSUB extensions; an XDS hospital's
//!   affinity domain is its own registry), topic `ihe:FullDocumentEntry` (the only one that names the
//!   patient), `wsnt:InitialTerminationTime` now + `renewSeconds`. While the broker is unreachable or
//!   refuses, it retries with backoff (1 s doubling to 60 s), logging each failure; it subscribes anew
//!   after nine tenths of `renewSeconds`, and whenever a reload changes `registration.dsub` (checked
//!   every 500 ms). The subscription reference the broker answered is logged and kept.
//! - `POST /dsub/notify` ([`notify`], mutual TLS listener): ITI-53 Notify, accepted only from a client
//!   certificate naming one of `registration.dsub.brokerClientNames` (DNS subjectAltName, as Mitz's
//!   notifications by `mitz.notificationClientNames`). Each DocumentEntry's patient must be a BSN
//!   (patientId CX with the BSN OID; anything else refuses the whole Notify, naming the entry). Every
//!   patient is registered with Mitz ([`super::hooks::Hooks::register`], trigger `dsub`, which counts
//!   and audits); the Notify is acknowledged (HTTP 202, ITI-53 being one-way) only when every patient
//!   is registered or already was. Otherwise a SOAP fault: `Receiver` (HTTP 500) when Mitz did not
//!   accept, so the broker re-sends and nothing is lost; `Sender` (HTTP 400 / 403) for a Notify that
//!   is unreadable, names a non-BSN patient or does not come from the broker.

use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use tokio_util::sync::CancellationToken;

use super::identity::{self, PeerCertificate};
use super::reply::SoapReply;
use super::{Gateway, Shared};
use crate::config::{Config, DsubConfig};
use crate::ihe::dsub::{
    self, NOTIFY_ACTION, Notify, SUBSCRIBE_ACTION, Subscribe, SubscribeResponse,
    TOPIC_FULL_DOCUMENT_ENTRY,
};
use crate::ihe::soap::{SoapHeader, write_fault};
use crate::ihe::{Fault, FaultCode, read_soap, write_soap};

fn fault(code: FaultCode, status: u16, reason: String, h: Option<&SoapHeader>) -> Response {
    SoapReply::Fault(
        write_fault(
            &Fault {
                code,
                subcode: None,
                reason,
            },
            h,
        ),
        status,
    )
    .into_response()
}

/// Whether the client certificate names one of `registration.dsub.brokerClientNames`.
fn from_broker(g: &Gateway, peer: Option<&PeerCertificate>) -> Result<(), String> {
    let names = g
        .config
        .registration
        .dsub
        .as_ref()
        .map(|d| d.broker_client_names.as_slice())
        .unwrap_or_default();
    if names.is_empty() {
        return Err(
            "this gateway takes no DSUB notifications (registration.dsub is not set)".into(),
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
            "the client certificate ({}) is not the notification broker's \
             (registration.dsub.brokerClientNames)",
            cert.subject
        ))
    }
}

/// `POST /dsub/notify`: ITI-53 Document Metadata Notify. See the module documentation.
pub async fn notify(
    g: Arc<Gateway>,
    peer: Option<PeerCertificate>,
    content_type: String,
    body: Bytes,
) -> Response {
    let count = |outcome: &str| g.metrics.count_mitz(&g.metrics.dsub_notifications, outcome);
    if let Err(why) = from_broker(&g, peer.as_ref()) {
        count("forbidden");
        tracing::warn!(why, "DSUB notification refused");
        return fault(FaultCode::Sender, 403, why, None);
    }
    let root = match crate::ihe::mtom::soap_envelope(&content_type, body, &g.mtom_limits) {
        Ok((root, _)) => root,
        Err(e) => {
            count("refused");
            return fault(FaultCode::Sender, 400, e.to_fault().reason, None);
        }
    };
    let (h, n): (SoapHeader, Notify) = match read_soap(&root, &g.xml_limits) {
        Ok(x) => x,
        Err(e) => {
            count("refused");
            let f = e.to_fault();
            tracing::warn!(reason = %f.reason, "DSUB notification unreadable");
            return fault(FaultCode::Sender, 400, f.reason, None);
        }
    };
    if h.action.trim() != NOTIFY_ACTION {
        count("refused");
        return fault(
            FaultCode::Sender,
            400,
            format!(
                "this endpoint serves ITI-53 ({NOTIFY_ACTION}), not {:?}",
                crate::ihe::soap::cut(&h.action, 128)
            ),
            Some(&h),
        );
    }
    let patients = match dsub::notified_patients(&n) {
        Ok(p) => p,
        Err(e) => {
            count("refused");
            tracing::warn!(error = %e, "DSUB notification refused");
            return fault(FaultCode::Sender, 400, e.to_string(), Some(&h));
        }
    };
    let mut failed = Vec::new();
    for p in &patients {
        if let Err(e) = g
            .hooks
            .register(&g.metrics, &p.bsn, p.birth_date, "dsub")
            .await
        {
            tracing::warn!(error = %e, entries = ?p.entries, "DSUB: registration not done");
            failed.push(e.to_string());
        }
    }
    if !failed.is_empty() {
        count("unregistered");
        return fault(
            FaultCode::Receiver,
            500,
            format!(
                "{} of {} patient(s) not registered with Mitz ({}); send the notification again",
                failed.len(),
                patients.len(),
                failed.join("; ")
            ),
            Some(&h),
        );
    }
    count("accepted");
    tracing::info!(
        patients = patients.len(),
        "DSUB notification: every patient registered"
    );
    StatusCode::ACCEPTED.into_response()
}

/// First wait after a failed ITI-52 Subscribe; doubled after each next failure up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between ITI-52 attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How often the current configuration is looked at for a changed `registration.dsub`.
const CONFIG_POLL: Duration = Duration::from_millis(500);
/// Deadline of one ITI-52 exchange.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends one ITI-52 Subscribe for `d` with the gateway's identity. Errors: one line (transport, HTTP
/// status, fault, unreadable answer).
pub async fn subscribe(g: &Gateway, d: &DsubConfig) -> Result<SubscribeResponse, String> {
    let termination = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(
            i64::try_from(d.renew_seconds).unwrap_or(i64::MAX),
        ))
        .ok();
    let req =
        Subscribe::patient_independent(&d.recipient_url, TOPIC_FULL_DOCUMENT_ENTRY, termination);
    let header = SoapHeader::request(SUBSCRIBE_ACTION, Some(&d.broker_url));
    let body = write_soap(&header, &req);
    let client = if d.broker_url.to_ascii_lowercase().starts_with("http://") {
        crate::tls::plain_http_client(SUBSCRIBE_TIMEOUT).map_err(|e| e.to_string())?
    } else {
        g.tls
            .http_client(SUBSCRIBE_TIMEOUT)
            .map_err(|e| e.to_string())?
    };
    let resp = client
        .post(&d.broker_url)
        .timeout(SUBSCRIBE_TIMEOUT)
        .header(
            http::header::CONTENT_TYPE,
            format!("application/soap+xml; charset=UTF-8; action=\"{SUBSCRIBE_ACTION}\""),
        )
        .body(body)
        .send()
        .await
        .map_err(|e| format!("broker unreachable: {e}"))?;
    let status = resp.status();
    let bytes = read_bounded(resp).await?;
    match read_soap::<SubscribeResponse>(&bytes, &g.xml_limits) {
        Ok((_, r)) if status.is_success() => Ok(r),
        Ok(_) => Err(format!("broker answered HTTP {status}")),
        Err(e) => Err(format!("broker answered HTTP {status}: {e}")),
    }
}

/// Largest SubscribeResponse read, bytes (a SubscribeResponse is a few hundred).
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

async fn read_bounded(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
    let too_big = || format!("broker answer larger than {MAX_ANSWER_BYTES} bytes");
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
    {
        return Err(too_big());
    }
    let mut buf = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("broker answer: {e}"))?
    {
        if buf.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(too_big());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// Keeps this gateway subscribed at the broker of the current snapshot's `registration.dsub` until
/// `cancel`. See the module documentation.
pub async fn subscriber(shared: Arc<Shared>, cancel: CancellationToken) {
    // the settings of the live subscription and when to renew it
    let mut live: Option<(DsubConfig, tokio::time::Instant, String)> = None;
    let mut backoff = FIRST_BACKOFF;
    let mut next_try = tokio::time::Instant::now();
    loop {
        let g = shared.current();
        let want = wanted(&g.config);
        let now = tokio::time::Instant::now();
        let due = match (&want, &live) {
            (None, Some(_)) => {
                tracing::info!(
                    "registration.dsub removed: the broker's subscription is left to lapse"
                );
                live = None;
                false
            }
            (None, None) => false,
            (Some(w), Some((have, renew_at, _))) => w != have || now >= *renew_at,
            (Some(_), None) => true,
        };
        if let Some(d) = want.clone().filter(|_| due && now >= next_try) {
            match subscribe(&g, &d).await {
                Ok(r) => {
                    g.metrics
                        .count_mitz(&g.metrics.dsub_subscriptions, "subscribed");
                    tracing::info!(
                        broker = d.broker_url,
                        subscription = r.subscription_reference,
                        termination = r.termination_time.as_deref().unwrap_or("(none given)"),
                        "DSUB: subscribed for new DocumentEntries (ITI-52)"
                    );
                    let renew = Duration::from_secs(d.renew_seconds.saturating_mul(9) / 10);
                    live = Some((
                        d,
                        tokio::time::Instant::now() + renew,
                        r.subscription_reference,
                    ));
                    backoff = FIRST_BACKOFF;
                }
                Err(e) => {
                    g.metrics
                        .count_mitz(&g.metrics.dsub_subscriptions, "failed");
                    tracing::warn!(
                        broker = d.broker_url,
                        error = e,
                        retry_in = ?backoff,
                        "DSUB: subscription at the notification broker failed; retrying"
                    );
                    next_try = tokio::time::Instant::now() + backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        drop(g);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(CONFIG_POLL) => {}
        }
    }
}

/// The DSUB settings of `c` when registration is on.
fn wanted(c: &Config) -> Option<DsubConfig> {
    (c.registration.mode == crate::config::RegistrationMode::Mitz)
        .then(|| c.registration.dsub.clone())
        .flatten()
}
