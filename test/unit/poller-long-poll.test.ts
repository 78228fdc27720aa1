/**
 * The poller decides "the server holds requests" from `Preference-Applied: wait=N` only, never from
 * how long a pull took; the wait it asks for is jittered down by up to 1/16.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { jitteredWaitSeconds, serverHoldsRequests, SourcePoller } from '../../src/sync/poller.js';
import { parsePreferenceAppliedWait, type PullOptions, type PullResult } from '../../src/sync/source.js';
import { SourceError } from '../../src/errors/index.js';
import type { DesiredStateDocument } from '../../src/spec/desired-state.js';

/** A fake source: each pull takes `delayMs` and answers `answer()`; records the wait asked for. */
function fakeSource(delayMs: number, answer: () => PullResult) {
  const asked: Array<number | undefined> = [];
  return {
    asked,
    async pull(opts: PullOptions): Promise<PullResult> {
      asked.push(opts.waitSeconds);
      await new Promise((r) => setTimeout(r, delayMs));
      return answer();
    },
  };
}

async function runFor(poller: SourcePoller, ms: number): Promise<void> {
  const ac = new AbortController();
  const run = poller.run(ac.signal);
  await new Promise((r) => setTimeout(r, ms));
  ac.abort();
  await run;
}

function poller(source: ReturnType<typeof fakeSource>, longPollSeconds: number, pollIntervalSeconds = 60): SourcePoller {
  return new SourcePoller({
    source,
    nodeId: 'n1',
    pollIntervalSeconds,
    longPollSeconds,
    state: () => ({ currentEtag: '"e"', storedGeneration: 1 }),
    onResult: () => undefined,
  });
}

describe('long-poll: Preference-Applied, not timing', () => {
  it('a slow static 304 (1.1 s, no Preference-Applied) is not "held": one pull, then the interval', async () => {
    const source = fakeSource(1100, () => ({ kind: 'not-modified' }));
    await runFor(poller(source, 90), 3000);
    assert.equal(source.asked.length, 1, `pulls in 3 s against a slow static host: ${source.asked.length}`);
  });

  it('an answer with Preference-Applied goes straight back (bounded by the spin floor)', async () => {
    const source = fakeSource(50, () => ({ kind: 'not-modified', waitApplied: 90 }));
    await runFor(poller(source, 90), 1000);
    // Each cycle is max(50 ms, 250 ms floor): 3..5 pulls in a second, never a tight loop.
    assert.ok(source.asked.length >= 3 && source.asked.length <= 5, `pulls: ${source.asked.length}`);
  });

  it('a 200 with Preference-Applied is also re-polled at once; a 200 without it waits the interval', async () => {
    const doc: DesiredStateDocument = { apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId: 'n1', generation: 1, workloads: [] };
    const held = fakeSource(10, () => ({ kind: 'updated', document: doc, etag: '"x"', raw: doc, signedBy: [], waitApplied: 30 }));
    await runFor(poller(held, 30), 700);
    assert.ok(held.asked.length >= 2, `held pulls: ${held.asked.length}`);
    const plain = fakeSource(10, () => ({ kind: 'updated', document: doc, etag: '"x"', raw: doc, signedBy: [] }));
    await runFor(poller(plain, 30), 700);
    assert.equal(plain.asked.length, 1);
  });

  it('without longPollSeconds no wait is asked for, and Preference-Applied is ignored', async () => {
    const source = fakeSource(10, () => ({ kind: 'not-modified', waitApplied: 90 }));
    await runFor(poller(source, 0), 600);
    assert.deepEqual(source.asked, [undefined]);
  });

  it('serverHoldsRequests: only a success with wait > 0', () => {
    assert.equal(serverHoldsRequests({ kind: 'not-modified' }), false);
    assert.equal(serverHoldsRequests({ kind: 'not-modified', waitApplied: 0 }), false);
    assert.equal(serverHoldsRequests({ kind: 'not-modified', waitApplied: 5 }), true);
    assert.equal(serverHoldsRequests(new SourceError('DESIRED_STATE_UNAVAILABLE', 'x')), false);
  });

  it('parses Preference-Applied', () => {
    assert.equal(parsePreferenceAppliedWait(undefined), undefined);
    assert.equal(parsePreferenceAppliedWait('wait=90'), 90);
    assert.equal(parsePreferenceAppliedWait('respond-async, wait=12'), 12);
    assert.equal(parsePreferenceAppliedWait('return=minimal'), undefined);
    assert.equal(parsePreferenceAppliedWait('wait="7"'), 7);
  });
});

describe('the wait asked for', () => {
  it('is never more than longPollSeconds and at most 1/16 less', () => {
    for (const n of [1, 10, 16, 90, 300, 3600]) {
      for (const r of [0, 0.25, 0.5, 0.999999]) {
        const w = jitteredWaitSeconds(n, () => r);
        assert.ok(w <= n && w >= Math.max(1, n - n / 16), `n=${n} r=${r} -> ${w}`);
      }
    }
    assert.equal(jitteredWaitSeconds(0), 0);
  });

  it('spreads 10,000 agents asking for 90 s over 6 distinct waits (85..90)', () => {
    let seed = 42;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const seen = new Map<number, number>();
    for (let i = 0; i < 10_000; i++) {
      const w = jitteredWaitSeconds(90, random);
      seen.set(w, (seen.get(w) ?? 0) + 1);
    }
    assert.deepEqual([...seen.keys()].sort((a, b) => a - b), [85, 86, 87, 88, 89, 90]);
    for (const count of seen.values()) assert.ok(count > 1000, `a bucket holds ${count}`);
  });

  it('is what the poller sends', async () => {
    const source = fakeSource(10, () => ({ kind: 'not-modified' }));
    await runFor(poller(source, 90), 200);
    const w = source.asked[0];
    assert.ok(w !== undefined && w >= 85 && w <= 90, `asked ${w}`);
  });
});
