//! Cross-lineage code review ("scrum"): a diff goes to several models of
//! different lineages through a fan-out; each answers with findings as JSON;
//! findings that several models make about the same place and problem are
//! grouped as convergent, so agreement, not one model's opinion, decides
//! what to look at first.
//!
//! Answers are parsed tolerantly (fenced JSON, prose around it, a truncated
//! answer's complete findings); whatever cannot be parsed is kept verbatim
//! and flagged. A diff too long for one request is split at file and hunk
//! boundaries and the findings of all parts merged.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::http::HeaderMap;
use lakehouse_providers::openai::{ChatRequest, Usage};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::app::SharedState;
use crate::error::ApiError;
use crate::fanout::{self, FanoutRequest};

/// Lines apart two findings may be and still point at the same place.
const LINE_SLACK: u64 = 3;
/// Bytes per token, for sizing diff parts.
const BYTES_PER_TOKEN: usize = 4;
/// Tokens the instructions and the answer need besides the diff.
const PROMPT_OVERHEAD_TOKENS: usize = 1500;

const INSTRUCTIONS: &str = r#"You review a code change as a senior engineer. Report real problems only: bugs, security holes, data loss, races, broken error handling, missing tests for risky logic. No style nits.
Answer with JSON only, no prose, in exactly this shape:
{"findings": [{"file": "<path as in the diff>", "line": <line number in the new file>, "severity": "BLOCK" | "WARN" | "INFO", "title": "<one line>", "rationale": "<why it is a problem and how to fix it>"}]}
BLOCK: must be fixed before merging. WARN: should be fixed. INFO: worth knowing.
If there is nothing to report, answer {"findings": []}."#;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    Info,
    Warn,
    Block,
}

impl Severity {
    /// Reads the model's word for it; unknown words are `None`.
    fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "block" | "blocker" | "blocking" | "critical" | "high" | "error" | "severe" => {
                Some(Self::Block)
            }
            "warn" | "warning" | "medium" | "major" | "moderate" => Some(Self::Warn),
            "info" | "low" | "minor" | "nit" | "note" | "suggestion" => Some(Self::Info),
            _ => None,
        }
    }

    /// Weight in the composite score.
    fn weight(self) -> f64 {
        match self {
            Self::Block => 10.0,
            Self::Warn => 3.0,
            Self::Info => 1.0,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Block => "BLOCK",
            Self::Warn => "WARN",
            Self::Info => "INFO",
        }
    }
}

/// One problem a model reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub file: Option<String>,
    pub line: Option<u64>,
    pub severity: Severity,
    pub title: String,
    pub rationale: String,
}

/// How much of an answer could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParseStatus {
    /// A complete JSON answer (possibly fenced or with prose around it).
    Parsed,
    /// Only some findings could be salvaged (truncated or broken JSON).
    Partial,
    /// Text with no findings in any readable form; kept verbatim.
    Unparsed,
    /// No text at all.
    Empty,
    /// The model failed (error or timeout); there is no answer.
    Failed,
}

/// Findings read from one answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub status: ParseStatus,
    pub findings: Vec<Finding>,
}

/// Reads findings out of a model's answer, as tolerantly as possible.
pub fn parse_findings(answer: &str) -> Parsed {
    let text = strip_thinking(answer);
    if text.trim().is_empty() {
        return Parsed {
            status: ParseStatus::Empty,
            findings: Vec::new(),
        };
    }
    for candidate in fenced_blocks(&text).into_iter().chain([text.as_str()]) {
        if let Some(findings) = first_json(candidate).and_then(|v| findings_of(&v)) {
            return Parsed {
                status: ParseStatus::Parsed,
                findings,
            };
        }
    }
    let salvaged = salvage(&text);
    Parsed {
        status: if salvaged.is_empty() {
            ParseStatus::Unparsed
        } else {
            ParseStatus::Partial
        },
        findings: salvaged,
    }
}

