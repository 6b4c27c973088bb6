//! SOAP 1.2 envelopes with WS-Addressing 1.0 headers, and SOAP faults (IHE ITI TF-2 Appendix V).
//!
//! Reading is tolerant: any prefixes, Action text with surrounding whitespace, header blocks the gateway
//! does not process kept as self-contained raw XML (so a WS-Security header with its SAML assertion is
//! passed on, not dropped). Writing is canonical: prefixes `soap`/`wsa`, `mustUnderstand="true"` on Action,
//! `ReplyTo` anonymous on requests, `RelatesTo` on responses.

use std::fmt;

use crate::xml::{Elem, Limits, Reader, Writer, XmlError, ns};

/// The anonymous WS-Addressing endpoint (synchronous reply on the same HTTP connection).
pub const WSA_ANONYMOUS: &str = "http://www.w3.org/2005/08/addressing/anonymous";
/// WS-Addressing action of a SOAP fault (WS-Addressing 1.0 SOAP Binding 6).
pub const WSA_FAULT_ACTION: &str = "http://www.w3.org/2005/08/addressing/soap/fault";

/// The six IHE transactions this gateway speaks, with their WS-Addressing actions (docs/DOMAIN.md table;
/// RAD-69 answers with the ITI-43 response action).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transaction {
    /// ITI-18 Registry Stored Query.
    Iti18,
    /// ITI-38 Cross Gateway Query.
    Iti38,
    /// ITI-39 Cross Gateway Retrieve.
    Iti39,
    /// ITI-43 Retrieve Document Set.
    Iti43,
    /// RAD-69 Retrieve Imaging Document Set.
    Rad69,
    /// RAD-75 Cross Gateway Retrieve Imaging Document Set.
    Rad75,
}

impl Transaction {
    /// All six, in transaction-number order.
    pub const ALL: [Transaction; 6] = [
        Transaction::Iti18,
        Transaction::Iti38,
        Transaction::Iti39,
        Transaction::Iti43,
        Transaction::Rad69,
        Transaction::Rad75,
    ];

    /// The request's `wsa:Action`.
    pub fn request_action(self) -> &'static str {
        match self {
            Transaction::Iti18 => "urn:ihe:iti:2007:RegistryStoredQuery",
            Transaction::Iti38 => "urn:ihe:iti:2007:CrossGatewayQuery",
            Transaction::Iti39 => "urn:ihe:iti:2007:CrossGatewayRetrieve",
            Transaction::Iti43 => "urn:ihe:iti:2007:RetrieveDocumentSet",
            Transaction::Rad69 => "urn:ihe:rad:2009:RetrieveImagingDocumentSet",
            Transaction::Rad75 => "urn:ihe:rad:2011:CrossGatewayRetrieveImagingDocumentSet",
        }
    }

    /// The response's `wsa:Action`.
    pub fn response_action(self) -> &'static str {
        match self {
            Transaction::Iti18 => "urn:ihe:iti:2007:RegistryStoredQueryResponse",
            Transaction::Iti38 => "urn:ihe:iti:2007:CrossGatewayQueryResponse",
            Transaction::Iti39 => "urn:ihe:iti:2007:CrossGatewayRetrieveResponse",
            Transaction::Iti43 | Transaction::Rad69 => {
                "urn:ihe:iti:2007:RetrieveDocumentSetResponse"
            }
            Transaction::Rad75 => "urn:ihe:rad:2011:CrossGatewayRetrieveImagingDocumentSetResponse",
        }
    }

    /// The transaction whose request action is `action` (surrounding whitespace ignored).
    pub fn from_request_action(action: &str) -> Option<Transaction> {
        let a = action.trim();
        Transaction::ALL
            .into_iter()
            .find(|t| t.request_action() == a)
    }

    /// Short name, e.g. `ITI-38`.
    pub fn name(self) -> &'static str {
        match self {
            Transaction::Iti18 => "ITI-18",
            Transaction::Iti38 => "ITI-38",
            Transaction::Iti39 => "ITI-39",
            Transaction::Iti43 => "ITI-43",
            Transaction::Rad69 => "RAD-69",
            Transaction::Rad75 => "RAD-75",
        }
    }
}

