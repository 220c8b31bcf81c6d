//! Anthropic Messages (`/messages`), as OpenCode Zen serves its `claude-*` models.
//!
//! Requests: system text goes top-level, tool results travel in user messages
//! as `tool_result` blocks, `max_tokens` is required (a default is supplied),
//! sampling fields are sent only when set (newer Claude models refuse some).
//! Streams: each `tool_use` block opens a new tool-call index from a running
//! counter (not the block index); `ping` is skipped; `event: error` ends the
//! stream with an error; `message_stop` ends it.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::{ProviderError, UpstreamErrorKind};
use crate::http::{EndMarker, Upstream};
use crate::openai::{
    ChatChunk, ChatRequest, Content, DataUri, Delta, FileRef, FinishReason, Message,
    PromptTokensDetails, Role, ToolCallDelta, ToolChoice, Usage,
};
use crate::provider::ChunkStream;
use crate::sse::SseEvent;
use crate::stream::error_from_value;

use super::reasoning::{self, ItemWriter};
use super::{
    AnswerFormat, SseConverter, answer_format, arguments_object, convert_sse, format_refused,
    opening, system_text,
};

/// `max_tokens` is mandatory in this protocol; used when the caller set no limit.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// A tool call's id as Anthropic takes it (`^[a-zA-Z0-9_-]+$`): other
/// providers' ids, met when a conversation moves to Claude, are not always
/// (Kimi's look like `functions.get_weather:0`). Each other character becomes
/// `_` and a hash of the whole id is added, the same way for the call and its
/// result, so they still match and two ids that differ only in such
/// characters (`a.b`, `a:b`) stay two.
fn tool_use_id(id: &str) -> Cow<'_, str> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if !id.is_empty() && id.chars().all(allowed) {
        return Cow::Borrowed(id);
    }
    let mut mapped: String = id
        .chars()
        .map(|c| if allowed(c) { c } else { '_' })
        .collect();
    mapped.push_str(&format!("_{:016x}", fnv1a(id.as_bytes())));
    Cow::Owned(mapped)
}

/// FNV-1a, 64 bits: fixed by its definition, so an id maps the same way in
/// every turn of a conversation, whichever build of the proxy sends it.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Builds the `/messages` body from an OpenAI request.
pub fn to_messages_request(provider: &str, request: &ChatRequest) -> Result<Value, ProviderError> {
    messages_body(provider, request).map(|(body, _)| body)
}

/// The `/messages` body, and the name of the tool a JSON answer is asked
/// through when `response_format` wants one (see [`json_output`]).
fn messages_body(
    provider: &str,
    request: &ChatRequest,
) -> Result<(Value, Option<String>), ProviderError> {
    super::one_choice_only(provider, "Anthropic Messages", request)?;
    let functions = super::function_tools(provider, "Anthropic Messages", request, true)?;
    let thinking_on = matches!(request.thinking_type(), Some("enabled" | "adaptive"));
    let mut messages: Vec<Value> = Vec::new();
    for (i, m) in request.messages.iter().enumerate() {
        let (role, mut blocks) = match m.role {
            Role::System | Role::Developer => continue,
            Role::User => ("user", content_blocks(provider, i, m.content.as_ref())?),
            Role::Assistant => {
                let text = content_blocks(provider, i, m.content.as_ref())?;
                let mut calls = Vec::new();
                for call in m.tool_calls.iter().flatten() {
                    calls.push(json!({
                        "type": "tool_use",
                        "id": tool_use_id(&call.id),
                        "name": call.name,
                        "input": arguments_object(provider, i, &call.arguments)?,
                    }));
                }
                // Signed thinking goes back as it came: Claude requires it on
                // the last assistant turn of a tool loop with thinking on.
                // With thinking off it is refused in a final assistant message
                // (and ignored elsewhere), and a message of thinking alone is
                // refused either way.
                let blocks = if thinking_on && !(text.is_empty() && calls.is_empty()) {
                    interleave(thinking_blocks(m), text, calls)
                } else {
                    text.into_iter().chain(calls).collect()
                };
                ("assistant", blocks)
            }
            Role::Tool => {
                let mut result = json!({
                    "type": "tool_result",
                    "tool_use_id": tool_use_id(m.tool_call_id.as_deref().unwrap_or_default()),
                    "content": m.text_content(),
                });
                // The content is sent as text, so a part's breakpoint marks the result.
                if let Some(Content::Parts(parts)) = &m.content
                    && let Some(mark) = parts.iter().rev().find_map(|p| p.extra.get(CACHE_CONTROL))
                {
                    result[CACHE_CONTROL] = mark.clone();
                }
                ("user", vec![result])
            }
        };
        mark_cache(&mut blocks, m);
        if blocks.is_empty() {
            continue;
        }
        // Consecutive turns of one role (several tool results) become one
        // message. A later assistant turn's thinking joins the message's
        // leading thinking: where it stood among the earlier turn's blocks
        // is not known, and a message with thinking must start with it.
        match messages.last_mut() {
            Some(last) if last["role"] == role => {
                if let Some(Value::Array(existing)) = last.get_mut("content") {
                    let (thinking, rest): (Vec<Value>, Vec<Value>) =
                        blocks.into_iter().partition(is_thinking);
                    let leading = existing.iter().take_while(|b| is_thinking(b)).count();
                    existing.splice(leading..leading, thinking);
                    existing.extend(rest);
                }
            }
            _ => messages.push(json!({ "role": role, "content": blocks })),
        }
    }

    let mut body = Map::new();
    body.insert("model".into(), request.model.clone().into());
    // Required by Anthropic, and above any thinking budget (or it answers 400).
    let thinking_budget = request
        .extra
        .get("thinking")
        .and_then(|t| t.get("budget_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    body.insert(
        "max_tokens".into(),
        request
            .token_limit()
            .unwrap_or_else(|| thinking_budget.saturating_add(DEFAULT_MAX_TOKENS))
            .into(),
    );
    if let Some(system) = system_field(request) {
        body.insert("system".into(), system);
    }
    body.insert("messages".into(), messages.into());
    body.insert("stream".into(), true.into());
    if let Some(t) = request.temperature {
        body.insert("temperature".into(), t.into());
    }
    if let Some(p) = request.top_p {
        body.insert("top_p".into(), p.into());
    }
    if let Some(stop) = request.stop_sequences() {
        body.insert("stop_sequences".into(), stop.into());
    }
    if let Some(thinking) = request.extra.get("thinking") {
        body.insert("thinking".into(), thinking.clone());
    }
    // `none` keeps the tools (with `{type:none}`, or beside a forced JSON
    // answer): a history holding tool calls needs the tools it called defined.
    let mut tools: Vec<Value> = functions
        .iter()
        .map(|function| {
            let mut tool = json!({
                "name": function.name,
                "input_schema": function.parameters.clone().unwrap_or_else(|| json!({"type": "object"})),
            });
            if let Some(d) = &function.description {
                tool["description"] = d.clone().into();
            }
            tool
        })
        .collect();
    if let Some(tool) = json_output(provider, request)? {
        // Forced, so the answer is the tool's input: JSON, to the schema.
        body.insert(
            "tool_choice".into(),
            json!({"type": "tool", "name": tool["name"]}),
        );
        let name = tool["name"].as_str().map(str::to_owned);
        tools.push(tool);
        body.insert("tools".into(), tools.into());
        return Ok((Value::Object(body), name));
    }
    if !tools.is_empty() {
        body.insert("tools".into(), tools.into());
        let mut choice = match &request.tool_choice {
            Some(choice) if choice.is_none() => json!({"type": "none"}),
            Some(ToolChoice::Named(tool)) => json!({"type": "tool", "name": tool.name}),
            // One tool allowed and required is that tool, named.
            Some(ToolChoice::Allowed { mode, tools }) if mode == "required" && tools.len() == 1 => {
                json!({"type": "tool", "name": tools[0].name})
            }
            Some(choice) if choice.is_required() => json!({"type": "any"}),
            _ => json!({"type": "auto"}),
        };
        // `none` takes no other field.
        if request.parallel_tool_calls == Some(false) && choice["type"] != "none" {
            choice["disable_parallel_tool_use"] = true.into();
        }
        body.insert("tool_choice".into(), choice);
    }
    Ok((Value::Object(body), None))
}

/// The tool name a JSON answer is asked through when the schema names none.
const JSON_OUTPUT_TOOL: &str = "json_output";

/// `response_format` `json_object` or `json_schema`, which Messages has no
/// field for, as one tool whose input schema is the wanted answer's; the
/// caller forces it, and the stream hands its input on as the content.
/// `text` (or no format) is `None`. Refused where the forced tool cannot
/// work: beside tools the model may call (with `tool_choice: "none"` they
/// stay, for the history, and the JSON tool is forced), or with thinking on
/// (Anthropic refuses a forced tool choice while thinking).
fn json_output(provider: &str, request: &ChatRequest) -> Result<Option<Value>, ProviderError> {
    let tool = match answer_format(provider, "Anthropic", request)? {
        None | Some(AnswerFormat::Text) => return Ok(None),
        Some(AnswerFormat::JsonObject) => json!({
            "name": JSON_OUTPUT_TOOL,
            "description": "Answer with a JSON object.",
            "input_schema": {"type": "object"},
        }),
        Some(AnswerFormat::JsonSchema(spec)) => {
            let text = |key: &str, default: &'static str| {
                spec.get(key)
                    .and_then(Value::as_str)
                    .unwrap_or(default)
                    .to_owned()
            };
            let schema = spec.get("schema").filter(|s| !s.is_null());
            json!({
                "name": text("name", JSON_OUTPUT_TOOL),
                "description": text("description", "Answer with JSON matching this schema."),
                "input_schema": schema.cloned().unwrap_or_else(|| json!({"type": "object"})),
            })
        }
    };
    let tools_callable = request.tools.as_ref().is_some_and(|t| !t.is_empty())
        && !request
            .tool_choice
            .as_ref()
            .is_some_and(ToolChoice::is_none);
    if tools_callable {
        return Err(format_refused(
            provider,
            "a JSON answer cannot be combined with callable tools on Anthropic models \
             (tool_choice \"none\" keeps them for the history)",
        ));
    }
    if request
        .thinking_type()
        .is_some_and(|kind| kind != "disabled")
    {
        return Err(format_refused(
            provider,
            "a JSON answer cannot be combined with thinking on Anthropic models",
        ));
    }
    Ok(Some(tool))
}

