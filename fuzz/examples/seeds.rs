//! Writes the seed corpus `fuzz/seeds/<target>/` (committed) from the test messages of the repository
//! (`testdata/ihe/samples`, `testdata/mitz`, `runtime/tests/hostile`) and from messages the codecs write
//! (requests with an XUA assertion, plain and as MTOM; retrieve answers as MTOM, as plain SOAP with
//! base64 and cut short; Mitz answers). Each file has the input shape of its target (see `src/lib.rs`).
//!
//! `scripts/fuzz.sh --seeds` runs this and then minimises each folder with `cargo fuzz cmin`, so only
//! seeds that add coverage stay.

use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use duo_fuzz::SOAP_CT;
use duo_runtime::consent::xacml::{self, CategoryDecision, Decision};
use duo_runtime::ihe::ebrim::{ErrorCode, RegistryError, Slot};
use duo_runtime::ihe::mtom::{self, RetrieveResponseWriter};
use duo_runtime::ihe::query::{AdhocQuery, AdhocQueryRequest, ReturnType, StoredQuery, param};
use duo_runtime::ihe::retrieve::{
    Content, DocumentRequest, DocumentResponse, DocumentResponseMeta, RegistryResponse,
    RetrieveDocumentSetRequest, RetrieveDocumentSetResponse, RetrieveImagingDocumentSetRequest,
    SeriesRequest, StudyRequest,
};
use duo_runtime::ihe::soap::SoapHeader;
use duo_runtime::ihe::xua::{UnsignedAssertions, XuaAssertion};
use duo_runtime::ihe::{Transaction, write_soap};
use duo_runtime::localization::{self, InstanceId, PatientLocation};
use duo_runtime::model::{Bsn, Requester};

const ISSUED: &str = "2026-01-01T10:00:00Z";
const SOAP12: &str = "http://www.w3.org/2003/05/soap-envelope";
const WSA: &str = "http://www.w3.org/2005/08/addressing";

struct Seeds {
    dir: PathBuf,
}

impl Seeds {
    fn target(root: &Path, name: &str) -> Seeds {
        let dir = root.join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create seed folder");
        Seeds { dir }
    }

    fn put(&self, name: &str, bytes: &[u8]) {
        fs::write(self.dir.join(name), bytes).expect("write seed");
    }
}

/// `Content-Type` line + body (the HTTP-message shape).
fn http(ct: &str, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(ct.len() + 1 + body.len());
    v.extend_from_slice(ct.as_bytes());
    v.push(b'\n');
    v.extend_from_slice(body);
    v
}

/// Chunking seed byte + HTTP message.
fn chunked(seed: u8, ct: &str, body: &[u8]) -> Vec<u8> {
    let mut v = vec![seed];
    v.extend_from_slice(&http(ct, body));
    v
}

fn read(root: &Path, rel: &str) -> Vec<u8> {
    fs::read(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// A bare body sample (NIST testkit form) without its XML declaration.
fn bare(root: &Path, rel: &str) -> String {
    let text = String::from_utf8(read(root, rel)).expect("UTF-8 sample");
    let t = text.trim_start_matches('\u{feff}').trim_start();
    match t.strip_prefix("<?xml").and_then(|r| r.split_once("?>")) {
        Some((_, rest)) => rest.trim_start().to_owned(),
        None => t.to_owned(),
    }
}

/// A SOAP 1.2 envelope around a sample body, with Action, MessageID and optionally a security block.
fn envelope(action: &str, body: &str, security: Option<&str>) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<soap:Envelope xmlns:soap=\"{SOAP12}\" xmlns:wsa=\"{WSA}\"><soap:Header><wsa:Action soap:mustUnderstand=\"true\">{action}</wsa:Action><wsa:MessageID>urn:uuid:8f0c2a52-1b6e-4b6f-9d59-3b0c0d7c5a11</wsa:MessageID>{}</soap:Header><soap:Body>{body}</soap:Body></soap:Envelope>",
        security.unwrap_or("")
    )
}

