import { API_VERSION } from '../spec/desired-state.js';
import type { StatusReport, WorkloadStatus } from '../spec/status-report.js';
import type { StoreData, WorkloadRecord } from '../store/types.js';

export interface ReportInputs {
  nodeId: string;
  seq: number;
  agentVersion: string;
  hostname: string;
  data: Readonly<StoreData>;
  /** "up" or "down: <reason>" per runtime. */
  runtimes: Record<string, string>;
  capacity?: Record<string, number>;
  now: Date;
}

function workloadStatus(r: WorkloadRecord): WorkloadStatus {
  const s: WorkloadStatus = {
    id: r.id,
    type: r.type,
    desiredState: r.desiredState,
    actualState: r.actualState,
    phase: r.phase,
    message: r.message,
    error: r.error,
    retry: { attempts: r.retry.attempts, nextRetryAt: r.retry.nextRetryAt, gaveUp: r.retry.gaveUp },
    failures: r.failures,
    updatedAt: r.updatedAt,
  };
  if (r.revision !== undefined) s.revision = r.revision;
  if (r.runtimeId !== undefined) s.runtimeId = r.runtimeId;
  if (r.specHash !== undefined) s.specHash = r.specHash;
  if (r.container) s.container = r.container;
  return s;
}

/** The full snapshot: the central side never needs an earlier report to understand this one. */
export function buildStatusReport(i: ReportInputs): StatusReport {
  const desired = i.data.desired?.document;
  const records = Object.values(i.data.records).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const report: StatusReport = {
    apiVersion: API_VERSION,
    kind: 'StatusReport',
    nodeId: i.nodeId,
    seq: i.seq,
    agentVersion: i.agentVersion,
    observedGeneration: desired?.generation ?? null,
    sentAt: i.now.toISOString(),
    node: { hostname: i.hostname, labels: desired?.labels ?? {}, runtimes: i.runtimes },
    sync: { lastPullAt: i.data.sync.lastPullAt, lastSuccessAt: i.data.sync.lastSuccessAt, lastError: i.data.sync.lastError },
    workloads: records.map(workloadStatus),
  };
  if (i.capacity) report.node.capacity = i.capacity;
  return report;
}
