//! The initiating side: XCA Initiating Gateway (ITI-18 and ITI-43 from local consumers) and XCA-I
//! Initiating Imaging Gateway (RAD-69 from local consumers).
//!
//! Queries fan out to the communities chosen by localisation (Mitz open question, or every configured
//! community), in parallel, each with its own deadline; answers are aggregated to Success,
//! PartialSuccess (with each failing community's error; XDSUnavailableCommunity for one that did not
//! answer in time) or Failure (ITI TF-2b 3.38.4.1.3; NIST 15814). Retrieves are routed by
//! homeCommunityId to the one community that holds the document, never to an address taken from the
//! request; an unknown homeCommunityId gets XDSUnknownCommunity and causes no outbound call.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Gateway;
use super::identity;
use super::reply::{SoapReply, read_request, reject};
use super::responding::push_document;
use crate::audit::{AuditEvent, AuditRecord, AuditTransaction, Outcome, Side};
use crate::backend::{CallContext, Community, RetrieveStream};
use crate::config::LocalizationMode;
use crate::ihe::ebrim::Identifiable;
use crate::ihe::query::{AdhocQueryRequest, AdhocQueryResponse, param};
use crate::ihe::retrieve::{
    DocumentRequest, RetrieveDocumentSetRequest, RetrieveImagingDocumentSetRequest,
};
use crate::ihe::xua::XuaAssertion;
use crate::ihe::{ErrorCode, RegistryError, ResponseStatus, Transaction};
use crate::model::{Bsn, HomeCommunityId, Organization, Requester};
use crate::server::listener::PeerCertificate;
use crate::server::metrics::{CommunityErrorLabels, CommunityLabels};

/// A community to ask.
#[derive(Clone)]
pub struct Target {
    /// Its homeCommunityId (this gateway's own for the local community).
    pub home: HomeCommunityId,
    /// Display name.
    pub name: String,
    /// The backend.
    pub community: Arc<dyn Community>,
    /// Its deadline.
    pub deadline: Duration,
    /// Whether it is the hospital's own community (asked with ITI-18 semantics; objects get our `home`).
    pub local: bool,
    /// The organisation behind it, when one is configured.
    pub organization: Option<Organization>,
}

/// What one community answered, for the timeline and the metrics.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommunityOutcome {
    /// homeCommunityId.
    pub home_community_id: HomeCommunityId,
    /// Display name.
    pub name: String,
    /// Its status.
    pub status: ResponseStatus,
    /// How long it took, ms.
    pub duration_ms: u64,
    /// DocumentEntries returned.
    pub documents: usize,
}

/// Every community of the gateway, the local one first when configured.
pub fn all_targets(g: &Gateway) -> Vec<Target> {
    let mut t = Vec::new();
    if g.config.initiating.include_local {
        t.push(local_target(g));
    }
    for r in &g.remotes {
        t.push(Target {
            home: r.config.home_community_id.clone(),
            name: r.config.name.clone(),
            community: r.community.clone(),
            deadline: Duration::from_millis(r.config.deadline_ms),
            local: false,
            organization: r.config.organizations.first().map(|o| Organization {
                ura: o.ura.clone(),
                name: if o.name.is_empty() {
                    r.config.name.clone()
                } else {
                    o.name.clone()
                },
                facility_type: None,
                home_community_id: Some(r.config.home_community_id.clone()),
            }),
        });
    }
    t
}

/// The hospital's own community as a target.
pub fn local_target(g: &Gateway) -> Target {
    Target {
        home: g.home.clone(),
        name: g.config.organization.name.clone(),
        community: g.local.clone(),
        deadline: g.local_deadline(),
        local: true,
        organization: Some(g.organization()),
    }
}

/// Why no community was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalizeError {
    /// Mitz could not answer the open question: no broadcast.
    #[error("localisation failed, no community was asked: {0}")]
    Mitz(String),
    /// Localisation needs a patient and a requester.
    #[error("localisation needs {0}")]
    Needs(&'static str),
}

