/**
 * The native compose runtime against the real dockerd (scripts/testbed/docker.sh starts it, builds
 * persys-test/busybox:1 and installs Debian's docker-compose 1.29 for the interop checks). Every run
 * has its own node id and project names; everything is removed by label in after(), also after a
 * failure. Only loopback is contacted (the web service publishes on 127.0.0.1).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';

import Dockerode from 'dockerode';

import { WorkloadError } from '../../src/errors/index.js';
import { silentLogger } from '../../src/log.js';
import { ComposeRuntime } from '../../src/runtimes/compose/compose-runtime.js';
import type { ComposeWorkload } from '../../src/runtimes/compose/spec.js';
import { BUILTIN_TYPES } from '../../src/runtimes/registry.js';
import { LABELS, type ApplyContext, type ObservedWorkload } from '../../src/runtimes/runtime.js';
import { validateDesiredState } from '../../src/spec/validate.js';
import { cleanupDockerByLabel, dockerSocketPath, requireEngine, testNodeId } from '../helpers/engines.js';

const run = promisify(execFile);
const IMAGE = 'persys-test/busybox:1';
const skip = await requireEngine('docker');
const socket = dockerSocketPath();
const socketPath = socket instanceof Error ? '/var/run/docker.sock' : socket;
const nodeId = testNodeId('test-compose');
const tag = nodeId.replace(/[^a-z0-9]/g, '').slice(-10);
const COMPOSE_BIN = ['/usr/bin/docker-compose', '/usr/local/bin/docker-compose'].find((p) => existsSync(p));

const docker = new Dockerode({ socketPath });
const rt = new ComposeRuntime({ socketPath, nodeId, logger: silentLogger(), dependencyTimeoutMs: 30_000 });

async function freePort(): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function httpGet(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/', timeout: 5000 }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
    req.end();
  });
}

/** The three-service app of the issue: web -> api -(service_healthy)-> db with a named volume. */
function appYaml(): string {
  return `
services:
  db:
    image: ${IMAGE}
    stop_grace_period: 1s
    command: ["sh", "-c", "date >> /data/boots; touch /tmp/ok; exec sleep 3600"]
    volumes: [ "data:/data" ]
    healthcheck:
      test: ["CMD-SHELL", "test -f /tmp/ok"]
      interval: 1s
      timeout: 1s
      retries: 30
  api:
    image: ${IMAGE}
    stop_grace_period: 1s
    command: sh -c 'exec sleep 3600'
    environment:
      DB_HOST: \${DB_HOST:-db}
    depends_on:
      db: { condition: service_healthy }
  web:
    image: ${IMAGE}
    stop_grace_period: 1s
    command: ["sh", "-c", "mkdir -p /www && echo hello-from-web > /www/index.html && exec httpd -f -p 8080 -h /www"]
    ports: [ "127.0.0.1:\${WEB_PORT}:8080" ]
    depends_on: [ api ]
volumes:
  data: {}
`;
}

function workload(id: string, project: string, composeYaml: string, env: Record<string, string> = {}, extra: Partial<ComposeWorkload['spec']> = {}): ComposeWorkload {
  return { id, type: 'compose', revision: 'r1', spec: { project, composeYaml, env, ...extra } };
}

function ctxFor(w: ComposeWorkload, signal = AbortSignal.timeout(120_000)): ApplyContext {
  return { nodeId, specHash: BUILTIN_TYPES.hash(w), hashVersion: BUILTIN_TYPES.version(w), signal };
}

async function up(w: ComposeWorkload): Promise<ObservedWorkload> {
  const ctx = ctxFor(w);
  await rt.prepare(w, ctx);
  const created = await rt.create(w, ctx);
  try {
    await rt.start(created, ctx.signal);
  } catch (err) {
    // What the executor does after a failed start: nothing half-started stays.
    await rt.remove(created, AbortSignal.timeout(30_000), 'cleanup-after-failed-start');
    throw err;
  }
  return created;
}

async function containersOf(workloadId: string): Promise<Dockerode.ContainerInfo[]> {
  return docker.listContainers({ all: true, filters: { label: [`${LABELS.nodeId}=${nodeId}`, `${LABELS.workloadId}=${workloadId}`] } });
}

function byService(list: Dockerode.ContainerInfo[]): Map<string, Dockerode.ContainerInfo> {
  return new Map(list.map((c) => [c.Labels['com.docker.compose.service'] ?? '', c]));
}

