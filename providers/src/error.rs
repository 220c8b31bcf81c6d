//! The one error type of this crate.
//!
//! Upstream failures are classified into an [`UpstreamErrorKind`] here, where
//! the upstream's protocol is known; which status the proxy answers with is
//! decided only at the HTTP edge (`proxy/src/error.rs`).

use std::time::Duration;

/// What kind of failure an upstream reported, independent of its wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// The request was refused as invalid (bad parameter, context too long, ...).
    BadRequest,
    /// The proxy's key for that upstream was refused.
    Authentication,
    /// The key is valid but not allowed (region, moderation, workspace).
    PermissionDenied,
    /// Unknown model.
    NotFound,
    /// Out of credits.
    PaymentRequired,
    /// Rate or quota limit; retry later.
    RateLimited,
    /// Upstream busy or unavailable (503, Anthropic 529).
    Overloaded,
    /// Upstream timed out on its side (408, 504).
    Timeout,
    /// Anything else the upstream got wrong (500, 502, mid-stream failure).
    Server,
}

impl UpstreamErrorKind {
    /// Classifies an upstream HTTP status.
    pub fn from_status(status: u16) -> Self {
        match status {
            400 | 409 | 413 | 422 => Self::BadRequest,
            401 => Self::Authentication,
            403 => Self::PermissionDenied,
            404 => Self::NotFound,
            402 => Self::PaymentRequired,
            429 => Self::RateLimited,
            408 | 504 => Self::Timeout,
            503 | 529 => Self::Overloaded,
            _ => Self::Server,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// The upstream answered with an error, before or during the stream.
    #[error("{provider} upstream error: {message}")]
    Upstream {
        provider: String,
        kind: UpstreamErrorKind,
        /// The upstream's own status, when the error came as an HTTP status.
        status: Option<u16>,
        message: String,
        /// The upstream's own error `code` and `param` (OpenAI's shape, e.g.
        /// `context_length_exceeded`, `insufficient_quota`): clients branch on them.
        code: Option<String>,
        param: Option<String>,
        retry_after: Option<Duration>,
    },
    /// No answer (headers or the next stream event) within the read timeout.
    #[error("{provider} upstream did not answer within {after:?}")]
    Timeout { provider: String, after: Duration },
    /// The connection could not be made or broke.
    #[error("{provider} upstream connection failed: {message}")]
    Connection { provider: String, message: String },
    /// The upstream sent something that is not its protocol.
    #[error("{provider} upstream sent an invalid response: {message}")]
    Protocol { provider: String, message: String },
    /// The request cannot be expressed in the upstream's protocol.
    #[error("{message}")]
    InvalidRequest { provider: String, message: String },
}

impl ProviderError {
    pub fn protocol(provider: &str, message: impl Into<String>) -> Self {
        Self::Protocol {
            provider: provider.to_owned(),
            message: message.into(),
        }
    }

    pub fn invalid_request(provider: &str, message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            provider: provider.to_owned(),
            message: message.into(),
        }
    }

    /// A short, stable name of the failure's kind, for metrics and logs.
    pub fn kind_label(&self) -> &'static str {
        match self {
            Self::Upstream { kind, .. } => match kind {
                UpstreamErrorKind::BadRequest => "bad_request",
                UpstreamErrorKind::Authentication => "authentication",
                UpstreamErrorKind::PermissionDenied => "permission_denied",
                UpstreamErrorKind::NotFound => "not_found",
                UpstreamErrorKind::PaymentRequired => "payment_required",
                UpstreamErrorKind::RateLimited => "rate_limited",
                UpstreamErrorKind::Overloaded => "overloaded",
                UpstreamErrorKind::Timeout => "upstream_timeout",
                UpstreamErrorKind::Server => "server_error",
            },
            Self::Timeout { .. } => "read_timeout",
            Self::Connection { .. } => "connection",
            Self::Protocol { .. } => "protocol",
            Self::InvalidRequest { .. } => "invalid_request",
        }
    }

