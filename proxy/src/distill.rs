//! Distillation: score witnessed runs and export the good ones as SFT data.
//!
//! A run's score (0..1) is the weighted mean of the quality signals it has:
//! the user's rating (mapped from -1..1), a judge model's score when one is
//! asked, and the mean score of the retrieval sources it was shown. Runs at
//! or above `[distillation] accept_score` are accepted. A run whose scoring
//! failed (the judge errored or answered nothing usable) has verdict `error`,
//! never `accept`.
//!
//! The contamination firewall keeps evaluation data out of every export: a
//! run whose prompt (its user messages) equals an evaluation text, or shares
//! at least `max_overlap` of its word n-grams with one, is excluded and counted.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use axum::http::{HeaderMap, HeaderValue};
use bytes::Bytes;
use lakehouse_providers::openai::{ChatRequest, Message, Role};
use serde::{Deserialize, Serialize};

use crate::app::SharedState;
use crate::auth::CALLER;
use crate::config::DistillationConfig;
use crate::error::ApiError;
use crate::observer::{ChatEvent, Outcome};

/// The caller name of judge calls, so the judge's own chats are never scored.
pub const JUDGE_CALLER: &str = "lakehouse-distillation-judge";
/// Where exports are written in the store.
pub const EXPORTS: &str = "distillation/exports";
/// Most per-run entries a report lists (the counts cover every run).
const REPORT_LIST_LIMIT: usize = 200;

/// What distillation decided about one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Accept,
    Reject,
    /// Scoring failed; never exported, never counted as accepted.
    Error,
}

/// The signals a score was made of, each mapped to 0..1.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Signals {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rating: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judge: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retrieval: Option<f64>,
}

/// One run scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunScore {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub model: String,
    pub at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    pub verdict: Verdict,
    pub reason: String,
    pub signals: Signals,
}

/// The retrieval scores of the sources a run was shown.
pub fn source_scores(event: &ChatEvent) -> Vec<f32> {
    event
        .lakehouse
        .as_ref()
        .and_then(|l| l.get("sources"))
        .and_then(|s| s.as_array())
        .map(|sources| {
            sources
                .iter()
                .filter_map(|s| s.get("score").and_then(serde_json::Value::as_f64))
                .map(|s| s as f32)
                .collect()
        })
        .unwrap_or_default()
}

/// Scores one run. `judge` is the judge's verdict when one was asked: its
/// score (0..1) or why it failed.
pub fn score(
    event: &ChatEvent,
    judge: Option<Result<f64, String>>,
    config: &DistillationConfig,
) -> RunScore {
    let mut run = RunScore {
        id: event.id.clone(),
        model: event.model.clone(),
        at_ms: event.at_ms,
        score: None,
        verdict: Verdict::Reject,
        reason: String::new(),
        signals: Signals::default(),
    };
    if event.outcome != Outcome::Ok {
        run.reason = format!("the chat ended {}", event.outcome.as_str());
        return run;
    }
    match judge {
        Some(Err(e)) => {
            run.verdict = Verdict::Error;
            run.reason = format!("judge failed: {e}");
            return run;
        }
        Some(Ok(j)) => run.signals.judge = Some(j.clamp(0.0, 1.0)),
        None => {}
    }
    run.signals.rating = event
        .rating
        .map(|r| ((f64::from(r) + 1.0) / 2.0).clamp(0.0, 1.0));
    let sources = source_scores(event);
    if !sources.is_empty() {
        let mean = sources.iter().map(|s| f64::from(*s)).sum::<f64>() / sources.len() as f64;
        run.signals.retrieval = Some(mean.clamp(0.0, 1.0));
    }
    let weighted = [
        (run.signals.rating, config.rating_weight),
        (run.signals.judge, config.judge_weight),
        (run.signals.retrieval, config.retrieval_weight),
    ];
    let (sum, weight) = weighted
        .iter()
        .filter_map(|(signal, w)| signal.map(|s| (s * w, *w)))
        .filter(|(_, w)| *w > 0.0)
        .fold((0.0, 0.0), |(s, w), (ds, dw)| (s + ds, w + dw));
    if weight == 0.0 {
        run.reason = "no quality signal (no rating, judge score or sources)".into();
        return run;
    }
    let value = sum / weight;
    if !value.is_finite() {
        run.verdict = Verdict::Error;
        run.reason = "the score is not a number".into();
        return run;
    }
    run.score = Some(value);
    if value >= config.accept_score {
        run.verdict = Verdict::Accept;
        run.reason = format!("score {value:.3} >= {}", config.accept_score);
    } else {
        run.reason = format!("score {value:.3} < {}", config.accept_score);
    }
    run
}

