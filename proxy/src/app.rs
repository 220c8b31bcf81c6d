//! The axum application: shared state and the route table.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::FutureExt;
use futures::future::Either;
use hyper::body::Incoming;
use lakehouse_providers::router::Registry;
use tower::ServiceExt;

use crate::config::Config;
use crate::error::ApiError;
use crate::{middleware, routes};

/// What every handler shares.
pub struct AppState {
    pub config: Config,
    pub registry: Registry,
    pub store: Arc<lakehouse_retrieval::Store>,
    pub pathway: Arc<lakehouse_memory::Pathway>,
    pub playbook: Arc<lakehouse_memory::Playbook>,
    pub pipeline: lakehouse_plugins::Pipeline,
    pub metrics: crate::metrics::Metrics,
    pub observer: crate::observer::Observer,
    pub auth: crate::auth::Auth,
    /// Workflows loaded from `[workflows] dir`, by name.
    pub workflows: std::collections::BTreeMap<String, crate::workflow::Workflow>,
    /// Slots of `server.max_concurrent_requests`.
    pub in_flight: Arc<tokio::sync::Semaphore>,
}

pub type SharedState = Arc<AppState>;

/// The path every OpenAI SDK posts its chats to.
const CHAT_COMPLETIONS: &str = "/v1/chat/completions";

/// The application [`crate::serve`] runs: the route table, with
/// `POST /v1/chat/completions`, the request this proxy exists for,
/// dispatched ahead of it.
///
/// The table serves every other request. Through it, a request pays for the
/// path lookup, and for a clone of the boxed route and a boxed future at each
/// of two levels (the edge layer wraps every route). Dispatched here, a chat
/// runs behind the same edge ([`middleware::guard`]) with its future held
/// inline in the connection's: 61.9k -> 58.5k instructions and 64 -> 55
/// allocations per chat in callgrind. The route stays in the table, which
/// answers its other methods with 405.
#[derive(Clone)]
pub struct App {
    router: Router,
    state: SharedState,
}

