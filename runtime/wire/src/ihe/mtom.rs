//! MTOM/XOP (`multipart/related`, W3C SOAP MTOM 1.2 and XOP 1.0, RFC 2387) for IHE SOAP messages
//! (ITI TF-2 Appendix V.3.6), with a streaming retrieve path.
//!
//! * [`ContentType`] parses the `Content-Type` of real peers: quoted or unquoted parameters in any order,
//!   `start`, `start-info`, `type`, `action`, boundaries with `+`, `=` and `:`.
//! * [`Scanner`] is a push-style boundary scanner over a bounded buffer: it accepts CRLF and bare-LF line
//!   ends (some captured peers, testdata README), transport padding after boundaries, trailing spaces on
//!   header lines, and never holds more than one input chunk plus a boundary's length of body data.
//! * [`MultipartReader`] drives the scanner from an async byte stream (hyper / reqwest / axum bodies).
//! * [`RetrieveResponseReader`] reads a retrieve response (ITI-39 / ITI-43 / RAD-69 / RAD-75) as MTOM,
//!   plain SOAP with base64 documents, or MTOM with base64 in the root part, and yields the
//!   RegistryResponse and then each document with its content as a stream of chunks.
//! * [`RetrieveResponseWriter`] produces an MTOM retrieve response as a stream of byte chunks from such
//!   items, so the gateway pipes reader → writer without buffering a document.
//!
//! Why not `multer`: its buffer pulls every chunk a fast source has ready before it looks for a
//! boundary (unbounded memory on a fast 1 GiB body) and it requires CRLF line ends, which the LF-only
//! captures in `testdata/ihe/samples` do not have.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;

use base64::Engine as _;
use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use memchr::memmem;

use crate::xml::{Limits, Reader, XmlError, ns};

use super::retrieve::{
    Content, DocumentResponseMeta, RegistryResponse, RetrieveDocumentSetResponse,
    read_response_body, write_document_response, write_response_start,
};
use super::soap::{self, Fault, FaultCode, SoapError, SoapHeader};

/// A boxed error as HTTP body streams produce them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a MIME / MTOM message was not read or written. Each variant maps to a SOAP fault
/// ([`MtomError::to_fault`]); none is a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MtomError {
    /// The `Content-Type` is unusable (not multipart/related where required, no boundary ...).
    #[error("unusable Content-Type {value:?}: {reason}")]
    ContentType {
        /// The header value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// Multipart framing is broken (no boundary, text after a boundary ...).
    #[error("malformed multipart body: {0}")]
    Malformed(String),
    /// The body ended inside a part or before the closing boundary.
    #[error("multipart body ended before its closing boundary")]
    Truncated,
    /// A part's header block exceeds the limit.
    #[error("MIME part headers larger than {0} bytes")]
    HeaderTooLarge(usize),
    /// More parts than the limit.
    #[error("more than {0} MIME parts")]
    TooManyParts(usize),
    /// A buffered body or root part exceeds the limit.
    #[error("message larger than {limit} bytes")]
    TooLarge {
        /// The limit, bytes.
        limit: u64,
    },
    /// The declared `Content-Length` exceeds the limit; refused before reading the body.
    #[error("declared body size {declared} bytes exceeds the limit of {limit} bytes")]
    DeclaredTooLarge {
        /// `Content-Length`.
        declared: u64,
        /// The limit, bytes.
        limit: u64,
    },
    /// An `xop:Include` names a part the message does not have.
    #[error("xop:Include refers to cid:{0}, which is not in the message")]
    MissingPart(String),
    /// The root part's SOAP envelope was refused.
    #[error(transparent)]
    Soap(#[from] SoapError),
    /// A base64 part or inline document does not decode.
    #[error("base64 content does not decode: {0}")]
    Base64(String),
    /// The byte stream the message came from failed (connection reset, timeout ...).
    #[error("reading the message body failed: {0}")]
    Body(String),
    /// The document source feeding a writer failed.
    #[error("document source failed: {0}")]
    Source(String),
    /// A writer was fed items out of order (a chunk outside a document, an unknown or repeated index,
    /// documents left without content).
    #[error("retrieve response items out of order: {0}")]
    Sequence(String),
    /// Buffering this answer would take the gateway's [`BufferBudget`] (bytes of peers' answers held in
    /// memory at once, across every request) past its total.
    #[error(
        "the gateway already holds its budget of {budget} bytes of buffered answers; this answer does not fit"
    )]
    OverBudget {
        /// The budget's total, bytes.
        budget: u64,
    },
}

impl From<XmlError> for MtomError {
    fn from(e: XmlError) -> MtomError {
        MtomError::Soap(SoapError::Xml(e))
    }
}

impl MtomError {
    /// The SOAP fault to answer with: `Sender` for what the peer sent, `Receiver` for failures on this
    /// side (body stream, document source, writer misuse). A fault carried in the root part is returned
    /// as is.
    pub fn to_fault(&self) -> Fault {
        match self {
            MtomError::Soap(e) => e.to_fault(),
            MtomError::Body(_)
            | MtomError::Source(_)
            | MtomError::Sequence(_)
            | MtomError::OverBudget { .. } => Fault {
                code: FaultCode::Receiver,
                subcode: None,
                reason: self.to_string(),
            },
            _ => Fault {
                code: FaultCode::Sender,
                subcode: None,
                reason: self.to_string(),
            },
        }
    }
}

/// A parsed `Content-Type` header value (RFC 2045 5.1): media type and parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType {
    /// `type/subtype`, lower case.
    pub mime: String,
    /// Parameters in order, names lower case, values unquoted (backslash escapes resolved).
    pub params: Vec<(String, String)>,
}

impl ContentType {
    /// Parses a header value. Tolerant: missing spaces, trailing spaces and `;`, quoted or unquoted
    /// values (unquoted ones run to the next `;`, so `+` and `=` in boundaries are kept).
    pub fn parse(value: &str) -> Result<ContentType, MtomError> {
        let err = |reason: &str| MtomError::ContentType {
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        let (mime, mut rest) = match value.find(';') {
            Some(i) => (&value[..i], &value[i + 1..]),
            None => (value, ""),
        };
        let mime = mime.trim().to_ascii_lowercase();
        if !mime.contains('/') {
            return Err(err("no type/subtype"));
        }
        let mut params = Vec::new();
        loop {
            rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ';');
            if rest.is_empty() {
                break;
            }
            let eq = rest.find('=').ok_or_else(|| err("parameter without '='"))?;
            let name = rest[..eq].trim().to_ascii_lowercase();
            rest = rest[eq + 1..].trim_start();
            let val;
            if let Some(q) = rest.strip_prefix('"') {
                let mut out = String::new();
                let mut chars = q.char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, n)) = chars.next() {
                                out.push(n);
                            }
                        }
                        '"' => {
                            end = Some(i);
                            break;
                        }
                        c => out.push(c),
                    }
                }
                let end = end.ok_or_else(|| err("unterminated quoted parameter"))?;
                val = out;
                rest = &q[end + 1..];
            } else {
                let end = rest.find(';').unwrap_or(rest.len());
                val = rest[..end].trim().to_owned();
                rest = &rest[end..];
            }
            params.push((name, val));
        }
        Ok(ContentType { mime, params })
    }

    /// The value of parameter `name` (case-insensitive).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether this is `multipart/related`.
    pub fn is_multipart_related(&self) -> bool {
        self.mime == "multipart/related"
    }

    /// The boundary (1 to 70 characters, RFC 2046 5.1.1).
    pub fn boundary(&self) -> Result<&str, MtomError> {
        let b = self
            .param("boundary")
            .ok_or_else(|| MtomError::ContentType {
                value: self.mime.clone(),
                reason: "no boundary parameter".into(),
            })?;
        if b.is_empty() || b.len() > 70 {
            return Err(MtomError::ContentType {
                value: b.to_owned(),
                reason: "boundary must be 1 to 70 characters".into(),
            });
        }
        Ok(b)
    }

    /// The `start` parameter without angle brackets: the Content-ID of the root part.
    pub fn start(&self) -> Option<&str> {
        self.param("start").map(strip_angle)
    }
}

fn strip_angle(s: &str) -> &str {
    let t = s.trim();
    t.strip_prefix('<')
        .and_then(|x| x.strip_suffix('>'))
        .unwrap_or(t)
}

/// Headers of one MIME part.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartHeaders {
    /// All headers in order, names lower case, values trimmed (folded lines joined).
    pub headers: Vec<(String, String)>,
}

