//! The catalog: one JSON manifest per dataset at `_catalog/<name>.json`.
//!
//! A manifest lists the dataset's content-addressed Parquet files with their
//! hashes and row counts, its schema, its retrieval settings and a version that
//! grows by one on every change. Registering a file already listed changes
//! nothing, so a retried ingest is harmless. Updates to one name are serialised
//! in-process (read, change, write under one lock), so concurrent registers
//! cannot lose an update. Replicas sharing one S3 store need conditional PUTs
//! (`PutMode::Update`) on top of this; not done yet.
//! The shape maps onto an Iceberg table (files + schema + snapshot version).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::duck::describe_columns;
use crate::error::{Result, StoreError};
use crate::objects::Objects;

/// One column of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// One Parquet file of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFile {
    pub key: String,
    pub sha256: String,
    pub rows: u64,
    pub bytes: u64,
    pub added_at: String,
}

/// How a dataset is searched: which columns are embedded, which is the id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorpusSettings {
    pub text_columns: Vec<String>,
    pub id_column: String,
    /// Embedder name (`local`, `ollama/<model>`, `openai/<model>`).
    pub embedder: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub version: u64,
    pub created_at: String,
    pub updated_at: String,
    pub settings: CorpusSettings,
    #[serde(default)]
    pub schema: Vec<Column>,
    #[serde(default)]
    pub files: Vec<DataFile>,
    /// The HNSW index of this version, if the corpus has rows.
    #[serde(default)]
    pub vectors: Option<VectorsRef>,
}

/// Where a version's HNSW index and its key map are stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VectorsRef {
    pub index_key: String,
    /// Row ids and embedded texts by key ([`crate::vectors::Doc`]).
    pub docs_key: String,
    pub count: u64,
    pub dimensions: usize,
}

impl Manifest {
    pub fn rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }
}

/// Dataset names become SQL view names and object keys, so they are kept plain.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidName {
            what: "corpus name",
            reason: format!("{name:?}: use 1-64 characters a-z, 0-9 and _, starting with a letter"),
        })
    }
}

pub fn manifest_key(name: &str) -> String {
    format!("_catalog/{name}.json")
}

pub fn now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    secs.to_string()
}

/// Manifests are cached in memory: every chat with retrieval reads them, and on
/// S3 a read is a network round trip. This process's writes update the cache;
/// `list` (admin and start-up paths) refreshes it from the store.
#[derive(Debug, Clone)]
pub struct Catalog {
    objects: Objects,
    locks: Arc<std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>>,
    cache: Arc<std::sync::RwLock<HashMap<String, Arc<Manifest>>>>,
}

impl Catalog {
    pub fn new(objects: Objects) -> Self {
        Self {
            objects,
            locks: Arc::default(),
            cache: Arc::default(),
        }
    }

    fn cached(&self, name: &str) -> Option<Arc<Manifest>> {
        let cache = match self.cache.read() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        cache.get(name).cloned()
    }

    fn set_cached(&self, name: &str, manifest: Option<Manifest>) {
        let mut cache = match self.cache.write() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        match manifest {
            Some(m) => cache.insert(name.to_owned(), Arc::new(m)),
            None => cache.remove(name),
        };
    }

    fn lock_for(&self, name: &str) -> Arc<Mutex<()>> {
        let mut locks = match self.locks.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        Arc::clone(locks.entry(name.to_owned()).or_default())
    }

    pub async fn get(&self, name: &str) -> Result<Manifest> {
        validate_name(name)?;
        if let Some(manifest) = self.cached(name) {
            return Ok(manifest.as_ref().clone());
        }
        let manifest = self.read(name).await?;
        self.set_cached(name, Some(manifest.clone()));
        Ok(manifest)
    }

    /// The manifest as stored now (another process, such as the CLI beside
    /// the server, may have changed it), cached for the next `get`.
    pub async fn fresh(&self, name: &str) -> Result<Manifest> {
        validate_name(name)?;
        let manifest = self.read(name).await?;
        self.set_cached(name, Some(manifest.clone()));
        Ok(manifest)
    }

