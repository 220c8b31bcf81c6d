//! Serving: `serve(listener, app, shutdown, grace)`, and the OS signals that start a shutdown.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::header;
use axum::response::Response;
use axum::serve::ListenerExt;
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// After the grace period, how long cut connections get to close before `serve` returns anyway.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Serves `app` until `shutdown` resolves, then stops accepting, lets in-flight
/// requests (open streams included) finish for at most `grace`, ends the streams
/// still open, and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let (stopping_tx, mut stopping_rx) = watch::channel(false);
    let (cut_tx, cut_rx) = watch::channel(false);
    let app = app.layer(axum::middleware::map_response(move |response: Response| {
        let cut = cut_rx.clone();
        async move { end_streams_on(cut, response) }
    }));
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: draining in-flight requests for up to {grace:?}");
        let _ = stopping_tx.send(true);
    };
    // Each SSE event is a small write; Nagle's algorithm would hold the last one
    // back until the client's delayed ACK (~40 ms on a reused connection).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
    });
    // The peer address feeds the [auth] IP allowlist.
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(signal)
    .into_future();
    tokio::pin!(server);
    let deadline = async move {
        // A closed channel means the server ended first; then this never fires.
        if stopping_rx.wait_for(|stopping| *stopping).await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = &mut server => return result,
        () = deadline => {}
    }
    tracing::warn!("grace period over: ending the streams still open");
    let _ = cut_tx.send(true);
    match tokio::time::timeout(CLOSE_WAIT, server).await {
        Ok(result) => result,
        Err(_) => Ok(()),
    }
}

/// Event streams end when `cut` turns true, so a shutdown is never held up by an
/// endless stream. Other responses pass untouched.
fn end_streams_on(mut cut: watch::Receiver<bool>, response: Response) -> Response {
    let is_stream = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if !is_stream {
        return response;
    }
    let (parts, body) = response.into_parts();
    let stop = async move {
        let _ = cut.wait_for(|c| *c).await;
    };
    let body = Body::from_stream(body.into_data_stream().take_until(Box::pin(stop)));
    Response::from_parts(parts, body)
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
