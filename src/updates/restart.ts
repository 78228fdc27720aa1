import { retryResetKey } from '../reconcile/records.js';
import type { DesiredStep, UpdateHold, WaitStep } from '../reconcile/steps.js';
import type { WorkloadRecord } from '../store/types.js';

/**
 * Whether a step restarts a running workload: the only kind of step the update gates hold. New
 * workloads, removals, stops, starts and repairs never are; nor an update whose retry budget is spent
 * (the planner keeps the previous revision running: a wait here would turn into a cleanup there).
 */
export function isRestartingUpdate(step: DesiredStep, record: WorkloadRecord | undefined): step is Extract<DesiredStep, { kind: 'recreate' }> {
  if (step.kind !== 'recreate') return false;
  if (step.observed.state !== 'running' && step.observed.state !== 'restarting') return false;
  if (record?.retry.gaveUp === true && record.retry.resetKey === retryResetKey(step.workload, step.specHash)) return false;
  return true;
}

/** The recreate held: a wait carrying its hold, so the report and plan can say why and until when. */
export function held(step: Extract<DesiredStep, { kind: 'recreate' }>, hold: Omit<UpdateHold, 'reason'> & { why: string }): WaitStep {
  const { kind: _kind, reason, ...rest } = step;
  const text = `${hold.why} (${reason})`;
  return { ...rest, kind: 'wait', until: hold.until, reason: text, hold: { waiting: hold.waiting, reason: text, until: hold.until } };
}
