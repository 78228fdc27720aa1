/** `POST /v1/gc[?dryRun=...]` on the local API and the CLI's human output of a pass. */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { apiSocketPath, callAgent } from '../../src/api/client.js';
import { startApiServer, type ApiServer } from '../../src/api/server.js';
import { formatGcPass } from '../../src/cli/gc.js';
import type { GcPassResult } from '../../src/gc/collector.js';
import { silentLogger } from '../../src/log.js';

describe('local API: gc', () => {
  let dir: string;
  let api: ApiServer;
  let bare: ApiServer;
  const asked: boolean[] = [];
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-gc-api-'));
    const base = { status: () => ({}), retry: async () => undefined, sync: async () => ({}) };
    api = await startApiServer(apiSocketPath(dir), { ...base, gc: async (o) => (asked.push(o.dryRun), { dryRun: o.dryRun }) }, silentLogger());
    bare = await startApiServer(join(dir, 'bare.sock'), base, silentLogger());
  });
  after(async () => {
    await api.close();
    await bare.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('runs a pass (dryRun false by default), a dry run with dryRun=true; refuses other methods and values', async () => {
    assert.deepEqual((await callAgent(api.socketPath, 'POST', '/v1/gc')).body, { dryRun: false });
    assert.deepEqual((await callAgent(api.socketPath, 'POST', '/v1/gc?dryRun=true')).body, { dryRun: true });
    assert.equal((await callAgent(api.socketPath, 'POST', '/v1/gc?dryRun=yes')).status, 400);
    assert.equal((await callAgent(api.socketPath, 'GET', '/v1/gc')).status, 405);
    assert.deepEqual(asked, [false, true]);
    assert.equal((await callAgent(bare.socketPath, 'POST', '/v1/gc')).status, 501);
  });

  it('the human form lists each removal with its reason, then the totals and notes', () => {
    const r: GcPassResult = {
      at: '2026-01-01T00:00:00.000Z',
      dryRun: true,
      trigger: 'cli',
      durationMs: 12.3,
      engineCalls: 3,
      removed: [
        { kind: 'orphan', id: '0123456789abcdef', name: 'persys-ghost', workloadId: 'ghost', reason: 'no record claims it' },
        { kind: 'image', id: 'app:1', name: 'sha256:x', reason: 'unreferenced', bytes: 3 * 1024 * 1024 },
      ],
      failed: [],
      freedBytes: 3 * 1024 * 1024,
      deferred: 0,
      notes: ['images: 90% used'],
    };
    assert.equal(
      formatGcPass(r),
      'would remove orphan persys-ghost (0123456789ab): no record claims it\nwould remove image app:1: unreferenced\ndry run: 2 to remove, 3.0 MiB to free (3 engine calls, 12 ms)\nnote: images: 90% used\n',
    );
  });
});
