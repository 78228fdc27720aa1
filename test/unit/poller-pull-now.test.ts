/**
 * `/v1/sync` answers after the pull it caused: SourcePoller.pullNow() settles only once a pull that
 * started after the call has been handled (onResult done), also when a pull was already in flight.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import type { PullResult } from '../../src/sync/source.js';
import { SourcePoller } from '../../src/sync/poller.js';

describe('SourcePoller.pullNow', () => {
  it('settles after a pull that started after the call, not the one already in flight', async () => {
    const order: string[] = [];
    const releases: (() => void)[] = [];
    let n = 0;
    const abort = new AbortController();
    const poller = new SourcePoller({
      source: {
        pull: () => {
          const i = ++n;
          order.push(`pull ${i} started`);
          return new Promise<PullResult>((resolve) => releases.push(() => resolve({ kind: 'not-modified' } as PullResult)));
        },
      },
      nodeId: 'n',
      pollIntervalSeconds: 3600,
      longPollSeconds: 0,
      state: () => ({ currentEtag: null, storedGeneration: null }),
      onResult: () => void order.push(`pull ${n} handled`),
    });
    const running = poller.run(abort.signal);
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(order, ['pull 1 started']);
    const answered = poller.pullNow().then(() => order.push('sync answered'));
    releases.shift()!();
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(order, ['pull 1 started', 'pull 1 handled', 'pull 2 started'], 'pull 1 does not answer the sync');
    releases.shift()!();
    await answered;
    assert.deepEqual(order, ['pull 1 started', 'pull 1 handled', 'pull 2 started', 'pull 2 handled', 'sync answered']);
    // Shutdown releases a waiting caller.
    await new Promise((r) => setImmediate(r));
    const waiting = poller.pullNow();
    await new Promise((r) => setImmediate(r));
    abort.abort();
    releases.shift()?.();
    await waiting;
    await running;
  });
});
