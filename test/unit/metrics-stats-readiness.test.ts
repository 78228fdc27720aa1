import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';

import { createLogger } from '../../src/log.js';
import { computeReadiness, pullMaxAgeMs, type ReadinessInput } from '../../src/metrics/readiness.js';
import { RuntimeHealthBoard, WorkloadStatsCollector } from '../../src/metrics/workload-stats.js';
import type { Runtime, RuntimeHealth, WorkloadUsage } from '../../src/runtimes/runtime.js';

function capture() {
  const lines: { level: number; msg: string; [k: string]: unknown }[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString('utf8').split('\n')) if (l) lines.push(JSON.parse(l) as (typeof lines)[number]);
      cb();
    },
  });
  return { logger: createLogger('debug', stream), lines };
}

function fakeRuntime(state: { health: RuntimeHealth; usage: WorkloadUsage[] | Error }): Runtime {
  return {
    name: 'docker',
    types: ['container'],
    health: () => Promise.resolve(state.health),
    observe: () => Promise.resolve([]),
    usage: () => (state.usage instanceof Error ? Promise.reject(state.usage) : Promise.resolve(state.usage)),
    events: () => Promise.resolve(),
  } as unknown as Runtime;
}

const u = (id: string): WorkloadUsage => ({ workloadId: id, type: 'container', runtimeId: id, cpuSeconds: 1 });

describe('WorkloadStatsCollector', () => {
  it('caches usage per runtime, clears it when the runtime fails, and counts passes', async () => {
    const state: { health: RuntimeHealth; usage: WorkloadUsage[] | Error } = { health: { up: true, reason: 'ok', dataRoot: '/var/lib/docker' }, usage: [u('a'), u('b')] };
    const board = new RuntimeHealthBoard();
    const { logger, lines } = capture();
    const c = new WorkloadStatsCollector({ runtimes: [fakeRuntime(state)], intervalSeconds: 60, health: board, logger });
    const signal = new AbortController().signal;
    await c.collectOnce(signal);
    assert.deepEqual(c.usage().map((x) => x.workloadId), ['a', 'b']);
    assert.equal(board.get('docker')?.up, true);
    assert.equal(board.get('docker')?.dataRoot, '/var/lib/docker');

    // Engine up, usage failing: cleared, one WARN per new reason.
    state.usage = new Error('stats broke');
    await c.collectOnce(signal);
    await c.collectOnce(signal);
    assert.deepEqual(c.usage(), []);
    assert.equal(lines.filter((l) => l.level === 40).length, 1);

    // Engine down: cleared too, and nothing above DEBUG (readiness and the loop report it).
    state.health = { up: false, reason: 'RUNTIME_UNAVAILABLE: connect ENOENT' };
    await c.collectOnce(signal);
    assert.equal(board.get('docker')?.up, false);
    assert.equal(board.get('docker')?.dataRoot, '/var/lib/docker', 'the data root is remembered');
    assert.equal(lines.filter((l) => l.level >= 40).length, 1);

    state.health = { up: true, reason: 'ok' };
    state.usage = [u('a')];
    await c.collectOnce(signal);
    assert.deepEqual(c.usage().map((x) => x.workloadId), ['a']);
    const counts = c.counts.get('docker');
    assert.equal(counts?.ok, 2);
    assert.equal(counts?.error, 3);
  });

  it('keeps the newest health whoever learned it', () => {
    const board = new RuntimeHealthBoard();
    board.update('docker', { up: false, reason: 'down' }, 2000);
    board.update('docker', { up: true, reason: 'up' }, 1000);
    assert.equal(board.get('docker')?.up, false, 'an older observation does not overwrite a newer one');
    board.update('docker', { up: true, reason: 'up' }, 3000);
    assert.equal(board.get('docker')?.up, true);
  });

  it('collects on its interval until aborted', async () => {
    let n = 0;
    const rt = { ...fakeRuntime({ health: { up: true, reason: '' }, usage: [] }), usage: () => (n++, Promise.resolve([])) } as Runtime;
    const ac = new AbortController();
    const c = new WorkloadStatsCollector({ runtimes: [rt], intervalSeconds: 0.05, health: new RuntimeHealthBoard(), logger: capture().logger });
    const done = c.start(ac.signal);
    await new Promise((r) => setTimeout(r, 300));
    ac.abort();
    await done;
    assert.ok(n >= 3 && n <= 10, String(n));
  });
});

