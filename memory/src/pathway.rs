//! Pathway memory: Mem0-style versioned traces, scoped by namespace.
//!
//! - **add** stores a new trace (version 1);
//! - **update** edits a trace in place (a fix, not a new fact);
//! - **revise** stores a new version linked to the previous one, which stops
//!   being searched but stays in history;
//! - **retire** excludes a trace from search and keeps it in history;
//! - **history** walks a version chain newest first; a cycle (only possible in
//!   a damaged log) is detected and reported, never looped on;
//! - **search** ranks the live traces of a namespace by embedding similarity,
//!   with metadata filters.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use lakehouse_retrieval::embed::Embedders;
use lakehouse_retrieval::objects::Objects;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::{Mutex, RwLock};

use crate::error::{MemoryError, Result};
use crate::log::{CompactReport, JsonlLog};
use crate::vector::cosine;

/// One version of a memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    pub id: String,
    pub namespace: String,
    pub text: String,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    pub version: u32,
    /// The version this one revised.
    #[serde(default)]
    pub previous: Option<String>,
    /// The version that revised this one.
    #[serde(default)]
    pub superseded_by: Option<String>,
    #[serde(default)]
    pub retired: bool,
    pub created_at: u64,
    pub updated_at: u64,
}

impl Trace {
    /// Searchable: the newest version and not retired.
    pub fn is_live(&self) -> bool {
        !self.retired && self.superseded_by.is_none()
    }
}

/// One log line: a whole trace and its embedding.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    trace: Trace,
    #[serde(default)]
    embedding: Vec<f32>,
}

/// A new memory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTrace {
    pub namespace: String,
    pub text: String,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// An in-place edit; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceEdit {
    pub text: Option<String>,
    pub metadata: Option<Map<String, Value>>,
}

/// A new version of a memory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revision {
    pub text: String,
    /// Absent: the previous version's metadata is kept.
    pub metadata: Option<Map<String, Value>>,
}

fn default_k() -> usize {
    5
}

/// A similarity search within one namespace.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    pub namespace: String,
    pub query: String,
    #[serde(default = "default_k")]
    pub k: usize,
    /// Hits below this cosine similarity are dropped.
    #[serde(default)]
    pub min_score: f32,
    /// Metadata fields that must be equal.
    #[serde(default)]
    pub filter: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemoryHit {
    pub score: f32,
    pub trace: Trace,
}

