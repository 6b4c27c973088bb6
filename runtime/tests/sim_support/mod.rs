//! Helpers of the simulator tests: HTTP calls with requests built by the ihe codec, answers read by
//! it, and every answer checked with xmllint against the schema testdata/README.md names for it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use duo_runtime::ihe::mtom::{self, MtomLimits};
use duo_runtime::ihe::query::{AdhocQueryRequest, AdhocQueryResponse};
use duo_runtime::ihe::retrieve::{RetrieveDocumentSetResponse, cid_from_href, encode_base64};
use duo_runtime::ihe::soap::{SoapHeader, Transaction};
use duo_runtime::ihe::{Message, SoapError, read_soap, write_soap};
use duo_runtime::xml::Limits;

use crate::common;

/// Schema sets (testdata/README.md "Validating with xmllint").
pub const SOAP: &str = "soap12/soap-1.2-envelope.xsd";
pub const QUERY_IPF: &str = "schema/ebRS30/query.xsd";
pub const QUERY_NIST: &str = "nist-v3/query.xsd";
pub const XDSB_NIST: &str = "nist-v3/XDS.b_DocumentRepository.xsd";

/// A plain HTTP client.
pub fn client() -> reqwest::Client {
    duo_runtime::tls::plain_http_client(Duration::from_secs(5))
        .unwrap()
        .into()
}

/// What came back over HTTP.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// POSTs `body` with `content_type`.
pub async fn post(url: &str, content_type: &str, body: Vec<u8>) -> Answer {
    let r = client()
        .post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = r.bytes().await.unwrap();
    Answer {
        status,
        content_type,
        body,
    }
}

/// GET with optional Accept.
pub async fn get(url: &str, accept: Option<&str>) -> Answer {
    let mut req = client().get(url);
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let r = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = r.bytes().await.unwrap();
    Answer {
        status,
        content_type,
        body,
    }
}

/// The `application/soap+xml` content type with the action parameter.
pub fn soap_ct(action: &str) -> String {
    format!("application/soap+xml; charset=UTF-8; action=\"{action}\"")
}

/// Sends `body` as a `tx` request in a SOAP envelope written by the codec.
pub async fn send<T: Message>(url: &str, tx: Transaction, body: &T) -> Answer {
    let h = SoapHeader::request(tx.request_action(), Some(url));
    post(
        url,
        &soap_ct(tx.request_action()),
        write_soap(&h, body).into_bytes(),
    )
    .await
}

/// Wraps a bare body document (a NIST testkit file, XML declaration dropped) in a SOAP 1.2 envelope
/// with the Action of `tx`, keeping the body text exactly as in the file.
pub fn envelope_around(tx: Transaction, bare: &str) -> String {
    let body = bare.trim_start_matches('\u{feff}').trim();
    let body = if body.starts_with("<?xml") {
        &body[body.find("?>").unwrap() + 2..]
    } else {
        body
    };
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope" xmlns:wsa="http://www.w3.org/2005/08/addressing"><soap:Header><wsa:Action soap:mustUnderstand="true">{}</wsa:Action><wsa:MessageID>urn:uuid:0b8c1b0c-7d7e-4c5e-9b2a-3c1f0e6a9d11</wsa:MessageID><wsa:ReplyTo><wsa:Address>http://www.w3.org/2005/08/addressing/anonymous</wsa:Address></wsa:ReplyTo></soap:Header><soap:Body>{body}</soap:Body></soap:Envelope>"#,
        tx.request_action()
    )
}

/// Reads a query response, checking HTTP 200, the response Action and the schemas.
pub fn query_response(a: &Answer, tx: Transaction) -> AdhocQueryResponse {
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(
        a.content_type.starts_with("application/soap+xml"),
        "{}",
        a.content_type
    );
    validate_envelope(&a.body, &[QUERY_IPF, QUERY_NIST], &format!("{tx} response"));
    let (h, r) = read_soap::<AdhocQueryResponse>(&a.body, &Limits::default())
        .unwrap_or_else(|e| panic!("{e}: {}", a.text()));
    assert_eq!(h.action, tx.response_action());
    r
}

/// Sends a query and reads the answer.
pub async fn query(url: &str, tx: Transaction, req: &AdhocQueryRequest) -> AdhocQueryResponse {
    query_response(&send(url, tx, req).await, tx)
}

