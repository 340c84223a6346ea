#!/usr/bin/env bash
# The pytest part of `make test`: unit tests, then integration + e2e tests against real Kafka,
# FerretDB and SeaweedFS (S3). Unless KAFKA_BOOTSTRAP_SERVERS / MONGODB_URI / S3_ENDPOINT_URL point at
# running servers, it starts its own (127.0.0.1:29092, 127.0.0.1:27217 and S3 on 127.0.0.1:28333, data
# in .cache/test-infra, wiped each run) and stops them on exit, failure or interrupt. pytest's "no tests collected" (exit 5) counts as a failure.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
UV="$ROOT/.cache/tools/bin/uv"
RUN=("$UV" run --no-sync)
TEST_INFRA_DIR="${TEST_INFRA_DIR:-$ROOT/.cache/test-infra}"

run_pytest() {
  local rc=0
  "${RUN[@]}" pytest "$@" || rc=$?
  if [ "$rc" -eq 5 ]; then
    echo "test: pytest collected no tests in $* (a failure: every tier must test something)" >&2
    return 1
  fi
  return "$rc"
}

echo "test: unit tests" >&2
run_pytest tests/unit -q

stop_infra() {
  local rc=$?
  echo "test: stopping the test infrastructure" >&2
  "${RUN[@]}" python scripts/stack.py test-infra down --dir "$TEST_INFRA_DIR" || true
  exit "$rc"
}

want=()
[ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ] || want+=(--kafka)
[ -n "${MONGODB_URI:-}" ] || want+=(--mongo)
if [ -z "${S3_ENDPOINT_URL:-}" ]; then
  "$ROOT/scripts/infra/install-seaweedfs.sh"  # cached after the first build
  want+=(--s3)
fi
if [ "${#want[@]}" -gt 0 ]; then
  # Two `make test` runs in one checkout would share the ports and data dir and wipe each other's
  # servers: the second waits for the first.
  mkdir -p "$(dirname "$TEST_INFRA_DIR")"
  if command -v flock >/dev/null; then
    exec 9>"$TEST_INFRA_DIR.lock"
    if ! flock -n 9; then
      echo "test: another make test in this checkout holds the test infrastructure; waiting for it" >&2
      flock 9
    fi
  fi
  trap stop_infra EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  # An assignment keeps the command's status, so a failed start stops the run (set -e).
  exports="$("${RUN[@]}" python scripts/stack.py test-infra up --dir "$TEST_INFRA_DIR" "${want[@]}")"
  eval "$exports"
fi
echo "test: integration and e2e tests (Kafka $KAFKA_BOOTSTRAP_SERVERS, Mongo $MONGODB_URI, S3 $S3_ENDPOINT_URL)" >&2
run_pytest tests/integration tests/e2e -q
