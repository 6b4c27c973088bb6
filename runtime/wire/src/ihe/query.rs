//! ITI-18 Registry Stored Query and ITI-38 Cross Gateway Query: `query:AdhocQueryRequest` and
//! `query:AdhocQueryResponse` (ITI TF-2a 3.18.4.1, ITI TF-2b 3.38.4.1), with the stored-query parameter
//! syntax (ITI TF-2a 3.18.4.1.2.3.5 – 3.18.4.1.2.3.7).

use std::fmt;

use crate::model::HomeCommunityId;
use crate::xml::{Elem, Reader, Writer, XmlError, ns};

use super::Message;
use super::ebrim::{
    ErrorCode, Identifiable, RegistryError, ResponseStatus, Slot, is_rs_or_rim, read_error_list,
    read_object_list, read_slots, write_error_list, write_object_list, write_slots,
};

/// Stored query ids (`AdhocQuery/@id`, ITI TF-2a 3.18.4.1.2.3.7; docs/DOMAIN.md "Stored queries").
pub mod stored_query {
    /// FindDocuments.
    pub const FIND_DOCUMENTS: &str = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d";
    /// FindSubmissionSets.
    pub const FIND_SUBMISSION_SETS: &str = "urn:uuid:f26abbcb-ac74-4422-8a30-edb644bbc1a9";
    /// GetDocuments.
    pub const GET_DOCUMENTS: &str = "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4";
    /// GetAssociations.
    pub const GET_ASSOCIATIONS: &str = "urn:uuid:a7ae438b-4bc2-4642-93e9-be891f7bb155";
    /// FindDocumentsByReferenceId (query by accession number or Study Instance UID).
    pub const FIND_DOCUMENTS_BY_REFERENCE_ID: &str =
        "urn:uuid:12941a89-e02e-4be5-967c-ce4bfc8fe492";
}

/// Stored-query parameter names used by the gateway (ITI TF-2a 3.18.4.1.2.3.7).
pub mod param {
    /// `$XDSDocumentEntryPatientId` (single, CX).
    pub const DE_PATIENT_ID: &str = "$XDSDocumentEntryPatientId";
    /// `$XDSDocumentEntryStatus` (list).
    pub const DE_STATUS: &str = "$XDSDocumentEntryStatus";
    /// `$XDSDocumentEntryClassCode` (list of `code^^scheme`).
    pub const DE_CLASS_CODE: &str = "$XDSDocumentEntryClassCode";
    /// `$XDSDocumentEntryTypeCode`.
    pub const DE_TYPE_CODE: &str = "$XDSDocumentEntryTypeCode";
    /// `$XDSDocumentEntryFormatCode`.
    pub const DE_FORMAT_CODE: &str = "$XDSDocumentEntryFormatCode";
    /// `$XDSDocumentEntryEventCodeList` (AND over slots, OR within one).
    pub const DE_EVENT_CODE_LIST: &str = "$XDSDocumentEntryEventCodeList";
    /// `$XDSDocumentEntryHealthcareFacilityTypeCode`.
    pub const DE_HEALTHCARE_FACILITY_TYPE_CODE: &str =
        "$XDSDocumentEntryHealthcareFacilityTypeCode";
    /// `$XDSDocumentEntryPracticeSettingCode`.
    pub const DE_PRACTICE_SETTING_CODE: &str = "$XDSDocumentEntryPracticeSettingCode";
    /// `$XDSDocumentEntryConfidentialityCode`.
    pub const DE_CONFIDENTIALITY_CODE: &str = "$XDSDocumentEntryConfidentialityCode";
    /// `$XDSDocumentEntryServiceStartTimeFrom` (number, DTM).
    pub const DE_SERVICE_START_TIME_FROM: &str = "$XDSDocumentEntryServiceStartTimeFrom";
    /// `$XDSDocumentEntryServiceStartTimeTo`.
    pub const DE_SERVICE_START_TIME_TO: &str = "$XDSDocumentEntryServiceStartTimeTo";
    /// `$XDSDocumentEntryCreationTimeFrom`.
    pub const DE_CREATION_TIME_FROM: &str = "$XDSDocumentEntryCreationTimeFrom";
    /// `$XDSDocumentEntryCreationTimeTo`.
    pub const DE_CREATION_TIME_TO: &str = "$XDSDocumentEntryCreationTimeTo";
    /// `$XDSDocumentEntryType` (stable / on-demand objectType list).
    pub const DE_TYPE: &str = "$XDSDocumentEntryType";
    /// `$XDSDocumentEntryEntryUUID` (list).
    pub const DE_ENTRY_UUID: &str = "$XDSDocumentEntryEntryUUID";
    /// `$XDSDocumentEntryUniqueId` (list).
    pub const DE_UNIQUE_ID: &str = "$XDSDocumentEntryUniqueId";
    /// `$XDSDocumentEntryReferenceIdList` (list of CXi).
    pub const DE_REFERENCE_ID_LIST: &str = "$XDSDocumentEntryReferenceIdList";
    /// `$XDSSubmissionSetPatientId`.
    pub const SS_PATIENT_ID: &str = "$XDSSubmissionSetPatientId";
    /// `$XDSSubmissionSetStatus`.
    pub const SS_STATUS: &str = "$XDSSubmissionSetStatus";
    /// `$uuid` (GetAssociations).
    pub const UUID: &str = "$uuid";
    /// `$homeCommunityId` (GetDocuments etc.).
    pub const HOME_COMMUNITY_ID: &str = "$homeCommunityId";
    /// `$targetCommunityIdList`: the communities behind a responding gateway that an ITI-38 (or ITI-18)
    /// query is meant for (IHE CP-ITI-1301, Target Communities option; the Twiin consultation text of
    /// ITI-38, consultatie.twiin.nl/prepublicatie/tc150d/10-4-2-ihe-iti-38-cross-gateway-query). Its
    /// value form is not public beyond the name: this gateway writes it like the other list parameters
    /// (ITI TF-2a 3.18.4.1.2.3.5), one slot `('urn:oid:A','urn:oid:B')`. See
    /// [`super::AdhocQuery::target_communities`].
    pub const TARGET_COMMUNITY_ID_LIST: &str = "$targetCommunityIdList";
}

