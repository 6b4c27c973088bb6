//! Retrieve messages: ITI-39 Cross Gateway Retrieve / ITI-43 Retrieve Document Set
//! (`xdsb:RetrieveDocumentSetRequest` / `Response`, ITI TF-2b 3.39.4, 3.43.4) and RAD-69 / RAD-75
//! Retrieve Imaging Document Set (`xdsi:RetrieveImagingDocumentSetRequest`, RAD TF-3 4.69.4.1,
//! 4.75.4.1; the response is a RetrieveDocumentSetResponse).
//!
//! `SeriesRequest/DocumentRequest` is read and written in the XDS.b namespace, as the NIST testkit,
//! dcm4chee and the NIST schema have it (testdata README "Schema caveats" 2).
//!
//! These types hold whole messages. A retrieve response is normally MTOM with its documents in
//! attachments: [`Content::Include`] keeps the reference, and [`super::mtom`] resolves it, buffered
//! ([`super::mtom::read_retrieve_response`]) or streaming ([`super::mtom::RetrieveResponseReader`]).

use base64::Engine as _;
use bytes::Bytes;

use crate::model::HomeCommunityId;
use crate::xml::{Elem, Reader, Writer, XmlError, ns};

use super::Message;
use super::ebrim::{
    ErrorCode, RegistryError, ResponseStatus, Severity, is_rs_or_rim, read_error_list,
    write_error_list,
};

/// Base64 as XML Schema `base64Binary` allows it: padding optional on input, whitespace stripped
/// before decoding.
const B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Decodes `base64Binary` text (whitespace anywhere is ignored).
///
/// Decoded as a stream (the base64 crate's `DecoderReader` over the text with whitespace skipped), so
/// an inline document costs the gateway its decoded bytes and no whitespace-free copy of its text: a
/// peer's 16 MiB inline document held about 2.7 times its size on top of the root before.
pub fn decode_base64(text: &str) -> Result<Vec<u8>, XmlError> {
    use std::io::Read as _;
    /// The text's bytes without ASCII whitespace.
    struct Compact<'t>(&'t [u8]);
    impl std::io::Read for Compact<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let mut n = 0;
            while n < buf.len() {
                let Some((&b, rest)) = self.0.split_first() else {
                    break;
                };
                self.0 = rest;
                if !b.is_ascii_whitespace() {
                    buf[n] = b;
                    n += 1;
                }
            }
            Ok(n)
        }
    }
    // at most 3 bytes per 4 characters; whitespace only makes the estimate larger
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 3);
    base64::read::DecoderReader::new(Compact(text.as_bytes()), &B64)
        .read_to_end(&mut out)
        .map_err(|e| XmlError::invalid("Document", format!("base64: {e}")))?;
    Ok(out)
}

/// Encodes bytes as base64 (standard alphabet, padded, one line).
pub fn encode_base64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Decodes an `xop:Include/@href` to the Content-ID it names: strips `cid:` (any case) and
/// percent-decodes (RFC 2392). Angle brackets are not part of the id. Lenient (an href without `cid:`
/// is taken as the id itself), for tests that look at captured messages; the readers use
/// [`cid_of_href`].
pub fn cid_from_href(href: &str) -> String {
    let h = href.trim();
    let rest = if h.len() >= 4 && h.is_char_boundary(4) && h[..4].eq_ignore_ascii_case("cid:") {
        &h[4..]
    } else {
        h
    };
    percent_encoding::percent_decode_str(rest)
        .decode_utf8_lossy()
        .into_owned()
}

/// [`cid_from_href`], strictly: `None` for anything but a `cid:` URL with an id (XOP 1.0 §3: an
/// Include names a MIME part by a `cid:` URL, nothing else). Such an Include names no part, and nothing
/// is ever fetched because a message says so.
pub fn cid_of_href(href: &str) -> Option<String> {
    let h = href.trim();
    if h.len() < 4 || !h.is_char_boundary(4) || !h[..4].eq_ignore_ascii_case("cid:") {
        return None;
    }
    let id = percent_encoding::percent_decode_str(&h[4..])
        .decode_utf8_lossy()
        .into_owned();
    (!id.trim().is_empty()).then_some(id)
}

