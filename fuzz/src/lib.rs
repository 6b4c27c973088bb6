//! The checks behind the fuzz targets in `fuzz_targets/`: each takes the raw fuzzer input, feeds it to
//! one reader of hostile input exactly as the gateway does, and asserts what must hold whatever the
//! input. A panic (a failed assertion included) is a finding; libFuzzer's `-rss_limit_mb` and
//! `-malloc_limit_mb` (set by `scripts/fuzz.sh`) catch unbounded allocation.
//!
//! Input shapes (the seeds in `seeds/<target>/` have them; `examples/seeds.rs` writes them):
//! - an HTTP message ([`split_http`]): the `Content-Type` value, a line feed, then the body;
//! - a chunked HTTP message ([`split_chunked`]): one byte that seeds how the body is cut into chunks
//!   (as a socket delivers it), then an HTTP message;
//! - a bare document: the bytes as they arrive (Mitz answers, the `wsse:Security` header block).
//!
//! Limits are the runtime's defaults (`server.limits` of an empty configuration), the ones a gateway
//! serves with.

use std::fmt::Debug;

use bytes::Bytes;
use duo_runtime::config::LimitsConfig;
use duo_runtime::consent::xacml::{self, CategoryDecision, Decision};
use duo_runtime::ihe::mtom::{
    self, ContentType, MtomError, MtomLimits, RetrieveItem, RetrieveResponseReader,
    RetrieveResponseWriter, ScanEvent, Scanner,
};
use duo_runtime::ihe::query::{self, AdhocQueryRequest};
use duo_runtime::ihe::retrieve::{
    Content, DocumentResponse, RetrieveDocumentSetRequest, RetrieveDocumentSetResponse,
    RetrieveImagingDocumentSetRequest,
};
use duo_runtime::ihe::soap::{self, SoapError, SoapHeader, write_fault};
use duo_runtime::ihe::xua::{self, SignatureNotChecked, UnsignedAssertions, Validation};
use duo_runtime::ihe::{self as ihe, Message, Transaction};
use duo_runtime::localization;
use duo_runtime::model::{DataCategory, PurposeOfUse};
use duo_runtime::xml::Limits;
use futures::StreamExt;
use jiff::Timestamp;

/// `Content-Type` of a plain SOAP 1.2 request, as the gateway's own clients send it.
pub const SOAP_CT: &str = "application/soap+xml; charset=UTF-8";

/// The instant assertions are checked at: the seeds' assertions are issued at 2026-01-01T10:00:00Z and
/// valid ten minutes, so a fuzzer that keeps their times reaches the attribute checks.
pub const NOW: &str = "2026-01-01T10:05:00Z";

/// The MIME limits of the default runtime configuration.
pub fn mtom_limits() -> MtomLimits {
    duo_runtime::limits::mtom_limits(&LimitsConfig::default())
}

/// The XML limits of the default runtime configuration.
pub fn xml_limits() -> Limits {
    duo_runtime::limits::xml_limits(&LimitsConfig::default())
}

/// How the responding side checks an assertion (`identity::validation`): at [`NOW`], default skew, no
/// audience, purpose of use TREAT when the assertion states none (the default `consent.defaultPurposeOfUse`).
pub fn validation() -> Validation {
    let mut v = Validation::at(NOW.parse::<Timestamp>().expect("NOW is a timestamp"));
    v.default_purpose_of_use = Some("TREAT".parse::<PurposeOfUse>().expect("TREAT"));
    v
}

/// Splits an HTTP-message input into its `Content-Type` and body. A first line that is not a valid
/// header value (visible ASCII and blanks, as `http::HeaderValue::to_str` accepts) is treated as an
/// absent header, for which the server assumes `application/soap+xml`.
pub fn split_http(data: &[u8]) -> (String, Bytes) {
    let (line, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let ct = if !line.is_empty()
        && line
            .iter()
            .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        String::from_utf8_lossy(line).into_owned()
    } else {
        "application/soap+xml".to_owned()
    };
    (ct, Bytes::copy_from_slice(body))
}

