/**
 * Drives DesiredStateSource.pull() until its signal aborts. One code path serves static hosts and
 * long-poll servers: every pull sends If-None-Match and (when configured) `Prefer: wait=N`. Only an
 * answer carrying `Preference-Applied: wait=N` says the server holds requests, and only then do we
 * go straight back; anything else (a static host, however slow its 304) waits the jittered poll
 * interval, so a static host gets one request per interval. Elapsed time is never the signal: a
 * slow 304 from nginx behind a busy link looked "held" and was re-polled at once.
 * Failures back off exponentially with full jitter and honour Retry-After.
 */
import { SourceError } from '../errors/index.js';
import type { Logger } from '../log.js';
import { backoffDelayMs, delayWithRetryAfter, jitter, type BackoffPolicy } from '../util/backoff.js';
import { WakeableSleep } from '../util/wakeable-sleep.js';
import type { PullOptions, PullResult } from './source.js';

export type PollOutcome = PullResult | SourceError;

export interface SourcePollerOptions {
  source: { pull(opts: PullOptions): Promise<PullResult> };
  nodeId: string;
  pollIntervalSeconds: number;
  /** 0 disables long-poll; otherwise sent as `Prefer: wait=N`. */
  longPollSeconds: number;
  /** Read before every pull: what the caller has stored (the ETag and generation in force). */
  state: () => { currentEtag: string | null; storedGeneration: number | null };
  /**
   * Called with every outcome, in order, before the next pull starts (awaited), so state() sees
   * what the caller stored. A throw here is logged and counted as a failure (backs off).
   */
  onResult: (outcome: PollOutcome) => void | Promise<void>;
  logger?: Logger;
  /** Overrides the default policy (see defaultSourceBackoff). */
  backoff?: BackoffPolicy;
  /** Injectable randomness for jitter (tests). */
  random?: () => number;
}

/**
 * Error backoff: first retry within 1 s, doubling, capped at max(pollInterval, 60 s). The cap means
 * a failing node never retries less often than it would poll when healthy, and the 60 s floor of
 * the cap keeps a fleet with a short poll interval from hammering a struggling server every second.
 */
export function defaultSourceBackoff(pollIntervalSeconds: number): BackoffPolicy {
  return { initialDelayMs: 1000, multiplier: 2, maxDelayMs: Math.max(pollIntervalSeconds * 1000, 60_000) };
}

/** A server may ask for more than our own cap with Retry-After, but not for more than this. */
export const RETRY_AFTER_CAP_MS = 10 * 60_000;

/** Shortest sleep after a failure: full jitter can draw ~0, and a zero-delay retry loop helps nobody. */
const MIN_ERROR_DELAY_MS = 100;

/**
 * Shortest gap between the starts of two long-polls. Not a "held" test: a server that claims
 * Preference-Applied but answers 304 at once would otherwise be re-polled in a tight loop.
 */
export const MIN_LONG_POLL_GAP_MS = 250;

/**
 * The wait asked for: `longPollSeconds` minus up to 1/16 of it (Consul's jitter fraction), never
 * more than asked, so 10,000 agents that started together drift apart instead of reconnecting in
 * step when their holds expire. Integer seconds, at least 1.
 */
export function jitteredWaitSeconds(longPollSeconds: number, random: () => number = Math.random): number {
  const n = Math.floor(longPollSeconds);
  if (n <= 0) return 0;
  return Math.max(1, n - Math.floor(random() * (n / 16)));
}

/** True when the answer says the server held (or would hold) the request: `Preference-Applied: wait=N`. */
export function serverHoldsRequests(outcome: PollOutcome): boolean {
  return !(outcome instanceof SourceError) && outcome.waitApplied !== undefined && outcome.waitApplied > 0;
}

export class SourcePoller {
  readonly #opts: SourcePollerOptions;
  readonly #policy: BackoffPolicy;
  readonly #random: () => number;
  #failures = 0;
  readonly #sleeper = new WakeableSleep();
  #triggered = false;
  #running: Promise<void> | null = null;
  #lastOutcomeAt: Date | null = null;
  /** pullNow() callers, by request number; a pull covers the requests made before it started. */
  #requested = 0;
  #waiters: { seq: number; resolve: () => void }[] = [];

