//! Reads a chat request (any of the four body formats) and decides the answer.

use std::time::Duration;

use serde_json::Value;

use crate::directives::{Directives, Fault, words};
use crate::flavour::{Endpoint, Flavour};

/// Reasoning text emitted for `#think`.
pub(crate) const THINK_TEXT: &str = "Let me think.";
/// The signature on thinking (Claude's, and OpenRouter's reasoning items).
pub(crate) const SIGNATURE: &str = "fake-signature";
/// The tool arguments, in the two pieces streamed by OpenAI-style flavours.
pub(crate) const TOOL_ARG_PIECES: [&str; 2] = ["{\"city\":", "\"Oslo\"}"];
/// A custom tool's input (free text, not JSON), in the two pieces streamed.
pub(crate) const CUSTOM_INPUT_PIECES: [&str; 2] = ["city = ", "Oslo\n"];
/// `prompt_tokens` / `input_tokens` / `prompt_eval_count` of every answer.
pub(crate) const PROMPT_TOKENS: u64 = 11;
/// `completion_tokens` of a tool-call answer (one name fragment, two argument pieces).
pub(crate) const TOOL_TOKENS: u64 = 3;
/// Kimi's cached prompt tokens, sent in its top-level `usage.cached_tokens`.
pub(crate) const KIMI_CACHED_TOKENS: u64 = 4;
/// The cost Zen appends after the end marker.
pub(crate) const ZEN_COST: &str = "0.0042";
/// `created` of OpenAI-style objects.
pub(crate) const CREATED: u64 = 1_763_900_000;
/// `created_at` of Ollama lines.
pub(crate) const CREATED_AT: &str = "2026-11-24T10:00:00Z";
/// Message of `#fault=midstream` errors.
pub(crate) const MIDSTREAM_MESSAGE: &str = "fake midstream failure";

/// The parts of a chat request the fake cares about.
#[derive(Debug, Clone, Default)]
pub(crate) struct ChatInput {
    pub model: String,
    pub stream: bool,
    /// Text of the last user message that has text.
    pub text: String,
    /// The conversation ends with a tool result (then `#tool` is ignored).
    pub after_tool_result: bool,
    pub tool_name: Option<String>,
    /// The first tool is a `custom` one (free-text input).
    pub tool_custom: bool,
    pub include_usage: bool,
    pub has_max_tokens: bool,
    /// The request asked for token log probabilities (Ollama's top-level `logprobs`).
    pub logprobs: bool,
}

impl ChatInput {
    pub(crate) fn parse(endpoint: Endpoint, body: &Value) -> Self {
        let model = body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("fake-model")
            .to_owned();
        let stream_default = endpoint == Endpoint::OllamaChat;
        let (text, after_tool_result) = match endpoint {
            Endpoint::Responses => responses_text(body),
            Endpoint::Messages => anthropic_text(body),
            _ => chat_text(body),
        };
        Self {
            model,
            stream: body
                .get("stream")
                .and_then(Value::as_bool)
                .unwrap_or(stream_default),
            text,
            after_tool_result,
            tool_name: first_tool_name(body),
            tool_custom: item_list(body, "tools")
                .first()
                .and_then(|t| t.get("type"))
                .and_then(Value::as_str)
                == Some("custom"),
            include_usage: body
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            has_max_tokens: body.get("max_tokens").is_some_and(|v| !v.is_null()),
            logprobs: body.get("logprobs").and_then(Value::as_bool) == Some(true),
        }
    }
}

/// Joins a string content or the text parts (`text`, `input_text`) of a parts array.
fn content_text(content: Option<&Value>) -> Option<String> {
    match content? {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let texts: Vec<&str> = parts
                .iter()
                .filter(|p| {
                    matches!(
                        p.get("type").and_then(Value::as_str),
                        Some("text" | "input_text")
                    )
                })
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect();
            (!texts.is_empty()).then(|| texts.join("\n"))
        }
        _ => None,
    }
}

fn role(item: &Value) -> Option<&str> {
    item.get("role").and_then(Value::as_str)
}

fn item_list<'a>(body: &'a Value, key: &str) -> &'a [Value] {
    body.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Ollama and OpenAI chat: `messages[]`; a trailing `role:"tool"` is a tool result.
fn chat_text(body: &Value) -> (String, bool) {
    let messages = item_list(body, "messages");
    let text = messages
        .iter()
        .rev()
        .filter(|m| role(m) == Some("user"))
        .find_map(|m| content_text(m.get("content")))
        .unwrap_or_default();
    let after_tool = messages.last().and_then(role) == Some("tool");
    (text, after_tool)
}

/// Anthropic: the last user message with text; a trailing `tool_result` block is a tool result.
fn anthropic_text(body: &Value) -> (String, bool) {
    let messages = item_list(body, "messages");
    let text = messages
        .iter()
        .rev()
        .filter(|m| role(m) == Some("user"))
        .find_map(|m| content_text(m.get("content")))
        .unwrap_or_default();
    let after_tool = messages.last().is_some_and(|m| {
        role(m) == Some("user")
            && m.get("content")
                .and_then(Value::as_array)
                .is_some_and(|blocks| {
                    blocks
                        .iter()
                        .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
                })
    });
    (text, after_tool)
}

/// Responses: `input` as a string, or the last `role:"user"` item.
fn responses_text(body: &Value) -> (String, bool) {
    match body.get("input") {
        Some(Value::String(s)) => (s.clone(), false),
        Some(Value::Array(items)) => {
            let text = items
                .iter()
                .rev()
                .filter(|i| role(i) == Some("user"))
                .find_map(|i| content_text(i.get("content")))
                .unwrap_or_default();
            let after_tool = items
                .last()
                .and_then(|i| i.get("type"))
                .and_then(Value::as_str)
                .is_some_and(|kind| kind.ends_with("call_output"));
            (text, after_tool)
        }
        _ => (String::new(), false),
    }
}

