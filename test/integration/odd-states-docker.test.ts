/**
 * Engine states that are neither running nor stopped, on the real dockerd: a container paused outside
 * the agent while desired running is waited for (bounded, 60 s by the agent's clock), then repaired
 * by a replacement, with a STUCK entry in its failures. The clock is the harness's, so the test does
 * not sleep through the wait.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';

import { cleanupDockerByLabel, requireEngine } from '../helpers/engines.js';
import { container, startHarness, type Harness } from '../helpers/failure-harness.js';

const skip = await requireEngine('docker');

describe('odd engine states (real dockerd)', { skip, timeout: 120_000 }, () => {
  const harnesses: Harness[] = [];
  after(async () => {
    for (const h of harnesses) {
      await h.close();
      await cleanupDockerByLabel(h.nodeId).catch(() => undefined);
    }
  });

  it('paused outside the agent: a bounded wait, then a repair that replaces it', async () => {
    let now = Date.now();
    const h = await startHarness({ prefix: 'test-odd', now: () => new Date(now) });
    harnesses.push(h);
    const ofWorkload = async () => (await h.containers()).filter((c) => c.Labels['dev.persys.workload-id'] === 'p');
    await h.apply([container('p', { command: ['sleep', '300'], network: { mode: 'none' } })]);
    const [first] = await ofWorkload();
    assert.equal(first?.State, 'running');
    await h.docker.getContainer(first.Id).pause();

    // Seen paused: waiting, the mark says since when; the container is left alone.
    await h.cycle();
    const waiting = h.record('p')!;
    assert.equal(waiting.engineState?.state, 'paused');
    assert.equal(waiting.engineState?.runtimeId, first.Id);
    assert.match(waiting.message, /^the engine reports paused since .*; waiting up to 60 s for it to settle$/);
    const plan1 = h.loop.lastCycle?.plan.steps.map((s) => s.kind);
    assert.deepEqual(plan1, ['wait']);
    now += 30_000;
    await h.cycle();
    assert.deepEqual(h.loop.lastCycle?.plan.steps.map((s) => s.kind), ['wait'], 'still within the bound');
    assert.equal((await ofWorkload())[0]?.Id, first.Id);

    // Past the bound: repaired. The paused container is replaced by a running one.
    now += 31_000;
    await h.cycle();
    assert.deepEqual(h.loop.lastCycle?.plan.steps.map((s) => s.kind), ['repair']);
    const r = h.record('p')!;
    assert.equal(r.phase, 'Running', JSON.stringify(r));
    assert.equal(r.engineState, undefined);
    const stuck = r.failures.at(-1);
    assert.equal(stuck?.code, 'STUCK');
    assert.match(stuck?.message ?? '', /^the engine reported paused for more than 60 s \(since .*\)$/);
    const list = await ofWorkload();
    assert.equal(list.length, 1, 'one container: the paused one went');
    assert.notEqual(list[0]?.Id, first.Id);
    assert.equal(list[0]?.State, 'running');
    assert.equal(r.runtimeId, list[0]?.Id);
  });
});
