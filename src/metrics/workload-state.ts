/**
 * Per-workload state series and the applied generation, read at scrape time from the store's
 * records (in memory). Alerts need to say *which* workload crash-loops or is stuck, which the
 * per-type counts of persys_workloads cannot; one series per record keeps the number bounded by
 * what the node runs, and a removed workload's series go with its record.
 */
import { Gauge, type Registry } from 'prom-client';

/** What a scrape reads of a workload record (a WorkloadRecord satisfies it). */
export interface WorkloadStateView {
  id?: string;
  type: string;
  phase: string;
  revision?: string | undefined;
  desiredState?: string;
  retry?: { attempts: number };
}

/** What a scrape reads of a desired workload. */
export interface DesiredWorkloadView {
  id: string;
  revision?: string | undefined;
  desiredState?: string | undefined;
}

/** Phases in which a workload is where it was asked to be. */
const SETTLED: Record<string, readonly string[]> = {
  running: ['Running', 'Completed'],
  stopped: ['Stopped', 'Completed'],
};

/**
 * True when every desired workload has a record of its revision in a phase that matches its
 * desired state, and no record is left for a workload that is no longer desired (but the record of a
 * failed one, kept for the garbage collector's retention).
 */
export function isApplied(desired: readonly DesiredWorkloadView[], records: readonly WorkloadStateView[]): boolean {
  const byId = new Map(records.filter((r) => r.id !== undefined).map((r) => [r.id, r]));
  for (const w of desired) {
    const r = byId.get(w.id);
    if (!r) return false;
    if ((r.revision ?? '') !== (w.revision ?? '')) return false;
    if (!(SETTLED[w.desiredState ?? 'running'] ?? []).includes(r.phase)) return false;
  }
  const wanted = new Set(desired.map((w) => w.id));
  // A failed workload's record that the desired state dropped is history kept for
  // gc.failedRetentionSeconds (docs/gc.md): its removal is applied.
  const left = [...byId.entries()].filter(([id, r]) => id !== undefined && !(r.phase === 'Failed' && !wanted.has(id)));
  return left.length === wanted.size && left.every(([id]) => id !== undefined && wanted.has(id));
}

export interface WorkloadStateSources {
  records?: () => Iterable<WorkloadStateView>;
  desiredGeneration?: () => number | null;
  desiredWorkloads?: () => readonly DesiredWorkloadView[];
}

export function registerWorkloadStateMetrics(registry: Registry, sources: WorkloadStateSources): void {
  const registers = [registry];
  new Gauge({
    name: 'persys_workload_phase',
    help: 'Constant 1 per workload record, labelled with its current phase (docs/phases.md).',
    labelNames: ['workload_id', 'type', 'phase'],
    registers,
    collect() {
      this.reset();
      for (const r of sources.records?.() ?? []) if (r.id !== undefined) this.set({ workload_id: r.id, type: r.type, phase: r.phase }, 1);
    },
  });
  new Gauge({
    name: 'persys_workload_retry_attempts',
    help: 'Failed attempts of the workload since its retry budget was last reset.',
    labelNames: ['workload_id', 'type'],
    registers,
    collect() {
      this.reset();
      for (const r of sources.records?.() ?? []) if (r.id !== undefined) this.set({ workload_id: r.id, type: r.type }, r.retry?.attempts ?? 0);
    },
  });
  // The newest generation seen fully applied; kept between scrapes so a rollout shows as the gap
  // between this and persys_desired_state_generation. It starts at 0 with the process.
  let applied = 0;
  new Gauge({
    name: 'persys_desired_state_applied_generation',
    help: 'Newest generation whose workloads all reached their desired state (lags persys_desired_state_generation during a rollout).',
    registers,
    collect() {
      const g = sources.desiredGeneration?.() ?? null;
      if (g !== null && sources.desiredWorkloads && isApplied(sources.desiredWorkloads(), [...(sources.records?.() ?? [])])) applied = g;
      this.set(applied);
    },
  });
}
