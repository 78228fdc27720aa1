import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { plan, type Plan } from '../../src/reconcile/planner.js';
import { retryResetKey } from '../../src/reconcile/records.js';
import { settleRecords, type SettleInput } from '../../src/reconcile/transitions.js';
import { BUILTIN_TYPES } from '../../src/runtimes/registry.js';
import type { ObservedWorkload } from '../../src/runtimes/runtime.js';
import type { ContainerWorkload, DesiredStateDocument, VmWorkload, Workload } from '../../src/spec/desired-state.js';
import type { Phase } from '../../src/spec/status-report.js';
import type { WorkloadRecord } from '../../src/store/types.js';

/*
 * The record transitions that follow from a plan (what loop.ts applies before executing), as a pure
 * function tested in tables: observed state in, records out.
 */

const NOW = new Date('2025-06-01T12:00:00.000Z');
const EARLIER = '2025-06-01T11:00:00.000Z';
const FINISHED = '2025-06-01T11:59:00.000Z';

const cw = (id: string, extra: Partial<ContainerWorkload> = {}): ContainerWorkload => ({ id, type: 'container', revision: 'r1', spec: { image: 'x:1' }, ...extra });
const vmw = (id: string): VmWorkload => ({ id, type: 'vm', revision: 'r1', spec: { vcpus: 1, memoryMiB: 64 } });
const doc = (workloads: Workload[]): DesiredStateDocument => ({ apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId: 'n', generation: 1, workloads });

function obs(w: Workload, o: Partial<ObservedWorkload> = {}): ObservedWorkload {
  return { workloadId: w.id, type: w.type, runtime: 'rt', runtimeId: `rt-${w.id}`, name: w.id, revision: w.revision, specHash: BUILTIN_TYPES.hash(w), state: 'running', ...o };
}
function rec(w: Workload, r: Partial<WorkloadRecord> = {}): WorkloadRecord {
  const hash = BUILTIN_TYPES.hash(w);
  return {
    id: w.id,
    type: w.type,
    revision: w.revision,
    specHash: hash,
    desiredState: 'running',
    phase: 'Running',
    actualState: 'running',
    message: '',
    runtimeId: `rt-${w.id}`,
    error: null,
    retry: { attempts: 0, nextRetryAt: null, gaveUp: false, resetKey: retryResetKey(w, hash) },
    failures: [],
    updatedAt: EARLIER,
    phaseSince: EARLIER,
    ...r,
  };
}

function settle(ws: Workload[], records: WorkloadRecord[], observed: ObservedWorkload[], extra: Partial<SettleInput> & { runtimeUp?: Record<string, boolean> } = {}) {
  const byId = Object.fromEntries(records.map((r) => [r.id, r]));
  const runtimeUp = extra.runtimeUp ?? { container: true, vm: true, compose: true };
  const p: Plan = plan({ desired: doc(ws), records: byId, observed, runtimeUp, now: NOW });
  const input: SettleInput = { plan: p, records: byId, desired: doc(ws), observed, downReason: {}, logs: new Map(), types: BUILTIN_TYPES, now: NOW, ...extra };
  const before = JSON.stringify(input.records);
  const out = settleRecords(input);
  assert.equal(JSON.stringify(input.records), before, 'settleRecords must not change its input');
  return out;
}

interface Row {
  name: string;
  w: Workload;
  r: Partial<WorkloadRecord>;
  o: Partial<ObservedWorkload>;
  logs?: string[];
  /** Expected record after, or null for "unchanged (nothing written)". */
  want: null | { phase: Phase; actual: string; error?: string | null; failures?: number; logTail?: number; message?: RegExp };
}

