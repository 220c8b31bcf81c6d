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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        None => runtime.block_on(serve(ServeArgs {
            config: PathBuf::from("lakehouse.toml"),
            listen: None,
        })),
        Some(Command::Serve(args)) => runtime.block_on(serve(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let config = Config::load(&args.config).map_err(|e| e.to_string())?;
    let listen = args.listen.unwrap_or(config.server.listen);
    let grace = config.server.shutdown_grace();
    let state = lakehouse::state_from_config(config).map_err(|e| e.to_string())?;
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
