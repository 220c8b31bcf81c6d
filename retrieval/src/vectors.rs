//! One usearch HNSW index per corpus (cosine, f32), keyed by row ordinal.
//!
//! Keys are `0..n` in ingest order; `docs[key]` is the row's id and the text
//! that was embedded, kept in memory so a search answers without touching the
//! Parquet files (the retrieval pre-hook is on every chat's path). Capacity is
//! reserved ahead and doubles when full, so adding rows does not rebuild. An
//! index is saved as two objects per catalog version,
//! `_vectors/<corpus>/<version>-<unique>.usearch` and `.docs.json`, and loaded back at start.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use crate::error::{Result, StoreError};

/// One indexed row: its id and the text that was embedded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Doc {
    pub id: String,
    pub text: String,
}

pub struct VectorIndex {
    index: Index,
    docs: Vec<Doc>,
    keys_by_id: HashMap<String, u64>,
    dimensions: usize,
}

impl std::fmt::Debug for VectorIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VectorIndex")
            .field("rows", &self.docs.len())
            .field("dimensions", &self.dimensions)
            .finish()
    }
}

fn options(dimensions: usize) -> IndexOptions {
    IndexOptions {
        dimensions,
        metric: MetricKind::Cos,
        // Half precision: a search is bound by fetching vectors from memory,
        // and f16 halves both that and the index's RAM; embeddings lose
        // nothing a ranking can see. Indexes saved as f32 load as they are
        // (the file records its scalar kind).
        quantization: ScalarKind::F16,
        connectivity: 16,
        expansion_add: 128,
        // 32: recall@10 0.9984 (f16; 0.9989 as f32) on 100k embedding-like
        // vectors at half the search time of 64; bench/results/prehook-20261202*.json.
        expansion_search: 32,
        multi: false,
    }
}

/// Concurrent searches and inserts each need a thread slot in usearch.
fn thread_slots() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .max(16)
}

fn reserve(index: &Index, capacity: usize) -> Result<()> {
    index
        .reserve_capacity_and_threads(capacity, thread_slots())
        .map_err(usearch_error)
}

fn usearch_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("usearch: {e}"))
}

/// One search hit: the row id, its text and its cosine similarity.
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbor {
    pub id: String,
    pub key: u64,
    pub score: f32,
    pub text: String,
}

impl VectorIndex {
    pub fn new(dimensions: usize) -> Result<Self> {
        let index = Index::new(&options(dimensions)).map_err(usearch_error)?;
        reserve(&index, 1024)?;
        Ok(Self {
            index,
            docs: Vec::new(),
            keys_by_id: HashMap::new(),
            dimensions,
        })
    }

