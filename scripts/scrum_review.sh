#!/usr/bin/env bash
# Cross-lineage review of a diff by the [models] review tiers (or --models ...):
#   git diff main > /tmp/pr.diff && scripts/scrum_review.sh /tmp/pr.diff pr-42
#   scripts/scrum_review.sh /tmp/pr.diff pr-42 --models tier/cloud_review,kimi/kimi-k2.6
# Writes reports/scrum/<date>/<label>/ (verdicts/, disposition.md, summary.json)
# and prints that directory. CONFIG picks the config file (default lakehouse.toml).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 <diff-file> <label> [lakehouse scrum options]" >&2
  exit 2
fi
diff_file=$1 label=$2
shift 2
cd "$(dirname "$0")/.."
source scripts/build_env.sh
cargo build --release --quiet -p lakehouse --bin lakehouse
exec "$CARGO_TARGET_DIR/release/lakehouse" scrum "$diff_file" --label "$label" \
  --config "${CONFIG:-lakehouse.toml}" "$@"
