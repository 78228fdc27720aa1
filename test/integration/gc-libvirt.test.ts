/**
 * The garbage collector's VM leftovers on the real libvirtd, with the built agent (issue 12, item 5):
 *   - a disk a replaced revision left (the runtime keeps every disk on a replace) goes after
 *     gc.replacedDiskRetentionSeconds; the disks of the current revision stay;
 *   - an image-cache entry no desired VM uses goes; the entry that backs the current disk stays;
 *   - the seed ISO and console log of a domain nobody claims go; that domain's disk stays (it may have
 *     been retained on purpose);
 *   - `gc --dry-run` lists exactly these and removes nothing.
 * The VM is kept stopped (desiredState stopped): defined with its disks, no guest boot needed.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';

import { AgentProcess, runCli, waitFor } from '../helpers/agent-process.js';
import { requireEngine, testNodeId } from '../helpers/engines.js';
import { cleanupLibvirtByNodeId, cleanupStaleLibvirtTestResources, domainNames, virsh, virshTry } from '../helpers/libvirt.js';

const exec = promisify(execFile);
const skip = await requireEngine('libvirt');

interface GcPass {
  dryRun: boolean;
  removed: { kind: string; id: string; reason: string }[];
  failed: unknown[];
}

const exists = (p: string) =>
  stat(p).then(
    () => true,
    () => false,
  );

describe('garbage collection of VM leftovers on the real libvirtd (built agent)', { skip, timeout: 300_000 }, () => {
  const nodeId = testNodeId('test-gcvm');
  const prefix = `pg${randomBytes(3).toString('hex')}-`;
  let dir: string;
  let imgDir: string;
  let configPath: string;
  let desiredPath: string;
  let agent: AgentProcess | undefined;
  const base: Record<'a' | 'b', { path: string; sha256: string }> = { a: { path: '', sha256: '' }, b: { path: '', sha256: '' } };
  let lib: string;

  const doc = (generation: number, revision: string, disks: unknown[]) =>
    JSON.stringify({
      apiVersion: 'persys.dev/v1',
      kind: 'DesiredState',
      nodeId,
      generation,
      workloads: [{ id: 'vm1', type: 'vm', revision, desiredState: 'stopped', spec: { vcpus: 1, memoryMiB: 64, disks, shutdownTimeoutSeconds: 5 } }],
    });
  const gc = async (...flags: string[]): Promise<GcPass> => {
    const r = await runCli(['gc', '--json', '--config', configPath, ...flags]);
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    return JSON.parse(r.stdout) as GcPass;
  };
  const status = async () => JSON.parse((await runCli(['status', '--json', '--config', configPath])).stdout) as { workloads: { id: string; phase: string; revision?: string }[] };
  const old = async (...paths: string[]) => {
    const t = new Date(Date.now() - 3600_000);
    for (const p of paths) await utimes(p, t, t);
  };

  before(async () => {
    await cleanupStaleLibvirtTestResources();
    dir = await mkdtemp(join(tmpdir(), 'persys-gcvm-'));
    await chmod(dir, 0o711);
    imgDir = join(dir, 'images');
    await mkdir(imgDir);
    // Two different base images (different virtual sizes, so different bytes and digests).
    for (const [k, size] of [['a', '8M'], ['b', '9M']] as const) {
      const path = join(imgDir, `base-${k}.qcow2`);
      await exec('qemu-img', ['create', '-q', '-f', 'qcow2', path, size]);
      base[k] = { path, sha256: createHash('sha256').update(await readFile(path)).digest('hex') };
    }
    lib = join(dir, 'state', 'libvirt');
    configPath = join(dir, 'config.json');
    desiredPath = join(dir, 'desired.json');
    await writeFile(
      configPath,
      JSON.stringify({
        nodeId,
        stateDir: join(dir, 'state'),
        metrics: { listen: 'off' },
        reconcile: { intervalSeconds: 1 },
        docker: { enabled: false },
        libvirt: { namePrefix: prefix, domainType: 'qemu', allowedPathPrefixes: [imgDir] },
        // Passes only when the test asks; retention and grace short, so back-dated files qualify.
        gc: { intervalSeconds: 3600, orphanGraceSeconds: 5, imageMinAgeSeconds: 1, replacedDiskRetentionSeconds: 5 },
      }),
    );
    await writeFile(desiredPath, doc(1, '1', [{ name: 'root', image: base.a }, { name: 'scratch', sizeBytes: 16 * 1024 * 1024 }]));
  });

  after(async () => {
    await agent?.stop('SIGTERM').catch(() => undefined);
    await cleanupLibvirtByNodeId(nodeId).catch(() => undefined);
    for (const name of (await domainNames().catch(() => [] as string[])).filter((n) => n.startsWith(prefix))) await virshTry('undefine', name, '--nvram');
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('removes a replaced revision\'s disk, an unused cache entry and an unclaimed domain\'s seed and log; keeps what is in use', async () => {
    agent = AgentProcess.start(['run', '--config', configPath, '--desired', desiredPath]);
    const domain = `${prefix}vm1`;
    const vmDir = join(lib, 'vms', domain);
    await waitFor('vm1 defined and Stopped at revision 1', async () => (await status()).workloads.find((w) => w.id === 'vm1' && w.revision === '1')?.phase === 'Stopped', 90_000, 500);
    assert.ok(await exists(join(vmDir, 'disk-scratch.qcow2')));
    const cacheA = join(lib, 'images', `sha256-${base.a.sha256}.qcow2`);
    assert.ok(await exists(cacheA), 'base a was copied into the cache');

    // Revision 2 drops the scratch disk and moves root onto base b: a replace, which keeps the old files.
    await writeFile(desiredPath, doc(2, '2', [{ name: 'root', image: base.b }]));
    await waitFor('vm1 Stopped at revision 2', async () => (await status()).workloads.find((w) => w.id === 'vm1' && w.revision === '2')?.phase === 'Stopped', 90_000, 500);
    const cacheB = join(lib, 'images', `sha256-${base.b.sha256}.qcow2`);
    assert.ok(await exists(cacheB));
    assert.ok(await exists(join(vmDir, 'disk-scratch.qcow2')), 'the replace kept the old revision\'s disk');

    // A domain nobody claims any more (its record lost): seed, console log and a disk that may be retained.
    const ghost = `${prefix}ghost`;
    const ghostDir = join(lib, 'vms', ghost);
    await mkdir(ghostDir, { recursive: true });
    await mkdir(join(lib, 'console'), { recursive: true });
    const ghostSeed = join(ghostDir, 'seed.iso');
    const ghostDisk = join(ghostDir, 'disk-data.qcow2');
    const ghostLog = join(lib, 'console', `${ghost}.log`);
    for (const f of [ghostSeed, ghostDisk, ghostLog]) await writeFile(f, 'x'.repeat(4096), { mode: 0o600 });
    // A domain of someone else's prefix is never ours to judge.
    const foreignLog = join(lib, 'console', 'someone-else.log');
    await writeFile(foreignLog, 'y');
    await old(join(vmDir, 'disk-scratch.qcow2'), cacheA, cacheB, ghostSeed, ghostDisk, ghostLog, foreignLog);

    const expected = [
      ['vm-disk', join(vmDir, 'disk-scratch.qcow2')],
      ['vm-image-cache', cacheA],
      ['vm-seed', ghostSeed],
      ['vm-console-log', ghostLog],
    ].sort();
    const dry = await gc('--dry-run');
    assert.equal(dry.dryRun, true);
    const listed = dry.removed.filter((r) => r.kind.startsWith('vm-')).map((r) => [r.kind, r.id]).sort();
    assert.deepEqual(listed, expected, JSON.stringify(dry, null, 1));
    assert.match(dry.removed.find((r) => r.kind === 'vm-disk')?.reason ?? '', /disk scratch of VM vm1 is not in its desired spec/);
    for (const [, p] of expected) assert.ok(await exists(p as string), `a dry run removes nothing (${p})`);

    const real = await gc();
    assert.deepEqual(real.removed.filter((r) => r.kind.startsWith('vm-')).map((r) => [r.kind, r.id]).sort(), expected);
    assert.deepEqual(real.failed, []);
    for (const [, p] of expected) assert.equal(await exists(p as string), false, `${p} is gone`);
    // What is in use, or may be kept on purpose, stays.
    for (const p of [join(vmDir, 'disk-root.qcow2'), cacheB, ghostDisk, foreignLog]) assert.ok(await exists(p), `${p} stays`);
    assert.match(await virsh('domstate', domain), /shut off/);
    assert.ok(agent.lines.some((l) => l.level === 30 && l.msg.startsWith('gc removed vm-disk')), `logged at INFO:\n${agent.dump()}`);

    // A second pass finds nothing more.
    const again = await gc('--dry-run');
    assert.deepEqual(again.removed.filter((r) => r.kind.startsWith('vm-')), []);
  });
});
