//! The one layer every request passes, in this order:
//!
//! 1. observe: request id, span, access log, HTTP metrics.
//! 2. [`admit`]: IP allowlist, bearer token and scope, per-token rate limits.
//! 3. [`shed`]: the global concurrency limit; past it, 503 with `Retry-After`
//!    at once instead of an unbounded queue. A stream holds its slot until it ends.
//!
//! One layer rather than three: each axum layer clones its inner service and
//! boxes its future on every request, which the hot path pays for.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Sleep;
use tower::{Layer, Service};

use crate::app::SharedState;
use crate::auth::{CALLER, Denied};
use crate::error::ApiError;
use crate::observer::REQUEST_ID;

/// The edge as the layer the router takes (`Router::layer`).
#[derive(Clone)]
pub(crate) struct EdgeLayer {
    state: SharedState,
}

impl EdgeLayer {
    pub(crate) fn new(state: SharedState) -> Self {
        Self { state }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            state: self.state.clone(),
            inner,
        }
    }
}

/// Gives every request an id (the caller's `x-request-id` when it is sane),
/// runs it inside a span carrying that id, admits or refuses it, returns the
/// id on the response, counts it by route, method and status, and writes one
/// access-log line.
///
/// A service of its own rather than `from_fn`, which per request clones the
/// inner route, boxes it again as `Next` and boxes an async block around the
/// middleware's future: three allocations and a copy of the future. The work
/// is [`guard`]'s, which the route dispatched ahead of the table
/// ([`crate::app::App`]) goes through too.
#[derive(Clone)]
pub(crate) struct Edge<S> {
    state: SharedState,
    inner: S,
}

impl<S> Service<Request> for Edge<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = EdgeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> EdgeFuture<S::Future> {
        let route = match request.extensions().get::<MatchedPath>() {
            Some(matched) => RouteName::Matched(matched.clone()),
            None => RouteName::Fixed("unmatched"),
        };
        guard(&self.state, route, request, |request| {
            self.inner.call(request)
        })
    }
}

/// The route a request is counted and logged under.
pub(crate) enum RouteName {
    /// The route table's pattern (`/admin/corpora/{name}`, ...).
    Matched(MatchedPath),
    /// A route dispatched ahead of the table (see [`crate::app::App`]), or `unmatched`.
    Fixed(&'static str),
}

impl RouteName {
    fn as_str(&self) -> &str {
        match self {
            Self::Matched(matched) => matched.as_str(),
            Self::Fixed(name) => name,
        }
    }
}

/// The edge's work before the route: the request's id and span, admission
/// and shedding (decided synchronously, so the future holds the route's
/// future only), then `call` starting the route, inside the span, when the
/// request passed. `route` names it in the span and the metrics.
pub(crate) fn guard<F>(
    state: &SharedState,
    route: RouteName,
    mut request: Request,
    call: impl FnOnce(Request) -> F,
) -> EdgeFuture<F> {
    let started = Instant::now();
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .filter(|v| is_sane_request_id(v.as_bytes()))
        .cloned()
        .unwrap_or_else(new_request_id);
    request.headers_mut().insert(REQUEST_ID, id.clone());
    let method = request.method().clone();
    let span = tracing::info_span!(
        "request",
        request_id = id.to_str().unwrap_or_default(),
        method = %method,
        route = %route.as_str(),
    );
    let gate = span.in_scope(|| match admit(state, &mut request) {
        Ok(()) => shed(state, request),
        Err(denied) => Gate::Refused(denied_response(denied)),
    });
    let answer = match gate {
        Gate::Pass { request, slot } => Answer::Call {
            call: span.in_scope(|| call(request)),
            slot,
        },
        Gate::Refused(response) => Answer::Refused { response },
    };
    EdgeFuture {
        answer,
        state: state.clone(),
        started,
        id: Some(id),
        route,
        method,
        span,
    }
}

pin_project! {
    /// The route's answer, or the edge's own refusal.
    #[project = AnswerProjection]
    enum Answer<F> {
        Call {
            #[pin]
            call: F,
            slot: Option<OwnedSemaphorePermit>,
        },
        Refused {
            response: Response,
        },
    }
}

pin_project! {
    /// [`guard`]'s future: the route's, held inline and polled inside the
    /// request's span, then the id, metrics and access-log line on the way out.
    pub(crate) struct EdgeFuture<F> {
        #[pin]
        answer: Answer<F>,
        state: SharedState,
        started: Instant,
        // Taken when the answer goes out.
        id: Option<HeaderValue>,
        route: RouteName,
        method: Method,
        span: tracing::Span,
    }
}

impl<F> Future for EdgeFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let span = &*this.span;
        let mut response = match this.answer.project() {
            AnswerProjection::Call { call, slot } => {
                let Ok(response) = ready!(span.in_scope(|| call.poll(cx)));
                hold_slot(response, slot.take())
            }
            AnswerProjection::Refused { response } => std::mem::take(response),
        };
        let elapsed = this.started.elapsed();
        let status = response.status();
        let route = this.route.as_str();
        let metrics = &this.state.metrics;
        metrics
            .http_requests
            .with(&[route, this.method.as_str(), status.as_str()])
            .add(1);
        metrics
            .http_duration
            .with(&[route, this.method.as_str()])
            .observe(elapsed);
        if let Some(id) = this.id.take() {
            response.headers_mut().insert(REQUEST_ID, id);
        }
        span.in_scope(|| {
            tracing::info!(
                target: "lakehouse::access",
                status = status.as_u16(),
                ms = elapsed.as_secs_f64() * 1000.0,
                "request"
            );
        });
        Poll::Ready(Ok(response))
    }
}

