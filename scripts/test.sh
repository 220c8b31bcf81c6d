#!/usr/bin/env bash
# Runs every test: Rust unit and end-to-end tests, then the official `openai`
# Python client against the real binaries. One cargo profile (release) serves
# the tests, the end-to-end binaries and the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lakehouse/target}"
VENV="${LAKEHOUSE_VENV:-$HOME/.cache/lakehouse/venv}"

echo "== build (release, target dir $CARGO_TARGET_DIR)"
cargo build --release --workspace --bins --tests

echo "== cargo tests"
cargo test --release --workspace --no-fail-fast

echo "== python client tests (venv $VENV)"
if [ ! -x "$VENV/bin/python" ]; then
  # Debian splits venv out of python3; install it when missing (CI runs as root).
  python3 -m venv "$VENV" || { apt-get update -qq && apt-get install -y -qq python3-venv && python3 -m venv "$VENV"; }
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt
LAKEHOUSE_BIN_DIR="$CARGO_TARGET_DIR/release" "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/python
