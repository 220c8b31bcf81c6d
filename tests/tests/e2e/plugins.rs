//! The plugins around a chat, end to end: the real app with the real store and
//! embedder, in front of the fake upstream that records what it received.

use crate::common::{Harness, Keys, sample, start_with, user};
use serde_json::{Value, json};

const DOCS: &str = r#"{"id":"tea","text":"Green tea is brewed with water at about 80 degrees Celsius for two minutes."}
{"id":"rust","text":"Rust is a systems programming language focused on memory safety and ownership."}
{"id":"bikes","text":"Bicycle chains need cleaning and oiling every few hundred kilometres."}
{"id":"moon","text":"The Moon orbits the Earth roughly every 27 days."}
{"id":"bread","text":"Sourdough bread rises with a culture of wild yeast and lactic acid bacteria."}
"#;

const TEA_QUESTION: &str = "How hot should the water be for green tea?";

/// Plugin settings that make rankings depend on the embedder alone (no
/// threshold); `{pathway}` is replaced by extra `[plugins.pathway]` keys.
const PLUGINS: &str = r#"
[plugins.matrix]
min_similarity = -1.0
[plugins.pathway]
min_similarity = -1.0
{pathway}
[plugins.downgrade]
reduced_k = 1
[plugins.playbook.boost]
strength = 1.0

[[rag_models]]
name = "rag/docs"
model = "plain/gpt-test"
corpora = ["docs"]
k = 2
plugins = ["matrix", "playbook"]

[[rag_models]]
name = "rag/weak"
model = "tier/local_fast"
corpora = ["docs"]
k = 3

[[rag_models]]
name = "rag/strong"
model = "plain/gpt-test"
corpora = ["docs"]
k = 3

# An upstream that always streams (Anthropic messages), so a non-stream chat
# can fail after its first chunk.
[[rag_models]]
name = "rag/claude"
model = "opencode/claude-sonnet-4-5"
corpora = ["docs"]
k = 2
plugins = ["matrix", "playbook"]
"#;

async fn start_with_docs(extra: &str) -> Harness {
    start_with_docs_and(extra, "").await
}

async fn start_with_docs_and(extra: &str, pathway: &str) -> Harness {
    let plugins = PLUGINS.replace("{pathway}", pathway);
    let h = start_with(Keys::All, &format!("{plugins}\n{extra}")).await;
    h.create_corpus("docs", DOCS).await;
    h
}

fn doc_text(id: &str) -> String {
    DOCS.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["id"] == id)
        .map(|v| v["text"].as_str().unwrap().to_owned())
        .unwrap()
}

/// The system message the pipeline must have injected for these sources.
fn expected_context(ids: &[&str]) -> String {
    let mut text = String::from(
        "Use the numbered sources below when they help to answer, and cite them as [n]. \
         Ignore sources that do not help.\n",
    );
    for (i, id) in ids.iter().enumerate() {
        text.push_str(&format!("\n[{}] (docs/{id}) {}\n", i + 1, doc_text(id)));
    }
    text.trim_end().to_owned()
}

