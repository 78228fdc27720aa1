import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { VolumeOps } from '../../src/storage/host-ops.js';
import type { PoolDecl, VolumeState } from '../../src/storage/types.js';
import { createVolume, deleteVolume, growVolume, reattachVolume, resumeVolume, type VolumeContext } from '../../src/storage/volumes.js';

const MiB = 1024 * 1024;
const pool: PoolDecl = { name: 'fast', type: 'loop', path: '/p/fast', capacityBytes: 256 * MiB };

/** Ops that log each call together with the phase/step the durable record had when it was made. */
function harness(opts: { failAt?: string; attached?: string } = {}) {
  const log: string[] = [];
  const saved = new Map<string, VolumeState>();
  const durable = (name: string) => {
    const s = saved.get(name);
    return s ? `${s.phase}/${s.step}` : 'none';
  };
  const op =
    (name: string, ret?: () => string) =>
    async (...args: unknown[]): Promise<never> => {
      const vol = [...saved.values()][0]?.name ?? '';
      log.push(`${name} [${durable(vol)}]`);
      if (opts.failAt === name) throw new Error(`${name} failed`);
      void args;
      return (ret ? ret() : undefined) as never;
    };
  const ops: VolumeOps = {
    mkdir: op('mkdir'),
    removePath: op('removePath'),
    createImage: op('createImage'),
    growImage: op('growImage'),
    mkfs: op('mkfs'),
    attach: op('attach', () => opts.attached ?? '/dev/loop7'),
    detachAll: op('detachAll'),
    link: op('link'),
    resizeFs: op('resizeFs'),
    engineCreate: op('engineCreate'),
    engineRemove: op('engineRemove'),
    libvirtPoolEnsure: op('libvirtPoolEnsure'),
    libvirtVolCreate: op('libvirtVolCreate', () => '/p/lv/data.qcow2'),
    libvirtVolResize: op('libvirtVolResize'),
    libvirtVolDelete: op('libvirtVolDelete'),
  };
  const ctx: VolumeContext = {
    ops,
    nodeId: 'n1',
    now: () => new Date('2026-01-01T00:00:00Z'),
    records: {
      get: (n) => saved.get(n),
      put: async (v) => void saved.set(v.name, structuredClone(v)),
      remove: async (n) => void saved.delete(n),
    },
  };
  return { ctx, log, saved };
}

