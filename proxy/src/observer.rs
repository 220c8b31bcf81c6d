//! The observer: every chat (and each model of a fan-out) becomes one
//! [`ChatEvent`], recorded in Prometheus metrics and kept in a bounded ring of
//! recent events (`GET /admin/requests`, the console's request list and the
//! per-provider latency and error figures).
//!
//! The log (`observer/events` in the store) keeps every chat unless
//! `server.observer_retention_days` is set: then segments older than that are
//! deleted at start and every hour after. Captured conversations are logged
//! with each message written once ([`conversations`]).
//!
//! A [`Witness`] follows one chat from its start to its last chunk and records
//! the event exactly once: when it is finished, or when it is dropped (the
//! client went away mid-stream).

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderName};
use lakehouse_providers::ProviderError;
use lakehouse_providers::encode::{write_str, write_u64, write_value};
use lakehouse_providers::openai::Usage;
use serde::{Deserialize, Serialize};

use crate::app::SharedState;
use crate::auth::CALLER;
use crate::error::ApiError;

mod conversations;
mod recent;
mod writer;

pub(crate) use conversations::MessagePiece;
use conversations::{Needed, Prepared, Resolver};
use recent::{Entry, Ring};
use writer::{LineAt, LogWriter};

/// The header carrying the request id, in and out.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// How a witnessed chat ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Error,
    /// The client left before the end.
    Cancelled,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Cancelled => "cancelled",
        }
    }
}

/// One witnessed chat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatEvent {
    pub request_id: String,
    /// The name of the bearer token that made the call, when auth is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    /// The completion id (`chatcmpl-...`), once the chat was planned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Unix time in milliseconds when the request came in.
    pub at_ms: u64,
    pub model: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    pub stream: bool,
    pub outcome: Outcome,
    /// The HTTP status the error mapped to, for failed chats.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_in: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_out: Option<u64>,
    /// What the plugins did (sources, memories, plugin runs), as sent to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lakehouse: Option<serde_json::Value>,
    /// The user's rating, once `/v1/feedback` rated this completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating: Option<f32>,
    /// The messages as sent upstream (plugin context included), when
    /// `[distillation] capture` is on: what distillation exports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Arc<Vec<lakehouse_providers::openai::Message>>>,
    /// The messages as the log holds them when earlier chats hold some of
    /// them (see [`conversations`]): read only, replay resolves them into
    /// `messages`.
    #[serde(default, skip_serializing)]
    pub(crate) message_pieces: Option<Vec<MessagePiece>>,
    /// The assistant's answer text, when captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
}

/// Recent figures of one provider, from the events in the ring.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProviderRecent {
    pub requests: usize,
    pub errors: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl ProviderRecent {
    /// Request count, errors and latency percentiles of `provider`'s chats
    /// among `recent` (newest first, as [`Observer::query`] answers).
    pub fn of(recent: &[ChatEvent], provider: &str) -> Self {
        let mine: Vec<&ChatEvent> = recent
            .iter()
            .filter(|e| e.provider.as_deref() == Some(provider))
            .collect();
        let mut latencies: Vec<f64> = mine
            .iter()
            .filter(|e| e.outcome == Outcome::Ok)
            .map(|e| e.latency_ms)
            .collect();
        latencies.sort_by(f64::total_cmp);
        let pick = |q: f64| -> Option<f64> {
            let last = latencies.len().checked_sub(1)?;
            latencies.get(((last as f64) * q).round() as usize).copied()
        };
        Self {
            requests: mine.len(),
            errors: mine.iter().filter(|e| e.outcome == Outcome::Error).count(),
            p50_ms: pick(0.5),
            p99_ms: pick(0.99),
            last_error: mine.iter().find_map(|e| e.error.clone()),
        }
    }
}

/// Where witnessed events are kept in the store.
pub const LOG: &str = "observer/events";

/// One line of the observer's log, as read back.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Record {
    Chat(Box<ChatEvent>),
    /// A later rating of the chat with completion id `id` (its `at_ms` is
    /// for readers of the log; replay needs only the latest rating).
    Rating {
        id: String,
        rating: f32,
    },
}

/// One line of the observer's log, as written: the same shape as [`Record`],
/// borrowing the chat.
enum Line<'a> {
    Chat(&'a ChatEvent),
    Rating {
        id: &'a str,
        rating: f32,
        at_ms: u64,
    },
}

impl Line<'_> {
    /// Appends the line's JSON: the bytes serde writes for the record
    /// (`kind` first, then the fields, absent options left out), which a test
    /// checks. Every chat writes one, and serde's per-key machinery cost
    /// about 4,000 instructions a line.
    ///
    /// With `prepared` (the chat's messages, prepared by the writer),
    /// messages already logged are written as references to the chats that
    /// hold them (see [`conversations`]).
    fn write_json(&self, out: &mut Vec<u8>, prepared: Option<&Prepared>) -> serde_json::Result<()> {
        match self {
            Self::Chat(event) => event.write_line(out, prepared)?,
            Self::Rating { id, rating, at_ms } => {
                out.extend_from_slice(b"{\"kind\":\"rating\",\"id\":");
                write_str(out, id)?;
                out.extend_from_slice(b",\"rating\":");
                write_value(out, rating)?;
                out.extend_from_slice(b",\"at_ms\":");
                write_u64(out, *at_ms);
            }
        }
        out.push(b'}');
        Ok(())
    }
}

impl ChatEvent {
    /// The log line of the chat without its closing brace.
    fn write_line(&self, out: &mut Vec<u8>, prepared: Option<&Prepared>) -> serde_json::Result<()> {
        /// `key` and `value` when there is a value (serde skips absent options).
        fn optional<T>(
            out: &mut Vec<u8>,
            key: &[u8],
            value: Option<T>,
            write: impl FnOnce(&mut Vec<u8>, T) -> serde_json::Result<()>,
        ) -> serde_json::Result<()> {
            match value {
                Some(value) => {
                    out.extend_from_slice(key);
                    write(out, value)
                }
                None => Ok(()),
            }
        }
        let number = |out: &mut Vec<u8>, n: u64| {
            write_u64(out, n);
            Ok(())
        };
        out.extend_from_slice(b"{\"kind\":\"chat\",\"request_id\":");
        write_str(out, &self.request_id)?;
        optional(out, b",\"caller\":", self.caller.as_deref(), write_str)?;
        optional(out, b",\"id\":", self.id.as_deref(), write_str)?;
        out.extend_from_slice(b",\"at_ms\":");
        write_u64(out, self.at_ms);
        out.extend_from_slice(b",\"model\":");
        write_str(out, &self.model)?;
        optional(out, b",\"provider\":", self.provider.as_deref(), write_str)?;
        out.extend_from_slice(if self.stream {
            b",\"stream\":true,\"outcome\":\""
        } else {
            b",\"stream\":false,\"outcome\":\""
        });
        out.extend_from_slice(self.outcome.as_str().as_bytes());
        out.push(b'"');
        optional(out, b",\"status\":", self.status.map(u64::from), number)?;
        optional(out, b",\"error\":", self.error.as_deref(), write_str)?;
        out.extend_from_slice(b",\"latency_ms\":");
        write_ms(out, self.latency_ms)?;
        optional(out, b",\"ttft_ms\":", self.ttft_ms, write_ms)?;
        optional(out, b",\"tokens_in\":", self.tokens_in, number)?;
        optional(out, b",\"tokens_out\":", self.tokens_out, number)?;
        optional(
            out,
            b",\"lakehouse\":",
            self.lakehouse.as_ref(),
            write_value,
        )?;
        optional(out, b",\"rating\":", self.rating.as_ref(), write_value)?;
        match (self.messages.as_deref(), prepared) {
            (Some(messages), Some(prepared)) => prepared.write(out, messages)?,
            (messages, _) => optional(out, b",\"messages\":", messages, write_value)?,
        }
        optional(out, b",\"answer\":", self.answer.as_deref(), write_str)
    }
}

