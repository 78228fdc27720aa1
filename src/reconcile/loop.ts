import type { Logger } from '../log.js';
import { WorkloadError } from '../errors/index.js';
import type { ObservedWorkload, Runtime, RuntimeEvent, RuntimeHealth, RuntimeName } from '../runtimes/runtime.js';
import { WORKLOAD_TYPES, type WorkloadType } from '../spec/desired-state.js';
import type { Store } from '../store/store.js';
import type { WorkloadRecord } from '../store/types.js';
import { Executor, type StepResult } from './executor.js';
import { plan, type Plan } from './planner.js';
import {
  boundedSummary,
  capLogTail,
  exitError,
  isCrashLooping,
  LOG_TAIL_LINES,
  newRecord,
  phaseFromObserved,
  retryResetKey,
  withFailureEntry,
  withInterrupted,
  withObserved,
  withPhase,
  withResetKey,
  withRetryRequested,
} from './records.js';
import { SingleFlight } from './single-flight.js';
import type { Step } from './steps.js';

export interface RuntimeView {
  /** "up" or "down: <reason>" per runtime name, for the status report. */
  status: Record<string, string>;
  health: Map<RuntimeName, RuntimeHealth>;
  observed: ObservedWorkload[];
  runtimeUp: Record<WorkloadType, boolean>;
  /** Why a type cannot run here, for RUNTIME_UNAVAILABLE. */
  downReason: Partial<Record<WorkloadType, string>>;
}

export interface CycleSummary {
  plan: Plan;
  results: StepResult[];
  durationMs: number;
  view: RuntimeView;
}

export interface LoopDeps {
  store: Store;
  runtimes: readonly Runtime[];
  executor: Executor;
  logger: Logger;
  now?: () => Date;
  onRecordChange?: () => void;
  onCycle?: (s: CycleSummary) => void;
}

/** Asks every runtime for its health and what it owns, one engine call each; a failing runtime only blinds its own types. */
export async function observeRuntimes(runtimes: readonly Runtime[], signal?: AbortSignal): Promise<RuntimeView> {
  const view: RuntimeView = {
    status: {},
    health: new Map(),
    observed: [],
    runtimeUp: Object.fromEntries(WORKLOAD_TYPES.map((t) => [t, false])) as Record<WorkloadType, boolean>,
    downReason: {},
  };
  for (const t of WORKLOAD_TYPES) view.downReason[t] = `no runtime for ${t} workloads in this agent version`;
  await Promise.all(
    runtimes.map(async (rt) => {
      let health: RuntimeHealth;
      try {
        health = await rt.health(signal);
        if (health.up) view.observed.push(...(await rt.observe(signal)));
      } catch (err) {
        health = { up: false, reason: err instanceof Error ? err.message : String(err) };
      }
      view.health.set(rt.name, health);
      view.status[rt.name] = health.up ? 'up' : `down: ${health.reason}`;
      for (const t of rt.types) {
        view.runtimeUp[t] = health.up;
        if (health.up) delete view.downReason[t];
        else view.downReason[t] = `${rt.name} is down: ${health.reason}`;
      }
    }),
  );
  return view;
}

const SETTLED_STEPS: ReadonlySet<Step['kind']> = new Set(['noop']);
/** Errors that only describe what the engine reported of a running workload; they go when it runs again. */
const OBSERVED_ERROR_CODES: ReadonlySet<string> = new Set(['CRASH_LOOP', 'CONTAINER_EXITED', 'OUT_OF_MEMORY', 'RUNTIME_UNAVAILABLE']);
/** Longest single timer (setTimeout overflows past 2^31-1 ms). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Crash evidence gathered before planning: inspected objects and log tails, by workload id. */
interface Evidence {
  logs: Map<string, string[]>;
}

/**
 * The reconcile loop: observe -> plan -> execute. Single-flight: a trigger during a run queues
 * exactly one more run, so bursts of events cost at most two cycles.
 */
