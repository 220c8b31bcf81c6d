//! Commands of the `lakehouse` CLI besides `serve`. They open the store named
//! by the config directly (no server needed); a running server sees the
//! result on its next read of the catalog.

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
    match store.corpus(&args.corpus).await {
        Ok(_) => {}
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
        }
        Err(e) => return Err(e.to_string()),
    }
    let bars = Bars {
        current: Mutex::new(None),
    };
    let report = store
        .ingest_file(&args.corpus, &args.file, format, &bars)
        .await
        .map_err(|e| e.to_string())?;
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
