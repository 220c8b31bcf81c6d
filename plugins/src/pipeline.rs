//! The [`Plugin`] trait and the [`Pipeline`] that runs plugins around a chat.
//!
//! Pre hooks run in the configured order, each under its own timeout. An
//! optional plugin that fails or times out is recorded (`degraded: true` and
//! its status in the annotations) and the chat goes on without it; a required
//! one fails the chat. After the pre hooks, the pipeline ranks the candidate
//! sources (score + boost), applies the relevance filter and injects sources
//! and memories as one system message, placed after the caller's own leading
//! system messages. Post hooks see the assembled answer.

use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use lakehouse_providers::openai::{Message, Role};
use lakehouse_retrieval::matrix::{FilterLimits, relevance_filter, sort_best_first};

use crate::config::{PluginName, PluginsConfig};
use crate::context::{Annotations, ChatContext, ChatResult, MemoryNote, PluginRun, SourceNote};
use crate::error::PluginError;

/// A hook pair around a chat. Hooks should finish their slow work before they
/// change the context: a hook cut off by its timeout leaves what it changed.
pub trait Plugin: Send + Sync {
    fn name(&self) -> PluginName;

    /// Whether this chat gives the plugin anything to do; skipped (at no cost) otherwise.
    fn applies(&self, ctx: &ChatContext) -> bool;

    /// Before the upstream call: may rewrite the request and the context.
    fn pre<'a>(&'a self, ctx: &'a mut ChatContext) -> BoxFuture<'a, Result<(), String>>;

    /// After the answer is complete (for streams, assembled as it passed).
    fn post<'a>(
        &'a self,
        _ctx: &'a ChatContext,
        _result: &'a ChatResult,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

pub struct Pipeline {
    plugins: Vec<Arc<dyn Plugin>>,
    config: PluginsConfig,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.plugins.iter().map(|p| p.name().as_str()).collect();
        f.debug_struct("Pipeline").field("plugins", &names).finish()
    }
}

/// How a hook ended.
enum Outcome {
    Ok,
    Failed(String),
    TimedOut,
}

impl Pipeline {
    /// `plugins` are run in `config.order`; plugins not in the order are dropped.
    pub fn new(mut plugins: Vec<Arc<dyn Plugin>>, config: PluginsConfig) -> Self {
        plugins.retain(|p| config.order.contains(&p.name()));
        plugins.sort_by_key(|p| config.order.iter().position(|n| *n == p.name()));
        Self { plugins, config }
    }

    pub fn config(&self) -> &PluginsConfig {
        &self.config
    }

    fn active<'a>(&'a self, ctx: &'a ChatContext) -> impl Iterator<Item = &'a Arc<dyn Plugin>> {
        self.plugins.iter().filter(|p| ctx.runs(p.name()))
    }

    async fn run_hook<'a>(
        &self,
        plugin: &dyn Plugin,
        hook: BoxFuture<'a, Result<(), String>>,
    ) -> (Outcome, f64) {
        let limits = self.config.limits(plugin.name());
        let started = Instant::now();
        let outcome = match tokio::time::timeout(limits.timeout, hook).await {
            Ok(Ok(())) => Outcome::Ok,
            Ok(Err(message)) => Outcome::Failed(message),
            Err(_) => Outcome::TimedOut,
        };
        (outcome, started.elapsed().as_secs_f64() * 1000.0)
    }

    /// Runs the pre hooks, then ranks, filters and injects the context.
    pub async fn pre(&self, ctx: &mut ChatContext) -> Result<(), PluginError> {
        // The plugins borrow `self`, not `ctx`, so the hooks may change the
        // context between them without a list of the active ones built first.
        for plugin in &self.plugins {
            if !ctx.runs(plugin.name()) || !plugin.applies(ctx) {
                continue;
            }
            let name = plugin.name();
            let (outcome, ms) = self.run_hook(plugin.as_ref(), plugin.pre(ctx)).await;
            let limits = self.config.limits(name);
            let (status, error) = match outcome {
                Outcome::Ok => ("ok", None),
                Outcome::Failed(message) if limits.required => {
                    return Err(PluginError::Failed {
                        plugin: name.as_str().into(),
                        message,
                    });
                }
                Outcome::TimedOut if limits.required => {
                    return Err(PluginError::Timeout {
                        plugin: name.as_str().into(),
                        ms: limits.timeout.as_millis() as u64,
                    });
                }
                Outcome::Failed(message) => ("failed", Some(message)),
                Outcome::TimedOut => (
                    "timeout",
                    Some(format!(
                        "no answer within {} ms",
                        limits.timeout.as_millis()
                    )),
                ),
            };
            if let Some(error) = &error {
                tracing::warn!(
                    plugin = name.as_str(),
                    "plugin skipped for this chat: {error}"
                );
                ctx.annotations.degraded = true;
            }
            ctx.annotations.plugins.push(PluginRun {
                name: name.as_str(),
                status,
                ms,
                error,
            });
        }
        self.inject(ctx);
        Ok(())
    }

    /// Post hooks: failures are logged and never change the answer. Returns
    /// how each hook ended, for the caller's metrics.
    pub async fn post(&self, ctx: &ChatContext, result: &ChatResult) -> Vec<PluginRun> {
        let mut runs = Vec::new();
        for plugin in self.active(ctx) {
            if !plugin.applies(ctx) {
                continue;
            }
            let name = plugin.name().as_str();
            let (outcome, ms) = self
                .run_hook(plugin.as_ref(), plugin.post(ctx, result))
                .await;
            let (status, error) = match outcome {
                Outcome::Ok => ("ok", None),
                Outcome::Failed(e) => {
                    tracing::warn!(plugin = name, ms, "post hook failed: {e}");
                    ("failed", Some(e))
                }
                Outcome::TimedOut => {
                    tracing::warn!(plugin = name, ms, "post hook timed out");
                    ("timeout", Some("post hook timed out".to_owned()))
                }
            };
            runs.push(PluginRun {
                name,
                status,
                ms,
                error,
            });
        }
        runs
    }

    /// Ranks candidates, keeps the best within `k` and the token budget, and
    /// writes them (and the memories) into one system message.
    fn inject(&self, ctx: &mut ChatContext) {
        let mut candidates = std::mem::take(&mut ctx.sources);
        sort_best_first(&mut candidates);
        ctx.sources = relevance_filter(
            candidates,
            FilterLimits {
                k: ctx.k,
                duplicate_overlap: self.config.matrix.duplicate_overlap,
                token_budget: ctx.token_budget,
            },
        );
        ctx.annotations.sources = ctx
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| SourceNote {
                n: i + 1,
                corpus: s.corpus.clone(),
                id: s.id.clone(),
                score: s.final_score(),
                similarity: s.similarity,
                boost: s.boost,
            })
            .collect();
        ctx.annotations.memories = ctx
            .memories
            .iter()
            .map(|m| MemoryNote {
                id: m.trace.id.clone(),
                score: m.score,
            })
            .collect();
        let Some(text) = context_message(ctx) else {
            return;
        };
        let at = ctx
            .request
            .messages
            .iter()
            .position(|m| m.role != Role::System && m.role != Role::Developer)
            .unwrap_or(ctx.request.messages.len());
        Arc::make_mut(&mut ctx.request.messages).insert(at, Message::text(Role::System, text));
    }
}

