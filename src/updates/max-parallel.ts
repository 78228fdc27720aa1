import type { PlanGate } from '../reconcile/planner.js';
import { held, isRestartingUpdate } from './restart.js';

/**
 * update.maxParallel: at most `max` running workloads restarted by updates per pass (0: no limit),
 * in document order; the rest wait for the next pass, which the loop runs at once. Built per pass.
 */
export function maxParallelGate(max: number): PlanGate {
  let used = 0;
  return {
    name: 'max-parallel',
    check(step, record, now) {
      if (max <= 0 || !isRestartingUpdate(step, record)) return step;
      if (used < max) {
        used++;
        return step;
      }
      return held(step, { waiting: 'max-parallel', until: now.toISOString(), why: `waiting for a restart slot: update.maxParallel=${max} restarts are under way in this pass` });
    },
  };
}
