//! Ollama's native API (`/api/chat`, `/api/tags`), local and cloud.
//!
//! The native API is used rather than Ollama's `/v1` layer because that layer
//! forces `temperature`/`top_p` to 1.0 when unset and drops `think`, options
//! and exact usage (reference §2.6). Cloud is the same protocol with a Bearer key.

use std::collections::HashMap;
use std::task::{Poll, ready};

use futures::future::BoxFuture;
use futures::stream::StreamExt;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::{ProviderError, UpstreamErrorKind};
use crate::http::{EndMarker, Upstream};
use crate::openai::{
    ChatChunk, ChatRequest, ChunkChoice, Content, Delta, FinishReason, Role, ToolCallDelta, Usage,
    new_id,
};
use crate::provider::{ChatProvider, ChunkStream};

use super::{AnswerFormat, answer_format, arguments_object};

#[derive(Debug)]
pub struct Ollama {
    upstream: Upstream,
}

impl Ollama {
    pub fn new(upstream: Upstream) -> Self {
        Self { upstream }
    }
}

/// Builds the `/api/chat` body from an OpenAI request.
/// Top-level request fields passed to `/api/chat` as they are.
const NATIVE_FIELDS: [&str; 5] = [
    "keep_alive",
    "truncate",
    "shift",
    "logprobs",
    "top_logprobs",
];

/// Ollama's `logprobs` as OpenAI's `choice.logprobs`: the same entries
/// (`token`, `logprob`, `bytes`, `top_logprobs`) under `content`, with the
/// keys OpenAI always has filled in when Ollama leaves them out.
fn openai_logprobs(entries: Vec<Value>) -> Value {
    let content: Vec<Value> = entries
        .into_iter()
        .map(|mut entry| {
            if let Value::Object(map) = &mut entry {
                map.entry("bytes").or_insert(Value::Null);
                let top = map
                    .entry("top_logprobs")
                    .or_insert_with(|| Value::Array(Vec::new()));
                for alternative in top.as_array_mut().into_iter().flatten() {
                    if let Value::Object(alt) = alternative {
                        alt.entry("bytes").or_insert(Value::Null);
                    }
                }
            }
            entry
        })
        .collect();
    json!({ "content": content })
}