/// Characters escaped in a `cid:` URL: everything outside RFC 3986 unreserved plus `@` (kept readable;
/// RFC 2392 allows it).
const CID_ESCAPE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'@');

/// The `xop:Include/@href` for a Content-ID: `cid:` + the URL-encoded id (RFC 2392).
pub fn href_from_cid(cid: &str) -> String {
    format!(
        "cid:{}",
        percent_encoding::utf8_percent_encode(cid, CID_ESCAPE)
    )
}

/// `xdsb:DocumentRequest` (ITI TF-2b 3.39.4.1.2, 3.43.4.1.2; inside `SeriesRequest` for RAD-69/RAD-75,
/// where DocumentUniqueId is the SOP Instance UID).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DocumentRequest {
    /// `HomeCommunityId` (required for ITI-39 and RAD-75; the community the document lives in).
    pub home_community_id: Option<HomeCommunityId>,
    /// `RepositoryUniqueId` (repository or imaging document source unique id; kept as text).
    pub repository_unique_id: String,
    /// `DocumentUniqueId`.
    pub document_unique_id: String,
}

fn read_home_text(field: &str, text: &str) -> Result<Option<HomeCommunityId>, XmlError> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    t.parse()
        .map(Some)
        .map_err(|e| XmlError::invalid(field, format!("{e}")))
}

impl DocumentRequest {
    fn read<'i>(r: &mut Reader<'i>, el: &Elem<'i>) -> Result<DocumentRequest, XmlError> {
        let mut d = DocumentRequest::default();
        let mut repo = false;
        let mut doc = false;
        while let Some(c) = r.child(el)? {
            if c.ns.uri() != ns::XDSB {
                continue;
            }
            match c.local {
                "HomeCommunityId" => {
                    d.home_community_id = read_home_text("HomeCommunityId", &r.text(&c)?)?;
                }
                "RepositoryUniqueId" => {
                    d.repository_unique_id = r.text(&c)?.trim().to_owned();
                    repo = true;
                }
                "DocumentUniqueId" => {
                    d.document_unique_id = r.text(&c)?.trim().to_owned();
                    doc = true;
                }
                _ => {}
            }
        }
        if !repo {
            return Err(XmlError::Missing(
                "DocumentRequest/RepositoryUniqueId".into(),
            ));
        }
        if !doc {
            return Err(XmlError::Missing("DocumentRequest/DocumentUniqueId".into()));
        }
        Ok(d)
    }

    fn write(&self, w: &mut Writer) {
        w.start("xdsb:DocumentRequest");
        if let Some(h) = &self.home_community_id {
            w.leaf("xdsb:HomeCommunityId", &h.to_string());
        }
        w.leaf("xdsb:RepositoryUniqueId", &self.repository_unique_id);
        w.leaf("xdsb:DocumentUniqueId", &self.document_unique_id);
        w.end();
    }
}

fn missing_home_error(what: &str, d: &DocumentRequest) -> RegistryError {
    RegistryError::new(
        ErrorCode::XDSMissingHomeCommunityId,
        format!(
            "{what} for document {} has no HomeCommunityId",
            d.document_unique_id
        ),
    )
    .at(d.document_unique_id.clone())
}

/// `xdsb:RetrieveDocumentSetRequest` (ITI-39 / ITI-43 request body).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetrieveDocumentSetRequest {
    /// The documents asked for (1..n).
    pub documents: Vec<DocumentRequest>,
}

impl RetrieveDocumentSetRequest {
    /// One XDSMissingHomeCommunityId per DocumentRequest without HomeCommunityId (required in ITI-39,
    /// ITI TF-2b 3.39.4.1.2), location = the DocumentUniqueId.
    pub fn missing_home_errors(&self) -> Vec<RegistryError> {
        self.documents
            .iter()
            .filter(|d| d.home_community_id.is_none())
            .map(|d| missing_home_error("DocumentRequest", d))
            .collect()
    }
}

impl Message for RetrieveDocumentSetRequest {
    const ELEMENT: (&'static str, &'static str) = (ns::XDSB, "RetrieveDocumentSetRequest");

