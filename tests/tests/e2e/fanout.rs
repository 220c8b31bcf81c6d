//! `/v1/fanout` and the scrum review against the fake upstream, with a
//! canned answer (or fault) per model.

use std::time::Duration;

use crate::common;
use crate::common::{Harness, sse_data, user};
use lakehouse::scrum::{ParseStatus, ReviewOptions, Severity};
use lakehouse_e2e::Canned;
use serde_json::{Value, json};

fn canned(h: &Harness, model: &str, reply: &str, directives: &str) {
    h.fake.state().set_canned(Canned {
        model: model.into(),
        reply: reply.into(),
        directives: directives.into(),
    });
}

/// Four models of different providers: two answer, one is rate limited,
/// one is too slow for the per-model limit.
fn four_models(h: &Harness) -> Value {
    canned(h, "fan-good", "Answer from the local model.", "");
    canned(h, "acme/fan-good", "Answer from OpenRouter.", "");
    canned(h, "kimi-k2.6", "", "#fault=429");
    canned(h, "fan-slow", "too late", "#slow_first=30000");
    json!([
        "ollama/fan-good",
        "openrouter/acme/fan-good",
        "kimi/kimi-k2.6",
        "ollama/fan-slow"
    ])
}

#[tokio::test]
async fn one_failing_model_never_fails_the_others() {
    let h = common::start().await;
    let models = four_models(&h);
    let response = h
        .post(
            "/v1/fanout",
            &json!({"models": models, "messages": user("review this"), "timeout_ms": 1500}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "fanout");
    assert_eq!(body["succeeded"], 2, "{body}");
    assert_eq!(body["failed"], 2);
    let answers = body["answers"].as_array().unwrap();
    assert_eq!(answers.len(), 4);
    assert_eq!(answers[0]["model"], "ollama/fan-good");
    assert_eq!(answers[0]["provider"], "ollama");
    assert_eq!(answers[0]["content"], "Answer from the local model.");
    assert!(answers[0]["usage"]["total_tokens"].as_u64().unwrap() > 0);
    assert!(answers[0]["latency_ms"].is_u64());
    assert_eq!(answers[1]["provider"], "openrouter");
    assert_eq!(answers[1]["content"], "Answer from OpenRouter.");
    assert_eq!(
        answers[1]["completion"]["choices"][0]["message"]["content"],
        "Answer from OpenRouter."
    );
    assert_eq!(answers[2]["error"]["status"], 429, "{}", answers[2]);
    assert!(answers[2]["content"].is_null());
    assert_eq!(answers[3]["error"]["status"], 504, "{}", answers[3]);
    assert_eq!(answers[3]["error"]["code"], "model_timeout");
    // The upstream requests went out non-stream, one per model.
    let chats: Vec<_> = h
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.body.get("messages").is_some())
        .collect();
    assert_eq!(chats.len(), 4);
}

#[tokio::test]
async fn streamed_fanout_tags_every_event_with_its_model() {
    let h = common::start().await;
    let mut models = four_models(&h);
    canned(&h, "fan-broken", "some partial answer", "#fault=midstream");
    models
        .as_array_mut()
        .unwrap()
        .push(json!("ollama/fan-broken"));
    let response = h
        .post(
            "/v1/fanout",
            &json!({"models": models, "messages": user("hi"), "stream": true, "timeout_ms": 1500}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let data = sse_data(&response.text().await.unwrap());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(data.iter().filter(|d| *d == "[DONE]").count(), 1);
    let events: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let of =
        |index: u64| -> Vec<&Value> { events.iter().filter(|e| e["index"] == index).collect() };
    let text = |evs: &[&Value]| -> String {
        evs.iter()
            .filter(|e| e["type"] == "chunk")
            .filter_map(|e| e["chunk"]["choices"][0]["delta"]["content"].as_str())
            .collect()
    };
    for (index, model, expected) in [
        (0, "ollama/fan-good", "Answer from the local model."),
        (1, "openrouter/acme/fan-good", "Answer from OpenRouter."),
    ] {
        let evs = of(index);
        assert!(evs.iter().all(|e| e["model"] == model));
        assert_eq!(text(&evs), expected);
        let last = evs.last().unwrap();
        assert_eq!(last["type"], "done", "{last}");
        assert!(
            last["usage"]["total_tokens"].as_u64().unwrap() > 0,
            "{last}"
        );
        assert_eq!(evs.iter().filter(|e| e["type"] != "chunk").count(), 1);
    }
    let limited = of(2);
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0]["type"], "error");
    assert_eq!(limited[0]["error"]["status"], 429);
    let slow = of(3);
    assert_eq!(slow.len(), 1);
    assert_eq!(slow[0]["error"]["code"], "model_timeout");
    // Mid-stream failure: the chunks before it, then exactly one error.
    let broken = of(4);
    assert!(!text(&broken).is_empty());
    assert_eq!(broken.last().unwrap()["type"], "error");
    assert_eq!(broken.iter().filter(|e| e["type"] != "chunk").count(), 1);
}