pub fn to_ollama_request(provider: &str, request: &ChatRequest) -> Result<Value, ProviderError> {
    super::one_choice_only(provider, "Ollama", request)?;
    let tools = super::function_tools(provider, "Ollama", request, false)?;
    let mut names_by_call_id: HashMap<&str, &str> = HashMap::new();
    let mut messages = Vec::with_capacity(request.messages.len());
    for (i, m) in request.messages.iter().enumerate() {
        let role = match m.role {
            Role::System | Role::Developer => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        };
        let mut out = Map::new();
        out.insert("role".into(), role.into());
        let mut text = String::new();
        let mut images = Vec::new();
        match &m.content {
            None => {}
            Some(Content::Text(t)) => text.push_str(t),
            Some(Content::Parts(parts)) => {
                for part in parts {
                    if let Some(t) = part.text() {
                        if !text.is_empty() {
                            text.push('\n');
                        }
                        text.push_str(t);
                    } else if let Some(image) = &part.image_url {
                        let data = image.as_data_uri().ok_or_else(|| {
                            ProviderError::invalid_request(
                                provider,
                                format!(
                                    "messages[{i}]: Ollama takes images only as base64 data: URIs, not {}",
                                    shorten(&image.url)
                                ),
                            )
                        })?;
                        images.push(Value::from(data.base64));
                    } else {
                        return Err(ProviderError::invalid_request(
                            provider,
                            format!(
                                "messages[{i}]: Ollama cannot take a content part of type {:?}",
                                part.kind
                            ),
                        ));
                    }
                }
            }
        }
        out.insert("content".into(), text.into());
        if !images.is_empty() {
            out.insert("images".into(), images.into());
        }
        if let Some(reasoning) = &m.reasoning_content {
            out.insert("thinking".into(), reasoning.clone().into());
        }
        if let Some(calls) = &m.tool_calls {
            let mut converted = Vec::with_capacity(calls.len());
            for (index, call) in calls.iter().enumerate() {
                names_by_call_id.insert(&call.id, &call.name);
                converted.push(json!({
                    "id": call.id,
                    "function": {
                        "index": index,
                        "name": call.name,
                        "arguments": arguments_object(provider, i, &call.arguments)?,
                    }
                }));
            }
            out.insert("tool_calls".into(), converted.into());
        }
        if let Some(id) = &m.tool_call_id {
            out.insert("tool_call_id".into(), id.clone().into());
            let name = names_by_call_id
                .get(id.as_str())
                .copied()
                .or(m.name.as_deref());
            if let Some(name) = name {
                out.insert("tool_name".into(), name.into());
            }
        }
        messages.push(Value::Object(out));
    }

    let mut body = Map::new();
    body.insert("model".into(), request.model.clone().into());
    body.insert("messages".into(), messages.into());
    // Ollama streams when `stream` is left out, so the bool is always sent.
    body.insert("stream".into(), request.is_stream().into());
    let tools_off = request.tool_choice.as_ref().is_some_and(|c| c.is_none());
    if !tools_off && !tools.is_empty() {
        let tools: Vec<Value> = tools
            .into_iter()
            .map(|function| json!({ "type": "function", "function": function }))
            .collect();
        body.insert("tools".into(), tools.into());
    }
    // `think:false` unless the caller asked for reasoning: every model accepts false,
    // while true on a model that cannot think is a 400 (reference §2.5).
    let think = match (request.extra.get("think"), &request.reasoning_effort) {
        (Some(explicit), _) => explicit.clone(),
        (None, Some(effort)) => think_level(effort),
        (None, None) => false.into(),
    };
    body.insert("think".into(), think);
    match answer_format(provider, "Ollama", request)? {
        None | Some(AnswerFormat::Text) => {}
        Some(AnswerFormat::JsonObject) => {
            body.insert("format".into(), "json".into());
        }
        // Without a schema, any JSON object is the closest Ollama has.
        Some(AnswerFormat::JsonSchema(spec)) => {
            let format = match spec.get("schema") {
                Some(schema @ Value::Object(_)) => schema.clone(),
                _ => "json".into(),
            };
            body.insert("format".into(), format);
        }
    }
    // Ollama's own top-level fields, and OpenAI's log probability fields,
    // which Ollama takes under the same names.
    for key in NATIVE_FIELDS {
        if let Some(value) = request.extra.get(key).filter(|v| !v.is_null()) {
            body.insert(key.into(), value.clone());
        }
    }

    let mut options = match request.extra.get("options") {
        Some(Value::Object(o)) => o.clone(),
        _ => Map::new(),
    };
    let mut set = |key: &str, value: Option<Value>| {
        if let Some(v) = value {
            options.insert(key.into(), v);
        }
    };
    set("temperature", request.temperature.map(Value::from));
    set("top_p", request.top_p.map(Value::from));
    set("seed", request.seed.map(Value::from));
    set(
        "frequency_penalty",
        request.frequency_penalty.map(Value::from),
    );
    set(
        "presence_penalty",
        request.presence_penalty.map(Value::from),
    );
    set("num_predict", request.token_limit().map(Value::from));
    set("stop", request.stop_sequences().map(Value::from));
    if !options.is_empty() {
        body.insert("options".into(), options.into());
    }
    Ok(Value::Object(body))
}