    /// A failure reported inside an already started stream.
    pub fn mid_stream(provider: &str, kind: UpstreamErrorKind, message: impl Into<String>) -> Self {
        Self::Upstream {
            provider: provider.to_owned(),
            kind,
            status: None,
            message: message.into(),
            code: None,
            param: None,
            retry_after: None,
        }
    }
}

/// Upstream error bodies come in four shapes; this finds the human message in
/// any of them, and OpenAI's `code` and `param` where given.
///
/// Ollama `{"error":"s"}`, OpenAI/Kimi `{"error":{"message","type"}}`, OpenRouter
/// `{"error":{"code":int,"message","metadata"}}`, Anthropic/Zen `{"type":"error","error":{"type","message"}}`.
/// OpenRouter's own message for a provider's refusal is only "Provider
/// returned error": the provider's answer (`metadata.raw`) and moderation
/// reasons (`metadata.reasons`) are added, or the client learns nothing.
pub fn error_from_body(body: &[u8]) -> ErrorBody {
    const MAX: usize = 2_000;
    let error = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|mut v| v.get_mut("error").map(serde_json::Value::take));
    let (code, param) = error.as_ref().map(code_and_param).unwrap_or_default();
    let from_json = error.as_ref().and_then(|error| {
        let mut message = message_of(error)?;
        append_metadata(&mut message, error);
        Some(message)
    });
    let mut message = from_json.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    if message.is_empty() {
        message = "no error message".into();
    }
    if message.len() > MAX {
        message.truncate(crate::char_floor(&message, MAX));
        message.push('…');
    }
    ErrorBody {
        message,
        code,
        param,
    }
}

/// OpenAI's `code` and `param` of an `error` value, where they are text
/// (OpenRouter's numeric codes repeat the status and are left out).
pub(crate) fn code_and_param(error: &serde_json::Value) -> (Option<String>, Option<String>) {
    let text = |key: &str| {
        error
            .get(key)
            .and_then(serde_json::Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    (text("code"), text("param"))
}

/// What an upstream's error body says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    pub message: String,
    /// A text `code` (OpenRouter's numeric ones repeat the status and are left out).
    pub code: Option<String>,
    pub param: Option<String>,
}

/// The message of an `error` value: a string, or an object's `message` and `type`.
fn message_of(error: &serde_json::Value) -> Option<String> {
    match error {
        serde_json::Value::String(s) => Some(s.clone()),
        obj @ serde_json::Value::Object(_) => {
            let message = obj
                .get("message")
                .and_then(|m| m.as_str())
                .unwrap_or_default();
            let kind = obj.get("type").and_then(|t| t.as_str());
            Some(match kind {
                Some(k) if !message.is_empty() => format!("{message} ({k})"),
                Some(k) => k.to_owned(),
                None => message.to_owned(),
            })
        }
        _ => None,
    }
}

/// What OpenRouter's `error.metadata` says beyond its message: the provider
/// and its own answer (`raw`, often a JSON error body itself), or the
/// moderation `reasons`.
/// Appends what OpenRouter's `error.metadata` says (see [`metadata_detail`])
/// to `message`, the message of `error`.
pub(crate) fn append_metadata(message: &mut String, error: &serde_json::Value) {
    if let Some(detail) = error.get("metadata").and_then(metadata_detail) {
        message.push_str(" — ");
        message.push_str(&detail);
    }
}

fn metadata_detail(metadata: &serde_json::Value) -> Option<String> {
    let raw = metadata.get("raw").and_then(|raw| match raw {
        serde_json::Value::String(text) => Some(
            serde_json::from_str::<serde_json::Value>(text)
                .ok()
                .and_then(|inner| inner.get("error").and_then(message_of))
                .unwrap_or_else(|| text.trim().to_owned()),
        ),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    });
    let reasons = metadata
        .get("reasons")
        .and_then(serde_json::Value::as_array)
        .map(|reasons| {
            let reasons: Vec<&str> = reasons.iter().filter_map(|r| r.as_str()).collect();
            format!("reasons: {}", reasons.join(", "))
        });
    let said: Vec<String> = [raw, reasons]
        .into_iter()
        .flatten()
        .filter(|said| !said.is_empty())
        .collect();
    if said.is_empty() {
        return None;
    }
    let said = said.join("; ");
    Some(
        match metadata.get("provider_name").and_then(|p| p.as_str()) {
            Some(provider) => format!("{provider}: {said}"),
            None => said,
        },
    )
}

/// Parses `retry-after-ms`, then `Retry-After` (seconds or an HTTP date).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    retry_after_from(
        headers.get("retry-after-ms").map(|v| v.as_bytes()),
        headers
            .get(reqwest::header::RETRY_AFTER)
            .map(|v| v.as_bytes()),
    )
}

