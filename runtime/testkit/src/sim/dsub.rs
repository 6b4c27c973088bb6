//! A DSUB Document Metadata Notification Broker for the XDS simulator (IHE ITI TF-2b 3.52, 3.53):
//! ITI-52 Subscribe in, ITI-53 Notify out, over one [`Store`].
//!
//! - `POST /broker/iti52` ([`paths::ITI52`]): a SOAP 1.2 `wsnt:Subscribe` with action
//!   [`SUBSCRIBE_ACTION`] is kept (consumer address, topic, query) and answered with a
//!   `wsnt:SubscribeResponse` whose SubscriptionReference is `<base>/broker/subscription/<n>`. Refused
//!   with a SOAP fault: another action, an unreadable body, a topic other than `ihe:FullDocumentEntry`
//!   or `ihe:MinimalDocumentEntry`, a query other than the two DocumentEntry subscription queries.
//! - Every DocumentEntry registered in the store after a subscription ([`Store::watch`]) is sent to it
//!   as an ITI-53 `wsnt:Notify` (topic full DocumentEntry; entries registered together go in one
//!   Notify) over mutual TLS with the broker's identity, re-sent every `retry` until the recipient
//!   answers 2xx. Patient-dependent subscriptions get only their patient's entries. A consumer that
//!   subscribes again (renewal) replaces its subscription.
//!
//! [`BrokerStats`] counts subscriptions, delivered notifications and refused attempts.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;

use crate::ihe::dsub::{
    NOTIFY_ACTION, Notify, QUERY_DOCUMENT_ENTRY, QUERY_PATIENT_INDEPENDENT_DOCUMENT_ENTRY,
    SUBSCRIBE_ACTION, SUBSCRIBE_RESPONSE_ACTION, Subscribe, SubscribeResponse,
    TOPIC_FULL_DOCUMENT_ENTRY, TOPIC_MINIMAL_DOCUMENT_ENTRY,
};
use crate::ihe::soap::{SoapHeader, write_fault};
use crate::ihe::{Fault, FaultCode, read_soap, write_soap};
use crate::model::DocumentEntry;
use crate::tls::{OutboundClient, TlsMaterial};
use crate::xml::Limits;

use super::serve::{RunningSim, Transport, start_on};
use super::store::Store;
use super::wire::MAX_REQUEST_BYTES;

/// The routes of [`Broker::router`].
pub mod paths {
    /// ITI-52 Document Metadata Subscribe.
    pub const ITI52: &str = "/broker/iti52";
}

/// Deadline of one delivery attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// One kept subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerSubscription {
    /// `<base>/broker/subscription/<n>`.
    pub reference: String,
    /// Where notifications go (`wsnt:ConsumerReference`).
    pub consumer: String,
    /// The topic asked.
    pub topic: String,
    /// The patient of a patient-dependent subscription (the `$XDSDocumentEntryPatientId` CX, quotes
    /// removed); `None` for a patient-independent one.
    pub patient_id: Option<String>,
}

/// Counters of a [`Broker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BrokerStats {
    /// Subscriptions accepted.
    pub subscriptions: u64,
    /// Notify requests answered 2xx.
    pub delivered: u64,
    /// Notify attempts refused (non-2xx) or not answered; each was re-sent.
    pub failed_attempts: u64,
    /// Notifications not yet delivered.
    pub pending: u64,
}

struct Inner {
    store: Arc<Store>,
    client: OutboundClient,
    retry: Duration,
    subscriptions: Mutex<Vec<BrokerSubscription>>,
    base_url: Mutex<String>,
    subscribed: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    pending: AtomicU64,
    /// Entries registered and not yet made notifications.
    queued: Arc<AtomicU64>,
    /// Deliveries wait while set ([`Broker::hold`]).
    held: std::sync::atomic::AtomicBool,
}

