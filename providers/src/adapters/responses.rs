//! OpenAI Responses (`/responses`), as OpenCode Zen serves its `gpt-5*` models.
//!
//! Requests: system text goes to `instructions`, tools are flat, tool calls and
//! their results become `function_call` / `function_call_output` items
//! (`custom_tool_call` / `custom_tool_call_output` for custom tools),
//! `store:false`. Streams: there is no `[DONE]`; the stream ends at
//! `response.completed`, `response.incomplete` or `response.failed`. The
//! `*.done` events repeat text already sent and are skipped. The OpenAI tool-call
//! id is the item's `call_id` (what the client sends back), looked up by `item_id`.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value, json};

use crate::error::{ProviderError, UpstreamErrorKind};
use crate::http::{EndMarker, Upstream};
use crate::openai::{
    ChatChunk, ChatRequest, CompletionTokensDetails, Content, Delta, FinishReason, Message,
    PromptTokensDetails, Role, Tool, ToolCallDelta, ToolChoice, ToolKind, ToolRef, Usage,
};
use crate::provider::ChunkStream;
use crate::sse::SseEvent;
use crate::stream::error_from_value;

use super::reasoning::{self, ItemWriter};
use super::{
    AnswerFormat, SseConverter, answer_format, convert_sse, format_refused, opening, system_text,
};

/// The `format` of the reasoning items this adapter writes and reads back
/// (OpenRouter's name for OpenAI's).
const REASONING_FORMAT: &str = "openai-responses-v1";

/// The reasoning items of an assistant message's `reasoning_details`, as
/// Responses input: with `store:false` nothing is kept upstream, so a tool
/// loop's reasoning goes back as the encrypted content it came out as. Only
/// items this provider gave for this model go back: another caller's, or
/// another model's, fail the whole request ("could not be verified").
fn reasoning_input(provider: &str, model: &str, message: &Message) -> Vec<Value> {
    reasoning::items(message)
        .filter_map(|item| {
            let field = |key: &str| reasoning::field(item, key);
            let ours = field("type") == Some("reasoning.encrypted")
                && field("format") == Some(REASONING_FORMAT)
                && field(ISSUED_BY) == Some(provider)
                && field(ISSUED_FOR) == Some(model);
            if !ours {
                return None;
            }
            Some(json!({
                "type": "reasoning",
                "id": field("id")?,
                "summary": [],
                "encrypted_content": field("data")?,
            }))
        })
        .collect()
}

/// The keys of a reasoning item that name the provider and model that gave it.
const ISSUED_BY: &str = "provider";
const ISSUED_FOR: &str = "model";

/// Chat fields the Responses API takes under the same name and meaning.
const SAME_FIELDS: [&str; 4] = [
    "metadata",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
];

/// Builds the `/responses` body from an OpenAI request.
pub fn to_responses_request(provider: &str, request: &ChatRequest) -> Result<Value, ProviderError> {
    // What Responses cannot do is refused, not dropped: the answer would
    // silently differ from what the client asked for.
    if request.stop_sequences().is_some() {
        return Err(ProviderError::invalid_request(
            provider,
            format!(
                "`stop` is not supported by {} (Responses API)",
                request.model
            ),
        ));
    }
    super::one_choice_only(provider, "Responses API", request)?;
    let mut input = Vec::with_capacity(request.messages.len());
    // Ids of the custom tool calls seen so far: their results are
    // `custom_tool_call_output` items.
    let mut custom_calls: HashSet<&str> = HashSet::new();
    for (i, m) in request.messages.iter().enumerate() {
        match m.role {
            Role::System | Role::Developer => {}
            Role::User | Role::Assistant => {
                let role = if m.role == Role::User {
                    "user"
                } else {
                    "assistant"
                };
                let has_content = match &m.content {
                    None => false,
                    Some(Content::Text(t)) => !t.is_empty(),
                    Some(Content::Parts(p)) => !p.is_empty(),
                };
                // A reasoning item must be followed by what it led to.
                if m.role == Role::Assistant
                    && (has_content || m.tool_calls.as_ref().is_some_and(|c| !c.is_empty()))
                {
                    input.extend(reasoning_input(provider, &request.model, m));
                }
                if has_content {
                    input.push(json!({ "role": role, "content": message_content(provider, i, m.role, m.content.as_ref())? }));
                }
                for call in m.tool_calls.iter().flatten() {
                    input.push(match call.kind {
                        ToolKind::Function => json!({
                            "type": "function_call",
                            "call_id": call.id,
                            "name": call.name,
                            "arguments": call.arguments,
                        }),
                        ToolKind::Custom => {
                            custom_calls.insert(&call.id);
                            json!({
                            "type": "custom_tool_call",
                            "call_id": call.id,
                            "name": call.name,
                            "input": call.arguments,
                            })
                        }
                    });
                }
            }
            Role::Tool => {
                let custom = m
                    .tool_call_id
                    .as_deref()
                    .is_some_and(|id| custom_calls.contains(id));
                let kind = if custom {
                    "custom_tool_call_output"
                } else {
                    "function_call_output"
                };
                input.push(json!({
                    "type": kind,
                    "call_id": m.tool_call_id,
                    "output": m.text_content(),
                }));
            }
        }
    }
    let mut body = Map::new();
    body.insert("model".into(), request.model.clone().into());
    if let Some(instructions) = system_text(request) {
        body.insert("instructions".into(), instructions.into());
    }
    body.insert("input".into(), input.into());
    body.insert("stream".into(), true.into());
    body.insert("store".into(), false.into());
    if let Some(limit) = request.token_limit() {
        body.insert("max_output_tokens".into(), limit.into());
    }
    if let Some(t) = request.temperature {
        body.insert("temperature".into(), t.into());
    }
    if let Some(p) = request.top_p {
        body.insert("top_p".into(), p.into());
    }
    if let Some(effort) = &request.reasoning_effort {
        body.insert("reasoning".into(), json!({ "effort": effort }));
    }
    let mut tools: Vec<Value> = request.tools.iter().flatten().map(flat_tool).collect();
    if !tools.is_empty() && !request.model.contains("-chat") {
        // A tool loop keeps the model's reasoning between calls only if it
        // comes back; with `store:false` that is its encrypted content.
        // (`-chat` models do not reason.)
        body.insert("include".into(), json!(["reasoning.encrypted_content"]));
    }
    tools.extend(web_search_tool(request));
    if !tools.is_empty() {
        body.insert("tools".into(), tools.into());
    }
    let named = |tool: &ToolRef| json!({"type": tool.kind.as_str(), "name": tool.name});
    let choice = match &request.tool_choice {
        Some(ToolChoice::Mode(mode)) => Some(Value::from(mode.as_str())),
        Some(ToolChoice::Named(tool)) => Some(named(tool)),
        Some(ToolChoice::Allowed { mode, tools }) => Some(json!({
            "type": "allowed_tools",
            "mode": mode,
            "tools": tools.iter().map(named).collect::<Vec<_>>(),
        })),
        None => None,
    };
    if let Some(choice) = choice {
        body.insert("tool_choice".into(), choice);
    }
    if let Some(p) = request.parallel_tool_calls {
        body.insert("parallel_tool_calls".into(), p.into());
    }
    if let Some(user) = &request.user {
        body.insert("user".into(), user.clone().into());
    }
    for key in SAME_FIELDS {
        if let Some(value) = request.extra.get(key).filter(|v| !v.is_null()) {
            body.insert(key.into(), value.clone());
        }
    }
    if let Some(format) = answer_format(provider, "Responses", request)? {
        body.insert(
            "text".into(),
            json!({ "format": text_format(provider, format)? }),
        );
    }
    Ok(Value::Object(body))
}