/// Ids from callers are kept when short and plainly printable, so they can
/// be logged and echoed safely.
fn is_sane_request_id(id: &[u8]) -> bool {
    (1..=128).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
}

/// `req_` and 32 random hex digits. Written by hand: `format!` with `{:032x}`
/// cost more than the rest of the edge's own work.
fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = *b"req_00000000000000000000000000000000";
    let mut bits = fastrand::u128(..);
    for digit in id[4..].iter_mut().rev() {
        *digit = HEX[(bits & 15) as usize];
        bits >>= 4;
    }
    HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("req_unknown"))
}

/// Refuses what `[auth]` does not allow; passes the token's name on to the
/// handlers in the `x-lakehouse-caller` header (a caller's own is dropped).
fn admit(state: &SharedState, request: &mut Request) -> Result<(), Denied> {
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
            return Err(denied);
        }
    };
    request.headers_mut().remove(&CALLER);
    if let Some(value) = caller.and_then(|name| HeaderValue::from_str(&name).ok()) {
        request.headers_mut().insert(CALLER, value);
    }
    Ok(())
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

/// A request body that fails with [`BodyStalled`] when no data arrives for
/// `idle`. The timer exists only while the body waits: a body already in
/// hyper's buffer (most are) is read without one.
struct IdleTimeout<B> {
    body: B,
    idle: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
    stalled: bool,
}

/// `body` as the handlers' body, cut with [`BodyStalled`] once nothing
/// arrives for `idle`. Applied where a request enters the application
/// ([`crate::app::App`]), to hyper's own body: one box per request.
pub(crate) fn idle_timeout<B>(body: B, idle: Duration) -> Body
where
    B: HttpBody<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    Body::new(IdleTimeout {
        body,
        idle,
        timer: None,
        waiting: false,
        stalled: false,
    })
}

