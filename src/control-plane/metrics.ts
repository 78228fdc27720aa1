/** `/metrics` of `serve` itself: its own registry (never the process-global one). */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { NODE_STATES, type NodeState } from './overview.js';

export function createServeMetrics(sources: { heldRequests: () => number; nodesByState: () => Promise<Record<NodeState, number>> }) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const requests = new Counter({
    name: 'persys_serve_requests_total',
    help: 'HTTP requests answered, by route and status code.',
    labelNames: ['route', 'code'] as const,
    registers: [registry],
  });
  const forbidden = new Counter({
    name: 'persys_serve_forbidden_total',
    help: 'Requests refused because the caller may not touch that node (403), by route.',
    labelNames: ['route'] as const,
    registers: [registry],
  });
  const intake = new Histogram({
    name: 'persys_serve_status_intake_seconds',
    help: 'Time from a status POST arriving to its answer (read, validate, store).',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });
  const wakes = new Counter({
    name: 'persys_serve_long_poll_wakes_total',
    help: 'Held long-polls answered early because the document changed.',
    registers: [registry],
  });
  new Gauge({
    name: 'persys_serve_held_requests',
    help: 'Desired-state GETs held open right now (long-poll).',
    registers: [registry],
    collect() {
      this.set(sources.heldRequests());
    },
  });
  new Gauge({
    name: 'persys_serve_nodes',
    help: 'Nodes by state (failing, stale, behind, never-reported, ok).',
    labelNames: ['state'] as const,
    registers: [registry],
    async collect() {
      const counts = await sources.nodesByState();
      for (const s of NODE_STATES) this.set({ state: s }, counts[s]);
    },
  });
  return { registry, requests, forbidden, intake, wakes };
}

export type ServeMetrics = ReturnType<typeof createServeMetrics>;
