import * as v from 'valibot';
import { configSchema } from '../config/schema.js';
import { BUILTIN_TYPES, type TypeRegistry } from '../runtimes/registry.js';
import type { HostPolicy, ObservedWorkload, TypeDescriptor, WorkloadBase } from '../runtimes/runtime.js';
import type { Phase } from '../spec/status-report.js';
import type { WorkloadRecord } from '../store/types.js';
import { retryAsked, retryResetKey } from './records.js';
import { STEP_KINDS, type DesiredStep, type Step, type StepKind } from './steps.js';

/*
 * observe -> PLAN -> execute. The planner is a pure function of its input: no clock (now is
 * given), no I/O, no mutation of its arguments. Everything the agent decides is decided here (host
 * policy included), so it can be printed by `persys-agent plan` and tested with table cases. It
 * knows no workload type: each type's rules come from its descriptor in the registry.
 */

export interface PlanInput {
  /** null: no desired state was ever loaded -> manage nothing, remove nothing, empty plan. */
  desired: { workloads: readonly WorkloadBase[]; [field: string]: unknown } | null;
  records: Readonly<Record<string, WorkloadRecord>>;
  /** From the runtimes that answered. */
  observed: readonly ObservedWorkload[];
  /** false or absent: that type's runtime could not be observed. */
  runtimeUp: Readonly<Record<string, boolean>>;
  /** Why a type's runtime is down (for the reason of RUNTIME_UNAVAILABLE). */
  downReason?: Readonly<Record<string, string>>;
  now: Date;
  /** The workload types (default the built-in ones). */
  types?: TypeRegistry;
  /** The host policy (default the secure defaults: privileged, host network, host paths denied). */
  policy?: HostPolicy;
  /** How long an engine state that is neither running nor stopped is waited for before a repair (default 60). */
  oddStateWaitSeconds?: number;
  /**
   * Checks a step must pass before it touches an engine (admission, storage quota, maintenance
   * windows, update locks), applied in this order after host policy. Built fresh for each plan()
   * call by whoever calls it, so a gate may keep state across the workloads of one pass.
   */
  gates?: readonly PlanGate[];
}

/**
 * One check in the apply path. Called for each desired workload's step in desired-state order (so
 * the same document always decides the same way); returns the step unchanged, or the step turned
 * into a `deny` (terminal until the document or host changes) or a `wait` (held, with the reason).
 */
export interface PlanGate {
  readonly name: string;
  check(step: DesiredStep, record: WorkloadRecord | undefined, now: Date): DesiredStep;
}

export interface Plan {
  /** Sorted: remove, stop, recreate, repair, create, deny, start, adopt, wait, noop; then by workloadId. */
  steps: Step[];
  /** Desired workloads whose runtime is down: no step, status RUNTIME_UNAVAILABLE. */
  unavailable: { workloadId: string; type: string; reason: string }[];
  /** Record ids neither desired nor observed: the store drops them. */
  forget: string[];
}

export const ODD_STATE_WAIT_SECONDS = 60;

/** Steps that apply the spec or start it: the retry budget and backoff gate these. */
const APPLYING: ReadonlySet<StepKind> = new Set(['create', 'recreate', 'start', 'repair']);
/**
 * Stops wait out a backoff like any engine call, but a spent budget never blocks them: a budget
 * used up on starting must not keep running a workload the publisher now wants stopped.
 */
const BACKOFF_GATED: ReadonlySet<StepKind> = new Set([...APPLYING, 'stop']);
/** Record phases that mean the workload ran at least once (for restart rules). */
const HAS_RUN_PHASES: ReadonlySet<Phase> = new Set(['Running', 'Completed', 'Failed', 'CrashLoop']);
const KIND_ORDER: ReadonlyMap<StepKind, number> = new Map(
  (['remove', 'stop', 'recreate', 'repair', 'create', 'deny', 'start', 'adopt', 'wait', 'noop'] as const satisfies readonly StepKind[]).map((k, i) => [k, i]),
);
// A step kind added to STEP_KINDS without a place in the order would sort unpredictably.
for (const k of STEP_KINDS) if (!KIND_ORDER.has(k)) throw new Error(`planner: no order for step kind ${k}`);

/** The host policy of a config that says nothing: the secure defaults. */
let defaultPolicy: HostPolicy | undefined;
const DEFAULT_POLICY = (): HostPolicy => (defaultPolicy ??= v.parse(configSchema, {}).policy);

const EMPTY_PLAN = (): Plan => ({ steps: [], unavailable: [], forget: [] });

interface Ctx {
  types: TypeRegistry;
  policy: HostPolicy;
  now: Date;
  oddWaitMs: number;
  gates: readonly PlanGate[];
}