/// Drops `<think>...</think>` reasoning some models put before the answer.
fn strip_thinking(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<think>") {
        out.push_str(&rest[..start]);
        match rest[start..].find("</think>") {
            Some(end) => rest = &rest[start + end + "</think>".len()..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

/// The bodies of Markdown code fences, in order.
fn fenced_blocks(text: &str) -> Vec<&str> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("```") {
        let after = &rest[open + 3..];
        // Skip the info string (`json`, `JSON`, ...) up to the end of the line.
        let body_start = after.find('\n').map_or(after.len(), |n| n + 1);
        let body = &after[body_start..];
        match body.find("```") {
            Some(close) => {
                blocks.push(&body[..close]);
                rest = &body[close + 3..];
            }
            None => {
                blocks.push(body);
                break;
            }
        }
    }
    blocks
}

/// The first JSON value starting at the first `{` or `[`; trailing prose is ignored.
fn first_json(text: &str) -> Option<Value> {
    let start = text.find(['{', '['])?;
    serde_json::Deserializer::from_str(&text[start..])
        .into_iter::<Value>()
        .next()?
        .ok()
}

/// Findings in a parsed answer: `{"findings": [...]}`, a bare list, or one finding.
fn findings_of(value: &Value) -> Option<Vec<Finding>> {
    let items = match value {
        Value::Array(items) => items.as_slice(),
        Value::Object(obj) => match obj.get("findings").or_else(|| obj.get("issues")) {
            Some(Value::Array(items)) => items.as_slice(),
            _ => return finding_of(value).map(|f| vec![f]),
        },
        _ => return None,
    };
    Some(items.iter().filter_map(finding_of).collect())
}

/// Every complete finding object anywhere in a broken answer.
fn salvage(text: &str) -> Vec<Finding> {
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(offset) = text.get(at..).and_then(|rest| rest.find('{')) {
        let start = at + offset;
        let mut values = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
        match values.next() {
            Some(Ok(value)) => {
                if let Some(finding) = finding_of(&value) {
                    found.push(finding);
                    at = start + values.byte_offset();
                    continue;
                }
                // An enclosing object that is not a finding: look inside it.
                at = start + 1;
            }
            _ => at = start + 1,
        }
    }
    found
}

fn first_str<'a>(obj: &'a serde_json::Map<String, Value>, keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .find_map(|k| obj.get(*k).and_then(Value::as_str))
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// A finding from one object, reading the usual synonyms of each field.
fn finding_of(value: &Value) -> Option<Finding> {
    let obj = value.as_object()?;
    let title = first_str(obj, &["title", "summary", "issue", "message", "problem"]);
    let rationale = first_str(
        obj,
        &[
            "rationale",
            "reason",
            "description",
            "explanation",
            "details",
        ],
    );
    let title = title.or(rationale)?.to_owned();
    let severity = first_str(obj, &["severity", "level", "priority"])
        .and_then(Severity::parse)
        // A finding whose severity cannot be read is still worth a look.
        .unwrap_or(Severity::Info);
    let line = ["line", "line_number", "lines", "start_line"]
        .iter()
        .find_map(|k| obj.get(*k))
        .and_then(|v| match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s
                .split(|c: char| !c.is_ascii_digit())
                .find(|part| !part.is_empty())
                .and_then(|digits| digits.parse().ok()),
            _ => None,
        });
    Some(Finding {
        file: first_str(obj, &["file", "path", "filename"]).map(normalize_path),
        line,
        severity,
        title,
        rationale: rationale.unwrap_or_default().to_owned(),
    })
}

/// `a/src/x.rs`, `b/src/x.rs` and `./src/x.rs` all name `src/x.rs`.
fn normalize_path(path: &str) -> String {
    let path = path.trim();
    let path = path
        .strip_prefix("a/")
        .or_else(|| path.strip_prefix("b/"))
        .unwrap_or(path);
    path.trim_start_matches("./").to_owned()
}

/// Splits a unified diff into parts of at most `max_bytes`, at file
/// boundaries first, then at hunks (repeating the file header), then at
/// lines; a single line longer than `max_bytes` stays whole.
pub fn split_diff(diff: &str, max_bytes: usize) -> Vec<String> {
    let max_bytes = max_bytes.max(1);
    let mut pieces: Vec<String> = Vec::new();
    for file in sections(diff, "diff --git ") {
        if file.len() <= max_bytes {
            pieces.push(file.to_owned());
            continue;
        }
        let mut hunks = sections(file, "@@ ").into_iter();
        let header = if file.starts_with("@@ ") {
            ""
        } else {
            hunks.next().unwrap_or_default()
        };
        let room = max_bytes.saturating_sub(header.len()).max(1);
        let mut piece = String::new();
        for hunk in hunks {
            for part in split_lines(hunk, room) {
                if !piece.is_empty() && piece.len() + part.len() > room {
                    pieces.push(format!("{header}{piece}"));
                    piece.clear();
                }
                piece.push_str(part);
            }
        }
        if !piece.is_empty() || pieces.is_empty() {
            pieces.push(format!("{header}{piece}"));
        }
    }
    let mut parts: Vec<String> = Vec::new();
    for piece in pieces {
        match parts.last_mut() {
            Some(last) if last.len() + piece.len() <= max_bytes => last.push_str(&piece),
            _ => parts.push(piece),
        }
    }
    parts
}

/// `text` cut before every line that starts with `marker` (the first piece
/// is whatever comes before the first marker, when anything does).
fn sections<'a>(text: &'a str, marker: &str) -> Vec<&'a str> {
    let mut cuts = vec![0];
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if offset > 0 && line.starts_with(marker) {
            cuts.push(offset);
        }
        offset += line.len();
    }
    cuts.push(text.len());
    cuts.windows(2)
        .map(|w| &text[w[0]..w[1]])
        .filter(|s| !s.is_empty())
        .collect()
}

