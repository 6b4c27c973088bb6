//! Damaged and stalling retrieve answers from a peer, and another patient's data from a peer (issue 12,
//! defects 7 and 5), against a real `duo-gateway serve` process ([`bed`]) whose one remote community
//! is a hostile peer ([`peer`]).
//!
//! A local consumer asks the gateway with ITI-43 or RAD-69; the gateway relays ITI-39 or RAD-75 to the
//! peer, which answers with a prepared message: well formed, or damaged in one of the ways of the
//! issue (an `xop:Include` naming no part, without `cid:`, with an http URL or without href; no
//! closing boundary; a boundary inside a document's bytes; a part cut short; part headers missing;
//! base64 declared on a binary part; no binary part at all), random byte damage (a byte changed,
//! removed or inserted, or the body cut, anywhere after the root; or in the root), a peer that drips
//! its answer or stalls, a plain SOAP answer with a 120 MiB inline document, and requests with a 10 KB
//! MessageID. Documents are small (the answer is decided whole before the first byte) or large (more
//! than the gateway's look-ahead: the answer streams and a late failure goes into the final-status
//! part).
//!
//! Every answer is checked strictly ([`check`]): HTTP 200, a complete multipart message (closing
//! boundary), a root that parses, every `xop:Include` naming exactly one part, RelatesTo the request's
//! MessageID (capped at 256 bytes), the status consistent with errors and documents (the final-status
//! part's when there is one), every document asked for either delivered or reported (an error located
//! at its DocumentUniqueId, or the community's error), what each damage kind must give (a document
//! before the damage delivered byte for byte, the damaged one reported; where MIME cannot tell, either),
//! the answer within the community's deadline (plus 1 s for scheduling on a loaded machine), and
//! exactly one audit record of the retrieve whose `documentIds` are the documents delivered and whose
//! outcome is the final status.
//!
//! `mutation_run` prints a table (cases per damage kind, outcomes, slowest answer against the
//! deadline, the gateway's peak RSS). `DUO_RELAY_MUTATION_CASES` sets its number of cases (default
//! 300); `scripts/relay-mutation.sh` runs it with several thousand and `DUO_RELAY_RSS_BAR_MIB=64`,
//! which makes a peak RSS above the bar a failure.

mod bed;
mod peer;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use duo_runtime::audit::Outcome as AuditOutcome;
use duo_runtime::ihe::ebrim::{
    Association, ExternalIdentifier, Identifiable, ObjectRef, RegistryObject, RegistryPackage,
    association_type, availability, intl,
};
use duo_runtime::ihe::mtom::{self, ContentType, MimePart, MtomLimits};
use duo_runtime::ihe::query::{
    AdhocQuery, AdhocQueryRequest, AdhocQueryResponse, ReturnType, StoredQuery, param,
};
use duo_runtime::ihe::retrieve::{
    Content, DocumentRequest, DocumentResponse, DocumentResponseMeta, RegistryResponse,
    RetrieveDocumentSetRequest, RetrieveDocumentSetResponse, RetrieveImagingDocumentSetRequest,
    SeriesRequest, StudyRequest,
};
use duo_runtime::ihe::soap::{SoapHeader, Transaction};
use duo_runtime::ihe::transform::{document_entry_to_wire, uuids};
use duo_runtime::ihe::{ErrorCode, RegistryError, ResponseStatus, Severity, read_soap, write_soap};
use duo_runtime::model::{DocumentEntry, ReferenceId, reference_type};
use duo_runtime::xml::{Limits, Reader, ns};
use futures::StreamExt;

use peer::{Prepared, Send};

/// The peer's homeCommunityId.
pub const PEER_HOME: &str = "urn:oid:2.16.528.1.1007.3.3.10000300.1";
/// The peer's repository.
pub const REPO: &str = "2.16.528.1.1007.3.3.10000300.2";
/// The gateway's homeCommunityId.
pub const GATEWAY_HOME: &str = "urn:oid:2.16.528.1.1007.3.3.10000200.1";
/// The community's deadline, ms.
pub const DEADLINE_MS: u64 = 1500;
/// Time allowed on top of the deadline for the gateway and the consumer to be scheduled on a loaded
/// two-CPU machine, ms. A peer that drips keeps a gateway that does not cut it busy for many seconds
/// more (16 bytes per 200 ms).
const GRACE_MS: u64 = 1000;
/// The longest MessageID echoed (the gateway's cap).
const ECHO_CAP: usize = 256;
/// The transfer syntax asked for in RAD-69 requests.
const TS: &str = "1.2.840.10008.1.2.1";

/// What a damage kind allows for one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Delivered with the bytes the peer holds.
    Whole,
    /// Reported, not delivered.
    Fail,
    /// Delivered with the peer's bytes, or reported.
    Either,
    /// Delivered (with whatever bytes: random damage inside its part cannot be seen), or reported.
    Any,
}

/// How the peer encodes its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Enc {
    Mtom,
    Plain,
    MtomBase64Root,
}

/// What is wrong with the peer's answer.
#[derive(Debug, Clone, PartialEq)]
enum Damage {
    None,
    IncludeNoPart,
    IncludeNoCid,
    IncludeHttpUrl,
    IncludeNoHref,
    NoClosingBoundary,
    BoundaryInBinary {
        closing: bool,
    },
    PartCutShort,
    PartHeadersMissing,
    Base64OnBinary,
    NoBinaryPart,
    Drip,
    Stall,
    HugeInline {
        declared: bool,
    },
    /// No damage: one 15 MiB document inline (plain SOAP), just under `maxInlineDocumentBytes`.
    LargeInline,
    RandomBody {
        op: u8,
        at: f64,
    },
    RandomRoot {
        op: u8,
        at: f64,
    },
    LongMessageId,
}

impl Damage {
    fn kind(&self) -> &'static str {
        match self {
            Damage::None => "none",
            Damage::IncludeNoPart => "include names no part",
            Damage::IncludeNoCid => "include without cid:",
            Damage::IncludeHttpUrl => "include with http URL",
            Damage::IncludeNoHref => "include without href",
            Damage::NoClosingBoundary => "no closing boundary",
            Damage::BoundaryInBinary { .. } => "boundary inside binary",
            Damage::PartCutShort => "part cut short",
            Damage::PartHeadersMissing => "part headers missing",
            Damage::Base64OnBinary => "base64 on binary part",
            Damage::NoBinaryPart => "no binary part",
            Damage::Drip => "peer drips",
            Damage::Stall => "peer stalls",
            Damage::HugeInline { .. } => "120 MiB inline",
            Damage::LargeInline => "15 MiB inline",
            Damage::RandomBody { .. } => "random bytes (parts)",
            Damage::RandomRoot { .. } => "random bytes (root)",
            Damage::LongMessageId => "10 KB MessageID",
        }
    }
}

/// One case: what the consumer asks and how the peer answers.
#[derive(Debug, Clone)]
struct Case {
    id: u64,
    tx: Transaction,
    docs: Vec<Bytes>,
    enc: Enc,
    damage: Damage,
    /// The document the damage is aimed at.
    target: usize,
    /// `Content-Length` on the peer's answer (else chunked).
    declared: bool,
}

fn uid(case: u64, k: usize) -> String {
    format!("1.2.3.999.{case}.{k}")
}

/// A small xorshift generator (deterministic runs, no dependency).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Document bytes: a zero byte first (a control character: never a valid MIME header line), then
/// pseudo-random bytes.
fn content(rng: &mut Rng, size: usize) -> Bytes {
    let mut v: Vec<u8> = (0..size).map(|_| rng.next() as u8).collect();
    if let Some(b) = v.first_mut() {
        *b = 0;
    }
    Bytes::from(v)
}

