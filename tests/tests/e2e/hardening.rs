//! Auth, rate limits, the IP allowlist and the server's own limits
//! (concurrency shedding, message count, stalled bodies), over real HTTP.

use crate::common;
use crate::common::{Harness, Keys, start_with, user};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CLIENT: &str = "client-token-5b0e7f3a91";
const ADMIN: &str = "admin-token-c4d2a8e617";

fn sha(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `[auth]` with an admin token and a client token (plus `client_extra` keys on it).
fn auth_toml(client_extra: &str, auth_extra: &str) -> String {
    format!(
        r#"
[auth]
{auth_extra}
tokens = [
  {{ name = "app", scope = "client", sha256 = "{client}" {client_extra} }},
  {{ name = "ops", scope = "admin", sha256 = "{admin}" }},
]
"#,
        client = sha(CLIENT),
        admin = sha(ADMIN),
    )
}

async fn get(h: &Harness, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = h.client.get(h.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn chat_as(h: &Harness, token: &str, body: &Value) -> reqwest::Response {
    h.client
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test]
async fn tokens_and_scopes_guard_every_route() {
    let h = start_with(Keys::All, &auth_toml("", "")).await;

    let response = get(&h, "/v1/models", None).await;
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_eq!(error_code(response).await, (401, "missing_api_key".into()));
    let response = get(&h, "/v1/models", Some("not-a-real-token-at-all")).await;
    assert_eq!(error_code(response).await, (401, "invalid_api_key".into()));

    assert_eq!(get(&h, "/v1/models", Some(CLIENT)).await.status(), 200);
    assert_eq!(get(&h, "/v1/models", Some(ADMIN)).await.status(), 200);

    // Client tokens stop at /v1; admin tokens reach /admin and /metrics.
    for path in ["/admin/corpora", "/metrics", "/admin/requests"] {
        let response = get(&h, path, Some(CLIENT)).await;
        assert_eq!(
            error_code(response).await,
            (403, "insufficient_scope".into()),
            "{path}"
        );
        assert_eq!(get(&h, path, Some(ADMIN)).await.status(), 200, "{path}");
    }
    // Health and the console's static page need nothing.
    assert_eq!(get(&h, "/healthz", None).await.status(), 200);
    assert_eq!(get(&h, "/admin", None).await.status(), 200);
    assert_eq!(get(&h, "/admin/assets/app.js", None).await.status(), 200);

    // The caller is known to the observer; a caller header sent by the client is ignored.
    let response = h
        .client
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(CLIENT)
        .header("x-lakehouse-caller", "ops")
        .json(&json!({"model": "kimi/kimi-k2.6", "messages": user("hi")}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let recent: Value = get(&h, "/admin/requests", Some(ADMIN))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(recent["data"][0]["caller"], "app", "{recent}");

    let metrics = get(&h, "/metrics", Some(ADMIN)).await.text().await.unwrap();
    assert!(metrics.contains(r#"lakehouse_auth_refusals_total{reason="insufficient_scope"} 3"#));
    assert!(metrics.contains(r#"lakehouse_auth_refusals_total{reason="missing_token"} 1"#));
}

#[tokio::test]
async fn request_rate_limits_answer_429_with_retry_after() {
    let h = start_with(Keys::All, &auth_toml(", requests_per_minute = 3", "")).await;
    for _ in 0..3 {
        assert_eq!(get(&h, "/v1/models", Some(CLIENT)).await.status(), 200);
    }
    let response = get(&h, "/v1/models", Some(CLIENT)).await;
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // 3 per minute: the next one is free about 20 s later.
    assert!((1..=21).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"app\"")
    );
    // Another token is not affected.
    assert_eq!(get(&h, "/v1/models", Some(ADMIN)).await.status(), 200);
}

#[tokio::test]
async fn token_budgets_are_charged_with_the_answer_usage() {
    let h = start_with(Keys::All, &auth_toml(", tokens_per_minute = 5", "")).await;
    let body = json!({"model": "kimi/kimi-k2.6", "messages": user("hello there")});
    // The budget is positive: the chat goes through, and its 11+ tokens are charged.
    assert_eq!(chat_as(&h, CLIENT, &body).await.status(), 200);
    let response = chat_as(&h, CLIENT, &body).await;
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tokens per minute"),
        "{body}"
    );
}

#[tokio::test]
async fn the_ip_allowlist_refuses_other_networks() {
    let h = start_with(Keys::All, &auth_toml("", r#"allow_ips = ["10.9.9.0/24"]"#)).await;
    let response = get(&h, "/healthz", None).await;
    assert_eq!(error_code(response).await, (403, "ip_not_allowed".into()));
    let h = start_with(
        Keys::All,
        &auth_toml("", r#"allow_ips = ["10.9.9.0/24", "127.0.0.0/8"]"#),
    )
    .await;
    assert_eq!(get(&h, "/healthz", None).await.status(), 200);
}

#[tokio::test]
async fn past_the_concurrency_limit_requests_are_shed_not_queued() {
    let h = start_with(Keys::All, "[server]\nmax_concurrent_requests = 1\n").await;
    // One slow stream holds the only slot.
    let mut stream = h
        .post(
            "/v1/chat/completions",
            &json!({"model": "ollama/qwen3:8b", "messages": user("#chunks=3 #slow_chunks=300"), "stream": true}),
        )
        .await;
    assert_eq!(stream.status(), 200);
    let first = stream.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());

    let response = get(&h, "/v1/models", None).await;
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(error_code(response).await, (503, "overloaded".into()));
    // Health and metrics stay reachable under load.
    assert_eq!(get(&h, "/healthz", None).await.status(), 200);
    let metrics = get(&h, "/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains("lakehouse_shed_requests_total 1"),
        "{metrics}"
    );

    // Once the stream has ended, its slot is free again.
    while stream.chunk().await.unwrap().is_some() {}
    assert_eq!(get(&h, "/v1/models", None).await.status(), 200);
}

#[tokio::test]
async fn too_many_messages_are_refused() {
    let h = start_with(Keys::All, "[server]\nmax_messages = 3\n").await;
    let messages: Vec<Value> = (0..4)
        .map(|i| json!({"role": "user", "content": format!("m{i}")}))
        .collect();
    let (status, body) = h
        .chat(&json!({"model": "kimi/kimi-k2.6", "messages": messages}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "messages");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("server.max_messages")
    );
    let (status, _) = h
        .chat(&json!({"model": "kimi/kimi-k2.6", "messages": messages[..3]}))
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_stalled_request_body_is_cut_with_408() {
    let h = start_with(Keys::All, "[server]\nbody_read_timeout_secs = 1\n").await;
    let mut socket = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    // Promise 100 bytes, send 10, then nothing.
    socket
        .write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"model\":",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    // The server answers (and may close) on its own once the body has stalled.
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut buffer).await.unwrap();
        assert!(n > 0, "closed without an answer");
        answer.extend_from_slice(&buffer[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_until_closed(socket: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => return seen,
            Ok(n) => seen.extend_from_slice(&buffer[..n]),
        }
    }
}

#[tokio::test]
async fn connections_that_send_no_complete_head_are_closed() {
    let h = start_with(Keys::All, "[server]\nheader_read_timeout_secs = 1\n").await;

    // Connects and says nothing (the protocol sniff stage).
    let mut silent = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    // Starts a head and never finishes it (slowloris).
    let mut partial = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    partial
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // Sends one whole request, then idles on the kept-alive connection.
    let mut idle = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();

    let bound = std::time::Duration::from_secs(30);
    let silent_saw = tokio::time::timeout(bound, read_until_closed(&mut silent))
        .await
        .expect("the silent connection is closed by the server");
    assert!(silent_saw.is_empty());
    let partial_saw = tokio::time::timeout(bound, read_until_closed(&mut partial))
        .await
        .expect("the half-sent head is cut by the server");
    assert!(
        partial_saw.is_empty() || String::from_utf8_lossy(&partial_saw).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&partial_saw)
    );
    let idle_saw = tokio::time::timeout(bound, read_until_closed(&mut idle))
        .await
        .expect("the idle keep-alive connection is closed by the server");
    assert!(String::from_utf8_lossy(&idle_saw).starts_with("HTTP/1.1 200"));

    // The server itself is fine.
    let r = h.client.get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_stalled_client_holds_the_upstream_back_instead_of_buffering() {
    const CHUNKS: u64 = 400_000;
    let h = common::start().await;
    let mut response = h
        .post(
            "/v1/chat/completions",
            &json!({"model": "ollama/qwen3:8b", "messages": user(&format!("#chunks={CHUNKS}")), "stream": true}),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert!(!response.chunk().await.unwrap().unwrap().is_empty());

    // The client now reads nothing. Proving that something does *not* happen
    // needs a window: watch the fake's count until it has not moved for 0.5 s.
    let fake = h.fake.state();
    let (mut last, mut steady) = (fake.pieces_sent(), 0);
    for _ in 0..400 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let now = fake.pieces_sent();
        steady = if now == last { steady + 1 } else { 0 };
        last = now;
        if steady == 10 {
            break;
        }
    }
    assert_eq!(steady, 10, "the upstream kept being read for 20 s");
    // Only socket buffers' worth went out: a fraction of the 60 MB answer.
    assert!(
        last < CHUNKS / 2,
        "{last} of {CHUNKS} pieces left the upstream"
    );

    // Reading on delivers every chunk, in order.
    let mut body = Vec::new();
    while let Some(bytes) = response.chunk().await.unwrap() {
        body.extend_from_slice(&bytes);
    }
    let text = String::from_utf8(body).unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"));
    assert!(text.contains(&format!("tok{} ", CHUNKS - 1)));
    assert!(fake.pieces_sent() >= CHUNKS);
}

#[tokio::test]
async fn model_ids_are_bounded_and_unrouted_chats_count_under_no_model() {
    let h = start_with(Keys::All, "").await;
    let long = format!("kimi/{}", "x".repeat(10_000));
    let (status, body) = h
        .chat(&json!({"model": long, "messages": user("hi")}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`model` is 10005 bytes"),
        "{body}"
    );
    let (status, _) = h
        .chat(&json!({"model": "rag/nosuch", "messages": user("hi")}))
        .await;
    assert_eq!(status, 404);
    // Neither name becomes a series: clients choose them freely.
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(
            r#"lakehouse_chat_requests_total{provider="none",model="none",stream="false",outcome="error"} 2"#
        ),
        "{metrics}"
    );
    assert!(!metrics.contains("xxxx") && !metrics.contains("nosuch"));
    // The recent chats keep the short name and not the long one.
    let recent = h.get_json("/admin/requests").await;
    let models: Vec<&str> = recent["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["model"].as_str().unwrap())
        .collect();
    assert_eq!(models, ["rag/nosuch", "(too long)"]);
}

#[tokio::test]
async fn bad_query_strings_and_paths_get_openai_shaped_400s() {
    let h = start_with(Keys::All, "").await;
    for path in [
        "/admin/requests?limit=abc",
        "/admin/requests?offset=1",
        "/admin/playbook/outcomes?limit=-1",
        "/admin/corpora/%FF",
    ] {
        let response = h.get(path).await;
        assert_eq!(response.status(), 400, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["type"], "invalid_request_error", "{path}");
        assert!(body["error"]["message"].is_string(), "{path}");
    }
}
