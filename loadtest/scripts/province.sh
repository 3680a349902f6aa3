#!/usr/bin/env bash
# Measures the `province` demo: first start (seeding 1,000,000 households),
# resident memory once ready, then SIGKILL and the time from a fresh start to
# ready. Usage: loadtest/scripts/province.sh [DATA_DIR] [PORT]
# Needs a release build: cargo build --release -p attach-gateway
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-target}"
bin="$target/release/attach"
data="${1:-$(mktemp -d)/province}"
port="${2:-18080}"
url="http://127.0.0.1:$port"

now_ms() { date +%s%3N; }
wait_ready() {
  for _ in $(seq 1 6000); do
    if curl -fs "$url/readyz" >/dev/null 2>&1; then return 0; fi
    sleep 0.05
  done
  echo "not ready after 300 s" >&2; return 1
}
rss_mib() { awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }

start=$(now_ms)
"$bin" serve --listen "127.0.0.1:$port" --data-dir "$data" --demo province >/dev/null 2>"$data.first.log" &
pid=$!
trap 'kill -9 $pid 2>/dev/null || true' EXIT
wait_ready
echo "first start (seed + load) to ready: $(( $(now_ms) - start )) ms"
echo "resident after first start: $(rss_mib $pid) MiB"
# Statistics are for signed-in staff: a development token for the whole province.
token=$("$bin" token --role coordinator --scope province --data-dir "$data" 2>/dev/null)
kill -9 "$pid"; wait "$pid" 2>/dev/null || true

for run in 1 2 3; do
  start=$(now_ms)
  "$bin" serve --listen "127.0.0.1:$port" --data-dir "$data" --demo province >/dev/null 2>"$data.restart.log" &
  pid=$!
  wait_ready
  echo "restart $run to ready: $(( $(now_ms) - start )) ms, resident $(rss_mib $pid) MiB"
  total=0
  for ha in FHA IHA VIHA NHA VCHA; do
    n=$(curl -fs "$url/graphql" -H 'content-type: application/json' -H "authorization: Bearer $token" \
      -d "{\"query\":\"{ healthAuthorityStatistics(code: \\\"$ha\\\") { waitingHouseholds } }\"}" \
      | grep -o '"waitingHouseholds":[0-9]*' | cut -d: -f2)
    if [ -z "$n" ]; then echo "no statistics for $ha" >&2; exit 1; fi
    total=$(( total + n ))
  done
  echo "  households waiting after restart: $total"
  kill -9 "$pid"; wait "$pid" 2>/dev/null || true
done
echo "file: $(du -m "$data/attach.redb" | cut -f1) MiB"
