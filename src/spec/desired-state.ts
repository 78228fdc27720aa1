import * as v from 'valibot';
import { positiveInt, safeName } from './common.js';
import { maintenanceWindows, updatePolicyOf } from './maintenance.js';
import { BUILTIN_TYPE_NAMES, BUILTIN_TYPES, WORKLOAD_SCHEMAS } from '../runtimes/registry.js';
import { poolDiskVolumeName } from '../runtimes/libvirt/ids.js';

const d = v.description;

export const API_VERSION = 'persys.dev/v1';

/** A node id, or "*" ("this host"), which the agent accepts only in documents read from a local file. */
export const NODE_ID_PATTERN = /^(?:\*|[A-Za-z0-9][A-Za-z0-9._-]{0,252})$/;
/** The nodeId that a local (file://) desired-state document may use to mean "this host, whatever its id". */
export const ANY_NODE_ID = '*';

export const workload = v.variant('type', WORKLOAD_SCHEMAS, `type must be ${typeNames()}`);

const POOL_NAME = safeName('pool name');

export const volumeDecl = v.strictObject({
  name: v.pipe(safeName('volume name'), d('Volume name; containers mount it by this name (a Docker volume of the same name).')),
  pool: v.pipe(safeName('pool name'), d('The storage pool (storagePools[].name) the volume lives in.')),
  sizeBytes: v.pipe(positiveInt('sizeBytes'), d('Size: a hard limit in loop and libvirt pools, an accounted quota in dir pools. Only grows: a smaller size is refused.')),
  reclaimPolicy: v.pipe(
    v.optional(v.picklist(['retain', 'delete'], 'reclaimPolicy must be retain or delete')),
    d('When the volume leaves the document: retain (default) keeps it and its data, delete removes them.'),
  ),
  mode: v.pipe(v.optional(v.pipe(v.number(), v.integer('mode must be an integer'), v.minValue(0, 'mode must be 0-0o7777'), v.maxValue(0o7777, 'mode must be 0-0o7777'))), d('dir pools: mode of the volume directory (default 0o755).')),
  uid: v.pipe(v.optional(v.pipe(v.number(), v.integer('uid must be an integer'), v.minValue(0, 'uid must not be negative'))), d('dir pools: owner of the volume directory.')),
  gid: v.pipe(v.optional(v.pipe(v.number(), v.integer('gid must be an integer'), v.minValue(0, 'gid must not be negative'))), d('dir pools: group of the volume directory.')),
});

export const storagePoolDecl = v.strictObject({
  name: v.pipe(safeName('pool name'), d('Pool name.')),
  type: v.pipe(
    v.picklist(['dir', 'loop', 'libvirt'], 'type must be dir, loop or libvirt'),
    d('dir: subdirectories, quota accounted at admission; loop: one ext4 image per volume, hard limit; libvirt: a libvirt dir pool of qcow2 volumes (VM disks).'),
  ),
  path: v.pipe(
    v.string(),
    v.startsWith('/', 'path must be absolute'),
    v.check((p) => !p.split('/').includes('..'), "path must not contain '..'"),
    v.check((p) => !p.includes('\0'), 'path must not contain NUL'),
    d('Directory on the host; must be under policy.allowedStoragePrefixes (default /var/lib/persys-agent/pools).'),
  ),
  capacityBytes: v.pipe(positiveInt('capacityBytes'), d('Quota for the pool as a whole: the sizes of its volumes (retained ones too) never add up to more.')),
});

