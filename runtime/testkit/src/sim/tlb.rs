//! A TLB node simulator (a Twiin node): an XCA-I Responding (Imaging) Gateway over its own [`Store`] and
//! homeCommunityId, with optional DICOMweb from the same store.
//!
//! Routes ([`paths`]):
//!
//! | Method, path | Transaction | Rules |
//! |---|---|---|
//! | `POST /xca/iti38` | ITI-38 Cross Gateway Query | `home` on every returned object; `AdhocQuery/@home` naming another community → XDSUnknownCommunity; GetDocuments / GetAssociations without `@home` → XDSMissingHomeCommunityId (ITI TF-2b 3.38.4.1.2.1) |
//! | `POST /xca/iti39` | ITI-39 Cross Gateway Retrieve | HomeCommunityId required per DocumentRequest (XDSMissingHomeCommunityId, NIST 12312) and checked (XDSUnknownCommunity); written on every DocumentResponse |
//! | `POST /xcai/rad75` | RAD-75 Cross Gateway Retrieve Imaging Document Set | as ITI-39, per instance; unknown imaging document source → XDSIUnknownIdsUid (NIST `rig_5426`) |
//! | `GET /dicomweb/...` | QIDO-RS / WADO-RS | see [`super::dicomweb`]; only when [`TlbConfig::dicomweb`] |
//!
//! Requests are SOAP 1.2, plain or MTOM (root part only); retrieve answers are streamed MTOM unless a
//! [`Faults`](super::faults::Faults) quirk says otherwise.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use axum::routing::post;
use bytes::Bytes;

use crate::ihe::ebrim::{ErrorCode, RegistryError};
use crate::ihe::query::{AdhocQueryRequest, AdhocQueryResponse};
use crate::ihe::retrieve::{RetrieveDocumentSetRequest, RetrieveImagingDocumentSetRequest};
use crate::ihe::soap::Transaction;
use crate::model::HomeCommunityId;

use super::dicomweb::{self, QidoEmpty};
use super::faults::{Endpoint, SimControl};
use super::registry::{requires_home, run_query};
use super::retrieve::{self, Side};
use super::serve::{RunningSim, Transport, start};
use super::store::Store;
use super::wire::{self, MAX_REQUEST_BYTES};

/// The routes of [`TlbSim::router`].
pub mod paths {
    /// ITI-38 Cross Gateway Query.
    pub const ITI38: &str = "/xca/iti38";
    /// ITI-39 Cross Gateway Retrieve.
    pub const ITI39: &str = "/xca/iti39";
    /// RAD-75 Cross Gateway Retrieve Imaging Document Set.
    pub const RAD75: &str = "/xcai/rad75";
    /// DICOMweb base (QIDO-RS `/dicomweb/studies`, WADO-RS `/dicomweb/studies/{uid}/...`).
    pub const DICOMWEB: &str = "/dicomweb";
}

/// Settings of a TLB node simulator.
#[derive(Debug, Clone)]
pub struct TlbConfig {
    /// The node's homeCommunityId: written as `home` / HomeCommunityId on everything it returns, and the
    /// only community it answers for.
    pub home_community_id: HomeCommunityId,
    /// Whether the DICOMweb routes are served.
    pub dicomweb: bool,
    /// What QIDO-RS answers when nothing matches.
    pub qido_empty: QidoEmpty,
}

impl TlbConfig {
    /// A node with this homeCommunityId, DICOMweb on, empty QIDO answers `204`.
    pub fn new(home_community_id: HomeCommunityId) -> TlbConfig {
        TlbConfig {
            home_community_id,
            dicomweb: true,
            qido_empty: QidoEmpty::default(),
        }
    }
}

/// A TLB node simulator. Clones share store and control.
#[derive(Debug, Clone)]
pub struct TlbSim {
    /// The node's content; seed it with [`super::seed`] or the [`Store`] methods, also while serving.
    pub store: Arc<Store>,
    /// Fault injection and request log.
    pub control: SimControl,
    config: Arc<TlbConfig>,
}

/// Shared state of the routes.
#[derive(Clone)]
pub(crate) struct TlbState {
    pub(crate) store: Arc<Store>,
    pub(crate) control: SimControl,
    pub(crate) config: Arc<TlbConfig>,
}

