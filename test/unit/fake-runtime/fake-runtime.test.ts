import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as v from 'valibot';

import { silentLogger } from '../../../src/log.js';
import { Executor } from '../../../src/reconcile/executor.js';
import { MAX_SETTLE_ROUNDS, ReconcileLoop } from '../../../src/reconcile/loop.js';
import { plan } from '../../../src/reconcile/planner.js';
import { BUILTIN_TYPES } from '../../../src/runtimes/registry.js';
import type { DesiredStateDocument } from '../../../src/spec/desired-state.js';
import { buildStatusReport } from '../../../src/status/build-report.js';
import { Store } from '../../../src/store/store.js';
import { BundleRuntime, bundleHash, bundleType, bundleWorkload, type BundleWorkload } from './bundle-runtime.js';

/*
 * A third runtime with its own type, schema, hash, report block and composite observation is
 * planned, executed and reported by the generic core: nothing outside this folder knows it, it is
 * injected into the registry with BUILTIN_TYPES.with(bundleType).
 */

const types = BUILTIN_TYPES.with(bundleType);
const config = {
  retry: { maxAttempts: 3, initialDelaySeconds: 1, maxDelaySeconds: 2, multiplier: 2 },
  reconcile: { intervalSeconds: 30, concurrency: 2, stuckSeconds: 30 },
};

