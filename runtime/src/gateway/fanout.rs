//! The initiating side's one fan-out: every stored query this gateway sends to communities on behalf of
//! a consumer goes through [`FanOut`], whether a local document consumer asked (ITI-18,
//! [`super::initiating`]) or a viewer asked for the timeline ([`super::timeline_api`]).
//!
//! [`FanOut::targets`] chooses the communities (Mitz open question, or every configured one);
//! [`FanOut::each`] asks them in parallel, each within its own deadline, and hands each community's
//! checked answer to the caller's next step (the timeline fetches manifests) within what is left of
//! that deadline; [`FanOut::query`] is the ITI-18 aggregation of the answers. Each community's answer is
//! checked the same way for both:
//! - its own status governs (a Failure without errors is still a failure); a community that does not
//!   answer in time is XDSUnavailableCommunity;
//! - the local community's objects get this gateway's `home`; objects that still have none cannot be
//!   retrieved and are reported and left out (ITI TF-2b 3.38.4.1.3);
//! - every error is located at the community; latency and errors are counted per community.
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
//! **Target communities** (IHE CP-ITI-1301 Target Communities; the Twiin consultation text of ITI-38;
//! docs/DOMAIN.md). A configured community may front other homeCommunityIds
//! (`communities[].frontedCommunities`: a platform such as a TLB node serving several hospitals). When
//! Mitz names some of the ids such a community answers for (its own and those it fronts), it is asked
//! once, with exactly the named ones in `$targetCommunityIdList` ([`Target::target_communities`]); never
//! with an id Mitz did not name, and never with a list a local consumer put in its own query. Under
//! `allCommunities` localisation nothing was named, so it is asked without a list (everything behind
//! it), as before. From a community that fronts others, every DocumentEntry, SubmissionSet, Folder or
//! ObjectRef whose `home` is neither its own nor one asked (all it fronts, without a list) is left out
//! with the Associations and Classifications pointing at it, and named in a Warning
//! (`leave_out_other_communities`): a hostile platform cannot slip in another community's documents.
//! Its XDSUnknownCommunity errors naming an asked id (a hospital it does not know after all) are
//! warnings, and a PartialSuccess that holds nothing worse is its success: not an error.
//!

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Gateway;
use crate::audit::{AuditEvent, AuditRecord, AuditTransaction, Outcome, Side};
use crate::backend::{CallContext, Community};
use crate::config::LocalizationMode;
use crate::gateway::metrics::{CommunityErrorLabels, CommunityLabels};
use crate::ihe::ebrim::{Identifiable, ObjectRef};
use crate::ihe::query::{AdhocQueryRequest, AdhocQueryResponse, ReturnType};
use crate::ihe::{ErrorCode, RegistryError, ResponseStatus, Transaction};
use crate::model::{Bsn, HomeCommunityId, Organization, Requester};

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
    /// The homeCommunityIds its responding gateway fronts besides its own
    /// (`communities[].frontedCommunities`); empty for a community that fronts only itself and for the
    /// local community.
    pub fronts: Vec<HomeCommunityId>,
    /// The `$targetCommunityIdList` it is asked with: `Some` of exactly the ids Mitz named that it
    /// answers for (never empty), `None` for no list (see the module documentation).
    pub target_communities: Option<Vec<HomeCommunityId>>,
}

impl Target {
    /// Whether its responding gateway answers for `home`: its own id or one it fronts.
    pub fn answers_for(&self, home: &HomeCommunityId) -> bool {
        &self.home == home || self.fronts.contains(home)
    }

