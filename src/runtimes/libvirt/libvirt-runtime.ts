/**
 * VMs on libvirt, through `virsh` (execFile, timeouts), `qemu-img` and `genisoimage`.
 *
 * A VM workload is one persistent domain `<namePrefix><workload id>` with a UUID derived from node id +
 * workload id (so a redefinition after a revision change is a define of the same domain), our labels and
 * what we need later in its `<metadata>`, disks and a cloud-init seed under the storage directory, and
 * its serial console logged to <stateDir>/libvirt/console/<domain>.log. The runtime also watches the
 * addresses of running VMs (addresses.ts) and serves the status report's `vm` block from what it saw.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, open, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Dispatcher } from 'undici';

import { WorkloadError, type ErrorSummary } from '../../errors/index.js';
import type { Logger } from '../../log.js';
import {
  hashVersionOf,
  LABELS,
  type ApplyContext,
  type CreatedWorkload,
  type ObservedWorkload,
  type RemoveReason,
  type Runtime,
  type RuntimeEvent,
  type RuntimeHealth,
  type RuntimeState,
  type TypeDescriptor,
  type WorkloadBase,
} from '../runtime.js';
import type { VmWorkload } from './spec.js';
import { vmType } from './type.js';
import { AddressTracker, type VmInterfaceStatus } from './addresses.js';
import { renderSeed, writeSeedIso } from './cloud-init.js';
import { DEFAULT_SHUTDOWN_SECONDS, domainDefinition } from './definition.js';
import { buildDomainXml, parseDomainXml, type DomainDisk, type ParsedDomain } from './domain-xml.js';
import { describeState, mapDomainState, parseDomState, parseDomStats, usageFromDomStats, type DomainUsage } from './domstats.js';
import { runTool, ToolError } from './exec.js';
import { domainName, instanceId, libvirtVolName, normalizeMac, poolDiskVolumeName } from './ids.js';
import { exists, VmStorage, type CachedImage } from './storage.js';
import { isAlreadyRunning, isDomainNotFound, isNotRunning, translateVirshError, Virsh } from './virsh.js';

/** What the libvirt runtime keeps in a VM's record (runtimeState), version 1: the generated password. */
export const VM_STATE_VERSION = 1;

/** The generated password kept in a record's runtimeState, if any. Never logged. */
export function passwordOf(state: RuntimeState | undefined): string | undefined {
  const pw = state?.version === VM_STATE_VERSION ? state.data.password : undefined;
  return typeof pw === 'string' ? pw : undefined;
}

/** A document volume as the storage layer made it: its pool and whether it is Ready. */
export type StorageVolumeLookup = (name: string) => { pool: string; poolType: string; phase: string } | undefined;

export interface LibvirtRuntimeOptions {
  uri: string;
  nodeId: string;
  namePrefix: string;
  domainType: 'auto' | 'kvm' | 'qemu';
  /** The agent's state dir: console logs go to <stateDir>/libvirt/console. */
  stateDir: string;
  /** Disks, seeds, image cache (default <stateDir>/libvirt). */
  storageDir?: string | undefined;
  allowedPathPrefixes: readonly string[];
  ipWaitSeconds: number;
  commandTimeoutSeconds: number;
  downloadTimeoutSeconds: number;
  logger: Logger;
  /** A VM's report-relevant facts changed (addresses, warning): send a fresh status. */
  onVmChange?: (workloadId: string) => void;
  /** The storage layer's view of a document volume, for disks with `volume:` (docs/storage.md). */
  storageVolume?: StorageVolumeLookup;
  binaries?: { virsh?: string; qemuImg?: string; genisoimage?: string };
  dispatcher?: Dispatcher;
  /** Address polling intervals (tests shorten them). */
  addressPollMs?: { fast: number; slow: number };
}

/** The status report's `vm` block of one workload. */
export interface VmStatus {
  interfaces: VmInterfaceStatus[];
  login?: { username: string; ssh?: string; sshKeyFingerprints?: string[]; console?: string; password?: string };
  warning?: ErrorSummary | null;
}

/** Usage of one VM, in the shape of the runtime contract's WorkloadUsage. */
export interface VmUsage extends DomainUsage {
  workloadId: string;
  type: string;
  runtimeId: string;
}

interface Known {
  parsed: ParsedDomain;
  ours: boolean;
  fetchedAt: number;
}

const HEALTH_TIMEOUT_MS = 10_000;
const METADATA_TTL_MS = 5 * 60_000;
const LOG_TAIL_MAX_BYTES = 8 * 1024;
const EVENT_ACTIONS = new Set(['started', 'stopped', 'crashed', 'undefined', 'suspended', 'resumed', 'pmsuspended']);