/// Runs of whole lines of at most `max` bytes each.
fn split_lines(text: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut end) = (0, 0);
    for line in text.split_inclusive('\n') {
        if end > start && end - start + line.len() > max {
            out.push(&text[start..end]);
            start = end;
        }
        end += line.len();
    }
    if end > start {
        out.push(&text[start..end]);
    }
    out
}

/// Findings of several models about the same place and problem.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    /// The highest severity any member gave.
    pub severity: Severity,
    pub file: Option<String>,
    pub line: Option<u64>,
    /// The title of the most severe member.
    pub title: String,
    /// Models that made a finding in this group, sorted.
    pub models: Vec<String>,
    pub findings: Vec<ModelFinding>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelFinding {
    pub model: String,
    #[serde(flatten)]
    pub finding: Finding,
}

/// Words that carry meaning, for comparing two findings' problems.
fn keywords(text: &str) -> BTreeSet<String> {
    const STOP: &[&str] = &[
        "the", "and", "for", "this", "that", "with", "from", "are", "not", "can", "may", "when",
        "which", "into", "its", "but", "should", "could", "will", "has", "have", "been", "was",
        "use", "used", "uses", "using",
    ];
    text.split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        .filter(|w| w.len() >= 3 && !STOP.contains(&w.as_str()))
        .map(|w| match w.strip_suffix('s') {
            Some(stem) if stem.len() >= 3 && !stem.ends_with('s') => stem.to_owned(),
            _ => w,
        })
        .collect()
}

fn jaccard(a: &BTreeSet<String>, b: &BTreeSet<String>) -> f64 {
    let union = a.union(b).count();
    if union == 0 {
        return 0.0;
    }
    a.intersection(b).count() as f64 / union as f64
}

/// Same file, lines at most [`LINE_SLACK`] apart (or both without a line),
/// and titles (or titles with rationales) that share enough words.
fn converge(a: &Finding, b: &Finding) -> bool {
    let place = a.file == b.file
        && match (a.line, b.line) {
            (Some(x), Some(y)) => x.abs_diff(y) <= LINE_SLACK,
            (None, None) => true,
            _ => false,
        };
    if !place {
        return false;
    }
    let titles = jaccard(&keywords(&a.title), &keywords(&b.title));
    let full = jaccard(
        &keywords(&format!("{} {}", a.title, a.rationale)),
        &keywords(&format!("{} {}", b.title, b.rationale)),
    );
    titles >= 0.3 || full >= 0.2
}