impl fmt::Display for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// WS-Addressing headers plus the header blocks the gateway passes on untouched.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SoapHeader {
    /// `wsa:Action`, trimmed.
    pub action: String,
    /// `wsa:MessageID`.
    pub message_id: Option<String>,
    /// `wsa:To`.
    pub to: Option<String>,
    /// `wsa:ReplyTo/wsa:Address`.
    pub reply_to: Option<String>,
    /// `wsa:RelatesTo`.
    pub relates_to: Option<String>,
    /// Every other header block (WS-Security, SAML, vendor headers) as self-contained raw XML, in order.
    pub other: Vec<String>,
}

impl SoapHeader {
    /// Request headers: Action, a fresh `urn:uuid:` MessageID, To, ReplyTo anonymous.
    pub fn request(action: &str, to: Option<&str>) -> SoapHeader {
        SoapHeader {
            action: action.to_owned(),
            message_id: Some(new_message_id()),
            to: to.map(str::to_owned),
            reply_to: Some(WSA_ANONYMOUS.to_owned()),
            relates_to: None,
            other: Vec::new(),
        }
    }

    /// Response headers for a request: Action, fresh MessageID, RelatesTo the request's MessageID.
    pub fn response(action: &str, request: &SoapHeader) -> SoapHeader {
        SoapHeader {
            action: action.to_owned(),
            message_id: Some(new_message_id()),
            to: None,
            reply_to: None,
            relates_to: request.message_id.as_deref().map(echoed),
            other: Vec::new(),
        }
    }
}

/// Longest value echoed from a request into an answer or a record (MessageID into RelatesTo or an
/// audit record's `messageId`), bytes. A MessageID is a URI, in practice `urn:uuid:` plus 36
/// characters; a longer one is cut here, so a peer cannot make every answer and record carry
/// megabytes of its choosing.
pub const MAX_ECHOED_BYTES: usize = 256;

/// `value` capped at [`MAX_ECHOED_BYTES`] (cut at a character boundary).
pub fn echoed(value: &str) -> String {
    cut(value, MAX_ECHOED_BYTES).to_owned()
}

/// The longest prefix of `value` of at most `max_bytes` bytes that ends at a character boundary.
pub fn cut(value: &str, max_bytes: usize) -> &str {
    if value.len() <= max_bytes {
        return value;
    }
    let mut end = max_bytes;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

/// A fresh WS-Addressing MessageID, `urn:uuid:<v4>`.
pub fn new_message_id() -> String {
    format!("urn:uuid:{}", uuid::Uuid::new_v4())
}

/// SOAP 1.2 fault codes (SOAP 1.2 Part 1, 5.4.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultCode {
    /// The envelope is not SOAP 1.2.
    VersionMismatch,
    /// A mustUnderstand header was not understood.
    MustUnderstand,
    /// The message was wrong (the peer's fault).
    Sender,
    /// Processing failed at this node.
    Receiver,
}

impl FaultCode {
    fn local(self) -> &'static str {
        match self {
            FaultCode::VersionMismatch => "VersionMismatch",
            FaultCode::MustUnderstand => "MustUnderstand",
            FaultCode::Sender => "Sender",
            FaultCode::Receiver => "Receiver",
        }
    }

    fn from_qname_local(s: &str) -> FaultCode {
        let local = s.rsplit(':').next().unwrap_or(s).trim();
        match local {
            "VersionMismatch" => FaultCode::VersionMismatch,
            "MustUnderstand" => FaultCode::MustUnderstand,
            "Sender" | "Client" => FaultCode::Sender,
            _ => FaultCode::Receiver,
        }
    }
}

/// A SOAP 1.2 fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// `Code/Value`.
    pub code: FaultCode,
    /// `Code/Subcode/Value` text (a QName as the peer wrote it), if any.
    pub subcode: Option<String>,
    /// `Reason/Text`.
    pub reason: String,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SOAP fault {}: {}", self.code.local(), self.reason)
    }
}

