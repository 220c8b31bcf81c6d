//! A small HTTP/1.1 client for plain `http://` upstreams (local Ollama, model
//! servers on the LAN), driven by the request's own task.
//!
//! Why not reqwest here: hyper's client runs every connection in a task of its
//! own and hands the answer over through channels, one task switch per body
//! frame, so a stream's events reached the client one write each however they
//! arrived. In front of a local model that hop was most of the proxy's own cost
//! (bench/results). Here the request's task writes the request and reads the
//! answer itself, and every read takes whatever the socket holds: events the
//! upstream sent together are passed on together, each as soon as it is read.
//!
//! What it does: keep-alive connections in a bounded pool (idle ones dropped
//! after [`IDLE_TIMEOUT`]), `Content-Length`, `chunked` and read-to-close
//! bodies, a connect timeout and a timeout on every write and read. An idle
//! connection the upstream closed (or sent anything on) is dropped before
//! use, as the runtime's readiness shows, without a syscall. A request whose
//! write fails on a pooled connection never reached the upstream and is sent
//! once more on a new connection; one written whole and then met by a close
//! with no answer may have been processed, so only a GET is sent again (as
//! Go's transport and nginx's `proxy_next_upstream` do): a chat must not run,
//! and be billed, twice. Dropping a body before its end closes the
//! connection, which cancels the upstream's work.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// Idle connections kept per upstream.
const MAX_IDLE: usize = 128;
/// An idle connection older than this is closed rather than reused.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Longest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Most headers accepted in a response head.
const MAX_HEADERS: usize = 100;
/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4096;
/// How much room each socket read asks for.
const READ_SIZE: usize = 16 * 1024;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot connect to {authority}: {source}")]
    Connect {
        authority: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the upstream closed the connection before the answer ended")]
    Closed,
    #[error("bad HTTP answer: {0}")]
    Protocol(String),
}

/// One plain-HTTP upstream host: where to connect, what `Host` to send, and
/// the idle connections to it (shared by clones).
#[derive(Debug, Clone)]
pub(crate) struct Client {
    authority: String,
    host: HeaderValue,
    connect_timeout: Duration,
    read_timeout: Duration,
    pool: Arc<Pool>,
}

#[derive(Debug, Default)]
struct Pool {
    idle: Mutex<Vec<(Conn, Instant)>>,
}

impl Pool {
    fn take(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some((conn, since)) = idle.pop() {
            if since.elapsed() < IDLE_TIMEOUT && !conn.closed_while_idle() {
                return Some(conn);
            }
        }
        None
    }

    fn put(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() >= MAX_IDLE {
            // The oldest goes: it is the likeliest to have been closed by the upstream.
            idle.remove(0);
        }
        idle.push((conn, Instant::now()));
    }
}

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet consumed.
    buffer: BytesMut,
}

