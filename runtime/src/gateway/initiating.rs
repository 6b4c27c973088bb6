//! The initiating side: XCA Initiating Gateway (ITI-18 and ITI-43 from local consumers) and XCA-I
//! Initiating Imaging Gateway (RAD-69 from local consumers).
//!
//! Queries fan out to the communities chosen by localisation (Mitz open question, or every configured
//! community); answers are aggregated to Success, PartialSuccess (with each failing community's error;
//! XDSUnavailableCommunity for one that did not answer in time) or Failure (ITI TF-2b 3.38.4.1.3; NIST
//! 15814). Retrieves are routed by
//! homeCommunityId to the one community that holds the document, never to an address taken from the
//! request; an unknown homeCommunityId gets XDSUnknownCommunity and causes no outbound call.
//!
//! The communities are asked through the one fan-out service, [`super::fanout`], which the JSON timeline
//! uses too; it also leaves out objects of another patient than asked.
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

use std::sync::Arc;

use bytes::Bytes;

use super::Gateway;
use super::fanout::{
    AskedPatient, FanOut, Target, all_targets, context_for, local_target, outcome_of,
};
use super::identity;
use super::reply::{SoapReply, read_request, reject};
use super::responding::push_document;
use super::validate;
use super::validate::{LocalQuery, LocalQueryRule, QueryRoute};
use crate::audit::{AuditEvent, AuditRecord, Outcome, Side};
use crate::backend::{BackendError, BoxFut, LookAhead, LookaheadBudget, RetrieveStream};
use crate::gateway::identity::PeerCertificate;
use crate::ihe::ebrim::Identifiable;
use crate::ihe::mtom::{FinishHook, WrittenReport};
use crate::ihe::query::{AdhocQueryRequest, AdhocQueryResponse};
use crate::ihe::retrieve::{RetrieveDocumentSetRequest, RetrieveImagingDocumentSetRequest};
use crate::ihe::xua::XuaAssertion;
use crate::ihe::{ErrorCode, RegistryError, Transaction};
use crate::model::{Bsn, HomeCommunityId, Requester};

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
    // every community a query may name: the configured ones and those they front
    let peers: Vec<HomeCommunityId> = g
        .remotes
        .iter()
        .flat_map(|r| {
            std::iter::once(r.config.home_community_id.clone())
                .chain(r.config.fronted_communities.iter().cloned())
        })
        .collect();
    let mut audit = AuditRecord::new(AuditEvent::Query, Transaction::Iti18, Side::Initiating);
    audit.requester = requester.map(Into::into);
    let LocalQuery {
        request: req,
        asked,
        route,
    } = match validate::iti18(req, claimed, &g.home, &peers) {
        Ok(q) => q,
        Err(rule) => {
            let error = rule.to_registry_error(&g.home);
            // a patient id that cannot be checked is refused before any community is asked, audited
            if let LocalQueryRule::UncheckablePatient { .. } = rule {
                audit.outcome = Outcome::Failure;
                audit.outcome_detail = Some(error.code_context.clone());
                let _ = g.hooks.audit(&audit).await;
            }
            return AdhocQueryResponse::new(Vec::new(), vec![error]);
        }
    };
    let patient = asked.as_ref().and_then(AskedPatient::bsn).cloned();
    audit.patient = patient.clone();
    let fan_out = FanOut::new(g, requester, asked.as_ref());
    let targets: Vec<Target> = match route {
        QueryRoute::Community(h) if h == g.home => vec![local_target(g)],
        // a community fronted by another is asked through it, with only its id in the list
        QueryRoute::Community(h) => all_targets(g)
            .into_iter()
            .filter(|t| !t.local && t.answers_for(&h))
            .filter_map(|t| crate::gateway::fanout::with_named(t, std::slice::from_ref(&h)))
            .take(1)
            .collect(),
        QueryRoute::Localize => match fan_out.targets().await {
            Ok(t) => t,
            Err(e) => {
                audit.outcome = Outcome::Failure;
                audit.outcome_detail = Some(e.to_string());
                let _ = g.hooks.audit(&audit).await;
                return AdhocQueryResponse::new(
                    Vec::new(),
                    vec![
                        RegistryError::new(ErrorCode::XDSRegistryError, e.to_string())
                            .at(g.home.to_string()),
                    ],
                );
            }
        },
    };
    let (resp, _outcomes, _) = fan_out.query(&targets, &req).await;
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
        // a document of a fronted community is retrieved through the community that fronts it
        known: all_targets(g)
            .into_iter()
            .flat_map(|t| {
                let homes: Vec<HomeCommunityId> = std::iter::once(t.home.clone())
                    .chain(t.fronts.iter().cloned())
                    .collect();
                homes.into_iter().map(move |h| (h, t.clone()))
            })
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
            hooks.audit(&rec).await.map_err(|e| e.to_string())
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