/// Reads a retrieve response (any of the three encodings) with every document resolved, after checking
/// HTTP 200, the Action and the schemas (for MTOM: the root envelope, then its body as the XOP infoset).
pub fn retrieve_response(a: &Answer, tx: Transaction) -> RetrieveDocumentSetResponse {
    assert_eq!(a.status, 200, "{}", a.text());
    validate_retrieve(a, &format!("{tx} response"));
    let (h, r) =
        mtom::read_retrieve_response(&a.content_type, a.body.clone(), &MtomLimits::default())
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(h.action, tx.response_action());
    r
}

/// Sends a retrieve request and reads the answer.
pub async fn retrieve<T: Message>(
    url: &str,
    tx: Transaction,
    req: &T,
) -> RetrieveDocumentSetResponse {
    retrieve_response(&send(url, tx, req).await, tx)
}

/// Validates an envelope against the SOAP schema and its body against each of `schemas`.
pub fn validate_envelope(envelope: &[u8], schemas: &[&str], label: &str) {
    let text = std::str::from_utf8(envelope).unwrap();
    common::assert_valid(SOAP, text, &format!("{label} envelope"));
    let body = common::body_of(envelope);
    for s in schemas {
        common::assert_valid(s, &body, label);
    }
}

/// Schema checks of a retrieve response as sent: plain SOAP, or MTOM whose root envelope validates and
/// whose body validates once every `xop:Include` is replaced by the base64 of its part (XOP 1.0 §3.2).
pub fn validate_retrieve(a: &Answer, label: &str) {
    let (root, parts) =
        mtom::soap_envelope(&a.content_type, a.body.clone(), &MtomLimits::default()).unwrap();
    let text = String::from_utf8(root.to_vec()).unwrap();
    common::assert_valid(SOAP, &text, &format!("{label} envelope"));
    let mut body = common::body_of(root.as_ref());
    while let Some(start) = body.find(":Include ") {
        let open = body[..start].rfind('<').unwrap();
        let end = start + body[start..].find("/>").unwrap() + 2;
        let tag = body[open..end].to_owned();
        let href = tag
            .split("href=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let cid = cid_from_href(href);
        let part = parts
            .iter()
            .find(|p| p.headers.content_id() == Some(cid.as_str()))
            .unwrap_or_else(|| panic!("no part {cid}"));
        body.replace_range(open..end, &encode_base64(&part.body));
    }
    common::assert_valid(XDSB_NIST, &body, label);
}

/// The SOAP fault of an answer (status 400 or 500), after checking the envelope schema.
pub fn fault_of(a: &Answer) -> duo_runtime::ihe::Fault {
    assert!(
        a.status == 400 || a.status == 500,
        "{} {}",
        a.status,
        a.text()
    );
    common::assert_valid(SOAP, &a.text(), "fault");
    match read_soap::<AdhocQueryResponse>(&a.body, &Limits::default()) {
        Err(SoapError::Fault(f)) => f,
        other => panic!("expected a fault, got {other:?}"),
    }
}

fn tools_required() -> bool {
    let ci = std::env::var("CI")
        .map(|v| !v.is_empty() && v != "false" && v != "0")
        .unwrap_or(false);
    ci || std::env::var("DUO_REQUIRE_TOOLS").is_ok_and(|v| v == "1")
}

/// The path of `name` on PATH; `None` after a skip message when absent and not required (CI or
/// DUO_REQUIRE_TOOLS=1 make it a failure).
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(name);
        if p.is_file() {
            return Some(p);
        }
    }
    assert!(
        !tools_required(),
        "`{name}` is required (CI or DUO_REQUIRE_TOOLS=1): run scripts/setup.sh"
    );
    eprintln!("SKIP: `{name}` not available (run scripts/setup.sh)");
    None
}

/// The instance re-encoded by dcmtk `dcmcjpeg` as JPEG Lossless, Non-Hierarchical, First-Order
/// Prediction (Process 14, selection value 1: transfer syntax 1.2.840.10008.1.2.4.70).
pub fn jpeg_lossless(bytes: &[u8]) -> Option<Vec<u8>> {
    let dcmcjpeg = tool("dcmcjpeg")?;
    let dir = tempfile::tempdir().unwrap();
    let (i, o) = (dir.path().join("in.dcm"), dir.path().join("out.dcm"));
    std::fs::write(&i, bytes).unwrap();
    let out = Command::new(dcmcjpeg)
        .arg("+e1")
        .arg(&i)
        .arg(&o)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dcmcjpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(std::fs::read(&o).unwrap())
}
