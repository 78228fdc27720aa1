import { lstat, chmod, unlink } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';

import type { Logger } from '../log.js';
import { listenError, ListenError, UNIX_SOCKET_PATH_MAX } from '../util/listen-error.js';

/*
 * The local control API: JSON over HTTP on a unix socket in the state dir (`<stateDir>/agent.sock`).
 * Access control is the file system's: the state dir is 0700 and the socket 0600, so only the
 * agent's own user (root on a fleet host) can talk to it. Nothing listens on a TCP port.
 *
 *   GET  /v1/status                  the status report the agent would send now
 *   POST /v1/workloads/{id}/retry    reset the workload's retry budget and attempt it now
 *   POST /v1/sync                    pull the desired state and reconcile now
 *   POST /v1/gc[?dryRun=true]        run a garbage-collection pass now (or show what it would remove)
 */

export const API_SOCKET_NAME = 'agent.sock';
export const API_VERSION_PREFIX = '/v1';

export interface ApiHandlers {
  status(): unknown;
  /** undefined: no such workload. */
  retry(id: string): Promise<unknown>;
  sync(): Promise<unknown>;
  /** Absent: this agent runs no garbage collector (the route answers 501). */
  gc?(opts: { dryRun: boolean }): Promise<unknown>;
}

export interface ApiServer {
  socketPath: string;
  close(): Promise<void>;
}

/** Another process answers on the socket: a second agent on the same state dir would corrupt it. */
export class SocketInUseError extends Error {
  constructor(readonly socketPath: string) {
    super(`another persys-agent is running with this state dir: its control API answers on ${socketPath}`);
    this.name = 'SocketInUseError';
  }
}

function answers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = createConnection({ path: socketPath });
    const done = (v: boolean) => {
      sock.destroy();
      resolve(v);
    };
    sock.setTimeout(1_000, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

/** Removes a socket left by an agent that died; refuses when one still answers or the path is not a socket. */
async function clearStaleSocket(socketPath: string): Promise<void> {
  let st;
  try {
    st = await lstat(socketPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!st.isSocket()) throw new ListenError('stateDir', socketPath, undefined, `cannot listen on ${socketPath} (the local API socket in stateDir): it exists and is not a socket; refusing to replace it: move it away`);
  if (await answers(socketPath)) throw new SocketInUseError(socketPath);
  await unlink(socketPath);
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(text), 'Cache-Control': 'no-store' });
  res.end(text);
}

const RETRY_PATH = /^\/v1\/workloads\/([^/]+)\/retry$/;

async function route(req: IncomingMessage, res: ServerResponse, h: ApiHandlers): Promise<void> {
  const path = (req.url ?? '/').split('?')[0] ?? '/';
  const method = req.method ?? 'GET';
  if (path === '/v1/status') {
    if (method !== 'GET') return send(res, 405, { error: 'use GET' });
    return send(res, 200, h.status());
  }
  if (path === '/v1/gc') {
    if (method !== 'POST') return send(res, 405, { error: 'use POST' });
    if (!h.gc) return send(res, 501, { error: 'this agent runs no garbage collector' });
    const q = new URLSearchParams((req.url ?? '').split('?')[1] ?? '');
    const dry = q.get('dryRun');
    if (dry !== null && dry !== 'true' && dry !== 'false') return send(res, 400, { error: 'dryRun must be true or false' });
    return send(res, 200, await h.gc({ dryRun: dry === 'true' }));
  }
  if (path === '/v1/sync') {
    if (method !== 'POST') return send(res, 405, { error: 'use POST' });
    return send(res, 200, await h.sync());
  }
  const m = RETRY_PATH.exec(path);
  if (m?.[1] !== undefined) {
    if (method !== 'POST') return send(res, 405, { error: 'use POST' });
    let id: string;
    try {
      id = decodeURIComponent(m[1]);
    } catch {
      return send(res, 400, { error: 'bad workload id in the path' });
    }
    const result = await h.retry(id);
    if (result === undefined) return send(res, 404, { error: `no workload ${JSON.stringify(id)} in the desired state or the records` });
    return send(res, 200, result);
  }
  return send(res, 404, { error: `no such endpoint: ${method} ${path}` });
}

export async function startApiServer(socketPath: string, handlers: ApiHandlers, logger: Logger): Promise<ApiServer> {
  const bytes = Buffer.byteLength(socketPath);
  if (bytes > UNIX_SOCKET_PATH_MAX) {
    throw new ListenError('stateDir', socketPath, undefined, `cannot listen on ${socketPath} (the local API socket in stateDir): the path is ${bytes} bytes, a unix socket path may have at most ${UNIX_SOCKET_PATH_MAX}; use a shorter stateDir`);
  }
  await clearStaleSocket(socketPath);
  const server: Server = createServer((req, res) => {
    // Bodies are not used; read and drop them (bounded) so the connection can be reused.
    let seen = 0;
    req.on('data', (c: Buffer) => {
      seen += c.length;
      if (seen > 64 * 1024) req.destroy();
    });
    route(req, res, handlers).catch((err: unknown) => {
      const message = err instanceof Error ? err.message : String(err);
      logger.warn({ url: req.url, err: message }, 'local API request failed');
      if (!res.headersSent) send(res, 500, { error: message });
      else res.destroy();
    });
  });
  server.requestTimeout = 120_000;
  await new Promise<void>((resolve, reject) => {
    const fail = (err: unknown) => reject(listenError('stateDir', socketPath, err, 'check the state dir (its permissions, its file system)'));
    server.once('error', fail);
    server.listen(socketPath, () => {
      server.off('error', fail);
      resolve();
    });
  });
  // The state dir is 0700 already; the socket itself is owner-only too.
  await chmod(socketPath, 0o600);
  logger.debug({ socketPath }, 'local API listening');
  return {
    socketPath,
    close: async () => {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      // A clean exit leaves no socket behind (libuv's own unlink is not something to rely on); a
      // crash leaves it for clearStaleSocket.
      await unlink(socketPath).catch(() => undefined);
    },
  };
}
