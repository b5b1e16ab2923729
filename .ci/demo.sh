#!/usr/bin/env bash
# make demo: a local redis-server with notifications enabled, keyrelay with
# the stdout sink, a few writes (one key expires), the records, then stop
# everything this script started.
set -euo pipefail
bin=${1:-bin/keyrelay}
dir=$(mktemp -d)
port=$(( 20000 + RANDOM % 20000 ))
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
  --logfile "$dir/redis.log" --notify-keyspace-events KEA &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done

echo "# keyrelay subscribed to redis://127.0.0.1:$port (records on stdout, logs in $dir/keyrelay.log)" >&2
KEYRELAY_REDIS_URL="redis://127.0.0.1:$port" KEYRELAY_HTTP_ADDR="" KEYRELAY_LOG_FORMAT=text \
  "$bin" run 2>"$dir/keyrelay.log" &
pids+=($!)
krpid=$!
for _ in $(seq 50); do grep -q subscribed "$dir/keyrelay.log" 2>/dev/null && break; sleep 0.1; done

echo "# writes: SET session:42 with a 1 s TTL, HSET, LPUSH in db 2, RENAME, DEL" >&2
cli() { redis-cli -p "$port" "$@" >/dev/null; }
cli SET session:42 alice PX 1000
cli HSET user:7 name bob
cli -n 2 LPUSH jobs j1
cli RENAME user:7 user:8
cli DEL user:8
sleep 1.5
cli GET session:42   # touching it expires it now, if the background cycle has not
sleep 0.3
kill -TERM "$krpid"
wait "$krpid" || true
echo "# keyrelay stopped; its log:" >&2
cat "$dir/keyrelay.log" >&2