describe('volume steps: crash-safe order', () => {
  it('loop: intent is durable before the image, the image formatted before it is attached, attached before Docker sees it', async () => {
    const h = harness();
    const s = await createVolume(h.ctx, pool, { name: 'data', pool: 'fast', sizeBytes: 32 * MiB });
    assert.deepEqual(h.log, [
      'detachAll [Creating/intent]',
      'removePath [Creating/intent]',
      'createImage [Creating/intent]',
      'mkfs [Creating/image]',
      'attach [Creating/formatted]',
      'mkdir [Creating/formatted]',
      'link [Creating/formatted]',
      'engineCreate [Creating/attached]',
    ]);
    assert.equal(s.phase, 'Ready');
    assert.equal(s.loopDevice, '/dev/loop7');
    assert.equal(s.devicePath, '/p/fast/.dev/data');
    assert.equal(h.saved.get('data')?.phase, 'Ready');
  });

  it('a crash before mkfs finished: the image is thrown away (and any loop device detached) and made again', async () => {
    const h = harness({ failAt: 'mkfs' });
    await assert.rejects(createVolume(h.ctx, pool, { name: 'data', pool: 'fast', sizeBytes: 32 * MiB }), /mkfs failed/);
    const left = h.saved.get('data');
    assert.equal(left?.step, 'image');
    const h2 = harness();
    await h2.ctx.records.put(left as VolumeState);
    await resumeVolume(h2.ctx, pool, left as VolumeState);
    assert.deepEqual(h2.log.slice(0, 4), ['detachAll [Creating/image]', 'removePath [Creating/image]', 'createImage [Creating/image]', 'mkfs [Creating/image]']);
  });

  it('a crash after mkfs: the formatted image is kept and attached (an existing attachment reused)', async () => {
    const h = harness({ attached: '/dev/loop3' });
    const at: VolumeState = { name: 'data', pool: 'fast', poolType: 'loop', sizeBytes: 32 * MiB, reclaimPolicy: 'retain', phase: 'Creating', step: 'formatted', path: '/p/fast/data.img', createdAt: 'x' };
    await h.ctx.records.put(at);
    const s = await resumeVolume(h.ctx, pool, at);
    assert.deepEqual(h.log, ['attach [Creating/formatted]', 'mkdir [Creating/formatted]', 'link [Creating/formatted]', 'engineCreate [Creating/attached]']);
    assert.equal(s.loopDevice, '/dev/loop3');
  });

  it('grow: the target size is recorded before the image grows, the filesystem after', async () => {
    const h = harness();
    const ready: VolumeState = { name: 'data', pool: 'fast', poolType: 'loop', sizeBytes: 32 * MiB, reclaimPolicy: 'retain', phase: 'Ready', step: 'engine', path: '/p/fast/data.img', createdAt: 'x' };
    await h.ctx.records.put(ready);
    const s = await growVolume(h.ctx, pool, ready, 64 * MiB);
    assert.deepEqual(h.log, ['growImage [Growing/engine]', 'attach [Growing/engine]', 'resizeFs [Growing/engine]']);
    assert.equal(s.sizeBytes, 64 * MiB);
    assert.equal(s.growingTo, undefined);
    await assert.rejects(growVolume(h.ctx, pool, s, 16 * MiB), /refusing to shrink/);
  });

  it('delete: marked Deleting first; Docker volume, then loop device, then image; the record goes last', async () => {
    const h = harness();
    const ready: VolumeState = { name: 'data', pool: 'fast', poolType: 'loop', sizeBytes: 32 * MiB, reclaimPolicy: 'delete', phase: 'Ready', step: 'engine', path: '/p/fast/data.img', devicePath: '/p/fast/.dev/data', createdAt: 'x' };
    await h.ctx.records.put(ready);
    await deleteVolume(h.ctx, 'fast', ready);
    assert.deepEqual(h.log, ['engineRemove [Deleting/engine]', 'detachAll [Deleting/engine]', 'removePath [Deleting/engine]', 'removePath [Deleting/engine]']);
    assert.equal(h.saved.has('data'), false);
  });

  it('reattach at start: a loop volume gets its device again and the new device is recorded', async () => {
    const h = harness({ attached: '/dev/loop5' });
    const ready: VolumeState = { name: 'data', pool: 'fast', poolType: 'loop', sizeBytes: 32 * MiB, reclaimPolicy: 'retain', phase: 'Ready', step: 'engine', path: '/p/fast/data.img', devicePath: '/p/fast/.dev/data', loopDevice: '/dev/loop0', createdAt: 'x' };
    await h.ctx.records.put(ready);
    const s = await reattachVolume(h.ctx, ready);
    assert.equal(s.loopDevice, '/dev/loop5');
    assert.deepEqual(h.log, ['attach [Ready/engine]', 'link [Ready/engine]']);
    // An image whose mkfs never finished is never attached.
    const h2 = harness();
    await reattachVolume(h2.ctx, { ...ready, phase: 'Creating', step: 'image' });
    assert.deepEqual(h2.log, []);
  });

  it('dir and libvirt pools', async () => {
    const h = harness();
    await createVolume(h.ctx, { ...pool, type: 'dir', path: '/p/d' }, { name: 'data', pool: 'fast', sizeBytes: MiB, mode: 0o700 });
    assert.deepEqual(h.log, ['mkdir [Creating/intent]', 'engineCreate [Creating/formatted]']);
    const h2 = harness();
    const s = await createVolume(h2.ctx, { ...pool, type: 'libvirt', path: '/p/lv' }, { name: 'data', pool: 'fast', sizeBytes: 64 * MiB });
    assert.deepEqual(h2.log, ['libvirtVolDelete [Creating/intent]', 'libvirtVolCreate [Creating/intent]']);
    assert.equal(s.path, '/p/lv/data.qcow2');
  });
});
