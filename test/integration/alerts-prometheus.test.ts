/**
 * The shipped rules and dashboard against a real Prometheus (Debian's package) that loads
 * deploy/prometheus/persys-agent.rules.yml with the scrape configuration of
 * deploy/prometheus/prometheus.example.yml (loopback targets, 1 s intervals), scraping real agents
 * (the built CLI) and a real Pushgateway that another real agent pushes to:
 * - agent A (scrape mode) runs a healthy container and one that exits 3 at once (crash loop);
 * - agent B (push mode only) runs a crash-looping container;
 * - agent C (scrape mode, no runtimes) reports A's node id from its own state dir: two hosts, one id.
 * Every rule is evaluated by Prometheus without error, every rule expression and every dashboard
 * query runs through the HTTP API without error, the CrashLoop expression returns both crash-looping
 * workloads (scraped and pushed), the other alert expressions stay empty on this healthy fleet,
 * NodeIdConflict finds A's id, and stopped agents show up as PersysAgentPushStale / PersysAgentDown.
 * Containers are found and removed by the run's own node-id labels.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { AgentProcess, waitFor } from '../helpers/agent-process.js';
import { alertRules, exampleConfig, allRules, dashboardQueries, labelValuesQuery, loadDashboard } from '../helpers/alerting.js';
import { cleanupDockerByLabel, requireEngine, testNodeId } from '../helpers/engines.js';
import { freePort, httpGet, startPrometheus, startPushgateway, type PrometheusServer, type Pushgateway } from '../helpers/prometheus.js';

const skip = (await requireEngine('docker')) || (await requireEngine('prometheus')) || (await requireEngine('pushgateway'));

type Series = { metric: Record<string, string>; value: [number, string] };

const container = (id: string, command: string[]) => ({
  id,
  type: 'container',
  spec: { image: 'persys-test/busybox:1', command, stopTimeoutSeconds: 1, network: { mode: 'none' } },
});

describe('the alert rules and dashboard on a real Prometheus', { skip, timeout: 600_000 }, () => {
  const nodeA = testNodeId('test-alerts-a');
  const nodeB = testNodeId('test-alerts-b');
  let dir: string;
  let prom: PrometheusServer | undefined;
  let gateway: Pushgateway | undefined;
  const agents: AgentProcess[] = [];
  let agentB: AgentProcess | undefined;
  let agentC: AgentProcess | undefined;
  let portA: number;
  let portC: number;
  const instA = () => `127.0.0.1:${portA}`;
  const instC = () => `127.0.0.1:${portC}`;

  const logs = () => [prom ? `--- prometheus ---\n${prom.process.log()}` : '', ...agents.map((a, i) => `--- agent ${i} ---\n${a.dump().split('\n').slice(-30).join('\n')}`)].join('\n');

  async function writeDesired(name: string, nodeId: string, workloads: unknown[]): Promise<string> {
    const file = join(dir, `${name}.json`);
    await writeFile(file, JSON.stringify({ apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId, generation: 1, workloads }));
    return file;
  }

  const common = (name: string, nodeId: string) => [
    `--nodeId=${nodeId}`,
    `--stateDir=${join(dir, `state-${name}`)}`,
    `--docker.namePrefix=t-${nodeId}-`,
    '--libvirt.enabled=false',
    '--metrics.statsIntervalSeconds=1',
    '--reconcile.intervalSeconds=2',
    '--source.pollIntervalSeconds=2',
  ];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-alerts-'));
    gateway = await startPushgateway();
    portA = await freePort();
    portC = await freePort();

    const a = AgentProcess.start([
      'run',
      '--desired',
      await writeDesired('a', nodeA, [container('web', ['sleep', '3600']), container('crash', ['sh', '-c', 'exit 3'])]),
      ...common('a', nodeA),
      `--metrics.listen=${instA()}`,
    ]);
    agents.push(a);
    agentB = AgentProcess.start([
      'run',
      '--desired',
      await writeDesired('b', nodeB, [container('crash', ['sh', '-c', 'exit 4'])]),
      ...common('b', nodeB),
      '--metrics.listen=off',
      `--metrics.push.url=${gateway.url}`,
      '--metrics.push.intervalSeconds=2',
    ]);
    agents.push(agentB);
    agentC = AgentProcess.start([
      'run',
      '--desired',
      await writeDesired('c', nodeA, []),
      ...common('c', nodeA),
      '--docker.enabled=false',
      `--metrics.listen=${instC()}`,
    ]);
    agents.push(agentC);

    await waitFor(
      'both crash workloads in CrashLoop (A on /metrics, B on the Pushgateway)',
      async () =>
        (await httpGet(`http://${instA()}/metrics`)).body.includes('persys_workload_phase{workload_id="crash",type="container",phase="CrashLoop"}') &&
        (await gateway!.metrics()).includes(`persys_workload_phase{instance="",job="persys_agent",node_id="${nodeB}",phase="CrashLoop",type="container",workload_id="crash"}`),
      90_000,
      500,
    ).catch((err: unknown) => {
      throw new Error(`${String(err)}\n${logs()}`);
    });
    prom = await startPrometheus({ dir: join(dir, 'prom'), targets: [], configYaml: await exampleConfig({ agents: [instA(), instC()], pushgateway: gateway.url.replace('http://', '') }) });
  });

  after(async () => {
    await prom?.stop().catch(() => undefined);
    for (const a of agents) await a.stop('SIGTERM').catch(() => undefined);
    await gateway?.stop().catch(() => undefined);
    await cleanupDockerByLabel(nodeA).catch(() => undefined);
    await cleanupDockerByLabel(nodeB).catch(() => undefined);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const q = (expr: string): Promise<Series[]> => prom!.query(expr);
  const exprOf = (alert: string): string => {
    const r = alertRules().find((x) => x.alert === alert);
    assert.ok(r, `alert ${alert}`);
    return r.expr;
  };
  /** Waits until the alert's expression returns series (bounded), and returns them. */
  const untilAlertExpr = (alert: string, timeoutMs = 60_000): Promise<Series[]> =>
    waitFor(`${alert} expression`, async () => {
      const x = await q(exprOf(alert));
      return x.length > 0 ? x : undefined;
    }, timeoutMs);

  it('scrapes the agents and reads the pushed agent as its own instance', async () => {
    const info = await waitFor('three persys_node_info series', async () => {
      const r = await q('persys_node_info{job="persys_agent"}');
      return r.length === 3 ? r : undefined;
    }, 60_000).catch((err: unknown) => {
      throw new Error(`${String(err)}\n${logs()}`);
    });
    const byInstance = new Map(info.map((s) => [s.metric.instance, s.metric]));
    assert.equal(byInstance.get(instA())?.node_id, nodeA);
    assert.equal(byInstance.get(instC())?.node_id, nodeA);
    assert.equal(byInstance.get(nodeB)?.node_id, nodeB, 'the relabelling makes the pushed node id the instance');
    for (const { metric: m } of info) assert.match(m.host_id ?? '', /^[0-9a-f]{12}$/, `host_id on ${m.instance}`);
    assert.notEqual(byInstance.get(instA())?.host_id, byInstance.get(instC())?.host_id, 'two state dirs, two host ids');
    const pushTime = await q(`push_time_seconds{job="persys_agent", node_id="${nodeB}"}`);
    assert.equal(pushTime[0]?.metric.instance, nodeB);
  });

  it('evaluates every rule without error', async () => {
    type RuleState = { name: string; health: string; lastError?: string; lastEvaluation: string };
    const rules = await waitFor('every rule evaluated', async () => {
      const res = await httpGet(`${prom!.url}/api/v1/rules`);
      const body = JSON.parse(res.body) as { data: { groups: { rules: RuleState[] }[] } };
      const list = body.data.groups.flatMap((g) => g.rules);
      return list.length === allRules().length && list.every((r) => !r.lastEvaluation.startsWith('0001')) ? list : undefined;
    }, 30_000);
    for (const r of rules) assert.equal(r.health, 'ok', `${r.name}: ${r.lastError ?? ''}`);
  });

  it('runs every rule expression through the query API without error', async () => {
    for (const r of allRules()) await q(r.expr);
  });

  it('returns both crash-looping workloads, scraped and pushed, from the CrashLoop expression', async () => {
    const expr = exprOf('PersysWorkloadCrashLoop');
    const found = await waitFor('both crash workloads in the CrashLoop expression', async () => {
      const r = await q(expr);
      return r.length === 2 ? r : undefined;
    }, 60_000).catch(async (err: unknown) => {
      throw new Error(`${String(err)}: ${JSON.stringify(await q(expr))}\n${logs()}`);
    });
    const got = found.map((s) => `${s.metric.node_id} ${s.metric.instance} ${s.metric.workload_id} ${s.metric.type}`).sort();
    assert.deepEqual(got, [`${nodeA} ${instA()} crash container`, `${nodeB} ${nodeB} crash container`].sort());
    // Prometheus's own rule evaluation has them pending (for: 10m).
    const pending = await waitFor('the CrashLoop alert pending', async () => {
      const r = await q('ALERTS{alertname="PersysWorkloadCrashLoop", alertstate="pending"}');
      return r.length === 2 ? r : undefined;
    }, 30_000);
    assert.deepEqual(pending.map((s) => s.metric.node_id).sort(), [nodeA, nodeB].sort());
  });

  it('finds the node id that two agents report', async () => {
    const r = await untilAlertExpr('PersysNodeIdConflict', 30_000);
    assert.deepEqual(r.map((s) => [s.metric.node_id, s.value[1]]), [[nodeA, '2']]);
  });

  it('raises nothing else on this healthy fleet', async () => {
    const expected = new Set(['PersysWorkloadCrashLoop', 'PersysNodeIdConflict']);
    const quiet = alertRules().filter((a) => !expected.has(a.alert));
    let last: string[] = [];
    await waitFor('every other alert expression empty', async () => {
      last = [];
      for (const a of quiet) {
        const r = await q(a.expr);
        if (r.length > 0) last.push(`${a.alert}: ${JSON.stringify(r)}`);
      }
      return last.length === 0;
    }, 60_000, 1_000).catch((err: unknown) => {
      throw new Error(`${String(err)}\n${last.join('\n')}`);
    });
  });

  it('runs every dashboard query without error, with data where the fleet has some', async () => {
    const d = loadDashboard();
    const vars = { node: `${nodeA}|${nodeB}`, workload: '.*', rateInterval: '1m' };
    // Nothing fires yet (the for: durations are minutes) and nothing fails: those may be empty.
    const mayBeEmpty = new Set(['Firing alerts', 'Errors by code']);
    const queries = dashboardQueries(d, vars);
    assert.ok(queries.length >= 20, `queries: ${queries.length}`);
    let empty: string[] = [];
    await waitFor('data in every panel that should have some', async () => {
      empty = [];
      for (const { panel, refId, expr } of queries) {
        const r = await q(expr);
        if (r.length === 0 && !mayBeEmpty.has(panel)) empty.push(`${panel}/${refId}: ${expr}`);
      }
      return empty.length === 0;
    }, 60_000, 2_000).catch((err: unknown) => {
      throw new Error(`${String(err)}\n${empty.join('\n')}`);
    });
    const workloads = await q(queries.find((x) => x.panel === 'Workloads not Running, Stopped or Completed')!.expr);
    assert.deepEqual(workloads.map((s) => `${s.metric.node_id} ${s.metric.workload_id} ${s.metric.phase}`).sort(), [`${nodeA} crash CrashLoop`, `${nodeB} crash CrashLoop`].sort());
    const memory = await q(queries.find((x) => x.panel === 'Workload memory')!.expr);
    assert.ok(memory.some((s) => s.metric.node_id === nodeA && s.metric.workload_id === 'web' && Number(s.value[1]) > 0), JSON.stringify(memory));

    // The variables: label_values() through the label-values API, as Grafana asks it.
    for (const v of d.templating.list.filter((x) => x.type === 'query')) {
      const { selector, label } = labelValuesQuery(v);
      const res = await httpGet(`${prom!.url}/api/v1/label/${label}/values?match[]=${encodeURIComponent(selector)}`);
      const values = (JSON.parse(res.body) as { data: string[] }).data;
      const want = v.name === 'node' ? [nodeA, nodeB] : ['crash', 'web'];
      for (const w of want) assert.ok(values.includes(w), `variable ${v.name}: ${w} in ${JSON.stringify(values)}`);
    }
  });

  it('push mode: an agent that stops pushing becomes PersysAgentPushStale through push_time_seconds', async () => {
    await agentB!.stop('SIGTERM');
    const r = await untilAlertExpr('PersysAgentPushStale');
    assert.deepEqual(r.map((s) => [s.metric.node_id, s.metric.instance]), [[nodeB, nodeB]]);
    assert.ok(Number(r[0]?.value[1]) > 6, `age ${r[0]?.value[1]} s is over 3 push intervals`);
  });

  it('scrape mode: an agent that stops is PersysAgentDown, with the node id it last reported', async () => {
    await agentC!.stop('SIGTERM');
    const r = await untilAlertExpr('PersysAgentDown');
    assert.deepEqual(r.map((s) => [s.metric.instance, s.metric.node_id]), [[instC(), nodeA]]);
  });
});
