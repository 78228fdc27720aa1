import type { Logger } from '../log.js';
import { sleep } from '../util/backoff.js';

export interface DrainOptions {
  /** Settles when no cycle is running any more. */
  idle: () => Promise<void>;
  /** Workload ids with a step in flight, for the log. */
  inFlight: () => string[];
  /** Aborts the running steps (their signal). */
  abortSteps: () => void;
  /** Settles when the aborted steps' engine calls and their cleanups have ended (bounded by the caller). */
  quiesce: (ms: number) => Promise<void>;
  drainSeconds: number;
  logger: Logger;
  /** After the abort: how long aborted steps may take to clean up what they made. */
  cleanupMs?: number;
}

export type DrainOutcome = 'idle' | 'drained' | 'aborted';

/** Resolves true when `p` settles within `ms`, false otherwise; the timer never outlives the wait. */
async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  const giveUp = new AbortController();
  try {
    return await Promise.race([p.then(() => true, () => true), sleep(ms, giveUp.signal).then(() => false, () => false)]);
  } finally {
    giveUp.abort();
  }
}

/**
 * The SIGTERM drain. The caller has already stopped triggers and new steps (the loop's signal);
 * here running steps may finish within drainSeconds, then the rest are aborted and given a short,
 * bounded time to clean up (an aborted create removes what it made), so the process exits well
 * inside systemd's stop timeout.
 */
export async function drainSteps(o: DrainOptions): Promise<DrainOutcome> {
  const running = o.inFlight();
  if (running.length === 0 && (await within(o.idle(), 0))) return 'idle';
  o.logger.info({ inFlight: running, drainSeconds: o.drainSeconds }, `draining: ${running.length} step(s) may finish within ${o.drainSeconds} s`);
  if (await within(o.idle(), o.drainSeconds * 1000)) {
    await o.quiesce(o.cleanupMs ?? 5000);
    return 'drained';
  }
  o.logger.warn({ inFlight: o.inFlight(), drainSeconds: o.drainSeconds }, `drain time (${o.drainSeconds} s) is up; aborting the running steps`);
  o.abortSteps();
  const cleanupMs = o.cleanupMs ?? 10_000;
  await within(o.idle(), cleanupMs);
  await o.quiesce(cleanupMs);
  return 'aborted';
}
