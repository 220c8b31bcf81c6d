//! The `lakehouse` command line: parses arguments and calls into the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use lakehouse::config::Config;

/// jemalloc for the binary's allocations: the request path allocates often and
/// in small pieces, where glibc's malloc was the largest userland cost.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// `lakehouse --version`; debug builds say so (scripts/bench.sh refuses them).
const VERSION: &str = if cfg!(debug_assertions) {
    concat!(env!("CARGO_PKG_VERSION"), " (debug build)")
} else {
    env!("CARGO_PKG_VERSION")
};

#[derive(Parser)]
#[command(
    name = "lakehouse",
    version = VERSION,
    about = "OpenAI-compatible LLM proxy with retrieval built in",
    long_about = "OpenAI-compatible LLM proxy with retrieval built in.\n\n\
        One process serves the OpenAI API in front of Ollama, Ollama Cloud, OpenRouter, \
        OpenCode Zen and Kimi, runs retrieval plugins around every chat, and hosts the \
        store they search. With no command it serves with lakehouse.toml.",
    after_help = "Examples:\n  \
        lakehouse                                   serve with ./lakehouse.toml on 127.0.0.1:3110\n  \
        lakehouse ingest docs.csv --corpus docs --text-column title,body\n  \
        lakehouse chat rag/docs \"How do I rotate the logs?\"\n  \
        lakehouse query \"SELECT count(*) FROM docs\"\n  \
        lakehouse scrum change.diff --label my-change\n\n\
        The console is at http://127.0.0.1:3110/admin and metrics at /metrics."
)]
struct Cli {
    /// Log format on stderr: `pretty` for people, `json` for log collectors.
    #[arg(
        long,
        global = true,
        env = "LAKEHOUSE_LOG_FORMAT",
        default_value = "pretty"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the OpenAI-compatible API, the admin API and the console (the default command).
    #[command(after_help = "Examples:\n  \
        lakehouse serve\n  \
        lakehouse serve --config /etc/lakehouse/lakehouse.toml --listen 0.0.0.0:3110\n  \
        RUST_LOG=debug lakehouse serve --log-format json")]
    Serve(ServeArgs),
    /// Stream one answer from a running server to the terminal.
    #[command(after_help = "Examples:\n  \
        lakehouse chat ollama/qwen3:8b \"Explain HNSW in two sentences\"\n  \
        lakehouse chat rag/docs \"How do I rotate the logs?\"\n  \
        git diff | lakehouse chat tier/cloud_review - --system \"Review this diff\"\n  \
        lakehouse chat kimi/kimi-k2.6 \"hello\" --url http://gateway:3110 --token $TOKEN\n\n\
        Sources, token counts and a rating command go to stderr; --quiet leaves only the answer.")]
    Chat(lakehouse::cli::ChatArgs),
    /// Ingest a CSV, JSONL or Parquet file into a corpus (created if missing).
    #[command(after_help = "Examples:\n  \
        lakehouse ingest docs.csv --corpus docs --text-column title,body\n  \
        lakehouse ingest more.jsonl --corpus docs\n  \
        lakehouse ingest dump.parquet --corpus packages --text-column description --id-column package\n\n\
        Re-ingesting the same file changes nothing; a malformed file registers nothing.")]
    Ingest(lakehouse::cli::IngestArgs),
    /// List the corpora in the store.
    #[command(after_help = "Example:\n  lakehouse corpora --config lakehouse.toml")]
    Corpora(lakehouse::cli::StoreArgs),
    /// Run read-only SQL over the corpora (each is a view by its name).
    #[command(after_help = "Examples:\n  \
        lakehouse query \"SELECT count(*) FROM docs\"\n  \
        lakehouse query \"SELECT id, title FROM docs WHERE title ILIKE '%log%' LIMIT 5\"\n\n\
        One SELECT or WITH statement; files outside the store, ATTACH, COPY and INSTALL are refused.")]
    Query(lakehouse::cli::QueryArgs),
    /// Cross-lineage review of a diff by several models; writes reports/scrum/<date>/<label>/.
    #[command(after_help = "Examples:\n  \
        git diff main > change.diff && lakehouse scrum change.diff --label my-change\n  \
        lakehouse scrum change.diff --label x --models kimi/kimi-k2.6,openrouter/qwen/qwen3-coder\n\n\
        Writes verdicts/<model>.json, disposition.md and summary.json, and prints the folder.")]
    Scrum(lakehouse::cli::ScrumArgs),
    /// Check the config, secrets, store, embedder and every provider; print fixes.
    #[command(after_help = "Examples:\n  \
        lakehouse doctor\n  \
        lakehouse doctor --config /etc/lakehouse/lakehouse.toml\n\n\
        Exits non-zero when any check fails, so it fits a deploy pipeline or a systemd ExecStartPre.")]
    Doctor(lakehouse::cli::StoreArgs),
    /// Serve the store, memory and chat as MCP tools on stdin/stdout.
    #[command(after_help = "Examples:\n  \
        lakehouse mcp --config lakehouse.toml\n\n\
        In an MCP client config: {\"command\": \"lakehouse\", \"args\": [\"mcp\", \"--config\", \"/path/lakehouse.toml\"]}\n\
        A running server offers the same tools over streamable HTTP at /mcp (admin token when auth is on).")]
    Mcp(lakehouse::cli::StoreArgs),
    /// Pathway memory and playbook maintenance.
    #[command(subcommand)]
    Memory(lakehouse::cli::MemoryCommand),
    /// Workflows: DAGs of retrieval, distillation and drift nodes.
    #[command(subcommand)]
    Workflow(lakehouse::cli::WorkflowCommand),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Config file.
    #[arg(long, default_value = "lakehouse.toml")]
    config: PathBuf,
    /// Listen address; overrides `server.listen` (use port 0 for any free port).
    #[arg(long)]
    listen: Option<SocketAddr>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        None => serve(ServeArgs {
            config: PathBuf::from("lakehouse.toml"),
            listen: None,
        }),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Chat(args)) => lakehouse::cli::run(lakehouse::cli::chat(args)),
        Some(Command::Ingest(args)) => lakehouse::cli::run(lakehouse::cli::ingest(args)),
        Some(Command::Corpora(args)) => lakehouse::cli::run(lakehouse::cli::corpora(args)),
        Some(Command::Query(args)) => lakehouse::cli::run(lakehouse::cli::query(args)),
        Some(Command::Scrum(args)) => lakehouse::cli::run(lakehouse::cli::scrum(args)),
        Some(Command::Doctor(args)) => lakehouse::cli::run(lakehouse::cli::doctor(args)),
        Some(Command::Mcp(args)) => lakehouse::cli::run(lakehouse::cli::mcp(args)),
        Some(Command::Memory(command)) => lakehouse::cli::run(lakehouse::cli::memory(command)),
        Some(Command::Workflow(command)) => lakehouse::cli::run(lakehouse::cli::workflow(command)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr (stdout carries command output); `RUST_LOG` filters them.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().with_current_span(true).init(),
    }
}

