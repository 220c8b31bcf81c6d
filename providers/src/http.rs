//! The HTTP side shared by every adapter: one client per upstream ([`h1`] for
//! `http://`, reqwest for `https://`), its auth, POSTs whose non-2xx answers
//! become [`ProviderError`]s, and the two stream framings upstreams use (SSE
//! and NDJSON), read event by event.

mod h1;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::stream::{BoxStream, Stream, StreamExt};
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;

use crate::error::{ProviderError, UpstreamErrorKind, error_from_body, retry_after};
use crate::sse::SseEvent;

/// An API key. Its `Debug` never shows the value, so it cannot leak into logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How requests to an upstream are authenticated.
#[derive(Debug, Clone)]
pub enum Auth {
    None,
    Bearer(Secret),
    /// A named header carrying the key as is (Anthropic's `x-api-key`).
    Header(&'static str, Secret),
}

impl Auth {
    fn secret(&self) -> Option<&Secret> {
        match self {
            Auth::None => None,
            Auth::Bearer(s) | Auth::Header(_, s) => Some(s),
        }
    }
}

/// Timeouts for one upstream.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    /// Longest silence allowed: before the headers, and between two stream reads.
    pub read: Duration,
}

/// One upstream endpoint: base URL, transport, auth and extra headers. Cheap to
/// clone (one `Arc`); everything a request needs is parsed and built once here,
/// not per call: the URL, the auth header and the configured extra headers.
#[derive(Debug, Clone)]
pub struct Upstream(Arc<Endpoint>);

#[derive(Debug)]
struct Endpoint {
    provider: String,
    base_url: reqwest::Url,
    /// The base URL's path without its trailing `/`, which request paths extend.
    base_path: String,
    transport: Transport,
    auth: Auth,
    /// The auth header (marked sensitive) and the extra headers, sent with every request.
    headers: HeaderMap,
    timeouts: Timeouts,
}

/// How requests travel, chosen by the base URL's scheme.
#[derive(Debug, Clone)]
enum Transport {
    /// `http://` (local Ollama, model servers on the LAN): [`h1`], driven by the
    /// request's own task, where the proxy's own cost shows.
    Plain(h1::Client),
    /// `https://` (the cloud providers): reqwest, for TLS, HTTP/2 and the
    /// system's proxy settings; a network round trip dwarfs the client's cost.
    Tls(reqwest::Client),
}

impl Upstream {
    pub fn new(
        provider: impl Into<String>,
        base_url: &str,
        auth: Auth,
        timeouts: Timeouts,
    ) -> Result<Self, ProviderError> {
        let provider = provider.into();
        let config_error = |message: String| ProviderError::Connection {
            provider: provider.clone(),
            message,
        };
        let base_url = reqwest::Url::parse(base_url.trim_end_matches('/'))
            .map_err(|e| config_error(format!("bad base URL {base_url:?}: {e}")))?;
        let transport = match base_url.scheme() {
            "http" => {
                let host = base_url
                    .host_str()
                    .ok_or_else(|| config_error(format!("the base URL {base_url} has no host")))?;
                let port = base_url.port_or_known_default().unwrap_or(80);
                let client = h1::Client::new(
                    host,
                    port,
                    base_url.port().is_none(),
                    timeouts.connect,
                    timeouts.read,
                )
                .map_err(config_error)?;
                Transport::Plain(client)
            }
            "https" => Transport::Tls(
                reqwest::Client::builder()
                    .connect_timeout(timeouts.connect)
                    .read_timeout(timeouts.read)
                    .tcp_nodelay(true)
                    .pool_idle_timeout(h1::IDLE_TIMEOUT)
                    // An API answer is the answer: a redirect is reported as the
                    // upstream's error rather than silently re-sent elsewhere, and a
                    // chat is never retried behind the caller's back.
                    .redirect(reqwest::redirect::Policy::none())
                    .retry(reqwest::retry::never())
                    .build()
                    .map_err(|e| config_error(format!("cannot build HTTP client: {e}")))?,
            ),
            other => {
                return Err(config_error(format!(
                    "the base URL {base_url} has scheme {other:?}; use http or https"
                )));
            }
        };
        if base_url.query().is_some() {
            return Err(config_error(format!(
                "the base URL {base_url} has a query; paths are appended to it"
            )));
        }
        let base_path = base_url.path().trim_end_matches('/').to_owned();
        let headers = auth_headers(&auth).map_err(config_error)?;
        Ok(Self(Arc::new(Endpoint {
            provider,
            base_url,
            base_path,
            transport,
            auth,
            headers,
            timeouts,
        })))
    }

