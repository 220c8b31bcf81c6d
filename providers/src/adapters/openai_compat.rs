//! OpenAI-compatible `/chat/completions` upstreams: OpenRouter, Kimi, OpenCode
//! Zen's chat family, and any base URL declared in config.
//!
//! The request goes out as the caller wrote it (unknown keys included), with
//! `stream:true` and `stream_options.include_usage:true` so usage always comes
//! back. The quirks of each upstream are handled generically: SSE comments
//! (OpenRouter keep-alives) never reach the JSON parser, usage found inside a
//! choice (Kimi) is moved by the normaliser, and anything after `[DONE]`
//! (Zen's cost event) is never read.

use futures::future::BoxFuture;
use futures::stream::StreamExt;
use serde::Deserialize;

use crate::error::ProviderError;
use crate::http::Upstream;
use crate::openai::{ChatChunk, ChatRequest, StreamOptions};
use crate::provider::{ChatProvider, ChunkStream};

#[derive(Debug)]
pub struct OpenAiCompatible {
    upstream: Upstream,
}

impl OpenAiCompatible {
    pub fn new(upstream: Upstream) -> Self {
        Self { upstream }
    }
}

/// Sends `request` to `{base}/chat/completions` and converts the SSE answer.
pub async fn stream_chat(
    upstream: &Upstream,
    mut request: ChatRequest,
) -> Result<ChunkStream, ProviderError> {
    request.stream = Some(true);
    let options = request
        .stream_options
        .get_or_insert_with(StreamOptions::default);
    options.include_usage = Some(true);
    let response = upstream
        .post_json("/chat/completions", &request, &[])
        .await?;
    let provider = upstream.provider.clone();
    let events = upstream.sse_events(response);
    let chunks = events
        .take_while(|e| std::future::ready(!matches!(e, Ok(ev) if ev.data.trim() == "[DONE]")))
        .filter_map(move |event| {
            let out = match event {
                Err(e) => Some(Err(e)),
                Ok(ev) if ev.data.trim().is_empty() => None,
                Ok(ev) => Some(serde_json::from_str::<ChatChunk>(&ev.data).map_err(|e| {
                    ProviderError::protocol(&provider, format!("bad chunk JSON: {e}"))
                })),
            };
            std::future::ready(out)
        });
    Ok(chunks.boxed())
}

#[derive(Deserialize)]
struct ModelList {
    data: Vec<ModelId>,
}

#[derive(Deserialize)]
struct ModelId {
    id: String,
}

/// `GET {base}/models` → ids (OpenRouter omits `object:"list"`; only `data` is read).
pub async fn list_models(upstream: &Upstream) -> Result<Vec<String>, ProviderError> {
    let list: ModelList = upstream.get_json("/models").await?;
    Ok(list.data.into_iter().map(|m| m.id).collect())
}

impl ChatProvider for OpenAiCompatible {
    fn name(&self) -> &str {
        &self.upstream.provider
    }

    fn chat(&self, request: ChatRequest) -> BoxFuture<'_, Result<ChunkStream, ProviderError>> {
        Box::pin(stream_chat(&self.upstream, request))
    }

    fn list_models(&self) -> BoxFuture<'_, Result<Vec<String>, ProviderError>> {
        Box::pin(list_models(&self.upstream))
    }
}
