import { WorkloadError, type ErrorSummary } from '../errors/index.js';
import type { Config } from '../config/schema.js';
import type { ObservedWorkload, TypeDescriptor, WorkloadBase } from '../runtimes/runtime.js';
import type { ActualState, Phase } from '../spec/status-report.js';
import type { FailureEntry, WorkloadRecord } from '../store/types.js';
import { backoffDelayMs, type BackoffPolicy } from '../util/backoff.js';
import { checkTransition, isTransitional } from './phases.js';

/** Failure history kept per workload; the report stays bounded in size. */
export const MAX_FAILURES = 20;
/** The current error keeps the engine's exact message up to this many bytes (engines' are far shorter). */
export const MAX_ERROR_MESSAGE_BYTES = 4096;
/** A history entry keeps the head and tail of its message within this many bytes. */
export const MAX_FAILURE_MESSAGE_BYTES = 512;
/** Crash evidence: the last lines of a failing container's log, bounded in lines and bytes. */
export const LOG_TAIL_LINES = 20;
export const LOG_TAIL_BYTES = 4096;
/** Docker resets its restart backoff after a container has run 10 s; until then a restarted one is still crash-looping. */
export const CRASH_LOOP_WINDOW_MS = 10_000;
/** Prefix of the reset key set by a retry request (`persys-agent retry ID`): differs from every real key. */
export const RETRY_REQUESTED_PREFIX = 'requested:';

/**
 * Shortens `s` to at most `maxBytes` of UTF-8 by cutting out its middle (" … "), so the start (what
 * failed) and the end (usually why) both survive. Strings within the bound are returned unchanged.
 */
export function capMiddle(s: string, maxBytes: number): string {
  if (Buffer.byteLength(s, 'utf8') <= maxBytes) return s;
  const marker = ' … ';
  const budget = Math.max(0, maxBytes - Buffer.byteLength(marker, 'utf8'));
  // Never more characters than bytes are needed from either end: only those are split into code points.
  // (the loop stops at the budget, long before it could reach the seam or a surrogate cut in half).
  const chars = s.length > 2 * budget + 4 ? [...s.slice(0, budget), ...s.slice(-budget)] : [...s];
  let head = '';
  let tail = '';
  let headBytes = 0;
  let tailBytes = 0;
  for (let i = 0, j = chars.length - 1; i <= j; ) {
    const takeHead = headBytes <= tailBytes;
    const c = (takeHead ? chars[i] : chars[j]) ?? '';
    const n = Buffer.byteLength(c, 'utf8');
    if (headBytes + tailBytes + n > budget) break;
    if (takeHead) {
      head += c;
      headBytes += n;
      i++;
    } else {
      tail = c + tail;
      tailBytes += n;
      j--;
    }
  }
  return `${head}${marker}${tail}`;
}

/** The last `LOG_TAIL_LINES` lines within `LOG_TAIL_BYTES`, each line capped too. */
export function capLogTail(lines: readonly string[]): string[] {
  const out: string[] = [];
  let bytes = 0;
  for (let i = lines.length - 1; i >= 0 && out.length < LOG_TAIL_LINES; i--) {
    const line = capMiddle(lines[i] ?? '', 512);
    const n = Buffer.byteLength(line, 'utf8') + 1;
    if (bytes + n > LOG_TAIL_BYTES) break;
    bytes += n;
    out.unshift(line);
  }
  return out;
}

/** The retry budget belongs to one (revision, spec, retryToken); a change of any starts it afresh. */
export function retryResetKey(w: WorkloadBase, specHash: string): string {
  return `${w.revision ?? ''}|${specHash}|${w.retryToken ?? ''}`;
}

export interface RetryBudget extends BackoffPolicy {
  maxAttempts: number;
}

export function retryBudget(w: WorkloadBase, defaults: Config['retry']): RetryBudget {
  const r = w.retry ?? {};
  return {
    maxAttempts: r.maxAttempts ?? defaults.maxAttempts,
    initialDelayMs: (r.initialDelaySeconds ?? defaults.initialDelaySeconds) * 1000,
    maxDelayMs: (r.maxDelaySeconds ?? defaults.maxDelaySeconds) * 1000,
    multiplier: r.multiplier ?? defaults.multiplier,
  };
}

