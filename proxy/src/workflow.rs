//! Workflows: DAGs of nodes declared in TOML, run over the store and the
//! observer (`lakehouse workflow run <file>`, `POST /admin/workflows/{name}/run`).
//!
//! ```toml
//! [[nodes]]
//! id = "search"
//! mode = "matrix.search"
//! inputs = { query = "rotate the logs", corpora = ["runbooks"], k = 20 }
//!
//! [[nodes]]
//! id = "keep"
//! mode = "matrix.relevance"
//! depends_on = ["search"]
//! inputs = { hits = "$search.hits", k = 5 }
//! ```
//!
//! A string input `"$node"` or `"$node.field.sub"` is replaced by that
//! dependency's output (it must be listed in `depends_on`). Nodes whose
//! dependencies are done run in parallel, each under its timeout; a failed
//! node skips its dependants. Cycles, unknown dependencies and references are
//! refused when the file is loaded. Every run is kept under `workflows/runs/`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use lakehouse_retrieval::matrix::{self, FilterLimits, QueryVectors, Source};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::app::SharedState;
use crate::distill::{self, Verdict};
use crate::observer::{EventFilter, unix_ms};

/// Where runs are kept in the store.
pub const RUNS: &str = "workflows/runs";
/// Per-node time limit when neither the node nor the workflow sets one.
const DEFAULT_NODE_TIMEOUT_SECS: u64 = 60;
const MAX_NODE_TIMEOUT_SECS: u64 = 3600;
const MAX_NODES: usize = 256;

/// What a node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Embeds `query` and searches `corpora`; output `{hits}` best first.
    #[serde(rename = "matrix.search")]
    MatrixSearch,
    /// Ranks `hits` and keeps the best within `k`, the token budget and without near-duplicates.
    #[serde(rename = "matrix.relevance")]
    MatrixRelevance,
    /// The downgrade gate's decision for `model`: full or reduced context (and `hits` cut to it).
    #[serde(rename = "matrix.downgrade")]
    MatrixDowngrade,
    /// Scores witnessed runs (optionally with a `judge`), exports the good ones when `export`.
    #[serde(rename = "distillation.score")]
    DistillationScore,
    /// Drift between `baseline` and `recent` samples, or between the observer's windows.
    #[serde(rename = "drift.scorer")]
    DriftScorer,
    /// Returns its inputs.
    #[serde(rename = "fixture.echo")]
    FixtureEcho,
    /// Returns `{text}` upper-cased.
    #[serde(rename = "fixture.upper")]
    FixtureUpper,
    /// Waits `ms` milliseconds (timeouts and parallelism in tests).
    #[serde(rename = "fixture.sleep")]
    FixtureSleep,
    /// Fails with `message` (error propagation in tests).
    #[serde(rename = "fixture.fail")]
    FixtureFail,
}

/// One node as written in the file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub id: String,
    pub mode: Mode,
    #[serde(default)]
    pub inputs: Map<String, Value>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkflowFile {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    /// Default per-node time limit.
    #[serde(default)]
    timeout_secs: Option<u64>,
    nodes: Vec<Node>,
}

/// A loaded, validated workflow.
#[derive(Debug, Clone, Serialize)]
pub struct Workflow {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub nodes: Vec<Node>,
    #[serde(skip)]
    default_timeout: Duration,
}

/// Why a workflow file was refused.
#[derive(Debug, thiserror::Error)]
#[error("workflow {file}: {reason}")]
pub struct WorkflowError {
    pub file: String,
    pub reason: String,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The dependency a `$node.path` reference points at, if `value` is one.
fn reference(value: &str) -> Option<(&str, Vec<&str>)> {
    let path = value.strip_prefix('$')?;
    let mut parts = path.split('.');
    let node = parts.next().filter(|n| !n.is_empty())?;
    Some((node, parts.collect()))
}

/// Every `$` reference inside `value`.
fn references(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => {
            if let Some((node, _)) = reference(s) {
                out.push(node.to_owned());
            }
        }
        Value::Array(items) => items.iter().for_each(|v| references(v, out)),
        Value::Object(map) => map.values().for_each(|v| references(v, out)),
        _ => {}
    }
}

