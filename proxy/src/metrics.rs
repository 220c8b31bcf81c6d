//! Prometheus metrics, rendered in the text exposition format at `GET /metrics`.
//!
//! A small registry of counter and histogram families with fixed label names.
//! Series are created on first use behind a read-mostly lock, and each family
//! caps its number of series so that a client inventing model ids cannot grow
//! memory without bound: past the cap, new label sets are counted under
//! `other`. Gauges that describe the store are read at scrape time instead.

use hashbrown::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Most label sets one family keeps before folding new ones into `other`.
const MAX_SERIES: usize = 2000;

/// Latency buckets in seconds: 100 µs to 60 s, for a proxy hop as for a long answer.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Observations in fixed latency buckets, with their count and sum.
#[derive(Debug)]
pub struct Histogram {
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    /// The sum in nanoseconds, so it can be an atomic integer.
    sum_nanos: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: LATENCY_BUCKETS.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        // Buckets are stored non-cumulatively; rendering sums them up.
        if let Some(i) = LATENCY_BUCKETS.iter().position(|le| seconds <= *le)
            && let Some(bucket) = self.buckets.get(i)
        {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// A metric name, its help text, its label names and one series per label set.
pub struct Family<S> {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    series: RwLock<HashMap<Vec<String>, Arc<S>>>,
}

/// Label values as a handler has them (`&str`s), looked up in a family's map
/// without building the owned key: it hashes and compares like `Vec<String>`.
#[derive(Hash)]
struct Labels<'a>(&'a [&'a str]);

impl hashbrown::Equivalent<Vec<String>> for Labels<'_> {
    fn equivalent(&self, key: &Vec<String>) -> bool {
        key.iter().map(String::as_str).eq(self.0.iter().copied())
    }
}

impl<S: Default> Family<S> {
    fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        Self {
            name,
            help,
            labels,
            series: RwLock::new(HashMap::default()),
        }
    }

    /// The series for `values` (one per label name, in order), created on first use.
    pub fn with(&self, values: &[&str]) -> Arc<S> {
        if let Ok(series) = self.series.read()
            && let Some(s) = series.get(&Labels(values))
        {
            return s.clone();
        }
        let key: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        // A poisoned lock only means a panic elsewhere mid-insert; the map is still usable.
        let mut series = self
            .series
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = if series.len() >= MAX_SERIES && !series.contains_key(&key) {
            vec!["other".to_owned(); self.labels.len()]
        } else {
            key
        };
        series.entry(key).or_default().clone()
    }

    fn snapshot(&self) -> Vec<(Vec<String>, Arc<S>)> {
        let series = self
            .series
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut all: Vec<_> = series.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    fn header(&self, out: &mut String, kind: &str) {
        write_header(out, self.name, self.help, kind);
    }
}

impl Family<Counter> {
    fn render(&self, out: &mut String) {
        self.header(out, "counter");
        for (values, counter) in self.snapshot() {
            let _ = writeln!(
                out,
                "{}{} {}",
                self.name,
                label_set(self.labels, &values, None),
                counter.get()
            );
        }
    }
}

impl Family<Histogram> {
    fn render(&self, out: &mut String) {
        self.header(out, "histogram");
        for (values, h) in self.snapshot() {
            h.render(out, self.name, self.labels, &values);
        }
    }
}

impl Histogram {
    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The series' bucket, sum and count lines.
    fn render(&self, out: &mut String, name: &str, names: &[&str], values: &[String]) {
        let mut cumulative = 0;
        for (le, bucket) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = le.to_string();
            let _ = writeln!(
                out,
                "{name}_bucket{} {cumulative}",
                label_set(names, values, Some(&le))
            );
        }
        let count = self.count();
        let labels = label_set(names, values, None);
        let _ = writeln!(
            out,
            "{name}_bucket{} {count}",
            label_set(names, values, Some("+Inf"))
        );
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{labels} {sum}");
        let _ = writeln!(out, "{name}_count{labels} {count}");
    }
}

/// The values of a chat's `outcome` label, in the order series are rendered.
pub const OUTCOMES: [&str; 3] = ["cancelled", "error", "ok"];

/// Everything recorded about the chats of one provider and model. A chat
/// looks this up once when it ends, instead of one series per metric (four
/// or five lookups, ~1,500 instructions a chat); it is rendered as the four
/// families it stands for, series for series as before.
#[derive(Debug, Default)]
pub struct ChatSeries {
    /// By stream (false, true), then outcome as in [`OUTCOMES`].
    requests: [[Counter; 3]; 2],
    /// By stream (false, true).
    duration: [Histogram; 2],
    time_to_first_token: Histogram,
    /// Prompt and completion tokens, once a chat reported its usage.
    tokens: [Counter; 2],
    tokens_reported: std::sync::atomic::AtomicBool,
}

impl ChatSeries {
    /// Counts a chat that ended with `outcome` (one of [`OUTCOMES`]).
    pub fn request(&self, stream: bool, outcome: &str) {
        if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome)
            && let Some(counter) = self.requests[usize::from(stream)].get(i)
        {
            counter.add(1);
        }
    }

