/**
 * The built CLI as a real process, against the real dockerd and a local HTTPS fleet server with a
 * throwaway CA: the foundation's promises, end to end.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Docker from 'dockerode';
import { AgentProcess, waitFor } from '../helpers/agent-process.js';
import { cleanupDockerByLabel, requireEngine, testNodeId } from '../helpers/engines.js';
import { startFleetServer, type FleetServer, type JsonObject } from '../helpers/fleet-server.js';
import { makeThrowawayCa } from '../helpers/tls.js';

const skip = await requireEngine('docker');
const IMAGE = 'persys-test/busybox:1';

interface ReportWorkload {
  id: string;
  phase: string;
  actualState: string;
  runtimeId?: string;
  desiredState: string;
}
interface Report extends JsonObject {
  seq: number;
  observedGeneration: number | null;
  sync: { lastError: { code: string; message: string } | null };
  workloads: ReportWorkload[];
}

const asReport = (r: JsonObject) => r as Report;
const wl = (r: Report, id: string) => r.workloads.find((w) => w.id === id);

function container(id: string, extra: Record<string, unknown> = {}, spec: Record<string, unknown> = {}) {
  // busybox sleep as PID 1 ignores SIGTERM, so keep the stop timeout short.
  return { id, type: 'container', ...extra, spec: { image: IMAGE, stopTimeoutSeconds: 1, ...spec } };
}

describe('agent against real dockerd and an HTTPS fleet server', { skip, timeout: 600_000 }, () => {
  const nodeId = testNodeId('test-e2e');
  const docker = new Docker({ socketPath: '/var/run/docker.sock' });
  let dir: string;
  let server: FleetServer;
  let agent: AgentProcess | undefined;
  let configPath: string;
  let ids: Record<string, string> = {};
  let generation = 0;

  const publish = (workloads: unknown[], gen = ++generation) =>
    server.setDocument(nodeId, { apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId, generation: gen, workloads });

  const ours = async () => {
    const list = await docker.listContainers({ all: true, filters: { label: [`dev.persys.node-id=${nodeId}`] } });
    return new Map(list.map((c) => [c.Labels['dev.persys.workload-id']!, c]));
  };

  /** Only reports sent after this call count: older ones may match a predicate by accident. */
  const mark = () => Math.max(0, ...server.reports(nodeId).map((r) => asReport(r).seq));
  const waitReport = (what: string, pred: (r: Report) => boolean, timeoutMs = 60_000, after = mark()) =>
    server.waitForReport(nodeId, (r) => asReport(r).seq > after && pred(asReport(r)), timeoutMs).then(asReport, (err: unknown) => {
      throw new Error(`${what}: ${String(err)}\n--- agent log ---\n${agent?.dump() ?? ''}`);
    });

  const startAgent = () => {
    agent = AgentProcess.start(['run', '--config', configPath]);
    return agent;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-e2e-'));
    const pki = await makeThrowawayCa(dir);
    server = await startFleetServer({ tls: { certFile: pki.serverCert, keyFile: pki.serverKey } });
    configPath = join(dir, 'config.json');
    await writeFile(
      configPath,
      JSON.stringify({
        nodeId,
        stateDir: join(dir, 'state'),
        logLevel: 'info',
        source: { url: server.sourceUrl, caFile: pki.caCert, pollIntervalSeconds: 1 },
        status: { url: server.statusUrl, heartbeatSeconds: 5, debounceMs: 100 },
        reconcile: { intervalSeconds: 2 },
        retry: { initialDelaySeconds: 1, maxDelaySeconds: 2 },
        metrics: { listen: '127.0.0.1:0' },
        docker: { namePrefix: `t-${nodeId}-` },
      }),
    );
  });

  after(async () => {
    await agent?.stop('SIGTERM').catch(() => undefined);
    await cleanupDockerByLabel(nodeId).catch(() => undefined);
    await server?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('brings three container workloads up with our labels and reports them Running', async () => {
    publish([container('a'), container('b', {}, { env: { MODE: 'one' } }), container('c')]);
    startAgent();
    const r = await waitReport('three Running', (r) => r.workloads.length === 3 && r.workloads.every((w) => w.phase === 'Running'));
    assert.equal(r.observedGeneration, 1);
    const found = await ours();
    assert.deepEqual([...found.keys()].sort(), ['a', 'b', 'c']);
    for (const [id, c] of found) {
      assert.equal(c.State, 'running');
      assert.equal(c.Labels['dev.persys.managed'], 'true');
      assert.equal(c.Labels['dev.persys.node-id'], nodeId);
      assert.match(c.Labels['dev.persys.spec-hash'] ?? '', /^sha256:[0-9a-f]{64}$/);
      assert.equal(wl(r, id)?.runtimeId, c.Id);
      ids[id] = c.Id;
    }
  });

  it('answers unchanged polls with 304 and costs the server no new document', async () => {
    await waitFor('two 304 answers', () => server.requests({ nodeId, kind: 'document' }).filter((q) => q.status === 304).length >= 2, 30_000);
    const sent = server.requests({ nodeId, kind: 'document' });
    assert.ok(sent.filter((q) => q.status === 304).every((q) => q.headers.ifNoneMatch), 'every 304 answered a conditional GET');
  });

  it('recreates only the workload whose env changed', async () => {
    publish([container('a'), container('b', {}, { env: { MODE: 'two' } }), container('c')]);
    const r = await waitReport('b recreated', (r) => r.observedGeneration === 2 && wl(r, 'b')?.phase === 'Running' && wl(r, 'b')?.runtimeId !== ids.b);
    const found = await ours();
    assert.equal(found.get('a')?.Id, ids.a, 'a was not touched');
    assert.equal(found.get('c')?.Id, ids.c, 'c was not touched');
    assert.notEqual(found.get('b')?.Id, ids.b, 'b is a new container');
    assert.equal(found.size, 3, 'the old b is gone');
    ids = { ...ids, b: found.get('b')!.Id };
    assert.equal(wl(r, 'b')?.runtimeId, ids.b);
    const line = agent!.lines.find((l) => l.msg.startsWith('reconciled:') && JSON.stringify(l).includes('env MODE changed'));
    assert.ok(line, 'the recreate is logged with its reason');
    assert.ok(!agent!.dump().includes('"two"'), 'env values never reach the log');
  });

  it('stops, not removes, a workload whose desiredState is stopped', async () => {
    publish([container('a'), container('b', {}, { env: { MODE: 'two' } }), container('c', { desiredState: 'stopped' })]);
    const r = await waitReport('c Stopped', (r) => r.observedGeneration === 3 && wl(r, 'c')?.phase === 'Stopped');
    assert.equal(wl(r, 'c')?.desiredState, 'stopped');
    const c = (await ours()).get('c');
    assert.ok(c, 'c still exists');
    assert.equal(c.Id, ids.c);
    assert.equal(c.State, 'exited');
  });

  it('removes a workload dropped from the document', async () => {
    publish([container('a'), container('b', {}, { env: { MODE: 'two' } })]);
    await waitReport('c gone', (r) => r.observedGeneration === 4 && !wl(r, 'c') && r.workloads.length === 2);
    const found = await ours();
    assert.deepEqual([...found.keys()].sort(), ['a', 'b']);
  });

  it('re-adopts after a restart and recreates nothing', async () => {
    const code = await agent!.stop('SIGTERM');
    assert.equal(code, 0, 'SIGTERM is a clean exit');
    const before = server.reports(nodeId).length;
    const second = startAgent();
    await waitReport('report from the new process', (r) => server.reports(nodeId).length > before && r.workloads.every((w) => w.phase === 'Running'));
    // Let a few poll and reconcile cycles pass.
    const polls = server.requests({ nodeId, kind: 'document' }).length;
    await waitFor('three more polls', () => server.requests({ nodeId, kind: 'document' }).length >= polls + 3, 30_000);
    const found = await ours();
    assert.equal(found.get('a')?.Id, ids.a);
    assert.equal(found.get('b')?.Id, ids.b);
    assert.equal(second.lines.filter((l) => l.msg.startsWith('reconciled:')).length, 0, `no step was applied:\n${second.dump()}`);
  });

  const faults: { name: string; apply: () => void; code: string; message: RegExp }[] = [
    { name: '404', apply: () => server.setFault(nodeId, { status: 404 }), code: 'DESIRED_STATE_UNAVAILABLE', message: /404/ },
    { name: '500', apply: () => server.setFault(nodeId, { status: 500, body: 'boom' }), code: 'DESIRED_STATE_UNAVAILABLE', message: /500/ },
    { name: 'invalid JSON', apply: () => server.setFault(nodeId, { invalidJson: true }), code: 'DESIRED_STATE_INVALID', message: /JSON/ },
    {
      name: 'a schema error',
      apply: () => publish([container('a', {}, { ports: [{ containerPort: 0 }] })], 50),
      code: 'DESIRED_STATE_INVALID',
      message: /workloads\[0\]\.spec\.ports\[0\]\.containerPort/,
    },
    { name: 'a lower generation', apply: () => publish([], 1), code: 'DESIRED_STATE_STALE', message: /generation/ },
  ];
  for (const f of faults) {
    it(`keeps every workload and reports the error when the server serves ${f.name}`, async () => {
      const before = mark();
      f.apply();
      const r = await waitReport(`${f.code} reported`, (r) => r.sync.lastError?.code === f.code, 60_000, before);
      assert.match(r.sync.lastError!.message, f.message);
      assert.equal(r.observedGeneration, 4, 'the last good desired state stays in force');
      assert.ok(['a', 'b'].every((id) => wl(r, id)?.phase === 'Running'));
      // Recover: the last good document again (same body, same ETag).
      const failing = mark();
      server.setFault(nodeId, null);
      publish([container('a'), container('b', {}, { env: { MODE: 'two' } })], 4);
      await waitReport('error cleared', (r) => r.sync.lastError === null, 60_000, failing);
      const found = await ours();
      assert.equal(found.get('a')?.Id, ids.a);
      assert.equal(found.get('b')?.Id, ids.b);
    });
  }

  it('keeps the previous revision serving when the new one fails terminally', async () => {
    publish([container('a'), container('b', { revision: 'bad' }, { env: { MODE: 'two' }, image: 'persys-test/does-not-exist:1', pullPolicy: 'Never' })], 5);
    const r = await waitReport('b Failed', (r) => r.observedGeneration === 5 && wl(r, 'b')?.phase === 'Failed');
    const b = r.workloads.find((w) => w.id === 'b') as ReportWorkload & { error?: { code: string; message: string } };
    assert.equal(b.error?.code, 'IMAGE_NOT_FOUND');
    assert.match(b.error?.message ?? '', /persys-test\/does-not-exist:1/);
    assert.equal(b.actualState, 'running', 'the old container still runs');
    // Give the loop a few cycles: it must not tear the old container down.
    const polls = server.requests({ nodeId, kind: 'document' }).length;
    await waitFor('three more polls', () => server.requests({ nodeId, kind: 'document' }).length >= polls + 3, 30_000);
    const found = await ours();
    assert.equal(found.get('b')?.Id, ids.b);
    assert.equal(found.get('b')?.State, 'running');
    // A good revision again: b is recreated from the good spec and the error clears.
    publish([container('a'), container('b', { revision: 'good' }, { env: { MODE: 'two' } })], 6);
    await waitReport('b Running again', (r) => r.observedGeneration === 6 && wl(r, 'b')?.phase === 'Running' && !(wl(r, 'b') as { error?: unknown }).error);
  });

  it('removes everything only for a valid document with no workloads', async () => {
    publish([], 10);
    await waitReport('all removed', (r) => r.observedGeneration === 10 && r.workloads.length === 0);
    assert.equal((await ours()).size, 0);
    const code = await agent!.stop('SIGTERM');
    assert.equal(code, 0);
  });
});
