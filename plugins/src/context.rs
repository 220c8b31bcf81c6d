//! What a chat carries through the hooks, and what the client gets back.

use lakehouse_memory::pathway::MemoryHit;
use lakehouse_providers::openai::{ChatRequest, Role, Usage};
use lakehouse_retrieval::matrix::{QueryVectors, Source};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::PluginName;

/// Per-request options, sent as the extra body field `lakehouse`
/// (`extra_body={"lakehouse": {...}}` in the OpenAI SDKs). Never sent upstream.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestOptions {
    /// Corpora to retrieve from (replaces a rag model's list).
    pub corpora: Option<Vec<String>>,
    /// Sources to inject.
    pub k: Option<usize>,
    /// Use pathway memory (inject memories, record a trace).
    pub memory: Option<bool>,
    /// Memory namespace (else the `x-lakehouse-namespace` header, else `user`).
    pub namespace: Option<String>,
    /// Allow the cost downgrade for this request.
    pub downgrade: Option<bool>,
}

/// One chat on its way through the plugins.
#[derive(Debug)]
pub struct ChatContext {
    /// The chat completion id the client will see (and rate with).
    pub id: String,
    /// Boxed: ~500 bytes, moved from the route through the plugins to the
    /// upstream call; a pointer moves for free.
    pub request: Box<ChatRequest>,
    /// The model id the client asked for (a rag model, a tier, a plain id).
    pub client_model: String,
    /// The resolved model that will answer; the downgrade gate may change it.
    pub target_model: String,
    pub namespace: String,
    pub corpora: Vec<String>,
    /// Sources to inject and their token budget; the downgrade gate may lower them.
    pub k: usize,
    pub token_budget: usize,
    pub memory: bool,
    pub cost_downgrade: bool,
    /// Plugins this chat runs, in order.
    pub enabled: Vec<PluginName>,
    /// The last user message's text: what retrieval searches for.
    pub query: String,
    /// The query embedded once per embedder, shared by the plugins.
    pub query_vectors: QueryVectors,
    /// Candidates during the pre hooks; after injection, the sources shown.
    pub sources: Vec<Source>,
    pub memories: Vec<MemoryHit>,
    pub annotations: Annotations,
}

impl ChatContext {
    /// The text of the last user message.
    pub fn last_user_text(request: &ChatRequest) -> String {
        request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(lakehouse_providers::openai::Message::text_content)
            .unwrap_or_default()
    }

    pub fn runs(&self, plugin: PluginName) -> bool {
        self.enabled.contains(&plugin)
    }
}

/// What the client gets in the `lakehouse` field.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Annotations {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceNote>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub memories: Vec<MemoryNote>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `full` or `reduced` (set by the downgrade gate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<&'static str>,
    /// Set when the cost downgrade picked another model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downgrade: Option<Value>,
    pub plugins: Vec<PluginRun>,
    /// True when an optional plugin failed and the chat went on without it.
    pub degraded: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceNote {
    /// The number the injected message cites it by.
    pub n: usize,
    pub corpus: String,
    pub id: String,
    pub score: f32,
    pub similarity: f32,
    pub boost: f32,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemoryNote {
    pub id: String,
    pub score: f32,
}

#[derive(Debug, Clone, Serialize)]
pub struct PluginRun {
    pub name: &'static str,
    /// `ok`, `failed` or `timeout`.
    pub status: &'static str,
    pub ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The answer as post hooks see it.
#[derive(Debug, Clone, Default)]
pub struct ChatResult {
    pub text: String,
    pub usage: Option<Usage>,
    /// Set when the upstream failed after the answer started.
    pub error: Option<String>,
}
