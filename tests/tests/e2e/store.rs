//! The lakehouse store through the admin API and `/v1/embeddings`: objects,
//! corpora, ingest, SQL, search, restart. Every case runs on the local backend,
//! and on S3 too when `LAKEHOUSE_TEST_S3_ENDPOINT` names a running S3 server
//! (scripts/test.sh starts one).

use std::time::Duration;

use lakehouse::config::Config;
use serde_json::{Value, json};

/// A running app on a fresh store; `store_toml` is the `[store]` section.
struct StoreApp {
    base: String,
    client: reqwest::Client,
    config_text: String,
    _dir: std::path::PathBuf,
}

fn backends(dir: &std::path::Path, other_cap: u64) -> Vec<(String, String)> {
    let caps = format!("caps = {{ vectors_bytes = 4294967296, other_bytes = {other_cap} }}");
    let mut out = vec![(
        "local".to_owned(),
        format!(
            "[store]\nbackend = \"local\"\nroot = \"{}/data\"\n{caps}\n",
            dir.display()
        ),
    )];
    if let Ok(endpoint) = std::env::var("LAKEHOUSE_TEST_S3_ENDPOINT") {
        let bucket =
            std::env::var("LAKEHOUSE_TEST_S3_BUCKET").unwrap_or_else(|_| "lakehouse-test".into());
        let prefix = lakehouse_providers::openai::new_id("run-");
        out.push((
            "s3".to_owned(),
            format!(
                "[store]\nbackend = \"s3\"\nbucket = \"{bucket}\"\nprefix = \"{prefix}\"\nendpoint = \"{endpoint}\"\n\
                 region = \"us-east-1\"\ncache_dir = \"{}/cache\"\n{caps}\n",
                dir.display()
            ),
        ));
    }
    out
}

async fn start(config_text: &str, dir: std::path::PathBuf) -> StoreApp {
    let config = Config::parse(config_text, "store-test.toml").expect("valid config");
    let options = config.server.serve_options();
    let state = lakehouse::state_from_config(config)
        .await
        .expect("state builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(lakehouse::serve(
        listener,
        lakehouse::app(state),
        std::future::pending(),
        lakehouse::server::ServeOptions {
            grace: Duration::from_secs(1),
            ..options
        },
    ));
    StoreApp {
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        config_text: config_text.to_owned(),
        _dir: dir,
    }
}

async fn each_backend(other_cap: u64) -> Vec<(String, StoreApp)> {
    let mut apps = Vec::new();
    for (name, store_toml) in backends(&temp_dir(), other_cap) {
        let dir = temp_dir();
        let text = format!("[providers.ollama]\nenabled = false\n{store_toml}");
        apps.push((name, start(&text, dir).await));
    }
    apps
}

