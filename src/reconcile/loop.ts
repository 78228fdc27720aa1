import type { Logger } from '../log.js';
import { WorkloadError } from '../errors/index.js';
import type { ObservedWorkload, Runtime, RuntimeHealth, RuntimeName } from '../runtimes/runtime.js';
import { WORKLOAD_TYPES, type WorkloadType } from '../spec/desired-state.js';
import type { Store } from '../store/store.js';
import type { WorkloadRecord } from '../store/types.js';
import { Executor, type StepResult } from './executor.js';
import { plan, type Plan } from './planner.js';
import { newRecord, phaseFromObserved, withObserved, withPhase } from './records.js';
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

/**
 * The reconcile loop: observe -> plan -> execute. Single-flight: a trigger during a run queues
 * exactly one more run, so bursts of events cost at most two cycles.
 */
export class ReconcileLoop {
  private running: Promise<void> | null = null;
  private pending = false;
  private readonly pendingReasons = new Set<string>();
  private readonly now: () => Date;
  lastCycle: CycleSummary | null = null;
  cycles = 0;

  constructor(private readonly deps: LoopDeps) {
    this.now = deps.now ?? (() => new Date());
  }

  /** Requests a cycle; returns a promise that settles when the run covering this request ends. */
  trigger(reason: string, signal: AbortSignal): Promise<void> {
    this.pendingReasons.add(reason);
    if (this.running) {
      this.pending = true;
      return this.running;
    }
    this.running = this.drain(signal).finally(() => {
      this.running = null;
    });
    return this.running;
  }

  /** Settles once no cycle is running (for shutdown and tests). */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  private async drain(signal: AbortSignal): Promise<void> {
    do {
      this.pending = false;
      const reasons = [...this.pendingReasons].join(', ');
      this.pendingReasons.clear();
      if (signal.aborted) return;
      try {
        await this.runOnce(signal);
      } catch (err) {
        this.deps.logger.error({ err: err instanceof Error ? err.message : String(err), reasons }, 'reconcile cycle failed');
      }
    } while (this.pending && !signal.aborted);
  }

  async runOnce(signal: AbortSignal): Promise<CycleSummary> {
    const started = performance.now();
    const { store, logger } = this.deps;
    const view = await observeRuntimes(this.deps.runtimes, signal);
    const desired = store.data.desired?.document ?? null;
    const now = this.now();
    const p = plan({ desired, records: store.data.records, observed: view.observed, runtimeUp: view.runtimeUp, now });
    const changedBefore = this.refreshRecords(p, view, now);
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
  private refreshRecords(p: Plan, view: RuntimeView, now: Date): boolean {
    const { store } = this.deps;
    let changed = false;
    const put = (before: WorkloadRecord | undefined, after: WorkloadRecord) => {
      if (before && JSON.stringify(before) === JSON.stringify(after)) return;
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
      if (s.kind !== 'noop' || !s.workload) continue;
      const before = store.getRecord(s.workloadId);
      if (!before) continue;
      const o = s.observed ?? observedById.get(s.workloadId);
      if (!o) continue;
      // A workload that gave up keeps its Failed phase and error until its reset key changes.
      if (before.retry.gaveUp) {
        put(before, { ...before, actualState: o.state });
        continue;
      }
      const settled = phaseFromObserved(o, s.workload.desiredState ?? 'running');
      let next = withObserved(before, o);
      next = { ...withPhase(next, settled.phase, settled.message || s.reason, now), actualState: settled.actual };
      if (settled.phase === 'Running' && next.error?.code === 'RUNTIME_UNAVAILABLE') next = { ...next, error: null };
      if (JSON.stringify({ ...before, updatedAt: '' }) !== JSON.stringify({ ...next, updatedAt: '' })) put(before, next);
    }
    for (const id of p.forget) {
      if (store.getRecord(id)) {
        store.deleteRecord(id);
        changed = true;
      }
    }
    return changed;
  }
}