describe('computeReadiness', () => {
  const now = Date.parse('2025-01-01T00:10:00Z');
  const base: ReadinessInput = {
    now,
    store: { writable: true },
    runtimes: [{ name: 'docker', health: { up: true, reason: 'docker 20.10', at: now } }],
    absentRuntimes: [{ name: 'libvirt', reason: 'disabled by config' }],
    lastPullSuccessAt: new Date(now - 10_000).toISOString(),
    lastPullError: null,
    pollIntervalSeconds: 30,
    longPollSeconds: 0,
  };
  const ok = (c: Record<string, { ok: boolean }>) => Object.values(c).every((x) => x.ok);

  it('is ready with every component fine, libvirt disabled', () => {
    const c = computeReadiness(base);
    assert.ok(ok(c));
    assert.deepEqual(Object.keys(c).sort(), ['docker', 'libvirt', 'source', 'store']);
    assert.deepEqual(c.libvirt, { ok: true, reason: 'disabled by config' });
  });

  it('names the component and the reason when one is not', () => {
    const down = computeReadiness({ ...base, runtimes: [{ name: 'docker', health: { up: false, reason: 'RUNTIME_UNAVAILABLE: connect ENOENT /x.sock', at: now } }] });
    assert.ok(!ok(down));
    assert.deepEqual(down.docker, { ok: false, reason: 'down: RUNTIME_UNAVAILABLE: connect ENOENT /x.sock' });
    assert.equal(computeReadiness({ ...base, runtimes: [{ name: 'docker', health: undefined }] }).docker?.ok, false);
    const store = computeReadiness({ ...base, store: { writable: false, lastError: 'ENOSPC' } });
    assert.match(store.store?.reason ?? '', /ENOSPC/);
  });

  it('a down runtime that no desired workload needs does not make the node unready', () => {
    const down = { up: false, reason: 'RUNTIME_UNAVAILABLE: virsh not found', at: now };
    const optional = computeReadiness({ ...base, runtimes: [{ name: 'libvirt', health: down, required: false }] });
    assert.equal(optional.libvirt?.ok, true);
    assert.match(optional.libvirt?.reason ?? '', /virsh not found.*not required/);
    const needed = computeReadiness({ ...base, runtimes: [{ name: 'libvirt', health: down, required: true }] });
    assert.equal(needed.libvirt?.ok, false);
  });

  it('wants a successful pull younger than three poll intervals (plus a long-poll hold)', () => {
    assert.equal(pullMaxAgeMs(30, 0), 90_000);
    assert.equal(pullMaxAgeMs(30, 60), 150_000);
    assert.equal(computeReadiness({ ...base, lastPullSuccessAt: new Date(now - 89_000).toISOString() }).source?.ok, true);
    const stale = computeReadiness({
      ...base,
      lastPullSuccessAt: new Date(now - 91_000).toISOString(),
      lastPullError: { code: 'DESIRED_STATE_UNAVAILABLE', message: 'GET https://x: 503' },
    });
    assert.equal(stale.source?.ok, false);
    assert.match(stale.source?.reason ?? '', /91 s ago, older than 90 s \(DESIRED_STATE_UNAVAILABLE: GET https:\/\/x: 503\)/);
    const never = computeReadiness({ ...base, lastPullSuccessAt: null });
    assert.deepEqual(never.source, { ok: false, reason: 'no successful pull yet' });
  });
});
