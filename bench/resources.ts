/**
 * What admission costs a plan pass: 5,000 container workloads (all running and settled, and all new),
 * planned with the admission gate beside the same plan without it, in one run. Prints figures, never
 * fails on a number. `npx tsx bench/resources.ts`
 */
import { performance } from 'node:perf_hooks';

import { canonicalSpec, specHash } from '../src/reconcile/canonical.js';
import { plan } from '../src/reconcile/planner.js';
import { retryResetKey } from '../src/reconcile/records.js';
import { admissionGate } from '../src/resources/admission.js';
import { BUILTIN_TYPES } from '../src/runtimes/registry.js';
import type { ObservedWorkload } from '../src/runtimes/runtime.js';
import type { ContainerWorkload, DesiredStateDocument } from '../src/spec/desired-state.js';
import type { WorkloadRecord } from '../src/store/types.js';

const N = 5_000;
const ROUNDS = 20;
const NOW = new Date('2025-06-01T12:00:00.000Z');
const MIB = 1024 * 1024;

const workloads: ContainerWorkload[] = Array.from({ length: N }, (_, i) => ({
  id: `w${String(i).padStart(5, '0')}`,
  type: 'container',
  revision: 'r1',
  spec: { image: 'nginx:1.27', env: { I: String(i) }, resources: { cpus: 0.01, memoryBytes: 16 * MIB } },
}));
const doc: DesiredStateDocument = { apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId: 'bench', generation: 1, workloads };
const observed: ObservedWorkload[] = workloads.map((w) => ({ workloadId: w.id, type: w.type, runtime: 'docker', runtimeId: `rt-${w.id}`, name: w.id, revision: w.revision, specHash: specHash(w), state: 'running' }));
const records: Record<string, WorkloadRecord> = Object.fromEntries(
  workloads.map((w) => [
    w.id,
    {
      id: w.id, type: w.type, revision: w.revision, specHash: specHash(w), appliedSpec: canonicalSpec(w), desiredState: 'running', phase: 'Running', actualState: 'running', message: '',
      runtimeId: `rt-${w.id}`, error: null, retry: { attempts: 0, nextRetryAt: null, gaveUp: false, resetKey: retryResetKey(w, specHash(w)) }, failures: [], updatedAt: NOW.toISOString(), phaseSince: NOW.toISOString(),
    } satisfies WorkloadRecord,
  ]),
);
const UP = { container: true, compose: true, vm: true };
// Room for half of them: the other half is denied with a message each.
const settings = { allocatable: { cpus: 1000, memoryBytes: (N / 2) * 16 * MIB }, overcommit: { cpu: 1, memory: 1 }, requireRequests: false, pressure: [] };

function median(f: () => void): number {
  const t: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const s = performance.now();
    f();
    t.push(performance.now() - s);
  }
  return t.sort((a, b) => a - b)[Math.floor(ROUNDS / 2)] ?? 0;
}

const settled = { desired: doc, records, observed, runtimeUp: UP, now: NOW };
const fresh = { desired: doc, records: {}, observed: [], runtimeUp: UP, now: NOW };
const gate = (o: readonly ObservedWorkload[], r: Record<string, WorkloadRecord>) => [admissionGate(settings, { desired: workloads, observed: o, records: r, types: BUILTIN_TYPES })];

plan(settled); // warm the hash caches, as a running agent has them
const base = median(() => plan(settled));
const withGate = median(() => plan({ ...settled, gates: gate(observed, records) }));
const baseNew = median(() => plan(fresh));
const withGateNew = median(() => plan({ ...fresh, gates: gate([], {}) }));
const denied = plan({ ...fresh, gates: gate([], {}) }).steps.filter((s) => s.kind === 'deny').length;
console.log(`plan ${N} settled workloads: ${base.toFixed(1)} ms without admission, ${withGate.toFixed(1)} ms with it (+${(withGate - base).toFixed(1)} ms)`);
console.log(`plan ${N} new workloads (${denied} denied for memory): ${baseNew.toFixed(1)} ms without admission, ${withGateNew.toFixed(1)} ms with it (+${(withGateNew - baseNew).toFixed(1)} ms)`);
