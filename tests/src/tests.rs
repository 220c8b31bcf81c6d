//! Tests of the fake server over real HTTP.

use std::time::Duration;

use serde_json::{Value, json};

use crate::FakeUpstream;

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

fn chat_body(text: &str, stream: bool) -> Value {
    json!({ "model": "m", "stream": stream, "messages": [{ "role": "user", "content": text }] })
}

async fn post(fake: &FakeUpstream, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(fake.url(path))
        .bearer_auth("k")
        .json(body)
        .send()
        .await
        .expect("send")
}

/// The `data:` payloads of an SSE body, in order.
fn sse_data(text: &str) -> Vec<&str> {
    text.split("\n\n")
        .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data: ")))
        .collect()
}

#[tokio::test]
async fn ollama_streams_ndjson_ending_with_done() {
    let fake = FakeUpstream::start().await.expect("start");
    let response = post(&fake, "/ollama/api/chat", &chat_body("hi there", true)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let text = response.text().await.expect("body");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let content: String = lines
        .iter()
        .filter_map(|l| l["message"]["content"].as_str())
        .collect();
    assert_eq!(content, "Hello from ollama! You said: hi there");
    let last = lines.last().expect("lines");
    assert_eq!(last["done"], true);
    assert_eq!(last["done_reason"], "stop");
    assert_eq!(last["prompt_eval_count"], 11);
    assert_eq!(last["eval_count"], 7);
    let recorded = fake.requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].path, "/ollama/api/chat");
    assert_eq!(recorded[0].headers["authorization"], "Bearer k");
    assert_eq!(recorded[0].body["messages"][0]["content"], "hi there");
}

#[tokio::test]
async fn ollama_second_line_arrives_split() {
    let fake = FakeUpstream::start().await.expect("start");
    let mut response = post(&fake, "/ollama/api/chat", &chat_body("#chunks=3", true)).await;
    let mut reads = Vec::new();
    while let Some(chunk) = response.chunk().await.expect("chunk") {
        reads.push(String::from_utf8(chunk.to_vec()).expect("utf8"));
    }
    assert!(
        reads.iter().any(|r| !r.ends_with('\n')),
        "no read ended mid-line: {reads:?}"
    );
}

#[tokio::test]
async fn ollama_tool_call_and_cloud_auth() {
    let fake = FakeUpstream::start().await.expect("start");
    let mut body = chat_body("#tool", false);
    body["tools"] = json!([{ "type": "function", "function": { "name": "lookup" } }]);
    let value: Value = post(&fake, "/ollama_cloud/api/chat", &body)
        .await
        .json()
        .await
        .expect("json");
    let call = &value["message"]["tool_calls"][0];
    assert_eq!(call["id"], "call_k3x9");
    assert_eq!(call["function"]["name"], "lookup");
    assert_eq!(call["function"]["arguments"], json!({ "city": "Oslo" }));
    assert_eq!(value["done_reason"], "stop");

    let denied = client()
        .post(fake.url("/ollama_cloud/api/chat"))
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(denied.status(), 401);
    assert_eq!(
        denied.json::<Value>().await.expect("json"),
        json!({ "error": "unauthorized" })
    );
}

#[tokio::test]
async fn openrouter_stream_starts_with_comment_and_ends_with_usage() {
    let fake = FakeUpstream::start().await.expect("start");
    let text = post(
        &fake,
        "/openrouter/api/v1/chat/completions",
        &chat_body("#think yo", true),
    )
    .await
    .text()
    .await
    .expect("body");
    assert!(text.starts_with(": OPENROUTER PROCESSING\n\n"), "{text}");
    assert_eq!(text.matches(": OPENROUTER PROCESSING").count(), 2);
    let data = sse_data(&text);
    assert_eq!(data.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).expect("chunk"))
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[0]["provider"], "FakeProvider");
    assert_eq!(
        chunks[1]["choices"][0]["delta"]["reasoning"],
        "Let me think."
    );
    let usage_chunk = chunks.last().expect("usage");
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], 11);
    assert!(usage_chunk["usage"]["cost"].is_number());
}

#[tokio::test]
async fn openrouter_midstream_error_chunk() {
    let fake = FakeUpstream::start().await.expect("start");
    let text = post(
        &fake,
        "/openrouter/api/v1/chat/completions",
        &chat_body("#fault=midstream", true),
    )
    .await
    .text()
    .await
    .expect("body");
    let data = sse_data(&text);
    let last: Value = serde_json::from_str(data.last().expect("data")).expect("json");
    assert_eq!(last["error"]["code"], 502);
    assert_eq!(last["choices"][0]["finish_reason"], "error");
    assert!(!text.contains("[DONE]"));
}

#[tokio::test]
async fn kimi_usage_inside_choice() {
    let fake = FakeUpstream::start().await.expect("start");
    let text = post(
        &fake,
        "/kimi/v1/chat/completions",
        &chat_body("#chunks=4", true),
    )
    .await
    .text()
    .await
    .expect("body");
    let data = sse_data(&text);
    assert_eq!(data.last(), Some(&"[DONE]"));
    let finish: Value = serde_json::from_str(data[data.len() - 2]).expect("json");
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(finish["choices"][0]["usage"]["completion_tokens"], 4);
    assert!(finish.get("usage").is_none());
    assert!(!text.contains("\"choices\":[]"));
}