impl Conn {
    /// Whether something arrived on this idle connection: the upstream's
    /// close (an idle timeout), or bytes nobody asked for (a 408). Read off
    /// the readiness the runtime already holds, so a live connection costs
    /// no syscall: the last answer's short read cleared it (see
    /// [`poll_read_more`]), and only a new event sets it again. Readiness can
    /// outlive an answer (a last read that filled its room), so when it is
    /// set one read decides: only "would block" means the connection is fine.
    fn closed_while_idle(&self) -> bool {
        if futures::FutureExt::now_or_never(self.stream.readable()).is_none() {
            return false;
        }
        let mut byte = [0u8; 1];
        !matches!(self.stream.try_read(&mut byte),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

/// One request: everything but the `Host`, `Content-Length` and framing headers.
pub(crate) struct Request<'a> {
    pub method: &'a str,
    /// The request target is `base_path` then `path` (with its query), both
    /// already valid in a request line: written one after the other, not
    /// joined into a new string for every request.
    pub base_path: &'a str,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    pub extra_headers: &'a [(&'a str, &'a str)],
    /// A JSON body, sent with its `Content-Type`.
    pub json: Option<&'a [u8]>,
}

/// A response whose head has been read.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: StatusCode,
    /// What `Retry-After` (or `retry-after-ms`) asked for.
    pub retry_after: Option<Duration>,
    pub body: Body,
}

impl Client {
    /// `host` as it goes in the `Host` header, `port` the one to connect to.
    pub(crate) fn new(
        host: &str,
        port: u16,
        default_port: bool,
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> Result<Self, String> {
        let authority = format!("{host}:{port}");
        let host_header = if default_port { host } else { &authority };
        let host = HeaderValue::from_str(host_header)
            .map_err(|_| format!("the host {host_header:?} cannot go in a Host header"))?;
        Ok(Self {
            authority,
            host,
            connect_timeout,
            read_timeout,
            pool: Arc::default(),
        })
    }

    /// Sends `request` and reads the answer's head; the body is read from the [`Body`].
    pub(crate) async fn send(&self, request: &Request<'_>) -> Result<Response, Error> {
        let wire = self.encode(request);
        if let Some(conn) = self.pool.take() {
            match self.exchange(conn, &wire).await {
                Ok(response) => return Ok(response),
                // The upstream had closed this idle connection: it never saw the request.
                Err(Attempt::NotSent) => {}
                Err(Attempt::Unanswered) if request.method == "GET" => {}
                Err(Attempt::Unanswered) => return Err(Error::Closed),
                Err(Attempt::Failed(e)) => return Err(e),
            }
        }
        let conn = self.connect().await?;
        match self.exchange(conn, &wire).await {
            Ok(response) => Ok(response),
            Err(Attempt::NotSent | Attempt::Unanswered) => Err(Error::Closed),
            Err(Attempt::Failed(e)) => Err(e),
        }
    }

    fn encode(&self, request: &Request<'_>) -> Vec<u8> {
        let body = request.json.unwrap_or_default();
        let mut wire = Vec::with_capacity(256 + body.len());
        wire.extend_from_slice(request.method.as_bytes());
        wire.push(b' ');
        wire.extend_from_slice(request.base_path.as_bytes());
        wire.extend_from_slice(request.path.as_bytes());
        wire.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        wire.extend_from_slice(self.host.as_bytes());
        wire.extend_from_slice(b"\r\n");
        let mut header = |name: &[u8], value: &[u8]| {
            wire.extend_from_slice(name);
            wire.extend_from_slice(b": ");
            wire.extend_from_slice(value);
            wire.extend_from_slice(b"\r\n");
        };
        for (name, value) in request.headers {
            header(name.as_str().as_bytes(), value.as_bytes());
        }
        for (name, value) in request.extra_headers {
            header(name.as_bytes(), value.as_bytes());
        }
        if request.json.is_some() {
            header(b"content-type", b"application/json");
            wire.extend_from_slice(b"content-length: ");
            crate::encode::write_u64(&mut wire, body.len() as u64);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"\r\n");
        wire.extend_from_slice(body);
        wire
    }

    async fn connect(&self) -> Result<Conn, Error> {
        let connected = tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect(self.authority.as_str()),
        )
        .await
        .map_err(|_| Error::Timeout(self.connect_timeout))?;
        let stream = connected.map_err(|source| Error::Connect {
            authority: self.authority.clone(),
            source,
        })?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buffer: BytesMut::with_capacity(READ_SIZE),
        })
    }

    async fn exchange(&self, mut conn: Conn, wire: &[u8]) -> Result<Response, Attempt> {
        match tokio::time::timeout(self.read_timeout, conn.stream.write_all(wire)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if is_reset(&e) => return Err(Attempt::NotSent),
            Ok(Err(e)) => return Err(Attempt::Failed(e.into())),
            Err(_) => return Err(Attempt::Failed(Error::Timeout(self.read_timeout))),
        }
        // One deadline for the whole head: an upstream that drips it a byte
        // at a time must not hold the request for a read timeout per byte.
        let deadline = tokio::time::Instant::now() + self.read_timeout;
        let mut answered = false;
        let head = loop {
            match parse_head(&conn.buffer).map_err(Attempt::Failed)? {
                Some(head) => {
                    conn.buffer.advance(head.length);
                    answered = true;
                    // Interim answers (100 Continue) are skipped.
                    if head.status.is_informational() {
                        continue;
                    }
                    break head;
                }
                None if conn.buffer.len() > MAX_HEAD => {
                    return Err(Attempt::Failed(Error::Protocol(format!(
                        "the response head is longer than {MAX_HEAD} bytes"
                    ))));
                }
                None => {}
            }
            let nothing_yet = !answered && conn.buffer.is_empty();
            match read_more(&mut conn, deadline, self.read_timeout).await {
                Ok(0) if nothing_yet => return Err(Attempt::Unanswered),
                Ok(0) => return Err(Attempt::Failed(Error::Closed)),
                Ok(_) => {}
                Err(Error::Io(e)) if nothing_yet && is_reset(&e) => {
                    return Err(Attempt::Unanswered);
                }
                Err(e) => return Err(Attempt::Failed(e)),
            }
        };
        Ok(Response {
            status: head.status,
            retry_after: head.retry_after,
            body: Body {
                conn: Some(conn),
                framing: head.framing,
                reusable: head.keep_alive,
                pool: Arc::clone(&self.pool),
                read_timeout: self.read_timeout,
                idle: None,
                ended: None,
            },
        })
    }
}

