#!/usr/bin/env bash
# Property-based fuzz of every route of the api's own OpenAPI document
# (`GET /internal/openapi.json`) with schemathesis, against the real
# binaries: a private redis-server on a free port (never 6379), one
# `migration-api` and one `migration-worker` (so migration commands finish
# and the fuzz sees every job state), all started and stopped here.
#
# Fails when any generated request gets a 5xx (`not_a_server_error`), a
# status code the document does not list (`status_code_conformance`), a
# content type or body that differs from the document
# (`content_type_conformance`, `response_schema_conformance`), when a request
# the document forbids is accepted (`negative_data_rejection`), when an
# /internal/ route answers without the password (`ignored_auth`), or a wrong
# method gets anything but 405 (`unsupported_method`). FUZZ_CHECKS overrides
# the list.
#
#   scripts/fuzz-api.sh                      # about 2 minutes
#   FUZZ_SECONDS=30 scripts/fuzz-api.sh      # shorter
#   FUZZ_SEED=123 scripts/fuzz-api.sh        # replay a run (the seed is printed)
#   FUZZ_ARGS="--include-path /health" scripts/fuzz-api.sh   # more `st run` options
#
# Works on a fresh Debian machine with python3: schemathesis (pinned) is
# installed from PyPI into a venv under target/ (python3-venv and
# redis-server come from apt-get when missing). FUZZ_PYTHON picks the
# interpreter (default: the newest Python >= 3.12 found, else python3).
# Needs the binaries built (`cargo build --workspace --bins`; done here when
# they are missing).
# Prints `fuzz-api: PASS` or `fuzz-api: FAIL ...` and exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

SCHEMATHESIS_VERSION=4.32.5
FUZZ_SECONDS=${FUZZ_SECONDS:-100}
CHECKS=${FUZZ_CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,negative_data_rejection,ignored_auth,unsupported_method,missing_required_header}

BIN_DIR=target/${PROFILE:-debug}
WORK_DIR=$(mktemp -d -t migration-fuzz-api.XXXXXX)
PIDS=()

fail() {
  echo "fuzz-api: FAIL: $*" >&2
  exit 1
}

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

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    fail "need root (or sudo) to apt-get install $*"
  fi
}

apt_install() {
  echo "fuzz-api: installing $* with apt-get"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

# The interpreter of the venv: FUZZ_PYTHON, else the newest Python >= 3.12
# found (on PATH, or installed by pyenv), else python3. Under CPython 3.11
# hypothesis often crashed while schemathesis generated data ("AST
# constructor recursion depth mismatch"), a crash of the tool, not a failure
# of the API; with 3.13 it ran clean.
pick_python() {
  if [ -n "${FUZZ_PYTHON:-}" ]; then
    echo "$FUZZ_PYTHON"
    return
  fi
  local candidate
  for candidate in python3.13 python3.12 \
      $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -rV); do
    if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      echo "$candidate"
      return
    fi
  done
  echo python3
}
PYTHON=$(pick_python)
command -v "$PYTHON" >/dev/null 2>&1 || fail "$PYTHON is required"
PY_VERSION=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
VENV=${FUZZ_VENV:-target/fuzz-venv-$PY_VERSION}
command -v redis-server >/dev/null 2>&1 || apt_install redis-server

# ----- schemathesis in a venv (reused while it has the pinned version) -----
if ! "$VENV/bin/st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  rm -rf "$VENV"
  if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
    # Debian splits ensurepip into python3-venv (python3.X-venv).
    rm -rf "$VENV"
    apt_install python3-venv "python$PY_VERSION-venv" || apt_install python3-venv
    "$PYTHON" -m venv "$VENV" || fail "cannot create a venv with $PYTHON -m venv"
  fi
  "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" \
    || fail "cannot install schemathesis $SCHEMATHESIS_VERSION from PyPI"
fi
echo "fuzz-api: using $("$VENV/bin/st" --version) on Python $PY_VERSION ($VENV)"

if [ ! -x "$BIN_DIR/migration-api" ] || [ ! -x "$BIN_DIR/migration-worker" ]; then
  cargo build --workspace --bins
fi

# A free loopback port: bound by the OS, below the ephemeral range so that no
# outgoing connection takes it meanwhile, and never Redis's default.
free_port() {
  python3 - <<'EOF'
import random, socket
for _ in range(200):
    port = random.randint(20000, 32000)
    if port == 6379:
        continue
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(port)
        break
else:
    raise SystemExit("no free port")
EOF
}

# http_get URL [AUTH]: prints the status code (000 when nothing answers).
http_get() {
  python3 - "$@" <<'EOF'
import sys, urllib.request, urllib.error
request = urllib.request.Request(sys.argv[1])
if len(sys.argv) > 2:
    request.add_header("Authorization", sys.argv[2])
try:
    with urllib.request.urlopen(request, timeout=2) as response:
        print(response.status)
except urllib.error.HTTPError as err:
    print(err.code)
except Exception:
    print("000")
EOF
}

