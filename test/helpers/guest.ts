/**
 * A tiny real guest for the libvirt suites (../shared/testbed.md): the host's Debian kernel, booted
 * directly by QEMU (TCG), with an initramfs built here from busybox-static and the kernel modules the
 * guest needs (virtio net/blk, the IDE cdrom path, isofs, the ACPI power button). Its /init:
 *   - mounts the NoCloud seed (the cdrom labelled cidata), prints what it read to the serial console
 *     (`persys-guest: instance-id=... local-hostname=...`),
 *   - brings eth0 up and asks for a DHCP lease with `udhcpc -x hostname:<local-hostname>`, so the
 *     lease on the host (`virsh net-dhcp-leases`) proves the seed was attached and readable,
 *   - powers off on an ACPI power-button press (busybox acpid), so graceful shutdown can be tested.
 * Kernel command-line switches make it misbehave on purpose: `persys.noacpi` (ignores the power
 * button: shutdown must fall back to destroy), `persys.nodhcp` (never gets an address: VM_NO_IP).
 *
 * Built at test time into a cache directory (never committed): PERSYS_TEST_CACHE_DIR, default
 * <tmpdir>/persys-test-cache. The archive name carries a hash of its inputs, so a changed /init or
 * kernel builds a new one. Everything is written world-readable: QEMU runs as libvirt-qemu.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, mkdir, readdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';

const run = promisify(execFile);

/** Modules the guest loads, in an order that satisfies their dependencies (expanded with modprobe). */
const GUEST_MODULES = ['virtio_pci', 'virtio_net', 'virtio_blk', 'sr_mod', 'ata_piix', 'isofs', 'button', 'evdev'];

const BUSYBOX_APPLETS = [
  'sh', 'mount', 'umount', 'insmod', 'ip', 'ifconfig', 'udhcpc', 'sed', 'cat', 'echo', 'sleep', 'mkdir',
  'ls', 'poweroff', 'acpid', 'hostname', 'grep', 'head', 'sync', 'reboot', 'halt', 'route', 'true',
];

const INIT = String.raw`#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
say() { echo "persys-guest: $*" > /dev/ttyS0; }
say "booted kernel $(cat /proc/sys/kernel/osrelease)"
for m in $(cat /etc/modules.order); do insmod "/lib/modules/$m" 2>/dev/null; done
host=persys-guest
iid=unknown
mkdir -p /seed
i=0
while [ $i -lt 50 ]; do
  if [ -b /dev/sr0 ] && mount -t iso9660 -o ro /dev/sr0 /seed 2>/dev/null; then break; fi
  i=$((i+1)); sleep 0.2
done
if [ -f /seed/meta-data ]; then
  h=$(sed -n 's/^[" ]*local-hostname"*: *"*\([A-Za-z0-9-]*\)"*,*$/\1/p' /seed/meta-data | head -n 1)
  n=$(sed -n 's/^[" ]*instance-id"*: *"*\([^",]*\)"*,*$/\1/p' /seed/meta-data | head -n 1)
  [ -n "$h" ] && host=$h
  [ -n "$n" ] && iid=$n
  say "seed: instance-id=$iid local-hostname=$host files=$(ls /seed | sed -n 'H;$!d;x;s/\n/,/g;s/^,//;p')"
else
  say "seed: not found"
fi
hostname "$host"
mkdir -p /etc/acpi/PWRF
printf '#!/bin/sh\necho "persys-guest: power button, powering off" > /dev/ttyS0\nsync\npoweroff -f\n' > /etc/acpi/PWRF/00000080
chmod +x /etc/acpi/PWRF/00000080
echo 'PWRF PWRF/00000080' > /etc/acpid.conf
if grep -q persys.noacpi /proc/cmdline; then say "acpid: disabled (persys.noacpi)"; else acpid -c /etc/acpi -a /etc/acpid.conf -l /acpid.log; fi
ip link set lo up
ip link set eth0 up
if grep -q persys.nodhcp /proc/cmdline; then
  say "dhcp: disabled (persys.nodhcp)"
else
  say "dhcp: asking for a lease as $host"
  udhcpc -i eth0 -x "hostname:$host" -s /bin/udhcpc.script -t 20 -T 2 -b
fi
while :; do sleep 3600; done
`;

const UDHCPC_SCRIPT = String.raw`#!/bin/sh
case "$1" in
  bound|renew)
    [ -n "$mask" ] || mask=24
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    echo "persys-guest: dhcp $1 $ip" > /dev/ttyS0
    ;;
esac
exit 0
`;

export interface TestGuest {
  kernel: string;
  initrd: string;
  kernelVersion: string;
  /** Kernel command line: serial console, quiet. */
  cmdline: string;
  /** Directory holding kernel and initrd (for libvirt.allowedPathPrefixes). */
  dir: string;
}

// --- newc cpio, enough for an initramfs ------------------------------------------------------------

interface CpioEntry {
  name: string;
  mode: number;
  data?: Buffer;
  /** symlink target */
  link?: string;
}

function cpioHeader(ino: number, e: CpioEntry, size: number): Buffer {
  const hex = (n: number) => n.toString(16).padStart(8, '0');
  const nameBytes = Buffer.byteLength(e.name) + 1;
  const fields = ['070701', hex(ino), hex(e.mode), hex(0), hex(0), hex(1), hex(0), hex(size), hex(0), hex(0), hex(0), hex(0), hex(nameBytes), hex(0)];
  return Buffer.from(fields.join(''), 'ascii');
}

const pad4 = (n: number) => Buffer.alloc((4 - (n % 4)) % 4);