/// The communities to ask about `patient`: under `mitz` localisation those Mitz names (communities it
/// names that are not configured are logged and skipped), else every configured one; the local
/// community when `includeLocal`.
pub async fn targets_for(
    g: &Gateway,
    patient: Option<&Bsn>,
    requester: Option<&Requester>,
) -> Result<Vec<Target>, LocalizeError> {
    let all = all_targets(g);
    if g.config.initiating.localization == LocalizationMode::AllCommunities {
        return Ok(all);
    }
    let Some(loc) = &g.hooks.localize else {
        return Err(LocalizeError::Mitz(
            "no Mitz open question configured".into(),
        ));
    };
    let patient = patient.ok_or(LocalizeError::Needs("a patient BSN"))?;
    let requester = requester.ok_or(LocalizeError::Needs("a requester identity"))?;
    let located = loc.locate(patient, requester).await;
    let mut rec = AuditRecord::new(
        AuditEvent::Localization,
        AuditTransaction::MitzOpenQuestion,
        Side::Initiating,
    );
    rec.requester = Some(requester.into());
    rec.patient = Some(patient.clone());
    match &located {
        Ok(l) => rec.outcome_detail = Some(format!("{} location(s)", l.len())),
        Err(e) => {
            rec.outcome = Outcome::Failure;
            rec.outcome_detail = Some(e.to_string());
        }
    }
    g.hooks.audit(&rec).await.map_err(LocalizeError::Mitz)?;
    let named: Vec<HomeCommunityId> = located
        .map_err(|e| LocalizeError::Mitz(e.to_string()))?
        .into_iter()
        .map(|l| l.home_community_id)
        .collect();
    for h in &named {
        if h != &g.home && g.remote(h).is_none() {
            tracing::info!(community = %h, "Mitz names a community that is not configured; skipped");
        }
    }
    Ok(all
        .into_iter()
        .filter(|t| t.local || named.contains(&t.home))
        .collect())
}

/// The XUA header block sent to `target` on behalf of `requester` about `patient`.
pub fn context_for(
    g: &Gateway,
    target: &Target,
    requester: Option<&Requester>,
    patient: Option<&Bsn>,
) -> CallContext {
    let mut blocks = Vec::new();
    if let Some(r) = requester {
        let mut a = super::xua::issue(g, r.clone(), &target.home.to_string());
        a.patient = patient.cloned();
        a.event_codes = vec![g.config.consent.category.clone()];
        if let Some(b) = super::xua::security_block(g, &a) {
            blocks.push(b);
        }
    }
    CallContext {
        header_blocks: Arc::new(blocks),
        deadline: Some(target.deadline),
    }
}

fn set_home_if_missing(objects: &mut [Identifiable], home: &HomeCommunityId) {
    for o in objects {
        match o {
            Identifiable::ExtrinsicObject(e) if e.object.home.is_none() => {
                e.object.home = Some(home.clone())
            }
            Identifiable::RegistryPackage(p) if p.object.home.is_none() => {
                p.object.home = Some(home.clone())
            }
            Identifiable::ObjectRef(r) if r.home.is_none() => r.home = Some(home.clone()),
            _ => {}
        }
    }
}

/// Asks every target in parallel and aggregates (see the module documentation). Returns the aggregated
/// response, each community's outcome and the per-community responses (same order as `targets`).
pub async fn fan_out_query(
    g: &Gateway,
    targets: &[Target],
    requester: Option<&Requester>,
    patient: Option<&Bsn>,
    req: &AdhocQueryRequest,
) -> (
    AdhocQueryResponse,
    Vec<CommunityOutcome>,
    Vec<AdhocQueryResponse>,
) {
    g.metrics.fanout_size.observe(targets.len() as f64);
    let calls = targets
        .iter()
        .map(|t| query_one(g, t, requester, patient, req));
    let results = futures::future::join_all(calls).await;
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    let mut outcomes = Vec::new();
    let mut per = Vec::new();
    for (resp, outcome) in results {
        objects.extend(resp.objects.iter().cloned());
        errors.extend(resp.errors.iter().cloned());
        outcomes.push(outcome);
        per.push(resp);
    }
    (AdhocQueryResponse::new(objects, errors), outcomes, per)
}

