/**
 * DesiredStateSource and SourcePoller against a real HTTPS fleet server with a throwaway CA.
 * Needs only the openssl CLI; all traffic goes to 127.0.0.1.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { ConfigError, SourceError } from '../../src/errors/index.js';
import type { ErrorCode } from '../../src/errors/index.js';
import { createHttpClient, type HttpClient } from '../../src/sync/http-client.js';
import { SourcePoller, type PollOutcome } from '../../src/sync/poller.js';
import { DesiredStateSource, type PullOptions, type PullResult } from '../../src/sync/source.js';
import { startFleetServer, type FleetServer } from '../helpers/fleet-server.js';
import { makeThrowawayCa, opensslSkipReason, type ThrowawayPki } from '../helpers/tls.js';

const skip = await opensslSkipReason();

const TEST_TIMEOUT_MS = 30_000;
let counter = 0;
const nextNode = (): string => `test-src-${process.pid}-${++counter}`;

function doc(nodeId: string, generation: number, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId, generation, workloads: [], ...extra };
}

/** A bounded signal for one pull: a hung test fails instead of hanging the run. */
const bounded = (ms = 15_000): AbortSignal => AbortSignal.timeout(ms);

function pullOpts(nodeId: string, over: Partial<PullOptions> = {}): PullOptions {
  return { currentEtag: null, storedGeneration: null, nodeId, signal: bounded(), ...over };
}

async function expectSourceError(p: Promise<unknown>, code: ErrorCode, message: RegExp | string): Promise<SourceError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof SourceError, `expected SourceError, got ${String(err)}`);
    assert.equal(err.code, code, `code of: ${err.message}`);
    if (typeof message === 'string') assert.ok(err.message.includes(message), `"${err.message}" should include "${message}"`);
    else assert.match(err.message, message);
    return err;
  }
  assert.fail(`expected ${code}, but the pull succeeded`);
}

function updated(r: PullResult): Extract<PullResult, { kind: 'updated' }> {
  assert.equal(r.kind, 'updated');
  return r as Extract<PullResult, { kind: 'updated' }>;
}

