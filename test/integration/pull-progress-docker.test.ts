/**
 * The stuck watchdog watches progress, not the clock (real dockerd, images from the loopback OCI
 * registry, reconcile.stuckSeconds = 2): a pull that keeps receiving bytes for several times
 * stuckSeconds completes and the workload runs; a pull whose registry stalls (socket open, no more
 * bytes) is abandoned after stuckSeconds without progress and reported as STUCK in the record and
 * in the status report.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { buildStatusReport } from '../../src/status/build-report.js';
import { cleanupDockerByLabel, requireEngine } from '../helpers/engines.js';
import { container, startHarness, type Harness } from '../helpers/failure-harness.js';
import { startOciRegistry, type OciRegistry } from '../helpers/oci-registry.js';

const skip = await requireEngine('docker');
const MiB = 1 << 20;
const STUCK_SECONDS = 2;
const config = {
  reconcile: { intervalSeconds: 30, concurrency: 4, stuckSeconds: STUCK_SECONDS },
  retry: { maxAttempts: 3, initialDelaySeconds: 60, maxDelaySeconds: 60, multiplier: 2 },
};

describe('pull progress and the stuck watchdog (real dockerd, loopback registry)', { skip, timeout: 180_000 }, () => {
  let reg: OciRegistry;
  const harnesses: Harness[] = [];
  before(async () => {
    reg = await startOciRegistry({
      images: [
        { name: 'persys-test/slow:1', from: 'persys-test/busybox:1', fillerBytes: 4 * MiB },
        { name: 'persys-test/stall:1', from: 'persys-test/busybox:1', fillerBytes: 4 * MiB },
      ],
    });
  });
  after(async () => {
    for (const h of harnesses) {
      await h.close();
      await cleanupDockerByLabel(h.nodeId).catch(() => undefined);
    }
    await reg.removePulledImages();
    await reg.close();
  });

  it(`a slow pull lasting far longer than stuckSeconds (${STUCK_SECONDS} s) completes and runs`, async () => {
    reg.knobs = { bytesPerSecond: 640 * 1024 };
    const h = await startHarness({ prefix: 'test-pullslow', config });
    harnesses.push(h);
    const started = Date.now();
    await h.apply([container('slow', { image: reg.ref('persys-test/slow:1'), command: ['sleep', '300'], network: { mode: 'none' } })]);
    const took = Date.now() - started;
    const r = h.record('slow')!;
    assert.equal(r.phase, 'Running', JSON.stringify(r));
    assert.equal(r.error, null);
    assert.equal(r.retry.attempts, 0);
    assert.ok(took > 2 * STUCK_SECONDS * 1000, `the pull took only ${took} ms: not slow enough to show anything`);
    const list = await h.containers();
    assert.equal(list.length, 1);
    assert.equal(list[0]!.State, 'running');
    console.log(`slow pull: ${took} ms with stuckSeconds=${STUCK_SECONDS}`);
  });

  it('a stalled pull is abandoned after stuckSeconds without progress and reported as STUCK', async () => {
    reg.knobs = { stallAfterBytes: 512 * 1024 };
    const h = await startHarness({ prefix: 'test-pullstall', config });
    harnesses.push(h);
    const started = Date.now();
    await h.apply([container('stall', { image: reg.ref('persys-test/stall:1'), network: { mode: 'none' } })]);
    const took = Date.now() - started;
    assert.ok(took < 20_000, `abandoned after ${took} ms`);
    const r = h.record('stall')!;
    assert.equal(r.error?.code, 'STUCK', JSON.stringify(r));
    assert.equal(r.phase, 'BackingOff');
    assert.match(r.error?.message ?? '', /^stuck in Pulling for 2 s during create; nothing was created yet/);
    assert.equal((await h.containers()).length, 0);
    const report = buildStatusReport({ nodeId: h.nodeId, seq: 1, agentVersion: 'test', hostname: 'test', data: h.store.data, runtimes: { docker: 'up' }, now: new Date() });
    const w = report.workloads.find((x) => x.id === 'stall');
    assert.equal(w?.error?.code, 'STUCK');
    assert.equal(w?.error?.message, r.error?.message);
    assert.equal(w?.phase, 'BackingOff');
    console.log(`stalled pull abandoned after ${took} ms`);
  });
});
