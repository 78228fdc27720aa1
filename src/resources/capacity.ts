/**
 * Host capacity and usage from the host itself, never from an engine: CPUs and memory from the
 * cgroup the agent runs in (v1 or v2) when it is limited, else from /proc; process ids from
 * /proc/sys/kernel and /proc/loadavg (as the kubelet counts them); disk and inodes from statfs(2) of
 * the paths that matter. Every reader takes a root directory (default "/"), so unit tests hand it a
 * fake /proc and /sys/fs/cgroup tree.
 */
import { promises as fsp } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';

/** cgroup v1 writes "no limit" as a huge page-aligned number (2^63 - 4096 on x86-64); anything this big is unlimited. */
const UNLIMITED_BYTES = 2 ** 60;

export interface CgroupFacts {
  version: 1 | 2;
  /** Directory of the agent's cgroup in each controller that was read (for the record, and for tests). */
  paths: Record<string, string>;
  /** The smallest CPU quota on the way from the agent's cgroup to the root, in CPUs. */
  cpuQuota?: number;
  /** CPUs in the effective cpuset. */
  cpusetCpus?: number;
  memoryLimitBytes?: number;
  /** What the cgroup uses now, less inactive file pages (the kubelet's working set). */
  memoryWorkingSetBytes?: number;
}

export interface CpuMemory {
  cpus: number;
  memoryBytes: number;
  /** Memory available for new work: the cgroup's limit less its working set, or MemAvailable. */
  memoryAvailableBytes: number;
  /** Where the figures came from: "cgroup v1", "cgroup v2" or "/proc". */
  source: { cpus: string; memory: string };
}

export interface PidFacts {
  /** min(pid_max, threads-max), as the kubelet's pid.available uses. */
  max: number;
  /** Kernel scheduling entities now (threads), from /proc/loadavg. */
  running: number;
}

export interface FilesystemFacts {
  /** Why it is watched: "state" (nodefs), "imagefs" (a runtime's data root), "storage" (a storage pool). */
  role: string;
  path: string;
  sizeBytes: number;
  availBytes: number;
  inodes: number;
  inodesFree: number;
}

async function readText(path: string): Promise<string | undefined> {
  try {
    return await fsp.readFile(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** The CPUs of a cpuset list such as "0-3,8,10-11". */
export function countCpuList(list: string): number | undefined {
  const s = list.trim();
  if (s === '') return undefined;
  let n = 0;
  for (const part of s.split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) return undefined;
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    if (b < a) return undefined;
    n += b - a + 1;
  }
  return n;
}

/** Processors in /proc/cpuinfo, else the cpuN lines of /proc/stat. */
export async function readProcCpus(root = '/'): Promise<number | undefined> {
  const info = await readText(join(root, 'proc/cpuinfo'));
  const n = info ? (info.match(/^processor\s*:/gm) ?? []).length : 0;
  if (n > 0) return n;
  const stat = await readText(join(root, 'proc/stat'));
  const m = stat ? (stat.match(/^cpu\d+\s/gm) ?? []).length : 0;
  return m > 0 ? m : undefined;
}

/** MemTotal and MemAvailable of /proc/meminfo, bytes. */
export async function readProcMemory(root = '/'): Promise<{ totalBytes: number; availableBytes: number } | undefined> {
  const text = await readText(join(root, 'proc/meminfo'));
  if (!text) return undefined;
  const kib = (key: string): number | undefined => {
    const m = new RegExp(`^${key}:\\s+(\\d+)\\s*kB`, 'm').exec(text);
    return m?.[1] === undefined ? undefined : Number(m[1]) * 1024;
  };
  const totalBytes = kib('MemTotal');
  if (totalBytes === undefined) return undefined;
  // Kernels before 3.14 have no MemAvailable: free + page cache is the closest estimate.
  const availableBytes = kib('MemAvailable') ?? (kib('MemFree') ?? 0) + (kib('Cached') ?? 0);
  return { totalBytes, availableBytes };
}

/** The agent's cgroup per controller from /proc/self/cgroup: v2 is the "0::" line alone. */
export function parseProcCgroup(text: string): { version: 1 | 2; byController: Map<string, string> } {
  const byController = new Map<string, string>();
  let unified: string | undefined;
  let v1 = false;
  for (const line of text.split('\n')) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line.trim());
    if (!m) continue;
    const [, , controllers = '', path = '/'] = m;
    if (controllers === '') unified = path;
    else {
      v1 = true;
      for (const c of controllers.split(',')) byController.set(c, path);
    }
  }
  if (!v1 && unified !== undefined) return { version: 2, byController: new Map([['', unified]]) };
  return { version: 1, byController };
}

