/** Pure parts of `serve`: the auth table, tokens, ETags, Prefer parsing, held-request bounds, the overview. */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { authorize, hashToken, issueToken, nodeIdFromCertificate, TokenTable, type Action, type Principal } from '../../src/control-plane/auth.js';
import { DirStore } from '../../src/control-plane/dir-store.js';
import { etagMatches, HeldRequests, preferWaitSeconds } from '../../src/control-plane/long-poll.js';
import { fleetOverview, nodeOverview } from '../../src/control-plane/overview.js';
import { escapeHtml, renderOverviewPage } from '../../src/control-plane/page.js';
import { generationOf, strongEtag } from '../../src/control-plane/store.js';
import { parseListen } from '../../src/cli/serve.js';
import type { StatusReport } from '../../src/spec/status-report.js';

describe('authorize: the table', () => {
  const admin: Principal = { kind: 'admin' };
  const a: Principal = { kind: 'node', nodeId: 'a' };
  const cases: Array<[Principal | null, Action, string | undefined, ReturnType<typeof authorize>]> = [
    [null, 'read-desired', 'a', 'unauthenticated'],
    [null, 'read-fleet', undefined, 'unauthenticated'],
    [a, 'read-desired', 'a', 'allow'],
    [a, 'write-status', 'a', 'allow'],
    [a, 'read-desired', 'b', 'forbidden'],
    [a, 'write-status', 'b', 'forbidden'],
    [a, 'write-desired', 'a', 'forbidden'],
    [a, 'read-fleet', undefined, 'forbidden'],
    [a, 'read-desired', undefined, 'forbidden'],
    [admin, 'read-desired', 'b', 'allow'],
    [admin, 'write-desired', 'b', 'allow'],
    [admin, 'write-status', 'b', 'allow'],
    [admin, 'read-fleet', undefined, 'allow'],
  ];
  for (const [p, action, node, want] of cases) {
    it(`${p === null ? 'nobody' : p.kind === 'admin' ? 'admin' : `node ${p.nodeId}`} ${action} ${node ?? '(fleet)'} -> ${want}`, () => {
      assert.equal(authorize(p, action, node), want);
    });
  }
});

describe('tokens', () => {
  it('stores only HMACs, owner-only; a new token replaces the old one; admin is separate', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'persys-tokens-'));
    try {
      const t1 = await issueToken(dir, { nodeId: 'a' });
      const admin = await issueToken(dir, { admin: true });
      const table = await TokenTable.open(dir);
      assert.deepEqual(await table.resolve(t1), { kind: 'node', nodeId: 'a' });
      assert.deepEqual(await table.resolve(admin), { kind: 'admin' });
      assert.equal(await table.resolve('pst_nope'), null);
      const file = await readFile(join(dir, 'tokens.json'), 'utf8');
      assert.ok(!file.includes(t1) && !file.includes(admin), 'no token in clear');
      const secret = Buffer.from((await readFile(join(dir, 'server-secret'), 'utf8')).trim(), 'hex');
      assert.ok(file.includes(hashToken(secret, t1)));
      assert.equal((await stat(join(dir, 'tokens.json'))).mode & 0o777, 0o600);
      assert.equal((await stat(join(dir, 'server-secret'))).mode & 0o777, 0o600);
      const t2 = await issueToken(dir, { nodeId: 'a' });
      const fresh = await TokenTable.open(dir);
      assert.equal(await fresh.resolve(t1), null, 'the old token no longer works');
      assert.deepEqual(await fresh.resolve(t2), { kind: 'node', nodeId: 'a' });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a client certificate names the node by DNS SAN, else by CN; nothing else counts', () => {
    const isNode = (s: string) => /^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(s);
    assert.equal(nodeIdFromCertificate({ subject: { CN: 'edge-7' } }, isNode), 'edge-7');
    assert.equal(nodeIdFromCertificate({ subject: { CN: 'x y' }, subjectaltname: 'IP Address:127.0.0.1, DNS:edge-8' }, isNode), 'edge-8');
    assert.equal(nodeIdFromCertificate({ subject: { CN: 'not a node' } }, isNode), null);
    assert.equal(nodeIdFromCertificate(null, isNode), null);
  });
});

