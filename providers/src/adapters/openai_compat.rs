//! OpenAI-compatible `/chat/completions` upstreams: OpenRouter, Kimi, OpenCode
//! Zen's chat family, and any base URL declared in config.
//!
//! The request goes out as the caller wrote it (unknown keys included). A
//! streamed request gets `stream_options.include_usage:true` so usage always
//! comes back; a non-stream one is sent non-stream and its single JSON answer
//! becomes one chunk, so both go through the same normaliser and assembler. The quirks of each upstream are handled generically: SSE comments
//! (OpenRouter keep-alives) never reach the JSON parser, usage found inside a
//! choice (Kimi) is moved by the normaliser, and anything after `[DONE]`
//! (Zen's cost event) is never read.

use std::future::Future;
use std::task::{Poll, ready};

use futures::future::{BoxFuture, Either};
use futures::stream::StreamExt;
use serde::Deserialize;

use crate::decode::from_json_bytes;
use crate::error::ProviderError;
use crate::http::{EndMarker, Response, Upstream};
use crate::openai::{
    ChatChunk, ChatRequest, ChunkChoice, Delta, FinishReason, Role, StreamOptions, ToolCall,
    ToolCallDelta, Usage,
};
use crate::provider::{ChatProvider, ChunkStream};

#[derive(Debug)]
pub struct OpenAiCompatible {
    upstream: Upstream,
}

impl OpenAiCompatible {
    pub fn new(upstream: Upstream) -> Self {
        Self { upstream }
    }
}

/// Sends `request` to `{base}/chat/completions`, streamed or not as the client asked.
///
/// The request is encoded before the returned future is built, so the future
/// holds its JSON bytes, not the request: every chat's future is boxed, and
/// a smaller one is cheaper to build and move.
pub fn send_chat(
    upstream: &Upstream,
    request: Box<ChatRequest>,
) -> impl Future<Output = Result<ChunkStream, ProviderError>> + Send + use<'_> {
    if request.is_stream() {
        Either::Left(stream_chat(upstream, request))
    } else {
        Either::Right(complete_chat(upstream, request))
    }
}

/// A non-stream answer, parsed leniently (reasoning under either name, `error` on a 200).
#[derive(Deserialize)]
struct Completion {
    #[serde(default)]
    system_fingerprint: Option<String>,
    #[serde(default)]
    choices: Vec<CompletionChoice>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<Box<serde_json::Value>>,
}

#[derive(Deserialize)]
struct CompletionChoice {
    #[serde(default)]
    index: u32,
    message: CompletionMessage,
    #[serde(default)]
    finish_reason: Option<FinishReason>,
    #[serde(default)]
    logprobs: Option<Box<serde_json::Value>>,
}

struct CompletionMessage {
    role: Option<Role>,
    content: Option<String>,
    reasoning_content: Option<String>,
    reasoning: Option<String>,
    reasoning_details: Option<Vec<serde_json::Value>>,
    /// `null` from some servers (Mistral, vLLM) when there are none.
    tool_calls: Option<Vec<ToolCall>>,
    refusal: Option<String>,
    /// Every other key (`annotations`, `images`, ...), passed on.
    extra: serde_json::Map<String, serde_json::Value>,
}

crate::openai::deserialize_with_extra!(
    CompletionMessage,
    "a message object",
    required {},
    optional {
        role: "role",
        content: "content",
        reasoning_content: "reasoning_content",
        reasoning: "reasoning",
        tool_calls: "tool_calls",
        refusal: "refusal",
    },
    lists {
        reasoning_details: "reasoning_details"
    },
);

