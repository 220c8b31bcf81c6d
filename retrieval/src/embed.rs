//! Embedders behind one trait, with a shared cache.
//!
//! - `local`: the built-in offline encoder (pocket-encoder, MiniLM, 384
//!   dimensions, weights compiled in). Loaded on first use, so an idle server
//!   does not hold its ~90 MB; batches are spread over the cores.
//! - `ollama/<model>`: Ollama's `/api/embed`.
//! - `openai/<model>`: any OpenAI-compatible `/embeddings`.
//!
//! [`Embedders`] caches vectors by (embedder, text) in a size-bounded moka cache,
//! so repeated queries are embedded once. Bulk ingest goes around the cache
//! ([`Embedders::embed_uncached`]): a large corpus would otherwise fill it
//! with texts asked once and evict the queries it is there for.

use std::sync::Arc;

use futures::future::BoxFuture;
use lakehouse_providers::http::Upstream;
use moka::future::Cache;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::OnceCell;

use crate::error::{Result, StoreError};

/// The built-in embedder's name and width.
pub const LOCAL: &str = "local";
/// A corpus with this embedder is not embedded: it is queried with SQL only.
pub const NONE: &str = "none";
pub const LOCAL_DIMENSIONS: usize = 384;

/// Turns texts into vectors.
pub trait Embedder: Send + Sync {
    fn name(&self) -> &str;
    /// Vectors in input order, one per text. `dimensions` asks for vectors
    /// of that many values (OpenAI's `dimensions`), which models that can
    /// shorten theirs honour; the callers check the width they get.
    fn embed<'a>(
        &'a self,
        texts: &'a [String],
        dimensions: Option<usize>,
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>>>;
}

/// The offline default.
#[derive(Default)]
pub struct LocalEmbedder {
    encoder: OnceCell<pocket_encoder::Encoder>,
}

impl LocalEmbedder {
    async fn encoder(&self) -> Result<pocket_encoder::Encoder> {
        self.encoder
            .get_or_try_init(|| async {
                tokio::task::spawn_blocking(pocket_encoder::Encoder::new)
                    .await
                    .map_err(|e| StoreError::Embed(format!("loader task failed: {e}")))?
                    .map_err(|e| StoreError::Embed(e.to_string()))
            })
            .await
            .cloned()
    }
}

/// The encoder reads only the first 128 tokens of a text and refuses texts
/// over 64 KiB and calls over 4 MiB: cutting at 16 KiB loses nothing it would
/// read and keeps a task's 256 texts within one call.
const LOCAL_MAX_TEXT_BYTES: usize = 16 * 1024;

/// What the encoder is given for `text`: at most [`LOCAL_MAX_TEXT_BYTES`]
/// (cut on a character boundary), and "-" for an empty row, which it refuses.
fn encoder_input(text: &str) -> String {
    if text.trim().is_empty() {
        return "-".to_owned();
    }
    text[..lakehouse_providers::char_floor(text, LOCAL_MAX_TEXT_BYTES)].to_owned()
}

impl Embedder for LocalEmbedder {
    fn name(&self) -> &str {
        LOCAL
    }

    fn embed<'a>(
        &'a self,
        texts: &'a [String],
        dimensions: Option<usize>,
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>>> {
        Box::pin(async move {
            if let Some(asked) = dimensions.filter(|d| *d != LOCAL_DIMENSIONS) {
                return Err(StoreError::InvalidInput(format!(
                    "{LOCAL} returns {LOCAL_DIMENSIONS} dimensions and cannot shorten them to {asked}"
                )));
            }
            let encoder = self.encoder().await?;
            let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
            let per_task = texts.len().div_ceil(cores).clamp(1, 256);
            let tasks: Vec<_> = texts
                .chunks(per_task)
                .map(|chunk| {
                    let encoder = encoder.clone();
                    let chunk: Vec<String> = chunk.iter().map(|t| encoder_input(t)).collect();
                    tokio::task::spawn_blocking(move || encoder.embed(&chunk))
                })
                .collect();
            let mut out = Vec::with_capacity(texts.len());
            for task in tasks {
                let vectors = task
                    .await
                    .map_err(|e| StoreError::Embed(format!("embedding task failed: {e}")))?
                    .map_err(|e| StoreError::Embed(e.to_string()))?;
                out.extend(vectors);
            }
            Ok(out)
        })
    }
}

