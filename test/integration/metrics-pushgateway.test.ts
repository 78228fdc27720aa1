/**
 * Push mode against a real Pushgateway (Debian's prometheus-pushgateway): the built agent pushes its
 * registry under job="persys_agent" with the node id as grouping key; a clean shutdown deletes the
 * group when metrics.push.deleteOnShutdown is set (else leaves the final values); a gateway that is
 * not there is retried with backoff and counted.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AgentProcess, waitFor } from '../helpers/agent-process.js';
import { requireEngine, testNodeId } from '../helpers/engines.js';
import { freePort, httpGet, startPushgateway, type Pushgateway } from '../helpers/prometheus.js';

const skip = await requireEngine('pushgateway');

/** Sample lines of the gateway's /metrics that belong to `nodeId`'s group. */
const groupLines = (text: string, nodeId: string) =>
  text.split('\n').filter((l) => !l.startsWith('#') && l.includes(`job="persys_agent"`) && l.includes(`node_id="${nodeId}"`));

describe('push mode against a real Pushgateway', { skip, timeout: 300_000 }, () => {
  let dir: string;
  let gw: Pushgateway;
  const agents: AgentProcess[] = [];

  const startAgent = async (nodeId: string, push: Record<string, string | number | boolean>, extra: string[] = []) => {
    await writeFile(join(dir, `${nodeId}.json`), JSON.stringify({ apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId, generation: 1, workloads: [] }));
    const a = AgentProcess.start([
      'run',
      '--desired',
      join(dir, `${nodeId}.json`),
      `--nodeId=${nodeId}`,
      `--stateDir=${join(dir, nodeId)}`,
      '--metrics.listen=off',
      '--docker.enabled=false',
      '--libvirt.enabled=false',
      ...Object.entries(push).map(([k, v]) => `--metrics.push.${k}=${String(v)}`),
      ...extra,
    ]);
    agents.push(a);
    return a;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-pgw-'));
    gw = await startPushgateway();
  });
  after(async () => {
    for (const a of agents) await a.stop('SIGTERM').catch(() => undefined);
    await gw?.stop().catch(() => undefined);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('holds the agent series under job="persys_agent" and the node grouping label after one interval, and drops the group on SIGTERM', async () => {
    const nodeId = testNodeId('test-push');
    const agent = await startAgent(nodeId, { url: gw.url, intervalSeconds: 1, deleteOnShutdown: true });
    const lines = await waitFor('the node group on the gateway', async () => {
      const l = groupLines(await gw.metrics(), nodeId);
      return l.some((x) => x.startsWith('persys_node_info{')) ? l : undefined;
    }, 30_000).catch((err: unknown) => {
      throw new Error(`${String(err)}\n--- agent ---\n${agent.dump()}\n--- gateway ---\n${gw.process.log()}`);
    });
    for (const name of ['persys_build_info', 'persys_desired_state_pulls_total', 'persys_reconcile_runs_total', 'persys_host_memory_total_bytes', 'process_cpu_user_seconds_total', 'push_time_seconds']) {
      assert.ok(lines.some((l) => l.startsWith(`${name}{`)), `${name} is in the group:\n${lines.slice(0, 20).join('\n')}`);
    }
    // A second push keeps the group current (PUT replaces it).
    const firstPush = Number(lines.find((l) => l.startsWith('push_time_seconds{'))?.split(' ').pop());
    await waitFor('a later push', async () => {
      const t = Number(groupLines(await gw.metrics(), nodeId).find((l) => l.startsWith('push_time_seconds{'))?.split(' ').pop());
      return t > firstPush;
    }, 15_000);

    assert.equal(await agent.stop('SIGTERM'), 0);
    assert.deepEqual(groupLines(await gw.metrics(), nodeId), [], 'the group is deleted on a clean shutdown');
    assert.equal(agent.lines.filter((l) => l.level >= 40).length, 0, `no warnings:\n${agent.dump()}`);
  });

  it('leaves the final values on the gateway when deleteOnShutdown is false', async () => {
    const nodeId = testNodeId('test-push-keep');
    const agent = await startAgent(nodeId, { url: gw.url, intervalSeconds: 1, deleteOnShutdown: false });
    await waitFor('the node group on the gateway', async () => groupLines(await gw.metrics(), nodeId).length > 0, 30_000);
    assert.equal(await agent.stop('SIGTERM'), 0);
    assert.ok(groupLines(await gw.metrics(), nodeId).some((l) => l.startsWith('persys_node_info{')), 'the group stays');
    // Tidy the gateway for the next test.
    await fetch(`${gw.url}/metrics/job/persys_agent/node_id/${nodeId}`, { method: 'DELETE', signal: AbortSignal.timeout(5_000) });
  });

  it('counts failed pushes and backs off while the gateway is unreachable', async () => {
    const nodeId = testNodeId('test-push-fail');
    const deadPort = await freePort();
    const metricsPort = await freePort();
    const agent = await startAgent(nodeId, { url: `http://127.0.0.1:${deadPort}`, intervalSeconds: 4 }, [`--metrics.listen=127.0.0.1:${metricsPort}`]);
    const errors = async () => {
      const text = (await httpGet(`http://127.0.0.1:${metricsPort}/metrics`)).body;
      return Number(/^persys_metrics_pushes_total\{result="error"\} (\d+)/m.exec(text)?.[1] ?? 'NaN');
    };
    await waitFor('a counted push failure', async () => (await errors()) >= 1, 30_000);
    await new Promise((r) => setTimeout(r, 5_000));
    const n = await errors();
    // Backoff doubles from 1 s (full jitter, capped at the interval): in ~5 s far fewer than the
    // ~50 attempts a 100 ms retry loop would make.
    assert.ok(n >= 1 && n <= 15, `failed pushes in ~5 s: ${n}`);
    const warns = agent.lines.filter((l) => l.level === 40 && l.msg.startsWith('metrics push failed'));
    assert.equal(warns.length, 1, `one WARN for the same reason, repeats at DEBUG:\n${agent.dump()}`);
    assert.equal(await agent.stop('SIGTERM'), 0);
  });
});
