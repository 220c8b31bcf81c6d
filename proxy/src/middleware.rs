//! The layers every request passes, outermost first:
//!
//! 1. [`observe_request`]: request id, span, access log, HTTP metrics.
//! 2. [`guard`]: IP allowlist, bearer token and scope, per-token rate limits.
//! 3. [`shed`]: the global concurrency limit; past it, 503 with `Retry-After`
//!    at once instead of an unbounded queue. A stream holds its slot until it ends.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use crate::app::SharedState;
use crate::auth::{CALLER, Denied};
use crate::error::ApiError;
use crate::observer::REQUEST_ID;

/// Gives every request an id (the caller's `x-request-id` when it is sane),
/// runs it inside a span carrying that id, returns the id on the response,
/// counts it by route, method and status, and writes one access-log line.
pub(crate) async fn observe_request(
    State(state): State<SharedState>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = request
        .headers()
        .get(REQUEST_ID)
        .filter(|v| is_sane_request_id(v.as_bytes()))
        .cloned()
        .unwrap_or_else(new_request_id);
    request.headers_mut().insert(REQUEST_ID, id.clone());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().clone();
    let span = tracing::info_span!(
        "request",
        request_id = id.to_str().unwrap_or_default(),
        method = %method,
        route = %route,
    );
    let mut response = next.run(request).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status();
    state
        .metrics
        .http_requests
        .with(&[&route, method.as_str(), status.as_str()])
        .add(1);
    state
        .metrics
        .http_duration
        .with(&[&route, method.as_str()])
        .observe(elapsed);
    response.headers_mut().insert(REQUEST_ID, id);
    span.in_scope(|| {
        tracing::info!(
            target: "lakehouse::access",
            status = status.as_u16(),
            ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
    });
    response
}

/// Ids from callers are kept when short and plainly printable, so they can
/// be logged and echoed safely.
fn is_sane_request_id(id: &[u8]) -> bool {
    (1..=128).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
}

fn new_request_id() -> HeaderValue {
    let id = format!("req_{:032x}", fastrand::u128(..));
    HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("req_unknown"))
}

/// Refuses what `[auth]` does not allow; passes the token's name on to the
/// handlers in the `x-lakehouse-caller` header (a caller's own is dropped).
pub(crate) async fn guard(
    State(state): State<SharedState>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let verdict = state.auth.check(
        peer,
        request.uri().path(),
        request
            .headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes),
    );
    let caller = match verdict {
        Ok(caller) => caller,
        Err(denied) => {
            tracing::info!("refused: {denied}");
            state.metrics.auth_refusals.with(&[denied.reason()]).add(1);
            return denied_response(denied);
        }
    };
    request.headers_mut().remove(CALLER);
    if let Some(value) = caller.and_then(|name| HeaderValue::from_str(&name).ok()) {
        request.headers_mut().insert(CALLER, value);
    }
    next.run(request).await
}

fn denied_response(denied: Denied) -> Response {
    let message = denied.to_string();
    let (status, kind, code, retry_after) = match denied {
        Denied::Address(_) => (
            StatusCode::FORBIDDEN,
            "permission_error",
            "ip_not_allowed",
            None,
        ),
        Denied::MissingToken => (
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "missing_api_key",
            None,
        ),
        Denied::InvalidToken => (
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_api_key",
            None,
        ),
        Denied::NeedsAdmin(_) => (
            StatusCode::FORBIDDEN,
            "permission_error",
            "insufficient_scope",
            None,
        ),
        Denied::RateLimited { retry_after, .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "rate_limit_exceeded",
            Some(retry_after),
        ),
    };
    let mut error = ApiError::new(status, kind, Some(code), message);
    error.retry_after = retry_after;
    let mut response = error.into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// How long a shed client is told to wait.
const SHED_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A request body that sent nothing for too long.
#[derive(Debug, thiserror::Error)]
#[error("the request body stalled: nothing arrived for {0:?} (server.body_read_timeout_secs)")]
pub struct BodyStalled(pub Duration);

/// The body, failing with [`BodyStalled`] when no data arrives for `idle`.
fn with_idle_timeout(body: Body, idle: Duration) -> Body {
    let frames = futures::stream::unfold(Some(body.into_data_stream()), move |stream| async move {
        let mut stream = stream?;
        match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(frame)) => Some((frame.map_err(axum::BoxError::from), Some(stream))),
            Ok(None) => None,
            Err(_) => Some((Err(axum::BoxError::from(BodyStalled(idle))), None)),
        }
    });
    Body::from_stream(frames)
}

/// At most `server.max_concurrent_requests` requests in flight; the rest are
/// refused at once. `/healthz` and `/metrics` are never shed, so an
/// overloaded server can still be watched. Request bodies that stall are cut.
pub(crate) async fn shed(
    State(state): State<SharedState>,
    request: Request,
    next: Next,
) -> Response {
    let idle = Duration::from_secs(state.config.server.body_read_timeout_secs);
    let request = request.map(|body| with_idle_timeout(body, idle));
    let path = request.uri().path();
    if path == "/healthz" || path == "/metrics" {
        return next.run(request).await;
    }
    let Ok(permit) = state.in_flight.clone().try_acquire_owned() else {
        state.metrics.shed.add(1);
        let mut error = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            Some("overloaded"),
            format!(
                "the server is at its limit of {} requests in flight (server.max_concurrent_requests); retry shortly",
                state.config.server.max_concurrent_requests
            ),
        );
        error.retry_after = Some(SHED_RETRY_AFTER);
        return error.into_response();
    };
    let response = next.run(request).await;
    if !crate::server::is_event_stream(&response) {
        // Other bodies are already in memory: the slot is freed with the head.
        return response;
    }
    // A stream keeps its slot until its body ends (freed before the last
    // bytes go out, so a client that read to the end finds it free) or is dropped.
    response.map(|body| {
        Body::new(HoldsSlot {
            body,
            slot: Some(permit),
        })
    })
}

/// A stream's body holding its concurrency slot until it ends or is dropped.
struct HoldsSlot {
    body: Body,
    slot: Option<OwnedSemaphorePermit>,
}

impl HttpBody for HoldsSlot {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            this.slot = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