/// How one attempt on a connection failed.
enum Attempt {
    /// Writing the request failed on a closed connection: the upstream never saw it.
    NotSent,
    /// The request was written, then the connection closed before any of the
    /// answer arrived: the upstream may or may not have processed it.
    Unanswered,
    Failed(Error),
}

fn is_reset(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    matches!(e.kind(), ConnectionReset | BrokenPipe | ConnectionAborted)
}

/// Reads what the socket has into the buffer, as a poll (see [`Body::poll_chunk`]).
///
/// Through tokio's `AsyncRead` rather than `poll_read_ready` + `try_read`: a
/// read shorter than the room offered means the socket is drained, and
/// `AsyncRead` then forgets the readiness. Otherwise the stale readiness left
/// by the last answer made the first read of every exchange a `recvfrom`
/// that failed with `EAGAIN`: one wasted syscall per request.
fn poll_read_more(conn: &mut Conn, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
    conn.buffer.reserve(READ_SIZE);
    tokio_util::io::poll_read_buf(Pin::new(&mut conn.stream), cx, &mut conn.buffer)
}

/// Reads more of a response head, failing at `deadline` (the read timeout,
/// `timeout`, after the request was written).
async fn read_more(
    conn: &mut Conn,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> Result<usize, Error> {
    let read = std::future::poll_fn(|cx| poll_read_more(conn, cx));
    match tokio::time::timeout_at(deadline, read).await {
        Ok(read) => Ok(read?),
        Err(_) => Err(Error::Timeout(timeout)),
    }
}

/// What the client needs of a response head. The head is not kept as a
/// `HeaderMap`: building one cost an allocation per header and a name lookup
/// each, for three headers ever read.
struct Head {
    status: StatusCode,
    framing: Framing,
    keep_alive: bool,
    retry_after: Option<Duration>,
    /// Bytes the head took.
    length: usize,
}

/// A complete head at the start of `buffer`, or `None` when more bytes are needed.
fn parse_head(buffer: &[u8]) -> Result<Option<Head>, Error> {
    if buffer.is_empty() {
        return Ok(None);
    }
    // Uninitialised slots: initialising all of them (3.2 KiB of stack) cost
    // more cache misses than parsing the head.
    let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let parser = httparse::ParserConfig::default();
    let length = match parser.parse_response_with_uninit_headers(&mut parsed, buffer, &mut slots) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            return Err(Error::Protocol(format!(
                "cannot parse the response head: {e}"
            )));
        }
    };
    let code = parsed.code.unwrap_or_default();
    let status = StatusCode::from_u16(code)
        .map_err(|_| Error::Protocol(format!("bad status code {code}")))?;
    let mut close = parsed.version == Some(0);
    let mut framing = FramingHeaders::default();
    let (mut retry_after_ms, mut retry_after) = (None, None);
    for header in parsed.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("transfer-encoding") {
            framing.last_coding = Some(header.value);
        } else if name.eq_ignore_ascii_case("content-length") {
            framing.length(header.value);
        } else if name.eq_ignore_ascii_case("connection") {
            let has = |token: &str| {
                header
                    .value
                    .split(|b| *b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
            };
            if has("close") {
                close = true;
            } else if has("keep-alive") {
                close = false;
            }
        } else if name.eq_ignore_ascii_case("retry-after-ms") {
            retry_after_ms = retry_after_ms.or(Some(header.value));
        } else if name.eq_ignore_ascii_case("retry-after") {
            retry_after = retry_after.or(Some(header.value));
        }
    }
    Ok(Some(Head {
        framing: framing.framing(status)?,
        status,
        keep_alive: !close,
        retry_after: crate::error::retry_after_from(retry_after_ms, retry_after),
        length,
    }))
}

/// How the body's end is known (RFC 9112 §6.3).
#[derive(Debug)]
enum Framing {
    Length(u64),
    Chunked(Chunked),
    /// Until the upstream closes; the connection is not reused.
    UntilClose,
    Done,
}

/// The headers that frame a body, as the head is read.
#[derive(Default)]
struct FramingHeaders<'h> {
    /// The last `Transfer-Encoding` value: its last coding decides.
    last_coding: Option<&'h [u8]>,
    /// The `Content-Length` all its headers agree on.
    length: Option<u64>,
    /// A bad or conflicting `Content-Length`: an error unless a
    /// `Transfer-Encoding` makes the length irrelevant.
    bad_length: Option<&'static str>,
}

impl<'h> FramingHeaders<'h> {
    fn length(&mut self, value: &[u8]) {
        let parsed = std::str::from_utf8(value)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        match (parsed, self.length) {
            (None, _) => self.bad_length = self.bad_length.or(Some("bad Content-Length")),
            (Some(n), Some(seen)) if n != seen => {
                self.bad_length = self
                    .bad_length
                    .or(Some("conflicting Content-Length headers"));
            }
            (Some(n), _) => self.length = Some(n),
        }
    }

