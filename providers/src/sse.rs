//! Server-sent events decoding by the WHATWG `text/event-stream` rules, for
//! upstream streams and the CLI.
//!
//! Events are cut from one buffer as bytes arrive. Every whole event already
//! in the buffer is handed on without another read, and nothing waits for
//! more bytes than the event needs. Comments (OpenRouter's keep-alives) and
//! `id:`/`retry:` fields are dropped. An event larger than [`MAX_EVENT`] is an
//! error rather than a reason to grow without bound.
//!
//! Our own decoder rather than `eventsource-stream`: the profile of a
//! streamed chat showed that crate's line parser and its three strings per
//! event among the proxy's largest userland costs; this one allocates the
//! event's data once and scans each byte once.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};

/// An event (or a line still waiting for its end) larger than this is refused.
pub const MAX_EVENT: usize = 16 * 1024 * 1024;

/// One event: its `event:` name (empty when none was given) and its `data:`
/// lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("an SSE event exceeded {MAX_EVENT} bytes")]
    TooLarge,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Incremental decoder: [`push`](Self::push) bytes as they arrive, take
/// events with [`next_event`](Self::next_event) until it says `None`, and call
/// [`end`](Self::end) at the end of the body.
#[derive(Debug, Default)]
pub struct SseDecoder {
    buffer: BytesMut,
    /// Bytes at the head of `buffer` already searched for a line end.
    scanned: usize,
    /// The leading byte-order mark has been looked for.
    started: bool,
    /// No more bytes will come: a trailing `\r` ends its line.
    ended: bool,
    event: String,
    /// Each `data:` line's value followed by `\n`.
    data: String,
}

impl SseDecoder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Marks the end of the body. An event without its closing blank line is
    /// then discarded, as the standard says.
    pub fn end(&mut self) {
        self.ended = true;
    }

    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// The next whole event in the buffer; `None` when more bytes are needed
    /// (or, after [`end`](Self::end), when none is left).
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, SseError> {
        if !self.started {
            if !self.ended && self.buffer.len() < BOM.len() && BOM.starts_with(&self.buffer) {
                return Ok(None);
            }
            if self.buffer.starts_with(BOM) {
                self.buffer.advance(BOM.len());
            }
            self.started = true;
        }
        while let Some((line_len, end_len)) = self.find_line_end() {
            let dispatched = self.take_line(line_len);
            self.buffer.advance(line_len + end_len);
            self.scanned = 0;
            if let Some(event) = dispatched {
                return Ok(Some(event));
            }
            if self.data.len() > MAX_EVENT {
                return Err(self.too_large());
            }
        }
        if self.buffer.len() + self.data.len() > MAX_EVENT {
            return Err(self.too_large());
        }
        if self.ended {
            self.buffer.clear();
        }
        Ok(None)
    }

    fn too_large(&mut self) -> SseError {
        self.buffer.clear();
        self.data.clear();
        self.ended = true;
        SseError::TooLarge
    }

    /// The length of the first whole line and of its terminator (`\n`, `\r\n` or `\r`).
    fn find_line_end(&mut self) -> Option<(usize, usize)> {
        let unscanned = &self.buffer[self.scanned..];
        let Some(offset) = memchr::memchr2(b'\n', b'\r', unscanned) else {
            self.scanned = self.buffer.len();
            return None;
        };
        let at = self.scanned + offset;
        if self.buffer[at] == b'\n' {
            return Some((at, 1));
        }
        match self.buffer.get(at + 1) {
            Some(b'\n') => Some((at, 2)),
            Some(_) => Some((at, 1)),
            // A `\r` last in the buffer: a `\n` may still follow.
            None if self.ended => Some((at, 1)),
            None => {
                self.scanned = at;
                None
            }
        }
    }

    /// Applies one line (without its terminator); a blank line dispatches the event.
    fn take_line(&mut self, line_len: usize) -> Option<SseEvent> {
        let line = &self.buffer[..line_len];
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            if self.data.is_empty() {
                return None;
            }
            let mut data = std::mem::take(&mut self.data);
            data.pop();
            return Some(SseEvent { event, data });
        }
        if line[0] == b':' {
            return None;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match field {
            b"data" => {
                self.data.reserve(value.len() + 1);
                // Checking valid UTF-8 first is the fast path; only bad bytes need replacing.
                match std::str::from_utf8(value) {
                    Ok(text) => self.data.push_str(text),
                    Err(_) => self.data.push_str(&String::from_utf8_lossy(value)),
                }
                self.data.push('\n');
            }
            b"event" => self.event = String::from_utf8_lossy(value).into_owned(),
            // `id`, `retry` and unknown fields mean nothing to a chat stream.
            _ => {}
        }
        None
    }
}

/// Decodes a byte stream into events. A transport error ends the stream after
/// it is passed on; a decoding error becomes `decode_error(..)` and ends it too.
pub fn decode<S, E, F>(bytes: S, decode_error: F) -> Decode<S, F>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    F: Fn(SseError) -> E,
{
    Decode {
        bytes,
        decoder: SseDecoder::default(),
        decode_error,
        done: false,
    }
}

/// The stream [`decode`] returns. A plain `Stream` rather than `unfold`,
/// which would move the decoder and its buffer in and out of a new future
/// for every event.
#[derive(Debug)]
pub struct Decode<S, F> {
    bytes: S,
    decoder: SseDecoder,
    decode_error: F,
    done: bool,
}

