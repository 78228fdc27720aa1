/**
 * Host metrics in the spirit of node_exporter, read from /proc and statfs(2): CPU seconds by mode,
 * memory total/available, load averages, network bytes per interface, boot time, and size/free of
 * the file systems the agent cares about (its state dir, the Docker root). Local files and one
 * syscall per file system: no engine is ever asked.
 */
import { promises as fsp } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';

/** Linux reports /proc/stat times in USER_HZ, which the kernel ABI fixes at 100 on every common architecture. */
export const USER_HZ = 100;

export const CPU_MODES = ['user', 'nice', 'system', 'idle', 'iowait', 'irq', 'softirq', 'steal'] as const;
export type CpuMode = (typeof CPU_MODES)[number];

/**
 * Interfaces left out of the per-interface network metrics: the host end of each container's veth
 * pair. They come and go with containers (unbounded label churn) and their traffic is already in
 * the per-workload network metrics.
 */
export const DEFAULT_NETDEV_EXCLUDE = /^veth/;

export interface NetDevCounters {
  device: string;
  receiveBytes: number;
  transmitBytes: number;
}

export interface FilesystemUsage {
  /** Why the agent watches it: "state", "docker", ... */
  purpose: string;
  path: string;
  sizeBytes: number;
  freeBytes: number;
  /** Free for unprivileged users (what a workload can still fill). */
  availBytes: number;
}

export interface HostSnapshot {
  cpuSeconds: Partial<Record<CpuMode, number>>;
  bootTimeSeconds: number | undefined;
  memoryTotalBytes: number | undefined;
  memoryAvailableBytes: number | undefined;
  load: [number, number, number];
  network: NetDevCounters[];
  filesystems: FilesystemUsage[];
}

/** The aggregate `cpu` line and `btime` of /proc/stat. */
export function parseProcStat(text: string): { cpuSeconds: Partial<Record<CpuMode, number>>; bootTimeSeconds: number | undefined } {
  const cpuSeconds: Partial<Record<CpuMode, number>> = {};
  let bootTimeSeconds: number | undefined;
  for (const line of text.split('\n')) {
    if (line.startsWith('cpu ')) {
      const fields = line.trim().split(/\s+/).slice(1).map(Number);
      CPU_MODES.forEach((mode, i) => {
        const v = fields[i];
        if (v !== undefined && Number.isFinite(v)) cpuSeconds[mode] = v / USER_HZ;
      });
      // Guest time is already counted in user/nice; node_exporter does not add it either.
    } else if (line.startsWith('btime ')) {
      const v = Number(line.slice(6).trim());
      if (Number.isFinite(v)) bootTimeSeconds = v;
    }
  }
  return { cpuSeconds, bootTimeSeconds };
}

/** MemTotal and MemAvailable of /proc/meminfo, in bytes (the file says kB, meaning KiB). */
export function parseMeminfo(text: string): { totalBytes: number | undefined; availableBytes: number | undefined } {
  const kib = (key: string): number | undefined => {
    const m = new RegExp(`^${key}:\\s+(\\d+)\\s*kB`, 'm').exec(text);
    return m?.[1] === undefined ? undefined : Number(m[1]) * 1024;
  };
  return { totalBytes: kib('MemTotal'), availableBytes: kib('MemAvailable') };
}

/** Receive and transmit bytes per interface from /proc/net/dev. */
export function parseNetDev(text: string, exclude: RegExp = DEFAULT_NETDEV_EXCLUDE): NetDevCounters[] {
  const out: NetDevCounters[] = [];
  for (const line of text.split('\n').slice(2)) {
    const colon = line.indexOf(':');
    if (colon === -1) continue;
    const device = line.slice(0, colon).trim();
    if (device === '' || exclude.test(device)) continue;
    const f = line.slice(colon + 1).trim().split(/\s+/).map(Number);
    // Receive: bytes packets errs drop fifo frame compressed multicast; transmit: bytes ...
    const rx = f[0];
    const tx = f[8];
    if (rx === undefined || tx === undefined || !Number.isFinite(rx) || !Number.isFinite(tx)) continue;
    out.push({ device, receiveBytes: rx, transmitBytes: tx });
  }
  return out;
}

export interface HostCollectorOptions {
  /** Default /proc; tests point it at fixtures. */
  procRoot?: string;
  /** File systems to report, asked at each snapshot (the Docker root is only known once Docker answered). */
  filesystems?: () => { purpose: string; path: string }[];
  netdevExclude?: RegExp;
  /** A snapshot younger than this is reused: one scrape reads /proc once for all host metrics. */
  maxAgeMs?: number;
}

/** Reads a HostSnapshot; concurrent callers within maxAgeMs share one read. Never throws: what cannot be read is left out. */
export class HostCollector {
  private readonly procRoot: string;
  private readonly maxAgeMs: number;
  private cached: { at: number; value: Promise<HostSnapshot> } | null = null;

  constructor(private readonly opts: HostCollectorOptions = {}) {
    this.procRoot = opts.procRoot ?? '/proc';
    this.maxAgeMs = opts.maxAgeMs ?? 1000;
  }

  /** Forgets the cached snapshot: the next snapshot() reads /proc again (benchmarks, tests). */
  invalidate(): void {
    this.cached = null;
  }

  snapshot(): Promise<HostSnapshot> {
    const now = Date.now();
    if (this.cached && now - this.cached.at < this.maxAgeMs) return this.cached.value;
    const value = this.read();
    this.cached = { at: now, value };
    return value;
  }

  private async readText(rel: string): Promise<string | undefined> {
    try {
      return await fsp.readFile(join(this.procRoot, rel), 'utf8');
    } catch {
      return undefined;
    }
  }

  private async read(): Promise<HostSnapshot> {
    const [stat, meminfo, netdev, filesystems] = await Promise.all([
      this.readText('stat'),
      this.readText('meminfo'),
      this.readText('net/dev'),
      this.readFilesystems(),
    ]);
    const { cpuSeconds, bootTimeSeconds } = stat ? parseProcStat(stat) : { cpuSeconds: {}, bootTimeSeconds: undefined };
    const mem = meminfo ? parseMeminfo(meminfo) : { totalBytes: undefined, availableBytes: undefined };
    const [l1, l5, l15] = loadavg();
    return {
      cpuSeconds,
      bootTimeSeconds,
      memoryTotalBytes: mem.totalBytes,
      memoryAvailableBytes: mem.availableBytes,
      load: [l1 ?? 0, l5 ?? 0, l15 ?? 0],
      network: netdev ? parseNetDev(netdev, this.opts.netdevExclude) : [],
      filesystems,
    };
  }

  private async readFilesystems(): Promise<FilesystemUsage[]> {
    const wanted = this.opts.filesystems?.() ?? [];
    const seen = new Set<string>();
    const results = await Promise.all(
      wanted.map(async ({ purpose, path }): Promise<FilesystemUsage | undefined> => {
        const key = `${purpose}\0${path}`;
        if (seen.has(key)) return undefined;
        seen.add(key);
        try {
          const s = await fsp.statfs(path);
          return { purpose, path, sizeBytes: s.blocks * s.bsize, freeBytes: s.bfree * s.bsize, availBytes: s.bavail * s.bsize };
        } catch {
          // Not there (yet) or not readable by this user: left out rather than reported as 0.
          return undefined;
        }
      }),
    );
    return results.filter((r): r is FilesystemUsage => r !== undefined);
  }
}
