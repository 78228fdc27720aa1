import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';
import type { Logger } from '../log.js';
import { listenError, ListenError } from '../util/listen-error.js';
import type { ReadinessCheck } from './readiness.js';

export interface MetricsServerDeps {
  registry: Registry;
  /** Liveness: the process and its event loop are alive; never depends on the network. */
  alive: () => boolean;
  /** Readiness per component. */
  ready: () => Promise<Record<string, ReadinessCheck>>;
  logger: Logger;
}

export function parseListen(listen: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(listen);
  if (!m) throw new Error(`metrics.listen: cannot parse "${listen}"`);
  const port = Number(m[3]);
  // The schema allows up to 5 digits; 65536-99999 would make listen() throw a RangeError.
  if (port > 65535) throw new ListenError('metrics.listen', listen, undefined, `cannot listen on ${listen} (metrics.listen): port ${port} is above 65535; set metrics.listen to host:port with a port of 0-65535, or "off"`);
  return { host: m[1] ?? m[2] ?? '127.0.0.1', port };
}

/** What to do about a metrics address that cannot be opened. */
const METRICS_FIX = 'stop what holds it, or set metrics.listen (PERSYS_METRICS_LISTEN) to a free host:port or "off"';

/** GET /metrics, /healthz, /readyz and /health (alias of /readyz kept from the first design). */
export async function startMetricsServer(listen: string, deps: MetricsServerDeps): Promise<{ server: Server; port: number; close: () => Promise<void> }> {
  const { host, port } = parseListen(listen);
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    void (async () => {
      try {
        if (path === '/metrics') {
          const body = await deps.registry.metrics();
          res.writeHead(200, { 'content-type': deps.registry.contentType }).end(body);
        } else if (path === '/healthz') {
          const ok = deps.alive();
          res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' }).end(ok ? 'ok\n' : 'not alive\n');
        } else if (path === '/readyz' || path === '/health') {
          const checks = await deps.ready();
          const ok = Object.values(checks).every((c) => c.ok);
          res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify({ status: ok ? 'ready' : 'not ready', checks }) + '\n');
        } else {
          res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
        }
      } catch (err) {
        deps.logger.warn({ err: err instanceof Error ? err.message : String(err), path }, 'metrics endpoint failed');
        if (!res.headersSent) res.writeHead(500).end();
      }
    })();
  });
  // A busy or foreign address is the host's setup, not a crash: one line naming it and the key (exit 2).
  await new Promise<void>((resolve, reject) => {
    const fail = (err: unknown) => reject(listenError('metrics.listen', listen, err, METRICS_FIX));
    server.once('error', fail);
    server.listen(port, host, () => {
      server.off('error', fail);
      resolve();
    });
  });
  const addr = server.address();
  const boundPort = typeof addr === 'object' && addr ? addr.port : port;
  return {
    server,
    port: boundPort,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
