//! # lakehouse-plugins
//!
//! Hooks around every chat that give a model the right context and learn from
//! rated outcomes.
//!
//! - [`pipeline`]: the [`Plugin`] trait and the [`Pipeline`] that runs pre hooks
//!   in order (each with a timeout; a failing optional plugin degrades the
//!   chat instead of failing it), injects the chosen sources and memories as one
//!   system message, and runs post hooks on the assembled answer.
//! - [`context`]: what a chat carries through the hooks, and the `lakehouse`
//!   annotations returned to the client.
//! - [`config`]: `[plugins]` and `[[rag_models]]` of `lakehouse.toml`.
//! - the built-in plugins, in their default order: [`downgrade`] (context size
//!   by model strength, opt-in cost downgrade), [`matrix`] (multi-corpus
//!   retrieval), [`pathway`] (memories in, traces out), [`playbook`] (boost from
//!   rated outcomes).

pub mod config;
pub mod context;
pub mod downgrade;
pub mod error;
pub mod matrix;
pub mod pathway;
pub mod pipeline;
pub mod playbook;

pub use context::{ChatContext, ChatResult, RequestOptions};
pub use error::PluginError;
pub use pipeline::{Pipeline, Plugin};
