//! `POST /v1/chat/completions` and `POST /v1/chat`.
//!
//! The first upstream event is awaited before any status is sent, so a refusal
//! or an early failure becomes a real HTTP error. After that every upstream
//! event is written as its own SSE event at once (events ready together share
//! a body frame, see [`crate::sse`]). Dropping the response body, as hyper does when the client
//! goes away, drops the upstream request with it.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use lakehouse_plugins::config::PluginName;
use lakehouse_plugins::context::PluginRun;
use lakehouse_plugins::{ChatContext, ChatResult, RequestOptions};
use lakehouse_providers::openai::{ChatChunk, ChatCompletion, ChatRequest, new_id, unix_now};
use lakehouse_providers::stream::{Assembler, Normalize, ResponseMeta, normalize};
use lakehouse_providers::{ChatProvider, ChunkStream, ProviderError};
use tracing::Instrument;

use crate::app::SharedState;
use crate::config::ModelTiers;
use crate::error::ApiError;
use crate::observer::Witness;
use crate::routes::body::read_json;
use crate::sse::{self, ChunkEncoder, Event};

// Both routes take the whole request rather than a `HeaderMap` extractor,
// which clones every header of every chat, and are plain functions that take
// its parts apart before the future exists (an `async fn` would keep the
// request in its state beside `handle`'s future).

/// The OpenAI route.
pub fn chat_completions(
    State(state): State<SharedState>,
    request: Request,
) -> impl Future<Output = Response> {
    let (parts, body) = request.into_parts();
    handle(state, parts.headers, body, Shape::Completions)
        .map(|answer| answer.unwrap_or_else(IntoResponse::into_response))
}

/// The curl-friendly route: same body and answer, plus top-level `provider` and `content`.
pub fn chat(State(state): State<SharedState>, request: Request) -> impl Future<Output = Response> {
    let (parts, body) = request.into_parts();
    handle(state, parts.headers, body, Shape::Chat)
        .map(|answer| answer.unwrap_or_else(IntoResponse::into_response))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Completions,
    Chat,
}

async fn handle(
    state: SharedState,
    headers: HeaderMap,
    body: Body,
    shape: Shape,
) -> Result<Response, ApiError> {
    // Boxed where it is read: the request moves through several calls and
    // futures on its way upstream, each of which would copy ~500 bytes.
    let request: Box<ChatRequest> =
        read_json(&headers, body, state.config.server.max_body_bytes).await?;
    // In a block: a local read by reference keeps its room in the future's
    // state up to the end of its scope, here beside the completion's future.
    let (provider, completing) = {
        let started = start(&state, &headers, request).await?;
        if started.stream {
            let keep_alive = state.config.server.keep_alive();
            let wants_usage = started.wants_usage;
            return Ok(sse_response(started.chunks(), wants_usage, keep_alive));
        }
        (started.provider.clone(), started.complete())
    };
    let completion = completing.await?;
    Ok(match shape {
        Shape::Completions => completion_response(&completion)?,
        Shape::Chat => {
            let content = completion.first_text().to_owned();
            let mut value = serde_json::to_value(&completion)
                .map_err(|e| ApiError::internal(format!("cannot encode the response: {e}")))?;
            if let Some(obj) = value.as_object_mut() {
                obj.insert("provider".into(), provider.into());
                obj.insert("content".into(), content.into());
            }
            Json(value).into_response()
        }
    })
}