/// The broker. Clones share state.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Broker {
    /// A broker over `store` that presents `identity` when it delivers and re-sends a refused
    /// notification every `retry`.
    ///
    /// Errors: the identity cannot make a TLS client.
    pub fn new(
        store: Arc<Store>,
        identity: &TlsMaterial,
        retry: Duration,
    ) -> Result<Broker, String> {
        let client = identity
            .http_client(Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        Ok(Broker {
            inner: Arc::new(Inner {
                store,
                client,
                retry,
                subscriptions: Mutex::new(Vec::new()),
                base_url: Mutex::new(String::new()),
                subscribed: AtomicU64::new(0),
                delivered: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                pending: AtomicU64::new(0),
                queued: Arc::new(AtomicU64::new(0)),
                held: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// The routes of [`paths`].
    pub fn router(&self) -> Router {
        Router::new()
            .route(paths::ITI52, post(iti52))
            .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
            .with_state(self.clone())
    }

    /// Serves [`Broker::router`] on a loopback port and starts notifying (entries registered from now
    /// on). Errors: the bind error.
    pub async fn start(&self, transport: Transport) -> std::io::Result<RunningSim> {
        self.start_on(std::net::SocketAddr::from(([127, 0, 0, 1], 0)), transport)
            .await
    }

    /// [`Broker::start`] on `addr` (e.g. a port a gateway was told of before the broker was up).
    /// Errors: the bind error.
    pub async fn start_on(
        &self,
        addr: std::net::SocketAddr,
        transport: Transport,
    ) -> std::io::Result<RunningSim> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<DocumentEntry>();
        let queued = self.inner.queued.clone();
        self.inner.store.watch(move |e| {
            // counted before it is queued, so that `settled` cannot miss it
            queued.fetch_add(1, Ordering::SeqCst);
            let _ = tx.send(e.clone());
        });
        let sim = start_on(addr, self.router(), transport).await?;
        *self
            .inner
            .base_url
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = sim.base_url().replace("127.0.0.1", "localhost");
        let me = self.clone();
        let token = sim.shutdown_token();
        tokio::spawn(async move {
            loop {
                let first = tokio::select! {
                    _ = token.cancelled() => return,
                    e = rx.recv() => match e { Some(e) => e, None => return },
                };
                // entries registered together (a study's manifest and report) go in one Notify
                tokio::time::sleep(Duration::from_millis(20)).await;
                let mut batch = vec![first];
                while let Ok(e) = rx.try_recv() {
                    batch.push(e);
                }
                me.publish(&batch, &token);
                me.inner
                    .queued
                    .fetch_sub(batch.len() as u64, Ordering::SeqCst);
            }
        });
        Ok(sim)
    }

    /// The ITI-52 endpoint of the running broker, `https://localhost:<port>/broker/iti52` (its
    /// certificate names `localhost`); empty before [`Broker::start`].
    pub fn subscribe_url(&self) -> String {
        let base = self
            .inner
            .base_url
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if base.is_empty() {
            base
        } else {
            format!("{base}{}", paths::ITI52)
        }
    }

    /// Holds every delivery (`true`) until released (`false`): notifications made meanwhile wait,
    /// pending, and go out on release. Lets a test or the demo look at the world between a study's
    /// publication and its notification.
    pub fn hold(&self, held: bool) {
        self.inner.held.store(held, Ordering::SeqCst);
    }

    /// The subscriptions kept.
    pub fn subscriptions(&self) -> Vec<BrokerSubscription> {
        self.inner
            .subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The counters.
    pub fn stats(&self) -> BrokerStats {
        BrokerStats {
            subscriptions: self.inner.subscribed.load(Ordering::SeqCst),
            delivered: self.inner.delivered.load(Ordering::SeqCst),
            failed_attempts: self.inner.failed.load(Ordering::SeqCst),
            pending: self.inner.pending.load(Ordering::SeqCst),
        }
    }

    /// Waits until every entry registered so far was made a notification and none is pending
    /// (polling every 20 ms).
    pub async fn settled(&self) {
        while self.inner.queued.load(Ordering::SeqCst) > 0
            || self.inner.pending.load(Ordering::SeqCst) > 0
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn publish(&self, entries: &[DocumentEntry], token: &tokio_util::sync::CancellationToken) {
        for s in self.subscriptions() {
            let mine: Vec<DocumentEntry> = entries
                .iter()
                .filter(|e| {
                    s.patient_id
                        .as_deref()
                        .is_none_or(|p| super::store::same_patient(p, &e.patient_id))
                })
                .cloned()
                .collect();
            if mine.is_empty() {
                continue;
            }
            let base = self
                .inner
                .base_url
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let notify = Notify::full(&s.reference, Some(&base), &mine);
            let body = write_soap(
                &SoapHeader::request(NOTIFY_ACTION, Some(&s.consumer)),
                &notify,
            );
            self.inner.pending.fetch_add(1, Ordering::SeqCst);
            let me = self.clone();
            let token = token.clone();
            tokio::spawn(async move {
                loop {
                    while me.inner.held.load(Ordering::SeqCst) {
                        tokio::select! {
                            _ = token.cancelled() => break,
                            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                        }
                    }
                    if token.is_cancelled() {
                        break;
                    }
                    let sent = me
                        .inner
                        .client
                        .post(&s.consumer)
                        .timeout(ATTEMPT_TIMEOUT)
                        .header(
                            reqwest::header::CONTENT_TYPE,
                            format!(
                                "application/soap+xml; charset=UTF-8; action=\"{NOTIFY_ACTION}\""
                            ),
                        )
                        .body(body.clone())
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status().is_success() => {
                            me.inner.delivered.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        Ok(r) => {
                            me.inner.failed.fetch_add(1, Ordering::SeqCst);
                            tracing::info!(consumer = s.consumer, status = %r.status(), "ITI-53 refused; re-sending");
                        }
                        Err(e) => {
                            me.inner.failed.fetch_add(1, Ordering::SeqCst);
                            tracing::info!(consumer = s.consumer, error = %e, "ITI-53 not delivered; re-sending");
                        }
                    }
                    tokio::select! {
                        _ = token.cancelled() => break,
                        _ = tokio::time::sleep(me.inner.retry) => {}
                    }
                }
                me.inner.pending.fetch_sub(1, Ordering::SeqCst);
            });
        }
    }
}

fn soap_fault(code: FaultCode, reason: String, status: StatusCode) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/soap+xml; charset=UTF-8")],
        write_fault(
            &Fault {
                code,
                subcode: None,
                reason,
            },
            None,
        ),
    )
        .into_response()
}

async fn iti52(State(b): State<Broker>, _headers: HeaderMap, body: Bytes) -> Response {
    let bad = |reason: String| soap_fault(FaultCode::Sender, reason, StatusCode::BAD_REQUEST);
    let (h, s): (SoapHeader, Subscribe) = match read_soap(&body, &Limits::default()) {
        Ok(x) => x,
        Err(e) => return bad(e.to_fault().reason),
    };
    if h.action.trim() != SUBSCRIBE_ACTION {
        return bad(format!("this endpoint serves ITI-52 ({SUBSCRIBE_ACTION})"));
    }
    if s.topic != TOPIC_FULL_DOCUMENT_ENTRY && s.topic != TOPIC_MINIMAL_DOCUMENT_ENTRY {
        return bad(format!("topic {:?} is not a DocumentEntry topic", s.topic));
    }
    let patient_id = match s.query.id.as_str() {
        QUERY_PATIENT_INDEPENDENT_DOCUMENT_ENTRY => None,
        QUERY_DOCUMENT_ENTRY => match s
            .query
            .slots
            .iter()
            .find(|x| x.name == "$XDSDocumentEntryPatientId")
            .and_then(|x| x.values.first())
        {
            Some(v) => Some(v.trim().trim_matches('\'').to_owned()),
            None => {
                return bad("SubscriptionForDocumentEntry needs $XDSDocumentEntryPatientId".into());
            }
        },
        other => return bad(format!("subscription query {other:?} is not supported")),
    };
    if !(s.consumer.starts_with("https://") || s.consumer.starts_with("http://")) {
        return bad(format!(
            "consumer {:?} is not an http(s) address",
            s.consumer
        ));
    }
    // a consumer subscribing again (a renewal, a changed configuration) replaces its subscription
    let n = b.inner.subscribed.fetch_add(1, Ordering::SeqCst) + 1;
    let base = b
        .inner
        .base_url
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let reference = format!("{base}/broker/subscription/{n}");
    let mut subs = b
        .inner
        .subscriptions
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    subs.retain(|x| x.consumer != s.consumer);
    subs.push(BrokerSubscription {
        reference: reference.clone(),
        consumer: s.consumer.clone(),
        topic: s.topic.clone(),
        patient_id,
    });
    drop(subs);
    let resp = SubscribeResponse {
        subscription_reference: reference,
        current_time: Some(jiff::Timestamp::now().to_string()),
        termination_time: s.initial_termination_time.clone(),
    };
    (
        [(header::CONTENT_TYPE, "application/soap+xml; charset=UTF-8")],
        write_soap(&SoapHeader::response(SUBSCRIBE_RESPONSE_ACTION, &h), &resp),
    )
        .into_response()
}
