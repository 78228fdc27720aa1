/**
 * The built agent as a real process, against the real dockerd and a local HTTPS fleet server, with a
 * compose workload: it comes up, the status report carries each service, and a change of one
 * service's env recreates that service only. Everything is found and removed by this run's node id.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Docker from 'dockerode';
import { AgentProcess } from '../helpers/agent-process.js';
import { cleanupDockerByLabel, requireEngine, testNodeId } from '../helpers/engines.js';
import { startFleetServer, type FleetServer, type JsonObject } from '../helpers/fleet-server.js';
import { makeThrowawayCa } from '../helpers/tls.js';

const skip = await requireEngine('docker');
const IMAGE = 'persys-test/busybox:1';

interface Service {
  name: string;
  containerIds: string[];
  state: string;
  health?: string;
}
interface ReportWorkload {
  id: string;
  phase: string;
  specHash?: string;
  compose?: { services: Service[] };
}
interface Report extends JsonObject {
  seq: number;
  observedGeneration: number | null;
  workloads: ReportWorkload[];
}
const asReport = (r: JsonObject) => r as Report;

function app(apiMode: string): string {
  return `
services:
  db:
    image: ${IMAGE}
    command: ["sh", "-c", "touch /tmp/ok; exec sleep 3600"]
    stop_grace_period: 1s
    volumes: ["data:/data"]
    healthcheck: { test: ["CMD-SHELL", "test -f /tmp/ok"], interval: 1s, timeout: 1s, retries: 30 }
  api:
    image: ${IMAGE}
    command: ["sleep", "3600"]
    stop_grace_period: 1s
    environment: { MODE: "${apiMode}" }
    depends_on: { db: { condition: service_healthy } }
  web:
    image: ${IMAGE}
    command: ["sleep", "3600"]
    stop_grace_period: 1s
    depends_on: [api]
volumes:
  data: {}
`;
}

describe('agent runs a compose app against real dockerd and an HTTPS fleet server', { skip, timeout: 300_000 }, () => {
  const nodeId = testNodeId('test-e2e-compose');
  const project = `e2e${nodeId.replace(/[^a-z0-9]/g, '').slice(-10)}`;
  const docker = new Docker({ socketPath: '/var/run/docker.sock' });
  let dir: string;
  let server: FleetServer;
  let agent: AgentProcess | undefined;
  let configPath: string;
  let generation = 0;
  let firstIds = new Map<string, string>();

  const publish = (mode: string) =>
    server.setDocument(nodeId, {
      apiVersion: 'persys.dev/v1',
      kind: 'DesiredState',
      nodeId,
      generation: ++generation,
      workloads: [{ id: 'shop', type: 'compose', spec: { project, composeYaml: app(mode) } }],
    });
  const mark = () => Math.max(0, ...server.reports(nodeId).map((r) => asReport(r).seq));
  const waitReport = (what: string, pred: (r: Report) => boolean, timeoutMs = 90_000, after = mark()) =>
    server.waitForReport(nodeId, (r) => asReport(r).seq > after && pred(asReport(r)), timeoutMs).then(asReport, (err: unknown) => {
      throw new Error(`${what}: ${String(err)}\n--- agent log ---\n${agent?.dump() ?? ''}`);
    });
  const shop = (r: Report) => r.workloads.find((w) => w.id === 'shop');
  const idsOf = (w: ReportWorkload | undefined) => new Map((w?.compose?.services ?? []).map((s) => [s.name, s.containerIds[0] ?? '']));

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-e2e-compose-'));
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
      }),
    );
  });

  after(async () => {
    await agent?.stop('SIGTERM').catch(() => undefined);
    await cleanupDockerByLabel(nodeId).catch(() => undefined);
    await server?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('comes up Running and the report carries every service (dependency order, db healthy)', async () => {
    publish('one');
    agent = AgentProcess.start(['run', '--config', configPath]);
    const r = await waitReport('shop Running with 3 services', (r) => shop(r)?.phase === 'Running' && (shop(r)?.compose?.services.length ?? 0) === 3);
    const services = shop(r)?.compose?.services ?? [];
    assert.deepEqual(services.map((s) => s.name), ['db', 'api', 'web']);
    for (const s of services) assert.equal(s.state, 'running', `${s.name} is ${s.state}`);
    const list = await docker.listContainers({ all: true, filters: { label: [`dev.persys.node-id=${nodeId}`] } });
    const engine = new Map(list.map((c) => [c.Labels['com.docker.compose.service'] ?? '', c.Id]));
    firstIds = idsOf(shop(r));
    assert.deepEqual([...firstIds].sort(), [...engine].sort(), 'report ids are the engine ids');
    assert.equal(list.find((c) => c.Labels['com.docker.compose.service'] === 'api')?.Names[0], `/${project}-api-1`);
  });

  it("a change of the api's env recreates the api only; the report shows the new id", async () => {
    publish('two');
    const r = await waitReport('api recreated', (r) => {
      const w = shop(r);
      return w?.phase === 'Running' && r.observedGeneration === 2 && idsOf(w).get('api') !== firstIds.get('api') && (w.compose?.services.every((s) => s.state === 'running') ?? false);
    });
    const now = idsOf(shop(r));
    assert.equal(now.get('db'), firstIds.get('db'), 'db kept its container');
    assert.equal(now.get('web'), firstIds.get('web'), 'web kept its container');
    const api = await docker.getContainer(now.get('api') ?? '').inspect();
    assert.ok(api.Config.Env.includes('MODE=two'));
  });
});
