import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import nodeMachineId from 'node-machine-id';

import { writeFileAtomic } from '../util/atomic-write.js';

export type NodeIdSource = 'override' | 'persisted' | 'machine-id' | 'mac';

export interface ResolveNodeIdOptions {
  /** `nodeId` from config / PERSYS_NODE_ID. */
  override?: string;
  stateDir: string;
  /** Returns the OS machine id (original form), or null when there is none. Injected in tests. */
  readMachineId?: () => Promise<string | null>;
  hostname?: () => string;
  primaryMac?: () => string | null | Promise<string | null>;
  /** Told why a machine id was not used (all zeros, shared by clones), and of a node-id file that is damaged or not from this host. */
  logger?: { warn(obj: object, msg: string): void; info?(obj: object, msg: string): void };
}

export const NODE_ID_FILE = 'node-id';
/** Same rule as the config schema's nodeId, so a persisted id is always one the config would accept. */
const VALID_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/;

const sha12 = (s: string): string => createHash('sha256').update(s).digest('hex').slice(0, 12);

/** Lower-case [a-z0-9-] only (dots of an FQDN become dashes), no leading/trailing/double dashes, at most 63 chars. */
export function sanitizeHostname(name: string): string {
  const s = name
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/-+/g, '-')
    .replace(/^-|-$/g, '')
    .slice(0, 63)
    .replace(/-$/, '');
  return s || 'node';
}

/** Where Linux keeps the machine id (systemd, then D-Bus). */
export const MACHINE_ID_FILES = ['/etc/machine-id', '/var/lib/dbus/machine-id'] as const;

/**
 * Machine ids that do not tell hosts apart and are treated as absent, with a WARN: all zeros
 * (written by image builders that blank the id), all f's, and the MD5 of the empty string, which
 * an image built with `md5sum </dev/null > /etc/machine-id` carries into every clone.
 */
export const SHARED_MACHINE_IDS: ReadonlySet<string> = new Set(['00000000000000000000000000000000', 'ffffffffffffffffffffffffffffffff', 'd41d8cd98f00b204e9800998ecf8427e']);

const MACHINE_ID = /^[0-9a-f]{32}$/;

/**
 * The OS machine id in its original form (we hash it ourselves, with the hostname beside it, so
 * the raw id never leaves the host), or null when there is none. On Linux the two files are read
 * directly: node-machine-id falls back to the hostname when they are missing, which would give
 * cloned hosts with the same hostname the same node id. Elsewhere node-machine-id (ioreg, reg).
 * A file that holds no id (missing, empty, systemd's `uninitialized`) is skipped.
 */
export async function defaultReadMachineId(files: readonly string[] = MACHINE_ID_FILES, platform: NodeJS.Platform = process.platform): Promise<string | null> {
  if (platform !== 'linux') {
    try {
      const id = (await nodeMachineId.machineId(true)).trim();
      return id === '' || id === os.hostname() ? null : id;
    } catch {
      return null;
    }
  }
  for (const file of files) {
    const text = await fsp.readFile(file, 'utf8').catch(() => '');
    const id = text.trim().toLowerCase();
    if (MACHINE_ID.test(id)) return id;
  }
  return null;
}

/** One network interface as /sys/class/net describes it. */
export interface NicInfo {
  name: string;
  mac: string;
  /** Backed by a device (/sys/class/net/<if>/device exists), not under /sys/devices/virtual. */
  physical: boolean;
  /** A bridge (has /sys/class/net/<if>/bridge). */
  bridge: boolean;
  /** addr_assign_type: 0 permanent, 1 random, 2 stolen, 3 set by user space; null when unknown. */
  addrAssignType: number | null;
}

const VIRTUAL_NIC = /^(lo|docker|veth|br-|virbr|vnet|tap|tun|cni|flannel|cali|vxlan|wg|ifb|dummy|bond)/;
const ZERO_MAC = '00:00:00:00:00:00';
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** The host's interfaces from /sys/class/net (Linux). Empty where that does not exist. */
export async function listInterfaces(sysNet = '/sys/class/net'): Promise<NicInfo[]> {
  let names: string[];
  try {
    names = await fsp.readdir(sysNet);
  } catch {
    return [];
  }
  const read = (p: string) => fsp.readFile(p, 'utf8').then((t) => t.trim(), () => null);
  const exists = (p: string) => fsp.access(p).then(() => true, () => false);
  return Promise.all(
    names.map(async (name) => {
      const dir = join(sysNet, name);
      const real = await fsp.realpath(dir).catch(() => dir);
      const assign = await read(join(dir, 'addr_assign_type'));
      return {
        name,
        mac: ((await read(join(dir, 'address'))) ?? '').toLowerCase(),
        physical: !real.includes('/devices/virtual/') && (await exists(join(dir, 'device'))),
        bridge: await exists(join(dir, 'bridge')),
        addrAssignType: assign === null || assign === '' ? null : Number(assign),
      };
    }),
  );
}

