//! The downgrade gate, driven by the `[models]` tiers.
//!
//! Weak models (`[models].weak_models`) get the full retrieval context; strong
//! models a reduced one (`reduced_k` sources within `reduced_token_budget`),
//! since they need less help and every injected token costs. With the cost
//! downgrade on (config or `lakehouse.downgrade`), a query near-identical to one
//! the playbook holds a well-rated answer for is routed to `[models].local_fast`.

use std::sync::Arc;

use futures::future::BoxFuture;
use lakehouse_memory::Playbook;
use lakehouse_retrieval::Store;
use serde_json::json;

use crate::config::{DowngradeConfig, PluginName};
use crate::context::ChatContext;
use crate::pipeline::Plugin;

/// The context a model gets: `full` for weak models, `reduced` for the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextLimits {
    pub context: &'static str,
    pub k: usize,
    pub token_budget: usize,
}

/// The gate's decision for `model`, from the `k` and `token_budget` asked for.
pub fn context_for(
    weak_models: &[String],
    config: &DowngradeConfig,
    model: &str,
    k: usize,
    token_budget: usize,
) -> ContextLimits {
    if weak_models.iter().any(|m| m == model) {
        ContextLimits {
            context: "full",
            k,
            token_budget,
        }
    } else {
        ContextLimits {
            context: "reduced",
            k: k.min(config.reduced_k),
            token_budget: token_budget.min(config.reduced_token_budget),
        }
    }
}

pub struct DowngradeGate {
    weak_models: Vec<String>,
    local_fast: Option<String>,
    config: DowngradeConfig,
    playbook: Arc<Playbook>,
    store: Arc<Store>,
    /// Embedder of the queries compared with playbook outcomes.
    embedder: String,
}

impl DowngradeGate {
    pub fn new(
        weak_models: Vec<String>,
        local_fast: Option<String>,
        config: DowngradeConfig,
        playbook: Arc<Playbook>,
        store: Arc<Store>,
        embedder: String,
    ) -> Self {
        Self {
            weak_models,
            local_fast,
            config,
            playbook,
            store,
            embedder,
        }
    }

    async fn cheaper_model(&self, ctx: &mut ChatContext) -> Result<(), String> {
        let Some(local_fast) = &self.local_fast else {
            return Ok(());
        };
        if ctx.target_model == *local_fast || ctx.query.trim().is_empty() {
            return Ok(());
        }
        let vector = match ctx.query_vectors.get(&self.embedder) {
            Some(v) => v.clone(),
            None => {
                let v = self
                    .store
                    .embed_query(&self.embedder, &ctx.query)
                    .await
                    .map_err(|e| e.to_string())?;
                ctx.query_vectors.insert(self.embedder.clone(), v.clone());
                v
            }
        };
        let found = self
            .playbook
            .best_match(
                &self.embedder,
                &vector,
                self.config.min_similarity,
                self.config.min_rating,
            )
            .await;
        if let Some((outcome, similarity)) = found {
            ctx.annotations.downgrade = Some(json!({
                "from": ctx.target_model,
                "to": local_fast,
                "reason": "a well-rated answer to a near-identical query exists",
                "outcome": outcome.id,
                "similarity": similarity,
                "rating": outcome.rating,
            }));
            ctx.target_model.clone_from(local_fast);
        }
        Ok(())
    }
}

impl Plugin for DowngradeGate {
    fn name(&self) -> PluginName {
        PluginName::Downgrade
    }

    fn applies(&self, ctx: &ChatContext) -> bool {
        !ctx.corpora.is_empty() || ctx.memory || ctx.cost_downgrade
    }

    fn pre<'a>(&'a self, ctx: &'a mut ChatContext) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            if ctx.cost_downgrade || self.config.cost_downgrade {
                self.cheaper_model(ctx).await?;
            }
            let limits = context_for(
                &self.weak_models,
                &self.config,
                &ctx.target_model,
                ctx.k,
                ctx.token_budget,
            );
            ctx.k = limits.k;
            ctx.token_budget = limits.token_budget;
            ctx.annotations.context = Some(limits.context);
            Ok(())
        })
    }
}
