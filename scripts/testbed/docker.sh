#!/usr/bin/env bash
# Sets up a real Docker Engine for the integration/e2e suites (Debian 12, as root, no systemd):
#   1. installs docker.io + busybox-static with apt if anything is missing,
#   2. starts dockerd in the background (log: $PERSYS_TESTBED_DIR/dockerd.log) unless the socket answers,
#   3. builds the local test images persys-test/busybox:1 and :2 (no registry is reachable here).
# Idempotent: safe to run again; it only does what is missing. Progress goes to stderr,
# a one-line summary to stdout.
set -euo pipefail

TESTBED_DIR="${PERSYS_TESTBED_DIR:-/var/tmp/persys-testbed}"
SOCK=/var/run/docker.sock
# /usr/local/bin/docker on these machines is a client only and may be first on PATH: use Debian's client.
DOCKER_CLI=/usr/bin/docker
IMAGE_1=persys-test/busybox:1
IMAGE_2=persys-test/busybox:2
BUSYBOX_APPLETS=(sh sleep echo cat httpd ls env true false wget nc kill ps id)
START_TIMEOUT_S=60

started_at=$(date +%s)
log() { printf 'testbed/docker: %s\n' "$*" >&2; }
die() { printf 'testbed/docker: ERROR: %s\n' "$*" >&2; exit 1; }

docker_cli() { "$DOCKER_CLI" -H "unix://$SOCK" "$@"; }

ping_ok() {
  local answer
  answer=$(curl -fsS --max-time 2 --unix-socket "$SOCK" http://x/_ping 2>/dev/null) || return 1
  [[ "$answer" == "OK" ]]
}

package_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

need_root() {
  [[ "$(id -u)" -eq 0 ]] || die "$1 needs root (run as root, e.g. in CI or with sudo)"
}

# ---- 1. packages -------------------------------------------------------------------------------
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(dockerd)
[[ -x "$DOCKER_CLI" ]] || missing+=("$DOCKER_CLI")
package_installed busybox-static || missing+=(busybox-static)
# Debian's docker-compose (1.29): the peer the compose runtime's interop test and bench compare with.
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if ((${#missing[@]} > 0)); then
  need_root "installing packages (missing: ${missing[*]})"
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: this script supports Debian only"
  packages=(docker.io busybox-static docker-compose)
  command -v curl >/dev/null 2>&1 || packages+=(curl)
  log "missing: ${missing[*]}; installing ${packages[*]} with apt"
  apt-get update -qq >&2 || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >&2 \
    || die "apt-get install ${packages[*]} failed"
fi
command -v dockerd >/dev/null 2>&1 || die "dockerd still not found after install"
[[ -x "$DOCKER_CLI" ]] || die "$DOCKER_CLI still not found after install"
[[ -x /bin/busybox ]] || die "/bin/busybox (busybox-static) not found after install"

# ---- 2. daemon ---------------------------------------------------------------------------------
mkdir -p "$TESTBED_DIR"
DOCKERD_LOG="$TESTBED_DIR/dockerd.log"
# A dockerd process that is alive (not a zombie left by a killed daemon: PID 1 may not reap it).
live_dockerd() {
  local pid state
  for pid in $(pgrep -x dockerd 2>/dev/null || true); do
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
    [[ -n "$state" && "$state" != Z ]] && return 0
  done
  return 1
}

start_dockerd() {
  need_root "starting dockerd"
  log "starting dockerd (log: $DOCKERD_LOG)"
  printf '\n==== %s: dockerd started by %s ====\n' "$(date -u +%FT%TZ)" "$0" >>"$DOCKERD_LOG"
  # setsid + nohup: own session, survives this script and the shell that ran it.
  setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
  disown || true
}

if ping_ok; then
  log "dockerd already answers on $SOCK"
else
  starts=0
  deadline=$((SECONDS + START_TIMEOUT_S))
  live_dockerd && log "dockerd is running but $SOCK does not answer yet; waiting for it"
  until ping_ok; do
    if ! live_dockerd; then
      # Not running, or it died (e.g. stale state after a crash): (re)start it, at most twice.
      ((starts < 2)) || die "dockerd exited twice without answering; see $DOCKERD_LOG"
      ((starts > 0)) && log "dockerd exited before answering; starting it again"
      start_dockerd
      starts=$((starts + 1))
    fi
    if ((SECONDS >= deadline)); then
      log "last lines of $DOCKERD_LOG:"
      tail -n 30 "$DOCKERD_LOG" >&2 || true
      die "dockerd did not answer on $SOCK within ${START_TIMEOUT_S}s"
    fi
    sleep 0.5
  done
  log "dockerd answers on $SOCK"
fi

# ---- 3. local test images ----------------------------------------------------------------------
image_exists() { docker_cli image inspect "$1" >/dev/null 2>&1; }

rootfs=""
cleanup() { if [[ -n "$rootfs" ]]; then rm -rf "$rootfs"; fi; }
trap cleanup EXIT

make_rootfs() {
  [[ -n "$rootfs" ]] && return 0
  rootfs=$(mktemp -d "${TMPDIR:-/tmp}/persys-busybox-rootfs.XXXXXX")
  mkdir -p "$rootfs"/{bin,etc,tmp,root,proc,sys,dev,var/www}
  chmod 1777 "$rootfs/tmp"
  cp /bin/busybox "$rootfs/bin/busybox"
  local applet
  for applet in "${BUSYBOX_APPLETS[@]}"; do
    ln -sf busybox "$rootfs/bin/$applet"
  done
  printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' \
    >"$rootfs/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$rootfs/etc/group"
}

import_image() { # tag, extra --change ...
  local tag=$1
  shift
  make_rootfs
  log "building $tag"
  tar -C "$rootfs" --owner=0 --group=0 -c . \
    | docker_cli import --change 'CMD ["/bin/sleep","2147483647"]' "$@" - "$tag" >/dev/null \
    || die "docker import of $tag failed"
}

image_exists "$IMAGE_1" || import_image "$IMAGE_1" --change 'LABEL dev.persys.test-image=1'
image_exists "$IMAGE_2" || import_image "$IMAGE_2" --change 'LABEL dev.persys.test-image=2' \
  --change 'ENV PERSYS_TEST_IMAGE=2'

id_1=$(docker_cli image inspect -f '{{.Id}}' "$IMAGE_1")
id_2=$(docker_cli image inspect -f '{{.Id}}' "$IMAGE_2")
[[ "$id_1" != "$id_2" ]] || die "$IMAGE_1 and $IMAGE_2 have the same image id ($id_1); remove both and re-run"

server_version=$(docker_cli version -f '{{.Server.Version}} (API {{.Server.APIVersion}})' 2>/dev/null || echo unknown)
printf 'testbed/docker: ready in %ss: dockerd %s on %s; %s=%s %s=%s\n' \
  "$(($(date +%s) - started_at))" "$server_version" "$SOCK" "$IMAGE_1" "${id_1:7:12}" "$IMAGE_2" "${id_2:7:12}"
