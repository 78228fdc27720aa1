/**
 * A node id on two hosts, in push mode: two real agents (the built CLI, no runtimes, separate state
 * dirs) push under one node id to a real Pushgateway, which keeps one group per node id, so each push
 * replaces the other's. A real Prometheus with the example configuration scrapes the gateway; the
 * host_id label of persys_node_info alternates, and PersysNodeIdConflict's expression finds the node.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { AgentProcess, waitFor } from '../helpers/agent-process.js';
import { alertRules, exampleConfig } from '../helpers/alerting.js';
import { requireEngine, testNodeId } from '../helpers/engines.js';
import { startPrometheus, startPushgateway, type PrometheusServer, type Pushgateway } from '../helpers/prometheus.js';

const skip = (await requireEngine('prometheus')) || (await requireEngine('pushgateway'));

describe('PersysNodeIdConflict in push mode, on a real Pushgateway and Prometheus', { skip, timeout: 180_000 }, () => {
  const nodeId = testNodeId('test-alerts-push');
  let dir: string;
  let gateway: Pushgateway | undefined;
  let prom: PrometheusServer | undefined;
  const agents: AgentProcess[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-alerts-push-'));
    gateway = await startPushgateway();
    const desired = join(dir, 'desired.json');
    await writeFile(desired, JSON.stringify({ apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId, generation: 1, workloads: [] }));
    // Push intervals of 2 s and 3 s: within every 6 s, one of the second agent's pushes stays in the
    // gateway for at least 1 s (one scrape interval) before the first agent's next push replaces it.
    for (const [name, interval] of [
      ['one', 2],
      ['two', 3],
    ] as const) {
      agents.push(
        AgentProcess.start([
          'run',
          '--desired',
          desired,
          `--nodeId=${nodeId}`,
          `--stateDir=${join(dir, `state-${name}`)}`,
          '--docker.enabled=false',
          '--libvirt.enabled=false',
          '--metrics.listen=off',
          `--metrics.push.url=${gateway.url}`,
          `--metrics.push.intervalSeconds=${interval}`,
          '--source.pollIntervalSeconds=2',
        ]),
      );
    }
    prom = await startPrometheus({ dir: join(dir, 'prom'), targets: [], configYaml: await exampleConfig({ agents: [], pushgateway: gateway.url.replace('http://', '') }) });
  });

  after(async () => {
    await prom?.stop().catch(() => undefined);
    for (const a of agents) await a.stop('SIGTERM').catch(() => undefined);
    await gateway?.stop().catch(() => undefined);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('sees both host ids under the one node id and raises the conflict expression', async () => {
    const p = prom!;
    const hosts = await waitFor('two host_id values for the node in Prometheus', async () => {
      const r = await p.query(`count by (host_id) (last_over_time(persys_node_info{job="persys_agent", node_id="${nodeId}"}[15m]))`);
      return r.length === 2 ? r : undefined;
    }, 90_000).catch((err: unknown) => {
      throw new Error(`${String(err)}\n--- prometheus ---\n${p.process.log()}\n${agents.map((a) => a.dump().split('\n').slice(-10).join('\n')).join('\n')}`);
    });
    assert.equal(new Set(hosts.map((s) => s.metric.host_id)).size, 2);
    // Only one group per node id on the gateway: each push replaced the other's.
    const groupLines = (await gateway!.metrics()).split('\n').filter((l) => l.startsWith('persys_node_info{') && l.includes(`node_id="${nodeId}"`));
    assert.equal(groupLines.length, 1, groupLines.join('\n'));

    const expr = alertRules().find((a) => a.alert === 'PersysNodeIdConflict')?.expr;
    assert.ok(expr);
    const r = await p.query(expr);
    assert.deepEqual(r.map((s) => [s.metric.node_id, s.value[1]]), [[nodeId, '2']]);
  });
});
