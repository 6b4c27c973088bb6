//! The responding side: XCA Responding Gateway (ITI-38, ITI-39) and XCA-I Responding Imaging Gateway
//! (RAD-75), answered from the hospital's own community after the consent check.
//!
//! Rules applied here (ITI TF-2b 3.38.4.1.3, 3.39.4.1.3; RAD TF-3 4.75.4.1.3; DOMAIN.md):
//! - `home` is set on every ExtrinsicObject, RegistryPackage and ObjectRef returned, and HomeCommunityId
//!   on every DocumentResponse;
//! - a request naming another community gets XDSUnknownCommunity; a query by id (GetDocuments ...) or a
//!   retrieve without homeCommunityId gets XDSMissingHomeCommunityId;
//! - consent: the patient's consent for this requester is asked before anything is read; only a
//!   disclosing decision lets data out; otherwise the answer looks exactly like "nothing found", so it
//!   does not reveal whether data exists. Retrieves name no patient: the patient comes from the XUA
//!   assertion's resource-id (IHE XUA Patient ID option) and every document must belong to it (checked
//!   in the registry); ITI-39 may instead find the patient of each document in the registry;
//! - every decision and every disclosure is audited before the answer leaves.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use bytes::Bytes;

use super::Gateway;
use super::identity;
use super::reply::{SoapReply, read_request, refuse};
use crate::audit::{AuditEvent, AuditRecord, HolderRecord, Outcome, Side};
use crate::backend::{CallContext, RetrieveStream};
use crate::config::ConsentMode;
use crate::consent::{ConsentOutcome, ConsentRecord, ConsentSource, Decision, MitzError};
use crate::ihe::ebrim::Identifiable;
use crate::ihe::query::{
    AdhocQuery, AdhocQueryRequest, AdhocQueryResponse, ReturnType, StoredQuery, param,
};
use crate::ihe::retrieve::{
    DocumentRequest, RetrieveDocumentSetRequest, RetrieveImagingDocumentSetRequest,
};
use crate::ihe::soap::SoapHeader;
use crate::ihe::transform::uuids;
use crate::ihe::xua::XuaAssertion;
use crate::ihe::{ErrorCode, RegistryError, ResponseStatus, Transaction};
use crate::model::{Bsn, HomeCommunityId, Requester, reference_type};
use crate::server::listener::PeerCertificate;

const APPROVED: &str = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved";

/// Patient-id parameters of patient-based stored queries.
const PATIENT_PARAMS: [&str; 4] = [
    param::DE_PATIENT_ID,
    param::SS_PATIENT_ID,
    "$XDSFolderPatientId",
    "$patientId",
];

/// Reads a peer's request of `tx` and its requester ([`identity::responding_requester`]): the header,
/// the message and the XUA assertion, if any. An unreadable request or a refused caller gets its
/// `Sender` fault, audited.
async fn read_remote<T: crate::ihe::Message>(
    g: &Gateway,
    tx: Transaction,
    peer: Option<&PeerCertificate>,
    content_type: &str,
    body: Bytes,
) -> Result<(SoapHeader, T, Option<XuaAssertion>), SoapReply> {
    let (h, req) = read_request::<T>(g, tx, Side::Responding, peer, content_type, body).await?;
    match identity::responding_requester(g, peer, &h) {
        Ok(a) => Ok((h, req, a)),
        Err(r) => Err(refuse(g, tx, Side::Responding, peer, Some(&h), &r).await),
    }
}

/// The answer when the audit trail cannot be written: nothing is disclosed without its record.
fn audit_unavailable(h: &SoapHeader, e: &str) -> SoapReply {
    // the reason (a file path, an I/O error) is for the hospital's log, not for the peer
    tracing::error!(error = %e, "audit trail unavailable: nothing disclosed");
    SoapReply::fault(
        &crate::ihe::Fault {
            code: crate::ihe::FaultCode::Receiver,
            subcode: None,
            reason: "audit trail unavailable, nothing disclosed".into(),
        },
        Some(h),
    )
}

