//! The JSON of the answers the proxy sends most, written by hand: every
//! streamed event is a [`ChatChunk`], every whole answer a [`ChatCompletion`].
//!
//! serde's derived encoding went through its map machinery for each of the
//! ~20 keys of a chunk, escaping each key byte by byte and writing `"`, `:`
//! and `,` one call at a time: about 2,000 instructions a chunk, the largest
//! single cost of a streamed chat after parsing. Here the fixed parts are
//! literals copied whole, and each string is scanned once and copied whole
//! when it needs no escaping (almost always). The bytes are exactly those of
//! `serde_json::to_writer`, which property tests check; the rare nested
//! values (tool calls, usage, logprobs, annotations) still go through serde.
//!
//! [`write_str`], [`write_u64`] and [`write_value`] are the pieces, for other
//! hand-written encodings of hot records (the proxy's request log). Anything
//! else serde encodes goes through [`json`], serde_json's bytes with faster
//! strings (upstream request bodies, the nested parts here).

pub mod json;

use serde::Serialize;

use serde_json::Value;

use crate::openai::{
    ChatChunk, ChatCompletion, Choice, ChunkChoice, Content, Delta, FinishReason, Message,
    ResponseMessage, Role, Usage,
};

impl ChatChunk {
    /// Appends the chunk's JSON to `out`: the same bytes as
    /// `serde_json::to_writer(out, self)`.
    pub fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        self.write_head(out)?;
        self.write_tail(out)
    }

    /// The opening of the chunk's JSON, up to its `model`: what every chunk
    /// of one response repeats, so a stream may write it once and copy it.
    pub fn write_head(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        out.extend_from_slice(b"{\"id\":");
        write_str(out, &self.id)?;
        out.extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
        write_u64(out, self.created);
        out.extend_from_slice(b",\"model\":");
        write_str(out, &self.model)
    }

    /// Whether [`write_head`](Self::write_head) writes the same bytes for both chunks.
    pub fn same_head(&self, other: &ChatChunk) -> bool {
        // Comparing shared strings checks their pointers first: chunks of one
        // response share them.
        self.created == other.created && self.id == other.id && self.model == other.model
    }

    /// The rest of the chunk's JSON after [`write_head`](Self::write_head).
    pub fn write_tail(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        if let Some(fingerprint) = &self.system_fingerprint {
            out.extend_from_slice(b",\"system_fingerprint\":");
            write_str(out, fingerprint)?;
        }
        write_choices(out, &self.choices, write_choice)?;
        write_end(out, self.usage.as_ref(), self.lakehouse.as_deref())
    }
}

impl ChatCompletion {
    /// Appends the completion's JSON to `out`: the same bytes as
    /// `serde_json::to_writer(out, self)`.
    pub fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        out.extend_from_slice(b"{\"id\":");
        write_str(out, &self.id)?;
        out.extend_from_slice(b",\"object\":");
        write_str(out, &self.object)?;
        out.extend_from_slice(b",\"created\":");
        write_u64(out, self.created);
        out.extend_from_slice(b",\"model\":");
        write_str(out, &self.model)?;
        out.extend_from_slice(b",\"system_fingerprint\":");
        match &self.system_fingerprint {
            Some(fingerprint) => write_str(out, fingerprint)?,
            None => out.extend_from_slice(b"null"),
        }
        write_choices(out, &self.choices, write_completion_choice)?;
        write_end(out, self.usage.as_ref(), self.lakehouse.as_ref())
    }
}

/// `,"choices":[...]`, each choice written by `write`.
fn write_choices<T>(
    out: &mut Vec<u8>,
    choices: &[T],
    write: fn(&mut Vec<u8>, &T) -> serde_json::Result<()>,
) -> serde_json::Result<()> {
    out.extend_from_slice(b",\"choices\":[");
    for (i, choice) in choices.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(out, choice)?;
    }
    out.push(b']');
    Ok(())
}