fn source_ids(lakehouse: &Value) -> Vec<String> {
    lakehouse["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The messages the upstream received in its last chat request.
fn upstream_messages(h: &Harness) -> Vec<Value> {
    h.last_request("/chat/completions").body["messages"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn rag_model_injects_one_numbered_system_message_and_returns_sources() {
    let h = start_with_docs("").await;
    let (status, body) = h
        .chat(&json!({"model": "rag/docs", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": TEA_QUESTION}
        ]}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "rag/docs");
    let lakehouse = &body["lakehouse"];
    let ids = source_ids(lakehouse);
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], "tea", "{lakehouse}");
    assert_eq!(lakehouse["sources"][0]["n"], 1);
    assert_eq!(lakehouse["sources"][0]["corpus"], "docs");
    assert_eq!(lakehouse["sources"][0]["boost"], 0.0);
    assert_eq!(lakehouse["degraded"], false);

    let messages = upstream_messages(&h);
    // The caller's system message stays first; ours follows; the user message last.
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert_eq!(messages[0]["content"], "Be brief.");
    assert_eq!(messages[1]["role"], "system");
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(messages[1]["content"], expected_context(&refs));
    assert_eq!(messages[2]["content"], TEA_QUESTION);
    // The proxy's own options never reach the upstream.
    let sent = h.last_request("/chat/completions").body;
    assert!(sent.get("lakehouse").is_none());
    assert_eq!(sent["model"], "gpt-test");
}

#[tokio::test]
async fn feedback_boost_reorders_sources_for_the_same_need() {
    let h = start_with_docs("").await;
    let ask = json!({"model": "rag/docs", "messages": user(TEA_QUESTION)});
    let (_, first) = h.chat(&ask).await;
    let ids = source_ids(&first["lakehouse"]);
    assert_eq!(ids[0], "tea");
    let runner_up = ids[1].clone();

    // The user says the top hit did not help and the second one did.
    let feedback = json!({"id": first["id"], "rating": 1.0, "sources": [
        {"corpus": "docs", "id": "tea", "rating": -1.0},
        {"corpus": "docs", "id": runner_up, "rating": 1.0}
    ]});
    let response = h.post("/v1/feedback", &feedback).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());

    let (_, second) = h.chat(&ask).await;
    let lakehouse = &second["lakehouse"];
    assert_eq!(source_ids(lakehouse)[0], runner_up, "{lakehouse}");
    let top = &lakehouse["sources"][0];
    assert!(top["boost"].as_f64().unwrap() > 0.5, "{top}");
    // Every hit shows its base similarity and its boost; the score is their sum.
    let sum = top["similarity"].as_f64().unwrap() + top["boost"].as_f64().unwrap();
    assert!((top["score"].as_f64().unwrap() - sum).abs() < 1e-4);
    // The admin search shows the same boosts and ranks by the boosted score.
    let found: Value = h
        .post(
            "/admin/corpora/docs/search",
            &json!({"query": TEA_QUESTION, "k": 5}),
        )
        .await
        .json()
        .await
        .unwrap();
    let hits = found["data"].as_array().unwrap();
    assert_eq!(hits[0]["id"], runner_up.as_str(), "{found}");
    assert!(hits[0]["boost"].as_f64().unwrap() > 0.5, "{found}");
    let tea = hits.iter().find(|hit| hit["id"] == "tea").unwrap();
    assert!(tea["boost"].as_f64().unwrap() < 0.0, "{found}");
    let sum = tea["score"].as_f64().unwrap() + tea["boost"].as_f64().unwrap();
    assert!((tea["final_score"].as_f64().unwrap() - sum).abs() < 1e-4);
    // The injected message follows the boosted order.
    let messages = upstream_messages(&h);
    let context = messages[0]["content"].as_str().unwrap();
    assert!(
        context.contains(&format!("[1] (docs/{runner_up})")),
        "{context}"
    );

    // Retiring the outcome removes the boost.
    let outcomes = h.get_json("/admin/playbook/outcomes").await;
    assert_eq!(outcomes["data"][0]["id"], first["id"]);
    let response = h
        .post(
            &format!(
                "/admin/playbook/outcomes/{}/retire",
                first["id"].as_str().unwrap()
            ),
            &json!({}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let (_, third) = h.chat(&ask).await;
    assert_eq!(source_ids(&third["lakehouse"])[0], "tea");

    // A client rating the chat again does not undo the operator's retirement.
    let response = h.post("/v1/feedback", &feedback).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let (_, fourth) = h.chat(&ask).await;
    assert_eq!(source_ids(&fourth["lakehouse"])[0], "tea");
    let outcomes = h.get_json("/admin/playbook/outcomes?all=true").await;
    let rerated = outcomes["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["id"] == first["id"])
        .unwrap();
    assert_eq!(rerated["retired"], true, "{outcomes}");
}

#[tokio::test]
async fn feedback_errors_are_clear() {
    let h = start_with_docs("").await;
    let response = h
        .post(
            "/v1/feedback",
            &json!({"id": "chatcmpl-unknown", "rating": 1}),
        )
        .await;
    assert_eq!(response.status(), 404);
    let (_, chat) = h
        .chat(&json!({"model": "rag/docs", "messages": user(TEA_QUESTION)}))
        .await;
    for bad in [
        json!({"id": chat["id"], "rating": 3}),
        json!({"id": chat["id"], "rating": 1, "sources": [{"corpus": "docs", "id": "nope", "rating": 1}]}),
        json!({"id": chat["id"]}),
    ] {
        let response = h.post("/v1/feedback", &bad).await;
        assert_eq!(response.status(), 400, "{bad}");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"]["message"].as_str().is_some());
    }
}

#[tokio::test]
async fn weak_models_get_full_context_strong_models_reduced() {
    let h = start_with_docs("").await;
    let (status, weak) = h
        .chat(&json!({"model": "rag/weak", "messages": user(TEA_QUESTION)}))
        .await;
    assert_eq!(status, 200, "{weak}");
    assert_eq!(weak["lakehouse"]["context"], "full");
    assert_eq!(source_ids(&weak["lakehouse"]).len(), 3);
    let ollama = h.last_request("/api/chat").body;
    assert_eq!(ollama["messages"].as_array().unwrap().len(), 2);

    let (_, strong) = h
        .chat(&json!({"model": "rag/strong", "messages": user(TEA_QUESTION)}))
        .await;
    assert_eq!(strong["lakehouse"]["context"], "reduced");
    assert_eq!(source_ids(&strong["lakehouse"]), ["tea"]);
}

#[tokio::test]
async fn cost_downgrade_routes_a_well_rated_repeat_to_local_fast() {
    let h = start_with_docs("").await;
    let ask = json!({"model": "rag/strong", "messages": user(TEA_QUESTION)});
    let (_, first) = h.chat(&ask).await;
    assert!(first["lakehouse"].get("downgrade").is_none());
    let response = h
        .post("/v1/feedback", &json!({"id": first["id"], "rating": 1}))
        .await;
    assert_eq!(response.status(), 200);

    // Without opting in, nothing changes.
    let (_, plain) = h.chat(&ask).await;
    assert!(plain["lakehouse"].get("downgrade").is_none());
    assert_eq!(
        h.last_request("/chat/completions").body["model"],
        "gpt-test"
    );

    let mut opted = ask.clone();
    opted["lakehouse"] = json!({"downgrade": true});
    let (status, cheap) = h.chat(&opted).await;
    assert_eq!(status, 200, "{cheap}");
    let downgrade = &cheap["lakehouse"]["downgrade"];
    assert_eq!(downgrade["from"], "plain/gpt-test");
    assert_eq!(downgrade["to"], "ollama/qwen3:8b");
    assert_eq!(downgrade["outcome"], first["id"]);
    assert_eq!(cheap["lakehouse"]["model"], "ollama/qwen3:8b");
    // local_fast is a weak model: it gets the full context.
    assert_eq!(cheap["lakehouse"]["context"], "full");
    assert_eq!(h.last_request("/api/chat").body["model"], "qwen3:8b");
}

async fn add_memory(h: &Harness, namespace: &str, text: &str) -> Value {
    let response = h
        .post(
            "/admin/memory/traces",
            &json!({"namespace": namespace, "text": text}),
        )
        .await;
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

#[tokio::test]
async fn memories_are_injected_per_namespace_and_retired_ones_are_not() {
    let h = start_with_docs("").await;
    let note = add_memory(&h, "alice", "Alice wants every answer in French.").await;
    let ask = |user_field: &str| {
        json!({"model": "plain/gpt-test", "user": user_field,
               "messages": user("Which language should the answer use?"),
               "lakehouse": {"memory": true}})
    };

    let (status, body) = h.chat(&ask("alice")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["lakehouse"]["namespace"], "alice");
    assert_eq!(body["lakehouse"]["memories"][0]["id"], note["id"]);
    let messages = upstream_messages(&h);
    let context = messages[0]["content"].as_str().unwrap();
    assert!(
        context.contains("- Alice wants every answer in French."),
        "{context}"
    );

    // Another namespace (here by header) sees nothing of Alice's.
    let response = h
        .client
        .post(h.url("/v1/chat/completions"))
        .header("x-lakehouse-namespace", "bob")
        .json(&json!({"model": "plain/gpt-test",
                      "messages": user("Which language should the answer use?"),
                      "lakehouse": {"memory": true}}))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["lakehouse"]["namespace"], "bob");
    assert!(
        !upstream_messages(&h)[0]["content"]
            .as_str()
            .unwrap()
            .contains("French"),
    );

    // The chat itself left a trace in Alice's namespace (post hook).
    let list = h.get_json("/admin/memory/namespaces/alice").await;
    let traces = list["data"].as_array().unwrap();
    assert!(
        traces
            .iter()
            .any(|t| t["metadata"]["kind"] == "chat" && t["metadata"]["model"] == "plain/gpt-test"),
        "{list}"
    );

    // Retired: gone from chats and search, kept in history.
    let id = note["id"].as_str().unwrap();
    let response = h
        .post(&format!("/admin/memory/traces/{id}/retire"), &json!({}))
        .await;
    assert_eq!(response.status(), 200);
    h.chat(&ask("alice")).await;
    let context = upstream_messages(&h)[0]["content"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(!context.contains("French"), "{context}");
    let history = h
        .get_json(&format!("/admin/memory/traces/{id}/history"))
        .await;
    assert_eq!(history["versions"][0]["retired"], true);
}

#[tokio::test]
async fn revise_links_versions_and_only_the_newest_is_searched() {
    let h = start_with_docs("").await;
    let v1 = add_memory(&h, "carol", "Carol's favourite colour is green.").await;
    let response = h
        .post(
            &format!("/admin/memory/traces/{}/revise", v1["id"].as_str().unwrap()),
            &json!({"text": "Carol's favourite colour is now blue."}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let v2: Value = response.json().await.unwrap();
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["previous"], v1["id"]);
    // Revising an old version is refused.
    let response = h
        .post(
            &format!("/admin/memory/traces/{}/revise", v1["id"].as_str().unwrap()),
            &json!({"text": "again"}),
        )
        .await;
    assert_eq!(response.status(), 400);

    let hits: Value = h
        .post(
            "/admin/memory/search",
            &json!({"namespace": "carol", "query": "favourite colour", "k": 5}),
        )
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&Value> = hits["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| &h["trace"]["id"])
        .collect();
    assert_eq!(ids, [&v2["id"]]);

    let history = h
        .get_json(&format!(
            "/admin/memory/traces/{}/history",
            v1["id"].as_str().unwrap()
        ))
        .await;
    let chain: Vec<&Value> = history["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["id"])
        .collect();
    assert_eq!(chain, [&v2["id"], &v1["id"]]);
    assert_eq!(history["cycle_at"], Value::Null);
}

#[tokio::test]
async fn streaming_with_plugins_stays_chunk_by_chunk_and_annotates_the_first_chunk() {
    let h = start_with_docs("").await;
    let (status, events) = h
        .stream(&json!({"model": "rag/docs", "stream": true,
                        "messages": user(&format!("{TEA_QUESTION} #chunks=6"))}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(source_ids(&chunks[0]["lakehouse"])[0], "tea");
    assert!(chunks[1..].iter().all(|c| c.get("lakehouse").is_none()));
    let content_events = chunks
        .iter()
        .filter(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        })
        .count();
    assert_eq!(content_events, 6, "{events:?}");

    // The streamed chat can be rated as soon as the stream has ended.
    let response = h
        .post(
            "/v1/feedback",
            &json!({"id": chunks[0]["id"], "rating": 0.5}),
        )
        .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

/// How many times the playbook's post hook has run and succeeded.
async fn playbook_posts(h: &Harness) -> f64 {
    let series = r#"lakehouse_plugin_runs_total{plugin="playbook",hook="post",status="ok"}"#;
    sample(&h.metrics().await, series)
}

#[tokio::test]
async fn post_hooks_run_when_the_upstream_fails_midway_streamed_or_not() {
    let h = start_with_docs("").await;
    let question = format!("{TEA_QUESTION} #fault=midstream");
    assert_eq!(playbook_posts(&h).await, 0.0);

    let (status, body) = h
        .chat(&json!({"model": "rag/claude", "messages": user(&question)}))
        .await;
    assert_eq!(status, 503, "Anthropic's overloaded_error: {body}");
    assert_eq!(
        playbook_posts(&h).await,
        1.0,
        "the whole-answer chat ran its post hooks"
    );

    let (status, events) = h
        .stream(&json!({"model": "rag/claude", "stream": true, "messages": user(&question)}))
        .await;
    assert_eq!(status, 200);
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert!(last["error"]["message"].is_string(), "{events:?}");
    assert_eq!(
        playbook_posts(&h).await,
        2.0,
        "the streamed chat ran its post hooks"
    );
}

const BROKEN_MEMORY: &str = r#"
[embeddings]
ollama_models = ["missing"]
"#;

#[tokio::test]
async fn a_failing_optional_plugin_degrades_the_chat() {
    let h = start_with_docs_and(BROKEN_MEMORY, "embedder = \"ollama/missing\"").await;
    let (status, body) = h
        .chat(
            &json!({"model": "rag/strong", "messages": user(TEA_QUESTION),
                      "lakehouse": {"memory": true}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let lakehouse = &body["lakehouse"];
    assert_eq!(lakehouse["degraded"], true);
    let runs = lakehouse["plugins"].as_array().unwrap();
    let pathway = runs.iter().find(|r| r["name"] == "pathway").unwrap();
    assert_eq!(pathway["status"], "failed");
    assert!(!pathway["error"].as_str().unwrap().is_empty(), "{pathway}");
    // Retrieval still worked.
    assert_eq!(source_ids(lakehouse)[0], "tea");
}

#[tokio::test]
async fn a_failing_required_plugin_fails_the_chat_with_503() {
    let h = start_with_docs_and(
        BROKEN_MEMORY,
        "embedder = \"ollama/missing\"\nrequired = true",
    )
    .await;
    let (status, body) = h
        .chat(
            &json!({"model": "rag/strong", "messages": user(TEA_QUESTION),
                      "lakehouse": {"memory": true}}),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "plugin_failed");
}

#[tokio::test]
async fn bad_lakehouse_options_and_unknown_rag_models_are_refused() {
    let h = start_with_docs("").await;
    for (body, status) in [
        (json!({"model": "rag/nope", "messages": user("hi")}), 404),
        (
            json!({"model": "plain/gpt-test", "messages": user("hi"), "lakehouse": {"corpora": ["nope"]}}),
            404,
        ),
        (
            json!({"model": "plain/gpt-test", "messages": user("hi"), "lakehouse": {"k": 0}}),
            400,
        ),
        (
            json!({"model": "plain/gpt-test", "messages": user("hi"), "lakehouse": {"colour": 1}}),
            400,
        ),
    ] {
        let (got, answer) = h.chat(&body).await;
        assert_eq!(got, status, "{body} -> {answer}");
        assert!(answer["error"]["message"].is_string());
    }
    // Past 16 distinct corpora a chat is refused; a repeated name is one corpus.
    let many: Vec<String> = (0..17).map(|i| format!("c{i}")).collect();
    let (status, answer) = h
        .chat(&json!({"model": "plain/gpt-test", "messages": user("hi"), "lakehouse": {"corpora": many}}))
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["param"], "lakehouse.corpora");
    let (status, answer) = h
        .chat(&json!({"model": "plain/gpt-test", "messages": user(TEA_QUESTION), "lakehouse": {"corpora": vec!["docs"; 1000]}}))
        .await;
    assert_eq!(status, 200, "{answer}");
    let ids = source_ids(&answer["lakehouse"]);
    assert_eq!(ids[0], "tea");
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "each source once: {ids:?}");
    // Plain chats carry no annotations at all.
    let (_, plain) = h
        .chat(&json!({"model": "plain/gpt-test", "messages": user("hi")}))
        .await;
    assert!(plain.get("lakehouse").is_none());
}

#[tokio::test]
async fn rag_models_are_listed() {
    let h = start_with_docs("").await;
    let models = h.get_json("/v1/models").await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(
        ids.contains(&"rag/docs") && ids.contains(&"rag/weak"),
        "{ids:?}"
    );
}