    /// The manifest as stored, bypassing the cache.
    async fn read(&self, name: &str) -> Result<Manifest> {
        let bytes = self
            .objects
            .get_opt(&manifest_key(name))
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: "corpus",
                name: name.to_owned(),
            })?;
        serde_json::from_slice(&bytes).map_err(|e| {
            StoreError::Internal(format!(
                "manifest {} is unreadable: {e}",
                manifest_key(name)
            ))
        })
    }

    pub async fn list(&self) -> Result<Vec<Manifest>> {
        let mut out = Vec::new();
        for info in self.objects.list("_catalog").await? {
            let Some(name) = info
                .key
                .strip_prefix("_catalog/")
                .and_then(|k| k.strip_suffix(".json"))
            else {
                continue;
            };
            match self.read(name).await {
                Ok(m) => {
                    self.set_cached(name, Some(m.clone()));
                    out.push(m);
                }
                Err(e) => tracing::warn!("skipping catalog entry {}: {e}", info.key),
            }
        }
        Ok(out)
    }

    /// Creates an empty dataset; an existing one with the same settings is returned as is.
    pub async fn create(&self, name: &str, settings: CorpusSettings) -> Result<Manifest> {
        validate_name(name)?;
        let lock = self.lock_for(name);
        let _guard = lock.lock().await;
        match self.read(name).await {
            Ok(existing) if existing.settings == settings => return Ok(existing),
            Ok(_) => {
                return Err(StoreError::Conflict(format!(
                    "corpus {name:?} already exists with other settings"
                )));
            }
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let manifest = Manifest {
            name: name.to_owned(),
            version: 0,
            created_at: now(),
            updated_at: now(),
            settings,
            schema: Vec::new(),
            files: Vec::new(),
            vectors: None,
        };
        self.write(&manifest).await?;
        Ok(manifest)
    }

    /// Adds `file` (with the schema it was written with) and the index that now
    /// covers it, built onto `based_on` (the index the manifest had when the
    /// ingest began); a file already listed changes nothing. When the stored
    /// manifest's index is no longer `based_on`, another process indexed rows
    /// meanwhile that the new index lacks: a conflict, and nothing changes.
    pub async fn register(
        &self,
        name: &str,
        file: DataFile,
        schema: Vec<Column>,
        vectors: Option<VectorsRef>,
        based_on: Option<&VectorsRef>,
    ) -> Result<(Manifest, bool)> {
        let lock = self.lock_for(name);
        let _guard = lock.lock().await;
        let mut manifest = self.read(name).await?;
        if manifest.files.iter().any(|f| f.sha256 == file.sha256) {
            self.set_cached(name, Some(manifest.clone()));
            return Ok((manifest, false));
        }
        let indexed = manifest.vectors.as_ref().map(|v| &v.index_key);
        if vectors.is_some() && indexed != based_on.map(|v| &v.index_key) {
            self.set_cached(name, Some(manifest.clone()));
            return Err(StoreError::Conflict(format!(
                "corpus {name:?} was indexed elsewhere meanwhile (now version {})",
                manifest.version
            )));
        }
        check_schema(name, &manifest.schema, &schema)?;
        manifest.schema = schema;
        manifest.files.push(file);
        if vectors.is_some() {
            manifest.vectors = vectors;
        }
        manifest.version += 1;
        manifest.updated_at = now();
        self.write(&manifest).await?;
        Ok((manifest, true))
    }

    /// Removes the manifest; data files are deleted by the caller.
    pub async fn delete(&self, name: &str) -> Result<Manifest> {
        let lock = self.lock_for(name);
        let _guard = lock.lock().await;
        let manifest = self.read(name).await?;
        self.objects.delete(&manifest_key(name)).await?;
        self.set_cached(name, None);
        Ok(manifest)
    }

    async fn write(&self, manifest: &Manifest) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(manifest)
            .map_err(|e| StoreError::Internal(format!("cannot encode manifest: {e}")))?;
        self.objects
            .put(&manifest_key(&manifest.name), Bytes::from(bytes))
            .await?;
        self.set_cached(&manifest.name, Some(manifest.clone()));
        Ok(())
    }
}

/// A new file must have the dataset's columns (any columns while it has none).
pub fn check_schema(name: &str, existing: &[Column], incoming: &[Column]) -> Result<()> {
    if existing.is_empty() || existing == incoming {
        return Ok(());
    }
    Err(StoreError::InvalidInput(format!(
        "the file's columns {} do not match corpus {name:?}'s columns {}",
        describe_columns(incoming),
        describe_columns(existing)
    )))
}
