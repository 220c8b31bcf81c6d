//! The observer's log writer. A chat's line is encoded when the chat is
//! recorded, on the thread that recorded it, into the segment being
//! gathered; a task writes what was gathered as one segment per burst.
//!
//! Encoded where it was recorded, an event is still in that core's cache and
//! is freed there. Handed to the writer to encode on another thread, each
//! event crossed cores twice and lived until its segment was written: 1.5 µs
//! of Lakehouse's 16 µs CPU per plain chat at 16 connections, against no
//! measurable cost for the same encoding done in place.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, oneshot};

use super::Line;
use super::conversations::MessageIndex;

/// How long the writer waits for more lines after the first before it
/// writes a segment, so that a busy server writes few objects.
pub(super) const LINGER: Duration = Duration::from_millis(250);
/// Lines that make a segment written without waiting out [`LINGER`].
const FULL_SEGMENT: usize = 2000;
/// The most a part of a segment grows to before the next part is started
/// (a single longer line makes its part longer): one buffer for a whole
/// segment grew to tens of megabytes with captured conversations, and was
/// copied again at each doubling.
const SEGMENT_PART: usize = 1 << 20;
/// The most bytes of lines waiting to be written. Past it (a store that
/// cannot keep up, or is down), chats are not logged, and are counted as
/// dropped; the chats themselves are never held up.
const MAX_PENDING: usize = 64 << 20;

/// Lines gathered for the next segment, and the task's wake-ups.
#[derive(Default)]
pub(super) struct LogWriter {
    pending: Mutex<Pending>,
    /// Wakes the task: the first line of a segment, a full segment, a
    /// flush, the observer's end.
    wake: Notify,
    closed: AtomicBool,
    /// Chats not logged because too much was waiting.
    pub(super) dropped: AtomicU64,
    /// Lines that could not be encoded, and segments that could not be written.
    pub(super) failures: AtomicU64,
}

#[derive(Default)]
struct Pending {
    /// The segment's parts in order: those full, then `part`, being filled.
    parts: Vec<Bytes>,
    part: Vec<u8>,
    lines: usize,
    bytes: usize,
    /// What the last segment weighed, to size the next one's parts.
    last_bytes: usize,
    /// The messages of the lines logged or gathered, to refer to.
    index: MessageIndex,
    /// Flushes to acknowledge once what was gathered before them is written.
    flushes: Vec<oneshot::Sender<()>>,
}