/// The outbound context for asking the local community on behalf of `requester` about `patient`:
/// a fresh XUA assertion issued by this gateway (the local TLB node requires one; an XDS registry
/// inside the affinity domain does not get it).
pub fn outbound_context(
    g: &Gateway,
    requester: Option<&Requester>,
    patient: Option<&Bsn>,
    audience: &str,
) -> CallContext {
    let mut blocks = Vec::new();
    if let Some(r) = requester {
        let mut a = super::xua::issue(g, r.clone(), audience);
        a.patient = patient.cloned();
        if let Some(b) = super::xua::security_block(g, &a) {
            blocks.push(b);
        }
    }
    CallContext {
        header_blocks: Arc::new(blocks),
        deadline: None,
    }
}

fn holder(g: &Gateway) -> HolderRecord {
    HolderRecord {
        ura: Some(g.config.organization.ura.clone()),
        home_community_id: Some(g.home.clone()),
    }
}

fn failure_outcome(g: &Gateway, why: String) -> ConsentOutcome {
    ConsentOutcome {
        category: g.config.consent.category.clone(),
        decision: Decision::Indeterminate,
        source: ConsentSource::Failure(MitzError::NotAsked(why)),
        detail: None,
    }
}

/// The consent decision for the patient of CX id `cx`: asked for a BSN ([`consent`]); for another id
/// Permit in mode `permitAll` (no consent checked at all), else Indeterminate, counted and audited
/// like any decision, because Mitz only knows BSNs.
async fn consent_for(
    g: &Gateway,
    tx: Transaction,
    h: &SoapHeader,
    cx: &str,
    requester: Option<&Requester>,
) -> ConsentOutcome {
    if let Some(bsn) = bsn_of(cx) {
        return consent(g, tx, h, &bsn, requester).await;
    }
    if g.config.consent.mode != ConsentMode::Mitz {
        return ConsentOutcome {
            category: g.config.consent.category.clone(),
            decision: Decision::Permit,
            source: ConsentSource::PermitAll,
            detail: None,
        };
    }
    let outcome = ConsentOutcome {
        category: g.config.consent.category.clone(),
        decision: Decision::Indeterminate,
        source: ConsentSource::Failure(MitzError::NotAsked(format!(
            "patient id {cx} is not a BSN"
        ))),
        detail: None,
    };
    count_decision(g, &outcome);
    outcome
}

/// Counts a consent decision (`duo_consent_decisions_total`).
fn count_decision(g: &Gateway, outcome: &ConsentOutcome) {
    g.metrics
        .consent_decisions
        .get_or_create(&crate::server::metrics::ConsentLabels {
            decision: outcome.decision.to_string(),
            source: outcome.source.as_str().into(),
        })
        .inc();
}

/// Asks consent for `patient` (the consent service answers `permitAll` itself in that mode), counts the
/// decision and writes its audit record. A failure to write the record turns the decision into a
/// non-disclosing one.
async fn consent(
    g: &Gateway,
    tx: Transaction,
    h: &SoapHeader,
    patient: &Bsn,
    requester: Option<&Requester>,
) -> ConsentOutcome {
    let mut outcome = match (g.config.consent.mode, requester) {
        (_, Some(r)) => g.hooks.consent.check(patient, r).await,
        (ConsentMode::PermitAll, None) => ConsentOutcome {
            category: g.config.consent.category.clone(),
            decision: Decision::Permit,
            source: ConsentSource::PermitAll,
            detail: None,
        },
        (ConsentMode::Mitz, None) => failure_outcome(g, "no requester identity".into()),
    };
    count_decision(g, &outcome);
    let mut rec = AuditRecord::consent_decision(
        tx,
        Side::Responding,
        patient,
        requester,
        holder(g),
        &outcome,
    );
    rec.message_id = h.message_id.clone();
    if let Err(e) = g.hooks.audit(&rec).await {
        outcome = failure_outcome(g, format!("audit trail unavailable: {e}"));
    }
    outcome
}