/// Ollama `/api/embed`.
pub struct OllamaEmbedder {
    name: String,
    model: String,
    upstream: Upstream,
}

impl OllamaEmbedder {
    pub fn new(model: &str, upstream: Upstream) -> Self {
        Self {
            name: format!("ollama/{model}"),
            model: model.to_owned(),
            upstream,
        }
    }
}

impl Embedder for OllamaEmbedder {
    fn name(&self) -> &str {
        &self.name
    }

    fn embed<'a>(
        &'a self,
        texts: &'a [String],
        dimensions: Option<usize>,
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>>> {
        Box::pin(async move {
            #[derive(Deserialize)]
            struct Answer {
                embeddings: Vec<Vec<f32>>,
            }
            let mut body = json!({"model": self.model, "input": texts, "truncate": true});
            if let Some(dimensions) = dimensions {
                body["dimensions"] = dimensions.into();
            }
            let response = self.upstream.post_json("/api/embed", &body, &[]).await?;
            let answer: Answer = response.json().await?;
            check_count(&self.name, texts.len(), answer.embeddings)
        })
    }
}

/// Any OpenAI-compatible `/embeddings`.
pub struct OpenAiEmbedder {
    name: String,
    model: String,
    upstream: Upstream,
}

impl OpenAiEmbedder {
    pub fn new(name: &str, model: &str, upstream: Upstream) -> Self {
        Self {
            name: name.to_owned(),
            model: model.to_owned(),
            upstream,
        }
    }
}

impl Embedder for OpenAiEmbedder {
    fn name(&self) -> &str {
        &self.name
    }

    fn embed<'a>(
        &'a self,
        texts: &'a [String],
        dimensions: Option<usize>,
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>>> {
        Box::pin(async move {
            #[derive(Deserialize)]
            struct Item {
                index: usize,
                embedding: Vec<f32>,
            }
            #[derive(Deserialize)]
            struct Answer {
                data: Vec<Item>,
            }
            let mut body = json!({"model": self.model, "input": texts, "encoding_format": "float"});
            if let Some(dimensions) = dimensions {
                body["dimensions"] = dimensions.into();
            }
            let response = self.upstream.post_json("/embeddings", &body, &[]).await?;
            let mut answer: Answer = response.json().await?;
            answer.data.sort_by_key(|i| i.index);
            check_count(
                &self.name,
                texts.len(),
                answer.data.into_iter().map(|i| i.embedding).collect(),
            )
        })
    }
}

fn check_count(name: &str, expected: usize, vectors: Vec<Vec<f32>>) -> Result<Vec<Vec<f32>>> {
    if vectors.len() == expected {
        Ok(vectors)
    } else {
        Err(StoreError::Embed(format!(
            "{name} returned {} vectors for {expected} texts",
            vectors.len()
        )))
    }
}

/// A cached vector's key: the embedder, the width asked for (`dimensions`,
/// `None` for the embedder's own) and the text.
type CacheKey = (String, Option<usize>, String);

/// The embedders by name, behind one cache.
#[derive(Clone)]
pub struct Embedders {
    by_name: Arc<std::collections::HashMap<String, Arc<dyn Embedder>>>,
    cache: Cache<CacheKey, Arc<Vec<f32>>>,
    stats: Arc<CacheCounters>,
}

#[derive(Debug, Default)]
struct CacheCounters {
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
}

/// The embedding cache's totals since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: u64,
    /// Weighted size of the cached vectors and keys.
    pub bytes: u64,
}

