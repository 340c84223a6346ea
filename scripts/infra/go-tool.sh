# Sourced by install-ferretdb.sh and install-seaweedfs.sh: a Go tool built once into .cache.
# Needs ROOT (the repository) to be set by the caller.

# go_tool_module NAME VERSION BINARY MODULE: sets DEST (.cache/NAME/VERSION) and BIN (its
# bin/BINARY); exits the script when BIN is built already, else enters DEST/module, a throwaway
# Go module named MODULE to add the tool to.
go_tool_module() {
  DEST="$ROOT/.cache/$1/$2"
  BIN="$DEST/bin/$3"
  [ -x "$BIN" ] && exit 0
  mkdir -p "$DEST/module" "$DEST/bin"
  cd "$DEST/module"
  [ -f go.mod ] || go mod init "$4" >/dev/null 2>&1
}

# go_tool_install ARG...: check that the binary just built at BIN.tmp runs (with ARG...), then put
# it in place, so a broken build never stands at BIN.
go_tool_install() {
  "$BIN.tmp" "$@" >/dev/null
  mv "$BIN.tmp" "$BIN"
}