/**
 * The agent's cgroup directory and its ancestors up to the mount root, innermost first. In a
 * container the path in /proc/self/cgroup may name the host's hierarchy while the mount shows only
 * the container's own cgroup at its root: then only the root is read.
 */
async function cgroupChain(mount: string, path: string): Promise<string[]> {
  const parts = path.split('/').filter((p) => p !== '' && p !== '..');
  const chain: string[] = [];
  for (let i = parts.length; i >= 0; i--) chain.push(join(mount, ...parts.slice(0, i)));
  const out: string[] = [];
  for (const dir of chain) {
    try {
      await fsp.access(dir);
      out.push(dir);
    } catch {
      // Not in this mount namespace's view: skipped.
    }
  }
  return out;
}

const num = (s: string | undefined): number | undefined => {
  if (s === undefined) return undefined;
  const n = Number(s.trim());
  return Number.isFinite(n) ? n : undefined;
};

function statField(text: string | undefined, key: string): number | undefined {
  if (!text) return undefined;
  const m = new RegExp(`^${key}\\s+(\\d+)`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
}

const minOf = (a: number | undefined, b: number | undefined): number | undefined => (a === undefined ? b : b === undefined ? a : Math.min(a, b));

async function readCgroupV2(root: string, path: string): Promise<CgroupFacts> {
  const mount = join(root, 'sys/fs/cgroup');
  const chain = await cgroupChain(mount, path);
  const facts: CgroupFacts = { version: 2, paths: { unified: chain[0] ?? mount } };
  for (const dir of chain) {
    const max = (await readText(join(dir, 'cpu.max')))?.trim().split(/\s+/);
    if (max && max[0] !== 'max') {
      const quota = num(max[0]);
      const period = num(max[1] ?? '100000');
      if (quota !== undefined && period !== undefined && quota > 0 && period > 0) facts.cpuQuota = minOf(facts.cpuQuota, quota / period);
    }
    const mem = (await readText(join(dir, 'memory.max')))?.trim();
    if (mem !== undefined && mem !== 'max') {
      const limit = num(mem);
      if (limit !== undefined && limit > 0 && limit < UNLIMITED_BYTES) facts.memoryLimitBytes = minOf(facts.memoryLimitBytes, limit);
    }
  }
  const own = chain[0];
  if (own !== undefined) {
    const cpus = await readText(join(own, 'cpuset.cpus.effective'));
    if (cpus !== undefined) {
      const n = countCpuList(cpus);
      if (n !== undefined) facts.cpusetCpus = n;
    }
    const current = num(await readText(join(own, 'memory.current')));
    if (current !== undefined) {
      const inactive = statField(await readText(join(own, 'memory.stat')), 'inactive_file') ?? 0;
      facts.memoryWorkingSetBytes = Math.max(0, current - inactive);
    }
  }
  return facts;
}

async function readCgroupV1(root: string, byController: Map<string, string>): Promise<CgroupFacts> {
  const facts: CgroupFacts = { version: 1, paths: {} };
  const cpuPath = byController.get('cpu') ?? byController.get('cpuacct');
  if (cpuPath !== undefined) {
    const mount = join(root, 'sys/fs/cgroup/cpu');
    const chain = await cgroupChain(mount, cpuPath);
    if (chain[0]) facts.paths.cpu = chain[0];
    for (const dir of chain) {
      const quota = num(await readText(join(dir, 'cpu.cfs_quota_us')));
      const period = num(await readText(join(dir, 'cpu.cfs_period_us')));
      if (quota !== undefined && period !== undefined && quota > 0 && period > 0) facts.cpuQuota = minOf(facts.cpuQuota, quota / period);
    }
  }
  const cpusetPath = byController.get('cpuset');
  if (cpusetPath !== undefined) {
    const chain = await cgroupChain(join(root, 'sys/fs/cgroup/cpuset'), cpusetPath);
    const own = chain[0];
    if (own) {
      facts.paths.cpuset = own;
      const list = (await readText(join(own, 'cpuset.effective_cpus'))) ?? (await readText(join(own, 'cpuset.cpus')));
      const n = list === undefined ? undefined : countCpuList(list);
      if (n !== undefined) facts.cpusetCpus = n;
    }
  }
  const memPath = byController.get('memory');
  if (memPath !== undefined) {
    const chain = await cgroupChain(join(root, 'sys/fs/cgroup/memory'), memPath);
    const own = chain[0];
    if (own) facts.paths.memory = own;
    for (const dir of chain) {
      const limit = num(await readText(join(dir, 'memory.limit_in_bytes')));
      if (limit !== undefined && limit > 0 && limit < UNLIMITED_BYTES) facts.memoryLimitBytes = minOf(facts.memoryLimitBytes, limit);
    }
    if (own) {
      const usage = num(await readText(join(own, 'memory.usage_in_bytes')));
      if (usage !== undefined) {
        const stat = await readText(join(own, 'memory.stat'));
        const inactive = statField(stat, 'total_inactive_file') ?? statField(stat, 'inactive_file') ?? 0;
        facts.memoryWorkingSetBytes = Math.max(0, usage - inactive);
      }
    }
  }
  return facts;
}

/** The cgroup limits of the agent's own cgroup (and its ancestors), or undefined when /proc/self/cgroup cannot be read. */
export async function readCgroup(root = '/'): Promise<CgroupFacts | undefined> {
  const text = await readText(join(root, 'proc/self/cgroup'));
  if (text === undefined) return undefined;
  const parsed = parseProcCgroup(text);
  if (parsed.version === 2) return readCgroupV2(root, parsed.byController.get('') ?? '/');
  return readCgroupV1(root, parsed.byController);
}

/**
 * CPUs and memory of the host as the agent may use them: the cgroup's quota, cpuset and memory
 * limit where they are tighter than the machine, else the machine (/proc).
 */
export async function readCpuMemory(root = '/'): Promise<CpuMemory> {
  const [procCpus, procMem, cg] = await Promise.all([readProcCpus(root), readProcMemory(root), readCgroup(root)]);
  const machineCpus = procCpus ?? Math.max(1, availableParallelism());
  let cpus = machineCpus;
  let cpuSource = '/proc';
  const cgName = cg ? `cgroup v${cg.version}` : '';
  const cgCpus = cg ? minOf(cg.cpuQuota, cg.cpusetCpus) : undefined;
  if (cgCpus !== undefined && cgCpus < machineCpus) {
    cpus = cgCpus;
    cpuSource = cgName;
  }
  const total = procMem?.totalBytes ?? 0;
  let memoryBytes = total;
  let memoryAvailableBytes = procMem?.availableBytes ?? 0;
  let memSource = '/proc';
  if (cg?.memoryLimitBytes !== undefined && (total === 0 || cg.memoryLimitBytes < total)) {
    memoryBytes = cg.memoryLimitBytes;
    memSource = cgName;
    const inCgroup = Math.max(0, cg.memoryLimitBytes - (cg.memoryWorkingSetBytes ?? 0));
    // The machine may have less free than the cgroup's headroom: the smaller one is what is available.
    memoryAvailableBytes = procMem ? Math.min(inCgroup, procMem.availableBytes) : inCgroup;
  }
  return { cpus, memoryBytes, memoryAvailableBytes, source: { cpus: cpuSource, memory: memSource } };
}

/** pid.available's inputs, as the kubelet reads them (pidlimit_linux.go). */
export async function readPids(root = '/'): Promise<PidFacts | undefined> {
  const [pidMax, threadsMax, loadavg] = await Promise.all([
    readText(join(root, 'proc/sys/kernel/pid_max')),
    readText(join(root, 'proc/sys/kernel/threads-max')),
    readText(join(root, 'proc/loadavg')),
  ]);
  const max = minOf(num(pidMax), num(threadsMax));
  // /proc/loadavg's 4th field is "running/total"; sysinfo(2)'s procs is truncated past 65535.
  const m = loadavg ? /^\S+\s+\S+\s+\S+\s+\d+\/(\d+)/.exec(loadavg) : null;
  if (max === undefined || !m) return undefined;
  return { max, running: Number(m[1]) };
}

/** statfs(2) of each path (several may share one file system; each is reported by its role). Unreadable paths are left out. */
export async function readFilesystems(paths: readonly { role: string; path: string }[]): Promise<FilesystemFacts[]> {
  const out: FilesystemFacts[] = [];
  for (const { role, path } of paths) {
    try {
      const s = await fsp.statfs(path);
      out.push({ role, path, sizeBytes: s.blocks * s.bsize, availBytes: s.bavail * s.bsize, inodes: s.files, inodesFree: s.ffree });
    } catch {
      // A path that does not exist (yet) has no file system to report.
    }
  }
  return out;
}