    /// The same upstream with extra headers on every request (`[providers.x] headers`).
    pub fn with_headers(&self, extra: &[(String, String)]) -> Result<Self, ProviderError> {
        let mut headers = self.0.headers.clone();
        for (name, value) in extra {
            let bad = |what: &str| self.config_error(format!("bad header {what} in {name:?}"));
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad("name"))?;
            // The client writes these itself; a second copy breaks the
            // request (two `Host`s are a 400, two framings desync the connection).
            if [
                header::HOST,
                header::CONTENT_LENGTH,
                header::TRANSFER_ENCODING,
                header::CONNECTION,
            ]
            .contains(&name)
            {
                return Err(self.config_error(format!(
                    "header {name:?} is set by the client itself and cannot be configured"
                )));
            }
            let value = HeaderValue::from_str(value).map_err(|_| bad("value"))?;
            headers.insert(name, value);
        }
        Ok(self.rebuilt(self.0.auth.clone(), headers))
    }

    /// The same upstream with another auth (OpenCode Zen's `/messages` wants `x-api-key`).
    pub fn with_auth(&self, auth: Auth) -> Result<Self, ProviderError> {
        let mut headers = self.0.headers.clone();
        // Whatever header the current auth sent goes; the new auth's takes its place.
        let current = auth_headers(&self.0.auth).map_err(|m| self.config_error(m))?;
        for name in current.keys() {
            headers.remove(name);
        }
        headers.extend(auth_headers(&auth).map_err(|m| self.config_error(m))?);
        Ok(self.rebuilt(auth, headers))
    }

    /// A setting of this upstream that cannot be used (reported at start).
    fn config_error(&self, message: String) -> ProviderError {
        ProviderError::Connection {
            provider: self.0.provider.clone(),
            message,
        }
    }

    fn rebuilt(&self, auth: Auth, headers: HeaderMap) -> Self {
        Self(Arc::new(Endpoint {
            provider: self.0.provider.clone(),
            base_url: self.0.base_url.clone(),
            base_path: self.0.base_path.clone(),
            transport: self.0.transport.clone(),
            auth,
            headers,
            timeouts: self.0.timeouts,
        }))
    }

    /// The provider's name, as routed and reported.
    pub fn provider(&self) -> &str {
        &self.0.provider
    }

    /// How this upstream authenticates.
    pub fn auth(&self) -> &Auth {
        &self.0.auth
    }

    /// `path` under the base URL's path.
    fn path(&self, path: &str) -> String {
        let mut joined = String::with_capacity(self.0.base_path.len() + path.len());
        joined.push_str(&self.0.base_path);
        joined.push_str(path);
        joined
    }

    /// POSTs `body` as JSON; a non-2xx answer becomes an error with the upstream's message.
    pub async fn post_json<T: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &T,
        headers: &[(&str, &str)],
    ) -> Result<Response, ProviderError> {
        self.post(path, self.encode(body)?, headers).await
    }

    /// `body` as the JSON bytes [`post`](Self::post) sends. Encoding first
    /// lets a caller drop a large request before its future is built, so the
    /// (boxed, per-chat) future holds bytes rather than the request.
    pub fn encode<T: Serialize + ?Sized>(&self, body: &T) -> Result<Vec<u8>, ProviderError> {
        crate::encode::json::to_vec(body).map_err(|e| {
            ProviderError::invalid_request(
                &self.0.provider,
                format!("cannot encode the request: {e}"),
            )
        })
    }

    /// POSTs JSON bytes made by [`encode`](Self::encode).
    pub async fn post(
        &self,
        path: &str,
        json: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Result<Response, ProviderError> {
        self.send(reqwest::Method::POST, path, Some(json), headers)
            .await
    }

    /// GETs `path` and parses the JSON answer.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, ProviderError> {
        self.send(reqwest::Method::GET, path, None, &[])
            .await?
            .json()
            .await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        json: Option<Vec<u8>>,
        extra_headers: &[(&str, &str)],
    ) -> Result<Response, ProviderError> {
        let (status, retry_after, body) = match &self.0.transport {
            Transport::Plain(client) => {
                let request = h1::Request {
                    method: method.as_str(),
                    base_path: &self.0.base_path,
                    path,
                    headers: &self.0.headers,
                    extra_headers,
                    json: json.as_deref(),
                };
                let response = client.send(&request).await.map_err(|e| self.h1_error(e))?;
                (
                    response.status,
                    response.retry_after,
                    Body::Plain(response.body),
                )
            }
            Transport::Tls(client) => {
                let mut url = self.0.base_url.clone();
                url.set_path(&self.path(path));
                let mut request = client.request(method, url).headers(self.0.headers.clone());
                for (name, value) in extra_headers {
                    request = request.header(*name, *value);
                }
                if let Some(json) = json {
                    request = request
                        .header(header::CONTENT_TYPE, "application/json")
                        .body(json);
                }
                // Boxed: reqwest's future is large, and every plain-HTTP
                // exchange would otherwise carry its room.
                let response = Box::pin(request.send())
                    .await
                    .map_err(|e| self.reqwest_error(e))?;
                let retry_after = retry_after(response.headers());
                (response.status(), retry_after, Body::Tls(response))
            }
        };
        let response = Response {
            upstream: self.clone(),
            body,
        };
        if status.is_success() {
            return Ok(response);
        }
        let body = error_from_body(&response.error_body().await);
        Err(ProviderError::Upstream {
            provider: self.0.provider.clone(),
            kind: UpstreamErrorKind::from_status(status.as_u16()),
            status: Some(status.as_u16()),
            message: self.redact(body.message),
            code: body.code,
            param: body.param,
            retry_after,
        })
    }

    fn timeout(&self) -> ProviderError {
        ProviderError::Timeout {
            provider: self.0.provider.clone(),
            after: self.0.timeouts.read,
        }
    }

    fn connection_error(&self, message: String) -> ProviderError {
        ProviderError::Connection {
            provider: self.0.provider.clone(),
            message: self.redact(message),
        }
    }

    /// Maps a failure of the plain-HTTP client.
    fn h1_error(&self, e: h1::Error) -> ProviderError {
        match e {
            h1::Error::Timeout(_) => self.timeout(),
            h1::Error::Protocol(message) => {
                ProviderError::protocol(&self.0.provider, self.redact(message))
            }
            other => self.connection_error(other.to_string()),
        }
    }

    /// Maps a reqwest failure to a timeout or a connection error, without the key.
    fn reqwest_error(&self, e: reqwest::Error) -> ProviderError {
        if e.is_timeout() {
            return self.timeout();
        }
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        self.connection_error(message)
    }

    /// Upstreams sometimes echo what they were sent; the key must never travel on.
    fn redact(&self, message: String) -> String {
        match self.0.auth.secret() {
            Some(key) if !key.expose().is_empty() && message.contains(key.expose()) => {
                message.replace(key.expose(), "***")
            }
            _ => message,
        }
    }
}