/// The stored queries this gateway handles, by `AdhocQuery/@id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoredQuery {
    /// FindDocuments.
    FindDocuments,
    /// FindSubmissionSets.
    FindSubmissionSets,
    /// GetDocuments.
    GetDocuments,
    /// GetAssociations.
    GetAssociations,
    /// FindDocumentsByReferenceId.
    FindDocumentsByReferenceId,
}

impl StoredQuery {
    /// All five.
    pub const ALL: [StoredQuery; 5] = [
        StoredQuery::FindDocuments,
        StoredQuery::FindSubmissionSets,
        StoredQuery::GetDocuments,
        StoredQuery::GetAssociations,
        StoredQuery::FindDocumentsByReferenceId,
    ];

    /// The query id (`urn:uuid:...`).
    pub fn id(self) -> &'static str {
        match self {
            StoredQuery::FindDocuments => stored_query::FIND_DOCUMENTS,
            StoredQuery::FindSubmissionSets => stored_query::FIND_SUBMISSION_SETS,
            StoredQuery::GetDocuments => stored_query::GET_DOCUMENTS,
            StoredQuery::GetAssociations => stored_query::GET_ASSOCIATIONS,
            StoredQuery::FindDocumentsByReferenceId => stored_query::FIND_DOCUMENTS_BY_REFERENCE_ID,
        }
    }

    /// The query with this id (case-insensitive UUID, surrounding whitespace ignored).
    pub fn from_id(id: &str) -> Option<StoredQuery> {
        let id = id.trim();
        StoredQuery::ALL
            .into_iter()
            .find(|q| q.id().eq_ignore_ascii_case(id))
    }

    /// Short name, e.g. `FindDocuments`.
    pub fn name(self) -> &'static str {
        match self {
            StoredQuery::FindDocuments => "FindDocuments",
            StoredQuery::FindSubmissionSets => "FindSubmissionSets",
            StoredQuery::GetDocuments => "GetDocuments",
            StoredQuery::GetAssociations => "GetAssociations",
            StoredQuery::FindDocumentsByReferenceId => "FindDocumentsByReferenceId",
        }
    }

    /// Required parameters; each inner list is a choice where one of the names must be present
    /// (GetDocuments takes EntryUUID or UniqueId). ITI TF-2a 3.18.4.1.2.3.7.
    pub fn required_params(self) -> &'static [&'static [&'static str]] {
        match self {
            StoredQuery::FindDocuments => &[&[param::DE_PATIENT_ID], &[param::DE_STATUS]],
            StoredQuery::FindSubmissionSets => &[&[param::SS_PATIENT_ID], &[param::SS_STATUS]],
            StoredQuery::GetDocuments => &[&[param::DE_ENTRY_UUID, param::DE_UNIQUE_ID]],
            StoredQuery::GetAssociations => &[&[param::UUID]],
            StoredQuery::FindDocumentsByReferenceId => &[
                &[param::DE_PATIENT_ID],
                &[param::DE_STATUS],
                &[param::DE_REFERENCE_ID_LIST],
            ],
        }
    }
}

impl fmt::Display for StoredQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A stored-query parameter that breaks the rules; becomes a `RegistryError` for the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ParamError {
    /// The error code to answer with (XDSStoredQueryMissingParam, XDSStoredQueryParamNumber,
    /// XDSUnknownStoredQuery or XDSRegistryError for format errors).
    pub code: ErrorCode,
    /// What is wrong, naming the parameter.
    pub message: String,
}

impl ParamError {
    fn format(name: &str, msg: impl fmt::Display) -> ParamError {
        ParamError {
            code: ErrorCode::XDSRegistryError,
            message: format!("parameter {name}: {msg}"),
        }
    }

    /// The RegistryError to answer with.
    pub fn to_registry_error(&self) -> RegistryError {
        RegistryError::new(self.code.clone(), self.message.clone())
    }
}

