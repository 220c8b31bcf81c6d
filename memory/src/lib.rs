//! # lakehouse-memory
//!
//! What the proxy learns from its own runs, persisted in the lakehouse store.
//!
//! - [`log`]: an append-only JSONL log over the object store (segments + compaction),
//!   replayed at start; a corrupted or truncated line is skipped and counted.
//! - [`pathway`]: Mem0-style versioned traces per namespace: add, update, revise,
//!   retire, history (cycle-safe), similarity search.
//! - [`playbook`]: rated outcomes (query, sources shown, model, rating) and the
//!   boost they give those sources on similar future queries.
//!
//! Store layout:
//! ```text
//! memory/pathway.jsonl             compacted traces (a first line names the folded segments)
//! memory/pathway/<segment>.jsonl   appended since the last compaction
//! memory/playbook.jsonl            compacted outcomes
//! memory/playbook/<segment>.jsonl  appended since the last compaction
//! ```
//! Every line is a whole record (an upsert by id). A segment a crash left
//! behind after its compaction wrote the base (before its cleanup) is named
//! in the base's first line and not replayed again.

pub mod error;
pub mod log;
pub mod pathway;
pub mod playbook;
pub mod vector;

pub use error::{MemoryError, Result};
pub use pathway::Pathway;
pub use playbook::Playbook;
