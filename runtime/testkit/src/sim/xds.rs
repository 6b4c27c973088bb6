//! An XDS-I.b affinity domain simulator: Document Registry (ITI-18), Document Repositories (ITI-43)
//! and Imaging Document Sources (RAD-69) over one [`Store`], as an axum [`Router`].
//!
//! Routes ([`paths`]), all `POST`, SOAP 1.2 request as plain `application/soap+xml` or MTOM (root part
//! only; ITI TF-2 V.3.6):
//!
//! | Path | Transaction | Answers from |
//! |---|---|---|
//! | `/registry/iti18` | ITI-18 Registry Stored Query | the registered DocumentEntries |
//! | `/repository/iti43` | ITI-43 Retrieve Document Set | every repository of the store, by RepositoryUniqueId |
//! | `/ids/rad69` | RAD-69 Retrieve Imaging Document Set | every imaging document source of the store, by RepositoryUniqueId (the source's uniqueId) |
//!
//! Query answers are plain SOAP; retrieve answers MTOM with one part per document or instance, streamed
//! (unless a [`Faults`](super::faults::Faults) quirk says otherwise). A request that cannot be read, or
//! whose `wsa:Action` does not belong to the endpoint, gets a SOAP fault.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use axum::routing::post;
use bytes::Bytes;

use crate::ihe::ebrim::ErrorCode;
use crate::ihe::query::AdhocQueryRequest;
use crate::ihe::retrieve::{RetrieveDocumentSetRequest, RetrieveImagingDocumentSetRequest};
use crate::ihe::soap::Transaction;
use crate::model::HomeCommunityId;

use super::faults::{Endpoint, SimControl};
use super::registry;
use super::retrieve::{self, Side};
use super::serve::{RunningSim, Transport, start};
use super::store::Store;
use super::wire::{self, MAX_REQUEST_BYTES};

/// The routes of [`XdsSim::router`].
pub mod paths {
    /// ITI-18 Registry Stored Query.
    pub const ITI18: &str = "/registry/iti18";
    /// ITI-43 Retrieve Document Set.
    pub const ITI43: &str = "/repository/iti43";
    /// RAD-69 Retrieve Imaging Document Set.
    pub const RAD69: &str = "/ids/rad69";
}

/// Settings of an affinity domain simulator.
#[derive(Debug, Clone, Default)]
pub struct XdsConfig {
    /// When set, the registry writes this `home` on every object it returns (registries that know their
    /// community do, CP-429); when `None` (the common case for an XDS registry) objects carry no `home`.
    pub home_community_id: Option<HomeCommunityId>,
}

/// An XDS-I.b affinity domain simulator. Clones share store and control.
#[derive(Debug, Clone)]
pub struct XdsSim {
    /// The community's content; seed it with [`super::seed`] or the [`Store`] methods, also while serving.
    pub store: Arc<Store>,
    /// Fault injection and request log.
    pub control: SimControl,
    config: Arc<XdsConfig>,
}

#[derive(Clone)]
struct St {
    store: Arc<Store>,
    control: SimControl,
    config: Arc<XdsConfig>,
}

impl XdsSim {
    /// A simulator with an empty store.
    pub fn new(config: XdsConfig) -> XdsSim {
        XdsSim::with_store(config, Arc::new(Store::new()))
    }

    /// A simulator over an existing store.
    pub fn with_store(config: XdsConfig, store: Arc<Store>) -> XdsSim {
        XdsSim {
            store,
            control: SimControl::new(),
            config: Arc::new(config),
        }
    }

    /// The settings.
    pub fn config(&self) -> &XdsConfig {
        &self.config
    }

    /// The routes of [`paths`], request bodies up to [`MAX_REQUEST_BYTES`].
    pub fn router(&self) -> Router {
        let st = St {
            store: self.store.clone(),
            control: self.control.clone(),
            config: self.config.clone(),
        };
        Router::new()
            .route(paths::ITI18, post(iti18))
            .route(paths::ITI43, post(iti43))
            .route(paths::RAD69, post(rad69))
            .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
            .with_state(st)
    }

    /// Serves [`XdsSim::router`] on a loopback port.
    ///
    /// Errors: the bind error.
    pub async fn start(&self, transport: Transport) -> std::io::Result<RunningSim> {
        start(self.router(), transport).await
    }
}

async fn iti18(
    State(st): State<St>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let tx = Transaction::Iti18;
    let (faults, early) =
        wire::intake(&st.control, Endpoint::Iti18, &method, &uri, &headers, &body).await;
    if let Some(r) = early {
        return r;
    }
    let (h, req) = match wire::read_request::<AdhocQueryRequest>(&st.control, tx, &headers, body) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let resp = registry::run_query(&st.store, &req, st.config.home_community_id.as_ref());
    wire::query_response(tx, &h, resp, &faults)
}

async fn iti43(
    State(st): State<St>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let tx = Transaction::Iti43;
    let (faults, early) =
        wire::intake(&st.control, Endpoint::Iti43, &method, &uri, &headers, &body).await;
    if let Some(r) = early {
        return r;
    }
    let (h, req) =
        match wire::read_request::<RetrieveDocumentSetRequest>(&st.control, tx, &headers, body) {
            Ok(x) => x,
            Err(r) => return *r,
        };
    let (rr, docs) = retrieve::documents(&st.store, &req, &Side::Local);
    wire::retrieve_response(tx, &h, rr, docs, &faults)
}

async fn rad69(
    State(st): State<St>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let tx = Transaction::Rad69;
    let (faults, early) =
        wire::intake(&st.control, Endpoint::Rad69, &method, &uri, &headers, &body).await;
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
    let (rr, docs) = retrieve::instances(
        &st.store,
        &req,
        &Side::Local,
        ErrorCode::XDSUnknownRepositoryId,
    );
    wire::retrieve_response(tx, &h, rr, docs, &faults)
}
