//! A hostile peer community for the relay tests: an XCA responding gateway over plain HTTP on loopback
//! that answers ITI-39 and RAD-75 with the answer a test prepared for the documents asked (damaged,
//! dripping, stalling or huge), and ITI-38 with entries of other patients.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use axum::routing::post;
use base64::Engine as _;
use bytes::Bytes;
use duo_runtime::ihe::ebrim::{Identifiable, ObjectRef};
use duo_runtime::ihe::mtom::{self, MtomLimits};
use duo_runtime::ihe::query::{AdhocQueryRequest, AdhocQueryResponse, ReturnType};
use duo_runtime::ihe::retrieve::{RetrieveDocumentSetRequest, RetrieveImagingDocumentSetRequest};
use duo_runtime::ihe::soap::{SoapHeader, Transaction};
use duo_runtime::ihe::{read_soap, write_soap};
use duo_runtime::xml::Limits;
use futures::StreamExt;

/// How the peer sends a prepared answer.
#[derive(Debug, Clone)]
pub enum Send {
    /// The whole body at once (`Content-Length` when `declared`, else chunked in 8 KiB pieces).
    Whole { body: Bytes, declared: bool },
    /// The first `fast` bytes at once, then 16 bytes every 200 ms: a peer that drips its answer.
    Drip { body: Bytes, fast: usize },
    /// The response head, then nothing, ever.
    Stall,
    /// A plain SOAP answer with one inline document of `bytes` bytes, generated as it is sent (the
    /// peer never holds it), `Content-Length` when `declared`.
    HugeInline {
        bytes: usize,
        declared: bool,
        uid: String,
    },
}

/// An answer prepared for a retrieve whose first DocumentUniqueId is `1.2.3.999.<case>.<k>`.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// `Content-Type` of the answer.
    pub content_type: String,
    /// How it is sent.
    pub send: Send,
}

/// What a peer answers to ITI-38: these objects, whatever the query asked.
pub type QueryAnswer = AdhocQueryResponse;

/// The peer's state, shared with the test.
#[derive(Default)]
pub struct PeerState {
    /// Prepared retrieve answers by case number.
    pub answers: Mutex<HashMap<u64, Prepared>>,
    /// The ITI-38 answer (`None`: an empty Success), given as ObjectRefs (id and home of each object,
    /// as a registry would) when the request asks for ObjectRef.
    pub query: Mutex<Option<QueryAnswer>>,
    /// The return type of each ITI-38 request, in order.
    pub asked: Mutex<Vec<ReturnType>>,
    /// Request MessageIDs seen per case (the gateway's own, for its outbound calls).
    pub retrieves: Mutex<u64>,
}

/// A running peer.
pub struct Peer {
    /// Its address.
    pub addr: SocketAddr,
    /// Its state.
    pub state: Arc<PeerState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Peer {
    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.addr.port())
    }
}

/// Starts a peer on a free loopback port.
pub async fn start() -> Peer {
    let state = Arc::new(PeerState::default());
    let app = Router::new()
        .route("/iti38", post(iti38))
        .route("/iti39", post(iti39))
        .route("/rad75", post(rad75))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Peer { addr, state, task }
}

fn envelope(headers: &HeaderMap, body: &Bytes) -> Bytes {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/soap+xml")
        .to_owned();
    mtom::soap_envelope(&ct, body.clone(), &MtomLimits::default())
        .unwrap()
        .0
}

fn soap_response(xml: String) -> Response {
    let mut r = Response::new(Body::from(xml));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/soap+xml; charset=UTF-8"),
    );
    r
}

async fn iti38(State(s): State<Arc<PeerState>>, headers: HeaderMap, body: Bytes) -> Response {
    let root = envelope(&headers, &body);
    let (h, req) = read_soap::<AdhocQueryRequest>(&root, &Limits::default()).unwrap();
    let rt = req.response_option.return_type;
    s.asked.lock().unwrap().push(rt);
    let mut answer = s
        .query
        .lock()
        .unwrap()
        .clone()
        .unwrap_or_else(|| AdhocQueryResponse::new(Vec::new(), Vec::new()));
    if rt == ReturnType::ObjectRef {
        answer.objects = answer
            .objects
            .iter()
            .filter_map(|o| {
                Some(Identifiable::ObjectRef(ObjectRef {
                    id: o.id()?.to_owned(),
                    home: o.home().cloned(),
                    slots: Vec::new(),
                }))
            })
            .collect();
    }
    soap_response(write_soap(
        &SoapHeader::response(Transaction::Iti38.response_action(), &h),
        &answer,
    ))
}

async fn iti39(State(s): State<Arc<PeerState>>, headers: HeaderMap, body: Bytes) -> Response {
    let root = envelope(&headers, &body);
    let (_, req) = read_soap::<RetrieveDocumentSetRequest>(&root, &Limits::default()).unwrap();
    let uid = req
        .documents
        .first()
        .map(|d| d.document_unique_id.clone())
        .unwrap_or_default();
    answer(&s, &uid)
}

