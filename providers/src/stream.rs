//! What every converted stream goes through, whatever its upstream:
//! [`normalize`] fixes the invariants OpenAI clients rely on, chunk by chunk and
//! without buffering, and [`Assembler`] joins chunks into one `chat.completion`.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures::{Stream, StreamExt};
use serde_json::{Map, Value};

use crate::error::{ProviderError, UpstreamErrorKind};
use crate::openai::{
    ChatChunk, ChatCompletion, Choice, FinishReason, ResponseMessage, Role, SharedStr, ToolCall,
    ToolKind, Usage,
};
use crate::provider::ChunkStream;

/// The identity every chunk of one response repeats.
#[derive(Debug, Clone)]
pub struct ResponseMeta {
    pub id: SharedStr,
    pub created: u64,
    pub model: SharedStr,
}

/// Applies, chunk by chunk:
/// - the same `id`, `created`, `model` and `object` on every chunk;
/// - `delta.role:"assistant"` on the first chunk;
/// - reasoning under one name (`reasoning_content`);
/// - usage moved out of the choices and sent once, last, as a `choices:[]` chunk
///   (the edge drops it unless the client asked for it);
/// - `finish_reason:"tool_calls"` whenever a tool call was streamed (trap 8);
/// - upstream error markers (`error` keys, `finish_reason:"error"`) turned into an `Err`;
/// - chunks left with no choice (Zen's cost event) dropped;
/// - a stream that ends without any finish reported as an error.
///
/// After the first `Err` the stream ends.
pub fn normalize(provider: String, upstream: ChunkStream, meta: ResponseMeta) -> Normalize {
    Normalize {
        upstream,
        meta,
        provider,
        first: true,
        finished: false,
        ended: false,
        tool_choices: Vec::new(),
        usage: None,
    }
}

/// The stream [`normalize`] returns. A plain `Stream` rather than `unfold`,
/// which would move this state in and out of a new future for every chunk,
/// and returned unboxed so the layers above poll it without another call
/// through a pointer.
pub struct Normalize {
    upstream: ChunkStream,
    meta: ResponseMeta,
    provider: String,
    first: bool,
    finished: bool,
    ended: bool,
    tool_choices: Vec<u32>,
    usage: Option<Usage>,
}

impl Stream for Normalize {
    type Item = Result<ChatChunk, ProviderError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let st = self.get_mut();
        loop {
            if st.ended {
                return Poll::Ready(None);
            }
            let next = ready!(st.upstream.poll_next_unpin(cx));
            match st.on_upstream(next) {
                Handling::Skip => {}
                Handling::Emit(item) => return Poll::Ready(Some(item)),
                Handling::End => return Poll::Ready(None),
            }
        }
    }
}

/// What one upstream item (or the upstream's end) becomes.
enum Handling {
    /// Nothing to hand on: read the next item.
    Skip,
    Emit(Result<ChatChunk, ProviderError>),
    /// The stream is over.
    End,
}

impl Normalize {
    fn on_upstream(&mut self, next: Option<Result<ChatChunk, ProviderError>>) -> Handling {
        match next {
            Some(Ok(mut chunk)) => {
                if let Some(err) = chunk_error(&self.provider, &chunk) {
                    self.ended = true;
                    return Handling::Emit(Err(err));
                }
                if let Some(usage) = take_usage(&mut chunk) {
                    self.usage = Some(usage);
                }
                if chunk.choices.is_empty() {
                    return Handling::Skip;
                }
                for choice in &mut chunk.choices {
                    if let Some(r) = choice.delta.reasoning.take()
                        && choice.delta.reasoning_content.is_none()
                    {
                        choice.delta.reasoning_content = Some(r);
                    }
                    if choice
                        .delta
                        .tool_calls
                        .as_ref()
                        .is_some_and(|c| !c.is_empty())
                        && !self.tool_choices.contains(&choice.index)
                    {
                        self.tool_choices.push(choice.index);
                    }
                    if choice.finish_reason == Some(FinishReason::Stop)
                        && self.tool_choices.contains(&choice.index)
                    {
                        choice.finish_reason = Some(FinishReason::ToolCalls);
                    }
                    if choice.finish_reason.is_some() {
                        self.finished = true;
                    }
                }
                if self.first {
                    self.first = false;
                    if let Some(choice) = chunk.choices.first_mut() {
                        choice.delta.role = Some(Role::Assistant);
                    }
                }
                stamp(&mut chunk, &self.meta);
                Handling::Emit(Ok(chunk))
            }
            Some(Err(e)) => {
                self.ended = true;
                Handling::Emit(Err(e))
            }
            None => {
                self.ended = true;
                if !self.finished {
                    let message = "the upstream stream ended before the response was finished";
                    return Handling::Emit(Err(ProviderError::mid_stream(
                        &self.provider,
                        UpstreamErrorKind::Server,
                        message,
                    )));
                }
                let Some(usage) = self.usage.take() else {
                    return Handling::End;
                };
                let mut chunk = ChatChunk {
                    usage: Some(usage),
                    ..ChatChunk::default()
                };
                stamp(&mut chunk, &self.meta);
                Handling::Emit(Ok(chunk))
            }
        }
    }
}

