import type { Logger } from '../log.js';
import type { RuntimeHealth, RuntimeName } from '../runtimes/runtime.js';

/**
 * Says once, at WARN with the reason, that a runtime a desired workload needs is down, and once at
 * INFO when it is back: an agent on a host whose Docker is missing or stopped must say so, but a
 * loop observing every few seconds must not repeat it. A runtime nobody needs may come and go quietly.
 */
export class RuntimeAvailabilityLog {
  /** Runtimes reported down, with the reason that was logged. */
  private readonly reported = new Map<RuntimeName, string>();

  constructor(private readonly logger: Logger) {}

  note(
    health: ReadonlyMap<RuntimeName, RuntimeHealth>,
    runtimes: readonly { name: RuntimeName; types: readonly { type: string }[] }[],
    desired: readonly { id: string; type: string }[],
  ): void {
    for (const rt of runtimes) {
      const h = health.get(rt.name);
      if (!h) continue;
      if (h.up) {
        const was = this.reported.get(rt.name);
        if (was === undefined) continue;
        this.reported.delete(rt.name);
        this.logger.info({ runtime: rt.name, version: h.version, downReason: was }, `${rt.name} is up again`);
        continue;
      }
      if (this.reported.has(rt.name)) continue;
      const needing = desired.filter((w) => rt.types.some((t) => t.type === w.type)).map((w) => w.id);
      if (needing.length === 0) continue;
      this.reported.set(rt.name, h.reason);
      this.logger.warn(
        { runtime: rt.name, reason: h.reason, workloads: needing.slice(0, 20), count: needing.length },
        `${rt.name} is down: ${h.reason}; ${needing.length} desired workload(s) need it`,
      );
    }
  }
}