/// A 2xx answer whose body is still to be read.
#[derive(Debug)]
pub struct Response {
    upstream: Upstream,
    body: Body,
}

#[derive(Debug)]
enum Body {
    Plain(h1::Body),
    Tls(reqwest::Response),
}

/// Most of an error answer's body read. Its message is a few hundred bytes;
/// an upstream must not make the proxy hold an endless one.
const MAX_ERROR_BODY: usize = 64 * 1024;

impl Response {
    /// The start of an error answer's body: at most [`MAX_ERROR_BODY`] bytes,
    /// read within one read timeout in all. What arrived is kept when the
    /// body breaks off or stalls: the status alone still makes the error.
    async fn error_body(self) -> Bytes {
        let timeout = self.upstream.0.timeouts.read;
        // Never marked ended: a body left unread closes its connection.
        let chunks = self.into_stream(&EndMarker::default());
        let mut kept = BytesMut::new();
        let _ = tokio::time::timeout(timeout, read_prefix(chunks, &mut kept, MAX_ERROR_BODY)).await;
        kept.freeze()
    }

    /// The whole body.
    pub async fn bytes(self) -> Result<Bytes, ProviderError> {
        let upstream = self.upstream;
        match self.body {
            Body::Plain(body) => body.bytes().await.map_err(|e| upstream.h1_error(e)),
            // Boxed for the same reason as `send`'s reqwest future.
            Body::Tls(response) => Box::pin(response.bytes())
                .await
                .map_err(|e| upstream.reqwest_error(e)),
        }
    }