fn stamp(chunk: &mut ChatChunk, meta: &ResponseMeta) {
    chunk.id = meta.id.clone();
    chunk.created = meta.created;
    chunk.model = meta.model.clone();
}

/// Usage may sit at the top level (OpenAI, OpenRouter) or in a choice (Kimi).
fn take_usage(chunk: &mut ChatChunk) -> Option<Usage> {
    let in_choice = chunk.choices.iter_mut().find_map(|c| c.usage.take());
    chunk.usage.take().or(in_choice)
}

fn chunk_error(provider: &str, chunk: &ChatChunk) -> Option<ProviderError> {
    let error = chunk
        .error
        .as_deref()
        .or_else(|| chunk.choices.iter().find_map(|c| c.error.as_deref()));
    if let Some(error) = error {
        return Some(error_from_value(provider, error));
    }
    if chunk
        .choices
        .iter()
        .any(|c| c.finish_reason == Some(FinishReason::Error))
    {
        return Some(ProviderError::mid_stream(
            provider,
            UpstreamErrorKind::Server,
            "the upstream ended the response with finish_reason \"error\"",
        ));
    }
    None
}

/// An `error` value found inside a stream: a string or `{"message","code"|"type"}`.
pub fn error_from_value(provider: &str, error: &Value) -> ProviderError {
    let mut message = match error {
        Value::String(s) => s.clone(),
        other => other
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| other.to_string()),
    };
    crate::error::append_metadata(&mut message, error);
    let kind = error
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .map_or(UpstreamErrorKind::Server, UpstreamErrorKind::from_status);
    let mut failure = ProviderError::mid_stream(provider, kind, message);
    if let ProviderError::Upstream { code, param, .. } = &mut failure {
        (*code, *param) = crate::error::code_and_param(error);
    }
    failure
}

/// Joins normalized chunks into the `chat.completion` a non-stream client gets.
///
/// Choices and tool calls are kept in small vectors found by index (there is
/// almost always one of each), sorted once at the end.
#[derive(Debug, Default)]
pub struct Assembler {
    choices: Vec<ChoiceParts>,
    usage: Option<Usage>,
    system_fingerprint: Option<String>,
}

#[derive(Debug, Default)]
struct ChoiceParts {
    index: u32,
    content: Option<String>,
    reasoning: Option<String>,
    reasoning_details: Vec<Value>,
    refusal: Option<String>,
    tool_calls: Vec<(u32, ToolCall)>,
    finish_reason: Option<FinishReason>,
    logprobs: Vec<Value>,
    /// The keys deltas pass on ([`crate::openai::Delta::extra`]), joined by [`join_extra`].
    extra: Map<String, Value>,
}

/// Room an answer's text starts with, so its first few hundred bytes are not
/// copied at each doubling.
const TEXT_ROOM: usize = 256;

/// Appends a piece, when there is one, to a call's name or payload.
fn append_to(slot: &mut String, piece: &Option<String>) {
    if let Some(piece) = piece {
        slot.push_str(piece);
    }
}

fn append(slot: &mut Option<String>, piece: &Option<String>) {
    if let Some(piece) = piece {
        slot.get_or_insert_with(|| String::with_capacity(TEXT_ROOM))
            .push_str(piece);
    }
}

