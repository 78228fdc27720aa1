import * as v from 'valibot';
import type { ActualState } from '../../spec/status-report.js';
import type { ReportBlock } from '../runtime.js';

const d = v.description;

/** One service of a compose app, as the engine last showed it. */
export interface ServiceStatus {
  name: string;
  containerIds: string[];
  state: ActualState;
  health?: 'healthy' | 'unhealthy' | 'starting';
  exitCode?: number;
  restarts?: number;
  error?: string;
  oomKilled?: boolean;
  finishedAt?: string;
  logTail?: string[];
}

interface Live {
  services: ServiceStatus[];
  volumesKept?: string[];
}

const isLive = (x: unknown): x is Live => typeof x === 'object' && x !== null && Array.isArray((x as Live).services);

/** The status report's `compose` block: each service's state, and the volumes a removal kept. */
export const composeReportBlock: ReportBlock = {
  key: 'compose',
  description: 'Per-service facts of a compose app (compose workloads).',
  schema: v.object({
    services: v.pipe(
      v.array(
        v.object({
          name: v.pipe(v.string(), d('Service name in the compose file.')),
          containerIds: v.pipe(v.array(v.string()), d('Its containers (one per service).')),
          state: v.pipe(v.string(), d('running, exited, created, restarting, ...')),
          health: v.pipe(v.optional(v.string()), d('Docker health status when the service has a healthcheck.')),
          exitCode: v.pipe(v.optional(v.number()), d('Exit code of the last run, when it exited.')),
          restarts: v.pipe(v.optional(v.number()), d('Restarts by the Docker restart policy.')),
          error: v.pipe(v.optional(v.string()), d("A failing service's engine error, or what its exit or health says.")),
          oomKilled: v.pipe(v.optional(v.boolean()), d('A failing service was killed for exceeding its memory limit.')),
          finishedAt: v.pipe(v.optional(v.string()), d('When a failing service last stopped (as Docker reports it).')),
          logTail: v.pipe(v.optional(v.array(v.string())), d("A failing service's last log lines.")),
        }),
      ),
      d('Services in dependency order.'),
    ),
    volumesKept: v.pipe(v.optional(v.array(v.string())), d('Named volumes kept when the app was removed (volumes: keep).')),
  }),
  build(f) {
    if (!isLive(f.live)) return undefined;
    const out: Record<string, unknown> = { services: f.live.services };
    if (f.live.volumesKept) out.volumesKept = f.live.volumesKept;
    return out;
  },
  shrink(block) {
    const services = Array.isArray(block.services) ? (block.services as ServiceStatus[]) : [];
    // Errors cut to 200 characters, log tails to the last 5 lines of at most 200.
    return {
      ...block,
      services: services.map((s) => {
        const out: ServiceStatus = { ...s };
        if (s.error) out.error = s.error.slice(0, 200);
        if (s.logTail) out.logTail = s.logTail.slice(-5).map((l) => (l.length > 200 ? `${l.slice(0, 200)} …` : l));
        return out;
      }),
    };
  },
};
