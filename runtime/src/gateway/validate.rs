//! Request validators: one per transaction this gateway accepts as a server, each a pure function of
//! the parsed request and of what the gateway knows as values (its homeCommunityId, the communities it
//! can reach, the hospital's own repositories). A validator answers with the request it accepted or with
//! the rule that failed ([`QueryRule`], [`ImagingRule`], [`DocumentRule`]), and every rule maps to the
//! RegistryError a peer gets for it. Handlers call the validator first and turn its failure into their
//! reply; what depends on the registry or on consent (the disclosure gate, [`super::disclosure`]) stays
//! in the handlers: a validator looks at the request only.
//!
//! | transaction | side | validator | request-level rules | per-DocumentRequest rules |
//! |---|---|---|---|---|
//! | ITI-18 | initiating | [`iti18`] | [`LocalQueryRule`] (first failing) | none |
//! | ITI-38 | responding | [`iti38`] | [`QueryRule`] (first failing) | none |
//! | ITI-39 | responding | [`iti39`] | none | [`DocumentRule::MissingHomeCommunityId`], [`DocumentRule::NotThisCommunity`] |
//! | RAD-75 | responding | [`rad75`] | [`ImagingRule`] (all of them) | as ITI-39 |
//! | ITI-43 | initiating | [`iti43`] | none | [`DocumentRule::MissingHomeCommunityId`], [`DocumentRule::UnknownCommunity`] |
//! | RAD-69 | initiating | [`rad69`] | [`ImagingRule`] except the RAD-75 ones | as ITI-43 |
//!
//! A retrieve's rules are per DocumentRequest where the specification answers per document (ITI TF-2b
//! 3.39.4.1.3, RAD TF-3 4.75.4.1.3: PartialSuccess with one RegistryError per refused document): the
//! validator then splits the documents into those accepted and those refused ([`Screened`], [`Routed`])
//! and the handler goes on with the accepted ones.

use std::collections::{BTreeMap, BTreeSet};

use super::disclosure::{self, PatientKey};
use super::fanout::AskedPatient;
use crate::ihe::query::{AdhocQueryRequest, ParamError, StoredQuery};
use crate::ihe::retrieve::{
    DocumentRequest, RetrieveDocumentSetRequest, RetrieveImagingDocumentSetRequest,
};
use crate::ihe::{ErrorCode, RegistryError};
use crate::model::{Bsn, HomeCommunityId};

/// Most distinct studies (Study Instance UIDs, trimmed) one RAD-75 request may name. Each costs a
/// registry query and the reading of the patient's manifests before the first byte is sent, so a request
/// naming thousands would hold the registry for a long time; a viewer asks for one study (or a few) at a
/// time.
pub const MAX_STUDIES_PER_RETRIEVE: usize = 64;

// ---------------------------------------------------------------------------------------------------
// ITI-38

/// An ITI-38 request that passed [`iti38`]: a known stored query with its required parameters, aimed
/// at this community or naming a patient.
#[derive(Debug, Clone)]
pub struct CrossGatewayQuery {
    /// The request as received.
    pub request: AdhocQueryRequest,
    /// Its stored query.
    pub query: StoredQuery,
    /// The patients its patient parameters name ([`disclosure::named_patients`]); empty for a query by
    /// id (GetDocuments, GetAssociations ...).
    pub named: BTreeSet<PatientKey>,
    /// What its `$targetCommunityIdList` asks of this gateway ([`TargetCommunities`]).
    pub targets: TargetCommunities,
}

/// Most homeCommunityIds one `$targetCommunityIdList` may hold. A platform fronts a few hospitals; each
/// unknown id is named in the answer, so a list of thousands would be echoed back in full.
pub const MAX_TARGET_COMMUNITIES: usize = 100;

/// The `$targetCommunityIdList` of an ITI-38 request that passed [`iti38`] (IHE CP-ITI-1301 Target
/// Communities; the Twiin consultation text of ITI-38, docs/DOMAIN.md "Target communities").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetCommunities {
    /// No list: answered as before (the consultation text's backward-compatible case).
    Absent,
    /// A list of distinct homeCommunityIds.
    Listed {
        /// Whether this gateway's own homeCommunityId is in it: only then is anything looked up and
        /// answered.
        ours: bool,
        /// The ids in it that are not this gateway's, in request order: each named in a RegistryError
        /// of severity Warning (XDSUnknownCommunity) and the answer is PartialSuccess, which the
        /// initiating gateway does not treat as an error ([`unknown_community_warnings`]).
        unknown: Vec<HomeCommunityId>,
    },
}

impl TargetCommunities {
    /// The ids of the list this gateway does not answer for (none when absent).
    pub fn unknown(&self) -> &[HomeCommunityId] {
        match self {
            TargetCommunities::Absent => &[],
            TargetCommunities::Listed { unknown, .. } => unknown,
        }
    }

    /// Whether this gateway answers the request: no list, or its own id in it.
    pub fn answers(&self) -> bool {
        match self {
            TargetCommunities::Absent => true,
            TargetCommunities::Listed { ours, .. } => *ours,
        }
    }
}

/// One XDSUnknownCommunity RegistryError of severity Warning per id of a `$targetCommunityIdList` that
/// this gateway (`home`) does not answer for, located at the id (the consultation text: "partial success
/// response indicating which homeCommunityIds were not recognized"). The code is ITI TF-3 4.2.4.1's for
/// an unrecognised homeCommunityId; which code Twiin means is not public.
pub fn unknown_community_warnings(
    unknown: &[HomeCommunityId],
    home: &HomeCommunityId,
) -> Vec<RegistryError> {
    unknown
        .iter()
        .map(|u| {
            RegistryError::new(
                ErrorCode::XDSUnknownCommunity,
                format!("$targetCommunityIdList: this responding gateway ({home}) does not answer for {u}"),
            )
            .at(u.to_string())
            .warning()
        })
        .collect()
}

/// A rule of an ITI-38 request that failed ([`iti38`]). The request is answered with no objects and
/// this one RegistryError ([`QueryRule::to_registry_error`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryRule {
    /// `AdhocQuery/@home` names another community than this gateway's (ITI TF-2b 3.38.4.1.2.1,
    /// 3.38.4.1.3): XDSUnknownCommunity.
    NotThisCommunity {
        /// The community the request names.
        asked: HomeCommunityId,
    },
    /// `AdhocQuery/@id` is no stored query this gateway answers (ITI TF-2a 3.18.4.1.2.3.7):
    /// XDSUnknownStoredQuery.
    UnknownStoredQuery(ParamError),
    /// A query naming no patient (a query by id: GetDocuments, GetAssociations ...) without
    /// `AdhocQuery/@home` (ITI TF-2b 3.38.4.1.2.1): XDSMissingHomeCommunityId.
    MissingHomeCommunityId {
        /// The stored query.
        query: StoredQuery,
    },
    /// A required parameter of the stored query is missing (ITI TF-2a 3.18.4.1.2.3.7):
    /// XDSStoredQueryMissingParam.
    MissingParameter(ParamError),
    /// `$targetCommunityIdList` is present but names no community: an error, nothing disclosed (the
    /// Twiin consultation text of ITI-38: "Empty: the Responding gateway respond with an error"; an
    /// empty list never means everyone). XDSRegistryError.
    EmptyTargetCommunityList,
    /// `$targetCommunityIdList` is malformed: in several slots (XDSStoredQueryParamNumber), a value that
    /// is no list, an entry that is no homeCommunityId (empty, not an OID), an id listed twice, or more
    /// than [`MAX_TARGET_COMMUNITIES`] ids (XDSRegistryError). Nothing is disclosed.
    BadTargetCommunityList(ParamError),
}

impl QueryRule {
    /// The RegistryError answered for this rule, located at `home` (this gateway's homeCommunityId).
    pub fn to_registry_error(&self, home: &HomeCommunityId) -> RegistryError {
        let e = match self {
            QueryRule::NotThisCommunity { asked } => RegistryError::new(
                ErrorCode::XDSUnknownCommunity,
                format!("this gateway is {home}, not {asked}"),
            ),
            QueryRule::UnknownStoredQuery(e) | QueryRule::MissingParameter(e) => {
                e.to_registry_error()
            }
            QueryRule::MissingHomeCommunityId { query } => RegistryError::new(
                ErrorCode::XDSMissingHomeCommunityId,
                format!("{} needs AdhocQuery/@home", query.name()),
            ),
            QueryRule::EmptyTargetCommunityList => RegistryError::new(
                ErrorCode::XDSRegistryError,
                format!(
                    "parameter {}: empty list (name the communities asked, or leave the parameter out)",
                    crate::ihe::query::param::TARGET_COMMUNITY_ID_LIST
                ),
            ),
            QueryRule::BadTargetCommunityList(e) => e.to_registry_error(),
        };
        e.at(home.to_string())
    }
}

/// Validates an ITI-38 Cross Gateway Query received by this gateway (`home`). The rules, in this order,
/// the first failing one answered: [`QueryRule::NotThisCommunity`], [`QueryRule::UnknownStoredQuery`],
/// [`QueryRule::MissingHomeCommunityId`], [`QueryRule::MissingParameter`],
/// [`QueryRule::BadTargetCommunityList`], [`QueryRule::EmptyTargetCommunityList`]. Other parameter
/// values are not checked here: the local registry answers a badly formed one. An accepted request's
/// `$targetCommunityIdList` is [`CrossGatewayQuery::targets`].
pub fn iti38(
    request: AdhocQueryRequest,
    home: &HomeCommunityId,
) -> Result<CrossGatewayQuery, QueryRule> {
    if let Some(asked) = &request.query.home
        && asked != home
    {
        return Err(QueryRule::NotThisCommunity {
            asked: asked.clone(),
        });
    }
    let query = request
        .query
        .require_stored_query()
        .map_err(QueryRule::UnknownStoredQuery)?;
    let named = disclosure::named_patients(&request.query);
    if named.is_empty() && request.query.home.is_none() {
        return Err(QueryRule::MissingHomeCommunityId { query });
    }
    request
        .query
        .check_required()
        .map_err(QueryRule::MissingParameter)?;
    let targets = target_communities(&request.query, home)?;
    Ok(CrossGatewayQuery {
        request,
        query,
        named,
        targets,
    })
}

