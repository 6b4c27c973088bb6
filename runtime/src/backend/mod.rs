//! Community backends behind one trait, [`Community`]: what the gateway can ask of "a community",
//! whatever it is made of.
//!
//! - [`xds::XdsCommunity`]: an XDS-I.b affinity domain (ITI-18 registry, ITI-43 repositories, RAD-69
//!   imaging document sources);
//! - [`xca::XcaCommunity`]: a remote XCA-I responding gateway, a TLB node or another DUO gateway (ITI-38,
//!   ITI-39, RAD-75);
//! - [`dicomweb`]: a PACS with DICOMweb (QIDO-RS, WADO-RS) presented as an XDS-I.b source.
//!
//! Every call carries a [`CallContext`] (the XUA header blocks to present and the deadline) and fails
//! with a [`BackendError`] that the gateway turns into the RegistryError IHE prescribes
//! (XDSUnavailableCommunity for a community that did not answer in time).

pub mod dicomweb;
pub mod qido;
pub mod soap_client;
pub mod xca;
pub mod xds;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt};

use futures::Stream;

use crate::ihe::mtom::{
    BudgetPermit, BufferBudget, MtomError, RetrieveItem, RetrieveResponseReader,
};
use crate::ihe::query::{AdhocQueryRequest, AdhocQueryResponse};
use crate::ihe::retrieve::{
    DocumentResponseMeta, RegistryResponse, RetrieveDocumentSetRequest,
    RetrieveImagingDocumentSetRequest,
};
use crate::ihe::{ErrorCode, Fault, RegistryError, Transaction};

/// A boxed future, the return type of [`Community`] methods.
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What an outbound call carries besides its body.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// SOAP header blocks to send as they are (the requester's `wsse:Security` with the XUA assertion).
    pub header_blocks: Arc<Vec<String>>,
    /// How long the community may take (ITI-38 fan-out deadline); `None` = the backend's own default.
    pub deadline: Option<Duration>,
}

/// Why a call to a community failed as a whole. Errors inside a well-formed answer (RegistryErrors) are
/// not failures of the call: they arrive in the response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// No answer within the deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connection, TLS or transport failure.
    #[error("transport: {0}")]
    Transport(String),
    /// The peer answered with an HTTP error status and no SOAP fault.
    #[error("HTTP {status}: {reason}")]
    Http {
        /// Status code.
        status: u16,
        /// First bytes of the body or the reason phrase.
        reason: String,
    },
    /// The peer answered with a redirect (HTTP 3xx). Redirects are never followed (issue 12, defect 4):
    /// following one would re-send the request (assertion, BSN) to an address the peer chose, possibly
    /// over plain http. The call is that community's failure.
    #[error("HTTP {status} redirect to {location} refused: redirects are never followed")]
    Redirect {
        /// Status code (300-399).
        status: u16,
        /// The `Location` header as sent (at most 200 characters; `(none)` when absent).
        location: String,
    },
    /// The peer answered with a SOAP fault.
    #[error("{0}")]
    Fault(Fault),
    /// The answer could not be read (not SOAP, not the expected message, malformed MTOM).
    #[error("unreadable answer: {0}")]
    Protocol(String),
    /// The backend cannot do this (e.g. a stored query a DICOMweb PACS cannot answer).
    #[error("not supported: {0}")]
    Unsupported(String),
}

impl BackendError {
    /// The RegistryError an aggregating gateway reports for this failure of `community` during `tx`:
    /// XDSUnavailableCommunity when it did not answer (timeout, transport, HTTP error, redirect), the
    /// registry/repository error of the transaction when it answered wrongly (ITI TF-2b 3.38.4.1.3).
    pub fn to_registry_error(&self, tx: Transaction, community: &str) -> RegistryError {
        let code = match self {
            BackendError::Timeout(_)
            | BackendError::Transport(_)
            | BackendError::Http { .. }
            | BackendError::Redirect { .. } => ErrorCode::XDSUnavailableCommunity,
            BackendError::Unsupported(_) => ErrorCode::XDSUnknownStoredQuery,
            BackendError::Fault(_) | BackendError::Protocol(_) => match tx {
                Transaction::Iti18 | Transaction::Iti38 => ErrorCode::XDSRegistryError,
                _ => ErrorCode::XDSRepositoryError,
            },
        };
        RegistryError::new(code, format!("{community}: {self}")).at(community.to_owned())
    }

