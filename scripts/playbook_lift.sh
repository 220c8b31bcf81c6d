#!/usr/bin/env bash
# The playbook-lift reality test (see scripts/lift/harness.py): builds the
# Debian evaluation set if missing, then measures plain retrieval, retrieval
# with the playbook boost, and the shuffled-feedback control through the real
# server. Loopback only; writes reports/lift/<date>.json and .md.
#   scripts/playbook_lift.sh                 # full Debian set (about 50k packages)
#   DOCS=20000 scripts/playbook_lift.sh      # a fixed-seed subset
#   BOOST=strength=0.4,min_similarity=0.5 scripts/playbook_lift.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/build_env.sh
DOCS="${DOCS:-0}"
SET="${LIFT_SET:-$HOME/.cache/lakehouse/lift/debian-$DOCS}"

cargo build --release -p lakehouse -p lakehouse-e2e --bins

if [ ! -s "$SET/queries.jsonl" ]; then
  if ! ls /var/lib/apt/lists/*_i18n_Translation-en* >/dev/null 2>&1; then
    echo "== fetching the English package descriptions (apt-get update)"
    apt-get update -qq -o Acquire::Languages=en
  fi
  echo "== building the evaluation set in $SET"
  python3 scripts/lift/build_set.py "$SET" --docs "$DOCS"
fi

echo "== lift"
python3 scripts/lift/harness.py "$SET" --bin-dir "$CARGO_TARGET_DIR/release" --boost "${BOOST:-}"
