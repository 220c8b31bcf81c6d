//! Response helpers: JSON, streams and each flavour's error body.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use crate::flavour::Flavour;
use crate::script::{Piece, play};
use crate::state::FakeState;

/// `Retry-After` sent with every 429.
pub(crate) const RETRY_AFTER_SECS: &str = "7";

fn build(status: StatusCode, content_type: &'static str, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A JSON body with `status`.
pub(crate) fn json_with(status: StatusCode, value: &Value) -> Response {
    build(status, "application/json", Body::from(value.to_string()))
}

/// A 200 JSON body.
pub(crate) fn json_ok(value: &Value) -> Response {
    json_with(StatusCode::OK, value)
}

/// A 200 body of `content_type` played from `pieces`; counted when `state` is given.
pub(crate) fn played(
    content_type: &'static str,
    pieces: Vec<Piece>,
    state: Option<FakeState>,
) -> Response {
    let mut response = build(StatusCode::OK, content_type, play(pieces, state));
    if content_type == "text/event-stream" {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    response
}

/// The flavour's error body.
pub(crate) fn error_body(flavour: Flavour, status: u16, message: &str) -> Value {
    match flavour {
        Flavour::Ollama | Flavour::OllamaCloud => json!({ "error": message }),
        Flavour::OpenRouter => json!({
            "error": { "code": status, "message": message, "metadata": {} }
        }),
        Flavour::Kimi => {
            let kind = match status {
                401 => "invalid_authentication_error",
                403 => "permission_denied_error",
                404 => "resource_not_found_error",
                429 => "rate_limit_reached_error",
                400..=499 => "invalid_request_error",
                _ => "server_error",
            };
            json!({ "error": { "message": message, "type": kind } })
        }
        Flavour::Zen => {
            let kind = match status {
                401 => "AuthError",
                429 => "RateLimitError",
                _ => "ServerError",
            };
            json!({ "type": "error", "error": { "type": kind, "message": message } })
        }
        Flavour::OpenAi => {
            let (kind, code) = match status {
                401 => ("invalid_request_error", json!("invalid_api_key")),
                404 => ("invalid_request_error", json!("model_not_found")),
                429 => ("rate_limit_error", json!("rate_limit_exceeded")),
                400..=499 => ("invalid_request_error", Value::Null),
                _ => ("server_error", Value::Null),
            };
            json!({ "error": { "message": message, "type": kind, "param": null, "code": code } })
        }
    }
}

/// The refusal of a prompt longer than the model's context, in the flavour's
/// shape; OpenAI names it with `code` and `param`.
pub(crate) fn context_length(flavour: Flavour) -> Response {
    const MESSAGE: &str = "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.";
    let mut body = error_body(flavour, 400, MESSAGE);
    if flavour == Flavour::OpenAi {
        body["error"]["param"] = json!("messages");
        body["error"]["code"] = json!("context_length_exceeded");
    }
    json_with(StatusCode::BAD_REQUEST, &body)
}

/// An error response in the flavour's shape; a 429 carries `Retry-After: 7`.
pub(crate) fn error(flavour: Flavour, status: u16, message: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json_with(code, &error_body(flavour, status, message));
    if status == 429 {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECS),
        );
    }
    response
}