describe('ETag, Prefer, generation', () => {
  it('strong ETag is the sha256 of the bytes; If-None-Match matches lists, * and weak forms', () => {
    const e = strongEtag(Buffer.from('{}'));
    assert.equal(e, '"sha256-44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"');
    assert.ok(etagMatches(e, e));
    assert.ok(etagMatches(`"x", ${e}`, e));
    assert.ok(etagMatches(`W/${e}`, e));
    assert.ok(etagMatches('*', e));
    assert.ok(!etagMatches('"other"', e));
    assert.ok(!etagMatches(undefined, e));
  });

  it('Prefer: wait=N among other preferences; absent or malformed is 0', () => {
    assert.equal(preferWaitSeconds('wait=90'), 90);
    assert.equal(preferWaitSeconds('respond-async, wait=10'), 10);
    assert.equal(preferWaitSeconds('return=minimal'), 0);
    assert.equal(preferWaitSeconds(undefined), 0);
    assert.equal(preferWaitSeconds('wait=abc'), 0);
  });

  it('reads the generation of a document and of a DSSE envelope payload', () => {
    assert.equal(generationOf(Buffer.from('{"generation":4}')), 4);
    const payload = Buffer.from('{"generation":9}').toString('base64');
    assert.equal(generationOf(Buffer.from(JSON.stringify({ payloadType: 'application/vnd.persys.desired+json', payload, signatures: [] }))), 9);
    assert.equal(generationOf(Buffer.from('nope')), null);
  });

  it('--listen parses host:port and [v6]:port', () => {
    assert.deepEqual(parseListen('127.0.0.1:0'), { host: '127.0.0.1', port: 0 });
    assert.deepEqual(parseListen('[::1]:8443'), { host: '::1', port: 8443 });
    assert.deepEqual(parseListen(':8443'), { host: '0.0.0.0', port: 8443 });
    assert.throws(() => parseListen('8443'), /HOST:PORT/);
    assert.throws(() => parseListen('h:70000'), /out of range/);
  });
});

describe('held requests', () => {
  it('answers exactly once: on wake or on timeout; bounded; dropped when the client leaves', async () => {
    const held = new HeldRequests(2);
    const answers: string[] = [];
    let drop: (() => void) | undefined;
    assert.ok(held.hold('a', 10_000, (w) => answers.push(`a:${w}`), () => undefined));
    assert.ok(held.hold('b', 30, (w) => answers.push(`b:${w}`), (d) => (drop = d)));
    assert.equal(held.hold('c', 10_000, () => answers.push('c'), () => undefined), false, 'over the bound');
    assert.equal(held.count, 2);
    assert.equal(held.wake('a'), 1);
    assert.equal(held.wake('a'), 0, 'answered once');
    await new Promise((r) => setTimeout(r, 60));
    assert.deepEqual(answers, ['a:true', 'b:false']);
    assert.equal(held.count, 0);
    drop?.();
    assert.equal(held.count, 0);
    assert.ok(held.hold('d', 10_000, () => answers.push('d'), (d) => (drop = d)));
    drop?.();
    assert.equal(held.count, 0, 'a client that left is no longer held');
    held.releaseAll();
    assert.ok(!answers.includes('d'));
  });
});