/// Why a run was kept out of an export by the firewall.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contamination {
    /// `exact` (same normalised text) or `ngram` (overlap at or above the limit).
    pub kind: String,
    /// Share of n-grams in common (1 for an exact match).
    pub overlap: f64,
}

/// Evaluation texts, indexed for the contamination check.
#[derive(Debug, Default)]
pub struct EvalSet {
    n: usize,
    exact: HashSet<u64>,
    /// n-gram hash -> the eval texts holding it.
    index: HashMap<u64, Vec<u32>>,
    /// Distinct n-grams of each eval text.
    sizes: Vec<u32>,
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn hash_of<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

fn ngrams(words: &[String], n: usize) -> HashSet<u64> {
    if words.len() < n {
        return HashSet::new();
    }
    words.windows(n).map(hash_of).collect()
}

impl EvalSet {
    pub fn new(n: usize) -> Self {
        Self {
            n: n.max(1),
            ..Self::default()
        }
    }

    /// Evaluation texts held.
    pub fn len(&self) -> usize {
        self.sizes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sizes.is_empty()
    }

    pub fn add(&mut self, text: &str) {
        let words = words(text);
        if words.is_empty() {
            return;
        }
        self.exact.insert(hash_of(&words));
        let item = self.sizes.len() as u32;
        let grams = ngrams(&words, self.n);
        self.sizes.push(grams.len() as u32);
        for gram in grams {
            self.index.entry(gram).or_default().push(item);
        }
    }

    /// Whether `prompt` overlaps the set: an exact match, or a share of
    /// n-grams in common at or above `max_overlap`, counted both ways (of the
    /// prompt's n-grams, and of one eval text's, so an eval question pasted
    /// into a longer prompt is caught too).
    pub fn check(&self, prompt: &str, max_overlap: f64) -> Option<Contamination> {
        let words = words(prompt);
        if words.is_empty() {
            return None;
        }
        if self.exact.contains(&hash_of(&words)) {
            return Some(Contamination {
                kind: "exact".into(),
                overlap: 1.0,
            });
        }
        let grams = ngrams(&words, self.n);
        if grams.is_empty() {
            return None;
        }
        let mut shared_with: HashMap<u32, u32> = HashMap::new();
        let mut found = 0usize;
        for gram in &grams {
            if let Some(items) = self.index.get(gram) {
                found += 1;
                for item in items {
                    *shared_with.entry(*item).or_default() += 1;
                }
            }
        }
        let of_prompt = found as f64 / grams.len() as f64;
        let of_item = shared_with
            .iter()
            .filter_map(|(item, shared)| {
                let size = *self.sizes.get(*item as usize)?;
                (size > 0).then(|| f64::from(*shared) / f64::from(size))
            })
            .fold(0.0, f64::max);
        let overlap = of_prompt.max(of_item);
        (overlap >= max_overlap).then(|| Contamination {
            kind: "ngram".into(),
            overlap,
        })
    }
}

/// The text of one evaluation file line: a JSON object's `query`, `text`,
/// `question` or `prompt`, else the line itself.
fn eval_line_text(line: &str) -> Option<String> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    if line.starts_with('{')
        && let Ok(serde_json::Value::Object(map)) = serde_json::from_str(line)
    {
        return ["query", "text", "question", "prompt"]
            .iter()
            .find_map(|k| map.get(*k).and_then(|v| v.as_str()).map(str::to_owned));
    }
    Some(line.to_owned())
}

/// Loads every evaluation file and corpus named in `[distillation]`.
pub async fn load_eval_set(state: &SharedState) -> Result<EvalSet, ApiError> {
    let config = &state.config.distillation;
    let mut set = EvalSet::new(config.ngram);
    for file in &config.eval_files {
        let text = tokio::fs::read_to_string(file).await.map_err(|e| {
            ApiError::internal(format!(
                "cannot read the evaluation file {} ([distillation] eval_files): {e}",
                file.display()
            ))
        })?;
        for line in text.lines().filter_map(eval_line_text) {
            set.add(&line);
        }
    }
    for corpus in &config.eval_corpora {
        for doc in state.store.docs(corpus).await? {
            set.add(&doc.text);
        }
    }
    Ok(set)
}

/// The prompt the firewall checks: the run's user messages.
fn prompt_of(messages: &[Message]) -> String {
    messages
        .iter()
        .filter(|m| m.role == Role::User)
        .map(Message::text_content)
        .collect::<Vec<_>>()
        .join("\n")
}

/// What to export.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    /// Only runs at or after this Unix time (ms).
    #[serde(default)]
    pub since_ms: Option<u64>,
    #[serde(default)]
    pub until_ms: Option<u64>,
    /// A model (or `tier/<name>`) that scores each candidate run 0..10.
    #[serde(default)]
    pub judge: Option<String>,
    /// Score only, write nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// One run kept out by the firewall.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exclusion {
    pub id: Option<String>,
    #[serde(flatten)]
    pub contamination: Contamination,
}