async function observedOf(workloadId: string): Promise<ObservedWorkload | undefined> {
  return (await rt.observe()).find((o) => o.workloadId === workloadId);
}

/** One file out of a container, through the archive endpoint (a tar with one entry). */
async function readFile(containerId: string, path: string): Promise<string> {
  const stream = await docker.getContainer(containerId).getArchive({ path });
  const chunks: Buffer[] = [];
  for await (const c of stream as AsyncIterable<Buffer>) chunks.push(c);
  const tar = Buffer.concat(chunks);
  const size = Number.parseInt(tar.subarray(124, 136).toString('ascii').replace(/\0/g, '').trim(), 8);
  return tar.subarray(512, 512 + size).toString('utf8');
}

async function expectError(p: Promise<unknown>): Promise<WorkloadError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof WorkloadError, `expected a WorkloadError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected the call to fail');
}

describe('compose runtime on the real dockerd', { skip, timeout: 240_000 }, () => {
  let port = 0;
  const project = `app${tag}`;
  const id = `shop-${tag}`;
  let env: Record<string, string> = {};

  before(async () => {
    port = await freePort();
    env = { WEB_PORT: String(port) };
  });

  after(async () => {
    await cleanupDockerByLabel(nodeId);
  });

  it('brings up a 3-service app in dependency order, service_healthy honoured, web on 127.0.0.1', async () => {
    const w = workload(id, project, appYaml(), env);
    await up(w);
    const list = await containersOf(id);
    const s = byService(list);
    assert.deepEqual([...s.keys()].sort(), ['api', 'db', 'web']);
    for (const c of list) assert.equal(c.State, 'running', `${c.Names[0]} is ${c.State}`);
    // docker compose's own names and labels.
    assert.equal(s.get('api')?.Names[0], `/${project}-api-1`);
    const api = s.get('api') as Dockerode.ContainerInfo;
    assert.equal(api.Labels['com.docker.compose.project'], project);
    assert.equal(api.Labels['com.docker.compose.oneoff'], 'False');
    assert.equal(api.Labels['com.docker.compose.container-number'], '1');
    assert.equal(api.Labels['com.docker.compose.depends_on'], 'db:service_healthy:false');
    assert.match(api.Labels['com.docker.compose.config-hash'] ?? '', /^[0-9a-f]{64}$/);
    const nets = await docker.listNetworks({ filters: { label: [`${LABELS.nodeId}=${nodeId}`] } });
    assert.deepEqual(nets.map((n) => n.Name), [`${project}_default`]);
    assert.equal(nets[0]?.Labels?.['com.docker.compose.network'], 'default');
    const vols = await docker.listVolumes({ filters: { label: [`${LABELS.nodeId}=${nodeId}`] } });
    assert.deepEqual((vols.Volumes ?? []).map((v) => v.Name), [`${project}_data`]);
    assert.equal(vols.Volumes?.[0]?.Labels?.['com.docker.compose.volume'], 'data');

    // Order: db, then api only once db was healthy, then web.
    const info = new Map<string, Dockerode.ContainerInspectInfo>();
    for (const [name, c] of s) info.set(name, await docker.getContainer(c.Id).inspect());
    const started = (n: string) => Date.parse(info.get(n)?.State.StartedAt ?? '');
    assert.ok(started('db') < started('api') && started('api') <= started('web'), 'start order db < api <= web');
    const health = (info.get('db')?.State as { Health?: { Log?: { End: string; ExitCode: number }[] } }).Health;
    const firstHealthy = health?.Log?.find((l) => l.ExitCode === 0);
    assert.ok(firstHealthy && Date.parse(firstHealthy.End) <= started('api'), 'api started after db passed its healthcheck');

    assert.equal((await httpGet(port)).trim(), 'hello-from-web');
    const o = await observedOf(id);
    assert.equal(o?.state, 'running');
    assert.equal(o?.specHash, BUILTIN_TYPES.hash(w), 'the spec hash rebuilt from container labels is the registry hash');
    const live = rt.live(id) as { services: { name: string; health?: string }[] };
    assert.deepEqual(live.services.map((x) => x.name), ['db', 'api', 'web']);
    assert.equal(live.services[0]?.health, 'healthy');
  });

  it('docker-compose 1.29 (-p X ps) lists the containers Up, and up -d afterwards changes nothing', { skip: COMPOSE_BIN ? false : 'docker-compose not installed' }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'persys-compose-'));
    try {
      await writeFile(join(dir, 'docker-compose.yml'), appYaml());
      const opts = { cwd: dir, env: { ...process.env, ...env, DOCKER_HOST: `unix://${socketPath}` }, timeout: 60_000 };
      const before = byService(await containersOf(id));
      const ps = await run(COMPOSE_BIN as string, ['-p', project, 'ps'], opts);
      for (const svc of ['db', 'api', 'web']) assert.match(ps.stdout, new RegExp(`${project}-${svc}-1 .* Up`), ps.stdout);
      const upd = await run(COMPOSE_BIN as string, ['-p', project, 'up', '-d'], opts);
      const text = `${upd.stdout}${upd.stderr}`;
      assert.match(text, /is up-to-date/, text);
      assert.doesNotMatch(text, /Recreating|Creating/, text);
      const afterIds = byService(await containersOf(id));
      for (const [svc, c] of before) assert.equal(afterIds.get(svc)?.Id, c.Id, `${svc} kept its container`);
      assert.equal(afterIds.size, 3);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("changing the api's env recreates only api; plan reasons name the service and the field", async () => {
    const w1 = workload(id, project, appYaml(), env);
    const w2 = workload(id, project, appYaml(), { ...env, DB_HOST: 'db.internal' });
    assert.deepEqual(BUILTIN_TYPES.of(w2).describeChanges(BUILTIN_TYPES.canonical(w1), BUILTIN_TYPES.canonical(w2)), ['api: env DB_HOST changed']);
    const before = byService(await containersOf(id));
    const o = await observedOf(id);
    assert.ok(o);
    const ctx = ctxFor(w2);
    await rt.prepare(w2, ctx);
    const updated = await rt.update(o, w2, ctx);
    assert.equal(updated.specHash, BUILTIN_TYPES.hash(w2));
    const afterList = byService(await containersOf(id));
    assert.notEqual(afterList.get('api')?.Id, before.get('api')?.Id, 'api was recreated');
    assert.equal(afterList.get('db')?.Id, before.get('db')?.Id, 'db kept its container');
    assert.equal(afterList.get('web')?.Id, before.get('web')?.Id, 'web kept its container');
    const apiEnv = (await docker.getContainer(afterList.get('api')?.Id as string).inspect()).Config.Env;
    assert.ok(apiEnv.includes('DB_HOST=db.internal'));
    const now = await observedOf(id);
    assert.equal(now?.specHash, BUILTIN_TYPES.hash(w2));
    assert.equal(now?.state, 'running');
  });

  it('removing the app keeps its named volume; re-adding reuses it (the file written before is still there)', async () => {
    const o = await observedOf(id);
    assert.ok(o);
    await rt.stop(o, AbortSignal.timeout(60_000));
    // Stop ran in reverse dependency order: web, then api, then db (each takes its 1 s grace period).
    const finished = new Map<string, number>();
    for (const [svc, c] of byService(await containersOf(id))) finished.set(svc, Date.parse((await docker.getContainer(c.Id).inspect()).State.FinishedAt));
    assert.ok((finished.get('web') ?? 0) <= (finished.get('api') ?? 0) && (finished.get('api') ?? 0) <= (finished.get('db') ?? 0), `stop order web <= api <= db: ${JSON.stringify([...finished])}`);
    await rt.remove(o, AbortSignal.timeout(60_000), 'removed-from-desired');
    assert.equal((await containersOf(id)).length, 0);
    assert.equal((await docker.listNetworks({ filters: { label: [`${LABELS.nodeId}=${nodeId}`] } })).length, 0);
    const vols = await docker.listVolumes({ filters: { label: [`${LABELS.nodeId}=${nodeId}`] } });
    assert.deepEqual((vols.Volumes ?? []).map((v) => v.Name), [`${project}_data`]);
    assert.deepEqual((rt.live(id) as { volumesKept?: string[] }).volumesKept, [`${project}_data`]);

    await up(workload(id, project, appYaml(), env));
    const db = byService(await containersOf(id)).get('db') as Dockerode.ContainerInfo;
    const boots = (await readFile(db.Id, '/data/boots')).trim().split('\n');
    assert.ok(boots.length >= 2, `the volume kept the first run's line: ${JSON.stringify(boots)}`);
  });

  it('volumes: delete removes the named volumes with the app', async () => {
    const w = workload(id, project, appYaml(), env, { volumes: 'delete' });
    const o = await observedOf(id);
    assert.ok(o);
    const ctx = ctxFor(w);
    await rt.update(o, w, ctx);
    const now = await observedOf(id);
    assert.ok(now);
    await rt.remove(now, AbortSignal.timeout(60_000), 'removed-from-desired');
    const vols = await docker.listVolumes({ filters: { label: [`${LABELS.nodeId}=${nodeId}`] } });
    assert.deepEqual(vols.Volumes ?? [], []);
  });

  it('a build-only service and an unsupported key are INVALID_SPEC with their path, and nothing is created', async () => {
    const doc = (yaml: string) => ({
      apiVersion: 'persys.dev/v1',
      kind: 'DesiredState',
      nodeId,
      generation: 1,
      workloads: [{ id: 'bad', type: 'compose', spec: { project: `bad${tag}`, composeYaml: yaml } }],
    });
    const buildOnly = `services:\n  api:\n    build: .\n`;
    const unsupported = `services:\n  api:\n    image: ${IMAGE}\n    devices: ["/dev/null:/dev/null"]\n`;
    const r1 = validateDesiredState(doc(buildOnly));
    assert.ok(!r1.ok);
    assert.deepEqual(r1.issues, [{ path: 'workloads[0].spec.composeYaml', message: 'services.api: has only `build`: an agent cannot build images, so the service needs an `image`' }]);
    const r2 = validateDesiredState(doc(unsupported));
    assert.ok(!r2.ok);
    assert.deepEqual(r2.issues, [{ path: 'workloads[0].spec.composeYaml', message: 'services.api.devices: not supported' }]);
    // The runtime refuses them too (a document is validated first; this is the last line).
    for (const yaml of [buildOnly, unsupported]) {
      const w = workload('bad', `bad${tag}`, yaml);
      const e = await expectError(rt.create(w, { nodeId, specHash: 'sha256:x', signal: AbortSignal.timeout(30_000) }));
      assert.equal(e.code, 'INVALID_SPEC');
    }
    assert.equal((await containersOf('bad')).length, 0);
    const nets = await docker.listNetworks({ filters: { label: [`${LABELS.workloadId}=bad`, `${LABELS.nodeId}=${nodeId}`] } });
    assert.equal(nets.length, 0);
  });

  it('a dependency that never becomes healthy fails naming the service, and nothing is left half-started', async () => {
    const yaml = `
services:
  db:
    image: ${IMAGE}
    command: ["sleep", "3600"]
    healthcheck: { test: ["CMD-SHELL", "test -f /tmp/never"], interval: 1s, timeout: 1s, retries: 2 }
  api:
    image: ${IMAGE}
    command: ["sleep", "3600"]
    depends_on: { db: { condition: service_healthy } }
`;
    const w = workload(`sick-${tag}`, `sick${tag}`, yaml);
    const e = await expectError(up(w));
    assert.equal(e.code, 'DEPENDENCY_FAILED');
    assert.match(e.message, /service api depends on db \(service_healthy\): db is unhealthy/);
    assert.equal((await containersOf(w.id)).length, 0);
    const nets = await docker.listNetworks({ filters: { label: [`${LABELS.workloadId}=${w.id}`, `${LABELS.nodeId}=${nodeId}`] } });
    assert.equal(nets.length, 0);
  });

  it('service_completed_successfully waits for exit 0; required: false turns a failed dependency into a warning', async () => {
    const yaml = `
services:
  migrate: { image: ${IMAGE}, command: ["sh", "-c", "sleep 1; echo migrated"] }
  seed: { image: ${IMAGE}, command: ["sh", "-c", "echo seed-failed >&2; exit 3"] }
  api:
    image: ${IMAGE}
    stop_grace_period: 1s
    command: ["sleep", "3600"]
    depends_on:
      migrate: { condition: service_completed_successfully }
      seed: { condition: service_completed_successfully, required: false }
`;
    const w = workload(`jobs-${tag}`, `jobs${tag}`, yaml);
    await up(w);
    const s = byService(await containersOf(w.id));
    const info = async (svc: string) => docker.getContainer(s.get(svc)?.Id as string).inspect();
    const [migrate, api, seed] = [await info('migrate'), await info('api'), await info('seed')];
    assert.equal(api.State.Status, 'running');
    assert.equal(migrate.State.ExitCode, 0);
    assert.ok(Date.parse(migrate.State.FinishedAt) <= Date.parse(api.State.StartedAt), 'api started after migrate completed');
    assert.equal(seed.State.ExitCode, 3);
    // seed is only an optional dependency: the app runs; its service entry still shows the failure.
    const o = await observedOf(w.id);
    assert.equal(o?.state, 'running');
    const live = rt.live(w.id) as { services: { name: string; exitCode?: number; error?: string; logTail?: string[] }[] };
    const seedStatus = live.services.find((x) => x.name === 'seed');
    assert.equal(seedStatus?.exitCode, 3);
    assert.equal(seedStatus?.error, 'exited with code 3');
    assert.deepEqual(seedStatus?.logTail, ['seed-failed']);
  });

  it('a dependency that exits non-zero fails service_completed_successfully naming it, nothing left behind', async () => {
    const yaml = `
services:
  migrate: { image: ${IMAGE}, command: ["sh", "-c", "exit 4"] }
  api: { image: ${IMAGE}, command: ["sleep", "3600"], depends_on: { migrate: { condition: service_completed_successfully } } }
`;
    const w = workload(`badjob-${tag}`, `badjob${tag}`, yaml);
    const e = await expectError(up(w));
    assert.equal(e.code, 'DEPENDENCY_FAILED');
    assert.equal(e.message, 'service api depends on migrate (service_completed_successfully): migrate exited with code 4');
    assert.equal((await containersOf(w.id)).length, 0);
  });

  it('a crashing service carries its crash evidence: exit code, restarts, engine error, log tail', async () => {
    const yaml = `
services:
  ok: { image: ${IMAGE}, command: ["sleep", "3600"], stop_grace_period: 1s }
  crasher: { image: ${IMAGE}, command: ["sh", "-c", "echo boom; exit 7"], restart: "on-failure:2" }
  broken: { image: ${IMAGE}, command: ["/no/such/binary"], depends_on: [ok, crasher] }
`;
    const w = workload(`crash-${tag}`, `crash${tag}`, yaml);
    const ctx = ctxFor(w);
    await rt.prepare(w, ctx);
    const created = await rt.create(w, ctx);
    const e = await expectError(rt.start(created, ctx.signal));
    assert.match(e.message, /^service broken: .*no such file or directory/);
    // The crasher runs out of its two restarts (bounded wait: 30 s, twice a second).
    let crasher: { state?: string; restarts?: number } | undefined;
    for (let i = 0; i < 60 && !(crasher?.state === 'exited' && crasher.restarts === 2); i++) {
      await new Promise((r) => setTimeout(r, 500));
      await observedOf(w.id);
      crasher = (rt.live(w.id) as { services: { name: string; state: string; restarts?: number }[] }).services.find((x) => x.name === 'crasher');
    }
    await observedOf(w.id);
    const services = (rt.live(w.id) as { services: { name: string; state: string; exitCode?: number; restarts?: number; error?: string; logTail?: string[]; finishedAt?: string }[] }).services;
    const c = services.find((x) => x.name === 'crasher');
    assert.equal(c?.exitCode, 7);
    assert.equal(c?.restarts, 2);
    assert.equal(c?.error, 'exited with code 7');
    assert.deepEqual(c?.logTail, ['boom', 'boom', 'boom']);
    assert.ok(c?.finishedAt && !Number.isNaN(Date.parse(c.finishedAt)));
    const broken = services.find((x) => x.name === 'broken');
    assert.match(broken?.error ?? '', /no such file or directory/, 'the exact engine error of a failed start');
    assert.equal(services.find((x) => x.name === 'ok')?.state, 'running');
    assert.equal(services.find((x) => x.name === 'ok')?.restarts, 0);
    const o = await observedOf(w.id);
    assert.ok(o);
    await rt.remove(o, AbortSignal.timeout(60_000), 'removed-from-desired');
  });

  it('service_healthy on a service without a healthcheck fails clearly', async () => {
    const yaml = `
services:
  db: { image: ${IMAGE}, command: ["sleep", "3600"] }
  api: { image: ${IMAGE}, command: ["sleep", "3600"], depends_on: { db: { condition: service_healthy } } }
`;
    const w = workload(`nohc-${tag}`, `nohc${tag}`, yaml);
    const e = await expectError(up(w));
    assert.match(e.message, /api waits for db to be healthy, but db has no healthcheck/);
    assert.equal((await containersOf(w.id)).length, 0);
  });
});
