//! Starts a fake upstream and the real proxy app on port 0, wired together.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use lakehouse::config::Config;
use lakehouse_e2e::FakeUpstream;
use serde_json::{Value, json};

pub const TEST_KEY: &str = "sk-test-4f1e9c0b7d";

pub struct Harness {
    pub fake: FakeUpstream,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub secrets: PathBuf,
    /// Sending on it starts a graceful shutdown.
    pub shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    /// The server task; ends when the server has shut down.
    pub server: tokio::task::JoinHandle<std::io::Result<()>>,
    /// The state the server runs on (for in-process calls such as a review).
    pub state: lakehouse::SharedState,
    /// The config it was built from (to open the same store again).
    pub config: Config,
}

/// Which key files to write.
pub enum Keys {
    All,
    None,
}

pub async fn start() -> Harness {
    start_with(Keys::All, "").await
}

/// `extra_toml` is put into the generated config (e.g. `[server]` settings);
/// `{fake}` in it is the fake upstream's URL and `{secrets}` the key folder.
pub async fn start_with(keys: Keys, extra_toml: &str) -> Harness {
    let fake = FakeUpstream::start().await.expect("fake upstream starts");
    let secrets = std::env::temp_dir().join(format!(
        "lakehouse-e2e-{}",
        lakehouse_providers::openai::new_id("")
    ));
    let extra_toml = extra_toml
        .replace("{fake}", &fake.url(""))
        .replace("{secrets}", &secrets.display().to_string());
    std::fs::create_dir_all(&secrets).unwrap();
    if let Keys::All = keys {
        for (file, var) in [
            ("ollama_cloud.env", "OLLAMA_CLOUD_KEY"),
            ("openrouter.env", "OPENROUTER_API_KEY"),
            ("opencode.env", "OPENCODE_API_KEY"),
            ("kimi.env", "KIMI_API_KEY"),
            ("plain.env", "PLAIN_API_KEY"),
            ("slowpoke.env", "SLOWPOKE_API_KEY"),
            ("embeddings.env", "EMBEDDINGS_API_KEY"),
        ] {
            let path = secrets.join(file);
            std::fs::write(&path, format!("{var}={TEST_KEY}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
    let toml = format!(
        r#"
secrets_dir = "{secrets}"
{extra_toml}
[providers.ollama]
base_url = "{ollama}"
[providers.ollama_cloud]
base_url = "{ollama_cloud}"
[providers.openrouter]
base_url = "{openrouter}"
headers = {{ "X-Title" = "Lakehouse tests" }}
[providers.opencode]
base_url = "{zen}"
[providers.kimi]
base_url = "{kimi}"
[[providers.custom]]
name = "plain"
base_url = "{openai}"
key_file = "{secrets}/plain.env"
[[providers.custom]]
name = "slowpoke"
base_url = "{openai}"
key_file = "{secrets}/slowpoke.env"
read_timeout_ms = 300
[store]
backend = "local"
root = "{secrets}/data"
[models]
local_fast = "ollama/qwen3:8b"
frontier_review = "opencode/claude-sonnet-4-5"
weak_models = ["ollama/qwen3:8b"]
"#,
        secrets = secrets.display(),
        ollama = fake.url("/ollama"),
        ollama_cloud = fake.url("/ollama_cloud"),
        openrouter = fake.url("/openrouter/api/v1"),
        zen = fake.url("/zen/v1"),
        kimi = fake.url("/kimi/v1"),
        openai = fake.url("/openai/v1"),
    );
    let config = Config::parse(&toml, "test.toml").expect("test config is valid");
    let state = lakehouse::state_from_config(config.clone())
        .await
        .expect("state builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(lakehouse::serve(
        listener,
        lakehouse::app(state.clone()),
        async move {
            let _ = shutdown_rx.await;
        },
        lakehouse::server::ServeOptions {
            grace: Duration::from_secs(1),
            ..config.server.serve_options()
        },
    ));
    Harness {
        fake,
        addr,
        client: reqwest::Client::new(),
        secrets,
        shutdown: Some(shutdown_tx),
        server,
        state,
        config,
    }
}

impl Harness {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("proxy answers")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("proxy answers")
    }

    /// GETs `path`, asserts 200 and returns the JSON body.
    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.expect("JSON body")
    }

    /// GETs `/metrics`, asserts 200 and the Prometheus text format, and returns the text.
    pub async fn metrics(&self) -> String {
        let response = self.get("/metrics").await;
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .expect("ASCII content type");
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        response.text().await.expect("metrics text")
    }

    /// Creates corpus `name` (columns `id` and `text`) and ingests `jsonl` into it.
    pub async fn create_corpus(&self, name: &str, jsonl: &'static str) {
        let response = self
            .post(
                "/admin/corpora",
                &serde_json::json!({"name": name, "text_columns": ["text"], "id_column": "id"}),
            )
            .await;
        assert_eq!(
            response.status(),
            201,
            "{}",
            response.text().await.unwrap_or_default()
        );
        let response = self
            .client
            .post(self.url(&format!("/admin/corpora/{name}/ingest?format=jsonl")))
            .body(jsonl)
            .send()
            .await
            .expect("proxy answers");
        assert_eq!(
            response.status(),
            200,
            "{}",
            response.text().await.unwrap_or_default()
        );
    }

    pub async fn chat(&self, body: &Value) -> (u16, Value) {
        let response = self.post("/v1/chat/completions", body).await;
        let status = response.status().as_u16();
        let value = response.json::<Value>().await.expect("JSON body");
        (status, value)
    }

    /// Sends a streaming request and returns the status and the `data:` payloads in order.
    pub async fn stream(&self, body: &Value) -> (u16, Vec<String>) {
        let response = self.post("/v1/chat/completions", body).await;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, sse_data(&text))
    }

    /// The last request the fake received on a path ending with `suffix`.
    pub fn last_request(&self, suffix: &str) -> lakehouse_e2e::Recorded {
        self.fake
            .requests()
            .into_iter()
            .rev()
            .find(|r| r.path.ends_with(suffix))
            .unwrap_or_else(|| panic!("no request to {suffix}"))
    }
}

/// The `data:` payloads of an SSE body, comments skipped.
pub fn sse_data(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("data:")
                        .map(|d| d.strip_prefix(' ').unwrap_or(d))
                })
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

/// The value of one sample line `name{labels} value` in metrics `text`, or 0 when absent.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

pub fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

pub fn weather_tool() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    }}])
}