    /// [`Self::to_registry_error`] for an answer to another community: the same code, but the text
    /// names only the kind of failure, not internal addresses or messages (those are logged here).
    pub fn to_peer_registry_error(&self, tx: Transaction, community: &str) -> RegistryError {
        tracing::warn!(%tx, %community, error = %self, "local community failed");
        let mut e = self.to_registry_error(tx, community);
        e.code_context = format!(
            "{community}: local community failed ({}); details are in the gateway's log",
            self.label()
        );
        e
    }

    /// Short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            BackendError::Timeout(_) => "timeout",
            BackendError::Transport(_) => "transport",
            BackendError::Http { .. } => "http",
            BackendError::Redirect { .. } => "redirect",
            BackendError::Fault(_) => "fault",
            BackendError::Protocol(_) => "protocol",
            BackendError::Unsupported(_) => "unsupported",
        }
    }
}

/// A retrieve answer being streamed: status, errors and document metadata are known; the contents flow
/// through `items` ([`RetrieveItem::Document`] index, its chunks, [`RetrieveItem::End`], ...).
pub struct RetrieveStream {
    /// Status and errors.
    pub response: RegistryResponse,
    /// Every document that will be delivered, in index order.
    pub documents: Vec<DocumentResponseMeta>,
    /// The contents.
    pub items: BoxStream<'static, Result<RetrieveItem, MtomError>>,
}

impl std::fmt::Debug for RetrieveStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetrieveStream")
            .field("response", &self.response)
            .field("documents", &self.documents.len())
            .finish()
    }
}

impl RetrieveStream {
    /// A stream from a response being read from a peer.
    pub fn from_reader(r: RetrieveResponseReader) -> RetrieveStream {
        RetrieveStream {
            response: r.registry_response().clone(),
            documents: r.documents().to_vec(),
            items: r.into_items().boxed(),
        }
    }

    /// No documents, only errors (status derived: Failure when there is an Error).
    pub fn errors(errors: Vec<RegistryError>) -> RetrieveStream {
        RetrieveStream {
            response: RegistryResponse::derive(errors, 0),
            documents: Vec::new(),
            items: stream::empty().boxed(),
        }
    }

    /// Concatenates several answers into one (documents re-indexed, contents in order, errors joined,
    /// status derived from all errors and documents), adding `extra_errors` (e.g. for requests that were
    /// not sent anywhere). Streams are consumed one after the other: only one is read at a time.
    pub fn combine(parts: Vec<RetrieveStream>, extra_errors: Vec<RegistryError>) -> RetrieveStream {
        let mut errors = extra_errors;
        let mut documents = Vec::new();
        let mut streams = Vec::new();
        for p in parts {
            let offset = documents.len();
            errors.extend(p.response.errors);
            documents.extend(p.documents);
            streams.push(p.items.map(move |it| match it {
                Ok(RetrieveItem::Document(i)) => Ok(RetrieveItem::Document(i + offset)),
                Ok(RetrieveItem::Failed(i, why)) => Ok(RetrieveItem::Failed(i + offset, why)),
                other => other,
            }));
        }
        let n = documents.len();
        RetrieveStream {
            response: RegistryResponse::derive(errors, n),
            documents,
            items: stream::iter(streams).flatten().boxed(),
        }
    }

