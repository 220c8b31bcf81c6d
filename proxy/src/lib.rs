//! # lakehouse
//!
//! The `lakehouse` binary and the library behind it: an OpenAI-compatible
//! proxy in front of five LLM providers (see `../DESIGN.md` in the shared docs).
//!
//! - [`config`]: `lakehouse.toml`, strict and validated at start.
//! - [`registry`]: providers built from the config and the key files.
//! - [`app`]: `app(state) -> App`, the route table (the OpenAI chat route dispatched ahead of it).
//! - [`middleware`]: request ids and access logs, the auth guard, load shedding.
//! - [`auth`]: bearer tokens with scopes, IP allowlist, per-token rate limits.
//! - [`routes`]: handlers (`/v1/chat/completions`, `/v1/chat`, `/v1/models`, ...).
//! - [`error`]: domain errors mapped to OpenAI error bodies and statuses; the only place statuses are chosen.
//! - [`server`]: `serve(listener, app, shutdown, options)` and OS signals.
//! - [`sse`]: server-sent events at the edge (one frame per event, keep-alive comments when idle).
//! - [`cli`]: the store commands (`ingest`, `corpora`, `query`).
//! - [`doctor`]: `lakehouse doctor`, a deployment check with fixes.
//! - [`fanout`]: one chat to several models at once (`/v1/fanout`).
//! - [`mcp`]: the store, memory and chat as MCP tools (stdio and `/mcp`).
//! - [`metrics`]: Prometheus counters and histograms (`GET /metrics`).
//! - [`observer`]: every chat witnessed once, in the metrics and a ring of recent events.
//! - [`scrum`]: cross-lineage code review over a fan-out (`lakehouse scrum`).
//! - [`workflow`]: TOML-declared DAGs run over the store and the observer.
//! - [`distill`]: run scores, verdicts, SFT export behind a contamination firewall.
//! - [`drift`]: PSI and KS of run scores, ratings and retrieval scores between two windows.

pub mod app;
pub mod auth;
pub mod busy_poll;
pub mod cli;
pub mod config;
pub mod distill;
pub mod doctor;
pub mod drift;
pub mod error;
pub mod fanout;
pub mod mcp;
pub mod metrics;
pub mod middleware;
pub mod observer;
pub mod registry;
pub mod routes;
pub mod scrum;
pub mod server;
pub mod sse;
pub mod workflow;

use std::sync::Arc;

pub use app::{AppState, SharedState, app};
pub use server::serve;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("providers: {0}")]
    Provider(#[from] lakehouse_providers::ProviderError),
    #[error("store: {0}")]
    Store(#[from] lakehouse_retrieval::StoreError),
    #[error("memory: {0}")]
    Memory(#[from] lakehouse_memory::MemoryError),
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("{0}")]
    Workflow(#[from] workflow::WorkflowError),
}

/// Opens the store (loading every corpus index), replays memory and the
/// playbook, and builds the plugin pipeline and the shared state.
pub async fn state_from_config(config: config::Config) -> Result<SharedState, StartError> {
    let auth = auth::Auth::load(&config.auth).map_err(|(key, reason)| config::ConfigError {
        file: config.file.clone(),
        key,
        reason,
    })?;
    let workflows = workflow::load_dir(&config.workflows.dir)?;
    let registry = registry::build_registry(&config)?;
    let store = Arc::new(registry::open_store(&config).await?);
    let objects = store.objects().clone();
    let pathway = Arc::new(
        lakehouse_memory::Pathway::open(
            objects.clone(),
            store.embedders().clone(),
            &config.plugins.pathway.embedder,
        )
        .await?,
    );
    let playbook = Arc::new(
        lakehouse_memory::Playbook::open(objects.clone())
            .await?
            .with_awaiting_capacity(config.plugins.playbook.awaiting_rating),
    );
    let pipeline = registry::build_pipeline(&config, &store, &pathway, &playbook);
    let observer = observer::Observer::open(
        objects.clone(),
        objects.spill_dir().map(|dir| dir.join(observer::LOG)),
        config.server.recent_requests,
        config.server.observer_retention(),
    )
    .await?;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(
        config.server.max_concurrent_requests,
    ));
    Ok(Arc::new(AppState {
        config,
        registry,
        store,
        pathway,
        playbook,
        pipeline,
        metrics: metrics::Metrics::default(),
        observer,
        auth,
        workflows,
        in_flight,
    }))
}
