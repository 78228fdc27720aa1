/**
 * DockerRuntime against the real dockerd (scripts/testbed/docker.sh starts one and builds the
 * persys-test/busybox images). Every run has its own node id; everything it creates carries that id
 * and is removed by label in after(), whether the tests passed or not. Only loopback is ever contacted.
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import Dockerode from 'dockerode';
import * as v from 'valibot';

import { WorkloadError } from '../../src/errors/index.js';
import { silentLogger } from '../../src/log.js';
import { DockerRuntime } from '../../src/runtimes/docker/docker-runtime.js';
import { LABELS, type ApplyContext, type ObservedWorkload, type RuntimeEvent } from '../../src/runtimes/runtime.js';
import { containerWorkload, type ContainerWorkload } from '../../src/spec/desired-state.js';
import { cleanupDockerByLabel, dockerSocketPath, requireEngine, testNodeId } from '../helpers/engines.js';

const IMAGE = 'persys-test/busybox:1';
const MISSING_IMAGE = 'persys-test/does-not-exist:1';

const skip = await requireEngine('docker');
const socket = dockerSocketPath();
const socketPath = socket instanceof Error ? '/var/run/docker.sock' : socket;

const nodeId = testNodeId('test-docker');
/** A second node's id, for containers observe() must not return. */
const otherNodeId = testNodeId('test-docker-other');
const namePrefix = `t-${nodeId}-`;

function workload(id: string, spec: Record<string, unknown>, extra: Record<string, unknown> = {}): ContainerWorkload {
  return v.parse(containerWorkload, { id, type: 'container', revision: 'r1', spec: { image: IMAGE, ...spec }, ...extra });
}

function applyContext(specHash: string, phases: string[] = [], signal: AbortSignal = AbortSignal.timeout(60_000)): ApplyContext {
  return { nodeId, specHash, signal, progress: (p) => phases.push(p) };
}

/** A port that was free a moment ago, on loopback only. */
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

