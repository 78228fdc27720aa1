/**
 * The storage layer of one agent: storage.json, the storage plan of each pass, and what the report
 * and metrics show. The loop calls beforeWorkloads() before it plans workloads (pools ensured,
 * volumes created, resumed, grown; the storage gate for the workload plan) and afterWorkloads()
 * after it executed them (volumes that left the document removed per reclaimPolicy, once the
 * workloads that mounted them are gone).
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../log.js';
import type { PlanGate } from '../reconcile/planner.js';
import type { TypeRegistry } from '../runtimes/registry.js';
import type { WorkloadBase } from '../runtimes/runtime.js';
import type { StatusReport } from '../spec/status-report.js';
import { writeFileAtomic } from '../util/atomic-write.js';
import { storageGate } from './gate.js';
import type { VolumeOps } from './host-ops.js';
import { documentVolumes, planStorage, type StoragePlan, type VolumeAction } from './plan.js';
import { emptyStorageState, enforcementOf, type PoolDecl, type StorageState, type VolumeDecl, type VolumeState } from './types.js';
import { createVolume, deleteVolume, growVolume, reattachVolume, resumeVolume, type VolumeContext, type VolumeRecords } from './volumes.js';

export const STORAGE_FILE = 'storage.json';

export interface StorageDocument {
  workloads: readonly WorkloadBase[];
  volumes?: readonly VolumeDecl[] | undefined;
  storagePools?: readonly PoolDecl[] | undefined;
}

export type StorageReport = NonNullable<StatusReport['storage']>;

export async function readStorageState(stateDir: string): Promise<StorageState> {
  try {
    const raw = JSON.parse(await fsp.readFile(join(stateDir, STORAGE_FILE), 'utf8')) as StorageState;
    if (raw?.version !== 1 || typeof raw.volumes !== 'object' || typeof raw.pools !== 'object') throw new Error(`${STORAGE_FILE}: unknown format`);
    return raw;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return emptyStorageState();
    throw err;
  }
}

/** Bytes a file or directory tree occupies on the host (allocated blocks: a sparse image counts what it uses). */
async function allocatedBytes(path: string, budget = { entries: 100_000 }): Promise<number> {
  let st;
  try {
    st = await fsp.lstat(path);
  } catch {
    return 0;
  }
  let total = st.blocks * 512;
  if (st.isDirectory() && budget.entries > 0) {
    const names = await fsp.readdir(path).catch(() => [] as string[]);
    for (const n of names) {
      if (--budget.entries <= 0) break;
      total += await allocatedBytes(join(path, n), budget);
    }
  }
  return total;
}

export interface StorageManagerOptions {
  stateDir: string;
  nodeId: string;
  ops: VolumeOps;
  allowedPrefixes: readonly string[];
  types: TypeRegistry;
  logger: Logger;
  now?: () => Date;
  onChange?: () => void;
}

export class StorageManager {
  private state: StorageState = emptyStorageState();
  private last: StoragePlan | null = null;
  private lastDoc: StorageDocument | null = null;
  private readonly used = new Map<string, number>();
  private readonly errors = new Map<string, string>();
  private readonly ctx: VolumeContext;
  private writing: Promise<void> = Promise.resolve();

  constructor(private readonly o: StorageManagerOptions) {
    const records: VolumeRecords = {
      get: (name) => (Object.hasOwn(this.state.volumes, name) ? this.state.volumes[name] : undefined),
      put: async (v) => {
        this.state = { ...this.state, volumes: { ...this.state.volumes, [v.name]: v } };
        await this.save();
      },
      remove: async (name) => {
        const { [name]: _gone, ...rest } = this.state.volumes;
        this.state = { ...this.state, volumes: rest };
        await this.save();
      },
    };
    this.ctx = { ops: o.ops, records, nodeId: o.nodeId, now: o.now ?? (() => new Date()) };
  }

  get current(): StorageState {
    return this.state;
  }

