/**
 * Cost of one GET /metrics of an agent running 200 workloads, through the real HTTP server with every
 * collector the agent registers (agent, workloads, runtimes, host from /proc and statfs, default
 * process metrics), and proof that scrapes make no engine calls: the runtime is wrapped in a spy that
 * counts every method call, and only the stats collector (on its own interval) ever calls it.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

import { silentLogger } from '../src/log.js';
import { HostCollector } from '../src/metrics/host.js';
import { createAgentMetrics } from '../src/metrics/registry.js';
import { startMetricsServer } from '../src/metrics/server.js';
import { RuntimeHealthBoard, WorkloadStatsCollector } from '../src/metrics/workload-stats.js';
import type { Runtime, RuntimeHealth, WorkloadUsage } from '../src/runtimes/runtime.js';
import { containerType } from '../src/runtimes/docker/type.js';

const WORKLOADS = 200;
const WARMUP = 20;
const ROUNDS = 200;

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? (s[mid] ?? 0) : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2;
};
const percentile = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? 0;
};
const round = (x: number, digits = 3) => Number(x.toFixed(digits));

function usageOf(i: number): WorkloadUsage {
  return {
    workloadId: `workload-${String(i).padStart(4, '0')}`,
    type: i % 10 === 0 ? 'vm' : 'container',
    runtimeId: `${(i * 7919).toString(16).padStart(12, '0')}${'ab'.repeat(26)}`,
    cpuSeconds: i * 12.345,
    memoryBytes: 64 * 1024 * 1024 + i,
    networkReceiveBytes: i * 1_000_003,
    networkTransmitBytes: i * 2_000_003,
    blockReadBytes: i * 4096,
    blockWriteBytes: i * 8192,
    restarts: i % 3,
  };
}

/** A runtime with WORKLOADS workloads whose every method call is counted. */
function spiedRuntime(): { runtime: Runtime; calls: () => number } {
  let calls = 0;
  const health: RuntimeHealth = { up: true, reason: 'bench', dataRoot: tmpdir() };
  const impl: Partial<Runtime> = {
    name: 'docker',
    types: [containerType],
    health: () => Promise.resolve(health),
    observe: () => Promise.resolve([]),
    usage: () => Promise.resolve(Array.from({ length: WORKLOADS }, (_, i) => usageOf(i))),
    events: () => Promise.resolve(),
  };
  const runtime = new Proxy(impl, {
    get(target, prop, receiver) {
      const v: unknown = Reflect.get(target, prop, receiver);
      if (typeof v !== 'function') return v;
      return (...args: unknown[]) => {
        calls += 1;
        return (v as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  }) as Runtime;
  return { runtime, calls: () => calls };
}

/**
 * name: what was measured; value: the figure; baseline: what it compares with.
 * - scrape_200_workloads_ms: median wall time of one HTTP GET /metrics (body read to the end);
 * - scrape_200_workloads_p95_ms;
 * - scrape_registry_only_ms: the same without HTTP (registry.metrics());
 * - scrape_body_bytes;
 * - scrape_engine_calls: runtime method calls during all timed scrapes (must be 0), against what a
 *   scrape that read Docker itself would cost (list + inspect + stats per container).
 */
export async function benchScrape(): Promise<{ name: string; value: number; unit: string; baseline?: { name: string; value: number } }[]> {
  const dir = await mkdtemp(join(tmpdir(), 'persys-bench-scrape-'));
  const { runtime, calls } = spiedRuntime();
  const board = new RuntimeHealthBoard();
  const stats = new WorkloadStatsCollector({ runtimes: [runtime], intervalSeconds: 3600, health: board, logger: silentLogger() });
  await stats.collectOnce(new AbortController().signal);

  // Records as the store holds them: each one also gives a persys_workload_phase and a
  // persys_workload_retry_attempts series, and the desired state is checked for the applied generation.
  const records = Array.from({ length: WORKLOADS }, (_, i) => ({
    id: usageOf(i).workloadId,
    type: i % 10 === 0 ? 'vm' : 'container',
    phase: i % 7 === 0 ? 'Failed' : 'Running',
    revision: 'r1',
    desiredState: 'running',
    retry: { attempts: i % 7 === 0 ? 10 : 0 },
  }));
  const desiredWorkloads = records.map((r) => ({ id: r.id, revision: r.revision, desiredState: r.desiredState }));
  const host = new HostCollector({
    filesystems: () => [
      { purpose: 'state', path: dir },
      { purpose: 'docker', path: board.get('docker')?.dataRoot ?? tmpdir() },
    ],
  });
  const m = createAgentMetrics(
    { nodeId: 'bench-node', version: 'bench', hostname: 'bench' },
    {
      lastPullSuccessAt: () => new Date().toISOString(),
      desiredGeneration: () => 7,
      desiredWorkloads: () => desiredWorkloads,
      workloadPhases: () => records,
      store: () => ({ writes: 100, writeErrors: 0, lastWriteMs: 3 }),
      statusReports: () => ({ ok: 50, error: 1 }),
      runtimeHealth: () => board.all(),
      workloadUsage: () => stats.usage(),
      workloadStatsCollections: () => stats.counts,
      host,
    },
  );
  for (let i = 0; i < 50; i++) m.reconcileDuration.observe(i / 100);
  const server = await startMetricsServer('127.0.0.1:0', { registry: m.registry, alive: () => true, ready: () => Promise.resolve({}), logger: silentLogger() });
  const url = `http://127.0.0.1:${server.port}/metrics`;

  try {
    const scrape = async () => {
      // As in production, where scrapes are seconds apart: every scrape reads /proc afresh.
      host.invalidate();
      const started = performance.now();
      const res = await fetch(url);
      const body = await res.text();
      return { ms: performance.now() - started, bytes: Buffer.byteLength(body) };
    };
    for (let i = 0; i < WARMUP; i++) await scrape();
    const callsBefore = calls();
    const times: number[] = [];
    let bytes = 0;
    for (let i = 0; i < ROUNDS; i++) {
      const r = await scrape();
      times.push(r.ms);
      bytes = r.bytes;
    }
    const registryTimes: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      host.invalidate();
      const started = performance.now();
      await m.registry.metrics();
      registryTimes.push(performance.now() - started);
    }
    const engineCalls = calls() - callsBefore;
    const workloadSeries = (await m.registry.metrics()).match(/^persys_workload_cpu_seconds_total\{/gm)?.length ?? 0;
    if (workloadSeries !== WORKLOADS) throw new Error(`expected ${WORKLOADS} workload series, got ${workloadSeries}`);

    return [
      { name: `scrape_${WORKLOADS}_workloads_ms`, value: round(median(times)), unit: 'ms' },
      { name: `scrape_${WORKLOADS}_workloads_p95_ms`, value: round(percentile(times, 95)), unit: 'ms' },
      { name: 'scrape_registry_only_ms', value: round(median(registryTimes)), unit: 'ms' },
      { name: 'scrape_body_bytes', value: bytes, unit: 'bytes' },
      {
        name: 'scrape_engine_calls',
        value: engineCalls,
        unit: `calls in ${2 * ROUNDS} scrapes`,
        baseline: { name: 'engine calls of one scrape that read Docker itself (list + inspect + stats per container)', value: 1 + 2 * WORKLOADS },
      },
    ];
  } finally {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  }
}