/// The `$targetCommunityIdList` rules of [`iti38`]: absent, or a non-empty list of at most
/// [`MAX_TARGET_COMMUNITIES`] distinct homeCommunityIds (`urn:oid:` optional, as for `@home`).
fn target_communities(
    q: &crate::ihe::query::AdhocQuery,
    home: &HomeCommunityId,
) -> Result<TargetCommunities, QueryRule> {
    use crate::ihe::query::param::TARGET_COMMUNITY_ID_LIST as NAME;
    let bad = |msg: String| {
        QueryRule::BadTargetCommunityList(ParamError {
            code: ErrorCode::XDSRegistryError,
            message: format!("parameter {NAME}: {msg}"),
        })
    };
    let Some(listed) = q
        .target_communities()
        .map_err(QueryRule::BadTargetCommunityList)?
    else {
        return Ok(TargetCommunities::Absent);
    };
    if listed.is_empty() {
        return Err(QueryRule::EmptyTargetCommunityList);
    }
    if listed.len() > MAX_TARGET_COMMUNITIES {
        return Err(bad(format!(
            "{} ids, at most {MAX_TARGET_COMMUNITIES}",
            listed.len()
        )));
    }
    let mut seen = BTreeSet::new();
    let mut ours = false;
    let mut unknown = Vec::new();
    for (i, raw) in listed.iter().enumerate() {
        let h: HomeCommunityId = raw.parse().map_err(|_| {
            bad(format!(
                "entry {} is not a homeCommunityId (urn:oid:<OID>): {:?}",
                i + 1,
                crate::ihe::soap::echoed(raw)
            ))
        })?;
        if !seen.insert(h.clone()) {
            return Err(bad(format!("{h} is listed twice")));
        }
        if &h == home {
            ours = true;
        } else {
            unknown.push(h);
        }
    }
    Ok(TargetCommunities::Listed { ours, unknown })
}

// ---------------------------------------------------------------------------------------------------
// ITI-18 (initiating side: a local document consumer's query, fanned out to communities)

/// Where an ITI-18 query that passed [`iti18`] goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryRoute {
    /// `AdhocQuery/@home` names one community this gateway knows (its own or a configured peer): that
    /// community only.
    Community(HomeCommunityId),
    /// The query names a patient and no community: the communities localisation chooses.
    Localize,
}

/// An ITI-18 request that passed [`iti18`].
#[derive(Debug, Clone)]
pub struct LocalQuery {
    /// The request as received.
    pub request: AdhocQueryRequest,
    /// The patient every community's answer is checked against: the query's patient parameter, else the
    /// request's XUA resource-id; `None` for a query by id that names neither.
    pub asked: Option<AskedPatient>,
    /// Where it goes.
    pub route: QueryRoute,
}

/// A rule of an ITI-18 request that failed ([`iti18`]). The request is answered with no objects and this
/// one RegistryError ([`LocalQueryRule::to_registry_error`]); no community is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalQueryRule {
    /// The stored query is unknown or a required parameter is missing (ITI TF-2a 3.18.4.1.2.3.7):
    /// XDSUnknownStoredQuery / XDSStoredQueryMissingParam, as the [`ParamError`] says.
    Parameter(ParamError),
    /// The patient parameter is no CX with an id and an assigning authority OID (ITI TF-2a
    /// 3.18.4.1.2.3.8): every community's answer is checked against the patient asked for, which cannot
    /// be done for this one, so nothing is sent: XDSUnknownPatientId. The handler audits it.
    UncheckablePatient {
        /// The patient parameter as sent.
        cx: String,
    },
    /// `AdhocQuery/@home` names a community this gateway does not know (ITI TF-2b 3.38.4.1.2.1):
    /// XDSUnknownCommunity, located at that community.
    UnknownCommunity {
        /// The community the request names.
        asked: HomeCommunityId,
    },
    /// A query naming no patient (a query by id) without `AdhocQuery/@home` (ITI TF-2b 3.38.4.1.2.1):
    /// XDSMissingHomeCommunityId.
    MissingHomeCommunityId,
}

impl LocalQueryRule {
    /// The RegistryError answered for this rule; located at `home` (this gateway's homeCommunityId),
    /// except an unknown community's, located at that community.
    pub fn to_registry_error(&self, home: &HomeCommunityId) -> RegistryError {
        match self {
            LocalQueryRule::Parameter(e) => e.to_registry_error().at(home.to_string()),
            LocalQueryRule::UncheckablePatient { cx } => {
                RegistryError::new(ErrorCode::XDSUnknownPatientId, uncheckable_reason(cx))
                    .at(home.to_string())
            }
            LocalQueryRule::UnknownCommunity { asked } => RegistryError::new(
                ErrorCode::XDSUnknownCommunity,
                format!("unknown community {asked}"),
            )
            .at(asked.to_string()),
            LocalQueryRule::MissingHomeCommunityId => RegistryError::new(
                ErrorCode::XDSMissingHomeCommunityId,
                "a query by id needs AdhocQuery/@home naming the community",
            )
            .at(home.to_string()),
        }
    }
}

/// Why a patient id that is no CX with an id and an assigning authority is refused (codeContext).
fn uncheckable_reason(cx: &str) -> String {
    format!(
        "the patient id {} is no CX with an id and an assigning authority (a BSN: <9 digits>^^^&{}&ISO): every community's answer is checked against the patient asked for, so the query is not sent",
        crate::ihe::soap::echoed(cx),
        Bsn::OID
    )
}

/// The patient the query names: the first patient parameter present ([`disclosure::PATIENT_PARAMS`]).
/// A patient parameter with several values or one that does not read as a single quoted value is
/// refused ([`LocalQueryRule::Parameter`], XDSStoredQueryParamNumber or the format error): read as "no
/// patient", the query would go out with nobody to check the communities' answers against.
fn asked_patient_parameter(request: &AdhocQueryRequest) -> Result<Option<String>, LocalQueryRule> {
    let mut first = None;
    for p in disclosure::PATIENT_PARAMS {
        let value = request.query.single(p).map_err(LocalQueryRule::Parameter)?;
        first = first.or(value);
    }
    Ok(first)
}

/// Validates an ITI-18 query of a local document consumer received by this gateway (`home`), which
/// knows the peers `peers`; `claimed` is the request's XUA resource-id. The rules, in this order, the
/// first failing one answered: [`LocalQueryRule::Parameter`] (also for a patient parameter with several
/// values), [`LocalQueryRule::UncheckablePatient`],
/// [`LocalQueryRule::UnknownCommunity`], [`LocalQueryRule::MissingHomeCommunityId`].
pub fn iti18(
    request: AdhocQueryRequest,
    claimed: Option<&Bsn>,
    home: &HomeCommunityId,
    peers: &[HomeCommunityId],
) -> Result<LocalQuery, LocalQueryRule> {
    request
        .query
        .check_required()
        .map_err(LocalQueryRule::Parameter)?;
    let patient_cx = asked_patient_parameter(&request)?;
    let asked = match patient_cx.as_deref() {
        Some(cx) => Some(
            AskedPatient::from_cx(cx)
                .ok_or_else(|| LocalQueryRule::UncheckablePatient { cx: cx.to_owned() })?,
        ),
        None => claimed.cloned().map(AskedPatient::Bsn),
    };
    let route = match (&request.query.home, &patient_cx) {
        (Some(h), _) if h == home || peers.contains(h) => QueryRoute::Community(h.clone()),
        (Some(h), _) => return Err(LocalQueryRule::UnknownCommunity { asked: h.clone() }),
        (None, None) => return Err(LocalQueryRule::MissingHomeCommunityId),
        (None, Some(_)) => QueryRoute::Localize,
    };
    Ok(LocalQuery {
        request,
        asked,
        route,
    })
}

// ---------------------------------------------------------------------------------------------------
// Retrieves: rules per DocumentRequest

/// A rule of one DocumentRequest of a retrieve that failed. The document is left out of the call and
/// answered with this RegistryError ([`DocumentRule::to_registry_error`]); the other documents go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocumentRule {
    /// The DocumentRequest has no HomeCommunityId, which ITI-39 and RAD-75 require (ITI TF-2b
    /// 3.39.4.1.2, RAD TF-3 4.75.4.1.2), and which an ITI-43 / RAD-69 request may leave out only for a
    /// repository of the hospital's own community (ITI TF-2b 3.43.4.1.2, RAD TF-3 4.69.4.1.2):
    /// XDSMissingHomeCommunityId at the DocumentUniqueId.
    MissingHomeCommunityId {
        /// The DocumentUniqueId, as received.
        document_unique_id: String,
    },
    /// Responding side (ITI-39, RAD-75): the HomeCommunityId is not this gateway's (ITI TF-2b
    /// 3.39.4.1.3): XDSUnknownCommunity at the named community.
    NotThisCommunity {
        /// This gateway's homeCommunityId.
        home: HomeCommunityId,
        /// The community the request names.
        asked: HomeCommunityId,
    },
    /// Initiating side (ITI-43, RAD-69): the HomeCommunityId is neither this gateway's nor one of the
    /// communities it knows; nothing is sent anywhere for it (an address is never taken from a request;
    /// ITI TF-2b 3.39.4.1.3): XDSUnknownCommunity at the named community.
    UnknownCommunity {
        /// The community the request names.
        asked: HomeCommunityId,
    },
}

