//! `GET /api/v1/patients/{bsn}/timeline`: the patient's imaging timeline for viewers (OpenAPI in
//! `runtime/openapi.yaml`, served at `/api/v1/openapi.yaml`).
//!
//! Flow: identify the requester (trusted front end headers) → localise → per chosen community, in
//! parallel: FindDocuments, then its KOS manifests (ITI-39 / ITI-43, one request per community) for
//! series and instance counts and retrieve references, both within the community's one deadline (what
//! is left of it after the query bounds the manifests; late manifests only lose the details, with a
//! warning) → merge on Study Instance UID → audit → JSON.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http::{HeaderMap, StatusCode};
use serde::Serialize;

use super::Gateway;
use super::fanout::{AskedPatient, CommunityOutcome, FanOut, Target, context_for, outcome_of};
use super::identity::{self, Refusal};
use crate::audit::{AuditEvent, AuditRecord, AuditTransaction, Outcome, Side};
use crate::backend::RetrieveStream;
use crate::config::LocalizationMode;
use crate::gateway::identity::PeerCertificate;
use crate::ihe::mtom::RetrieveItem;
use crate::ihe::query::{AdhocQuery, AdhocQueryRequest, ReturnType, StoredQuery, param};
use crate::ihe::retrieve::{DocumentRequest, DocumentResponseMeta, RetrieveDocumentSetRequest};
use crate::ihe::transform::document_entries;
use crate::ihe::{ErrorCode, RegistryError, ResponseStatus, Transaction};
use crate::model::{Bsn, DocumentEntry, DocumentKind, Requester};
use crate::timeline::{self, CommunityResult, Report, TimelineEntry};

/// Largest KOS manifest read for the timeline, bytes.
const MAX_MANIFEST: usize = 32 * 1024 * 1024;

/// One error as the JSON API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ApiError {
    /// RegistryError code.
    pub error_code: String,
    /// Detail.
    pub code_context: String,
    /// The community concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Severity URI.
    pub severity: String,
}

impl From<&RegistryError> for ApiError {
    fn from(e: &RegistryError) -> ApiError {
        ApiError {
            error_code: e.error_code.as_str().to_owned(),
            code_context: e.code_context.clone(),
            location: e.location.clone(),
            severity: e.severity.uri().to_owned(),
        }
    }
}

/// The timeline document (schema `Timeline` of the OpenAPI document).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    /// Success, PartialSuccess or Failure.
    pub status: ResponseStatus,
    /// `mitz` or `allCommunities`.
    pub localization: &'static str,
    /// Every community asked.
    pub communities: Vec<CommunityOutcome>,
    /// Errors of the communities (and of manifest retrieval).
    pub errors: Vec<ApiError>,
    /// Studies, newest first.
    pub studies: Vec<TimelineEntry>,
    /// Reports matching no study.
    pub unmatched_reports: Vec<Report>,
}

/// Why the timeline API answers without a timeline: JSON `{"error": "<message>"}` with the HTTP status
/// of [`TimelineError::status`] (schema `Error` of the OpenAPI document).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimelineError {
    /// The path's BSN is not a valid BSN (HTTP 400).
    #[error("{0}")]
    Patient(String),
    /// The requester headers of the trusted front end are missing or invalid (HTTP 400).
    #[error("{0}")]
    RequesterHeaders(String),
    /// The caller is not a trusted front end (HTTP 403).
    #[error("{0}")]
    Caller(String),
    /// `server.limits.maxConcurrentTimelines` queries are in progress (HTTP 503).
    #[error("more than {0} timeline queries in progress; retry later")]
    Overloaded(usize),
    /// No community could be asked (localisation failed), or the audit trail could not record the
    /// answer, so nothing is returned (HTTP 502).
    #[error("{0}")]
    Unavailable(String),
    /// The timeline was not ready within `server.limits.requestTimeoutSeconds` (HTTP 504).
    #[error("timeline not ready in time")]
    NotInTime,
}

