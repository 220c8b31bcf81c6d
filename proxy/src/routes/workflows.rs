//! Workflows, distillation and drift over HTTP: `/admin/workflows/...`,
//! `POST /admin/distillation/export`, `GET /admin/drift`.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::{Value, json};

use crate::app::SharedState;
use crate::distill::{self, ExportReport, ExportRequest};
use crate::drift::DriftReport;
use crate::error::ApiError;
use crate::observer::{EventFilter, unix_ms};
use crate::routes::body::read_json;
use crate::routes::extract::Path;
use crate::workflow::{self, Run};

/// `GET /admin/workflows`: the workflows loaded from `[workflows] dir`.
pub async fn list(State(state): State<SharedState>) -> Json<Value> {
    let data: Vec<&workflow::Workflow> = state.workflows.values().collect();
    Json(json!({"object": "list", "data": data}))
}

/// `POST /admin/workflows/{name}/run`: runs it to the end; the run is kept in the store.
pub async fn run(
    State(state): State<SharedState>,
    Path(name): Path<String>,
) -> Result<Json<Run>, ApiError> {
    let workflow = state.workflows.get(&name).ok_or_else(|| {
        ApiError::not_found(
            "workflow_not_found",
            format!(
                "no workflow {name:?} in {}; loaded: {}",
                state.config.workflows.dir.display(),
                state
                    .workflows
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })?;
    Ok(Json(workflow::run(&state, workflow).await))
}

/// `GET /admin/workflows/runs`: kept runs, newest first.
pub async fn runs(State(state): State<SharedState>) -> Result<Json<Value>, ApiError> {
    let mut listed = state.store.objects().list(workflow::RUNS).await?;
    listed.sort_by(|a, b| b.key.cmp(&a.key));
    let data: Vec<Value> = listed
        .iter()
        .filter_map(|o| {
            let id = o.key.rsplit('/').next()?.strip_suffix(".json")?;
            Some(json!({"id": id, "size": o.size, "last_modified": o.last_modified}))
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

/// `GET /admin/workflows/runs/{id}`: one kept run.
pub async fn get_run(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Json<Run>, ApiError> {
    let missing = || ApiError::not_found("run_not_found", format!("no workflow run {id:?}"));
    if !workflow::valid_run_id(&id) {
        return Err(missing());
    }
    let key = format!("{}/{id}.json", workflow::RUNS);
    let bytes = state
        .store
        .objects()
        .get_opt(&key)
        .await?
        .ok_or_else(missing)?;
    let run = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::internal(format!("the kept run {key} is unreadable: {e}")))?;
    Ok(Json(run))
}

/// `POST /admin/distillation/export`: scores the witnessed runs and writes
/// the accepted, uncontaminated ones as SFT JSONL (or only scores, `dry_run`).
pub async fn export(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ExportReport>, ApiError> {
    let request: ExportRequest =
        read_json(&headers, body, state.config.server.max_body_bytes).await?;
    Ok(Json(distill::export(&state, &request).await?))
}

/// `GET /admin/drift`: run scores, ratings and retrieval scores of the recent
/// window against the baseline window (`[drift]`), over the observer's ring.
pub async fn drift(State(state): State<SharedState>) -> Json<DriftReport> {
    Json(drift_now(&state))
}

/// The drift report of the chats in the observer's ring, now.
pub fn drift_now(state: &SharedState) -> DriftReport {
    let events = state.observer.query(usize::MAX, &EventFilter::default());
    crate::drift::report(
        &events,
        unix_ms(),
        &state.config.drift,
        &state.config.distillation,
    )
}
