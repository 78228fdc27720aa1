import assert from 'node:assert/strict';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { AgentUnreachableError, apiSocketPath, callAgent } from '../../src/api/client.js';
import { SocketInUseError, startApiServer, type ApiServer } from '../../src/api/server.js';
import { formatStatus, workloadMessage } from '../../src/cli/status.js';
import { silentLogger } from '../../src/log.js';
import type { StatusReport, WorkloadStatus } from '../../src/spec/status-report.js';

const report = (workloads: WorkloadStatus[]): StatusReport => ({
  apiVersion: 'persys.dev/v1',
  kind: 'StatusReport',
  nodeId: 'edge-1',
  seq: 3,
  agentVersion: '0.1.0',
  observedGeneration: 7,
  sentAt: '2025-06-01T12:00:00.000Z',
  node: { hostname: 'h', labels: {}, runtimes: { docker: 'up' } },
  sync: { lastPullAt: null, lastSuccessAt: null, lastError: null },
  workloads,
});

describe('local control API', () => {
  let dir: string;
  let api: ApiServer;
  const retried: string[] = [];
  let syncs = 0;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-api-'));
    api = await startApiServer(
      apiSocketPath(dir),
      {
        status: () => report([]),
        retry: async (id) => {
          retried.push(id);
          return id === 'web' ? { id, phase: 'Running' } : undefined;
        },
        sync: async () => {
          syncs++;
          return { synced: true };
        },
      },
      silentLogger(),
    );
  });
  after(async () => {
    await api.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('listens on <stateDir>/agent.sock, owner-only', async () => {
    assert.equal(api.socketPath, join(dir, 'agent.sock'));
    const st = await stat(api.socketPath);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o600);
  });

  it('GET /v1/status, POST /v1/workloads/{id}/retry (200 and 404), POST /v1/sync', async () => {
    const s = await callAgent(api.socketPath, 'GET', '/v1/status');
    assert.equal(s.status, 200);
    assert.equal((s.body as StatusReport).nodeId, 'edge-1');
    const ok = await callAgent(api.socketPath, 'POST', '/v1/workloads/web/retry');
    assert.deepEqual([ok.status, ok.body], [200, { id: 'web', phase: 'Running' }]);
    const missing = await callAgent(api.socketPath, 'POST', '/v1/workloads/nope/retry');
    assert.equal(missing.status, 404);
    assert.deepEqual(retried, ['web', 'nope']);
    const sync = await callAgent(api.socketPath, 'POST', '/v1/sync');
    assert.deepEqual([sync.status, sync.body, syncs], [200, { synced: true }, 1]);
  });

  it('wrong methods and paths are refused', async () => {
    assert.equal((await callAgent(api.socketPath, 'POST', '/v1/status')).status, 405);
    assert.equal((await callAgent(api.socketPath, 'GET', '/v1/workloads/web/retry')).status, 405);
    assert.equal((await callAgent(api.socketPath, 'GET', '/v1/nothing')).status, 404);
    assert.equal((await callAgent(api.socketPath, 'POST', '/v1/workloads/%E0%A4%A/retry')).status, 400);
  });

  it('a second server on the same state dir is refused while the first answers', async () => {
    await assert.rejects(startApiServer(api.socketPath, { status: () => ({}), retry: async () => undefined, sync: async () => ({}) }, silentLogger()), SocketInUseError);
  });

  it('a stale socket (nobody listening) is replaced', async () => {
    const d2 = await mkdtemp(join(tmpdir(), 'persys-api2-'));
    const path = apiSocketPath(d2);
    const dead = createServer();
    await new Promise<void>((r) => dead.listen(path, r));
    // Simulate a crash: the socket file stays, nothing listens any more.
    const handle = (dead as unknown as { _handle: { close(): void } | null })._handle;
    handle?.close();
    const again = await startApiServer(path, { status: () => ({ ok: true }), retry: async () => undefined, sync: async () => ({}) }, silentLogger());
    assert.deepEqual((await callAgent(path, 'GET', '/v1/status')).body, { ok: true });
    await again.close();
    await rm(d2, { recursive: true, force: true });
  });

  it('the client explains an agent that is not running', async () => {
    const err = await callAgent(join(dir, 'none', 'agent.sock'), 'GET', '/v1/status').catch((e: unknown) => e);
    assert.ok(err instanceof AgentUnreachableError);
    assert.match(err.message, /the agent is not running: no control socket at .*none\/agent\.sock/);
  });
});

describe('status table', () => {
  const base: WorkloadStatus = { id: 'web', type: 'container', desiredState: 'running', actualState: 'running', phase: 'Running', message: '' };

  it('one line per workload: id, type, phase, actual, attempts, message', () => {
    const out = formatStatus(
      report([
        base,
        {
          ...base,
          id: 'job',
          phase: 'Failed',
          actualState: 'missing',
          error: { code: 'MOUNT_FAILED', message: 'invalid mount config for type "bind": bind source path does not exist: /srv/x', userMessage: '', transient: false },
          retry: { attempts: 1, nextRetryAt: null, gaveUp: true },
        },
      ]),
    );
    const lines = out.trimEnd().split('\n');
    assert.match(lines[0]!, /^node edge-1 .*generation 7 +2 workload\(s\)$/);
    assert.ok(lines.includes('runtime docker: up'));
    assert.match(out, /^ID +TYPE +PHASE +ACTUAL +ATTEMPTS +MESSAGE$/m);
    assert.match(out, /^web +container +Running +running +0 *$/m);
    assert.match(out, /^job +container +Failed +missing +1 +MOUNT_FAILED: invalid mount config .*\/srv\/x; gave up \(persys-agent retry ID/m);
  });

  it('a backing-off workload names its next attempt; an empty report says so', () => {
    assert.equal(
      workloadMessage({ ...base, message: 'x', error: { code: 'PORT_CONFLICT', message: 'port is already allocated', userMessage: '', transient: true }, retry: { attempts: 2, nextRetryAt: '2025-06-01T12:00:05.000Z', gaveUp: false } }),
      'PORT_CONFLICT: port is already allocated; next attempt 2025-06-01T12:00:05.000Z',
    );
    assert.match(formatStatus(report([])), /no workloads/);
  });
});