    fn read_body<'i>(r: &mut Reader<'i>, el: Elem<'i>) -> Result<Self, XmlError> {
        let mut out = RetrieveDocumentSetRequest::default();
        while let Some(c) = r.child(&el)? {
            if c.is(ns::XDSB, "DocumentRequest") {
                out.documents.push(DocumentRequest::read(r, &c)?);
            }
        }
        if out.documents.is_empty() {
            return Err(XmlError::Missing(
                "RetrieveDocumentSetRequest/DocumentRequest".into(),
            ));
        }
        Ok(out)
    }

    fn write_body(&self, w: &mut Writer) {
        w.start("xdsb:RetrieveDocumentSetRequest")
            .attr("xmlns:xdsb", ns::XDSB);
        for d in &self.documents {
            d.write(w);
        }
        w.end();
    }
}

/// `rs:RegistryResponse`: status and errors of a retrieve response (ITI TF-2b 3.43.4.2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryResponse {
    /// `@status`.
    pub status: ResponseStatus,
    /// `rs:RegistryErrorList/rs:RegistryError`.
    pub errors: Vec<RegistryError>,
}

impl Default for RegistryResponse {
    fn default() -> Self {
        RegistryResponse {
            status: ResponseStatus::Success,
            errors: Vec::new(),
        }
    }
}

impl RegistryResponse {
    /// Status from errors and the number of documents returned: Success without errors of severity
    /// Error, PartialSuccess with errors and documents, Failure with errors and no documents
    /// (ITI TF-2b 3.43.4.2.3).
    pub fn derive(errors: Vec<RegistryError>, documents: usize) -> RegistryResponse {
        let has_error = errors.iter().any(|e| e.severity == Severity::Error);
        let status = match (has_error, documents) {
            (false, _) => ResponseStatus::Success,
            (true, 0) => ResponseStatus::Failure,
            (true, _) => ResponseStatus::PartialSuccess,
        };
        RegistryResponse { status, errors }
    }

    pub(crate) fn read<'i>(
        r: &mut Reader<'i>,
        el: &Elem<'i>,
    ) -> Result<RegistryResponse, XmlError> {
        let status = ResponseStatus::read(el)?;
        let mut errors = Vec::new();
        while let Some(c) = r.child(el)? {
            if is_rs_or_rim(&c, "RegistryErrorList") {
                read_error_list(r, &c, &mut errors)?;
            }
        }
        Ok(RegistryResponse { status, errors })
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        w.start("rs:RegistryResponse")
            .attr("status", self.status.uri());
        write_error_list(w, &self.errors);
        w.end();
    }

    /// This response as a standalone XML document (`rs:RegistryResponse` declaring its namespace): the
    /// trailing part of a relayed retrieve answer ([`super::mtom::RetrieveResponseWriter`]).
    pub fn to_xml_document(&self) -> String {
        let mut w = Writer::new();
        w.decl();
        w.start("rs:RegistryResponse")
            .attr("xmlns:rs", ns::RS)
            .attr("status", self.status.uri());
        write_error_list(&mut w, &self.errors);
        w.end();
        w.finish()
    }
}

/// The content of a `DocumentResponse/Document`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// The bytes (read from inline base64; written as base64).
    Inline(Bytes),
    /// An `xop:Include`: the Content-ID of the MIME part holding the bytes (decoded from the `cid:` href;
    /// empty when the href is no `cid:` URL, which names no part).
    Include(String),
}

impl Default for Content {
    fn default() -> Self {
        Content::Inline(Bytes::new())
    }
}

/// Everything of an `xdsb:DocumentResponse` except the document bytes (ITI TF-2b 3.43.4.2.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DocumentResponseMeta {
    /// `HomeCommunityId` (required in ITI-39 and RAD-75 responses; absent → XDSMissingHomeCommunityId).
    pub home_community_id: Option<HomeCommunityId>,
    /// `RepositoryUniqueId`.
    pub repository_unique_id: String,
    /// `DocumentUniqueId` (SOP Instance UID for RAD-69/RAD-75).
    pub document_unique_id: String,
    /// `NewRepositoryUniqueId` (on-demand documents).
    pub new_repository_unique_id: Option<String>,
    /// `NewDocumentUniqueId` (on-demand documents).
    pub new_document_unique_id: Option<String>,
    /// `mimeType`, e.g. `application/dicom`.
    pub mime_type: String,
}

