/**
 * The reconcile loop's single flight never loses a trigger. The gap it closes: a trigger that arrives
 * after the last cycle's "anything pending?" check but before the loop marked itself idle was queued
 * on a run that was already over, so it caused no cycle. Microtask order is deterministic, so trying
 * the late trigger at every microtask depth after the cycle hits that window every time.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { silentLogger } from '../../src/log.js';
import type { Executor } from '../../src/reconcile/executor.js';
import { ReconcileLoop } from '../../src/reconcile/loop.js';
import { SingleFlight } from '../../src/reconcile/single-flight.js';
import { Store } from '../../src/store/store.js';

const microtasks = (n: number): Promise<void> => {
  let p = Promise.resolve();
  for (let i = 0; i < n; i++) p = p.then(() => undefined);
  return p;
};

describe('single-flight reconcile loop', () => {
  it('a trigger at any microtask after a cycle ends still causes a cycle, and its promise settles after it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'persys-loop-'));
    try {
      const store = await Store.open(join(dir, 'state'), silentLogger(), { fsync: false });
      const signal = new AbortController().signal;
      for (let depth = 0; depth <= 40; depth++) {
        let late: Promise<void> | undefined;
        let cyclesWhenLateSettled = -1;
        const loop: ReconcileLoop = new ReconcileLoop({
          store,
          runtimes: [],
          executor: {} as Executor,
          logger: silentLogger(),
          onCycle: () => {
            if (loop.cycles !== 1) return;
            // After the first cycle's summary: the loop is about to check for pending work and go idle.
            void microtasks(depth).then(() => {
              late = loop.trigger(`late at depth ${depth}`, signal).then(() => void (cyclesWhenLateSettled = loop.cycles));
            });
          },
        });
        await loop.trigger('first', signal);
        await microtasks(depth + 5);
        await loop.idle();
        assert.ok(late, `depth ${depth}: the late trigger was sent`);
        await late;
        assert.equal(loop.cycles, 2, `depth ${depth}: the late trigger caused ${loop.cycles - 1} cycle(s)`);
        assert.equal(cyclesWhenLateSettled, 2, `depth ${depth}: the late trigger's promise settled before its cycle ran`);
      }
      await store.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('SingleFlight', () => {
  it('runs one at a time; requests during a run coalesce into exactly one more run', async () => {
    let runs = 0;
    let release: (() => void) | undefined;
    const flight = new SingleFlight(async () => {
      runs++;
      await new Promise<void>((r) => (release = r));
    });
    const a = flight.request();
    await microtasks(2);
    const b = flight.request();
    const c = flight.request();
    assert.equal(runs, 1);
    release!();
    await a;
    await microtasks(5);
    assert.equal(runs, 2, 'b and c share one run');
    release!();
    await Promise.all([b, c]);
    assert.equal(flight.busy, false);
  });

  it('a request made during a run settles only after the next run, never with the run already going', async () => {
    const order: string[] = [];
    let release: (() => void) | undefined;
    const flight = new SingleFlight(async () => {
      order.push('start');
      await new Promise<void>((r) => (release = r));
      order.push('end');
    });
    void flight.request();
    await microtasks(2);
    const during = flight.request().then(() => order.push('answered'));
    release!();
    await microtasks(10);
    release!();
    await during;
    assert.deepEqual(order, ['start', 'end', 'start', 'end', 'answered']);
  });

  it('stop(): no further runs; waiting requests are released', async () => {
    let runs = 0;
    let release: (() => void) | undefined;
    const stop = new AbortController();
    const flight = new SingleFlight(async () => {
      runs++;
      await new Promise<void>((r) => (release = r));
    }, stop.signal);
    void flight.request();
    await microtasks(2);
    const queued = flight.request();
    stop.abort();
    release!();
    await queued;
    assert.equal(runs, 1);
    await flight.request();
    assert.equal(runs, 1);
  });

  it('a run that throws does not wedge the flight', async () => {
    let runs = 0;
    const flight = new SingleFlight(async () => {
      runs++;
      if (runs === 1) throw new Error('boom');
    });
    await flight.request();
    await flight.request();
    assert.equal(runs, 2);
  });
});
