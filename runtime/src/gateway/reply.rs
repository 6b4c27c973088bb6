//! Reading inbound SOAP requests (plain or MTOM, bounded) and shaping replies: XML, streamed MTOM, or a
//! SOAP fault with the right HTTP status.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::stream::BoxStream;
use http::{HeaderValue, StatusCode, header};

use super::Gateway;
use crate::audit::{AuditEvent, AuditRecord, Outcome, Side};
use crate::backend::RetrieveStream;
use crate::gateway::identity::PeerCertificate;
use crate::ihe::mtom::{FinishHook, MtomError, RetrieveResponseWriter};
use crate::ihe::soap::{SoapHeader, write_fault};
use crate::ihe::{Fault, FaultCode, Message, Transaction, Unreadable, write_soap};

/// What a SOAP handler answers.
pub enum SoapReply {
    /// A SOAP envelope, HTTP 200.
    Xml(String),
    /// A SOAP fault envelope: HTTP 400 for `Sender`/`MustUnderstand`/`VersionMismatch`, 500 for `Receiver`
    /// (SOAP 1.2 Part 2, 7.5.1.2).
    Fault(String, u16),
    /// A streamed multipart/related (MTOM) body with its Content-Type, HTTP 200.
    Stream {
        /// `multipart/related; ...`.
        content_type: String,
        /// The body.
        body: BoxStream<'static, Result<Bytes, MtomError>>,
    },
}

/// Content-Type of every SOAP 1.2 answer that is not MTOM.
const SOAP_CT: &str = "application/soap+xml; charset=UTF-8";

impl IntoResponse for SoapReply {
    /// The HTTP answer: the envelope with HTTP 200, a fault with its status, or the MTOM stream with its
    /// own Content-Type (a Content-Type that is not a valid header value is left out rather than sent).
    fn into_response(self) -> Response {
        match self {
            SoapReply::Xml(xml) => ([(header::CONTENT_TYPE, SOAP_CT)], xml).into_response(),
            SoapReply::Fault(xml, status) => (
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                [(header::CONTENT_TYPE, SOAP_CT)],
                xml,
            )
                .into_response(),
            SoapReply::Stream { content_type, body } => {
                let mut r = Response::new(Body::from_stream(body));
                if let Ok(v) = HeaderValue::from_str(&content_type) {
                    r.headers_mut().insert(header::CONTENT_TYPE, v);
                }
                r
            }
        }
    }
}

impl SoapReply {
    /// A fault reply, relating to `request` when known.
    pub fn fault(f: &Fault, request: Option<&SoapHeader>) -> SoapReply {
        let status = match f.code {
            FaultCode::Receiver => 500,
            _ => 400,
        };
        SoapReply::Fault(write_fault(f, request), status)
    }

    /// A `Sender` fault with this reason.
    pub fn sender(reason: impl Into<String>, request: Option<&SoapHeader>) -> SoapReply {
        SoapReply::fault(
            &Fault {
                code: FaultCode::Sender,
                subcode: None,
                reason: reason.into(),
            },
            request,
        )
    }

    /// The response message `body` of `tx`, relating to `request`.
    pub fn message<T: Message>(tx: Transaction, request: &SoapHeader, body: &T) -> SoapReply {
        SoapReply::Xml(write_soap(
            &SoapHeader::response(tx.response_action(), request),
            body,
        ))
    }

    /// A streamed retrieve answer of `tx` (MTOM, one part per document). A document that fails after
    /// the root was sent is reported in a final-status part ([`RetrieveResponseWriter`]); the message
    /// always ends with its closing boundary.
    pub fn retrieve(tx: Transaction, request: &SoapHeader, s: RetrieveStream) -> SoapReply {
        SoapReply::retrieve_with(tx, request, s, None)
    }

    /// [`SoapReply::retrieve`] with a hook that learns what was delivered before the closing boundary
    /// is written (the audit record of an answer whose outcome was not known before its first byte);
    /// when the hook fails the message is left without its closing boundary.
    pub fn retrieve_with(
        tx: Transaction,
        request: &SoapHeader,
        s: RetrieveStream,
        finish: Option<FinishHook>,
    ) -> SoapReply {
        let writer = RetrieveResponseWriter::new(
            &SoapHeader::response(tx.response_action(), request),
            &s.response,
            &s.documents,
        );
        let content_type = writer.content_type();
        SoapReply::Stream {
            content_type,
            body: Box::pin(writer.into_body(s.items, finish)),
        }
    }
}

