#!/usr/bin/env bash
# Installs the pinned uv into .cache/tools (no global install) and syncs the workspace venv from uv.lock.
#
# A fresh machine has Python 3.11 and the package registries, nothing else: uv comes from PyPI into a
# private venv, and uv then builds .venv with every workspace member and the dev tools.
# Usage: scripts/bootstrap.sh [--uv-only]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
UV_VERSION="${UV_VERSION:-0.13.9}"
TOOLS="$ROOT/.cache/tools"
UV="$TOOLS/bin/uv"
PYTHON="${PYTHON:-python3}"
# uv would try to download a Python when it finds none; here only the registries are reachable, so
# say so plainly instead (an explicit UV_PYTHON_DOWNLOADS from the caller wins).
export UV_PYTHON_DOWNLOADS="${UV_PYTHON_DOWNLOADS:-never}"

installed_version() { "$UV" --version 2>/dev/null | awk '{print $2}'; }

if [ ! -x "$UV" ] || [ "$(installed_version)" != "$UV_VERSION" ]; then
  echo "bootstrap: installing uv $UV_VERSION into .cache/tools" >&2
  rm -rf "$TOOLS"
  "$PYTHON" -m venv "$TOOLS"
  "$TOOLS/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
  [ "$(installed_version)" = "$UV_VERSION" ] || { echo "bootstrap: uv $UV_VERSION did not install" >&2; exit 1; }
fi
[ "${1:-}" = "--uv-only" ] && exit 0

cd "$ROOT"
# --frozen: install exactly what uv.lock says (it is committed); never re-resolve during make up/test.
"$UV" sync --all-packages --frozen --quiet
