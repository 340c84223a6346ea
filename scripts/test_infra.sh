# Sourced by scripts/test.sh (`make test`) and bench/run.sh (`make bench`): `start_test_infra`
# starts the servers the environment does not point at (Kafka unless KAFKA_BOOTSTRAP_SERVERS,
# FerretDB unless MONGODB_URI, SeaweedFS's S3 unless S3_ENDPOINT_URL: 127.0.0.1:29092, :27217 and
# :28333, data in $TEST_INFRA_DIR, wiped each run), exports their addresses, and stops them on exit,
# failure or interrupt. Needs ROOT, RUN (the uv run command as an array) and TEST_INFRA_DIR.

stop_test_infra() {
  local rc=$?
  echo "stopping the test infrastructure" >&2
  "${RUN[@]}" python "$ROOT/scripts/stack.py" test-infra down --dir "$TEST_INFRA_DIR" || true
  exit "$rc"
}

start_test_infra() {
  local want=()
  [ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ] || want+=(--kafka)
  [ -n "${MONGODB_URI:-}" ] || want+=(--mongo)
  if [ -z "${S3_ENDPOINT_URL:-}" ]; then
    "$ROOT/scripts/infra/install-seaweedfs.sh"  # cached after the first build
    want+=(--s3)
  fi
  [ "${#want[@]}" -gt 0 ] || return 0
  # Two runs in one checkout would share the ports and data dir and wipe each other's servers:
  # the second waits for the first.
  mkdir -p "$(dirname "$TEST_INFRA_DIR")"
  if command -v flock >/dev/null; then
    exec 9>"$TEST_INFRA_DIR.lock"
    if ! flock -n 9; then
      echo "another run in this checkout holds the test infrastructure; waiting for it" >&2
      flock 9
    fi
  fi
  trap stop_test_infra EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  # An assignment keeps the command's status, so a failed start stops the run (set -e).
  local exports
  exports="$("${RUN[@]}" python "$ROOT/scripts/stack.py" test-infra up --dir "$TEST_INFRA_DIR" "${want[@]}")"
  eval "$exports"
}
