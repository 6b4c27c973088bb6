//! Consent at the responding side: the Mitz closed question and the fail-closed policy around it.
//!
//! [`ConsentService::check`] asks whether a requester may see a patient's data held by this hospital and
//! returns a [`ConsentOutcome`]: the [`Decision`] and where it came from ([`ConsentSource`]: Mitz, the
//! cache, the `permitAll` test mode, or a failure with its reason). **Only Permit discloses**
//! ([`ConsentOutcome::discloses`]). Deny, NotApplicable and Indeterminate disclose nothing; so does every
//! failure to get an answer (timeout, TLS error, HTTP error, SOAP fault, unparseable answer), which is
//! reported as Indeterminate with [`ConsentSource::Failure`] so the reason reaches the audit record.
//!
//! Permit and Deny answers of Mitz are cached for `mitz.cacheSeconds` (default 60) per closed question:
//! the key holds every input of the question ([`ClosedQuestion`] less the other categories: patient, data
//! holder URA and facility type, the requester's UZI number, role, organisation URA and facility type,
//! purpose of use, the mandating professional, and the category), so an answer is only ever reused for
//! exactly the question it answered. Nothing else is cached: a failure or an Indeterminate is asked again
//! next time.
//!
//! Every answer is read and tied to its question by [`xacml::read_closed_answer`] here, whichever
//! [`ClosedQuestionTransport`] carried it.
//!
//! The wire format is [`xacml`] (duo-wire); the HTTP client over mutual TLS is [`crate::mitz`].

/// The closed question's codec lives in the wire layer ([`duo_wire::mitz::xacml`]).
pub use duo_wire::mitz::xacml;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The Mitz client lives beside consent and localisation, which both use it ([`crate::mitz`]).
pub use crate::mitz::{MitzClient, MitzError};
pub use xacml::{CategoryDecision, ClosedQuestion, Decision};

use crate::backend::BoxFut;
use crate::config::{Config, ConsentMode};
use crate::model::{
    Bsn, DataCategory, FacilityType, PurposeOfUse, Requester, RoleCode, Ura, UziNumber,
};
use crate::tls::TlsError;
use crate::xml::Limits;

/// How a closed question reaches Mitz and its answer comes back: [`MitzClient`] (HTTPS with mutual TLS)
/// in the gateway; an in-process answerer in tests that generate hostile answers. The transport only
/// carries bytes: the [`ConsentService`] reads every answer and ties it to the question itself.
pub trait ClosedQuestionTransport: Send + Sync {
    /// Puts question `q` and returns the body of the answer, unread. Errors: why there is no answer
    /// ([`MitzError`]; every error means no consent).
    fn send<'a>(&'a self, q: &'a ClosedQuestion) -> BoxFut<'a, Result<Bytes, MitzError>>;
}

impl ClosedQuestionTransport for MitzClient {
    fn send<'a>(&'a self, q: &'a ClosedQuestion) -> BoxFut<'a, Result<Bytes, MitzError>> {
        Box::pin(self.send_closed_question(q))
    }
}

/// Where a [`ConsentOutcome`]'s decision came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsentSource {
    /// Mitz answered this question just now.
    Mitz,
    /// A Permit or Deny Mitz gave earlier for the same (patient, organisation, role, category).
    Cache,
    /// `consent.mode: permitAll`: no question asked (test environments only).
    PermitAll,
    /// No answer from Mitz; the decision is Indeterminate.
    Failure(MitzError),
}

impl ConsentSource {
    /// `mitz`, `cache`, `permitAll` or `failure` (audit records, metrics labels).
    pub fn as_str(&self) -> &'static str {
        match self {
            ConsentSource::Mitz => "mitz",
            ConsentSource::Cache => "cache",
            ConsentSource::PermitAll => "permitAll",
            ConsentSource::Failure(_) => "failure",
        }
    }
}

impl fmt::Display for ConsentSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConsentSource::Failure(e) => write!(f, "failure ({e})"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// The answer of the consent policy for one data category.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentOutcome {
    /// The category asked for.
    pub category: DataCategory,
    /// The decision; Indeterminate for every failure.
    pub decision: Decision,
    /// Where the decision came from.
    pub source: ConsentSource,
    /// Mitz's status message, or why a category was left Indeterminate, when known.
    pub detail: Option<String>,
}

