//! One module per upstream protocol, plus what their request conversions share.
//!
//! | module | protocol | used by |
//! |---|---|---|
//! | [`ollama`] | Ollama native `/api/chat` (NDJSON) | `ollama`, `ollama_cloud` |
//! | [`openai_compat`] | OpenAI `/chat/completions` (SSE) | `openrouter`, `kimi`, Zen's chat family, custom providers |
//! | [`anthropic`] | Anthropic `/messages` (SSE) | Zen `claude-*` |
//! | [`responses`] | OpenAI `/responses` (SSE) | Zen `gpt-5*` |
//! | [`opencode`] | picks one of the three above by model family | `opencode` |

pub mod anthropic;
pub mod ollama;
pub mod openai_compat;
pub mod opencode;
pub mod responses;

use serde_json::{Map, Value};

use crate::error::ProviderError;
use crate::openai::{ChatRequest, Role};

/// OpenAI sends tool-call arguments as a JSON string; Ollama and Anthropic want the
/// object (trap 6). Invalid JSON is refused with the message index rather than
/// silently replaced, so the caller learns what the upstream would have choked on.
pub(crate) fn arguments_object(
    provider: &str,
    index: usize,
    arguments: &str,
) -> Result<Value, ProviderError> {
    if arguments.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    serde_json::from_str(arguments).map_err(|e| {
        ProviderError::invalid_request(
            provider,
            format!("messages[{index}]: tool call arguments are not valid JSON ({e}); this upstream needs a JSON object"),
        )
    })
}

/// The system and developer messages joined, for protocols that take the system
/// prompt apart from the conversation (Anthropic `system`, Responses `instructions`).
pub(crate) fn system_text(request: &ChatRequest) -> Option<String> {
    let parts: Vec<String> = request
        .messages
        .iter()
        .filter(|m| matches!(m.role, Role::System | Role::Developer))
        .map(|m| m.text_content())
        .filter(|t| !t.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join("\n\n"))
}
