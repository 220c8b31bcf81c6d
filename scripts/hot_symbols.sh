#!/usr/bin/env bash
# Rewrites proxy/hot-symbols.txt (the request path's functions, which the
# linker lays out together; see proxy/build.rs) from a callgrind profile of
# the benchmark's load, then relinks. Run it after changing the request path.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/build_env.sh
if ! command -v valgrind >/dev/null || ! command -v wrk >/dev/null; then
  apt-get update -qq && apt-get install -y -qq valgrind wrk
fi
cargo build --release -p lakehouse --bin lakehouse -p lakehouse-e2e --bin fake-upstream
python3 scripts/hot_symbols.py --bin-dir "$CARGO_TARGET_DIR/release" "$@"
cargo build --release -p lakehouse --bin lakehouse