impl TlbSim {
    /// A node with an empty store.
    pub fn new(config: TlbConfig) -> TlbSim {
        TlbSim::with_store(config, Arc::new(Store::new()))
    }

    /// A node over an existing store.
    pub fn with_store(config: TlbConfig, store: Arc<Store>) -> TlbSim {
        TlbSim {
            store,
            control: SimControl::new(),
            config: Arc::new(config),
        }
    }

    /// The settings.
    pub fn config(&self) -> &TlbConfig {
        &self.config
    }

    /// The homeCommunityId.
    pub fn home(&self) -> &HomeCommunityId {
        &self.config.home_community_id
    }

    /// The routes of [`paths`], request bodies up to [`MAX_REQUEST_BYTES`].
    pub fn router(&self) -> Router {
        let st = TlbState {
            store: self.store.clone(),
            control: self.control.clone(),
            config: self.config.clone(),
        };
        let mut r = Router::new()
            .route(paths::ITI38, post(iti38))
            .route(paths::ITI39, post(iti39))
            .route(paths::RAD75, post(rad75));
        if self.config.dicomweb {
            r = r.nest(paths::DICOMWEB, dicomweb::router());
        }
        r.layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
            .with_state(st)
    }

    /// Serves [`TlbSim::router`] on a loopback port.
    ///
    /// Errors: the bind error.
    pub async fn start(&self, transport: Transport) -> std::io::Result<RunningSim> {
        start(self.router(), transport).await
    }
}

/// The community checks of an ITI-38 request (ITI TF-2b 3.38.4.1.2.1, 3.38.4.1.3).
fn check_query_home(req: &AdhocQueryRequest, home: &HomeCommunityId) -> Result<(), RegistryError> {
    let q = req
        .query
        .require_stored_query()
        .map_err(|e| e.to_registry_error())?;
    match &req.query.home {
        Some(h) if h != home => Err(RegistryError::new(
            ErrorCode::XDSUnknownCommunity,
            format!("community {h} is not known here (this is {home})"),
        )
        .at(h.to_string())),
        None if requires_home(q) => Err(RegistryError::new(
            ErrorCode::XDSMissingHomeCommunityId,
            format!("{q} requires the homeCommunityId in AdhocQuery/@home"),
        )),
        _ => Ok(()),
    }
}

async fn iti38(
    State(st): State<TlbState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let tx = Transaction::Iti38;
    let (faults, early) =
        wire::intake(&st.control, Endpoint::Iti38, &method, &uri, &headers, &body).await;
    if let Some(r) = early {
        return r;
    }
    let (h, req) = match wire::read_request::<AdhocQueryRequest>(&st.control, tx, &headers, body) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let home = &st.config.home_community_id;
    let resp = match check_query_home(&req, home) {
        Err(e) => AdhocQueryResponse::new(Vec::new(), vec![e]),
        Ok(()) => run_query(&st.store, &req, Some(home)),
    };
    wire::query_response(tx, &h, resp, &faults)
}

async fn iti39(
    State(st): State<TlbState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let tx = Transaction::Iti39;
    let (faults, early) =
        wire::intake(&st.control, Endpoint::Iti39, &method, &uri, &headers, &body).await;
    if let Some(r) = early {
        return r;
    }
    let (h, req) =
        match wire::read_request::<RetrieveDocumentSetRequest>(&st.control, tx, &headers, body) {
            Ok(x) => x,
            Err(r) => return *r,
        };
    let side = Side::Gateway(st.config.home_community_id.clone());
    let (rr, docs) = retrieve::documents(&st.store, &req, &side);
    wire::retrieve_response(tx, &h, rr, docs, &faults)
}

async fn rad75(
    State(st): State<TlbState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let tx = Transaction::Rad75;
    let (faults, early) =
        wire::intake(&st.control, Endpoint::Rad75, &method, &uri, &headers, &body).await;
    if let Some(r) = early {
        return r;
    }
    let (h, req) = match wire::read_request::<RetrieveImagingDocumentSetRequest>(
        &st.control,
        tx,
        &headers,
        body,
    ) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let side = Side::Gateway(st.config.home_community_id.clone());
    let (rr, docs) = retrieve::instances(&st.store, &req, &side, ErrorCode::XDSIUnknownIdsUid);
    wire::retrieve_response(tx, &h, rr, docs, &faults)
}
