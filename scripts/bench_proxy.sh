#!/usr/bin/env bash
# Proxy overhead benchmark on loopback: the same zero-delay fake upstream hit
# directly, through Lakehouse and through nginx proxy_pass (the reference cost
# of one proxy hop), non-stream and stream, at 1 and 16 connections.
# Prints added latency p50/p99 and throughput ratios; writes JSON to bench/results/.
#   DURATION=10 WORKERS=1 scripts/bench_proxy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lakehouse/target}"
if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
  apt-get update -qq && apt-get install -y -qq nginx-light wrk
fi
cargo build --release -p lakehouse -p lakehouse-e2e --bins
exec python3 scripts/bench_proxy.py --bin-dir "$CARGO_TARGET_DIR/release" "$@"
