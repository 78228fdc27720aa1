import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * The agent's metrics. One registry per agent (not prom-client's global one) so tests can run
 * several agents in one process. The node id lives on persys_node_info only, not on every series.
 */
export function createAgentMetrics(info: { nodeId: string; version: string }) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const nodeInfo = new Gauge({
    name: 'persys_node_info',
    help: 'Constant 1, labelled with the node id and agent version.',
    labelNames: ['node_id', 'version', 'node_version'],
    registers: [registry],
  });
  nodeInfo.set({ node_id: info.nodeId, version: info.version, node_version: process.version }, 1);
  return {
    registry,
    pulls: new Counter({ name: 'persys_desired_state_pulls_total', help: 'Desired-state pulls by result.', labelNames: ['result'], registers: [registry] }),
    desiredGeneration: new Gauge({ name: 'persys_desired_state_generation', help: 'Generation of the desired state in force.', registers: [registry] }),
    reconcileRuns: new Counter({ name: 'persys_reconcile_runs_total', help: 'Reconcile cycles run.', registers: [registry] }),
    reconcileDuration: new Histogram({
      name: 'persys_reconcile_duration_seconds',
      help: 'Duration of a reconcile cycle.',
      buckets: [0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120],
      registers: [registry],
    }),
    steps: new Counter({ name: 'persys_reconcile_steps_total', help: 'Steps executed by kind and result.', labelNames: ['kind', 'result'], registers: [registry] }),
    errors: new Counter({ name: 'persys_workload_errors_total', help: 'Workload errors by code.', labelNames: ['code'], registers: [registry] }),
    runtimeUp: new Gauge({ name: 'persys_runtime_up', help: '1 when the runtime answers, else 0.', labelNames: ['runtime'], registers: [registry] }),
    workloads: new Gauge({ name: 'persys_workloads', help: 'Workloads by type and phase.', labelNames: ['type', 'phase'], registers: [registry] }),
    statusReports: new Counter({ name: 'persys_status_reports_total', help: 'Status reports sent by result.', labelNames: ['result'], registers: [registry] }),
  };
}

export type AgentMetrics = ReturnType<typeof createAgentMetrics>;
