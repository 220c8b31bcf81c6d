# Sourced by the scripts that run the release binaries on loopback
# (load_test.sh, pgo_profile.sh): a scratch folder and the processes they
# start, both cleaned up at exit, and the pieces of a test deployment.
tmp=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

# start_listening CMD...: starts a server that prints one "listening on
# http://ADDR" line on stdout, reads that line as it comes, and sets `url` to
# the address and `started` to the pid (also kept in `pids`).
start_listening() {
  local fd line
  exec {fd}< <(exec "$@")
  started=$!
  pids+=("$started")
  read -r -t 120 line <&"$fd" || { echo "$1 did not start" >&2; return 1; }
  url="${line##*listening on }"
}

# ingest_runbooks LAKEHOUSE CONFIG: the corpus `ops` of 300 short runbooks,
# for the rag models the load chats with.
ingest_runbooks() {
  local i
  for i in $(seq 1 300); do
    printf '{"id":"doc-%d","text":"Runbook %d: how the team handles case %d of rotating logs, backups, deploys, failover, certificates, queues and alerts."}\n' "$i" "$i" "$i"
  done > "$tmp/docs.jsonl"
  RUST_LOG=warn "$1" ingest "$tmp/docs.jsonl" --corpus ops --text-column text --config "$2" >/dev/null
}
