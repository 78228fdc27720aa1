import type { ErrorCode } from '../errors/index.js';
import type { ObservedWorkload, RemoveReason, WorkloadBase } from '../runtimes/runtime.js';

/*
 * A step is data: a discriminated union per kind, so `plan` can print it, tests can table it, and
 * each executor gets exactly the fields its kind carries (no optional field checked at run time).
 * `target` says what a step acts on; only workload steps exist yet, volume and pool steps (storage,
 * admission) join the union with their own target.
 */

export type StepTarget = 'workload' | 'volume' | 'pool';

interface StepBase {
  target: 'workload';
  workloadId: string;
  /** Why, in words a person can read: "env FOO changed", "not found on engine". */
  reason: string;
}

/** Steps of a desired workload: it, and its canonical hash under the current version. */
interface DesiredBase extends StepBase {
  workload: WorkloadBase;
  specHash: string;
  hashVersion: number;
}

export interface CreateStep extends DesiredBase {
  kind: 'create';
}
export interface RecreateStep extends DesiredBase {
  kind: 'recreate';
  observed: ObservedWorkload;
}
export interface StartStep extends DesiredBase {
  kind: 'start';
  observed: ObservedWorkload;
}
export interface StopStep extends DesiredBase {
  kind: 'stop';
  observed: ObservedWorkload;
}
export interface AdoptStep extends DesiredBase {
  kind: 'adopt';
  observed: ObservedWorkload;
}
/** An engine object goes; `workload` is absent when nothing desired owns the id any more. */
export interface RemoveStep extends StepBase {
  kind: 'remove';
  observed: ObservedWorkload;
  why: RemoveReason;
  workload?: WorkloadBase;
}
/** Backing off, or waiting for an odd engine state to settle, until `until`. */
export interface WaitStep extends DesiredBase {
  kind: 'wait';
  until: string;
  observed?: ObservedWorkload;
  /** Waiting for an odd engine state (dead, removing, in shutdown, ...), seen since `since`; absent for a backoff. */
  engineState?: string;
  since?: string;
  /** An update held by a gate (maintenance window, update lock, maxParallel): the workload keeps running as it is. */
  hold?: UpdateHold;
}

/** Why a restarting update waits (docs/updates.md); carried into the status report per workload. */
export interface UpdateHold {
  waiting: 'maintenance-window' | 'update-lock' | 'max-parallel';
  reason: string;
  until: string;
}
/** The workload is refused before anything touches an engine (host policy; later admission). */
export interface DenyStep extends DesiredBase {
  kind: 'deny';
  code: ErrorCode;
  violations: string[];
  observed?: ObservedWorkload;
  /**
   * A refusal for want of room (admission, node pressure): terminal, not retried with backoff, but
   * the gate looks again every pass, and once it admits the workload (the host changed) it is applied.
   */
  untilHostChanges?: boolean;
}
/** An engine object stuck in an odd state past its wait: replaced, and the error says why. */
export interface RepairStep extends DesiredBase {
  kind: 'repair';
  observed: ObservedWorkload;
  /** What was wrong, for the record's error (STUCK). */
  problem: string;
}
export interface NoopStep extends DesiredBase {
  kind: 'noop';
  observed?: ObservedWorkload;
}

export type Step = CreateStep | RecreateStep | StartStep | StopStep | AdoptStep | RemoveStep | WaitStep | DenyStep | RepairStep | NoopStep;
export type StepKind = Step['kind'];
export type StepOf<K extends StepKind> = Extract<Step, { kind: K }>;

export const STEP_KINDS = ['create', 'recreate', 'start', 'stop', 'remove', 'adopt', 'wait', 'deny', 'repair', 'noop'] as const satisfies readonly StepKind[];

/** Steps of a desired workload (every kind but an orphan's remove). */
export type DesiredStep = Exclude<Step, RemoveStep>;
export const hasWorkload = (s: Step): s is DesiredStep | (RemoveStep & { workload: WorkloadBase }) => s.workload !== undefined;
