//! `POST /v1/chat/completions` and `POST /v1/chat`.
//!
//! The first upstream event is awaited before any status is sent, so a refusal
//! or an early failure becomes a real HTTP error. After that every upstream
//! event is written as its own SSE event at once (axum flushes each stream item
//! as a frame). Dropping the response body, as hyper does when the client goes
//! away, drops the upstream request with it.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use lakehouse_providers::ChunkStream;
use lakehouse_providers::openai::{ChatChunk, ChatRequest, new_id, unix_now};
use lakehouse_providers::stream::{Assembler, ResponseMeta, normalize};

use crate::app::SharedState;
use crate::config::ModelTiers;
use crate::error::ApiError;

/// The OpenAI route.
pub async fn chat_completions(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(state, headers, body, Shape::Completions)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// The curl-friendly route: same body and answer, plus top-level `provider` and `content`.
pub async fn chat(State(state): State<SharedState>, headers: HeaderMap, body: Body) -> Response {
    handle(state, headers, body, Shape::Chat)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Completions,
    Chat,
}

async fn handle(
    state: SharedState,
    headers: HeaderMap,
    body: Body,
    shape: Shape,
) -> Result<Response, ApiError> {
    let bytes = read_body(&headers, body, state.config.server.max_body_bytes).await?;
    let mut request: ChatRequest = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
    request.validate().map_err(ApiError::bad_request)?;
    // The proxy's own per-request options never travel upstream.
    request.extra.remove("lakehouse");

    let client_model = request.model.clone();
    let target = resolve_tier(&state.config.models, &client_model)?;
    let (provider, upstream_model) = state.registry.resolve(target)?;
    request.model = upstream_model;
    let stream = request.is_stream();
    let wants_usage = request.wants_usage();
    tracing::debug!(model = %client_model, provider = provider.name(), stream, "chat");

    let upstream = provider.chat(request).await?;
    let meta = ResponseMeta {
        id: new_id("chatcmpl-"),
        created: unix_now(),
        model: client_model,
    };
    let mut chunks = normalize(provider.name().to_owned(), upstream, meta.clone());
    let first = match chunks.next().await {
        Some(Ok(chunk)) => chunk,
        Some(Err(e)) => return Err(e.into()),
        None => {
            return Err(ApiError::from(
                lakehouse_providers::ProviderError::protocol(provider.name(), "empty stream"),
            ));
        }
    };

    if stream {
        let keep_alive = Duration::from_secs(state.config.server.keep_alive_secs.max(1));
        return Ok(sse_response(first, chunks, wants_usage, keep_alive));
    }
    let mut assembler = Assembler::default();
    assembler.push(&first);
    while let Some(chunk) = chunks.next().await {
        assembler.push(&chunk?);
    }
    let completion = assembler.finish(&meta);
    Ok(match shape {
        Shape::Completions => Json(completion).into_response(),
        Shape::Chat => {
            let content = completion.first_text().to_owned();
            let mut value = serde_json::to_value(&completion)
                .map_err(|e| ApiError::bad_request(format!("cannot encode the response: {e}")))?;
            if let Some(obj) = value.as_object_mut() {
                obj.insert("provider".into(), provider.name().into());
                obj.insert("content".into(), content.into());
            }
            Json(value).into_response()
        }
    })
}

/// `tier/<name>` → the model the `[models]` tier names; other ids pass unchanged.
fn resolve_tier<'a>(tiers: &'a ModelTiers, model: &'a str) -> Result<&'a str, ApiError> {
    let Some(tier) = model.strip_prefix("tier/") else {
        return Ok(model);
    };
    tiers.get(tier).ok_or_else(|| {
        let known: Vec<&str> = tiers.iter().map(|(name, _)| name).collect();
        ApiError::not_found(
            "model_not_found",
            format!(
                "tier {tier:?} is not set in [models]; set tiers are: {}",
                known.join(", ")
            ),
        )
        .with_param("model")
    })
}

/// Reads at most `limit` bytes; a larger body is refused before it is buffered.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::payload_too_large(limit));
    }
    let mut data = body.into_data_stream();
    let mut buffer = BytesMut::with_capacity(declared.unwrap_or(1024));
    while let Some(frame) = data.next().await {
        let frame = frame
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        if buffer.len() + frame.len() > limit {
            return Err(ApiError::payload_too_large(limit));
        }
        buffer.extend_from_slice(&frame);
    }
    Ok(buffer.freeze())
}

/// One SSE event per chunk, then exactly one `[DONE]`; after an error, an error
/// event and nothing more. The trailing usage chunk goes out only when asked for.
fn sse_response(
    first: ChatChunk,
    rest: ChunkStream,
    wants_usage: bool,
    keep_alive: Duration,
) -> Response {
    struct State {
        chunks: ChunkStream,
        finished: bool,
    }
    let chunks = futures::stream::once(std::future::ready(Ok(first)))
        .chain(rest)
        .boxed();
    let events = futures::stream::unfold(
        State {
            chunks,
            finished: false,
        },
        move |mut st| async move {
            if st.finished {
                return None;
            }
            loop {
                let event = match st.chunks.next().await {
                    Some(Ok(chunk)) if chunk.choices.is_empty() && !wants_usage => continue,
                    Some(Ok(chunk)) => Event::default().json_data(&chunk).unwrap_or_else(|e| {
                        st.finished = true;
                        error_event(&ApiError::bad_request(format!(
                            "cannot encode a chunk: {e}"
                        )))
                    }),
                    Some(Err(e)) => {
                        tracing::warn!("stream failed after it started: {e}");
                        st.finished = true;
                        error_event(&ApiError::from(e))
                    }
                    None => {
                        st.finished = true;
                        Event::default().data("[DONE]")
                    }
                };
                return Some((Ok::<_, Infallible>(event), st));
            }
        },
    );
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(keep_alive).text("keep-alive"))
        .into_response();
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

fn error_event(error: &ApiError) -> Event {
    Event::default().data(error.body().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_resolve_and_unknown_tiers_are_404() {
        let tiers = ModelTiers {
            local_fast: Some("ollama/qwen3:8b".into()),
            ..ModelTiers::default()
        };
        assert_eq!(
            resolve_tier(&tiers, "tier/local_fast").unwrap(),
            "ollama/qwen3:8b"
        );
        assert_eq!(
            resolve_tier(&tiers, "kimi/kimi-k2.6").unwrap(),
            "kimi/kimi-k2.6"
        );
        let err = resolve_tier(&tiers, "tier/frontier_arch").unwrap_err();
        assert_eq!(err.status.as_u16(), 404);
        assert!(err.message.contains("local_fast"));
    }
}
