/**
 * Drift repair driven by Docker events: with the periodic reconcile set to an hour, only the
 * engine's destroy/die events can make the agent notice a container removed behind its back.
 * Also the embedded-defaults path: a local desired-state file with nodeId "*", watched for changes.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Docker from 'dockerode';
import { AgentProcess, waitFor } from '../helpers/agent-process.js';
import { cleanupDockerByLabel, requireEngine, testNodeId } from '../helpers/engines.js';

const skip = await requireEngine('docker');

interface StatusFile {
  observedGeneration: number | null;
  workloads: { id: string; phase: string; runtimeId?: string }[];
}

describe('agent with a local desired-state file, driven by Docker events', { skip, timeout: 300_000 }, () => {
  const nodeId = testNodeId('test-events');
  const docker = new Docker({ socketPath: '/var/run/docker.sock' });
  let dir: string;
  let agent: AgentProcess | undefined;

  const desiredPath = () => join(dir, 'desired-state.json');
  const status = async () => JSON.parse(await readFile(join(dir, 'state', 'status.json'), 'utf8')) as StatusFile;
  const write = (generation: number, ids: string[]) =>
    writeFile(
      desiredPath(),
      JSON.stringify({
        apiVersion: 'persys.dev/v1',
        kind: 'DesiredState',
        nodeId: '*',
        generation,
        workloads: ids.map((id) => ({ id, type: 'container', spec: { image: 'persys-test/busybox:1', stopTimeoutSeconds: 1, network: { mode: 'none' } } })),
      }),
    );
  const ours = async () => {
    const list = await docker.listContainers({ all: true, filters: { label: [`dev.persys.node-id=${nodeId}`] } });
    return new Map(list.map((c) => [c.Labels['dev.persys.workload-id']!, c]));
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-events-'));
  });
  after(async () => {
    await agent?.stop('SIGTERM').catch(() => undefined);
    await cleanupDockerByLabel(nodeId).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

  it('manages nothing while the file is absent, then applies it when it appears', async () => {
    agent = AgentProcess.start([
      'run',
      '--desired',
      desiredPath(),
      `--nodeId=${nodeId}`,
      `--stateDir=${join(dir, 'state')}`,
      `--docker.namePrefix=t-${nodeId}-`,
      '--metrics.listen=127.0.0.1:0',
      '--reconcile.intervalSeconds=3600',
      '--source.pollIntervalSeconds=3600',
      '--status.debounceMs=50',
    ]);
    await waitFor('a first status file', () => status().catch(() => undefined), 30_000);
    assert.equal((await status()).observedGeneration, null);
    assert.equal((await ours()).size, 0);
    // The file watcher, not the hour-long poll, must pick this up.
    await write(1, ['w1', 'w2']);
    await waitFor('both Running', async () => {
      const s = await status();
      return s.workloads.length === 2 && s.workloads.every((w) => w.phase === 'Running');
    }, 60_000);
    assert.equal((await ours()).size, 2);
  });

  it('recreates a container removed behind its back, on the engine event alone', async () => {
    const before = (await ours()).get('w1')!;
    await docker.getContainer(before.Id).remove({ force: true });
    const after = await waitFor('w1 back', async () => {
      const c = (await ours()).get('w1');
      return c && c.Id !== before.Id && c.State === 'running' ? c : undefined;
    }, 60_000);
    assert.notEqual(after.Id, before.Id);
    await waitFor('status shows the new container', async () => (await status()).workloads.find((w) => w.id === 'w1')?.runtimeId === after.Id, 30_000);
  });

  it('starts a container stopped behind its back', async () => {
    const w2 = (await ours()).get('w2')!;
    await docker.getContainer(w2.Id).stop({ t: 1 });
    await waitFor('w2 running again', async () => (await ours()).get('w2')?.State === 'running', 60_000);
    assert.equal((await ours()).get('w2')?.Id, w2.Id, 'started, not recreated');
  });
});