impl Completion {
    /// The whole answer as one chunk: each choice's message becomes its delta.
    fn into_chunk(self) -> ChatChunk {
        let choices = self
            .choices
            .into_iter()
            .map(|c| {
                let calls: Vec<ToolCallDelta> = c
                    .message
                    .tool_calls
                    .into_iter()
                    .flatten()
                    .enumerate()
                    .map(|(i, call)| {
                        let index = u32::try_from(i).unwrap_or(u32::MAX);
                        ToolCallDelta::opening(index, call.id, call.kind, call.name, call.arguments)
                    })
                    .collect();
                ChunkChoice {
                    index: c.index,
                    delta: Delta {
                        role: c.message.role,
                        content: c.message.content,
                        reasoning_content: c.message.reasoning_content.or(c.message.reasoning),
                        reasoning_details: c.message.reasoning_details,
                        tool_calls: (!calls.is_empty()).then_some(calls),
                        refusal: c.message.refusal,
                        extra: c.message.extra,
                        ..Delta::default()
                    },
                    finish_reason: c.finish_reason,
                    logprobs: c.logprobs,
                    ..ChunkChoice::default()
                }
            })
            .collect();
        ChatChunk {
            system_fingerprint: self.system_fingerprint,
            choices,
            usage: self.usage,
            error: self.error,
            ..ChatChunk::default()
        }
    }
}

fn complete_chat(
    upstream: &Upstream,
    mut request: Box<ChatRequest>,
) -> impl Future<Output = Result<ChunkStream, ProviderError>> + Send + use<'_> {
    request.stream = Some(false);
    request.stream_options = None;
    let json = upstream.encode(&request);
    async move {
        let body = upstream
            .post("/chat/completions", json?, &[])
            .await?
            .bytes()
            .await?;
        let completion: Completion = from_json_bytes(&body).map_err(|e| {
            ProviderError::protocol(upstream.provider(), format!("bad completion JSON: {e}"))
        })?;
        Ok(futures::stream::once(std::future::ready(Ok(completion.into_chunk()))).boxed())
    }
}

/// Sends a streamed request and converts the SSE answer, stopping at `[DONE]`.
fn stream_chat(
    upstream: &Upstream,
    mut request: Box<ChatRequest>,
) -> impl Future<Output = Result<ChunkStream, ProviderError>> + Send + use<'_> {
    request.stream = Some(true);
    let options = request
        .stream_options
        .get_or_insert_with(StreamOptions::default);
    options.include_usage = Some(true);
    let json = upstream.encode(&request);
    async move {
        let response = upstream.post("/chat/completions", json?, &[]).await?;
        Ok(chunks_of(upstream, response))
    }
}

/// The chunks of a streamed answer, stopping at `[DONE]`.
///
/// Polled by hand rather than through `take_while` and `filter_map`: each of
/// those builds a future per event and moves the chunk through it.
fn chunks_of(upstream: &Upstream, response: Response) -> ChunkStream {
    let provider = upstream.provider().to_owned();
    let ended = EndMarker::default();
    let mut events = response.sse_events(&ended);
    let mut done = false;
    let mut numbering = CallNumbering::default();
    futures::stream::poll_fn(move |cx| {
        while !done {
            let event = match ready!(events.poll_next_unpin(cx)) {
                Some(Ok(event)) => event,
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => return Poll::Ready(None),
            };
            let data = event.data.trim();
            if data == "[DONE]" {
                ended.set();
                done = true;
            } else if !data.is_empty() {
                let chunk = ChatChunk::from_json(&event.data).map_err(|e| {
                    ProviderError::protocol(&provider, format!("bad chunk JSON: {e}"))
                });
                return Poll::Ready(Some(chunk.map(|mut chunk| {
                    numbering.number(&mut chunk);
                    chunk
                })));
            }
        }
        Poll::Ready(None)
    })
    .boxed()
}

/// Indexes for the tool-call pieces of a stream that sent none, per choice:
/// a piece with an id or a name starts the next call, one with neither
/// continues the last.
#[derive(Default)]
struct CallNumbering {
    /// Calls started so far, by choice index.
    calls: Vec<(u32, u32)>,
}

