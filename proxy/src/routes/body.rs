//! Reading request bodies with a size cap, into memory or into a file.

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::error::ApiError;
use crate::middleware::BodyStalled;

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// A body that stalled past `server.body_read_timeout_secs` is a 408; other read failures are 400.
fn body_error(e: axum::Error) -> ApiError {
    let e = e.into_inner();
    // The stall may arrive wrapped by the layers between the guard and here.
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e.as_ref());
    while let Some(err) = current {
        if let Some(stalled) = err.downcast_ref::<BodyStalled>() {
            return ApiError::new(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                Some("request_timeout"),
                stalled.to_string(),
            );
        }
        current = err.source();
    }
    ApiError::bad_request(format!("cannot read the request body: {e}"))
}

/// Reads at most `limit` bytes; a larger body is refused before it is buffered.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: u64) -> Result<Bytes, ApiError> {
    let declared = declared_length(headers);
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::payload_too_large(limit));
    }
    let capacity = usize::try_from(declared.unwrap_or(1024).min(limit)).unwrap_or(1024);
    let mut data = body.into_data_stream();
    let mut buffer = BytesMut::with_capacity(capacity);
    while let Some(frame) = data.next().await {
        let frame = frame.map_err(body_error)?;
        if (buffer.len() + frame.len()) as u64 > limit {
            return Err(ApiError::payload_too_large(limit));
        }
        buffer.extend_from_slice(&frame);
    }
    Ok(buffer.freeze())
}

/// Streams the body into `path` (at most `limit` bytes), without holding it in memory.
pub async fn body_to_file(
    headers: &HeaderMap,
    body: Body,
    limit: u64,
    path: &std::path::Path,
) -> Result<u64, ApiError> {
    if declared_length(headers).is_some_and(|n| n > limit) {
        return Err(ApiError::payload_too_large(limit));
    }
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| ApiError::internal(format!("cannot create an upload file: {e}")))?;
    let mut data = body.into_data_stream();
    let mut written = 0u64;
    while let Some(frame) = data.next().await {
        let frame = frame.map_err(body_error)?;
        written += frame.len() as u64;
        if written > limit {
            return Err(ApiError::payload_too_large(limit));
        }
        file.write_all(&frame)
            .await
            .map_err(|e| ApiError::internal(format!("cannot write the upload file: {e}")))?;
    }
    file.flush()
        .await
        .map_err(|e| ApiError::internal(format!("cannot write the upload file: {e}")))?;
    Ok(written)
}

/// Reads a JSON body of at most `limit` bytes into `T`; a body that does not
/// parse is a 400 naming the problem.
pub async fn read_json<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<T, ApiError> {
    let bytes = read_body(headers, body, limit as u64).await?;
    lakehouse_providers::decode::from_json_bytes(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}
