/**
 * A real Prometheus (Debian's package) scrapes the built agent, run as a real process on a loopback
 * port with one container on the real dockerd; queries through Prometheus's HTTP API find the
 * agent's persys_ series, the workload's series and the host's series, joined to the node by
 * persys_node_info. promtool (same package) lints the agent's /metrics.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AgentProcess, waitFor } from '../helpers/agent-process.js';
import { cleanupDockerByLabel, requireEngine, testNodeId } from '../helpers/engines.js';
import { freePort, httpGet, promtoolCheckMetrics, startPrometheus, type PrometheusServer } from '../helpers/prometheus.js';

const skip = (await requireEngine('docker')) || (await requireEngine('prometheus'));

describe('a real Prometheus scraping the agent', { skip, timeout: 300_000 }, () => {
  const nodeId = testNodeId('test-prom');
  let dir: string;
  let agent: AgentProcess | undefined;
  let prom: PrometheusServer | undefined;
  let port: number;
  const target = () => `127.0.0.1:${port}`;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-prom-'));
    port = await freePort();
    const desired = join(dir, 'desired-state.json');
    await writeFile(
      desired,
      JSON.stringify({
        apiVersion: 'persys.dev/v1',
        kind: 'DesiredState',
        nodeId,
        generation: 1,
        workloads: [{ id: 'web', type: 'container', spec: { image: 'persys-test/busybox:1', stopTimeoutSeconds: 1, network: { mode: 'none' } } }],
      }),
    );
    agent = AgentProcess.start([
      'run',
      '--desired',
      desired,
      `--nodeId=${nodeId}`,
      `--stateDir=${join(dir, 'state')}`,
      `--docker.namePrefix=t-${nodeId}-`,
      '--libvirt.enabled=false',
      `--metrics.listen=127.0.0.1:${port}`,
      '--metrics.statsIntervalSeconds=1',
      '--reconcile.intervalSeconds=2',
      '--source.pollIntervalSeconds=2',
    ]);
    await waitFor(
      'the workload in /metrics',
      async () => (await httpGet(`http://${target()}/metrics`)).body.includes('persys_workload_cpu_seconds_total{workload_id="web",type="container"}'),
      60_000,
    ).catch((err: unknown) => {
      throw new Error(`${String(err)}\n--- agent ---\n${agent?.dump() ?? ''}`);
    });
  });

  after(async () => {
    await prom?.stop().catch(() => undefined);
    await agent?.stop('SIGTERM').catch(() => undefined);
    await cleanupDockerByLabel(nodeId).catch(() => undefined);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('serves /metrics that promtool check metrics accepts', async () => {
    const res = await httpGet(`http://${target()}/metrics`);
    assert.equal(res.status, 200);
    const lint = await promtoolCheckMetrics(res.body);
    assert.equal(lint.code, 0, `promtool check metrics:\n${lint.output}`);
    assert.equal(lint.output.trim(), '', 'no lint findings at all');
  });

  it('is scraped by Prometheus, and queries return agent, workload and host series for the node', async () => {
    prom = await startPrometheus({ dir: join(dir, 'prom'), targets: [target()], scrapeIntervalSeconds: 1 });
    const p = prom;
    const info = await waitFor('persys_node_info in Prometheus', async () => {
      const r = await p.query(`persys_node_info{node_id="${nodeId}"}`);
      return r.length === 1 ? r : undefined;
    }, 60_000).catch((err: unknown) => {
      throw new Error(`${String(err)}\n--- prometheus ---\n${p.process.log()}`);
    });
    assert.equal(info[0]?.metric.instance, target());
    assert.equal(info[0]?.metric.job, 'persys');
    assert.equal((await p.query(`up{instance="${target()}"}`))[0]?.value[1], '1', 'the scrape succeeds');

    // The node id lives on persys_node_info only; any series is tied to the node by a join on instance.
    const forNode = (expr: string) => `${expr} * on(instance) group_left(node_id) persys_node_info{node_id="${nodeId}"}`;

    const agentSeries = await p.query(`count({__name__=~"persys_.+", instance="${target()}"})`);
    assert.ok(Number(agentSeries[0]?.value[1]) > 50, `persys_ series: ${JSON.stringify(agentSeries)}`);
    const pulls = await waitFor('pulls for the node', async () => {
      const r = await p.query(forNode('persys_desired_state_pulls_total{result="200"}'));
      return r.length === 1 ? r : undefined;
    }, 30_000);
    assert.equal(pulls[0]?.metric.node_id, nodeId);
    assert.equal(pulls[0]?.value[1], '1');
    const runtimeUp = await p.query(forNode('persys_runtime_up{runtime="docker"}'));
    assert.equal(runtimeUp[0]?.value[1], '1');

    const cpu = await p.query(forNode('persys_workload_cpu_seconds_total{workload_id="web"}'));
    assert.equal(cpu.length, 1, JSON.stringify(cpu));
    assert.equal(cpu[0]?.metric.node_id, nodeId);
    assert.equal(cpu[0]?.metric.type, 'container');
    const mem = await p.query(forNode('persys_workload_memory_bytes{workload_id="web"}'));
    assert.ok(Number(mem[0]?.value[1]) > 0, `memory of the workload: ${JSON.stringify(mem)}`);
    const restarts = await p.query(forNode('persys_workload_restarts_total{workload_id="web"}'));
    assert.equal(restarts[0]?.value[1], '0');
    const running = await p.query(forNode('persys_workloads{type="container",phase="Running"}'));
    assert.equal(running[0]?.value[1], '1');

    const memTotal = await p.query(forNode('persys_host_memory_total_bytes'));
    assert.ok(Number(memTotal[0]?.value[1]) > 0, JSON.stringify(memTotal));
    const idle = await p.query(forNode('persys_host_cpu_seconds_total{mode="idle"}'));
    assert.ok(Number(idle[0]?.value[1]) > 0, JSON.stringify(idle));
    const stateFs = await p.query(forNode('persys_host_filesystem_size_bytes{purpose="state"}'));
    assert.ok(Number(stateFs[0]?.value[1]) > 0, JSON.stringify(stateFs));
    const dockerFs = await p.query(forNode('persys_host_filesystem_avail_bytes{purpose="docker"}'));
    assert.equal(dockerFs.length, 1, JSON.stringify(dockerFs));
    const boot = await p.query(forNode('persys_host_boot_time_seconds'));
    assert.ok(Number(boot[0]?.value[1]) > 1e9, JSON.stringify(boot));
    const process = await p.query(`process_resident_memory_bytes{instance="${target()}"}`);
    assert.ok(Number(process[0]?.value[1]) > 0, 'the default process metrics are there too');

    // Not on every series: the workload series carries no node_id of its own.
    const raw = await p.query(`persys_workload_cpu_seconds_total{workload_id="web", instance="${target()}"}`);
    assert.equal(raw[0]?.metric.node_id, undefined);
  });
});
