import type { Logger } from '../log.js';
import type { Config } from '../config/schema.js';
import { toWorkloadError, WorkloadError } from '../errors/index.js';
import type { ApplyContext, ObservedWorkload, Runtime } from '../runtimes/runtime.js';
import type { Workload, WorkloadType } from '../spec/desired-state.js';
import type { Store } from '../store/store.js';
import type { WorkloadRecord } from '../store/types.js';
import { canonicalSpec } from './canonical.js';
import {
  newRecord,
  phaseFromObserved,
  retryBudget,
  retryResetKey,
  withFailure,
  withObserved,
  withPhase,
  withResetKey,
  withSuccess,
} from './records.js';
import type { Step, StepKind } from './steps.js';

export interface ExecutorDeps {
  nodeId: string;
  runtimes: ReadonlyMap<WorkloadType, Runtime>;
  store: Store;
  config: Pick<Config, 'retry' | 'reconcile'>;
  logger: Logger;
  now?: () => Date;
  random?: () => number;
  /** Called after every record change so the reporter can send a fresh snapshot. */
  onRecordChange?: () => void;
}

export interface StepResult {
  step: Step;
  ok: boolean;
  error?: WorkloadError;
  durationMs: number;
}

interface StepContext {
  deps: ExecutorDeps;
  signal: AbortSignal;
  now: () => Date;
}

type StepExecutor = (step: Step, ctx: StepContext) => Promise<void>;

/** Which steps touch the engine; the others only update records. */
const MUTATING: ReadonlySet<StepKind> = new Set(['create', 'recreate', 'start', 'stop', 'remove']);

/** Steps that free resources (ports, names, memory) run before steps that claim them. */
const FIRST_PHASE: ReadonlySet<StepKind> = new Set(['remove', 'stop']);

function runtimeFor(ctx: StepContext, type: WorkloadType): Runtime {
  const rt = ctx.deps.runtimes.get(type);
  if (!rt) throw new WorkloadError('RUNTIME_UNAVAILABLE', `no runtime for workload type ${type} on this host`);
  return rt;
}

function requireWorkload(step: Step): { w: Workload; specHash: string } {
  if (!step.workload || !step.specHash) throw new WorkloadError('INTERNAL', `step ${step.kind} for ${step.workloadId} has no workload`);
  return { w: step.workload, specHash: step.specHash };
}

function recordOf(ctx: StepContext, step: Step): WorkloadRecord {
  const existing = ctx.deps.store.getRecord(step.workloadId);
  if (existing) return existing;
  if (step.workload) return newRecord(step.workload, ctx.now());
  throw new WorkloadError('INTERNAL', `no record and no workload for ${step.workloadId}`);
}

function save(ctx: StepContext, r: WorkloadRecord): void {
  ctx.deps.store.setRecord(r);
  ctx.deps.onRecordChange?.();
}

/** Fresh record fields that follow the desired workload (revision, desired state, reset key). */
function syncDesired(r: WorkloadRecord, w: Workload, specHash: string): WorkloadRecord {
  const next = withResetKey(r, retryResetKey(w, specHash));
  return { ...next, revision: w.revision, desiredState: w.desiredState ?? 'running', type: w.type };
}

function applyContext(ctx: StepContext, specHash: string, onPhase: (p: 'Pulling' | 'Creating' | 'Starting') => void): ApplyContext {
  return { nodeId: ctx.deps.nodeId, specHash, signal: ctx.signal, progress: onPhase };
}

