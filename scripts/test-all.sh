#!/usr/bin/env bash
# Sets up everything and runs every suite (`npm run test:all`; CI runs it through .ci/run).
# As root on Debian 12: installs and starts the real engines, installs dependencies, builds, lints,
# runs the unit suite under Node 20 and Node 24, then the integration and e2e suites with every
# engine set up here required (a missing engine fails instead of skipping).
# Fails fast: the first failing step stops the run with a non-zero exit.
#
# Environment:
#   PERSYS_SKIP_TESTBED=1   do not run scripts/testbed/*.sh (engines are managed some other way)
#   PERSYS_TESTBED_DIR      where testbed state and logs go (default /var/tmp/persys-testbed)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Engines: one line per testbed script: "<script in scripts/testbed/> <engines it provides, comma list>".
# Adding an engine is adding its line here; its engines then become required for integration/e2e.
TESTBEDS=(
  "docker.sh docker"
  "libvirt.sh libvirt"
  "prometheus.sh prometheus,pushgateway"
  "nginx.sh nginx"
  "postgres.sh postgres"
  "chromium.sh chromium"
  "systemd.sh systemd"
)

RUN_STARTED=$(date +%s)
STEP_NO=0
STEP_SUMMARY=()
COUNTS_FILE=$(mktemp "${TMPDIR:-/tmp}/persys-test-counts.XXXXXX")
trap 'rm -f "$COUNTS_FILE"' EXIT
export PERSYS_TEST_COUNTS_FILE="$COUNTS_FILE"

say() { printf 'test-all: %s\n' "$*"; }

print_step_summary() {
  local line
  say "step times:"
  for line in "${STEP_SUMMARY[@]+"${STEP_SUMMARY[@]}"}"; do printf '  %s\n' "$line"; done
}

# step NAME COMMAND...: runs one step with a header and its duration; exits on failure.
step() {
  local name=$1
  shift
  STEP_NO=$((STEP_NO + 1))
  printf '\n========== [%d] %s ==========\n' "$STEP_NO" "$name"
  local started rc=0 took
  started=$(date +%s)
  "$@" || rc=$?
  took=$(($(date +%s) - started))
  if ((rc != 0)); then
    STEP_SUMMARY+=("$(printf '%-34s FAILED (exit %d) %5ds' "$name" "$rc" "$took")")
    printf '\n'
    print_step_summary
    say "FAILED at step [$STEP_NO] '$name' (exit $rc after ${took}s); see its output above"
    exit "$rc"
  fi
  STEP_SUMMARY+=("$(printf '%-34s ok %5ds' "$name" "$took")")
  printf -- '---------- [%d] %s: ok in %ds\n' "$STEP_NO" "$name" "$took"
}

# ---- preconditions -----------------------------------------------------------------------------
required_engines=()
for entry in "${TESTBEDS[@]}"; do
  read -r _script engines <<<"$entry"
  required_engines+=("$engines")
done
REQUIRED=$(IFS=,; printf '%s' "${required_engines[*]}")

if [[ "${PERSYS_SKIP_TESTBED:-}" != 1 ]]; then
  if [[ "$(id -u)" -ne 0 ]]; then
    say "ERROR: must run as root (it installs and starts engines with apt and dockerd);"
    say "       set PERSYS_SKIP_TESTBED=1 if the engines ($REQUIRED) are already running"
    exit 1
  fi
  if [[ ! -f /etc/debian_version ]]; then
    say "ERROR: the testbed scripts support Debian only (no /etc/debian_version);"
    say "       set PERSYS_SKIP_TESTBED=1 if the engines ($REQUIRED) are already running"
    exit 1
  fi
fi
command -v node >/dev/null 2>&1 || { say "ERROR: node not found on PATH"; exit 1; }
command -v npm >/dev/null 2>&1 || { say "ERROR: npm not found on PATH"; exit 1; }
say "repo $(pwd); node $(node --version); npm $(npm --version); CI=${CI:-}; required engines: $REQUIRED"

# ---- steps -------------------------------------------------------------------------------------
if [[ "${PERSYS_SKIP_TESTBED:-}" != 1 ]]; then
  for entry in "${TESTBEDS[@]}"; do
    read -r script _engines <<<"$entry"
    step "testbed: $script" bash "scripts/testbed/$script"
  done
else
  say "PERSYS_SKIP_TESTBED=1: not setting up engines"
fi

# node_modules/.package-lock.json is written by npm at the end of every install: it dates node_modules
# (the folder's own mtime only changes when entries are added or removed).
if [[ ! -d node_modules || ! -f node_modules/.package-lock.json \
  || package-lock.json -nt node_modules/.package-lock.json ]]; then
  step "npm ci" npm ci --no-audit --no-fund
else
  say "node_modules is newer than package-lock.json: skipping npm ci"
fi

step "npm run build" npm run build
step "npm run lint" npm run lint

node_major=$(node -p 'process.versions.node.split(".")[0]')
[[ "$node_major" == 20 ]] || say "warning: node on PATH is $(node --version), not Node 20"
step "unit tests (node $(node --version))" env NODE_BIN=node bash scripts/test.sh unit

NODE24_BIN=""
install_node24() { NODE24_BIN=$(bash scripts/testbed/node24.sh); }
step "install node 24" install_node24
step "unit tests (node 24)" env NODE_BIN="$NODE24_BIN" bash scripts/test.sh unit

step "integration + e2e tests" env PERSYS_REQUIRE_ENGINES="$REQUIRED" PERSYS_SKIP_BUILD=1 \
  bash scripts/test.sh integration

# ---- summary -----------------------------------------------------------------------------------
printf '\n'
print_step_summary
read -r passed failed skipped < <(awk '{p += $1; f += $2; s += $3} END {printf "%d %d %d\n", p, f, s}' "$COUNTS_FILE")
say "all $STEP_NO steps passed in $(($(date +%s) - RUN_STARTED))s"
printf 'test-all: %d passed, %d failed, %d skipped\n' "$passed" "$failed" "$skipped"
