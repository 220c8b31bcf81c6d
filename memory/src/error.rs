//! The one error type of the memory crate.

use lakehouse_retrieval::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("{what} {id:?} not found")]
    NotFound { what: &'static str, id: String },
    /// A request that cannot be applied (bad rating, retired trace revised, ...).
    #[error("{0}")]
    InvalidInput(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type Result<T, E = MemoryError> = std::result::Result<T, E>;
