//! Objects through `object_store`: a local folder by default, S3 by config.
//!
//! Keys are validated before they reach the backend (no `..`, no absolute paths,
//! no control characters), every PUT is checked against its prefix's cap before
//! anything is written, and writes are atomic (the local backend writes a
//! temporary file and renames it; S3 PUTs are atomic by nature).

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};

/// Where objects live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "backend", rename_all = "lowercase")]
pub enum StoreConfig {
    /// A local folder (default `./data`).
    Local {
        #[serde(default = "default_root")]
        root: PathBuf,
        #[serde(default)]
        caps: Caps,
    },
    /// An S3 bucket; credentials come from the usual `AWS_*` environment variables.
    S3 {
        bucket: String,
        #[serde(default)]
        prefix: Option<String>,
        #[serde(default)]
        endpoint: Option<String>,
        #[serde(default)]
        region: Option<String>,
        /// Local folder for Parquet files DuckDB reads (content-addressed, so never stale).
        #[serde(default = "default_cache")]
        cache_dir: PathBuf,
        #[serde(default)]
        caps: Caps,
    },
}

fn default_root() -> PathBuf {
    PathBuf::from("data")
}

fn default_cache() -> PathBuf {
    PathBuf::from("data-cache")
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::Local {
            root: default_root(),
            caps: Caps::default(),
        }
    }
}

/// PUT size caps: `_vectors/` holds whole HNSW indexes, everything else is smaller.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Caps {
    #[serde(default = "default_vectors_cap")]
    pub vectors_bytes: u64,
    #[serde(default = "default_other_cap")]
    pub other_bytes: u64,
}

fn default_vectors_cap() -> u64 {
    4 * 1024 * 1024 * 1024
}

fn default_other_cap() -> u64 {
    256 * 1024 * 1024
}

impl Default for Caps {
    fn default() -> Self {
        Self {
            vectors_bytes: default_vectors_cap(),
            other_bytes: default_other_cap(),
        }
    }
}

impl Caps {
    pub fn for_key(&self, key: &str) -> u64 {
        if key.starts_with("_vectors/") {
            self.vectors_bytes
        } else {
            self.other_bytes
        }
    }
}

/// One listed object.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub last_modified: String,
}

/// The first key segment reserved for the server's own files in the local
/// folder (beside the S3 download cache), so that no object lands there.
pub const LOCAL_STATE: &str = ".lakehouse";

/// The object store plus its caps, and the local folder DuckDB may read.
#[derive(Debug, Clone)]
pub struct Objects {
    inner: Arc<dyn ObjectStore>,
    caps: Caps,
    /// For the local backend, the root itself; for S3, a download cache.
    local_dir: PathBuf,
    local_backend: bool,
}

impl Objects {
    pub fn open(config: &StoreConfig) -> Result<Self> {
        match config {
            StoreConfig::Local { root, caps } => {
                std::fs::create_dir_all(root).map_err(|e| {
                    StoreError::Backend(format!("cannot create {}: {e}", root.display()))
                })?;
                let root = root.canonicalize().map_err(|e| {
                    StoreError::Backend(format!("cannot resolve {}: {e}", root.display()))
                })?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(&root)?
                    .with_automatic_cleanup(true);
                Ok(Self {
                    inner: Arc::new(store),
                    caps: *caps,
                    local_dir: root,
                    local_backend: true,
                })
            }
            StoreConfig::S3 {
                bucket,
                prefix,
                endpoint,
                region,
                cache_dir,
                caps,
            } => {
                let mut builder =
                    object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
                if let Some(endpoint) = endpoint {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"))
                        .with_virtual_hosted_style_request(false);
                }
                if let Some(region) = region {
                    builder = builder.with_region(region);
                }
                let s3: Arc<dyn ObjectStore> = Arc::new(builder.build()?);
                let inner: Arc<dyn ObjectStore> = match prefix.as_deref().filter(|p| !p.is_empty())
                {
                    Some(p) => Arc::new(object_store::prefix::PrefixStore::new(s3, p)),
                    None => s3,
                };
                std::fs::create_dir_all(cache_dir).map_err(|e| {
                    StoreError::Backend(format!("cannot create {}: {e}", cache_dir.display()))
                })?;
                let local_dir = cache_dir.canonicalize().map_err(|e| {
                    StoreError::Backend(format!("cannot resolve {}: {e}", cache_dir.display()))
                })?;
                Ok(Self {
                    inner,
                    caps: *caps,
                    local_dir,
                    local_backend: false,
                })
            }
        }
    }

