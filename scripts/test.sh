#!/usr/bin/env bash
# The test suite: every unit test and every end-to-end test of the workspace.
#
#   scripts/test.sh            # all tests
#   scripts/test.sh -- --nocapture   # extra arguments go to `cargo test`
#   FUZZ_API=0 scripts/test.sh       # without the API fuzz (scripts/fuzz-api.sh)
#
# Works on a fresh Debian machine with only the Rust toolchain: installs
# `redis-server` with apt-get when it is missing (without starting the
# system service). The tests start their own private redis-server on free
# ports in temp dirs; nothing here uses, or flushes, the Redis on port 6379.
#
# The output keeps cargo's `test result:` summary lines: CI reads them.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "scripts/test.sh: need root (or sudo) to install redis-server" >&2
    exit 1
  fi
}

install_redis_server() {
  echo "scripts/test.sh: redis-server not found; installing it with apt-get"
  # Keep the package from starting a system Redis on port 6379: the tests
  # start their own servers. policy-rc.d (exit 101 = "do not start") is
  # honoured by invoke-rc.d and deb-systemd-invoke; only added if absent.
  local policy=/usr/sbin/policy-rc.d added_policy=no
  if [ ! -e "$policy" ]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod +x $policy"
    added_policy=yes
  fi
  local status=0
  as_root apt-get update || status=$?
  if [ "$status" -eq 0 ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server || status=$?
  fi
  if [ "$added_policy" = yes ]; then
    as_root rm -f "$policy"
  fi
  if [ "$status" -ne 0 ]; then
    echo "scripts/test.sh: installing redis-server failed (exit $status)" >&2
    exit "$status"
  fi
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "scripts/test.sh: redis-server still not on PATH after apt-get install" >&2
    exit 1
  fi
}

if ! command -v redis-server >/dev/null 2>&1; then
  install_redis_server
fi
echo "scripts/test.sh: using $(redis-server --version)"

# The end-to-end tests run the real binaries from the target dir; build them
# first (the harness would otherwise build them from inside the first test).
cargo build --workspace --bins
# --no-fail-fast: every test binary runs and prints its summary line, so
# one failing file does not hide the results of the others.
status=0
cargo test --workspace --no-fail-fast "$@" || status=$?

# The property-based fuzz of every route of the OpenAPI document (about two
# minutes; FUZZ_API=0 skips it). It runs even when a test failed, so that
# both verdicts are printed; the exit code is non-zero if either failed.
if [ "${FUZZ_API:-1}" != 0 ]; then
  bash scripts/fuzz-api.sh || status=$?
fi
exit "$status"