/** Creates (and starts, when desired running) a workload; on any failure nothing is left behind. */
async function createAndStart(ctx: StepContext, step: Step, base: WorkloadRecord): Promise<void> {
  const { w, specHash } = requireWorkload(step);
  const rt = runtimeFor(ctx, w.type);
  let rec = base;
  const phase = (p: 'Pulling' | 'Creating' | 'Starting') => {
    rec = withPhase(rec, p, '', ctx.now());
    save(ctx, rec);
  };
  const actx = applyContext(ctx, specHash, phase);
  phase('Pulling');
  await rt.prepare(w, actx);
  phase('Creating');
  const created = await rt.create(w, actx);
  rec = { ...withObserved(rec, created), specHash, lastAttemptHash: specHash, appliedSpec: canonicalSpec(w) };
  if ((w.desiredState ?? 'running') === 'running') {
    phase('Starting');
    try {
      await rt.start(created, ctx.signal);
    } catch (err) {
      // A created-but-unstarted container would be a ghost: remove it, keep the start error.
      await rt.remove(created, AbortSignal.timeout(30_000)).catch((cleanupErr: unknown) => {
        ctx.deps.logger.warn({ workloadId: w.id, err: String(cleanupErr) }, 'cleanup after failed start failed');
      });
      rec = { ...rec, runtimeId: undefined, actualState: 'missing' };
      save(ctx, rec);
      throw err;
    }
    rec = { ...rec, actualState: 'running' };
    save(ctx, withSuccess(rec, 'Running', '', ctx.now()));
  } else {
    rec = { ...rec, actualState: 'created' };
    save(ctx, withSuccess(rec, 'Stopped', 'created, desired stopped', ctx.now()));
  }
}

function requireObserved(step: Step): ObservedWorkload {
  if (!step.observed) throw new WorkloadError('INTERNAL', `step ${step.kind} for ${step.workloadId} has no engine object`);
  return step.observed;
}

/** One executor per step kind: a new kind without an executor does not compile. */
const EXECUTORS: Record<StepKind, StepExecutor> = {
  async create(step, ctx) {
    const { w, specHash } = requireWorkload(step);
    await createAndStart(ctx, step, syncDesired(recordOf(ctx, step), w, specHash));
  },

  async recreate(step, ctx) {
    const { w, specHash } = requireWorkload(step);
    const old = requireObserved(step);
    const rt = runtimeFor(ctx, w.type);
    let rec = syncDesired(recordOf(ctx, step), w, specHash);
    // Pull the new image while the old container still serves: the outage is stop+create+start only.
    rec = withPhase(rec, 'Pulling', step.reason, ctx.now());
    save(ctx, rec);
    await rt.prepare(w, applyContext(ctx, specHash, () => undefined));
    rec = withPhase(rec, 'Removing', step.reason, ctx.now());
    save(ctx, rec);
    await rt.stop(old, ctx.signal, w.type === 'container' ? w.spec.stopTimeoutSeconds : undefined);
    await rt.remove(old, ctx.signal);
    rec = { ...rec, runtimeId: undefined, actualState: 'missing' };
    await createAndStart(ctx, step, rec);
  },

  async start(step, ctx) {
    const o = requireObserved(step);
    const rt = runtimeFor(ctx, o.type);
    let rec = recordOf(ctx, step);
    if (step.workload && step.specHash) rec = syncDesired(rec, step.workload, step.specHash);
    save(ctx, withPhase(rec, 'Starting', step.reason, ctx.now()));
    await rt.start(o, ctx.signal);
    save(ctx, withSuccess({ ...recordOf(ctx, step), actualState: 'running', runtimeId: o.runtimeId }, 'Running', '', ctx.now()));
  },

  async stop(step, ctx) {
    const o = requireObserved(step);
    const rt = runtimeFor(ctx, o.type);
    let rec = recordOf(ctx, step);
    if (step.workload && step.specHash) rec = syncDesired(rec, step.workload, step.specHash);
    save(ctx, rec);
    const timeout = step.workload?.type === 'container' ? step.workload.spec.stopTimeoutSeconds : undefined;
    await rt.stop(o, ctx.signal, timeout);
    save(ctx, withSuccess({ ...recordOf(ctx, step), actualState: 'exited', runtimeId: o.runtimeId }, 'Stopped', '', ctx.now()));
  },

  async remove(step, ctx) {
    const o = requireObserved(step);
    const rt = runtimeFor(ctx, o.type);
    const existing = ctx.deps.store.getRecord(step.workloadId);
    const orphan = !step.workload;
    if (existing && orphan) save(ctx, withPhase(existing, 'Removing', step.reason, ctx.now()));
    await rt.stop(o, ctx.signal).catch(() => undefined);
    await rt.remove(o, ctx.signal);
    if (orphan) {
      ctx.deps.store.deleteRecord(step.workloadId);
      ctx.deps.onRecordChange?.();
    }
  },

  async adopt(step, ctx) {
    const { w, specHash } = requireWorkload(step);
    const o = requireObserved(step);
    let rec = syncDesired(recordOf(ctx, step), w, specHash);
    rec = { ...withObserved(rec, o), specHash, appliedSpec: canonicalSpec(w) };
    const settled = phaseFromObserved(o, w.desiredState ?? 'running');
    save(ctx, withSuccess({ ...rec, actualState: settled.actual }, settled.phase, settled.message, ctx.now()));
  },

  async wait(step, ctx) {
    const rec = ctx.deps.store.getRecord(step.workloadId);
    if (rec && rec.phase !== 'BackingOff') save(ctx, withPhase(rec, 'BackingOff', step.reason, ctx.now()));
  },

  async noop() {
    // Settled workloads: their record was refreshed from the observation before execution.
  },
};

