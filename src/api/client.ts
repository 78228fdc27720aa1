import { request } from 'node:http';
import { join, resolve } from 'node:path';

import { API_SOCKET_NAME } from './server.js';

/** The control socket of the agent that uses `stateDir`. */
export function apiSocketPath(stateDir: string): string {
  return join(resolve(stateDir), API_SOCKET_NAME);
}

/** The agent does not answer on its socket; the message says why in a person's words. */
export class AgentUnreachableError extends Error {
  constructor(readonly socketPath: string, readonly reason: string) {
    super(reason);
    this.name = 'AgentUnreachableError';
  }
}

function explain(socketPath: string, err: NodeJS.ErrnoException): string {
  const hint = 'start it with `persys-agent run`, or pass the --config / --stateDir it runs with';
  switch (err.code) {
    case 'ENOENT':
      return `the agent is not running: no control socket at ${socketPath} (${hint})`;
    case 'ECONNREFUSED':
      return `the agent is not running: nothing listens on ${socketPath} (a socket left by an agent that stopped; ${hint})`;
    case 'EACCES':
    case 'EPERM':
      return `permission denied on ${socketPath}: the control socket is owner-only; run this as the user the agent runs as (usually root)`;
    default:
      return `cannot reach the agent on ${socketPath}: ${err.message}`;
  }
}

export interface ApiResponse {
  status: number;
  body: unknown;
}

/** One JSON request to the running agent. Rejects with AgentUnreachableError when it does not answer. */
export function callAgent(socketPath: string, method: 'GET' | 'POST', path: string, timeoutMs = 60_000): Promise<ApiResponse> {
  return new Promise<ApiResponse>((resolvePromise, reject) => {
    const req = request({ socketPath, method, path, headers: { Host: 'persys-agent', Accept: 'application/json' }, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown = text;
        try {
          body = JSON.parse(text);
        } catch {
          // not JSON: keep the text
        }
        resolvePromise({ status: res.statusCode ?? 0, body });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error(`no answer within ${timeoutMs} ms`), { code: 'ETIMEDOUT' })));
    req.on('error', (err: NodeJS.ErrnoException) => reject(new AgentUnreachableError(socketPath, explain(socketPath, err))));
    req.end();
  });
}
