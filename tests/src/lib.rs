//! Fake upstream LLM servers with fault injection, for Lakehouse's end-to-end tests.
//!
//! One HTTP server imitates every upstream, chosen by path prefix:
//!
//! | prefix | imitates | endpoints |
//! |---|---|---|
//! | `/ollama` | local Ollama (no auth) | `POST /api/chat` (NDJSON), `GET /api/tags` |
//! | `/ollama_cloud` | Ollama Cloud (Bearer) | the same |
//! | `/openrouter` | OpenRouter (Bearer) | `POST /api/v1/chat/completions`, `GET /api/v1/models` |
//! | `/kimi` | Kimi / Moonshot (Bearer) | `POST /v1/chat/completions`, `GET /v1/models` |
//! | `/zen` | OpenCode Zen | `POST /v1/chat/completions`, `/v1/responses` (Bearer), `/v1/messages` (`x-api-key`), `GET /v1/models` (no key) |
//! | `/openai` | plain OpenAI (Bearer) | `POST /v1/chat/completions`, `GET /v1/models` |
//!
//! Every request is recorded ([`FakeUpstream::requests`]) before anything else.
//! `#directives` in the last user message choose the answer: see the table in
//! the `directives` module (`#chunks=N`, `#slow_chunks=MS`, `#slow_first=MS`,
//! `#think`, `#tool`, `#noid`, `#fault=STATUS|midstream|drop|garbage`).
//! A conversation that ends with a tool result gets text even with `#tool`,
//! so agent loops terminate.
//!
//! Control routes (not recorded): `GET /_fake/requests` (JSON array of
//! [`Recorded`]) and `GET /_fake/stats` (`{"cancelled":N,"connections":M}`).

mod anthropic;
mod directives;
mod flavour;
mod handler;
mod ollama;
mod openai;
mod plan;
mod reply;
mod responses;
mod script;
mod state;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use state::{Canned, FakeState, Recorded};

/// The router serving every flavour, sharing `state`.
pub fn router(state: FakeState) -> Router {
    Router::new().fallback(handler::handle).with_state(state)
}

/// Serves every flavour on `listener` until the task is dropped or fails.
pub async fn serve(listener: TcpListener, state: FakeState) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Small SSE/NDJSON writes must leave at once, as a real upstream's do.
    let counter = state.clone();
    let listener = listener.tap_io(move |tcp| {
        counter.count_connection();
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(state)).await
}

/// A fake upstream running in a spawned task; it stops when dropped.
#[derive(Debug)]
pub struct FakeUpstream {
    /// The bound address (`127.0.0.1:<port>`).
    pub addr: SocketAddr,
    state: FakeState,
    task: JoinHandle<std::io::Result<()>>,
}

impl FakeUpstream {
    /// Binds 127.0.0.1:0 and serves in a spawned tokio task.
    pub async fn start() -> std::io::Result<FakeUpstream> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = FakeState::new();
        let task = tokio::spawn(serve(listener, state.clone()));
        Ok(FakeUpstream { addr, state, task })
    }

    /// `http://127.0.0.1:PORT` + `path`, e.g. `url("/ollama")`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests()
    }

    /// Streaming responses whose body the client dropped before the fake finished writing it.
    pub fn cancelled(&self) -> u64 {
        self.state.cancelled()
    }

    /// Waits until `cancelled() >= n` or `timeout` passes; returns `cancelled()`.
    pub async fn wait_cancelled(&self, n: u64, timeout: Duration) -> u64 {
        self.state.wait_cancelled(n, timeout).await
    }

    /// The shared state (the same one the server records into).
    pub fn state(&self) -> &FakeState {
        &self.state
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests;