impl std::fmt::Debug for Embedders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedders")
            .field("names", &self.names())
            .finish()
    }
}

impl Embedders {
    /// `cache_bytes` bounds the cache by the size of the vectors it holds.
    pub fn new(embedders: Vec<Arc<dyn Embedder>>, cache_bytes: u64) -> Self {
        let by_name = embedders
            .into_iter()
            .map(|e| (e.name().to_owned(), e))
            .collect();
        let cache = Cache::builder()
            .max_capacity(cache_bytes)
            .weigher(|key: &CacheKey, value: &Arc<Vec<f32>>| {
                let bytes = key.0.len() + key.2.len() + value.len() * 4 + 72;
                u32::try_from(bytes).unwrap_or(u32::MAX)
            })
            .build();
        Self {
            by_name: Arc::new(by_name),
            cache,
            stats: Arc::default(),
        }
    }

    /// Hits, misses and size of the embedding cache.
    pub fn cache_stats(&self) -> CacheStats {
        use std::sync::atomic::Ordering::Relaxed;
        CacheStats {
            hits: self.stats.hits.load(Relaxed),
            misses: self.stats.misses.load(Relaxed),
            entries: self.cache.entry_count(),
            bytes: self.cache.weighted_size(),
        }
    }

    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    fn embedder(&self, name: &str) -> Result<&Arc<dyn Embedder>> {
        self.by_name.get(name).ok_or_else(|| StoreError::NotFound {
            what: "embedder",
            name: name.to_owned(),
        })
    }

    /// Embeds a bulk batch (an ingest) without reading or filling the cache.
    pub async fn embed_uncached(&self, name: &str, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        self.embedder(name)?.embed(texts, None).await
    }

    /// Embeds `texts` with `name` into vectors of `dimensions` values (where
    /// the embedder takes it: Ollama, OpenAI-compatible). An upstream that
    /// answers another width ignored the request: an error, not vectors of
    /// the wrong size.
    pub async fn embed_dimensions(
        &self,
        name: &str,
        texts: &[String],
        dimensions: usize,
    ) -> Result<Vec<Vec<f32>>> {
        self.embed_cached(name, texts, Some(dimensions)).await
    }

    /// Embeds `texts` with `name`, answering repeated texts from the cache.
    pub async fn embed(&self, name: &str, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        self.embed_cached(name, texts, None).await
    }

