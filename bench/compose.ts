/**
 * Compose apps on the real dockerd, beside baselines measured in the same run (issue #11):
 * - bring-up of a 10-service app (three dependency levels) by the agent's compose runtime (prepare,
 *   create, start: the executor's steps) versus `docker-compose up -d` (Debian's 1.29) on the same
 *   file and the same local image. Target <= 0.5x.
 * - a no-change observe of that app (what a reconcile cycle asks of the runtime) versus one
 *   label-filtered container list. Target <= 2x.
 * Rounds alternate agent and docker-compose so both see the same engine load. Every object is
 * labelled or named by this run's node id and removed at the end, also after a failure.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';

import { ComposeRuntime } from '../src/runtimes/compose/compose-runtime.js';
import type { ComposeWorkload } from '../src/runtimes/compose/spec.js';
import { BUILTIN_TYPES } from '../src/runtimes/registry.js';
import { LABELS, type ObservedWorkload } from '../src/runtimes/runtime.js';
import { BENCH_IMAGE, benchLogger, benchNodeId, docker, DOCKER_SOCKET, median, progress, round2, type Section } from './lib.js';

const run = promisify(execFile);
const ROUNDS = 3;
const LIST_ROUNDS = 21;
const COMPOSE_BIN = ['/usr/bin/docker-compose', '/usr/local/bin/docker-compose'].find((p) => existsSync(p));

/** Ten services in three levels: three backends, six that need them, one front. */
export function tenServiceApp(): string {
  const svc = (name: string, deps: string[]) =>
    `  ${name}:\n    image: ${BENCH_IMAGE}\n    command: ["sleep", "3600"]\n    stop_grace_period: 1s\n${deps.length > 0 ? `    depends_on: [${deps.join(', ')}]\n` : ''}`;
  return [
    'services:',
    svc('db', []).replace('    stop_grace_period', '    volumes: ["data:/data"]\n    stop_grace_period'),
    svc('cache', []),
    svc('queue', []),
    svc('api1', ['db', 'cache']),
    svc('api2', ['db', 'cache']),
    svc('api3', ['db', 'cache']),
    svc('api4', ['db', 'cache']),
    svc('worker1', ['queue', 'db']),
    svc('worker2', ['queue', 'db']),
    svc('web', ['api1', 'api2', 'api3', 'api4']),
    'volumes:',
    '  data: {}',
    '',
  ].join('\n');
}

async function removeAll(filterLabel: string): Promise<void> {
  const d = docker();
  const cs = await d.listContainers({ all: true, filters: { label: [filterLabel] } });
  await Promise.all(cs.map((c) => d.getContainer(c.Id).remove({ force: true, v: true }).catch(() => undefined)));
  const nets = await d.listNetworks({ filters: { label: [filterLabel] } });
  for (const n of nets) await d.getNetwork(n.Id).remove().catch(() => undefined);
  const vols = await d.listVolumes({ filters: { label: [filterLabel] } });
  for (const v of vols.Volumes ?? []) await d.getVolume(v.Name).remove().catch(() => undefined);
}

/**
 * What dockerd alone needs for ten containers, all created and then all started at once with no
 * dependency order: a bring-up cannot beat it, so it says how far a target is from the engine.
 */
async function engineFloor(nodeId: string, round: number): Promise<number> {
  const d = docker();
  const labels = { [LABELS.managed]: 'true', [LABELS.nodeId]: nodeId, [LABELS.workloadId]: `floor-${round}` };
  const t0 = performance.now();
  const cs = await Promise.all(Array.from({ length: 10 }, () => d.createContainer({ Image: BENCH_IMAGE, Cmd: ['sleep', '3600'], Labels: labels, StopTimeout: 1 })));
  await Promise.all(cs.map((c) => c.start()));
  const ms = performance.now() - t0;
  await Promise.all(cs.map((c) => c.remove({ force: true }).catch(() => undefined)));
  return ms;
}

