//! The services the gateway consults besides the communities: consent (Mitz closed question, with its
//! cache and fail-closed policy, [`crate::consent`]), localisation (Mitz open question,
//! [`crate::localization`]) and the audit trail ([`crate::audit`]).

use std::sync::Arc;

use crate::audit::{AuditLog, AuditRecord, AuditSource};
use crate::config::{Config, LocalizationMode};
use crate::consent::{ConsentService, MitzClient};
use crate::localization::LocalizationClient;
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
    Ok(Hooks {
        consent: Arc::new(consent),
        localize,
        audit: Arc::new(audit),
    })
}
