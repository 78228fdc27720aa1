import type { Logger } from '../log.js';
import type { Config } from '../config/schema.js';
import { toWorkloadError, WorkloadError } from '../errors/index.js';
import type { ApplyContext, ObservedWorkload, Runtime } from '../runtimes/runtime.js';
import type { Workload, WorkloadType } from '../spec/desired-state.js';
import type { Store } from '../store/store.js';
import type { WorkloadRecord } from '../store/types.js';
import { canonicalSpec } from './canonical.js';
import { sleep } from '../util/backoff.js';
import { canTransition } from './phases.js';
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
import { abortReason, raceAbort } from '../util/abort.js';
import { assertPolicy } from '../policy/container-policy.js';
import { ProgressWatchdog } from './progress-watchdog.js';

/**
 * Test-only hooks, read from the environment (the config loader lets PERSYS_TEST_* through):
 *   PERSYS_TEST_PAUSE_AFTER_CREATE_MS  pause between a container's create and its start, so a test can
 *                                      SIGKILL the agent there (or let the stuck watchdog fire)
 *   PERSYS_TEST_BACKOFF_RANDOM         a fixed jitter factor in [0, 1] instead of Math.random, so a
 *                                      test knows when the next attempt is due
 */
function envNumber(name: string): number | undefined {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return undefined;
  const n = Number(raw);
  return Number.isFinite(n) ? n : undefined;
}

export interface ExecutorDeps {
  nodeId: string;
  runtimes: ReadonlyMap<WorkloadType, Runtime>;
  store: Store;
  config: Pick<Config, 'retry' | 'reconcile' | 'policy'>;
  logger: Logger;
  now?: () => Date;
  random?: () => number;
  /** Called after every record change so the reporter can send a fresh snapshot. */
  onRecordChange?: () => void;
  /** Pause between create and start (tests only; default from PERSYS_TEST_PAUSE_AFTER_CREATE_MS). */
  pauseAfterCreateMs?: number;
  /**
   * Aborts running steps (the SIGTERM drain's second stage). When set, the cycle's own signal only
   * stops new steps from starting, so running ones may finish; without it, that signal does both.
   */
  abortSteps?: AbortSignal;
}

export interface StepResult {
  step: Step;
  ok: boolean;
  error?: WorkloadError;
  durationMs: number;
}

