//! The playbook: rated outcomes that re-rank future retrieval.
//!
//! Every chat that showed sources leaves a *shown* record (query, its
//! embedding, the sources, the model) in a bounded in-memory cache keyed by the
//! chat completion id. `POST /v1/feedback` turns it into a rated *outcome*,
//! persisted in `memory/playbook`. At retrieval time, each live outcome whose
//! query is similar to the new one votes for (rating > 0) or against
//! (rating < 0) the sources it showed, weighted by query similarity and
//! recency; the votes become a bounded boost added to each source's score.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lakehouse_retrieval::objects::Objects;
use moka::sync::Cache;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, RwLock};

use crate::error::{MemoryError, Result};
use crate::log::{CompactReport, JsonlLog};
use crate::vector::cosine;

/// A source as the playbook knows it: a row of a corpus.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SourceRef {
    pub corpus: String,
    pub id: String,
}

/// A shown source and how it was rated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RatedSource {
    pub corpus: String,
    pub id: String,
    pub rating: f32,
}

/// What a chat showed, kept until it is rated (or forgotten).
#[derive(Debug, Clone)]
pub struct Shown {
    pub query: String,
    pub embedder: String,
    pub embedding: Vec<f32>,
    pub sources: Vec<SourceRef>,
    pub model: String,
}

/// A rated chat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The chat completion id.
    pub id: String,
    pub query: String,
    pub model: String,
    pub rating: f32,
    #[serde(default)]
    pub note: Option<String>,
    pub sources: Vec<RatedSource>,
    pub embedder: String,
    pub rated_at: u64,
    #[serde(default)]
    pub retired: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    outcome: Outcome,
    embedding: Vec<f32>,
}

/// A rating request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feedback {
    pub id: String,
    pub rating: f32,
    #[serde(default)]
    pub note: Option<String>,
    /// Per-source ratings; sources not listed take `rating`.
    #[serde(default)]
    pub sources: Vec<RatedSource>,
}

/// How strongly past outcomes move new rankings.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoostConfig {
    /// The largest boost (or penalty) a source can get, in score units.
    #[serde(default = "default_strength")]
    pub strength: f32,
    /// Past queries less similar than this do not vote.
    #[serde(default = "default_min_similarity")]
    pub min_similarity: f32,
    /// Vote weight is `((sim - min) / (1 - min))^power`: higher favours near-identical queries.
    #[serde(default = "default_power")]
    pub similarity_power: f32,
    /// A vote loses half its weight every this many days (0: never decays).
    #[serde(default = "default_half_life")]
    pub half_life_days: f32,
    /// Softmax temperature over the voting past queries' similarities (0:
    /// off). Each vote is scaled by its share `exp(sim / t) / sum(exp(sim_j / t))`,
    /// so a query with one clearly nearest past query follows it, while a
    /// query sitting among many equally similar ones (template phrasings
    /// such as "development files for X") is not pushed by any of them.
    #[serde(default = "default_temperature")]
    pub similarity_temperature: f32,
    /// Negative ratings count this much of a positive one. "Not what I
    /// wanted" for one query is weak evidence about a source (it may serve
    /// the neighbouring need), "this answered it" is strong.
    #[serde(default = "default_negative_weight")]
    pub negative_weight: f32,
}

// Defaults tuned with scripts/playbook_lift.sh on the built-in embedder
// (reports/lift/): paraphrases of one need score 0.54 (median), but a query
// with no paraphrase among past ones still has a past query at 0.49
// (median): similarity alone cannot tell them apart, the softmax share does
// (the nearest past query leads a paraphrase by 0.07, an unrelated one by 0.02).
fn default_strength() -> f32 {
    0.5
}
fn default_min_similarity() -> f32 {
    0.4
}
fn default_power() -> f32 {
    1.0
}
fn default_half_life() -> f32 {
    30.0
}
fn default_temperature() -> f32 {
    0.02
}
fn default_negative_weight() -> f32 {
    0.05
}

/// Each similarity's softmax share at `temperature`; all 1 when it is 0 (off).
fn softmax_shares(similarities: impl Iterator<Item = f32> + Clone, temperature: f32) -> Vec<f32> {
    if temperature <= 0.0 {
        return similarities.map(|_| 1.0).collect();
    }
    let best = similarities.clone().fold(f32::NEG_INFINITY, f32::max);
    // Shifted by the best so exp never overflows.
    let raw: Vec<f32> = similarities
        .map(|s| ((s - best) / temperature).exp())
        .collect();
    let total: f32 = raw.iter().sum();
    raw.into_iter().map(|r| r / total).collect()
}