/// An HTTP capture (request line, headers, blank line, body): its Content-Type and body.
fn capture(root: &Path, rel: &str) -> (String, Vec<u8>) {
    let raw = read(root, rel);
    let split = raw
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, 2))
        .or_else(|| {
            raw.windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|i| (i, 4))
        })
        .expect("blank line after the headers");
    let head = String::from_utf8_lossy(&raw[..split.0]);
    let ct = head
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        })
        .expect("a Content-Type header");
    (ct, raw[split.0 + split.1..].to_vec())
}

fn requester() -> Requester {
    Requester {
        uzi: "000095254".parse().expect("uzi"),
        role: "01.015".parse().expect("role"),
        ura: "00000666".parse().expect("ura"),
        facility_type: "Z3".parse().expect("facility type"),
        purpose_of_use: "TREAT".parse().expect("purpose of use"),
        name: Some("Dr. A. Radioloog".into()),
    }
}

/// The XUA assertion a peer gateway sends (issued at [`ISSUED`], checked by the targets at `duo_fuzz::NOW`).
fn assertion(patient: bool) -> String {
    let mut a = XuaAssertion::new(
        requester(),
        "urn:oid:2.16.528.1.1007.3.3.666.1",
        "urn:oid:2.16.528.1.1007.3.3.659.1",
        ISSUED.parse().expect("instant"),
    );
    a.id = "_5f1b0e6a3c2d4e0f8a9b7c6d5e4f3a2b".into();
    if patient {
        a.patient = Some("900186021".parse().expect("bsn"));
        a.event_codes = vec!["GGC002".parse().expect("category")];
        a.mandated = Some("000095255".parse().expect("uzi"));
    }
    a.security_header(&UnsignedAssertions).expect("unsigned")
}

fn header(tx: Transaction, security: Option<String>) -> SoapHeader {
    let mut h = SoapHeader::request(tx.request_action(), Some("https://gateway.invalid/xca"));
    h.message_id = Some("urn:uuid:8f0c2a52-1b6e-4b6f-9d59-3b0c0d7c5a11".into());
    h.other.extend(security);
    h
}

/// A codec-written request, plain SOAP and as root-only MTOM.
fn codec_request<T: duo_runtime::ihe::Message>(s: &Seeds, name: &str, tx: Transaction, body: &T) {
    let xml = write_soap(&header(tx, Some(assertion(true))), body);
    s.put(
        &format!("codec-{name}.seed"),
        &http(SOAP_CT, xml.as_bytes()),
    );
    let (ct, mime) = mtom::wrap_root(&xml, tx.request_action());
    s.put(&format!("codec-{name}-mtom.seed"), &http(&ct, &mime));
}

fn query(q: StoredQuery, slots: &[(&str, &str)], home: bool) -> AdhocQueryRequest {
    let mut aq = AdhocQuery::new(q);
    if home {
        aq.home = Some("urn:oid:2.16.528.1.1007.3.3.659.1".parse().expect("home"));
    }
    for (n, v) in slots {
        aq.slots.push(Slot::new(n, [*v]));
    }
    AdhocQueryRequest::new(aq, ReturnType::LeafClass)
}

fn doc_request(uid: &str) -> DocumentRequest {
    DocumentRequest {
        home_community_id: Some("urn:oid:2.16.528.1.1007.3.3.659.1".parse().expect("home")),
        repository_unique_id: "2.16.528.1.1007.3.3.659.2".into(),
        document_unique_id: uid.into(),
    }
}

