import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { canonicalSpec, specHash } from '../../src/reconcile/canonical.js';
import { plan, type Plan, type PlanInput } from '../../src/reconcile/planner.js';
import { retryResetKey } from '../../src/reconcile/records.js';
import type { Step, StepKind } from '../../src/reconcile/steps.js';
import type { ObservedWorkload } from '../../src/runtimes/runtime.js';
import type { ContainerSpec } from '../../src/spec/container.js';
import type { ComposeWorkload, ContainerWorkload, DesiredStateDocument, VmWorkload, Workload, WorkloadType } from '../../src/spec/desired-state.js';
import type { ActualState, Phase } from '../../src/spec/status-report.js';
import type { WorkloadRecord } from '../../src/store/types.js';

// ------------------------------------------------------------------------------------------------
// Fixtures
// ------------------------------------------------------------------------------------------------

const NOW = new Date('2025-06-01T12:00:00.000Z');
const LATER = '2025-06-01T12:05:00.000Z';
const EARLIER = '2025-06-01T11:55:00.000Z';
const UP: Record<WorkloadType, boolean> = { container: true, compose: true, vm: true };
const GAVE_UP = 'gave up after 5 attempts (change retryToken or revision, or run persys-agent retry)';

function cw(id: string, spec: Partial<ContainerSpec> = {}, extra: Partial<Omit<ContainerWorkload, 'id' | 'type' | 'spec'>> = {}): ContainerWorkload {
  return { id, type: 'container', revision: 'r1', spec: { image: 'nginx:1.27', ...spec }, ...extra };
}
function vmw(id: string, extra: Partial<Omit<VmWorkload, 'id' | 'type'>> = {}): VmWorkload {
  return { id, type: 'vm', revision: 'r1', spec: { vcpus: 1, memoryMiB: 512 }, ...extra };
}
function composew(id: string, extra: Partial<Omit<ComposeWorkload, 'id' | 'type'>> = {}): ComposeWorkload {
  return { id, type: 'compose', revision: 'r1', spec: { project: id, composeYaml: 'services:\n  app:\n    image: x\n' }, ...extra };
}

function doc(workloads: Workload[]): DesiredStateDocument {
  return { apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId: 'n1', generation: 1, workloads };
}

/** The engine object of `w` as the agent would have created it. */
function obs(w: Workload, o: Partial<ObservedWorkload> = {}): ObservedWorkload {
  return {
    workloadId: w.id,
    type: w.type,
    runtime: w.type === 'vm' ? 'libvirt' : 'docker',
    runtimeId: `rt-${w.id}`,
    name: `persys-${w.id}`,
    revision: w.revision,
    specHash: specHash(w),
    state: 'running',
    createdAt: '2025-06-01T10:00:00.000Z',
    ...o,
  };
}

/** A settled record for `w`, with a retry budget that belongs to the current reset key. */
function rec(w: Workload, r: Partial<WorkloadRecord> = {}): WorkloadRecord {
  const hash = specHash(w);
  return {
    id: w.id,
    type: w.type,
    revision: w.revision,
    specHash: hash,
    desiredState: w.desiredState ?? 'running',
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
const CLEANUP = 'failed terminally (gave up); removing its runtime resources, the record and error stay until the desired state changes';
const gaveUp = (w: Workload, attempts = 5): Partial<WorkloadRecord> => ({
  phase: 'Failed',
  retry: { attempts, nextRetryAt: null, gaveUp: true, resetKey: retryResetKey(w, specHash(w)) },
});
const backingOff = (w: Workload, until = LATER, attempts = 2): Partial<WorkloadRecord> => ({
  phase: 'BackingOff',
  error: { code: 'IMAGE_PULL_FAILED', message: 'pull failed', userMessage: 'The image could not be pulled.', transient: true },
  retry: { attempts, nextRetryAt: until, gaveUp: false, resetKey: retryResetKey(w, specHash(w)) },
});

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const c of Object.values(v)) deepFreeze(c);
  }
  return v;
}

interface Args {
  desired?: DesiredStateDocument | null;
  workloads?: Workload[];
  records?: WorkloadRecord[];
  observed?: ObservedWorkload[];
  runtimeUp?: Partial<Record<WorkloadType, boolean>>;
  now?: Date;
}

/** Runs the planner on deep-frozen input: any mutation throws (the tests run as ES modules, so strict). */
function run(a: Args): Plan {
  const records: Record<string, WorkloadRecord> = {};
  for (const r of a.records ?? []) records[r.id] = r;
  const input: PlanInput = {
    desired: a.desired !== undefined ? a.desired : doc(a.workloads ?? []),
    records,
    observed: a.observed ?? [],
    runtimeUp: { ...UP, ...a.runtimeUp },
    now: a.now ?? NOW,
  };
  const before = JSON.stringify(input);
  deepFreeze(input);
  const p = plan(input);
  assert.equal(JSON.stringify(input), before, 'plan() must not change its input');
  return p;
}

/** Every field any step kind may carry, for assertions across kinds. */
const loose = (s: Step) => s as Step & { specHash?: string; observed?: ObservedWorkload; until?: string };

/** `kind id: reason` per step, the shape the `plan` command prints. */
const lines = (p: Plan): string[] => p.steps.map((s) => `${s.kind} ${s.workloadId}: ${s.reason}`);
const only = (p: Plan) => {
  assert.equal(p.steps.length, 1, `expected one step, got ${JSON.stringify(lines(p))}`);
  return p.steps[0]!;
};

// ------------------------------------------------------------------------------------------------
// Generated combinations
// ------------------------------------------------------------------------------------------------

type ObsMode = 'none' | 'hash-differs' | 'revision-differs' | Exclude<ActualState, 'missing' | 'unknown'>;
type RecMode = 'none' | 'same-runtime-id' | 'other-runtime-id';
type RetryMode = 'fresh' | 'backoff' | 'gave-up' | 'backoff-stale-key' | 'gave-up-stale-key';