/// A figure in milliseconds, as serde_json writes it. Kept to the
/// microsecond (see [`ms`]), its digits are written by hand: serde's float
/// formatter cost ~200 instructions a figure, two a chat. Any other value
/// goes through serde.
fn write_ms(out: &mut Vec<u8>, ms: f64) -> serde_json::Result<()> {
    let micros = (ms * 1000.0).round();
    if !(ms.is_sign_positive() && ms < 1e12 && micros / 1000.0 == ms) {
        return write_value(out, &ms);
    }
    let micros = micros as u64;
    write_u64(out, micros / 1000);
    let fraction = micros % 1000;
    let digits = [fraction / 100, fraction / 10 % 10, fraction % 10].map(|d| b'0' + d as u8);
    // Shortest form, as serde writes it: `12.0`, `12.3`, `12.345`.
    let kept = 3 - digits.iter().rev().take_while(|&&d| d == b'0').count();
    out.push(b'.');
    out.extend_from_slice(&digits[..kept.max(1)]);
    Ok(())
}

/// How often a running server looks for segments past the retention.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// Which events to return.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub model: Option<String>,
    pub provider: Option<String>,
    /// Unix milliseconds, inclusive.
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    /// Only rated events at or above this rating.
    pub min_rating: Option<f32>,
    /// Only rated events at or below this rating.
    pub max_rating: Option<f32>,
}

impl EventFilter {
    fn matches(&self, e: &ChatEvent) -> bool {
        self.model.as_ref().is_none_or(|m| e.model == *m)
            && self
                .provider
                .as_ref()
                .is_none_or(|p| e.provider.as_deref() == Some(p.as_str()))
            && self.since_ms.is_none_or(|t| e.at_ms >= t)
            && self.until_ms.is_none_or(|t| e.at_ms <= t)
            && self
                .min_rating
                .is_none_or(|r| e.rating.is_some_and(|x| x >= r))
            && self
                .max_rating
                .is_none_or(|r| e.rating.is_some_and(|x| x <= r))
    }
}

/// The observer's own health.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ObserverStats {
    /// Events held in memory.
    pub in_memory: usize,
    /// Events read back from the store at start.
    pub replayed: usize,
    /// Unreadable log lines skipped at start.
    pub skipped_lines: u64,
    /// Events (chats and ratings) left out of the log: too much was
    /// waiting to be written, or a refused segment was given up.
    pub dropped: u64,
    /// Events that could not be encoded, and refused segment writes (a
    /// refused segment is written again, after a growing wait).
    pub write_failures: u64,
    /// Log segments written since start.
    pub written_segments: u64,
    /// Log segments deleted because they were older than the retention.
    pub pruned_segments: u64,
    /// Events the store refused when the server last stopped, kept
    /// locally, and written at this start.
    pub restored: u64,
}

/// The bounded ring of recent events, and the writer that appends them to
/// `observer/events` in the store. Recording never waits for the store: past
/// a bound of lines waiting to be written, an event is left out of the log
/// (counted), never the chat.
#[derive(Debug)]
pub struct Observer {
    /// The recent chats ([`recent`]).
    ring: Mutex<Ring>,
    /// Gathers the log's lines, when there is a store.
    writer: Option<Arc<LogWriter>>,
    replayed: usize,
    skipped_lines: u64,
    restored: u64,
    pruned_segments: std::sync::Arc<AtomicU64>,
    /// The store the log lives in, when there is one.
    objects: Option<lakehouse_retrieval::objects::Objects>,
}

impl Drop for Observer {
    /// The writer writes what is gathered, then ends.
    fn drop(&mut self) {
        if let Some(writer) = &self.writer {
            writer.close();
        }
    }
}

/// Chats from log records (in log order), oldest first, each with its
/// messages and its latest rating.
fn fold(records: Vec<Record>) -> Vec<ChatEvent> {
    let mut ratings: std::collections::HashMap<String, f32> = Default::default();
    let mut chats = Vec::new();
    let mut resolver = Resolver::default();
    for record in records {
        match record {
            Record::Chat(mut e) => {
                resolver.resolve(&mut e);
                chats.push(*e);
            }
            Record::Rating { id, rating, .. } => {
                ratings.insert(id, rating);
            }
        }
    }
    resolver.warn_unresolved();
    for e in &mut chats {
        if let Some(r) = e.id.as_ref().and_then(|id| ratings.get(id)) {
            e.rating = Some(*r);
        }
    }
    chats
}

impl Observer {
    /// A ring in memory only.
    pub fn new(capacity: usize) -> Self {
        Self {
            ring: Mutex::new(Ring::new(capacity)),
            writer: None,
            replayed: 0,
            skipped_lines: 0,
            restored: 0,
            pruned_segments: std::sync::Arc::default(),
            objects: None,
        }
    }

