#!/usr/bin/env bash
# Benchmark of the api's read routes against raw Redis, in the same run on
# the same private redis-server.
#
# Usage: scripts/bench-api.sh [seconds per route] [migration-api binary]
#   (default 10 s; default binary: the release build of this checkout, built
#   first. Give another binary, e.g. one built from an older commit, to
#   compare.)
#
# Starts redis-server on a free port (never 6379) and a release build of
# migration-api on another, seeds a few models, then measures with wrk at
# 64 connections:
#   stats          POST /internal/migrations {"cmd": "stats"}
#   get            POST /internal/datastore/reader/get {"fqid": "motion/1"}
#   progress       {"cmd": "progress"} while a job is queued (no worker runs;
#                  its output is the one queued line)
#   progress-100k  the same job after 100,000 verbose-style lines were
#                  appended to its output stream (by this script, straight
#                  into the stream, as a worker would)
# and `redis-benchmark -c 64 GET` on the same Redis right before and after
# each route (the load of a shared machine changes within a run). Prints
# each route's requests per second, its ratio to that Redis GET rate, and
# one JSON line with all figures. wrk is installed with apt-get when missing.
#
# The figures depend on the machine: wrk, the api and Redis share its cores.
set -euo pipefail
seconds="${1:-10}"
connections=64
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null; then
  echo "installing wrk (Debian package)" >&2
  if [ "$(id -u)" = 0 ]; then apt-get install -y -q wrk >&2 || { apt-get update -q >&2 && apt-get install -y -q wrk >&2; }
  else sudo apt-get install -y -q wrk >&2 || { sudo apt-get update -q >&2 && sudo apt-get install -y -q wrk >&2; }
  fi
fi
for tool in redis-server redis-cli redis-benchmark wrk python3 curl; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done

api_bin="${2:-}"
if [ -z "$api_bin" ]; then
  cargo build --release -q -p migration-api
  api_bin=target/release/migration-api
fi

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
redis_port=$(free_port)
api_port=$(free_port)
for port in "$redis_port" "$api_port"; do
  [ "$port" = 6379 ] && { echo "refusing port 6379" >&2; exit 1; }
done
dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  --maxmemory-policy noeviction --dir "$dir" --daemonize no >"$dir/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done

printf '%s' "bench-$RANDOM-$RANDOM" >"$dir/password"
auth=$(base64 <"$dir/password" | tr -d '\n')
env -i PATH="$PATH" REDIS_URL="redis://127.0.0.1:$redis_port/0" REDIS_KEY_PREFIX=bench \
  API_ADDR="127.0.0.1:$api_port" INTERNAL_AUTH_PASSWORD_FILE="$dir/password" \
  MIGRATION_WAIT_MS=0 RUST_LOG=warn \
  "$api_bin" >"$dir/api.log" 2>&1 &
pids+=($!)
api="http://127.0.0.1:$api_port"
for _ in $(seq 200); do curl -sf "$api/health" >/dev/null 2>&1 && break; sleep 0.05; done
curl -sf "$api/health" >/dev/null || { echo "the api did not start:" >&2; cat "$dir/api.log" >&2; exit 1; }

post() { # path body
  curl -sf -H "Authorization: $auth" -H 'Content-Type: application/json' -d "$2" "$api$1"
}

echo "seeding 100 models (redis :$redis_port, api :$api_port)" >&2
body=$(python3 -c '
import json
print(json.dumps([{"user_id": 1, "information": {}, "events": [
  {"type": "create", "fqid": "motion/%d" % i, "fields": {"title": "Motion %d" % i, "tag_ids": [1, 2]}}]}
  for i in range(1, 101)]))')
post /internal/datastore/writer/write "$body" >/dev/null

# One wrk run; prints requests per second, warns about non-2xx answers.
measure() { # name path body
  cat >"$dir/$1.lua" <<EOF
wrk.method = "POST"
wrk.body = '$3'
wrk.headers["Authorization"] = "$auth"
wrk.headers["Content-Type"] = "application/json"
EOF
  # a short warm-up (connections, the replica's output cache)
  wrk -t2 -c"$connections" -d1s -s "$dir/$1.lua" "$api$2" >/dev/null
  wrk -t2 -c"$connections" -d"${seconds}s" -s "$dir/$1.lua" "$api$2" >"$dir/$1.out"
  if grep -q 'Non-2xx' "$dir/$1.out"; then
    echo "$1: $(grep 'Non-2xx' "$dir/$1.out")" >&2
  fi
  awk '/^Requests\/sec:/ {print $2}' "$dir/$1.out"
}

redis_get() {
  redis-cli -p "$redis_port" set bench:key "$(head -c 100 /dev/zero | tr '\0' x)" >/dev/null
  redis-benchmark -p "$redis_port" -c "$connections" -n 300000 -q -t get \
    | tr '\r' '\n' | grep -E '^GET: [0-9.]+ requests per second' | tail -1 | awk '{print $2}'
}

# Each route's rate is compared with Redis's GET rate measured right before
# and right after it: on a shared machine the load changes within a run.
results="$dir/results"
: >"$results"
route() { # name path body
  local before rate after
  before=$(redis_get)
  rate=$(measure "$1" "$2" "$3")
  after=$(redis_get)
  echo "$1: $rate req/s; redis GET before $before, after $after" >&2
  echo "$1 $rate $before $after" >>"$results"
}

route stats /internal/migrations '{"cmd": "stats"}'
route get /internal/datastore/reader/get '{"fqid": "motion/1"}'

# A queued job (no worker): progress answers migration_running and its output.
post /internal/migrations '{"cmd": "migrate", "verbose": true}' >/dev/null
route progress /internal/migrations '{"cmd": "progress"}'

job_id=$(redis-cli -p "$redis_port" get '{bench}:job:current')
echo "appending 100000 lines to job $job_id's output" >&2
python3 - "$job_id" <<'EOF' | redis-cli -p "$redis_port" --pipe >/dev/null
import sys
stream = "{bench}:job:%s:output" % sys.argv[1]
out = sys.stdout
def command(*args):
    out.write("*%d\r\n" % len(args))
    for arg in args:
        data = str(arg)
        out.write("$%d\r\n%s\r\n" % (len(data.encode()), data))
for position in range(1, 100001):
    command("XADD", stream, "*", "line", "Position %d from MI 1 to MI 2" % position)
EOF
lines=$(curl -sf -H "Authorization: $auth" -d '{"cmd": "progress"}' "$api/internal/migrations" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["output"].count("\n"))')
echo "progress with $lines output lines" >&2
route progress-100k /internal/migrations '{"cmd": "progress"}'

python3 - "$results" "$lines" "$connections" <<'EOF'
import json, sys
lines, connections = int(sys.argv[2]), int(sys.argv[3])
figures = {"connections": connections, "progress_100k_lines": lines, "routes": {}}
print("%d connections; Redis GET measured right before and after each route" % connections)
for row in open(sys.argv[1]):
    name, rate, before, after = row.split()
    rate, redis = float(rate), (float(before) + float(after)) / 2
    label = "progress (%d lines)" % lines if name == "progress-100k" else name
    print("%-24s %9.0f req/s   redis GET %8.0f req/s   ratio %.2f" % (label, rate, redis, rate / redis))
    figures["routes"][name] = {"per_s": round(rate), "redis_get_per_s": round(redis),
                               "ratio": round(rate / redis, 3)}
print(json.dumps(figures))
EOF
