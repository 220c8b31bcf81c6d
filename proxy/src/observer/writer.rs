//! The observer's log writer. A chat's line is encoded when the chat is
//! recorded, on the thread that recorded it, and added to the segment being
//! gathered; a task writes what was gathered as one segment per burst.
//!
//! Encoded where it was recorded, an event is still in that core's cache and
//! is freed there. Handed to a task to encode in batches on the blocking
//! pool, as before, each event crossed cores twice and lived until its
//! segment was written. At 16 connections this cut Lakehouse's CPU per chat
//! from 17.1 to 16.7 µs for plain chats, and from 136 to 125 µs for chats
//! resending a 40 KB conversation (interleaved A/B rounds).
//!
//! A segment the store refuses is written again, under the same key (a
//! write that was in fact stored is then not kept twice), before anything
//! gathered since, whose lines may refer to its chats' messages; the waits
//! between attempts grow to [`MAX_BACKOFF`]. One still refused when the
//! observer ends is kept in a local folder, when there is one (S3), and
//! written at the next start ([`restore_spilled`]).
//!
//! The lock is held to look messages up in the index and to copy the line
//! in, not to encode it: with several worker threads, chats ending together
//! would otherwise wait on each other's digests and JSON, which for a long
//! conversation seen for the first time take tens of microseconds. A chat is
//! remembered once its line is added, so two chats ending together that
//! share messages both write them.
//!
//! The parts holding the last chats' lines are kept after they are written
//! ([`Kept`]): the observer's ring of recent chats holds where those lines
//! are, and reads them back when asked for (see `recent`).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use lakehouse_memory::MemoryError;
use lakehouse_memory::log::JsonlLog;
use lakehouse_retrieval::StoreError;
use tokio::sync::{Notify, oneshot};

use super::ChatEvent;
use super::Line;
use super::conversations::{DigestKeys, MessageIndex, Prepared, SCRATCH_KEPT};

/// The writer's waits.
#[derive(Clone, Copy)]
pub(super) struct Timing {
    /// For more lines after the first before a segment is written, so
    /// that a busy server writes few objects.
    pub(super) linger: Duration,
    /// Before a refused segment is written again; it doubles with each
    /// refusal up to [`MAX_BACKOFF`].
    pub(super) first_backoff: Duration,
    /// For a write to the store once the observer is closed (a store that
    /// is down can retry for minutes); then the segment is kept in the
    /// spill folder, or left out.
    pub(super) close_wait: Duration,
}

/// The waits of a running server.
pub(super) const SERVER: Timing = Timing {
    linger: Duration::from_millis(250),
    first_backoff: Duration::from_secs(1),
    close_wait: Duration::from_secs(5),
};
/// Lines that make a segment written without waiting out the linger.
const FULL_SEGMENT: usize = 2000;
/// The most a part of a segment grows to before the next part is started
/// (a single longer line makes its part longer): one buffer for a whole
/// segment grew to tens of megabytes with captured conversations, and was
/// copied again at each doubling.
const SEGMENT_PART: usize = 1 << 20;
/// The most bytes of lines not yet written, gathered or being written. Past
/// it (a store that cannot keep up, or is down), lines are left out of the
/// log and counted as dropped; the chats themselves are never held up.
const MAX_PENDING: usize = 64 << 20;
/// The longest chat line the ring reads back from the kept parts; a longer
/// one (a long captured conversation) is held whole, as scans of the ring
/// would parse it again and again. While its part is kept, such a chat is
/// in memory twice: the kept parts hold every chat line of the ring's span.
pub(super) const KEPT_LINE_MAX: usize = 4096;
/// The longest wait before a refused segment is written again.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Lines gathered for the next segment, and the task's wake-ups.
pub(super) struct LogWriter {
    pending: Mutex<Pending>,
    /// The index's keys, to take digests under before the lock.
    keys: DigestKeys,
    /// Wakes the task: the first line of a segment, a full segment, a
    /// flush, the observer's end.
    wake: Notify,
    closed: AtomicBool,
    /// Wakes writes waiting on the store when the observer is closed.
    closing: Notify,
    /// Whether the lines not yet written reach [`MAX_PENDING`]: read before
    /// a line is encoded, so that none is encoded only to be dropped.
    full: AtomicBool,
    /// Lines (chats and ratings) left out of the log: too much was waiting,
    /// or a segment was given up (see [`write_loop`]).
    pub(super) dropped: AtomicU64,
    /// Lines that could not be encoded, and refused segment writes.
    pub(super) failures: AtomicU64,
    /// Segments written.
    pub(super) segments: tokio::sync::watch::Sender<u64>,
    /// Where segments still refused when the observer ends are kept.
    spill: Option<PathBuf>,
    /// Lines kept there.
    pub(super) spilled: AtomicU64,
}

#[derive(Default)]
struct Pending {
    /// The segment's parts in order: those full, then `part`, being filled.
    parts: Vec<Bytes>,
    part: Vec<u8>,
    lines: usize,
    bytes: usize,
    /// Bytes taken and not yet written: being written, or refused and
    /// waiting to be written again. They count against [`MAX_PENDING`].
    held: usize,
    /// Whether the task was woken for the lines gathered, and for a full
    /// segment of them: each is signalled once per segment.
    woken: bool,
    woken_full: bool,
    /// What the last segment weighed, to size the next one's parts.
    last_bytes: usize,
    /// The messages of the lines logged or gathered, to refer to.
    index: MessageIndex,
    /// Flushes to acknowledge once what was gathered before them is written.
    flushes: Vec<oneshot::Sender<()>>,
    /// The parts the ring's lines are read back from.
    kept: Kept,
    /// The task is gone (ended, or dropped with its runtime): flushes are
    /// answered at once, for nothing more will be written.
    ended: bool,
}

/// Where a chat's line is among the parts the writer keeps: the `len`
/// bytes from `start` of part number `part`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LineAt {
    part: u64,
    start: usize,
    len: usize,
}

/// The newest parts holding the last `chats` chat lines (rating lines do
/// not count), kept after they are written so that the ring's chats can be
/// read back from them. The ring pushes its chats in the order their lines
/// are added (under the writer's lock), so its last `chats` chats are always
/// among them.
#[derive(Default)]
struct Kept {
    /// How many chat lines to keep: the ring's capacity; 0 keeps none.
    chats: usize,
    /// Finished parts, oldest first, numbered up to `current`.
    parts: VecDeque<KeptPart>,
    /// Chat lines in `parts`.
    held: usize,
    /// The number of the part being filled ([`Pending::part`]).
    current: u64,
    /// Chat lines in the part being filled.
    current_chats: usize,
}

