/**
 * Two `serve` instances on one PostgreSQL (the testbed's cluster; this run's own database): an
 * agent long-polling instance 1 wakes when a document is published on instance 2 (LISTEN/NOTIFY),
 * and both instances see the same fleet.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { AgentProcess, waitFor } from '../helpers/agent-process.js';
import { postgresUrl, requireEngine } from '../helpers/engines.js';
import { cliToken, desiredDoc, httpClientFor, percentile, ServeProcess, statusReportFor } from '../helpers/serve-process.js';
import { makeThrowawayCa, type ThrowawayPki } from '../helpers/tls.js';

const skip = await requireEngine('postgres');
const ROUNDS = 5;

describe('serve --store postgres: two instances, one fleet', { skip, timeout: 180_000 }, () => {
  const run = randomBytes(3).toString('hex');
  const database = `persys_test_${run}`;
  const nodeId = `e2e-pg-${run}`;
  let baseUrl: URL;
  let dbUrl: string;
  let dir: string;
  let pki: ThrowawayPki;
  let one: ServeProcess;
  let two: ServeProcess;
  let agent: AgentProcess | undefined;
  let http: ReturnType<typeof httpClientFor>;
  let admin: string;

  const admin1 = async (sql: string) => {
    const c = new pg.Client({ connectionString: baseUrl.href });
    await c.connect();
    try {
      await c.query(sql);
    } finally {
      await c.end();
    }
  };

  const heldOn = async (s: ServeProcess): Promise<number> => {
    const text = (await http.call('GET', `${s.url}/metrics`, { token: admin })).text;
    return Number(/^persys_serve_held_requests (\d+)/m.exec(text)?.[1] ?? NaN);
  };

  before(async () => {
    baseUrl = new URL((await postgresUrl()) as string);
    await admin1(`CREATE DATABASE ${database}`);
    const u = new URL(baseUrl.href);
    u.pathname = `/${database}`;
    dbUrl = u.href;
    dir = await mkdtemp(join(tmpdir(), 'persys-serve-pg-'));
    pki = await makeThrowawayCa(dir);
    http = httpClientFor(await readFile(pki.caCert));
    // Tokens are files in --dir: both instances share that folder (or a copy of it).
    const serveDir = join(dir, 'serve');
    admin = await cliToken(serveDir, '--admin');
    await writeFile(join(dir, 'node.token'), await cliToken(serveDir, nodeId), { mode: 0o600 });
    const args = ['--dir', serveDir, '--store', dbUrl, '--tls-cert', pki.serverCert, '--tls-key', pki.serverKey];
    one = await ServeProcess.start(args);
    two = await ServeProcess.start(args);
  });

  after(async () => {
    await agent?.stop('SIGTERM').catch(() => undefined);
    await one?.stop().catch(() => undefined);
    await two?.stop().catch(() => undefined);
    await http?.close();
    await admin1(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`).catch(() => undefined);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('an agent long-polling instance 1 wakes when a document is published on instance 2', async () => {
    assert.equal((await http.call('PUT', `${two.url}/v1/nodes/${nodeId}/desired`, { token: admin, body: JSON.stringify(desiredDoc(nodeId, 1)) })).status, 200);
    const cfg = join(dir, 'agent.json');
    await writeFile(
      cfg,
      JSON.stringify({
        nodeId,
        stateDir: join(dir, 'state'),
        source: { url: `${one.url}/v1/nodes/{nodeId}/desired`, caFile: pki.caCert, tokenFile: join(dir, 'node.token'), pollIntervalSeconds: 60, longPollSeconds: 90 },
        // Status goes to instance 2: the shared store is what makes the fleet one.
        // Another origin: the source token is not sent there by itself (docs/trust.md), so status names its own.
        status: { url: `${two.url}/v1/nodes/{nodeId}/status`, tokenFile: join(dir, 'node.token'), heartbeatSeconds: 5, debounceMs: 50 },
        metrics: { listen: '127.0.0.1:0' },
        docker: { enabled: false },
        libvirt: { enabled: false },
      }),
    );
    agent = AgentProcess.start(['run', '--config', cfg]);
    const pickedUp = (g: number) => {
      const l = agent?.lines.find((x) => x.msg === 'new desired state' && x.generation === g);
      return l === undefined ? undefined : Date.parse(String(l.time));
    };
    await waitFor('generation 1 from instance 1', () => pickedUp(1), 20_000);
    const wakes: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      const generation = i + 2;
      // The agent's request must be held on instance 1 when instance 2 publishes: then only
      // NOTIFY can wake it (its poll interval is 60 s).
      await waitFor('a held request on instance 1', async () => (await heldOn(one)) === 1, 10_000, 50);
      assert.equal(await heldOn(two), 0, 'nothing is held on instance 2');
      const at = Date.now();
      const res = await http.call('PUT', `${two.url}/v1/nodes/${nodeId}/desired`, { token: admin, body: JSON.stringify(desiredDoc(nodeId, generation)) });
      assert.equal(res.status, 200, res.text);
      const seen = await waitFor(`generation ${generation} via instance 1`, () => pickedUp(generation), 10_000, 10);
      wakes.push(seen - at);
    }
    console.log(`# postgres LISTEN/NOTIFY: publish on instance 2 -> agent on instance 1, over ${ROUNDS} changes: ${wakes.join(', ')} ms (p50 ${percentile(wakes, 50)} ms, max ${Math.max(...wakes)} ms)`);
    // Generous sanity bound (the figures are printed): far below the 60 s poll interval.
    assert.ok(Math.max(...wakes) < 3000, `a wake took ${Math.max(...wakes)} ms`);
  });

  it('both instances see the same fleet: reports posted to one, overview read from the other', async () => {
    const row = await waitFor('the agent report on instance 1', async () => {
      const res = await http.call('GET', `${one.url}/v1/nodes`, { token: admin });
      const n = (res.json() as { nodes: Array<{ nodeId: string; observedGeneration: number | null }> }).nodes.find((x) => x.nodeId === nodeId);
      return n?.observedGeneration === ROUNDS + 1 ? n : undefined;
    }, 20_000);
    assert.equal(row.nodeId, nodeId);
    // The generation guard holds across instances: instance 1 refuses what is below instance 2's publish.
    const lower = await http.call('PUT', `${one.url}/v1/nodes/${nodeId}/desired`, { token: admin, body: JSON.stringify(desiredDoc(nodeId, 1)) });
    assert.equal(lower.status, 409, lower.text);
    // Seq ordering is in the database too.
    const stale = await http.call('POST', `${one.url}/v1/nodes/${nodeId}/status`, { token: admin, body: JSON.stringify(statusReportFor(nodeId, 1, 1)) });
    assert.equal((stale.json() as { stored: boolean }).stored, false);
    const hist = await http.call('GET', `${two.url}/v1/nodes/${nodeId}/history`, { token: admin });
    assert.ok((hist.json() as { history: unknown[] }).history.length >= 1);
  });
});