    /// Ties the answer to the question: a document the answer lists that was not asked for (by its
    /// DocumentUniqueId), or lists twice, is left out with its content, as an XDSRepositoryError
    /// located at that id; a document asked for that the answer neither lists nor names in an error
    /// gets an XDSDocumentUniqueIdError (ITI TF-2b 3.43.4.2.3). `who` names the community in the
    /// errors. Status derived again.
    pub fn tied_to(self, asked: &[String], who: &str) -> RetrieveStream {
        use std::collections::HashSet;
        let asked_set: HashSet<&str> = asked.iter().map(String::as_str).collect();
        let mut seen: HashSet<String> = HashSet::new();
        let mut errors = self.response.errors;
        let mut map: Vec<Option<usize>> = Vec::with_capacity(self.documents.len());
        let mut documents = Vec::new();
        for meta in self.documents {
            let uid = meta.document_unique_id.clone();
            if !asked_set.contains(uid.as_str()) || !seen.insert(uid.clone()) {
                errors.push(
                    RegistryError::new(
                        ErrorCode::XDSRepositoryError,
                        format!(
                            "{who}: returned document {} that was not asked for (or twice); left out",
                            crate::ihe::soap::echoed(&uid)
                        ),
                    )
                    .at(crate::ihe::soap::echoed(&uid)),
                );
                map.push(None);
            } else {
                map.push(Some(documents.len()));
                documents.push(meta);
            }
        }
        for uid in asked {
            let named = errors
                .iter()
                .any(|e| e.location.as_deref() == Some(uid.as_str()));
            if !seen.contains(uid) && !named {
                errors.push(
                    RegistryError::new(
                        ErrorCode::XDSDocumentUniqueIdError,
                        format!("{who}: did not return document {uid} nor an error for it"),
                    )
                    .at(uid.clone()),
                );
            }
        }
        let response = RegistryResponse::derive(errors, documents.len());
        RetrieveStream {
            response,
            documents,
            items: reindex(self.items, Arc::new(map)).boxed(),
        }
    }

    /// Prefixes the reason of every [`RetrieveItem::Failed`] with `who` (the community), so that the
    /// errors made of them name it.
    pub fn labelled(self, who: &str) -> RetrieveStream {
        let who = who.to_owned();
        RetrieveStream {
            items: self
                .items
                .map(move |it| match it {
                    Ok(RetrieveItem::Failed(i, why)) => {
                        Ok(RetrieveItem::Failed(i, format!("{who}: {why}")))
                    }
                    other => other,
                })
                .boxed(),
            ..self
        }
    }

    /// Bounds the delivery of the contents by `until` (the community's deadline, counted from the
    /// call): when it passes, the document being delivered and every one not started become
    /// [`RetrieveItem::Failed`] ("no complete answer within {deadline:?}") and the source is dropped,
    /// which closes the peer's connection. A peer that drips its answer keeps nobody waiting past
    /// the deadline.
    pub fn with_deadline(self, until: tokio::time::Instant, deadline: Duration) -> RetrieveStream {
        struct St {
            inner: Option<BoxStream<'static, Result<RetrieveItem, MtomError>>>,
            started: Vec<bool>,
            current: Option<usize>,
            queue: std::collections::VecDeque<Result<RetrieveItem, MtomError>>,
        }
        let st = St {
            inner: Some(self.items),
            started: vec![false; self.documents.len()],
            current: None,
            queue: Default::default(),
        };
        let items = stream::unfold(st, move |mut st| async move {
            if let Some(it) = st.queue.pop_front() {
                return Some((it, st));
            }
            let inner = st.inner.as_mut()?;
            match tokio::time::timeout_at(until, inner.next()).await {
                Ok(None) => None,
                Ok(Some(it)) => {
                    match &it {
                        Ok(RetrieveItem::Document(i)) => {
                            if let Some(s) = st.started.get_mut(*i) {
                                *s = true;
                            }
                            st.current = Some(*i);
                        }
                        Ok(RetrieveItem::End) => st.current = None,
                        Ok(RetrieveItem::Failed(i, _)) => {
                            if let Some(s) = st.started.get_mut(*i) {
                                *s = true;
                            }
                            if st.current == Some(*i) {
                                st.current = None;
                            }
                        }
                        _ => {}
                    }
                    Some((it, st))
                }
                Err(_) => {
                    st.inner = None;
                    let why = format!("no complete answer within the deadline of {deadline:?}");
                    if let Some(c) = st.current.take() {
                        st.queue.push_back(Ok(RetrieveItem::Failed(c, why.clone())));
                    }
                    for (i, s) in st.started.iter().enumerate() {
                        if !s {
                            st.queue.push_back(Ok(RetrieveItem::Failed(i, why.clone())));
                        }
                    }
                    let first = st.queue.pop_front()?;
                    Some((first, st))
                }
            }
        });
        RetrieveStream {
            items: items.boxed(),
            ..self
        }
    }