    pub fn duration(&self, stream: bool, elapsed: Duration) {
        self.duration[usize::from(stream)].observe(elapsed);
    }

    pub fn time_to_first_token(&self, elapsed: Duration) {
        self.time_to_first_token.observe(elapsed);
    }

    pub fn tokens(&self, prompt: u64, completion: u64) {
        self.tokens[0].add(prompt);
        self.tokens[1].add(completion);
        self.tokens_reported.store(true, Ordering::Relaxed);
    }
}

const STREAMS: [&str; 2] = ["false", "true"];

impl Family<ChatSeries> {
    /// The chat families, in the order and with the series they always had.
    fn render(&self, out: &mut String) {
        let all = self.snapshot();
        let with = |values: &[String], extra: &str| {
            let mut values = values.to_vec();
            values.push(extra.to_owned());
            values
        };

        let name = "lakehouse_chat_requests_total";
        write_header(
            out,
            name,
            "Chats routed to a provider, by provider, model, stream and outcome (ok or error).",
            "counter",
        );
        for (values, series) in &all {
            for (stream, by_outcome) in STREAMS.iter().zip(&series.requests) {
                for (outcome, counter) in OUTCOMES.iter().zip(by_outcome) {
                    if counter.get() > 0 {
                        let mut values = with(values, stream);
                        values.push((*outcome).to_owned());
                        let labels =
                            label_set(&["provider", "model", "stream", "outcome"], &values, None);
                        let _ = writeln!(out, "{name}{labels} {}", counter.get());
                    }
                }
            }
        }

        let name = "lakehouse_chat_duration_seconds";
        write_header(
            out,
            name,
            "Time from the request to the last chunk of the answer.",
            "histogram",
        );
        for (values, series) in &all {
            for (stream, h) in STREAMS.iter().zip(&series.duration) {
                if h.count() > 0 {
                    h.render(
                        out,
                        name,
                        &["provider", "model", "stream"],
                        &with(values, stream),
                    );
                }
            }
        }

        let name = "lakehouse_time_to_first_token_seconds";
        write_header(
            out,
            name,
            "Time from the request to the first upstream chunk, plugins included.",
            "histogram",
        );
        for (values, series) in &all {
            if series.time_to_first_token.count() > 0 {
                series
                    .time_to_first_token
                    .render(out, name, &["provider", "model"], values);
            }
        }

        let name = "lakehouse_tokens_total";
        write_header(
            out,
            name,
            "Tokens reported by the upstream, by direction (in = prompt, out = completion).",
            "counter",
        );
        for (values, series) in &all {
            if series.tokens_reported.load(Ordering::Relaxed) {
                for (direction, counter) in ["in", "out"].iter().zip(&series.tokens) {
                    let labels = label_set(
                        &["provider", "model", "direction"],
                        &with(values, direction),
                        None,
                    );
                    let _ = writeln!(out, "{name}{labels} {}", counter.get());
                }
            }
        }
    }
}

/// A family's `# HELP` and `# TYPE` lines.
fn write_header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// `{a="x",b="y"}` (or nothing without labels), with an optional `le` last.
fn label_set(names: &[&str], values: &[String], le: Option<&str>) -> String {
    let mut pairs: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
        .collect();
    if let Some(le) = le {
        pairs.push(format!("le=\"{le}\""));
    }
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(","))
    }
}

