import type { ErrorSummary } from '../errors/index.js';
import type { WorkloadError } from '../errors/index.js';
import type { Config } from '../config/schema.js';
import type { ObservedWorkload } from '../runtimes/runtime.js';
import type { Workload } from '../spec/desired-state.js';
import type { ActualState, Phase } from '../spec/status-report.js';
import type { FailureEntry, WorkloadRecord } from '../store/types.js';
import { backoffDelayMs, type BackoffPolicy } from '../util/backoff.js';

/** Failure history kept per workload; the report stays bounded in size. */
export const MAX_FAILURES = 20;

/** The retry budget belongs to one (revision, spec, retryToken); a change of any starts it afresh. */
export function retryResetKey(w: Workload, specHash: string): string {
  return `${w.revision ?? ''}|${specHash}|${w.retryToken ?? ''}`;
}

export interface RetryBudget extends BackoffPolicy {
  maxAttempts: number;
}

export function retryBudget(w: Workload, defaults: Config['retry']): RetryBudget {
  const r = w.retry ?? {};
  return {
    maxAttempts: r.maxAttempts ?? defaults.maxAttempts,
    initialDelayMs: (r.initialDelaySeconds ?? defaults.initialDelaySeconds) * 1000,
    maxDelayMs: (r.maxDelaySeconds ?? defaults.maxDelaySeconds) * 1000,
    multiplier: r.multiplier ?? defaults.multiplier,
  };
}

export function newRecord(w: Workload, now: Date): WorkloadRecord {
  const at = now.toISOString();
  return {
    id: w.id,
    type: w.type,
    revision: w.revision,
    specHash: undefined,
    desiredState: w.desiredState ?? 'running',
    phase: 'Pending',
    actualState: 'missing',
    message: '',
    error: null,
    retry: { attempts: 0, nextRetryAt: null, gaveUp: false, resetKey: '' },
    failures: [],
    updatedAt: at,
    phaseSince: at,
  };
}

/** Returns a copy with the phase set; phaseSince moves only when the phase really changes. */
export function withPhase(r: WorkloadRecord, phase: Phase, message: string, now: Date): WorkloadRecord {
  const at = now.toISOString();
  return { ...r, phase, message, updatedAt: at, phaseSince: r.phase === phase ? r.phaseSince : at };
}

/** Resets the retry budget when the workload's reset key moved on. */
export function withResetKey(r: WorkloadRecord, key: string): WorkloadRecord {
  if (r.retry.resetKey === key) return r;
  return { ...r, retry: { attempts: 0, nextRetryAt: null, gaveUp: false, resetKey: key } };
}

export function withSuccess(r: WorkloadRecord, phase: Phase, message: string, now: Date): WorkloadRecord {
  const next = withPhase(r, phase, message, now);
  return { ...next, error: null, retry: { ...r.retry, attempts: 0, nextRetryAt: null, gaveUp: false } };
}

/**
 * Records a failed attempt. Transient errors back off with full jitter until the budget is
 * spent; terminal errors give up at once and wait for a new revision, retryToken or a retry request.
 */
export function withFailure(
  r: WorkloadRecord,
  err: WorkloadError,
  budget: RetryBudget,
  now: Date,
  random: () => number = Math.random,
): WorkloadRecord {
  const attempts = r.retry.attempts + 1;
  const summary: ErrorSummary = err.summary();
  const entry: FailureEntry = { at: now.toISOString(), code: err.code, message: err.message, attempt: attempts };
  const failures = [...r.failures, entry].slice(-MAX_FAILURES);
  const gaveUp = !err.transient || attempts >= budget.maxAttempts;
  const nextRetryAt = gaveUp ? null : new Date(now.getTime() + backoffDelayMs(budget, attempts, random)).toISOString();
  const phase: Phase = gaveUp ? 'Failed' : 'BackingOff';
  const message = gaveUp
    ? err.transient
      ? `${summary.userMessage} Gave up after ${attempts} attempts.`
      : summary.userMessage
    : `${summary.userMessage} Retry ${attempts}/${budget.maxAttempts} at ${nextRetryAt}.`;
  return {
    ...withPhase(r, phase, message, now),
    error: summary,
    failures,
    retry: { ...r.retry, attempts, nextRetryAt, gaveUp },
  };
}

/** The phase a settled workload is in, judged from what the engine reports. */
export function phaseFromObserved(o: ObservedWorkload | undefined, desiredState: 'running' | 'stopped'): { phase: Phase; actual: ActualState; message: string } {
  if (!o) return { phase: 'Pending', actual: 'missing', message: 'not found on engine' };
  switch (o.state) {
    case 'running':
      return desiredState === 'running'
        ? { phase: 'Running', actual: 'running', message: '' }
        : { phase: 'Running', actual: 'running', message: 'running; desired stopped' };
    case 'restarting':
      return { phase: 'CrashLoop', actual: 'restarting', message: `restarting (exit code ${o.exitCode ?? 'unknown'})` };
    case 'exited':
      if (desiredState === 'stopped') return { phase: 'Stopped', actual: 'exited', message: '' };
      return o.exitCode === 0
        ? { phase: 'Completed', actual: 'exited', message: 'exited with code 0' }
        : { phase: 'Failed', actual: 'exited', message: `exited with code ${o.exitCode ?? 'unknown'}` };
    case 'created':
    case 'stopped':
      return { phase: desiredState === 'stopped' ? 'Stopped' : 'Pending', actual: o.state, message: '' };
    case 'paused':
      return { phase: 'Stopped', actual: 'paused', message: 'paused outside the agent' };
    default:
      return { phase: 'Pending', actual: o.state, message: '' };
  }
}

export function withObserved(r: WorkloadRecord, o: ObservedWorkload): WorkloadRecord {
  const container = {
    ...r.container,
    ...(o.exitCode !== undefined ? { exitCode: o.exitCode } : {}),
    ...(o.oomKilled !== undefined ? { oomKilled: o.oomKilled } : {}),
    ...(o.restartCount !== undefined ? { restartCount: o.restartCount } : {}),
    ...(o.startedAt !== undefined ? { startedAt: o.startedAt } : {}),
    ...(o.finishedAt !== undefined ? { finishedAt: o.finishedAt } : {}),
  };
  return { ...r, actualState: o.state, runtimeId: o.runtimeId, ...(o.type === 'container' ? { container } : {}) };
}
