//! One module per upstream protocol, plus what their request conversions share.
//!
//! | module | protocol | used by |
//! |---|---|---|
//! | [`ollama`] | Ollama native `/api/chat` (NDJSON) | `ollama`, `ollama_cloud` |
//! | [`openai_compat`] | OpenAI `/chat/completions` (SSE) | `openrouter`, Zen's chat family, custom providers |
//! | [`kimi`] | [`openai_compat`] after Kimi's fixed-sampling rules | `kimi` |
//! | [`anthropic`] | Anthropic `/messages` (SSE) | Zen `claude-*` |
//! | [`responses`] | OpenAI `/responses` (SSE) | Zen `gpt-5*` |
//! | [`opencode`] | picks one of the three above by model family | `opencode` |
//!
//! [`reasoning`] is the structured reasoning Claude and Responses hand the
//! client and take back.

pub mod anthropic;
pub mod kimi;
pub mod ollama;
pub mod openai_compat;
pub mod opencode;
mod reasoning;
pub mod responses;

use std::task::{Poll, ready};

use futures::stream::{Stream, StreamExt};
use serde_json::{Map, Value};

use crate::error::ProviderError;
use crate::http::EndMarker;
use crate::openai::{
    ChatChunk, ChatRequest, Delta, FunctionDef, Role, Tool, ToolChoice, ToolKind, ToolRef,
};
use crate::provider::ChunkStream;
use crate::sse::SseEvent;

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

/// Refuses `n > 1` for a protocol that answers one choice: fewer choices
/// than asked would be a silent change of the answer.
pub(crate) fn one_choice_only(
    provider: &str,
    protocol: &str,
    request: &ChatRequest,
) -> Result<(), ProviderError> {
    if request.n.is_some_and(|n| n > 1) {
        return Err(ProviderError::invalid_request(
            provider,
            format!(
                "{} answers one choice ({protocol}): n must be 1",
                request.model
            ),
        ));
    }
    Ok(())
}

/// The function tools to send to a protocol without custom tools (Ollama,
/// Anthropic), refusing a `custom` tool or a custom tool call in the
/// history, which it could not carry. With `tool_choice` `allowed_tools`,
/// only the allowed ones go (these protocols have no allowed subset of their
/// own), and with `keep_called` also those the history called: Anthropic
/// needs a tool the conversation used defined.
pub(crate) fn function_tools<'a>(
    provider: &str,
    protocol: &str,
    request: &'a ChatRequest,
    keep_called: bool,
) -> Result<Vec<&'a FunctionDef>, ProviderError> {
    let refused = |what: String| {
        ProviderError::invalid_request(
            provider,
            format!(
                "{what}: {} ({protocol}) has no custom tools; use a function tool",
                request.model
            ),
        )
    };
    for (i, m) in request.messages.iter().enumerate() {
        if let Some(call) = m
            .tool_calls
            .iter()
            .flatten()
            .find(|c| c.kind == ToolKind::Custom)
        {
            return Err(refused(format!(
                "messages[{i}] holds a call of the custom tool `{}`",
                call.name
            )));
        }
    }
    let called = |name: &str| {
        keep_called
            && request
                .messages
                .iter()
                .flat_map(|m| m.tool_calls.iter().flatten())
                .any(|c| c.name == name)
    };
    let mut functions = Vec::new();
    for tool in request.tools.iter().flatten() {
        match tool {
            Tool::Custom { custom } => {
                return Err(refused(format!("`{}` is a custom tool", custom.name)));
            }
            Tool::Function { function } => {
                if tool.allowed_by(request.tool_choice.as_ref()) || called(&function.name) {
                    functions.push(function);
                }
            }
        }
    }
    if let Some(ToolChoice::Named(ToolRef {
        kind: ToolKind::Custom,
        name,
    })) = &request.tool_choice
    {
        return Err(refused(format!(
            "tool_choice names the custom tool `{name}`"
        )));
    }
    // Allowed tools naming one not in `tools` would leave less (or nothing)
    // to call, and a required call could quietly become a text answer.
    if let Some(ToolChoice::Allowed { tools: allowed, .. }) = &request.tool_choice {
        let defined = |r: &ToolRef| request.tools.iter().flatten().any(|t| r.names(t));
        if let Some(missing) = allowed.iter().find(|r| !defined(r)) {
            return Err(ProviderError::invalid_request(
                provider,
                format!(
                    "tool_choice.allowed_tools names `{}`, which is not in `tools`",
                    missing.name
                ),
            ));
        }
        if allowed.is_empty() {
            return Err(ProviderError::invalid_request(
                provider,
                "tool_choice.allowed_tools must name at least one tool",
            ));
        }
    }
    Ok(functions)
}

/// What a `response_format` asks for, read for protocols that carry it in
/// their own shape (Responses, Anthropic, Ollama).
pub(crate) enum AnswerFormat<'a> {
    Text,
    JsonObject,
    /// The `json_schema` object: `name`, `schema`, `strict`, `description`.
    JsonSchema(&'a Map<String, Value>),
}

