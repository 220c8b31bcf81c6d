//! The one error type of the store. The proxy maps each variant to an HTTP status.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A key or name that is not allowed (traversal, control characters, ...).
    #[error("invalid {what}: {reason}")]
    InvalidName { what: &'static str, reason: String },
    /// A write larger than its prefix's cap; nothing was written.
    #[error("{key}: {size} bytes is over the {cap} byte cap for this prefix")]
    TooLarge { key: String, size: u64, cap: u64 },
    #[error("{what} {name:?} not found")]
    NotFound { what: &'static str, name: String },
    #[error("{0}")]
    Conflict(String),
    /// Bad input data (malformed file, missing column, bad SQL); what is stored is untouched.
    #[error("{0}")]
    InvalidInput(String),
    /// A query that took longer than its limit and was interrupted.
    #[error("query exceeded its {0:?} time limit and was cancelled")]
    Timeout(std::time::Duration),
    #[error("object store: {0}")]
    Backend(String),
    #[error("embedder: {0}")]
    Embed(String),
    /// The embedder's upstream refused or failed; its kind (rate limit,
    /// timeout, ...) decides the status the client gets.
    #[error("embedder: {0}")]
    EmbedderUpstream(#[from] lakehouse_providers::ProviderError),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<object_store::Error> for StoreError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { path, .. } => StoreError::NotFound {
                what: "object",
                name: path,
            },
            object_store::Error::AlreadyExists { path, .. } => {
                StoreError::Conflict(format!("object {path:?} already exists"))
            }
            object_store::Error::Precondition { path, .. } => {
                StoreError::Conflict(format!("object {path:?} changed concurrently"))
            }
            other => StoreError::Backend(other.to_string()),
        }
    }
}

impl From<duckdb::Error> for StoreError {
    fn from(e: duckdb::Error) -> Self {
        StoreError::InvalidInput(e.to_string())
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