/// The peer's answer before damage, with where its parts are.
struct Built {
    content_type: String,
    body: Vec<u8>,
    /// Start of the `\r\n--boundary` line before each document's part.
    delims: Vec<usize>,
    /// Each document's bytes: (start, end).
    contents: Vec<(usize, usize)>,
    /// Start of the closing delimiter.
    closing: usize,
    boundary: String,
    /// Where the root part's XML starts and ends.
    root: (usize, usize),
}

fn response_action(tx: Transaction) -> &'static str {
    match tx {
        Transaction::Rad69 => Transaction::Rad75.response_action(),
        _ => Transaction::Iti39.response_action(),
    }
}

fn metas(c: &Case) -> Vec<DocumentResponseMeta> {
    (0..c.docs.len())
        .map(|k| DocumentResponseMeta {
            home_community_id: Some(PEER_HOME.parse().unwrap()),
            repository_unique_id: REPO.into(),
            document_unique_id: uid(c.id, k),
            mime_type: "application/dicom".into(),
            ..Default::default()
        })
        .collect()
}

fn build(c: &Case) -> Built {
    let header = SoapHeader::request(response_action(c.tx), None);
    let ms = metas(c);
    if c.enc != Enc::Mtom {
        let resp = RetrieveDocumentSetResponse {
            response: RegistryResponse::default(),
            documents: ms
                .into_iter()
                .zip(&c.docs)
                .map(|(meta, b)| DocumentResponse {
                    meta,
                    content: Content::Inline(b.clone()),
                })
                .collect(),
        };
        let xml = write_soap(&header, &resp);
        let (ct, body) = if c.enc == Enc::Plain {
            (
                "application/soap+xml; charset=UTF-8".to_owned(),
                xml.into_bytes(),
            )
        } else {
            mtom::wrap_root(&xml, &header.action)
        };
        let len = body.len();
        return Built {
            content_type: ct,
            body,
            delims: Vec::new(),
            contents: Vec::new(),
            closing: len,
            boundary: String::new(),
            root: (0, len),
        };
    }
    let boundary = format!("MIME_peer_{}_x", c.id);
    let resp = RetrieveDocumentSetResponse {
        response: RegistryResponse::default(),
        documents: ms
            .into_iter()
            .enumerate()
            .map(|(k, meta)| DocumentResponse {
                meta,
                content: Content::Include(format!("doc{k}.{}@peer", c.id)),
            })
            .collect(),
    };
    let mut xml = write_soap(&header, &resp);
    let t = c.target;
    let href = format!("href=\"cid:doc{t}.{}@peer\"", c.id);
    match c.damage {
        Damage::IncludeNoPart => {
            xml = xml.replace(&href, &format!("href=\"cid:nowhere{t}.{}@peer\"", c.id))
        }
        Damage::IncludeNoCid => xml = xml.replace(&href, &format!("href=\"doc{t}.{}@peer\"", c.id)),
        Damage::IncludeHttpUrl => {
            xml = xml.replace(&href, &format!("href=\"http://127.0.0.1:9/doc{t}\""))
        }
        Damage::IncludeNoHref => xml = xml.replace(&href, ""),
        _ => {}
    }
    let mut body = Vec::new();
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Type: application/xop+xml; charset=UTF-8; type=\"application/soap+xml\"\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <root.{}@peer>\r\n\r\n", c.id).as_bytes(),
    );
    let root_start = body.len();
    body.extend_from_slice(xml.as_bytes());
    let root = (root_start, body.len());
    let mut delims = Vec::new();
    let mut contents = Vec::new();
    for (k, d) in c.docs.iter().enumerate() {
        delims.push(body.len());
        let cte = if c.damage == Damage::Base64OnBinary && k == t {
            "base64"
        } else {
            "binary"
        };
        if !(c.damage == Damage::PartHeadersMissing && k == t) {
            body.extend_from_slice(
                format!("\r\n--{boundary}\r\nContent-Type: application/dicom\r\nContent-Transfer-Encoding: {cte}\r\nContent-ID: <doc{k}.{}@peer>\r\n\r\n", c.id).as_bytes(),
            );
        } else {
            body.extend_from_slice(format!("\r\n--{boundary}\r\n").as_bytes());
        }
        let s = body.len();
        body.extend_from_slice(d);
        contents.push((s, body.len()));
    }
    let closing = body.len();
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    if c.damage == Damage::NoBinaryPart {
        let d0 = delims.first().copied().unwrap_or(closing);
        body.truncate(d0);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    }
    Built {
        content_type: format!(
            "multipart/related; boundary=\"{boundary}\"; type=\"application/xop+xml\"; start=\"<root.{}@peer>\"; start-info=\"application/soap+xml\"",
            c.id
        ),
        body,
        delims,
        contents,
        closing,
        boundary,
        root,
    }
}

/// Applies a byte-level damage; returns the body and what each document may give.
fn damage(c: &Case, b: &Built) -> (Vec<u8>, Vec<Expect>) {
    let n = c.docs.len();
    let t = c.target;
    let mut body = b.body.clone();
    let all = |e| vec![e; n];
    let before_t = |e_at: Expect, after: Expect| -> Vec<Expect> {
        (0..n)
            .map(|k| match k.cmp(&t) {
                std::cmp::Ordering::Less => Expect::Whole,
                std::cmp::Ordering::Equal => e_at,
                std::cmp::Ordering::Greater => after,
            })
            .collect()
    };
    let random = |body: &mut Vec<u8>, op: u8, p: usize, rng_byte: u8| match op % 4 {
        0 => body[p] ^= rng_byte | 1,
        1 => {
            body.remove(p);
        }
        2 => body.insert(p, b"\r\n-"[rng_byte as usize % 3]),
        _ => body.truncate(p),
    };
    let exp = match &c.damage {
        Damage::None | Damage::LongMessageId | Damage::LargeInline => all(Expect::Whole),
        Damage::IncludeNoPart
        | Damage::IncludeNoCid
        | Damage::IncludeHttpUrl
        | Damage::IncludeNoHref
        | Damage::Base64OnBinary => before_t(Expect::Fail, Expect::Whole),
        Damage::NoClosingBoundary => {
            body.truncate(b.closing);
            (0..n)
                .map(|k| {
                    if k + 1 == n {
                        Expect::Fail
                    } else {
                        Expect::Whole
                    }
                })
                .collect()
        }
        Damage::BoundaryInBinary { closing } => {
            let (s, e) = b.contents[t];
            // a point inside the bytes where no line end, white space or dash follows
            let mut p = s + (e - s) / 3;
            while p < e - 1 && b" \t\r\n-".contains(&body[p]) {
                p += 1;
            }
            let tail = if *closing { "--" } else { "\r\n" };
            let ins = format!("\r\n--{}{tail}", b.boundary);
            body.splice(p..p, ins.bytes());
            before_t(Expect::Fail, Expect::Fail)
        }
        Damage::PartCutShort => {
            let (s, e) = b.contents[t];
            body.truncate(s + (e - s) / 2);
            before_t(Expect::Fail, Expect::Fail)
        }
        Damage::PartHeadersMissing => {
            // the document before cannot be confirmed whole: what follows its part is no part
            (0..n)
                .map(|k| {
                    if k + 1 < t {
                        Expect::Whole
                    } else {
                        Expect::Fail
                    }
                })
                .collect()
        }
        Damage::NoBinaryPart | Damage::Stall | Damage::HugeInline { .. } => all(Expect::Fail),
        Damage::Drip => before_t(Expect::Fail, Expect::Fail),
        Damage::RandomRoot { op, at } => {
            let (s, e) = b.root;
            let p = s + ((e - s) as f64 * at) as usize;
            let p = p.min(body.len() - 1);
            random(&mut body, *op, p, (c.id as u8) | 1);
            all(Expect::Any)
        }
        Damage::RandomBody { op, at } => {
            if c.enc != Enc::Mtom || b.delims.is_empty() {
                let p = ((body.len() - 1) as f64 * at) as usize;
                random(&mut body, *op, p, (c.id as u8) | 1);
                all(Expect::Any)
            } else {
                let from = b.delims[0];
                let p = from + ((body.len() - from - 1) as f64 * at) as usize;
                random(&mut body, *op, p, (c.id as u8) | 1);
                // the documents whose part (with the delimiter after it) holds the damage may give
                // anything; the one before them may fail; those after them may fail
                let line = format!("\r\n--{}\r\n", b.boundary).len() + 2;
                let end_of = |k: usize| {
                    if k + 1 < n {
                        b.delims[k + 1] + line
                    } else {
                        b.body.len()
                    }
                };
                let hit: Vec<usize> = (0..n)
                    .filter(|k| b.delims[*k] <= p && p < end_of(*k))
                    .collect();
                let (lo, hi) = (
                    hit.first().copied().unwrap_or(n),
                    hit.last().copied().unwrap_or(n),
                );
                (0..n)
                    .map(|k| {
                        if hit.contains(&k) {
                            Expect::Any
                        } else if k + 1 == lo || k > hi {
                            Expect::Either
                        } else if k < lo {
                            Expect::Whole
                        } else {
                            Expect::Either
                        }
                    })
                    .collect()
            }
        }
    };
    (body, exp)
}

