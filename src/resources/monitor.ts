/**
 * The node's resources over time: samples capacity, usage, file systems and process ids from the
 * host on its own interval (resources.sampleIntervalSeconds), feeds the node conditions, and hands
 * admission its figures. Reads are local files and statfs(2): no engine is asked, a scrape or a
 * status report never waits on a read.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import { sleep } from '../util/backoff.js';
import type { ActivePressure, AdmissionSettings, ResourceFigures } from './admission.js';
import { readCpuMemory, readFilesystems, readPids, type FilesystemFacts, type PidFacts } from './capacity.js';
import { ConditionTracker, type ConditionType, type NodeCondition } from './conditions.js';

export type ResourceSettings = Pick<Config['resources'], 'reserved' | 'overcommit' | 'pressure' | 'sampleIntervalSeconds'>;

export interface NodeResourceSample {
  at: string;
  capacity: Required<Pick<ResourceFigures, 'cpus'>> & ResourceFigures;
  allocatable: ResourceFigures;
  usage: ResourceFigures;
  memoryAvailableBytes: number;
  filesystems: FilesystemFacts[];
  pids: PidFacts | undefined;
  /** Where CPU and memory capacity came from ("cgroup v1", "cgroup v2", "/proc"). */
  source: { cpus: string; memory: string };
}

export interface SampleInputs {
  settings: ResourceSettings;
  /** Root of /proc and /sys/fs/cgroup (tests: a fake tree). */
  root?: string;
  /** Paths whose file systems count, by role: "state" (nodefs, and the disk capacity), "imagefs" (a runtime's data root), "storage". */
  paths: readonly { role: string; path: string }[];
  /** CPU busy fraction since the previous sample (0..1), when known. */
  cpuBusy?: number | undefined;
}

/** One read of the host's figures; allocatable = capacity - reserved (never below 0). */
export async function sampleNodeResources(i: SampleInputs, now = new Date()): Promise<NodeResourceSample> {
  const root = i.root ?? '/';
  const [cm, filesystems, pids] = await Promise.all([readCpuMemory(root), readFilesystems(i.paths), readPids(root)]);
  const r = i.settings.reserved;
  const nodefs = filesystems.find((f) => f.role === 'state');
  const capacity: NodeResourceSample['capacity'] = { cpus: cm.cpus };
  const allocatable: ResourceFigures = { cpus: Math.max(0, round3(cm.cpus - r.cpus)) };
  const usage: ResourceFigures = {};
  // Memory that could not be read is unknown (admission does not check it), never 0 (which would refuse everything).
  if (cm.memoryBytes > 0) {
    capacity.memoryBytes = cm.memoryBytes;
    allocatable.memoryBytes = Math.max(0, cm.memoryBytes - r.memoryBytes);
    usage.memoryBytes = Math.max(0, cm.memoryBytes - cm.memoryAvailableBytes);
  }
  if (nodefs) {
    capacity.diskBytes = nodefs.sizeBytes;
    allocatable.diskBytes = Math.max(0, nodefs.sizeBytes - r.diskBytes);
  }
  if (i.cpuBusy !== undefined) usage.cpus = round3(i.cpuBusy * cm.cpus);
  if (nodefs) usage.diskBytes = Math.max(0, nodefs.sizeBytes - nodefs.availBytes);
  return { at: now.toISOString(), capacity, allocatable, usage, memoryAvailableBytes: cm.memoryAvailableBytes, filesystems, pids, source: cm.source };
}

const round3 = (n: number): number => Math.round(n * 1000) / 1000;

