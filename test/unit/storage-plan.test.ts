import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BUILTIN_TYPES } from '../../src/runtimes/registry.js';
import type { DesiredStep } from '../../src/reconcile/steps.js';
import { storageGate } from '../../src/storage/gate.js';
import { planStorage, quotaMessage, shrinkMessage, underPrefix } from '../../src/storage/plan.js';
import { emptyStorageState, type PoolDecl, type StorageState, type VolumeDecl, type VolumeState } from '../../src/storage/types.js';
import { validateDesiredState } from '../../src/spec/validate.js';

const MiB = 1024 * 1024;
const PREFIX = ['/var/lib/persys-agent/pools'];
const loopPool: PoolDecl = { name: 'fast', type: 'loop', path: '/var/lib/persys-agent/pools/fast', capacityBytes: 256 * MiB };

function vol(name: string, sizeBytes: number, extra: Partial<VolumeState> = {}): VolumeState {
  return { name, pool: 'fast', poolType: 'loop', sizeBytes, reclaimPolicy: 'retain', phase: 'Ready', step: 'engine', path: `/var/lib/persys-agent/pools/fast/${name}.img`, createdAt: '2026-01-01T00:00:00Z', ...extra };
}
function state(...vols: VolumeState[]): StorageState {
  const s = emptyStorageState();
  s.pools.fast = { ...loopPool };
  for (const v of vols) s.volumes[v.name] = v;
  return s;
}
const run = (volumes: VolumeDecl[], st: StorageState = emptyStorageState(), pools: PoolDecl[] = [loopPool]) => planStorage({ pools, volumes, state: st, allowedPrefixes: PREFIX });

describe('storage plan: pool accounting and admission', () => {
  it('admits volumes in document order until the pool is full, with the exact numbers', () => {
    const p = run([
      { name: 'data', pool: 'fast', sizeBytes: 32 * MiB },
      { name: 'big', pool: 'fast', sizeBytes: 300 * MiB },
      { name: 'small', pool: 'fast', sizeBytes: 200 * MiB },
    ]);
    assert.deepEqual(p.volumes.map((a) => [a.name, a.kind]), [['data', 'create'], ['big', 'deny'], ['small', 'create']]);
    assert.equal(p.denied.get('big')?.code, 'STORAGE_QUOTA_EXCEEDED');
    assert.equal(p.denied.get('big')?.message, 'volume big needs 300 MiB in pool fast; 224 MiB left (256 MiB capacity, 32 MiB allocated to 1 volume)');
    assert.deepEqual(p.accounts, [{ name: 'fast', type: 'loop', enforcement: 'hard', capacityBytes: 256 * MiB, allocatedBytes: 232 * MiB, volumes: 2 }]);
  });

  it('counts retained volumes that left the document against the pool', () => {
    const p = run([{ name: 'new', pool: 'fast', sizeBytes: 200 * MiB }], state(vol('old', 100 * MiB, { phase: 'Retained' })));
    assert.equal(p.denied.get('new')?.message, 'volume new needs 200 MiB in pool fast; 156 MiB left (256 MiB capacity, 100 MiB allocated to 1 volume)');
  });

  it('fills a pool exactly', () => {
    const p = run([{ name: 'a', pool: 'fast', sizeBytes: 256 * MiB }]);
    assert.equal(p.volumes[0]?.kind, 'create');
  });

  it('a dir pool is accounted, loop and libvirt are hard', () => {
    const pools: PoolDecl[] = [
      { name: 'd', type: 'dir', path: '/var/lib/persys-agent/pools/d', capacityBytes: MiB },
      { name: 'l', type: 'libvirt', path: '/var/lib/persys-agent/pools/l', capacityBytes: MiB },
    ];
    const p = run([], emptyStorageState(), pools);
    assert.deepEqual(p.accounts.map((a) => [a.name, a.enforcement]), [['d', 'accounted'], ['l', 'hard']]);
  });

  it('a pool outside policy.allowedStoragePrefixes is POLICY_DENIED, and so are its volumes', () => {
    const p = run([{ name: 'x', pool: 'etc', sizeBytes: MiB }], emptyStorageState(), [{ name: 'etc', type: 'dir', path: '/etc/pools', capacityBytes: MiB }]);
    assert.deepEqual(p.pools[0], { kind: 'deny', name: 'etc', code: 'POLICY_DENIED', message: 'pool etc: path /etc/pools is not under policy.allowedStoragePrefixes (/var/lib/persys-agent/pools)' });
    assert.equal(p.denied.get('x')?.code, 'POLICY_DENIED');
  });

  it('prefixes match by path segment', () => {
    assert.equal(underPrefix('/var/lib/persys-agent/pools', PREFIX), true);
    assert.equal(underPrefix('/var/lib/persys-agent/pools/a/b', PREFIX), true);
    assert.equal(underPrefix('/var/lib/persys-agent/poolsx', PREFIX), false);
    assert.equal(underPrefix('/anything', ['/']), true);
  });

  it('a null document plans nothing', () => {
    const p = planStorage({ pools: null, volumes: null, state: state(vol('a', MiB, { reclaimPolicy: 'delete' })), allowedPrefixes: PREFIX });
    assert.deepEqual(p.volumes, []);
  });
});

