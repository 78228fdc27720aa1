import type { Logger } from '../log.js';
import type { Config } from '../config/schema.js';
import { toWorkloadError, WorkloadError } from '../errors/index.js';
import { BUILTIN_TYPES, type TypeRegistry } from '../runtimes/registry.js';
import type { ApplyContext, CreatedWorkload, ObservedWorkload, Runtime, TypeDescriptor, WorkloadBase } from '../runtimes/runtime.js';
import type { Store } from '../store/store.js';
import type { WorkloadRecord } from '../store/types.js';
import { sleep } from '../util/backoff.js';
import { canTransition } from './phases.js';
import {
  newRecord,
  phaseFromObserved,
  retryBudget,
  retryResetKey,
  withFailure,
  withFailureEntry,
  withObserved,
  withPhase,
  withResetKey,
  withSuccess,
} from './records.js';
import type { DesiredStep, Step, StepKind, StepOf } from './steps.js';
import { abortReason, raceAbort } from '../util/abort.js';
import { ProgressWatchdog } from './progress-watchdog.js';

/**
 * Test-only hooks, read from the environment (the config loader lets PERSYS_TEST_* through):
 *   PERSYS_TEST_PAUSE_AFTER_CREATE_MS  pause between a workload's create and its start, so a test can
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
  /** The runtime of each workload type it owns. */
  runtimes: ReadonlyMap<string, Runtime>;
  store: Store;
  config: Pick<Config, 'retry' | 'reconcile'>;
  logger: Logger;
  /** The workload types (default the built-in ones). */
  types?: TypeRegistry;
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
  types: TypeRegistry;
  /** The step's signal: the agent's, plus the stuck watchdog's. */
  signal: AbortSignal;
  now: () => Date;
  pauseAfterCreateMs: number;
  /** Tells the stuck watchdog the step moved (a record write, a pull progress event). */
  progressed: () => void;
}

type StepExecutor<K extends StepKind> = (step: StepOf<K>, ctx: StepContext) => Promise<void>;

/** Which steps touch the engine; the others only update records. */
const MUTATING: ReadonlySet<StepKind> = new Set(['create', 'recreate', 'start', 'stop', 'remove', 'repair']);

/** Steps that free resources (ports, names, memory) run before steps that claim them. */
const FIRST_PHASE: ReadonlySet<StepKind> = new Set(['remove', 'stop']);

/** Bound of a cleanup that runs after its step failed (the step's own signal may be spent). */
const CLEANUP_TIMEOUT_MS = 30_000;

function runtimeFor(ctx: StepContext, type: string): Runtime {
  const rt = ctx.deps.runtimes.get(type);
  if (!rt) throw new WorkloadError('RUNTIME_UNAVAILABLE', `no runtime for workload type ${type} on this host`);
  return rt;
}