/** The app's start order: three backends, then the six that need them, then the front. */
const START_LEVELS = [3, 6, 1] as const;

/**
 * What dockerd alone needs for the same app with its order kept: one user network, the ten
 * containers created at once on it, then started level by level (each level at once), as any
 * bring-up that honours depends_on: service_started must. Only the engine's calls, no parsing,
 * no labels to compute, no checks.
 */
async function orderedFloor(nodeId: string, round: number): Promise<number> {
  const d = docker();
  const labels = { [LABELS.managed]: 'true', [LABELS.nodeId]: nodeId, [LABELS.workloadId]: `ordered-floor-${round}` };
  const t0 = performance.now();
  const net = await d.createNetwork({ Name: `${nodeId}-floor-${round}`, Labels: labels, CheckDuplicate: true });
  const cs = await Promise.all(
    Array.from({ length: 10 }, () => d.createContainer({ Image: BENCH_IMAGE, Cmd: ['sleep', '3600'], Labels: labels, StopTimeout: 1, HostConfig: { NetworkMode: net.id } })),
  );
  let at = 0;
  for (const n of START_LEVELS) {
    await Promise.all(cs.slice(at, at + n).map((c) => c.start()));
    at += n;
  }
  const ms = performance.now() - t0;
  await Promise.all(cs.map((c) => c.remove({ force: true }).catch(() => undefined)));
  await net.remove().catch(() => undefined);
  return ms;
}