    /// Objects in `inner`, an object store made elsewhere (a wrapper that
    /// injects faults, in tests), with the default caps; `local_dir` is the
    /// download cache, as for S3.
    pub fn from_store(inner: Arc<dyn ObjectStore>, local_dir: PathBuf) -> Self {
        Self {
            inner,
            caps: Caps::default(),
            local_dir,
            local_backend: false,
        }
    }

    pub fn caps(&self) -> Caps {
        self.caps
    }

    /// Writes `bytes` at `key` atomically, after checking the key and the cap.
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<()> {
        self.put_payload(key, PutPayload::from_bytes(bytes)).await
    }

    /// Writes `parts`, one after the other, as the object at `key`, like
    /// [`put`](Self::put): for writers that fill bounded buffers rather than
    /// growing one (a large buffer is fresh memory, faulted in page by page).
    pub async fn put_parts(&self, key: &str, parts: Vec<Bytes>) -> Result<()> {
        self.put_payload(key, parts.into_iter().collect()).await
    }

    /// Writes `bytes` at `key` only when no object is there (a create-if-absent
    /// PUT, atomic on both backends); answers whether it wrote. What replicas
    /// sharing a store use to take turns.
    pub async fn put_if_absent(&self, key: &str, bytes: Bytes) -> Result<bool> {
        let path = validate_key(key)?;
        self.check_cap(key, bytes.len() as u64)?;
        let create = PutMode::Create.into();
        match self.inner.put_opts(&path, bytes.into(), create).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn put_payload(&self, key: &str, payload: PutPayload) -> Result<()> {
        let path = validate_key(key)?;
        self.check_cap(key, payload.content_length() as u64)?;
        self.inner.put(&path, payload).await?;
        Ok(())
    }

    /// Refuses a write over the cap for `key`'s prefix, before any byte is written.
    pub fn check_cap(&self, key: &str, size: u64) -> Result<()> {
        let cap = self.caps.for_key(key);
        if size > cap {
            return Err(StoreError::TooLarge {
                key: key.to_owned(),
                size,
                cap,
            });
        }
        Ok(())
    }

    pub async fn get(&self, key: &str) -> Result<Bytes> {
        let path = validate_key(key)?;
        let read = async { self.inner.get(&path).await?.bytes().await };
        match read.await {
            Ok(bytes) => Ok(bytes),
            Err(e) => Err(self.about(key, &path, e).await),
        }
    }

    /// `None` when the object does not exist.
    pub async fn get_opt(&self, key: &str) -> Result<Option<Bytes>> {
        match self.get(key).await {
            Ok(b) => Ok(Some(b)),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        let path = validate_key(key)?;
        match self.inner.delete(&path).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.about(key, &path, e).await),
        }
    }