/// Joins streamed reasoning items as OpenRouter streams them: a piece with the
/// `type` and the (numeric) `index` of the last item continues it, its
/// `text`, `summary` or `data` appended and other keys set, a `null` never
/// replacing a value; anything else is a new item, so whole items without
/// an index are never run together.
fn join_reasoning_details(items: &mut Vec<Value>, pieces: &[Value]) {
    let continues = |last: &Map<String, Value>, next: &Map<String, Value>| {
        last.get("type") == next.get("type")
            && last.get("index").is_some_and(Value::is_u64)
            && last.get("index") == next.get("index")
    };
    for piece in pieces {
        match (items.last_mut(), piece) {
            (Some(Value::Object(last)), Value::Object(next)) if continues(last, next) => {
                for (key, value) in next {
                    match (last.get_mut(key), value) {
                        (_, Value::Null) => {}
                        (Some(Value::String(have)), Value::String(more))
                            if matches!(key.as_str(), "text" | "summary" | "data") =>
                        {
                            have.push_str(more);
                        }
                        _ => {
                            last.insert(key.clone(), value.clone());
                        }
                    }
                }
            }
            _ => items.push(piece.clone()),
        }
    }
}

/// Joins the keys deltas pass on: lists are appended to (annotations and
/// images come a few per chunk), anything else replaces what came before,
/// and a `null` never replaces a value.
fn join_extra(extra: &mut Map<String, Value>, pieces: &Map<String, Value>) {
    for (key, value) in pieces {
        match (extra.get_mut(key), value) {
            (Some(_), Value::Null) => {}
            (Some(Value::Array(have)), Value::Array(more)) => have.extend(more.iter().cloned()),
            (Some(have), _) => have.clone_from(value),
            (None, _) => {
                extra.insert(key.clone(), value.clone());
            }
        }
    }
}

impl Assembler {
    pub fn push(&mut self, chunk: &ChatChunk) {
        if let Some(usage) = &chunk.usage {
            self.usage = Some(usage.clone());
        }
        if chunk.system_fingerprint.is_some() {
            self.system_fingerprint
                .clone_from(&chunk.system_fingerprint);
        }
        for choice in &chunk.choices {
            let parts = match self.choices.iter().position(|c| c.index == choice.index) {
                Some(at) => &mut self.choices[at],
                None => {
                    self.choices.push(ChoiceParts {
                        index: choice.index,
                        ..ChoiceParts::default()
                    });
                    let last = self.choices.len() - 1;
                    &mut self.choices[last]
                }
            };
            append(&mut parts.content, &choice.delta.content);
            append(&mut parts.reasoning, &choice.delta.reasoning_content);
            if let Some(pieces) = &choice.delta.reasoning_details {
                join_reasoning_details(&mut parts.reasoning_details, pieces);
            }
            append(&mut parts.refusal, &choice.delta.refusal);
            join_extra(&mut parts.extra, &choice.delta.extra);
            for call in choice.delta.tool_calls.iter().flatten() {
                let at = match parts.tool_calls.iter().position(|(i, _)| *i == call.index) {
                    Some(at) => at,
                    None => {
                        let empty = ToolCall::function(String::new(), String::new(), String::new());
                        parts.tool_calls.push((call.index, empty));
                        parts.tool_calls.len() - 1
                    }
                };
                let slot = &mut parts.tool_calls[at].1;
                if let Some(id) = &call.id {
                    slot.id.clone_from(id);
                }
                if let Some(f) = &call.function {
                    append_to(&mut slot.name, &f.name);
                    append_to(&mut slot.arguments, &f.arguments);
                }
                if let Some(c) = &call.custom {
                    slot.kind = ToolKind::Custom;
                    append_to(&mut slot.name, &c.name);
                    append_to(&mut slot.arguments, &c.input);
                }
            }
            if let Some(Value::Object(lp)) = choice.logprobs.as_deref()
                && let Some(Value::Array(items)) = lp.get("content")
            {
                parts.logprobs.extend(items.iter().cloned());
            }
            if choice.finish_reason.is_some() {
                parts.finish_reason = choice.finish_reason;
            }
        }
    }