/// The first tool's name: OpenAI nested `function.name` (`custom.name`) or flat `name`.
fn first_tool_name(body: &Value) -> Option<String> {
    item_list(body, "tools").iter().find_map(|tool| {
        tool.pointer("/function/name")
            .or_else(|| tool.pointer("/custom/name"))
            .or_else(|| tool.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    })
}

/// The answer: text or a tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    Text(Vec<String>),
    /// `custom`: a custom tool's call, its input [`CUSTOM_INPUT_PIECES`].
    Tool {
        name: String,
        with_id: bool,
        custom: bool,
    },
}

/// How a (streamed) answer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    Normal,
    Midstream,
    Drop,
    Garbage,
}

/// Everything a flavour needs to write its answer.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub flavour: Flavour,
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
    pub logprobs: bool,
    pub think: bool,
    /// `#cite`: annotations with the answer.
    pub cite: bool,
    pub reply: Reply,
    pub ending: Ending,
    /// Content events sent before a fault ending.
    pub before_fault: usize,
    pub gap: Option<Duration>,
}

impl Plan {
    pub(crate) fn new(flavour: Flavour, input: &ChatInput, d: &Directives) -> Self {
        let reply = if d.tool && !input.after_tool_result {
            Reply::Tool {
                name: input
                    .tool_name
                    .clone()
                    .unwrap_or_else(|| "get_weather".to_owned()),
                with_id: !d.noid,
                custom: input.tool_custom,
            }
        } else if let Some(text) = &d.canned {
            Reply::Text(words(text))
        } else if let Some(n) = d.chunks {
            Reply::Text((0..n).map(|i| format!("tok{i} ")).collect())
        } else {
            let text = format!("Hello from {}! You said: {}", flavour.name(), d.prompt);
            Reply::Text(words(&text))
        };
        let ending = match d.fault {
            Some(Fault::Midstream | Fault::Early) => Ending::Midstream,
            Some(Fault::Drop) => Ending::Drop,
            Some(Fault::Garbage) => Ending::Garbage,
            Some(Fault::Status(_) | Fault::ContextLength) | None => Ending::Normal,
        };
        Self {
            flavour,
            model: input.model.clone(),
            stream: input.stream,
            include_usage: input.include_usage,
            logprobs: input.logprobs,
            think: d.think,
            cite: d.cite,
            reply,
            ending,
            before_fault: if d.fault == Some(Fault::Early) { 0 } else { 2 },
            gap: d.slow_chunks,
        }
    }

    /// Whether the stream fails before its first output (`#fault=early`):
    /// after the opening events that carry nothing (`message_start`,
    /// `response.created`).
    pub(crate) fn fails_before_output(&self) -> bool {
        self.ending == Ending::Midstream && self.before_fault == 0
    }

    /// How many of `total` output events to send: all, or those before a fault.
    pub(crate) fn cut(&self, total: usize) -> usize {
        match self.ending {
            Ending::Normal => total,
            _ => total.min(self.before_fault),
        }
    }

    /// `completion_tokens`: the number of content events, or 3 for a tool call.
    pub(crate) fn completion_tokens(&self) -> u64 {
        match &self.reply {
            Reply::Text(words) => words.len() as u64,
            Reply::Tool { .. } => TOOL_TOKENS,
        }
    }

    pub(crate) fn total_tokens(&self) -> u64 {
        PROMPT_TOKENS + self.completion_tokens()
    }

    /// The whole reply text (empty for a tool call).
    pub(crate) fn full_text(&self) -> String {
        match &self.reply {
            Reply::Text(words) => words.concat(),
            Reply::Tool { .. } => String::new(),
        }
    }

    pub(crate) fn is_tool(&self) -> bool {
        matches!(self.reply, Reply::Tool { .. })
    }
}

/// The full tool arguments as a JSON string.
pub(crate) fn tool_arguments() -> String {
    TOOL_ARG_PIECES.concat()
}

/// The pieces a call streams: a function's arguments or a custom tool's input.
pub(crate) fn tool_pieces(custom: bool) -> [&'static str; 2] {
    if custom {
        CUSTOM_INPUT_PIECES
    } else {
        TOOL_ARG_PIECES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_each_format() {
        let chat = json!({"model":"m","messages":[
            {"role":"user","content":[{"type":"text","text":"hi #tool"}]},
            {"role":"assistant","content":null},
            {"role":"tool","content":"12C"}],
            "tools":[{"type":"function","function":{"name":"lookup"}}]});
        let input = ChatInput::parse(Endpoint::Chat, &chat);
        assert_eq!(input.text, "hi #tool");
        assert!(input.after_tool_result);
        assert!(!input.stream);
        assert_eq!(input.tool_name.as_deref(), Some("lookup"));

        let ollama = json!({"messages":[{"role":"user","content":"yo"}]});
        assert!(ChatInput::parse(Endpoint::OllamaChat, &ollama).stream);

        let anthropic = json!({"max_tokens":5,"messages":[{"role":"user","content":"a #think"}],
            "tools":[{"name":"flat"}]});
        let input = ChatInput::parse(Endpoint::Messages, &anthropic);
        assert_eq!(input.text, "a #think");
        assert!(input.has_max_tokens);
        assert_eq!(input.tool_name.as_deref(), Some("flat"));

        let responses = json!({"input":[{"role":"user","content":[{"type":"input_text","text":"r"}]},
            {"type":"function_call_output","call_id":"c","output":"x"}]});
        let input = ChatInput::parse(Endpoint::Responses, &responses);
        assert_eq!(input.text, "r");
        assert!(input.after_tool_result);
    }
}