/// Chat Completions' `web_search_options` as Responses' `web_search` tool:
/// the same context size, and the approximate location beside its `type`
/// (chat nests it under `approximate`). Its citations come back as
/// `url_citation` annotations.
fn web_search_tool(request: &ChatRequest) -> Option<Value> {
    let options = request
        .extra
        .get("web_search_options")
        .filter(|o| o.is_object())?;
    let mut tool = json!({"type": "web_search"});
    if let Some(size) = options.get("search_context_size").filter(|s| !s.is_null()) {
        tool["search_context_size"] = size.clone();
    }
    if let Some(Value::Object(place)) = options.pointer("/user_location/approximate") {
        let mut location = place.clone();
        location.insert("type".into(), "approximate".into());
        tool["user_location"] = Value::Object(location);
    }
    Some(tool)
}

/// A tool in Responses' flat shape (no nested `function` or `custom`).
fn flat_tool(tool: &Tool) -> Value {
    match tool {
        Tool::Function { function } => {
            let mut flat = json!({"type": "function", "name": function.name});
            if let Some(d) = &function.description {
                flat["description"] = d.clone().into();
            }
            // Responses requires both and reads a missing `strict` as true,
            // which makes every parameter required; Chat Completions' default
            // is false, and no parameters means none.
            flat["parameters"] = function
                .parameters
                .clone()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
            flat["strict"] = function.strict.unwrap_or(false).into();
            flat
        }
        Tool::Custom { custom } => {
            let mut flat = json!({"type": "custom", "name": custom.name});
            if let Some(d) = &custom.description {
                flat["description"] = d.clone().into();
            }
            if let Some(format) = &custom.format {
                flat["format"] = flat_format(format);
            }
            flat
        }
    }
}

/// A custom tool's `format` as Responses takes it: a grammar's `syntax` and
/// `definition` beside `type`, where Chat Completions nests them in `grammar`.
fn flat_format(format: &Value) -> Value {
    match (
        format.get("type").and_then(Value::as_str),
        format.get("grammar"),
    ) {
        (Some("grammar"), Some(Value::Object(grammar))) => {
            let mut flat = grammar.clone();
            flat.insert("type".into(), "grammar".into());
            Value::Object(flat)
        }
        _ => format.clone(),
    }
}

/// `response_format` as the Responses API's `text.format`: the same types,
/// with a JSON schema's fields (`name`, `schema`, `strict`, `description`)
/// moved up beside `type`.
fn text_format(provider: &str, format: AnswerFormat<'_>) -> Result<Value, ProviderError> {
    Ok(match format {
        AnswerFormat::Text => json!({ "type": "text" }),
        AnswerFormat::JsonObject => json!({ "type": "json_object" }),
        AnswerFormat::JsonSchema(spec) => {
            if !spec.get("name").is_some_and(Value::is_string) {
                return Err(format_refused(
                    provider,
                    "json_schema.name must be a string",
                ));
            }
            let mut flat = spec.clone();
            flat.insert("type".into(), "json_schema".into());
            Value::Object(flat)
        }
    })
}