    /// Reads ahead before anything is sent, so that the answer's root can tell the truth: items are
    /// pulled and kept until the source ends or `budget` runs out.
    ///
    /// * The source ended ([`LookAhead::complete`]): every document's fate is known. The stream that
    ///   comes back lists only the documents delivered whole; each other one is an XDSRepositoryError
    ///   located at its DocumentUniqueId (its reason from [`RetrieveItem::Failed`], or "no content"),
    ///   and the status is derived from errors and documents (PartialSuccess or Failure, ITI TF-2b
    ///   3.43.4.2.3). Nothing can fail after the first byte.
    /// * The budget ran out first: documents that failed so far are left out and reported the same
    ///   way; the rest are listed and stream on from where the look-ahead stopped (what fails later
    ///   ends up in the writer's final-status part, [`crate::ihe::mtom::RetrieveResponseWriter`]).
    ///
    /// An error of the source ends it: the document being read and those not started fail with it.
    /// The bytes kept are held from `budget` until the writer has taken them.
    pub async fn look_ahead(self, budget: &LookaheadBudget) -> LookAhead {
        #[derive(Clone, Copy, PartialEq, Eq)]
        enum Doc {
            Pending,
            Open,
            Done,
            Failed,
        }
        let n = self.documents.len();
        let mut docs = vec![Doc::Pending; n];
        let mut reasons: Vec<Option<String>> = vec![None; n];
        let mut kept: Vec<RetrieveItem> = Vec::new();
        let mut held = BudgetPermit::default();
        let mut items = self.items;
        let mut current: Option<usize> = None;
        let mut complete = false;
        let mut fail = |docs: &mut Vec<Doc>, i: usize, why: String| {
            if i < docs.len() && docs[i] != Doc::Failed {
                docs[i] = Doc::Failed;
                reasons[i] = Some(why);
            }
        };
        loop {
            let Some(it) = items.next().await else {
                complete = true;
                break;
            };
            let it = match it {
                Ok(it) => it,
                Err(e) => {
                    let why = format!("its source failed: {e}");
                    for i in 0..n {
                        if matches!(docs[i], Doc::Pending | Doc::Open) {
                            fail(&mut docs, i, why.clone());
                        }
                    }
                    complete = true;
                    break;
                }
            };
            let mut size = 0;
            match &it {
                RetrieveItem::Document(i) => {
                    if let Some(c) = current.take() {
                        fail(&mut docs, c, "its source did not end it".into());
                    }
                    match docs.get(*i) {
                        Some(Doc::Pending) => {
                            docs[*i] = Doc::Open;
                            current = Some(*i);
                        }
                        _ => {
                            // an unknown or repeated index: the source is out of order
                            let why = format!("its source is out of order (document {i})");
                            for j in 0..n {
                                if matches!(docs[j], Doc::Pending | Doc::Open) {
                                    fail(&mut docs, j, why.clone());
                                }
                            }
                            complete = true;
                            break;
                        }
                    }
                }
                RetrieveItem::Chunk(b) => size = b.len(),
                RetrieveItem::End => {
                    if let Some(c) = current.take() {
                        docs[c] = Doc::Done;
                    }
                }
                RetrieveItem::Failed(i, why) => {
                    fail(&mut docs, *i, why.clone());
                    if current == Some(*i) {
                        current = None;
                    }
                }
            }
            kept.push(it);
            if size > 0 && !budget.take(&mut held, size) {
                break;
            }
        }
        if complete {
            if let Some(c) = current.take() {
                fail(&mut docs, c, "its source did not end it".into());
            }
            for i in 0..n {
                if docs[i] == Doc::Pending {
                    fail(&mut docs, i, "its source gave it no content".into());
                }
            }
        }
        // the documents that stay listed, re-indexed; the failed ones become errors
        let mut map: Vec<Option<usize>> = vec![None; n];
        let mut documents = Vec::new();
        let mut errors = self.response.errors;
        for (i, meta) in self.documents.into_iter().enumerate() {
            if docs[i] == Doc::Failed {
                let why = reasons[i].take().unwrap_or_default();
                errors.push(
                    RegistryError::new(
                        ErrorCode::XDSRepositoryError,
                        format!("document {} not delivered: {why}", meta.document_unique_id),
                    )
                    .at(meta.document_unique_id.clone()),
                );
            } else {
                map[i] = Some(documents.len());
                documents.push(meta);
            }
        }
        let response = RegistryResponse::derive(errors, documents.len());
        let map = Arc::new(map);
        let kept = reindex(stream::iter(kept.into_iter().map(Ok)), map.clone());
        // the kept bytes go back to the budget once the writer has taken them all
        let release = stream::once(async move {
            drop(held);
        })
        .filter_map(|()| async { None });
        let kept = kept.chain(release);
        let items = if complete {
            kept.boxed()
        } else {
            kept.chain(reindex(items, map)).boxed()
        };
        LookAhead {
            stream: RetrieveStream {
                response,
                documents,
                items,
            },
            complete,
        }
    }
}

