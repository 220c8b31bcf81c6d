//! Who may call what (seed ADR-003): bearer tokens with a scope, an IP
//! allowlist, and per-token rate limits.
//!
//! Tokens are never kept in memory as given: each configured token (read from
//! its file, or given as a SHA-256 digest so the config holds no secret) is
//! kept as its digest, and a presented token is hashed and compared with every
//! digest in constant time, so neither timing nor an early exit tells how much
//! of a guess was right.
//!
//! Scopes: `client` tokens reach `/v1/*`; `admin` tokens reach everything,
//! including `/admin/*`, `/mcp` and (unless `protect_metrics = false`) `/metrics`.
//! `/healthz` and the console's static page and assets are always open; the
//! console sends the operator's token with each API call.
//!
//! Requests per minute are limited with `governor` (GCRA). Tokens per minute
//! are charged after the answer, when the upstream has said how many it used,
//! which a GCRA cell count cannot take after the fact; they use a bucket that
//! may go into debt, and a caller in debt waits until it is paid back.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The header the guard sets to the authenticated token's name (any incoming
/// one is dropped). A `HeaderName`, not a `&str`: a name given as text is
/// parsed and checked again on every lookup.
pub const CALLER: axum::http::HeaderName =
    axum::http::HeaderName::from_static("x-lakehouse-caller");

/// `[auth]` in `lakehouse.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Bearer tokens; with none, every route is open (fine on loopback only).
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Networks (CIDR, e.g. `10.0.0.0/8`, `::1/128`) allowed to connect; empty: any.
    #[serde(default)]
    pub allow_ips: Vec<String>,
    /// `/metrics` needs an admin token (when tokens are configured).
    #[serde(default = "default_true")]
    pub protect_metrics: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            tokens: Vec::new(),
            allow_ips: Vec::new(),
            protect_metrics: true,
        }
    }
}

fn default_true() -> bool {
    true
}

/// One `[[auth.tokens]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who this token is (logs, metrics, rate limits).
    pub name: String,
    pub scope: Scope,
    /// File holding the token (first line), relative to the config file; keep it mode 600.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Or the token's SHA-256 as hex (`printf %s "$TOKEN" | sha256sum`).
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Client,
    Admin,
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    Client,
    Admin,
}

/// Why a request is refused; mapped to an OpenAI error at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("the client address {0} is not in [auth].allow_ips")]
    Address(IpAddr),
    #[error("missing bearer token: send `Authorization: Bearer <token>`")]
    MissingToken,
    #[error("the bearer token is not valid")]
    InvalidToken,
    #[error("token {0:?} is a client token; this route needs an admin token")]
    NeedsAdmin(String),
    #[error("token {name:?} is over its {what} limit; retry in {} s", .retry_after.as_secs().max(1))]
    RateLimited {
        name: String,
        what: &'static str,
        retry_after: Duration,
    },
}

impl Denied {
    /// A short, stable name for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Address(_) => "ip_not_allowed",
            Self::MissingToken => "missing_token",
            Self::InvalidToken => "invalid_token",
            Self::NeedsAdmin(_) => "insufficient_scope",
            Self::RateLimited { .. } => "rate_limited",
        }
    }
}

/// A network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Network {
    base: IpAddr,
    prefix: u8,
}

