//! The store as the proxy and the CLI use it: corpora (catalog + Parquet +
//! HNSW index), SQL, search and embeddings behind one handle.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, RwLock};

use crate::catalog::{
    Catalog, CorpusSettings, DataFile, Manifest, VectorsRef, check_schema, now, validate_name,
};
use crate::duck::{self, Format, QueryEngine, QueryLimits, QueryResult, ViewSource};
use crate::embed::{Embedders, NONE};
use crate::error::{Result, StoreError};
use crate::objects::Objects;
use crate::vectors::{Doc, Neighbor, VectorIndex};

/// How far an ingest has come, for progress bars. Calls are cheap and may be ignored.
pub trait Progress: Send + Sync {
    /// A new stage starts (`parse`, `write`, `embed`, `index`) with `total` units.
    fn stage(&self, name: &str, total: u64);
    fn advance(&self, done: u64);
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn stage(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
}

/// Most rows one search returns.
pub const MAX_SEARCH_K: usize = 1000;
/// Texts per embedding call during ingest.
const EMBED_BATCH: usize = 256;
/// How many times an ingest indexes its rows again when other processes keep
/// registering versions of the corpus meanwhile.
const MAX_REINDEX: usize = 3;

#[derive(Debug, Clone, Serialize)]
pub struct IngestReport {
    pub corpus: String,
    /// False when the same content was already registered (nothing changed).
    pub added: bool,
    pub rows: u64,
    pub file: String,
    pub version: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    pub id: String,
    pub score: f32,
    pub row: Map<String, Value>,
}

struct LoadedIndex {
    index_key: String,
    index: Arc<VectorIndex>,
}

pub struct Store {
    objects: Objects,
    catalog: Catalog,
    query: Arc<QueryEngine>,
    embedders: Embedders,
    limits: QueryLimits,
    indexes: RwLock<HashMap<String, LoadedIndex>>,
    ingest_locks: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("objects", &self.objects)
            .finish()
    }
}

fn searchable_embedder(manifest: &Manifest) -> Result<&str> {
    if manifest.settings.embedder == NONE {
        return Err(StoreError::InvalidInput(format!(
            "corpus {:?} has no embedder (\"none\"); query it with SQL",
            manifest.name
        )));
    }
    Ok(&manifest.settings.embedder)
}

/// Refuses rows without an id (null or blank) and ids two rows share:
/// search answers rows by id, so each id must name exactly one. Names up
/// to three offenders, rows without an id first, then by id.
fn check_ids(id_column: &str, rows: &[(String, String)]) -> Result<()> {
    let mut counts: HashMap<&str, u64> = HashMap::with_capacity(rows.len());
    for (id, _) in rows {
        let key = if id.trim().is_empty() {
            ""
        } else {
            id.as_str()
        };
        *counts.entry(key).or_default() += 1;
    }
    let mut offenders: Vec<(&str, u64)> = counts
        .into_iter()
        .filter(|&(id, n)| id.is_empty() || n > 1)
        .collect();
    if offenders.is_empty() {
        return Ok(());
    }
    offenders.sort_unstable();
    let named: Vec<String> = offenders
        .iter()
        .take(3)
        .map(|&(id, n)| match id {
            "" => format!("{n} row(s) without an id"),
            id => format!("{id:?} on {n} rows"),
        })
        .collect();
    Err(StoreError::InvalidInput(format!(
        "column {id_column:?} must give every row its own non-empty id: {}",
        named.join(", ")
    )))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A temporary folder removed on drop, so a cancelled request leaves nothing behind.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new folder `<temp>/lakehouse-<purpose>-<pid>-<unique>`.
    pub fn new(purpose: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "lakehouse-{purpose}-{}-{}",
            std::process::id(),
            lakehouse_providers::openai::new_id("")
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|e| StoreError::Internal(format!("cannot create a temporary folder: {e}")))?;
        Ok(Self(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Deletes the folders [`TempDir::new`] made for processes that are gone
    /// (a `kill -9` mid-ingest skips the guard's drop), and answers how many.
    /// Linux only: a process is known alive by its `/proc` entry; a folder
    /// whose pid was reused by another process is left for a later start.
    pub fn sweep_orphans() -> usize {
        let proc_root = Path::new("/proc");
        if !proc_root.join("self").exists() {
            return 0;
        }
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return 0;
        };
        let mut swept = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(orphan_pid) else {
                continue;
            };
            if pid == std::process::id() || proc_root.join(pid.to_string()).exists() {
                continue;
            }
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => swept += 1,
                Err(e) => tracing::debug!("cannot delete {}: {e}", entry.path().display()),
            }
        }
        swept
    }
}

