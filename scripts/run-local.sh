#!/usr/bin/env bash
# Runs the main job locally, end to end, with the real binaries:
#
#   1. a Redis: $REDIS_URL if set, else a private redis-server on a free port
#      in a temp dir (installed with apt-get when missing), stopped at exit;
#   2. builds and starts `migration-api` and 2 `migration-worker`s;
#   3. writes a small demo datastore through the write route, reads it back
#      with get and get_all, asks the migration route for `stats`, and prints
#      everything.
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

# A TCP port on 127.0.0.1 nobody listens on (checked by trying to connect).
free_port() {
  local port
  for _ in $(seq 1 100); do
    port=$((20000 + RANDOM % 40000))
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

# ----- 1. Redis -----
if [ -z "${REDIS_URL:-}" ]; then
  if ! command -v redis-server >/dev/null 2>&1; then
    log "redis-server not found: installing it with apt-get"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
    $SUDO apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server
  fi
  REDIS_PORT=$(free_port)
  log "starting a private redis-server on 127.0.0.1:$REDIS_PORT (dir $WORK_DIR/redis)"
  mkdir -p "$WORK_DIR/redis"
  # noeviction + AOF, as the product requires of its Redis.
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK_DIR/redis" \
    --save "" --appendonly yes --maxmemory-policy noeviction --daemonize no \
    >"$WORK_DIR/redis.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null; then break; fi
    sleep 0.1
  done
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

# ----- 3. the demo datastore -----
log "health"
curl -sS "$API_URL/health" -w '\n(HTTP %{http_code})\n'

log "write: two positions (create two motions and a tag; then change one)"
call /internal/datastore/writer/write '[
  {"user_id": 1, "information": {"demo": "run-local"}, "events": [
    {"type": "create", "fqid": "motion/1", "fields": {"title": "First motion", "text": "draft", "tag_ids": [1]}},
    {"type": "create", "fqid": "motion/2", "fields": {"title": "Second motion", "tag_ids": []}},
    {"type": "create", "fqid": "tag/1", "fields": {"name": "budget"}}]},
  {"user_id": 1, "information": {}, "events": [
    {"type": "update", "fqid": "motion/1", "fields": {"title": "First motion (amended)", "text": null},
     "list_fields": {"add": {"tag_ids": [2]}, "remove": {}}}]}
]'

log "get motion/1"
call /internal/datastore/reader/get '{"fqid": "motion/1"}'

log "get_all motion"
call /internal/datastore/reader/get_all '{"collection": "motion"}'

log "migration stats (the migration route may still be in progress)"
call /internal/migrations '{"cmd": "stats"}'

if [ "${KEEP_RUNNING:-}" = 1 ]; then
  log "running; Ctrl-C stops everything"
  echo "  REDIS_URL=$REDIS_URL REDIS_KEY_PREFIX=$REDIS_KEY_PREFIX"
  echo "  curl -X POST $API_URL/internal/datastore/reader/get_all -H '$AUTH_HEADER' -d '{\"collection\": \"motion\"}'"
  wait "$API_PID"
fi
log "done; stopping all processes"