impl DocumentRule {
    /// The RegistryError answered for this document.
    pub fn to_registry_error(&self) -> RegistryError {
        match self {
            DocumentRule::MissingHomeCommunityId { document_unique_id } => RegistryError::new(
                ErrorCode::XDSMissingHomeCommunityId,
                format!("DocumentRequest for {document_unique_id} has no HomeCommunityId"),
            )
            .at(document_unique_id.clone()),
            DocumentRule::NotThisCommunity { home, asked } => RegistryError::new(
                ErrorCode::XDSUnknownCommunity,
                format!("this gateway is {home}, not {asked}"),
            )
            .at(asked.to_string()),
            DocumentRule::UnknownCommunity { asked } => RegistryError::new(
                ErrorCode::XDSUnknownCommunity,
                format!("unknown community {asked}"),
            )
            .at(asked.to_string()),
        }
    }
}

/// The RegistryErrors of refused documents, in request order.
pub fn registry_errors(refused: &[DocumentRule]) -> Vec<RegistryError> {
    refused
        .iter()
        .map(DocumentRule::to_registry_error)
        .collect()
}

/// A responding-side retrieve split by its per-document rules: the documents accepted, in request
/// order, and the rule each refused one failed, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Screened<T> {
    /// The documents that passed every rule.
    pub accepted: Vec<T>,
    /// The rule of each refused document.
    pub refused: Vec<DocumentRule>,
}

/// A DocumentRequest of a RAD-69 / RAD-75 request with its place: (Study Instance UID, Series Instance
/// UID, the DocumentRequest whose DocumentUniqueId is the SOP Instance UID), as received.
pub type ImagingDocument = (String, String, DocumentRequest);

fn screen<T>(
    items: impl IntoIterator<Item = T>,
    doc: impl Fn(&T) -> &DocumentRequest,
    home: &HomeCommunityId,
) -> Screened<T> {
    let mut out = Screened {
        accepted: Vec::new(),
        refused: Vec::new(),
    };
    for item in items {
        let d = doc(&item);
        match &d.home_community_id {
            None => out.refused.push(DocumentRule::MissingHomeCommunityId {
                document_unique_id: d.document_unique_id.clone(),
            }),
            Some(asked) if asked != home => out.refused.push(DocumentRule::NotThisCommunity {
                home: home.clone(),
                asked: asked.clone(),
            }),
            Some(_) => out.accepted.push(item),
        }
    }
    out
}

/// Validates an ITI-39 Cross Gateway Retrieve received by this gateway (`home`): every DocumentRequest
/// must name this community ([`DocumentRule::MissingHomeCommunityId`],
/// [`DocumentRule::NotThisCommunity`]). There is no request-level rule: the schema already requires at
/// least one DocumentRequest.
pub fn iti39(
    request: RetrieveDocumentSetRequest,
    home: &HomeCommunityId,
) -> Screened<DocumentRequest> {
    screen(request.documents, |d| d, home)
}

// ---------------------------------------------------------------------------------------------------
// RAD-69 / RAD-75: request-level rules

/// A request-level rule of a RAD-69 / RAD-75 request that failed; such a request is answered with
/// these RegistryErrors only ([`ImagingRule::to_registry_error`]), nothing is retrieved. The first three
/// are what the schema cannot check (testdata README "Schema caveats" 3), the same rules as
/// [`RetrieveImagingDocumentSetRequest::validate`] (the simulators' check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImagingRule {
    /// A StudyRequest with an empty `studyInstanceUID` (RAD TF-3 4.69.4.1.2, 4.69.4.1.3):
    /// XDSIRequestError.
    EmptyStudyInstanceUid,
    /// A SeriesRequest with an empty `seriesInstanceUID` (RAD TF-3 4.69.4.1.2, 4.69.4.1.3):
    /// XDSIRequestError at the study.
    EmptySeriesInstanceUid {
        /// The Study Instance UID of its StudyRequest.
        study: String,
    },
    /// A TransferSyntaxUID that is empty (RAD TF-3 4.69.4.1.2): XDSRepositoryError.
    EmptyTransferSyntaxUid,
    /// RAD-75 only: more distinct studies than [`MAX_STUDIES_PER_RETRIEVE`] (this gateway's limit, not
    /// IHE's: each study costs registry queries before anything is sent): XDSRepositoryError.
    TooManyStudies {
        /// How many distinct studies the request names.
        studies: usize,
    },
    /// RAD-75 only: TransferSyntaxUIDList names no transfer syntax (RAD TF-3 4.75.4.1.2 requires 1..n):
    /// XDSRepositoryError.
    NoTransferSyntax,
}

impl ImagingRule {
    /// The RegistryError answered for this rule.
    pub fn to_registry_error(&self) -> RegistryError {
        match self {
            ImagingRule::EmptyStudyInstanceUid => RegistryError::new(
                ErrorCode::XDSIRequestError,
                "StudyRequest has an empty studyInstanceUID",
            ),
            ImagingRule::EmptySeriesInstanceUid { study } => RegistryError::new(
                ErrorCode::XDSIRequestError,
                "SeriesRequest has an empty seriesInstanceUID",
            )
            .at(study.clone()),
            ImagingRule::EmptyTransferSyntaxUid => RegistryError::new(
                ErrorCode::XDSRepositoryError,
                "TransferSyntaxUIDList holds an empty TransferSyntaxUID",
            ),
            ImagingRule::TooManyStudies { studies } => RegistryError::new(
                ErrorCode::XDSRepositoryError,
                format!(
                    "the request names {studies} studies; at most {MAX_STUDIES_PER_RETRIEVE} per RAD-75 request"
                ),
            ),
            ImagingRule::NoTransferSyntax => RegistryError::new(
                ErrorCode::XDSRepositoryError,
                "TransferSyntaxUIDList names no transfer syntax",
            ),
        }
    }
}

/// The RegistryErrors of failed request-level rules, in order.
pub fn imaging_errors(rules: &[ImagingRule]) -> Vec<RegistryError> {
    rules.iter().map(ImagingRule::to_registry_error).collect()
}

/// The structural rules common to RAD-69 and RAD-75, every failure in request order (studies, their
/// series, then the transfer syntaxes).
fn imaging_structure(request: &RetrieveImagingDocumentSetRequest) -> Vec<ImagingRule> {
    let mut out = Vec::new();
    for st in &request.studies {
        if st.study_instance_uid.trim().is_empty() {
            out.push(ImagingRule::EmptyStudyInstanceUid);
        }
        for se in &st.series {
            if se.series_instance_uid.trim().is_empty() {
                out.push(ImagingRule::EmptySeriesInstanceUid {
                    study: st.study_instance_uid.clone(),
                });
            }
        }
    }
    if request
        .transfer_syntaxes
        .iter()
        .any(|t| t.trim().is_empty())
    {
        out.push(ImagingRule::EmptyTransferSyntaxUid);
    }
    out
}

fn imaging_documents(request: &RetrieveImagingDocumentSetRequest) -> Vec<ImagingDocument> {
    request
        .documents()
        .map(|(st, se, d)| (st.to_owned(), se.to_owned(), d.clone()))
        .collect()
}

/// Validates a RAD-75 Cross Gateway Retrieve Imaging Document Set received by this gateway (`home`).
/// Request-level rules first: every structural failure ([`ImagingRule::EmptyStudyInstanceUid`],
/// [`ImagingRule::EmptySeriesInstanceUid`], [`ImagingRule::EmptyTransferSyntaxUid`]); only when there is
/// none, [`ImagingRule::TooManyStudies`], and only when that holds too, [`ImagingRule::NoTransferSyntax`].
/// Then per DocumentRequest as [`iti39`].
pub fn rad75(
    request: &RetrieveImagingDocumentSetRequest,
    home: &HomeCommunityId,
) -> Result<Screened<ImagingDocument>, Vec<ImagingRule>> {
    let mut failed = imaging_structure(request);
    let studies = request
        .documents()
        .map(|(st, _, _)| st.trim())
        .collect::<BTreeSet<&str>>()
        .len();
    if failed.is_empty() && studies > MAX_STUDIES_PER_RETRIEVE {
        failed.push(ImagingRule::TooManyStudies { studies });
    }
    if failed.is_empty()
        && request
            .transfer_syntaxes
            .iter()
            .all(|t| t.trim().is_empty())
    {
        failed.push(ImagingRule::NoTransferSyntax);
    }
    if !failed.is_empty() {
        return Err(failed);
    }
    Ok(screen(imaging_documents(request), |(_, _, d)| d, home))
}

// ---------------------------------------------------------------------------------------------------
// Initiating side: routing by homeCommunityId

/// The communities a local consumer's retrieve can reach, as values: this gateway's own community and
/// the ones it knows, each with its payload `T` (the gateway's `Target`; anything in tests).
#[derive(Debug, Clone)]
pub struct Communities<T> {
    /// This gateway's homeCommunityId.
    pub home: HomeCommunityId,
    /// The hospital's own community.
    pub local: T,
    /// The unique ids of the hospital's own repositories and imaging document sources
    /// ([`super::Gateway::local_sources`]): a DocumentRequest naming one of them may leave out
    /// HomeCommunityId.
    pub local_sources: BTreeSet<String>,
    /// The other communities, in configuration order (the first one with a homeCommunityId wins).
    pub known: Vec<(HomeCommunityId, T)>,
}