/// Asks one target within its deadline (one community's part of [`fan_out_query`]): its answer, or
/// the error its failure stands for (XDSUnavailableCommunity when it did not answer in time), with
/// `home` filled in for the local community, objects without `home` reported and left out, every error
/// located at the community, and the per-community metrics recorded.
pub async fn query_one(
    g: &Gateway,
    t: &Target,
    requester: Option<&Requester>,
    patient: Option<&Bsn>,
    req: &AdhocQueryRequest,
) -> (AdhocQueryResponse, CommunityOutcome) {
    let ctx = context_for(g, t, requester, patient);
    let mut r = req.clone();
    r.query.home = None;
    let start = Instant::now();
    // the deadline is enforced here too: a backend must not hold the fan-out beyond it
    let res = match tokio::time::timeout(t.deadline, t.community.query(ctx, r)).await {
        Ok(r) => r,
        Err(_) => Err(crate::backend::BackendError::Timeout(t.deadline)),
    };
    let took = start.elapsed();
    let tx = if t.local {
        Transaction::Iti18
    } else {
        Transaction::Iti38
    };
    let community = if t.local {
        "local".to_owned()
    } else {
        t.home.to_string()
    };
    g.metrics
        .community_latency
        .get_or_create(&CommunityLabels {
            community: community.clone(),
            transaction: tx.name().into(),
        })
        .observe(took.as_secs_f64());
    let mut resp = match res {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(community = %t.home, error = %e, "community query failed");
            g.metrics
                .community_errors
                .get_or_create(&CommunityErrorLabels {
                    community,
                    transaction: tx.name().into(),
                    code: e.label().into(),
                })
                .inc();
            AdhocQueryResponse::new(
                Vec::new(),
                vec![e.to_registry_error(tx, &t.home.to_string())],
            )
        }
    };
    if t.local {
        set_home_if_missing(&mut resp.objects, &t.home);
    }
    // objects without home cannot be retrieved: reported and left out (ITI TF-2b 3.38.4.1.3)
    let missing = resp.missing_home_errors(Some(&t.home));
    if !missing.is_empty() {
        resp.objects
            .retain(|o| !(o.requires_home() && o.home().is_none()));
        resp.errors.extend(missing);
    }
    for e in &mut resp.errors {
        if e.location.is_none() {
            e.location = Some(t.home.to_string());
        }
    }
    let docs = resp
        .objects
        .iter()
        .filter(|o| matches!(o, Identifiable::ExtrinsicObject(_)))
        .count();
    let status = if resp
        .errors
        .iter()
        .any(|e| e.severity == crate::ihe::Severity::Error)
    {
        if resp.objects.is_empty() {
            ResponseStatus::Failure
        } else {
            ResponseStatus::PartialSuccess
        }
    } else {
        ResponseStatus::Success
    };
    let outcome = CommunityOutcome {
        home_community_id: t.home.clone(),
        name: t.name.clone(),
        status,
        duration_ms: took.as_millis() as u64,
        documents: docs,
    };
    (resp, outcome)
}

/// Reads a local consumer's request of `tx` and its caller ([`identity::local_requester`]): the header,
/// the message and the XUA assertion (`None` only when `initiating.requireAssertion` is off). An
/// unreadable request or a refused caller gets its `Sender` fault, audited.
async fn read_local<T: crate::ihe::Message>(
    g: &Gateway,
    tx: Transaction,
    peer: Option<&PeerCertificate>,
    content_type: &str,
    body: Bytes,
) -> Result<(crate::ihe::SoapHeader, T, Option<XuaAssertion>), SoapReply> {
    let (h, req) = read_request::<T>(g, tx, Side::Initiating, peer, content_type, body).await?;
    let reason = match identity::local_requester(g, peer, &h) {
        Ok(None) if g.config.initiating.require_assertion => {
            "no ITI-40 XUA assertion in the request (wsse:Security); initiating.requireAssertion is on"
                .to_owned()
        }
        Ok(a) => return Ok((h, req, a)),
        Err(r) => r.to_string(),
    };
    Err(reject(g, tx, Side::Initiating, peer, Some(&h), Err(reason)).await)
}

