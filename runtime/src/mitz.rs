//! The Mitz client: SOAP 1.2 POSTs over mutual TLS with the client certificate of the MitzConnection, a
//! deadline per call, a bounded answer, and errors sorted by what went wrong (so an audit record can name
//! it). Shared by the closed question ([`crate::consent`], [`MitzClient::closed_question`]) and the open
//! question ([`crate::localization`]); the codecs are duo-wire's `mitz`.

use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::MitzConfig;
use crate::ihe::soap::{self, SoapError};
use crate::tls::{OutboundClient, TlsError, TlsMaterial, TlsPolicy};
use crate::xml::Limits;
use duo_wire::mitz::xacml::{self, CategoryDecision, ClosedQuestion, XacmlError};

/// Largest answer body read from Mitz, bytes (an answer is a few kilobytes; a location list more).
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// Why Mitz gave no usable answer. Every variant means: no consent / ask no one (fail closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MitzError {
    /// No complete answer within the deadline.
    #[error("timeout: no answer from Mitz within {after_ms} ms")]
    Timeout {
        /// The deadline, milliseconds.
        after_ms: u64,
    },
    /// The TLS handshake failed (certificate not trusted, client certificate refused ...).
    #[error("TLS error talking to Mitz: {0}")]
    Tls(String),
    /// Connecting or sending failed for another reason (refused, reset, DNS ...).
    #[error("transport error talking to Mitz: {0}")]
    Transport(String),
    /// Mitz answered with an HTTP error status.
    #[error("Mitz answered HTTP {status}{}", if detail.is_empty() { String::new() } else { format!(": {detail}") })]
    Http {
        /// The status code.
        status: u16,
        /// The SOAP fault reason or the start of the body, when any.
        detail: String,
    },
    /// Mitz answered with a redirect (HTTP 3xx). Redirects are never followed (issue 12, defect 4): a
    /// decision of the server the redirect names was never asked for. No consent.
    #[error("Mitz answered HTTP {status} redirect to {location}: redirects are never followed")]
    Redirect {
        /// The status code (300-399).
        status: u16,
        /// The `Location` header as sent (at most 200 characters; `(none)` when absent).
        location: String,
    },
    /// Mitz answered with a SOAP fault (HTTP 200).
    #[error("Mitz answered with a SOAP fault: {0}")]
    Fault(String),
    /// The answer could not be read (not XML, not SOAP 1.2, no decision, too large ...).
    #[error("unparseable answer from Mitz: {0}")]
    Unparseable(String),
    /// Mitz is not configured (no `mitz` section or no URL for this question).
    #[error("Mitz is not configured: {0}")]
    NotConfigured(String),
    /// Mitz was not asked because the question cannot be put (no requester identity, a patient id
    /// that is not a BSN) or the decision could not be recorded.
    #[error("Mitz not asked: {0}")]
    NotAsked(String),
}

impl MitzError {
    /// A short machine-friendly kind: `timeout`, `tls`, `transport`, `http`, `redirect`, `fault`, `unparseable`,
    /// `notConfigured`, `notAsked` (metrics labels, audit).
    pub fn kind(&self) -> &'static str {
        match self {
            MitzError::Timeout { .. } => "timeout",
            MitzError::Tls(_) => "tls",
            MitzError::Transport(_) => "transport",
            MitzError::Http { .. } => "http",
            MitzError::Redirect { .. } => "redirect",
            MitzError::Fault(_) => "fault",
            MitzError::Unparseable(_) => "unparseable",
            MitzError::NotConfigured(_) => "notConfigured",
            MitzError::NotAsked(_) => "notAsked",
        }
    }
}

impl From<XacmlError> for MitzError {
    fn from(e: XacmlError) -> Self {
        match e {
            XacmlError::Soap(SoapError::Fault(f)) => MitzError::Fault(f.reason),
            other => MitzError::Unparseable(other.to_string()),
        }
    }
}

