//! `lakehouse.toml`: strict, validated at start.
//!
//! Every struct denies unknown keys, so a typo fails the start instead of being
//! ignored; every error names the file, the key and the reason.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lakehouse_plugins::config::{PluginsConfig, RagModel};

pub use crate::auth::AuthConfig;
use lakehouse_providers::router::{
    BUILTIN_PROVIDERS, KIMI, OLLAMA, OLLAMA_CLOUD, OPENCODE, OPENROUTER,
};
use lakehouse_retrieval::duck::QueryLimits;
use lakehouse_retrieval::objects::StoreConfig;
use serde::Deserialize;

/// A config that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("config error in {file}: {key}: {reason}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub reason: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    /// Folder of `<provider>.env` key files, relative to the config file.
    #[serde(default = "default_secrets_dir")]
    pub secrets_dir: PathBuf,
    #[serde(default)]
    pub providers: ProvidersConfig,
    #[serde(default)]
    pub models: ModelTiers,
    /// Where the lakehouse store keeps its objects.
    #[serde(default)]
    pub store: StoreConfig,
    /// Limits on `/admin/query` and `lakehouse query`.
    #[serde(default)]
    pub query: QueryLimits,
    #[serde(default)]
    pub embeddings: EmbeddingsConfig,
    /// The plugins run around every chat and their settings.
    #[serde(default)]
    pub plugins: PluginsConfig,
    /// Retrieval-augmented virtual models, used as `model = "rag/<name>"`.
    #[serde(default)]
    pub rag_models: Vec<RagModel>,
    /// `/v1/fanout` and `lakehouse scrum`.
    #[serde(default)]
    pub fanout: FanoutConfig,
    /// Bearer tokens, scopes, IP allowlist and per-token rate limits.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Scoring witnessed chats and exporting the good ones as SFT data.
    #[serde(default)]
    pub distillation: DistillationConfig,
    /// Drift of run scores, ratings and retrieval scores between two windows.
    #[serde(default)]
    pub drift: DriftConfig,
    /// Workflow files (`lakehouse workflow run`, `/admin/workflows`).
    #[serde(default)]
    pub workflows: WorkflowsConfig,
    /// The file this config came from, for messages.
    #[serde(skip)]
    pub file: String,
}

/// `[distillation]`: what is captured, how runs are scored, what is never exported.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillationConfig {
    /// Keep each chat's messages and answer with its witnessed event.
    #[serde(default = "default_true")]
    pub capture: bool,
    /// Runs scoring at least this (0..1) are accepted for export.
    #[serde(default = "default_accept_score")]
    pub accept_score: f64,
    /// Weights of the signals in a run's score (renormalised over those present).
    #[serde(default = "default_rating_weight")]
    pub rating_weight: f64,
    #[serde(default = "default_judge_weight")]
    pub judge_weight: f64,
    #[serde(default = "default_retrieval_weight")]
    pub retrieval_weight: f64,
    /// Evaluation sets (JSONL with a `query`, `text`, `question` or `prompt`
    /// field per line, or plain text lines) no export may overlap, e.g. the
    /// lift harness's `test_queries.jsonl`. Relative to the config file.
    #[serde(default)]
    pub eval_files: Vec<PathBuf>,
    /// Corpora in the store holding evaluation text (all their text columns).
    #[serde(default)]
    pub eval_corpora: Vec<String>,
    /// Word n-gram length of the overlap check.
    #[serde(default = "default_ngram")]
    pub ngram: usize,
    /// A prompt whose n-grams are at least this share found in an eval set is excluded.
    #[serde(default = "default_max_overlap")]
    pub max_overlap: f64,
}

fn default_true() -> bool {
    true
}
fn default_accept_score() -> f64 {
    0.7
}
fn default_rating_weight() -> f64 {
    0.6
}
fn default_judge_weight() -> f64 {
    0.3
}
fn default_retrieval_weight() -> f64 {
    0.1
}
fn default_ngram() -> usize {
    5
}
fn default_max_overlap() -> f64 {
    0.5
}