/// Groups every model's findings (connected by [`converge`]), most severe
/// and most agreed-on first.
pub fn group(findings: &[ModelFinding]) -> Vec<Group> {
    let mut parent: Vec<usize> = (0..findings.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for i in 0..findings.len() {
        for j in i + 1..findings.len() {
            if converge(&findings[i].finding, &findings[j].finding) {
                let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                parent[a.max(b)] = a.min(b);
            }
        }
    }
    let mut members: BTreeMap<usize, Vec<ModelFinding>> = BTreeMap::new();
    for (i, finding) in findings.iter().enumerate() {
        members
            .entry(root(&mut parent, i))
            .or_default()
            .push(finding.clone());
    }
    let mut groups: Vec<Group> = members
        .into_values()
        .filter_map(|members| {
            // The first of the most severe (`max_by_key` keeps the last).
            let lead = members
                .iter()
                .rev()
                .max_by_key(|m| m.finding.severity)?
                .finding
                .clone();
            let models: BTreeSet<String> = members.iter().map(|m| m.model.clone()).collect();
            Some(Group {
                severity: lead.severity,
                file: lead.file,
                line: lead.line,
                title: lead.title,
                models: models.into_iter().collect(),
                findings: members,
            })
        })
        .collect();
    groups.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| b.models.len().cmp(&a.models.len()))
            .then_with(|| a.file.cmp(&b.file))
            .then_with(|| a.line.cmp(&b.line))
    });
    groups
}

/// Σ over groups of severity weight (BLOCK 10, WARN 3, INFO 1) × the share
/// of responding models that agree: 0 is a clean review; a BLOCK every
/// model agrees on adds 10.
pub fn composite_score(groups: &[Group], responding: usize) -> f64 {
    let responding = responding.max(1) as f64;
    let score: f64 = groups
        .iter()
        .map(|g| g.severity.weight() * (g.models.len() as f64 / responding).min(1.0))
        .sum();
    (score * 100.0).round() / 100.0
}

/// One model's answer to one part of the diff.
#[derive(Debug, Clone, Serialize)]
pub struct PartAnswer {
    pub part: usize,
    pub status: ParseStatus,
    pub provider: Option<String>,
    pub latency_ms: u64,
    pub usage: Option<Usage>,
    /// The answer exactly as the model gave it.
    pub verbatim: Option<String>,
    pub error: Option<Value>,
}

/// Everything one model said about the diff.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub model: String,
    /// The worst status over the parts that got an answer (`failed` when none did).
    pub status: ParseStatus,
    pub parts: Vec<PartAnswer>,
    pub findings: Vec<Finding>,
}

impl Verdict {
    /// The model gave at least one readable answer.
    fn responded(&self) -> bool {
        matches!(self.status, ParseStatus::Parsed | ParseStatus::Partial)
    }
}

/// A finished review.
#[derive(Debug, Clone, Serialize)]
pub struct Review {
    pub label: String,
    pub date: String,
    pub models: Vec<String>,
    pub parts: usize,
    pub responding: usize,
    pub score: f64,
    pub verdicts: Vec<Verdict>,
    pub groups: Vec<Group>,
}

/// How to run a review.
#[derive(Debug, Clone)]
pub struct ReviewOptions {
    pub label: String,
    pub models: Vec<String>,
    /// Context tokens each model may be sent; the diff is split to fit.
    pub context_tokens: usize,
    pub timeout: Duration,
}

/// The default reviewers: the `[models]` tiers cloud_review, frontier_review
/// and cloud_judge, those that are set.
pub fn default_models(state: &SharedState) -> Vec<String> {
    ["cloud_review", "frontier_review", "cloud_judge"]
        .into_iter()
        .filter(|tier| state.config.models.get(tier).is_some())
        .map(|tier| format!("tier/{tier}"))
        .collect()
}