/// Prepares the peer's answer for `c`: the body, how it is sent, what each document may give.
fn prepare(c: &Case) -> (Prepared, Vec<Expect>) {
    let b = build(c);
    let (body, exp) = damage(c, &b);
    let send = match &c.damage {
        Damage::Drip => {
            let (s, _) = b.contents[c.target];
            Send::Drip {
                body: Bytes::from(body),
                fast: s + 10,
            }
        }
        Damage::Stall => Send::Stall,
        Damage::HugeInline { declared } => Send::HugeInline {
            bytes: 120 << 20,
            declared: *declared,
            uid: uid(c.id, 0),
        },
        _ => Send::Whole {
            body: Bytes::from(body),
            declared: c.declared,
        },
    };
    let content_type = match &c.damage {
        Damage::HugeInline { .. } => "application/soap+xml; charset=UTF-8".to_owned(),
        _ => b.content_type,
    };
    (Prepared { content_type, send }, exp)
}

/// What the consumer saw of one case.
#[derive(Debug, Default, Clone)]
struct Seen {
    status: Option<ResponseStatus>,
    delivered: usize,
    reported: usize,
    final_part: bool,
    elapsed: Duration,
    violations: Vec<String>,
}

fn request_body(c: &Case, url: &str, message_id: &str) -> String {
    let mut h = SoapHeader::request(c.tx.request_action(), Some(url));
    h.message_id = Some(message_id.to_owned());
    let docs: Vec<DocumentRequest> = (0..c.docs.len())
        .map(|k| DocumentRequest {
            home_community_id: Some(PEER_HOME.parse().unwrap()),
            repository_unique_id: REPO.into(),
            document_unique_id: uid(c.id, k),
        })
        .collect();
    if c.tx == Transaction::Rad69 {
        let req = RetrieveImagingDocumentSetRequest {
            studies: vec![StudyRequest {
                study_instance_uid: format!("1.2.3.998.{}", c.id),
                series: vec![SeriesRequest {
                    series_instance_uid: format!("1.2.3.997.{}", c.id),
                    documents: docs,
                }],
            }],
            transfer_syntaxes: vec![TS.into()],
        };
        write_soap(&h, &req)
    } else {
        write_soap(&h, &RetrieveDocumentSetRequest { documents: docs })
    }
}

/// Reads `rs:RegistryResponse` from the final-status part.
fn read_final_status(xml: &[u8]) -> Result<RegistryResponse, String> {
    let mut r = Reader::new(xml, &Limits::default()).map_err(|e| e.to_string())?;
    let el = r.root().map_err(|e| e.to_string())?;
    if !el.is(ns::RS, "RegistryResponse") {
        return Err(format!("final-status part holds {}", el.qualified()));
    }
    let status = match el.attr("status").unwrap_or("") {
        s if s.ends_with(":Success") => ResponseStatus::Success,
        s if s.ends_with(":PartialSuccess") => ResponseStatus::PartialSuccess,
        s if s.ends_with(":Failure") => ResponseStatus::Failure,
        s => return Err(format!("status {s:?}")),
    };
    let mut errors = Vec::new();
    while let Some(list) = r.child(&el).map_err(|e| e.to_string())? {
        while let Some(e) = r.child(&list).map_err(|e| e.to_string())? {
            let code = ErrorCode::parse(e.attr("errorCode").unwrap_or(""));
            let mut re = RegistryError::new(code, e.attr("codeContext").unwrap_or(""));
            re.location = e.attr("location").map(str::to_owned);
            if e.attr("severity").is_some_and(|s| s.ends_with(":Warning")) {
                re = re.warning();
            }
            errors.push(re);
            r.skip(&e).map_err(|e| e.to_string())?;
        }
    }
    Ok(RegistryResponse { status, errors })
}