export class ReconcileLoop {
  private flight: SingleFlight | null = null;
  private signal: AbortSignal | null = null;
  private readonly pendingReasons = new Set<string>();
  private readonly now: () => Date;
  /** Retry requests (local API) waiting for the next cycle, which applies them before planning. */
  private readonly retryRequests = new Set<string>();
  /** Workloads the engine reported a die/oom for since the last cycle: inspected for evidence. */
  private readonly died = new Set<string>();
  /** What the last inspection saw per workload (runtimeId|state|exitCode), so unchanged objects are not inspected again. */
  private readonly inspected = new Map<string, string>();
  private backoffTimer: NodeJS.Timeout | null = null;
  private interruptedChecked = false;
  lastCycle: CycleSummary | null = null;
  cycles = 0;

  constructor(private readonly deps: LoopDeps) {
    this.now = deps.now ?? (() => new Date());
  }

  /** An engine event for one of our workloads: a die or oom makes the next cycle gather crash evidence. */
  noteEvent(e: RuntimeEvent): void {
    if (e.action === 'die' || e.action === 'oom' || e.action === 'kill') this.died.add(e.workloadId);
  }

  /**
   * `persys-agent retry ID`: the retry budget of the workload starts from zero and an attempt runs
   * now, also for a workload that gave up or a container that exited under restart policy "no".
   * Resolves with the record after the cycle that applied the request; undefined for an unknown id.
   */
  async requestRetry(id: string, signal: AbortSignal): Promise<WorkloadRecord | undefined> {
    const known = this.deps.store.getRecord(id) !== undefined || (this.deps.store.data.desired?.document.workloads ?? []).some((w) => w.id === id);
    if (!known) return undefined;
    this.retryRequests.add(id);
    await this.trigger(`retry requested for ${id}`, signal);
    return this.deps.store.getRecord(id);
  }

  /** Requests a cycle; returns a promise that settles after a cycle that started after this request ends. */
  trigger(reason: string, signal: AbortSignal): Promise<void> {
    this.pendingReasons.add(reason);
    this.signal = signal;
    this.flight ??= new SingleFlight(() => this.cycle(), signal);
    return this.flight.request();
  }

  /** Settles once no cycle is running (for shutdown and tests). */
  async idle(): Promise<void> {
    await this.flight?.idle();
  }

  private async cycle(): Promise<void> {
    const signal = this.signal;
    const reasons = [...this.pendingReasons].join(', ');
    this.pendingReasons.clear();
    if (!signal || signal.aborted) return;
    try {
      const s = await this.runOnce(signal);
      // A terminal failure leaves runtime resources to remove: do it now, not a period later.
      if (s.results.some((r) => !r.ok && r.step.workload && this.deps.store.getRecord(r.step.workloadId)?.retry.gaveUp)) void this.trigger('cleanup after a terminal failure', signal);
      this.scheduleBackoff(s.plan, signal);
    } catch (err) {
      this.deps.logger.error({ err: err instanceof Error ? err.message : String(err), reasons }, 'reconcile cycle failed');
    }
  }

