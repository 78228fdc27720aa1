/**
 * SIGTERM drains (built CLI, real dockerd, images from the loopback OCI registry): no new step
 * starts, a running step may finish within shutdown.drainSeconds, then it is aborted. A slow pull
 * cut by SIGTERM exits within the drain time and leaves no container; the next start converges
 * with exactly one running container. A pull that finishes within the drain time completes its
 * create and start before the agent exits.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import Docker from 'dockerode';

import { AgentProcess, waitFor } from '../helpers/agent-process.js';
import { cleanupDockerByLabel, requireEngine, testNodeId } from '../helpers/engines.js';
import { startOciRegistry, type OciRegistry } from '../helpers/oci-registry.js';

const skip = await requireEngine('docker');
const MiB = 1 << 20;
const DRAIN_SECONDS = 3;

interface StatusFile {
  workloads: { id: string; phase: string; actualState: string; runtimeId?: string; error?: { code: string } | null }[];
}

describe('SIGTERM drain (built CLI, real dockerd, loopback registry)', { skip, timeout: 300_000 }, () => {
  const docker = new Docker({ socketPath: '/var/run/docker.sock' });
  const nodeIds: string[] = [];
  const dirs: string[] = [];
  let reg: OciRegistry;
  let agent: AgentProcess | undefined;

  before(async () => {
    reg = await startOciRegistry({
      images: [
        { name: 'persys-test/drain-cut:1', from: 'persys-test/busybox:1', fillerBytes: 6 * MiB },
        { name: 'persys-test/drain-finish:1', from: 'persys-test/busybox:1', fillerBytes: 2 * MiB },
      ],
    });
  });
  after(async () => {
    await agent?.stop('SIGKILL').catch(() => undefined);
    for (const id of nodeIds) await cleanupDockerByLabel(id).catch(() => undefined);
    await reg.removePulledImages();
    await reg.close();
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  const setup = async (prefix: string, image: string) => {
    const nodeId = testNodeId(prefix);
    nodeIds.push(nodeId);
    const dir = await mkdtemp(join(tmpdir(), 'persys-drain-'));
    dirs.push(dir);
    const configPath = join(dir, 'config.json');
    const desiredPath = join(dir, 'desired.json');
    await writeFile(
      configPath,
      JSON.stringify({
        nodeId,
        stateDir: join(dir, 'state'),
        logLevel: 'info',
        reconcile: { intervalSeconds: 2, stuckSeconds: 60 },
        shutdown: { drainSeconds: DRAIN_SECONDS },
        metrics: { listen: 'off' },
        docker: { namePrefix: `t-${nodeId}-` },
      }),
    );
    await writeFile(
      desiredPath,
      JSON.stringify({
        apiVersion: 'persys.dev/v1',
        kind: 'DesiredState',
        nodeId,
        generation: 1,
        workloads: [{ id: 'web', type: 'container', spec: { image: reg.ref(image), command: ['sleep', '300'], stopTimeoutSeconds: 1, network: { mode: 'none' } } }],
      }),
    );
    const ours = () => docker.listContainers({ all: true, filters: { label: [`dev.persys.node-id=${nodeId}`] } });
    const status = async () => JSON.parse(await readFile(join(dir, 'state', 'status.json'), 'utf8')) as StatusFile;
    const start = () => (agent = AgentProcess.start(['run', '--config', configPath, '--desired', desiredPath]));
    return { nodeId, ours, status, start };
  };

  const sigterm = async (a: AgentProcess): Promise<{ code: number | null; ms: number }> => {
    const t0 = Date.now();
    const code = await a.stop('SIGTERM', 60_000);
    return { code, ms: Date.now() - t0 };
  };

  it(`a pull longer than drainSeconds (${DRAIN_SECONDS} s): exits within the drain time, nothing half made; a restart converges to one container`, async () => {
    const n = await setup('test-drain-cut', 'persys-test/drain-cut:1');
    reg.knobs = { bytesPerSecond: 128 * 1024 };
    const a = n.start();
    await waitFor('the pull to start', () => a.lines.some((l) => l.msg === 'pulling image') && reg.layerBytesSent > 0, 60_000);
    const { code, ms } = await sigterm(a);
    console.log(`SIGTERM during a slow pull: exited ${code} after ${ms} ms (drainSeconds=${DRAIN_SECONDS})`);
    assert.equal(code, 0, a.dump());
    assert.ok(ms >= DRAIN_SECONDS * 1000 - 200, `exited after ${ms} ms: the running pull was not given the drain time`);
    assert.ok(ms < (DRAIN_SECONDS + 8) * 1000, `exited after ${ms} ms`);
    assert.ok(a.lines.some((l) => /drain time \(3 s\) is up; aborting the running steps/.test(l.msg)), a.dump());
    assert.deepEqual(await n.ours(), [], 'no container from the aborted create');
    await assert.rejects(docker.getImage(reg.ref('persys-test/drain-cut:1')).inspect(), /no such image/i);

    reg.knobs = {};
    const b = n.start();
    const running = await waitFor('one running container after the restart', async () => {
      const list = await n.ours();
      return list.length === 1 && list[0]!.State === 'running' ? list : undefined;
    }, 90_000);
    await waitFor('Running in the status report', async () => (await n.status()).workloads.find((w) => w.id === 'web' && w.phase === 'Running'), 30_000);
    const w = (await n.status()).workloads.find((x) => x.id === 'web')!;
    assert.equal(w.runtimeId, running[0]!.Id);
    assert.equal(w.error ?? null, null);
    assert.equal((await sigterm(b)).code, 0);
    assert.equal((await n.ours()).length, 1, 'still exactly one container');
  });

  it('a pull that ends within the drain time: the step finishes (created and started) before the agent exits', async () => {
    const n = await setup('test-drain-finish', 'persys-test/drain-finish:1');
    // ~3 MiB of layers at 2 MiB/s per layer response: about 1 s, well inside the 3 s drain.
    reg.knobs = { bytesPerSecond: 2 * MiB };
    const a = n.start();
    await waitFor('the pull to start', () => a.lines.some((l) => l.msg === 'pulling image'), 60_000, 20);
    const { code, ms } = await sigterm(a);
    console.log(`SIGTERM during a short pull: exited ${code} after ${ms} ms`);
    assert.equal(code, 0, a.dump());
    assert.ok(ms < DRAIN_SECONDS * 1000 + 3000, `exited after ${ms} ms`);
    const list = await n.ours();
    assert.equal(list.length, 1, a.dump());
    assert.equal(list[0]!.State, 'running');
    assert.ok(!a.lines.some((l) => /aborting the running steps/.test(l.msg)), 'nothing was aborted');
  });
});