const OBS_MODES: ObsMode[] = ['none', 'running', 'restarting', 'exited', 'created', 'paused', 'stopped', 'hash-differs', 'revision-differs'];
const REC_MODES: RecMode[] = ['none', 'same-runtime-id', 'other-runtime-id'];
const RETRY_MODES: RetryMode[] = ['fresh', 'backoff', 'gave-up', 'backoff-stale-key', 'gave-up-stale-key'];

/** The expected kind, written as a decision table rather than as the planner's code. */
function expectedKind(desired: 'running' | 'stopped', om: ObsMode, rm: RecMode, retry: RetryMode): StepKind {
  const known = rm === 'same-runtime-id';
  const settled: StepKind = known ? 'noop' : 'adopt';
  const table: Record<ObsMode, { running: StepKind; stopped: StepKind }> = {
    none: { running: 'create', stopped: 'create' },
    'hash-differs': { running: 'recreate', stopped: 'recreate' },
    'revision-differs': { running: 'recreate', stopped: 'recreate' },
    running: { running: settled, stopped: 'stop' },
    restarting: { running: settled, stopped: 'stop' },
    // Paused while desired running is an odd engine state: waited for (bounded), then repaired.
    paused: { running: 'wait', stopped: 'stop' },
    exited: { running: 'start', stopped: settled },
    created: { running: 'start', stopped: settled },
    stopped: { running: 'start', stopped: settled },
  };
  const intended = table[om][desired];
  if (rm === 'none') return intended;
  // A workload that gave up keeps its record, not its engine objects; with none left it waits.
  // A previous revision still running is not the failed attempt's: it keeps serving.
  if (retry === 'gave-up') return om === 'none' || om === 'hash-differs' || om === 'revision-differs' ? 'noop' : 'remove';
  if (retry === 'backoff' && ['create', 'recreate', 'start', 'stop'].includes(intended)) return 'wait';
  return intended;
}

describe('planner: generated combinations (desiredState x engine object x record x retry)', () => {
  for (const desired of ['running', 'stopped'] as const) {
    for (const om of OBS_MODES) {
      for (const rm of REC_MODES) {
        for (const retry of rm === 'none' ? (['fresh'] as RetryMode[]) : RETRY_MODES) {
          const want = expectedKind(desired, om, rm, retry);
          it(`${desired} / ${om} / record ${rm} / ${retry} -> ${want}`, () => {
            const w = cw('app', {}, { desiredState: desired });
            const observed: ObservedWorkload[] = [];
            if (om === 'hash-differs') observed.push(obs(w, { specHash: 'sha256:old' }));
            else if (om === 'revision-differs') observed.push(obs(w, { revision: 'r0' }));
            else if (om !== 'none') observed.push(obs(w, { state: om, exitCode: om === 'exited' || om === 'stopped' ? 1 : undefined }));
            const records: WorkloadRecord[] = [];
            if (rm !== 'none') {
              const retryPart =
                retry === 'backoff'
                  ? backingOff(w)
                  : retry === 'gave-up'
                    ? gaveUp(w)
                    : retry === 'backoff-stale-key'
                      ? { retry: { attempts: 2, nextRetryAt: LATER, gaveUp: false, resetKey: 'r0|sha256:old|' } }
                      : retry === 'gave-up-stale-key'
                        ? { retry: { attempts: 5, nextRetryAt: null, gaveUp: true, resetKey: 'r0|sha256:old|' } }
                        : {};
              records.push(rec(w, { phase: 'Stopped', runtimeId: rm === 'same-runtime-id' ? `rt-${w.id}` : 'rt-previous', ...retryPart }));
            }
            const p = run({ workloads: [w], records, observed });
            const s = loose(only(p));
            assert.equal(s.kind, want, `reason: ${s.reason}`);
            assert.equal(s.workloadId, 'app');
            assert.equal(s.workload, w);
            // A removal acts on what exists: it carries the object and the workload, not a hash.
            if (s.kind !== 'remove') assert.equal(s.specHash, specHash(w));
            assert.equal(s.observed, observed[0]);
            assert.ok(s.reason.length > 0);
            if (want === 'wait' && om === 'paused' && desired === 'running') assert.equal(s.until, new Date(NOW.getTime() + 60_000).toISOString());
            else if (want === 'wait') assert.equal(s.until, LATER);
            else assert.equal(s.until, undefined);
            if (want === 'noop' && retry === 'gave-up' && om === 'none') assert.equal(s.reason, GAVE_UP);
            if (want === 'noop' && retry === 'gave-up' && om !== 'none') assert.match(s.reason, /the previous revision keeps running/);
            if (want === 'adopt') assert.match(s.reason, /^found on engine, adopting/);
            assert.deepEqual(p.unavailable, []);
            assert.deepEqual(p.forget, []);
          });
        }
      }
    }
  }
});

describe('planner: generated exits (restart policy x exit code x has-run x record)', () => {
  const policies = ['no', 'always', 'unless-stopped', 'on-failure', undefined] as const;
  for (const state of ['exited', 'stopped'] as const) {
    for (const policy of policies) {
      for (const exitCode of [0, 1, null] as const) {
        for (const finishedAt of ['2025-06-01T11:00:00Z', '0001-01-01T00:00:00Z'] as const) {
          for (const withRecord of [false, true]) {
            const hasRun = finishedAt.startsWith('2025');
            const settled = hasRun && (policy === 'no' || (policy === 'on-failure' && exitCode === 0));
            const want: StepKind = settled ? (withRecord ? 'noop' : 'adopt') : 'start';
            it(`${state} code ${exitCode} restartPolicy ${policy ?? '(default)'} ${hasRun ? 'ran' : 'never ran'} ${withRecord ? 'known' : 'unknown'} -> ${want}`, () => {
              const w = cw('job', policy ? { restartPolicy: policy } : {});
              const o = obs(w, { state, exitCode, finishedAt });
              // phase Stopped: the record alone does not say whether it ran.
              const p = run({ workloads: [w], observed: [o], records: withRecord ? [rec(w, { phase: 'Stopped' })] : [] });
              const s = only(p);
              assert.equal(s.kind, want, s.reason);
              const code = exitCode === null ? 'unknown' : String(exitCode);
              if (want === 'start') assert.equal(s.reason, `${state} (code ${code}); desired running`);
              else if (policy === 'no') assert.match(s.reason, new RegExp(`${state} \\(code ${code}\\); restartPolicy no$`));
              else assert.match(s.reason, /restartPolicy on-failure does not restart a clean exit$/);
            });
          }
        }
      }
    }
  }
});

