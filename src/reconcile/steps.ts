import type { Workload } from '../spec/desired-state.js';
import type { ObservedWorkload } from '../runtimes/runtime.js';

export const STEP_KINDS = ['create', 'recreate', 'start', 'stop', 'remove', 'adopt', 'wait', 'noop'] as const;
export type StepKind = (typeof STEP_KINDS)[number];

/** One planned action: data, so it can be printed by `plan`, tested, and executed by a typed map. */
export interface Step {
  kind: StepKind;
  workloadId: string;
  /** Why, in words a person can read: "env FOO changed", "not found on engine". */
  reason: string;
  /** The desired workload, when there is one (absent for orphan removal). */
  workload?: Workload;
  /** Canonical spec hash of the desired workload. */
  specHash?: string;
  /** The engine objects this step acts on (duplicates are removed one step each). */
  observed?: ObservedWorkload;
  /** For `wait`: when the next attempt is due (ISO). */
  until?: string;
}
