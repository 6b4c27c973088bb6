//! The responding side: XCA Responding Gateway (ITI-38, ITI-39) and XCA-I Responding Imaging Gateway
//! (RAD-75), answered from the hospital's own community after the consent check.
//!
//! Rules applied here (ITI TF-2b 3.38.4.1.3, 3.39.4.1.3; RAD TF-3 4.75.4.1.3; docs/DOMAIN.md):
//! - `home` is set on every ExtrinsicObject, RegistryPackage and ObjectRef returned, and HomeCommunityId
//!   on every DocumentResponse;
//! - the request's own rules are checked first, by its validator ([`super::validate`]: [`validate::iti38`],
//!   [`validate::iti39`], [`validate::rad75`]): a request naming another community gets
//!   XDSUnknownCommunity; a query by id (GetDocuments ...) or a retrieve without homeCommunityId gets
//!   XDSMissingHomeCommunityId; the handlers here keep what needs the registry or consent;
//! - `$targetCommunityIdList` (IHE CP-ITI-1301 Target Communities, the Twiin consultation text;
//!   [`validate::TargetCommunities`]): absent, as before; empty or malformed, refused by the validator;
//!   ids that are not this gateway's are named in XDSUnknownCommunity warnings and the answer is
//!   PartialSuccess; without this gateway's own id in the list nothing is looked up or disclosed; the
//!   list is never passed on to the local registry;
//! - consent: the patient's consent for this requester is asked before anything of the patient is
//!   disclosed, and only a Permit lets data out; otherwise the answer looks exactly like "nothing
//!   found", so it does not reveal whether data exists;
//! - **the disclosure gate** ([`super::disclosure`]): everything that leaves belongs to the one patient
//!   this request obtained a Permit for, judged from the hospital's registry (and, for RAD-75, its KOS
//!   manifests), never from the request; a request that names or reaches more than one patient is
//!   answered for none. ITI-38 asks the local registry for full metadata (LeafClass) whatever the
//!   requester asked, so that every object's patient is known, and answers ObjectRefs from it when asked;
//!   ITI-39 finds each document's patient and repository in the registry; RAD-75 takes its patient from
//!   the XUA assertion's resource-id (IHE XUA Patient ID option) and lets an instance out only when the
//!   patient's KOS manifest of the requested study lists it under the requested series, whatever the
//!   imaging document source would deliver;
//! - every decision is audited, and every answer has exactly one query or retrieve record naming what
//!   left (its patient, the requester with the purpose of use, documents, objects, studies), written
//!   before the answer leaves.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;

use super::Gateway;
use super::disclosure::{self, Gate, PatientKey, Permit};
use super::hooks::AuditUnavailable;
use super::identity;
use super::reply::{SoapReply, read_request, refuse};
use super::validate;
use crate::audit::{AuditEvent, AuditRecord, HolderRecord, Outcome, Side};
use crate::backend::{CallContext, RetrieveStream};
use crate::config::ConsentMode;
use crate::consent::{ConsentOutcome, ConsentRecord, ConsentSource, Decision, MitzError};
use crate::gateway::identity::PeerCertificate;
use crate::ihe::ebrim::Identifiable;
use crate::ihe::mtom::RetrieveItem;
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
use crate::model::{Bsn, DocumentKind, HomeCommunityId, Requester, reference_type};

const APPROVED: &str = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved";

/// Why a request was answered for none (audit `outcomeDetail`).
const SEVERAL_PATIENTS: &str =
    "the request names or reaches more than one patient: answered for none";

