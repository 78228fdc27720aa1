import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

import type { WorkloadUsage } from '../runtimes/runtime.js';
import { WORKLOAD_TYPES } from '../spec/desired-state.js';
import { PHASES } from '../spec/status-report.js';
import { CPU_MODES, type HostCollector } from './host.js';
import { registerWorkloadStateMetrics, type DesiredWorkloadView, type WorkloadStateView } from './workload-state.js';

/**
 * What the scrape-time collectors read. Every source is in memory (the store, counters kept by the
 * reporter, the caches of the stats collector and the host collector): a scrape never calls an engine.
 */
export interface MetricsSources {
  /** ISO time of the last successful pull (200 or 304), or null. */
  lastPullSuccessAt?: () => string | null;
  /** Generation of the desired state in force, or null. */
  desiredGeneration?: () => number | null;
  /** One entry per workload record. */
  workloadPhases?: () => Iterable<WorkloadStateView>;
  /** The workloads of the desired state in force (for persys_desired_state_applied_generation). */
  desiredWorkloads?: () => readonly DesiredWorkloadView[];
  /** `writable`: the last state-file write succeeded. */
  store?: () => { writes: number; writeErrors: number; lastWriteMs: number; writable?: boolean };
  statusReports?: () => { ok: number; error: number };
  runtimeHealth?: () => Iterable<[string, { up: boolean }]>;
  /** The stats collector's cache. */
  workloadUsage?: () => Iterable<WorkloadUsage>;
  workloadStatsCollections?: () => Iterable<[string, { ok: number; error: number; lastDurationSeconds: number }]>;
  host?: HostCollector;
}

export interface AgentMetricsInfo {
  nodeId: string;
  version: string;
  hostname?: string;
  /** persys_node_info's host_id label (src/metrics/host-id.ts); '' when not given. */
  hostId?: string;
  /** Configured intervals by setting name (e.g. "source.pollIntervalSeconds"), for alert thresholds. */
  intervals?: Record<string, number>;
}

/** Pull and push durations: from a fast 304 to a long-poll held for minutes. */
const PULL_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];
const RECONCILE_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

const NON_COUNTER_TOTALS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

type UsageKey = Exclude<keyof WorkloadUsage, 'workloadId' | 'type' | 'runtimeId'>;

/**
 * The agent's metrics. One registry per agent (not prom-client's global one) so tests can run
 * several agents in one process. Names follow the Prometheus conventions: `persys_` prefix, base
 * units, `_total` counters, `_seconds` durations; the node id is carried by persys_node_info (and by
 * the push grouping key), never by a label on every series. Node's default process metrics
 * (process_*, nodejs_*) are included unprefixed, as every Node exporter has them.
 */