    /// The whole body parsed as JSON; an answer that does not parse is a protocol error.
    pub async fn json<T: serde::de::DeserializeOwned>(self) -> Result<T, ProviderError> {
        let provider = self.upstream.0.provider.clone();
        let body = self.bytes().await?;
        crate::decode::from_json_bytes(&body)
            .map_err(|e| ProviderError::protocol(&provider, format!("bad JSON answer: {e}")))
    }

    /// The body as it arrives. `ended` is set by the adapter once it has read
    /// its protocol's end marker: dropped after that, the connection may still
    /// be reused; dropped before, it is closed, which cancels the upstream.
    fn into_stream(self, ended: &EndMarker) -> BoxStream<'static, Result<Bytes, ProviderError>> {
        let upstream = self.upstream;
        match self.body {
            Body::Plain(mut body) => {
                body.end_with(ended.0.clone());
                PlainBody {
                    body: Some(body),
                    upstream,
                }
                .boxed()
            }
            Body::Tls(response) => response
                .bytes_stream()
                .map(move |r| r.map_err(|e| upstream.reqwest_error(e)))
                .boxed(),
        }
    }

    /// The body as SSE events (comments and keep-alives dropped by the decoder).
    ///
    /// Unboxed: the adapter's converter wraps it, and the whole chain is
    /// boxed once, as the provider's chunk stream, so each event reaches
    /// the converter without a call through a pointer.
    pub fn sse_events(
        self,
        ended: &EndMarker,
    ) -> impl Stream<Item = Result<SseEvent, ProviderError>> + Send + Unpin + 'static {
        let provider = self.upstream.0.provider.clone();
        crate::sse::decode(self.into_stream(ended), move |e| {
            ProviderError::protocol(&provider, e.to_string())
        })
    }

    /// The body as NDJSON lines, each one complete however the bytes were
    /// split; unboxed like [`Self::sse_events`].
    pub fn ndjson_lines(
        self,
        ended: &EndMarker,
    ) -> impl Stream<Item = Result<Bytes, ProviderError>> + Send + Unpin + 'static {
        let provider = self.upstream.0.provider.clone();
        ndjson_lines(provider, self.into_stream(ended))
    }
}

/// Reads `chunks` into `kept` until it holds `limit` bytes, or they end or fail.
async fn read_prefix<S>(mut chunks: S, kept: &mut BytesMut, limit: usize)
where
    S: Stream<Item = Result<Bytes, ProviderError>> + Unpin,
{
    while let Some(Ok(chunk)) = chunks.next().await {
        let room = limit.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if kept.len() >= limit {
            return;
        }
    }
}

/// Set by an adapter when it has read its protocol's end marker (`[DONE]`,
/// `message_stop`, `done:true`): the upstream is finished, so the rest of
/// the body can be read in the background and the connection reused.
#[derive(Debug, Clone, Default)]
pub struct EndMarker(Arc<std::sync::atomic::AtomicBool>);

impl EndMarker {
    pub fn set(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The header an auth sends, built once and marked sensitive (hyper keeps it out of HPACK tables and logs).
fn auth_headers(auth: &Auth) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    let (name, value) = match auth {
        Auth::None => return Ok(headers),
        Auth::Bearer(key) => (header::AUTHORIZATION, format!("Bearer {}", key.expose())),
        Auth::Header(name, key) => (
            HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("bad auth header name {name:?}"))?,
            key.expose().to_owned(),
        ),
    };
    let mut value = HeaderValue::from_str(&value)
        .map_err(|_| "the API key holds characters a header cannot carry".to_owned())?;
    value.set_sensitive(true);
    headers.insert(name, value);
    Ok(headers)
}

