//! `POST /v1/feedback`, `/admin/memory/*` (pathway traces) and `/admin/playbook/*`.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use lakehouse_memory::pathway::{NewTrace, Revision, SearchQuery, TraceEdit};
use lakehouse_memory::playbook::Feedback;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::SharedState;
use crate::error::ApiError;
use crate::routes::body::read_json;
use crate::routes::extract::{Path, Query};

/// Rates a chat completion; the playbook boosts (or lowers) its sources for similar queries.
pub async fn feedback(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let request: Feedback = read_json(&headers, body, state.config.server.max_body_bytes).await?;
    let (id, rating) = (request.id.clone(), request.rating);
    let outcome = state.playbook.rate(request).await?;
    state.observer.rate(&id, rating);
    Ok(Json(json!({"object": "feedback", "outcome": outcome})))
}

pub async fn add_trace(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let request: NewTrace = read_json(&headers, body, state.config.server.max_body_bytes).await?;
    let trace = state.pathway.add(request).await?;
    Ok((StatusCode::CREATED, Json(json!(trace))).into_response())
}

pub async fn get_trace(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(state.pathway.get(&id).await?)))
}

pub async fn update_trace(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let edit: TraceEdit = read_json(&headers, body, state.config.server.max_body_bytes).await?;
    Ok(Json(json!(state.pathway.update(&id, edit).await?)))
}

pub async fn revise_trace(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let revision: Revision = read_json(&headers, body, state.config.server.max_body_bytes).await?;
    let trace = state.pathway.revise(&id, revision).await?;
    Ok((StatusCode::CREATED, Json(json!(trace))).into_response())
}

pub async fn retire_trace(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(state.pathway.retire(&id).await?)))
}

pub async fn trace_history(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(state.pathway.history(&id).await?)))
}

#[derive(Deserialize)]
pub struct ListQuery {
    /// Include revised and retired versions.
    #[serde(default)]
    all: bool,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

pub async fn list_traces(
    State(state): State<SharedState>,
    Path(namespace): Path<String>,
    Query(q): Query<ListQuery>,
) -> Json<Value> {
    let traces = state.pathway.list(&namespace, q.all, q.limit).await;
    Json(json!({"object": "list", "namespace": namespace, "data": traces}))
}

pub async fn search(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let query: SearchQuery = read_json(&headers, body, state.config.server.max_body_bytes).await?;
    let hits = state.pathway.search(&query).await?;
    Ok(Json(json!({"object": "list", "data": hits})))
}

pub async fn stats(State(state): State<SharedState>) -> Json<Value> {
    Json(json!({
        "pathway": state.pathway.stats().await,
        "playbook": state.playbook.stats().await,
    }))
}

/// Compacts the pathway and playbook logs.
pub async fn compact(State(state): State<SharedState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({
        "pathway": state.pathway.compact().await?,
        "playbook": state.playbook.compact().await?,
    })))
}

pub async fn list_outcomes(
    State(state): State<SharedState>,
    Query(q): Query<ListQuery>,
) -> Json<Value> {
    let outcomes = state.playbook.list(q.all, q.limit).await;
    Json(json!({"object": "list", "data": outcomes}))
}

pub async fn retire_outcome(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(state.playbook.retire(&id).await?)))
}
