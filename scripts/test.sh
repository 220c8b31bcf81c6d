#!/usr/bin/env bash
# Runs every test: Rust unit and end-to-end tests, then the official `openai`
# Python client against the real binaries. One cargo profile (release) serves
# the tests, the end-to-end binaries and the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/build_env.sh
VENV="${LAKEHOUSE_VENV:-$HOME/.cache/lakehouse/venv}"

echo "== build (release, target dir $CARGO_TARGET_DIR)"
cargo build --release --workspace --all-targets

echo "== system tools: chromium + chromedriver (console test), chattr (read-only store test)"
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ] || ! command -v chattr >/dev/null; then
  # CI runs as root on Debian; elsewhere install them once with sudo.
  apt-get update -qq && apt-get install -y -qq chromium chromium-driver e2fsprogs >/dev/null
fi

echo "== python venv ($VENV)"
if [ ! -x "$VENV/bin/python" ]; then
  # Debian splits venv out of python3; install it when missing (CI runs as root).
  python3 -m venv "$VENV" || { apt-get update -qq && apt-get install -y -qq python3-venv && python3 -m venv "$VENV"; }
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt

echo "== S3 server for the store tests (moto, loopback)"
S3_PORT=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT" >/dev/null 2>&1 &
MOTO_PID=$!
trap 'kill $MOTO_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$S3_PORT/" >/dev/null 2>&1 && break
  sleep 0.1
done
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
export LAKEHOUSE_TEST_S3_ENDPOINT="http://127.0.0.1:$S3_PORT" LAKEHOUSE_TEST_S3_BUCKET=lakehouse-test
curl -fsS -X PUT "$LAKEHOUSE_TEST_S3_ENDPOINT/$LAKEHOUSE_TEST_S3_BUCKET" >/dev/null

echo "== cargo tests"
cargo test --release --workspace --no-fail-fast

echo "== python client tests"
LAKEHOUSE_BIN_DIR="$CARGO_TARGET_DIR/release" "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/python

echo "== load test (10,000 chats on loopback, zero errors, RSS flat after warm-up)"
LOAD_REPORT_DIR=test-output scripts/load_test.sh --requests 10000 --concurrency 32
