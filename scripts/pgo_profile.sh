#!/usr/bin/env bash
# Rewrites pgo/lakehouse.profdata, the profile the release build is optimised
# with (pgo/README.md). It builds an instrumented `lakehouse` in its own target
# dir, runs a load like a deployment's through it against the fake upstream,
# and merges what the instrumentation counted:
# - chats to every provider protocol (Ollama NDJSON, OpenAI-compatible SSE with
#   OpenRouter's and Kimi's ways, Anthropic messages, Responses), half of them
#   streamed, and through a rag model with its plugins (retrieval, downgrade,
#   playbook);
# - an ingest, embeddings and the model list;
# - on one worker thread (the benchmark's setting) and on one per core (the
#   default), since the two run different schedulers.
# Run it after large changes to the request path. Loopback only; about 40
# minutes the first time (the instrumented build), a few minutes after.
# Needs llvm-profdata: rustup's llvm-tools, or Debian's llvm-N with 19 <= N <=
# the LLVM inside rustc (llvm-19 is installed when none fits).
#   scripts/pgo_profile.sh [--requests N]
set -euo pipefail
cd "$(dirname "$0")/.."
# The instrumented build keeps the caller's own flags, as the optimised one does.
caller_flags="${RUSTFLAGS:-}"
source scripts/build_env.sh
PGO_TARGET_DIR="$(realpath -m "${PGO_TARGET_DIR:-$HOME/.cache/lakehouse/pgo-target}")"
REQUESTS=2000
case "${1:-}" in
  "") ;;
  --requests) REQUESTS="${2:?--requests needs a number}" ;;
  *) echo "usage: scripts/pgo_profile.sh [--requests N]" >&2; exit 2 ;;
esac

# A tool older than 19 cannot read the raw profiles rustc writes; one newer than
# rustc's LLVM may write an indexed profile rustc cannot read.
rustc_info=$(rustc -vV)
rustc_llvm=$(echo "$rustc_info" | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
find_profdata() {
  local sysroot_tool
  sysroot_tool="$(rustc --print sysroot)/lib/rustlib/$(echo "$rustc_info" | sed -n 's/^host: //p')/bin/llvm-profdata"
  if [ -x "$sysroot_tool" ]; then echo "$sysroot_tool"; return; fi
  local tool major
  for tool in $(printf '%s\n' /usr/lib/llvm-*/bin/llvm-profdata | sort -V -r); do
    major=$(echo "$tool" | sed -n 's|.*/llvm-\([0-9]*\)/.*|\1|p')
    if [ -x "$tool" ] && [ -n "$major" ] && [ "$major" -ge 19 ] && [ "$major" -le "$rustc_llvm" ]; then
      echo "$tool"
      return
    fi
  done
}
profdata=$(find_profdata)
if [ -z "$profdata" ]; then
  apt-get update -qq && apt-get install -y -qq llvm-19 >/dev/null
  profdata=$(find_profdata)
fi
[ -n "$profdata" ] || { echo "no llvm-profdata between LLVM 19 and $rustc_llvm" >&2; exit 1; }

# The load's tools come from the normal build; the server from the instrumented one.
cargo build --release -p lakehouse-e2e --bin fake-upstream --bin loadgen
BIN="$CARGO_TARGET_DIR/release"
CARGO_TARGET_DIR="$PGO_TARGET_DIR" RUSTFLAGS="${caller_flags:+$caller_flags }-Cprofile-generate=$PGO_TARGET_DIR/profraw" \
  cargo build --release -p lakehouse --bin lakehouse
LAKEHOUSE="$PGO_TARGET_DIR/release/lakehouse"

source scripts/loopback.sh
# Every run of the instrumented binary writes its counts here when it exits.
export LLVM_PROFILE_FILE="$tmp/raw/lakehouse-%p.profraw"

start_listening env LLVM_PROFILE_FILE=/dev/null "$BIN/fake-upstream" --listen 127.0.0.1:0
fake="$url"

mkdir -p "$tmp/secrets"
for pair in ollama_cloud:OLLAMA_CLOUD_KEY openrouter:OPENROUTER_API_KEY opencode:OPENCODE_API_KEY \
  kimi:KIMI_API_KEY bench:BENCH_API_KEY; do
  echo "${pair#*:}=sk-pgo" > "$tmp/secrets/${pair%%:*}.env"
  chmod 600 "$tmp/secrets/${pair%%:*}.env"
done
write_config() {
  cat > "$tmp/lakehouse.toml" <<TOML
secrets_dir = "$tmp/secrets"
[server]
worker_threads = $1
[store]
backend = "local"
root = "$tmp/data"
[providers.ollama]
base_url = "$fake/ollama"
[providers.ollama_cloud]
base_url = "$fake/ollama_cloud"
[providers.openrouter]
base_url = "$fake/openrouter/api/v1"
[providers.opencode]
base_url = "$fake/zen/v1"
[providers.kimi]
base_url = "$fake/kimi/v1"
[[providers.custom]]
name = "bench"
base_url = "$fake/openai/v1"
key_file = "$tmp/secrets/bench.env"
[plugins]
order = ["downgrade", "matrix", "playbook"]
[plugins.matrix]
min_similarity = -1.0
[models]
local_fast = "ollama/qwen3:8b"
weak_models = ["ollama/qwen3:8b"]
[[rag_models]]
name = "rag/ops"
model = "ollama/qwen3:8b"
corpora = ["ops"]
k = 4
TOML
}

write_config 1
ingest_runbooks "$LAKEHOUSE" "$tmp/lakehouse.toml"

MODELS="bench/gpt-4o openrouter/openai/gpt-4o-mini kimi/kimi-k2.6 opencode/big-pickle
opencode/claude-sonnet-4-5 opencode/gpt-5.4 ollama/qwen3:8b ollama_cloud/gpt-oss:120b rag/ops"
for workers in 1 0; do
  write_config "$workers"
  start_listening env RUST_LOG=warn "$LAKEHOUSE" serve --config "$tmp/lakehouse.toml" --listen 127.0.0.1:0
  server=$started
  for model in $MODELS; do
    echo "== $model, $REQUESTS chats, worker_threads = $workers"
    LLVM_PROFILE_FILE=/dev/null "$BIN/loadgen" --url "$url" --pid "$server" --model "$model" \
      --requests "$REQUESTS" --concurrency 16 --warmup 0 --max-growth 100 > "$tmp/report.json" \
      || { cat "$tmp/report.json"; exit 1; }
  done
  for _ in $(seq 1 200); do
    curl -fsS "$url/v1/models" >/dev/null
    curl -fsS "$url/v1/embeddings" -H 'content-type: application/json' \
      -d '{"model":"local","input":["nightly backups","disk space alerts"]}' >/dev/null
  done
  # The counts are written as the server exits.
  kill -TERM "$server"
  wait "$server"
  unset 'pids[-1]'
done

# Sparse: functions that never ran are left out rather than recorded as never
# run, so code the load does not reach (admin, SQL, the CLI) is optimised as it
# would be without a profile, not shrunk as cold; and the file is 2 MB, not 30.
"$profdata" merge --sparse -o "$tmp/merged.profdata" "$tmp"/raw/*.profraw
mv "$tmp/merged.profdata" pgo/lakehouse.profdata
echo "wrote pgo/lakehouse.profdata ($(du -h pgo/lakehouse.profdata | cut -f1)) with $profdata"