/// `completion` as a JSON response, encoded into one buffer sized for it
/// (axum's `Json` starts at 128 bytes and regrows for every answer).
fn completion_response(completion: &ChatCompletion) -> Result<Response, ApiError> {
    let mut body = Vec::with_capacity(512 + completion.first_text().len());
    completion
        .write_json(&mut body)
        .map_err(|e| ApiError::internal(format!("cannot encode the response: {e}")))?;
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// A chat under way: routed, pre hooks run, the first upstream chunk in hand.
pub(crate) struct Started {
    /// The provider answering.
    pub provider: String,
    /// The caller asked for a stream.
    pub stream: bool,
    /// The caller asked for the trailing usage chunk.
    pub wants_usage: bool,
    meta: ResponseMeta,
    first: ChatChunk,
    rest: Normalize,
    lakehouse: Option<serde_json::Value>,
    post: Option<PostHooks>,
    /// Whether the answer is kept for distillation (`[distillation] capture`).
    capture: bool,
    witness: Witness,
}

/// Starts one chat: validates, plans (rag model, tier), runs the pre hooks,
/// routes and waits for the first upstream chunk, so that a refusal or an
/// early failure is still an error rather than a broken stream. Every chat
/// started here is witnessed (metrics and the observer), failed ones too.
pub(crate) fn start<'a>(
    state: &'a SharedState,
    headers: &HeaderMap,
    request: Box<ChatRequest>,
) -> impl Future<Output = Result<Box<Started>, ApiError>> + use<'a> {
    // Planning is synchronous and done here, so the request (and the headers)
    // never sit in the future's state; the future holds the boxed plan only.
    let mut witness = Witness::new(state, headers, &request.model, request.is_stream());
    let planned = plan(state, headers, request);
    async move {
        // The two steps are awaited one after the other, so their futures
        // share their room in this one's state; `prepared` lives in a block
        // so that its room is not kept beside the waiting future's.
        let waiting = {
            let prepared = match planned {
                Ok(ctx) => prepare(state, ctx, &mut witness).await,
                Err(e) => Err(e),
            };
            match prepared {
                Ok(prepared) => first_chunk(prepared, &mut witness),
                Err(e) => {
                    witness.failed(&e);
                    return Err(e);
                }
            }
        };
        let started = waiting.await;
        if let Err(e) = &started {
            witness.failed(e);
        }
        started
    }
}

/// A chat planned, its pre hooks run, its route chosen and its upstream call
/// made (not yet polled): what waiting for the first chunk needs. The request
/// itself is gone into the call, so this stays a few words wide wherever the
/// chat's futures hold it.
struct Prepared<'a> {
    provider: &'a dyn ChatProvider,
    reply: BoxFuture<'a, Result<ChunkStream, ProviderError>>,
    stream: bool,
    wants_usage: bool,
    id: String,
    client_model: String,
    lakehouse: Option<serde_json::Value>,
    post: Option<PostHooks>,
    capture: bool,
}

/// Checks the corpora the plan names, runs the pre hooks, routes and makes
/// the upstream call.
async fn prepare<'a>(
    state: &'a SharedState,
    mut ctx: Box<ChatContext>,
    witness: &mut Witness,
) -> Result<Prepared<'a>, ApiError> {
    for corpus in &ctx.corpora {
        // Boxed: only rag chats name corpora; inline, the store's future
        // would widen every chat's future.
        Box::pin(state.store.corpus(corpus))
            .await
            .map_err(|e| ApiError::from(e).with_param("lakehouse.corpora"))?;
    }
    let pre = state.pipeline.pre(&mut ctx).await;
    record_plugin_runs(state, "pre", &ctx.annotations.plugins);
    pre?;

    let (provider, upstream_model) = state.registry.resolve(&ctx.target_model)?;
    witness.routed(&ctx.id, provider.name());
    let capture = state.config.distillation.capture;
    if capture {
        witness.conversation(&ctx.request.messages);
    }
    // Plain chats (no plugin ran) skip assembling and post hooks entirely,
    // and hand their request upstream without a copy.
    let lakehouse = ctx.lakehouse_field();
    let (mut request, id, client_model, post) = if lakehouse.is_some() {
        let request = ctx.request.clone();
        let (id, client_model) = (ctx.id.clone(), ctx.client_model.clone());
        let post = PostHooks {
            state: state.clone(),
            ctx,
        };
        (request, id, client_model, Some(post))
    } else {
        let ctx = *ctx;
        (ctx.request, ctx.id, ctx.client_model, None)
    };
    request.model = upstream_model;
    let stream = request.is_stream();
    let wants_usage = request.wants_usage();
    tracing::debug!(model = %client_model, provider = provider.name(), stream, "chat");
    Ok(Prepared {
        provider,
        reply: provider.chat(request),
        stream,
        wants_usage,
        id,
        client_model,
        lakehouse,
        post,
        capture,
    })
}

