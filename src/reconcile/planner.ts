import type { ObservedWorkload, RuntimeName } from '../runtimes/runtime.js';
import type { DesiredStateDocument, Workload, WorkloadType } from '../spec/desired-state.js';
import type { Phase } from '../spec/status-report.js';
import type { WorkloadRecord } from '../store/types.js';
import { canonicalSpec, describeSpecChanges, specHash } from './canonical.js';
import { retryAsked, retryResetKey } from './records.js';
import { STEP_KINDS, type Step, type StepKind } from './steps.js';

/*
 * observe -> PLAN -> execute. The planner is a pure function of its input: no clock (now is
 * given), no I/O, no mutation of its arguments. Everything the agent decides is decided here, so
 * it can be printed by `persys-agent plan` and tested with hundreds of table cases.
 */

export interface PlanInput {
  /** null: no desired state was ever loaded -> manage nothing, remove nothing, empty plan. */
  desired: DesiredStateDocument | null;
  records: Readonly<Record<string, WorkloadRecord>>;
  /** From the runtimes that answered. */
  observed: readonly ObservedWorkload[];
  /** false: that type's runtime could not be observed. */
  runtimeUp: Readonly<Record<WorkloadType, boolean>>;
  now: Date;
}

export interface Plan {
  /** Sorted: remove, stop, recreate, create, start, adopt, wait, noop; then by workloadId. */
  steps: Step[];
  /** Desired workloads whose runtime is down: no step, status RUNTIME_UNAVAILABLE. */
  unavailable: { workloadId: string; type: WorkloadType; reason: string }[];
  /** Record ids neither desired nor observed: the store drops them. */
  forget: string[];
}

const RUNTIME_OF: Readonly<Record<WorkloadType, RuntimeName>> = { container: 'docker', compose: 'docker', vm: 'libvirt' };

/** Steps that apply the spec or start it: the retry budget and backoff gate these. */
const APPLYING: ReadonlySet<StepKind> = new Set(['create', 'recreate', 'start']);
/**
 * Stops wait out a backoff like any engine call, but a spent budget never blocks them: a budget
 * used up on starting must not keep running a workload the publisher now wants stopped.
 */
const BACKOFF_GATED: ReadonlySet<StepKind> = new Set([...APPLYING, 'stop']);
/** Record phases that mean the workload ran at least once (for restartPolicy "no"). */
const HAS_RUN_PHASES: ReadonlySet<Phase> = new Set(['Running', 'Completed', 'Failed', 'CrashLoop']);
const KIND_ORDER: ReadonlyMap<StepKind, number> = new Map(
  (['remove', 'stop', 'recreate', 'create', 'start', 'adopt', 'wait', 'noop'] as const satisfies readonly StepKind[]).map((k, i) => [k, i]),
);
// A step kind added to STEP_KINDS without a place in the order would sort unpredictably.
for (const k of STEP_KINDS) if (!KIND_ORDER.has(k)) throw new Error(`planner: no order for step kind ${k}`);

const EMPTY_PLAN = (): Plan => ({ steps: [], unavailable: [], forget: [] });

