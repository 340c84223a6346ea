#!/usr/bin/env bash
# `make bench` (QUICK=1: `make bench QUICK=1`): the upload-speed table (bench/upload_speed.py),
# the big-file run through ingest (bench/ingest_flow.py), ingest under load (bench/ingest_load.py),
# the pipeline against TikTok's limits (bench/pipeline.py: 1,000 uploads over 100 accounts;
# QUICK: 100 over 10), the CLI's memory (bench/cli_memory.py) and status tracking
# (bench/status_tracking.py: calls and delay per publish by poll schedule). Like `make test`, unless
# KAFKA_BOOTSTRAP_SERVERS / MONGODB_URI / S3_ENDPOINT_URL point at running servers it starts its own
# (scripts/stack.py test-infra, the same servers, ports and lock as `make test`) and stops them on
# exit. Every child of the benchmarks is bounded by a timeout, so the run stops by itself.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
RUN=("$ROOT/.cache/tools/bin/uv" run --no-sync)
TEST_INFRA_DIR="${TEST_INFRA_DIR:-$ROOT/.cache/test-infra}"
quick=()
[ -z "${QUICK:-}" ] || [ "${QUICK}" = 0 ] || quick=(--quick)

# shellcheck source=scripts/test_infra.sh
. "$ROOT/scripts/test_infra.sh"
start_test_infra
failed=()
# One benchmark: announce it, run it bounded, and go on to the next whatever it ended with (a missed
# target or an unfinished run still prints its figures); the run fails at the end if any did.
bench() {
  local what="$1" limit="$2"; shift 2
  echo "bench: $what" >&2
  timeout "$limit" "${RUN[@]}" python "$@" "${quick[@]}" || failed+=("$1 (exit $?)")
}
bench "upload speed (Mongo $MONGODB_URI, S3 $S3_ENDPOINT_URL)" 3600 bench/upload_speed.py
bench "a big file through ingest (Kafka $KAFKA_BOOTSTRAP_SERVERS)" 1800 bench/ingest_flow.py
bench "ingest under load vs a bare producer" 900 bench/ingest_load.py
bench "the pipeline against TikTok's per-token limits" 900 bench/pipeline.py  # its own --timeout bounds it
bench "the CLI streams a file: flat RSS" 900 bench/cli_memory.py
bench "status tracking, learnt schedule vs backoff vs the 2-minute check" 1200 bench/status_tracking.py
if [ "${#failed[@]}" -gt 0 ]; then
  printf 'bench: did not finish or missed its bound: %s\n' "${failed[@]}" >&2
  exit 1
fi