#[tokio::test]
async fn bad_fanout_requests_get_openai_errors() {
    let h = common::start().await;
    let too_many: Vec<String> = (0..9).map(|i| format!("ollama/m{i}")).collect();
    for (body, param) in [
        (json!({"messages": user("x")}), "models"),
        (json!({"models": [], "messages": user("x")}), "models"),
        (json!({"models": too_many, "messages": user("x")}), "models"),
        (
            json!({"models": ["ollama/a", 7], "messages": user("x")}),
            "models",
        ),
        (
            json!({"models": ["ollama/a", "x".repeat(257)], "messages": user("x")}),
            "models",
        ),
        (
            json!({"models": ["ollama/a"], "model": "ollama/a", "messages": user("x")}),
            "model",
        ),
        (
            json!({"models": ["ollama/a"], "messages": user("x"), "timeout_ms": 0}),
            "timeout_ms",
        ),
    ] {
        let response = h.post("/v1/fanout", &body).await;
        assert_eq!(response.status(), 400, "{body}");
        let err: Value = response.json().await.unwrap();
        assert_eq!(err["error"]["type"], "invalid_request_error", "{err}");
        assert_eq!(err["error"]["param"], param, "{err}");
    }
    let response = h
        .post(
            "/v1/fanout",
            &json!({"models": ["ollama/a"], "messages": []}),
        )
        .await;
    assert_eq!(response.status(), 400);
    // An unknown model is that model's error, not the request's.
    let response = h
        .post(
            "/v1/fanout",
            &json!({"models": ["ollama/qwen3:8b", "tier/frontier_arch"], "messages": user("x")}),
        )
        .await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["succeeded"], 1, "{body}");
    assert_eq!(body["answers"][1]["error"]["status"], 404, "{body}");
}

const REVIEW_A: &str = "Here is my review.\n```json\n{\"findings\": [\n {\"file\": \"src/db.rs\", \"line\": 42, \"severity\": \"BLOCK\", \"title\": \"SQL built from user input allows injection\", \"rationale\": \"use bind parameters\"},\n {\"file\": \"src/api.rs\", \"line\": 10, \"severity\": \"WARN\", \"title\": \"Missing timeout on upstream call\", \"rationale\": \"a hung upstream hangs the handler\"}\n]}\n```\nThat is all.";
const REVIEW_B: &str = "[{\"path\": \"b/src/db.rs\", \"line\": \"43\", \"severity\": \"high\", \"title\": \"SQL injection from user input in query builder\"}, {\"file\": \"README.md\", \"severity\": \"low\", \"title\": \"Typo in the install section\"}]\nI found two issues.";
const REVIEW_TRUNCATED: &str = "{\"findings\": [{\"file\": \"b/src/api.rs\", \"line\": 11, \"severity\": \"warning\", \"title\": \"No timeout on the upstream call\"}, {\"file\": \"src/db.rs\", \"line\": 4";

fn diff_file(name: &str) -> String {
    let mut s =
        format!("diff --git a/{name} b/{name}\n--- a/{name}\n+++ b/{name}\n@@ -1,3 +1,15 @@\n");
    for i in 0..15 {
        s.push_str(&format!("+let value_{i} = compute_something_long({i});\n"));
    }
    s
}