/// Parses a quoted string `'...'` at the start of `s` (a doubled `''` is one quote, ITI TF-2a
/// 3.18.4.1.2.3.5); returns the value and the rest.
fn quoted(s: &str) -> Option<(String, &str)> {
    let rest = s.strip_prefix('\'')?;
    let mut out = String::with_capacity(rest.len());
    let mut it = rest.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        if c == '\'' {
            if let Some((_, '\'')) = it.peek() {
                out.push('\'');
                it.next();
                continue;
            }
            return Some((out, &rest[i + 1..]));
        }
        out.push(c);
    }
    None
}

/// An unquoted number (time parameters are written as bare DTM digits).
fn number(s: &str) -> Option<(String, &str)> {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    Some((s[..end].to_owned(), &s[end..]))
}

/// Parses a single-valued parameter: `'value'` (or a bare number). Errors name the parameter.
pub fn parse_single(name: &str, value: &str) -> Result<String, ParamError> {
    let t = value.trim();
    let (v, rest) = quoted(t)
        .or_else(|| number(t))
        .ok_or_else(|| ParamError::format(name, format!("expected 'value', found {t}")))?;
    if !rest.trim().is_empty() {
        return Err(ParamError::format(
            name,
            format!("unexpected text after the value: {rest}"),
        ));
    }
    Ok(v)
}

/// Parses a list parameter `('a','b')` (quoted strings or numbers, comma separated, whitespace
/// allowed). Errors name the parameter.
pub fn parse_list(name: &str, value: &str) -> Result<Vec<String>, ParamError> {
    let t = value.trim();
    let inner = t
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| ParamError::format(name, format!("expected ('a','b'), found {t}")))?;
    let mut out = Vec::new();
    let mut rest = inner.trim_start();
    if rest.trim().is_empty() {
        return Err(ParamError::format(name, "empty list"));
    }
    loop {
        let (v, r) = quoted(rest)
            .or_else(|| number(rest))
            .ok_or_else(|| ParamError::format(name, format!("expected a quoted value in {t}")))?;
        out.push(v);
        let r = r.trim_start();
        if r.is_empty() {
            return Ok(out);
        }
        rest = r
            .strip_prefix(',')
            .ok_or_else(|| ParamError::format(name, format!("expected ',' in {t}")))?
            .trim_start();
    }
}

/// Splits a coded parameter value `code^^scheme` (ITI TF-2a 3.18.4.1.2.3.6); both parts required.
pub fn parse_code(name: &str, value: &str) -> Result<(String, String), ParamError> {
    let mut parts = value.split('^');
    let code = parts.next().unwrap_or("").trim();
    let _ = parts.next();
    let scheme = parts.next().unwrap_or("").trim();
    if code.is_empty() || scheme.is_empty() || parts.next().is_some() {
        return Err(ParamError::format(
            name,
            format!("expected code^^codingScheme, found {value}"),
        ));
    }
    Ok((code.to_owned(), scheme.to_owned()))
}

/// `'value'` with embedded quotes doubled.
pub fn format_single(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// `('a','b')` with embedded quotes doubled.
pub fn format_list<S: AsRef<str>>(values: &[S]) -> String {
    let mut out = String::from("(");
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format_single(v.as_ref()));
    }
    out.push(')');
    out
}

/// `ResponseOption/@returnType` values IHE allows (ITI TF-2a 3.18.4.1.2.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ReturnType {
    /// Full metadata objects.
    #[default]
    LeafClass,
    /// References only (`rim:ObjectRef`).
    ObjectRef,
}

impl ReturnType {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReturnType::LeafClass => "LeafClass",
            ReturnType::ObjectRef => "ObjectRef",
        }
    }
}

/// `query:ResponseOption`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResponseOption {
    /// `@returnType`. Read as LeafClass when absent (tolerance; IHE requires it and this gateway always
    /// writes it).
    pub return_type: ReturnType,
    /// `@returnComposedObjects` (IHE requires `true`; default `false` per schema).
    pub return_composed_objects: bool,
}

/// `rim:AdhocQuery`: the stored query id, the community asked (`home`) and the parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AdhocQuery {
    /// `@id`: the stored query id, see [`stored_query`].
    pub id: String,
    /// `@home` (CP-429): the community to query; required for ITI-38 queries by entryUUID and
    /// answered with XDSMissingHomeCommunityId when absent (ITI TF-2b 3.38.4.1.2.1).
    pub home: Option<HomeCommunityId>,
    /// Parameters in document order. Several values in one slot are OR-ed, several slots with the same
    /// name AND-ed (ITI TF-2a 3.18.4.1.2.3.5).
    pub slots: Vec<Slot>,
}

impl AdhocQuery {
    /// A query with no parameters.
    pub fn new(query: StoredQuery) -> AdhocQuery {
        AdhocQuery {
            id: query.id().to_owned(),
            home: None,
            slots: Vec::new(),
        }
    }

    /// The stored query, when it is one this gateway knows.
    pub fn stored_query(&self) -> Option<StoredQuery> {
        StoredQuery::from_id(&self.id)
    }

    /// The stored query, or XDSUnknownStoredQuery.
    pub fn require_stored_query(&self) -> Result<StoredQuery, ParamError> {
        self.stored_query().ok_or_else(|| ParamError {
            code: ErrorCode::XDSUnknownStoredQuery,
            message: format!("unknown stored query {}", self.id),
        })
    }