impl Default for DistillationConfig {
    fn default() -> Self {
        Self {
            capture: true,
            accept_score: default_accept_score(),
            rating_weight: default_rating_weight(),
            judge_weight: default_judge_weight(),
            retrieval_weight: default_retrieval_weight(),
            eval_files: Vec::new(),
            eval_corpora: Vec::new(),
            ngram: default_ngram(),
            max_overlap: default_max_overlap(),
        }
    }
}

/// `[drift]`: the two windows compared and the thresholds that flag drift.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftConfig {
    /// The recent window: the last this many seconds.
    #[serde(default = "default_recent_secs")]
    pub recent_secs: u64,
    /// The baseline window: this many seconds before the recent one.
    #[serde(default = "default_baseline_secs")]
    pub baseline_secs: u64,
    /// Population stability index at or above which a signal has drifted.
    #[serde(default = "default_psi_threshold")]
    pub psi_threshold: f64,
    /// Kolmogorov-Smirnov statistic at or above which a signal has drifted.
    #[serde(default = "default_ks_threshold")]
    pub ks_threshold: f64,
    /// Fewer samples than this in either window: not judged.
    #[serde(default = "default_min_samples")]
    pub min_samples: usize,
}

fn default_recent_secs() -> u64 {
    3600
}
fn default_baseline_secs() -> u64 {
    86_400
}
fn default_psi_threshold() -> f64 {
    0.2
}
fn default_ks_threshold() -> f64 {
    0.3
}
fn default_min_samples() -> usize {
    30
}

impl Default for DriftConfig {
    fn default() -> Self {
        Self {
            recent_secs: default_recent_secs(),
            baseline_secs: default_baseline_secs(),
            psi_threshold: default_psi_threshold(),
            ks_threshold: default_ks_threshold(),
            min_samples: default_min_samples(),
        }
    }
}

/// `[workflows]`: where workflow files are loaded from at start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowsConfig {
    /// Folder of `<name>.toml` workflows, relative to the config file; absent is fine.
    #[serde(default = "default_workflows_dir")]
    pub dir: PathBuf,
}

fn default_workflows_dir() -> PathBuf {
    PathBuf::from("workflows")
}

impl Default for WorkflowsConfig {
    fn default() -> Self {
        Self {
            dir: default_workflows_dir(),
        }
    }
}

/// Limits of one multi-model fan-out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FanoutConfig {
    /// Per-model time limit when the request sets none (`timeout_ms`).
    #[serde(default = "default_fanout_timeout_secs")]
    pub timeout_secs: u64,
    /// Most models one fan-out may name.
    #[serde(default = "default_fanout_max_models")]
    pub max_models: usize,
}

fn default_fanout_timeout_secs() -> u64 {
    120
}
fn default_fanout_max_models() -> usize {
    8
}

impl Default for FanoutConfig {
    fn default() -> Self {
        Self {
            timeout_secs: default_fanout_timeout_secs(),
            max_models: default_fanout_max_models(),
        }
    }
}

/// Embedders besides the built-in offline `local` one, and their cache.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsConfig {
    /// Size bound of the (embedder, text) → vector cache.
    #[serde(default = "default_cache_mb")]
    pub cache_mb: u64,
    /// Models served by the `ollama` provider's `/api/embed`, used as `ollama/<model>`.
    #[serde(default)]
    pub ollama_models: Vec<String>,
    /// OpenAI-compatible `/embeddings` endpoints, used by their `name`.
    #[serde(default)]
    pub openai: Vec<OpenAiEmbedderConfig>,
}

fn default_cache_mb() -> u64 {
    64
}

