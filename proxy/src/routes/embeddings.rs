//! `POST /v1/embeddings` in the OpenAI shape, over the store's embedders.
//!
//! `encoding_format` is `float` or `base64`; base64 is the openai-python
//! default and carries little-endian f32 bytes. `model` names an embedder
//! (`local`, `ollama/<model>`, or a configured OpenAI-compatible one).
//! `dimensions` is forwarded to Ollama and OpenAI-compatible embedders; the
//! local one answers only its own width.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use lakehouse_retrieval::StoreError;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::SharedState;
use crate::error::ApiError;
use crate::routes::body::read_json;

/// The most inputs one request may carry (OpenAI's limit).
const MAX_INPUTS: usize = 2048;

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
    /// Token ids (`[1, 2]` or `[[1, 2]]`): recognised only to refuse them clearly.
    Tokens(#[allow(dead_code)] Vec<Value>),
}

#[derive(Deserialize)]
struct EmbeddingsRequest {
    model: String,
    input: Input,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<usize>,
    #[serde(default, rename = "user")]
    _user: Option<String>,
}

pub async fn embeddings(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let request: EmbeddingsRequest =
        read_json(&headers, body, state.config.server.max_body_bytes).await?;
    let texts = match request.input {
        Input::One(s) => vec![s],
        Input::Many(v) => v,
        Input::Tokens(_) => {
            return Err(ApiError::bad_request(
                "token arrays are not supported; send the input as text",
            )
            .with_param("input"));
        }
    };
    if texts.is_empty() || texts.len() > MAX_INPUTS {
        return Err(
            ApiError::bad_request(format!("`input` must hold 1 to {MAX_INPUTS} strings"))
                .with_param("input"),
        );
    }
    if let Some(i) = texts.iter().position(|t| t.is_empty()) {
        return Err(ApiError::bad_request(format!("input[{i}] is empty")).with_param("input"));
    }
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "encoding_format must be float or base64, not {other:?}"
            ))
            .with_param("encoding_format"));
        }
    };
    let embedders = state.store.embedders();
    if !embedders.contains(&request.model) {
        return Err(ApiError::not_found(
            "model_not_found",
            format!(
                "no embedder {:?}; available: {}",
                request.model,
                embedders.names().join(", ")
            ),
        )
        .with_param("model"));
    }
    let vectors = match request.dimensions {
        None => embedders.embed(&request.model, &texts).await?,
        Some(0) => {
            return Err(
                ApiError::bad_request("dimensions must be at least 1").with_param("dimensions")
            );
        }
        // Forwarded to embedders that take it (Ollama, OpenAI-compatible).
        Some(dimensions) => embedders
            .embed_dimensions(&request.model, &texts, dimensions)
            .await
            .map_err(|e| match e {
                StoreError::InvalidInput(message) => {
                    ApiError::bad_request(message).with_param("dimensions")
                }
                other => other.into(),
            })?,
    };
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = if base64 {
                Value::String(f32_base64(v))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    // Embedders do not all report token counts; this is the usual ~4 characters per token estimate.
    let tokens: usize = texts.iter().map(|t| t.chars().count().div_ceil(4)).sum();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": request.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })))
}

/// Standard base64 (with padding) of the little-endian f32 bytes.
pub fn f32_base64(values: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_reference_vector() {
        assert_eq!(
            f32_base64(&[1.0, -2.0, 3.5, 0.125]),
            "AACAPwAAAMAAAGBAAAAAPg=="
        );
        assert_eq!(f32_base64(&[]), "");
    }
}
