/**
 * Admission in the apply path: a PlanGate that the planner applies, in desired-state order, to the
 * step of every desired workload. A create or recreate that raises what is committed past what is
 * allocatable (times the overcommit factor) becomes a `deny` with INSUFFICIENT_RESOURCES and the
 * exact numbers; under a node condition (MemoryPressure, DiskPressure, PIDPressure) no new workload
 * is admitted at all. Pure: the caller hands in the figures, so `plan` and the agent decide alike.
 *
 * Committed: the requests of every desired workload that has an engine object (any state: a
 * stopped container can be started by anyone, and its reservation stays until it is removed),
 * counted at the requests of the spec it was made from. Objects no desired workload claims are
 * removed by the same plan before anything is created (the executor frees before it claims), so
 * they do not count.
 */
import type { PlanGate } from '../reconcile/planner.js';
import type { DenyStep, DesiredStep } from '../reconcile/steps.js';
import type { TypeRegistry } from '../runtimes/registry.js';
import type { ObservedWorkload, ResourceRequests, WorkloadBase } from '../runtimes/runtime.js';
import type { WorkloadRecord } from '../store/types.js';
import { formatBytes, formatCpus } from './units.js';

export const RESOURCE_KEYS = ['cpus', 'memoryBytes', 'diskBytes'] as const;
export type ResourceKey = (typeof RESOURCE_KEYS)[number];
export type ResourceFigures = Partial<Record<ResourceKey, number>>;

const WORDS: Record<ResourceKey, { noun: string; format: (n: number) => string }> = {
  cpus: { noun: '', format: formatCpus },
  memoryBytes: { noun: 'memory', format: formatBytes },
  diskBytes: { noun: 'disk', format: formatBytes },
};

export interface ActivePressure {
  /** MemoryPressure, DiskPressure, PIDPressure. */
  type: string;
  /** What is over its threshold, e.g. "nodefs.available 4.2% < 10% (/var/lib/persys-agent)". */
  reason: string;
}

export interface AdmissionSettings {
  /** capacity - reserved, per resource; a resource left out is not known and not checked. */
  allocatable: ResourceFigures;
  overcommit: { cpu: number; memory: number };
  /** policy.requireResourceRequests: a workload that requests nothing is refused. */
  requireRequests: boolean;
  /** Node conditions in force: each stops new admissions. */
  pressure: readonly ActivePressure[];
}

export interface AdmissionView {
  desired: readonly WorkloadBase[];
  observed: readonly ObservedWorkload[];
  records: Readonly<Record<string, WorkloadRecord>>;
  types: TypeRegistry;
}

export interface Committed {
  total: Required<ResourceFigures>;
  /** Workloads counted (those that have an engine object and request something). */
  workloads: number;
  /** What each counted workload holds. */
  byWorkload: Map<string, ResourceFigures>;
}

/** The factor on allocatable for a resource (disk is never overcommitted). */
function factor(s: AdmissionSettings, k: ResourceKey): number {
  return k === 'cpus' ? s.overcommit.cpu : k === 'memoryBytes' ? s.overcommit.memory : 1;
}

/** Only positive, finite figures are requests; zero or absent asks nothing of that resource. */
export function cleanRequests(r: ResourceRequests | undefined): ResourceFigures {
  const out: ResourceFigures = {};
  if (!r) return out;
  for (const k of RESOURCE_KEYS) {
    const n = r[k];
    if (typeof n === 'number' && Number.isFinite(n) && n > 0) out[k] = n;
  }
  return out;
}

const isEmpty = (r: ResourceFigures): boolean => RESOURCE_KEYS.every((k) => r[k] === undefined);

/** The requests of a desired workload by its type's descriptor (none when the type does not say). */
export function requestsOf(types: TypeRegistry, w: WorkloadBase): ResourceFigures {
  const d = types.get(w.type);
  return cleanRequests(d?.requests?.(w));
}

/**
 * What an existing engine object holds: the desired spec's requests when the object was made from
 * it; for an object of an older spec (a recreate is due), that spec's, read from the record's
 * canonical form (spec-shaped) when the record still describes the object, else the desired spec's.
 */
function heldBy(types: TypeRegistry, w: WorkloadBase, o: ObservedWorkload, record: WorkloadRecord | undefined): ResourceFigures {
  if (o.specHash === types.hash(w)) return requestsOf(types, w);
  if (record?.appliedSpec !== undefined && record.specHash !== undefined && record.specHash === o.specHash) {
    try {
      const d = types.get(w.type);
      const r = d?.requests?.({ ...w, spec: record.appliedSpec });
      if (r !== undefined) return cleanRequests(r);
    } catch {
      // A canonical form the descriptor cannot read: the desired spec's requests stand in.
    }
  }
  return requestsOf(types, w);
}

