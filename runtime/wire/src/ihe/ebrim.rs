//! ebRIM 3.0 registry objects and ebRS 3.0 registry responses as XDS uses them (ITI TF-3 4.2.3,
//! OASIS regrep-rim-3.0 / regrep-rs-3.0).
//!
//! The wire model is generic (slots, classifications and external identifiers as lists) so nothing a
//! peer sends is lost on the way through the gateway; [`super::transform`] maps it to the domain
//! [`crate::model::DocumentEntry`]. Reading matches namespace URIs, skips unknown elements, and accepts
//! `home` with or without `urn:oid:`. Writing uses the prefixes `rim:` / `rs:` (declared by the enclosing
//! message) and the element order of `rim.xsd`, so the output validates.

use std::fmt;
use std::str::FromStr;

use crate::model::HomeCommunityId;
use crate::xml::{Elem, Reader, Writer, XmlError, ns};

/// Response status URIs (ebRS 3.0; PartialSuccess is IHE's own URI, ITI TF-3 4.2.4 / ITI TF-2b
/// 3.38.4.2.2). docs/DOMAIN.md "Status URIs".
pub mod status_uri {
    /// `Success`.
    pub const SUCCESS: &str = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success";
    /// `Failure`.
    pub const FAILURE: &str = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure";
    /// `PartialSuccess`, the IHE form this gateway writes.
    pub const PARTIAL_SUCCESS: &str = "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess";
    /// The wrong `urn:oasis` form of PartialSuccess some products send; accepted when reading only.
    pub const PARTIAL_SUCCESS_OASIS: &str =
        "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:PartialSuccess";
}

/// Availability status of a registry object (ebRIM 3.0 StatusType; ITI TF-3 4.2.3.2.2).
pub mod availability {
    /// `Approved`.
    pub const APPROVED: &str = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved";
    /// `Deprecated`.
    pub const DEPRECATED: &str = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated";
}

/// Association types used between XDS objects (ITI TF-3 4.2.2).
pub mod association_type {
    /// SubmissionSet / Folder `HasMember`.
    pub const HAS_MEMBER: &str = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember";
    /// Replacement.
    pub const RPLC: &str = "urn:ihe:iti:2007:AssociationType:RPLC";
    /// Transformation.
    pub const XFRM: &str = "urn:ihe:iti:2007:AssociationType:XFRM";
    /// Addendum.
    pub const APND: &str = "urn:ihe:iti:2007:AssociationType:APND";
    /// Signs.
    pub const SIGNS: &str = "urn:ihe:iti:2007:AssociationType:signs";
}

/// Status of a registry response (`@status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponseStatus {
    /// Everything asked for was done.
    Success,
    /// Some results and some errors (XCA aggregation, ITI TF-2b 3.38.4.2.2).
    PartialSuccess,
    /// Nothing was done; `RegistryErrorList` says why.
    Failure,
}

impl ResponseStatus {
    /// The URI this gateway writes (PartialSuccess in its `urn:ihe:iti:2007:` form).
    pub fn uri(self) -> &'static str {
        match self {
            ResponseStatus::Success => status_uri::SUCCESS,
            ResponseStatus::PartialSuccess => status_uri::PARTIAL_SUCCESS,
            ResponseStatus::Failure => status_uri::FAILURE,
        }
    }

    /// Parses a status URI; accepts the `urn:oasis` PartialSuccess form and surrounding whitespace.
    /// `None` for anything else.
    pub fn from_uri(s: &str) -> Option<ResponseStatus> {
        match s.trim() {
            status_uri::SUCCESS => Some(ResponseStatus::Success),
            status_uri::FAILURE => Some(ResponseStatus::Failure),
            status_uri::PARTIAL_SUCCESS | status_uri::PARTIAL_SUCCESS_OASIS => {
                Some(ResponseStatus::PartialSuccess)
            }
            _ => None,
        }
    }

    pub(crate) fn read(el: &Elem<'_>) -> Result<ResponseStatus, XmlError> {
        let s = el.required_attr("status")?;
        ResponseStatus::from_uri(s)
            .ok_or_else(|| XmlError::invalid(format!("{}/@status", el.local), s.to_owned()))
    }
}

impl fmt::Display for ResponseStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.uri())
    }
}

impl ResponseStatus {
    /// The short name: `Success`, `PartialSuccess` or `Failure` (metrics labels, JSON).
    pub fn name(self) -> &'static str {
        match self {
            ResponseStatus::Success => "Success",
            ResponseStatus::PartialSuccess => "PartialSuccess",
            ResponseStatus::Failure => "Failure",
        }
    }
}

