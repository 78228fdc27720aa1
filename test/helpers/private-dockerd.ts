/**
 * A private Docker daemon for tests that need the engine to go away and come back. The shared
 * dockerd (/var/run/docker.sock) is never touched: this one has its own socket, data root, exec root
 * (so its own managed containerd), pid file and containerd namespaces, no bridge and no iptables
 * rules. Only its own process is ever signalled, by pid.
 *
 *   const d = await startPrivateDockerd(dir);   // d.socketPath
 *   await d.stop();  await d.start();           // same dirs: the engine comes back as it was
 *   await d.stop();                             // in after()
 */
import { spawn } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { waitFor } from './agent-process.js';
import { findExecutable } from './engines.js';
import { OwnedProcess } from './prometheus.js';

export interface PrivateDockerd {
  socketPath: string;
  dataRoot: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  running(): boolean;
  log(): string;
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
  };
  await api.start();
  return api;
}
