//! Graceful shutdown: in-flight streams finish, within a bounded grace period.

use std::time::Duration;

use crate::common::{start, user};
use futures::StreamExt;
use serde_json::json;

#[tokio::test]
async fn shutdown_drains_a_short_stream_and_cuts_a_long_one_after_the_grace() {
    let mut h = start().await;
    let short = h
        .post("/v1/chat/completions", &json!({"model": "qwen3:8b", "messages": user("x #chunks=5 #slow_chunks=100"), "stream": true}))
        .await;
    let long = h
        .post("/v1/chat/completions", &json!({"model": "qwen3:8b", "messages": user("x #chunks=100000 #slow_chunks=5"), "stream": true}))
        .await;
    assert_eq!(short.status().as_u16(), 200);
    assert_eq!(long.status().as_u16(), 200);
    let mut short = short.bytes_stream();
    let mut rest = String::new();
    while !rest.contains("tok0") {
        rest.push_str(&String::from_utf8_lossy(
            &short.next().await.unwrap().unwrap(),
        ));
    }

    h.shutdown.take().unwrap().send(()).unwrap();

    // The short stream still runs to its end.
    while let Some(Ok(bytes)) = short.next().await {
        rest.push_str(&String::from_utf8_lossy(&bytes));
    }
    assert!(rest.contains("tok4"), "{rest}");
    assert!(rest.trim_end().ends_with("data: [DONE]"), "{rest}");

    // The long one is cut when the 1 s grace is over, and the server returns.
    let done = tokio::time::timeout(Duration::from_secs(20), &mut h.server).await;
    assert!(done.is_ok(), "server did not stop after its grace period");
    let text = long.text().await.unwrap_or_default();
    assert!(
        !text.contains("[DONE]"),
        "the long stream cannot have finished"
    );

    // New connections are refused once the server is gone.
    assert!(h.client.get(h.url("/healthz")).send().await.is_err());
}
