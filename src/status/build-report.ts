import { BUILTIN_TYPES, type TypeRegistry } from '../runtimes/registry.js';
import type { RuntimeState } from '../runtimes/runtime.js';
import { API_VERSION } from '../spec/desired-state.js';
import { isExpired } from '../trust/desired-state-trust.js';
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
  /** Host resources (src/resources): allocatable, committed, usage and the node conditions. */
  resources?: Pick<StatusReport['node'], 'allocatable' | 'committed' | 'usage' | 'conditions'>;
  now: Date;
  /** The workload types (default the built-in ones): each brings its block of a workload's entry. */
  types?: TypeRegistry;
  /** What a type's runtime knows of a workload without an engine call (Runtime.live), for its block. */
  live?: (type: string, workloadId: string, state: RuntimeState | undefined) => unknown;
  /** Size bound of the report (default REPORT_MAX_BYTES). */
  maxBytes?: number;
  /** The garbage collector's last pass (src/gc). */
  gc?: StatusReport['gc'];
  /** Storage pools and volumes (src/storage). */
  storage?: StatusReport['storage'];
  /** Updates held by the update gates in the last pass (src/updates), by workload id. */
  updates?: ReadonlyMap<string, NonNullable<WorkloadStatus['update']>>;
}

function workloadStatus(r: WorkloadRecord, i: ReportInputs, types: TypeRegistry): WorkloadStatus {
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
  const held = i.updates?.get(r.id);
  if (held) s.update = held;
  const block = types.get(r.type)?.report;
  if (block) {
    const value = block.build({ evidence: r.evidence, runtimeState: r.runtimeState, live: i.live?.(r.type, r.id, r.runtimeState) });
    if (value) s[block.key] = value;
  }
  return s;
}

/** The full snapshot: the central side never needs an earlier report to understand this one. */
export function buildStatusReport(i: ReportInputs): StatusReport {
  const desired = i.data.desired?.document;
  const types = i.types ?? BUILTIN_TYPES;
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
    sync: {
      lastPullAt: i.data.sync.lastPullAt,
      lastSuccessAt: i.data.sync.lastSuccessAt,
      lastError: i.data.sync.lastError,
      desiredExpiresAt: desired?.expiresAt ?? null,
      desiredExpired: isExpired(desired, i.now.getTime()),
      signedBy: i.data.desired?.signedBy ?? [],
    },
    workloads: records.map((r) => workloadStatus(r, i, types)),
  };
  if (i.capacity) report.node.capacity = i.capacity;
  if (i.resources) Object.assign(report.node, i.resources);
  if (i.gc) report.gc = i.gc;
  if (i.storage && (i.storage.pools.length > 0 || i.storage.volumes.length > 0)) report.storage = i.storage;
  return fitReport(report, i.maxBytes ?? REPORT_MAX_BYTES, types);
}

/** A report stays under this size, whatever the number of failing workloads (1 MiB with headroom). */
export const REPORT_MAX_BYTES = 900 * 1024;

const shorten = (s: string, max: number) => (s.length > max ? `${s.slice(0, Math.floor(max / 2))} … ${s.slice(-Math.floor(max / 2))}` : s);

/**
 * Keeps the report within `maxBytes`. Each record is bounded already (records.ts: 20 failures, each
 * message ≤ 512 bytes, error ≤ 4 KiB, log tail ≤ 20 lines / 4 KiB); this is the last line of defence
 * when many workloads fail at once. Evidence goes in order of least value: older history messages
 * shortened, each type's block shrunk by its descriptor, history cut to the last 5, current error messages shortened.
 * Phases, codes and counts always stay.
 */
export function fitReport(report: StatusReport, maxBytes: number, types: TypeRegistry = BUILTIN_TYPES): StatusReport {
  const size = () => Buffer.byteLength(JSON.stringify(report), 'utf8');
  if (size() <= maxBytes) return report;
  const steps: ((w: WorkloadStatus) => void)[] = [
    (w) => void (w.failures = w.failures?.map((f, i, all) => (i < all.length - 1 ? { ...f, message: shorten(f.message, 160) } : f))),
    (w) => shrinkBlock(w, types),
    (w) => void (w.failures = w.failures?.slice(-5)),
    (w) => void (w.error && (w.error = { ...w.error, message: shorten(w.error.message, 512) })),
    (w) => void (w.failures = w.failures?.slice(-1)),
  ];
  for (const step of steps) {
    for (const w of report.workloads) step(w);
    if (size() <= maxBytes) break;
  }
  return report;
}

/** A type's own block cut down by its descriptor (e.g. a log tail to five short lines). */
function shrinkBlock(w: WorkloadStatus, types: TypeRegistry): void {
  const block = types.get(w.type)?.report;
  const value = block ? w[block.key] : undefined;
  if (!block?.shrink || typeof value !== 'object' || value === null || Array.isArray(value)) return;
  w[block.key] = block.shrink(value as Record<string, unknown>);
}