/// Sends case `c` through the gateway and checks the answer and the audit trail.
async fn run_case(b: &bed::Bed, c: &Case, exp: &[Expect]) -> Seen {
    let path = if c.tx == Transaction::Rad69 {
        "/xdsi/rad69"
    } else {
        "/xds/iti43"
    };
    let url = b.url(path);
    let message_id = if c.damage == Damage::LongMessageId {
        format!("urn:uuid:{}{}", c.id, "x".repeat(10_000))
    } else {
        format!("urn:uuid:00000000-0000-4000-8000-{:012}", c.id)
    };
    let mut seen = Seen::default();
    let started = Instant::now();
    let limit = Duration::from_millis(DEADLINE_MS + GRACE_MS);
    let sent = b
        .client
        .post(&url)
        .header(
            "content-type",
            format!(
                "application/soap+xml; charset=UTF-8; action=\"{}\"",
                c.tx.request_action()
            ),
        )
        .body(request_body(c, &url, &message_id))
        .send();
    // a gateway that does not cut the peer would keep the consumer waiting: give up well after
    let got = tokio::time::timeout(limit + Duration::from_secs(10), async {
        let r = sent.await?;
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = r.bytes().await?;
        Ok::<_, reqwest::Error>((status, ct, body))
    })
    .await;
    seen.elapsed = started.elapsed();
    let (status, ct, body) = match got {
        Err(_) => {
            seen.violations.push(format!(
                "no answer within {:?}",
                limit + Duration::from_secs(10)
            ));
            return seen;
        }
        Ok(Err(e)) => {
            seen.violations
                .push(format!("no complete HTTP answer: {e}"));
            return seen;
        }
        Ok(Ok(x)) => x,
    };
    if seen.elapsed > limit {
        seen.violations.push(format!(
            "answered after {} ms, deadline {DEADLINE_MS} ms (+{GRACE_MS} ms grace)",
            seen.elapsed.as_millis()
        ));
    }
    if status != 200 {
        seen.violations.push(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ));
        return seen;
    }
    let Ok(ctype) = ContentType::parse(&ct) else {
        seen.violations.push(format!("Content-Type {ct:?}"));
        return seen;
    };
    let parts = match mtom::read_multipart(&ctype, &body, &MtomLimits::default()) {
        Ok(p) => p,
        Err(e) => {
            seen.violations
                .push(format!("not a complete multipart message: {e}"));
            return seen;
        }
    };
    let root_part = match ctype.start() {
        Some(s) => parts.iter().find(|p| p.headers.content_id() == Some(s)),
        None => parts.first(),
    };
    let Some(root_part) = root_part else {
        seen.violations.push("no root part".into());
        return seen;
    };
    let (h, resp) =
        match read_soap::<RetrieveDocumentSetResponse>(&root_part.body, &Limits::default()) {
            Ok(x) => x,
            Err(e) => {
                seen.violations.push(format!("root does not parse: {e}"));
                return seen;
            }
        };
    let echoed: String = {
        let mut end = message_id.len().min(ECHO_CAP);
        while !message_id.is_char_boundary(end) {
            end -= 1;
        }
        message_id[..end].to_owned()
    };
    if h.relates_to.as_deref() != Some(echoed.as_str()) {
        seen.violations.push(format!(
            "RelatesTo is {} bytes, not the MessageID capped at {ECHO_CAP}",
            h.relates_to.as_ref().map_or(0, String::len)
        ));
    }
    let final_part: Option<&MimePart> = parts
        .iter()
        .find(|p| p.headers.get("content-description") == Some("final-status"));
    seen.final_part = final_part.is_some();
    let fin = match final_part {
        Some(p) => match read_final_status(&p.body) {
            Ok(r) => r,
            Err(e) => {
                seen.violations.push(format!("final-status part: {e}"));
                return seen;
            }
        },
        None => resp.response.clone(),
    };
    seen.status = Some(fin.status);
    let community_failed = fin
        .errors
        .iter()
        .any(|e| e.severity == Severity::Error && e.location.as_deref() == Some(PEER_HOME));
    let reported: BTreeSet<String> = fin
        .errors
        .iter()
        .filter(|e| e.severity == Severity::Error)
        .filter_map(|e| e.location.clone())
        .collect();
    // each document of the root: its bytes (the part its xop:Include names)
    let mut delivered: BTreeMap<String, Bytes> = BTreeMap::new();
    for d in &resp.documents {
        let u = d.meta.document_unique_id.clone();
        let bytes = match &d.content {
            Content::Inline(b) => b.clone(),
            Content::Include(cid) => {
                let found: Vec<&MimePart> = parts
                    .iter()
                    .filter(|p| p.headers.content_id() == Some(cid.as_str()))
                    .collect();
                if found.len() != 1 {
                    seen.violations
                        .push(format!("xop:Include cid:{cid} names {} parts", found.len()));
                    continue;
                }
                found[0].body.clone()
            }
        };
        if reported.contains(&u) {
            continue; // listed in the root, failed later: the final-status part says so
        }
        if delivered.insert(u.clone(), bytes).is_some() {
            seen.violations.push(format!("document {u} twice"));
        }
    }
    for u in delivered.keys() {
        if (0..c.docs.len()).all(|k| uid(c.id, k) != *u) {
            seen.violations
                .push(format!("document {u} delivered but not asked for"));
        }
    }
    for (k, e) in exp.iter().enumerate() {
        let u = uid(c.id, k);
        let got = delivered.get(&u);
        let is_reported = reported.contains(&u) || community_failed;
        match (got, is_reported) {
            (Some(_), true) => seen
                .violations
                .push(format!("document {k} delivered and reported")),
            (None, false) => seen
                .violations
                .push(format!("document {k} neither delivered nor reported")),
            _ => {}
        }
        let intact = got.is_some_and(|g| *g == c.docs[k]);
        let ok = match e {
            Expect::Whole => intact,
            Expect::Fail => got.is_none(),
            Expect::Either => got.is_none() || intact,
            Expect::Any => true,
        };
        if !ok {
            seen.violations.push(format!(
                "document {k}: expected {e:?}, got {}",
                match got {
                    None => "reported".to_owned(),
                    Some(g) if *g == c.docs[k] => "delivered whole".to_owned(),
                    Some(g) => format!(
                        "delivered {} of {} bytes, different",
                        g.len(),
                        c.docs[k].len()
                    ),
                }
            ));
        }
    }
    seen.delivered = delivered.len();
    seen.reported = c.docs.len() - delivered.len().min(c.docs.len());
    let has_error = fin.errors.iter().any(|e| e.severity == Severity::Error);
    let want = match (has_error, delivered.len()) {
        (false, _) => ResponseStatus::Success,
        (true, 0) => ResponseStatus::Failure,
        (true, _) => ResponseStatus::PartialSuccess,
    };
    if fin.status != want {
        seen.violations.push(format!(
            "status {:?} with {} error(s) and {} document(s)",
            fin.status,
            fin.errors.len(),
            delivered.len()
        ));
    }
    // the audit trail: exactly one record of this retrieve, naming what was delivered
    let records: Vec<_> = b
        .audit
        .by_message_id(&echoed)
        .into_iter()
        .filter(|r| r.event == duo_runtime::audit::AuditEvent::Retrieve)
        .collect();
    if records.len() != 1 {
        seen.violations
            .push(format!("{} audit records of the retrieve", records.len()));
    } else {
        let r = &records[0];
        let ids: BTreeSet<&str> = r.document_ids.iter().map(String::as_str).collect();
        let want: BTreeSet<&str> = delivered.keys().map(String::as_str).collect();
        if ids != want || r.document_ids.len() != delivered.len() {
            seen.violations.push(format!(
                "audit documentIds {:?}, delivered {:?}",
                r.document_ids,
                delivered.keys().collect::<Vec<_>>()
            ));
        }
        let outcome = match fin.status {
            ResponseStatus::Success => AuditOutcome::Success,
            ResponseStatus::PartialSuccess => AuditOutcome::PartialSuccess,
            ResponseStatus::Failure => AuditOutcome::Failure,
        };
        if r.outcome != outcome {
            seen.violations.push(format!(
                "audit outcome {:?}, answer {:?}",
                r.outcome, fin.status
            ));
        }
    }
    seen
}

/// `n` document sizes: small (the answer is decided before the first byte) or, with `large`, about
/// 0.5 to 1.1 MiB each (more than the 2 MiB look-ahead together: the answer streams).
fn sizes(rng: &mut Rng, n: usize, large: bool) -> Vec<usize> {
    (0..n)
        .map(|_| {
            if large {
                512 * 1024 + rng.below(600 * 1024) as usize
            } else {
                1000 + rng.below(6000) as usize
            }
        })
        .collect()
}

fn case(id: u64, rng: &mut Rng, damage: Damage, large: bool) -> Case {
    let n = match damage {
        Damage::HugeInline { .. } => 1,
        _ => 1 + rng.below(4) as usize,
    };
    let n = if damage == Damage::LargeInline { 1 } else { n };
    let large = large && !matches!(damage, Damage::HugeInline { .. } | Damage::LargeInline);
    // streaming needs more than the look-ahead: at least four large documents
    let n = if large { n.max(4) } else { n };
    let docs = if damage == Damage::LargeInline {
        vec![content(rng, 15 << 20)]
    } else {
        sizes(rng, n, large)
            .into_iter()
            .map(|s| content(rng, s))
            .collect()
    };
    let tx = if rng.below(2) == 0 {
        Transaction::Iti43
    } else {
        Transaction::Rad69
    };
    let mut target = rng.below(n as u64) as usize;
    if large {
        // a late failure: after the look-ahead
        target = n - 1;
    }
    let enc = match damage {
        Damage::LargeInline => Enc::Plain,
        Damage::None | Damage::RandomRoot { .. } if rng.below(4) == 0 => {
            if rng.below(2) == 0 {
                Enc::Plain
            } else {
                Enc::MtomBase64Root
            }
        }
        _ => Enc::Mtom,
    };
    Case {
        id,
        tx,
        docs,
        enc,
        damage,
        target,
        declared: rng.below(2) == 0,
    }
}

