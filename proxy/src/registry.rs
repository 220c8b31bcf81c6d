//! Builds the provider registry and the store's embedders from the config and the key files.

use std::sync::Arc;

use lakehouse_providers::adapters::{
    kimi::Kimi, ollama::Ollama, openai_compat::OpenAiCompatible, opencode::OpenCodeZen,
};
use lakehouse_providers::http::{Auth, Timeouts, Upstream};
use lakehouse_providers::router::{KIMI, OLLAMA, OLLAMA_CLOUD, OPENCODE, Registry};
use lakehouse_providers::secrets::load_key;
use lakehouse_providers::{ChatProvider, ProviderError};

use lakehouse_memory::{Pathway, Playbook};
use lakehouse_plugins::downgrade::DowngradeGate;
use lakehouse_plugins::matrix::MatrixPlugin;
use lakehouse_plugins::pathway::PathwayPlugin;
use lakehouse_plugins::playbook::PlaybookPlugin;
use lakehouse_plugins::{Pipeline, Plugin};
use lakehouse_retrieval::embed::{
    Embedder, Embedders, LOCAL, LocalEmbedder, OllamaEmbedder, OpenAiEmbedder,
};
use lakehouse_retrieval::objects::Objects;
use lakehouse_retrieval::{Store, StoreError};

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
    let upstream = Upstream::new(&settings.name, &settings.base_url, auth, timeouts)?
        .with_headers(&settings.headers)?;
    Ok(match settings.name.as_str() {
        OLLAMA | OLLAMA_CLOUD => Arc::new(Ollama::new(upstream)),
        OPENCODE => Arc::new(OpenCodeZen::new(upstream)?),
        KIMI => Arc::new(Kimi::new(upstream)),
        // OpenRouter and custom providers speak OpenAI chat/completions.
        _ => Arc::new(OpenAiCompatible::new(upstream)),
    })
}

/// The embedders the config asks for: always the built-in `local`, plus Ollama
/// models on the `ollama` provider's URL and OpenAI-compatible endpoints.
pub fn build_embedders(config: &Config) -> Result<Embedders, StoreError> {
    let mut embedders: Vec<Arc<dyn Embedder>> = vec![Arc::new(LocalEmbedder::default())];
    let timeouts = Timeouts {
        connect: std::time::Duration::from_secs(5),
        read: std::time::Duration::from_secs(120),
    };
    if let Some(ollama) = config
        .provider_settings()
        .into_iter()
        .find(|p| p.name == OLLAMA)
    {
        for model in &config.embeddings.ollama_models {
            let upstream = Upstream::new(OLLAMA, &ollama.base_url, Auth::None, timeouts)?;
            embedders.push(Arc::new(OllamaEmbedder::new(model, upstream)));
        }
    }
    for e in &config.embeddings.openai {
        let auth = match &e.key_file {
            None => Auth::None,
            Some(file) => Auth::Bearer(
                load_key(file, "EMBEDDINGS_API_KEY")
                    .map_err(|reason| StoreError::Embed(format!("{}: {reason}", e.name)))?,
            ),
        };
        let upstream = Upstream::new(&e.name, &e.base_url, auth, timeouts)?;
        embedders.push(Arc::new(OpenAiEmbedder::new(&e.name, &e.model, upstream)));
    }
    Ok(Embedders::new(
        embedders,
        config.embeddings.cache_mb * 1024 * 1024,
    ))
}

/// Opens the object store and the lakehouse store on it.
pub async fn open_store(config: &Config) -> Result<Store, StoreError> {
    let objects = Objects::open(&config.store)?;
    Store::open(objects, build_embedders(config)?, config.query).await
}

/// The built-in plugins, in the configured order.
pub fn build_pipeline(
    config: &Config,
    store: &Arc<Store>,
    pathway: &Arc<Pathway>,
    playbook: &Arc<Playbook>,
) -> Pipeline {
    let p = &config.plugins;
    let resolve = |model: &str| -> String {
        model
            .strip_prefix("tier/")
            .and_then(|tier| config.models.get(tier))
            .unwrap_or(model)
            .to_owned()
    };
    let plugins: Vec<Arc<dyn Plugin>> = vec![
        Arc::new(DowngradeGate::new(
            config
                .models
                .weak_models
                .iter()
                .map(|m| resolve(m))
                .collect(),
            config.models.get("local_fast").map(resolve),
            p.downgrade.clone(),
            Arc::clone(playbook),
            Arc::clone(store),
            LOCAL.to_owned(),
        )),
        Arc::new(MatrixPlugin::new(Arc::clone(store), p.matrix.clone())),
        Arc::new(PathwayPlugin::new(Arc::clone(pathway), p.pathway.clone())),
        Arc::new(PlaybookPlugin::new(
            Arc::clone(playbook),
            Arc::clone(store),
            p.playbook.clone(),
        )),
    ];
    Pipeline::new(plugins, p.clone())
}