// ------------------------------------------------------------------------------------------------
// Hand-written cases
// ------------------------------------------------------------------------------------------------

describe('planner: no desired state / empty desired state', () => {
  it('null desired: empty plan, nothing removed, nothing forgotten', () => {
    const w = cw('web');
    const p = run({ desired: null, observed: [obs(w), obs(cw('other'))], records: [rec(w)] });
    assert.deepEqual(p, { steps: [], unavailable: [], forget: [] });
  });

  it('empty workloads removes every observed object and forgets unobserved records', () => {
    const a = cw('a');
    const b = vmw('b');
    const c = composew('c');
    const p = run({ workloads: [], observed: [obs(b), obs(a), obs(c)], records: [rec(a), rec(b), rec(c), rec(cw('gone'))] });
    assert.deepEqual(lines(p), ['remove a: not in desired state', 'remove b: not in desired state', 'remove c: not in desired state']);
    for (const s of p.steps.map(loose)) {
      assert.equal(s.workload, undefined, 'orphan removals carry no workload');
      assert.ok(s.observed);
    }
    assert.deepEqual(p.forget, ['gone']);
  });

  it('empty document with nothing on the engine: empty plan', () => {
    assert.deepEqual(run({ workloads: [] }), { steps: [], unavailable: [], forget: [] });
  });
});

describe('planner: runtimes down', () => {
  it('libvirt down: the VM is unavailable, the container is still planned', () => {
    const c = cw('web');
    const v = vmw('vm1');
    const p = run({ workloads: [v, c], runtimeUp: { vm: false }, records: [rec(v)] });
    assert.deepEqual(lines(p), ['create web: new workload']);
    assert.deepEqual(p.unavailable, [{ workloadId: 'vm1', type: 'vm', reason: 'the runtime of vm workloads is unavailable, so vm workloads cannot be observed or changed' }]);
    assert.deepEqual(p.forget, []);
  });

  it('docker down: container and compose workloads are unavailable, VMs are planned', () => {
    const p = run({ workloads: [cw('b'), composew('a'), vmw('v')], runtimeUp: { container: false, compose: false } });
    assert.deepEqual(p.unavailable.map((u) => [u.workloadId, u.type]), [['a', 'compose'], ['b', 'container']]);
    assert.match(p.unavailable[0]!.reason, /^the runtime of compose workloads is unavailable/);
    assert.deepEqual(lines(p), ['create v: new workload']);
  });

  it('a record of a down runtime that is no longer desired is kept (its object may still exist)', () => {
    const v = vmw('old-vm');
    const p = run({ workloads: [], runtimeUp: { vm: false }, records: [rec(v), rec(cw('old-c'))] });
    assert.deepEqual(p.forget, ['old-c']);
  });

  it('objects reported for a runtime marked down are never removed', () => {
    const p = run({ workloads: [], runtimeUp: { vm: false }, observed: [obs(vmw('x'))] });
    assert.deepEqual(p.steps, []);
  });

  it('a runtimeUp map that lacks a type counts that type as down (safe: nothing removed)', () => {
    const input: PlanInput = deepFreeze({
      desired: doc([cw('web')]),
      records: {},
      observed: [],
      runtimeUp: { compose: true, vm: true } as unknown as Record<WorkloadType, boolean>,
      now: NOW,
    });
    const p = plan(input);
    assert.deepEqual(p.steps, []);
    assert.equal(p.unavailable.length, 1);
  });

  it('a desired workload with a down runtime gets no step even when objects are seen', () => {
    const w = cw('web');
    const p = run({ workloads: [w], runtimeUp: { container: false }, observed: [obs(w), obs(w, { runtimeId: 'dup' })] });
    assert.deepEqual(p.steps, []);
    assert.equal(p.unavailable[0]?.workloadId, 'web');
  });
});

describe('planner: duplicates', () => {
  it('keeps the matching one over a newer mismatching one', () => {
    const w = cw('web');
    const good = obs(w, { runtimeId: 'a', name: 'web-a', createdAt: '2025-01-01T00:00:00Z' });
    const stale = obs(w, { runtimeId: 'b', name: 'web-b', specHash: 'sha256:old', createdAt: '2025-05-01T00:00:00Z' });
    const p = run({ workloads: [w], observed: [stale, good], records: [rec(w, { runtimeId: 'a' })] });
    assert.deepEqual(lines(p), ['remove web: duplicate of web-a', 'noop web: running as desired']);
    assert.equal(loose(p.steps[0]!).observed, stale);
    assert.equal(p.steps[0]!.workload, w, 'duplicate removal keeps the record');
  });

  it('among matching ones, a running one beats a newer exited one', () => {
    const w = cw('web');
    const running = obs(w, { runtimeId: 'a', name: 'web-a', createdAt: '2025-01-01T00:00:00Z' });
    const exited = obs(w, { runtimeId: 'b', name: 'web-b', state: 'exited', exitCode: 0, createdAt: '2025-05-01T00:00:00Z' });
    const p = run({ workloads: [w], observed: [exited, running], records: [rec(w, { runtimeId: 'a' })] });
    assert.deepEqual(lines(p), ['remove web: duplicate of web-a', 'noop web: running as desired']);
  });

  it('among equals, the newest wins', () => {
    const w = cw('web');
    const older = obs(w, { runtimeId: 'a', name: 'web-a', createdAt: '2025-01-01T00:00:00Z' });
    const newer = obs(w, { runtimeId: 'b', name: 'web-b', createdAt: '2025-02-01T00:00:00Z' });
    const p = run({ workloads: [w], observed: [older, newer] });
    assert.deepEqual(lines(p), ['remove web: duplicate of web-b', 'adopt web: found on engine, adopting']);
    assert.equal(loose(p.steps[1]!).observed, newer);
  });

  it('none matching: the newest is recreated and the rest removed, one step each', () => {
    const w = cw('web');
    const os = [1, 2, 3].map((i) => obs(w, { runtimeId: `id${i}`, name: `web-${i}`, specHash: 'sha256:old', createdAt: `2025-0${i}-01T00:00:00Z` }));
    const p = run({ workloads: [w], observed: os, records: [rec(w, { runtimeId: 'id3' })] });
    assert.deepEqual(lines(p), ['remove web: duplicate of web-3', 'remove web: duplicate of web-3', 'recreate web: spec hash on engine differs']);
    assert.deepEqual(p.steps.map((s) => loose(s).observed?.runtimeId), ['id1', 'id2', 'id3']);
  });

  it('full ties are broken by runtime id, whatever the input order', () => {
    const w = cw('web');
    const a = obs(w, { runtimeId: 'aaa', name: 'x-aaa' });
    const b = obs(w, { runtimeId: 'bbb', name: 'x-bbb' });
    assert.deepEqual(lines(run({ workloads: [w], observed: [a, b] })), lines(run({ workloads: [w], observed: [b, a] })));
    assert.equal(run({ workloads: [w], observed: [b, a] }).steps[0]!.reason, 'duplicate of x-aaa');
  });

  it('duplicates are removed even when the workload gave up', () => {
    const w = cw('web');
    const p = run({ workloads: [w], observed: [obs(w, { runtimeId: 'a', state: 'exited' }), obs(w, { runtimeId: 'b', name: 'b', state: 'exited', createdAt: '2025-06-01T11:00:00Z' })], records: [rec(w, gaveUp(w))] });
    assert.deepEqual(lines(p), ['remove web: duplicate of b', `remove web: ${CLEANUP}`]);
  });
});

