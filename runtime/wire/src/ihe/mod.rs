//! IHE wire layer: SOAP 1.2 + WS-Addressing envelopes ([`soap`]), ebRIM 3.0 objects and registry
//! responses ([`ebrim`]), ITI-18 / ITI-38 stored queries ([`query`]), ITI-39 / ITI-43 / RAD-69 / RAD-75
//! retrieves ([`retrieve`]), MTOM/XOP framing with streaming retrieve responses ([`mtom`]), and the
//! transforms to and from [`crate::model`] ([`transform`]).
//!
//! Reading matches namespace URIs, never prefixes, and tolerates what real peers send; writing is
//! canonical and validates against the IHE schemas in `testdata/ihe/schema`.
//!
//! Every body type implements [`Message`]; [`read_soap`] / [`write_soap`] put it in a SOAP envelope,
//! [`read_bare`] / [`write_bare`] read and write the body element alone (the NIST testkit form).

pub mod dsub;
pub mod ebrim;
pub mod mtom;
pub mod query;
pub mod retrieve;
pub mod soap;
pub mod transform;
pub mod xua;
pub mod xua_dsig;

use bytes::Bytes;

use crate::xml::{Elem, Limits, Reader, Writer, XmlError};

use mtom::MtomLimits;

pub use ebrim::{ErrorCode, RegistryError, ResponseStatus, Severity};
pub use soap::{Fault, FaultCode, SoapError, SoapHeader, Transaction};

/// A SOAP body payload: one IHE request or response element.
pub trait Message: Sized {
    /// Namespace URI and local name of the body element, e.g. `(ns::QUERY, "AdhocQueryRequest")`.
    const ELEMENT: (&'static str, &'static str);

    /// Decodes the body element `el` (already matched against [`Message::ELEMENT`]) and everything in it.
    fn read_body<'i>(r: &mut Reader<'i>, el: Elem<'i>) -> Result<Self, XmlError>;

    /// Encodes the body element, declaring every namespace prefix it uses on itself.
    fn write_body(&self, w: &mut Writer);
}

fn check_element<T: Message>(el: &Elem<'_>) -> Result<(), XmlError> {
    let (ns, local) = T::ELEMENT;
    if el.is(ns, local) {
        Ok(())
    } else {
        Err(XmlError::Unexpected {
            expected: format!("{{{ns}}}{local}"),
            found: el.qualified(),
        })
    }
}

/// Reads a SOAP 1.2 envelope whose body is a `T` (ITI TF-2 Appendix V).
///
/// Errors: [`SoapError`] for envelope problems, a SOAP fault in the body, or XML problems in the payload
/// (including [`XmlError::Unexpected`] when the body holds another element).
pub fn read_soap<T: Message>(input: &[u8], limits: &Limits) -> Result<(SoapHeader, T), SoapError> {
    soap::read_envelope(input, limits, |r, el| {
        check_element::<T>(&el)?;
        T::read_body(r, el)
    })
}

/// The header (when it could be read) and the fault of a request that cannot be served.
pub type Unreadable = (Option<Box<SoapHeader>>, Fault);

/// Reads an inbound request of transaction `tx` from an HTTP body as the server receives it: plain SOAP
/// or MTOM ([`mtom::soap_envelope`], the root part), then the envelope, header and body into `T`
/// ([`read_soap`]), and checks that `wsa:Action` is `tx`'s (surrounding whitespace tolerated). This is
/// the one entry point of every SOAP route (and of the fuzz targets in `fuzz/`).
///
/// Errors: the SOAP fault to answer with, `Sender` for what the peer sent: MIME framing or limits
/// ([`mtom::MtomError`]), envelope or XML problems ([`SoapError`]), another body element than `T`'s,
/// and `wsa:ActionNotSupported` (with the header, which could be read) for another Action.
pub fn read_request<T: Message>(
    tx: Transaction,
    content_type: &str,
    body: Bytes,
    mtom_limits: &MtomLimits,
    xml_limits: &Limits,
) -> Result<(SoapHeader, T), Unreadable> {
    let root = match mtom::soap_envelope(content_type, body, mtom_limits) {
        Ok((root, _attachments)) => root,
        Err(e) => return Err((None, e.to_fault())),
    };
    let (h, msg) = match read_soap::<T>(&root, xml_limits) {
        Ok(x) => x,
        Err(SoapError::Xml(XmlError::Unexpected { expected, found })) => {
            return Err((
                None,
                Fault {
                    code: FaultCode::Sender,
                    subcode: None,
                    reason: format!("{tx} expects {expected} in the SOAP Body, found {found}"),
                },
            ));
        }
        Err(e) => return Err((None, e.to_fault())),
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
        return Err((Some(Box::new(h)), f));
    }
    Ok((h, msg))
}

/// Writes `body` in a SOAP 1.2 envelope with the WS-Addressing headers of `header`.
pub fn write_soap<T: Message>(header: &SoapHeader, body: &T) -> String {
    soap::write_envelope(header, |w| body.write_body(w))
}

/// Reads a document whose root is the body element itself (as in the NIST testkit `*.xml` files).
pub fn read_bare<T: Message>(input: &[u8], limits: &Limits) -> Result<T, XmlError> {
    let mut r = Reader::new(input, limits)?;
    let root = r.root()?;
    check_element::<T>(&root)?;
    T::read_body(&mut r, root)
}

/// Writes the body element alone as a document (with XML declaration), e.g. for schema validation.
pub fn write_bare<T: Message>(body: &T) -> String {
    let mut w = Writer::with_capacity(4096);
    w.decl();
    body.write_body(&mut w);
    w.finish()
}