/// Sends every part of `diff` to every model (models in parallel, parts in
/// turn), reads their findings and groups them.
pub async fn review(
    state: &SharedState,
    diff: &str,
    options: &ReviewOptions,
) -> Result<Review, ApiError> {
    check_label(&options.label)?;
    if diff.trim().is_empty() {
        return Err(ApiError::bad_request("the diff is empty"));
    }
    let room = options
        .context_tokens
        .saturating_sub(PROMPT_OVERHEAD_TOKENS)
        .max(256)
        * BYTES_PER_TOKEN;
    let parts = split_diff(diff, room);
    let mut verdicts: Vec<Verdict> = options
        .models
        .iter()
        .map(|model| Verdict {
            model: model.clone(),
            status: ParseStatus::Failed,
            parts: Vec::new(),
            findings: Vec::new(),
        })
        .collect();
    for (part, text) in parts.iter().enumerate() {
        let request = FanoutRequest::new(
            options.models.clone(),
            review_request(text, part + 1, parts.len())?,
            options.timeout,
            state,
        )?;
        for answer in fanout::run(state, &HeaderMap::new(), &request).await {
            let Some(verdict) = verdicts.get_mut(answer.index) else {
                continue;
            };
            let parsed = match &answer.content {
                Some(text) => parse_findings(text),
                None => Parsed {
                    status: ParseStatus::Failed,
                    findings: Vec::new(),
                },
            };
            for finding in parsed.findings {
                if !verdict.findings.contains(&finding) {
                    verdict.findings.push(finding);
                }
            }
            verdict.parts.push(PartAnswer {
                part: part + 1,
                status: parsed.status,
                provider: answer.provider,
                latency_ms: answer.latency_ms,
                usage: answer.usage,
                verbatim: answer.content,
                error: answer.error,
            });
        }
    }
    for verdict in &mut verdicts {
        verdict.status = overall_status(&verdict.parts);
    }
    let all: Vec<ModelFinding> = verdicts
        .iter()
        .flat_map(|v| {
            v.findings.iter().map(|f| ModelFinding {
                model: v.model.clone(),
                finding: f.clone(),
            })
        })
        .collect();
    let groups = group(&all);
    let responding = verdicts.iter().filter(|v| v.responded()).count();
    Ok(Review {
        label: options.label.clone(),
        date: utc_date(lakehouse_providers::openai::unix_now()),
        models: options.models.clone(),
        parts: parts.len(),
        responding,
        score: composite_score(&groups, responding),
        verdicts,
        groups,
    })
}

/// Worst readable status over the answered parts; `failed` when none was answered.
fn overall_status(parts: &[PartAnswer]) -> ParseStatus {
    let answered: Vec<ParseStatus> = parts
        .iter()
        .map(|p| p.status)
        .filter(|s| *s != ParseStatus::Failed)
        .collect();
    if answered.is_empty() {
        ParseStatus::Failed
    } else if answered.iter().all(|s| *s == ParseStatus::Parsed) {
        ParseStatus::Parsed
    } else if answered
        .iter()
        .any(|s| matches!(s, ParseStatus::Parsed | ParseStatus::Partial))
    {
        ParseStatus::Partial
    } else if answered.contains(&ParseStatus::Unparsed) {
        ParseStatus::Unparsed
    } else {
        ParseStatus::Empty
    }
}

fn review_request(diff: &str, part: usize, parts: usize) -> Result<ChatRequest, ApiError> {
    let which = if parts > 1 {
        format!(" (part {part} of {parts}; other parts are reviewed separately)")
    } else {
        String::new()
    };
    serde_json::from_value(json!({
        "model": "scrum",
        "temperature": 0.2,
        "messages": [
            {"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": format!("Review this diff{which}:\n\n```diff\n{diff}\n```")},
        ],
    }))
    .map_err(|e| ApiError::internal(format!("cannot build the review request: {e}")))
}

/// Labels become a directory name: letters, digits, `-`, `_`, `.`.
fn check_label(label: &str) -> Result<(), ApiError> {
    let ok = !label.is_empty()
        && label.len() <= 100
        && !label.starts_with('.')
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "label {label:?} must be 1-100 letters, digits, - _ . (not starting with .)"
        )))
    }
}

/// `reports/scrum/<date>/<label>/` under `root`.
pub fn report_dir(root: &Path, review: &Review) -> PathBuf {
    root.join(&review.date).join(&review.label)
}

/// Writes `verdicts/<model>.json`, `disposition.md` and `summary.json`.
pub fn write_report(dir: &Path, review: &Review) -> std::io::Result<()> {
    let verdicts = dir.join("verdicts");
    std::fs::create_dir_all(&verdicts)?;
    for verdict in &review.verdicts {
        let path = verdicts.join(format!("{}.json", file_name(&verdict.model)));
        std::fs::write(path, to_json(verdict)?)?;
    }
    std::fs::write(dir.join("disposition.md"), disposition(review))?;
    std::fs::write(dir.join("summary.json"), to_json(review)?)
}

