//! Workflows, distillation and drift, end to end: the real app with workflow
//! files on disk, the fake upstream answering chats and judge calls.

use std::path::PathBuf;

use crate::common::{Harness, Keys, start_with, user};
use serde_json::{Value, json};

/// A fresh folder holding `files` (name, TOML text).
fn workflow_dir(files: &[(&str, &str)]) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "lakehouse-workflows-{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    dir
}

async fn start_with_workflows(files: &[(&str, &str)], extra: &str) -> Harness {
    let dir = workflow_dir(files);
    start_with(
        Keys::All,
        &format!(
            "[workflows]\ndir = {:?}\n{extra}",
            dir.display().to_string()
        ),
    )
    .await
}

async fn run_workflow(h: &Harness, name: &str) -> Value {
    let response = h
        .post(&format!("/admin/workflows/{name}/run"), &json!({}))
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn node<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == id)
        .unwrap_or_else(|| panic!("no node {id} in {run}"))
}

fn ms(node: &Value, field: &str) -> u64 {
    node[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {node}"))
}

const DAG: &str = r#"
description = "order, parallelism and outputs passed on"
[[nodes]]
id = "greet"
mode = "fixture.echo"
inputs = { text = "hello lakehouse" }

[[nodes]]
id = "shout"
mode = "fixture.upper"
depends_on = ["greet"]
inputs = { text = "$greet.text" }

[[nodes]]
id = "left"
mode = "fixture.sleep"
depends_on = ["greet"]
inputs = { ms = 400 }

[[nodes]]
id = "right"
mode = "fixture.sleep"
depends_on = ["greet"]
inputs = { ms = 400 }

[[nodes]]
id = "join"
mode = "fixture.echo"
depends_on = ["shout", "left", "right"]
inputs = { loud = "$shout.text", waited = ["$left.slept_ms", "$right.slept_ms"] }
"#;

#[tokio::test]
async fn a_dag_runs_in_order_with_independent_nodes_in_parallel_and_is_kept() {
    let h = start_with_workflows(&[("dag.toml", DAG)], "").await;
    let listed: Value = h.get_json("/admin/workflows").await;
    assert_eq!(listed["data"][0]["name"], "dag");

    let run = run_workflow(&h, "dag").await;
    assert_eq!(run["verdict"], "accept", "{run}");
    for id in ["greet", "shout", "left", "right", "join"] {
        assert_eq!(node(&run, id)["status"], "succeeded", "{run}");
    }
    // Outputs flow to dependants.
    assert_eq!(node(&run, "join")["output"]["loud"], "HELLO LAKEHOUSE");
    assert_eq!(node(&run, "join")["output"]["waited"], json!([400, 400]));
    // Dependants start after their dependencies end.
    let greet = node(&run, "greet");
    let join = node(&run, "join");
    for id in ["shout", "left", "right"] {
        assert!(ms(node(&run, id), "started_ms") >= ms(greet, "finished_ms"));
        assert!(ms(join, "started_ms") >= ms(node(&run, id), "finished_ms"));
    }
    // The two sleeps overlapped: each started before the other ended.
    let (left, right) = (node(&run, "left"), node(&run, "right"));
    assert!(ms(left, "started_ms") < ms(right, "finished_ms"), "{run}");
    assert!(ms(right, "started_ms") < ms(left, "finished_ms"), "{run}");

    // The run is kept in the store and listed.
    let id = run["id"].as_str().unwrap();
    let kept: Value = h.get_json(&format!("/admin/workflows/runs/{id}")).await;
    assert_eq!(kept, run);
    let runs: Value = h.get_json("/admin/workflows/runs").await;
    assert_eq!(runs["data"][0]["id"], id);
    // Unknown runs and workflows are 404 in the OpenAI error shape.
    let missing = h.get("/admin/workflows/runs/wfr-0-nope").await;
    assert_eq!(missing.status(), 404);
    let missing = h.post("/admin/workflows/nope/run", &json!({})).await;
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "workflow_not_found");
}

const FAULTS: &str = r#"
[[nodes]]
id = "slow"
mode = "fixture.sleep"
timeout_secs = 1
inputs = { ms = 30000 }

[[nodes]]
id = "after_slow"
mode = "fixture.echo"
depends_on = ["slow"]

[[nodes]]
id = "broken"
mode = "fixture.fail"
inputs = { message = "the fixture broke" }

[[nodes]]
id = "after_broken"
mode = "fixture.echo"
depends_on = ["broken"]

[[nodes]]
id = "last"
mode = "fixture.echo"
depends_on = ["after_broken"]

[[nodes]]
id = "fine"
mode = "fixture.upper"
inputs = { text = "ok" }
"#;

