//! The SOAP 1.2 client every SOAP backend uses: WS-Addressing request headers, the caller's header
//! blocks (XUA), deadlines, MTOM or plain answers, faults and HTTP errors mapped to [`BackendError`].

use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;

use super::{BackendError, CallContext, RetrieveStream};
use crate::ihe::mtom::{self, MtomLimits, RetrieveResponseReader};
use crate::ihe::soap::SoapHeader;
use crate::ihe::{Message, SoapError, Transaction, read_soap, write_soap};
use crate::tls::OutboundClient;

/// Largest error body quoted in a [`BackendError::Http`].
const QUOTE: usize = 200;

/// A SOAP client over one HTTP client (which carries the hospital's TLS identity and never follows a
/// redirect, see [`crate::tls::outbound_client`]).
#[derive(Clone, Debug)]
pub struct SoapClient {
    http: OutboundClient,
    limits: MtomLimits,
    default_deadline: Duration,
}

fn transport(e: reqwest::Error) -> BackendError {
    // the chain of sources names the real cause (TLS alert, connection refused ...)
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    BackendError::Transport(msg)
}

fn soap_error(e: SoapError) -> BackendError {
    match e {
        SoapError::Fault(f) => BackendError::Fault(f),
        other => BackendError::Protocol(other.to_string()),
    }
}

fn mtom_error(e: mtom::MtomError) -> BackendError {
    match e {
        mtom::MtomError::Soap(s) => soap_error(s),
        mtom::MtomError::Body(b) => BackendError::Transport(b),
        other => BackendError::Protocol(other.to_string()),
    }
}

impl SoapClient {
    /// A client with these limits on what answers may make it buffer, and the deadline used when the
    /// call context names none.
    pub fn new(http: OutboundClient, limits: MtomLimits, default_deadline: Duration) -> SoapClient {
        SoapClient {
            http,
            limits,
            default_deadline,
        }
    }

    fn envelope<Req: Message>(
        &self,
        url: &str,
        tx: Transaction,
        ctx: &CallContext,
        body: &Req,
    ) -> String {
        let mut h = SoapHeader::request(tx.request_action(), Some(url));
        h.other = ctx.header_blocks.as_ref().clone();
        write_soap(&h, body)
    }

