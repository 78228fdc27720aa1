import { Cron } from 'croner';
import type { PlanGate } from '../reconcile/planner.js';
import { updatePolicyOf, type MaintenanceWindow } from '../spec/maintenance.js';
import { held, isRestartingUpdate } from './restart.js';

/*
 * Maintenance windows (docs/updates.md): a window opens each time its cron pattern fires (in its
 * time zone, so wall-clock times survive DST changes) and stays open durationMinutes. Pure functions
 * of `now`, so the planner stays a function of its input and tests use a fake clock.
 */

const crons = new Map<string, Cron>();
/** Parsed patterns are kept (bounded): the planner asks on every pass. */
function cronOf(w: MaintenanceWindow): Cron {
  const key = `${w.timezone ?? 'UTC'}\u0000${w.cron}`;
  let c = crons.get(key);
  if (!c) {
    if (crons.size > 256) crons.clear();
    // No callback: croner only computes times, nothing is scheduled.
    c = new Cron(w.cron, { timezone: w.timezone ?? 'UTC' });
    crons.set(key, c);
  }
  return c;
}

export interface WindowState {
  open: boolean;
  /** While open: when the window closes. */
  closesAt?: Date;
  /** While closed: when the next window opens (undefined: the patterns never fire again). */
  nextStart?: Date;
}

/** Whether any window is open at `now`, and when the next one opens. */
export function windowState(windows: readonly MaintenanceWindow[], now: Date): WindowState {
  let closesAt: Date | undefined;
  let nextStart: Date | undefined;
  for (const w of windows) {
    const c = cronOf(w);
    // previousRuns includes a run in the same second as the reference: a window is open from its start.
    const last = c.previousRuns(1, new Date(now.getTime() + 1))[0];
    if (last) {
      const end = last.getTime() + w.durationMinutes * 60_000;
      if (end > now.getTime() && (!closesAt || end > closesAt.getTime())) closesAt = new Date(end);
    }
    const next = c.nextRun(now);
    if (next && (!nextStart || next < nextStart)) nextStart = next;
  }
  if (closesAt) return { open: true, closesAt };
  return nextStart ? { open: false, nextStart } : { open: false };
}

/** "2026-12-02T02:00Z": minutes precision when the seconds are zero, as a person reads it. */
export function shortIso(d: Date): string {
  const iso = d.toISOString();
  return iso.endsWith(':00.000Z') ? `${iso.slice(0, 16)}Z` : iso.replace(/\.000Z$/, 'Z');
}

// --- the gate ------------------------------------------------------------------------------------


export interface WindowsGateOptions {
  /** The node's windows: the document's when it declares maintenance, else the config's. */
  windows: readonly MaintenanceWindow[];
  /** The forceToken in force at a workload's last successful create or update. */
  forceTokenOf: (workloadId: string) => string | undefined;
}

/** Far enough that the loop's timer is capped, never fired (no window will ever open). */
const NEVER = '9999-12-31T23:59:59.000Z';

/**
 * Holds restarting updates of workloads with update.window "maintenance" (the default when the node
 * has windows) until a window is open. A forceToken other than the last applied one opens it.
 */
export function windowsGate(o: WindowsGateOptions): PlanGate {
  let state: { at: number; s: WindowState } | undefined;
  return {
    name: 'maintenance-window',
    check(step, record, now) {
      if (!isRestartingUpdate(step, record)) return step;
      const u = updatePolicyOf(step.workload);
      const mode = u.window ?? (o.windows.length > 0 ? 'maintenance' : 'any');
      if (mode === 'any') return step;
      if (u.forceToken !== undefined && u.forceToken !== (o.forceTokenOf(step.workloadId) ?? '')) return step;
      if (o.windows.length === 0) {
        return held(step, { waiting: 'maintenance-window', until: NEVER, why: 'waiting for a maintenance window, but the node has none (maintenance.windows); a new update.forceToken applies it now' });
      }
      if (state?.at !== now.getTime()) state = { at: now.getTime(), s: windowState(o.windows, now) };
      const s = state.s;
      if (s.open) return step;
      if (!s.nextStart) return held(step, { waiting: 'maintenance-window', until: NEVER, why: 'waiting for a maintenance window, but no window opens again' });
      return held(step, { waiting: 'maintenance-window', until: s.nextStart.toISOString(), why: `waiting for the maintenance window at ${shortIso(s.nextStart)}` });
    },
  };
}
