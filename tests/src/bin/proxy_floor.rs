//! The cheapest proxy hop the chosen stack allows, as a benchmark reference
//! (`scripts/bench.sh`): axum on one current-thread runtime, like
//! Lakehouse with one worker, forwarding `POST /v1/chat/completions` to an
//! OpenAI-compatible upstream through Lakehouse's own upstream client.
//!
//! `--mode pass` forwards the bytes untouched. `--mode json` parses the
//! request and the answer into `serde_json::Value` and encodes them again.
//! `--mode typed` reads them into borrowed structs of the OpenAI shape (no
//! string copied unless it has escapes) and encodes those: the least any proxy
//! that reads what it forwards must do. Whole answers only; no routing,
//! plugins, observer or metrics. What Lakehouse costs above this is its own
//! work; what this costs above nginx is the stack's.

use std::borrow::Cow;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use clap::{Parser, ValueEnum};
use lakehouse_providers::ProviderError;
use lakehouse_providers::http::{Auth, Secret, Timeouts, Upstream};
use serde::{Deserialize, Serialize};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    listen: String,
    /// Base URL of the OpenAI-compatible upstream, e.g. `http://127.0.0.1:9000/openai/v1`.
    #[arg(long)]
    upstream: String,
    #[arg(long, value_enum, default_value_t = Mode::Pass)]
    mode: Mode,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Pass,
    Json,
    Typed,
}

#[derive(Clone)]
struct Hop {
    upstream: Upstream,
    mode: Mode,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let upstream = Upstream::new(
        "floor",
        &args.upstream,
        Auth::Bearer(Secret::new("sk-bench")),
        Timeouts {
            connect: Duration::from_secs(5),
            read: Duration::from_secs(30),
        },
    )?;
    let hop = Hop {
        upstream,
        mode: args.mode,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let app = Router::new()
            .route("/v1/chat/completions", post(forward))
            .with_state(hop);
        let listener = tokio::net::TcpListener::bind(&args.listen).await?;
        println!("proxy-floor listening on http://{}", listener.local_addr()?);
        axum::serve(listener, app).await
    })?;
    Ok(())
}

async fn forward(State(hop): State<Hop>, body: Bytes) -> Response {
    match exchange(&hop, body).await {
        Ok(answer) => {
            let mut response = Response::new(answer.into());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e).into_response(),
    }
}

async fn exchange(hop: &Hop, body: Bytes) -> Result<Bytes, String> {
    let request = match hop.mode {
        Mode::Pass => body.to_vec(),
        Mode::Json => reencode(&body)?,
        Mode::Typed => reencode_typed::<Request>(&body)?,
    };
    let answer = hop
        .upstream
        .post("/chat/completions", request, &[])
        .await
        .map_err(|e: ProviderError| e.to_string())?
        .bytes()
        .await
        .map_err(|e| e.to_string())?;
    Ok(match hop.mode {
        Mode::Pass => answer,
        Mode::Json => reencode(&answer)?.into(),
        Mode::Typed => reencode_typed::<Completion>(&answer)?.into(),
    })
}

fn reencode(json: &[u8]) -> Result<Vec<u8>, String> {
    let value: serde_json::Value = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    serde_json::to_vec(&value).map_err(|e| e.to_string())
}

fn reencode_typed<'a, T: Deserialize<'a> + Serialize>(json: &'a [u8]) -> Result<Vec<u8>, String> {
    let value: T = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    serde_json::to_vec(&value).map_err(|e| e.to_string())
}

#[derive(Deserialize, Serialize)]
struct Request<'a> {
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(borrow)]
    messages: Vec<Message<'a>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
}

#[derive(Deserialize, Serialize)]
struct Message<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    content: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Serialize)]
struct Completion<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    object: Cow<'a, str>,
    created: u64,
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(borrow)]
    choices: Vec<Choice<'a>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

#[derive(Deserialize, Serialize)]
struct Choice<'a> {
    index: u32,
    #[serde(borrow)]
    message: Message<'a>,
    #[serde(borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Serialize)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The typed hop forwards what it reads unchanged, escapes included, so
    /// its cost is a fair floor for a proxy that reads the OpenAI shape.
    #[test]
    fn the_typed_hop_keeps_the_fields_it_reads() {
        let request = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"say \"hi\"\n"}],"stream":false}"#;
        let out = reencode_typed::<Request>(request).unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&out).unwrap(),
            serde_json::from_slice::<serde_json::Value>(request).unwrap()
        );
        let answer = br#"{"id":"gen-1","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":6,"total_tokens":17}}"#;
        let out = reencode_typed::<Completion>(answer).unwrap();
        assert_eq!(out, answer.to_vec());
        assert!(reencode_typed::<Completion>(b"{\"id\":1}").is_err());
    }
}