    fn framing(self, status: StatusCode) -> Result<Framing, Error> {
        // No content whatever the headers say (RFC 9112 §6.3); interim (1xx)
        // heads are skipped, so their lengths are never checked.
        if status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return Ok(Framing::Done);
        }
        if let Some(codings) = self.last_coding {
            let chunked = codings
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            return Ok(if chunked {
                Framing::Chunked(Chunked::Size)
            } else {
                Framing::UntilClose
            });
        }
        if let Some(bad) = self.bad_length {
            return Err(Error::Protocol(bad.into()));
        }
        Ok(match self.length {
            None => Framing::UntilClose,
            Some(0) => Framing::Done,
            Some(n) => Framing::Length(n),
        })
    }
}

/// Where a chunked body's decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunked {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last (zero) chunk: trailer lines up to an empty one.
    Trailers,
}

/// What one decoding step found in the buffer.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Data(Bytes),
    NeedMore,
    End,
}

/// The next line (without its line end) at the start of `buffer`, consumed.
fn take_line(buffer: &mut BytesMut) -> Result<Option<BytesMut>, Error> {
    let Some(end) = memchr::memchr(b'\n', buffer) else {
        if buffer.len() > MAX_LINE {
            return Err(Error::Protocol("a chunk line is too long".into()));
        }
        return Ok(None);
    };
    let mut line = buffer.split_to(end + 1);
    line.truncate(end);
    if line.last() == Some(&b'\r') {
        line.truncate(end - 1);
    }
    Ok(Some(line))
}

impl Chunked {
    /// Decodes what `buffer` holds, up to the first piece of data or the end.
    fn step(&mut self, buffer: &mut BytesMut) -> Result<Step, Error> {
        loop {
            match *self {
                Chunked::Size => {
                    let Some(line) = take_line(buffer)? else {
                        return Ok(Step::NeedMore);
                    };
                    let digits = line[..].split(|b| *b == b';').next().unwrap_or_default();
                    let digits = std::str::from_utf8(digits).unwrap_or_default().trim();
                    let size = u64::from_str_radix(digits, 16).map_err(|_| {
                        Error::Protocol(format!(
                            "bad chunk size {:?}",
                            String::from_utf8_lossy(&line)
                        ))
                    })?;
                    *self = if size == 0 {
                        Chunked::Trailers
                    } else {
                        Chunked::Data(size)
                    };
                }
                Chunked::Data(left) => {
                    if buffer.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    let n = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(buffer.len());
                    let data = buffer.split_to(n).freeze();
                    let left = left - n as u64;
                    *self = if left == 0 {
                        Chunked::DataEnd
                    } else {
                        Chunked::Data(left)
                    };
                    return Ok(Step::Data(data));
                }
                Chunked::DataEnd => {
                    let Some(line) = take_line(buffer)? else {
                        return Ok(Step::NeedMore);
                    };
                    if !line.is_empty() {
                        return Err(Error::Protocol("a chunk is longer than its size".into()));
                    }
                    *self = Chunked::Size;
                }
                Chunked::Trailers => {
                    let Some(line) = take_line(buffer)? else {
                        return Ok(Step::NeedMore);
                    };
                    if line.is_empty() {
                        return Ok(Step::End);
                    }
                }
            }
        }
    }
}

/// A response body, read as it arrives. At its end the connection goes back
/// to the pool when it can be reused; dropped before, it is closed, unless
/// its reader had seen the protocol's end marker (see [`Body::end_with`]).
#[derive(Debug)]
pub(crate) struct Body {
    conn: Option<Conn>,
    framing: Framing,
    reusable: bool,
    pool: Arc<Pool>,
    read_timeout: Duration,
    /// The read timer, armed only while a read waits on the socket and kept
    /// between reads (reset, not rebuilt); `None` until the first wait.
    idle: Option<Idle>,
    /// Set by the reader once the upstream's answer is complete.
    ended: Option<Arc<AtomicBool>>,
}

#[derive(Debug)]
struct Idle {
    sleep: Pin<Box<Sleep>>,
    armed: bool,
}

impl Body {
    /// The next piece of the body, `None` at its end. Whatever is already
    /// buffered is returned without touching the socket.
    pub(crate) async fn chunk(&mut self) -> Result<Option<Bytes>, Error> {
        std::future::poll_fn(|cx| self.poll_chunk(cx)).await
    }