impl PartHeaders {
    /// The first header named `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `Content-ID` without angle brackets.
    pub fn content_id(&self) -> Option<&str> {
        self.get("content-id").map(strip_angle)
    }

    /// `Content-Type` (default `text/plain` per RFC 2045 is left to the caller).
    pub fn content_type(&self) -> Option<&str> {
        self.get("content-type")
    }

    /// Whether `Content-Transfer-Encoding` is base64.
    pub fn is_base64(&self) -> bool {
        self.get("content-transfer-encoding")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("base64"))
    }
}

/// Bounds on what a MIME / MTOM message can make the reader hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtomLimits {
    /// Limits of the XML reader for the root SOAP envelope (its `max_bytes` is raised to
    /// `max_root_bytes` where the root is read).
    pub xml: Limits,
    /// Largest root part (or plain SOAP body) that is buffered, bytes. A root with base64 documents
    /// inline needs room for them.
    pub max_root_bytes: usize,
    /// Largest header block of one part, bytes.
    pub max_header_bytes: usize,
    /// Most parts in one message.
    pub max_parts: usize,
    /// Largest attachment buffered by the non-streaming helpers ([`read_multipart`],
    /// [`read_retrieve_response`]); the streaming reader never buffers attachments.
    pub max_buffered_bytes: usize,
    /// The budget the streaming reader charges a root it buffers to (shared by every request of a
    /// gateway, see [`BufferBudget`]); `None`: only `max_root_bytes` bounds it.
    pub budget: Option<BufferBudget>,
}

impl Default for MtomLimits {
    /// Root 64 MiB, part headers 16 KiB, 100,000 parts, buffered messages 64 MiB, no shared budget.
    fn default() -> Self {
        MtomLimits {
            xml: Limits::default(),
            max_root_bytes: 64 * 1024 * 1024,
            max_header_bytes: 16 * 1024,
            max_parts: 100_000,
            max_buffered_bytes: 64 * 1024 * 1024,
            budget: None,
        }
    }
}

pub use duo_core::config::root_bytes_for_inline;

/// A budget of bytes of peers' answers that the gateway holds in memory at once, shared by every
/// request of a gateway (`server.limits.maxBufferedAnswerBytes`): buffered root parts and plain SOAP
/// answers with their inline base64 documents, and the look-ahead of relayed retrieves.
///
/// Why one budget and not only a per-answer limit: a peer that answers every retrieve with a document
/// at the per-answer limit would otherwise multiply it by the number of requests in flight. Taking
/// never waits ([`BufferBudget::try_take`]): answers that each hold part of the budget and wait for
/// more could block each other until their deadlines; an answer that does not fit is refused at once
/// ([`MtomError::OverBudget`]), which the gateway reports as that community's error.
#[derive(Clone)]
pub struct BufferBudget {
    sem: std::sync::Arc<tokio::sync::Semaphore>,
    total: usize,
}

impl std::fmt::Debug for BufferBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferBudget")
            .field("total", &self.total)
            .field("available", &self.available())
            .finish()
    }
}

impl PartialEq for BufferBudget {
    /// The same budget (not an equal one).
    fn eq(&self, other: &BufferBudget) -> bool {
        std::sync::Arc::ptr_eq(&self.sem, &other.sem)
    }
}

impl Eq for BufferBudget {}

impl BufferBudget {
    /// A budget of `total` bytes (at most `tokio::sync::Semaphore::MAX_PERMITS`).
    pub fn new(total: usize) -> BufferBudget {
        let total = total.min(tokio::sync::Semaphore::MAX_PERMITS);
        BufferBudget {
            sem: std::sync::Arc::new(tokio::sync::Semaphore::new(total)),
            total,
        }
    }

    /// The total, bytes.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes not taken at the moment.
    pub fn available(&self) -> usize {
        self.sem.available_permits()
    }

    /// Takes `n` bytes, or `None` at once when fewer are left. The bytes return to the budget when the
    /// [`BudgetPermit`] is dropped.
    pub fn try_take(&self, n: usize) -> Option<BudgetPermit> {
        if n == 0 {
            return Some(BudgetPermit(None));
        }
        let n = u32::try_from(n).ok()?;
        self.sem
            .clone()
            .try_acquire_many_owned(n)
            .ok()
            .map(|p| BudgetPermit(Some(p)))
    }

    /// [`Self::try_take`] added to `held`; `false` (nothing taken) when fewer than `n` bytes are left.
    pub fn take_into(&self, held: &mut BudgetPermit, n: usize) -> bool {
        match self.try_take(n) {
            Some(p) => {
                held.merge(p);
                true
            }
            None => false,
        }
    }
}

/// Bytes taken from a [`BufferBudget`]; given back when dropped.
#[derive(Debug, Default)]
pub struct BudgetPermit(Option<tokio::sync::OwnedSemaphorePermit>);

impl BudgetPermit {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |p| p.num_permits())
    }

    /// Adds `other`'s bytes to this permit (both must come from the same budget).
    pub fn merge(&mut self, other: BudgetPermit) {
        match (&mut self.0, other.0) {
            (Some(a), Some(b)) => a.merge(b),
            (a @ None, b) => *a = b,
            (Some(_), None) => {}
        }
    }
}

/// One step of a [`Scanner`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanEvent {
    /// A part begins; its headers.
    PartStart(PartHeaders),
    /// Body bytes of the current part (never empty).
    Data(Bytes),
    /// The current part ended.
    PartEnd,
    /// The scanner needs more input ([`Scanner::feed`] or [`Scanner::finish`]).
    NeedMore,
    /// The closing boundary was seen; what follows (the epilogue) is ignored.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Preamble,
    AfterBoundary,
    Headers,
    BodyStart,
    Body,
    Done,
}

/// A push-style `multipart/*` boundary scanner (RFC 2046 5.1) with bounded memory.
///
/// Feed input with [`Scanner::feed`], mark its end with [`Scanner::finish`], and pull events with
/// [`Scanner::next_event`]. A delimiter is recognised after CRLF or a bare LF (captured peers that lost
/// their CRs); the CR before a delimiter is always part of it.
pub struct Scanner {
    buf: BytesMut,
    eof: bool,
    state: State,
    /// `--boundary`.
    dash_boundary: Vec<u8>,
    /// `\n--boundary`.
    delim: memmem::Finder<'static>,
    delim_len: usize,
    max_header_bytes: usize,
    max_parts: usize,
    parts: usize,
    /// Whether preamble bytes were dropped: from then on the buffer no longer starts where the body
    /// does, and a `--boundary` at its start is not at the start of a line.
    preamble_trimmed: bool,
}

impl Scanner {
    /// A scanner for `boundary` (from [`ContentType::boundary`]).
    pub fn new(boundary: &str, limits: &MtomLimits) -> Scanner {
        let dash_boundary = format!("--{boundary}").into_bytes();
        let delim_bytes = format!("\n--{boundary}").into_bytes();
        Scanner {
            buf: BytesMut::with_capacity(8 * 1024),
            eof: false,
            state: State::Preamble,
            delim_len: delim_bytes.len(),
            delim: memmem::Finder::new(&delim_bytes).into_owned(),
            dash_boundary,
            max_header_bytes: limits.max_header_bytes,
            max_parts: limits.max_parts,
            parts: 0,
            preamble_trimmed: false,
        }
    }

    /// Appends input.
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Marks the end of input.
    pub fn finish(&mut self) {
        self.eof = true;
    }

    /// Bytes currently buffered (bounded by the largest input chunk plus a boundary's length, or the
    /// header limit).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether the closing boundary has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// After the closing boundary: the input buffered after it (the start of the epilogue), taken out
    /// of the scanner. Empty before.
    pub fn take_epilogue(&mut self) -> Bytes {
        if self.state != State::Done {
            return Bytes::new();
        }
        self.buf.split().freeze()
    }

