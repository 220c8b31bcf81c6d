//! `fake-upstream`: serves every fake upstream flavour on one address.
//!
//! Prints exactly one line, `listening on http://ADDR`, to stdout once bound,
//! then serves until killed. Logs go to stderr (`RUST_LOG`).

use std::io::Write;
use std::net::SocketAddr;

use clap::Parser;
use lakehouse_e2e::{FakeState, serve};
use tokio::net::TcpListener;

/// jemalloc, as in `lakehouse`: the fake builds every answer from small JSON
/// values on two worker threads, and glibc's malloc made them queue on its
/// arena locks (a streamed answer cost 45-70 µs of CPU; the benchmark's
/// upstream must not be its bottleneck).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Fake upstream LLM servers with fault injection.
#[derive(Debug, Parser)]
#[command(name = "fake-upstream", version)]
struct Args {
    /// Address to bind; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on http://{addr}")?;
        stdout.flush()?;
    }
    tracing::info!(%addr, "fake upstream listening");
    serve(listener, FakeState::new()).await
}
