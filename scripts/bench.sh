#!/usr/bin/env bash
# Benchmark of the migration engine against a private redis-server.
#
# Usage: scripts/bench.sh [positions]   (default 10000; 10 events per position)
#
# Starts redis-server on a free port (never 6379), seeds the live datastore,
# measures the raw pipelined SET rate with redis-benchmark on the same server,
# then runs migrate + finalize with one rename_field migration in a release
# build. The last line is one JSON object with all figures.
set -euo pipefail
positions="${1:-10000}"
cd "$(dirname "$0")/.."

cargo build --release -q -p migration-worker --example bench
bench=target/release/examples/bench

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
[ "$port" = 6379 ] && { echo "refusing port 6379" >&2; exit 1; }
dir=$(mktemp -d)
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
  --maxmemory-policy noeviction --dir "$dir" --daemonize no >"$dir/redis.log" 2>&1 &
redis_pid=$!
trap 'kill "$redis_pid" 2>/dev/null; wait "$redis_pid" 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
url="redis://127.0.0.1:$port/0"

echo "seeding $positions positions x 10 events on port $port" >&2
start=$(date +%s.%N)
"$bench" seed "$url" "$positions"
echo "seeded in $(echo "$(date +%s.%N) - $start" | bc) s" >&2

set_line=$(redis-benchmark -p "$port" -q -n 300000 -P 32 -d 200 -t set | tr '\r' '\n' | grep -E '^SET: [0-9.]+ requests per second' | tail -1)
echo "redis-benchmark: $set_line" >&2
set_per_s=$(echo "$set_line" | awk '{print $2}')
redis-cli -p "$port" del key:__rand_int__ >/dev/null

"$bench" run "$url" "$set_per_s"