impl<B> HttpBody for IdleTimeout<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if this.stalled {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            this.waiting = false;
            return Poll::Ready(frame.map(|frame| frame.map_err(axum::Error::new)));
        }
        if !this.waiting {
            // A new wait: the idle time counts from now.
            this.waiting = true;
            let deadline = tokio::time::Instant::now() + this.idle;
            match &mut this.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let expired = this
            .timer
            .as_mut()
            .is_some_and(|timer| timer.as_mut().poll(cx).is_ready());
        if expired {
            this.stalled = true;
            return Poll::Ready(Some(Err(axum::Error::new(BodyStalled(this.idle)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.stalled || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// At most `server.max_concurrent_requests` requests in flight; the rest are
/// refused at once. `/healthz` and `/metrics` are never shed, so an
/// overloaded server can still be watched.
fn shed(state: &SharedState, request: Request) -> Gate {
    let path = request.uri().path();
    if path == "/healthz" || path == "/metrics" {
        return Gate::Pass {
            request,
            slot: None,
        };
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
        return Gate::Refused(error.into_response());
    };
    Gate::Pass {
        request,
        slot: Some(permit),
    }
}

/// What admission and shedding decided for a request.
enum Gate {
    /// Goes on to the handler, holding its concurrency slot (none for
    /// `/healthz` and `/metrics`).
    Pass {
        request: Request,
        slot: Option<OwnedSemaphorePermit>,
    },
    /// Answered at the edge.
    Refused(Response),
}

/// The answer to a request that passed the gate with `slot`.
fn hold_slot(response: Response, slot: Option<OwnedSemaphorePermit>) -> Response {
    let Some(slot) = slot else {
        return response;
    };
    if !crate::server::is_event_stream(&response) {
        // Other bodies are already in memory: the slot is freed with the head.
        return response;
    }
    // A stream keeps its slot until its body ends (freed before the last
    // bytes go out, so a client that read to the end finds it free) or is dropped.
    response.map(|body| {
        Body::new(HoldsSlot {
            body,
            slot: Some(slot),
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use futures::channel::mpsc;

    type Sent = Result<Bytes, std::io::Error>;

    #[test]
    fn new_request_ids_are_req_and_32_hex_digits_and_differ() {
        let ids: std::collections::HashSet<Vec<u8>> = (0..1000)
            .map(|_| new_request_id().as_bytes().to_vec())
            .collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(id.len(), 36);
            assert!(id.starts_with(b"req_"));
            assert!(id[4..].iter().all(|b| b"0123456789abcdef".contains(b)));
            assert!(is_sane_request_id(id));
        }
        // The first digit varies too: all 128 bits are written.
        let first: std::collections::HashSet<u8> = ids.iter().map(|id| id[4]).collect();
        assert!(first.len() > 8);
    }

    #[tokio::test]
    async fn a_body_that_stops_sending_fails_as_stalled() {
        let (tx, rx) = mpsc::unbounded::<Sent>();
        let idle = Duration::from_millis(50);
        let mut frames = idle_timeout(Body::from_stream(rx), idle).into_data_stream();
        tx.unbounded_send(Ok(Bytes::from_static(b"first"))).unwrap();
        assert_eq!(&frames.next().await.unwrap().unwrap()[..], b"first");
        let waited = std::time::Instant::now();
        let error = frames.next().await.unwrap().unwrap_err();
        assert!(waited.elapsed() >= idle);
        assert!(error.to_string().contains("stalled"), "{error}");
        // A stalled body stays ended even if the sender wakes up.
        tx.unbounded_send(Ok(Bytes::from_static(b"late"))).unwrap();
        assert!(frames.next().await.is_none());
    }

    #[tokio::test]
    async fn a_stalled_body_is_a_408_where_bodies_are_read() {
        let (tx, rx) = mpsc::unbounded::<Sent>();
        tx.unbounded_send(Ok(Bytes::from_static(b"{\"par")))
            .unwrap();
        let body = idle_timeout(Body::from_stream(rx), Duration::from_millis(20));
        let error = crate::routes::body::read_body(&axum::http::HeaderMap::new(), body, 1024)
            .await
            .unwrap_err();
        assert_eq!(error.status, StatusCode::REQUEST_TIMEOUT);
        assert_eq!(error.code.as_deref(), Some("request_timeout"));
        drop(tx);
    }

    #[tokio::test]
    async fn a_slow_but_steady_body_is_not_cut() {
        let (tx, rx) = mpsc::unbounded::<Sent>();
        // Gaps far under the idle time, adding up to well over it.
        let idle = Duration::from_millis(200);
        let sender = tokio::spawn(async move {
            for i in 0..15u8 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                tx.unbounded_send(Ok(Bytes::from(vec![b'a' + i]))).unwrap();
            }
        });
        let started = std::time::Instant::now();
        let body = idle_timeout(Body::from_stream(rx), idle);
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        assert_eq!(&bytes[..], b"abcdefghijklmno");
        assert!(started.elapsed() > idle);
        sender.await.unwrap();
    }

    #[tokio::test]
    async fn a_body_already_here_is_read_whole() {
        let body = idle_timeout(Body::from("all at once"), Duration::from_millis(1));
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        assert_eq!(&bytes[..], b"all at once");
    }
}
