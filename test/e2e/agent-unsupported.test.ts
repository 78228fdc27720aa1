/**
 * Accepted means honoured (built CLI): a desired
 * state that uses volumes or storagePools is rejected (DESIRED_STATE_INVALID, naming the path) and
 * the running workload stays.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import Docker from 'dockerode';

import { AgentProcess, runCli, waitFor } from '../helpers/agent-process.js';
import { cleanupDockerByLabel, requireEngine, testNodeId } from '../helpers/engines.js';

const skip = await requireEngine('docker');

const cli = runCli;

describe('unsupported config keys and document fields (built CLI)', { timeout: 180_000 }, () => {
  let dir: string;
  const nodeId = testNodeId('test-unsup');
  let agent: AgentProcess | undefined;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-unsup-'));
  });
  after(async () => {
    await agent?.stop('SIGTERM').catch(() => undefined);
    await cleanupDockerByLabel(nodeId).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

  it('validate: a document with volumes or storagePools exits 1 naming both paths', async () => {
    const f = join(dir, 'storage.json');
    await writeFile(f, JSON.stringify({ apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId: '*', generation: 1, workloads: [], volumes: [{ name: 'data', pool: 'fast' }], storagePools: [{ name: 'fast', type: 'dir', path: '/srv/fast' }] }));
    const r = await cli(['validate', f]);
    assert.equal(r.code, 1);
    const out = `${r.stdout}\n${r.stderr}`;
    assert.match(out, /volumes: volumes are not supported in this version/);
    assert.match(out, /storagePools: storagePools are not supported in this version/);
  });

  it('a running agent rejects a document with volumes (DESIRED_STATE_INVALID) and removes nothing', { skip }, async () => {
    const docker = new Docker({ socketPath: '/var/run/docker.sock' });
    const desired = join(dir, 'desired.json');
    const doc = (generation: number, extra: Record<string, unknown>) =>
      JSON.stringify({ apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId, generation, ...extra });
    await writeFile(desired, doc(1, { workloads: [{ id: 'web', type: 'container', spec: { image: 'persys-test/busybox:1', command: ['sleep', '300'], stopTimeoutSeconds: 1, network: { mode: 'none' } } }] }));
    const cfg = join(dir, 'run.json');
    await writeFile(cfg, JSON.stringify({ nodeId, stateDir: join(dir, 'state'), metrics: { listen: 'off' }, reconcile: { intervalSeconds: 1 }, docker: { namePrefix: `t-${nodeId}-` } }));
    agent = AgentProcess.start(['run', '--config', cfg, '--desired', desired]);
    const ours = () => docker.listContainers({ all: true, filters: { label: [`dev.persys.node-id=${nodeId}`] } });
    await waitFor('web running', async () => (await ours()).find((c) => c.State === 'running'), 60_000);
    await writeFile(desired, doc(2, { workloads: [], volumes: [{ name: 'data', pool: 'fast' }] }));
    const line = await waitFor('the rejection', () => agent!.lines.find((l) => l.msg.startsWith('desired state rejected')), 30_000);
    assert.equal(line.code, 'DESIRED_STATE_INVALID');
    assert.match(String(line.err), /volumes: volumes are not supported in this version/);
    // A few cycles later the container is still there and the status names the error.
    await new Promise((r) => setTimeout(r, 3000));
    const list = await ours();
    assert.equal(list.length, 1);
    assert.equal(list[0]!.State, 'running');
    const status = JSON.parse(await readFile(join(dir, 'state', 'status.json'), 'utf8')) as { observedGeneration: number; sync: { lastError: { code: string } | null } };
    assert.equal(status.sync.lastError?.code, 'DESIRED_STATE_INVALID');
    assert.equal(status.observedGeneration, 1);
  });
});
