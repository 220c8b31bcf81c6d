//! End to end: the real proxy app in front of the fake upstream, one case per
//! route of the design table, through every protocol the five providers speak.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::{Harness, Keys, TEST_KEY, sse_data, start, start_with, user, weather_tool};
use futures::StreamExt;
use serde_json::{Value, json};

/// (model as the client writes it, flavour name the fake answers with, upstream path suffix)
const CASES: &[(&str, &str, &str)] = &[
    ("ollama/qwen3:8b", "ollama", "/ollama/api/chat"),
    ("qwen3:8b", "ollama", "/ollama/api/chat"),
    (
        "ollama_cloud/gpt-oss:120b",
        "ollama_cloud",
        "/ollama_cloud/api/chat",
    ),
    (
        "gpt-oss:120b-cloud",
        "ollama_cloud",
        "/ollama_cloud/api/chat",
    ),
    (
        "openrouter/openai/gpt-4o-mini",
        "openrouter",
        "/openrouter/api/v1/chat/completions",
    ),
    ("kimi/kimi-k2.6", "kimi", "/kimi/v1/chat/completions"),
    ("opencode/big-pickle", "zen", "/zen/v1/chat/completions"),
    ("opencode/claude-sonnet-4-5", "zen", "/zen/v1/messages"),
    ("opencode/gpt-5.4", "zen", "/zen/v1/responses"),
    ("plain/gpt-4o", "openai", "/openai/v1/chat/completions"),
];

fn expected_text(flavour: &str) -> String {
    format!("Hello from {flavour}! You said: hi there")
}

/// Parses the data events of a successful stream: chunks, then exactly one `[DONE]` last.
fn chunks_of(model: &str, events: &[String]) -> Vec<Value> {
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{model}: stream must end with [DONE]: {events:?}"
    );
    assert_eq!(
        events.iter().filter(|e| *e == "[DONE]").count(),
        1,
        "{model}: exactly one [DONE]"
    );
    events[..events.len() - 1]
        .iter()
        .map(|e| {
            serde_json::from_str(e).unwrap_or_else(|err| panic!("{model}: bad chunk {e}: {err}"))
        })
        .collect()
}