describe('fleet overview', () => {
  const report = (nodeId: string, over: Partial<StatusReport> = {}): StatusReport => ({
    apiVersion: 'persys.dev/v1',
    kind: 'StatusReport',
    nodeId,
    seq: 1,
    agentVersion: '1.0.0',
    observedGeneration: 3,
    sentAt: '2026-01-01T00:00:00.000Z',
    node: { hostname: 'h', labels: {}, runtimes: { docker: 'up' } },
    sync: { lastPullAt: null, lastError: null },
    workloads: [],
    ...over,
  });
  const now = new Date('2026-01-01T00:10:00.000Z');

  it('stale after 3 heartbeats; behind when observed < published; failing with code and message', () => {
    const fresh = { report: report('a'), receivedAt: '2026-01-01T00:09:30.000Z' };
    const old = { report: report('b'), receivedAt: '2026-01-01T00:06:59.000Z' };
    assert.equal(nodeOverview('a', 3, fresh, now, 60).state, 'ok');
    assert.equal(nodeOverview('b', 3, old, now, 60).stale, true);
    assert.equal(nodeOverview('b', 3, old, now, 60).state, 'stale');
    assert.equal(nodeOverview('a', 4, fresh, now, 60).state, 'behind');
    const failing = {
      report: report('c', {
        workloads: [
          { id: 'w', type: 'container', desiredState: 'running', actualState: 'missing', phase: 'BackingOff', message: 'm', error: { code: 'IMAGE_PULL_FAILED', message: 'exact', userMessage: 'friendly', transient: true } },
          { id: 'x', type: 'container', desiredState: 'running', actualState: 'running', phase: 'Running', message: '' },
        ],
      }),
      receivedAt: '2026-01-01T00:09:30.000Z',
    };
    const row = nodeOverview('c', 3, failing, now, 60);
    assert.equal(row.state, 'failing');
    assert.deepEqual(row.failing, [{ id: 'w', type: 'container', phase: 'BackingOff', code: 'IMAGE_PULL_FAILED', message: 'exact', userMessage: 'friendly' }]);
    assert.deepEqual(row.workloadsByPhase, { BackingOff: 1, Running: 1 });
    assert.equal(nodeOverview('d', 1, undefined, now, 60).state, 'never-reported');
  });

  it('sorts worst first and includes nodes that only reported or were only published', () => {
    const rows = fleetOverview({
      published: new Map([['p', 1], ['ok', 3]]),
      reports: new Map([
        ['ok', { report: report('ok'), receivedAt: '2026-01-01T00:09:59.000Z' }],
        ['r', { report: report('r'), receivedAt: '2026-01-01T00:00:00.000Z' }],
      ]),
      now,
      heartbeatSeconds: 60,
    });
    assert.deepEqual(rows.map((r) => `${r.nodeId}:${r.state}`), ['r:stale', 'p:never-reported', 'ok:ok']);
  });

  it('the page escapes what nodes report', () => {
    const evil = report('e', { agentVersion: '<script>alert(1)</script>' });
    const html = renderOverviewPage([nodeOverview('e', 3, { report: evil, receivedAt: '2026-01-01T00:09:59.000Z' }, now, 60)], 'all', now);
    assert.ok(!html.includes('<script>alert(1)'));
    assert.ok(html.includes(escapeHtml('<script>alert(1)</script>')));
  });
});

describe('directory store', () => {
  it('refuses a lower generation, ignores an older seq, picks up a file edited by hand', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'persys-dirstore-'));
    const store = new DirStore(dir, { historyLimit: 2 });
    try {
      await store.open();
      const changed: string[] = [];
      store.onDocumentChanged((id) => changed.push(id));
      assert.ok((await store.putDocument('a', Buffer.from('{"generation":2}'), 2)).ok);
      assert.deepEqual(await store.putDocument('a', Buffer.from('{"generation":1}'), 1), { ok: false, reason: 'generation', storedGeneration: 2 });
      const same = await store.putDocument('a', Buffer.from('{"generation":2}'), 2);
      assert.ok(same.ok && same.unchanged);
      assert.deepEqual(changed, ['a']);
      const { writeFile } = await import('node:fs/promises');
      await writeFile(join(dir, 'nodes', 'b.json'), '{"generation":5}');
      const deadline = Date.now() + 5000;
      while (store.document('b') === undefined && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.equal(store.document('b')?.generation, 5);
      assert.ok(changed.includes('b'));
      const r = (seq: number) => ({ ...({} as StatusReport), seq, observedGeneration: 1, workloads: [] }) as StatusReport;
      assert.deepEqual(await store.putReport('a', r(3), 't1'), { stored: true });
      assert.deepEqual(await store.putReport('a', r(2), 't2'), { stored: false, storedSeq: 3 });
      await store.putReport('a', r(4), 't3');
      await store.putReport('a', r(5), 't4');
      assert.deepEqual((await store.history('a')).map((h) => h.seq), [4, 5], 'bounded history');
      // A restart reads what was stored.
      await store.close();
      const again = new DirStore(dir);
      await again.open();
      assert.equal(again.document('a')?.generation, 2);
      assert.equal((await again.latestReports()).get('a')?.report.seq, 5);
      await again.close();
    } finally {
      await store.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