impl Default for EmbeddingsConfig {
    fn default() -> Self {
        Self {
            cache_mb: default_cache_mb(),
            ollama_models: Vec::new(),
            openai: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiEmbedderConfig {
    pub name: String,
    pub base_url: String,
    pub model: String,
    /// Key file holding `EMBEDDINGS_API_KEY`; none means no auth.
    pub key_file: Option<PathBuf>,
}

fn default_secrets_dir() -> PathBuf {
    PathBuf::from("secrets")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Largest accepted request body.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// How long in-flight requests may run after SIGINT/SIGTERM.
    #[serde(default = "default_shutdown_grace_secs")]
    pub shutdown_grace_secs: u64,
    /// Interval of `: keep-alive` comments on quiet streams.
    #[serde(default = "default_keep_alive_secs")]
    pub keep_alive_secs: u64,
    /// Async worker threads; 0 means one per core, 1 runs everything on one
    /// thread (a current-thread runtime).
    #[serde(default)]
    pub worker_threads: usize,
    /// With one worker, how long at most it keeps polling for I/O when it
    /// runs out of work, before it sleeps; adaptive, see [`crate::busy_poll`].
    /// 0 turns polling off.
    #[serde(default = "default_busy_poll_us")]
    pub busy_poll_us: u64,
    /// Chats kept in memory for `/admin/requests` and the console.
    #[serde(default = "default_recent_requests")]
    pub recent_requests: usize,
    /// Requests in flight at once; past it, 503 with `Retry-After` (load shedding).
    #[serde(default = "default_max_concurrent_requests")]
    pub max_concurrent_requests: usize,
    /// Most messages one chat may carry.
    #[serde(default = "default_max_messages")]
    pub max_messages: usize,
    /// Time a client has to send a request body (slow uploads are cut).
    #[serde(default = "default_body_read_timeout_secs")]
    pub body_read_timeout_secs: u64,
    /// Time a client has to send a request head once connected or between
    /// keep-alive requests (slowloris clients and idle connections are closed).
    #[serde(default = "default_header_read_timeout_secs")]
    pub header_read_timeout_secs: u64,
    /// Days the observer log keeps a chat; 0 keeps every chat.
    #[serde(default)]
    pub observer_retention_days: u64,
}

fn default_max_concurrent_requests() -> usize {
    1024
}
fn default_max_messages() -> usize {
    2048
}
fn default_body_read_timeout_secs() -> u64 {
    60
}
fn default_header_read_timeout_secs() -> u64 {
    30
}

/// A century: more is a typo, and days in seconds must not overflow.
const MAX_RETENTION_DAYS: u64 = 36_500;

fn default_busy_poll_us() -> u64 {
    200
}

fn default_recent_requests() -> usize {
    1000
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 3110))
}
fn default_max_body_bytes() -> usize {
    8 * 1024 * 1024
}
fn default_shutdown_grace_secs() -> u64 {
    30
}
fn default_keep_alive_secs() -> u64 {
    15
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            max_body_bytes: default_max_body_bytes(),
            shutdown_grace_secs: default_shutdown_grace_secs(),
            keep_alive_secs: default_keep_alive_secs(),
            worker_threads: 0,
            busy_poll_us: default_busy_poll_us(),
            recent_requests: default_recent_requests(),
            observer_retention_days: 0,
            max_concurrent_requests: default_max_concurrent_requests(),
            max_messages: default_max_messages(),
            body_read_timeout_secs: default_body_read_timeout_secs(),
            header_read_timeout_secs: default_header_read_timeout_secs(),
        }
    }
}

impl ServerConfig {
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// How long the observer log keeps a chat, when it does not keep them all.
    pub fn observer_retention(&self) -> Option<Duration> {
        (self.observer_retention_days > 0)
            .then(|| Duration::from_secs(self.observer_retention_days * 86_400))
    }

    /// How long a stream may stay quiet before a keep-alive comment (at least 1 s).
    pub fn keep_alive(&self) -> Duration {
        Duration::from_secs(self.keep_alive_secs.max(1))
    }

    /// The connection limits and shutdown budget `serve` applies.
    pub fn serve_options(&self) -> crate::server::ServeOptions {
        crate::server::ServeOptions {
            grace: self.shutdown_grace(),
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
        }
    }
}