export function plan(input: PlanInput): Plan {
  const { desired, records, observed, runtimeUp, now } = input;
  if (desired === null) return EMPTY_PLAN();
  const types = input.types ?? BUILTIN_TYPES;
  const ctx: Ctx = { types, policy: input.policy ?? DEFAULT_POLICY(), now, oddWaitMs: (input.oddStateWaitSeconds ?? ODD_STATE_WAIT_SECONDS) * 1000, gates: input.gates ?? [] };
  const isUp = (t: string): boolean => Object.hasOwn(runtimeUp, t) && runtimeUp[t] === true;

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
    // Same id, other type: the old object goes, the record stays with w.
    for (const o of all) {
      if (o.type !== w.type && isUp(o.type)) {
        steps.push({ kind: 'remove', target: 'workload', workloadId: w.id, reason: `workload is now a ${w.type}; removing the old ${o.type} ${o.name}`, workload: w, observed: o, why: 'removed-from-desired' });
      }
    }
    if (!isUp(w.type)) {
      const why = input.downReason?.[w.type] ?? `the runtime of ${w.type} workloads is unavailable`;
      unavailable.push({ workloadId: w.id, type: w.type, reason: `${why}, so ${w.type} workloads cannot be observed or changed` });
      continue;
    }
    // hasOwn: a workload may be called "constructor", which a plain lookup finds on Object.prototype.
    planWorkload(w, Object.hasOwn(records, w.id) ? records[w.id] : undefined, same, ctx, steps);
  }

  for (const [id, list] of byId) {
    if (desiredIds.has(id)) continue;
    // Objects the records know are torn down here. An object no record and no desired workload
    // claims may be a create in flight (made, its record not yet written): it is the garbage
    // collector's, after gc.orphanGraceSeconds (src/gc, docs/gc.md).
    if (!Object.hasOwn(records, id)) continue;
    for (const o of list) {
      if (!isUp(o.type)) continue;
      steps.push({ kind: 'remove', target: 'workload', workloadId: id, reason: 'not in desired state', observed: o, why: 'removed-from-desired' });
    }
  }

  const forget: string[] = [];
  for (const [id, r] of Object.entries(records)) {
    // A record whose runtime is down may still have an engine object we cannot see: keep it.
    // A failed workload's record (its error and failure history) is kept for gc.failedRetentionSeconds
    // after the desired state dropped it: the garbage collector forgets it.
    if (!desiredIds.has(id) && !byId.has(id) && isUp(r.type) && !isFailedRecord(r)) forget.push(id);
  }

  steps.sort(compareSteps);
  unavailable.sort((a, b) => cmp(a.workloadId, b.workloadId));
  forget.sort(cmp);
  return { steps, unavailable, forget };
}

