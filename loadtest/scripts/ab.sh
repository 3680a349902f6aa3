#!/usr/bin/env bash
# Two builds alternately on one seeded data directory: restart to ready after
# SIGKILL, resident memory once ready, and the read path (a 20-item waitlist
# page against a trivial query). Usage, from anywhere:
#   loadtest/scripts/ab.sh OLD_DIR NEW_DIR DATA_DIR [PORT] [ROUNDS]
# OLD_DIR and NEW_DIR hold each build's release `attach` (and, optionally, the
# regions file it reads as `bc.toml`; otherwise the repository's is used).
# NEW_DIR's `attach-loadtest` drives both. Seed DATA_DIR first with
# loadtest/scripts/province.sh. Rate limits are off for the runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
old="$1"; new="$2"; data="$3"; port="${4:-18090}"; rounds="${5:-3}"
url="http://127.0.0.1:$port"
now_ms() { date +%s%3N; }
token=$("$new/attach" token --role coordinator --scope province --data-dir "$data" --ttl 2h 2>/dev/null)
for round in $(seq 1 "$rounds"); do
  for build in old new; do
    dir=$old; [ "$build" = new ] && dir=$new
    regions=infra/regions/bc.toml; [ -f "$dir/bc.toml" ] && regions="$dir/bc.toml"
    start=$(now_ms)
    ATTACH_LIMITS__RATE__ENABLED=false "$dir/attach" serve --listen "127.0.0.1:$port" --data-dir "$data" \
      --regions "$regions" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 1 6000); do curl -fs "$url/readyz" >/dev/null 2>&1 && break; sleep 0.05; done
    ready=$(( $(now_ms) - start ))
    rss=$(awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$pid/status")
    ratio=$("$new/attach-loadtest" read-path --url "$url" --community 233 --seconds 6 --warmup 1 --token "$token" 2>&1 \
      | awk '/\/ trivial/ { printf "page / trivial %s", $NF; next } /^(trivial|waitlist_page) / { printf "%s %s/s, ", $1, $2 }')
    echo "round $round $build: ready ${ready} ms, resident ${rss} MiB; $ratio"
    kill -9 "$pid"; wait "$pid" 2>/dev/null || true
  done
done
