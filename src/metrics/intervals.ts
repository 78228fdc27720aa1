import type { Config } from '../config/schema.js';

/**
 * The configured intervals exposed as persys_config_interval_seconds{setting}, so alert rules can
 * say "N intervals" instead of a fixed number of seconds that would page a fleet with slower loops.
 */
export function configIntervals(config: Config): Record<string, number> {
  const out: Record<string, number> = {
    'source.pollIntervalSeconds': config.source.pollIntervalSeconds,
    'source.longPollSeconds': config.source.longPollSeconds,
    'status.heartbeatSeconds': config.status.heartbeatSeconds,
    'reconcile.intervalSeconds': config.reconcile.intervalSeconds,
    'metrics.statsIntervalSeconds': config.metrics.statsIntervalSeconds,
    'gc.intervalSeconds': config.gc.intervalSeconds,
  };
  if (config.metrics.push.url) out['metrics.push.intervalSeconds'] = config.metrics.push.intervalSeconds;
  return out;
}