/// Why an envelope could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SoapError {
    /// The XML itself was refused (malformed, hostile, too large ...).
    #[error(transparent)]
    Xml(#[from] XmlError),
    /// The document element is not a SOAP 1.2 Envelope (e.g. SOAP 1.1).
    #[error("not a SOAP 1.2 envelope: document element is {0}")]
    VersionMismatch(String),
    /// A header block with mustUnderstand="true" that this gateway does not process.
    #[error("header {0} has mustUnderstand but is not understood")]
    MustUnderstand(String),
    /// The body holds a SOAP fault.
    #[error("{0}")]
    Fault(Fault),
    /// The body is empty.
    #[error("SOAP body is empty")]
    EmptyBody,
}

impl SoapError {
    /// The fault this gateway answers with when it cannot read a peer's request.
    pub fn to_fault(&self) -> Fault {
        match self {
            SoapError::VersionMismatch(_) => Fault {
                code: FaultCode::VersionMismatch,
                subcode: None,
                reason: self.to_string(),
            },
            SoapError::MustUnderstand(_) => Fault {
                code: FaultCode::MustUnderstand,
                subcode: None,
                reason: self.to_string(),
            },
            SoapError::Fault(f) => f.clone(),
            _ => Fault {
                code: FaultCode::Sender,
                subcode: None,
                reason: self.to_string(),
            },
        }
    }
}

fn is_true(v: &str) -> bool {
    matches!(v.trim(), "true" | "1")
}

/// Header blocks this gateway understands even when marked mustUnderstand.
fn understood(el: &Elem<'_>) -> bool {
    el.ns.uri() == ns::WSA || (el.ns.uri() == ns::WSSE && el.local == "Security")
}

/// Reads a SOAP 1.2 envelope. `body` decodes the first element child of `soap:Body` (the payload); a
/// `soap:Fault` there is returned as [`SoapError::Fault`] without calling `body`.
///
/// Errors: [`SoapError::VersionMismatch`] for a non-SOAP-1.2 document element, [`SoapError::MustUnderstand`]
/// for a mandatory header it does not process, XML errors for hostile or malformed input.
pub fn read_envelope<'i, T>(
    input: &'i [u8],
    limits: &Limits,
    body: impl FnOnce(&mut Reader<'i>, Elem<'i>) -> Result<T, XmlError>,
) -> Result<(SoapHeader, T), SoapError> {
    let mut r = Reader::new(input, limits)?;
    let env = r.root()?;
    if !env.is(ns::SOAP12, "Envelope") {
        return Err(SoapError::VersionMismatch(env.qualified()));
    }
    let mut header = SoapHeader::default();
    while let Some(part) = r.child(&env)? {
        if part.is(ns::SOAP12, "Header") {
            read_header(&mut r, &part, &mut header)?;
        } else if part.is(ns::SOAP12, "Body") {
            let Some(payload) = r.child(&part)? else {
                return Err(SoapError::EmptyBody);
            };
            if payload.is(ns::SOAP12, "Fault") {
                return Err(SoapError::Fault(read_fault(&mut r, &payload)?));
            }
            let value = body(&mut r, payload)?;
            // Trailing content is read so that well-formedness errors after the payload are still
            // reported; SOAP 1.2 Part 1 5.1: nothing follows the one Body, nothing follows Envelope.
            r.skip(&part)?;
            if let Some(extra) = r.child(&env)? {
                return Err(SoapError::Xml(XmlError::Syntax {
                    pos: extra.position() as u64,
                    msg: format!("{} after soap:Body", extra.qualified()),
                }));
            }
            r.end(&env)?;
            return Ok((header, value));
        } else {
            r.skip(&part)?;
        }
    }
    Err(SoapError::EmptyBody)
}

