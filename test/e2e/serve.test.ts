/**
 * `persys-agent serve` end to end, with the built CLI: real agents (docker and libvirt disabled)
 * over real HTTPS, one long-polling serve and one polling a real nginx every 5 s, measured in the
 * same run; per-node auth; validation; `publish`.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { AgentProcess, waitFor } from '../helpers/agent-process.js';
import { requireEngine } from '../helpers/engines.js';
import { startNginx, type Nginx } from '../helpers/nginx.js';
import { cli, cliToken, desiredDoc, httpClientFor, percentile, ServeProcess, statusReportFor } from '../helpers/serve-process.js';
import { makeThrowawayCa, type ThrowawayPki } from '../helpers/tls.js';

const skip = await requireEngine('nginx');
const CHANGES = 20;

describe('serve: long-poll, auth, validation, publish (built CLI, HTTPS)', { skip, timeout: 300_000 }, () => {
  const run = randomBytes(3).toString('hex');
  const nodeServe = `e2e-serve-${run}-lp`;
  const nodeNginx = `e2e-serve-${run}-st`;
  const nodeB = `e2e-serve-${run}-b`;
  let dir: string;
  let pki: ThrowawayPki;
  let serve: ServeProcess;
  let nginx: Nginx;
  let http: ReturnType<typeof httpClientFor>;
  let adminToken: string;
  let tokenServe: string;
  let tokenB: string;
  let staticRoot: string;
  const agents: AgentProcess[] = [];
  let agentServe: AgentProcess;
  let agentNginx: AgentProcess;
  let nginxStartedAt = 0;

  const putDoc = (nodeId: string, doc: unknown, token = adminToken) =>
    http.call('PUT', `${serve.url}/v1/nodes/${nodeId}/desired`, { token, body: JSON.stringify(doc) });

  /** Writes the static host's file the way a deploy does: a temp file renamed over the old one. */
  const writeStatic = async (doc: unknown) => {
    const file = join(staticRoot, 'fleet', 'nodes', `${nodeNginx}.json`);
    await writeFile(`${file}.tmp`, JSON.stringify(doc));
    await rename(`${file}.tmp`, file);
  };

  const agentConfig = async (name: string, nodeId: string, source: Record<string, unknown>, status?: Record<string, unknown>) => {
    const path = join(dir, `${name}.json`);
    await writeFile(
      path,
      JSON.stringify({
        nodeId,
        stateDir: join(dir, `state-${name}`),
        logLevel: 'info',
        source: { caFile: pki.caCert, longPollSeconds: 90, ...source },
        ...(status !== undefined ? { status: { heartbeatSeconds: 5, debounceMs: 50, ...status } } : {}),
        metrics: { listen: '127.0.0.1:0' },
        docker: { enabled: false },
        libvirt: { enabled: false },
      }),
    );
    return path;
  };

  /** Time (ms since epoch) of the agent's log line "new desired state" for `generation`, if any. */
  const pickedUpAt = (agent: AgentProcess, minGeneration: number): number | undefined => {
    const line = agent.lines.find((l) => l.msg === 'new desired state' && typeof l.generation === 'number' && l.generation >= minGeneration);
    return line === undefined ? undefined : Date.parse(String(line.time));
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-serve-e2e-'));
    pki = await makeThrowawayCa(dir);
    http = httpClientFor(await readFile(pki.caCert));
    const serveDir = join(dir, 'serve');
    adminToken = await cliToken(serveDir, '--admin');
    tokenServe = await cliToken(serveDir, nodeServe);
    tokenB = await cliToken(serveDir, nodeB);
    await writeFile(join(dir, 'admin.token'), adminToken, { mode: 0o600 });
    await writeFile(join(dir, 'node.token'), tokenServe, { mode: 0o600 });
    serve = await ServeProcess.start(['--dir', serveDir, '--tls-cert', pki.serverCert, '--tls-key', pki.serverKey, '--heartbeat-seconds', '5']);
    staticRoot = join(dir, 'static');
    await mkdir(join(staticRoot, 'fleet', 'nodes'), { recursive: true, mode: 0o755 });
    // nginx's workers run as nobody: they must be able to walk into the (0700) temp folder.
    await chmod(dir, 0o711);
    nginx = await startNginx({ dir: join(dir, 'nginx'), root: staticRoot, certFile: pki.serverCert, keyFile: pki.serverKey });
  });

  after(async () => {
    for (const a of agents) await a.stop('SIGTERM').catch(() => undefined);
    await serve?.stop().catch(() => undefined);
    await nginx?.stop().catch(() => undefined);
    await http?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('starts both agents on generation 1 (serve by long-poll with a token, nginx by static polling)', async () => {
    assert.equal((await putDoc(nodeServe, desiredDoc(nodeServe, 1))).status, 200);
    await writeStatic(desiredDoc(nodeNginx, 1));
    const cfgServe = await agentConfig('lp', nodeServe, {
      url: `${serve.url}/v1/nodes/{nodeId}/desired`,
      tokenFile: join(dir, 'node.token'),
      pollIntervalSeconds: 30,
    }, { url: `${serve.url}/v1/nodes/{nodeId}/status` });
    const cfgNginx = await agentConfig('st', nodeNginx, { url: `${nginx.origin}/fleet/nodes/{nodeId}.json`, pollIntervalSeconds: 5 });
    agentServe = AgentProcess.start(['run', '--config', cfgServe]);
    nginxStartedAt = Date.now();
    agentNginx = AgentProcess.start(['run', '--config', cfgNginx]);
    agents.push(agentServe, agentNginx);
    await waitFor('serve agent on generation 1', () => pickedUpAt(agentServe, 1), 20_000);
    await waitFor('nginx agent on generation 1', () => pickedUpAt(agentNginx, 1), 20_000);
  });

  it('against nginx: exactly one request per 5 s interval, 304s after the first, though the agent asks for wait=N', async () => {
    // A quiet stretch: nothing changes, so every pull after the first is a conditional 304.
    await new Promise((r) => setTimeout(r, 16_500));
    const path = `/fleet/nodes/${nodeNginx}.json`;
    const log = (await nginx.accessLog()).filter((l) => l.path === path);
    const elapsedS = (Date.now() - nginxStartedAt) / 1000;
    const gaps = log.slice(1).map((l, i) => (l.ms - (log[i]?.ms ?? 0)) / 1000);
    console.log(`# nginx static polling: ${log.length} requests in ${elapsedS.toFixed(1)} s (interval 5 s); statuses ${log.map((l) => l.status).join(',')}; gaps ${gaps.map((g) => g.toFixed(2)).join(', ')} s`);
    assert.equal(log[0]?.status, 200);
    assert.ok(log.slice(1).every((l) => l.status === 304 && l.ifNoneMatch !== ''), 'every later pull is a conditional GET answered 304');
    assert.ok(log.every((l) => /^wait=(8[5-9]|90)$/.test(l.prefer)), `the agent asked for a long-poll every time: ${log.map((l) => l.prefer).join(',')}`);
    // One request per interval (5 s +-10 % jitter): never a quick re-poll after an unheld 304.
    assert.ok(gaps.length >= 2, `at least 3 requests in ${elapsedS.toFixed(1)} s`);
    for (const g of gaps) assert.ok(g >= 4.4 && g <= 7, `gap of ${g.toFixed(2)} s between polls`);
    assert.ok(log.length <= Math.floor(elapsedS / 4.5) + 1, `${log.length} requests is more than one per interval`);
  });

  it(`picks ${CHANGES} published changes up: long-poll on serve vs 5 s polling on nginx, same run`, async () => {
    const published: number[] = [];
    for (let i = 0; i < CHANGES; i++) {
      const generation = i + 2;
      // Spaced and jittered, so the nginx agent's poll phase is sampled rather than hit in step.
      await new Promise((r) => setTimeout(r, 900 + Math.random() * 600));
      const at = Date.now();
      const [res] = await Promise.all([putDoc(nodeServe, desiredDoc(nodeServe, generation)), writeStatic(desiredDoc(nodeNginx, generation))]);
      assert.equal(res.status, 200, res.text);
      published.push(at);
      await waitFor(`serve agent on generation ${generation}`, () => pickedUpAt(agentServe, generation), 10_000, 20);
    }
    const last = CHANGES + 1;
    await waitFor('nginx agent on the last generation', () => pickedUpAt(agentNginx, last), 15_000, 50);
    const lat = (agent: AgentProcess) => published.map((at, i) => (pickedUpAt(agent, i + 2) ?? NaN) - at);
    const lp = lat(agentServe);
    const st = lat(agentNginx);
    const fmt = (xs: number[]) => `p50 ${percentile(xs, 50)} ms, p95 ${percentile(xs, 95)} ms, max ${Math.max(...xs)} ms`;
    console.log(`# pickup over ${CHANGES} changes: serve long-poll ${fmt(lp)}; nginx polling every 5 s ${fmt(st)}; ratio of p50 ${(percentile(st, 50) / Math.max(1, percentile(lp, 50))).toFixed(1)}x`);
    assert.ok(lp.every((x) => Number.isFinite(x) && x >= -50), 'every change was picked up by long-poll');
    // Generous sanity bounds only (figures are printed above): the long-poll never waits a poll interval.
    assert.ok(percentile(lp, 95) < 5000, `long-poll p95 ${percentile(lp, 95)} ms`);
  });

  it('serve shows the long-polling node in the overview, reported and not behind', async () => {
    const overview = await waitFor('a report with the last generation', async () => {
      const res = await http.call('GET', `${serve.url}/v1/nodes`, { token: adminToken });
      const nodes = (res.json() as { nodes: Array<{ nodeId: string; observedGeneration: number | null; behind: boolean; agentVersion: string | null }> }).nodes;
      const n = nodes.find((x) => x.nodeId === nodeServe);
      return n?.observedGeneration === CHANGES + 1 ? n : undefined;
    }, 20_000);
    assert.equal(overview.behind, false);
    assert.ok(overview.agentVersion !== null);
  });

  it("node A's token cannot read node B's document or post B's status (403, counted)", async () => {
    assert.equal((await putDoc(nodeB, desiredDoc(nodeB, 1))).status, 200);
    const read = await http.call('GET', `${serve.url}/v1/nodes/${nodeB}/desired`, { token: tokenServe });
    assert.equal(read.status, 403, read.text);
    const post = await http.call('POST', `${serve.url}/v1/nodes/${nodeB}/status`, { token: tokenServe, body: JSON.stringify(statusReportFor(nodeB, 1, 1)) });
    assert.equal(post.status, 403, post.text);
    const put = await putDoc(nodeB, desiredDoc(nodeB, 2), tokenServe);
    assert.equal(put.status, 403, 'a node token cannot publish');
    const fleet = await http.call('GET', `${serve.url}/v1/nodes`, { token: tokenServe });
    assert.equal(fleet.status, 403, 'a node token cannot read the fleet');
    // B's own token works; no token and a wrong token are 401.
    assert.equal((await http.call('GET', `${serve.url}/v1/nodes/${nodeB}/desired`, { token: tokenB })).status, 200);
    assert.equal((await http.call('GET', `${serve.url}/v1/nodes/${nodeB}/desired`)).status, 401);
    assert.equal((await http.call('GET', `${serve.url}/v1/nodes/${nodeB}/desired`, { token: 'pst_wrong' })).status, 401);
    const metrics = await http.call('GET', `${serve.url}/metrics`, { token: adminToken });
    assert.match(metrics.text, /persys_serve_forbidden_total\{route="desired-get"\} [1-9]/);
    assert.match(metrics.text, /persys_serve_forbidden_total\{route="status"\} [1-9]/);
    assert.match(metrics.text, /persys_serve_requests_total\{route="desired-get",code="403"\} [1-9]/);
  });

  it('an invalid status report gets 400 with the path of every error; gzip is accepted; an older seq is ignored', async () => {
    const bad = statusReportFor(nodeB, 'seven' as unknown as number, 1, [{ id: 'w', type: 'container', desiredState: 'running', actualState: 'running', phase: 'Sideways', message: '' }]);
    const res = await http.call('POST', `${serve.url}/v1/nodes/${nodeB}/status`, { token: tokenB, body: JSON.stringify(bad) });
    assert.equal(res.status, 400);
    const paths = (res.json() as { issues: Array<{ path: string }> }).issues.map((i) => i.path);
    assert.ok(paths.includes('seq') && paths.includes('workloads[0].phase'), `paths: ${paths.join(', ')}`);
    const gz = gzipSync(JSON.stringify(statusReportFor(nodeB, 5, 1)));
    const ok = await http.call('POST', `${serve.url}/v1/nodes/${nodeB}/status`, { token: tokenB, body: gz, headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' } });
    assert.equal(ok.status, 200, ok.text);
    assert.deepEqual(ok.json(), { stored: true, seq: 5 });
    const older = await http.call('POST', `${serve.url}/v1/nodes/${nodeB}/status`, { token: tokenB, body: JSON.stringify(statusReportFor(nodeB, 4, 1)) });
    assert.equal(older.status, 200);
    assert.equal((older.json() as { stored: boolean }).stored, false);
  });

  it('publish: a valid document is published; a lower generation and an invalid document are refused', async () => {
    const file = join(dir, 'b.json');
    await writeFile(file, JSON.stringify(desiredDoc(nodeB, 7)));
    const common = ['--server', serve.url, '--token', join(dir, 'admin.token'), '--ca', pki.caCert];
    const ok = await cli(['publish', ...common, file]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, new RegExp(`published: node ${nodeB} generation 7`));
    await writeFile(file, JSON.stringify(desiredDoc(nodeB, 6)));
    const lower = await cli(['publish', ...common, file]);
    assert.equal(lower.code, 1);
    assert.match(lower.stderr, /refused \(409\).*6 is lower than the published generation 7/);
    await writeFile(file, JSON.stringify({ ...desiredDoc(nodeB, 8), workloads: [{ id: 'x', type: 'container' }] }));
    const invalid = await cli(['publish', ...common, file]);
    assert.equal(invalid.code, 1);
    assert.match(invalid.stderr, /refused \(400\)/);
    assert.match(invalid.stderr, /workloads\[0\]/);
    const doc = await http.call('GET', `${serve.url}/v1/nodes/${nodeB}/desired`, { token: tokenB });
    assert.equal((doc.json() as { generation: number }).generation, 7, 'the refused documents changed nothing');
  });

  it('a new token replaces the old one at once', async () => {
    const fresh = await cliToken(join(dir, 'serve'), nodeB);
    await new Promise((r) => setTimeout(r, 1100)); // the table re-reads tokens.json at most once a second
    assert.equal((await http.call('GET', `${serve.url}/v1/nodes/${nodeB}/desired`, { token: tokenB })).status, 401, 'the old token is gone');
    assert.equal((await http.call('GET', `${serve.url}/v1/nodes/${nodeB}/desired`, { token: fresh })).status, 200);
    const stored = await readFile(join(dir, 'serve', 'tokens.json'), 'utf8');
    assert.ok(!stored.includes(fresh), 'tokens.json never holds a token in clear');
  });
});