/// The request's `response_format` (`None` when unset). A format `protocol`
/// has no equivalent for is refused rather than dropped: a client asking for
/// JSON must not get prose.
pub(crate) fn answer_format<'a>(
    provider: &str,
    protocol: &str,
    request: &'a ChatRequest,
) -> Result<Option<AnswerFormat<'a>>, ProviderError> {
    let Some(format) = &request.response_format else {
        return Ok(None);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(Some(AnswerFormat::Text)),
        Some("json_object") => Ok(Some(AnswerFormat::JsonObject)),
        Some("json_schema") => match format.get("json_schema").and_then(Value::as_object) {
            Some(spec) => Ok(Some(AnswerFormat::JsonSchema(spec))),
            None => Err(format_refused(
                provider,
                "type json_schema needs a json_schema object",
            )),
        },
        Some(other) => Err(format_refused(
            provider,
            &format!("type {other:?} has no {protocol} equivalent"),
        )),
        None => Err(format_refused(
            provider,
            "type must be text, json_object or json_schema",
        )),
    }
}

/// A `response_format` refused, saying `why`.
pub(crate) fn format_refused(provider: &str, why: &str) -> ProviderError {
    ProviderError::invalid_request(provider, format!("response_format: {why}"))
}

/// The empty chunk that opens a converted stream, the first time output
/// begins (`opened` still false), and nothing after. The 200 goes out with
/// the stream's first chunk: not at the protocol's opening event
/// (`message_start`, `response.created`), so that an error before any output
/// is still an HTTP error, and not as late as the first text, so that a model
/// reasoning at length is kept alive.
pub(crate) fn opening(opened: &mut bool) -> Option<ChatChunk> {
    (!std::mem::replace(opened, true)).then(|| ChatChunk::delta(Delta::content("")))
}

/// A protocol whose SSE events convert one at a time, with state across the stream.
pub(crate) trait SseConverter: Default + Send + 'static {
    /// One event; `Ok(None)` for events with nothing to say (pings, `*.done` repeats).
    fn convert(
        &mut self,
        provider: &str,
        event: &SseEvent,
    ) -> Result<Option<ChatChunk>, ProviderError>;
    /// The protocol's end marker was seen; nothing after it is read.
    fn done(&self) -> bool;
}

/// Runs a converter over an SSE stream, ending at the end marker (and setting
/// `ended`) or at the first error. Polled by hand, not through `scan` and
/// `filter_map`, which build a future per event and move the chunk through it.
pub(crate) fn convert_sse<C: SseConverter>(
    provider: String,
    mut events: impl Stream<Item = Result<SseEvent, ProviderError>> + Send + Unpin + 'static,
    ended: &EndMarker,
    mut converter: C,
) -> ChunkStream {
    let ended = ended.clone();
    let mut failed = false;
    futures::stream::poll_fn(move |cx| {
        while !failed && !converter.done() {
            let out = match ready!(events.poll_next_unpin(cx)) {
                Some(Ok(event)) => converter.convert(&provider, &event).transpose(),
                Some(Err(e)) => Some(Err(e)),
                None => return Poll::Ready(None),
            };
            if converter.done() {
                ended.set();
            }
            failed = matches!(out, Some(Err(_)));
            if out.is_some() {
                return Poll::Ready(out);
            }
        }
        Poll::Ready(None)
    })
    .boxed()
}

/// Every chunk (or error) a converter makes of `events`, for the adapters' tests.
#[cfg(test)]
pub(crate) fn convert_all<C: SseConverter>(
    converter: C,
    events: Vec<Result<SseEvent, ProviderError>>,
) -> Vec<Result<ChatChunk, ProviderError>> {
    futures::executor::block_on(
        convert_sse(
            "z".into(),
            futures::stream::iter(events).boxed(),
            &EndMarker::default(),
            converter,
        )
        .collect(),
    )
}

/// Converts `events` and joins the chunks as a non-stream answer does: the
/// chunks (all converted without error) and choice 0's message.
#[cfg(test)]
pub(crate) fn convert_and_assemble<C: SseConverter>(
    converter: C,
    events: Vec<Result<SseEvent, ProviderError>>,
) -> (Vec<ChatChunk>, crate::openai::ResponseMessage) {
    let chunks: Vec<ChatChunk> = convert_all(converter, events)
        .into_iter()
        .map(|chunk| chunk.unwrap())
        .collect();
    let mut assembler = crate::stream::Assembler::default();
    for chunk in &chunks {
        assembler.push(chunk);
    }
    let meta = crate::stream::ResponseMeta {
        id: "test".into(),
        created: 0,
        model: "test".into(),
    };
    let message = assembler.finish(&meta).choices.remove(0).message;
    (chunks, message)
}
