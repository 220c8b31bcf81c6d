//! The single handler: record, route, check auth, apply directives, answer.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, request::Parts};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::directives::{Directives, Fault};
use crate::flavour::{Endpoint, Flavour, Route, route};
use crate::plan::{ChatInput, Ending, MIDSTREAM_MESSAGE, Plan};
use crate::reply::{context_length, error, json_ok, json_with, played};
use crate::script::{Piece, Script};
use crate::state::{Canned, FakeState, Recorded};
use crate::{anthropic, ollama, openai, responses};

/// Largest request body read (larger bodies are recorded as `Null`).
const BODY_LIMIT: usize = 64 * 1024 * 1024;

/// Every request lands here.
pub(crate) async fn handle(State(state): State<FakeState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, BODY_LIMIT)
        .await
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    if let Some(control) = path.strip_prefix("/_fake/") {
        return control_route(&state, control, &bytes);
    }
    state.record(Recorded::new(&parts, &bytes));
    match route(&parts.method, &path) {
        Route::Found(flavour, endpoint) => answer(&state, flavour, endpoint, &parts, &bytes).await,
        Route::WrongMethod => json_with(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({ "error": "method not allowed" }),
        ),
        Route::NotFound => json_with(StatusCode::NOT_FOUND, &json!({ "error": "not found" })),
    }
}

/// `GET /_fake/requests`, `GET /_fake/stats` and `POST /_fake/canned`
/// (a [`Canned`] answer for one model); none of them is recorded.
fn control_route(state: &FakeState, name: &str, bytes: &Bytes) -> Response {
    match name {
        "canned" => match serde_json::from_slice::<Canned>(bytes) {
            Ok(canned) => {
                state.set_canned(canned);
                json_ok(&json!({ "ok": true }))
            }
            Err(e) => json_with(StatusCode::BAD_REQUEST, &json!({ "error": e.to_string() })),
        },
        "requests" => json_ok(&serde_json::to_value(state.requests()).unwrap_or(Value::Null)),
        "stats" => json_ok(&json!({
            "cancelled": state.cancelled(),
            "connections": state.connections(),
        })),
        _ => json_with(StatusCode::NOT_FOUND, &json!({ "error": "not found" })),
    }
}

fn bearer(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .is_some_and(|(scheme, key)| {
            scheme.eq_ignore_ascii_case("bearer") && !key.trim().is_empty()
        })
}

fn api_key(headers: &HeaderMap) -> bool {
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|key| !key.trim().is_empty())
}

/// `None` when the request may go on, else the 401.
fn check_auth(flavour: Flavour, endpoint: Endpoint, headers: &HeaderMap) -> Option<Response> {
    let ok = match (flavour, endpoint) {
        (Flavour::Ollama, _) => true,
        // Zen lists its models without a key.
        (Flavour::Zen, Endpoint::Models) => true,
        (Flavour::Zen, Endpoint::Messages) => api_key(headers),
        _ => bearer(headers),
    };
    if ok {
        return None;
    }
    let message = match flavour {
        Flavour::OllamaCloud => "unauthorized",
        Flavour::Zen if endpoint == Endpoint::Messages => "missing x-api-key",
        _ => "missing api key",
    };
    Some(error(flavour, 401, message))
}

async fn answer(
    state: &FakeState,
    flavour: Flavour,
    endpoint: Endpoint,
    parts: &Parts,
    bytes: &Bytes,
) -> Response {
    if let Some(denied) = check_auth(flavour, endpoint, &parts.headers) {
        return denied;
    }
    match endpoint {
        Endpoint::OllamaTags => json_ok(&ollama::tags()),
        Endpoint::Models => json_ok(&openai::models(flavour)),
        Endpoint::OllamaChat | Endpoint::Chat | Endpoint::Messages | Endpoint::Responses => {
            chat(state, flavour, endpoint, bytes).await
        }
        Endpoint::OllamaEmbed | Endpoint::Embeddings => embeddings(flavour, endpoint, bytes),
    }
}

/// The fake's embedding width.
const EMBEDDING_WIDTH: usize = 16;