/// Items re-indexed through `map` (old index → new); items of documents mapped to nothing (left out
/// of the answer) are dropped, from their `Document` to their `End` or `Failed`.
fn reindex<S>(
    items: S,
    map: Arc<Vec<Option<usize>>>,
) -> impl Stream<Item = Result<RetrieveItem, MtomError>> + Send
where
    S: Stream<Item = Result<RetrieveItem, MtomError>> + Send,
{
    items
        .scan(false, move |skipping, it| {
            let out = match it {
                Ok(RetrieveItem::Document(i)) => match map.get(i).copied().flatten() {
                    Some(j) => {
                        *skipping = false;
                        Some(Ok(RetrieveItem::Document(j)))
                    }
                    None => {
                        *skipping = true;
                        None
                    }
                },
                Ok(RetrieveItem::Chunk(b)) => (!*skipping).then_some(Ok(RetrieveItem::Chunk(b))),
                Ok(RetrieveItem::End) => {
                    let was = std::mem::replace(skipping, false);
                    (!was).then_some(Ok(RetrieveItem::End))
                }
                Ok(RetrieveItem::Failed(i, why)) => match map.get(i).copied().flatten() {
                    Some(j) => Some(Ok(RetrieveItem::Failed(j, why))),
                    None => {
                        *skipping = false;
                        None
                    }
                },
                Err(e) => Some(Err(e)),
            };
            futures::future::ready(Some(out))
        })
        .filter_map(futures::future::ready)
}

/// What [`RetrieveStream::look_ahead`] gives back.
#[derive(Debug)]
pub struct LookAhead {
    /// The answer to write: its root lists what is delivered, or still may be.
    pub stream: RetrieveStream,
    /// Whether the source was read to its end: every document in `stream` is then whole in memory and
    /// nothing can fail after the first byte.
    pub complete: bool,
}

/// How much one request may read ahead ([`RetrieveStream::look_ahead`]): its own allowance, shared by
/// the communities of the request, and the gateway's [`BufferBudget`] shared by every request.
#[derive(Debug, Clone)]
pub struct LookaheadBudget {
    remaining: Arc<std::sync::atomic::AtomicUsize>,
    shared: Option<BufferBudget>,
}

impl LookaheadBudget {
    /// `per_request` bytes for one request, each also taken from `shared` when given.
    pub fn new(per_request: usize, shared: Option<BufferBudget>) -> LookaheadBudget {
        LookaheadBudget {
            remaining: Arc::new(std::sync::atomic::AtomicUsize::new(per_request)),
            shared,
        }
    }

