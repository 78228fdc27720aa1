import { WorkloadError } from '../errors/index.js';
import type { TypeRegistry } from '../runtimes/registry.js';
import type { ObservedWorkload, WorkloadBase } from '../runtimes/runtime.js';
import type { WorkloadRecord } from '../store/types.js';
import type { Plan } from './planner.js';
import { boundedSummary, capLogTail, exitError, newRecord, phaseFromObserved, retryResetKey, withFailureEntry, withObserved, withPhase, withResetKey } from './records.js';
import type { NoopStep } from './steps.js';

/*
 * Record transitions that follow from a plan before anything is executed, as a pure function:
 * settled workloads take their observed state (and crash evidence), workloads whose runtime is down
 * get RUNTIME_UNAVAILABLE, records nobody wants any more are forgotten. The loop applies the result.
 */

/** Errors that only describe what the engine reported of a running workload; they go when it runs again. */
const OBSERVED_ERROR_CODES: ReadonlySet<string> = new Set(['CRASH_LOOP', 'CONTAINER_EXITED', 'OUT_OF_MEMORY', 'RUNTIME_UNAVAILABLE']);

export interface SettleInput {
  plan: Plan;
  records: Readonly<Record<string, WorkloadRecord>>;
  desired: { workloads: readonly WorkloadBase[]; [field: string]: unknown } | null;
  observed: readonly ObservedWorkload[];
  /** Why a type's runtime is down, by type. */
  downReason: Readonly<Record<string, string>>;
  /** Last log lines of failing workloads, by workload id (gathered before planning). */
  logs: ReadonlyMap<string, readonly string[]>;
  types: TypeRegistry;
  now: Date;
}

export interface RecordChanges {
  /** Records to write (only ones that changed). */
  put: WorkloadRecord[];
  /** Record ids to delete. */
  forget: string[];
  /** Records that could not be settled (a refused phase move is a bug), with why. */
  problems: { workloadId: string; message: string }[];
}

const sameJson = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);

export function settleRecords(i: SettleInput): RecordChanges {
  const out: RecordChanges = { put: [], forget: [], problems: [] };
  const put = (before: WorkloadRecord | undefined, after: WorkloadRecord) => {
    if (before === after || (before && sameJson(before, after))) return;
    out.put.push(after);
  };
  const get = (id: string) => (Object.hasOwn(i.records, id) ? i.records[id] : undefined);
  const observedById = new Map<string, ObservedWorkload>();
  for (const o of i.observed) observedById.set(o.workloadId, o);
  const desiredById = new Map((i.desired?.workloads ?? []).map((w) => [w.id, w] as const));

  for (const u of i.plan.unavailable) {
    const w = desiredById.get(u.workloadId);
    if (!w) continue;
    const before = get(u.workloadId);
    put(before, unavailable(before, w, i.downReason[u.type] ?? u.reason, i.now));
  }
  for (const s of i.plan.steps) {
    if (s.kind !== 'noop') continue;
    const before = get(s.workloadId);
    if (!before) continue;
    const o = s.observed ?? observedById.get(s.workloadId);
    const key = retryResetKey(s.workload, s.specHash);
    // A workload that gave up keeps its Failed phase and error until its reset key changes.
    if (before.retry.gaveUp && before.retry.resetKey === key) {
      if (o && before.actualState !== o.state) put(before, { ...before, actualState: o.state });
      continue;
    }
    if (!o) continue;
    try {
      put(before, settle(before, withResetKey(before, key), o, s, i));
    } catch (err) {
      out.problems.push({ workloadId: s.workloadId, message: err instanceof Error ? err.message : String(err) });
    }
  }
  for (const id of i.plan.forget) if (get(id)) out.forget.push(id);
  return out;
}

/**
 * A desired workload whose runtime is down: RUNTIME_UNAVAILABLE, a running one stays Running. Its
 * backoff ends: the failures that built it were mostly the engine going away under a step, and the
 * workload must be judged afresh (and converge) as soon as the engine is back, not a backoff later.
 * The attempts count stays, so a workload that really fails still gives up.
 */
export function unavailable(before: WorkloadRecord | undefined, w: WorkloadBase, msg: string, now: Date): WorkloadRecord {
  const base = before ?? newRecord(w, now);
  const err = new WorkloadError('RUNTIME_UNAVAILABLE', msg);
  return {
    ...withPhase(base, before?.phase === 'Running' ? 'Running' : 'Pending', msg, now),
    retry: { ...base.retry, nextRetryAt: null },
    actualState: before?.actualState === 'running' ? 'running' : 'unknown',
    desiredState: w.desiredState ?? 'running',
    revision: w.revision,
    error: err.summary(),
    updatedAt: before && before.error?.code === 'RUNTIME_UNAVAILABLE' ? before.updatedAt : now.toISOString(),
  };
}

/**
 * The record of a settled workload from what the engine reports: phase, facts, and for a
 * workload failing on its own (crash loop, OOM, exit) the error, a history entry per new exit and
 * the last log lines. An unchanged record is returned as `before` so nothing is written.
 */
export function settle(before: WorkloadRecord, base: WorkloadRecord, o: ObservedWorkload, s: NoopStep, i: Pick<SettleInput, 'logs' | 'types' | 'now'>): WorkloadRecord {
  const { now } = i;
  const d = i.types.of(s.workload);
  const desiredState = s.workload.desiredState ?? 'running';
  const settled = phaseFromObserved(o, desiredState, now);
  let next = withObserved(base, o, d);
  if (next.engineState) {
    const { engineState: _gone, ...rest } = next;
    next = rest;
  }
  next = { ...withPhase(next, settled.phase, settled.message || s.reason, now), actualState: settled.actual };
  const failing = settled.phase === 'CrashLoop' || settled.phase === 'Failed';
  const err = failing ? exitError(o, settled.phase === 'CrashLoop', before.evidence?.exitCode) : null;
  if (err) {
    next = { ...next, error: boundedSummary(err) };
    const newExit =
      (o.finishedAt !== undefined && o.finishedAt !== null && o.finishedAt !== before.evidence?.finishedAt) ||
      (o.restartCount !== undefined && o.restartCount !== before.evidence?.restartCount);
    if (newExit) next = { ...next, failures: withFailureEntry(next.failures, { at: o.finishedAt ?? now.toISOString(), code: err.code, message: err.message }) };
  } else if (next.error && OBSERVED_ERROR_CODES.has(next.error.code) && !failing) {
    next = { ...next, error: null };
  }
  const logs = i.logs.get(o.workloadId);
  if (next.evidence) {
    if (logs && failing) next = { ...next, evidence: { ...next.evidence, logTail: capLogTail(logs) } };
    else if (!failing && next.evidence.logTail) {
      const { logTail: _drop, ...rest } = next.evidence;
      next = { ...next, evidence: rest };
    }
  }
  if (sameJson({ ...before, updatedAt: '', phaseSince: '' }, { ...next, updatedAt: '', phaseSince: '' })) return before;
  return next;
}
