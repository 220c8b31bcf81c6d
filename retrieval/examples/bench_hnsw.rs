//! HNSW recall@10 against exact search, and search latency, at N×384, on two
//! data sets: `embedding_like` (what sentence embeddings look like: a mixture
//! of topics in a low-dimensional latent space, mapped into 384 dimensions
//! with noise; queries are fresh draws from the same mixture) and `uniform`
//! (random unit vectors: every cosine is 0 ± 0.05, so "nearest" is nearly
//! arbitrary and no graph index recalls it well; reported as the worst case).
//! Run through `scripts/bench_store.sh`; prints one JSON line.
//!
//! Args: [rows (default 100000)] [queries (default 1000)]

use std::time::Instant;

use lakehouse_retrieval::vectors::{Doc, VectorIndex};

#[path = "support/synthetic.rs"]
mod synthetic;
use synthetic::{Mixture, unit};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let rows: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let queries: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1_000);
    let dims = 384;
    let mut rng = fastrand::Rng::with_seed(7);
    let mixture = Mixture::new(&mut rng, 2_000, dims);
    let embedding_like = measure(rows, queries, dims, || mixture.draw(&mut rng))?;
    let mut rng = fastrand::Rng::with_seed(11);
    let uniform = measure(rows, queries, dims, || unit(&mut rng, dims))?;
    println!(
        "{{\"rows\":{rows},\"dimensions\":{dims},\"queries\":{queries},\"embedding_like\":{embedding_like},\"uniform\":{uniform}}}"
    );
    Ok(())
}

/// Builds an index of `rows` vectors from `draw`, then measures recall@10 and
/// latency of `queries` more draws at several `expansion_search` settings.
fn measure(
    rows: usize,
    queries: usize,
    dims: usize,
    mut draw: impl FnMut() -> Vec<f32>,
) -> Result<String, Box<dyn std::error::Error>> {
    let mut index = VectorIndex::new(dims)?;
    let batch: Vec<(Doc, Vec<f32>)> = (0..rows)
        .map(|i| {
            let doc = Doc {
                id: i.to_string(),
                text: String::new(),
            };
            (doc, draw())
        })
        .collect();
    let build = Instant::now();
    index.add(batch)?;
    let build_s = build.elapsed().as_secs_f64();

    let probes: Vec<Vec<f32>> = (0..queries).map(|_| draw()).collect();
    let truth: Vec<Vec<u64>> = probes
        .iter()
        .map(|q| {
            index
                .exact_search(q, 10)
                .map(|h| h.into_iter().map(|n| n.key).collect())
        })
        .collect::<Result<_, _>>()?;
    let mut results = Vec::new();
    for expansion in [24usize, 32, 48, 64, 128, 256, 512] {
        index.set_expansion_search(expansion);
        let mut found = 0usize;
        let mut latencies = Vec::with_capacity(queries);
        for (q, t) in probes.iter().zip(&truth) {
            let start = Instant::now();
            let hits = index.search(q, 10)?;
            latencies.push(start.elapsed().as_secs_f64() * 1e6);
            found += hits.iter().filter(|h| t.contains(&h.key)).count();
        }
        latencies.sort_by(f64::total_cmp);
        results.push(format!(
            "{{\"expansion_search\":{expansion},\"recall_at_10\":{:.4},\"p50_us\":{:.1},\"p99_us\":{:.1}}}",
            found as f64 / (queries * 10) as f64,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99)
        ));
    }
    Ok(format!(
        "{{\"build_s\":{build_s:.1},\"runs\":[{}]}}",
        results.join(",")
    ))
}