/// Splits a chunked-HTTP-message input: its first byte seeds the chunk sizes (1 to 512 bytes, a
/// xorshift sequence), the rest is an HTTP message ([`split_http`]).
pub fn split_chunked(data: &[u8]) -> (String, Bytes, Vec<Bytes>) {
    let Some((&seed, rest)) = data.split_first() else {
        return (SOAP_CT.to_owned(), Bytes::new(), Vec::new());
    };
    let (ct, body) = split_http(rest);
    let chunks = chunks(&body, seed);
    (ct, body, chunks)
}

/// `body` cut into chunks of 1 to 512 bytes, sizes from a xorshift sequence seeded by `seed`.
pub fn chunks(body: &Bytes, seed: u8) -> Vec<Bytes> {
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    let mut out = Vec::new();
    let mut at = 0;
    while at < body.len() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let n = (1 + (x % 512) as usize).min(body.len() - at);
        out.push(body.slice(at..at + n));
        at += n;
    }
    out
}

/// The request reader of the SOAP routes ([`ihe::read_request`]) for the two transactions that share
/// the body type `T`, then what the gateway reads next from what it got (the XUA assertion of the header,
/// `inspect` for the body). Asserts: a request is accepted only with its transaction's Action; a refused
/// request's fault is a well-formed SOAP fault that reads back with its reason; an accepted request
/// written again by the codec (as the gateway forwards it) reads back to the same header and body.
pub fn request<T>(data: &[u8], transactions: [Transaction; 2], inspect: impl Fn(&T))
where
    T: Message + PartialEq + Debug,
{
    let (ct, body) = split_http(data);
    let (mtom, xml) = (mtom_limits(), xml_limits());
    let mut accepted = 0;
    for tx in transactions {
        match ihe::read_request::<T>(tx, &ct, body.clone(), &mtom, &xml) {
            Ok((h, req)) => {
                accepted += 1;
                assert_eq!(h.action.trim(), tx.request_action(), "{tx}: Action checked");
                let _ = xua::from_soap_header(&h, &validation(), &SignatureNotChecked);
                inspect(&req);
                let again = ihe::write_soap(&h, &req);
                match ihe::read_request::<T>(tx, SOAP_CT, Bytes::from(again.clone()), &mtom, &xml) {
                    Ok((h2, req2)) => {
                        assert_eq!(h2, h, "{tx}: header round trip\n{again}");
                        assert_eq!(req2, req, "{tx}: body round trip\n{again}");
                    }
                    Err((_, f)) => {
                        panic!("{tx}: the request as written does not read back: {f}\n{again}")
                    }
                }
            }
            Err((h, fault)) => fault_reads_back(&fault, h.as_deref()),
        }
    }
    assert!(accepted <= 1, "one Action, one transaction");
}

/// The fault the gateway answers with is a SOAP 1.2 fault that reads back with the same code and reason.
fn fault_reads_back(fault: &soap::Fault, request: Option<&SoapHeader>) {
    assert!(!fault.reason.trim().is_empty(), "a fault says why");
    let xml = write_fault(fault, request);
    match soap::read_envelope(xml.as_bytes(), &xml_limits(), |_, _| Ok(())) {
        Err(SoapError::Fault(f)) => {
            assert_eq!(f.code, fault.code, "fault code round trip\n{xml}");
            assert_eq!(
                f.reason,
                fault.reason.trim(),
                "fault reason round trip\n{xml}"
            );
        }
        other => panic!("the fault as written does not read back as a fault: {other:?}\n{xml}"),
    }
}

/// ITI-18 / ITI-38: the stored query's parameters as the gateway reads them; every list that parses
/// survives formatting and parsing again.
pub fn inspect_query(q: &AdhocQueryRequest) {
    let aq = &q.query;
    let _ = aq.check_required();
    for s in &aq.slots {
        let _ = aq.single(&s.name);
        let _ = aq.list(&s.name);
        if let Ok(lists) = aq.and_lists(&s.name) {
            // a slot without values reads as an empty list, as absent (`has` is false); "()" is refused
            for l in lists.into_iter().filter(|l| !l.is_empty()) {
                let again = query::parse_list(&s.name, &query::format_list(&l));
                assert_eq!(again.as_ref(), Ok(&l), "list round trip of {:?}", s.name);
            }
        }
        for v in &s.values {
            let _ = query::parse_code(&s.name, v);
        }
    }
}