/// A local consumer's retrieve routed by its per-document rules: per community, its payload and the
/// documents for it (in request order), and the rule each refused document failed (in request order).
#[derive(Debug, Clone)]
pub struct Routed<T, I> {
    /// The documents to ask each community for.
    pub by_community: BTreeMap<HomeCommunityId, (T, Vec<I>)>,
    /// The rule of each refused document.
    pub refused: Vec<DocumentRule>,
}

fn route<T: Clone, I>(
    items: impl IntoIterator<Item = I>,
    doc: impl Fn(&I) -> &DocumentRequest,
    c: &Communities<T>,
) -> Routed<T, I> {
    let mut out = Routed {
        by_community: BTreeMap::new(),
        refused: Vec::new(),
    };
    for item in items {
        let d = doc(&item);
        let h = match &d.home_community_id {
            Some(h) => h,
            None if c.local_sources.contains(&d.repository_unique_id) => &c.home,
            None => {
                out.refused.push(DocumentRule::MissingHomeCommunityId {
                    document_unique_id: d.document_unique_id.clone(),
                });
                continue;
            }
        };
        let target = if h == &c.home {
            Some(&c.local)
        } else {
            c.known.iter().find(|(k, _)| k == h).map(|(_, t)| t)
        };
        match target {
            Some(t) => out
                .by_community
                .entry(h.clone())
                .or_insert_with(|| (t.clone(), Vec::new()))
                .1
                .push(item),
            None => out
                .refused
                .push(DocumentRule::UnknownCommunity { asked: h.clone() }),
        }
    }
    out
}

/// Validates and routes an ITI-43 Retrieve Document Set from a local consumer: each DocumentRequest goes
/// to the community its HomeCommunityId names, or, without one, to the hospital's own when its
/// RepositoryUniqueId is one of [`Communities::local_sources`] (HomeCommunityId is optional in ITI-43;
/// NIST 15816 sends none). Refused: [`DocumentRule::MissingHomeCommunityId`] (no HomeCommunityId and
/// not a local repository), [`DocumentRule::UnknownCommunity`].
pub fn iti43<T: Clone>(
    request: &RetrieveDocumentSetRequest,
    communities: &Communities<T>,
) -> Routed<T, DocumentRequest> {
    route(request.documents.iter().cloned(), |d| d, communities)
}