impl CallNumbering {
    fn number(&mut self, chunk: &mut ChatChunk) {
        for choice in &mut chunk.choices {
            let Some(pieces) = choice.delta.tool_calls.as_mut() else {
                continue;
            };
            for call in pieces
                .iter_mut()
                .filter(|call| call.index == ToolCallDelta::UNINDEXED)
            {
                let at = match self.calls.iter().position(|(c, _)| *c == choice.index) {
                    Some(at) => at,
                    None => {
                        self.calls.push((choice.index, 0));
                        self.calls.len() - 1
                    }
                };
                let Some((_, started)) = self.calls.get_mut(at) else {
                    continue;
                };
                let named = call.function.as_ref().is_some_and(|f| f.name.is_some())
                    || call.custom.as_ref().is_some_and(|c| c.name.is_some());
                if call.id.is_some() || named || *started == 0 {
                    *started += 1;
                }
                call.index = *started - 1;
            }
        }
    }
}

#[derive(Deserialize)]
struct ModelList {
    data: Vec<ModelId>,
}

#[derive(Deserialize)]
struct ModelId {
    id: String,
}

/// `GET {base}/models` → ids (OpenRouter omits `object:"list"`; only `data` is read).
pub async fn list_models(upstream: &Upstream) -> Result<Vec<String>, ProviderError> {
    let list: ModelList = upstream.get_json("/models").await?;
    Ok(list.data.into_iter().map(|m| m.id).collect())
}

impl ChatProvider for OpenAiCompatible {
    fn name(&self) -> &str {
        self.upstream.provider()
    }

    fn chat(&self, request: Box<ChatRequest>) -> BoxFuture<'_, Result<ChunkStream, ProviderError>> {
        Box::pin(send_chat(&self.upstream, request))
    }

    fn list_models(&self) -> BoxFuture<'_, Result<Vec<String>, ProviderError>> {
        Box::pin(list_models(&self.upstream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `f` returns, read off its type.
    fn future_size<A, B, F: Future>(_: impl FnOnce(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn whole_answers_take_null_tool_calls_and_unknown_finish_reasons() {
        let body = br#"{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi","tool_calls":null},"finish_reason":"insufficient_system_resource"}]}"#;
        let completion: Completion = from_json_bytes(body).unwrap();
        let chunk = completion.into_chunk();
        assert_eq!(chunk.choices[0].delta.content.as_deref(), Some("hi"));
        assert_eq!(chunk.choices[0].delta.tool_calls, None);
        assert_eq!(chunk.choices[0].finish_reason, Some(FinishReason::Stop));
    }

    #[test]
    fn tool_call_pieces_without_an_index_are_numbered_by_their_ids() {
        let pieces = [
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":"{\"x\""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"function":{"arguments":":1}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"id":"b","type":"function","function":{"name":"g","arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":5,"id":"c","function":{"name":"h","arguments":"{}"}}]}}]}"#,
            // A named piece without an id is a new call too.
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"function":{"name":"k","arguments":"{}"}}]}}]}"#,
            // Each choice numbers its own calls.
            r#"{"choices":[{"index":1,"delta":{"tool_calls":[{"id":"d","function":{"name":"f","arguments":"{}"}}]}}]}"#,
        ];
        let mut numbering = CallNumbering::default();
        let indexes: Vec<u32> = pieces
            .iter()
            .map(|piece| {
                let mut chunk = ChatChunk::from_json(piece).unwrap();
                numbering.number(&mut chunk);
                chunk.choices[0].delta.tool_calls.as_ref().unwrap()[0].index
            })
            .collect();
        // An index the upstream sent is kept.
        assert_eq!(indexes, [0, 0, 1, 5, 2, 0]);
    }

    #[test]
    fn the_chat_future_holds_the_encoded_request_not_the_request() {
        // Every chat boxes this future. Holding the request (552 bytes, kept
        // again by each nested call) and reqwest's future made it 3,368 bytes.
        let size = future_size(send_chat);
        assert!(size <= 1536, "send_chat's future is {size} bytes");
    }
}
