import type { Logger } from '../log.js';
import { BUILTIN_TYPES, type TypeRegistry } from '../runtimes/registry.js';
import type { HostPolicy, ObservedWorkload, Runtime, RuntimeEvent, RuntimeHealth, RuntimeName } from '../runtimes/runtime.js';
import type { Store } from '../store/store.js';
import type { WorkloadRecord } from '../store/types.js';
import { Executor, type StepResult } from './executor.js';
import { plan, type Plan, type PlanGate } from './planner.js';
import { isCrashLooping, LOG_TAIL_LINES, withInterrupted, withRetryRequested } from './records.js';
import { SingleFlight } from './single-flight.js';
import type { Step, StepKind } from './steps.js';
import { settleRecords } from './transitions.js';

export interface RuntimeView {
  /** "up" or "down: <reason>" per runtime name, for the status report. */
  status: Record<string, string>;
  health: Map<RuntimeName, RuntimeHealth>;
  observed: ObservedWorkload[];
  /** Per workload type: whether its runtime answered. */
  runtimeUp: Record<string, boolean>;
  /** Why a type cannot run here, for RUNTIME_UNAVAILABLE. */
  downReason: Record<string, string>;
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
  /** The workload types (default the built-in ones). */
  types?: TypeRegistry;
  /** The host policy the planner applies (default the secure defaults). */
  policy?: HostPolicy;
  /** The plan gates of one pass (admission, quota, windows, locks), built fresh for each pass. */
  gates?: (view: RuntimeView, now: Date) => readonly PlanGate[];
  /**
   * Pools and volumes (src/storage): applied before the workload plan (creates, grows; returns the
   * gate that holds workloads whose volumes are not Ready) and after its steps (deletes).
   */
  storage?: StorageHooks;
  now?: () => Date;
  onRecordChange?: () => void;
  onCycle?: (s: CycleSummary) => void;
}

export interface StorageHooks {
  beforeWorkloads(desired: DesiredDocument | null): Promise<PlanGate | null>;
  afterWorkloads(): Promise<void>;
}
type DesiredDocument = NonNullable<Store['data']['desired']>['document'];

/** Asks every runtime for its health and what it owns, one engine call each; a failing runtime only blinds its own types. */
export async function observeRuntimes(runtimes: readonly Runtime[], signal?: AbortSignal, types: TypeRegistry = BUILTIN_TYPES): Promise<RuntimeView> {
  const view: RuntimeView = { status: {}, health: new Map(), observed: [], runtimeUp: {}, downReason: {} };
  for (const t of types.names()) {
    view.runtimeUp[t] = false;
    view.downReason[t] = `no runtime for ${t} workloads in this agent version`;
  }
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
      for (const { type: t } of rt.types) {
        view.runtimeUp[t] = health.up;
        if (health.up) delete view.downReason[t];
        else view.downReason[t] = `${rt.name} is down: ${health.reason}`;
      }
    }),
  );
  return view;
}

const SETTLED_STEPS: ReadonlySet<Step['kind']> = new Set(['noop']);
/** Steps that changed an engine: after a cycle that applied one, the loop plans again at once. */
const APPLIED_STEPS: ReadonlySet<StepKind> = new Set(['create', 'recreate', 'start', 'stop', 'remove', 'repair']);
/** Re-plan rounds within one trigger, so a chain of dependent steps converges without a loop forever. */
export const MAX_SETTLE_ROUNDS = 10;
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
  /** Re-plan rounds since the last cycle that applied nothing (bounded by MAX_SETTLE_ROUNDS). */
  private settleRounds = 0;
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
  /**
   * The newest observation, set as soon as a pass has observed and before it settles records from
   * it: a report built while a pass executes pairs the records with the engines' state they were
   * settled against, never records of a pass that saw an engine up with the status of one that saw
   * it down.
   */
  lastView: RuntimeView | null = null;
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
      // Re-plan until settled: what was applied may enable the next step now (bounded per trigger).
      if (s.results.some((r) => r.ok && APPLIED_STEPS.has(r.step.kind)) && this.settleRounds < MAX_SETTLE_ROUNDS) {
        this.settleRounds++;
        void this.trigger('settling after applied steps', signal);
      } else {
        this.settleRounds = 0;
      }
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
      const t = s.kind === 'wait' ? Date.parse(s.until) : Number.NaN;
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
          const fresh = rec?.evidence?.finishedAt !== full.finishedAt || rec?.evidence?.restartCount !== full.restartCount || !rec?.evidence?.logTail;
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
    const types = this.deps.types ?? BUILTIN_TYPES;
    const view = await observeRuntimes(this.deps.runtimes, signal, types);
    const evidence = await this.gatherEvidence(view, signal);
    this.lastView = view;
    const desired = store.data.desired?.document ?? null;
    const now = this.now();
    const pendingChanged = this.applyPending(now);
    const storageGate = this.deps.storage ? await this.deps.storage.beforeWorkloads(desired) : null;
    const gates = [...(this.deps.gates ? this.deps.gates(view, now) : []), ...(storageGate ? [storageGate] : [])];
    const p = plan({
      desired,
      records: store.data.records,
      observed: view.observed,
      runtimeUp: view.runtimeUp,
      downReason: view.downReason,
      now,
      types,
      ...(this.deps.policy ? { policy: this.deps.policy } : {}),
      gates,
    });
    const changedBefore = this.applyTransitions(p, view, now, evidence, types) || pendingChanged;
    const results = p.steps.some((s) => !SETTLED_STEPS.has(s.kind)) ? await this.deps.executor.execute(p.steps, signal) : [];
    await this.deps.storage?.afterWorkloads();
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
   * Brings records in line with what the engines report before acting (transitions.ts decides,
   * purely; this writes). Returns whether anything changed.
   */
  private applyTransitions(p: Plan, view: RuntimeView, now: Date, evidence: Evidence, types: TypeRegistry): boolean {
    const { store, logger } = this.deps;
    const desired = store.data.desired?.document ?? null;
    const changes = settleRecords({ plan: p, records: store.data.records, desired, observed: view.observed, downReason: view.downReason, logs: evidence.logs, types, now });
    for (const r of changes.put) store.setRecord(r);
    for (const id of p.forget) this.inspected.delete(id);
    for (const id of changes.forget) store.deleteRecord(id);
    // A refused phase move here is a bug; it must not stop the other workloads' refresh.
    for (const x of changes.problems) logger.error({ workloadId: x.workloadId, err: x.message }, 'could not refresh a record');
    return changes.put.length > 0 || changes.forget.length > 0;
  }
}