async fn rad75(State(s): State<Arc<PeerState>>, headers: HeaderMap, body: Bytes) -> Response {
    let root = envelope(&headers, &body);
    let (_, req) =
        read_soap::<RetrieveImagingDocumentSetRequest>(&root, &Limits::default()).unwrap();
    let uid = req
        .documents()
        .next()
        .map(|(_, _, d)| d.document_unique_id.clone())
        .unwrap_or_default();
    answer(&s, &uid)
}

/// The case number of a DocumentUniqueId `1.2.3.999.<case>.<k>`.
pub fn case_of(uid: &str) -> Option<u64> {
    uid.strip_prefix("1.2.3.999.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

fn answer(s: &PeerState, uid: &str) -> Response {
    *s.retrieves.lock().unwrap() += 1;
    let prepared = case_of(uid).and_then(|c| s.answers.lock().unwrap().get(&c).cloned());
    let Some(p) = prepared else {
        // nothing prepared (a timeline's manifest): a well-formed answer without documents
        return soap_response(
            "<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\"><s:Body><x:RetrieveDocumentSetResponse xmlns:x=\"urn:ihe:iti:xds-b:2007\" xmlns:rs=\"urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0\"><rs:RegistryResponse status=\"urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure\"><rs:RegistryErrorList><rs:RegistryError errorCode=\"XDSDocumentUniqueIdError\" codeContext=\"unknown\" severity=\"urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error\"/></rs:RegistryErrorList></rs:RegistryResponse></x:RetrieveDocumentSetResponse></s:Body></s:Envelope>".to_owned(),
        );
    };
    let mut r = match p.send {
        Send::Whole { body, declared } => {
            if declared {
                Response::new(Body::from(body))
            } else {
                let pieces: Vec<Result<Bytes, std::io::Error>> = body
                    .chunks(8192)
                    .map(|c| Ok(Bytes::copy_from_slice(c)))
                    .collect();
                Response::new(Body::from_stream(futures::stream::iter(pieces)))
            }
        }
        Send::Drip { body, fast } => {
            let first = body.slice(..fast.min(body.len()));
            let rest = body.slice(fast.min(body.len())..);
            let slow = futures::stream::unfold(rest, |rest| async move {
                if rest.is_empty() {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                let n = rest.len().min(16);
                Some((Ok::<_, std::io::Error>(rest.slice(..n)), rest.slice(n..)))
            });
            let s =
                futures::stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(slow);
            Response::new(Body::from_stream(s))
        }
        Send::Stall => Response::new(Body::from_stream(futures::stream::pending::<
            Result<Bytes, std::io::Error>,
        >())),
        Send::HugeInline {
            bytes,
            declared,
            uid,
        } => {
            let (head, tail) = huge_envelope(&uid);
            // 48 KiB of input per piece: a multiple of 3, so the pieces' base64 joins up
            const STEP: usize = 48 * 1024;
            let encoded = bytes.div_ceil(3) * 4;
            let total = head.len() + encoded + tail.len();
            let pieces = futures::stream::unfold(0usize, move |done| async move {
                if done >= bytes {
                    return None;
                }
                let n = STEP.min(bytes - done);
                let data: Vec<u8> = (0..n).map(|i| ((done + i) % 251) as u8).collect();
                let text = base64::engine::general_purpose::STANDARD.encode(&data);
                Some((Ok::<_, std::io::Error>(Bytes::from(text)), done + n))
            });
            let s = futures::stream::once(async move { Ok(Bytes::from(head)) })
                .chain(pieces)
                .chain(futures::stream::once(async move { Ok(Bytes::from(tail)) }));
            let mut r = Response::new(Body::from_stream(s));
            if declared {
                r.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(total));
            }
            r
        }
    };
    if let Ok(v) = HeaderValue::from_str(&p.content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

/// The plain SOAP envelope of a one-document answer, split where the document's base64 goes.
fn huge_envelope(uid: &str) -> (String, String) {
    let head = format!(
        "<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\"><s:Body><x:RetrieveDocumentSetResponse xmlns:x=\"urn:ihe:iti:xds-b:2007\" xmlns:rs=\"urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0\"><rs:RegistryResponse status=\"urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success\"/><x:DocumentResponse><x:HomeCommunityId>{}</x:HomeCommunityId><x:RepositoryUniqueId>{}</x:RepositoryUniqueId><x:DocumentUniqueId>{uid}</x:DocumentUniqueId><x:mimeType>application/dicom</x:mimeType><x:Document>",
        super::PEER_HOME,
        super::REPO
    );
    let tail =
        "</x:Document></x:DocumentResponse></x:RetrieveDocumentSetResponse></s:Body></s:Envelope>"
            .to_owned();
    (head, tail)
}
