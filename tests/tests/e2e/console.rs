//! The operator's view: request ids, the recent-request ring, provider
//! figures, `/metrics` and the console page, against the fake upstream.

use crate::common;
use crate::common::{sample, user};
use serde_json::{Value, json};

#[tokio::test]
async fn every_response_carries_a_request_id_and_sane_ones_are_kept() {
    let h = common::start().await;
    let response = h.client.get(h.url("/healthz")).send().await.unwrap();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(id.starts_with("req_") && id.len() == 36, "{id}");

    let response = h
        .client
        .get(h.url("/healthz"))
        .header("x-request-id", "trace-42.a_b:c")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-42.a_b:c");

    // Unprintable or oversized ids are replaced, never echoed.
    for bad in ["has space", &"x".repeat(129)] {
        let response = h
            .client
            .get(h.url("/healthz"))
            .header("x-request-id", bad)
            .send()
            .await
            .unwrap();
        let echoed = response.headers()["x-request-id"].to_str().unwrap();
        assert!(echoed.starts_with("req_"), "{bad:?} -> {echoed}");
    }

    // Errors carry one too.
    let response = h.client.get(h.url("/nope")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert!(response.headers().contains_key("x-request-id"));
}

/// `POST /v1/chat/completions` is dispatched ahead of the route table; the
/// table still answers the path's other methods, and near misses stay 404.
#[tokio::test]
async fn the_chat_path_answers_other_methods_with_405_and_near_misses_with_404() {
    let h = common::start().await;
    let response = h.get("/v1/chat/completions").await;
    assert_eq!(response.status(), 405);
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");

    let chat = json!({"model": "kimi/kimi-k2.6", "messages": user("hi")});
    for path in ["/v1/chat/completions/", "/v1/chat/completions/x"] {
        let response = h.post(path, &chat).await;
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unknown_url", "{path}");
    }

    let metrics = h.metrics().await;
    assert!(
        metrics.contains(
            r#"lakehouse_http_requests_total{route="/v1/chat/completions",method="GET",status="405"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn chats_are_witnessed_newest_first_with_their_request_id() {
    let h = common::start().await;
    let response = h
        .client
        .post(h.url("/v1/chat/completions"))
        .header("x-request-id", "first-chat")
        .json(&json!({"model": "kimi/kimi-k2.6", "messages": user("hello")}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let completion: Value = response.json().await.unwrap();

    let (status, events) = h
        .stream(&json!({
            "model": "ollama/qwen3:8b",
            "messages": user("#chunks=3"),
            "stream": true,
            "stream_options": {"include_usage": true}
        }))
        .await;
    assert_eq!(status, 200);
    assert_eq!(events.last().unwrap(), "[DONE]");

    let (status, _) = h
        .chat(&json!({"model": "openrouter/acme/x", "messages": user("#fault=429")}))
        .await;
    assert_eq!(status, 429);

    let recent = h.get_json("/admin/requests?limit=10").await;
    let data = recent["data"].as_array().unwrap();
    assert_eq!(data.len(), 3, "{recent}");

    let failed = &data[0];
    assert_eq!(failed["model"], "openrouter/acme/x");
    assert_eq!(failed["provider"], "openrouter");
    assert_eq!(failed["outcome"], "error");
    assert_eq!(failed["status"], 429);
    assert!(failed["error"].as_str().unwrap().contains("openrouter"));

    let streamed = &data[1];
    assert_eq!(streamed["provider"], "ollama");
    assert_eq!(streamed["stream"], true);
    assert_eq!(streamed["outcome"], "ok");
    assert!(streamed["tokens_out"].as_u64().unwrap() > 0, "{streamed}");
    assert!(streamed["ttft_ms"].as_f64().unwrap() <= streamed["latency_ms"].as_f64().unwrap());

    let plain = &data[2];
    assert_eq!(plain["request_id"], "first-chat");
    assert_eq!(plain["id"], completion["id"]);
    assert_eq!(plain["provider"], "kimi");
    assert_eq!(
        plain["tokens_in"], completion["usage"]["prompt_tokens"],
        "{plain}"
    );

    // Filters by model; the limit holds.
    let only = h.get_json("/admin/requests?model=ollama/qwen3:8b").await;
    assert_eq!(only["data"].as_array().unwrap().len(), 1);
    let one = h.get_json("/admin/requests?limit=1").await;
    assert_eq!(one["data"][0]["model"], "openrouter/acme/x");

    // The provider list shows the same figures.
    let providers = h.get_json("/v1/chat/providers").await;
    let openrouter = providers["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "openrouter")
        .unwrap();
    assert_eq!(openrouter["recent"]["requests"], 1);
    assert_eq!(openrouter["recent"]["errors"], 1);
    let kimi = providers["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "kimi")
        .unwrap();
    assert_eq!(kimi["recent"]["errors"], 0);
    assert!(kimi["recent"]["p50_ms"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn metrics_move_with_requests() {
    let h = common::start().await;
    let before = h.metrics().await;
    let ok = r#"lakehouse_chat_requests_total{provider="kimi",model="kimi/kimi-k2.6",stream="false",outcome="ok"}"#;
    assert_eq!(sample(&before, ok), 0.0);

    for _ in 0..2 {
        let (status, _) = h
            .chat(&json!({"model": "kimi/kimi-k2.6", "messages": user("hi")}))
            .await;
        assert_eq!(status, 200);
    }
    let (status, _) = h
        .stream(&json!({"model": "kimi/kimi-k2.6", "messages": user("#fault=midstream"), "stream": true}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = h
        .chat(&json!({"model": "opencode/claude-sonnet-4-5", "messages": user("#fault=503")}))
        .await;
    assert_eq!(status, 503);

    let after = h.metrics().await;
    assert_eq!(sample(&after, ok), 2.0, "{after}");
    assert_eq!(
        sample(
            &after,
            r#"lakehouse_chat_requests_total{provider="kimi",model="kimi/kimi-k2.6",stream="true",outcome="error"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            r#"lakehouse_upstream_errors_total{provider="kimi",kind="server_error"}"#
        ),
        1.0,
        "{after}"
    );
    assert_eq!(
        sample(
            &after,
            r#"lakehouse_upstream_errors_total{provider="opencode",kind="overloaded"}"#
        ),
        1.0,
        "{after}"
    );
    assert!(
        sample(
            &after,
            r#"lakehouse_tokens_total{provider="kimi",model="kimi/kimi-k2.6",direction="out"}"#
        ) > 0.0
    );
    assert_eq!(
        sample(
            &after,
            r#"lakehouse_time_to_first_token_seconds_count{provider="kimi",model="kimi/kimi-k2.6"}"#
        ),
        3.0
    );
    assert_eq!(
        sample(
            &after,
            r#"lakehouse_http_requests_total{route="/v1/chat/completions",method="POST",status="200"}"#
        ),
        3.0
    );
    assert_eq!(
        sample(
            &after,
            r#"lakehouse_http_requests_total{route="/metrics",method="GET",status="200"}"#
        ),
        1.0
    );
    assert!(after.contains("# TYPE lakehouse_embedder_cache_requests_total counter"));
}

#[tokio::test]
async fn the_console_page_and_its_assets_are_served_from_the_binary() {
    let h = common::start().await;
    let response = h.client.get(h.url("/admin")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = response.text().await.unwrap();
    for id in [
        "providers",
        "corpora",
        "playground",
        "memory",
        "playbook",
        "fanout",
        "requests",
    ] {
        assert!(page.contains(&format!("<section id=\"{id}\"")), "{id}");
    }
    // Nothing is loaded from elsewhere.
    assert!(!page.contains("http://") && !page.contains("https://"));

    let script = h
        .client
        .get(h.url("/admin/assets/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(script.text().await.unwrap().contains("/v1/feedback"));

    let missing = h
        .client
        .get(h.url("/admin/assets/../../etc/passwd"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let missing = h
        .client
        .get(h.url("/admin/assets/other.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unknown_url");
}

#[tokio::test]
async fn witnessed_chats_and_ratings_survive_a_restart_and_bad_lines_are_skipped() {
    let h = common::start().await;
    let (_, first) = h
        .chat(&json!({"model": "kimi/kimi-k2.6", "messages": user("first")}))
        .await;
    let (status, _) = h
        .chat(&json!({"model": "ollama/qwen3:8b", "messages": user("#fault=500")}))
        .await;
    assert_eq!(status, 502);
    h.state.observer.rate(first["id"].as_str().unwrap(), 1.0);
    h.state.observer.flush().await;
    // A torn and a foreign line in the log are skipped, never fatal.
    let torn = "observer/events/00000000000000000000-torn.jsonl";
    h.state
        .store
        .objects()
        .put(
            torn,
            bytes::Bytes::from_static(b"not json\n{\"kind\":\"chat\",\"request_id\"\n"),
        )
        .await
        .unwrap();

    let again = lakehouse::state_from_config(h.config.clone())
        .await
        .unwrap();
    let stats = again.observer.stats();
    assert_eq!((stats.replayed, stats.skipped_lines), (2, 2), "{stats:?}");
    let events = again.observer.recent(10, None, None);
    assert_eq!(events[0].model, "ollama/qwen3:8b");
    assert_eq!(events[0].outcome, lakehouse::observer::Outcome::Error);
    assert_eq!(events[1].id.as_deref(), first["id"].as_str());
    assert_eq!(events[1].rating, Some(1.0));

    // Queries by time and rating.
    let rated = h.get_json("/admin/requests?min_rating=0.5").await;
    assert_eq!(rated["data"].as_array().unwrap().len(), 1);
    let future = h.get_json("/admin/requests?since_ms=99999999999999").await;
    assert!(future["data"].as_array().unwrap().is_empty());
    assert_eq!(rated["observer"]["dropped"], 0);

    // With `server.observer_retention_days`, the segment dated 1970 by its
    // name is deleted before the replay; today's two chats stay.
    let mut config = h.config.clone();
    config.server.observer_retention_days = 30;
    let pruned = lakehouse::state_from_config(config).await.unwrap();
    let stats = pruned.observer.stats();
    assert_eq!(
        (stats.pruned_segments, stats.replayed, stats.skipped_lines),
        (1, 2, 0),
        "{stats:?}"
    );
    assert!(
        h.state
            .store
            .objects()
            .get_opt(torn)
            .await
            .unwrap()
            .is_none()
    );
}