/// A rating as a vote: negative ones scaled by `negative_weight`.
fn rating_weight(rating: f32, config: &BoostConfig) -> f32 {
    if rating < 0.0 {
        rating * config.negative_weight.max(0.0)
    } else {
        rating
    }
}

impl Default for BoostConfig {
    fn default() -> Self {
        Self {
            strength: default_strength(),
            min_similarity: default_min_similarity(),
            similarity_power: default_power(),
            half_life_days: default_half_life(),
            similarity_temperature: default_temperature(),
            negative_weight: default_negative_weight(),
        }
    }
}

/// How many unrated chats are remembered, and for how long.
/// Chats kept awaiting a rating, unless the config says otherwise.
pub const SHOWN_CAPACITY: u64 = 100_000;
/// Longest query an outcome keeps (what the boost matches on is the query's
/// embedding, not its text).
pub const MAX_QUERY_BYTES: usize = 4096;
const SHOWN_TTL: Duration = Duration::from_secs(24 * 3600);

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(Debug, Clone, Serialize)]
pub struct PlaybookStats {
    pub outcomes: usize,
    pub live: usize,
    pub awaiting_rating: u64,
    pub skipped_lines: u64,
}

pub struct Playbook {
    log: JsonlLog,
    entries: RwLock<HashMap<String, Entry>>,
    shown: Cache<String, Arc<Shown>>,
    write: Mutex<()>,
    skipped: AtomicU64,
}

impl std::fmt::Debug for Playbook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Playbook").finish_non_exhaustive()
    }
}

impl Playbook {
    /// Opens `memory/playbook` and replays it.
    pub async fn open(objects: Objects) -> Result<Self> {
        let log = JsonlLog::new(objects, "memory/playbook");
        let replay = log.replay::<Entry>().await?;
        let mut entries = HashMap::new();
        for entry in replay.records {
            entries.insert(entry.outcome.id.clone(), entry);
        }
        Ok(Self {
            log,
            entries: RwLock::new(entries),
            shown: Cache::builder()
                .max_capacity(SHOWN_CAPACITY)
                .time_to_live(SHOWN_TTL)
                .build(),
            write: Mutex::new(()),
            skipped: AtomicU64::new(replay.skipped),
        })
    }

    /// Remembers what chat `id` showed, so it can be rated.
    /// Keeps at most `capacity` chats awaiting a rating (the oldest go first;
    /// each holds its query, cut at 4 KB, its query vector and sources:
    /// about 2 KB for a short query). Call right after `open`.
    pub fn with_awaiting_capacity(mut self, capacity: u64) -> Self {
        self.shown = Cache::builder()
            .max_capacity(capacity.max(1))
            .time_to_live(SHOWN_TTL)
            .build();
        self
    }

    /// The query is kept cut at [`MAX_QUERY_BYTES`]: a chat's last message may
    /// be megabytes, and up to `capacity` of them wait here for a day.
    pub fn remember(&self, id: &str, mut shown: Shown) {
        if shown.query.len() > MAX_QUERY_BYTES {
            shown.query.truncate(lakehouse_providers::char_floor(
                &shown.query,
                MAX_QUERY_BYTES,
            ));
            shown.query.shrink_to_fit();
        }
        self.shown.insert(id.to_owned(), Arc::new(shown));
    }