fn joined_content(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| {
            c["choices"]
                .get(0)?
                .get("delta")?
                .get("content")?
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test]
async fn non_stream_chat_through_every_provider() {
    let h = start().await;
    for (model, flavour, path) in CASES {
        let (status, body) = h
            .chat(&json!({"model": model, "messages": user("hi there")}))
            .await;
        assert_eq!(status, 200, "{model}: {body}");
        assert_eq!(body["object"], "chat.completion", "{model}");
        assert_eq!(
            body["model"], *model,
            "{model}: the client's model id comes back"
        );
        assert!(
            body["id"].as_str().unwrap().starts_with("chatcmpl-"),
            "{model}"
        );
        assert_eq!(
            body["choices"][0]["message"]["role"], "assistant",
            "{model}"
        );
        assert_eq!(
            body["choices"][0]["message"]["content"],
            expected_text(flavour),
            "{model}"
        );
        assert_eq!(body["choices"][0]["finish_reason"], "stop", "{model}");
        assert_eq!(body["usage"]["prompt_tokens"], 11, "{model}: {body}");
        assert_eq!(body["usage"]["completion_tokens"], 7, "{model}: {body}");
        assert_eq!(body["usage"]["total_tokens"], 18, "{model}: {body}");
        if *flavour == "kimi" {
            assert_eq!(
                body["usage"]["prompt_tokens_details"]["cached_tokens"], 4,
                "{model}: Kimi's top-level cached_tokens kept in OpenAI's place: {body}"
            );
        }
        let sent = h.last_request(path);
        assert!(sent.path.ends_with(path), "{model}: went to {}", sent.path);
    }
}

#[tokio::test]
async fn streams_keep_ids_role_usage_last_and_one_done() {
    let h = start().await;
    for (model, flavour, _) in CASES {
        let (status, events) = h
            .stream(
                &json!({"model": model, "messages": user("hi there"), "stream": true,
                "stream_options": {"include_usage": true}}),
            )
            .await;
        assert_eq!(status, 200, "{model}: {events:?}");
        let chunks = chunks_of(model, &events);
        let id = chunks[0]["id"].as_str().unwrap().to_owned();
        for c in &chunks {
            assert_eq!(c["id"], id.as_str(), "{model}: same id on every chunk");
            assert_eq!(c["object"], "chat.completion.chunk", "{model}");
            assert_eq!(c["model"], *model, "{model}");
        }
        assert_eq!(
            chunks[0]["choices"][0]["delta"]["role"], "assistant",
            "{model}: role on the first chunk"
        );
        assert_eq!(joined_content(&chunks), expected_text(flavour), "{model}");
        // Usage: one `choices:[]` chunk, last; the finish chunk just before it.
        let usage = chunks.last().unwrap();
        assert_eq!(usage["choices"], json!([]), "{model}: {usage}");
        assert_eq!(usage["usage"]["total_tokens"], 18, "{model}: {usage}");
        if *flavour == "kimi" {
            assert_eq!(
                usage["usage"]["prompt_tokens_details"]["cached_tokens"], 4,
                "{model}: {usage}"
            );
        }
        let finish = &chunks[chunks.len() - 2];
        assert_eq!(
            finish["choices"][0]["finish_reason"], "stop",
            "{model}: {finish}"
        );
        let with_usage = chunks
            .iter()
            .filter(|c| c.get("usage").is_some_and(|u| !u.is_null()))
            .count();
        assert_eq!(with_usage, 1, "{model}: usage only in the last chunk");
        // Content came as several events, not one coalesced chunk.
        let content_chunks = chunks
            .iter()
            .filter(|c| {
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .is_some_and(|s| !s.is_empty())
            })
            .count();
        assert_eq!(content_chunks, 7, "{model}: one chunk per upstream event");
    }
}

#[tokio::test]
async fn usage_chunk_only_when_asked() {
    let h = start().await;
    for (model, _, _) in CASES {
        let (status, events) = h
            .stream(&json!({"model": model, "messages": user("hi there"), "stream": true}))
            .await;
        assert_eq!(status, 200, "{model}");
        let chunks = chunks_of(model, &events);
        assert!(
            chunks
                .iter()
                .all(|c| c["choices"] != json!([]) && c.get("usage").is_none_or(Value::is_null)),
            "{model}: no usage chunk unless include_usage: {chunks:?}"
        );
    }
}

#[tokio::test]
async fn streamed_tool_calls_through_every_provider() {
    let h = start().await;
    for (model, _, _) in CASES {
        let (status, events) = h
            .stream(&json!({"model": model, "messages": user("weather? #tool"), "tools": weather_tool(), "stream": true}))
            .await;
        assert_eq!(status, 200, "{model}: {events:?}");
        let chunks = chunks_of(model, &events);
        let mut calls: BTreeMap<u64, (String, String, String)> = BTreeMap::new();
        for c in &chunks {
            for call in c["choices"][0]["delta"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let slot = calls.entry(call["index"].as_u64().unwrap()).or_default();
                if let Some(id) = call["id"].as_str() {
                    slot.0 = id.to_owned();
                }
                if let Some(name) = call["function"]["name"].as_str() {
                    slot.1.push_str(name);
                }
                if let Some(args) = call["function"]["arguments"].as_str() {
                    slot.2.push_str(args);
                }
            }
        }
        assert_eq!(calls.len(), 1, "{model}: {chunks:?}");
        let (id, name, args) = &calls[&0];
        assert!(!id.is_empty(), "{model}: tool call id");
        assert_eq!(name, "get_weather", "{model}");
        assert_eq!(
            serde_json::from_str::<Value>(args).unwrap(),
            json!({"city": "Oslo"}),
            "{model}"
        );
        let finish = chunks
            .iter()
            .find_map(|c| c["choices"][0]["finish_reason"].as_str());
        assert_eq!(
            finish,
            Some("tool_calls"),
            "{model}: tool_calls finish even when upstream says stop"
        );
    }
}

#[tokio::test]
async fn non_stream_tool_calls_are_assembled() {
    let h = start().await;
    for (model, _, _) in CASES {
        let (status, body) = h
            .chat(&json!({"model": model, "messages": user("weather? #tool"), "tools": weather_tool()}))
            .await;
        assert_eq!(status, 200, "{model}: {body}");
        let message = &body["choices"][0]["message"];
        assert!(
            message["content"].is_null(),
            "{model}: content null with only tool calls: {message}"
        );
        assert_eq!(message["tool_calls"][0]["type"], "function", "{model}");
        assert_eq!(
            message["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Oslo\"}",
            "{model}"
        );
        assert_eq!(body["choices"][0]["finish_reason"], "tool_calls", "{model}");
    }
}

/// OpenAI `custom` tools (free-text input) go to every upstream whose
/// protocol has them, named, streamed and whole, and back in the history; the
/// protocols without them refuse them by name.
#[tokio::test]
async fn custom_tools_reach_the_protocols_that_have_them_and_are_refused_by_the_others() {
    let h = start().await;
    let tools = json!([
        {"type": "custom", "custom": {"name": "apply_patch", "description": "Edits files"}},
        weather_tool()[0],
    ]);
    let choice = json!({"type": "custom", "custom": {"name": "apply_patch"}});
    let expected_call = |id: &Value| json!({"id": id, "type": "custom", "custom": {"name": "apply_patch", "input": "city = Oslo\n"}});
    for (model, _, path) in CASES {
        let body = json!({"model": model, "messages": user("patch #tool"), "tools": tools, "tool_choice": choice});
        let (status, answer) = h.chat(&body).await;
        if path.contains("/api/chat") || path.ends_with("/messages") {
            assert_eq!(status, 400, "{model}: {answer}");
            let message = answer["error"]["message"].as_str().unwrap();
            assert!(
                message.contains("`apply_patch` is a custom tool"),
                "{model}: {message}"
            );
            continue;
        }
        assert_eq!(status, 200, "{model}: {answer}");
        let call = &answer["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(*call, expected_call(&call["id"]), "{model}");
        assert_eq!(
            answer["choices"][0]["finish_reason"], "tool_calls",
            "{model}"
        );
        let sent = h.last_request(path).body;
        if path.ends_with("/responses") {
            assert_eq!(
                sent["tools"][0],
                json!({"type": "custom", "name": "apply_patch", "description": "Edits files"})
            );
            assert_eq!(
                sent["tool_choice"],
                json!({"type": "custom", "name": "apply_patch"})
            );
        } else {
            assert_eq!(sent["tools"], tools, "{model}: as sent");
            assert_eq!(sent["tool_choice"], choice, "{model}: as sent");
        }

        let (status, events) = h
            .stream(&json!({"model": model, "messages": user("patch #tool"),
            "tools": tools, "stream": true}))
            .await;
        assert_eq!(status, 200, "{model}: {events:?}");
        let (mut id, mut name, mut input) = (Value::Null, String::new(), String::new());
        for chunk in chunks_of(model, &events) {
            for piece in chunk["choices"][0]["delta"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
            {
                assert_eq!(piece["index"], 0, "{model}");
                assert!(piece.get("function").is_none(), "{model}: {piece}");
                if piece.get("id").is_some() {
                    id = piece["id"].clone();
                    assert_eq!(piece["type"], "custom", "{model}");
                }
                name.push_str(piece["custom"]["name"].as_str().unwrap_or_default());
                input.push_str(piece["custom"]["input"].as_str().unwrap_or_default());
            }
        }
        assert_eq!(
            expected_call(&id),
            json!({"id": id, "type": "custom",
            "custom": {"name": name, "input": input}}),
            "{model}"
        );

        // The call and its result go back as what the upstream calls them.
        let history = json!([
            {"role": "user", "content": "patch #tool"},
            {"role": "assistant", "content": null, "tool_calls": [expected_call(&json!("call_1"))]},
            {"role": "tool", "tool_call_id": "call_1", "content": "applied"},
        ]);
        let (status, answer) = h
            .chat(&json!({"model": model, "messages": history, "tools": tools}))
            .await;
        assert_eq!(status, 200, "{model}: {answer}");
        assert!(
            answer["choices"][0]["message"]["content"].is_string(),
            "{model}: {answer}"
        );
        let sent = h.last_request(path).body;
        if path.ends_with("/responses") {
            assert_eq!(
                sent["input"][1],
                json!({"type": "custom_tool_call", "call_id": "call_1",
                "name": "apply_patch", "input": "city = Oslo\n"})
            );
            assert_eq!(
                sent["input"][2],
                json!({"type": "custom_tool_call_output", "call_id": "call_1",
                "output": "applied"})
            );
        } else {
            assert_eq!(
                sent["messages"][1]["tool_calls"][0],
                expected_call(&json!("call_1")),
                "{model}"
            );
        }
    }
}

/// A PDF sent as a `file` part reaches Claude as a document and Responses
/// models as an input file; OpenAI-compatible upstreams get it as it came,
/// and Ollama, which reads no files, refuses it.
#[tokio::test]
async fn pdf_file_parts_reach_each_protocol_in_its_shape() {
    let h = start().await;
    let pdf = "data:application/pdf;base64,JVBERi0xLjQK";
    let part = json!({"type": "file", "file": {"file_data": pdf, "filename": "report.pdf"}});
    let messages =
        json!([{"role": "user", "content": [{"type": "text", "text": "summarise"}, part]}]);
    for (model, _, path) in CASES {
        let (status, answer) = h.chat(&json!({"model": model, "messages": messages})).await;
        if path.contains("/api/chat") {
            assert_eq!(status, 400, "{model}: {answer}");
            assert!(
                answer["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("\"file\""),
                "{model}: {answer}"
            );
            continue;
        }
        assert_eq!(status, 200, "{model}: {answer}");
        let sent = h.last_request(path).body;
        let expected = if path.ends_with("/messages") {
            (
                sent["messages"][0]["content"][1].clone(),
                json!({"type": "document", "title": "report.pdf",
                "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"}}),
            )
        } else if path.ends_with("/responses") {
            (
                sent["input"][0]["content"][1].clone(),
                json!({"type": "input_file", "file_data": pdf, "filename": "report.pdf"}),
            )
        } else {
            (sent["messages"][0]["content"][1].clone(), part.clone())
        };
        assert_eq!(expected.0, expected.1, "{model}");
    }
}

/// `allowed_tools` keeps the whole list upstream where the protocol has it
/// and narrows the list where it does not.
#[tokio::test]
async fn allowed_tools_pass_or_narrow_the_tool_list() {
    let h = start().await;
    let tools = json!([
        weather_tool()[0],
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
    ]);
    let choice = json!({"type": "allowed_tools", "allowed_tools": {"mode": "required",
        "tools": [{"type": "function", "function": {"name": "get_time"}}]}});
    for (model, _, path) in CASES {
        let (status, answer) = h
            .chat(&json!({"model": model, "messages": user("time? #tool"), "tools": tools, "tool_choice": choice}))
            .await;
        assert_eq!(status, 200, "{model}: {answer}");
        let sent = h.last_request(path).body;
        let names: Vec<&str> = sent["tools"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| {
                t.pointer("/function/name")
                    .or_else(|| t.get("name"))
                    .and_then(Value::as_str)
            })
            .collect();
        if path.ends_with("/responses") {
            assert_eq!(names, ["get_weather", "get_time"], "{model}");
            assert_eq!(
                sent["tool_choice"],
                json!({"type": "allowed_tools", "mode": "required",
                "tools": [{"type": "function", "name": "get_time"}]})
            );
        } else if path.contains("/api/chat") || path.ends_with("/messages") {
            assert_eq!(names, ["get_time"], "{model}: only the allowed tool");
            if path.ends_with("/messages") {
                assert_eq!(
                    sent["tool_choice"],
                    json!({"type": "tool", "name": "get_time"})
                );
            }
        } else {
            assert_eq!(sent["tools"], tools, "{model}");
            assert_eq!(sent["tool_choice"], choice, "{model}");
        }
    }
    let (status, answer) = h
        .chat(&json!({"model": "plain/gpt-4o", "messages": user("x"), "tools": tools,
            "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "any", "tools": []}}}))
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("mode must be"),
        "{answer}"
    );
}

#[tokio::test]
async fn ollama_without_call_ids_gets_generated_ones() {
    let h = start().await;
    let (status, body) = h
        .chat(&json!({"model": "qwen3:8b", "messages": user("weather? #tool #noid"), "tools": weather_tool()}))
        .await;
    assert_eq!(status, 200, "{body}");
    let id = body["choices"][0]["message"]["tool_calls"][0]["id"]
        .as_str()
        .unwrap();
    assert!(id.starts_with("call_") && id.len() > 10, "{id}");
}

#[tokio::test]
async fn upstream_429_keeps_retry_after_in_openai_shape() {
    let h = start().await;
    for (model, _, _) in CASES {
        let response = h
            .post(
                "/v1/chat/completions",
                &json!({"model": model, "messages": user("x #fault=429")}),
            )
            .await;
        assert_eq!(response.status().as_u16(), 429, "{model}");
        assert_eq!(response.headers()["retry-after"], "7", "{model}");
        assert_eq!(response.headers()["x-should-retry"], "true", "{model}");
        let body: Value = response.json().await.unwrap();
        let error = body["error"].as_object().unwrap();
        assert_eq!(error.len(), 4, "{model}: {body}");
        assert_eq!(error["type"], "rate_limit_error", "{model}");
    }
}

#[tokio::test]
async fn upstream_failures_map_to_statuses() {
    let h = start().await;
    for (model, _, _) in CASES {
        for (fault, status) in [
            ("500", 502),
            ("400", 400),
            ("404", 404),
            ("503", 503),
            ("401", 502),
        ] {
            let (got, body) = h
                .chat(&json!({"model": model, "messages": user(&format!("x #fault={fault}"))}))
                .await;
            assert_eq!(got, status, "{model} fault {fault}: {body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "{model}: {body}"
            );
            let text = body.to_string();
            assert!(
                !text.contains(TEST_KEY),
                "{model}: the key leaked into an error: {text}"
            );
        }
    }
    // Anthropic's 529 overloaded becomes 503.
    let (got, _) = h
        .chat(&json!({"model": "opencode/claude-sonnet-4-5", "messages": user("x #fault=529")}))
        .await;
    assert_eq!(got, 503);
}

#[tokio::test]
async fn mid_stream_errors_become_error_events_without_done() {
    let h = start().await;
    for (model, _, _) in CASES {
        for fault in ["midstream", "drop", "garbage"] {
            let (status, events) = h
                .stream(&json!({"model": model, "messages": user(&format!("x #fault={fault}")), "stream": true}))
                .await;
            assert_eq!(status, 200, "{model} {fault}: the first events were fine");
            assert!(
                !events.iter().any(|e| e == "[DONE]"),
                "{model} {fault}: no [DONE] after an error: {events:?}"
            );
            let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
            assert!(
                last["error"]["message"].is_string(),
                "{model} {fault}: last event is an error: {last}"
            );
            assert_eq!(
                last["error"].as_object().unwrap().len(),
                4,
                "{model} {fault}"
            );
            let content: String = events[..events.len() - 1]
                .iter()
                .map(|e| serde_json::from_str::<Value>(e).unwrap())
                .filter_map(|c| {
                    c["choices"][0]["delta"]["content"]
                        .as_str()
                        .map(str::to_owned)
                })
                .collect();
            assert!(
                !content.is_empty(),
                "{model} {fault}: content before the failure was forwarded"
            );
        }
        // The same failure on a non-stream request is an HTTP error: Anthropic's
        // `overloaded_error` event is retryable (503), the others are 502.
        let (status, body) = h
            .chat(&json!({"model": model, "messages": user("x #fault=midstream")}))
            .await;
        let expected = if model.contains("claude") { 503 } else { 502 };
        assert_eq!(status, expected, "{model}: {body}");
    }
}

#[tokio::test]
async fn an_upstream_error_before_any_content_is_an_http_error() {
    let h = start().await;
    // Claude's and Responses' streams open with events that carry nothing
    // (message_start, response.created): an error right after them is still
    // the upstream's first word, so a streamed chat gets an HTTP error.
    for (model, overloaded) in [
        ("opencode/claude-sonnet-4-5", true),
        ("opencode/gpt-5.4", false),
        ("ollama/qwen3:8b", false),
    ] {
        let response = h
            .post(
                "/v1/chat/completions",
                &json!({"model": model, "messages": user("x #fault=early"), "stream": true}),
            )
            .await;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            status,
            if overloaded { 503 } else { 502 },
            "{model}: {body}"
        );
        assert!(body["error"]["message"].is_string(), "{model}: {body}");
    }
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream_request() {
    let h = start().await;
    for (i, model) in [
        "qwen3:8b",
        "openrouter/openai/gpt-4o-mini",
        "opencode/claude-sonnet-4-5",
        "opencode/gpt-5.4",
    ]
    .into_iter()
    .enumerate()
    {
        let response = h
            .post(
                "/v1/chat/completions",
                &json!({"model": model, "messages": user("x #chunks=10000 #slow_chunks=5"), "stream": true}),
            )
            .await;
        assert_eq!(response.status().as_u16(), 200);
        let mut body = response.bytes_stream();
        let mut seen = String::new();
        while !seen.contains("tok0") {
            let bytes = body.next().await.unwrap().unwrap();
            seen.push_str(&String::from_utf8_lossy(&bytes));
        }
        drop(body);
        let cancelled = h
            .fake
            .wait_cancelled(i as u64 + 1, Duration::from_secs(10))
            .await;
        assert_eq!(
            cancelled,
            i as u64 + 1,
            "{model}: upstream stream was not cancelled"
        );
    }
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_across_chats() {
    let h = start().await;
    for (model, _, _) in CASES {
        let before = h.fake.state().connections();
        for round in 0..4 {
            let body = json!({"model": model, "messages": user("hi there")});
            let (status, answer) = h.chat(&body).await;
            assert_eq!(status, 200, "{model}: {answer}");
            let mut streamed = body.clone();
            streamed["stream"] = json!(true);
            let (status, events) = h.stream(&streamed).await;
            assert_eq!(status, 200, "{model} round {round}");
            assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        }
        // Eight chats; without keep-alive each would open its own connection.
        // A stream's connection goes back to the pool as its body ends, which
        // may race the next request once; the first chat of a provider connects.
        let opened = h.fake.state().connections() - before;
        assert!(
            opened <= 2,
            "{model}: 8 chats opened {opened} upstream connections"
        );
    }
}

#[tokio::test]
async fn unset_sampling_fields_are_never_sent_and_extras_pass_through() {
    let h = start().await;
    for (model, _, path) in CASES {
        let (status, _) = h
            .chat(&json!({"model": model, "messages": user("hi there")}))
            .await;
        assert_eq!(status, 200);
        let sent = h.last_request(path).body;
        for field in [
            "temperature",
            "top_p",
            "frequency_penalty",
            "presence_penalty",
            "seed",
        ] {
            assert!(sent.get(field).is_none(), "{model}: {field} sent: {sent}");
            assert!(
                sent.pointer(&format!("/options/{field}")).is_none(),
                "{model}: options.{field} sent: {sent}"
            );
        }
    }
    // Set fields arrive with their exact values; unknown keys reach OpenAI-compatible upstreams.
    let (status, _) = h
        .chat(
            &json!({"model": "kimi/kimi-k2-turbo-preview", "messages": user("hi"), "temperature": 0.7,
            "thinking": {"type": "disabled"}, "lakehouse": {"k": 3}}),
        )
        .await;
    assert_eq!(status, 200);
    let sent = h.last_request("/kimi/v1/chat/completions");
    assert_eq!(sent.body["temperature"], 0.7);
    assert_eq!(sent.body["thinking"], json!({"type": "disabled"}));
    assert!(
        sent.body.get("lakehouse").is_none(),
        "the proxy's own options never go upstream"
    );
    assert_eq!(
        sent.body["model"], "kimi-k2-turbo-preview",
        "prefix stripped"
    );
    assert_eq!(sent.headers["authorization"], format!("Bearer {TEST_KEY}"));
    // kimi-k2.6 fixes its sampling and refuses a temperature other than 1
    // (reference §6): what it fixes is left out, the rest is sent.
    let (status, _) = h
        .chat(
            &json!({"model": "kimi/kimi-k2.6", "messages": user("hi"), "temperature": 0.2,
            "top_p": 0.9, "presence_penalty": 0.1, "seed": 3}),
        )
        .await;
    assert_eq!(status, 200);
    let sent = h.last_request("/kimi/v1/chat/completions").body;
    for field in ["temperature", "top_p", "presence_penalty"] {
        assert!(
            sent.get(field).is_none(),
            "{field} sent to kimi-k2.6: {sent}"
        );
    }
    assert_eq!(sent["seed"], 3);
    // Several choices cannot be had from it: refused, not answered with one.
    let (status, refused) = h
        .chat(&json!({"model": "kimi/kimi-k2.6", "messages": user("hi"), "n": 2}))
        .await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("answers one choice"),
        "{refused}"
    );
    // OpenRouter gets the configured attribution header.
    let (status, _) = h
        .chat(&json!({"model": "openrouter/openai/gpt-4o-mini", "messages": user("hi")}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        h.last_request("/openrouter/api/v1/chat/completions")
            .headers["x-title"],
        "Lakehouse tests"
    );
}

#[tokio::test]
async fn ollama_log_probabilities_come_back_in_openais_shape() {
    let h = start().await;
    let ask = json!({"model": "ollama/qwen3:8b", "messages": user("hi"), "logprobs": true, "top_logprobs": 1});
    let (status, body) = h.chat(&ask).await;
    assert_eq!(status, 200, "{body}");
    let sent = h.last_request("/ollama/api/chat").body;
    assert_eq!(
        (sent["logprobs"].clone(), sent["top_logprobs"].clone()),
        (json!(true), json!(1))
    );
    let tokens = |entries: &Value| -> String {
        entries
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["token"].as_str().unwrap_or_default())
            .collect()
    };
    let content = &body["choices"][0]["logprobs"]["content"];
    assert_eq!(
        tokens(content),
        body["choices"][0]["message"]["content"].as_str().unwrap(),
        "{body}"
    );
    assert_eq!(content[0]["top_logprobs"][0]["logprob"], -0.25, "{body}");

    let mut stream = ask.clone();
    stream["stream"] = json!(true);
    let (status, events) = h.stream(&stream).await;
    assert_eq!(status, 200, "{events:?}");
    let chunks = chunks_of("ollama", &events);
    let streamed: String = chunks
        .iter()
        .map(|c| tokens(&c["choices"][0]["logprobs"]["content"]))
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(!text.is_empty());
    assert_eq!(streamed, text);
}

#[tokio::test]
async fn ollama_request_is_native_with_think_false_and_options() {
    let h = start().await;
    let (status, _) = h
        .chat(&json!({"model": "ollama/qwen3:8b", "messages": user("hi"), "max_tokens": 32, "stop": "END"}))
        .await;
    assert_eq!(status, 200);
    let sent = h.last_request("/ollama/api/chat").body;
    assert_eq!(sent["model"], "qwen3:8b");
    assert_eq!(
        sent["stream"], false,
        "a non-stream chat asks Ollama for one object"
    );
    assert_eq!(sent["think"], false);
    assert_eq!(sent["options"], json!({"num_predict": 32, "stop": ["END"]}));
    // Cloud: bare model name and a Bearer key.
    let (status, _) = h
        .chat(&json!({"model": "kimi-k2.6:cloud", "messages": user("hi")}))
        .await;
    assert_eq!(status, 200);
    let sent = h.last_request("/ollama_cloud/api/chat");
    assert_eq!(sent.body["model"], "kimi-k2.6");
    assert_eq!(sent.headers["authorization"], format!("Bearer {TEST_KEY}"));
}

#[tokio::test]
async fn zen_claude_uses_x_api_key_and_messages_format() {
    let h = start().await;
    let (status, _) = h
        .chat(&json!({"model": "opencode/claude-sonnet-4-5", "messages": [
            {"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(status, 200);
    let sent = h.last_request("/zen/v1/messages");
    assert_eq!(sent.headers["x-api-key"], TEST_KEY);
    assert!(!sent.headers.contains_key("authorization"));
    assert_eq!(sent.body["system"], "Be terse.");
    assert!(sent.body["max_tokens"].as_u64().is_some());
}

#[tokio::test]
async fn zen_carries_response_format_into_each_protocol() {
    let h = start().await;
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}});
    let format = json!({"type": "json_schema",
                        "json_schema": {"name": "place", "schema": schema, "strict": true}});
    // Responses: `text.format`, the schema's fields beside `type`.
    let (status, body) = h
        .chat(
            &json!({"model": "opencode/gpt-5.4", "messages": user("where?"),
                      "response_format": format}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let sent = h.last_request("/zen/v1/responses").body;
    assert_eq!(
        sent["text"]["format"],
        json!({"type": "json_schema", "name": "place", "schema": schema, "strict": true})
    );
    // Messages: one forced tool, whose input comes back as the answer, whole
    // and streamed.
    let request = json!({"model": "opencode/claude-sonnet-4-5", "messages": user("where? #tool"),
                         "response_format": format});
    let (status, body) = h.chat(&request).await;
    assert_eq!(status, 200, "{body}");
    let sent = h.last_request("/zen/v1/messages").body;
    assert_eq!(
        sent["tool_choice"],
        json!({"type": "tool", "name": "place"})
    );
    assert_eq!(sent["tools"][0]["input_schema"], schema);
    let message = &body["choices"][0]["message"];
    assert_eq!(message["content"], r#"{"city":"Oslo"}"#, "{body}");
    assert!(
        message.get("tool_calls").is_none_or(Value::is_null),
        "{body}"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    let (status, events) = h.stream(&streamed).await;
    assert_eq!(status, 200, "{events:?}");
    let chunks = chunks_of("claude", &events);
    assert_eq!(joined_content(&chunks), r#"{"city":"Oslo"}"#);
    // What a protocol cannot carry is a 400, not prose where JSON was asked.
    let (status, body) = h
        .chat(
            &json!({"model": "opencode/claude-sonnet-4-5", "messages": user("where?"),
                      "response_format": {"type": "json_object"}, "tools": weather_tool()}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("response_format"),
        "{body}"
    );
}

/// The `reasoning_details` pieces of a streamed `#think #tool` chat, in order.
async fn streamed_reasoning_pieces(h: &Harness, model: &str) -> Vec<Value> {
    let (status, events) = h
        .stream(&json!({"model": model, "messages": user("hi #think #tool"), "stream": true}))
        .await;
    assert_eq!(status, 200, "{model}: {events:?}");
    chunks_of(model, &events)
        .iter()
        .filter_map(|chunk| {
            chunk["choices"][0]["delta"]
                .get("reasoning_details")
                .cloned()
        })
        .flat_map(|items| items.as_array().cloned().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn reasoning_comes_out_as_reasoning_content_and_goes_back_to_kimi() {
    let h = start().await;
    for model in [
        "qwen3:8b",
        "openrouter/openai/gpt-4o-mini",
        "kimi/kimi-k2.6",
        "opencode/claude-sonnet-4-5",
        "opencode/gpt-5.4",
    ] {
        let (status, body) = h
            .chat(&json!({"model": model, "messages": user("hi #think")}))
            .await;
        assert_eq!(status, 200, "{model}: {body}");
        assert_eq!(
            body["choices"][0]["message"]["reasoning_content"], "Let me think.",
            "{model}: {body}"
        );
    }
    let history = json!([
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "reasoning_content": "I should call the tool.",
         "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "12C"}
    ]);
    let (status, _) = h
        .chat(&json!({"model": "kimi/kimi-k2.6", "messages": history, "tools": weather_tool()}))
        .await;
    assert_eq!(status, 200);
    let sent = h.last_request("/kimi/v1/chat/completions").body;
    assert_eq!(
        sent["messages"][1]["reasoning_content"],
        "I should call the tool."
    );

    // Claude's signed thinking comes out as a reasoning item, streamed or
    // not, and goes back as the thinking block Claude requires in a tool loop.
    let (status, body) = h
        .chat(&json!({"model": "opencode/claude-sonnet-4-5", "messages": user("hi #think #tool")}))
        .await;
    assert_eq!(status, 200, "{body}");
    let message = &body["choices"][0]["message"];
    assert_eq!(
        message["reasoning_details"],
        json!([{"type": "reasoning.text", "text": "Let me think.", "signature": "fake-signature",
                "format": "anthropic-claude-v1", "index": 0}]),
        "{body}"
    );
    // Streamed as OpenRouter streams it: pieces of one item (text, then signature).
    let pieces = streamed_reasoning_pieces(&h, "opencode/claude-sonnet-4-5").await;
    assert_eq!(
        pieces,
        vec![
            json!({"type": "reasoning.text", "text": "Let me think.", "format": "anthropic-claude-v1", "index": 0}),
            json!({"type": "reasoning.text", "signature": "fake-signature", "index": 0}),
        ]
    );
    // OpenRouter's own items pass through, whole and streamed.
    let (status, body) = h
        .chat(&json!({"model": "openrouter/anthropic/claude-sonnet-4.5", "messages": user("hi #think")}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["reasoning_details"], message["reasoning_details"],
        "{body}"
    );
    let pieces_via_openrouter =
        streamed_reasoning_pieces(&h, "openrouter/anthropic/claude-sonnet-4.5").await;
    assert_eq!(
        pieces_via_openrouter,
        vec![
            json!({"type": "reasoning.text", "text": "Let me think.", "format": "anthropic-claude-v1", "index": 0}),
            json!({"type": "reasoning.text", "signature": "fake-signature", "format": "anthropic-claude-v1", "index": 0}),
        ]
    );
    let mut history = user("weather? #think");
    let mut assistant = message.clone();
    assistant["content"] = Value::Null;
    history.as_array_mut().unwrap().extend([
        assistant,
        json!({"role": "tool", "tool_call_id": message["tool_calls"][0]["id"], "content": "12C"}),
    ]);
    let (status, body) = h
        .chat(&json!({"model": "opencode/claude-sonnet-4-5", "messages": history, "tools": weather_tool(),
                      "thinking": {"type": "enabled", "budget_tokens": 1024}}))
        .await;
    assert_eq!(status, 200, "{body}");
    let sent = h.last_request("/zen/v1/messages").body;
    assert_eq!(
        sent["messages"][1]["content"][0],
        json!({"type": "thinking", "thinking": "Let me think.", "signature": "fake-signature"}),
        "{sent}"
    );
    assert_eq!(
        sent["messages"][1]["content"][1]["type"], "tool_use",
        "{sent}"
    );

    // Zen's GPT models: a tool loop asks for the encrypted reasoning, which
    // comes out as a reasoning item and goes back ahead of its call.
    let (status, body) = h
        .chat(&json!({"model": "opencode/gpt-5.4", "messages": user("weather? #think #tool"), "tools": weather_tool()}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        h.last_request("/zen/v1/responses").body["include"],
        json!(["reasoning.encrypted_content"])
    );
    let message = &body["choices"][0]["message"];
    assert_eq!(
        message["reasoning_details"],
        json!([{"type": "reasoning.encrypted", "data": "fake-encrypted-reasoning", "id": "rs_1",
                "format": "openai-responses-v1", "index": 0, "provider": "opencode", "model": "gpt-5.4"}]),
        "{body}"
    );
    let mut history = user("weather?");
    history.as_array_mut().unwrap().extend([
        message.clone(),
        json!({"role": "tool", "tool_call_id": message["tool_calls"][0]["id"], "content": "12C"}),
    ]);
    let (status, body) = h
        .chat(&json!({"model": "opencode/gpt-5.4", "messages": history, "tools": weather_tool()}))
        .await;
    assert_eq!(status, 200, "{body}");
    let input = &h.last_request("/zen/v1/responses").body["input"];
    assert_eq!(
        input[1],
        json!({"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "fake-encrypted-reasoning"}),
        "{input}"
    );
    assert_eq!(input[2]["type"], "function_call", "{input}");

    // A blob the upstream cannot verify (the gateway sent this turn to another
    // organisation) fails the request once; it goes again without it.
    let details = &mut history[1]["reasoning_details"][0];
    details["data"] = json!("blob-from-another-organisation");
    let (status, body) = h
        .chat(&json!({"model": "opencode/gpt-5.4", "messages": history, "tools": weather_tool()}))
        .await;
    assert_eq!(status, 200, "{body}");
    let input = h.last_request("/zen/v1/responses").body["input"].clone();
    assert!(
        input
            .as_array()
            .unwrap()
            .iter()
            .all(|item| item["type"] != "reasoning"),
        "{input}"
    );
    assert_eq!(input[1]["type"], "function_call", "{input}");
}

#[tokio::test]
async fn missing_key_files_leave_providers_unregistered_with_a_404() {
    let h = start_with(Keys::None, "").await;
    for model in [
        "kimi/kimi-k2.6",
        "openrouter/openai/gpt-4o-mini",
        "opencode/gpt-5.4",
        "gpt-oss:120b-cloud",
    ] {
        let (status, body) = h
            .chat(&json!({"model": model, "messages": user("hi")}))
            .await;
        assert_eq!(status, 404, "{model}: {body}");
        assert_eq!(body["error"]["code"], "model_not_found");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(".env"),
            "{body}"
        );
    }
    // Local Ollama needs no key and still works.
    let (status, _) = h
        .chat(&json!({"model": "qwen3:8b", "messages": user("hi")}))
        .await;
    assert_eq!(status, 200);
    let providers = h.get_json("/v1/chat/providers").await;
    let kimi = providers["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "kimi")
        .unwrap();
    assert_eq!(kimi["registered"], false);
    assert!(kimi["reason"].as_str().unwrap().contains("kimi.env"));
    let ollama = providers["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "ollama")
        .unwrap();
    assert_eq!(ollama["registered"], true);
}

#[tokio::test]
async fn bad_requests_get_openai_errors() {
    let h = start_with(Keys::All, "[server]\nmax_body_bytes = 4096\n").await;
    let cases = [
        (b"{\"model\": \"qwen3:8b\"".to_vec(), 400),
        (b"{\"messages\": []}".to_vec(), 400),
        (b"{\"model\": \"qwen3:8b\", \"messages\": []}".to_vec(), 400),
        (b"{\"model\": \"qwen3:8b\", \"messages\": [{\"role\": \"wizard\", \"content\": \"x\"}]}".to_vec(), 400),
        (b"{\"model\": \"qwen3:8b\", \"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"temperature\": 9}".to_vec(), 400),
        (format!("{{\"model\": \"qwen3:8b\", \"messages\": [{{\"role\": \"user\", \"content\": \"{}\"}}]}}", "x".repeat(5000)).into_bytes(), 413),
        (b"{\"model\": \"tier/frontier_arch\", \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}".to_vec(), 404),
        (b"\xff\xfe".to_vec(), 400),
    ];
    for (body, status) in cases {
        let response = h
            .client
            .post(h.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status().as_u16(),
            status,
            "{}",
            String::from_utf8_lossy(&body[..body.len().min(80)])
        );
        let value: Value = response.json().await.unwrap();
        assert_eq!(value["error"].as_object().unwrap().len(), 4, "{value}");
    }
    let response = h.client.get(h.url("/v1/nothing")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 404);
    assert!(response.json::<Value>().await.unwrap()["error"].is_object());
}

#[tokio::test]
async fn an_upstream_refusal_keeps_its_code_and_param() {
    let h = start().await;
    // OpenAI names the refusal; clients branch on `code` to shorten and retry.
    let (status, body) = h
        .chat(&json!({"model": "plain/gpt-4o", "messages": user("x #fault=context")}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "context_length_exceeded", "{body}");
    assert_eq!(body["error"]["param"], "messages", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("maximum context length is 8192 tokens"),
        "{body}"
    );
    // An upstream without codes (Kimi): the message alone, no invented code.
    let (status, body) = h
        .chat(&json!({"model": "kimi/kimi-k2.6", "messages": user("x #fault=context")}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], Value::Null, "{body}");
}

#[tokio::test]
async fn slow_upstreams_time_out_with_504() {
    let h = start().await;
    let (status, body) = h
        .chat(&json!({"model": "slowpoke/gpt-4o", "messages": user("x #slow_first=3000")}))
        .await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "upstream_timeout");
    // Slow chunks within the read timeout are fine.
    let (status, events) = h
        .stream(&json!({"model": "slowpoke/gpt-4o", "messages": user("x #chunks=3 #slow_chunks=50"), "stream": true}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
}

#[tokio::test]
async fn tiers_route_to_their_models() {
    let h = start().await;
    let (status, body) = h
        .chat(&json!({"model": "tier/frontier_review", "messages": user("hi there")}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "tier/frontier_review");
    assert_eq!(
        h.last_request("/zen/v1/messages").body["model"],
        "claude-sonnet-4-5"
    );
}

#[tokio::test]
async fn chat_route_adds_provider_and_content() {
    let h = start().await;
    let response = h
        .post(
            "/v1/chat",
            &json!({"model": "kimi/kimi-k2.6", "messages": user("hi there")}),
        )
        .await;
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["provider"], "kimi");
    assert_eq!(body["content"], expected_text("kimi"));
    assert_eq!(body["object"], "chat.completion");
}

#[tokio::test]
async fn models_lists_tiers_and_every_registered_provider() {
    let h = start().await;
    let body = h.get_json("/v1/models").await;
    assert_eq!(body["object"], "list");
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    for expected in [
        "tier/local_fast",
        "ollama/qwen3:8b",
        "ollama_cloud/qwen3:8b",
        "openrouter/openai/gpt-4o-mini",
        "kimi/kimi-k2.6",
        "opencode/claude-sonnet-4-5",
        "plain/",
    ] {
        assert!(
            ids.iter().any(|id| id.starts_with(expected)),
            "{expected} missing from {ids:?}"
        );
    }
    assert!(
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["object"] == "model")
    );
}

#[tokio::test]
async fn keep_alive_comments_and_zen_cost_events_never_reach_the_client() {
    let h = start().await;
    for model in ["openrouter/openai/gpt-4o-mini", "opencode/big-pickle"] {
        let response = h
            .post(
                "/v1/chat/completions",
                &json!({"model": model, "messages": user("hi there"), "stream": true}),
            )
            .await;
        let text = response.text().await.unwrap();
        assert!(!text.contains("OPENROUTER PROCESSING"), "{model}");
        assert!(!text.contains("cost"), "{model}: {text}");
        let events = sse_data(&text);
        let chunks = chunks_of(model, &events);
        assert!(!chunks.is_empty());
    }
}

#[tokio::test]
async fn citations_and_other_answer_fields_pass_through() {
    let h = start().await;
    let cited = |body: &Value| {
        body.as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|a| a["url_citation"]["url"].as_str().map(str::to_owned))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let both = ["https://example.com/1", "https://example.com/2"];
    // Zen's Responses models flatten citations; they come back in chat's shape.
    for model in [
        "openrouter/openai/gpt-4o-mini",
        "plain/gpt-4o",
        "opencode/gpt-5.4",
    ] {
        let (status, body) = h
            .chat(&json!({"model": model, "messages": user("hi there #cite")}))
            .await;
        assert_eq!(status, 200, "{model}: {body}");
        let message = &body["choices"][0]["message"];
        assert_eq!(cited(&message["annotations"]), both, "{model}: {body}");
        assert_eq!(message["annotations"][0]["type"], "url_citation");
        assert_eq!(message["annotations"][0]["url_citation"]["end_index"], 5);
        assert_eq!(message["content"], expected_text(flavour_of(model)));

        let (status, events) = h
            .stream(&json!({"model": model, "messages": user("hi there #cite"), "stream": true}))
            .await;
        assert_eq!(status, 200, "{model}: {events:?}");
        let chunks = chunks_of(model, &events);
        let streamed: Vec<String> = chunks
            .iter()
            .flat_map(|c| cited(&c["choices"][0]["delta"]["annotations"]))
            .collect();
        assert_eq!(
            streamed, both,
            "{model}: one citation per event: {events:?}"
        );
        assert_eq!(joined_content(&chunks), expected_text(flavour_of(model)));
    }
}

fn flavour_of(model: &str) -> &'static str {
    CASES
        .iter()
        .find(|(m, ..)| *m == model)
        .map_or("", |(_, flavour, _)| *flavour)
}