/// Reads a SOAP 1.2 envelope like [`read_envelope`], but hands `body` every child of `soap:Body` in
/// turn instead of only the first, so that a reader which must see the whole answer (the Mitz closed
/// answer: a second XACML `Response` after the first must not go unseen) can. A `soap:Fault` at any
/// position of the Body is returned as [`SoapError::Fault`]; an empty Body is [`SoapError::EmptyBody`].
pub fn read_envelope_body<'i>(
    input: &'i [u8],
    limits: &Limits,
    mut body: impl FnMut(&mut Reader<'i>, Elem<'i>) -> Result<(), XmlError>,
) -> Result<SoapHeader, SoapError> {
    let mut r = Reader::new(input, limits)?;
    let env = r.root()?;
    if !env.is(ns::SOAP12, "Envelope") {
        return Err(SoapError::VersionMismatch(env.qualified()));
    }
    let mut header = SoapHeader::default();
    while let Some(part) = r.child(&env)? {
        if part.is(ns::SOAP12, "Header") {
            read_header(&mut r, &part, &mut header)?;
        } else if part.is(ns::SOAP12, "Body") {
            let mut any = false;
            while let Some(payload) = r.child(&part)? {
                any = true;
                if payload.is(ns::SOAP12, "Fault") {
                    return Err(SoapError::Fault(read_fault(&mut r, &payload)?));
                }
                body(&mut r, payload)?;
            }
            if !any {
                return Err(SoapError::EmptyBody);
            }
            if let Some(extra) = r.child(&env)? {
                return Err(SoapError::Xml(XmlError::Syntax {
                    pos: extra.position() as u64,
                    msg: format!("{} after soap:Body", extra.qualified()),
                }));
            }
            r.end(&env)?;
            return Ok(header);
        } else {
            r.skip(&part)?;
        }
    }
    Err(SoapError::EmptyBody)
}

fn read_header<'i>(
    r: &mut Reader<'i>,
    hdr: &Elem<'i>,
    h: &mut SoapHeader,
) -> Result<(), SoapError> {
    while let Some(el) = r.child(hdr)? {
        if el.ns.uri() == ns::WSA {
            match el.local {
                "Action" => h.action = r.text(&el)?.trim().to_owned(),
                "MessageID" => h.message_id = Some(r.text(&el)?.trim().to_owned()),
                "To" => h.to = Some(r.text(&el)?.trim().to_owned()),
                "RelatesTo" => h.relates_to = Some(r.text(&el)?.trim().to_owned()),
                "ReplyTo" => {
                    while let Some(c) = r.child(&el)? {
                        if c.is(ns::WSA, "Address") {
                            h.reply_to = Some(r.text(&c)?.trim().to_owned());
                        }
                    }
                }
                _ => h.other.push(r.raw_fragment(&el)?),
            }
            continue;
        }
        if el
            .attr_ns(ns::SOAP12, "mustUnderstand")
            .is_some_and(is_true)
            && !understood(&el)
        {
            return Err(SoapError::MustUnderstand(el.qualified()));
        }
        // a WS-Security block keeps every declaration in scope: the signed assertion in it is
        // canonicalised apart from the envelope (see Reader::raw_fragment_in_scope)
        if el.is(ns::WSSE, "Security") {
            h.other.push(r.raw_fragment_in_scope(&el)?);
        } else {
            h.other.push(r.raw_fragment(&el)?);
        }
    }
    Ok(())
}

fn read_fault<'i>(r: &mut Reader<'i>, f: &Elem<'i>) -> Result<Fault, XmlError> {
    let mut fault = Fault {
        code: FaultCode::Receiver,
        subcode: None,
        reason: String::new(),
    };
    while let Some(el) = r.child(f)? {
        if el.is(ns::SOAP12, "Code") {
            while let Some(c) = r.child(&el)? {
                if c.is(ns::SOAP12, "Value") {
                    fault.code = FaultCode::from_qname_local(&r.text(&c)?);
                } else if c.is(ns::SOAP12, "Subcode") {
                    while let Some(v) = r.child(&c)? {
                        if v.is(ns::SOAP12, "Value") {
                            fault.subcode = Some(r.text(&v)?.trim().to_owned());
                        }
                    }
                }
            }
        } else if el.is(ns::SOAP12, "Reason") {
            while let Some(t) = r.child(&el)? {
                if t.is(ns::SOAP12, "Text") && fault.reason.is_empty() {
                    fault.reason = r.text(&t)?.trim().to_owned();
                }
            }
        }
    }
    Ok(fault)
}