/// The `format` of the reasoning items this adapter writes (OpenRouter's
/// name for Claude's), and reads back.
const REASONING_FORMAT: &str = "anthropic-claude-v1";

/// Claude's thinking blocks from an assistant message's `reasoning_details`:
/// a signed `reasoning.text` becomes a `thinking` block, a
/// `reasoning.encrypted` a `redacted_thinking` one. Unsigned items and other
/// vendors' (a `format` that is not Claude's) cannot be verified by Claude and
/// are left out: a signed text without a format is taken (its signature is
/// Claude's check), encrypted data must say it is Claude's.
fn thinking_blocks(message: &Message) -> Vec<Thinking> {
    reasoning::items(message)
        .filter_map(|item| {
            let field = |key: &str| reasoning::field(item, key);
            let format = field("format");
            if format.is_some_and(|f| !f.starts_with("anthropic-claude"))
                || (format.is_none() && field("type") == Some("reasoning.encrypted"))
            {
                return None;
            }
            let block = match field("type")? {
                "reasoning.text" => json!({
                    "type": "thinking",
                    "thinking": field("text").unwrap_or_default(),
                    "signature": field("signature")?,
                }),
                "reasoning.encrypted" => {
                    json!({"type": "redacted_thinking", "data": field("data")?})
                }
                _ => return None,
            };
            let after_tool_calls = item
                .get(AFTER_TOOL_CALLS)
                .and_then(Value::as_u64)
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(0);
            let after_text = item.get(AFTER_TEXT).and_then(Value::as_bool) == Some(true);
            Some(Thinking {
                after_tool_calls,
                after_text,
                block,
            })
        })
        .collect()
}

/// A thinking block going back, with where it stood in its message.
struct Thinking {
    after_tool_calls: usize,
    after_text: bool,
    block: Value,
}

/// The keys of a reasoning item (on its first piece) that say where its
/// block stood: after how many tool calls, and after text. With interleaved
/// thinking Claude answers `thinking, tool_use, thinking, tool_use` (or
/// `text, thinking, ...`) and wants that order back.
const AFTER_TOOL_CALLS: &str = "after_tool_calls";
const AFTER_TEXT: &str = "after_text";

/// An assistant message's blocks in Claude's order: the thinking that came
/// before any text or tool call, the text, the thinking that came after the
/// text, then each tool call behind the thinking that followed the call
/// before it. (OpenAI's message holds one text, so where Claude put text
/// between calls it comes first.)
fn interleave(thinking: Vec<Thinking>, text: Vec<Value>, calls: Vec<Value>) -> Vec<Value> {
    let last_call = calls.len().saturating_sub(1);
    let mut before_text = Vec::new();
    let mut before_call: Vec<Vec<Value>> = vec![Vec::new(); last_call + 1];
    for t in thinking {
        if t.after_tool_calls == 0 && !t.after_text {
            before_text.push(t.block);
        } else if let Some(group) = before_call.get_mut(t.after_tool_calls.min(last_call)) {
            group.push(t.block);
        }
    }
    let mut blocks = before_text;
    blocks.extend(text);
    for (call, thinking) in calls.into_iter().zip(before_call.iter_mut()) {
        blocks.append(thinking);
        blocks.push(call);
    }
    // Thinking after text, in a message without tool calls.
    for rest in before_call {
        blocks.extend(rest);
    }
    blocks
}

/// Whether a block is Claude's reasoning, which must lead an assistant message.
fn is_thinking(block: &Value) -> bool {
    matches!(
        block.get("type").and_then(Value::as_str),
        Some("thinking" | "redacted_thinking")
    )
}

/// Anthropic's prompt-caching breakpoint, as OpenAI-shaped clients send it
/// (LiteLLM's and OpenRouter's convention): on a content part, or on a whole
/// message, meaning its last block.
const CACHE_CONTROL: &str = "cache_control";

