/**
 * Stuck workloads on the real dockerd (reconcile.stuckSeconds = 2 here): a step that makes no progress
 * is aborted; a container of its own is recovered by a stop and a start; when that fails it is removed
 * and the workload is Failed with STUCK; with nothing created yet the attempt backs off as STUCK.
 * The hang is real: the test-only pause between create and start (PERSYS_TEST_PAUSE_AFTER_CREATE_MS),
 * and a pull from a loopback registry that accepts TCP and never answers.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { after, describe, it } from 'node:test';

import { cleanupDockerByLabel, requireEngine } from '../helpers/engines.js';
import { container, startFakeRegistry, startHarness, type Harness } from '../helpers/failure-harness.js';

const skip = await requireEngine('docker');
const STUCK = { reconcile: { intervalSeconds: 30, concurrency: 4, stuckSeconds: 2 } };

describe('stuck workloads (real dockerd)', { skip, timeout: 120_000 }, () => {
  const harnesses: Harness[] = [];
  const closers: (() => Promise<unknown>)[] = [];
  after(async () => {
    for (const c of closers) await c().catch(() => undefined);
    for (const h of harnesses) {
      await h.close();
      await cleanupDockerByLabel(h.nodeId).catch(() => undefined);
    }
  });
  const ofWorkload = async (h: Harness, id: string) => (await h.containers()).filter((c) => c.Labels['dev.persys.workload-id'] === id);

  it('stuck between create and start: recovered by stop + start, Running, one container', async () => {
    const h = await startHarness({ prefix: 'test-stuck', config: STUCK, pauseAfterCreateMs: 30_000 });
    harnesses.push(h);
    const started = Date.now();
    await h.apply([container('slow', { command: ['sleep', '300'], network: { mode: 'none' } })]);
    const took = Date.now() - started;
    assert.ok(took >= 2000 && took < 15_000, `the watchdog fired after ${took} ms`);
    const r = h.record('slow')!;
    assert.equal(r.phase, 'Running', JSON.stringify(r));
    assert.match(r.message, /^recovered: stuck in Creating for 2 s during create; stopped and started again$/);
    const list = await ofWorkload(h, 'slow');
    assert.equal(list.length, 1);
    assert.equal(list[0]!.State, 'running');
    assert.equal(r.runtimeId, list[0]!.Id);
  });

  it('stuck, and the restart fails (port taken): removed and Failed with STUCK and the reason', async () => {
    const holder: Server = createServer();
    await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r));
    closers.push(() => new Promise((r) => holder.close(r)));
    const port = (holder.address() as { port: number }).port;
    const h = await startHarness({ prefix: 'test-stuck', config: STUCK, pauseAfterCreateMs: 30_000 });
    harnesses.push(h);
    await h.apply([container('blocked', { command: ['sleep', '300'], ports: [{ hostIp: '127.0.0.1', hostPort: port, containerPort: 80 }] })]);
    const r = h.record('blocked')!;
    assert.equal(r.phase, 'Failed');
    assert.equal(r.error?.code, 'STUCK');
    assert.equal(r.error?.transient, false);
    assert.equal(r.retry.gaveUp, true);
    assert.match(r.error?.message ?? '', new RegExp(`^stuck in Creating for 2 s during create; recovery \\(stop, start\\) failed: .*127\\.0\\.0\\.1:${port}: bind: address already in use; removed it$`));
    assert.equal((await ofWorkload(h, 'blocked')).length, 0, 'removed');
    // Terminal: the next cycles leave it alone until asked.
    await h.cycle();
    assert.equal((await ofWorkload(h, 'blocked')).length, 0);
    assert.equal(h.record('blocked')!.retry.attempts, 1);
  });

  it('stuck in Pulling (registry never answers): nothing to restart, so a transient STUCK that backs off', async () => {
    const reg = await startFakeRegistry('blackhole');
    closers.push(() => reg.close());
    const h = await startHarness({ prefix: 'test-stuck', config: { ...STUCK, retry: { maxAttempts: 3, initialDelaySeconds: 60, maxDelaySeconds: 60, multiplier: 2 } } });
    harnesses.push(h);
    await h.apply([container('pull', { image: `${reg.host}/persys/slow:1` })]);
    const r = h.record('pull')!;
    assert.equal(r.error?.code, 'STUCK');
    assert.equal(r.phase, 'BackingOff');
    assert.match(r.error?.message ?? '', /^stuck in Pulling for 2 s during create; nothing was created yet/);
    assert.equal(r.retry.attempts, 1);
    assert.equal((await ofWorkload(h, 'pull')).length, 0);
  });
});