/**
 * The MAC that stands in for a missing machine id: the lowest one among stable physical
 * interfaces. Virtual, bridge, docker and veth interfaces are skipped (their MACs come and go with
 * containers and VMs), and so are random or user-set addresses (they change on reboot).
 */
export function primaryMacOf(nics: readonly NicInfo[]): string | null {
  const stable = nics
    .filter((n) => n.physical && !n.bridge && !VIRTUAL_NIC.test(n.name))
    .filter((n) => n.addrAssignType === null || n.addrAssignType === 0 || n.addrAssignType === 2)
    .map((n) => n.mac.toLowerCase())
    .filter((m) => MAC.test(m) && m !== ZERO_MAC)
    .sort();
  return stable[0] ?? null;
}

/**
 * Where /sys/class/net does not exist (not Linux): the lowest non-internal, non-zero MAC of an
 * interface not named like a virtual one.
 */
export function defaultPrimaryMac(ifaces: NodeJS.Dict<os.NetworkInterfaceInfo[]> = os.networkInterfaces()): string | null {
  const macs: string[] = [];
  for (const name of Object.keys(ifaces)) {
    if (VIRTUAL_NIC.test(name)) continue;
    const info = (ifaces[name] ?? []).find((i) => !i.internal && i.mac && i.mac !== ZERO_MAC);
    if (info) macs.push(info.mac.toLowerCase());
  }
  return macs.sort()[0] ?? null;
}

async function hostPrimaryMac(): Promise<string | null> {
  const nics = await listInterfaces();
  return nics.length > 0 ? primaryMacOf(nics) : defaultPrimaryMac();
}

/** The node-id file cannot be used and must not be replaced: `persys-agent run` exits 2 with this. */
export class NodeIdError extends Error {
  override name = 'NodeIdError';
}

/** What the node-id file held: an id, nothing (absent), or text that is no id (`damaged`, shown shortened). */
type Persisted = { id: string } | { id: null; damaged?: string };

const shownText = (s: string): string => JSON.stringify(s.length > 40 ? `${s.slice(0, 37)}...` : s);

async function readPersisted(file: string, strict: boolean): Promise<Persisted> {
  try {
    // Not a regular file (a directory, a FIFO that would block the read, a device): not ours to
    // read or to replace. stat follows a symlink to a regular file, which is read like one.
    const st = await fsp.stat(file);
    if (!st.isFile()) {
      if (!strict) return { id: null };
      throw new NodeIdError(`${file} is not a regular file (${st.isDirectory() ? 'a directory' : 'a special file'}); the agent keeps its node id there: move it away (or set nodeId), then start again`);
    }
    const text = await fsp.readFile(file, 'utf8');
    const id = text.trim();
    // A damaged file is re-derived (deterministically, so usually to the same id) and rewritten, with a WARN.
    return VALID_ID.test(id) ? { id } : { id: null, damaged: shownText(text) };
  } catch (err) {
    if (err instanceof NodeIdError) throw err;
    // The agent must be able to read its own state dir; a read-only caller (plan, run by another
    // user) makes do with the derived id, which is what the file holds unless overridden.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || !strict) return { id: null };
    throw err;
  }
}

async function persist(stateDir: string, file: string, id: string): Promise<void> {
  await fsp.mkdir(stateDir, { recursive: true, mode: 0o700 });
  await writeFileAtomic(file, `${id}\n`, { mode: 0o600 });
}

/**
 * The node's stable id, in order: the override (config nodeId / PERSYS_NODE_ID); the id persisted
 * in `<stateDir>/node-id`; `<hostname>-<12 hex of sha256(machine id)>`; `<hostname>-<12 hex of
 * sha256(primary MAC)>` where no usable machine id can be read (none, all zeros, or shared by
 * clones: WARN). A hostname never stands in for a machine id.
 *
 * Decision: an override wins and IS persisted, replacing a different persisted id. The file always
 * holds the id the node last ran under, so removing the override later keeps the node under the
 * name the fleet knows it by, instead of silently switching back to a derived id (which would look
 * like a new node to the central side and orphan the old one's status).
 */
export function resolveNodeId(opts: ResolveNodeIdOptions): Promise<{ nodeId: string; source: NodeIdSource }> {
  return resolveWith(opts, true);
}

