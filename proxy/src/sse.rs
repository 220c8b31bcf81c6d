//! Server-sent events at the edge: chat streams and the fan-out stream.
//!
//! Each [`Event`] is encoded once, straight into the bytes that go on the
//! wire (`data: {json}\n\n`), and becomes a body frame as soon as it is
//! ready. Events that are ready together (a chat's upstream chunks that came
//! in one read) may share a frame: each still goes out the moment it exists,
//! but hyper's per-frame work (chunk-size line, write queue entries, one pass
//! of the body's poll chain) is paid once for them. A `: keep-alive` comment goes out only after `keep_alive` with
//! nothing sent, so idle intermediaries do not cut a slow stream.
//!
//! Our own body rather than axum's `Sse`: that one copies every event again
//! while scanning it for newlines and re-arms its keep-alive timer after
//! every event. On a streamed chat, both showed among the proxy's largest
//! userland costs. Compact JSON cannot hold a raw newline, and here the timer
//! is re-armed only when it fires.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use futures::stream::{Stream, StreamExt};
use hyper::body::Frame;
use lakehouse_providers::openai::ChatChunk;
use serde::Serialize;
use tokio::time::{Instant, Sleep};

use crate::error::ApiError;

/// One event, or several that were ready together, encoded for the wire.
#[derive(Debug, Clone)]
pub struct Event(Bytes);

impl Event {
    /// `value` as compact JSON in one `data:` line.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        let mut wire = Vec::with_capacity(256);
        wire.extend_from_slice(b"data: ");
        lakehouse_providers::encode::write_value(&mut wire, value)?;
        wire.extend_from_slice(b"\n\n");
        Ok(Self(wire.into()))
    }

    /// `text` as data, one `data:` line per line of it.
    pub fn data(text: &str) -> Self {
        let mut wire = Vec::with_capacity(text.len() + 8);
        write_data(&mut wire, text);
        Self(wire.into())
    }

    /// A failure after the stream started: the OpenAI error body as the last event.
    pub fn error(error: &ApiError) -> Self {
        Self::data(&error.body().to_string())
    }

    /// The events written one after the other into `wire`.
    pub fn from_wire(wire: Vec<u8>) -> Self {
        Self(wire.into())
    }

    /// The bytes as they go on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Appends the event of `text` (see [`Event::data`]) to `wire`.
pub fn write_data(wire: &mut Vec<u8>, text: &str) {
    for line in text.lines() {
        wire.extend_from_slice(b"data: ");
        wire.extend_from_slice(line.as_bytes());
        wire.push(b'\n');
    }
    if text.is_empty() {
        wire.extend_from_slice(b"data: \n");
    }
    wire.push(b'\n');
}

/// Encodes the chunks of one chat stream as events, each a `data:` line of
/// the chunk's JSON. The opening the chunks share (id, object, created,
/// model) is written once and copied into each event after that.
#[derive(Default)]
pub struct ChunkEncoder {
    /// The chunk `head` was written for (its id, created and model only).
    head_of: Option<ChatChunk>,
    head: Vec<u8>,
}

impl ChunkEncoder {
    /// Appends the event of `chunk` to `wire`; on an error `wire` is as it was.
    pub fn write(
        &mut self,
        chunk: &ChatChunk,
        wire: &mut Vec<u8>,
    ) -> Result<(), serde_json::Error> {
        if !self.head_of.as_ref().is_some_and(|h| h.same_head(chunk)) {
            self.head.clear();
            // Room for a usual id and model, so the head is written without regrowing.
            self.head.reserve(128);
            chunk.write_head(&mut self.head)?;
            self.head_of = Some(ChatChunk {
                id: chunk.id.clone(),
                created: chunk.created,
                model: chunk.model.clone(),
                ..ChatChunk::default()
            });
        }
        let start = wire.len();
        wire.reserve(self.head.len() + 192);
        wire.extend_from_slice(b"data: ");
        wire.extend_from_slice(&self.head);
        if let Err(e) = chunk.write_tail(wire) {
            wire.truncate(start);
            return Err(e);
        }
        wire.extend_from_slice(b"\n\n");
        Ok(())
    }
}

const KEEP_ALIVE_COMMENT: &[u8] = b": keep-alive\n\n";