/// ITI-18 / ITI-38 request reader.
pub fn request_iti18_iti38(data: &[u8]) {
    request::<AdhocQueryRequest>(
        data,
        [Transaction::Iti18, Transaction::Iti38],
        inspect_query,
    );
}

/// ITI-39 / ITI-43 request reader.
pub fn request_iti39_iti43(data: &[u8]) {
    request::<RetrieveDocumentSetRequest>(data, [Transaction::Iti39, Transaction::Iti43], |r| {
        let _ = r.missing_home_errors();
    });
}

/// RAD-69 / RAD-75 request reader.
pub fn request_rad69_rad75(data: &[u8]) {
    request::<RetrieveImagingDocumentSetRequest>(
        data,
        [Transaction::Rad69, Transaction::Rad75],
        |r| {
            let _ = r.validate(true);
            let _ = r.validate(false);
            assert!(
                r.documents().count() <= data.len(),
                "no more documents than bytes"
            );
        },
    );
}

fn category(code: &str) -> DataCategory {
    code.parse().expect("a data category")
}

/// A closed question about `categories` (the values of `testdata/mitz/xacml/example.xml`).
fn question(categories: &[DataCategory]) -> xacml::ClosedQuestion {
    xacml::ClosedQuestion {
        patient: "900186021".parse().expect("a BSN"),
        holder_ura: "00000659".parse().expect("a URA"),
        holder_facility_type: "Z3".parse().expect("a facility type"),
        categories: categories.to_vec(),
        requester: duo_runtime::model::Requester {
            uzi: "000095254".parse().expect("a UZI number"),
            role: "01.015".parse().expect("a role"),
            ura: "00000666".parse().expect("a URA"),
            facility_type: "Z3".parse().expect("a facility type"),
            purpose_of_use: "TREAT".parse().expect("a purpose of use"),
            name: None,
        },
        mandated: None,
    }
}

/// The Mitz closed-question answer reader (XACML), for a question about one category (the gateway's
/// default) and about two. Asserts: exactly one decision per asked category, in question order; what
/// was read, written again as Mitz answers (categories echoed), reads back to the same decisions.
pub fn mitz_closed_answer(data: &[u8]) {
    let xml = xml_limits();
    let one = [category("GGC002")];
    let two = [category("GGC002"), category("GGC001")];
    for asked in [&one[..], &two[..]] {
        let q = question(asked);
        let Ok(got) = xacml::read_closed_answer(data, &q, &xml) else {
            continue;
        };
        assert_eq!(got.len(), asked.len(), "one decision per asked category");
        for (d, c) in got.iter().zip(asked) {
            assert_eq!(&d.category, c, "decisions in question order");
        }
        let again = xacml::write_closed_answer(&got, true);
        let back = xacml::read_closed_answer(again.as_bytes(), &q, &xml)
            .unwrap_or_else(|e| panic!("the answer as written does not read back: {e}\n{again}"));
        let decisions =
            |v: &[CategoryDecision]| -> Vec<Decision> { v.iter().map(|d| d.decision).collect() };
        assert_eq!(
            decisions(&back),
            decisions(&got),
            "decision round trip\n{again}"
        );
    }
}

/// The Mitz open-question answer reader (XCPD Patient Location Query response). Asserts: what was read,
/// written again as the simulator answers, reads back to the same locations.
pub fn mitz_open_answer(data: &[u8]) {
    let xml = xml_limits();
    let Ok(locations) = localization::read_location_answer(data, &xml) else {
        return;
    };
    let request = SoapHeader::request(localization::ACTION, Some("https://mitz.invalid/open"));
    let requested = localization::InstanceId {
        root: duo_runtime::model::Bsn::OID.to_owned(),
        extension: "900186021".to_owned(),
        assigning_authority_name: Some(localization::BSN_AUTHORITY_NAME.to_owned()),
    };
    let again = localization::write_location_answer(&request, &requested, &locations);
    let back = localization::read_location_answer(again.as_bytes(), &xml)
        .unwrap_or_else(|e| panic!("the answer as written does not read back: {e}\n{again}"));
    let expected: Vec<_> = locations
        .into_iter()
        .map(|mut l| {
            // the writer repeats the requested id when the answer named no corresponding one
            l.corresponding_patient_id
                .get_or_insert_with(|| requested.clone());
            l
        })
        .collect();
    assert_eq!(back, expected, "location round trip\n{again}");
}