impl serde::Serialize for ResponseStatus {
    /// Serialised by [`ResponseStatus::name`].
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// `RegistryError/@errorCode` (ITI TF-3 Table 4.2.4.1-2, RAD TF-3 4.69.4.2.3; docs/DOMAIN.md "Errors used
/// here"). Codes this gateway does not know are kept verbatim in [`ErrorCode::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[allow(clippy::enum_variant_names)]
pub enum ErrorCode {
    /// Internal registry / gateway error.
    XDSRegistryError,
    /// Internal repository / imaging document source error; also "transfer syntax not available"
    /// (RAD TF-3 4.69.4.2.3, location = SOP Instance UID).
    XDSRepositoryError,
    /// Patient id not known to the registry.
    XDSUnknownPatientId,
    /// homeCommunityId not known (ITI TF-2b 3.38.4.1.3).
    XDSUnknownCommunity,
    /// A request or a returned object lacks homeCommunityId (ITI TF-2b 3.38.4.1.2, 3.38.4.2.3).
    XDSMissingHomeCommunityId,
    /// A community did not answer (in time).
    XDSUnavailableCommunity,
    /// Document (SOP instance) unique id not known.
    XDSDocumentUniqueIdError,
    /// A required stored-query parameter is missing (ITI TF-2a 3.18.4.1.3).
    XDSStoredQueryMissingParam,
    /// A parameter occurs more often than allowed (ITI TF-2a 3.18.4.1.3).
    XDSStoredQueryParamNumber,
    /// AdhocQuery id is not a known stored query.
    XDSUnknownStoredQuery,
    /// The result would exceed what the responder returns.
    XDSTooManyResults,
    /// Returned metadata is not valid XDS metadata.
    XDSRegistryMetadataError,
    /// RepositoryUniqueId not known.
    XDSUnknownRepositoryId,
    /// Imaging document source unique id not known (RAD TF-3 4.75.4.1.3).
    XDSIUnknownIdsUid,
    /// A RAD-69/RAD-75 request is malformed, e.g. empty Study or Series Instance UID (RAD TF-3
    /// 4.69.4.1.3).
    XDSIRequestError,
    /// Any other code, verbatim (e.g. `MyBigError` in the NIST samples).
    Other(String),
}

impl ErrorCode {
    const NAMED: [ErrorCode; 15] = [
        ErrorCode::XDSRegistryError,
        ErrorCode::XDSRepositoryError,
        ErrorCode::XDSUnknownPatientId,
        ErrorCode::XDSUnknownCommunity,
        ErrorCode::XDSMissingHomeCommunityId,
        ErrorCode::XDSUnavailableCommunity,
        ErrorCode::XDSDocumentUniqueIdError,
        ErrorCode::XDSStoredQueryMissingParam,
        ErrorCode::XDSStoredQueryParamNumber,
        ErrorCode::XDSUnknownStoredQuery,
        ErrorCode::XDSTooManyResults,
        ErrorCode::XDSRegistryMetadataError,
        ErrorCode::XDSUnknownRepositoryId,
        ErrorCode::XDSIUnknownIdsUid,
        ErrorCode::XDSIRequestError,
    ];

    /// The code as written on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::XDSRegistryError => "XDSRegistryError",
            ErrorCode::XDSRepositoryError => "XDSRepositoryError",
            ErrorCode::XDSUnknownPatientId => "XDSUnknownPatientId",
            ErrorCode::XDSUnknownCommunity => "XDSUnknownCommunity",
            ErrorCode::XDSMissingHomeCommunityId => "XDSMissingHomeCommunityId",
            ErrorCode::XDSUnavailableCommunity => "XDSUnavailableCommunity",
            ErrorCode::XDSDocumentUniqueIdError => "XDSDocumentUniqueIdError",
            ErrorCode::XDSStoredQueryMissingParam => "XDSStoredQueryMissingParam",
            ErrorCode::XDSStoredQueryParamNumber => "XDSStoredQueryParamNumber",
            ErrorCode::XDSUnknownStoredQuery => "XDSUnknownStoredQuery",
            ErrorCode::XDSTooManyResults => "XDSTooManyResults",
            ErrorCode::XDSRegistryMetadataError => "XDSRegistryMetadataError",
            ErrorCode::XDSUnknownRepositoryId => "XDSUnknownRepositoryId",
            ErrorCode::XDSIUnknownIdsUid => "XDSIUnknownIdsUid",
            ErrorCode::XDSIRequestError => "XDSIRequestError",
            ErrorCode::Other(s) => s,
        }
    }
}

