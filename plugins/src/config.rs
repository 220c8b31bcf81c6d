//! `[plugins]` and `[[rag_models]]` in `lakehouse.toml`.
//!
//! ```toml
//! [plugins]
//! order = ["downgrade", "matrix", "pathway", "playbook"]
//! [plugins.matrix]
//! k = 5
//! [plugins.playbook.boost]
//! strength = 0.3
//!
//! [[rag_models]]
//! name = "rag/debian"
//! model = "tier/local_fast"
//! corpora = ["debian"]
//! ```

use std::time::Duration;

use lakehouse_memory::playbook::BoostConfig;
use serde::{Deserialize, Serialize};

/// The built-in plugins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginName {
    Downgrade,
    Matrix,
    Pathway,
    Playbook,
}

impl PluginName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Downgrade => "downgrade",
            Self::Matrix => "matrix",
            Self::Pathway => "pathway",
            Self::Playbook => "playbook",
        }
    }
}

fn default_order() -> Vec<PluginName> {
    vec![
        PluginName::Downgrade,
        PluginName::Matrix,
        PluginName::Pathway,
        PluginName::Playbook,
    ]
}

fn default_timeout_ms() -> u64 {
    2000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    /// Pre hooks run in this order (post hooks too). Leave one out to turn it off.
    #[serde(default = "default_order")]
    pub order: Vec<PluginName>,
    #[serde(default)]
    pub downgrade: DowngradeConfig,
    #[serde(default)]
    pub matrix: MatrixConfig,
    #[serde(default)]
    pub pathway: PathwayConfig,
    #[serde(default)]
    pub playbook: PlaybookConfig,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            order: default_order(),
            downgrade: DowngradeConfig::default(),
            matrix: MatrixConfig::default(),
            pathway: PathwayConfig::default(),
            playbook: PlaybookConfig::default(),
        }
    }
}

/// How a plugin runs: its time limit and whether the chat needs it.
#[derive(Debug, Clone, Copy)]
pub struct StageLimits {
    pub timeout: Duration,
    /// A required plugin that fails fails the chat; others degrade it.
    pub required: bool,
}

impl PluginsConfig {
    pub fn limits(&self, name: PluginName) -> StageLimits {
        let (timeout_ms, required) = match name {
            PluginName::Downgrade => (self.downgrade.timeout_ms, self.downgrade.required),
            PluginName::Matrix => (self.matrix.timeout_ms, self.matrix.required),
            PluginName::Pathway => (self.pathway.timeout_ms, self.pathway.required),
            PluginName::Playbook => (self.playbook.timeout_ms, self.playbook.required),
        };
        StageLimits {
            timeout: Duration::from_millis(timeout_ms),
            required,
        }
    }

    /// `(key, reason)` of the first invalid setting.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let mut seen = std::collections::HashSet::new();
        for name in &self.order {
            if !seen.insert(name) {
                return Err((
                    "plugins.order".into(),
                    format!("{} is listed twice", name.as_str()),
                ));
            }
        }
        let m = &self.matrix;
        if m.k == 0 || m.candidates < m.k {
            return Err((
                "plugins.matrix".into(),
                "k must be at least 1 and candidates at least k".into(),
            ));
        }
        if !(0.0..=1.0).contains(&m.duplicate_overlap) {
            return Err((
                "plugins.matrix.duplicate_overlap".into(),
                "must be between 0 and 1".into(),
            ));
        }
        let b = &self.playbook.boost;
        if !(b.strength >= 0.0 && (0.0..1.0).contains(&b.min_similarity) && b.half_life_days >= 0.0)
        {
            return Err((
                "plugins.playbook.boost".into(),
                "strength and half_life_days must be >= 0, min_similarity in [0, 1)".into(),
            ));
        }
        Ok(())
    }
}

/// Context size by model strength, and the opt-in cost downgrade.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DowngradeConfig {
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub required: bool,
    /// Strong models (not in `[models].weak_models`) get at most this many sources...
    #[serde(default = "default_reduced_k")]
    pub reduced_k: usize,
    /// ...within this token budget.
    #[serde(default = "default_reduced_budget")]
    pub reduced_token_budget: usize,
    /// Route to `[models].local_fast` when the playbook holds a well-rated
    /// answer to a near-identical query (a request can also ask with `lakehouse.downgrade`).
    #[serde(default)]
    pub cost_downgrade: bool,
    #[serde(default = "default_downgrade_similarity")]
    pub min_similarity: f32,
    #[serde(default = "default_downgrade_rating")]
    pub min_rating: f32,
}