    /// Records a rating for chat `id`. Rating again replaces the earlier rating.
    pub async fn rate(&self, feedback: Feedback) -> Result<Outcome> {
        let valid = |r: f32| r.is_finite() && (-1.0..=1.0).contains(&r);
        if !valid(feedback.rating) || feedback.sources.iter().any(|s| !valid(s.rating)) {
            return Err(MemoryError::InvalidInput(
                "ratings must be numbers from -1 to 1".into(),
            ));
        }
        let _guard = self.write.lock().await;
        let (query, embedder, embedding, shown_sources, model) =
            if let Some(shown) = self.shown.get(&feedback.id) {
                let s = shown.as_ref().clone();
                (s.query, s.embedder, s.embedding, s.sources, s.model)
            } else if let Some(e) = self.entries.read().await.get(&feedback.id) {
                let o = &e.outcome;
                let sources = o
                    .sources
                    .iter()
                    .map(|s| SourceRef {
                        corpus: s.corpus.clone(),
                        id: s.id.clone(),
                    })
                    .collect();
                (
                    o.query.clone(),
                    o.embedder.clone(),
                    e.embedding.clone(),
                    sources,
                    o.model.clone(),
                )
            } else {
                return Err(MemoryError::NotFound {
                    what: "chat completion",
                    id: format!(
                        "{} (only chats that used retrieval can be rated, within {} hours)",
                        feedback.id,
                        SHOWN_TTL.as_secs() / 3600
                    ),
                });
            };
        for rated in &feedback.sources {
            if !shown_sources
                .iter()
                .any(|s| s.corpus == rated.corpus && s.id == rated.id)
            {
                return Err(MemoryError::InvalidInput(format!(
                    "source {}/{} was not shown in chat {}",
                    rated.corpus, rated.id, feedback.id
                )));
            }
        }
        let sources = shown_sources
            .into_iter()
            .map(|s| {
                let rating = feedback
                    .sources
                    .iter()
                    .find(|r| r.corpus == s.corpus && r.id == s.id)
                    .map_or(feedback.rating, |r| r.rating);
                RatedSource {
                    corpus: s.corpus,
                    id: s.id,
                    rating,
                }
            })
            .collect();
        // A retirement is an operator's decision: a client re-rating the chat
        // does not undo it.
        let retired = self
            .entries
            .read()
            .await
            .get(&feedback.id)
            .is_some_and(|e| e.outcome.retired);
        let outcome = Outcome {
            id: feedback.id,
            query,
            model,
            rating: feedback.rating,
            note: feedback.note,
            sources,
            embedder,
            rated_at: now(),
            retired,
        };
        let entry = Entry {
            outcome: outcome.clone(),
            embedding,
        };
        self.log.append(std::slice::from_ref(&entry)).await?;
        self.entries.write().await.insert(outcome.id.clone(), entry);
        Ok(outcome)
    }

    /// Outcomes, newest first.
    pub async fn list(&self, include_retired: bool, limit: usize) -> Vec<Outcome> {
        let entries = self.entries.read().await;
        let mut out: Vec<Outcome> = entries
            .values()
            .filter(|e| include_retired || !e.outcome.retired)
            .map(|e| e.outcome.clone())
            .collect();
        out.sort_by(|a, b| b.rated_at.cmp(&a.rated_at).then_with(|| b.id.cmp(&a.id)));
        out.truncate(limit);
        out
    }

    /// Stops an outcome from boosting; it stays listed as retired.
    pub async fn retire(&self, id: &str) -> Result<Outcome> {
        let _guard = self.write.lock().await;
        let mut entry =
            self.entries
                .read()
                .await
                .get(id)
                .cloned()
                .ok_or_else(|| MemoryError::NotFound {
                    what: "outcome",
                    id: id.to_owned(),
                })?;
        entry.outcome.retired = true;
        self.log.append(std::slice::from_ref(&entry)).await?;
        let outcome = entry.outcome.clone();
        self.entries.write().await.insert(id.to_owned(), entry);
        Ok(outcome)
    }

    /// The boost of every source voted on by outcomes similar to `query`
    /// (embedded by `embedder`); sources without votes are absent.
    pub async fn boosts(
        &self,
        embedder: &str,
        query: &[f32],
        config: &BoostConfig,
    ) -> HashMap<SourceRef, f32> {
        let entries = self.entries.read().await;
        let at = now();
        let span = (1.0 - config.min_similarity).max(1e-6);
        let voters: Vec<(&Entry, f32)> = entries
            .values()
            .filter(|e| !e.outcome.retired && e.outcome.embedder == embedder)
            .map(|e| (e, cosine(query, &e.embedding)))
            .filter(|(_, similarity)| *similarity >= config.min_similarity)
            .collect();
        let share = softmax_shares(
            voters.iter().map(|(_, s)| *s),
            config.similarity_temperature,
        );
        let mut votes: HashMap<SourceRef, f32> = HashMap::new();
        for ((entry, similarity), share) in voters.into_iter().zip(share) {
            let outcome = &entry.outcome;
            let closeness = ((similarity - config.min_similarity) / span).clamp(0.0, 1.0);
            let mut weight = share * closeness.powf(config.similarity_power.max(0.0));
            if config.half_life_days > 0.0 {
                let age_days = at.saturating_sub(outcome.rated_at) as f32 / 86_400.0;
                weight *= 0.5f32.powf(age_days / config.half_life_days);
            }
            for source in &outcome.sources {
                *votes
                    .entry(SourceRef {
                        corpus: source.corpus.clone(),
                        id: source.id.clone(),
                    })
                    .or_default() += weight * rating_weight(source.rating, config);
            }
        }
        // tanh keeps many agreeing votes from outweighing relevance entirely.
        votes
            .into_iter()
            .filter(|(_, v)| *v != 0.0)
            .map(|(source, v)| (source, config.strength * v.tanh()))
            .collect()
    }

