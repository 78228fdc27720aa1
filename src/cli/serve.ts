/** `persys-agent serve`: the reference central side (see src/control-plane/server.ts). */
import { parseArgs } from 'node:util';
import { isLoopbackHost } from '../sync/http-client.js';
import { createLogger } from '../log.js';
import { TokenTable } from '../control-plane/auth.js';
import { DirStore } from '../control-plane/dir-store.js';
import { startControlPlane } from '../control-plane/server.js';
import type { FleetStore } from '../control-plane/store.js';
import { UsageError } from './args.js';
import type { CommandIo } from './validate.js';

export const SERVE_USAGE = `usage: persys-agent serve --dir DIR [options]

The reference central side: serves each node's desired state (ETag, long-poll), takes status
reports, checks per-node tokens or client certificates, and shows the fleet at GET /.

options:
  --dir DIR                 documents in DIR/nodes/{nodeId}.json, tokens in DIR/tokens.json (required)
  --listen HOST:PORT        default 127.0.0.1:8443 (port 0: any free port)
  --tls-cert F --tls-key F  serve HTTPS (required unless HOST is loopback or --allow-insecure-http)
  --client-ca F             accept client certificates signed by this CA; the CN or a DNS SAN names the node
  --store postgres://...    keep documents and reports in PostgreSQL (several instances share a fleet)
  --max-wait-seconds N      longest long-poll hold granted (default 90)
  --max-held N              most requests held at once (default 10000)
  --heartbeat-seconds N     the agents' status.heartbeatSeconds; stale after 3 of them (default 60)
  --history N               reports kept per node in the history (default 20)
  --max-status-bytes N      largest status report, also after gunzip (default 4194304)
  --max-document-bytes N    largest published document (default 8388608)
  --require-signed          refuse documents that are not DSSE envelopes with a trusted signature
  --allow-insecure-http     serve plain HTTP on a non-loopback address
  --log-level LEVEL         default info
  -h, --help                print this help
`;

const OPTIONS = {
  dir: { type: 'string' },
  listen: { type: 'string', default: '127.0.0.1:8443' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  'client-ca': { type: 'string' },
  store: { type: 'string' },
  'max-wait-seconds': { type: 'string', default: '90' },
  'max-held': { type: 'string', default: '10000' },
  'heartbeat-seconds': { type: 'string', default: '60' },
  history: { type: 'string', default: '20' },
  'max-status-bytes': { type: 'string', default: String(4 * 1024 * 1024) },
  'max-document-bytes': { type: 'string', default: String(8 * 1024 * 1024) },
  'require-signed': { type: 'boolean', default: false },
  'allow-insecure-http': { type: 'boolean', default: false },
  'log-level': { type: 'string', default: 'info' },
  help: { type: 'boolean', short: 'h', default: false },
} as const;

export function parseListen(value: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(value);
  if (m === null) throw new UsageError(`--listen must be HOST:PORT, got ${JSON.stringify(value)}`);
  const port = Number(m[3]);
  if (port > 65535) throw new UsageError(`--listen: port ${port} is out of range`);
  return { host: m[1] ?? (m[2] === '' ? '0.0.0.0' : (m[2] ?? '')), port };
}

function positiveInt(name: string, value: string, min = 1): number {
  if (!/^\d+$/.test(value) || Number(value) < min) throw new UsageError(`--${name} must be an integer >= ${min}, got ${JSON.stringify(value)}`);
  return Number(value);
}

export async function serveCommand(args: string[], io: CommandIo): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args, options: OPTIONS, allowPositionals: false, strict: true });
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err));
  }
  const o = parsed.values;
  if (o.help) {
    io.stdout.write(SERVE_USAGE);
    return 0;
  }
  if (o.dir === undefined) throw new UsageError('--dir DIR is required (tokens live there, and documents unless --store says otherwise)');
  const { host, port } = parseListen(o.listen);
  if ((o['tls-cert'] === undefined) !== (o['tls-key'] === undefined)) throw new UsageError('--tls-cert and --tls-key go together');
  const tls = o['tls-cert'] !== undefined && o['tls-key'] !== undefined;
  if (!tls && !isLoopbackHost(host) && !o['allow-insecure-http']) {
    throw new UsageError(`plain HTTP on ${host} would send tokens and documents unencrypted: give --tls-cert and --tls-key, or --allow-insecure-http`);
  }
  if (o['client-ca'] !== undefined && !tls) throw new UsageError('--client-ca needs --tls-cert and --tls-key (client certificates are a TLS feature)');
  if (o['require-signed']) {
    // The DSSE verifier (src/trust/) is not part of this build yet; accepting the flag and not
    // checking would be worse than refusing it.
    throw new UsageError('--require-signed is not supported yet (no DSSE verifier in this build); publish signed envelopes without it, the agents verify them');
  }
  const level = o['log-level'];
  if (!['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'].includes(level)) throw new UsageError(`--log-level: unknown level ${JSON.stringify(level)}`);
  const logger = createLogger(level as 'info');

  let store: FleetStore;
  const historyLimit = positiveInt('history', o.history);
  if (o.store === undefined || o.store === 'dir') store = new DirStore(o.dir, { historyLimit });
  else if (/^postgres(?:ql)?:\/\//.test(o.store)) {
    const { PgStore } = await import('../control-plane/pg-store.js');
    store = new PgStore(o.store, { historyLimit, logger });
  } else throw new UsageError(`--store must be dir or postgres://..., got ${JSON.stringify(o.store.replace(/\/\/[^@/]*@/, '//…@'))}`);

  const maxWaitSeconds = positiveInt('max-wait-seconds', o['max-wait-seconds'], 0);
  const options = {
    maxHeld: positiveInt('max-held', o['max-held'], 0),
    heartbeatSeconds: positiveInt('heartbeat-seconds', o['heartbeat-seconds']),
    maxStatusBytes: positiveInt('max-status-bytes', o['max-status-bytes'], 1024),
    maxDocumentBytes: positiveInt('max-document-bytes', o['max-document-bytes'], 1024),
  };
  try {
    await store.open();
  } catch (err) {
    io.stderr.write(`persys-agent serve: cannot open the store: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
  const tokens = await TokenTable.open(o.dir);
  const plane = await startControlPlane({
    store,
    tokens,
    logger,
    host,
    port,
    maxWaitSeconds,
    ...options,
    ...(tls ? { tls: { certFile: o['tls-cert'] as string, keyFile: o['tls-key'] as string, ...(o['client-ca'] !== undefined ? { clientCaFile: o['client-ca'] } : {}) } } : {}),
  });
  logger.info({ url: plane.url, store: o.store === undefined ? 'dir' : o.store.split(':')[0], maxWaitSeconds, maxHeld: options.maxHeld }, 'serve: listening');

  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  logger.info('serve: stopping');
  await plane.close();
  await store.close();
  return 0;
}