/// The five built-in providers plus any OpenAI-compatible ones declared here.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvidersConfig {
    #[serde(default)]
    pub ollama: ProviderConfig,
    #[serde(default)]
    pub ollama_cloud: ProviderConfig,
    #[serde(default)]
    pub openrouter: ProviderConfig,
    #[serde(default)]
    pub opencode: ProviderConfig,
    #[serde(default)]
    pub kimi: ProviderConfig,
    /// Extra OpenAI-compatible upstreams, routed by `<name>/<model>`.
    #[serde(default)]
    pub custom: Vec<CustomProviderConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// `false` leaves the provider unregistered.
    #[serde(default = "yes")]
    pub enabled: bool,
    pub base_url: Option<String>,
    /// Key file; default `<secrets_dir>/<provider>.env`.
    pub key_file: Option<PathBuf>,
    pub connect_timeout_ms: Option<u64>,
    pub read_timeout_ms: Option<u64>,
    /// Extra headers on every upstream request (OpenRouter's `X-Title`, ...).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomProviderConfig {
    pub name: String,
    pub base_url: String,
    /// Key file; none means the upstream needs no key.
    pub key_file: Option<PathBuf>,
    /// Variable read from the key file; default `<NAME>_API_KEY`.
    pub key_var: Option<String>,
    pub connect_timeout_ms: Option<u64>,
    pub read_timeout_ms: Option<u64>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// The `[models]` tier registry; a tier is used as a model id with `tier/<name>`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelTiers {
    pub local_fast: Option<String>,
    pub local_judge: Option<String>,
    pub cloud_judge: Option<String>,
    pub cloud_review: Option<String>,
    pub frontier_review: Option<String>,
    pub frontier_arch: Option<String>,
    pub frontier_free: Option<String>,
    /// Models that get the full retrieval context (downgrade gate).
    #[serde(default)]
    pub weak_models: Vec<String>,
}

impl ModelTiers {
    pub const NAMES: [&'static str; 7] = [
        "local_fast",
        "local_judge",
        "cloud_judge",
        "cloud_review",
        "frontier_review",
        "frontier_arch",
        "frontier_free",
    ];

    /// The model a tier names, if the tier exists and is set.
    pub fn get(&self, tier: &str) -> Option<&str> {
        match tier {
            "local_fast" => self.local_fast.as_deref(),
            "local_judge" => self.local_judge.as_deref(),
            "cloud_judge" => self.cloud_judge.as_deref(),
            "cloud_review" => self.cloud_review.as_deref(),
            "frontier_review" => self.frontier_review.as_deref(),
            "frontier_arch" => self.frontier_arch.as_deref(),
            "frontier_free" => self.frontier_free.as_deref(),
            _ => None,
        }
    }

    /// `(tier, model)` for every tier that is set.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        Self::NAMES
            .into_iter()
            .filter_map(|name| self.get(name).map(|m| (name, m)))
    }
}