/// The fields both answers end with, when set, and the closing brace.
fn write_end(
    out: &mut Vec<u8>,
    usage: Option<&Usage>,
    lakehouse: Option<&Value>,
) -> serde_json::Result<()> {
    if let Some(usage) = usage {
        out.extend_from_slice(b",\"usage\":");
        write_value(out, usage)?;
    }
    if let Some(lakehouse) = lakehouse {
        out.extend_from_slice(b",\"lakehouse\":");
        write_value(out, lakehouse)?;
    }
    out.push(b'}');
    Ok(())
}

fn write_completion_choice(out: &mut Vec<u8>, choice: &Choice) -> serde_json::Result<()> {
    out.extend_from_slice(b"{\"index\":");
    write_u64(out, u64::from(choice.index));
    out.extend_from_slice(b",\"message\":");
    write_message(out, &choice.message)?;
    write_finish_reason(out, choice.finish_reason);
    out.extend_from_slice(b",\"logprobs\":");
    match &choice.logprobs {
        Some(logprobs) => write_value(out, logprobs)?,
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
    Ok(())
}

fn write_message(out: &mut Vec<u8>, message: &ResponseMessage) -> serde_json::Result<()> {
    out.push(b'{');
    out.extend_from_slice(role_field(message.role));
    out.extend_from_slice(b",\"content\":");
    match &message.content {
        Some(content) => write_str(out, content)?,
        None => out.extend_from_slice(b"null"),
    }
    if let Some(reasoning) = &message.reasoning_content {
        out.extend_from_slice(b",\"reasoning_content\":");
        write_str(out, reasoning)?;
    }
    if let Some(details) = &message.reasoning_details {
        out.extend_from_slice(b",\"reasoning_details\":");
        write_value(out, details)?;
    }
    if let Some(calls) = &message.tool_calls {
        out.extend_from_slice(b",\"tool_calls\":");
        write_value(out, calls)?;
    }
    if let Some(refusal) = &message.refusal {
        out.extend_from_slice(b",\"refusal\":");
        write_str(out, refusal)?;
    }
    for (key, value) in &message.extra {
        out.push(b',');
        write_entry(out, key, value)?;
    }
    out.push(b'}');
    Ok(())
}

impl Message {
    /// Appends the message's JSON to `out`: the same bytes as
    /// `serde_json::to_writer`, at about a fifth of the cost for a text
    /// message (serde went through its map machinery for the flattened
    /// `extra`). The proxy's request log writes every captured message.
    pub fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        out.push(b'{');
        out.extend_from_slice(role_field(self.role));
        out.extend_from_slice(b",\"content\":");
        match &self.content {
            None => out.extend_from_slice(b"null"),
            Some(Content::Text(text)) => write_str(out, text)?,
            Some(parts) => write_value(out, parts)?,
        }
        if let Some(name) = &self.name {
            out.extend_from_slice(b",\"name\":");
            write_str(out, name)?;
        }
        if let Some(calls) = &self.tool_calls {
            out.extend_from_slice(b",\"tool_calls\":");
            write_value(out, calls)?;
        }
        if let Some(id) = &self.tool_call_id {
            out.extend_from_slice(b",\"tool_call_id\":");
            write_str(out, id)?;
        }
        if let Some(reasoning) = &self.reasoning_content {
            out.extend_from_slice(b",\"reasoning_content\":");
            write_str(out, reasoning)?;
        }
        for (key, value) in &self.extra {
            out.push(b',');
            write_entry(out, key, value)?;
        }
        out.push(b'}');
        Ok(())
    }
}

/// `messages` as a JSON array, each as [`Message::write_json`] writes it.
pub fn write_messages(out: &mut Vec<u8>, messages: &[Message]) -> serde_json::Result<()> {
    out.push(b'[');
    for (n, message) in messages.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        message.write_json(out)?;
    }
    out.push(b']');
    Ok(())
}

/// `,"finish_reason":` and the reason, `null` when there is none.
fn write_finish_reason(out: &mut Vec<u8>, reason: Option<FinishReason>) {
    out.extend_from_slice(b",\"finish_reason\":");
    out.extend_from_slice(match reason {
        None => b"null",
        Some(FinishReason::Stop) => b"\"stop\"",
        Some(FinishReason::Length) => b"\"length\"",
        Some(FinishReason::ToolCalls) => b"\"tool_calls\"",
        Some(FinishReason::ContentFilter) => b"\"content_filter\"",
        Some(FinishReason::FunctionCall) => b"\"function_call\"",
        Some(FinishReason::Error) => b"\"error\"",
    });
}