export const desiredStateDocument = v.pipe(
  v.strictObject({
    apiVersion: v.pipe(v.literal(API_VERSION, `apiVersion must be "${API_VERSION}"`), d('Document format version.')),
    kind: v.pipe(v.literal('DesiredState', 'kind must be "DesiredState"'), d('Document kind.')),
    nodeId: v.pipe(
      v.string(),
      v.regex(NODE_ID_PATTERN, 'nodeId must be the node\'s id (1-253 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit) or "*"'),
      d(
        'The node this document is for; must equal the agent\'s node id. "*" means "this host, whatever its id" and is ' +
          'accepted only from a local file (a file:// source or --desired FILE); documents fetched over HTTPS must name the node exactly.',
      ),
    ),
    generation: v.pipe(
      v.number(),
      v.integer('generation must be an integer'),
      v.minValue(0, 'generation must not be negative'),
      v.maxValue(Number.MAX_SAFE_INTEGER, 'generation is too large'),
      d('Only grows; a lower generation than the stored one is rejected.'),
    ),
    expiresAt: v.pipe(
      v.optional(v.pipe(v.string(), v.isoTimestamp('expiresAt must be an ISO 8601 timestamp with a time zone, e.g. 2030-01-01T00:00:00Z'))),
      d('After this time the document is never newly applied (DESIRED_STATE_EXPIRED); when the applied one expires its workloads keep running and the report says so. Set by `persys-agent sign --expires`.'),
    ),
    labels: v.pipe(v.optional(v.record(v.string(), v.string())), d('Node labels reported back.')),
    workloads: v.pipe(
      v.array(workload),
      v.maxLength(10000, 'workloads has more than 10000 entries'),
      d('Every workload this node should run; ids must be unique. An empty list removes every workload.'),
    ),
    volumes: v.pipe(v.optional(v.pipe(v.array(volumeDecl), v.maxLength(1000, 'volumes has more than 1000 entries'))), d('Sized volumes in storage pools (docs/storage.md); names must be unique.')),
    storagePools: v.pipe(v.optional(v.pipe(v.array(storagePoolDecl), v.maxLength(100, 'storagePools has more than 100 entries'))), d('Storage pools (docs/storage.md); names must be unique.')),
    maintenance: v.pipe(
      v.optional(
        v.strictObject({
          windows: v.pipe(maintenanceWindows, d('Node-wide maintenance windows; when set they replace the config\'s maintenance.windows (docs/updates.md).')),
        }),
      ),
      d('Maintenance windows: updates that restart a running workload wait for one (workloads[].update.window).'),
    ),
  }),
  // Duplicate ids are reported even when the document has other errors (so every error shows at once).
  v.rawCheck(({ dataset, addIssue }) => {
    const doc: unknown = dataset.value;
    if (typeof doc !== 'object' || doc === null || !('workloads' in doc) || !Array.isArray(doc.workloads)) return;
    const workloads: unknown[] = doc.workloads;
    const firstIndex = new Map<string, number>();
    workloads.forEach((w, i) => {
      if (typeof w !== 'object' || w === null || !('id' in w) || typeof w.id !== 'string') return;
      const first = firstIndex.get(w.id);
      if (first === undefined) {
        firstIndex.set(w.id, i);
        return;
      }
      addIssue({
        message: `duplicate workload id (already used by workloads[${first}])`,
        input: w.id,
        path: [
          { type: 'object', origin: 'value', input: doc as Record<string, unknown>, key: 'workloads', value: workloads },
          { type: 'array', origin: 'value', input: workloads, key: i, value: w },
          { type: 'object', origin: 'value', input: w as Record<string, unknown>, key: 'id', value: w.id },
        ],
      });
    });
  }),
  // Volume and pool names are unique, a volume names a declared pool, a VM disk's pool is a declared libvirt pool.
  v.rawCheck(({ dataset, addIssue }) => {
    const doc: unknown = dataset.value;
    if (typeof doc !== 'object' || doc === null) return;
    const rec = doc as Record<string, unknown>;
    const names = (key: string): Map<string, number> => {
      const seen = new Map<string, number>();
      const list = rec[key];
      if (!Array.isArray(list)) return seen;
      list.forEach((x: unknown, i) => {
        if (typeof x !== 'object' || x === null || typeof (x as { name?: unknown }).name !== 'string') return;
        const n = (x as { name: string }).name;
        const first = seen.get(n);
        if (first === undefined) seen.set(n, i);
        else addIssue({ message: `duplicate ${key === 'volumes' ? 'volume' : 'pool'} name (already used by ${key}[${first}])`, input: n, path: issuePath(rec, key, i, 'name') });
      });
      return seen;
    };
    const pools = names('storagePools');
    const volNames = names('volumes');
    const vols = rec.volumes;
    if (Array.isArray(vols)) {
      vols.forEach((x: unknown, i) => {
        const pool = typeof x === 'object' && x !== null ? (x as { pool?: unknown }).pool : undefined;
        // A malformed name has its own issue already.
        if (typeof pool === 'string' && v.is(POOL_NAME, pool) && !pools.has(pool)) addIssue({ message: `pool ${pool} is not declared in storagePools`, input: pool, path: issuePath(rec, 'volumes', i, 'pool') });
      });
    }
    // A VM disk with `pool:` is a qcow2 volume in a declared libvirt pool, named <workload id>.<disk>.
    const poolList = Array.isArray(rec.storagePools) ? (rec.storagePools as unknown[]) : [];
    const typeOf = (name: string): unknown => (poolList[pools.get(name) ?? -1] as { type?: unknown } | undefined)?.type;
    const owners = new Map<string, string>();
    for (const [n, i] of volNames) owners.set(n, `volumes[${i}]`);
    const workloads = Array.isArray(rec.workloads) ? (rec.workloads as unknown[]) : [];
    workloads.forEach((w, i) => {
      const wl = (typeof w === 'object' && w !== null ? w : {}) as { id?: unknown; type?: unknown; spec?: { disks?: unknown } };
      if (wl.type !== 'vm' || typeof wl.id !== 'string' || !Array.isArray(wl.spec?.disks)) return;
      const disks = wl.spec.disks as unknown[];
      disks.forEach((dk, j) => {
        const disk = (typeof dk === 'object' && dk !== null ? dk : {}) as { name?: unknown; pool?: unknown };
        if (typeof disk.pool !== 'string' || !v.is(POOL_NAME, disk.pool)) return;
        const path = deepPath(rec, ['workloads', i, 'spec', 'disks', j, 'pool']);
        const here = `workloads[${i}].spec.disks[${j}]`;
        if (!pools.has(disk.pool)) addIssue({ message: `pool ${disk.pool} is not declared in storagePools`, input: disk.pool, path });
        else if (typeOf(disk.pool) !== 'libvirt') addIssue({ message: `pool ${disk.pool} is of type ${String(typeOf(disk.pool))}; VM disks need a pool of type libvirt`, input: disk.pool, path });
        if (typeof disk.name !== 'string') return;
        const vol = poolDiskVolumeName(wl.id as string, disk.name);
        const other = owners.get(vol);
        if (other !== undefined) addIssue({ message: `the volume of this disk, ${vol}, has the name of ${other}'s; rename one`, input: disk.pool, path });
        else owners.set(vol, here);
      });
    });
    attachedVolumeIssues(rec, volNames, typeOf, addIssue);
  }),
  // update.lockFile must lie inside a mount of the workload, so the agent can find it on the host.
  v.rawCheck(({ dataset, addIssue }) => {
    const doc: unknown = dataset.value;
    if (typeof doc !== 'object' || doc === null || !Array.isArray((doc as { workloads?: unknown }).workloads)) return;
    const rec = doc as Record<string, unknown>;
    (rec.workloads as unknown[]).forEach((w, i) => {
      if (typeof w !== 'object' || w === null) return;
      const file = updatePolicyOf(w).lockFile;
      if (file === undefined) return;
      const problem = lockFileProblem(w as { type?: unknown; spec?: unknown }, file);
      if (problem === undefined) return;
      const path = issuePath(rec, 'workloads', i, 'update');
      const upd = (w as { update: Record<string, unknown> }).update;
      addIssue({ message: problem, input: file, path: [...path, { type: 'object', origin: 'value', input: upd, key: 'lockFile', value: file }] });
    });
  }),
  d(
    'The desired state of one node, served by the central side. Workload ids must be unique within the document ' +
      '(checked by the agent; JSON Schema cannot express it).',
  ),
);