fn default_reduced_k() -> usize {
    3
}
fn default_reduced_budget() -> usize {
    600
}
fn default_downgrade_similarity() -> f32 {
    0.95
}
fn default_downgrade_rating() -> f32 {
    0.5
}

impl Default for DowngradeConfig {
    fn default() -> Self {
        Self {
            timeout_ms: default_timeout_ms(),
            required: false,
            reduced_k: default_reduced_k(),
            reduced_token_budget: default_reduced_budget(),
            cost_downgrade: false,
            min_similarity: default_downgrade_similarity(),
            min_rating: default_downgrade_rating(),
        }
    }
}

/// Multi-corpus retrieval and the relevance filter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixConfig {
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub required: bool,
    /// Sources injected (full context).
    #[serde(default = "default_k")]
    pub k: usize,
    /// Hits fetched per corpus before merging, boosting and filtering.
    #[serde(default = "default_candidates")]
    pub candidates: usize,
    /// Hits less similar than this (cosine) are dropped.
    #[serde(default = "default_min_similarity")]
    pub min_similarity: f32,
    /// Word-set overlap (Jaccard) at which two sources count as duplicates.
    #[serde(default = "default_duplicate_overlap")]
    pub duplicate_overlap: f32,
    /// Estimated tokens of injected sources (full context).
    #[serde(default = "default_token_budget")]
    pub token_budget: usize,
}

fn default_k() -> usize {
    5
}
fn default_candidates() -> usize {
    30
}
fn default_min_similarity() -> f32 {
    0.2
}
fn default_duplicate_overlap() -> f32 {
    0.9
}
fn default_token_budget() -> usize {
    2000
}

impl Default for MatrixConfig {
    fn default() -> Self {
        Self {
            timeout_ms: default_timeout_ms(),
            required: false,
            k: default_k(),
            candidates: default_candidates(),
            min_similarity: default_min_similarity(),
            duplicate_overlap: default_duplicate_overlap(),
            token_budget: default_token_budget(),
        }
    }
}

/// Pathway memory as a plugin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathwayConfig {
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub required: bool,
    /// Memories injected per chat.
    #[serde(default = "default_memory_k")]
    pub k: usize,
    #[serde(default = "default_memory_similarity")]
    pub min_similarity: f32,
    /// Embedder of traces.
    #[serde(default = "default_embedder")]
    pub embedder: String,
    /// Length of the answer summary kept in a trace.
    #[serde(default = "default_summary_chars")]
    pub summary_chars: usize,
}

fn default_memory_k() -> usize {
    3
}
fn default_memory_similarity() -> f32 {
    0.35
}
fn default_embedder() -> String {
    lakehouse_retrieval::embed::LOCAL.into()
}
fn default_summary_chars() -> usize {
    400
}

impl Default for PathwayConfig {
    fn default() -> Self {
        Self {
            timeout_ms: default_timeout_ms(),
            required: false,
            k: default_memory_k(),
            min_similarity: default_memory_similarity(),
            embedder: default_embedder(),
            summary_chars: default_summary_chars(),
        }
    }
}

/// Playbook boost.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaybookConfig {
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub boost: BoostConfig,
    /// Well-rated sources for similar queries that retrieval missed are added, up to this many.
    #[serde(default = "default_recall")]
    pub recall: usize,
    /// Chats remembered for a later rating (about 2 KB each; oldest dropped first, 24 h at most).
    #[serde(default = "default_awaiting_rating")]
    pub awaiting_rating: u64,
}

fn default_awaiting_rating() -> u64 {
    lakehouse_memory::playbook::SHOWN_CAPACITY
}

fn default_recall() -> usize {
    3
}

impl Default for PlaybookConfig {
    fn default() -> Self {
        Self {
            timeout_ms: default_timeout_ms(),
            required: false,
            boost: BoostConfig::default(),
            recall: default_recall(),
            awaiting_rating: default_awaiting_rating(),
        }
    }
}

/// A retrieval-augmented virtual model.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RagModel {
    /// The id clients use, `rag/<name>`.
    pub name: String,
    /// The model that answers: an id or `tier/<name>`.
    pub model: String,
    pub corpora: Vec<String>,
    /// Sources injected (default `[plugins.matrix].k`).
    #[serde(default)]
    pub k: Option<usize>,
    /// Plugins this model runs, in `[plugins].order` (default: all of it).
    #[serde(default)]
    pub plugins: Option<Vec<PluginName>>,
}