    /// Whether a parameter with this name is present (with at least one value).
    pub fn has(&self, name: &str) -> bool {
        self.slots
            .iter()
            .any(|s| s.name == name && !s.values.is_empty())
    }

    /// A single-valued parameter `'value'`: `None` when absent; XDSStoredQueryParamNumber when it
    /// occurs in more than one slot or value; XDSRegistryError when badly quoted.
    pub fn single(&self, name: &str) -> Result<Option<String>, ParamError> {
        let mut found = self.slots.iter().filter(|s| s.name == name);
        let Some(slot) = found.next() else {
            return Ok(None);
        };
        if found.next().is_some() || slot.values.len() > 1 {
            return Err(ParamError {
                code: ErrorCode::XDSStoredQueryParamNumber,
                message: format!("parameter {name} must have a single value"),
            });
        }
        match slot.values.first() {
            None => Ok(None),
            Some(v) => parse_single(name, v).map(Some),
        }
    }

    /// A list parameter as one OR-list: every value of the first slot with this name, each `('a',..)`,
    /// concatenated. Empty when absent. Use [`AdhocQuery::and_lists`] for parameters that may repeat.
    pub fn list(&self, name: &str) -> Result<Vec<String>, ParamError> {
        match self.slots.iter().find(|s| s.name == name) {
            None => Ok(Vec::new()),
            Some(s) => Self::slot_list(name, s),
        }
    }

    fn slot_list(name: &str, s: &Slot) -> Result<Vec<String>, ParamError> {
        let mut out = Vec::new();
        for v in &s.values {
            out.extend(parse_list(name, v)?);
        }
        Ok(out)
    }

    /// A repeatable list parameter (e.g. `$XDSDocumentEntryEventCodeList`): one OR-list per slot, the
    /// slots AND-ed.
    pub fn and_lists(&self, name: &str) -> Result<Vec<Vec<String>>, ParamError> {
        self.slots
            .iter()
            .filter(|s| s.name == name)
            .map(|s| Self::slot_list(name, s))
            .collect()
    }

    /// The `$targetCommunityIdList` parameter ([`param::TARGET_COMMUNITY_ID_LIST`]) as written: `None`
    /// when absent; `Some` of its entries (trimmed, not yet checked to be homeCommunityIds) when present,
    /// empty when the slot has no value or only `()` / blank values. Each value may be a list
    /// `('a','b')` or a single `'a'` (the form is not public, see the constant). Errors:
    /// XDSStoredQueryParamNumber when the parameter occurs in more than one slot, XDSRegistryError when a
    /// value is neither form.
    pub fn target_communities(&self) -> Result<Option<Vec<String>>, ParamError> {
        let name = param::TARGET_COMMUNITY_ID_LIST;
        let mut found = self.slots.iter().filter(|s| s.name == name);
        let Some(slot) = found.next() else {
            return Ok(None);
        };
        if found.next().is_some() {
            return Err(ParamError {
                code: ErrorCode::XDSStoredQueryParamNumber,
                message: format!("parameter {name} must occur in one slot"),
            });
        }
        let mut out = Vec::new();
        for v in &slot.values {
            let t = v.trim();
            let inner_blank = t
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .is_some_and(|r| r.trim().is_empty());
            if t.is_empty() || inner_blank {
                continue;
            }
            let values = if t.starts_with('(') {
                parse_list(name, t)?
            } else {
                vec![parse_single(name, t)?]
            };
            out.extend(values.into_iter().map(|v| v.trim().to_owned()));
        }
        Ok(Some(out))
    }

    /// Sets `$targetCommunityIdList` to `ids` (replacing any slot of that name), one slot
    /// `('urn:oid:A','urn:oid:B')`; an empty `ids` removes the parameter (an empty list is an error at
    /// the responding gateway, it never means "everyone").
    pub fn set_target_communities(&mut self, ids: &[HomeCommunityId]) -> &mut Self {
        self.slots
            .retain(|s| s.name != param::TARGET_COMMUNITY_ID_LIST);
        if !ids.is_empty() {
            let values: Vec<String> = ids.iter().map(ToString::to_string).collect();
            self.add_list(param::TARGET_COMMUNITY_ID_LIST, &values);
        }
        self
    }

    /// Sets a single-valued parameter (replacing any slot of that name), quoting it.
    pub fn set_single(&mut self, name: &str, value: &str) -> &mut Self {
        self.slots.retain(|s| s.name != name);
        self.slots.push(Slot::new(name, [format_single(value)]));
        self
    }

    /// Adds a list parameter as one slot `('a','b')` (an OR-list; call again with the same name for an
    /// AND).
    pub fn add_list<S: AsRef<str>>(&mut self, name: &str, values: &[S]) -> &mut Self {
        self.slots.push(Slot::new(name, [format_list(values)]));
        self
    }

