import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { Registry, Gauge } from 'prom-client';

import { silentLogger } from '../../src/log.js';
import { MetricsPusher, PUSH_JOB } from '../../src/metrics/push.js';
import { parseListen, startMetricsServer } from '../../src/metrics/server.js';

describe('metrics HTTP server', () => {
  let checks: Record<string, { ok: boolean; reason: string }> = {};
  let alive = true;
  let srv: Awaited<ReturnType<typeof startMetricsServer>>;
  const registry = new Registry();
  new Gauge({ name: 'persys_test', help: 'A test gauge.', registers: [registry] }).set(1);
  const get = async (path: string, method = 'GET') => {
    const res = await fetch(`http://127.0.0.1:${srv.port}${path}`, { method, signal: AbortSignal.timeout(5000) });
    return { status: res.status, type: res.headers.get('content-type'), body: await res.text() };
  };

  before(async () => {
    srv = await startMetricsServer('127.0.0.1:0', { registry, alive: () => alive, ready: () => Promise.resolve(checks), logger: silentLogger() });
  });
  after(() => srv.close());

  it('parses listen addresses and binds loopback by default config', () => {
    assert.deepEqual(parseListen('127.0.0.1:9464'), { host: '127.0.0.1', port: 9464 });
    assert.deepEqual(parseListen('[::1]:9464'), { host: '::1', port: 9464 });
    assert.throws(() => parseListen('9464'));
  });

  it('serves /metrics in the text format', async () => {
    const r = await get('/metrics');
    assert.equal(r.status, 200);
    assert.match(r.type ?? '', /^text\/plain; version=0\.0\.4/);
    assert.match(r.body, /^persys_test 1$/m);
  });

  it('answers /readyz and /health with JSON per component, 503 when one is not ready', async () => {
    checks = { store: { ok: true, reason: 'writable' }, docker: { ok: true, reason: 'up' } };
    let r = await get('/readyz');
    assert.equal(r.status, 200);
    assert.deepEqual(JSON.parse(r.body), { status: 'ready', checks });
    checks = { ...checks, docker: { ok: false, reason: 'down: RUNTIME_UNAVAILABLE' } };
    r = await get('/readyz');
    assert.equal(r.status, 503);
    assert.equal((JSON.parse(r.body) as { checks: typeof checks }).checks.docker?.reason, 'down: RUNTIME_UNAVAILABLE');
    assert.equal((await get('/health')).status, 503, '/health is an alias of /readyz');
  });

  it('answers /healthz 200 while alive, whatever readiness says', async () => {
    assert.equal((await get('/healthz')).status, 200);
    alive = false;
    assert.equal((await get('/healthz')).status, 503);
    alive = true;
  });

  it('refuses other methods and paths', async () => {
    assert.equal((await get('/metrics', 'POST')).status, 405);
    assert.equal((await get('/nope')).status, 404);
    assert.equal((await get('/metrics', 'HEAD')).status, 200);
  });
});

describe('MetricsPusher', () => {
  let server: Server;
  let port: number;
  const requests: { method: string; url: string; body: string; at: number }[] = [];
  let status = 200;

  before(async () => {
    server = createServer((req: IncomingMessage, res) => {
      let body = '';
      req.setEncoding('utf8').on('data', (c: string) => (body += c));
      req.on('end', () => {
        requests.push({ method: req.method ?? '', url: req.url ?? '', body, at: Date.now() });
        res.writeHead(status).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const addr = server.address();
    port = typeof addr === 'object' && addr ? addr.port : 0;
  });
  after(() => new Promise<void>((r) => server.close(() => r())));

  const registry = new Registry();
  new Gauge({ name: 'persys_pushed', help: 'A pushed gauge.', registers: [registry] }).set(3);

  it('PUTs the registry under job persys_agent and the node_id grouping key, and deletes the group on stop', async () => {
    requests.length = 0;
    status = 200;
    const results: boolean[] = [];
    const p = new MetricsPusher({ url: `http://127.0.0.1:${port}`, nodeId: 'edge 7', registry, intervalSeconds: 0.1, deleteOnShutdown: true, logger: silentLogger(), onResult: (ok) => results.push(ok) });
    const ac = new AbortController();
    const run = p.start(ac.signal);
    await new Promise((r) => setTimeout(r, 350));
    ac.abort();
    await run;
    await p.stop();
    assert.equal(PUSH_JOB, 'persys_agent');
    const puts = requests.filter((r) => r.method === 'PUT');
    assert.ok(puts.length >= 2, `pushes: ${puts.length}`);
    assert.equal(puts[0]?.url, '/metrics/job/persys_agent/node_id/edge%207');
    assert.match(puts[0]?.body ?? '', /^persys_pushed 3$/m);
    assert.equal(requests.at(-1)?.method, 'DELETE');
    assert.equal(requests.at(-1)?.url, '/metrics/job/persys_agent/node_id/edge%207');
    assert.ok(results.every(Boolean));
  });

  it('backs off after failures (doubling from 1 s, capped at the interval) and counts them', async () => {
    requests.length = 0;
    status = 500;
    const results: boolean[] = [];
    const p = new MetricsPusher({
      url: `http://127.0.0.1:${port}`,
      nodeId: 'n',
      registry,
      intervalSeconds: 60,
      deleteOnShutdown: false,
      logger: silentLogger(),
      onResult: (ok) => results.push(ok),
      random: () => 1,
    });
    const ac = new AbortController();
    const run = p.start(ac.signal);
    await new Promise((r) => setTimeout(r, 3_500));
    ac.abort();
    await run;
    // Attempts at ~0 s, ~1 s, ~3 s (then ~7 s): three in 3.5 s.
    const puts = requests.filter((r) => r.method === 'PUT');
    assert.equal(puts.length, 3, `attempts at ${puts.map((r) => r.at - puts[0]!.at).join(', ')} ms`);
    const gaps = puts.slice(1).map((r, i) => r.at - puts[i]!.at);
    assert.ok(gaps[0]! >= 900 && gaps[1]! >= 1900, `gaps ${gaps.join(', ')}`);
    assert.deepEqual(results, [false, false, false]);
    assert.equal(p.pushes.error, 3);
    status = 200;
    await p.stop();
    assert.equal(requests.at(-1)?.method, 'PUT', 'without deleteOnShutdown the final values are pushed');
    assert.equal(p.failures, 0);
  });
});