describe('planner: retry gating', () => {
  it('gave up: the engine object is removed, the record stays (the step carries the workload)', () => {
    const w = cw('web');
    const o = obs(w, { state: 'exited', exitCode: 1 });
    const s = only(run({ workloads: [w], observed: [o], records: [rec(w, gaveUp(w, 7))] }));
    assert.equal(s.kind, 'remove');
    assert.equal(s.reason, CLEANUP);
    assert.equal(s.observed, o);
    assert.equal(s.workload, w);
  });

  it('gave up and nothing left on the engine: noop with the exact instruction', () => {
    const w = cw('web');
    const s = only(run({ workloads: [w], records: [rec(w, { ...gaveUp(w, 7), runtimeId: undefined })] }));
    assert.equal(s.kind, 'noop');
    assert.equal(s.reason, 'gave up after 7 attempts (change retryToken or revision, or run persys-agent retry)');
  });

  it('a retry request (reset key "requested:...") lifts the gate and restarts a container kept down by restartPolicy no', () => {
    const w = cw('job', { restartPolicy: 'no' });
    const o = obs(w, { state: 'exited', exitCode: 1, finishedAt: '2025-06-01T11:00:00Z' });
    const base = rec(w, { phase: 'Failed' });
    assert.equal(only(run({ workloads: [w], observed: [o], records: [base] })).kind, 'noop');
    const asked = rec(w, { phase: 'Pending', retry: { attempts: 0, nextRetryAt: null, gaveUp: false, resetKey: 'requested:2025-06-01T12:00:00.000Z' } });
    assert.equal(only(run({ workloads: [w], observed: [o], records: [asked] })).kind, 'start');
  });

  it('a changed retryToken restarts a container kept down by restartPolicy no', () => {
    const w = cw('job', { restartPolicy: 'no' });
    const o = obs(w, { state: 'exited', exitCode: 0, finishedAt: '2025-06-01T11:00:00Z' });
    const r = rec(w, { phase: 'Completed' });
    const again = { ...w, retryToken: 'again' } as Workload;
    assert.equal(only(run({ workloads: [again], observed: [o], records: [r] })).kind, 'start');
  });

  it('gave up on create: noop, no object', () => {
    const w = cw('web');
    const s = only(run({ workloads: [w], records: [rec(w, { ...gaveUp(w), runtimeId: undefined })] }));
    assert.equal(s.kind, 'noop');
    assert.equal(s.reason, GAVE_UP);
    assert.equal(s.observed, undefined);
  });

  it('a new revision resets the budget: recreate with the revision as reason', () => {
    const old = cw('web', {}, { revision: 'r1' });
    const now = cw('web', {}, { revision: 'r2' });
    const s = only(run({ workloads: [now], observed: [obs(old)], records: [rec(old, gaveUp(old))] }));
    assert.equal(s.kind, 'recreate');
    assert.equal(s.reason, 'revision r1 -> r2');
  });

  it('a new retryToken resets the budget', () => {
    const old = cw('web', {}, { retryToken: 't1' });
    const now = cw('web', {}, { retryToken: 't2' });
    assert.equal(specHash(old), specHash(now), 'retryToken is not part of the spec hash');
    const s = only(run({ workloads: [now], records: [rec(old, { ...gaveUp(old), runtimeId: undefined })] }));
    assert.deepEqual([s.kind, s.reason], ['create', 'not found on engine']);
  });

  it('a new spec resets the budget', () => {
    const old = cw('web', { image: 'nginx:1.26' });
    const now = cw('web', { image: 'nginx:1.27' });
    const s = only(run({ workloads: [now], observed: [obs(old)], records: [rec(old, { ...gaveUp(old), appliedSpec: canonicalSpec(old) })] }));
    assert.deepEqual([s.kind, s.reason], ['recreate', 'image changed (docker.io/library/nginx:1.26 -> docker.io/library/nginx:1.27)']);
  });

  it('a changed desiredState does not reset the budget: the object of a workload that gave up goes', () => {
    const w = cw('web', {}, { desiredState: 'stopped' });
    const s = only(run({ workloads: [w], observed: [obs(w, { state: 'restarting' })], records: [rec(w, gaveUp(w))] }));
    assert.deepEqual([s.kind, s.reason], ['remove', CLEANUP]);
  });

  it('backing off: wait until nextRetryAt, naming the step and the last error', () => {
    const w = cw('web');
    const s = only(run({ workloads: [w], records: [rec(w, { ...backingOff(w, LATER, 3), runtimeId: undefined })] }));
    assert.equal(s.kind, 'wait');
    assert.equal(s.until, LATER);
    assert.equal(s.reason, `backing off after 3 failed attempts (last error IMAGE_PULL_FAILED); next create at ${LATER}`);
    assert.equal(s.workload, w);
  });

  it('one failed attempt reads in the singular', () => {
    const w = cw('web');
    const s = only(run({ workloads: [w], records: [rec(w, { ...backingOff(w, LATER, 1), error: null, runtimeId: undefined })] }));
    assert.equal(s.reason, `backing off after 1 failed attempt; next create at ${LATER}`);
  });

  it('a backoff that has passed lets the step run', () => {
    const w = cw('web');
    const s = only(run({ workloads: [w], records: [rec(w, { ...backingOff(w, EARLIER), runtimeId: undefined })] }));
    assert.equal(s.kind, 'create');
  });

  it('a backoff that ends exactly now lets the step run', () => {
    const w = cw('web');
    const s = only(run({ workloads: [w], records: [rec(w, { ...backingOff(w, NOW.toISOString()), runtimeId: undefined })] }));
    assert.equal(s.kind, 'create');
  });

  it('an unparseable nextRetryAt does not block forever', () => {
    const w = cw('web');
    const s = only(run({ workloads: [w], records: [rec(w, { ...backingOff(w, 'soon'), runtimeId: undefined })] }));
    assert.equal(s.kind, 'create');
  });

  it('backoff delays a stop as well', () => {
    const w = cw('web', {}, { desiredState: 'stopped' });
    const s = only(run({ workloads: [w], observed: [obs(w)], records: [rec(w, backingOff(w))] }));
    assert.equal(s.kind, 'wait');
    assert.match(s.reason, /next stop at/);
  });

  it('backoff with a stale key is ignored', () => {
    const old = cw('web', {}, { revision: 'r1' });
    const now = cw('web', {}, { revision: 'r2' });
    const s = only(run({ workloads: [now], observed: [obs(old)], records: [rec(old, backingOff(old))] }));
    assert.equal(s.kind, 'recreate');
  });

  it('gave up: even a running object goes (failed terminally means no runtime resources)', () => {
    const w = cw('web');
    const s = only(run({ workloads: [w], observed: [obs(w)], records: [rec(w, gaveUp(w))] }));
    assert.deepEqual([s.kind, s.reason], ['remove', CLEANUP]);
    const other = only(run({ workloads: [w], observed: [obs(w, { runtimeId: 'new' })], records: [rec(w, gaveUp(w))] }));
    assert.equal(other.kind, 'remove');
  });
});

