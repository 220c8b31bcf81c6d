//! Commands of the `lakehouse` CLI besides `serve`. The store commands open
//! the store named by the config directly (no server needed; a running server
//! sees the result on its next read of the catalog); `chat` talks to a
//! running server over HTTP, like any client.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use lakehouse_retrieval::catalog::CorpusSettings;
use lakehouse_retrieval::duck::Format;
use lakehouse_retrieval::embed::LOCAL;
use lakehouse_retrieval::store::Progress;
use lakehouse_retrieval::{Store, StoreError};

use crate::config::Config;

#[derive(clap::Args)]
pub struct StoreArgs {
    /// Config file (its `[store]` section says where the store is).
    #[arg(long, default_value = "lakehouse.toml")]
    pub config: PathBuf,
}

#[derive(clap::Args)]
pub struct IngestArgs {
    /// CSV, JSONL or Parquet file.
    pub file: PathBuf,
    /// Corpus to ingest into; created when missing.
    #[arg(long)]
    pub corpus: String,
    /// Columns whose text is embedded (repeat or comma-separate); needed to create a corpus.
    #[arg(long = "text-column", value_delimiter = ',')]
    pub text_columns: Vec<String>,
    /// Column holding each row's id.
    #[arg(long, default_value = "id")]
    pub id_column: String,
    /// Embedder for a new corpus.
    #[arg(long, default_value = LOCAL)]
    pub embedder: String,
    /// File format; guessed from the extension when left out.
    #[arg(long, value_parser = parse_format)]
    pub format: Option<Format>,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(clap::Args)]
pub struct QueryArgs {
    pub sql: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

fn parse_format(s: &str) -> Result<Format, String> {
    match s {
        "csv" => Ok(Format::Csv),
        "jsonl" | "ndjson" => Ok(Format::Jsonl),
        "parquet" => Ok(Format::Parquet),
        other => Err(format!("{other:?} is not csv, jsonl or parquet")),
    }
}

/// Runs a command future on a fresh runtime.
pub fn run(command: impl Future<Output = Result<(), String>>) -> Result<(), String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?
        .block_on(command)
}

async fn open(args: &StoreArgs) -> Result<Store, String> {
    let config = Config::load(&args.config).map_err(|e| e.to_string())?;
    crate::registry::open_store(&config)
        .await
        .map_err(|e| e.to_string())
}

/// A progress bar per ingest stage.
struct Bars {
    current: Mutex<Option<ProgressBar>>,
}

