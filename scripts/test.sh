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

# shellcheck source=scripts/test_infra.sh
. "$ROOT/scripts/test_infra.sh"
start_test_infra
echo "test: integration and e2e tests (Kafka $KAFKA_BOOTSTRAP_SERVERS, Mongo $MONGODB_URI, S3 $S3_ENDPOINT_URL)" >&2
run_pytest tests/integration tests/e2e -q