export function createAgentMetrics(info: AgentMetricsInfo, sources: MetricsSources = {}) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  // prom-client names these gauges *_total, which the conventions (and promtool) keep for counters;
  // the same numbers are in nodejs_active_{handles,requests,resources} by type.
  for (const name of NON_COUNTER_TOTALS) registry.removeSingleMetric(name);
  const registers = [registry];

  new Gauge({
    name: 'persys_node_info',
    help: 'Constant 1, labelled with the node id, host name and host_id (a hash that differs between hosts, boots and state dirs) of this agent.',
    labelNames: ['node_id', 'hostname', 'host_id'],
    registers,
  }).set({ node_id: info.nodeId, hostname: info.hostname ?? '', host_id: info.hostId ?? '' }, 1);
  const intervals = new Gauge({
    name: 'persys_config_interval_seconds',
    help: 'Configured intervals of the agent by setting (source.pollIntervalSeconds, status.heartbeatSeconds, ...), for alert thresholds.',
    labelNames: ['setting'],
    registers,
  });
  for (const [setting, seconds] of Object.entries(info.intervals ?? {})) intervals.set({ setting }, seconds);
  new Gauge({
    name: 'persys_build_info',
    help: 'Constant 1, labelled with the agent version and the Node.js version it runs on.',
    labelNames: ['version', 'node_version'],
    registers,
  }).set({ version: info.version, node_version: process.version }, 1);

  // --- agent: sync ------------------------------------------------------------------------------
  const pulls = new Counter({
    name: 'persys_desired_state_pulls_total',
    help: 'Desired-state pulls by result: 200 (new document), 304 (unchanged) or error.',
    labelNames: ['result'],
    registers,
  });
  for (const result of ['200', '304', 'error']) pulls.inc({ result }, 0);
  const pullDuration = new Histogram({
    name: 'persys_desired_state_pull_duration_seconds',
    help: 'Duration of a desired-state pull, including a long-poll hold.',
    buckets: PULL_BUCKETS,
    registers,
  });
  const desiredGeneration = new Gauge({
    name: 'persys_desired_state_generation',
    help: 'Generation of the desired state in force (0 before the first one).',
    registers,
    collect() {
      const g = sources.desiredGeneration?.();
      this.set(g ?? 0);
    },
  });
  new Gauge({
    name: 'persys_desired_state_seconds_since_last_success',
    help: 'Seconds since the last successful desired-state pull (200 or 304); +Inf before the first.',
    registers,
    collect() {
      const last = sources.lastPullSuccessAt?.() ?? null;
      const t = last === null ? Number.NaN : Date.parse(last);
      this.set(Number.isFinite(t) ? Math.max(0, (Date.now() - t) / 1000) : Number.POSITIVE_INFINITY);
    },
  });
  const statusReports = new Counter({
    name: 'persys_status_reports_total',
    help: 'Status reports by result: ok (accepted) or error (not delivered, retried with the newest snapshot).',
    labelNames: ['result'],
    registers,
    collect() {
      const s = sources.statusReports?.() ?? { ok: 0, error: 0 };
      this.reset();
      this.inc({ result: 'ok' }, s.ok);
      this.inc({ result: 'error' }, s.error);
    },
  });

  // --- agent: reconcile ---------------------------------------------------------------------------
  const reconcileRuns = new Counter({ name: 'persys_reconcile_runs_total', help: 'Reconcile cycles run.', registers });
  const reconcileDuration = new Histogram({
    name: 'persys_reconcile_duration_seconds',
    help: 'Duration of a reconcile cycle (observe, plan, execute).',
    buckets: RECONCILE_BUCKETS,
    registers,
  });
  const steps = new Counter({
    name: 'persys_reconcile_steps_total',
    help: 'Reconcile steps executed, by kind (create, recreate, start, stop, remove, ...) and result (ok or error).',
    labelNames: ['kind', 'result'],
    registers,
  });
  const errors = new Counter({
    name: 'persys_errors_total',
    help: 'Errors by code (src/errors): failed workload steps and failed desired-state pulls.',
    labelNames: ['code'],
    registers,
  });

  // --- agent: store -------------------------------------------------------------------------------
  new Gauge({
    name: 'persys_store_last_write_duration_seconds',
    help: 'Duration of the last completed state-file write (serialise, write, fsync, rename).',
    registers,
    collect() {
      this.set((sources.store?.().lastWriteMs ?? 0) / 1000);
    },
  });
  // Only for a store that says (an unlabelled gauge without a value would still be exposed as 0).
  if (typeof sources.store?.().writable === 'boolean') {
    new Gauge({
      name: 'persys_store_writable',
      help: '1 when the last state-file write succeeded, 0 while writes fail (they are retried with backoff).',
      registers,
      collect() {
        this.set(sources.store?.().writable === false ? 0 : 1);
      },
    });
  }
  const storeWriteDuration = new Histogram({
    name: 'persys_store_write_duration_seconds',
    help: 'Duration of state-file writes (serialise, write, fsync, rename).',
    buckets: [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 2],
    registers,
  });
  new Counter({
    name: 'persys_store_writes_total',
    help: 'State-file writes by result (ok, or error: retried with backoff).',
    labelNames: ['result'],
    registers,
    collect() {
      const s = sources.store?.() ?? { writes: 0, writeErrors: 0 };
      this.reset();
      this.inc({ result: 'ok' }, s.writes);
      this.inc({ result: 'error' }, s.writeErrors);
    },
  });

  // --- runtimes and workloads ----------------------------------------------------------------------
  const runtimeUp = new Gauge({
    name: 'persys_runtime_up',
    help: '1 when the runtime (docker, libvirt) answered its last health check, else 0.',
    labelNames: ['runtime'],
    registers,
    collect() {
      this.reset();
      for (const [runtime, h] of sources.runtimeHealth?.() ?? []) this.set({ runtime }, h.up ? 1 : 0);
    },
  });
  new Gauge({
    name: 'persys_workloads',
    help: 'Workloads the agent keeps a record of, by type and phase.',
    labelNames: ['type', 'phase'],
    registers,
    collect() {
      this.reset();
      for (const type of WORKLOAD_TYPES) for (const phase of PHASES) this.set({ type, phase }, 0);
      for (const r of sources.workloadPhases?.() ?? []) this.inc({ type: r.type, phase: r.phase });
    },
  });

  registerWorkloadStateMetrics(registry, {
    records: sources.workloadPhases,
    desiredGeneration: sources.desiredGeneration,
    desiredWorkloads: sources.desiredWorkloads,
  });

  const usageCounter = (name: string, help: string, key: UsageKey) =>
    new Counter({
      name,
      help,
      labelNames: ['workload_id', 'type'],
      registers,
      collect() {
        this.reset();
        for (const u of sources.workloadUsage?.() ?? []) {
          const v = u[key];
          if (v !== undefined) this.inc({ workload_id: u.workloadId, type: u.type }, v);
        }
      },
    });
  usageCounter('persys_workload_cpu_seconds_total', 'CPU time used by the workload, seconds (from Docker stats / libvirt domstats).', 'cpuSeconds');
  new Gauge({
    name: 'persys_workload_memory_bytes',
    help: 'Memory the workload uses now, bytes (working set: reclaimable file cache not counted).',
    labelNames: ['workload_id', 'type'],
    registers,
    collect() {
      this.reset();
      for (const u of sources.workloadUsage?.() ?? []) {
        if (u.memoryBytes !== undefined) this.set({ workload_id: u.workloadId, type: u.type }, u.memoryBytes);
      }
    },
  });
  usageCounter('persys_workload_network_receive_bytes_total', 'Bytes the workload received over its network interfaces.', 'networkReceiveBytes');
  usageCounter('persys_workload_network_transmit_bytes_total', 'Bytes the workload sent over its network interfaces.', 'networkTransmitBytes');
  usageCounter('persys_workload_block_read_bytes_total', 'Bytes the workload read from block devices.', 'blockReadBytes');
  usageCounter('persys_workload_block_write_bytes_total', 'Bytes the workload wrote to block devices.', 'blockWriteBytes');
  usageCounter('persys_workload_restarts_total', 'Restarts of the workload done by the engine (restart policy).', 'restarts');
  new Counter({
    name: 'persys_workload_stats_collections_total',
    help: 'Passes of the per-workload usage collector by runtime and result.',
    labelNames: ['runtime', 'result'],
    registers,
    collect() {
      this.reset();
      for (const [runtime, c] of sources.workloadStatsCollections?.() ?? []) {
        this.inc({ runtime, result: 'ok' }, c.ok);
        this.inc({ runtime, result: 'error' }, c.error);
      }
    },
  });
  new Gauge({
    name: 'persys_workload_stats_collection_duration_seconds',
    help: 'Duration of the last per-workload usage pass, by runtime.',
    labelNames: ['runtime'],
    registers,
    collect() {
      this.reset();
      for (const [runtime, c] of sources.workloadStatsCollections?.() ?? []) this.set({ runtime }, c.lastDurationSeconds);
    },
  });

  // --- metrics push ------------------------------------------------------------------------------
  const pushes = new Counter({
    name: 'persys_metrics_pushes_total',
    help: 'Pushes to the Pushgateway by result (ok or error; errors back off).',
    labelNames: ['result'],
    registers,
  });

  // --- host ----------------------------------------------------------------------------------------
  if (sources.host) registerHostMetrics(registry, sources.host);

  return {
    registry,
    pulls,
    pullDuration,
    desiredGeneration,
    reconcileRuns,
    reconcileDuration,
    storeWriteDuration,
    steps,
    errors,
    statusReports,
    runtimeUp,
    pushes,
  };
}