/// A Mitz connection: the HTTP client with the MitzConnection's client certificate, the endpoints and the
/// deadline. Cheap to share (`Arc`) between tasks.
#[derive(Clone)]
pub struct MitzClient {
    http: OutboundClient,
    closed_question_url: String,
    open_question_url: Option<String>,
    deadline: Duration,
    limits: Limits,
}

impl fmt::Debug for MitzClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MitzClient")
            .field("closed_question_url", &self.closed_question_url)
            .field("open_question_url", &self.open_question_url)
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl MitzClient {
    /// Loads the TLS files of `cfg.tls` and builds the client. Errors: the files (named in the message).
    pub fn new(cfg: &MitzConfig) -> Result<MitzClient, TlsError> {
        MitzClient::with_tls(cfg, &TlsMaterial::load(&cfg.tls)?)
    }

    /// Loads the TLS files of `cfg.tls` and builds the client under `policy`: its TLS versions, and
    /// revocation checking of Mitz's server certificate. Errors: the files (named in the message).
    pub fn with_policy(cfg: &MitzConfig, policy: TlsPolicy) -> Result<MitzClient, TlsError> {
        MitzClient::with_tls(cfg, &TlsMaterial::load(&cfg.tls)?.with_policy(policy))
    }

    /// Builds the client with already loaded TLS material (client certificate + trust bundle for Mitz's
    /// server certificate); `cfg.tls` is not read.
    pub fn with_tls(cfg: &MitzConfig, tls: &TlsMaterial) -> Result<MitzClient, TlsError> {
        let deadline = Duration::from_millis(cfg.deadline_ms);
        Ok(MitzClient {
            // the connect timeout never exceeds the overall deadline, which bounds the whole call anyway
            http: tls.http_client(deadline)?,
            closed_question_url: cfg.closed_question_url.clone(),
            open_question_url: cfg.open_question_url.clone(),
            deadline,
            limits: Limits {
                max_bytes: MAX_ANSWER_BYTES,
                ..Limits::default()
            },
        })
    }

    /// The per-call deadline (`MitzConfig.deadlineMs`).
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The closed question endpoint.
    pub fn closed_question_url(&self) -> &str {
        &self.closed_question_url
    }

    /// The open question endpoint, when configured.
    pub fn open_question_url(&self) -> Option<&str> {
        self.open_question_url.as_deref()
    }

    /// The XML limits answers are read with.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Asks the closed question and returns one decision per asked category, in question order, read
    /// and tied to the question by [`xacml::read_closed_answer`].
    /// Errors: see [`MitzError`]; the caller treats every error as no consent.
    pub async fn closed_question(
        &self,
        q: &ClosedQuestion,
    ) -> Result<Vec<CategoryDecision>, MitzError> {
        let answer = self.send_closed_question(q).await?;
        Ok(xacml::read_closed_answer(&answer, q, &self.limits)?)
    }

    /// Writes the closed question envelope, POSTs it and returns the body of the answer unread.
    /// Errors: see [`MitzError`].
    pub async fn send_closed_question(&self, q: &ClosedQuestion) -> Result<Bytes, MitzError> {
        let body =
            xacml::write_closed_question(q, &soap::new_message_id(), &self.closed_question_url);
        self.post(&self.closed_question_url, body).await
    }

    /// POSTs a FHIR resource (`content_type` [`duo_wire::mitz::subscription::FHIR_XML`] or `_JSON`) to
    /// `url` within the deadline and returns the answer whatever its status, for the caller to read:
    /// registration tells a duplicate (409, or 422 with issue code `duplicate`) from a refusal and a
    /// retryable answer. A 3xx is [`MitzError::Redirect`] (never followed); no answer is an error.
    pub async fn post_fhir(
        &self,
        url: &str,
        content_type: &str,
        body: String,
    ) -> Result<FhirAnswer, MitzError> {
        let call = async {
            let resp = self
                .http
                .post(url)
                .header(http::header::CONTENT_TYPE, content_type)
                .header(http::header::ACCEPT, content_type)
                .body(body)
                .send()
                .await
                .map_err(classify)?;
            let status = resp.status();
            if status.is_redirection() {
                return Err(MitzError::Redirect {
                    status: status.as_u16(),
                    location: crate::backend::soap_client::location(resp.headers()),
                });
            }
            let header = |name: http::header::HeaderName| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.chars().take(500).collect::<String>())
            };
            let location = header(http::header::LOCATION);
            let retry_after =
                header(http::header::RETRY_AFTER).and_then(|v| v.trim().parse::<u64>().ok());
            let body = read_bounded(resp).await?;
            Ok(FhirAnswer {
                status: status.as_u16(),
                location,
                retry_after,
                body,
            })
        };
        match tokio::time::timeout(self.deadline, call).await {
            Ok(r) => r,
            Err(_) => Err(MitzError::Timeout {
                after_ms: self.deadline.as_millis() as u64,
            }),
        }
    }

    /// POSTs a SOAP 1.2 envelope to `url` and returns the body of a 2xx answer, all within the deadline.
    /// A non-2xx answer is [`MitzError::Http`] (with the SOAP fault reason when the body is one), a 3xx
    /// [`MitzError::Redirect`] (never followed).
    pub async fn post(&self, url: &str, envelope: String) -> Result<Bytes, MitzError> {
        let started = Instant::now();
        let call = async {
            let resp = self
                .http
                .post(url)
                .header(
                    http::header::CONTENT_TYPE,
                    "application/soap+xml; charset=UTF-8",
                )
                .body(envelope)
                .send()
                .await
                .map_err(classify)?;
            let status = resp.status();
            if status.is_redirection() {
                return Err(MitzError::Redirect {
                    status: status.as_u16(),
                    location: crate::backend::soap_client::location(resp.headers()),
                });
            }
            let body = read_bounded(resp).await?;
            if !status.is_success() {
                let detail = match soap::read_envelope(&body, &self.limits, |r, e| r.skip(&e)) {
                    Err(SoapError::Fault(f)) => f.reason,
                    _ => String::from_utf8_lossy(&body[..body.len().min(200)])
                        .trim()
                        .to_owned(),
                };
                return Err(MitzError::Http {
                    status: status.as_u16(),
                    detail,
                });
            }
            Ok(body)
        };
        match tokio::time::timeout(self.deadline, call).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(
                    url,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "Mitz deadline passed"
                );
                Err(MitzError::Timeout {
                    after_ms: self.deadline.as_millis() as u64,
                })
            }
        }
    }
}

