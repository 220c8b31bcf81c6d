//! The `ChatProvider` trait every upstream adapter implements.

use futures::future::BoxFuture;
use futures::stream::BoxStream;

use crate::error::ProviderError;
use crate::openai::{ChatChunk, ChatRequest};

/// OpenAI chunks converted from an upstream stream, one per upstream event.
///
/// Adapters fill only what they know (`choices`, `usage`, `error`); ids, `created`,
/// `model`, the leading role, `tool_calls` finishes and the usage position are set
/// once for all adapters by [`crate::stream::normalize`].
pub type ChunkStream = BoxStream<'static, Result<ChatChunk, ProviderError>>;

/// One upstream protocol.
///
/// Whatever the upstream sends, the adapter yields OpenAI chunks: a streamed
/// answer chunk by chunk, a non-stream answer as one chunk. The proxy then
/// streams them or assembles the `chat.completion` from them
/// ([`crate::stream::Assembler`]), so there is one way from chunks to either shape.
pub trait ChatProvider: Send + Sync + 'static {
    /// The routing name (`ollama`, `openrouter`, ...).
    fn name(&self) -> &str;

    /// Sends `request`, whose `model` is already stripped of its routing prefix.
    ///
    /// Resolves once the upstream accepted the request; a refusal (non-2xx)
    /// is an `Err` here, before any chunk exists.
    fn chat(&self, request: Box<ChatRequest>) -> BoxFuture<'_, Result<ChunkStream, ProviderError>>;

    /// The model ids the upstream offers (bare, without the routing prefix).
    fn list_models(&self) -> BoxFuture<'_, Result<Vec<String>, ProviderError>>;
}
