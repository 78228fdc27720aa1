#!/usr/bin/env bash
# Installs the real Prometheus peers for the metrics integration suites (Debian 12, as root):
# prometheus, prometheus-pushgateway and promtool (shipped in the prometheus package), with
# --no-install-recommends. Nothing is started here: each test starts its own prometheus /
# pushgateway on a loopback port with its own data directory and stops it by pid.
# Idempotent: only installs what is missing. Progress goes to stderr, a one-line summary to stdout.
set -euo pipefail

started_at=$(date +%s)
log() { printf 'testbed/prometheus: %s\n' "$*" >&2; }
die() { printf 'testbed/prometheus: ERROR: %s\n' "$*" >&2; exit 1; }

have() { command -v "$1" >/dev/null 2>&1; }

missing=()
have prometheus || missing+=(prometheus)
have promtool || missing+=(promtool)
have prometheus-pushgateway || missing+=(prometheus-pushgateway)
if ((${#missing[@]} > 0)); then
  [[ "$(id -u)" -eq 0 ]] || die "installing ${missing[*]} needs root"
  have apt-get || die "apt-get not found: this script supports Debian only"
  log "missing: ${missing[*]}; installing prometheus prometheus-pushgateway with apt"
  apt-get update -qq >&2 || die "apt-get update failed"
  # policy-rc.d keeps the packages' init scripts from starting anything during the install.
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
  fi
  rc=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus prometheus-pushgateway >&2 || rc=$?
  ((own_policy)) && rm -f "$policy"
  ((rc == 0)) || die "apt-get install prometheus prometheus-pushgateway failed (exit $rc)"
fi
for bin in prometheus promtool prometheus-pushgateway; do
  have "$bin" || die "$bin still not found after install"
done

prom_version=$(prometheus --version 2>&1 | head -n 1 | awk '{print $3}')
pgw_version=$(prometheus-pushgateway --version 2>&1 | head -n 1 | awk '{print $3}')
printf 'testbed/prometheus: ready in %ss: prometheus %s, pushgateway %s, promtool at %s\n' \
  "$(($(date +%s) - started_at))" "$prom_version" "$pgw_version" "$(command -v promtool)"
