import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

import { GC_KINDS, type GcKind } from './select.js';

/** The garbage collector's series (docs/metrics.md, docs/gc.md), on the agent's registry. */
export interface GcMetrics {
  passDone(r: { ok: boolean; durationMs: number; engineCalls: number; at: Date }): void;
  removed(kind: GcKind, bytes: number): void;
  failed(kind: GcKind): void;
}

export function registerGcMetrics(registry: Registry): GcMetrics {
  const registers = [registry];
  const runs = new Counter({ name: 'persys_gc_runs_total', help: 'Garbage-collection passes that removed things (dry runs are not counted), by result: ok, or error (the pass was cut short).', labelNames: ['result'], registers });
  const removed = new Counter({ name: 'persys_gc_removed_total', help: 'Objects removed by the garbage collector, by kind (orphan, zombie, failed-record, image, vm-disk, vm-image-cache, vm-seed, vm-console-log).', labelNames: ['kind'], registers });
  const freed = new Counter({ name: 'persys_gc_freed_bytes_total', help: 'Bytes freed by the garbage collector, by kind (images: their size when the last reference went; files: their size).', labelNames: ['kind'], registers });
  const errors = new Counter({ name: 'persys_gc_removal_errors_total', help: 'Removals the garbage collector tried and the engine or file system refused, by kind (retried at the next pass).', labelNames: ['kind'], registers });
  const last = new Gauge({ name: 'persys_gc_last_run_timestamp_seconds', help: 'Unix time of the last garbage-collection pass (0 before the first).', registers });
  const calls = new Gauge({ name: 'persys_gc_last_run_engine_calls', help: 'Engine calls (lists, removals) made by the last garbage-collection pass.', registers });
  const duration = new Histogram({ name: 'persys_gc_run_duration_seconds', help: 'Duration of a garbage-collection pass.', buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60], registers });
  for (const k of GC_KINDS) {
    removed.inc({ kind: k }, 0);
    freed.inc({ kind: k }, 0);
    errors.inc({ kind: k }, 0);
  }
  for (const r of ['ok', 'error']) runs.inc({ result: r }, 0);
  last.set(0);
  return {
    passDone: (r) => {
      runs.inc({ result: r.ok ? 'ok' : 'error' });
      last.set(r.at.getTime() / 1000);
      calls.set(r.engineCalls);
      duration.observe(r.durationMs / 1000);
    },
    removed: (kind, bytes) => {
      removed.inc({ kind });
      if (bytes > 0) freed.inc({ kind }, bytes);
    },
    failed: (kind) => errors.inc({ kind }),
  };
}