/// Largest KOS manifest read to check a RAD-75 request, bytes (a manifest of a study of 10,000 instances
/// is well under 2 MiB).
const MAX_KOS_BYTES: usize = 16 * 1024 * 1024;

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
fn audit_unavailable(h: &SoapHeader, e: &AuditUnavailable) -> SoapReply {
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
        .get_or_create(&crate::gateway::metrics::ConsentLabels {
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
    rec.message_id = h.message_id.as_deref().map(crate::ihe::soap::echoed);
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
    r.message_id = h.message_id.as_deref().map(crate::ihe::soap::echoed);
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

fn located(mut errors: Vec<RegistryError>, home: &HomeCommunityId) -> Vec<RegistryError> {
    for e in &mut errors {
        if e.location.is_none() {
            e.location = Some(home.to_string());
        }
    }
    errors
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
    let resp = match answer_query(&g, &h, assertion.as_ref(), req).await {
        Ok(r) => r,
        Err(e) => return audit_unavailable(&h, &e),
    };
    g.metrics.count_request(tx.name(), resp.status.name());
    SoapReply::message(tx, &h, &resp)
}

/// The query record of an ITI-38 answer that disclosed nothing for lack of consent (or answered a
/// request about several patients for none): outcome `denied`, the reason.
async fn denied_query(
    g: &Gateway,
    h: &SoapHeader,
    requester: Option<&Requester>,
    patient: Option<&PatientKey>,
    consent: Option<&ConsentOutcome>,
    why: String,
) -> Result<AdhocQueryResponse, AuditUnavailable> {
    let mut rec = record(
        g,
        AuditEvent::Query,
        Transaction::Iti38,
        h,
        requester,
        patient.and_then(PatientKey::bsn).as_ref(),
    );
    rec.consent = consent.map(ConsentRecord::from);
    rec.outcome = Outcome::Denied;
    rec.outcome_detail = Some(why);
    g.hooks.audit(&rec).await?;
    // the answer looks like "nothing found": it does not reveal whether data exists
    Ok(AdhocQueryResponse::new(Vec::new(), Vec::new()))
}

/// The ITI-38 answer for `req` on behalf of the requester of `assertion` (see the module rules and
/// [`disclosure`]). Errors only when the audit record of the answer could not be written (then nothing
/// may be disclosed).
pub async fn answer_query(
    g: &Gateway,
    h: &SoapHeader,
    assertion: Option<&XuaAssertion>,
    req: AdhocQueryRequest,
) -> Result<AdhocQueryResponse, AuditUnavailable> {
    let tx = Transaction::Iti38;
    let home = &g.home;
    let requester = assertion.map(|a| &a.requester);
    // a request refused before anything is read still leaves its (one) query record
    let refused = |resp: AdhocQueryResponse| async move {
        let mut rec = record(g, AuditEvent::Query, tx, h, requester, None);
        rec.outcome = Outcome::Failure;
        rec.outcome_detail = resp
            .errors
            .first()
            .map(|e| format!("{}: {}", e.error_code.as_str(), e.code_context));
        g.hooks.audit(&rec).await.map(|()| resp)
    };
    // the request's own rules (validate::iti38): refused before anything is read
    let (req, named, targets) = match validate::iti38(req, home) {
        Ok(v) => (v.request, v.named, v.targets),
        Err(rule) => {
            return refused(AdhocQueryResponse::new(
                Vec::new(),
                vec![rule.to_registry_error(home)],
            ))
            .await;
        }
    };
    // $targetCommunityIdList (Target Communities, docs/DOMAIN.md): ids this gateway does not answer
    // for are named in warnings and make the answer PartialSuccess; without our own id in the list
    // nothing is looked up or disclosed
    let warnings = validate::unknown_community_warnings(targets.unknown(), home);
    if !targets.answers() {
        let mut rec = record(g, AuditEvent::Query, tx, h, requester, None);
        rec.outcome = Outcome::PartialSuccess;
        rec.outcome_detail = Some(format!(
            "$targetCommunityIdList names {} communities, none of them this one ({home}); nothing looked up",
            warnings.len()
        ));
        g.hooks.audit(&rec).await?;
        let mut resp = AdhocQueryResponse::new(Vec::new(), warnings);
        resp.status = ResponseStatus::PartialSuccess;
        return Ok(resp);
    }
    let mut resp = answer_named(g, h, assertion, req, named).await?;
    if !warnings.is_empty() {
        resp.errors.extend(warnings);
        if resp.status == ResponseStatus::Success {
            resp.status = ResponseStatus::PartialSuccess;
        }
    }
    Ok(resp)
}

/// [`answer_query`] for a request that passed [`validate::iti38`] and is answered by this gateway
/// (`named`: the patients its parameters name).
async fn answer_named(
    g: &Gateway,
    h: &SoapHeader,
    assertion: Option<&XuaAssertion>,
    req: AdhocQueryRequest,
    mut named: BTreeSet<PatientKey>,
) -> Result<AdhocQueryResponse, AuditUnavailable> {
    let tx = Transaction::Iti38;
    let home = &g.home;
    let requester = assertion.map(|a| &a.requester);
    let checked = g.config.consent.mode == ConsentMode::Mitz;
    // the assertion's resource-id names a patient too
    if let Some(p) = assertion.and_then(|a| a.patient.as_ref()) {
        named.insert(PatientKey::from_bsn(p));
    }
    if checked && named.len() > 1 {
        return denied_query(g, h, requester, None, None, SEVERAL_PATIENTS.into()).await;
    }
    // a named patient: consent first, nothing read without it
    let mut consented: Option<ConsentOutcome> = None;
    if let Some(p) = named.first() {
        let d = consent_for(g, tx, h, p.cx(), requester).await;
        if !d.discloses() {
            let why = d.reason();
            return denied_query(g, h, requester, Some(p), Some(&d), why).await;
        }
        consented = Some(d);
    }
    let ctx = outbound_context(
        g,
        requester,
        named.first().and_then(PatientKey::bsn).as_ref(),
        &local_audience(g),
    );
    let mut local_req = req.clone();
    local_req.query.home = local_home(g);
    // the list was for this gateway; the local registry (or TLB node) is asked as before
    local_req.query.set_target_communities(&[]);
    if checked {
        // every object's patient must be known: full metadata from the registry, ObjectRefs made here
        local_req.response_option.return_type = ReturnType::LeafClass;
    }
    let mut resp = match g.local.query(ctx.clone(), local_req).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "local community query failed");
            let mut rec = record(
                g,
                AuditEvent::Query,
                tx,
                h,
                requester,
                named.first().and_then(PatientKey::bsn).as_ref(),
            );
            rec.outcome = Outcome::Failure;
            rec.outcome_detail = Some(e.to_string());
            g.hooks.audit(&rec).await?;
            return Ok(AdhocQueryResponse::new(
                Vec::new(),
                vec![e.to_peer_registry_error(Transaction::Iti18, &home.to_string())],
            ));
        }
    };
    let objects = std::mem::take(&mut resp.objects);
    let (gate, owners) = if checked {
        // whose is what, from the registry's own metadata
        let owners = disclosure::owners(g, ctx, &objects).await;
        let all: BTreeSet<PatientKey> = named.union(&owners.reached).cloned().collect();
        if all.len() > 1 {
            // the Permit of the named patient has its own record; this answer disclosed nothing
            return denied_query(g, h, requester, None, None, SEVERAL_PATIENTS.into()).await;
        }
        let gate = match (all.first(), consented.take()) {
            // nothing of anyone was found
            (None, _) => None,
            (Some(p), Some(d)) => Permit::new(p.clone(), d).map(Gate::Checked),
            // a query by id: its patient is known only now
            (Some(p), None) => {
                let d = consent_for(g, tx, h, p.cx(), requester).await;
                if !d.discloses() {
                    let why = d.reason();
                    return denied_query(g, h, requester, Some(p), Some(&d), why).await;
                }
                Permit::new(p.clone(), d).map(Gate::Checked)
            }
        };
        (gate, owners)
    } else {
        (Some(Gate::Unchecked), disclosure::Owners::default())
    };
    let (released, withheld) = match &gate {
        Some(gate) => disclosure::release_objects(
            gate,
            objects,
            &owners,
            req.response_option.return_type,
            home,
        ),
        None => (Vec::new(), objects.len()),
    };
    if withheld > 0 {
        tracing::warn!(
            withheld,
            "objects of the local answer withheld by the disclosure gate"
        );
    }
    resp.objects = released;
    // a count of what the registry found would tell about what was withheld
    resp.total_result_count = None;
    resp.errors = located(std::mem::take(&mut resp.errors), home);
    resp.status = resp.derive_status();
    // exactly one query record, naming what left
    let (patient, consent) = match &gate {
        Some(Gate::Checked(p)) => (p.patient().bsn(), Some(p.consent())),
        _ => (named.first().and_then(PatientKey::bsn), None),
    };
    let mut rec = record(g, AuditEvent::Query, tx, h, requester, patient.as_ref());
    rec.consent = consent.map(ConsentRecord::from);
    rec.document_ids = resp
        .objects
        .iter()
        .filter_map(|o| match o {
            Identifiable::ExtrinsicObject(e) => {
                e.object.external_id(uuids::UNIQUE_ID).map(str::to_owned)
            }
            _ => None,
        })
        .collect();
    rec.object_ids = resp
        .objects
        .iter()
        .filter_map(|o| o.id().map(str::to_owned))
        .collect();
    rec.outcome = outcome_of(resp.status);
    g.hooks.audit(&rec).await?;
    if !rec.object_ids.is_empty() {
        g.metrics.disclosures.inc();
    }
    Ok(resp)
}