impl TimelineError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            TimelineError::Patient(_) | TimelineError::RequesterHeaders(_) => {
                StatusCode::BAD_REQUEST
            }
            TimelineError::Caller(_) => StatusCode::FORBIDDEN,
            TimelineError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            TimelineError::Unavailable(_) => StatusCode::BAD_GATEWAY,
            TimelineError::NotInTime => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

impl IntoResponse for TimelineError {
    fn into_response(self) -> Response {
        (
            self.status(),
            axum::Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

/// The handler. See the module documentation.
pub async fn timeline(
    g: Arc<Gateway>,
    peer: Option<PeerCertificate>,
    headers: HeaderMap,
    bsn: String,
) -> Result<Timeline, TimelineError> {
    let patient: Bsn = bsn
        .parse()
        .map_err(|e: crate::model::IdError| TimelineError::Patient(e.to_string()))?;
    let requester = match identity::api_requester(&g, peer.as_ref(), &headers) {
        Ok(r) => r,
        Err(r @ Refusal::Headers(_)) => return Err(TimelineError::RequesterHeaders(r.to_string())),
        Err(r) => return Err(TimelineError::Caller(r.to_string())),
    };
    let Ok(_permit) = g.timelines.clone().try_acquire_owned() else {
        g.metrics.count_request("timeline", "overloaded");
        return Err(TimelineError::Overloaded(
            g.config.server.limits.max_concurrent_timelines,
        ));
    };
    let t = build_timeline(&g, &requester, &patient).await?;
    g.metrics.count_request("timeline", t.status.name());
    Ok(t)
}

/// Builds the timeline of `patient` for `requester`. Errors only when no community could be asked
/// (localisation failed); community failures are part of the timeline.
pub async fn build_timeline(
    g: &Gateway,
    requester: &Requester,
    patient: &Bsn,
) -> Result<Timeline, TimelineError> {
    let mut audit = AuditRecord::new(
        AuditEvent::Query,
        AuditTransaction::Other("JSON-TIMELINE".into()),
        Side::Initiating,
    );
    audit.requester = Some(requester.into());
    audit.patient = Some(patient.clone());
    let asked = AskedPatient::Bsn(patient.clone());
    let fan_out = FanOut::new(g, Some(requester), Some(&asked));
    let targets = match fan_out.targets().await {
        Ok(t) => t,
        Err(e) => {
            audit.outcome = Outcome::Failure;
            audit.outcome_detail = Some(e.to_string());
            let _ = g.hooks.audit(&audit).await;
            return Err(TimelineError::Unavailable(e.to_string()));
        }
    };
    let mut q = AdhocQuery::new(StoredQuery::FindDocuments);
    q.set_single(param::DE_PATIENT_ID, &patient.to_cx());
    q.add_list(
        param::DE_STATUS,
        &["urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"],
    );
    let req = AdhocQueryRequest::new(q, ReturnType::LeafClass);
    // each community's query and its manifests form one pipeline under the community's one deadline:
    // a community slow to query and another slow to deliver manifests cost one deadline, not two
    let details = g.config.initiating.manifest_details;
    let done = fan_out
        .each(&targets, &req, |g, t, answer| async move {
            let (entries, bad) = document_entries(&answer.response.objects);
            for b in bad {
                tracing::info!(community = %t.home, error = %b, "DocumentEntry left out");
            }
            let manifests = if details {
                match tokio::time::timeout(
                    answer.left,
                    fetch_manifests(g, t, requester, patient, &entries),
                )
                .await
                {
                    Ok(m) => m,
                    Err(_) => Err((
                        BTreeMap::new(),
                        vec![
                            RegistryError::new(
                                ErrorCode::XDSUnavailableCommunity,
                                format!(
                                    "{}: manifests not retrieved within the deadline of {:?}",
                                    t.home, t.deadline
                                ),
                            )
                            .at(t.home.to_string())
                            .warning(),
                        ],
                    )),
                }
            } else {
                Ok(BTreeMap::new())
            };
            (t, answer.response, answer.outcome, entries, manifests)
        })
        .await;
    // the communities' errors first, then those of manifest retrieval (as before)
    let mut errors: Vec<RegistryError> = done
        .iter()
        .flat_map(|(_, resp, ..)| resp.errors.iter().cloned())
        .collect();
    let mut outcomes = Vec::new();
    let mut results = Vec::new();
    for (t, _, outcome, entries, manifests) in done {
        let manifests = match manifests {
            Ok(m) => m,
            Err(mut e) => {
                errors.append(&mut e.1);
                e.0
            }
        };
        outcomes.push(outcome);
        results.push(CommunityResult {
            home_community_id: Some(t.home.clone()),
            name: t.name.clone(),
            organization: t.organization.clone(),
            entries,
            manifests,
        });
    }
    let (studies, unmatched) = timeline::merge(&results);
    let status = overall_status(&errors, studies.len() + unmatched.len());
    audit.study_ids = studies
        .iter()
        .map(|s| s.study_instance_uid.clone())
        .collect();
    audit.document_ids = studies
        .iter()
        .flat_map(|s| s.sources.iter().map(|x| x.document_unique_id.clone()))
        .chain(
            unmatched
                .iter()
                .flat_map(|r| r.sources.iter().map(|x| x.document_unique_id.clone())),
        )
        .collect();
    audit.outcome = outcome_of(status);
    g.hooks.audit(&audit).await.map_err(|e| {
        TimelineError::Unavailable(format!("audit trail unavailable, nothing returned: {e}"))
    })?;
    Ok(Timeline {
        status,
        localization: match g.config.initiating.localization {
            LocalizationMode::Mitz => "mitz",
            LocalizationMode::AllCommunities => "allCommunities",
        },
        communities: outcomes,
        errors: errors.iter().map(ApiError::from).collect(),
        studies,
        unmatched_reports: unmatched,
    })
}

/// Success without errors, PartialSuccess with errors and something found, Failure with errors only.
fn overall_status(errors: &[RegistryError], found: usize) -> ResponseStatus {
    let has_error = errors
        .iter()
        .any(|e| e.severity == crate::ihe::Severity::Error);
    match (has_error, found) {
        (false, _) => ResponseStatus::Success,
        (true, 0) => ResponseStatus::Failure,
        (true, _) => ResponseStatus::PartialSuccess,
    }
}

type Manifests = BTreeMap<String, crate::model::ImagingStudy>;

/// Retrieves and decodes the KOS manifests among `entries` from `t` in one request. A failure leaves
/// the manifests it could read and reports the rest as errors.
async fn fetch_manifests(
    g: &Gateway,
    t: &Target,
    requester: &Requester,
    patient: &Bsn,
    entries: &[DocumentEntry],
) -> Result<Manifests, (Manifests, Vec<RegistryError>)> {
    let docs: Vec<DocumentRequest> = entries
        .iter()
        .filter(|e| e.kind() == DocumentKind::ImagingManifest)
        .map(|e| DocumentRequest {
            home_community_id: Some(
                e.home_community_id
                    .clone()
                    .unwrap_or_else(|| t.home.clone()),
            ),
            repository_unique_id: e.repository_unique_id.clone(),
            document_unique_id: e.unique_id.clone(),
        })
        .collect();
    if docs.is_empty() {
        return Ok(BTreeMap::new());
    }
    let ctx = context_for(g, t, Some(requester), Some(patient));
    let tx = if t.local {
        Transaction::Iti43
    } else {
        Transaction::Iti39
    };
    let stream = match t
        .community
        .retrieve(ctx, RetrieveDocumentSetRequest { documents: docs })
        .await
    {
        Ok(s) => s,
        Err(e) => {
            return Err((
                BTreeMap::new(),
                vec![e.to_registry_error(tx, &t.home.to_string())],
            ));
        }
    };
    let mut errors: Vec<RegistryError> = stream.response.errors.clone();
    let mut out = BTreeMap::new();
    match collect_documents_reporting(stream, MAX_MANIFEST).await {
        Ok((docs, failed)) => {
            for (meta, why) in failed {
                errors.push(
                    RegistryError::new(
                        ErrorCode::XDSRepositoryError,
                        format!(
                            "manifest {} not retrieved whole: {why}",
                            meta.document_unique_id
                        ),
                    )
                    .at(t.home.to_string()),
                );
            }
            for (meta, bytes) in docs {
                match crate::dicom::parse_kos(&bytes) {
                    Ok(kos) => {
                        if let Some(study) = kos.study() {
                            out.insert(meta.document_unique_id.clone(), study.clone());
                        }
                    }
                    Err(e) => errors.push(
                        RegistryError::new(
                            ErrorCode::XDSRepositoryError,
                            format!(
                                "manifest {} is not a readable KOS: {e}",
                                meta.document_unique_id
                            ),
                        )
                        .at(t.home.to_string())
                        .warning(),
                    ),
                }
            }
        }
        Err(e) => errors.push(
            RegistryError::new(
                ErrorCode::XDSRepositoryError,
                format!("manifest retrieve: {e}"),
            )
            .at(t.home.to_string()),
        ),
    }
    // manifest problems degrade the details, never hide the study: warnings
    let errors: Vec<RegistryError> = errors.into_iter().map(|e| e.warning()).collect();
    if errors.is_empty() {
        Ok(out)
    } else {
        Err((out, errors))
    }
}

/// Reads a whole retrieve stream into memory, each document bounded by `max_each` bytes (manifests and
/// reports; images are relayed, never collected). A document that could not be delivered whole
/// ([`RetrieveItem::Failed`]) is an error; [`collect_documents_reporting`] keeps the others.
pub async fn collect_documents(
    s: RetrieveStream,
    max_each: usize,
) -> Result<Vec<(DocumentResponseMeta, Bytes)>, String> {
    let (docs, failed) = collect_documents_reporting(s, max_each).await?;
    match failed.first() {
        Some((m, why)) => Err(format!("document {}: {why}", m.document_unique_id)),
        None => Ok(docs),
    }
}

/// [`collect_documents`], returning the documents delivered whole and, apart, those that were not
/// (with the reason).
pub async fn collect_documents_reporting(
    s: RetrieveStream,
    max_each: usize,
) -> Result<Failing, String> {
    let metas = s.documents;
    let mut items = s.items;
    let mut out = Vec::new();
    let mut failed = Vec::new();
    let mut cur: Option<(usize, BytesMut)> = None;
    while let Some(it) = items.next().await {
        match it.map_err(|e| e.to_string())? {
            RetrieveItem::Failed(i, why) => {
                if cur.as_ref().is_some_and(|(c, _)| *c == i) {
                    cur = None;
                }
                if let Some(m) = metas.get(i) {
                    failed.push((m.clone(), why));
                }
            }
            RetrieveItem::Document(i) => cur = Some((i, BytesMut::new())),
            RetrieveItem::Chunk(c) => {
                if let Some((_, buf)) = &mut cur {
                    if buf.len() + c.len() > max_each {
                        return Err(format!("document larger than {max_each} bytes"));
                    }
                    buf.extend_from_slice(&c);
                }
            }
            RetrieveItem::End => {
                if let Some((i, buf)) = cur.take()
                    && let Some(m) = metas.get(i)
                {
                    out.push((m.clone(), buf.freeze()));
                }
            }
        }
    }
    Ok((out, failed))
}

/// Documents delivered whole, and those that were not with the reason
/// ([`collect_documents_reporting`]).
pub type Failing = (
    Vec<(DocumentResponseMeta, Bytes)>,
    Vec<(DocumentResponseMeta, String)>,
);