    /// Both of the above: the cache holds each width asked for apart.
    async fn embed_cached(
        &self,
        name: &str,
        texts: &[String],
        dimensions: Option<usize>,
    ) -> Result<Vec<Vec<f32>>> {
        let embedder = self.embedder(name)?;
        let key = |text: String| (name.to_owned(), dimensions, text);
        let mut out: Vec<Option<Arc<Vec<f32>>>> = Vec::with_capacity(texts.len());
        let mut missing: Vec<String> = Vec::new();
        let mut missing_at: Vec<usize> = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            let hit = self.cache.get(&key(text.clone())).await;
            if hit.is_none() {
                missing.push(text.clone());
                missing_at.push(i);
            }
            out.push(hit);
        }
        {
            use std::sync::atomic::Ordering::Relaxed;
            let misses = missing.len() as u64;
            self.stats.misses.fetch_add(misses, Relaxed);
            self.stats
                .hits
                .fetch_add(texts.len() as u64 - misses, Relaxed);
        }
        if !missing.is_empty() {
            let fresh = embedder.embed(&missing, dimensions).await?;
            if let Some((wanted, other)) =
                dimensions.and_then(|d| fresh.iter().find(|v| v.len() != d).map(|v| (d, v.len())))
            {
                return Err(StoreError::Embed(format!(
                    "{name} answered {other} dimensions when asked for {wanted}"
                )));
            }
            for ((i, text), vector) in missing_at.into_iter().zip(missing).zip(fresh) {
                let vector = Arc::new(vector);
                self.cache.insert(key(text), Arc::clone(&vector)).await;
                out[i] = Some(vector);
            }
        }
        out.into_iter()
            .map(|v| {
                v.map(|v| v.as_ref().clone())
                    .ok_or_else(|| StoreError::Embed("a vector is missing".into()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts the texts it is asked to embed.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl Embedder for Counting {
        fn name(&self) -> &str {
            "counting"
        }
        fn embed<'a>(
            &'a self,
            texts: &'a [String],
            dimensions: Option<usize>,
        ) -> BoxFuture<'a, Result<Vec<Vec<f32>>>> {
            self.0.fetch_add(texts.len(), Ordering::SeqCst);
            let width = dimensions.unwrap_or(1);
            Box::pin(async move { Ok(texts.iter().map(|t| vec![t.len() as f32; width]).collect()) })
        }
    }

    #[test]
    fn encoder_input_is_cut_on_a_char_boundary_and_never_empty() {
        assert_eq!(encoder_input("  "), "-");
        assert_eq!(encoder_input("short"), "short");
        let long = "é".repeat(LOCAL_MAX_TEXT_BYTES); // two bytes each
        let cut = encoder_input(&format!("a{long}"));
        assert_eq!(cut.len(), LOCAL_MAX_TEXT_BYTES - 1, "a + whole é only");
        assert!(long.starts_with(&cut[1..]));
    }

    #[tokio::test]
    async fn the_local_embedder_takes_texts_longer_than_its_encoder_accepts() {
        let local = LocalEmbedder::default();
        let head = "a package of command line tools for working with archives. ".repeat(300);
        let texts = vec![format!("{head}{}", "x".repeat(100 * 1024)), head.clone()];
        let vectors = local.embed(&texts, None).await.unwrap();
        assert_eq!(vectors.len(), 2);
        assert_eq!(vectors[0].len(), LOCAL_DIMENSIONS);
        // The encoder reads the first 128 tokens: the long tail changes nothing.
        assert_eq!(vectors[0], vectors[1]);
    }

    #[tokio::test]
    async fn queries_are_cached_and_bulk_batches_leave_the_cache_alone() {
        let counting = Arc::new(Counting::default());
        let embedders = Embedders::new(vec![counting.clone()], 1 << 20);
        let query = vec!["what is a lakehouse".to_owned()];

        assert_eq!(embedders.embed("counting", &query).await.unwrap(), [[19.0]]);
        assert_eq!(embedders.embed("counting", &query).await.unwrap(), [[19.0]]);
        assert_eq!(counting.0.load(Ordering::SeqCst), 1, "the repeat is a hit");

        let docs: Vec<String> = (0..100).map(|i| format!("document {i}")).collect();
        let vectors = embedders.embed_uncached("counting", &docs).await.unwrap();
        assert_eq!(vectors.len(), 100);
        embedders.cache.run_pending_tasks().await;
        let stats = embedders.cache_stats();
        assert_eq!((stats.hits, stats.misses, stats.entries), (1, 1, 1));

        embedders
            .embed_uncached("counting", &docs[..1])
            .await
            .unwrap();
        assert_eq!(
            counting.0.load(Ordering::SeqCst),
            102,
            "bulk never reads the cache"
        );
        assert!(embedders.embed("nope", &query).await.is_err());
    }

    #[tokio::test]
    async fn each_width_asked_for_is_cached_apart() {
        let counting = Arc::new(Counting::default());
        let embedders = Embedders::new(vec![counting.clone()], 1 << 20);
        let query = vec!["abc".to_owned()];
        for _ in 0..2 {
            assert_eq!(
                embedders
                    .embed_dimensions("counting", &query, 2)
                    .await
                    .unwrap(),
                [[3.0, 3.0]]
            );
            assert_eq!(embedders.embed("counting", &query).await.unwrap(), [[3.0]]);
        }
        assert_eq!(counting.0.load(Ordering::SeqCst), 2, "one miss per width");
    }
}
