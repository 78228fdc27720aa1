#!/usr/bin/env bash
# Sets up a real libvirtd + QEMU for the VM integration/e2e suites (Debian 12, as root, no systemd):
#   1. installs libvirt, QEMU, qemu-img, dnsmasq, genisoimage, a Debian kernel (the TCG test guest
#      boots it directly), libxml2-utils (virt-xml-validate), busybox-static (the guest's userland),
#      openssh-client (ssh-keygen checks our fingerprints) with apt if anything is missing,
#   2. starts virtlogd and libvirtd as daemons unless `virsh -c qemu:///system version` already answers.
# Idempotent: safe to run again; it only does what is missing. Progress goes to stderr,
# a one-line summary to stdout.
set -euo pipefail

TESTBED_DIR="${PERSYS_TESTBED_DIR:-/var/tmp/persys-testbed}"
URI=qemu:///system
START_TIMEOUT_S=60
PACKAGES=(libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils dnsmasq-base genisoimage
  linux-image-amd64 libxml2-utils busybox-static openssh-client kmod)

started_at=$(date +%s)
log() { printf 'testbed/libvirt: %s\n' "$*" >&2; }
die() { printf 'testbed/libvirt: ERROR: %s\n' "$*" >&2; exit 1; }

package_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}
need_root() {
  [[ "$(id -u)" -eq 0 ]] || die "$1 needs root (run as root, e.g. in CI or with sudo)"
}

# ---- 1. packages -------------------------------------------------------------------------------
missing=()
for p in "${PACKAGES[@]}"; do
  package_installed "$p" || missing+=("$p")
done
if ((${#missing[@]} > 0)); then
  need_root "installing packages (missing: ${missing[*]})"
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: this script supports Debian only"
  log "missing: ${missing[*]}; installing with apt (--no-install-recommends)"
  apt-get update -qq >&2 || die "apt-get update failed"
  NEEDRESTART_SUSPEND=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
    || die "apt-get install ${missing[*]} failed"
fi
for bin in virsh libvirtd virtlogd qemu-img genisoimage virt-xml-validate ssh-keygen; do
  command -v "$bin" >/dev/null 2>&1 || [[ -x "/usr/sbin/$bin" ]] || die "$bin still not found after install"
done
command -v qemu-system-x86_64 >/dev/null 2>&1 || die "qemu-system-x86_64 not found after install"
compgen -G '/boot/vmlinuz-*' >/dev/null || die "no /boot/vmlinuz-* after installing linux-image-amd64"

# ---- 2. daemons --------------------------------------------------------------------------------
mkdir -p "$TESTBED_DIR"
# A process of that name that is alive (not a zombie: PID 1 may not reap it).
live() {
  local pid state
  for pid in $(pgrep -x "$1" 2>/dev/null || true); do
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
    [[ -n "$state" && "$state" != Z ]] && return 0
  done
  return 1
}
answers() { virsh -c "$URI" version >/dev/null 2>&1; }

if ! live virtlogd; then
  need_root "starting virtlogd"
  log "starting virtlogd"
  # Without virtlogd, `virsh start` fails: "Failed to connect socket to '/var/run/libvirt/virtlogd-sock'".
  virtlogd -d || die "virtlogd -d failed"
fi

if answers; then
  log "libvirtd already answers on $URI"
else
  need_root "starting libvirtd"
  starts=0
  deadline=$((SECONDS + START_TIMEOUT_S))
  until answers; do
    if ! live libvirtd; then
      ((starts < 2)) || die "libvirtd exited twice without answering (virsh -c $URI version)"
      log "starting libvirtd"
      libvirtd -d || log "libvirtd -d exited with status $?"
      starts=$((starts + 1))
    fi
    if ((SECONDS >= deadline)); then
      virsh -c "$URI" version >&2 || true
      die "libvirtd did not answer on $URI within ${START_TIMEOUT_S}s"
    fi
    sleep 0.5
  done
  log "libvirtd answers on $URI"
fi

version=$(virsh -c "$URI" version --daemon 2>/dev/null | sed -n 's/^Running against daemon: *//p' | head -n 1)
kernel=$(find /boot -maxdepth 1 -name 'vmlinuz-*' -printf '%f\n' | sort -V | tail -n 1)
printf 'testbed/libvirt: ready in %ss: libvirtd %s on %s; guest kernel %s\n' \
  "$(($(date +%s) - started_at))" "${version:-unknown}" "$URI" "$kernel"
