/**
 * Loop and dir pools on the real dockerd and the host's losetup/mkfs.ext4/resize2fs, as root. Every
 * loop device, Docker volume and image this suite makes is under a pool directory named after its
 * node id and is removed in after(), also when a test failed.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { requireEngine, testNodeId } from '../helpers/engines.js';
import { cleanupStorage, loopDevices, poolDir, storageManager, TEST_POOL_ROOT } from '../helpers/storage.js';
import type { StorageDocument } from '../../src/storage/manager.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const IMAGE = 'persys-test/busybox:1';
const skip = await requireEngine('docker');

describe('storage: loop and dir pools on the real dockerd', { skip }, () => {
  const nodeId = testNodeId('test-storage');
  const root = join(TEST_POOL_ROOT, nodeId);
  const loopPath = poolDir(nodeId, 'fast');
  let stateDir = '';
  const vol = `${nodeId}-data`;
  const big = `${nodeId}-big`;
  const pools = [{ name: 'fast', type: 'loop' as const, path: loopPath, capacityBytes: 256 * MiB }];
  const doc = (volumes: StorageDocument['volumes']): StorageDocument => ({ workloads: [], storagePools: pools, volumes });
  const inContainer = async (script: string): Promise<{ code: number; out: string }> => {
    try {
      const { stdout, stderr } = await run('docker', ['run', '--rm', '--label', `dev.persys.node-id=${nodeId}`, '--network', 'none', '-v', `${vol}:/data`, IMAGE, 'sh', '-c', script]);
      return { code: 0, out: stdout + stderr };
    } catch (err) {
      const e = err as { code?: number; stdout?: string; stderr?: string };
      return { code: e.code ?? -1, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
    }
  };

  before(async () => {
    stateDir = await mkdtemp(join(tmpdir(), 'persys-storage-'));
  });
  after(async () => {
    await cleanupStorage(nodeId, root);
    await rm(stateDir, { recursive: true, force: true });
    assert.deepEqual(await loopDevices(root), [], 'no loop device of this suite is left attached');
  });

  it('a 32 MiB volume in a 256 MiB loop pool: ENOSPC at about 32 MiB, a 300 MiB one is refused, grow keeps data, delete removes everything', async () => {
    const before = (await loopDevices()).length;
    const m = storageManager({ stateDir, nodeId, prefix: root });
    await m.start();
    await m.beforeWorkloads(doc([{ name: vol, pool: 'fast', sizeBytes: 32 * MiB, reclaimPolicy: 'retain' }, { name: big, pool: 'fast', sizeBytes: 300 * MiB }]));
    const st = m.current.volumes[vol];
    assert.equal(st?.phase, 'Ready');
    assert.equal((await stat(st.path)).mode & 0o777, 0o600, 'image mode 0600');
    assert.equal((await loopDevices()).length, before + 1);

    // Nothing of the refused volume exists: no image, no Docker volume, no loop device.
    assert.equal(m.current.volumes[big], undefined);
    await assert.rejects(stat(join(loopPath, `${big}.img`)));
    await assert.rejects(run('docker', ['volume', 'inspect', big]));
    const refused = m.report().volumes.find((v) => v.name === big);
    assert.equal(refused?.phase, 'Refused');
    assert.equal(refused?.error, `STORAGE_QUOTA_EXCEEDED: volume ${big} needs 300 MiB in pool fast; 224 MiB left (256 MiB capacity, 32 MiB allocated to 1 volume)`);

    // Write 40 MiB: the kernel stops it at the volume's size.
    const w = await inContainer('echo keep > /data/marker; dd if=/dev/zero of=/data/fill bs=1M count=40; r=$?; ls -l /data/fill; exit $r');
    assert.notEqual(w.code, 0, w.out);
    assert.match(w.out, /No space left on device/);
    const written = Number(/\s(\d+)\s+\w{3}\s+\d+\s[\d:]+\s\/data\/fill/.exec(w.out)?.[1] ?? Number.NaN);
    console.log(`# loop volume 32 MiB: dd stopped after ${(written / MiB).toFixed(1)} MiB`);
    assert.ok(written > 26 * MiB && written <= 32 * MiB, `wrote ${written} bytes`);

    await m.beforeWorkloads(doc([{ name: vol, pool: 'fast', sizeBytes: 32 * MiB }]));
    const r = m.report();
    const used = r.volumes.find((v) => v.name === vol)?.usedBytes ?? 0;
    assert.ok(used > 26 * MiB, `report usedBytes ${used}`);
    assert.equal(r.pools[0]?.allocatedBytes, 32 * MiB);
    assert.equal(r.pools[0]?.enforcement, 'hard');

    // Grow to 64 MiB: the marker survives and 40 MiB more now fit.
    await m.beforeWorkloads(doc([{ name: vol, pool: 'fast', sizeBytes: 64 * MiB }]));
    assert.equal(m.current.volumes[vol]?.sizeBytes, 64 * MiB);
    const g = await inContainer('cat /data/marker; rm /data/fill; dd if=/dev/zero of=/data/fill bs=1M count=40 && echo WROTE');
    assert.equal(g.code, 0, g.out);
    assert.match(g.out, /keep/);
    assert.match(g.out, /WROTE/);

    // Shrinking is refused, the volume stays at 64 MiB.
    await m.beforeWorkloads(doc([{ name: vol, pool: 'fast', sizeBytes: 32 * MiB }]));
    assert.match(m.report().volumes.find((v) => v.name === vol)?.error ?? '', /^INVALID_SPEC: .*volumes never shrink/);
    assert.equal(m.current.volumes[vol]?.sizeBytes, 64 * MiB);

    // retain: it leaves the document and keeps its data; re-declared it is reused.
    await m.beforeWorkloads(doc([]));
    await m.afterWorkloads();
    assert.equal(m.current.volumes[vol]?.phase, 'Retained');
    await m.beforeWorkloads(doc([{ name: vol, pool: 'fast', sizeBytes: 64 * MiB, reclaimPolicy: 'delete' }]));
    assert.equal(m.current.volumes[vol]?.phase, 'Ready');
    assert.match((await inContainer('cat /data/marker')).out, /keep/);

    // An agent restart re-attaches from storage.json (the device is detached as a reboot would).
    await run('losetup', ['-d', m.current.volumes[vol]?.loopDevice ?? '']);
    const m2 = storageManager({ stateDir, nodeId, prefix: root });
    await m2.start();
    assert.match((await inContainer('cat /data/marker')).out, /keep/);

    // delete: image, loop device and Docker volume go.
    await m2.beforeWorkloads(doc([]));
    await m2.afterWorkloads();
    assert.equal(m2.current.volumes[vol], undefined);
    await assert.rejects(stat(join(loopPath, `${vol}.img`)));
    await assert.rejects(run('docker', ['volume', 'inspect', vol]));
    assert.equal((await loopDevices()).length, before);
  });

  it('a dir pool: accounted quota, bind-mounted directory', async () => {
    const dirPath = poolDir(nodeId, 'plain');
    const name = `${nodeId}-dir`;
    const m = storageManager({ stateDir, nodeId, prefix: root });
    await m.start();
    const d: StorageDocument = { workloads: [], storagePools: [{ name: 'plain', type: 'dir', path: dirPath, capacityBytes: 8 * MiB }], volumes: [{ name, pool: 'plain', sizeBytes: 4 * MiB, reclaimPolicy: 'delete' }] };
    await m.beforeWorkloads(d);
    assert.equal(m.current.volumes[name]?.phase, 'Ready');
    await run('docker', ['run', '--rm', '--label', `dev.persys.node-id=${nodeId}`, '--network', 'none', '-v', `${name}:/d`, IMAGE, 'sh', '-c', 'echo hi > /d/f']);
    assert.equal(await readFile(join(dirPath, name, 'f'), 'utf8'), 'hi\n');
    assert.equal(m.report().pools.find((p) => p.name === 'plain')?.enforcement, 'accounted');
    await m.beforeWorkloads({ ...d, volumes: [] });
    await m.afterWorkloads();
    await assert.rejects(stat(join(dirPath, name)));
  });

  it('SIGKILL during volume creation: the next start completes or redoes it, and no loop device is left attached', async () => {
    const base = (await loopDevices()).length;
    const crashDir = await mkdtemp(join(tmpdir(), 'persys-storage-crash-'));
    try {
      for (let round = 0; round < 3; round++) {
        const child = spawn(process.execPath, ['--import', 'tsx', 'test/helpers/storage-create-child.ts', crashDir, nodeId, root, loopPath, String(48 * MiB)], { stdio: 'ignore' });
        // Kill at a different moment each round (bounded: at most 3 s per round).
        const waitMs = 800 + round * 500;
        await new Promise((r) => setTimeout(r, waitMs));
        child.kill('SIGKILL');
        await new Promise((r) => child.once('exit', r));
        const seen = JSON.parse(await readFile(join(crashDir, 'storage.json'), 'utf8').catch(() => '{"volumes":{}}')) as { volumes: Record<string, { phase: string; step: string }> };
        const v = seen.volumes[`${nodeId}-crash`];
        console.log(`# round ${round}: killed after ${waitMs} ms at ${v ? `${v.phase}/${v.step}` : 'no record'}`);
        const m = storageManager({ stateDir: crashDir, nodeId, prefix: root });
        await m.start();
        const d: StorageDocument = { workloads: [], storagePools: [{ name: 'p', type: 'loop', path: loopPath, capacityBytes: 1024 * MiB }], volumes: [{ name: `${nodeId}-crash`, pool: 'p', sizeBytes: 48 * MiB, reclaimPolicy: 'delete' }] };
        await m.beforeWorkloads(d);
        assert.equal(m.current.volumes[`${nodeId}-crash`]?.phase, 'Ready');
        assert.equal((await loopDevices()).length, base + 1, 'exactly one loop device for the volume');
        const fsck = await run('e2fsck', ['-n', '-f', m.current.volumes[`${nodeId}-crash`]?.path ?? '']).then(() => 0, (e: { code?: number }) => e.code ?? -1);
        assert.equal(fsck, 0, 'the image is a clean ext4 filesystem');
        await m.beforeWorkloads({ ...d, volumes: [] });
        await m.afterWorkloads();
        assert.equal((await loopDevices()).length, base, 'removed: no loop device left');
      }
    } finally {
      await rm(crashDir, { recursive: true, force: true });
    }
  });
});
