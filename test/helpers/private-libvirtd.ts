/**
 * A private libvirtd for tests that need libvirt to go away and come back. The shared daemon
 * (qemu:///system) and its domains are never touched: this one runs in its own mount and network
 * namespaces, held open by a `sleep` we start, where its own directories are bind-mounted over
 * /run/libvirt, /var/lib/libvirt, /etc/libvirt (a copy of the host's *.conf files only, so none of
 * the shared daemon's domains or networks), /var/log/libvirt and /var/cache/libvirt. It has its own
 * virtlogd. Its socket is reachable from the host namespace through the bind-mounted run dir:
 * `qemu+unix:///system?socket=<dir>/run/libvirt-sock`.
 *
 * The namespaces outlive a libvirtd stop, so QEMU processes keep running across a restart exactly
 * as they do when a host's libvirtd is restarted. Only processes started here are signalled, by pid.
 *
 *   const l = await startPrivateLibvirtd(dir);   // l.uri, l.virsh('list', '--all')
 *   await l.stop();  await l.start();            // the daemon only; VMs keep running
 *   await l.close();                             // in after(): domains, daemons, namespace holder
 */
import { execFile, spawn } from 'node:child_process';
import { copyFile, mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { waitFor } from './agent-process.js';
import { findExecutable } from './engines.js';
import { OwnedProcess } from './prometheus.js';

const run = promisify(execFile);

export interface PrivateLibvirtd {
  uri: string;
  dir: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  running(): boolean;
  /** virsh against this daemon; rejects on a non-zero exit. */
  virsh(...args: string[]): Promise<string>;
  /** pid of the QEMU process of a running domain (from the daemon's run dir), or undefined. */
  qemuPid(domain: string): Promise<number | undefined>;
  log(): string;
  /** Destroys and undefines every domain, stops both daemons and the namespace holder. */
  close(): Promise<void>;
}

/** `false` when a private libvirtd can be started here (root, binaries), else a skip reason. */
export async function privateLibvirtdSkipReason(): Promise<string | false> {
  if (process.getuid?.() !== 0) return 'a private libvirtd needs root';
  for (const bin of ['libvirtd', 'virtlogd', 'virsh', 'unshare', 'nsenter', 'ip']) {
    if (!(await findExecutable(bin))) return `${bin} not found (scripts/testbed/libvirt.sh installs libvirt)`;
  }
  return false;
}

const BINDS = [
  ['run', '/run/libvirt'],
  ['lib', '/var/lib/libvirt'],
  ['etc', '/etc/libvirt'],
  ['log', '/var/log/libvirt'],
  ['cache', '/var/cache/libvirt'],
] as const;

// Runs as the namespace holder: binds ($1 = dir, then sub:target pairs), loopback up, virtlogd, then sleeps until ended.
const HOLDER = [
  'set -e',
  'D=$1; shift',
  'for p in "$@"; do mkdir -p "${p#*:}"; mount --bind "$D/${p%%:*}" "${p#*:}"; done',
  'ip link set lo up',
  'virtlogd -d -p "$D/virtlogd.pid"',
  'echo ready',
  'exec sleep 2147483647',
].join('\n');

async function pidFrom(file: string): Promise<number | undefined> {
  const n = Number((await readFile(file, 'utf8').catch(() => '')).trim());
  return Number.isInteger(n) && n > 1 ? n : undefined;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** `dir` must be short: the socket path `<dir>/run/libvirt-sock` is limited to ~107 bytes. */
export async function startPrivateLibvirtd(dir: string): Promise<PrivateLibvirtd> {
  for (const [sub] of BINDS) await mkdir(join(dir, sub), { recursive: true });
  // The daemon's settings, not its state: *.conf only (the host's domain and network XML stay out).
  for (const f of await readdir('/etc/libvirt', { withFileTypes: true })) {
    if (f.isFile() && f.name.endsWith('.conf')) await copyFile(join('/etc/libvirt', f.name), join(dir, 'etc', f.name));
  }
  const uri = `qemu+unix:///system?socket=${join(dir, 'run', 'libvirt-sock')}`;
  const virsh = async (...args: string[]): Promise<string> =>
    (await run('virsh', ['-q', '-c', uri, ...args], { timeout: 60_000, env: { ...process.env, LC_ALL: 'C' } })).stdout;
  const answers = (): Promise<boolean> => virsh('version').then(() => true, () => false);

  const holder = new OwnedProcess(spawn('unshare', ['--mount', '--net', '--', 'sh', '-c', HOLDER, 'sh', dir, ...BINDS.map(([sub, target]) => `${sub}:${target}`)], { stdio: ['ignore', 'pipe', 'pipe'] }), 'libvirt namespace holder');
  await waitFor('the private libvirt namespace', () => {
    if (holder.exited) throw new Error(`the namespace holder exited:\n${holder.log()}`);
    return holder.output.join('').includes('ready');
  }, 30_000, 50);
  const holderPid = String(holder.child.pid);

  let proc: OwnedProcess | undefined;
  const log: string[] = [];
  const api: PrivateLibvirtd = {
    uri,
    dir,
    running: () => proc !== undefined && !proc.exited,
    log: () => [...log, proc?.log() ?? ''].join('\n').split('\n').slice(-60).join('\n'),
    virsh,
    async qemuPid(domain) {
      const pid = await pidFrom(join(dir, 'run', 'qemu', `${domain}.pid`));
      return pid !== undefined && alive(pid) ? pid : undefined;
    },
    async start() {
      if (api.running()) return;
      // nsenter without a pid namespace execs in place: the child's pid is libvirtd's.
      const child = spawn('nsenter', ['-t', holderPid, '-m', '-n', '--', 'libvirtd', '-p', join(dir, 'libvirtd.pid')], { stdio: ['ignore', 'pipe', 'pipe'] });
      proc = new OwnedProcess(child, 'private libvirtd');
      const p = proc;
      await waitFor('private libvirtd answers', async () => {
        if (p.exited) throw new Error(`private libvirtd exited:\n${p.log()}`);
        return answers();
      }, 60_000, 250);
    },
    async stop() {
      if (!proc) return;
      log.push(proc.log());
      await proc.stop('SIGTERM', 30_000);
      proc = undefined;
    },
    async close() {
      if (holder.exited) return;
      await api.start().catch(() => undefined);
      if (api.running()) {
        const names = (await virsh('list', '--all', '--name').catch(() => '')).split('\n').map((s) => s.trim()).filter(Boolean);
        for (const n of names) {
          await virsh('destroy', n).catch(() => undefined);
          await virsh('undefine', n, '--nvram').catch(() => undefined);
        }
      }
      await api.stop();
      // QEMU processes a failed cleanup left, by the pid files of this daemon's run dir only.
      for (const f of await readdir(join(dir, 'run', 'qemu')).catch(() => [] as string[])) {
        if (!f.endsWith('.pid')) continue;
        const pid = await pidFrom(join(dir, 'run', 'qemu', f));
        if (pid !== undefined && alive(pid)) process.kill(pid, 'SIGKILL');
      }
      const logd = await pidFrom(join(dir, 'virtlogd.pid'));
      if (logd !== undefined && alive(logd)) process.kill(logd, 'SIGTERM');
      await holder.stop('SIGTERM', 10_000);
    },
  };
  try {
    await api.start();
  } catch (err) {
    await api.close().catch(() => undefined);
    throw err;
  }
  return api;
}
