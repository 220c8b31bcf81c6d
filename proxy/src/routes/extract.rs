//! `Query` and `Path` extractors that refuse in the OpenAI error shape: axum's
//! own refusals are plain text, which clients of an OpenAI-shaped API cannot
//! read as errors.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The query string, read into `T`; a bad one is a 400 naming what is wrong.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(e) => Err(ApiError::bad_request(format!(
                "invalid query string: {}",
                e.body_text()
            ))),
        }
    }
}

/// The path's parameters, read into `T`; one that does not fit is a 400.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            // A route declared without the parameters its handler reads.
            Err(e) if e.status().is_server_error() => Err(ApiError::internal(e.body_text())),
            Err(e) => Err(ApiError::bad_request(format!(
                "invalid path: {}",
                e.body_text()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Page {
        limit: usize,
    }

    async fn query(uri: &str) -> Result<Page, ApiError> {
        let (mut parts, ()) = Request::builder().uri(uri).body(()).unwrap().into_parts();
        Query::<Page>::from_request_parts(&mut parts, &())
            .await
            .map(|q| q.0)
    }

    #[tokio::test]
    async fn bad_query_strings_are_openai_shaped_400s() {
        assert_eq!(query("/x?limit=5").await.unwrap().limit, 5);
        for uri in ["/x?limit=abc", "/x?limit=-1", "/x?limit=5&offset=1", "/x"] {
            let e = query(uri).await.unwrap_err();
            assert_eq!(e.status.as_u16(), 400, "{uri}");
            assert!(
                e.message.starts_with("invalid query string"),
                "{uri}: {}",
                e.message
            );
        }
    }
}
