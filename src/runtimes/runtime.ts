import type { Workload, WorkloadType } from '../spec/desired-state.js';
import type { ActualState } from '../spec/status-report.js';

export type RuntimeName = 'docker' | 'libvirt';

export interface RuntimeHealth {
  up: boolean;
  /** Why it is down, or the engine version when up. */
  reason: string;
  version?: string;
  /** Capacity facts (e.g. ncpu, memoryBytes) when the engine tells them. */
  capacity?: Record<string, number>;
  /** Where the engine keeps its data (Docker's DockerRootDir), for filesystem metrics. */
  dataRoot?: string;
}

/**
 * Resource usage of one workload, as the engine counts it (Docker stats, libvirt domstats).
 * Counters are cumulative since the engine object was created (they restart with a recreate);
 * a field the engine does not report is left out.
 */
export interface WorkloadUsage extends UsageCounters {
  workloadId: string;
  type: WorkloadType;
  runtimeId: string;
  /** Restarts done by the engine (restart policy). */
  restarts?: number;
}

/** The counters every runtime can report for one workload; absent when the engine does not say. */
export interface UsageCounters {
  cpuSeconds?: number;
  /** Memory in use now, bytes (working set: page cache that can be dropped is not counted). */
  memoryBytes?: number;
  networkReceiveBytes?: number;
  networkTransmitBytes?: number;
  blockReadBytes?: number;
  blockWriteBytes?: number;
}

/** What a runtime sees of one workload we own. Built from labels / domain metadata, one engine call for all. */
export interface ObservedWorkload {
  workloadId: string;
  type: WorkloadType;
  runtime: RuntimeName;
  /** Engine object id (container id, domain uuid). */
  runtimeId: string;
  /** Engine object name (container name, domain name). */
  name: string;
  revision: string | undefined;
  specHash: string | undefined;
  state: ActualState;
  exitCode?: number | null;
  oomKilled?: boolean;
  restartCount?: number;
  startedAt?: string | null;
  finishedAt?: string | null;
  /** Engine-side creation time (ISO), used to pick the newest of duplicates. */
  createdAt?: string;
}

/** What a step executor hands a runtime: the workload plus its canonical hash and the node identity. */
export interface ApplyContext {
  nodeId: string;
  specHash: string;
  signal: AbortSignal;
  /** Called when the step enters a new phase (e.g. Pulling -> Creating), so status can follow. */
  progress?: (phase: 'Pulling' | 'Creating' | 'Starting') => void;
  /** Called whenever the step moves within a phase (e.g. pull bytes arrive): feeds the stuck watchdog. */
  heartbeat?: () => void;
}

export interface RuntimeEvent {
  workloadId: string;
  /** die, oom, destroy, start, stop ... as the engine names it. */
  action: string;
  runtimeId: string;
}

/**
 * The contract every runtime folder implements, in the spirit of Nomad's task-driver plugin
 * (Fingerprint/RecoverTask/StartTask/StopTask/DestroyTask/InspectTask/TaskStats/TaskEvents).
 * Every method may throw WorkloadError with a code from src/errors; engine errors are translated
 * inside the runtime folder and nowhere else.
 */
export interface Runtime {
  readonly name: RuntimeName;
  readonly types: readonly WorkloadType[];
  health(signal?: AbortSignal): Promise<RuntimeHealth>;
  /** Everything labelled as ours for this node, in one engine call. */
  observe(signal?: AbortSignal): Promise<ObservedWorkload[]>;
  /** Make sure what create() needs is present (image pull) without touching the running workload. */
  prepare(workload: Workload, ctx: ApplyContext): Promise<void>;
  /** Create (not start). On failure nothing is left behind. */
  create(workload: Workload, ctx: ApplyContext): Promise<ObservedWorkload>;
  start(observed: ObservedWorkload, signal: AbortSignal): Promise<void>;
  stop(observed: ObservedWorkload, signal: AbortSignal, timeoutSeconds?: number): Promise<void>;
  remove(observed: ObservedWorkload, signal: AbortSignal): Promise<void>;
  inspect(observed: ObservedWorkload, signal?: AbortSignal): Promise<ObservedWorkload | undefined>;
  /** Last lines of output, bounded in bytes (for crash evidence). */
  logTail?(observed: ObservedWorkload, lines: number, signal?: AbortSignal): Promise<string[]>;
  /**
   * Usage of every workload we own, for metrics. Called on its own interval (metrics.statsIntervalSeconds),
   * never from a scrape; the runtime bounds its own concurrency of engine calls.
   */
  usage?(signal?: AbortSignal): Promise<WorkloadUsage[]>;
  /** Streams events for our workloads until the signal aborts; reconnects are the caller's job. */
  events(signal: AbortSignal, onEvent: (e: RuntimeEvent) => void): Promise<void>;
  close?(): Promise<void>;
}

export const LABELS = {
  managed: 'dev.persys.managed',
  nodeId: 'dev.persys.node-id',
  workloadId: 'dev.persys.workload-id',
  revision: 'dev.persys.revision',
  specHash: 'dev.persys.spec-hash',
  type: 'dev.persys.type',
} as const;
