/**
 * StatusReporter against a real HTTPS fleet server with a throwaway CA (openssl CLI only), plus
 * the file:// target. All traffic goes to 127.0.0.1.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import { silentLogger } from '../../src/log.js';
import type { StatusReport } from '../../src/spec/status-report.js';
import { createHttpClient, type HttpClient } from '../../src/sync/http-client.js';
import { StatusReporter } from '../../src/sync/reporter.js';
import { startFleetServer, type FleetServer, type JsonObject } from '../helpers/fleet-server.js';
import { makeThrowawayCa, opensslSkipReason } from '../helpers/tls.js';

const skip = await opensslSkipReason();
const TEST_TIMEOUT_MS = 30_000;
let counter = 0;
const nextNode = (): string => `test-rep-${process.pid}-${++counter}`;

function report(nodeId: string, seq: number, marker: string): StatusReport {
  return {
    apiVersion: 'persys.dev/v1',
    kind: 'StatusReport',
    nodeId,
    seq,
    agentVersion: '0.0.0-test',
    observedGeneration: null,
    sentAt: new Date().toISOString(),
    node: { hostname: 'test-host', labels: { marker }, runtimes: {} },
    sync: { lastPullAt: null, lastError: null },
    workloads: [],
  };
}

const markerOf = (r: JsonObject | undefined): unknown => ((r?.node as { labels?: { marker?: unknown } } | undefined)?.labels)?.marker;
const sleepMs = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitUntil(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleepMs(20);
  }
}

interface HarnessOptions {
  url: string;
  httpClient?: HttpClient;
  heartbeatSeconds?: number;
  debounceMs?: number;
  initialSeq?: number;
  flushTimeoutMs?: number;
  /** Called inside saveSeq, to check what the server has seen at that moment. */
  onSave?: (seq: number) => void;
}

function harness(o: HarnessOptions, nodeId: string) {
  const state = { marker: 'v1' };
  const saved: number[] = [];
  const reporter = new StatusReporter({
    url: o.url,
    ...(o.httpClient ? { httpClient: o.httpClient } : {}),
    heartbeatSeconds: o.heartbeatSeconds ?? 3600,
    debounceMs: o.debounceMs ?? 100,
    buildReport: (seq) => report(nodeId, seq, state.marker),
    loadSeq: () => o.initialSeq ?? 0,
    saveSeq: (seq) => {
      o.onSave?.(seq);
      saved.push(seq);
    },
    logger: silentLogger(),
    // Small and fast, so that only a Retry-After can explain a long gap between attempts.
    backoff: { initialDelayMs: 50, multiplier: 2, maxDelayMs: 200 },
    ...(o.flushTimeoutMs !== undefined ? { flushTimeoutMs: o.flushTimeoutMs } : {}),
  });
  const ac = new AbortController();
  const run = reporter.start(ac.signal);
  const stop = async () => {
    ac.abort();
    await run;
  };
  return { reporter, state, saved, stop };
}

