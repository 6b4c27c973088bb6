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

use crate::ihe::mtom::{MtomError, RetrieveItem, RetrieveResponseReader};
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
