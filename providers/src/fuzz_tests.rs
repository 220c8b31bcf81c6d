//! Property tests over everything that parses untrusted bytes: the request
//! body, the NDJSON line splitter and every adapter's event converter (the
//! SSE decoder has its own in `sse`). Whatever the input, nothing panics;
//! well-formed input splits the same however it is cut.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use futures::StreamExt;
use proptest::prelude::*;
use serde_json::Value;

use crate::adapters::SseConverter;
use crate::adapters::{anthropic, ollama, responses};
use crate::http::ndjson_lines;
use crate::openai::{ChatChunk, ChatRequest};
use crate::sse::SseEvent;
use crate::stream::Assembler;

/// Field names the parsers look at, so generated objects reach deep code paths.
const KEYS: &[&str] = &[
    "model",
    "messages",
    "role",
    "content",
    "type",
    "text",
    "tool_calls",
    "tool_call_id",
    "function",
    "name",
    "arguments",
    "id",
    "index",
    "message",
    "delta",
    "choices",
    "done",
    "thinking",
    "reasoning_content",
    "usage",
    "prompt_tokens",
    "completion_tokens",
    "prompt_eval_count",
    "eval_count",
    "error",
    "finish_reason",
    "stop_reason",
    "stream",
    "stream_options",
    "include_usage",
    "tools",
    "tool_choice",
    "image_url",
    "url",
    "images",
    "content_block",
    "reasoning_details",
    "signature",
    "signature_delta",
    "thinking_delta",
    "redacted_thinking",
    "cache_control",
    "partial_json",
    "input_json_delta",
    "text_delta",
    "item",
    "item_id",
    "output_index",
    "response",
    "output",
    "status",
    "max_tokens",
    "temperature",
    "stop",
    "response_format",
    "reasoning_effort",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::String),
        prop::sample::select(KEYS).prop_map(|k| Value::String(k.to_owned())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        4 => prop::sample::select(KEYS).prop_map(str::to_owned),
                        1 => ".{0,6}",
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// A request-shaped object: a model and messages of varying shape, plus noise.
fn request_value() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(json_value(), 0..4),
        json_value(),
        prop::sample::select(&["user", "assistant", "system", "tool", "developer", "x"][..]),
    )
        .prop_map(|(contents, extra, role)| {
            let messages: Vec<Value> = contents
                .into_iter()
                .map(|content| serde_json::json!({"role": role, "content": content}))
                .collect();
            let mut body = serde_json::json!({"model": "m", "messages": messages});
            if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
                for (k, v) in extra {
                    body.entry(k).or_insert(v);
                }
            }
            body
        })
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn requests_never_panic_the_parser_or_the_converters(body in request_value()) {
        if let Ok(request) = serde_json::from_value::<ChatRequest>(body)
            && request.validate().is_ok() {
                let _ = ollama::to_ollama_request("ollama", &request);
                let _ = anthropic::to_messages_request("opencode", &request);
                let _ = responses::to_responses_request("opencode", &request);
                let _ = serde_json::to_vec(&request).unwrap();
            }
    }

    #[test]
    fn raw_bytes_never_panic_the_request_parser(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(request) = serde_json::from_slice::<ChatRequest>(&bytes) {
            let _ = request.validate();
        }
    }

    #[test]
    fn ndjson_lines_are_the_same_however_the_bytes_are_cut(
        lines in prop::collection::vec("[^\n]{0,40}", 0..8),
        cuts in prop::collection::vec(0usize..400, 0..6),
        crlf in any::<bool>(),
    ) {
        let newline = if crlf { "\r\n" } else { "\n" };
        let text: String = lines.iter().map(|l| format!("{l}{newline}")).collect();
        let bytes = text.as_bytes();
        let mut points: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut pieces = Vec::new();
        let mut last = 0;
        for p in points.into_iter().chain([bytes.len()]) {
            pieces.push(Ok(Bytes::copy_from_slice(&bytes[last..p])));
            last = p;
        }
        let got: Vec<String> = block_on(
            ndjson_lines("t".into(), futures::stream::iter(pieces)).collect::<Vec<_>>(),
        )
        .into_iter()
        .map(|l| String::from_utf8(l.unwrap().to_vec()).unwrap())
        .collect();
        // Each line loses one trailing '\r' (read as CRLF); blank lines are skipped.
        let want: Vec<String> = lines
            .into_iter()
            .map(|l| if crlf { l } else { l.strip_suffix('\r').map_or_else(|| l.clone(), str::to_owned) })
            .filter(|l| !l.bytes().all(|b| b.is_ascii_whitespace()))
            .collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn arbitrary_bytes_never_panic_ndjson_or_the_ollama_converter(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..8),
    ) {
        let stream = futures::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c))));
        let lines = block_on(ndjson_lines("ollama".into(), stream).collect::<Vec<_>>());
        let mut next_tool = 0;
        for line in lines.into_iter().flatten() {
            let _ = ollama::convert_line("ollama", &line, &mut next_tool);
        }
    }

    #[test]
    fn ollama_lines_of_any_json_never_panic(values in prop::collection::vec(json_value(), 1..6)) {
        let mut next_tool = 0;
        for v in values {
            let line = serde_json::to_vec(&v).unwrap();
            let _ = ollama::convert_line("ollama", &line, &mut next_tool);
        }
    }

    #[test]
    fn event_converters_never_panic(
        events in prop::collection::vec(
            (
                prop::sample::select(&[
                    "message_start", "content_block_start", "content_block_delta",
                    "content_block_stop", "message_delta", "message_stop", "ping", "error",
                    "response.created", "response.output_text.delta",
                    "response.output_item.added", "response.function_call_arguments.delta",
                    "response.reasoning_summary_text.delta", "response.completed",
                    "response.failed", "response.incomplete", "",
                ][..]),
                json_value(),
                any::<bool>(),
            ),
            1..8,
        ),
    ) {
        let mut messages = anthropic::StreamState::default();
        let mut responses_state = responses::StreamState::default();
        for (name, mut data, typed) in events {
            if typed
                && let Value::Object(map) = &mut data {
                    map.insert("type".into(), Value::String(name.to_owned()));
                }
            let event = SseEvent { event: name.to_owned(), data: data.to_string() };
            if !messages.done() {
                let _ = messages.convert("opencode", &event);
            }
            if !responses_state.done() {
                let _ = responses_state.convert("opencode", &event);
            }
        }
    }

    #[test]
    fn chunks_of_any_shape_assemble_without_panicking(values in prop::collection::vec(json_value(), 1..6)) {
        let mut assembler = Assembler::default();
        for v in values {
            if let Ok(chunk) = serde_json::from_value::<ChatChunk>(v) {
                assembler.push(&chunk);
            }
        }
        let _ = assembler.finish(&crate::stream::ResponseMeta {
            id: "x".into(),
            created: 0,
            model: "m".into(),
        });
    }
}