impl<S, E, F> Stream for Decode<S, F>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    F: Fn(SseError) -> E + Unpin,
{
    type Item = Result<SseEvent, E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match this.decoder.next_event() {
                Ok(Some(event)) => return Poll::Ready(Some(Ok(event))),
                Ok(None) if this.decoder.is_ended() => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Ok(None) => {}
                Err(e) => {
                    this.done = true;
                    return Poll::Ready(Some(Err((this.decode_error)(e))));
                }
            }
            match ready!(this.bytes.poll_next_unpin(cx)) {
                Some(Ok(chunk)) => this.decoder.push(&chunk),
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                None => this.decoder.end(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use proptest::prelude::*;

    fn events_of(parts: &[&[u8]]) -> Vec<Result<SseEvent, String>> {
        let chunks: Vec<Result<Bytes, String>> = parts
            .iter()
            .map(|p| Ok(Bytes::copy_from_slice(p)))
            .collect();
        block_on(decode(futures::stream::iter(chunks), |e| e.to_string()).collect())
    }

    fn event(name: &str, data: &str) -> Result<SseEvent, String> {
        Ok(SseEvent {
            event: name.into(),
            data: data.into(),
        })
    }

    #[test]
    fn the_standards_examples_decode() {
        let body = b"data: This is the first message.\n\ndata: This is the second message, it\ndata: has two lines.\n\ndata: This is the third message.\n\n";
        assert_eq!(
            events_of(&[body]),
            vec![
                event("", "This is the first message."),
                event("", "This is the second message, it\nhas two lines."),
                event("", "This is the third message."),
            ]
        );
        let fields = b"data\n\ndata\ndata\n\ndata:\n\ndata:test\n\n";
        assert_eq!(
            events_of(&[fields]),
            vec![
                event("", ""),
                event("", "\n"),
                event("", ""),
                event("", "test")
            ]
        );
    }

    #[test]
    fn names_comments_ids_and_every_line_end() {
        let body = b"\xEF\xBB\xBF: keep-alive\r\nevent: message_start\r\nid: 7\r\nretry: 10\r\ndata: {\"a\":1}\r\n\r\nevent: ping\rdata: x\r\r: OPENROUTER PROCESSING\n\ndata:  two spaces\n\n";
        assert_eq!(
            events_of(&[body]),
            vec![
                event("message_start", "{\"a\":1}"),
                event("ping", "x"),
                event("", " two spaces"),
            ]
        );
    }

    #[test]
    fn an_unfinished_event_is_dropped_and_a_final_cr_ends_its_line() {
        assert_eq!(events_of(&[b"data: a\n\ndata: cut"]), vec![event("", "a")]);
        assert_eq!(events_of(&[b"data: a\r\r"]), vec![event("", "a")]);
        assert_eq!(events_of(&[b"event: only\n\n"]), vec![]);
    }

    #[test]
    fn events_already_buffered_need_no_further_read() {
        let mut decoder = SseDecoder::default();
        decoder.push(b"data: 1\n\ndata: 2\n\ndata: 3");
        assert_eq!(decoder.next_event().unwrap().unwrap().data, "1");
        assert_eq!(decoder.next_event().unwrap().unwrap().data, "2");
        assert_eq!(decoder.next_event().unwrap(), None);
        decoder.push(b"\r");
        assert_eq!(
            decoder.next_event().unwrap(),
            None,
            "a \\n may follow the \\r"
        );
        decoder.push(b"\n\n");
        assert_eq!(decoder.next_event().unwrap().unwrap().data, "3");
    }

    #[test]
    fn oversized_events_and_lines_are_errors_and_end_the_stream() {
        let line = vec![b'x'; MAX_EVENT + 1];
        let out = events_of(&[b"data: ", &line]);
        assert_eq!(out, vec![Err(SseError::TooLarge.to_string())]);
        let piece = vec![b'y'; MAX_EVENT / 2];
        let out = events_of(&[
            b"data: ",
            &piece,
            b"\ndata: ",
            &piece,
            b"\ndata: z\n\ndata: after\n\n",
        ]);
        assert_eq!(out, vec![Err(SseError::TooLarge.to_string())]);
    }

    #[test]
    fn transport_errors_pass_through_and_end_the_stream() {
        let chunks: Vec<Result<Bytes, String>> = vec![
            Ok(Bytes::from_static(b"data: a\n\n")),
            Err("reset".into()),
            Ok(Bytes::from_static(b"data: b\n\n")),
        ];
        let out: Vec<_> =
            block_on(decode(futures::stream::iter(chunks), |e| e.to_string()).collect());
        assert_eq!(out, vec![event("", "a"), Err("reset".into())]);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        assert_eq!(
            events_of(&[b"data: a\xFFb\n\n"]),
            vec![event("", "a\u{FFFD}b")]
        );
    }

    proptest! {
        #[test]
        fn how_reads_cut_the_bytes_never_changes_the_events(
            lines in prop::collection::vec(
                prop::sample::select(&[
                    "data: {\"x\":1}", "data:", "data", "event: e", ": comment", "id: 1",
                    "retry: 5", "", "data: caf\u{e9}", "\u{feff}data: bom",
                ][..]),
                0..20,
            ),
            ends in prop::collection::vec(prop::sample::select(&["\n", "\r\n", "\r"][..]), 20),
            cuts in prop::collection::vec(0usize..400, 0..8),
        ) {
            let mut body = Vec::new();
            for (line, end) in lines.iter().zip(ends.iter().cycle()) {
                body.extend_from_slice(line.as_bytes());
                body.extend_from_slice(end.as_bytes());
            }
            let whole = events_of(&[&body]);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(body.len())).collect();
            cuts.sort_unstable();
            let mut parts: Vec<&[u8]> = Vec::new();
            let mut from = 0;
            for cut in cuts {
                parts.push(&body[from..cut]);
                from = cut;
            }
            parts.push(&body[from..]);
            prop_assert_eq!(events_of(&parts), whole);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..8),
        ) {
            let parts: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
            let _ = events_of(&parts);
        }
    }
}