    /// [`chunk`](Self::chunk) as a poll, for streams: no future is built per
    /// piece, and a read that waits longer than the read timeout fails.
    pub(crate) fn poll_chunk(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, Error>> {
        loop {
            let step = self.step().inspect_err(|_| self.conn = None)?;
            match step {
                Step::Data(data) => return Poll::Ready(Ok(Some(data))),
                Step::End => {
                    self.finish();
                    return Poll::Ready(Ok(None));
                }
                Step::NeedMore => {
                    let Some(conn) = self.conn.as_mut() else {
                        return Poll::Ready(Ok(None));
                    };
                    let read = match poll_read_more(conn, cx) {
                        Poll::Ready(read) => read,
                        Poll::Pending => return self.poll_idle(cx),
                    };
                    if let Some(idle) = &mut self.idle {
                        idle.armed = false;
                    }
                    let read = read
                        .map_err(Error::from)
                        .inspect_err(|_| self.conn = None)?;
                    if read == 0 {
                        self.conn = None;
                        return Poll::Ready(match self.framing {
                            Framing::UntilClose => Ok(None),
                            _ => Err(Error::Closed),
                        });
                    }
                }
            }
        }
    }

    /// A read is waiting: starts its timer if it is the wait's first poll,
    /// and fails the body once the timer fires.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, Error>> {
        // The clock is read only when a wait starts, not on every poll of it.
        let idle = match &mut self.idle {
            Some(idle) => {
                if !idle.armed {
                    let deadline = tokio::time::Instant::now() + self.read_timeout;
                    idle.sleep.as_mut().reset(deadline);
                    idle.armed = true;
                }
                idle
            }
            None => self.idle.insert(Idle {
                sleep: Box::pin(tokio::time::sleep(self.read_timeout)),
                armed: true,
            }),
        };
        if idle.sleep.as_mut().poll(cx).is_ready() {
            self.conn = None;
            return Poll::Ready(Err(Error::Timeout(self.read_timeout)));
        }
        Poll::Pending
    }

    /// Decodes what is buffered, up to the next piece of data or the end.
    fn step(&mut self) -> Result<Step, Error> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(Step::End);
        };
        let buffer = &mut conn.buffer;
        Ok(match &mut self.framing {
            Framing::Done => Step::End,
            Framing::Chunked(state) => return state.step(buffer),
            Framing::Length(_) | Framing::UntilClose if buffer.is_empty() => Step::NeedMore,
            Framing::UntilClose => Step::Data(buffer.split().freeze()),
            Framing::Length(left) => {
                let n = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(buffer.len());
                *left -= n as u64;
                if *left == 0 {
                    self.framing = Framing::Done;
                }
                Step::Data(buffer.split_to(n).freeze())
            }
        })
    }

    /// The whole body.
    pub(crate) async fn bytes(mut self) -> Result<Bytes, Error> {
        let Some(first) = self.chunk().await? else {
            return Ok(Bytes::new());
        };
        let Some(second) = self.chunk().await? else {
            return Ok(first);
        };
        let mut all = BytesMut::with_capacity(first.len() + second.len());
        all.extend_from_slice(&first);
        all.extend_from_slice(&second);
        while let Some(more) = self.chunk().await? {
            all.extend_from_slice(&more);
        }
        Ok(all.freeze())
    }

    /// `ended` is set by the reader once it has read the protocol's end marker
    /// (`[DONE]`, `done:true`): the upstream has finished, so a body dropped
    /// after that is read to its end, off the request's path, and reused.
    pub(crate) fn end_with(&mut self, ended: Arc<AtomicBool>) {
        self.ended = Some(ended);
    }

    /// The body ended: the connection is reused when the upstream allows it and
    /// sent nothing past the answer.
    fn finish(&mut self) {
        self.framing = Framing::Done;
        if let Some(conn) = self.conn.take()
            && self.reusable
            && conn.buffer.is_empty()
        {
            self.pool.put(conn);
        }
    }
}

/// Most of a finished answer's rest read to keep its connection.
const MAX_DRAIN: usize = 64 * 1024;
/// Longest wait for a finished answer's rest.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

