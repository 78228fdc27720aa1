import type { ErrorCode, ErrorSummary } from '../errors/index.js';
import type { ExitEvidence, RuntimeState } from '../runtimes/runtime.js';
import type { DesiredStateDocument } from '../spec/desired-state.js';
import type { ActualState, Phase } from '../spec/status-report.js';

/**
 * Version 2 splits the landed single `state.json` (version 1) in two: `desired.json` (the desired
 * document, written once per new generation) and `state.json` (records, seq reservation, secrets).
 * Pull timestamps and the last pull error are memory-only since version 2.
 */
export const STORE_SCHEMA_VERSION = 2;

export interface FailureEntry {
  at: string;
  code: ErrorCode;
  message: string;
  attempt?: number;
}

export interface RetryState {
  /** Failed attempts since the last reset. */
  attempts: number;
  /** ISO time before which no new attempt is made; null when not backing off. */
  nextRetryAt: string | null;
  gaveUp: boolean;
  /** The retryToken / revision+specHash the budget belongs to; a change resets it. */
  resetKey: string;
}

/** What the store keeps per workload: what was intended and what happened. */
export interface WorkloadRecord {
  id: string;
  /** The workload type (a name the type registry knows). */
  type: string;
  revision: string | undefined;
  /** Hash of the canonical spec that was last applied successfully (or attempted, see lastAttemptHash). */
  specHash: string | undefined;
  /** Hash the last attempt tried to apply, successful or not. */
  lastAttemptHash?: string;
  /**
   * The canonical spec (src/reconcile/canonical.ts) last applied, so a later recreate can say
   * what changed ("image changed (a -> b)", "env FOO added") instead of only "hash differs".
   */
  appliedSpec?: unknown;
  desiredState: 'running' | 'stopped' | 'absent';
  phase: Phase;
  actualState: ActualState;
  message: string;
  runtimeId?: string;
  error: ErrorSummary | null;
  retry: RetryState;
  failures: FailureEntry[];
  /** Crash evidence the engine reported (types whose capabilities say exitEvidence); the report block shows it. */
  evidence?: ExitEvidence;
  /** What the runtime keeps across restarts (e.g. a VM's generated password): opaque, versioned. Never logged. */
  runtimeState?: RuntimeState;
  /** An engine state that is neither running nor stopped, and since when (the planner waits, then repairs). */
  engineState?: { runtimeId: string; state: string; since: string };
  updatedAt: string;
  phaseSince: string;
}

export interface DesiredStateEntry {
  document: DesiredStateDocument;
  etag: string | null;
  receivedAt: string;
  source: string;
  /** Ids of the trusted keys whose signatures verified on this document; absent or empty when unsigned. */
  signedBy?: string[];
}

export interface SyncState {
  lastPullAt: string | null;
  lastSuccessAt: string | null;
  lastError: { code: ErrorCode; message: string; at: string } | null;
}

/**
 * The store in memory. On disk (version 2): `desired` lives in desired.json; `sync` is not written
 * at all (re-learned at the first pull); `reporter.seq` is written as a reservation (see Store.reserveSeq).
 */
export interface StoreData {
  schemaVersion: number;
  nodeId: string | null;
  desired: DesiredStateEntry | null;
  records: Record<string, WorkloadRecord>;
  sync: SyncState;
  reporter: { seq: number };
  /**
   * Generated VM passwords of agents before runtimeState (login.generatePassword); read once into the
   * records' runtimeState by the runtime that owns them, then dropped. Never logged.
   */
  vmSecrets?: Record<string, { password: string }>;
  /**
   * Every image reference a desired workload of ours used (descriptor `images(w)`), and when a desired
   * workload last referenced it: what the garbage collector may remove once nothing desired does.
   * Durable, so a restart forgets no image the agent brought (docs/gc.md). Added within version 2:
   * absent in files written before it.
   */
  imageRefs?: Record<string, ImageRefEntry>;
}

export interface ImageRefEntry {
  /** The workload type whose descriptor named it (container, vm, ...). */
  type: string;
  /** When a desired workload first referenced it (ISO). */
  firstReferencedAt: string;
  /** Since when no desired workload references it (ISO); absent while one does. Written only when that changes. */
  unreferencedSince?: string;
}

export const emptyStoreData = (): StoreData => ({
  schemaVersion: STORE_SCHEMA_VERSION,
  nodeId: null,
  desired: null,
  records: {},
  sync: { lastPullAt: null, lastSuccessAt: null, lastError: null },
  reporter: { seq: 0 },
});