/// The homeCommunityId of the local community when it is reached over XCA (a TLB node), else `None`.
pub(crate) fn local_home(g: &Gateway) -> Option<HomeCommunityId> {
    match &g.config.local {
        crate::config::LocalBackend::Xca(x) => Some(x.home_community_id.clone()),
        _ => None,
    }
}

fn local_audience(g: &Gateway) -> String {
    local_home(g).unwrap_or_else(|| g.home.clone()).to_string()
}

/// A document as the local registry holds it: its patient and repository.
struct Registered {
    patient: Option<PatientKey>,
    repository: Option<String>,
}

/// Finds, in the local registry, every entry of the document uniqueIds (GetDocuments by uniqueId): per
/// uniqueId the entries found (several when the registry holds several versions, or lies).
async fn registered_documents(
    g: &Gateway,
    requester: Option<&Requester>,
    patient: Option<&Bsn>,
    unique_ids: &[String],
) -> Result<BTreeMap<String, Vec<Registered>>, RegistryError> {
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
    let asked: BTreeSet<&str> = unique_ids.iter().map(|u| u.trim()).collect();
    let mut out: BTreeMap<String, Vec<Registered>> = BTreeMap::new();
    for o in &resp.objects {
        if let Identifiable::ExtrinsicObject(e) = o
            && let Some(uid) = e.object.external_id(uuids::UNIQUE_ID)
            && asked.contains(uid.trim())
        {
            let patients: Vec<&str> = e
                .object
                .external_identifiers
                .iter()
                .filter(|x| x.identification_scheme == uuids::PATIENT_ID)
                .map(|x| x.value.as_str())
                .collect();
            // an entry stating no patient or two is nobody's (never disclosed)
            let patient = match patients.as_slice() {
                [p] => PatientKey::from_cx(p),
                _ => None,
            };
            out.entry(uid.trim().to_owned())
                .or_default()
                .push(Registered {
                    patient,
                    repository: e
                        .object
                        .slot_value(crate::ihe::transform::slot::REPOSITORY_UNIQUE_ID)
                        .map(|r| r.trim().to_owned()),
                });
        }
    }
    Ok(out)
}