function asVm(w: WorkloadBase): VmWorkload {
  if (w.type !== 'vm') throw new WorkloadError('INVALID_SPEC', `the libvirt runtime runs vm workloads, not ${w.type} (workload ${w.id})`);
  // The workload was validated against the vm type's schema when its document was loaded.
  return w as VmWorkload;
}

function withTimeout(signal: AbortSignal | undefined, ms: number): AbortSignal {
  return signal ? AbortSignal.any([signal, AbortSignal.timeout(ms)]) : AbortSignal.timeout(ms);
}

function abortError(signal: AbortSignal): WorkloadError {
  const reason: unknown = signal.reason;
  return new WorkloadError('TIMEOUT', reason instanceof Error ? reason.message : 'the operation was aborted');
}

/** The first IPv4 of the first interface that has one, without its prefix length. */
function firstIpv4(interfaces: readonly VmInterfaceStatus[]): string | undefined {
  for (const i of interfaces) {
    const ip = i.ips.find((a) => !a.includes(':'));
    if (ip !== undefined) return ip.replace(/\/\d+$/, '');
  }
  return undefined;
}

export class LibvirtRuntime implements Runtime {
  readonly name = 'libvirt' as const;
  readonly types: readonly TypeDescriptor[] = [vmType];

  private readonly virsh: Virsh;
  private readonly storage: VmStorage;
  private readonly logger: Logger;
  private readonly known = new Map<string, Known>();
  private readonly addresses: AddressTracker;
  private readonly closing = new AbortController();
  private readonly consoleDir: string;
  private readonly timeoutMs: number;
  private detectedType: 'kvm' | 'qemu' | undefined;
  private accessRestored = false;
  private nodeInfo: { at: number; capacity: Record<string, number> } | undefined;

  constructor(private readonly opts: LibvirtRuntimeOptions) {
    this.logger = opts.logger.child({ runtime: 'libvirt' });
    this.timeoutMs = opts.commandTimeoutSeconds * 1000;
    this.virsh = new Virsh({ binary: opts.binaries?.virsh ?? 'virsh', uri: opts.uri, timeoutMs: this.timeoutMs });
    const stateDir = resolve(opts.stateDir);
    this.consoleDir = join(stateDir, 'libvirt', 'console');
    this.storage = new VmStorage({
      root: resolve(opts.storageDir ?? join(stateDir, 'libvirt')),
      allowedPathPrefixes: opts.allowedPathPrefixes,
      qemuImg: opts.binaries?.qemuImg ?? 'qemu-img',
      timeoutMs: this.timeoutMs,
      downloadTimeoutMs: opts.downloadTimeoutSeconds * 1000,
      logger: this.logger,
      ...(opts.dispatcher ? { dispatcher: opts.dispatcher } : {}),
      ownedAncestors: [stateDir],
    });
    this.addresses = new AddressTracker({
      lookup: (domain, source, signal) => this.virsh.raw(['domifaddr', domain, '--source', source], signal, 15_000),
      ipWaitMs: opts.ipWaitSeconds * 1000,
      logger: this.logger,
      ...(opts.onVmChange ? { onChange: opts.onVmChange } : {}),
      ...(opts.addressPollMs ? { fastMs: opts.addressPollMs.fast, slowMs: opts.addressPollMs.slow } : {}),
    });
    void this.addresses.run(this.closing.signal);
  }

  get storageRoot(): string {
    return this.storage.root;
  }

  async close(): Promise<void> {
    this.closing.abort();
  }

  // ------------------------------------------------------------------------------------------
  // health and observe
  // ------------------------------------------------------------------------------------------

