//! The HTTP edge's error: every failure leaves the proxy as OpenAI's four-key
//! body `{"error":{"message","type","param","code"}}` with a status chosen for
//! the SDKs' retry rules (permanent failures are 4xx; `Retry-After` is passed
//! on; `x-should-retry: false` where a retry cannot help).

use std::borrow::Cow;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lakehouse_memory::MemoryError;
use lakehouse_plugins::PluginError;
use lakehouse_providers::router::RouteError;
use lakehouse_providers::{ProviderError, UpstreamErrorKind};
use lakehouse_retrieval::StoreError;
use serde_json::json;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    /// Ours, or the upstream's own (`context_length_exceeded`, ...).
    pub code: Option<Cow<'static, str>>,
    pub param: Option<String>,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: Option<&'static str>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            code: code.map(Cow::Borrowed),
            param: None,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            message,
        )
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some(code),
            message,
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            None,
            message,
        )
    }

    pub fn payload_too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            Some("request_too_large"),
            format!("request body is larger than the {limit} byte limit (server.max_body_bytes)"),
        )
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(Cow::Borrowed(code));
        self
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// The JSON body, also used for mid-stream `data: {"error":...}` events.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }

    fn should_retry(&self) -> bool {
        if self.code.as_deref() == Some("upstream_auth_failed") {
            return false;
        }
        // Out of credits is permanent (a 402, or OpenAI's 429
        // `insufficient_quota`), unless the upstream said when to come back
        // (OpenRouter's in-flight budget: a 402 with `Retry-After`).
        if self.status == StatusCode::PAYMENT_REQUIRED
            || self.code.as_deref() == Some("insufficient_quota")
        {
            return self.retry_after.is_some();
        }
        matches!(self.status.as_u16(), 408 | 409 | 429) || self.status.is_server_error()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        let headers = response.headers_mut();
        if let Some(after) = self.retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                headers.insert(header::RETRY_AFTER, v);
            }
            if let Ok(v) = HeaderValue::from_str(&after.as_millis().to_string()) {
                headers.insert("retry-after-ms", v);
            }
        }
        let retry = if self.should_retry() { "true" } else { "false" };
        headers.insert("x-should-retry", HeaderValue::from_static(retry));
        response
    }
}

impl From<ProviderError> for ApiError {
    fn from(e: ProviderError) -> Self {
        let message = e.to_string();
        match e {
            ProviderError::Upstream {
                kind,
                retry_after,
                code: upstream_code,
                param,
                ..
            } => {
                let (status, kind_name, code) = match kind {
                    UpstreamErrorKind::BadRequest => {
                        (StatusCode::BAD_REQUEST, "invalid_request_error", None)
                    }
                    // The proxy's key was refused: not the client's fault, and a retry will not help.
                    UpstreamErrorKind::Authentication | UpstreamErrorKind::PermissionDenied => (
                        StatusCode::BAD_GATEWAY,
                        "upstream_error",
                        Some("upstream_auth_failed"),
                    ),
                    UpstreamErrorKind::NotFound => (
                        StatusCode::NOT_FOUND,
                        "invalid_request_error",
                        Some("model_not_found"),
                    ),
                    UpstreamErrorKind::PaymentRequired => (
                        StatusCode::PAYMENT_REQUIRED,
                        "insufficient_quota",
                        Some("insufficient_quota"),
                    ),
                    UpstreamErrorKind::RateLimited => (
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate_limit_error",
                        Some("rate_limit_exceeded"),
                    ),
                    UpstreamErrorKind::Overloaded => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "server_error",
                        Some("overloaded"),
                    ),
                    UpstreamErrorKind::Timeout => (
                        StatusCode::GATEWAY_TIMEOUT,
                        "server_error",
                        Some("upstream_timeout"),
                    ),
                    UpstreamErrorKind::Server => (
                        StatusCode::BAD_GATEWAY,
                        "server_error",
                        Some("upstream_error"),
                    ),
                };
                let mut err = ApiError::new(status, kind_name, code, message);
                err.retry_after = retry_after;
                // What the client did, or its quota: the upstream's own code
                // says more than ours. Auth, routing and server failures keep ours.
                if matches!(
                    kind,
                    UpstreamErrorKind::BadRequest
                        | UpstreamErrorKind::RateLimited
                        | UpstreamErrorKind::PaymentRequired
                ) {
                    if let Some(upstream_code) = upstream_code {
                        err.code = Some(Cow::Owned(upstream_code));
                    }
                    err.param = param;
                }
                err
            }
            ProviderError::Timeout { .. } => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "server_error",
                Some("upstream_timeout"),
                message,
            ),
            ProviderError::Connection { .. } => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "server_error",
                Some("upstream_unreachable"),
                message,
            ),
            ProviderError::Protocol { .. } => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "server_error",
                Some("upstream_protocol_error"),
                message,
            ),
            ProviderError::InvalidRequest { .. } => ApiError::bad_request(message),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let message = e.to_string();
        match e {
            StoreError::InvalidName { .. } => {
                ApiError::bad_request(message).with_code("invalid_name")
            }
            StoreError::TooLarge { .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                Some("too_large"),
                message,
            ),
            StoreError::NotFound { .. } => ApiError::not_found("not_found", message),
            StoreError::Conflict(_) => ApiError::new(
                StatusCode::CONFLICT,
                "invalid_request_error",
                Some("conflict"),
                message,
            ),
            StoreError::InvalidInput(_) => {
                ApiError::bad_request(message).with_code("invalid_input")
            }
            StoreError::Timeout(_) => ApiError::bad_request(message).with_code("query_timeout"),
            StoreError::Backend(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                Some("store_unavailable"),
                message,
            ),
            StoreError::EmbedderUpstream(e) => ApiError::from(e),
            StoreError::Embed(_) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "server_error",
                Some("embedder_error"),
                message,
            ),
            StoreError::Internal(_) => ApiError::internal(message),
        }
    }
}