/// The series and instances (Series Instance UID, SOP Instance UID) that the local registry's KOS
/// manifests of `patient`'s study `study_uid` list for that study (FindDocumentsByReferenceId, then a
/// Retrieve Document Set of each manifest). Empty when the study is not the patient's. A manifest
/// that cannot be retrieved or read contributes nothing (its instances are not disclosed); the error
/// is logged.
async fn study_contents(
    g: &Gateway,
    requester: Option<&Requester>,
    patient: &Bsn,
    study_uid: &str,
) -> Result<BTreeSet<(String, String)>, RegistryError> {
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
    let req = AdhocQueryRequest::new(q, ReturnType::LeafClass);
    let ctx = outbound_context(g, requester, Some(patient), &local_audience(g));
    let resp = g
        .local
        .query(ctx.clone(), req)
        .await
        .map_err(|e| e.to_peer_registry_error(Transaction::Iti18, &g.home.to_string()))?;
    let me = PatientKey::from_bsn(patient);
    let mut out = BTreeSet::new();
    for o in &resp.objects {
        let Identifiable::ExtrinsicObject(eo) = o else {
            continue;
        };
        let Ok(entry) = crate::ihe::transform::document_entry_from_wire(eo) else {
            continue;
        };
        // the registry's word, checked again: this patient's manifest of this study
        if entry.kind() != DocumentKind::ImagingManifest
            || PatientKey::from_cx(&entry.patient_id).as_ref() != Some(&me)
            || !entry.reference_ids.iter().any(|r| {
                r.id_type == reference_type::STUDY_INSTANCE_UID && r.id.trim() == study_uid.trim()
            })
        {
            continue;
        }
        let doc = DocumentRequest {
            home_community_id: local_home(g),
            repository_unique_id: entry.repository_unique_id.clone(),
            document_unique_id: entry.unique_id.clone(),
        };
        match read_manifest(g, ctx.clone(), doc).await {
            Ok(bytes) => match crate::dicom::parse_kos(&bytes) {
                Ok(m) => {
                    for st in m
                        .studies
                        .iter()
                        .filter(|s| s.study_instance_uid.trim() == study_uid.trim())
                    {
                        for se in &st.series {
                            for i in &se.instances {
                                out.insert((
                                    se.series_instance_uid.trim().to_owned(),
                                    i.sop_instance_uid.trim().to_owned(),
                                ));
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a KOS manifest of the local registry cannot be read: its instances are not disclosed")
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "a KOS manifest of the local registry cannot be retrieved: its instances are not disclosed")
            }
        }
    }
    Ok(out)
}

/// The bytes of one KOS manifest from the local repository (at most [`MAX_KOS_BYTES`]).
async fn read_manifest(
    g: &Gateway,
    ctx: CallContext,
    doc: DocumentRequest,
) -> Result<Vec<u8>, String> {
    let uid = doc.document_unique_id.clone();
    let s = g
        .local
        .retrieve(
            ctx,
            RetrieveDocumentSetRequest {
                documents: vec![doc],
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    let Some(index) = s.documents.iter().position(|d| d.document_unique_id == uid) else {
        return Err(format!("manifest {uid} not delivered"));
    };
    let mut items = s.items;
    let mut current = None;
    let mut bytes = Vec::new();
    while let Some(it) = items.next().await {
        match it.map_err(|e| e.to_string())? {
            RetrieveItem::Document(i) => current = Some(i),
            RetrieveItem::Chunk(c) if current == Some(index) => {
                if bytes.len() + c.len() > MAX_KOS_BYTES {
                    return Err(format!("manifest {uid} larger than {MAX_KOS_BYTES} bytes"));
                }
                bytes.extend_from_slice(&c);
            }
            RetrieveItem::End if current == Some(index) => return Ok(bytes),
            _ => {}
        }
    }
    Err(format!("manifest {uid} incomplete"))
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
    // the request's own rules (validate::iti39): a document not of this community is refused
    let screened = validate::iti39(req, &g.home);
    let mut errors = validate::registry_errors(&screened.refused);
    let docs = screened.accepted;
    let mut rec = record(
        &g,
        AuditEvent::Retrieve,
        tx,
        &h,
        requester.as_ref(),
        claimed.as_ref(),
    );
    // (gate, documents sent to the local community)
    let (gate, allowed): (Option<Gate>, Vec<DocumentRequest>) =
        if g.config.consent.mode != ConsentMode::Mitz {
            (Some(Gate::Unchecked), docs)
        } else if docs.is_empty() {
            (None, Vec::new())
        } else {
            // The assertion's patient is asked about before the registry is: the time of the answer
            // then does not depend on whose the requested documents are (asking only when the registry
            // tied them to that patient would let a requester probe ownership by timing).
            let early = match &claimed {
                Some(p) => {
                    let d = consent(&g, tx, &h, p, requester.as_ref()).await;
                    if d.discloses() {
                        Some(Ok(d))
                    } else {
                        Some(Err(d))
                    }
                }
                None => None,
            };
            let uids: Vec<String> = docs.iter().map(|d| d.document_unique_id.clone()).collect();
            let found = match &early {
                Some(Err(d)) => {
                    rec.consent = Some(ConsentRecord::from(d));
                    rec.outcome_detail = Some(d.reason());
                    Err(None)
                }
                _ => registered_documents(&g, requester.as_ref(), claimed.as_ref(), &uids)
                    .await
                    .map_err(Some),
            };
            let early = early.and_then(Result::ok);
            match found {
                Err(None) => {
                    errors.extend(docs.iter().map(not_found));
                    (None, Vec::new())
                }
                Err(Some(e)) => {
                    errors.push(e);
                    (None, Vec::new())
                }
                Ok(found) => {
                    // the patients the request names (assertion) and reaches (registry)
                    let mut all: BTreeSet<PatientKey> =
                        claimed.iter().map(PatientKey::from_bsn).collect();
                    let mut nobody = false;
                    for d in &docs {
                        for r in found.get(d.document_unique_id.trim()).into_iter().flatten() {
                            match &r.patient {
                                Some(p) => {
                                    all.insert(p.clone());
                                }
                                None => nobody = true,
                            }
                        }
                    }
                    let reached = docs
                        .iter()
                        .any(|d| found.contains_key(d.document_unique_id.trim()));
                    if all.len() > 1 || nobody {
                        rec.outcome_detail = Some(SEVERAL_PATIENTS.into());
                        errors.extend(docs.iter().map(not_found));
                        (None, Vec::new())
                    } else if !reached {
                        // nothing of anyone: unknown documents
                        errors.extend(docs.iter().map(not_found));
                        (None, Vec::new())
                    } else {
                        let p = all
                            .first()
                            .cloned()
                            .unwrap_or_else(|| unreachable!("reached"));
                        rec.patient = p.bsn();
                        // the assertion's patient was asked about already (and is the only one)
                        let d = match early {
                            Some(d) => d,
                            None => consent_for(&g, tx, &h, p.cx(), requester.as_ref()).await,
                        };
                        rec.consent = Some(ConsentRecord::from(&d));
                        match Permit::new(p.clone(), d.clone()) {
                            None => {
                                rec.outcome_detail = Some(d.reason());
                                errors.extend(docs.iter().map(not_found));
                                (None, Vec::new())
                            }
                            Some(permit) => {
                                let mut ok = Vec::new();
                                for d in docs {
                                    // the registry's repository, not the request's
                                    let same_repo = found
                                        .get(d.document_unique_id.trim())
                                        .into_iter()
                                        .flatten()
                                        .any(|r| {
                                            // an entry naming no repository matches none
                                            r.repository
                                                .as_deref()
                                                .is_some_and(|x| x == d.repository_unique_id.trim())
                                        });
                                    if same_repo {
                                        ok.push(d);
                                    } else {
                                        errors.push(not_found(&d));
                                    }
                                }
                                (Some(Gate::Checked(permit)), ok)
                            }
                        }
                    }
                }
            }
        };
    let allowed_ids: BTreeSet<String> = allowed
        .iter()
        .map(|d| d.document_unique_id.trim().to_owned())
        .collect();
    let stream = match &gate {
        Some(_) if !allowed.is_empty() => {
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
        }
        _ => RetrieveStream::errors(Vec::new()),
    };
    let stream = match &gate {
        Some(gate) => disclosure::release_stream(gate, stream, &allowed_ids).0,
        None => RetrieveStream::errors(Vec::new()),
    };
    let combined = stamp_home(RetrieveStream::combine(vec![stream], errors), &g.home);
    let status = combined.response.status;
    rec.document_ids = combined
        .documents
        .iter()
        .map(|d| d.document_unique_id.clone())
        .collect();
    rec.outcome = match (&gate, &rec.outcome_detail) {
        (None, Some(_)) => Outcome::Denied,
        _ => outcome_of(status),
    };
    if let Err(e) = g.hooks.audit(&rec).await {
        return audit_unavailable(&h, &e);
    }
    if !rec.document_ids.is_empty() {
        g.metrics.disclosures.inc();
    }
    g.metrics.count_request(tx.name(), status.name());
    SoapReply::retrieve(tx, &h, combined)
}

pub use super::validate::MAX_STUDIES_PER_RETRIEVE;

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
    // the request's own rules (validate::rad75): a request breaking one is answered with its errors
    // only; a document not of this community is refused
    let (docs, mut errors) = match validate::rad75(&req, &g.home) {
        Ok(screened) => (
            screened.accepted,
            validate::registry_errors(&screened.refused),
        ),
        Err(rules) => {
            rec.outcome = Outcome::Failure;
            if let Err(e) = g.hooks.audit(&rec).await {
                return audit_unavailable(&h, &e);
            }
            return SoapReply::retrieve(
                tx,
                &h,
                stamp_home(
                    RetrieveStream::errors(validate::imaging_errors(&rules)),
                    &g.home,
                ),
            );
        }
    };
    let (gate, allowed): (Option<Gate>, Vec<(String, String, DocumentRequest)>) =
        if g.config.consent.mode != ConsentMode::Mitz {
            (Some(Gate::Unchecked), docs)
        } else if docs.is_empty() {
            (None, Vec::new())
        } else {
            match &claimed {
                None => {
                    // without a patient Mitz cannot be asked: fail closed, reveal nothing
                    let d = failure_outcome(
                        &g,
                        "the XUA assertion names no patient (resource-id)".into(),
                    );
                    rec.consent = Some(ConsentRecord::from(&d));
                    rec.outcome_detail = Some(d.reason());
                    errors.extend(docs.iter().map(|(_, _, d)| not_found(d)));
                    (None, Vec::new())
                }
                Some(patient) => {
                    let d = consent(&g, tx, &h, patient, requester.as_ref()).await;
                    rec.consent = Some(ConsentRecord::from(&d));
                    match Permit::new(PatientKey::from_bsn(patient), d.clone()) {
                        None => {
                            rec.outcome_detail = Some(d.reason());
                            errors.extend(docs.iter().map(|(_, _, x)| not_found(x)));
                            (None, Vec::new())
                        }
                        Some(permit) => {
                            // what the patient's manifests list, per requested study
                            let studies: BTreeSet<&str> =
                                docs.iter().map(|(st, _, _)| st.trim()).collect();
                            let mut listed: BTreeMap<String, BTreeSet<(String, String)>> =
                                BTreeMap::new();
                            for st in studies {
                                let c = match study_contents(&g, requester.as_ref(), patient, st)
                                    .await
                                {
                                    Ok(c) => c,
                                    Err(e) => {
                                        errors.push(e);
                                        BTreeSet::new()
                                    }
                                };
                                listed.insert(st.to_owned(), c);
                            }
                            let mut ok = Vec::new();
                            for item in docs {
                                let key = (
                                    item.1.trim().to_owned(),
                                    item.2.document_unique_id.trim().to_owned(),
                                );
                                if listed
                                    .get(item.0.trim())
                                    .is_some_and(|set| set.contains(&key))
                                {
                                    ok.push(item);
                                } else {
                                    errors.push(not_found(&item.2));
                                }
                            }
                            (Some(Gate::Checked(permit)), ok)
                        }
                    }
                }
            }
        };
    // the study of each document sent on, for the audit record
    let study_of: BTreeMap<String, String> = allowed
        .iter()
        .map(|(st, _, d)| (d.document_unique_id.trim().to_owned(), st.clone()))
        .collect();
    let allowed_ids: BTreeSet<String> = study_of.keys().cloned().collect();
    let stream = match &gate {
        Some(_) if !allowed.is_empty() => {
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
        }
        _ => RetrieveStream::errors(Vec::new()),
    };
    let stream = match &gate {
        Some(gate) => disclosure::release_stream(gate, stream, &allowed_ids).0,
        None => RetrieveStream::errors(Vec::new()),
    };
    let combined = stamp_home(RetrieveStream::combine(vec![stream], errors), &g.home);
    rec.document_ids = combined
        .documents
        .iter()
        .map(|d| d.document_unique_id.clone())
        .collect();
    // only the studies something left of (a refused study is not disclosed)
    let mut studies: Vec<String> = rec
        .document_ids
        .iter()
        .filter_map(|u| study_of.get(u.trim()).cloned())
        .collect();
    studies.sort();
    studies.dedup();
    rec.study_ids = studies;
    rec.outcome = match (&gate, &rec.outcome_detail) {
        (None, Some(_)) => Outcome::Denied,
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
