//! Multi-model fan-out: one chat request sent to several models at once,
//! each through the normal path (rag model or tier resolution, plugins,
//! router), each under its own time limit. One model failing never fails
//! the others: its answer carries the error instead.
//!
//! The HTTP route (`POST /v1/fanout`) and `lakehouse scrum` both use
//! [`FanoutRequest`] and [`run`] / [`stream`].

use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use futures::StreamExt;
use futures::stream::BoxStream;
use lakehouse_providers::openai::{ChatCompletion, ChatRequest, StreamOptions, Usage};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use crate::app::SharedState;
use crate::error::ApiError;
use crate::routes::chat;

/// Longest per-model time limit a request may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// A validated fan-out: the chat template and the models it goes to.
#[derive(Debug, Clone)]
pub struct FanoutRequest {
    pub models: Vec<String>,
    /// The chat sent to every model (its `model` is replaced per model).
    pub template: ChatRequest,
    pub timeout: Duration,
}

impl FanoutRequest {
    /// Parses a `/v1/fanout` body: a chat completion request with `models`
    /// (a list of ids, `tier/<name>` or rag models) in place of `model`, and
    /// an optional per-model `timeout_ms`.
    pub fn from_body(mut body: Map<String, Value>, state: &SharedState) -> Result<Self, ApiError> {
        let models = match body.remove("models") {
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(model) if !model.trim().is_empty() => Ok(model),
                    _ => Err(ApiError::bad_request(
                        "`models` must hold non-empty model id strings",
                    )
                    .with_param("models")),
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => {
                return Err(ApiError::bad_request(
                    "`models` must be a list of model ids, e.g. [\"tier/cloud_review\", \"openrouter/x-ai/grok-4\"]",
                )
                .with_param("models"));
            }
        };
        if body.contains_key("model") {
            return Err(
                ApiError::bad_request("a fan-out takes `models` (a list), not `model`")
                    .with_param("model"),
            );
        }
        let timeout = match body.remove("timeout_ms") {
            None | Some(Value::Null) => Duration::from_secs(state.config.fanout.timeout_secs),
            Some(value) => value
                .as_u64()
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis)
                .filter(|t| *t <= MAX_TIMEOUT)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "`timeout_ms` must be a whole number of milliseconds from 1 to {}",
                        MAX_TIMEOUT.as_millis()
                    ))
                    .with_param("timeout_ms")
                })?,
        };
        body.insert("model".into(), Value::String("fanout".into()));
        let template: ChatRequest = serde_json::from_value(Value::Object(body))
            .map_err(|e| ApiError::bad_request(format!("invalid chat request: {e}")))?;
        Self::new(models, template, timeout, state)
    }

    /// Checks the model count and the chat itself (the same checks as `/v1/chat/completions`).
    pub fn new(
        models: Vec<String>,
        template: ChatRequest,
        timeout: Duration,
        state: &SharedState,
    ) -> Result<Self, ApiError> {
        let max = state.config.fanout.max_models;
        if models.is_empty() || models.len() > max {
            return Err(ApiError::bad_request(format!(
                "`models` must name 1 to {max} models (fanout.max_models), got {}",
                models.len()
            ))
            .with_param("models"));
        }
        for (at, model) in models.iter().enumerate() {
            lakehouse_providers::openai::check_model_id(model).map_err(|e| {
                ApiError::bad_request(format!("models[{at}]: {e}")).with_param("models")
            })?;
        }
        let mut probe = template.clone();
        probe.model = "fanout".into();
        probe.validate().map_err(ApiError::bad_request)?;
        Ok(Self {
            models,
            template,
            timeout,
        })
    }

    fn request_for(&self, model: &str, stream: bool) -> Box<ChatRequest> {
        let mut request = Box::new(self.template.clone());
        request.model = model.to_owned();
        request.stream = Some(stream);
        request.stream_options = stream.then(|| StreamOptions {
            include_usage: Some(true),
            extra: Map::new(),
        });
        request
    }
}

/// One model's answer in a non-stream fan-out.
#[derive(Debug, Clone, Serialize)]
pub struct ModelAnswer {
    pub index: usize,
    pub model: String,
    /// The provider that answered (absent when the request never reached one).
    pub provider: Option<String>,
    pub latency_ms: u64,
    /// The text of the first choice.
    pub content: Option<String>,
    pub usage: Option<Usage>,
    pub completion: Option<ChatCompletion>,
    /// The OpenAI error object plus its HTTP `status`, when this model failed.
    pub error: Option<Value>,
}