  async health(signal?: AbortSignal): Promise<RuntimeHealth> {
    const s = withTimeout(signal, HEALTH_TIMEOUT_MS);
    try {
      const out = await this.virsh.run('health', ['version', '--daemon'], s);
      const daemon = /Running against daemon:\s*(\S+)/.exec(out)?.[1] ?? 'unknown';
      const hypervisor = /Running hypervisor:\s*(.+)/.exec(out)?.[1]?.trim();
      const capacity = await this.capacity(s);
      const type = await this.effectiveDomainType(this.opts.domainType, s);
      if (!this.accessRestored) {
        // At start-up (the first time libvirt answers): QEMU's access to the VM files, which a host
        // reboot or a service restart may have reset, is put back before anything is started.
        this.accessRestored = true;
        await this.storage.restoreAccess().catch((err: unknown) => {
          this.logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'could not restore access to the VM storage directory');
        });
      }
      return {
        up: true,
        reason: `libvirt ${daemon}${hypervisor ? ` (${hypervisor})` : ''} at ${this.opts.uri}; domain type ${type}`,
        version: daemon,
        capacity,
        dataRoot: this.storage.root,
      };
    } catch (err) {
      const e = translateVirshError(err, 'health');
      this.detectedType = undefined;
      this.logger.debug({ code: e.code, err: e.message }, 'libvirt health check failed');
      return { up: false, reason: e.message };
    }
  }

  private async capacity(signal: AbortSignal): Promise<Record<string, number>> {
    if (this.nodeInfo && Date.now() - this.nodeInfo.at < METADATA_TTL_MS) return this.nodeInfo.capacity;
    const out = await this.virsh.run('health', ['nodeinfo'], signal);
    const capacity: Record<string, number> = {};
    const cpus = /^CPU\(s\):\s*(\d+)/m.exec(out)?.[1];
    const mem = /^Memory size:\s*(\d+)\s*KiB/m.exec(out)?.[1];
    if (cpus !== undefined) capacity.cpus = Number(cpus);
    if (mem !== undefined) capacity.memoryBytes = Number(mem) * 1024;
    this.nodeInfo = { at: Date.now(), capacity };
    return capacity;
  }

  /** `auto`: kvm when libvirt reports KVM usable on this host, else qemu (TCG). Decided once per connection. */
  private async effectiveDomainType(wanted: 'auto' | 'kvm' | 'qemu', signal?: AbortSignal): Promise<'kvm' | 'qemu'> {
    if (wanted !== 'auto') return wanted;
    if (this.detectedType) return this.detectedType;
    try {
      await this.virsh.raw(['domcapabilities', '--virttype', 'kvm'], signal);
      this.detectedType = 'kvm';
    } catch (err) {
      if (err instanceof ToolError && err.failure === 'exit') this.detectedType = 'qemu';
      else throw err;
    }
    return this.detectedType;
  }

  /** Domain XML + our metadata, cached (our defines refresh it; anything else expires after METADATA_TTL_MS). */
  private async domainInfo(name: string, signal?: AbortSignal, fresh = false): Promise<Known | undefined> {
    const k = this.known.get(name);
    if (k && !fresh && Date.now() - k.fetchedAt < METADATA_TTL_MS) return k;
    let xml: string;
    try {
      xml = await this.virsh.raw(['dumpxml', name], signal);
    } catch (err) {
      if (isDomainNotFound(err)) {
        this.known.delete(name);
        return undefined;
      }
      throw translateVirshError(err, 'inspect');
    }
    const parsed = parseDomainXml(xml);
    const labels = parsed.metadata?.labels ?? {};
    const ours = labels[LABELS.managed] === 'true' && labels[LABELS.nodeId] === this.opts.nodeId && (labels[LABELS.workloadId] ?? '') !== '';
    const entry: Known = { parsed, ours, fetchedAt: Date.now() };
    this.known.set(name, entry);
    return entry;
  }

  private toObserved(k: Known, state: ReturnType<typeof describeState>): ObservedWorkload {
    const labels = k.parsed.metadata?.labels ?? {};
    const actual = mapDomainState(state);
    const meta = k.parsed.metadata;
    const o: ObservedWorkload = {
      workloadId: labels[LABELS.workloadId] ?? '',
      type: 'vm',
      runtime: 'libvirt',
      runtimeId: k.parsed.uuid,
      name: k.parsed.name,
      revision: labels[LABELS.revision] === '' ? undefined : labels[LABELS.revision],
      specHash: labels[LABELS.specHash],
      hashVersion: hashVersionOf(labels[LABELS.hashVersion]),
      state: actual,
      // Composite: the domain, its disks and its seed are one workload.
      parts: [
        { kind: 'domain', id: k.parsed.uuid },
        ...(meta?.disks ?? []).map((d) => ({ kind: 'disk', id: d.file })),
        ...(meta?.seedFile !== undefined ? [{ kind: 'seed', id: meta.seedFile }] : []),
      ],
    };
    if (actual === 'unknown' || actual === 'paused') o.engineState = state.state;
    return o;
  }

  /** Every domain of ours, from one `virsh domstats --state` (plus a dumpxml for a domain not seen before). */
  async observe(signal?: AbortSignal): Promise<ObservedWorkload[]> {
    const s = withTimeout(signal, 30_000);
    const stats = parseDomStats(await this.virsh.run('list', ['domstats', '--state'], s));
    const out: ObservedWorkload[] = [];
    const seen = new Set<string>();
    for (const [name, st] of stats) {
      if (!name.startsWith(this.opts.namePrefix)) continue;
      seen.add(name);
      const k = await this.domainInfo(name, s);
      if (!k?.ours) continue;
      const state = describeState(Number(st.get('state.state') ?? 0), Number(st.get('state.reason') ?? 0));
      const o = this.toObserved(k, state);
      out.push(o);
      if (o.state === 'running') this.addresses.track(o.workloadId, name, this.macsOf(k));
      else this.addresses.untrack(o.workloadId);
    }
    for (const name of this.known.keys()) if (!seen.has(name)) this.known.delete(name);
    const live = new Set(out.filter((o) => o.state === 'running').map((o) => o.workloadId));
    for (const id of this.addresses.tracking()) if (!live.has(id)) this.addresses.untrack(id);
    return out;
  }

  private macsOf(k: Known): string[] {
    const fromMeta = k.parsed.metadata?.nics.map((n) => normalizeMac(n.mac)) ?? [];
    return fromMeta.length > 0 ? fromMeta : k.parsed.macs;
  }

  async inspect(observed: ObservedWorkload, signal?: AbortSignal): Promise<ObservedWorkload | undefined> {
    const s = withTimeout(signal, 30_000);
    const k = await this.domainInfo(observed.name, s, true);
    if (!k?.ours) return undefined;
    let text: string;
    try {
      text = await this.virsh.raw(['domstate', observed.name, '--reason'], s);
    } catch (err) {
      if (isDomainNotFound(err)) return undefined;
      throw translateVirshError(err, 'inspect');
    }
    return this.toObserved(k, parseDomState(text));
  }

  // ------------------------------------------------------------------------------------------
  // prepare / create
  // ------------------------------------------------------------------------------------------

  /**
   * Fetches what create() needs (base images, boot files) while the old VM, if any, still runs.
   */
  async prepare(workload: WorkloadBase, ctx: ApplyContext): Promise<void> {
    const w = asVm(workload);
    await this.fetchInputs(w, ctx.signal);
  }

  private async fetchInputs(w: VmWorkload, signal: AbortSignal): Promise<{ kernel?: string; initrd?: string; images: Map<string, CachedImage> }> {
    const out: { kernel?: string; initrd?: string; images: Map<string, CachedImage> } = { images: new Map() };
    if (w.spec.boot) {
      out.kernel = await this.storage.ensureBootFile(w.spec.boot.kernel, 'boot.kernel', signal);
      if (w.spec.boot.initrd !== undefined) out.initrd = await this.storage.ensureBootFile(w.spec.boot.initrd, 'boot.initrd', signal);
    }
    for (const d of w.spec.disks ?? []) {
      if (d.image) out.images.set(d.name, await this.storage.ensureImage(d.image, `disks[${d.name}].image`, signal));
    }
    return out;
  }

  /** The generated password: the one kept in the record (a recreate keeps it), else a new one. */
  private password(w: VmWorkload, state: RuntimeState | undefined): string | undefined {
    if (!w.spec.login?.generatePassword) return undefined;
    return passwordOf(state) ?? randomBytes(18).toString('base64url');
  }

  async create(workload: WorkloadBase, ctx: ApplyContext): Promise<CreatedWorkload> {
    const w = asVm(workload);
    const { signal } = ctx;
    await this.storage.init();
    const inputs = await this.fetchInputs(w, signal);
    ctx.progress?.('Creating');
    if (ctx.nodeId !== this.opts.nodeId) {
      this.logger.warn({ workloadId: w.id, ctxNodeId: ctx.nodeId, nodeId: this.opts.nodeId }, "apply context names another node id; using the runtime's");
    }
    const name = domainName(this.opts.namePrefix, w.id);
    const vmDir = this.storage.vmDir(name);
    await mkdir(vmDir, { recursive: true, mode: 0o711 });
    await chmod(vmDir, 0o711);
    await mkdir(this.consoleDir, { recursive: true, mode: 0o700 });

    const made: string[] = [];
    let password: string | undefined;
    let defining = false;
    try {
      const disks = await this.prepareDisks(w, name, inputs.images, made, signal);
      password = this.password(w, ctx.runtimeState);
      const seedIso = this.storage.seedPath(name);
      const files = renderSeed({
        instanceId: instanceId(w.id, w.revision, ctx.specHash),
        hostname: w.spec.hostname ?? w.id,
        ...(w.spec.cloudInit ? { cloudInit: w.spec.cloudInit } : {}),
        ...(w.spec.login ? { login: w.spec.login } : {}),
        ...(password !== undefined ? { password } : {}),
      });
      await writeSeedIso(seedIso, files, { genisoimage: this.opts.binaries?.genisoimage ?? 'genisoimage', timeoutMs: this.timeoutMs, signal });
      made.push(seedIso);

      const def = domainDefinition({
        workload: w,
        nodeId: this.opts.nodeId,
        name,
        specHash: ctx.specHash,
        hashVersion: ctx.hashVersion ?? vmType.hashVersion,
        domainType: await this.effectiveDomainType(w.spec.domainType ?? this.opts.domainType, signal),
        disks,
        seedIso,
        consoleLog: join(this.consoleDir, `${name}.log`),
        ...(inputs.kernel !== undefined ? { kernel: inputs.kernel } : {}),
        ...(inputs.initrd !== undefined ? { initrd: inputs.initrd } : {}),
      });
      const xml = buildDomainXml(def);
      const xmlPath = join(vmDir, 'domain.xml');
      await writeFile(xmlPath, xml, { mode: 0o600 });
      made.push(xmlPath);
      defining = true;
      await this.virsh.run('define', ['define', xmlPath], signal);
      this.logger.debug({ workloadId: w.id, domain: name, uuid: def.uuid }, 'defined domain');
    } catch (err) {
      // "On failure nothing is left behind": what this call made goes; disks it reused stay. An
      // aborted `virsh define` (shutdown) may still have been carried out by libvirtd: that domain
      // goes first, so no domain is left defined without the disks it names.
      if (defining) await this.undefineLeftover(name, ctx.specHash);
      for (const f of made.reverse()) await this.storage.removeVmFile(name, f).catch(() => undefined);
      throw err instanceof WorkloadError ? err : translateVirshError(err, 'define');
    }

    const k = await this.domainInfo(name, withTimeout(undefined, this.timeoutMs), true);
    if (!k?.ours) throw new WorkloadError('INTERNAL', `domain ${name} is not visible as ours right after it was defined`);
    const created: CreatedWorkload = this.toObserved(k, { state: 'shut off', reason: 'unknown' });
    if (password !== undefined) created.runtimeState = { version: VM_STATE_VERSION, data: { password } };
    return created;
  }

  /** Undefines `name` if it is ours with this spec hash (what a failed create just defined), with its own deadline. */
  private async undefineLeftover(name: string, specHash: string): Promise<void> {
    try {
      const k = await this.domainInfo(name, withTimeout(undefined, this.timeoutMs), true);
      if (!k?.ours || k.parsed.metadata?.labels[LABELS.specHash] !== specHash) return;
      await this.virsh.raw(['undefine', name, '--nvram'], withTimeout(undefined, this.timeoutMs));
      this.known.delete(name);
      this.logger.info({ domain: name }, 'undefined the domain a failed or aborted create left');
    } catch (err) {
      this.logger.warn({ domain: name, err: err instanceof Error ? err.message : String(err) }, 'could not undefine the domain a failed create left');
    }
  }

  /**
   * The VM's disk files: kept when one already exists with the same base (a redefinition, or a disk
   * retained from before), otherwise created. A retained disk with another base is never overwritten.
   */
  private async prepareDisks(w: VmWorkload, name: string, images: ReadonlyMap<string, CachedImage>, made: string[], signal: AbortSignal): Promise<DomainDisk[]> {
    const out: DomainDisk[] = [];
    for (const d of w.spec.disks ?? []) {
      if (d.pool !== undefined) {
        // A volume the storage layer made in the pool before the storage gate let this create run;
        // the runtime only attaches it (and never deletes it: its reclaimPolicy is the storage layer's).
        out.push({ name: d.name, file: await this.poolVolumePath(d.pool, poolDiskVolumeName(w.id, d.name), signal), format: 'qcow2', bus: d.bus ?? 'virtio', reclaimPolicy: d.reclaimPolicy ?? 'delete', ...(d.sizeBytes !== undefined ? { sizeBytes: d.sizeBytes } : {}) });
        continue;
      }
      if (d.volume !== undefined) {
        // A document volume: the storage layer owns its size and its life; the VM only attaches it,
        // and its removal keeps it (reclaimPolicy retain here: the volume's own policy is applied by storage).
        const vol = this.opts.storageVolume?.(d.volume);
        if (!vol || vol.phase !== 'Ready' || vol.poolType !== 'libvirt') {
          throw new WorkloadError('VM_DEFINE_FAILED', `disk ${d.name}: volume ${d.volume} is ${vol ? `${vol.phase} in a ${vol.poolType} pool` : 'not known to the storage layer'}; a VM attaches a Ready volume of a libvirt pool`, {
            details: { operation: 'disk', disk: d.name, volume: d.volume },
          });
        }
        out.push({ name: d.name, file: await this.poolVolumePath(vol.pool, d.volume, signal), format: 'qcow2', bus: d.bus ?? 'virtio', reclaimPolicy: 'retain' });
        continue;
      }
      const file = this.storage.diskPath(name, d.name);
      const base = images.get(d.name);
      const disk: DomainDisk = { name: d.name, file, format: 'qcow2', bus: d.bus ?? 'virtio', reclaimPolicy: d.reclaimPolicy ?? 'delete' };
      if (base) disk.base = base.digest;
      if (d.sizeBytes !== undefined) disk.sizeBytes = d.sizeBytes;
      if (await exists(file)) {
        const backing = await this.backingOf(file, signal);
        if (backing === (base?.path ?? null)) {
          this.logger.debug({ workloadId: w.id, disk: d.name }, 'keeping existing disk');
          out.push(disk);
          continue;
        }
        if (disk.reclaimPolicy === 'retain') {
          throw new WorkloadError('VM_DEFINE_FAILED', `disk ${d.name} (${file}) exists with another base image (${backing ?? 'none'}) and its reclaimPolicy is retain; it is not overwritten`, {
            transient: false,
            details: { operation: 'disk', disk: d.name },
          });
        }
        this.logger.info({ workloadId: w.id, disk: d.name }, 'base image of disk changed; recreating the disk');
        await this.storage.removeVmFile(name, file);
      }
      await this.storage.createDisk(file, { sizeBytes: d.sizeBytes, base }, signal);
      made.push(file);
      out.push(disk);
    }
    return out;
  }

  /** Where libvirt keeps a volume of a pool (`virsh vol-path`); VM_DEFINE_FAILED when it does not exist. */
  private async poolVolumePath(pool: string, volume: string, signal: AbortSignal): Promise<string> {
    try {
      return (await this.virsh.raw(['vol-path', '--pool', pool, libvirtVolName(volume)], signal)).trim();
    } catch (err) {
      throw new WorkloadError('VM_DEFINE_FAILED', `volume ${volume} is not in libvirt pool ${pool}: ${err instanceof ToolError ? err.toolMessage : String(err)}`, {
        cause: err,
        details: { operation: 'disk', pool, volume },
      });
    }
  }

  private async backingOf(file: string, signal: AbortSignal): Promise<string | null> {
    try {
      const { stdout } = await runTool(this.opts.binaries?.qemuImg ?? 'qemu-img', ['info', '--output=json', '-U', '-f', 'qcow2', file], { timeoutMs: this.timeoutMs, signal, label: 'qemu-img info' });
      const info = JSON.parse(stdout) as Record<string, unknown>;
      const b = info['full-backing-filename'] ?? info['backing-filename'];
      return typeof b === 'string' ? b : null;
    } catch (err) {
      throw new WorkloadError('VM_DEFINE_FAILED', `existing disk ${file} cannot be read: ${err instanceof ToolError ? err.toolMessage : String(err)}`, { cause: err });
    }
  }

  // ------------------------------------------------------------------------------------------
  // start / stop / remove
  // ------------------------------------------------------------------------------------------

  async start(observed: ObservedWorkload, signal: AbortSignal): Promise<void> {
    // A VM stopped while the agent was down starts from files whose path may have lost QEMU's access.
    await this.storage.restoreAccess();
    try {
      await this.virsh.raw(['start', observed.name], signal);
      this.logger.debug({ workloadId: observed.workloadId, domain: observed.name }, 'started domain');
    } catch (err) {
      if (!isAlreadyRunning(err)) throw translateVirshError(err, 'start');
    }
    const k = await this.domainInfo(observed.name, withTimeout(undefined, this.timeoutMs)).catch(() => undefined);
    if (k?.ours) {
      this.addresses.track(observed.workloadId, observed.name, this.macsOf(k));
      this.addresses.restart(observed.workloadId);
    }
  }

  private async domState(name: string, signal: AbortSignal): Promise<string | undefined> {
    try {
      return parseDomState(await this.virsh.raw(['domstate', name, '--reason'], signal)).state;
    } catch (err) {
      if (isDomainNotFound(err)) return undefined;
      throw translateVirshError(err, 'stop');
    }
  }

  /** ACPI shutdown, then destroy once the timeout (the argument, else the spec's, else 60 s) has passed. */
  async stop(observed: ObservedWorkload, signal: AbortSignal, timeoutSeconds?: number): Promise<void> {
    const k = await this.domainInfo(observed.name, signal);
    const timeout = timeoutSeconds ?? k?.parsed.metadata?.shutdownTimeoutSeconds ?? DEFAULT_SHUTDOWN_SECONDS;
    let state = await this.domState(observed.name, signal);
    if (state === undefined || state === 'shut off') return;
    try {
      await this.virsh.raw(['shutdown', observed.name, '--mode', 'acpi'], signal);
    } catch (err) {
      if (isDomainNotFound(err) || isNotRunning(err)) return;
      // Some guests refuse ACPI (no acpid): that is what the destroy below is for.
      this.logger.debug({ workloadId: observed.workloadId, err: err instanceof Error ? err.message : String(err) }, 'ACPI shutdown request failed');
    }
    const deadline = Date.now() + timeout * 1000;
    while (Date.now() < deadline) {
      if (signal.aborted) throw abortError(signal);
      await new Promise((r) => setTimeout(r, 500));
      state = await this.domState(observed.name, signal);
      if (state === undefined || state === 'shut off') {
        this.logger.debug({ workloadId: observed.workloadId, domain: observed.name }, 'domain shut down');
        this.addresses.untrack(observed.workloadId);
        return;
      }
    }
    this.logger.info({ workloadId: observed.workloadId, domain: observed.name, timeoutSeconds: timeout }, 'domain did not shut down in time; destroying it');
    await this.destroy(observed.name, signal);
    this.addresses.untrack(observed.workloadId);
  }

  private async destroy(name: string, signal: AbortSignal): Promise<void> {
    try {
      await this.virsh.raw(['destroy', name], signal);
    } catch (err) {
      if (isDomainNotFound(err) || isNotRunning(err)) return;
      throw translateVirshError(err, 'stop');
    }
  }

  /**
   * Destroys and undefines the domain (with its NVRAM), then deletes its files: seed, domain XML,
   * console log and the disks whose reclaimPolicy is delete. A `replace` (recreate, repair) and the
   * cleanup after a failed start keep disks and console log for the domain that takes over.
   */
  async remove(observed: ObservedWorkload, signal: AbortSignal, why: RemoveReason): Promise<void> {
    const k = await this.domainInfo(observed.name, signal, true);
    if (k && !k.ours) throw new WorkloadError('INTERNAL', `refusing to remove domain ${observed.name}: it is not labelled as ours`);
    await this.destroy(observed.name, signal);
    try {
      await this.virsh.raw(['undefine', observed.name, '--nvram'], signal);
    } catch (err) {
      if (!isDomainNotFound(err)) throw translateVirshError(err, 'remove');
    }
    this.known.delete(observed.name);
    this.addresses.untrack(observed.workloadId);
    const replacing = why === 'replace' || why === 'cleanup-after-failed-start';
    const meta = k?.parsed.metadata;
    const keep = new Set<string>();
    for (const d of meta?.disks ?? []) if (replacing || d.reclaimPolicy === 'retain') keep.add(d.file);
    if (!meta) {
      // Without metadata we cannot tell which disks were meant to be retained: keep every file.
      this.logger.warn({ workloadId: observed.workloadId, domain: observed.name }, 'domain had no readable metadata; its files are left in place');
    } else {
      const removed = await this.storage.removeVmFiles(observed.name, keep);
      if (!replacing && meta.consoleLog !== undefined && meta.consoleLog.startsWith(this.consoleDir)) {
        await rm(meta.consoleLog, { force: true });
      }
      this.logger.debug({ workloadId: observed.workloadId, domain: observed.name, removed: removed.length, kept: keep.size }, 'removed domain and its files');
    }
    this.opts.onVmChange?.(observed.workloadId);
  }

  // ------------------------------------------------------------------------------------------
  // logs, usage, events, status
  // ------------------------------------------------------------------------------------------

  /** The serial console's last lines (the console log file), bounded in bytes. */
  async logTail(observed: ObservedWorkload, lines: number): Promise<string[]> {
    const file = join(this.consoleDir, `${observed.name}.log`);
    let fh;
    try {
      fh = await open(file, 'r');
    } catch {
      return [];
    }
    try {
      const size = (await fh.stat()).size;
      const len = Math.min(size, LOG_TAIL_MAX_BYTES);
      const buf = Buffer.alloc(len);
      await fh.read(buf, 0, len, size - len);
      let text = buf.toString('utf8').replace(/\r/g, '');
      if (len < size) text = text.slice(text.indexOf('\n') + 1);
      const all = text.split('\n');
      if (all.at(-1) === '') all.pop();
      return all.slice(-Math.max(1, Math.floor(lines)));
    } finally {
      await fh.close();
    }
  }

  /** Usage of our running VMs from one `virsh domstats --list-active` call (the metrics' WorkloadUsage). */
  async usage(signal?: AbortSignal): Promise<VmUsage[]> {
    const s = withTimeout(signal, 30_000);
    const ours = new Map([...this.known.values()].filter((k) => k.ours).map((k) => [k.parsed.name, k]));
    if (ours.size === 0) return [];
    const text = await this.virsh.run('stats', ['domstats', '--cpu-total', '--balloon', '--block', '--interface', '--list-active'], s);
    const out: VmUsage[] = [];
    for (const [name, st] of parseDomStats(text)) {
      const k = ours.get(name);
      if (!k) continue;
      out.push({ workloadId: k.parsed.metadata?.labels[LABELS.workloadId] ?? '', type: 'vm', runtimeId: k.parsed.uuid, ...usageFromDomStats(st) });
    }
    return out;
  }

  /**
   * Lifecycle events of our domains (`virsh event --all --loop`) until the signal aborts. An end the
   * caller did not ask for rejects with RUNTIME_UNAVAILABLE; reconnecting is the caller's job.
   */
  events(signal: AbortSignal, onEvent: (e: RuntimeEvent) => void): Promise<void> {
    if (signal.aborted) return Promise.resolve();
    return new Promise<void>((resolvePromise, reject) => {
      const child = spawn(this.opts.binaries?.virsh ?? 'virsh', ['-q', '-c', this.opts.uri, 'event', '--all', '--loop'], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, LC_ALL: 'C', LANG: 'C' },
      });
      let buf = '';
      let err = '';
      const onLine = (line: string) => {
        const m = /^event '([^']+)' for domain '([^']+)':\s*(\S+)/.exec(line.trim());
        if (!m || m[1] !== 'lifecycle') return;
        const name = m[2] ?? '';
        const action = (m[3] ?? '').toLowerCase();
        if (!EVENT_ACTIONS.has(action) || !name.startsWith(this.opts.namePrefix)) return;
        const k = this.known.get(name);
        const workloadId = k?.ours ? k.parsed.metadata?.labels[LABELS.workloadId] : undefined;
        if (workloadId === undefined) return;
        try {
          onEvent({ workloadId, action, runtimeId: k?.parsed.uuid ?? '' });
        } catch (e) {
          this.logger.warn({ err: e instanceof Error ? e.message : String(e) }, 'libvirt event handler threw');
        }
      };
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
        buf += chunk;
        let nl: number;
        while ((nl = buf.indexOf('\n')) !== -1) {
          onLine(buf.slice(0, nl));
          buf = buf.slice(nl + 1);
        }
        if (buf.length > 1024 * 1024) buf = '';
      });
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
        if (err.length < 8192) err += chunk;
      });
      const onAbort = () => child.kill('SIGTERM');
      signal.addEventListener('abort', onAbort, { once: true });
      child.on('error', (e) => {
        signal.removeEventListener('abort', onAbort);
        if (signal.aborted) resolvePromise();
        else reject(translateVirshError(new ToolError('virsh', ['event'], (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'not-found' : 'spawn', err, null, e.message), 'events'));
      });
      child.on('close', (code) => {
        signal.removeEventListener('abort', onAbort);
        if (signal.aborted) resolvePromise();
        else reject(translateVirshError(new ToolError('virsh', ['event'], 'exit', err, code, `virsh event exited with status ${code}`), 'events'));
      });
    });
  }

  /** The status report's `vm` block (Runtime.live): what the runtime saw, no engine call. */
  live(workloadId: string, state: RuntimeState | undefined): VmStatus | undefined {
    return this.vmStatus(workloadId, state);
  }

  /** The status report's `vm` block for one workload, from what the runtime saw (no engine call). */
  vmStatus(workloadId: string, state?: RuntimeState): VmStatus | undefined {
    const k = [...this.known.values()].find((x) => x.ours && x.parsed.metadata?.labels[LABELS.workloadId] === workloadId);
    if (!k) return undefined;
    const meta = k.parsed.metadata;
    const addr = this.addresses.get(workloadId);
    const macs = this.macsOf(k);
    const interfaces: VmInterfaceStatus[] = addr?.interfaces ?? macs.map((mac) => ({ mac, ips: [] }));
    const status: VmStatus = { interfaces };
    if (addr?.warning) status.warning = addr.warning;
    const consoleCmd = `virsh -c ${this.opts.uri} console ${k.parsed.name}`;
    if (meta?.login) {
      const ip = firstIpv4(interfaces);
      const login: NonNullable<VmStatus['login']> = { username: meta.login.username, console: consoleCmd };
      if (ip !== undefined) login.ssh = `ssh ${meta.login.username}@${ip}`;
      if (meta.login.fingerprints.length > 0) login.sshKeyFingerprints = [...meta.login.fingerprints];
      if (meta.login.reportPassword) {
        const pw = passwordOf(state);
        if (pw !== undefined) login.password = pw;
      }
      status.login = login;
    }
    return status;
  }
}