/// The pid in a folder name [`TempDir::new`] made for the store's own work
/// (`lakehouse-ingest-<pid>-<id>`, `lakehouse-upload-<pid>-<id>`).
fn orphan_pid(name: &str) -> Option<u32> {
    let rest = name
        .strip_prefix("lakehouse-ingest-")
        .or_else(|| name.strip_prefix("lakehouse-upload-"))?;
    let (pid, id) = rest.split_once('-')?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    pid.parse().ok()
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Internal(format!("blocking task failed: {e}")))?
}

impl Store {
    /// Opens the store and loads every corpus's index.
    pub async fn open(objects: Objects, embedders: Embedders, limits: QueryLimits) -> Result<Self> {
        let query = Arc::new(QueryEngine::open(objects.local_dir(), &limits)?);
        let swept = blocking(|| Ok(TempDir::sweep_orphans())).await?;
        if swept > 0 {
            tracing::info!("deleted {swept} temporary folder(s) left by stopped processes");
        }
        let store = Self {
            catalog: Catalog::new(objects.clone()),
            objects,
            query,
            embedders,
            limits,
            indexes: RwLock::default(),
            ingest_locks: std::sync::Mutex::default(),
        };
        for manifest in store.catalog.list().await? {
            if let Err(e) = store.index_for(&manifest).await {
                tracing::warn!(corpus = %manifest.name, "cannot load the vector index: {e}");
            }
        }
        Ok(store)
    }

    pub fn objects(&self) -> &Objects {
        &self.objects
    }

    pub fn embedders(&self) -> &Embedders {
        &self.embedders
    }

    pub async fn create_corpus(&self, name: &str, settings: CorpusSettings) -> Result<Manifest> {
        validate_name(name)?;
        if settings.embedder != NONE && !self.embedders.contains(&settings.embedder) {
            return Err(StoreError::InvalidInput(format!(
                "unknown embedder {:?}; known: {}",
                settings.embedder,
                self.embedders.names().join(", ")
            )));
        }
        if settings.text_columns.is_empty() {
            return Err(StoreError::InvalidInput(
                "text_columns must name at least one column".into(),
            ));
        }
        self.catalog.create(name, settings).await
    }

    pub async fn corpora(&self) -> Result<Vec<Manifest>> {
        self.catalog.list().await
    }

    pub async fn corpus(&self, name: &str) -> Result<Manifest> {
        self.catalog.get(name).await
    }

    /// Rows held by the loaded index of `name` (0 when none).
    pub async fn vector_count(&self, name: &str) -> usize {
        self.indexes
            .read()
            .await
            .get(name)
            .map_or(0, |l| l.index.len())
    }

    fn ingest_lock(&self, name: &str) -> Arc<Mutex<()>> {
        let mut locks = match self.ingest_locks.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        Arc::clone(locks.entry(name.to_owned()).or_default())
    }

