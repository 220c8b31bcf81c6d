#!/usr/bin/env bash
# Proxy overhead only: the zero-delay fake upstream hit directly, through
# Lakehouse, through nginx proxy_pass and through the proxy-floor reference,
# non-stream and stream, at 1 and 16 connections (the proxy section of
# scripts/bench.sh, without LiteLLM).
#   DURATION=10 WORKERS=1 scripts/bench_proxy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
LEVELS="${LEVELS:-1,16}" exec scripts/bench.sh --sections proxy --targets direct,nginx,lakehouse,floor,floor_json,floor_typed "$@"
