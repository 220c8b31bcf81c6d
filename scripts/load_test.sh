#!/usr/bin/env bash
# Loopback load test: 10,000 chats (half streamed) through a rag model and its
# plugins (matrix retrieval, playbook) against the zero-delay fake upstream.
# Passes when every answer arrives whole and the server's RSS stays within 10%
# of its post-warm-up size. Writes the report to bench/results/load-<time>.json
# (or to $LOAD_REPORT_DIR).
#   scripts/load_test.sh [--requests N] [--concurrency C]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/build_env.sh
BIN="$CARGO_TARGET_DIR/release"
if [ ! -x "$BIN/loadgen" ] || [ ! -x "$BIN/lakehouse" ]; then
  cargo build --release -p lakehouse -p lakehouse-e2e --bins
fi

source scripts/loopback.sh
start_listening "$BIN/fake-upstream" --listen 127.0.0.1:0
fake="$url"

cat > "$tmp/lakehouse.toml" <<TOML
[store]
backend = "local"
root = "$tmp/data"
[providers.ollama]
base_url = "$fake/ollama"
[plugins]
order = ["downgrade", "matrix", "playbook"]
[plugins.matrix]
min_similarity = -1.0
# Chats awaiting a rating are a bounded cache (100,000 by default); a small
# bound lets the warm-up fill it, so what is left to see is any real growth.
[plugins.playbook]
awaiting_rating = 1000
[[rag_models]]
name = "rag/load"
model = "ollama/qwen3:8b"
corpora = ["ops"]
k = 4
TOML

ingest_runbooks "$BIN/lakehouse" "$tmp/lakehouse.toml"
start_listening env RUST_LOG=warn "$BIN/lakehouse" serve --config "$tmp/lakehouse.toml" --listen 127.0.0.1:0

dir="${LOAD_REPORT_DIR:-bench/results}"
mkdir -p "$dir"
out="$dir/load-$(date -u +%Y%m%dT%H%M%SZ).json"
status=0
"$BIN/loadgen" --url "$url" --pid "$started" "$@" > "$out" || status=$?
cat "$out"
exit "$status"