/** A record the transitions already settled once. */
const SETTLED: Partial<WorkloadRecord> = { message: 'running as desired', evidence: {} };
const w = cw('web');
const job = cw('job', { spec: { image: 'x:1', restartPolicy: 'no' } });
const ROWS: Row[] = [
  { name: 'running and known: unchanged', w, r: SETTLED, o: {}, want: null },
  { name: 'running, first settle: the message and evidence are written once', w, r: {}, o: {}, want: { phase: 'Running', actual: 'running', message: /^running as desired$/ } },
  { name: 'crashed running workload: CrashLoop, error, history, log tail', w, r: {}, o: { state: 'restarting', exitCode: 3, restartCount: 2, finishedAt: FINISHED }, logs: ['boom'], want: { phase: 'CrashLoop', actual: 'restarting', error: 'CRASH_LOOP', failures: 1, logTail: 1 } },
  { name: 'same exit seen again: no second history entry', w, r: { phase: 'CrashLoop', actualState: 'restarting', evidence: { exitCode: 3, restartCount: 2, finishedAt: FINISHED }, failures: [{ at: FINISHED, code: 'CRASH_LOOP', message: 'exited with code 3' }] }, o: { state: 'restarting', exitCode: 3, restartCount: 2, finishedAt: FINISHED }, want: { phase: 'CrashLoop', actual: 'restarting', error: 'CRASH_LOOP', failures: 1 } },
  { name: 'OOM exit: Failed with OUT_OF_MEMORY', w: job, r: {}, o: { state: 'exited', exitCode: 137, oomKilled: true, finishedAt: FINISHED }, want: { phase: 'Failed', actual: 'exited', error: 'OUT_OF_MEMORY', failures: 1 } },
  { name: 'clean exit under restartPolicy no: Completed, no error', w: job, r: {}, o: { state: 'exited', exitCode: 0, finishedAt: FINISHED }, want: { phase: 'Completed', actual: 'exited', error: null, failures: 0 } },
  { name: 'running again: the observed error and log tail go', w, r: { phase: 'CrashLoop', error: { code: 'CRASH_LOOP', message: 'x', userMessage: 'y', transient: true }, evidence: { logTail: ['boom'] } }, o: { state: 'running' }, want: { phase: 'Running', actual: 'running', error: null, logTail: 0 } },
  { name: 'an apply error is not cleared by running', w, r: { ...SETTLED, error: { code: 'IMAGE_PULL_FAILED', message: 'x', userMessage: 'y', transient: true } }, o: { state: 'running' }, want: null },
  { name: 'a VM keeps no exit evidence (its type says so)', w: vmw('v'), r: { message: 'running as desired' }, o: { state: 'running', exitCode: 0 }, want: null },
  { name: 'an odd-state mark goes once the object settles', w, r: { engineState: { runtimeId: 'rt-web', state: 'dead', since: EARLIER } }, o: { state: 'running' }, want: { phase: 'Running', actual: 'running' } },
];