/// `xdsb:DocumentResponse`: metadata and content.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DocumentResponse {
    /// The identifying elements and mimeType.
    pub meta: DocumentResponseMeta,
    /// `Document`.
    pub content: Content,
}

impl DocumentResponse {
    fn read<'i>(r: &mut Reader<'i>, el: &Elem<'i>) -> Result<DocumentResponse, XmlError> {
        let mut m = DocumentResponseMeta::default();
        let mut content = None;
        while let Some(c) = r.child(el)? {
            if c.ns.uri() != ns::XDSB {
                continue;
            }
            match c.local {
                "HomeCommunityId" => {
                    m.home_community_id = read_home_text("HomeCommunityId", &r.text(&c)?)?;
                }
                "RepositoryUniqueId" => m.repository_unique_id = r.text(&c)?.trim().to_owned(),
                "DocumentUniqueId" => m.document_unique_id = r.text(&c)?.trim().to_owned(),
                "NewRepositoryUniqueId" => {
                    m.new_repository_unique_id = Some(r.text(&c)?.trim().to_owned());
                }
                "NewDocumentUniqueId" => {
                    m.new_document_unique_id = Some(r.text(&c)?.trim().to_owned());
                }
                "mimeType" => m.mime_type = r.text(&c)?.trim().to_owned(),
                "Document" => {
                    let mut include = None;
                    let text = r.mixed(&c, |r, inc| {
                        if inc.is(ns::XOP, "Include") {
                            // no href, or no cid: URL: an Include that names no part (empty id),
                            // which fails this document only
                            include =
                                Some(inc.attr("href").and_then(cid_of_href).unwrap_or_default());
                        }
                        r.skip(&inc)
                    })?;
                    content = Some(match include {
                        Some(cid) => Content::Include(cid),
                        None => Content::Inline(Bytes::from(decode_base64(&text)?)),
                    });
                }
                _ => {}
            }
        }
        Ok(DocumentResponse {
            meta: m,
            content: content
                .ok_or_else(|| XmlError::Missing("DocumentResponse/Document".into()))?,
        })
    }
}

/// Writes one `xdsb:DocumentResponse` with the given content (base64 or `xop:Include`).
pub(crate) fn write_document_response(w: &mut Writer, m: &DocumentResponseMeta, content: &Content) {
    w.start("xdsb:DocumentResponse");
    if let Some(h) = &m.home_community_id {
        w.leaf("xdsb:HomeCommunityId", &h.to_string());
    }
    w.leaf("xdsb:RepositoryUniqueId", &m.repository_unique_id);
    w.leaf("xdsb:DocumentUniqueId", &m.document_unique_id);
    if let Some(v) = &m.new_repository_unique_id {
        w.leaf("xdsb:NewRepositoryUniqueId", v);
    }
    if let Some(v) = &m.new_document_unique_id {
        w.leaf("xdsb:NewDocumentUniqueId", v);
    }
    w.leaf("xdsb:mimeType", &m.mime_type);
    w.start("xdsb:Document");
    match content {
        Content::Inline(b) => {
            w.text(&encode_base64(b));
        }
        Content::Include(cid) => {
            w.start("xop:Include")
                .attr("xmlns:xop", ns::XOP)
                .attr("href", &href_from_cid(cid))
                .end();
        }
    }
    w.end();
    w.end();
}

/// `xdsb:RetrieveDocumentSetResponse` (ITI-39 / ITI-43 / RAD-69 / RAD-75 response body).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetrieveDocumentSetResponse {
    /// `rs:RegistryResponse`.
    pub response: RegistryResponse,
    /// `DocumentResponse` elements in order.
    pub documents: Vec<DocumentResponse>,
}

impl RetrieveDocumentSetResponse {
    /// One XDSMissingHomeCommunityId per DocumentResponse without HomeCommunityId (XCA requires it,
    /// ITI TF-2b 3.39.4.2.2; the NIST sample `soap-xret-resp-homeless.xml`).
    pub fn missing_home_errors(&self) -> Vec<RegistryError> {
        self.documents
            .iter()
            .filter(|d| d.meta.home_community_id.is_none())
            .map(|d| {
                RegistryError::new(
                    ErrorCode::XDSMissingHomeCommunityId,
                    format!(
                        "DocumentResponse for document {} has no HomeCommunityId",
                        d.meta.document_unique_id
                    ),
                )
                .at(d.meta.document_unique_id.clone())
            })
            .collect()
    }
}