/// ITI-18 from a local document consumer (XCA Initiating Gateway).
pub async fn iti18(
    g: Arc<Gateway>,
    peer: Option<PeerCertificate>,
    content_type: String,
    body: Bytes,
) -> SoapReply {
    let tx = Transaction::Iti18;
    let (h, req, assertion) =
        match read_local::<AdhocQueryRequest>(&g, tx, peer.as_ref(), &content_type, body).await {
            Ok(x) => x,
            Err(r) => return r,
        };
    let requester = assertion.map(|a| a.requester);
    let resp = initiate_query(&g, requester.as_ref(), req).await;
    g.metrics.count_request(tx.name(), resp.status.name());
    SoapReply::message(tx, &h, &resp)
}

/// The aggregated answer to a local consumer's stored query.
pub async fn initiate_query(
    g: &Gateway,
    requester: Option<&Requester>,
    req: AdhocQueryRequest,
) -> AdhocQueryResponse {
    let home = g.home.to_string();
    if let Err(e) = req.query.check_required() {
        return AdhocQueryResponse::new(Vec::new(), vec![e.to_registry_error().at(home)]);
    }
    let patient_cx = [
        param::DE_PATIENT_ID,
        param::SS_PATIENT_ID,
        "$XDSFolderPatientId",
        "$patientId",
    ]
    .iter()
    .find_map(|p| req.query.single(p).ok().flatten());
    let patient = patient_cx.as_deref().and_then(Bsn::from_cx);
    let mut audit = AuditRecord::new(AuditEvent::Query, Transaction::Iti18, Side::Initiating);
    audit.requester = requester.map(Into::into);
    audit.patient = patient.clone();
    let targets: Vec<Target> = match (&req.query.home, &patient_cx) {
        // a query naming a community goes to that community only
        (Some(h), _) => {
            if h == &g.home {
                vec![local_target(g)]
            } else if let Some(t) = all_targets(g).into_iter().find(|t| &t.home == h) {
                vec![t]
            } else {
                return AdhocQueryResponse::new(
                    Vec::new(),
                    vec![
                        RegistryError::new(
                            ErrorCode::XDSUnknownCommunity,
                            format!("unknown community {h}"),
                        )
                        .at(h.to_string()),
                    ],
                );
            }
        }
        (None, None) => {
            return AdhocQueryResponse::new(
                Vec::new(),
                vec![
                    RegistryError::new(
                        ErrorCode::XDSMissingHomeCommunityId,
                        "a query by id needs AdhocQuery/@home naming the community",
                    )
                    .at(home),
                ],
            );
        }
        (None, Some(_)) => match targets_for(g, patient.as_ref(), requester).await {
            Ok(t) => t,
            Err(e) => {
                audit.outcome = Outcome::Failure;
                audit.outcome_detail = Some(e.to_string());
                let _ = g.hooks.audit(&audit).await;
                return AdhocQueryResponse::new(
                    Vec::new(),
                    vec![RegistryError::new(ErrorCode::XDSRegistryError, e.to_string()).at(home)],
                );
            }
        },
    };
    let (resp, _outcomes, _) = fan_out_query(g, &targets, requester, patient.as_ref(), &req).await;
    audit.document_ids = resp
        .objects
        .iter()
        .filter_map(|o| match o {
            Identifiable::ExtrinsicObject(e) => e
                .object
                .external_id(crate::ihe::transform::uuids::UNIQUE_ID)
                .map(str::to_owned),
            _ => None,
        })
        .collect();
    audit.outcome = outcome_of(resp.status);
    if let Err(e) = g.hooks.audit(&audit).await {
        return AdhocQueryResponse::new(
            Vec::new(),
            vec![
                RegistryError::new(
                    ErrorCode::XDSRegistryError,
                    format!("audit trail unavailable, nothing returned: {e}"),
                )
                .at(g.home.to_string()),
            ],
        );
    }
    resp
}