function recordOf(ctx: StepContext, w: WorkloadBase): WorkloadRecord {
  return ctx.deps.store.getRecord(w.id) ?? newRecord(w, ctx.now());
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
function syncDesired(r: WorkloadRecord, w: WorkloadBase, specHash: string): WorkloadRecord {
  const next = withResetKey(r, retryResetKey(w, specHash));
  return { ...next, revision: w.revision, desiredState: w.desiredState ?? 'running', type: w.type };
}

function applyContext(ctx: StepContext, step: DesiredStep, rec: WorkloadRecord, onPhase: (p: 'Pulling' | 'Creating' | 'Starting') => void): ApplyContext {
  return { nodeId: ctx.deps.nodeId, specHash: step.specHash, hashVersion: step.hashVersion, runtimeState: rec.runtimeState, signal: ctx.signal, progress: onPhase, heartbeat: ctx.progressed };
}

/** The record after a create: the new object's facts, its hash and canonical spec, and the runtime's state. */
function withCreated(rec: WorkloadRecord, created: CreatedWorkload, step: DesiredStep, d: TypeDescriptor, ctx: StepContext): WorkloadRecord {
  const next: WorkloadRecord = { ...withObserved(rec, created, d), specHash: step.specHash, lastAttemptHash: step.specHash, appliedSpec: ctx.types.canonical(step.workload) };
  return created.runtimeState ? { ...next, runtimeState: created.runtimeState } : next;
}

/** Creates (and starts, when desired running) a workload; on any failure nothing is left behind. */
async function createAndStart(ctx: StepContext, step: DesiredStep, base: WorkloadRecord): Promise<void> {
  const w = step.workload;
  const d = ctx.types.of(w);
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
  phase('Pulling');
  await rt.prepare(w, applyContext(ctx, step, rec, progress));
  phase('Creating');
  const created = await rt.create(w, applyContext(ctx, step, rec, progress));
  rec = withCreated(rec, created, step, d, ctx);
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
      // A created-but-unstarted object would be a ghost: remove it, keep the start error.
      await rt.remove(created, AbortSignal.timeout(CLEANUP_TIMEOUT_MS), 'cleanup-after-failed-start').catch((cleanupErr: unknown) => {
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

/** Replaces an engine object: the new spec's inputs first (the old one still serves), then stop, remove, create. */
async function replace(ctx: StepContext, step: StepOf<'recreate'> | StepOf<'repair'>, rec0: WorkloadRecord): Promise<WorkloadRecord> {
  const w = step.workload;
  const d = ctx.types.of(w);
  const rt = runtimeFor(ctx, w.type);
  let rec = rec0;
  // Pull the new image while the old object still serves: the outage is stop+create+start only.
  rec = withPhase(rec, 'Pulling', step.reason, ctx.now());
  save(ctx, rec);
  await rt.prepare(w, applyContext(ctx, step, rec, () => undefined));
  rec = withPhase(rec, 'Removing', step.reason, ctx.now());
  save(ctx, rec);
  await rt.stop(step.observed, ctx.signal, d.stopTimeoutSeconds(w));
  await rt.remove(step.observed, ctx.signal, 'replace');
  return { ...rec, runtimeId: undefined, actualState: 'missing' };
}

/**
 * A recreate through the runtime's own update (Runtime.update): the new inputs first while the old
 * object serves, then the runtime changes only what differs (a compose app: the changed services).
 */
async function updateInPlace(ctx: StepContext, step: StepOf<'recreate'>, base: WorkloadRecord, rt: Runtime & Required<Pick<Runtime, 'update'>>): Promise<void> {
  const w = step.workload;
  const d = ctx.types.of(w);
  let rec = withPhase(base, 'Pulling', step.reason, ctx.now());
  save(ctx, rec);
  await rt.prepare(w, applyContext(ctx, step, rec, () => undefined));
  rec = withPhase(rec, 'Creating', step.reason, ctx.now());
  save(ctx, rec);
  const progress = (p: 'Pulling' | 'Creating' | 'Starting') => {
    if (rec.phase === p || !canTransition(rec.phase, p)) return;
    rec = withPhase(rec, p, step.reason, ctx.now());
    save(ctx, rec);
  };
  const updated = await rt.update(step.observed, w, applyContext(ctx, step, rec, progress));
  rec = withCreated(rec, updated, step, d, ctx);
  const running = (w.desiredState ?? 'running') === 'running';
  save(ctx, withSuccess({ ...rec, actualState: updated.state }, running ? 'Running' : 'Stopped', running ? '' : 'created, desired stopped', ctx.now()));
}

/** One executor per step kind: a new kind without an executor does not compile. */
const EXECUTORS: { [K in StepKind]: StepExecutor<K> } = {
  async create(step, ctx) {
    await createAndStart(ctx, step, syncDesired(recordOf(ctx, step.workload), step.workload, step.specHash));
  },

  async recreate(step, ctx) {
    const rt = runtimeFor(ctx, step.workload.type);
    if (rt.update) {
      await updateInPlace(ctx, step, syncDesired(recordOf(ctx, step.workload), step.workload, step.specHash), rt as Runtime & Required<Pick<Runtime, 'update'>>);
      return;
    }
    const rec = await replace(ctx, step, syncDesired(recordOf(ctx, step.workload), step.workload, step.specHash));
    await createAndStart(ctx, step, rec);
  },

  async repair(step, ctx) {
    const w = step.workload;
    // The odd state is history once repaired: it stays in the failures with its code.
    let rec = syncDesired(recordOf(ctx, w), w, step.specHash);
    rec = { ...rec, failures: withFailureEntry(rec.failures, { at: ctx.now().toISOString(), code: 'STUCK', message: step.problem }) };
    if (rec.engineState) {
      const { engineState: _gone, ...rest } = rec;
      rec = rest;
    }
    rec = await replace(ctx, step, rec);
    await createAndStart(ctx, step, rec);
  },

  async start(step, ctx) {
    const o = step.observed;
    const rt = runtimeFor(ctx, o.type);
    const rec = syncDesired(recordOf(ctx, step.workload), step.workload, step.specHash);
    save(ctx, withPhase(rec, 'Starting', step.reason, ctx.now()));
    try {
      await rt.start(o, ctx.signal);
    } catch (err) {
      // The runtime says this object can never start again (e.g. an engine restarted mid-start left its
      // id taken): replace it now, as a repair, rather than retry a start that cannot work.
      if (!(err instanceof WorkloadError && err.details?.replace === true)) throw err;
      ctx.deps.logger.warn({ workloadId: step.workloadId, err: err.message }, `${step.workloadId} cannot be started again; replacing it`);
      const reason = `${err.message}; replacing it`;
      save(ctx, withPhase(recordOf(ctx, step.workload), 'Pending', reason, ctx.now()));
      await EXECUTORS.repair({ ...step, kind: 'repair', problem: err.message, reason }, ctx);
      return;
    }
    save(ctx, withSuccess({ ...recordOf(ctx, step.workload), actualState: 'running', runtimeId: o.runtimeId }, 'Running', '', ctx.now()));
  },

  async stop(step, ctx) {
    const o = step.observed;
    const rt = runtimeFor(ctx, o.type);
    save(ctx, syncDesired(recordOf(ctx, step.workload), step.workload, step.specHash));
    await rt.stop(o, ctx.signal, ctx.types.of(step.workload).stopTimeoutSeconds(step.workload));
    save(ctx, withSuccess({ ...recordOf(ctx, step.workload), actualState: 'exited', runtimeId: o.runtimeId }, 'Stopped', '', ctx.now()));
  },

  async remove(step, ctx) {
    const o = step.observed;
    const rt = runtimeFor(ctx, o.type);
    const existing = ctx.deps.store.getRecord(step.workloadId);
    const orphan = !step.workload;
    if (existing && orphan) save(ctx, withPhase(existing, 'Removing', step.reason, ctx.now()));
    await rt.stop(o, ctx.signal).catch(() => undefined);
    await rt.remove(o, ctx.signal, step.why);
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
    const w = step.workload;
    const o = step.observed;
    let rec = syncDesired(recordOf(ctx, w), w, step.specHash);
    rec = { ...withObserved(rec, o, ctx.types.of(w)), specHash: step.specHash, appliedSpec: ctx.types.canonical(w) };
    const settled = phaseFromObserved(o, w.desiredState ?? 'running', ctx.now());
    save(ctx, withSuccess({ ...rec, actualState: settled.actual }, settled.phase, settled.message, ctx.now()));
  },

  async wait(step, ctx) {
    const existing = ctx.deps.store.getRecord(step.workloadId);
    if (step.engineState !== undefined && step.observed) {
      // An odd engine state: remember since when, so the wait is bounded across cycles and restarts.
      const rec = existing ?? newRecord(step.workload, ctx.now());
      const engineState = { runtimeId: step.observed.runtimeId, state: step.engineState, since: step.since ?? ctx.now().toISOString() };
      const seen = rec.engineState;
      if (seen && seen.runtimeId === engineState.runtimeId && seen.state === engineState.state) return;
      save(ctx, { ...rec, actualState: step.observed.state, runtimeId: step.observed.runtimeId, engineState, message: step.reason, updatedAt: ctx.now().toISOString() });
      return;
    }
    // A held update: the previous revision keeps running, so the phase stays; the message says why it waits.
    if (step.hold) {
      if (existing && existing.message !== step.reason) save(ctx, { ...existing, message: step.reason, updatedAt: ctx.now().toISOString() });
      return;
    }
    if (existing && existing.phase !== 'BackingOff') save(ctx, withPhase(existing, 'BackingOff', step.reason, ctx.now()));
  },

  async deny(step) {
    // Decided by the planner: recorded as a terminal failure, nothing touches an engine.
    // A refusal for want of room is terminal (no backoff loop); the planner lifts it once the gate admits.
    if (step.untilHostChanges === true) {
      throw new WorkloadError(step.code, step.violations.join('; '), { transient: false, details: { violations: step.violations.length, untilHostChanges: true } });
    }
    throw new WorkloadError(step.code, step.violations.join('; '), { details: { violations: step.violations.length } });
  },

  async noop() {
    // Settled workloads: their record was refreshed from the observation before execution.
  },
};

/** Runs a step through its kind's executor; the map's type pairs each kind with its own step type. */
function execute<K extends StepKind>(step: StepOf<K>, ctx: StepContext): Promise<void> {
  return (EXECUTORS[step.kind] as StepExecutor<K>)(step, ctx);
}

/** Steps whose object the stuck watchdog may stop and start again. */
const APPLYING: ReadonlySet<StepKind> = new Set(['create', 'recreate', 'start', 'repair']);

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
  private readonly types: TypeRegistry;
  /** Workloads with a step in flight, and since when (for status and the stuck watchdog). */
  readonly inFlight = new Map<string, { kind: StepKind; since: number }>();
  /** Step work still going, also after its step was abandoned (abort, stuck): the drain waits for it. */
  private readonly working = new Set<Promise<unknown>>();

  constructor(private readonly deps: ExecutorDeps) {
    this.now = deps.now ?? (() => new Date());
    this.types = deps.types ?? BUILTIN_TYPES;
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
    const ctx: StepContext = { deps: this.deps, types: this.types, signal: stepSignal, now: this.now, pauseAfterCreateMs: this.pauseAfterCreateMs, progressed: () => watchdog.touch() };
    const started = performance.now();
    this.inFlight.set(step.workloadId, { kind: step.kind, since: Date.now() });
    try {
      const work = execute(step, ctx);
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
    if (!w || step.kind === 'remove' || !rt || !APPLYING.has(step.kind)) {
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
    const timeout = this.types.of(w).stopTimeoutSeconds(w);
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
      rec = { ...withObserved({ ...rec, specHash: step.specHash, appliedSpec: this.types.canonical(w) }, now ?? target, this.types.of(w)), actualState: settled.actual };
      store.setRecord(withSuccess(rec, settled.phase, `recovered: ${what}; stopped and started again`, this.now()));
      this.deps.onRecordChange?.();
      logger.info({ workloadId: w.id }, `${w.id} recovered after being ${what}`);
      return undefined;
    } catch (raw) {
      const cause = toWorkloadError(raw);
      for (const o of own) {
        await rt.remove(o, AbortSignal.timeout(CLEANUP_TIMEOUT_MS), 'cleanup-after-failed-start').catch((e: unknown) => {
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
    if (!w || step.kind === 'remove') {
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
