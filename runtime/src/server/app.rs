//! Routes: thin handlers that read the request, hand it to the gateway and shape the HTTP answer.
//!
//! Main listener (mutual TLS):
//! - responding side: `POST /xca/iti38` (ITI-38), `POST /xca/iti39` (ITI-39), `POST /xcai/rad75` (RAD-75)
//! - initiating side for local consumers: `POST /xds/iti18` (ITI-18), `POST /xds/iti43` (ITI-43),
//!   `POST /xdsi/rad69` (RAD-69)
//! - JSON API: `GET /api/v1/patients/{bsn}/timeline`, `GET /api/v1/openapi.yaml`,
//!   `POST /api/v1/registrations` (registration with Mitz, [`mitz_api`])
//! - Mitz: `POST /mitz/notifications` (consent notifications, [`mitz_api`])
//! - XDS notification broker: `POST /dsub/notify` (ITI-53 Document Metadata Notify, the DSUB
//!   registration trigger, [`dsub`])
//!
//! Ops listener (plain HTTP): `GET /healthz`, `GET /readyz`, `GET /metrics`.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt;

use super::listener::PeerCertificate;
use crate::gateway::reply::SoapReply;
use crate::gateway::{Gateway, Shared, dsub, initiating, mitz_api, responding, timeline_api};
use crate::ihe::soap::write_fault;
use crate::ihe::{Fault, FaultCode};

/// The OpenAPI document of the JSON API.
pub const OPENAPI: &str = include_str!("../../openapi.yaml");

/// State of the main router.
#[derive(Clone)]
pub struct AppState {
    /// The current gateway snapshot.
    pub shared: Arc<Shared>,
}

/// A SOAP fault with an HTTP status of the server's own (413 for a body too large, 504 when the handler
/// did not answer in time); `Receiver` from 500 on, `Sender` below.
fn fault_response(status: u16, reason: String) -> Response {
    let code = if status >= 500 {
        FaultCode::Receiver
    } else {
        FaultCode::Sender
    };
    let body = write_fault(
        &Fault {
            code,
            subcode: None,
            reason,
        },
        None,
    );
    SoapReply::Fault(body, status).into_response()
}

/// Reads a request body within the configured size, refusing a declared size above it before reading.
async fn read_body(
    g: &Gateway,
    req: Request,
) -> Result<(HeaderMap, Option<PeerCertificate>, Bytes), Response> {
    let limit = g.config.server.limits.max_body_bytes;
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(n) = declared
        && n > limit
    {
        return Err(fault_response(
            413,
            format!("declared body size {n} bytes exceeds the limit of {limit} bytes"),
        ));
    }
    let limited = http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    let bytes = match limited.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            return Err(
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    fault_response(413, format!("body larger than the limit of {limit} bytes"))
                } else {
                    fault_response(400, format!("reading the request body failed: {e}"))
                },
            );
        }
    };
    let peer = parts.extensions.get::<PeerCertificate>().cloned();
    Ok((parts.headers, peer, bytes))
}

async fn soap<F, Fut>(state: AppState, req: Request, handler: F) -> Response
where
    F: FnOnce(Arc<Gateway>, Option<PeerCertificate>, String, Bytes) -> Fut,
    Fut: Future<Output = SoapReply>,
{
    let g = state.shared.current();
    let (headers, peer, body) = match read_body(&g, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/soap+xml")
        .to_owned();
    let timeout = Duration::from_secs(g.config.server.limits.request_timeout_seconds);
    match tokio::time::timeout(timeout, handler(g.clone(), peer, ct, body)).await {
        Ok(reply) => reply.into_response(),
        Err(_) => fault_response(504, format!("no answer within {timeout:?}")),
    }
}

async fn iti38(State(s): State<AppState>, req: Request) -> Response {
    soap(s, req, responding::iti38).await
}
async fn iti39(State(s): State<AppState>, req: Request) -> Response {
    soap(s, req, responding::iti39).await
}
async fn rad75(State(s): State<AppState>, req: Request) -> Response {
    soap(s, req, responding::rad75).await
}
async fn iti18(State(s): State<AppState>, req: Request) -> Response {
    soap(s, req, initiating::iti18).await
}
async fn iti43(State(s): State<AppState>, req: Request) -> Response {
    soap(s, req, initiating::iti43).await
}
async fn rad69(State(s): State<AppState>, req: Request) -> Response {
    soap(s, req, initiating::rad69).await
}

async fn timeline(State(s): State<AppState>, Path(bsn): Path<String>, req: Request) -> Response {
    let g = s.shared.current();
    let peer = req.extensions().get::<PeerCertificate>().cloned();
    let headers = req.headers().clone();
    let timeout = Duration::from_secs(g.config.server.limits.request_timeout_seconds);
    match tokio::time::timeout(timeout, timeline_api::timeline(g, peer, headers, bsn)).await {
        Ok(Ok(t)) => axum::Json(t).into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(_) => timeline_api::TimelineError::NotInTime.into_response(),
    }
}

async fn registrations(State(s): State<AppState>, req: Request) -> Response {
    let g = s.shared.current();
    let (_, peer, body) = match read_body(&g, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let timeout = Duration::from_secs(g.config.server.limits.request_timeout_seconds);
    match tokio::time::timeout(timeout, mitz_api::register(g, peer, body)).await {
        Ok(Ok(a)) => a.into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(_) => (
            StatusCode::GATEWAY_TIMEOUT,
            axum::Json(serde_json::json!({"error": format!("Mitz did not accept in {timeout:?}")})),
        )
            .into_response(),
    }
}

async fn notifications(State(s): State<AppState>, req: Request) -> Response {
    let g = s.shared.current();
    let (headers, peer, body) = match read_body(&g, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    mitz_api::notify(g, peer, headers, body)
        .await
        .into_response()
}

async fn dsub_notify(State(s): State<AppState>, req: Request) -> Response {
    let g = s.shared.current();
    let (headers, peer, body) = match read_body(&g, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/soap+xml")
        .to_owned();
    let timeout = Duration::from_secs(g.config.server.limits.request_timeout_seconds);
    match tokio::time::timeout(timeout, dsub::notify(g, peer, ct, body)).await {
        Ok(r) => r,
        // not registered in time: a Receiver fault, so the broker re-sends
        Err(_) => fault_response(
            504,
            format!("not registered within {timeout:?}; send again"),
        ),
    }
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI).into_response()
}

/// The main router (mutual TLS listener).
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/xca/iti38", post(iti38))
        .route("/xca/iti39", post(iti39))
        .route("/xcai/rad75", post(rad75))
        .route("/xds/iti18", post(iti18))
        .route("/xds/iti43", post(iti43))
        .route("/xdsi/rad69", post(rad69))
        .route("/api/v1/patients/{bsn}/timeline", get(timeline))
        .route("/api/v1/openapi.yaml", get(openapi))
        .route("/api/v1/registrations", post(registrations))
        .route("/mitz/notifications", post(notifications))
        .route("/dsub/notify", post(dsub_notify))
        .with_state(AppState { shared })
}

/// State of the ops router.
#[derive(Clone)]
pub struct OpsState {
    /// The current gateway snapshot (metrics).
    pub shared: Arc<Shared>,
    /// Whether the gateway accepts traffic (false while starting and draining).
    pub ready: Arc<AtomicBool>,
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(s): State<OpsState>) -> Response {
    if s.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn metrics(State(s): State<OpsState>) -> Response {
    let text = s.shared.current().metrics.encode();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The ops router (plain HTTP listener).
pub fn ops_router(shared: Arc<Shared>, ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(OpsState { shared, ready })
}