/// Puts a message-level `cache_control` on the message's last block that
/// can carry one (thinking blocks cannot).
fn mark_cache(blocks: &mut [Value], message: &Message) {
    let Some(mark) = message.extra.get(CACHE_CONTROL) else {
        return;
    };
    if let Some(Value::Object(last)) = blocks.iter_mut().rev().find(|b| !is_thinking(b)) {
        last.entry(CACHE_CONTROL).or_insert_with(|| mark.clone());
    }
}

/// `system`: the system and developer text as one string, or as text blocks
/// when any of it carries a cache breakpoint (a string cannot).
fn system_field(request: &ChatRequest) -> Option<Value> {
    let is_system = |m: &&Message| matches!(m.role, Role::System | Role::Developer);
    let marked = request.messages.iter().filter(is_system).any(|m| {
        m.extra.contains_key(CACHE_CONTROL)
            || matches!(&m.content, Some(Content::Parts(parts))
                if parts.iter().any(|p| p.extra.contains_key(CACHE_CONTROL)))
    });
    if !marked {
        return system_text(request).map(Value::from);
    }
    // `system` takes text blocks only, and no empty one; other parts are
    // left out, as when the text is joined into a string.
    let text_block = |text: &str, mark: Option<&Value>| {
        let mut block = json!({"type": "text", "text": text});
        if let Some(mark) = mark {
            block[CACHE_CONTROL] = mark.clone();
        }
        block
    };
    let mut blocks = Vec::new();
    for m in request.messages.iter().filter(is_system) {
        let mut own: Vec<Value> = match &m.content {
            Some(Content::Text(t)) if !t.is_empty() => vec![text_block(t, None)],
            Some(Content::Parts(parts)) => parts
                .iter()
                .filter_map(|p| Some((p.text().filter(|t| !t.is_empty())?, p)))
                .map(|(text, part)| text_block(text, part.extra.get(CACHE_CONTROL)))
                .collect(),
            _ => Vec::new(),
        };
        mark_cache(&mut own, m);
        blocks.extend(own);
    }
    (!blocks.is_empty()).then(|| blocks.into())
}

fn content_blocks(
    provider: &str,
    index: usize,
    content: Option<&Content>,
) -> Result<Vec<Value>, ProviderError> {
    match content {
        None => Ok(Vec::new()),
        Some(Content::Text(t)) if t.is_empty() => Ok(Vec::new()),
        Some(Content::Text(t)) => Ok(vec![json!({"type": "text", "text": t})]),
        Some(Content::Parts(parts)) => parts
            .iter()
            .map(|part| {
                let mut block = if let Some(text) = part.text() {
                    json!({"type": "text", "text": text})
                } else if let Some(image) = &part.image_url {
                    match image.as_data_uri() {
                        Some(d) => json!({"type": "image", "source": {
                            "type": "base64", "media_type": d.media_type, "data": d.base64}}),
                        None => {
                            json!({"type": "image", "source": {"type": "url", "url": image.url}})
                        }
                    }
                } else if let Some(file) = part.file() {
                    document_block(provider, index, &file)?
                } else {
                    return Err(ProviderError::invalid_request(
                        provider,
                        format!(
                            "messages[{index}]: content part type {:?} has no Anthropic equivalent",
                            part.kind
                        ),
                    ));
                };
                if let Some(mark) = part.extra.get(CACHE_CONTROL) {
                    block[CACHE_CONTROL] = mark.clone();
                }
                Ok(block)
            })
            .collect(),
    }
}

/// A `file` part as Claude's `document` block: a PDF given inline (Claude
/// reads PDFs; an OpenAI file id means nothing to it).
fn document_block(
    provider: &str,
    index: usize,
    file: &FileRef<'_>,
) -> Result<Value, ProviderError> {
    let refuse =
        |why: String| ProviderError::invalid_request(provider, format!("messages[{index}]: {why}"));
    let Some(data) = file.file_data else {
        return Err(refuse(
            "a file part for a Claude model needs `file_data` (a base64 data: URI); \
             an OpenAI `file_id` cannot reach it"
                .into(),
        ));
    };
    let uri = DataUri::parse(data)
        .ok_or_else(|| refuse("`file_data` must be a base64 data: URI".into()))?;
    if uri.media_type != "application/pdf" {
        return Err(refuse(format!(
            "Claude models take files as PDF documents (application/pdf), not {}",
            uri.media_type
        )));
    }
    let mut block = json!({"type": "document", "source": {
        "type": "base64", "media_type": uri.media_type, "data": uri.base64}});
    if let Some(name) = file.filename {
        block["title"] = name.into();
    }
    Ok(block)
}