/// A `text/event-stream` response of `events`, with keep-alive comments;
/// proxies in front are told not to buffer it.
pub fn response(
    events: impl Stream<Item = Event> + Send + Unpin + 'static,
    keep_alive: Duration,
) -> Response {
    let body = EventBody {
        events,
        keep_alive,
        timer: Box::pin(tokio::time::sleep(keep_alive)),
        last_sent: Instant::now(),
        ended: false,
    };
    let mut response = Response::new(Body::new(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Generic over its events rather than boxing them: a chat's chunks then
/// reach the body through one chain of direct calls.
struct EventBody<S> {
    events: S,
    keep_alive: Duration,
    /// Fires at the earliest moment a keep-alive may be due; moved only when it fires.
    timer: Pin<Box<Sleep>>,
    last_sent: Instant,
    ended: bool,
}

impl<S: Stream<Item = Event> + Unpin> hyper::body::Body for EventBody<S> {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        match this.events.poll_next_unpin(cx) {
            Poll::Ready(Some(event)) => {
                this.last_sent = Instant::now();
                return Poll::Ready(Some(Ok(Frame::data(event.0))));
            }
            Poll::Ready(None) => {
                this.ended = true;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        loop {
            if this.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            let due = this.last_sent + this.keep_alive;
            if now >= due {
                this.last_sent = now;
                this.timer.as_mut().reset(now + this.keep_alive);
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                    KEEP_ALIVE_COMMENT,
                )))));
            }
            // Events went out since the timer was set: wait for the rest of the interval.
            this.timer.as_mut().reset(due);
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc;

    #[test]
    fn events_encode_as_single_data_lines() {
        let json = Event::json(&serde_json::json!({"text": "two\nlines"})).unwrap();
        assert_eq!(json.as_bytes(), b"data: {\"text\":\"two\\nlines\"}\n\n");
        assert_eq!(Event::data("[DONE]").as_bytes(), b"data: [DONE]\n\n");
        assert_eq!(Event::data("a\nb").as_bytes(), b"data: a\ndata: b\n\n");
        assert_eq!(Event::data("").as_bytes(), b"data: \n\n");
        let error = Event::error(&ApiError::internal("boom"));
        assert!(error.as_bytes().starts_with(b"data: {\"error\":{"));
        assert!(error.as_bytes().ends_with(b"}}\n\n"));
    }

    #[test]
    fn chunk_events_are_data_lines_of_each_chunks_json() {
        let mut encoder = ChunkEncoder::default();
        let mut chunk = ChatChunk {
            id: "chatcmpl-1".into(),
            model: "m".into(),
            ..ChatChunk::default()
        };
        for (id, created) in [
            ("chatcmpl-1", 1),
            ("chatcmpl-1", 1),
            ("chatcmpl-1", 2),
            ("chatcmpl-2", 2),
        ] {
            chunk.id = id.into();
            chunk.created = created;
            let mut wire = b"data: [earlier]\n\n".to_vec();
            encoder.write(&chunk, &mut wire).unwrap();
            let json = serde_json::to_string(&chunk).unwrap();
            assert_eq!(
                wire,
                format!("data: [earlier]\n\ndata: {json}\n\n").as_bytes()
            );
        }
    }

    #[tokio::test]
    async fn events_pass_as_frames_and_idle_streams_get_keep_alives() {
        let (tx, rx) = mpsc::unbounded();
        let response = response(rx, Duration::from_millis(20));
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/event-stream"
        );
        let mut frames = response.into_body().into_data_stream();
        let before_first = std::time::Instant::now();
        tx.unbounded_send(Event::data("1")).unwrap();
        assert_eq!(&frames.next().await.unwrap().unwrap()[..], b"data: 1\n\n");
        // Nothing to send: the next frame is a comment, a whole interval after the event.
        assert_eq!(
            &frames.next().await.unwrap().unwrap()[..],
            KEEP_ALIVE_COMMENT
        );
        assert!(before_first.elapsed() >= Duration::from_millis(20));
        tx.unbounded_send(Event::data("2")).unwrap();
        assert_eq!(&frames.next().await.unwrap().unwrap()[..], b"data: 2\n\n");
        drop(tx);
        assert!(frames.next().await.is_none());
    }

    #[tokio::test]
    async fn a_busy_stream_sends_no_keep_alives() {
        let events = futures::stream::iter((0..1000).map(|i| Event::data(&i.to_string())));
        let body = response(events, Duration::from_secs(3600)).into_body();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert_eq!(text.matches("data: ").count(), 1000);
        assert!(!text.contains("keep-alive"));
    }
}
