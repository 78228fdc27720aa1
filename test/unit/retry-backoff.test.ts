/**
 * The retry schedule with a fake clock: the backoff bounds, the full-jitter range, the cap, the
 * budget, and what resets it. Time never passes for real here: `now` is a variable.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { WorkloadError } from '../../src/errors/index.js';
import { plan } from '../../src/reconcile/planner.js';
import { specHash } from '../../src/reconcile/canonical.js';
import {
  MAX_FAILURES,
  MAX_FAILURE_MESSAGE_BYTES,
  newRecord,
  retryAsked,
  retryBudget,
  retryResetKey,
  withFailure,
  withResetKey,
  withRetryRequested,
  withSuccess,
  capMiddle,
} from '../../src/reconcile/records.js';
import type { Workload } from '../../src/spec/desired-state.js';
import type { WorkloadRecord } from '../../src/store/types.js';
import { backoffCeilingMs, backoffDelayMs } from '../../src/util/backoff.js';
import { seededRandom } from '../helpers/seeded-random.js';

const T0 = Date.parse('2025-06-01T12:00:00.000Z');
const DEFAULTS = { maxAttempts: 10, initialDelaySeconds: 5, maxDelaySeconds: 300, multiplier: 2 };
const transient = () => new WorkloadError('IMAGE_PULL_FAILED', 'Get "http://127.0.0.1:1/v2/": dial tcp 127.0.0.1:1: connect: connection refused');

function workload(extra: Partial<Workload> = {}): Workload {
  return { id: 'web', type: 'container', revision: 'r1', spec: { image: 'persys-test/busybox:1' }, ...extra } as Workload;
}

const seeded = seededRandom;

describe('backoff schedule (full jitter)', () => {
  const policy = { initialDelayMs: 1000, maxDelayMs: 30_000, multiplier: 2 };

  it('the ceiling doubles from the initial delay and stops at the cap', () => {
    const ceilings = Array.from({ length: 8 }, (_, i) => backoffCeilingMs(policy, i + 1));
    assert.deepEqual(ceilings, [1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000]);
  });

  it('the delay lies in [0, ceiling]: random 0 gives 0, random 1 gives the ceiling', () => {
    for (let attempt = 1; attempt <= 10; attempt++) {
      assert.equal(backoffDelayMs(policy, attempt, () => 0), 0);
      assert.equal(backoffDelayMs(policy, attempt, () => 1), backoffCeilingMs(policy, attempt));
      assert.equal(backoffDelayMs(policy, attempt, () => 0.5), Math.round(backoffCeilingMs(policy, attempt) / 2));
    }
  });

  it('a broken random source cannot leave the range', () => {
    assert.equal(backoffDelayMs(policy, 3, () => -5), 0);
    assert.equal(backoffDelayMs(policy, 3, () => 7), 4000);
  });

  it('10,000 jittered delays per attempt spread over the whole range, never outside it', () => {
    const rnd = seeded(42);
    for (let attempt = 1; attempt <= 7; attempt++) {
      const ceiling = backoffCeilingMs(policy, attempt);
      let min = Infinity;
      let max = -Infinity;
      let sum = 0;
      const n = 10_000;
      for (let i = 0; i < n; i++) {
        const d = backoffDelayMs(policy, attempt, rnd);
        assert.ok(d >= 0 && d <= ceiling, `attempt ${attempt}: ${d} outside [0, ${ceiling}]`);
        min = Math.min(min, d);
        max = Math.max(max, d);
        sum += d;
      }
      // Full jitter: uniform over [0, ceiling]; the extremes are reached and the mean is the middle.
      assert.ok(min < ceiling * 0.01, `attempt ${attempt}: min ${min}`);
      assert.ok(max > ceiling * 0.99, `attempt ${attempt}: max ${max}`);
      assert.ok(Math.abs(sum / n - ceiling / 2) < ceiling * 0.02, `attempt ${attempt}: mean ${sum / n}`);
    }
  });

  it('huge attempt counts and multipliers stay finite and capped', () => {
    assert.equal(backoffCeilingMs({ initialDelayMs: 1000, maxDelayMs: 300_000, multiplier: 10 }, 10_000), 300_000);
  });
});

describe('retry budget over time (fake clock)', () => {
  /** Drives one workload through failed attempts exactly as the agent does: plan, fail, advance the clock. */
  function drive(w: Workload, attempts: number, random: () => number, defaults = DEFAULTS) {
    let now = T0;
    let rec: WorkloadRecord = withResetKey(newRecord(w, new Date(now)), retryResetKey(w, specHash(w)));
    const schedule: { attempt: number; at: number; nextRetryAt: number | null; phase: string }[] = [];
    for (let i = 0; i < attempts; i++) {
      const p = plan({ desired: { apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId: 'n', generation: 1, workloads: [w] }, records: { [w.id]: rec }, observed: [], runtimeUp: { container: true, compose: true, vm: true }, now: new Date(now) });
      const step = p.steps[0]!;
      if (step.kind === 'wait') {
        // Nothing may run before nextRetryAt: jump the clock there, and check the gate one ms before.
        const until = Date.parse(step.until!);
        assert.ok(until > now);
        const early = plan({ desired: { apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId: 'n', generation: 1, workloads: [w] }, records: { [w.id]: rec }, observed: [], runtimeUp: { container: true, compose: true, vm: true }, now: new Date(until - 1) });
        assert.equal(early.steps[0]!.kind, 'wait', 'one ms early is still a wait');
        now = until;
        i--;
        continue;
      }
      if (step.kind !== 'create') return { rec, schedule, last: step };
      rec = withFailure(rec, transient(), retryBudget(w, defaults), new Date(now), random);
      schedule.push({ attempt: rec.retry.attempts, at: now, nextRetryAt: rec.retry.nextRetryAt ? Date.parse(rec.retry.nextRetryAt) : null, phase: rec.phase });
    }
    return { rec, schedule, last: undefined };
  }

  it('the workload retry block wins over the config defaults; missing keys take the defaults', () => {
    const b = retryBudget(workload({ retry: { maxAttempts: 3, initialDelaySeconds: 2 } }), DEFAULTS);
    assert.deepEqual(b, { maxAttempts: 3, initialDelayMs: 2000, maxDelayMs: 300_000, multiplier: 2 });
    assert.deepEqual(retryBudget(workload(), DEFAULTS), { maxAttempts: 10, initialDelayMs: 5000, maxDelayMs: 300_000, multiplier: 2 });
  });

  it('with random = 1 every delay is exactly the ceiling: 5, 10, 20, 40 s, then capped at 60 s', () => {
    const w = workload({ retry: { maxAttempts: 8, initialDelaySeconds: 5, maxDelaySeconds: 60, multiplier: 2 } });
    const { schedule, rec } = drive(w, 8, () => 1);
    const delays = schedule.filter((s) => s.nextRetryAt !== null).map((s) => (s.nextRetryAt! - s.at) / 1000);
    assert.deepEqual(delays, [5, 10, 20, 40, 60, 60, 60]);
    // Each attempt ran exactly when the previous backoff ended.
    for (let i = 1; i < schedule.length; i++) assert.equal(schedule[i]!.at, schedule[i - 1]!.nextRetryAt);
    assert.equal(rec.retry.attempts, 8);
    assert.equal(rec.retry.gaveUp, true);
    assert.equal(rec.phase, 'Failed');
    assert.equal(rec.retry.nextRetryAt, null);
    assert.match(rec.message, /Gave up after 8 attempts/);
  });

  it('with real jitter each delay lies within [0, ceiling] of its attempt', () => {
    const w = workload({ retry: { maxAttempts: 12, initialDelaySeconds: 1, maxDelaySeconds: 30, multiplier: 3 } });
    const { schedule } = drive(w, 12, seeded(7));
    const policy = retryBudget(w, DEFAULTS);
    for (const s of schedule) {
      if (s.nextRetryAt === null) continue;
      const d = s.nextRetryAt - s.at;
      assert.ok(d >= 0 && d <= backoffCeilingMs(policy, s.attempt), `attempt ${s.attempt}: ${d} ms`);
    }
  });

  it('after the budget: Failed, gaveUp, and the planner creates nothing more however long we wait', () => {
    const w = workload({ retry: { maxAttempts: 3, initialDelaySeconds: 1, maxDelaySeconds: 1, multiplier: 1 } });
    const { rec, schedule } = drive(w, 3, () => 1);
    assert.deepEqual(schedule.map((s) => s.phase), ['BackingOff', 'BackingOff', 'Failed']);
    const later = plan({ desired: { apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId: 'n', generation: 1, workloads: [w] }, records: { [w.id]: rec }, observed: [], runtimeUp: { container: true, compose: true, vm: true }, now: new Date(T0 + 365 * 86400_000) });
    assert.equal(later.steps[0]!.kind, 'noop');
    assert.match(later.steps[0]!.reason, /gave up after 3 attempts/);
  });

  it('a terminal error gives up at once, whatever the budget', () => {
    const w = workload({ retry: { maxAttempts: 50 } });
    const rec = withFailure(newRecord(w, new Date(T0)), new WorkloadError('IMAGE_NOT_FOUND', 'No such image: x:1'), retryBudget(w, DEFAULTS), new Date(T0));
    assert.equal(rec.retry.attempts, 1);
    assert.equal(rec.retry.gaveUp, true);
    assert.equal(rec.retry.nextRetryAt, null);
    assert.equal(rec.phase, 'Failed');
    assert.equal(rec.error?.message, 'No such image: x:1');
  });

  it('the budget resets on a new retryToken, a new revision and a spec change, not on a desiredState change', () => {
    const w = workload();
    const key = retryResetKey(w, specHash(w));
    assert.notEqual(retryResetKey({ ...w, retryToken: 't2' } as Workload, specHash(w)), key);
    assert.notEqual(retryResetKey({ ...w, revision: 'r2' } as Workload, specHash(w)), key);
    const changed = { ...w, spec: { image: 'persys-test/busybox:2' } } as Workload;
    assert.notEqual(retryResetKey(changed, specHash(changed)), key);
    const stopped = { ...w, desiredState: 'stopped' } as Workload;
    assert.equal(retryResetKey(stopped, specHash(stopped)), key);

    const spent = drive(w, 10, () => 1).rec;
    assert.equal(spent.retry.gaveUp, true);
    const fresh = withResetKey(spent, retryResetKey({ ...w, retryToken: 't2' } as Workload, specHash(w)));
    assert.deepEqual(fresh.retry, { attempts: 0, nextRetryAt: null, gaveUp: false, resetKey: retryResetKey({ ...w, retryToken: 't2' } as Workload, specHash(w)) });
    assert.equal(fresh.failures.length, 10, 'the history is kept across a reset');
  });

  it('a retry request resets attempts and marks the workload as asked; the next success settles the key', () => {
    const w = workload();
    const key = retryResetKey(w, specHash(w));
    const spent = drive(w, 10, () => 1).rec;
    const asked = withRetryRequested(spent, new Date(T0 + 1000));
    assert.equal(asked.retry.attempts, 0);
    assert.equal(asked.retry.gaveUp, false);
    assert.equal(asked.phase, 'Pending');
    assert.ok(retryAsked(asked, key));
    assert.ok(!retryAsked(spent, key));
    // The executor brings the key back in line with the desired workload before the attempt.
    const synced = withResetKey(asked, key);
    assert.equal(synced.retry.resetKey, key);
    assert.ok(!retryAsked(synced, key));
    const p = plan({ desired: { apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId: 'n', generation: 1, workloads: [w] }, records: { web: asked }, observed: [], runtimeUp: { container: true, compose: true, vm: true }, now: new Date(T0 + 1000) });
    assert.equal(p.steps[0]!.kind, 'create');
  });

  it('a success clears the error and the schedule, and keeps the history', () => {
    const w = workload();
    const failed = drive(w, 2, () => 1).rec;
    const ok = withSuccess({ ...failed, phase: 'Starting' }, 'Running', '', new Date(T0 + 60_000));
    assert.equal(ok.error, null);
    assert.deepEqual([ok.retry.attempts, ok.retry.nextRetryAt, ok.retry.gaveUp], [0, null, false]);
    assert.equal(ok.failures.length, 2);
  });

  it(`the history keeps the last ${MAX_FAILURES} failures, newest last, with bounded messages`, () => {
    const w = workload({ retry: { maxAttempts: 100 } });
    let rec = newRecord(w, new Date(T0));
    const long = `start ${'x'.repeat(5000)} end`;
    for (let i = 1; i <= 30; i++) {
      rec = withFailure(rec, new WorkloadError('PORT_CONFLICT', i === 30 ? long : `failure ${i}`), retryBudget(w, DEFAULTS), new Date(T0 + i * 1000), () => 0);
    }
    assert.equal(rec.failures.length, MAX_FAILURES);
    assert.deepEqual(rec.failures.slice(0, 2).map((f) => f.attempt), [11, 12]);
    assert.equal(rec.failures.at(-1)!.attempt, 30);
    const lastMsg = rec.failures.at(-1)!.message;
    assert.ok(Buffer.byteLength(lastMsg) <= MAX_FAILURE_MESSAGE_BYTES, `${Buffer.byteLength(lastMsg)} bytes`);
    assert.ok(lastMsg.startsWith('start x') && lastMsg.endsWith('x end'), 'head and tail survive');
    assert.equal(rec.error?.message, capMiddle(long, 4096));
  });

  it('capMiddle keeps short strings and multi-byte characters whole', () => {
    assert.equal(capMiddle('short', 10), 'short');
    const s = capMiddle('ä'.repeat(100), 21);
    assert.ok(Buffer.byteLength(s) <= 21);
    assert.ok(!s.includes('\uFFFD'));
  });
});