/// Maps `stop_reason` to `finish_reason`.
pub fn finish_reason(stop_reason: &str) -> FinishReason {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

/// Counts may be `null` (Anthropic's own SDK types them optional, and
/// Anthropic-shaped gateways send it); absent or `null` is 0.
#[derive(Deserialize)]
struct AnthropicUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

/// What one SSE stream has seen so far.
#[derive(Default)]
pub(crate) struct StreamState {
    prompt_tokens: u64,
    cached_tokens: u64,
    next_tool_index: u32,
    tool_calls_by_block: HashMap<u64, ToolBlock>,
    /// Thinking blocks being streamed: block index → their reasoning item's
    /// index. Their text streams as `reasoning_content` and, with their
    /// signature, as reasoning items the client sends back.
    reasoning_by_block: HashMap<u64, ItemWriter>,
    /// Whether any answer text has been streamed (see [`AFTER_TEXT`]).
    text_seen: bool,
    next_reasoning_index: u32,
    /// The forced tool a JSON answer was asked through, and its block once
    /// opened: its input is the answer's content, not a tool call.
    json_tool: Option<String>,
    json_block: Option<u64>,
    /// Whether the first content block has been announced to the client.
    opened: bool,
    done: bool,
}

/// A `tool_use` block being streamed as a tool call.
#[derive(Debug, Clone, Copy)]
struct ToolBlock {
    /// The call's index in the OpenAI stream.
    index: u32,
    /// Whether any of its input has come; a call that takes no input sends
    /// none, and OpenAI's arguments for it are `{}`, not an empty string.
    has_input: bool,
}

impl StreamState {
    /// A stream answering a request that asked its JSON answer through `json_tool`.
    fn answering(json_tool: Option<String>) -> Self {
        Self {
            json_tool,
            ..Self::default()
        }
    }
}

/// Converts one event; `Ok(None)` for events with nothing to say (ping, block stops).
impl SseConverter for StreamState {
    fn done(&self) -> bool {
        self.done
    }

    fn convert(
        &mut self,
        provider: &str,
        event: &SseEvent,
    ) -> Result<Option<ChatChunk>, ProviderError> {
        let st = self;
        let data: Value = serde_json::from_str(&event.data)
            .map_err(|e| ProviderError::protocol(provider, format!("bad event JSON: {e}")))?;
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(event.event.as_str());
        Ok(match kind {
            "message_start" => {
                if let Some(u) = data.pointer("/message/usage") {
                    let u: AnthropicUsage = serde_json::from_value(u.clone()).map_err(|e| {
                        ProviderError::protocol(provider, format!("bad usage: {e}"))
                    })?;
                    let cache_read = u.cache_read_input_tokens.unwrap_or(0);
                    st.prompt_tokens = u
                        .input_tokens
                        .unwrap_or(0)
                        .saturating_add(cache_read)
                        .saturating_add(u.cache_creation_input_tokens.unwrap_or(0));
                    st.cached_tokens = cache_read;
                }
                // Nothing for the client until the first content block (see
                // `opening`): an `overloaded_error` before it is then an HTTP 503.
                None
            }
            "content_block_start" => {
                let block = data.get("content_block").unwrap_or(&Value::Null);
                let block_index = block_index_of(&data);
                let name = block.get("name").and_then(Value::as_str);
                let block_type = block.get("type").and_then(Value::as_str);
                let is_tool = block_type == Some("tool_use");
                if let Some(kind @ ("thinking" | "redacted_thinking")) = block_type {
                    let mut item = ItemWriter::new(st.next_reasoning_index, REASONING_FORMAT);
                    if st.next_tool_index > 0 {
                        item = item.with(AFTER_TOOL_CALLS, st.next_tool_index);
                    }
                    if st.text_seen {
                        item = item.with(AFTER_TEXT, true);
                    }
                    st.next_reasoning_index += 1;
                    let text = |key: &str| block.get(key).and_then(Value::as_str).unwrap_or("");
                    if kind == "redacted_thinking" {
                        st.opened = true;
                        return Ok(Some(ChatChunk::delta(Delta::reasoning_items(item.piece(
                            "reasoning.encrypted",
                            "data",
                            text("data"),
                        )))));
                    }
                    // Gateways may fill the block in at its start.
                    let mut pieces = Vec::new();
                    if !text("thinking").is_empty() {
                        pieces.extend(item.piece("reasoning.text", "text", text("thinking")));
                    }
                    if !text("signature").is_empty() {
                        pieces.extend(item.piece("reasoning.text", "signature", text("signature")));
                    }
                    st.reasoning_by_block.insert(block_index, item);
                    if pieces.is_empty() {
                        opening(&mut st.opened)
                    } else {
                        st.opened = true;
                        Some(ChatChunk::delta(Delta {
                            reasoning_content: Some(text("thinking").to_owned())
                                .filter(|t| !t.is_empty()),
                            reasoning_details: Some(pieces),
                            ..Delta::default()
                        }))
                    }
                } else if is_tool && name.is_some() && name == st.json_tool.as_deref() {
                    st.json_block = Some(block_index);
                    opening(&mut st.opened)
                } else if is_tool {
                    st.opened = true;
                    let index = st.next_tool_index;
                    st.next_tool_index += 1;
                    st.tool_calls_by_block.insert(
                        block_index,
                        ToolBlock {
                            index,
                            has_input: false,
                        },
                    );
                    let id = block
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    let name = name.unwrap_or_default().to_owned();
                    Some(ChatChunk::delta(Delta::tool_call(ToolCallDelta::start(
                        index,
                        id,
                        name,
                        String::new(),
                    ))))
                } else {
                    opening(&mut st.opened)
                }
            }
            "content_block_delta" => {
                let delta = data.get("delta").unwrap_or(&Value::Null);
                let text = |key: &str| {
                    delta
                        .get(key)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let piece = text("text");
                        st.text_seen |= !piece.is_empty();
                        Some(ChatChunk::delta(Delta::content(piece)))
                    }
                    Some("thinking_delta") => {
                        let piece = text("thinking");
                        let item = st.reasoning_by_block.get_mut(&block_index_of(&data));
                        Some(ChatChunk::delta(Delta {
                            reasoning_details: item
                                .map(|item| item.piece("reasoning.text", "text", piece.as_str())),
                            ..Delta::reasoning(piece)
                        }))
                    }
                    Some("signature_delta") => {
                        let signature = text("signature");
                        st.reasoning_by_block
                            .get_mut(&block_index_of(&data))
                            .filter(|_| !signature.is_empty())
                            .map(|item| {
                                ChatChunk::delta(Delta::reasoning_items(item.piece(
                                    "reasoning.text",
                                    "signature",
                                    signature.as_str(),
                                )))
                            })
                    }
                    Some("input_json_delta") => {
                        let block_index = block_index_of(&data);
                        if st.json_block == Some(block_index) {
                            return Ok(Some(ChatChunk::delta(Delta::content(text(
                                "partial_json",
                            )))));
                        }
                        let block =
                            st.tool_calls_by_block
                                .get_mut(&block_index)
                                .ok_or_else(|| {
                                    ProviderError::protocol(
                                        provider,
                                        format!("input_json_delta for unknown block {block_index}"),
                                    )
                                })?;
                        let input = text("partial_json");
                        block.has_input |= !input.is_empty();
                        Some(ChatChunk::delta(Delta::tool_call(
                            ToolCallDelta::arguments(block.index, input),
                        )))
                    }
                    _ => None,
                }
            }
            "content_block_stop" => {
                let block_index = block_index_of(&data);
                st.reasoning_by_block.remove(&block_index);
                match st.tool_calls_by_block.get(&block_index) {
                    Some(block) if !block.has_input => Some(ChatChunk::delta(Delta::tool_call(
                        ToolCallDelta::arguments(block.index, "{}".to_owned()),
                    ))),
                    _ => None,
                }
            }
            "message_delta" => {
                let reason = data
                    .pointer("/delta/stop_reason")
                    .and_then(Value::as_str)
                    .map_or(FinishReason::Stop, finish_reason);
                // The forced JSON tool ends with `tool_use`; to the client it
                // was an answer, not a call.
                let reason = match reason {
                    FinishReason::ToolCalls if st.json_block.is_some() => FinishReason::Stop,
                    other => other,
                };
                let output = data
                    .pointer("/usage/output_tokens")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                let mut usage = Usage::new(st.prompt_tokens, output);
                if st.cached_tokens > 0 {
                    usage.prompt_tokens_details = Some(PromptTokensDetails {
                        cached_tokens: st.cached_tokens,
                    });
                }
                Some(ChatChunk::finish(reason, Some(usage)))
            }
            "message_stop" => {
                st.done = true;
                None
            }
            "error" => {
                let error = data.get("error").unwrap_or(&data);
                let kind_name = error
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let mut err = error_from_value(provider, error);
                if let ProviderError::Upstream { kind, .. } = &mut err {
                    *kind = match kind_name {
                        "overloaded_error" => UpstreamErrorKind::Overloaded,
                        "rate_limit_error" => UpstreamErrorKind::RateLimited,
                        _ => UpstreamErrorKind::Server,
                    };
                }
                return Err(err);
            }
            _ => None,
        })
    }
}

/// The `index` of a content block event.
fn block_index_of(data: &Value) -> u64 {
    data.get("index").and_then(Value::as_u64).unwrap_or(0)
}