    /// The best-rated outcome for a near-identical query: `(outcome, similarity)`.
    pub async fn best_match(
        &self,
        embedder: &str,
        query: &[f32],
        min_similarity: f32,
        min_rating: f32,
    ) -> Option<(Outcome, f32)> {
        let entries = self.entries.read().await;
        entries
            .values()
            .filter(|e| {
                !e.outcome.retired
                    && e.outcome.embedder == embedder
                    && e.outcome.rating >= min_rating
            })
            .map(|e| (e, cosine(query, &e.embedding)))
            .filter(|(_, s)| *s >= min_similarity)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(e, s)| (e.outcome.clone(), s))
    }

    /// Folds the log into one base object (see [`JsonlLog::compact`]).
    pub async fn compact(&self) -> Result<CompactReport> {
        let _guard = self.write.lock().await;
        self.log.compact(|e: &Entry| e.outcome.id.clone()).await
    }

    pub async fn stats(&self) -> PlaybookStats {
        let entries = self.entries.read().await;
        PlaybookStats {
            outcomes: entries.len(),
            live: entries.values().filter(|e| !e.outcome.retired).count(),
            awaiting_rating: self.shown.entry_count(),
            skipped_lines: self.skipped.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use lakehouse_retrieval::objects::{Caps, StoreConfig};

    use super::*;

    fn objects() -> Objects {
        let root = std::env::temp_dir().join(lakehouse_providers::openai::new_id("playbook-test-"));
        Objects::open(&StoreConfig::Local {
            root,
            caps: Caps::default(),
        })
        .unwrap()
    }

    fn source(id: &str) -> SourceRef {
        SourceRef {
            corpus: "c".into(),
            id: id.into(),
        }
    }

    fn shown(embedding: Vec<f32>) -> Shown {
        Shown {
            query: "q".into(),
            embedder: "e".into(),
            embedding,
            sources: vec![source("a"), source("b")],
            model: "m".into(),
        }
    }

    #[tokio::test]
    async fn ratings_boost_similar_queries_only_and_survive_restart() {
        let objects = objects();
        let playbook = Playbook::open(objects.clone()).await.unwrap();
        playbook.remember("chat-1", shown(vec![1.0, 0.0]));
        let outcome = playbook
            .rate(Feedback {
                id: "chat-1".into(),
                rating: 1.0,
                note: None,
                sources: vec![RatedSource {
                    corpus: "c".into(),
                    id: "a".into(),
                    rating: -1.0,
                }],
            })
            .await
            .unwrap();
        assert_eq!(outcome.sources[0].rating, -1.0);
        assert_eq!(outcome.sources[1].rating, 1.0);

        let config = BoostConfig::default();
        let expected = config.strength * 1f32.tanh();
        let reopened = Playbook::open(objects).await.unwrap();
        let boosts = reopened.boosts("e", &[1.0, 0.0], &config).await;
        assert!((boosts[&source("b")] - expected).abs() < 1e-3, "{boosts:?}");
        // Negative ratings weigh `negative_weight` of a positive one.
        let penalty = config.strength * config.negative_weight.tanh();
        assert!((boosts[&source("a")] + penalty).abs() < 1e-3, "{boosts:?}");
        // A dissimilar query, or another embedder's space, gets no votes.
        assert!(reopened.boosts("e", &[0.0, 1.0], &config).await.is_empty());
        assert!(
            reopened
                .boosts("other", &[1.0, 0.0], &config)
                .await
                .is_empty()
        );
        // A less similar query gets a weaker boost.
        let near = reopened.boosts("e", &[0.95, 0.31], &config).await;
        assert!(near[&source("b")] > 0.0 && near[&source("b")] < expected);

        assert!(
            reopened
                .best_match("e", &[1.0, 0.0], 0.95, 0.5)
                .await
                .is_some()
        );
        reopened.retire("chat-1").await.unwrap();
        assert!(reopened.boosts("e", &[1.0, 0.0], &config).await.is_empty());
        assert!(
            reopened
                .best_match("e", &[1.0, 0.0], 0.95, 0.5)
                .await
                .is_none()
        );
    }

    #[tokio::test]
    async fn long_queries_are_kept_cut_on_a_char_boundary() {
        let playbook = Playbook::open(objects()).await.unwrap();
        let mut long = shown(vec![1.0, 0.0]);
        // Two-byte characters, so the cut falls inside one unless it steps back.
        long.query = "é".repeat(MAX_QUERY_BYTES);
        playbook.remember("chat-1", long);
        let outcome = playbook
            .rate(Feedback {
                id: "chat-1".into(),
                rating: 1.0,
                note: None,
                sources: vec![],
            })
            .await
            .unwrap();
        assert!(outcome.query.len() <= MAX_QUERY_BYTES);
        assert!(outcome.query.len() >= MAX_QUERY_BYTES - 1);
        assert!(outcome.query.chars().all(|c| c == 'é'));
    }

    #[test]
    fn softmax_shares_sum_to_one_and_are_all_one_when_off() {
        let sims = [0.9f32, 0.7, 0.7];
        assert_eq!(softmax_shares(sims.iter().copied(), 0.0), [1.0, 1.0, 1.0]);
        let shares = softmax_shares(sims.iter().copied(), 0.1);
        assert!((shares.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(shares[0] > 0.7 && (shares[1] - shares[2]).abs() < 1e-9);
        assert!(softmax_shares(std::iter::empty(), 0.1).is_empty());
    }

    #[tokio::test]
    async fn a_clearly_nearest_past_query_leads_and_equally_near_ones_share() {
        let playbook = Playbook::open(objects()).await.unwrap();
        for (chat, id, embedding) in [
            ("chat-x", "x", vec![1.0, 0.0]),
            ("chat-y", "y", vec![0.6, 0.8]),
        ] {
            let mut shown = shown(embedding);
            shown.sources = vec![source(id)];
            playbook.remember(chat, shown);
            let feedback = Feedback {
                id: chat.into(),
                rating: 1.0,
                note: None,
                sources: Vec::new(),
            };
            playbook.rate(feedback).await.unwrap();
        }
        let config = BoostConfig {
            min_similarity: 0.0,
            similarity_temperature: 0.02,
            ..BoostConfig::default()
        };
        let full = |closeness: f32| config.strength * closeness.tanh();

        // x's query is the nearest by 0.4: it alone decides.
        let near_x = playbook.boosts("e", &[1.0, 0.0], &config).await;
        assert!(
            (near_x[&source("x")] - full(1.0)).abs() < 1e-3,
            "{near_x:?}"
        );
        let y = near_x.get(&source("y")).copied().unwrap_or(0.0);
        assert!(y < 1e-6, "{near_x:?}");

        // Halfway between them: each past query gets half a vote.
        let between = [0.894_427_2, 0.447_213_6];
        let shared = playbook.boosts("e", &between, &config).await;
        for id in ["x", "y"] {
            assert!(
                (shared[&source(id)] - full(0.5 * 0.894_427)).abs() < 1e-3,
                "{shared:?}"
            );
        }
        // With the softmax off both vote in full, as before.
        let off = BoostConfig {
            similarity_temperature: 0.0,
            ..config
        };
        let unshared = playbook.boosts("e", &between, &off).await;
        assert!(
            (unshared[&source("x")] - full(0.894_427)).abs() < 1e-3,
            "{unshared:?}"
        );
    }

    #[tokio::test]
    async fn old_votes_fade_and_bad_ratings_are_refused() {
        let objects = objects();
        let month_ago = now() - 30 * 86_400;
        let line = serde_json::json!({
            "outcome": {"id": "old", "query": "q", "model": "m", "rating": 1.0,
                        "sources": [{"corpus": "c", "id": "a", "rating": 1.0}],
                        "embedder": "e", "rated_at": month_ago},
            "embedding": [1.0, 0.0]
        });
        objects
            .put(
                "memory/playbook.jsonl",
                bytes::Bytes::from(format!("{line}\nnot json\n")),
            )
            .await
            .unwrap();
        let playbook = Playbook::open(objects).await.unwrap();
        assert_eq!(playbook.stats().await.skipped_lines, 1);
        let config = BoostConfig::default();
        let boost = playbook.boosts("e", &[1.0, 0.0], &config).await[&source("a")];
        // One half-life old: half the vote.
        assert!(
            (boost - config.strength * 0.5f32.tanh()).abs() < 1e-3,
            "{boost}"
        );

        playbook.remember("chat-2", shown(vec![1.0, 0.0]));
        for rating in [1.5, f32::NAN, -2.0] {
            let err = playbook
                .rate(Feedback {
                    id: "chat-2".into(),
                    rating,
                    note: None,
                    sources: Vec::new(),
                })
                .await;
            assert!(matches!(err, Err(MemoryError::InvalidInput(_))));
        }
        assert_eq!(playbook.stats().await.outcomes, 1);
    }
}