fn requests_query(root: &Path, out: &Path) {
    let s = Seeds::target(out, "request_iti18_iti38");
    let pid = "'900186021^^^&2.16.840.1.113883.2.4.6.3&ISO'";
    let status = "('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')";
    codec_request(
        &s,
        "iti38-finddocuments",
        Transaction::Iti38,
        &query(
            StoredQuery::FindDocuments,
            &[
                (param::DE_PATIENT_ID, pid),
                (param::DE_STATUS, status),
                (
                    "$XDSDocumentEntryEventCodeList",
                    "('GGC002^^2.16.840.1.113883.2.4.3.111.5.10.1')",
                ),
                ("$XDSDocumentEntryCreationTimeFrom", "20250101"),
            ],
            true,
        ),
    );
    codec_request(
        &s,
        "iti18-getdocuments",
        Transaction::Iti18,
        &query(
            StoredQuery::GetDocuments,
            &[
                (param::DE_UNIQUE_ID, "('1.2.3.4.5','1.2.3.4.6')"),
                (
                    param::HOME_COMMUNITY_ID,
                    "'urn:oid:2.16.528.1.1007.3.3.659.1'",
                ),
            ],
            false,
        ),
    );
    codec_request(
        &s,
        "iti38-getassociations",
        Transaction::Iti38,
        &query(
            StoredQuery::GetAssociations,
            &[(
                param::UUID,
                "('urn:uuid:0a1b2c3d-0000-4000-8000-000000000001')",
            )],
            true,
        ),
    );
    for (name, action) in [
        ("soap-xcq-req", None),
        ("soap-sq-req", None),
        ("sq-req", Some(Transaction::Iti18)),
        ("sq-req-bad-code", Some(Transaction::Iti18)),
        ("sq-req-bad-pid-format", Some(Transaction::Iti18)),
        ("sq-req-bad-stat-format1", Some(Transaction::Iti38)),
        ("sq-req-missing-stat", Some(Transaction::Iti38)),
    ] {
        let rel = format!("testdata/ihe/samples/messagevalidator/{name}.xml");
        let body = match action {
            None => read(root, &rel),
            Some(tx) => envelope(tx.request_action(), &bare(root, &rel), None).into_bytes(),
        };
        s.put(&format!("testdata-{name}.seed"), &http(SOAP_CT, &body));
    }
    for rel in [
        "12312/correct/query1.xml",
        "12312/missing_home/query.xml",
        "15815/UnknownCommunity/query.xml",
        "15814/XDSRegistryError/query.xml",
    ] {
        let body = bare(root, &format!("testdata/ihe/samples/testkit/{rel}"));
        let xml = envelope(Transaction::Iti38.request_action(), &body, None);
        let name = rel.replace(['/', '.'], "-");
        s.put(
            &format!("testkit-{name}.seed"),
            &http(SOAP_CT, xml.as_bytes()),
        );
    }
}

fn requests_retrieve(root: &Path, out: &Path) {
    let s = Seeds::target(out, "request_iti39_iti43");
    let req = RetrieveDocumentSetRequest {
        documents: vec![doc_request("1.2.3.4.5"), doc_request("1.2.3.4.6")],
    };
    codec_request(&s, "iti39", Transaction::Iti39, &req);
    let mut local = req.clone();
    local.documents[1].home_community_id = None;
    codec_request(&s, "iti43", Transaction::Iti43, &local);
    for name in ["soap-xcr-req", "soap-ret-req"] {
        let body = read(
            root,
            &format!("testdata/ihe/samples/messagevalidator/{name}.xml"),
        );
        s.put(&format!("testdata-{name}.seed"), &http(SOAP_CT, &body));
    }
    for name in ["normal_query", "partial_query", "bad_query"] {
        let body = bare(
            root,
            &format!("testdata/ihe/samples/testkit/15816/Retrieve/{name}.xml"),
        );
        let xml = envelope(Transaction::Iti39.request_action(), &body, None);
        s.put(
            &format!("testkit-15816-{name}.seed"),
            &http(SOAP_CT, xml.as_bytes()),
        );
    }
}