/** node_exporter-like host metrics under persys_host_*, all from one HostCollector snapshot per scrape. */
function registerHostMetrics(registry: Registry, host: HostCollector): void {
  const registers = [registry];
  new Counter({
    name: 'persys_host_cpu_seconds_total',
    help: 'Seconds the host CPUs spent in each mode, summed over CPUs (/proc/stat).',
    labelNames: ['mode'],
    registers,
    async collect() {
      const s = await host.snapshot();
      this.reset();
      for (const mode of CPU_MODES) {
        const v = s.cpuSeconds[mode];
        if (v !== undefined) this.inc({ mode }, v);
      }
    },
  });
  const gauge = (name: string, help: string, read: (s: Awaited<ReturnType<HostCollector['snapshot']>>) => number | undefined) =>
    new Gauge({
      name,
      help,
      registers,
      async collect() {
        const v = read(await host.snapshot());
        if (v === undefined) this.reset();
        else this.set(v);
      },
    });
  gauge('persys_host_memory_total_bytes', 'Total usable memory of the host, bytes (MemTotal).', (s) => s.memoryTotalBytes);
  gauge('persys_host_memory_available_bytes', 'Memory available for new work without swapping, bytes (MemAvailable).', (s) => s.memoryAvailableBytes);
  gauge('persys_host_load1', 'Host load average over 1 minute.', (s) => s.load[0]);
  gauge('persys_host_load5', 'Host load average over 5 minutes.', (s) => s.load[1]);
  gauge('persys_host_load15', 'Host load average over 15 minutes.', (s) => s.load[2]);
  gauge('persys_host_boot_time_seconds', 'Host boot time, seconds since the Unix epoch.', (s) => s.bootTimeSeconds);

  const netCounter = (name: string, help: string, key: 'receiveBytes' | 'transmitBytes') =>
    new Counter({
      name,
      help,
      labelNames: ['device'],
      registers,
      async collect() {
        const s = await host.snapshot();
        this.reset();
        for (const n of s.network) this.inc({ device: n.device }, n[key]);
      },
    });
  netCounter('persys_host_network_receive_bytes_total', 'Bytes received per network interface (/proc/net/dev; container veths left out).', 'receiveBytes');
  netCounter('persys_host_network_transmit_bytes_total', 'Bytes sent per network interface (/proc/net/dev; container veths left out).', 'transmitBytes');

  const fsGauge = (name: string, help: string, key: 'sizeBytes' | 'freeBytes' | 'availBytes') =>
    new Gauge({
      name,
      help,
      labelNames: ['purpose', 'path'],
      registers,
      async collect() {
        const s = await host.snapshot();
        this.reset();
        for (const f of s.filesystems) this.set({ purpose: f.purpose, path: f.path }, f[key]);
      },
    });
  fsGauge('persys_host_filesystem_size_bytes', 'Size of the file system holding a path the agent uses (purpose: state, docker), bytes.', 'sizeBytes');
  fsGauge('persys_host_filesystem_free_bytes', 'Free space of that file system, bytes.', 'freeBytes');
  fsGauge('persys_host_filesystem_avail_bytes', 'Space of that file system available to unprivileged users, bytes.', 'availBytes');
}

export type AgentMetrics = ReturnType<typeof createAgentMetrics>;
