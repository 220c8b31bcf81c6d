//! # lakehouse
//!
//! The `lakehouse` binary and the library behind it: an OpenAI-compatible
//! proxy in front of five LLM providers (see `../DESIGN.md` in the shared docs).
//!
//! - [`config`]: `lakehouse.toml`, strict and validated at start.
//! - [`registry`]: providers built from the config and the key files.
//! - [`app`]: `app(state) -> Router`, the route table.
//! - [`routes`]: handlers (`/v1/chat/completions`, `/v1/chat`, `/v1/models`, ...).
//! - [`error`]: domain errors mapped to OpenAI error bodies and statuses; the only place statuses are chosen.
//! - [`server`]: `serve(listener, app, shutdown, grace)` and OS signals.

pub mod app;
pub mod config;
pub mod error;
pub mod registry;
pub mod routes;
pub mod server;

use std::sync::Arc;

pub use app::{AppState, SharedState, app};
pub use server::serve;

/// Builds the shared state from a loaded config.
pub fn state_from_config(
    config: config::Config,
) -> Result<SharedState, lakehouse_providers::ProviderError> {
    let registry = registry::build_registry(&config)?;
    Ok(Arc::new(AppState { config, registry }))
}
