//! `GET /v1/models`, `GET /v1/models/{id}`, `GET /v1/chat/providers` and `GET /healthz`.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use futures::future::join_all;
use lakehouse_providers::openai::{ModelEntry, unix_now};
use lakehouse_providers::provider::ChatProvider;
use serde_json::{Value, json};

use crate::app::SharedState;
use crate::error::ApiError;
use crate::observer::{EventFilter, ProviderRecent};

/// How long one provider may take to list its models before it is left out.
const LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// The ids Lakehouse answers itself: `tier/<name>` and the rag models.
fn own_ids(state: &SharedState) -> impl Iterator<Item = String> + '_ {
    let tiers = state
        .config
        .models
        .iter()
        .map(|(tier, _)| format!("tier/{tier}"));
    tiers.chain(state.config.rag_models.iter().map(|rag| rag.name.clone()))
}

/// A provider's model ids, `None` (logged) when it fails to answer in time.
async fn listed(provider: &dyn ChatProvider) -> Option<Vec<String>> {
    let name = provider.name();
    match tokio::time::timeout(LIST_TIMEOUT, provider.list_models()).await {
        Ok(Ok(ids)) => Some(ids),
        Ok(Err(e)) => {
            tracing::warn!(provider = name, "listing models failed: {e}");
            None
        }
        Err(_) => {
            tracing::warn!(
                provider = name,
                "listing models timed out after {LIST_TIMEOUT:?}"
            );
            None
        }
    }
}

/// Tier aliases and rag models, then every registered provider's models with its routing prefix.
/// A provider that fails to answer is left out (and logged), never fails the list.
pub async fn models(State(state): State<SharedState>) -> Json<Value> {
    let now = unix_now();
    let mut data: Vec<ModelEntry> = own_ids(&state)
        .map(|id| ModelEntry::new(id, "lakehouse", now))
        .collect();
    let lists = join_all(
        state
            .registry
            .providers()
            .map(|p| async move { (p.name().to_owned(), listed(p.as_ref()).await) }),
    )
    .await;
    for (provider, ids) in lists {
        data.extend(
            ids.into_iter()
                .flatten()
                .map(|id| ModelEntry::new(format!("{provider}/{id}"), provider.clone(), now)),
        );
    }
    Json(json!({"object": "list", "data": data}))
}

/// One model, as OpenAI's `GET /v1/models/{model}` answers (`client.models.retrieve`).
/// Ids carry slashes (`ollama/qwen3:8b`, `tier/local_fast`), sent plain or
/// encoded. A model routes to its provider, and is asked of it; when the
/// provider cannot list its models in time, the model is taken as routable.
pub async fn model(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Json<ModelEntry>, ApiError> {
    let now = unix_now();
    if own_ids(&state).any(|own| own == id) {
        return Ok(Json(ModelEntry::new(id, "lakehouse", now)));
    }
    let (provider, upstream_model) = state.registry.resolve(&id)?;
    if listed(provider)
        .await
        .is_some_and(|ids| !ids.contains(&upstream_model))
    {
        return Err(ApiError::not_found(
            "model_not_found",
            format!(
                "The model `{id}` does not exist ({} does not list it)",
                provider.name()
            ),
        )
        .with_param("model"));
    }
    let owner = provider.name().to_owned();
    Ok(Json(ModelEntry::new(id, owner, now)))
}

/// Every known provider: registered or not and why not, with its recent
/// request count, errors and latency (from the observer's ring).
pub async fn providers(State(state): State<SharedState>) -> Json<Value> {
    let recent = state.observer.query(usize::MAX, &EventFilter::default());
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
                "recent": ProviderRecent::of(&recent, &s.name),
            })
        })
        .collect();
    Json(json!({"object": "list", "data": data}))
}

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}