describe('a third runtime, injected', () => {
  let dir = '';
  let store: Store;
  let rt: BundleRuntime;
  let loop: ReconcileLoop;
  let generation = 0;
  const signal = new AbortController().signal;

  const desire = (workloads: BundleWorkload[]) => {
    // Its workloads pass its own schema; the document around them is the agent's.
    for (const w of workloads) v.parse(bundleWorkload, w);
    const document = { apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId: 'n1', generation: ++generation, workloads } as unknown as DesiredStateDocument;
    return store.setDesired({ document, etag: null, receivedAt: new Date().toISOString(), source: 'test' });
  };
  const report = () =>
    buildStatusReport({
      nodeId: 'n1',
      seq: 1,
      agentVersion: 'test',
      hostname: 'h',
      data: store.data,
      runtimes: { [rt.name]: 'up' },
      now: new Date(),
      types,
      live: (type, id, state) => (type === bundleType.type ? rt.live(id, state) : undefined),
    });
  const bundle = (spec: BundleWorkload['spec'], extra: Partial<BundleWorkload> = {}): BundleWorkload => ({ id: 'b1', type: 'bundle', revision: '1', spec, ...extra });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-fake-rt-'));
    store = await Store.open(dir, silentLogger(), { fsync: false });
    rt = new BundleRuntime();
    const executor = new Executor({ nodeId: 'n1', runtimes: new Map([[bundleType.type, rt]]), store, config, logger: silentLogger(), types });
    loop = new ReconcileLoop({ store, runtimes: [rt], executor, logger: silentLogger(), types });
  });
  after(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('plans a create, executes it, keeps the runtime state, reports its block, then settles', async () => {
    await desire([bundle({ image: 'app:1', volumes: ['logs', 'data'] })]);
    const cycles = loop.cycles;
    await loop.trigger('test', signal);
    await loop.idle();
    assert.deepEqual(rt.calls, ['prepare b1', 'create b1', 'start b1']);
    // Re-plan until settled: the cycle after the create found nothing left to do, in the same trigger.
    assert.equal(loop.cycles - cycles, 2);
    assert.equal(loop.lastCycle?.plan.steps.map((s) => `${s.kind} ${s.workloadId}`).join(), 'noop b1');
    const r = store.getRecord('b1');
    assert.equal(r?.phase, 'Running');
    assert.equal(r?.specHash, bundleHash(bundle({ image: 'app:1', volumes: ['logs', 'data'] }), 2));
    assert.deepEqual(r?.runtimeState, { version: 1, data: { token: 'tok-b1-1' } });
    const pod = [...rt.pods.values()][0];
    assert.equal(pod?.hashVersion, 2, 'labelled with the type hash version');
    const entry = report().workloads.find((w) => w.id === 'b1');
    assert.equal(entry?.type, 'bundle');
    assert.deepEqual(entry?.bundle, { pods: 1, volumes: ['data', 'logs'], tokenSet: true });
  });

  it('a spec change is a recreate worded by the type; remove is told it is a replace; the state is handed back', async () => {
    rt.calls.length = 0;
    await desire([bundle({ image: 'app:1', volumes: ['data', 'logs'], size: 3 })]);
    const p = plan({ desired: store.data.desired?.document ?? null, records: store.data.records, observed: await rt.observe(), runtimeUp: { bundle: true }, now: new Date(), types });
    assert.deepEqual(p.steps.map((s) => `${s.kind}: ${s.reason}`), ['recreate: size changed (default -> 3)'], 'volumes in another order are the same spec');
    await loop.trigger('test', signal);
    await loop.idle();
    assert.equal(rt.calls[0], 'prepare b1');
    assert.match(rt.calls[1] ?? '', /^stop b1 3$/, 'the type says the stop timeout');
    assert.match(rt.calls[2] ?? '', /^remove b1 pod-1 replace$/);
    assert.deepEqual(store.getRecord('b1')?.runtimeState, { version: 1, data: { token: 'tok-b1-1' } }, 'the token survived the recreate');
  });

  it('the runtime, not the planner, says which of two objects is the duplicate', async () => {
    rt.calls.length = 0;
    const current = [...rt.pods.values()][0]!;
    // A newer but incomplete pod (no volumes): newest-wins would keep it, this runtime keeps the complete one.
    rt.plant({ ...current, volumes: [], createdAt: '2030-01-01T00:00:00.000Z' });
    await loop.trigger('test', signal);
    await loop.idle();
    assert.deepEqual(rt.calls, ['stop b1 -', 'remove b1 pod-3 gc']);
    assert.deepEqual([...rt.pods.keys()], [current.id]);
  });

  it('an object labelled with the previous hash version is judged by its rules: no recreate', async () => {
    rt.calls.length = 0;
    // The same spec as before under version 2 (volumes are a set there); version 1 kept their order.
    const w = bundle({ image: 'app:1', volumes: ['logs', 'data'], size: 3 });
    await desire([w]);
    for (const id of [...rt.pods.keys()]) rt.pods.delete(id);
    rt.plant({ workloadId: 'b1', revision: '1', specHash: bundleHash(w, 1), hashVersion: 1, state: 'running', volumes: ['data', 'logs'] });
    assert.notEqual(bundleHash(w, 1), bundleHash(w, 2), 'the two versions hash differently');
    await loop.trigger('test', signal);
    await loop.idle();
    assert.deepEqual(rt.calls, [], 'adopted without touching the engine');
    assert.equal(store.getRecord('b1')?.phase, 'Running');
  });

  it('host policy is decided in the plan: a denied spec is a deny step, the engine is not touched', async () => {
    rt.calls.length = 0;
    await desire([bundle({ image: 'app:2', privileged: true }, { id: 'b2' }), bundle({ image: 'app:1', volumes: ['logs', 'data'], size: 3 })]);
    await loop.trigger('test', signal);
    await loop.idle();
    const denied = store.getRecord('b2');
    assert.equal(denied?.error?.code, 'POLICY_DENIED');
    assert.equal(denied?.retry.gaveUp, true);
    assert.deepEqual(rt.calls, []);
  });

  it('re-plan until settled is bounded: an engine that never settles costs at most 1 + 10 cycles per trigger', async () => {
    rt.calls.length = 0;
    // This engine forgets every start: each cycle plans a start again, and each start "succeeds".
    const start = rt.start.bind(rt);
    rt.start = async (o) => {
      await start(o);
      const p = rt.pods.get(o.runtimeId);
      if (p) p.state = 'created';
    };
    for (const p of rt.pods.values()) p.state = 'created';
    try {
      const cycles = loop.cycles;
      await loop.trigger('test', signal);
    await loop.idle();
      assert.equal(loop.cycles - cycles, 1 + MAX_SETTLE_ROUNDS);
      assert.equal(rt.calls.filter((c) => c === 'start b1').length, 1 + MAX_SETTLE_ROUNDS);
    } finally {
      rt.start = start;
    }
  });

  it('removed from desired: remove is told why and the record goes', async () => {
    rt.calls.length = 0;
    await desire([]);
    await loop.trigger('test', signal);
    await loop.idle();
    assert.deepEqual(rt.calls.filter((c) => c.startsWith('remove')).map((c) => c.replace(/pod-\d+/, 'pod')), ['remove b1 pod removed-from-desired']);
    assert.equal(store.getRecord('b1'), undefined);
    assert.equal(rt.pods.size, 0);
  });
});
