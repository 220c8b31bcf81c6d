//! Kimi (Moonshot): OpenAI `/chat/completions`, spoken by [`openai_compat`],
//! with the sampling rules of its current models applied first.
//!
//! `kimi-k2.5`, `kimi-k2.6` and later fix temperature, top_p, n and the
//! penalties (reference §6), and a temperature other than 1 is a 400. What an
//! OpenAI client sends as a matter of course (`temperature: 0.2`) would fail
//! every chat, so those fields are left out for these models: the model's
//! fixed values apply either way. Only `n > 1` is refused, since leaving it
//! out would answer fewer choices than asked.
//!
//! With thinking on, these models also refuse an assistant tool-call message
//! without `reasoning_content` ("thinking is enabled but reasoning_content is
//! missing"). A conversation begun on another model has none to send back, so
//! such messages get an empty one.
//!
//! Its roles are `system`, `user`, `assistant` and `tool`; OpenAI's newer
//! `developer` (what current SDKs and agents write for a system prompt) is
//! sent as `system`, the role it stands for.

use futures::future::BoxFuture;

use crate::error::ProviderError;
use crate::http::Upstream;
use crate::openai::{ChatRequest, Message, Role};
use crate::provider::{ChatProvider, ChunkStream};

use super::openai_compat;

#[derive(Debug)]
pub struct Kimi {
    upstream: Upstream,
}

impl Kimi {
    pub fn new(upstream: Upstream) -> Self {
        Self { upstream }
    }
}

/// Whether `model` fixes its sampling: `kimi-k2.<minor>` from minor 5 on.
fn fixes_sampling(model: &str) -> bool {
    let Some(version) = model.strip_prefix("kimi-k2.") else {
        return false;
    };
    let digits = version.bytes().take_while(u8::is_ascii_digit).count();
    version
        .get(..digits)
        .and_then(|minor| minor.parse::<u32>().ok())
        .is_some_and(|minor| minor >= 5)
}

/// Whether `model` thinks unless told not to: the current models and the
/// `-thinking` ones.
fn thinks(model: &str) -> bool {
    fixes_sampling(model) || model.contains("thinking")
}

/// Gives an empty `reasoning_content` to assistant tool-call messages that
/// have none, when the model thinks and the request did not turn it off.
fn fill_missing_reasoning(request: &mut ChatRequest) {
    // Only the models that fix their sampling can turn thinking off; the
    // `-thinking` ones always think.
    let thinking_off =
        request.thinking_type() == Some("disabled") && fixes_sampling(&request.model);
    let lacks = |m: &Message| {
        m.role == Role::Assistant
            && m.reasoning_content.is_none()
            && m.tool_calls.as_ref().is_some_and(|calls| !calls.is_empty())
    };
    if thinking_off || !thinks(&request.model) || !request.messages.iter().any(lacks) {
        return;
    }
    for message in std::sync::Arc::make_mut(&mut request.messages) {
        if lacks(message) {
            message.reasoning_content = Some(String::new());
        }
    }
}

/// Sends `developer` messages as `system` (see the module docs).
fn developer_as_system(request: &mut ChatRequest) {
    if !request.messages.iter().any(|m| m.role == Role::Developer) {
        return;
    }
    for message in std::sync::Arc::make_mut(&mut request.messages) {
        if message.role == Role::Developer {
            message.role = Role::System;
        }
    }
}

/// Leaves out what `request.model` fixes; refuses `n > 1` there.
fn apply_fixed_sampling(provider: &str, request: &mut ChatRequest) -> Result<(), ProviderError> {
    if !fixes_sampling(&request.model) {
        return Ok(());
    }
    super::one_choice_only(provider, "n is fixed on this model", request)?;
    request.n = None;
    request.temperature = None;
    request.top_p = None;
    request.presence_penalty = None;
    request.frequency_penalty = None;
    Ok(())
}

impl ChatProvider for Kimi {
    fn name(&self) -> &str {
        self.upstream.provider()
    }

