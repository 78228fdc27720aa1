/**
 * Reading `virsh domstats` (state, CPU, balloon, block, interface groups) and libvirt's domain
 * states: the numeric state/reason pairs of domstats and the words of `virsh domstate --reason`,
 * both mapped onto our ActualState.
 */
import type { ActualState } from '../../spec/status-report.js';
import type { UsageCounters } from '../runtime.js';

export type DomStats = Map<string, Map<string, string>>;

/** `Domain: 'name'` blocks of `key=value` lines -> name -> key -> value. */
export function parseDomStats(text: string): DomStats {
  const out: DomStats = new Map();
  let current: Map<string, string> | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    const head = /^Domain: '(.*)'$/.exec(line);
    if (head) {
      current = new Map();
      out.set(head[1] ?? '', current);
      continue;
    }
    const eq = line.indexOf('=');
    if (current && eq > 0) current.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return out;
}

/** virDomainState, in libvirt's numbering. */
export const DOMAIN_STATES = ['no state', 'running', 'idle', 'paused', 'in shutdown', 'shut off', 'crashed', 'pmsuspended'] as const;

/** Reasons per state (virDomainRunningReason, virDomainPausedReason, ...), as `virsh domstate --reason` words them. */
const REASONS: Record<number, readonly string[]> = {
  1: ['unknown', 'booted', 'migrated', 'restored', 'from snapshot', 'unpaused', 'migration canceled', 'save canceled', 'event wakeup', 'crashed', 'post-copy', 'post-copy failed'],
  3: ['unknown', 'user', 'migrating', 'saving', 'dumping', 'I/O error', 'watchdog', 'from snapshot', 'shutting down', 'creating snapshot', 'crashed', 'starting up', 'post-copy', 'post-copy failed', 'api error'],
  4: ['unknown', 'user'],
  5: ['unknown', 'shutdown', 'destroyed', 'crashed', 'migrated', 'saved', 'failed', 'from snapshot', 'daemon'],
  6: ['unknown', 'panicked'],
  7: ['unknown'],
};

export interface DomainState {
  state: string;
  reason: string;
}

export function describeState(state: number, reason: number): DomainState {
  return { state: DOMAIN_STATES[state] ?? `state ${state}`, reason: REASONS[state]?.[reason] ?? `reason ${reason}` };
}

/** `virsh domstate --reason` prints e.g. "shut off (destroyed)" or "running (booted)". */
export function parseDomState(text: string): DomainState {
  const line = text.trim().split('\n')[0]?.trim() ?? '';
  const m = /^(.*?)\s*\((.*)\)$/.exec(line);
  return m ? { state: m[1] ?? '', reason: m[2] ?? '' } : { state: line, reason: '' };
}

/**
 * Our ActualState for a libvirt state. A defined domain that never ran is "shut off (unknown)":
 * created. One that stopped is stopped (the planner starts it again when desired running), a
 * crashed one is exited, a domain in the middle of shutting down is unknown (wait for it to settle).
 */
export function mapDomainState(s: DomainState): ActualState {
  switch (s.state) {
    case 'running':
    case 'idle':
    case 'blocked':
      return 'running';
    case 'paused':
    case 'pmsuspended':
      return 'paused';
    case 'shut off':
      return s.reason === 'unknown' || s.reason === '' ? 'created' : s.reason === 'crashed' || s.reason === 'failed' ? 'exited' : 'stopped';
    case 'crashed':
      return 'exited';
    case 'in shutdown':
    default:
      return 'unknown';
  }
}

export type DomainUsage = UsageCounters;

function num(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  return Number.isFinite(n) && n >= 0 ? n : undefined;
}

function sumIndexed(stats: ReadonlyMap<string, string>, group: 'net' | 'block', field: string): number | undefined {
  const count = num(stats.get(`${group}.count`));
  if (count === undefined) return undefined;
  let total = 0;
  for (let i = 0; i < count; i++) total += num(stats.get(`${group}.${i}.${field}`)) ?? 0;
  return total;
}

/**
 * Usage of one domain from its domstats. Memory: what the guest uses when its balloon driver reports
 * it (available - unused), else the QEMU process's resident set. Disk and network bytes are summed
 * over every device (the seed cdrom included).
 */
export function usageFromDomStats(stats: ReadonlyMap<string, string>): DomainUsage {
  const out: DomainUsage = {};
  const cpuNs = num(stats.get('cpu.time'));
  if (cpuNs !== undefined) out.cpuSeconds = cpuNs / 1e9;
  const available = num(stats.get('balloon.available'));
  const unused = num(stats.get('balloon.unused'));
  const rss = num(stats.get('balloon.rss'));
  if (available !== undefined && unused !== undefined && unused <= available) out.memoryBytes = (available - unused) * 1024;
  else if (rss !== undefined) out.memoryBytes = rss * 1024;
  const rx = sumIndexed(stats, 'net', 'rx.bytes');
  const tx = sumIndexed(stats, 'net', 'tx.bytes');
  if (rx !== undefined) out.networkReceiveBytes = rx;
  if (tx !== undefined) out.networkTransmitBytes = tx;
  const rd = sumIndexed(stats, 'block', 'rd.bytes');
  const wr = sumIndexed(stats, 'block', 'wr.bytes');
  if (rd !== undefined) out.blockReadBytes = rd;
  if (wr !== undefined) out.blockWriteBytes = wr;
  return out;
}