/// An upstream NDJSON line longer than this is a protocol error, not a reason to grow without bound.
pub const MAX_NDJSON_LINE: usize = 16 * 1024 * 1024;

/// Splits a byte stream into complete, non-empty lines (without the `\n` or `\r\n`).
pub fn ndjson_lines<S>(provider: String, bytes: S) -> NdjsonLines<S>
where
    S: futures::Stream<Item = Result<Bytes, ProviderError>> + Unpin,
{
    NdjsonLines {
        bytes,
        buffer: BytesMut::new(),
        scanned: 0,
        done: false,
        provider,
    }
}

/// The stream [`ndjson_lines`] returns. Each byte is searched for a newline
/// once, however many reads a long line takes to arrive.
#[derive(Debug)]
pub struct NdjsonLines<S> {
    bytes: S,
    buffer: BytesMut,
    /// How much of `buffer` holds no newline.
    scanned: usize,
    done: bool,
    provider: String,
}

impl<S> futures::Stream for NdjsonLines<S>
where
    S: futures::Stream<Item = Result<Bytes, ProviderError>> + Unpin,
{
    type Item = Result<Bytes, ProviderError>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::{Poll, ready};
        let st = self.get_mut();
        loop {
            if let Some(found) = memchr::memchr(b'\n', &st.buffer[st.scanned..]) {
                let pos = st.scanned + found;
                st.scanned = 0;
                let mut line = st.buffer.split_to(pos + 1);
                line.truncate(pos);
                if line.last() == Some(&b'\r') {
                    line.truncate(pos - 1);
                }
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Poll::Ready(Some(Ok(line.freeze())));
            }
            st.scanned = st.buffer.len();
            if st.done {
                if st.buffer.iter().all(u8::is_ascii_whitespace) {
                    return Poll::Ready(None);
                }
                // A last line without its newline still counts.
                st.scanned = 0;
                let line = std::mem::take(&mut st.buffer).freeze();
                return Poll::Ready(Some(Ok(line)));
            }
            if st.buffer.len() > MAX_NDJSON_LINE {
                st.done = true;
                st.buffer.clear();
                st.scanned = 0;
                let message = format!("an NDJSON line exceeded {MAX_NDJSON_LINE} bytes");
                return Poll::Ready(Some(Err(ProviderError::protocol(&st.provider, message))));
            }
            match ready!(st.bytes.poll_next_unpin(cx)) {
                Some(Ok(chunk)) => st.buffer.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    st.done = true;
                    st.buffer.clear();
                    st.scanned = 0;
                    return Poll::Ready(Some(Err(e)));
                }
                None => st.done = true,
            }
        }
    }
}

/// A plain-HTTP body as a stream of its pieces; the first error ends it.
struct PlainBody {
    body: Option<h1::Body>,
    upstream: Upstream,
}