# ----- a private Redis, the api and a worker -----
REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK_DIR" --save '' \
  --appendonly no --maxmemory-policy noeviction >"$WORK_DIR/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
  if redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; then break; fi
  sleep 0.1
done
redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG \
  || fail "redis-server on port $REDIS_PORT did not start: $(tail -5 "$WORK_DIR/redis.log")"

PASSWORD=fuzz-$RANDOM-$RANDOM
printf '%s' "$PASSWORD" >"$WORK_DIR/password"
AUTH=$(printf '%s' "$PASSWORD" | base64)
API_PORT=$(free_port)
export REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
export API_ADDR=127.0.0.1:$API_PORT
export INTERNAL_AUTH_PASSWORD_FILE=$WORK_DIR/password
export MIGRATIONS_FILE=examples/migrations.json
export WORKER_LOCK_TTL_MS=2000
export MIGRATION_WAIT_MS=50
export RUST_LOG=warn
"$BIN_DIR/migration-api" >"$WORK_DIR/api.log" 2>&1 &
API_PID=$!
PIDS+=($API_PID)
"$BIN_DIR/migration-worker" >"$WORK_DIR/worker.log" 2>&1 &
PIDS+=($!)

BASE=http://127.0.0.1:$API_PORT
for _ in $(seq 1 300); do
  kill -0 "$API_PID" 2>/dev/null || fail "migration-api exited at start: $(tail -20 "$WORK_DIR/api.log")"
  [ "$(http_get "$BASE/health")" = 200 ] && break
  sleep 0.1
done
[ "$(http_get "$BASE/health")" = 200 ] || fail "migration-api did not get healthy: $(tail -20 "$WORK_DIR/api.log")"

python3 - "$BASE/internal/openapi.json" "$AUTH" "$WORK_DIR/openapi.json" <<'EOF'
import sys, urllib.request
request = urllib.request.Request(sys.argv[1], headers={"Authorization": sys.argv[2]})
with urllib.request.urlopen(request, timeout=5) as response, open(sys.argv[3], "wb") as out:
    out.write(response.read())
EOF

# ----- the fuzz -----
SEED_ARGS=()
if [ -n "${FUZZ_SEED:-}" ]; then
  SEED_ARGS=(--seed "$FUZZ_SEED")
fi
echo "fuzz-api: fuzzing every route of the document for about ${FUZZ_SECONDS} s (api $BASE, redis port $REDIS_PORT)"
# Runs schemathesis once; its output goes to the terminal and to $1.
fuzz_once() {
  set +e
  (cd "$WORK_DIR" && "$ROOT/$VENV/bin/st" run openapi.json \
    --url "$BASE" \
    --header "Authorization: $AUTH" \
    --checks "$CHECKS" \
    --max-time "$FUZZ_SECONDS" \
    --request-timeout 10 \
    --workers 2 \
    --no-color \
    "${SEED_ARGS[@]}" ${FUZZ_ARGS:-}) 2>&1 | tee "$1"
  local code=${PIPESTATUS[0]}
  set -e
  return "$code"
}

status=0
fuzz_once "$WORK_DIR/st-1.log" || status=$?
# schemathesis itself sometimes crashes while generating data (seen:
# CPython's "AST constructor recursion depth mismatch" inside hypothesis).
# Such a run found no failure of the API; it is run once more without the
# coverage phase (where the crashes were), and a second crash fails the fuzz
# like any failure.
if [ "$status" -ne 0 ] && ! grep -q "= FAILURES =" "$WORK_DIR/st-1.log" \
    && grep -q "Runtime Error" "$WORK_DIR/st-1.log"; then
  echo "fuzz-api: schemathesis crashed without finding an API failure; running it once more, without its coverage phase (where it crashed)"
  status=0
  FUZZ_ARGS="${FUZZ_ARGS:-} --phases examples,fuzzing" fuzz_once "$WORK_DIR/st-2.log" || status=$?
fi

if ! kill -0 "$API_PID" 2>/dev/null; then
  echo "fuzz-api: migration-api died during the fuzz; its log:" >&2
  tail -n 40 "$WORK_DIR/api.log" >&2
  status=1
fi
if grep -q "panicked" "$WORK_DIR/api.log" "$WORK_DIR/worker.log"; then
  echo "fuzz-api: a binary panicked during the fuzz:" >&2
  grep -h -A 5 "panicked" "$WORK_DIR/api.log" "$WORK_DIR/worker.log" >&2
  status=1
fi
if [ "$status" -ne 0 ]; then
  fail "schemathesis found failures (exit $status); see above"
fi
echo "fuzz-api: PASS"