/// What an export did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExportReport {
    /// Runs in the window (judge calls excluded).
    pub runs: usize,
    pub accepted: usize,
    pub rejected: usize,
    pub errors: usize,
    /// Accepted runs kept out because their prompt overlaps an evaluation set.
    pub excluded_contaminated: usize,
    /// Accepted runs without a captured conversation (capture was off).
    pub not_captured: usize,
    /// Lines written.
    pub exported: usize,
    /// Evaluation texts the firewall checked against.
    pub eval_texts: usize,
    /// Store key of the SFT JSONL, when anything was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub exclusions: Vec<Exclusion>,
    pub scores: Vec<RunScore>,
}

/// Asks `judge` to score one answer 0..10; returns 0..1.
async fn judge_run(state: &SharedState, judge: &str, event: &ChatEvent) -> Result<f64, String> {
    let question = event
        .messages
        .as_deref()
        .map(|m| prompt_of(m))
        .unwrap_or_default();
    let answer = event.answer.as_deref().unwrap_or_default();
    let request: Box<ChatRequest> = serde_json::from_value(serde_json::json!({
        "model": judge,
        "messages": [
            {"role": "system", "content": "You grade answers. Reply with one integer from 0 (useless or wrong) to 10 (correct, complete and well grounded), and nothing else."},
            {"role": "user", "content": format!("Question:\n{question}\n\nAnswer:\n{answer}")},
        ],
    }))
    .map_err(|e| format!("cannot build the judge request: {e}"))?;
    let mut headers = HeaderMap::new();
    headers.insert(CALLER, HeaderValue::from_static(JUDGE_CALLER));
    let started = crate::routes::chat::start(state, &headers, request)
        .await
        .map_err(|e| e.message)?;
    let completion = started.complete().await.map_err(|e| e.message)?;
    let text = completion
        .choices
        .first()
        .and_then(|c| c.message.content.clone())
        .unwrap_or_default();
    parse_judge_score(&text).ok_or_else(|| format!("the judge answered no score: {text:?}"))
}

