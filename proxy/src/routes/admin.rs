//! `/admin/*`: objects, corpora, SQL and search over the lakehouse store.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lakehouse_memory::playbook::SourceRef;
use lakehouse_retrieval::catalog::{CorpusSettings, Manifest};
use lakehouse_retrieval::duck::Format;
use lakehouse_retrieval::embed::LOCAL;
use lakehouse_retrieval::store::{NoProgress, TempDir};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::SharedState;
use crate::error::ApiError;
use crate::routes::body::{body_to_file, read_body, read_json};
use crate::routes::extract::{Path, Query};

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    prefix: String,
}

pub async fn list_objects(
    State(state): State<SharedState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let objects = state.store.objects().list(&q.prefix).await?;
    Ok(Json(json!({"object": "list", "data": objects})))
}

pub async fn put_object(
    State(state): State<SharedState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let objects = state.store.objects();
    lakehouse_retrieval::objects::validate_key(&key)?;
    let cap = objects.caps().for_key(&key);
    let bytes = read_body(&headers, body, cap).await?;
    let size = bytes.len();
    objects.put(&key, bytes).await?;
    Ok((StatusCode::CREATED, Json(json!({"key": key, "size": size}))).into_response())
}

pub async fn get_object(
    State(state): State<SharedState>,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    let bytes = state.store.objects().get(&key).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

pub async fn delete_object(
    State(state): State<SharedState>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.store.objects().delete(&key).await?;
    Ok(Json(json!({"key": key, "deleted": true})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlRequest {
    sql: String,
}

pub async fn query(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let request: SqlRequest = read_json(&headers, body, state.config.server.max_body_bytes).await?;
    let result = state.store.query(&request.sql).await?;
    Ok(Json(json!(result)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCorpus {
    name: String,
    text_columns: Vec<String>,
    #[serde(default = "default_id_column")]
    id_column: String,
    #[serde(default = "default_embedder")]
    embedder: String,
}

fn default_id_column() -> String {
    "id".into()
}

fn default_embedder() -> String {
    LOCAL.into()
}

/// What the API shows of a corpus.
async fn describe(state: &SharedState, manifest: &Manifest) -> Value {
    json!({
        "name": manifest.name,
        "version": manifest.version,
        "rows": manifest.rows(),
        "vectors": state.store.vector_count(&manifest.name).await,
        "embedder": manifest.settings.embedder,
        "text_columns": manifest.settings.text_columns,
        "id_column": manifest.settings.id_column,
        "schema": manifest.schema,
        "files": manifest.files,
        "created_at": manifest.created_at,
        "updated_at": manifest.updated_at,
    })
}

pub async fn create_corpus(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let request: CreateCorpus =
        read_json(&headers, body, state.config.server.max_body_bytes).await?;
    let settings = CorpusSettings {
        text_columns: request.text_columns,
        id_column: request.id_column,
        embedder: request.embedder,
    };
    let manifest = state.store.create_corpus(&request.name, settings).await?;
    Ok((StatusCode::CREATED, Json(describe(&state, &manifest).await)).into_response())
}

pub async fn list_corpora(State(state): State<SharedState>) -> Result<Json<Value>, ApiError> {
    let mut data = Vec::new();
    for manifest in state.store.corpora().await? {
        data.push(describe(&state, &manifest).await);
    }
    Ok(Json(json!({"object": "list", "data": data})))
}

pub async fn get_corpus(
    State(state): State<SharedState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let manifest = state.store.corpus(&name).await?;
    Ok(Json(describe(&state, &manifest).await))
}

pub async fn delete_corpus(
    State(state): State<SharedState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let manifest = state.store.delete_corpus(&name).await?;
    Ok(Json(json!({"name": manifest.name, "deleted": true})))
}

#[derive(Deserialize)]
pub struct IngestQuery {
    format: Option<Format>,
}

/// Picks the upload format from `?format=`, else from the content type.
fn upload_format(query: Option<Format>, headers: &HeaderMap) -> Result<Format, ApiError> {
    if let Some(f) = query {
        return Ok(f);
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match content_type.split(';').next().unwrap_or_default().trim() {
        "text/csv" => Ok(Format::Csv),
        "application/x-ndjson" | "application/jsonl" | "application/jsonlines" => Ok(Format::Jsonl),
        "application/vnd.apache.parquet" | "application/x-parquet" => Ok(Format::Parquet),
        other => Err(ApiError::bad_request(format!(
            "cannot tell the upload format from content type {other:?}; add ?format=csv|jsonl|parquet"
        ))),
    }
}

pub async fn ingest(
    State(state): State<SharedState>,
    Path(name): Path<String>,
    Query(q): Query<IngestQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let format = upload_format(q.format, &headers)?;
    // Fail fast on an unknown corpus, before reading the upload.
    state.store.corpus(&name).await?;
    // Removed when this request ends, also when the client goes away mid-way.
    let dir = TempDir::new("upload")?;
    let path = dir.path().join("upload");
    let cap = state.store.objects().caps().other_bytes;
    body_to_file(&headers, body, cap, &path).await?;
    let manifest = state
        .store
        .ingest_file(&name, &path, format, &NoProgress)
        .await?;
    Ok(Json(json!(manifest)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    query: String,
    #[serde(default = "default_k")]
    k: usize,
}

fn default_k() -> usize {
    10
}

pub async fn search(
    State(state): State<SharedState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let request: SearchRequest =
        read_json(&headers, body, state.config.server.max_body_bytes).await?;
    let data = search_with_boosts(&state, &name, &request.query, request.k).await?;
    Ok(Json(
        json!({"object": "list", "corpus": name, "data": data}),
    ))
}

/// The `k` nearest rows of corpus `name` with the playbook boost this query
/// would get in a chat, ranked by the boosted score as a chat ranks them.
pub(crate) async fn search_with_boosts(
    state: &SharedState,
    name: &str,
    query: &str,
    k: usize,
) -> Result<Vec<Value>, ApiError> {
    let hits = state.store.search(name, query, k).await?;
    // The playbook boost this query would get in a chat, so the ranking shown is the chat's.
    let embedder = state.store.corpus_embedder(name).await?;
    let vector = state.store.embed_query(&embedder, query).await?;
    let boosts = state
        .playbook
        .boosts(&embedder, &vector, &state.pipeline.config().playbook.boost)
        .await;
    let mut data: Vec<Value> = hits
        .into_iter()
        .map(|hit| {
            let key = SourceRef {
                corpus: name.to_owned(),
                id: hit.id.clone(),
            };
            let boost = boosts.get(&key).copied().unwrap_or(0.0);
            json!({
                "id": hit.id,
                "score": hit.score,
                "boost": boost,
                "final_score": hit.score + boost,
                "row": hit.row,
            })
        })
        .collect();
    let final_score = |v: &Value| v["final_score"].as_f64().unwrap_or(f64::MIN);
    data.sort_by(|a, b| final_score(b).total_cmp(&final_score(a)));
    Ok(data)
}
