/**
 * DockerRuntime.usage() against the real dockerd: one-shot stats and restart counts of the
 * containers labelled for this node, nothing of anybody else's.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import * as v from 'valibot';

import { silentLogger } from '../../src/log.js';
import { DockerRuntime } from '../../src/runtimes/docker/docker-runtime.js';
import { containerWorkload } from '../../src/spec/desired-state.js';
import { waitFor } from '../helpers/agent-process.js';
import { cleanupDockerByLabel, dockerSocketPath, requireEngine, testNodeId } from '../helpers/engines.js';

const skip = await requireEngine('docker');
const socket = dockerSocketPath();
const socketPath = socket instanceof Error ? '/var/run/docker.sock' : socket;

describe('DockerRuntime.usage() on the real dockerd', { skip, timeout: 180_000 }, () => {
  const nodeId = testNodeId('test-usage');
  const rt = new DockerRuntime({ socketPath, nodeId, namePrefix: `t-${nodeId}-`, logger: silentLogger() });

  const run = async (id: string, spec: Record<string, unknown>) => {
    const w = v.parse(containerWorkload, { id, type: 'container', spec: { image: 'persys-test/busybox:1', stopTimeoutSeconds: 1, network: { mode: 'none' }, ...spec } });
    const o = await rt.create(w, { nodeId, specHash: `sha256:${'0'.repeat(64)}`, signal: AbortSignal.timeout(60_000) });
    await rt.start(o, AbortSignal.timeout(60_000));
    return o;
  };

  before(async () => {
    // Busy for a moment (CPU, a few file writes), then asleep.
    await run('busy', { command: ['sh', '-c', 'i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo x > /tmp/x; sleep 3600'] });
    // Exits with 1 at once; the engine restarts it twice (on-failure:2), then leaves it exited.
    await run('crashy', { command: ['sh', '-c', 'exit 1'], restartPolicy: 'on-failure', restartMaxRetries: 2 });
  });
  after(async () => {
    await cleanupDockerByLabel(nodeId).catch(() => undefined);
  });

  it('reports CPU, memory, block I/O and restarts per workload, with bounded calls and no stranger', async () => {
    const crashy = await waitFor('crashy restarted twice', async () => {
      const u = await rt.usage(AbortSignal.timeout(30_000));
      const c = u.find((x) => x.workloadId === 'crashy');
      return c?.restarts === 2 ? u : undefined;
    }, 60_000);
    assert.deepEqual(crashy.map((u) => u.workloadId).sort(), ['busy', 'crashy'], 'only this node\'s containers');
    const busy = await waitFor('busy has used CPU', async () => {
      const b = (await rt.usage()).find((x) => x.workloadId === 'busy');
      return b && (b.cpuSeconds ?? 0) > 0 ? b : undefined;
    }, 30_000);
    assert.equal(busy.type, 'container');
    assert.match(busy.runtimeId, /^[0-9a-f]{64}$/);
    assert.ok((busy.memoryBytes ?? 0) > 0, JSON.stringify(busy));
    assert.equal(busy.restarts, 0);
    assert.equal(typeof busy.blockReadBytes, 'number');
    assert.equal(busy.networkReceiveBytes, undefined, 'network mode none has no interfaces to count');
    const c = (await rt.usage()).find((x) => x.workloadId === 'crashy');
    assert.equal(c?.cpuSeconds, undefined, 'an exited container has no stats, only its restart count');
  });

  it('takes about one engine round trip per container, not a 1 s stats sample each', async () => {
    const started = performance.now();
    await rt.usage();
    const ms = performance.now() - started;
    assert.ok(ms < 3_000, `usage() of two containers took ${Math.round(ms)} ms`);
  });
});
