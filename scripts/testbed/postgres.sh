#!/usr/bin/env bash
# Installs Debian's PostgreSQL and starts one cluster by hand (no systemd) for the `serve --store
# postgres://` suites (Debian 12, as root): data in $PERSYS_TESTBED_DIR/postgres (owned by the
# postgres user), listening on 127.0.0.1:$PERSYS_POSTGRES_PORT only (default 55432), password
# auth (scram) for role persys. The connection URL is written to $PERSYS_TESTBED_DIR/postgres.url
# (mode 0600). Each test creates its own database in it and drops it afterwards.
# Idempotent: installs what is missing, initialises once, starts the cluster if it is not running.
set -euo pipefail

started_at=$(date +%s)
log() { printf 'testbed/postgres: %s\n' "$*" >&2; }
die() { printf 'testbed/postgres: ERROR: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

TESTBED_DIR=${PERSYS_TESTBED_DIR:-/var/tmp/persys-testbed}
PORT=${PERSYS_POSTGRES_PORT:-55432}
DATA=$TESTBED_DIR/postgres
URL_FILE=$TESTBED_DIR/postgres.url

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

if [[ -z "$(pg_bin)" || ! -x "$(pg_bin)/initdb" ]]; then
  [[ "$(id -u)" -eq 0 ]] || die "installing postgresql needs root"
  have apt-get || die "apt-get not found: this script supports Debian only"
  log "installing postgresql with apt"
  apt-get update -qq >&2 || die "apt-get update failed"
  # policy-rc.d keeps the package from starting (and creating) the system cluster on port 5432.
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
  fi
  rc=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >&2 || rc=$?
  ((own_policy)) && rm -f "$policy"
  ((rc == 0)) || die "apt-get install postgresql failed (exit $rc)"
fi
BIN=$(pg_bin)
[[ -x "$BIN/pg_ctl" ]] || die "pg_ctl not found under /usr/lib/postgresql/*/bin after install"
id postgres >/dev/null 2>&1 || die "no postgres user (the postgresql package creates it)"
as_pg() { su postgres -s /bin/sh -c "$*"; }

mkdir -p "$TESTBED_DIR"
if [[ ! -f "$DATA/PG_VERSION" ]]; then
  log "initialising a cluster in $DATA"
  install -d -o postgres -g postgres -m 0700 "$DATA"
  pwfile=$(mktemp)
  password=$(head -c 24 /dev/urandom | base64 | tr -d '/+=' | head -c 24)
  printf '%s\n' "$password" >"$pwfile"
  chown postgres "$pwfile"
  as_pg "'$BIN/initdb' -D '$DATA' -U postgres --auth-local=peer --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null"
  rm -f "$pwfile"
  {
    echo "listen_addresses = '127.0.0.1'"
    echo "port = $PORT"
    echo "unix_socket_directories = '$DATA'"
    echo "max_connections = 200"
    echo "fsync = on"
  } >>"$DATA/postgresql.conf"
  printf '%s\n' "$password" >"$DATA/.persys-password"
  chown postgres "$DATA/.persys-password"
  chmod 600 "$DATA/.persys-password"
fi

if ! as_pg "'$BIN/pg_ctl' -D '$DATA' status" >/dev/null 2>&1; then
  log "starting the cluster on 127.0.0.1:$PORT"
  as_pg "'$BIN/pg_ctl' -D '$DATA' -l '$DATA/server.log' -w -t 60 start" >&2 || die "pg_ctl start failed; see $DATA/server.log"
fi

password=$(cat "$DATA/.persys-password")
psql_pg() { as_pg "psql -h '$DATA' -p $PORT -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA $*"; }
# Role persys may create databases (one per test run) and nothing else.
if [[ "$(psql_pg "-c \"SELECT 1 FROM pg_roles WHERE rolname = 'persys'\"")" != 1 ]]; then
  psql_pg "-c \"CREATE ROLE persys LOGIN CREATEDB PASSWORD '$password'\"" >&2
fi
if [[ "$(psql_pg "-c \"SELECT 1 FROM pg_database WHERE datname = 'persys'\"")" != 1 ]]; then
  psql_pg "-c 'CREATE DATABASE persys OWNER persys'" >&2
fi
umask 077
printf 'postgres://persys:%s@127.0.0.1:%s/persys\n' "$password" "$PORT" >"$URL_FILE"
chmod 600 "$URL_FILE"
printf 'testbed/postgres: ready in %ss: %s on 127.0.0.1:%s, URL in %s\n' \
  "$(($(date +%s) - started_at))" "$("$BIN/postgres" --version)" "$PORT" "$URL_FILE"