    /// Ingests a local file: converts it to Parquet, stores it content-addressed,
    /// embeds and indexes its rows, and registers it. Nothing becomes visible
    /// unless every step succeeded.
    pub async fn ingest_file(
        &self,
        name: &str,
        input: &Path,
        format: Format,
        progress: &dyn Progress,
    ) -> Result<IngestReport> {
        let lock = self.ingest_lock(name);
        let _guard = lock.lock().await;
        // As stored, not as cached: the CLI may have ingested beside the server.
        let manifest = self.catalog.fresh(name).await?;
        let settings = manifest.settings.clone();
        let tmp = TempDir::new("ingest")?;
        let parquet = tmp.0.join("data.parquet");

        progress.stage("parse", 1);
        let (input_path, output, like) = (
            input.to_path_buf(),
            parquet.clone(),
            manifest.schema.clone(),
        );
        let info =
            blocking(move || duck::convert_to_parquet(&input_path, format, &output, &like)).await?;
        progress.advance(1);
        let names: Vec<&str> = info.schema.iter().map(|c| c.name.as_str()).collect();
        for column in settings
            .text_columns
            .iter()
            .chain(std::iter::once(&settings.id_column))
        {
            if !names.contains(&column.as_str()) {
                return Err(StoreError::InvalidInput(format!(
                    "column {column:?} is not in the file; its columns are: {}",
                    names.join(", ")
                )));
            }
        }
        if info.rows == 0 {
            return Err(StoreError::InvalidInput("the file has no rows".into()));
        }
        // Checked again under the catalog lock; here so a mismatch writes nothing.
        check_schema(name, &manifest.schema, &info.schema)?;
        let bytes = Bytes::from(
            tokio::fs::read(&parquet)
                .await
                .map_err(|e| StoreError::Internal(format!("reading the converted file: {e}")))?,
        );
        let sha = hex(&Sha256::digest(&bytes));
        let key = format!("corpora/{name}/{sha}.parquet");
        if manifest.files.iter().any(|f| f.sha256 == sha) {
            return Ok(IngestReport {
                corpus: name.to_owned(),
                added: false,
                rows: info.rows,
                file: key,
                version: manifest.version,
            });
        }
        // A searchable corpus's rows are read once, here: their ids are
        // checked before anything is written, and their texts embedded below.
        // Search finds rows by id; a corpus without an embedder has no search
        // and no ids to check.
        let texts = if settings.embedder == NONE {
            None
        } else {
            let (file, id_column, text_columns) = (
                parquet.clone(),
                settings.id_column.clone(),
                settings.text_columns.clone(),
            );
            let texts =
                blocking(move || duck::read_texts(&file, &id_column, &text_columns)).await?;
            check_ids(&settings.id_column, &texts)?;
            self.check_new_ids(&manifest, &texts).await?;
            Some(texts)
        };
        progress.stage("write", bytes.len() as u64);
        let size = bytes.len() as u64;
        self.objects.put(&key, bytes).await?;
        progress.advance(size);

        let data_file = DataFile {
            key: key.clone(),
            sha256: sha,
            rows: info.rows,
            bytes: size,
            added_at: now(),
        };
        // Another process that registers between this one's read and its
        // register would lose its rows from the index: the register refuses,
        // and the rows are indexed again onto the newer index.
        let mut base = manifest;
        let mut attempts = 0;
        let (manifest, added, vectors) = loop {
            let vectors = match &texts {
                None => None,
                Some(texts) => match self.embed_and_index(&base, texts, progress).await {
                    Ok(built) => Some(built),
                    // The index this ingest started from was pruned: other
                    // writers registered two versions meanwhile.
                    Err(StoreError::NotFound { .. }) if attempts < MAX_REINDEX => {
                        attempts += 1;
                        let fresh = self.catalog.fresh(name).await?;
                        if fresh.version == base.version {
                            return Err(StoreError::Internal(format!(
                                "the index of corpus {name:?} version {} is missing from the store",
                                base.version
                            )));
                        }
                        base = fresh;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            let registered = self
                .catalog
                .register(
                    name,
                    data_file.clone(),
                    info.schema.clone(),
                    vectors.as_ref().map(|(r, _)| r.clone()),
                    base.vectors.as_ref(),
                )
                .await;
            match registered {
                Ok((manifest, true)) => break (manifest, true, vectors),
                Ok((manifest, false)) => {
                    self.discard(vectors).await;
                    break (manifest, false, None);
                }
                Err(StoreError::Conflict(reason)) if attempts < MAX_REINDEX => {
                    attempts += 1;
                    tracing::info!("{reason}; indexing the new rows again onto it");
                    self.discard(vectors).await;
                    base = self.catalog.fresh(name).await?;
                }
                Err(e) => {
                    self.discard(vectors).await;
                    return Err(e);
                }
            }
        };
        if let Some((vectors, index)) = vectors {
            self.prune_indexes(name, &vectors, base.vectors.as_ref())
                .await;
            self.indexes.write().await.insert(
                name.to_owned(),
                LoadedIndex {
                    index_key: vectors.index_key,
                    index: Arc::new(index),
                },
            );
        }
        Ok(IngestReport {
            corpus: name.to_owned(),
            added,
            rows: info.rows,
            file: key,
            version: manifest.version,
        })
    }

    /// Deletes an index that was built but not registered.
    async fn discard(&self, vectors: Option<(VectorsRef, VectorIndex)>) {
        let Some((vectors, _)) = vectors else { return };
        for key in [&vectors.index_key, &vectors.docs_key] {
            if let Err(e) = self.objects.delete(key).await {
                tracing::warn!("cannot delete the unregistered index object {key}: {e}");
            }
        }
    }

    /// Deletes the corpus's index objects older than the one just registered
    /// (`current`), except the one it replaced (`previous`): every ingest
    /// writes the whole index again, so kept versions grew the store by an
    /// index per ingest. The previous one stays for readers that loaded the
    /// manifest before this register. Versions above the current one are
    /// another writer's work in progress and are left alone. A failed delete
    /// is logged; the ingest has succeeded either way.
    async fn prune_indexes(&self, name: &str, current: &VectorsRef, previous: Option<&VectorsRef>) {
        let Some(current_version) = index_version(&current.index_key) else {
            return;
        };
        let objects = match self.objects.list(&format!("_vectors/{name}")).await {
            Ok(objects) => objects,
            Err(e) => {
                tracing::warn!("cannot list the index versions of corpus {name:?}: {e}");
                return;
            }
        };
        let kept = |key: &str| {
            previous.is_some_and(|p| key == p.index_key || key == p.docs_key)
                || index_version(key).is_none_or(|version| version >= current_version)
        };
        for object in objects.iter().filter(|o| !kept(&o.key)) {
            if let Err(e) = self.objects.delete(&object.key).await {
                tracing::warn!(
                    "cannot delete the superseded index object {}: {e}",
                    object.key
                );
            }
        }
    }

    /// Refuses rows whose ids the corpus index already holds: an id names
    /// one row, and search would show the older row's fields for both.
    /// (A corpus without an embedder has no index to ask.)
    async fn check_new_ids(&self, manifest: &Manifest, rows: &[(String, String)]) -> Result<()> {
        let Some(current) = self.index_or_newer(manifest).await? else {
            return Ok(());
        };
        let taken: Vec<String> = rows
            .iter()
            .map(|(id, _)| id)
            .filter(|id| current.doc(id).is_some())
            .take(3)
            .map(|id| format!("{id:?}"))
            .collect();
        if taken.is_empty() {
            return Ok(());
        }
        Err(StoreError::InvalidInput(format!(
            "corpus {:?} already has rows with ids {}: an id names one row \
             (to change rows, delete the corpus and ingest again)",
            manifest.name,
            taken.join(", ")
        )))
    }

    /// Embeds `texts` (id and text of each new row), extends the corpus index
    /// with them and stores the new index under the next version (a name no
    /// other process writes); the catalog is not touched.
    async fn embed_and_index(
        &self,
        manifest: &Manifest,
        texts: &[(String, String)],
        progress: &dyn Progress,
    ) -> Result<(VectorsRef, VectorIndex)> {
        let settings = &manifest.settings;
        let name = &manifest.name;
        progress.stage("embed", texts.len() as u64);
        let mut rows = Vec::with_capacity(texts.len());
        for batch in texts.chunks(EMBED_BATCH) {
            let strings: Vec<String> = batch.iter().map(|(_, t)| t.clone()).collect();
            let vectors = self
                .embedders
                .embed_uncached(&settings.embedder, &strings)
                .await?;
            rows.extend(
                batch
                    .iter()
                    .map(|(id, text)| Doc {
                        id: id.clone(),
                        text: text.clone(),
                    })
                    .zip(vectors),
            );
            progress.advance(batch.len() as u64);
        }

        progress.stage("index", rows.len() as u64);
        let dimensions = rows.first().map_or(0, |(_, v)| v.len());
        let current = self.index_for(manifest).await?;
        let count = rows.len() as u64;
        let version = manifest.version + 1;
        let (index_bytes, docs_bytes, index) = blocking(move || {
            let mut index = match current {
                Some(existing) => existing.duplicate()?,
                None => VectorIndex::new(dimensions)?,
            };
            index.add(rows)?;
            let (a, b) = index.to_bytes()?;
            Ok((a, b, index))
        })
        .await?;
        progress.advance(count);
        // Unique per writer: two processes building the same version never
        // overwrite each other's objects.
        let unique = lakehouse_providers::openai::new_id("");
        let vectors = VectorsRef {
            index_key: format!("_vectors/{name}/{version}-{unique}.usearch"),
            docs_key: format!("_vectors/{name}/{version}-{unique}.docs.json"),
            count: index.len() as u64,
            dimensions: index.dimensions(),
        };
        self.objects
            .put(&vectors.index_key, Bytes::from(index_bytes))
            .await?;
        self.objects
            .put(&vectors.docs_key, Bytes::from(docs_bytes))
            .await?;
        Ok((vectors, index))
    }

    /// The loaded index of this manifest version, loading it from the store if needed.
    async fn index_for(&self, manifest: &Manifest) -> Result<Option<Arc<VectorIndex>>> {
        let Some(vectors) = &manifest.vectors else {
            return Ok(None);
        };
        if let Some(loaded) = self.indexes.read().await.get(&manifest.name)
            && loaded.index_key == vectors.index_key
        {
            return Ok(Some(Arc::clone(&loaded.index)));
        }
        let index_bytes = self.objects.get(&vectors.index_key).await?;
        let docs_bytes = self.objects.get(&vectors.docs_key).await?;
        let dimensions = vectors.dimensions;
        let index = Arc::new(
            blocking(move || VectorIndex::from_bytes(&index_bytes, &docs_bytes, dimensions))
                .await?,
        );
        self.indexes.write().await.insert(
            manifest.name.clone(),
            LoadedIndex {
                index_key: vectors.index_key.clone(),
                index: Arc::clone(&index),
            },
        );
        Ok(Some(index))
    }

    /// The `k` rows nearest to `query`, best first, with all their fields
    /// (read from the Parquet files; the chat path uses [`Self::search_vector`]).
    pub async fn search(&self, name: &str, query: &str, k: usize) -> Result<Vec<Hit>> {
        if query.trim().is_empty() {
            return Err(StoreError::InvalidInput("query must not be empty".into()));
        }
        if !(1..=MAX_SEARCH_K).contains(&k) {
            return Err(StoreError::InvalidInput(format!(
                "k must be between 1 and {MAX_SEARCH_K}, got {k}"
            )));
        }
        let manifest = self.catalog.get(name).await?;
        let embedder = searchable_embedder(&manifest)?;
        let vector = self.embed_query(embedder, query).await?;
        let neighbors = self.search_vector(name, &vector, k).await?;
        let ids: Vec<String> = neighbors.iter().map(|n| n.id.clone()).collect();
        let rows = self.rows_by_id(&manifest, &ids).await?;
        Ok(neighbors
            .into_iter()
            .map(|n| Hit {
                row: rows.get(&n.id).cloned().unwrap_or_default(),
                id: n.id,
                score: n.score,
            })
            .collect())
    }

    /// Embeds one query text with `embedder` (cached).
    pub async fn embed_query(&self, embedder: &str, query: &str) -> Result<Vec<f32>> {
        self.embedders
            .embed(embedder, &[query.to_owned()])
            .await?
            .pop()
            .ok_or_else(|| StoreError::Embed("no vector for the query".into()))
    }

    /// The embedder of a searchable corpus.
    pub async fn corpus_embedder(&self, name: &str) -> Result<String> {
        let manifest = self.catalog.get(name).await?;
        searchable_embedder(&manifest).map(str::to_owned)
    }

    /// The `k` rows nearest to an already embedded query: ids, texts and
    /// cosine similarities, from memory only.
    pub async fn search_vector(
        &self,
        name: &str,
        vector: &[f32],
        k: usize,
    ) -> Result<Vec<Neighbor>> {
        let index = self.loaded_index(name).await?;
        let Some(index) = index else {
            return Ok(Vec::new());
        };
        if vector.len() != index.dimensions() {
            return Err(StoreError::InvalidInput(format!(
                "the query vector has {} dimensions, corpus {name:?} {}",
                vector.len(),
                index.dimensions()
            )));
        }
        // A search of a large index takes a few hundred microseconds of CPU: on
        // the blocking pool, the searches of several corpora run in parallel.
        let vector = vector.to_vec();
        blocking(move || index.search(&vector, k.clamp(1, MAX_SEARCH_K))).await
    }

    /// Every indexed row's embedded text (evaluation sets for the contamination check).
    pub async fn docs(&self, name: &str) -> Result<Vec<Doc>> {
        Ok(self
            .loaded_index(name)
            .await?
            .map(|index| index.docs().to_vec())
            .unwrap_or_default())
    }

    /// One indexed row by id: its embedded text.
    pub async fn doc(&self, name: &str, id: &str) -> Result<Option<Doc>> {
        Ok(self
            .loaded_index(name)
            .await?
            .and_then(|index| index.doc(id).cloned()))
    }

    /// One indexed row by id and its cosine similarity to `vector`.
    pub async fn doc_similarity(
        &self,
        name: &str,
        id: &str,
        vector: &[f32],
    ) -> Result<Option<(Doc, f32)>> {
        let Some(index) = self.loaded_index(name).await? else {
            return Ok(None);
        };
        Ok(index
            .similarity(id, vector)?
            .map(|(doc, similarity)| (doc.clone(), similarity)))
    }

    /// The loaded index of corpus `name`, loading it if this replica has not yet.
    async fn loaded_index(&self, name: &str) -> Result<Option<Arc<VectorIndex>>> {
        if let Some(loaded) = self.indexes.read().await.get(name) {
            return Ok(Some(Arc::clone(&loaded.index)));
        }
        let manifest = self.catalog.get(name).await?;
        self.index_or_newer(&manifest).await
    }

    /// The index of `manifest`, or of the stored manifest when that index
    /// was pruned: a manifest two ingests old names a deleted index.
    async fn index_or_newer(&self, manifest: &Manifest) -> Result<Option<Arc<VectorIndex>>> {
        match self.index_for(manifest).await {
            Err(StoreError::NotFound { .. }) => {
                let fresh = self.catalog.fresh(&manifest.name).await?;
                self.index_for(&fresh).await
            }
            loaded => loaded,
        }
    }

    async fn rows_by_id(
        &self,
        manifest: &Manifest,
        ids: &[String],
    ) -> Result<HashMap<String, Map<String, Value>>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let views = vec![self.view_of(manifest).await?];
        let list: Vec<String> = ids.iter().map(|id| duck::literal(id)).collect();
        let id_column = manifest.settings.id_column.clone();
        let sql = format!(
            "SELECT * FROM {} WHERE CAST({} AS VARCHAR) IN ({})",
            duck::ident(&manifest.name),
            duck::ident(&id_column),
            list.join(", ")
        );
        let engine = Arc::clone(&self.query);
        let limits = QueryLimits {
            max_rows: ids.len() * 4,
            ..self.limits
        };
        let result = blocking(move || engine.run(engine.check(&sql)?, &views, limits)).await?;
        let mut out = HashMap::new();
        for row in result.rows {
            let id = match row.get(&id_column) {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => continue,
            };
            out.entry(id).or_insert(row);
        }
        Ok(out)
    }

    async fn view_of(&self, manifest: &Manifest) -> Result<ViewSource> {
        let mut files = Vec::with_capacity(manifest.files.len());
        for f in &manifest.files {
            files.push(self.objects.local_file(&f.key).await?);
        }
        Ok(ViewSource {
            name: manifest.name.clone(),
            files,
        })
    }

    /// Runs read-only SQL over every corpus (each a view by its name).
    pub async fn query(&self, sql: &str) -> Result<QueryResult> {
        // Checked before any corpus is read for it, and run as checked.
        let engine = Arc::clone(&self.query);
        let (checker, sql) = (Arc::clone(&engine), sql.to_owned());
        let checked = blocking(move || checker.check(&sql)).await?;
        let mut views = Vec::new();
        for manifest in self.catalog.list().await? {
            views.push(self.view_of(&manifest).await?);
        }
        let limits = self.limits;
        blocking(move || engine.run(checked, &views, limits)).await
    }

    /// Deletes a corpus: its manifest first (so it disappears at once), then its files.
    pub async fn delete_corpus(&self, name: &str) -> Result<Manifest> {
        let lock = self.ingest_lock(name);
        let _guard = lock.lock().await;
        let manifest = self.catalog.delete(name).await?;
        self.indexes.write().await.remove(name);
        for prefix in [format!("corpora/{name}"), format!("_vectors/{name}")] {
            for object in self.objects.list(&prefix).await? {
                if let Err(e) = self.objects.delete(&object.key).await {
                    tracing::warn!("cannot delete {}: {e}", object.key);
                }
            }
        }
        Ok(manifest)
    }
}

/// The version an index object's key names (`_vectors/<name>/<version>-<unique>.<ext>`).
fn index_version(key: &str) -> Option<u64> {
    let file = key.rsplit('/').next()?;
    file.split_once('-')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn open_store(root: &Path) -> Store {
        let objects = Objects::open(&crate::objects::StoreConfig::Local {
            root: root.to_owned(),
            caps: crate::objects::Caps::default(),
        })
        .unwrap();
        let local: Arc<dyn crate::embed::Embedder> =
            Arc::new(crate::embed::LocalEmbedder::default());
        Store::open(
            objects,
            Embedders::new(vec![local], 0),
            QueryLimits::default(),
        )
        .await
        .unwrap()
    }

    /// An `id,text` corpus embedded by the local embedder.
    fn searchable() -> CorpusSettings {
        CorpusSettings {
            text_columns: vec!["text".into()],
            id_column: "id".into(),
            embedder: crate::embed::LOCAL.into(),
        }
    }

    #[test]
    fn only_the_store_s_own_temporary_folders_of_gone_processes_are_swept() {
        assert_eq!(orphan_pid("lakehouse-ingest-4242-abc123"), Some(4242));
        assert_eq!(orphan_pid("lakehouse-upload-7-Zz9"), Some(7));
        for other in [
            "lakehouse-bench-4242-abc",
            "lakehouse-crash-abc",
            "lakehouse-ingest-abc-def",
            "lakehouse-ingest-4242-",
            "lakehouse-ingest-4242-a/b",
            "lakehouse-ingest-4242",
        ] {
            assert_eq!(orphan_pid(other), None, "{other}");
        }
        // A folder of this process stays; one of a pid no process has goes.
        let mine = TempDir::new("ingest").unwrap();
        let gone = std::env::temp_dir().join(format!("lakehouse-ingest-{}-x1", u32::MAX - 1));
        std::fs::create_dir_all(gone.join("inner")).unwrap();
        assert!(TempDir::sweep_orphans() >= 1);
        assert!(!gone.exists());
        assert!(mine.path().exists());
    }

    #[tokio::test]
    async fn an_ingest_keeps_two_index_versions_and_stale_readers_still_search() {
        let dir = TempDir::new("store-test").unwrap();
        let writer = open_store(&dir.path().join("store")).await;
        // Another replica: it read the manifest early and never loaded the index.
        let reader = open_store(&dir.path().join("store")).await;
        writer.create_corpus("fruit", searchable()).await.unwrap();
        let ingest = |n: usize, rows: &'static str| {
            let path = dir.path().join(format!("{n}.csv"));
            std::fs::write(&path, format!("id,text\n{rows}")).unwrap();
            let writer = &writer;
            async move {
                writer
                    .ingest_file("fruit", &path, Format::Csv, &NoProgress)
                    .await
                    .unwrap()
            }
        };
        ingest(1, "a,apples\n").await;
        assert_eq!(reader.catalog.get("fruit").await.unwrap().version, 1);
        ingest(2, "b,bananas\n").await;
        ingest(3, "c,cherries\n").await;
        let report = ingest(4, "d,dates\n").await;
        assert_eq!(report.version, 4);

        let versions = |objects: Vec<crate::objects::ObjectInfo>| -> Vec<u64> {
            objects
                .iter()
                .map(|o| index_version(&o.key).unwrap())
                .collect()
        };
        // An index and its docs for the current version and the one it replaced.
        let left = writer.objects.list("_vectors/fruit").await.unwrap();
        assert_eq!(versions(left), [3, 3, 4, 4]);

        // The reader's cached manifest names version 1, deleted since: it
        // reads the manifest again and searches version 4.
        let hits = reader.search("fruit", "dates", 1).await.unwrap();
        assert_eq!(hits[0].id, "d");
        assert_eq!(reader.docs("fruit").await.unwrap().len(), 4);
    }

    #[tokio::test]
    async fn an_ingest_beside_another_process_keeps_every_row_indexed() {
        let dir = TempDir::new("store-test").unwrap();
        // The server and the CLI over one store: two processes, two caches.
        let server = open_store(&dir.path().join("store")).await;
        let cli = open_store(&dir.path().join("store")).await;
        server.create_corpus("lu", searchable()).await.unwrap();
        let csv = |name: &str, rows: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, format!("id,text\n{rows}")).unwrap();
            path
        };
        let (a, b, c) = (
            csv("a.csv", "a1,apples\na2,apricots\n"),
            csv("b.csv", "b1,bananas\nb2,blueberries\n"),
            csv("c.csv", "c1,cherries\nc2,currants\n"),
        );
        server
            .ingest_file("lu", &a, Format::Csv, &NoProgress)
            .await
            .unwrap();
        cli.ingest_file("lu", &b, Format::Csv, &NoProgress)
            .await
            .unwrap();
        // The server's cache still says version 1; its ingest builds on version 2.
        let report = server
            .ingest_file("lu", &c, Format::Csv, &NoProgress)
            .await
            .unwrap();
        assert_eq!(report.version, 3);
        let manifest = cli.catalog.fresh("lu").await.unwrap();
        assert_eq!(manifest.vectors.as_ref().unwrap().count, 6);

        // A register built on an index another process has since replaced is refused.
        let stale = server.catalog.fresh("lu").await.unwrap();
        let d = csv("d.csv", "d1,dates\n");
        cli.ingest_file("lu", &d, Format::Csv, &NoProgress)
            .await
            .unwrap();
        let file = DataFile {
            key: "corpora/lu/x.parquet".into(),
            sha256: "x".into(),
            rows: 1,
            bytes: 1,
            added_at: now(),
        };
        let refused = server
            .catalog
            .register(
                "lu",
                file,
                manifest.schema.clone(),
                stale.vectors.clone(),
                stale.vectors.as_ref(),
            )
            .await
            .unwrap_err();
        assert!(matches!(refused, StoreError::Conflict(_)), "{refused}");
        assert_eq!(server.catalog.fresh("lu").await.unwrap().version, 4);
    }

    #[test]
    fn a_temporary_folder_goes_with_its_guard() {
        let dir = TempDir::new("test").unwrap();
        let path = dir.path().to_owned();
        std::fs::write(path.join("upload"), b"x").unwrap();
        drop(dir);
        assert!(!path.exists());
    }
}