export function cpioNewc(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  for (const e of [...entries, { name: 'TRAILER!!!', mode: 0 }]) {
    const body = e.link !== undefined ? Buffer.from(e.link) : (e.data ?? Buffer.alloc(0));
    const header = cpioHeader(e.name === 'TRAILER!!!' ? 0 : ino++, e, body.length);
    const name = Buffer.from(`${e.name}\0`);
    parts.push(header, name, pad4(header.length + name.length), body, pad4(body.length));
  }
  return Buffer.concat(parts);
}

// --- the build ----------------------------------------------------------------------------------

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;

async function newestKernel(): Promise<{ version: string; kernel: string }> {
  const boot = await readdir('/boot').catch(() => [] as string[]);
  const versions: string[] = [];
  for (const f of boot) {
    if (!f.startsWith('vmlinuz-')) continue;
    const v = f.slice('vmlinuz-'.length);
    if (await stat(join('/lib/modules', v)).then(() => true, () => false)) versions.push(v);
  }
  versions.sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  const version = versions.at(-1);
  if (!version) throw new Error('no /boot/vmlinuz-<v> with /lib/modules/<v>: run scripts/testbed/libvirt.sh (linux-image-amd64)');
  return { version, kernel: `/boot/vmlinuz-${version}` };
}

/** The .ko files for GUEST_MODULES in load order, relative to /lib/modules/<version>/. */
async function moduleFiles(version: string): Promise<string[]> {
  const root = `/lib/modules/${version}/`;
  const out: string[] = [];
  for (const m of GUEST_MODULES) {
    const { stdout } = await run('modprobe', ['-S', version, '--show-depends', m], { timeout: 10_000 });
    for (const line of stdout.split('\n')) {
      const match = /^insmod (\S+)/.exec(line.trim());
      if (!match?.[1]) continue;
      const file = match[1];
      if (!file.startsWith(root)) throw new Error(`module ${file} is outside ${root}`);
      if (!file.endsWith('.ko')) throw new Error(`module ${file} is compressed; the guest's busybox insmod needs plain .ko files`);
      const rel = file.slice(root.length);
      if (!out.includes(rel)) out.push(rel);
    }
  }
  return out;
}

let building: Promise<TestGuest> | undefined;

/** Builds (or finds in the cache) the guest's initramfs; returns kernel and initrd paths. */
export function buildTestGuest(): Promise<TestGuest> {
  building ??= build();
  return building;
}

async function build(): Promise<TestGuest> {
  const { version, kernel } = await newestKernel();
  const busybox = await readFile('/bin/busybox').catch(() => {
    throw new Error('/bin/busybox missing: apt-get install busybox-static (scripts/testbed/libvirt.sh does)');
  });
  const modules = await moduleFiles(version);
  const hash = createHash('sha256').update(version).update(INIT).update(UDHCPC_SCRIPT).update(modules.join('\n')).update(busybox).digest('hex').slice(0, 16);

  const dir = process.env.PERSYS_TEST_CACHE_DIR ?? join(tmpdir(), 'persys-test-cache');
  await mkdir(dir, { recursive: true, mode: 0o755 });
  await chmod(dir, 0o755);
  const initrd = join(dir, `guest-initramfs-${version}-${hash}.cpio.gz`);
  const guestKernel = join(dir, `guest-vmlinuz-${version}`);
  const cmdline = 'console=ttyS0 quiet panic=-1';
  const have = async (p: string) => stat(p).then((s) => s.size > 0, () => false);

  if (!(await have(guestKernel))) {
    // A copy, so libvirt's relabelling of the kernel file never touches /boot.
    const tmp = `${guestKernel}.tmp-${process.pid}`;
    await writeFile(tmp, await readFile(kernel), { mode: 0o644 });
    await rename(tmp, guestKernel);
  }
  await chmod(guestKernel, 0o644);

  if (!(await have(initrd))) {
    const entries: CpioEntry[] = [];
    const dirs = new Set<string>();
    const addDir = (d: string) => {
      const parts = d.split('/');
      for (let i = 1; i <= parts.length; i++) {
        const p = parts.slice(0, i).join('/');
        if (!dirs.has(p)) {
          dirs.add(p);
          entries.push({ name: p, mode: S_IFDIR | 0o755 });
        }
      }
    };
    for (const d of ['bin', 'dev', 'proc', 'sys', 'etc', 'tmp', 'seed', 'root']) addDir(d);
    entries.push({ name: 'init', mode: S_IFREG | 0o755, data: Buffer.from(INIT) });
    entries.push({ name: 'bin/busybox', mode: S_IFREG | 0o755, data: busybox });
    for (const a of BUSYBOX_APPLETS) entries.push({ name: `bin/${a}`, mode: S_IFLNK | 0o777, link: 'busybox' });
    entries.push({ name: 'bin/udhcpc.script', mode: S_IFREG | 0o755, data: Buffer.from(UDHCPC_SCRIPT) });
    entries.push({ name: 'etc/modules.order', mode: S_IFREG | 0o644, data: Buffer.from(`${modules.join('\n')}\n`) });
    for (const rel of modules) {
      const parent = `lib/modules/${rel}`.split('/').slice(0, -1).join('/');
      addDir(parent);
      entries.push({ name: `lib/modules/${rel}`, mode: S_IFREG | 0o644, data: await readFile(`/lib/modules/${version}/${rel}`) });
    }
    const tmp = `${initrd}.tmp-${process.pid}`;
    await writeFile(tmp, gzipSync(cpioNewc(entries)), { mode: 0o644 });
    await rename(tmp, initrd);
  }
  await chmod(initrd, 0o644);
  return { kernel: guestKernel, initrd, kernelVersion: version, cmdline, dir };
}

/** For messages: which modules went into the guest. */
export async function guestModuleNames(): Promise<string[]> {
  const { version } = await newestKernel();
  return (await moduleFiles(version)).map((m) => basename(m, '.ko'));
}