    /// The next event. Errors: [`MtomError::Malformed`], [`MtomError::Truncated`],
    /// [`MtomError::HeaderTooLarge`], [`MtomError::TooManyParts`].
    pub fn next_event(&mut self) -> Result<ScanEvent, MtomError> {
        loop {
            match self.state {
                State::Done => return Ok(ScanEvent::Done),
                State::Preamble => {
                    // a delimiter without the line end before it only at the very start of the body
                    // (RFC 2046 5.1.1); once preamble bytes were dropped the buffer starts mid-line
                    if !self.preamble_trimmed && self.buf.starts_with(&self.dash_boundary) {
                        self.buf.advance(self.dash_boundary.len());
                        self.state = State::AfterBoundary;
                        continue;
                    }
                    if let Some(i) = self.delim.find(&self.buf) {
                        self.buf.advance(i + self.delim_len);
                        self.state = State::AfterBoundary;
                        continue;
                    }
                    if self.eof {
                        return Err(MtomError::Malformed(
                            "the boundary given in Content-Type does not occur in the body".into(),
                        ));
                    }
                    // the preamble is ignored; keep only what could be the start of a delimiter
                    if self.buf.len() >= self.delim_len {
                        let drop = self.buf.len() - (self.delim_len - 1);
                        self.buf.advance(drop);
                        self.preamble_trimmed = true;
                    }
                    return Ok(ScanEvent::NeedMore);
                }
                State::AfterBoundary => {
                    if self.buf.len() < 2 {
                        if self.eof {
                            return Err(MtomError::Truncated);
                        }
                        return Ok(ScanEvent::NeedMore);
                    }
                    if self.buf.starts_with(b"--") {
                        self.buf.advance(2);
                        self.state = State::Done;
                        continue;
                    }
                    // transport padding (RFC 2046 5.1.1), then the line end
                    let pad = self
                        .buf
                        .iter()
                        .position(|b| *b != b' ' && *b != b'\t')
                        .unwrap_or(self.buf.len());
                    let rest = &self.buf[pad..];
                    let eol = if rest.starts_with(b"\r\n") {
                        2
                    } else if rest.starts_with(b"\n") {
                        1
                    } else if rest.is_empty() || rest == b"\r" {
                        if self.eof {
                            return Err(MtomError::Truncated);
                        }
                        if pad > self.max_header_bytes {
                            return Err(MtomError::HeaderTooLarge(self.max_header_bytes));
                        }
                        return Ok(ScanEvent::NeedMore);
                    } else {
                        return Err(MtomError::Malformed(
                            "unexpected text after a boundary delimiter".into(),
                        ));
                    };
                    self.buf.advance(pad + eol);
                    self.parts += 1;
                    if self.parts > self.max_parts {
                        return Err(MtomError::TooManyParts(self.max_parts));
                    }
                    self.state = State::Headers;
                }
                State::Headers => match self.take_headers()? {
                    Some(h) => {
                        self.state = State::BodyStart;
                        return Ok(ScanEvent::PartStart(h));
                    }
                    None => return Ok(ScanEvent::NeedMore),
                },
                State::BodyStart => {
                    // a sloppy empty part: the boundary right after the blank line
                    if self.buf.len() < self.dash_boundary.len() && !self.eof {
                        if self.dash_boundary.starts_with(&self.buf) {
                            return Ok(ScanEvent::NeedMore);
                        }
                    } else if self.buf.starts_with(&self.dash_boundary) {
                        self.buf.advance(self.dash_boundary.len());
                        self.state = State::AfterBoundary;
                        return Ok(ScanEvent::PartEnd);
                    }
                    self.state = State::Body;
                }
                State::Body => {
                    if let Some(i) = self.delim.find(&self.buf) {
                        let end = if i > 0 && self.buf[i - 1] == b'\r' {
                            i - 1
                        } else {
                            i
                        };
                        if end > 0 {
                            return Ok(ScanEvent::Data(self.buf.split_to(end).freeze()));
                        }
                        self.buf.advance(i + self.delim_len);
                        self.state = State::AfterBoundary;
                        return Ok(ScanEvent::PartEnd);
                    }
                    if self.eof {
                        return Err(MtomError::Truncated);
                    }
                    // keep what may be a CR plus the start of a delimiter
                    if self.buf.len() > self.delim_len {
                        let n = self.buf.len() - self.delim_len;
                        return Ok(ScanEvent::Data(self.buf.split_to(n).freeze()));
                    }
                    return Ok(ScanEvent::NeedMore);
                }
            }
        }
    }

    /// Parses a complete header block at the start of the buffer, or `None` when more input is needed.
    fn take_headers(&mut self) -> Result<Option<PartHeaders>, MtomError> {
        let mut lines: Vec<(usize, usize)> = Vec::new();
        let mut pos = 0;
        let end = loop {
            let Some(nl) = memchr::memchr(b'\n', &self.buf[pos..]) else {
                if self.buf.len() > self.max_header_bytes {
                    return Err(MtomError::HeaderTooLarge(self.max_header_bytes));
                }
                if self.eof {
                    return Err(MtomError::Truncated);
                }
                return Ok(None);
            };
            let line_end = pos + nl;
            if line_end > self.max_header_bytes {
                return Err(MtomError::HeaderTooLarge(self.max_header_bytes));
            }
            let line = &self.buf[pos..line_end];
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                break line_end + 1;
            }
            lines.push((pos, line_end));
            pos = line_end + 1;
        };
        let mut h = PartHeaders::default();
        for (s, e) in lines {
            let raw = &self.buf[s..e];
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            // RFC 5322 2.2: no control characters but HTAB; field names printable ASCII without ':'.
            // Strict on purpose: bytes of a document after a boundary string inside it are what a
            // lenient reader would take for headers (and then for the start of a valid part)
            if raw.iter().any(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f) {
                return Err(MtomError::Malformed(
                    "part header line with a control character".into(),
                ));
            }
            let line = String::from_utf8_lossy(raw);
            let line = line.trim_end();
            if line.starts_with([' ', '\t']) {
                // folded continuation of the previous header (RFC 5322 2.2.3)
                if let Some(last) = h.headers.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
                continue;
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(MtomError::Malformed(format!(
                    "part header line without ':': {}",
                    super::soap::echoed(line)
                )));
            };
            if name.is_empty() || name.bytes().any(|b| !(33..=126).contains(&b)) {
                return Err(MtomError::Malformed(format!(
                    "part header name {:?} is not printable ASCII",
                    super::soap::echoed(name)
                )));
            }
            h.headers
                .push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        self.buf.advance(end);
        Ok(Some(h))
    }
}

/// Streaming decoder for a part with `Content-Transfer-Encoding: base64`: whitespace ignored, a
/// partial quantum carried to the next chunk.
#[derive(Default)]
struct Base64Stream {
    carry: Vec<u8>,
}

impl Base64Stream {
    fn push(&mut self, data: &[u8]) -> Result<Bytes, MtomError> {
        self.carry
            .extend(data.iter().copied().filter(|b| !b.is_ascii_whitespace()));
        let n = self.carry.len() / 4 * 4;
        let out = base64::engine::general_purpose::STANDARD
            .decode(&self.carry[..n])
            .map_err(|e| MtomError::Base64(e.to_string()))?;
        self.carry.drain(..n);
        Ok(Bytes::from(out))
    }

    fn finish(&mut self) -> Result<Bytes, MtomError> {
        if self.carry.is_empty() {
            return Ok(Bytes::new());
        }
        let rest = std::mem::take(&mut self.carry);
        super::retrieve::decode_base64(&String::from_utf8_lossy(&rest))
            .map(Bytes::from)
            .map_err(|e| MtomError::Base64(e.to_string()))
    }
}

type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, BoxError>> + Send>>;

fn boxed_body<S, E>(body: S) -> BodyStream
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<BoxError>,
{
    Box::pin(body.map(|r| r.map_err(Into::into)))
}

/// An async `multipart/related` reader over a byte stream: parts one by one, each body as chunks.
/// Memory stays within one input chunk plus a boundary (and the header limit).
pub struct MultipartReader {
    body: BodyStream,
    scanner: Scanner,
    in_part: bool,
    done: bool,
    pending_end: bool,
    b64: Option<Base64Stream>,
}