/// Label values escape backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Kind of a family rendered from values kept elsewhere (read at scrape time).
#[derive(Clone, Copy)]
pub enum Kind {
    Gauge,
    Counter,
}

/// Writes one gauge or counter family from values kept elsewhere.
pub fn render_family<V: std::fmt::Display>(
    out: &mut String,
    kind: Kind,
    name: &str,
    help: &str,
    labels: &[&str],
    series: &[(Vec<String>, V)],
) {
    let kind = match kind {
        Kind::Gauge => "gauge",
        Kind::Counter => "counter",
    };
    write_header(out, name, help, kind);
    for (values, value) in series {
        let _ = writeln!(out, "{name}{} {value}", label_set(labels, values, None));
    }
}

/// Every metric the proxy records as it goes.
pub struct Metrics {
    pub http_requests: Family<Counter>,
    pub http_duration: Family<Histogram>,
    /// Chats by provider and model: requests, duration, time to first token, tokens.
    pub chats: Family<ChatSeries>,
    pub upstream_errors: Family<Counter>,
    pub plugin_runs: Family<Counter>,
    pub plugin_duration: Family<Histogram>,
    pub auth_refusals: Family<Counter>,
    /// Requests refused by the concurrency limit.
    pub shed: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            http_requests: Family::new(
                "lakehouse_http_requests_total",
                "HTTP requests answered, by route, method and status.",
                &["route", "method", "status"],
            ),
            http_duration: Family::new(
                "lakehouse_http_request_duration_seconds",
                "Time from the request to the response head, by route and method.",
                &["route", "method"],
            ),
            chats: Family::new("lakehouse_chat", "", &["provider", "model"]),
            upstream_errors: Family::new(
                "lakehouse_upstream_errors_total",
                "Upstream failures, before or during the answer, by provider and kind.",
                &["provider", "kind"],
            ),
            plugin_runs: Family::new(
                "lakehouse_plugin_runs_total",
                "Plugin hook runs, by plugin, hook (pre or post) and status (ok, failed, timeout).",
                &["plugin", "hook", "status"],
            ),
            plugin_duration: Family::new(
                "lakehouse_plugin_duration_seconds",
                "Plugin hook run time, by plugin and hook.",
                &["plugin", "hook"],
            ),
            auth_refusals: Family::new(
                "lakehouse_auth_refusals_total",
                "Requests refused by [auth], by reason.",
                &["reason"],
            ),
            shed: Counter::default(),
        }
    }
}