fn requests_imaging(root: &Path, out: &Path) {
    let s = Seeds::target(out, "request_rad69_rad75");
    let req = RetrieveImagingDocumentSetRequest {
        studies: vec![StudyRequest {
            study_instance_uid: "1.2.826.0.1.3680043.8.498.1".into(),
            series: vec![SeriesRequest {
                series_instance_uid: "1.2.826.0.1.3680043.8.498.1.1".into(),
                documents: vec![
                    doc_request("1.2.826.0.1.3680043.8.498.1.1.1"),
                    doc_request("1.2.826.0.1.3680043.8.498.1.1.2"),
                ],
            }],
        }],
        transfer_syntaxes: vec!["1.2.840.10008.1.2.1".into(), "1.2.840.10008.1.2".into()],
    };
    codec_request(&s, "rad75", Transaction::Rad75, &req);
    codec_request(&s, "rad69", Transaction::Rad69, &req);
    for (rel, tx) in [
        (
            "iig_5400/Rad69RetrieveRequest/RAD-69Request.xml",
            Transaction::Rad69,
        ),
        (
            "iig_5409/Rad69RetrieveRequest/RAD-69Request.xml",
            Transaction::Rad69,
        ),
        (
            "rig_5420/Rad75RetrieveRequest/RAD-75Request.xml",
            Transaction::Rad75,
        ),
        (
            "rig_5425/Rad75RetrieveRequest/RAD-75Request.xml",
            Transaction::Rad75,
        ),
        (
            "ids_4812/case-5_Empty_Study_Instance_UID/RAD-69Request.xml",
            Transaction::Rad69,
        ),
        (
            "ids_4812/case-9_Invalid_Transfer_Syntax_UID/RAD-69Request.xml",
            Transaction::Rad69,
        ),
    ] {
        let body = bare(root, &format!("testdata/ihe/samples/testkit/{rel}"));
        let xml = envelope(tx.request_action(), &body, None);
        let name = rel.split('/').next().unwrap_or(rel);
        let case = rel
            .split('/')
            .nth(1)
            .unwrap_or("")
            .split('_')
            .next()
            .unwrap_or("");
        s.put(
            &format!("testkit-{name}-{case}.seed"),
            &http(SOAP_CT, xml.as_bytes()),
        );
    }
}

fn decision(code: &str, d: Decision, status: &str, msg: Option<&str>) -> CategoryDecision {
    CategoryDecision {
        category: code.parse().expect("category"),
        decision: d,
        status_code: Some(status.into()),
        status_message: msg.map(str::to_owned),
    }
}

fn mitz_closed(root: &Path, out: &Path) {
    let s = Seeds::target(out, "mitz_closed_answer");
    for name in ["xacml-response-permit", "xacml-response-deny"] {
        s.put(
            &format!("testdata-{name}.seed"),
            &read(root, &format!("testdata/mitz/xacml/derived/{name}.xml")),
        );
    }
    let permit = decision("GGC002", Decision::Permit, xacml::STATUS_OK, None);
    let deny = decision(
        "GGC001",
        Decision::Deny,
        xacml::STATUS_OK,
        Some("No consent found"),
    );
    let error = decision(
        "GGC002",
        Decision::Indeterminate,
        xacml::STATUS_PROCESSING_ERROR,
        Some("processing error"),
    );
    s.put(
        "codec-permit-echo.seed",
        xacml::write_closed_answer(&[permit.clone()], true).as_bytes(),
    );
    s.put(
        "codec-two-categories-echo.seed",
        xacml::write_closed_answer(&[permit.clone(), deny.clone()], true).as_bytes(),
    );
    s.put(
        "codec-two-results-no-echo.seed",
        xacml::write_closed_answer(&[deny, permit], false).as_bytes(),
    );
    s.put(
        "codec-indeterminate.seed",
        xacml::write_closed_answer(&[error], false).as_bytes(),
    );
}