async function expectWorkloadError(p: Promise<unknown>): Promise<WorkloadError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof WorkloadError, `expected a WorkloadError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected the call to fail');
}

/** Polls `inspect` until the container is in `state` (bounded: 15 s). */
async function waitForState(rt: DockerRuntime, o: ObservedWorkload, state: string): Promise<ObservedWorkload> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const now = await rt.inspect(o);
    if (now?.state === state) return now;
    if (Date.now() > deadline) assert.fail(`container ${o.name} did not reach ${state} (last: ${now?.state ?? 'gone'})`);
    await sleep(100);
  }
}

/** GET on 127.0.0.1 with a few bounded retries while httpd comes up. */
async function fetchLoopback(port: number): Promise<{ status: number; body: string }> {
  let lastError: unknown;
  for (let attempt = 0; attempt < 50; attempt++) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(2_000) });
      return { status: res.status, body: await res.text() };
    } catch (err) {
      lastError = err;
      await sleep(100);
    }
  }
  throw lastError instanceof Error ? lastError : new Error(String(lastError));
}

/** What dockerd itself answers to a pull, read without dockerode, to prove the message is kept verbatim. */
function rawPullMessage(ref: string): Promise<string> {
  const [repo, tag] = ref.split(':');
  const path = `/images/create?fromImage=${encodeURIComponent(repo ?? ref)}&tag=${encodeURIComponent(tag ?? 'latest')}`;
  return new Promise<string>((resolve, reject) => {
    const req = request({ socketPath, method: 'POST', path, timeout: 60_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        // Either an error body, or a 200 progress stream whose last line carries the error.
        const lines = Buffer.concat(chunks).toString('utf8').trim().split('\n');
        const parsed: unknown = JSON.parse(lines.at(-1) ?? '{}');
        const obj = typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>) : {};
        const msg = typeof obj.message === 'string' ? obj.message : typeof obj.error === 'string' ? obj.error : '';
        resolve(msg);
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('raw pull timed out')));
    req.on('error', reject);
    req.end();
  });
}

describe('DockerRuntime (real dockerd)', { skip }, () => {
  let rt: DockerRuntime;
  let docker: Dockerode;
  let webPort = 0;
  let web: ObservedWorkload | undefined;
  let exited: ObservedWorkload | undefined;

  before(() => {
    rt = new DockerRuntime({ socketPath, nodeId, namePrefix, logger: silentLogger() });
    docker = new Dockerode({ socketPath });
  });

  after(async () => {
    // Both ids: the second only labels the foreign container made by the observe test.
    const results = await Promise.allSettled([cleanupDockerByLabel(nodeId), cleanupDockerByLabel(otherNodeId)]);
    for (const r of results) if (r.status === 'rejected') throw r.reason;
  });

  it('health: up, with the engine version and capacity', async () => {
    const h = await rt.health();
    assert.equal(h.up, true, h.reason);
    assert.match(h.version ?? '', /^\d+\.\d+/);
    assert.ok((h.capacity?.cpus ?? 0) >= 1, `cpus: ${String(h.capacity?.cpus)}`);
    assert.ok((h.capacity?.memoryBytes ?? 0) > 64 * 1024 * 1024, `memoryBytes: ${String(h.capacity?.memoryBytes)}`);
  });

  it('health: a bogus socket path is down, with the reason', async () => {
    const bogus = new DockerRuntime({ socketPath: '/nonexistent/persys/docker.sock', nodeId, namePrefix, logger: silentLogger() });
    const h = await bogus.health();
    assert.equal(h.up, false);
    assert.match(h.reason, /RUNTIME_UNAVAILABLE/);
    assert.match(h.reason, /ENOENT \/nonexistent\/persys\/docker\.sock/);
    const e = await expectWorkloadError(bogus.observe());
    assert.equal(e.code, 'RUNTIME_UNAVAILABLE');
  });

  it('create + start: labels, a port on 127.0.0.1, reachable over loopback', async () => {
    webPort = await freePort();
    const w = workload(
      'web',
      {
        command: ['sh', '-c', 'mkdir -p /www && echo persys-ok > /www/index.html && exec httpd -f -p 8080 -h /www'],
        ports: [{ hostIp: '127.0.0.1', hostPort: webPort, containerPort: 8080 }],
        labels: { 'com.example/team': 'edge' },
        env: { GREETING: 'hello' },
        resources: { memoryBytes: 64 * 1024 * 1024, cpus: 0.5 },
        stopTimeoutSeconds: 1,
      },
      { revision: 'r7' },
    );
    const phases: string[] = [];
    web = await rt.create(w, applyContext('hash-web', phases));
    assert.deepEqual(phases, ['Creating'], 'the image is local: no Pulling phase');
    assert.equal(web.state, 'created');
    assert.equal(web.workloadId, 'web');
    assert.equal(web.type, 'container');
    assert.equal(web.runtime, 'docker');
    assert.equal(web.name, `${namePrefix}web`);
    assert.equal(web.revision, 'r7');
    assert.equal(web.specHash, 'hash-web');
    assert.ok(web.createdAt && Number.isFinite(Date.parse(web.createdAt)));

    const info = await docker.getContainer(web.runtimeId).inspect();
    const labels = info.Config.Labels;
    assert.equal(labels[LABELS.managed], 'true');
    assert.equal(labels[LABELS.nodeId], nodeId);
    assert.equal(labels[LABELS.workloadId], 'web');
    assert.equal(labels[LABELS.revision], 'r7');
    assert.equal(labels[LABELS.specHash], 'hash-web');
    assert.equal(labels[LABELS.type], 'container');
    assert.equal(labels['com.example/team'], 'edge');
    assert.ok(info.Config.Env.includes('GREETING=hello'));
    assert.equal(info.HostConfig.RestartPolicy?.Name, 'unless-stopped');
    assert.equal(info.HostConfig.Memory, 64 * 1024 * 1024);
    assert.equal(info.HostConfig.NanoCpus, 500_000_000);

    await rt.start(web, AbortSignal.timeout(30_000));
    const running = await waitForState(rt, web, 'running');
    assert.equal(running.restartCount, 0);
    assert.equal(running.oomKilled, false);
    assert.ok(running.startedAt && Number.isFinite(Date.parse(running.startedAt)));
    assert.equal(running.exitCode, null);

    const res = await fetchLoopback(webPort);
    assert.equal(res.status, 200);
    assert.equal(res.body.trim(), 'persys-ok');
  });

  it('observe: exactly our containers, with labels, states and the exit code of an exited one', async () => {
    assert.ok(web, 'needs the web container');
    const w = workload('exit3', { command: ['sh', '-c', 'echo out; echo err >&2; exit 3'], restartPolicy: 'no' });
    exited = await rt.create(w, applyContext('hash-exit3'));
    await rt.start(exited, AbortSignal.timeout(30_000));
    const done = await waitForState(rt, exited, 'exited');
    assert.equal(done.exitCode, 3);
    assert.ok(done.finishedAt && Number.isFinite(Date.parse(done.finishedAt)));

    // Not ours: another node's container, a compose container of this node, an unlabelled one.
    const foreign = await docker.createContainer({
      name: `t-${otherNodeId}-foreign`,
      Image: IMAGE,
      Labels: { [LABELS.managed]: 'true', [LABELS.nodeId]: otherNodeId, [LABELS.workloadId]: 'web', [LABELS.type]: 'container' },
    });
    const compose = await docker.createContainer({
      name: `${namePrefix}compose-api`,
      Image: IMAGE,
      Labels: { [LABELS.managed]: 'true', [LABELS.nodeId]: nodeId, [LABELS.workloadId]: 'shop', [LABELS.type]: 'compose' },
    });
    const unlabelled = await docker.createContainer({ name: `${namePrefix}unlabelled`, Image: IMAGE, Labels: { [LABELS.nodeId]: nodeId } });
    try {
      const seen = await rt.observe();
      const byId = new Map(seen.map((o) => [o.workloadId, o]));
      assert.deepEqual([...byId.keys()].sort(), ['exit3', 'web']);
      assert.equal(seen.length, 2);

      const webSeen = byId.get('web');
      assert.equal(webSeen?.runtimeId, web.runtimeId);
      assert.equal(webSeen?.state, 'running');
      assert.equal(webSeen?.revision, 'r7');
      assert.equal(webSeen?.specHash, 'hash-web');
      assert.equal(webSeen?.name, `${namePrefix}web`);
      assert.equal(webSeen?.exitCode, undefined);
      // observe() is one list call: these need inspect().
      assert.equal(webSeen?.restartCount, undefined);
      assert.equal(webSeen?.startedAt, undefined);

      const exitSeen = byId.get('exit3');
      assert.equal(exitSeen?.state, 'exited');
      assert.equal(exitSeen?.exitCode, 3);
      assert.equal(exitSeen?.revision, 'r1');
      assert.equal(exitSeen?.specHash, 'hash-exit3');
    } finally {
      for (const c of [foreign, compose, unlabelled]) await c.remove({ force: true });
    }
  });

  it('logTail: the last lines of stdout and stderr', async () => {
    assert.ok(exited, 'needs the exited container');
    const lines = await rt.logTail(exited, 50);
    assert.deepEqual([...lines].sort(), ['err', 'out']);
    assert.deepEqual(await rt.logTail(exited, 1), [lines.at(-1)]);
  });

  it('port conflict: start fails with PORT_CONFLICT, and removing leaves nothing behind', async () => {
    assert.ok(web, 'needs the running web container');
    const w = workload('web2', { command: ['httpd', '-f', '-p', '8080'], ports: [{ hostIp: '127.0.0.1', hostPort: webPort, containerPort: 8080 }] });
    const created = await rt.create(w, applyContext('hash-web2'));
    const e = await expectWorkloadError(rt.start(created, AbortSignal.timeout(30_000)));
    assert.equal(e.code, 'PORT_CONFLICT');
    assert.match(e.message, new RegExp(`127\\.0\\.0\\.1:${webPort}.*port is already allocated`));
    assert.doesNotMatch(e.message, /HTTP code/);
    // Docker keeps the container, never started; the executor removes it, as here.
    assert.equal((await rt.inspect(created))?.state, 'created');
    await rt.remove(created, AbortSignal.timeout(30_000));
    const ids = (await rt.observe()).map((o) => o.workloadId).sort();
    assert.deepEqual(ids, ['exit3', 'web']);
    assert.equal((await rt.inspect(web))?.state, 'running', 'the holder of the port is untouched');
  });

  it('stop / start / remove, each idempotent (304 and 404 are success)', async () => {
    assert.ok(web, 'needs the web container');
    await rt.stop(web, AbortSignal.timeout(30_000), 1);
    const stopped = await rt.inspect(web);
    assert.equal(stopped?.state, 'exited');
    await rt.stop(web, AbortSignal.timeout(30_000), 1); // 304

    await rt.start(web, AbortSignal.timeout(30_000));
    assert.equal((await rt.inspect(web))?.state, 'running');
    await rt.start(web, AbortSignal.timeout(30_000)); // 304

    await rt.remove(web, AbortSignal.timeout(30_000));
    assert.equal(await rt.inspect(web), undefined);
    await rt.remove(web, AbortSignal.timeout(30_000)); // 404
    assert.deepEqual((await rt.observe()).map((o) => o.workloadId), ['exit3']);
  });

  it('prepare with pullPolicy Never: a missing image is IMAGE_NOT_FOUND', async () => {
    const w = workload('never', { image: MISSING_IMAGE, pullPolicy: 'Never' });
    const phases: string[] = [];
    const e = await expectWorkloadError(rt.prepare(w, applyContext('hash-never', phases)));
    assert.equal(e.code, 'IMAGE_NOT_FOUND');
    assert.match(e.message, /No such image: persys-test\/does-not-exist:1/);
    assert.deepEqual(phases, [], 'Never does not pull');
    // A present image is fine with Never.
    await rt.prepare(workload('never-ok', { pullPolicy: 'Never' }), applyContext('hash-never-ok'));
  });

  it('pull of a missing image: a coded error with the exact engine message; create leaves nothing', async () => {
    const expected = await rawPullMessage(MISSING_IMAGE);
    assert.notEqual(expected, '');
    const phases: string[] = [];
    const w = workload('ghost', { image: MISSING_IMAGE, pullPolicy: 'IfNotPresent' });
    const e = await expectWorkloadError(rt.prepare(w, applyContext('hash-ghost', phases)));
    assert.ok(e.code === 'IMAGE_PULL_FAILED' || e.code === 'IMAGE_NOT_FOUND', `code ${e.code}: ${e.message}`);
    assert.equal(e.message, expected);
    assert.equal(e.details?.operation, 'pull');
    assert.deepEqual(phases, ['Pulling']);

    const e2 = await expectWorkloadError(rt.create(w, applyContext('hash-ghost')));
    assert.equal(e2.code, e.code);
    assert.ok(!(await rt.observe()).some((o) => o.workloadId === 'ghost'));
  });

  it('create with a missing bind source: MOUNT_FAILED and nothing created', async () => {
    const w = workload('badmount', { volumes: [{ type: 'bind', source: `/nonexistent/${nodeId}`, target: '/data' }] });
    const e = await expectWorkloadError(rt.create(w, applyContext('hash-badmount')));
    assert.equal(e.code, 'MOUNT_FAILED');
    assert.match(e.message, /bind source path does not exist/);
    assert.ok(!(await rt.observe()).some((o) => o.workloadId === 'badmount'));
  });

  it('an aborted signal gives TIMEOUT', async () => {
    const ac = new AbortController();
    ac.abort();
    const e = await expectWorkloadError(rt.create(workload('aborted', {}), applyContext('hash-aborted', [], ac.signal)));
    assert.equal(e.code, 'TIMEOUT');
    assert.ok(!(await rt.observe()).some((o) => o.workloadId === 'aborted'));
  });

  it('events: delivers die for our container and ends when the signal aborts', async () => {
    const ac = new AbortController();
    const seen: RuntimeEvent[] = [];
    let resolveDie: (e: RuntimeEvent) => void = () => undefined;
    const died = new Promise<RuntimeEvent>((resolve) => {
      resolveDie = resolve;
    });
    const stream = rt.events(ac.signal, (e) => {
      seen.push(e);
      if (e.action === 'die' && e.workloadId === 'blip') resolveDie(e);
    });
    let streamError: unknown;
    stream.catch((err: unknown) => {
      streamError = err;
    });

    const blip = await rt.create(workload('blip', { command: ['sh', '-c', 'sleep 0.2; exit 1'], restartPolicy: 'no' }), applyContext('hash-blip'));
    await rt.start(blip, AbortSignal.timeout(30_000));
    const timeout = sleep(15_000).then(() => undefined);
    const die = await Promise.race([died, timeout]);
    assert.ok(die, `no die event within 15 s; saw ${JSON.stringify(seen)}; stream error: ${String(streamError)}`);
    assert.equal(die.runtimeId, blip.runtimeId);
    assert.ok(seen.some((e) => e.action === 'start' && e.workloadId === 'blip'));
    assert.ok(seen.every((e) => e.workloadId !== 'shop'), 'no compose events');

    ac.abort();
    await stream; // resolves, does not reject, once aborted
    assert.equal(streamError, undefined);
  });
});
