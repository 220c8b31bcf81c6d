//! The axum application: shared state and the route table.

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use lakehouse_providers::router::Registry;

use crate::config::Config;
use crate::error::ApiError;
use crate::routes;

/// What every handler shares.
pub struct AppState {
    pub config: Config,
    pub registry: Registry,
}

pub type SharedState = Arc<AppState>;

/// Builds the router; tests call this with their own state and serve it on port 0.
pub fn app(state: SharedState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(routes::chat::chat_completions))
        .route("/v1/chat", post(routes::chat::chat))
        .route("/v1/chat/providers", get(routes::models::providers))
        .route("/v1/models", get(routes::models::models))
        .route("/healthz", get(routes::models::healthz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
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
