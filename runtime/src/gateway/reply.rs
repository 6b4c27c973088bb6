//! Reading inbound SOAP requests (plain or MTOM, bounded) and shaping replies: XML, streamed MTOM, or a
//! SOAP fault with the right HTTP status.

use bytes::Bytes;
use futures::stream::BoxStream;

use super::Gateway;
use crate::backend::RetrieveStream;
use crate::ihe::mtom::{self, MtomError, RetrieveResponseWriter};
use crate::ihe::soap::{SoapHeader, write_fault};
use crate::ihe::{Fault, FaultCode, Message, SoapError, Transaction, read_soap, write_soap};

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

    /// A streamed retrieve answer of `tx` (MTOM, one part per document).
    pub fn retrieve(tx: Transaction, request: &SoapHeader, s: RetrieveStream) -> SoapReply {
        let writer = RetrieveResponseWriter::new(
            &SoapHeader::response(tx.response_action(), request),
            &s.response,
            &s.documents,
        );
        let content_type = writer.content_type();
        SoapReply::Stream {
            content_type,
            body: Box::pin(writer.into_body(s.items)),
        }
    }
}

/// Reads a request of transaction `tx` from an HTTP body (plain SOAP or MTOM). The Action must be
/// `tx`'s (surrounding whitespace tolerated), else `wsa:ActionNotSupported`.
pub fn read_request<T: Message>(
    g: &Gateway,
    tx: Transaction,
    content_type: &str,
    body: Bytes,
) -> Result<(SoapHeader, T), SoapReply> {
    let root = match mtom::soap_envelope(content_type, body, &g.mtom_limits) {
        Ok((root, _attachments)) => root,
        Err(e) => return Err(SoapReply::fault(&e.to_fault(), None)),
    };
    let (h, msg) = match read_soap::<T>(&root, &g.xml_limits) {
        Ok(x) => x,
        Err(SoapError::Xml(crate::xml::XmlError::Unexpected { expected, found })) => {
            return Err(SoapReply::sender(
                format!("{tx} expects {expected} in the SOAP Body, found {found}"),
                None,
            ));
        }
        Err(e) => return Err(SoapReply::fault(&e.to_fault(), None)),
    };
    if h.action.trim() != tx.request_action() {
        let f = Fault {
            code: FaultCode::Sender,
            subcode: Some("wsa:ActionNotSupported".into()),
            reason: format!(
                "this endpoint serves {tx} ({}), not {:?}",
                tx.request_action(),
                h.action
            ),
        };
        return Err(SoapReply::fault(&f, Some(&h)));
    }
    Ok((h, msg))
}
