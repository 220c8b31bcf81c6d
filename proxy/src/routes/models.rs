//! `GET /v1/models`, `GET /v1/chat/providers` and `GET /healthz`.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use futures::future::join_all;
use lakehouse_providers::openai::{ModelEntry, unix_now};
use serde_json::{Value, json};

use crate::app::SharedState;

/// How long one provider may take to list its models before it is left out.
const LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// Tier aliases and rag models, then every registered provider's models with its routing prefix.
/// A provider that fails to answer is left out (and logged), never fails the list.
pub async fn models(State(state): State<SharedState>) -> Json<Value> {
    let now = unix_now();
    let mut data: Vec<ModelEntry> = state
        .config
        .models
        .iter()
        .map(|(tier, _)| ModelEntry::new(format!("tier/{tier}"), "lakehouse", now))
        .chain(
            state
                .config
                .rag_models
                .iter()
                .map(|rag| ModelEntry::new(rag.name.clone(), "lakehouse", now)),
        )
        .collect();
    let lists = join_all(state.registry.providers().map(|p| async move {
        let result = tokio::time::timeout(LIST_TIMEOUT, p.list_models()).await;
        (p.name().to_owned(), result)
    }))
    .await;
    for (provider, result) in lists {
        match result {
            Ok(Ok(ids)) => data.extend(
                ids.into_iter()
                    .map(|id| ModelEntry::new(format!("{provider}/{id}"), provider.clone(), now)),
            ),
            Ok(Err(e)) => tracing::warn!(provider, "listing models failed: {e}"),
            Err(_) => tracing::warn!(provider, "listing models timed out after {LIST_TIMEOUT:?}"),
        }
    }
    Json(json!({"object": "list", "data": data}))
}

/// Every known provider: registered or not and why not, with its recent
/// request count, errors and latency (from the observer's ring).
pub async fn providers(State(state): State<SharedState>) -> Json<Value> {
    let data: Vec<Value> = state
        .registry
        .statuses()
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "registered": s.registered,
                "base_url": s.base_url,
                "reason": s.reason,
                "recent": state.observer.provider_recent(&s.name),
            })
        })
        .collect();
    Json(json!({"object": "list", "data": data}))
}

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}