/// The record of a query or retrieve at the responding side.
fn record(
    g: &Gateway,
    event: AuditEvent,
    tx: Transaction,
    h: &SoapHeader,
    requester: Option<&Requester>,
    patient: Option<&Bsn>,
) -> AuditRecord {
    let mut r = AuditRecord::new(event, tx, Side::Responding);
    r.requester = requester.map(Into::into);
    r.patient = patient.cloned();
    r.data_holder = Some(holder(g));
    r.message_id = h.message_id.clone();
    r
}

fn outcome_of(status: ResponseStatus) -> Outcome {
    match status {
        ResponseStatus::Success => Outcome::Success,
        ResponseStatus::PartialSuccess => Outcome::PartialSuccess,
        ResponseStatus::Failure => Outcome::Failure,
    }
}

/// The BSN of a CX patient id, when it is one.
fn bsn_of(cx: &str) -> Option<Bsn> {
    Bsn::from_cx(cx)
}

fn patient_param(q: &AdhocQuery) -> Option<String> {
    PATIENT_PARAMS
        .iter()
        .find_map(|p| q.single(p).ok().flatten())
}

fn object_patient(o: &Identifiable) -> Option<&str> {
    match o {
        Identifiable::ExtrinsicObject(e) => e.object.external_id(uuids::PATIENT_ID),
        Identifiable::RegistryPackage(p) => p
            .object
            .external_id(uuids::SUBMISSION_SET_PATIENT_ID)
            .or_else(|| {
                p.object
                    .external_id("urn:uuid:f64ffdf0-4b97-4e06-b79f-a52b38ec2f8a")
            }),
        _ => None,
    }
}

fn set_home(objects: &mut [Identifiable], home: &HomeCommunityId) {
    for o in objects {
        match o {
            Identifiable::ExtrinsicObject(e) => e.object.home = Some(home.clone()),
            Identifiable::RegistryPackage(p) => p.object.home = Some(home.clone()),
            Identifiable::ObjectRef(r) => r.home = Some(home.clone()),
            _ => {}
        }
    }
}

fn located(mut errors: Vec<RegistryError>, home: &HomeCommunityId) -> Vec<RegistryError> {
    for e in &mut errors {
        if e.location.is_none() {
            e.location = Some(home.to_string());
        }
    }
    errors
}

fn error_response(code: ErrorCode, context: String, home: &HomeCommunityId) -> AdhocQueryResponse {
    AdhocQueryResponse::new(
        Vec::new(),
        vec![RegistryError::new(code, context).at(home.to_string())],
    )
}

fn document_ids(objects: &[Identifiable]) -> Vec<String> {
    objects
        .iter()
        .filter_map(|o| match o {
            Identifiable::ExtrinsicObject(e) => {
                e.object.external_id(uuids::UNIQUE_ID).map(str::to_owned)
            }
            _ => None,
        })
        .collect()
}

/// ITI-38 Cross Gateway Query, responding side.
pub async fn iti38(
    g: Arc<Gateway>,
    peer: Option<PeerCertificate>,
    content_type: String,
    body: Bytes,
) -> SoapReply {
    let tx = Transaction::Iti38;
    let (h, req, assertion) =
        match read_remote::<AdhocQueryRequest>(&g, tx, peer.as_ref(), &content_type, body).await {
            Ok(x) => x,
            Err(r) => return r,
        };
    let requester = assertion.as_ref().map(|a| &a.requester);
    let resp = match answer_query(&g, &h, requester, req).await {
        Ok(r) => r,
        Err(e) => return audit_unavailable(&h, &e),
    };
    g.metrics.count_request(tx.name(), resp.status.name());
    SoapReply::message(tx, &h, &resp)
}