impl ErrorCode {
    /// Parses a wire code; unknown codes become [`ErrorCode::Other`], surrounding whitespace is ignored.
    pub fn parse(s: &str) -> ErrorCode {
        let t = s.trim();
        ErrorCode::NAMED
            .iter()
            .find(|c| c.as_str() == t)
            .cloned()
            .unwrap_or_else(|| ErrorCode::Other(t.to_owned()))
    }
}

impl FromStr for ErrorCode {
    type Err = std::convert::Infallible;
    /// Never fails, see [`ErrorCode::parse`].
    fn from_str(s: &str) -> Result<ErrorCode, Self::Err> {
        Ok(ErrorCode::parse(s))
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `RegistryError/@severity` (ebRS 3.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Severity {
    /// `urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error` (the schema default).
    #[default]
    Error,
    /// `urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Warning`.
    Warning,
}

impl Severity {
    /// The URI.
    pub fn uri(self) -> &'static str {
        match self {
            Severity::Error => "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error",
            Severity::Warning => "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Warning",
        }
    }

    /// Parses the URI (or its last segment, which some peers send alone); absent means Error.
    pub fn from_uri(s: &str) -> Option<Severity> {
        match s.trim().rsplit(':').next().unwrap_or("") {
            "Error" => Some(Severity::Error),
            "Warning" => Some(Severity::Warning),
            _ => None,
        }
    }
}

/// One `rs:RegistryError` (ebRS 3.0; ITI TF-3 4.2.4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryError {
    /// `@errorCode`.
    pub error_code: ErrorCode,
    /// `@codeContext`: human-readable detail (required by the schema; may be empty).
    pub code_context: String,
    /// `@location`: where the error happened, e.g. the homeCommunityId of the failing community or the
    /// SOP Instance UID a transfer syntax is missing for.
    pub location: Option<String>,
    /// `@severity`.
    pub severity: Severity,
}

impl RegistryError {
    /// An error of severity Error.
    pub fn new(code: ErrorCode, context: impl Into<String>) -> RegistryError {
        RegistryError {
            error_code: code,
            code_context: context.into(),
            location: None,
            severity: Severity::Error,
        }
    }

    /// Sets `location`.
    pub fn at(mut self, location: impl Into<String>) -> RegistryError {
        self.location = Some(location.into());
        self
    }

    /// Sets severity Warning.
    pub fn warning(mut self) -> RegistryError {
        self.severity = Severity::Warning;
        self
    }
}

/// Whether `e` is `local` in the rs namespace or, as some peers write it, the rim namespace (issue 12,
/// defect 8: a `rim:RegistryErrorList` seen in the field was skipped, and a Failure read as Success).
pub(crate) fn is_rs_or_rim(e: &Elem<'_>, local: &str) -> bool {
    e.is(ns::RS, local) || e.is(ns::RIM, local)
}

/// Reads the children of a `RegistryErrorList`: every `RegistryError` in the rs namespace or, as some
/// peers write it, the rim namespace ([`is_rs_or_rim`]).
pub(crate) fn read_error_list<'i>(
    r: &mut Reader<'i>,
    el: &Elem<'i>,
    out: &mut Vec<RegistryError>,
) -> Result<(), XmlError> {
    while let Some(e) = r.child(el)? {
        if is_rs_or_rim(&e, "RegistryError") {
            let sev = match e.attr("severity") {
                None => Severity::Error,
                Some(s) => Severity::from_uri(s)
                    .ok_or_else(|| XmlError::invalid("RegistryError/@severity", s.to_owned()))?,
            };
            let error_code = ErrorCode::parse(e.required_attr("errorCode")?);
            let err = RegistryError {
                error_code,
                code_context: e.attr("codeContext").unwrap_or("").to_owned(),
                location: e.attr("location").map(str::to_owned),
                severity: sev,
            };
            r.skip(&e)?;
            out.push(err);
        }
    }
    Ok(())
}

/// Writes `rs:RegistryErrorList` (nothing when `errors` is empty; the list must hold at least one
/// error, `rs.xsd`). `highestSeverity` is written as the schema allows, from the errors.
pub(crate) fn write_error_list(w: &mut Writer, errors: &[RegistryError]) {
    if errors.is_empty() {
        return;
    }
    let highest = if errors.iter().any(|e| e.severity == Severity::Error) {
        Severity::Error
    } else {
        Severity::Warning
    };
    w.start("rs:RegistryErrorList")
        .attr("highestSeverity", highest.uri());
    for e in errors {
        w.start("rs:RegistryError")
            .attr("codeContext", &e.code_context)
            .attr("errorCode", e.error_code.as_str())
            .attr("severity", e.severity.uri())
            .attr_opt("location", e.location.as_deref())
            .end();
    }
    w.end();
}