/// Groups requests by the community their homeCommunityId names: `Ok(target)` for known ones, errors
/// (XDSMissingHomeCommunityId / XDSUnknownCommunity) for the rest, without any outbound call.
///
/// A request without HomeCommunityId whose RepositoryUniqueId is a repository or imaging document
/// source of the hospital's own community goes to that community: documents a local consumer found in
/// its own affinity domain's registry carry no `home`, and HomeCommunityId is optional in ITI-43 and RAD-69
/// requests (NIST 15816 and ids_4812 send none). Any other request without it cannot be routed.
fn route<'a, T>(
    g: &Gateway,
    items: impl Iterator<Item = (T, &'a DocumentRequest)>,
    errors: &mut Vec<RegistryError>,
) -> BTreeMap<HomeCommunityId, (Target, Vec<T>)> {
    let mut out: BTreeMap<HomeCommunityId, (Target, Vec<T>)> = BTreeMap::new();
    let all = all_targets(g);
    for (item, d) in items {
        let h = match &d.home_community_id {
            Some(h) => Some(h),
            None if g.local_holds(&d.repository_unique_id) => Some(&g.home),
            None => None,
        };
        let Some(h) = h else {
            errors.push(
                RegistryError::new(
                    ErrorCode::XDSMissingHomeCommunityId,
                    format!(
                        "DocumentRequest for {} has no HomeCommunityId",
                        d.document_unique_id
                    ),
                )
                .at(d.document_unique_id.clone()),
            );
            continue;
        };
        let target = if h == &g.home {
            Some(local_target(g))
        } else {
            all.iter().find(|t| &t.home == h).cloned()
        };
        match target {
            Some(t) => out
                .entry(h.clone())
                .or_insert_with(|| (t, Vec::new()))
                .1
                .push(item),
            None => errors.push(
                RegistryError::new(
                    ErrorCode::XDSUnknownCommunity,
                    format!("unknown community {h}"),
                )
                .at(h.to_string()),
            ),
        }
    }
    out
}

/// Retrieves documents from wherever their homeCommunityId says, combined into one stream.
pub async fn initiate_retrieve(
    g: &Gateway,
    requester: Option<&Requester>,
    patient: Option<&Bsn>,
    req: RetrieveDocumentSetRequest,
) -> RetrieveStream {
    let mut errors = Vec::new();
    let routed = route(g, req.documents.iter().map(|d| (d.clone(), d)), &mut errors);
    let calls = routed.into_values().map(|(t, docs)| {
        let ctx = context_for(g, &t, requester, patient);
        async move {
            let tx = if t.local {
                Transaction::Iti43
            } else {
                Transaction::Iti39
            };
            let res = t
                .community
                .retrieve(ctx, RetrieveDocumentSetRequest { documents: docs })
                .await;
            (t, tx, res)
        }
    });
    combine_retrieved(futures::future::join_all(calls).await, errors)
}

/// Combines the routed retrieves' answers into one stream: `home` set on every document of the own
/// community (and on a remote one's that left it out), each failed community's error as a
/// RegistryError located at its homeCommunityId (ITI TF-2 3.39.4.1.3).
fn combine_retrieved(
    results: Vec<(
        Target,
        Transaction,
        Result<RetrieveStream, crate::backend::BackendError>,
    )>,
    mut errors: Vec<RegistryError>,
) -> RetrieveStream {
    let mut parts = Vec::new();
    for (t, tx, res) in results {
        match res {
            Ok(mut s) => {
                for d in &mut s.documents {
                    if t.local || d.home_community_id.is_none() {
                        d.home_community_id = Some(t.home.clone());
                    }
                }
                parts.push(s)
            }
            Err(e) => errors.push(e.to_registry_error(tx, &t.home.to_string())),
        }
    }
    RetrieveStream::combine(parts, errors)
}

/// Counts, audits and answers a local consumer's retrieve (ITI-43 / RAD-69). Nothing is disclosed when
/// the audit record cannot be written: a Receiver fault instead.
async fn answer_local_retrieve(
    g: &Gateway,
    tx: Transaction,
    h: &crate::ihe::soap::SoapHeader,
    requester: Option<&Requester>,
    patient: Option<&Bsn>,
    s: RetrieveStream,
) -> SoapReply {
    let event = retrieve_audit(tx, requester, patient, &s);
    g.metrics.count_request(tx.name(), s.response.status.name());
    if let Err(e) = g.hooks.audit(&event).await {
        return SoapReply::fault(
            &crate::ihe::Fault {
                code: crate::ihe::FaultCode::Receiver,
                subcode: None,
                reason: format!("audit trail unavailable, nothing disclosed: {e}"),
            },
            Some(h),
        );
    }
    SoapReply::retrieve(tx, h, s)
}