fn to_json(value: &impl Serialize) -> std::io::Result<String> {
    serde_json::to_string_pretty(value).map_err(std::io::Error::other)
}

/// A model id as a file name: `tier/cloud_review` → `tier_cloud_review`.
fn file_name(model: &str) -> String {
    model
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The Markdown table a reviewer fills in: one row per finding group.
pub fn disposition(review: &Review) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Scrum review: {} ({})\n", review.label, review.date);
    let _ = writeln!(
        out,
        "Composite score **{}** (Σ severity weight BLOCK 10 / WARN 3 / INFO 1 × share of the {} responding models that agree; 0 is clean). {} finding groups from {} models over {} diff part(s).\n",
        review.score,
        review.responding,
        review.groups.len(),
        review.models.len(),
        review.parts
    );
    let _ = writeln!(out, "| model | status | findings |\n|---|---|---|");
    for v in &review.verdicts {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            v.model,
            serde_json::to_value(v.status)
                .ok()
                .and_then(|s| s.as_str().map(str::to_owned))
                .unwrap_or_default(),
            v.findings.len()
        );
    }
    let _ = writeln!(
        out,
        "\n| # | severity | agree | models | place | summary | disposition |\n|---|---|---|---|---|---|---|"
    );
    for (i, g) in review.groups.iter().enumerate() {
        let place = match (&g.file, g.line) {
            (Some(file), Some(line)) => format!("{file}:{line}"),
            (Some(file), None) => file.clone(),
            _ => "-".to_owned(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {}/{} | {} | {} | {} |  |",
            i + 1,
            g.severity.label(),
            g.models.len(),
            review.responding,
            g.models.join(", "),
            cell(&place),
            cell(&g.title)
        );
    }
    out
}