    /// The error of a read or delete of `key`, named by the key: the local
    /// backend names its absolute file path, which clients need not see. A
    /// key that is no object (a folder of the local backend fails with "Is a
    /// directory") is not found rather than a backend failure, which clients
    /// would retry.
    async fn about(&self, key: &str, path: &Path, e: object_store::Error) -> StoreError {
        let missing = || StoreError::NotFound {
            what: "object",
            name: key.to_owned(),
        };
        match StoreError::from(e) {
            StoreError::NotFound { .. } => missing(),
            StoreError::Backend(reason) => match self.inner.head(path).await {
                Err(object_store::Error::NotFound { .. }) => missing(),
                _ => StoreError::Backend(reason),
            },
            other => other,
        }
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let prefix = prefix.trim_end_matches('/');
        let path = if prefix.is_empty() {
            None
        } else {
            Some(validate_key(prefix)?)
        };
        let metas: Vec<_> = self.inner.list(path.as_ref()).try_collect().await?;
        let mut out: Vec<ObjectInfo> = metas
            .into_iter()
            .map(|m| ObjectInfo {
                key: m.location.to_string(),
                size: m.size,
                last_modified: m.last_modified.to_rfc3339(),
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// A local file DuckDB can read for `key`: the object itself on the local
    /// backend, a cached download on S3 (keys are content-addressed, so a cached
    /// copy is never stale).
    pub async fn local_file(&self, key: &str) -> Result<PathBuf> {
        validate_key(key)?;
        let path = self.local_dir.join(key);
        if self.local_backend || tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(path);
        }
        let bytes = self.get(key).await?;
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| StoreError::Backend(format!("cache dir: {e}")))?;
        }
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        tokio::fs::write(&tmp, &bytes)
            .await
            .map_err(|e| StoreError::Backend(format!("cache write: {e}")))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| StoreError::Backend(format!("cache rename: {e}")))?;
        Ok(path)
    }

    /// The folder DuckDB is allowed to read.
    pub fn local_dir(&self) -> &std::path::Path {
        &self.local_dir
    }

    /// A local folder for writes the store refused at shutdown, to be made
    /// again at the next start. S3 only: on the local backend the folder
    /// would be on the disk that refused them.
    pub fn spill_dir(&self) -> Option<PathBuf> {
        (!self.local_backend).then(|| self.local_dir.join(LOCAL_STATE).join("spill"))
    }
}

/// Accepts `a/b/c.ext`-style keys only.
pub fn validate_key(key: &str) -> Result<Path> {
    let bad = |reason: &str| StoreError::InvalidName {
        what: "key",
        reason: format!("{key:?}: {reason}"),
    };
    if key.is_empty() {
        return Err(bad("empty"));
    }
    if key.len() > 1024 {
        return Err(bad("longer than 1024 bytes"));
    }
    if key.starts_with('/') || key.starts_with('\\') || key.contains(":\\") {
        return Err(bad("absolute paths are not allowed"));
    }
    if key.chars().any(char::is_control) {
        return Err(bad("control characters are not allowed"));
    }
    // Case-blind: a case-insensitive file system would cache such a key there.
    if key
        .split(['/', '\\'])
        .next()
        .is_some_and(|first| first.eq_ignore_ascii_case(LOCAL_STATE))
    {
        return Err(bad("the `.lakehouse` folder is the server's own"));
    }
    for segment in key.split(['/', '\\']) {
        if segment.is_empty() {
            return Err(bad("empty path segment"));
        }
        if segment == "." || segment == ".." {
            return Err(bad("`.` and `..` segments are not allowed"));
        }
    }
    Path::parse(key).map_err(|e| bad(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_validated() {
        for ok in [
            "a",
            "corpora/x/abc.parquet",
            "_vectors/c/1.usearch",
            "a/.lakehouse",
            ".lakehousex",
        ] {
            assert!(validate_key(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "a\nb",
            "a/./b",
            "C:\\x",
            "a\u{7f}",
            ".lakehouse",
            ".lakehouse/spill/observer/x.jsonl",
            ".LakeHouse/x",
        ] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn caps_depend_on_the_prefix() {
        let caps = Caps::default();
        assert_eq!(caps.for_key("_vectors/a/1.usearch"), 4 * 1024 * 1024 * 1024);
        assert_eq!(caps.for_key("corpora/a/x.parquet"), 256 * 1024 * 1024);
    }
}