impl ConsentOutcome {
    /// Whether data may be disclosed: only a Permit from Mitz, the cache or `permitAll`.
    pub fn discloses(&self) -> bool {
        self.decision == Decision::Permit && !matches!(self.source, ConsentSource::Failure(_))
    }

    /// One line for audit records and logs, e.g. `Deny from mitz (No consent found)` or
    /// `Indeterminate from failure (timeout: no answer from Mitz within 3000 ms)`.
    pub fn reason(&self) -> String {
        let mut s = format!("{} from {}", self.decision, self.source);
        if let Some(d) = &self.detail {
            s.push_str(" (");
            s.push_str(d);
            s.push(')');
        }
        if self.source == ConsentSource::PermitAll {
            s.push_str(" (consent not checked: permitAll mode)");
        }
        s
    }
}

/// Why the consent service could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConsentSetupError {
    /// `consent.mode: mitz` without a `mitz` section.
    #[error("consent.mode is mitz but no mitz connection is configured")]
    NoMitz,
    /// The Mitz TLS files could not be loaded.
    #[error("mitz.tls: {0}")]
    Tls(#[from] TlsError),
}

/// Every input of a closed question about one category: an answer is reused only for exactly the
/// question it answered (issue 12, defect 3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    patient: Bsn,
    holder_ura: Ura,
    holder_facility_type: FacilityType,
    uzi: UziNumber,
    role: RoleCode,
    organisation: Ura,
    facility_type: FacilityType,
    purpose_of_use: PurposeOfUse,
    mandated: Option<UziNumber>,
    category: DataCategory,
}

impl CacheKey {
    /// The key of `q`'s question about `category` (the other categories of `q` play no part).
    fn of(q: &ClosedQuestion, category: &DataCategory) -> CacheKey {
        let r = &q.requester;
        CacheKey {
            patient: q.patient.clone(),
            holder_ura: q.holder_ura.clone(),
            holder_facility_type: q.holder_facility_type.clone(),
            uzi: r.uzi.clone(),
            role: r.role.clone(),
            organisation: r.ura.clone(),
            facility_type: r.facility_type.clone(),
            purpose_of_use: r.purpose_of_use.clone(),
            mandated: q.mandated.clone(),
            category: category.clone(),
        }
    }
}

type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// Short-lived memory of Permit and Deny answers (per [`CacheKey`]: every input of the question; default
/// 60 s). Bounded: when full, expired entries are dropped and, if still full, new
/// answers are not remembered (the cache only saves questions, it is never needed for correctness).
struct ConsentCache {
    ttl: Duration,
    max_entries: usize,
    entries: Mutex<HashMap<CacheKey, (Decision, Instant)>>,
    clock: Clock,
}

impl ConsentCache {
    fn new(ttl: Duration, clock: Clock) -> ConsentCache {
        ConsentCache {
            ttl,
            max_entries: 100_000,
            entries: Mutex::new(HashMap::new()),
            clock,
        }
    }

    fn get(&self, k: &CacheKey) -> Option<Decision> {
        if self.ttl.is_zero() {
            return None;
        }
        let now = (self.clock)();
        let mut m = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match m.get(k) {
            Some((d, at)) if now.saturating_duration_since(*at) < self.ttl => Some(*d),
            Some(_) => {
                m.remove(k);
                None
            }
            None => None,
        }
    }

    /// Drops every remembered decision about `patient`; returns how many.
    fn forget(&self, patient: &Bsn) -> usize {
        let mut m = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let before = m.len();
        m.retain(|k, _| &k.patient != patient);
        before - m.len()
    }

    fn put(&self, k: CacheKey, d: Decision) {
        // only definite answers are remembered; Indeterminate / NotApplicable / failures are asked again
        if self.ttl.is_zero() || !matches!(d, Decision::Permit | Decision::Deny) {
            return;
        }
        let now = (self.clock)();
        let mut m = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= self.max_entries {
            let ttl = self.ttl;
            m.retain(|_, (_, at)| now.saturating_duration_since(*at) < ttl);
            if m.len() >= self.max_entries {
                return;
            }
        }
        m.insert(k, (d, now));
    }
}

/// The consent policy of the responding side. Share it (`Arc`) between requests.
pub struct ConsentService {
    mode: ConsentMode,
    category: DataCategory,
    holder_ura: Ura,
    holder_facility_type: FacilityType,
    mitz: Option<Arc<dyn ClosedQuestionTransport>>,
    /// Limits answers are read with.
    limits: Limits,
    cache: ConsentCache,
}

