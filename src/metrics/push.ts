/**
 * Push mode, for hosts a Prometheus cannot reach (NAT): the same registry is PUT to a Pushgateway
 * every interval under job `persys_agent` and the grouping key `node_id=<node id>`. PUT replaces
 * the whole group, so series of removed workloads disappear from the gateway too. Failures back off
 * (doubling from 1 s, full jitter, capped at the interval) and are counted; on a clean shutdown the
 * group is deleted when configured, else pushed one last time.
 */
import { Pushgateway, type Registry } from 'prom-client';

import type { Logger } from '../log.js';
import { backoffDelayMs, sleep, type BackoffPolicy } from '../util/backoff.js';

export const PUSH_JOB = 'persys_agent';

export interface MetricsPusherOptions {
  url: string;
  nodeId: string;
  registry: Registry;
  intervalSeconds: number;
  deleteOnShutdown: boolean;
  logger: Logger;
  /** Called with each push's outcome (metrics). */
  onResult?: (ok: boolean) => void;
  /** Bound of one request. Default 10 s (or the interval, if shorter). */
  timeoutMs?: number;
  random?: () => number;
}

export class MetricsPusher {
  private readonly gateway: Pushgateway<'text/plain; version=0.0.4; charset=utf-8'>;
  private readonly policy: BackoffPolicy;
  private readonly timeoutMs: number;
  private running: Promise<void> | null = null;
  failures = 0;
  lastError: string | null = null;
  pushes = { ok: 0, error: 0 };

  constructor(private readonly opts: MetricsPusherOptions) {
    this.timeoutMs = opts.timeoutMs ?? Math.min(10_000, Math.max(1000, opts.intervalSeconds * 1000));
    this.gateway = new Pushgateway(opts.url, { timeout: this.timeoutMs }, opts.registry);
    this.policy = { initialDelayMs: 1000, multiplier: 2, maxDelayMs: Math.max(1000, opts.intervalSeconds * 1000) };
  }

  private get params() {
    return { jobName: PUSH_JOB, groupings: { node_id: this.opts.nodeId } };
  }

  /** One PUT of the whole registry; records the outcome, never throws. */
  async pushOnce(): Promise<boolean> {
    try {
      await this.gateway.push(this.params);
      this.pushes.ok += 1;
      this.opts.onResult?.(true);
      if (this.failures > 0) this.opts.logger.info({ after: this.failures }, 'metrics push delivered again');
      this.failures = 0;
      this.lastError = null;
      return true;
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      this.pushes.error += 1;
      this.failures += 1;
      this.opts.onResult?.(false);
      // WARN when the reason is new; the same failure again stays at DEBUG.
      (this.lastError !== message ? this.opts.logger.warn.bind(this.opts.logger) : this.opts.logger.debug.bind(this.opts.logger))(
        { failures: this.failures, err: message },
        'metrics push failed; backing off',
      );
      this.lastError = message;
      return false;
    }
  }

  /** Pushes now, then every interval (or sooner, backing off, after a failure) until the signal aborts. */
  start(signal: AbortSignal): Promise<void> {
    this.running ??= (async () => {
      while (!signal.aborted) {
        const ok = await this.pushOnce();
        const delay = ok ? this.opts.intervalSeconds * 1000 : Math.max(100, backoffDelayMs(this.policy, this.failures, this.opts.random));
        await sleep(delay, signal);
      }
    })();
    return this.running;
  }

  /** Clean shutdown: waits for the loop, then deletes the group (deleteOnShutdown) or pushes the final values. */
  async stop(): Promise<void> {
    await this.running;
    if (!this.opts.deleteOnShutdown) {
      await this.pushOnce();
      return;
    }
    try {
      await this.gateway.delete(this.params);
      this.opts.logger.debug({ nodeId: this.opts.nodeId }, 'metrics group deleted from the Pushgateway');
    } catch (err) {
      this.opts.logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'could not delete the metrics group from the Pushgateway');
    }
  }
}
