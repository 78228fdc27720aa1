/**
 * Per-workload usage, collected from the engines on its own interval and cached, so that a scrape
 * (or a push) only reads memory and never fans out to Docker or libvirt. The same pass refreshes
 * each runtime's health, which /readyz and persys_runtime_up read between reconcile cycles.
 */
import type { Logger } from '../log.js';
import type { Runtime, RuntimeHealth, RuntimeName, WorkloadUsage } from '../runtimes/runtime.js';
import { sleep } from '../util/backoff.js';

export interface HealthEntry {
  up: boolean;
  reason: string;
  /** When this was learned (ms since the epoch). */
  at: number;
  dataRoot?: string;
}

/** The newest health of each runtime, whoever learned it (a reconcile cycle or the stats pass). */
export class RuntimeHealthBoard {
  private readonly entries = new Map<string, HealthEntry>();

  update(name: RuntimeName | string, h: RuntimeHealth, at = Date.now()): void {
    const prev = this.entries.get(name);
    if (prev && prev.at > at) return;
    const entry: HealthEntry = { up: h.up, reason: h.reason, at };
    const dataRoot = h.dataRoot ?? prev?.dataRoot;
    if (dataRoot !== undefined) entry.dataRoot = dataRoot;
    this.entries.set(name, entry);
  }

  get(name: string): HealthEntry | undefined {
    return this.entries.get(name);
  }

  all(): [string, HealthEntry][] {
    return [...this.entries];
  }
}

export interface WorkloadStatsOptions {
  runtimes: readonly Runtime[];
  intervalSeconds: number;
  health: RuntimeHealthBoard;
  logger: Logger;
  /** Bound of one runtime's health + usage pass. Default: the interval, at least 10 s. */
  timeoutMs?: number;
}

export interface CollectionCounts {
  ok: number;
  error: number;
  lastDurationSeconds: number;
}

export class WorkloadStatsCollector {
  private readonly byRuntime = new Map<string, WorkloadUsage[]>();
  private readonly failing = new Map<string, string>();
  /** Collections by runtime, for persys_workload_stats_collections_total. */
  readonly counts = new Map<string, CollectionCounts>();
  private running: Promise<void> | null = null;
  lastCollectedAt: number | null = null;

  constructor(private readonly opts: WorkloadStatsOptions) {}

  /** Every cached usage entry, of every runtime (what the scrape reads). */
  usage(): WorkloadUsage[] {
    return [...this.byRuntime.values()].flat();
  }

  /** Collects now, then every interval, until the signal aborts. Resolves then; never rejects. */
  start(signal: AbortSignal): Promise<void> {
    this.running ??= (async () => {
      while (!signal.aborted) {
        await this.collectOnce(signal);
        await sleep(this.opts.intervalSeconds * 1000, signal);
      }
    })();
    return this.running;
  }

  /** One pass over every runtime, in parallel; each runtime's failure only clears its own entries. */
  async collectOnce(signal: AbortSignal): Promise<void> {
    const timeoutMs = this.opts.timeoutMs ?? Math.max(10_000, this.opts.intervalSeconds * 1000);
    await Promise.all(
      this.opts.runtimes.map(async (rt) => {
        const started = performance.now();
        const s = AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]);
        let ok = false;
        try {
          const h = await rt.health(s);
          this.opts.health.update(rt.name, h);
          if (!h.up) throw new Error(h.reason);
          if (rt.usage) this.byRuntime.set(rt.name, await rt.usage(s));
          ok = true;
          if (this.failing.delete(rt.name)) this.opts.logger.debug({ runtime: rt.name }, 'workload usage readable again');
        } catch (err) {
          if (signal.aborted) return;
          // Stale usage is worse than none: a stopped engine's workloads drop out of the scrape.
          this.byRuntime.delete(rt.name);
          const message = err instanceof Error ? err.message : String(err);
          const up = this.opts.health.get(rt.name)?.up ?? false;
          // The runtime being down is reported by readiness and the reconcile loop; say it here only
          // when an engine that is up cannot give usage, and only when the reason is new.
          if (up && this.failing.get(rt.name) !== message) {
            this.opts.logger.warn({ runtime: rt.name, err: message }, 'could not read workload usage');
          }
          this.failing.set(rt.name, message);
        }
        const c = this.counts.get(rt.name) ?? { ok: 0, error: 0, lastDurationSeconds: 0 };
        if (ok) c.ok += 1;
        else c.error += 1;
        c.lastDurationSeconds = (performance.now() - started) / 1000;
        this.counts.set(rt.name, c);
      }),
    );
    this.lastCollectedAt = Date.now();
  }
}