impl Workflow {
    /// Parses and validates a workflow; `file` names it in errors and, when the
    /// file sets no `name`, gives it its name (the file stem).
    pub fn parse(text: &str, file: &Path) -> Result<Self, WorkflowError> {
        let fail = |reason: String| WorkflowError {
            file: file.display().to_string(),
            reason,
        };
        let parsed: WorkflowFile =
            toml::from_str(text).map_err(|e| fail(e.to_string().trim().replace('\n', " ")))?;
        let name = match parsed.name {
            Some(name) => name,
            None => file
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_owned(),
        };
        if !valid_name(&name) {
            return Err(fail(format!(
                "name {name:?} must be 1-64 letters, digits, '-' or '_'"
            )));
        }
        let timeout = parsed.timeout_secs.unwrap_or(DEFAULT_NODE_TIMEOUT_SECS);
        let check_timeout = |t: u64, key: &str| {
            if (1..=MAX_NODE_TIMEOUT_SECS).contains(&t) {
                Ok(())
            } else {
                Err(fail(format!(
                    "{key} must be from 1 to {MAX_NODE_TIMEOUT_SECS} seconds"
                )))
            }
        };
        check_timeout(timeout, "timeout_secs")?;
        if parsed.nodes.is_empty() || parsed.nodes.len() > MAX_NODES {
            return Err(fail(format!("needs 1 to {MAX_NODES} [[nodes]]")));
        }
        let ids: HashSet<&str> = parsed.nodes.iter().map(|n| n.id.as_str()).collect();
        if ids.len() != parsed.nodes.len() {
            return Err(fail("node ids must be unique".into()));
        }
        for node in &parsed.nodes {
            let at = |reason: String| fail(format!("node {:?}: {reason}", node.id));
            if !valid_name(&node.id) {
                return Err(at("ids are 1-64 letters, digits, '-' or '_'".into()));
            }
            if let Some(t) = node.timeout_secs {
                check_timeout(t, &format!("node {:?} timeout_secs", node.id))?;
            }
            for dep in &node.depends_on {
                if dep == &node.id {
                    return Err(at("depends on itself".into()));
                }
                if !ids.contains(dep.as_str()) {
                    return Err(at(format!("depends on {dep:?}, which is not a node")));
                }
            }
            let mut refs = Vec::new();
            node.inputs.values().for_each(|v| references(v, &mut refs));
            if let Some(bad) = refs.iter().find(|r| !node.depends_on.contains(r)) {
                return Err(at(format!(
                    "input refers to ${bad}, which is not in its depends_on"
                )));
            }
        }
        if let Some(cycle) = find_cycle(&parsed.nodes) {
            return Err(fail(format!("cycle: {}", cycle.join(" -> "))));
        }
        Ok(Self {
            name,
            description: parsed.description,
            nodes: parsed.nodes,
            default_timeout: Duration::from_secs(timeout),
        })
    }

    /// Reads and validates one workflow file.
    pub fn load(path: &Path) -> Result<Self, WorkflowError> {
        let text = std::fs::read_to_string(path).map_err(|e| WorkflowError {
            file: path.display().to_string(),
            reason: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, path)
    }
}

/// Every `*.toml` workflow in `dir` by name; a missing folder holds none.
pub fn load_dir(dir: &Path) -> Result<BTreeMap<String, Workflow>, WorkflowError> {
    let mut workflows = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(workflows),
        Err(e) => {
            return Err(WorkflowError {
                file: dir.display().to_string(),
                reason: format!("cannot list: {e}"),
            });
        }
    };
    let mut paths: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    for path in paths {
        let workflow = Workflow::load(&path)?;
        if workflows.contains_key(&workflow.name) {
            return Err(WorkflowError {
                file: path.display().to_string(),
                reason: format!("another file already declares {:?}", workflow.name),
            });
        }
        workflows.insert(workflow.name.clone(), workflow);
    }
    Ok(workflows)
}

/// A cycle in the dependency graph, as node ids (first repeated last), if any.
fn find_cycle(nodes: &[Node]) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let mut marks = vec![Mark::New; nodes.len()];
    for start in 0..nodes.len() {
        if marks[start] != Mark::New {
            continue;
        }
        // Iterative depth-first search: (node, next dependency to visit).
        let mut stack = vec![(start, 0usize)];
        marks[start] = Mark::Open;
        while let Some((node, next)) = stack.last_mut() {
            let deps = &nodes[*node].depends_on;
            if *next < deps.len() {
                let dep = index.get(deps[*next].as_str()).copied();
                *next += 1;
                let Some(dep) = dep else { continue };
                match marks[dep] {
                    Mark::New => {
                        marks[dep] = Mark::Open;
                        stack.push((dep, 0));
                    }
                    Mark::Open => {
                        let from = stack.iter().position(|(n, _)| *n == dep).unwrap_or(0);
                        let mut cycle: Vec<String> = stack[from..]
                            .iter()
                            .map(|(n, _)| nodes[*n].id.clone())
                            .collect();
                        cycle.push(nodes[dep].id.clone());
                        return Some(cycle);
                    }
                    Mark::Done => {}
                }
            } else {
                marks[*node] = Mark::Done;
                stack.pop();
            }
        }
    }
    None
}