/// Reads a request of transaction `tx` from an HTTP body (plain SOAP or MTOM). The Action must be
/// `tx`'s (surrounding whitespace tolerated), else `wsa:ActionNotSupported`. A request that cannot be
/// read is answered with its fault and leaves an audit record (outcome failure) like any other request.
pub async fn read_request<T: Message>(
    g: &Gateway,
    tx: Transaction,
    side: Side,
    peer: Option<&PeerCertificate>,
    content_type: &str,
    body: Bytes,
) -> Result<(SoapHeader, T), SoapReply> {
    match parse_request(g, tx, content_type, body) {
        Ok(x) => Ok(x),
        Err((h, f)) => Err(reject(g, tx, side, peer, h.as_deref(), Ok(f)).await),
    }
}

/// Answers a request that cannot be read with fault `f`, or whose caller is refused (`refused`: a
/// `Sender` fault whose reason starts with "refused: "): logged, counted (`refused` or `fault`), and
/// recorded in the audit trail (outcome failure, the reason as detail) before the fault leaves. The
/// fault is sent even when the audit record cannot be written: nothing is disclosed.
pub async fn reject(
    g: &Gateway,
    tx: Transaction,
    side: Side,
    peer: Option<&PeerCertificate>,
    h: Option<&SoapHeader>,
    refusal: Result<Fault, String>,
) -> SoapReply {
    let (f, outcome) = match refusal {
        Ok(f) => (f, "fault"),
        Err(why) => (
            Fault {
                code: FaultCode::Sender,
                subcode: None,
                reason: format!("refused: {why}"),
            },
            "refused",
        ),
    };
    reject_with(g, tx, side, peer, h, f, outcome).await
}

async fn reject_with(
    g: &Gateway,
    tx: Transaction,
    side: Side,
    peer: Option<&PeerCertificate>,
    h: Option<&SoapHeader>,
    f: Fault,
    outcome: &str,
) -> SoapReply {
    tracing::warn!(transaction = %tx, ?side, reason = %f.reason, "request rejected");
    g.metrics.count_request(tx.name(), outcome);
    let event = match tx {
        Transaction::Iti18 | Transaction::Iti38 => AuditEvent::Query,
        _ => AuditEvent::Retrieve,
    };
    let mut r = AuditRecord::new(event, tx, side);
    r.outcome = Outcome::Failure;
    r.outcome_detail = Some(f.reason.clone());
    r.message_id = h
        .and_then(|h| h.message_id.as_deref())
        .map(crate::ihe::soap::echoed);
    r.remote_address = peer.and_then(|p| p.remote).map(|a| a.ip().to_string());
    if let Err(e) = g.hooks.audit(&r).await {
        tracing::error!(transaction = %tx, error = %e, "audit record of a rejected request not written");
    }
    SoapReply::fault(&f, h)
}

/// Answers a request whose caller is refused for `r` like [`reject`] (logged, counted, audited with the
/// reason), with the refusal's WS-Security fault subcode when it is one of the XUA assertion (counted in
/// `duo_xua_refusals_total`).
pub async fn refuse(
    g: &Gateway,
    tx: Transaction,
    side: Side,
    peer: Option<&PeerCertificate>,
    h: Option<&SoapHeader>,
    r: &super::identity::Refusal,
) -> SoapReply {
    // a refusal quotes what the caller sent (an Issuer, an audience): capped before it goes into the
    // fault, the log and the audit trail, which a caller must not be able to fill
    let why = capped(&r.to_string());
    let Some(code) = r.fault_subcode() else {
        return reject(g, tx, side, peer, h, Err(why)).await;
    };
    g.metrics
        .xua_refusals
        .get_or_create(&crate::gateway::metrics::XuaRefusalLabels { code: code.into() })
        .inc();
    let f = Fault {
        code: FaultCode::Sender,
        subcode: Some(code.into()),
        reason: format!("refused: {why}"),
    };
    reject_with(g, tx, side, peer, h, f, "refused").await
}

/// Longest refusal reason passed on, in bytes.
const MAX_REASON_BYTES: usize = 512;

/// `s` cut to [`MAX_REASON_BYTES`] ([`crate::ihe::soap::cut`], marked with `…`), control characters
/// replaced.
fn capped(s: &str) -> String {
    let kept = crate::ihe::soap::cut(s, MAX_REASON_BYTES);
    let mut out: String = kept
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if kept.len() < s.len() {
        out.push('…');
    }
    out
}

fn parse_request<T: Message>(
    g: &Gateway,
    tx: Transaction,
    content_type: &str,
    body: Bytes,
) -> Result<(SoapHeader, T), Unreadable> {
    crate::ihe::read_request(tx, content_type, body, &g.mtom_limits, &g.xml_limits)
}