/// ITI-43 from a local document consumer.
pub async fn iti43(
    g: Arc<Gateway>,
    peer: Option<PeerCertificate>,
    content_type: String,
    body: Bytes,
) -> SoapReply {
    let tx = Transaction::Iti43;
    let (h, req, assertion) =
        match read_local::<RetrieveDocumentSetRequest>(&g, tx, peer.as_ref(), &content_type, body)
            .await
        {
            Ok(x) => x,
            Err(r) => return r,
        };
    let (requester, patient) = match assertion {
        Some(a) => (Some(a.requester), a.patient),
        None => (None, None),
    };
    let s = initiate_retrieve(&g, requester.as_ref(), patient.as_ref(), req).await;
    answer_local_retrieve(&g, tx, &h, requester.as_ref(), patient.as_ref(), s).await
}

/// The audit record of a retrieve for a local consumer.
fn retrieve_audit(
    tx: Transaction,
    requester: Option<&Requester>,
    patient: Option<&Bsn>,
    s: &RetrieveStream,
) -> AuditRecord {
    let mut r = AuditRecord::new(AuditEvent::Retrieve, tx, Side::Initiating);
    r.requester = requester.map(Into::into);
    r.patient = patient.cloned();
    r.document_ids = s
        .documents
        .iter()
        .map(|d| d.document_unique_id.clone())
        .collect();
    r.outcome = outcome_of(s.response.status);
    r
}

/// The audit outcome of a response status.
pub fn outcome_of(status: ResponseStatus) -> Outcome {
    match status {
        ResponseStatus::Success => Outcome::Success,
        ResponseStatus::PartialSuccess => Outcome::PartialSuccess,
        ResponseStatus::Failure => Outcome::Failure,
    }
}

/// Retrieves imaging documents (RAD-69 semantics) from wherever their HomeCommunityId says.
pub async fn initiate_retrieve_images(
    g: &Gateway,
    requester: Option<&Requester>,
    patient: Option<&Bsn>,
    req: RetrieveImagingDocumentSetRequest,
) -> RetrieveStream {
    let mut errors: Vec<RegistryError> = req
        .validate(false)
        .into_iter()
        .filter(|e| e.error_code != ErrorCode::XDSMissingHomeCommunityId)
        .collect();
    if !errors.is_empty() {
        return RetrieveStream::errors(errors);
    }
    let routed = route(
        g,
        req.documents()
            .map(|(st, se, d)| ((st.to_owned(), se.to_owned(), d.clone()), d)),
        &mut errors,
    );
    let ts = req.transfer_syntaxes.clone();
    let calls = routed.into_values().map(|(t, docs)| {
        let ctx = context_for(g, &t, requester, patient);
        let mut sub = RetrieveImagingDocumentSetRequest {
            studies: Vec::new(),
            transfer_syntaxes: ts.clone(),
        };
        for (st, se, d) in docs {
            push_document(&mut sub, &st, &se, d);
        }
        async move {
            let tx = if t.local {
                Transaction::Rad69
            } else {
                Transaction::Rad75
            };
            let res = t.community.retrieve_images(ctx, sub).await;
            (t, tx, res)
        }
    });
    combine_retrieved(futures::future::join_all(calls).await, errors)
}

/// RAD-69 from a local imaging document consumer (XCA-I Initiating Imaging Gateway).
pub async fn rad69(
    g: Arc<Gateway>,
    peer: Option<PeerCertificate>,
    content_type: String,
    body: Bytes,
) -> SoapReply {
    let tx = Transaction::Rad69;
    let (h, req, assertion) = match read_local::<RetrieveImagingDocumentSetRequest>(
        &g,
        tx,
        peer.as_ref(),
        &content_type,
        body,
    )
    .await
    {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (requester, patient) = match assertion {
        Some(a) => (Some(a.requester), a.patient),
        None => (None, None),
    };
    let s = initiate_retrieve_images(&g, requester.as_ref(), patient.as_ref(), req).await;
    answer_local_retrieve(&g, tx, &h, requester.as_ref(), patient.as_ref(), s).await
}
