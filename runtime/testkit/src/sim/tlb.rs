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
//!
//! **A platform node** ([`TlbConfig::fronted`]): a node that fronts other communities besides its own
//! (several hospitals behind one responding gateway), each with its own [`Store`], answers ITI-38 per
//! community with IHE CP-ITI-1301's `$targetCommunityIdList` as the Twiin consultation text describes
//! it: absent, every community it answers for; empty, XDSRegistryError; ids it does not know,
//! PartialSuccess with one XDSUnknownCommunity warning per id; the others answered, each object with
//! its own community's `home`. Every list received is recorded ([`TlbSim::target_lists`]). A hostile
//! platform ([`TlbSim::set_ignore_target_list`]) answers for every community whatever the list says.
//! An ITI-39 DocumentRequest goes to the store of its HomeCommunityId (RAD-75 is answered from the
//! node's own store only).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

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
    /// Communities this node fronts besides its own (a platform serving several hospitals), each
    /// answered from its own store (see the module documentation). Empty: only its own.
    pub fronted: Vec<FrontedCommunity>,
}

/// A community behind a platform node ([`TlbConfig::fronted`]).
#[derive(Debug, Clone)]
pub struct FrontedCommunity {
    /// Its homeCommunityId, written as `home` on what is answered from its store.
    pub home_community_id: HomeCommunityId,
    /// Its content.
    pub store: Arc<Store>,
}

impl TlbConfig {
    /// A node with this homeCommunityId, DICOMweb on, empty QIDO answers `204`.
    pub fn new(home_community_id: HomeCommunityId) -> TlbConfig {
        TlbConfig {
            home_community_id,
            dicomweb: true,
            qido_empty: QidoEmpty::default(),
            fronted: Vec::new(),
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
    targets: Arc<TargetState>,
}

/// The `$targetCommunityIdList` record and the hostile switch of a platform node.
#[derive(Debug, Default)]
struct TargetState {
    lists: Mutex<Vec<Option<Vec<String>>>>,
    ignore: AtomicBool,
}

/// Shared state of the routes.
#[derive(Clone)]
pub(crate) struct TlbState {
    pub(crate) store: Arc<Store>,
    pub(crate) control: SimControl,
    pub(crate) config: Arc<TlbConfig>,
    targets: Arc<TargetState>,
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
            targets: Arc::default(),
        }
    }

    /// The `$targetCommunityIdList` of every ITI-38 request received, in order: `None` when it had
    /// none, else its entries as written (an unreadable list is recorded as `Some(["<unreadable>"])`).
    pub fn target_lists(&self) -> Vec<Option<Vec<String>>> {
        self.targets
            .lists
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Forgets the recorded lists.
    pub fn clear_target_lists(&self) {
        self.targets
            .lists
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// A hostile platform: answers ITI-38 for every community it answers for, whatever
    /// `$targetCommunityIdList` says (`false`: honours it, the default).
    pub fn set_ignore_target_list(&self, on: bool) {
        self.targets.ignore.store(on, Ordering::SeqCst);
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
            targets: self.targets.clone(),
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
    let list = req.query.target_communities();
    st.targets
        .lists
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(match &list {
            Ok(l) => l.clone(),
            Err(_) => Some(vec!["<unreadable>".to_owned()]),
        });
    let resp = match check_query_home(&req, home) {
        Err(e) => AdhocQueryResponse::new(Vec::new(), vec![e]),
        Ok(()) if st.config.fronted.is_empty() => run_query(&st.store, &req, Some(home)),
        Ok(()) => platform_query(&st, &req, list),
    };
    wire::query_response(tx, &h, resp, &faults)
}

/// A platform node's ITI-38 answer (see the module documentation).
fn platform_query(
    st: &TlbState,
    req: &AdhocQueryRequest,
    list: Result<Option<Vec<String>>, crate::ihe::query::ParamError>,
) -> AdhocQueryResponse {
    let home = &st.config.home_community_id;
    let mut communities: Vec<(&HomeCommunityId, &Store)> = vec![(home, &*st.store)];
    communities.extend(
        st.config
            .fronted
            .iter()
            .map(|f| (&f.home_community_id, &*f.store)),
    );
    let list = match list {
        Err(e) => return AdhocQueryResponse::new(Vec::new(), vec![e.to_registry_error()]),
        Ok(l) => l,
    };
    let mut warnings = Vec::new();
    let asked: Vec<(&HomeCommunityId, &Store)> = match list {
        _ if st.targets.ignore.load(Ordering::SeqCst) => communities,
        None => communities,
        Some(ids) if ids.is_empty() => {
            return AdhocQueryResponse::new(
                Vec::new(),
                vec![RegistryError::new(
                    ErrorCode::XDSRegistryError,
                    "$targetCommunityIdList is empty",
                )],
            );
        }
        Some(ids) => {
            let mut asked = Vec::new();
            for id in ids {
                match communities
                    .iter()
                    .find(|(h, _)| id.parse::<HomeCommunityId>().ok().as_ref() == Some(*h))
                {
                    Some(c) => asked.push(*c),
                    None => warnings.push(
                        RegistryError::new(
                            ErrorCode::XDSUnknownCommunity,
                            format!("{id} is not a community of this platform"),
                        )
                        .at(id.clone())
                        .warning(),
                    ),
                }
            }
            asked
        }
    };
    let mut inner = req.clone();
    inner.query.set_target_communities(&[]);
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for (h, store) in asked {
        let r = run_query(store, &inner, Some(h));
        objects.extend(r.objects);
        errors.extend(r.errors);
    }
    let partial = !warnings.is_empty();
    errors.extend(warnings);
    let mut resp = AdhocQueryResponse::new(objects, errors);
    if partial && resp.status == crate::ihe::ebrim::ResponseStatus::Success {
        resp.status = crate::ihe::ebrim::ResponseStatus::PartialSuccess;
    }
    resp
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
    let own = &st.config.home_community_id;
    // a platform: each DocumentRequest from the store of the community it names
    let mut groups: Vec<(&HomeCommunityId, &Store, RetrieveDocumentSetRequest)> = Vec::new();
    for d in &req.documents {
        let (h, store) = st
            .config
            .fronted
            .iter()
            .find(|f| d.home_community_id.as_ref() == Some(&f.home_community_id))
            .map_or((own, &*st.store), |f| (&f.home_community_id, &*f.store));
        match groups.iter_mut().find(|(g, _, _)| *g == h) {
            Some((_, _, r)) => r.documents.push(d.clone()),
            None => groups.push((
                h,
                store,
                RetrieveDocumentSetRequest {
                    documents: vec![d.clone()],
                },
            )),
        }
    }
    let mut errors = Vec::new();
    let mut docs = Vec::new();
    for (h, store, r) in groups {
        let (rr, d) = retrieve::documents(store, &r, &Side::Gateway(h.clone()));
        errors.extend(rr.errors);
        docs.extend(d);
    }
    let rr = crate::ihe::retrieve::RegistryResponse::derive(errors, docs.len());
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