/// The first number in a judge's answer, 0..10, as 0..1.
fn parse_judge_score(text: &str) -> Option<f64> {
    let visible = match text.rfind("</think>") {
        Some(end) => &text[end + "</think>".len()..],
        None => text,
    };
    let start = visible.find(|c: char| c.is_ascii_digit())?;
    let number: String = visible[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let value: f64 = number.trim_end_matches('.').parse().ok()?;
    (0.0..=10.0).contains(&value).then_some(value / 10.0)
}

/// Scores the witnessed runs in the window and (unless `dry_run`) writes the
/// accepted, uncontaminated ones as SFT JSONL (`{"messages": [...]}` per line).
pub async fn export(
    state: &SharedState,
    request: &ExportRequest,
) -> Result<ExportReport, ApiError> {
    let config = &state.config.distillation;
    let eval = load_eval_set(state).await?;
    let events = state
        .observer
        .history()
        .await
        .map_err(|e| ApiError::internal(format!("cannot read the observer log: {e}")))?;
    let mut report = ExportReport {
        eval_texts: eval.len(),
        ..ExportReport::default()
    };
    let mut lines = String::new();
    for event in events.iter().filter(|e| {
        e.caller.as_deref() != Some(JUDGE_CALLER)
            && request.since_ms.is_none_or(|t| e.at_ms >= t)
            && request.until_ms.is_none_or(|t| e.at_ms < t)
    }) {
        report.runs += 1;
        let judged = match (&request.judge, event.outcome) {
            (Some(judge), Outcome::Ok) => Some(judge_run(state, judge, event).await),
            _ => None,
        };
        let run = score(event, judged, config);
        match run.verdict {
            Verdict::Accept => report.accepted += 1,
            Verdict::Reject => report.rejected += 1,
            Verdict::Error => report.errors += 1,
        }
        let accepted = run.verdict == Verdict::Accept;
        if report.scores.len() < REPORT_LIST_LIMIT {
            report.scores.push(run);
        }
        if !accepted {
            continue;
        }
        let (Some(messages), Some(answer)) = (&event.messages, &event.answer) else {
            report.not_captured += 1;
            continue;
        };
        if let Some(contamination) = eval.check(&prompt_of(messages), config.max_overlap) {
            report.excluded_contaminated += 1;
            if report.exclusions.len() < REPORT_LIST_LIMIT {
                report.exclusions.push(Exclusion {
                    id: event.id.clone(),
                    contamination,
                });
            }
            continue;
        }
        let mut conversation = Vec::clone(messages);
        conversation.push(Message::text(Role::Assistant, answer.clone()));
        let line = serde_json::json!({ "messages": conversation });
        lines.push_str(&line.to_string());
        lines.push('\n');
        report.exported += 1;
    }
    if !request.dry_run && report.exported > 0 {
        let key = format!(
            "{EXPORTS}/{}-{:08x}.jsonl",
            crate::observer::unix_ms(),
            fastrand::u32(..)
        );
        state.store.objects().put(&key, Bytes::from(lines)).await?;
        report.key = Some(key);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(outcome: Outcome, rating: Option<f32>, sources: &[f64]) -> ChatEvent {
        let sources: Vec<_> = sources
            .iter()
            .map(|s| serde_json::json!({"score": s}))
            .collect();
        ChatEvent {
            request_id: "r".into(),
            caller: None,
            id: Some("chatcmpl-1".into()),
            at_ms: 1,
            model: "m".into(),
            provider: Some("kimi".into()),
            stream: false,
            outcome,
            status: None,
            error: None,
            latency_ms: 1.0,
            ttft_ms: None,
            tokens_in: None,
            tokens_out: None,
            lakehouse: Some(serde_json::json!({ "sources": sources })),
            rating,
            messages: None,
            message_pieces: None,
            answer: None,
        }
    }

    #[test]
    fn signals_are_weighted_over_those_present() {
        let config = DistillationConfig::default();
        // rating 1 -> 1.0, retrieval 0.5: (0.6*1 + 0.1*0.5) / 0.7
        let run = score(&event(Outcome::Ok, Some(1.0), &[0.4, 0.6]), None, &config);
        let expected = (0.6 + 0.05) / 0.7;
        // Source scores are f32.
        assert!((run.score.unwrap() - expected).abs() < 1e-6, "{run:?}");
        assert_eq!(run.verdict, Verdict::Accept);
        let run = score(&event(Outcome::Ok, Some(-1.0), &[]), None, &config);
        assert_eq!(run.score, Some(0.0));
        assert_eq!(run.verdict, Verdict::Reject);
    }

    #[test]
    fn failed_scoring_is_an_error_and_never_accept() {
        let config = DistillationConfig::default();
        let run = score(
            &event(Outcome::Ok, Some(1.0), &[0.9]),
            Some(Err("judge timed out".into())),
            &config,
        );
        assert_eq!(run.verdict, Verdict::Error);
        assert_eq!(run.score, None);
        assert!(run.reason.contains("judge timed out"));
        // Failed chats and runs with no signal are rejected, not accepted.
        assert_eq!(
            score(&event(Outcome::Error, Some(1.0), &[]), None, &config).verdict,
            Verdict::Reject
        );
        assert_eq!(
            score(&event(Outcome::Ok, None, &[]), None, &config).verdict,
            Verdict::Reject
        );
    }

    #[test]
    fn the_judge_score_is_read_from_its_answer() {
        assert_eq!(parse_judge_score("8"), Some(0.8));
        assert_eq!(
            parse_judge_score("<think>maybe 3</think>Score: 10"),
            Some(1.0)
        );
        assert_eq!(parse_judge_score("7.5/10"), Some(0.75));
        assert_eq!(parse_judge_score("no idea"), None);
        assert_eq!(parse_judge_score("42"), None);
    }

    #[test]
    fn the_firewall_catches_exact_and_overlapping_prompts_only() {
        let mut set = EvalSet::new(5);
        set.add("Which package converts Markdown documents to PDF with a LaTeX engine?");
        set.add("a tool to watch a directory and run a command when a file changes");
        // Same text, other case and punctuation.
        let exact = set
            .check(
                "which package converts markdown documents to pdf, with a latex engine",
                0.5,
            )
            .unwrap();
        assert_eq!(exact.kind, "exact");
        // The eval question pasted into a longer prompt.
        let pasted = set
            .check(
                "Please help. I need a tool to watch a directory and run a command when a file changes, on Debian, thanks a lot for any pointers",
                0.5,
            )
            .unwrap();
        assert_eq!(pasted.kind, "ngram");
        assert!(pasted.overlap >= 0.99, "{pasted:?}");
        // Shares a few words, not the question.
        assert!(
            set.check("how do I convert markdown to html on the web", 0.5)
                .is_none()
        );
        assert!(set.check("", 0.5).is_none());
    }

    #[test]
    fn eval_lines_are_read_from_json_or_plain_text() {
        assert_eq!(
            eval_line_text(r#"{"id": 1, "query": "q one"}"#).as_deref(),
            Some("q one")
        );
        assert_eq!(
            eval_line_text("plain question").as_deref(),
            Some("plain question")
        );
        assert_eq!(eval_line_text("   "), None);
        assert_eq!(eval_line_text(r#"{"other": 1}"#), None);
    }
}