/// The injected system message, or `None` when there is nothing to inject.
pub fn context_message(ctx: &ChatContext) -> Option<String> {
    if ctx.sources.is_empty() && ctx.memories.is_empty() {
        return None;
    }
    let mut text = String::new();
    if !ctx.sources.is_empty() {
        text.push_str(
            "Use the numbered sources below when they help to answer, and cite them as [n]. \
             Ignore sources that do not help.\n",
        );
        for (i, source) in ctx.sources.iter().enumerate() {
            text.push_str(&format!(
                "\n[{}] ({}/{}) {}\n",
                i + 1,
                source.corpus,
                source.id,
                source.text.trim()
            ));
        }
    }
    if !ctx.memories.is_empty() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str("Notes from earlier conversations with this user:\n");
        for memory in &ctx.memories {
            text.push_str(&format!("- {}\n", memory.trace.text.trim()));
        }
    }
    Some(text.trim_end().to_owned())
}

impl ChatContext {
    /// The `lakehouse` field for the client, or `None` when no plugin ran.
    pub fn lakehouse_field(&self) -> Option<serde_json::Value> {
        if self.annotations.plugins.is_empty() {
            return None;
        }
        let mut value = serde_json::to_value(&self.annotations).ok()?;
        if let Some(object) = value.as_object_mut() {
            object.insert("model".into(), self.target_model.clone().into());
        }
        Some(value)
    }
}

impl Annotations {
    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plugin whose pre hook never finishes: only the timeout ends it.
    struct Stalls(PluginName);

    impl Plugin for Stalls {
        fn name(&self) -> PluginName {
            self.0
        }
        fn applies(&self, _ctx: &ChatContext) -> bool {
            true
        }
        fn pre<'a>(&'a self, _ctx: &'a mut ChatContext) -> BoxFuture<'a, Result<(), String>> {
            Box::pin(futures::future::pending())
        }
    }

    fn pipeline(required: bool) -> Pipeline {
        let mut config = PluginsConfig {
            order: vec![PluginName::Pathway],
            ..PluginsConfig::default()
        };
        config.pathway.timeout_ms = 20;
        config.pathway.required = required;
        Pipeline::new(vec![Arc::new(Stalls(PluginName::Pathway))], config)
    }

    fn context() -> ChatContext {
        let request = serde_json::from_value(serde_json::json!({
            "model": "ollama/qwen3:8b",
            "messages": [{"role": "user", "content": "hello"}]
        }));
        ChatContext {
            id: "chatcmpl-test".into(),
            request: request.unwrap(),
            client_model: "ollama/qwen3:8b".into(),
            target_model: "ollama/qwen3:8b".into(),
            namespace: "default".into(),
            corpora: Vec::new(),
            k: 4,
            token_budget: 1000,
            memory: true,
            cost_downgrade: false,
            enabled: vec![PluginName::Pathway],
            query: "hello".into(),
            query_vectors: Default::default(),
            sources: Vec::new(),
            memories: Vec::new(),
            annotations: Default::default(),
        }
    }

    #[tokio::test]
    async fn a_slow_optional_plugin_is_cut_off_and_the_chat_goes_on() {
        let mut ctx = context();
        pipeline(false).pre(&mut ctx).await.unwrap();
        assert!(ctx.annotations.degraded);
        let run = &ctx.annotations.plugins[0];
        assert_eq!((run.name, run.status), ("pathway", "timeout"));
        assert_eq!(run.error.as_deref(), Some("no answer within 20 ms"));
        // Nothing to inject: the request reaches the model unchanged.
        assert_eq!(ctx.request.messages.len(), 1);
    }

    #[tokio::test]
    async fn a_slow_required_plugin_fails_the_chat() {
        let mut ctx = context();
        let error = pipeline(true).pre(&mut ctx).await.unwrap_err();
        assert!(
            matches!(error, PluginError::Timeout { ref plugin, ms: 20 } if plugin == "pathway"),
            "{error:?}"
        );
    }
}
