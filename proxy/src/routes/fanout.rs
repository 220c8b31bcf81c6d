//! `POST /v1/fanout`: one chat to several models (see [`crate::fanout`]).
//!
//! Without `stream` the answer is one JSON object listing every model's
//! answer. With `"stream": true` it is one SSE stream whose events are
//! [`FanoutEvent`]s tagged with the model, then `[DONE]` once every model
//! has finished or failed.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use lakehouse_providers::openai::{new_id, unix_now};
use serde_json::{Map, Value, json};

use crate::app::SharedState;
use crate::error::ApiError;
use crate::fanout::{self, FanoutEvent, FanoutRequest};
use crate::routes::body::read_json;
use crate::sse::{self, Event};

pub async fn fanout(State(state): State<SharedState>, headers: HeaderMap, body: Body) -> Response {
    handle(state, headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn handle(state: SharedState, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let body: Map<String, Value> =
        read_json(&headers, body, state.config.server.max_body_bytes).await?;
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let request = FanoutRequest::from_body(body, &state)?;
    if stream {
        let keep_alive = state.config.server.keep_alive();
        let events = fanout::stream(state, headers, request)
            .map(|event: FanoutEvent| {
                Event::json(&event).unwrap_or_else(|e| {
                    Event::error(&ApiError::internal(format!("cannot encode an event: {e}")))
                })
            })
            .chain(futures::stream::once(std::future::ready(Event::data(
                "[DONE]",
            ))));
        return Ok(sse::response(events, keep_alive));
    }
    let answers = fanout::run(&state, &headers, &request).await;
    let failed = answers.iter().filter(|a| a.error.is_some()).count();
    Ok(Json(json!({
        "id": new_id("fanout-"),
        "object": "fanout",
        "created": unix_now(),
        "succeeded": answers.len() - failed,
        "failed": failed,
        "answers": answers,
    }))
    .into_response())
}