/** Runs a plan's steps: frees before it claims, bounded concurrency, one step per workload at a time. */
export class Executor {
  private readonly now: () => Date;
  constructor(private readonly deps: ExecutorDeps) {
    this.now = deps.now ?? (() => new Date());
  }

  async execute(steps: readonly Step[], signal: AbortSignal): Promise<StepResult[]> {
    const results: StepResult[] = [];
    const first = steps.filter((s) => FIRST_PHASE.has(s.kind));
    const second = steps.filter((s) => !FIRST_PHASE.has(s.kind));
    for (const phase of [first, second]) {
      if (signal.aborted) break;
      results.push(...(await this.runPhase(phase, signal)));
    }
    return results;
  }

  private async runPhase(steps: readonly Step[], signal: AbortSignal): Promise<StepResult[]> {
    // Group by workload so one workload never has two steps in flight.
    const groups = new Map<string, Step[]>();
    for (const s of steps) {
      const g = groups.get(s.workloadId);
      if (g) g.push(s);
      else groups.set(s.workloadId, [s]);
    }
    const queue = [...groups.values()];
    const results: StepResult[] = [];
    const worker = async () => {
      for (let g = queue.shift(); g; g = queue.shift()) {
        for (const s of g) {
          if (signal.aborted) return;
          results.push(await this.runStep(s, signal));
        }
      }
    };
    const n = Math.max(1, Math.min(this.deps.config.reconcile.concurrency, queue.length));
    await Promise.all(Array.from({ length: n }, worker));
    return results;
  }

  private async runStep(step: Step, signal: AbortSignal): Promise<StepResult> {
    const ctx: StepContext = { deps: this.deps, signal, now: this.now };
    const started = performance.now();
    try {
      await EXECUTORS[step.kind](step, ctx);
      if (MUTATING.has(step.kind)) {
        this.deps.logger.debug({ workloadId: step.workloadId, step: step.kind, reason: step.reason }, `${step.kind} ${step.workloadId}: ${step.reason}`);
      }
      return { step, ok: true, durationMs: performance.now() - started };
    } catch (raw) {
      const err = toWorkloadError(raw);
      this.recordFailure(step, err);
      return { step, ok: false, error: err, durationMs: performance.now() - started };
    }
  }

  private recordFailure(step: Step, err: WorkloadError): void {
    const { logger, store } = this.deps;
    const w = step.workload;
    if (!w || !step.specHash) {
      logger.warn({ workloadId: step.workloadId, step: step.kind, code: err.code, err: err.message }, `${step.kind} ${step.workloadId} failed`);
      return;
    }
    const base = syncDesired(store.getRecord(step.workloadId) ?? newRecord(w, this.now()), w, step.specHash);
    const rec = withFailure({ ...base, lastAttemptHash: step.specHash }, err, retryBudget(w, this.deps.config.retry), this.now(), this.deps.random);
    store.setRecord(rec);
    this.deps.onRecordChange?.();
    const level = rec.retry.gaveUp ? 'error' : 'warn';
    logger[level](
      { workloadId: w.id, step: step.kind, code: err.code, attempt: rec.retry.attempts, nextRetryAt: rec.retry.nextRetryAt, err: err.message },
      `${step.kind} ${w.id} failed: ${err.code}`,
    );
  }
}