/// Every damage kind of the issue, in a fixed order.
fn kinds(rng: &mut Rng) -> Vec<Damage> {
    vec![
        Damage::None,
        Damage::IncludeNoPart,
        Damage::IncludeNoCid,
        Damage::IncludeHttpUrl,
        Damage::IncludeNoHref,
        Damage::NoClosingBoundary,
        Damage::BoundaryInBinary {
            closing: rng.below(2) == 0,
        },
        Damage::PartCutShort,
        Damage::PartHeadersMissing,
        Damage::Base64OnBinary,
        Damage::NoBinaryPart,
        Damage::LongMessageId,
    ]
}

fn random_damage(rng: &mut Rng) -> Damage {
    match rng.below(100) {
        0..=44 => Damage::RandomBody {
            op: rng.below(4) as u8,
            at: rng.unit(),
        },
        45..=54 => Damage::RandomRoot {
            op: rng.below(4) as u8,
            at: rng.unit(),
        },
        55..=57 => Damage::Drip,
        58..=59 => Damage::Stall,
        _ => {
            let k = kinds(rng);
            k[rng.below(k.len() as u64) as usize].clone()
        }
    }
}

/// Per damage kind: cases, documents delivered and reported, statuses, answers with a final-status
/// part, slowest answer, violations.
#[derive(Default)]
struct Row {
    cases: usize,
    delivered: usize,
    reported: usize,
    statuses: [usize; 3],
    final_parts: usize,
    max_ms: u128,
    violations: usize,
}

/// Runs `cases` four at a time; prints the table and every violation; returns the number of
/// violations.
async fn run(b: &bed::Bed, cases: Vec<Case>, title: &str) -> usize {
    run_at_once(b, cases, title, 4).await
}

/// [`run`], `at_once` cases at a time.
async fn run_at_once(b: &bed::Bed, cases: Vec<Case>, title: &str, at_once: usize) -> usize {
    let prepared: Vec<(Case, Vec<Expect>)> = cases
        .into_iter()
        .map(|c| {
            let (p, exp) = prepare(&c);
            b.peer.state.answers.lock().unwrap().insert(c.id, p);
            (c, exp)
        })
        .collect();
    let started = Instant::now();
    let results: Vec<(Case, Seen)> = futures::stream::iter(prepared)
        .map(|(c, exp)| async move {
            let seen = run_case(b, &c, &exp).await;
            b.peer.state.answers.lock().unwrap().remove(&c.id);
            (c, seen)
        })
        .buffer_unordered(at_once)
        .collect()
        .await;
    let mut rows: BTreeMap<&'static str, Row> = BTreeMap::new();
    let mut violations = 0;
    for (c, s) in &results {
        let r = rows.entry(c.damage.kind()).or_default();
        r.cases += 1;
        r.delivered += s.delivered;
        r.reported += s.reported;
        if let Some(st) = s.status {
            r.statuses[match st {
                ResponseStatus::Success => 0,
                ResponseStatus::PartialSuccess => 1,
                ResponseStatus::Failure => 2,
            }] += 1;
        }
        r.final_parts += usize::from(s.final_part);
        r.max_ms = r.max_ms.max(s.elapsed.as_millis());
        if !s.violations.is_empty() {
            r.violations += 1;
            violations += 1;
            if violations <= 40 {
                println!(
                    "VIOLATION case {} ({}, {:?}, {} docs, target {}, {:?}): {}",
                    c.id,
                    c.damage.kind(),
                    c.tx,
                    c.docs.len(),
                    c.target,
                    c.enc,
                    s.violations.join("; ")
                );
            }
        }
    }
    let rss = b.gateway.peak_rss_kib() as f64 / 1024.0;
    println!(
        "\n{title}: {} cases in {:.1} s through a duo-gateway process (deadline {DEADLINE_MS} ms)",
        results.len(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "| damage | cases | docs delivered | docs reported | Success | PartialSuccess | Failure | final-status part | slowest answer | violations |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut total = Row::default();
    for (k, r) in &rows {
        println!(
            "| {k} | {} | {} | {} | {} | {} | {} | {} | {} ms | {} |",
            r.cases,
            r.delivered,
            r.reported,
            r.statuses[0],
            r.statuses[1],
            r.statuses[2],
            r.final_parts,
            r.max_ms,
            r.violations
        );
        total.cases += r.cases;
        total.delivered += r.delivered;
        total.reported += r.reported;
        for i in 0..3 {
            total.statuses[i] += r.statuses[i];
        }
        total.final_parts += r.final_parts;
        total.max_ms = total.max_ms.max(r.max_ms);
        total.violations += r.violations;
    }
    println!(
        "| **all** | {} | {} | {} | {} | {} | {} | {} | {} ms | {} |",
        total.cases,
        total.delivered,
        total.reported,
        total.statuses[0],
        total.statuses[1],
        total.statuses[2],
        total.final_parts,
        total.max_ms,
        total.violations
    );
    println!(
        "slowest answer {} ms against the deadline of {DEADLINE_MS} ms; gateway peak RSS (VmHWM) {rss:.1} MiB",
        total.max_ms
    );
    violations
}

/// Every damage kind of the issue, once with small documents (decided before the first byte) and once
/// with large ones (a late failure, reported in the final-status part), through ITI-43 and RAD-69,
/// plus a dripping and a stalling peer: each consumer gets a complete, well-formed answer within the
/// deadline that reports the damaged document and delivers the others, and the audit names exactly
/// what was delivered. (Regression test of defect 7: on the gateway before the fix the consumer got
/// no complete HTTP answer for the damaged kinds, waited for the dripping peer, and the audit said
/// success.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_damage_kind_gets_a_well_formed_answer_in_time() {
    let b = bed::start().await;
    let mut rng = Rng(0x5eed_0001);
    let mut cases = Vec::new();
    let mut id = 1;
    for tx in [Transaction::Iti43, Transaction::Rad69] {
        for large in [false, true] {
            let mut all = kinds(&mut rng);
            all.push(Damage::Drip);
            all.push(Damage::Stall);
            for d in all {
                let mut c = case(id, &mut rng, d, large);
                c.tx = tx;
                c.enc = Enc::Mtom;
                if !large && c.docs.len() < 3 {
                    // room for a document before and after the damaged one
                    let mut more = c.docs.clone();
                    while more.len() < 3 {
                        more.push(content(&mut rng, 2000));
                    }
                    c.docs = more;
                    c.target = 1;
                }
                cases.push(c);
                id += 1;
            }
        }
    }
    let v = run(&b, cases, "damage kinds").await;
    assert_eq!(v, 0, "violations (listed above)");
}

/// A peer answering plain SOAP with a 120 MiB inline document, four at a time, with and without a
/// declared length: refused (reported as the community's error); answers with a 15 MiB inline document
/// delivered; and the gateway's resident set stays bounded (printed; a bar in `scripts/relay-mutation.sh`). (Regression test of the inline
/// part of defect 7: before, each such answer made the gateway hold about 460 MiB.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_inline_answers_are_refused_with_bounded_memory() {
    let b = bed::start().await;
    let mut rng = Rng(0x5eed_0002);
    let cases: Vec<Case> = (0..8)
        .map(|i| {
            case(
                100 + i,
                &mut rng,
                Damage::HugeInline {
                    declared: i % 2 == 0,
                },
                false,
            )
        })
        .collect();
    let v = run(&b, cases, "huge inline answers").await;
    assert_eq!(v, 0, "violations (listed above)");
    // then four accepted answers with a 15 MiB inline document (just under maxInlineDocumentBytes,
    // 16 MiB), one at a time (one such root takes most of the 32 MiB budget): delivered whole, within
    // the same bounded memory (before the base64 was decoded as a stream, one took the gateway to
    // about 78 MiB)
    let cases: Vec<Case> = (0..4)
        .map(|i| case(200 + i, &mut rng, Damage::LargeInline, false))
        .collect();
    let v = run_at_once(&b, cases, "15 MiB inline answers", 1).await;
    assert_eq!(v, 0, "violations (listed above)");
    // memory is a measurement (printed above), a bar only in scripts/relay-mutation.sh
    if let Some(bar) = std::env::var("DUO_RELAY_RSS_BAR_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        let rss = b.gateway.peak_rss_kib() / 1024;
        assert!(
            rss < bar,
            "the gateway's peak resident set is {rss} MiB with 120 MiB inline answers, bar {bar} MiB"
        );
    }
}