/// [`retry_after`] from the raw values of `retry-after-ms` and `Retry-After`.
pub(crate) fn retry_after_from(ms: Option<&[u8]>, retry_after: Option<&[u8]>) -> Option<Duration> {
    fn text(v: &[u8]) -> Option<&str> {
        std::str::from_utf8(v).ok().map(str::trim)
    }
    if let Some(ms) = ms
        .and_then(text)
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
    {
        return Some(Duration::from_millis(ms as u64));
    }
    let value = text(retry_after?)?;
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: &[u8]) -> String {
        error_from_body(body).message
    }

    #[test]
    fn keeps_the_upstreams_text_code_and_param() {
        let body = error_from_body(
            br#"{"error":{"message":"This model's maximum context length is 8192 tokens","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
        );
        assert_eq!(body.code.as_deref(), Some("context_length_exceeded"));
        assert_eq!(body.param.as_deref(), Some("messages"));
        let openrouter =
            error_from_body(br#"{"error":{"code":402,"message":"Insufficient credits"}}"#);
        assert_eq!((openrouter.code, openrouter.param), (None, None));
    }

    #[test]
    fn finds_the_message_in_every_upstream_shape() {
        assert_eq!(
            message(br#"{"error":"model 'x' not found"}"#),
            "model 'x' not found"
        );
        assert_eq!(
            message(br#"{"error":{"message":"Invalid Authentication","type":"invalid_authentication_error"}}"#),
            "Invalid Authentication (invalid_authentication_error)"
        );
        assert_eq!(
            message(br#"{"error":{"code":402,"message":"Insufficient credits"}}"#),
            "Insufficient credits"
        );
        assert_eq!(
            message(
                br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            ),
            "Overloaded (overloaded_error)"
        );
        // OpenRouter passing on a provider's refusal, and a moderation refusal.
        assert_eq!(
            message(
                br#"{"error":{"code":400,"message":"Provider returned error","metadata":{"raw":"{\"error\":{\"message\":\"thinking is enabled but reasoning_content is missing\",\"type\":\"invalid_request_error\"}}","provider_name":"Moonshot"}}}"#
            ),
            "Provider returned error — Moonshot: thinking is enabled but reasoning_content is missing (invalid_request_error)"
        );
        assert_eq!(
            message(
                br#"{"error":{"code":403,"message":"Input flagged","metadata":{"reasons":["harassment","violence"],"flagged_input":"..."}}}"#
            ),
            "Input flagged — reasons: harassment, violence"
        );
        assert_eq!(
            message(
                br#"{"error":{"code":502,"message":"Provider returned error","metadata":{"raw":"upstream timed out","provider_name":"Fireworks"}}}"#
            ),
            "Provider returned error — Fireworks: upstream timed out"
        );
        assert_eq!(
            message(
                br#"{"error":{"code":502,"message":"Provider returned error","metadata":{"raw":null}}}"#
            ),
            "Provider returned error"
        );
        assert_eq!(message(b"Bad Gateway\n"), "Bad Gateway");
        assert_eq!(message(b""), "no error message");
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let body = "é".repeat(3_000);
        let message = message(body.as_bytes());
        assert!(message.len() <= 2_004);
        assert!(message.ends_with('…'));
    }

    #[test]
    fn retry_after_reads_seconds_millis_and_dates() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert("retry-after-ms", "1500".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}