    fn chat(
        &self,
        mut request: Box<ChatRequest>,
    ) -> BoxFuture<'_, Result<ChunkStream, ProviderError>> {
        if let Err(refused) = apply_fixed_sampling(self.upstream.provider(), &mut request) {
            return Box::pin(std::future::ready(Err(refused)));
        }
        fill_missing_reasoning(&mut request);
        developer_as_system(&mut request);
        Box::pin(openai_compat::send_chat(&self.upstream, request))
    }

    fn list_models(&self) -> BoxFuture<'_, Result<Vec<String>, ProviderError>> {
        Box::pin(openai_compat::list_models(&self.upstream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(model: &str) -> ChatRequest {
        serde_json::from_value(serde_json::json!({
            "model": model,
            "messages": [{"role": "user", "content": "hi"}],
            "temperature": 0.2, "top_p": 0.9, "n": 1,
            "presence_penalty": 0.5, "frequency_penalty": 0.5, "seed": 7
        }))
        .unwrap()
    }

    #[test]
    fn tool_call_messages_without_reasoning_get_an_empty_one_when_thinking() {
        let history = |model: &str, thinking: serde_json::Value| -> ChatRequest {
            serde_json::from_value(serde_json::json!({
                "model": model,
                "thinking": thinking,
                "messages": [
                    {"role": "user", "content": "weather?"},
                    {"role": "assistant", "content": null,
                     "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
                    {"role": "tool", "tool_call_id": "c1", "content": "12C"},
                    {"role": "assistant", "content": null, "reasoning_content": "kept",
                     "tool_calls": [{"id": "c2", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
                    {"role": "assistant", "content": "plain"}
                ]
            }))
            .unwrap()
        };
        let mut thinking = history("kimi-k2.6", serde_json::Value::Null);
        fill_missing_reasoning(&mut thinking);
        let reasoning: Vec<Option<&str>> = thinking
            .messages
            .iter()
            .map(|m| m.reasoning_content.as_deref())
            .collect();
        assert_eq!(reasoning, [None, Some(""), None, Some("kept"), None]);
        for (model, switch) in [
            ("kimi-k2.6", serde_json::json!({"type": "disabled"})),
            ("kimi-k2-turbo-preview", serde_json::Value::Null),
        ] {
            let mut request = history(model, switch);
            fill_missing_reasoning(&mut request);
            assert!(request.messages[1].reasoning_content.is_none(), "{model}");
        }
        // A `-thinking` model thinks even when asked not to.
        let mut named = history(
            "kimi-k2-thinking-turbo",
            serde_json::json!({"type": "disabled"}),
        );
        fill_missing_reasoning(&mut named);
        assert_eq!(named.messages[1].reasoning_content.as_deref(), Some(""));
    }

    #[test]
    fn current_models_leave_out_their_fixed_sampling_and_older_ones_keep_it() {
        for model in ["kimi-k2.5", "kimi-k2.6", "kimi-k2.6-preview", "kimi-k2.10"] {
            let mut fixed = request(model);
            apply_fixed_sampling("kimi", &mut fixed).unwrap();
            let body = serde_json::to_value(&fixed).unwrap();
            for field in [
                "temperature",
                "top_p",
                "n",
                "presence_penalty",
                "frequency_penalty",
            ] {
                assert!(body.get(field).is_none(), "{model}: {field} in {body}");
            }
            // What the model does not fix is kept.
            assert_eq!(body["seed"], 7, "{model}");
        }
        for model in [
            "kimi-k2-0905-preview",
            "kimi-k2-thinking",
            "kimi-k2.1",
            "moonshot-v1-8k",
        ] {
            let mut kept = request(model);
            apply_fixed_sampling("kimi", &mut kept).unwrap();
            assert_eq!(kept.temperature, Some(0.2), "{model}");
            assert_eq!(kept.n, Some(1), "{model}");
        }
    }

    #[test]
    fn developer_messages_go_to_kimi_as_system_ones() {
        let mut request: ChatRequest = serde_json::from_value(serde_json::json!({
            "model": "kimi-k2.6",
            "messages": [
                {"role": "developer", "content": "Be terse."},
                {"role": "user", "content": "hi"},
            ],
        }))
        .unwrap();
        developer_as_system(&mut request);
        let roles: Vec<Role> = request.messages.iter().map(|m| m.role).collect();
        assert_eq!(roles, [Role::System, Role::User]);
        assert_eq!(request.messages[0].text_content(), "Be terse.");
    }

    #[test]
    fn several_choices_are_refused_where_n_is_fixed() {
        let mut several = request("kimi-k2.6");
        several.n = Some(3);
        let refused = apply_fixed_sampling("kimi", &mut several).unwrap_err();
        assert!(matches!(refused, ProviderError::InvalidRequest { .. }));
        assert!(
            refused.to_string().contains("kimi-k2.6 answers one choice"),
            "{refused}"
        );
        let mut older = request("kimi-k2-turbo-preview");
        older.n = Some(3);
        apply_fixed_sampling("kimi", &mut older).unwrap();
        assert_eq!(older.n, Some(3));
    }
}