describe('storage plan: grow and shrink', () => {
  it('grows by the difference, checked against what is left', () => {
    const p = run([{ name: 'data', pool: 'fast', sizeBytes: 64 * MiB }], state(vol('data', 32 * MiB)));
    assert.equal(p.volumes[0]?.kind, 'grow');
    assert.equal(p.volumes[0]?.kind === 'grow' ? p.volumes[0].toBytes : 0, 64 * MiB);
    assert.equal(p.accounts[0]?.allocatedBytes, 64 * MiB);
  });
  it('refuses a grow the pool has no room for', () => {
    const p = run([{ name: 'data', pool: 'fast', sizeBytes: 300 * MiB }], state(vol('data', 32 * MiB)));
    assert.equal(p.denied.get('data')?.code, 'STORAGE_QUOTA_EXCEEDED');
    assert.equal(p.denied.get('data')?.message, 'growing volume data from 32 MiB to 300 MiB needs 268 MiB more in pool fast; 224 MiB left (256 MiB capacity, 32 MiB allocated to 1 volume)');
  });
  it('never shrinks: a clear error', () => {
    const p = run([{ name: 'data', pool: 'fast', sizeBytes: 16 * MiB }], state(vol('data', 32 * MiB)));
    assert.equal(p.denied.get('data')?.code, 'INVALID_SPEC');
    assert.equal(p.denied.get('data')?.message, shrinkMessage('data', 16 * MiB, 32 * MiB));
    assert.equal(
      shrinkMessage('data', 16 * MiB, 32 * MiB),
      'volume data: sizeBytes 16777216 (16 MiB) is smaller than its current 33554432 (32 MiB); volumes never shrink (declare 33554432 or more, or a volume with a new name)',
    );
  });
  it('a grow interrupted half way is finished', () => {
    const p = run([{ name: 'data', pool: 'fast', sizeBytes: 64 * MiB }], state(vol('data', 32 * MiB, { phase: 'Growing', growingTo: 64 * MiB })));
    assert.equal(p.volumes[0]?.kind, 'grow');
  });
  it('the same size is a noop', () => {
    assert.equal(run([{ name: 'data', pool: 'fast', sizeBytes: 32 * MiB }], state(vol('data', 32 * MiB))).volumes[0]?.kind, 'noop');
  });
  it('moving a volume to another pool is refused', () => {
    const other: PoolDecl = { ...loopPool, name: 'slow', path: '/var/lib/persys-agent/pools/slow' };
    const p = run([{ name: 'data', pool: 'slow', sizeBytes: 32 * MiB }], state(vol('data', 32 * MiB)), [loopPool, other]);
    assert.equal(p.denied.get('data')?.message, 'volume data lives in pool fast; moving a volume to pool slow is not supported (declare a volume with a new name)');
  });
});