impl MultipartReader {
    /// A reader for `body` with the boundary of `content_type`.
    pub fn new<S, E>(
        content_type: &ContentType,
        body: S,
        limits: &MtomLimits,
    ) -> Result<MultipartReader, MtomError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let boundary = content_type.boundary()?;
        Ok(MultipartReader {
            body: boxed_body(body),
            scanner: Scanner::new(boundary, limits),
            in_part: false,
            done: false,
            pending_end: false,
            b64: None,
        })
    }

    async fn pull(&mut self) -> Result<(), MtomError> {
        match self.body.next().await {
            Some(Ok(b)) => self.scanner.feed(&b),
            Some(Err(e)) => return Err(MtomError::Body(e.to_string())),
            None => self.scanner.finish(),
        }
        Ok(())
    }

    async fn event(&mut self) -> Result<ScanEvent, MtomError> {
        loop {
            match self.scanner.next_event()? {
                ScanEvent::NeedMore => self.pull().await?,
                ev => return Ok(ev),
            }
        }
    }

    /// The next part's headers, skipping what is left of the current part; `None` after the closing
    /// boundary.
    pub async fn next_part(&mut self) -> Result<Option<PartHeaders>, MtomError> {
        while self.in_part {
            self.chunk().await?;
        }
        if self.done {
            return Ok(None);
        }
        match self.event().await? {
            ScanEvent::PartStart(h) => {
                self.in_part = true;
                self.b64 = h.is_base64().then(Base64Stream::default);
                Ok(Some(h))
            }
            ScanEvent::Done => {
                self.done = true;
                Ok(None)
            }
            other => Err(MtomError::Malformed(format!(
                "expected a part, scanner gave {other:?}"
            ))),
        }
    }

    /// The next chunk of the current part's body (decoded when the part is base64), `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, MtomError> {
        loop {
            if !self.in_part {
                return Ok(None);
            }
            if self.pending_end {
                self.pending_end = false;
                self.in_part = false;
                return Ok(None);
            }
            match self.event().await? {
                ScanEvent::Data(d) => match &mut self.b64 {
                    None => return Ok(Some(d)),
                    Some(dec) => {
                        let out = dec.push(&d)?;
                        if !out.is_empty() {
                            return Ok(Some(out));
                        }
                    }
                },
                ScanEvent::PartEnd => {
                    if let Some(mut dec) = self.b64.take() {
                        let out = dec.finish()?;
                        if !out.is_empty() {
                            self.pending_end = true;
                            return Ok(Some(out));
                        }
                    }
                    self.in_part = false;
                    return Ok(None);
                }
                other => {
                    return Err(MtomError::Malformed(format!(
                        "expected part data, scanner gave {other:?}"
                    )));
                }
            }
        }
    }

    /// The rest of the current part collected, up to `max` bytes ([`MtomError::TooLarge`] beyond).
    pub async fn collect_part(&mut self, max: usize) -> Result<Bytes, MtomError> {
        self.collect_part_within(max, None).await.map(|(b, _)| b)
    }

    /// [`Self::collect_part`], every byte also taken from `budget` when given ([`MtomError::OverBudget`]
    /// when it runs out); the bytes taken come back with the part.
    pub async fn collect_part_within(
        &mut self,
        max: usize,
        budget: Option<&BufferBudget>,
    ) -> Result<(Bytes, BudgetPermit), MtomError> {
        let mut out = Vec::new();
        let mut held = BudgetPermit::default();
        while let Some(c) = self.chunk().await? {
            if out.len() + c.len() > max {
                return Err(MtomError::TooLarge { limit: max as u64 });
            }
            if let Err(b) = append_charged(&mut out, &c, max, budget, &mut held) {
                return Err(MtomError::OverBudget {
                    budget: b.total() as u64,
                });
            }
        }
        Ok((Bytes::from(out), held))
    }

    /// Skips the rest of the current part without decoding it (after its base64 failed to decode, the
    /// framing around it can still be read). Errors: framing ([`MtomError::Malformed`],
    /// [`MtomError::Truncated`], ...).
    pub async fn skip_part(&mut self) -> Result<(), MtomError> {
        self.b64 = None;
        self.pending_end = false;
        while self.in_part {
            match self.event().await? {
                ScanEvent::Data(_) => {}
                ScanEvent::PartEnd => self.in_part = false,
                other => {
                    return Err(MtomError::Malformed(format!(
                        "expected part data, scanner gave {other:?}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// After the closing boundary: reads the rest of the body (the epilogue) and checks that it is
    /// blank (white space only) and at most `max` bytes. RFC 2046 lets a reader ignore an epilogue;
    /// a relay must not: text after a closing delimiter is what a boundary inside a document's bytes
    /// followed by `--` leaves, and the part before it was then cut short. Errors:
    /// [`MtomError::Malformed`]; [`MtomError::Body`] when the body stream fails.
    pub async fn finish_epilogue(&mut self, max: usize) -> Result<(), MtomError> {
        if !self.done {
            return Err(MtomError::Malformed(
                "the epilogue was asked for before the closing boundary".into(),
            ));
        }
        let mut seen = 0usize;
        let mut check = |b: &[u8]| -> Result<(), MtomError> {
            seen += b.len();
            if seen > max {
                return Err(MtomError::Malformed(format!(
                    "more than {max} bytes after the closing boundary"
                )));
            }
            if b.iter().any(|c| !c.is_ascii_whitespace()) {
                return Err(MtomError::Malformed(
                    "data after the closing boundary (a boundary inside a part's bytes?)".into(),
                ));
            }
            Ok(())
        };
        check(&self.scanner.take_epilogue())?;
        while let Some(c) = self.body.next().await {
            let c = c.map_err(|e| MtomError::Body(e.to_string()))?;
            check(&c)?;
        }
        Ok(())
    }
}

/// One MIME part of a buffered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MimePart {
    /// Headers.
    pub headers: PartHeaders,
    /// Body (decoded when base64).
    pub body: Bytes,
}

/// Reads a whole buffered `multipart/related` body into its parts (for requests and small messages;
/// each part at most `limits.max_buffered_bytes`).
pub fn read_multipart(
    content_type: &ContentType,
    body: &[u8],
    limits: &MtomLimits,
) -> Result<Vec<MimePart>, MtomError> {
    let mut sc = Scanner::new(content_type.boundary()?, limits);
    sc.feed(body);
    sc.finish();
    let mut parts: Vec<MimePart> = Vec::new();
    let mut cur: Option<(PartHeaders, BytesMut)> = None;
    loop {
        match sc.next_event()? {
            ScanEvent::PartStart(h) => cur = Some((h, BytesMut::new())),
            ScanEvent::Data(d) => {
                if let Some((_, b)) = &mut cur {
                    if b.len() + d.len() > limits.max_buffered_bytes {
                        return Err(MtomError::TooLarge {
                            limit: limits.max_buffered_bytes as u64,
                        });
                    }
                    b.extend_from_slice(&d);
                }
            }
            ScanEvent::PartEnd => {
                if let Some((h, b)) = cur.take() {
                    let body = if h.is_base64() {
                        let mut dec = Base64Stream::default();
                        let mut v = BytesMut::from(&dec.push(&b)?[..]);
                        v.extend_from_slice(&dec.finish()?);
                        v.freeze()
                    } else {
                        b.freeze()
                    };
                    parts.push(MimePart { headers: h, body });
                }
            }
            ScanEvent::Done => return Ok(parts),
            ScanEvent::NeedMore => return Err(MtomError::Truncated),
        }
    }
}

/// The SOAP envelope of an HTTP body: the body itself for `application/soap+xml` (or any non-multipart
/// type), the root part for `multipart/related` (the part named by `start`, else the first), plus the
/// other parts. For requests, which IHE peers send as plain SOAP or as MTOM (ITI TF-2 V.3.6).
pub fn soap_envelope(
    content_type: &str,
    body: Bytes,
    limits: &MtomLimits,
) -> Result<(Bytes, Vec<MimePart>), MtomError> {
    let ct = ContentType::parse(content_type)?;
    if !ct.mime.starts_with("multipart/") {
        return Ok((body, Vec::new()));
    }
    let mut parts = read_multipart(&ct, &body, limits)?;
    if parts.is_empty() {
        return Err(MtomError::Malformed("multipart body without parts".into()));
    }
    let idx = ct
        .start()
        .and_then(|s| parts.iter().position(|p| p.headers.content_id() == Some(s)))
        .unwrap_or(0);
    let root = parts.remove(idx);
    Ok((root.body, parts))
}

/// Refuses a declared body size above `limit` before anything is read (hostile input: a peer announcing
/// 1 GiB gets its error at once).
pub fn check_declared_length(content_length: Option<u64>, limit: u64) -> Result<(), MtomError> {
    match content_length {
        Some(n) if n > limit => Err(MtomError::DeclaredTooLarge { declared: n, limit }),
        _ => Ok(()),
    }
}

/// Collects a request body of at most `limit` bytes: refused up front when `content_length` says more,
/// and as soon as the stream delivers more.
pub async fn collect_body<S, E>(
    content_length: Option<u64>,
    body: S,
    limit: usize,
) -> Result<Bytes, MtomError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<BoxError>,
{
    collect_body_within(content_length, body, limit, None)
        .await
        .map(|(b, _)| b)
}

/// [`collect_body`], every byte also taken from `budget` when given, chunk by chunk as it arrives
/// ([`MtomError::OverBudget`] when the budget runs out; at once when a declared length is more than the
/// budget has left). The bytes taken come back with the body.
pub async fn collect_body_within<S, E>(
    content_length: Option<u64>,
    body: S,
    limit: usize,
    budget: Option<&BufferBudget>,
) -> Result<(Bytes, BudgetPermit), MtomError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<BoxError>,
{
    check_declared_length(content_length, limit as u64)?;
    let over = |b: &BufferBudget| MtomError::OverBudget {
        budget: b.total() as u64,
    };
    let mut held = BudgetPermit::default();
    let mut out = Vec::new();
    // A declared length that cannot fit is refused before anything is read. Nothing is taken for it
    // up front: a peer that declares a large answer and then stalls would hold that part of the shared
    // budget, and so block other communities' answers, until its deadline. Bytes are charged as they
    // arrive (and allocated no faster than twofold, see append_charged).
    if let (Some(n), Some(b)) = (content_length, budget)
        && n > b.available() as u64
    {
        return Err(over(b));
    }
    let mut body = boxed_body(body);
    while let Some(c) = body.next().await {
        let c = c.map_err(|e| MtomError::Body(e.to_string()))?;
        if out.len() + c.len() > limit {
            return Err(MtomError::TooLarge {
                limit: limit as u64,
            });
        }
        append_charged(&mut out, &c, limit, budget, &mut held).map_err(over)?;
    }
    Ok((Bytes::from(out), held))
}

/// Appends `c` to `out`, growing its allocation at most twofold and never beyond `limit` (nor beyond
/// what the content needs when the budget is short), with every byte of the allocation, not only of
/// the content, taken from `budget` when given: an answer held while it is read costs the gateway its
/// capacity (a vector grown by doubling holds up to twice its content). `Err(budget)` when the budget
/// cannot cover the content.
fn append_charged<'b>(
    out: &mut Vec<u8>,
    c: &[u8],
    limit: usize,
    budget: Option<&'b BufferBudget>,
    held: &mut BudgetPermit,
) -> Result<(), &'b BufferBudget> {
    let need = out.len() + c.len();
    if need > out.capacity() {
        let mut cap = out.capacity().saturating_mul(2).min(limit).max(need);
        if let Some(b) = budget {
            let more = cap.saturating_sub(held.bytes());
            if more > 0 && !b.take_into(held, more) {
                cap = need;
                let exact = need.saturating_sub(held.bytes());
                if exact > 0 && !b.take_into(held, exact) {
                    return Err(b);
                }
            }
        }
        out.reserve_exact(cap - out.len());
    }
    out.extend_from_slice(c);
    Ok(())
}

/// Reads a whole buffered retrieve response (MTOM, plain SOAP or base64 inside MTOM) with every
/// `xop:Include` resolved to [`Content::Inline`]. For small responses and tests; relays use
/// [`RetrieveResponseReader`].
pub fn read_retrieve_response(
    content_type: &str,
    body: Bytes,
    limits: &MtomLimits,
) -> Result<(SoapHeader, RetrieveDocumentSetResponse), MtomError> {
    let (root, parts) = soap_envelope(content_type, body, limits)?;
    let (header, mut resp) = parse_root(&root, limits)?;
    for d in &mut resp.documents {
        if let Content::Include(cid) = &d.content {
            let p = parts
                .iter()
                .find(|p| p.headers.content_id() == Some(cid.as_str()))
                .ok_or_else(|| MtomError::MissingPart(cid.clone()))?;
            d.content = Content::Inline(p.body.clone());
        }
    }
    Ok((header, resp))
}

fn parse_root(
    root: &[u8],
    limits: &MtomLimits,
) -> Result<(SoapHeader, RetrieveDocumentSetResponse), MtomError> {
    let xml = Limits {
        max_bytes: limits.max_root_bytes.max(limits.xml.max_bytes),
        ..limits.xml.clone()
    };
    let (h, resp) = soap::read_envelope(root, &xml, |r: &mut Reader<'_>, el| {
        if !el.is(ns::XDSB, "RetrieveDocumentSetResponse") {
            return Err(XmlError::Unexpected {
                expected: format!("{{{}}}RetrieveDocumentSetResponse", ns::XDSB),
                found: el.qualified(),
            });
        }
        read_response_body(r, &el)
    })?;
    Ok((h, resp))
}

/// One item of a streamed retrieve response, as [`RetrieveResponseReader::into_items`] yields them and
/// [`RetrieveResponseWriter::into_body`] consumes them: `Document(i)`, its `Chunk`s, `End`, next
/// document ...
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetrieveItem {
    /// The content of document `i` (an index into the response's document list) begins.
    Document(usize),
    /// Bytes of the current document.
    Chunk(Bytes),
    /// The current document is complete.
    End,
    /// Document `i` cannot be delivered (whole, or the rest of it when it is the current one), with
    /// the reason. Ends the current document when it is `i`; may also name a document not started.
    Failed(usize, String),
}

/// Streaming reader of a retrieve response (ITI-39 / ITI-43 / RAD-69 / RAD-75; RAD TF-3 4.69.4.2).
///
/// [`RetrieveResponseReader::open`] reads the SOAP root (buffered up to `max_root_bytes`, charged to
/// the limits' [`BufferBudget`] when there is one) and knows the RegistryResponse and every
/// DocumentResponse. Then either:
///
/// * strictly, [`RetrieveResponseReader::next_document`] yields documents in wire order (inline base64
///   ones first) and [`RetrieveResponseReader::chunk`] their content; the first problem is an error
///   (a named part that never arrives is [`MtomError::MissingPart`]); or
/// * for a relay, [`RetrieveResponseReader::into_items`] yields [`RetrieveItem`]s and turns every
///   problem into [`RetrieveItem::Failed`] for the documents it concerns, so that the documents before
///   it are still delivered (see there).
///
/// MTOM attachments are never buffered; parts no `xop:Include` names are skipped. Limitation: the root
/// must be the first part (as XOP 1.0 and every known peer have it).
pub struct RetrieveResponseReader {
    header: SoapHeader,
    response: RegistryResponse,
    documents: Vec<DocumentResponseMeta>,
    inline: VecDeque<(usize, Bytes)>,
    by_cid: HashMap<String, usize>,
    /// Documents that cannot get content whatever follows (decided from the root), with the reason.
    unresolvable: VecDeque<(usize, String)>,
    delivered: Vec<bool>,
    mp: Option<MultipartReader>,
    pending: Option<Bytes>,
    in_part: bool,
    /// The buffered root's bytes, given back to the budget when the reader is dropped (the inline
    /// documents decoded from it live as long).
    _held: BudgetPermit,
}

/// Largest epilogue (bytes after the closing boundary) a relay reads; it must be blank.
const MAX_EPILOGUE: usize = 64 * 1024;

impl RetrieveResponseReader {
    /// Opens a response body with its `Content-Type` and (when known) `Content-Length`. A plain SOAP
    /// body is buffered up to `max_root_bytes` (refused up front when `content_length` says more).
    ///
    /// Errors: [`MtomError`] for framing, size and transport problems ([`MtomError::OverBudget`] when
    /// the root does not fit the limits' budget); [`MtomError::Soap`] with [`SoapError::Fault`] when
    /// the peer answered with a SOAP fault. Problems of single documents (an `xop:Include` naming no
    /// part, two naming the same part) are not errors here: they surface when the document is read.
    pub async fn open<S, E>(
        content_type: &str,
        content_length: Option<u64>,
        body: S,
        limits: &MtomLimits,
    ) -> Result<RetrieveResponseReader, MtomError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let ct = ContentType::parse(content_type)?;
        let budget = limits.budget.as_ref();
        let (root, held, mp) = if ct.mime.starts_with("multipart/") {
            let mut mp = MultipartReader::new(&ct, body, limits)?;
            let first = mp
                .next_part()
                .await?
                .ok_or_else(|| MtomError::Malformed("multipart body without parts".into()))?;
            if let (Some(start), Some(id)) = (ct.start(), first.content_id())
                && start != id
            {
                return Err(MtomError::Malformed(format!(
                    "the root part <{start}> is not the first part (found <{id}>)"
                )));
            }
            let (root, held) = mp
                .collect_part_within(limits.max_root_bytes, budget)
                .await?;
            (root, held, Some(mp))
        } else {
            let (root, held) =
                collect_body_within(content_length, body, limits.max_root_bytes, budget).await?;
            (root, held, None)
        };
        let (header, resp) = parse_root(&root, limits)?;
        drop(root);
        let n = resp.documents.len();
        let mut documents = Vec::with_capacity(n);
        let mut inline = VecDeque::new();
        let mut by_cid = HashMap::new();
        let mut unresolvable = VecDeque::new();
        for (i, d) in resp.documents.into_iter().enumerate() {
            match d.content {
                Content::Inline(b) => inline.push_back((i, b)),
                Content::Include(cid) if mp.is_none() => unresolvable.push_back((
                    i,
                    format!("xop:Include names cid:{cid}, but the answer has no MIME parts"),
                )),
                Content::Include(cid) if cid.trim().is_empty() => unresolvable.push_back((
                    i,
                    "xop:Include names no MIME part (its href is no cid: URL)".into(),
                )),
                Content::Include(cid) => match by_cid.entry(cid) {
                    std::collections::hash_map::Entry::Occupied(e) => unresolvable.push_back((
                        i,
                        format!(
                            "xop:Include names cid:{}, the part of another document",
                            e.key()
                        ),
                    )),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(i);
                    }
                },
            }
            documents.push(d.meta);
        }
        Ok(RetrieveResponseReader {
            header,
            response: resp.response,
            documents,
            inline,
            by_cid,
            unresolvable,
            delivered: vec![false; n],
            mp,
            pending: None,
            in_part: false,
            _held: held,
        })
    }

    /// The SOAP header of the response (Action, RelatesTo ...).
    pub fn header(&self) -> &SoapHeader {
        &self.header
    }

    /// Status and errors (`rs:RegistryResponse`).
    pub fn registry_response(&self) -> &RegistryResponse {
        &self.response
    }

    /// Every DocumentResponse of the root, in root order; indices of [`RetrieveResponseReader::next_document`]
    /// point here.
    pub fn documents(&self) -> &[DocumentResponseMeta] {
        &self.documents
    }

    fn missing(&self) -> Option<MtomError> {
        if let Some((i, _)) = self.unresolvable.front() {
            return Some(MtomError::MissingPart(format!(
                "(document {})",
                self.documents[*i].document_unique_id
            )));
        }
        self.by_cid
            .iter()
            .find(|(_, i)| !self.delivered[**i])
            .map(|(cid, _)| MtomError::MissingPart(cid.clone()))
    }

    /// Moves to the next document whose content is available (the rest of the current one is skipped);
    /// `None` when all are through. Errors with [`MtomError::MissingPart`] when the message ends with a
    /// named part missing (or a document's `xop:Include` can name no part), and with the first framing
    /// or transport error.
    pub async fn next_document(&mut self) -> Result<Option<usize>, MtomError> {
        self.pending = None;
        if self.in_part {
            if let Some(mp) = &mut self.mp {
                while mp.chunk().await?.is_some() {}
            }
            self.in_part = false;
        }
        if let Some((i, b)) = self.inline.pop_front() {
            self.delivered[i] = true;
            self.pending = Some(b);
            return Ok(Some(i));
        }
        let Some(mp) = &mut self.mp else {
            return match self.missing() {
                Some(e) => Err(e),
                None => Ok(None),
            };
        };
        loop {
            let Some(h) = mp.next_part().await? else {
                return match self.missing() {
                    Some(e) => Err(e),
                    None => Ok(None),
                };
            };
            let Some(&i) = h.content_id().and_then(|c| self.by_cid.get(c)) else {
                continue; // a part nothing refers to
            };
            if self.delivered[i] {
                continue; // a repeated part: the first one counts
            }
            self.delivered[i] = true;
            self.in_part = true;
            return Ok(Some(i));
        }
    }

    /// The next chunk of the current document, `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, MtomError> {
        if let Some(b) = self.pending.take() {
            if b.is_empty() {
                return Ok(None);
            }
            return Ok(Some(b));
        }
        if !self.in_part {
            return Ok(None);
        }
        let Some(mp) = &mut self.mp else {
            return Ok(None);
        };
        match mp.chunk().await? {
            Some(b) => Ok(Some(b)),
            None => {
                self.in_part = false;
                Ok(None)
            }
        }
    }

    /// The documents as a flat stream of [`RetrieveItem`]s, for a relay
    /// ([`RetrieveResponseWriter::into_body`]). The stream never ends with an error: every problem
    /// becomes [`RetrieveItem::Failed`] for the documents it concerns, and the documents before it are
    /// delivered.
    ///
    /// * A document whose `xop:Include` can name no part (no MIME parts at all, an empty cid, a part
    ///   already named by another document) fails at once.
    /// * A part declared base64 whose content does not decode fails its document; the parts after it
    ///   are read on.
    /// * A document's [`RetrieveItem::End`] is held back until what follows its part has been read as
    ///   valid framing: the next part's header block, or the closing boundary followed by a blank
    ///   epilogue and the end of the body. Only then is the part known to be whole: a boundary string
    ///   inside a document's bytes ends its part early, and the text after it is no valid part header
    ///   (or it is a closing boundary with the rest of the message after it).
    /// * Broken framing (no closing boundary, a part cut short, part headers missing or too large, the
    ///   body stream failing) fails the document being read or held and every document not started.
    /// * At the closing boundary every document whose part never came fails.
    pub fn into_items(self) -> impl Stream<Item = Result<RetrieveItem, MtomError>> + Send {
        let st = Relay {
            queue: VecDeque::new(),
            open: None,
            ended: None,
            finished: false,
            r: self,
        };
        futures::stream::unfold(st, |mut st| async move {
            let item = st.next_item().await?;
            Some((Ok(item), st))
        })
    }
}

