/**
 * Admission tables, through the real planner: desired-state order (first fit), running workloads
 * counted first, overcommit, workloads without requests, exact messages, recreates, pressure, and
 * INSUFFICIENT_RESOURCES as terminal-until-the-host-changes (no backoff loop; lifted when it fits).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { canonicalSpec, specHash } from '../../src/reconcile/canonical.js';
import { plan, type Plan } from '../../src/reconcile/planner.js';
import { retryResetKey } from '../../src/reconcile/records.js';
import type { DenyStep } from '../../src/reconcile/steps.js';
import { admissionGate, computeCommitted, shortfallMessage, type AdmissionSettings } from '../../src/resources/admission.js';
import { formatBytes, formatCpus } from '../../src/resources/units.js';
import { BUILTIN_TYPES } from '../../src/runtimes/registry.js';
import type { ObservedWorkload } from '../../src/runtimes/runtime.js';
import { VM_MEMORY_OVERHEAD_BYTES } from '../../src/runtimes/libvirt/type.js';
import type { ContainerWorkload, DesiredStateDocument, VmWorkload, Workload } from '../../src/spec/desired-state.js';
import type { WorkloadRecord } from '../../src/store/types.js';

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;
const NOW = new Date('2025-06-01T12:00:00.000Z');
const UP = { container: true, compose: true, vm: true };

const cw = (id: string, memoryBytes?: number, cpus?: number, revision = 'r1'): ContainerWorkload => ({
  id,
  type: 'container',
  revision,
  spec: { image: 'nginx:1.27', ...(memoryBytes !== undefined || cpus !== undefined ? { resources: { ...(memoryBytes !== undefined ? { memoryBytes } : {}), ...(cpus !== undefined ? { cpus } : {}) } } : {}) },
});
const doc = (workloads: Workload[]): DesiredStateDocument => ({ apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId: 'n1', generation: 1, workloads });
const obs = (w: Workload, o: Partial<ObservedWorkload> = {}): ObservedWorkload => ({
  workloadId: w.id,
  type: w.type,
  runtime: 'docker',
  runtimeId: `rt-${w.id}`,
  name: `persys-${w.id}`,
  revision: w.revision,
  specHash: specHash(w),
  state: 'running',
  ...o,
});
const rec = (w: Workload, r: Partial<WorkloadRecord> = {}): WorkloadRecord => ({
  id: w.id,
  type: w.type,
  revision: w.revision,
  specHash: specHash(w),
  appliedSpec: canonicalSpec(w),
  desiredState: 'running',
  phase: 'Running',
  actualState: 'running',
  message: '',
  runtimeId: `rt-${w.id}`,
  error: null,
  retry: { attempts: 0, nextRetryAt: null, gaveUp: false, resetKey: retryResetKey(w, specHash(w)) },
  failures: [],
  updatedAt: NOW.toISOString(),
  phaseSince: NOW.toISOString(),
  ...r,
});

const settings = (s: Partial<AdmissionSettings> = {}): AdmissionSettings => ({
  allocatable: { cpus: 2, memoryBytes: 100 * MIB },
  overcommit: { cpu: 1, memory: 1 },
  requireRequests: false,
  pressure: [],
  ...s,
});

function run(workloads: Workload[], s: AdmissionSettings, observed: ObservedWorkload[] = [], records: Record<string, WorkloadRecord> = {}): Plan {
  const gate = admissionGate(s, { desired: workloads, observed, records, types: BUILTIN_TYPES });
  return plan({ desired: doc(workloads), records, observed, runtimeUp: UP, now: NOW, gates: [gate] });
}
const kinds = (p: Plan): Record<string, string> => Object.fromEntries(p.steps.map((x) => [x.workloadId, x.kind]));
const denial = (p: Plan, id: string): DenyStep => {
  const s = p.steps.find((x) => x.workloadId === id);
  assert.equal(s?.kind, 'deny', JSON.stringify(s));
  return s as DenyStep;
};

describe('units', () => {
  it('bytes and CPUs in words', () => {
    assert.equal(formatBytes(512 * MIB), '512 MiB');
    assert.equal(formatBytes(2 * GIB), '2.0 GiB');
    assert.equal(formatBytes(1748 * MIB), '1.7 GiB');
    assert.equal(formatBytes(36.5 * MIB), '36.5 MiB');
    assert.equal(formatBytes(512), '512 B');
    assert.equal(formatCpus(0.5), '0.5 CPU');
    assert.equal(formatCpus(1), '1 CPU');
    assert.equal(formatCpus(2), '2 CPUs');
  });

  it("the issue's example, to the letter", () => {
    assert.equal(shortfallMessage('memoryBytes', 512 * MIB, 2 * GIB, 2 * GIB, 1, 1748 * MIB, 5), 'needs 512 MiB memory; 300 MiB allocatable left (2.0 GiB allocatable, 1.7 GiB committed to 5 workloads)');
  });
});

describe('admission', () => {
  it('decides in desired-state order, first fit: two 64 MiB in 100 MiB, the second is denied, a small third still fits', () => {
    const ws = [cw('a', 64 * MIB), cw('b', 64 * MIB), cw('c', 32 * MIB)];
    const p = run(ws, settings());
    assert.deepEqual(kinds(p), { a: 'create', b: 'deny', c: 'create' });
    const d = denial(p, 'b');
    assert.equal(d.code, 'INSUFFICIENT_RESOURCES');
    assert.equal(d.untilHostChanges, true);
    assert.deepEqual(d.violations, ['needs 64 MiB memory; 36 MiB allocatable left (100 MiB allocatable, 64 MiB committed to 1 workload)']);
    assert.equal(d.reason, `INSUFFICIENT_RESOURCES: ${d.violations[0]}`);
    // The same document decides the same way, every time; another order admits others.
    assert.deepEqual(kinds(run(ws, settings())), kinds(p));
    assert.deepEqual(kinds(run([ws[1]!, ws[0]!, ws[2]!], settings())), { b: 'create', a: 'deny', c: 'create' });
  });

  it('what runs counts first, wherever it stands in the document: the new one is denied, the running one is never touched', () => {
    const a = cw('a', 64 * MIB);
    const b = cw('b', 64 * MIB);
    const p = run([a, b], settings(), [obs(b)], { b: rec(b) });
    assert.deepEqual(kinds(p), { a: 'deny', b: 'noop' });
    assert.match(denial(p, 'a').violations[0] ?? '', /^needs 64 MiB memory; 36 MiB allocatable left \(100 MiB allocatable, 64 MiB committed to 1 workload\)$/);
  });

  it('the next pass, once created, is stable: the denied one stays denied and nothing is recreated', () => {
    const a = cw('a', 64 * MIB);
    const b = cw('b', 64 * MIB);
    const p = run([a, b], settings(), [obs(a)], { a: rec(a) });
    assert.deepEqual(kinds(p), { a: 'noop', b: 'deny' });
  });

  it('objects no desired workload claims do not count (they are removed first)', () => {
    const a = cw('a', 64 * MIB);
    const gone = cw('gone', 64 * MIB);
    // Recorded (a workload the desired state dropped): the planner removes it. Unrecorded, it is the
    // garbage collector's after its grace (docs/gc.md); either way it is not counted.
    const p = run([a], settings(), [obs(gone)], { gone: rec(gone) });
    assert.deepEqual(kinds(p), { a: 'create', gone: 'remove' });
    assert.deepEqual(kinds(run([a], settings(), [obs(gone)])), { a: 'create' });
  });

  it('CPU overcommit: 2 CPUs x 1.5 admits three 1-CPU workloads, not four; memory stays exact by default', () => {
    const ws = ['w1', 'w2', 'w3', 'w4'].map((id) => cw(id, undefined, 1));
    const p = run(ws, settings({ overcommit: { cpu: 1.5, memory: 1 } }));
    assert.deepEqual(kinds(p), { w1: 'create', w2: 'create', w3: 'create', w4: 'deny' });
    assert.deepEqual(denial(p, 'w4').violations, ['needs 1 CPU; 0 CPU allocatable left (3 CPUs allocatable with overcommit 1.5 (2 CPUs x 1.5), 3 CPUs committed to 3 workloads)']);
    assert.deepEqual(kinds(run(ws, settings())), { w1: 'create', w2: 'create', w3: 'deny', w4: 'deny' }, 'no overcommit by default');
    const q = run(ws, settings({ overcommit: { cpu: 2, memory: 1 } }));
    assert.deepEqual(kinds(q), { w1: 'create', w2: 'create', w3: 'create', w4: 'create' });
    const mem = run([cw('m1', 60 * MIB), cw('m2', 60 * MIB)], settings({ overcommit: { cpu: 2, memory: 1 } }));
    assert.deepEqual(kinds(mem), { m1: 'create', m2: 'deny' });
  });

  it('both resources short: both named', () => {
    const p = run([cw('big', 200 * MIB, 3)], settings());
    assert.deepEqual(denial(p, 'big').violations, [
      'needs 3 CPUs; 2 CPUs allocatable left (2 CPUs allocatable, 0 CPU committed to 0 workloads)',
      'needs 200 MiB memory; 100 MiB allocatable left (100 MiB allocatable, 0 B committed to 0 workloads)',
    ]);
  });

  it('a workload without requests is admitted; policy.requireResourceRequests refuses it (POLICY_DENIED)', () => {
    const free = cw('free');
    assert.deepEqual(kinds(run([cw('a', 100 * MIB), free], settings())), { a: 'create', free: 'create' });
    const p = run([free], settings({ requireRequests: true }));
    const d = denial(p, 'free');
    assert.equal(d.code, 'POLICY_DENIED');
    assert.equal(d.untilHostChanges, undefined);
    assert.deepEqual(d.violations, ['policy.requireResourceRequests: a container workload must request CPU, memory or disk, and this one requests none']);
  });

  it('a resource whose allocatable is unknown is not checked', () => {
    assert.deepEqual(kinds(run([cw('a', 10 * GIB)], settings({ allocatable: { cpus: 2 } }))), { a: 'create' });
  });

  it('a recreate that raises past allocatable is denied and the old revision keeps running; one that does not raise always passes', () => {
    const old = cw('a', 64 * MIB, undefined, 'r1');
    const other = cw('o', 32 * MIB);
    const bigger = cw('a', 96 * MIB, undefined, 'r2');
    const observed = [obs(old), obs(other)];
    const records = { a: rec(old), o: rec(other) };
    const p = run([bigger, other], settings(), observed, records);
    assert.deepEqual(denial(p, 'a').violations, ['needs 96 MiB memory; 68 MiB allocatable left (100 MiB allocatable, 32 MiB committed to 1 workload)']);
    // Recorded as a terminal failure (by the executor): the next pass keeps the old revision serving.
    const failed = rec(old, {
      phase: 'Failed',
      revision: 'r2',
      error: { code: 'INSUFFICIENT_RESOURCES', message: 'x', userMessage: 'x', transient: false, details: { untilHostChanges: true } },
      retry: { attempts: 1, nextRetryAt: null, gaveUp: true, resetKey: retryResetKey(bigger, specHash(bigger)) },
    });
    const q = run([bigger, other], settings(), observed, { a: failed, o: rec(other) });
    const s = q.steps.find((x) => x.workloadId === 'a');
    assert.equal(s?.kind, 'noop');
    assert.match(s?.reason ?? '', /previous revision keeps running/);
    // Allocatable shrank below what runs (reserved raised): a recreate asking the same or less passes.
    const smaller = cw('a', 48 * MIB, undefined, 'r2');
    assert.equal(kinds(run([smaller, other], settings({ allocatable: { memoryBytes: 50 * MIB } }), observed, records)).a, 'recreate');
  });

  it('terminal until the host changes: a gave-up denial is applied once it fits; an engine-reported INSUFFICIENT_RESOURCES is not', () => {
    const a = cw('a', 64 * MIB);
    const b = cw('b', 64 * MIB);
    const denied = rec(b, {
      phase: 'Failed',
      runtimeId: undefined,
      actualState: 'missing',
      error: { code: 'INSUFFICIENT_RESOURCES', message: 'needs 64 MiB', userMessage: 'x', transient: false, details: { violations: 1, untilHostChanges: true } },
      retry: { attempts: 1, nextRetryAt: null, gaveUp: true, resetKey: retryResetKey(b, specHash(b)) },
    });
    // Still no room: a noop that keeps the reason (no backoff loop, no new attempt).
    const still = run([a, b], settings(), [obs(a)], { a: rec(a), b: denied });
    assert.equal(kinds(still).b, 'noop');
    assert.match(still.steps.find((x) => x.workloadId === 'b')?.reason ?? '', /^INSUFFICIENT_RESOURCES: needs 64 MiB memory; 36 MiB allocatable left/);
    // The host changed (a was removed from the document, or reserved lowered): b is created.
    assert.equal(kinds(run([b], settings(), [obs(a)], { a: rec(a), b: denied })).b, 'create');
    assert.equal(kinds(run([a, b], settings({ allocatable: { memoryBytes: 200 * MIB } }), [obs(a)], { a: rec(a), b: denied })).b, 'create');
    // The same code from the engine (a VM start refused) keeps the ordinary gave-up rule.
    const engine = { ...denied, error: { ...denied.error!, details: {} } };
    const p = run([b], settings({ allocatable: { memoryBytes: GIB } }), [], { b: engine });
    assert.equal(kinds(p).b, 'noop');
    assert.match(p.steps[0]?.reason ?? '', /^gave up after 1 attempts/);
  });

  it('under a node condition no new workload is admitted, with the reason; running ones are left alone', () => {
    const running = cw('run', 16 * MIB);
    const s = settings({ pressure: [{ type: 'DiskPressure', reason: 'nodefs.available 4% < 10% (1 MiB of 25 MiB free on /state)' }] });
    const p = run([running, cw('new', 16 * MIB), cw('free')], s, [obs(running)], { run: rec(running) });
    assert.deepEqual(kinds(p), { run: 'noop', new: 'deny', free: 'deny' });
    const d = denial(p, 'new');
    assert.equal(d.code, 'INSUFFICIENT_RESOURCES');
    assert.equal(d.untilHostChanges, true);
    assert.deepEqual(d.violations, ['the node has DiskPressure (nodefs.available 4% < 10% (1 MiB of 25 MiB free on /state)); no new workloads are admitted until it clears']);
  });

  it('committed: requests of desired workloads with an engine object, at the spec they were made from', () => {
    const a = cw('a', 64 * MIB, 0.5);
    const b = cw('b', 32 * MIB);
    const newer = cw('a', 128 * MIB, 1, 'r2');
    const c = computeCommitted({ desired: [newer, b, cw('c', 8 * MIB)], observed: [obs(a), obs(b), obs(cw('x', 999))], records: { a: rec(a) }, types: BUILTIN_TYPES });
    assert.deepEqual(c.total, { cpus: 0.5, memoryBytes: 96 * MIB, diskBytes: 0 });
    assert.equal(c.workloads, 2);
  });

  it('compose requests (the compose runtime\'s): the services\' limits add up', () => {
    const app: Workload = { id: 'shop', type: 'compose', revision: '1', spec: { project: 'shop', composeYaml: 'services:\n  api:\n    image: nginx:1.27\n    mem_limit: 64m\n  worker:\n    image: nginx:1.27\n    mem_limit: 64m\n    cpus: 0.5\n' } };
    assert.deepEqual(BUILTIN_TYPES.of(app).requests?.(app), { cpus: 0.5, memoryBytes: 128 * MIB });
    assert.deepEqual(denial(run([app], settings()), 'shop').violations, ['needs 128 MiB memory; 100 MiB allocatable left (100 MiB allocatable, 0 B committed to 0 workloads)']);
  });

  it('vm requests: vCPUs, memory plus QEMU overhead, disk sizes', () => {
    const vm: VmWorkload = { id: 'vm1', type: 'vm', revision: '1', spec: { vcpus: 2, memoryMiB: 512, disks: [{ name: 'root', sizeBytes: GIB }, { name: 'data', sizeBytes: 2 * GIB }] } };
    assert.deepEqual(BUILTIN_TYPES.of(vm).requests?.(vm), { cpus: 2, memoryBytes: 512 * MIB + VM_MEMORY_OVERHEAD_BYTES, diskBytes: 3 * GIB });
    const p = run([vm], settings({ allocatable: { cpus: 4, memoryBytes: 512 * MIB, diskBytes: 10 * GIB } }));
    assert.deepEqual(denial(p, 'vm1').violations, ['needs 576 MiB memory; 512 MiB allocatable left (512 MiB allocatable, 0 B committed to 0 workloads)']);
  });
});