/// The XUA assertion reader: a `wsse:Security` header block (text, as the SOAP reader hands it over).
/// Asserts: an accepted assertion, written again as the gateway writes assertions, reads back the same.
pub fn xua_assertion(data: &[u8]) {
    let Ok(block) = std::str::from_utf8(data) else {
        return;
    };
    let v = validation();
    let Ok(a) = xua::parse_security_header(block, &v, &SignatureNotChecked) else {
        return;
    };
    let again = a
        .security_header(&UnsignedAssertions)
        .expect("unsigned assertions always write");
    let back = xua::parse_security_header(&again, &v, &SignatureNotChecked)
        .unwrap_or_else(|e| panic!("the assertion as written does not read back: {e}\n{again}"));
    assert_eq!(back, a, "assertion round trip\n{again}");
}

/// Events of a scanner over `body` fed in `chunks`, data of consecutive events joined, up to the first
/// error (which ends the list as `Err`).
fn scan(boundary: &str, chunks: &[Bytes], limits: &MtomLimits) -> Vec<Result<ScanEvent, String>> {
    let mut sc = Scanner::new(boundary, limits);
    let mut out: Vec<Result<ScanEvent, String>> = Vec::new();
    let mut next = chunks.iter();
    let mut largest = 0;
    loop {
        match sc.next_event() {
            Ok(ScanEvent::NeedMore) => match next.next() {
                Some(c) => {
                    largest = largest.max(c.len());
                    sc.feed(c);
                }
                None => sc.finish(),
            },
            Ok(ScanEvent::Data(d)) => {
                assert!(!d.is_empty(), "Data events are never empty");
                if let Some(Ok(ScanEvent::Data(prev))) = out.last_mut() {
                    let mut joined = prev.to_vec();
                    joined.extend_from_slice(&d);
                    *prev = Bytes::from(joined);
                } else {
                    out.push(Ok(ScanEvent::Data(d)));
                }
            }
            Ok(ScanEvent::Done) => {
                out.push(Ok(ScanEvent::Done));
                return out;
            }
            Ok(ev) => out.push(Ok(ev)),
            Err(e) => {
                out.push(Err(e.to_string()));
                return out;
            }
        }
        // bounded memory: one input chunk plus a boundary, or a header block
        let bound = largest + boundary.len() + 8 + limits.max_header_bytes;
        assert!(
            sc.buffered() <= bound,
            "scanner holds {} > {bound} bytes",
            sc.buffered()
        );
    }
}

/// The MTOM reader of requests ([`mtom::soap_envelope`], what the SOAP routes call first) and the
/// boundary scanner under it. Asserts: the scanner finds the same parts and bytes (or the same error)
/// whether the body arrives whole or in chunks, holding no more than a chunk plus a boundary; the root
/// part the request reader picks is one of the message's parts.
pub fn mtom_multipart(data: &[u8]) {
    let (ct, body, chunks) = split_chunked(data);
    let limits = mtom_limits();
    if let Ok(parsed) = ContentType::parse(&ct)
        && let Ok(boundary) = parsed.boundary()
    {
        let whole = scan(boundary, std::slice::from_ref(&body), &limits);
        let cut = scan(boundary, &chunks, &limits);
        assert_eq!(cut, whole, "scanner events depend on chunking");
        if let Ok(parts) = mtom::read_multipart(&parsed, &body, &limits) {
            let ends = whole
                .iter()
                .filter(|e| matches!(e, Ok(ScanEvent::PartEnd)))
                .count();
            assert_eq!(parts.len(), ends, "one part per PartEnd");
        }
    }
    if let Ok((root, others)) = mtom::soap_envelope(&ct, body.clone(), &limits) {
        assert!(root.len() <= body.len(), "root part within the body");
        assert!(others.iter().map(|p| p.body.len()).sum::<usize>() <= body.len());
    }
}

