//! Loopback load generator for `scripts/load_test.sh`: sends N chat requests
//! (half streamed, all through a rag model and its plugins) at a fixed
//! concurrency, checks every answer completely, samples the server's RSS from
//! `/proc/<pid>/status` as it goes, and prints one JSON report.
//!
//! Exits 1 when any request failed or RSS grew more than `--max-growth`
//! between the end of warm-up and the end of the run.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// Lakehouse base URL.
    #[arg(long)]
    url: String,
    /// Pid of the server, for RSS samples.
    #[arg(long)]
    pid: u32,
    #[arg(long, default_value_t = 10_000)]
    requests: usize,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Requests before the RSS baseline is taken.
    #[arg(long, default_value_t = 2_000)]
    warmup: usize,
    /// Model to chat with (a rag model runs the plugins).
    #[arg(long, default_value = "rag/load")]
    model: String,
    /// Largest allowed RSS growth after warm-up, as a fraction.
    #[arg(long, default_value_t = 0.10)]
    max_growth: f64,
}

/// Needs the same topics again and again, so caches fill during warm-up.
const TOPICS: &[&str] = &[
    "rotating log files",
    "nightly backups",
    "blue green deploys",
    "on-call pages",
    "database failover",
    "TLS certificate renewal",
    "disk space alerts",
    "queue backlogs",
    "cache invalidation",
    "feature flags",
    "rate limiting",
    "DNS changes",
];

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// One chat; `Ok` only when the answer arrived whole (stream: `[DONE]`, no error event).
async fn one(client: &reqwest::Client, url: &str, model: &str, i: usize) -> Result<(), String> {
    let stream = i.is_multiple_of(2);
    let topic = TOPICS[i % TOPICS.len()];
    let body = json!({
        "model": model,
        "messages": [{"role": "user", "content": format!("How do we handle {topic}? #chunks=8")}],
        "stream": stream,
        "stream_options": {"include_usage": true},
    });
    let response = client
        .post(format!("{url}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return Err(format!("{status}: {text}"));
    }
    if !stream {
        let value: Value = response.json().await.map_err(|e| format!("body: {e}"))?;
        if value["choices"][0]["message"]["content"]
            .as_str()
            .is_none_or(str::is_empty)
        {
            return Err(format!("no content: {value}"));
        }
        return Ok(());
    }
    let mut bytes = response.bytes_stream();
    let mut text = Vec::new();
    while let Some(chunk) = bytes.next().await {
        text.extend_from_slice(&chunk.map_err(|e| format!("stream: {e}"))?);
    }
    let text = String::from_utf8_lossy(&text);
    if text.contains("data: {\"error\"") || !text.trim_end().ends_with("data: [DONE]") {
        return Err(format!(
            "incomplete stream: {}",
            &text[text.len().saturating_sub(200)..]
        ));
    }
    Ok(())
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return 0.0;
    };
    sorted
        .get(((last as f64) * q).round() as usize)
        .copied()
        .unwrap_or_default()
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap_or_default();
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<f64>::with_capacity(
        args.requests,
    )));
    let samples = Arc::new(std::sync::Mutex::new(Vec::<(usize, u64)>::new()));
    let started = Instant::now();
    let rss_start = rss_kib(args.pid);
    let url = Arc::new(args.url.trim_end_matches('/').to_owned());
    let model = Arc::new(args.model.clone());
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (client, next, done, errors, latencies, samples, url, model) = (
            client.clone(),
            next.clone(),
            done.clone(),
            errors.clone(),
            latencies.clone(),
            samples.clone(),
            url.clone(),
            model.clone(),
        );
        let (total, pid) = (args.requests, args.pid);
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let t = Instant::now();
                let result = one(&client, &url, &model, i).await;
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                if let Ok(mut l) = latencies.lock() {
                    l.push(ms);
                }
                if let Err(e) = result
                    && let Ok(mut errors) = errors.lock()
                {
                    errors.push(e);
                }
                let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                if finished % 500 == 0
                    && let Ok(mut s) = samples.lock()
                {
                    s.push((finished, rss_kib(pid)));
                }
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    let errors = errors.lock().map(|e| e.clone()).unwrap_or_default();
    let mut latencies = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    latencies.sort_by(f64::total_cmp);
    let baseline = samples
        .iter()
        .find(|(n, _)| *n >= args.warmup)
        .map_or(0, |(_, r)| *r);
    let after_warmup: Vec<u64> = samples
        .iter()
        .filter(|(n, _)| *n >= args.warmup)
        .map(|(_, r)| *r)
        .collect();
    let peak = after_warmup.iter().copied().max().unwrap_or(0);
    let last = after_warmup.last().copied().unwrap_or(0);
    let growth = if baseline > 0 {
        (peak as f64 - baseline as f64) / baseline as f64
    } else {
        0.0
    };
    let report = json!({
        "requests": args.requests,
        "concurrency": args.concurrency,
        "model": args.model,
        "stream_share": 0.5,
        "errors": errors.len(),
        "first_errors": errors.iter().take(5).collect::<Vec<_>>(),
        "seconds": (elapsed * 100.0).round() / 100.0,
        "requests_per_second": (args.requests as f64 / elapsed).round(),
        "latency_ms": {
            "p50": (percentile(&latencies, 0.5) * 100.0).round() / 100.0,
            "p99": (percentile(&latencies, 0.99) * 100.0).round() / 100.0,
            "max": latencies.last().copied().unwrap_or_default(),
        },
        "rss_kib": {
            "before": rss_start,
            "after_warmup": baseline,
            "peak_after_warmup": peak,
            "end": last,
            "growth_after_warmup": (growth * 10_000.0).round() / 10_000.0,
            "samples": samples,
        },
    });
    println!("{report:#}");
    if !errors.is_empty() || growth > args.max_growth {
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}
