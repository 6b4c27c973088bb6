//! The gateway: the initiating side ([`initiating`], XCA IG / XCA-I IIG plus the timeline) and the
//! responding side ([`responding`], XCA RG / XCA-I RIG), over the communities of [`crate::backend`].
//!
//! A [`Gateway`] is one immutable snapshot of the configuration with everything built from it (HTTP
//! clients with the hospital's certificate, backends, hooks). [`Shared`] holds the current snapshot and
//! swaps it on reload; a request keeps the snapshot it started with.

pub mod disclosure;
pub mod dsub;
pub mod fanout;
pub mod hooks;
pub mod identity;
pub mod initiating;
pub mod metrics;
pub mod mitz_api;
pub mod reply;
pub mod responding;
pub mod timeline_api;
pub mod validate;
pub mod xua;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::backend::soap_client::SoapClient;
use crate::backend::xca::{XcaCommunity, XcaEndpoints};
use crate::backend::xds::XdsCommunity;
use crate::backend::{Community, dicomweb};
use crate::config::{Config, LocalBackend, RemoteCommunity};
use crate::gateway::metrics::Metrics;
use crate::ihe::mtom::{BufferBudget, MtomLimits};
use crate::model::{HomeCommunityId, Organization};
use crate::tls::{TlsError, TlsMaterial, TlsPolicy};
use crate::xml::Limits;

pub use hooks::Hooks;

/// A remote community with its client.
pub struct Remote {
    /// Its configuration.
    pub config: RemoteCommunity,
    /// The backend that talks to it (ITI-38 / ITI-39 / RAD-75).
    pub community: Arc<dyn Community>,
    /// Its issuer trust list (`trustedIssuers`): who may sign the assertions it sends.
    pub trusted_issuers: Vec<crate::ihe::xua_dsig::TrustedIssuer>,
}

/// One snapshot of the gateway: configuration and everything built from it.
pub struct Gateway {
    /// The configuration this snapshot was built from.
    pub config: Arc<Config>,
    /// This gateway's homeCommunityId.
    pub home: HomeCommunityId,
    /// The hospital's own community.
    pub local: Arc<dyn Community>,
    /// Remote communities, in configuration order.
    pub remotes: Vec<Remote>,
    /// Consent, localisation and audit.
    pub hooks: Hooks,
    /// Metrics (shared by every snapshot).
    pub metrics: Arc<Metrics>,
    /// XML limits for inbound SOAP.
    pub xml_limits: Limits,
    /// MIME limits for inbound MTOM and outbound answers.
    pub mtom_limits: MtomLimits,
    /// The hospital's TLS identity (server side and outbound client).
    pub tls: TlsMaterial,
    /// Signs every XUA assertion this gateway issues ([`xua::signer`]).
    pub signer: Arc<crate::ihe::xua_dsig::XmlDsigSigner>,
    /// Permits for timeline queries in progress (`server.limits.maxConcurrentTimelines`).
    pub timelines: Arc<tokio::sync::Semaphore>,
}