struct KeptPart {
    bytes: Bytes,
    chats: usize,
}

impl Kept {
    /// Counts a line just added at `start` of the current part; where it
    /// is, when it is a `readable` chat line and chat lines are kept.
    fn added(&mut self, chat: bool, readable: bool, start: usize, len: usize) -> Option<LineAt> {
        if self.chats == 0 || !chat {
            return None;
        }
        self.current_chats += 1;
        readable.then_some(LineAt {
            part: self.current,
            start,
            len,
        })
    }

    /// The current part is finished as `bytes`; older parts no longer
    /// needed are let go.
    fn finished(&mut self, bytes: &Bytes) {
        if self.chats > 0 {
            self.parts.push_back(KeptPart {
                bytes: bytes.clone(),
                chats: self.current_chats,
            });
            self.held += self.current_chats;
            while let Some(oldest) = self.parts.front()
                && self.held - oldest.chats >= self.chats
            {
                self.held -= oldest.chats;
                self.parts.pop_front();
            }
        }
        self.current += 1;
        self.current_chats = 0;
    }

    /// The line at `at`, if its part is still kept; `part` is the part
    /// being filled.
    fn line(&self, part: &[u8], at: LineAt) -> Option<Bytes> {
        let end = at.start.checked_add(at.len)?;
        if at.part == self.current {
            return part.get(at.start..end).map(Bytes::copy_from_slice);
        }
        let first = self.current.checked_sub(self.parts.len() as u64)?;
        let index = usize::try_from(at.part.checked_sub(first)?).ok()?;
        let bytes = &self.parts.get(index)?.bytes;
        (end <= bytes.len()).then(|| bytes.slice(at.start..end))
    }
}

/// A line just added: the writer's lock is still held, so that whoever
/// placed the line can act before the next line is added.
struct Added<'a> {
    pending: MutexGuard<'a, Pending>,
    at: Option<LineAt>,
    wake: bool,
}

/// What the task took to write in one segment.
struct Segment {
    parts: Vec<Bytes>,
    lines: usize,
    bytes: usize,
}

/// A segment to write under `key`; after a refusal, written again after
/// `backoff`.
struct Attempt {
    key: String,
    segment: Segment,
    backoff: Duration,
}

/// A thread's line being encoded, outside the lock; kept between lines.
#[derive(Default)]
struct Encoding {
    line: Vec<u8>,
    prepared: Prepared,
}

impl Encoding {
    /// Lets go of what one huge line grew.
    fn trim(&mut self) {
        if self.line.capacity() > SCRATCH_KEPT {
            self.line = Vec::new();
        }
        self.prepared.trim();
    }
}

thread_local! {
    static ENCODING: RefCell<Encoding> = RefCell::default();
}

