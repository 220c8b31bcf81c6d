//! Builds the provider registry from the config and the key files.

use std::sync::Arc;

use lakehouse_providers::adapters::{
    ollama::Ollama, openai_compat::OpenAiCompatible, opencode::OpenCodeZen,
};
use lakehouse_providers::http::{Auth, Timeouts, Upstream};
use lakehouse_providers::router::{OLLAMA, OLLAMA_CLOUD, OPENCODE, Registry};
use lakehouse_providers::secrets::load_key;
use lakehouse_providers::{ChatProvider, ProviderError};

use crate::config::{Config, ProviderSettings};

/// One registry entry per configured provider: registered, or unregistered with the reason.
pub fn build_registry(config: &Config) -> Result<Registry, ProviderError> {
    let mut registry = Registry::default();
    for settings in config.provider_settings() {
        if !settings.enabled {
            registry.unavailable(
                &settings.name,
                settings.base_url,
                "disabled in config (enabled = false)".into(),
            );
            continue;
        }
        let auth = match &settings.key {
            None => Auth::None,
            Some(source) => match load_key(&source.file, &source.var) {
                Ok(key) => Auth::Bearer(key),
                Err(reason) => {
                    registry.unavailable(&settings.name, settings.base_url, reason.0);
                    continue;
                }
            },
        };
        let provider = adapter(&settings, auth)?;
        registry.register(settings.base_url, provider);
    }
    Ok(registry)
}

fn adapter(
    settings: &ProviderSettings,
    auth: Auth,
) -> Result<Arc<dyn ChatProvider>, ProviderError> {
    let timeouts = Timeouts {
        connect: settings.connect_timeout,
        read: settings.read_timeout,
    };
    let mut upstream = Upstream::new(&settings.name, &settings.base_url, auth, timeouts)?;
    upstream.headers.clone_from(&settings.headers);
    Ok(match settings.name.as_str() {
        OLLAMA | OLLAMA_CLOUD => Arc::new(Ollama::new(upstream)),
        OPENCODE => Arc::new(OpenCodeZen::new(upstream)),
        // OpenRouter, Kimi and custom providers all speak OpenAI chat/completions.
        _ => Arc::new(OpenAiCompatible::new(upstream)),
    })
}