/// The state of [`RetrieveResponseReader::into_items`].
struct Relay {
    r: RetrieveResponseReader,
    /// Items decided, to be handed out first.
    queue: VecDeque<RetrieveItem>,
    /// The document whose part is being read.
    open: Option<usize>,
    /// The document whose part ended; its `End` waits for the framing after it.
    ended: Option<usize>,
    finished: bool,
}

impl Relay {
    /// Fails the open and the held document and every document not started, and stops reading (the
    /// body is dropped, which closes the peer's connection).
    fn fail_rest(&mut self, reason: &str) {
        for i in [self.open.take(), self.ended.take()].into_iter().flatten() {
            self.queue.push_back(RetrieveItem::Failed(
                i,
                format!("its part could not be read whole: {reason}"),
            ));
        }
        while let Some((i, why)) = self.r.unresolvable.pop_front() {
            self.queue.push_back(RetrieveItem::Failed(i, why));
        }
        let mut rest: Vec<usize> = self
            .r
            .by_cid
            .values()
            .copied()
            .filter(|i| !self.r.delivered[*i])
            .collect();
        rest.sort_unstable();
        for i in rest {
            self.r.delivered[i] = true;
            self.queue.push_back(RetrieveItem::Failed(
                i,
                format!("the answer broke off before its part: {reason}"),
            ));
        }
        self.r.mp = None;
        self.finished = true;
    }

