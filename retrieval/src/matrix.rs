//! Matrix retrieval: one query against several corpora at once.
//!
//! 1. The query is embedded once per embedder the corpora use.
//! 2. Every corpus is searched in parallel for `candidates` hits.
//! 3. Hits are merged on one scale: corpora that share an embedder already
//!    score in the same cosine space, so their similarities are compared
//!    directly; when the corpora use different embedders, cosines of different
//!    models mean different things, so reciprocal rank fusion places them
//!    instead (`61 / (60 + rank)`, 1.0 for each corpus's best hit).
//! 4. [`relevance_filter`] keeps what is worth a model's context: a minimum
//!    similarity, no near-duplicates, at most `k` sources and a token budget.

use std::collections::{HashMap, HashSet};

use futures::future::try_join_all;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::store::Store;

/// One retrieved row on its way into a model's context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    pub corpus: String,
    pub id: String,
    pub text: String,
    /// Cosine similarity to the query in the corpus's embedding space.
    pub similarity: f32,
    /// The score on the common scale (see the module docs).
    pub score: f32,
    /// Added by the playbook from rated outcomes (0 when none).
    pub boost: f32,
}

impl Source {
    /// What sources are ranked by.
    pub fn final_score(&self) -> f32 {
        self.score + self.boost
    }

    /// A rough token count (4 bytes per token), enough for a budget.
    pub fn tokens(&self) -> usize {
        self.text.len().div_ceil(4)
    }
}

/// The query embedded once per embedder.
pub type QueryVectors = HashMap<String, Vec<f32>>;

/// Embeds `query` with every embedder `corpora` use that `vectors` lacks.
pub async fn embed_query(
    store: &Store,
    corpora: &[String],
    query: &str,
    vectors: &mut QueryVectors,
) -> Result<()> {
    for corpus in corpora {
        let embedder = store.corpus_embedder(corpus).await?;
        if let std::collections::hash_map::Entry::Vacant(slot) = vectors.entry(embedder) {
            let vector = store.embed_query(slot.key(), query).await?;
            slot.insert(vector);
        }
    }
    Ok(())
}

/// Searches `corpora` in parallel and merges their hits, best first.
/// `min_similarity` drops weak hits before the merge.
pub async fn search(
    store: &Store,
    corpora: &[String],
    vectors: &QueryVectors,
    candidates: usize,
    min_similarity: f32,
) -> Result<Vec<Source>> {
    let searches = corpora.iter().map(|corpus| async move {
        let embedder = store.corpus_embedder(corpus).await?;
        let Some(vector) = vectors.get(&embedder) else {
            return Ok((embedder, Vec::new()));
        };
        let hits = store.search_vector(corpus, vector, candidates).await?;
        let sources: Vec<Source> = hits
            .into_iter()
            .filter(|n| n.score >= min_similarity)
            .map(|n| Source {
                corpus: corpus.clone(),
                id: n.id,
                text: n.text,
                similarity: n.score,
                score: n.score,
                boost: 0.0,
            })
            .collect();
        Ok::<_, crate::StoreError>((embedder, sources))
    });
    let per_corpus = try_join_all(searches).await?;
    let embedders: HashSet<&str> = per_corpus.iter().map(|(e, _)| e.as_str()).collect();
    let fuse_ranks = embedders.len() > 1;
    let mut merged = Vec::new();
    for (_, sources) in per_corpus {
        for (rank, mut source) in sources.into_iter().enumerate() {
            if fuse_ranks {
                source.score = 61.0 / (60.0 + rank as f32 + 1.0);
            }
            merged.push(source);
        }
    }
    sort_best_first(&mut merged);
    Ok(merged)
}

/// Orders by final score, ties by corpus and id so the order is stable.
pub fn sort_best_first(sources: &mut [Source]) {
    sources.sort_by(|a, b| {
        b.final_score()
            .total_cmp(&a.final_score())
            .then_with(|| a.corpus.cmp(&b.corpus))
            .then_with(|| a.id.cmp(&b.id))
    });
}

/// What the relevance filter keeps.
#[derive(Debug, Clone, Copy)]
pub struct FilterLimits {
    /// At most this many sources.
    pub k: usize,
    /// Two sources whose word sets overlap this much (Jaccard) are duplicates; the lower goes.
    pub duplicate_overlap: f32,
    /// Total estimated tokens of the kept texts.
    pub token_budget: usize,
}

/// Keeps the best sources within the limits; `sources` must be sorted best first.
pub fn relevance_filter(sources: Vec<Source>, limits: FilterLimits) -> Vec<Source> {
    let mut kept: Vec<Source> = Vec::new();
    let mut kept_words: Vec<HashSet<String>> = Vec::new();
    let mut tokens = 0usize;
    for source in sources {
        if kept.len() >= limits.k {
            break;
        }
        if kept
            .iter()
            .any(|k| k.corpus == source.corpus && k.id == source.id)
        {
            continue;
        }
        let words = word_set(&source.text);
        if kept_words
            .iter()
            .any(|w| jaccard(w, &words) >= limits.duplicate_overlap)
        {
            continue;
        }
        let cost = source.tokens();
        if tokens + cost > limits.token_budget {
            // A smaller source further down may still fit.
            continue;
        }
        tokens += cost;
        kept_words.push(words);
        kept.push(source);
    }
    kept
}

fn word_set(text: &str) -> HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn jaccard(a: &HashSet<String>, b: &HashSet<String>) -> f32 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let shared = a.intersection(b).count();
    shared as f32 / (a.len() + b.len() - shared) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(corpus: &str, id: &str, text: &str, score: f32) -> Source {
        Source {
            corpus: corpus.into(),
            id: id.into(),
            text: text.into(),
            similarity: score,
            score,
            boost: 0.0,
        }
    }

    #[test]
    fn filter_drops_duplicates_keeps_k_and_budget() {
        let sources = vec![
            source("a", "1", "the quick brown fox jumps", 0.9),
            source("b", "7", "The quick brown fox jumps!", 0.8),
            source("a", "2", &"long text ".repeat(100), 0.7),
            source("a", "3", "a short different text", 0.6),
            source("a", "4", "yet another distinct passage", 0.5),
        ];
        let kept = relevance_filter(
            sources,
            FilterLimits {
                k: 2,
                duplicate_overlap: 0.9,
                token_budget: 50,
            },
        );
        let ids: Vec<&str> = kept.iter().map(|s| s.id.as_str()).collect();
        // b/7 duplicates a/1; a/2 is over the budget; k stops after two.
        assert_eq!(ids, ["1", "3"]);
    }

    #[test]
    fn boost_reorders() {
        let mut sources = vec![source("a", "1", "x", 0.8), source("a", "2", "y", 0.7)];
        sources[1].boost = 0.2;
        sort_best_first(&mut sources);
        assert_eq!(sources[0].id, "2");
    }
}
