//! Serving: `serve(listener, app, shutdown, options)`, and the OS signals that start a shutdown.
//!
//! Our own accept loop on hyper-util rather than `axum::serve`, because only
//! hyper's connection builder can bound how long a client takes to send a
//! request head (a slowloris client otherwise holds a connection forever).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::header;
use axum::response::Response;
use bytes::Bytes;
use futures::FutureExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::app::App;

/// After the grace period, how long cut connections get to close before `serve` returns anyway.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Pause after an accept error (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Connection-level limits and the shutdown budget.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// How long in-flight requests (open streams included) may run after shutdown starts.
    pub grace: Duration,
    /// Time a client has to send a complete request head, idle keep-alive
    /// connections included; past it the connection is closed.
    pub header_read_timeout: Duration,
}

/// Serves `app` until `shutdown` resolves, then stops accepting, lets in-flight
/// requests (open streams included) finish for at most `options.grace`, ends
/// the streams still open, and returns.
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
    options: ServeOptions,
) -> std::io::Result<()> {
    let (cut_tx, cut_rx) = watch::channel(false);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    let connections = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // Each SSE event is a small write; Nagle's algorithm would hold the last one
        // back until the client's delayed ACK (~40 ms on a reused connection).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
        let app = app.clone();
        let connection_cut = cut_rx.clone();
        let first_request = Arc::new(Notify::new());
        let request_seen = first_request.clone();
        // The peer address feeds the [auth] IP allowlist. The shutdown cut
        // wraps responses here rather than in a router layer, which would
        // clone a service and box a future on every request.
        let service =
            hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                request_seen.notify_one();
                let cut = connection_cut.clone();
                app.call(request, peer)
                    .map(move |response| Ok::<_, Infallible>(end_streams_on(cut, response)))
            });
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
        let connection = connections.watch(connection.into_owned());
        let first_head_limit = options.header_read_timeout;
        tokio::spawn(async move {
            tokio::pin!(connection);
            // hyper's head timeout starts once it knows the protocol; the
            // protocol sniff before it has none, so the first head is bounded here.
            let ended = tokio::select! {
                ended = &mut connection => Some(ended),
                () = first_request.notified() => None,
                () = tokio::time::sleep(first_head_limit) => {
                    tracing::debug!(%peer, "no request head in {first_head_limit:?}: closing");
                    return;
                }
            };
            let ended = match ended {
                Some(ended) => ended,
                None => connection.await,
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
    drop(listener);
    tracing::info!(
        "shutting down: draining in-flight requests for up to {:?}",
        options.grace
    );
    let drained = connections.shutdown();
    tokio::pin!(drained);
    if tokio::time::timeout(options.grace, &mut drained)
        .await
        .is_ok()
    {
        return Ok(());
    }
    tracing::warn!("grace period over: ending the streams still open");
    let _ = cut_tx.send(true);
    let _ = tokio::time::timeout(CLOSE_WAIT, drained).await;
    Ok(())
}

/// Event streams end when `cut` turns true, so a shutdown is never held up by an
/// endless stream. Other responses pass untouched.
fn end_streams_on(cut: watch::Receiver<bool>, response: Response) -> Response {
    if !is_event_stream(&response) {
        return response;
    }
    let mut waiter = cut.clone();
    response.map(|body| {
        Body::new(UntilCut {
            body,
            cut,
            wake_on_cut: Box::pin(async move {
                let _ = waiter.wait_for(|c| *c).await;
            }),
            ended: false,
        })
    })
}

/// A stream's body that ends early once the shutdown's grace period is over.
struct UntilCut {
    body: Body,
    cut: watch::Receiver<bool>,
    /// Polled only while the body waits, so an idle stream is woken by the cut.
    wake_on_cut: Pin<Box<dyn Future<Output = ()> + Send>>,
    ended: bool,
}

impl HttpBody for UntilCut {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        // The cut is the only change the channel ever sees; a closed channel means the server is gone.
        if this.ended || this.cut.has_changed().unwrap_or(true) {
            this.ended = true;
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Pending if this.wake_on_cut.as_mut().poll(cx).is_ready() => {
                this.ended = true;
                Poll::Ready(None)
            }
            polled => polled,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Whether a response is an SSE stream (its body outlives the handler).
pub fn is_event_stream(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for SIGINT: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