export function plan(input: PlanInput): Plan {
  const { desired, records, observed, runtimeUp, now } = input;
  if (desired === null) return EMPTY_PLAN();
  const isUp = (t: WorkloadType): boolean => runtimeUp[t] === true;

  const byId = new Map<string, ObservedWorkload[]>();
  for (const o of observed) {
    const list = byId.get(o.workloadId);
    if (list) list.push(o);
    else byId.set(o.workloadId, [o]);
  }

  const steps: Step[] = [];
  const unavailable: Plan['unavailable'] = [];
  const desiredIds = new Set<string>();

  for (const w of desired.workloads) {
    desiredIds.add(w.id);
    const all = byId.get(w.id) ?? [];
    const same = all.filter((o) => o.type === w.type);
    // Same id, other type (a container became a VM): the old object goes, the record stays with w.
    for (const o of all) {
      if (o.type !== w.type && isUp(o.type)) {
        steps.push({ kind: 'remove', workloadId: w.id, reason: `workload is now a ${w.type}; removing the old ${o.type} ${o.name}`, workload: w, observed: o });
      }
    }
    if (!isUp(w.type)) {
      unavailable.push({ workloadId: w.id, type: w.type, reason: `${RUNTIME_OF[w.type]} is unavailable, so ${w.type} workloads cannot be observed or changed` });
      continue;
    }
    // hasOwn: a workload may be called "constructor", which a plain lookup finds on Object.prototype.
    planWorkload(w, Object.hasOwn(records, w.id) ? records[w.id] : undefined, same, now, steps);
  }

  for (const [id, list] of byId) {
    if (desiredIds.has(id)) continue;
    for (const o of list) {
      if (!isUp(o.type)) continue;
      steps.push({ kind: 'remove', workloadId: id, reason: 'not in desired state', observed: o });
    }
  }

  const forget: string[] = [];
  for (const [id, r] of Object.entries(records)) {
    // A record whose runtime is down may still have an engine object we cannot see: keep it.
    if (!desiredIds.has(id) && !byId.has(id) && isUp(r.type)) forget.push(id);
  }

  steps.sort(compareSteps);
  unavailable.sort((a, b) => cmp(a.workloadId, b.workloadId));
  forget.sort(cmp);
  return { steps, unavailable, forget };
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function compareSteps(a: Step, b: Step): number {
  return (
    (KIND_ORDER.get(a.kind) ?? 99) - (KIND_ORDER.get(b.kind) ?? 99) ||
    cmp(a.workloadId, b.workloadId) ||
    cmp(a.observed?.runtimeId ?? '', b.observed?.runtimeId ?? '')
  );
}

const sameRevision = (a: string | undefined, b: string | undefined): boolean => (a ?? '') === (b ?? '');

/** Engines report "never" as the zero time (Docker: 0001-01-01T00:00:00Z). */
function isRealTime(t: string | null | undefined): boolean {
  if (!t) return false;
  const ms = Date.parse(t);
  return Number.isFinite(ms) && ms > 0;
}

/** Best of several engine objects for one workload: matching, then running, then newest, then by id. */
function pickBest(list: readonly ObservedWorkload[], hash: string, revision: string | undefined): ObservedWorkload {
  const score = (o: ObservedWorkload): [number, number, string, string] => [
    o.specHash === hash && sameRevision(o.revision, revision) ? 1 : 0,
    o.state === 'running' ? 1 : 0,
    o.createdAt ?? '',
    o.runtimeId,
  ];
  let best = list[0] as ObservedWorkload;
  let bestScore = score(best);
  for (const o of list.slice(1)) {
    const s = score(o);
    const better = s[0] !== bestScore[0] ? s[0] > bestScore[0] : s[1] !== bestScore[1] ? s[1] > bestScore[1] : s[2] !== bestScore[2] ? s[2] > bestScore[2] : s[3] < bestScore[3];
    if (better) {
      best = o;
      bestScore = s;
    }
  }
  return best;
}

/** Appends the steps of one desired workload (duplicate removals, then its own step) to `out`. */
function planWorkload(w: Workload, record: WorkloadRecord | undefined, same: readonly ObservedWorkload[], now: Date, out: Step[]): void {
  const hash = specHash(w);
  const base = { workloadId: w.id, workload: w, specHash: hash };

  let o: ObservedWorkload | undefined;
  if (same.length > 0) {
    o = pickBest(same, hash, w.revision);
    for (const dup of same) {
      if (dup !== o) out.push({ kind: 'remove', ...base, reason: `duplicate of ${o.name}`, observed: dup });
    }
  }

  out.push(gate(intendedStep(w, record, o, hash), w, record, hash, now));
}

/** The step the workload needs, before the retry budget has its say. */
function intendedStep(w: Workload, record: WorkloadRecord | undefined, o: ObservedWorkload | undefined, hash: string): Step {
  const base = { workloadId: w.id, workload: w, specHash: hash };
  if (!o || o.state === 'missing') {
    return { kind: 'create', ...base, reason: record ? 'not found on engine' : 'new workload' };
  }
  const withObs = { ...base, observed: o };

  if (o.specHash !== hash || !sameRevision(o.revision, w.revision)) {
    return { kind: 'recreate', ...withObs, reason: recreateReason(w, record, o, hash) };
  }

  const desiredState = w.desiredState ?? 'running';
  const adoptOr = (noopReason: string): Step => settled(withObs, record, o, noopReason);

  if (o.state === 'unknown') return { kind: 'noop', ...withObs, reason: 'the engine reports an unknown state; waiting for it to settle' };

  if (desiredState === 'stopped') {
    if (o.state === 'running' || o.state === 'restarting' || o.state === 'paused') {
      return { kind: 'stop', ...withObs, reason: `desired stopped, but the ${w.type} is ${o.state}` };
    }
    return adoptOr('stopped as desired');
  }

  switch (o.state) {
    case 'running':
      return adoptOr(RUNNING);
    case 'restarting':
      return adoptOr('restarting under the engine restart policy');
    case 'paused':
      return adoptOr('paused outside the agent');
    case 'created':
      // "created" means never started, so restartPolicy "no" has nothing to say yet.
      return { kind: 'start', ...withObs, reason: 'created but not started; desired running' };
    case 'exited':
    case 'stopped': {
      const code = o.exitCode ?? record?.container?.exitCode;
      const what = `${o.state} (code ${code ?? 'unknown'})`;
      // Asked to run again (retry request, new retryToken): the restart policy does not keep it down.
      const stayDown = retryAsked(record, retryResetKey(w, hash)) ? undefined : settledByRestartPolicy(w, record, o, code);
      if (stayDown) return adoptOr(`${what}; ${stayDown}`);
      return { kind: 'start', ...withObs, reason: `${what}; desired running` };
    }
  }
}

const RUNNING = 'running as desired';

/** Nothing to change on the engine: a noop, or an adopt when the store does not know this object yet. */
function settled(fields: Omit<Step, 'kind' | 'reason'>, record: WorkloadRecord | undefined, o: ObservedWorkload, noopReason: string): Step {
  if (!record || record.runtimeId !== o.runtimeId) {
    const reason = noopReason === RUNNING ? 'found on engine, adopting' : `found on engine, adopting; ${noopReason}`;
    return { kind: 'adopt', ...fields, reason };
  }
  return { kind: 'noop', ...fields, reason: noopReason };
}

/**
 * A container that ran and exited stays down when its own restart policy says so: "no" never
 * restarts, and "on-failure" does not restart a clean exit. Starting it again would turn a
 * one-shot job into a loop.
 */
function settledByRestartPolicy(w: Workload, record: WorkloadRecord | undefined, o: ObservedWorkload, code: number | null | undefined): string | undefined {
  if (w.type !== 'container') return undefined;
  const hasRun =
    (record !== undefined && HAS_RUN_PHASES.has(record.phase)) || isRealTime(o.finishedAt) || isRealTime(record?.container?.finishedAt);
  if (!hasRun) return undefined;
  const policy = w.spec.restartPolicy ?? 'unless-stopped';
  if (policy === 'no') return 'restartPolicy no';
  if (policy === 'on-failure' && code === 0) return 'restartPolicy on-failure does not restart a clean exit';
  return undefined;
}

function recreateReason(w: Workload, record: WorkloadRecord | undefined, o: ObservedWorkload, hash: string): string {
  const reasons: string[] = [];
  if (o.specHash !== hash) {
    // appliedSpec describes the engine object only when the record's hash is the object's hash.
    const described =
      record?.appliedSpec !== undefined && record.specHash === o.specHash ? describeSpecChanges(record.appliedSpec, canonicalSpec(w)) : [];
    if (described.length > 0) reasons.push(...described);
    else reasons.push('spec hash on engine differs');
  }
  if (!sameRevision(o.revision, w.revision)) reasons.push(`revision ${o.revision || 'none'} -> ${w.revision ?? 'none'}`);
  return reasons.join('; ');
}

/** Applies the retry budget: a spent budget holds applying steps, a backoff delays them. */
function gate(step: Step, w: Workload, record: WorkloadRecord | undefined, hash: string, now: Date): Step {
  if (!record || record.retry.resetKey !== retryResetKey(w, hash)) return step;
  const { retry } = record;
  // A previous revision that still serves is not the failed attempt's resource: a bad new image
  // tag must not take the service down. It stays until the desired state changes again.
  if (retry.gaveUp && step.kind === 'recreate' && (step.observed?.state === 'running' || step.observed?.state === 'restarting')) {
    const { kind: _kind, reason: _reason, ...rest } = step;
    return {
      ...rest,
      kind: 'noop',
      reason: `gave up applying the new spec (${record.error?.code ?? 'failed'}); the previous revision keeps running`,
    };
  }
  // A workload that failed terminally keeps its record and error, not its runtime resources.
  if (retry.gaveUp && step.observed && step.kind !== 'remove') {
    const { kind: _kind, reason: _reason, until: _until, ...rest } = step;
    return {
      ...rest,
      kind: 'remove',
      reason: `failed terminally (${record.error?.code ?? 'gave up'}); removing its runtime resources, the record and error stay until the desired state changes`,
    };
  }
  if (retry.gaveUp && APPLYING.has(step.kind)) {
    const { kind: _kind, reason: _reason, ...rest } = step;
    return {
      ...rest,
      kind: 'noop',
      reason: `gave up after ${retry.attempts} attempts (change retryToken or revision, or run persys-agent retry)`,
    };
  }
  if (BACKOFF_GATED.has(step.kind) && retry.nextRetryAt !== null) {
    const until = Date.parse(retry.nextRetryAt);
    if (Number.isFinite(until) && until > now.getTime()) {
      const last = record.error ? ` (last error ${record.error.code})` : '';
      const { kind: _kind, reason: _reason, ...rest } = step;
      return {
        ...rest,
        kind: 'wait',
        until: retry.nextRetryAt,
        reason: `backing off after ${retry.attempts} failed attempt${retry.attempts === 1 ? '' : 's'}${last}; next ${step.kind} at ${retry.nextRetryAt}`,
      };
    }
  }
  return step;
}
