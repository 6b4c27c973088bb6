//! Registration with Mitz as data holder: for every patient whose data this hospital holds, a FHIR
//! `Subscription` (reason OTV) at `mitz.subscriptionUrl`, so that Mitz's open question names this
//! hospital's community, and so that Mitz delivers the patient's consent changes to this gateway
//! (docs/DOMAIN.md "Registration"; the request is duo-wire's [`subscription`] codec, byte for byte Mitz's
//! sample).
//!
//! Idempotent: a patient registered by this process is not sent again ([`Registrar`] remembers up to
//! [`MAX_REMEMBERED`] patients), two registrations of one patient at once become one request, and Mitz
//! answering that the registration exists (HTTP 409, or 422 with issue code `duplicate`) counts as
//! already registered. Mitz answering 429, 5xx or nothing is retried with exponential backoff up to
//! `registration.maxAttempts`; any other refusal is final and named.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duo_wire::mitz::subscription::{self, FHIR_XML, SubscriptionRequest};

use crate::config::{Config, RegistrationMode};
use crate::mitz::{MitzClient, MitzError};
use crate::model::{Bsn, FacilityType, HomeCommunityId, Ura};

/// Most patients remembered as registered; beyond it the memory starts afresh (Mitz's duplicate
/// answer keeps a repeated registration harmless).
pub const MAX_REMEMBERED: usize = 200_000;
/// Longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How a registration ended well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// Mitz created the subscription (its id when Mitz returned one).
    New {
        /// Mitz's subscription id.
        subscription_id: Option<String>,
    },
    /// The patient was registered before (by this process, or Mitz said so).
    Already {
        /// Mitz's subscription id, when known.
        subscription_id: Option<String>,
    },
}

impl Registered {
    /// `registered` or `alreadyRegistered` (metrics, audit, API answers).
    pub fn as_str(&self) -> &'static str {
        match self {
            Registered::New { .. } => "registered",
            Registered::Already { .. } => "alreadyRegistered",
        }
    }

    /// Mitz's subscription id, when known.
    pub fn subscription_id(&self) -> Option<&str> {
        match self {
            Registered::New { subscription_id } | Registered::Already { subscription_id } => {
                subscription_id.as_deref()
            }
        }
    }
}

/// Why a registration did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationError {
    /// `registration.mode` is `off`.
    #[error("registration is off (registration.mode)")]
    Off,
    /// Mitz refused the registration (400, 401, 403, 404, 422 ...): retrying will not help.
    #[error("Mitz refused the registration: HTTP {status}{}", if detail.is_empty() { String::new() } else { format!(": {detail}") })]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The OperationOutcome's diagnostics or the start of the body.
        detail: String,
    },
    /// Mitz did not accept it after every attempt (429, 5xx, timeout, transport), or cannot be
    /// reached in a way retrying fixes (TLS, redirect).
    #[error("Mitz did not accept the registration after {attempts} attempt(s): {last}")]
    Unavailable {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
}

impl RegistrationError {
    /// `off`, `refused` or `unavailable` (metrics labels).
    pub fn kind(&self) -> &'static str {
        match self {
            RegistrationError::Off => "off",
            RegistrationError::Refused { .. } => "refused",
            RegistrationError::Unavailable { .. } => "unavailable",
        }
    }
}

/// Registers patients with Mitz for this hospital. Share it (`Arc`).
pub struct Registrar {
    mitz: Arc<MitzClient>,
    url: String,
    gateway_system: HomeCommunityId,
    source_system: HomeCommunityId,
    holder: Ura,
    facility_type: FacilityType,
    endpoint: String,
    max_attempts: u32,
    first_backoff: Duration,
    done: Mutex<HashMap<Bsn, Option<String>>>,
    flights: Mutex<HashMap<Bsn, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Registrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registrar")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl Registrar {
    /// The registrar of `config`, using `mitz` (the MitzConnection's client). `None` when
    /// `registration.mode` is `off`. Errors: a setting validation would have refused (named).
    pub fn from_config(
        config: &Config,
        mitz: Arc<MitzClient>,
    ) -> Result<Option<Registrar>, String> {
        let r = &config.registration;
        if r.mode == RegistrationMode::Off {
            return Ok(None);
        }
        let url = config
            .mitz
            .as_ref()
            .and_then(|m| m.subscription_url.clone())
            .ok_or("mitz.subscriptionUrl is required when registration.mode is mitz")?;
        let endpoint = r.notification_endpoint.clone().ok_or(
            "registration.notificationEndpoint is required when registration.mode is mitz",
        )?;
        let home = config.organization.home_community_id.clone();
        Ok(Some(Registrar {
            mitz,
            url,
            source_system: r.source_system.clone().unwrap_or_else(|| home.clone()),
            gateway_system: home,
            holder: config.organization.ura.clone(),
            facility_type: config.organization.facility_type.clone(),
            endpoint,
            max_attempts: r.max_attempts.max(1),
            first_backoff: Duration::from_millis(500),
            done: Mutex::new(HashMap::new()),
            flights: Mutex::new(HashMap::new()),
        }))
    }