  /** One timer for the earliest backoff that ends, so a retry runs when it is due and not a period later. */
  private scheduleBackoff(p: Plan, signal: AbortSignal): void {
    if (this.backoffTimer) clearTimeout(this.backoffTimer);
    this.backoffTimer = null;
    let earliest = Number.POSITIVE_INFINITY;
    for (const s of p.steps) {
      const t = s.kind === 'wait' && s.until ? Date.parse(s.until) : Number.NaN;
      if (Number.isFinite(t) && t < earliest) earliest = t;
    }
    if (!Number.isFinite(earliest) || signal.aborted) return;
    const delay = Math.min(MAX_TIMER_MS, Math.max(0, earliest - this.now().getTime()) + 50);
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', clear);
      this.backoffTimer = null;
      void this.trigger('backoff ended', signal);
    }, delay);
    const clear = (): void => clearTimeout(timer);
    signal.addEventListener('abort', clear, { once: true });
    this.backoffTimer = timer;
  }

  /** Records of an agent that stopped mid-step, and retry requests: applied before planning. */
  private applyPending(now: Date): boolean {
    const { store, logger } = this.deps;
    let changed = false;
    if (!this.interruptedChecked) {
      this.interruptedChecked = true;
      for (const r of Object.values(store.data.records)) {
        const next = withInterrupted(r, now);
        if (next !== r) {
          logger.info({ workloadId: r.id, phase: r.phase }, `${r.id} was interrupted while ${r.phase}; checking the engine again`);
          store.setRecord(next);
          changed = true;
        }
      }
    }
    for (const id of this.retryRequests) {
      const r = store.getRecord(id);
      if (r) {
        store.setRecord(withRetryRequested(r, now));
        changed = true;
        logger.info({ workloadId: id, attempts: r.retry.attempts, gaveUp: r.retry.gaveUp }, `retry requested for ${id}: attempts reset`);
      }
    }
    this.retryRequests.clear();
    return changed;
  }

  /**
   * Crash evidence, gathered before planning so the plan and the records see it: objects that are
   * restarting, exited, crash-looping or just died are inspected (restart count, OOMKilled, last
   * exit code, start time), and the failing ones' last log lines are read. Objects whose list entry
   * did not change since their last inspection are not inspected again.
   */
  private async gatherEvidence(view: RuntimeView, signal: AbortSignal): Promise<Evidence> {
    const evidence: Evidence = { logs: new Map() };
    const byName = new Map(this.deps.runtimes.map((rt) => [rt.name, rt] as const));
    const died = new Set(this.died);
    this.died.clear();
    const now = this.now();
    await Promise.all(
      view.observed.map(async (o, i) => {
        const rt = byName.get(o.runtime);
        if (!rt || o.state === 'missing') return;
        const rec = this.deps.store.getRecord(o.workloadId);
        const sig = `${o.runtimeId}|${o.state}|${o.exitCode ?? ''}`;
        const interesting =
          died.has(o.workloadId) ||
          o.state === 'restarting' ||
          rec?.phase === 'CrashLoop' ||
          (o.state === 'exited' && this.inspected.get(o.workloadId) !== sig);
        if (!interesting) return;
        try {
          const full = await rt.inspect(o, signal);
          if (!full) return;
          view.observed[i] = full;
          this.inspected.set(o.workloadId, `${full.runtimeId}|${full.state}|${full.exitCode ?? ''}`);
          const failing = isCrashLooping(full, now) || (full.state === 'exited' && (full.exitCode !== 0 || full.oomKilled === true));
          const fresh = rec?.container?.finishedAt !== full.finishedAt || rec?.container?.restartCount !== full.restartCount || !rec?.container?.logTail;
          if (failing && fresh && rt.logTail) evidence.logs.set(o.workloadId, await rt.logTail(full, LOG_TAIL_LINES, signal));
        } catch (err) {
          this.deps.logger.debug({ workloadId: o.workloadId, err: err instanceof Error ? err.message : String(err) }, 'could not gather crash evidence');
        }
      }),
    );
    return evidence;
  }

  async runOnce(signal: AbortSignal): Promise<CycleSummary> {
    const started = performance.now();
    const { store, logger } = this.deps;
    const view = await observeRuntimes(this.deps.runtimes, signal);
    const evidence = await this.gatherEvidence(view, signal);
    const desired = store.data.desired?.document ?? null;
    const now = this.now();
    const pendingChanged = this.applyPending(now);
    const p = plan({ desired, records: store.data.records, observed: view.observed, runtimeUp: view.runtimeUp, now });
    const changedBefore = this.refreshRecords(p, view, now, evidence) || pendingChanged;
    const results = p.steps.some((s) => !SETTLED_STEPS.has(s.kind)) ? await this.deps.executor.execute(p.steps, signal) : [];
    const summary: CycleSummary = { plan: p, results, durationMs: performance.now() - started, view };
    this.lastCycle = summary;
    this.cycles++;
    const acted = results.filter((r) => r.step.kind !== 'noop' && r.step.kind !== 'wait');
    if (acted.length > 0) {
      const failed = acted.filter((r) => !r.ok).length;
      logger.info(
        {
          steps: acted.map((r) => `${r.step.kind} ${r.step.workloadId}: ${r.step.reason}${r.ok ? '' : ` (failed: ${r.error?.code})`}`),
          failed,
          durationMs: Math.round(summary.durationMs),
        },
        `reconciled: ${acted.length - failed} step(s) applied, ${failed} failed`,
      );
    } else {
      logger.debug({ durationMs: Math.round(summary.durationMs) }, 'reconcile: nothing to do');
    }
    if (changedBefore || results.length > 0) this.deps.onRecordChange?.();
    this.deps.onCycle?.(summary);
    return summary;
  }

  /**
   * Brings records in line with what the engines report before acting: settled workloads get
   * their observed state, workloads whose runtime is down get RUNTIME_UNAVAILABLE, and records
   * nobody wants any more are forgotten. Returns whether anything changed.
   */
  private refreshRecords(p: Plan, view: RuntimeView, now: Date, evidence: Evidence): boolean {
    const { store } = this.deps;
    let changed = false;
    const put = (before: WorkloadRecord | undefined, after: WorkloadRecord) => {
      if (before === after || (before && JSON.stringify(before) === JSON.stringify(after))) return;
      store.setRecord(after);
      changed = true;
    };
    const observedById = new Map<string, ObservedWorkload>();
    for (const o of view.observed) observedById.set(o.workloadId, o);

    for (const u of p.unavailable) {
      const w = store.data.desired?.document.workloads.find((x) => x.id === u.workloadId);
      if (!w) continue;
      const before = store.getRecord(u.workloadId);
      const base = before ?? newRecord(w, now);
      const msg = view.downReason[u.type] ?? u.reason;
      const err = new WorkloadError('RUNTIME_UNAVAILABLE', msg);
      put(before, {
        ...withPhase(base, before?.phase === 'Running' ? 'Running' : 'Pending', msg, now),
        actualState: before?.actualState === 'running' ? 'running' : 'unknown',
        desiredState: w.desiredState ?? 'running',
        revision: w.revision,
        error: err.summary(),
        updatedAt: before && before.error?.code === 'RUNTIME_UNAVAILABLE' ? before.updatedAt : now.toISOString(),
      });
    }
    for (const s of p.steps) {
      if (s.kind !== 'noop' || !s.workload || !s.specHash) continue;
      const before = store.getRecord(s.workloadId);
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
        put(before, this.settle(before, withResetKey(before, key), o, s, now, evidence));
      } catch (err) {
        // A refused phase move here is a bug; it must not stop the other workloads' refresh.
        this.deps.logger.error({ workloadId: s.workloadId, err: err instanceof Error ? err.message : String(err) }, 'could not refresh a record');
      }
    }
    for (const id of p.forget) {
      this.inspected.delete(id);
      if (store.getRecord(id)) {
        store.deleteRecord(id);
        changed = true;
      }
    }
    return changed;
  }

  /**
   * The record of a settled workload from what the engine reports: phase, facts, and for a
   * workload failing on its own (crash loop, OOM, exit) the error, a history entry per new exit and
   * the last log lines. An unchanged record is returned as `before` so nothing is written.
   */
  private settle(before: WorkloadRecord, base: WorkloadRecord, o: ObservedWorkload, s: Step, now: Date, evidence: Evidence): WorkloadRecord {
    const desiredState = s.workload?.desiredState ?? 'running';
    const settled = phaseFromObserved(o, desiredState, now);
    let next = withObserved(base, o);
    next = { ...withPhase(next, settled.phase, settled.message || s.reason, now), actualState: settled.actual };
    const failing = settled.phase === 'CrashLoop' || settled.phase === 'Failed';
    const err = failing ? exitError(o, settled.phase === 'CrashLoop', before.container?.exitCode) : null;
    if (err) {
      next = { ...next, error: boundedSummary(err) };
      const newExit =
        (o.finishedAt !== undefined && o.finishedAt !== null && o.finishedAt !== before.container?.finishedAt) ||
        (o.restartCount !== undefined && o.restartCount !== before.container?.restartCount);
      if (newExit) next = { ...next, failures: withFailureEntry(next.failures, { at: o.finishedAt ?? now.toISOString(), code: err.code, message: err.message }) };
    } else if (next.error && OBSERVED_ERROR_CODES.has(next.error.code) && !failing) {
      next = { ...next, error: null };
    }
    const logs = evidence.logs.get(o.workloadId);
    if (next.container) {
      if (logs && failing) next = { ...next, container: { ...next.container, logTail: capLogTail(logs) } };
      else if (!failing && next.container.logTail) {
        const { logTail: _drop, ...rest } = next.container;
        next = { ...next, container: rest };
      }
    }
    if (JSON.stringify({ ...before, updatedAt: '', phaseSince: '' }) === JSON.stringify({ ...next, updatedAt: '', phaseSince: '' })) return before;
    return next;
  }
}