impl futures::Stream for PlainBody {
    type Item = Result<Bytes, ProviderError>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::{Poll, ready};
        let this = self.get_mut();
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(None);
        };
        let next = match ready!(body.poll_chunk(cx)) {
            Ok(Some(data)) => return Poll::Ready(Some(Ok(data))),
            Ok(None) => None,
            Err(e) => Some(Err(this.upstream.h1_error(e))),
        };
        // Dropped now, so a finished connection goes back to the pool at once.
        this.body = None;
        Poll::Ready(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;

    fn lines(parts: &[&'static str]) -> Vec<String> {
        let owned: Vec<Result<Bytes, ProviderError>> = parts
            .iter()
            .map(|p| Ok(Bytes::from_static(p.as_bytes())))
            .collect();
        let input = futures::stream::iter(owned);
        block_on(ndjson_lines("t".into(), input).collect::<Vec<_>>())
            .into_iter()
            .map(|r| String::from_utf8(r.unwrap().to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn ndjson_joins_lines_split_across_reads() {
        assert_eq!(
            lines(&["{\"a\":", "1}\n{\"b\"", ":2}\r\n\n", "{\"c\":3}"]),
            vec!["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]
        );
    }

    #[test]
    fn ndjson_skips_blank_lines() {
        assert_eq!(lines(&["\n\n{}\n  \n"]), vec!["{}"]);
    }

    fn timeouts() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(1),
            read: Duration::from_secs(1),
        }
    }

    fn upstream(base: &str, auth: Auth) -> Upstream {
        Upstream::new("t", base, auth, timeouts()).unwrap()
    }

    #[test]
    fn paths_join_the_base_path_once_and_schemes_pick_the_transport() {
        let up = upstream("http://127.0.0.1:9/openai/v1/", Auth::None);
        assert_eq!(up.path("/chat/completions"), "/openai/v1/chat/completions");
        assert!(matches!(up.0.transport, Transport::Plain(_)));
        let root = upstream("http://127.0.0.1:9", Auth::None);
        assert_eq!(root.path("/api/chat"), "/api/chat");
        let tls = upstream("https://openrouter.ai/api/v1", Auth::None);
        assert!(matches!(tls.0.transport, Transport::Tls(_)));
        let err = Upstream::new("t", "ftp://example.com", Auth::None, timeouts()).unwrap_err();
        assert!(err.to_string().contains("use http or https"), "{err}");
    }

    #[test]
    fn auth_headers_are_built_once_sensitive_and_swappable() {
        let up = upstream("http://127.0.0.1:9", Auth::Bearer(Secret::new("sk-1")));
        let bearer = up.0.headers.get(header::AUTHORIZATION).unwrap();
        assert_eq!(bearer, "Bearer sk-1");
        assert!(bearer.is_sensitive());
        let zen = up
            .with_auth(Auth::Header("x-api-key", Secret::new("sk-1")))
            .unwrap();
        assert!(zen.0.headers.get(header::AUTHORIZATION).is_none());
        assert_eq!(zen.0.headers.get("x-api-key").unwrap(), "sk-1");
    }

    #[test]
    fn bad_extra_headers_and_base_urls_fail_at_start() {
        let up = upstream("http://127.0.0.1:9", Auth::None);
        let ok = up
            .with_headers(&[("X-Title".into(), "Lakehouse".into())])
            .unwrap();
        assert_eq!(ok.0.headers.get("x-title").unwrap(), "Lakehouse");
        let err = up
            .with_headers(&[("bad name".into(), "v".into())])
            .unwrap_err();
        assert!(err.to_string().contains("bad header name"), "{err}");
        for framing in ["Host", "content-length", "Transfer-Encoding", "connection"] {
            let err = up
                .with_headers(&[(framing.into(), "x".into())])
                .unwrap_err();
            assert!(
                err.to_string().contains("set by the client itself"),
                "{err}"
            );
        }
        let err = Upstream::new("t", "not a url", Auth::None, timeouts()).unwrap_err();
        assert!(err.to_string().contains("bad base URL"), "{err}");
    }

    #[tokio::test]
    async fn an_error_body_is_read_up_to_its_cap_and_kept_when_it_breaks_off() {
        let piece = || Ok(Bytes::from(vec![b'x'; 1000]));
        let endless_enough = futures::stream::iter((0..1000).map(|_| piece()));
        let mut kept = BytesMut::new();
        read_prefix(endless_enough, &mut kept, MAX_ERROR_BODY).await;
        assert_eq!(kept.len(), MAX_ERROR_BODY);

        let broken = futures::stream::iter(vec![
            piece(),
            Err(ProviderError::protocol("t", "cut")),
            piece(),
        ]);
        let mut kept = BytesMut::new();
        read_prefix(broken, &mut kept, MAX_ERROR_BODY).await;
        assert_eq!(kept.len(), 1000, "what came before the break is kept");
    }

    #[test]
    fn secret_debug_hides_the_value() {
        assert_eq!(format!("{:?}", Secret::new("sk-123")), "Secret(***)");
    }
}