/// `"role":"<role>"`.
fn role_field(role: Role) -> &'static [u8] {
    match role {
        Role::System => b"\"role\":\"system\"",
        Role::Developer => b"\"role\":\"developer\"",
        Role::User => b"\"role\":\"user\"",
        Role::Assistant => b"\"role\":\"assistant\"",
        Role::Tool => b"\"role\":\"tool\"",
    }
}

fn write_choice(out: &mut Vec<u8>, choice: &ChunkChoice) -> serde_json::Result<()> {
    out.extend_from_slice(b"{\"index\":");
    write_u64(out, u64::from(choice.index));
    out.extend_from_slice(b",\"delta\":");
    write_delta(out, &choice.delta)?;
    write_finish_reason(out, choice.finish_reason);
    if let Some(logprobs) = &choice.logprobs {
        out.extend_from_slice(b",\"logprobs\":");
        write_value(out, logprobs)?;
    }
    out.push(b'}');
    Ok(())
}

fn write_delta(out: &mut Vec<u8>, delta: &Delta) -> serde_json::Result<()> {
    // Each field writes its own leading comma but the first.
    let mut comma = "";
    out.push(b'{');
    if let Some(role) = delta.role {
        out.extend_from_slice(role_field(role));
        comma = ",";
    }
    for (key, text) in [
        ("\"content\":", &delta.content),
        ("\"reasoning_content\":", &delta.reasoning_content),
    ] {
        if let Some(text) = text {
            out.extend_from_slice(comma.as_bytes());
            out.extend_from_slice(key.as_bytes());
            write_str(out, text)?;
            comma = ",";
        }
    }
    if let Some(details) = &delta.reasoning_details {
        out.extend_from_slice(comma.as_bytes());
        out.extend_from_slice(b"\"reasoning_details\":");
        write_value(out, details)?;
        comma = ",";
    }
    if let Some(calls) = &delta.tool_calls {
        out.extend_from_slice(comma.as_bytes());
        out.extend_from_slice(b"\"tool_calls\":");
        write_value(out, calls)?;
        comma = ",";
    }
    if let Some(refusal) = &delta.refusal {
        out.extend_from_slice(comma.as_bytes());
        out.extend_from_slice(b"\"refusal\":");
        write_str(out, refusal)?;
        comma = ",";
    }
    for (key, value) in &delta.extra {
        out.extend_from_slice(comma.as_bytes());
        write_entry(out, key, value)?;
        comma = ",";
    }
    out.push(b'}');
    Ok(())
}

/// `"key":value`, for the keys a message or delta passes on as they came.
fn write_entry(out: &mut Vec<u8>, key: &str, value: &Value) -> serde_json::Result<()> {
    write_str(out, key)?;
    out.push(b':');
    write_value(out, value)
}

/// Any value, by serde (through [`json`]): for the rare nested parts.
pub fn write_value<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> serde_json::Result<()> {
    json::to_writer(out, value)
}

/// `text` as a JSON string, escaped exactly as serde_json escapes it; runs
/// with nothing to escape (usually the whole text) are copied in one piece.
pub fn write_str(out: &mut Vec<u8>, text: &str) -> serde_json::Result<()> {
    json::write_escaped(out, text);
    Ok(())
}