impl App {
    /// Answers one request from `peer`: its body is cut if it stalls, and the
    /// peer's address is kept for the `[auth]` IP allowlist when there is one.
    pub(crate) fn call(
        &self,
        request: hyper::Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response> + use<> {
        let idle = Duration::from_secs(self.state.config.server.body_read_timeout_secs);
        let mut request = request.map(|body| middleware::idle_timeout(body, idle));
        // Only the allowlist reads it; inserting it builds the extension map.
        if self.state.auth.checks_addresses() {
            request.extensions_mut().insert(ConnectInfo(peer));
        }
        let answer = if request.method() == Method::POST && request.uri().path() == CHAT_COMPLETIONS
        {
            let state = self.state.clone();
            Either::Left(middleware::guard(
                &self.state,
                middleware::RouteName::Fixed(CHAT_COMPLETIONS),
                request,
                |request| routes::chat::chat_completions(State(state), request).map(Ok),
            ))
        } else {
            Either::Right(self.router.clone().oneshot(request))
        };
        answer.map(|Ok::<_, Infallible>(response)| response)
    }
}

/// Builds the application; tests call this with their own state and serve it on port 0.
pub fn app(state: SharedState) -> App {
    App {
        router: router(state.clone()),
        state,
    }
}

/// The route table, behind the edge layer.
fn router(state: SharedState) -> Router {
    Router::new()
        .route(CHAT_COMPLETIONS, post(routes::chat::chat_completions))
        .route("/v1/chat", post(routes::chat::chat))
        .route("/v1/fanout", post(routes::fanout::fanout))
        .route("/v1/chat/providers", get(routes::models::providers))
        .route("/v1/models", get(routes::models::models))
        .route("/v1/models/{*id}", get(routes::models::model))
        .route("/healthz", get(routes::models::healthz))
        .route("/metrics", get(routes::observe::metrics))
        .route("/admin", get(routes::console::page))
        .route("/admin/assets/{file}", get(routes::console::asset))
        .route("/admin/requests", get(routes::observe::requests))
        .route("/v1/embeddings", post(routes::embeddings::embeddings))
        .route("/admin/objects", get(routes::admin::list_objects))
        .route(
            "/admin/objects/{*key}",
            get(routes::admin::get_object)
                .put(routes::admin::put_object)
                .delete(routes::admin::delete_object),
        )
        .route("/admin/query", post(routes::admin::query))
        .route(
            "/admin/corpora",
            get(routes::admin::list_corpora).post(routes::admin::create_corpus),
        )
        .route(
            "/admin/corpora/{name}",
            get(routes::admin::get_corpus).delete(routes::admin::delete_corpus),
        )
        .route("/admin/corpora/{name}/ingest", post(routes::admin::ingest))
        .route("/admin/corpora/{name}/search", post(routes::admin::search))
        .route("/v1/feedback", post(routes::memory::feedback))
        .route("/admin/memory/traces", post(routes::memory::add_trace))
        .route(
            "/admin/memory/traces/{id}",
            get(routes::memory::get_trace).patch(routes::memory::update_trace),
        )
        .route(
            "/admin/memory/traces/{id}/revise",
            post(routes::memory::revise_trace),
        )
        .route(
            "/admin/memory/traces/{id}/retire",
            post(routes::memory::retire_trace),
        )
        .route(
            "/admin/memory/traces/{id}/history",
            get(routes::memory::trace_history),
        )
        .route(
            "/admin/memory/namespaces/{namespace}",
            get(routes::memory::list_traces),
        )
        .route("/admin/memory/search", post(routes::memory::search))
        .route("/admin/memory/stats", get(routes::memory::stats))
        .route("/admin/memory/compact", post(routes::memory::compact))
        .route(
            "/admin/playbook/outcomes",
            get(routes::memory::list_outcomes),
        )
        .route(
            "/admin/playbook/outcomes/{id}/retire",
            post(routes::memory::retire_outcome),
        )
        .route("/admin/workflows", get(routes::workflows::list))
        .route("/admin/workflows/{name}/run", post(routes::workflows::run))
        .route("/admin/workflows/runs", get(routes::workflows::runs))
        .route(
            "/admin/workflows/runs/{id}",
            get(routes::workflows::get_run),
        )
        .route(
            "/admin/distillation/export",
            post(routes::workflows::export),
        )
        .route("/admin/drift", get(routes::workflows::drift))
        .nest_service("/mcp", crate::mcp::http_service(state.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::EdgeLayer::new(state.clone()))
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found("unknown_url", format!("no route for {}", uri.path()))
}

async fn method_not_allowed() -> impl IntoResponse {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        Some("method_not_allowed"),
        "method not allowed on this route",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future a two-argument `f` returns, without calling it.
    fn future_size2<A, B, F: Future>(_: impl FnOnce(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// The size of the future a three-argument `f` returns, without calling it.
    fn future_size3<A, B, C, F: Future>(_: impl FnOnce(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A request's future lives in its connection's; each await nested in it
    /// copies the inner future into the outer one's state, so every byte is
    /// written at least once per request. The chat handler's was 14 KiB and
    /// the edge's 1.9 KiB before cold paths were boxed and synchronous work
    /// moved out of them; then 3.2 KiB and 776 bytes before the witness's
    /// event went behind a pointer, the upstream call was made before its
    /// future and the edge called the route before its own. Keep them small.
    #[test]
    fn the_per_request_futures_stay_small() {
        let edge = std::mem::size_of::<
            middleware::EdgeFuture<axum::routing::future::RouteFuture<std::convert::Infallible>>,
        >();
        let chat = future_size2(routes::chat::chat_completions);
        let start = future_size3(routes::chat::start);
        let dispatched = future_size3(App::call);
        assert!(edge <= 512, "edge future is {edge} bytes");
        assert!(chat <= 1088, "chat handler future is {chat} bytes");
        assert!(start <= 640, "chat start future is {start} bytes");
        assert!(
            dispatched <= chat + 512,
            "a dispatched request's future is {dispatched} bytes (the chat's is {chat})"
        );
    }
}