    async fn send(
        &self,
        url: &str,
        tx: Transaction,
        xml: String,
        mtom_request: bool,
    ) -> Result<reqwest::Response, BackendError> {
        let req = if mtom_request {
            // ITI-43 / RAD-69 repositories may insist on MTOM requests (ITI TF-2 V.3.6)
            let (ct, body) = mtom::wrap_root(&xml, tx.request_action());
            self.http
                .post(url)
                .header(http::header::CONTENT_TYPE, ct)
                .body(body)
        } else {
            let ct = format!(
                "application/soap+xml; charset=UTF-8; action=\"{}\"",
                tx.request_action()
            );
            self.http
                .post(url)
                .header(http::header::CONTENT_TYPE, ct)
                .body(xml)
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        if status.is_redirection() {
            return Err(redirect(&resp));
        }
        // SOAP 1.2 faults come with HTTP 400/500: read them as faults, not as bare HTTP errors
        let ct = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if status.is_success()
            || (ct.contains("soap") || ct.contains("xop") || ct.contains("multipart"))
        {
            if !status.is_success() {
                // a fault is small: read it within the limit for buffered messages, never more
                let len = resp.content_length();
                let body =
                    mtom::collect_body(len, resp.bytes_stream(), self.limits.max_buffered_bytes)
                        .await
                        .map_err(mtom_error)?;
                let (root, _) =
                    mtom::soap_envelope(&ct, body.clone(), &self.limits).map_err(mtom_error)?;
                let e = read_soap::<crate::ihe::retrieve::RetrieveDocumentSetResponse>(
                    &root,
                    &self.limits.xml,
                )
                .err();
                return Err(match e {
                    Some(SoapError::Fault(f)) => BackendError::Fault(f),
                    _ => BackendError::Http {
                        status: status.as_u16(),
                        reason: quote(&body),
                    },
                });
            }
            return Ok(resp);
        }
        let body = first_bytes(resp).await;
        Err(BackendError::Http {
            status: status.as_u16(),
            reason: quote(&body),
        })
    }

    /// Sends `body` as transaction `tx` and reads the whole answer as `Resp` (queries: answers are
    /// bounded by the limits, and held within the limits' [`crate::ihe::mtom::BufferBudget`]: an answer
    /// that does not fit is a [`BackendError::Protocol`]). The deadline covers connecting, sending and
    /// reading.
    pub async fn call<Req: Message, Resp: Message>(
        &self,
        url: &str,
        tx: Transaction,
        ctx: &CallContext,
        body: &Req,
    ) -> Result<Resp, BackendError> {
        let deadline = ctx.deadline.unwrap_or(self.default_deadline);
        let xml = self.envelope(url, tx, ctx, body);
        let fut = async {
            let resp = self.send(url, tx, xml, false).await?;
            let ct = resp
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            mtom::check_declared_length(
                resp.content_length(),
                self.limits.max_buffered_bytes as u64,
            )
            .map_err(mtom_error)?;
            let len = resp.content_length();
            // A query answer is held whole while it is read, so it is charged to the gateway's budget of
            // buffered answers like a retrieve's root: many large answers at once (a peer's, to many
            // parallel queries) are refused as that community's error instead of exhausting the pod.
            // The bytes stay charged until the answer is parsed.
            let (body, held) = mtom::collect_body_within(
                len,
                resp.bytes_stream(),
                self.limits.max_buffered_bytes,
                self.limits.budget.as_ref(),
            )
            .await
            .map_err(mtom_error)?;
            let (root, _) = mtom::soap_envelope(&ct, body, &self.limits).map_err(mtom_error)?;
            let (_h, msg) = read_soap::<Resp>(&root, &self.limits.xml).map_err(soap_error)?;
            drop(held);
            Ok(msg)
        };
        tokio::time::timeout(deadline, fut)
            .await
            .map_err(|_| BackendError::Timeout(deadline))?
    }

    /// Sends a retrieve request and opens the answer as a stream (MTOM, plain SOAP with base64, or
    /// base64 inside MTOM). The deadline covers the whole answer: up to the end of the root part a late
    /// answer is a [`BackendError::Timeout`]; after it, the documents not delivered whole by then
    /// become [`crate::ihe::mtom::RetrieveItem::Failed`] and the connection is dropped
    /// ([`RetrieveStream::with_deadline`]), so a peer that drips its answer holds no one past it.
    /// A root that does not fit the limits' [`crate::ihe::mtom::BufferBudget`] is refused
    /// ([`BackendError::Protocol`]).
    pub async fn retrieve<Req: Message>(
        &self,
        url: &str,
        tx: Transaction,
        ctx: &CallContext,
        body: &Req,
        mtom_request: bool,
    ) -> Result<RetrieveStream, BackendError> {
        let deadline = ctx.deadline.unwrap_or(self.default_deadline);
        let until = tokio::time::Instant::now() + deadline;
        let xml = self.envelope(url, tx, ctx, body);
        let fut = async {
            let resp = self.send(url, tx, xml, mtom_request).await?;
            let ct = resp
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let len = resp.content_length();
            let stream = resp
                .bytes_stream()
                .map_err(|e| -> mtom::BoxError { Box::new(e) });
            let reader = RetrieveResponseReader::open(&ct, len, stream, &self.limits)
                .await
                .map_err(mtom_error)?;
            Ok(RetrieveStream::from_reader(reader).with_deadline(until, deadline))
        };
        tokio::time::timeout_at(until, fut)
            .await
            .map_err(|_| BackendError::Timeout(deadline))?
    }

    /// A plain HTTP GET (DICOMweb), returning status, content type and the response for streaming.
    pub async fn get(
        &self,
        url: &str,
        accept: &str,
        deadline: Option<Duration>,
    ) -> Result<reqwest::Response, BackendError> {
        let deadline = deadline.unwrap_or(self.default_deadline);
        let fut = async {
            let resp = self
                .http
                .get(url)
                .header(http::header::ACCEPT, accept)
                .send()
                .await
                .map_err(transport)?;
            let status = resp.status();
            if status.is_redirection() {
                Err(redirect(&resp))
            } else if status.is_success() {
                Ok(resp)
            } else {
                let body = first_bytes(resp).await;
                Err(BackendError::Http {
                    status: status.as_u16(),
                    reason: quote(&body),
                })
            }
        };
        tokio::time::timeout(deadline, fut)
            .await
            .map_err(|_| BackendError::Timeout(deadline))?
    }

    /// The limits answers are read with.
    pub fn limits(&self) -> &MtomLimits {
        &self.limits
    }
}

/// The [`BackendError::Redirect`] of a 3xx answer (its body is not read: nothing of it is used).
fn redirect(resp: &reqwest::Response) -> BackendError {
    BackendError::Redirect {
        status: resp.status().as_u16(),
        location: location(resp.headers()),
    }
}

/// The `Location` header of a 3xx answer, for an error message: at most [`QUOTE`] characters, control
/// characters replaced; `(none)` when absent.
pub(crate) fn location(headers: &http::HeaderMap) -> String {
    match headers.get(http::header::LOCATION) {
        None => "(none)".to_owned(),
        Some(v) => String::from_utf8_lossy(v.as_bytes())
            .chars()
            .take(QUOTE)
            .map(|c| if c.is_control() { '?' } else { c })
            .collect(),
    }
}

/// The first bytes of an error body, enough to quote ([`QUOTE`]); the rest is not read (a peer's error
/// page may be endless).
async fn first_bytes(resp: reqwest::Response) -> Bytes {
    let mut out = Vec::new();
    let mut s = resp.bytes_stream();
    while out.len() < QUOTE {
        match s.try_next().await {
            Ok(Some(c)) => out.extend_from_slice(&c[..c.len().min(QUOTE - out.len())]),
            _ => break,
        }
    }
    Bytes::from(out)
}

fn quote(body: &Bytes) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(QUOTE)]);
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