/// Vectors of [`EMBEDDING_WIDTH`] values made from each text's bytes, or the
/// first `dimensions` of them as OpenAI and Ollama shorten theirs (a larger
/// `dimensions` is a 400). A model named `fixed-...` ignores `dimensions`,
/// as an upstream that cannot shorten its vectors might, and one named
/// `missing...` is a 404, as Ollama answers for a model not pulled.
fn embeddings(flavour: Flavour, endpoint: Endpoint, bytes: &Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(bytes) else {
        return error(flavour, 400, "invalid JSON body");
    };
    let model = body["model"].as_str().unwrap_or_default();
    if model.starts_with("missing") {
        return error(
            flavour,
            404,
            &format!("model \"{model}\" not found, try pulling it first"),
        );
    }
    let texts: Vec<&str> = match &body["input"] {
        Value::String(one) => vec![one.as_str()],
        Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
        _ => return error(flavour, 400, "input must be text"),
    };
    let width = match body["dimensions"].as_u64() {
        Some(_) if model.starts_with("fixed") => EMBEDDING_WIDTH,
        Some(asked) if asked == 0 || asked > EMBEDDING_WIDTH as u64 => {
            return error(
                flavour,
                400,
                &format!("dimensions must be between 1 and {EMBEDDING_WIDTH}"),
            );
        }
        Some(asked) => asked as usize,
        None => EMBEDDING_WIDTH,
    };
    let vector = |text: &str| -> Vec<f32> {
        let bytes = text.as_bytes();
        (0..width)
            .map(|i| f32::from(bytes.get(i % bytes.len().max(1)).copied().unwrap_or(0)) / 255.0)
            .collect()
    };
    let vectors: Vec<Vec<f32>> = texts.iter().map(|t| vector(t)).collect();
    match endpoint {
        Endpoint::OllamaEmbed => json_ok(&json!({
            "model": model,
            "embeddings": vectors,
            "prompt_eval_count": texts.len(),
        })),
        _ => json_ok(&json!({
            "object": "list",
            "model": model,
            "data": vectors.iter().enumerate().map(|(index, embedding)| json!({
                "object": "embedding", "index": index, "embedding": embedding,
            })).collect::<Vec<_>>(),
            "usage": {"prompt_tokens": texts.len(), "total_tokens": texts.len()},
        })),
    }
}

async fn chat(state: &FakeState, flavour: Flavour, endpoint: Endpoint, bytes: &Bytes) -> Response {
    let body: Value = match serde_json::from_slice(bytes) {
        Ok(value @ Value::Object(_)) => value,
        _ => return error(flavour, 400, "invalid JSON body"),
    };
    let input = ChatInput::parse(endpoint, &body);
    let directives = match state.canned(&input.model) {
        Some(canned) => Directives {
            canned: Some(canned.reply),
            ..Directives::parse(&canned.directives)
        },
        None => Directives::parse(&input.text),
    };
    if let Some(wait) = directives.slow_first {
        tokio::time::sleep(wait).await;
    }
    if endpoint == Endpoint::Messages && !input.has_max_tokens {
        return json_with(StatusCode::BAD_REQUEST, &anthropic::missing_max_tokens());
    }
    if endpoint == Endpoint::Responses
        && let Some(refused) = responses::unverifiable_reasoning(&body)
    {
        return json_with(StatusCode::BAD_REQUEST, &refused);
    }
    match directives.fault {
        Some(Fault::Status(status)) => {
            return error(flavour, status, &format!("fake upstream fault {status}"));
        }
        Some(Fault::ContextLength) => return context_length(flavour),
        _ => {}
    }
    let plan = Plan::new(flavour, &input, &directives);
    if plan.stream {
        stream(state, endpoint, &plan)
    } else {
        complete(endpoint, &plan)
    }
}

fn stream(state: &FakeState, endpoint: Endpoint, plan: &Plan) -> Response {
    let (content_type, script) = match endpoint {
        Endpoint::OllamaChat => (ollama::CONTENT_TYPE, ollama::stream(plan)),
        Endpoint::Messages => ("text/event-stream", anthropic::stream(plan)),
        Endpoint::Responses => ("text/event-stream", responses::stream(plan)),
        _ => ("text/event-stream", openai::stream(plan)),
    };
    let mut response = played(content_type, script.into_pieces(), Some(state.clone()));
    if plan.flavour == Flavour::OpenRouter {
        response.headers_mut().insert(
            "x-generation-id",
            axum::http::HeaderValue::from_static("gen-1"),
        );
    }
    response
}

/// A `stream:false` answer; faults become a 500, a half body then an abort, or non-JSON.
fn complete(endpoint: Endpoint, plan: &Plan) -> Response {
    let value = match endpoint {
        Endpoint::OllamaChat => ollama::complete(plan),
        Endpoint::Messages => anthropic::complete(plan),
        Endpoint::Responses => responses::complete(plan),
        _ => openai::complete(plan),
    };
    match plan.ending {
        Ending::Normal => json_ok(&value),
        Ending::Midstream => error(plan.flavour, 500, MIDSTREAM_MESSAGE),
        Ending::Garbage => played(
            "application/json",
            vec![Piece::Data(Bytes::from_static(b"this is not json"))],
            None,
        ),
        Ending::Drop => {
            let text = value.to_string();
            let half = text.get(..text.len() / 2).unwrap_or_default().to_owned();
            let mut script = Script::new(None);
            script.event(half);
            script.abort();
            played("application/json", script.into_pieces(), None)
        }
    }
}
