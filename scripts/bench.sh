#!/usr/bin/env bash
# Side-by-side benchmarks in one run on this machine (loopback only, bounded):
# proxy overhead (direct, Lakehouse, nginx proxy_pass, LiteLLM proxy) at several
# connection counts, stream and not; time to first token and chunk spacing;
# retrieval pre-hook, HNSW recall, ingest vs DuckDB, RSS. Writes
# bench/results/<stamp>.json, .md and PNG plots. About 20 minutes on 2 cores.
# Proxy figures are medians over ROUNDS (default 3) interleaved rounds.
#   scripts/bench.sh
#   DURATION=10 ROUNDS=5 LEVELS=1,4,16,64 scripts/bench.sh --sections proxy,streaming
#   HALT_POLL_NS=200000 scripts/bench.sh --sections proxy   # VM guest polls before halting (root)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/build_env.sh
VENV="${LAKEHOUSE_BENCH_VENV:-$HOME/.cache/lakehouse/bench-venv}"

if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
  apt-get update -qq && apt-get install -y -qq nginx-light wrk
fi
# litellm 1.80.0: newer releases move the proxy into a `litellm-proxy` package not on PyPI.
if [ ! -x "$VENV/bin/litellm" ] || ! "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check 'litellm[proxy]==1.80.0' 'matplotlib==3.11.2'
fi

# The same build as scripts/test.sh (one feature set, one target dir), so neither rebuilds for the other.
cargo build --release --workspace --all-targets
# Figures from a debug build mean nothing: refuse them.
if "$CARGO_TARGET_DIR/release/lakehouse" --version | grep -q "debug build"; then
  echo "refusing to benchmark a debug build" >&2
  exit 1
fi
exec "$VENV/bin/python" scripts/bench.py --bin-dir "$CARGO_TARGET_DIR/release" --venv "$VENV" "$@"
