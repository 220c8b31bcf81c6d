//! The one error type of the plugins crate.

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin {plugin} failed: {message}")]
    Failed { plugin: String, message: String },
    #[error("plugin {plugin} took longer than {ms} ms")]
    Timeout { plugin: String, ms: u64 },
    /// Per-request options that cannot be used (unknown corpus, bad `lakehouse` field).
    #[error("{0}")]
    InvalidRequest(String),
}