#[tokio::test]
async fn timeouts_and_failures_skip_dependants_and_the_verdict_is_error() {
    let h = start_with_workflows(&[("faults.toml", FAULTS)], "").await;
    let run = run_workflow(&h, "faults").await;
    assert_eq!(run["verdict"], "error", "{run}");
    assert_eq!(node(&run, "slow")["status"], "timed_out");
    assert_eq!(node(&run, "after_slow")["status"], "skipped");
    assert_eq!(node(&run, "broken")["status"], "failed");
    assert_eq!(node(&run, "broken")["error"], "the fixture broke");
    assert_eq!(node(&run, "after_broken")["status"], "skipped");
    assert_eq!(node(&run, "last")["status"], "skipped");
    assert_eq!(node(&run, "fine")["output"]["text"], "OK");
    // The sleeping node was cut at its limit, not waited for.
    let slow = node(&run, "slow");
    assert!(ms(slow, "finished_ms") - ms(slow, "started_ms") < 30_000);
}

#[tokio::test]
async fn a_cyclic_workflow_stops_the_server_from_starting() {
    let dir = workflow_dir(&[(
        "loop.toml",
        "[[nodes]]\nid = 'a'\nmode = 'fixture.echo'\ndepends_on = ['b']\n[[nodes]]\nid = 'b'\nmode = 'fixture.echo'\ndepends_on = ['a']\n",
    )]);
    let text = format!("[workflows]\ndir = {:?}\n", dir.display().to_string());
    let config = lakehouse::config::Config::parse(&text, "cycle.toml").unwrap();
    let error = lakehouse::state_from_config(config)
        .await
        .err()
        .expect("refused");
    let message = error.to_string();
    assert!(
        message.contains("loop.toml") && message.contains("cycle: a -> b -> a"),
        "{message}"
    );
}

const DOCS: &str = r#"{"id":"md","text":"pandoc converts Markdown documents to PDF through a LaTeX engine."}
{"id":"watch","text":"entr runs a command when files in a directory change."}
{"id":"tea","text":"Green tea is brewed with water at about 80 degrees Celsius."}
"#;

const EVAL_QUESTION: &str = "Which tool converts Markdown documents to PDF with a LaTeX engine?";

async fn start_for_distillation(files: &[(&str, &str)]) -> Harness {
    let dir = workflow_dir(files);
    let eval = dir.join("test_queries.jsonl");
    std::fs::write(
        &eval,
        format!("{}\n", json!({"qid": "t1", "query": EVAL_QUESTION})),
    )
    .unwrap();
    let h = start_with(
        Keys::All,
        &format!(
            r#"
[workflows]
dir = {dir:?}
[distillation]
eval_files = [{eval:?}]
[plugins.matrix]
min_similarity = -1.0
[[rag_models]]
name = "rag/docs"
model = "plain/gpt-test"
corpora = ["docs"]
k = 2
plugins = ["matrix", "playbook"]
"#,
            dir = dir.display().to_string(),
            eval = eval.display().to_string(),
        ),
    )
    .await;
    h.create_corpus("docs", DOCS).await;
    h
}