    /// Replaces the first backoff (500 ms; tests use less).
    pub fn with_first_backoff(mut self, d: Duration) -> Registrar {
        self.first_backoff = d;
        self
    }

    /// The Subscription sent for `patient` (XML, as Mitz's sample).
    pub fn request_body(&self, patient: &Bsn, birth_date: Option<jiff::civil::Date>) -> String {
        let birth = birth_date.map(|d| d.to_string());
        let (gateway, source) = (
            self.gateway_system.to_string(),
            self.source_system.to_string(),
        );
        subscription::write_subscription(&SubscriptionRequest {
            birth_date: birth.as_deref(),
            gateway_system: &gateway,
            source_system: &source,
            patient_id: patient.as_str(),
            provider_id: self.holder.as_str(),
            provider_type: self.facility_type.as_str(),
            endpoint: &self.endpoint,
            payload: FHIR_XML,
        })
    }

    /// Registers `patient` (birth date when known) and answers once Mitz accepted it, or why not.
    /// See the module documentation for idempotency and retries.
    pub async fn register(
        &self,
        patient: &Bsn,
        birth_date: Option<jiff::civil::Date>,
    ) -> Result<Registered, RegistrationError> {
        if let Some(id) = self.remembered(patient) {
            return Ok(Registered::Already {
                subscription_id: id,
            });
        }
        let flight = {
            let mut f = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            f.entry(patient.clone()).or_default().clone()
        };
        let outcome = {
            let _one_at_a_time = flight.lock().await;
            match self.remembered(patient) {
                Some(id) => Ok(Registered::Already {
                    subscription_id: id,
                }),
                None => self.send(patient, birth_date).await,
            }
        };
        {
            let mut f = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            // the map's own handle and ours: nobody else waits
            if Arc::strong_count(&flight) <= 2 {
                f.remove(patient);
            }
        }
        if let Ok(r) = &outcome {
            let mut d = self.done.lock().unwrap_or_else(|p| p.into_inner());
            if d.len() >= MAX_REMEMBERED {
                d.clear();
            }
            d.insert(patient.clone(), r.subscription_id().map(str::to_owned));
        }
        outcome
    }

    fn remembered(&self, patient: &Bsn) -> Option<Option<String>> {
        self.done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(patient)
            .cloned()
    }

    async fn send(
        &self,
        patient: &Bsn,
        birth_date: Option<jiff::civil::Date>,
    ) -> Result<Registered, RegistrationError> {
        let body = self.request_body(patient, birth_date);
        let limits = self.mitz.limits();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let wait = match self.mitz.post_fhir(&self.url, FHIR_XML, body.clone()).await {
                Ok(a) if (200..300).contains(&a.status) => {
                    return Ok(Registered::New {
                        subscription_id: subscription::created_id(
                            a.location.as_deref(),
                            &a.body,
                            limits,
                        ),
                    });
                }
                Ok(a) => {
                    let outcome = subscription::read_operation_outcome(&a.body, limits);
                    let detail = outcome.as_ref().map_or_else(
                        || {
                            String::from_utf8_lossy(&a.body[..a.body.len().min(200)])
                                .trim()
                                .to_owned()
                        },
                        |o| o.diagnostics.clone(),
                    );
                    let duplicate = a.status == 409
                        || (a.status == 422 && outcome.as_ref().is_some_and(|o| o.is_duplicate()));
                    if duplicate {
                        return Ok(Registered::Already {
                            subscription_id: None,
                        });
                    }
                    if a.status != 429 && a.status < 500 {
                        tracing::warn!(
                            status = a.status,
                            detail,
                            "Mitz refused a registration; not retried"
                        );
                        return Err(RegistrationError::Refused {
                            status: a.status,
                            detail,
                        });
                    }
                    let last = format!(
                        "HTTP {}{}",
                        a.status,
                        if detail.is_empty() {
                            String::new()
                        } else {
                            format!(": {detail}")
                        }
                    );
                    if attempt >= self.max_attempts {
                        return Err(self.give_up(attempt, last));
                    }
                    tracing::warn!(
                        status = a.status,
                        attempt,
                        "Mitz did not accept a registration; retrying"
                    );
                    a.retry_after
                        .map(Duration::from_secs)
                        .filter(|d| *d <= MAX_BACKOFF)
                        .unwrap_or_else(|| self.backoff(attempt))
                }
                Err(e @ (MitzError::Timeout { .. } | MitzError::Transport(_))) => {
                    if attempt >= self.max_attempts {
                        return Err(self.give_up(attempt, e.to_string()));
                    }
                    tracing::warn!(error = %e, attempt, "registration with Mitz failed; retrying");
                    self.backoff(attempt)
                }
                Err(e) => return Err(self.give_up(attempt, e.to_string())),
            };
            tokio::time::sleep(wait).await;
        }
    }

    fn give_up(&self, attempts: u32, last: String) -> RegistrationError {
        tracing::warn!(attempts, last, "registration with Mitz failed");
        RegistrationError::Unavailable { attempts, last }
    }

    /// `first_backoff * 2^(attempt-1)`, at most [`MAX_BACKOFF`].
    fn backoff(&self, attempt: u32) -> Duration {
        self.first_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(MAX_BACKOFF)
    }
}