fn mitz_open(out: &Path) {
    let s = Seeds::target(out, "mitz_open_answer");
    let mut request = SoapHeader::request(localization::ACTION, Some("https://mitz.invalid/open"));
    request.message_id = Some("urn:uuid:8f0c2a52-1b6e-4b6f-9d59-3b0c0d7c5a11".into());
    let requested = InstanceId {
        root: Bsn::OID.into(),
        extension: "900186021".into(),
        assigning_authority_name: Some(localization::BSN_AUTHORITY_NAME.into()),
    };
    let locations = vec![
        PatientLocation {
            home_community_id: "urn:oid:2.16.528.1.1007.3.3.659.1".parse().expect("home"),
            corresponding_patient_id: Some(InstanceId {
                root: "2.16.528.1.1007.3.3.659.10".into(),
                extension: "P12345".into(),
                assigning_authority_name: None,
            }),
            source_id: Some("urn:oid:2.16.528.1.1007.3.3.659.2".into()),
            holder_ura: Some("00000659".parse().expect("ura")),
        },
        PatientLocation {
            home_community_id: "urn:oid:2.16.528.1.1007.3.3.660.1".parse().expect("home"),
            corresponding_patient_id: None,
            source_id: None,
            holder_ura: None,
        },
    ];
    s.put(
        "codec-two-locations.seed",
        localization::write_location_answer(&request, &requested, &locations).as_bytes(),
    );
    s.put(
        "codec-no-location.seed",
        localization::write_location_answer(&request, &requested, &[]).as_bytes(),
    );
}

fn xua(out: &Path) {
    let s = Seeds::target(out, "xua_assertion");
    s.put("codec-with-patient.seed", assertion(true).as_bytes());
    s.put("codec-minimal.seed", assertion(false).as_bytes());
}

fn retrieve_response(docs: &[(&str, &[u8])]) -> RetrieveDocumentSetResponse {
    RetrieveDocumentSetResponse {
        response: RegistryResponse::derive(Vec::new(), docs.len()),
        documents: docs
            .iter()
            .map(|(uid, bytes)| DocumentResponse {
                meta: DocumentResponseMeta {
                    home_community_id: Some(
                        "urn:oid:2.16.528.1.1007.3.3.659.1".parse().expect("home"),
                    ),
                    repository_unique_id: "2.16.528.1.1007.3.3.659.2".into(),
                    document_unique_id: (*uid).into(),
                    new_repository_unique_id: None,
                    new_document_unique_id: None,
                    mime_type: "application/dicom".into(),
                },
                content: Content::Inline(Bytes::copy_from_slice(bytes)),
            })
            .collect(),
    }
}

fn response_header() -> SoapHeader {
    let mut h = SoapHeader::request(Transaction::Iti39.response_action(), None);
    h.message_id = Some("urn:uuid:1c6f3b0e-7d3a-4f8e-9a51-6e2b8d4c0f17".into());
    h.reply_to = None;
    h.relates_to = Some("urn:uuid:8f0c2a52-1b6e-4b6f-9d59-3b0c0d7c5a11".into());
    h
}