/// `rim:Slot`: a name with a list of string values (ebRIM 3.0 SlotType1; each value at most 256
/// characters per `rim:LongName`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Slot {
    /// `@name`.
    pub name: String,
    /// `ValueList/Value` texts, trimmed, in order.
    pub values: Vec<String>,
}

impl Slot {
    /// A slot with values.
    pub fn new<S: Into<String>>(name: &str, values: impl IntoIterator<Item = S>) -> Slot {
        Slot {
            name: name.to_owned(),
            values: values.into_iter().map(Into::into).collect(),
        }
    }
}

fn read_slot<'i>(r: &mut Reader<'i>, el: &Elem<'i>) -> Result<Slot, XmlError> {
    let name = el.required_attr("name")?.trim().to_owned();
    let mut values = Vec::new();
    while let Some(c) = r.child(el)? {
        if c.is(ns::RIM, "ValueList") {
            while let Some(v) = r.child(&c)? {
                if v.is(ns::RIM, "Value") {
                    let t = r.text(&v)?;
                    values.push(t.trim().to_owned());
                }
            }
        }
    }
    Ok(Slot { name, values })
}

fn write_slot(w: &mut Writer, s: &Slot) {
    w.start("rim:Slot").attr("name", &s.name);
    w.start("rim:ValueList");
    for v in &s.values {
        w.leaf("rim:Value", v);
    }
    w.end();
    w.end();
}

/// Reads the `rim:Slot` children of a slot-list element (e.g. `RequestSlotList`).
pub(crate) fn read_slots<'i>(
    r: &mut Reader<'i>,
    el: &Elem<'i>,
    out: &mut Vec<Slot>,
) -> Result<(), XmlError> {
    while let Some(c) = r.child(el)? {
        if c.is(ns::RIM, "Slot") {
            out.push(read_slot(r, &c)?);
        }
    }
    Ok(())
}

pub(crate) fn write_slots(w: &mut Writer, slots: &[Slot]) {
    for s in slots {
        write_slot(w, s);
    }
}

/// `rim:LocalizedString` (ebRIM 3.0): a value (at most 1024 characters, `FreeFormText`) with optional
/// language and charset.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocalizedString {
    /// `@value`.
    pub value: String,
    /// `@xml:lang`.
    pub lang: Option<String>,
    /// `@charset`.
    pub charset: Option<String>,
}

/// `rim:InternationalStringType` (Name, Description): zero or more localized strings.
pub type InternationalString = Vec<LocalizedString>;

/// The first value of an international string, or `""`.
pub fn first_value(s: &InternationalString) -> &str {
    s.first().map(|l| l.value.as_str()).unwrap_or("")
}

/// An international string of one value, or none when `value` is empty.
pub fn intl(value: &str) -> InternationalString {
    if value.is_empty() {
        Vec::new()
    } else {
        vec![LocalizedString {
            value: value.to_owned(),
            lang: None,
            charset: None,
        }]
    }
}

fn read_intl<'i>(r: &mut Reader<'i>, el: &Elem<'i>) -> Result<InternationalString, XmlError> {
    let mut out = Vec::new();
    while let Some(c) = r.child(el)? {
        if c.is(ns::RIM, "LocalizedString") {
            out.push(LocalizedString {
                value: c.attr("value").unwrap_or("").to_owned(),
                lang: c.attr_ns(ns::XML, "lang").map(str::to_owned),
                charset: c.attr("charset").map(str::to_owned),
            });
        }
    }
    Ok(out)
}

fn write_intl(w: &mut Writer, name: &str, s: &InternationalString) {
    if s.is_empty() {
        return;
    }
    w.start(name);
    for l in s {
        w.start("rim:LocalizedString")
            .attr_opt("xml:lang", l.lang.as_deref())
            .attr_opt("charset", l.charset.as_deref())
            .attr("value", &l.value)
            .end();
    }
    w.end();
}

