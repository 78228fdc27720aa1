/**
 * Admission through the whole loop (planner, executor, records) on an in-memory runtime: a denial is
 * recorded once as a terminal failure, costs no retry budget and no engine call on later passes, and
 * is applied as soon as the host has room again, without a new revision.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { silentLogger } from '../../src/log.js';
import { Executor } from '../../src/reconcile/executor.js';
import { ReconcileLoop } from '../../src/reconcile/loop.js';
import { admissionGate, type AdmissionSettings } from '../../src/resources/admission.js';
import { BUILTIN_TYPES } from '../../src/runtimes/registry.js';
import type { TypeDescriptor } from '../../src/runtimes/runtime.js';
import type { DesiredStateDocument } from '../../src/spec/desired-state.js';
import { Store } from '../../src/store/store.js';
import { BundleRuntime, bundleType, type BundleWorkload } from './fake-runtime/bundle-runtime.js';

const MIB = 1024 * 1024;
/** The test runtime's type, asking 10 MiB of memory per unit of size. */
const sized: TypeDescriptor<BundleWorkload> = { ...bundleType, requests: (w) => ({ memoryBytes: (w.spec.size ?? 1) * 10 * MIB }) };
const types = BUILTIN_TYPES.with(sized);
const config = {
  retry: { maxAttempts: 3, initialDelaySeconds: 1, maxDelaySeconds: 2, multiplier: 2 },
  reconcile: { intervalSeconds: 30, concurrency: 2, stuckSeconds: 30 },
};

describe('admission in the loop', () => {
  let dir = '';
  let store: Store;
  let rt: BundleRuntime;
  let loop: ReconcileLoop;
  const signal = new AbortController().signal;
  const settings: AdmissionSettings = { allocatable: { memoryBytes: 25 * MIB }, overcommit: { cpu: 1, memory: 1 }, requireRequests: false, pressure: [] };
  const b = (id: string, size: number): BundleWorkload => ({ id, type: 'bundle', revision: '1', spec: { image: 'app:1', size } });
  let generation = 0;
  const desire = (workloads: BundleWorkload[]) =>
    store.setDesired({ document: { apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId: 'n1', generation: ++generation, workloads } as unknown as DesiredStateDocument, etag: null, receivedAt: new Date().toISOString(), source: 'test' });
  const pass = async () => {
    await loop.trigger('test', signal);
    await loop.idle();
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-adm-loop-'));
    store = await Store.open(dir, silentLogger(), { fsync: false });
    rt = new BundleRuntime();
    const executor = new Executor({ nodeId: 'n1', runtimes: new Map([[sized.type, rt]]), store, config, logger: silentLogger(), types });
    loop = new ReconcileLoop({
      store,
      runtimes: [rt],
      executor,
      logger: silentLogger(),
      types,
      gates: (view) => [admissionGate(settings, { desired: store.data.desired?.document.workloads ?? [], observed: view.observed, records: store.data.records, types })],
    });
  });
  after(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('the second of two does not fit: recorded once, terminal, no engine call; later passes change nothing', async () => {
    await desire([b('b1', 2), b('b2', 2)]);
    await pass();
    assert.deepEqual(rt.calls, ['prepare b1', 'create b1', 'start b1']);
    const r = store.getRecord('b2');
    assert.equal(r?.phase, 'Failed');
    assert.equal(r?.error?.code, 'INSUFFICIENT_RESOURCES');
    assert.equal(r?.error?.transient, false);
    assert.equal(r?.error?.message, 'needs 20 MiB memory; 5 MiB allocatable left (25 MiB allocatable, 20 MiB committed to 1 workload)');
    assert.deepEqual(r?.retry, { ...r!.retry, attempts: 1, gaveUp: true, nextRetryAt: null });
    for (let i = 0; i < 5; i++) await pass();
    assert.deepEqual(rt.calls, ['prepare b1', 'create b1', 'start b1'], 'no call for b2');
    assert.equal(store.getRecord('b2')?.retry.attempts, 1, 'no retry budget spent');
    assert.equal(store.getRecord('b2')?.failures.length, 1);
  });

  it('a node condition stops new admissions with its reason', async () => {
    settings.pressure = [{ type: 'MemoryPressure', reason: 'memory.available 80 MiB < 100 MiB' }];
    await desire([b('b1', 2), b('b2', 2), b('b3', 1)]);
    await pass();
    assert.equal(store.getRecord('b3')?.error?.message, 'the node has MemoryPressure (memory.available 80 MiB < 100 MiB); no new workloads are admitted until it clears');
    assert.equal(store.getRecord('b1')?.phase, 'Running', 'what runs keeps running');
    assert.ok(!rt.calls.includes('create b3'));
  });

  it('the host has room again: both are created, without a new revision', async () => {
    settings.pressure = [];
    settings.allocatable = { memoryBytes: 100 * MIB };
    await pass();
    assert.ok(rt.calls.includes('create b2') && rt.calls.includes('create b3'), rt.calls.join());
    assert.equal(store.getRecord('b2')?.phase, 'Running');
    assert.equal(store.getRecord('b2')?.error, null);
    assert.equal(store.getRecord('b3')?.phase, 'Running');
  });
});
