import { WorkloadError } from '../errors/index.js';
import { PHASES, type Phase } from '../spec/status-report.js';

/*
 * The phase machine of a workload (docs/phases.md). Every phase change of a record goes through
 * `checkTransition` (called by records.ts `withPhase`), so the allowed moves live in this one table.
 *
 *   Pending --> Pulling --> Creating --> Starting --> Running
 *                                    \-> Stopped (created, desired stopped)
 *   Running <-> CrashLoop / Completed / Failed / Stopped   (what the engine reports)
 *   any --> BackingOff | Failed | Pending                  (a failure, a spent budget, a reset)
 *   any --> Removing --> Pulling (recreate) | Pending | Failed | BackingOff
 *
 * Refused are the moves that would skip a step of an apply (Pulling -> Running, Creating -> Running),
 * go backwards inside one (Starting -> Creating), or leave Removing for a settled phase without an apply.
 */

/** Phases in which the agent is in the middle of an engine call; a record left in one is interrupted or stuck. */
export const TRANSITIONAL_PHASES: ReadonlySet<Phase> = new Set<Phase>(['Pulling', 'Creating', 'Starting', 'Removing']);

/** Phases that describe what the engine reports of a workload that is not being changed. */
export const SETTLED_PHASES: ReadonlySet<Phase> = new Set<Phase>(['Running', 'Stopped', 'Completed', 'CrashLoop']);

/** A failure, a backoff or a reset can happen in any phase; removal may be needed from any phase. */
const FROM_ANYWHERE: readonly Phase[] = ['Pending', 'BackingOff', 'Failed', 'Removing'];

/** Settled phases follow each other as the engine reports them (a crash, a recovery, an exit, a stop). */
const SETTLED: readonly Phase[] = ['Running', 'Stopped', 'Completed', 'CrashLoop'];

/** Where each phase may go next, besides FROM_ANYWHERE and itself. */
const NEXT: Readonly<Record<Phase, readonly Phase[]>> = {
  // Pending: new, reset, or re-adopting after a restart: an apply starts, or the engine's state is adopted.
  Pending: ['Pulling', 'Creating', 'Starting', ...SETTLED],
  // An apply goes forwards only.
  Pulling: ['Creating'],
  Creating: ['Starting', 'Stopped'],
  // A container may exit or crash the moment it starts; a stop may overtake a start.
  Starting: SETTLED,
  // Settled: another settled phase, a start (restart of an exited one) or a new apply (recreate pulls first).
  Running: [...SETTLED, 'Starting', 'Pulling'],
  Stopped: [...SETTLED, 'Starting', 'Pulling'],
  Completed: [...SETTLED, 'Starting', 'Pulling'],
  CrashLoop: [...SETTLED, 'Starting', 'Pulling'],
  // After a failure: the next attempt, or what the engine reports.
  Failed: [...SETTLED, 'Starting', 'Pulling'],
  BackingOff: [...SETTLED, 'Starting', 'Pulling', 'Creating'],
  // Removing ends with the record gone, or leads into a recreate's create (which pulls first).
  Removing: ['Pulling'],
};

const ALLOWED: ReadonlyMap<Phase, ReadonlySet<Phase>> = new Map(
  PHASES.map((p) => [p, new Set<Phase>([p, ...FROM_ANYWHERE, ...NEXT[p]])] as const),
);

export function canTransition(from: Phase, to: Phase): boolean {
  return ALLOWED.get(from)?.has(to) ?? false;
}

/** Every allowed (from, to) pair, for docs and tests. */
export function allowedTransitions(): ReadonlyMap<Phase, ReadonlySet<Phase>> {
  return ALLOWED;
}

/** A refused move is a bug in the agent, not a workload problem: INTERNAL, with both phases named. */
export class PhaseTransitionError extends WorkloadError {
  readonly from: Phase;
  readonly to: Phase;
  constructor(id: string, from: Phase, to: Phase) {
    super('INTERNAL', `workload ${id}: phase ${from} -> ${to} is not an allowed transition`, { details: { from, to } });
    this.name = 'PhaseTransitionError';
    this.from = from;
    this.to = to;
  }
}

export function checkTransition(id: string, from: Phase, to: Phase): void {
  if (!canTransition(from, to)) throw new PhaseTransitionError(id, from, to);
}

export function isTransitional(p: Phase): boolean {
  return TRANSITIONAL_PHASES.has(p);
}
