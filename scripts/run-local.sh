#!/usr/bin/env bash
# Runs the main job locally, end to end, with the real binaries:
#
#   1. a Redis: $REDIS_URL if set, else a private redis-server on a free port
#      in a temp dir (installed with apt-get when missing), stopped at exit;
#   2. builds and starts `migration-api` and 2 `migration-worker`s with the
#      example migrations (`examples/migrations.json`: MI 1 -> 4);
#   3. writes the example datastore (`examples/datastore.json`, 265 positions
#      at MI 1) through the write route and reads a model back;
#   4. runs the migration: `stats`, `migrate` (progress shown while it runs),
#      `finalize`, `stats`, and reads the migrated model; exits non-zero when
#      any step does not end as it should.
#
#   scripts/run-local.sh                 # demo, then stop everything
#   KEEP_RUNNING=1 scripts/run-local.sh  # demo, then keep running until Ctrl-C
#   PROFILE=release scripts/run-local.sh # build with --release
#
# With $REDIS_URL set, the demo writes under a fresh REDIS_KEY_PREFIX
# (`demo-<time>`, unless REDIS_KEY_PREFIX is set) so it never mixes with
# existing data. Every process this script starts is stopped at exit.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${PROFILE:-debug}
WORK_DIR=$(mktemp -d -t migration-run-local.XXXXXX)
PIDS=()

log() { printf '\n== %s\n' "$*"; }

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A TCP port on 127.0.0.1 nobody listens on (checked by trying to connect),
# below Linux's ephemeral range (32768+), where outgoing connections would
# otherwise hold a port that then cannot be bound.
free_port() {
  local port
  for _ in $(seq 1 100); do
    port=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  echo "no free port found" >&2
  return 1
}

# Waits until `curl $1` answers 200 or 503 (the process serves, whether or
# not Redis is up); fails with the log's tail when process $4 exits first.
wait_for_http() {
  local url=$1 what=$2 log_file=$3 pid=$4 code
  for _ in $(seq 1 300); do
    if ! kill -0 "$pid" 2>/dev/null; then
      code=0
      wait "$pid" || code=$?
      echo "$what exited during start (exit $code); its log:" >&2
      tail -n 40 "$log_file" >&2
      exit 1
    fi
    code=$(curl -s -o /dev/null -w '%{http_code}' "$url" || true)
    if [ "$code" = 200 ] || [ "$code" = 503 ]; then
      return 0
    fi
    sleep 0.1
  done
  echo "$what did not answer $url in 30 s; its log:" >&2
  tail -n 40 "$log_file" >&2
  exit 1
}

need_package() { # command, Debian package
  if ! command -v "$1" >/dev/null 2>&1; then
    log "$1 not found: installing $2 with apt-get"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
    $SUDO apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y "$2"
  fi
}
need_package curl curl

# ----- 1. Redis -----
if [ -z "${REDIS_URL:-}" ]; then
  if ! command -v redis-server >/dev/null 2>&1; then
    log "redis-server not found: installing it with apt-get"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
    $SUDO apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server
  fi
  mkdir -p "$WORK_DIR/redis"
  # Started, then checked with PING: a port can still be lost to a race with
  # another process, so a failed start is retried on another port.
  for attempt in 1 2 3 4 5; do
    REDIS_PORT=$(free_port)
    log "starting a private redis-server on 127.0.0.1:$REDIS_PORT (dir $WORK_DIR/redis)"
    # noeviction + AOF, as the product requires of its Redis.
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK_DIR/redis" \
      --save "" --appendonly yes --maxmemory-policy noeviction --daemonize no \
      >"$WORK_DIR/redis.log" 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    redis_up=no
    for _ in $(seq 1 100); do
      if ! kill -0 "$REDIS_PID" 2>/dev/null; then break; fi
      if redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; then
        redis_up=yes
        break
      fi
      sleep 0.1
    done
    [ "$redis_up" = yes ] && break
    echo "redis-server did not start on port $REDIS_PORT (attempt $attempt); its log:" >&2
    tail -n 5 "$WORK_DIR/redis.log" >&2
    kill "$REDIS_PID" 2>/dev/null || true
  done
  if [ "$redis_up" != yes ]; then
    echo "could not start a private redis-server" >&2
    exit 1
  fi
  export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
  export REDIS_KEY_PREFIX=${REDIS_KEY_PREFIX:-mig}
else
  export REDIS_KEY_PREFIX=${REDIS_KEY_PREFIX:-demo-$(date +%s)}
  log "using REDIS_URL=$REDIS_URL with REDIS_KEY_PREFIX=$REDIS_KEY_PREFIX"
fi

# ----- 2. build and start the binaries -----
log "building the binaries ($PROFILE)"
case "$PROFILE" in
  debug) cargo build --workspace --bins ;;
  release) cargo build --workspace --bins --release ;;
  *) cargo build --workspace --bins --profile "$PROFILE" ;;
esac
BIN_DIR="${CARGO_TARGET_DIR:-target}/$PROFILE"

# A password file (what production uses), and its header value.
head -c 24 /dev/urandom | base64 | tr -d '\n/+=' >"$WORK_DIR/internal_auth_password"
export INTERNAL_AUTH_PASSWORD_FILE="$WORK_DIR/internal_auth_password"
AUTH_HEADER="Authorization: $(base64 -w0 <"$INTERNAL_AUTH_PASSWORD_FILE")"
API_PORT=$(free_port)
export API_ADDR="127.0.0.1:$API_PORT"
API_URL="http://$API_ADDR"
export RUST_LOG=${RUST_LOG:-info}
export MIGRATIONS_FILE=${MIGRATIONS_FILE:-$PWD/examples/migrations.json}
# Slow the workers down a little so that the demo shows a running migration.
export WORKER_MAX_POSITIONS_PER_SECOND=${WORKER_MAX_POSITIONS_PER_SECOND:-150}