describe('planner: create and recreate reasons', () => {
  it('new workload vs not found on engine', () => {
    const w = cw('web');
    assert.deepEqual(lines(run({ workloads: [w] })), ['create web: new workload']);
    assert.deepEqual(lines(run({ workloads: [w], records: [rec(w)] })), ['create web: not found on engine']);
  });

  it('desired stopped and absent: created (the executor leaves it stopped)', () => {
    const s = only(run({ workloads: [cw('web', {}, { desiredState: 'stopped' })] }));
    assert.deepEqual([s.kind, s.reason], ['create', 'new workload']);
  });

  it('an object the engine reports as missing is created again', () => {
    const w = cw('web');
    assert.equal(only(run({ workloads: [w], observed: [obs(w, { state: 'missing' })], records: [rec(w)] })).kind, 'create');
  });

  it('describes spec changes from the applied spec', () => {
    const old = cw('web', { image: 'nginx:1.26', env: { FOO: 'secret-1', BAZ: 'x' }, resources: { memoryBytes: 268435456 } });
    const now = cw('web', { image: 'nginx:1.27', env: { FOO: 'secret-2', BAR: 'y' }, resources: { memoryBytes: 536870912 }, command: ['--fast'] });
    const s = only(run({ workloads: [now], observed: [obs(old)], records: [rec(old, { appliedSpec: canonicalSpec(old) })] }));
    assert.equal(s.kind, 'recreate');
    assert.equal(
      s.reason,
      'command changed; env BAR added; env BAZ removed; env FOO changed; image changed (docker.io/library/nginx:1.26 -> docker.io/library/nginx:1.27); resources.memoryBytes changed (268435456 -> 536870912)',
    );
    assert.ok(!s.reason.includes('secret'), 'env values never appear');
  });

  it('spec and revision changes are both named', () => {
    const old = cw('web', { restartPolicy: 'always' }, { revision: 'r1' });
    const now = cw('web', {}, { revision: 'r2' });
    const s = only(run({ workloads: [now], observed: [obs(old)], records: [rec(old, { appliedSpec: canonicalSpec(old) })] }));
    assert.equal(s.reason, 'restartPolicy changed (always -> default); revision r1 -> r2');
  });

  it('without an applied spec: "spec hash on engine differs"', () => {
    const old = cw('web', { image: 'nginx:1.26' });
    const now = cw('web');
    assert.equal(only(run({ workloads: [now], observed: [obs(old)], records: [rec(old)] })).reason, 'spec hash on engine differs');
    assert.equal(only(run({ workloads: [now], observed: [obs(old)] })).reason, 'spec hash on engine differs');
  });

  it('an applied spec that is not what the engine object carries is not trusted', () => {
    const old = cw('web', { image: 'nginx:1.26' });
    const now = cw('web');
    const r = rec(old, { appliedSpec: canonicalSpec(old), specHash: 'sha256:something-else' });
    assert.equal(only(run({ workloads: [now], observed: [obs(old)], records: [r] })).reason, 'spec hash on engine differs');
  });

  it('an applied spec equal to the new one (canonical form moved on) falls back to the hash', () => {
    const w = cw('web');
    const r = rec(w, { appliedSpec: canonicalSpec(w), specHash: 'sha256:old-form' });
    const s = only(run({ workloads: [w], observed: [obs(w, { specHash: 'sha256:old-form' })], records: [r] }));
    assert.deepEqual([s.kind, s.reason], ['recreate', 'spec hash on engine differs']);
  });

  it('revision only: to and from none', () => {
    const w = cw('web', {}, { revision: undefined });
    assert.equal(only(run({ workloads: [w], observed: [obs(w, { revision: 'r3' })] })).reason, 'revision r3 -> none');
    const w2 = cw('web', {}, { revision: 'r4' });
    assert.equal(only(run({ workloads: [w2], observed: [obs(w2, { revision: undefined })] })).reason, 'revision none -> r4');
  });

  it('no revision and an empty revision label are the same', () => {
    const w = cw('web', {}, { revision: undefined });
    assert.equal(only(run({ workloads: [w], observed: [obs(w, { revision: '' })], records: [rec(w)] })).kind, 'noop');
  });

  it('a spelling-only change of the spec needs nothing', () => {
    const published = cw('web', { image: 'nginx' });
    const respelled = cw('web', { image: 'docker.io/library/nginx:latest', pullPolicy: 'Always', env: {} });
    assert.equal(only(run({ workloads: [respelled], observed: [obs(published)], records: [rec(published)] })).kind, 'noop');
  });

  it('recreate keeps a paused or exited object as the one to replace', () => {
    const old = cw('web', { image: 'nginx:1.26' });
    const o = obs(old, { state: 'paused' });
    const s = only(run({ workloads: [cw('web')], observed: [o] }));
    assert.equal(s.kind, 'recreate');
    assert.equal(s.observed, o);
  });
});