/// The mutation run: `DUO_RELAY_MUTATION_CASES` (default 300) cases of random damage kinds and random
/// byte damage, through ITI-43 and RAD-69, small and large documents, with every property of the
/// module documentation checked on each. With `DUO_RELAY_RSS_BAR_MIB` set, a gateway peak RSS above
/// it fails the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutation_run() {
    let n: u64 = std::env::var("DUO_RELAY_MUTATION_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let seed: u64 = std::env::var("DUO_RELAY_MUTATION_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_1234);
    let b = bed::start().await;
    let mut rng = Rng(seed | 1);
    let cases: Vec<Case> = (0..n)
        .map(|i| {
            let d = random_damage(&mut rng);
            let large = rng.below(10) == 0;
            case(10_000 + i, &mut rng, d, large)
        })
        .collect();
    let v = run(&b, cases, &format!("mutation run (seed {seed})")).await;
    assert_eq!(v, 0, "violations (listed above)");
    if let Some(bar) = std::env::var("DUO_RELAY_RSS_BAR_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        let rss = b.gateway.peak_rss_kib() / 1024;
        assert!(rss < bar, "gateway peak RSS {rss} MiB, bar {bar} MiB");
    }
}

/// Patient A (asked about) and B (another patient), as CX.
const PATIENT_A: &str = "999911120";
const PATIENT_B: &str = "900186021";

fn cx(bsn: &str) -> String {
    format!("{bsn}^^^&2.16.840.1.113883.2.4.6.3&ISO")
}

fn entry(i: usize, patient: &str, study: &str) -> DocumentEntry {
    DocumentEntry {
        entry_uuid: format!("urn:uuid:7d1c2b4e-0000-4000-8000-{i:012}"),
        unique_id: format!("1.2.3.777.{i}"),
        home_community_id: Some(PEER_HOME.parse().unwrap()),
        repository_unique_id: REPO.into(),
        patient_id: patient.to_owned(),
        status: availability::APPROVED.into(),
        mime_type: "application/dicom".into(),
        title: format!("CT {i}"),
        format_code: Some(duo_runtime::model::Code::new(
            "1.2.840.10008.5.1.4.1.1.88.59",
            "1.2.840.10008.2.6.1",
            "Key Object Selection Document",
        )),
        creation_time: "20240115093000".into(),
        reference_ids: vec![ReferenceId {
            id: study.into(),
            assigning_authority: String::new(),
            id_type: reference_type::STUDY_INSTANCE_UID.into(),
        }],
        ..Default::default()
    }
}

/// The peer's answer to a query about A: A's entry, one of B, one without a patient, and B's
/// SubmissionSet with its HasMember association to B's entry.
fn mixed_answer() -> AdhocQueryResponse {
    let mut objects: Vec<Identifiable> = vec![
        Identifiable::ExtrinsicObject(document_entry_to_wire(&entry(
            1,
            &cx(PATIENT_A),
            "1.2.3.555.1",
        ))),
        Identifiable::ExtrinsicObject(document_entry_to_wire(&entry(
            2,
            &cx(PATIENT_B),
            "1.2.3.555.2",
        ))),
        // an entry naming A and then B (a second XDSDocumentEntry.patientId): nobody's, whichever
        // comes first (found by the breaking run: with A first it was kept)
        {
            let mut e = document_entry_to_wire(&entry(3, &cx(PATIENT_A), "1.2.3.555.3"));
            let mut second = e
                .object
                .external_identifiers
                .iter()
                .find(|x| x.identification_scheme == uuids::PATIENT_ID)
                .cloned()
                .unwrap();
            second.object =
                RegistryObject::with_id("urn:uuid:5b9f1e2d-0000-4000-8000-0000000000b3");
            second.value = cx(PATIENT_B);
            e.object.external_identifiers.push(second);
            Identifiable::ExtrinsicObject(e)
        },
    ];
    let ss_id = "urn:uuid:5b9f1e2d-0000-4000-8000-000000000001";
    let mut ss = RegistryObject::with_id(ss_id);
    ss.home = Some(PEER_HOME.parse().unwrap());
    ss.status = Some(availability::APPROVED.into());
    ss.name = intl("B's submission");
    for (scheme, value) in [
        (uuids::SUBMISSION_SET_UNIQUE_ID, "1.2.3.888.1".to_owned()),
        (uuids::SUBMISSION_SET_PATIENT_ID, cx(PATIENT_B)),
    ] {
        ss.external_identifiers.push(ExternalIdentifier {
            object: RegistryObject::with_id(format!(
                "urn:uuid:5b9f1e2d-0000-4000-8000-{:012}",
                value.len()
            )),
            registry_object: ss_id.into(),
            identification_scheme: scheme.into(),
            value,
        });
    }
    objects.push(Identifiable::RegistryPackage(RegistryPackage {
        object: ss,
    }));
    objects.push(Identifiable::Association(Association {
        object: RegistryObject::with_id("urn:uuid:5b9f1e2d-0000-4000-8000-000000000004"),
        association_type: association_type::HAS_MEMBER.into(),
        source_object: ss_id.into(),
        target_object: entry(2, "", "").entry_uuid,
    }));
    AdhocQueryResponse::new(objects, Vec::new())
}