/// Mitz's answer to a FHIR request ([`MitzClient::post_fhir`]), unread.
#[derive(Debug, Clone)]
pub struct FhirAnswer {
    /// The HTTP status (never 3xx: redirects are errors).
    pub status: u16,
    /// The `Location` header (at most 500 characters).
    pub location: Option<String>,
    /// `Retry-After` in seconds, when given as a number.
    pub retry_after: Option<u64>,
    /// The body (at most [`MAX_ANSWER_BYTES`]).
    pub body: Bytes,
}

async fn read_bounded(mut resp: reqwest::Response) -> Result<Bytes, MitzError> {
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
    {
        return Err(MitzError::Unparseable(format!(
            "answer larger than {MAX_ANSWER_BYTES} bytes"
        )));
    }
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(classify)? {
        if buf.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(MitzError::Unparseable(format!(
                "answer larger than {MAX_ANSWER_BYTES} bytes"
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// Sorts a reqwest error: a rustls error anywhere in its source chain (also inside nested `io::Error`s,
/// where hyper-util puts it) is [`MitzError::Tls`].
fn classify(e: reqwest::Error) -> MitzError {
    if let Some(t) = find_rustls(&e) {
        return MitzError::Tls(t.to_string());
    }
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    if e.is_timeout() {
        return MitzError::Transport(format!("timed out: {msg}"));
    }
    MitzError::Transport(msg)
}

fn find_rustls<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(t) = e.downcast_ref::<rustls::Error>() {
        return Some(t);
    }
    if let Some(io) = e.downcast_ref::<std::io::Error>()
        && let Some(inner) = io.get_ref()
        && let Some(t) = find_rustls(inner)
    {
        return Some(t);
    }
    e.source().and_then(find_rustls)
}
