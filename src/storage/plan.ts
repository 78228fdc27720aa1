/**
 * The storage plan: (declared pools and volumes, what storage.json records, host policy) -> what to
 * do to pools and volumes, and which volumes are refused. Pure: no clock, no I/O. Volumes are
 * planned objects, not workloads: the loop applies this plan before the workload steps (creates,
 * grows) and after them (deletes), and the storage gate holds workloads whose volumes are not Ready.
 *
 * Accounting: a pool's allocated bytes are the sizes of every volume it holds, retained ones
 * included (they keep their data and their space), plus the volumes admitted earlier in document
 * order, so the same document on the same host always admits the same volumes.
 */
import type { ErrorCode } from '../errors/index.js';
import type { TypeRegistry } from '../runtimes/registry.js';
import type { WorkloadBase } from '../runtimes/runtime.js';
import { formatBytes } from '../resources/units.js';
import { enforcementOf, type Enforcement, type PoolDecl, type PoolState, type PoolType, type StorageState, type VolumeDecl, type VolumeState } from './types.js';

/**
 * Every volume a document declares: `volumes[]`, then the ones its workloads declare themselves
 * (a VM's disks with `pool:`), in workload order, so admission order is stable.
 */
export function documentVolumes(doc: { workloads: readonly WorkloadBase[]; volumes?: readonly VolumeDecl[] | undefined }, types: TypeRegistry): VolumeDecl[] {
  const out: VolumeDecl[] = [...(doc.volumes ?? [])];
  for (const w of doc.workloads) for (const o of types.get(w.type)?.ownVolumes?.(w) ?? []) out.push({ name: o.name, pool: o.pool, sizeBytes: o.sizeBytes, reclaimPolicy: o.reclaimPolicy });
  return out;
}

export const DEFAULT_STORAGE_PREFIXES: readonly string[] = ['/var/lib/persys-agent/pools'];

export type PoolAction =
  | { kind: 'ensure'; pool: PoolDecl; reason: string }
  | { kind: 'noop'; pool: PoolDecl; reason: string }
  | { kind: 'deny'; name: string; code: ErrorCode; message: string };

export type VolumeAction =
  | { kind: 'create'; name: string; pool: PoolDecl; decl: VolumeDecl; reason: string }
  | { kind: 'resume'; name: string; pool: PoolDecl; state: VolumeState; reason: string }
  | { kind: 'grow'; name: string; pool: PoolDecl; state: VolumeState; toBytes: number; reason: string }
  | { kind: 'update'; name: string; state: VolumeState; changes: Partial<Pick<VolumeState, 'reclaimPolicy' | 'phase'>>; reason: string }
  | { kind: 'delete'; name: string; state: VolumeState; reason: string }
  | { kind: 'deny'; name: string; code: ErrorCode; message: string; reason: string }
  | { kind: 'noop'; name: string; reason: string };

export interface PoolAccount {
  name: string;
  type: PoolType;
  enforcement: Enforcement;
  capacityBytes: number;
  /** Bytes held by the pool's volumes (retained ones too) plus the ones this plan admits. */
  allocatedBytes: number;
  volumes: number;
}

export interface StoragePlan {
  pools: PoolAction[];
  volumes: VolumeAction[];
  accounts: PoolAccount[];
  /** Volumes refused by this plan, by name: the storage gate denies the workloads that mount them. */
  denied: Map<string, { code: ErrorCode; message: string }>;
}

export interface StoragePlanInput {
  /** null: no desired state was ever loaded -> nothing is created and nothing is removed. */
  pools: readonly PoolDecl[] | null;
  volumes: readonly VolumeDecl[] | null;
  state: StorageState;
  /** policy.allowedStoragePrefixes. */
  allowedPrefixes: readonly string[];
}

/** Whether `path` is one of `prefixes` or inside one (by path segments, not by string prefix). */
export function underPrefix(path: string, prefixes: readonly string[]): boolean {
  const norm = (p: string): string => (p.length > 1 ? p.replace(/\/+$/, '') : p);
  const p = norm(path);
  return prefixes.some((raw) => {
    const pre = norm(raw);
    return p === pre || p.startsWith(pre === '/' ? '/' : `${pre}/`);
  });
}

const plural = (n: number, one: string): string => `${n} ${one}${n === 1 ? '' : 's'}`;