describe('StatusReporter over HTTPS', { skip, timeout: 120_000 }, () => {
  let dir: string;
  let fleet: FleetServer;
  let client: HttpClient;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-reporter-'));
    const pki = await makeThrowawayCa(dir);
    fleet = await startFleetServer({ tls: { certFile: pki.serverCert, keyFile: pki.serverKey } });
    client = createHttpClient({ caFile: pki.caCert, allowInsecureHttp: false, timeoutMs: 5000 });
  });
  after(async () => {
    await client?.close();
    await fleet?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('debounce: ten markDirty calls make one POST', { timeout: TEST_TIMEOUT_MS }, async () => {
    const node = nextNode();
    const h = harness({ url: fleet.statusUrlFor(node), httpClient: client, debounceMs: 200 }, node);
    try {
      await fleet.waitForReport(node, () => true, 5000); // the start-up report
      for (let i = 0; i < 10; i++) {
        h.reporter.markDirty();
        await sleepMs(10);
      }
      await fleet.waitForReport(node, (r) => r.seq === 2, 5000);
      await sleepMs(500); // long enough for any stray extra report to show up (and for the client to read the 204)
      const posts = fleet.requests({ nodeId: node, method: 'POST' });
      assert.equal(posts.length, 2, `POSTs: ${posts.length}`);
      assert.equal(posts[1]?.headers.contentType, 'application/json');
      assert.equal(h.reporter.sends.ok, 2);
      assert.equal(h.reporter.sends.error, 0);
      assert.ok(h.reporter.lastSuccessAt instanceof Date);
      assert.equal(h.reporter.lastError, null);
    } finally {
      await h.stop();
    }
  });

  it('heartbeat; seq grows from the loaded one and is saved before each send', { timeout: TEST_TIMEOUT_MS }, async () => {
    const node = nextNode();
    const violations: number[] = [];
    const h = harness(
      {
        url: fleet.statusUrlFor(node),
        httpClient: client,
        heartbeatSeconds: 0.3,
        initialSeq: 41,
        onSave: (seq) => {
          if (fleet.reports(node).some((r) => r.seq === seq)) violations.push(seq);
        },
      },
      node,
    );
    try {
      await fleet.waitForReport(node, (r) => r.seq === 45, 5000);
      const seqs = fleet.reports(node).map((r) => r.seq);
      assert.deepEqual(seqs.slice(0, 4), [42, 43, 44, 45]);
      assert.deepEqual(h.saved.slice(0, 4), [42, 43, 44, 45]);
      assert.deepEqual(violations, [], 'a seq reached the server before saveSeq');
      const times = fleet.requests({ nodeId: node, method: 'POST' }).map((r) => r.receivedAt);
      const gap = (times[2] ?? 0) - (times[1] ?? 0);
      assert.ok(gap >= 250 && gap < 1500, `heartbeat gap ${gap} ms`);
    } finally {
      await h.stop();
    }
  });

  it('503 + Retry-After: backs off, then the NEWEST snapshot arrives', { timeout: TEST_TIMEOUT_MS }, async () => {
    const node = nextNode();
    fleet.setStatusFault(node, { status: 503, retryAfter: 1, body: 'busy' });
    const h = harness({ url: fleet.statusUrlFor(node), httpClient: client, debounceMs: 50 }, node);
    try {
      await fleet.waitForRequest((r) => r.nodeId === node && r.status === 503, 5000);
      // While backing off, the state changes several times; only the last must get through.
      for (const m of ['v2', 'v3', 'v4']) {
        h.state.marker = m;
        h.reporter.markDirty();
        await sleepMs(50);
      }
      fleet.setStatusFault(node, null);
      const got = await fleet.waitForReport(node, () => true, 5000);
      assert.equal(markerOf(got), 'v4');
      const posts = fleet.requests({ nodeId: node, method: 'POST' });
      assert.equal(posts.length, 2, 'one rejected attempt, one retry: no queue of old snapshots');
      assert.equal(markerOf(posts[0]?.json as JsonObject), 'v1');
      const gap = (posts[1]?.receivedAt ?? 0) - (posts[0]?.receivedAt ?? 0);
      assert.ok(gap >= 900, `retried after ${gap} ms; Retry-After asked for 1 s`);
      assert.ok((got.seq as number) > ((posts[0]?.json as JsonObject).seq as number));
      // The server records before the client has read the 204.
      await waitUntil(() => h.reporter.sends.ok === 1, 5000, 'the reporter to see its success');
      assert.equal(h.reporter.sends.error, 1);
      assert.equal(h.reporter.sends.ok, 1);
      assert.match(h.reporter.lastError?.message ?? '', /503 Service Unavailable: busy/);
      await sleepMs(300);
      assert.deepEqual(fleet.reports(node).map(markerOf), ['v4'], 'the old snapshot is never sent again');
    } finally {
      fleet.setStatusFault(node, null);
      await h.stop();
    }
  });

  it('flush sends one final report after stop', { timeout: TEST_TIMEOUT_MS }, async () => {
    const node = nextNode();
    const h = harness({ url: fleet.statusUrlFor(node), httpClient: client }, node);
    await fleet.waitForReport(node, () => true, 5000);
    await h.stop();
    h.state.marker = 'final';
    assert.equal(await h.reporter.flush(AbortSignal.timeout(5000)), true);
    const last = fleet.reports(node).at(-1);
    assert.equal(markerOf(last), 'final');
    assert.equal(last?.seq, 2);
  });
});

describe('StatusReporter without TLS', { timeout: 60_000 }, () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-reporter-file-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('file:// target: written atomically with mode 0600', { timeout: TEST_TIMEOUT_MS }, async () => {
    const node = nextNode();
    const target = join(dir, 'state', 'status.json');
    const h = harness({ url: pathToFileURL(target).href, heartbeatSeconds: 0.2, debounceMs: 10 }, node);
    try {
      await waitUntil(
        async () => {
          try {
            return (JSON.parse(await readFile(target, 'utf8')) as { seq: number }).seq >= 3;
          } catch {
            return false;
          }
        },
        5000,
        'the third report in the file',
      );
      const st = await stat(target);
      assert.equal(st.mode & 0o777, 0o600);
      const parsed = JSON.parse(await readFile(target, 'utf8')) as StatusReport;
      assert.equal(parsed.nodeId, node);
    } finally {
      await h.stop();
    }
    assert.deepEqual(await readdir(join(dir, 'state')), ['status.json'], 'no temp files left behind');
  });

  it('flush is bounded when the server never answers', { timeout: TEST_TIMEOUT_MS }, async () => {
    // A loopback TCP server that accepts and then says nothing.
    const sockets = new Set<Socket>();
    const mute = createServer((s) => {
      sockets.add(s);
      s.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => mute.listen(0, '127.0.0.1', resolve));
    const port = (mute.address() as { port: number }).port;
    const httpClient = createHttpClient({ allowInsecureHttp: false, timeoutMs: 10_000 });
    const node = nextNode();
    const reporter = new StatusReporter({
      url: `http://127.0.0.1:${port}/fleet/nodes/${node}/status`,
      httpClient,
      heartbeatSeconds: 3600,
      debounceMs: 0,
      buildReport: (seq) => report(node, seq, 'x'),
      loadSeq: () => 0,
      saveSeq: () => undefined,
      logger: silentLogger(),
      flushTimeoutMs: 300,
    });
    try {
      const started = Date.now();
      assert.equal(await reporter.flush(AbortSignal.timeout(10_000)), false);
      const took = Date.now() - started;
      assert.ok(took < 2000, `flush took ${took} ms`);
      assert.equal(reporter.sends.error, 1);
    } finally {
      await httpClient.close();
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => mute.close(() => resolve()));
    }
  });
});