export function newRecord(w: WorkloadBase, now: Date): WorkloadRecord {
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

/**
 * Returns a copy with the phase set; phaseSince moves only when the phase really changes. The one
 * place phases change: a move the phase machine (phases.ts) refuses throws PhaseTransitionError.
 */
export function withPhase(r: WorkloadRecord, phase: Phase, message: string, now: Date): WorkloadRecord {
  checkTransition(r.id, r.phase, phase);
  const at = now.toISOString();
  return { ...r, phase, message, updatedAt: at, phaseSince: r.phase === phase ? r.phaseSince : at };
}

/** Resets the retry budget when the workload's reset key moved on. */
export function withResetKey(r: WorkloadRecord, key: string): WorkloadRecord {
  if (r.retry.resetKey === key) return r;
  return { ...r, retry: { attempts: 0, nextRetryAt: null, gaveUp: false, resetKey: key } };
}

/**
 * A person asked for a retry (`persys-agent retry ID`): the budget starts from zero now, and the
 * reset key becomes one no desired workload has, so the planner treats the workload as asked to run
 * again (also a container that exited under restart policy "no"). The error and history stay.
 */
export function withRetryRequested(r: WorkloadRecord, now: Date): WorkloadRecord {
  const at = now.toISOString();
  const next: WorkloadRecord = { ...r, retry: { attempts: 0, nextRetryAt: null, gaveUp: false, resetKey: `${RETRY_REQUESTED_PREFIX}${at}` } };
  if (r.phase === 'Failed' || r.phase === 'BackingOff') return withPhase(next, 'Pending', `retry requested at ${at}`, now);
  return { ...next, updatedAt: at };
}

/**
 * Whether the workload was asked to run again since its record was last brought in line with the
 * desired state: a retry request, or a retryToken (or revision/spec) that moved on. A record that
 * never had a key ('') was not asked.
 */
export function retryAsked(r: WorkloadRecord | undefined, key: string): boolean {
  if (!r || r.retry.resetKey === '') return false;
  return r.retry.resetKey.startsWith(RETRY_REQUESTED_PREFIX) || r.retry.resetKey !== key;
}

/**
 * A record left in a transitional phase by an agent that stopped (crash, SIGKILL, power loss) is
 * not in the middle of anything any more: back to Pending, so the planner judges it afresh from
 * what the engine holds (a created-but-unstarted container is started or replaced, never left).
 */
export function withInterrupted(r: WorkloadRecord, now: Date): WorkloadRecord {
  if (!isTransitional(r.phase)) return r;
  return withPhase(r, 'Pending', `interrupted while ${r.phase} (agent restarted); checking the engine again`, now);
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
  const summary = boundedSummary(err);
  const failures = withFailureEntry(r.failures, { at: now.toISOString(), code: err.code, message: err.message, attempt: attempts });
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

/** The error summary with its message bounded (the exact engine message survives up to the bound). */
export function boundedSummary(err: WorkloadError): ErrorSummary {
  const s = err.summary();
  return { ...s, message: capMiddle(s.message, MAX_ERROR_MESSAGE_BYTES) };
}

/** Appends to the history: newest last, at most MAX_FAILURES entries, each message bounded. */
export function withFailureEntry(failures: readonly FailureEntry[], entry: FailureEntry): FailureEntry[] {
  return [...failures, { ...entry, message: capMiddle(entry.message, MAX_FAILURE_MESSAGE_BYTES) }].slice(-MAX_FAILURES);
}

function isRecent(t: string | null | undefined, now: Date, windowMs: number): boolean {
  if (!t) return false;
  const ms = Date.parse(t);
  return Number.isFinite(ms) && ms > 0 && now.getTime() - ms < windowMs;
}

function restarts(n: number | undefined): string {
  return n === undefined ? '' : `; restarted ${n} time${n === 1 ? '' : 's'} by the restart policy`;
}

/**
 * Whether a running workload is still crash-looping: the engine restarted it and it has not stayed
 * up for CRASH_LOOP_WINDOW_MS since. Needs restartCount and startedAt, which only inspect() gives.
 */
export function isCrashLooping(o: ObservedWorkload, now: Date): boolean {
  return o.state === 'restarting' || (o.state === 'running' && (o.restartCount ?? 0) > 0 && isRecent(o.startedAt, now, CRASH_LOOP_WINDOW_MS));
}

/**
 * The error a workload that failed on its own (not in an apply) carries: the engine's facts about
 * its last exit, in words. OOMKilled wins over the exit code (137 is just SIGKILL).
 */
export function exitError(o: ObservedWorkload, crashLoop: boolean, lastExitCode?: number | null): WorkloadError | null {
  const code = o.exitCode ?? lastExitCode ?? null;
  const details: Record<string, string | number | boolean> = {};
  if (code !== null) details.exitCode = code;
  if (o.oomKilled !== undefined) details.oomKilled = o.oomKilled;
  if (o.restartCount !== undefined) details.restartCount = o.restartCount;
  const exit = `exited with code ${code ?? 'unknown'}`;
  if (o.oomKilled === true) {
    return new WorkloadError('OUT_OF_MEMORY', `${exit} (OOMKilled: the kernel killed it at its memory limit)${restarts(o.restartCount)}`, { details });
  }
  if (crashLoop) return new WorkloadError('CRASH_LOOP', `${exit}${restarts(o.restartCount)}`, { details });
  if (code !== null && code !== 0) return new WorkloadError('CONTAINER_EXITED', exit, { details });
  return null;
}

/** The phase a settled workload is in, judged from what the engine reports. */
export function phaseFromObserved(
  o: ObservedWorkload | undefined,
  desiredState: 'running' | 'stopped',
  now: Date = new Date(),
): { phase: Phase; actual: ActualState; message: string } {
  if (!o) return { phase: 'Pending', actual: 'missing', message: 'not found on engine' };
  switch (o.state) {
    case 'running':
      if (desiredState !== 'running') return { phase: 'Running', actual: 'running', message: 'running; desired stopped' };
      if (isCrashLooping(o, now)) {
        return { phase: 'CrashLoop', actual: 'running', message: `crash-looping: restarted ${o.restartCount ?? 0} times, up for less than ${CRASH_LOOP_WINDOW_MS / 1000} s` };
      }
      return { phase: 'Running', actual: 'running', message: '' };
    case 'restarting':
      return { phase: 'CrashLoop', actual: 'restarting', message: `restarting after exit code ${o.exitCode ?? 'unknown'}${restarts(o.restartCount)}` };
    case 'exited':
      if (desiredState === 'stopped') return { phase: 'Stopped', actual: 'exited', message: '' };
      return o.exitCode === 0
        ? { phase: 'Completed', actual: 'exited', message: 'exited with code 0' }
        : { phase: 'Failed', actual: 'exited', message: `exited with code ${o.exitCode ?? 'unknown'}${o.oomKilled === true ? ' (OOMKilled)' : ''}` };
    case 'created':
    case 'stopped':
      return { phase: desiredState === 'stopped' ? 'Stopped' : 'Pending', actual: o.state, message: '' };
    case 'paused':
      return { phase: 'Stopped', actual: 'paused', message: 'paused outside the agent' };
    default:
      return { phase: 'Pending', actual: o.state, message: '' };
  }
}

/** The record with what the engine reports of the object: its state, id and (for types that have it) crash evidence. */
export function withObserved(r: WorkloadRecord, o: ObservedWorkload, d: Pick<TypeDescriptor, 'capabilities'>): WorkloadRecord {
  const next: WorkloadRecord = { ...r, actualState: o.state, runtimeId: o.runtimeId };
  if (!d.capabilities.exitEvidence) return next;
  // A crash-looping workload is "running" between restarts, when engines report no exit code:
  // the last one seen is the evidence, so a null does not wipe it.
  const keepExit = o.exitCode === null && o.state !== 'exited' && (o.restartCount ?? 0) > 0;
  const evidence = {
    ...r.evidence,
    ...(o.exitCode !== undefined && !keepExit ? { exitCode: o.exitCode } : {}),
    ...(o.oomKilled !== undefined ? { oomKilled: o.oomKilled } : {}),
    ...(o.restartCount !== undefined ? { restartCount: o.restartCount } : {}),
    ...(o.startedAt !== undefined ? { startedAt: o.startedAt } : {}),
    ...(o.finishedAt !== undefined ? { finishedAt: o.finishedAt } : {}),
  };
  return { ...next, evidence };
}