impl Default for LogWriter {
    fn default() -> Self {
        let pending = Pending::default();
        Self {
            keys: pending.index.keys(),
            pending: Mutex::new(pending),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            closing: Notify::new(),
            full: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            segments: tokio::sync::watch::Sender::new(0),
            spill: None,
            spilled: AtomicU64::new(0),
        }
    }
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
    /// A writer that keeps the segments still refused when the observer
    /// ends in `spill`, for [`restore_spilled`] at the next start, and the
    /// lines of the last `chats` chats for the ring ([`kept_lines`](Self::kept_lines)).
    pub(super) fn new(spill: Option<PathBuf>, chats: usize) -> Self {
        let writer = Self {
            spill,
            ..Self::default()
        };
        writer.lock().kept.chats = chats;
        writer
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Encodes `line` and adds it to the segment being gathered.
    pub(super) fn append(&self, line: Line<'_>) {
        if let Some(added) = self.with_encoding(|encoding| self.encode_and_add(&line, encoding)) {
            self.release(added);
        }
    }

    /// Encodes `chat`'s line and adds it to the segment being gathered, then
    /// hands the chat to `then` with where its line is kept (`None`: not
    /// kept, or left out of the log). When the line was added, `then` runs
    /// under the writer's lock: what it records keeps the log's order.
    pub(super) fn append_chat<R>(
        &self,
        chat: Box<ChatEvent>,
        then: impl FnOnce(Box<ChatEvent>, Option<LineAt>) -> R,
    ) -> R {
        let added =
            self.with_encoding(|encoding| self.encode_and_add(&Line::Chat(&chat), encoding));
        match added {
            Some(added) => {
                let result = then(chat, added.at);
                self.release(added);
                result
            }
            None => then(chat, None),
        }
    }

    /// Runs `encode` with this thread's buffers (fresh ones when the thread
    /// is ending and its buffers are gone, or they are in use).
    fn with_encoding<R>(&self, encode: impl FnOnce(&mut Encoding) -> Option<R>) -> Option<R> {
        let mut encode = Some(encode);
        let done = ENCODING.try_with(|encoding| {
            let encode = encode.take()?;
            match encoding.try_borrow_mut() {
                Ok(mut encoding) => encode(&mut encoding),
                Err(_) => encode(&mut Encoding::default()),
            }
        });
        match (done, encode) {
            (Ok(added), _) => added,
            (Err(_), Some(encode)) => encode(&mut Encoding::default()),
            (Err(_), None) => None,
        }
    }

    /// Lets go of the lock, then wakes the task if the line called for it.
    fn release(&self, added: Added<'_>) {
        let Added { pending, wake, .. } = added;
        drop(pending);
        if wake {
            self.wake.notify_one();
        }
    }

    /// The lines at `at`, in order; `None` for those no longer kept.
    pub(super) fn kept_lines(&self, at: &[LineAt]) -> Vec<Option<Bytes>> {
        let pending = self.lock();
        at.iter()
            .map(|at| pending.kept.line(&pending.part, *at))
            .collect()
    }

    fn encode_and_add(&self, line: &Line<'_>, encoding: &mut Encoding) -> Option<Added<'_>> {
        if self.full.load(Ordering::Relaxed) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let added = match self.encode(line, encoding) {
            Ok(()) => self.add(line, encoding),
            Err(e) => {
                self.unencodable(&e);
                None
            }
        };
        encoding.trim();
        added
    }

    /// One unwritable record does not cost the others their place.
    fn unencodable(&self, error: &serde_json::Error) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("observer: cannot encode an event: {error}");
    }

    /// Encodes `line` into `encoding.line`; the lock is taken only to look
    /// a chat's messages up in the index.
    fn encode(&self, line: &Line<'_>, encoding: &mut Encoding) -> serde_json::Result<()> {
        let Encoding {
            line: out,
            prepared,
        } = encoding;
        out.clear();
        prepared.clear();
        let chat = match line {
            Line::Chat(event) => event.messages.as_deref().map(|m| (event, m)),
            Line::Rating { .. } => None,
        };
        let Some((event, messages)) = chat else {
            return line.write_json(out, None);
        };
        prepared.digest(&self.keys, event.caller.as_deref(), event.at_ms, messages)?;
        if prepared.is_indexed() {
            self.lock().index.plan(prepared, event.at_ms);
        }
        line.write_json(out, Some(prepared))
    }

    /// Adds the line [`encode`](Self::encode) wrote to the segment; the
    /// lock is still held on return.
    fn add(&self, line: &Line<'_>, encoding: &mut Encoding) -> Option<Added<'_>> {
        let mut pending = self.lock();
        if pending.is_full() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let Encoding {
            line: out,
            prepared,
        } = encoding;
        let chat = match line {
            Line::Chat(event) => Some(event),
            Line::Rating { .. } => None,
        };
        // A segment was given up since the pieces were found: they may
        // name its chats. Rare, so found and encoded again here.
        if let Some(event) = chat
            && !pending.index.is_current(prepared)
            && prepared.is_indexed()
        {
            pending.index.plan(prepared, event.at_ms);
            out.clear();
            if let Err(e) = line.write_json(out, Some(prepared)) {
                self.unencodable(&e);
                return None;
            }
        }
        // Only a line that reads back whole by itself.
        let readable = chat.is_some() && !prepared.refers() && out.len() <= KEPT_LINE_MAX;
        let at = pending.add(out, chat.is_some(), readable);
        if let Some(event) = chat {
            pending.index.commit(event.id.as_deref(), prepared);
        }
        self.full.store(pending.is_full(), Ordering::Relaxed);
        let wake = pending.wake_needed();
        Some(Added { pending, at, wake })
    }

    /// Waits until everything appended before the call is written (or its
    /// write was refused).
    pub(super) async fn flush(&self) {
        let (ack, written) = oneshot::channel();
        {
            let mut pending = self.lock();
            if pending.ended {
                return;
            }
            pending.flushes.push(ack);
        }
        self.wake.notify_one();
        // An error is the task gone: it dropped the acknowledgement.
        let _ = written.await;
    }

    /// Ends the task once it has written what is gathered.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
        self.closing.notify_waiters();
    }

    /// Resolves once [`close`](Self::close) was called.
    async fn until_closed(&self) {
        loop {
            let closing = self.closing.notified();
            tokio::pin!(closing);
            // Registered before the flag is read: a close in between wakes it.
            closing.as_mut().enable();
            if self.is_closed() {
                return;
            }
            closing.await;
        }
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Whether the task should write without waiting for more lines.
    fn is_due(&self) -> bool {
        let pending = self.lock();
        pending.lines >= FULL_SEGMENT || !pending.flushes.is_empty()
    }

    fn take_flushes(&self) -> Vec<oneshot::Sender<()>> {
        std::mem::take(&mut self.lock().flushes)
    }

    /// The lines gathered, as a segment now being written.
    fn take(&self) -> Segment {
        let mut pending = self.lock();
        pending.finish_part();
        pending.woken = false;
        pending.woken_full = false;
        let bytes = std::mem::take(&mut pending.bytes);
        pending.held = pending.held.saturating_add(bytes);
        Segment {
            parts: std::mem::take(&mut pending.parts),
            lines: std::mem::take(&mut pending.lines),
            bytes,
        }
    }

    /// `segment` is in the store.
    fn written(&self, segment: &Segment) {
        {
            let mut pending = self.lock();
            pending.held = pending.held.saturating_sub(segment.bytes);
            pending.last_bytes = segment.bytes;
            self.full.store(pending.is_full(), Ordering::Relaxed);
        }
        self.segments.send_modify(|n| *n += 1);
    }

    /// `segment` is kept locally, for the next start.
    fn spilled(&self, segment: &Segment) {
        {
            let mut pending = self.lock();
            pending.held = pending.held.saturating_sub(segment.bytes);
            self.full.store(pending.is_full(), Ordering::Relaxed);
        }
        self.spilled
            .fetch_add(segment.lines as u64, Ordering::Relaxed);
    }

    /// Leaves `segment` out of the log, and with it every line gathered
    /// since, which may refer to its chats' messages; later lines refer to
    /// none logged before.
    fn give_up(&self, segment: &Segment) {
        let mut pending = self.lock();
        pending.held = pending.held.saturating_sub(segment.bytes);
        let lost = segment.lines.saturating_add(pending.lines);
        // Out of the log, still in the ring.
        pending.finish_part();
        pending.parts.clear();
        pending.lines = 0;
        pending.bytes = 0;
        pending.woken = false;
        pending.woken_full = false;
        pending.index.forget_all();
        self.full.store(pending.is_full(), Ordering::Relaxed);
        self.dropped.fetch_add(lost as u64, Ordering::Relaxed);
    }
}

impl Pending {
    /// Whether the lines not yet written reach [`MAX_PENDING`].
    fn is_full(&self) -> bool {
        self.bytes.saturating_add(self.held) >= MAX_PENDING
    }

    /// Appends an encoded line and its newline; where it is, when it is
    /// a `readable` chat line and chat lines are kept.
    fn add(&mut self, line: &[u8], chat: bool, readable: bool) -> Option<LineAt> {
        if self.part.capacity() == 0 {
            self.part.reserve(
                self.last_bytes
                    .saturating_add(self.last_bytes / 4)
                    .clamp(4096, SEGMENT_PART),
            );
        }
        let at = self.kept.added(chat, readable, self.part.len(), line.len());
        self.part.extend_from_slice(line);
        self.part.push(b'\n');
        self.lines += 1;
        self.bytes += line.len() + 1;
        if self.part.len() >= SEGMENT_PART {
            self.finish_part();
        }
        at
    }

    /// Moves the part being filled, if any, to the segment's parts.
    fn finish_part(&mut self) {
        if self.part.is_empty() {
            return;
        }
        let mut part = std::mem::take(&mut self.part);
        // Kept for the ring, a part cut short (a quiet server's segment)
        // would hold its whole reservation.
        if self.kept.chats > 0 && part.len() < part.capacity() / 2 {
            part.shrink_to_fit();
        }
        let part = Bytes::from(part);
        self.kept.finished(&part);
        self.parts.push(part);
    }

    /// Whether the task must be woken: for the first line gathered, and
    /// once more when a segment is full.
    fn wake_needed(&mut self) -> bool {
        if !self.woken {
            self.woken = true;
            return true;
        }
        if self.lines >= FULL_SEGMENT && !self.woken_full {
            self.woken_full = true;
            return true;
        }
        false
    }
}

/// Whether writing the same bytes again cannot succeed.
fn is_final(error: &MemoryError) -> bool {
    matches!(error, MemoryError::Store(StoreError::TooLarge { .. }))
}

/// Writes what `writer` gathers, one segment per burst: after the first
/// line it waits for more (a flush, a full segment or the observer's end cut
/// the wait short). A refused segment is written again, alone, after a
/// growing wait, before what was gathered since; it is given up when the
/// store can never take it (over its size cap). When the observer ends,
/// see [`finish`].
pub(super) fn write_loop(
    log: JsonlLog,
    writer: std::sync::Arc<LogWriter>,
    timing: Timing,
) -> impl Future<Output = ()> {
    // Outside the loop's future, so that it marks the end even when the
    // task is dropped before it first runs.
    let task = Task(writer);
    async move { write_until_closed(&log, &task.0, timing).await }
}

/// The task's hold on the writer; when it goes, however the task ends,
/// flushes waiting or to come are answered.
struct Task(std::sync::Arc<LogWriter>);

impl Drop for Task {
    fn drop(&mut self) {
        let mut pending = self.0.lock();
        pending.ended = true;
        pending.flushes.clear();
    }
}

async fn write_until_closed(log: &JsonlLog, writer: &LogWriter, timing: Timing) {
    let mut refused: Option<Attempt> = None;
    loop {
        if !writer.is_closed() {
            match &refused {
                None => writer.wake.notified().await,
                // New lines, a flush or the end cut the wait short.
                Some(refused) => {
                    tokio::select! {
                        () = tokio::time::sleep(refused.backoff) => {}
                        () = writer.wake.notified() => {}
                    }
                }
            }
        }
        if refused.is_none() && !writer.is_closed() && !writer.is_due() {
            tokio::select! {
                () = tokio::time::sleep(timing.linger) => {}
                () = writer.wake.notified() => {}
            }
        }
        // Read first: once closed, nothing more is appended.
        let closed = writer.is_closed();
        let flushes = writer.take_flushes();
        if closed {
            finish(log, writer, refused.take(), timing.close_wait).await;
        } else {
            if let Some(earlier) = refused.take() {
                refused = write(log, writer, earlier, timing.close_wait).await;
            }
            // Also right after an earlier segment is written at last: lines
            // gathered meanwhile woke the task once, for the wait now over.
            if refused.is_none() {
                let segment = writer.take();
                if segment.lines > 0 {
                    let attempt = Attempt {
                        key: log.new_segment_key(),
                        segment,
                        backoff: timing.first_backoff,
                    };
                    refused = write(log, writer, attempt, timing.close_wait).await;
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

/// Writes `attempt`'s segment; answers it when it is to be written again.
async fn write(
    log: &JsonlLog,
    writer: &LogWriter,
    attempt: Attempt,
    close_wait: Duration,
) -> Option<Attempt> {
    let Attempt {
        key,
        segment,
        backoff,
    } = attempt;
    match put(log, writer, &key, &segment, close_wait).await {
        Ok(()) => {
            writer.written(&segment);
            None
        }
        Err(e) if is_final(&e) => {
            tracing::warn!(
                "observer: cannot write {} events, left out: {e}",
                segment.lines
            );
            writer.give_up(&segment);
            None
        }
        Err(e) => {
            tracing::warn!(
                "observer: cannot write {} events, trying again in {backoff:?}: {e}",
                segment.lines
            );
            Some(Attempt {
                key,
                segment,
                backoff: (backoff * 2).min(MAX_BACKOFF),
            })
        }
    }
}

/// Writes `segment` under `key`, waiting as long as the store takes until
/// the observer is closed, then at most `close_wait` more; counts a
/// refusal.
async fn put(
    log: &JsonlLog,
    writer: &LogWriter,
    key: &str,
    segment: &Segment,
    close_wait: Duration,
) -> Result<(), MemoryError> {
    let result = async {
        let write = log.write_segment(key, segment.parts.clone());
        tokio::pin!(write);
        tokio::select! {
            result = &mut write => return result,
            () = writer.until_closed() => {}
        }
        tokio::time::timeout(close_wait, write)
            .await
            .unwrap_or_else(|_| {
                Err(MemoryError::Store(StoreError::Backend(format!(
                    "no answer within {close_wait:?} of the observer's end"
                ))))
            })
    }
    .await;
    if result.is_err() {
        writer.failures.fetch_add(1, Ordering::Relaxed);
    }
    result
}

/// What becomes of the segments left when the observer ends.
#[derive(Clone, Copy)]
enum Ending {
    /// Written to the store.
    Store,
    /// Kept in the spill folder: so are all after it, which may refer to
    /// its chats and must not reach the store before it.
    Spill,
    /// Left out: so are all after it.
    Lost,
}

/// Writes what is left when the observer ends: the segment refused before,
/// then what was gathered. A segment the store refuses, or does not answer
/// for within `close_wait`, is kept in the spill folder when there is one
/// (one refused before is kept at once: the end does not wait on a store
/// that is down), and every segment after it too.
async fn finish(
    log: &JsonlLog,
    writer: &LogWriter,
    refused: Option<Attempt>,
    close_wait: Duration,
) {
    let gathered = writer.take();
    let gathered = (gathered.lines > 0).then(|| Attempt {
        key: log.new_segment_key(),
        segment: gathered,
        backoff: Duration::ZERO,
    });
    let refused = refused.iter().map(|attempt| (attempt, true));
    let mut ending = Ending::Store;
    for (attempt, refused_before) in refused.chain(gathered.iter().map(|a| (a, false))) {
        ending = match ending {
            Ending::Store if refused_before && writer.spill.is_some() => {
                keep_for_next_start(writer, attempt, "refused before").await
            }
            Ending::Store => write_at_end(log, writer, attempt, close_wait).await,
            Ending::Spill => {
                keep_for_next_start(writer, attempt, "kept after one kept before").await
            }
            Ending::Lost => {
                writer.give_up(&attempt.segment);
                Ending::Lost
            }
        };
    }
}

/// One last attempt at the store for `attempt`; kept in the spill folder,
/// or given up, when refused.
async fn write_at_end(
    log: &JsonlLog,
    writer: &LogWriter,
    attempt: &Attempt,
    close_wait: Duration,
) -> Ending {
    let segment = &attempt.segment;
    match put(log, writer, &attempt.key, segment, close_wait).await {
        Ok(()) => {
            writer.written(segment);
            Ending::Store
        }
        Err(e) if is_final(&e) || writer.spill.is_none() => {
            tracing::warn!(
                "observer: cannot write {} events, left out: {e}",
                segment.lines
            );
            writer.give_up(segment);
            Ending::Lost
        }
        Err(e) => keep_for_next_start(writer, attempt, &e.to_string()).await,
    }
}

/// Keeps `attempt`'s segment, which the store refused (`why`), in the
/// writer's spill folder for the next start; gives it up if that fails too.
async fn keep_for_next_start(writer: &LogWriter, attempt: &Attempt, why: &str) -> Ending {
    let segment = &attempt.segment;
    let kept = match &writer.spill {
        Some(dir) => spill(dir, &attempt.key, &segment.parts)
            .await
            .map_err(|e| format!("nor keep them in {}: {e}", dir.display())),
        None => Err("and there is no spill folder".to_owned()),
    };
    match kept {
        Ok(path) => {
            tracing::warn!(
                "observer: cannot write {} events ({why}); kept in {} for the next start",
                segment.lines,
                path.display()
            );
            writer.spilled(segment);
            Ending::Spill
        }
        Err(e) => {
            tracing::warn!(
                "observer: cannot write {} events ({why}) {e}; left out",
                segment.lines
            );
            writer.give_up(segment);
            Ending::Lost
        }
    }
}

/// Writes `parts`, a segment refused under `key`, as a file in `dir`
/// named like the segment (so files sort in the log's order).
async fn spill(dir: &Path, key: &str, parts: &[Bytes]) -> std::io::Result<PathBuf> {
    use tokio::io::AsyncWriteExt;
    let name = key.rsplit('/').next().unwrap_or(key);
    let path = dir.join(name);
    let partial = dir.join(format!("{name}.partial"));
    tokio::fs::create_dir_all(dir).await?;
    let mut file = tokio::fs::File::create(&partial).await?;
    for part in parts {
        file.write_all(part).await?;
    }
    file.sync_all().await?;
    drop(file);
    tokio::fs::rename(&partial, &path).await?;
    // The rename itself survives a power loss only once the folder is synced.
    tokio::fs::File::open(dir).await?.sync_all().await?;
    Ok(path)
}

/// Writes the segments kept in `dir` when the observer last ended to `log`,
/// oldest first, each under the key it was refused under (its file name):
/// in its place in the log's order, and not twice if a refused write was in
/// fact stored. Deletes each once written; stops at the first the store
/// refuses, keeping it and the rest for the next start. Answers how many
/// lines were written. Files left half-written by an end mid-spill are
/// deleted.
pub(super) async fn restore_spilled(log: &JsonlLog, dir: &Path) -> u64 {
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return 0,
        Err(e) => {
            tracing::warn!("observer: cannot read {}: {e}", dir.display());
            return 0;
        }
    };
    let mut kept = Vec::new();
    while let Ok(Some(entry)) = entries.next_entry().await {
        let path = entry.path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl") => {
                if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                    kept.push((log.segment_key(name), path));
                }
            }
            Some("partial") => {
                if let Err(e) = tokio::fs::remove_file(&path).await {
                    tracing::warn!("observer: cannot delete {}: {e}", path.display());
                }
            }
            _ => {}
        }
    }
    kept.sort();
    let mut restored = 0;
    for (key, path) in kept {
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => Bytes::from(bytes),
            Err(e) => {
                tracing::warn!("observer: cannot read {}: {e}", path.display());
                break;
            }
        };
        let lines = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
        if let Err(e) = log.write_segment(&key, vec![bytes]).await {
            tracing::warn!(
                "observer: cannot write the events kept in {}, kept for the next start: {e}",
                path.display()
            );
            break;
        }
        restored += lines;
        if let Err(e) = tokio::fs::remove_file(&path).await {
            // Written, and would be written again at the next start.
            tracing::error!(
                "observer: cannot delete {} (its events are in the log; delete it): {e}",
                path.display()
            );
        }
    }
    restored
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
    use std::sync::Arc;

    use super::*;
    use crate::observer::tests::event;
    use crate::observer::{ChatEvent, Outcome};
    use lakehouse_retrieval::objects::Objects;

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
    fn the_task_is_woken_for_the_first_line_and_once_more_for_a_full_segment() {
        let mut pending = Pending::default();
        let mut wakes = Vec::new();
        for n in 1..=FULL_SEGMENT + 1 {
            pending.add(b"{}", true, true);
            if pending.wake_needed() {
                wakes.push(n);
            }
        }
        assert_eq!(wakes, [1, FULL_SEGMENT]);
    }

    #[test]
    fn lines_past_the_bound_are_dropped_and_counted_until_written() {
        let writer = LogWriter::default();
        let mut big = chat(1.0);
        big.answer = Some("x".repeat(MAX_PENDING));
        writer.append(Line::Chat(&big));
        writer.append(Line::Chat(&chat(2.0)));
        assert_eq!(writer.dropped.load(Ordering::Relaxed), 1);
        // Being written, its bytes still count.
        let segment = writer.take();
        assert_eq!(segment.lines, 1);
        writer.append(Line::Chat(&chat(3.0)));
        assert_eq!(writer.dropped.load(Ordering::Relaxed), 2);
        writer.written(&segment);
        writer.append(Line::Chat(&chat(4.0)));
        assert_eq!(latencies(&writer.gathered()), [4.0]);
        assert_eq!(writer.dropped.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_segment_given_up_takes_the_lines_gathered_since_and_no_line_refers_to_it() {
        let writer = LogWriter::default();
        let question = || {
            lakehouse_providers::openai::Message::text(
                lakehouse_providers::openai::Role::User,
                "q".repeat(200),
            )
        };
        let mut first = chat(1.0);
        first.id = Some("chatcmpl-1".into());
        first.messages = Some(Arc::new(vec![question(), question()]));
        writer.append(Line::Chat(&first));
        let segment = writer.take();
        // This one refers to the first's messages.
        let mut second = first.clone();
        second.id = Some("chatcmpl-2".into());
        writer.append(Line::Chat(&second));
        assert!(writer.gathered().contains("message_pieces"));
        writer.give_up(&segment);
        assert_eq!(writer.dropped.load(Ordering::Relaxed), 2);
        assert_eq!(writer.gathered(), "");
        // Nothing refers to a chat logged before.
        let mut third = first.clone();
        third.id = Some("chatcmpl-3".into());
        writer.append(Line::Chat(&third));
        let line = writer.gathered();
        assert!(
            line.contains("\"messages\"") && !line.contains("message_pieces"),
            "{line}"
        );
    }

    /// Turn `turns` of conversation `conversation`: a long system prompt
    /// every conversation shares, then `turns` long questions.
    fn turn(id: &str, conversation: usize, turns: usize) -> ChatEvent {
        use lakehouse_providers::openai::{Message, Role};
        let system = Message::text(Role::System, format!("shared {}", "s".repeat(200)));
        let questions = (0..turns).map(|t| {
            Message::text(
                Role::User,
                format!(
                    "conversation {conversation}, question {t} {}",
                    "q".repeat(200)
                ),
            )
        });
        let mut chat = chat(1.0);
        chat.id = Some(id.into());
        chat.messages = Some(Arc::new(std::iter::once(system).chain(questions).collect()));
        chat
    }

    /// Reads `text` back as the log's reader does, asserting that each chat
    /// has the messages it was sent with; returns how many chats it read.
    fn read_back_whole(text: &str) -> usize {
        let mut resolver = super::super::Resolver::default();
        let mut read = 0;
        for line in text.lines() {
            let super::super::Record::Chat(mut chat) = serde_json::from_str(line).unwrap() else {
                panic!("{line}");
            };
            resolver.resolve(&mut chat);
            let id = chat.id.clone().unwrap();
            let (conversation, turns) = id["chatcmpl-".len()..].split_once('-').unwrap();
            let sent = turn(&id, conversation.parse().unwrap(), turns.parse().unwrap());
            assert!(chat.messages.is_some(), "{id} names a chat not in the log");
            assert_eq!(
                serde_json::to_value(&chat.messages).unwrap(),
                serde_json::to_value(&sent.messages).unwrap(),
                "{id}"
            );
            read += 1;
        }
        read
    }

    const THREADS: usize = 4;
    const TURNS: usize = 30;

    /// Appends `TURNS` turns of one conversation on each of `THREADS`
    /// threads, after a first chat (conversation `THREADS`) on this one.
    fn append_from_threads(writer: &LogWriter, beside: impl FnOnce(&AtomicU64) + Send) {
        writer.append(Line::Chat(&turn(
            &format!("chatcmpl-{THREADS}-1"),
            THREADS,
            1,
        )));
        let appending = AtomicU64::new(THREADS as u64);
        std::thread::scope(|scope| {
            for conversation in 0..THREADS {
                let appending = &appending;
                scope.spawn(move || {
                    for turns in 1..=TURNS {
                        let id = format!("chatcmpl-{conversation}-{turns}");
                        writer.append(Line::Chat(&turn(&id, conversation, turns)));
                    }
                    appending.fetch_sub(1, Ordering::Release);
                });
            }
            scope.spawn(|| beside(&appending));
        });
    }

    #[test]
    fn chats_appended_from_many_threads_refer_across_them_and_read_back_whole() {
        let writer = LogWriter::default();
        append_from_threads(&writer, |_| {});
        let text = writer.gathered();
        assert_eq!(read_back_whole(&text), THREADS * TURNS + 1);
        // Every turn refers to the one before; each conversation's first
        // refers to another's chat for the prompt they share.
        assert_eq!(text.matches("message_pieces").count(), THREADS * TURNS);
        for line in text.lines() {
            let line: serde_json::Value = serde_json::from_str(line).unwrap();
            let id = line["id"].as_str().unwrap();
            if id.ends_with("-1") && id != format!("chatcmpl-{THREADS}-1") {
                let of = line["message_pieces"][0]["earlier"]["of"].as_str().unwrap();
                let conversation = |id: &str| id.rsplit_once('-').unwrap().0.to_owned();
                assert_ne!(conversation(of), conversation(id), "{line}");
            }
        }
    }

    #[test]
    fn segments_given_up_while_threads_append_leave_no_line_naming_their_chats() {
        let writer = LogWriter::default();
        append_from_threads(&writer, |appending| {
            let mut given_up = 0;
            while appending.load(Ordering::Acquire) > 0 && given_up < 8 {
                let segment = writer.take();
                if segment.lines > 0 {
                    writer.give_up(&segment);
                    given_up += 1;
                }
                std::thread::yield_now();
            }
        });
        let read = read_back_whole(&writer.gathered());
        let dropped = writer.dropped.load(Ordering::Relaxed) as usize;
        assert_eq!(read + dropped, THREADS * TURNS + 1);
    }

    #[test]
    fn lines_after_an_indexed_chat_on_the_same_thread_carry_nothing_of_it() {
        let writer = LogWriter::default();
        writer.append(Line::Chat(&turn("chatcmpl-0-2", 0, 2)));
        writer.append(Line::Rating {
            id: "chatcmpl-0-2",
            rating: 1.0,
            at_ms: 5,
        });
        let mut one = chat(2.0);
        one.messages = Some(Arc::new(vec![lakehouse_providers::openai::Message::text(
            lakehouse_providers::openai::Role::User,
            "one",
        )]));
        writer.append(Line::Chat(&one));
        // No id: written, never referred to.
        let mut anonymous = turn("x", 1, 3);
        anonymous.id = None;
        writer.append(Line::Chat(&anonymous));
        writer.append(Line::Chat(&turn("chatcmpl-1-4", 1, 4)));
        let text = writer.gathered();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[1]["kind"], "rating");
        assert_eq!(lines[2]["messages"][0]["content"], "one");
        assert_eq!(
            lines[3]["message_pieces"][0]["earlier"]["of"],
            "chatcmpl-0-2"
        );
        let pieces = lines[4]["message_pieces"].to_string();
        assert!(!pieces.contains("\"of\":null"), "{pieces}");
        assert_eq!(
            lines[4]["message_pieces"][0]["earlier"]["of"],
            "chatcmpl-0-2"
        );
    }

    #[test]
    fn a_line_whose_pieces_name_a_segment_given_up_since_is_written_whole() {
        let writer = LogWriter::default();
        writer.append(Line::Chat(&turn("chatcmpl-1", 0, 2)));
        let segment = writer.take();
        // Encoded while its first turn's segment is being written...
        let second = turn("chatcmpl-2", 0, 3);
        let mut encoding = Encoding::default();
        writer.encode(&Line::Chat(&second), &mut encoding).unwrap();
        assert!(String::from_utf8_lossy(&encoding.line).contains("message_pieces"));
        // ... and added after it was given up.
        writer.give_up(&segment);
        writer.add(&Line::Chat(&second), &mut encoding);
        let line = writer.gathered();
        assert!(
            line.contains("\"messages\"") && !line.contains("message_pieces"),
            "{line}"
        );
        // It is remembered: the next turn refers to it.
        writer.append(Line::Chat(&turn("chatcmpl-3", 0, 4)));
        assert!(writer.gathered().contains("\"of\":\"chatcmpl-2\""));
    }

    #[tokio::test]
    async fn a_refused_segment_is_written_again_by_itself_under_its_key() {
        let (root, objects) = crate::observer::tests::blocked_store();
        let writer = Arc::new(LogWriter::default());
        let timing = Timing {
            linger: Duration::from_millis(1),
            first_backoff: Duration::from_millis(10),
            close_wait: Duration::from_secs(5),
        };
        tokio::spawn(write_loop(
            JsonlLog::new(objects.clone(), super::super::LOG),
            writer.clone(),
            timing,
        ));
        let mut segments = writer.segments.subscribe();
        writer.append(Line::Chat(&chat(1.0)));
        // Acknowledged after the first attempt, refused.
        writer.flush().await;
        assert!(writer.failures.load(Ordering::Relaxed) >= 1);
        assert_eq!(*segments.borrow(), 0);

        // With no new line and no flush, the wait ends and it is written.
        std::fs::remove_file(root.join(super::super::LOG)).unwrap();
        tokio::time::timeout(Duration::from_secs(60), segments.wait_for(|n| *n == 1))
            .await
            .unwrap()
            .unwrap();
        writer.append(Line::Chat(&chat(2.0)));
        tokio::time::timeout(Duration::from_secs(60), segments.wait_for(|n| *n == 2))
            .await
            .unwrap()
            .unwrap();
        let log = JsonlLog::new(objects.clone(), super::super::LOG);
        let replay = log.replay::<serde_json::Value>().await.unwrap();
        let latencies: Vec<f64> = replay
            .records
            .iter()
            .map(|r| r["latency_ms"].as_f64().unwrap())
            .collect();
        assert_eq!(latencies, [1.0, 2.0], "each line once, in order");
        assert_eq!(writer.dropped.load(Ordering::Relaxed), 0);
    }

    /// A store whose log folder is blocked (see `blocked_store`), a writer
    /// keeping refused segments in `spill` at the end, and its task; the
    /// first write is retried only after an hour.
    fn blocked(
        spill: PathBuf,
    ) -> (
        PathBuf,
        Objects,
        Arc<LogWriter>,
        tokio::task::JoinHandle<()>,
    ) {
        let (root, objects) = crate::observer::tests::blocked_store();
        let writer = Arc::new(LogWriter::new(Some(spill), 10));
        let timing = Timing {
            linger: Duration::from_millis(1),
            first_backoff: Duration::from_secs(3600),
            close_wait: Duration::from_secs(5),
        };
        let log = JsonlLog::new(objects.clone(), super::super::LOG);
        let task = tokio::spawn(write_loop(log, writer.clone(), timing));
        (root, objects, writer, task)
    }

    #[tokio::test]
    async fn segments_kept_at_the_end_stay_local_together_and_are_written_at_the_next_start() {
        let spill_dir = std::env::temp_dir().join(lakehouse_providers::openai::new_id("spill-"));
        let (root, objects, writer, task) = blocked(spill_dir.clone());
        writer.append(Line::Chat(&turn("chatcmpl-0-2", 0, 2)));
        writer.flush().await; // refused, to be written again in an hour
        // Refers to the first chat's messages.
        writer.append(Line::Chat(&turn("chatcmpl-0-3", 0, 3)));
        assert!(writer.gathered().contains("message_pieces"));
        // The store takes writes again, but the end does not wait out the
        // hour: the refused segment is kept, and so is the one after it,
        // which must not reach the store before it.
        std::fs::remove_file(root.join(super::super::LOG)).unwrap();
        writer.close();
        writer.flush().await;
        task.await.unwrap();
        assert_eq!(writer.spilled.load(Ordering::Relaxed), 2);
        assert_eq!(writer.dropped.load(Ordering::Relaxed), 0);
        let in_store = objects.list(super::super::LOG).await.unwrap();
        assert!(in_store.is_empty(), "{in_store:?}");
        let mut names: Vec<String> = std::fs::read_dir(&spill_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names.len(), 2, "{names:?}");
        // The first refused write was in fact stored (a timeout after the
        // PUT); and a copy of it half written when an earlier end was cut
        // short is not a segment.
        let first = std::fs::read(spill_dir.join(&names[0])).unwrap();
        let first_key = format!("{}/{}", super::super::LOG, names[0]);
        objects.put(&first_key, first.clone().into()).await.unwrap();
        std::fs::write(spill_dir.join("0.jsonl.partial"), &first).unwrap();

        // The next start.
        let observer =
            crate::observer::Observer::open(objects.clone(), Some(spill_dir.clone()), 10, None)
                .await
                .unwrap();
        let stats = observer.stats();
        assert_eq!((stats.restored, stats.skipped_lines), (2, 0), "{stats:?}");
        let chats = observer.history().await.unwrap();
        let ids: Vec<&str> = chats.iter().map(|c| c.id.as_deref().unwrap()).collect();
        assert_eq!(ids, ["chatcmpl-0-2", "chatcmpl-0-3"], "each once, in order");
        let sent = turn("chatcmpl-0-3", 0, 3);
        assert_eq!(
            serde_json::to_value(&chats[1].messages).unwrap(),
            serde_json::to_value(&sent.messages).unwrap()
        );
        assert_eq!(std::fs::read_dir(&spill_dir).unwrap().count(), 0);
        let keys: Vec<String> = objects
            .list(super::super::LOG)
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        let kept: Vec<String> = names
            .iter()
            .map(|n| format!("{}/{n}", super::super::LOG))
            .collect();
        assert_eq!(keys, kept, "under the keys they were refused under");
        let log = JsonlLog::new(objects, super::super::LOG);
        assert_eq!(restore_spilled(&log, &spill_dir).await, 0);
    }

    #[tokio::test]
    async fn a_write_at_the_end_to_a_store_that_does_not_answer_is_waited_on_briefly_then_kept() {
        use object_store::throttle::{ThrottleConfig, ThrottledStore};
        let spill_dir = std::env::temp_dir().join(lakehouse_providers::openai::new_id("spill-"));
        // A store that takes an hour to answer each write.
        let config = ThrottleConfig {
            wait_put_per_call: Duration::from_secs(3600),
            ..ThrottleConfig::default()
        };
        let hanging = ThrottledStore::new(object_store::memory::InMemory::new(), config);
        let objects = Objects::from_store(Arc::new(hanging), std::env::temp_dir());
        let writer = Arc::new(LogWriter::new(Some(spill_dir.clone()), 10));
        let timing = Timing {
            linger: Duration::from_secs(3600),
            first_backoff: Duration::from_secs(3600),
            close_wait: Duration::from_millis(10),
        };
        let log = JsonlLog::new(objects, super::super::LOG);
        let task = tokio::spawn(write_loop(log, writer.clone(), timing));
        writer.append(Line::Chat(&chat(1.0)));
        writer.close();
        // Not the hour: the end waits for the store `close_wait`.
        tokio::time::timeout(Duration::from_secs(60), writer.flush())
            .await
            .unwrap();
        task.await.unwrap();
        assert_eq!(writer.spilled.load(Ordering::Relaxed), 1);
        assert_eq!(writer.dropped.load(Ordering::Relaxed), 0);
        assert_eq!(std::fs::read_dir(&spill_dir).unwrap().count(), 1);
    }

    #[tokio::test]
    async fn segments_that_cannot_be_kept_either_are_left_out_with_those_after_them() {
        // A file where the spill folder goes.
        let spill_file = std::env::temp_dir().join(lakehouse_providers::openai::new_id("spill-"));
        std::fs::write(&spill_file, "in the way").unwrap();
        let (_root, _objects, writer, task) = blocked(spill_file);
        writer.append(Line::Chat(&chat(1.0)));
        writer.flush().await;
        writer.append(Line::Chat(&chat(2.0)));
        writer.close();
        writer.flush().await;
        task.await.unwrap();
        assert_eq!(writer.spilled.load(Ordering::Relaxed), 0);
        assert_eq!(writer.dropped.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn flushes_are_answered_when_the_task_is_gone() {
        let root = std::env::temp_dir().join(lakehouse_providers::openai::new_id("writer-test-"));
        let log = || {
            JsonlLog::new(
                crate::observer::tests::store_at(root.clone()),
                super::super::LOG,
            )
        };
        let writer = Arc::new(LogWriter::default());
        // Dropped before it ever ran, with a flush waiting.
        let task = tokio::spawn(write_loop(log(), writer.clone(), SERVER));
        let waiting = writer.flush();
        tokio::pin!(waiting);
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        tokio::time::timeout(Duration::from_secs(60), waiting)
            .await
            .unwrap();
        // And flushes after it.
        writer.append(Line::Chat(&chat(1.0)));
        tokio::time::timeout(Duration::from_secs(60), writer.flush())
            .await
            .unwrap();

        // Ended by the observer's end, having written what it gathered.
        let writer = Arc::new(LogWriter::default());
        let task = tokio::spawn(write_loop(log(), writer.clone(), SERVER));
        writer.append(Line::Chat(&chat(2.0)));
        writer.close();
        task.await.unwrap();
        assert_eq!(*writer.segments.borrow(), 1);
        tokio::time::timeout(Duration::from_secs(60), writer.flush())
            .await
            .unwrap();
    }

    fn line_latency(line: &Bytes) -> f64 {
        serde_json::from_slice::<serde_json::Value>(line).unwrap()["latency_ms"]
            .as_f64()
            .unwrap()
    }

    #[test]
    fn the_kept_parts_hold_the_last_chats_lines_and_let_older_ones_go() {
        let writer = LogWriter::new(None, 10);
        let mut placed = Vec::new();
        for i in 0..100 {
            let at = writer.append_chat(Box::new(chat(f64::from(i))), |_, at| at);
            placed.push(at.expect("a short chat's line is kept"));
            // Rating lines are not counted against the chats kept.
            writer.append(Line::Rating {
                id: "chatcmpl-1",
                rating: 1.0,
                at_ms: 0,
            });
            // Segments of three chats.
            if i % 3 == 2 {
                let segment = writer.take();
                writer.written(&segment);
            }
        }
        let lines = writer.kept_lines(&placed);
        let kept: Vec<f64> = lines.iter().flatten().map(line_latency).collect();
        // The last ten, and at most the rest of the oldest part holding them.
        assert!((10..=13).contains(&kept.len()), "{kept:?}");
        let newest: Vec<f64> = (90..100).map(f64::from).collect();
        assert_eq!(kept[kept.len() - 10..], newest[..]);
        assert!(lines[..100 - kept.len()].iter().all(Option::is_none));

        // A segment given up leaves its lines out of the log, not the ring.
        let given_up = writer
            .append_chat(Box::new(chat(100.0)), |_, at| at)
            .unwrap();
        let segment = writer.take();
        writer.give_up(&segment);
        let after = writer
            .append_chat(Box::new(chat(101.0)), |_, at| at)
            .unwrap();
        let read: Vec<f64> = writer
            .kept_lines(&[given_up, after])
            .iter()
            .flatten()
            .map(line_latency)
            .collect();
        assert_eq!(read, [100.0, 101.0]);
    }

    #[test]
    fn a_writer_keeping_no_chats_places_none() {
        let writer = LogWriter::default();
        assert_eq!(writer.append_chat(Box::new(chat(1.0)), |_, at| at), None);
        assert_eq!(latencies(&writer.gathered()), [1.0]);
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