  private save(): Promise<void> {
    const data = JSON.stringify(this.state, null, 2);
    this.writing = this.writing.then(() => writeFileAtomic(join(this.o.stateDir, STORAGE_FILE), data));
    return this.writing;
  }

  /** Reads storage.json and attaches every loop volume again (before any container is started). */
  async start(): Promise<void> {
    this.state = await readStorageState(this.o.stateDir);
    for (const v of Object.values(this.state.volumes)) {
      try {
        await reattachVolume(this.ctx, v);
      } catch (err) {
        const msg = err instanceof Error ? err.message : String(err);
        this.errors.set(v.name, `re-attach failed: ${msg}`);
        this.o.logger.error({ volume: v.name, err: msg }, `could not re-attach volume ${v.name}`);
      }
    }
  }

  /** A volume as storage.json has it (pool, phase, path), for a runtime that attaches it. */
  volume(name: string): Readonly<VolumeState> | undefined {
    return Object.hasOwn(this.state.volumes, name) ? this.state.volumes[name] : undefined;
  }

  plan(doc: StorageDocument | null): StoragePlan {
    return planStorage({ pools: doc ? (doc.storagePools ?? []) : null, volumes: doc ? documentVolumes(doc, this.o.types) : null, state: this.state, allowedPrefixes: this.o.allowedPrefixes });
  }