    /// Checks the stored query is known and its required parameters are present
    /// (XDSUnknownStoredQuery, XDSStoredQueryMissingParam).
    pub fn check_required(&self) -> Result<StoredQuery, ParamError> {
        let q = self.require_stored_query()?;
        for choice in q.required_params() {
            if !choice.iter().any(|n| self.has(n)) {
                return Err(ParamError {
                    code: ErrorCode::XDSStoredQueryMissingParam,
                    message: format!("{q} requires parameter {}", choice.join(" or ")),
                });
            }
        }
        Ok(q)
    }

    pub(crate) fn read<'i>(r: &mut Reader<'i>, el: &Elem<'i>) -> Result<AdhocQuery, XmlError> {
        let id = el.required_attr("id")?.trim().to_owned();
        let home = match el.attr("home").map(str::trim) {
            None | Some("") => None,
            Some(h) => Some(
                h.parse()
                    .map_err(|e| XmlError::invalid("AdhocQuery/@home", format!("{e}")))?,
            ),
        };
        let mut slots = Vec::new();
        read_slots(r, el, &mut slots)?;
        Ok(AdhocQuery { id, home, slots })
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        w.start("rim:AdhocQuery").attr("id", &self.id);
        if let Some(h) = &self.home {
            w.attr("home", &h.to_string());
        }
        write_slots(w, &self.slots);
        w.end();
    }
}

/// `query:AdhocQueryRequest` (ITI-18 / ITI-38 request body).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AdhocQueryRequest {
    /// `query:ResponseOption`.
    pub response_option: ResponseOption,
    /// `rim:AdhocQuery`.
    pub query: AdhocQuery,
}

impl AdhocQueryRequest {
    /// A request for `query` with `returnComposedObjects="true"` and the given return type.
    pub fn new(query: AdhocQuery, return_type: ReturnType) -> AdhocQueryRequest {
        AdhocQueryRequest {
            response_option: ResponseOption {
                return_type,
                return_composed_objects: true,
            },
            query,
        }
    }
}

impl Message for AdhocQueryRequest {
    const ELEMENT: (&'static str, &'static str) = (ns::QUERY, "AdhocQueryRequest");

    fn read_body<'i>(r: &mut Reader<'i>, el: Elem<'i>) -> Result<Self, XmlError> {
        let mut option = None;
        let mut query = None;
        while let Some(c) = r.child(&el)? {
            if c.is(ns::QUERY, "ResponseOption") {
                let return_type = match c.attr("returnType").map(str::trim) {
                    None | Some("LeafClass") => ReturnType::LeafClass,
                    Some("ObjectRef") => ReturnType::ObjectRef,
                    Some(other) => {
                        return Err(XmlError::invalid(
                            "ResponseOption/@returnType",
                            format!("{other} (IHE allows LeafClass or ObjectRef)"),
                        ));
                    }
                };
                let return_composed_objects = match c.attr("returnComposedObjects").map(str::trim) {
                    None | Some("false") | Some("0") => false,
                    Some("true") | Some("1") => true,
                    Some(other) => {
                        return Err(XmlError::invalid(
                            "ResponseOption/@returnComposedObjects",
                            other.to_owned(),
                        ));
                    }
                };
                option = Some(ResponseOption {
                    return_type,
                    return_composed_objects,
                });
            } else if c.is(ns::RIM, "AdhocQuery") {
                query = Some(AdhocQuery::read(r, &c)?);
            }
        }
        Ok(AdhocQueryRequest {
            response_option: option
                .ok_or_else(|| XmlError::Missing("query:ResponseOption".into()))?,
            query: query.ok_or_else(|| XmlError::Missing("rim:AdhocQuery".into()))?,
        })
    }

    fn write_body(&self, w: &mut Writer) {
        w.start("query:AdhocQueryRequest")
            .attr("xmlns:query", ns::QUERY)
            .attr("xmlns:rim", ns::RIM);
        w.start("query:ResponseOption")
            .attr("returnType", self.response_option.return_type.as_str())
            .attr(
                "returnComposedObjects",
                if self.response_option.return_composed_objects {
                    "true"
                } else {
                    "false"
                },
            )
            .end();
        self.query.write(w);
        w.end();
    }
}

/// `query:AdhocQueryResponse` (ITI-18 / ITI-38 response body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdhocQueryResponse {
    /// `@status`.
    pub status: ResponseStatus,
    /// `rs:RegistryErrorList/rs:RegistryError`.
    pub errors: Vec<RegistryError>,
    /// `rim:RegistryObjectList` members in order.
    pub objects: Vec<Identifiable>,
    /// `@totalResultCount`, when given.
    pub total_result_count: Option<u64>,
}

impl Default for AdhocQueryResponse {
    fn default() -> Self {
        AdhocQueryResponse {
            status: ResponseStatus::Success,
            errors: Vec::new(),
            objects: Vec::new(),
            total_result_count: None,
        }
    }
}

impl AdhocQueryResponse {
    /// A response with these objects and errors, status derived by [`AdhocQueryResponse::derive_status`].
    pub fn new(objects: Vec<Identifiable>, errors: Vec<RegistryError>) -> AdhocQueryResponse {
        let mut r = AdhocQueryResponse {
            status: ResponseStatus::Success,
            errors,
            objects,
            total_result_count: None,
        };
        r.status = r.derive_status();
        r
    }