fn serve(args: ServeArgs) -> Result<(), String> {
    let config = Config::load(&args.config).map_err(|e| e.to_string())?;
    // One worker is one thread running everything, as an nginx worker does:
    // the current-thread scheduler skips work stealing and cross-thread
    // wake-ups, which a single multi-thread worker still pays on every task.
    // It polls through short idle gaps instead of sleeping (see busy_poll).
    let busy_poll =
        (config.server.worker_threads == 1 && config.server.busy_poll_us > 0).then(|| {
            lakehouse::busy_poll::BusyPoll::new(Duration::from_micros(config.server.busy_poll_us))
        });
    let mut runtime = match config.server.worker_threads {
        1 => {
            let mut builder = tokio::runtime::Builder::new_current_thread();
            if let Some(poll) = &busy_poll {
                builder.on_thread_unpark(poll.unpark_hook());
            }
            builder
        }
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if n > 0 {
                builder.worker_threads(n);
            }
            builder
        }
    };
    let runtime = runtime
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        if let Some(poll) = busy_poll {
            tokio::spawn(poll.run());
        }
        run_server(config, args.listen).await
    })
}

async fn run_server(config: Config, listen: Option<SocketAddr>) -> Result<(), String> {
    let listen = listen.unwrap_or(config.server.listen);
    let options = config.server.serve_options();
    let state = lakehouse::state_from_config(config)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(refusal) = state.auth.exposure_error(listen) {
        return Err(refusal);
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| {
            format!(
                "cannot listen on {listen}: {e}\n  is another server using that port? Pick another with --listen or [server] listen"
            )
        })?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    for status in state.registry.statuses() {
        match &status.reason {
            None => {
                tracing::info!(provider = %status.name, base_url = %status.base_url, "provider registered")
            }
            Some(reason) => {
                tracing::info!(provider = %status.name, "provider not registered: {reason}")
            }
        }
    }
    // One machine-readable line on stdout, so scripts and tests can find a port-0 server.
    println!("lakehouse listening on http://{local}");
    let served = lakehouse::serve(
        listener,
        lakehouse::app(state.clone()),
        lakehouse::server::shutdown_signal(),
        options,
    )
    .await;
    // The last witnessed chats reach the store (or the spill folder) before
    // the process ends, within the grace a store that hangs is given.
    let grace = state.config.server.shutdown_grace();
    if tokio::time::timeout(grace, state.observer.close())
        .await
        .is_err()
    {
        tracing::warn!(
            "observer: the store did not take the last events within {grace:?}; they are left out"
        );
    }
    served.map_err(|e| format!("server failed: {e}"))
}
