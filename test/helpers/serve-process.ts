/**
 * `persys-agent serve` as a real process (the built CLI), plus the small HTTP calls tests make
 * against it (with the throwaway CA), and `persys-agent token` / `publish` runs.
 *
 *   const serve = await ServeProcess.start(['--dir', dir, '--tls-cert', pki.serverCert, '--tls-key', pki.serverKey]);
 *   const admin = await cliToken(dir, '--admin');
 *   await serve.stop();
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Agent, request } from 'undici';
import { AgentProcess, CLI, waitFor } from './agent-process.js';

const run = promisify(execFile);

export class ServeProcess {
  private constructor(
    readonly proc: AgentProcess,
    readonly url: string,
  ) {}

  /** Starts serve on 127.0.0.1:0 (unless args say --listen) and waits for its "listening" line. */
  static async start(args: string[], env: NodeJS.ProcessEnv = {}): Promise<ServeProcess> {
    const withListen = args.includes('--listen') ? args : [...args, '--listen', '127.0.0.1:0'];
    const proc = AgentProcess.start(['serve', ...withListen], env);
    const exited = proc.exited().then((code) => {
      throw new Error(`serve exited with ${code} before listening:\n${proc.dump()}`);
    });
    const line = await Promise.race([
      waitFor('serve to listen', () => proc.lines.find((l) => l.msg === 'serve: listening'), 20_000, 50),
      exited,
    ]);
    exited.catch(() => undefined);
    return new ServeProcess(proc, String(line.url));
  }

  stop(): Promise<number | null> {
    return this.proc.stop('SIGTERM', 15_000);
  }
}

/** Runs `persys-agent token --dir DIR ...` and returns the printed token. */
export async function cliToken(dir: string, ...args: string[]): Promise<string> {
  const { stdout } = await run(process.execPath, [CLI, 'token', '--dir', dir, ...args], { timeout: 30_000 });
  return stdout.trim();
}

/** Runs the built CLI with args; resolves with exit code and output (never rejects on a non-zero exit). */
export async function cli(args: string[], timeoutMs = 30_000): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [CLI, ...args], { timeout: timeoutMs });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: unknown; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

export interface HttpAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: () => unknown;
}

/** One HTTPS client per CA; `call` sends a request with an optional bearer token. */
export function httpClientFor(caPem: Buffer | undefined) {
  const dispatcher = new Agent({ connect: ca(caPem) });
  return {
    async call(method: 'GET' | 'POST' | 'PUT', url: string, opts: { token?: string; body?: string | Buffer; headers?: Record<string, string> } = {}): Promise<HttpAnswer> {
      const headers: Record<string, string> = { ...(opts.headers ?? {}) };
      if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
      if (opts.body !== undefined && headers['content-type'] === undefined) headers['content-type'] = 'application/json';
      const res = await request(url, { method, dispatcher, headers, body: opts.body ?? null, headersTimeout: 120_000, bodyTimeout: 120_000 });
      const text = await res.body.text();
      return { status: res.statusCode, headers: res.headers, text, json: () => JSON.parse(text) as unknown };
    },
    close: () => dispatcher.close(),
  };
}

function ca(pem: Buffer | undefined): { ca?: Buffer } {
  return pem === undefined ? {} : { ca: pem };
}

/** A schema-valid status report with the given workloads (pure data for simulated nodes). */
export function statusReportFor(nodeId: string, seq: number, observedGeneration: number | null, workloads: unknown[] = []): Record<string, unknown> {
  const now = new Date().toISOString();
  return {
    apiVersion: 'persys.dev/v1',
    kind: 'StatusReport',
    nodeId,
    seq,
    agentVersion: '0.1.0-sim',
    observedGeneration,
    sentAt: now,
    node: { hostname: `${nodeId}.local`, labels: {}, capacity: { cpus: 4, memoryBytes: 8 * 2 ** 30 }, runtimes: { docker: 'up', libvirt: 'up' } },
    sync: { lastPullAt: now, lastSuccessAt: now, lastError: null },
    workloads,
  };
}

export function desiredDoc(nodeId: string, generation: number, workloads: unknown[] = []): Record<string, unknown> {
  return { apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId, generation, workloads };
}

/** p-th percentile (nearest rank) of a list of numbers. */
export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank] as number;
}