    /// The status an aggregating gateway reports: Success without errors of severity Error,
    /// PartialSuccess with such errors and some objects, Failure with errors and no objects
    /// (ITI TF-2b 3.38.4.2.2; NIST 15814).
    pub fn derive_status(&self) -> ResponseStatus {
        let has_error = self
            .errors
            .iter()
            .any(|e| e.severity == super::ebrim::Severity::Error);
        match (has_error, self.objects.is_empty()) {
            (false, _) => ResponseStatus::Success,
            (true, false) => ResponseStatus::PartialSuccess,
            (true, true) => ResponseStatus::Failure,
        }
    }

    /// Makes the answer's own `status` count, for an answer read from `community` (issue 12, defect 8).
    /// Aggregation derives a community's outcome from its errors ([`AdhocQueryResponse::derive_status`]),
    /// so an answer that states Failure or PartialSuccess but carries no error of severity Error (its
    /// RegistryErrorList absent, or in a namespace nobody reads) would count as Success. Such an answer
    /// gets one XDSRegistryError of severity Error, located at `community`, naming the stated status.
    /// A Failure's objects are left out (the community said this answer failed; the error says how
    /// many). A Success is left as it is: its errors, if any, still count.
    pub fn enforce_stated_status(&mut self, community: &str) {
        let has_error = self
            .errors
            .iter()
            .any(|e| e.severity == super::ebrim::Severity::Error);
        let dropped = match self.status {
            ResponseStatus::Success => return,
            ResponseStatus::Failure => std::mem::take(&mut self.objects).len(),
            ResponseStatus::PartialSuccess => 0,
        };
        if has_error && dropped == 0 {
            return;
        }
        let mut text = format!("{community}: answered {}", self.status.name());
        if !has_error {
            text.push_str(" without a RegistryError of severity Error");
        }
        if dropped > 0 {
            text.push_str(&format!(
                "; the {dropped} objects of that answer are left out"
            ));
        }
        self.errors
            .push(RegistryError::new(ErrorCode::XDSRegistryError, text).at(community.to_owned()));
    }

    /// The top-level objects that ITI TF-2b 3.38.4.1.2.1 requires to carry `home` (ExtrinsicObject,
    /// RegistryPackage, ObjectRef) but do not. An initiating gateway reports each as
    /// XDSMissingHomeCommunityId, see [`AdhocQueryResponse::missing_home_errors`].
    pub fn objects_missing_home(&self) -> impl Iterator<Item = &Identifiable> {
        self.objects
            .iter()
            .filter(|o| o.requires_home() && o.home().is_none())
    }

    /// One XDSMissingHomeCommunityId error per object without `home`, naming the object and, as
    /// location, the community the response came from (`from`, when known).
    pub fn missing_home_errors(&self, from: Option<&HomeCommunityId>) -> Vec<RegistryError> {
        self.objects_missing_home()
            .map(|o| {
                let e = RegistryError::new(
                    ErrorCode::XDSMissingHomeCommunityId,
                    format!(
                        "{} {} returned without homeCommunityId",
                        o.kind(),
                        o.id().unwrap_or("?")
                    ),
                );
                match from {
                    Some(h) => e.at(h.to_string()),
                    None => e,
                }
            })
            .collect()
    }
}

impl Message for AdhocQueryResponse {
    const ELEMENT: (&'static str, &'static str) = (ns::QUERY, "AdhocQueryResponse");