  /** Pools and volume creates/grows of this pass; the gate the workload plan applies. */
  async beforeWorkloads(doc: StorageDocument | null): Promise<PlanGate | null> {
    this.lastDoc = doc;
    let p = this.plan(doc);
    let changed = false;
    for (const a of p.pools) {
      if (a.kind !== 'ensure') continue;
      try {
        if (a.pool.type === 'libvirt') await this.o.ops.libvirtPoolEnsure(a.pool.name, a.pool.path);
        else await this.o.ops.mkdir(a.pool.path, 0o700);
        this.state = { ...this.state, pools: { ...this.state.pools, [a.pool.name]: { ...a.pool, ...(a.pool.type === 'libvirt' ? { defined: true } : {}) } } };
        await this.save();
        this.errors.delete(`pool:${a.pool.name}`);
        changed = true;
      } catch (err) {
        this.fail(`pool:${a.pool.name}`, `pool ${a.pool.name}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    if (changed) p = this.plan(doc);
    const declared = new Set((doc ? documentVolumes(doc, this.o.types) : []).map((v) => v.name));
    // Two rounds: an interrupted delete of a declared volume is finished, then the volume made afresh.
    for (let round = 0; round < 2; round++) {
      let again = false;
      for (const a of p.volumes) {
        if (a.kind === 'noop' || a.kind === 'deny') continue;
        // Deletes of volumes that left the document wait for afterWorkloads (their containers go first).
        if (a.kind === 'delete' && !declared.has(a.name)) continue;
        if ((a.kind === 'create' || a.kind === 'resume' || a.kind === 'grow') && this.errors.has(`pool:${a.pool.name}`)) continue;
        const applied = await this.apply(a);
        changed = applied || changed;
        if (applied && a.kind === 'delete') again = true;
      }
      if (!again) break;
      p = this.plan(doc);
    }
    if (changed) this.o.onChange?.();
    this.last = this.plan(doc);
    await this.refreshUsage();
    return doc ? storageGate(this.o.types, declared, this.last, this.state) : null;
  }

  /** Volumes that left the document and are to be deleted: after the workloads that used them went. */
  async afterWorkloads(): Promise<void> {
    const p = this.plan(this.lastDoc);
    let changed = false;
    for (const a of p.volumes) if (a.kind === 'delete') changed = (await this.apply(a)) || changed;
    if (changed) {
      this.last = this.plan(this.lastDoc);
      this.o.onChange?.();
    }
  }

  private fail(key: string, msg: string): void {
    if (this.errors.get(key) !== msg) this.o.logger.error({ err: msg }, 'storage step failed');
    this.errors.set(key, msg);
  }

  private async apply(a: VolumeAction): Promise<boolean> {
    try {
      switch (a.kind) {
        case 'create':
          await createVolume(this.ctx, a.pool, a.decl);
          break;
        case 'resume':
          await resumeVolume(this.ctx, a.pool, a.state);
          break;
        case 'grow':
          await growVolume(this.ctx, a.pool, a.state, a.toBytes);
          break;
        case 'update':
          await this.ctx.records.put({ ...a.state, ...a.changes });
          break;
        case 'delete':
          await deleteVolume(this.ctx, a.state.pool, a.state);
          break;
        default:
          return false;
      }
      this.errors.delete(a.name);
      this.o.logger.info({ volume: a.name, action: a.kind }, `volume ${a.name}: ${a.kind} (${a.reason})`);
      return true;
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      this.fail(a.name, `volume ${a.name}: ${a.kind} failed: ${msg}`);
      const s = this.ctx.records.get(a.name);
      // A failed create stays in Creating/Failed and is resumed from its last step next pass.
      if (s && s.phase === 'Creating') await this.ctx.records.put({ ...s, phase: 'Failed', error: msg });
      else if (s && s.phase !== 'Deleting') await this.ctx.records.put({ ...s, error: msg });
      return true;
    }
  }

  private async refreshUsage(): Promise<void> {
    for (const v of Object.values(this.state.volumes)) this.used.set(v.name, await allocatedBytes(v.path));
    for (const k of [...this.used.keys()]) if (!Object.hasOwn(this.state.volumes, k)) this.used.delete(k);
  }

  report(): StorageReport {
    const doc = this.lastDoc;
    const p = this.last ?? this.plan(doc);
    const users = new Map<string, string[]>();
    for (const w of doc?.workloads ?? []) {
      for (const r of new Set(this.o.types.get(w.type)?.volumeRefs?.(w) ?? [])) users.set(r, [...(users.get(r) ?? []), w.id]);
    }
    const pools: StorageReport['pools'] = p.accounts.map((a) => {
      const used = Object.values(this.state.volumes).filter((v) => v.pool === a.name).reduce((n, v) => n + (this.used.get(v.name) ?? 0), 0);
      const err = this.errors.get(`pool:${a.name}`);
      return { name: a.name, type: a.type, enforcement: a.enforcement, capacityBytes: a.capacityBytes, allocatedBytes: a.allocatedBytes, usedBytes: used, available: Math.max(0, a.capacityBytes - a.allocatedBytes), ...(err ? { error: err } : {}) };
    });
    for (const d of p.pools) {
      if (d.kind === 'deny') {
        const decl = doc?.storagePools?.find((x) => x.name === d.name);
        if (decl) pools.push({ name: d.name, type: decl.type, enforcement: enforcementOf(decl.type), capacityBytes: decl.capacityBytes, allocatedBytes: 0, usedBytes: 0, available: 0, error: `${d.code}: ${d.message}` });
      }
    }
    const volumes: StorageReport['volumes'] = Object.values(this.state.volumes).map((v: VolumeState) => ({
      name: v.name,
      pool: v.pool,
      sizeBytes: v.sizeBytes,
      usedBytes: this.used.get(v.name) ?? 0,
      attachedTo: users.get(v.name) ?? [],
      phase: v.phase,
      reclaimPolicy: v.reclaimPolicy,
      error: p.denied.get(v.name) ? `${p.denied.get(v.name)?.code}: ${p.denied.get(v.name)?.message}` : (this.errors.get(v.name) ?? v.error ?? null),
    }));
    for (const [name, d] of p.denied) {
      if (Object.hasOwn(this.state.volumes, name)) continue;
      const decl = doc ? documentVolumes(doc, this.o.types).find((x) => x.name === name) : undefined;
      volumes.push({ name, pool: decl?.pool ?? '', sizeBytes: decl?.sizeBytes ?? 0, usedBytes: 0, attachedTo: users.get(name) ?? [], phase: 'Refused', reclaimPolicy: decl?.reclaimPolicy ?? 'retain', error: `${d.code}: ${d.message}` });
    }
    volumes.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    return { pools, volumes };
  }
}