/// A community answering a query about patient A with objects of patient B (and one naming both A and
/// B): left out of the ITI-18 answer and of the JSON timeline, the community named in a Warning,
/// an audit record for B, and `duo_foreign_patient_objects_total`. (Regression test of defect 5:
/// before, B's entry was in both answers.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_patients_objects_are_left_out() {
    let b = bed::start().await;
    *b.peer.state.query.lock().unwrap() = Some(mixed_answer());
    // ITI-18 FindDocuments about A
    let resp = find_documents(&b, &cx(PATIENT_A), ReturnType::LeafClass).await;
    let ids: Vec<&str> = resp.objects.iter().filter_map(Identifiable::id).collect();
    assert_eq!(
        ids,
        ["urn:uuid:7d1c2b4e-0000-4000-8000-000000000001"],
        "only A's entry: {resp:?}"
    );
    assert_eq!(resp.status, ResponseStatus::Success, "{:?}", resp.errors);
    let warning = resp
        .errors
        .iter()
        .find(|e| e.severity == Severity::Warning && e.location.as_deref() == Some(PEER_HOME))
        .unwrap_or_else(|| panic!("no warning naming the community: {:?}", resp.errors));
    assert!(
        warning.code_context.contains("another patient"),
        "{warning:?}"
    );
    // the JSON timeline of A
    let t = b
        .client
        .get(b.url(&format!("/api/v1/patients/{PATIENT_A}/timeline")))
        .header("X-DUO-Requester-UZI", "900000001")
        .header("X-DUO-Requester-Role", "01.015")
        .send()
        .await
        .unwrap();
    assert_eq!(t.status().as_u16(), 200);
    let t: serde_json::Value = t.json().await.unwrap();
    let studies: Vec<&str> = t["studies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["studyInstanceUid"].as_str().unwrap())
        .collect();
    assert_eq!(studies, ["1.2.3.555.1"], "{t}");
    assert!(
        t["errors"].as_array().unwrap().iter().any(|e| {
            e["location"] == PEER_HOME
                && e["severity"].as_str().unwrap_or("").ends_with(":Warning")
                && e["codeContext"]
                    .as_str()
                    .unwrap_or("")
                    .contains("another patient")
        }),
        "{t}"
    );
    // audited: B's objects under B, the one without a patient too, naming the community
    let recs = b.audit.records();
    let of_b: Vec<_> = recs
        .iter()
        .filter(|r| r.patient.as_ref().map(|p| p.as_str()) == Some(PATIENT_B))
        .collect();
    assert_eq!(of_b.len(), 2, "one per query: {recs:?}");
    for r in &of_b {
        assert_eq!(r.outcome, AuditOutcome::Failure);
        assert_eq!(
            r.remote_community
                .as_ref()
                .map(ToString::to_string)
                .as_deref(),
            Some(PEER_HOME)
        );
        let ids: BTreeSet<&str> = r.document_ids.iter().map(String::as_str).collect();
        assert_eq!(ids, BTreeSet::from(["1.2.3.777.2", "1.2.3.888.1"]));
    }
    assert!(
        recs.iter()
            .any(|r| r.patient.is_none() && r.document_ids == ["1.2.3.777.3"]),
        "{recs:?}"
    );
    assert!(
        !recs
            .iter()
            .filter(|r| r.patient.as_ref().map(|p| p.as_str()) == Some(PATIENT_A))
            .any(|r| r.document_ids.iter().any(|d| d == "1.2.3.777.2")),
        "B's document filed under A"
    );
    // counted: 4 objects (B's entry, the one without a patient, B's SubmissionSet, the association)
    // per query
    let m = b.metrics().await;
    let line = m
        .lines()
        .find(|l| l.starts_with("duo_foreign_patient_objects_total{") && l.contains(PEER_HOME))
        .unwrap_or_else(|| panic!("no duo_foreign_patient_objects_total: {m}"));
    assert_eq!(line.rsplit(' ').next(), Some("8"), "{line}");
}

/// An ITI-18 about A asked for ObjectRef: ObjectRefs name no patient, so the gateway asks the community
/// for LeafClass and answers with ObjectRefs of A's objects only. (Before, the ObjectRef query was
/// passed on as such and the peer's ObjectRefs, B's among them, went to the consumer unchecked.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_ref_query_is_answered_from_checked_objects_only() {
    let b = bed::start().await;
    *b.peer.state.query.lock().unwrap() = Some(mixed_answer());
    let resp = find_documents(&b, &cx(PATIENT_A), ReturnType::ObjectRef).await;
    let refs: Vec<(&str, Option<String>)> = resp
        .objects
        .iter()
        .map(|o| match o {
            Identifiable::ObjectRef(r) => (r.id.as_str(), r.home.as_ref().map(ToString::to_string)),
            other => panic!("not an ObjectRef: {other:?}"),
        })
        .collect();
    assert_eq!(
        refs,
        [(
            "urn:uuid:7d1c2b4e-0000-4000-8000-000000000001",
            Some(PEER_HOME.to_owned())
        )],
        "only A's entry: {resp:?}"
    );
    assert_eq!(*b.peer.state.asked.lock().unwrap(), [ReturnType::LeafClass]);
    assert!(
        resp.errors
            .iter()
            .any(|e| e.severity == Severity::Warning && e.code_context.contains("another patient")),
        "{:?}",
        resp.errors
    );
}

/// Sends the gateway an ITI-18 FindDocuments about `patient_cx` (Approved entries) asking for
/// `return_type`, and reads the answer.
async fn find_documents(
    b: &bed::Bed,
    patient_cx: &str,
    return_type: ReturnType,
) -> AdhocQueryResponse {
    let mut q = AdhocQuery::new(StoredQuery::FindDocuments);
    q.set_single(param::DE_PATIENT_ID, patient_cx);
    q.add_list(param::DE_STATUS, &[availability::APPROVED]);
    let req = AdhocQueryRequest::new(q, return_type);
    let url = b.url("/xds/iti18");
    let h = SoapHeader::request(Transaction::Iti18.request_action(), Some(&url));
    let r = b
        .client
        .post(&url)
        .header("content-type", "application/soap+xml; charset=UTF-8")
        .body(write_soap(&h, &req))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body = r.bytes().await.unwrap();
    read_soap::<AdhocQueryResponse>(&body, &Limits::default())
        .unwrap()
        .1
}

/// From the second breaking run: a patient id that is no CX with an id and an assigning authority (or a
/// BSN authority with an id that is no BSN) cannot be checked against the answers, so it is refused
/// before any community is asked; the same number under another authority is checked as another
/// patient; and a peer's bare ObjectRef in a LeafClass answer, which names no patient, is not passed on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_unchecked_patient_and_no_peer_object_ref_reaches_the_consumer() {
    let b = bed::start().await;
    let mut answer = mixed_answer();
    answer.objects.push(Identifiable::ObjectRef(ObjectRef {
        id: "urn:uuid:5b9f1e2d-0000-4000-8000-000000000077".into(),
        home: Some(PEER_HOME.parse().unwrap()),
        slots: Vec::new(),
    }));
    *b.peer.state.query.lock().unwrap() = Some(answer);
    for id in [
        "nonsense",
        "999911120",
        "^^^&1.2.3&ISO",
        "12345^^^&2.16.840.1.113883.2.4.6.3&ISO",
    ] {
        for rt in [ReturnType::LeafClass, ReturnType::ObjectRef] {
            let resp = find_documents(&b, id, rt).await;
            assert!(resp.objects.is_empty(), "{id}: {resp:?}");
            assert_eq!(resp.status, ResponseStatus::Failure, "{id}");
            assert!(
                resp.errors
                    .iter()
                    .any(|e| e.error_code == ErrorCode::XDSUnknownPatientId
                        && e.code_context.contains("no CX")),
                "{id}: {:?}",
                resp.errors
            );
        }
    }
    assert!(
        b.peer.state.asked.lock().unwrap().is_empty(),
        "a community was asked"
    );
    // the same number under another assigning authority is another patient: the query goes out, and
    // every object of the answer (A's, B's, nobody's) is left out
    let other_authority = cx(PATIENT_A).replace("2.16.840.1.113883.2.4.6.3", "1.2.3.4.5");
    for rt in [ReturnType::LeafClass, ReturnType::ObjectRef] {
        let resp = find_documents(&b, &other_authority, rt).await;
        assert!(resp.objects.is_empty(), "{resp:?}");
        assert!(
            resp.errors
                .iter()
                .any(|e| e.severity == Severity::Warning
                    && e.code_context.contains("another patient")),
            "{:?}",
            resp.errors
        );
    }
    let resp = find_documents(&b, &cx(PATIENT_A), ReturnType::LeafClass).await;
    let ids: Vec<&str> = resp.objects.iter().filter_map(Identifiable::id).collect();
    assert_eq!(
        ids,
        ["urn:uuid:7d1c2b4e-0000-4000-8000-000000000001"],
        "{resp:?}"
    );
}