/// Waits for the prepared chat's first chunk.
///
/// A plain `fn` returning the future: an `async fn` would keep `prepared` in
/// its state beside the fields taken out of it.
fn first_chunk<'a, 'w>(
    prepared: Prepared<'a>,
    witness: &'w mut Witness,
) -> impl Future<Output = Result<Box<Started>, ApiError>> + use<'a, 'w> {
    let Prepared {
        provider,
        reply,
        stream,
        wants_usage,
        id,
        client_model,
        lakehouse,
        post,
        capture,
    } = prepared;
    async move {
        let upstream = match reply.await {
            Ok(upstream) => upstream,
            Err(e) => {
                witness.upstream_error(&e);
                return Err(e.into());
            }
        };
        let meta = ResponseMeta {
            id: id.into(),
            created: unix_now(),
            model: client_model.into(),
        };
        let mut rest = normalize(provider.name().to_owned(), upstream, meta.clone());
        let first = match rest.next().await {
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => {
                witness.upstream_error(&e);
                return Err(e.into());
            }
            None => {
                let e = ProviderError::protocol(provider.name(), "empty stream");
                witness.upstream_error(&e);
                return Err(e.into());
            }
        };
        witness.first_chunk(lakehouse.as_ref());
        if let Some(usage) = &first.usage {
            witness.usage(usage);
        }
        Ok(Box::new(Started {
            provider: provider.name().to_owned(),
            stream,
            wants_usage,
            meta,
            first,
            rest,
            lakehouse,
            post,
            capture,
            witness: witness.take(),
        }))
    }
}

/// Counts plugin hook runs and their time in the metrics.
fn record_plugin_runs(state: &SharedState, hook: &str, runs: &[PluginRun]) {
    for run in runs {
        state
            .metrics
            .plugin_runs
            .with(&[run.name, hook, run.status])
            .add(1);
        state
            .metrics
            .plugin_duration
            .with(&[run.name, hook])
            .observe(Duration::from_secs_f64(run.ms.max(0.0) / 1000.0));
    }
}

