import type * as v from 'valibot';
import type { Config } from '../config/schema.js';
import type { RetryPolicy } from '../spec/common.js';
import type { ActualState } from '../spec/status-report.js';

/*
 * The runtime contract, v2 (in the spirit of Nomad's task-driver plugins, which own their task config
 * schema, capabilities and an opaque versioned driver state). A runtime owns its workload types end to
 * end: each type brings a TypeDescriptor (schema, canonical form per hash version, change wording,
 * stop/restart rules, policy check, status-report block, capabilities). Everything outside
 * src/runtimes/<name>/ and the registry (src/runtimes/registry.ts) is generic over these.
 */

/** A runtime's name ("up"/"down" in the status report, the `runtime` of an observation). */
export type RuntimeName = string;

/** What every workload has, whatever its type; its `spec` is the type's (validated by the type's schema). */
export interface WorkloadBase {
  id: string;
  type: string;
  revision?: string | undefined;
  desiredState?: 'running' | 'stopped' | undefined;
  retry?: RetryPolicy | undefined;
  retryToken?: string | undefined;
  spec: unknown;
}

export type HostPolicy = Config['policy'];

/**
 * State a runtime must keep across agent restarts (a generated password, ...), kept in the workload's
 * record and handed back on every apply. Opaque to everything but the runtime that wrote it; `version`
 * lets a later runtime read (or migrate) what an earlier one wrote.
 */
export interface RuntimeState {
  version: number;
  data: Record<string, unknown>;
}

/**
 * Why an engine object goes, so reclaim policies follow intent: a `replace` (recreate, repair) keeps
 * data the new object takes over (a VM's disks), the others reclaim per the spec's policies.
 */
export type RemoveReason = 'replace' | 'removed-from-desired' | 'cleanup-after-failed-start' | 'gc';

/** Facts an engine tells about a workload's last run (exit, OOM, restarts): crash evidence in the record. */
export interface ExitEvidence {
  exitCode?: number | null;
  oomKilled?: boolean;
  restartCount?: number;
  startedAt?: string | null;
  finishedAt?: string | null;
  logTail?: string[];
}

/** What a type's status-report block is built from. */
export interface ReportFacts {
  /** The record's crash evidence (types whose capabilities say exitEvidence). */
  evidence?: ExitEvidence | undefined;
  runtimeState?: RuntimeState | undefined;
  /** What the runtime saw of the workload without an engine call (Runtime.live), e.g. a VM's addresses. */
  live?: unknown;
}

/** A type's block of the status report (`container`, `vm`, ...), keyed by `key` in each workload entry. */
export interface ReportBlock {
  key: string;
  /** Schema of the block (it goes into the status-report JSON Schema). */
  schema: v.GenericSchema;
  description: string;
  build(facts: ReportFacts): Record<string, unknown> | undefined;
  /** Cuts the block down when the report is over its size bound (least valuable evidence first). */
  shrink?(block: Record<string, unknown>): Record<string, unknown>;
}

export interface TypeCapabilities {
  /** The engine reports exits, OOM kills and restarts (kept as crash evidence in the record). */
  exitEvidence: boolean;
  /** The engine can restart the workload by itself (restart policy); crash loops are judged from restarts. */
  engineRestarts: boolean;
}

/** What the planner wants of an engine object, for telling the primary from duplicates. */
export interface Wanted {
  specHash: string;
  revision: string | undefined;
}

/**
 * Everything one workload type brings. Methods (not function properties) so a descriptor of a
 * concrete workload type is usable where the generic one is expected.
 */
export interface TypeDescriptor<W extends WorkloadBase = WorkloadBase> {
  readonly type: string;
  /** One line for `plan`, docs and errors, e.g. "a single Docker container". */
  readonly about: string;
  /** The valibot schema of a whole workload of this type (common fields, type literal, spec). */
  readonly schema: v.GenericSchema<unknown, W>;
  /** The hash version new engine objects are labelled with (dev.persys.hash-version). */
  readonly hashVersion: number;
  /**
   * The canonical form of a spec under one hash version's rules (1..hashVersion), or undefined for
   * a version this agent does not know. Keys in sorted order make hashing fastest (not required).
   */
  canonical(w: W, version: number): object | undefined;
  /** Person-readable differences between two canonical forms (values that may be secrets never shown). */
  describeChanges(oldCanonical: unknown, newCanonical: unknown): string[];
  /** Seconds between the stop signal and a kill, when the spec says. */
  stopTimeoutSeconds(w: W): number | undefined;
  /**
   * An exited workload that ran stays down when its own restart rule says so: the reason, or undefined
   * when it should be started again.
   */
  staysDown(w: W, exit: { code: number | null | undefined; hasRun: boolean }): string | undefined;
  /** Host-policy violations of this workload (empty when allowed), each naming the field. */
  policy(w: W, policy: HostPolicy): string[];
  /**
   * Of several engine objects of one workload, the one that is the workload; the rest are duplicates
   * (removed by the planner). The runtime decides, not the planner.
   */
  primary(objects: readonly ObservedWorkload[], wanted: Wanted): ObservedWorkload;
  readonly report?: ReportBlock;
  readonly capabilities: TypeCapabilities;
  /** What the workload asks of the host (admission and `committed`); undefined when it asks nothing. */
  requests?(w: W): ResourceRequests | undefined;
  /** Image references the workload's engine objects run (GC keeps them; remembered in the store). */
  images?(w: W): string[];
  /** Names of the document's storage volumes (`volumes[].name`) the workload mounts or attaches. */
  volumeRefs?(w: W): string[];
  /**
   * Volumes the workload declares itself (a VM's disks with `pool:`): planned, admitted against
   * their pool's quota, created and reclaimed with the document's `volumes`, after them in
   * workload order. Their names are also in volumeRefs, so the storage gate holds the workload.
   */
  ownVolumes?(w: W): OwnVolume[];
}