describe('planner: settled states', () => {
  it('running and known: noop', () => {
    const w = cw('web');
    assert.deepEqual(lines(run({ workloads: [w], observed: [obs(w)], records: [rec(w)] })), ['noop web: running as desired']);
  });

  it('running, no record: adopt', () => {
    const w = cw('web');
    const s = only(run({ workloads: [w], observed: [obs(w)] }));
    assert.deepEqual([s.kind, s.reason], ['adopt', 'found on engine, adopting']);
  });

  it('running, record names another engine object: adopt', () => {
    const w = cw('web');
    assert.equal(only(run({ workloads: [w], observed: [obs(w, { runtimeId: 'fresh' })], records: [rec(w)] })).kind, 'adopt');
  });

  it('restarting: left to the engine restart policy', () => {
    const w = cw('web');
    assert.equal(only(run({ workloads: [w], observed: [obs(w, { state: 'restarting' })], records: [rec(w)] })).reason, 'restarting under the engine restart policy');
  });

  it('desired stopped and paused is not odd: stop', () => {
    const w = cw('web', {}, { desiredState: 'stopped' });
    assert.equal(only(run({ workloads: [w], observed: [obs(w, { state: 'paused' })], records: [rec(w)] })).kind, 'stop');
  });

  // Odd engine states: neither running nor stopped. Waited for (bounded), then repaired, never a noop forever.
  const SECOND = 1000;
  const at = (msAgo: number) => new Date(NOW.getTime() - msAgo).toISOString();
  const oddCases: {
    name: string;
    w: Workload;
    o: Partial<ObservedWorkload>;
    r?: Partial<WorkloadRecord> | 'none';
    want: StepKind;
    until?: string;
    reason: RegExp;
  }[] = [
    { name: 'paused, desired running, first seen', w: cw('web'), o: { state: 'paused', engineState: 'paused' }, want: 'wait', until: at(-60 * SECOND), reason: /^the engine reports paused since 2025-06-01T12:00:00.000Z; waiting up to 60 s/ },
    { name: 'paused, unknown to the store', w: cw('web'), o: { state: 'paused' }, r: 'none', want: 'wait', until: at(-60 * SECOND), reason: /reports paused/ },
    { name: 'dead, seen 30 s ago', w: cw('web'), o: { state: 'unknown', engineState: 'dead' }, r: { engineState: { runtimeId: 'rt-web', state: 'dead', since: at(30 * SECOND) } }, want: 'wait', until: at(-30 * SECOND), reason: /reports dead since/ },
    { name: 'removing, seen 61 s ago: repair', w: cw('web'), o: { state: 'unknown', engineState: 'removing' }, r: { engineState: { runtimeId: 'rt-web', state: 'removing', since: at(61 * SECOND) } }, want: 'repair', reason: /^the engine reported removing for more than 60 s \(since .*\); replacing it$/ },
    { name: 'a mark of another object does not count', w: cw('web'), o: { state: 'unknown', engineState: 'dead' }, r: { engineState: { runtimeId: 'rt-old', state: 'dead', since: at(600 * SECOND) } }, want: 'wait', until: at(-60 * SECOND), reason: /reports dead/ },
    { name: 'a mark of another state does not count', w: cw('web'), o: { state: 'unknown', engineState: 'dead' }, r: { engineState: { runtimeId: 'rt-web', state: 'paused', since: at(600 * SECOND) } }, want: 'wait', until: at(-60 * SECOND), reason: /reports dead/ },
    { name: 'libvirt in shutdown for long: repair', w: vmw('v'), o: { state: 'unknown', engineState: 'in shutdown' }, r: { engineState: { runtimeId: 'rt-v', state: 'in shutdown', since: at(120 * SECOND) } }, want: 'repair', reason: /reported in shutdown for more than 60 s/ },
    { name: 'unknown without a word from the engine', w: vmw('v'), o: { state: 'unknown' }, want: 'wait', until: at(-60 * SECOND), reason: /reports unknown/ },
    { name: 'repair due while backing off: wait for the backoff', w: cw('web'), o: { state: 'unknown', engineState: 'dead' }, r: { ...backingOff(cw('web')), engineState: { runtimeId: 'rt-web', state: 'dead', since: at(120 * SECOND) } }, want: 'wait', until: LATER, reason: /^backing off .*next repair at/ },
    { name: 'repair due after giving up: its resources go', w: cw('web'), o: { state: 'unknown', engineState: 'dead' }, r: { ...gaveUp(cw('web')), engineState: { runtimeId: 'rt-web', state: 'dead', since: at(120 * SECOND) } }, want: 'remove', reason: /^failed terminally/ },
    { name: 'repair of a spec the policy denies: deny', w: cw('web', { security: { privileged: true } }), o: { state: 'unknown', engineState: 'dead' }, r: { engineState: { runtimeId: 'rt-web', state: 'dead', since: at(120 * SECOND) } }, want: 'deny', reason: /^POLICY_DENIED: spec.security.privileged/ },
  ];
  for (const c of oddCases) {
    it(`odd state: ${c.name} -> ${c.want}`, () => {
      const records = c.r === 'none' ? [] : [rec(c.w, c.r ?? {})];
      const s = loose(only(run({ workloads: [c.w], observed: [obs(c.w, c.o)], records })));
      assert.equal(s.kind, c.want, s.reason);
      assert.match(s.reason, c.reason);
      if (c.until !== undefined) assert.equal(s.until, c.until);
      if (s.kind === 'repair') assert.match(s.problem, /for more than 60 s/);
    });
  }

  it('the odd-state wait is configurable', () => {
    const w = cw('web');
    const records: Record<string, WorkloadRecord> = { web: rec(w, { engineState: { runtimeId: 'rt-web', state: 'dead', since: at(10 * SECOND) } }) };
    const p = plan({ desired: doc([w]), records, observed: [obs(w, { state: 'unknown', engineState: 'dead' })], runtimeUp: UP, now: NOW, oddStateWaitSeconds: 5 });
    assert.equal(only(p).kind, 'repair');
  });

  it('stopped as desired', () => {
    const w = cw('web', {}, { desiredState: 'stopped' });
    assert.deepEqual(lines(run({ workloads: [w], observed: [obs(w, { state: 'exited', exitCode: 0 })], records: [rec(w)] })), ['noop web: stopped as desired']);
  });

  it('desired stopped, running: stop', () => {
    const w = cw('web', {}, { desiredState: 'stopped' });
    assert.deepEqual(lines(run({ workloads: [w], observed: [obs(w)], records: [rec(w)] })), ['stop web: desired stopped, but the container is running']);
  });

  it('desired stopped, paused: stop', () => {
    const w = cw('web', {}, { desiredState: 'stopped' });
    assert.equal(only(run({ workloads: [w], observed: [obs(w, { state: 'paused' })], records: [rec(w)] })).kind, 'stop');
  });

  it('desired stopped, VM running: stop names the VM', () => {
    const v = vmw('vm1', { desiredState: 'stopped' });
    assert.equal(only(run({ workloads: [v], observed: [obs(v)], records: [rec(v)] })).reason, 'desired stopped, but the vm is running');
  });
});