/// The ITI-38 answer for `req` on behalf of `requester` (see the module rules). Errors only when the
/// audit record of a disclosure could not be written (then nothing may be disclosed).
pub async fn answer_query(
    g: &Gateway,
    h: &SoapHeader,
    requester: Option<&Requester>,
    req: AdhocQueryRequest,
) -> Result<AdhocQueryResponse, String> {
    let tx = Transaction::Iti38;
    let home = &g.home;
    if let Some(qh) = &req.query.home
        && qh != home
    {
        return Ok(error_response(
            ErrorCode::XDSUnknownCommunity,
            format!("this gateway is {home}, not {qh}"),
            home,
        ));
    }
    let query = match req.query.require_stored_query() {
        Ok(q) => q,
        Err(e) => {
            return Ok(AdhocQueryResponse::new(
                Vec::new(),
                located(vec![e.to_registry_error()], home),
            ));
        }
    };
    let patient_cx = patient_param(&req.query);
    if patient_cx.is_none() && req.query.home.is_none() {
        // ITI TF-2b 3.38.4.1.2.1: queries by id must name the community
        return Ok(error_response(
            ErrorCode::XDSMissingHomeCommunityId,
            format!("{} needs AdhocQuery/@home", query.name()),
            home,
        ));
    }
    if let Err(e) = req.query.check_required() {
        return Ok(AdhocQueryResponse::new(
            Vec::new(),
            located(vec![e.to_registry_error()], home),
        ));
    }
    let mitz = g.config.consent.mode == ConsentMode::Mitz;
    let patient = patient_cx.as_deref().and_then(bsn_of);
    // patient-based query: consent first, nothing read without it
    let mut decided: BTreeMap<String, ConsentOutcome> = BTreeMap::new();
    if let Some(cx) = &patient_cx {
        let decision = consent_for(g, tx, h, cx, requester).await;
        if !decision.discloses() {
            // the answer looks like "nothing found": it does not reveal whether data exists
            let mut rec = record(g, AuditEvent::Query, tx, h, requester, patient.as_ref());
            rec.consent = Some(ConsentRecord::from(&decision));
            rec.outcome = Outcome::Denied;
            rec.outcome_detail = Some(decision.reason());
            g.hooks.audit(&rec).await?;
            return Ok(AdhocQueryResponse::new(Vec::new(), Vec::new()));
        }
        decided.insert(cx.clone(), decision);
    }
    let ctx = outbound_context(g, requester, patient.as_ref(), &local_audience(g));
    let mut local_req = req.clone();
    local_req.query.home = local_home(g);
    let mut resp = match g.local.query(ctx, local_req).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "local community query failed");
            let mut rec = record(g, AuditEvent::Query, tx, h, requester, patient.as_ref());
            rec.outcome = Outcome::Failure;
            rec.outcome_detail = Some(e.to_string());
            g.hooks.audit(&rec).await?;
            return Ok(AdhocQueryResponse::new(
                Vec::new(),
                vec![e.to_peer_registry_error(Transaction::Iti18, &home.to_string())],
            ));
        }
    };
    // query by id: the patients are known only now; ask per patient, drop what may not be disclosed
    if patient_cx.is_none() {
        let patients: BTreeSet<String> = resp
            .objects
            .iter()
            .filter_map(object_patient)
            .map(str::to_owned)
            .collect();
        for p in patients {
            let d = consent_for(g, tx, h, &p, requester).await;
            decided.insert(p, d);
        }
        let kept_ids: HashSet<String> = resp
            .objects
            .iter()
            .filter(|o| {
                object_patient(o)
                    .is_some_and(|p| decided.get(p).is_some_and(ConsentOutcome::discloses))
            })
            .filter_map(|o| o.id().map(str::to_owned))
            .collect();
        resp.objects.retain(|o| match o {
            Identifiable::ExtrinsicObject(_) | Identifiable::RegistryPackage(_) => {
                o.id().is_some_and(|id| kept_ids.contains(id))
            }
            Identifiable::Association(a) => {
                kept_ids.contains(&a.source_object) && kept_ids.contains(&a.target_object)
            }
            // a reference or a bare classification names no patient: disclosed only without consent checks
            _ => !mitz,
        });
    }
    set_home(&mut resp.objects, home);
    resp.errors = located(std::mem::take(&mut resp.errors), home);
    resp.status = resp.derive_status();
    // one query record per patient concerned (one in total for a patient-based query)
    if decided.is_empty() {
        let mut rec = record(g, AuditEvent::Query, tx, h, requester, None);
        rec.document_ids = document_ids(&resp.objects);
        rec.outcome = outcome_of(resp.status);
        g.hooks.audit(&rec).await?;
    }
    for (p, d) in &decided {
        let mut rec = record(g, AuditEvent::Query, tx, h, requester, bsn_of(p).as_ref());
        rec.consent = Some(ConsentRecord::from(d));
        if d.discloses() {
            let mine: Vec<Identifiable> = resp
                .objects
                .iter()
                .filter(|o| patient_cx.is_some() || object_patient(o) == Some(p.as_str()))
                .cloned()
                .collect();
            rec.document_ids = document_ids(&mine);
            rec.outcome = outcome_of(resp.status);
            if !rec.document_ids.is_empty() {
                g.metrics.disclosures.inc();
            }
        } else {
            rec.outcome = Outcome::Denied;
            rec.outcome_detail = Some(d.reason());
        }
        g.hooks.audit(&rec).await?;
    }
    Ok(resp)
}

