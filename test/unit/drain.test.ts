import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { silentLogger } from '../../src/log.js';
import { drainSteps } from '../../src/reconcile/drain.js';

describe('drainSteps', () => {
  it('nothing running: idle at once, nothing aborted', async () => {
    let aborted = false;
    const out = await drainSteps({ idle: async () => undefined, inFlight: () => [], abortSteps: () => (aborted = true), quiesce: async () => undefined, drainSeconds: 30, logger: silentLogger() });
    assert.equal(out, 'idle');
    assert.equal(aborted, false);
  });

  it('a step that finishes within the drain time is not aborted', async () => {
    let aborted = false;
    let finish!: () => void;
    const running = new Promise<void>((r) => (finish = r));
    setTimeout(() => finish(), 20);
    const out = await drainSteps({ idle: () => running, inFlight: () => ['web'], abortSteps: () => (aborted = true), quiesce: async () => undefined, drainSeconds: 5, logger: silentLogger() });
    assert.equal(out, 'drained');
    assert.equal(aborted, false);
  });

  it('a step still running when the drain time is up is aborted, and its cleanup is waited for', async () => {
    const order: string[] = [];
    let finish!: () => void;
    const running = new Promise<void>((r) => (finish = r));
    const out = await drainSteps({
      idle: () => running,
      inFlight: () => ['web'],
      abortSteps: () => {
        order.push('abort');
        finish();
      },
      quiesce: async () => void order.push('quiesce'),
      drainSeconds: 0.05,
      logger: silentLogger(),
    });
    assert.equal(out, 'aborted');
    assert.deepEqual(order, ['abort', 'quiesce']);
  });
});
