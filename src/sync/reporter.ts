/**
 * Pushes the node's full status snapshot: after a change (debounced) and as a heartbeat.
 *
 * There is never a queue. The reporter only remembers THAT something changed and WHEN the next
 * attempt is due; the report itself is built at send time from the live state, so a retry after a
 * failure sends the newest truth (with a new seq), not a stale copy, and memory stays bounded no
 * matter how long the central side is down.
 */
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../log.js';
import type { StatusReport } from '../spec/status-report.js';
import { backoffDelayMs, delayWithRetryAfter, parseRetryAfter, type BackoffPolicy } from '../util/backoff.js';
import { writeFileAtomic } from '../util/atomic-write.js';
import { WakeableSleep } from '../util/wakeable-sleep.js';
import {
  checkUrlAllowed,
  describeNetworkError,
  headerValue,
  linkSignals,
  readSnippet,
  redactUrl,
  RequestDeadlineError,
  UrlNotAllowedError,
  type HttpClient,
} from './http-client.js';
import { ConfigError } from '../errors/index.js';

export interface StatusReporterOptions {
  /** Where reports go, `{nodeId}` already expanded: https://, http:// (loopback) or file://. */
  url: string;
  /** Needed for http(s) URLs. */
  httpClient?: HttpClient;
  /** A report is sent at least this often (fractions allowed, for tests). */
  heartbeatSeconds: number;
  /** Changes within this window after the first markDirty() go out as one report. */
  debounceMs: number;
  /** Builds the full snapshot for `seq`; called once per attempt, at send time. */
  buildReport: (seq: number) => StatusReport;
  /** The last seq used (persisted); read once, on the first send. */
  loadSeq: () => number;
  /**
   * Persists a seq before the report carrying it is sent, so a restart never reuses one. Called
   * after the report was built: it may also make the state that report shows durable.
   */
  saveSeq: (seq: number) => void | Promise<void>;
  logger: Logger;
  /** Overrides defaultReporterBackoff. */
  backoff?: BackoffPolicy;
  /** Injectable randomness for the backoff jitter (tests). */
  random?: () => number;
  /** Upper bound of flush() on top of the caller's signal. Default 5 s. */
  flushTimeoutMs?: number;
}

/**
 * Send-failure backoff: 1 s doubling to 60 s, full jitter. Not tied to the heartbeat: a node with a
 * daily heartbeat still wants its changed status through within a minute of the server's return.
 */
export const defaultReporterBackoff: BackoffPolicy = { initialDelayMs: 1000, multiplier: 2, maxDelayMs: 60_000 };

/** Retry-After is honoured up to this; a server cannot silence a node for a day. */
export const REPORT_RETRY_AFTER_CAP_MS = 10 * 60_000;

const MIN_RETRY_DELAY_MS = 100;
const ERROR_SNIPPET_BYTES = 256;

class SendError extends Error {
  readonly retryAfterMs: number | undefined;
  constructor(message: string, retryAfterMs?: number, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'SendError';
    this.retryAfterMs = retryAfterMs;
  }
}

export class StatusReporter {
  readonly #opts: StatusReporterOptions;
  readonly #url: URL;
  readonly #policy: BackoffPolicy;
  readonly #random: () => number;
  #seq: number | null = null;
  /** When the first unsent change happened (debounce runs from here), null when clean. */
  #dirtySince: number | null = null;
  /** Set after a failed send: nothing goes out before this (backoff / Retry-After). */
  #retryAt: number | null = null;
  #lastAttemptAt: number | null = null;
  #failures = 0;
  readonly #sleeper = new WakeableSleep();
  /** Serialises sends (loop and flush) so seqs reach the server in order. */
  #sendChain: Promise<unknown> = Promise.resolve();
  #running: Promise<void> | null = null;

  lastSuccessAt: Date | null = null;
  lastError: { message: string; at: Date } | null = null;
  /** Sends by result, for metrics. */
  readonly sends = { ok: 0, error: 0 };

