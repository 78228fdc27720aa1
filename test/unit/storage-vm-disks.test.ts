/**
 * VM disks with `pool:` (docs/storage.md): the document check, the volumes they declare, the storage
 * gate on the VM, and the hash rules (a pool disk's size is grown in place, never a reboot).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as v from 'valibot';
import { specHash } from '../../src/reconcile/canonical.js';
import type { DesiredStep } from '../../src/reconcile/steps.js';
import { BUILTIN_TYPES } from '../../src/runtimes/registry.js';
import { vmType } from '../../src/runtimes/libvirt/type.js';
import { storageGate } from '../../src/storage/gate.js';
import { documentVolumes, planStorage } from '../../src/storage/plan.js';
import { emptyStorageState } from '../../src/storage/types.js';
import { vmWorkload, type VmWorkload } from '../../src/spec/desired-state.js';
import { formatIssues, validateDesiredState } from '../../src/spec/validate.js';

const MiB = 1024 * 1024;
const LV = { name: 'lv', type: 'libvirt', path: '/var/lib/persys-agent/pools/lv', capacityBytes: 128 * MiB } as const;
const doc = (disks: unknown[], extra: Record<string, unknown> = {}) => ({
  apiVersion: 'persys.dev/v1',
  kind: 'DesiredState',
  nodeId: 'n1',
  generation: 1,
  storagePools: [LV, { name: 'lp', type: 'loop', path: '/var/lib/persys-agent/pools/lp', capacityBytes: 64 * MiB }],
  workloads: [{ id: 'web', type: 'container', spec: { image: 'x:1' } }, { id: 'vm1', type: 'vm', spec: { vcpus: 1, memoryMiB: 64, disks } }],
  ...extra,
});
const errors = (d: unknown): string => {
  const r = validateDesiredState(d);
  return r.ok ? 'OK' : formatIssues(r.issues);
};
const vm = (disks: unknown[]): VmWorkload => v.parse(vmWorkload, { id: 'vm1', type: 'vm', spec: { vcpus: 1, memoryMiB: 64, disks } });

describe('VM disks with pool: the document check', () => {
  it('accepts a disk in a declared libvirt pool', () => {
    assert.equal(errors(doc([{ name: 'root', pool: 'lv', sizeBytes: 64 * MiB }])), 'OK');
  });
  it('refuses a pool that is not declared, or not of type libvirt, naming the field', () => {
    assert.match(errors(doc([{ name: 'root', pool: 'nope', sizeBytes: MiB }])), /^workloads\[1\]\.spec\.disks\[0\]\.pool: pool nope is not declared in storagePools$/m);
    assert.match(errors(doc([{ name: 'd', sizeBytes: MiB }, { name: 'root', pool: 'lp', sizeBytes: MiB }])), /^workloads\[1\]\.spec\.disks\[1\]\.pool: pool lp is of type loop; VM disks need a pool of type libvirt$/m);
  });
  it('refuses a pool disk without sizeBytes or with an image, and a volume name two declarations share', () => {
    assert.match(errors(doc([{ name: 'root', pool: 'lv' }])), /a disk with pool needs sizeBytes/);
    assert.match(errors(doc([{ name: 'root', pool: 'lv', sizeBytes: MiB, image: { path: '/x.qcow2' } }])), /image is not supported with pool/);
    assert.match(errors(doc([{ name: 'root', pool: 'lv', sizeBytes: MiB }], { volumes: [{ name: 'vm1.root', pool: 'lv', sizeBytes: MiB }] })), /disks\[0\]\.pool: the volume of this disk, vm1\.root, has the name of volumes\[0\]'s/);
  });
});

describe('VM disks with pool: volumes, gate and hash', () => {
  it('declares one volume per pool disk, after the document volumes, with the disk reclaimPolicy (default delete)', () => {
    const w = vm([{ name: 'root', pool: 'lv', sizeBytes: 64 * MiB, reclaimPolicy: 'retain' }, { name: 'tmp', sizeBytes: MiB }, { name: 'b', pool: 'lv', sizeBytes: 16 * MiB }]);
    const vols = documentVolumes({ workloads: [w], volumes: [{ name: 'data', pool: 'lv', sizeBytes: 8 * MiB }] }, BUILTIN_TYPES);
    assert.deepEqual(vols, [
      { name: 'data', pool: 'lv', sizeBytes: 8 * MiB },
      { name: 'vm1.root', pool: 'lv', sizeBytes: 64 * MiB, reclaimPolicy: 'retain' },
      { name: 'vm1.b', pool: 'lv', sizeBytes: 16 * MiB, reclaimPolicy: 'delete' },
    ]);
    assert.deepEqual(vmType.volumeRefs?.(w), ['vm1.root', 'vm1.b']);
    // Pool disks are the pool's quota, not the host's disk request; the plain disk still is.
    assert.equal(vmType.requests?.(w)?.diskBytes, MiB);
  });

  it('a pool disk over the pool quota refuses the VM with STORAGE_QUOTA_EXCEEDED; one being created holds it', () => {
    const w = vm([{ name: 'a', pool: 'lv', sizeBytes: 200 * MiB }]);
    const vols = documentVolumes({ workloads: [w] }, BUILTIN_TYPES);
    const p = planStorage({ pools: [LV], volumes: vols, state: emptyStorageState(), allowedPrefixes: ['/var/lib/persys-agent/pools'] });
    assert.equal(p.volumes.some((a) => a.kind === 'create'), false, 'nothing is created');
    const step = { kind: 'create', target: 'workload', workloadId: 'vm1', workload: w, reason: 'new' } as unknown as DesiredStep;
    const gate = storageGate(BUILTIN_TYPES, new Set(vols.map((x) => x.name)), p, emptyStorageState());
    const out = gate.check(step, undefined, new Date());
    assert.equal(out.kind, 'deny');
    assert.match(out.reason, /^STORAGE_QUOTA_EXCEEDED: volume vm1\.a needs 200 MiB in pool lv; 128 MiB left/);
    const fits = vm([{ name: 'a', pool: 'lv', sizeBytes: 64 * MiB }]);
    const p2 = planStorage({ pools: [LV], volumes: documentVolumes({ workloads: [fits] }, BUILTIN_TYPES), state: emptyStorageState(), allowedPrefixes: ['/var/lib/persys-agent/pools'] });
    assert.equal(p2.volumes[0]?.kind, 'create');
    const held = storageGate(BUILTIN_TYPES, new Set(['vm1.a']), p2, emptyStorageState()).check({ ...step, workload: fits } as DesiredStep, undefined, new Date());
    assert.equal(held.kind, 'wait');
  });

  it('a pool disk growing does not change the spec hash (grown in place); its pool does; plain disks as before', () => {
    const h = (disks: unknown[]) => specHash(vm(disks));
    assert.equal(h([{ name: 'a', pool: 'lv', sizeBytes: 64 * MiB }]), h([{ name: 'a', pool: 'lv', sizeBytes: 96 * MiB }]));
    assert.notEqual(h([{ name: 'a', pool: 'lv', sizeBytes: 64 * MiB }]), h([{ name: 'a', pool: 'lv2', sizeBytes: 64 * MiB }]));
    assert.notEqual(h([{ name: 'a', sizeBytes: 64 * MiB }]), h([{ name: 'a', sizeBytes: 96 * MiB }]));
    assert.notEqual(h([{ name: 'a', sizeBytes: 64 * MiB }]), h([{ name: 'a', pool: 'lv', sizeBytes: 64 * MiB }]));
  });
});

describe('VM disks with volume: a document volume of a libvirt pool, attached', () => {
  const vols = [
    { name: 'data', pool: 'lv', sizeBytes: 32 * MiB, reclaimPolicy: 'retain' },
    { name: 'logs', pool: 'lp', sizeBytes: 16 * MiB },
  ];
  it('accepts a declared volume of a libvirt pool; the VM refers to it and asks no disk of the host', () => {
    assert.equal(errors(doc([{ name: 'root', sizeBytes: MiB }, { name: 'data', volume: 'data' }], { volumes: vols })), 'OK');
    const w = vm([{ name: 'root', sizeBytes: MiB }, { name: 'd', volume: 'data', bus: 'scsi' }]);
    assert.deepEqual(vmType.volumeRefs?.(w), ['data']);
    assert.deepEqual(vmType.ownVolumes?.(w), [], 'the volume is the document\'s, not one the VM declares');
    assert.equal(vmType.requests?.(w)?.diskBytes, MiB, 'only the plain disk is the host\'s');
    const gate = storageGate(BUILTIN_TYPES, new Set(['data']), { denied: new Map() }, emptyStorageState());
    const step = { kind: 'create', workloadId: 'vm1', workload: w, specHash: 'h', reason: 'new' } as unknown as DesiredStep;
    assert.match(String((gate.check(step, undefined, new Date(0)) as { reason: string }).reason), /^waiting for volume data \(not created yet\) before create$/);
  });
  it('refuses, naming the field: an undeclared volume, one of a loop pool, a second attachment, another user', () => {
    assert.match(errors(doc([{ name: 'd', volume: 'nope' }], { volumes: vols })), /^workloads\[1\]\.spec\.disks\[0\]\.volume: volume nope is not declared in volumes$/m);
    assert.match(errors(doc([{ name: 'd', volume: 'logs' }], { volumes: vols })), /^workloads\[1\]\.spec\.disks\[0\]\.volume: volume logs is in pool lp of type loop; a VM disk attaches volumes of a pool of type libvirt$/m);
    assert.match(errors(doc([{ name: 'a', volume: 'data' }, { name: 'b', volume: 'data' }], { volumes: vols })), /^workloads\[1\]\.spec\.disks\[1\]\.volume: volume data is already attached by workloads\[1\]\.spec\.disks\[0\]; a volume is the disk of one VM only$/m);
    const shared: Record<string, unknown> = doc([{ name: 'd', volume: 'data' }], { volumes: vols });
    shared.workloads = [{ id: 'web', type: 'container', spec: { image: 'x:1', volumes: [{ type: 'volume', source: 'data', target: '/data' }] } }, (shared.workloads as unknown[])[1]];
    assert.match(errors(shared), /^workloads\[1\]\.spec\.disks\[0\]\.volume: volume data is attached as a disk here and also used by workloads\[0\]; a VM's disk volume has no other user$/m);
  });
  it('refuses size, image, pool or reclaimPolicy beside volume: those are the volume\'s', () => {
    for (const extra of [{ sizeBytes: MiB }, { image: { path: '/x.qcow2' } }, { pool: 'lv' }, { reclaimPolicy: 'retain' }]) {
      assert.match(errors(doc([{ name: 'd', volume: 'data', ...extra }], { volumes: vols })), /a disk with volume takes its size, pool and reclaimPolicy from that volume/, JSON.stringify(extra));
    }
  });
  it('the volume is in the hash (another volume is another disk); a VM without one hashes as before', () => {
    const a = vm([{ name: 'd', volume: 'data' }]);
    const b = vm([{ name: 'd', volume: 'other' }]);
    assert.notEqual(specHash(a), specHash(b));
    const plain = vm([{ name: 'root', sizeBytes: MiB }]);
    assert.equal(specHash(plain), specHash(vm([{ name: 'root', sizeBytes: MiB, volume: undefined }])));
  });
});