impl fmt::Debug for ConsentService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsentService")
            .field("mode", &self.mode)
            .field("category", &self.category)
            .field("holder_ura", &self.holder_ura)
            .field("mitz", &self.mitz.is_some())
            .finish()
    }
}

impl ConsentService {
    /// From the runtime configuration: `consent` (mode, category), `organization` (this hospital is the
    /// data holder: URA, facility type) and `mitz` (endpoint, TLS, deadline, cache seconds).
    /// Errors: mode `mitz` without a `mitz` section; unreadable TLS files.
    pub fn from_config(config: &Config) -> Result<ConsentService, ConsentSetupError> {
        let mitz = match (config.consent.mode, &config.mitz) {
            (ConsentMode::PermitAll, _) => None,
            (ConsentMode::Mitz, None) => return Err(ConsentSetupError::NoMitz),
            (ConsentMode::Mitz, Some(m)) => Some(Arc::new(MitzClient::with_policy(
                m,
                crate::tls::TlsPolicy::from_config(config),
            )?)),
        };
        let ttl = Duration::from_secs(config.mitz.as_ref().map_or(0, |m| m.cache_seconds));
        Ok(ConsentService::new(
            config.consent.mode,
            config.consent.category.clone(),
            config.organization.ura.clone(),
            config.organization.facility_type.clone(),
            mitz,
            ttl,
        ))
    }

    /// From parts: `mode`, the default `category`, the data holder (this hospital), the Mitz client
    /// (required for mode `mitz`; without one every check is a [`MitzError::NotConfigured`] failure) and
    /// the cache lifetime (zero disables the cache).
    pub fn new(
        mode: ConsentMode,
        category: DataCategory,
        holder_ura: Ura,
        holder_facility_type: FacilityType,
        mitz: Option<Arc<MitzClient>>,
        cache_ttl: Duration,
    ) -> ConsentService {
        let limits = mitz.as_ref().map_or_else(
            || Limits {
                max_bytes: crate::mitz::MAX_ANSWER_BYTES,
                ..Limits::default()
            },
            |m| m.limits().clone(),
        );
        ConsentService::with_transport(
            mode,
            category,
            holder_ura,
            holder_facility_type,
            mitz.map(|m| m as Arc<dyn ClosedQuestionTransport>),
            limits,
            cache_ttl,
        )
    }

    /// [`ConsentService::new`] with any [`ClosedQuestionTransport`]; answers are read with `limits`.
    pub fn with_transport(
        mode: ConsentMode,
        category: DataCategory,
        holder_ura: Ura,
        holder_facility_type: FacilityType,
        mitz: Option<Arc<dyn ClosedQuestionTransport>>,
        limits: Limits,
        cache_ttl: Duration,
    ) -> ConsentService {
        ConsentService {
            mode,
            category,
            holder_ura,
            holder_facility_type,
            mitz,
            limits,
            cache: ConsentCache::new(cache_ttl, Arc::new(Instant::now)),
        }
    }

    /// Drops every cached decision about `patient` (a consent notification from Mitz: the next
    /// question about the patient goes to Mitz again). Returns how many decisions were dropped.
    pub fn forget_patient(&self, patient: &Bsn) -> usize {
        self.cache.forget(patient)
    }

    /// Replaces the cache's clock (tests of expiry).
    #[cfg(test)]
    fn with_clock(mut self, clock: Clock) -> ConsentService {
        self.cache = ConsentCache::new(self.cache.ttl, clock);
        self
    }

    /// The configured mode (visible in metrics and every audit record).
    pub fn mode(&self) -> ConsentMode {
        self.mode
    }

    /// The configured data category.
    pub fn category(&self) -> &DataCategory {
        &self.category
    }

    /// May `requester` see `patient`'s data of the configured category held by this hospital?
    pub async fn check(&self, patient: &Bsn, requester: &Requester) -> ConsentOutcome {
        let cats = [self.category.clone()];
        let mut v = self.check_categories(patient, requester, &cats).await;
        v.pop().unwrap_or(ConsentOutcome {
            category: self.category.clone(),
            decision: Decision::Indeterminate,
            source: ConsentSource::Failure(MitzError::Unparseable("no outcome".into())),
            detail: None,
        })
    }