/// A version chain, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct History {
    pub versions: Vec<Trace>,
    /// The id at which the chain looped back on itself, if it did.
    pub cycle_at: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PathwayStats {
    pub traces: usize,
    pub live: usize,
    pub namespaces: usize,
    /// Log lines skipped at replay because they could not be read.
    pub skipped_lines: u64,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn not_found(id: &str) -> MemoryError {
    MemoryError::NotFound {
        what: "trace",
        id: id.to_owned(),
    }
}

/// Longest accepted namespace, memory text and query.
const MAX_NAMESPACE: usize = 256;
const MAX_TEXT: usize = 64 * 1024;

fn check_namespace(namespace: &str) -> Result<()> {
    if namespace.is_empty() || namespace.len() > MAX_NAMESPACE {
        return Err(MemoryError::InvalidInput(format!(
            "namespace must be 1-{MAX_NAMESPACE} bytes"
        )));
    }
    Ok(())
}

fn check_text(text: &str) -> Result<()> {
    if text.trim().is_empty() {
        return Err(MemoryError::InvalidInput("text must not be empty".into()));
    }
    if text.len() > MAX_TEXT {
        return Err(MemoryError::InvalidInput(format!(
            "text is {} bytes, over the {MAX_TEXT} byte limit",
            text.len()
        )));
    }
    Ok(())
}

#[derive(Debug)]
pub struct Pathway {
    log: JsonlLog,
    embedders: Embedders,
    embedder: String,
    entries: RwLock<HashMap<String, Entry>>,
    /// Serialises writers so the log and the map never disagree.
    write: Mutex<()>,
    skipped: AtomicU64,
}

impl Pathway {
    /// Opens `memory/pathway` and replays it.
    pub async fn open(objects: Objects, embedders: Embedders, embedder: &str) -> Result<Self> {
        let log = JsonlLog::new(objects, "memory/pathway");
        let replay = log.replay::<Entry>().await?;
        let mut entries = HashMap::new();
        for entry in replay.records {
            entries.insert(entry.trace.id.clone(), entry);
        }
        if replay.skipped > 0 {
            tracing::warn!(
                skipped = replay.skipped,
                "pathway memory: unreadable lines skipped"
            );
        }
        Ok(Self {
            log,
            embedders,
            embedder: embedder.to_owned(),
            entries: RwLock::new(entries),
            write: Mutex::new(()),
            skipped: AtomicU64::new(replay.skipped),
        })
    }

    /// Embeds a text with the pathway's embedder (cached).
    pub async fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        let mut vectors = self
            .embedders
            .embed(&self.embedder, &[text.to_owned()])
            .await?;
        vectors
            .pop()
            .ok_or_else(|| MemoryError::InvalidInput("the embedder returned no vector".into()))
    }

    /// Persists `changed` and then makes it visible.
    async fn commit(&self, changed: Vec<Entry>) -> Result<()> {
        self.log.append(&changed).await?;
        let mut entries = self.entries.write().await;
        for entry in changed {
            entries.insert(entry.trace.id.clone(), entry);
        }
        Ok(())
    }

    pub async fn add(&self, new: NewTrace) -> Result<Trace> {
        check_namespace(&new.namespace)?;
        check_text(&new.text)?;
        let embedding = self.embed_query(&new.text).await?;
        let at = now();
        let trace = Trace {
            id: lakehouse_providers::openai::new_id("mem_"),
            namespace: new.namespace,
            text: new.text,
            metadata: new.metadata,
            version: 1,
            previous: None,
            superseded_by: None,
            retired: false,
            created_at: at,
            updated_at: at,
        };
        let _guard = self.write.lock().await;
        self.commit(vec![Entry {
            trace: trace.clone(),
            embedding,
        }])
        .await?;
        Ok(trace)
    }

    async fn entry(&self, id: &str) -> Result<Entry> {
        self.entries
            .read()
            .await
            .get(id)
            .cloned()
            .ok_or_else(|| not_found(id))
    }

    pub async fn get(&self, id: &str) -> Result<Trace> {
        Ok(self.entry(id).await?.trace)
    }

    pub async fn update(&self, id: &str, edit: TraceEdit) -> Result<Trace> {
        let embedding = match &edit.text {
            Some(text) => {
                check_text(text)?;
                Some(self.embed_query(text).await?)
            }
            None => None,
        };
        let _guard = self.write.lock().await;
        let mut entry = self.entry(id).await?;
        if let Some(text) = edit.text {
            entry.trace.text = text;
        }
        if let Some(metadata) = edit.metadata {
            entry.trace.metadata = metadata;
        }
        if let Some(embedding) = embedding {
            entry.embedding = embedding;
        }
        entry.trace.updated_at = now();
        let trace = entry.trace.clone();
        self.commit(vec![entry]).await?;
        Ok(trace)
    }

    /// Stores a new version of `id`; only the newest version can be revised.
    pub async fn revise(&self, id: &str, revision: Revision) -> Result<Trace> {
        check_text(&revision.text)?;
        let embedding = self.embed_query(&revision.text).await?;
        let _guard = self.write.lock().await;
        let mut old = self.entry(id).await?;
        if let Some(newer) = &old.trace.superseded_by {
            return Err(MemoryError::InvalidInput(format!(
                "trace {id} was already revised by {newer}; revise the newest version"
            )));
        }
        let at = now();
        let trace = Trace {
            id: lakehouse_providers::openai::new_id("mem_"),
            namespace: old.trace.namespace.clone(),
            text: revision.text,
            metadata: revision
                .metadata
                .unwrap_or_else(|| old.trace.metadata.clone()),
            version: old.trace.version.saturating_add(1),
            previous: Some(id.to_owned()),
            superseded_by: None,
            retired: false,
            created_at: at,
            updated_at: at,
        };
        old.trace.superseded_by = Some(trace.id.clone());
        old.trace.updated_at = at;
        self.commit(vec![
            old,
            Entry {
                trace: trace.clone(),
                embedding,
            },
        ])
        .await?;
        Ok(trace)
    }

    /// Excludes `id` from search; it stays in history. Retiring twice is harmless.
    pub async fn retire(&self, id: &str) -> Result<Trace> {
        let _guard = self.write.lock().await;
        let mut entry = self.entry(id).await?;
        if entry.trace.retired {
            return Ok(entry.trace);
        }
        entry.trace.retired = true;
        entry.trace.updated_at = now();
        let trace = entry.trace.clone();
        self.commit(vec![entry]).await?;
        Ok(trace)
    }

    /// The whole version chain `id` belongs to, newest first.
    pub async fn history(&self, id: &str) -> Result<History> {
        let entries = self.entries.read().await;
        let start = entries.get(id).ok_or_else(|| not_found(id))?;
        // Forward to the newest version, then back to the first.
        let mut seen = HashSet::from([start.trace.id.clone()]);
        let mut newest = &start.trace;
        let mut cycle_at = None;
        while let Some(next) = newest.superseded_by.as_ref().and_then(|n| entries.get(n)) {
            if !seen.insert(next.trace.id.clone()) {
                cycle_at = Some(next.trace.id.clone());
                break;
            }
            newest = &next.trace;
        }
        let mut versions = vec![newest.clone()];
        let mut seen = HashSet::from([newest.id.clone()]);
        let mut current = newest;
        while let Some(prev) = current.previous.as_ref().and_then(|p| entries.get(p)) {
            if !seen.insert(prev.trace.id.clone()) {
                cycle_at.get_or_insert_with(|| prev.trace.id.clone());
                break;
            }
            versions.push(prev.trace.clone());
            current = &prev.trace;
        }
        Ok(History { versions, cycle_at })
    }

    /// The live traces of a namespace most similar to the query.
    pub async fn search(&self, query: &SearchQuery) -> Result<Vec<MemoryHit>> {
        check_namespace(&query.namespace)?;
        check_text(&query.query)?;
        let vector = self.embed_query(&query.query).await?;
        Ok(self.search_vector(query, &vector).await)
    }

    /// [`Self::search`] with the query already embedded (by this pathway's embedder).
    pub async fn search_vector(&self, query: &SearchQuery, vector: &[f32]) -> Vec<MemoryHit> {
        let entries = self.entries.read().await;
        let mut hits: Vec<MemoryHit> = entries
            .values()
            .filter(|e| e.trace.namespace == query.namespace && e.trace.is_live())
            .filter(|e| {
                query
                    .filter
                    .iter()
                    .all(|(k, v)| e.trace.metadata.get(k) == Some(v))
            })
            .map(|e| MemoryHit {
                score: cosine(vector, &e.embedding),
                trace: e.trace.clone(),
            })
            .filter(|h| h.score >= query.min_score)
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.truncate(query.k.clamp(1, 100));
        hits
    }

    /// The embedder traces are embedded with.
    pub fn embedder(&self) -> &str {
        &self.embedder
    }

    /// Traces of a namespace, newest first (all versions when `all`).
    pub async fn list(&self, namespace: &str, all: bool, limit: usize) -> Vec<Trace> {
        let entries = self.entries.read().await;
        let mut traces: Vec<Trace> = entries
            .values()
            .filter(|e| e.trace.namespace == namespace && (all || e.trace.is_live()))
            .map(|e| e.trace.clone())
            .collect();
        traces.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.id.cmp(&a.id))
        });
        traces.truncate(limit);
        traces
    }

    pub async fn stats(&self) -> PathwayStats {
        let entries = self.entries.read().await;
        let namespaces: HashSet<&str> = entries
            .values()
            .map(|e| e.trace.namespace.as_str())
            .collect();
        PathwayStats {
            traces: entries.len(),
            live: entries.values().filter(|e| e.trace.is_live()).count(),
            namespaces: namespaces.len(),
            skipped_lines: self.skipped.load(Ordering::Relaxed),
        }
    }

    /// Folds the log into one base object (see [`JsonlLog::compact`]).
    pub async fn compact(&self) -> Result<CompactReport> {
        let _guard = self.write.lock().await;
        self.log.compact(|e: &Entry| e.trace.id.clone()).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::future::BoxFuture;
    use lakehouse_retrieval::embed::Embedder;
    use lakehouse_retrieval::objects::{Caps, StoreConfig};

    use super::*;

    /// Bag-of-letters vectors: deterministic and similar for similar texts.
    struct Letters;

    impl Embedder for Letters {
        fn name(&self) -> &str {
            "letters"
        }
        fn embed<'a>(
            &'a self,
            texts: &'a [String],
            _dimensions: Option<usize>,
        ) -> BoxFuture<'a, lakehouse_retrieval::Result<Vec<Vec<f32>>>> {
            Box::pin(async move {
                Ok(texts
                    .iter()
                    .map(|t| {
                        let mut v = vec![0f32; 26];
                        for c in t
                            .to_ascii_lowercase()
                            .bytes()
                            .filter(u8::is_ascii_lowercase)
                        {
                            v[(c - b'a') as usize] += 1.0;
                        }
                        v
                    })
                    .collect())
            })
        }
    }

    fn objects() -> Objects {
        let root = std::env::temp_dir().join(lakehouse_providers::openai::new_id("pathway-test-"));
        Objects::open(&StoreConfig::Local {
            root,
            caps: Caps::default(),
        })
        .unwrap()
    }

    async fn open(objects: &Objects) -> Pathway {
        let embedders = Embedders::new(vec![Arc::new(Letters)], 1 << 20);
        Pathway::open(objects.clone(), embedders, "letters")
            .await
            .unwrap()
    }

    fn new(namespace: &str, text: &str) -> NewTrace {
        NewTrace {
            namespace: namespace.into(),
            text: text.into(),
            metadata: Map::new(),
        }
    }

    #[tokio::test]
    async fn operations_survive_a_restart() {
        let objects = objects();
        let pathway = open(&objects).await;
        let a = pathway.add(new("ns", "likes green tea")).await.unwrap();
        let b = pathway
            .revise(
                &a.id,
                Revision {
                    text: "likes black tea".into(),
                    metadata: None,
                },
            )
            .await
            .unwrap();
        let c = pathway.add(new("ns", "rides a bicycle")).await.unwrap();
        pathway.retire(&c.id).await.unwrap();
        pathway
            .update(
                &b.id,
                TraceEdit {
                    text: None,
                    metadata: Some(Map::from_iter([("topic".into(), "tea".into())])),
                },
            )
            .await
            .unwrap();

        let again = open(&objects).await;
        assert_eq!(
            again.get(&b.id).await.unwrap(),
            pathway.get(&b.id).await.unwrap()
        );
        let history = again.history(&a.id).await.unwrap();
        let chain: Vec<&str> = history.versions.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(chain, [b.id.as_str(), a.id.as_str()]);
        assert!(history.cycle_at.is_none());
        let query = SearchQuery {
            namespace: "ns".into(),
            query: "tea".into(),
            k: 10,
            min_score: -1.0,
            filter: Map::from_iter([("topic".into(), "tea".into())]),
        };
        let hits = again.search(&query).await.unwrap();
        let ids: Vec<&str> = hits.iter().map(|h| h.trace.id.as_str()).collect();
        assert_eq!(
            ids,
            [b.id.as_str()],
            "revised and retired traces are not searched"
        );
        let other = SearchQuery {
            namespace: "elsewhere".into(),
            ..query
        };
        assert!(again.search(&other).await.unwrap().is_empty());

        let report = again.compact().await.unwrap();
        assert_eq!(report.records, 3);
        let compacted = open(&objects).await;
        assert_eq!(compacted.stats().await.traces, 3);
        assert_eq!(
            compacted.get(&b.id).await.unwrap(),
            again.get(&b.id).await.unwrap()
        );
    }

    #[tokio::test]
    async fn bad_lines_are_skipped_and_a_cycle_is_reported() {
        let objects = objects();
        let trace = |id: &str, previous: &str, superseded_by: &str| {
            json_line(&serde_json::json!({
                "trace": {"id": id, "namespace": "ns", "text": id, "version": 1,
                          "previous": previous, "superseded_by": superseded_by,
                          "created_at": 1, "updated_at": 1},
                "embedding": [1.0, 0.0]
            }))
        };
        let mut log = String::new();
        log.push_str(&trace("a", "b", "b"));
        log.push_str("{\"trace\": this is not json}\n");
        log.push_str(&trace("b", "a", "a"));
        log.push_str("{\"trace\": {\"id\": \"trunc"); // a torn last line
        objects
            .put("memory/pathway.jsonl", bytes::Bytes::from(log))
            .await
            .unwrap();

        let pathway = open(&objects).await;
        let stats = pathway.stats().await;
        assert_eq!(stats.traces, 2);
        assert_eq!(stats.skipped_lines, 2);
        let history = pathway.history("a").await.unwrap();
        assert!(history.cycle_at.is_some());
        assert!(history.versions.len() <= 2);
    }

    fn json_line(value: &serde_json::Value) -> String {
        format!("{value}\n")
    }

    #[tokio::test]
    async fn bad_input_is_refused_and_changes_nothing() {
        let objects = objects();
        let pathway = open(&objects).await;
        assert!(pathway.add(new("", "x")).await.is_err());
        assert!(pathway.add(new("ns", "  ")).await.is_err());
        assert!(pathway.retire("mem_nope").await.is_err());
        assert_eq!(pathway.stats().await.traces, 0);
    }
}