#[tokio::test]
async fn zen_chat_cost_after_done() {
    let fake = FakeUpstream::start().await.expect("start");
    let text = post(&fake, "/zen/v1/chat/completions", &chat_body("hi", true))
        .await
        .text()
        .await
        .expect("body");
    let data = sse_data(&text);
    let n = data.len();
    assert_eq!(data[n - 2], "[DONE]");
    assert_eq!(data[n - 1], r#"{"choices":[],"cost":"0.0042"}"#);
    let usage: Value = serde_json::from_str(data[n - 3]).expect("json");
    assert_eq!(usage["usage"]["total_tokens"], 11 + 6);
}

#[tokio::test]
async fn zen_messages_auth_and_tool_stream() {
    let fake = FakeUpstream::start().await.expect("start");
    let body = json!({ "model": "claude-sonnet-4-5", "max_tokens": 100, "stream": true,
        "messages": [{ "role": "user", "content": "#tool" }] });
    let bearer_only = post(&fake, "/zen/v1/messages", &body).await;
    assert_eq!(bearer_only.status(), 401);
    let denied: Value = bearer_only.json().await.expect("json");
    assert_eq!(denied["type"], "error");
    assert_eq!(denied["error"]["type"], "AuthError");

    let text = client()
        .post(fake.url("/zen/v1/messages"))
        .header("x-api-key", "k")
        .json(&body)
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("body");
    assert!(text.contains("event: ping\ndata: {\"type\":\"ping\"}"));
    assert!(text.contains(
        r#""content_block":{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}"#
    ));
    assert!(text.contains(r#""stop_reason":"tool_use""#));
    assert!(text.ends_with("event: ping\ndata: {\"type\":\"ping\",\"cost\":\"0.0042\"}\n\n"));

    let mut no_max = body.clone();
    no_max.as_object_mut().expect("object").remove("max_tokens");
    let missing = client()
        .post(fake.url("/zen/v1/messages"))
        .header("x-api-key", "k")
        .json(&no_max)
        .send()
        .await
        .expect("send");
    assert_eq!(missing.status(), 400);
}

#[tokio::test]
async fn zen_responses_stream_has_no_done() {
    let fake = FakeUpstream::start().await.expect("start");
    let body = json!({ "model": "gpt-5.4", "stream": true, "input": [
        { "role": "user", "content": [{ "type": "input_text", "text": "hey" }] }] });
    let text = post(&fake, "/zen/v1/responses", &body)
        .await
        .text()
        .await
        .expect("body");
    assert!(!text.contains("[DONE]"));
    let data = sse_data(&text);
    let completed: Value = serde_json::from_str(data[data.len() - 2]).expect("json");
    assert_eq!(completed["type"], "response.completed");
    assert_eq!(completed["response"]["usage"]["output_tokens"], 6);
    let sequence: Vec<u64> = data[..data.len() - 1]
        .iter()
        .map(|d| {
            serde_json::from_str::<Value>(d).expect("json")["sequence_number"]
                .as_u64()
                .expect("seq")
        })
        .collect();
    assert!(sequence.windows(2).all(|w| w[1] == w[0] + 1));
}

#[tokio::test]
async fn fault_429_carries_retry_after() {
    let fake = FakeUpstream::start().await.expect("start");
    for path in [
        "/ollama/api/chat",
        "/openrouter/api/v1/chat/completions",
        "/kimi/v1/chat/completions",
        "/openai/v1/chat/completions",
    ] {
        let response = post(&fake, path, &chat_body("#fault=429", true)).await;
        assert_eq!(response.status(), 429, "{path}");
        assert_eq!(response.headers()["retry-after"], "7", "{path}");
        let body: Value = response.json().await.expect("json");
        assert!(body.get("error").is_some(), "{path}: {body}");
    }
}

#[tokio::test]
async fn drop_fault_aborts_the_body() {
    let fake = FakeUpstream::start().await.expect("start");
    let response = post(
        &fake,
        "/openai/v1/chat/completions",
        &chat_body("#fault=drop", true),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(response.text().await.is_err());
    assert_eq!(fake.cancelled(), 0);
}

#[tokio::test]
async fn client_drop_mid_stream_is_counted() {
    let fake = FakeUpstream::start().await.expect("start");
    let mut response = post(
        &fake,
        "/ollama/api/chat",
        &chat_body("#chunks=1000 #slow_chunks=5", true),
    )
    .await;
    let first = response.chunk().await.expect("chunk");
    assert!(first.is_some());
    drop(response);
    assert_eq!(fake.wait_cancelled(1, Duration::from_secs(5)).await, 1);

    // A stream read to the end is not a cancellation.
    let done = post(&fake, "/kimi/v1/chat/completions", &chat_body("hi", true)).await;
    done.text().await.expect("body");
    assert_eq!(fake.wait_cancelled(2, Duration::from_millis(200)).await, 1);
}
