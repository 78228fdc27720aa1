/**
 * Hostile servers (issue 16, fault family 3), on the built CLI, the real dockerd and loopback
 * HTTPS fleet servers we control (127.0.0.1, plus 127.0.0.2 as "another host").
 *
 * One agent runs one container and is pointed at a source server and a separate status server.
 * The source server is switched to each fault in turn: 500, 503 with Retry-After, 404, a reset
 * mid-body, a stall after the headers, endless chunked bodies (fast: the size cap; a drip: the
 * whole-exchange deadline), a body over the cap, truncated JSON, a wrong schema, another node's
 * document, a lower generation, an untrusted CA, a redirect to another host, an empty 200 and HTML
 * with status 200. The documents that must be refused have no workloads, so accepting one would
 * remove the container. For each case:
 *   - the agent is alive, and its peak RSS (VmRSS from /proc, sampled all along) is printed;
 *   - `persys-agent status --json` (the local API) carries the case's code in sync.lastError, the
 *     generation in force is unchanged and the container still Running (same id, never restarted);
 *   - /readyz says the source is not ready, naming the code;
 *   - the server saw a bounded number of requests (backoff), and with Retry-After none before it.
 * Then the status server gets the faults that apply to a POST (500, 503 + Retry-After, 404, a
 * reset, no answer, an endless error body, an untrusted CA, a redirect to another host that
 * refuses it): reports are retried with backoff, each attempt carries a new seq (a fresh
 * snapshot, never a stored copy), and once the server recovers the first report it accepts is the
 * newest one (a generation published during the outage, the next seq): no backlog is replayed.
 * A 2xx status line is acceptance (the answer's body is never read), so an empty 200, HTML with
 * 200 and a 200 whose body stalls count as delivered: no error, no retry, the heartbeat goes on.
 * One source fault and one status fault are held 12 s, long enough to tell backoff from none.
 *
 * Prints: FIGURES hostile-servers: cases=N peakRssMiB=X baselineRssMiB=Y requests=case:n,...
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import Docker from 'dockerode';

import { apiSocketPath, callAgent } from '../../src/api/client.js';
import { AgentProcess, runCli, waitFor } from '../helpers/agent-process.js';
import { cleanupDockerByLabel, requireEngine, testNodeId } from '../helpers/engines.js';
import { startFleetServer, type DocumentFault, type FleetServer, type JsonObject, type RecordedRequest, type StatusFault } from '../helpers/fleet-server.js';
import { freePort } from '../helpers/prometheus.js';
import { makeThrowawayCa, opensslSkipReason, type ThrowawayPki } from '../helpers/tls.js';

const skip = (await requireEngine('docker')) || (await opensslSkipReason());
const IMAGE = 'persys-test/busybox:1';
/** source.maxBodyBytes: small, so the cap cases cost little. */
const CAP = 64 * 1024;
/** source.timeoutSeconds: a stalled answer ends after this, a dribbling one after twice this. */
const TIMEOUT_S = 2;
/** How long each fault is served. Longer than 3 poll intervals, so /readyz has gone stale. */
const WINDOW_MS = 5000;
/** Requests one fault may draw in WINDOW_MS: backoff starts at 1 s and doubles (full jitter). */
const MAX_REQUESTS = 8;
const RETRY_AFTER_S = 3;
/** The agent must stay within this much of its RSS before the faults (bounded memory). */
const RSS_GROWTH_LIMIT_MIB = 96;

interface Report extends JsonObject {
  seq: number;
  observedGeneration: number | null;
  node: { labels: Record<string, string> };
  sync: { lastError: { code: string; message: string } | null };
  workloads: { id: string; phase: string; runtimeId?: string }[];
}

interface SourceCase {
  name: string;
  code: 'DESIRED_STATE_UNAVAILABLE' | 'DESIRED_STATE_INVALID' | 'DESIRED_STATE_STALE';
  message: RegExp;
  /** The fault, or 'untrusted-ca' (the server switches to a certificate of a CA the agent does not trust). */
  fault: () => DocumentFault | 'untrusted-ca';
  /** Minimum gap (ms) between an answer and the next request (Retry-After). */
  minGapMs?: number;
  /** A longer window with its own bound (SUSTAINED). */
  sustained?: boolean;
}

