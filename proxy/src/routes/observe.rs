//! `GET /metrics` (Prometheus text format) and `GET /admin/requests` (recent chats).

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::SharedState;
use crate::metrics::{Kind, render_family};
use crate::observer::EventFilter;
use crate::routes::extract::Query;

/// The recorded metrics, then gauges read now: the embedding cache, the store, memory.
pub async fn metrics(State(state): State<SharedState>) -> impl IntoResponse {
    let mut out = String::with_capacity(16 * 1024);
    state.metrics.render(&mut out);

    let cache = state.store.embedders().cache_stats();
    render_family(
        &mut out,
        Kind::Counter,
        "lakehouse_embedder_cache_requests_total",
        "Texts looked up in the embedding cache, by result (hit or miss).",
        &["result"],
        &[
            (vec!["hit".into()], cache.hits),
            (vec!["miss".into()], cache.misses),
        ],
    );
    render_family(
        &mut out,
        Kind::Gauge,
        "lakehouse_embedder_cache_entries",
        "Vectors held in the embedding cache.",
        &[],
        &[(vec![], cache.entries as f64)],
    );

    match state.store.corpora().await {
        Ok(corpora) => {
            let per = |f: &dyn Fn(&lakehouse_retrieval::catalog::Manifest) -> f64| {
                corpora
                    .iter()
                    .map(|m| (vec![m.name.clone()], f(m)))
                    .collect::<Vec<_>>()
            };
            render_family(
                &mut out,
                Kind::Gauge,
                "lakehouse_store_corpus_rows",
                "Rows in each corpus.",
                &["corpus"],
                &per(&|m| m.rows() as f64),
            );
            render_family(
                &mut out,
                Kind::Gauge,
                "lakehouse_store_corpus_bytes",
                "Parquet bytes of each corpus.",
                &["corpus"],
                &per(&|m| m.files.iter().map(|f| f.bytes).sum::<u64>() as f64),
            );
            render_family(
                &mut out,
                Kind::Gauge,
                "lakehouse_store_corpus_vectors",
                "Vectors in each corpus's HNSW index.",
                &["corpus"],
                &per(&|m| m.vectors.as_ref().map_or(0.0, |v| v.count as f64)),
            );
        }
        Err(e) => tracing::warn!("metrics: cannot list the corpora: {e}"),
    }

    let drift = crate::routes::workflows::drift_now(&state);
    let per_signal = |f: &dyn Fn(&crate::drift::SignalDrift) -> f64| {
        drift
            .signals
            .iter()
            .map(|s| (vec![s.signal.clone()], f(s)))
            .collect::<Vec<_>>()
    };
    render_family(
        &mut out,
        Kind::Gauge,
        "lakehouse_drift_psi",
        "Population stability index of each signal, recent window vs baseline ([drift]).",
        &["signal"],
        &per_signal(&|s| s.psi),
    );
    render_family(
        &mut out,
        Kind::Gauge,
        "lakehouse_drift_ks",
        "Kolmogorov-Smirnov statistic of each signal, recent window vs baseline.",
        &["signal"],
        &per_signal(&|s| s.ks),
    );
    render_family(
        &mut out,
        Kind::Gauge,
        "lakehouse_drift_flagged",
        "1 when the signal passed a [drift] threshold with enough samples in both windows.",
        &["signal"],
        &per_signal(&|s| if s.drifted { 1.0 } else { 0.0 }),
    );

    let observer = state.observer.stats();
    render_family(
        &mut out,
        Kind::Counter,
        "lakehouse_observer_dropped_total",
        "Observer log lines (chats and ratings) left out: 64 MiB were waiting to be written, or a refused segment was given up.",
        &[],
        &[(vec![], observer.dropped)],
    );
    render_family(
        &mut out,
        Kind::Counter,
        "lakehouse_observer_write_failures_total",
        "Observer log lines that could not be encoded, and segment writes the store refused (a refused segment is written again after a growing wait).",
        &[],
        &[(vec![], observer.write_failures)],
    );
    render_family(
        &mut out,
        Kind::Counter,
        "lakehouse_observer_pruned_segments_total",
        "Observer log segments deleted as older than server.observer_retention_days.",
        &[],
        &[(vec![], observer.pruned_segments)],
    );
    render_family(
        &mut out,
        Kind::Counter,
        "lakehouse_observer_restored_total",
        "Observer log lines the store refused when the server last stopped, kept in the local spill folder (S3 only), and written at this start.",
        &[],
        &[(vec![], observer.restored)],
    );
    let pathway = state.pathway.stats().await;
    let playbook = state.playbook.stats().await;
    render_family(
        &mut out,
        Kind::Gauge,
        "lakehouse_memory_live_traces",
        "Live (not retired) pathway memory traces.",
        &[],
        &[(vec![], pathway.live as f64)],
    );
    render_family(
        &mut out,
        Kind::Gauge,
        "lakehouse_playbook_live_outcomes",
        "Live (not retired) playbook outcomes.",
        &[],
        &[(vec![], playbook.live as f64)],
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestsQuery {
    #[serde(default = "default_limit")]
    limit: usize,
    model: Option<String>,
    provider: Option<String>,
    /// Unix milliseconds, inclusive.
    since_ms: Option<u64>,
    until_ms: Option<u64>,
    min_rating: Option<f32>,
    max_rating: Option<f32>,
}

fn default_limit() -> usize {
    50
}

/// The newest witnessed chats first, filtered by model, provider, time and
/// rating, with the observer's own health.
pub async fn requests(
    State(state): State<SharedState>,
    Query(q): Query<RequestsQuery>,
) -> Json<Value> {
    let filter = EventFilter {
        model: q.model,
        provider: q.provider,
        since_ms: q.since_ms,
        until_ms: q.until_ms,
        min_rating: q.min_rating,
        max_rating: q.max_rating,
    };
    let data = state.observer.query(q.limit.min(10_000), &filter);
    Json(json!({"object": "list", "data": data, "observer": state.observer.stats()}))
}