fn local_home(g: &Gateway) -> Option<HomeCommunityId> {
    match &g.config.local {
        crate::config::LocalBackend::Xca(x) => Some(x.home_community_id.clone()),
        _ => None,
    }
}

fn local_audience(g: &Gateway) -> String {
    local_home(g).unwrap_or_else(|| g.home.clone()).to_string()
}

/// Finds, in the local registry, the patient of each document uniqueId (GetDocuments by uniqueId).
async fn patients_of_documents(
    g: &Gateway,
    requester: Option<&Requester>,
    patient: Option<&Bsn>,
    unique_ids: &[String],
) -> Result<BTreeMap<String, String>, RegistryError> {
    let mut q = AdhocQuery::new(StoredQuery::GetDocuments);
    q.add_list(param::DE_UNIQUE_ID, unique_ids);
    q.home = local_home(g);
    let req = AdhocQueryRequest::new(q, ReturnType::LeafClass);
    let ctx = outbound_context(g, requester, patient, &local_audience(g));
    let resp = g
        .local
        .query(ctx, req)
        .await
        .map_err(|e| e.to_peer_registry_error(Transaction::Iti18, &g.home.to_string()))?;
    let mut out = BTreeMap::new();
    for o in &resp.objects {
        if let Identifiable::ExtrinsicObject(e) = o
            && let (Some(uid), Some(pid)) = (
                e.object.external_id(uuids::UNIQUE_ID),
                e.object.external_id(uuids::PATIENT_ID),
            )
        {
            out.insert(uid.to_owned(), pid.to_owned());
        }
    }
    Ok(out)
}

/// Whether the local registry holds a manifest of `study_uid` for `patient` (FindDocumentsByReferenceId).
async fn study_belongs_to(
    g: &Gateway,
    requester: Option<&Requester>,
    patient: &Bsn,
    study_uid: &str,
) -> Result<bool, RegistryError> {
    let mut q = AdhocQuery::new(StoredQuery::FindDocumentsByReferenceId);
    q.set_single(param::DE_PATIENT_ID, &patient.to_cx());
    q.add_list(param::DE_STATUS, &[APPROVED]);
    q.add_list(
        param::DE_REFERENCE_ID_LIST,
        &[format!(
            "{study_uid}^^^^{}",
            reference_type::STUDY_INSTANCE_UID
        )],
    );
    q.home = local_home(g);
    let req = AdhocQueryRequest::new(q, ReturnType::ObjectRef);
    let ctx = outbound_context(g, requester, Some(patient), &local_audience(g));
    let resp = g
        .local
        .query(ctx, req)
        .await
        .map_err(|e| e.to_peer_registry_error(Transaction::Iti18, &g.home.to_string()))?;
    Ok(!resp.objects.is_empty())
}

