//! Playbook boost as a plugin: rated outcomes of similar past queries raise or
//! lower this chat's candidate sources (and bring back well-rated ones that
//! retrieval missed); after the chat, what was shown is remembered so
//! `POST /v1/feedback` can rate it.

use std::collections::HashSet;
use std::sync::Arc;

use futures::future::BoxFuture;
use lakehouse_memory::Playbook;
use lakehouse_memory::playbook::{Shown, SourceRef};
use lakehouse_retrieval::Store;
use lakehouse_retrieval::matrix::Source;

use crate::config::{PlaybookConfig, PluginName};
use crate::context::{ChatContext, ChatResult};
use crate::pipeline::Plugin;

pub struct PlaybookPlugin {
    playbook: Arc<Playbook>,
    store: Arc<Store>,
    config: PlaybookConfig,
}

impl PlaybookPlugin {
    pub fn new(playbook: Arc<Playbook>, store: Arc<Store>, config: PlaybookConfig) -> Self {
        Self {
            playbook,
            store,
            config,
        }
    }

    /// The embedder outcomes of this chat are compared in: the first corpus's.
    async fn query_vector(&self, ctx: &mut ChatContext) -> Result<(String, Vec<f32>), String> {
        let corpus = ctx.corpora.first().ok_or("no corpus")?;
        let embedder = self
            .store
            .corpus_embedder(corpus)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(v) = ctx.query_vectors.get(&embedder) {
            return Ok((embedder, v.clone()));
        }
        let v = self
            .store
            .embed_query(&embedder, &ctx.query)
            .await
            .map_err(|e| e.to_string())?;
        ctx.query_vectors.insert(embedder.clone(), v.clone());
        Ok((embedder, v))
    }
}

impl Plugin for PlaybookPlugin {
    fn name(&self) -> PluginName {
        PluginName::Playbook
    }

    fn applies(&self, ctx: &ChatContext) -> bool {
        !ctx.corpora.is_empty() && !ctx.query.trim().is_empty()
    }

    fn pre<'a>(&'a self, ctx: &'a mut ChatContext) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let (embedder, vector) = self.query_vector(ctx).await?;
            let boosts = self
                .playbook
                .boosts(&embedder, &vector, &self.config.boost)
                .await;
            if boosts.is_empty() {
                return Ok(());
            }
            let mut present = HashSet::new();
            for source in &mut ctx.sources {
                let key = SourceRef {
                    corpus: source.corpus.clone(),
                    id: source.id.clone(),
                };
                source.boost = boosts.get(&key).copied().unwrap_or(0.0);
                present.insert(key);
            }
            // Well-rated sources that retrieval did not bring up this time.
            let mut missing: Vec<(&SourceRef, f32)> = boosts
                .iter()
                .filter(|(key, boost)| {
                    **boost > 0.0 && !present.contains(*key) && ctx.corpora.contains(&key.corpus)
                })
                .map(|(key, boost)| (key, *boost))
                .collect();
            missing.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
            for (key, boost) in missing.into_iter().take(self.config.recall) {
                let found = self
                    .store
                    .doc_similarity(&key.corpus, &key.id, &vector)
                    .await
                    .map_err(|e| e.to_string())?;
                if let Some((doc, similarity)) = found {
                    ctx.sources.push(Source {
                        corpus: key.corpus.clone(),
                        id: doc.id,
                        text: doc.text,
                        similarity,
                        score: similarity,
                        boost,
                    });
                }
            }
            Ok(())
        })
    }

    fn post<'a>(
        &'a self,
        ctx: &'a ChatContext,
        _result: &'a ChatResult,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let Some(corpus) = ctx.corpora.first() else {
                return Ok(());
            };
            let embedder = self
                .store
                .corpus_embedder(corpus)
                .await
                .map_err(|e| e.to_string())?;
            let Some(embedding) = ctx.query_vectors.get(&embedder) else {
                return Ok(());
            };
            self.playbook.remember(
                &ctx.id,
                Shown {
                    query: ctx.query.clone(),
                    embedder,
                    embedding: embedding.clone(),
                    sources: ctx
                        .sources
                        .iter()
                        .map(|s| SourceRef {
                            corpus: s.corpus.clone(),
                            id: s.id.clone(),
                        })
                        .collect(),
                    model: ctx.target_model.clone(),
                },
            );
            Ok(())
        })
    }
}