/** A record of a workload that failed (terminally, or gave up retrying): kept for GC's retention. */
export function isFailedRecord(r: WorkloadRecord): boolean {
  return r.phase === 'Failed' || r.retry.gaveUp;
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

const observedOf = (s: Step): ObservedWorkload | undefined => ('observed' in s ? s.observed : undefined);

function compareSteps(a: Step, b: Step): number {
  return (KIND_ORDER.get(a.kind) ?? 99) - (KIND_ORDER.get(b.kind) ?? 99) || cmp(a.workloadId, b.workloadId) || cmp(observedOf(a)?.runtimeId ?? '', observedOf(b)?.runtimeId ?? '');
}

const sameRevision = (a: string | undefined, b: string | undefined): boolean => (a ?? '') === (b ?? '');

/** Engines report "never" as the zero time (Docker: 0001-01-01T00:00:00Z). */
function isRealTime(t: string | null | undefined): boolean {
  if (!t) return false;
  const ms = Date.parse(t);
  return Number.isFinite(ms) && ms > 0;
}

/** The fields every step of one desired workload carries. */
interface Base {
  target: 'workload';
  workloadId: string;
  workload: WorkloadBase;
  specHash: string;
  hashVersion: number;
}

/** Appends the steps of one desired workload (duplicate removals, then its own step) to `out`. */
function planWorkload(w: WorkloadBase, record: WorkloadRecord | undefined, same: readonly ObservedWorkload[], ctx: Ctx, out: Step[]): void {
  const d = ctx.types.of(w);
  const hash = ctx.types.hash(w);
  const base: Base = { target: 'workload', workloadId: w.id, workload: w, specHash: hash, hashVersion: d.hashVersion };

  let o: ObservedWorkload | undefined;
  if (same.length > 0) {
    // The runtime's type descriptor says which object is the workload; the others are duplicates.
    o = same.length === 1 ? same[0] : d.primary(same, { specHash: hash, revision: w.revision });
    for (const dup of same) {
      if (dup !== o) out.push({ kind: 'remove', target: 'workload', workloadId: w.id, workload: w, reason: `duplicate of ${o?.name ?? ''}`, observed: dup, why: 'gc' });
    }
  }

  let step = withPolicy(intendedStep(d, base, record, o, ctx), d, ctx);
  for (const g of ctx.gates) if (step.kind !== 'deny') step = g.check(step, record, ctx.now);
  out.push(gate(step, record, ctx.now));
}

/**
 * Whether the object matches the desired spec, judged under the rules of the hash version the
 * object was labelled with (docs/hash-versions.md): a new canonical form never recreates what an
 * older agent made. A version this agent does not know (a newer agent's) is judged by revision only.
 */
function specMatches(types: TypeRegistry, w: WorkloadBase, o: ObservedWorkload, hash: string, current: number): boolean {
  const version = o.hashVersion ?? 1;
  if (version === current) return o.specHash === hash;
  const older = types.hashAt(w, version);
  return older === undefined ? true : o.specHash === older;
}

/** Engine states that are neither running nor stopped, for this desired state. */
function oddState(o: ObservedWorkload, desiredState: 'running' | 'stopped'): string | undefined {
  if (o.state === 'unknown') return o.engineState ?? 'unknown';
  if (o.state === 'paused' && desiredState === 'running') return o.engineState ?? 'paused';
  return undefined;
}

/** The step the workload needs, before policy and the retry budget have their say. */
function intendedStep(d: TypeDescriptor, base: Base, record: WorkloadRecord | undefined, o: ObservedWorkload | undefined, ctx: Ctx): DesiredStep {
  const w = base.workload;
  if (!o || o.state === 'missing') {
    return { kind: 'create', ...base, reason: record ? 'not found on engine' : 'new workload' };
  }
  const withObs = { ...base, observed: o };

  if (!specMatches(ctx.types, w, o, base.specHash, base.hashVersion) || !sameRevision(o.revision, w.revision)) {
    return { kind: 'recreate', ...withObs, reason: recreateReason(d, ctx.types, w, record, o, base.specHash) };
  }

  const desiredState = w.desiredState ?? 'running';
  const adoptOr = (noopReason: string): DesiredStep => settled(withObs, record, o, noopReason);

  const odd = oddState(o, desiredState);
  if (odd !== undefined) return oddStep(withObs, record, o, odd, ctx);

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
    case 'created':
      // "created" means never started, so a restart rule has nothing to say yet.
      return { kind: 'start', ...withObs, reason: 'created but not started; desired running' };
    case 'exited':
    case 'stopped':
    default: {
      const code = o.exitCode ?? record?.evidence?.exitCode;
      const what = `${o.state} (code ${code ?? 'unknown'})`;
      const hasRun = (record !== undefined && HAS_RUN_PHASES.has(record.phase)) || isRealTime(o.finishedAt) || isRealTime(record?.evidence?.finishedAt);
      // Asked to run again (retry request, new retryToken): the restart rule does not keep it down.
      const stayDown = retryAsked(record, retryResetKey(w, base.specHash)) ? undefined : d.staysDown(w, { code, hasRun });
      if (stayDown) return adoptOr(`${what}; ${stayDown}`);
      return { kind: 'start', ...withObs, reason: `${what}; desired running` };
    }
  }
}

/** An odd engine state: waited for (bounded), then repaired by replacing the object. */
function oddStep(withObs: Base & { observed: ObservedWorkload }, record: WorkloadRecord | undefined, o: ObservedWorkload, odd: string, ctx: Ctx): DesiredStep {
  const seen = record?.engineState;
  const sinceIso = seen && seen.runtimeId === o.runtimeId && seen.state === odd ? seen.since : ctx.now.toISOString();
  const since = Date.parse(sinceIso);
  const until = (Number.isFinite(since) ? since : ctx.now.getTime()) + ctx.oddWaitMs;
  const waitS = Math.round(ctx.oddWaitMs / 1000);
  if (until > ctx.now.getTime()) {
    return {
      kind: 'wait',
      ...withObs,
      until: new Date(until).toISOString(),
      since: sinceIso,
      engineState: odd,
      reason: `the engine reports ${odd} since ${sinceIso}; waiting up to ${waitS} s for it to settle`,
    };
  }
  const problem = `the engine reported ${odd} for more than ${waitS} s (since ${sinceIso})`;
  return { kind: 'repair', ...withObs, problem, reason: `${problem}; replacing it` };
}

const RUNNING = 'running as desired';