    /// Every document whose part never came fails (the message is through).
    fn fail_missing(&mut self) {
        while let Some((i, why)) = self.r.unresolvable.pop_front() {
            self.queue.push_back(RetrieveItem::Failed(i, why));
        }
        let mut rest: Vec<(usize, String)> = self
            .r
            .by_cid
            .iter()
            .filter(|(_, i)| !self.r.delivered[**i])
            .map(|(c, i)| (*i, c.clone()))
            .collect();
        rest.sort_unstable();
        for (i, cid) in rest {
            self.r.delivered[i] = true;
            self.queue.push_back(RetrieveItem::Failed(
                i,
                format!("xop:Include names cid:{cid}, which is not in the answer"),
            ));
        }
        self.r.mp = None;
        self.finished = true;
    }

    async fn next_item(&mut self) -> Option<RetrieveItem> {
        loop {
            if let Some(it) = self.queue.pop_front() {
                return Some(it);
            }
            if self.finished {
                return None;
            }
            if let Some((i, why)) = self.r.unresolvable.pop_front() {
                return Some(RetrieveItem::Failed(i, why));
            }
            if let Some((i, b)) = self.r.inline.pop_front() {
                self.r.delivered[i] = true;
                if !b.is_empty() {
                    self.queue.push_back(RetrieveItem::Chunk(b));
                }
                self.queue.push_back(RetrieveItem::End);
                return Some(RetrieveItem::Document(i));
            }
            let Some(mp) = self.r.mp.as_mut() else {
                self.fail_missing();
                continue;
            };
            if let Some(i) = self.open {
                match mp.chunk().await {
                    Ok(Some(b)) => return Some(RetrieveItem::Chunk(b)),
                    Ok(None) => {
                        self.open = None;
                        self.ended = Some(i);
                    }
                    Err(e @ MtomError::Base64(_)) => {
                        // the content is bad, the framing around it may still be good
                        self.open = None;
                        self.queue.push_back(RetrieveItem::Failed(
                            i,
                            format!("its part does not decode: {e}"),
                        ));
                        if let Err(e) = mp.skip_part().await {
                            self.fail_rest(&e.to_string());
                        }
                    }
                    Err(e) => self.fail_rest(&e.to_string()),
                }
                continue;
            }
            match mp.next_part().await {
                Err(e) => self.fail_rest(&e.to_string()),
                Ok(None) => match mp.finish_epilogue(MAX_EPILOGUE).await {
                    Err(e) => self.fail_rest(&e.to_string()),
                    Ok(()) => {
                        if self.ended.take().is_some() {
                            self.queue.push_back(RetrieveItem::End);
                        }
                        self.fail_missing();
                    }
                },
                Ok(Some(h)) => {
                    if self.ended.take().is_some() {
                        self.queue.push_back(RetrieveItem::End);
                    }
                    let found = h
                        .content_id()
                        .filter(|c| !c.trim().is_empty())
                        .and_then(|c| self.r.by_cid.get(c))
                        .copied()
                        .filter(|i| !self.r.delivered[*i]);
                    // a part nothing refers to, or a repeated one (the first counts): skipped
                    if let Some(i) = found {
                        self.r.delivered[i] = true;
                        self.open = Some(i);
                        self.queue.push_back(RetrieveItem::Document(i));
                    }
                }
            }
        }
    }
}

