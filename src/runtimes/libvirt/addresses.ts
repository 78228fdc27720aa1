/**
 * VM addresses: `virsh domifaddr --source agent|lease|arp` per running domain, tried in that order
 * per interface (the guest agent knows best, a DHCP lease is next, the ARP table is the last resort),
 * polled quickly until every interface has an IPv4, then slowly to notice changes. A VM without any
 * IPv4 `ipWaitMs` after it started gets a VM_NO_IP warning; the tracker keeps looking, and any change
 * (an address, a source, the warning) is reported through onChange.
 */
import { WorkloadError, type ErrorSummary } from '../../errors/index.js';
import type { Logger } from '../../log.js';
import { sleep } from '../../util/backoff.js';
import { normalizeMac } from './ids.js';

export const ADDRESS_SOURCES = ['agent', 'lease', 'arp'] as const;
export type AddressSource = (typeof ADDRESS_SOURCES)[number];

export interface DomIfAddr {
  name: string;
  mac: string;
  protocol: 'ipv4' | 'ipv6';
  /** CIDR, e.g. 10.0.0.5/24 */
  address: string;
}

/**
 * Parses virsh's domifaddr table. A line whose name and MAC are "-" continues the interface above
 * (the guest agent lists several addresses per interface that way).
 */
export function parseDomIfAddr(text: string): DomIfAddr[] {
  const out: DomIfAddr[] = [];
  let name = '';
  let mac = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || /^-+$/.test(line) || /^Name\s+MAC address/i.test(line)) continue;
    const cols = line.split(/\s+/);
    if (cols.length < 4) continue;
    const [n, m, proto, addr] = cols as [string, string, string, string];
    if (n !== '-') name = n;
    if (m !== '-') mac = normalizeMac(m);
    if (proto !== 'ipv4' && proto !== 'ipv6') continue;
    if (mac === '' || mac === '00:00:00:00:00:00') continue;
    out.push({ name, mac, protocol: proto, address: addr });
  }
  return out;
}

export interface VmInterfaceStatus {
  mac: string;
  ips: string[];
  source?: AddressSource;
}

/** One interface's addresses from the first source that has an IPv4 for it (else the first with any address). */
export function pickAddresses(macs: readonly string[], bySource: ReadonlyMap<AddressSource, readonly DomIfAddr[]>): VmInterfaceStatus[] {
  return macs.map((m) => {
    const mac = normalizeMac(m);
    let fallback: VmInterfaceStatus | undefined;
    for (const source of ADDRESS_SOURCES) {
      const rows = (bySource.get(source) ?? []).filter((r) => r.mac === mac);
      if (rows.length === 0) continue;
      const ips = [...new Set(rows.filter((r) => r.protocol === 'ipv4').map((r) => r.address)), ...new Set(rows.filter((r) => r.protocol === 'ipv6').map((r) => r.address))];
      const entry: VmInterfaceStatus = { mac, ips, source };
      if (rows.some((r) => r.protocol === 'ipv4')) return entry;
      fallback ??= entry;
    }
    return fallback ?? { mac, ips: [] };
  });
}

export const hasIpv4 = (i: VmInterfaceStatus): boolean => i.ips.some((ip) => !ip.includes(':'));

export type DomIfAddrLookup = (domain: string, source: AddressSource, signal: AbortSignal) => Promise<string>;

export interface AddressTrackerOptions {
  lookup: DomIfAddrLookup;
  ipWaitMs: number;
  logger: Logger;
  onChange?: (workloadId: string) => void;
  /** Poll interval while an interface has no IPv4 (default 2 s) and once all have one (default 20 s). */
  fastMs?: number;
  slowMs?: number;
  now?: () => number;
}

interface Tracked {
  workloadId: string;
  domain: string;
  macs: string[];
  since: number;
  nextAt: number;
  interfaces: VmInterfaceStatus[];
  warning: ErrorSummary | null;
  /** Sources that failed for this domain, and why (logged once each). */
  failing: Map<AddressSource, string>;
}

export class AddressTracker {
  private readonly tracked = new Map<string, Tracked>();
  private readonly fastMs: number;
  private readonly slowMs: number;
  private readonly now: () => number;
  private wake: (() => void) | undefined;
  private loop: Promise<void> | undefined;

  constructor(private readonly opts: AddressTrackerOptions) {
    this.fastMs = opts.fastMs ?? 2_000;
    this.slowMs = opts.slowMs ?? 20_000;
    this.now = opts.now ?? Date.now;
  }

  /** Starts watching a running domain (idempotent; a new domain name or MAC set starts over). */
  track(workloadId: string, domain: string, macs: readonly string[], sinceMs = this.now()): void {
    const norm = macs.map(normalizeMac);
    const prev = this.tracked.get(workloadId);
    if (prev && prev.domain === domain && prev.macs.join() === norm.join()) return;
    this.tracked.set(workloadId, { workloadId, domain, macs: norm, since: sinceMs, nextAt: 0, interfaces: norm.map((mac) => ({ mac, ips: [] })), warning: null, failing: new Map() });
    this.wake?.();
  }