/// What every ebRIM `RegistryObject` has (ebRIM 3.0 RegistryObjectType): identity, slots, name,
/// description, version, classifications and external identifiers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegistryObject {
    /// `@id` (entryUUID for XDS objects, `urn:uuid:...`; symbolic ids are allowed in submissions).
    pub id: String,
    /// `@home`: the homeCommunityId of the community that holds the object (CP-429). Written as
    /// `urn:oid:`; read with or without that prefix; an empty attribute reads as absent. Only the
    /// top-level objects of a query response carry it (ITI TF-2b 3.38.4.1.2.1).
    pub home: Option<HomeCommunityId>,
    /// `@lid`: logical id (the entryUUID of the first version).
    pub lid: Option<String>,
    /// `@objectType`.
    pub object_type: Option<String>,
    /// `@status`: availability status, see [`availability`].
    pub status: Option<String>,
    /// `rim:Slot` children.
    pub slots: Vec<Slot>,
    /// `rim:Name`.
    pub name: InternationalString,
    /// `rim:Description`.
    pub description: InternationalString,
    /// `rim:VersionInfo/@versionName`.
    pub version_name: Option<String>,
    /// `rim:Classification` children.
    pub classifications: Vec<Classification>,
    /// `rim:ExternalIdentifier` children.
    pub external_identifiers: Vec<ExternalIdentifier>,
}

impl RegistryObject {
    /// An object with this id and nothing else.
    pub fn with_id(id: impl Into<String>) -> RegistryObject {
        RegistryObject {
            id: id.into(),
            ..RegistryObject::default()
        }
    }

    /// The first slot named `name`.
    pub fn slot(&self, name: &str) -> Option<&Slot> {
        self.slots.iter().find(|s| s.name == name)
    }

    /// The first value of the first slot named `name`.
    pub fn slot_value(&self, name: &str) -> Option<&str> {
        self.slot(name)
            .and_then(|s| s.values.first())
            .map(String::as_str)
    }

    /// Classifications with this `classificationScheme`.
    pub fn classifications_by<'a>(
        &'a self,
        scheme: &'a str,
    ) -> impl Iterator<Item = &'a Classification> + 'a {
        self.classifications
            .iter()
            .filter(move |c| c.classification_scheme.as_deref() == Some(scheme))
    }

    /// The value of the external identifier with this `identificationScheme`.
    pub fn external_id(&self, scheme: &str) -> Option<&str> {
        self.external_identifiers
            .iter()
            .find(|e| e.identification_scheme == scheme)
            .map(|e| e.value.as_str())
    }
}

/// How `@home` is treated on an object being read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum HomeMode {
    /// Top-level object: an invalid value is an error (the gateway routes on it).
    Strict,
    /// Nested object (classification, external identifier): `home` has no meaning there and is
    /// dropped (real responses carry `home=""` on them).
    Ignore,
}

fn read_home(el: &Elem<'_>, mode: HomeMode) -> Result<Option<HomeCommunityId>, XmlError> {
    if mode == HomeMode::Ignore {
        return Ok(None);
    }
    match el.attr("home").map(str::trim) {
        None | Some("") => Ok(None),
        Some(h) => h
            .parse()
            .map(Some)
            .map_err(|e| XmlError::invalid(format!("{}/@home", el.local), format!("{e}"))),
    }
}

fn opt_attr(el: &Elem<'_>, name: &str) -> Option<String> {
    el.attr(name).map(|v| v.trim().to_owned())
}

/// Reads the common attributes and children of a RegistryObject; children it does not know are
/// offered to `extra` (which returns whether it consumed them) and otherwise skipped.
fn read_object<'i>(
    r: &mut Reader<'i>,
    el: &Elem<'i>,
    home: HomeMode,
    mut extra: impl FnMut(&mut Reader<'i>, &Elem<'i>) -> Result<bool, XmlError>,
) -> Result<RegistryObject, XmlError> {
    let mut o = RegistryObject {
        id: el.required_attr("id")?.trim().to_owned(),
        home: read_home(el, home)?,
        lid: opt_attr(el, "lid"),
        object_type: opt_attr(el, "objectType"),
        status: opt_attr(el, "status"),
        ..RegistryObject::default()
    };
    while let Some(c) = r.child(el)? {
        if c.ns.uri() == ns::RIM {
            match c.local {
                "Slot" => {
                    o.slots.push(read_slot(r, &c)?);
                    continue;
                }
                "Name" => {
                    o.name = read_intl(r, &c)?;
                    continue;
                }
                "Description" => {
                    o.description = read_intl(r, &c)?;
                    continue;
                }
                "VersionInfo" => {
                    o.version_name = opt_attr(&c, "versionName");
                    continue;
                }
                "Classification" => {
                    if o.classifications.is_empty() && home == HomeMode::Strict {
                        // a DocumentEntry carries 8 to 12 (ITI TF-3 Table 4.2.3.2-1): room for
                        // them at once instead of growing 4 → 8 → 16 and copying each time
                        o.classifications.reserve_exact(12);
                    }
                    o.classifications.push(read_classification(r, &c)?);
                    continue;
                }
                "ExternalIdentifier" => {
                    o.external_identifiers
                        .push(read_external_identifier(r, &c)?);
                    continue;
                }
                _ => {}
            }
        }
        extra(r, &c)?;
    }
    Ok(o)
}

