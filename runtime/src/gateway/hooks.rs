//! The seams where consent (Mitz closed question), localisation (Mitz open question) and the audit trail
//! plug into the gateway. The gateway asks; the implementations decide.

use std::sync::Arc;

use super::super::backend::BoxFut;
use crate::model::{Bsn, HomeCommunityId, Requester};

/// The outcome of a consent check at the responding side. Only `disclose == true` lets data out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentDecision {
    /// Whether data may be disclosed (Mitz answered Permit, or consent checks are off).
    pub disclose: bool,
    /// The decision as Mitz names it (`Permit`, `Deny`, `NotApplicable`, `Indeterminate`) or `None` when
    /// there was no decision (failure).
    pub decision: Option<String>,
    /// Where the decision came from: `mitz`, `cache`, `failure`, `permitAll`.
    pub source: String,
    /// Why, when no decision could be had (timeout, TLS error, HTTP error, unparseable answer).
    pub reason: Option<String>,
}

impl ConsentDecision {
    /// The decision of a gateway without consent checks (test environments): discloses, source
    /// `permitAll`.
    pub fn permit_all() -> ConsentDecision {
        ConsentDecision {
            disclose: true,
            decision: Some("Permit".into()),
            source: "permitAll".into(),
            reason: None,
        }
    }
}

/// Asks whether `requester` may see `patient`'s data held by this gateway's organisation.
pub trait ConsentCheck: Send + Sync {
    /// The decision; never an error: failures are decisions that do not disclose.
    fn check<'a>(
        &'a self,
        patient: &'a Bsn,
        requester: &'a Requester,
    ) -> BoxFut<'a, ConsentDecision>;
}

/// Consent checks off (`consent.mode: permitAll`).
pub struct PermitAll;

impl ConsentCheck for PermitAll {
    fn check<'a>(
        &'a self,
        _patient: &'a Bsn,
        _requester: &'a Requester,
    ) -> BoxFut<'a, ConsentDecision> {
        Box::pin(async { ConsentDecision::permit_all() })
    }
}

/// Which communities hold data of a patient (the open question).
pub trait Localize: Send + Sync {
    /// The homeCommunityIds Mitz names, or why it could not answer (the caller then asks no one).
    fn locate<'a>(
        &'a self,
        patient: &'a Bsn,
        requester: &'a Requester,
    ) -> BoxFut<'a, Result<Vec<HomeCommunityId>, String>>;
}

/// One audit record (NEN 7513): who did what with whose data, and what came of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// `ITI-38`, `RAD-75`, `timeline`, `consent` ...
    pub transaction: String,
    /// `initiating` or `responding`.
    pub side: String,
    /// The requester, when known.
    pub requester: Option<Requester>,
    /// Patient BSN, when known.
    pub patient: Option<String>,
    /// URA of the data holder (responding side: this organisation).
    pub data_holder: Option<String>,
    /// Communities asked (initiating side) or the caller's community.
    pub communities: Vec<String>,
    /// Study Instance UIDs / document unique ids involved.
    pub ids: Vec<String>,
    /// Consent decision, when one was asked.
    pub consent: Option<String>,
    /// Source of that decision.
    pub consent_source: Option<String>,
    /// Reason when the consent check failed.
    pub consent_reason: Option<String>,
    /// Outcome: `Success`, `PartialSuccess`, `Failure`, `refused`, `notDisclosed`.
    pub outcome: String,
    /// Number of items disclosed.
    pub disclosed: usize,
}

/// Writes audit records; `record` returns once the record is written (before the response leaves).
pub trait Audit: Send + Sync {
    /// Writes one record.
    fn record(&self, event: AuditEvent) -> BoxFut<'_, ()>;
}

/// Audit records as structured log lines (the default until a sink is configured).
pub struct LogAudit;

impl Audit for LogAudit {
    fn record(&self, event: AuditEvent) -> BoxFut<'_, ()> {
        Box::pin(async move {
            let line = serde_json::to_string(&event).unwrap_or_default();
            tracing::info!(target: "audit", "{line}");
        })
    }
}

/// Consent mode `mitz` without a usable Mitz client: nothing is disclosed, the reason is recorded.
pub struct FailClosed(pub String);

impl ConsentCheck for FailClosed {
    fn check<'a>(
        &'a self,
        _patient: &'a Bsn,
        _requester: &'a Requester,
    ) -> BoxFut<'a, ConsentDecision> {
        Box::pin(async move {
            ConsentDecision {
                disclose: false,
                decision: None,
                source: "failure".into(),
                reason: Some(self.0.clone()),
            }
        })
    }
}

/// Localisation mode `mitz` without a usable Mitz client: localisation fails, no one is asked.
pub struct NoLocalization(pub String);

impl Localize for NoLocalization {
    fn locate<'a>(
        &'a self,
        _patient: &'a Bsn,
        _requester: &'a Requester,
    ) -> BoxFut<'a, Result<Vec<HomeCommunityId>, String>> {
        Box::pin(async move { Err(self.0.clone()) })
    }
}

/// The hooks of one gateway snapshot.
#[derive(Clone)]
pub struct Hooks {
    /// Consent at the responding side.
    pub consent: Arc<dyn ConsentCheck>,
    /// Localisation at the initiating side; `None` = ask every configured community.
    pub localize: Option<Arc<dyn Localize>>,
    /// The audit trail.
    pub audit: Arc<dyn Audit>,
}

impl Hooks {
    /// Permit everything, ask every community, audit to the log: issue 3's stand-in until Mitz is wired.
    pub fn permissive() -> Hooks {
        Hooks {
            consent: Arc::new(PermitAll),
            localize: None,
            audit: Arc::new(LogAudit),
        }
    }
}

/// The hooks a configuration asks for.
pub fn from_config(c: &crate::config::Config) -> Result<Hooks, String> {
    use crate::config::{ConsentMode, LocalizationMode};
    let consent: Arc<dyn ConsentCheck> = match c.consent.mode {
        ConsentMode::PermitAll => Arc::new(PermitAll),
        ConsentMode::Mitz => Arc::new(FailClosed(
            "the Mitz closed question is not available in this build".into(),
        )),
    };
    let localize: Option<Arc<dyn Localize>> = match c.initiating.localization {
        LocalizationMode::AllCommunities => None,
        LocalizationMode::Mitz => Some(Arc::new(NoLocalization(
            "the Mitz open question is not available in this build".into(),
        ))),
    };
    Ok(Hooks {
        consent,
        localize,
        audit: Arc::new(LogAudit),
    })
}
