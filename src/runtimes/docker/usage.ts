/**
 * Pure helpers behind DockerRuntime.usage(): reading one `GET /containers/{id}/stats?stream=false`
 * answer, and running engine calls with bounded concurrency.
 */
import type { WorkloadUsage } from '../runtime.js';

type UsageFields = Omit<WorkloadUsage, 'workloadId' | 'type' | 'runtimeId'>;

function rec(value: unknown): Record<string, unknown> | undefined {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
}

function num(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? value : undefined;
}

/**
 * The usage fields of one Docker stats answer (cgroup v1 and v2 shapes). Memory is the working set
 * as `docker stats` shows it: usage minus inactive file cache (v1 `total_inactive_file`, v2
 * `inactive_file`). Block I/O sums `io_service_bytes_recursive` over devices ("Read"/"read",
 * "Write"/"write"). Network sums every interface. A field Docker leaves out (a stopped container,
 * network mode none) is left out here too.
 */
export function usageFromDockerStats(stats: unknown): UsageFields {
  const out: UsageFields = {};
  const s = rec(stats);
  if (!s) return out;

  const cpuNs = num(rec(rec(s.cpu_stats)?.cpu_usage)?.total_usage);
  if (cpuNs !== undefined) out.cpuSeconds = cpuNs / 1e9;

  const mem = rec(s.memory_stats);
  const usage = num(mem?.usage);
  if (usage !== undefined) {
    const ms = rec(mem?.stats);
    const inactive = num(ms?.total_inactive_file) ?? num(ms?.inactive_file) ?? 0;
    out.memoryBytes = inactive < usage ? usage - inactive : usage;
  }

  const nets = rec(s.networks);
  if (nets) {
    let rx = 0;
    let tx = 0;
    for (const n of Object.values(nets)) {
      rx += num(rec(n)?.rx_bytes) ?? 0;
      tx += num(rec(n)?.tx_bytes) ?? 0;
    }
    out.networkReceiveBytes = rx;
    out.networkTransmitBytes = tx;
  }

  const blk = rec(s.blkio_stats)?.io_service_bytes_recursive;
  if (Array.isArray(blk)) {
    let read = 0;
    let write = 0;
    for (const e of blk) {
      const entry = rec(e);
      const op = typeof entry?.op === 'string' ? entry.op.toLowerCase() : '';
      const v = num(entry?.value) ?? 0;
      if (op === 'read') read += v;
      else if (op === 'write') write += v;
    }
    out.blockReadBytes = read;
    out.blockWriteBytes = write;
  } else if (usage !== undefined) {
    // Docker sends null when the cgroup has done no block I/O yet.
    out.blockReadBytes = 0;
    out.blockWriteBytes = 0;
  }
  return out;
}

/** Runs `fn` over `items` with at most `limit` calls in flight; results keep the input order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i] as T, i);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return results;
}