fn temp_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(lakehouse_providers::openai::new_id("lakehouse-store-"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl StoreApp {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn json(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.client.request(method, self.url(path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let response = req.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn upload(
        &self,
        corpus: &str,
        format: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(&format!("/admin/corpora/{corpus}/ingest?format={format}")))
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn sql(&self, sql: &str) -> (u16, Value) {
        self.json(
            reqwest::Method::POST,
            "/admin/query",
            Some(json!({"sql": sql})),
        )
        .await
    }
}

const ANIMALS_CSV: &str = "id,title,text\n\
1,Cats,Cats are small domestic felines that purr and chase mice.\n\
2,Rust,Rust is a systems programming language focused on safety.\n\
3,Bread,Sourdough bread is leavened with a fermented starter.\n\
4,Oslo,Oslo is the capital city of Norway.\n\
5,Dogs,Dogs are loyal animals that bark and fetch sticks.\n";

async fn create_docs(app: &StoreApp) {
    let (status, body) = app
        .json(
            reqwest::Method::POST,
            "/admin/corpora",
            Some(json!({"name": "docs", "text_columns": ["title", "text"], "id_column": "id"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn ingest_search_query_and_idempotent_register() {
    for (backend, app) in each_backend(256 * 1024 * 1024).await {
        create_docs(&app).await;
        let (status, report) = app.upload("docs", "csv", ANIMALS_CSV).await;
        assert_eq!(status, 200, "{backend}: {report}");
        assert_eq!(report["rows"], 5);
        assert_eq!(report["added"], true);
        assert_eq!(report["version"], 1);

        let (_, corpus) = app
            .json(reqwest::Method::GET, "/admin/corpora/docs", None)
            .await;
        assert_eq!(corpus["rows"], 5, "{backend}: {corpus}");
        assert_eq!(corpus["vectors"], 5, "{backend}");
        assert_eq!(corpus["files"].as_array().unwrap().len(), 1);
        let key = corpus["files"][0]["key"].as_str().unwrap().to_owned();
        assert!(
            key.starts_with("corpora/docs/") && key.ends_with(".parquet"),
            "{key}"
        );

        // Same content again: nothing changes.
        let (status, again) = app.upload("docs", "csv", ANIMALS_CSV).await;
        assert_eq!(status, 200);
        assert_eq!(again["added"], false, "{backend}: {again}");
        assert_eq!(again["version"], 1);

        let (status, hits) = app
            .json(
                reqwest::Method::POST,
                "/admin/corpora/docs/search",
                Some(json!({"query": "a pet that purrs", "k": 2})),
            )
            .await;
        assert_eq!(status, 200, "{backend}: {hits}");
        assert_eq!(hits["data"][0]["id"], "1", "{backend}: {hits}");
        assert_eq!(hits["data"][0]["row"]["title"], "Cats");
        assert!(
            hits["data"][0]["score"].as_f64().unwrap() > hits["data"][1]["score"].as_f64().unwrap()
        );
        for k in [0, 1001] {
            let (status, refused) = app
                .json(
                    reqwest::Method::POST,
                    "/admin/corpora/docs/search",
                    Some(json!({"query": "a pet that purrs", "k": k})),
                )
                .await;
            assert_eq!(status, 400, "{backend}: k={k}: {refused}");
            assert!(
                refused["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("k must be between 1 and 1000"),
                "{refused}"
            );
        }

        let (status, result) = app.sql("SELECT title FROM docs WHERE id = 4").await;
        assert_eq!(status, 200, "{backend}: {result}");
        assert_eq!(result["rows"], json!([{"title": "Oslo"}]));
        let (_, count) = app.sql("SELECT count(*) AS n FROM docs").await;
        assert_eq!(count["rows"][0]["n"], 5);

        // The stored Parquet file itself is an accepted upload format.
        let parquet = app
            .client
            .get(app.url(&format!("/admin/objects/{key}")))
            .send()
            .await
            .unwrap();
        assert_eq!(parquet.status().as_u16(), 200);
        let bytes = parquet.bytes().await.unwrap();
        let (status, _) = app
            .json(
                reqwest::Method::POST,
                "/admin/corpora",
                Some(json!({"name": "copy", "text_columns": ["text"]})),
            )
            .await;
        assert_eq!(status, 201);
        let (status, report) = app.upload("copy", "parquet", bytes).await;
        assert_eq!(status, 200, "{backend}: {report}");
        assert_eq!(report["rows"], 5);

        // JSONL too.
        let (status, _) = app
            .json(
                reqwest::Method::POST,
                "/admin/corpora",
                Some(json!({"name": "notes", "text_columns": ["body"], "id_column": "key"})),
            )
            .await;
        assert_eq!(status, 201);
        let jsonl = "{\"key\":\"a\",\"body\":\"meeting notes about the budget\"}\n{\"key\":\"b\",\"body\":\"a recipe for pancakes\"}\n";
        let (status, report) = app.upload("notes", "jsonl", jsonl).await;
        assert_eq!(status, 200, "{backend}: {report}");
        let (_, listed) = app.json(reqwest::Method::GET, "/admin/corpora", None).await;
        assert_eq!(listed["data"].as_array().unwrap().len(), 3, "{backend}");

        // An id names one row: repeated, blank or already stored ids are refused.
        for (csv, says) in [
            (
                "id,title,text
7,A,one
7,B,two
8,C,three
",
                "\"7\" on 2 rows",
            ),
            (
                "id,title,text
9,A,one
,B,no id
",
                "1 row(s) without an id",
            ),
            (
                "id,title,text
9,A,one
1,B,Cats again
",
                "already has rows with ids \"1\"",
            ),
        ] {
            let (status, refused) = app.upload("docs", "csv", csv).await;
            assert_eq!(status, 400, "{backend}: {csv}: {refused}");
            let message = refused["error"]["message"].as_str().unwrap();
            assert!(message.contains(says), "{backend}: {message}");
        }
        let (_, corpus) = app
            .json(reqwest::Method::GET, "/admin/corpora/docs", None)
            .await;
        assert_eq!(corpus["rows"], 5, "{backend}: nothing was added: {corpus}");
        assert_eq!(corpus["version"], 1, "{backend}: {corpus}");
    }
}

#[tokio::test]
async fn concurrent_ingests_into_one_corpus_lose_no_update() {
    for (backend, app) in each_backend(256 * 1024 * 1024).await {
        create_docs(&app).await;
        let uploads = (1..=6).map(|n| {
            let csv = format!(
                "id,title,text\n{n}0,Part {n},First row of upload {n}.\n{n}1,More {n},Second row of upload {n}.\n"
            );
            let app = &app;
            async move { app.upload("docs", "csv", csv).await }
        });
        for (status, report) in futures::future::join_all(uploads).await {
            assert_eq!(status, 200, "{backend}: {report}");
        }
        let (_, corpus) = app
            .json(reqwest::Method::GET, "/admin/corpora/docs", None)
            .await;
        assert_eq!(corpus["version"], 6, "{backend}: {corpus}");
        assert_eq!(corpus["files"].as_array().unwrap().len(), 6, "{backend}");
        assert_eq!(corpus["rows"], 12, "{backend}");
        assert_eq!(corpus["vectors"], 12, "{backend}");
        let (_, count) = app.sql("SELECT count(DISTINCT id) AS n FROM docs").await;
        assert_eq!(count["rows"][0]["n"], 12, "{backend}: {count}");
    }
}

/// Each upload's types are sniffed from its own values: an append whose ids
/// read as text is written as the corpus's numbers, and one that cannot be is
/// refused naming the cast, leaving the corpus as it was.
#[tokio::test]
async fn an_append_read_with_other_types_is_cast_to_the_corpus_columns() {
    for (backend, app) in each_backend(64 * 1024).await {
        create_docs(&app).await;
        let (status, body) = app.upload("docs", "csv", ANIMALS_CSV).await;
        assert_eq!(status, 200, "{backend}: {body}");
        let quoted_ids =
            "{\"text\": \"Moose roam Norway.\", \"id\": \"6\", \"title\": \"Moose\"}\n";
        let (status, body) = app.upload("docs", "jsonl", quoted_ids).await;
        assert_eq!(status, 200, "{backend}: {body}");
        let (_, rows) = app
            .sql("SELECT typeof(id) AS t, title FROM docs WHERE id = 6")
            .await;
        assert_eq!(
            rows["rows"],
            json!([{"t": "BIGINT", "title": "Moose"}]),
            "{backend}"
        );

        let words = "{\"id\": \"x7\", \"title\": \"Elk\", \"text\": \"Elk too.\"}\n";
        let (status, err) = app.upload("docs", "jsonl", words).await;
        assert_eq!(status, 400, "{backend}: {err}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("\"x7\"") && message.contains("id as BIGINT (it reads as VARCHAR)"),
            "{backend}: {message}"
        );
        let (_, count) = app.sql("SELECT count(*) AS n FROM docs").await;
        assert_eq!(count["rows"][0]["n"], 6, "{backend}");
    }
}

#[tokio::test]
async fn bad_input_is_refused_and_leaves_data_intact() {
    for (backend, app) in each_backend(64 * 1024).await {
        create_docs(&app).await;
        let (status, _) = app.upload("docs", "csv", ANIMALS_CSV).await;
        assert_eq!(status, 200);

        let malformed = "id,title,text\n6,Broken,\"unterminated quote\n7,x\n8,a,b,c,d,e\n";
        let (status, err) = app.upload("docs", "csv", malformed).await;
        assert_eq!(status, 400, "{backend}: {err}");
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains("line"),
            "{backend}: {err}"
        );

        let wrong_columns = "ident,body\n1,hello\n";
        let (status, err) = app.upload("docs", "csv", wrong_columns).await;
        assert_eq!(status, 400, "{backend}: {err}");
        assert!(
            err["error"]["message"].as_str().unwrap().contains("title"),
            "{err}"
        );

        let (status, err) = app
            .upload(
                "docs",
                "jsonl",
                "{\"id\": 1, \"title\": \"a\"}\n{\"id\": 2, \"title\": \n",
            )
            .await;
        assert_eq!(status, 400, "{backend}: {err}");
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("JSONL line 2: EOF while parsing"),
            "{backend}: {err}"
        );

        let big = format!("id,title,text\n{}", "9,x,y\n".repeat(20_000));
        let (status, err) = app.upload("docs", "csv", big).await;
        assert_eq!(status, 413, "{backend}: {err}");

        let (status, _) = app.upload("nothere", "csv", ANIMALS_CSV).await;
        assert_eq!(status, 404);

        for sql in [
            "SELECT * FROM read_csv('/etc/passwd')",
            "SELECT * FROM read_text('/etc/hostname')",
            "COPY docs TO '/tmp/stolen.csv'",
            "ATTACH '/tmp/x.db' AS x",
            "INSTALL httpfs",
            "LOAD httpfs",
            "SET enable_external_access = true",
            "CREATE TABLE t AS SELECT 1",
            "DROP VIEW docs",
            "SELECT 1; SELECT 2",
            "SELEC nonsense",
        ] {
            let (status, err) = app.sql(sql).await;
            assert_eq!(status, 400, "{backend}: {sql} → {err}");
            assert_eq!(err["error"].as_object().unwrap().len(), 4);
        }

        // (The HTTP client itself resolves literal `..` segments, so traversal arrives encoded.)
        for key in [
            "..%2Fsecrets",
            "a%2F..%2Fb",
            "bad%0akey",
            "a//b",
            "%2Fetc%2Fpasswd",
        ] {
            let response = app
                .client
                .put(app.url(&format!("/admin/objects/{key}")))
                .body("x")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 400, "{backend}: {key}");
        }
        let response = app
            .client
            .put(app.url("/admin/objects/big/blob.bin"))
            .body(vec![0u8; 70 * 1024])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 413, "{backend}");
        let response = app
            .client
            .get(app.url("/admin/objects/big/blob.bin"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status().as_u16(),
            404,
            "{backend}: nothing was written"
        );

        // Everything stored before is still there and queryable.
        let (status, count) = app.sql("SELECT count(*) AS n FROM docs").await;
        assert_eq!(status, 200, "{backend}: {count}");
        assert_eq!(count["rows"][0]["n"], 5, "{backend}");
        let (_, corpus) = app
            .json(reqwest::Method::GET, "/admin/corpora/docs", None)
            .await;
        assert_eq!(corpus["version"], 1, "{backend}: {corpus}");
        assert_eq!(corpus["vectors"], 5);
    }
}

#[tokio::test]
async fn objects_api_round_trips() {
    for (backend, app) in each_backend(1024 * 1024).await {
        let response = app
            .client
            .put(app.url("/admin/objects/notes/a.txt"))
            .body("hello")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201, "{backend}");
        let body = app
            .client
            .get(app.url("/admin/objects/notes/a.txt"))
            .send()
            .await
            .unwrap();
        assert_eq!(body.text().await.unwrap(), "hello");
        let (_, listed) = app
            .json(reqwest::Method::GET, "/admin/objects?prefix=notes", None)
            .await;
        assert_eq!(
            listed["data"][0]["key"], "notes/a.txt",
            "{backend}: {listed}"
        );
        assert_eq!(listed["data"][0]["size"], 5);
        let (status, _) = app
            .json(reqwest::Method::DELETE, "/admin/objects/notes/a.txt", None)
            .await;
        assert_eq!(status, 200);
        let gone = app
            .client
            .get(app.url("/admin/objects/notes/a.txt"))
            .send()
            .await
            .unwrap();
        assert_eq!(gone.status().as_u16(), 404, "{backend}");
        let message = gone.json::<Value>().await.unwrap()["error"]["message"].clone();
        assert_eq!(
            message, "object \"notes/a.txt\" not found",
            "{backend}: named by its key"
        );

        // A folder is no object: not found (not a store failure a client would
        // retry). S3 deletes are idempotent: only the local backend is asked to
        // delete one.
        app.client
            .put(app.url("/admin/objects/notes/deep/b.txt"))
            .body("b")
            .send()
            .await
            .unwrap();
        let methods = if backend == "local" {
            vec![reqwest::Method::GET, reqwest::Method::DELETE]
        } else {
            vec![reqwest::Method::GET]
        };
        for method in methods {
            let (status, body) = app
                .json(method.clone(), "/admin/objects/notes/deep", None)
                .await;
            assert_eq!(status, 404, "{backend} {method}: {body}");
        }
    }
}

#[tokio::test]
async fn memory_compaction_waits_for_another_replicas_lease() {
    for (backend, app) in each_backend(1024 * 1024).await {
        let (status, trace) = app
            .json(
                reqwest::Method::POST,
                "/admin/memory/traces",
                Some(json!({"namespace": "ops", "text": "Restart the indexer after a deploy."})),
            )
            .await;
        assert_eq!(status, 201, "{backend}: {trace}");
        // Another replica holds the pathway log's lease (a create-if-absent
        // object); this one's compaction is refused and changes nothing.
        let lease = format!(
            "{{\"since_ms\":{}}}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
        );
        let held = app
            .client
            .put(app.url("/admin/objects/memory/pathway.compacting"))
            .body(lease)
            .send()
            .await
            .unwrap();
        assert_eq!(held.status().as_u16(), 201, "{backend}");
        let (status, refused) = app
            .json(reqwest::Method::POST, "/admin/memory/compact", None)
            .await;
        assert_eq!(status, 409, "{backend}: {refused}");
        assert_eq!(refused["error"]["code"], "conflict", "{backend}");
        let (_, listed) = app
            .json(
                reqwest::Method::GET,
                "/admin/objects?prefix=memory/pathway",
                None,
            )
            .await;
        assert_eq!(
            listed["data"].as_array().unwrap().len(),
            1,
            "{backend}: {listed}"
        );

        // Once it is given back, the compaction runs and keeps the trace.
        let (status, _) = app
            .json(
                reqwest::Method::DELETE,
                "/admin/objects/memory/pathway.compacting",
                None,
            )
            .await;
        assert_eq!(status, 200, "{backend}");
        let (status, report) = app
            .json(reqwest::Method::POST, "/admin/memory/compact", None)
            .await;
        assert_eq!(status, 200, "{backend}: {report}");
        assert_eq!(report["pathway"]["records"], 1, "{backend}: {report}");
        assert_eq!(
            report["pathway"]["segments_removed"], 1,
            "{backend}: {report}"
        );
        let path = format!("/admin/memory/traces/{}", trace["id"].as_str().unwrap());
        let (status, kept) = app.json(reqwest::Method::GET, &path, None).await;
        assert_eq!(status, 200, "{backend}: {kept}");
        assert_eq!(
            kept["text"], "Restart the indexer after a deploy.",
            "{backend}: {kept}"
        );
        // The lease is gone with the compaction.
        let (_, listed) = app
            .json(reqwest::Method::GET, "/admin/objects?prefix=memory", None)
            .await;
        let keys: Vec<&str> = listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o["key"].as_str())
            .collect();
        assert!(
            !keys.iter().any(|k| k.ends_with(".compacting")),
            "{backend}: {keys:?}"
        );
    }
}

#[tokio::test]
async fn restart_brings_back_corpora_and_indexes() {
    for (backend, app) in each_backend(256 * 1024 * 1024).await {
        create_docs(&app).await;
        let (status, _) = app.upload("docs", "csv", ANIMALS_CSV).await;
        assert_eq!(status, 200);
        // A second process on the same store, as after a restart.
        let again = start(&app.config_text, temp_dir()).await;
        let (_, corpus) = again
            .json(reqwest::Method::GET, "/admin/corpora/docs", None)
            .await;
        assert_eq!(corpus["rows"], 5, "{backend}: {corpus}");
        assert_eq!(corpus["vectors"], 5, "{backend}: index loaded at start");
        let (status, hits) = again
            .json(
                reqwest::Method::POST,
                "/admin/corpora/docs/search",
                Some(json!({"query": "capital of Norway", "k": 1})),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(hits["data"][0]["id"], "4", "{backend}: {hits}");
        // Deleting removes it everywhere.
        let (status, _) = again
            .json(reqwest::Method::DELETE, "/admin/corpora/docs", None)
            .await;
        assert_eq!(status, 200);
        let (status, _) = again
            .json(reqwest::Method::GET, "/admin/corpora/docs", None)
            .await;
        assert_eq!(status, 404);
        let (_, objects) = again
            .json(
                reqwest::Method::GET,
                "/admin/objects?prefix=corpora/docs",
                None,
            )
            .await;
        assert_eq!(objects["data"], json!([]), "{backend}");
    }
}

#[tokio::test]
async fn embeddings_dimensions_reach_the_upstreams_that_shorten_vectors() {
    let app = crate::common::start_with(
        crate::common::Keys::All,
        r#"
[embeddings]
ollama_models = ["nomic-embed-text", "fixed-embed"]
[[embeddings.openai]]
name = "oai"
base_url = "{fake}/openai/v1"
model = "text-embedding-3-small"
key_file = "{secrets}/embeddings.env"
"#,
    )
    .await;
    let embed = |body: Value| {
        let app = &app;
        async move {
            let response = app.post("/v1/embeddings", &body).await;
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let widths = |answer: &Value| -> Vec<usize> {
        answer["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["embedding"].as_array().unwrap().len())
            .collect()
    };

    // OpenAI-compatible: forwarded, and absent when the caller did not set it.
    let (status, answer) = embed(json!({"model": "oai", "input": ["hello", "world"], "dimensions": 8, "encoding_format": "float"})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(widths(&answer), [8, 8]);
    assert_eq!(app.last_request("/v1/embeddings").body["dimensions"], 8);
    let (_, answer) =
        embed(json!({"model": "oai", "input": "hello", "encoding_format": "float"})).await;
    assert_eq!(widths(&answer), [16]);
    let sent = app.last_request("/v1/embeddings").body;
    assert!(sent.get("dimensions").is_none(), "{sent}");

    // Ollama's /api/embed takes it too.
    let (status, answer) = embed(json!({"model": "ollama/nomic-embed-text", "input": "hello", "dimensions": 4, "encoding_format": "float"})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(widths(&answer), [4]);
    assert_eq!(app.last_request("/api/embed").body["dimensions"], 4);

    // The upstream's refusal is the caller's 400.
    let (status, answer) = embed(json!({"model": "oai", "input": "hello", "dimensions": 32})).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("dimensions must be between"),
        "{answer}"
    );

    // An upstream that ignores it: an error, never vectors of the wrong width.
    let (status, answer) =
        embed(json!({"model": "ollama/fixed-embed", "input": "hello", "dimensions": 4})).await;
    assert_eq!(status, 502, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("answered 16 dimensions when asked for 4"),
        "{answer}"
    );

    // The local embedder has one width.
    let (status, answer) = embed(
        json!({"model": "local", "input": "hello", "dimensions": 384, "encoding_format": "float"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(widths(&answer), [384]);
    for dimensions in [0, 256] {
        let (status, answer) =
            embed(json!({"model": "local", "input": "hello", "dimensions": dimensions})).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["param"], "dimensions");
    }
}

#[tokio::test]
async fn embeddings_in_the_openai_shape() {
    for (_, app) in each_backend(1024 * 1024).await {
        let (status, float) = app
            .json(
                reqwest::Method::POST,
                "/v1/embeddings",
                Some(json!({"model": "local", "input": ["hello world", "goodbye"], "encoding_format": "float"})),
            )
            .await;
        assert_eq!(status, 200, "{float}");
        assert_eq!(float["object"], "list");
        assert_eq!(float["data"][1]["index"], 1);
        let vector: Vec<f32> =
            serde_json::from_value(float["data"][0]["embedding"].clone()).unwrap();
        assert_eq!(vector.len(), 384);
        let (_, b64) = app
            .json(
                reqwest::Method::POST,
                "/v1/embeddings",
                Some(
                    json!({"model": "local", "input": "hello world", "encoding_format": "base64"}),
                ),
            )
            .await;
        let encoded = b64["data"][0]["embedding"].as_str().unwrap();
        assert_eq!(encoded.len(), 2048, "384 little-endian f32s, base64");
        assert_eq!(
            encoded,
            lakehouse::routes::embeddings::f32_base64(&vector),
            "same vector both ways"
        );
        for (bad, status) in [
            (json!({"model": "local", "input": ""}), 400),
            (json!({"model": "local", "input": []}), 400),
            (json!({"model": "local", "input": [[1, 2, 3]]}), 400),
            (
                json!({"model": "local", "input": "x", "dimensions": 256}),
                400,
            ),
            (
                json!({"model": "local", "input": "x", "encoding_format": "hex"}),
                400,
            ),
            (json!({"model": "nope", "input": "x"}), 404),
        ] {
            let (got, body) = app
                .json(reqwest::Method::POST, "/v1/embeddings", Some(bad.clone()))
                .await;
            assert_eq!(got, status, "{bad} → {body}");
        }
    }
}
