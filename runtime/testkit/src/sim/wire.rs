//! SOAP plumbing shared by the simulators: request intake (plain SOAP or root-only MTOM, Action
//! checked, SOAP faults for what cannot be read), fault injection before processing, and response
//! writing (plain SOAP; retrieves as streamed MTOM or the quirky encodings of [`Faults`]).
//!
//! Reading is tolerant (any prefixes, MTOM or not, `charset` or `action` parameters in any order);
//! writing is canonical unless a quirk asks otherwise.

use std::borrow::Cow;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;

use crate::ihe::mtom::{
    MtomLimits, RetrieveItem, RetrieveResponseWriter, soap_envelope, wrap_root,
};
use crate::ihe::query::AdhocQueryResponse;
use crate::ihe::retrieve::{
    Content, DocumentResponse, DocumentResponseMeta, RegistryResponse, RetrieveDocumentSetResponse,
};
use crate::ihe::soap::{self, Fault, FaultCode, SoapHeader, Transaction, WSA_FAULT_ACTION};
use crate::ihe::{Message, ebrim::Identifiable, read_soap, write_soap};
use crate::xml::{Limits, ns};

use super::faults::{Endpoint, Faults, RecordedRequest, RetrieveEncoding, SimControl};

/// Largest request body a simulator accepts, bytes (requests are small: queries and retrieve lists).
pub const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// The bytes a `garbage_body` fault answers with: neither XML nor JSON nor MIME.
pub(crate) const GARBAGE: &[u8] = b"\x00\x9f\x92garbage <<not xml>> {not json\xff\xfe\r\n--";

/// Records the request and applies the faults that answer instead of the simulator (delay, HTTP 500,
/// garbage, SOAP fault). Returns the faults in force and, when one answers, the response.
pub(crate) async fn intake(
    control: &SimControl,
    endpoint: Endpoint,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> (Faults, Option<Response>) {
    control.record(RecordedRequest {
        endpoint,
        method: method.to_string(),
        uri: uri.to_string(),
        content_type: content_type(headers).map(str::to_owned),
        body: body.clone(),
        soap_header: None,
    });
    let faults = control.faults();
    if !faults.applies_to(endpoint) {
        return (Faults::default(), None);
    }
    if faults.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.delay_ms)).await;
    }
    let soap = endpoint.transaction().is_some();
    let early = if faults.http_500 {
        Some(
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "simulated HTTP 500: internal server error\n",
            )
                .into_response(),
        )
    } else if faults.garbage_body {
        let ct = match endpoint {
            Endpoint::Qido => "application/dicom+json",
            Endpoint::Wado => "multipart/related; type=\"application/dicom\"; boundary=x",
            _ => "application/soap+xml; charset=UTF-8",
        };
        Some(
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, ct)],
                Bytes::from_static(GARBAGE),
            )
                .into_response(),
        )
    } else if faults.soap_fault {
        if soap {
            Some(fault_response(
                &Fault {
                    code: FaultCode::Receiver,
                    subcode: None,
                    reason: "simulated SOAP fault: the service is not available".into(),
                },
                None,
            ))
        } else {
            Some(
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    "simulated fault\n",
                )
                    .into_response(),
            )
        }
    } else {
        None
    };
    (faults, early)
}

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
}