/// Checks the HomeCommunityId of each DocumentRequest: ours → kept; missing or another → an error.
fn route_home(
    g: &Gateway,
    docs: Vec<(String, String, DocumentRequest)>,
    errors: &mut Vec<RegistryError>,
) -> Vec<(String, String, DocumentRequest)> {
    let mut kept = Vec::new();
    for (st, se, d) in docs {
        match &d.home_community_id {
            None => errors.push(
                RegistryError::new(
                    ErrorCode::XDSMissingHomeCommunityId,
                    format!(
                        "DocumentRequest for {} has no HomeCommunityId",
                        d.document_unique_id
                    ),
                )
                .at(d.document_unique_id.clone()),
            ),
            Some(h) if h != &g.home => errors.push(
                RegistryError::new(
                    ErrorCode::XDSUnknownCommunity,
                    format!("this gateway is {}, not {h}", g.home),
                )
                .at(h.to_string()),
            ),
            Some(_) => kept.push((st, se, d)),
        }
    }
    kept
}

fn not_found(d: &DocumentRequest) -> RegistryError {
    RegistryError::new(
        ErrorCode::XDSDocumentUniqueIdError,
        format!("document {} not found", d.document_unique_id),
    )
    .at(d.document_unique_id.clone())
}

fn stamp_home(mut s: RetrieveStream, home: &HomeCommunityId) -> RetrieveStream {
    for d in &mut s.documents {
        d.home_community_id = Some(home.clone());
    }
    s.response.errors = located(std::mem::take(&mut s.response.errors), home);
    s
}

/// ITI-39 Cross Gateway Retrieve, responding side.
pub async fn iti39(
    g: Arc<Gateway>,
    peer: Option<PeerCertificate>,
    content_type: String,
    body: Bytes,
) -> SoapReply {
    let tx = Transaction::Iti39;
    let (h, req, assertion) =
        match read_remote::<RetrieveDocumentSetRequest>(&g, tx, peer.as_ref(), &content_type, body)
            .await
        {
            Ok(x) => x,
            Err(r) => return r,
        };
    let requester = assertion.as_ref().map(|a| a.requester.clone());
    let claimed = assertion.as_ref().and_then(|a| a.patient.clone());
    let mut errors = Vec::new();
    let docs = route_home(
        &g,
        req.documents
            .into_iter()
            .map(|d| (String::new(), String::new(), d))
            .collect(),
        &mut errors,
    );
    let mut allowed = Vec::new();
    // (patient CX, decision, documents asked for that patient)
    let mut decisions: Vec<(String, ConsentOutcome, Vec<DocumentRequest>)> = Vec::new();
    if g.config.consent.mode == ConsentMode::Mitz && !docs.is_empty() {
        let uids: Vec<String> = docs
            .iter()
            .map(|(_, _, d)| d.document_unique_id.clone())
            .collect();
        match patients_of_documents(&g, requester.as_ref(), claimed.as_ref(), &uids).await {
            Err(e) => errors.push(e),
            Ok(owner) => {
                let mut by_patient: BTreeMap<String, Vec<DocumentRequest>> = BTreeMap::new();
                for (_, _, d) in docs {
                    match owner.get(&d.document_unique_id) {
                        // documents of another patient than the assertion names are not disclosed
                        Some(p)
                            if claimed
                                .as_ref()
                                .is_none_or(|c| Bsn::from_cx(p).as_ref() == Some(c)) =>
                        {
                            by_patient.entry(p.clone()).or_default().push(d)
                        }
                        _ => errors.push(not_found(&d)),
                    }
                }
                for (p, ds) in by_patient {
                    let d = consent_for(&g, tx, &h, &p, requester.as_ref()).await;
                    if d.discloses() {
                        allowed.extend(ds.iter().cloned());
                    } else {
                        errors.extend(ds.iter().map(not_found));
                    }
                    decisions.push((p, d, ds));
                }
            }
        }
    } else {
        allowed = docs.into_iter().map(|(_, _, d)| d).collect();
    }
    let stream = if allowed.is_empty() {
        RetrieveStream::errors(Vec::new())
    } else {
        let ctx = outbound_context(
            &g,
            requester.as_ref(),
            claimed.as_ref(),
            &local_audience(&g),
        );
        let mut sub = RetrieveDocumentSetRequest { documents: allowed };
        if let Some(lh) = local_home(&g) {
            for d in &mut sub.documents {
                d.home_community_id = Some(lh.clone());
            }
        }
        match g.local.retrieve(ctx, sub).await {
            Ok(s) => s,
            Err(e) => RetrieveStream::errors(vec![
                e.to_peer_registry_error(Transaction::Iti43, &g.home.to_string()),
            ]),
        }
    };
    let combined = stamp_home(RetrieveStream::combine(vec![stream], errors), &g.home);
    let delivered: Vec<String> = combined
        .documents
        .iter()
        .map(|d| d.document_unique_id.clone())
        .collect();
    let status = combined.response.status;
    let mut records = Vec::new();
    if decisions.is_empty() {
        let mut rec = record(
            &g,
            AuditEvent::Retrieve,
            tx,
            &h,
            requester.as_ref(),
            claimed.as_ref(),
        );
        rec.document_ids = delivered.clone();
        rec.outcome = outcome_of(status);
        records.push(rec);
    }
    for (p, d, ds) in &decisions {
        let mut rec = record(
            &g,
            AuditEvent::Retrieve,
            tx,
            &h,
            requester.as_ref(),
            Bsn::from_cx(p).as_ref(),
        );
        rec.consent = Some(ConsentRecord::from(d));
        if d.discloses() {
            rec.document_ids = ds
                .iter()
                .map(|x| x.document_unique_id.clone())
                .filter(|u| delivered.contains(u))
                .collect();
            rec.outcome = outcome_of(status);
        } else {
            rec.outcome = Outcome::Denied;
            rec.outcome_detail = Some(d.reason());
        }
        records.push(rec);
    }
    for rec in &records {
        if let Err(e) = g.hooks.audit(rec).await {
            return audit_unavailable(&h, &e);
        }
    }
    if !delivered.is_empty() {
        g.metrics.disclosures.inc();
    }
    g.metrics.count_request(tx.name(), status.name());
    SoapReply::retrieve(tx, &h, combined)
}