interface StatusCase {
  name: string;
  message: RegExp;
  fault: () => StatusFault | 'untrusted-ca';
  minGapMs?: number;
  sustained?: boolean;
}

/**
 * One fault held long enough to tell backoff from none: with 1 s doubling and full jitter, more than
 * 9 attempts in 12 s has a probability below 1e-6 (simulated), while retrying at the 1 s poll
 * interval would make 11 or 12.
 */
const SUSTAINED = { windowMs: 12_000, maxRequests: 9 };

/** Writes `total` bytes in 16 KiB chunks as fast as the peer reads, unless the response closes first. */
function pump(res: ServerResponse, total: number): void {
  const chunk = Buffer.alloc(16 * 1024, 0x20); // spaces: valid JSON whitespace, so only size can end it
  let sent = 0;
  const more = (): void => {
    while (sent < total && !res.destroyed) {
      sent += chunk.length;
      if (!res.write(chunk)) {
        res.once('drain', more);
        return;
      }
    }
    if (!res.destroyed) res.end();
  };
  more();
}

/** A raw fault whose handler owns the response. */
const raw = (respond: (req: IncomingMessage, res: ServerResponse, answered: (status: number) => void) => void): DocumentFault & StatusFault => ({ respond });

describe('hostile servers: the agent keeps the last good state, stays alive and bounded, backs off, reports the code', { skip, timeout: 300_000 }, () => {
  const nodeId = testNodeId('test-hostile');
  const docker = new Docker({ socketPath: '/var/run/docker.sock' });
  let dir: string;
  let pki: ThrowawayPki;
  let rogue: ThrowawayPki;
  let src: FleetServer;
  let st: FleetServer;
  let other: FleetServer;
  let agent: AgentProcess;
  let configPath: string;
  let stateDir: string;
  let metricsPort: number;
  let generation = 5;
  let containerId = '';
  let startedAt = '';
  let goodBody = Buffer.alloc(0);
  let baselineRssKiB = 0;
  let peakRssKiB = 0;
  let sampler: NodeJS.Timeout | undefined;
  const counts: string[] = [];
  let cases = 0;

  const doc = (gen: number, workloads: unknown[], forNode = nodeId) => ({
    apiVersion: 'persys.dev/v1',
    kind: 'DesiredState',
    nodeId: forNode,
    generation: gen,
    labels: { hostile: `g${gen}` },
    workloads,
  });
  const keep = {
    id: 'keep',
    type: 'container',
    revision: 'r1',
    desiredState: 'running',
    spec: { image: IMAGE, command: ['sleep', '3600'], stopTimeoutSeconds: 1, network: { mode: 'none' } },
  };
  const publish = (gen: number) => {
    generation = gen;
    const d = doc(gen, [keep]);
    goodBody = Buffer.from(JSON.stringify(d));
    src.setDocument(nodeId, d);
  };

  const fail = (what: string, err: unknown): never => {
    throw new Error(`${what}: ${err instanceof Error ? err.message : String(err)}\n--- agent log (tail) ---\n${agent.dump().split('\n').slice(-40).join('\n')}`);
  };
  const localStatus = async (): Promise<Report> => {
    const res = await callAgent(apiSocketPath(stateDir), 'GET', '/v1/status', 30_000);
    assert.equal(res.status, 200, `local status answered ${res.status}`);
    return res.body as Report;
  };
  const readyz = async (): Promise<{ status: string; checks: Record<string, { ok: boolean; reason: string }> }> => {
    const res = await fetch(`http://127.0.0.1:${metricsPort}/readyz`);
    return (await res.json()) as { status: string; checks: Record<string, { ok: boolean; reason: string }> };
  };
  const metric = async (name: string, result: string): Promise<number> => {
    const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    const re = new RegExp(`^${name}\\{[^}]*result="${result}"[^}]*\\} (\\d+)`, 'm');
    return Number(re.exec(text)?.[1] ?? Number.NaN);
  };
  const rssKiB = async (): Promise<number> => {
    const text = await readFile(`/proc/${agent.pid}/status`, 'utf8');
    return Number(/^VmRSS:\s+(\d+) kB/m.exec(text)?.[1] ?? 0);
  };
  const assertAlive = () => assert.equal(agent.child.exitCode, null, `the agent exited (${agent.child.exitCode ?? agent.child.signalCode ?? '?'})\n${agent.dump()}`);
  /** The container is the one the good state made: same id, never restarted, still running. */
  const assertContainerKept = async () => {
    const info = await docker.getContainer(containerId).inspect();
    assert.equal(info.State.Running, true, 'the container still runs');
    assert.equal(info.State.StartedAt, startedAt, 'the container was not restarted');
    const ours = await docker.listContainers({ all: true, filters: { label: [`dev.persys.node-id=${nodeId}`] } });
    assert.deepEqual(ours.map((c) => c.Id), [containerId], 'exactly the one container of the good state');
  };
  /** Back to the good document and pull now (ends the backoff sleep): the error clears. */
  const recoverSource = async () => {
    src.setFault(nodeId, null);
    await src.setTls({ certFile: pki.serverCert, keyFile: pki.serverKey });
    await callAgent(apiSocketPath(stateDir), 'POST', '/v1/sync', 60_000);
    await waitFor('the pull error to clear', async () => (await localStatus()).sync.lastError === null, 30_000, 200).catch((e: unknown) => fail('recovery', e));
  };
  const clearStatusFaults = async () => {
    st.setStatusFault(nodeId, null);
    other.setStatusFault(nodeId, null);
    await st.setTls({ certFile: pki.serverCert, keyFile: pki.serverKey });
  };
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  /** Gaps between the end of each answered request and the start of the next. */
  const minGap = (reqs: RecordedRequest[]) => {
    let gap = Number.POSITIVE_INFINITY;
    for (let i = 1; i < reqs.length; i++) gap = Math.min(gap, reqs[i]!.receivedAt - (reqs[i - 1]!.receivedAt + reqs[i - 1]!.durationMs));
    return gap;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-hostile-'));
    await mkdir(join(dir, 'pki'));
    await mkdir(join(dir, 'rogue'));
    pki = await makeThrowawayCa(join(dir, 'pki'));
    rogue = await makeThrowawayCa(join(dir, 'rogue'), 'rogue');
    const tls = { certFile: pki.serverCert, keyFile: pki.serverKey };
    src = await startFleetServer({ tls, requireToken: 'source-token' });
    st = await startFleetServer({ tls, requireToken: 'status-token' });
    other = await startFleetServer({ tls, host: '127.0.0.2' });
    await writeFile(join(dir, 'source.token'), 'source-token\n', { mode: 0o600 });
    await writeFile(join(dir, 'status.token'), 'status-token\n', { mode: 0o600 });
    metricsPort = await freePort();
    stateDir = join(dir, 'state');
    configPath = join(dir, 'config.json');
    await writeFile(
      configPath,
      JSON.stringify({
        nodeId,
        stateDir,
        logLevel: 'info',
        source: { url: src.sourceUrl, pollIntervalSeconds: 1, timeoutSeconds: TIMEOUT_S, maxBodyBytes: CAP, caFile: pki.caCert, tokenFile: join(dir, 'source.token') },
        status: { url: st.statusUrl, heartbeatSeconds: 2, debounceMs: 100, tokenFile: join(dir, 'status.token') },
        reconcile: { intervalSeconds: 5 },
        metrics: { listen: `127.0.0.1:${metricsPort}` },
        docker: { namePrefix: `t-${nodeId}-` },
      }),
    );
    publish(generation);
    agent = AgentProcess.start(['run', '--config', configPath]);
    const first = (await st
      .waitForReport(nodeId, (r) => (r as Report).observedGeneration === generation && (r as Report).workloads.some((w) => w.id === 'keep' && w.phase === 'Running'), 90_000)
      .catch((e: unknown) => fail('the good state running', e))) as Report;
    containerId = first.workloads.find((w) => w.id === 'keep')?.runtimeId ?? '';
    assert.ok(containerId !== '', 'the report names the container');
    startedAt = (await docker.getContainer(containerId).inspect()).State.StartedAt;
    // Settle, then take the idle RSS as the baseline; the sampler keeps the peak from here on.
    await sleep(2000);
    baselineRssKiB = await rssKiB();
    peakRssKiB = baselineRssKiB;
    sampler = setInterval(() => {
      rssKiB().then(
        (kib) => void (peakRssKiB = Math.max(peakRssKiB, kib)),
        () => undefined,
      );
    }, 100);
  });

  after(async () => {
    if (sampler) clearInterval(sampler);
    await agent?.stop('SIGTERM').catch(() => undefined);
    await cleanupDockerByLabel(nodeId).catch(() => undefined);
    await Promise.allSettled([src?.close(), st?.close(), other?.close()]);
    if (dir) await rm(dir, { recursive: true, force: true });
    const mib = (kib: number) => (kib / 1024).toFixed(1);
    console.log(`FIGURES hostile-servers: cases=${cases} peakRssMiB=${mib(peakRssKiB)} baselineRssMiB=${mib(baselineRssKiB)} requests=${counts.join(',')}`);
  });

  const sourceCases: SourceCase[] = [
    { name: '500', code: 'DESIRED_STATE_UNAVAILABLE', message: /: 500 Internal Server Error: fault 500/, fault: () => ({ status: 500 }), sustained: true },
    {
      name: '503-retry-after',
      code: 'DESIRED_STATE_UNAVAILABLE',
      message: /: 503 Service Unavailable/,
      fault: () => ({ status: 503, retryAfter: RETRY_AFTER_S }),
      minGapMs: RETRY_AFTER_S * 1000 - 250,
    },
    { name: '404', code: 'DESIRED_STATE_UNAVAILABLE', message: /404 Not Found: no desired state published for node/, fault: () => ({ status: 404 }) },
    {
      name: 'reset-mid-body',
      code: 'DESIRED_STATE_UNAVAILABLE',
      message: /other side closed|terminated|socket hang up|ECONNRESET|closed/i,
      fault: () =>
        raw((_req, res, answered) => {
          res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(goodBody.length) });
          answered(200);
          res.write(goodBody.subarray(0, goodBody.length >> 1), () => setTimeout(() => res.socket?.destroy(), 20));
        }),
    },
    {
      name: 'stall-after-headers',
      code: 'DESIRED_STATE_UNAVAILABLE',
      message: /timeout|no complete answer/i,
      fault: () =>
        raw((_req, res, answered) => {
          res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(goodBody.length) });
          answered(200);
          res.write(goodBody.subarray(0, 10)); // and then nothing, ever
        }),
    },
    {
      name: 'endless-chunked-fast',
      code: 'DESIRED_STATE_INVALID',
      message: new RegExp(`body larger than ${CAP} bytes`),
      fault: () =>
        raw((_req, res, answered) => {
          res.writeHead(200, { 'content-type': 'application/json' });
          answered(200);
          pump(res, 256 * 1024 * 1024); // "endless": far beyond the cap, bounded so the test stops by itself
        }),
    },
    {
      name: 'endless-chunked-drip',
      code: 'DESIRED_STATE_UNAVAILABLE',
      message: new RegExp(`no complete answer within ${2 * TIMEOUT_S} s`),
      fault: () =>
        raw((_req, res, answered) => {
          res.writeHead(200, { 'content-type': 'application/json' });
          answered(200);
          // One byte every 200 ms: never idle long enough for the body timeout, never done.
          const t = setInterval(() => (res.destroyed ? clearInterval(t) : res.write(' ')), 200);
          res.on('close', () => clearInterval(t));
        }),
      // The first failure comes a poll (1 s) plus the 2 x TIMEOUT_S deadline (4 s) after the fault is
      // set: exactly the 5 s window, so a busy machine missed it (CI of 7bcb1bb). Held longer.
      sustained: true,
    },
    {
      name: 'over-cap',
      code: 'DESIRED_STATE_INVALID',
      message: new RegExp(`body larger than ${CAP} bytes`),
      fault: () => ({ status: 200, body: JSON.stringify({ ...doc(generation + 1, []), pad: 'x'.repeat(2 * CAP) }) }),
    },
    {
      name: 'truncated-json',
      code: 'DESIRED_STATE_INVALID',
      message: /not JSON/,
      fault: () => ({ status: 200, body: JSON.stringify(doc(generation + 1, [])).slice(0, 60) }),
    },
    {
      name: 'wrong-schema',
      code: 'DESIRED_STATE_INVALID',
      message: /schema: \d+ issue/,
      fault: () => ({ status: 200, body: JSON.stringify({ ...doc(generation + 1, []), workloads: 'none' }) }),
    },
    {
      name: 'other-node',
      code: 'DESIRED_STATE_INVALID',
      message: /document is for node someone-else/,
      fault: () => ({ status: 200, body: JSON.stringify(doc(generation + 1, [], 'someone-else')) }),
    },
    {
      name: 'lower-generation',
      code: 'DESIRED_STATE_STALE',
      message: new RegExp(`generation ${generation - 1} is lower than the stored generation`),
      fault: () => ({ status: 200, body: JSON.stringify(doc(generation - 1, [])) }),
    },
    { name: 'untrusted-ca', code: 'DESIRED_STATE_UNAVAILABLE', message: /self.signed|unable to (verify|get)|certificate/i, fault: () => 'untrusted-ca' },
    {
      name: 'redirect-other-host',
      code: 'DESIRED_STATE_UNAVAILABLE',
      message: /127\.0\.0\.2.*404/,
      fault: () => ({ status: 302, location: other.documentUrl(nodeId) }),
    },
    { name: 'empty-200', code: 'DESIRED_STATE_INVALID', message: /not JSON/, fault: () => ({ status: 200, body: '' }) },
    {
      name: 'html-200',
      code: 'DESIRED_STATE_INVALID',
      message: /not JSON/,
      fault: () => ({ status: 200, body: '<!doctype html><html><body><h1>Welcome to nginx!</h1></body></html>\n' }),
    },
  ];

  for (const c of sourceCases) {
    it(`source: ${c.name} -> ${c.code}, last good state kept`, async (t) => {
      assertAlive();
      // Recovered even when an assertion fails, so one broken case does not poison the next.
      t.after(recoverSource);
      const errorsBefore = await metric('persys_desired_state_pulls_total', 'error');
      const linesBefore = agent.lines.length;
      const t0 = Date.now();
      const fault = c.fault();
      if (fault === 'untrusted-ca') await src.setTls({ certFile: rogue.serverCert, keyFile: rogue.serverKey });
      else src.setFault(nodeId, fault);
      const { windowMs, maxRequests } = c.sustained ? SUSTAINED : { windowMs: WINDOW_MS, maxRequests: MAX_REQUESTS };
      await sleep(windowMs);

      const local = await localStatus();
      t.diagnostic(`${c.name}: ${local.sync.lastError?.code ?? 'no error'}: ${local.sync.lastError?.message ?? ''}`);
      assert.equal(local.sync.lastError?.code, c.code, `code in the local status (${JSON.stringify(local.sync.lastError)})`);
      assert.match(local.sync.lastError?.message ?? '', c.message);
      assert.equal(local.observedGeneration, generation, 'the generation in force did not change');
      assert.deepEqual(local.workloads.map((w) => [w.id, w.phase]), [['keep', 'Running']], 'the workload was kept');
      const ready = await readyz();
      assert.equal(ready.checks.source?.ok, false, `/readyz source: ${JSON.stringify(ready.checks.source)}`);
      assert.ok(ready.checks.source?.reason.includes(c.code), `/readyz names the code: ${ready.checks.source?.reason ?? ''}`);
      // The status server is healthy: the report tells the central side the same.
      const report = (await st.waitForReport(nodeId, (r) => (r as Report).sync.lastError?.code === c.code && Date.parse(String(r.sentAt)) >= t0, 10_000)) as Report;
      assert.equal(report.observedGeneration, generation);

      // Backoff: a bounded number of attempts (handshake failures never reach HTTP: count them on the agent).
      const seen = src.requests({ nodeId, kind: 'document' }).filter((r) => r.receivedAt >= t0);
      const attempts = fault === 'untrusted-ca' ? (await metric('persys_desired_state_pulls_total', 'error')) - errorsBefore : seen.length;
      counts.push(`${c.name}:${attempts}`);
      assert.ok(attempts >= 1 && attempts <= maxRequests, `${attempts} attempts in ${windowMs} ms (at most ${maxRequests} with backoff)`);
      // One WARN per new reason, not one per attempt.
      const warned = agent.lines.slice(linesBefore).filter((l) => l.level === 40 && l.msg.startsWith('desired state rejected'));
      assert.ok(warned.length >= 1 && warned.length <= attempts, `${warned.length} WARN line(s) for ${attempts} attempts`);
      if (c.minGapMs !== undefined) {
        assert.ok(seen.length >= 1);
        assert.ok(minGap(seen) >= c.minGapMs, `Retry-After ${RETRY_AFTER_S} s honoured (smallest gap ${minGap(seen)} ms)`);
      }
      if (c.name === 'redirect-other-host') {
        const there = other.requests({ nodeId, kind: 'document' }).filter((r) => r.receivedAt >= t0);
        assert.ok(there.length >= 1, 'the redirect was followed to the other host');
        assert.ok(
          there.every((r) => r.headers.authorization === undefined),
          'the source token never goes to another host',
        );
      }
      assertAlive();
      await assertContainerKept();
      cases += 1;
    });
  }

  const statusCases: StatusCase[] = [
    { name: 'status-500', message: /: 500 Internal Server Error/, fault: () => ({ status: 500 }), sustained: true },
    { name: 'status-503-retry-after', message: /: 503 Service Unavailable/, fault: () => ({ status: 503, retryAfter: RETRY_AFTER_S }), minGapMs: RETRY_AFTER_S * 1000 - 250 },
    { name: 'status-404', message: /: 404 Not Found/, fault: () => ({ status: 404 }) },
    {
      name: 'status-reset',
      message: /other side closed|socket hang up|ECONNRESET|closed/i,
      fault: () => raw((_req, res) => void res.socket?.destroy()),
    },
    {
      name: 'status-no-answer',
      message: /timeout|no complete answer/i,
      fault: () => raw(() => undefined),
    },
    {
      name: 'status-endless-error-body',
      message: /: 500 Internal Server Error: …$/,
      fault: () =>
        raw((_req, res, answered) => {
          res.writeHead(500, { 'content-type': 'text/plain' });
          answered(500);
          pump(res, 256 * 1024 * 1024);
        }),
    },
    { name: 'status-untrusted-ca', message: /self.signed|unable to (verify|get)|certificate/i, fault: () => 'untrusted-ca' },
    {
      name: 'status-redirect-other-host',
      message: /127\.0\.0\.2.*500/,
      fault: () => ({ status: 307, location: other.statusUrlFor(nodeId) }),
    },
  ];

  for (const c of statusCases) {
    it(`${c.name}: retried with backoff, each attempt a fresh snapshot, the newest one lands`, async (t) => {
      assertAlive();
      t.after(clearStatusFaults);
      const accepted = st.reports(nodeId) as Report[];
      const lastSeq = Math.max(...accepted.map((r) => r.seq));
      const errorsBefore = await metric('persys_status_reports_total', 'error');
      const linesBefore = agent.lines.length;
      const t0 = Date.now();
      const fault = c.fault();
      if (fault === 'untrusted-ca') await st.setTls({ certFile: rogue.serverCert, keyFile: rogue.serverKey });
      else st.setStatusFault(nodeId, fault);
      if (c.name === 'status-redirect-other-host') other.setStatusFault(nodeId, { status: 500 });
      const { windowMs, maxRequests } = c.sustained ? SUSTAINED : { windowMs: WINDOW_MS, maxRequests: MAX_REQUESTS };
      // A change during the outage: the report that finally lands must carry it.
      await sleep(1000);
      publish(generation + 1);
      await sleep(windowMs - 1000);

      const local = await localStatus();
      assert.equal(local.observedGeneration, generation, 'the source side applied the new generation meanwhile');
      assert.deepEqual(local.workloads.map((w) => [w.id, w.phase]), [['keep', 'Running']]);
      const failedDelta = (await metric('persys_status_reports_total', 'error')) - errorsBefore;
      const seen = st.requests({ nodeId, kind: 'status' }).filter((r) => r.receivedAt >= t0);
      const attempts = fault === 'untrusted-ca' ? failedDelta : seen.length;
      counts.push(`${c.name}:${attempts}`);
      assert.ok(failedDelta >= 1, 'the report was not delivered');
      assert.ok(attempts >= 1 && attempts <= maxRequests, `${attempts} attempts in ${windowMs} ms (at most ${maxRequests} with backoff)`);
      // Every attempt is built anew: strictly growing seqs, never a stored copy sent again.
      const seqs = seen.map((r) => (r.json as Report | undefined)?.seq ?? Number.NaN);
      for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i]! > seqs[i - 1]!, `attempt seqs grow: ${seqs.join(',')}`);
      if (c.minGapMs !== undefined) assert.ok(minGap(seen) >= c.minGapMs, `Retry-After ${RETRY_AFTER_S} s honoured (smallest gap ${minGap(seen)} ms)`);
      if (c.name === 'status-redirect-other-host') {
        const there = other.requests({ nodeId, kind: 'status' }).filter((r) => r.receivedAt >= t0);
        assert.ok(there.length >= 1, 'the 307 was followed to the other host');
        assert.ok(there.every((r) => r.headers.authorization === undefined), 'the status token never goes to another host');
      }
      // The agent says why, once per new reason (a WARN with the exact error; repeats stay at DEBUG).
      const warned = agent.lines.slice(linesBefore).filter((l) => l.level === 40 && l.msg.startsWith('status report not delivered'));
      assert.ok(warned.length >= 1 && warned.length <= attempts, `${warned.length} WARN line(s) for ${attempts} attempts`);
      t.diagnostic(`${c.name}: ${String(warned[0]?.err)}`);
      assert.match(String(warned[0]?.err), c.message);
      // The local status (as a user runs it) still answers, with the state in force.
      const cli = await runCli(['status', '--json', '--config', configPath]);
      assert.equal(cli.code, 0, cli.stderr);
      assert.equal((JSON.parse(cli.stdout) as Report).observedGeneration, generation);
      assertAlive();

      await clearStatusFaults();
      const attemptsSoFar = (await metric('persys_status_reports_total', 'error')) - errorsBefore;
      const landed = (await st
        .waitForReport(nodeId, (r) => (r as Report).seq > lastSeq, 90_000)
        .catch((e: unknown) => fail('the first report after recovery', e))) as Report;
      // The next seq after all failed attempts, with the newest state: no backlog, no stale copy.
      const failedTotal = (await metric('persys_status_reports_total', 'error')) - errorsBefore;
      assert.ok(failedTotal >= attemptsSoFar);
      assert.equal(landed.seq, lastSeq + failedTotal + 1, `first accepted seq ${landed.seq} = ${lastSeq} + ${failedTotal} failed + 1`);
      assert.equal(landed.observedGeneration, generation, 'the report that lands carries the newest generation');
      assert.equal(landed.node.labels.hostile, `g${generation}`);
      assert.match(String((await localStatus()).sync.lastError ?? 'null'), /null/);
      await assertContainerKept();
      cases += 1;
    });
  }

  /**
   * A 2xx status line is the server's acceptance; the body of the answer is never read. So an empty
   * 200, HTML with 200 and a 200 whose body stalls count as delivered: no error, no retry, the
   * heartbeat cadence goes on, and the next report has the next seq.
   */
  const acceptedCases: { name: string; fault: () => StatusFault }[] = [
    { name: 'status-empty-200', fault: () => ({ status: 200, body: '' }) },
    { name: 'status-html-200', fault: () => ({ status: 200, body: '<!doctype html><html><body>Welcome to nginx!</body></html>\n' }) },
    {
      name: 'status-200-then-stall',
      fault: () =>
        raw((_req, res, answered) => {
          res.writeHead(200, { 'content-type': 'application/json', 'content-length': '100' });
          answered(200);
          res.write('{"ok":'); // and then nothing: the body timeout ends it
        }),
    },
  ];
  for (const c of acceptedCases) {
    it(`${c.name}: counted as delivered, the heartbeat cadence goes on`, async (t) => {
      assertAlive();
      t.after(clearStatusFaults);
      const lastSeq = Math.max(...(st.reports(nodeId) as Report[]).map((r) => r.seq));
      const errorsBefore = await metric('persys_status_reports_total', 'error');
      const okBefore = await metric('persys_status_reports_total', 'ok');
      const t0 = Date.now();
      st.setStatusFault(nodeId, c.fault());
      await sleep(WINDOW_MS);
      const seen = st.requests({ nodeId, kind: 'status' }).filter((r) => r.receivedAt >= t0);
      counts.push(`${c.name}:${seen.length}`);
      assert.equal((await metric('persys_status_reports_total', 'error')) - errorsBefore, 0, 'no send counted as failed');
      assert.ok(!agent.lines.some((l) => l.level >= 40 && Date.parse(String(l.time)) >= t0 && l.msg.startsWith('status report not delivered')), 'no WARN about delivery');
      assert.ok((await metric('persys_status_reports_total', 'ok')) - okBefore >= 1);
      // Heartbeat 2 s (the stalled body holds each send 2 s more): no retry loop.
      assert.ok(seen.length >= 1 && seen.length <= Math.ceil(WINDOW_MS / 2000) + 1, `${seen.length} sends in ${WINDOW_MS} ms`);
      const seqs = seen.map((r) => (r.json as Report | undefined)?.seq ?? Number.NaN);
      assert.deepEqual(seqs, seqs.map((_, i) => lastSeq + 1 + i), 'one new seq per send, no resend');
      await clearStatusFaults();
      const next = (await st.waitForReport(nodeId, (r) => (r as Report).seq > lastSeq, 30_000).catch((e: unknown) => fail('the next report', e))) as Report;
      assert.ok(next.seq > Math.max(lastSeq, ...seqs));
      assertAlive();
      await assertContainerKept();
      cases += 1;
    });
  }

  it('no stack trace, no crash, memory bounded', async () => {
    assertAlive();
    const withStack = agent.lines.filter((l) => /\n\s+at .+\(.*:\d+:\d+\)/.test(JSON.stringify(l).replace(/\\n/g, '\n')));
    assert.deepEqual(withStack, [], 'no log line carries a stack trace');
    assert.equal(agent.stderr.join('').trim(), '', 'nothing on stderr');
    assert.ok(agent.lines.every((l) => l.level < 60), 'no fatal log line');
    const growthMiB = (peakRssKiB - baselineRssKiB) / 1024;
    assert.ok(growthMiB <= RSS_GROWTH_LIMIT_MIB, `peak RSS ${peakRssKiB} KiB is within ${RSS_GROWTH_LIMIT_MIB} MiB of the baseline ${baselineRssKiB} KiB`);
    const code = await agent.stop('SIGTERM');
    assert.equal(code, 0, `clean exit after the faults\n${agent.dump().split('\n').slice(-20).join('\n')}`);
  });
});