/// Writes a retrieve response as MTOM (`multipart/related; type="application/xop+xml"`,
/// ITI TF-2 V.3.6; RAD TF-3 4.69.4.2.2: one part per instance), streaming.
///
/// The root part lists every DocumentResponse with an `xop:Include` to its part, so all document
/// metadata is needed up front; the contents then flow through [`RetrieveResponseWriter::into_body`]
/// chunk by chunk, in any order, without being buffered.
///
/// **A document that fails after the root was sent.** The root (status, errors, the list of
/// documents) leaves first and cannot be taken back, so a relay decides as much as it can before the
/// first byte (`RetrieveStream::look_ahead` in the gateway). What fails later is handled so that the
/// message stays well formed and says what happened:
///
/// * the failed document's part is ended where its bytes stopped (a document that never started gets
///   an empty part), so every `xop:Include` of the root still names a part of the message;
/// * after the last document part comes one more part, the **final status**: an `rs:RegistryResponse`
///   XML document (`Content-Type: application/xml`, `Content-ID: <status.…@duo.invalid>`, header
///   `Content-Description: final-status`) with the status the answer really has (PartialSuccess or
///   Failure, ITI TF-2b 3.43.4.2.3) and every error: those of the root and one XDSRepositoryError per
///   document that was not delivered whole, located at its DocumentUniqueId. No `xop:Include` names it,
///   so consumers that do not know it skip it (XOP 1.0 §3); a consumer that does must treat the
///   documents it names as not delivered;
/// * then the closing boundary, as always.
///
/// Without a failure after the root no such part is written: the answer is the plain IHE one.
pub struct RetrieveResponseWriter {
    boundary: String,
    root_cid: String,
    status_cid: String,
    action: String,
    cids: Vec<String>,
    mime_types: Vec<String>,
    document_ids: Vec<String>,
    response: RegistryResponse,
    root: Bytes,
}

/// `s` without what would end a header line or a quoted-string (RFC 2045 §5.1): control characters,
/// `"` and `\`. A peer's `mimeType` or Action is placed into headers and quoted parameters; one carrying
/// these would make the relayed message one the next hop cannot read (found by fuzzing).
fn mime_header_safe(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
        .collect()
}

/// What a [`RetrieveResponseWriter`] sent, known when its last document part is written: for the audit
/// record of the answer ([`FinishHook`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenReport {
    /// Indices (into the writer's documents) of the documents delivered whole, in the order written.
    pub delivered: Vec<usize>,
    /// Indices of the documents not delivered whole, with the reason.
    pub failed: Vec<(usize, String)>,
    /// The answer's final status and errors (the root's, plus one per failed document): what the
    /// final-status part says when there is one, else what the root said.
    pub response: RegistryResponse,
}

/// Called by [`RetrieveResponseWriter::into_body`] with the [`WrittenReport`] after the last document
/// part and before the closing boundary; an `Err` (the audit record could not be written) leaves the
/// message without its closing boundary, so no consumer can take it for a complete answer.
pub type FinishHook = Box<
    dyn FnOnce(WrittenReport) -> futures::future::BoxFuture<'static, Result<(), String>> + Send,
>;

impl RetrieveResponseWriter {
    /// A writer for a response with these headers, status/errors and documents (in root order).
    pub fn new(
        header: &SoapHeader,
        response: &RegistryResponse,
        documents: &[DocumentResponseMeta],
    ) -> RetrieveResponseWriter {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let boundary = format!("MIMEBoundary_duo_{tag}");
        let root_cid = format!("root.{tag}@duo.invalid");
        let status_cid = format!("status.{tag}@duo.invalid");
        let cids: Vec<String> = (0..documents.len())
            .map(|i| format!("{i}.urn:uuid:{tag}@duo.invalid"))
            .collect();
        let xml = soap::write_envelope(header, |w| {
            write_response_start(w, response);
            for (d, cid) in documents.iter().zip(&cids) {
                write_document_response(w, d, &Content::Include(cid.clone()));
            }
            w.end();
        });
        let mut root = String::with_capacity(xml.len() + 256);
        root.push_str("--");
        root.push_str(&boundary);
        root.push_str("\r\nContent-Type: application/xop+xml; charset=UTF-8; type=\"application/soap+xml\"\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <");
        root.push_str(&root_cid);
        root.push_str(">\r\n\r\n");
        root.push_str(&xml);
        RetrieveResponseWriter {
            boundary,
            root_cid,
            status_cid,
            action: header.action.clone(),
            cids,
            mime_types: documents
                .iter()
                .map(|d| mime_header_safe(&d.mime_type))
                .collect(),
            document_ids: documents
                .iter()
                .map(|d| d.document_unique_id.clone())
                .collect(),
            response: response.clone(),
            root: Bytes::from(root),
        }
    }

    /// The HTTP `Content-Type` of the body.
    pub fn content_type(&self) -> String {
        format!(
            "multipart/related; boundary=\"{}\"; type=\"application/xop+xml\"; start=\"<{}>\"; start-info=\"application/soap+xml\"; action=\"{}\"",
            self.boundary,
            self.root_cid,
            mime_header_safe(&self.action)
        )
    }

    fn part_header(&self, i: usize) -> Bytes {
        let mime = if self.mime_types[i].is_empty() {
            "application/octet-stream"
        } else {
            &self.mime_types[i]
        };
        Bytes::from(format!(
            "\r\n--{}\r\nContent-Type: {}\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <{}>\r\n\r\n",
            self.boundary, mime, self.cids[i]
        ))
    }

    fn status_part(&self, response: &RegistryResponse) -> Bytes {
        Bytes::from(format!(
            "\r\n--{}\r\nContent-Type: application/xml; charset=UTF-8\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <{}>\r\nContent-Description: final-status\r\n\r\n{}",
            self.boundary,
            self.status_cid,
            response.to_xml_document()
        ))
    }

    fn closing(&self) -> Bytes {
        Bytes::from(format!("\r\n--{}--\r\n", self.boundary))
    }

    /// The final RegistryResponse: the root's errors plus one XDSRepositoryError per failed document,
    /// status derived from them and the documents delivered.
    fn final_response(&self, delivered: usize, failed: &[(usize, String)]) -> RegistryResponse {
        if failed.is_empty() {
            return self.response.clone();
        }
        let mut errors = self.response.errors.clone();
        for (i, why) in failed {
            let uid = &self.document_ids[*i];
            errors.push(
                crate::ihe::RegistryError::new(
                    crate::ihe::ErrorCode::XDSRepositoryError,
                    format!("document {uid} not delivered whole: {why}"),
                )
                .at(uid.clone()),
            );
        }
        RegistryResponse::derive(errors, delivered)
    }