export async function benchCompose(signal: AbortSignal): Promise<Section> {
  if (!COMPOSE_BIN) throw new Error('docker-compose is not installed (scripts/testbed/docker.sh installs Debian 1.29): no baseline');
  const nodeId = benchNodeId();
  const tag = nodeId.replace(/[^a-z0-9]/g, '');
  const rt = new ComposeRuntime({ socketPath: DOCKER_SOCKET, nodeId, logger: benchLogger() });
  const yaml = tenServiceApp();
  const dir = await mkdtemp(join(tmpdir(), 'persys-bench-compose-'));
  await writeFile(join(dir, 'docker-compose.yml'), yaml);
  const composeEnv = { ...process.env, DOCKER_HOST: `unix://${DOCKER_SOCKET}` };
  const dcProjects: string[] = [];
  const agentMs: number[] = [];
  const composeMs: number[] = [];
  const floorMs: number[] = [];
  const orderedMs: number[] = [];
  let last: ObservedWorkload | undefined;
  try {
    for (let i = 0; i < ROUNDS; i++) {
      signal.throwIfAborted();
      const w: ComposeWorkload = { id: `app-${i}`, type: 'compose', revision: 'r1', spec: { project: `pa${tag}${i}`, composeYaml: yaml } };
      const ctx = { nodeId, specHash: BUILTIN_TYPES.hash(w), hashVersion: BUILTIN_TYPES.version(w), signal: AbortSignal.any([signal, AbortSignal.timeout(120_000)]) };
      const t0 = performance.now();
      await rt.prepare(w, ctx);
      const created = await rt.create(w, ctx);
      await rt.start(created, ctx.signal);
      agentMs.push(performance.now() - t0);
      last = created;

      const project = `dc${tag}${i}`;
      dcProjects.push(project);
      const t1 = performance.now();
      await run(COMPOSE_BIN, ['-p', project, 'up', '-d'], { cwd: dir, env: composeEnv, timeout: 120_000, signal });
      composeMs.push(performance.now() - t1);
      floorMs.push(await engineFloor(nodeId, i));
      orderedMs.push(await orderedFloor(nodeId, i));
      progress(`compose bring-up round ${i + 1}/${ROUNDS}: agent ${agentMs.at(-1)?.toFixed(0)} ms, docker-compose ${composeMs.at(-1)?.toFixed(0)} ms, engine floor ${floorMs.at(-1)?.toFixed(0)} ms, in dependency order ${orderedMs.at(-1)?.toFixed(0)} ms`);
      // Keep the last agent app for the cycle; the others go so rounds do not pile up.
      if (i < ROUNDS - 1) await removeAll(`${LABELS.workloadId}=${w.id}`);
      if (i < ROUNDS - 1) await run(COMPOSE_BIN, ['-p', project, 'down', '-v', '-t', '0'], { cwd: dir, env: composeEnv, timeout: 120_000 });
    }

    // No-change cycle: the runtime's observe() of the running app (warm: evidence already read) versus one list.
    if (!last) throw new Error('no app came up');
    await rt.observe(signal);
    const d = docker();
    const observeMs: number[] = [];
    const listMs: number[] = [];
    const filters = { label: [`${LABELS.managed}=true`, `${LABELS.nodeId}=${nodeId}`, `${LABELS.type}=compose`] };
    for (let i = 0; i < LIST_ROUNDS; i++) {
      signal.throwIfAborted();
      const t0 = performance.now();
      const seen = await rt.observe(signal);
      observeMs.push(performance.now() - t0);
      if (seen.length !== 1 || seen[0]?.state !== 'running') throw new Error(`the app is not running: ${JSON.stringify(seen.map((o) => o.state))}`);
      const t1 = performance.now();
      await d.listContainers({ all: true, filters, abortSignal: signal });
      listMs.push(performance.now() - t1);
    }
    const up = median(agentMs);
    const dc = median(composeMs);
    return {
      rows: [
        { name: 'compose bring-up, 10 services (median)', value: round2(up), unit: 'ms', baseline: { name: 'docker-compose up -d', value: round2(dc) }, target: { on: 'ratio', max: 0.5, text: '<= 0.5x' } },
        { name: 'engine floor: 10 bare containers created+started at once (median)', value: round2(median(floorMs)), unit: 'ms', baseline: { name: 'docker-compose up -d', value: round2(dc) } },
        { name: 'engine floor in dependency order: 1 network, 10 created at once, started 3+6+1 (median)', value: round2(median(orderedMs)), unit: 'ms', baseline: { name: 'docker-compose up -d', value: round2(dc) } },
        { name: 'compose bring-up against the ordered engine floor (median)', value: round2(up), unit: 'ms', baseline: { name: 'engine floor in dependency order', value: round2(median(orderedMs)) } },
        { name: 'compose no-change observe, 10 services (median)', value: round2(median(observeMs)), unit: 'ms', baseline: { name: 'one label-filtered list', value: round2(median(listMs)) }, target: { on: 'ratio', max: 2, text: '<= 2.0x' } },
      ],
      notes: [
        `compose bring-up: ${ROUNDS} rounds alternating agent / docker-compose 1.29 on the same file and local image ${BENCH_IMAGE}; agent = prepare+create+start of the compose runtime (independent services created and started together); docker-compose includes its Python start-up, which is part of what an operator waits for`,
        `engine floor: 10 bare containers created and started all at once (no order, no network of their own): no bring-up of 10 containers can be faster; a ratio target below floor/docker-compose cannot be met on this host's load`,
        `engine floor in dependency order: the same app's start order kept (the engine calls alone, on one user network, each level started at once): a bring-up that honours depends_on: service_started cannot beat it; bring-up / this floor is the agent's own overhead`,
      ],
    };
  } finally {
    await removeAll(`${LABELS.nodeId}=${nodeId}`).catch((err: unknown) => progress(`compose bench cleanup: ${String(err)}`));
    for (const p of dcProjects) await run(COMPOSE_BIN, ['-p', p, 'down', '-v', '-t', '0'], { cwd: dir, env: composeEnv, timeout: 120_000 }).catch((err: unknown) => progress(`docker-compose down ${p}: ${String(err)}`));
    await rm(dir, { recursive: true, force: true });
  }
}