fn shorten(url: &str) -> String {
    let cut: String = url.chars().take(60).collect();
    if cut.len() < url.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

#[derive(Deserialize)]
struct Line {
    #[serde(default)]
    message: Option<LineMessage>,
    #[serde(default)]
    done: bool,
    #[serde(default)]
    done_reason: Option<String>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
    #[serde(default)]
    eval_count: Option<u64>,
    #[serde(default)]
    error: Option<Value>,
    /// Token log probabilities, when the request asked for them.
    #[serde(default)]
    logprobs: Option<Vec<Value>>,
}

#[derive(Deserialize)]
struct LineMessage {
    #[serde(default)]
    content: String,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    tool_calls: Vec<LineToolCall>,
}

#[derive(Deserialize)]
struct LineToolCall {
    #[serde(default)]
    id: Option<String>,
    function: LineFunction,
}

#[derive(Deserialize)]
struct LineFunction {
    name: String,
    #[serde(default)]
    arguments: Value,
}

/// Converts one NDJSON line; `next_tool_index` counts calls across the stream.
pub(crate) fn convert_line(
    provider: &str,
    line: &[u8],
    next_tool_index: &mut u32,
) -> Result<ChatChunk, ProviderError> {
    let line: Line = crate::decode::from_json_bytes(line)
        .map_err(|e| ProviderError::protocol(provider, format!("bad NDJSON line: {e}")))?;
    if let Some(error) = line.error {
        let message = error
            .as_str()
            .map_or_else(|| error.to_string(), str::to_owned);
        return Err(ProviderError::mid_stream(
            provider,
            UpstreamErrorKind::Server,
            message,
        ));
    }
    let mut delta = Delta::default();
    if let Some(message) = line.message {
        if !message.content.is_empty()
            || (message.thinking.is_none() && message.tool_calls.is_empty())
        {
            delta.content = Some(message.content);
        }
        delta.reasoning_content = message.thinking.filter(|t| !t.is_empty());
        if !message.tool_calls.is_empty() {
            let mut calls = Vec::with_capacity(message.tool_calls.len());
            for call in message.tool_calls {
                let arguments = match call.function.arguments {
                    Value::Null => "{}".to_owned(),
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                let id = call
                    .id
                    .filter(|id| !id.is_empty())
                    .unwrap_or_else(|| new_id("call_"));
                calls.push(ToolCallDelta::start(
                    *next_tool_index,
                    id,
                    call.function.name,
                    arguments,
                ));
                *next_tool_index += 1;
            }
            delta.tool_calls = Some(calls);
        }
    }
    let mut chunk = ChatChunk::delta(delta);
    if let Some(entries) = line.logprobs.filter(|e| !e.is_empty()) {
        chunk.choices[0].logprobs = Some(Box::new(openai_logprobs(entries)));
    }
    if line.done {
        let finish = match line.done_reason.as_deref() {
            Some("length") => FinishReason::Length,
            _ => FinishReason::Stop,
        };
        let choice: &mut ChunkChoice = &mut chunk.choices[0];
        if choice.delta.content.as_deref() == Some("") {
            choice.delta.content = None;
        }
        choice.finish_reason = Some(finish);
        chunk.usage = Some(Usage::new(
            line.prompt_eval_count.unwrap_or(0),
            line.eval_count.unwrap_or(0),
        ));
    }
    Ok(chunk)
}

impl ChatProvider for Ollama {
    fn name(&self) -> &str {
        self.upstream.provider()
    }

    fn chat(&self, request: Box<ChatRequest>) -> BoxFuture<'_, Result<ChunkStream, ProviderError>> {
        Box::pin(async move {
            let body = to_ollama_request(self.upstream.provider(), &request)?;
            let response = self.upstream.post_json("/api/chat", &body, &[]).await?;
            let provider = self.upstream.provider().to_owned();
            let mut next_tool_index = 0u32;
            if !request.is_stream() {
                // One object with the whole message, shaped like a `done:true` line.
                let whole = response.bytes().await?;
                let chunk = convert_line(&provider, &whole, &mut next_tool_index)?;
                return Ok(futures::stream::once(std::future::ready(Ok(chunk))).boxed());
            }
            // Stop reading at the `done:true` line (or the first error): nothing after it belongs to this answer.
            let ended = EndMarker::default();
            // Polled by hand: `scan` would build a future per line and move
            // the chunk through it.
            let mut lines = response.ndjson_lines(&ended);
            let mut finished = false;
            let chunks = futures::stream::poll_fn(move |cx| {
                if finished {
                    return Poll::Ready(None);
                }
                let item = match ready!(lines.poll_next_unpin(cx)) {
                    Some(line) => {
                        line.and_then(|l| convert_line(&provider, &l, &mut next_tool_index))
                    }
                    None => return Poll::Ready(None),
                };
                finished = match &item {
                    Ok(c) => c.choices.iter().any(|ch| ch.finish_reason.is_some()),
                    Err(_) => true,
                };
                if item.is_ok() && finished {
                    ended.set();
                }
                Poll::Ready(Some(item))
            });
            Ok(chunks.boxed())
        })
    }

    fn list_models(&self) -> BoxFuture<'_, Result<Vec<String>, ProviderError>> {
        Box::pin(async move {
            #[derive(Deserialize)]
            struct Tags {
                #[serde(default)]
                models: Vec<Tag>,
            }
            #[derive(Deserialize)]
            struct Tag {
                #[serde(default)]
                name: String,
                #[serde(default)]
                model: String,
            }
            let tags: Tags = self.upstream.get_json("/api/tags").await?;
            Ok(tags
                .models
                .into_iter()
                .map(|t| if t.model.is_empty() { t.name } else { t.model })
                .collect())
        })
    }
}