/// Runs every model concurrently and waits for all of them.
pub async fn run(
    state: &SharedState,
    headers: &HeaderMap,
    request: &FanoutRequest,
) -> Vec<ModelAnswer> {
    let answers = request
        .models
        .iter()
        .enumerate()
        .map(|(index, model)| async move {
            let started_at = Instant::now();
            let mut provider = None;
            let outcome = tokio::time::timeout(request.timeout, async {
                let started =
                    chat::start(state, headers, request.request_for(model, false)).await?;
                provider = Some(started.provider.clone());
                started.complete().await
            })
            .await
            .unwrap_or_else(|_| Err(timeout_error(request.timeout)));
            let latency_ms = elapsed_ms(started_at);
            match outcome {
                Ok(completion) => ModelAnswer {
                    index,
                    model: model.clone(),
                    provider,
                    latency_ms,
                    content: Some(completion.first_text().to_owned()),
                    usage: completion.usage.clone(),
                    completion: Some(completion),
                    error: None,
                },
                Err(error) => ModelAnswer {
                    index,
                    model: model.clone(),
                    provider,
                    latency_ms,
                    content: None,
                    usage: None,
                    completion: None,
                    error: Some(error_value(&error)),
                },
            }
        });
    futures::future::join_all(answers).await
}

/// One event of a streamed fan-out, tagged with the model it belongs to.
/// Each model sends chunks, then exactly one `done` or `error`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FanoutEvent {
    Chunk {
        index: usize,
        model: String,
        chunk: Value,
    },
    Done {
        index: usize,
        model: String,
        provider: String,
        latency_ms: u64,
        usage: Option<Usage>,
    },
    Error {
        index: usize,
        model: String,
        provider: Option<String>,
        latency_ms: u64,
        error: Value,
    },
}

/// Every model's chunks as they come, interleaved. Each model runs in its own
/// task, so a slow reader delays no upstream more than the channel holds;
/// dropping the stream stops them all.
pub fn stream(
    state: SharedState,
    headers: HeaderMap,
    request: FanoutRequest,
) -> BoxStream<'static, FanoutEvent> {
    let (tx, rx) = mpsc::channel(64);
    for (index, model) in request.models.iter().enumerate() {
        let (state, headers, tx) = (state.clone(), headers.clone(), tx.clone());
        let chat_request = request.request_for(model, true);
        let (model, timeout) = (model.clone(), request.timeout);
        tokio::spawn(async move {
            let started_at = Instant::now();
            let deadline = tokio::time::Instant::now() + timeout;
            let fail = |provider: Option<String>, error: ApiError| FanoutEvent::Error {
                index,
                model: model.clone(),
                provider,
                latency_ms: elapsed_ms(started_at),
                error: error_value(&error),
            };
            let started =
                tokio::time::timeout_at(deadline, chat::start(&state, &headers, chat_request))
                    .await
                    .unwrap_or_else(|_| Err(timeout_error(timeout)));
            let started = match started {
                Ok(started) => started,
                Err(error) => {
                    let _ = tx.send(fail(None, error)).await;
                    return;
                }
            };
            let provider = started.provider.clone();
            let mut chunks = started.chunks();
            let mut usage = None;
            loop {
                let next = match tokio::time::timeout_at(deadline, chunks.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        let _ = tx.send(fail(Some(provider), timeout_error(timeout))).await;
                        return;
                    }
                };
                let event = match next {
                    Some(Ok(chunk)) => {
                        if chunk.usage.is_some() {
                            usage.clone_from(&chunk.usage);
                        }
                        match serde_json::to_value(&chunk) {
                            Ok(chunk) => FanoutEvent::Chunk {
                                index,
                                model: model.clone(),
                                chunk,
                            },
                            Err(e) => fail(
                                Some(provider.clone()),
                                ApiError::internal(format!("cannot encode a chunk: {e}")),
                            ),
                        }
                    }
                    Some(Err(e)) => fail(Some(provider.clone()), ApiError::from(e)),
                    None => FanoutEvent::Done {
                        index,
                        model: model.clone(),
                        provider: provider.clone(),
                        latency_ms: elapsed_ms(started_at),
                        usage: usage.take(),
                    },
                };
                let last = !matches!(event, FanoutEvent::Chunk { .. });
                // A closed channel means the client went away: stop this model.
                if tx.send(event).await.is_err() || last {
                    return;
                }
            }
        });
    }
    drop(tx);
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) }).boxed()
}

fn timeout_error(limit: Duration) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::GATEWAY_TIMEOUT,
        "timeout_error",
        Some("model_timeout"),
        format!("the model did not finish within {} ms", limit.as_millis()),
    )
}

fn error_value(error: &ApiError) -> Value {
    let mut value = error.body().get("error").cloned().unwrap_or(Value::Null);
    if let Some(obj) = value.as_object_mut() {
        obj.insert("status".into(), error.status.as_u16().into());
    }
    value
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}