  /** Restarts the clock and looks again at once (after a start). */
  restart(workloadId: string): void {
    const t = this.tracked.get(workloadId);
    if (!t) return;
    t.since = this.now();
    t.nextAt = 0;
    t.warning = null;
    this.wake?.();
  }

  untrack(workloadId: string): void {
    const t = this.tracked.get(workloadId);
    if (!t) return;
    this.tracked.delete(workloadId);
    if (t.interfaces.some((i) => i.ips.length > 0) || t.warning) this.opts.onChange?.(workloadId);
  }

  tracking(): string[] {
    return [...this.tracked.keys()];
  }

  get(workloadId: string): { interfaces: VmInterfaceStatus[]; warning: ErrorSummary | null } | undefined {
    const t = this.tracked.get(workloadId);
    return t ? { interfaces: t.interfaces.map((i) => ({ ...i, ips: [...i.ips] })), warning: t.warning } : undefined;
  }

  /** Polls due domains until the signal aborts. Never rejects. */
  run(signal: AbortSignal): Promise<void> {
    this.loop ??= (async () => {
      while (!signal.aborted) {
        const now = this.now();
        const due = [...this.tracked.values()].filter((t) => t.nextAt <= now);
        for (const t of due) {
          if (signal.aborted) return;
          await this.pollOne(t, signal).catch((err: unknown) => {
            this.opts.logger.debug({ workloadId: t.workloadId, err: err instanceof Error ? err.message : String(err) }, 'address lookup failed');
          });
        }
        // Nothing to watch: sleep until track() wakes the loop (or shutdown), no timer ticking meanwhile.
        const next = this.tracked.size === 0 ? undefined : Math.min(1_000, ...[...this.tracked.values()].map((t) => Math.max(50, t.nextAt - this.now())));
        const timer = new AbortController();
        await new Promise<void>((resolve) => {
          this.wake = resolve;
          if (next !== undefined) void sleep(next, AbortSignal.any([signal, timer.signal])).then(resolve);
          signal.addEventListener('abort', () => resolve(), { once: true, signal: timer.signal });
        });
        timer.abort();
        this.wake = undefined;
      }
    })();
    return this.loop;
  }

  /** One look at one domain; exported behaviour for tests through pollNow. */
  async pollNow(workloadId: string, signal: AbortSignal): Promise<void> {
    const t = this.tracked.get(workloadId);
    if (t) await this.pollOne(t, signal);
  }

  private async pollOne(t: Tracked, signal: AbortSignal): Promise<void> {
    const bySource = new Map<AddressSource, DomIfAddr[]>();
    for (const source of ADDRESS_SOURCES) {
      // Enough: every interface already has an IPv4 from an earlier (better) source.
      if (pickAddresses(t.macs, bySource).every(hasIpv4)) break;
      try {
        const text = await this.opts.lookup(t.domain, source, signal);
        bySource.set(source, parseDomIfAddr(text));
        t.failing.delete(source);
      } catch (err) {
        if (signal.aborted) return;
        const message = err instanceof Error ? err.message : String(err);
        if (t.failing.get(source) !== message) {
          t.failing.set(source, message);
          this.opts.logger.debug({ workloadId: t.workloadId, source, err: message }, 'address source unavailable for this VM');
        }
      }
    }
    if (this.tracked.get(t.workloadId) !== t) return;
    const interfaces = pickAddresses(t.macs, bySource);
    const now = this.now();
    const anyV4 = interfaces.some(hasIpv4);
    const allV4 = interfaces.every(hasIpv4);
    let warning = t.warning;
    if (anyV4) warning = null;
    else if (now - t.since >= this.opts.ipWaitMs && t.macs.length > 0) {
      const tried = ADDRESS_SOURCES.map((s) => (t.failing.has(s) ? `${s} (${t.failing.get(s)})` : s)).join(', ');
      warning ??= new WorkloadError(
        'VM_NO_IP',
        `no IPv4 address for ${t.macs.join(', ')} ${Math.round((now - t.since) / 1000)} s after start; looked in: ${tried}`,
        { details: { waitedSeconds: Math.round((now - t.since) / 1000) } },
      ).summary();
    }
    const changed = JSON.stringify(interfaces) !== JSON.stringify(t.interfaces) || JSON.stringify(warning) !== JSON.stringify(t.warning);
    t.interfaces = interfaces;
    if (warning && !t.warning) this.opts.logger.warn({ workloadId: t.workloadId, code: 'VM_NO_IP', err: warning.message }, 'VM has no IPv4 address yet; still looking');
    t.warning = warning;
    t.nextAt = now + (allV4 ? this.slowMs : now - t.since < this.opts.ipWaitMs ? this.fastMs : Math.max(this.fastMs, 5_000));
    if (changed) {
      this.opts.logger.info({ workloadId: t.workloadId, interfaces: interfaces.map((i) => `${i.mac} ${i.ips.join(' ') || '-'}${i.source ? ` (${i.source})` : ''}`) }, 'VM addresses changed');
      this.opts.onChange?.(t.workloadId);
    }
  }
}