    /// The body as a stream of chunks: the root part, then one part per [`RetrieveItem::Document`] with
    /// its chunks passed through as they come, then (only when something failed after the root) the
    /// final-status part, then the closing boundary (see the type's documentation).
    ///
    /// Nothing the items do makes the stream end early or with an error: a document that fails
    /// ([`RetrieveItem::Failed`]), an error of `items` (the current document and those not started
    /// fail), items out of order (a chunk outside a document, an unknown or repeated index: the same)
    /// and documents that never got content (each gets an empty part) all end up in the final status.
    /// The only error is `finish`'s ([`MtomError::Source`]), after which the closing boundary is not
    /// written.
    pub fn into_body<S, E>(
        self,
        items: S,
        finish: Option<FinishHook>,
    ) -> impl Stream<Item = Result<Bytes, MtomError>> + Send
    where
        S: Stream<Item = Result<RetrieveItem, E>> + Send + 'static,
        E: Into<SourceError>,
    {
        #[derive(Clone, Copy, PartialEq, Eq)]
        enum Doc {
            Pending,
            Open,
            Delivered,
            Failed,
        }
        struct St<S> {
            w: RetrieveResponseWriter,
            items: Option<Pin<Box<S>>>,
            started: bool,
            current: Option<usize>,
            docs: Vec<Doc>,
            delivered: Vec<usize>,
            failed: Vec<(usize, String)>,
            finish: Option<FinishHook>,
            out: VecDeque<Bytes>,
            empty: VecDeque<usize>,
            done: bool,
        }
        impl<S> St<S> {
            fn fail(&mut self, i: usize, why: String) {
                match self.docs[i] {
                    Doc::Failed => return,
                    Doc::Delivered => self.delivered.retain(|d| *d != i),
                    // its xop:Include must still name a part of the message: an empty one, written
                    // when no other part is open
                    Doc::Pending => self.empty.push_back(i),
                    Doc::Open => {}
                }
                if self.current == Some(i) {
                    self.current = None;
                }
                self.docs[i] = Doc::Failed;
                self.failed.push((i, why));
            }

            /// The current document and every one not started fail; no more items are read.
            fn abort(&mut self, why: &str) {
                if let Some(c) = self.current {
                    self.fail(c, format!("its source failed: {why}"));
                }
                for i in 0..self.docs.len() {
                    if self.docs[i] == Doc::Pending {
                        self.fail(i, format!("its source failed before it: {why}"));
                    }
                }
                self.items = None;
            }
        }
        let n = self.cids.len();
        let st = St {
            w: self,
            items: Some(Box::pin(items)),
            started: false,
            current: None,
            docs: vec![Doc::Pending; n],
            delivered: Vec::new(),
            failed: Vec::new(),
            finish,
            out: VecDeque::new(),
            empty: VecDeque::new(),
            done: false,
        };
        futures::stream::unfold(st, |mut st| async move {
            loop {
                if let Some(b) = st.out.pop_front() {
                    return Some((Ok(b), st));
                }
                if st.current.is_none()
                    && let Some(i) = st.empty.pop_front()
                {
                    return Some((Ok(st.w.part_header(i)), st));
                }
                if st.done {
                    return None;
                }
                if !st.started {
                    st.started = true;
                    let root = st.w.root.clone();
                    return Some((Ok(root), st));
                }
                let Some(items) = st.items.as_mut() else {
                    // through: documents that never got content, the final status, the audit hook
                    for i in 0..st.docs.len() {
                        if st.docs[i] == Doc::Pending {
                            st.fail(i, "the source gave it no content".into());
                        }
                    }
                    if let Some(c) = st.current.take() {
                        st.fail(c, "the source did not end it".into());
                    }
                    while let Some(i) = st.empty.pop_front() {
                        let h = st.w.part_header(i);
                        st.out.push_back(h);
                    }
                    let response = st.w.final_response(st.delivered.len(), &st.failed);
                    if !st.failed.is_empty() {
                        let p = st.w.status_part(&response);
                        st.out.push_back(p);
                    }
                    st.done = true;
                    let report = WrittenReport {
                        delivered: std::mem::take(&mut st.delivered),
                        failed: std::mem::take(&mut st.failed),
                        response,
                    };
                    if let Some(f) = st.finish.take()
                        && let Err(e) = f(report).await
                    {
                        // the parts already queued stay unsent with the closing boundary: an
                        // incomplete message that no consumer can take for a whole answer
                        st.out.clear();
                        return Some((Err(MtomError::Source(e)), st));
                    }
                    let close = st.w.closing();
                    st.out.push_back(close);
                    continue;
                };
                match items.next().await {
                    None => st.items = None,
                    Some(Err(e)) => {
                        let e: SourceError = e.into();
                        st.abort(&e.0.to_string());
                    }
                    Some(Ok(RetrieveItem::Document(i))) => {
                        if i >= st.docs.len() || st.docs[i] != Doc::Pending {
                            st.abort(&format!("document index {i} unknown or repeated"));
                            continue;
                        }
                        if let Some(c) = st.current {
                            st.fail(c, "the source did not end it".into());
                        }
                        st.docs[i] = Doc::Open;
                        st.current = Some(i);
                        return Some((Ok(st.w.part_header(i)), st));
                    }
                    Some(Ok(RetrieveItem::Chunk(b))) => {
                        if st.current.is_none() {
                            st.abort("a chunk outside a document");
                            continue;
                        }
                        if !b.is_empty() {
                            return Some((Ok(b), st));
                        }
                    }
                    Some(Ok(RetrieveItem::End)) => {
                        if let Some(c) = st.current.take() {
                            st.docs[c] = Doc::Delivered;
                            st.delivered.push(c);
                        }
                    }
                    Some(Ok(RetrieveItem::Failed(i, why))) => {
                        if i < st.docs.len() {
                            st.fail(i, why);
                        }
                    }
                }
            }
        })
    }

    /// A whole buffered response as MTOM (`Content-Type`, body): for small responses and tests.
    pub fn write_all(
        header: &SoapHeader,
        response: &RetrieveDocumentSetResponse,
    ) -> Result<(String, Vec<u8>), MtomError> {
        let metas: Vec<DocumentResponseMeta> =
            response.documents.iter().map(|d| d.meta.clone()).collect();
        let w = RetrieveResponseWriter::new(header, &response.response, &metas);
        let ct = w.content_type();
        let mut out = Vec::with_capacity(w.root.len() + 1024);
        out.extend_from_slice(&w.root);
        for (i, d) in response.documents.iter().enumerate() {
            out.extend_from_slice(&w.part_header(i));
            match &d.content {
                Content::Inline(b) => out.extend_from_slice(b),
                Content::Include(cid) => return Err(MtomError::MissingPart(cid.clone())),
            }
        }
        out.extend_from_slice(&w.closing());
        Ok((ct, out))
    }
}

/// An error of the item source of a [`RetrieveResponseWriter`], carried as an [`MtomError`].
#[derive(Debug)]
pub struct SourceError(pub MtomError);

impl From<MtomError> for SourceError {
    fn from(e: MtomError) -> SourceError {
        SourceError(e)
    }
}

impl From<BoxError> for SourceError {
    fn from(e: BoxError) -> SourceError {
        SourceError(MtomError::Source(e.to_string()))
    }
}

impl From<std::io::Error> for SourceError {
    fn from(e: std::io::Error) -> SourceError {
        SourceError(MtomError::Source(e.to_string()))
    }
}

impl From<std::convert::Infallible> for SourceError {
    fn from(e: std::convert::Infallible) -> SourceError {
        match e {}
    }
}

/// Wraps a SOAP envelope as a root-only MTOM message (`Content-Type`, body), for peers that require
/// MTOM requests (ITI-43 / RAD-69 repositories, ITI TF-2 V.3.6).
pub fn wrap_root(envelope: &str, action: &str) -> (String, Vec<u8>) {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let boundary = format!("MIMEBoundary_duo_{tag}");
    let cid = format!("root.{tag}@duo.invalid");
    let ct = format!(
        "multipart/related; boundary=\"{boundary}\"; type=\"application/xop+xml\"; start=\"<{cid}>\"; start-info=\"application/soap+xml\"; action=\"{}\"",
        mime_header_safe(action)
    );
    let mut out = Vec::with_capacity(envelope.len() + 512);
    out.extend_from_slice(
        format!("--{boundary}\r\nContent-Type: application/xop+xml; charset=UTF-8; type=\"application/soap+xml\"\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <{cid}>\r\n\r\n").as_bytes(),
    );
    out.extend_from_slice(envelope.as_bytes());
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (ct, out)
}

#[cfg(test)]
mod tests;
