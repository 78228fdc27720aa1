/**
 * Storage test helpers: a StorageManager on the real host tools, a pool directory whose path names
 * the test's node id, and a cleanup that removes every loop device, Docker volume and image file
 * under it, even after a failed run.
 */
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { silentLogger } from '../../src/log.js';
import { BUILTIN_TYPES } from '../../src/runtimes/registry.js';
import { hostVolumeOps } from '../../src/storage/host-ops.js';
import { StorageManager } from '../../src/storage/manager.js';

const run = promisify(execFile);
export const TEST_POOL_ROOT = '/var/lib/persys-agent/pools';

export function storageManager(o: { stateDir: string; nodeId: string; prefix: string }): StorageManager {
  return new StorageManager({
    stateDir: o.stateDir,
    nodeId: o.nodeId,
    ops: hostVolumeOps({ dockerSocket: '/var/run/docker.sock', libvirtUri: 'qemu:///system', timeoutMs: 60_000 }),
    allowedPrefixes: [o.prefix],
    types: BUILTIN_TYPES,
    logger: silentLogger(),
  });
}

/** Lines of `losetup -a` whose backing file is under `dir` (all lines when dir is omitted). */
export async function loopDevices(dir?: string): Promise<string[]> {
  const { stdout } = await run('losetup', ['-a']);
  return stdout.split('\n').filter((l) => l.trim() !== '' && (dir === undefined || l.includes(`(${dir}/`)));
}

/** Containers and volumes labelled with the node id, loop devices backed by files under `dir`, and `dir` itself. */
export async function cleanupStorage(nodeId: string, dir: string): Promise<void> {
  const docker = async (...args: string[]) => (await run('docker', args)).stdout.split('\n').filter(Boolean);
  for (const c of await docker('ps', '-aq', '--filter', `label=dev.persys.node-id=${nodeId}`)) await run('docker', ['rm', '-f', c]).catch(() => undefined);
  for (const v of await docker('volume', 'ls', '-q', '--filter', `label=dev.persys.node-id=${nodeId}`)) await run('docker', ['volume', 'rm', '-f', v]).catch(() => undefined);
  for (const line of await loopDevices(dir)) {
    const dev = line.split(':')[0];
    if (dev) await run('losetup', ['-d', dev]).catch(() => undefined);
  }
  await fsp.rm(dir, { recursive: true, force: true });
}

export const poolDir = (nodeId: string, name: string): string => join(TEST_POOL_ROOT, nodeId, name);
