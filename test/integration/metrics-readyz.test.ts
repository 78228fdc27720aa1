/**
 * /readyz and /healthz of the built agent against an engine that goes away and comes back. The
 * shared dockerd is never touched: the agent talks to a private dockerd this test starts (own
 * socket, data root, exec root, containerd namespace, no bridge, no iptables) and stops by pid.
 * Also: an unreachable desired-state server makes the agent not ready, never not alive.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AgentProcess, waitFor } from '../helpers/agent-process.js';
import { requireEngine, testNodeId } from '../helpers/engines.js';
import { privateDockerdSkipReason, startPrivateDockerd, type PrivateDockerd } from '../helpers/private-dockerd.js';
import { freePort, httpGet } from '../helpers/prometheus.js';

const skip = (await requireEngine('docker')) || (await privateDockerdSkipReason());

interface Readyz {
  status: string;
  checks: Record<string, { ok: boolean; reason: string }>;
}

/** Samples GET /healthz every 200 ms until stopped; every answer is kept. */
function sampleHealthz(port: number) {
  const seen: number[] = [];
  let stop = false;
  const done = (async () => {
    while (!stop) {
      try {
        seen.push((await httpGet(`http://127.0.0.1:${port}/healthz`, 2_000)).status);
      } catch {
        seen.push(0);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  return {
    seen,
    async end() {
      stop = true;
      await done;
      return seen;
    },
  };
}

describe('/readyz and /healthz while the engine or the server goes away', { skip, timeout: 300_000 }, () => {
  let dir: string;
  let dockerd: PrivateDockerd | undefined;
  const agents: AgentProcess[] = [];

  const readyz = async (port: number) => {
    const res = await httpGet(`http://127.0.0.1:${port}/readyz`);
    return { status: res.status, body: JSON.parse(res.body) as Readyz };
  };
  const runtimeUp = async (port: number) => /^persys_runtime_up\{runtime="docker"\} (\d)/m.exec((await httpGet(`http://127.0.0.1:${port}/metrics`)).body)?.[1];

  const startAgent = async (nodeId: string, args: string[]) => {
    const desired = join(dir, `${nodeId}.json`);
    await writeFile(desired, JSON.stringify({ apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId, generation: 1, workloads: [] }));
    const port = await freePort();
    const agent = AgentProcess.start([
      'run',
      '--desired',
      desired,
      `--nodeId=${nodeId}`,
      `--stateDir=${join(dir, nodeId)}`,
      `--metrics.listen=127.0.0.1:${port}`,
      '--libvirt.enabled=false',
      '--reconcile.intervalSeconds=1',
      '--metrics.statsIntervalSeconds=1',
      '--source.pollIntervalSeconds=1',
      ...args,
    ]);
    agents.push(agent);
    return { agent, port };
  };

  before(async () => {
    // Short: the private dockerd's unix socket lives in it.
    dir = await mkdtemp('/tmp/persys-rz-');
  });
  after(async () => {
    for (const a of agents) await a.stop('SIGTERM').catch(() => undefined);
    await dockerd?.stop().catch(() => undefined);
    if (dir) await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  });

  it('turns 503 with a reason when dockerd stops and 200 when it returns, while /healthz stays 200', async () => {
    dockerd = await startPrivateDockerd(join(dir, 'd'));
    const d = dockerd;
    const nodeId = testNodeId('test-readyz');
    const { agent, port } = await startAgent(nodeId, [`--docker.socketPath=${d.socketPath}`]);
    const dump = () => `--- agent ---\n${agent.dump()}\n--- dockerd ---\n${d.log()}`;

    const ready = await waitFor('ready', async () => {
      const r = await readyz(port);
      return r.status === 200 ? r.body : undefined;
    }, 60_000).catch((err: unknown) => {
      throw new Error(`${String(err)}\n${dump()}`);
    });
    assert.equal(ready.status, 'ready');
    assert.deepEqual(Object.keys(ready.checks).sort(), ['compose', 'docker', 'libvirt', 'resources', 'source', 'store']);
    assert.equal(ready.checks.docker?.ok, true);
    assert.equal(ready.checks.libvirt?.reason, 'disabled by config');
    assert.equal(await runtimeUp(port), '1');
    // /health is kept as an alias of /readyz.
    assert.equal((await httpGet(`http://127.0.0.1:${port}/health`)).status, 200);

    const healthz = sampleHealthz(port);
    await d.stop();
    const down = await waitFor('not ready', async () => {
      const r = await readyz(port);
      return r.status === 503 ? r.body : undefined;
    }, 30_000).catch((err: unknown) => {
      throw new Error(`${String(err)}\n${dump()}`);
    });
    assert.equal(down.status, 'not ready');
    assert.equal(down.checks.docker?.ok, false);
    assert.match(down.checks.docker?.reason ?? '', /^down: RUNTIME_UNAVAILABLE/, JSON.stringify(down));
    assert.ok(down.checks.docker?.reason.includes(d.socketPath), `the reason names the socket: ${down.checks.docker?.reason}`);
    assert.equal(down.checks.store?.ok, true, 'only docker is at fault');
    assert.equal(down.checks.source?.ok, true);
    assert.equal(await runtimeUp(port), '0');
    assert.equal((await httpGet(`http://127.0.0.1:${port}/health`)).status, 503);

    await d.start();
    await waitFor('ready again', async () => (await readyz(port)).status === 200, 60_000).catch((err: unknown) => {
      throw new Error(`${String(err)}\n${dump()}`);
    });
    assert.equal(await runtimeUp(port), '1');
    const seen = await healthz.end();
    assert.ok(seen.length >= 5, `healthz sampled ${seen.length} times`);
    assert.deepEqual([...new Set(seen)], [200], `every /healthz answer was 200: ${seen.join(',')}`);
    assert.equal(await agent.stop('SIGTERM'), 0);
  });

  it('is not ready, but alive, while the desired-state server is unreachable', async () => {
    const nodeId = testNodeId('test-readyz-src');
    const dead = await freePort();
    const { agent, port } = await startAgent(nodeId, ['--docker.enabled=false', `--source.url=http://127.0.0.1:${dead}/fleet/{nodeId}.json`]);
    const body = await waitFor('not ready (source)', async () => {
      const r = await readyz(port);
      return r.status === 503 && r.body.checks.source?.reason.includes('DESIRED_STATE_UNAVAILABLE') ? r.body : undefined;
    }, 30_000).catch((err: unknown) => {
      throw new Error(`${String(err)}\n--- agent ---\n${agent.dump()}`);
    });
    assert.equal(body.checks.source?.ok, false);
    assert.match(body.checks.source?.reason ?? '', /^no successful pull yet/);
    assert.deepEqual(body.checks.docker, { ok: true, reason: 'disabled by config' });
    for (let i = 0; i < 5; i++) {
      assert.equal((await httpGet(`http://127.0.0.1:${port}/healthz`)).status, 200);
      await new Promise((r) => setTimeout(r, 300));
    }
    assert.equal(await agent.stop('SIGTERM'), 0);
  });
});