/// Asks the rag model and rates the answer; returns the answer text.
async fn ask_and_rate(h: &Harness, question: &str, rating: f64) -> String {
    let (status, body) = h
        .chat(&json!({"model": "rag/docs", "messages": user(question)}))
        .await;
    assert_eq!(status, 200, "{body}");
    let response = h
        .post("/v1/feedback", &json!({"id": body["id"], "rating": rating}))
        .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn distillation_exports_good_runs_and_the_firewall_keeps_eval_overlap_out() {
    let h = start_for_distillation(&[]).await;
    // Rated well, but it is the evaluation question pasted into a longer prompt.
    ask_and_rate(&h, &format!("Quick one: {EVAL_QUESTION} Thanks!"), 1.0).await;
    let good = "How do I rerun my tests whenever a file in the folder changes?";
    let good_answer = ask_and_rate(&h, good, 1.0).await;
    ask_and_rate(&h, "How hot should green tea water be?", -1.0).await;

    let response = h.post("/admin/distillation/export", &json!({})).await;
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["runs"], 3, "{report}");
    assert_eq!(report["accepted"], 2, "{report}");
    assert_eq!(report["rejected"], 1, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["excluded_contaminated"], 1, "{report}");
    assert_eq!(report["exclusions"][0]["kind"], "ngram", "{report}");
    assert_eq!(report["exported"], 1, "{report}");
    assert_eq!(report["eval_texts"], 1);

    // The export is SFT JSONL: the conversation as sent upstream, then the answer.
    let key = report["key"].as_str().unwrap();
    let text = h
        .client
        .get(h.url(&format!("/admin/objects/{key}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    let messages = lines[0]["messages"].as_array().unwrap();
    assert_eq!(
        messages[0]["role"], "system",
        "the retrieval context is kept"
    );
    assert_eq!(messages[1], json!({"role": "user", "content": good}));
    assert_eq!(
        messages[2],
        json!({"role": "assistant", "content": good_answer})
    );
    assert!(
        !text.contains("LaTeX engine?"),
        "the eval question never leaks"
    );
}

#[tokio::test]
async fn an_agents_turns_are_exported_whole_though_the_log_keeps_each_message_once() {
    let h = start_for_distillation(&[]).await;
    let filler = "Keep it short. ".repeat(40);
    let questions = [
        "How do I rerun my tests whenever a file in the folder changes?",
        "Does it also notice files created after it started?",
        "How hot should green tea water be while I wait?",
    ];
    let mut conversation =
        vec![json!({"role": "system", "content": format!("You answer in one line. {filler}")})];
    let mut conversations = Vec::new();
    for question in questions {
        conversation.push(json!({"role": "user", "content": format!("{question} {filler}")}));
        let (status, body) = h
            .chat(&json!({"model": "rag/docs", "messages": conversation}))
            .await;
        assert_eq!(status, 200, "{body}");
        let rated = h
            .post("/v1/feedback", &json!({"id": body["id"], "rating": 1.0}))
            .await;
        assert_eq!(rated.status(), 200);
        conversation.push(body["choices"][0]["message"].clone());
        conversations.push(conversation.clone());
    }

    let response = h.post("/admin/distillation/export", &json!({})).await;
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["exported"], 3, "{report}");
    let key = report["key"].as_str().unwrap();
    let text = String::from_utf8(h.state.store.objects().get(key).await.unwrap().to_vec()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (line, sent) in lines.iter().zip(&conversations) {
        // Each turn whole: the system prompt, the retrieval context the
        // matrix put after it, the turns so far and the answer.
        let exported = line["messages"].as_array().unwrap();
        assert_eq!(exported.len(), sent.len() + 1, "{line}");
        assert_eq!(exported[0], sent[0]);
        assert_eq!(exported[1]["role"], "system");
        assert!(
            exported[1]["content"].as_str().unwrap().contains("entr"),
            "{line}"
        );
        for (exported, sent) in exported[2..].iter().zip(&sent[1..]) {
            assert_eq!(exported["role"], sent["role"]);
            assert_eq!(exported["content"], sent["content"]);
        }
    }

    // The log holds the first question's message once, where the three
    // conversations hold it three times (the fake's answers quote it).
    let objects = h.state.store.objects();
    let mut logged = String::new();
    for segment in objects.list(lakehouse::observer::LOG).await.unwrap() {
        let bytes = objects.get(&segment.key).await.unwrap();
        logged.push_str(std::str::from_utf8(&bytes).unwrap());
    }
    let asked = format!("{{\"role\":\"user\",\"content\":\"{}", questions[0]);
    assert_eq!(logged.matches(&asked).count(), 1, "{logged}");
    assert_eq!(logged.matches("You answer in one line.").count(), 1);
    assert!(logged.contains("\"message_pieces\""));
}

const DISTILL_WITH_BROKEN_JUDGE: &str = r#"
[[nodes]]
id = "score"
mode = "distillation.score"
inputs = { judge = "plain/judge-mumbles" }
"#;

const DISTILL_WITH_JUDGE: &str = r#"
[[nodes]]
id = "score"
mode = "distillation.score"
inputs = { judge = "plain/judge-sharp", export = true }
"#;

#[tokio::test]
async fn a_failed_judge_makes_the_verdict_error_never_accept() {
    let h = start_for_distillation(&[
        ("broken.toml", DISTILL_WITH_BROKEN_JUDGE),
        ("judged.toml", DISTILL_WITH_JUDGE),
    ])
    .await;
    for (model, reply) in [
        ("judge-mumbles", "I would rather not say."),
        ("judge-sharp", "9"),
    ] {
        let response = h
            .client
            .post(h.fake.url("/_fake/canned"))
            .json(&json!({"model": model, "reply": reply}))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }
    ask_and_rate(&h, "How do I rerun my tests whenever a file changes?", 1.0).await;

    let run = run_workflow(&h, "broken").await;
    assert_eq!(run["verdict"], "error", "{run}");
    let output = &node(&run, "score")["output"];
    assert_eq!(output["errors"], 1, "{output}");
    assert_eq!(output["accepted"], 0, "{output}");
    assert_eq!(output["scores"][0]["verdict"], "error");
    assert!(
        output["scores"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("no score"),
        "{output}"
    );

    let run = run_workflow(&h, "judged").await;
    assert_eq!(run["verdict"], "accept", "{run}");
    let output = &node(&run, "score")["output"];
    assert_eq!(output["accepted"], 1, "{output}");
    assert_eq!(output["scores"][0]["signals"]["judge"], 0.9, "{output}");
    assert_eq!(output["exported"], 1, "{output}");
    // Judge calls are witnessed but never scored themselves.
    assert_eq!(output["runs"], 1, "{output}");
}

const DRIFT: &str = r#"
[[nodes]]
id = "calm"
mode = "drift.scorer"
inputs = { signal = "run_score", baseline = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95, 0.12, 0.22, 0.32, 0.42, 0.52, 0.62, 0.72, 0.82, 0.92, 0.18, 0.28, 0.38], recent = [0.11, 0.21, 0.31, 0.41, 0.51, 0.61, 0.71, 0.81, 0.91, 0.16, 0.26, 0.36, 0.46, 0.56, 0.66, 0.76, 0.86, 0.96, 0.13, 0.23, 0.33, 0.43, 0.53, 0.63, 0.73, 0.83, 0.93, 0.17, 0.27, 0.37] }

[[nodes]]
id = "shifted"
mode = "drift.scorer"
inputs = { signal = "run_score", baseline = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95, 0.12, 0.22, 0.32, 0.42, 0.52, 0.62, 0.72, 0.82, 0.92, 0.18, 0.28, 0.38], recent = [0.05, 0.06, 0.07, 0.08, 0.09, 0.1, 0.11, 0.12, 0.13, 0.14, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1, 0.11, 0.12, 0.13, 0.14, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1, 0.11, 0.12, 0.13, 0.14] }

[[nodes]]
id = "observed"
mode = "drift.scorer"
"#;

#[tokio::test]
async fn drift_is_flagged_on_a_shifted_distribution_only_and_exposed() {
    let h = start_with_workflows(&[("drift.toml", DRIFT)], "").await;
    let run = run_workflow(&h, "drift").await;
    let calm = &node(&run, "calm")["output"];
    assert_eq!(calm["judged"], true, "{calm}");
    assert_eq!(calm["drifted"], false, "{calm}");
    let shifted = &node(&run, "shifted")["output"];
    assert_eq!(shifted["drifted"], true, "{shifted}");
    assert!(shifted["psi"].as_f64().unwrap() > 0.2, "{shifted}");
    assert!(shifted["ks"].as_f64().unwrap() > 0.3, "{shifted}");
    // Without samples it compares the observer's windows (no chats yet: not judged).
    let observed = &node(&run, "observed")["output"];
    assert_eq!(
        observed["signals"].as_array().unwrap().len(),
        3,
        "{observed}"
    );
    assert_eq!(observed["drifted"], false);

    let report: Value = h.get_json("/admin/drift").await;
    assert_eq!(report["signals"][0]["signal"], "run_score");
    let metrics = h.metrics().await;
    for line in [
        "lakehouse_drift_psi{signal=\"run_score\"}",
        "lakehouse_drift_ks{signal=\"rating\"}",
        "lakehouse_drift_flagged{signal=\"retrieval_score\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} missing");
    }
}

const MATRIX: &str = r#"
[[nodes]]
id = "search"
mode = "matrix.search"
inputs = { query = "turn a Markdown file into a PDF", corpora = ["docs"], k = 3 }

[[nodes]]
id = "keep"
mode = "matrix.relevance"
depends_on = ["search"]
inputs = { hits = "$search.hits", k = 2 }

[[nodes]]
id = "strong"
mode = "matrix.downgrade"
depends_on = ["search"]
inputs = { model = "plain/gpt-test", hits = "$search.hits", k = 10 }

[[nodes]]
id = "weak"
mode = "matrix.downgrade"
depends_on = ["search"]
inputs = { model = "tier/local_fast", hits = "$search.hits", k = 10 }
"#;

#[tokio::test]
async fn matrix_modes_search_filter_and_gate_like_the_plugins() {
    let h = start_for_distillation(&[("matrix.toml", MATRIX)]).await;
    let run = run_workflow(&h, "matrix").await;
    assert_eq!(run["verdict"], "accept", "{run}");
    let hits = node(&run, "search")["output"]["hits"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(hits.len(), 3, "{run}");
    assert_eq!(hits[0]["id"], "md", "{run}");
    assert_eq!(hits[0]["corpus"], "docs");
    let kept = node(&run, "keep")["output"]["hits"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(kept.len(), 2);
    assert_eq!(kept[0]["id"], "md");
    // A strong model gets the reduced context (reduced_k = 3), a weak one all of it.
    let strong = &node(&run, "strong")["output"];
    assert_eq!(strong["context"], "reduced", "{strong}");
    assert_eq!(strong["k"], 3);
    let weak = &node(&run, "weak")["output"];
    assert_eq!(weak["context"], "full", "{weak}");
    assert_eq!(weak["model"], "ollama/qwen3:8b");
    assert_eq!(weak["k"], 10);
    assert_eq!(weak["hits"].as_array().unwrap().len(), 3);
}