/// Sends the request to `{base}/messages`.
pub async fn stream_chat(
    upstream: &Upstream,
    request: &ChatRequest,
) -> Result<ChunkStream, ProviderError> {
    let (body, json_tool) = messages_body(upstream.provider(), request)?;
    let response = upstream
        .post_json("/messages", &body, &[("anthropic-version", "2023-06-01")])
        .await?;
    let ended = EndMarker::default();
    Ok(convert_sse(
        upstream.provider().to_owned(),
        response.sse_events(&ended),
        &ended,
        StreamState::answering(json_tool),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::{convert_all, convert_and_assemble};

    #[test]
    fn request_moves_system_and_tool_results() {
        let req: ChatRequest = serde_json::from_value(json!({
            "model": "claude-sonnet-4-5",
            "tool_choice": "required",
            "messages": [
                {"role": "system", "content": "Be terse."},
                {"role": "user", "content": "weather in Oslo?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}},
                    {"id": "toolu_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Bergen\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "12C"},
                {"role": "tool", "tool_call_id": "toolu_2", "content": "9C"}
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
        }))
        .unwrap();
        let body = to_messages_request("opencode", &req).unwrap();
        assert_eq!(body["system"], "Be terse.");
        assert_eq!(body["max_tokens"], DEFAULT_MAX_TOKENS);
        assert!(body.get("temperature").is_none());
        assert_eq!(body["messages"].as_array().unwrap().len(), 3);
        assert_eq!(
            body["messages"][1]["content"][1]["input"],
            json!({"city": "Bergen"})
        );
        assert_eq!(body["messages"][2]["content"].as_array().unwrap().len(), 2);
        assert_eq!(body["messages"][2]["content"][0]["tool_use_id"], "toolu_1");
        assert_eq!(body["tool_choice"], json!({"type": "any"}));
        assert_eq!(body["tools"][0]["input_schema"], json!({"type": "object"}));
    }

    #[test]
    fn other_providers_tool_call_ids_are_made_ones_claude_takes() {
        let req: ChatRequest = serde_json::from_value(json!({
            "model": "claude-sonnet-4-5",
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "functions.get_weather:0", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
                    {"id": "call_9-x", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
                ]},
                {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": "12C"},
                {"role": "tool", "tool_call_id": "call_9-x", "content": "9C"}
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather"}}]
        }))
        .unwrap();
        let body = to_messages_request("opencode", &req).unwrap();
        let calls = &body["messages"][1]["content"];
        let results = &body["messages"][2]["content"];
        let mapped = calls[0]["id"].as_str().unwrap();
        assert!(mapped.starts_with("functions_get_weather_0_"), "{mapped}");
        assert!(
            mapped
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "{mapped}"
        );
        assert_eq!(results[0]["tool_use_id"], mapped);
        // Ids that differ only in characters Claude refuses stay different.
        assert_ne!(tool_use_id("a.b"), tool_use_id("a:b"));
        assert_eq!(tool_use_id("a.b"), tool_use_id("a.b"));
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        // Ids Claude takes are sent as they are.
        assert_eq!(calls[1]["id"], "call_9-x");
        assert_eq!(results[1]["tool_use_id"], "call_9-x");
    }

    fn ev(event: &str, data: Value) -> Result<SseEvent, ProviderError> {
        Ok(SseEvent {
            event: event.into(),
            data: data.to_string(),
        })
    }

    fn block_start(index: u64, block: Value) -> Result<SseEvent, ProviderError> {
        ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        )
    }

    fn block_delta(index: u64, delta: Value) -> Result<SseEvent, ProviderError> {
        ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index, "delta": delta}),
        )
    }

    fn block_stop(index: u64) -> Result<SseEvent, ProviderError> {
        ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        )
    }

    #[test]
    fn stream_converts_tool_use_with_running_index_and_stops() {
        let events = vec![
            ev(
                "message_start",
                json!({"type": "message_start", "message": {"usage": {"input_tokens": 10, "cache_read_input_tokens": 5}}}),
            ),
            ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            ev("ping", json!({"type": "ping"})),
            ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Checking"}}),
            ),
            ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}}),
            ),
            ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\":"}}),
            ),
            ev(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
            ),
            ev("message_stop", json!({"type": "message_stop"})),
            ev("ping", json!({"type": "ping", "cost": "0.01"})),
        ];
        let out: Vec<_> = convert_all(StreamState::default(), events);
        assert_eq!(out.len(), 5);
        // The first content block opens the stream with an empty chunk.
        assert_eq!(
            out[0].as_ref().unwrap().choices[0].delta.content.as_deref(),
            Some("")
        );
        let start = out[2].as_ref().unwrap().choices[0]
            .delta
            .tool_calls
            .clone()
            .unwrap();
        assert_eq!(start[0].index, 0);
        assert_eq!(start[0].id.as_deref(), Some("toolu_1"));
        let finish = out[4].as_ref().unwrap();
        assert_eq!(
            finish.choices[0].finish_reason,
            Some(FinishReason::ToolCalls)
        );
        let usage = finish.usage.clone().unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (15, 9));
    }

    #[test]
    fn a_tool_called_without_input_gets_empty_object_arguments() {
        let block = |index: u64, id: &str| {
            ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": id, "name": "now", "input": {}}}),
            )
        };
        let events = vec![
            block(0, "toolu_a"),
            // Claude may send one empty piece, or none at all.
            ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": ""}}),
            ),
            block_stop(0),
            block(1, "toolu_b"),
            ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"tz\":\"UTC\"}"}}),
            ),
            block_stop(1),
            block(2, "toolu_c"),
            block_stop(2),
            ev(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 3}}),
            ),
        ];
        let mut arguments = [String::new(), String::new(), String::new()];
        for chunk in convert_all(StreamState::default(), events) {
            for call in chunk.unwrap().choices[0].delta.tool_calls.iter().flatten() {
                let index = usize::try_from(call.index).unwrap();
                if let Some(function) = &call.function {
                    arguments[index].push_str(function.arguments.as_deref().unwrap_or_default());
                }
            }
        }
        assert_eq!(arguments, ["{}", "{\"tz\":\"UTC\"}", "{}"]);
    }

    #[test]
    fn signed_thinking_goes_to_the_client_and_back_to_claude() {
        let events = vec![
            block_start(0, json!({"type": "thinking", "thinking": ""})),
            block_delta(0, json!({"type": "thinking_delta", "thinking": "Oslo is "})),
            block_delta(
                0,
                json!({"type": "thinking_delta", "thinking": "in Norway."}),
            ),
            block_delta(
                0,
                json!({"type": "signature_delta", "signature": "EqQBsig"}),
            ),
            block_stop(0),
            block_start(1, json!({"type": "redacted_thinking", "data": "EmwKAhgB"})),
            block_stop(1),
            block_start(
                2,
                json!({"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}),
            ),
            block_delta(
                2,
                json!({"type": "input_json_delta", "partial_json": "{\"city\":\"Oslo\"}"}),
            ),
            block_stop(2),
            ev(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
            ),
        ];
        let (chunks, message) = convert_and_assemble(StreamState::default(), events);
        let mut live_reasoning = String::new();
        let mut pieces = Vec::new();
        for chunk in &chunks {
            if let Some(choice) = chunk.choices.first() {
                live_reasoning.push_str(
                    choice
                        .delta
                        .reasoning_content
                        .as_deref()
                        .unwrap_or_default(),
                );
                pieces.extend(choice.delta.reasoning_details.iter().flatten().cloned());
            }
        }
        assert_eq!(live_reasoning, "Oslo is in Norway.");
        // Each item names its format once, on its first piece: clients that
        // join pieces join every other string key.
        let formats: Vec<bool> = pieces.iter().map(|p| p.get("format").is_some()).collect();
        assert_eq!(formats, [true, false, false, true]);
        let details = message.reasoning_details.clone().unwrap();
        assert_eq!(
            details,
            vec![
                json!({"type": "reasoning.text", "text": "Oslo is in Norway.", "signature": "EqQBsig",
                       "format": "anthropic-claude-v1", "index": 0}),
                json!({"type": "reasoning.encrypted", "data": "EmwKAhgB",
                       "format": "anthropic-claude-v1", "index": 1}),
            ]
        );

        // The client sends the message back (plus items Claude cannot check).
        let mut sent_back = details;
        sent_back.push(json!({"type": "reasoning.text", "text": "unsigned"}));
        sent_back.push(
            json!({"type": "reasoning.encrypted", "data": "x", "format": "google-gemini-v1"}),
        );
        let req: ChatRequest = serde_json::from_value(json!({
            "model": "claude-sonnet-4-5",
            "thinking": {"type": "enabled", "budget_tokens": 2000},
            "messages": [
                {"role": "user", "content": "weather in Oslo?"},
                {"role": "assistant", "content": null, "reasoning_details": sent_back,
                 "tool_calls": message.tool_calls},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "12C"}
            ]
        }))
        .unwrap();
        let body = to_messages_request("opencode", &req).unwrap();
        assert_eq!(
            body["messages"][1]["content"],
            json!([
                {"type": "thinking", "thinking": "Oslo is in Norway.", "signature": "EqQBsig"},
                {"type": "redacted_thinking", "data": "EmwKAhgB"},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}
            ])
        );
    }

    #[test]
    fn interleaved_thinking_goes_back_in_its_order() {
        let mut events = Vec::new();
        for (block, (thought, call)) in [(0, ("first", "toolu_a")), (2, ("second", "toolu_b"))] {
            events.push(block_start(
                block,
                json!({"type": "thinking", "thinking": ""}),
            ));
            events.push(block_delta(
                block,
                json!({"type": "thinking_delta", "thinking": thought}),
            ));
            events.push(block_delta(
                block,
                json!({"type": "signature_delta", "signature": thought}),
            ));
            events.push(block_start(
                block + 1,
                json!({"type": "tool_use", "id": call, "name": "w", "input": {}}),
            ));
            events.push(block_delta(
                block + 1,
                json!({"type": "input_json_delta", "partial_json": "{}"}),
            ));
        }
        events.push(ev(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
        ));
        let (_, message) = convert_and_assemble(StreamState::default(), events);
        let details = message.reasoning_details.unwrap();
        assert_eq!(details[1]["after_tool_calls"], 1, "{details:?}");
        assert!(details[0].get("after_tool_calls").is_none());
        let req: ChatRequest = serde_json::from_value(json!({
            "model": "claude-opus-4-6",
            "thinking": {"type": "adaptive"},
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": "Checking.", "reasoning_details": details,
                 "tool_calls": message.tool_calls},
                {"role": "tool", "tool_call_id": "toolu_a", "content": "12C"},
                {"role": "tool", "tool_call_id": "toolu_b", "content": "9C"}
            ]
        }))
        .unwrap();
        let body = to_messages_request("opencode", &req).unwrap();
        let order: Vec<String> = body["messages"][1]["content"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                let detail = b
                    .get("signature")
                    .or(b.get("id"))
                    .or(b.get("text"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                format!("{}:{detail}", b["type"].as_str().unwrap())
            })
            .collect();
        assert_eq!(
            order,
            [
                "thinking:first",
                "text:Checking.",
                "tool_use:toolu_a",
                "thinking:second",
                "tool_use:toolu_b"
            ]
        );
    }

    #[test]
    fn thinking_after_text_goes_back_after_it() {
        let thinking = |after_tool_calls: usize, after_text: bool, name: &str| Thinking {
            after_tool_calls,
            after_text,
            block: json!({"type": "thinking", "thinking": name}),
        };
        let names = |blocks: Vec<Value>| -> Vec<String> {
            blocks
                .iter()
                .map(|b| {
                    b.get("thinking")
                        .or(b.get("text"))
                        .or(b.get("id"))
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect()
        };
        let text = vec![json!({"type": "text", "text": "T"})];
        let calls = vec![
            json!({"type": "tool_use", "id": "C1"}),
            json!({"type": "tool_use", "id": "C2"}),
        ];
        let order = interleave(
            vec![
                thinking(0, false, "a"),
                thinking(0, true, "b"),
                thinking(1, true, "c"),
                thinking(9, true, "d"),
            ],
            text.clone(),
            calls,
        );
        assert_eq!(names(order), ["a", "T", "b", "C1", "c", "d", "C2"]);
        // No calls: thinking after the text stays after it.
        assert_eq!(
            names(interleave(vec![thinking(0, true, "b")], text, Vec::new())),
            ["T", "b"]
        );
    }

    #[test]
    fn thinking_goes_back_only_with_thinking_on_and_always_first() {
        let signed = json!([{"type": "reasoning.text", "text": "t1", "signature": "s1"}]);
        let later = json!([{"type": "reasoning.text", "text": "t2", "signature": "s2"},
                           {"type": "reasoning.text", "text": "no signature", "signature": ""}]);
        let body = |thinking: Value| {
            let req: ChatRequest = serde_json::from_value(json!({
                "model": "claude-sonnet-4-5",
                "thinking": thinking,
                "messages": [
                    {"role": "user", "content": "weather?"},
                    {"role": "assistant", "content": "Let me look.", "reasoning_details": signed},
                    {"role": "assistant", "content": null, "reasoning_details": later,
                     "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
                    {"role": "tool", "tool_call_id": "toolu_1", "content": "12C"},
                    // Cut off while thinking: reasoning alone, with a breakpoint.
                    {"role": "assistant", "content": "", "reasoning_details": signed,
                     "cache_control": {"type": "ephemeral"}}
                ]
            }))
            .unwrap();
            to_messages_request("opencode", &req).unwrap()
        };
        let on = body(json!({"type": "enabled", "budget_tokens": 1024}));
        let types: Vec<&str> = on["messages"][1]["content"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["type"].as_str().unwrap())
            .collect();
        // Two assistant turns in a row make one message; its thinking leads.
        assert_eq!(types, ["thinking", "thinking", "text", "tool_use"]);
        assert_eq!(on["messages"][1]["content"][1]["signature"], "s2");
        // A message of reasoning alone is not sent (nor its breakpoint).
        assert_eq!(on["messages"].as_array().unwrap().len(), 3);
        let off = body(json!({"type": "disabled"}));
        assert!(
            off["messages"][1]["content"]
                .as_array()
                .unwrap()
                .iter()
                .all(|b| !is_thinking(b)),
            "{off}"
        );
    }

    #[test]
    fn one_choice_an_empty_stop_and_foreign_encrypted_reasoning() {
        let request = |extra: Value| -> ChatRequest {
            let mut body = json!({"model": "claude-sonnet-4-5", "thinking": {"type": "enabled", "budget_tokens": 1024},
                "messages": [{"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "ok", "reasoning_details": [
                        {"type": "reasoning.encrypted", "data": "no-format"},
                        {"type": "reasoning.encrypted", "data": "gemini", "format": "google-gemini-v1"},
                        {"type": "reasoning.encrypted", "data": "claude", "format": "anthropic-claude-v1"}]},
                    {"role": "user", "content": "more"}]});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            serde_json::from_value(body).unwrap()
        };
        let err = to_messages_request("opencode", &request(json!({"n": 2}))).unwrap_err();
        assert!(err.to_string().contains("n must be 1"), "{err}");
        let body = to_messages_request("opencode", &request(json!({"stop": ""}))).unwrap();
        assert!(body.get("stop_sequences").is_none(), "{body}");
        assert_eq!(
            body["messages"][1]["content"],
            json!([{"type": "redacted_thinking", "data": "claude"}, {"type": "text", "text": "ok"}])
        );
    }

    #[test]
    fn a_message_breakpoint_skips_thinking_and_a_tool_result_keeps_its_parts() {
        let req: ChatRequest = serde_json::from_value(json!({
            "model": "claude-sonnet-4-5",
            "thinking": {"type": "adaptive"},
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": ""},
                    {"type": "text", "text": "Rules.", "cache_control": {"type": "ephemeral"}}]},
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": null, "cache_control": {"type": "ephemeral"},
                 "reasoning_details": [{"type": "reasoning.text", "text": "t", "signature": "s"}],
                 "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "toolu_1",
                 "content": [{"type": "text", "text": "12C", "cache_control": {"type": "ephemeral"}}]}
            ]
        }))
        .unwrap();
        let body = to_messages_request("opencode", &req).unwrap();
        assert_eq!(
            body["system"],
            json!([{"type": "text", "text": "Rules.", "cache_control": {"type": "ephemeral"}}])
        );
        let assistant = &body["messages"][1]["content"];
        assert!(assistant[0].get("cache_control").is_none(), "{assistant}");
        assert_eq!(assistant[1]["cache_control"], json!({"type": "ephemeral"}));
        assert_eq!(
            body["messages"][2]["content"][0]["cache_control"],
            json!({"type": "ephemeral"})
        );
    }

    #[test]
    fn cache_breakpoints_reach_claude_on_parts_messages_and_system() {
        let ephemeral = json!({"type": "ephemeral"});
        let req: ChatRequest = serde_json::from_value(json!({
            "model": "claude-sonnet-4-5",
            "messages": [
                {"role": "system", "content": [
                    {"type": "text", "text": "Long rules."},
                    {"type": "text", "text": "The corpus.", "cache_control": {"type": "ephemeral"}}
                ]},
                {"role": "user", "content": [
                    {"type": "text", "text": "Big document.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                    {"type": "text", "text": "Question?"}
                ]},
                {"role": "assistant", "content": "Answer.", "cache_control": {"type": "ephemeral"}},
                {"role": "user", "content": "More?"}
            ]
        }))
        .unwrap();
        let body = to_messages_request("opencode", &req).unwrap();
        assert_eq!(
            body["system"],
            json!([{"type": "text", "text": "Long rules."},
                   {"type": "text", "text": "The corpus.", "cache_control": ephemeral}])
        );
        let messages = &body["messages"];
        assert_eq!(
            messages[0]["content"][0]["cache_control"],
            json!({"type": "ephemeral", "ttl": "1h"})
        );
        assert!(messages[0]["content"][1].get("cache_control").is_none());
        assert_eq!(messages[1]["content"][0]["cache_control"], ephemeral);
        assert!(messages[2]["content"][0].get("cache_control").is_none());
        // Without a breakpoint the system text stays a string.
        let plain: ChatRequest = serde_json::from_value(json!({
            "model": "claude-sonnet-4-5",
            "messages": [{"role": "system", "content": [{"type": "text", "text": "a"}]},
                         {"role": "developer", "content": "b"},
                         {"role": "user", "content": "hi"}]
        }))
        .unwrap();
        assert_eq!(
            to_messages_request("opencode", &plain).unwrap()["system"],
            "a\n\nb"
        );
    }

    fn json_request(format: Value, extra: Value) -> Result<Value, ProviderError> {
        let mut req = json!({"model": "claude-sonnet-4-5", "response_format": format,
                             "messages": [{"role": "user", "content": "where?"}]});
        req.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        to_messages_request("opencode", &serde_json::from_value(req).unwrap())
    }

    #[test]
    fn a_json_answer_is_asked_through_one_forced_tool() {
        let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}});
        let body = json_request(
            json!({"type": "json_schema", "json_schema": {"name": "place", "schema": schema, "strict": true}}),
            json!({}),
        )
        .unwrap();
        assert_eq!(
            body["tools"],
            json!([{"name": "place", "description": "Answer with JSON matching this schema.",
                    "input_schema": schema}])
        );
        assert_eq!(
            body["tool_choice"],
            json!({"type": "tool", "name": "place"})
        );
        let body = json_request(json!({"type": "json_object"}), json!({})).unwrap();
        assert_eq!(body["tools"][0]["name"], JSON_OUTPUT_TOOL);
        assert_eq!(body["tools"][0]["input_schema"], json!({"type": "object"}));
        let body = json_request(json!({"type": "text"}), json!({})).unwrap();
        assert!(body.get("tools").is_none() && body.get("tool_choice").is_none());
    }

    #[test]
    fn tool_choice_none_keeps_the_tools_the_history_called() {
        let req: ChatRequest = serde_json::from_value(json!({
            "model": "claude-sonnet-4-5", "tool_choice": "none", "parallel_tool_calls": false,
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "12C"}
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather"}}]
        }))
        .unwrap();
        let body = to_messages_request("opencode", &req).unwrap();
        assert_eq!(body["tools"][0]["name"], "get_weather");
        assert_eq!(body["tool_choice"], json!({"type": "none"}));
    }

    #[test]
    fn allowed_tools_narrow_the_tools_but_keep_those_the_history_called() {
        let tools = json!([
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "function", "function": {"name": "get_time"}},
            {"type": "function", "function": {"name": "send_mail"}}
        ]);
        let allowed = |mode: &str, names: &[&str]| {
            json!({"type": "allowed_tools", "allowed_tools": {"mode": mode, "tools":
                names.iter().map(|n| json!({"type": "function", "function": {"name": n}})).collect::<Vec<_>>()}})
        };
        let body = |choice: Value| {
            let req: ChatRequest = serde_json::from_value(json!({
                "model": "claude-sonnet-4-5", "tools": tools, "tool_choice": choice,
                "messages": [
                    {"role": "user", "content": "weather?"},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
                    {"role": "tool", "tool_call_id": "toolu_1", "content": "12C"}
                ]
            }))
            .unwrap();
            to_messages_request("opencode", &req).unwrap()
        };
        let names = |body: &Value| -> Vec<String> {
            body["tools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_owned())
                .collect()
        };
        let auto = body(allowed("auto", &["get_time"]));
        assert_eq!(names(&auto), ["get_weather", "get_time"]);
        assert_eq!(auto["tool_choice"], json!({"type": "auto"}));
        let one = body(allowed("required", &["get_time"]));
        assert_eq!(
            one["tool_choice"],
            json!({"type": "tool", "name": "get_time"})
        );
        let two = body(allowed("required", &["get_time", "send_mail"]));
        assert_eq!(names(&two), ["get_weather", "get_time", "send_mail"]);
        assert_eq!(two["tool_choice"], json!({"type": "any"}));
    }

    #[test]
    fn pdf_file_parts_become_documents_and_other_files_are_refused() {
        let request = |file: Value| -> Result<Value, String> {
            let req: ChatRequest = serde_json::from_value(json!({
                "model": "claude-sonnet-4-5",
                "messages": [{"role": "user", "content": [
                    {"type": "text", "text": "summarise"},
                    {"type": "file", "file": file}]}]
            }))
            .unwrap();
            to_messages_request("opencode", &req).map_err(|e| e.to_string())
        };
        let body = request(
            json!({"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}),
        )
        .unwrap();
        assert_eq!(
            body["messages"][0]["content"][1],
            json!({"type": "document", "title": "a.pdf",
                   "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}})
        );
        let err = request(json!({"file_id": "file-abc"})).unwrap_err();
        assert!(
            err.contains("messages[0]") && err.contains("`file_id` cannot reach it"),
            "{err}"
        );
        let err = request(json!({"file_data": "data:text/csv;base64,YQ=="})).unwrap_err();
        assert!(err.contains("not text/csv"), "{err}");
        let err = request(json!({"file_data": "https://example.com/a.pdf"})).unwrap_err();
        assert!(err.contains("base64 data: URI"), "{err}");
    }

    #[test]
    fn custom_tools_and_their_calls_are_refused_by_name() {
        let refused = |extra: Value| {
            let mut body = json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let req: ChatRequest = serde_json::from_value(body).unwrap();
            to_messages_request("opencode", &req)
                .unwrap_err()
                .to_string()
        };
        let err =
            refused(json!({"tools": [{"type": "custom", "custom": {"name": "apply_patch"}}]}));
        assert!(
            err.contains("`apply_patch` is a custom tool") && err.contains("has no custom tools"),
            "{err}"
        );
        let err = refused(json!({"messages": [
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c", "type": "custom", "custom": {"name": "apply_patch", "input": "x"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "ok"}]}));
        assert!(
            err.contains("messages[0] holds a call of the custom tool `apply_patch`"),
            "{err}"
        );
    }

    #[test]
    fn a_json_answer_after_tool_calls_keeps_their_tools() {
        let body = json_request(
            json!({"type": "json_object"}),
            json!({"tool_choice": "none", "thinking": {"type": "disabled"},
                   "tools": [{"type": "function", "function": {"name": "get_weather"}}]}),
        )
        .unwrap();
        let names: Vec<&str> = body["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["get_weather", JSON_OUTPUT_TOOL]);
        assert_eq!(
            body["tool_choice"],
            json!({"type": "tool", "name": JSON_OUTPUT_TOOL})
        );
    }

    #[test]
    fn a_json_answer_anthropic_cannot_give_is_refused() {
        let weather = json!({"tools": [{"type": "function", "function": {"name": "get_weather"}}]});
        let thinking = json!({"thinking": {"type": "enabled", "budget_tokens": 2000}});
        for (format, extra) in [
            (json!({"type": "json_object"}), weather),
            (json!({"type": "json_object"}), thinking),
            (json!({"type": "json_schema"}), json!({})),
            (json!({"type": "grammar"}), json!({})),
        ] {
            match json_request(format.clone(), extra) {
                Err(ProviderError::InvalidRequest { message, .. }) => {
                    assert!(message.starts_with("response_format: "), "{message}");
                }
                other => panic!("{format}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_forced_json_tool_streams_as_content_and_stops() {
        let events = vec![
            ev(
                "message_start",
                json!({"type": "message_start", "message": {"usage": {"input_tokens": 10}}}),
            ),
            ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "place", "input": {}}}),
            ),
            ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"city\":"}}),
            ),
            ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "\"Oslo\"}"}}),
            ),
            ev(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 6}}),
            ),
            ev("message_stop", json!({"type": "message_stop"})),
        ];
        let out: Vec<ChatChunk> =
            convert_all(StreamState::answering(Some("place".into())), events.clone())
                .into_iter()
                .map(Result::unwrap)
                .collect();
        let content: String = out
            .iter()
            .filter_map(|c| c.choices.first()?.delta.content.clone())
            .collect();
        assert_eq!(content, r#"{"city":"Oslo"}"#);
        assert!(
            out.iter()
                .all(|c| c.choices.iter().all(|ch| ch.delta.tool_calls.is_none()))
        );
        assert_eq!(
            out.last().unwrap().choices[0].finish_reason,
            Some(FinishReason::Stop)
        );
        // Without a JSON answer asked for, the same tool is a tool call.
        let plain = convert_all(StreamState::default(), events);
        assert_eq!(
            plain.last().unwrap().as_ref().unwrap().choices[0].finish_reason,
            Some(FinishReason::ToolCalls)
        );
    }

    #[test]
    fn a_thinking_budget_raises_the_default_token_limit_only() {
        let request = |extra: Value| -> ChatRequest {
            let mut req = json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]});
            req.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            serde_json::from_value(req).unwrap()
        };
        let thinking = json!({"thinking": {"type": "enabled", "budget_tokens": 8000}});
        let body = to_messages_request("opencode", &request(thinking)).unwrap();
        assert_eq!(body["max_tokens"], 8000 + DEFAULT_MAX_TOKENS);
        assert_eq!(body["thinking"]["budget_tokens"], 8000);
        let capped =
            json!({"max_tokens": 9000, "thinking": {"type": "enabled", "budget_tokens": 8000}});
        let body = to_messages_request("opencode", &request(capped)).unwrap();
        assert_eq!(body["max_tokens"], 9000);
    }

    #[test]
    fn null_usage_counts_are_zero() {
        let events = vec![
            ev(
                "message_start",
                json!({"type": "message_start", "message": {"usage": {"input_tokens": 7, "cache_read_input_tokens": null, "cache_creation_input_tokens": null}}}),
            ),
            ev(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}}),
            ),
            ev("message_stop", json!({"type": "message_stop"})),
        ];
        let out: Vec<_> = convert_all(StreamState::default(), events);
        let usage = out.last().unwrap().as_ref().unwrap().usage.clone().unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (7, 2));
    }

    #[test]
    fn error_events_end_the_stream() {
        let events = vec![
            ev(
                "message_start",
                json!({"type": "message_start", "message": {}}),
            ),
            ev(
                "error",
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            ),
            ev("message_stop", json!({"type": "message_stop"})),
        ];
        let out: Vec<_> = convert_all(StreamState::default(), events);
        // The error is the stream's first item, so the edge answers it as an
        // HTTP error (503), not as an error inside a 200.
        assert_eq!(out.len(), 1);
        match out[0].as_ref().unwrap_err() {
            ProviderError::Upstream { kind, message, .. } => {
                assert_eq!(*kind, UpstreamErrorKind::Overloaded);
                assert_eq!(message, "Overloaded");
            }
            other => panic!("{other:?}"),
        }
    }
}
