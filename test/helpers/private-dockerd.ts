/**
 * A private Docker daemon for tests that need the engine to go away and come back. The shared
 * dockerd (/var/run/docker.sock) is never touched: this one has its own socket, data root, exec root
 * (so its own managed containerd), pid file and containerd namespaces, no bridge and no iptables
 * rules. Only its own process is ever signalled, by pid.
 *
 *   const d = await startPrivateDockerd(dir);   // d.socketPath
 *   await d.stop();  await d.start();           // same dirs: the engine comes back as it was
 *   await d.close();                            // in after(): the engine, then any shim it left
 */
import { execFile, spawn } from 'node:child_process';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { waitFor } from './agent-process.js';
import { findExecutable } from './engines.js';
import { OwnedProcess } from './prometheus.js';

const run = promisify(execFile);

export interface PrivateDockerd {
  socketPath: string;
  dataRoot: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  running(): boolean;
  log(): string;
  /** Stops the engine and ends the containerd shims (and their containers' processes) it left behind. */
  close(): Promise<void>;
}

/** Unmounts what is still mounted under `dir` (the rootfs of a container a shim kept), deepest first. */
async function unmountUnder(dir: string): Promise<void> {
  const points = (await readFile('/proc/self/mountinfo', 'utf8'))
    .split('\n')
    .map((line) => line.split(' ')[4] ?? '')
    .filter((m) => m.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
  for (const m of points) await run('umount', ['-l', m]).catch(() => undefined);
}

/** pid -> [ppid, cmdline] of every process, from /proc. */
async function processTable(): Promise<Map<number, [number, string]>> {
  const out = new Map<number, [number, string]>();
  for (const e of await readdir('/proc')) {
    const pid = Number(e);
    if (!Number.isInteger(pid)) continue;
    try {
      const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const cmd = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).replaceAll('\0', ' ');
      out.set(pid, [ppid, cmd]);
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/**
 * A dockerd stopped mid-start can leave shims its next incarnation no longer knows (the wedged ids it
 * cannot start again): they and their containers' processes would outlive the test. Only shims that
 * talk to this engine's containerd (an address under its exec root) and their descendants are ended.
 */
async function killLeftoverShims(execRoot: string): Promise<number> {
  const table = await processTable();
  const shims = [...table].filter(([, [, cmd]]) => cmd.includes('containerd-shim') && cmd.includes(`-address ${execRoot}/`)).map(([pid]) => pid);
  const doomed: number[] = [];
  const collect = (pid: number): void => {
    for (const [child, [ppid]] of table) if (ppid === pid) collect(child);
    doomed.push(pid);
  };
  for (const pid of shims) collect(pid);
  for (const pid of doomed) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  return shims.length;
}

function ping(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ socketPath, path: '/_ping', method: 'GET', timeout: 2_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c));
      res.on('end', () => resolve(res.statusCode === 200 && body.trim() === 'OK'));
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}

/** `false` when dockerd can be started here (binary present, root), else a skip reason. */
export async function privateDockerdSkipReason(): Promise<string | false> {
  if (process.getuid?.() !== 0) return 'a private dockerd needs root';
  return (await findExecutable('dockerd')) ? false : 'dockerd not found (scripts/testbed/docker.sh installs it)';
}

/** `dir` must be short: unix socket paths are limited to ~107 bytes. */
export async function startPrivateDockerd(dir: string): Promise<PrivateDockerd> {
  const socketPath = join(dir, 'd.sock');
  const dataRoot = join(dir, 'data');
  const execRoot = join(dir, 'exec');
  await mkdir(dataRoot, { recursive: true });
  await mkdir(execRoot, { recursive: true });
  const ns = `persys-test-${process.pid}-${Date.now().toString(36)}`;
  let proc: OwnedProcess | undefined;
  const log: string[] = [];

  const api: PrivateDockerd = {
    socketPath,
    dataRoot,
    running: () => proc !== undefined && !proc.exited,
    log: () => [...log, proc?.log() ?? ''].join('\n'),
    async start() {
      if (api.running()) return;
      // Its own network namespace: with --bridge=none dockerd deletes any interface named docker0
      // (moby's removeDefaultBridgeInterface), which in the host namespace is the shared engine's bridge.
      const child = spawn(
        'unshare',
        [
          '--net',
          '--',
          'dockerd',
          `--host=unix://${socketPath}`,
          `--data-root=${dataRoot}`,
          `--exec-root=${execRoot}`,
          `--pidfile=${join(dir, 'd.pid')}`,
          `--containerd-namespace=${ns}`,
          `--containerd-plugins-namespace=${ns}-plugins`,
          '--bridge=none',
          '--iptables=false',
          '--ip-masq=false',
          '--ip6tables=false',
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      proc = new OwnedProcess(child, 'private dockerd');
      const p = proc;
      await waitFor('private dockerd answers', async () => {
        if (p.exited) throw new Error(`private dockerd exited:\n${p.log()}`);
        return ping(socketPath);
      }, 60_000, 250);
    },
    async stop() {
      if (!proc) return;
      log.push(proc.log());
      await proc.stop('SIGTERM', 30_000);
      proc = undefined;
    },
    async close() {
      await api.stop();
      await killLeftoverShims(execRoot);
      await unmountUnder(dir);
    },
  };
  await api.start();
  return api;
}