impl Network {
    fn parse(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let base: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR network"))?;
        let max = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0-{max}"))?,
        };
        Ok(Self { base, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        // IPv4 clients may arrive as IPv4-mapped IPv6 on a dual-stack socket.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.base, ip) {
            (IpAddr::V4(base), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(base) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(base), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(base) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// A tokens-per-minute budget that may go into debt: an answer is charged
/// in full once its size is known, and the caller waits while in debt.
#[derive(Debug)]
struct TokenBudget {
    per_minute: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBudget {
    fn new(per_minute: u64) -> Self {
        let per_minute = per_minute as f64;
        Self {
            per_minute,
            state: Mutex::new((per_minute, Instant::now())),
        }
    }

    /// The balance now, refilled for the time since the last look.
    fn refill(&self, state: &mut (f64, Instant)) -> f64 {
        let now = Instant::now();
        let earned = now.duration_since(state.1).as_secs_f64() * self.per_minute / 60.0;
        state.0 = (state.0 + earned).min(self.per_minute);
        state.1 = now;
        state.0
    }

    fn check(&self) -> Result<(), Duration> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let balance = self.refill(&mut state);
        if balance > 0.0 {
            return Ok(());
        }
        let seconds = (-balance + 1.0) * 60.0 / self.per_minute;
        Err(Duration::from_secs_f64(seconds.clamp(1.0, 3600.0)))
    }

    fn charge(&self, tokens: u64) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.refill(&mut state);
        state.0 -= tokens as f64;
    }
}

struct Token {
    name: String,
    scope: Scope,
    digest: [u8; 32],
    requests: Option<DefaultDirectRateLimiter>,
    tokens: Option<TokenBudget>,
}

/// The loaded `[auth]` section.
pub struct Auth {
    tokens: Vec<Token>,
    allow: Vec<Network>,
    protect_metrics: bool,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.tokens.iter().map(|t| t.name.as_str()).collect();
        f.debug_struct("Auth")
            .field("tokens", &names)
            .field("allow", &self.allow)
            .finish()
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

fn parse_hex_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Auth {
    /// Loads token files and validates every entry. Errors name the key and
    /// the reason: `Err((key, reason))`.
    pub fn load(config: &AuthConfig) -> Result<Self, (String, String)> {
        let mut tokens: Vec<Token> = Vec::new();
        for (i, t) in config.tokens.iter().enumerate() {
            let key = |field: &str| format!("auth.tokens[{i}].{field}");
            if t.name.is_empty()
                || t.name.len() > 64
                || !t.name.chars().all(|c| c.is_ascii_graphic())
            {
                return Err((key("name"), "must be 1-64 printable characters".into()));
            }
            if tokens.iter().any(|other| other.name == t.name) {
                return Err((key("name"), format!("{:?} is used twice", t.name)));
            }
            let digest = match (&t.token_file, &t.sha256) {
                (Some(path), None) => {
                    let text = std::fs::read_to_string(path).map_err(|e| {
                        (
                            key("token_file"),
                            format!("cannot read {}: {e}", path.display()),
                        )
                    })?;
                    let token = text.lines().next().unwrap_or_default().trim();
                    if token.len() < 16 {
                        return Err((
                            key("token_file"),
                            format!(
                                "{} must hold a token of at least 16 characters",
                                path.display()
                            ),
                        ));
                    }
                    digest(token.as_bytes())
                }
                (None, Some(hex)) => parse_hex_digest(hex).ok_or_else(|| {
                    (
                        key("sha256"),
                        "must be 64 hex digits (printf %s \"$TOKEN\" | sha256sum)".into(),
                    )
                })?,
                _ => {
                    return Err((
                        format!("auth.tokens[{i}]"),
                        "set exactly one of token_file or sha256".into(),
                    ));
                }
            };
            let requests = match t.requests_per_minute {
                None => None,
                Some(n) => {
                    let n = NonZeroU32::new(n)
                        .ok_or_else(|| (key("requests_per_minute"), "must be at least 1".into()))?;
                    Some(RateLimiter::direct(Quota::per_minute(n)))
                }
            };
            let budget = match t.tokens_per_minute {
                None => None,
                Some(0) => return Err((key("tokens_per_minute"), "must be at least 1".into())),
                Some(n) => Some(TokenBudget::new(n)),
            };
            tokens.push(Token {
                name: t.name.clone(),
                scope: t.scope,
                digest,
                requests,
                tokens: budget,
            });
        }
        let allow = config
            .allow_ips
            .iter()
            .enumerate()
            .map(|(i, text)| Network::parse(text).map_err(|e| (format!("auth.allow_ips[{i}]"), e)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            tokens,
            allow,
            protect_metrics: config.protect_metrics,
        })
    }

    /// Tokens are configured: routes other than public ones need one.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    fn has_admin_token(&self) -> bool {
        self.tokens.iter().any(|t| t.scope == Scope::Admin)
    }

    /// Why serving on `listen` would expose the admin API to the network, if it would.
    pub fn exposure_error(&self, listen: SocketAddr) -> Option<String> {
        if listen.ip().is_loopback() || self.has_admin_token() {
            return None;
        }
        Some(format!(
            "refusing to serve on {listen}: /admin would be open to the network without an admin token.\n  \
             Add one to lakehouse.toml, e.g.\n    [[auth.tokens]]\n    name = \"ops\"\n    scope = \"admin\"\n    \
             token_file = \"secrets/admin.token\"\n  or listen on a loopback address (127.0.0.1:3110) behind your reverse proxy."
        ))
    }

    /// What `path` needs.
    pub fn access(&self, path: &str) -> Access {
        if path == "/healthz" || path == "/admin" || path.starts_with("/admin/assets/") {
            return Access::Public;
        }
        if path == "/metrics" {
            return if self.protect_metrics {
                Access::Admin
            } else {
                Access::Public
            };
        }
        if path.starts_with("/v1/") || path == "/v1" {
            return Access::Client;
        }
        // Everything else, `/mcp` included (its tools read the store and write memory).
        Access::Admin
    }

    /// Whether [`Self::check`] needs the peer's address (`allow_ips` is set).
    pub fn checks_addresses(&self) -> bool {
        !self.allow.is_empty()
    }

    /// Checks the peer address, the token and the token's request rate.
    /// Returns the token's name when one was presented and accepted.
    pub fn check(
        &self,
        peer: Option<IpAddr>,
        path: &str,
        authorization: Option<&[u8]>,
    ) -> Result<Option<String>, Denied> {
        if !self.allow.is_empty() {
            // Without a known peer (in-process calls) the allowlist cannot pass anyone.
            let ip = peer.ok_or(Denied::Address(IpAddr::from([0, 0, 0, 0])))?;
            if !self.allow.iter().any(|n| n.contains(ip)) {
                return Err(Denied::Address(ip));
            }
        }
        let access = self.access(path);
        if !self.enabled() || access == Access::Public {
            return Ok(None);
        }
        let presented = authorization
            .and_then(|v| {
                let v = std::str::from_utf8(v).ok()?;
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(Denied::MissingToken)?;
        let token = self.identify(presented).ok_or(Denied::InvalidToken)?;
        if access == Access::Admin && token.scope != Scope::Admin {
            return Err(Denied::NeedsAdmin(token.name.clone()));
        }
        if let Some(limiter) = &token.requests
            && let Err(not_until) = limiter.check()
        {
            return Err(Denied::RateLimited {
                name: token.name.clone(),
                what: "requests per minute",
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            });
        }
        if let Some(budget) = &token.tokens {
            budget.check().map_err(|retry_after| Denied::RateLimited {
                name: token.name.clone(),
                what: "tokens per minute",
                retry_after,
            })?;
        }
        Ok(Some(token.name.clone()))
    }

    /// Every digest is compared, whatever matched first.
    fn identify(&self, presented: &str) -> Option<&Token> {
        let wanted = digest(presented.as_bytes());
        let mut found = None;
        for token in &self.tokens {
            if bool::from(token.digest.as_slice().ct_eq(wanted.as_slice())) {
                found = Some(token);
            }
        }
        found
    }

    /// Charges `tokens` (prompt + completion) to the named token's budget.
    pub fn charge(&self, name: &str, tokens: u64) {
        if let Some(budget) = self
            .tokens
            .iter()
            .find(|t| t.name == name)
            .and_then(|t| t.tokens.as_ref())
        {
            budget.charge(tokens);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn auth(extra: &str) -> Auth {
        let client = hex(&digest(b"client-token-0123456789"));
        let admin = hex(&digest(b"admin-token-0123456789"));
        let toml = format!(
            r#"
tokens = [
  {{ name = "app", scope = "client", sha256 = "{client}", requests_per_minute = 2 }},
  {{ name = "ops", scope = "admin", sha256 = "{admin}" }},
]
{extra}
"#
        );
        let config: AuthConfig = toml::from_str(&toml).unwrap();
        Auth::load(&config).unwrap()
    }

    const LOCAL: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

    #[test]
    fn scopes_decide_who_reaches_what() {
        let a = auth("");
        let client = Some(b"Bearer client-token-0123456789".as_slice());
        let admin = Some(b"bearer admin-token-0123456789".as_slice());
        assert_eq!(a.check(LOCAL, "/healthz", None), Ok(None));
        assert_eq!(a.check(LOCAL, "/admin", None), Ok(None));
        assert_eq!(
            a.check(LOCAL, "/v1/models", None),
            Err(Denied::MissingToken)
        );
        assert_eq!(
            a.check(LOCAL, "/v1/models", Some(b"Bearer nope")),
            Err(Denied::InvalidToken)
        );
        assert_eq!(
            a.check(LOCAL, "/v1/models", Some(b"Basic client-token-0123456789")),
            Err(Denied::MissingToken)
        );
        assert_eq!(a.check(LOCAL, "/v1/models", client), Ok(Some("app".into())));
        assert!(a.check(LOCAL, "/v1/chat/completions", client).is_ok());
        assert_eq!(
            a.check(LOCAL, "/admin/corpora", client),
            Err(Denied::NeedsAdmin("app".into()))
        );
        assert_eq!(
            a.check(LOCAL, "/metrics", client),
            Err(Denied::NeedsAdmin("app".into()))
        );
        assert_eq!(
            a.check(LOCAL, "/admin/corpora", admin),
            Ok(Some("ops".into()))
        );
        assert_eq!(a.check(LOCAL, "/v1/models", admin), Ok(Some("ops".into())));
        assert_eq!(a.check(LOCAL, "/metrics", admin), Ok(Some("ops".into())));
        // The client token's 2 requests per minute were used by the two /v1 passes above
        // (refusals by scope do not count against it).
        assert!(matches!(
            a.check(LOCAL, "/v1/models", client),
            Err(Denied::RateLimited {
                what: "requests per minute",
                ..
            })
        ));
    }

    #[test]
    fn open_metrics_and_no_tokens_mean_public() {
        let a = auth("protect_metrics = false");
        assert_eq!(a.check(LOCAL, "/metrics", None), Ok(None));
        let open = Auth::load(&AuthConfig::default()).unwrap();
        assert!(!open.enabled());
        assert_eq!(open.check(LOCAL, "/admin/corpora", None), Ok(None));
    }

    #[test]
    fn the_allowlist_matches_cidrs_and_mapped_addresses() {
        let a = auth(r#"allow_ips = ["10.1.0.0/16", "::1", "127.0.0.1/32"]"#);
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(a.check(ip("10.1.200.3"), "/healthz", None), Ok(None));
        assert_eq!(a.check(ip("::ffff:10.1.0.9"), "/healthz", None), Ok(None));
        assert_eq!(a.check(ip("::1"), "/healthz", None), Ok(None));
        assert_eq!(
            a.check(ip("10.2.0.1"), "/healthz", None),
            Err(Denied::Address("10.2.0.1".parse().unwrap()))
        );
        assert!(a.check(None, "/healthz", None).is_err());
        for bad in ["10.0.0.0/33", "nope", "::1/129"] {
            let config: AuthConfig = toml::from_str(&format!("allow_ips = [{bad:?}]")).unwrap();
            let err = Auth::load(&config).unwrap_err();
            assert_eq!(err.0, "auth.allow_ips[0]");
        }
        assert!(
            Network::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
    }

    #[test]
    fn token_budgets_go_into_debt_and_refuse_until_repaid() {
        let budget = TokenBudget::new(600);
        assert!(budget.check().is_ok());
        budget.charge(900);
        // 300 tokens in debt at 10 per second: about 30 s to wait.
        let wait = budget.check().unwrap_err();
        assert!((29.0..=31.5).contains(&wait.as_secs_f64()), "{wait:?}");
    }

    #[test]
    fn exposure_needs_an_admin_token_off_loopback() {
        let open = Auth::load(&AuthConfig::default()).unwrap();
        assert!(
            open.exposure_error("127.0.0.1:3110".parse().unwrap())
                .is_none()
        );
        assert!(open.exposure_error("[::1]:3110".parse().unwrap()).is_none());
        let message = open
            .exposure_error("0.0.0.0:3110".parse().unwrap())
            .unwrap();
        assert!(message.contains("[[auth.tokens]]") && message.contains("scope = \"admin\""));
        assert!(
            auth("")
                .exposure_error("0.0.0.0:3110".parse().unwrap())
                .is_none()
        );
    }

    #[test]
    fn bad_token_entries_name_their_key() {
        let config: AuthConfig =
            toml::from_str(r#"tokens = [{ name = "x", scope = "client" }]"#).unwrap();
        assert_eq!(Auth::load(&config).unwrap_err().0, "auth.tokens[0]");
        let config: AuthConfig =
            toml::from_str(r#"tokens = [{ name = "x", scope = "client", sha256 = "abc" }]"#)
                .unwrap();
        assert_eq!(Auth::load(&config).unwrap_err().0, "auth.tokens[0].sha256");
        let config: AuthConfig = toml::from_str(
            r#"tokens = [{ name = "x", scope = "client", token_file = "/nonexistent/t" }]"#,
        )
        .unwrap();
        let err = Auth::load(&config).unwrap_err();
        assert_eq!(err.0, "auth.tokens[0].token_file");
        assert!(err.1.contains("/nonexistent/t"));
    }
}
