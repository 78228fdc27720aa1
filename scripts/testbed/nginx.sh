#!/usr/bin/env bash
# Installs nginx (Debian's nginx-light) for the "static host" suites (Debian 12, as root). Nothing
# is started here: each test writes its own nginx.conf (loopback port, its own TLS cert, access log
# and pid file in its own folder) and stops that nginx by pid.
# Idempotent: only installs what is missing. Progress to stderr, a one-line summary to stdout.
set -euo pipefail

started_at=$(date +%s)
log() { printf 'testbed/nginx: %s\n' "$*" >&2; }
die() { printf 'testbed/nginx: ERROR: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

if ! have nginx; then
  [[ "$(id -u)" -eq 0 ]] || die "installing nginx-light needs root"
  have apt-get || die "apt-get not found: this script supports Debian only"
  log "installing nginx-light with apt"
  apt-get update -qq >&2 || die "apt-get update failed"
  # policy-rc.d keeps the package's init script from starting a system nginx on port 80.
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
  fi
  rc=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light >&2 || rc=$?
  ((own_policy)) && rm -f "$policy"
  ((rc == 0)) || die "apt-get install nginx-light failed (exit $rc)"
fi
have nginx || die "nginx still not found after install"
printf 'testbed/nginx: ready in %ss: %s\n' "$(($(date +%s) - started_at))" "$(nginx -v 2>&1)"