/// Writes the common attributes of a RegistryObject onto the open start tag.
fn write_object_attrs(w: &mut Writer, o: &RegistryObject) {
    w.attr("id", &o.id);
    if let Some(h) = &o.home {
        w.attr("home", &h.to_string());
    }
    w.attr_opt("lid", o.lid.as_deref())
        .attr_opt("objectType", o.object_type.as_deref())
        .attr_opt("status", o.status.as_deref());
}

/// Writes the common children of a RegistryObject in schema order.
fn write_object_children(w: &mut Writer, o: &RegistryObject) {
    write_slots(w, &o.slots);
    write_intl(w, "rim:Name", &o.name);
    write_intl(w, "rim:Description", &o.description);
    if let Some(v) = &o.version_name {
        w.start("rim:VersionInfo").attr("versionName", v).end();
    }
    for c in &o.classifications {
        write_classification(w, c);
    }
    for e in &o.external_identifiers {
        write_external_identifier(w, e);
    }
}

/// `rim:Classification` (ebRIM 3.0; ITI TF-3 4.2.3.1.2): a code (external classification scheme with
/// `nodeRepresentation`, slot `codingScheme` and `Name`) or a node (internal classification, e.g. a
/// RegistryPackage classified as SubmissionSet).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Classification {
    /// Common RegistryObject content (id, slots such as `codingScheme` or `authorInstitution`, Name).
    pub object: RegistryObject,
    /// `@classificationScheme`.
    pub classification_scheme: Option<String>,
    /// `@classifiedObject`.
    pub classified_object: String,
    /// `@classificationNode`.
    pub classification_node: Option<String>,
    /// `@nodeRepresentation`: the code (empty for author classifications).
    pub node_representation: Option<String>,
}

fn read_classification<'i>(r: &mut Reader<'i>, el: &Elem<'i>) -> Result<Classification, XmlError> {
    let classification_scheme = opt_attr(el, "classificationScheme");
    let classified_object = el.attr("classifiedObject").unwrap_or("").trim().to_owned();
    let classification_node = opt_attr(el, "classificationNode");
    let node_representation = el.attr("nodeRepresentation").map(str::to_owned);
    let object = read_object(r, el, HomeMode::Ignore, |_, _| Ok(false))?;
    Ok(Classification {
        object,
        classification_scheme,
        classified_object,
        classification_node,
        node_representation,
    })
}

fn write_classification(w: &mut Writer, c: &Classification) {
    w.start("rim:Classification");
    write_object_attrs(w, &c.object);
    w.attr_opt("classificationScheme", c.classification_scheme.as_deref())
        .attr("classifiedObject", &c.classified_object)
        .attr_opt("classificationNode", c.classification_node.as_deref())
        .attr_opt("nodeRepresentation", c.node_representation.as_deref());
    write_object_children(w, &c.object);
    w.end();
}

/// `rim:ExternalIdentifier` (ebRIM 3.0; ITI TF-3 4.2.3.1.3): patientId, uniqueId, sourceId ...
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExternalIdentifier {
    /// Common RegistryObject content (id, Name such as `XDSDocumentEntry.uniqueId`).
    pub object: RegistryObject,
    /// `@registryObject`: the id of the object identified.
    pub registry_object: String,
    /// `@identificationScheme`.
    pub identification_scheme: String,
    /// `@value`.
    pub value: String,
}

fn read_external_identifier<'i>(
    r: &mut Reader<'i>,
    el: &Elem<'i>,
) -> Result<ExternalIdentifier, XmlError> {
    let registry_object = el.attr("registryObject").unwrap_or("").trim().to_owned();
    let identification_scheme = el.required_attr("identificationScheme")?.trim().to_owned();
    let value = el.required_attr("value")?.trim().to_owned();
    let object = read_object(r, el, HomeMode::Ignore, |_, _| Ok(false))?;
    Ok(ExternalIdentifier {
        object,
        registry_object,
        identification_scheme,
        value,
    })
}

fn write_external_identifier(w: &mut Writer, e: &ExternalIdentifier) {
    w.start("rim:ExternalIdentifier");
    write_object_attrs(w, &e.object);
    w.attr("registryObject", &e.registry_object)
        .attr("identificationScheme", &e.identification_scheme)
        .attr("value", &e.value);
    write_object_children(w, &e.object);
    w.end();
}