/** Nothing to change on the engine: a noop, or an adopt when the store does not know this object yet. */
function settled(fields: Base & { observed: ObservedWorkload }, record: WorkloadRecord | undefined, o: ObservedWorkload, noopReason: string): DesiredStep {
  if (!record || record.runtimeId !== o.runtimeId) {
    const reason = noopReason === RUNNING ? 'found on engine, adopting' : `found on engine, adopting; ${noopReason}`;
    return { kind: 'adopt', ...fields, reason };
  }
  return { kind: 'noop', ...fields, reason: noopReason };
}

function recreateReason(d: TypeDescriptor, types: TypeRegistry, w: WorkloadBase, record: WorkloadRecord | undefined, o: ObservedWorkload, hash: string): string {
  const reasons: string[] = [];
  if (!specMatches(types, w, o, hash, d.hashVersion)) {
    // appliedSpec describes the engine object only when the record's hash is the object's hash.
    const described = record?.appliedSpec !== undefined && record.specHash === o.specHash ? d.describeChanges(record.appliedSpec, types.canonical(w)) : [];
    if (described.length > 0) reasons.push(...described);
    else reasons.push('spec hash on engine differs');
  }
  if (!sameRevision(o.revision, w.revision)) reasons.push(`revision ${o.revision || 'none'} -> ${w.revision ?? 'none'}`);
  return reasons.join('; ');
}

/** Host policy: a step that would make an engine object of a denied spec becomes a `deny`. */
function withPolicy(step: DesiredStep, d: TypeDescriptor, ctx: Ctx): DesiredStep {
  if (step.kind !== 'create' && step.kind !== 'recreate' && step.kind !== 'repair') return step;
  const violations = d.policy(step.workload, ctx.policy);
  if (violations.length === 0) return step;
  const { kind: _kind, reason: _reason, ...rest } = step;
  return { ...rest, kind: 'deny', code: 'POLICY_DENIED', violations, reason: `POLICY_DENIED: ${violations.join('; ')}` };
}

function strip<S extends DesiredStep>(step: S): Base & { observed?: ObservedWorkload } {
  const o = observedOf(step);
  const b: Base = { target: 'workload', workloadId: step.workloadId, workload: step.workload, specHash: step.specHash, hashVersion: step.hashVersion };
  return o ? { ...b, observed: o } : b;
}

const serving = (o: ObservedWorkload | undefined): boolean => o?.state === 'running' || o?.state === 'restarting';

/** Applies the retry budget: a spent budget holds applying steps, a backoff delays them. */
function gate(step: DesiredStep, record: WorkloadRecord | undefined, now: Date): Step {
  const w = step.workload;
  if (!record || record.retry.resetKey !== retryResetKey(w, step.specHash)) return step;
  const { retry } = record;
  const o = observedOf(step);
  const rest = strip(step);
  if (step.kind === 'deny') {
    if (!retry.gaveUp) return step;
    // Denied and recorded: the previous revision, if it serves, keeps serving; anything else of it goes.
    if (serving(o)) return { ...rest, kind: 'noop', reason: `${step.reason}; the previous revision keeps running` };
    if (o) return { target: 'workload', workloadId: w.id, workload: w, observed: o, why: 'cleanup-after-failed-start', kind: 'remove', reason: `${step.reason}; removing what is left of the workload` };
    return { ...rest, kind: 'noop', reason: step.reason };
  }
  // Refused for want of room, and the gates admit it now (the host changed): applied afresh.
  if (retry.gaveUp && record.error?.details?.untilHostChanges === true) return step;
  // A previous revision that still serves is not the failed attempt's resource: a bad new image
  // tag must not take the service down. It stays until the desired state changes again.
  if (retry.gaveUp && step.kind === 'recreate' && serving(o)) {
    return { ...rest, kind: 'noop', reason: `gave up applying the new spec (${record.error?.code ?? 'failed'}); the previous revision keeps running` };
  }
  // A workload that failed terminally keeps its record and error, not its runtime resources.
  if (retry.gaveUp && o) {
    return {
      target: 'workload',
      workloadId: w.id,
      workload: w,
      observed: o,
      why: 'cleanup-after-failed-start',
      kind: 'remove',
      reason: `failed terminally (${record.error?.code ?? 'gave up'}); removing its runtime resources, the record and error stay until the desired state changes`,
    };
  }
  if (retry.gaveUp && APPLYING.has(step.kind)) {
    return { ...rest, kind: 'noop', reason: `gave up after ${retry.attempts} attempts (change retryToken or revision, or run persys-agent retry)` };
  }
  if (BACKOFF_GATED.has(step.kind) && retry.nextRetryAt !== null) {
    const until = Date.parse(retry.nextRetryAt);
    if (Number.isFinite(until) && until > now.getTime()) {
      const last = record.error ? ` (last error ${record.error.code})` : '';
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
