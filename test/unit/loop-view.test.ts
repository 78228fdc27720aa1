/**
 * The runtime status a report carries must be the one the records in it were settled against. A
 * pass that saw an engine come back settles records (errors cleared) and then executes for a while;
 * a report sent meanwhile paired those records with the previous pass's "down" status. The loop's
 * lastView is set as soon as a pass has observed, before it touches a record.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { silentLogger } from '../../src/log.js';
import type { Executor, StepResult } from '../../src/reconcile/executor.js';
import { ReconcileLoop } from '../../src/reconcile/loop.js';
import type { Step } from '../../src/reconcile/steps.js';
import type { ObservedWorkload, Runtime, RuntimeHealth } from '../../src/runtimes/runtime.js';
import type { DesiredStateDocument } from '../../src/spec/desired-state.js';
import { Store } from '../../src/store/store.js';

describe('the loop view a report reads', () => {
  it('is the observation of the pass that is executing, not of the pass before it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'persys-loop-view-'));
    try {
      const store = await Store.open(join(dir, 'state'), silentLogger(), { fsync: false });
      let up = false;
      const running: ObservedWorkload = { workloadId: 'w1', runtime: 'docker', runtimeId: 'c1', state: 'running' } as ObservedWorkload;
      const rt = {
        name: 'docker',
        types: [{ type: 'container' }],
        health: async (): Promise<RuntimeHealth> => (up ? { up: true } : { up: false, reason: 'connect ENOENT /run/d.sock' }) as RuntimeHealth,
        observe: async (): Promise<ObservedWorkload[]> => (up ? [running] : []),
      } as unknown as Runtime;
      const seen: { view: string | undefined; previous: string | undefined; error: string | null | undefined }[] = [];
      const executor = {
        execute: async (steps: readonly Step[]): Promise<StepResult[]> => {
          seen.push({ view: loop.lastView?.status.docker, previous: loop.lastCycle?.view.status.docker, error: store.getRecord('w2')?.error?.code ?? null });
          return steps.map((step) => ({ step, ok: true }) as StepResult);
        },
      } as unknown as Executor;
      const loop = new ReconcileLoop({ store, runtimes: [rt], executor, logger: silentLogger() });
      const image = { image: 'nginx:1' };
      const document = {
        apiVersion: 'persys.dev/v1',
        kind: 'DesiredState',
        nodeId: 'n1',
        generation: 1,
        workloads: [
          { id: 'w1', type: 'container', revision: '1', spec: image },
          { id: 'w2', type: 'container', revision: '1', spec: image },
        ],
      } as unknown as DesiredStateDocument;
      await store.setDesired({ document, etag: null, receivedAt: new Date().toISOString(), source: 'test' });
      const signal = new AbortController().signal;

      await loop.runOnce(signal);
      assert.equal(seen.length, 0, 'nothing executes while the engine is down');
      assert.match(loop.lastView?.status.docker ?? '', /^down: connect ENOENT/);
      assert.equal(store.getRecord('w2')?.error?.code, 'RUNTIME_UNAVAILABLE');

      up = true;
      await loop.runOnce(signal);
      assert.equal(seen.length, 1, 'the pass that saw the engine back executed steps');
      assert.equal(seen[0]?.view, 'up', 'while it executed, the view a report reads said up');
      assert.match(seen[0]?.previous ?? '', /^down/, 'the finished pass before it had seen the engine down');
      assert.equal(loop.lastView, loop.lastCycle?.view);
      await store.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