/// `n` in decimal.
pub fn write_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;
    use serde_json::json;

    use crate::openai::{
        ChatChunk, ChatCompletion, Choice, ChunkChoice, Delta, FinishReason, ResponseMessage, Role,
        ToolCall, ToolCallDelta, ToolKind, Usage,
    };

    fn same_as_serde(chunk: &ChatChunk) {
        let mut ours = Vec::new();
        chunk.write_json(&mut ours).unwrap();
        let serde = serde_json::to_vec(chunk).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&serde)
        );
    }

    #[test]
    fn a_chunk_with_every_field_encodes_as_serde_does() {
        let mut chunk = ChatChunk {
            id: "chatcmpl-\"q\"".into(),
            created: 1_733_000_000,
            model: "bench/gpt-4o".into(),
            system_fingerprint: Some("fp_1".into()),
            choices: vec![
                ChunkChoice {
                    index: 0,
                    delta: Delta {
                        role: Some(Role::Assistant),
                        content: Some("line\none \u{1} \\ é".into()),
                        reasoning_content: Some("think".into()),
                        reasoning: Some("never sent".into()),
                        reasoning_details: Some(vec![
                            json!({"type": "reasoning.text", "text": "t", "signature": "s"}),
                        ]),
                        tool_calls: Some(vec![ToolCallDelta::start(
                            0,
                            "call_1".into(),
                            "f".into(),
                            "{\"a\":1}".into(),
                        )]),
                        refusal: Some("no".into()),
                        extra: serde_json::Map::from_iter([
                            ("annotations".to_owned(), json!([{"type": "url_citation"}])),
                            ("audio".to_owned(), json!(null)),
                        ]),
                    },
                    finish_reason: Some(FinishReason::ToolCalls),
                    logprobs: Some(Box::new(json!({"content": []}))),
                    usage: Some(Usage::new(1, 2)),
                    error: Some(Box::new(json!("never sent"))),
                },
                ChunkChoice {
                    index: 1,
                    delta: Delta::default(),
                    ..ChunkChoice::default()
                },
            ],
            usage: Some(Usage::new(3, 4)),
            error: Some(Box::new(json!({"message": "never sent"}))),
            lakehouse: Some(Box::new(json!({"sources": [{"id": "d1"}]}))),
            ..ChatChunk::default()
        };
        same_as_serde(&chunk);
        let mut split = Vec::new();
        chunk.write_head(&mut split).unwrap();
        chunk.write_tail(&mut split).unwrap();
        assert_eq!(split, serde_json::to_vec(&chunk).unwrap());
        let other = ChatChunk {
            id: chunk.id.clone(),
            created: chunk.created,
            model: chunk.model.clone(),
            ..ChatChunk::default()
        };
        assert!(chunk.same_head(&other));
        assert!(!chunk.same_head(&ChatChunk::default()));
        chunk.choices.clear();
        same_as_serde(&chunk);
        same_as_serde(&ChatChunk::default());
    }

    fn finish_reason() -> impl Strategy<Value = Option<FinishReason>> {
        prop::option::of(prop::sample::select(vec![
            FinishReason::Stop,
            FinishReason::Length,
            FinishReason::ToolCalls,
            FinishReason::ContentFilter,
            FinishReason::FunctionCall,
            FinishReason::Error,
        ]))
    }

    fn role() -> impl Strategy<Value = Option<Role>> {
        prop::option::of(prop::sample::select(vec![
            Role::System,
            Role::Developer,
            Role::User,
            Role::Assistant,
            Role::Tool,
        ]))
    }

    fn text() -> impl Strategy<Value = Option<String>> {
        prop::option::of(any::<String>())
    }

    fn choice() -> impl Strategy<Value = ChunkChoice> {
        (
            any::<u32>(),
            role(),
            text(),
            text(),
            text(),
            prop::option::of(any::<String>()),
            finish_reason(),
            any::<bool>(),
        )
            .prop_map(
                |(index, role, content, reasoning_content, refusal, call, finish, logprobs)| {
                    ChunkChoice {
                        index,
                        delta: Delta {
                            role,
                            content,
                            reasoning_content,
                            tool_calls: call.map(|args| vec![ToolCallDelta::arguments(0, args)]),
                            refusal,
                            extra: if index % 3 == 0 {
                                serde_json::Map::from_iter([(
                                    "images".to_owned(),
                                    json!([{"\n": 1}]),
                                )])
                            } else {
                                serde_json::Map::new()
                            },
                            ..Delta::default()
                        },
                        finish_reason: finish,
                        logprobs: logprobs.then(|| Box::new(json!({"content": null}))),
                        ..ChunkChoice::default()
                    }
                },
            )
    }

    /// A request message from JSON with each optional key present or not.
    fn message() -> impl Strategy<Value = crate::openai::Message> {
        (
            prop::sample::select(vec!["system", "developer", "user", "assistant", "tool"]),
            prop::sample::select(vec![0u8, 1, 2]),
            any::<String>(),
            text(),
            any::<bool>(),
            text(),
            text(),
            any::<bool>(),
        )
            .prop_map(|(role, content, text, name, calls, call_id, reasoning, extra)| {
                let mut message = json!({"role": role});
                message["content"] = match content {
                    0 => json!(null),
                    1 => json!(text),
                    _ => json!([{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": "data:x"}}]),
                };
                if let Some(name) = name {
                    message["name"] = json!(name);
                }
                if calls {
                    message["tool_calls"] = json!([{"id": "c1", "type": "function", "function": {"name": "f", "arguments": text}}]);
                }
                if let Some(id) = call_id {
                    message["tool_call_id"] = json!(id);
                }
                if let Some(reasoning) = reasoning {
                    message["reasoning_content"] = json!(reasoning);
                }
                if extra {
                    message["refusal"] = json!(text);
                    message["reasoning_details"] = json!([{"\n": 1}]);
                }
                serde_json::from_value(message).unwrap()
            })
    }

    proptest! {
        #[test]
        fn every_request_message_encodes_as_serde_does(
            messages in prop::collection::vec(message(), 0..4),
        ) {
            let mut ours = Vec::new();
            super::write_messages(&mut ours, &messages).unwrap();
            let serde = serde_json::to_vec(&messages).unwrap();
            prop_assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&serde));
        }
    }

    fn completion_same_as_serde(completion: &ChatCompletion) {
        let mut ours = Vec::new();
        completion.write_json(&mut ours).unwrap();
        let serde = serde_json::to_vec(completion).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&serde)
        );
    }

    proptest! {
        #[test]
        fn every_completion_encodes_as_serde_does(
            id in any::<String>(),
            model in any::<String>(),
            created in any::<u64>(),
            fingerprint in text(),
            messages in prop::collection::vec(
                (any::<u32>(), role(), text(), text(), any::<bool>(), text(), finish_reason(), any::<bool>()),
                0..3,
            ),
            usage in prop::option::of((any::<u32>(), any::<u32>())),
            lakehouse in any::<bool>(),
        ) {
            let choices = messages
                .into_iter()
                .map(|(index, role, content, reasoning_content, call, refusal, finish_reason, logprobs)| Choice {
                    index,
                    message: ResponseMessage {
                        role: role.unwrap_or(Role::Assistant),
                        content,
                        reasoning_content,
                        reasoning_details: call
                            .then(|| vec![json!({"type": "reasoning.encrypted", "data": "x"})]),
                        tool_calls: call.then(|| vec![
                            ToolCall::function("call_1", "f", "{\"a\":\"\\n\"}"),
                            ToolCall { id: "call_2".into(), kind: ToolKind::Custom, name: "g".into(), arguments: "x\n\"y\"".into() },
                        ]),
                        refusal,
                        extra: if call {
                            serde_json::Map::from_iter([("annotations".to_owned(), json!([]))])
                        } else {
                            serde_json::Map::new()
                        },
                    },
                    finish_reason,
                    logprobs: logprobs.then(|| json!({"content": []})),
                })
                .collect();
            let completion = ChatCompletion {
                id,
                object: "chat.completion".into(),
                created,
                model,
                system_fingerprint: fingerprint,
                choices,
                usage: usage.map(|(p, c)| Usage::new(p.into(), c.into())),
                lakehouse: lakehouse.then(|| json!({"sources": [{"id": "d1"}]})),
            };
            completion_same_as_serde(&completion);
        }

        #[test]
        fn every_chunk_encodes_as_serde_does(
            id in any::<String>(),
            model in any::<String>(),
            created in any::<u64>(),
            fingerprint in text(),
            choices in prop::collection::vec(choice(), 0..3),
            usage in prop::option::of((any::<u32>(), any::<u32>())),
            lakehouse in any::<bool>(),
        ) {
            let chunk = ChatChunk {
                id: id.into(),
                created,
                model: model.into(),
                system_fingerprint: fingerprint,
                choices,
                usage: usage.map(|(p, c)| Usage::new(p.into(), c.into())),
                lakehouse: lakehouse.then(|| Box::new(json!({"sources": []}))),
                ..ChatChunk::default()
            };
            same_as_serde(&chunk);
        }
    }
}