    /// The homeCommunityIds whose objects are accepted from it when it fronts other communities: its
    /// own and those asked ([`Target::target_communities`], or all it fronts without a list). `None`
    /// for a community that fronts none (not checked here, as before).
    pub fn accepted_homes(&self) -> Option<Vec<HomeCommunityId>> {
        if self.fronts.is_empty() {
            return None;
        }
        let mut ok = vec![self.home.clone()];
        ok.extend(
            self.target_communities
                .as_ref()
                .unwrap_or(&self.fronts)
                .iter()
                .cloned(),
        );
        Some(ok)
    }
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
            fronts: r.config.fronted_communities.clone(),
            target_communities: None,
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
        fronts: Vec::new(),
        target_communities: None,
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
/// community when `includeLocal`. A community that fronts others is chosen when Mitz names any id it
/// answers for, and then carries exactly those ids as its [`Target::target_communities`] (see
/// [`with_named`]); under `allCommunities` it is asked without a list.
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
    g.hooks
        .audit(&rec)
        .await
        .map_err(|e| LocalizeError::Mitz(e.to_string()))?;
    let named: Vec<HomeCommunityId> = located
        .map_err(|e| LocalizeError::Mitz(e.to_string()))?
        .into_iter()
        .map(|l| l.home_community_id)
        .collect();
    for h in &named {
        if h != &g.home && !g.remotes.iter().any(|r| r.config.answers_for(h)) {
            tracing::info!(community = %h, "Mitz names a community that is not configured; skipped");
        }
    }
    Ok(all
        .into_iter()
        .filter_map(|t| with_named(t, &named))
        .collect())
}

/// `t` as asked when localisation named `named`: the local community always; a community that fronts
/// none when its own id is named (no list, as before); a community that fronts others when any id it
/// answers for is named, with exactly those (first-named order, each once) as its
/// `$targetCommunityIdList`; `None`: not asked.
pub fn with_named(mut t: Target, named: &[HomeCommunityId]) -> Option<Target> {
    if t.local {
        return Some(t);
    }
    if t.fronts.is_empty() {
        return named.contains(&t.home).then_some(t);
    }
    let mut list: Vec<HomeCommunityId> = Vec::new();
    for h in named {
        if t.answers_for(h) && !list.contains(h) {
            list.push(h.clone());
        }
    }
    if list.is_empty() {
        return None;
    }
    t.target_communities = Some(list);
    Some(t)
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

/// One fan-out on behalf of one consumer: the gateway, the requester (the XUA assertion sent to each
/// community is issued for it) and the patient every answer is checked against (`None`: a query by id
/// that names no patient, which cannot be checked).
pub struct FanOut<'a> {
    g: &'a Gateway,
    requester: Option<&'a Requester>,
    patient: Option<&'a AskedPatient>,
}

/// One community's checked answer, handed to the next step of [`FanOut::each`].
pub struct CommunityAnswer {
    /// The answer, checked (see the module documentation).
    pub response: AdhocQueryResponse,
    /// Its outcome, for the timeline and the metrics.
    pub outcome: CommunityOutcome,
    /// What is left of the community's deadline after the query.
    pub left: Duration,
}