describe('planner: exits and restart policies (record-based)', () => {
  for (const phase of ['Running', 'Completed', 'Failed', 'CrashLoop'] as Phase[]) {
    it(`restartPolicy no, record phase ${phase}, no finishedAt: stays down`, () => {
      const w = cw('job', { restartPolicy: 'no' });
      const s = only(run({ workloads: [w], observed: [obs(w, { state: 'exited', exitCode: 3 })], records: [rec(w, { phase })] }));
      assert.deepEqual([s.kind, s.reason], ['noop', 'exited (code 3); restartPolicy no']);
    });
  }

  it('restartPolicy no, record phase Stopped and no finish time: started', () => {
    const w = cw('job', { restartPolicy: 'no' });
    assert.equal(only(run({ workloads: [w], observed: [obs(w, { state: 'exited', exitCode: 0 })], records: [rec(w, { phase: 'Stopped' })] })).kind, 'start');
  });

  it('restartPolicy no, finish time only in the record: stays down', () => {
    const w = cw('job', { restartPolicy: 'no' });
    const r = rec(w, { phase: 'Pending', evidence: { finishedAt: '2025-06-01T11:00:00Z' } });
    assert.equal(only(run({ workloads: [w], observed: [obs(w, { state: 'exited', exitCode: 0 })], records: [r] })).kind, 'noop');
  });

  it('exit code taken from the record when the engine has none', () => {
    const w = cw('job', { restartPolicy: 'no' });
    const r = rec(w, { phase: 'Completed', evidence: { exitCode: 4 } });
    assert.equal(only(run({ workloads: [w], observed: [obs(w, { state: 'exited' })], records: [r] })).reason, 'exited (code 4); restartPolicy no');
  });

  it('created never ran: started even with restartPolicy no and a failed record', () => {
    const w = cw('job', { restartPolicy: 'no' });
    const s = only(run({ workloads: [w], observed: [obs(w, { state: 'created' })], records: [rec(w, { phase: 'Failed' })] }));
    assert.deepEqual([s.kind, s.reason], ['start', 'created but not started; desired running']);
  });

  it('VM workloads have no container restart policy: started; a compose app whose services all completed stays down', () => {
    const c = composew('shop');
    const v = vmw('vm1');
    const p = run({
      workloads: [c, v],
      observed: [obs(c, { state: 'exited', exitCode: 0, finishedAt: EARLIER, hashVersion: 2 }), obs(v, { state: 'stopped' })],
      records: [rec(c, { phase: 'Completed' }), rec(v, { phase: 'Completed' })],
    });
    assert.deepEqual(lines(p), ['start vm1: stopped (code unknown); desired running', 'noop shop: exited (code 0); every service completed successfully']);
    const failed = run({ workloads: [c], observed: [obs(c, { state: 'exited', exitCode: 1, finishedAt: EARLIER, hashVersion: 2 })], records: [rec(c, { phase: 'Completed' })] });
    assert.deepEqual(lines(failed), ['start shop: exited (code 1); desired running']);
  });
});

describe('planner: awkward ids', () => {
  it('a workload called "constructor" is not confused with Object.prototype', () => {
    const w = cw('constructor');
    assert.deepEqual(lines(run({ workloads: [w] })), ['create constructor: new workload']);
    assert.deepEqual(lines(run({ workloads: [w], observed: [obs(w)], records: [rec(w)] })), ['noop constructor: running as desired']);
    assert.deepEqual(run({ workloads: [], records: [rec(w)] }).forget, ['constructor']);
  });
});

