//! OpenCode Zen: one key, three protocols, chosen by model family.
//!
//! The model list does not say which endpoint serves a model, so the family
//! rule from Zen's docs decides: `claude-*` → Anthropic `/messages` (key in
//! `x-api-key`), `gpt-5*` → `/responses`, the rest → `/chat/completions`.
//! Gemini's own Google endpoint is not spoken; the gateway converts formats, so
//! `gemini-*` goes to `/chat/completions` too.

use futures::future::BoxFuture;

use crate::error::ProviderError;
use crate::http::{Auth, Upstream};
use crate::openai::ChatRequest;
use crate::provider::{ChatProvider, ChunkStream};

use super::{anthropic, openai_compat, responses};

/// Which Zen endpoint serves a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZenEndpoint {
    Messages,
    Responses,
    ChatCompletions,
}

impl ZenEndpoint {
    pub fn for_model(model: &str) -> Self {
        if model.starts_with("claude-") {
            Self::Messages
        } else if model.starts_with("gpt-5") {
            Self::Responses
        } else {
            Self::ChatCompletions
        }
    }
}

#[derive(Debug)]
pub struct OpenCodeZen {
    upstream: Upstream,
    messages_upstream: Upstream,
}

impl OpenCodeZen {
    pub fn new(upstream: Upstream) -> Result<Self, ProviderError> {
        let messages_upstream = match upstream.auth() {
            Auth::Bearer(key) => upstream.with_auth(Auth::Header("x-api-key", key.clone()))?,
            _ => upstream.clone(),
        };
        Ok(Self {
            upstream,
            messages_upstream,
        })
    }
}

impl ChatProvider for OpenCodeZen {
    fn name(&self) -> &str {
        self.upstream.provider()
    }

    fn chat(&self, request: Box<ChatRequest>) -> BoxFuture<'_, Result<ChunkStream, ProviderError>> {
        Box::pin(async move {
            match ZenEndpoint::for_model(&request.model) {
                ZenEndpoint::Messages => {
                    anthropic::stream_chat(&self.messages_upstream, &request).await
                }
                ZenEndpoint::Responses => responses::stream_chat(&self.upstream, &request).await,
                ZenEndpoint::ChatCompletions => {
                    openai_compat::send_chat(&self.upstream, request).await
                }
            }
        })
    }

    fn list_models(&self) -> BoxFuture<'_, Result<Vec<String>, ProviderError>> {
        Box::pin(openai_compat::list_models(&self.upstream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_pick_their_endpoint() {
        assert_eq!(
            ZenEndpoint::for_model("claude-sonnet-4-5"),
            ZenEndpoint::Messages
        );
        assert_eq!(ZenEndpoint::for_model("gpt-5.4"), ZenEndpoint::Responses);
        assert_eq!(
            ZenEndpoint::for_model("gpt-5.1-codex"),
            ZenEndpoint::Responses
        );
        assert_eq!(
            ZenEndpoint::for_model("kimi-k2.6"),
            ZenEndpoint::ChatCompletions
        );
        assert_eq!(
            ZenEndpoint::for_model("big-pickle"),
            ZenEndpoint::ChatCompletions
        );
    }
}