    /// The usage reported so far.
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// The text gathered so far for choice 0 (post hooks summarise it).
    pub fn text(&self) -> &str {
        self.choices
            .iter()
            .find(|c| c.index == 0)
            .and_then(|c| c.content.as_deref())
            .unwrap_or_default()
    }

    pub fn finish(mut self, meta: &ResponseMeta) -> ChatCompletion {
        self.choices.sort_by_key(|c| c.index);
        let choices = self
            .choices
            .into_iter()
            .map(|mut parts| {
                parts.tool_calls.sort_by_key(|(i, _)| *i);
                let tool_calls: Vec<ToolCall> =
                    parts.tool_calls.into_iter().map(|(_, call)| call).collect();
                // OpenAI answers `content: null` when the reply is only tool calls.
                let content = match parts.content {
                    Some(c) if !c.is_empty() || tool_calls.is_empty() => Some(c),
                    _ if tool_calls.is_empty() => Some(String::new()),
                    _ => None,
                };
                Choice {
                    index: parts.index,
                    message: ResponseMessage {
                        role: Role::Assistant,
                        content,
                        reasoning_content: parts.reasoning,
                        reasoning_details: (!parts.reasoning_details.is_empty())
                            .then_some(parts.reasoning_details),
                        tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                        refusal: parts.refusal,
                        extra: parts.extra,
                    },
                    finish_reason: parts.finish_reason,
                    logprobs: (!parts.logprobs.is_empty())
                        .then(|| serde_json::json!({ "content": parts.logprobs })),
                }
            })
            .collect();
        ChatCompletion {
            id: meta.id.to_string(),
            object: "chat.completion".into(),
            created: meta.created,
            model: meta.model.to_string(),
            system_fingerprint: self.system_fingerprint,
            choices,
            usage: self.usage,
            lakehouse: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::{ChunkChoice, Delta, ToolCallDelta};
    use futures::executor::block_on;

    fn meta() -> ResponseMeta {
        ResponseMeta {
            id: "chatcmpl-x".into(),
            created: 7,
            model: "m".into(),
        }
    }

    fn run(chunks: Vec<Result<ChatChunk, ProviderError>>) -> Vec<Result<ChatChunk, ProviderError>> {
        block_on(normalize("p".into(), futures::stream::iter(chunks).boxed(), meta()).collect())
    }

    #[test]
    fn stamps_role_ids_and_moves_usage_last() {
        let mut kimi_finish = ChatChunk::finish(FinishReason::Stop, None);
        kimi_finish.choices[0].usage = Some(Usage::new(19, 13));
        let out = run(vec![
            Ok(ChatChunk::delta(Delta::content("Hi"))),
            Ok(kimi_finish),
        ]);
        assert_eq!(out.len(), 3);
        let first = out[0].as_ref().unwrap();
        assert_eq!(first.id, "chatcmpl-x");
        assert_eq!(first.choices[0].delta.role, Some(Role::Assistant));
        let finish = out[1].as_ref().unwrap();
        assert!(finish.usage.is_none());
        assert_eq!(finish.choices[0].delta.role, None);
        let usage = out[2].as_ref().unwrap();
        assert!(usage.choices.is_empty());
        assert_eq!(usage.usage, Some(Usage::new(19, 13)));
        assert_eq!(usage.created, 7);
    }

    #[test]
    fn tool_calls_turn_stop_into_tool_calls() {
        let call = ToolCallDelta::start(0, "call_1".into(), "f".into(), "{}".into());
        let out = run(vec![
            Ok(ChatChunk::delta(Delta::tool_call(call))),
            Ok(ChatChunk::finish(FinishReason::Stop, None)),
        ]);
        assert_eq!(
            out[1].as_ref().unwrap().choices[0].finish_reason,
            Some(FinishReason::ToolCalls)
        );
    }

    #[test]
    fn error_markers_end_the_stream_with_an_error() {
        let mut errored = ChatChunk::finish(FinishReason::Error, None);
        errored.error = Some(Box::new(
            serde_json::json!({"code": 502, "message": "provider down",
                "metadata": {"provider_name": "Moonshot", "raw": "engine overloaded"}}),
        ));
        let out = run(vec![
            Ok(ChatChunk::delta(Delta::content("a"))),
            Ok(errored),
            Ok(ChatChunk::delta(Delta::content("never"))),
        ]);
        assert_eq!(out.len(), 2);
        let err = out[1].as_ref().unwrap_err();
        assert!(
            err.to_string()
                .contains("provider down — Moonshot: engine overloaded"),
            "{err}"
        );
    }

    #[test]
    fn a_stream_without_finish_is_an_error() {
        let out = run(vec![Ok(ChatChunk::delta(Delta::content("a")))]);
        assert!(out[1].is_err());
    }

    #[test]
    fn choiceless_chunks_without_usage_are_dropped() {
        let cost = ChatChunk::default();
        let out = run(vec![
            Ok(ChatChunk::delta(Delta::content("a"))),
            Ok(cost),
            Ok(ChatChunk::finish(FinishReason::Stop, None)),
        ]);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn assembler_orders_choices_and_tool_calls_by_index() {
        let choice = |index: u32, delta: Delta| ChunkChoice {
            index,
            delta,
            ..ChunkChoice::default()
        };
        let mut a = Assembler::default();
        a.push(&ChatChunk {
            choices: vec![
                choice(1, Delta::content("b")),
                choice(
                    0,
                    Delta::tool_call(ToolCallDelta::start(
                        1,
                        "c2".into(),
                        "g".into(),
                        "{}".into(),
                    )),
                ),
            ],
            ..ChatChunk::default()
        });
        a.push(&ChatChunk {
            choices: vec![
                choice(
                    0,
                    Delta::tool_call(ToolCallDelta::start(0, "c1".into(), "f".into(), "{".into())),
                ),
                choice(1, Delta::content("c")),
            ],
            ..ChatChunk::default()
        });
        a.push(&ChatChunk::delta(Delta::tool_call(
            ToolCallDelta::arguments(0, "}".into()),
        )));
        assert_eq!(a.text(), "");
        let done = a.finish(&meta());
        let indexes: Vec<u32> = done.choices.iter().map(|c| c.index).collect();
        assert_eq!(indexes, [0, 1]);
        assert_eq!(done.choices[1].message.content.as_deref(), Some("bc"));
        let calls = done.choices[0].message.tool_calls.as_ref().unwrap();
        let ids: Vec<&str> = calls.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["c1", "c2"]);
        assert_eq!(calls[0].arguments, "{}");
        assert_eq!(done.choices[0].message.content, None);
    }

    #[test]
    fn assembler_joins_reasoning_items_streamed_in_pieces() {
        let piece = |item: Value| {
            ChatChunk::from_json(
                &serde_json::json!({"choices": [{"index": 0, "delta": {"reasoning_details": [item]}}]})
                    .to_string(),
            )
            .unwrap()
        };
        let mut assembler = Assembler::default();
        for item in [
            serde_json::json!({"type": "reasoning.text", "text": "Oslo ", "index": 0, "format": "anthropic-claude-v1"}),
            serde_json::json!({"type": "reasoning.text", "text": "is cold.", "index": 0}),
            serde_json::json!({"type": "reasoning.text", "signature": "sig", "index": 0}),
            serde_json::json!({"type": "reasoning.text", "signature": null, "index": 0}),
            serde_json::json!({"type": "reasoning.encrypted", "data": "enc", "index": 1}),
            // Whole items without an index stay apart.
            serde_json::json!({"type": "reasoning.encrypted", "data": "a"}),
            serde_json::json!({"type": "reasoning.encrypted", "data": "b"}),
        ] {
            assembler.push(&piece(item));
        }
        // OpenRouter's empty list on every chunk says nothing.
        assembler.push(
            &ChatChunk::from_json(r#"{"choices":[{"index":0,"delta":{"content":"Hi","reasoning_details":[]},"finish_reason":"stop"}]}"#)
                .unwrap(),
        );
        let message = assembler.finish(&meta()).choices.remove(0).message;
        assert_eq!(
            message.reasoning_details.unwrap(),
            vec![
                serde_json::json!({"type": "reasoning.text", "text": "Oslo is cold.", "index": 0,
                                   "format": "anthropic-claude-v1", "signature": "sig"}),
                serde_json::json!({"type": "reasoning.encrypted", "data": "enc", "index": 1}),
                serde_json::json!({"type": "reasoning.encrypted", "data": "a"}),
                serde_json::json!({"type": "reasoning.encrypted", "data": "b"}),
            ]
        );
        // A field of another shape is ignored, not a failed answer.
        let odd = ChatChunk::from_json(
            r#"{"choices":[{"index":0,"delta":{"content":"x","reasoning_details":{"a":1}}}]}"#,
        )
        .unwrap();
        assert!(odd.choices[0].delta.reasoning_details.is_none());
        assert_eq!(message.content.as_deref(), Some("Hi"));
    }

    #[test]
    fn assembler_keeps_the_keys_deltas_pass_on() {
        let mut assembler = Assembler::default();
        for text in [
            r#"{"choices":[{"index":0,"delta":{"content":"Hi","audio":{"id":"a1"}}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"annotations":[{"n":1}],"audio":null}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"annotations":[{"n":2}],"audio":{"id":"a2"}}}]}"#,
        ] {
            let chunk = ChatChunk::from_json(text).unwrap();
            assert!(
                crate::decode::read_chunk(text).is_none(),
                "left to serde: {text}"
            );
            assembler.push(&chunk);
        }
        let message = assembler.finish(&meta()).choices.remove(0).message;
        assert_eq!(message.content.as_deref(), Some("Hi"));
        // Lists are appended to; a null never replaces a value; anything else is replaced.
        assert_eq!(
            serde_json::Value::Object(message.extra),
            serde_json::json!({"annotations": [{"n": 1}, {"n": 2}], "audio": {"id": "a2"}})
        );
    }

    #[test]
    fn assembler_joins_content_and_tool_call_pieces() {
        let mut a = Assembler::default();
        a.push(&ChatChunk::delta(Delta::content("Hel")));
        a.push(&ChatChunk::delta(Delta::content("lo")));
        a.push(&ChatChunk::delta(Delta::tool_call(ToolCallDelta::start(
            0,
            "call_1".into(),
            "get_weather".into(),
            String::new(),
        ))));
        a.push(&ChatChunk::delta(Delta::tool_call(
            ToolCallDelta::arguments(0, "{\"city\":".into()),
        )));
        a.push(&ChatChunk::delta(Delta::tool_call(
            ToolCallDelta::arguments(0, "\"Oslo\"}".into()),
        )));
        a.push(&ChatChunk {
            choices: vec![ChunkChoice {
                finish_reason: Some(FinishReason::ToolCalls),
                ..ChunkChoice::default()
            }],
            usage: Some(Usage::new(3, 4)),
            ..ChatChunk::default()
        });
        let done = a.finish(&meta());
        let message = &done.choices[0].message;
        assert_eq!(message.content.as_deref(), Some("Hello"));
        let calls = message.tool_calls.as_ref().unwrap();
        assert_eq!(calls[0].arguments, "{\"city\":\"Oslo\"}");
        assert_eq!(calls[0].id, "call_1");
        assert_eq!(done.usage.unwrap().total_tokens, 7);
        assert_eq!(done.choices[0].finish_reason, Some(FinishReason::ToolCalls));
    }

    #[test]
    fn custom_tool_call_pieces_join_into_a_custom_call() {
        let mut a = Assembler::default();
        a.push(&ChatChunk::delta(Delta::tool_call(ToolCallDelta::opening(
            0,
            "c1".into(),
            ToolKind::Custom,
            "apply_patch".into(),
            String::new(),
        ))));
        for piece in ["*** Begin", " Patch"] {
            a.push(&ChatChunk::delta(Delta::tool_call(ToolCallDelta::piece(
                0,
                ToolKind::Custom,
                piece.into(),
            ))));
        }
        let calls = a
            .finish(&meta())
            .choices
            .remove(0)
            .message
            .tool_calls
            .unwrap();
        assert_eq!(
            calls,
            [ToolCall {
                id: "c1".into(),
                kind: ToolKind::Custom,
                name: "apply_patch".into(),
                arguments: "*** Begin Patch".into()
            }]
        );
        let written = serde_json::to_value(&calls[0]).unwrap();
        assert_eq!(
            written,
            serde_json::json!({"id": "c1", "type": "custom", "custom": {"name": "apply_patch", "input": "*** Begin Patch"}})
        );
    }
}
