/**
 * The fleet overview (`GET /v1/nodes`, and the page built from it): one row per node that has a
 * document or has reported. Pure: (documents, latest reports, now) -> rows.
 */
import type { StatusReport } from '../spec/status-report.js';
import type { StoredReport } from './store.js';

/** Worst first: this is also the sort order of the page. */
export const NODE_STATES = ['failing', 'stale', 'behind', 'never-reported', 'ok'] as const;
export type NodeState = (typeof NODE_STATES)[number];

export interface FailingWorkload {
  id: string;
  type: string;
  phase: string;
  code: string;
  message: string;
  userMessage: string;
}

export interface NodeOverview {
  nodeId: string;
  state: NodeState;
  lastSeenAt: string | null;
  stale: boolean;
  agentVersion: string | null;
  publishedGeneration: number | null;
  observedGeneration: number | null;
  behind: boolean;
  workloadsByPhase: Record<string, number>;
  failing: FailingWorkload[];
  workloads: Array<{ id: string; type: string; phase: string; actualState: string; message: string; errorCode: string | null }>;
  conditions: { runtimes: Record<string, string>; syncError: { code: string; message: string; at: string } | null };
  capacity: Record<string, number> | null;
  allocatable: Record<string, number> | null;
  usage: Record<string, number> | null;
  hostname: string | null;
}

export interface OverviewInput {
  published: Map<string, number | null>;
  reports: Map<string, StoredReport>;
  now: Date;
  /** A node is stale after 3 heartbeats without a report. */
  heartbeatSeconds: number;
}

const FAILING_PHASES = new Set(['Failed', 'CrashLoop', 'BackingOff']);

export function failingWorkloads(report: StatusReport): FailingWorkload[] {
  const out: FailingWorkload[] = [];
  for (const w of report.workloads) {
    const err = w.error ?? null;
    if (err === null && !FAILING_PHASES.has(w.phase)) continue;
    out.push({
      id: w.id,
      type: w.type,
      phase: w.phase,
      code: err?.code ?? w.phase.toUpperCase(),
      message: err?.message ?? w.message,
      userMessage: err?.userMessage ?? w.message,
    });
  }
  return out;
}

export function nodeOverview(nodeId: string, published: number | null, stored: StoredReport | undefined, now: Date, heartbeatSeconds: number): NodeOverview {
  const report = stored?.report;
  const lastSeenAt = stored?.receivedAt ?? null;
  const stale = lastSeenAt !== null && now.getTime() - Date.parse(lastSeenAt) > 3 * heartbeatSeconds * 1000;
  const observedGeneration = report?.observedGeneration ?? null;
  const behind = published !== null && report !== undefined && (observedGeneration === null || observedGeneration < published);
  const failing = report === undefined ? [] : failingWorkloads(report);
  const workloadsByPhase: Record<string, number> = {};
  for (const w of report?.workloads ?? []) workloadsByPhase[w.phase] = (workloadsByPhase[w.phase] ?? 0) + 1;
  const syncError = report?.sync.lastError ?? null;
  const state: NodeState =
    report === undefined ? 'never-reported' : failing.length > 0 ? 'failing' : stale ? 'stale' : behind || syncError !== null ? 'behind' : 'ok';
  return {
    nodeId,
    state,
    lastSeenAt,
    stale,
    agentVersion: report?.agentVersion ?? null,
    publishedGeneration: published,
    observedGeneration,
    behind,
    workloadsByPhase,
    failing,
    workloads: (report?.workloads ?? []).map((w) => ({
      id: w.id,
      type: w.type,
      phase: w.phase,
      actualState: w.actualState,
      message: w.message,
      errorCode: w.error?.code ?? null,
    })),
    conditions: { runtimes: report?.node.runtimes ?? {}, syncError },
    capacity: report?.node.capacity ?? null,
    allocatable: report?.node.allocatable ?? null,
    usage: report?.node.usage ?? null,
    hostname: report?.node.hostname ?? null,
  };
}

export function fleetOverview(input: OverviewInput): NodeOverview[] {
  const ids = new Set([...input.published.keys(), ...input.reports.keys()]);
  const rows = [...ids].map((id) => nodeOverview(id, input.published.get(id) ?? null, input.reports.get(id), input.now, input.heartbeatSeconds));
  const rank = (s: NodeState) => NODE_STATES.indexOf(s);
  return rows.sort((a, b) => rank(a.state) - rank(b.state) || a.nodeId.localeCompare(b.nodeId));
}

export type OverviewFilter = 'all' | 'stale' | 'failing' | 'behind';

export function filterOverview(rows: NodeOverview[], filter: OverviewFilter): NodeOverview[] {
  switch (filter) {
    case 'all':
      return rows;
    case 'stale':
      return rows.filter((r) => r.stale);
    case 'failing':
      return rows.filter((r) => r.failing.length > 0);
    case 'behind':
      return rows.filter((r) => r.behind);
  }
}
