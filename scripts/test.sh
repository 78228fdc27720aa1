#!/usr/bin/env bash
# Runs the project's test suites with Node's built-in test runner and tsx.
#
#   bash scripts/test.sh MODE [extra node/test-runner args...]
#
# MODE:
#   unit         test/unit/**/*.test.ts (parallel files)
#   integration  npm run build, then test/integration + test/e2e one file at a time
#   e2e          npm run build, then test/e2e one file at a time
#   faults       npm run build, then test/faults one file at a time (kill -9, full disks, ...)
#   quick        unit, then integration + e2e (the default `npm test`); integration suites whose
#                engine is missing skip themselves unless PERSYS_REQUIRE_ENGINES names it
#
# Environment:
#   NODE_BIN                 node binary to run the tests with (default: node on PATH)
#   PERSYS_REQUIRE_ENGINES   comma list of engines (or "all") whose absence fails instead of skips
#   PERSYS_SKIP_BUILD=1      do not run `npm run build` before integration/e2e (already built)
#   PERSYS_TEST_TIMEOUT_MS   node --test-timeout (default 1200000 = 20 min; 0 = none). Each test file
#                            runs as one top-level test, so this bounds every file as a whole.
#   PERSYS_TEST_COUNTS_FILE  if set, one "pass fail skipped" line per runner invocation is appended
# Extra args go to node before the file list, e.g. --test-name-pattern=reconcile.
# A directory without *.test.ts files is skipped with a message. Exit status is non-zero if any
# runner invocation failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage() { printf 'usage: bash scripts/test.sh quick|unit|integration|e2e|faults [extra args...]\n' >&2; }
log() { printf 'test.sh: %s\n' "$*" >&2; }

if (($# < 1)); then usage; exit 2; fi
MODE=$1
shift
EXTRA_ARGS=("$@")
NODE_BIN="${NODE_BIN:-node}"
TIMEOUT_MS="${PERSYS_TEST_TIMEOUT_MS:-1200000}"

case "$MODE" in
  quick | unit | integration | e2e | faults) ;;
  *) usage; exit 2 ;;
esac

command -v "$NODE_BIN" >/dev/null 2>&1 || { log "node binary '$NODE_BIN' not found (NODE_BIN)"; exit 2; }
[[ -d node_modules/tsx ]] || { log "node_modules/tsx missing: run npm ci first"; exit 2; }

# If the caller chose reporters, leave reporting to them and do not add our counting reporter.
own_reporter=1
for arg in "${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}"; do
  [[ "$arg" == --test-reporter* ]] && own_reporter=0
done

TMP_DIR=$(mktemp -d "${TMPDIR:-/tmp}/persys-test.XXXXXX")
trap 'rm -rf "$TMP_DIR"' EXIT

total_pass=0 total_fail=0 total_skip=0 counted=0 failed_runs=0 built=0

find_tests() { # dirs... -> sorted file list on stdout
  local dir
  for dir in "$@"; do
    [[ -d "$dir" ]] && find "$dir" -type f -name '*.test.ts'
  done | LC_ALL=C sort
}

tap_count() { # key file -> number after "# key N" (last occurrence), 0 if absent
  local n
  n=$(sed -n "s/^# $1 \([0-9][0-9]*\)\$/\1/p" "$2" | tail -n 1)
  printf '%s' "${n:-0}"
}

build_once() {
  ((built)) && return 0
  built=1
  if [[ "${PERSYS_SKIP_BUILD:-}" == 1 ]]; then
    log "PERSYS_SKIP_BUILD=1: not building"
    return 0
  fi
  log "npm run build"
  npm run build --silent </dev/null
}

# run_suite LABEL "DIR [DIR...]" [node args...]
run_suite() {
  local label=$1 dirs=$2
  shift 2
  local -a files dir_list node_args reporter_args=()
  read -r -a dir_list <<<"$dirs"
  mapfile -t files < <(find_tests "${dir_list[@]}")
  if ((${#files[@]} == 0)); then
    log "$label: no *.test.ts files in ${dir_list[*]}; skipping"
    return 0
  fi
  if [[ "$label" != unit ]]; then
    build_once || { log "$label: npm run build failed"; failed_runs=$((failed_runs + 1)); return 0; }
  fi
  local tap="$TMP_DIR/$label.tap"
  if ((own_reporter)); then
    reporter_args=(--test-reporter=spec --test-reporter-destination=stdout
      --test-reporter=tap "--test-reporter-destination=$tap")
  fi
  node_args=(--import tsx --test "${reporter_args[@]+"${reporter_args[@]}"}")
  if [[ "$TIMEOUT_MS" != 0 ]]; then node_args+=("--test-timeout=$TIMEOUT_MS"); fi
  node_args+=("$@")
  log "$label: $("$NODE_BIN" --version) running ${#files[@]} file(s) from ${dir_list[*]}"
  local rc=0
  "$NODE_BIN" "${node_args[@]}" "${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}" "${files[@]}" </dev/null || rc=$?
  if ((own_reporter)) && [[ -f "$tap" ]]; then
    local pass fail cancelled skipped todo
    pass=$(tap_count pass "$tap")
    fail=$(tap_count fail "$tap")
    cancelled=$(tap_count cancelled "$tap")
    # Node's "# skipped" leaves out skipped suites (describe with { skip }); count every SKIP
    # directive instead: skipped tests plus skipped suites.
    skipped=$(grep -cE '^[[:space:]]*ok [0-9]+ - .*[^\\]# SKIP' "$tap" || true)
    todo=$(tap_count todo "$tap")
    fail=$((fail + cancelled))
    skipped=$((skipped + todo))
    total_pass=$((total_pass + pass)) total_fail=$((total_fail + fail)) total_skip=$((total_skip + skipped))
    counted=1
    if [[ -n "${PERSYS_TEST_COUNTS_FILE:-}" ]]; then
      printf '%s %s %s\n' "$pass" "$fail" "$skipped" >>"$PERSYS_TEST_COUNTS_FILE"
    fi
  fi
  if ((rc != 0)); then
    log "$label: test runner exited with status $rc"
    failed_runs=$((failed_runs + 1))
  fi
}

case "$MODE" in
  unit)
    run_suite unit "test/unit"
    ;;
  integration)
    run_suite integration "test/integration test/e2e" --test-concurrency=1
    ;;
  e2e)
    run_suite e2e "test/e2e" --test-concurrency=1
    ;;
  faults)
    run_suite faults "test/faults" --test-concurrency=1
    ;;
  quick)
    run_suite unit "test/unit"
    run_suite integration "test/integration test/e2e" --test-concurrency=1
    ;;
esac

if ((counted)); then
  printf '%s: %d passed, %d failed, %d skipped\n' "$MODE" "$total_pass" "$total_fail" "$total_skip"
fi
if ((failed_runs > 0)); then
  log "$MODE: $failed_runs test run(s) failed"
  exit 1
fi