/// Writes a SOAP 1.2 envelope with the WS-Addressing headers of `h` (and its raw blocks), then lets
/// `body` write the payload inside `soap:Body`. Returns the document with an XML declaration.
pub fn write_envelope(h: &SoapHeader, body: impl FnOnce(&mut Writer)) -> String {
    let mut w = Writer::with_capacity(4096);
    w.decl();
    w.start("soap:Envelope")
        .attr("xmlns:soap", ns::SOAP12)
        .attr("xmlns:wsa", ns::WSA);
    w.start("soap:Header");
    w.start("wsa:Action")
        .attr("soap:mustUnderstand", "true")
        .text(&h.action)
        .end();
    if let Some(id) = &h.message_id {
        w.leaf("wsa:MessageID", id);
    }
    if let Some(r) = &h.reply_to {
        w.start("wsa:ReplyTo").leaf("wsa:Address", r).end();
    }
    if let Some(to) = &h.to {
        w.leaf("wsa:To", to);
    }
    if let Some(rel) = &h.relates_to {
        w.leaf("wsa:RelatesTo", rel);
    }
    for block in &h.other {
        w.raw(block);
    }
    w.end();
    w.start("soap:Body");
    body(&mut w);
    w.end();
    w.end();
    w.finish()
}

/// Writes a SOAP 1.2 fault envelope (Action `.../soap/fault`, RelatesTo the request when known).
pub fn write_fault(fault: &Fault, request: Option<&SoapHeader>) -> String {
    let mut h = SoapHeader {
        action: WSA_FAULT_ACTION.to_owned(),
        message_id: Some(new_message_id()),
        ..Default::default()
    };
    h.relates_to = request.and_then(|r| r.message_id.as_deref()).map(echoed);
    write_envelope(&h, |w| {
        w.start("soap:Fault");
        w.start("soap:Code");
        w.leaf("soap:Value", &format!("soap:{}", fault.code.local()));
        if let Some(s) = &fault.subcode {
            // the subcode is a QName: a WS-Security one needs its prefix declared
            w.start("soap:Subcode");
            w.start("soap:Value");
            if s.starts_with("wsse:") {
                w.attr("xmlns:wsse", ns::WSSE);
            }
            w.text(s).end();
            w.end();
        }
        w.end();
        w.start("soap:Reason")
            .start("soap:Text")
            .attr("xml:lang", "en")
            .text(&fault.reason)
            .end()
            .end();
        w.end();
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn reads_other_prefixes_and_whitespace_action() {
        let doc = br#"<S:Envelope xmlns:S="http://www.w3.org/2003/05/soap-envelope" xmlns:A="http://www.w3.org/2005/08/addressing">
          <S:Header><A:Action S:mustUnderstand="1">
             urn:ihe:iti:2007:CrossGatewayQuery
          </A:Action><A:MessageID>urn:uuid:1</A:MessageID><A:ReplyTo><A:Address>http://www.w3.org/2005/08/addressing/anonymous</A:Address></A:ReplyTo>
          <wsse:Security xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd" S:mustUnderstand="true"><x:y xmlns:x="urn:x" foo:z="1"/></wsse:Security>
          </S:Header><S:Body><q:AdhocQueryRequest xmlns:q="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"/></S:Body></S:Envelope>"#;
        let (h, local) = read_envelope(doc, &limits(), |r, el| {
            let l = el.local.to_owned();
            r.skip(&el)?;
            Ok(l)
        })
        .unwrap();
        assert_eq!(h.action, "urn:ihe:iti:2007:CrossGatewayQuery");
        assert_eq!(
            Transaction::from_request_action(&h.action),
            Some(Transaction::Iti38)
        );
        assert_eq!(h.message_id.as_deref(), Some("urn:uuid:1"));
        assert_eq!(h.reply_to.as_deref(), Some(WSA_ANONYMOUS));
        assert_eq!(local, "AdhocQueryRequest");
        assert_eq!(h.other.len(), 1);
        assert!(
            h.other[0].contains(r#"xmlns:S="http://www.w3.org/2003/05/soap-envelope""#),
            "{}",
            h.other[0]
        );
        // written out again, the block keeps its content and the envelope parses
        let out = write_envelope(
            &SoapHeader {
                other: h.other.clone(),
                ..SoapHeader::request("x", None)
            },
            |w| {
                w.start("p:x").attr("xmlns:p", "urn:p").end();
            },
        );
        let (h2, _) = read_envelope(out.as_bytes(), &limits(), |r, el| r.skip(&el)).unwrap();
        // the block keeps the declarations in scope where it stood: the first pass adds only those of
        // this envelope, a second pass nothing
        let ours = |b: &str| {
            b.replace(r#" xmlns:wsa="http://www.w3.org/2005/08/addressing""#, "")
                .replace(
                    r#" xmlns:soap="http://www.w3.org/2003/05/soap-envelope""#,
                    "",
                )
        };
        assert_eq!(
            h2.other.iter().map(|b| ours(b)).collect::<Vec<_>>(),
            h.other
        );
        let out2 = write_envelope(
            &SoapHeader {
                other: h2.other.clone(),
                ..SoapHeader::request("x", None)
            },
            |w| {
                w.start("p:x").attr("xmlns:p", "urn:p").end();
            },
        );
        let (h3, _) = read_envelope(out2.as_bytes(), &limits(), |r, el| r.skip(&el)).unwrap();
        assert_eq!(h3.other, h2.other);
    }

    #[test]
    fn refuses_soap11_and_unknown_must_understand() {
        let s11 = br#"<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body/></e:Envelope>"#;
        assert!(matches!(
            read_envelope(s11, &limits(), |r, e| r.skip(&e)),
            Err(SoapError::VersionMismatch(_))
        ));
        let mu = br#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Header><v:X xmlns:v="urn:v" s:mustUnderstand="true"/></s:Header><s:Body><a/></s:Body></s:Envelope>"#;
        let e = read_envelope(mu, &limits(), |r, e| r.skip(&e)).unwrap_err();
        assert!(matches!(e, SoapError::MustUnderstand(_)));
        assert_eq!(e.to_fault().code, FaultCode::MustUnderstand);
    }

    #[test]
    fn nothing_may_follow_the_body_or_the_envelope() {
        let ok = r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><a/></s:Body></s:Envelope>"#;
        let read = |t: &str| read_envelope(t.as_bytes(), &limits(), |r, e| r.skip(&e));
        assert!(read(ok).is_ok());
        assert!(read(&format!("{ok}\n<!-- trailing comment -->\n")).is_ok());
        let two_bodies = ok.replace("</s:Body>", "</s:Body><s:Body><b/></s:Body>");
        let e = read(&two_bodies).unwrap_err();
        assert!(e.to_string().contains("after soap:Body"), "{e}");
        assert_eq!(e.to_fault().code, FaultCode::Sender);
        for junk in ["<x/>", "junk", "<s:Envelope/>"] {
            assert!(read(&format!("{ok}{junk}")).is_err(), "{junk}");
        }
    }

    #[test]
    fn fault_round_trip() {
        let f = Fault {
            code: FaultCode::Sender,
            subcode: Some("wsa:ActionNotSupported".into()),
            reason: "no <such> action".into(),
        };
        let text = write_fault(&f, None);
        let e = read_envelope(text.as_bytes(), &limits(), |r, e| r.skip(&e)).unwrap_err();
        assert_eq!(e, SoapError::Fault(f));
    }

    #[test]
    fn reads_the_nist_toolkit_fault_sample() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../testdata/ihe/samples/httpParser/boundryTest/response_body.txt"
        );
        let text = std::fs::read(dir).unwrap();
        let start = text
            .windows(5)
            .position(|w| w == b"<soap" || w == b"<env:" || w == b"<S:En")
            .unwrap_or(0);
        match read_envelope(&text[start..], &limits(), |r, e| r.skip(&e)) {
            Err(SoapError::Fault(f)) => assert!(f.reason.contains("MTOM"), "{f:?}"),
            other => panic!("expected a fault, got {other:?}"),
        }
    }
}
