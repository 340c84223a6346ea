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
echo "bench: upload speed (Mongo $MONGODB_URI, S3 $S3_ENDPOINT_URL)" >&2
timeout 3600 "${RUN[@]}" python bench/upload_speed.py "${quick[@]}"
echo "bench: a big file through ingest (Kafka $KAFKA_BOOTSTRAP_SERVERS)" >&2
timeout 1800 "${RUN[@]}" python bench/ingest_flow.py "${quick[@]}"
timeout 900 "${RUN[@]}" python bench/ingest_load.py "${quick[@]}"  # ingest under load vs a bare producer
echo "bench: the pipeline against TikTok's per-token limits" >&2
timeout 900 "${RUN[@]}" python bench/pipeline.py "${quick[@]}"  # its own --timeout bounds the run itself
timeout 900 "${RUN[@]}" python bench/cli_memory.py "${quick[@]}"  # `reelay upload FILE` streams: flat RSS
echo "bench: status tracking, learnt schedule vs backoff vs the 2-minute check (Kafka $KAFKA_BOOTSTRAP_SERVERS)" >&2
timeout 1200 "${RUN[@]}" python bench/status_tracking.py "${quick[@]}"
