#!/usr/bin/env bash
# Builds SeaweedFS's `weed` (an S3-compatible object store) from the Go module proxy into .cache/seaweedfs.
#
# The module's go.mod has a `replace` (go-bip39 => cosmos/go-bip39), so `go install …@version`
# refuses it. What works: a throwaway module with the same replace, the tool added to it, then
# `go build` of the tool. Downloads take minutes and the build ~3.5 min on 2 cores: cache it.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SEAWEEDFS_VERSION="${SEAWEEDFS_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}"
# shellcheck source=scripts/infra/go-tool.sh
. "$ROOT/scripts/infra/go-tool.sh"
go_tool_module seaweedfs "$SEAWEEDFS_VERSION" weed local/weedtool
echo "install-seaweedfs: building SeaweedFS $SEAWEEDFS_VERSION (the first build takes several minutes)" >&2
go mod edit -replace github.com/tyler-smith/go-bip39=github.com/cosmos/go-bip39@v1.0.0
go get -tool "github.com/seaweedfs/seaweedfs/weed@$SEAWEEDFS_VERSION"
go build -o "$BIN.tmp" github.com/seaweedfs/seaweedfs/weed
go_tool_install version