impl Started {
    /// The whole answer as one completion. Post hooks run before it returns,
    /// also when the upstream fails midway, exactly as for a stream.
    ///
    /// A plain `fn` returning the future: an `async fn` would keep `self` in
    /// its state beside the fields taken out of it.
    pub(crate) fn complete(
        self: Box<Self>,
    ) -> impl Future<Output = Result<ChatCompletion, ApiError>> {
        let Self {
            meta,
            first,
            mut rest,
            lakehouse,
            post,
            mut witness,
            ..
        } = *self;
        let mut assembler = Assembler::default();
        assembler.push(&first);
        async move {
            let mut failure = None;
            while let Some(chunk) = rest.next().await {
                match chunk {
                    Ok(chunk) => assembler.push(&chunk),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            if let Some(usage) = assembler.usage() {
                witness.usage(usage);
            }
            finish_chat(witness, post, Some(&assembler), failure.as_ref()).await;
            if let Some(e) = failure {
                return Err(e.into());
            }
            let mut completion = assembler.finish(&meta);
            completion.lakehouse = lakehouse;
            Ok(completion)
        }
    }

    /// Every chunk as it arrives, the first carrying the `lakehouse` field.
    /// Post hooks (when plugins ran) see each chunk as it passes and run once
    /// the upstream is done or failed, before the stream ends, so a client
    /// may rate the chat as soon as it has read the stream. The chat is
    /// witnessed when the stream ends, fails, or is dropped by the client.
    pub(crate) fn chunks(self: Box<Self>) -> Tap {
        let Self {
            mut first,
            rest,
            lakehouse,
            post,
            capture,
            witness,
            ..
        } = *self;
        first.lakehouse = lakehouse.map(Box::new);
        let assemble = post.is_some() || capture;
        Tap {
            first: Some(first),
            chunks: rest,
            post,
            assembler: assemble.then(Assembler::default),
            witness: Some(witness),
            // Logs from later polls belong to the request's span too.
            span: tracing::Span::current(),
            ending: None,
        }
    }
}

/// The stream [`Started::chunks`] returns. A plain `Stream` rather than
/// `unfold`, which moves its whole state (post hooks, assembler, witness) into
/// a new future and back out for every chunk; unboxed, like the normaliser it
/// polls, so a chunk crosses no call through a pointer on its way to the body.
pub(crate) struct Tap {
    /// The chunk [`start`] waited for, handed on first.
    first: Option<ChatChunk>,
    chunks: Normalize,
    post: Option<PostHooks>,
    /// Assembles the answer for the post hooks and for distillation.
    assembler: Option<Assembler>,
    /// Taken when the upstream is done or failed; `None` after that.
    witness: Option<Witness>,
    span: tracing::Span,
    /// Post hooks and witness at the end, resolving to the last item to hand on.
    ending: Option<BoxFuture<'static, Option<Result<ChatChunk, ProviderError>>>>,
}

impl Stream for Tap {
    type Item = Result<ChatChunk, ProviderError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(ending) = &mut this.ending {
                let last = ready!(ending.as_mut().poll(cx));
                this.ending = None;
                return Poll::Ready(last);
            }
            let Some(witness) = this.witness.as_mut() else {
                return Poll::Ready(None);
            };
            let next = match this.first.take() {
                Some(first) => Some(Ok(first)),
                None => {
                    let _in_request = this.span.enter();
                    ready!(this.chunks.poll_next_unpin(cx))
                }
            };
            if let Some(Ok(chunk)) = &next {
                if let Some(assembler) = &mut this.assembler {
                    assembler.push(chunk);
                }
                if let Some(usage) = &chunk.usage {
                    witness.usage(usage);
                }
                return Poll::Ready(next);
            }
            if let Some(witness) = this.witness.take() {
                let (post, assembler) = (this.post.take(), this.assembler.take());
                let ending = async move {
                    let error = match &next {
                        Some(Err(e)) => Some(e),
                        _ => None,
                    };
                    finish_chat(witness, post, assembler.as_ref(), error).await;
                    next
                };
                this.ending = Some(ending.instrument(this.span.clone()).boxed());
            }
        }
    }
}

/// Runs the post hooks (when plugins ran) and witnesses the chat once its
/// upstream is done (`error` is `None`) or failed. Streams and whole answers
/// both end here, so both treat a failure alike.
async fn finish_chat(
    mut witness: Witness,
    post: Option<PostHooks>,
    assembler: Option<&Assembler>,
    error: Option<&ProviderError>,
) {
    if let Some(assembler) = assembler {
        if let Some(post) = post {
            // Boxed: the plugins' future is large and only chats that ran
            // plugins get here; inline it would widen every chat's future.
            Box::pin(post.run(assembler, error.map(ToString::to_string))).await;
        }
        witness.answer(assembler.text());
    }
    match error {
        Some(e) => {
            witness.upstream_error(e);
            witness.failed(&ApiError::from(e.clone()));
        }
        None => witness.succeeded(),
    }
}

/// Takes the proxy's own `lakehouse` options out of the body: they never travel upstream.
fn take_options(request: &mut ChatRequest) -> Result<RequestOptions, ApiError> {
    let Some(value) = request.extra.remove("lakehouse") else {
        return Ok(RequestOptions::default());
    };
    let mut options: RequestOptions = serde_json::from_value(value).map_err(|e| {
        ApiError::bad_request(format!("invalid lakehouse options: {e}")).with_param("lakehouse")
    })?;
    if options.k.is_some_and(|k| !(1..=50).contains(&k)) {
        return Err(
            ApiError::bad_request("lakehouse.k must be from 1 to 50").with_param("lakehouse")
        );
    }
    if let Some(corpora) = &mut options.corpora {
        // Each corpus named is one search per chat: a repeat is searched once,
        // and a request cannot fan out past the limit.
        let mut distinct: Vec<String> = Vec::with_capacity(corpora.len().min(MAX_CORPORA));
        for name in corpora.drain(..) {
            if distinct.contains(&name) {
                continue;
            }
            if distinct.len() == MAX_CORPORA {
                return Err(ApiError::bad_request(format!(
                    "lakehouse.corpora names more than the {MAX_CORPORA} distinct corpora one chat may search"
                ))
                .with_param("lakehouse.corpora"));
            }
            distinct.push(name);
        }
        *corpora = distinct;
    }
    Ok(options)
}