impl Drop for Body {
    fn drop(&mut self) {
        let finished_reading = self
            .ended
            .as_ref()
            .is_some_and(|ended| ended.load(Ordering::Relaxed));
        if self.conn.is_none() || !self.reusable || !finished_reading {
            // Closing the connection is what cancels an answer still under way.
            return;
        }
        let mut rest = Body {
            conn: self.conn.take(),
            framing: std::mem::replace(&mut self.framing, Framing::Done),
            reusable: true,
            pool: Arc::clone(&self.pool),
            read_timeout: DRAIN_TIMEOUT,
            idle: None,
            ended: None,
        };
        // Usually the rest (the last chunk) came with the end marker.
        let mut drained = 0;
        loop {
            match rest.step() {
                Ok(Step::Data(data)) if drained + data.len() <= MAX_DRAIN => drained += data.len(),
                Ok(Step::End) => return rest.finish(),
                Ok(Step::NeedMore) => break,
                Ok(Step::Data(_)) | Err(_) => return,
            }
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            while let Ok(Some(data)) = rest.chunk().await {
                drained += data.len();
                if drained > MAX_DRAIN {
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    fn decode_all(parts: &[&[u8]]) -> Result<(Vec<u8>, bool), Error> {
        let mut state = Chunked::Size;
        let mut buffer = BytesMut::new();
        let mut out = Vec::new();
        for part in parts {
            buffer.extend_from_slice(part);
            loop {
                match state.step(&mut buffer)? {
                    Step::Data(d) => out.extend_from_slice(&d),
                    Step::NeedMore => break,
                    Step::End => return Ok((out, true)),
                }
            }
        }
        Ok((out, false))
    }

    fn head(lines: &str) -> Head {
        let text = format!("{lines}\r\n\r\n");
        let head = parse_head(text.as_bytes()).unwrap().unwrap();
        assert_eq!(head.length, text.len());
        head
    }

    fn head_error(lines: &str) -> String {
        match parse_head(format!("{lines}\r\n\r\n").as_bytes()) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{lines:?} parsed"),
        }
    }

    #[test]
    fn a_body_is_framed_by_the_last_coding_then_by_its_length() {
        let framing = |lines: &str| head(lines).framing;
        assert!(matches!(
            framing("HTTP/1.1 200 OK\r\ncontent-length: 12"),
            Framing::Length(12)
        ));
        assert!(matches!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nCONTENT-LENGTH: 3"),
            Framing::Length(3)
        ));
        assert!(matches!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 0"),
            Framing::Done
        ));
        assert!(matches!(framing("HTTP/1.1 200 OK"), Framing::UntilClose));
        assert!(matches!(
            framing("HTTP/1.1 204 No Content\r\nContent-Length: 5"),
            Framing::Done
        ));
        assert!(matches!(
            framing("HTTP/1.1 100 Continue\r\nContent-Length: x"),
            Framing::Done
        ));
        // A coding makes any length irrelevant, even a broken one.
        assert!(matches!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: x\r\nTransfer-Encoding: gzip, Chunked"),
            Framing::Chunked(Chunked::Size)
        ));
        assert!(matches!(
            framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip"),
            Framing::UntilClose
        ));
        assert!(
            head_error("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4")
                .contains("conflicting")
        );
        assert!(head_error("HTTP/1.1 200 OK\r\nContent-Length: -1").contains("bad Content-Length"));
    }

    #[test]
    fn a_head_says_whether_the_connection_stays_and_how_long_to_wait() {
        assert!(head("HTTP/1.1 200 OK").keep_alive);
        assert!(!head("HTTP/1.1 200 OK\r\nConnection: upgrade, Close").keep_alive);
        assert!(!head("HTTP/1.0 200 OK").keep_alive);
        assert!(head("HTTP/1.0 200 OK\r\nconnection: keep-alive").keep_alive);

        assert_eq!(head("HTTP/1.1 200 OK").retry_after, None);
        let limited = head("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7");
        assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(limited.retry_after, Some(Duration::from_secs(7)));
        let both = head("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nretry-after-ms: 1500");
        assert_eq!(both.retry_after, Some(Duration::from_millis(1500)));
    }

    const CHUNKED: &[u8] = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\n";

    #[test]
    fn chunked_bodies_decode_with_extensions_and_trailers() {
        let (data, ended) = decode_all(&[CHUNKED]).unwrap();
        assert_eq!(data, b"hello, world");
        assert!(ended);
    }

    #[test]
    fn bad_chunk_sizes_and_overlong_chunks_are_refused() {
        assert!(decode_all(&[b"zz\r\nhello\r\n"]).is_err());
        assert!(decode_all(&[b"2\r\nhello\r\n"]).is_err());
        assert!(decode_all(&[&[b'1'; MAX_LINE + 1]]).is_err());
    }

    proptest! {
        #[test]
        fn chunked_decoding_does_not_depend_on_how_reads_cut_the_bytes(
            cuts in proptest::collection::vec(0..CHUNKED.len(), 0..8)
        ) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let mut parts = Vec::new();
            let mut from = 0;
            for cut in cuts {
                parts.push(&CHUNKED[from..cut]);
                from = cut;
            }
            parts.push(&CHUNKED[from..]);
            let (data, ended) = decode_all(&parts).unwrap();
            prop_assert_eq!(data, b"hello, world".to_vec());
            prop_assert!(ended);
        }

