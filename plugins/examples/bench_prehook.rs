//! Retrieval pre-hook latency: the matrix + playbook pre hooks (search three
//! corpora, merge, boost, filter, inject) over 3 corpora × N vectors of 384
//! dimensions, k = 10, with the query already embedded; the built-in
//! embedder's time per query is measured separately. Run through
//! `scripts/bench_store.sh`; prints one JSON line.
//!
//! Args: [rows per corpus (default 100000)] [queries (default 2000)]

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use lakehouse_memory::Playbook;
use lakehouse_plugins::config::{PluginName, PluginsConfig};
use lakehouse_plugins::matrix::MatrixPlugin;
use lakehouse_plugins::playbook::PlaybookPlugin;
use lakehouse_plugins::{ChatContext, Pipeline, Plugin};
use lakehouse_retrieval::catalog::CorpusSettings;
use lakehouse_retrieval::duck::{Format, QueryLimits};
use lakehouse_retrieval::embed::{Embedder, Embedders, LocalEmbedder};
use lakehouse_retrieval::objects::{Caps, Objects, StoreConfig};
use lakehouse_retrieval::store::{NoProgress, Store};

const DIMS: usize = 384;

#[path = "../../retrieval/examples/support/synthetic.rs"]
mod synthetic;
use synthetic::Mixture;

/// Embedding-like vectors (see `synthetic.rs`) seeded by the text: as fast
/// as an embedder can be, with the neighbour structure real embeddings have.
struct Synthetic(Mixture);

/// The same topics for the corpora and the queries.
fn topics() -> Mixture {
    Mixture::new(&mut fastrand::Rng::with_seed(7), 2_000, DIMS)
}

impl Embedder for Synthetic {
    fn name(&self) -> &str {
        "synthetic"
    }
    fn embed<'a>(
        &'a self,
        texts: &'a [String],
        _dimensions: Option<usize>,
    ) -> BoxFuture<'a, lakehouse_retrieval::Result<Vec<Vec<f32>>>> {
        Box::pin(async move {
            Ok(texts
                .iter()
                .map(|t| {
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    t.hash(&mut h);
                    self.0.draw(&mut fastrand::Rng::with_seed(h.finish()))
                })
                .collect())
        })
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let rows: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let queries: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2_000);
    let dir = std::env::temp_dir().join(format!("lakehouse-bench-prehook-{}", std::process::id()));
    let objects = Objects::open(&StoreConfig::Local {
        root: dir.join("data"),
        caps: Caps::default(),
    })?;
    let embedders = Embedders::new(
        vec![
            Arc::new(Synthetic(topics())),
            Arc::new(LocalEmbedder::default()),
        ],
        64 << 20,
    );
    let store =
        Arc::new(Store::open(objects.clone(), embedders.clone(), QueryLimits::default()).await?);

    let build = Instant::now();
    let corpora: Vec<String> = (0..3).map(|c| format!("corpus{c}")).collect();
    for (c, name) in corpora.iter().enumerate() {
        let csv = dir.join(format!("{name}.csv"));
        let mut text = String::from("id,text\n");
        for i in 0..rows {
            text.push_str(&format!(
                "{c}-{i},document {i} of corpus {c} about topic {}\n",
                i % 977
            ));
        }
        std::fs::write(&csv, text)?;
        let settings = CorpusSettings {
            text_columns: vec!["text".into()],
            id_column: "id".into(),
            embedder: "synthetic".into(),
        };
        store.create_corpus(name, settings).await?;
        store
            .ingest_file(name, &csv, Format::Csv, &NoProgress)
            .await?;
    }
    let build_s = build.elapsed().as_secs_f64();
    // A mark for profilers attaching to the query phase only.
    eprintln!("built in {build_s:.1} s; querying");

    let playbook = Arc::new(Playbook::open(objects).await?);
    let mut config = PluginsConfig {
        order: vec![PluginName::Matrix, PluginName::Playbook],
        ..PluginsConfig::default()
    };
    config.matrix.k = 10;
    // Random vectors score near 0: keep every hit so merge, filter and inject do full work.
    config.matrix.min_similarity = -1.0;
    let plugins: Vec<Arc<dyn Plugin>> = vec![
        Arc::new(MatrixPlugin::new(Arc::clone(&store), config.matrix.clone())),
        Arc::new(PlaybookPlugin::new(
            playbook,
            Arc::clone(&store),
            config.playbook.clone(),
        )),
    ];
    let pipeline = Pipeline::new(plugins, config.clone());

    let mut rng = fastrand::Rng::with_seed(11);
    let query_topics = topics();
    let mut latencies = Vec::with_capacity(queries);
    let mut injected = 0usize;
    for q in 0..queries + 100 {
        let text = format!("what does document {} say", rng.usize(..rows));
        let request = serde_json::from_value(serde_json::json!({
            "model": "m", "messages": [{"role": "user", "content": text}]
        }))?;
        let mut ctx = ChatContext {
            id: format!("chatcmpl-{q}"),
            query: text,
            request,
            client_model: "m".into(),
            target_model: "m".into(),
            namespace: "default".into(),
            corpora: corpora.clone(),
            k: 10,
            token_budget: config.matrix.token_budget,
            memory: false,
            cost_downgrade: false,
            enabled: config.order.clone(),
            query_vectors: [("synthetic".to_owned(), query_topics.draw(&mut rng))].into(),
            sources: Vec::new(),
            memories: Vec::new(),
            annotations: Default::default(),
        };
        let start = Instant::now();
        pipeline.pre(&mut ctx).await?;
        let us = start.elapsed().as_secs_f64() * 1e6;
        if q >= 100 {
            // The first 100 warm the caches.
            latencies.push(us);
            injected += ctx.sources.len();
        }
    }
    latencies.sort_by(f64::total_cmp);

    // The built-in embedder, measured on its own: first call (loads the model), then distinct queries.
    let load = Instant::now();
    embedders.embed("local", &["warm up".to_owned()]).await?;
    let load_ms = load.elapsed().as_secs_f64() * 1e3;
    let mut embed_ms = Vec::new();
    for i in 0..200 {
        let text = format!("how do I configure service number {i} for production use?");
        let start = Instant::now();
        embedders.embed("local", &[text]).await?;
        embed_ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    embed_ms.sort_by(f64::total_cmp);
    let cached = Instant::now();
    embedders.embed("local", &["warm up".to_owned()]).await?;
    let cached_us = cached.elapsed().as_secs_f64() * 1e6;

    println!(
        "{{\"corpora\":3,\"rows_per_corpus\":{rows},\"dimensions\":{DIMS},\"k\":10,\"queries\":{queries},\
         \"build_s\":{build_s:.1},\"prehook_p50_us\":{:.1},\"prehook_p99_us\":{:.1},\"sources_per_query\":{:.1},\
         \"embedder\":{{\"load_ms\":{load_ms:.1},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"cache_hit_us\":{cached_us:.1}}}}}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        injected as f64 / queries as f64,
        percentile(&embed_ms, 0.5),
        percentile(&embed_ms, 0.99),
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
