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

tmp=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

# Each server prints one "listening on http://ADDR" line on stdout; read it as it comes.
exec 3< <(exec "$BIN/fake-upstream" --listen 127.0.0.1:0)
pids+=($!)
read -r line <&3
fake="${line##*listening on }"

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

for i in $(seq 1 300); do
  printf '{"id":"doc-%d","text":"Runbook %d: how the team handles case %d of rotating logs, backups, deploys, failover, certificates, queues and alerts."}\n' "$i" "$i" "$i"
done > "$tmp/docs.jsonl"
"$BIN/lakehouse" ingest "$tmp/docs.jsonl" --corpus ops --text-column text --config "$tmp/lakehouse.toml" >/dev/null 2>&1

exec 4< <(RUST_LOG=warn exec "$BIN/lakehouse" serve --config "$tmp/lakehouse.toml" --listen 127.0.0.1:0)
pids+=($!)
read -r line <&4
url="${line##*listening on }"

dir="${LOAD_REPORT_DIR:-bench/results}"
mkdir -p "$dir"
out="$dir/load-$(date -u +%Y%m%dT%H%M%SZ).json"
status=0
"$BIN/loadgen" --url "$url" --pid "${pids[1]}" "$@" > "$out" || status=$?
cat "$out"
exit "$status"