/**
 * The id `resolveNodeId` would return, writing nothing (for `persys-agent plan`, which must not
 * change the host; the state dir need not even exist).
 */
export function resolveNodeIdReadOnly(opts: ResolveNodeIdOptions): Promise<{ nodeId: string; source: NodeIdSource }> {
  return resolveWith(opts, false);
}

async function resolveWith(opts: ResolveNodeIdOptions, write: boolean): Promise<{ nodeId: string; source: NodeIdSource }> {
  const file = join(opts.stateDir, NODE_ID_FILE);
  const persisted = await readPersisted(file, write);

  if (opts.override !== undefined && opts.override !== '') {
    if (!VALID_ID.test(opts.override)) throw new Error(`node id ${JSON.stringify(opts.override)} is not valid: 1-253 characters of A-Z a-z 0-9 . _ -`);
    if (write && persisted.id !== opts.override) {
      if (persisted.id !== null) opts.logger?.info?.({ file, persisted: persisted.id, nodeId: opts.override }, 'the nodeId setting replaces the node id persisted in the state dir');
      await persist(opts.stateDir, file, opts.override);
    }
    return { nodeId: opts.override, source: 'override' };
  }
  if (persisted.id !== null) {
    if (write) await warnIfForeign(opts, file, persisted.id);
    return { nodeId: persisted.id, source: 'persisted' };
  }

  const derived = await derive(opts, opts.logger);
  if (persisted.damaged !== undefined) {
    opts.logger?.warn({ file, content: persisted.damaged, nodeId: derived.nodeId }, `the node-id file holds no valid node id; derived ${derived.nodeId} again (${derived.source}) and rewrote the file`);
  }
  if (write) await persist(opts.stateDir, file, derived.nodeId);
  return derived;
}

const DERIVED_HASH = /-([0-9a-f]{12})$/;

/**
 * A persisted id of the derived form whose hash is not this host's (machine id or MAC) came from
 * another host: a state dir copied over, or a cloned disk image. The file still wins (the fleet
 * may know the node by that name, docs/state.md), but two hosts reporting as one node is silent
 * damage, so it is said at every start until someone decides. A renamed host (same hash) is not.
 */
async function warnIfForeign(opts: ResolveNodeIdOptions, file: string, persisted: string): Promise<void> {
  const mine = DERIVED_HASH.exec(persisted)?.[1];
  if (mine === undefined) return; // a chosen name (an earlier nodeId setting), not a derived one
  const here = await derive(opts, undefined).catch(() => null);
  const theirs = here ? DERIVED_HASH.exec(here.nodeId)?.[1] : undefined;
  if (!here || theirs === undefined || theirs === mine) return;
  opts.logger?.warn(
    { file, persisted, derivedHere: here.nodeId },
    `the node id in the state dir (${persisted}) was not derived on this host (here it would be ${here.nodeId}): kept, the file wins; if this state dir or disk image was copied from another host, stop the agent, remove ${file} (or set nodeId) and start again`,
  );
}

/** `<hostname>-<hash of the machine id, else of the primary MAC>`; throws NodeIdError with neither. */
async function derive(opts: ResolveNodeIdOptions, logger: ResolveNodeIdOptions['logger']): Promise<{ nodeId: string; source: NodeIdSource }> {
  const host = sanitizeHostname((opts.hostname ?? os.hostname)());
  // Any failure to read the machine id means "none"; the MAC is the documented stand-in.
  let machineId = await (opts.readMachineId ?? (() => defaultReadMachineId()))().catch(() => null);
  if (machineId && SHARED_MACHINE_IDS.has(machineId.trim().toLowerCase())) {
    const why = /^0+$/.test(machineId.trim()) ? 'is all zeros' : 'is one known to be shared by cloned images';
    logger?.warn({ machineIdFiles: MACHINE_ID_FILES }, `the machine id ${why}; treating it as absent and deriving the node id from the primary MAC (run systemd-machine-id-setup, or set nodeId)`);
    machineId = null;
  }
  if (machineId) return { nodeId: `${host}-${sha12(machineId)}`, source: 'machine-id' };
  const mac = await (opts.primaryMac ?? hostPrimaryMac)();
  if (!mac) {
    // No stable input at all: a random id would be persisted but lost with the state dir, so ask for one.
    throw new NodeIdError('cannot derive a node id: no machine id and no stable physical network interface; set nodeId in the config or PERSYS_NODE_ID');
  }
  return { nodeId: `${host}-${sha12(mac.toLowerCase())}`, source: 'mac' };
}