type AddIssue = (info: { message: string; input: unknown; path?: [v.IssuePathItem, ...v.IssuePathItem[]] }) => void;

/** The document volumes a raw workload uses, by its type's rule; nothing for a workload its own schema refuses. */
function rawVolumeRefs(w: unknown): string[] {
  if (typeof w !== 'object' || w === null) return [];
  const t = BUILTIN_TYPES.get(String((w as { type?: unknown }).type));
  if (!t?.volumeRefs || !v.is(t.schema, w)) return [];
  return t.volumeRefs(w as never);
}

/**
 * A VM disk with `volume:` attaches a declared volume of a libvirt pool, and is its only user: a
 * filesystem written by two guests, or by a guest and a container, is corrupted.
 */
function attachedVolumeIssues(rec: Record<string, unknown>, volNames: ReadonlyMap<string, number>, poolTypeOf: (pool: string) => unknown, addIssue: AddIssue): void {
  const workloads = Array.isArray(rec.workloads) ? (rec.workloads as unknown[]) : [];
  const disks: { i: number; j: number; name: string }[] = [];
  workloads.forEach((w, i) => {
    const wl = (typeof w === 'object' && w !== null ? w : {}) as { type?: unknown; spec?: { disks?: unknown } };
    if (wl.type !== 'vm' || !Array.isArray(wl.spec?.disks)) return;
    (wl.spec.disks as unknown[]).forEach((dk, j) => {
      const name = typeof dk === 'object' && dk !== null ? (dk as { volume?: unknown }).volume : undefined;
      // A malformed name has its own issue already.
      if (typeof name === 'string' && v.is(POOL_NAME, name)) disks.push({ i, j, name });
    });
  });
  if (disks.length === 0) return;
  const vols = Array.isArray(rec.volumes) ? (rec.volumes as { pool?: unknown }[]) : [];
  const users = new Map<string, Set<number>>();
  workloads.forEach((w, i) => {
    for (const r of rawVolumeRefs(w)) users.set(r, (users.get(r) ?? new Set()).add(i));
  });
  const attached = new Map<string, string>();
  for (const { i, j, name } of disks) {
    const path = deepPath(rec, ['workloads', i, 'spec', 'disks', j, 'volume']);
    const at = volNames.get(name);
    if (at === undefined) {
      addIssue({ message: `volume ${name} is not declared in volumes`, input: name, path });
      continue;
    }
    const pool = vols[at]?.pool;
    const type = typeof pool === 'string' ? poolTypeOf(pool) : undefined;
    if (type !== undefined && type !== 'libvirt') {
      addIssue({ message: `volume ${name} is in pool ${String(pool)} of type ${String(type)}; a VM disk attaches volumes of a pool of type libvirt`, input: name, path });
    }
    const first = attached.get(name);
    if (first !== undefined) {
      addIssue({ message: `volume ${name} is already attached by ${first}; a volume is the disk of one VM only`, input: name, path });
      continue;
    }
    attached.set(name, `workloads[${i}].spec.disks[${j}]`);
    const others = [...(users.get(name) ?? [])].filter((k) => k !== i).map((k) => `workloads[${k}]`);
    if (others.length > 0) addIssue({ message: `volume ${name} is attached as a disk here and also used by ${others.join(', ')}; a VM's disk volume has no other user`, input: name, path });
  }
}