/// A SOAP 1.2 fault response: HTTP 400 for `Sender` faults, 500 otherwise (SOAP 1.2 Part 2, 7.5.2.2).
pub(crate) fn fault_response(fault: &Fault, request: Option<&SoapHeader>) -> Response {
    let status = match fault.code {
        FaultCode::Sender => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    xml_response(status, soap::write_fault(fault, request), WSA_FAULT_ACTION)
}

fn soap_content_type(action: &str) -> HeaderValue {
    let action: String = action
        .chars()
        .filter(|c| !c.is_control() && *c != '"')
        .collect();
    HeaderValue::from_str(&format!(
        "application/soap+xml; charset=UTF-8; action=\"{action}\""
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("application/soap+xml; charset=UTF-8"))
}

fn xml_response(status: StatusCode, xml: String, action: &str) -> Response {
    let mut r = (status, xml).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, soap_content_type(action));
    r
}

/// Reads a `T` request for transaction `tx`: the SOAP envelope from a plain body or the root part of an
/// MTOM body, its Action checked against the transaction (ITI TF-2 V.3.2). Any problem becomes the SOAP
/// fault to answer with: `Sender` for what the peer sent (`wsa:ActionNotSupported` /
/// `wsa:MessageAddressingHeaderRequired` for the Action), VersionMismatch / MustUnderstand as SOAP 1.2
/// prescribes.
pub(crate) fn read_request<T: Message>(
    control: &SimControl,
    tx: Transaction,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<(SoapHeader, T), Box<Response>> {
    let ct = content_type(headers).unwrap_or("application/soap+xml");
    let (root, _attachments) = soap_envelope(ct, body, &MtomLimits::default())
        .map_err(|e| Box::new(fault_response(&e.to_fault(), None)))?;
    let limits = Limits::default();
    // Header first, so that a request sent to the wrong endpoint is told so by its Action.
    let (header, ()) = soap::read_envelope(&root, &limits, |r, el| r.skip(&el))
        .map_err(|e| Box::new(fault_response(&e.to_fault(), None)))?;
    control.set_last_soap_header(&header);
    if header.action.is_empty() {
        return Err(Box::new(fault_response(
            &Fault {
                code: FaultCode::Sender,
                subcode: Some("wsa:MessageAddressingHeaderRequired".into()),
                reason: format!("wsa:Action is required; expected {}", tx.request_action()),
            },
            Some(&header),
        )));
    }
    if header.action != tx.request_action() {
        return Err(Box::new(fault_response(
            &Fault {
                code: FaultCode::Sender,
                subcode: Some("wsa:ActionNotSupported".into()),
                reason: format!(
                    "action {} is not supported at this {tx} endpoint; expected {}",
                    header.action,
                    tx.request_action()
                ),
            },
            Some(&header),
        )));
    }
    read_soap::<T>(&root, &limits)
        .map_err(|e| Box::new(fault_response(&e.to_fault(), Some(&header))))
}

/// A plain SOAP response (ITI-18 / ITI-38), shaped by `faults` (prefixes).
pub(crate) fn soap_response<T: Message>(
    tx: Transaction,
    request: &SoapHeader,
    body: &T,
    faults: &Faults,
) -> Response {
    let h = SoapHeader::response(tx.response_action(), request);
    let mut xml = write_soap(&h, body);
    if faults.foreign_prefixes {
        xml = reprefix(&xml);
    }
    xml_response(StatusCode::OK, xml, tx.response_action())
}

/// The answer of a simulated registry or responding gateway to a query (ITI-18 / ITI-38): `resp`,
/// unless a `registry_error` fault replaces it with a Failure carrying that RegistryError; `home`
/// removed from every object under the `omit_home` quirk; encoded as [`soap_response`].
pub(crate) fn query_response(
    tx: Transaction,
    request: &SoapHeader,
    mut resp: AdhocQueryResponse,
    faults: &Faults,
) -> Response {
    if let Some(code) = faults.registry_error.clone() {
        resp = AdhocQueryResponse::new(
            Vec::new(),
            vec![crate::ihe::RegistryError::new(
                code,
                "simulated registry error",
            )],
        );
    }
    if faults.omit_home {
        for o in &mut resp.objects {
            match o {
                Identifiable::ExtrinsicObject(e) => e.object.home = None,
                Identifiable::RegistryPackage(p) => p.object.home = None,
                Identifiable::ObjectRef(r) => r.home = None,
                Identifiable::Association(a) => a.object.home = None,
                Identifiable::Classification(c) => c.object.home = None,
                Identifiable::Other(_) => {}
            }
        }
    }
    soap_response(tx, request, &resp, faults)
}

/// A retrieve response (ITI-39 / ITI-43 / RAD-69 / RAD-75) with these documents (metadata and
/// content, in order), encoded as `faults.retrieve_encoding` says: by default MTOM streamed with
/// [`RetrieveResponseWriter`], one binary part per document.
pub(crate) fn retrieve_response(
    tx: Transaction,
    request: &SoapHeader,
    response: RegistryResponse,
    documents: Vec<(DocumentResponseMeta, Bytes)>,
    faults: &Faults,
) -> Response {
    let h = SoapHeader::response(tx.response_action(), request);
    let documents: Vec<(DocumentResponseMeta, Bytes)> = documents
        .into_iter()
        .map(|(mut m, b)| {
            if faults.omit_home {
                m.home_community_id = None;
            }
            (m, b)
        })
        .collect();
    match faults.retrieve_encoding {
        RetrieveEncoding::Mtom => {
            let metas: Vec<DocumentResponseMeta> =
                documents.iter().map(|(m, _)| m.clone()).collect();
            let writer = RetrieveResponseWriter::new(&h, &response, &metas);
            let ct = writer.content_type();
            let items = futures::stream::iter(documents.into_iter().enumerate().flat_map(
                |(i, (_, bytes))| {
                    [
                        Ok::<_, std::convert::Infallible>(RetrieveItem::Document(i)),
                        Ok(RetrieveItem::Chunk(bytes)),
                        Ok(RetrieveItem::End),
                    ]
                },
            ));
            let prefixes = faults.foreign_prefixes;
            let mut first = true;
            let body = writer.into_body(items, None).map(move |chunk| {
                let chunk = chunk?;
                if prefixes && std::mem::take(&mut first) {
                    return Ok(reprefix_root_part(&chunk));
                }
                Ok::<Bytes, crate::ihe::mtom::MtomError>(chunk)
            });
            let mut r = Response::new(Body::from_stream(body));
            if let Ok(v) = HeaderValue::from_str(&ct) {
                r.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            r
        }
        RetrieveEncoding::PlainSoapBase64 | RetrieveEncoding::MtomBase64Root => {
            let body = RetrieveDocumentSetResponse {
                response,
                documents: documents
                    .into_iter()
                    .map(|(meta, b)| DocumentResponse {
                        meta,
                        content: Content::Inline(b),
                    })
                    .collect(),
            };
            let mut xml = write_soap(&h, &body);
            if faults.foreign_prefixes {
                xml = reprefix(&xml);
            }
            if faults.retrieve_encoding == RetrieveEncoding::PlainSoapBase64 {
                return xml_response(StatusCode::OK, xml, tx.response_action());
            }
            let (ct, bytes) = wrap_root(&xml, tx.response_action());
            let mut r = Response::new(Body::from(bytes));
            if let Ok(v) = HeaderValue::from_str(&ct) {
                r.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            r
        }
    }
}

/// Applies [`reprefix`] to the XML of an MTOM root part (part headers kept).
fn reprefix_root_part(chunk: &Bytes) -> Bytes {
    let Some(pos) = chunk.windows(4).position(|w| w == b"\r\n\r\n") else {
        return chunk.clone();
    };
    let (head, xml) = chunk.split_at(pos + 4);
    let Ok(xml) = std::str::from_utf8(xml) else {
        return chunk.clone();
    };
    let mut out = head.to_vec();
    out.extend_from_slice(reprefix(xml).as_bytes());
    Bytes::from(out)
}

/// Prefix renames of the `foreign_prefixes` quirk: Epic-style `urn`, `urn1` ... for the IHE namespaces,
/// `S` for SOAP, `wsa5` for WS-Addressing; an empty target makes the namespace the default namespace
/// of the element that declared it.
const FOREIGN_PREFIXES: &[(&str, &str, &str)] = &[
    ("soap", "S", ns::SOAP12),
    ("wsa", "wsa5", ns::WSA),
    ("query", "urn", ns::QUERY),
    ("rim", "", ns::RIM),
    ("rs", "urn2", ns::RS),
    ("xdsb", "urn1", ns::XDSB),
    ("xdsi", "urn3", ns::XDSI),
    ("xop", "inc", ns::XOP),
];

fn renamed(prefix: &str) -> Option<&'static str> {
    FOREIGN_PREFIXES
        .iter()
        .find(|(from, _, _)| *from == prefix)
        .map(|(_, to, _)| *to)
}

/// The element name with its prefix renamed.
fn rename_element(qname: &str) -> Cow<'_, str> {
    match qname.split_once(':') {
        Some((p, local)) => match renamed(p) {
            Some("") => Cow::Owned(local.to_owned()),
            Some(to) => Cow::Owned(format!("{to}:{local}")),
            None => Cow::Borrowed(qname),
        },
        None => Cow::Borrowed(qname),
    }
}

/// Rewrites a document this crate wrote with other namespace prefixes (the `foreign_prefixes` quirk):
/// the same infoset, spelled as other products spell it. Attributes keep a prefix (an attribute cannot
/// use the default namespace), so a namespace moved to the default keeps its old prefix declaration too.
/// QName text in SOAP fault `Value`s is renamed with its prefix. Input that does not parse is returned
/// unchanged.
pub fn reprefix(xml: &str) -> String {
    use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut writer = quick_xml::Writer::new(Vec::with_capacity(xml.len() + 256));
    let mut in_value = false;
    let rename_start = |e: &BytesStart<'_>| -> Option<BytesStart<'static>> {
        let name = std::str::from_utf8(e.name().0.as_bytes()).ok()?.to_owned();
        let mut out = BytesStart::new(rename_element(&name).into_owned());
        for a in e.attributes() {
            let a = a.ok()?;
            let key = a.key.0;
            let value = a.value.into_owned();
            if let Some(p) = key.strip_prefix("xmlns:")
                && let Some(to) = renamed(p)
            {
                if to.is_empty() {
                    out.push_attribute(("xmlns", value.as_str()).into_raw());
                    out.push_attribute((key, value.as_str()).into_raw());
                } else {
                    out.push_attribute((format!("xmlns:{to}").as_str(), value.as_str()).into_raw());
                }
                continue;
            }
            match key.split_once(':') {
                Some((p, local)) if p != "xmlns" => match renamed(p) {
                    Some(to) if !to.is_empty() => {
                        out.push_attribute(
                            (format!("{to}:{local}").as_str(), value.as_str()).into_raw(),
                        );
                    }
                    _ => out.push_attribute((key, value.as_str()).into_raw()),
                },
                _ => out.push_attribute((key, value.as_str()).into_raw()),
            }
        }
        Some(out)
    };
    loop {
        let ev = match reader.read_event() {
            Ok(Event::Eof) => break,
            Ok(ev) => ev,
            Err(_) => return xml.to_owned(),
        };
        let res = match ev {
            Event::Start(e) => {
                in_value = e.local_name().as_ref() == "Value" && e.name().0.starts_with("soap:");
                match rename_start(&e) {
                    Some(s) => writer.write_event(Event::Start(s)),
                    None => return xml.to_owned(),
                }
            }
            Event::Empty(e) => match rename_start(&e) {
                Some(s) => writer.write_event(Event::Empty(s)),
                None => return xml.to_owned(),
            },
            Event::End(e) => {
                in_value = false;
                let name = e.name().0.to_owned();
                writer.write_event(Event::End(BytesEnd::new(
                    rename_element(&name).into_owned(),
                )))
            }
            Event::Text(t) if in_value => {
                let text: &str = &t;
                let renamed_text = match text.trim().split_once(':') {
                    Some((p, local)) => match renamed(p) {
                        Some(to) if !to.is_empty() => format!("{to}:{local}"),
                        _ => text.to_owned(),
                    },
                    None => text.to_owned(),
                };
                writer.write_event(Event::Text(BytesText::from_escaped(renamed_text)))
            }
            other => writer.write_event(other),
        };
        if res.is_err() {
            return xml.to_owned();
        }
    }
    String::from_utf8(writer.into_inner()).unwrap_or_else(|_| xml.to_owned())
}

/// Helper for attribute tuples: `(key, raw value)` pushed without escaping again (the value came from
/// the document already escaped).
trait IntoRaw<'a> {
    fn into_raw(self) -> quick_xml::events::attributes::Attribute<'a>;
}

impl<'a> IntoRaw<'a> for (&'a str, &'a str) {
    fn into_raw(self) -> quick_xml::events::attributes::Attribute<'a> {
        quick_xml::events::attributes::Attribute {
            key: quick_xml::name::QName(self.0),
            value: Cow::Borrowed(self.1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ihe::ebrim::{ErrorCode, RegistryError};
    use crate::ihe::query::AdhocQueryResponse;
    use crate::xml::Reader;

    #[test]
    fn reprefix_keeps_the_infoset() {
        let resp = AdhocQueryResponse::new(
            Vec::new(),
            vec![RegistryError::new(ErrorCode::XDSRegistryError, "a & b <c>").at("x")],
        );
        let h = SoapHeader::response(Transaction::Iti38.response_action(), &SoapHeader::default());
        let xml = write_soap(&h, &resp);
        let out = reprefix(&xml);
        assert!(out.contains("<S:Envelope"), "{out}");
        assert!(out.contains("<urn:AdhocQueryResponse"), "{out}");
        assert!(out.contains("<RegistryObjectList"), "{out}");
        assert!(out.contains("<urn2:RegistryErrorList"), "{out}");
        assert!(out.contains("a &amp; b &lt;c&gt;"), "{out}");
        let (h2, back) = read_soap::<AdhocQueryResponse>(out.as_bytes(), &Limits::default())
            .unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(back, resp);
        assert_eq!(h2.action, h.action);
        // a fault's QName text follows its prefix
        let f = soap::write_fault(
            &Fault {
                code: FaultCode::Receiver,
                subcode: Some("wsa:ActionNotSupported".into()),
                reason: "r".into(),
            },
            None,
        );
        let out = reprefix(&f);
        assert!(out.contains(">S:Receiver<"), "{out}");
        assert!(out.contains(">wsa5:ActionNotSupported<"), "{out}");
        let mut r = Reader::new(out.as_bytes(), &Limits::default()).unwrap();
        assert!(r.root().unwrap().is(ns::SOAP12, "Envelope"));
        // not XML: unchanged
        assert_eq!(reprefix("<a"), "<a");
    }
}