describe('record transitions (pure): settled workloads take what the engine reports', () => {
  for (const row of ROWS) {
    it(row.name, () => {
      const before = rec(row.w, row.r);
      const out = settle([row.w], [before], [obs(row.w, row.o)], row.logs ? { logs: new Map([[row.w.id, row.logs]]) } : {});
      if (row.want === null) {
        assert.deepEqual(out.put, [], `nothing written, got ${JSON.stringify(out.put)}`);
        return;
      }
      assert.equal(out.put.length, 1);
      const after = out.put[0]!;
      assert.equal(after.phase, row.want.phase);
      assert.equal(after.actualState, row.want.actual);
      if (row.want.error !== undefined) assert.equal(after.error?.code ?? null, row.want.error);
      if (row.want.failures !== undefined) assert.equal(after.failures.length, row.want.failures);
      if (row.want.message !== undefined) assert.match(after.message, row.want.message);
      if (row.want.logTail !== undefined) assert.equal(after.evidence?.logTail?.length ?? 0, row.want.logTail);
      assert.equal(after.engineState, undefined);
    });
  }

  it('a workload that gave up keeps its phase and error; only its actual state follows', () => {
    // A new spec gave up; the previous revision keeps serving (a noop), and is seen running again.
    const before = rec(w, {
      phase: 'Failed',
      actualState: 'exited',
      error: { code: 'IMAGE_NOT_FOUND', message: 'x', userMessage: 'y', transient: false },
      retry: { attempts: 1, nextRetryAt: null, gaveUp: true, resetKey: retryResetKey(w, BUILTIN_TYPES.hash(w)) },
    });
    const out = settle([w], [before], [obs(w, { specHash: 'sha256:previous', state: 'running' })]);
    assert.equal(out.put.length, 1);
    assert.equal(out.put[0]?.phase, 'Failed');
    assert.equal(out.put[0]?.error?.code, 'IMAGE_NOT_FOUND');
    assert.equal(out.put[0]?.actualState, 'running');
  });

  it('runtime down: RUNTIME_UNAVAILABLE with the reason; a running one stays Running', () => {
    const v = vmw('v');
    const out = settle([v], [rec(v)], [], { runtimeUp: { vm: false, container: true }, downReason: { vm: 'libvirt is down: no socket' } });
    assert.equal(out.put.length, 1);
    assert.equal(out.put[0]?.error?.code, 'RUNTIME_UNAVAILABLE');
    assert.equal(out.put[0]?.message, 'libvirt is down: no socket');
    assert.equal(out.put[0]?.phase, 'Running');
  });

  it('runtime down: a backoff ends (the engine going away under a step built it); the attempts stay', () => {
    const c = cw('c');
    const backingOff = rec(c, { phase: 'BackingOff', actualState: 'exited', retry: { attempts: 3, nextRetryAt: '2025-06-01T12:05:00.000Z', gaveUp: false, resetKey: retryResetKey(c, BUILTIN_TYPES.hash(c)) } });
    const out = settle([c], [backingOff], [], { runtimeUp: { container: false, vm: true }, downReason: { container: 'docker is down' } });
    assert.equal(out.put[0]?.phase, 'Pending');
    assert.equal(out.put[0]?.retry.nextRetryAt, null);
    assert.equal(out.put[0]?.retry.attempts, 3);
    // Back up: the start is planned at once, not at the old nextRetryAt.
    const p = plan({ desired: doc([c]), records: { c: out.put[0] as WorkloadRecord }, observed: [obs(c, { state: 'exited', exitCode: 137 })], runtimeUp: { container: true }, now: NOW });
    assert.deepEqual(p.steps.map((s) => s.kind), ['start']);
  });

  it('runtime down and no record: a Pending record with the error', () => {
    const v = vmw('v');
    const out = settle([v], [], [], { runtimeUp: { vm: false } });
    assert.equal(out.put[0]?.phase, 'Pending');
    assert.equal(out.put[0]?.actualState, 'unknown');
  });

  it('records nobody wants are forgotten; an unknown one is not', () => {
    const out = settle([], [rec(cw('gone'))], []);
    assert.deepEqual(out.forget, ['gone']);
  });

  it('a refused phase move is reported, not thrown, and the others still settle', () => {
    // Pulling -> Running skips an apply step: the phase machine refuses it.
    const a = cw('a');
    const b = cw('b');
    const out = settle([a, b], [rec(a, { phase: 'Pulling' }), rec(b, { phase: 'CrashLoop' })], [obs(a), obs(b)]);
    assert.deepEqual(out.problems.map((p) => p.workloadId), ['a']);
    assert.deepEqual(out.put.map((r) => `${r.id} ${r.phase}`), ['b Running']);
  });
});

describe('legacy runtime state', () => {
  it('generated passwords of agents before contract v2 move into their records once', async () => {
    const { moveLegacySecrets } = await import('../../src/runtimes/legacy-state.js');
    const { emptyStoreData } = await import('../../src/store/types.js');
    const d = emptyStoreData();
    d.records.v = rec(vmw('v'));
    d.records.k = { ...rec(vmw('k')), runtimeState: { version: 1, data: { password: 'kept' } } };
    d.vmSecrets = { v: { password: 'pw1' }, k: { password: 'old' }, gone: { password: 'x' } };
    assert.equal(moveLegacySecrets(d), true);
    assert.deepEqual(d.records.v?.runtimeState, { version: 1, data: { password: 'pw1' } });
    assert.deepEqual(d.records.k?.runtimeState, { version: 1, data: { password: 'kept' } });
    assert.equal(d.vmSecrets, undefined);
    assert.equal(moveLegacySecrets(d), false);
  });

  it('crash evidence of records before contract v2 moves to evidence', async () => {
    const { hasLegacyRuntimeFacts, moveLegacyEvidence } = await import('../../src/runtimes/legacy-state.js');
    const { emptyStoreData } = await import('../../src/store/types.js');
    const d = emptyStoreData();
    d.records.w = { ...rec(cw('w')), ...({ container: { exitCode: 3, logTail: ['boom'] } } as object) };
    assert.equal(hasLegacyRuntimeFacts(d), true);
    assert.equal(moveLegacyEvidence(d), true);
    assert.deepEqual(d.records.w?.evidence, { exitCode: 3, logTail: ['boom'] });
    assert.equal(hasLegacyRuntimeFacts(d), false);
  });
});