  constructor(opts: StatusReporterOptions) {
    this.#opts = opts;
    try {
      this.#url = new URL(opts.url);
      checkUrlAllowed(this.#url, opts.httpClient?.allowInsecureHttp ?? false);
    } catch (err) {
      throw new ConfigError([`status.url: ${err instanceof UrlNotAllowedError ? err.message : `not a valid URL: ${opts.url}`}`]);
    }
    if ((this.#url.protocol === 'https:' || this.#url.protocol === 'http:') && opts.httpClient === undefined) {
      throw new Error('StatusReporter: an http(s) status URL needs an httpClient');
    }
    if (!(opts.heartbeatSeconds > 0)) throw new Error(`StatusReporter: heartbeatSeconds must be positive, got ${opts.heartbeatSeconds}`);
    this.#policy = opts.backoff ?? defaultReporterBackoff;
    this.#random = opts.random ?? Math.random;
  }

  /** Consecutive failed sends. */
  get consecutiveFailures(): number {
    return this.#failures;
  }

  /** Something in the snapshot changed: a report goes out within debounceMs (or when backoff allows). */
  markDirty(): void {
    if (this.#dirtySince === null) {
      this.#dirtySince = Date.now();
      this.#sleeper.wake();
    }
  }

  /**
   * Runs until `signal` aborts; resolves then (never rejects). The first report goes out right
   * after the debounce window, so the central side learns at once that the node is up.
   */
  start(signal: AbortSignal): Promise<void> {
    this.#running ??= this.#loop(signal);
    return this.#running;
  }

  /**
   * Sends one final report (shutdown), after any send in flight, bounded by `signal` and
   * flushTimeoutMs. Resolves true when it was accepted; never rejects.
   */
  async flush(signal: AbortSignal): Promise<boolean> {
    const linked = linkSignals([signal], this.#opts.flushTimeoutMs ?? 5000);
    try {
      return await this.#serialised(() => this.#attempt(linked.signal));
    } finally {
      linked.dispose();
    }
  }

  async #loop(signal: AbortSignal): Promise<void> {
    this.markDirty();
    while (!signal.aborted) {
      const now = Date.now();
      const due = this.#nextDueAt();
      if (now < due) {
        await this.#sleeper.sleep(due - now, signal);
        continue; // woken or slept: recompute, markDirty may have moved the due time
      }
      await this.#serialised(() => this.#attempt(signal));
    }
  }

  /** When the next report is due: backoff first, else the debounce of a change, else the heartbeat. */
  #nextDueAt(): number {
    if (this.#retryAt !== null) return this.#retryAt;
    const heartbeat = (this.#lastAttemptAt ?? Date.now()) + this.#opts.heartbeatSeconds * 1000;
    if (this.#dirtySince !== null) return Math.min(heartbeat, this.#dirtySince + this.#opts.debounceMs);
    return heartbeat;
  }

  #serialised<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#sendChain.then(fn, fn);
    this.#sendChain = next.catch(() => undefined);
    return next;
  }

  /** One attempt: new seq (persisted), fresh snapshot, send. Records the outcome; never throws. */
  async #attempt(signal: AbortSignal): Promise<boolean> {
    const { logger } = this.#opts;
    const startedAt = Date.now();
    // Cleared before building: a change during the send marks dirty again and gets its own report.
    this.#dirtySince = null;
    let seq: number | undefined;
    try {
      this.#seq ??= this.#opts.loadSeq();
      seq = this.#seq + 1;
      // Snapshot first, then persist: saveSeq resolves once everything changed before it was called
      // is on disk, so what this report says (retry schedules, failure history) is durable by the
      // time it is sent. Built after saveSeq, a change landing in between could be reported and lost.
      const body = JSON.stringify(this.#opts.buildReport(seq));
      await this.#opts.saveSeq(seq);
      this.#seq = seq;
      await this.#deliver(body, signal);
      this.#lastAttemptAt = Date.now();
      this.#retryAt = null;
      this.lastSuccessAt = new Date();
      this.sends.ok += 1;
      if (this.#failures > 0) logger.info({ seq, after: this.#failures }, 'status report delivered again');
      else logger.debug({ seq }, 'status report sent');
      this.#failures = 0;
      return true;
    } catch (err) {
      this.#lastAttemptAt = Date.now();
      // The change that made us send has not been delivered: keep it pending.
      this.#dirtySince ??= startedAt;
      if (signal.aborted && !(err instanceof SendError) && !(signal.reason instanceof RequestDeadlineError)) {
        // Shutdown cut the send short: neither a failure to report nor a reason to back off.
        return false;
      }
      const message = err instanceof Error ? err.message : String(err);
      const retryAfterMs = err instanceof SendError ? err.retryAfterMs : undefined;
      this.#failures += 1;
      this.sends.error += 1;
      const own = Math.max(MIN_RETRY_DELAY_MS, backoffDelayMs(this.#policy, this.#failures, this.#random));
      const delayMs = delayWithRetryAfter(own, retryAfterMs, Math.max(this.#policy.maxDelayMs, REPORT_RETRY_AFTER_CAP_MS));
      this.#retryAt = Date.now() + delayMs;
      const first = this.lastError === null || this.lastError.message !== message || this.#failures === 1;
      this.lastError = { message, at: new Date() };
      // WARN when the reason is new; repeats of the same failure stay at DEBUG.
      (first ? logger.warn.bind(logger) : logger.debug.bind(logger))(
        { seq, failures: this.#failures, delayMs, err: message },
        'status report not delivered; will retry with the newest snapshot',
      );
      return false;
    }
  }

  async #deliver(body: string, signal: AbortSignal): Promise<void> {
    const url = this.#url;
    if (url.protocol === 'file:') {
      await writeStatusFile(fileURLToPath(url), body, signal);
      return;
    }
    const client = this.#opts.httpClient;
    if (client === undefined) throw new SendError('no HTTP client for the status URL');
    const shown = redactUrl(url);
    try {
      await client.request(
        url,
        { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json' }, body, signal },
        async (res, answeredBy) => {
          if (res.statusCode >= 200 && res.statusCode <= 299) {
            await res.body.dump();
            return;
          }
          const where = answeredBy.href === url.href ? shown : `${shown} (redirected to ${redactUrl(answeredBy)})`;
          const snippet = await readSnippet(res.body, ERROR_SNIPPET_BYTES);
          const retryAfterMs =
            res.statusCode === 429 || res.statusCode === 503 ? parseRetryAfter(headerValue(res.headers, 'retry-after')) : undefined;
          throw new SendError(
            `POST ${where}: ${res.statusCode}${res.statusText ? ` ${res.statusText}` : ''}${snippet ? `: ${snippet}` : ''}`,
            retryAfterMs,
          );
        },
      );
    } catch (err) {
      if (err instanceof SendError) throw err;
      if (signal.aborted && !(err instanceof RequestDeadlineError)) throw err;
      throw new SendError(`POST ${shown}: ${describeNetworkError(err)}`, undefined, err);
    }
  }

}

/**
 * Writes the status file through the one atomic writer (temp beside it, mode 0600: reports may
 * name hosts and IPs; fsync, rename, fsync dir), so a reader never sees half a report. The
 * directory is created 0700 if missing.
 */
async function writeStatusFile(path: string, content: string, signal: AbortSignal): Promise<void> {
  if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new Error('aborted');
  try {
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    await writeFileAtomic(path, content, { mode: 0o600 });
  } catch (err) {
    throw new SendError(`write ${path}: ${describeNetworkError(err)}`, undefined, err);
  }
}