log "starting migration-api on $API_URL (log $WORK_DIR/api.log)"
"$BIN_DIR/migration-api" >"$WORK_DIR/api.log" 2>&1 &
PIDS+=($!)
API_PID=$!
wait_for_http "$API_URL/health" migration-api "$WORK_DIR/api.log" "$API_PID"

WORKER_PIDS=()
for n in 1 2; do
  "$BIN_DIR/migration-worker" >"$WORK_DIR/worker-$n.log" 2>&1 &
  PIDS+=($!)
  WORKER_PIDS+=($!)
done
sleep 1
for n in 1 2; do
  pid=${WORKER_PIDS[$((n - 1))]}
  if kill -0 "$pid" 2>/dev/null; then
    echo "migration-worker $n running (pid $pid, log $WORK_DIR/worker-$n.log)"
  else
    # Harmless while the worker is still being written: the demo needs none.
    code=0
    wait "$pid" || code=$?
    echo "migration-worker $n exited at once (exit $code); the demo goes on without it"
  fi
done

# POSTs $2 to $1 with the internal password; prints the answer and its status.
call() {
  curl -sS -X POST "$API_URL$1" -H "$AUTH_HEADER" \
    -H 'Content-Type: application/json' --data-binary "$2" \
    -w '\n(HTTP %{http_code})\n'
}

# POSTs a migration command quietly; the JSON answer goes to stdout.
command_json() {
  curl -sS -X POST "$API_URL/internal/migrations" -H "$AUTH_HEADER" \
    -H 'Content-Type: application/json' --data-binary "$1"
}

# The value of the string field $2 in the JSON $1 (no jq on a fresh machine;
# enough for the api's flat answers: unescapes \n, \" and \\).
json_string() {
  printf '%s' "$1" | sed -n 's/.*"'"$2"'":"\(\([^"\\]\|\\.\)*\)".*/\1/p' \
    | sed -e 's/\\n/\n/g' -e 's/\\"/"/g' -e 's/\\\\/\\/g'
}

# Runs migration command $1, shows its output as it grows, and checks that it
# ends without an exception in state $2.
run_migration() {
  local cmd=$1 expected=$2 answer status output shown=0 lines
  log "$cmd"
  answer=$(command_json "{\"cmd\": \"$cmd\"}")
  while :; do
    if ! printf '%s' "$answer" | grep -q '"success":true'; then
      echo "the api refused '$cmd': $answer" >&2
      exit 1
    fi
    status=$(json_string "$answer" status)
    output=$(json_string "$answer" output)
    lines=$(printf '%s' "$output" | grep -c '' || true)
    if [ "$lines" -gt "$shown" ]; then
      printf '%s\n' "$output" | tail -n "+$((shown + 1))" | sed 's/^/  | /'
      shown=$lines
    fi
    [ "$status" = migration_running ] || break
    sleep 0.3
    answer=$(command_json '{"cmd": "progress"}')
  done
  if printf '%s' "$answer" | grep -q '"exception":'; then
    echo "'$cmd' failed: $(json_string "$answer" exception)" >&2
    exit 1
  fi
  echo "status: $status"
  if [ "$status" != "$expected" ]; then
    echo "expected status $expected after '$cmd', got $status" >&2
    exit 1
  fi
}

# ----- 3. the example datastore -----
log "health"
curl -sS "$API_URL/health" -w '\n(HTTP %{http_code})\n'

log "write examples/datastore.json (265 positions at migration index 1)"
answer=$(curl -sS -X POST "$API_URL/internal/datastore/writer/write" -H "$AUTH_HEADER" \
  -H 'Content-Type: application/json' --data-binary @examples/datastore.json)
if ! printf '%s' "$answer" | grep -q '"success":true'; then
  echo "the example datastore was refused: $answer" >&2
  if [ -f "$WORK_DIR/redis.log" ]; then
    echo "private redis-server log (tail):" >&2
    tail -n 20 "$WORK_DIR/redis.log" >&2
  fi
  exit 1
fi
printf '%s' "$answer" | head -c 80
echo " ..."

log "get motion/7 before the migration (MI 1: it has a title)"
call /internal/datastore/reader/get '{"fqid": "motion/7"}'

# ----- 4. the migration -----
log "stats"
call /internal/migrations '{"cmd": "stats"}'
run_migration migrate finalization_required
log "stats after migrate (readers still see the old data)"
call /internal/migrations '{"cmd": "stats"}'
run_migration finalize no_migration_required
log "stats after finalize"
call /internal/migrations '{"cmd": "stats"}'
log "get motion/7 after the migration (MI 4: title renamed to name, weight added, legacy removed)"
call /internal/datastore/reader/get '{"fqid": "motion/7"}'

if [ "${KEEP_RUNNING:-}" = 1 ]; then
  log "running; Ctrl-C stops everything"
  echo "  REDIS_URL=$REDIS_URL REDIS_KEY_PREFIX=$REDIS_KEY_PREFIX"
  echo "  curl -X POST $API_URL/internal/datastore/reader/get_all -H '$AUTH_HEADER' -d '{\"collection\": \"motion\"}'"
  wait "$API_PID"
fi
log "done; stopping all processes"
