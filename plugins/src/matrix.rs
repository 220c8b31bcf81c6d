//! Matrix retrieval as a plugin: the chat's query against its corpora.

use std::sync::Arc;

use futures::future::BoxFuture;
use lakehouse_retrieval::Store;
use lakehouse_retrieval::matrix;

use crate::config::{MatrixConfig, PluginName};
use crate::context::ChatContext;
use crate::pipeline::Plugin;

pub struct MatrixPlugin {
    store: Arc<Store>,
    config: MatrixConfig,
}

impl MatrixPlugin {
    pub fn new(store: Arc<Store>, config: MatrixConfig) -> Self {
        Self { store, config }
    }
}

impl Plugin for MatrixPlugin {
    fn name(&self) -> PluginName {
        PluginName::Matrix
    }

    fn applies(&self, ctx: &ChatContext) -> bool {
        !ctx.corpora.is_empty() && !ctx.query.trim().is_empty()
    }

    fn pre<'a>(&'a self, ctx: &'a mut ChatContext) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let mut vectors = std::mem::take(&mut ctx.query_vectors);
            let embedded =
                matrix::embed_query(&self.store, &ctx.corpora, &ctx.query, &mut vectors).await;
            ctx.query_vectors = vectors;
            embedded.map_err(|e| e.to_string())?;
            ctx.sources = matrix::search(
                &self.store,
                &ctx.corpora,
                &ctx.query_vectors,
                self.config.candidates,
                self.config.min_similarity,
            )
            .await
            .map_err(|e| e.to_string())?;
            Ok(())
        })
    }
}