/** A volume a workload declares itself (TypeDescriptor.ownVolumes). */
export interface OwnVolume {
  name: string;
  pool: string;
  sizeBytes: number;
  reclaimPolicy: 'retain' | 'delete';
}

/** What one workload asks of the host; a field left out asks nothing of that resource. */
export interface ResourceRequests {
  cpus?: number;
  memoryBytes?: number;
  diskBytes?: number;
}

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
  type: string;
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

/** One engine object a workload owns (a container; a VM's domain, disks and seed; a compose app's networks). */
export interface EnginePart {
  kind: string;
  id: string;
}

/**
 * What a runtime sees of one workload we own, built from labels / domain metadata in one engine call.
 * Composite: `parts` lists every engine object it stands for.
 */
export interface ObservedWorkload {
  workloadId: string;
  type: string;
  runtime: RuntimeName;
  /** Engine object id (container id, domain uuid). */
  runtimeId: string;
  /** Engine object name (container name, domain name). */
  name: string;
  revision: string | undefined;
  specHash: string | undefined;
  /** Hash version the object was labelled with; absent on objects made before versions existed (= 1). */
  hashVersion?: number;
  state: ActualState;
  /**
   * The engine's own word for a state that is neither running nor stopped (dead, removing, in shutdown,
   * paused): waited for, then repaired (the planner's odd-state rule).
   */
  engineState?: string;
  exitCode?: number | null;
  oomKilled?: boolean;
  restartCount?: number;
  startedAt?: string | null;
  finishedAt?: string | null;
  /** Engine-side creation time (ISO), used to pick the newest of duplicates. */
  createdAt?: string;
  parts?: EnginePart[];
}

/** What create() returns: the new object, and runtime state to keep in the record (if any). */
export interface CreatedWorkload extends ObservedWorkload {
  runtimeState?: RuntimeState;
}

/** What a step executor hands a runtime: the canonical hash and its version, state, node identity. */
export interface ApplyContext {
  nodeId: string;
  specHash: string;
  /** The hash version specHash was computed under (absent: the type's current one). */
  hashVersion?: number;
  /** What this runtime kept in the record last time (e.g. a generated password). */
  runtimeState?: RuntimeState | undefined;
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
  /** The workload types this runtime owns, each with its descriptor. */
  readonly types: readonly TypeDescriptor[];
  /** Whether the node cannot serve its purpose without this runtime even when nothing of it is desired. */
  readonly primary?: boolean;
  health(signal?: AbortSignal): Promise<RuntimeHealth>;
  /** Everything labelled as ours for this node, in one engine call. */
  observe(signal?: AbortSignal): Promise<ObservedWorkload[]>;
  /** Make sure what create() needs is present (image pull) without touching the running workload. */
  prepare(workload: WorkloadBase, ctx: ApplyContext): Promise<void>;
  /** Create (not start). On failure nothing is left behind. */
  create(workload: WorkloadBase, ctx: ApplyContext): Promise<CreatedWorkload>;
  start(observed: ObservedWorkload, signal: AbortSignal): Promise<void>;
  stop(observed: ObservedWorkload, signal: AbortSignal, timeoutSeconds?: number): Promise<void>;
  /** Removes the object and what it owns, reclaiming per `why` (see RemoveReason). */
  remove(observed: ObservedWorkload, signal: AbortSignal, why: RemoveReason): Promise<void>;
  inspect(observed: ObservedWorkload, signal?: AbortSignal): Promise<ObservedWorkload | undefined>;
  /**
   * Brings an existing object to a new spec in place, when the runtime can do better than a whole
   * replacement (a compose app recreates only the services that changed). When present, the executor
   * uses it for `recreate` instead of stop + remove + create; `prepare` has run before it.
   */
  update?(observed: ObservedWorkload, workload: WorkloadBase, ctx: ApplyContext): Promise<CreatedWorkload>;
  /** Last lines of output, bounded in bytes (for crash evidence). */
  logTail?(observed: ObservedWorkload, lines: number, signal?: AbortSignal): Promise<string[]>;
  /**
   * Usage of every workload we own, for metrics. Called on its own interval (metrics.statsIntervalSeconds),
   * never from a scrape; the runtime bounds its own concurrency of engine calls.
   */
  usage?(signal?: AbortSignal): Promise<WorkloadUsage[]>;
  /** What the runtime knows of a workload without an engine call, for its report block (e.g. VM addresses). */
  live?(workloadId: string, state: RuntimeState | undefined): unknown;
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
  /** The hash version the spec hash was computed under; absent = 1 (objects from before versions). */
  hashVersion: 'dev.persys.hash-version',
  type: 'dev.persys.type',
} as const;

/** The hash version an object's label says; absent or unreadable means 1. */
export function hashVersionOf(label: string | undefined): number {
  const n = label === undefined ? 1 : Number(label);
  return Number.isInteger(n) && n >= 1 ? n : 1;
}