interface StepContext {
  deps: ExecutorDeps;
  /** The step's signal: the agent's, plus the stuck watchdog's. */
  signal: AbortSignal;
  now: () => Date;
  pauseAfterCreateMs: number;
  /** Tells the stuck watchdog the step moved (a record write, a pull progress event). */
  progressed: () => void;
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


/**
 * A step whose signal fired (shutdown, or the stuck watchdog took the workload over) writes no more:
 * an engine call that ignored the abort must not overwrite what the recovery decided.
 */
function save(ctx: StepContext, r: WorkloadRecord): void {
  if (ctx.signal.aborted) throw abortReason(ctx.signal);
  ctx.progressed();
  ctx.deps.store.setRecord(r);
  ctx.deps.onRecordChange?.();
}

/** Fresh record fields that follow the desired workload (revision, desired state, reset key). */
function syncDesired(r: WorkloadRecord, w: Workload, specHash: string): WorkloadRecord {
  const next = withResetKey(r, retryResetKey(w, specHash));
  return { ...next, revision: w.revision, desiredState: w.desiredState ?? 'running', type: w.type };
}

function applyContext(ctx: StepContext, specHash: string, onPhase: (p: 'Pulling' | 'Creating' | 'Starting') => void): ApplyContext {
  return { nodeId: ctx.deps.nodeId, specHash, signal: ctx.signal, progress: onPhase, heartbeat: ctx.progressed };
}

/** Creates (and starts, when desired running) a workload; on any failure nothing is left behind. */
async function createAndStart(ctx: StepContext, step: Step, base: WorkloadRecord): Promise<void> {
  const { w, specHash } = requireWorkload(step);
  assertPolicy(w, ctx.deps.config.policy);
  const rt = runtimeFor(ctx, w.type);
  let rec = base;
  const phase = (p: 'Pulling' | 'Creating' | 'Starting') => {
    rec = withPhase(rec, p, '', ctx.now());
    save(ctx, rec);
  };
  // A runtime's progress report is advisory: one that goes backwards (create pulls again because the
  // image vanished since prepare) is not a phase change.
  const progress = (p: 'Pulling' | 'Creating' | 'Starting') => {
    if (canTransition(rec.phase, p)) phase(p);
  };
  const actx = applyContext(ctx, specHash, progress);
  phase('Pulling');
  await rt.prepare(w, actx);
  phase('Creating');
  const created = await rt.create(w, actx);
  rec = { ...withObserved(rec, created), specHash, lastAttemptHash: specHash, appliedSpec: canonicalSpec(w) };
  save(ctx, rec);
  if (ctx.pauseAfterCreateMs > 0) {
    ctx.deps.logger.warn({ workloadId: w.id, runtimeId: created.runtimeId, pauseMs: ctx.pauseAfterCreateMs }, 'test hook: pausing between create and start');
    await sleep(ctx.pauseAfterCreateMs, ctx.signal);
    if (ctx.signal.aborted) throw abortReason(ctx.signal);
  }
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
    // Denied before the old container is touched: a forbidden new spec must not cost the running one.
    assertPolicy(w, ctx.deps.config.policy);
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
      return;
    }
    // A desired workload keeps its record (and, when it failed terminally, its phase and error);
    // only the engine facts of the object that went are dropped.
    const rec = ctx.deps.store.getRecord(step.workloadId);
    if (rec && rec.runtimeId === o.runtimeId) {
      save(ctx, { ...rec, runtimeId: undefined, actualState: 'missing', message: rec.retry.gaveUp ? rec.message : step.reason, updatedAt: ctx.now().toISOString() });
    }
  },

  async adopt(step, ctx) {
    const { w, specHash } = requireWorkload(step);
    const o = requireObserved(step);
    let rec = syncDesired(recordOf(ctx, step), w, specHash);
    rec = { ...withObserved(rec, o), specHash, appliedSpec: canonicalSpec(w) };
    const settled = phaseFromObserved(o, w.desiredState ?? 'running', ctx.now());
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

/** Steps whose object the stuck watchdog may stop and start again. */
const APPLYING: ReadonlySet<StepKind> = new Set(['create', 'recreate', 'start']);

/** The stuck watchdog's signal reason: tells a stuck step from a shutdown. */
class StuckAbort extends Error {
  constructor(readonly seconds: number) {
    super(`no progress for ${seconds} s`);
    this.name = 'StuckAbort';
  }
}


/** Runs a plan's steps: frees before it claims, bounded concurrency, one step per workload at a time. */
export class Executor {
  private readonly now: () => Date;
  private readonly random: (() => number) | undefined;
  private readonly pauseAfterCreateMs: number;
  /** Workloads with a step in flight, and since when (for status and the stuck watchdog). */
  readonly inFlight = new Map<string, { kind: StepKind; since: number }>();
  /** Step work still going, also after its step was abandoned (abort, stuck): the drain waits for it. */
  private readonly working = new Set<Promise<unknown>>();

  constructor(private readonly deps: ExecutorDeps) {
    this.now = deps.now ?? (() => new Date());
    const fixed = envNumber('PERSYS_TEST_BACKOFF_RANDOM');
    this.random = deps.random ?? (fixed !== undefined ? () => Math.min(1, Math.max(0, fixed)) : undefined);
    this.pauseAfterCreateMs = deps.pauseAfterCreateMs ?? envNumber('PERSYS_TEST_PAUSE_AFTER_CREATE_MS') ?? 0;
  }

  /** Settles when every step's own work (engine calls, cleanup after an abort) has ended, or after `ms`. */
  async quiesce(ms: number): Promise<void> {
    const giveUp = new AbortController();
    await Promise.race([Promise.allSettled([...this.working]), sleep(ms, giveUp.signal).catch(() => undefined)]);
    giveUp.abort();
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

  /**
   * Runs one step under the stuck watchdog: a step that made no progress (no phase change, no pull
   * progress event) for reconcile.stuckSeconds is aborted and handed to recoverStuck(); one that keeps
   * moving runs as long as it needs. The race means an engine call that ignores its signal cannot
   * hold the workload (or the cycle) hostage; it can no longer write the record either.
   */
  private async runStep(step: Step, signal: AbortSignal): Promise<StepResult> {
    const stuckSeconds = this.deps.config.reconcile.stuckSeconds;
    const watchdog = new ProgressWatchdog(stuckSeconds, () => new StuckAbort(stuckSeconds));
    // The cycle's signal stops new steps; a running one is aborted by abortSteps when there is one.
    const hard = this.deps.abortSteps ?? signal;
    const stepSignal = AbortSignal.any([hard, watchdog.signal]);
    const ctx: StepContext = { deps: this.deps, signal: stepSignal, now: this.now, pauseAfterCreateMs: this.pauseAfterCreateMs, progressed: () => watchdog.touch() };
    const started = performance.now();
    this.inFlight.set(step.workloadId, { kind: step.kind, since: Date.now() });
    try {
      const work = EXECUTORS[step.kind](step, ctx);
      this.working.add(work);
      void work.then(
        () => this.working.delete(work),
        () => this.working.delete(work),
      );
      await raceAbort(work, stepSignal);
      if (MUTATING.has(step.kind)) {
        this.deps.logger.debug({ workloadId: step.workloadId, step: step.kind, reason: step.reason }, `${step.kind} ${step.workloadId}: ${step.reason}`);
      }
      return { step, ok: true, durationMs: performance.now() - started };
    } catch (raw) {
      if (watchdog.signal.aborted && !hard.aborted) {
        const err = await this.recoverStuck(step, stuckSeconds, hard);
        return err ? { step, ok: false, error: err, durationMs: performance.now() - started } : { step, ok: true, durationMs: performance.now() - started };
      }
      const err = toWorkloadError(raw);
      // A shutdown is not a failed attempt: the record stays in its phase, and the next start finds
      // it interrupted and judges it afresh from the engine.
      if (!hard.aborted) this.recordFailure(step, err);
      return { step, ok: false, error: err, durationMs: performance.now() - started };
    } finally {
      watchdog.dispose();
      this.inFlight.delete(step.workloadId);
    }
  }

  /**
   * A step made no progress for stuckSeconds. An apply whose container exists is recovered by a
   * stop and a start; if that fails, the container is removed and the workload is Failed (STUCK,
   * terminal: it waits for a retry request, retryToken or revision). Without a container of its own
   * there is nothing to restart: the attempt counts as a transient STUCK failure and backs off.
   * Returns the error that was recorded, or undefined when the recovery brought it up.
   */
  private async recoverStuck(step: Step, seconds: number, signal: AbortSignal): Promise<WorkloadError | undefined> {
    const { logger, store } = this.deps;
    const w = step.workload;
    const stuckIn = store.getRecord(step.workloadId)?.phase ?? 'Pending';
    const what = `stuck in ${stuckIn} for ${seconds} s during ${step.kind}`;
    logger.warn({ workloadId: step.workloadId, step: step.kind, phase: stuckIn, seconds }, `${step.workloadId} ${what}; recovering`);
    const rt = w ? this.deps.runtimes.get(w.type) : undefined;
    if (!w || !step.specHash || !rt || !APPLYING.has(step.kind)) {
      const err = new WorkloadError('STUCK', `${what}; the step was abandoned`);
      this.recordFailure(step, err);
      return err;
    }
    const budget = AbortSignal.any([signal, AbortSignal.timeout(Math.min(seconds, 60) * 1000)]);
    let own: ObservedWorkload[] = [];
    try {
      own = (await rt.observe(budget)).filter((o) => o.workloadId === w.id && o.type === w.type && o.specHash === step.specHash);
    } catch (err) {
      logger.warn({ workloadId: w.id, err: toWorkloadError(err).message }, 'stuck recovery could not observe the engine');
    }
    const target = own[0];
    if (!target) {
      const err = new WorkloadError('STUCK', `${what}; nothing was created yet, so the apply starts again after a backoff`);
      this.recordFailure(step, err);
      return err;
    }
    const timeout = w.type === 'container' ? (w.spec.stopTimeoutSeconds ?? 10) : undefined;
    try {
      let rec = syncDesired(store.getRecord(w.id) ?? newRecord(w, this.now()), w, step.specHash);
      if (!canTransition(rec.phase, 'Starting')) rec = withPhase(rec, 'Pending', what, this.now());
      rec = withPhase(rec, 'Starting', `${what}; stopping and starting it again`, this.now());
      store.setRecord(rec);
      await rt.stop(target, budget, timeout);
      if ((w.desiredState ?? 'running') === 'running') await rt.start(target, budget);
      const now = await rt.inspect(target, budget);
      if ((w.desiredState ?? 'running') === 'running' && now?.state !== 'running') {
        throw new WorkloadError('STUCK', `after the restart the engine reports it ${now?.state ?? 'gone'}`);
      }
      const settled = now ? phaseFromObserved(now, w.desiredState ?? 'running', this.now()) : { phase: 'Stopped' as const, actual: 'exited' as const, message: '' };
      rec = { ...withObserved({ ...rec, specHash: step.specHash, appliedSpec: canonicalSpec(w) }, now ?? target), actualState: settled.actual };
      store.setRecord(withSuccess(rec, settled.phase, `recovered: ${what}; stopped and started again`, this.now()));
      this.deps.onRecordChange?.();
      logger.info({ workloadId: w.id }, `${w.id} recovered after being ${what}`);
      return undefined;
    } catch (raw) {
      const cause = toWorkloadError(raw);
      for (const o of own) {
        await rt.remove(o, AbortSignal.timeout(30_000)).catch((e: unknown) => {
          logger.warn({ workloadId: w.id, err: toWorkloadError(e).message }, 'could not remove a stuck workload');
        });
      }
      const err = new WorkloadError('STUCK', `${what}; recovery (stop, start) failed: ${cause.message}; removed it`, {
        transient: false,
        cause,
        details: { phase: stuckIn, seconds, recoveryError: cause.code },
      });
      const base = store.getRecord(w.id);
      if (base) store.setRecord({ ...base, runtimeId: undefined, actualState: 'missing' });
      this.recordFailure(step, err);
      return err;
    }
  }

  private recordFailure(step: Step, err: WorkloadError): void {
    const { logger, store } = this.deps;
    const w = step.workload;
    // Removing an engine object of a desired workload (type change, cleanup after a terminal
    // failure) is retried by the next cycle; it is not an attempt at the workload, so it does not
    // spend the budget or replace the workload's own error.
    if (!w || !step.specHash || step.kind === 'remove') {
      logger.warn({ workloadId: step.workloadId, step: step.kind, code: err.code, err: err.message }, `${step.kind} ${step.workloadId} failed`);
      return;
    }
    const base = syncDesired(store.getRecord(step.workloadId) ?? newRecord(w, this.now()), w, step.specHash);
    const rec = withFailure({ ...base, lastAttemptHash: step.specHash }, err, retryBudget(w, this.deps.config.retry), this.now(), this.random);
    store.setRecord(rec);
    this.deps.onRecordChange?.();
    const level = rec.retry.gaveUp ? 'error' : 'warn';
    logger[level](
      { workloadId: w.id, step: step.kind, code: err.code, attempt: rec.retry.attempts, nextRetryAt: rec.retry.nextRetryAt, err: err.message },
      `${step.kind} ${w.id} failed: ${err.code}`,
    );
  }
}