fn message_content(
    provider: &str,
    index: usize,
    role: Role,
    content: Option<&Content>,
) -> Result<Value, ProviderError> {
    let parts = match content {
        None => return Ok(Value::String(String::new())),
        Some(Content::Text(t)) => return Ok(Value::String(t.clone())),
        Some(Content::Parts(parts)) => parts,
    };
    let text_type = if role == Role::Assistant {
        "output_text"
    } else {
        "input_text"
    };
    parts
        .iter()
        .map(|part| {
            if let Some(text) = part.text() {
                Ok(json!({"type": text_type, "text": text}))
            } else if let Some(image) = &part.image_url {
                let mut input = json!({"type": "input_image", "image_url": image.url});
                if let Some(detail) = &image.detail {
                    input["detail"] = detail.clone().into();
                }
                Ok(input)
            } else if let Some(file) = part.file() {
                // Responses takes the same three fields, flat.
                let mut input = json!({"type": "input_file"});
                for (key, value) in [
                    ("file_data", file.file_data),
                    ("file_id", file.file_id),
                    ("filename", file.filename),
                ] {
                    if let Some(value) = value {
                        input[key] = value.into();
                    }
                }
                Ok(input)
            } else {
                Err(ProviderError::invalid_request(
                    provider,
                    format!(
                        "messages[{index}]: content part type {:?} has no Responses equivalent",
                        part.kind
                    ),
                ))
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

#[derive(Default)]
pub(crate) struct StreamState {
    tool_index_by_item: HashMap<String, u32>,
    /// The model asked, named on the reasoning items it gives (see [`ISSUED_FOR`]).
    model: String,
    next_reasoning_index: u32,
    /// Whether the first output item has been announced to the client.
    opened: bool,
    /// Characters of answer text streamed so far, and where the current
    /// content part began (see `response.output_text.annotation.added`).
    text_chars: usize,
    part_start: usize,
    done: bool,
}

fn usage_from(response: &Value) -> Option<Usage> {
    let u = response.get("usage")?;
    let count = |p: &str| u.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    let mut usage = Usage::new(count("/input_tokens"), count("/output_tokens"));
    if let Some(total) = u.get("total_tokens").and_then(Value::as_u64) {
        usage.total_tokens = total;
    }
    let cached = count("/input_tokens_details/cached_tokens");
    if cached > 0 {
        usage.prompt_tokens_details = Some(PromptTokensDetails {
            cached_tokens: cached,
        });
    }
    let reasoning = count("/output_tokens_details/reasoning_tokens");
    if reasoning > 0 {
        usage.completion_tokens_details = Some(CompletionTokensDetails {
            reasoning_tokens: reasoning,
        });
    }
    Some(usage)
}

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
        let str_field = |key: &str| {
            data.get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Ok(match kind {
            // Nothing for the client until the first output item (see
            // `opening`): a `response.failed` before it is then an HTTP error.
            "response.created" | "response.in_progress" => None,
            "response.output_item.added" => {
                let item = data.get("item").unwrap_or(&Value::Null);
                let (tool_kind, payload_key) = match item.get("type").and_then(Value::as_str) {
                    Some("function_call") => (ToolKind::Function, "arguments"),
                    Some("custom_tool_call") => (ToolKind::Custom, "input"),
                    _ => return Ok(opening(&mut st.opened)),
                };
                st.opened = true;
                let index = u32::try_from(st.tool_index_by_item.len()).unwrap_or(u32::MAX);
                let item_id = item
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                st.tool_index_by_item.insert(item_id, index);
                let call_id = item
                    .get("call_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let name = item
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let payload = item
                    .get(payload_key)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                Some(ChatChunk::delta(Delta::tool_call(ToolCallDelta::opening(
                    index, call_id, tool_kind, name, payload,
                ))))
            }
            "response.function_call_arguments.delta" | "response.custom_tool_call_input.delta" => {
                let tool_kind = if kind == "response.function_call_arguments.delta" {
                    ToolKind::Function
                } else {
                    ToolKind::Custom
                };
                let item_id = str_field("item_id");
                let index = st
                    .tool_index_by_item
                    .get(&item_id)
                    .copied()
                    .ok_or_else(|| {
                        ProviderError::protocol(
                            provider,
                            format!("tool call delta for unknown item {item_id:?}"),
                        )
                    })?;
                Some(ChatChunk::delta(Delta::tool_call(ToolCallDelta::piece(
                    index,
                    tool_kind,
                    str_field("delta"),
                ))))
            }
            // A reasoning item's encrypted content is whole only once it is done.
            "response.output_item.done" => {
                let item = data.get("item").unwrap_or(&Value::Null);
                let field = |key: &str| item.get(key).and_then(Value::as_str).unwrap_or("");
                if field("type") != "reasoning" || field("encrypted_content").is_empty() {
                    return Ok(None);
                }
                let mut item = ItemWriter::new(st.next_reasoning_index, REASONING_FORMAT)
                    .with("id", field("id"))
                    .with(ISSUED_BY, provider)
                    .with(ISSUED_FOR, st.model.as_str());
                st.next_reasoning_index += 1;
                Some(ChatChunk::delta(Delta::reasoning_items(item.piece(
                    "reasoning.encrypted",
                    "data",
                    field("encrypted_content"),
                ))))
            }
            "response.content_part.added" => {
                // An annotation's indices count from the start of its part.
                st.part_start = st.text_chars;
                None
            }
            "response.output_text.delta" => {
                let text = str_field("delta");
                st.text_chars += text.chars().count();
                Some(ChatChunk::delta(Delta::content(text)))
            }
            // A web search's citation, as Chat Completions gives it: a
            // `url_citation` annotation, its indices into the message content.
            // Other kinds (file citations, paths) have no chat shape.
            "response.output_text.annotation.added" => {
                let annotation = data.get("annotation").unwrap_or(&Value::Null);
                if annotation.get("type").and_then(Value::as_str) != Some("url_citation") {
                    return Ok(None);
                }
                let index = |key: &str| {
                    annotation
                        .get(key)
                        .and_then(Value::as_u64)
                        .map(|i| i.saturating_add(st.part_start as u64))
                };
                let citation = json!({"type": "url_citation", "url_citation": {
                    "url": annotation.get("url").unwrap_or(&Value::Null),
                    "title": annotation.get("title").unwrap_or(&Value::Null),
                    "start_index": index("start_index"),
                    "end_index": index("end_index"),
                }});
                let mut delta = Delta::default();
                delta.extra.insert("annotations".into(), json!([citation]));
                Some(ChatChunk::delta(delta))
            }
            "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => {
                Some(ChatChunk::delta(Delta::reasoning(str_field("delta"))))
            }
            "response.refusal.delta" => Some(ChatChunk::delta(Delta {
                refusal: Some(str_field("delta")),
                ..Delta::default()
            })),
            "response.completed" => {
                st.done = true;
                let response = data.get("response").unwrap_or(&Value::Null);
                let reason = if st.tool_index_by_item.is_empty() {
                    FinishReason::Stop
                } else {
                    FinishReason::ToolCalls
                };
                Some(ChatChunk::finish(reason, usage_from(response)))
            }
            // Cut short: a tool call begun may be incomplete, so the reason is
            // the cut's, never `tool_calls` (a client would run broken arguments).
            "response.incomplete" => {
                st.done = true;
                let response = data.get("response").unwrap_or(&Value::Null);
                let reason = match response
                    .pointer("/incomplete_details/reason")
                    .and_then(Value::as_str)
                {
                    Some("content_filter") => FinishReason::ContentFilter,
                    _ => FinishReason::Length,
                };
                Some(ChatChunk::finish(reason, usage_from(response)))
            }
            "response.failed" => {
                let error = data
                    .pointer("/response/error")
                    .cloned()
                    .unwrap_or_else(|| json!("the response failed"));
                return Err(error_from_value(provider, &error));
            }
            "error" => {
                let message = data
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("upstream error");
                return Err(ProviderError::mid_stream(
                    provider,
                    UpstreamErrorKind::Server,
                    message,
                ));
            }
            _ => None,
        })
    }
}

/// Whether `error` is OpenAI's refusal of reasoning items it cannot decrypt
/// (`invalid_encrypted_content`, "The encrypted content ... could not be verified").
fn is_unverifiable_reasoning(error: &ProviderError) -> bool {
    matches!(error, ProviderError::Upstream { status: Some(400), message, .. }
        if message.contains("encrypted content") && message.contains("could not be verified"))
}

/// `body` without its reasoning input items; `None` when it had none.
fn without_reasoning(mut body: Value) -> Option<Value> {
    let input = body.get_mut("input")?.as_array_mut()?;
    let before = input.len();
    input.retain(|item| item["type"] != "reasoning");
    (input.len() < before).then_some(body)
}

/// Sends the request to `{base}/responses`; when the upstream cannot verify
/// the reasoning items sent back, once more without them.
pub async fn stream_chat(
    upstream: &Upstream,
    request: &ChatRequest,
) -> Result<ChunkStream, ProviderError> {
    let body = to_responses_request(upstream.provider(), request)?;
    let response = match upstream.post_json("/responses", &body, &[]).await {
        // The blob was right for the caller that got it, but this request
        // reached another organisation (a gateway rotating its keys): the
        // conversation goes on without the reasoning rather than failing.
        Err(e) if is_unverifiable_reasoning(&e) => {
            let Some(body) = without_reasoning(body) else {
                return Err(e);
            };
            tracing::warn!(
                provider = upstream.provider(),
                model = %request.model,
                "the upstream could not verify the reasoning items sent back; sent again without them"
            );
            upstream.post_json("/responses", &body, &[]).await?
        }
        sent => sent?,
    };
    let ended = EndMarker::default();
    Ok(convert_sse(
        upstream.provider().to_owned(),
        response.sse_events(&ended),
        &ended,
        StreamState {
            model: request.model.clone(),
            ..StreamState::default()
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::{convert_all, convert_and_assemble};

    fn with_format(format: Value) -> Result<Value, ProviderError> {
        let req: ChatRequest = serde_json::from_value(json!({
            "model": "gpt-5.4",
            "messages": [{"role": "user", "content": "hi"}],
            "response_format": format,
        }))
        .unwrap();
        to_responses_request("opencode", &req)
    }

    #[test]
    fn response_format_becomes_text_format_with_the_schema_flattened() {
        let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}});
        let body = with_format(json!({"type": "json_schema", "json_schema":
            {"name": "place", "schema": schema, "strict": true, "description": "a city"}}))
        .unwrap();
        assert_eq!(
            body["text"],
            json!({"format": {"type": "json_schema", "name": "place", "schema": schema,
                              "strict": true, "description": "a city"}})
        );
        let body = with_format(json!({"type": "json_object"})).unwrap();
        assert_eq!(body["text"], json!({"format": {"type": "json_object"}}));
        let body = with_format(json!({"type": "text"})).unwrap();
        assert_eq!(body["text"], json!({"format": {"type": "text"}}));
        let body = with_format(Value::Null).unwrap();
        assert!(body.get("text").is_none(), "null is unset: {body}");
    }

    #[test]
    fn a_response_format_responses_cannot_carry_is_refused() {
        for format in [
            json!({"type": "json_schema"}),
            json!({"type": "json_schema", "json_schema": {"schema": {}}}),
            json!({"type": "regex", "pattern": "a+"}),
            json!({"schema": {}}),
        ] {
            match with_format(format.clone()) {
                Err(ProviderError::InvalidRequest { message, .. }) => {
                    assert!(message.starts_with("response_format: "), "{message}");
                }
                other => panic!("{format}: {other:?}"),
            }
        }
    }

    #[test]
    fn tools_keep_chat_completions_non_strict_default() {
        let req: ChatRequest = serde_json::from_value(json!({
            "model": "gpt-5.4",
            "messages": [{"role": "user", "content": "now?"}],
            "tools": [
                {"type": "function", "function": {"name": "now"}},
                {"type": "function", "function": {"name": "set", "strict": true,
                 "parameters": {"type": "object", "properties": {"x": {"type": "string"}},
                                "required": ["x"], "additionalProperties": false}}}
            ]
        }))
        .unwrap();
        let body = to_responses_request("opencode", &req).unwrap();
        assert_eq!(
            body["tools"][0],
            json!({"type": "function", "name": "now", "strict": false,
                   "parameters": {"type": "object", "properties": {}}})
        );
        assert_eq!(body["tools"][1]["strict"], true);
        assert_eq!(body["tools"][1]["parameters"]["required"], json!(["x"]));
    }

    #[test]
    fn request_uses_instructions_flat_tools_and_call_items() {
        let req: ChatRequest = serde_json::from_value(json!({
            "model": "gpt-5.4",
            "max_tokens": 100,
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "messages": [
                {"role": "system", "content": "Be terse."},
                {"role": "user", "content": "weather in Oslo?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "12C"}
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
        }))
        .unwrap();
        let body = to_responses_request("opencode", &req).unwrap();
        assert_eq!(body["instructions"], "Be terse.");
        assert_eq!(body["max_output_tokens"], 100);
        assert_eq!(body["store"], false);
        assert_eq!(body["input"][1]["type"], "function_call");
        assert_eq!(
            body["input"][2],
            json!({"type": "function_call_output", "call_id": "call_1", "output": "12C"})
        );
        assert_eq!(
            body["tools"][0],
            json!({"type": "function", "name": "get_weather", "parameters": {"type": "object"}, "strict": false})
        );
        assert_eq!(
            body["tool_choice"],
            json!({"type": "function", "name": "get_weather"})
        );
    }

    #[test]
    fn fields_responses_shares_pass_and_those_it_lacks_are_refused() {
        let request = |extra: Value| -> ChatRequest {
            let mut body =
                json!({"model": "gpt-5.4", "messages": [{"role": "user", "content": "hi"}]});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            serde_json::from_value(body).unwrap()
        };
        let body = to_responses_request(
            "opencode",
            &request(
                json!({"user": "u-7", "metadata": {"run": "r1"}, "service_tier": "flex",
                            "prompt_cache_key": "k", "safety_identifier": "s", "n": 1, "seed": 3}),
            ),
        )
        .unwrap();
        assert_eq!(body["user"], "u-7");
        assert_eq!(body["metadata"], json!({"run": "r1"}));
        assert_eq!(body["service_tier"], "flex");
        assert_eq!(body["prompt_cache_key"], "k");
        assert_eq!(body["safety_identifier"], "s");
        assert!(body.get("n").is_none() && body.get("seed").is_none());
        // An empty stop stops at nothing, and a null field is not sent.
        let empty =
            to_responses_request("opencode", &request(json!({"stop": [], "metadata": null})))
                .unwrap();
        assert!(empty.get("stop").is_none() && empty.get("metadata").is_none());
        for (extra, field) in [
            (json!({"stop": ["\n"]}), "`stop`"),
            (json!({"stop": "END"}), "`stop`"),
            (json!({"n": 2}), "n must be 1"),
        ] {
            let err = to_responses_request("opencode", &request(extra)).unwrap_err();
            assert!(matches!(err, ProviderError::InvalidRequest { .. }), "{err}");
            assert!(err.to_string().contains(field), "{err}");
        }
    }

    #[test]
    fn web_search_options_become_the_web_search_tool() {
        let req: ChatRequest = serde_json::from_value(json!({
            "model": "gpt-5.4",
            "messages": [{"role": "user", "content": "news in Oslo?"}],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "web_search_options": {"search_context_size": "low", "user_location": {
                "type": "approximate", "approximate": {"city": "Oslo", "country": "NO"}}}
        }))
        .unwrap();
        let body = to_responses_request("opencode", &req).unwrap();
        assert_eq!(body["tools"][0]["name"], "f");
        assert_eq!(
            body["tools"][1],
            json!({"type": "web_search", "search_context_size": "low",
                   "user_location": {"type": "approximate", "city": "Oslo", "country": "NO"}})
        );
        assert!(body.get("web_search_options").is_none());
        let bare: ChatRequest = serde_json::from_value(json!({
            "model": "gpt-5.4", "messages": [{"role": "user", "content": "hi"}], "web_search_options": {}
        }))
        .unwrap();
        let body = to_responses_request("opencode", &bare).unwrap();
        assert_eq!(body["tools"], json!([{"type": "web_search"}]));
        assert!(
            body.get("include").is_none(),
            "no tool loop to keep reasoning for"
        );
    }

    fn ev(data: Value) -> Result<SseEvent, ProviderError> {
        Ok(SseEvent {
            event: data["type"].as_str().unwrap().into(),
            data: data.to_string(),
        })
    }

    #[test]
    fn stream_maps_items_to_tool_calls_and_ends_at_completed() {
        let events = vec![
            ev(json!({"type": "response.created", "response": {}})),
            ev(json!({"type": "response.in_progress", "response": {}})),
            ev(
                json!({"type": "response.output_item.added", "item": {"type": "function_call", "id": "fc_1", "call_id": "call_A", "name": "get_weather", "arguments": ""}}),
            ),
            ev(
                json!({"type": "response.function_call_arguments.delta", "item_id": "fc_1", "delta": "{\"city\":\"Oslo\"}"}),
            ),
            ev(
                json!({"type": "response.function_call_arguments.done", "item_id": "fc_1", "arguments": "{\"city\":\"Oslo\"}"}),
            ),
            ev(
                json!({"type": "response.completed", "response": {"usage": {"input_tokens": 20, "output_tokens": 9, "total_tokens": 29}}}),
            ),
            ev(json!({"type": "ping", "cost": "1"})),
        ];
        let out: Vec<_> = convert_all(StreamState::default(), events);
        assert_eq!(out.len(), 3);
        let start = &out[0].as_ref().unwrap().choices[0]
            .delta
            .tool_calls
            .as_ref()
            .unwrap()[0];
        assert_eq!(start.id.as_deref(), Some("call_A"));
        let finish = out[2].as_ref().unwrap();
        assert_eq!(
            finish.choices[0].finish_reason,
            Some(FinishReason::ToolCalls)
        );
        assert_eq!(finish.usage.as_ref().unwrap().total_tokens, 29);
    }

    #[test]
    fn custom_tools_calls_results_and_allowed_tools_take_responses_shapes() {
        let req: ChatRequest = serde_json::from_value(json!({
            "model": "gpt-5.4",
            "messages": [
                {"role": "user", "content": "fix it"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_P", "type": "custom", "custom": {"name": "apply_patch", "input": "*** Begin Patch"}},
                    {"id": "call_F", "type": "function", "function": {"name": "read", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_P", "content": "applied"},
                {"role": "tool", "tool_call_id": "call_F", "content": "text"}
            ],
            "tools": [
                {"type": "custom", "custom": {"name": "apply_patch", "description": "Edits",
                 "format": {"type": "grammar", "grammar": {"syntax": "lark", "definition": "start: /.+/"}}}},
                {"type": "function", "function": {"name": "read"}}
            ],
            "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto",
                "tools": [{"type": "custom", "custom": {"name": "apply_patch"}}]}}
        }))
        .unwrap();
        let body = to_responses_request("opencode", &req).unwrap();
        assert_eq!(
            body["input"][1],
            json!({"type": "custom_tool_call", "call_id": "call_P", "name": "apply_patch", "input": "*** Begin Patch"})
        );
        assert_eq!(body["input"][2]["type"], "function_call");
        assert_eq!(
            body["input"][3],
            json!({"type": "custom_tool_call_output", "call_id": "call_P", "output": "applied"})
        );
        assert_eq!(body["input"][4]["type"], "function_call_output");
        assert_eq!(
            body["tools"][0],
            json!({"type": "custom", "name": "apply_patch", "description": "Edits",
                   "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}})
        );
        assert_eq!(
            body["tool_choice"],
            json!({"type": "allowed_tools", "mode": "auto", "tools": [{"type": "custom", "name": "apply_patch"}]})
        );
    }

    #[test]
    fn file_and_image_parts_become_input_file_and_input_image() {
        let req: ChatRequest = serde_json::from_value(json!({
            "model": "gpt-5.4",
            "messages": [{"role": "user", "content": [
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}},
                {"type": "file", "file": {"file_id": "file-abc"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}}]}]
        }))
        .unwrap();
        let body = to_responses_request("opencode", &req).unwrap();
        assert_eq!(
            body["input"][0]["content"],
            json!([
                {"type": "input_file", "file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
                {"type": "input_file", "file_id": "file-abc"},
                {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "low"}
            ])
        );
    }

    /// The whole answer `events` make, as a client asking without a stream gets it.
    fn assembled(events: Vec<Result<SseEvent, ProviderError>>) -> crate::openai::ChatCompletion {
        let mut assembler = crate::stream::Assembler::default();
        for chunk in convert_all(StreamState::default(), events) {
            assembler.push(&chunk.unwrap());
        }
        assembler.finish(&crate::stream::ResponseMeta {
            id: "chatcmpl-x".into(),
            created: 1,
            model: "gpt-5.4".into(),
        })
    }

    #[test]
    fn url_citations_become_chat_annotations_indexed_into_the_whole_answer() {
        let cite = |n: u64, start: u64| {
            ev(
                json!({"type": "response.output_text.annotation.added", "annotation_index": n,
                "annotation": {"type": "url_citation", "url": format!("https://example.com/{n}"),
                               "title": format!("Source {n}"), "start_index": start, "end_index": start + 4}}),
            )
        };
        let events = vec![
            ev(
                json!({"type": "response.content_part.added", "part": {"type": "output_text", "text": ""}}),
            ),
            ev(json!({"type": "response.output_text.delta", "delta": "Oslo is "})),
            ev(json!({"type": "response.output_text.delta", "delta": "cold. "})),
            cite(0, 0),
            ev(
                json!({"type": "response.content_part.added", "part": {"type": "output_text", "text": ""}}),
            ),
            ev(json!({"type": "response.output_text.delta", "delta": "Bergen is wet."})),
            cite(1, 0),
            ev(json!({"type": "response.output_text.annotation.added",
                "annotation": {"type": "file_citation", "file_id": "f", "index": 3}})),
            ev(json!({"type": "response.completed", "response": {}})),
        ];
        let message = assembled(events).choices.remove(0).message;
        let content = message.content.unwrap();
        let annotations = &message.extra["annotations"];
        assert_eq!(annotations.as_array().unwrap().len(), 2, "{annotations}");
        assert_eq!(
            annotations[1]["url_citation"]["url"],
            "https://example.com/1"
        );
        let cited = |i: usize| {
            let at = |key: &str| annotations[i]["url_citation"][key].as_u64().unwrap() as usize;
            content
                .chars()
                .skip(at("start_index"))
                .take(at("end_index") - at("start_index"))
                .collect::<String>()
        };
        assert_eq!((cited(0), cited(1)), ("Oslo".to_owned(), "Berg".to_owned()));
    }

    #[test]
    fn a_streamed_custom_tool_call_becomes_custom_call_pieces() {
        let events = vec![
            ev(
                json!({"type": "response.output_item.added", "item": {"type": "custom_tool_call", "id": "ctc_1",
                "call_id": "call_P", "name": "apply_patch", "input": ""}}),
            ),
            ev(
                json!({"type": "response.custom_tool_call_input.delta", "item_id": "ctc_1", "delta": "*** Begin"}),
            ),
            ev(
                json!({"type": "response.custom_tool_call_input.delta", "item_id": "ctc_1", "delta": " Patch"}),
            ),
            ev(
                json!({"type": "response.custom_tool_call_input.done", "item_id": "ctc_1", "input": "*** Begin Patch"}),
            ),
            ev(
                json!({"type": "response.completed", "response": {"usage": {"input_tokens": 2, "output_tokens": 3}}}),
            ),
        ];
        let done = assembled(events);
        assert_eq!(done.choices[0].finish_reason, Some(FinishReason::ToolCalls));
        let calls = done.choices[0].message.tool_calls.as_ref().unwrap();
        assert_eq!(
            serde_json::to_value(calls).unwrap(),
            json!([{"id": "call_P", "type": "custom", "custom": {"name": "apply_patch", "input": "*** Begin Patch"}}])
        );
    }

    #[test]
    fn encrypted_reasoning_comes_out_whole_and_goes_back_before_its_call() {
        let item = json!({"type": "reasoning", "id": "rs_1", "summary": []});
        let mut done = item.clone();
        done["encrypted_content"] = json!("gAAAA-enc");
        let events = vec![
            ev(json!({"type": "response.output_item.added", "item": item})),
            ev(
                json!({"type": "response.reasoning_summary_text.delta", "item_id": "rs_1", "delta": "Plan."}),
            ),
            ev(json!({"type": "response.output_item.done", "item": done})),
            ev(
                json!({"type": "response.output_item.added", "item": {"type": "function_call", "id": "fc_1", "call_id": "call_A", "name": "w", "arguments": "{}"}}),
            ),
            ev(json!({"type": "response.completed", "response": {}})),
        ];
        let state = StreamState {
            model: "gpt-5.4".into(),
            ..StreamState::default()
        };
        // `convert_all` names its provider "z".
        let (_, message) = convert_and_assemble(state, events);
        assert_eq!(message.reasoning_content.as_deref(), Some("Plan."));
        let details = message.reasoning_details.unwrap();
        assert_eq!(
            details,
            vec![
                json!({"type": "reasoning.encrypted", "data": "gAAAA-enc", "id": "rs_1",
                        "format": "openai-responses-v1", "index": 0,
                        "provider": "z", "model": "gpt-5.4"})
            ]
        );
        let mut sent_back = details.clone();
        // Only this provider's items for this model go back: not Claude's,
        // not one without its id, not another caller's or another model's.
        let foreign = |key: &str, value: Value| {
            let mut item = details[0].clone();
            item[key] = value;
            item
        };
        sent_back.extend([
            json!({"type": "reasoning.encrypted", "data": "x", "format": "anthropic-claude-v1"}),
            foreign("id", Value::Null),
            foreign("provider", json!("openrouter")),
            foreign("model", json!("gpt-5.5")),
        ]);
        let req: ChatRequest = serde_json::from_value(json!({
            "model": "gpt-5.4",
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": null, "reasoning_details": sent_back,
                 "tool_calls": message.tool_calls},
                {"role": "tool", "tool_call_id": "call_A", "content": "12C"}
            ],
            "tools": [{"type": "function", "function": {"name": "w"}}]
        }))
        .unwrap();
        let body = to_responses_request("z", &req).unwrap();
        assert_eq!(body["include"], json!(["reasoning.encrypted_content"]));
        assert_eq!(
            body["input"][1],
            json!({"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA-enc"})
        );
        assert_eq!(body["input"][2]["type"], "function_call");
        assert_eq!(body["input"].as_array().unwrap().len(), 4, "{body}");
        // Reasoning that led to nothing (cut off) is not sent: Responses
        // refuses a reasoning item without what followed it.
        let cut: ChatRequest = serde_json::from_value(json!({
            "model": "gpt-5.4",
            "messages": [{"role": "user", "content": "weather?"},
                         {"role": "assistant", "content": "", "reasoning_details": details},
                         {"role": "user", "content": "go on"}]
        }))
        .unwrap();
        let body = to_responses_request("z", &cut).unwrap();
        assert_eq!(body["input"].as_array().unwrap().len(), 2, "{body}");
        // No tools, no loop to keep reasoning for.
        let plain: ChatRequest = serde_json::from_value(
            json!({"model": "gpt-5.4", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .unwrap();
        assert!(
            to_responses_request("opencode", &plain)
                .unwrap()
                .get("include")
                .is_none()
        );
    }

    #[test]
    fn only_unverifiable_reasoning_is_sent_again_and_then_without_its_items() {
        let refused = |status, message: &str| ProviderError::Upstream {
            provider: "opencode".into(),
            kind: UpstreamErrorKind::from_status(status),
            status: Some(status),
            message: message.into(),
            code: None,
            param: None,
            retry_after: None,
        };
        let unverifiable =
            "The encrypted content for item rs_1 could not be verified. (invalid_request_error)";
        assert!(is_unverifiable_reasoning(&refused(400, unverifiable)));
        assert!(!is_unverifiable_reasoning(&refused(500, unverifiable)));
        assert!(!is_unverifiable_reasoning(&refused(
            400,
            "max_output_tokens too large"
        )));

        let body = json!({"input": [
            {"role": "user", "content": "hi"},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "x"},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        ]});
        let sent_again = without_reasoning(body).unwrap();
        let kinds: Vec<&Value> = sent_again["input"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| &item["type"])
            .collect();
        assert_eq!(kinds, [&Value::Null, &json!("function_call")]);
        assert_eq!(without_reasoning(sent_again), None, "nothing left to drop");
    }

    #[test]
    fn incomplete_and_failed_are_mapped() {
        let events = vec![ev(
            json!({"type": "response.incomplete", "response": {"incomplete_details": {"reason": "max_output_tokens"}}}),
        )];
        let out: Vec<_> = convert_all(StreamState::default(), events);
        assert_eq!(
            out[0].as_ref().unwrap().choices[0].finish_reason,
            Some(FinishReason::Length)
        );
        let events = vec![ev(
            json!({"type": "response.failed", "response": {"error": {"code": "server_error", "message": "boom"}}}),
        )];
        let out: Vec<_> = convert_all(StreamState::default(), events);
        assert!(out[0].as_ref().unwrap_err().to_string().contains("boom"));
    }

    fn convert(events: Vec<Result<SseEvent, ProviderError>>) -> Vec<ChatChunk> {
        convert_all(StreamState::default(), events)
            .into_iter()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn a_tool_call_cut_short_finishes_with_the_cut_not_tool_calls() {
        let out = convert(vec![
            ev(
                json!({"type": "response.output_item.added", "item": {"type": "function_call", "id": "fc_1", "call_id": "call_A", "name": "get_weather", "arguments": ""}}),
            ),
            ev(
                json!({"type": "response.function_call_arguments.delta", "item_id": "fc_1", "delta": "{\"city\":\"Os"}),
            ),
            ev(
                json!({"type": "response.incomplete", "response": {"incomplete_details": {"reason": "max_output_tokens"}}}),
            ),
        ]);
        let last = out.last().unwrap();
        assert_eq!(last.choices[0].finish_reason, Some(FinishReason::Length));
        let out = convert(vec![ev(
            json!({"type": "response.incomplete", "response": {"incomplete_details": {"reason": "content_filter"}}}),
        )]);
        assert_eq!(
            out[0].choices[0].finish_reason,
            Some(FinishReason::ContentFilter)
        );
    }

    #[test]
    fn refusal_deltas_become_refusal_deltas() {
        let out = convert(vec![
            ev(json!({"type": "response.refusal.delta", "item_id": "m", "delta": "I can't"})),
            ev(json!({"type": "response.refusal.delta", "item_id": "m", "delta": " help."})),
            ev(json!({"type": "response.completed", "response": {}})),
        ]);
        let refusal: String = out
            .iter()
            .filter_map(|c| c.choices.first()?.delta.refusal.clone())
            .collect();
        assert_eq!(refusal, "I can't help.");
        assert_eq!(
            out.last().unwrap().choices[0].finish_reason,
            Some(FinishReason::Stop)
        );
    }
}