        #[test]
        fn any_bytes_decode_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_all(&[&bytes]);
            let _ = parse_head(&bytes);
        }
    }

    /// A server that answers each request, on any connection, with the next
    /// canned answer (closing the connection after it when a `CLOSE` follows),
    /// and counts the connections it accepted.
    async fn canned_server(
        answers: Vec<&'static [u8]>,
    ) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        let answers = Arc::new(Mutex::new(std::collections::VecDeque::from(answers)));
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let answers = answers.clone();
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    let mut read = [0u8; 4096];
                    loop {
                        let n = socket.read(&mut read).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buffer.extend_from_slice(&read[..n]);
                        // Requests here carry no body: one head is one request.
                        while let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                            buffer.drain(..end + 4);
                            let (answer, close) = {
                                let mut answers = answers.lock().unwrap();
                                let answer = answers.pop_front();
                                // A CLOSE after an answer closes the connection behind it.
                                let close = answers.front() == Some(&&b"CLOSE"[..]);
                                if close {
                                    answers.pop_front();
                                }
                                (answer, close)
                            };
                            let Some(answer) = answer else { return };
                            socket.write_all(answer).await.unwrap();
                            if close {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (port, accepted)
    }

    fn client(port: u16) -> Client {
        client_with_read_timeout(port, Duration::from_secs(5))
    }

    fn get(path: &str) -> Request<'_> {
        static EMPTY: std::sync::OnceLock<HeaderMap> = std::sync::OnceLock::new();
        Request {
            method: "GET",
            base_path: "",
            path,
            headers: EMPTY.get_or_init(HeaderMap::new),
            extra_headers: &[],
            json: None,
        }
    }

    async fn body_of(client: &Client, path: &str) -> (StatusCode, Bytes) {
        let response = client.send(&get(path)).await.unwrap();
        (response.status, response.body.bytes().await.unwrap())
    }

    #[tokio::test]
    async fn connections_are_reused_after_whole_bodies() {
        let (port, accepted) = canned_server(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
        ])
        .await;
        let client = client(port);
        assert_eq!(body_of(&client, "/a").await, (StatusCode::OK, "ok".into()));
        assert_eq!(body_of(&client, "/b").await, (StatusCode::OK, "hi".into()));
        assert_eq!(
            body_of(&client, "/c").await,
            (StatusCode::NOT_FOUND, Bytes::new())
        );
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_pooled_connection_the_upstream_closed_is_replaced_once() {
        let (port, accepted) = canned_server(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na",
            b"CLOSE",
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nb",
        ])
        .await;
        let client = client(port);
        assert_eq!(body_of(&client, "/").await.1, "a");
        assert_eq!(body_of(&client, "/").await.1, "b");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    fn post<'a>(path: &'a str, json: &'a [u8]) -> Request<'a> {
        Request {
            method: "POST",
            json: Some(json),
            ..get(path)
        }
    }

    #[tokio::test]
    async fn a_post_written_whole_is_not_sent_again_when_the_connection_closes() {
        // The server answers the first request, then reads the POST and
        // closes without a word: it may have run it, so it is not run twice.
        let (port, accepted) =
            canned_server(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na"]).await;
        let client = client(port);
        assert_eq!(body_of(&client, "/").await.1, "a");
        let refused = client.send(&post("/chat", b"{}")).await.unwrap_err();
        assert!(matches!(refused, Error::Closed), "{refused}");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_idle_connection_the_upstream_closed_is_not_taken_from_the_pool() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut upstream_side, _) = listener.accept().await.unwrap();
        let conn = Conn {
            stream,
            buffer: BytesMut::new(),
        };
        assert!(!conn.closed_while_idle(), "a live idle connection");
        // Readiness left set after the last byte was read: one read finds
        // the connection fine.
        upstream_side.write_all(b"x").await.unwrap();
        conn.stream.readable().await.unwrap();
        assert_eq!(conn.stream.try_read(&mut [0u8; 8]).unwrap(), 1);
        assert!(!conn.closed_while_idle(), "readiness without news");
        drop(upstream_side);
        // Once the runtime has seen the close, the pool drops the connection.
        conn.stream.readable().await.unwrap();
        let pool = Pool::default();
        pool.put(conn);
        assert!(pool.take().is_none());
    }

    #[tokio::test]
    async fn a_request_the_upstream_does_not_read_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Connected (in the listener's backlog) and never read: a body larger
        // than the socket buffers cannot be written whole.
        let client = client_with_read_timeout(port, Duration::from_millis(100));
        let body = vec![b' '; 64 << 20];
        let failed = client.send(&post("/chat", &body)).await.unwrap_err();
        assert!(matches!(failed, Error::Timeout(_)), "{failed}");
        drop(listener);
    }

    #[tokio::test]
    async fn connection_close_and_unfinished_bodies_are_not_reused() {
        let (port, accepted) = canned_server(vec![
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\na",
            b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbb",
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nc",
        ])
        .await;
        let client = client(port);
        assert_eq!(body_of(&client, "/").await.1, "a");
        let mut response = client.send(&get("/")).await.unwrap();
        assert_eq!(response.body.chunk().await.unwrap().unwrap(), "bb");
        drop(response);
        assert_eq!(body_of(&client, "/").await.1, "c");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error_and_a_silent_upstream_times_out() {
        let (port, _) = canned_server(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
            b"CLOSE",
        ])
        .await;
        let client = client(port);
        let response = client.send(&get("/")).await.unwrap();
        assert!(matches!(response.body.bytes().await, Err(Error::Closed)));

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accepts and never answers.
        let _held = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await;
            drop(socket);
        });
        let slow = client_with_read_timeout(port, Duration::from_millis(50));
        assert!(matches!(slow.send(&get("/")).await, Err(Error::Timeout(_))));
    }

    /// A server that sends `head`, then each piece after its delay, then holds the connection.
    async fn paced_server(head: &'static [u8], pieces: Vec<(Duration, &'static [u8])>) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await.unwrap();
            socket.write_all(head).await.unwrap();
            for (delay, piece) in pieces {
                tokio::time::sleep(delay).await;
                socket.write_all(piece).await.unwrap();
            }
            std::future::pending::<()>().await;
        });
        port
    }

    fn client_with_read_timeout(port: u16, read_timeout: Duration) -> Client {
        Client::new(
            "127.0.0.1",
            port,
            false,
            Duration::from_secs(5),
            read_timeout,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_body_that_stalls_times_out_and_its_connection_is_dropped() {
        let port = paced_server(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\none\r\n",
            vec![],
        )
        .await;
        let client = client_with_read_timeout(port, Duration::from_millis(50));
        let mut response = client.send(&get("/")).await.unwrap();
        assert_eq!(response.body.chunk().await.unwrap().unwrap(), "one");
        assert!(matches!(
            response.body.chunk().await,
            Err(Error::Timeout(t)) if t == Duration::from_millis(50)
        ));
        assert!(
            response.body.conn.is_none(),
            "a timed-out connection is closed"
        );
        assert_eq!(response.body.chunk().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_slow_steady_body_is_not_cut_by_the_read_timeout() {
        // Eight pieces 30 ms apart: 240 ms in all, each wait under the 100 ms limit.
        let pieces = (0..8)
            .map(|_| (Duration::from_millis(30), &b"1\r\nx\r\n"[..]))
            .chain([(Duration::from_millis(30), &b"0\r\n\r\n"[..])])
            .collect();
        let port = paced_server(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            pieces,
        )
        .await;
        let client = client_with_read_timeout(port, Duration::from_millis(100));
        let response = client.send(&get("/")).await.unwrap();
        assert_eq!(response.body.bytes().await.unwrap(), "xxxxxxxx");
    }

    #[tokio::test]
    async fn a_head_dripped_slower_than_the_read_timeout_in_all_times_out() {
        // Each header line 30 ms after the last, every wait under the 100 ms
        // limit, but the head takes 270 ms in all.
        let pieces = (0..8)
            .map(|_| (Duration::from_millis(30), &b"x-pad: 1\r\n"[..]))
            .chain([(
                Duration::from_millis(30),
                &b"content-length: 2\r\n\r\nok"[..],
            )])
            .collect();
        let port = paced_server(b"HTTP/1.1 200 OK\r\n", pieces).await;
        let client = client_with_read_timeout(port, Duration::from_millis(100));
        assert!(matches!(
            client.send(&get("/")).await,
            Err(Error::Timeout(t)) if t == Duration::from_millis(100)
        ));
    }

    #[tokio::test]
    async fn events_sent_together_are_read_together() {
        let (port, _) = canned_server(vec![
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n",
        ])
        .await;
        let client = client(port);
        let mut response = client.send(&get("/")).await.unwrap();
        // Both chunks came in one read: the second is handed over from the buffer.
        let first = response.body.chunk().await.unwrap().unwrap();
        assert_eq!(first, "one");
        let conn = response.body.conn.as_ref().unwrap();
        assert!(
            !conn.buffer.is_empty(),
            "the second chunk is already buffered"
        );
        assert_eq!(response.body.chunk().await.unwrap().unwrap(), "two");
        assert_eq!(response.body.chunk().await.unwrap(), None);
    }

    #[test]
    fn requests_are_encoded_with_host_length_and_headers() {
        let client = client(8080);
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer k"));
        let wire = client.encode(&Request {
            method: "POST",
            base_path: "/v1",
            path: "/chat/completions",
            headers: &headers,
            extra_headers: &[("anthropic-version", "2023-06-01")],
            json: Some(b"{}"),
        });
        assert_eq!(
            String::from_utf8(wire).unwrap(),
            "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:8080\r\n\
             authorization: Bearer k\r\nanthropic-version: 2023-06-01\r\n\
             content-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
        );
    }
}
