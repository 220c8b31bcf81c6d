//! # lakehouse-retrieval
//!
//! The store the retrieval plugins query, hosted in the proxy process.
//!
//! - [`objects`]: `object_store` (local folder or S3), key checks, per-prefix caps, atomic writes.
//! - [`catalog`]: one manifest per dataset (`_catalog/<name>.json`): files, schema, version, index.
//! - [`duck`]: DuckDB: uploads to Parquet, and locked-down read-only SQL over the catalog.
//! - [`vectors`]: a usearch HNSW index per corpus, persisted under `_vectors/`.
//! - [`embed`]: embedders (built-in offline, Ollama, OpenAI-compatible) behind a moka cache.
//! - [`store`]: the facade: create, ingest, search, query, delete.
//! - [`matrix`]: multi-corpus retrieval: parallel search, merge, relevance filter.
//!
//! Store layout (under the object store root):
//! ```text
//! corpora/<name>/<sha256>.parquet     content-addressed ingested rows
//! _catalog/<name>.json                manifest
//! _vectors/<name>/<version>-<unique>.usearch   HNSW index (+ .docs.json: row ids and embedded texts)
//!                                              (the current version and the one it replaced)
//! ```

pub mod catalog;
pub mod duck;
pub mod embed;
pub mod error;
pub mod matrix;
pub mod objects;
pub mod store;
pub mod vectors;

pub use error::{Result, StoreError};
pub use store::Store;
