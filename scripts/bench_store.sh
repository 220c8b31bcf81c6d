#!/usr/bin/env bash
# Store benchmarks (loopback only, bounded): HNSW recall@10 vs exact search and
# search latency at ROWS×384; CSV ingest vs DuckDB's own COPY ... TO parquet on
# the same INGEST_ROWS-row file; the retrieval pre-hook over 3 corpora x ROWS;
# idle RSS of `lakehouse serve` with no corpora.
# Writes JSON to bench/results/.
#   ROWS=100000 INGEST_ROWS=1000000 scripts/bench_store.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/build_env.sh
ROWS="${ROWS:-100000}"
INGEST_ROWS="${INGEST_ROWS:-1000000}"
cargo build --release -p lakehouse -p lakehouse-retrieval -p lakehouse-plugins --bins --examples

echo "== HNSW ($ROWS x 384)"
hnsw=$("$CARGO_TARGET_DIR/release/examples/bench_hnsw" "$ROWS" 1000)
echo "$hnsw"

echo "== ingest ($INGEST_ROWS rows)"
ingest=$("$CARGO_TARGET_DIR/release/examples/bench_ingest" "$INGEST_ROWS")
echo "$ingest"

echo "== retrieval pre-hook (3 corpora x $ROWS x 384, k=10)"
prehook=$("$CARGO_TARGET_DIR/release/examples/bench_prehook" "$ROWS" 2000)
echo "$prehook"

echo "== idle RSS"
tmp=$(mktemp -d)
printf '[store]\nbackend = "local"\nroot = "data"\n' > "$tmp/lakehouse.toml"
"$CARGO_TARGET_DIR/release/lakehouse" serve --config "$tmp/lakehouse.toml" --listen 127.0.0.1:0 > "$tmp/out" 2>/dev/null &
pid=$!
for _ in $(seq 1 100); do grep -q listening "$tmp/out" && break; sleep 0.1; done
url=$(sed -n 's/.*listening on //p' "$tmp/out")
curl -fsS "$url/healthz" >/dev/null
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
kill "$pid"; wait "$pid" 2>/dev/null || true
rm -rf "$tmp"
echo "{\"idle_rss_mb\": $(awk "BEGIN {printf \"%.1f\", $rss_kb/1024}")}"

mkdir -p bench/results
out="bench/results/store-$(date -u +%Y%m%dT%H%M%SZ).json"
printf '{"hnsw": %s, "ingest": %s, "prehook": %s, "idle_rss_kb": %s}\n' "$hnsw" "$ingest" "$prehook" "$rss_kb" > "$out"
echo "wrote $out"
