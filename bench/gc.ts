/**
 * One garbage-collection pass on the real dockerd with 200 desired workloads and 50 orphans, in
 * engine calls and time, beside one label-filtered container list measured in the same run (the
 * call a pass cannot do without). Engine calls are counted on the wire: the collector talks to
 * dockerd through a counting unix-socket proxy, so every HTTP request it makes is one call.
 *
 * Rows: a dry run (select only: the lists), the real pass (lists + 50 removals), and the calls of each.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

import Dockerode from 'dockerode';
import * as v from 'valibot';

import { configSchema } from '../src/config/schema.js';
import { GarbageCollector } from '../src/gc/collector.js';
import { DockerRuntime } from '../src/runtimes/docker/docker-runtime.js';
import { LABELS } from '../src/runtimes/runtime.js';
import { Store } from '../src/store/store.js';
import { BENCH_IMAGE, benchDocument, benchLogger, benchNodeId, DOCKER_SOCKET, median, pool, progress, removeNode, round2, type Section } from './lib.js';

const WORKLOADS = 200;
const ORPHANS = 50;
const LIST_ROUNDS = 9;

/** A unix socket in front of dockerd that counts HTTP requests (request lines) going through it. */
async function countingProxy(path: string): Promise<{ server: Server; count: () => number; reset: () => void }> {
  let n = 0;
  const requestLine = /(?:^|\r\n)(?:GET|POST|PUT|DELETE|HEAD) \/\S* HTTP\/1\.[01]\r\n/g;
  const server = createServer((client) => {
    const upstream = createConnection({ path: DOCKER_SOCKET });
    let tail = '';
    client.on('data', (chunk: Buffer) => {
      const text = tail + chunk.toString('latin1');
      n += text.match(requestLine)?.length ?? 0;
      // Keep the end so a request line cut between chunks is still counted (once).
      const cut = text.lastIndexOf('\r\n');
      tail = cut >= 0 ? text.slice(cut) : '';
      if (tail.length > 256) tail = '';
      upstream.write(chunk);
    });
    upstream.pipe(client);
    client.on('end', () => upstream.end());
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return { server, count: () => n, reset: () => void (n = 0) };
}

export async function benchGc(signal: AbortSignal): Promise<Section> {
  const nodeId = benchNodeId();
  const dir = await mkdtemp(join(tmpdir(), 'persys-bench-gc-'));
  const proxyPath = join(dir, 'docker.sock');
  const proxy = await countingProxy(proxyPath);
  const docker = new Dockerode({ socketPath: DOCKER_SOCKET });
  const logger = benchLogger();
  const store = await Store.open(join(dir, 'state'), logger, { fsync: false });
  try {
    const doc = benchDocument(nodeId, WORKLOADS);
    await store.setDesired({ document: doc, etag: null, receivedAt: new Date().toISOString(), source: 'bench' });
    progress(`gc: creating ${WORKLOADS} workload containers and ${ORPHANS} orphans (created, not started)`);
    const labels = (workloadId: string) => ({ [LABELS.managed]: 'true', [LABELS.nodeId]: nodeId, [LABELS.workloadId]: workloadId, [LABELS.type]: 'container', [LABELS.revision]: '1', [LABELS.specHash]: 'sha256:bench' });
    const ids = [...doc.workloads.map((w) => w.id), ...Array.from({ length: ORPHANS }, (_, i) => `orphan${String(i).padStart(3, '0')}`)];
    await pool(ids, 8, async (id) => {
      if (signal.aborted) return;
      await docker.createContainer({ name: `${nodeId}-${id}`, Image: BENCH_IMAGE, Cmd: ['sleep', '3600'], Labels: labels(id), HostConfig: { NetworkMode: 'none' } });
    });
    signal.throwIfAborted();
    await new Promise((r) => setTimeout(r, 1100)); // past the 1 s grace of this bench

    const config = v.parse(configSchema, { docker: { socketPath: proxyPath }, gc: { orphanGraceSeconds: 1 } });
    const runtime = new DockerRuntime({ socketPath: proxyPath, nodeId, namePrefix: `${nodeId}-`, logger });
    const gc = new GarbageCollector({ config, store, runtimes: [runtime], nodeId, stateDir: join(dir, 'state'), logger });

    // Baseline: one label-filtered list through the same proxy, median of several.
    const lister = new Dockerode({ socketPath: proxyPath });
    const listMs: number[] = [];
    for (let i = 0; i < LIST_ROUNDS; i++) {
      const t0 = performance.now();
      await lister.listContainers({ all: true, filters: { label: [`${LABELS.managed}=true`, `${LABELS.nodeId}=${nodeId}`] } });
      listMs.push(performance.now() - t0);
    }
    const list = median(listMs);

    const dryMs: number[] = [];
    let dryCalls = 0;
    let selected = 0;
    for (let i = 0; i < 3; i++) {
      proxy.reset();
      const t0 = performance.now();
      const r = await gc.runNow('bench', { dryRun: true });
      dryMs.push(performance.now() - t0);
      dryCalls = proxy.count();
      selected = r.removed.length;
    }
    proxy.reset();
    const t0 = performance.now();
    const pass = await gc.runNow('bench');
    const passMs = performance.now() - t0;
    const passCalls = proxy.count();
    const left = (await docker.listContainers({ all: true, filters: { label: [`${LABELS.nodeId}=${nodeId}`] } })).length;
    const rows = [
      { name: `gc dry run, ${WORKLOADS} workloads + ${ORPHANS} orphans (select only)`, value: round2(median(dryMs)), unit: 'ms', baseline: { name: 'one label-filtered container list', value: round2(list) } },
      { name: `gc pass, ${WORKLOADS} workloads + ${ORPHANS} orphans (removes ${pass.removed.length})`, value: round2(passMs), unit: 'ms', baseline: { name: 'one label-filtered container list', value: round2(list) } },
      { name: 'gc dry run engine calls', value: dryCalls, unit: 'calls', baseline: { name: 'one label-filtered container list', value: 1 } },
      { name: 'gc pass engine calls', value: passCalls, unit: 'calls', baseline: { name: 'one label-filtered container list', value: 1 } },
    ];
    return {
      rows,
      notes: [
        `gc: the dry run selected ${selected} of ${ORPHANS} orphans; the pass removed ${pass.removed.length} (collector counted ${pass.engineCalls} calls, the proxy ${passCalls}); ${left} containers left (the ${WORKLOADS} desired)`,
        'gc: calls of a pass = observe (1 list) + strays (1 list) + images (1 list) + one removal per orphan; no call per desired workload',
      ],
    };
  } finally {
    await store.close().catch(() => undefined);
    await removeNode(nodeId).catch((err: unknown) => progress(`gc: cleanup failed: ${String(err)}`));
    await new Promise<void>((resolve) => proxy.server.close(() => resolve()));
    await rm(dir, { recursive: true, force: true });
  }
}