/** Busy and total jiffies of the aggregate cpu line of /proc/stat. */
export function parseCpuTimes(stat: string): { busy: number; total: number } | undefined {
  const line = stat.split('\n').find((l) => l.startsWith('cpu '));
  if (!line) return undefined;
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  if (f.length < 4 || f.some((n) => !Number.isFinite(n))) return undefined;
  // user nice system idle iowait irq softirq steal (guest is already in user)
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

export interface ResourceMonitorOptions {
  settings: ResourceSettings;
  requireRequests: boolean;
  stateDir: string;
  /** Further paths, asked at each sample (a runtime's data root is known once it answered; storage pools come with the document). */
  paths?: () => { role: string; path: string }[];
  root?: string;
  now?: () => number;
  logger?: Logger;
}

export type DiskPressureListener = (reason: string) => void;

export class ResourceMonitor {
  private readonly tracker: ConditionTracker;
  private readonly now: () => number;
  private last: NodeResourceSample | undefined;
  private lastCpu: { busy: number; total: number } | undefined;
  private readonly diskListeners = new Set<DiskPressureListener>();
  /** Samples taken (for tests and metrics). */
  samples = 0;

  constructor(private readonly opts: ResourceMonitorOptions) {
    this.tracker = new ConditionTracker(opts.settings.pressure);
    this.now = opts.now ?? Date.now;
  }

  /**
   * The hook for "GC runs at once under DiskPressure": called when DiskPressure turns on, with its
   * reason (the garbage collector wires its pass here). Returns a function that unsubscribes.
   */
  onDiskPressure(listener: DiskPressureListener): () => void {
    this.diskListeners.add(listener);
    return () => this.diskListeners.delete(listener);
  }

  private async cpuBusy(): Promise<number | undefined> {
    try {
      const t = parseCpuTimes(await readFile(join(this.opts.root ?? '/', 'proc/stat'), 'utf8'));
      const prev = this.lastCpu;
      this.lastCpu = t;
      if (!t || !prev || t.total <= prev.total) return undefined;
      return Math.min(1, Math.max(0, (t.busy - prev.busy) / (t.total - prev.total)));
    } catch {
      return undefined;
    }
  }

  /** Reads the host once and moves the conditions; returns the conditions that changed. */
  async sample(): Promise<ConditionType[]> {
    const paths = [{ role: 'state', path: this.opts.stateDir }, ...(this.opts.paths?.() ?? [])];
    const s = await sampleNodeResources({ settings: this.opts.settings, ...(this.opts.root ? { root: this.opts.root } : {}), paths, cpuBusy: await this.cpuBusy() }, new Date(this.now()));
    this.last = s;
    this.samples++;
    const changed = this.tracker.observe({ ...(s.capacity.memoryBytes !== undefined ? { memoryAvailableBytes: s.memoryAvailableBytes } : {}), filesystems: s.filesystems, pids: s.pids }, this.now());
    const log = this.opts.logger;
    for (const type of changed) {
      const c = this.tracker.conditions(this.now()).find((x) => x.type === type);
      if (!c) continue;
      if (c.status) log?.warn({ condition: type, reason: c.reason }, `node condition ${type} is on: ${c.reason}; new workloads are not admitted until it clears`);
      else log?.info({ condition: type }, `node condition ${type} cleared`);
      if (type === 'DiskPressure' && c.status) {
        for (const l of this.diskListeners) {
          try {
            l(c.reason);
          } catch (err) {
            log?.warn({ err: err instanceof Error ? err.message : String(err) }, 'a DiskPressure listener failed');
          }
        }
      }
    }
    return changed;
  }

  /** Samples every sampleIntervalSeconds until the signal aborts; calls onChange after a sample that moved a condition. */
  async run(signal: AbortSignal, onChange: (changed: ConditionType[]) => void): Promise<void> {
    while (!signal.aborted) {
      await sleep(this.opts.settings.sampleIntervalSeconds * 1000, signal);
      if (signal.aborted) return;
      try {
        const changed = await this.sample();
        if (changed.length > 0) onChange(changed);
      } catch (err) {
        this.opts.logger?.warn({ err: err instanceof Error ? err.message : String(err) }, 'could not read host resources');
      }
    }
  }

  latest(): NodeResourceSample | undefined {
    return this.last;
  }

  conditions(): NodeCondition[] {
    return this.tracker.conditions(this.now());
  }

  active(): ActivePressure[] {
    return this.tracker.active(this.now());
  }

  /** What the admission gate of a pass needs now. */
  admissionSettings(): AdmissionSettings {
    return {
      allocatable: this.last?.allocatable ?? {},
      overcommit: this.opts.settings.overcommit,
      requireRequests: this.opts.requireRequests,
      pressure: this.active(),
    };
  }
}