/// `rim:ExtrinsicObject`: a DocumentEntry on the wire (ITI TF-3 4.2.3.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExtrinsicObject {
    /// Common RegistryObject content.
    pub object: RegistryObject,
    /// `@mimeType`.
    pub mime_type: Option<String>,
    /// `@isOpaque`.
    pub is_opaque: Option<bool>,
    /// `rim:ContentVersionInfo/@versionName`.
    pub content_version: Option<String>,
}

fn parse_bool(field: &str, v: &str) -> Result<bool, XmlError> {
    match v.trim() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(XmlError::invalid(field, other.to_owned())),
    }
}

impl ExtrinsicObject {
    /// Reads a `rim:ExtrinsicObject` element (the caller has matched the name).
    pub fn read<'i>(r: &mut Reader<'i>, el: &Elem<'i>) -> Result<ExtrinsicObject, XmlError> {
        let mime_type = opt_attr(el, "mimeType");
        let is_opaque = el
            .attr("isOpaque")
            .map(|v| parse_bool("ExtrinsicObject/@isOpaque", v))
            .transpose()?;
        let mut content_version = None;
        let object = read_object(r, el, HomeMode::Strict, |_, c| {
            if c.is(ns::RIM, "ContentVersionInfo") {
                content_version = opt_attr(c, "versionName");
                return Ok(true);
            }
            Ok(false)
        })?;
        Ok(ExtrinsicObject {
            object,
            mime_type,
            is_opaque,
            content_version,
        })
    }

    /// Writes `rim:ExtrinsicObject`.
    pub fn write(&self, w: &mut Writer) {
        w.start("rim:ExtrinsicObject");
        write_object_attrs(w, &self.object);
        w.attr_opt("mimeType", self.mime_type.as_deref());
        if let Some(o) = self.is_opaque {
            w.attr("isOpaque", if o { "true" } else { "false" });
        }
        write_object_children(w, &self.object);
        if let Some(v) = &self.content_version {
            w.start("rim:ContentVersionInfo")
                .attr("versionName", v)
                .end();
        }
        w.end();
    }
}

/// `rim:RegistryPackage`: a SubmissionSet or Folder (ITI TF-3 4.2.3.3, 4.2.3.4).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegistryPackage {
    /// Common RegistryObject content.
    pub object: RegistryObject,
}

/// `rim:Association` (ITI TF-3 4.2.2): `HasMember`, `RPLC`, ...
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Association {
    /// Common RegistryObject content.
    pub object: RegistryObject,
    /// `@associationType`, see [`association_type`].
    pub association_type: String,
    /// `@sourceObject`.
    pub source_object: String,
    /// `@targetObject`.
    pub target_object: String,
}

/// `rim:ObjectRef`: a reference returned for `returnType="ObjectRef"` (ebRIM 3.0 ObjectRefType).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectRef {
    /// `@id`.
    pub id: String,
    /// `@home` (ITI TF-2b 3.38.4.1.2.1: required on every returned ObjectRef).
    pub home: Option<HomeCommunityId>,
    /// `rim:Slot` children.
    pub slots: Vec<Slot>,
}

/// One member of `rim:RegistryObjectList` (ebRIM 3.0 `Identifiable` substitution group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identifiable {
    /// A DocumentEntry.
    ExtrinsicObject(ExtrinsicObject),
    /// A SubmissionSet or Folder.
    RegistryPackage(RegistryPackage),
    /// An Association.
    Association(Association),
    /// A standalone Classification (e.g. the SubmissionSet node classification in a LeafClass answer).
    Classification(Classification),
    /// An ObjectRef.
    ObjectRef(ObjectRef),
    /// Any other member, kept as self-contained raw XML and written back unchanged.
    Other(String),
}

impl Identifiable {
    /// The object's `id` (`None` for [`Identifiable::Other`]).
    pub fn id(&self) -> Option<&str> {
        match self {
            Identifiable::ExtrinsicObject(o) => Some(&o.object.id),
            Identifiable::RegistryPackage(o) => Some(&o.object.id),
            Identifiable::Association(o) => Some(&o.object.id),
            Identifiable::Classification(o) => Some(&o.object.id),
            Identifiable::ObjectRef(o) => Some(&o.id),
            Identifiable::Other(_) => None,
        }
    }

    /// The object's `home`.
    pub fn home(&self) -> Option<&HomeCommunityId> {
        match self {
            Identifiable::ExtrinsicObject(o) => o.object.home.as_ref(),
            Identifiable::RegistryPackage(o) => o.object.home.as_ref(),
            Identifiable::Association(o) => o.object.home.as_ref(),
            Identifiable::Classification(o) => o.object.home.as_ref(),
            Identifiable::ObjectRef(o) => o.home.as_ref(),
            Identifiable::Other(_) => None,
        }
    }