/// Reads a retrieve response with the streaming reader from `chunks`: header, registry response and
/// each delivered document's content by index (in delivery order), or the first error.
fn stream_read(
    ct: &str,
    chunks: Vec<Bytes>,
    limits: &MtomLimits,
) -> Result<(RetrieveResponseReaderView, Vec<(usize, Vec<u8>)>), MtomError> {
    let body = futures::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>));
    futures::executor::block_on(async {
        let mut r = RetrieveResponseReader::open(ct, None, body, limits).await?;
        let view = RetrieveResponseReaderView {
            header: r.header().clone(),
            response: r.registry_response().clone(),
            documents: r.documents().to_vec(),
        };
        let mut docs = Vec::new();
        while let Some(i) = r.next_document().await? {
            assert!(
                i < view.documents.len(),
                "document index within the root's list"
            );
            let mut content = Vec::new();
            while let Some(c) = r.chunk().await? {
                content.extend_from_slice(&c);
            }
            docs.push((i, content));
        }
        Ok((view, docs))
    })
}

/// What [`RetrieveResponseReader::open`] knows before the first document.
#[derive(Debug, Clone, PartialEq)]
struct RetrieveResponseReaderView {
    header: SoapHeader,
    response: duo_runtime::ihe::retrieve::RegistryResponse,
    documents: Vec<duo_runtime::ihe::retrieve::DocumentResponseMeta>,
}

/// The streaming reader of peers' retrieve answers (ITI-39 / ITI-43 / RAD-69 / RAD-75) and the relay
/// behind it (reader → [`RetrieveResponseWriter`], as the initiating gateway streams a peer's answer to
/// its consumer). Asserts: every document is delivered at most once; the documents' bytes together
/// never exceed the message's (no amplification); where the buffered reader also reads the message,
/// both give the same documents; the relayed answer reads back to the same header, status and
/// documents.
pub fn mtom_retrieve_response(data: &[u8]) {
    let (ct, body, chunks) = split_chunked(data);
    let limits = mtom_limits();
    let Ok((view, docs)) = stream_read(&ct, chunks, &limits) else {
        return;
    };
    let mut seen = vec![false; view.documents.len()];
    for (i, _) in &docs {
        assert!(!seen[*i], "document {i} delivered twice");
        seen[*i] = true;
    }
    let total: usize = docs.iter().map(|(_, c)| c.len()).sum();
    assert!(
        total <= body.len(),
        "{total} content bytes out of a {}-byte message",
        body.len()
    );

    if let Ok((h, buffered)) = mtom::read_retrieve_response(&ct, body.clone(), &limits) {
        assert_eq!(h, view.header, "same header, streamed or buffered");
        assert_eq!(
            buffered.response, view.response,
            "same status, streamed or buffered"
        );
        for (i, content) in &docs {
            match &buffered.documents[*i].content {
                Content::Inline(b) => assert_eq!(&b[..], &content[..], "document {i} content"),
                Content::Include(cid) => panic!("buffered reader left cid:{cid} unresolved"),
            }
        }
    }

    // the relay: every delivered document, in delivery order, through the writer
    let response = RetrieveDocumentSetResponse {
        response: view.response.clone(),
        documents: docs
            .iter()
            .map(|(i, c)| DocumentResponse {
                meta: view.documents[*i].clone(),
                content: Content::Inline(Bytes::from(c.clone())),
            })
            .collect(),
    };
    let metas: Vec<_> = response.documents.iter().map(|d| d.meta.clone()).collect();
    let writer = RetrieveResponseWriter::new(&view.header, &view.response, &metas);
    let relay_ct = writer.content_type();
    let items = docs.iter().enumerate().flat_map(|(k, (_, c))| {
        [
            Ok::<_, MtomError>(RetrieveItem::Document(k)),
            Ok(RetrieveItem::Chunk(Bytes::from(c.clone()))),
            Ok(RetrieveItem::End),
        ]
    });
    let pieces: Vec<Bytes> = futures::executor::block_on(
        writer
            .into_body(futures::stream::iter(items.collect::<Vec<_>>()), None)
            .map(|r| r.expect("the writer fed in order does not fail"))
            .collect(),
    );
    let relayed = pieces.concat();
    let (h2, back) = mtom::read_retrieve_response(&relay_ct, Bytes::from(relayed), &limits)
        .unwrap_or_else(|e| panic!("the relayed answer does not read back: {e}"));
    assert_eq!(h2, view.header, "relayed header");
    assert_eq!(back.response, response.response, "relayed status");
    assert_eq!(back.documents, response.documents, "relayed documents");
}
