#!/usr/bin/env bash
# Installs Debian's chromium for the overview-page suite (Debian 12, as root). The test drives it
# headless with playwright-core (an npm dev dependency) at executablePath=/usr/bin/chromium: no
# browser is downloaded. Nothing is started here.
# Idempotent: only installs what is missing. Progress to stderr, a one-line summary to stdout.
set -euo pipefail

started_at=$(date +%s)
log() { printf 'testbed/chromium: %s\n' "$*" >&2; }
die() { printf 'testbed/chromium: ERROR: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

if ! have chromium; then
  [[ "$(id -u)" -eq 0 ]] || die "installing chromium needs root"
  have apt-get || die "apt-get not found: this script supports Debian only"
  log "installing chromium with apt (--no-install-recommends)"
  apt-get update -qq >&2 || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >&2 || die "apt-get install chromium failed"
fi
have chromium || die "chromium still not found after install"
printf 'testbed/chromium: ready in %ss: %s\n' "$(($(date +%s) - started_at))" "$(chromium --version 2>/dev/null | head -n 1)"
