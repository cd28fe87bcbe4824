#!/usr/bin/env bash
# Benchmark of the migration engine against a private redis-server.
#
# Usage: scripts/bench.sh [--models M] [--cores] [--resume-at PCT] [positions]
#
#   positions        default 10000; 10 events per position
#   --models M       exactly M models (default: one per position), the
#                    creates spread evenly, every other event an update of a
#                    random existing model
#   --cores          also runs migrate pinned to one core (taskset -c 0) and
#                    reports the all-cores speedup
#   --resume-at PCT  also kills a migrate (kill -9) once its durable cursor
#                    reaches PCT % of the positions, times the resume, and
#                    reports resume_s / full_s
#
# Starts redis-server on a free port (never 6379), seeds the live datastore,
# measures the raw pipelined SET rate with redis-benchmark on the same server,
# then runs migrate (and the optional runs) and finalize with one
# rename_field migration in a release build. Each step is its own process
# of worker/examples/bench.rs, so each engine run's peak RSS is its own. The
# last line is one JSON object with all figures.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  sed -n 's/^# \{0,1\}//; 3,14p' "$0" >&2
  exit 2
}

positions=10000 models="" cores=0 resume_at=""
while [ $# -gt 0 ]; do
  case "$1" in
    --models) models="${2:?}"; shift 2 ;;
    --cores) cores=1; shift ;;
    --resume-at) resume_at="${2:?}"; shift 2 ;;
    -h|--help) usage ;;
    -*) usage ;;
    *) positions="$1"; shift ;;
  esac
done
models="${models:-$positions}"

cargo build --release -q -p migration-worker --example bench
bench=target/release/examples/bench

# The figures of every step, one JSON object a line; merged at the end.
dir=$(mktemp -d)
figures="$dir/figures.jsonl"
redis_pid=""
cleanup() {
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT

# A private redis-server: a free loopback port, a temp dir, no persistence.
# maxmemory at 3/4 of the memory available now: on this shared machine a
# datastore too large should fail with Redis's OOM error (noeviction: no
# key is ever dropped) rather than wake the kernel's OOM killer.
start_redis() {
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  [ "$port" = 6379 ] && { echo "refusing port 6379" >&2; exit 1; }
  local available_kb
  available_kb=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
  maxmemory=$((available_kb * 1024 / 4 * 3))
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --maxmemory "$maxmemory" --maxmemory-policy noeviction \
    --dir "$dir" --daemonize no >"$dir/redis.log" 2>&1 &
  redis_pid=$!
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
  url="redis://127.0.0.1:$port/0"
  echo "{\"redis_maxmemory_mb\": $((maxmemory / 1000000))}" >>"$figures"
}

seed() {
  echo "seeding $positions positions x 10 events, $models models, on port $port" >&2
  "$bench" seed "$url" "$positions" "$models" | tee -a "$figures" >&2
}

# The raw pipelined SET rate of this server now: the yardstick of the
# migrate ratio (the machine's load moves both alike).
set_baseline() {
  local line
  line=$(redis-benchmark -p "$port" -q -n 300000 -P 32 -d 200 -t set | tr '\r' '\n' \
    | grep -E '^SET: [0-9.]+ requests per second' | tail -1)
  echo "redis-benchmark: $line" >&2
  echo "{\"redis_set_per_s\": $(echo "$line" | awk '{print $2}')}" >>"$figures"
  redis-cli -p "$port" del key:__rand_int__ >/dev/null
}

# migrate pinned to core 0, then reset: the main run below is the
# all-cores figure on the same data.
one_core_run() {
  echo "migrate pinned to one core (taskset -c 0)" >&2
  taskset -c 0 "$bench" migrate "$url" 1core | tee -a "$figures" >&2
  "$bench" reset "$url" >/dev/null
}

# migrate killed at resume_at %, the resume timed, then reset: the main run
# below is the uninterrupted run (full_s) of the same data.
resume_run() {
  echo "migrate killed at $resume_at %, then resumed" >&2
  "$bench" kill-at "$url" "$resume_at" | tee -a "$figures" >&2
  "$bench" migrate "$url" resume | tee -a "$figures" >&2
  "$bench" reset "$url" >/dev/null
}

main_run() {
  echo "migrate (all cores)" >&2
  "$bench" migrate "$url" full | tee -a "$figures" >&2
  "$bench" finalize "$url" | tee -a "$figures" >&2
}

start_redis
seed
set_baseline
[ "$cores" = 1 ] && one_core_run
[ -n "$resume_at" ] && resume_run
main_run
echo "{\"cores\": $(nproc)}" >>"$figures"
"$bench" report <"$figures"
