/**
 * A libvirt storage pool on the real libvirtd (qemu:///system), driven by the built agent (issue 13):
 *   - the agent defines a libvirt `dir` pool under policy.allowedStoragePrefixes (a temp path);
 *   - a VM whose disks are declared with `pool:` gets qcow2 volumes of the declared sizes IN that pool
 *     (`virsh vol-list`, `vol-info`, `vol-dumpxml`), attached as its disks (`domblklist`);
 *   - a second VM whose disk is larger than the pool has left is STORAGE_QUOTA_EXCEEDED: no volume,
 *     no domain;
 *   - a larger sizeBytes grows the volume in place while the VM runs (blockresize: same domain id,
 *     the guest's disk is the new size), no reboot;
 *   - removing the VM follows each disk's reclaimPolicy: retain keeps its volume in the pool, delete
 *     removes it from vol-list;
 *   - a VM that attaches a document volume (`disks[].volume`) gets that volume's qcow2 as its disk once
 *     it is Ready, the volume grows online, removing the VM keeps the volume (same file) and a VM
 *     declared again gets it back, and the volume leaving the document deletes it (its reclaimPolicy).
 * The VM has no boot files (SeaBIOS finds nothing to boot and idles): the test is about its disks.
 * Pools, volumes and domains are removed by name prefix and node id in after(), also after a failure.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { AgentProcess, runCli, waitFor } from '../helpers/agent-process.js';
import { requireEngine, testNodeId } from '../helpers/engines.js';
import { cleanupLibvirtByNodeId, cleanupStaleLibvirtTestResources, cleanupStaleTestPools, domainNames, removeTestPool, testPoolName, virsh, virshTry } from '../helpers/libvirt.js';

const skip = await requireEngine('libvirt');
const MiB = 1024 * 1024;

interface Status {
  workloads: { id: string; phase: string; error?: { code: string; message: string } | null; lastError?: { code: string; message: string } | null }[];
  storage?: { pools: { name: string; type: string; capacityBytes: number; allocatedBytes: number; available: number; error?: string }[]; volumes: { name: string; pool: string; sizeBytes: number; phase: string; reclaimPolicy: string; attachedTo: string[]; error: string | null }[] };
}

describe('storage: a libvirt pool for VM disks on the real libvirtd (built agent)', { skip, timeout: 600_000 }, () => {
  const nodeId = testNodeId('test-stlv');
  const prefix = `ps${randomBytes(3).toString('hex')}-`;
  const pool = testPoolName();
  let dir = '';
  let poolPath = '';
  let configPath = '';
  let desiredPath = '';
  let agent: AgentProcess | undefined;
  const vm = (id: string, disks: unknown[]) => ({ id, type: 'vm', spec: { vcpus: 1, memoryMiB: 64, domainType: 'qemu', disks, shutdownTimeoutSeconds: 5 } });
  const write = (generation: number, workloads: unknown[], volumes: unknown[] = []) =>
    writeFile(desiredPath, JSON.stringify({ apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId, generation, storagePools: [{ name: pool, type: 'libvirt', path: poolPath, capacityBytes: 128 * MiB }], volumes, workloads }));
  const status = async (): Promise<Status> => {
    const r = await runCli(['status', '--json', '--config', configPath]);
    return JSON.parse(r.stdout) as Status;
  };
  const vols = async (): Promise<string[]> => (await virsh('vol-list', pool)).split('\n').map((l) => l.trim().split(/\s+/)[0] ?? '').filter(Boolean).sort();
  const capacity = async (vol: string): Promise<number> => Number(/Capacity:\s+(\d+) bytes/.exec(await virsh('vol-info', '--pool', pool, vol, '--bytes'))?.[1]);

  before(async () => {
    await cleanupStaleLibvirtTestResources();
    await cleanupStaleTestPools();
    dir = await mkdtemp(join(tmpdir(), 'persys-stlv-'));
    // QEMU runs as libvirt-qemu: the path to the pool's volumes must be traversable.
    await chmod(dir, 0o711);
    await mkdir(join(dir, 'pools'), { mode: 0o711 });
    poolPath = join(dir, 'pools', 'lv');
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
        libvirt: { namePrefix: prefix, domainType: 'qemu' },
        policy: { allowedStoragePrefixes: [join(dir, 'pools')] },
      }),
    );
  });

  after(async () => {
    await agent?.stop('SIGTERM').catch(() => undefined);
    if (agent && process.env.PERSYS_TEST_LOG === '1') console.log(agent.dump());
    await cleanupLibvirtByNodeId(nodeId).catch(() => undefined);
    for (const name of (await domainNames().catch(() => [] as string[])).filter((n) => n.startsWith(prefix))) {
      await virshTry('destroy', name);
      await virshTry('undefine', name, '--nvram');
    }
    await removeTestPool(pool);
    assert.equal((await virshTry('pool-info', pool)).ok, false, 'the test pool is gone');
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('creates pool disks as qcow2 volumes of their size in the pool, refuses one over quota, grows one online, reclaims per policy', async () => {
    const vm1 = (aBytes: number) => vm('vm1', [
      { name: 'a', pool, sizeBytes: aBytes, reclaimPolicy: 'retain' },
      { name: 'b', pool, sizeBytes: 16 * MiB },
    ]);
    const vm2 = vm('vm2', [{ name: 'c', pool, sizeBytes: 96 * MiB }]);
    await write(1, [vm1(64 * MiB), vm2]);
    agent = AgentProcess.start(['run', '--config', configPath, '--desired', desiredPath]);

    const t0 = Date.now();
    await waitFor('vm1 Running', async () => (await status()).workloads.find((w) => w.id === 'vm1')?.phase === 'Running', 180_000, 1000);
    const upMs = Date.now() - t0;

    // The pool is a libvirt dir pool at the declared path, running.
    const info = await virsh('pool-info', pool);
    assert.match(info, /State:\s+running/);
    assert.match(await virsh('pool-dumpxml', pool), new RegExp(`<pool type='dir'>[\\s\\S]*<path>${poolPath}</path>`));

    // Both disks of vm1 are qcow2 volumes of exactly their size in the pool; vm2's disk is not there.
    assert.deepEqual(await vols(), ['vm1.a.qcow2', 'vm1.b.qcow2']);
    assert.equal(await capacity('vm1.a.qcow2'), 64 * MiB);
    assert.equal(await capacity('vm1.b.qcow2'), 16 * MiB);
    assert.match(await virsh('vol-dumpxml', '--pool', pool, 'vm1.a.qcow2'), /<format type='qcow2'\/>/);
    // ... and they are vm1's disks.
    const dom1 = `${prefix}vm1`;
    const blk = await virsh('domblklist', dom1, '--details');
    assert.match(blk, new RegExp(`disk\\s+vda\\s+${join(poolPath, 'vm1.a.qcow2')}`));
    assert.match(blk, new RegExp(`disk\\s+vdb\\s+${join(poolPath, 'vm1.b.qcow2')}`));

    // vm2 does not fit (80 MiB of 128 allocated): refused with the quota message, nothing created.
    const refusal = `vm2.c needs 96 MiB in pool ${pool}; 48 MiB left (128 MiB capacity, 80 MiB allocated to 2 volumes)`;
    const s1 = await waitFor('vm2 refused', async () => {
      const s = await status();
      const w = s.workloads.find((x) => x.id === 'vm2');
      return (w?.error ?? w?.lastError)?.code === 'STORAGE_QUOTA_EXCEEDED' ? s : undefined;
    }, 60_000, 1000);
    const w2 = s1.workloads.find((x) => x.id === 'vm2');
    assert.match((w2?.error ?? w2?.lastError)?.message ?? '', new RegExp(refusal.replace(/[.()]/g, '\\$&')), JSON.stringify(w2));
    assert.equal((await domainNames()).includes(`${prefix}vm2`), false, 'no domain for the refused VM');
    assert.deepEqual(await vols(), ['vm1.a.qcow2', 'vm1.b.qcow2'], 'no volume for the refused disk');
    const p1 = s1.storage?.pools.find((p) => p.name === pool);
    assert.equal(p1?.type, 'libvirt');
    assert.equal(p1?.allocatedBytes, 80 * MiB);
    assert.equal(s1.storage?.volumes.find((v) => v.name === 'vm2.c')?.phase, 'Refused');
    assert.deepEqual(s1.storage?.volumes.find((v) => v.name === 'vm1.a')?.attachedTo, ['vm1']);

    // Grow a to 96 MiB while vm1 runs: the volume and the guest's disk grow, the domain is not restarted.
    const id1 = (await virsh('domid', dom1)).trim();
    await write(2, [vm1(96 * MiB), vm2]);
    const t1 = Date.now();
    await waitFor('vm1.a grown to 96 MiB', async () => (await capacity('vm1.a.qcow2')) === 96 * MiB, 60_000, 500);
    const growMs = Date.now() - t1;
    assert.match(await virsh('domblkinfo', dom1, 'vda', '--human'), /Capacity:\s+96\.000 MiB/);
    await waitFor('report shows 96 MiB', async () => (await status()).storage?.volumes.find((v) => v.name === 'vm1.a')?.sizeBytes === 96 * MiB, 30_000, 500);
    // A few passes later the domain is still the same running one (no recreate for a pool disk's size).
    await new Promise((r) => setTimeout(r, 4000));
    assert.equal((await virsh('domid', dom1)).trim(), id1, 'vm1 was not restarted by the grow');
    assert.equal((await status()).workloads.find((w) => w.id === 'vm1')?.phase, 'Running');

    // vm1 leaves the document: a (retain) stays in the pool, b (delete) goes; the domain goes.
    await write(3, []);
    const t2 = Date.now();
    await waitFor('vm1 gone and vm1.b deleted', async () => !(await domainNames()).includes(dom1) && !(await vols()).includes('vm1.b.qcow2'), 120_000, 1000);
    const removeMs = Date.now() - t2;
    assert.deepEqual(await vols(), ['vm1.a.qcow2']);
    assert.equal(await capacity('vm1.a.qcow2'), 96 * MiB);
    const s3 = await waitFor('report: vm1.a Retained', async () => {
      const s = await status();
      return s.storage?.volumes.find((v) => v.name === 'vm1.a')?.phase === 'Retained' ? s : undefined;
    }, 30_000, 500);
    assert.equal(s3.storage?.volumes.find((v) => v.name === 'vm1.b'), undefined);
    assert.equal(s3.storage?.pools.find((p) => p.name === pool)?.allocatedBytes, 96 * MiB, 'a retained volume still counts against its pool');
    console.log(`# libvirt pool: vm1 with 2 pool disks Running after ${upMs} ms; online grow 64->96 MiB in ${growMs} ms; removal (retain 1, delete 1) in ${removeMs} ms`);
  });

  it('a VM attaches a document volume: its disk once Ready, grown online, kept when the VM goes, deleted when the volume goes', async () => {
    // The pool holds the retained vm1.a (96 MiB) from the test before: 32 MiB left.
    const volume = (sizeBytes: number) => ({ name: 'vdata', pool, sizeBytes, reclaimPolicy: 'delete' });
    const vm3 = vm('vm3', [{ name: 'data', volume: 'vdata' }]);
    const dom3 = `${prefix}vm3`;
    const file = join(poolPath, 'vdata.qcow2');
    await write(4, [vm3], [volume(16 * MiB)]);
    const t0 = Date.now();
    await waitFor('vm3 Running', async () => (await status()).workloads.find((w) => w.id === 'vm3')?.phase === 'Running', 120_000, 500);
    const upMs = Date.now() - t0;
    assert.deepEqual(await vols(), ['vdata.qcow2', 'vm1.a.qcow2']);
    assert.equal(await capacity('vdata.qcow2'), 16 * MiB);
    assert.match(await virsh('domblklist', dom3, '--details'), new RegExp(`disk\\s+vda\\s+${file}`));
    const s1 = await status();
    assert.deepEqual(s1.storage?.volumes.find((v) => v.name === 'vdata')?.attachedTo, ['vm3']);

    // Grown online: the guest's disk is the new size, the domain is the same.
    const id3 = (await virsh('domid', dom3)).trim();
    await write(5, [vm3], [volume(24 * MiB)]);
    await waitFor('vdata grown to 24 MiB', async () => (await capacity('vdata.qcow2')) === 24 * MiB, 60_000, 500);
    assert.match(await virsh('domblkinfo', dom3, 'vda', '--human'), /Capacity:\s+24\.000 MiB/);
    await new Promise((r) => setTimeout(r, 3000));
    assert.equal((await virsh('domid', dom3)).trim(), id3, 'vm3 was not restarted by the grow');

    // The VM leaves, the volume stays declared: the domain goes, the volume's file stays as it was.
    const inode = (await stat(file)).ino;
    await write(6, [], [volume(24 * MiB)]);
    await waitFor('vm3 gone', async () => !(await domainNames()).includes(dom3), 60_000, 500);
    await new Promise((r) => setTimeout(r, 2000));
    assert.equal((await stat(file)).ino, inode, 'removing the VM kept its volume');
    assert.equal((await status()).storage?.volumes.find((v) => v.name === 'vdata')?.phase, 'Ready');

    // Declared again, the VM gets the same file back.
    await write(7, [vm3], [volume(24 * MiB)]);
    await waitFor('vm3 Running again', async () => (await domainNames()).includes(dom3) && (await status()).workloads.find((w) => w.id === 'vm3')?.phase === 'Running', 60_000, 500);
    assert.match(await virsh('domblklist', dom3, '--details'), new RegExp(`disk\\s+vda\\s+${file}`));
    assert.equal((await stat(file)).ino, inode);

    // VM and volume leave together: the domain first, then the volume (reclaimPolicy delete).
    await write(8, [], []);
    const t1 = Date.now();
    await waitFor('vm3 and vdata gone', async () => !(await domainNames()).includes(dom3) && !(await vols()).includes('vdata.qcow2'), 120_000, 500);
    const goneMs = Date.now() - t1;
    assert.deepEqual(await vols(), ['vm1.a.qcow2']);
    console.log(`# libvirt pool: vm3 attaching volume vdata Running after ${upMs} ms; VM and volume removed in ${goneMs} ms`);
  });
});