  constructor(opts: SourcePollerOptions) {
    this.#opts = opts;
    this.#policy = opts.backoff ?? defaultSourceBackoff(opts.pollIntervalSeconds);
    this.#random = opts.random ?? Math.random;
  }

  /** Consecutive failed pulls (0 after any success, including a 304). */
  get consecutiveFailures(): number {
    return this.#failures;
  }

  /** When the last pull finished (success or failure). */
  get lastOutcomeAt(): Date | null {
    return this.#lastOutcomeAt;
  }

  /**
   * Pull as soon as possible: ends the current sleep (poll interval or backoff; an operator's
   * "sync now" is worth more than our backoff). A pull in flight is not interrupted, but another one
   * follows it at once.
   */
  triggerNow(): void {
    this.#triggered = true;
    this.#sleeper.wake();
  }

  /**
   * triggerNow(), and settles once a pull that started after this call has been handled (onResult
   * done), or at shutdown: `/v1/sync` answers with what that pull brought, not with an older one.
   */
  pullNow(): Promise<void> {
    const seq = ++this.#requested;
    const handled = new Promise<void>((resolve) => this.#waiters.push({ seq, resolve }));
    this.triggerNow();
    return handled;
  }

  #release(upTo: number): void {
    const keep: { seq: number; resolve: () => void }[] = [];
    for (const w of this.#waiters) {
      if (w.seq <= upTo) w.resolve();
      else keep.push(w);
    }
    this.#waiters = keep;
  }

  /** Loops until `signal` aborts; resolves then (never rejects). Calling it twice returns the same run. */
  run(signal: AbortSignal): Promise<void> {
    this.#running ??= this.#loop(signal);
    return this.#running;
  }

  async #loop(signal: AbortSignal): Promise<void> {
    try {
      await this.#pullUntilAborted(signal);
    } finally {
      this.#release(this.#requested);
    }
  }

  async #pullUntilAborted(signal: AbortSignal): Promise<void> {
    const { logger } = this.#opts;
    while (!signal.aborted) {
      this.#triggered = false;
      const covers = this.#requested;
      const started = performance.now();
      let outcome: PollOutcome;
      try {
        const state = this.#opts.state();
        outcome = await this.#opts.source.pull({
          currentEtag: state.currentEtag,
          storedGeneration: state.storedGeneration,
          nodeId: this.#opts.nodeId,
          signal,
          ...(this.#opts.longPollSeconds > 0 ? { waitSeconds: jitteredWaitSeconds(this.#opts.longPollSeconds, this.#random) } : {}),
        });
      } catch (err) {
        outcome =
          err instanceof SourceError
            ? err
            : new SourceError('INTERNAL', `pull failed unexpectedly: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      }
      // A pull cut short by shutdown is not a result worth reporting.
      if (signal.aborted) break;
      const elapsedMs = performance.now() - started;
      this.#lastOutcomeAt = new Date();
      let failed = outcome instanceof SourceError;
      this.#failures = failed ? this.#failures + 1 : 0;
      try {
        await this.#opts.onResult(outcome);
      } catch (err) {
        logger?.warn({ err: err instanceof Error ? err.message : String(err) }, 'handling a desired-state pull failed');
        if (!failed) {
          failed = true;
          this.#failures += 1;
        }
      }
      this.#release(covers);
      if (signal.aborted) break;

      let delayMs: number;
      if (failed) {
        const own = Math.max(MIN_ERROR_DELAY_MS, backoffDelayMs(this.#policy, this.#failures, this.#random));
        const retryAfterMs = outcome instanceof SourceError ? outcome.retryAfterMs : undefined;
        delayMs = delayWithRetryAfter(own, retryAfterMs, Math.max(this.#policy.maxDelayMs, RETRY_AFTER_CAP_MS));
        logger?.debug({ failures: this.#failures, delayMs, retryAfterMs }, 'desired-state pull failed; backing off');
      } else if (this.#opts.longPollSeconds > 0 && serverHoldsRequests(outcome)) {
        // The server said it holds requests: ask again right away (after a short floor, so a
        // server that claims to hold but does not cannot make us spin).
        delayMs = Math.max(0, MIN_LONG_POLL_GAP_MS - elapsedMs);
      } else {
        delayMs = jitter(this.#opts.pollIntervalSeconds * 1000, 0.1, this.#random);
      }
      if (this.#triggered || delayMs === 0) continue;
      await this.#sleeper.sleep(delayMs, signal);
    }
  }

}