impl<'a> FanOut<'a> {
    /// A fan-out of `g` for `requester` about `patient`.
    pub fn new(
        g: &'a Gateway,
        requester: Option<&'a Requester>,
        patient: Option<&'a AskedPatient>,
    ) -> FanOut<'a> {
        FanOut {
            g,
            requester,
            patient,
        }
    }

    /// The communities to ask (see [`targets_for`]; localisation needs the patient's BSN).
    pub async fn targets(&self) -> Result<Vec<Target>, LocalizeError> {
        targets_for(
            self.g,
            self.patient.and_then(AskedPatient::bsn),
            self.requester,
        )
        .await
    }

    /// Asks every target `req` in parallel, each within its deadline, and runs `then` on each
    /// community's checked answer; returns `then`'s results in the order of `targets`. `then` is given
    /// what is left of the community's deadline ([`CommunityAnswer::left`]) and is expected to keep to it:
    /// a community slow to answer and another slow in the next step cost one deadline, not two.
    pub async fn each<'t, T, F, Fut>(
        &self,
        targets: &'t [Target],
        req: &AdhocQueryRequest,
        then: F,
    ) -> Vec<T>
    where
        F: Fn(&'a Gateway, &'t Target, CommunityAnswer) -> Fut,
        Fut: Future<Output = T>,
    {
        self.g.metrics.fanout_size.observe(targets.len() as f64);
        let then = &then;
        let calls = targets.iter().map(|t| async move {
            let started = Instant::now();
            let (response, outcome) = self.query_one(t, req).await;
            let left = t.deadline.saturating_sub(started.elapsed());
            then(
                self.g,
                t,
                CommunityAnswer {
                    response,
                    outcome,
                    left,
                },
            )
            .await
        });
        futures::future::join_all(calls).await
    }

    /// Asks every target and aggregates (ITI-18): the answers' objects and errors in target order, each
    /// community's outcome, and the per-community answers (same order as `targets`).
    pub async fn query(
        &self,
        targets: &[Target],
        req: &AdhocQueryRequest,
    ) -> (
        AdhocQueryResponse,
        Vec<CommunityOutcome>,
        Vec<AdhocQueryResponse>,
    ) {
        let results = self
            .each(
                targets,
                req,
                |_, _, a| async move { (a.response, a.outcome) },
            )
            .await;
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

    /// Asks one target within its deadline (one community's part of [`FanOut::each`]): its answer, or
    /// the error its failure stands for (XDSUnavailableCommunity when it did not answer in time), with
    /// `home` filled in for the local community, objects without `home` reported and left out, every error
    /// located at the community, and the per-community metrics recorded.
    async fn query_one(
        &self,
        t: &Target,
        req: &AdhocQueryRequest,
    ) -> (AdhocQueryResponse, CommunityOutcome) {
        let (g, requester, patient) = (self.g, self.requester, self.patient);
        let ctx = context_for(g, t, requester, patient.and_then(AskedPatient::bsn));
        let mut r = req.clone();
        r.query.home = None;
        // only the ids localisation named for this community, never a list from the consumer's query
        r.query
            .set_target_communities(t.target_communities.as_deref().unwrap_or(&[]));
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
                if let Some(asked) = &t.target_communities {
                    unknown_targets_are_no_error(&mut r, asked);
                }
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
        if let Some(ok) = t.accepted_homes() {
            leave_out_other_communities(t, &ok, &mut resp);
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
}

/// A platform's answer to a query with `$targetCommunityIdList` `asked` (Twiin consultation text:
/// "partial success response indicating which homeCommunityIds were not recognized. The Initiating
/// gateway should not treat this as an error"): each XDSUnknownCommunity error that names an asked id
/// (as its location or in its text) becomes a Warning, and a PartialSuccess left without any error of
/// severity Error counts as Success, as does a Failure without objects whose only errors were such
/// (a platform that knows none of the ids asked). Other errors are left as they are.
pub fn unknown_targets_are_no_error(resp: &mut AdhocQueryResponse, asked: &[HomeCommunityId]) {
    let names_asked = |e: &RegistryError| {
        asked.iter().any(|h| {
            let id = h.to_string();
            e.location
                .as_deref()
                .is_some_and(|l| l.trim().parse::<HomeCommunityId>().ok().as_ref() == Some(h))
                || e.code_context.contains(&id)
        })
    };
    let mut unknown = 0;
    for e in &mut resp.errors {
        if e.error_code == ErrorCode::XDSUnknownCommunity && names_asked(e) {
            e.severity = crate::ihe::Severity::Warning;
            unknown += 1;
        }
    }
    let no_error = !resp
        .errors
        .iter()
        .any(|e| e.severity == crate::ihe::Severity::Error);
    let only_unknown = unknown > 0 && unknown == resp.errors.len() && resp.objects.is_empty();
    match resp.status {
        ResponseStatus::PartialSuccess if no_error => resp.status = ResponseStatus::Success,
        ResponseStatus::Failure if only_unknown => resp.status = ResponseStatus::Success,
        _ => {}
    }
}

/// Leaves out of a fronting community's answer every DocumentEntry, SubmissionSet, Folder and ObjectRef
/// whose `home` is not in `accepted` ([`Target::accepted_homes`]: its own and the ids asked), with the
/// Associations and Classifications pointing at them, and names the community in a Warning
/// (XDSRegistryError). Objects without `home` are left to the missing-home check.
fn leave_out_other_communities(
    t: &Target,
    accepted: &[HomeCommunityId],
    resp: &mut AdhocQueryResponse,
) {
    use std::collections::BTreeSet;
    let mut dropped: BTreeSet<String> = BTreeSet::new();
    let mut homes: BTreeSet<String> = BTreeSet::new();
    for o in &resp.objects {
        if o.requires_home()
            && let Some(h) = o.home()
            && !accepted.contains(h)
        {
            dropped.insert(o.id().unwrap_or_default().to_owned());
            homes.insert(crate::ihe::soap::echoed(&h.to_string()));
        }
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
        _ => !(o.requires_home() && o.id().is_some_and(|id| dropped.contains(id))),
    });
    let left_out = before - resp.objects.len();
    let community = t.home.to_string();
    let homes: Vec<String> = homes.into_iter().collect();
    tracing::warn!(community = %community, objects = left_out, homes = ?homes, "community answered for communities it was not asked for; left out");
    resp.errors.push(
        RegistryError::new(
            ErrorCode::XDSRegistryError,
            format!(
                "{community} ({}): answered with {left_out} object(s) of communities it was not asked for ({}); left out",
                t.name,
                homes.join(", ")
            ),
        )
        .at(community)
        .warning(),
    );
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

/// The audit outcome of a response status.
pub fn outcome_of(status: ResponseStatus) -> Outcome {
    match status {
        ResponseStatus::Success => Outcome::Success,
        ResponseStatus::PartialSuccess => Outcome::PartialSuccess,
        ResponseStatus::Failure => Outcome::Failure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ihe::Severity;

    fn hc(s: &str) -> HomeCommunityId {
        s.parse().unwrap()
    }

    fn unknown_at(h: &str, severity: Severity) -> RegistryError {
        let mut e = RegistryError::new(ErrorCode::XDSUnknownCommunity, "not here").at(h.to_owned());
        e.severity = severity;
        e
    }

    /// A PartialSuccess (or a Failure) naming asked ids as unknown is no error; anything else still is.
    #[test]
    fn unknown_target_communities_are_no_error() {
        let asked = [hc("urn:oid:1.2.3.11"), hc("urn:oid:1.2.3.12")];
        // PartialSuccess with a warning naming an asked id (without the urn:oid: prefix): Success
        let mut r =
            AdhocQueryResponse::new(Vec::new(), vec![unknown_at("1.2.3.12", Severity::Warning)]);
        r.status = ResponseStatus::PartialSuccess;
        unknown_targets_are_no_error(&mut r, &asked);
        assert_eq!(r.status, ResponseStatus::Success);
        // an Error naming an asked id becomes a warning
        let mut r = AdhocQueryResponse::new(
            Vec::new(),
            vec![unknown_at("urn:oid:1.2.3.11", Severity::Error)],
        );
        assert_eq!(r.status, ResponseStatus::Failure);
        unknown_targets_are_no_error(&mut r, &asked);
        assert_eq!(r.errors[0].severity, Severity::Warning);
        assert_eq!(
            r.status,
            ResponseStatus::Success,
            "knows none of them: no error"
        );
        // an unknown id that was not asked stays an error; so does any other error
        for e in [
            unknown_at("urn:oid:1.2.3.99", Severity::Error),
            RegistryError::new(ErrorCode::XDSRegistryError, "urn:oid:1.2.3.11 broke"),
        ] {
            let mut r = AdhocQueryResponse::new(Vec::new(), vec![e.clone()]);
            r.status = ResponseStatus::PartialSuccess;
            unknown_targets_are_no_error(&mut r, &asked);
            assert_eq!(r.status, ResponseStatus::PartialSuccess, "{e:?}");
            assert_eq!(r.errors[0].severity, Severity::Error);
        }
        // a Failure with an unknown id and another error stays a Failure
        let mut r = AdhocQueryResponse::new(
            Vec::new(),
            vec![
                unknown_at("urn:oid:1.2.3.11", Severity::Error),
                RegistryError::new(ErrorCode::XDSRegistryError, "down"),
            ],
        );
        unknown_targets_are_no_error(&mut r, &asked);
        assert_eq!(r.status, ResponseStatus::Failure);
    }
}