/// How a node ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    Succeeded,
    Failed,
    TimedOut,
    /// Not run because a dependency did not succeed.
    Skipped,
}

/// One node of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRun {
    pub id: String,
    pub mode: Mode,
    pub status: NodeStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One run of a workflow, as kept under `workflows/runs/<id>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub id: String,
    pub workflow: String,
    pub started_ms: u64,
    pub finished_ms: u64,
    /// `accept` only when every node succeeded and none reported a rejection
    /// or an error of its own (a failed scoring is `error`, never `accept`).
    pub verdict: Verdict,
    /// Nodes in the order they finished.
    pub nodes: Vec<NodeRun>,
}

/// Whether `id` can be a run id (and so a store key part).
pub fn valid_run_id(id: &str) -> bool {
    id.starts_with("wfr-") && valid_name(id)
}

/// Runs `workflow` to the end and keeps the run in the store (a failure to
/// keep it is logged; the run is still returned).
pub async fn run(state: &SharedState, workflow: &Workflow) -> Run {
    let started_ms = unix_ms();
    let id = format!("wfr-{started_ms}-{:08x}", fastrand::u32(..));
    let nodes = execute(state, workflow).await;
    let verdict = verdict_of(&nodes);
    let run = Run {
        id,
        workflow: workflow.name.clone(),
        started_ms,
        finished_ms: unix_ms(),
        verdict,
        nodes,
    };
    match serde_json::to_vec_pretty(&run) {
        Ok(bytes) => {
            let key = format!("{RUNS}/{}.json", run.id);
            if let Err(e) = state.store.objects().put(&key, Bytes::from(bytes)).await {
                tracing::warn!(run = %run.id, "cannot keep the workflow run: {e}");
            }
        }
        Err(e) => tracing::warn!(run = %run.id, "cannot encode the workflow run: {e}"),
    }
    run
}

fn verdict_of(nodes: &[NodeRun]) -> Verdict {
    if nodes.iter().any(|n| n.status != NodeStatus::Succeeded) {
        return Verdict::Error;
    }
    let reported = |v: &str| {
        nodes.iter().any(|n| {
            n.output
                .as_ref()
                .and_then(|o| o.get("verdict"))
                .and_then(Value::as_str)
                == Some(v)
        })
    };
    if reported("error") {
        Verdict::Error
    } else if reported("reject") {
        Verdict::Reject
    } else {
        Verdict::Accept
    }
}

/// Runs the DAG: every node whose dependencies succeeded starts at once.
async fn execute(state: &SharedState, workflow: &Workflow) -> Vec<NodeRun> {
    let nodes = &workflow.nodes;
    let mut waiting: Vec<usize> = nodes.iter().map(|n| n.depends_on.len()).collect();
    let dependants: Vec<Vec<usize>> = (0..nodes.len())
        .map(|i| {
            (0..nodes.len())
                .filter(|j| nodes[*j].depends_on.contains(&nodes[i].id))
                .collect()
        })
        .collect();
    let mut ready: Vec<usize> = (0..nodes.len()).filter(|i| waiting[*i] == 0).collect();
    // Marks `i` done and queues the dependants it made ready.
    let mut release = |i: usize, ready: &mut Vec<usize>| {
        for &d in &dependants[i] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                ready.push(d);
            }
        }
    };
    let mut outputs: HashMap<String, Value> = HashMap::new();
    let mut finished = Vec::with_capacity(nodes.len());
    let mut tasks = tokio::task::JoinSet::new();
    let mut task_node: HashMap<tokio::task::Id, usize> = HashMap::new();
    loop {
        while let Some(i) = ready.pop() {
            let node = &nodes[i];
            let blocked = node
                .depends_on
                .iter()
                .find(|d| !outputs.contains_key(d.as_str()));
            if let Some(dep) = blocked {
                // A dependency did not succeed: skipped, and so are its dependants.
                finished.push(NodeRun::ended(
                    node,
                    NodeStatus::Skipped,
                    None,
                    Err(format!("dependency {dep:?} did not succeed")),
                ));
                release(i, &mut ready);
                continue;
            }
            let inputs = resolve(&node.inputs, &outputs);
            let limit = node
                .timeout_secs
                .map_or(workflow.default_timeout, Duration::from_secs);
            let state = state.clone();
            let mode = node.mode;
            let handle = tasks.spawn(async move {
                let started = unix_ms();
                let result = match tokio::time::timeout(limit, run_mode(&state, mode, inputs)).await
                {
                    Ok(Ok(output)) => Ok(output),
                    Ok(Err(e)) => Err((NodeStatus::Failed, e)),
                    Err(_) => Err((
                        NodeStatus::TimedOut,
                        format!("no result within {} s", limit.as_secs_f64()),
                    )),
                };
                (started, unix_ms(), result)
            });
            task_node.insert(handle.id(), i);
        }
        let Some(joined) = tasks.join_next_with_id().await else {
            break;
        };
        let (task, outcome) = match joined {
            Ok((task, outcome)) => (task, Ok(outcome)),
            Err(e) => (
                e.id(),
                Err(format!("the node's task ended abnormally: {e}")),
            ),
        };
        let Some(i) = task_node.remove(&task) else {
            continue;
        };
        let node = &nodes[i];
        let record = match outcome {
            Ok((started, ended, Ok(output))) => {
                outputs.insert(node.id.clone(), output.clone());
                NodeRun::ended(
                    node,
                    NodeStatus::Succeeded,
                    Some((started, ended)),
                    Ok(output),
                )
            }
            Ok((started, ended, Err((status, error)))) => {
                NodeRun::ended(node, status, Some((started, ended)), Err(error))
            }
            Err(error) => NodeRun::ended(node, NodeStatus::Failed, None, Err(error)),
        };
        finished.push(record);
        release(i, &mut ready);
    }
    finished
}

impl NodeRun {
    fn ended(
        node: &Node,
        status: NodeStatus,
        times: Option<(u64, u64)>,
        result: Result<Value, String>,
    ) -> Self {
        let (output, error) = match result {
            Ok(output) => (Some(output), None),
            Err(error) => (None, Some(error)),
        };
        Self {
            id: node.id.clone(),
            mode: node.mode,
            status,
            started_ms: times.map(|t| t.0),
            finished_ms: times.map(|t| t.1),
            output,
            error,
        }
    }
}

/// `inputs` with every `$node.path` reference replaced by that output's value
/// (`null` when the path does not exist).
fn resolve(inputs: &Map<String, Value>, outputs: &HashMap<String, Value>) -> Map<String, Value> {
    fn walk(value: &Value, outputs: &HashMap<String, Value>) -> Value {
        match value {
            Value::String(s) => match reference(s) {
                Some((node, path)) => outputs
                    .get(node)
                    .and_then(|output| {
                        path.iter().try_fold(output, |v, key| match v {
                            Value::Array(items) => {
                                key.parse::<usize>().ok().and_then(|i| items.get(i))
                            }
                            _ => v.get(key),
                        })
                    })
                    .cloned()
                    .unwrap_or(Value::Null),
                None => value.clone(),
            },
            Value::Array(items) => Value::Array(items.iter().map(|v| walk(v, outputs)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), walk(v, outputs)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    inputs
        .iter()
        .map(|(k, v)| (k.clone(), walk(v, outputs)))
        .collect()
}

fn input<T: serde::de::DeserializeOwned>(
    inputs: &Map<String, Value>,
    key: &str,
) -> Result<Option<T>, String> {
    match inputs.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| format!("input {key:?}: {e}")),
    }
}

fn required<T: serde::de::DeserializeOwned>(
    inputs: &Map<String, Value>,
    key: &str,
) -> Result<T, String> {
    input(inputs, key)?.ok_or_else(|| format!("input {key:?} is required"))
}

fn to_value<T: Serialize>(value: &T) -> Result<Value, String> {
    serde_json::to_value(value).map_err(|e| format!("cannot encode the output: {e}"))
}

/// Runs one node's mode on its resolved inputs.
async fn run_mode(
    state: &SharedState,
    mode: Mode,
    inputs: Map<String, Value>,
) -> Result<Value, String> {
    let matrix_config = &state.config.plugins.matrix;
    match mode {
        Mode::FixtureEcho => Ok(Value::Object(inputs)),
        Mode::FixtureUpper => {
            let text: String = required(&inputs, "text")?;
            Ok(json!({ "text": text.to_uppercase() }))
        }
        Mode::FixtureSleep => {
            let ms: u64 = required(&inputs, "ms")?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(json!({ "slept_ms": ms }))
        }
        Mode::FixtureFail => {
            let message: Option<String> = input(&inputs, "message")?;
            Err(message.unwrap_or_else(|| "fixture.fail".into()))
        }
        Mode::MatrixSearch => {
            let query: String = required(&inputs, "query")?;
            let corpora: Vec<String> = required(&inputs, "corpora")?;
            let k: usize = input(&inputs, "k")?.unwrap_or(matrix_config.candidates);
            let mut vectors = QueryVectors::new();
            matrix::embed_query(&state.store, &corpora, &query, &mut vectors)
                .await
                .map_err(|e| e.to_string())?;
            let mut hits = matrix::search(
                &state.store,
                &corpora,
                &vectors,
                k,
                matrix_config.min_similarity,
            )
            .await
            .map_err(|e| e.to_string())?;
            hits.truncate(k);
            Ok(json!({ "hits": hits }))
        }
        Mode::MatrixRelevance => {
            let mut hits: Vec<Source> = required(&inputs, "hits")?;
            let limits = FilterLimits {
                k: input(&inputs, "k")?.unwrap_or(matrix_config.k),
                duplicate_overlap: input(&inputs, "duplicate_overlap")?
                    .unwrap_or(matrix_config.duplicate_overlap),
                token_budget: input(&inputs, "token_budget")?.unwrap_or(matrix_config.token_budget),
            };
            let min_score: Option<f32> = input(&inputs, "min_score")?;
            if let Some(min) = min_score {
                hits.retain(|h| h.final_score() >= min);
            }
            matrix::sort_best_first(&mut hits);
            Ok(json!({ "hits": matrix::relevance_filter(hits, limits) }))
        }
        Mode::MatrixDowngrade => {
            let model: String = required(&inputs, "model")?;
            let target = crate::routes::chat::resolve_tier(&state.config.models, &model)
                .map_err(|e| e.message)?
                .to_owned();
            let limits = lakehouse_plugins::downgrade::context_for(
                &state.config.models.weak_models,
                &state.config.plugins.downgrade,
                &target,
                input(&inputs, "k")?.unwrap_or(matrix_config.k),
                input(&inputs, "token_budget")?.unwrap_or(matrix_config.token_budget),
            );
            let mut output = json!({
                "model": target,
                "context": limits.context,
                "k": limits.k,
                "token_budget": limits.token_budget,
            });
            if let Some(mut hits) = input::<Vec<Source>>(&inputs, "hits")? {
                matrix::sort_best_first(&mut hits);
                let kept = matrix::relevance_filter(
                    hits,
                    FilterLimits {
                        k: limits.k,
                        duplicate_overlap: matrix_config.duplicate_overlap,
                        token_budget: limits.token_budget,
                    },
                );
                output["hits"] = to_value(&kept)?;
            }
            Ok(output)
        }
        Mode::DistillationScore => {
            let export: bool = input(&inputs, "export")?.unwrap_or(false);
            let request = distill::ExportRequest {
                since_ms: input(&inputs, "since_ms")?,
                until_ms: input(&inputs, "until_ms")?,
                judge: input(&inputs, "judge")?,
                dry_run: !export,
            };
            let report = distill::export(state, &request)
                .await
                .map_err(|e| e.message)?;
            // Any run whose scoring failed makes the node's verdict `error`.
            let verdict = if report.errors > 0 {
                "error"
            } else if report.accepted > 0 {
                "accept"
            } else {
                "reject"
            };
            let mut output = to_value(&report)?;
            output["verdict"] = verdict.into();
            Ok(output)
        }
        Mode::DriftScorer => {
            let config = &state.config.drift;
            let baseline: Option<Vec<f64>> = input(&inputs, "baseline")?;
            let recent: Option<Vec<f64>> = input(&inputs, "recent")?;
            match (baseline, recent) {
                (Some(baseline), Some(recent)) => {
                    let signal: String =
                        input(&inputs, "signal")?.unwrap_or_else(|| "input".into());
                    let drift = crate::drift::compare(&signal, &baseline, &recent, config);
                    to_value(&drift)
                }
                (None, None) => {
                    let events = state.observer.query(usize::MAX, &EventFilter::default());
                    to_value(&crate::drift::report(
                        &events,
                        unix_ms(),
                        config,
                        &state.config.distillation,
                    ))
                }
                _ => Err(
                    "give both baseline and recent samples, or neither (the observer's windows)"
                        .into(),
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Workflow, WorkflowError> {
        Workflow::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn a_valid_workflow_loads_with_its_file_name() {
        let w = parse(
            r#"
            [[nodes]]
            id = "a"
            mode = "fixture.echo"
            inputs = { text = "hi" }
            [[nodes]]
            id = "b"
            mode = "fixture.upper"
            depends_on = ["a"]
            inputs = { text = "$a.text" }
            "#,
        )
        .unwrap();
        assert_eq!(w.name, "test");
        assert_eq!(w.nodes.len(), 2);
    }

    #[test]
    fn cycles_are_refused_at_load_and_named() {
        let e = parse(
            r#"
            [[nodes]]
            id = "a"
            mode = "fixture.echo"
            depends_on = ["c"]
            [[nodes]]
            id = "b"
            mode = "fixture.echo"
            depends_on = ["a"]
            [[nodes]]
            id = "c"
            mode = "fixture.echo"
            depends_on = ["b"]
            [[nodes]]
            id = "free"
            mode = "fixture.echo"
            "#,
        )
        .unwrap_err();
        assert!(e.reason.starts_with("cycle: "), "{e}");
        for id in ["a", "b", "c"] {
            assert!(e.reason.contains(id), "{e}");
        }
        assert!(!e.reason.contains("free"), "{e}");
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let node_a = "[[nodes]]\nid = 'a'\nmode = 'fixture.echo'\n";
        let node_b = "[[nodes]]\nid = 'b'\nmode = 'fixture.echo'\n";
        let cases = [
            (
                "[[nodes]]\nid = 'a'\nmode = 'fixture.nope'\n".to_owned(),
                "unknown variant",
            ),
            (format!("{node_a}depends_on = ['x']\n"), "not a node"),
            (format!("{node_a}depends_on = ['a']\n"), "itself"),
            (
                format!("{node_a}{node_b}inputs = {{ x = '$a.y' }}\n"),
                "not in its depends_on",
            ),
            (format!("{node_a}{node_a}"), "unique"),
            ("nodes = []\n".to_owned(), "[[nodes]]"),
            (format!("{node_a}timeout_secs = 0\n"), "timeout_secs"),
            (format!("{node_a}extra = 1\n"), "unknown field"),
        ];
        for (text, expected) in cases {
            let e = parse(&text).unwrap_err();
            assert!(e.reason.contains(expected), "{text}: {e}");
            assert_eq!(e.file, "test.toml");
        }
    }

    #[test]
    fn references_resolve_into_dependency_outputs() {
        let mut outputs = HashMap::new();
        outputs.insert(
            "a".to_owned(),
            json!({"hits": [{"id": "x"}, {"id": "y"}], "n": 2}),
        );
        let inputs: Map<String, Value> = serde_json::from_value(json!({
            "all": "$a",
            "second": "$a.hits.1.id",
            "missing": "$a.nope",
            "nested": {"n": "$a.n", "list": ["$a.n", "plain"]},
        }))
        .unwrap();
        let resolved = resolve(&inputs, &outputs);
        assert_eq!(resolved["all"]["n"], 2);
        assert_eq!(resolved["second"], "y");
        assert_eq!(resolved["missing"], Value::Null);
        assert_eq!(resolved["nested"], json!({"n": 2, "list": [2, "plain"]}));
    }

    fn node_run(status: NodeStatus, verdict: Option<&str>) -> NodeRun {
        NodeRun {
            id: "n".into(),
            mode: Mode::FixtureEcho,
            status,
            started_ms: None,
            finished_ms: None,
            output: verdict.map(|v| json!({ "verdict": v })),
            error: None,
        }
    }

    #[test]
    fn the_run_verdict_is_accept_only_when_everything_succeeded() {
        use NodeStatus::*;
        assert_eq!(verdict_of(&[node_run(Succeeded, None)]), Verdict::Accept);
        assert_eq!(
            verdict_of(&[node_run(Succeeded, Some("accept"))]),
            Verdict::Accept
        );
        assert_eq!(
            verdict_of(&[
                node_run(Succeeded, None),
                node_run(Succeeded, Some("reject"))
            ]),
            Verdict::Reject
        );
        assert_eq!(
            verdict_of(&[
                node_run(Succeeded, Some("error")),
                node_run(Succeeded, Some("reject"))
            ]),
            Verdict::Error
        );
        for bad in [Failed, TimedOut, Skipped] {
            assert_eq!(
                verdict_of(&[node_run(Succeeded, Some("accept")), node_run(bad, None)]),
                Verdict::Error
            );
        }
    }
}