    /// Element name for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Identifiable::ExtrinsicObject(_) => "ExtrinsicObject",
            Identifiable::RegistryPackage(_) => "RegistryPackage",
            Identifiable::Association(_) => "Association",
            Identifiable::Classification(_) => "Classification",
            Identifiable::ObjectRef(_) => "ObjectRef",
            Identifiable::Other(_) => "other",
        }
    }

    /// Whether ITI TF-2b 3.38.4.1.2.1 requires `home` on this object in a Cross Gateway Query
    /// response (ExtrinsicObject, RegistryPackage and ObjectRef).
    pub fn requires_home(&self) -> bool {
        matches!(
            self,
            Identifiable::ExtrinsicObject(_)
                | Identifiable::RegistryPackage(_)
                | Identifiable::ObjectRef(_)
        )
    }

    /// Reads one member of a `RegistryObjectList`; `None` for a non-element position (never).
    pub fn read<'i>(r: &mut Reader<'i>, c: &Elem<'i>) -> Result<Identifiable, XmlError> {
        if c.ns.uri() == ns::RIM {
            match c.local {
                "ExtrinsicObject" => {
                    return ExtrinsicObject::read(r, c).map(Identifiable::ExtrinsicObject);
                }
                "RegistryPackage" => {
                    let object = read_object(r, c, HomeMode::Strict, |_, _| Ok(false))?;
                    return Ok(Identifiable::RegistryPackage(RegistryPackage { object }));
                }
                "Association" => {
                    let association_type = c.required_attr("associationType")?.trim().to_owned();
                    let source_object = c.required_attr("sourceObject")?.trim().to_owned();
                    let target_object = c.required_attr("targetObject")?.trim().to_owned();
                    let object = read_object(r, c, HomeMode::Strict, |_, _| Ok(false))?;
                    return Ok(Identifiable::Association(Association {
                        object,
                        association_type,
                        source_object,
                        target_object,
                    }));
                }
                "Classification" => {
                    let mut cl = read_classification(r, c)?;
                    cl.object.home = read_home(c, HomeMode::Strict)?;
                    return Ok(Identifiable::Classification(cl));
                }
                "ObjectRef" => {
                    let id = c.required_attr("id")?.trim().to_owned();
                    let home = read_home(c, HomeMode::Strict)?;
                    let mut slots = Vec::new();
                    read_slots(r, c, &mut slots)?;
                    return Ok(Identifiable::ObjectRef(ObjectRef { id, home, slots }));
                }
                _ => {}
            }
        }
        r.raw_fragment(c).map(Identifiable::Other)
    }

    /// Writes the member.
    pub fn write(&self, w: &mut Writer) {
        match self {
            Identifiable::ExtrinsicObject(o) => o.write(w),
            Identifiable::RegistryPackage(p) => {
                w.start("rim:RegistryPackage");
                write_object_attrs(w, &p.object);
                write_object_children(w, &p.object);
                w.end();
            }
            Identifiable::Association(a) => {
                w.start("rim:Association");
                write_object_attrs(w, &a.object);
                w.attr("associationType", &a.association_type)
                    .attr("sourceObject", &a.source_object)
                    .attr("targetObject", &a.target_object);
                write_object_children(w, &a.object);
                w.end();
            }
            Identifiable::Classification(c) => write_classification(w, c),
            Identifiable::ObjectRef(o) => {
                w.start("rim:ObjectRef").attr("id", &o.id);
                if let Some(h) = &o.home {
                    w.attr("home", &h.to_string());
                }
                write_slots(w, &o.slots);
                w.end();
            }
            Identifiable::Other(raw) => {
                w.raw(raw);
            }
        }
    }
}

/// Reads the members of a `rim:RegistryObjectList`.
pub fn read_object_list<'i>(
    r: &mut Reader<'i>,
    el: &Elem<'i>,
) -> Result<Vec<Identifiable>, XmlError> {
    let mut out = Vec::new();
    while let Some(c) = r.child(el)? {
        out.push(Identifiable::read(r, &c)?);
    }
    Ok(out)
}

/// Writes `rim:RegistryObjectList` (always, also when empty: the schema requires it in
/// `AdhocQueryResponse`).
pub fn write_object_list(w: &mut Writer, objects: &[Identifiable]) {
    w.start("rim:RegistryObjectList");
    for o in objects {
        o.write(w);
    }
    w.end();
}
