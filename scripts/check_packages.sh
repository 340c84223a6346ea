#!/usr/bin/env bash
# Each workspace package installs and imports alone: for every member, `uv sync --package NAME`
# (exactly uv.lock, no dev group) into a throwaway environment, then import its entry module and
# every other module of its import package there. An import that the package does not declare,
# and that the shared .venv happens to provide, fails here. uv's cache makes each sync a matter of
# links, so the whole check takes seconds.
# Usage: scripts/check_packages.sh [NAME ...]   (default: every member; NAME is the distribution name)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
UV="${UV:-$ROOT/.cache/tools/bin/uv}"
# uv must not fetch a Python of its own (only the package registries are reachable).
export UV_PYTHON_DOWNLOADS="${UV_PYTHON_DOWNLOADS:-never}"

# distribution name -> entry module (the one its console script or `python -m` runs)
declare -A ENTRY=(
  [reelay-common]=reelay_common
  [reelay-testing]=reelay_testing
  [reelay-ingest]=reelay_ingest.__main__
  [reelay-uploader]=reelay_uploader.__main__
  [reelay-status-poller]=reelay_status_poller.__main__
  [tiktok-sandbox]=tiktok_sandbox.__main__
  [reelay-cli]=reelay_cli.__main__
)
ORDER=(reelay-common reelay-testing reelay-ingest reelay-uploader reelay-status-poller tiktok-sandbox reelay-cli)
if [ "$#" -gt 0 ]; then ORDER=("$@"); fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/reelay-check-packages.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# Imports the entry module first (what a deployment runs), then every module of the package, so an
# undeclared import in a module the entry point does not reach is caught too.
IMPORT_ALL='
import importlib, pkgutil, sys
entry = sys.argv[1]
importlib.import_module(entry)
top = importlib.import_module(entry.split(".")[0])
names = [m.name for m in pkgutil.walk_packages(top.__path__, top.__name__ + ".")]
for name in names:
    importlib.import_module(name)
print(f"{len(names) + 1} modules")
'

failed=()
for name in "${ORDER[@]}"; do
  entry="${ENTRY[$name]:-}"
  if [ -z "$entry" ]; then
    echo "check_packages: unknown package $name (known: ${!ENTRY[*]})" >&2
    exit 2
  fi
  env_dir="$WORK/$name"
  # --frozen: exactly uv.lock; --no-dev: only what the package itself declares. The sync output
  # stays in a file and is shown only when it fails.
  if ! (cd "$ROOT" && UV_PROJECT_ENVIRONMENT="$env_dir" "$UV" sync --package "$name" --frozen --no-dev \
          --quiet >"$WORK/$name.log" 2>&1); then
    echo "check_packages: $name: uv sync failed" >&2
    cat "$WORK/$name.log" >&2
    failed+=("$name")
    continue
  fi
  # -I: isolated, so neither the current directory nor PYTHONPATH can supply a module.
  if out="$(cd "$WORK" && "$env_dir/bin/python" -I -c "$IMPORT_ALL" "$entry" 2>&1)"; then
    echo "check_packages: $name: $entry imports alone ($out)"
  else
    echo "check_packages: $name: importing $entry in its own environment failed:" >&2
    echo "$out" >&2
    failed+=("$name")
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "check_packages: FAILED: ${failed[*]}" >&2
  exit 1
fi