/// What the registry needs to know about one upstream.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    pub name: String,
    pub enabled: bool,
    pub base_url: String,
    /// `None`: the upstream needs no key.
    pub key: Option<KeySource>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct KeySource {
    pub file: PathBuf,
    pub var: String,
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: "(file)".into(),
            reason: format!("cannot read: {e}"),
        })?;
        let mut config = Self::parse(&text, &file)?;
        // Relative paths in the file are relative to the file, not to the working directory.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            config.secrets_dir = dir.join(&config.secrets_dir);
            match &mut config.store {
                StoreConfig::Local { root, .. } => *root = dir.join(&*root),
                StoreConfig::S3 { cache_dir, .. } => *cache_dir = dir.join(&*cache_dir),
            }
            for custom in &mut config.providers.custom {
                if let Some(f) = &custom.key_file {
                    custom.key_file = Some(dir.join(f));
                }
            }
            for p in config.builtin_mut() {
                if let Some(f) = &p.key_file {
                    p.key_file = Some(dir.join(f));
                }
            }
            config.workflows.dir = dir.join(&config.workflows.dir);
            for f in &mut config.distillation.eval_files {
                *f = dir.join(&*f);
            }
            for t in &mut config.auth.tokens {
                if let Some(f) = &t.token_file {
                    t.token_file = Some(dir.join(f));
                }
            }
        }
        Ok(config)
    }

    /// Parses and validates TOML text; `file` is only used in messages.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError {
            file: file.to_owned(),
            key: "(syntax)".into(),
            reason: e.to_string().trim().replace('\n', " "),
        })?;
        config.validate(file)?;
        config.file = file.to_owned();
        Ok(config)
    }

    fn builtin_mut(&mut self) -> [&mut ProviderConfig; 5] {
        let p = &mut self.providers;
        [
            &mut p.ollama,
            &mut p.ollama_cloud,
            &mut p.openrouter,
            &mut p.opencode,
            &mut p.kimi,
        ]
    }

    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let err = |key: String, reason: String| ConfigError {
            file: file.to_owned(),
            key,
            reason,
        };
        if self.server.max_body_bytes < 1024 {
            return Err(err(
                "server.max_body_bytes".into(),
                "must be at least 1024".into(),
            ));
        }
        for (key, value) in [
            (
                "server.max_concurrent_requests",
                self.server.max_concurrent_requests,
            ),
            ("server.max_messages", self.server.max_messages),
            (
                "server.body_read_timeout_secs",
                self.server.body_read_timeout_secs as usize,
            ),
            (
                "server.header_read_timeout_secs",
                self.server.header_read_timeout_secs as usize,
            ),
        ] {
            if value == 0 {
                return Err(err(key.into(), "must be at least 1".into()));
            }
        }
        let max_poll_us = crate::busy_poll::MAX_WINDOW.as_micros();
        if u128::from(self.server.busy_poll_us) > max_poll_us {
            return Err(err(
                "server.busy_poll_us".into(),
                format!("must be at most {max_poll_us} (0 turns polling off)"),
            ));
        }
        if !(1..=1_000_000).contains(&self.server.recent_requests) {
            return Err(err(
                "server.recent_requests".into(),
                "must be from 1 to 1000000".into(),
            ));
        }
        if self.server.observer_retention_days > MAX_RETENTION_DAYS {
            return Err(err(
                "server.observer_retention_days".into(),
                format!("must be at most {MAX_RETENTION_DAYS} (0 keeps every chat)"),
            ));
        }
        for p in self.provider_settings() {
            if !(p.base_url.starts_with("http://") || p.base_url.starts_with("https://")) {
                return Err(err(
                    format!("providers.{}.base_url", p.name),
                    format!("{:?} is not an http:// or https:// URL", p.base_url),
                ));
            }
            if p.connect_timeout.is_zero() || p.read_timeout.is_zero() {
                return Err(err(
                    format!("providers.{}", p.name),
                    "timeouts must be greater than 0".into(),
                ));
            }
        }
        let mut seen: Vec<&str> = BUILTIN_PROVIDERS.to_vec();
        for (i, c) in self.providers.custom.iter().enumerate() {
            let valid = !c.name.is_empty()
                && c.name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-' || ch == '.');
            if !valid {
                return Err(err(
                    format!("providers.custom[{i}].name"),
                    format!(
                        "{:?} must be non-empty and use only letters, digits, '_', '-' or '.'",
                        c.name
                    ),
                ));
            }
            if c.name == "tier" || seen.contains(&c.name.as_str()) {
                return Err(err(
                    format!("providers.custom[{i}].name"),
                    format!(
                        "{:?} is already taken by another provider or by tier/",
                        c.name
                    ),
                ));
            }
            seen.push(&c.name);
        }
        for (tier, model) in self.models.iter() {
            if model.trim().is_empty() {
                return Err(err(format!("models.{tier}"), "must not be empty".into()));
            }
            if model.starts_with("tier/") {
                return Err(err(
                    format!("models.{tier}"),
                    "a tier cannot name another tier".into(),
                ));
            }
        }
        self.plugins
            .validate()
            .map_err(|(key, reason)| err(key, reason))?;
        if self.fanout.timeout_secs == 0 {
            return Err(err(
                "fanout.timeout_secs".into(),
                "must be at least 1".into(),
            ));
        }
        let d = &self.distillation;
        for (key, value) in [
            ("distillation.accept_score", d.accept_score),
            ("distillation.max_overlap", d.max_overlap),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(err(key.into(), "must be from 0 to 1".into()));
            }
        }
        for (key, value) in [
            ("distillation.rating_weight", d.rating_weight),
            ("distillation.judge_weight", d.judge_weight),
            ("distillation.retrieval_weight", d.retrieval_weight),
        ] {
            if !(value >= 0.0 && value.is_finite()) {
                return Err(err(key.into(), "must be 0 or more".into()));
            }
        }
        if !(1..=32).contains(&d.ngram) {
            return Err(err(
                "distillation.ngram".into(),
                "must be from 1 to 32".into(),
            ));
        }
        let drift = &self.drift;
        if drift.recent_secs == 0 || drift.baseline_secs == 0 {
            return Err(err(
                "drift.recent_secs".into(),
                "both windows (recent_secs, baseline_secs) must be at least 1 second".into(),
            ));
        }
        if !(drift.psi_threshold > 0.0 && drift.ks_threshold > 0.0 && drift.ks_threshold <= 1.0) {
            return Err(err(
                "drift.psi_threshold".into(),
                "thresholds must be above 0 (ks_threshold at most 1)".into(),
            ));
        }
        if drift.min_samples < 2 {
            return Err(err("drift.min_samples".into(), "must be at least 2".into()));
        }
        if self.fanout.max_models == 0 {
            return Err(err("fanout.max_models".into(), "must be at least 1".into()));
        }
        let mut names = std::collections::HashSet::new();
        for (i, rag) in self.rag_models.iter().enumerate() {
            let key = |field: &str| format!("rag_models[{i}].{field}");
            let plain = rag.name.strip_prefix("rag/").is_some_and(|n| {
                !n.is_empty()
                    && n.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
            });
            if !plain {
                return Err(err(
                    key("name"),
                    format!(
                        "{:?} must look like rag/<name> (letters, digits, _ - .)",
                        rag.name
                    ),
                ));
            }
            if !names.insert(&rag.name) {
                return Err(err(
                    key("name"),
                    format!("{:?} is declared twice", rag.name),
                ));
            }
            if rag.corpora.is_empty() {
                return Err(err(key("corpora"), "list at least one corpus".into()));
            }
            if let Some(tier) = rag.model.strip_prefix("tier/")
                && self.models.get(tier).is_none()
            {
                return Err(err(
                    key("model"),
                    format!("tier {tier:?} is not set in [models]"),
                ));
            }
            if rag.model.starts_with("rag/") {
                return Err(err(
                    key("model"),
                    "a rag model cannot use another rag model".into(),
                ));
            }
            if rag.k == Some(0) {
                return Err(err(key("k"), "must be at least 1".into()));
            }
        }
        Ok(())
    }

    /// The rag model called `name`, if declared.
    pub fn rag_model(&self, name: &str) -> Option<&RagModel> {
        self.rag_models.iter().find(|r| r.name == name)
    }

    /// Settings of every provider, built-in first, with defaults filled in.
    pub fn provider_settings(&self) -> Vec<ProviderSettings> {
        let p = &self.providers;
        let builtin = [
            (OLLAMA, &p.ollama, "http://127.0.0.1:11434", None),
            (
                OLLAMA_CLOUD,
                &p.ollama_cloud,
                "https://ollama.com",
                Some("OLLAMA_CLOUD_KEY"),
            ),
            (
                OPENROUTER,
                &p.openrouter,
                "https://openrouter.ai/api/v1",
                Some("OPENROUTER_API_KEY"),
            ),
            (
                OPENCODE,
                &p.opencode,
                "https://opencode.ai/zen/v1",
                Some("OPENCODE_API_KEY"),
            ),
            (
                KIMI,
                &p.kimi,
                "https://api.moonshot.ai/v1",
                Some("KIMI_API_KEY"),
            ),
        ];
        let mut out: Vec<ProviderSettings> = builtin
            .into_iter()
            .map(|(name, cfg, default_url, key_var)| {
                // Local Ollama needs no key, unless a key file is configured (a remote daemon behind auth).
                let key = match (key_var, &cfg.key_file) {
                    (Some(var), file) => Some(KeySource {
                        file: file
                            .clone()
                            .unwrap_or_else(|| self.secrets_dir.join(format!("{name}.env"))),
                        var: var.to_owned(),
                    }),
                    (None, Some(file)) => Some(KeySource {
                        file: file.clone(),
                        var: "OLLAMA_API_KEY".into(),
                    }),
                    (None, None) => None,
                };
                ProviderSettings {
                    name: name.to_owned(),
                    enabled: cfg.enabled,
                    base_url: cfg
                        .base_url
                        .clone()
                        .unwrap_or_else(|| default_url.to_owned()),
                    key,
                    connect_timeout: Duration::from_millis(cfg.connect_timeout_ms.unwrap_or(5_000)),
                    read_timeout: Duration::from_millis(cfg.read_timeout_ms.unwrap_or(300_000)),
                    headers: cfg.headers.clone().into_iter().collect(),
                }
            })
            .collect();
        for c in &p.custom {
            out.push(ProviderSettings {
                name: c.name.clone(),
                enabled: true,
                base_url: c.base_url.clone(),
                key: c.key_file.clone().map(|file| KeySource {
                    file,
                    var: c.key_var.clone().unwrap_or_else(|| {
                        format!("{}_API_KEY", c.name.to_uppercase().replace(['-', '.'], "_"))
                    }),
                }),
                connect_timeout: Duration::from_millis(c.connect_timeout_ms.unwrap_or(5_000)),
                read_timeout: Duration::from_millis(c.read_timeout_ms.unwrap_or(300_000)),
                headers: c.headers.clone().into_iter().collect(),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_parses() {
        let text = include_str!("../../lakehouse.toml");
        let config = Config::parse(text, "lakehouse.toml").unwrap();
        assert_eq!(config.server.listen, default_listen());
        assert_eq!(config.provider_settings().len(), 5);
        assert!(config.models.get("local_fast").is_some());
        assert!(config.auth.tokens.is_empty());
        assert_eq!(config.server.observer_retention(), None, "keeps every chat");
    }

    #[test]
    fn the_production_example_parses_and_protects_admin() {
        let text = include_str!("../../deploy/lakehouse.production.toml");
        let config = Config::parse(text, "lakehouse.production.toml").unwrap();
        assert!(!config.server.listen.ip().is_loopback());
        let scopes: Vec<_> = config.auth.tokens.iter().map(|t| t.scope).collect();
        assert_eq!(
            scopes,
            vec![crate::auth::Scope::Admin, crate::auth::Scope::Client]
        );
        assert_eq!(config.auth.tokens[1].requests_per_minute, Some(600));
        assert_eq!(
            config.server.observer_retention(),
            Some(Duration::from_secs(90 * 86_400))
        );
    }

    #[test]
    fn unknown_keys_fail_naming_file_and_key() {
        let err = Config::parse(
            "[server]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n",
            "x.toml",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("x.toml"), "{text}");
        assert!(text.contains("listen_port"), "{text}");
    }

    #[test]
    fn bad_values_fail_naming_the_key() {
        let err =
            Config::parse("[providers.kimi]\nbase_url = \"ftp://x\"\n", "x.toml").unwrap_err();
        assert_eq!(err.key, "providers.kimi.base_url");
        let err =
            Config::parse("[server]\nobserver_retention_days = 40000\n", "x.toml").unwrap_err();
        assert_eq!(err.key, "server.observer_retention_days");
        assert!(err.reason.contains("36500"), "{}", err.reason);
        let err = Config::parse(
            "[[providers.custom]]\nname = \"kimi\"\nbase_url = \"http://x\"\n",
            "x.toml",
        )
        .unwrap_err();
        assert_eq!(err.key, "providers.custom[0].name");
        let err =
            Config::parse("[models]\nlocal_fast = \"tier/local_judge\"\n", "x.toml").unwrap_err();
        assert_eq!(err.key, "models.local_fast");
        let err = Config::parse("[models]\nsmartest = \"x\"\n", "x.toml").unwrap_err();
        assert!(err.to_string().contains("smartest"));
    }

    #[test]
    fn custom_providers_get_a_key_variable() {
        let c = Config::parse(
            "[[providers.custom]]\nname = \"my-vllm\"\nbase_url = \"http://127.0.0.1:8000/v1\"\nkey_file = \"k.env\"\n",
            "x.toml",
        )
        .unwrap();
        let s = c.provider_settings();
        assert_eq!(s[5].key.as_ref().unwrap().var, "MY_VLLM_API_KEY");
    }
}