impl From<MemoryError> for ApiError {
    fn from(e: MemoryError) -> Self {
        match e {
            MemoryError::NotFound { .. } => ApiError::not_found("not_found", e.to_string()),
            MemoryError::InvalidInput(_) => {
                ApiError::bad_request(e.to_string()).with_code("invalid_input")
            }
            MemoryError::Store(inner) => ApiError::from(inner),
        }
    }
}

impl From<PluginError> for ApiError {
    fn from(e: PluginError) -> Self {
        match e {
            PluginError::InvalidRequest(message) => {
                ApiError::bad_request(message).with_code("invalid_lakehouse_options")
            }
            // A required plugin failed: the chat cannot be served as configured.
            PluginError::Failed { .. } | PluginError::Timeout { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                Some("plugin_failed"),
                e.to_string(),
            ),
        }
    }
}

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> Self {
        ApiError::not_found("model_not_found", e.to_string()).with_param("model")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(kind: UpstreamErrorKind) -> ApiError {
        ApiError::from(ProviderError::Upstream {
            provider: "p".into(),
            kind,
            status: None,
            message: "m".into(),
            code: None,
            param: None,
            retry_after: Some(Duration::from_millis(1500)),
        })
    }

    #[test]
    fn statuses_follow_the_sdk_retry_rules() {
        assert_eq!(
            upstream(UpstreamErrorKind::RateLimited).status,
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            upstream(UpstreamErrorKind::Overloaded).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            upstream(UpstreamErrorKind::Authentication).status,
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            upstream(UpstreamErrorKind::NotFound).status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            upstream(UpstreamErrorKind::Timeout).status,
            StatusCode::GATEWAY_TIMEOUT
        );
    }

    #[test]
    fn the_upstreams_code_and_param_reach_the_client_and_spent_quota_is_not_retried() {
        let refused = |kind, code: &str, param: Option<&str>| {
            ApiError::from(ProviderError::Upstream {
                provider: "p".into(),
                kind,
                status: None,
                message: "m".into(),
                code: Some(code.into()),
                param: param.map(Into::into),
                retry_after: None,
            })
        };
        let long = refused(
            UpstreamErrorKind::BadRequest,
            "context_length_exceeded",
            Some("messages"),
        );
        assert_eq!(long.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            long.body()["error"],
            json!({"message": "p upstream error: m", "type": "invalid_request_error",
                   "param": "messages", "code": "context_length_exceeded"})
        );
        let spent = refused(UpstreamErrorKind::RateLimited, "insufficient_quota", None);
        assert_eq!(spent.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(spent.into_response().headers()["x-should-retry"], "false");
        let busy = refused(UpstreamErrorKind::RateLimited, "rate_limit_exceeded", None);
        assert_eq!(busy.into_response().headers()["x-should-retry"], "true");
        // The proxy's own key refused: ours, not the upstream's, code.
        let auth = refused(UpstreamErrorKind::Authentication, "invalid_api_key", None);
        assert_eq!(auth.code.as_deref(), Some("upstream_auth_failed"));
    }

    #[test]
    fn embedder_failures_keep_their_upstream_kind() {
        let timeout = ApiError::from(StoreError::from(ProviderError::Timeout {
            provider: "ollama".into(),
            after: Duration::from_secs(120),
        }));
        assert_eq!(timeout.status, StatusCode::GATEWAY_TIMEOUT);
        let limited = ApiError::from(StoreError::from(ProviderError::Upstream {
            provider: "embed".into(),
            kind: UpstreamErrorKind::RateLimited,
            status: Some(429),
            message: "slow down".into(),
            code: None,
            param: None,
            retry_after: Some(Duration::from_secs(7)),
        }));
        assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(limited.retry_after, Some(Duration::from_secs(7)));
        // What the store says of an embedder itself stays a 502.
        let bad = ApiError::from(StoreError::Embed("a vector is missing".into()));
        assert_eq!(bad.status, StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn response_has_four_keys_and_retry_headers() {
        let response = upstream(UpstreamErrorKind::RateLimited).into_response();
        assert_eq!(response.headers()["retry-after"], "2");
        assert_eq!(response.headers()["retry-after-ms"], "1500");
        assert_eq!(response.headers()["x-should-retry"], "true");
        // A 402 is retried only when the upstream said when.
        let mut broke = upstream(UpstreamErrorKind::PaymentRequired);
        assert_eq!(broke.status, StatusCode::PAYMENT_REQUIRED);
        assert_eq!(
            broke.clone().into_response().headers()["x-should-retry"],
            "true"
        );
        broke.retry_after = None;
        assert_eq!(broke.into_response().headers()["x-should-retry"], "false");
        let body = ApiError::bad_request("nope").body();
        let error = body["error"].as_object().unwrap();
        assert_eq!(error.len(), 4);
        assert!(error["param"].is_null());
    }
}