    /// Deletes the log's segments older than `retention` (when set), replays
    /// the end of the log into the ring (the newest `capacity` chats, with
    /// their latest ratings; unreadable lines skipped and counted), and starts
    /// the writer and, with a retention, the hourly pruning. Only the segments
    /// the ring needs are read, newest first: the log grows with every chat,
    /// and a start that read it all took 20 s (and held it all in memory) once
    /// it reached 1.5 GB. The ring's captured conversations may name earlier
    /// chats: those are read too (a chain reaches back at most an hour; the
    /// read stops at twice that past the oldest chat naming one).
    ///
    /// `spill` is the local folder for segments the store still refuses
    /// when the observer is closed; those kept there last time are written
    /// first.
    pub async fn open(
        objects: lakehouse_retrieval::objects::Objects,
        spill: Option<std::path::PathBuf>,
        capacity: usize,
        retention: Option<Duration>,
    ) -> Result<Self, lakehouse_memory::MemoryError> {
        let capacity = capacity.max(1);
        let log = lakehouse_memory::log::JsonlLog::new(objects.clone(), LOG);
        let mut observer = Self::new(capacity);
        if let Some(dir) = &spill {
            observer.restored = writer::restore_spilled(&log, dir).await;
            if observer.restored > 0 {
                tracing::info!(
                    "observer: wrote {} events the store refused when the server last stopped",
                    observer.restored
                );
            }
        }
        if let Some(retention) = retention {
            // Before the replay, so that no expired chat reaches the ring.
            prune(&log, retention, &observer.pruned_segments).await;
        }
        let mut newest_first = Vec::new();
        // Chats older than the ring's that its chats' pieces name, newest first.
        let mut named = Vec::new();
        let mut needed = Needed::default();
        // Read backwards, the first rating met for a chat is its latest.
        let mut ratings = std::collections::HashMap::new();
        let skipped = log
            .replay_newest::<Record>(|records| {
                for record in records.into_iter().rev() {
                    match record {
                        Record::Chat(e) => {
                            let is_named = needed.take(&e);
                            if newest_first.len() < capacity {
                                needed.keep(&e);
                                newest_first.push(*e);
                            } else if is_named {
                                needed.keep(&e);
                                named.push(*e);
                            }
                        }
                        Record::Rating { id, rating } => {
                            ratings.entry(id).or_insert(rating);
                        }
                    }
                }
                if newest_first.len() >= capacity && needed.done() {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .await?;
        // Pieces name earlier chats: resolved oldest first. The named chats
        // are needed only for that, and dropped once resolved.
        let mut resolver = Resolver::for_chats(named.iter().chain(&newest_first));
        for mut e in named.into_iter().rev() {
            resolver.resolve(&mut e);
        }
        for e in newest_first.iter_mut().rev() {
            resolver.resolve(e);
        }
        resolver.warn_unresolved();
        let mut ring = Ring::new(capacity);
        for mut e in newest_first.into_iter().rev() {
            if let Some(r) = e.id.as_ref().and_then(|id| ratings.get(id)) {
                e.rating = Some(*r);
            }
            ring.push(Entry::Whole(Box::new(e)));
        }
        observer.replayed = ring.len();
        observer.ring = Mutex::new(ring);
        observer.skipped_lines = skipped;
        let writer = Arc::new(LogWriter::new(spill, capacity));
        tokio::spawn(writer::write_loop(log, writer.clone(), writer::SERVER));
        if let Some(retention) = retention {
            tokio::spawn(retention_loop(
                lakehouse_memory::log::JsonlLog::new(objects.clone(), LOG),
                retention,
                observer.pruned_segments.clone(),
                Arc::downgrade(&writer),
                hourly(),
            ));
        }
        observer.writer = Some(writer);
        observer.objects = Some(objects);
        Ok(observer)
    }

    /// Every witnessed chat, oldest first, with its rating: the whole log
    /// (after a flush), or the ring for an observer without a store.
    pub async fn history(&self) -> Result<Vec<ChatEvent>, lakehouse_memory::MemoryError> {
        let Some(objects) = &self.objects else {
            let mut events = self.query(usize::MAX, &EventFilter::default());
            events.reverse();
            return Ok(events);
        };
        self.flush().await;
        let log = lakehouse_memory::log::JsonlLog::new(objects.clone(), LOG);
        Ok(fold(log.replay::<Record>().await?.records))
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Logs the chat and adds it to the ring: as where its line is when the
    /// writer keeps it, else whole.
    fn record(&self, event: impl Into<Box<ChatEvent>>) {
        let event = event.into();
        // Freed outside the locks: the chat when its line holds it, and the
        // oldest chat.
        let (_spent, _evicted) = match &self.writer {
            Some(writer) => writer.append_chat(event, |event, at| match at {
                Some(at) => {
                    let rating = event.rating;
                    (Some(event), self.ring().push(Entry::Line { at, rating }))
                }
                None => (None, self.ring().push(Entry::Whole(event))),
            }),
            None => (None, self.ring().push(Entry::Whole(event))),
        };
    }

    /// The newest chats of the ring first, at most `limit` of those `keep`
    /// passes, with their numbers in the ring. Lines are read back outside
    /// the ring's lock, and parsed only until `limit` chats are found.
    fn scan(
        &self,
        limit: usize,
        mut keep: impl FnMut(&ChatEvent) -> bool,
    ) -> Vec<(u64, ChatEvent)> {
        enum Seen {
            Line(LineAt, Option<f32>),
            Whole(Box<ChatEvent>),
        }
        let mut seen = Vec::new();
        let mut lines = Vec::new();
        {
            let ring = self.ring();
            let mut whole_kept = 0;
            for (number, entry) in ring.newest_first() {
                if whole_kept >= limit {
                    break;
                }
                match entry {
                    Entry::Line { at, rating } => {
                        lines.push(*at);
                        seen.push((number, Seen::Line(*at, *rating)));
                    }
                    Entry::Whole(e) if keep(e) => {
                        whole_kept += 1;
                        seen.push((number, Seen::Whole(e.clone())));
                    }
                    Entry::Whole(_) => {}
                }
            }
        }
        let mut bytes = match &self.writer {
            Some(writer) if !lines.is_empty() => writer.kept_lines(&lines).into_iter(),
            _ => Vec::new().into_iter(),
        };
        let mut found = Vec::new();
        for (number, seen) in seen {
            if found.len() >= limit {
                break;
            }
            let event = match seen {
                Seen::Whole(e) => *e,
                Seen::Line(at, rating) => {
                    // A line no longer kept is of a chat pushed out since.
                    let Some(line) = bytes.next().flatten() else {
                        continue;
                    };
                    match serde_json::from_slice::<Record>(&line) {
                        Ok(Record::Chat(mut e)) => {
                            e.rating = rating;
                            if !keep(&e) {
                                continue;
                            }
                            *e
                        }
                        Ok(Record::Rating { .. }) | Err(_) => {
                            tracing::warn!("observer: the line at {at:?} is not a chat");
                            continue;
                        }
                    }
                }
            };
            found.push((number, event));
        }
        found
    }

    /// Records a rating of the completion `id` (in memory and in the log).
    pub fn rate(&self, id: &str, rating: f32) {
        let rated = self.scan(1, |e| e.id.as_deref() == Some(id));
        if let Some((number, _)) = rated.first() {
            match self.ring().get_mut(*number) {
                Some(Entry::Line { rating: r, .. }) => *r = Some(rating),
                Some(Entry::Whole(e)) => e.rating = Some(rating),
                None => {}
            }
        }
        if let Some(writer) = &self.writer {
            writer.append(Line::Rating {
                id,
                rating,
                at_ms: unix_ms(),
            });
        }
    }

    /// Waits until everything recorded so far is written (tests, history).
    pub async fn flush(&self) {
        if let Some(writer) = &self.writer {
            writer.flush().await;
        }
    }

    /// Writes what was recorded and ends the writer (shutdown): what the
    /// store refuses is kept in the spill folder, when there is one, for
    /// the next start. Nothing recorded after is written.
    pub async fn close(&self) {
        if let Some(writer) = &self.writer {
            writer.close();
            // Answered once the writer has made its last attempts and ended.
            writer.flush().await;
        }
    }

    pub fn stats(&self) -> ObserverStats {
        ObserverStats {
            in_memory: self.ring().len(),
            replayed: self.replayed,
            skipped_lines: self.skipped_lines,
            dropped: self
                .writer
                .as_ref()
                .map_or(0, |w| w.dropped.load(Ordering::Relaxed)),
            write_failures: self
                .writer
                .as_ref()
                .map_or(0, |w| w.failures.load(Ordering::Relaxed)),
            written_segments: self.writer.as_ref().map_or(0, |w| *w.segments.borrow()),
            pruned_segments: self.pruned_segments.load(Ordering::Relaxed),
            restored: self.restored,
        }
    }

    /// The newest events first, at most `limit`, that pass `filter`.
    pub fn query(&self, limit: usize, filter: &EventFilter) -> Vec<ChatEvent> {
        self.scan(limit, |e| filter.matches(e))
            .into_iter()
            .map(|(_, e)| e)
            .collect()
    }

    /// The newest events first, at most `limit`, optionally of one model or provider.
    pub fn recent(
        &self,
        limit: usize,
        model: Option<&str>,
        provider: Option<&str>,
    ) -> Vec<ChatEvent> {
        let filter = EventFilter {
            model: model.map(str::to_owned),
            provider: provider.map(str::to_owned),
            ..EventFilter::default()
        };
        self.query(limit, &filter)
    }
}

/// Deletes the segments older than `retention`, counting them in `pruned`.
async fn prune(log: &lakehouse_memory::log::JsonlLog, retention: Duration, pruned: &AtomicU64) {
    let cutoff = SystemTime::now()
        .checked_sub(retention)
        .unwrap_or(UNIX_EPOCH);
    match log.prune_before(cutoff).await {
        Ok(0) => {}
        Ok(removed) => {
            pruned.fetch_add(removed as u64, Ordering::Relaxed);
            tracing::info!("observer: deleted {removed} log segments past the retention");
        }
        Err(e) => tracing::warn!("observer: retention could not list the log: {e}"),
    }
}

/// [`prune`] at every tick, for as long as the observer whose writer `alive`
/// watches exists (and `ticks` goes on).
async fn retention_loop(
    log: lakehouse_memory::log::JsonlLog,
    retention: Duration,
    pruned: std::sync::Arc<AtomicU64>,
    alive: std::sync::Weak<LogWriter>,
    ticks: impl futures::Stream<Item = ()>,
) {
    let mut ticks = std::pin::pin!(ticks);
    while futures::StreamExt::next(&mut ticks).await.is_some() {
        if alive.upgrade().is_none_or(|writer| writer.is_closed()) {
            return;
        }
        prune(&log, retention, &pruned).await;
    }
}

/// A tick every [`RETENTION_EVERY`], the first one period from now (start
/// itself prunes before the replay).
fn hourly() -> impl futures::Stream<Item = ()> {
    let first = tokio::time::Instant::now() + RETENTION_EVERY;
    let mut every = tokio::time::interval_at(first, RETENTION_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    futures::stream::unfold(every, |mut every| async move {
        every.tick().await;
        Some(((), every))
    })
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Follows one chat and records it once, in the metrics and the observer.
pub(crate) struct Witness {
    state: SharedState,
    started: Instant,
    /// Behind a pointer, the witness moves with the chat's futures at the
    /// size of a few words rather than of the whole event.
    event: Option<Box<ChatEvent>>,
    first_token: Option<Duration>,
}

impl Witness {
    pub(crate) fn new(state: &SharedState, headers: &HeaderMap, model: &str, stream: bool) -> Self {
        let request_id = headers
            .get(&REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let caller = headers
            .get(&CALLER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let at_ms = unix_ms();
        // Witnessed before validation refuses it: a model id past the limit is
        // not kept (the refusal names its length).
        let model = if model.len() <= lakehouse_providers::openai::MAX_MODEL_ID {
            model
        } else {
            "(too long)"
        };
        Self {
            state: state.clone(),
            started: Instant::now(),
            first_token: None,
            event: Some(Box::new(ChatEvent {
                request_id,
                caller,
                id: None,
                at_ms,
                model: model.to_owned(),
                provider: None,
                stream,
                outcome: Outcome::Cancelled,
                status: None,
                error: None,
                latency_ms: 0.0,
                ttft_ms: None,
                tokens_in: None,
                tokens_out: None,
                lakehouse: None,
                rating: None,
                messages: None,
                message_pieces: None,
                answer: None,
            })),
        }
    }

    /// The event being filled in; `None` once recorded or handed over.
    fn event_mut(&mut self) -> Option<&mut ChatEvent> {
        self.event.as_deref_mut()
    }

    /// Keeps the conversation for distillation (only called when capture is
    /// on): shared with the upstream call, not copied.
    pub(crate) fn conversation(
        &mut self,
        messages: &Arc<Vec<lakehouse_providers::openai::Message>>,
    ) {
        if let Some(e) = self.event_mut() {
            e.messages = Some(Arc::clone(messages));
        }
    }

    /// Keeps the assembled answer, when the conversation is being captured.
    pub(crate) fn answer(&mut self, text: &str) {
        if let Some(e) = self.event_mut().filter(|e| e.messages.is_some()) {
            e.answer = Some(text.to_owned());
        }
    }

    pub(crate) fn routed(&mut self, id: &str, provider: &str) {
        if let Some(e) = self.event_mut() {
            e.id = Some(id.to_owned());
            e.provider = Some(provider.to_owned());
        }
    }

    pub(crate) fn first_chunk(&mut self, lakehouse: Option<&serde_json::Value>) {
        let elapsed = self.started.elapsed();
        self.first_token = Some(elapsed);
        if let Some(e) = self.event_mut() {
            e.ttft_ms = Some(ms(elapsed));
            e.lakehouse = lakehouse.cloned();
        }
    }

    pub(crate) fn usage(&mut self, usage: &Usage) {
        if let Some(e) = self.event_mut() {
            e.tokens_in = Some(usage.prompt_tokens);
            e.tokens_out = Some(usage.completion_tokens);
        }
    }

    /// Counts an upstream failure by its kind (the chat's outcome is recorded separately).
    pub(crate) fn upstream_error(&self, error: &ProviderError) {
        let provider = self
            .event
            .as_ref()
            .and_then(|e| e.provider.as_deref())
            .unwrap_or("unknown");
        self.state
            .metrics
            .upstream_errors
            .with(&[provider, error.kind_label()])
            .add(1);
    }

    /// Hands the chat over to a new witness, leaving this one empty (it records nothing).
    pub(crate) fn take(&mut self) -> Witness {
        Witness {
            state: self.state.clone(),
            started: self.started,
            event: self.event.take(),
            first_token: self.first_token,
        }
    }

    pub(crate) fn succeeded(mut self) {
        self.finish(Outcome::Ok, None);
    }

    pub(crate) fn failed(mut self, error: &ApiError) {
        self.finish(Outcome::Error, Some(error));
    }

    fn finish(&mut self, outcome: Outcome, error: Option<&ApiError>) {
        let Some(mut event) = self.event.take() else {
            return;
        };
        let elapsed = self.started.elapsed();
        event.outcome = outcome;
        event.latency_ms = ms(elapsed);
        if let Some(error) = error {
            event.status = Some(error.status.as_u16());
            event.error = Some(error.message.clone());
        }
        let metrics = &self.state.metrics;
        // Chats refused before routing have no provider; they are still
        // counted, under no model either: the names of models that do not
        // exist are the client's to choose, and each would be a series.
        let (provider, model) = match event.provider.as_deref() {
            Some(provider) => (provider, event.model.as_str()),
            None => ("none", "none"),
        };
        let chats = metrics.chats.with(&[provider, model]);
        chats.request(event.stream, outcome.as_str());
        if event.provider.is_some() {
            chats.duration(event.stream, elapsed);
        }
        if let Some(ttft) = self.first_token {
            chats.time_to_first_token(ttft);
        }
        if let (Some(tokens_in), Some(tokens_out)) = (event.tokens_in, event.tokens_out) {
            chats.tokens(tokens_in, tokens_out);
            if let Some(caller) = &event.caller {
                self.state
                    .auth
                    .charge(caller, tokens_in.saturating_add(tokens_out));
            }
        }
        tracing::debug!(
            model = %event.model,
            provider,
            outcome = outcome.as_str(),
            latency_ms = event.latency_ms,
            "chat finished"
        );
        self.state.observer.record(event);
    }
}

impl Drop for Witness {
    /// A witness dropped unfinished is a chat whose client went away.
    fn drop(&mut self) {
        self.finish(Outcome::Cancelled, None);
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(super) fn event(provider: &str, outcome: Outcome, latency_ms: f64) -> ChatEvent {
        ChatEvent {
            request_id: "req".into(),
            caller: None,
            id: None,
            at_ms: 0,
            model: format!("{provider}/m"),
            provider: Some(provider.into()),
            stream: false,
            outcome,
            status: None,
            error: (outcome == Outcome::Error).then(|| "boom".to_owned()),
            latency_ms,
            ttft_ms: None,
            tokens_in: None,
            tokens_out: None,
            lakehouse: None,
            rating: None,
            messages: None,
            message_pieces: None,
            answer: None,
        }
    }

    /// The file name of a log segment written on 2001-01-01 (its name starts
    /// with the time in microseconds).
    const SEGMENT_FROM_2001: &str = "00000978307200000000-old-000000.jsonl";

    /// A store in a new temporary folder.
    fn temp_store() -> lakehouse_retrieval::objects::Objects {
        store_at(std::env::temp_dir().join(lakehouse_providers::openai::new_id("observer-test-")))
    }

    pub(super) fn store_at(root: std::path::PathBuf) -> lakehouse_retrieval::objects::Objects {
        use lakehouse_retrieval::objects::{Caps, Objects, StoreConfig};
        Objects::open(&StoreConfig::Local {
            root,
            caps: Caps::default(),
        })
        .unwrap()
    }

    /// A new local store, and its root, with a file where the log's folder
    /// goes: no segment can be written until the file (`root/LOG`) is removed.
    pub(super) fn blocked_store() -> (std::path::PathBuf, lakehouse_retrieval::objects::Objects) {
        let root = std::env::temp_dir().join(lakehouse_providers::openai::new_id("observer-test-"));
        let objects = store_at(root.clone());
        std::fs::create_dir_all(root.join("observer")).unwrap();
        std::fs::write(root.join(LOG), "in the way").unwrap();
        (root, objects)
    }

    /// The writer gathers chats for a while after the first without watching
    /// the queue; a flush must end that wait. Here the wait is an hour, so
    /// only the flush can end it within the test's bound.
    /// An observer writing to `objects` whose writer waits an hour for more
    /// chats after the first: only a flush ends the wait.
    fn lingering_observer(objects: &lakehouse_retrieval::objects::Objects) -> Observer {
        let mut observer = Observer::new(10);
        let writer = Arc::new(LogWriter::default());
        tokio::spawn(writer::write_loop(
            lakehouse_memory::log::JsonlLog::new(objects.clone(), LOG),
            writer.clone(),
            writer::Timing {
                linger: Duration::from_secs(3600),
                first_backoff: Duration::from_secs(3600),
                close_wait: Duration::from_secs(5),
            },
        ));
        observer.writer = Some(writer);
        observer.objects = Some(objects.clone());
        observer
    }

    /// The latencies of the chats in `observer`'s log, in log order.
    async fn logged_latencies(observer: &Observer) -> Vec<f64> {
        let history = observer.history().await.unwrap();
        history.iter().map(|e| e.latency_ms).collect()
    }

    #[tokio::test]
    async fn a_flush_ends_the_writers_wait_for_more_chats() {
        let objects = temp_store();
        let observer = lingering_observer(&objects);
        observer.record(event("kimi", Outcome::Ok, 1.0));
        // The writer takes the chat and starts its wait.
        tokio::task::yield_now().await;
        observer.record(event("kimi", Outcome::Ok, 2.0));
        tokio::time::timeout(Duration::from_secs(60), observer.flush())
            .await
            .expect("the flush ended the writer's wait");
        assert_eq!(logged_latencies(&observer).await, [1.0, 2.0]);
    }

    #[tokio::test]
    async fn a_segment_the_store_refused_is_written_before_the_next_one() {
        let (root, objects) = blocked_store();
        let observer = lingering_observer(&objects);
        observer.record(event("kimi", Outcome::Ok, 1.0));
        observer.flush().await;
        assert_eq!(observer.stats().write_failures, 1);

        std::fs::remove_file(root.join(LOG)).unwrap();
        observer.record(event("kimi", Outcome::Ok, 2.0));
        observer.flush().await;
        assert_eq!(logged_latencies(&observer).await, [1.0, 2.0]);
        // The refused one under its key, then the next.
        assert_eq!(objects.list(LOG).await.unwrap().len(), 2);
        let stats = observer.stats();
        assert_eq!((stats.write_failures, stats.dropped), (1, 0));
    }

    #[tokio::test]
    async fn a_batch_past_a_part_is_one_segment_of_whole_lines() {
        let objects = temp_store();
        let observer = lingering_observer(&objects);
        // Six captured answers of 400 KB: three parts of the segment's.
        let answers: Vec<String> = (0..6u8)
            .map(|i| char::from(b'a' + i).to_string().repeat(400_000))
            .collect();
        for (i, answer) in answers.iter().enumerate() {
            let mut chat = event("kimi", Outcome::Ok, i as f64);
            chat.answer = Some(answer.clone());
            observer.record(chat);
        }
        observer.flush().await;
        let history = observer.history().await.unwrap();
        let kept: Vec<&str> = history.iter().filter_map(|e| e.answer.as_deref()).collect();
        assert_eq!(kept, answers.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(objects.list(LOG).await.unwrap().len(), 1, "one segment");
        assert_eq!(observer.stats().write_failures, 0);
    }

    #[tokio::test]
    async fn a_restart_reads_only_the_end_of_the_log_the_ring_holds() {
        let objects = temp_store();
        // The oldest segment is unreadable: a replay that reached it would count it.
        objects
            .put(
                &format!("{LOG}/00000000000000000000-torn.jsonl"),
                bytes::Bytes::from_static(b"not json\n"),
            )
            .await
            .unwrap();
        let first = Observer::open(objects.clone(), None, 10, None)
            .await
            .unwrap();
        assert_eq!(first.stats().skipped_lines, 1);
        for n in 1..=4 {
            let mut e = event("kimi", Outcome::Ok, f64::from(n));
            e.id = Some(format!("chat-{n}"));
            first.record(e);
            first.flush().await; // one segment per chat
        }
        // Rated after later chats were written: the newest rating wins.
        first.rate("chat-3", 0.2);
        first.rate("chat-4", 0.5);
        first.rate("chat-3", 0.9);
        first.rate("chat-1", 1.0);
        first.flush().await;

        let again = Observer::open(objects, None, 2, None).await.unwrap();
        let stats = again.stats();
        assert_eq!((stats.replayed, stats.skipped_lines), (2, 0), "{stats:?}");
        let ring: Vec<_> = again
            .recent(10, None, None)
            .into_iter()
            .map(|e| (e.id.unwrap(), e.rating))
            .collect();
        assert_eq!(
            ring,
            [
                ("chat-4".to_owned(), Some(0.5)),
                ("chat-3".to_owned(), Some(0.9))
            ]
        );
    }

    /// The messages as JSON, to compare (messages have no `PartialEq`).
    fn messages_json(e: &ChatEvent) -> serde_json::Value {
        serde_json::to_value(&e.messages).unwrap()
    }

    #[tokio::test]
    async fn an_agents_turns_log_each_message_once_and_read_back_whole_after_a_restart() {
        use lakehouse_providers::openai::{Message, Role};
        let objects = temp_store();
        let first = Observer::open(objects.clone(), None, 10, None)
            .await
            .unwrap();
        let said = |what: &str| format!("{what} {}", "x".repeat(2000));
        let mut conversation = vec![Message::text(Role::System, said("system"))];
        let mut sent = Vec::new();
        for turn in 0..8 {
            conversation.push(Message::text(Role::User, said(&format!("question {turn}"))));
            let mut e = event("kimi", Outcome::Ok, f64::from(turn));
            e.id = Some(format!("chatcmpl-{turn}"));
            e.messages = Some(Arc::new(conversation.clone()));
            e.answer = Some(format!("answer {turn}"));
            sent.push(e.clone());
            first.record(e);
            first.flush().await; // one segment per turn
            conversation.push(Message::text(
                Role::Assistant,
                said(&format!("answer {turn}")),
            ));
        }
        let mut logged = String::new();
        for key in objects.list(LOG).await.unwrap() {
            let bytes = objects.get(&key.key).await.unwrap();
            logged.push_str(std::str::from_utf8(&bytes).unwrap());
        }
        // 23 distinct messages of 2 KB; whole conversations would be 8 turns
        // of 1 to 15 messages, 64 in all.
        assert!(logged.len() < 25 * 2100, "{} bytes logged", logged.len());
        assert_eq!(logged.matches("system x").count(), 1);

        let whole = |events: &[ChatEvent]| -> Vec<serde_json::Value> {
            events.iter().map(messages_json).collect()
        };
        assert_eq!(whole(&first.history().await.unwrap()), whole(&sent));
        // After a restart the ring's chats name chats older than the ring's:
        // those are read too, and the ring has every message.
        let again = Observer::open(objects, None, 2, None).await.unwrap();
        let mut ring = again.recent(10, None, None);
        ring.reverse();
        assert_eq!(whole(&ring), whole(&sent[6..]));
    }

    #[tokio::test]
    async fn chats_past_the_retention_are_deleted_before_the_replay() {
        let objects = temp_store();
        // A chat logged in 2001 (by its segment's name), then one logged now.
        let mut old = event("kimi", Outcome::Ok, 1.0);
        old.id = Some("chat-old".into());
        let mut line = Vec::new();
        Line::Chat(&old).write_json(&mut line, None).unwrap();
        line.push(b'\n');
        let old_key = format!("{LOG}/{SEGMENT_FROM_2001}");
        objects.put(&old_key, line.into()).await.unwrap();
        let first = Observer::open(objects.clone(), None, 10, None)
            .await
            .unwrap();
        assert_eq!(
            first.stats().replayed,
            1,
            "without retention the old chat stays"
        );
        let mut new = event("kimi", Outcome::Ok, 2.0);
        new.id = Some("chat-new".into());
        first.record(new);
        first.flush().await;

        let day = Duration::from_secs(86_400);
        let again = Observer::open(objects.clone(), None, 10, Some(day))
            .await
            .unwrap();
        let stats = again.stats();
        assert_eq!((stats.pruned_segments, stats.replayed), (1, 1), "{stats:?}");
        let ids = |events: Vec<ChatEvent>| -> Vec<String> {
            events.into_iter().filter_map(|e| e.id).collect()
        };
        assert_eq!(ids(again.recent(10, None, None)), ["chat-new"]);
        assert_eq!(ids(again.history().await.unwrap()), ["chat-new"]);
        assert!(objects.get_opt(&old_key).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn the_running_retention_prunes_at_each_tick_while_the_observer_lives() {
        let objects = temp_store();
        let old_key = format!("{LOG}/{SEGMENT_FROM_2001}");
        let run = |alive, ticks: usize| {
            let pruned = std::sync::Arc::new(AtomicU64::new(0));
            let task = tokio::spawn(retention_loop(
                lakehouse_memory::log::JsonlLog::new(objects.clone(), LOG),
                Duration::from_secs(86_400),
                pruned.clone(),
                alive,
                futures::stream::iter(std::iter::repeat_n((), ticks)),
            ));
            async move {
                task.await.unwrap();
                pruned.load(Ordering::Relaxed)
            }
        };
        objects.put(&old_key, "{}\n".into()).await.unwrap();

        // The observer is gone: the first tick ends the loop, nothing is deleted.
        let writer = Arc::new(LogWriter::default());
        let gone = Arc::downgrade(&writer);
        drop(writer);
        assert_eq!(run(gone, 3).await, 0);
        // Closed, its writer may still be writing: nothing is deleted either.
        let writer = Arc::new(LogWriter::default());
        writer.close();
        assert_eq!(run(Arc::downgrade(&writer), 3).await, 0);
        assert!(objects.get_opt(&old_key).await.unwrap().is_some());

        // While it lives, each tick prunes: the first deletes, the second finds nothing.
        let writer = Arc::new(LogWriter::default());
        assert_eq!(run(Arc::downgrade(&writer), 2).await, 1);
        assert!(objects.get_opt(&old_key).await.unwrap().is_none());
    }

    /// An observer whose ring holds every chat whole (no store), and one
    /// whose writer keeps the chats' lines for the ring to read back.
    fn both_rings(capacity: usize) -> [Observer; 2] {
        let mut logging = Observer::new(capacity);
        logging.writer = Some(Arc::new(LogWriter::new(None, capacity)));
        [Observer::new(capacity), logging]
    }

    /// How many of the ring's chats are held as where their lines are.
    fn held_as_lines(observer: &Observer) -> usize {
        observer
            .ring()
            .newest_first()
            .filter(|(_, e)| matches!(e, Entry::Line { .. }))
            .count()
    }

    fn as_json(events: &[ChatEvent]) -> Vec<serde_json::Value> {
        events
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .collect()
    }

    #[test]
    fn the_ring_is_bounded_and_newest_first() {
        for observer in both_rings(3) {
            for i in 0..5 {
                observer.record(event("kimi", Outcome::Ok, f64::from(i)));
            }
            let recent = observer.recent(10, None, None);
            let latencies: Vec<f64> = recent.iter().map(|e| e.latency_ms).collect();
            assert_eq!(latencies, vec![4.0, 3.0, 2.0]);
            assert_eq!(observer.recent(1, None, None).len(), 1);
            assert!(observer.recent(10, Some("ollama/m"), None).is_empty());
            assert_eq!(observer.stats().in_memory, 3);
        }
    }

    /// Chats unlike each other in every field the log keeps.
    fn varied_chats(count: usize) -> Vec<ChatEvent> {
        use lakehouse_providers::openai::{Message, Role};
        (0..count)
            .map(|i| {
                let outcome = [Outcome::Ok, Outcome::Error, Outcome::Cancelled][i % 3];
                let mut e = event(["kimi", "ollama"][i % 2], outcome, 1.5 + i as f64);
                e.request_id = format!("req_{i}");
                e.id = Some(format!("chatcmpl-{i}"));
                e.caller = (i % 2 == 0).then(|| "ci".to_owned());
                e.at_ms = 1_700_000_000_000 + i as u64;
                e.stream = i % 2 == 1;
                e.status = (outcome == Outcome::Error).then_some(502);
                e.ttft_ms = Some(0.25 * i as f64);
                e.tokens_in = Some(i as u64);
                e.tokens_out = Some(2 * i as u64);
                e.lakehouse = Some(serde_json::json!({"sources": [{"corpus": "c", "score": 0.5}]}));
                e.messages = Some(Arc::new(vec![Message::text(
                    Role::User,
                    format!("q \"{i}\" é"),
                )]));
                e.answer = Some(format!("answer {i}\n"));
                e
            })
            .collect()
    }

    #[test]
    fn a_ring_reading_kept_lines_answers_the_chats_as_recorded() {
        let chats = varied_chats(7);
        let [whole, lines] = both_rings(5);
        for observer in [&whole, &lines] {
            for chat in &chats {
                observer.record(chat.clone());
            }
        }
        assert_eq!(held_as_lines(&whole), 0);
        assert_eq!(held_as_lines(&lines), 5);
        let expected: Vec<ChatEvent> = chats.iter().rev().take(5).cloned().collect();
        assert_eq!(as_json(&lines.recent(10, None, None)), as_json(&expected));
        assert_eq!(
            as_json(&lines.recent(10, None, None)),
            as_json(&whole.recent(10, None, None))
        );
        // Filters and limits apply to the chats read back.
        let kimi = lines.recent(10, None, Some("kimi"));
        let ids: Vec<_> = kimi.iter().filter_map(|e| e.id.as_deref()).collect();
        assert_eq!(ids, ["chatcmpl-6", "chatcmpl-4", "chatcmpl-2"]);
        assert_eq!(lines.recent(2, None, Some("kimi")).len(), 2);
        assert_eq!(lines.recent(10, Some("ollama/m"), None).len(), 2);
    }

    #[test]
    fn chats_whose_lines_do_not_read_back_alone_are_held_whole_in_order() {
        use lakehouse_providers::openai::{Message, Role};
        let [_, observer] = both_rings(10);
        let long = |t: usize| Message::text(Role::User, format!("turn {t} {}", "x".repeat(300)));
        let mut first = event("kimi", Outcome::Ok, 1.0);
        first.id = Some("chatcmpl-1".into());
        first.messages = Some(Arc::new(vec![long(0), long(1)]));
        // Refers to the first's two messages.
        let mut second = first.clone();
        second.id = Some("chatcmpl-2".into());
        second.latency_ms = 2.0;
        second.messages = Some(Arc::new(vec![long(0), long(1), long(2)]));
        // Longer than the ring reads back.
        let mut third = event("kimi", Outcome::Ok, 3.0);
        third.answer = Some("a".repeat(writer::KEPT_LINE_MAX));
        let fourth = event("kimi", Outcome::Ok, 4.0);
        let chats = [first, second, third, fourth];
        for chat in &chats {
            observer.record(chat.clone());
        }
        let kinds: Vec<bool> = observer
            .ring()
            .newest_first()
            .map(|(_, e)| matches!(e, Entry::Line { .. }))
            .collect();
        assert_eq!(kinds, [true, false, false, true]);
        let expected: Vec<ChatEvent> = chats.iter().rev().cloned().collect();
        assert_eq!(
            as_json(&observer.recent(10, None, None)),
            as_json(&expected)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chats_recorded_from_many_threads_while_segments_are_written_all_read_back() {
        const CAPACITY: usize = 64;
        let objects = temp_store();
        let observer = Observer::open(objects, None, CAPACITY, None).await.unwrap();
        std::thread::scope(|scope| {
            for thread in 0..4 {
                let observer = &observer;
                scope.spawn(move || {
                    for i in 0..3000 {
                        observer.record(event("kimi", Outcome::Ok, f64::from(thread * 10_000 + i)));
                    }
                });
            }
            scope.spawn(|| {
                for _ in 0..200 {
                    let read = observer.query(usize::MAX, &EventFilter::default());
                    assert!(read.len() <= CAPACITY);
                }
            });
        });
        observer.record(event("kimi", Outcome::Ok, -1.0));
        observer.flush().await;
        let recent = observer.query(usize::MAX, &EventFilter::default());
        assert_eq!(recent.len(), CAPACITY, "every chat in the ring reads back");
        assert_eq!(recent[0].latency_ms, -1.0);
        let mut latencies: Vec<f64> = recent.iter().map(|e| e.latency_ms).collect();
        latencies.sort_by(f64::total_cmp);
        latencies.dedup();
        assert_eq!(latencies.len(), CAPACITY);
        assert!(observer.stats().written_segments > 0);
        assert_eq!(held_as_lines(&observer), CAPACITY);
    }

    #[test]
    fn written_lines_read_back_as_records() {
        let mut chat = event("kimi", Outcome::Ok, 1.5);
        chat.id = Some("chatcmpl-1".into());
        let lines = [
            Line::Chat(&chat),
            Line::Rating {
                id: "chatcmpl-1",
                rating: 0.5,
                at_ms: 9,
            },
        ];
        let records: Vec<Record> = lines
            .iter()
            .map(|line| {
                let mut out = Vec::new();
                line.write_json(&mut out, None).unwrap();
                serde_json::from_slice(&out).unwrap()
            })
            .collect();
        let chats = fold(records);
        assert_eq!(chats.len(), 1);
        assert_eq!(chats[0].id.as_deref(), Some("chatcmpl-1"));
        assert_eq!(chats[0].latency_ms, 1.5);
        assert_eq!(chats[0].rating, Some(0.5));
    }

    /// Any text, or text with nothing to escape.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![any::<String>(), "[a-z0-9/-]{0,12}"]
    }

    /// Figures as chats record them (to the microsecond), and any float.
    fn millis() -> impl Strategy<Value = f64> {
        prop_oneof![
            (0u64..100_000_000_000).prop_map(|us| us as f64 / 1000.0),
            any::<f64>(),
        ]
    }

    fn chat_event() -> impl Strategy<Value = ChatEvent> {
        let names = (
            text(),
            proptest::option::of(text()),
            proptest::option::of(text()),
            text(),
            proptest::option::of(text()),
        );
        let figures = (
            any::<u64>(),
            any::<bool>(),
            prop::sample::select(vec![Outcome::Ok, Outcome::Error, Outcome::Cancelled]),
            proptest::option::of(any::<u16>()),
            proptest::option::of(text()),
            millis(),
            proptest::option::of(millis()),
        );
        let extras = (
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>()),
            proptest::option::of(text().prop_map(|t| serde_json::json!({"sources": [t], "n": 1}))),
            proptest::option::of(any::<f32>()),
            proptest::option::of(text().prop_map(|t| {
                vec![
                    serde_json::from_value(serde_json::json!({"role": "user", "content": t}))
                        .unwrap(),
                ]
            })),
            proptest::option::of(text()),
        );
        (names, figures, extras).prop_map(
            |(
                (request_id, caller, id, model, provider),
                (at_ms, stream, outcome, status, error, latency_ms, ttft_ms),
                (tokens_in, tokens_out, lakehouse, rating, messages, answer),
            )| ChatEvent {
                request_id,
                caller,
                id,
                at_ms,
                model,
                provider,
                stream,
                outcome,
                status,
                error,
                latency_ms,
                ttft_ms,
                tokens_in,
                tokens_out,
                lakehouse,
                rating,
                messages: messages.map(Arc::new),
                message_pieces: None,
                answer,
            },
        )
    }

    proptest! {
        #[test]
        fn chat_lines_are_serdes_bytes_with_their_kind_first(event in chat_event()) {
            let fields = serde_json::to_string(&event).unwrap();
            let expected = format!("{{\"kind\":\"chat\",{}", &fields[1..]);
            // Written through the writer's index, a chat with nothing
            // earlier to refer to is the same bytes.
            let index = conversations::MessageIndex::default();
            let mut prepared = Prepared::default();
            if let Some(messages) = event.messages.as_deref() {
                prepared.digest(&index.keys(), event.caller.as_deref(), event.at_ms, messages).unwrap();
                index.plan(&mut prepared, event.at_ms);
            }
            for prepared in [None, Some(&prepared)] {
                let mut ours = Vec::new();
                Line::Chat(&event).write_json(&mut ours, prepared).unwrap();
                prop_assert_eq!(String::from_utf8(ours).unwrap(), expected.clone());
            }
        }

        #[test]
        fn rating_lines_are_serdes_bytes(id in text(), rating in any::<f32>(), at_ms in any::<u64>()) {
            let mut ours = Vec::new();
            Line::Rating { id: &id, rating, at_ms }.write_json(&mut ours, None).unwrap();
            // What the derived, internally tagged encoding wrote: the tag, then the fields.
            let expected = format!(
                "{{\"kind\":\"rating\",\"id\":{},\"rating\":{},\"at_ms\":{at_ms}}}",
                serde_json::to_string(&id).unwrap(),
                serde_json::to_string(&rating).unwrap(),
            );
            prop_assert_eq!(String::from_utf8(ours).unwrap(), expected);
        }
    }

    #[test]
    fn a_rating_leaves_the_logged_chat_as_it_was_and_logs_its_own_line() {
        let writer = Arc::new(LogWriter::new(None, 10));
        let mut observer = Observer::new(10);
        observer.writer = Some(writer.clone());
        let mut chat = event("kimi", Outcome::Ok, 2.0);
        chat.id = Some("chatcmpl-2".into());
        observer.record(chat);
        observer.record(event("kimi", Outcome::Ok, 3.0));
        assert_eq!(held_as_lines(&observer), 2);
        observer.rate("chatcmpl-2", 1.0);
        let recent = observer.recent(2, None, None);
        assert_eq!(recent[1].rating, Some(1.0));
        assert_eq!(recent[0].rating, None);
        assert_eq!(
            observer
                .query(
                    10,
                    &EventFilter {
                        min_rating: Some(0.5),
                        ..EventFilter::default()
                    }
                )
                .len(),
            1
        );
        // A chat no longer in the ring is rated in the log only.
        observer.rate("chatcmpl-gone", 0.5);
        let lines: Vec<Record> = writer
            .gathered()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        match &lines[..] {
            [
                Record::Chat(chat),
                Record::Chat(_),
                Record::Rating { id, rating },
                Record::Rating { .. },
            ] => {
                assert_eq!(chat.rating, None);
                assert_eq!((id.as_str(), *rating), ("chatcmpl-2", 1.0));
            }
            other => panic!("expected the chats, then their ratings: {other:?}"),
        }
    }

    #[test]
    fn provider_figures_count_errors_and_take_percentiles_of_successes() {
        for observer in both_rings(100) {
            for i in 1..=10 {
                observer.record(event("kimi", Outcome::Ok, f64::from(i)));
            }
            let mut older = event("kimi", Outcome::Error, 1000.0);
            older.error = Some("older".into());
            observer.record(older);
            observer.record(event("kimi", Outcome::Error, 1000.0));
            observer.record(event("ollama", Outcome::Ok, 7.0));
            let recent = observer.query(usize::MAX, &EventFilter::default());
            let kimi = ProviderRecent::of(&recent, "kimi");
            assert_eq!(kimi.requests, 12);
            assert_eq!(kimi.errors, 2);
            assert_eq!(kimi.p50_ms, Some(6.0));
            assert_eq!(kimi.p99_ms, Some(10.0));
            assert_eq!(kimi.last_error.as_deref(), Some("boom"));
            let none = ProviderRecent::of(&recent, "openrouter");
            assert_eq!(none.requests, 0);
            assert_eq!(none.p50_ms, None);
        }
    }
}
