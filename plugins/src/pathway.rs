//! Pathway memory as a plugin: the namespace's relevant memories go in before
//! the chat; a trace of the chat (query, answer summary, model, sources) is
//! added after it.

use std::sync::Arc;

use futures::future::BoxFuture;
use lakehouse_memory::Pathway;
use lakehouse_memory::pathway::{NewTrace, SearchQuery};
use serde_json::{Map, Value, json};

use crate::config::{PathwayConfig, PluginName};
use crate::context::{ChatContext, ChatResult};
use crate::pipeline::Plugin;

pub struct PathwayPlugin {
    pathway: Arc<Pathway>,
    config: PathwayConfig,
}

impl PathwayPlugin {
    pub fn new(pathway: Arc<Pathway>, config: PathwayConfig) -> Self {
        Self { pathway, config }
    }
}

/// The first `max` characters, cut at a character boundary.
fn summary(text: &str, max: usize) -> String {
    let text = text.trim();
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

impl Plugin for PathwayPlugin {
    fn name(&self) -> PluginName {
        PluginName::Pathway
    }

    fn applies(&self, ctx: &ChatContext) -> bool {
        ctx.memory && !ctx.query.trim().is_empty()
    }

    fn pre<'a>(&'a self, ctx: &'a mut ChatContext) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let embedder = self.pathway.embedder().to_owned();
            let vector = match ctx.query_vectors.get(&embedder) {
                Some(v) => v.clone(),
                None => self
                    .pathway
                    .embed_query(&ctx.query)
                    .await
                    .map_err(|e| e.to_string())?,
            };
            let query = SearchQuery {
                namespace: ctx.namespace.clone(),
                query: ctx.query.clone(),
                k: self.config.k,
                min_score: self.config.min_similarity,
                filter: Map::new(),
            };
            ctx.memories = self.pathway.search_vector(&query, &vector).await;
            ctx.query_vectors.insert(embedder, vector);
            ctx.annotations.namespace = Some(ctx.namespace.clone());
            Ok(())
        })
    }

    fn post<'a>(
        &'a self,
        ctx: &'a ChatContext,
        result: &'a ChatResult,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            if result.error.is_some() || result.text.trim().is_empty() {
                return Ok(());
            }
            let answer = summary(&result.text, self.config.summary_chars);
            let sources: Vec<Value> = ctx
                .sources
                .iter()
                .map(|s| json!(format!("{}/{}", s.corpus, s.id)))
                .collect();
            let mut metadata = Map::new();
            metadata.insert("kind".into(), "chat".into());
            metadata.insert("chat_id".into(), ctx.id.clone().into());
            metadata.insert("model".into(), ctx.target_model.clone().into());
            metadata.insert("query".into(), ctx.query.clone().into());
            metadata.insert("answer".into(), answer.clone().into());
            metadata.insert("sources".into(), Value::Array(sources));
            self.pathway
                .add(NewTrace {
                    namespace: ctx.namespace.clone(),
                    text: format!("Q: {}\nA: {answer}", ctx.query.trim()),
                    metadata,
                })
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_cuts_on_characters() {
        assert_eq!(summary("héllo wörld", 5), "héllo…");
        assert_eq!(summary("  short ", 50), "short");
    }
}