impl Metrics {
    /// Renders every recorded family; the caller appends the scrape-time gauges.
    pub fn render(&self, out: &mut String) {
        self.http_requests.render(out);
        self.http_duration.render(out);
        self.chats.render(out);
        self.upstream_errors.render(out);
        self.plugin_runs.render(out);
        self.plugin_duration.render(out);
        self.auth_refusals.render(out);
        render_family(
            out,
            Kind::Counter,
            "lakehouse_shed_requests_total",
            "Requests refused with 503 because server.max_concurrent_requests were in flight.",
            &[],
            &[(vec![], self.shed.get())],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render_in_the_text_format() {
        let metrics = Metrics::default();
        metrics
            .http_requests
            .with(&["/v1/models", "GET", "200"])
            .add(2);
        metrics
            .http_duration
            .with(&["/v1/models", "GET"])
            .observe(Duration::from_micros(300));
        metrics
            .http_duration
            .with(&["/v1/models", "GET"])
            .observe(Duration::from_secs(100));
        let mut out = String::new();
        metrics.render(&mut out);
        assert!(out.contains(
            "lakehouse_http_requests_total{route=\"/v1/models\",method=\"GET\",status=\"200\"} 2"
        ));
        // 300 µs falls in the 0.0005 bucket and every one above it; 100 s only in +Inf.
        assert!(out.contains(
            "lakehouse_http_request_duration_seconds_bucket{route=\"/v1/models\",method=\"GET\",le=\"0.00025\"} 0"
        ));
        assert!(out.contains(
            "lakehouse_http_request_duration_seconds_bucket{route=\"/v1/models\",method=\"GET\",le=\"0.0005\"} 1"
        ));
        assert!(out.contains(
            "lakehouse_http_request_duration_seconds_bucket{route=\"/v1/models\",method=\"GET\",le=\"60\"} 1"
        ));
        assert!(out.contains(
            "lakehouse_http_request_duration_seconds_bucket{route=\"/v1/models\",method=\"GET\",le=\"+Inf\"} 2"
        ));
        assert!(out.contains(
            "lakehouse_http_request_duration_seconds_count{route=\"/v1/models\",method=\"GET\"} 2"
        ));
        assert!(out.contains("# TYPE lakehouse_tokens_total counter"));
    }

    #[test]
    fn a_chat_series_renders_as_its_four_families_with_only_the_series_used() {
        let metrics = Metrics::default();
        let kimi = metrics.chats.with(&["kimi", "kimi/m"]);
        kimi.request(false, "ok");
        kimi.request(false, "ok");
        kimi.request(true, "error");
        kimi.duration(false, Duration::from_micros(300));
        kimi.time_to_first_token(Duration::from_micros(200));
        kimi.tokens(3, 5);
        // Refused before routing: counted, nothing else.
        metrics.chats.with(&["none", "x/y"]).request(false, "error");
        let mut out = String::new();
        metrics.render(&mut out);
        let lines: Vec<&str> = out.lines().collect();
        let at = |line: &str| {
            lines
                .iter()
                .position(|l| *l == line)
                .unwrap_or_else(|| panic!("no line {line} in\n{out}"))
        };
        let ok = at(
            r#"lakehouse_chat_requests_total{provider="kimi",model="kimi/m",stream="false",outcome="ok"} 2"#,
        );
        let error = at(
            r#"lakehouse_chat_requests_total{provider="kimi",model="kimi/m",stream="true",outcome="error"} 1"#,
        );
        let none = at(
            r#"lakehouse_chat_requests_total{provider="none",model="x/y",stream="false",outcome="error"} 1"#,
        );
        assert!(
            at("# TYPE lakehouse_chat_requests_total counter") < ok && ok < error && error < none
        );
        at(
            r#"lakehouse_chat_duration_seconds_bucket{provider="kimi",model="kimi/m",stream="false",le="0.00025"} 0"#,
        );
        at(
            r#"lakehouse_chat_duration_seconds_bucket{provider="kimi",model="kimi/m",stream="false",le="0.0005"} 1"#,
        );
        at(
            r#"lakehouse_chat_duration_seconds_count{provider="kimi",model="kimi/m",stream="false"} 1"#,
        );
        at(r#"lakehouse_time_to_first_token_seconds_count{provider="kimi",model="kimi/m"} 1"#);
        at(r#"lakehouse_tokens_total{provider="kimi",model="kimi/m",direction="in"} 3"#);
        at(r#"lakehouse_tokens_total{provider="kimi",model="kimi/m",direction="out"} 5"#);
        assert!(
            at("# TYPE lakehouse_tokens_total counter")
                > at("# TYPE lakehouse_time_to_first_token_seconds histogram")
        );
        // Series never used are not rendered.
        assert!(!out.contains("cancelled"));
        assert!(!out.contains(r#"stream="true",le="#));
        assert!(!out.contains(r#"lakehouse_chat_duration_seconds_count{provider="none""#));
        assert!(!out.contains(r#"lakehouse_tokens_total{provider="none""#));
        assert!(!out.contains(r#"lakehouse_time_to_first_token_seconds_count{provider="none""#));
    }

    #[test]
    fn label_values_are_escaped_and_series_are_capped() {
        let family: Family<Counter> = Family::new("t_total", "test", &["model"]);
        family.with(&["a\"b\\c\nd"]).add(1);
        for i in 0..MAX_SERIES + 10 {
            family.with(&[&format!("m{i}")]).add(1);
        }
        let mut out = String::new();
        family.render(&mut out);
        assert!(out.contains(r#"t_total{model="a\"b\\c\nd"} 1"#));
        assert!(out.contains("t_total{model=\"other\"} 11"));
        assert_eq!(family.snapshot().len(), MAX_SERIES + 1);
    }
}
