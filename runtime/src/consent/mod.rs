//! Consent at the responding side: the Mitz closed question and the fail-closed policy around it.
//!
//! [`ConsentService::check`] asks whether a requester may see a patient's data held by this hospital and
//! returns a [`ConsentOutcome`]: the [`Decision`] and where it came from ([`ConsentSource`]: Mitz, the
//! cache, the `permitAll` test mode, or a failure with its reason). **Only Permit discloses**
//! ([`ConsentOutcome::discloses`]). Deny, NotApplicable and Indeterminate disclose nothing; so does every
//! failure to get an answer (timeout, TLS error, HTTP error, SOAP fault, unparseable answer), which is
//! reported as Indeterminate with [`ConsentSource::Failure`] so the reason reaches the audit record.
//!
//! Permit and Deny answers of Mitz are cached for `mitz.cacheSeconds` (default 60) per (patient,
//! requester organisation URA, requester role, category); nothing else is cached, so a failure or an
//! Indeterminate is asked again next time.
//!
//! Modules: [`xacml`] (the wire format), [`client`] (HTTP over mutual TLS).

pub mod client;
pub mod xacml;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use client::{MitzClient, MitzError};
pub use xacml::{CategoryDecision, ClosedQuestion, Decision};

use crate::config::{Config, ConsentMode};
use crate::model::{Bsn, DataCategory, FacilityType, Requester, RoleCode, Ura};
use crate::tls::TlsError;

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

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    patient: Bsn,
    organisation: Ura,
    role: RoleCode,
    category: DataCategory,
}

type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// Short-lived memory of Permit and Deny answers (issue 4: per patient, requester organisation, role,
/// category; default 60 s). Bounded: when full, expired entries are dropped and, if still full, new
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
    mitz: Option<Arc<MitzClient>>,
    cache: ConsentCache,
}

impl fmt::Debug for ConsentService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsentService")
            .field("mode", &self.mode)
            .field("category", &self.category)
            .field("holder_ura", &self.holder_ura)
            .field("mitz", &self.mitz)
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
        ConsentService {
            mode,
            category,
            holder_ura,
            holder_facility_type,
            mitz,
            cache: ConsentCache::new(cache_ttl, Arc::new(Instant::now)),
        }
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
        let key = |c: &DataCategory| CacheKey {
            patient: patient.clone(),
            organisation: requester.ura.clone(),
            role: requester.role.clone(),
            category: c.clone(),
        };
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
        let missing: Vec<DataCategory> = categories
            .iter()
            .zip(&out)
            .filter(|(_, o)| o.is_none())
            .map(|(c, _)| c.clone())
            .collect();
        if !missing.is_empty() {
            let answer = match &self.mitz {
                None => Err(MitzError::NotConfigured(
                    "no Mitz client for consent mode mitz".into(),
                )),
                Some(m) => {
                    let q = ClosedQuestion {
                        patient: patient.clone(),
                        holder_ura: self.holder_ura.clone(),
                        holder_facility_type: self.holder_facility_type.clone(),
                        categories: missing.clone(),
                        requester: requester.clone(),
                        mandated: None,
                    };
                    m.closed_question(&q).await
                }
            };
            match answer {
                Ok(decisions) => {
                    for d in decisions {
                        self.cache.put(key(&d.category), d.decision);
                        if let Some(slot) = categories
                            .iter()
                            .zip(out.iter_mut())
                            .find(|(c, o)| **c == d.category && o.is_none())
                            .map(|(_, o)| o)
                        {
                            *slot = Some(ConsentOutcome {
                                category: d.category,
                                decision: d.decision,
                                source: ConsentSource::Mitz,
                                detail: d.status_message,
                            });
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