/// Opens `xdsb:RetrieveDocumentSetResponse` with its namespace declarations and writes the
/// RegistryResponse; the caller writes the DocumentResponses and closes it.
pub(crate) fn write_response_start(w: &mut Writer, response: &RegistryResponse) {
    w.start("xdsb:RetrieveDocumentSetResponse")
        .attr("xmlns:xdsb", ns::XDSB)
        .attr("xmlns:rs", ns::RS);
    response.write(w);
}

/// Reads a `RetrieveDocumentSetResponse` element (shared by the buffered and streaming readers).
pub(crate) fn read_response_body<'i>(
    r: &mut Reader<'i>,
    el: &Elem<'i>,
) -> Result<RetrieveDocumentSetResponse, XmlError> {
    let mut response = None;
    let mut documents = Vec::new();
    while let Some(c) = r.child(el)? {
        if c.is(ns::RS, "RegistryResponse") {
            response = Some(RegistryResponse::read(r, &c)?);
        } else if c.is(ns::XDSB, "DocumentResponse") {
            documents.push(DocumentResponse::read(r, &c)?);
        }
    }
    Ok(RetrieveDocumentSetResponse {
        response: response.ok_or_else(|| XmlError::Missing("rs:RegistryResponse".into()))?,
        documents,
    })
}

impl Message for RetrieveDocumentSetResponse {
    const ELEMENT: (&'static str, &'static str) = (ns::XDSB, "RetrieveDocumentSetResponse");

    fn read_body<'i>(r: &mut Reader<'i>, el: Elem<'i>) -> Result<Self, XmlError> {
        read_response_body(r, &el)
    }

    fn write_body(&self, w: &mut Writer) {
        write_response_start(w, &self.response);
        for d in &self.documents {
            write_document_response(w, &d.meta, &d.content);
        }
        w.end();
    }
}

/// `xdsi:SeriesRequest` (RAD TF-3 4.69.4.1.2): a series and the instances asked for in it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SeriesRequest {
    /// `@seriesInstanceUID` (may be empty on the wire; [`RetrieveImagingDocumentSetRequest::validate`]
    /// flags it).
    pub series_instance_uid: String,
    /// `xdsb:DocumentRequest` per SOP instance (1..n).
    pub documents: Vec<DocumentRequest>,
}

/// `xdsi:StudyRequest`: a study and the series asked for in it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StudyRequest {
    /// `@studyInstanceUID`.
    pub study_instance_uid: String,
    /// Series (1..n).
    pub series: Vec<SeriesRequest>,
}

/// `xdsi:RetrieveImagingDocumentSetRequest` (RAD-69 / RAD-75 request body, RAD TF-3 4.69.4.1.2,
/// 4.75.4.1.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetrieveImagingDocumentSetRequest {
    /// Studies (1..n).
    pub studies: Vec<StudyRequest>,
    /// `TransferSyntaxUIDList/TransferSyntaxUID`, in order of preference (required, 1..n).
    pub transfer_syntaxes: Vec<String>,
}

impl RetrieveImagingDocumentSetRequest {
    /// Every DocumentRequest with its study and series UIDs.
    pub fn documents(&self) -> impl Iterator<Item = (&str, &str, &DocumentRequest)> {
        self.studies.iter().flat_map(|st| {
            st.series.iter().flat_map(move |se| {
                se.documents.iter().map(move |d| {
                    (
                        st.study_instance_uid.as_str(),
                        se.series_instance_uid.as_str(),
                        d,
                    )
                })
            })
        })
    }