/// From the second breaking run: a peer answering every ITI-38 with a large answer (here 4,000 entries,
/// about 8 MB) to sixteen ITI-18 queries at once. Query answers are held within the gateway's budget of
/// buffered answers: each consumer gets a well-formed answer, either the entries or that community's
/// error, and the gateway's resident set is printed. (Before, query answers were not charged, and 64 such
/// queries at once took the gateway to about 650 MiB.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_query_answers_at_once_stay_within_the_budget() {
    let b = bed::start().await;
    let objects = (0..4000)
        .map(|i| {
            Identifiable::ExtrinsicObject(document_entry_to_wire(&entry(
                1000 + i,
                &cx(PATIENT_A),
                &format!("1.2.3.555.{i}"),
            )))
        })
        .collect();
    *b.peer.state.query.lock().unwrap() = Some(AdhocQueryResponse::new(objects, Vec::new()));
    let a = cx(PATIENT_A);
    let answers =
        futures::future::join_all((0..16).map(|_| find_documents(&b, &a, ReturnType::LeafClass)))
            .await;
    let (mut whole, mut refused) = (0, 0);
    for a in &answers {
        if a.objects.len() == 4000 && a.status == ResponseStatus::Success {
            whole += 1;
        } else {
            assert!(
                a.objects.is_empty(),
                "a partial answer: {} objects",
                a.objects.len()
            );
            assert!(
                a.errors
                    .iter()
                    .any(|e| e.location.as_deref() == Some(PEER_HOME)),
                "{:?}",
                a.errors
            );
            refused += 1;
        }
    }
    let rss = b.gateway.peak_rss_kib() / 1024;
    println!(
        "16 large query answers at once: {whole} whole, {refused} refused as the community's error; gateway peak RSS (VmHWM) {rss} MiB"
    );
    assert!(whole >= 1, "not one answer got through");
}

/// Generated: communities answering a query about A with random mixes of entries of A, of B, of nobody
/// and of both, the peer's own ObjectRefs, and Associations between any of them, asked for LeafClass or
/// ObjectRef. The property, on every answer the consumer gets: every entry is A's, nothing names an
/// object that is not A's, and an ObjectRef answer holds ObjectRefs only, of A's entries and of
/// Associations between two of them. The case count is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_answers_reach_the_consumer_with_the_asked_patients_objects_only() {
    let b = bed::start().await;
    let mut rng = Rng(0x5eed_0005);
    let cases = 300;
    let mut kept_total = 0;
    let mut timeline_total = 0;
    for case_no in 0..cases {
        // who each entry belongs to: 0 A, 1 B, 2 nobody, 3 A and B
        let n = 1 + rng.below(8) as usize;
        let mut objects = Vec::new();
        let mut owners = BTreeMap::new();
        let mut a_uids = BTreeSet::new();
        for k in 0..n {
            let i = case_no * 100 + k;
            let who = rng.below(4);
            let mut e = match who {
                0 => document_entry_to_wire(&entry(i, &cx(PATIENT_A), "1.2.3.555.1")),
                1 => document_entry_to_wire(&entry(i, &cx(PATIENT_B), "1.2.3.555.2")),
                _ => document_entry_to_wire(&entry(i, "", "1.2.3.555.3")),
            };
            if who == 3 {
                e = document_entry_to_wire(&entry(i, &cx(PATIENT_A), "1.2.3.555.4"));
                let mut second = e
                    .object
                    .external_identifiers
                    .iter()
                    .find(|x| x.identification_scheme == uuids::PATIENT_ID)
                    .cloned()
                    .unwrap();
                second.object =
                    RegistryObject::with_id(format!("urn:uuid:5b9f1e2d-0000-4000-9000-{i:012}"));
                second.value = cx(PATIENT_B);
                e.object.external_identifiers.push(second);
            }
            owners.insert(e.object.id.clone(), who == 0);
            if who == 0 {
                a_uids.insert(format!("1.2.3.777.{i}"));
            }
            objects.push(Identifiable::ExtrinsicObject(e));
        }
        let ids: Vec<String> = owners.keys().cloned().collect();
        for k in 0..rng.below(3) {
            let id = format!(
                "urn:uuid:5b9f1e2d-0000-4000-a000-{:012}",
                case_no * 100 + k as usize
            );
            owners.insert(id.clone(), false);
            objects.push(Identifiable::ObjectRef(ObjectRef {
                id,
                home: Some(PEER_HOME.parse().unwrap()),
                slots: Vec::new(),
            }));
        }
        let mut associations = Vec::new();
        for k in 0..rng.below(4) {
            let pick = |rng: &mut Rng| ids[rng.below(ids.len() as u64) as usize].clone();
            let (source, target) = (pick(&mut rng), pick(&mut rng));
            let id = format!(
                "urn:uuid:5b9f1e2d-0000-4000-b000-{:012}",
                case_no * 100 + k as usize
            );
            associations.push((id.clone(), owners[&source] && owners[&target]));
            objects.push(Identifiable::Association(Association {
                object: RegistryObject::with_id(id),
                association_type: association_type::HAS_MEMBER.into(),
                source_object: source,
                target_object: target,
            }));
        }
        *b.peer.state.query.lock().unwrap() = Some(AdhocQueryResponse::new(objects, Vec::new()));
        let rt = if rng.below(2) == 0 {
            ReturnType::LeafClass
        } else {
            ReturnType::ObjectRef
        };
        let resp = find_documents(&b, &cx(PATIENT_A), rt).await;
        let is_a = |id: &str| owners.get(id).copied().unwrap_or(false);
        for o in &resp.objects {
            match (rt, o) {
                (ReturnType::LeafClass, Identifiable::ExtrinsicObject(e)) => {
                    assert!(is_a(&e.object.id), "case {case_no}: not A's: {e:?}")
                }
                (ReturnType::LeafClass, Identifiable::Association(a)) => assert!(
                    is_a(&a.source_object) && is_a(&a.target_object),
                    "case {case_no}: an association to an object that is not A's: {a:?}"
                ),
                (ReturnType::ObjectRef, Identifiable::ObjectRef(r)) => assert!(
                    is_a(&r.id)
                        || associations
                            .iter()
                            .any(|(id, both_a)| id == &r.id && *both_a),
                    "case {case_no}: an ObjectRef of what is not A's: {r:?}"
                ),
                (_, other) => panic!("case {case_no}: {rt:?} answer holds {other:?}"),
            }
        }
        kept_total += resp.objects.len();
        // the same answer through the JSON timeline (the fan-out's other caller): only A's documents
        let t = b
            .client
            .get(b.url(&format!("/api/v1/patients/{PATIENT_A}/timeline")))
            .header("X-DUO-Requester-UZI", "900000001")
            .header("X-DUO-Requester-Role", "01.015")
            .send()
            .await
            .unwrap();
        assert_eq!(t.status().as_u16(), 200, "case {case_no}");
        let t: serde_json::Value = t.json().await.unwrap();
        for item in ["studies", "unmatchedReports"] {
            for shown in t[item].as_array().unwrap() {
                for src in shown["sources"].as_array().unwrap() {
                    let uid = src["documentUniqueId"].as_str().unwrap();
                    assert!(
                        a_uids.contains(uid),
                        "case {case_no}: timeline shows {uid}, not A's: {t}"
                    );
                    timeline_total += 1;
                }
            }
        }
    }
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!(
            "initiating filter, generated: {cases} answers about A relayed (ITI-18 and timeline), {kept_total} objects and {timeline_total} timeline sources passed on, 0 violations\n"
        )
        .as_bytes(),
    );
}

#[test]
fn expectations_cover_every_document() {
    let mut rng = Rng(7);
    for i in 0..200 {
        let d = random_damage(&mut rng);
        let large = rng.below(5) == 0;
        let c = case(i, &mut rng, d, large);
        if matches!(c.damage, Damage::HugeInline { .. }) {
            continue;
        }
        let (_, exp) = prepare(&c);
        assert_eq!(exp.len(), c.docs.len());
    }
}
