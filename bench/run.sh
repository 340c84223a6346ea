#!/usr/bin/env bash
# `make bench` (QUICK=1: `make bench QUICK=1`): the upload-speed table (bench/upload_speed.py) and
# the big-file run through ingest (bench/ingest_flow.py). Like `make test`, unless
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

stop_infra() {
  local rc=$?
  "${RUN[@]}" python scripts/stack.py test-infra down --dir "$TEST_INFRA_DIR" || true
  exit "$rc"
}

want=()
[ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ] || want+=(--kafka)
[ -n "${MONGODB_URI:-}" ] || want+=(--mongo)
if [ -z "${S3_ENDPOINT_URL:-}" ]; then
  "$ROOT/scripts/infra/install-seaweedfs.sh"
  want+=(--s3)
fi
if [ "${#want[@]}" -gt 0 ]; then
  mkdir -p "$(dirname "$TEST_INFRA_DIR")"
  if command -v flock >/dev/null; then
    exec 9>"$TEST_INFRA_DIR.lock"
    flock 9  # a `make test` (or another bench) in this checkout uses the same servers: wait for it
  fi
  trap stop_infra EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  exports="$("${RUN[@]}" python scripts/stack.py test-infra up --dir "$TEST_INFRA_DIR" "${want[@]}")"
  eval "$exports"
fi
echo "bench: upload speed (Mongo $MONGODB_URI, S3 $S3_ENDPOINT_URL)" >&2
timeout 3600 "${RUN[@]}" python bench/upload_speed.py "${quick[@]}"
echo "bench: a big file through ingest (Kafka $KAFKA_BOOTSTRAP_SERVERS)" >&2
timeout 1800 "${RUN[@]}" python bench/ingest_flow.py "${quick[@]}"
