/**
 * Real Prometheus peers for the metrics suites: a Prometheus server and a Pushgateway from Debian's
 * packages (scripts/testbed/prometheus.sh installs them), each started by the test on a loopback port
 * with its own data directory, and stopped by pid. Plus `promtool check metrics` and small HTTP helpers.
 *
 *   const prom = await startPrometheus({ dir, targets: ['127.0.0.1:9464'] });
 *   const res = await prom.query('persys_node_info');
 *   await prom.stop();
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { waitFor } from './agent-process.js';

/** A free TCP port on 127.0.0.1 (bound, read, released: a tiny race, acceptable for tests). */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => resolve());
  });
  const addr = srv.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

export interface HttpAnswer {
  status: number;
  body: string;
}

/** GET with a bound; never throws for an HTTP status, only for no answer. */
export async function httpGet(url: string, timeoutMs = 5_000): Promise<HttpAnswer> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  return { status: res.status, body: await res.text() };
}

/** A process this test started; stop() signals it (only it) and waits, SIGKILL after a bound. */
export class OwnedProcess {
  readonly output: string[] = [];
  private readonly exit: Promise<unknown>;

  constructor(readonly child: ChildProcess, readonly name: string) {
    child.stdout?.setEncoding('utf8').on('data', (c: string) => this.push(c));
    child.stderr?.setEncoding('utf8').on('data', (c: string) => this.push(c));
    this.exit = once(child, 'exit');
  }

  private push(chunk: string): void {
    this.output.push(chunk);
    // Bounded: the tail is what explains a failure.
    if (this.output.length > 2000) this.output.splice(0, this.output.length - 2000);
  }

  get exited(): boolean {
    return this.child.exitCode !== null || this.child.signalCode !== null;
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 20_000): Promise<void> {
    if (this.exited) return;
    this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    try {
      await this.exit;
    } finally {
      clearTimeout(timer);
    }
  }

  log(): string {
    return this.output.join('').split('\n').slice(-60).join('\n');
  }
}

export interface PrometheusServer {
  url: string;
  process: OwnedProcess;
  /** Instant query through the HTTP API; returns data.result. */
  query(promql: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]>;
  stop(): Promise<void>;
}

/**
 * Starts `prometheus` scraping `targets` every `scrapeIntervalSeconds` (job "persys"), or with the
 * given configuration file text (`configYaml`; `targets` are then ignored).
 */
export async function startPrometheus(opts: { dir: string; targets: string[]; scrapeIntervalSeconds?: number; configYaml?: string }): Promise<PrometheusServer> {
  const interval = `${opts.scrapeIntervalSeconds ?? 1}s`;
  await mkdir(join(opts.dir, 'tsdb'), { recursive: true });
  const config = join(opts.dir, 'prometheus.yml');
  await writeFile(
    config,
    opts.configYaml ?? [
      'global:',
      `  scrape_interval: ${interval}`,
      `  evaluation_interval: ${interval}`,
      'scrape_configs:',
      '  - job_name: persys',
      `    scrape_interval: ${interval}`,
      `    scrape_timeout: ${interval}`,
      '    static_configs:',
      `      - targets: [${opts.targets.map((t) => `'${t}'`).join(', ')}]`,
      '',
    ].join('\n'),
  );
  const port = await freePort();
  const child = spawn(
    'prometheus',
    [`--config.file=${config}`, `--storage.tsdb.path=${join(opts.dir, 'tsdb')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const proc = new OwnedProcess(child, 'prometheus');
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitFor('prometheus ready', async () => !proc.exited && (await httpGet(`${url}/-/ready`, 2_000)).status === 200, 60_000, 250);
  } catch (err) {
    await proc.stop('SIGKILL');
    throw new Error(`${String(err)}\n--- prometheus ---\n${proc.log()}`);
  }
  return {
    url,
    process: proc,
    async query(promql) {
      const res = await httpGet(`${url}/api/v1/query?query=${encodeURIComponent(promql)}`);
      const body = JSON.parse(res.body) as { status: string; error?: string; data?: { result: { metric: Record<string, string>; value: [number, string] }[] } };
      if (res.status !== 200 || body.status !== 'success') throw new Error(`query ${promql}: ${res.status} ${body.error ?? res.body.slice(0, 300)}`);
      return body.data?.result ?? [];
    },
    stop: () => proc.stop(),
  };
}

export interface Pushgateway {
  url: string;
  process: OwnedProcess;
  metrics(): Promise<string>;
  stop(): Promise<void>;
}

/** Starts `prometheus-pushgateway` on a free loopback port (in-memory only: no persistence file). */
export async function startPushgateway(): Promise<Pushgateway> {
  const port = await freePort();
  // Debian's build defaults --persistence.file to /var/lib/prometheus/pushgateway.data: without an
  // empty one, every test gateway would load (and rewrite) the groups of every earlier run.
  const child = spawn('prometheus-pushgateway', [`--web.listen-address=127.0.0.1:${port}`, '--persistence.file=', '--log.level=warn'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const proc = new OwnedProcess(child, 'pushgateway');
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitFor('pushgateway ready', async () => !proc.exited && (await httpGet(`${url}/-/ready`, 2_000)).status === 200, 30_000, 200);
  } catch (err) {
    await proc.stop('SIGKILL');
    throw new Error(`${String(err)}\n--- pushgateway ---\n${proc.log()}`);
  }
  return {
    url,
    process: proc,
    metrics: async () => (await httpGet(`${url}/metrics`)).body,
    stop: () => proc.stop(),
  };
}

/** Runs `promtool check metrics` on `text`; resolves with its exit code and output. */
export function promtoolCheckMetrics(text: string): Promise<{ code: number | null; output: string }> {
  return promtool(['check', 'metrics'], { input: text });
}

/** Runs promtool with `args` (stdin `input`, in `cwd`), bounded to 60 s; resolves with its exit code and output. */
export function promtool(args: string[], opts: { input?: string; cwd?: string } = {}): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('promtool', args, { stdio: ['pipe', 'pipe', 'pipe'], ...(opts.cwd ? { cwd: opts.cwd } : {}) });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (output += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (output += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
    child.stdin.end(opts.input ?? '');
  });
}