    /// [`ConsentService::check`] for several categories: one outcome per category, in the given order.
    /// Categories not in the cache are asked in one closed question.
    pub async fn check_categories(
        &self,
        patient: &Bsn,
        requester: &Requester,
        categories: &[DataCategory],
    ) -> Vec<ConsentOutcome> {
        if self.mode == ConsentMode::PermitAll {
            return categories
                .iter()
                .map(|c| ConsentOutcome {
                    category: c.clone(),
                    decision: Decision::Permit,
                    source: ConsentSource::PermitAll,
                    detail: None,
                })
                .collect();
        }
        // the question without its categories: what every cache key and the question itself hold
        let base = ClosedQuestion {
            patient: patient.clone(),
            holder_ura: self.holder_ura.clone(),
            holder_facility_type: self.holder_facility_type.clone(),
            categories: Vec::new(),
            requester: requester.clone(),
            mandated: None,
        };
        let key = |c: &DataCategory| CacheKey::of(&base, c);
        let mut out: Vec<Option<ConsentOutcome>> = categories
            .iter()
            .map(|c| {
                self.cache.get(&key(c)).map(|d| ConsentOutcome {
                    category: c.clone(),
                    decision: d,
                    source: ConsentSource::Cache,
                    detail: None,
                })
            })
            .collect();
        let mut missing: Vec<DataCategory> = Vec::new();
        for (c, o) in categories.iter().zip(&out) {
            // each category is asked once, however often the caller names it
            if o.is_none() && !missing.contains(c) {
                missing.push(c.clone());
            }
        }
        if !missing.is_empty() {
            let q = ClosedQuestion {
                categories: missing.clone(),
                ..base.clone()
            };
            let answer = match &self.mitz {
                None => Err(MitzError::NotConfigured(
                    "no Mitz client for consent mode mitz".into(),
                )),
                Some(m) => match m.send(&q).await {
                    Ok(body) => {
                        xacml::read_closed_answer(&body, &q, &self.limits).map_err(MitzError::from)
                    }
                    Err(e) => Err(e),
                },
            };
            match answer {
                Ok(decisions) => {
                    for d in decisions {
                        self.cache.put(key(&d.category), d.decision);
                        for (c, slot) in categories.iter().zip(out.iter_mut()) {
                            if *c == d.category && slot.is_none() {
                                *slot = Some(ConsentOutcome {
                                    category: d.category.clone(),
                                    decision: d.decision,
                                    source: ConsentSource::Mitz,
                                    detail: d.status_message.clone(),
                                });
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, kind = e.kind(), "Mitz closed question failed: no consent");
                    for (c, o) in categories.iter().zip(out.iter_mut()) {
                        if o.is_none() {
                            *o = Some(ConsentOutcome {
                                category: c.clone(),
                                decision: Decision::Indeterminate,
                                source: ConsentSource::Failure(e.clone()),
                                detail: None,
                            });
                        }
                    }
                }
            }
        }
        categories
            .iter()
            .zip(out)
            .map(|(c, o)| {
                o.unwrap_or_else(|| ConsentOutcome {
                    category: c.clone(),
                    decision: Decision::Indeterminate,
                    source: ConsentSource::Mitz,
                    detail: Some("Mitz answer holds no decision for this category".into()),
                })
            })
            .collect()
    }
}

/// The consent part of an audit record (see [`crate::audit`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsentRecord {
    /// The data category asked for.
    pub category: DataCategory,
    /// The decision (`Permit`, `Deny`, `NotApplicable`, `Indeterminate`).
    pub decision: Decision,
    /// `mitz`, `cache`, `permitAll` or `failure`.
    pub source: String,
    /// Why: Mitz's status message, or the failure (e.g. `timeout: no answer from Mitz within 3000 ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether this decision let data be disclosed.
    pub disclosed: bool,
}

impl From<&ConsentOutcome> for ConsentRecord {
    fn from(o: &ConsentOutcome) -> Self {
        let reason = match &o.source {
            ConsentSource::Failure(e) => Some(e.to_string()),
            ConsentSource::PermitAll => Some("consent not checked: permitAll mode".into()),
            _ => o.detail.clone(),
        };
        ConsentRecord {
            category: o.category.clone(),
            decision: o.decision,
            source: o.source.as_str().to_owned(),
            reason,
            disclosed: o.discloses(),
        }
    }
}

#[cfg(test)]
mod tests;