/** Why an update.lockFile cannot be found on the host, or undefined when it lies under a bind or volume mount. */
export function lockFileProblem(w: { type?: unknown; spec?: unknown }, file: string): string | undefined {
  if (w.type !== 'container') return `update.lockFile is for container workloads only (a ${String(w.type)} has no mounts the agent can look into)`;
  const mounts = (w.spec as { volumes?: unknown } | undefined)?.volumes;
  const list = Array.isArray(mounts) ? (mounts as { type?: unknown; target?: unknown }[]) : [];
  const inside = list.some((m) => (m.type === 'bind' || m.type === 'volume') && typeof m.target === 'string' && isUnder(file, m.target));
  return inside ? undefined : `update.lockFile ${file} is not inside a bind or volume mount of the workload (spec.volumes[].target)`;
}

/** Whether `file` is strictly below directory `dir` (both absolute). */
export function isUnder(file: string, dir: string): boolean {
  const base = dir.endsWith('/') ? dir : `${dir}/`;
  return file.startsWith(base) && file.length > base.length;
}

/** The issue path of doc[k0][k1]...: one path item per key (a number indexes an array). */
function deepPath(doc: Record<string, unknown>, keys: readonly (string | number)[]): [v.IssuePathItem, ...v.IssuePathItem[]] {
  const out: v.IssuePathItem[] = [];
  let cur: unknown = doc;
  for (const k of keys) {
    const value = (cur as Record<string | number, unknown>)[k];
    if (typeof k === 'number') out.push({ type: 'array', origin: 'value', input: cur as unknown[], key: k, value });
    else out.push({ type: 'object', origin: 'value', input: cur as Record<string, unknown>, key: k, value });
    cur = value;
  }
  return out as [v.IssuePathItem, ...v.IssuePathItem[]];
}

/** The issue path of `doc[key][i][field]`, for a cross-field check. */
function issuePath(doc: Record<string, unknown>, key: string, i: number, field: string): [v.ObjectPathItem, v.ArrayPathItem, v.ObjectPathItem] {
  const list = doc[key] as unknown[];
  const item = list[i] as Record<string, unknown>;
  return [
    { type: 'object', origin: 'value', input: doc, key, value: list },
    { type: 'array', origin: 'value', input: list, key: i, value: item },
    { type: 'object', origin: 'value', input: item, key: field, value: item[field] },
  ];
}

export type DesiredStateDocument = v.InferOutput<typeof desiredStateDocument>;
export type Workload = v.InferOutput<typeof workload>;
export { containerWorkload, type ContainerWorkload } from '../runtimes/docker/spec.js';
export { composeWorkload, type ComposeWorkload } from '../runtimes/compose/spec.js';
export { vmWorkload, type VmWorkload } from '../runtimes/libvirt/spec.js';
/** The built-in workload types; generic code uses `string` (src/runtimes/registry.ts knows which exist). */
export type WorkloadType = Workload['type'];
export const WORKLOAD_TYPES: readonly WorkloadType[] = BUILTIN_TYPE_NAMES;

/** "container, compose or vm": the registry's type names in words. */
function typeNames(): string {
  const n = [...BUILTIN_TYPE_NAMES];
  return n.length <= 1 ? n.join('') : `${n.slice(0, -1).join(', ')} or ${n.at(-1)}`;
}