    /// Takes `n` bytes into `held`; `false` (nothing taken) when the request's allowance or the
    /// gateway's budget has fewer left.
    pub fn take(&self, held: &mut BudgetPermit, n: usize) -> bool {
        use std::sync::atomic::Ordering;
        let ok = self
            .remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| r.checked_sub(n))
            .is_ok();
        if !ok {
            return false;
        }
        if let Some(b) = &self.shared
            && !b.take_into(held, n)
        {
            self.remaining.fetch_add(n, Ordering::AcqRel);
            return false;
        }
        true
    }
}

/// One community as the gateway sees it. Implementations are cheap to share (`Arc<dyn Community>`).
pub trait Community: Send + Sync {
    /// A stored query (ITI-18 semantics; sent as ITI-38 to a remote gateway). The answer's objects carry
    /// `home` when the community sets it.
    fn query(
        &self,
        ctx: CallContext,
        req: AdhocQueryRequest,
    ) -> BoxFut<'_, Result<AdhocQueryResponse, BackendError>>;

    /// Retrieve Document Set (ITI-43 semantics; ITI-39 to a remote gateway), streamed.
    fn retrieve(
        &self,
        ctx: CallContext,
        req: RetrieveDocumentSetRequest,
    ) -> BoxFut<'_, Result<RetrieveStream, BackendError>>;

    /// Retrieve Imaging Document Set (RAD-69 semantics; RAD-75 to a remote gateway), streamed.
    fn retrieve_images(
        &self,
        ctx: CallContext,
        req: RetrieveImagingDocumentSetRequest,
    ) -> BoxFut<'_, Result<RetrieveStream, BackendError>>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn part(docs: &[&str], errors: Vec<RegistryError>) -> RetrieveStream {
        let documents: Vec<DocumentResponseMeta> = docs
            .iter()
            .map(|d| DocumentResponseMeta {
                document_unique_id: (*d).into(),
                ..Default::default()
            })
            .collect();
        let mut items = Vec::new();
        for (i, d) in docs.iter().enumerate() {
            items.push(Ok(RetrieveItem::Document(i)));
            items.push(Ok(RetrieveItem::Chunk(Bytes::from(d.to_string()))));
            items.push(Ok(RetrieveItem::End));
        }
        RetrieveStream {
            response: RegistryResponse::derive(errors.clone(), docs.len()),
            documents,
            items: stream::iter(items).boxed(),
        }
    }

    #[tokio::test]
    async fn combine_reindexes_and_derives_status() {
        let a = part(&["a1", "a2"], vec![]);
        let b = part(
            &["b1"],
            vec![RegistryError::new(ErrorCode::XDSDocumentUniqueIdError, "x")],
        );
        let c = RetrieveStream::combine(vec![a, b], vec![]);
        assert_eq!(c.documents.len(), 3);
        assert_eq!(
            c.response.status,
            crate::ihe::ResponseStatus::PartialSuccess
        );
        let items: Vec<_> = c.items.collect().await;
        let docs: Vec<usize> = items
            .iter()
            .filter_map(|i| match i {
                Ok(RetrieveItem::Document(n)) => Some(*n),
                _ => None,
            })
            .collect();
        assert_eq!(docs, vec![0, 1, 2]);
        let none = RetrieveStream::combine(
            vec![],
            vec![RegistryError::new(ErrorCode::XDSUnknownCommunity, "y")],
        );
        assert_eq!(none.response.status, crate::ihe::ResponseStatus::Failure);
    }

    #[test]
    fn unavailable_community_code() {
        let e = BackendError::Timeout(Duration::from_millis(5))
            .to_registry_error(Transaction::Iti38, "urn:oid:1.2");
        assert_eq!(e.error_code, ErrorCode::XDSUnavailableCommunity);
        assert_eq!(e.location.as_deref(), Some("urn:oid:1.2"));
    }
}