/// OpenAI's `reasoning_effort` as Ollama's `think`: `false` or a level.
/// Ollama refuses OpenAI's `minimal` and `xhigh`; they become `low` and
/// `high`, the nearest levels every thinking model takes (reference §2.1
/// also lists `max`, which gpt-oss does not take).
fn think_level(effort: &str) -> Value {
    match effort {
        "none" => false.into(),
        "minimal" => "low".into(),
        "xhigh" => "high".into(),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> ChatRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn log_probabilities_are_asked_and_come_back_in_openais_shape() {
        let body = to_ollama_request(
            "ollama",
            &request(
                json!({"model": "qwen3:8b", "messages": [{"role": "user", "content": "hi"}],
                            "logprobs": true, "top_logprobs": 2, "truncate": false, "n": 1}),
            ),
        )
        .unwrap();
        assert_eq!(body["logprobs"], true);
        assert_eq!(body["top_logprobs"], 2);
        assert_eq!(body["truncate"], false);
        let line = br#"{"message":{"role":"assistant","content":"Hi"},"done":false,
            "logprobs":[{"token":"Hi","logprob":-0.1,"top_logprobs":[{"token":"Hi","logprob":-0.1},{"token":"Yo","logprob":-2.5,"bytes":[89,111]}]}]}"#;
        let chunk = convert_line("ollama", line, &mut 0).unwrap();
        assert_eq!(
            chunk.choices[0].logprobs.as_deref(),
            Some(
                &json!({"content": [{"token": "Hi", "logprob": -0.1, "bytes": null, "top_logprobs": [
                {"token": "Hi", "logprob": -0.1, "bytes": null},
                {"token": "Yo", "logprob": -2.5, "bytes": [89, 111]}]}]})
            )
        );
        // Ollama answers one choice.
        let err = to_ollama_request(
            "ollama",
            &request(json!({"model": "qwen3:8b", "messages": [{"role": "user", "content": "hi"}], "n": 2})),
        )
        .unwrap_err();
        assert!(err.to_string().contains("n must be 1"), "{err}");
    }

    #[test]
    fn allowed_tools_keep_only_the_allowed_and_custom_tools_are_refused() {
        let req: ChatRequest = serde_json::from_value(json!({
            "model": "qwen3:8b",
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "a"}}, {"type": "function", "function": {"name": "b"}}],
            "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto",
                "tools": [{"type": "function", "function": {"name": "b"}}]}}
        }))
        .unwrap();
        let body = to_ollama_request("ollama", &req).unwrap();
        assert_eq!(
            body["tools"],
            json!([{"type": "function", "function": {"name": "b"}}])
        );
        let custom: ChatRequest = serde_json::from_value(json!({
            "model": "qwen3:8b",
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "custom", "custom": {"name": "apply_patch"}}]
        }))
        .unwrap();
        let err = to_ollama_request("ollama", &custom)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`apply_patch` is a custom tool"), "{err}");
        let undefined: ChatRequest = serde_json::from_value(json!({
            "model": "qwen3:8b",
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "a"}}],
            "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "required",
                "tools": [{"type": "function", "function": {"name": "z"}}]}}
        }))
        .unwrap();
        let err = to_ollama_request("ollama", &undefined)
            .unwrap_err()
            .to_string();
        assert!(err.contains("names `z`, which is not in `tools`"), "{err}");
    }

    #[test]
    fn converts_history_with_tool_calls_and_images() {
        let req = request(json!({
            "model": "qwen3:8b",
            "temperature": 0.7,
            "max_completion_tokens": 64,
            "stop": "\n\n",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_9", "type": "function", "function": {"name": "look", "arguments": "{\"b\":1,\"a\":2}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_9", "content": "a cat"}
            ]
        }));
        let body = to_ollama_request("ollama", &req).unwrap();
        assert_eq!(body["stream"], false);
        assert_eq!(body["think"], false);
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(body["messages"][1]["images"], json!(["AAAA"]));
        assert_eq!(body["messages"][1]["content"], "what is this");
        assert_eq!(
            body["messages"][2]["tool_calls"][0]["function"]["arguments"].to_string(),
            "{\"b\":1,\"a\":2}"
        );
        assert_eq!(body["messages"][3]["tool_name"], "look");
        assert_eq!(
            body["options"],
            json!({"temperature": 0.7, "num_predict": 64, "stop": ["\n\n"]})
        );
    }

    #[test]
    fn unset_sampling_fields_are_not_sent() {
        let req = request(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
        let body = to_ollama_request("ollama", &req).unwrap();
        assert!(body.get("options").is_none());
        assert!(body.get("tools").is_none());
    }

    #[test]
    fn http_image_urls_and_bad_arguments_are_refused() {
        let req = request(
            json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]}),
        );
        assert!(to_ollama_request("ollama", &req).is_err());
        let req = request(
            json!({"model": "m", "messages": [{"role": "assistant", "content": null, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]}),
        );
        let err = to_ollama_request("ollama", &req).unwrap_err().to_string();
        assert!(err.contains("messages[0]"), "{err}");
    }

    #[test]
    fn reasoning_effort_becomes_a_think_level_ollama_takes() {
        for (effort, think) in [
            ("high", json!("high")),
            ("low", json!("low")),
            ("none", json!(false)),
            // OpenAI's levels beyond Ollama's: the nearest it takes.
            ("minimal", json!("low")),
            ("xhigh", json!("high")),
        ] {
            let req = request(
                json!({"model": "m", "reasoning_effort": effort, "messages": [{"role": "user", "content": "hi"}]}),
            );
            assert_eq!(
                to_ollama_request("ollama", &req).unwrap()["think"],
                think,
                "{effort}"
            );
        }
    }

    #[test]
    fn response_format_becomes_format_or_is_refused() {
        let with = |format: Value| {
            let req = request(
                json!({"model": "m", "response_format": format, "messages": [{"role": "user", "content": "hi"}]}),
            );
            to_ollama_request("ollama", &req)
        };
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        let body =
            with(json!({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}));
        assert_eq!(body.unwrap()["format"], schema);
        // A schema-less json_schema still gets JSON, not prose.
        let body = with(json!({"type": "json_schema", "json_schema": {"name": "x"}}));
        assert_eq!(body.unwrap()["format"], "json");
        assert_eq!(
            with(json!({"type": "json_object"})).unwrap()["format"],
            "json"
        );
        assert!(
            with(json!({"type": "text"}))
                .unwrap()
                .get("format")
                .is_none()
        );
        let refused = with(json!({"type": "yaml"})).unwrap_err().to_string();
        assert!(refused.contains("response_format"), "{refused}");
    }

    #[test]
    fn lines_become_chunks_with_tool_ids_and_usage() {
        let mut next = 0;
        let line = br#"{"message":{"role":"assistant","content":"","tool_calls":[{"function":{"index":0,"name":"get_weather","arguments":{"city":"Tokyo"}}}]},"done":false}"#;
        let chunk = convert_line("ollama", line, &mut next).unwrap();
        let call = &chunk.choices[0].delta.tool_calls.as_ref().unwrap()[0];
        assert!(call.id.as_ref().unwrap().starts_with("call_"));
        assert_eq!(
            call.function.as_ref().unwrap().arguments.as_deref(),
            Some("{\"city\":\"Tokyo\"}")
        );
        assert_eq!(next, 1);
        let done = br#"{"message":{"role":"assistant","content":""},"done":true,"done_reason":"length","prompt_eval_count":26,"eval_count":282}"#;
        let chunk = convert_line("ollama", done, &mut next).unwrap();
        assert_eq!(chunk.choices[0].finish_reason, Some(FinishReason::Length));
        assert_eq!(chunk.usage, Some(Usage::new(26, 282)));
        let err = convert_line("ollama", br#"{"error":"out of memory"}"#, &mut next).unwrap_err();
        assert!(err.to_string().contains("out of memory"));
    }
}
