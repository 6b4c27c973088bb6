//! The services the gateway consults besides the communities: consent (Mitz closed question, with its
//! cache and fail-closed policy, [`crate::consent`]), localisation (Mitz open question,
//! [`crate::localization`]) and the audit trail ([`crate::audit`]).

use std::sync::Arc;

use crate::audit::{
    AuditEvent, AuditLog, AuditRecord, AuditSource, AuditTransaction, Outcome, Side,
};
use crate::config::{Config, LocalizationMode};
use crate::consent::{ConsentService, MitzClient};
use crate::localization::LocalizationClient;
use crate::registration::{Registered, RegistrationError};
use crate::tls::{TlsMaterial, TlsPolicy};

/// The services of one gateway snapshot.
#[derive(Clone)]
pub struct Hooks {
    /// Consent at the responding side (mode `mitz` or `permitAll`).
    pub consent: Arc<ConsentService>,
    /// Localisation at the initiating side; `None` = ask every configured community
    /// (`initiating.localization: allCommunities`).
    pub localize: Option<Arc<LocalizationClient>>,
    /// The audit trail.
    pub audit: Arc<AuditLog>,
    /// Registration with Mitz as data holder; `None` when `registration.mode` is `off`.
    pub registrar: Option<Arc<crate::registration::Registrar>>,
}

impl Hooks {
    /// Writes an audit record; a failure to write is logged and returned (callers that would disclose
    /// data refuse instead: no disclosure without its record). The record's `time` is set to now: a
    /// query or retrieve record is built before its answer is known and must not read as earlier than
    /// the consent decision it depends on.
    pub async fn audit(&self, record: &AuditRecord) -> Result<(), AuditUnavailable> {
        let mut record = record.clone();
        record.time = jiff::Timestamp::now();
        // the detail (a file path, a syslog address) goes to the gateway's log only: the returned text
        // may reach a consumer or peer in a RegistryError or fault
        self.audit.record(&record).await.map_err(|e| {
            tracing::error!(error = %e, "audit record not written");
            AuditUnavailable
        })
    }
}

impl Hooks {
    /// Registers `patient` with Mitz as data holder ([`crate::registration::Registrar::register`]),
    /// counts the outcome (`duo_mitz_registrations_total`) and audits it (event `registration`, naming
    /// the `trigger`: `api`, `cli`, `dsub`, ...). Answers only after Mitz accepted. Errors: why not
    /// ([`RegistrationError::Off`] when `registration.mode` is `off`). A registration Mitz accepted whose
    /// audit record could not be written is still a registration (Mitz holds it): the failure is logged.
    pub async fn register(
        &self,
        metrics: &super::metrics::Metrics,
        patient: &crate::model::Bsn,
        birth_date: Option<jiff::civil::Date>,
        trigger: &str,
    ) -> Result<Registered, RegistrationError> {
        let Some(r) = &self.registrar else {
            return Err(RegistrationError::Off);
        };
        let outcome = r.register(patient, birth_date).await;
        let label = match &outcome {
            Ok(ok) => ok.as_str(),
            Err(e) => e.kind(),
        };
        metrics.count_mitz(&metrics.mitz_registrations, label);
        let mut rec = AuditRecord::new(
            AuditEvent::Registration,
            AuditTransaction::Other("MITZ-SUBSCRIPTION".into()),
            Side::Responding,
        );
        rec.patient = Some(patient.clone());
        match &outcome {
            Ok(ok) => {
                rec.outcome_detail = Some(match ok.subscription_id() {
                    Some(id) => format!("{label} (trigger {trigger}); subscription {id}"),
                    None => format!("{label} (trigger {trigger})"),
                });
            }
            Err(e) => {
                rec.outcome = Outcome::Failure;
                rec.outcome_detail = Some(format!("trigger {trigger}: {e}"));
            }
        }
        // a registration is not a disclosure: a missing record does not undo what Mitz holds
        let _ = self.audit(&rec).await;
        outcome
    }
}

/// An audit record could not be written. Whoever would have disclosed something with it discloses
/// nothing instead (no disclosure without its record). The cause (a file path, a syslog address) is in
/// the gateway's log only: this error's text may reach a consumer or peer in a RegistryError or fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the audit record could not be written (the gateway log says why)")]
pub struct AuditUnavailable;

/// The services a configuration asks for: the consent service (fails closed without Mitz), the open
/// question client when localisation is `mitz`, and the audit log with its sinks (syslog TLS presents
/// the gateway's certificate).
///
/// Errors: one line naming what could not be set up (Mitz TLS files, audit file or syslog).
pub async fn from_config(c: &Config) -> Result<Hooks, String> {
    let consent = ConsentService::from_config(c).map_err(|e| e.to_string())?;
    let localize = match (c.initiating.localization, &c.mitz) {
        (LocalizationMode::AllCommunities, _) => None,
        (LocalizationMode::Mitz, Some(m)) => {
            let client = MitzClient::with_policy(m, TlsPolicy::from_config(c))
                .map_err(|e| format!("mitz: {e}"))?;
            Some(Arc::new(LocalizationClient::new(
                Arc::new(client),
                c.xua_issuer(),
                super::xua::open_question_signer(c)?,
            )))
        }
        (LocalizationMode::Mitz, None) => {
            return Err(
                "initiating.localization is mitz but no mitz connection is configured".into(),
            );
        }
    };
    let identity = if c.audit.syslog.is_some() {
        Some(
            TlsMaterial::load(&c.server.tls)
                .map_err(|e| e.to_string())?
                .with_policy(TlsPolicy::from_config(c)),
        )
    } else {
        None
    };
    let source = AuditSource {
        source_id: c.organization.home_community_id.to_string(),
        enterprise_site_id: c.organization.ura.to_string(),
    };
    let audit = AuditLog::from_config(&c.audit, source, identity.as_ref())
        .await
        .map_err(|e| e.to_string())?;
    let registrar = match &c.mitz {
        Some(m) if c.registration.mode == crate::config::RegistrationMode::Mitz => {
            let client = MitzClient::with_policy(m, TlsPolicy::from_config(c))
                .map_err(|e| format!("mitz: {e}"))?;
            crate::registration::Registrar::from_config(c, Arc::new(client))?.map(Arc::new)
        }
        _ => None,
    };
    Ok(Hooks {
        consent: Arc::new(consent),
        localize,
        audit: Arc::new(audit),
        registrar,
    })
}