    pub fn len(&self) -> usize {
        self.docs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// The row with this id (the first one, if ids repeat).
    pub fn docs(&self) -> &[Doc] {
        &self.docs
    }

    pub fn doc(&self, id: &str) -> Option<&Doc> {
        let key = usize::try_from(*self.keys_by_id.get(id)?).ok()?;
        self.docs.get(key)
    }

    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// The row with this id and its cosine similarity to `query`.
    pub fn similarity(&self, id: &str, query: &[f32]) -> Result<Option<(&Doc, f32)>> {
        let Some(&key) = self.keys_by_id.get(id) else {
            return Ok(None);
        };
        let Some(doc) = usize::try_from(key).ok().and_then(|k| self.docs.get(k)) else {
            return Ok(None);
        };
        let mut vector = vec![0f32; self.dimensions];
        if self.index.get(key, &mut vector).map_err(usearch_error)? == 0 {
            return Ok(None);
        }
        let (mut dot, mut nq, mut nv) = (0f32, 0f32, 0f32);
        for (q, v) in query.iter().zip(&vector) {
            dot += q * v;
            nq += q * q;
            nv += v * v;
        }
        let similarity = if nq == 0.0 || nv == 0.0 {
            0.0
        } else {
            dot / (nq.sqrt() * nv.sqrt())
        };
        Ok(Some((doc, similarity)))
    }

    /// Sets how many candidates a search visits (recall against speed).
    pub fn set_expansion_search(&self, n: usize) {
        self.index.change_expansion_search(n);
    }

    /// Appends rows; keys continue from the current size.
    pub fn add(&mut self, rows: Vec<(Doc, Vec<f32>)>) -> Result<()> {
        let needed = self.docs.len() + rows.len();
        if needed > self.index.capacity() {
            let mut capacity = self.index.capacity().max(1024);
            while capacity < needed {
                capacity *= 2;
            }
            reserve(&self.index, capacity)?;
        }
        if let Some((_, v)) = rows.iter().find(|(_, v)| v.len() != self.dimensions) {
            return Err(StoreError::Embed(format!(
                "a vector has {} dimensions, the index {}",
                v.len(),
                self.dimensions
            )));
        }
        let first = self.docs.len() as u64;
        // usearch inserts concurrently; spread the rows over the cores.
        let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let per_thread = rows.len().div_ceil(threads).max(1);
        let index = &self.index;
        std::thread::scope(|scope| {
            let workers: Vec<_> = rows
                .chunks(per_thread)
                .enumerate()
                .map(|(t, chunk)| {
                    scope.spawn(move || {
                        for (i, (_, vector)) in chunk.iter().enumerate() {
                            let key = first + (t * per_thread + i) as u64;
                            index.add(key, vector).map_err(usearch_error)?;
                        }
                        Ok::<(), StoreError>(())
                    })
                })
                .collect();
            workers.into_iter().try_for_each(|w| {
                w.join()
                    .map_err(|_| StoreError::Internal("an index worker panicked".into()))?
            })
        })?;
        for (doc, _) in rows {
            let key = self.docs.len() as u64;
            self.keys_by_id.entry(doc.id.clone()).or_insert(key);
            self.docs.push(doc);
        }
        Ok(())
    }

    /// The `k` nearest rows by cosine similarity, best first.
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<Neighbor>> {
        if self.docs.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let matches = self.index.search(query, k).map_err(usearch_error)?;
        Ok(self.neighbors(matches))
    }

    /// Brute-force search over every row (ground truth for recall).
    pub fn exact_search(&self, query: &[f32], k: usize) -> Result<Vec<Neighbor>> {
        if self.docs.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let matches = self.index.exact_search(query, k).map_err(usearch_error)?;
        Ok(self.neighbors(matches))
    }

    fn neighbors(&self, matches: usearch::ffi::Matches) -> Vec<Neighbor> {
        matches
            .keys
            .into_iter()
            .zip(matches.distances)
            .filter_map(|(key, distance)| {
                let doc = self.docs.get(usize::try_from(key).ok()?)?;
                Some(Neighbor {
                    id: doc.id.clone(),
                    key,
                    score: 1.0 - distance,
                    text: doc.text.clone(),
                })
            })
            .collect()
    }

    /// The index and the docs, ready to store.
    pub fn to_bytes(&self) -> Result<(Vec<u8>, Vec<u8>)> {
        let mut buffer = vec![0u8; self.index.serialized_length()];
        self.index
            .save_to_buffer(&mut buffer)
            .map_err(usearch_error)?;
        let docs =
            serde_json::to_vec(&self.docs).map_err(|e| StoreError::Internal(e.to_string()))?;
        Ok((buffer, docs))
    }

    pub fn from_bytes(index: &[u8], docs: &[u8], dimensions: usize) -> Result<Self> {
        let loaded = Index::new(&options(dimensions)).map_err(usearch_error)?;
        loaded.load_from_buffer(index).map_err(usearch_error)?;
        reserve(&loaded, loaded.capacity().max(loaded.size()))?;
        let docs: Vec<Doc> = serde_json::from_slice(docs)
            .map_err(|e| StoreError::Internal(format!("vector doc map: {e}")))?;
        if docs.len() != loaded.size() {
            return Err(StoreError::Internal(format!(
                "vector index holds {} rows but its doc map {}",
                loaded.size(),
                docs.len()
            )));
        }
        let mut keys_by_id = HashMap::with_capacity(docs.len());
        for (key, doc) in docs.iter().enumerate() {
            keys_by_id.entry(doc.id.clone()).or_insert(key as u64);
        }
        Ok(Self {
            index: loaded,
            docs,
            keys_by_id,
            dimensions,
        })
    }

    /// A copy to extend while the original keeps serving searches.
    pub fn duplicate(&self) -> Result<Self> {
        let (index, docs) = self.to_bytes()?;
        Self::from_bytes(&index, &docs, self.dimensions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    /// Deterministic, well-separated 16-dim unit vectors: no near-ties, so
    /// the nearest neighbour of a stored vector is itself, whatever order
    /// HNSW visits the graph in.
    fn spread(i: u64) -> Vec<f32> {
        let mut state = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let raw: Vec<f32> = (0..16)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        unit(&raw)
    }

    #[test]
    fn finds_nearest_grows_and_round_trips() {
        let mut index = VectorIndex::new(16).unwrap();
        let rows: Vec<(Doc, Vec<f32>)> = (0..3000)
            .map(|i| {
                let doc = Doc {
                    id: format!("row{i}"),
                    text: format!("text {i}"),
                };
                (doc, spread(i))
            })
            .collect();
        index.add(rows).unwrap();
        assert_eq!(index.len(), 3000);
        // Inserts run on several threads, so the graph (and which rare
        // stored vector a search misses) differs run to run: the test asks
        // for near-perfect recall of stored vectors, not for any one of them.
        let probes: Vec<u64> = (0..3000).step_by(30).collect();
        let top_hits = |index: &VectorIndex| -> Vec<Neighbor> {
            probes
                .iter()
                .map(|&i| index.search(&spread(i), 3).unwrap().remove(0))
                .collect()
        };
        let hits = top_hits(&index);
        let found = probes
            .iter()
            .zip(&hits)
            .filter(|(i, hit)| hit.id == format!("row{i}"))
            .count();
        assert!(
            found >= 97,
            "{found} of 100 stored vectors found themselves"
        );
        for hit in &hits {
            assert_eq!(hit.text, hit.id.replace("row", "text "));
        }
        let best = index.search(&spread(1500), 3).unwrap();
        assert_eq!(best.len(), 3);
        assert!(best[0].score > best[1].score && best[1].score >= best[2].score);
        assert!(
            best.iter().all(|hit| hit.score <= 1.001),
            "cosine similarity beyond 1: {best:?}"
        );
        assert_eq!(index.doc("row7").map(|d| d.text.as_str()), Some("text 7"));
        let (doc, sim) = index.similarity("row7", &spread(7)).unwrap().unwrap();
        assert_eq!(doc.id, "row7");
        assert!(sim > 0.999, "{sim}");
        let (_, far) = index.similarity("row7", &spread(8)).unwrap().unwrap();
        assert!(far < 0.9, "{far}");
        assert!(index.similarity("nope", &spread(1)).unwrap().is_none());
        let (bytes, ids) = index.to_bytes().unwrap();
        let back = VectorIndex::from_bytes(&bytes, &ids, 16).unwrap();
        // The same graph searched the same way: the very same answers.
        assert_eq!(top_hits(&back), hits);
        let bad = Doc {
            id: "bad".into(),
            text: String::new(),
        };
        assert!(index.add(vec![(bad, vec![1.0])]).is_err());
        assert_eq!(index.len(), 3000);
    }

    #[test]
    fn indexes_saved_in_full_precision_still_load_search_and_grow() {
        // What stores written before the switch to f16 hold.
        let old = Index::new(&IndexOptions {
            quantization: ScalarKind::F32,
            ..options(16)
        })
        .unwrap();
        reserve(&old, 100).unwrap();
        let docs: Vec<Doc> = (0..100)
            .map(|i| Doc {
                id: format!("row{i}"),
                text: format!("text {i}"),
            })
            .collect();
        for i in 0..100u64 {
            old.add(i, &spread(i)).unwrap();
        }
        let mut bytes = vec![0u8; old.serialized_length()];
        old.save_to_buffer(&mut bytes).unwrap();

        let docs_json = serde_json::to_vec(&docs).unwrap();
        let mut loaded = VectorIndex::from_bytes(&bytes, &docs_json, 16).unwrap();
        assert_eq!(loaded.search(&spread(42), 1).unwrap()[0].id, "row42");
        let (_, sim) = loaded.similarity("row42", &spread(42)).unwrap().unwrap();
        assert!(sim > 0.999_99, "full precision kept: {sim}");
        let new = Doc {
            id: "new".into(),
            text: "new".into(),
        };
        loaded.add(vec![(new, spread(1000))]).unwrap();
        assert_eq!(loaded.search(&spread(1000), 1).unwrap()[0].id, "new");
    }
}