impl Progress for Bars {
    fn stage(&self, name: &str, total: u64) {
        let style = ProgressStyle::with_template("{prefix:>6} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bar = ProgressBar::new(total)
            .with_style(style)
            .with_prefix(name.to_owned());
        if let Ok(mut current) = self.current.lock()
            && let Some(previous) = current.replace(bar)
        {
            previous.finish();
        }
    }

    fn advance(&self, done: u64) {
        if let Ok(current) = self.current.lock()
            && let Some(bar) = current.as_ref()
        {
            bar.inc(done);
        }
    }
}

pub async fn ingest(args: IngestArgs) -> Result<(), String> {
    let store = open(&args.store).await?;
    let format = match args.format {
        Some(f) => f,
        None => Format::from_name(&args.file.to_string_lossy()).ok_or_else(|| {
            format!(
                "cannot tell the format of {}; pass --format",
                args.file.display()
            )
        })?,
    };
    let created = match store.corpus(&args.corpus).await {
        Ok(existing) => {
            let settings = &existing.settings;
            if !args.text_columns.is_empty() && args.text_columns != settings.text_columns {
                return Err(format!(
                    "corpus {:?} exists with text columns {:?}, not {:?}: leave out \
                     --text-column, or delete the corpus to ingest it anew",
                    args.corpus, settings.text_columns, args.text_columns
                ));
            }
            false
        }
        Err(StoreError::NotFound { .. }) => {
            if args.text_columns.is_empty() {
                return Err(format!(
                    "corpus {:?} does not exist; pass --text-column to create it",
                    args.corpus
                ));
            }
            let settings = CorpusSettings {
                text_columns: args.text_columns.clone(),
                id_column: args.id_column.clone(),
                embedder: args.embedder.clone(),
            };
            store
                .create_corpus(&args.corpus, settings)
                .await
                .map_err(|e| e.to_string())?;
            true
        }
        Err(e) => return Err(e.to_string()),
    };
    let bars = Bars {
        current: Mutex::new(None),
    };
    let ingested = store
        .ingest_file(&args.corpus, &args.file, format, &bars)
        .await;
    let report = match ingested {
        Ok(report) => report,
        Err(e) => {
            // A corpus this run created holds nothing yet: it goes, so the
            // next run can create it with other flags.
            if created && let Err(left) = store.delete_corpus(&args.corpus).await {
                return Err(format!(
                    "{e}\n(the empty corpus {:?} this run created could not be removed: {left})",
                    args.corpus
                ));
            }
            return Err(e.to_string());
        }
    };
    if let Ok(mut current) = bars.current.lock()
        && let Some(bar) = current.take()
    {
        bar.finish();
    }
    if report.added {
        println!(
            "ingested {} rows into {} (version {}, {})",
            report.rows, report.corpus, report.version, report.file
        );
    } else {
        println!(
            "{} already holds this content; nothing changed",
            report.corpus
        );
    }
    Ok(())
}

pub async fn corpora(args: StoreArgs) -> Result<(), String> {
    let store = open(&args).await?;
    let corpora = store.corpora().await.map_err(|e| e.to_string())?;
    if corpora.is_empty() {
        println!("no corpora");
        return Ok(());
    }
    println!(
        "{:<24}{:>10}{:>10}{:>8}  embedder",
        "name", "rows", "vectors", "files"
    );
    for m in corpora {
        println!(
            "{:<24}{:>10}{:>10}{:>8}  {}",
            m.name,
            m.rows(),
            m.vectors.as_ref().map_or(0, |v| v.count),
            m.files.len(),
            m.settings.embedder
        );
    }
    Ok(())
}

pub async fn query(args: QueryArgs) -> Result<(), String> {
    let store = open(&args.store).await?;
    let result = store.query(&args.sql).await.map_err(|e| e.to_string())?;
    let text = serde_json::to_string_pretty(&result).map_err(|e| e.to_string())?;
    println!("{text}");
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum MemoryCommand {
    /// Fold the pathway and playbook logs into one object each (drops unreadable lines).
    Compact(StoreArgs),
}

pub async fn memory(command: MemoryCommand) -> Result<(), String> {
    match command {
        MemoryCommand::Compact(args) => {
            let config = Config::load(&args.config).map_err(|e| e.to_string())?;
            let objects = lakehouse_retrieval::objects::Objects::open(&config.store)
                .map_err(|e| e.to_string())?;
            let embedders = crate::registry::build_embedders(&config).map_err(|e| e.to_string())?;
            let pathway = lakehouse_memory::Pathway::open(
                objects.clone(),
                embedders,
                &config.plugins.pathway.embedder,
            )
            .await
            .map_err(|e| e.to_string())?;
            let playbook = lakehouse_memory::Playbook::open(objects)
                .await
                .map_err(|e| e.to_string())?;
            for (name, report) in [
                ("pathway", pathway.compact().await),
                ("playbook", playbook.compact().await),
            ] {
                let r = report.map_err(|e| format!("{name}: {e}"))?;
                println!(
                    "{name}: {} lines in {} segments -> {} records ({} unreadable lines dropped)",
                    r.lines_before, r.segments_removed, r.records, r.skipped_lines
                );
            }
            Ok(())
        }
    }
}

#[derive(clap::Args)]
pub struct ScrumArgs {
    /// Unified diff to review (`git diff` output).
    pub diff: PathBuf,
    /// Name of this review; the report goes to `<out>/<date>/<label>/`.
    #[arg(long)]
    pub label: String,
    /// Reviewer models (ids, `tier/<name>` or rag models); default: the
    /// `[models]` tiers cloud_review, frontier_review and cloud_judge.
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<String>,
    /// Context tokens of the smallest reviewer; longer diffs are split.
    #[arg(long, default_value_t = 32_000)]
    pub context_tokens: usize,
    /// Per-model time limit for each part, in seconds (default: `[fanout].timeout_secs`).
    #[arg(long)]
    pub timeout_secs: Option<u64>,
    /// Reports root.
    #[arg(long, default_value = "reports/scrum")]
    pub out: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `lakehouse scrum`: a cross-lineage review of a diff, in process (no server needed).
pub async fn scrum(args: ScrumArgs) -> Result<(), String> {
    let diff = std::fs::read_to_string(&args.diff)
        .map_err(|e| format!("cannot read the diff {}: {e}", args.diff.display()))?;
    let config = Config::load(&args.store.config).map_err(|e| e.to_string())?;
    let timeout = Duration::from_secs(args.timeout_secs.unwrap_or(config.fanout.timeout_secs));
    let state = crate::state_from_config(config)
        .await
        .map_err(|e| e.to_string())?;
    let models = if args.models.is_empty() {
        crate::scrum::default_models(&state)
    } else {
        args.models
    };
    if models.is_empty() {
        return Err(
            "no reviewers: pass --models or set [models] cloud_review, frontier_review or cloud_judge"
                .into(),
        );
    }
    let options = crate::scrum::ReviewOptions {
        label: args.label,
        models,
        context_tokens: args.context_tokens,
        timeout,
    };
    let review = crate::scrum::review(&state, &diff, &options)
        .await
        .map_err(|e| e.message)?;
    let dir = crate::scrum::report_dir(&args.out, &review);
    crate::scrum::write_report(&dir, &review)
        .map_err(|e| format!("cannot write the report to {}: {e}", dir.display()))?;
    for verdict in &review.verdicts {
        eprintln!(
            "{}: {:?}, {} findings",
            verdict.model,
            verdict.status,
            verdict.findings.len()
        );
    }
    eprintln!(
        "{} finding groups, composite score {}",
        review.groups.len(),
        review.score
    );
    println!("{}", dir.display());
    Ok(())
}

#[derive(clap::Args)]
pub struct ChatArgs {
    /// Model id (`ollama/qwen3:8b`), tier (`tier/local_fast`) or rag model (`rag/docs`).
    pub model: String,
    /// The prompt; `-` reads it from standard input.
    pub prompt: String,
    /// A system message sent before the prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// Corpora to retrieve context from (comma-separated), besides a rag model's own.
    #[arg(long, value_delimiter = ',')]
    pub corpora: Vec<String>,
    /// The server to talk to.
    #[arg(long, env = "LAKEHOUSE_URL", default_value = "http://127.0.0.1:3110")]
    pub url: String,
    /// Bearer token, for a server with auth on.
    #[arg(long, env = "LAKEHOUSE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print only the answer: no sources, usage or rating hint on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `lakehouse chat`: streams one answer from a running server to the terminal.
pub async fn chat(args: ChatArgs) -> Result<(), String> {
    use std::io::Write as _;

    use futures::StreamExt as _;

    let prompt = if args.prompt == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| format!("cannot read the prompt from stdin: {e}"))?
    } else {
        args.prompt.clone()
    };
    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(serde_json::json!({"role": "system", "content": system}));
    }
    messages.push(serde_json::json!({"role": "user", "content": prompt}));
    let mut body = serde_json::json!({
        "model": args.model,
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if !args.corpora.is_empty() {
        body["lakehouse"] = serde_json::json!({"corpora": args.corpora});
    }
    let base = args.url.trim_end_matches('/');
    let mut request = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .json(&body);
    if let Some(token) = &args.token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|e| {
        format!(
            "cannot reach the server at {base}: {e}\n  is `lakehouse serve` running? Start it, or point --url (or LAKEHOUSE_URL) at it"
        )
    })?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return Err(explain_api_error(status.as_u16(), &text, base));
    }
    let bytes = response
        .bytes_stream()
        .map(|r| r.map_err(|e| e.to_string()))
        .boxed();
    let mut events = std::pin::pin!(lakehouse_providers::sse::decode(bytes, |e| e.to_string()));
    let mut stdout = std::io::stdout().lock();
    let mut first: Option<serde_json::Value> = None;
    let mut usage: Option<serde_json::Value> = None;
    let mut ended_with_newline = true;
    while let Some(event) = events.next().await {
        let event = event.map_err(|e| format!("the stream broke: {e}"))?;
        if event.data == "[DONE]" {
            break;
        }
        let chunk: serde_json::Value = serde_json::from_str(&event.data)
            .map_err(|e| format!("the server sent an unreadable event ({e}): {}", event.data))?;
        if let Some(error) = chunk.get("error") {
            let message = error["message"].as_str().unwrap_or("unknown error");
            return Err(format!("the answer failed midway: {message}"));
        }
        if first.is_none() {
            first = Some(chunk.clone());
        }
        for choice in chunk["choices"].as_array().into_iter().flatten() {
            if let Some(text) = choice["delta"]["content"].as_str() {
                let _ = stdout.write_all(text.as_bytes());
                let _ = stdout.flush();
                ended_with_newline = text.ends_with('\n');
            }
        }
        if chunk.get("usage").is_some_and(|u| !u.is_null()) {
            usage = chunk.get("usage").cloned();
        }
    }
    if !ended_with_newline {
        let _ = writeln!(stdout);
    }
    if args.quiet {
        return Ok(());
    }
    let first = first.unwrap_or_default();
    let sources = first["lakehouse"]["sources"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for source in &sources {
        eprintln!(
            "[{}] {}/{} score {:.3}",
            source["n"],
            source["corpus"].as_str().unwrap_or_default(),
            source["id"].as_str().unwrap_or_default(),
            source["score"].as_f64().unwrap_or_default()
        );
    }
    if let Some(usage) = usage {
        eprintln!(
            "{} tokens in, {} out",
            usage["prompt_tokens"], usage["completion_tokens"]
        );
    }
    if !sources.is_empty() {
        let id = first["id"].as_str().unwrap_or_default();
        eprintln!(
            "rate it: curl -s {base}/v1/feedback -H 'content-type: application/json' -d '{{\"id\":\"{id}\",\"rating\":1}}'"
        );
    }
    Ok(())
}

/// An OpenAI error body as one line, with what to do about it.
fn explain_api_error(status: u16, body: &str, base: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let message = value["error"]["message"]
        .as_str()
        .map_or_else(|| body.trim().to_owned(), str::to_owned);
    let hint = match status {
        401 | 403 => {
            "pass --token (or set LAKEHOUSE_TOKEN) with a token the server accepts".to_owned()
        }
        404 => format!("list the models the server knows with: curl -s {base}/v1/models"),
        429 => "the upstream or the server is rate limiting: wait and try again".to_owned(),
        502..=504 => format!(
            "the upstream failed: check its key and reachability with: curl -s {base}/v1/chat/providers"
        ),
        _ => String::new(),
    };
    if hint.is_empty() {
        format!("the server refused the chat ({status}): {message}")
    } else {
        format!("the server refused the chat ({status}): {message}\n  {hint}")
    }
}

/// `lakehouse doctor`: prints the checks as a table; fails when any check failed.
pub async fn doctor(args: StoreArgs) -> Result<(), String> {
    let checks = crate::doctor::run(&args.config).await;
    print!("{}", crate::doctor::render(&checks));
    if crate::doctor::failed(&checks) {
        return Err("some checks failed; see the fixes above".into());
    }
    Ok(())
}

/// `lakehouse mcp`: the MCP tools over stdio, on a state of its own (no server needed).
pub async fn mcp(args: StoreArgs) -> Result<(), String> {
    let config = Config::load(&args.config).map_err(|e| e.to_string())?;
    let state = crate::state_from_config(config)
        .await
        .map_err(|e| e.to_string())?;
    crate::mcp::serve_stdio(state.clone()).await?;
    state.observer.flush().await;
    Ok(())
}

/// `lakehouse workflow ...`.
#[derive(clap::Subcommand)]
pub enum WorkflowCommand {
    /// Run a workflow file in process and print the run as JSON.
    #[command(after_help = "Examples:\n  \
        lakehouse workflow run workflows/nightly.toml\n  \
        lakehouse workflow run my.toml --config /etc/lakehouse/lakehouse.toml\n\n\
        The run is kept under workflows/runs/ in the store; the exit status is non-zero unless its verdict is accept.")]
    Run(WorkflowRunArgs),
}

#[derive(clap::Args)]
pub struct WorkflowRunArgs {
    /// The workflow file (TOML).
    pub file: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `lakehouse workflow run`: runs a workflow against the store, prints the run.
pub async fn workflow(command: WorkflowCommand) -> Result<(), String> {
    let WorkflowCommand::Run(args) = command;
    let workflow = crate::workflow::Workflow::load(&args.file).map_err(|e| e.to_string())?;
    let config = Config::load(&args.store.config).map_err(|e| e.to_string())?;
    let state = crate::state_from_config(config)
        .await
        .map_err(|e| e.to_string())?;
    let run = crate::workflow::run(&state, &workflow).await;
    state.observer.flush().await;
    let text =
        serde_json::to_string_pretty(&run).map_err(|e| format!("cannot print the run: {e}"))?;
    println!("{text}");
    match run.verdict {
        crate::distill::Verdict::Accept => Ok(()),
        other => Err(format!("run {} ended with verdict {other:?}", run.id)),
    }
}