/** "volume big needs 300 MiB in pool fast; 224 MiB left (256 MiB capacity, 32 MiB allocated to 1 volume)" */
export function quotaMessage(volume: string, need: number, acc: PoolAccount, growFrom?: number): string {
  const left = Math.max(0, acc.capacityBytes - acc.allocatedBytes);
  const what = growFrom === undefined ? `volume ${volume} needs ${formatBytes(need)}` : `growing volume ${volume} from ${formatBytes(growFrom)} to ${formatBytes(growFrom + need)} needs ${formatBytes(need)} more`;
  return `${what} in pool ${acc.name}; ${formatBytes(left)} left (${formatBytes(acc.capacityBytes)} capacity, ${formatBytes(acc.allocatedBytes)} allocated to ${plural(acc.volumes, 'volume')})`;
}

export function shrinkMessage(volume: string, want: number, have: number): string {
  return `volume ${volume}: sizeBytes ${want} (${formatBytes(want)}) is smaller than its current ${have} (${formatBytes(have)}); volumes never shrink (declare ${have} or more, or a volume with a new name)`;
}

const sameDecl = (a: PoolDecl, s: PoolState): boolean => a.type === s.type && a.path === s.path;

export function planStorage(input: StoragePlanInput): StoragePlan {
  const { state } = input;
  const out: StoragePlan = { pools: [], volumes: [], accounts: [], denied: new Map() };
  if (input.pools === null || input.volumes === null) return out;

  // Pools: refused by policy, or changed under volumes that live in them; else ensured (idempotent).
  const usable = new Map<string, PoolDecl>();
  const poolDenied = new Map<string, { code: ErrorCode; message: string }>();
  for (const p of input.pools) {
    const held = Object.values(state.volumes).filter((v) => v.pool === p.name);
    const recorded = Object.hasOwn(state.pools, p.name) ? state.pools[p.name] : undefined;
    let denial: { code: ErrorCode; message: string } | undefined;
    if (!underPrefix(p.path, input.allowedPrefixes)) {
      denial = { code: 'POLICY_DENIED', message: `pool ${p.name}: path ${p.path} is not under policy.allowedStoragePrefixes (${input.allowedPrefixes.join(', ') || 'none'})` };
    } else if (recorded && !sameDecl(p, recorded) && held.length > 0) {
      denial = {
        code: 'INVALID_SPEC',
        message: `pool ${p.name}: changing type or path (${recorded.type} ${recorded.path} -> ${p.type} ${p.path}) while it holds ${plural(held.length, 'volume')} (${held.map((v) => v.name).join(', ')}) is not supported; declare a new pool`,
      };
    }
    if (denial) {
      poolDenied.set(p.name, denial);
      out.pools.push({ kind: 'deny', name: p.name, ...denial });
      continue;
    }
    usable.set(p.name, p);
    const current = recorded && sameDecl(p, recorded) && recorded.capacityBytes === p.capacityBytes && (p.type !== 'libvirt' || recorded.defined === true);
    out.pools.push(current ? { kind: 'noop', pool: p, reason: 'pool is as declared' } : { kind: 'ensure', pool: p, reason: recorded ? 'pool declaration changed' : 'new pool' });
  }

  // Accounts: what every recorded volume holds (a volume being deleted holds its space until it is gone).
  const accounts = new Map<string, PoolAccount>();
  for (const p of usable.values()) accounts.set(p.name, { name: p.name, type: p.type, enforcement: enforcementOf(p.type), capacityBytes: p.capacityBytes, allocatedBytes: 0, volumes: 0 });
  for (const v of Object.values(state.volumes)) {
    const acc = accounts.get(v.pool);
    if (!acc) continue;
    acc.allocatedBytes += Math.max(v.sizeBytes, v.growingTo ?? 0);
    acc.volumes++;
  }

  const declared = new Set<string>();
  const deny = (name: string, code: ErrorCode, message: string): void => {
    out.denied.set(name, { code, message });
    out.volumes.push({ kind: 'deny', name, code, message, reason: `${code}: ${message}` });
  };
  for (const d of input.volumes) {
    declared.add(d.name);
    const s = Object.hasOwn(state.volumes, d.name) ? state.volumes[d.name] : undefined;
    const pd = poolDenied.get(d.pool);
    if (pd) {
      deny(d.name, pd.code, `volume ${d.name}: ${pd.message}`);
      continue;
    }
    const pool = usable.get(d.pool);
    const acc = accounts.get(d.pool);
    if (!pool || !acc) {
      deny(d.name, 'INVALID_SPEC', `volume ${d.name}: pool ${d.pool} is not declared in storagePools`);
      continue;
    }
    if (!s) {
      if (acc.allocatedBytes + d.sizeBytes > acc.capacityBytes) {
        deny(d.name, 'STORAGE_QUOTA_EXCEEDED', quotaMessage(d.name, d.sizeBytes, acc));
        continue;
      }
      acc.allocatedBytes += d.sizeBytes;
      acc.volumes++;
      out.volumes.push({ kind: 'create', name: d.name, pool, decl: d, reason: `new volume of ${formatBytes(d.sizeBytes)} in ${pool.type} pool ${pool.name}` });
      continue;
    }
    if (s.phase === 'Deleting') {
      // A delete that was started is finished first; the next pass creates the volume afresh.
      out.volumes.push({ kind: 'delete', name: d.name, state: s, reason: 'finishing a delete that was interrupted; the volume is created again after it' });
      continue;
    }
    if (s.pool !== d.pool) {
      deny(d.name, 'INVALID_SPEC', `volume ${d.name} lives in pool ${s.pool}; moving a volume to pool ${d.pool} is not supported (declare a volume with a new name)`);
      continue;
    }
    if (s.phase === 'Creating' || s.phase === 'Failed') {
      out.volumes.push({ kind: 'resume', name: d.name, pool, state: s, reason: `creation stopped after step ${s.step}; resuming` });
      continue;
    }
    const size = s.growingTo ?? s.sizeBytes;
    if (d.sizeBytes < s.sizeBytes) {
      deny(d.name, 'INVALID_SPEC', shrinkMessage(d.name, d.sizeBytes, s.sizeBytes));
      continue;
    }
    if (d.sizeBytes > size || s.phase === 'Growing') {
      const to = Math.max(d.sizeBytes, size);
      const more = to - size;
      if (more > 0 && acc.allocatedBytes + more > acc.capacityBytes) {
        deny(d.name, 'STORAGE_QUOTA_EXCEEDED', quotaMessage(d.name, more, acc, size));
        continue;
      }
      acc.allocatedBytes += more;
      out.volumes.push({ kind: 'grow', name: d.name, pool, state: s, toBytes: to, reason: `grow from ${formatBytes(s.sizeBytes)} to ${formatBytes(to)}` });
      continue;
    }
    const changes: Partial<Pick<VolumeState, 'reclaimPolicy' | 'phase'>> = {};
    const policy = d.reclaimPolicy ?? 'retain';
    if (s.reclaimPolicy !== policy) changes.reclaimPolicy = policy;
    if (s.phase === 'Retained') changes.phase = 'Ready';
    if (Object.keys(changes).length > 0) {
      out.volumes.push({ kind: 'update', name: d.name, state: s, changes, reason: s.phase === 'Retained' ? 're-declared: reusing the retained volume and its data' : `reclaimPolicy is now ${policy}` });
    } else {
      out.volumes.push({ kind: 'noop', name: d.name, reason: 'volume is as declared' });
    }
  }

  // Volumes that left the document: reclaimPolicy decides; a retained one keeps its data and its space.
  for (const s of Object.values(state.volumes)) {
    if (declared.has(s.name)) continue;
    if (s.reclaimPolicy === 'delete' || s.phase === 'Deleting' || s.phase === 'Creating' || s.phase === 'Failed') {
      // A volume whose creation never finished holds no data anyone used: removed whatever its policy.
      const why = s.reclaimPolicy === 'delete' ? 'not in desired state; reclaimPolicy delete' : s.phase === 'Deleting' ? 'finishing an interrupted delete' : `not in desired state; its creation never finished (step ${s.step})`;
      out.volumes.push({ kind: 'delete', name: s.name, state: s, reason: why });
    } else if (s.phase !== 'Retained') {
      out.volumes.push({ kind: 'update', name: s.name, state: s, changes: { phase: 'Retained' }, reason: 'not in desired state; reclaimPolicy retain keeps it and its data' });
    } else {
      out.volumes.push({ kind: 'noop', name: s.name, reason: 'retained (reclaimPolicy retain); re-declare it to use it again' });
    }
  }

  out.accounts = [...accounts.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return out;
}