    /// Checks what the schema cannot (testdata README "Schema caveats" 3): empty Study or Series
    /// Instance UID → XDSIRequestError (RAD TF-3 4.69.4.1.3); an empty transfer syntax UID →
    /// XDSRepositoryError; for RAD-75 (`require_home`) a DocumentRequest without HomeCommunityId →
    /// XDSMissingHomeCommunityId. Empty when the request is acceptable.
    pub fn validate(&self, require_home: bool) -> Vec<RegistryError> {
        let mut errs = Vec::new();
        for st in &self.studies {
            if st.study_instance_uid.trim().is_empty() {
                errs.push(RegistryError::new(
                    ErrorCode::XDSIRequestError,
                    "StudyRequest has an empty studyInstanceUID",
                ));
            }
            for se in &st.series {
                if se.series_instance_uid.trim().is_empty() {
                    errs.push(
                        RegistryError::new(
                            ErrorCode::XDSIRequestError,
                            "SeriesRequest has an empty seriesInstanceUID",
                        )
                        .at(st.study_instance_uid.clone()),
                    );
                }
                if require_home {
                    errs.extend(
                        se.documents
                            .iter()
                            .filter(|d| d.home_community_id.is_none())
                            .map(|d| missing_home_error("DocumentRequest", d)),
                    );
                }
            }
        }
        if self.transfer_syntaxes.iter().any(|t| t.trim().is_empty()) {
            errs.push(RegistryError::new(
                ErrorCode::XDSRepositoryError,
                "TransferSyntaxUIDList holds an empty TransferSyntaxUID",
            ));
        }
        errs
    }
}

impl Message for RetrieveImagingDocumentSetRequest {
    const ELEMENT: (&'static str, &'static str) = (ns::XDSI, "RetrieveImagingDocumentSetRequest");

    fn read_body<'i>(r: &mut Reader<'i>, el: Elem<'i>) -> Result<Self, XmlError> {
        let mut out = RetrieveImagingDocumentSetRequest::default();
        let mut have_list = false;
        while let Some(c) = r.child(&el)? {
            if c.is(ns::XDSI, "StudyRequest") {
                let mut st = StudyRequest {
                    study_instance_uid: c.required_attr("studyInstanceUID")?.trim().to_owned(),
                    series: Vec::new(),
                };
                while let Some(s) = r.child(&c)? {
                    if !s.is(ns::XDSI, "SeriesRequest") {
                        continue;
                    }
                    let mut se = SeriesRequest {
                        series_instance_uid: s
                            .required_attr("seriesInstanceUID")?
                            .trim()
                            .to_owned(),
                        documents: Vec::new(),
                    };
                    while let Some(d) = r.child(&s)? {
                        // XDS.b namespace on the wire; the XDS-I.b one of IPF's schema is accepted too
                        if d.local == "DocumentRequest"
                            && (d.ns.uri() == ns::XDSB || d.ns.uri() == ns::XDSI)
                        {
                            se.documents.push(read_document_request_any_ns(r, &d)?);
                        }
                    }
                    st.series.push(se);
                }
                out.studies.push(st);
            } else if c.is(ns::XDSI, "TransferSyntaxUIDList") {
                have_list = true;
                while let Some(t) = r.child(&c)? {
                    if t.is(ns::XDSI, "TransferSyntaxUID") {
                        out.transfer_syntaxes.push(r.text(&t)?.trim().to_owned());
                    }
                }
            }
        }
        if out.studies.is_empty() {
            return Err(XmlError::Missing(
                "RetrieveImagingDocumentSetRequest/StudyRequest".into(),
            ));
        }
        if !have_list || out.transfer_syntaxes.is_empty() {
            return Err(XmlError::Missing(
                "RetrieveImagingDocumentSetRequest/TransferSyntaxUIDList/TransferSyntaxUID".into(),
            ));
        }
        Ok(out)
    }

    fn write_body(&self, w: &mut Writer) {
        w.start("xdsi:RetrieveImagingDocumentSetRequest")
            .attr("xmlns:xdsi", ns::XDSI)
            .attr("xmlns:xdsb", ns::XDSB);
        for st in &self.studies {
            w.start("xdsi:StudyRequest")
                .attr("studyInstanceUID", &st.study_instance_uid);
            for se in &st.series {
                w.start("xdsi:SeriesRequest")
                    .attr("seriesInstanceUID", &se.series_instance_uid);
                for d in &se.documents {
                    d.write(w);
                }
                w.end();
            }
            w.end();
        }
        w.start("xdsi:TransferSyntaxUIDList");
        for t in &self.transfer_syntaxes {
            w.leaf("xdsi:TransferSyntaxUID", t);
        }
        w.end();
        w.end();
    }
}