/// Text safe inside a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// `YYYY-MM-DD` (UTC) of a Unix time.
fn utc_date(unix: u64) -> String {
    // Civil-from-days (H. Hinnant), valid for every date after 1970.
    let days = (unix / 86_400) as i64 + 719_468;
    let era = days / 146_097;
    let doe = days - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(file: &str, line: u64, severity: Severity, title: &str) -> Finding {
        Finding {
            file: Some(file.into()),
            line: Some(line),
            severity,
            title: title.into(),
            rationale: String::new(),
        }
    }

    #[test]
    fn reads_fenced_json_with_prose_and_synonyms() {
        let answer = "<think>hmm {not json}</think>Here is my review:\n```json\n{\"findings\": [{\"path\": \"b/src/lib.rs\", \"line\": \"42-44\", \"severity\": \"high\", \"title\": \"Unwrap on input\", \"reason\": \"panics\"}]}\n```\nHope this helps!";
        let parsed = parse_findings(answer);
        assert_eq!(parsed.status, ParseStatus::Parsed);
        assert_eq!(
            parsed.findings,
            vec![Finding {
                file: Some("src/lib.rs".into()),
                line: Some(42),
                severity: Severity::Block,
                title: "Unwrap on input".into(),
                rationale: "panics".into(),
            }]
        );
    }

    #[test]
    fn reads_bare_lists_trailing_prose_and_empty_reviews() {
        let parsed = parse_findings(
            "[{\"file\":\"a.rs\",\"line\":3,\"severity\":\"WARN\",\"title\":\"x\"}] That is all.",
        );
        assert_eq!(parsed.status, ParseStatus::Parsed);
        assert_eq!(parsed.findings[0].severity, Severity::Warn);
        let clean = parse_findings("{\"findings\": []}");
        assert_eq!(clean.status, ParseStatus::Parsed);
        assert!(clean.findings.is_empty());
        assert_eq!(parse_findings("  \n").status, ParseStatus::Empty);
        let prose = parse_findings("Looks good to me, ship it.");
        assert_eq!(prose.status, ParseStatus::Unparsed);
    }

    #[test]
    fn salvages_complete_findings_from_a_truncated_answer() {
        let answer = "{\"findings\": [{\"file\": \"x.rs\", \"line\": 1, \"severity\": \"BLOCK\", \"title\": \"first\"}, {\"file\": \"y.rs\", \"line\": 2, \"severity\": \"INFO\", \"title\": \"sec";
        let parsed = parse_findings(answer);
        assert_eq!(parsed.status, ParseStatus::Partial);
        assert_eq!(parsed.findings.len(), 1);
        assert_eq!(parsed.findings[0].title, "first");
        // An unknown severity is kept as INFO rather than dropping the finding.
        let odd = parse_findings("{\"title\": \"odd\", \"severity\": \"purple\"}");
        assert_eq!(odd.findings[0].severity, Severity::Info);
    }

    #[test]
    fn splits_long_diffs_at_files_then_hunks_repeating_headers() {
        let file = |name: &str, hunks: usize| {
            let mut s = format!("diff --git a/{name} b/{name}\n--- a/{name}\n+++ b/{name}\n");
            for h in 0..hunks {
                s.push_str(&format!("@@ -{h},3 +{h},3 @@\n"));
                for l in 0..5 {
                    s.push_str(&format!("+line {h}.{l} of {name}\n"));
                }
            }
            s
        };
        let diff = format!("{}{}", file("small.rs", 1), file("big.rs", 6));
        assert_eq!(split_diff(&diff, 100_000), vec![diff.clone()]);
        let parts = split_diff(&diff, 300);
        assert!(parts.len() > 2, "{parts:?}");
        assert!(parts.iter().all(|p| p.len() <= 300), "{parts:?}");
        let big_parts: Vec<&String> = parts.iter().filter(|p| p.contains("big.rs")).collect();
        assert!(big_parts.len() >= 2);
        assert!(
            big_parts
                .iter()
                .all(|p| p.starts_with("diff --git a/big.rs"))
        );
        // Nothing lost: every added line is in exactly one part.
        for h in 0..6 {
            for l in 0..5 {
                let line = format!("+line {h}.{l} of big.rs\n");
                assert_eq!(
                    parts.iter().filter(|p| p.contains(&line)).count(),
                    1,
                    "{line}"
                );
            }
        }
    }

    #[test]
    fn groups_same_place_and_problem_across_models() {
        let all = vec![
            ModelFinding {
                model: "m1".into(),
                finding: finding(
                    "src/lib.rs",
                    10,
                    Severity::Warn,
                    "Unchecked unwrap on user input panics",
                ),
            },
            ModelFinding {
                model: "m2".into(),
                finding: finding(
                    "src/lib.rs",
                    12,
                    Severity::Block,
                    "unwrap on user input can panic",
                ),
            },
            ModelFinding {
                model: "m3".into(),
                finding: finding(
                    "src/lib.rs",
                    11,
                    Severity::Info,
                    "Unwrap of user input panics",
                ),
            },
            // Same place, different problem.
            ModelFinding {
                model: "m3".into(),
                finding: finding("src/lib.rs", 10, Severity::Info, "Misleading variable name"),
            },
            // Same problem, other file.
            ModelFinding {
                model: "m1".into(),
                finding: finding(
                    "src/other.rs",
                    10,
                    Severity::Warn,
                    "Unchecked unwrap on user input panics",
                ),
            },
        ];
        let groups = group(&all);
        assert_eq!(groups.len(), 3);
        assert_eq!(groups[0].severity, Severity::Block);
        assert_eq!(groups[0].models, vec!["m1", "m2", "m3"]);
        assert_eq!(groups[0].title, "unwrap on user input can panic");
        assert_eq!(groups[1].models, vec!["m1"]);
        assert_eq!(groups[1].file.as_deref(), Some("src/other.rs"));
        assert_eq!(groups[2].title, "Misleading variable name");
        // BLOCK agreed by 3 of 3 (10) + WARN by 1 of 3 (1) + INFO by 1 of 3 (0.33).
        assert_eq!(composite_score(&groups, 3), 11.33);
    }

    #[test]
    fn dates_and_labels() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(1_795_564_800), "2026-11-25");
        assert_eq!(utc_date(951_782_400), "2000-02-29");
        assert!(check_label("pr-42_v1.2").is_ok());
        for bad in ["", "..", "../x", "a/b", ".hidden", "x y"] {
            assert!(check_label(bad).is_err(), "{bad}");
        }
        assert_eq!(file_name("tier/cloud_review"), "tier_cloud_review");
    }
}
