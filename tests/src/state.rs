//! Shared state of one fake server: the request log and the cancellation counter.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// One request as the fake received it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Path without the query string, e.g. `/ollama/api/chat`.
    pub path: String,
    /// Headers by lowercase name; repeated headers are joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// The body parsed as JSON; `Null` when empty or not JSON.
    pub body: serde_json::Value,
}

impl Recorded {
    pub(crate) fn new(parts: &Parts, body: &[u8]) -> Self {
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in &parts.headers {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            headers
                .entry(name.as_str().to_ascii_lowercase())
                .and_modify(|v| {
                    v.push_str(", ");
                    v.push_str(&value);
                })
                .or_insert(value);
        }
        Self {
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            headers,
            body: serde_json::from_slice(body).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// Cheap-to-clone handle on the state one fake server shares with its tasks.
#[derive(Clone)]
pub struct FakeState {
    inner: Arc<Inner>,
}

/// Requests kept for inspection: the newest ones, so a benchmark's millions of
/// requests neither grow the fake's memory nor stall it on reallocation.
const KEPT_REQUESTS: usize = 10_000;

struct Inner {
    requests: Mutex<std::collections::VecDeque<Recorded>>,
    cancelled: watch::Sender<u64>,
    canned: Mutex<BTreeMap<String, Canned>>,
    /// Body pieces of streamed answers handed to the connection so far.
    pieces_sent: std::sync::atomic::AtomicU64,
    /// TCP connections accepted so far.
    connections: std::sync::atomic::AtomicU64,
}

/// A fixed answer for every chat naming one model (see [`FakeState::set_canned`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Canned {
    /// The model id as the upstream receives it.
    pub model: String,
    /// Answer text, sent verbatim (split into words when streamed).
    #[serde(default)]
    pub reply: String,
    /// Directives for this model (e.g. `#fault=429`, `#slow_first=5000`); the
    /// prompt's own directives are ignored for it.
    #[serde(default)]
    pub directives: String,
}

impl Default for FakeState {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for FakeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeState")
            .field("requests", &self.requests().len())
            .field("cancelled", &self.cancelled())
            .finish()
    }
}

impl FakeState {
    /// An empty log and a zero counter.
    pub fn new() -> Self {
        let (cancelled, _) = watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                requests: Mutex::new(std::collections::VecDeque::new()),
                cancelled,
                canned: Mutex::new(BTreeMap::new()),
                pieces_sent: std::sync::atomic::AtomicU64::new(0),
                connections: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    /// The requests received so far (the newest 10,000), oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Body pieces (SSE events, NDJSON lines) of streamed answers the
    /// connection has taken so far; it stops growing when the reader stalls.
    pub fn pieces_sent(&self) -> u64 {
        self.inner
            .pieces_sent
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn count_piece(&self) {
        self.inner
            .pieces_sent
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// TCP connections accepted so far (a client that reuses connections opens few).
    pub fn connections(&self) -> u64 {
        self.inner
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn count_connection(&self) {
        self.inner
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Streaming responses the client dropped before the fake finished writing them.
    pub fn cancelled(&self) -> u64 {
        *self.inner.cancelled.borrow()
    }

    /// Waits until `cancelled() >= n` or `timeout` passes; returns `cancelled()`.
    pub async fn wait_cancelled(&self, n: u64, timeout: Duration) -> u64 {
        let mut rx = self.inner.cancelled.subscribe();
        // A timeout or a closed channel both just mean "report what we have".
        let _ = tokio::time::timeout(timeout, rx.wait_for(|count| *count >= n)).await;
        self.cancelled()
    }

    /// From now on, chats naming `canned.model` get `canned`'s answer.
    pub fn set_canned(&self, canned: Canned) {
        self.inner
            .canned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(canned.model.clone(), canned);
    }

    pub(crate) fn canned(&self, model: &str) -> Option<Canned> {
        self.inner
            .canned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(model)
            .cloned()
    }

    pub(crate) fn record(&self, request: Recorded) {
        let mut requests = self
            .inner
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if requests.len() >= KEPT_REQUESTS {
            requests.pop_front();
        }
        requests.push_back(request);
    }

    pub(crate) fn count_cancel(&self) {
        self.inner.cancelled.send_modify(|count| *count += 1);
    }
}
