//! The initiating side: XCA Initiating Gateway (ITI-18 and ITI-43 from local consumers) and XCA-I
//! Initiating Imaging Gateway (RAD-69 from local consumers).
//!
//! Queries fan out to the communities chosen by localisation (Mitz open question, or every configured
//! community), in parallel, each with its own deadline; answers are aggregated to Success,
//! PartialSuccess (with each failing community's error; XDSUnavailableCommunity for one that did not
//! answer in time) or Failure (ITI TF-2b 3.38.4.1.3; NIST 15814). Retrieves are routed by
//! homeCommunityId to the one community that holds the document, never to an address taken from the
//! request; an unknown homeCommunityId gets XDSUnknownCommunity and causes no outbound call.
//!
//! **Another patient's data.** A community's answer to a query about patient A may hold objects of
//! patient B (a registry that ignores a parameter, a hostile peer). Every DocumentEntry
//! (ExtrinsicObject) and SubmissionSet or Folder (RegistryPackage) whose patientId is not A's BSN (or
//! that has none) is left out of the ITI-18 answer and the timeline, together with the Associations and
//! Classifications that point at it; the community is named in a RegistryError of severity Warning
//! (XDSRegistryError), each such patient gets an audit record (outcome `failure`, the objects' unique
//! ids, the community) and the objects are counted in `duo_foreign_patient_objects_total`. The patient
//! asked about is the query's patient parameter, or else the local request's XUA resource-id; a query
//! naming neither (GetDocuments by id without a patient) cannot be checked.
//!
//! **Retrieves relayed to a local consumer (ITI-43, RAD-69).** Each community's answer is bounded by
//! the community's deadline as a whole, contents included ([`RetrieveStream::with_deadline`]), and read
//! ahead concurrently up to `server.limits.retrieveLookaheadBytes` before the first byte is sent
//! ([`RetrieveStream::look_ahead`]), after documents not asked for are left out and those neither
//! returned nor named in an error are reported ([`RetrieveStream::tied_to`]). An answer that ends
//! within the look-ahead (every manifest and
//! report, small image sets) is answered exactly: the root lists the documents delivered whole, every
//! damaged one (an `xop:Include` naming no part, a part cut short, no closing boundary, a boundary inside
//! the bytes, part headers missing, base64 that does not decode, ...) is an XDSRepositoryError at its
//! DocumentUniqueId, and the status is PartialSuccess or Failure accordingly. Its audit record is
//! written before the first byte. A longer answer streams on; a document that fails after the root was
//! sent ends its part where its bytes stopped and is reported in the final-status part
//! ([`crate::ihe::mtom::RetrieveResponseWriter`]); its audit record is then written when the last part
//! is through, before the closing boundary (when it cannot be written the message is left without its
//! closing boundary). Either way the record's `documentIds` are exactly the documents delivered whole.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Gateway;
use super::identity;
use super::reply::{SoapReply, read_request, reject};
use super::responding::push_document;
use super::validate;
use crate::audit::{AuditEvent, AuditRecord, AuditTransaction, Outcome, Side};
use crate::backend::{
    BackendError, BoxFut, CallContext, Community, LookAhead, LookaheadBudget, RetrieveStream,
};
use crate::config::LocalizationMode;
use crate::ihe::ebrim::{Identifiable, ObjectRef};
use crate::ihe::mtom::{FinishHook, WrittenReport};
use crate::ihe::query::{AdhocQueryRequest, AdhocQueryResponse, ReturnType, param};
use crate::ihe::retrieve::{RetrieveDocumentSetRequest, RetrieveImagingDocumentSetRequest};
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
    patient: Option<&AskedPatient>,
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
    patient: Option<&AskedPatient>,
    req: &AdhocQueryRequest,
) -> (AdhocQueryResponse, CommunityOutcome) {
    let ctx = context_for(g, t, requester, patient.and_then(AskedPatient::bsn));
    let mut r = req.clone();
    r.query.home = None;
    // ObjectRefs name no patient, so a peer's cannot be checked: with a patient to check against the
    // community is asked for LeafClass and the ObjectRefs are made here from what passed the check
    let as_refs = patient.is_some() && r.response_option.return_type == ReturnType::ObjectRef;
    if as_refs {
        r.response_option.return_type = ReturnType::LeafClass;
    }
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
        Ok(mut r) => {
            // the answer's own status governs: a Failure without errors is still a failure
            r.enforce_stated_status(&t.home.to_string());
            r
        }
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
    if let Some(p) = patient {
        leave_out_other_patients(g, t, tx, requester, p, &mut resp).await;
    }
    // objects without home cannot be retrieved: reported and left out (ITI TF-2b 3.38.4.1.3)
    let missing = resp.missing_home_errors(Some(&t.home));
    if !missing.is_empty() {
        resp.objects
            .retain(|o| !(o.requires_home() && o.home().is_none()));
        resp.errors.extend(missing);
    }
    if as_refs {
        resp.objects = object_refs(std::mem::take(&mut resp.objects), &t.home);
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

/// The ObjectRef answer to a query asked for ObjectRef, made from a LeafClass answer whose objects of
/// other patients were left out: one ObjectRef (id and `home`) per DocumentEntry, SubmissionSet or Folder,
/// whose patient was checked, and per Association between two of them. What names no patient of its own
/// (a peer's ObjectRefs, Classifications, Associations to objects not in the answer) is not passed on.
/// `home` is the community's, for Associations that carry none.
fn object_refs(objects: Vec<Identifiable>, home: &HomeCommunityId) -> Vec<Identifiable> {
    use std::collections::HashSet;
    let checked: HashSet<String> = objects
        .iter()
        .filter(|o| {
            matches!(
                o,
                Identifiable::ExtrinsicObject(_) | Identifiable::RegistryPackage(_)
            )
        })
        .filter_map(|o| o.id().map(str::to_owned))
        .collect();
    objects
        .into_iter()
        .filter_map(|o| {
            let home = o.home().unwrap_or(home).clone();
            let id = match &o {
                Identifiable::ExtrinsicObject(e) => e.object.id.clone(),
                Identifiable::RegistryPackage(p) => p.object.id.clone(),
                Identifiable::Association(a)
                    if checked.contains(&a.source_object) && checked.contains(&a.target_object) =>
                {
                    a.object.id.clone()
                }
                _ => return None,
            };
            Some(Identifiable::ObjectRef(ObjectRef {
                id,
                home: Some(home),
                slots: Vec::new(),
            }))
        })
        .collect()
}

/// The patient a query is about, as every community's answer is checked against it: a BSN, or (a
/// consumer of another affinity domain, e.g. the NIST test patients) any CX with an id and an assigning
/// authority OID, compared by id and OID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AskedPatient {
    /// A BSN (assigning authority [`Bsn::OID`]).
    Bsn(Bsn),
    /// Another patient id: the CX's id and assigning authority OID, as written.
    Other {
        /// CX.1.
        id: String,
        /// The universal id of CX.4.
        authority: String,
    },
}

impl AskedPatient {
    /// The patient of a CX `id^^^&oid&ISO`; `None` when it has no id or no assigning authority OID.
    pub fn from_cx(cx: &str) -> Option<AskedPatient> {
        if let Some(b) = Bsn::from_cx(cx) {
            return Some(AskedPatient::Bsn(b));
        }
        let (id, authority) = crate::model::cx_parts(cx)?;
        if authority == Bsn::OID {
            // a BSN authority with an id that is no BSN
            return None;
        }
        Some(AskedPatient::Other {
            id: id.to_owned(),
            authority: authority.to_owned(),
        })
    }

    /// The BSN, when the patient is one.
    pub fn bsn(&self) -> Option<&Bsn> {
        match self {
            AskedPatient::Bsn(b) => Some(b),
            AskedPatient::Other { .. } => None,
        }
    }

    /// Whether the patient id `cx` of an object names this patient.
    pub fn is(&self, cx: &str) -> bool {
        match self {
            AskedPatient::Bsn(b) => Bsn::from_cx(cx).as_ref() == Some(b),
            AskedPatient::Other { id, authority } => {
                crate::model::cx_parts(cx).is_some_and(|(i, a)| i == id && a == authority)
            }
        }
    }
}

/// XDSFolder.patientId.
const FOLDER_PATIENT_ID: &str = "urn:uuid:f64ffdf0-4b97-4e06-b79f-a52b38ec2f8a";

/// The patient id (CX) an object carries: XDSDocumentEntry.patientId, XDSSubmissionSet.patientId or
/// XDSFolder.patientId. `Ok(None)` for objects that carry no patient data of their own (Association,
/// Classification, unknown members); `Err(())` for an entry or package without one, and for an
/// ObjectRef: it names an object without saying whose it is, so a peer's cannot be passed on as the
/// patient's (ObjectRef answers are made from checked objects, see `object_refs`).
fn patient_of(o: &Identifiable) -> Result<Option<&str>, ()> {
    use crate::ihe::transform::uuids;
    // exactly one patient id: an object naming two (a second ExternalIdentifier of the same scheme) is
    // nobody's, whichever comes first
    fn only<'o>(
        obj: &'o crate::ihe::ebrim::RegistryObject,
        schemes: &[&str],
    ) -> Result<Option<&'o str>, ()> {
        let mut ids = obj
            .external_identifiers
            .iter()
            .filter(|e| schemes.contains(&e.identification_scheme.as_str()));
        match (ids.next(), ids.next()) {
            (Some(e), None) => Ok(Some(e.value.as_str())),
            _ => Err(()),
        }
    }
    match o {
        Identifiable::ExtrinsicObject(e) => only(&e.object, &[uuids::PATIENT_ID]),
        Identifiable::RegistryPackage(p) => only(
            &p.object,
            &[uuids::SUBMISSION_SET_PATIENT_ID, FOLDER_PATIENT_ID],
        ),
        Identifiable::ObjectRef(_) => Err(()),
        _ => Ok(None),
    }
}

