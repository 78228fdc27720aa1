/**
 * An in-process agent core (store + DockerRuntime + executor + reconcile loop) against a real dockerd,
 * for the failure tests of issue 3: apply a desired state, run cycles, read the records, and list
 * what is left on the engine. Only this harness's node id is ever touched.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer as createHttpServer, request, type Server } from 'node:http';
import { createServer as createNetServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import Dockerode from 'dockerode';

import { loadConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { silentLogger } from '../../src/log.js';
import { Executor } from '../../src/reconcile/executor.js';
import { ReconcileLoop } from '../../src/reconcile/loop.js';
import { DockerRuntime } from '../../src/runtimes/docker/docker-runtime.js';
import type { DesiredStateDocument, Workload } from '../../src/spec/desired-state.js';
import { Store } from '../../src/store/store.js';
import type { WorkloadRecord } from '../../src/store/types.js';
import { testNodeId } from './engines.js';

export const IMAGE = 'persys-test/busybox:1';

export interface Harness {
  nodeId: string;
  namePrefix: string;
  store: Store;
  rt: DockerRuntime;
  executor: Executor;
  loop: ReconcileLoop;
  docker: Dockerode;
  /** Replaces the desired state (generation grows) and runs one cycle. */
  apply(workloads: unknown[]): Promise<void>;
  cycle(): Promise<void>;
  record(id: string): WorkloadRecord | undefined;
  /** Every container carrying this harness's node id, as the engine lists them. */
  containers(): Promise<Dockerode.ContainerInfo[]>;
  close(): Promise<void>;
}

export interface HarnessOptions {
  socketPath?: string;
  prefix?: string;
  config?: Record<string, unknown>;
  now?: () => Date;
  pauseAfterCreateMs?: number;
}

export async function startHarness(opts: HarnessOptions = {}): Promise<Harness> {
  const nodeId = testNodeId(opts.prefix ?? 'test-fail');
  const namePrefix = `t-${nodeId}-`;
  const dir = await mkdtemp(join(tmpdir(), 'persys-fail-'));
  const socketPath = opts.socketPath ?? '/var/run/docker.sock';
  const config: Config = loadConfig({
    env: {},
    flags: {},
    cwd: dir,
  });
  const merged: Config = {
    ...config,
    retry: { maxAttempts: 3, initialDelaySeconds: 0.05, maxDelaySeconds: 0.2, multiplier: 2 },
    reconcile: { ...config.reconcile, stuckSeconds: 60 },
    // MOUNT_FAILED needs a host path to reach the engine; POLICY_DENIED tests override this.
    ...(opts.config as Partial<Config> | undefined),
    // Merged, not replaced: a test's policy overrides name only the keys they change.
    policy: { ...config.policy, allowHostPaths: true, ...(opts.config as Partial<Config> | undefined)?.policy },
  };
  const logger = silentLogger();
  const store = await Store.open(join(dir, 'state'), logger, { fsync: false });
  const rt = new DockerRuntime({ socketPath, nodeId, namePrefix, logger });
  const executor = new Executor({
    nodeId,
    runtimes: new Map([['container', rt]]),
    store,
    config: merged,
    logger,
    ...(opts.now ? { now: opts.now } : {}),
    ...(opts.pauseAfterCreateMs !== undefined ? { pauseAfterCreateMs: opts.pauseAfterCreateMs } : {}),
  });
  const loop = new ReconcileLoop({ store, runtimes: [rt], executor, logger, policy: merged.policy, ...(opts.now ? { now: opts.now } : {}) });
  const docker = new Dockerode({ socketPath });
  const abort = new AbortController();
  let generation = 0;
  const h: Harness = {
    nodeId,
    namePrefix,
    store,
    rt,
    executor,
    loop,
    docker,
    async apply(workloads) {
      const document = { apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId, generation: ++generation, workloads } as unknown as DesiredStateDocument;
      await store.setDesired({ document, etag: null, receivedAt: new Date().toISOString(), source: 'test' });
      await h.cycle();
    },
    async cycle() {
      await loop.runOnce(abort.signal);
    },
    record: (id) => store.getRecord(id),
    containers: () => docker.listContainers({ all: true, filters: { label: [`dev.persys.node-id=${nodeId}`] } }),
    async close() {
      abort.abort();
      await store.close().catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
  return h;
}

export function container(id: string, spec: Record<string, unknown> = {}, extra: Record<string, unknown> = {}): Workload {
  return { id, type: 'container', revision: 'r1', ...extra, spec: { image: IMAGE, stopTimeoutSeconds: 1, ...spec } } as unknown as Workload;
}

/**
 * A minimal Docker registry on 127.0.0.1 that answers every request the same way, so dockerd itself
 * produces the engine message: `401` (Basic challenge: registry auth), `manifest-unknown` (the
 * registry's 404 for a missing tag), or `blackhole` (accepts TCP and never answers: a slow registry).
 */
export async function startFakeRegistry(mode: '401' | 'manifest-unknown' | 'blackhole'): Promise<{ host: string; requests: string[]; close(): Promise<void> }> {
  const requests: string[] = [];
  const sockets = new Set<Socket>();
  let server: Server | ReturnType<typeof createNetServer>;
  if (mode === 'blackhole') {
    server = createNetServer((s) => {
      requests.push('connection');
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => sockets.delete(s));
    });
  } else {
    server = createHttpServer((req, res) => {
      requests.push(`${req.method ?? ''} ${req.url ?? ''}`);
      const headers: Record<string, string> = { 'Content-Type': 'application/json', 'Docker-Distribution-Api-Version': 'registry/2.0' };
      if (mode === '401') {
        headers['WWW-Authenticate'] = 'Basic realm="persys-test"';
        res.writeHead(401, headers);
        res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required', detail: null }] }));
        return;
      }
      if (req.url === '/v2/' || req.url === '/v2') {
        res.writeHead(200, headers);
        res.end('{}');
        return;
      }
      res.writeHead(404, headers);
      res.end(JSON.stringify({ errors: [{ code: 'MANIFEST_UNKNOWN', message: 'manifest unknown', detail: null }] }));
    });
    server.on('connection', (s: Socket) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    });
  }
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
  return {
    host: `127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** What dockerd itself answers to POST /containers/create with `body`: the exact engine message. */
export function rawCreateMessage(socketPath: string, body: unknown, name: string): Promise<{ status: number; message: string }> {
  return rawEngine(socketPath, 'POST', `/containers/create?name=${encodeURIComponent(name)}`, body);
}

export function rawEngine(socketPath: string, method: string, path: string, body?: unknown): Promise<{ status: number; message: string }> {
  return new Promise((resolve, reject) => {
    const text = body === undefined ? undefined : JSON.stringify(body);
    const req = request(
      { socketPath, method, path, headers: text ? { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) } : {}, timeout: 60_000 },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const raw = Buffer.concat(chunks).toString('utf8').trim();
          const last = raw.split('\n').at(-1) ?? '';
          let message = raw;
          try {
            const parsed = JSON.parse(last) as { message?: string; error?: string };
            message = parsed.message ?? parsed.error ?? raw;
          } catch {
            // not JSON
          }
          resolve({ status: res.statusCode ?? 0, message });
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('raw engine call timed out')));
    req.on('error', reject);
    if (text) req.write(text);
    req.end();
  });
}