/// Validates and routes a RAD-69 Retrieve Imaging Document Set from a local consumer. Request-level
/// rules first, every failure: [`ImagingRule::EmptyStudyInstanceUid`],
/// [`ImagingRule::EmptySeriesInstanceUid`], [`ImagingRule::EmptyTransferSyntaxUid`]; then per
/// DocumentRequest as [`iti43`] (ids_4812 sends no HomeCommunityId).
pub fn rad69<T: Clone>(
    request: &RetrieveImagingDocumentSetRequest,
    communities: &Communities<T>,
) -> Result<Routed<T, ImagingDocument>, Vec<ImagingRule>> {
    let failed = imaging_structure(request);
    if !failed.is_empty() {
        return Err(failed);
    }
    Ok(route(
        imaging_documents(request),
        |(_, _, d)| d,
        communities,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ihe::ebrim::Slot;
    use crate::ihe::query::{AdhocQuery, ReturnType, param, stored_query};
    use crate::ihe::retrieve::{SeriesRequest, StudyRequest};
    use proptest::prelude::*;

    const HOME: &str = "urn:oid:1.2.3.100";
    const KNOWN: &str = "urn:oid:1.2.3.200";
    const UNKNOWN: &str = "urn:oid:1.2.3.999";
    const LOCAL_REPO: &str = "1.2.3.100.1";
    const BSN_CX: &str = "'999911120^^^&2.16.840.1.113883.2.4.6.3&ISO'";

    fn hc(s: &str) -> HomeCommunityId {
        s.parse().expect("a valid homeCommunityId")
    }

    fn query(id: &str, home: Option<&str>, slots: Vec<Slot>) -> AdhocQueryRequest {
        AdhocQueryRequest::new(
            AdhocQuery {
                id: id.to_owned(),
                home: home.map(hc),
                slots,
            },
            ReturnType::LeafClass,
        )
    }

    fn find_documents() -> Vec<Slot> {
        vec![
            Slot::new(param::DE_PATIENT_ID, [BSN_CX]),
            Slot::new(
                param::DE_STATUS,
                ["('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"],
            ),
        ]
    }

    fn doc(home: Option<&str>, repo: &str, uid: &str) -> DocumentRequest {
        DocumentRequest {
            home_community_id: home.map(hc),
            repository_unique_id: repo.to_owned(),
            document_unique_id: uid.to_owned(),
        }
    }

    /// A series in a test request: its UID and DocumentRequests.
    type Series<'a> = (&'a str, Vec<DocumentRequest>);

    fn imaging(
        studies: &[(&str, &[Series<'_>])],
        ts: &[&str],
    ) -> RetrieveImagingDocumentSetRequest {
        RetrieveImagingDocumentSetRequest {
            studies: studies
                .iter()
                .map(|(st, series)| StudyRequest {
                    study_instance_uid: (*st).to_owned(),
                    series: series
                        .iter()
                        .map(|(se, docs)| SeriesRequest {
                            series_instance_uid: (*se).to_owned(),
                            documents: docs.clone(),
                        })
                        .collect(),
                })
                .collect(),
            transfer_syntaxes: ts.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    fn communities() -> Communities<&'static str> {
        Communities {
            home: hc(HOME),
            local: "local",
            local_sources: [LOCAL_REPO.to_owned()].into(),
            known: vec![(hc(KNOWN), "known")],
        }
    }

    // ---- ITI-18, one failing case per rule ---------------------------------------------------

    #[test]
    fn iti18_routes_a_patient_query_to_localisation_and_a_named_community_to_it() {
        let peers = [hc(KNOWN)];
        let v = iti18(
            query(stored_query::FIND_DOCUMENTS, None, find_documents()),
            None,
            &hc(HOME),
            &peers,
        )
        .expect("accepted");
        assert_eq!(v.route, QueryRoute::Localize);
        assert_eq!(
            v.asked,
            Some(AskedPatient::Bsn("999911120".parse().unwrap()))
        );
        for h in [HOME, KNOWN] {
            let v = iti18(
                query(stored_query::FIND_DOCUMENTS, Some(h), find_documents()),
                None,
                &hc(HOME),
                &peers,
            )
            .expect("accepted");
            assert_eq!(v.route, QueryRoute::Community(hc(h)));
        }
        // a query by id with @home: the claimed patient (XUA resource-id) is the one checked
        let claimed: Bsn = "999911120".parse().unwrap();
        let v = iti18(
            query(
                stored_query::GET_DOCUMENTS,
                Some(KNOWN),
                vec![Slot::new(param::DE_UNIQUE_ID, ["('1.2.3.4')"])],
            ),
            Some(&claimed),
            &hc(HOME),
            &peers,
        )
        .expect("accepted");
        assert_eq!(v.asked, Some(AskedPatient::Bsn(claimed)));
    }

    #[test]
    fn iti18_rule_parameter() {
        let slots = vec![Slot::new(param::DE_PATIENT_ID, [BSN_CX])];
        let r = iti18(
            query(stored_query::FIND_DOCUMENTS, None, slots),
            None,
            &hc(HOME),
            &[],
        )
        .expect_err("no status");
        assert!(matches!(r, LocalQueryRule::Parameter(_)), "{r:?}");
        let e = r.to_registry_error(&hc(HOME));
        assert_eq!(e.error_code, ErrorCode::XDSStoredQueryMissingParam);
        assert_eq!(e.location.as_deref(), Some(HOME));
        // two patients in the patient parameter (two values, or a list) name no one patient to check
        // the answers against: refused, not read as a query without a patient
        let other = "'900186021^^^&2.16.840.1.113883.2.4.6.3&ISO'";
        for patient in [
            Slot::new(param::DE_PATIENT_ID, [BSN_CX, other]),
            Slot::new(
                param::DE_PATIENT_ID,
                [format!("({BSN_CX},{other})").as_str()],
            ),
        ] {
            let mut slots = find_documents();
            slots[0] = patient;
            let r = iti18(
                query(stored_query::FIND_DOCUMENTS, Some(KNOWN), slots),
                None,
                &hc(HOME),
                &[hc(KNOWN)],
            )
            .expect_err("two patients");
            assert!(matches!(r, LocalQueryRule::Parameter(_)), "{r:?}");
        }
    }

    #[test]
    fn iti18_rule_uncheckable_patient() {
        let mut slots = find_documents();
        slots[0] = Slot::new(param::DE_PATIENT_ID, ["'999911120'"]);
        let claimed: Bsn = "999911120".parse().unwrap();
        let r = iti18(
            query(stored_query::FIND_DOCUMENTS, Some(HOME), slots),
            Some(&claimed),
            &hc(HOME),
            &[],
        )
        .expect_err("a patient id without assigning authority");
        assert_eq!(
            r,
            LocalQueryRule::UncheckablePatient {
                cx: "999911120".into()
            }
        );
        let e = r.to_registry_error(&hc(HOME));
        assert_eq!(e.error_code, ErrorCode::XDSUnknownPatientId);
        assert!(
            e.code_context
                .starts_with("the patient id 999911120 is no CX")
        );
        assert_eq!(e.location.as_deref(), Some(HOME));
    }

    #[test]
    fn iti18_rule_unknown_community() {
        let r = iti18(
            query(
                stored_query::FIND_DOCUMENTS,
                Some(UNKNOWN),
                find_documents(),
            ),
            None,
            &hc(HOME),
            &[hc(KNOWN)],
        )
        .expect_err("unknown community");
        assert_eq!(r, LocalQueryRule::UnknownCommunity { asked: hc(UNKNOWN) });
        let e = r.to_registry_error(&hc(HOME));
        assert_eq!(e.error_code, ErrorCode::XDSUnknownCommunity);
        assert_eq!(e.code_context, format!("unknown community {UNKNOWN}"));
        assert_eq!(e.location.as_deref(), Some(UNKNOWN));
    }

    #[test]
    fn iti18_rule_missing_home_community_id() {
        let r = iti18(
            query(
                stored_query::GET_DOCUMENTS,
                None,
                vec![Slot::new(param::DE_UNIQUE_ID, ["('1.2.3.4')"])],
            ),
            None,
            &hc(HOME),
            &[hc(KNOWN)],
        )
        .expect_err("query by id without @home");
        assert_eq!(r, LocalQueryRule::MissingHomeCommunityId);
        let e = r.to_registry_error(&hc(HOME));
        assert_eq!(e.error_code, ErrorCode::XDSMissingHomeCommunityId);
        assert_eq!(e.location.as_deref(), Some(HOME));
    }

    // ---- ITI-38, one failing case per rule ---------------------------------------------------

    #[test]
    fn iti38_accepts_find_documents_and_names_its_patient() {
        let v = iti38(
            query(stored_query::FIND_DOCUMENTS, None, find_documents()),
            &hc(HOME),
        )
        .expect("accepted");
        assert_eq!(v.query, StoredQuery::FindDocuments);
        assert_eq!(v.named.len(), 1);
        assert_eq!(
            v.named.first().map(|p| p.cx()),
            Some(&BSN_CX[1..BSN_CX.len() - 1])
        );
    }

    #[test]
    fn iti38_rule_not_this_community() {
        let r = iti38(
            query(
                stored_query::FIND_DOCUMENTS,
                Some(UNKNOWN),
                find_documents(),
            ),
            &hc(HOME),
        )
        .expect_err("another community");
        assert_eq!(r, QueryRule::NotThisCommunity { asked: hc(UNKNOWN) });
        let e = r.to_registry_error(&hc(HOME));
        assert_eq!(e.error_code, ErrorCode::XDSUnknownCommunity);
        assert_eq!(
            e.code_context,
            format!("this gateway is {HOME}, not {UNKNOWN}")
        );
        assert_eq!(e.location.as_deref(), Some(HOME));
    }

    #[test]
    fn iti38_rule_unknown_stored_query() {
        let r = iti38(
            query(
                "urn:uuid:00000000-0000-0000-0000-000000000000",
                None,
                find_documents(),
            ),
            &hc(HOME),
        )
        .expect_err("unknown query");
        assert!(matches!(r, QueryRule::UnknownStoredQuery(_)), "{r:?}");
        let e = r.to_registry_error(&hc(HOME));
        assert_eq!(e.error_code, ErrorCode::XDSUnknownStoredQuery);
        assert_eq!(e.location.as_deref(), Some(HOME));
    }

    #[test]
    fn iti38_rule_missing_home_community_id() {
        let slots = vec![Slot::new(param::DE_UNIQUE_ID, ["('1.2.3.4')"])];
        let r = iti38(
            query(stored_query::GET_DOCUMENTS, None, slots.clone()),
            &hc(HOME),
        )
        .expect_err("query by id without @home");
        assert_eq!(
            r,
            QueryRule::MissingHomeCommunityId {
                query: StoredQuery::GetDocuments
            }
        );
        let e = r.to_registry_error(&hc(HOME));
        assert_eq!(e.error_code, ErrorCode::XDSMissingHomeCommunityId);
        assert_eq!(e.code_context, "GetDocuments needs AdhocQuery/@home");
        assert_eq!(e.location.as_deref(), Some(HOME));
        // with this gateway's @home the same query passes
        let v = iti38(
            query(stored_query::GET_DOCUMENTS, Some(HOME), slots),
            &hc(HOME),
        )
        .expect("accepted with @home");
        assert!(v.named.is_empty());
    }

    #[test]
    fn iti38_rule_missing_parameter() {
        let slots = vec![Slot::new(param::DE_PATIENT_ID, [BSN_CX])];
        let r = iti38(query(stored_query::FIND_DOCUMENTS, None, slots), &hc(HOME))
            .expect_err("no status");
        assert!(matches!(r, QueryRule::MissingParameter(_)), "{r:?}");
        let e = r.to_registry_error(&hc(HOME));
        assert_eq!(e.error_code, ErrorCode::XDSStoredQueryMissingParam);
        assert!(
            e.code_context.contains(param::DE_STATUS),
            "{}",
            e.code_context
        );
        assert_eq!(e.location.as_deref(), Some(HOME));
    }

    // ---- ITI-38 $targetCommunityIdList: absent, empty, unknown ids, ours -------------------------

    fn with_targets(values: &[&str]) -> AdhocQueryRequest {
        let mut slots = find_documents();
        slots.push(Slot::new(param::TARGET_COMMUNITY_ID_LIST, values.to_vec()));
        query(stored_query::FIND_DOCUMENTS, None, slots)
    }

    #[test]
    fn iti38_target_list_absent_is_as_before() {
        let v = iti38(
            query(stored_query::FIND_DOCUMENTS, None, find_documents()),
            &hc(HOME),
        )
        .expect("accepted");
        assert_eq!(v.targets, TargetCommunities::Absent);
        assert!(v.targets.answers() && v.targets.unknown().is_empty());
    }

    #[test]
    fn iti38_rule_empty_target_list() {
        for values in [&[][..], &["()"][..], &["( )", ""][..]] {
            let r = iti38(with_targets(values), &hc(HOME)).expect_err("empty list");
            assert_eq!(r, QueryRule::EmptyTargetCommunityList, "{values:?}");
            let e = r.to_registry_error(&hc(HOME));
            assert_eq!(e.error_code, ErrorCode::XDSRegistryError);
            assert_eq!(e.severity, crate::ihe::Severity::Error);
            assert!(
                e.code_context.contains("$targetCommunityIdList"),
                "{}",
                e.code_context
            );
            assert_eq!(e.location.as_deref(), Some(HOME));
        }
    }

    #[test]
    fn iti38_target_list_names_unknown_ids_and_answers_for_ours() {
        // ours and two unknown ones (one without the urn:oid: prefix): answered for ours, both named
        let list = format!("('{HOME}','{UNKNOWN}','1.2.3.998')");
        let v = iti38(with_targets(&[list.as_str()]), &hc(HOME)).expect("accepted");
        let unknown = vec![hc(UNKNOWN), hc("urn:oid:1.2.3.998")];
        assert_eq!(
            v.targets,
            TargetCommunities::Listed {
                ours: true,
                unknown: unknown.clone()
            }
        );
        assert!(v.targets.answers());
        let w = unknown_community_warnings(v.targets.unknown(), &hc(HOME));
        assert_eq!(w.len(), 2);
        for (e, u) in w.iter().zip(&unknown) {
            assert_eq!(e.error_code, ErrorCode::XDSUnknownCommunity);
            assert_eq!(e.severity, crate::ihe::Severity::Warning);
            assert_eq!(e.location.as_deref(), Some(u.to_string().as_str()));
        }
        // only unknown ids: accepted, but nothing is answered for
        let v = iti38(with_targets(&[&format!("('{UNKNOWN}')")]), &hc(HOME)).expect("accepted");
        assert!(!v.targets.answers());
        assert_eq!(v.targets.unknown(), [hc(UNKNOWN)]);
        // only ours, as a single quoted value
        let v = iti38(with_targets(&[&format!("'{HOME}'")]), &hc(HOME)).expect("accepted");
        assert_eq!(
            v.targets,
            TargetCommunities::Listed {
                ours: true,
                unknown: vec![]
            }
        );
    }

    #[test]
    fn iti38_rule_bad_target_list() {
        let too_many: Vec<String> = (0..=MAX_TARGET_COMMUNITIES)
            .map(|i| format!("urn:oid:1.2.3.{i}"))
            .collect();
        let too_many = crate::ihe::query::format_list(&too_many);
        for values in [
            vec![format!("('{HOME}','')")],
            vec![format!("('{HOME}','not an oid')")],
            vec![format!("('{HOME}','urn:oid:{HOME}')")],
            vec![format!("('{HOME}','{HOME}')")],
            vec![format!("('{UNKNOWN}')"), format!("'1.2.3.999'")],
            vec![format!("({HOME})")],
            vec![too_many],
        ] {
            let v: Vec<&str> = values.iter().map(String::as_str).collect();
            let r = iti38(with_targets(&v), &hc(HOME)).expect_err("bad list");
            assert!(
                matches!(r, QueryRule::BadTargetCommunityList(_)),
                "{values:?}: {r:?}"
            );
            let e = r.to_registry_error(&hc(HOME));
            assert_eq!(e.error_code, ErrorCode::XDSRegistryError, "{values:?}");
            assert!(e.code_context.len() < 1024, "{}", e.code_context);
        }
        // the parameter in two slots
        let mut req = with_targets(&[&format!("('{HOME}')")]);
        req.query.slots.push(Slot::new(
            param::TARGET_COMMUNITY_ID_LIST,
            [format!("('{UNKNOWN}')")],
        ));
        let r = iti38(req, &hc(HOME)).expect_err("two slots");
        assert_eq!(
            r.to_registry_error(&hc(HOME)).error_code,
            ErrorCode::XDSStoredQueryParamNumber
        );
    }

    // ---- ITI-39 ------------------------------------------------------------------------------

    #[test]
    fn iti39_rules_missing_home_and_not_this_community() {
        let s = iti39(
            RetrieveDocumentSetRequest {
                documents: vec![
                    doc(Some(HOME), "r", "1"),
                    doc(None, "r", "2"),
                    doc(Some(KNOWN), "r", "3"),
                ],
            },
            &hc(HOME),
        );
        assert_eq!(s.accepted, vec![doc(Some(HOME), "r", "1")]);
        assert_eq!(
            s.refused,
            vec![
                DocumentRule::MissingHomeCommunityId {
                    document_unique_id: "2".into()
                },
                DocumentRule::NotThisCommunity {
                    home: hc(HOME),
                    asked: hc(KNOWN)
                },
            ]
        );
        let e = registry_errors(&s.refused);
        assert_eq!(e[0].error_code, ErrorCode::XDSMissingHomeCommunityId);
        assert_eq!(
            e[0].code_context,
            "DocumentRequest for 2 has no HomeCommunityId"
        );
        assert_eq!(e[0].location.as_deref(), Some("2"));
        assert_eq!(e[1].error_code, ErrorCode::XDSUnknownCommunity);
        assert_eq!(
            e[1].code_context,
            format!("this gateway is {HOME}, not {KNOWN}")
        );
        assert_eq!(e[1].location.as_deref(), Some(KNOWN));
    }

    // ---- RAD-75 / RAD-69 request-level rules -------------------------------------------------

    const TS: &str = "1.2.840.10008.1.2.1";

    #[test]
    fn rad75_rule_empty_study_instance_uid() {
        let r = rad75(
            &imaging(&[(" ", &[("1.9", vec![doc(Some(HOME), "r", "1")])])], &[TS]),
            &hc(HOME),
        )
        .expect_err("empty study");
        assert_eq!(r, vec![ImagingRule::EmptyStudyInstanceUid]);
        let e = r[0].to_registry_error();
        assert_eq!(
            (e.error_code, e.location),
            (ErrorCode::XDSIRequestError, None)
        );
    }

    #[test]
    fn rad75_rule_empty_series_instance_uid() {
        let r = rad75(
            &imaging(&[("1.8", &[("", vec![doc(Some(HOME), "r", "1")])])], &[TS]),
            &hc(HOME),
        )
        .expect_err("empty series");
        assert_eq!(
            r,
            vec![ImagingRule::EmptySeriesInstanceUid {
                study: "1.8".into()
            }]
        );
        let e = r[0].to_registry_error();
        assert_eq!(
            (e.error_code, e.location.as_deref()),
            (ErrorCode::XDSIRequestError, Some("1.8"))
        );
    }

    #[test]
    fn rad75_rule_empty_transfer_syntax_uid() {
        let r = rad75(
            &imaging(
                &[("1.8", &[("1.9", vec![doc(Some(HOME), "r", "1")])])],
                &[TS, "  "],
            ),
            &hc(HOME),
        )
        .expect_err("empty transfer syntax");
        assert_eq!(r, vec![ImagingRule::EmptyTransferSyntaxUid]);
        assert_eq!(
            r[0].to_registry_error().error_code,
            ErrorCode::XDSRepositoryError
        );
    }

    #[test]
    fn rad75_rule_too_many_studies() {
        let uids: Vec<String> = (0..=MAX_STUDIES_PER_RETRIEVE)
            .map(|i| format!("1.8.{i}"))
            .collect();
        let mut req = imaging(&[], &[TS]);
        for u in &uids {
            req.studies.push(StudyRequest {
                study_instance_uid: u.clone(),
                series: vec![SeriesRequest {
                    series_instance_uid: "1.9".into(),
                    documents: vec![doc(Some(HOME), "r", u)],
                }],
            });
        }
        let r = rad75(&req, &hc(HOME)).expect_err("too many studies");
        assert_eq!(
            r,
            vec![ImagingRule::TooManyStudies {
                studies: MAX_STUDIES_PER_RETRIEVE + 1
            }]
        );
        let e = r[0].to_registry_error();
        assert_eq!(e.error_code, ErrorCode::XDSRepositoryError);
        assert_eq!(
            e.code_context,
            format!(
                "the request names {} studies; at most {MAX_STUDIES_PER_RETRIEVE} per RAD-75 request",
                MAX_STUDIES_PER_RETRIEVE + 1
            )
        );
        // RAD-69 has no such limit
        assert!(rad69(&req, &communities()).is_ok());
        // one fewer is accepted
        req.studies.pop();
        assert!(rad75(&req, &hc(HOME)).is_ok());
    }

    #[test]
    fn rad75_rule_no_transfer_syntax() {
        let req = imaging(&[("1.8", &[("1.9", vec![doc(Some(HOME), "r", "1")])])], &[]);
        let r = rad75(&req, &hc(HOME)).expect_err("no transfer syntax");
        assert_eq!(r, vec![ImagingRule::NoTransferSyntax]);
        assert_eq!(
            r[0].to_registry_error().code_context,
            "TransferSyntaxUIDList names no transfer syntax"
        );
        // not a RAD-69 rule
        assert!(rad69(&req, &communities()).is_ok());
    }

    #[test]
    fn rad75_per_document_rules() {
        let req = imaging(
            &[(
                "1.8",
                &[(
                    "1.9",
                    vec![
                        doc(Some(HOME), "r", "1"),
                        doc(None, "r", "2"),
                        doc(Some(UNKNOWN), "r", "3"),
                    ],
                )],
            )],
            &[TS],
        );
        let s = rad75(&req, &hc(HOME)).expect("request-level rules hold");
        assert_eq!(
            s.accepted,
            vec![("1.8".into(), "1.9".into(), doc(Some(HOME), "r", "1"))]
        );
        assert_eq!(
            s.refused,
            vec![
                DocumentRule::MissingHomeCommunityId {
                    document_unique_id: "2".into()
                },
                DocumentRule::NotThisCommunity {
                    home: hc(HOME),
                    asked: hc(UNKNOWN)
                },
            ]
        );
    }

    // ---- ITI-43 / RAD-69 routing -------------------------------------------------------------

    #[test]
    fn iti43_routes_and_names_the_failed_rule() {
        let r = iti43(
            &RetrieveDocumentSetRequest {
                documents: vec![
                    doc(Some(KNOWN), "x", "1"),
                    doc(None, LOCAL_REPO, "2"),
                    doc(None, "1.2.3.100.77", "3"),
                    doc(Some(UNKNOWN), "x", "4"),
                    doc(Some(HOME), "x", "5"),
                ],
            },
            &communities(),
        );
        let local = &r.by_community[&hc(HOME)];
        assert_eq!(local.0, "local");
        assert_eq!(
            local.1,
            vec![doc(None, LOCAL_REPO, "2"), doc(Some(HOME), "x", "5")]
        );
        assert_eq!(
            r.by_community[&hc(KNOWN)],
            ("known", vec![doc(Some(KNOWN), "x", "1")])
        );
        assert_eq!(r.by_community.len(), 2);
        assert_eq!(
            r.refused,
            vec![
                DocumentRule::MissingHomeCommunityId {
                    document_unique_id: "3".into()
                },
                DocumentRule::UnknownCommunity { asked: hc(UNKNOWN) },
            ]
        );
        let e = registry_errors(&r.refused);
        assert_eq!(e[1].error_code, ErrorCode::XDSUnknownCommunity);
        assert_eq!(e[1].code_context, format!("unknown community {UNKNOWN}"));
        assert_eq!(e[1].location.as_deref(), Some(UNKNOWN));
    }

    #[test]
    fn rad69_structural_rules_refuse_the_whole_request() {
        let req = imaging(&[("", &[(" ", vec![doc(Some(HOME), "r", "1")])])], &[""]);
        let r = rad69(&req, &communities()).expect_err("three structural failures");
        assert_eq!(
            r,
            vec![
                ImagingRule::EmptyStudyInstanceUid,
                ImagingRule::EmptySeriesInstanceUid {
                    study: String::new()
                },
                ImagingRule::EmptyTransferSyntaxUid,
            ]
        );
    }

    // ---- generated hostile requests ----------------------------------------------------------

    fn any_text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just("  ".to_owned()),
            "[0-9.]{1,12}",
            "\\PC{0,24}",
        ]
    }

    fn any_home() -> impl Strategy<Value = Option<HomeCommunityId>> {
        prop_oneof![
            Just(None),
            Just(Some(hc(HOME))),
            Just(Some(hc(KNOWN))),
            Just(Some(hc(UNKNOWN))),
        ]
    }

    fn any_doc() -> impl Strategy<Value = DocumentRequest> {
        (
            any_home(),
            prop_oneof![Just(LOCAL_REPO.to_owned()), any_text()],
            any_text(),
        )
            .prop_map(|(h, r, u)| DocumentRequest {
                home_community_id: h,
                repository_unique_id: r,
                document_unique_id: u,
            })
    }

    fn any_slot() -> impl Strategy<Value = Slot> {
        let names = prop_oneof![
            Just(param::DE_PATIENT_ID.to_owned()),
            Just(param::SS_PATIENT_ID.to_owned()),
            Just("$patientId".to_owned()),
            Just(param::DE_STATUS.to_owned()),
            Just(param::SS_STATUS.to_owned()),
            Just(param::DE_UNIQUE_ID.to_owned()),
            Just(param::DE_ENTRY_UUID.to_owned()),
            Just(param::UUID.to_owned()),
            Just(param::DE_REFERENCE_ID_LIST.to_owned()),
            Just(param::TARGET_COMMUNITY_ID_LIST.to_owned()),
            any_text(),
        ];
        let value = prop_oneof![
            Just(BSN_CX.to_owned()),
            Just(format!("('{HOME}','{UNKNOWN}')")),
            Just("()".to_owned()),
            Just("('999911120^^^&2.16.840.1.113883.2.4.6.3&ISO','123^^^&1.2&ISO')".to_owned()),
            Just("('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')".to_owned()),
            Just("'".to_owned()),
            Just("^^^".to_owned()),
            any_text(),
        ];
        (names, prop::collection::vec(value, 0..3)).prop_map(|(n, v)| Slot { name: n, values: v })
    }

    fn any_query() -> impl Strategy<Value = AdhocQueryRequest> {
        let ids = prop_oneof![
            Just(stored_query::FIND_DOCUMENTS.to_owned()),
            Just(stored_query::FIND_SUBMISSION_SETS.to_owned()),
            Just(stored_query::GET_DOCUMENTS.to_owned()),
            Just(stored_query::GET_ASSOCIATIONS.to_owned()),
            Just(stored_query::FIND_DOCUMENTS_BY_REFERENCE_ID.to_owned()),
            Just(format!(" {} ", stored_query::FIND_DOCUMENTS.to_uppercase())),
            any_text(),
        ];
        (ids, any_home(), prop::collection::vec(any_slot(), 0..6)).prop_map(|(id, home, slots)| {
            AdhocQueryRequest::new(AdhocQuery { id, home, slots }, ReturnType::ObjectRef)
        })
    }

    fn any_imaging() -> impl Strategy<Value = RetrieveImagingDocumentSetRequest> {
        let series = (any_text(), prop::collection::vec(any_doc(), 0..4)).prop_map(|(se, d)| {
            SeriesRequest {
                series_instance_uid: se,
                documents: d,
            }
        });
        let study = (
            prop_oneof![Just("1.8".to_owned()), Just("1.8 ".to_owned()), any_text()],
            prop::collection::vec(series, 0..3),
        )
            .prop_map(|(st, s)| StudyRequest {
                study_instance_uid: st,
                series: s,
            });
        (
            prop::collection::vec(study, 0..4),
            prop::collection::vec(prop_oneof![Just(TS.to_owned()), any_text()], 0..3),
        )
            .prop_map(|(studies, ts)| RetrieveImagingDocumentSetRequest {
                studies,
                transfer_syntaxes: ts,
            })
    }

    fn any_target_entry() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(HOME.to_owned()),
            Just(KNOWN.to_owned()),
            Just(UNKNOWN.to_owned()),
            Just("1.2.3.100".to_owned()),
            Just(String::new()),
            Just(" ".to_owned()),
            Just("urn:oid:".to_owned()),
            Just("urn:oid:1..2".to_owned()),
            Just("not an oid".to_owned()),
            any_text(),
        ]
    }

    /// What an accepted `$targetCommunityIdList` of `q` must be, worked out here without the
    /// validator's code from the slot's entries: `None` when the list must be refused (empty, more
    /// than the maximum, an entry that is no homeCommunityId, an id twice, a malformed value).
    fn expected_targets(q: &AdhocQuery, home: &HomeCommunityId) -> Option<TargetCommunities> {
        let Some(entries) = q.target_communities().ok()? else {
            return Some(TargetCommunities::Absent);
        };
        if entries.is_empty() || entries.len() > MAX_TARGET_COMMUNITIES {
            return None;
        }
        let ids: Vec<HomeCommunityId> = entries
            .iter()
            .map(|e| e.parse().ok())
            .collect::<Option<_>>()?;
        let distinct: BTreeSet<&HomeCommunityId> = ids.iter().collect();
        if distinct.len() != ids.len() {
            return None;
        }
        Some(TargetCommunities::Listed {
            ours: ids.contains(home),
            unknown: ids.into_iter().filter(|i| i != home).collect(),
        })
    }

    /// Whether every required parameter of `q` is present with a value (ITI TF-2a 3.18.4.1.2.3.7),
    /// checked here without the validator's code.
    fn has_required(q: &AdhocQuery, sq: StoredQuery) -> bool {
        sq.required_params().iter().all(|choice| {
            choice
                .iter()
                .any(|n| q.slots.iter().any(|s| s.name == *n && !s.values.is_empty()))
        })
    }

    /// The documents a per-document rule refused: each refused one with its rule, checked against the
    /// document itself; the accepted ones pass `ok`; nothing lost, order kept.
    fn check_partition<'a>(
        all: &[&'a DocumentRequest],
        accepted: &[&'a DocumentRequest],
        refused: &[DocumentRule],
        ok: impl Fn(&DocumentRequest) -> bool,
        rule_holds: impl Fn(&DocumentRequest, &DocumentRule) -> bool,
    ) -> Result<(), TestCaseError> {
        prop_assert_eq!(all.len(), accepted.len() + refused.len());
        let mut acc = accepted.iter().peekable();
        let mut refs = refused.iter();
        for d in all {
            if acc
                .peek()
                .is_some_and(|a| std::ptr::eq(**a, *d) || **a == *d)
                && ok(d)
            {
                acc.next();
            } else {
                let r = refs.next();
                prop_assert!(r.is_some(), "document {:?} neither accepted nor refused", d);
                let r = r.unwrap_or_else(|| unreachable!());
                prop_assert!(rule_holds(d, r), "rule {:?} does not hold for {:?}", r, d);
                prop_assert!(!ok(d), "refused {:?} although acceptable", d);
            }
        }
        prop_assert!(acc.next().is_none());
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn iti18_generated(req in any_query(), claim in proptest::bool::ANY) {
            let home = hc(HOME);
            let peers = [hc(KNOWN)];
            let q = req.query.clone();
            let claimed: Option<Bsn> = claim.then(|| "999911120".parse().unwrap());
            // a malformed or several-valued patient parameter is a Parameter failure, like a missing one
            let patient: Result<Option<String>, ()> = disclosure::PATIENT_PARAMS
                .iter()
                .try_fold(None, |acc: Option<String>, p| match q.single(p) {
                    Err(_) => Err(()),
                    Ok(v) => Ok(acc.or(v)),
                });
            let required = q.check_required().is_ok() && patient.is_ok();
            let patient_cx = patient.unwrap_or(None);
            let checkable = patient_cx.as_deref().is_none_or(|cx| AskedPatient::from_cx(cx).is_some());
            match iti18(req.clone(), claimed.as_ref(), &home, &peers) {
                Ok(v) => {
                    // accepted: every rule holds, the request is passed on as received
                    prop_assert!(required && checkable);
                    prop_assert_eq!(&v.request, &req);
                    match &v.route {
                        QueryRoute::Community(h) => {
                            prop_assert_eq!(Some(h), q.home.as_ref());
                            prop_assert!(h == &home || peers.contains(h));
                        }
                        QueryRoute::Localize => {
                            prop_assert!(q.home.is_none() && patient_cx.is_some());
                        }
                    }
                    // the patient checked is the query's own when it names one, else the claimed one
                    match patient_cx.as_deref() {
                        Some(cx) => prop_assert_eq!(v.asked, AskedPatient::from_cx(cx)),
                        None => prop_assert_eq!(v.asked, claimed.map(AskedPatient::Bsn)),
                    }
                }
                Err(rule) => match &rule {
                    LocalQueryRule::Parameter(_) => prop_assert!(!required),
                    LocalQueryRule::UncheckablePatient { cx } => {
                        prop_assert!(required && !checkable);
                        prop_assert_eq!(Some(cx), patient_cx.as_ref());
                    }
                    LocalQueryRule::UnknownCommunity { asked } => {
                        prop_assert!(required && checkable);
                        prop_assert_eq!(Some(asked), q.home.as_ref());
                        prop_assert!(asked != &home && !peers.contains(asked));
                    }
                    LocalQueryRule::MissingHomeCommunityId => {
                        prop_assert!(required && checkable);
                        prop_assert!(q.home.is_none() && patient_cx.is_none());
                    }
                },
            }
        }

        #[test]
        fn iti38_generated(req in any_query()) {
            let home = hc(HOME);
            let q = req.query.clone();
            let known = StoredQuery::from_id(&q.id);
            let named = disclosure::named_patients(&q);
            let home_ok = q.home.as_ref().is_none_or(|h| h == &home);
            match iti38(req.clone(), &home) {
                Ok(v) => {
                    // accepted: every rule holds, and the request is passed on as received
                    prop_assert!(home_ok);
                    prop_assert_eq!(Some(v.query), known);
                    prop_assert!(!named.is_empty() || q.home.is_some());
                    prop_assert!(has_required(&q, v.query));
                    prop_assert_eq!(&v.targets, &expected_targets(&q, &home).unwrap_or_else(|| unreachable!("accepted a bad list")));
                    prop_assert_eq!(v.request, req);
                    prop_assert_eq!(v.named, named);
                }
                Err(rule) => {
                    // refused: the named rule fails and every rule before it holds
                    match &rule {
                        QueryRule::NotThisCommunity { asked } => {
                            prop_assert_eq!(Some(asked), q.home.as_ref());
                            prop_assert!(asked != &home);
                        }
                        QueryRule::UnknownStoredQuery(_) => {
                            prop_assert!(home_ok && known.is_none());
                        }
                        QueryRule::MissingHomeCommunityId { query } => {
                            prop_assert!(home_ok && known == Some(*query));
                            prop_assert!(named.is_empty() && q.home.is_none());
                        }
                        QueryRule::MissingParameter(_) => {
                            let sq = known.unwrap_or_else(|| unreachable!("rule order"));
                            prop_assert!(home_ok && (!named.is_empty() || q.home.is_some()));
                            prop_assert!(!has_required(&q, sq));
                        }
                        QueryRule::EmptyTargetCommunityList | QueryRule::BadTargetCommunityList(_) => {
                            let sq = known.unwrap_or_else(|| unreachable!("rule order"));
                            prop_assert!(home_ok && (!named.is_empty() || q.home.is_some()));
                            prop_assert!(has_required(&q, sq));
                            prop_assert!(expected_targets(&q, &home).is_none());
                            prop_assert_eq!(
                                matches!(rule, QueryRule::EmptyTargetCommunityList),
                                q.target_communities().ok().flatten().is_some_and(|l| l.is_empty())
                            );
                        }
                    }
                    let e = rule.to_registry_error(&home);
                    prop_assert_eq!(e.location.as_deref(), Some(HOME));
                }
            }
        }

        /// Hostile `$targetCommunityIdList` values on an otherwise valid FindDocuments: never a panic;
        /// accepted only as a non-empty set of distinct homeCommunityIds (ours answered, the rest named);
        /// duplicates, empty strings, non-OIDs and malformed lists refused.
        #[test]
        fn iti38_target_list_generated(
            slots in prop::collection::vec(
                prop::collection::vec(
                    prop_oneof![
                        prop::collection::vec(any_target_entry(), 0..5)
                            .prop_map(|e| crate::ihe::query::format_list(&e)),
                        any_target_entry().prop_map(|e| crate::ihe::query::format_single(&e)),
                        Just("()".to_owned()),
                        any_text(),
                    ],
                    0..3,
                ),
                1..3,
            )
        ) {
            let home = hc(HOME);
            let mut all = find_documents();
            all.extend(slots.iter().map(|v| Slot::new(param::TARGET_COMMUNITY_ID_LIST, v.clone())));
            let req = query(stored_query::FIND_DOCUMENTS, None, all);
            let expected = expected_targets(&req.query, &home);
            match iti38(req.clone(), &home) {
                Ok(v) => {
                    prop_assert_eq!(Some(&v.targets), expected.as_ref());
                    let w = unknown_community_warnings(v.targets.unknown(), &home);
                    prop_assert!(w.iter().all(|e| e.severity == crate::ihe::Severity::Warning));
                    prop_assert!(v.targets.unknown().iter().all(|u| u != &home));
                }
                Err(rule) => {
                    prop_assert!(expected.is_none(), "refused {:?}: {:?}", rule, slots);
                    prop_assert!(matches!(
                        rule,
                        QueryRule::EmptyTargetCommunityList | QueryRule::BadTargetCommunityList(_)
                    ));
                }
            }
        }

        #[test]
        fn iti39_generated(docs in prop::collection::vec(any_doc(), 0..12)) {
            let home = hc(HOME);
            let s = iti39(RetrieveDocumentSetRequest { documents: docs.clone() }, &home);
            let all: Vec<&DocumentRequest> = docs.iter().collect();
            let accepted: Vec<&DocumentRequest> = s.accepted.iter().collect();
            check_partition(
                &all,
                &accepted,
                &s.refused,
                |d| d.home_community_id.as_ref() == Some(&home),
                |d, r| match r {
                    DocumentRule::MissingHomeCommunityId { document_unique_id } =>
                        d.home_community_id.is_none() && document_unique_id == &d.document_unique_id,
                    DocumentRule::NotThisCommunity { home: h, asked } =>
                        h == &home && d.home_community_id.as_ref() == Some(asked) && asked != &home,
                    DocumentRule::UnknownCommunity { .. } => false,
                },
            )?;
        }

        #[test]
        fn rad75_generated(req in any_imaging()) {
            let home = hc(HOME);
            // the structural rules are exactly those of the simulators' check
            let wire = req.validate(false);
            match rad75(&req, &home) {
                Err(rules) => {
                    prop_assert!(!rules.is_empty());
                    if wire.is_empty() {
                        prop_assert_eq!(rules.len(), 1);
                        match &rules[0] {
                            ImagingRule::TooManyStudies { studies } => {
                                prop_assert!(*studies > MAX_STUDIES_PER_RETRIEVE)
                            }
                            ImagingRule::NoTransferSyntax => prop_assert!(
                                req.transfer_syntaxes.iter().all(|t| t.trim().is_empty())
                            ),
                            other => prop_assert!(false, "structural rule {:?} the wire check misses", other),
                        }
                    } else {
                        prop_assert_eq!(imaging_errors(&rules), wire);
                    }
                }
                Ok(s) => {
                    prop_assert!(wire.is_empty());
                    prop_assert!(req.studies.iter().all(|st| !st.study_instance_uid.trim().is_empty()
                        && st.series.iter().all(|se| !se.series_instance_uid.trim().is_empty())));
                    prop_assert!(req.transfer_syntaxes.iter().any(|t| !t.trim().is_empty()));
                    let all: Vec<&DocumentRequest> = req.documents().map(|(_, _, d)| d).collect();
                    let accepted: Vec<&DocumentRequest> = s.accepted.iter().map(|(_, _, d)| d).collect();
                    check_partition(
                        &all,
                        &accepted,
                        &s.refused,
                        |d| d.home_community_id.as_ref() == Some(&home),
                        |d, r| match r {
                            DocumentRule::MissingHomeCommunityId { .. } => d.home_community_id.is_none(),
                            DocumentRule::NotThisCommunity { asked, .. } =>
                                d.home_community_id.as_ref() == Some(asked) && asked != &home,
                            DocumentRule::UnknownCommunity { .. } => false,
                        },
                    )?;
                    // each accepted document keeps its study and series
                    let placed: Vec<(&str, &str, &DocumentRequest)> = req.documents().collect();
                    for (st, se, d) in &s.accepted {
                        prop_assert!(placed.contains(&(st.as_str(), se.as_str(), d)));
                    }
                }
            }
        }

        #[test]
        fn iti43_and_rad69_generated(
            docs in prop::collection::vec(any_doc(), 0..12),
            req in any_imaging(),
        ) {
            let c = communities();
            let home = hc(HOME);
            let routes = |d: &DocumentRequest| match &d.home_community_id {
                Some(h) => h == &home || h == &hc(KNOWN),
                None => d.repository_unique_id == LOCAL_REPO,
            };
            let rule_holds = |d: &DocumentRequest, r: &DocumentRule| match r {
                DocumentRule::MissingHomeCommunityId { document_unique_id } => d.home_community_id.is_none()
                    && d.repository_unique_id != LOCAL_REPO
                    && document_unique_id == &d.document_unique_id,
                DocumentRule::UnknownCommunity { asked } => d.home_community_id.as_ref() == Some(asked)
                    && asked != &home && asked != &hc(KNOWN),
                DocumentRule::NotThisCommunity { .. } => false,
            };
            // every routed document goes where its HomeCommunityId (or local repository) says
            let check_routes = |by: Vec<(HomeCommunityId, &'static str, Vec<&DocumentRequest>)>| -> Result<(), TestCaseError> {
                for (h, t, ds) in by {
                    prop_assert_eq!(t, if h == home { "local" } else { "known" });
                    for d in ds {
                        match &d.home_community_id {
                            Some(x) => prop_assert_eq!(x, &h),
                            None => prop_assert!(h == home && d.repository_unique_id == LOCAL_REPO),
                        }
                    }
                }
                Ok(())
            };

            let r = iti43(&RetrieveDocumentSetRequest { documents: docs.clone() }, &c);
            let mut routed: Vec<&DocumentRequest> = r.by_community.values().flat_map(|(_, v)| v).collect();
            check_routes(r.by_community.iter().map(|(h, (t, v))| (h.clone(), *t, v.iter().collect())).collect())?;
            // order within the request: compare as the partition of the documents in request order
            let all: Vec<&DocumentRequest> = docs.iter().collect();
            routed.sort_by_key(|d| all.iter().position(|x| std::ptr::eq(*x, *d) || *x == *d));
            let ordered: Vec<&DocumentRequest> = all.iter().copied().filter(|d| routes(d)).collect();
            prop_assert_eq!(routed.len(), ordered.len());
            check_partition(&all, &ordered, &r.refused, routes, rule_holds)?;

            let wire = req.validate(false);
            match rad69(&req, &c) {
                Err(rules) => {
                    prop_assert!(!rules.is_empty());
                    prop_assert_eq!(imaging_errors(&rules), wire);
                }
                Ok(r) => {
                    prop_assert!(wire.is_empty());
                    check_routes(r.by_community.iter().map(|(h, (t, v))| (h.clone(), *t, v.iter().map(|(_, _, d)| d).collect())).collect())?;
                    let all: Vec<&DocumentRequest> = req.documents().map(|(_, _, d)| d).collect();
                    let ok: Vec<&DocumentRequest> = all.iter().copied().filter(|d| routes(d)).collect();
                    let n: usize = r.by_community.values().map(|(_, v)| v.len()).sum();
                    prop_assert_eq!(n, ok.len());
                    check_partition(&all, &ok, &r.refused, routes, rule_holds)?;
                }
            }
        }
    }
}