/// A DocumentRequest whose children are in the XDS.b or (IPF schema variant) XDS-I.b namespace.
fn read_document_request_any_ns<'i>(
    r: &mut Reader<'i>,
    el: &Elem<'i>,
) -> Result<DocumentRequest, XmlError> {
    if el.ns.uri() == ns::XDSB {
        return DocumentRequest::read(r, el);
    }
    let mut d = DocumentRequest::default();
    while let Some(c) = r.child(el)? {
        match c.local {
            "HomeCommunityId" => {
                d.home_community_id = read_home_text("HomeCommunityId", &r.text(&c)?)?;
            }
            "RepositoryUniqueId" => d.repository_unique_id = r.text(&c)?.trim().to_owned(),
            "DocumentUniqueId" => d.document_unique_id = r.text(&c)?.trim().to_owned(),
            _ => {}
        }
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cid_hrefs() {
        assert_eq!(
            cid_from_href("cid:1.urn%3Auuid%3Aabc%40apache.org"),
            "1.urn:uuid:abc@apache.org"
        );
        assert_eq!(cid_from_href("CID:a%20b"), "a b");
        let cid = "0.urn:uuid:x y@duo";
        assert_eq!(href_from_cid(cid), "cid:0.urn%3Auuid%3Ax%20y@duo");
        assert_eq!(cid_from_href(&href_from_cid(cid)), cid);
        assert_eq!(cid_of_href(&href_from_cid(cid)).as_deref(), Some(cid));
        assert_eq!(cid_of_href("CID:a%20b").as_deref(), Some("a b"));
        // no cid: URL names no part: nothing is fetched, the document fails alone
        for bad in [
            "1.urn%3Auuid%3Aabc",
            "http://evil.example/doc",
            "cid:",
            "cid: ",
            "",
            "ci",
            "é",
        ] {
            assert_eq!(cid_of_href(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn base64_tolerates_whitespace_and_missing_padding() {
        assert_eq!(decode_base64(" aGVs\n bG8= ").unwrap(), b"hello");
        assert_eq!(decode_base64("aGVsbG8").unwrap(), b"hello");
        assert!(decode_base64("a$b").is_err());
    }

    #[test]
    fn base64_decoded_as_a_stream_reads_what_a_whole_decode_reads() {
        // the reference: the engine over the text with whitespace removed (what decode_base64 did)
        let whole = |t: &str| {
            let c: Vec<u8> = t.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
            B64.decode(&c).ok()
        };
        let alphabet =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= \r\n\t-_.";
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut cases: Vec<String> = [
            "",
            "=",
            "QQ",
            "QQ=",
            "QQ==",
            "QQ===",
            "QUJD",
            "QUJD\nRA==",
            "QQ==QQ==",
            " Q Q = = ",
            "QUJDRA",
            "QUJDR",
            "Q",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for _ in 0..20_000 {
            let len = (next() % 64) as usize;
            let valid = next() % 2 == 0;
            let t: String = if valid {
                // real base64 of random bytes with whitespace and padding variants
                let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                let mut e = encode_base64(&data);
                if next() % 3 == 0 {
                    e = e.trim_end_matches('=').to_owned();
                }
                e.chars()
                    .flat_map(|c| {
                        let ws = if next() % 5 == 0 { Some('\n') } else { None };
                        std::iter::once(c).chain(ws)
                    })
                    .collect()
            } else {
                (0..len)
                    .map(|_| alphabet[(next() % alphabet.len() as u64) as usize] as char)
                    .collect()
            };
            cases.push(t);
        }
        for t in &cases {
            assert_eq!(decode_base64(t).ok(), whole(t), "{t:?}");
        }
        // a 3 MiB document with line breaks every 76 characters
        let data: Vec<u8> = (0..3 << 20).map(|_| next() as u8).collect();
        let e = encode_base64(&data);
        let lines: Vec<&str> = e
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        assert_eq!(decode_base64(&lines.join("\r\n")).unwrap(), data);
    }
}