/// Most distinct corpora one chat may search.
const MAX_CORPORA: usize = 16;

/// The header naming the memory namespace (when the body's options do not).
const NAMESPACE_HEADER: HeaderName = HeaderName::from_static("x-lakehouse-namespace");

/// Longest accepted namespace.
const MAX_NAMESPACE: usize = 256;

/// Validates the request, takes the proxy's own options out of it and
/// resolves the model (rag model, tier, plain id) and what the plugins should
/// do. The corpora it names are checked by [`prepare`]. Boxed: the context
/// travels through the chat's futures and, with plugins, its post hooks.
fn plan(
    state: &SharedState,
    headers: &HeaderMap,
    mut request: Box<ChatRequest>,
) -> Result<Box<ChatContext>, ApiError> {
    request.validate().map_err(ApiError::bad_request)?;
    let max_messages = state.config.server.max_messages;
    if request.messages.len() > max_messages {
        return Err(ApiError::bad_request(format!(
            "{} messages is more than the {max_messages} this server accepts (server.max_messages)",
            request.messages.len()
        ))
        .with_param("messages"));
    }
    let options = take_options(&mut request)?;
    let client_model = request.model.clone();
    let rag = state.config.rag_model(&client_model);
    if rag.is_none() && client_model.starts_with("rag/") {
        let known: Vec<&str> = state
            .config
            .rag_models
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        return Err(ApiError::not_found(
            "model_not_found",
            format!(
                "no rag model {client_model:?} in [[rag_models]]; declared: {}",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        )
        .with_param("model"));
    }
    let base = rag.map_or(client_model.as_str(), |r| r.model.as_str());
    let target_model = resolve_tier(&state.config.models, base)?.to_owned();
    let plugins = &state.config.plugins;
    let enabled: Vec<PluginName> = match rag.and_then(|r| r.plugins.as_ref()) {
        Some(listed) => plugins
            .order
            .iter()
            .copied()
            .filter(|p| listed.contains(p))
            .collect(),
        None => plugins.order.clone(),
    };
    let corpora = options
        .corpora
        .clone()
        .or_else(|| rag.map(|r| r.corpora.clone()))
        .unwrap_or_default();
    let memory = options
        .memory
        .unwrap_or_else(|| rag.is_some() && enabled.contains(&PluginName::Pathway));
    let namespace = options
        .namespace
        .clone()
        .or_else(|| {
            headers
                .get(&NAMESPACE_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .or_else(|| request.user.clone())
        .unwrap_or_else(|| "default".to_owned());
    if namespace.is_empty() || namespace.len() > MAX_NAMESPACE {
        return Err(ApiError::bad_request(format!(
            "the memory namespace must be 1-{MAX_NAMESPACE} bytes"
        )));
    }
    let k = options
        .k
        .or_else(|| rag.and_then(|r| r.k))
        .unwrap_or(plugins.matrix.k);
    Ok(Box::new(ChatContext {
        id: new_id("chatcmpl-"),
        query: ChatContext::last_user_text(&request),
        request,
        client_model,
        target_model,
        namespace,
        corpora,
        k,
        token_budget: plugins.matrix.token_budget,
        memory,
        cost_downgrade: options
            .downgrade
            .unwrap_or(plugins.downgrade.cost_downgrade),
        enabled,
        query_vectors: Default::default(),
        sources: Vec::new(),
        memories: Vec::new(),
        annotations: Default::default(),
    }))
}

/// Post hooks of a chat that ran plugins.
struct PostHooks {
    state: SharedState,
    ctx: Box<ChatContext>,
}

impl PostHooks {
    /// Runs the post hooks on the answer `assembler` gathered.
    async fn run(self, assembler: &Assembler, error: Option<String>) {
        let result = ChatResult {
            text: assembler.text().to_owned(),
            usage: assembler.usage().cloned(),
            error,
        };
        let runs = self.state.pipeline.post(&self.ctx, &result).await;
        record_plugin_runs(&self.state, "post", &runs);
    }
}

/// `tier/<name>` → the model the `[models]` tier names; other ids pass unchanged.
pub(crate) fn resolve_tier<'a>(tiers: &'a ModelTiers, model: &'a str) -> Result<&'a str, ApiError> {
    let Some(tier) = model.strip_prefix("tier/") else {
        return Ok(model);
    };
    tiers.get(tier).ok_or_else(|| {
        let known: Vec<&str> = tiers.iter().map(|(name, _)| name).collect();
        ApiError::not_found(
            "model_not_found",
            format!(
                "tier {tier:?} is not set in [models]; set tiers are: {}",
                known.join(", ")
            ),
        )
        .with_param("model")
    })
}

/// One SSE event per chunk, then exactly one `[DONE]`; after an error, an error
/// event and nothing more. The trailing usage chunk goes out only when asked for.
fn sse_response(chunks: Tap, wants_usage: bool, keep_alive: Duration) -> Response {
    let events = ChunkEvents {
        chunks,
        encoder: ChunkEncoder::default(),
        wants_usage,
        finished: false,
    };
    sse::response(events, keep_alive)
}

/// The SSE events of a chat's chunks (see [`sse_response`]); a plain `Stream`
/// so nothing is moved per chunk. The events of chunks that are ready
/// together go out in one frame (see [`crate::sse`]): none waits for another.
struct ChunkEvents {
    chunks: Tap,
    encoder: ChunkEncoder,
    wants_usage: bool,
    finished: bool,
}

/// A frame takes no more ready events once it holds this many bytes, so a
/// burst of chunks is written as it is encoded rather than gathered whole.
const FRAME_BYTES: usize = 16 * 1024;

/// Room a frame starts with: a usual upstream read's worth of events (~8),
/// so the frame is not regrown and copied event by event.
const FRAME_START_BYTES: usize = 2 * 1024;

impl Stream for ChunkEvents {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let this = self.get_mut();
        let mut wire = Vec::new();
        while !this.finished && wire.len() < FRAME_BYTES {
            let Poll::Ready(next) = this.chunks.poll_next_unpin(cx) else {
                break;
            };
            match next {
                Some(Ok(chunk)) if chunk.choices.is_empty() && !this.wants_usage => {}
                Some(Ok(chunk)) => {
                    if wire.is_empty() {
                        wire.reserve(FRAME_START_BYTES);
                    }
                    if let Err(e) = this.encoder.write(&chunk, &mut wire) {
                        this.finished = true;
                        let error = ApiError::internal(format!("cannot encode a chunk: {e}"));
                        sse::write_data(&mut wire, &error.body().to_string());
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!("stream failed after it started: {e}");
                    this.finished = true;
                    sse::write_data(&mut wire, &ApiError::from(e).body().to_string());
                }
                None => {
                    this.finished = true;
                    sse::write_data(&mut wire, "[DONE]");
                }
            }
        }
        match (wire.is_empty(), this.finished) {
            (false, _) => Poll::Ready(Some(Event::from_wire(wire))),
            (true, true) => Poll::Ready(None),
            (true, false) => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_resolve_and_unknown_tiers_are_404() {
        let tiers = ModelTiers {
            local_fast: Some("ollama/qwen3:8b".into()),
            ..ModelTiers::default()
        };
        assert_eq!(
            resolve_tier(&tiers, "tier/local_fast").unwrap(),
            "ollama/qwen3:8b"
        );
        assert_eq!(
            resolve_tier(&tiers, "kimi/kimi-k2.6").unwrap(),
            "kimi/kimi-k2.6"
        );
        let err = resolve_tier(&tiers, "tier/frontier_arch").unwrap_err();
        assert_eq!(err.status.as_u16(), 404);
        assert!(err.message.contains("local_fast"));
    }
}