#[tokio::test]
async fn scrum_review_groups_convergent_findings_and_writes_the_report() {
    let h = common::start().await;
    canned(&h, "rev-a", REVIEW_A, "");
    canned(&h, "acme/rev-b", REVIEW_B, "");
    canned(&h, "kimi-k2.6", REVIEW_TRUNCATED, "");
    canned(&h, "rev-empty", "", "");
    canned(&h, "rev-prose", "Looks fine to me, ship it.", "");
    canned(&h, "acme/rev-limited", "", "#fault=429");
    canned(&h, "rev-slow", "{\"findings\": []}", "#slow_first=30000");
    let models: Vec<String> = [
        "ollama/rev-a",
        "openrouter/acme/rev-b",
        "kimi/kimi-k2.6",
        "ollama/rev-empty",
        "ollama/rev-prose",
        "openrouter/acme/rev-limited",
        "ollama/rev-slow",
    ]
    .map(String::from)
    .to_vec();
    let diff = format!("{}{}", diff_file("src/db.rs"), diff_file("src/api.rs"));
    let options = ReviewOptions {
        label: "pr-7".into(),
        models: models.clone(),
        // Room for one file per request: the diff goes in two parts.
        context_tokens: 1,
        timeout: Duration::from_secs(2),
    };
    let review = lakehouse::scrum::review(&h.state, &diff, &options)
        .await
        .unwrap();
    assert_eq!(review.parts, 2);
    let status: Vec<ParseStatus> = review.verdicts.iter().map(|v| v.status).collect();
    use ParseStatus::*;
    assert_eq!(
        status,
        [Parsed, Parsed, Partial, Empty, Unparsed, Failed, Failed]
    );
    // Every model was asked about both parts; the same findings twice count once.
    assert!(review.verdicts.iter().all(|v| v.parts.len() == 2));
    assert_eq!(review.verdicts[0].findings.len(), 2);
    assert_eq!(
        review.verdicts[4].parts[0].verbatim.as_deref(),
        Some("Looks fine to me, ship it.")
    );
    assert_eq!(
        review.verdicts[5].parts[0].error.as_ref().unwrap()["status"],
        429
    );
    assert_eq!(review.responding, 3);

    assert_eq!(review.groups.len(), 3, "{:#?}", review.groups);
    let sql = &review.groups[0];
    assert_eq!(sql.severity, Severity::Block);
    assert_eq!(sql.file.as_deref(), Some("src/db.rs"));
    assert_eq!(sql.models, ["ollama/rev-a", "openrouter/acme/rev-b"]);
    let timeout = &review.groups[1];
    assert_eq!(timeout.severity, Severity::Warn);
    assert_eq!(timeout.models, ["kimi/kimi-k2.6", "ollama/rev-a"]);
    assert_eq!(review.groups[2].models, ["openrouter/acme/rev-b"]);
    // 10·2/3 + 3·2/3 + 1·1/3
    assert_eq!(review.score, 9.0);

    let root = h.secrets.join("reports");
    let dir = lakehouse::scrum::report_dir(&root, &review);
    lakehouse::scrum::write_report(&dir, &review).unwrap();
    assert!(dir.ends_with(format!("{}/pr-7", review.date)));
    let written: Vec<String> = std::fs::read_dir(dir.join("verdicts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(written.len(), 7, "{written:?}");
    let prose: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("verdicts/ollama_rev-prose.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(prose["status"], "unparsed");
    assert_eq!(prose["parts"][0]["verbatim"], "Looks fine to me, ship it.");
    let table = std::fs::read_to_string(dir.join("disposition.md")).unwrap();
    assert!(
        table.contains("| 1 | BLOCK | 2/3 | ollama/rev-a, openrouter/acme/rev-b | src/db.rs:42 |"),
        "{table}"
    );
    assert!(table.contains("| 3 | INFO | 1/3 |"), "{table}");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["score"], 9.0);
}