fn mtom(root: &Path, out: &Path) {
    let req = Seeds::target(out, "mtom_multipart");
    let resp = Seeds::target(out, "mtom_retrieve_response");
    let dicm: Vec<u8> = (0..600u32).map(|i| (i * 7 % 251) as u8).collect();
    let ok = retrieve_response(&[("1.2.3.4.5", b"DICM plain text part"), ("1.2.3.4.6", &dicm)]);
    let (ct, body) = RetrieveResponseWriter::write_all(&response_header(), &ok).expect("write");
    for (seed, name) in [(0u8, "whole"), (1, "chunked-a"), (77, "chunked-b")] {
        resp.put(
            &format!("codec-mtom-{name}.seed"),
            &chunked(seed, &ct, &body),
        );
    }
    req.put("codec-mtom-response.seed", &chunked(3, &ct, &body));
    // cut short inside the second part
    resp.put(
        "codec-mtom-truncated.seed",
        &chunked(5, &ct, &body[..body.len() - 300]),
    );
    // LF-only line ends, as some captured peers send
    let lf: Vec<u8> = String::from_utf8_lossy(&body)
        .replace("\r\n", "\n")
        .into_bytes();
    resp.put("codec-mtom-lf.seed", &chunked(9, &ct, &lf));
    // plain SOAP with the documents inline as base64
    let xml = write_soap(&response_header(), &ok);
    resp.put(
        "codec-soap-base64.seed",
        &chunked(2, SOAP_CT, xml.as_bytes()),
    );
    // base64 inside the root part of an MTOM message
    let (wct, wrapped) = mtom::wrap_root(&xml, Transaction::Iti39.response_action());
    resp.put("codec-mtom-base64-root.seed", &chunked(4, &wct, &wrapped));
    // a failure without documents
    let fail = RetrieveDocumentSetResponse {
        response: RegistryResponse::derive(
            vec![RegistryError::new(
                ErrorCode::XDSRepositoryError,
                "document not found",
            )],
            0,
        ),
        documents: Vec::new(),
    };
    let (fct, fbody) = RetrieveResponseWriter::write_all(&response_header(), &fail).expect("write");
    resp.put("codec-mtom-failure.seed", &chunked(6, &fct, &fbody));

    for name in ["soap-xret-resp", "soap-ret-resp", "soap-xret-resp-error"] {
        let body = read(
            root,
            &format!("testdata/ihe/samples/messagevalidator/{name}.xml"),
        );
        resp.put(
            &format!("testdata-{name}.seed"),
            &chunked(8, SOAP_CT, &body),
        );
    }
    let truncated = read(root, "runtime/tests/hostile/truncated-mtom.txt");
    let tct = "multipart/related; boundary=\"MIMEBoundary_x\"; type=\"application/xop+xml\"; start-info=\"application/soap+xml\"";
    resp.put("hostile-truncated-mtom.seed", &chunked(11, tct, &truncated));
    req.put("hostile-truncated-mtom.seed", &chunked(11, tct, &truncated));

    let (pct, pbody) = capture(
        root,
        "testdata/ihe/samples/messagevalidator/http-mtom-pnr.txt",
    );
    req.put("testdata-http-mtom-pnr.seed", &chunked(12, &pct, &pbody));
    let sample = read(
        root,
        "testdata/ihe/samples/sim-proxy/sample_mtom_message.txt",
    );
    let boundary =
        String::from_utf8_lossy(&sample[2..sample.iter().position(|&b| b == b'\n').unwrap_or(2)])
            .trim()
            .to_owned();
    let sct = format!(
        "multipart/related; type=\"application/xop+xml\"; boundary=\"{boundary}\"; start-info=\"application/soap+xml\""
    );
    req.put("testdata-sim-proxy-mtom.seed", &chunked(13, &sct, &sample));
    let hdr = String::from_utf8_lossy(&read(
        root,
        "testdata/ihe/samples/httpParser/boundryTest/request_hdr.txt",
    ))
    .into_owned();
    let bct = hdr
        .lines()
        .find_map(|l| l.strip_prefix("content-type:").map(|v| v.trim().to_owned()))
        .expect("content-type");
    let bbody = read(
        root,
        "testdata/ihe/samples/httpParser/boundryTest/response_body.txt",
    );
    req.put("testdata-boundary-test.seed", &chunked(14, &bct, &bbody));
    // a request wrapped as MTOM by our client
    let xml = write_soap(
        &header(Transaction::Iti43, Some(assertion(false))),
        &RetrieveDocumentSetRequest {
            documents: vec![doc_request("1.2.3.4.5")],
        },
    );
    let (rct, rbody) = mtom::wrap_root(&xml, Transaction::Iti43.request_action());
    req.put("codec-wrap-root.seed", &chunked(15, &rct, &rbody));
}

fn main() {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = fuzz.parent().expect("repository root").to_path_buf();
    let out = fuzz.join("seeds");
    requests_query(&root, &out);
    requests_retrieve(&root, &out);
    requests_imaging(&root, &out);
    mitz_closed(&root, &out);
    mitz_open(&out);
    xua(&out);
    mtom(&root, &out);
    for e in fs::read_dir(&out).expect("seeds folder").flatten() {
        let n = fs::read_dir(e.path()).map(|d| d.count()).unwrap_or(0);
        println!("{:<24} {n} seeds", e.file_name().to_string_lossy());
    }
}