/// Why a snapshot could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Certificates or keys of `server.tls` could not be loaded (the message names the field, as every
    /// configuration error does).
    #[error("server.tls: {0}")]
    Tls(#[from] TlsError),
    /// Something else in the configuration is unusable.
    #[error("{0}")]
    Config(String),
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The gateway's own certificate must be valid now and, when it is a UZI server certificate, name the
/// configured organisation's URA: peers check both, and a reload with a wrong certificate must leave the
/// last good one serving (the operator checks the same before it renders a Secret, but the volume is
/// refreshed by the kubelet regardless). Errors name `server.tls.certFile`.
fn check_identity(config: &Config, tls: &TlsMaterial) -> Result<(), BuildError> {
    let file = config.server.tls.cert_file.display();
    let Some(leaf) = tls.chain.first() else {
        return Err(BuildError::Config(format!(
            "server.tls.certFile: {file}: no certificate"
        )));
    };
    let info = crate::pki::certificate_info(leaf)
        .map_err(|e| BuildError::Config(format!("server.tls.certFile: {file}: {e}")))?;
    if !info.is_valid_at(jiff::Timestamp::now()) {
        return Err(BuildError::Config(format!(
            "server.tls.certFile: {file}: certificate {} is not valid now (valid {} to {})",
            info.subject, info.not_before, info.not_after
        )));
    }
    if let Some(ura) = &info.ura
        && ura != &config.organization.ura
    {
        return Err(BuildError::Config(format!(
            "server.tls.certFile: {file}: certificate is of URA {ura}, organization.ura is {}",
            config.organization.ura
        )));
    }
    Ok(())
}

impl Gateway {
    /// Builds a snapshot: loads the TLS files, creates the HTTP clients and backends, and the hooks of
    /// `hooks` (consent, localisation, audit), which the caller builds from the same configuration.
    pub fn build(
        config: Config,
        hooks: Hooks,
        metrics: Arc<Metrics>,
    ) -> Result<Gateway, BuildError> {
        let tls =
            TlsMaterial::load(&config.server.tls)?.with_policy(TlsPolicy::from_config(&config));
        check_identity(&config, &tls)?;
        identity::check_front_end_issuers(&config).map_err(BuildError::Config)?;
        let signer = Arc::new(xua::signer(&config).map_err(BuildError::Config)?);
        let mut trust_lists = xua::trust_lists(&config).map_err(BuildError::Config)?;
        let https = tls.http_client(CONNECT_TIMEOUT)?;
        let plain = if config.allow_plain_http {
            Some(crate::tls::plain_http_client(CONNECT_TIMEOUT)?)
        } else {
            None
        };
        // one budget for every peer answer this snapshot buffers (roots, inline documents, look-ahead)
        let mut mtom_limits = crate::limits::mtom_limits(&config.server.limits);
        mtom_limits.budget = Some(BufferBudget::new(
            usize::try_from(config.server.limits.max_buffered_answer_bytes).unwrap_or(usize::MAX),
        ));
        let xml_limits = crate::limits::xml_limits(&config.server.limits);
        // one client per URL scheme: plain only where the configuration opted in
        let client_for = |url: &str, deadline_ms: u64| -> SoapClient {
            let http = match (&plain, url.starts_with("http://")) {
                (Some(p), true) => p.clone(),
                _ => https.clone(),
            };
            SoapClient::new(
                http,
                mtom_limits.clone(),
                Duration::from_millis(deadline_ms),
            )
        };
        let local: Arc<dyn Community> = match &config.local {
            LocalBackend::Xds(x) => Arc::new(XdsCommunity::new(
                &x.registry_url,
                &x.repositories,
                &x.imaging_document_sources,
                client_for(&x.registry_url, x.deadline_ms),
            )),
            LocalBackend::Xca(x) => Arc::new(XcaCommunity::new(
                XcaEndpoints {
                    home_community_id: x.home_community_id.clone(),
                    query_url: x.query_url.clone(),
                    retrieve_url: x.retrieve_url.clone(),
                    imaging_retrieve_url: x.imaging_retrieve_url.clone(),
                    fronted_communities: Vec::new(),
                },
                client_for(&x.query_url, x.deadline_ms),
            )),
            LocalBackend::Dicomweb(d) => Arc::new(dicomweb::DicomwebCommunity::new(
                &d.base_url,
                &d.repository_unique_id,
                &config.organization,
                client_for(&d.base_url, d.deadline_ms),
            )),
        };
        let mut remotes = Vec::with_capacity(config.communities.len());
        for (rc, trusted) in config.communities.iter().zip(trust_lists.iter_mut()) {
            let client = match &rc.connect_to {
                None => client_for(&rc.query_url, rc.deadline_ms),
                // a client of its own: its connections go to the connectTo host, verified against
                // the URL's host (pooled connections must not be shared with other communities)
                Some(host) => {
                    let http = if rc.query_url.starts_with("http://") && plain.is_some() {
                        crate::tls::plain_http_client_via(CONNECT_TIMEOUT, Some(host))?
                    } else {
                        tls.http_client_via(CONNECT_TIMEOUT, Some(host))?
                    };
                    SoapClient::new(
                        http,
                        mtom_limits.clone(),
                        Duration::from_millis(rc.deadline_ms),
                    )
                }
            };
            remotes.push(Remote {
                trusted_issuers: std::mem::take(trusted),
                community: Arc::new(XcaCommunity::new(
                    XcaEndpoints {
                        home_community_id: rc.home_community_id.clone(),
                        query_url: rc.query_url.clone(),
                        retrieve_url: rc.retrieve_url.clone(),
                        imaging_retrieve_url: rc.imaging_retrieve_url.clone(),
                        fronted_communities: rc.fronted_communities.clone(),
                    },
                    client,
                )) as Arc<dyn Community>,
                config: rc.clone(),
            });
        }
        metrics.set_localization_mode(
            config.initiating.localization == crate::config::LocalizationMode::Mitz,
        );
        metrics
            .xua_unsigned_allowed
            .set(i64::from(config.xua.allow_unsigned));
        let config_timelines = config.server.limits.max_concurrent_timelines;
        Ok(Gateway {
            home: config.organization.home_community_id.clone(),
            config: Arc::new(config),
            local,
            remotes,
            hooks,
            metrics,
            xml_limits,
            mtom_limits,
            tls,
            signer,
            timelines: Arc::new(tokio::sync::Semaphore::new(config_timelines.max(1))),
        })
    }

    /// The organisation this gateway serves.
    pub fn organization(&self) -> Organization {
        let o = &self.config.organization;
        Organization {
            ura: o.ura.clone(),
            name: o.name.clone(),
            facility_type: Some(o.facility_type.clone()),
            home_community_id: Some(o.home_community_id.clone()),
        }
    }

    /// The remote community with this homeCommunityId.
    pub fn remote(&self, home: &HomeCommunityId) -> Option<&Remote> {
        self.remotes
            .iter()
            .find(|r| &r.config.home_community_id == home)
    }

    /// The unique ids of the hospital's own community's repositories and imaging document sources (an
    /// XDS-I.b affinity domain's configured ids, or the DICOMweb PACS's id), as configured. A TLB node as
    /// local backend is reached by homeCommunityId only: none.
    pub fn local_sources(&self) -> std::collections::BTreeSet<String> {
        match &self.config.local {
            LocalBackend::Xds(x) => x
                .repositories
                .iter()
                .chain(&x.imaging_document_sources)
                .map(|e| e.unique_id.clone())
                .collect(),
            LocalBackend::Dicomweb(d) => [d.repository_unique_id.clone()].into(),
            LocalBackend::Xca(_) => std::collections::BTreeSet::new(),
        }
    }

    /// Deadline of the local community.
    pub fn local_deadline(&self) -> Duration {
        Duration::from_millis(self.config.local.deadline_ms())
    }

    /// The look-ahead allowance of one retrieve request (`server.limits.retrieveLookaheadBytes`), taken
    /// from the gateway's budget of buffered answers.
    pub fn lookahead_budget(&self) -> crate::backend::LookaheadBudget {
        crate::backend::LookaheadBudget::new(
            usize::try_from(self.config.server.limits.retrieve_lookahead_bytes)
                .unwrap_or(usize::MAX),
            self.mtom_limits.budget.clone(),
        )
    }
}

/// The current snapshot, swapped atomically on reload.
pub struct Shared {
    current: RwLock<Arc<Gateway>>,
}

impl Shared {
    /// Holds `g` as the current snapshot.
    pub fn new(g: Gateway) -> Shared {
        Shared {
            current: RwLock::new(Arc::new(g)),
        }
    }

    /// The current snapshot (a request keeps it for its whole life).
    pub fn current(&self) -> Arc<Gateway> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the snapshot; requests in flight finish on the old one.
    pub fn replace(&self, g: Gateway) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(g);
    }
}
