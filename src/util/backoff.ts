/**
 * Exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff And Jitter"):
 * delay = random(0, min(cap, base * multiplier^(attempt-1))). Full jitter spreads a fleet's retries
 * so a recovering server is not hit by every node at the same instant.
 */
export interface BackoffPolicy {
  initialDelayMs: number;
  maxDelayMs: number;
  multiplier: number;
}

/** The ceiling of the delay before attempt `attempt` (1 = first retry). */
export function backoffCeilingMs(policy: BackoffPolicy, attempt: number): number {
  const n = Math.max(1, Math.floor(attempt));
  // Guard against overflow to Infinity for large attempt counts.
  const exp = Math.min(policy.initialDelayMs * Math.pow(policy.multiplier, n - 1), Number.MAX_SAFE_INTEGER);
  return Math.min(policy.maxDelayMs, exp);
}

/** Full-jitter delay in [0, ceiling]; `random` is injectable for tests. */
export function backoffDelayMs(policy: BackoffPolicy, attempt: number, random: () => number = Math.random): number {
  const ceiling = backoffCeilingMs(policy, attempt);
  const r = Math.min(Math.max(random(), 0), 1);
  return Math.round(r * ceiling);
}

/** Delay honouring a server's Retry-After when it asks for more than our own backoff. */
export function delayWithRetryAfter(ownDelayMs: number, retryAfterMs: number | undefined, capMs: number): number {
  if (retryAfterMs === undefined || !Number.isFinite(retryAfterMs) || retryAfterMs < 0) return ownDelayMs;
  return Math.min(Math.max(ownDelayMs, retryAfterMs), Math.max(capMs, ownDelayMs));
}

/** Parses Retry-After (delta-seconds or HTTP-date) into milliseconds from `now`. */
export function parseRetryAfter(value: string | null | undefined, now: Date = new Date()): number | undefined {
  if (!value) return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const at = Date.parse(trimmed);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - now.getTime());
}

/** Sleeps `ms` or until the signal aborts (then resolves early, never rejects). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, Math.max(0, ms));
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** Jitters a period by +-fraction so a fleet's polls do not line up. */
export function jitter(ms: number, fraction = 0.1, random: () => number = Math.random): number {
  return Math.max(0, Math.round(ms * (1 - fraction + 2 * fraction * random())));
}
