import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { silentLogger } from '../../src/log.js';
import { HostCollector } from '../../src/metrics/host.js';
import { createAgentMetrics, type MetricsSources } from '../../src/metrics/registry.js';
import { RuntimeHealthBoard, WorkloadStatsCollector } from '../../src/metrics/workload-stats.js';
import type { Runtime, RuntimeHealth, WorkloadUsage } from '../../src/runtimes/runtime.js';
import { containerType } from '../../src/runtimes/docker/type.js';

interface Family {
  name: string;
  type: string;
  help: string;
  samples: { name: string; labels: Record<string, string>; value: string }[];
}

/** A small parser of the text exposition format, enough to check conventions. */
function parseExposition(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  let current: Family | undefined;
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const help = /^# HELP (\S+) (.*)$/.exec(line);
    if (help) {
      current = { name: help[1]!, type: '', help: help[2]!, samples: [] };
      families.set(current.name, current);
      continue;
    }
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) {
      assert.equal(type[1], current?.name, `TYPE follows HELP for ${type[1]}`);
      current!.type = type[2]!;
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `sample line parses: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    current!.samples.push({ name: m[1]!, labels, value: m[3]! });
  }
  return families;
}

const usage = (id: string, extra: Partial<WorkloadUsage> = {}): WorkloadUsage => ({
  workloadId: id,
  type: 'container',
  runtimeId: `c-${id}`,
  cpuSeconds: 1.5,
  memoryBytes: 1024,
  networkReceiveBytes: 10,
  networkTransmitBytes: 20,
  blockReadBytes: 30,
  blockWriteBytes: 40,
  restarts: 2,
  ...extra,
});

/** A runtime that records every method call: the proof that a scrape reaches no engine. */
function spyRuntime(workloads: number): { runtime: Runtime; calls: string[] } {
  const calls: string[] = [];
  const health: RuntimeHealth = { up: true, reason: 'fake', dataRoot: '/' };
  const impl: Partial<Runtime> = {
    name: 'docker',
    types: [containerType],
    health: () => Promise.resolve(health),
    observe: () => Promise.resolve([]),
    usage: () => Promise.resolve(Array.from({ length: workloads }, (_, i) => usage(`w${i}`))),
    events: () => Promise.resolve(),
  };
  const runtime = new Proxy(impl, {
    get(target, prop, receiver) {
      const v: unknown = Reflect.get(target, prop, receiver);
      if (typeof v !== 'function') return v;
      return (...args: unknown[]) => {
        calls.push(String(prop));
        return (v as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  }) as Runtime;
  return { runtime, calls };
}

const SOURCES: MetricsSources = {
  lastPullSuccessAt: () => new Date(Date.now() - 5_000).toISOString(),
  desiredGeneration: () => 42,
  workloadPhases: () => [
    { type: 'container', phase: 'Running' },
    { type: 'container', phase: 'Running' },
    { type: 'vm', phase: 'Failed' },
  ],
  store: () => ({ writes: 7, writeErrors: 1, lastWriteMs: 2.5 }),
  statusReports: () => ({ ok: 3, error: 4 }),
  runtimeHealth: () => [
    ['docker', { up: true }],
    ['libvirt', { up: false }],
  ],
  workloadUsage: () => [usage('web'), usage('db', { memoryBytes: undefined, networkReceiveBytes: undefined, networkTransmitBytes: undefined })],
  workloadStatsCollections: () => [['docker', { ok: 5, error: 1, lastDurationSeconds: 0.25 }]],
  host: new HostCollector({ filesystems: () => [{ purpose: 'state', path: '/' }] }),
};

describe('agent metrics registry', () => {
  it('follows the Prometheus naming conventions on every metric', async () => {
    const m = createAgentMetrics({ nodeId: 'edge-7', version: '1.2.3', hostname: 'h' }, SOURCES);
    m.pullDuration.observe(0.2);
    m.reconcileDuration.observe(0.01);
    const families = parseExposition(await m.registry.metrics());
    assert.ok(families.size > 40, `families: ${families.size}`);
    for (const f of families.values()) {
      assert.ok(f.help.trim().length > 0, `${f.name} has help text`);
      assert.match(f.name, /^(persys|process|nodejs)_/, `${f.name} is prefixed`);
      assert.ok(['counter', 'gauge', 'histogram', 'summary'].includes(f.type), `${f.name} has a type`);
      if (f.type === 'counter') assert.match(f.name, /_total$/, `counter ${f.name} ends in _total`);
      else assert.doesNotMatch(f.name, /_total$/, `${f.type} ${f.name} does not end in _total`);
      if (f.type === 'histogram' && f.name.startsWith('persys_')) assert.match(f.name, /_seconds$/, `${f.name} is in seconds`);
      assert.doesNotMatch(f.name, /_(ms|milliseconds|kb|mb|kilobytes|megabytes|percent)(_|$)/, `${f.name} uses base units`);
      for (const s of f.samples) {
        if (f.name !== 'persys_node_info') assert.equal(s.labels.node_id, undefined, `${s.name} carries no node_id`);
      }
    }
    const info = families.get('persys_node_info')!;
    assert.deepEqual(info.samples[0]?.labels, { node_id: 'edge-7', hostname: 'h', host_id: '' });
    assert.equal(families.get('persys_build_info')!.samples[0]?.labels.version, '1.2.3');
  });

  it('exposes agent, workload, runtime and host series from the sources', async () => {
    const m = createAgentMetrics({ nodeId: 'edge-7', version: '1.2.3' }, SOURCES);
    m.pulls.inc({ result: '304' });
    m.steps.inc({ kind: 'create', result: 'ok' });
    m.errors.inc({ code: 'IMAGE_PULL_FAILED' });
    const f = parseExposition(await m.registry.metrics());
    const value = (name: string, labels: Record<string, string> = {}) =>
      f.get(name)?.samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;

    assert.equal(value('persys_desired_state_pulls_total', { result: '304' }), '1');
    assert.equal(value('persys_desired_state_pulls_total', { result: '200' }), '0', 'every result exists from the start');
    assert.equal(value('persys_desired_state_generation'), '42');
    const age = Number(value('persys_desired_state_seconds_since_last_success'));
    assert.ok(age >= 5 && age < 60, String(age));
    assert.equal(value('persys_reconcile_steps_total', { kind: 'create', result: 'ok' }), '1');
    assert.equal(value('persys_errors_total', { code: 'IMAGE_PULL_FAILED' }), '1');
    assert.equal(value('persys_status_reports_total', { result: 'error' }), '4');
    assert.equal(value('persys_store_writes_total', { result: 'ok' }), '7');
    assert.equal(value('persys_store_last_write_duration_seconds'), '0.0025');
    assert.equal(value('persys_runtime_up', { runtime: 'docker' }), '1');
    assert.equal(value('persys_runtime_up', { runtime: 'libvirt' }), '0');
    assert.equal(value('persys_workloads', { type: 'container', phase: 'Running' }), '2');
    assert.equal(value('persys_workloads', { type: 'vm', phase: 'Failed' }), '1');
    assert.equal(value('persys_workloads', { type: 'compose', phase: 'Running' }), '0', 'every type and phase is there');

    assert.equal(value('persys_workload_cpu_seconds_total', { workload_id: 'web', type: 'container' }), '1.5');
    assert.equal(value('persys_workload_memory_bytes', { workload_id: 'web' }), '1024');
    assert.equal(value('persys_workload_memory_bytes', { workload_id: 'db' }), undefined, 'an unreported field is left out');
    assert.equal(value('persys_workload_network_receive_bytes_total', { workload_id: 'web' }), '10');
    assert.equal(value('persys_workload_block_write_bytes_total', { workload_id: 'db' }), '40');
    assert.equal(value('persys_workload_restarts_total', { workload_id: 'db' }), '2');
    assert.equal(value('persys_workload_stats_collections_total', { runtime: 'docker', result: 'ok' }), '5');

    assert.ok(Number(value('persys_host_cpu_seconds_total', { mode: 'idle' })) > 0);
    assert.ok(Number(value('persys_host_memory_total_bytes')) > 0);
    assert.ok(Number(value('persys_host_filesystem_size_bytes', { purpose: 'state', path: '/' })) > 0);
    assert.ok(value('persys_host_load1') !== undefined);
    assert.ok(Number(value('persys_host_boot_time_seconds')) > 1e9);
    assert.ok(value('process_resident_memory_bytes') !== undefined, 'default process metrics');
  });

  it('records every store write in the write-duration histogram', async () => {
    const m = createAgentMetrics({ nodeId: 'n', version: 'v' }, {});
    m.storeWriteDuration.observe(0.004);
    m.storeWriteDuration.observe(0.03);
    const text = await m.registry.metrics();
    assert.match(text, /persys_store_write_duration_seconds_count 2/);
    assert.match(text, /persys_store_write_duration_seconds_bucket\{le="0.005"\} 1/);
  });

  it('says +Inf seconds since the last successful pull before the first one', async () => {
    const m = createAgentMetrics({ nodeId: 'n', version: 'v' }, { lastPullSuccessAt: () => null });
    assert.match(await m.registry.metrics(), /^persys_desired_state_seconds_since_last_success \+Inf$/m);
  });

  it('drops the series of a workload that is gone', async () => {
    let list = [usage('a'), usage('b')];
    const m = createAgentMetrics({ nodeId: 'n', version: 'v' }, { workloadUsage: () => list });
    assert.match(await m.registry.metrics(), /workload_id="b"/);
    list = [usage('a')];
    assert.doesNotMatch(await m.registry.metrics(), /workload_id="b"/);
  });

  it('makes no engine call during a scrape: usage comes from the collector cache', async () => {
    const { runtime, calls } = spyRuntime(200);
    const board = new RuntimeHealthBoard();
    const stats = new WorkloadStatsCollector({ runtimes: [runtime], intervalSeconds: 3600, health: board, logger: silentLogger() });
    await stats.collectOnce(new AbortController().signal);
    assert.deepEqual(calls, ['health', 'usage'], 'the collector asks on its own interval');
    calls.length = 0;
    const m = createAgentMetrics(
      { nodeId: 'n', version: 'v' },
      { workloadUsage: () => stats.usage(), runtimeHealth: () => board.all(), workloadStatsCollections: () => stats.counts },
    );
    for (let i = 0; i < 5; i++) {
      const text = await m.registry.metrics();
      assert.equal(text.match(/^persys_workload_cpu_seconds_total\{/gm)?.length, 200);
    }
    assert.deepEqual(calls, [], 'scrapes called no runtime method');
  });
});