describe('planner: orphans and forgetting', () => {
  it('orphans are removed; their records are kept until the object is gone', () => {
    const o = cw('orphan');
    const p = run({ workloads: [cw('web')], observed: [obs(o)], records: [rec(o)] });
    assert.deepEqual(lines(p), ['remove orphan: not in desired state', 'create web: new workload']);
    assert.deepEqual(p.forget, []);
  });

  it('an object no record and no desired workload claims is left to the garbage collector (a create in flight)', () => {
    const stray = cw('stray');
    const p = run({ workloads: [cw('web')], observed: [obs(stray)] });
    assert.deepEqual(lines(p), ['create web: new workload']);
    assert.deepEqual(run({ workloads: [], observed: [obs(stray), obs(vmw('v'))] }), { steps: [], unavailable: [], forget: [] });
  });

  it('a failed record the desired state dropped is kept (GC forgets it after gc.failedRetentionSeconds)', () => {
    const f = cw('failed');
    const p = run({ workloads: [], records: [rec(f, { phase: 'Failed' }), rec(cw('ok'))] });
    assert.deepEqual(p.forget, ['ok']);
    const gaveUp = rec(f, { phase: 'Pending' });
    gaveUp.retry = { ...gaveUp.retry, gaveUp: true };
    assert.deepEqual(run({ workloads: [], records: [gaveUp] }).forget, []);
  });

  it('records neither desired nor observed are forgotten, sorted', () => {
    const p = run({ workloads: [cw('web')], records: [rec(cw('zz')), rec(cw('aa')), rec(cw('web'))] });
    assert.deepEqual(p.forget, ['aa', 'zz']);
  });

  it('a workload whose type changed: the old object is removed, the new one created', () => {
    const old = cw('x');
    const now = vmw('x');
    const p = run({ workloads: [now], observed: [obs(old)], records: [rec(old)] });
    assert.deepEqual(lines(p), ['remove x: workload is now a vm; removing the old container persys-x', 'create x: not found on engine']);
    assert.equal(p.steps[0]!.workload, now, 'the record stays with the new workload');
  });
});

describe('planner: ordering and determinism', () => {
  const build = () => {
    const ws: Workload[] = [
      cw('e-create'),
      cw('d-recreate'),
      cw('c-start'),
      cw('b-stop', {}, { desiredState: 'stopped' }),
      cw('a-noop'),
      cw('f-adopt'),
      cw('g-wait'),
    ];
    const byId = (id: string) => ws.find((w) => w.id === id)!;
    const observed = [
      obs(byId('d-recreate'), { specHash: 'sha256:old' }),
      obs(byId('c-start'), { state: 'exited', exitCode: 1 }),
      obs(byId('b-stop')),
      obs(byId('a-noop')),
      obs(byId('f-adopt')),
      obs(cw('h-orphan')),
    ];
    const records = [rec(byId('a-noop')), rec(byId('g-wait'), { ...backingOff(byId('g-wait')), runtimeId: undefined }), rec(byId('b-stop')), rec(cw('h-orphan'))];
    return { ws, observed, records };
  };

  it('sorts by kind, then workload id', () => {
    const { ws, observed, records } = build();
    const p = run({ workloads: ws, observed, records });
    assert.deepEqual(
      p.steps.map((s) => `${s.kind} ${s.workloadId}`),
      ['remove h-orphan', 'stop b-stop', 'recreate d-recreate', 'create e-create', 'start c-start', 'adopt f-adopt', 'wait g-wait', 'noop a-noop'],
    );
  });

  it('the same input in any order gives the same plan', () => {
    const { ws, observed, records } = build();
    const reference = JSON.stringify(run({ workloads: ws, observed, records }));
    for (let seed = 1; seed <= 5; seed++) {
      const shuffle = <T>(xs: T[]): T[] => {
        const a = [...xs];
        let s = seed;
        for (let i = a.length - 1; i > 0; i--) {
          s = (s * 1103515245 + 12345) % 2147483648;
          const j = s % (i + 1);
          [a[i], a[j]] = [a[j]!, a[i]!];
        }
        return a;
      };
      assert.equal(JSON.stringify(run({ workloads: shuffle(ws), observed: shuffle(observed), records: shuffle(records) })), reference);
    }
  });

  it('planning twice gives equal plans (no hidden state besides the hash cache)', () => {
    const { ws, observed, records } = build();
    assert.deepEqual(run({ workloads: ws, observed, records }), run({ workloads: ws, observed, records }));
  });

  it('does not mutate its (deep-frozen) input', () => {
    const { ws, observed, records } = build();
    assert.doesNotThrow(() => run({ workloads: ws, observed, records }));
    assert.ok(Object.isFrozen(ws[0]!.spec));
  });

  it('steps carry the same specHash as specHash(workload)', () => {
    const { ws, observed, records } = build();
    for (const s of run({ workloads: ws, observed, records }).steps.map(loose)) {
      // Removals carry no hash: they act on what exists, not on the desired spec.
      if (s.workload && s.kind !== 'remove') assert.equal(s.specHash, specHash(s.workload));
      else assert.equal(s.specHash, undefined);
    }
  });
});

describe('planner: scale', () => {
  it('5,000 workloads: the right step for each', () => {
    const N = 5_000;
    const ws: Workload[] = [];
    const observed: ObservedWorkload[] = [];
    const records: WorkloadRecord[] = [];
    for (let i = 0; i < N; i++) {
      const id = `w${String(i).padStart(5, '0')}`;
      const w = cw(id, { env: { I: String(i) }, ports: [{ containerPort: 80, hostPort: 10000 + i }] });
      ws.push(w);
      if (i % 10 === 0) continue; // 10%: missing -> create
      if (i % 10 === 1) {
        observed.push(obs(w, { specHash: 'sha256:old' })); // 10%: changed -> recreate
        records.push(rec(w));
        continue;
      }
      observed.push(obs(w));
      records.push(rec(w));
    }
    for (let i = 0; i < 50; i++) {
      observed.push(obs(cw(`orphan${i}`)));
      records.push(rec(cw(`orphan${i}`)));
    }
    const p = run({ workloads: ws, observed, records });
    const count = (k: StepKind) => p.steps.filter((s) => s.kind === k).length;
    assert.equal(p.steps.length, N + 50);
    assert.equal(count('create'), 500);
    assert.equal(count('recreate'), 500);
    assert.equal(count('noop'), 4000);
    assert.equal(count('remove'), 50);
    assert.equal(new Set(p.steps.filter((s) => s.kind !== 'remove').map((s) => s.workloadId)).size, N);
  });
});
