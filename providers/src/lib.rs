//! # lakehouse-providers
//!
//! Everything between the OpenAI wire format the proxy serves and the five
//! upstream protocols it speaks.
//!
//! - [`openai`]: the client contract (requests, chunks, completions, models);
//!   chunks and completions are encoded by hand (`encode`), on every answer,
//!   and upstream chunks of the common shape are read by hand (`decode`).
//! - [`provider`]: the [`ChatProvider`](provider::ChatProvider) trait; one impl per protocol in [`adapters`].
//! - [`stream`]: invariants every converted stream gets (ids, role, usage last,
//!   `tool_calls` finish, error markers) and the assembler for non-stream answers.
//! - [`router`]: model-prefix routing and the registry of providers.
//! - [`http`]: upstream HTTP, auth, and the body as SSE events or NDJSON lines.
//! - [`sse`]: the server-sent events decoder (upstream streams and the CLI).
//! - [`secrets`]: `secrets/<provider>.env` key files.
//! - [`error`]: [`ProviderError`](error::ProviderError); HTTP statuses are chosen in the proxy.

pub mod adapters;
pub mod decode;
pub mod encode;
pub mod error;
pub mod http;
pub mod openai;
pub mod provider;
pub mod router;
pub mod secrets;
pub mod sse;
pub mod stream;

#[cfg(test)]
mod fuzz_tests;

pub use error::{ProviderError, UpstreamErrorKind};
pub use provider::{ChatProvider, ChunkStream};

/// The largest char boundary of `text` at or before `at` (its length when
/// shorter): where text cut to at most `at` bytes ends.
pub fn char_floor(text: &str, at: usize) -> usize {
    let mut end = text.len().min(at);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    end
}