describe('storage plan: reclaim and crash recovery', () => {
  it('retain keeps a volume that left the document; re-declared it is reused', () => {
    const left = run([], state(vol('data', 32 * MiB)));
    assert.deepEqual(left.volumes.map((a) => [a.kind, a.kind === 'update' ? a.changes : null]), [['update', { phase: 'Retained' }]]);
    const back = run([{ name: 'data', pool: 'fast', sizeBytes: 32 * MiB }], state(vol('data', 32 * MiB, { phase: 'Retained' })));
    assert.deepEqual(back.volumes.map((a) => [a.kind, a.kind === 'update' ? a.changes : null]), [['update', { phase: 'Ready' }]]);
  });
  it('delete removes a volume that left the document', () => {
    assert.equal(run([], state(vol('data', 32 * MiB, { reclaimPolicy: 'delete' }))).volumes[0]?.kind, 'delete');
  });
  it('an unfinished creation is resumed while declared and removed once it is not', () => {
    const s = state(vol('data', 32 * MiB, { phase: 'Creating', step: 'image' }));
    assert.equal(run([{ name: 'data', pool: 'fast', sizeBytes: 32 * MiB }], s).volumes[0]?.kind, 'resume');
    assert.equal(run([], s).volumes[0]?.kind, 'delete');
  });
  it('an interrupted delete is finished even when the volume is declared again', () => {
    const s = state(vol('data', 32 * MiB, { phase: 'Deleting' }));
    assert.equal(run([{ name: 'data', pool: 'fast', sizeBytes: 32 * MiB }], s).volumes[0]?.kind, 'delete');
  });
  it('quotaMessage words a single volume', () => {
    assert.equal(quotaMessage('v', MiB, { name: 'p', type: 'dir', enforcement: 'accounted', capacityBytes: MiB, allocatedBytes: MiB, volumes: 1 }), 'volume v needs 1 MiB in pool p; 0 B left (1 MiB capacity, 1 MiB allocated to 1 volume)');
  });
});

describe('storage gate', () => {
  const w = { id: 'web', type: 'container', spec: { image: 'x:1', volumes: [{ type: 'volume', source: 'data', target: '/data' }, { type: 'volume', source: 'plain', target: '/p' }] } };
  const step = { kind: 'create', target: 'workload', workloadId: 'web', workload: w, specHash: 'h', hashVersion: 1, reason: 'new workload' } as unknown as DesiredStep;
  const now = new Date('2026-01-01T00:00:00Z');
  it('denies a workload whose volume is refused, with the volume\'s code and message', () => {
    const p = run([{ name: 'data', pool: 'fast', sizeBytes: 300 * MiB }]);
    const out = storageGate(BUILTIN_TYPES, new Set(['data']), p, emptyStorageState()).check(step, undefined, now);
    assert.equal(out.kind, 'deny');
    assert.equal(out.kind === 'deny' ? out.code : '', 'STORAGE_QUOTA_EXCEEDED');
    assert.equal(out.kind === 'deny' ? out.untilHostChanges : false, true);
    assert.deepEqual(out.kind === 'deny' ? out.violations : [], ['volume data needs 300 MiB in pool fast; 256 MiB left (256 MiB capacity, 0 B allocated to 0 volumes)']);
  });
  it('holds a workload until its volume is Ready; undeclared names are plain Docker volumes', () => {
    const p = run([{ name: 'data', pool: 'fast', sizeBytes: 32 * MiB }]);
    const held = storageGate(BUILTIN_TYPES, new Set(['data']), p, state(vol('data', 32 * MiB, { phase: 'Creating', step: 'image' }))).check(step, undefined, now);
    assert.equal(held.kind, 'wait');
    assert.equal(held.reason, 'waiting for volume data (Creating) before create');
    const ready = storageGate(BUILTIN_TYPES, new Set(['data']), p, state(vol('data', 32 * MiB))).check(step, undefined, now);
    assert.equal(ready, step);
  });
});

describe('document: volumes and storagePools', () => {
  const doc = (extra: object) => ({ apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId: 'n', generation: 1, workloads: [], ...extra });
  it('accepts pools and volumes', () => {
    const r = validateDesiredState(doc({ storagePools: [loopPool], volumes: [{ name: 'data', pool: 'fast', sizeBytes: MiB, reclaimPolicy: 'delete' }] }));
    assert.equal(r.ok, true, JSON.stringify(r));
  });
  it('names an undeclared pool, duplicate names and a bad type', () => {
    const r = validateDesiredState(
      doc({
        storagePools: [loopPool, { ...loopPool, type: 'nfs' }],
        volumes: [{ name: 'a', pool: 'nope', sizeBytes: MiB }, { name: 'a', pool: 'fast', sizeBytes: MiB }],
      }),
    );
    assert.equal(r.ok, false);
    const text = r.ok ? '' : r.issues.map((i) => `${i.path}: ${i.message}`).join('\n');
    assert.match(text, /storagePools\[1\]\.type: must be dir, loop or libvirt/);
    assert.match(text, /volumes\[0\]\.pool: pool nope is not declared in storagePools/);
    assert.match(text, /volumes\[1\]\.name: duplicate volume name \(already used by volumes\[0\]\)/);
  });
});