async function waitUntil(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

describe('DesiredStateSource over HTTPS', { skip, timeout: 120_000 }, () => {
  let dir: string;
  let pki: ThrowawayPki;
  let otherPki: ThrowawayPki;
  let fleet: FleetServer;
  let client: HttpClient;
  const closers: Array<() => Promise<void>> = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-source-'));
    await mkdir(join(dir, 'ca'));
    await mkdir(join(dir, 'other'));
    pki = await makeThrowawayCa(join(dir, 'ca'), 'persys-test');
    otherPki = await makeThrowawayCa(join(dir, 'other'), 'persys-other');
    fleet = await startFleetServer({ tls: { certFile: pki.serverCert, keyFile: pki.serverKey } });
    closers.push(() => fleet.close());
    client = createHttpClient({ caFile: pki.caCert, allowInsecureHttp: false, timeoutMs: 5000 });
    closers.push(() => client.close());
  });

  after(async () => {
    for (const c of closers.reverse()) await c().catch(() => undefined);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** A source whose verify hook counts calls: the hook runs exactly when a body is parsed. */
  function countingSource(opts: { maxBodyBytes?: number; httpClient?: HttpClient; url?: string } = {}) {
    const calls = { n: 0 };
    const source = new DesiredStateSource({
      url: opts.url ?? fleet.sourceUrl,
      httpClient: opts.httpClient ?? client,
      maxBodyBytes: opts.maxBodyBytes ?? 64 * 1024,
      verify: (raw) => {
        calls.n += 1;
        return raw;
      },
    });
    return { source, calls };
  }

  it('200 then 304: If-None-Match sent, the 304 never parsed', { timeout: TEST_TIMEOUT_MS }, async () => {
    const node = nextNode();
    const etag = fleet.setDocument(node, doc(node, 3));
    const { source, calls } = countingSource();
    const first = updated(await source.pull(pullOpts(node)));
    assert.equal(first.document.generation, 3);
    assert.equal(first.etag, etag);
    assert.deepEqual(first.raw, doc(node, 3));
    assert.equal(calls.n, 1);

    const second = await source.pull(pullOpts(node, { currentEtag: first.etag, storedGeneration: 3 }));
    assert.deepEqual(second, { kind: 'not-modified' });
    assert.equal(calls.n, 1, 'a 304 must not reach the verify hook / validator');

    const reqs = fleet.requests({ nodeId: node, kind: 'document' });
    assert.equal(reqs.length, 2);
    assert.equal(reqs[0]?.headers.ifNoneMatch, undefined);
    assert.equal(reqs[0]?.headers.accept, 'application/json');
    assert.equal(reqs[0]?.status, 200);
    assert.equal(reqs[1]?.headers.ifNoneMatch, etag);
    assert.equal(reqs[1]?.status, 304);
    assert.equal(reqs[1]?.headers.prefer, undefined, 'no Prefer without waitSeconds');
  });

  it('replaces {nodeId} URL-encoded', { timeout: TEST_TIMEOUT_MS }, async () => {
    // Valid node ids need no encoding, so use one the schema would refuse: the 404 shows the path.
    const node = 'a b/c?d';
    const { source } = countingSource();
    await expectSourceError(source.pull(pullOpts(node)), 'DESIRED_STATE_UNAVAILABLE', '404');
    const req = fleet.requests({ nodeId: node })[0];
    assert.equal(req?.path, '/fleet/nodes/a%20b%2Fc%3Fd.json');
  });

  it('Prefer: wait holds the request until the document changes', { timeout: TEST_TIMEOUT_MS }, async () => {
    const node = nextNode();
    const etag = fleet.setDocument(node, doc(node, 1));
    const { source } = countingSource();
    const started = Date.now();
    const pending = source.pull(pullOpts(node, { currentEtag: etag, storedGeneration: 1, waitSeconds: 10 }));
    await waitUntil(() => fleet.heldRequests() === 1, 5000, 'the server to hold the request');
    await new Promise((r) => setTimeout(r, 300));
    fleet.setDocument(node, doc(node, 2));
    const r = updated(await pending);
    const took = Date.now() - started;
    assert.equal(r.document.generation, 2);
    assert.ok(took >= 300 && took < 9000, `held ${took} ms`);
    assert.equal(fleet.requests({ nodeId: node })[0]?.headers.prefer, 'wait=10');
  });

  it('Prefer: wait answers 304 when nothing changes in N seconds', { timeout: TEST_TIMEOUT_MS }, async () => {
    const node = nextNode();
    const etag = fleet.setDocument(node, doc(node, 1));
    const { source, calls } = countingSource();
    const started = Date.now();
    const r = await source.pull(pullOpts(node, { currentEtag: etag, storedGeneration: 1, waitSeconds: 1 }));
    const took = Date.now() - started;
    assert.deepEqual(r, { kind: 'not-modified', waitApplied: 1 }, 'a held answer says so (Preference-Applied)');
    assert.ok(took >= 900 && took < 5000, `held ${took} ms`);
    assert.equal(calls.n, 0);
  });

  it('aborting ends a held long-poll at once', { timeout: TEST_TIMEOUT_MS }, async () => {
    const node = nextNode();
    const etag = fleet.setDocument(node, doc(node, 1));
    const { source } = countingSource();
    const ac = new AbortController();
    const pending = source.pull({ currentEtag: etag, storedGeneration: 1, nodeId: node, signal: ac.signal, waitSeconds: 20 });
    await waitUntil(() => fleet.heldRequests() === 1, 5000, 'the server to hold the request');
    const started = Date.now();
    ac.abort();
    await expectSourceError(pending, 'DESIRED_STATE_UNAVAILABLE', 'aborted');
    assert.ok(Date.now() - started < 2000);
  });

  it('404 -> DESIRED_STATE_UNAVAILABLE naming the node', { timeout: TEST_TIMEOUT_MS }, async () => {
    const node = nextNode();
    const { source } = countingSource();
    await expectSourceError(source.pull(pullOpts(node)), 'DESIRED_STATE_UNAVAILABLE', `404 Not Found: no desired state published for node ${node}`);
  });

  it('500 -> DESIRED_STATE_UNAVAILABLE with status and a bounded body snippet', { timeout: TEST_TIMEOUT_MS }, async () => {
    const node = nextNode();
    fleet.setFault(node, { status: 500, body: `database on fire\n${'x'.repeat(5000)}` });
    const { source } = countingSource();
    const err = await expectSourceError(source.pull(pullOpts(node)), 'DESIRED_STATE_UNAVAILABLE', /500 Internal Server Error: database on fire x+…$/);
    assert.ok(err.message.length < 1000, `message is ${err.message.length} chars`);
    assert.equal(err.retryAfterMs, undefined);
  });

  it('503 and 429 carry Retry-After (seconds and HTTP date)', { timeout: TEST_TIMEOUT_MS }, async () => {
    const node = nextNode();
    const { source } = countingSource();
    fleet.setFault(node, { status: 503, retryAfter: 7, body: 'maintenance' });
    const e1 = await expectSourceError(source.pull(pullOpts(node)), 'DESIRED_STATE_UNAVAILABLE', '503 Service Unavailable: maintenance');
    assert.equal(e1.retryAfterMs, 7000);
    fleet.setFault(node, { status: 429, retryAfter: new Date(Date.now() + 30_000).toUTCString() });
    const e2 = await expectSourceError(source.pull(pullOpts(node)), 'DESIRED_STATE_UNAVAILABLE', '429 Too Many Requests');
    assert.ok(e2.retryAfterMs !== undefined && e2.retryAfterMs > 25_000 && e2.retryAfterMs <= 30_000, `retryAfterMs ${e2.retryAfterMs}`);
  });

  it('invalid JSON -> DESIRED_STATE_INVALID with the parser message', { timeout: TEST_TIMEOUT_MS }, async () => {
    const node = nextNode();
    fleet.setFault(node, { invalidJson: true });
    const { source } = countingSource();
    await expectSourceError(source.pull(pullOpts(node)), 'DESIRED_STATE_INVALID', /^not JSON: .+/);
  });

  it('schema errors -> DESIRED_STATE_INVALID listing every path', { timeout: TEST_TIMEOUT_MS }, async () => {
    const node = nextNode();
    fleet.setDocument(node, doc(node, -1, { workloads: [{ id: 'web', type: 'container', spec: { image: 5 } }] }));
    const { source } = countingSource();
    const err = await expectSourceError(source.pull(pullOpts(node)), 'DESIRED_STATE_INVALID', 'generation: ');
    assert.match(err.message, /^workloads\[0\]\.spec\.image: /m);
  });

  it('a document for another node (or for "*") -> DESIRED_STATE_INVALID', { timeout: TEST_TIMEOUT_MS }, async () => {
    const node = nextNode();
    fleet.setDocument(node, doc('someone-else', 1));
    const { source } = countingSource();
    await expectSourceError(source.pull(pullOpts(node)), 'DESIRED_STATE_INVALID', `document is for node someone-else, this node is ${node}`);
    fleet.setDocument(node, doc('*', 1));
    await expectSourceError(source.pull(pullOpts(node)), 'DESIRED_STATE_INVALID', `document is for node *, which only a local file may use; this node is ${node}`);
  });

  it('a lower generation -> DESIRED_STATE_STALE; the same generation with new content is accepted', { timeout: TEST_TIMEOUT_MS }, async () => {
    const node = nextNode();
    const oldEtag = fleet.setDocument(node, doc(node, 5));
    const { source } = countingSource();
    await expectSourceError(source.pull(pullOpts(node, { storedGeneration: 6 })), 'DESIRED_STATE_STALE', 'generation 5 is lower than the stored generation 6');
    fleet.setDocument(node, doc(node, 5, { labels: { fixed: 'typo' } }));
    const r = updated(await source.pull(pullOpts(node, { currentEtag: oldEtag, storedGeneration: 5 })));
    assert.deepEqual(r.document.labels, { fixed: 'typo' });
  });

  it('caps the body: by Content-Length, and while streaming', { timeout: TEST_TIMEOUT_MS }, async () => {
    const node = nextNode();
    const { source } = countingSource({ maxBodyBytes: 2048 });
    fleet.setDocument(node, doc(node, 1, { labels: { pad: 'x'.repeat(5000) } }));
    await expectSourceError(source.pull(pullOpts(node)), 'DESIRED_STATE_INVALID', 'body larger than 2048 bytes');
    fleet.setFault(node, { status: 200, body: `{"pad":"${'x'.repeat(200_000)}"}`, chunked: true });
    await expectSourceError(source.pull(pullOpts(node)), 'DESIRED_STATE_INVALID', 'body larger than 2048 bytes');
    fleet.setFault(node, null);
    // The same size under the cap is fine.
    fleet.setDocument(node, doc(node, 1, { labels: { pad: 'x'.repeat(1000) } }));
    updated(await source.pull(pullOpts(node)));
  });

  it('sends the bearer token from tokenFile and re-reads it when the file changes', { timeout: TEST_TIMEOUT_MS }, async () => {
    const node = nextNode();
    fleet.setDocument(node, doc(node, 1));
    const tokenFile = join(dir, 'token');
    await writeFile(tokenFile, 'tok-one\n', { mode: 0o600 });
    const tokenClient = createHttpClient({ caFile: pki.caCert, tokenFile, allowInsecureHttp: false, timeoutMs: 5000 });
    try {
      const { source } = countingSource({ httpClient: tokenClient });
      fleet.setRequiredToken('tok-one');
      updated(await source.pull(pullOpts(node)));
      await writeFile(tokenFile, '  tok-two  \n');
      const future = new Date(Date.now() + 60_000);
      await utimes(tokenFile, future, future); // a distinct mtime even on coarse-grained filesystems
      fleet.setRequiredToken('tok-two');
      updated(await source.pull(pullOpts(node)));
      // Without the token the server refuses.
      const { source: anon } = countingSource();
      await expectSourceError(anon.pull(pullOpts(node)), 'DESIRED_STATE_UNAVAILABLE', '401 Unauthorized');
      const auth = fleet.requests({ nodeId: node }).map((r) => r.headers.authorization);
      assert.deepEqual(auth, ['Bearer tok-one', 'Bearer tok-two', undefined]);
    } finally {
      fleet.setRequiredToken(null);
      await tokenClient.close();
    }
  });

  it('mTLS: a client certificate signed by the CA is accepted, none is refused', { timeout: TEST_TIMEOUT_MS }, async () => {
    const mtls = await startFleetServer({ tls: { certFile: pki.serverCert, keyFile: pki.serverKey, caFile: pki.caCert, requireClientCert: true } });
    const withCert = createHttpClient({ caFile: pki.caCert, certFile: pki.clientCert, keyFile: pki.clientKey, allowInsecureHttp: false, timeoutMs: 5000 });
    try {
      const node = nextNode();
      mtls.setDocument(node, doc(node, 1));
      const { source } = countingSource({ httpClient: withCert, url: mtls.sourceUrl });
      updated(await source.pull(pullOpts(node)));
      assert.equal(mtls.requests({ nodeId: node })[0]?.clientCertCn, 'persys-test client');
      const { source: noCert } = countingSource({ url: mtls.sourceUrl });
      await expectSourceError(noCert.pull(pullOpts(node)), 'DESIRED_STATE_UNAVAILABLE', /./);
    } finally {
      await withCert.close();
      await mtls.close();
    }
  });

  it('an untrusted server certificate fails with the exact TLS message', { timeout: TEST_TIMEOUT_MS }, async () => {
    const node = nextNode();
    fleet.setDocument(node, doc(node, 1));
    const wrongCa = createHttpClient({ caFile: otherPki.caCert, allowInsecureHttp: false, timeoutMs: 5000 });
    try {
      const { source, calls } = countingSource({ httpClient: wrongCa });
      const err = await expectSourceError(source.pull(pullOpts(node)), 'DESIRED_STATE_UNAVAILABLE', 'unable to verify the first certificate');
      assert.match(err.message, /UNABLE_TO_VERIFY_LEAF_SIGNATURE/);
      assert.equal(calls.n, 0);
    } finally {
      await wrongCa.close();
    }
  });

  it('connection refused -> DESIRED_STATE_UNAVAILABLE with ECONNREFUSED', { timeout: TEST_TIMEOUT_MS }, async () => {
    const port = await closedPort();
    const { source } = countingSource({ url: `https://127.0.0.1:${port}/fleet/nodes/{nodeId}.json` });
    await expectSourceError(source.pull(pullOpts(nextNode())), 'DESIRED_STATE_UNAVAILABLE', 'ECONNREFUSED');
  });

  it('http:// to 127.0.0.1 is allowed; to 10.0.0.1 refused without connecting', { timeout: TEST_TIMEOUT_MS }, async () => {
    const plain = await startFleetServer({ tls: null });
    const httpClient = createHttpClient({ allowInsecureHttp: false, timeoutMs: 5000 });
    try {
      const node = nextNode();
      plain.setDocument(node, doc(node, 1));
      const { source } = countingSource({ httpClient, url: plain.sourceUrl });
      assert.ok(plain.sourceUrl.startsWith('http://127.0.0.1:'));
      updated(await source.pull(pullOpts(node)));

      const before = httpClient.agentCount;
      const started = Date.now();
      assert.throws(
        () => new DesiredStateSource({ url: 'http://10.0.0.1/fleet/nodes/{nodeId}.json', httpClient, maxBodyBytes: 4096 }),
        (err: unknown) => err instanceof ConfigError && /source\.url: .*only allowed to loopback/.test(err.message),
      );
      assert.ok(Date.now() - started < 100, 'refused at once, no connection attempt');
      assert.equal(httpClient.agentCount, before, 'no agent (and so no connection) for 10.0.0.1');
    } finally {
      await httpClient.close();
      await plain.close();
    }
  });
});

describe('DesiredStateSource over file://', { timeout: 60_000 }, () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-source-file-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('reads, answers not-modified for unchanged content, sees changes', async () => {
    const node = 'file-node';
    const path = join(dir, 'desired.json');
    await writeFile(path, JSON.stringify(doc(node, 1)));
    const calls = { n: 0 };
    const source = new DesiredStateSource({
      url: pathToFileURL(path).href,
      maxBodyBytes: 4096,
      verify: (raw) => {
        calls.n += 1;
        return raw;
      },
    });
    const first = updated(await source.pull(pullOpts(node)));
    assert.match(first.etag ?? '', /^"file-\d+-\d+-[0-9a-f]{64}"$/);
    assert.deepEqual(await source.pull(pullOpts(node, { currentEtag: first.etag, storedGeneration: 1 })), { kind: 'not-modified' });
    const future = new Date(Date.now() + 60_000);
    await utimes(path, future, future);
    assert.deepEqual(await source.pull(pullOpts(node, { currentEtag: first.etag, storedGeneration: 1 })), { kind: 'not-modified' }, 'touch is not a change');
    assert.equal(calls.n, 1);
    await writeFile(path, `\uFEFF${JSON.stringify(doc(node, 2))}`);
    const second = updated(await source.pull(pullOpts(node, { currentEtag: first.etag, storedGeneration: 1 })));
    assert.equal(second.document.generation, 2);
    assert.notEqual(second.etag, first.etag);
  });

  it('accepts nodeId "*" from a local file, not another node\'s id', async () => {
    const path = join(dir, 'any.json');
    const source = new DesiredStateSource({ url: pathToFileURL(path).href, maxBodyBytes: 4096 });
    await writeFile(path, JSON.stringify(doc('*', 1)));
    assert.equal(updated(await source.pull(pullOpts('edge-9'))).document.nodeId, '*');
    await writeFile(path, JSON.stringify(doc('edge-8', 1)));
    await expectSourceError(source.pull(pullOpts('edge-9')), 'DESIRED_STATE_INVALID', 'document is for node edge-8, this node is edge-9');
  });

  it('replaces {nodeId} in file URLs', async () => {
    const node = 'edge-7';
    await writeFile(join(dir, `${node}.json`), JSON.stringify(doc(node, 1)));
    const source = new DesiredStateSource({ url: `${pathToFileURL(dir).href}/{nodeId}.json`, maxBodyBytes: 4096 });
    updated(await source.pull(pullOpts(node)));
  });

  it('missing file, oversized file, invalid JSON', async () => {
    const node = 'file-node';
    const path = join(dir, 'other.json');
    const source = new DesiredStateSource({ url: pathToFileURL(path).href, maxBodyBytes: 1024 });
    await expectSourceError(source.pull(pullOpts(node)), 'DESIRED_STATE_UNAVAILABLE', `file not found: ${path}`);
    await writeFile(path, JSON.stringify(doc(node, 1, { labels: { pad: 'x'.repeat(2000) } })));
    await expectSourceError(source.pull(pullOpts(node)), 'DESIRED_STATE_INVALID', 'body larger than 1024 bytes');
    await writeFile(path, '{"apiVersion":');
    await expectSourceError(source.pull(pullOpts(node)), 'DESIRED_STATE_INVALID', 'not JSON: ');
  });
});

