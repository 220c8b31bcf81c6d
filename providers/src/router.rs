//! Model-prefix routing (DESIGN.md, "Routing by model prefix").
//!
//! An explicit first segment naming a provider (`openrouter/`, `ollama_cloud/`,
//! `opencode/`, `kimi/`, `ollama/`, or a custom provider's name) is stripped
//! and picks that provider. Otherwise a `:cloud` / `-cloud` suffix picks Ollama
//! Cloud (suffix stripped, as its direct API wants bare names). Everything else
//! goes to local Ollama unchanged: Ollama names may hold `/` and `:`, so a slash
//! alone never means anything (trap 11).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::provider::ChatProvider;

pub const OLLAMA: &str = "ollama";
pub const OLLAMA_CLOUD: &str = "ollama_cloud";
pub const OPENROUTER: &str = "openrouter";
pub const OPENCODE: &str = "opencode";
pub const KIMI: &str = "kimi";

/// The five built-in providers, in the order they are listed.
pub const BUILTIN_PROVIDERS: [&str; 5] = [OLLAMA, OLLAMA_CLOUD, OPENROUTER, OPENCODE, KIMI];

/// Where a model string goes, borrowed from it where it can be: routing runs
/// for every chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route<'m> {
    pub provider: &'m str,
    /// The model id the upstream sees.
    pub model: Cow<'m, str>,
}

/// Splits `model` into provider and upstream model. `known` holds every provider
/// name that may be used as a prefix, registered or not.
pub fn route<'m, 'a>(model: &'m str, known: impl IntoIterator<Item = &'a str>) -> Route<'m> {
    if let Some((first, rest)) = model.split_once('/')
        && !rest.is_empty()
        && known.into_iter().any(|k| k == first)
    {
        return Route {
            provider: first,
            model: Cow::Borrowed(rest),
        };
    }
    if let Some(bare) = strip_cloud_suffix(model) {
        return Route {
            provider: OLLAMA_CLOUD,
            model: Cow::Owned(bare),
        };
    }
    Route {
        provider: OLLAMA,
        model: Cow::Borrowed(model),
    }
}

/// `kimi-k2.6:cloud` → `kimi-k2.6`; `gpt-oss:120b-cloud` → `gpt-oss:120b` (Ollama's `modelref` rule).
fn strip_cloud_suffix(model: &str) -> Option<String> {
    let (name, tag) = model.rsplit_once(':')?;
    if name.is_empty() {
        return None;
    }
    if tag == "cloud" {
        return Some(name.to_owned());
    }
    let tag = tag.strip_suffix("-cloud").filter(|t| !t.is_empty())?;
    Some(format!("{name}:{tag}"))
}

/// Whether a provider is usable, and why not.
#[derive(Debug, Clone)]
pub struct ProviderStatus {
    pub name: String,
    pub base_url: String,
    pub registered: bool,
    /// Why it is not registered (missing key file, ...).
    pub reason: Option<String>,
}

/// Why a model cannot be served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RouteError {
    #[error("model {model:?} routes to provider {provider:?}, which is not registered: {reason}")]
    NotRegistered {
        model: String,
        provider: String,
        reason: String,
    },
}

/// The registered providers and the status of every known one.
#[derive(Default)]
pub struct Registry {
    providers: BTreeMap<String, Arc<dyn ChatProvider>>,
    statuses: Vec<ProviderStatus>,
}

impl Registry {
    pub fn register(&mut self, base_url: String, provider: Arc<dyn ChatProvider>) {
        let name = provider.name().to_owned();
        self.statuses.push(ProviderStatus {
            name: name.clone(),
            base_url,
            registered: true,
            reason: None,
        });
        self.providers.insert(name, provider);
    }

    pub fn unavailable(&mut self, name: &str, base_url: String, reason: String) {
        self.statuses.push(ProviderStatus {
            name: name.to_owned(),
            base_url,
            registered: false,
            reason: Some(reason),
        });
    }

    pub fn statuses(&self) -> &[ProviderStatus] {
        &self.statuses
    }

    pub fn providers(&self) -> impl Iterator<Item = &Arc<dyn ChatProvider>> {
        self.providers.values()
    }

    /// Finds the provider for `model` and the model id to send it.
    pub fn resolve(&self, model: &str) -> Result<(&dyn ChatProvider, String), RouteError> {
        let route = route(model, self.statuses.iter().map(|s| s.name.as_str()));
        match self.providers.get(route.provider) {
            Some(p) => Ok((p.as_ref(), route.model.into_owned())),
            None => {
                let reason = self
                    .statuses
                    .iter()
                    .find(|s| s.name == route.provider)
                    .and_then(|s| s.reason.clone())
                    .unwrap_or_else(|| "it is not configured".into());
                Err(RouteError::NotRegistered {
                    model: model.to_owned(),
                    provider: route.provider.to_owned(),
                    reason,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(model: &str) -> (String, String) {
        let route = route(model, BUILTIN_PROVIDERS.iter().copied().chain(["vllm"]));
        (route.provider.to_owned(), route.model.into_owned())
    }

    #[test]
    fn routes_exactly_as_the_design_table() {
        assert_eq!(r("qwen3:8b"), ("ollama".into(), "qwen3:8b".into()));
        assert_eq!(r("ollama/qwen3:8b"), ("ollama".into(), "qwen3:8b".into()));
        assert_eq!(
            r("hf.co/org/repo:Q4_K_M"),
            ("ollama".into(), "hf.co/org/repo:Q4_K_M".into())
        );
        assert_eq!(
            r("user/model:tag"),
            ("ollama".into(), "user/model:tag".into())
        );
        assert_eq!(
            r("ollama_cloud/gpt-oss:120b"),
            ("ollama_cloud".into(), "gpt-oss:120b".into())
        );
        assert_eq!(
            r("kimi-k2.6:cloud"),
            ("ollama_cloud".into(), "kimi-k2.6".into())
        );
        assert_eq!(
            r("gpt-oss:120b-cloud"),
            ("ollama_cloud".into(), "gpt-oss:120b".into())
        );
        assert_eq!(
            r("openrouter/anthropic/claude-sonnet-4.5:free"),
            (
                "openrouter".into(),
                "anthropic/claude-sonnet-4.5:free".into()
            )
        );
        assert_eq!(
            r("opencode/claude-sonnet-4-5"),
            ("opencode".into(), "claude-sonnet-4-5".into())
        );
        assert_eq!(r("kimi/kimi-k2.6"), ("kimi".into(), "kimi-k2.6".into()));
        assert_eq!(r("vllm/meta/llama"), ("vllm".into(), "meta/llama".into()));
        assert_eq!(r("openrouter/"), ("ollama".into(), "openrouter/".into()));
        assert_eq!(r(":cloud"), ("ollama".into(), ":cloud".into()));
    }
}
