/**
 * Issue 9 end to end: the built CLI (keygen, sign, verify, plan, run) against the HTTPS fleet
 * server and the real dockerd. A signed document is applied; unsigned, tampered, older,
 * same-generation-different and expired ones are refused with their code in the next report while
 * the running container stays; a key rotation is accepted; a document that expires in force is
 * reported as frozen. The token file is rotated on disk without a restart, a redirect to another
 * host (127.0.0.2) never gets the token, status goes to its own origin with its own CA and token,
 * and a bind mount through a symlink to /etc is POLICY_DENIED (in `plan` and in the report).
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import Docker from 'dockerode';

import { apiSocketPath, callAgent } from '../../src/api/client.js';
import { AgentProcess, runCli, waitFor } from '../helpers/agent-process.js';
import { cleanupDockerByLabel, requireEngine, testNodeId } from '../helpers/engines.js';
import { startFleetServer, type FleetServer, type JsonObject } from '../helpers/fleet-server.js';
import { freePort } from '../helpers/prometheus.js';
import { makeThrowawayCa, opensslSkipReason } from '../helpers/tls.js';

const skip = (await requireEngine('docker')) || (await opensslSkipReason());
const IMAGE = 'persys-test/busybox:1';

interface WStatus {
  id: string;
  phase: string;
  runtimeId?: string;
  error?: { code: string; message: string } | null;
}
interface Report extends JsonObject {
  seq: number;
  observedGeneration: number | null;
  sync: { lastError: { code: string; message: string } | null; desiredExpired?: boolean; desiredExpiresAt?: string | null; signedBy?: string[] };
  workloads: WStatus[];
}

const cli = (args: string[]) => runCli(args);

describe('trust end to end: signed desired state, guards, rotation, credentials, policy', { skip, timeout: 600_000 }, () => {
  const nodeId = testNodeId('test-trust');
  const docker = new Docker({ socketPath: '/var/run/docker.sock' });
  let dir: string;
  let server: FleetServer;
  let elsewhere: FleetServer;
  /** Status goes to its own origin with its own CA and token (status.caFile, status.tokenFile). */
  let statusServer: FleetServer;
  let agent: AgentProcess | undefined;
  let configPath: string;
  let tokenFile: string;
  let metricsPort: number;
  let keyId1 = '';
  let keyId2 = '';
  const config: Record<string, unknown> = {};

  const container = (id: string, spec: Record<string, unknown> = {}) => ({
    id,
    type: 'container',
    spec: { image: IMAGE, command: ['sleep', '600'], stopTimeoutSeconds: 1, network: { mode: 'none' }, ...spec },
  });
  const document = (generation: number, workloads: unknown[], extra: Record<string, unknown> = {}) => ({ apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId, generation, workloads, ...extra });
  /** Writes the document, signs it with the CLI and returns the envelope text. */
  const sign = async (name: string, doc: unknown, keys: string[], expires?: string): Promise<string> => {
    const file = join(dir, `${name}.json`);
    const out = join(dir, `${name}.dsse.json`);
    await writeFile(file, JSON.stringify(doc));
    const r = await cli(['sign', '--key', keys.join(','), ...(expires ? ['--expires', expires] : []), '--out', out, file]);
    assert.equal(r.code, 0, r.stderr);
    return readFile(out, 'utf8');
  };
  const key = (n: number, part: 'key' | 'pub') => join(dir, `keys${n}`, `signing.${part}`);

  const mark = () => Math.max(0, ...statusServer.reports(nodeId).map((r) => (r as Report).seq));
  const waitReport = (what: string, pred: (r: Report) => boolean, timeoutMs = 60_000, since = mark()) =>
    statusServer.waitForReport(nodeId, (r) => (r as Report).seq > since && pred(r as Report), timeoutMs).then(
      (r) => r as Report,
      (err: unknown) => {
        throw new Error(`${what}: ${String(err)}\n--- agent log ---\n${agent?.dump() ?? ''}`);
      },
    );
  const ours = async () => {
    const list = await docker.listContainers({ all: true, filters: { label: [`dev.persys.node-id=${nodeId}`] } });
    return new Map(list.map((c) => [c.Labels['dev.persys.workload-id'] ?? '', c]));
  };
  const metric = async (name: string): Promise<string> => {
    const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    return text.split('\n').filter((l) => l.startsWith(name)).join('\n');
  };
  /** Ask the running agent to pull now: refused documents count as failed pulls, and the poller backs off after them. */
  const syncNow = async () => {
    await callAgent(apiSocketPath(join(dir, 'state')), 'POST', '/v1/sync', 30_000).catch(() => undefined);
  };
  const publish = async (body: unknown) => {
    server.setDocument(nodeId, body);
    await syncNow();
  };
  const writeConfig = async () => writeFile(configPath, JSON.stringify(config));
  const startAgent = () => {
    agent = AgentProcess.start(['run', '--config', configPath]);
    return agent;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-trust-e2e-'));
    const pki = await makeThrowawayCa(dir);
    const tls = { certFile: pki.serverCert, keyFile: pki.serverKey };
    server = await startFleetServer({ tls, requireToken: 'token-one' });
    elsewhere = await startFleetServer({ tls, host: '127.0.0.2' });
    await mkdir(join(dir, 'status-pki'));
    const statusPki = await makeThrowawayCa(join(dir, 'status-pki'), 'status');
    statusServer = await startFleetServer({ tls: { certFile: statusPki.serverCert, keyFile: statusPki.serverKey }, host: '127.0.0.2', requireToken: 'status-secret' });
    await writeFile(join(dir, 'status-token'), 'status-secret\n', { mode: 0o600 });
    tokenFile = join(dir, 'token');
    await writeFile(tokenFile, 'token-one\n', { mode: 0o600 });
    metricsPort = await freePort();
    await mkdir(join(dir, 'allowed'));
    await symlink('/etc', join(dir, 'allowed', 'etc-link'));
    configPath = join(dir, 'config.json');
    Object.assign(config, {
      nodeId,
      stateDir: join(dir, 'state'),
      logLevel: 'info',
      source: { url: server.sourceUrl, caFile: pki.caCert, tokenFile, pollIntervalSeconds: 1 },
      status: { url: statusServer.statusUrl, caFile: statusPki.caCert, tokenFile: join(dir, 'status-token'), heartbeatSeconds: 1, debounceMs: 100 },
      trust: { publicKeys: [key(1, 'pub')] },
      reconcile: { intervalSeconds: 2 },
      retry: { initialDelaySeconds: 1, maxDelaySeconds: 2 },
      metrics: { listen: `127.0.0.1:${metricsPort}` },
      docker: { namePrefix: `t-${nodeId}-` },
      policy: { allowHostPaths: true, allowedHostPathPrefixes: [join(dir, 'allowed')] },
    });
  });

  after(async () => {
    await agent?.stop('SIGTERM').catch(() => undefined);
    await cleanupDockerByLabel(nodeId).catch(() => undefined);
    await server?.close();
    await elsewhere?.close();
    await statusServer?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('keygen writes a 0600 private key and prints the id; the agent refuses a threshold above its keys (exit 2)', async () => {
    for (const n of [1, 2]) {
      const r = await cli(['keygen', '--out', join(dir, `keys${n}`)]);
      assert.equal(r.code, 0, r.stderr);
      const id = /key id:\s+([0-9a-f]{64})/.exec(r.stdout)?.[1];
      assert.ok(id, r.stdout);
      if (n === 1) keyId1 = id;
      else keyId2 = id;
      assert.match(r.stdout, /-----BEGIN PUBLIC KEY-----/);
      assert.equal((await stat(key(n, 'key'))).mode & 0o777, 0o600);
    }
    assert.equal((await cli(['keygen', '--out', join(dir, 'keys1')])).code, 1, 'never overwrites a key');
    await writeFile(configPath, JSON.stringify({ ...config, trust: { publicKeys: [key(1, 'pub')], threshold: 2 } }));
    const bad = await cli(['run', '--config', configPath]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /trust\.threshold: 2 is more than the 1 distinct key/);
  });

  it('sign refuses an invalid document; verify checks an envelope as the agent would', async () => {
    const badFile = join(dir, 'bad.json');
    await writeFile(badFile, JSON.stringify(document(1, [{ id: 'x', type: 'container', spec: {} }])));
    const bad = await cli(['sign', '--key', key(1, 'key'), '--out', join(dir, 'bad.dsse.json'), badFile]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /not signed: invalid desired state/);
    await sign('v1', document(1, [container('a')]), [key(1, 'key')], '1h');
    const ok = await cli(['verify', '--key', key(1, 'pub'), join(dir, 'v1.dsse.json')]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, new RegExp(`OK: node ${nodeId}, generation 1, 1 workload, signed by ${keyId1}, expires `));
    const wrong = await cli(['verify', '--key', key(2, 'pub'), join(dir, 'v1.dsse.json')]);
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /refused: SIGNATURE_INVALID: no signature verifies under a trusted key/);
  });

  it('the agent applies the signed document; every forged, old or expired one is refused and nothing is removed', async () => {
    await writeConfig();
    server.setDocument(nodeId, await sign('v1', document(1, [container('a')]), [key(1, 'key')], '1h'));
    startAgent();
    const first = await waitReport('signed generation 1 Running', (r) => r.observedGeneration === 1 && r.workloads.find((w) => w.id === 'a')?.phase === 'Running');
    assert.deepEqual(first.sync.signedBy, [keyId1]);
    assert.equal(first.sync.desiredExpired, false);
    const runningId = (await ours()).get('a')?.Id;
    assert.ok(runningId);

    const expiredEnvelope = await sign('expired', document(2, [container('a'), container('b')]), [key(1, 'key')], '1s');
    const signed2 = JSON.parse(await sign('v2', document(2, [container('a'), container('b')]), [key(1, 'key')])) as { payload: string };
    const refusals: [string, unknown, string, RegExp][] = [
      ['unsigned', document(2, [container('b')]), 'SIGNATURE_INVALID', /not a DSSE envelope/],
      ['tampered', { ...signed2, payload: Buffer.from(JSON.stringify(document(2, []))).toString('base64') }, 'SIGNATURE_INVALID', /no signature verifies under a trusted key/],
      ['older', await sign('v0', document(0, []), [key(1, 'key')]), 'DESIRED_STATE_STALE', /generation 0 is lower than the stored generation 1/],
      ['same generation, different', await sign('v1b', document(1, []), [key(1, 'key')]), 'DESIRED_STATE_STALE', /mix-and-match refused/],
      ['expired', expiredEnvelope, 'DESIRED_STATE_EXPIRED', /expired at/],
    ];
    await new Promise((r) => setTimeout(r, 1500)); // let the 1 s expiry pass
    for (const [what, body, code, message] of refusals) {
      const since = mark();
      await publish(body);
      const r = await waitReport(`${what} refused`, (r) => r.sync.lastError?.code === code && message.test(r.sync.lastError.message), 60_000, since);
      assert.equal(r.observedGeneration, 1, what);
      assert.equal(r.workloads.find((w) => w.id === 'a')?.phase, 'Running', what);
      assert.equal(r.workloads.length, 1, `${what}: nothing added or removed`);
      const now = await ours();
      assert.equal(now.get('a')?.Id, runningId, `${what}: the running container is untouched`);
      assert.equal(now.get('a')?.State, 'running');
      assert.equal(now.size, 1);
    }
    assert.match(await metric('persys_errors_total{code="SIGNATURE_INVALID"}'), / [1-9]\d*$/);
    assert.match(await metric('persys_errors_total{code="DESIRED_STATE_STALE"}'), / [1-9]\d*$/);
    assert.match(await metric('persys_errors_total{code="DESIRED_STATE_EXPIRED"}'), / [1-9]\d*$/);
    assert.match(await metric('persys_desired_state_pulls_total{result="error"}'), / [1-9]\d*$/);
    assert.match(await metric('persys_desired_state_expired'), /^persys_desired_state_expired 0$/m);
    assert.match(await metric('persys_desired_state_expiry_timestamp_seconds'), /^persys_desired_state_expiry_timestamp_seconds \d{10}(\.\d+)?$/m);
  });

  it('a key rotation: old+new signatures accepted, then only the new key', async () => {
    await publish(await sign('rot2', document(2, [container('a'), container('b')]), [key(1, 'key'), key(2, 'key')]));
    const both = await waitReport('generation 2 signed by both keys', (r) => r.observedGeneration === 2 && r.workloads.find((w) => w.id === 'b')?.phase === 'Running');
    assert.deepEqual(both.sync.signedBy, [keyId1]); // the agent trusts only key 1 so far
    assert.equal(both.sync.lastError, null);
    // The operator drops the old key from the hosts' config.
    await agent?.stop('SIGTERM');
    config.trust = { publicKeys: [key(2, 'pub')] };
    await writeConfig();
    server.setDocument(nodeId, await sign('rot3', document(3, [container('a'), container('b')]), [key(2, 'key')]));
    startAgent();
    const rotated = await waitReport('generation 3 signed by the new key', (r) => r.observedGeneration === 3);
    assert.deepEqual(rotated.sync.signedBy, [keyId2]);
    await publish(await sign('old4', document(4, []), [key(1, 'key')]));
    const r = await waitReport('old key refused', (r) => r.sync.lastError?.code === 'SIGNATURE_INVALID');
    assert.equal(r.observedGeneration, 3);
    assert.equal((await ours()).size, 2);
  });

  it('a document that expires in force keeps its workloads running and is reported as frozen', async () => {
    await publish(await sign('v5', document(5, [container('a'), container('b')]), [key(2, 'key')], '4s'));
    const applied = await waitReport('generation 5 applied', (r) => r.observedGeneration === 5);
    assert.equal(applied.sync.desiredExpired, false);
    assert.ok(applied.sync.desiredExpiresAt);
    const frozen = await waitReport('frozen host reported', (r) => r.sync.desiredExpired === true, 30_000);
    assert.equal(frozen.observedGeneration, 5);
    assert.ok(frozen.workloads.every((w) => w.phase === 'Running'));
    assert.match(await metric('persys_desired_state_expired'), /^persys_desired_state_expired 1$/m);
    const t = Number(/persys_desired_state_expiry_timestamp_seconds (\S+)/.exec(await metric('persys_desired_state_expiry_timestamp_seconds'))?.[1]);
    assert.equal(t, Date.parse(frozen.sync.desiredExpiresAt ?? '') / 1000);
    assert.equal((await ours()).size, 2);
    const shown = await cli(['status', '--config', configPath]);
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, /desired state: EXPIRED at .*: its workloads keep running/);
    assert.match(shown.stdout, new RegExp(`signed by: ${keyId2}`));
    // A fresh document thaws it.
    await publish(await sign('v6', document(6, [container('a'), container('b')]), [key(2, 'key')], '1h'));
    await waitReport('fresh document', (r) => r.observedGeneration === 6 && r.sync.desiredExpired === false);
  });

  it('a token rotated on disk is used on the next pull without a restart', async () => {
    // Rotation the way a credential manager does it: the server accepts both while the file is
    // replaced (rename), then only the new token.
    server.setRequiredToken(null);
    await writeFile(join(dir, 'token.new'), 'token-two\n', { mode: 0o600 });
    await rename(join(dir, 'token.new'), tokenFile);
    const from = Date.now();
    const got = await server.waitForRequest((q) => q.kind === 'document' && q.receivedAt >= from && q.headers.authorization === 'Bearer token-two', 15_000);
    assert.ok(got.status === 200 || got.status === 304, String(got.status));
    server.setRequiredToken('token-two');
    // Status has its own origin, CA and token: it never sees the source token.
    await waitReport('a report after the rotation', () => true, 15_000);
    const st = statusServer.requests({ nodeId, kind: 'status' });
    assert.ok(st.length > 0 && st.every((q) => q.headers.authorization === 'Bearer status-secret'));
    assert.equal(server.requests({ kind: 'status' }).length, 0);
    // The server moves to a third token before the file does: 401s, then the next pull after the
    // file changes succeeds, still without a restart.
    const t401 = Date.now();
    server.setRequiredToken('token-333');
    await server.waitForRequest((q) => q.kind === 'document' && q.status === 401 && q.receivedAt >= t401, 15_000);
    await writeFile(tokenFile, 'token-333\n');
    const ok = Date.now();
    await syncNow();
    await server.waitForRequest((q) => q.kind === 'document' && q.receivedAt >= ok && (q.status === 200 || q.status === 304), 15_000);
  });

  it('a redirect to another host is followed without the token', async () => {
    elsewhere.setDocument(nodeId, await sign('v7', document(7, [container('a'), container('b')]), [key(2, 'key')]));
    elsewhere.clearRequests();
    server.setFault(nodeId, { status: 302, location: elsewhere.documentUrl(nodeId) });
    await syncNow();
    const r = await waitReport('generation 7 via the redirect', (r) => r.observedGeneration === 7, 30_000);
    assert.equal(r.sync.lastError, null);
    const there = elsewhere.requests({ nodeId, kind: 'document' });
    assert.ok(there.length > 0);
    for (const q of there) assert.equal(q.headers.authorization, undefined, 'the token never goes to 127.0.0.2');
    const here = server.requests({ nodeId, kind: 'document' }).filter((q) => q.status === 302);
    assert.ok(here.length > 0 && here.every((q) => q.headers.authorization === 'Bearer token-333'));
    server.setFault(nodeId, null);
    await publish(await sign('v7b', document(7, [container('a'), container('b')]), [key(2, 'key')]));
  });

  it('a bind mount through a symlink under an allowed prefix to /etc is POLICY_DENIED, in plan and in the report', async () => {
    const link = join(dir, 'allowed', 'etc-link');
    const doc = document(8, [container('a'), container('b'), container('m', { volumes: [{ type: 'bind', source: link, target: '/host', readOnly: true }] })]);
    const envelope = await sign('v8', doc, [key(2, 'key')]);
    const plan = await cli(['plan', '--config', configPath, '--desired', join(dir, 'v8.dsse.json')]);
    assert.equal(plan.code, 0, plan.stderr);
    assert.match(plan.stdout, new RegExp(`deny +m +POLICY_DENIED: spec\\.volumes\\[0\\]\\.source: host path ${link.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(resolves to /etc\\) is denied`));
    const unsigned = await cli(['plan', '--config', configPath, '--desired', join(dir, 'v8.json')]);
    assert.equal(unsigned.code, 1);
    assert.match(unsigned.stderr, /the agent would refuse it: SIGNATURE_INVALID/);
    await publish(envelope);
    const r = await waitReport('m denied', (r) => r.observedGeneration === 8 && r.workloads.find((w) => w.id === 'm')?.error?.code === 'POLICY_DENIED');
    const m = r.workloads.find((w) => w.id === 'm');
    assert.match(m?.error?.message ?? '', /resolves to \/etc\) is denied: \/etc is always denied unless policy\.allowedHostPathPrefixes names it exactly/);
    assert.equal((await ours()).has('m'), false, 'never created');
    await waitFor('a and b still running', async () => {
      const now = await ours();
      return now.get('a')?.State === 'running' && now.get('b')?.State === 'running';
    }, 10_000);
  });
});