describe('SourcePoller', { skip, timeout: 120_000 }, () => {
  let dir: string;
  let pki: ThrowawayPki;
  let fleet: FleetServer;
  let staticHost: FleetServer;
  let client: HttpClient;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-poller-'));
    pki = await makeThrowawayCa(dir);
    fleet = await startFleetServer({ tls: { certFile: pki.serverCert, keyFile: pki.serverKey } });
    // A "static host": ignores Prefer: wait and answers 304 at once.
    staticHost = await startFleetServer({ tls: { certFile: pki.serverCert, keyFile: pki.serverKey }, maxWaitSeconds: 0 });
    client = createHttpClient({ caFile: pki.caCert, allowInsecureHttp: false, timeoutMs: 5000 });
  });
  after(async () => {
    await client?.close();
    await fleet?.close();
    await staticHost?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** A poller wired like the agent: onResult stores etag + generation, state() reads them back. */
  function harness(server: FleetServer, node: string, opts: { longPollSeconds: number; pollIntervalSeconds?: number; initialDelayMs?: number }) {
    const stored: { etag: string | null; generation: number | null } = { etag: null, generation: null };
    const outcomes: PollOutcome[] = [];
    const source = new DesiredStateSource({ url: server.sourceUrl, httpClient: client, maxBodyBytes: 64 * 1024 });
    const poller = new SourcePoller({
      source,
      nodeId: node,
      pollIntervalSeconds: opts.pollIntervalSeconds ?? 60,
      longPollSeconds: opts.longPollSeconds,
      state: () => ({ currentEtag: stored.etag, storedGeneration: stored.generation }),
      onResult: (o) => {
        outcomes.push(o);
        if (!(o instanceof SourceError) && o.kind === 'updated') {
          stored.etag = o.etag;
          stored.generation = o.document.generation;
        }
      },
      backoff: { initialDelayMs: opts.initialDelayMs ?? 20, multiplier: 2, maxDelayMs: 200 },
    });
    const ac = new AbortController();
    const run = poller.run(ac.signal);
    const stop = async () => {
      ac.abort();
      await run;
    };
    return { poller, outcomes, stored, stop };
  }

  it('long-poll: goes straight back after a held request and picks up each change', { timeout: TEST_TIMEOUT_MS }, async () => {
    const node = nextNode();
    fleet.setDocument(node, doc(node, 1));
    const h = harness(fleet, node, { longPollSeconds: 10 });
    try {
      await waitUntil(() => h.stored.generation === 1, 5000, 'the first document');
      // The first 200 came at once, so the poller sleeps its (60 s) interval; wake it.
      h.poller.triggerNow();
      await waitUntil(() => fleet.heldRequests() === 1, 5000, 'a held long-poll');
      await new Promise((r) => setTimeout(r, 1100)); // held for more than a second
      fleet.setDocument(node, doc(node, 2));
      await waitUntil(() => h.stored.generation === 2, 5000, 'generation 2');
      // The answer carried Preference-Applied, so the poller re-issued the long-poll at once, without a trigger.
      await waitUntil(() => fleet.heldRequests() === 1, 5000, 'the next held long-poll');
      await new Promise((r) => setTimeout(r, 1100));
      fleet.setDocument(node, doc(node, 3));
      await waitUntil(() => h.stored.generation === 3, 5000, 'generation 3');
      const reqs = fleet.requests({ nodeId: node });
      assert.ok(reqs.every((r) => r.headers.prefer === 'wait=10'));
      assert.equal(h.poller.consecutiveFailures, 0);
    } finally {
      await h.stop();
    }
  });

  it('a static host that answers 304 at once makes the poller sleep its interval', { timeout: TEST_TIMEOUT_MS }, async () => {
    const node = nextNode();
    staticHost.setDocument(node, doc(node, 1));
    const h = harness(staticHost, node, { longPollSeconds: 10, pollIntervalSeconds: 60 });
    try {
      await waitUntil(() => h.outcomes.length === 1, 5000, 'the first pull');
      h.poller.triggerNow();
      await waitUntil(() => h.outcomes.length === 2, 5000, 'the triggered pull');
      assert.deepEqual(h.outcomes[1], { kind: 'not-modified' });
      await new Promise((r) => setTimeout(r, 700));
      assert.equal(staticHost.requests({ nodeId: node }).length, 2, 'no tight loop against a host that does not hold');
    } finally {
      await h.stop();
    }
  });

  it('backs off on errors, honours Retry-After, counts failures, recovers', { timeout: TEST_TIMEOUT_MS }, async () => {
    const node = nextNode();
    fleet.setFault(node, { status: 503, retryAfter: 1 });
    const h = harness(fleet, node, { longPollSeconds: 0 });
    try {
      await waitUntil(() => h.outcomes.length >= 2, 5000, 'two failed pulls');
      assert.ok(h.outcomes.every((o) => o instanceof SourceError && o.code === 'DESIRED_STATE_UNAVAILABLE'));
      assert.ok(h.poller.consecutiveFailures >= 2);
      const reqs = fleet.requests({ nodeId: node });
      const gap = (reqs[1]?.receivedAt ?? 0) - (reqs[0]?.receivedAt ?? 0);
      // Our own backoff is <= 200 ms here; only Retry-After explains a ~1 s gap.
      assert.ok(gap >= 900, `second attempt after ${gap} ms`);
      fleet.setFault(node, null);
      fleet.setDocument(node, doc(node, 4));
      await waitUntil(() => h.stored.generation === 4, 5000, 'recovery');
      assert.equal(h.poller.consecutiveFailures, 0);
    } finally {
      await h.stop();
    }
  });

  it('backs off exponentially without Retry-After', { timeout: TEST_TIMEOUT_MS }, async () => {
    const node = nextNode(); // never published: 404
    const h = harness(fleet, node, { longPollSeconds: 0, initialDelayMs: 100 });
    try {
      await waitUntil(() => h.outcomes.length >= 4, 5000, 'four failed pulls');
      assert.equal(h.poller.consecutiveFailures >= 4, true);
      assert.ok(h.outcomes.every((o) => o instanceof SourceError && o.message.includes('404')));
    } finally {
      await h.stop();
    }
  });

  it('triggerNow wakes a sleeping poller; abort stops it', { timeout: TEST_TIMEOUT_MS }, async () => {
    const node = nextNode();
    fleet.setDocument(node, doc(node, 1));
    const h = harness(fleet, node, { longPollSeconds: 0, pollIntervalSeconds: 3600 });
    await waitUntil(() => h.outcomes.length === 1, 5000, 'the first pull');
    fleet.setDocument(node, doc(node, 2));
    h.poller.triggerNow();
    await waitUntil(() => h.stored.generation === 2, 5000, 'the triggered pull');
    const started = Date.now();
    await h.stop();
    assert.ok(Date.now() - started < 1000, 'stops at once');
    const count = h.outcomes.length;
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(h.outcomes.length, count, 'nothing after stop');
  });
});