/// RAD-75 Cross Gateway Retrieve Imaging Document Set, responding side.
pub async fn rad75(
    g: Arc<Gateway>,
    peer: Option<PeerCertificate>,
    content_type: String,
    body: Bytes,
) -> SoapReply {
    let tx = Transaction::Rad75;
    let (h, req, assertion) = match read_remote::<RetrieveImagingDocumentSetRequest>(
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
    let requester = assertion.as_ref().map(|a| a.requester.clone());
    let claimed = assertion.as_ref().and_then(|a| a.patient.clone());
    let mut rec = record(
        &g,
        AuditEvent::Retrieve,
        tx,
        &h,
        requester.as_ref(),
        claimed.as_ref(),
    );
    rec.study_ids = req
        .studies
        .iter()
        .map(|s| s.study_instance_uid.clone())
        .collect();
    // request-level checks the schema cannot make (empty UIDs, transfer syntaxes)
    let mut errors: Vec<RegistryError> = req
        .validate(false)
        .into_iter()
        .filter(|e| e.error_code != ErrorCode::XDSMissingHomeCommunityId)
        .collect();
    if req.transfer_syntaxes.iter().all(|t| t.trim().is_empty()) && errors.is_empty() {
        errors.push(RegistryError::new(
            ErrorCode::XDSRepositoryError,
            "TransferSyntaxUIDList names no transfer syntax",
        ));
    }
    if !errors.is_empty() {
        rec.outcome = Outcome::Failure;
        if let Err(e) = g.hooks.audit(&rec).await {
            return audit_unavailable(&h, &e);
        }
        return SoapReply::retrieve(tx, &h, stamp_home(RetrieveStream::errors(errors), &g.home));
    }
    let docs: Vec<(String, String, DocumentRequest)> = req
        .documents()
        .map(|(st, se, d)| (st.to_owned(), se.to_owned(), d.clone()))
        .collect();
    let docs = route_home(&g, docs, &mut errors);
    let mut decision = None;
    let allowed: Vec<(String, String, DocumentRequest)> =
        if g.config.consent.mode == ConsentMode::Mitz && !docs.is_empty() {
            match &claimed {
                None => {
                    // without a patient Mitz cannot be asked: fail closed, reveal nothing
                    decision = Some(failure_outcome(
                        &g,
                        "the XUA assertion names no patient (resource-id)".into(),
                    ));
                    errors.extend(docs.iter().map(|(_, _, d)| not_found(d)));
                    Vec::new()
                }
                Some(patient) => {
                    let d = consent(&g, tx, &h, patient, requester.as_ref()).await;
                    let mut ok = Vec::new();
                    if d.discloses() {
                        let studies: BTreeSet<&str> =
                            docs.iter().map(|(st, _, _)| st.as_str()).collect();
                        let mut belongs = BTreeMap::new();
                        for st in studies {
                            let b =
                                match study_belongs_to(&g, requester.as_ref(), patient, st).await {
                                    Ok(b) => b,
                                    Err(e) => {
                                        errors.push(e);
                                        false
                                    }
                                };
                            belongs.insert(st.to_owned(), b);
                        }
                        for item in docs {
                            if belongs.get(&item.0).copied().unwrap_or(false) {
                                ok.push(item);
                            } else {
                                errors.push(not_found(&item.2));
                            }
                        }
                    } else {
                        errors.extend(docs.iter().map(|(_, _, x)| not_found(x)));
                    }
                    decision = Some(d);
                    ok
                }
            }
        } else {
            docs
        };
    let stream = if allowed.is_empty() {
        RetrieveStream::errors(Vec::new())
    } else {
        let mut sub = RetrieveImagingDocumentSetRequest {
            studies: Vec::new(),
            transfer_syntaxes: req.transfer_syntaxes.clone(),
        };
        let lh = local_home(&g);
        for (st, se, mut d) in allowed {
            d.home_community_id = lh.clone();
            push_document(&mut sub, &st, &se, d);
        }
        let ctx = outbound_context(
            &g,
            requester.as_ref(),
            claimed.as_ref(),
            &local_audience(&g),
        );
        match g.local.retrieve_images(ctx, sub).await {
            Ok(s) => s,
            Err(e) => RetrieveStream::errors(vec![
                e.to_peer_registry_error(Transaction::Rad69, &g.home.to_string()),
            ]),
        }
    };
    let combined = stamp_home(RetrieveStream::combine(vec![stream], errors), &g.home);
    rec.document_ids = combined
        .documents
        .iter()
        .map(|d| d.document_unique_id.clone())
        .collect();
    rec.consent = decision.as_ref().map(ConsentRecord::from);
    rec.outcome = match &decision {
        Some(d) if !d.discloses() => {
            rec.outcome_detail = Some(d.reason());
            Outcome::Denied
        }
        _ => outcome_of(combined.response.status),
    };
    if let Err(e) = g.hooks.audit(&rec).await {
        return audit_unavailable(&h, &e);
    }
    if !rec.document_ids.is_empty() {
        g.metrics.disclosures.inc();
    }
    g.metrics
        .count_request(tx.name(), combined.response.status.name());
    SoapReply::retrieve(tx, &h, combined)
}

/// Adds a DocumentRequest under its study and series.
pub fn push_document(
    req: &mut RetrieveImagingDocumentSetRequest,
    study: &str,
    series: &str,
    d: DocumentRequest,
) {
    use crate::ihe::retrieve::{SeriesRequest, StudyRequest};
    let sti = match req
        .studies
        .iter()
        .position(|s| s.study_instance_uid == study)
    {
        Some(i) => i,
        None => {
            req.studies.push(StudyRequest {
                study_instance_uid: study.to_owned(),
                series: Vec::new(),
            });
            req.studies.len() - 1
        }
    };
    let st = &mut req.studies[sti];
    let sei = match st
        .series
        .iter()
        .position(|s| s.series_instance_uid == series)
    {
        Some(i) => i,
        None => {
            st.series.push(SeriesRequest {
                series_instance_uid: series.to_owned(),
                documents: Vec::new(),
            });
            st.series.len() - 1
        }
    };
    st.series[sei].documents.push(d);
}
