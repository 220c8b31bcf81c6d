//! HNSW recall@10 against exact search, and search latency, at N×384 random
//! unit vectors (the hard case: no cluster structure). Run through
//! `scripts/bench_store.sh`; prints one JSON line.
//!
//! Args: [rows (default 100000)] [queries (default 1000)]

use std::time::Instant;

use lakehouse_retrieval::vectors::{Doc, VectorIndex};

fn unit(rng: &mut fastrand::Rng, dims: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..dims).map(|_| rng.f32() * 2.0 - 1.0).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

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
    let mut index = VectorIndex::new(dims)?;
    let build = Instant::now();
    let batch: Vec<(Doc, Vec<f32>)> = (0..rows)
        .map(|i| {
            let doc = Doc {
                id: i.to_string(),
                text: String::new(),
            };
            (doc, unit(&mut rng, dims))
        })
        .collect();
    index.add(batch)?;
    let build_s = build.elapsed().as_secs_f64();

    let probes: Vec<Vec<f32>> = (0..queries).map(|_| unit(&mut rng, dims)).collect();
    let truth: Vec<Vec<u64>> = probes
        .iter()
        .map(|q| {
            index
                .exact_search(q, 10)
                .map(|h| h.into_iter().map(|n| n.key).collect())
        })
        .collect::<Result<_, _>>()?;
    let mut results = Vec::new();
    for expansion in [64usize, 128, 256, 512] {
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
    println!(
        "{{\"rows\":{rows},\"dimensions\":{dims},\"queries\":{queries},\"build_s\":{build_s:.1},\"runs\":[{}]}}",
        results.join(",")
    );
    Ok(())
}