    fn read_body<'i>(r: &mut Reader<'i>, el: Elem<'i>) -> Result<Self, XmlError> {
        let status = ResponseStatus::read(&el)?;
        let total_result_count = el
            .attr("totalResultCount")
            .map(|v| {
                v.trim()
                    .parse()
                    .map_err(|_| XmlError::invalid("AdhocQueryResponse/@totalResultCount", v))
            })
            .transpose()?;
        let mut resp = AdhocQueryResponse {
            status,
            errors: Vec::new(),
            objects: Vec::new(),
            total_result_count,
        };
        while let Some(c) = r.child(&el)? {
            if is_rs_or_rim(&c, "RegistryErrorList") {
                read_error_list(r, &c, &mut resp.errors)?;
            } else if c.is(ns::RIM, "RegistryObjectList") {
                resp.objects.extend(read_object_list(r, &c)?);
            }
        }
        Ok(resp)
    }

    fn write_body(&self, w: &mut Writer) {
        w.start("query:AdhocQueryResponse")
            .attr("xmlns:query", ns::QUERY)
            .attr("xmlns:rim", ns::RIM)
            .attr("xmlns:rs", ns::RS)
            .attr("status", self.status.uri());
        if let Some(n) = self.total_result_count {
            w.attr("totalResultCount", &n.to_string());
        }
        write_error_list(w, &self.errors);
        write_object_list(w, &self.objects);
        w.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_syntax() {
        assert_eq!(parse_single("p", " 'a''b' ").unwrap(), "a'b");
        assert_eq!(parse_single("p", "20040101").unwrap(), "20040101");
        assert!(parse_single("p", "abc").is_err());
        assert!(parse_single("p", "'abc").is_err());
        assert!(parse_single("p", "'a' 'b'").is_err());
        assert_eq!(
            parse_list("p", "('a', 'b' ,'c''d')").unwrap(),
            ["a", "b", "c'd"]
        );
        assert_eq!(parse_list("p", "(1,2)").unwrap(), ["1", "2"]);
        assert!(parse_list("p", "'a'").is_err());
        assert!(parse_list("p", "(a)").is_err());
        assert!(parse_list("p", "()").is_err());
        assert!(parse_list("p", "('a' 'b')").is_err());
        assert_eq!(
            parse_code("p", "CT^^DCM").unwrap(),
            ("CT".into(), "DCM".into())
        );
        assert!(parse_code("p", "value^^").is_err());
        let l = ["x'y", "z"];
        assert_eq!(parse_list("p", &format_list(&l)).unwrap(), l);
        assert_eq!(parse_single("p", &format_single("x'y")).unwrap(), "x'y");
    }

    #[test]
    fn or_and_semantics() {
        let mut q = AdhocQuery::new(StoredQuery::FindDocuments);
        q.set_single(param::DE_PATIENT_ID, "1^^^&1.2&ISO");
        q.slots.push(Slot::new(
            param::DE_STATUS,
            ["('urn:a')", "('urn:b','urn:c')"],
        ));
        q.add_list(param::DE_EVENT_CODE_LIST, &["CT^^DCM", "MR^^DCM"]);
        q.add_list(param::DE_EVENT_CODE_LIST, &["HEAD^^SNM"]);
        assert_eq!(
            q.list(param::DE_STATUS).unwrap(),
            ["urn:a", "urn:b", "urn:c"]
        );
        assert_eq!(
            q.and_lists(param::DE_EVENT_CODE_LIST).unwrap(),
            vec![vec!["CT^^DCM", "MR^^DCM"], vec!["HEAD^^SNM"]]
        );
        assert_eq!(
            q.single(param::DE_PATIENT_ID).unwrap().as_deref(),
            Some("1^^^&1.2&ISO")
        );
        assert_eq!(q.check_required().unwrap(), StoredQuery::FindDocuments);
        q.slots.push(Slot::new(param::DE_PATIENT_ID, ["'2'"]));
        assert_eq!(
            q.single(param::DE_PATIENT_ID).unwrap_err().code,
            ErrorCode::XDSStoredQueryParamNumber
        );
        let mut g = AdhocQuery::new(StoredQuery::GetDocuments);
        assert_eq!(
            g.check_required().unwrap_err().code,
            ErrorCode::XDSStoredQueryMissingParam
        );
        g.add_list(param::DE_UNIQUE_ID, &["1.2.3"]);
        assert!(g.check_required().is_ok());
        g.id = "urn:uuid:00000000-0000-0000-0000-000000000000".into();
        assert_eq!(
            g.check_required().unwrap_err().code,
            ErrorCode::XDSUnknownStoredQuery
        );
    }

    fn peer_answer(status: &str, list: &str, objects: &str) -> AdhocQueryResponse {
        let xml = format!(
            r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://www.w3.org/2005/08/addressing"><s:Header><a:Action>urn:ihe:iti:2007:CrossGatewayQueryResponse</a:Action></s:Header><s:Body><q:AdhocQueryResponse xmlns:q="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0" xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0" xmlns:rs="urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0" status="{status}">{list}<rim:RegistryObjectList>{objects}</rim:RegistryObjectList></q:AdhocQueryResponse></s:Body></s:Envelope>"#
        );
        crate::ihe::read_soap::<AdhocQueryResponse>(xml.as_bytes(), &crate::xml::Limits::default())
            .unwrap()
            .1
    }

    /// Issue 12, defect 8: errors are read in the rs or the rim namespace, and the stated status
    /// governs: a Failure or PartialSuccess without an Error gets one naming the community.
    #[test]
    fn stated_failure_counts_whatever_the_error_list_namespace() {
        const FAILURE: &str = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure";
        const ERR: &str = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error";
        let one = |p: &str| {
            format!(
                r#"<{p}:RegistryErrorList><{p}:RegistryError codeContext="down" errorCode="XDSRegistryError" severity="{ERR}"/></{p}:RegistryErrorList>"#
            )
        };
        let obj = r#"<rim:ObjectRef id="urn:uuid:7d5e2b4a-0000-4000-8000-000000000001" home="urn:oid:1.2.3"/>"#;
        for p in ["rs", "rim"] {
            let mut r = peer_answer(FAILURE, &one(p), "");
            assert_eq!(r.status, ResponseStatus::Failure);
            assert_eq!(r.errors.len(), 1, "{p}");
            assert_eq!(r.errors[0].code_context, "down");
            r.enforce_stated_status("urn:oid:9.9");
            assert_eq!(r.errors.len(), 1, "{p}: the peer's own error suffices");
        }
        // no list at all: one error naming the community, and the Failure's objects left out
        let mut r = peer_answer(FAILURE, "", obj);
        assert!(r.errors.is_empty());
        assert_eq!(
            r.derive_status(),
            ResponseStatus::Success,
            "what aggregation would have said"
        );
        r.enforce_stated_status("urn:oid:9.9");
        assert!(r.objects.is_empty());
        assert_eq!(r.errors.len(), 1);
        let e = &r.errors[0];
        assert_eq!(e.error_code, ErrorCode::XDSRegistryError);
        assert_eq!(e.location.as_deref(), Some("urn:oid:9.9"));
        assert!(
            e.code_context.contains("answered Failure without"),
            "{}",
            e.code_context
        );
        assert!(e.code_context.contains("1 objects"), "{}", e.code_context);
        assert_eq!(r.derive_status(), ResponseStatus::Failure);
        // PartialSuccess without errors keeps its objects and becomes PartialSuccess
        let mut r = peer_answer(ResponseStatus::PartialSuccess.uri(), "", obj);
        r.enforce_stated_status("urn:oid:9.9");
        assert_eq!((r.objects.len(), r.errors.len()), (1, 1));
        assert_eq!(r.derive_status(), ResponseStatus::PartialSuccess);
        // a Success is left as it is
        let mut r = peer_answer(ResponseStatus::Success.uri(), "", obj);
        r.enforce_stated_status("urn:oid:9.9");
        assert_eq!((r.objects.len(), r.errors.len()), (1, 0));
        // an error list in another namespace is still not an error list
        let r = peer_answer(FAILURE, &one("q"), "");
        assert!(r.errors.is_empty());
    }

    #[test]
    fn target_community_list_codec() {
        let a: HomeCommunityId = "urn:oid:1.2.3.1".parse().unwrap();
        let b: HomeCommunityId = "urn:oid:1.2.3.2".parse().unwrap();
        let mut q = AdhocQuery::new(StoredQuery::FindDocuments);
        assert_eq!(q.target_communities().unwrap(), None);
        q.set_target_communities(&[a.clone(), b.clone()]);
        assert_eq!(q.slots.len(), 1);
        assert_eq!(q.slots[0].name, "$targetCommunityIdList");
        assert_eq!(q.slots[0].values, ["('urn:oid:1.2.3.1','urn:oid:1.2.3.2')"]);
        assert_eq!(
            q.target_communities().unwrap().unwrap(),
            ["urn:oid:1.2.3.1", "urn:oid:1.2.3.2"]
        );
        // written and read back through XML
        let req = AdhocQueryRequest::new(q.clone(), ReturnType::LeafClass);
        let xml = crate::ihe::write_bare(&req);
        let back = crate::ihe::read_bare::<AdhocQueryRequest>(
            xml.as_bytes(),
            &crate::xml::Limits::default(),
        )
        .unwrap();
        assert_eq!(back.query.target_communities().unwrap().unwrap().len(), 2);
        // setting again replaces; setting none removes (an empty list never means everyone)
        q.set_target_communities(std::slice::from_ref(&b));
        assert_eq!(
            q.target_communities().unwrap().unwrap(),
            ["urn:oid:1.2.3.2"]
        );
        q.set_target_communities(&[]);
        assert_eq!(q.target_communities().unwrap(), None);
        // present but empty: no value, (), blank
        for values in [vec![], vec!["()"], vec![" ( ) "], vec![""]] {
            let mut q = AdhocQuery::new(StoredQuery::FindDocuments);
            q.slots
                .push(Slot::new("$targetCommunityIdList", values.clone()));
            assert_eq!(q.target_communities().unwrap(), Some(vec![]), "{values:?}");
        }
        // several values, a single quoted one, entries as written (checked by the validator)
        let mut q = AdhocQuery::new(StoredQuery::FindDocuments);
        q.slots.push(Slot::new(
            "$targetCommunityIdList",
            ["('urn:oid:1.2', '')", "'1.3'", "('x''y')"],
        ));
        assert_eq!(
            q.target_communities().unwrap().unwrap(),
            ["urn:oid:1.2", "", "1.3", "x'y"]
        );
        // malformed values and a second slot are errors
        for bad in ["(urn:oid:1.2)", "urn:oid:1.2", "('a'", "('a' 'b')"] {
            let mut q = AdhocQuery::new(StoredQuery::FindDocuments);
            q.slots.push(Slot::new("$targetCommunityIdList", [bad]));
            assert_eq!(
                q.target_communities().unwrap_err().code,
                ErrorCode::XDSRegistryError,
                "{bad}"
            );
        }
        let mut q = AdhocQuery::new(StoredQuery::FindDocuments);
        q.set_target_communities(&[a]);
        q.slots
            .push(Slot::new("$targetCommunityIdList", ["('urn:oid:9.9')"]));
        assert_eq!(
            q.target_communities().unwrap_err().code,
            ErrorCode::XDSStoredQueryParamNumber
        );
    }

    #[test]
    fn status_uris() {
        assert_eq!(
            ResponseStatus::PartialSuccess.uri(),
            "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"
        );
        for s in [
            "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess",
            " urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:PartialSuccess\n",
        ] {
            assert_eq!(
                ResponseStatus::from_uri(s),
                Some(ResponseStatus::PartialSuccess)
            );
        }
        assert_eq!(ResponseStatus::from_uri("Success"), None);
    }
}