/// What the task took to write in one segment.
struct Segment {
    parts: Vec<Bytes>,
    lines: usize,
    bytes: usize,
    flushes: Vec<oneshot::Sender<()>>,
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter")
            .field("closed", &self.is_closed())
            .field("dropped", &self.dropped)
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

impl LogWriter {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Encodes `line` into the segment being gathered.
    pub(super) fn append(&self, line: Line<'_>) {
        let wake = {
            let mut pending = self.lock();
            if pending.bytes >= MAX_PENDING {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            match pending.append(line) {
                Ok(lines) => lines == 1 || lines == FULL_SEGMENT,
                Err(e) => {
                    // One unwritable record does not cost the others their place.
                    self.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("observer: cannot encode an event: {e}");
                    false
                }
            }
        };
        if wake {
            self.wake.notify_one();
        }
    }

    /// Waits until everything appended before the call is written (or its
    /// write failed).
    pub(super) async fn flush(&self) {
        let (ack, written) = oneshot::channel();
        self.lock().flushes.push(ack);
        self.wake.notify_one();
        let _ = written.await;
    }

    /// Ends the task once it has written what is gathered.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Whether the task should write without waiting for more lines.
    fn is_due(&self) -> bool {
        let pending = self.lock();
        pending.lines >= FULL_SEGMENT || !pending.flushes.is_empty()
    }

    fn take(&self) -> Segment {
        let mut pending = self.lock();
        if !pending.part.is_empty() {
            let part = std::mem::take(&mut pending.part);
            pending.parts.push(part.into());
        }
        Segment {
            parts: std::mem::take(&mut pending.parts),
            lines: std::mem::take(&mut pending.lines),
            bytes: std::mem::take(&mut pending.bytes),
            flushes: std::mem::take(&mut pending.flushes),
        }
    }

    /// Puts a segment that could not be written back in front of the lines
    /// gathered since, which may refer to its chats, to be written with
    /// them. When that would hold too much, its lines are given up instead
    /// and no later line refers to a chat logged before.
    fn put_back(&self, segment: Segment) {
        let mut pending = self.lock();
        if pending.bytes.saturating_add(segment.bytes) > MAX_PENDING {
            pending.index.forget_all();
            self.dropped
                .fetch_add(segment.lines as u64, Ordering::Relaxed);
            return;
        }
        let later = std::mem::replace(&mut pending.parts, segment.parts);
        pending.parts.extend(later);
        pending.lines += segment.lines;
        pending.bytes += segment.bytes;
    }

    fn written(&self, bytes: usize) {
        self.lock().last_bytes = bytes;
    }
}

impl Pending {
    /// Appends `line` and its newline; the lines now gathered.
    fn append(&mut self, line: Line<'_>) -> serde_json::Result<usize> {
        if self.part.capacity() == 0 {
            self.part.reserve(
                self.last_bytes
                    .saturating_add(self.last_bytes / 4)
                    .clamp(4096, SEGMENT_PART),
            );
        }
        let start = self.part.len();
        if let Err(e) = line.write_json(&mut self.part, Some(&mut self.index)) {
            self.index.abandon();
            self.part.truncate(start);
            return Err(e);
        }
        self.part.push(b'\n');
        self.index.commit();
        self.lines += 1;
        self.bytes += self.part.len() - start;
        if self.part.len() >= SEGMENT_PART {
            let part = std::mem::take(&mut self.part);
            self.parts.push(part.into());
        }
        Ok(self.lines)
    }
}

/// Writes what `writer` gathers, one segment per burst: after the first
/// line it waits up to `linger` for more (a flush, a full segment or the
/// observer's end cut the wait short).
pub(super) async fn write_loop(
    log: lakehouse_memory::log::JsonlLog,
    writer: std::sync::Arc<LogWriter>,
    linger: Duration,
) {
    loop {
        if !writer.is_closed() {
            writer.wake.notified().await;
        }
        if !writer.is_closed() && !writer.is_due() {
            tokio::select! {
                () = tokio::time::sleep(linger) => {}
                () = writer.wake.notified() => {}
            }
        }
        // Read before the take: once closed, nothing more is appended.
        let closed = writer.is_closed();
        let mut segment = writer.take();
        let flushes = std::mem::take(&mut segment.flushes);
        if segment.lines > 0 {
            match log.append_encoded(segment.parts.clone()).await {
                Ok(()) => writer.written(segment.bytes),
                Err(e) => {
                    writer.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("observer: cannot write {} events: {e}", segment.lines);
                    if !closed {
                        writer.put_back(segment);
                    }
                }
            }
        }
        for ack in flushes {
            let _ = ack.send(());
        }
        if closed {
            return;
        }
    }
}

#[cfg(test)]
impl LogWriter {
    /// The lines gathered and not yet taken, as text.
    pub(super) fn gathered(&self) -> String {
        let pending = self.lock();
        let mut text = String::new();
        for part in pending
            .parts
            .iter()
            .map(|p| &p[..])
            .chain([&pending.part[..]])
        {
            text.push_str(&String::from_utf8_lossy(part));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observer::tests::event;
    use crate::observer::{ChatEvent, Outcome};

    fn chat(latency_ms: f64) -> ChatEvent {
        event("kimi", Outcome::Ok, latency_ms)
    }

    fn latencies(text: &str) -> Vec<f64> {
        text.lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["latency_ms"]
                    .as_f64()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn a_segment_that_failed_is_written_again_before_the_lines_gathered_since() {
        let writer = LogWriter::default();
        writer.append(Line::Chat(&chat(1.0)));
        writer.append(Line::Chat(&chat(2.0)));
        let failed = writer.take();
        writer.append(Line::Chat(&chat(3.0)));
        writer.put_back(failed);
        assert_eq!(latencies(&writer.gathered()), [1.0, 2.0, 3.0]);
        let again = writer.take();
        assert_eq!((again.lines, writer.take().lines), (3, 0));
        assert_eq!(writer.dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn past_the_bound_chats_are_dropped_and_counted_not_held() {
        let writer = LogWriter::default();
        let mut big = chat(1.0);
        big.answer = Some("x".repeat(MAX_PENDING));
        writer.append(Line::Chat(&big));
        writer.append(Line::Chat(&chat(2.0)));
        assert_eq!(writer.dropped.load(Ordering::Relaxed), 1);
        let segment = writer.take();
        assert_eq!(segment.lines, 1);
        // Written out, the bound applies to what gathers next.
        writer.append(Line::Chat(&chat(3.0)));
        assert_eq!(latencies(&writer.gathered()), [3.0]);
        // A failed segment too big to keep beside it is given up, counted.
        writer.put_back(segment);
        assert_eq!(writer.dropped.load(Ordering::Relaxed), 2);
        assert_eq!(latencies(&writer.gathered()), [3.0]);
    }

    #[test]
    fn lines_fill_parts_of_about_a_part_each_in_order() {
        let writer = LogWriter::default();
        for i in 0..5u8 {
            let mut long = chat(f64::from(i));
            long.answer = Some(char::from(b'a' + i).to_string().repeat(SEGMENT_PART / 2));
            writer.append(Line::Chat(&long));
        }
        let segment = writer.take();
        assert_eq!(segment.lines, 5);
        assert_eq!(segment.parts.len(), 3, "two lines a part, then the last");
        assert!(segment.parts.iter().all(|p| p.ends_with(b"\n")));
        let text: String = segment
            .parts
            .iter()
            .map(|p| String::from_utf8_lossy(p))
            .collect();
        assert_eq!(latencies(&text), [0.0, 1.0, 2.0, 3.0, 4.0]);
    }
}