/// Leaves out of `resp` every object of another patient than `patient` (see the module documentation),
/// with the Associations and Classifications pointing at them; names `t` in a Warning, audits each
/// other patient once and counts the objects.
async fn leave_out_other_patients(
    g: &Gateway,
    t: &Target,
    tx: Transaction,
    requester: Option<&Requester>,
    patient: &AskedPatient,
    resp: &mut AdhocQueryResponse,
) {
    use std::collections::BTreeSet;
    // other patient (as the peer wrote it) → unique ids of its objects
    let mut foreign: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut dropped: BTreeSet<String> = BTreeSet::new();
    for o in &resp.objects {
        let theirs = match patient_of(o) {
            Ok(None) => continue,
            Ok(Some(cx)) if patient.is(cx) => continue,
            Ok(Some(cx)) => cx.to_owned(),
            Err(()) => String::new(),
        };
        let uid = match o {
            Identifiable::ExtrinsicObject(e) => e
                .object
                .external_id(crate::ihe::transform::uuids::UNIQUE_ID)
                .map(str::to_owned),
            Identifiable::RegistryPackage(p) => p
                .object
                .external_id(crate::ihe::transform::uuids::SUBMISSION_SET_UNIQUE_ID)
                .map(str::to_owned),
            _ => None,
        };
        let id = o.id().unwrap_or_default().to_owned();
        foreign
            .entry(crate::ihe::soap::echoed(&theirs))
            .or_default()
            .push(crate::ihe::soap::echoed(&uid.unwrap_or_else(|| id.clone())));
        dropped.insert(id);
    }
    if dropped.is_empty() {
        return;
    }
    let before = resp.objects.len();
    resp.objects.retain(|o| match o {
        Identifiable::Association(a) => {
            !dropped.contains(&a.object.id)
                && !dropped.contains(&a.source_object)
                && !dropped.contains(&a.target_object)
        }
        Identifiable::Classification(c) => {
            !dropped.contains(&c.object.id) && !dropped.contains(&c.classified_object)
        }
        Identifiable::ExtrinsicObject(_)
        | Identifiable::RegistryPackage(_)
        | Identifiable::ObjectRef(_) => !o.id().is_some_and(|id| dropped.contains(id)),
        _ => true,
    });
    let left_out = before - resp.objects.len();
    let community = t.home.to_string();
    tracing::warn!(community = %community, objects = left_out, "community answered with objects of another patient; left out");
    g.metrics
        .foreign_patient_objects
        .get_or_create(&CommunityLabels {
            community: if t.local {
                "local".to_owned()
            } else {
                community.clone()
            },
            transaction: tx.name().into(),
        })
        .inc_by(left_out as u64);
    resp.errors.push(
        RegistryError::new(
            ErrorCode::XDSRegistryError,
            format!(
                "{community} ({}): answered with {left_out} object(s) of another patient than asked for; left out",
                t.name
            ),
        )
        .at(community.clone())
        .warning(),
    );
    for (theirs, uids) in foreign {
        let mut rec = AuditRecord::new(AuditEvent::Query, tx, Side::Initiating);
        rec.requester = requester.map(Into::into);
        rec.patient = Bsn::from_cx(&theirs);
        rec.remote_community = Some(t.home.clone());
        rec.document_ids = uids;
        rec.outcome = Outcome::Failure;
        rec.outcome_detail = Some(format!(
            "{community} answered a query about another patient with these objects of patient {}; left out, not passed on",
            if theirs.is_empty() {
                "(none given)"
            } else {
                theirs.as_str()
            }
        ));
        // nothing of this patient is passed on, so a record that cannot be written stops nothing
        let _ = g.hooks.audit(&rec).await;
    }
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
    let (requester, claimed) = match assertion {
        Some(a) => (Some(a.requester), a.patient),
        None => (None, None),
    };
    let resp = initiate_query(&g, requester.as_ref(), claimed.as_ref(), req).await;
    g.metrics.count_request(tx.name(), resp.status.name());
    SoapReply::message(tx, &h, &resp)
}