/** The sum of what the desired workloads with an engine object hold. */
export function computeCommitted(view: AdmissionView): Committed {
  const objects = new Map<string, ObservedWorkload>();
  for (const o of view.observed) if (o.state !== 'missing') objects.set(`${o.type}\u0000${o.workloadId}`, o);
  const total = { cpus: 0, memoryBytes: 0, diskBytes: 0 };
  const byWorkload = new Map<string, ResourceFigures>();
  for (const w of view.desired) {
    const o = objects.get(`${w.type}\u0000${w.id}`);
    if (!o || byWorkload.has(w.id)) continue;
    const held = heldBy(view.types, w, o, Object.hasOwn(view.records, w.id) ? view.records[w.id] : undefined);
    if (isEmpty(held)) continue;
    byWorkload.set(w.id, held);
    for (const k of RESOURCE_KEYS) total[k] += held[k] ?? 0;
  }
  return { total, workloads: byWorkload.size, byWorkload };
}

const plural = (n: number, one: string): string => `${n} ${one}${n === 1 ? '' : 's'}`;

/** "needs 512 MiB memory; 300 MiB allocatable left (2.0 GiB allocatable, 1.7 GiB committed to 5 workloads)" */
export function shortfallMessage(k: ResourceKey, need: number, limit: number, allocatable: number, f: number, committed: number, workloads: number): string {
  const { noun, format } = WORDS[k];
  const left = Math.max(0, limit - committed);
  const alloc = f === 1 ? `${format(allocatable)} allocatable` : `${format(limit)} allocatable with overcommit ${f} (${format(allocatable)} x ${f})`;
  return `needs ${format(need)}${noun ? ` ${noun}` : ''}; ${format(left)} allocatable left (${alloc}, ${format(committed)} committed to ${plural(workloads, 'workload')})`;
}

function deny(step: DesiredStep, code: DenyStep['code'], violations: string[], untilHostChanges: boolean): DenyStep {
  const { kind: _kind, reason: _reason, ...rest } = step;
  const base: DenyStep = { ...rest, kind: 'deny', code, violations, reason: `${code}: ${violations.join('; ')}` };
  return untilHostChanges ? { ...base, untilHostChanges: true } : base;
}

/**
 * The admission gate of one plan pass. It keeps a running sum: a workload admitted earlier in
 * desired-state order counts against the ones after it, so the same document on the same host
 * always admits the same workloads (first fit, in document order). Running workloads are never
 * touched: a denied recreate leaves the previous revision serving (the planner's deny rule).
 */
export function admissionGate(settings: AdmissionSettings, view: AdmissionView): PlanGate {
  const committed = computeCommitted(view);
  const total = { ...committed.total };
  const holders = new Map(committed.byWorkload);
  return {
    name: 'admission',
    check(step) {
      if (step.kind !== 'create' && step.kind !== 'recreate') return step;
      const w = step.workload;
      if (settings.pressure.length > 0) {
        const why = settings.pressure.map((p) => `${p.type} (${p.reason})`).join(', ');
        return deny(step, 'INSUFFICIENT_RESOURCES', [`the node has ${why}; no new workloads are admitted until it clears`], true);
      }
      const need = requestsOf(view.types, w);
      if (isEmpty(need)) {
        if (settings.requireRequests) {
          return deny(step, 'POLICY_DENIED', [`policy.requireResourceRequests: a ${w.type} workload must request CPU, memory or disk, and this one requests none`], false);
        }
        return step;
      }
      // A recreate replaces what the workload holds now: the others' sum is what it must fit beside.
      const held = step.kind === 'recreate' ? (holders.get(w.id) ?? {}) : {};
      const otherHolders = holders.size - (holders.has(w.id) ? 1 : 0);
      const short: string[] = [];
      for (const k of RESOURCE_KEYS) {
        const n = need[k];
        const allocatable = settings.allocatable[k];
        if (n === undefined || allocatable === undefined) continue;
        const f = factor(settings, k);
        const limit = allocatable * f;
        const others = total[k] - (held[k] ?? 0);
        if (others + n <= limit) continue;
        // Not raising what is committed (a recreate that asks no more than it holds) is never refused.
        if (step.kind === 'recreate' && n <= (held[k] ?? 0)) continue;
        short.push(shortfallMessage(k, n, limit, allocatable, f, others, otherHolders));
      }
      if (short.length > 0) return deny(step, 'INSUFFICIENT_RESOURCES', short, true);
      for (const k of RESOURCE_KEYS) total[k] += (need[k] ?? 0) - (held[k] ?? 0);
      holders.set(w.id, need);
      return step;
    },
  };
}
