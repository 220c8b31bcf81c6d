//! The `lakehouse` command line: parses arguments and calls into the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lakehouse::config::Config;

#[derive(Parser)]
#[command(
    name = "lakehouse",
    version,
    about = "OpenAI-compatible LLM proxy with retrieval built in"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the OpenAI-compatible API (the default command).
    Serve(ServeArgs),
    /// Ingest a CSV, JSONL or Parquet file into a corpus (created if missing).
    Ingest(lakehouse::cli::IngestArgs),
    /// List the corpora in the store.
    Corpora(lakehouse::cli::StoreArgs),
    /// Run read-only SQL over the corpora (each is a view by its name).
    Query(lakehouse::cli::QueryArgs),
    /// Cross-lineage review of a diff by several models; writes reports/scrum/<date>/<label>/.
    Scrum(lakehouse::cli::ScrumArgs),
    /// Pathway memory and playbook maintenance.
    #[command(subcommand)]
    Memory(lakehouse::cli::MemoryCommand),
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        None => serve(ServeArgs {
            config: PathBuf::from("lakehouse.toml"),
            listen: None,
        }),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Ingest(args)) => lakehouse::cli::run(lakehouse::cli::ingest(args)),
        Some(Command::Corpora(args)) => lakehouse::cli::run(lakehouse::cli::corpora(args)),
        Some(Command::Query(args)) => lakehouse::cli::run(lakehouse::cli::query(args)),
        Some(Command::Scrum(args)) => lakehouse::cli::run(lakehouse::cli::scrum(args)),
        Some(Command::Memory(command)) => lakehouse::cli::run(lakehouse::cli::memory(command)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> Result<(), String> {
    let config = Config::load(&args.config).map_err(|e| e.to_string())?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.server.worker_threads > 0 {
        runtime.worker_threads(config.server.worker_threads);
    }
    let runtime = runtime
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(run_server(config, args.listen))
}

async fn run_server(config: Config, listen: Option<SocketAddr>) -> Result<(), String> {
    let listen = listen.unwrap_or(config.server.listen);
    let grace = config.server.shutdown_grace();
    let state = lakehouse::state_from_config(config)
        .await
        .map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
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
    lakehouse::serve(
        listener,
        lakehouse::app(state),
        lakehouse::server::shutdown_signal(),
        grace,
    )
    .await
    .map_err(|e| format!("server failed: {e}"))
}