/// The aggregated answer to a local consumer's stored query. The patient is the query's patient
/// parameter, else `claimed` (the request's XUA resource-id): answers are checked against it (see the
/// module documentation).
pub async fn initiate_query(
    g: &Gateway,
    requester: Option<&Requester>,
    claimed: Option<&Bsn>,
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
    let asked = match patient_cx.as_deref() {
        Some(cx) => AskedPatient::from_cx(cx),
        None => claimed.cloned().map(AskedPatient::Bsn),
    };
    let patient = asked.as_ref().and_then(AskedPatient::bsn).cloned();
    let mut audit = AuditRecord::new(AuditEvent::Query, Transaction::Iti18, Side::Initiating);
    audit.requester = requester.map(Into::into);
    audit.patient = patient.clone();
    // A patient id that is no CX with an assigning authority cannot be checked against what
    // communities answer (objects of another patient would pass): refused before any community is asked.
    if let (Some(cx), None) = (patient_cx.as_deref(), &asked) {
        let reason = format!(
            "the patient id {} is no CX with an id and an assigning authority (a BSN: <9 digits>^^^&{}&ISO): every community's answer is checked against the patient asked for, so the query is not sent",
            crate::ihe::soap::echoed(cx),
            Bsn::OID
        );
        audit.outcome = Outcome::Failure;
        audit.outcome_detail = Some(reason.clone());
        let _ = g.hooks.audit(&audit).await;
        return AdhocQueryResponse::new(
            Vec::new(),
            vec![RegistryError::new(ErrorCode::XDSUnknownPatientId, reason).at(home)],
        );
    }
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
    let (resp, _outcomes, _) = fan_out_query(g, &targets, requester, asked.as_ref(), &req).await;
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

/// The communities a local consumer's retrieve can reach ([`validate::Communities`]): the hospital's
/// own ([`local_target`]) and every other one of [`all_targets`], the hospital's repositories and imaging
/// document sources ([`Gateway::local_sources`]). The validators route by these values; an address is
/// never taken from a request.
fn communities(g: &Gateway) -> validate::Communities<Target> {
    validate::Communities {
        home: g.home.clone(),
        local: local_target(g),
        local_sources: g.local_sources(),
        known: all_targets(g)
            .into_iter()
            .map(|t| (t.home.clone(), t))
            .collect(),
    }
}

/// Retrieves documents from wherever their homeCommunityId says, each community read ahead
/// ([`relay_from`]), combined into one answer.
pub async fn initiate_retrieve(
    g: &Gateway,
    requester: Option<&Requester>,
    patient: Option<&Bsn>,
    req: RetrieveDocumentSetRequest,
) -> LookAhead {
    // the request's own rules (validate::iti43): a document no known community holds is refused,
    // without any outbound call
    let routed = validate::iti43(&req, &communities(g));
    let errors = validate::registry_errors(&routed.refused);
    let budget = g.lookahead_budget();
    let calls = routed.by_community.into_values().map(|(t, docs)| {
        let ctx = context_for(g, &t, requester, patient);
        let budget = budget.clone();
        async move {
            let tx = if t.local {
                Transaction::Iti43
            } else {
                Transaction::Iti39
            };
            let asked: Vec<String> = docs.iter().map(|d| d.document_unique_id.clone()).collect();
            let call = t
                .community
                .retrieve(ctx, RetrieveDocumentSetRequest { documents: docs });
            let res = relay_from(&t, &budget, &asked, call).await;
            (t, tx, res)
        }
    });
    combine_retrieved(futures::future::join_all(calls).await, errors)
}

/// One community's retrieve for a local consumer: the call and then its contents within the
/// community's one deadline ([`RetrieveStream::with_deadline`]), failures named after the community,
/// read ahead within `budget` ([`RetrieveStream::look_ahead`]).
async fn relay_from(
    t: &Target,
    budget: &LookaheadBudget,
    asked: &[String],
    call: BoxFut<'_, Result<RetrieveStream, BackendError>>,
) -> Result<LookAhead, BackendError> {
    let until = tokio::time::Instant::now() + t.deadline;
    // the deadline is enforced here too: a backend must not hold the answer beyond it
    let s = match tokio::time::timeout_at(until, call).await {
        Ok(r) => r?,
        Err(_) => return Err(BackendError::Timeout(t.deadline)),
    };
    let who = t.home.to_string();
    Ok(s.tied_to(asked, &who)
        .with_deadline(until, t.deadline)
        .labelled(&who)
        .look_ahead(budget)
        .await)
}

/// Combines the routed retrieves' answers into one: `home` set on every document of the own
/// community (and on a remote one's that left it out), each failed community's error as a
/// RegistryError located at its homeCommunityId (ITI TF-2 3.39.4.1.3). Complete when every part is.
fn combine_retrieved(
    results: Vec<(Target, Transaction, Result<LookAhead, BackendError>)>,
    mut errors: Vec<RegistryError>,
) -> LookAhead {
    let mut parts = Vec::new();
    let mut complete = true;
    for (t, tx, res) in results {
        match res {
            Ok(la) => {
                complete &= la.complete;
                let mut s = la.stream;
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
    LookAhead {
        stream: RetrieveStream::combine(parts, errors),
        complete,
    }
}

/// Counts, audits and answers a local consumer's retrieve (ITI-43 / RAD-69), see the module
/// documentation. An answer known whole is audited before its first byte, and nothing is disclosed
/// when that record cannot be written (a Receiver fault instead); a streamed one is audited when its
/// last part is through.
async fn answer_local_retrieve(
    g: &Gateway,
    tx: Transaction,
    h: &crate::ihe::soap::SoapHeader,
    requester: Option<&Requester>,
    patient: Option<&Bsn>,
    la: LookAhead,
) -> SoapReply {
    let s = la.stream;
    let uids: Vec<String> = s
        .documents
        .iter()
        .map(|d| d.document_unique_id.clone())
        .collect();
    let mut rec = AuditRecord::new(AuditEvent::Retrieve, tx, Side::Initiating);
    rec.requester = requester.map(Into::into);
    rec.patient = patient.cloned();
    rec.message_id = h.message_id.as_deref().map(crate::ihe::soap::echoed);
    if la.complete {
        rec.document_ids = uids;
        rec.outcome = outcome_of(s.response.status);
        rec.outcome_detail = errors_detail(&s.response.errors);
        g.metrics.count_request(tx.name(), s.response.status.name());
        if let Err(e) = g.hooks.audit(&rec).await {
            return SoapReply::fault(
                &crate::ihe::Fault {
                    code: crate::ihe::FaultCode::Receiver,
                    subcode: None,
                    reason: format!("audit trail unavailable, nothing disclosed: {e}"),
                },
                Some(h),
            );
        }
        return SoapReply::retrieve(tx, h, s);
    }
    let hooks = g.hooks.clone();
    let metrics = g.metrics.clone();
    let finish: FinishHook = Box::new(move |report: WrittenReport| {
        Box::pin(async move {
            rec.document_ids = report
                .delivered
                .iter()
                .filter_map(|i| uids.get(*i).cloned())
                .collect();
            rec.outcome = outcome_of(report.response.status);
            rec.outcome_detail = errors_detail(&report.response.errors);
            metrics.count_request(tx.name(), report.response.status.name());
            hooks.audit(&rec).await
        })
    });
    SoapReply::retrieve_with(tx, h, s, Some(finish))
}

/// The errors of an answer in one line for its audit record (at most about 1 KiB).
fn errors_detail(errors: &[RegistryError]) -> Option<String> {
    if errors.is_empty() {
        return None;
    }
    let mut out = format!("{} error(s):", errors.len());
    for e in errors {
        if out.len() > 1024 {
            out.push_str(" ...");
            break;
        }
        out.push(' ');
        out.push_str(e.error_code.as_str());
        if let Some(l) = &e.location {
            out.push_str(" at ");
            out.push_str(&crate::ihe::soap::echoed(l));
        }
        out.push(';');
    }
    Some(out)
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
) -> LookAhead {
    // the request's own rules (validate::rad69): a request breaking one is answered with its errors
    // only; a document no known community holds is refused, without any outbound call
    let routed = match validate::rad69(&req, &communities(g)) {
        Ok(r) => r,
        Err(rules) => {
            return LookAhead {
                stream: RetrieveStream::errors(validate::imaging_errors(&rules)),
                complete: true,
            };
        }
    };
    let errors = validate::registry_errors(&routed.refused);
    let ts = req.transfer_syntaxes.clone();
    let budget = g.lookahead_budget();
    let calls = routed.by_community.into_values().map(|(t, docs)| {
        let ctx = context_for(g, &t, requester, patient);
        let mut sub = RetrieveImagingDocumentSetRequest {
            studies: Vec::new(),
            transfer_syntaxes: ts.clone(),
        };
        let asked: Vec<String> = docs
            .iter()
            .map(|(_, _, d)| d.document_unique_id.clone())
            .collect();
        for (st, se, d) in docs {
            push_document(&mut sub, &st, &se, d);
        }
        let budget = budget.clone();
        async move {
            let tx = if t.local {
                Transaction::Rad69
            } else {
                Transaction::Rad75
            };
            let call = t.community.retrieve_images(ctx, sub);
            let res = relay_from(&t, &budget, &asked, call).await;
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
