import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import nodeMachineId from 'node-machine-id';

import { writeFileAtomic } from '../store/store.js';

export type NodeIdSource = 'override' | 'persisted' | 'machine-id' | 'mac';

export interface ResolveNodeIdOptions {
  /** `nodeId` from config / PERSYS_NODE_ID. */
  override?: string;
  stateDir: string;
  /** Returns the OS machine id (original form), or null when there is none. Injected in tests. */
  readMachineId?: () => Promise<string | null>;
  hostname?: () => string;
  primaryMac?: () => string | null;
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

/**
 * The OS machine id in its original form (we hash it ourselves, with the hostname beside it, so
 * the raw id never leaves the host). node-machine-id shells out (cat /etc/machine-id, ioreg, reg)
 * and rejects when that fails, e.g. in minimal containers; that is "no machine id", not an error.
 */
export async function defaultReadMachineId(): Promise<string | null> {
  try {
    const id = (await nodeMachineId.machineId(true)).trim();
    return id === '' ? null : id;
  } catch {
    return null;
  }
}

const VIRTUAL_NIC = /^(docker|veth|br-|virbr|lo)/;
const ZERO_MAC = '00:00:00:00:00:00';

/**
 * The primary NIC's MAC: the first non-internal, non-zero MAC by interface name, preferring
 * physical-looking interfaces over bridges and veths (whose MACs come and go with containers).
 */
export function defaultPrimaryMac(ifaces: NodeJS.Dict<os.NetworkInterfaceInfo[]> = os.networkInterfaces()): string | null {
  const candidates: { name: string; mac: string }[] = [];
  for (const name of Object.keys(ifaces).sort()) {
    const info = (ifaces[name] ?? []).find((i) => !i.internal && i.mac && i.mac !== ZERO_MAC);
    if (info) candidates.push({ name, mac: info.mac.toLowerCase() });
  }
  const preferred = candidates.find((c) => !VIRTUAL_NIC.test(c.name)) ?? candidates[0];
  return preferred?.mac ?? null;
}

async function readPersisted(file: string, strict: boolean): Promise<string | null> {
  try {
    const id = (await fsp.readFile(file, 'utf8')).trim();
    // A damaged file is re-derived (deterministically, so usually to the same id) and rewritten.
    return VALID_ID.test(id) ? id : null;
  } catch (err) {
    // The agent must be able to read its own state dir; a read-only caller (plan, run by another
    // user) makes do with the derived id, which is what the file holds unless overridden.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || !strict) return null;
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
 * sha256(primary MAC)>` where no machine id can be read.
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
    if (write && persisted !== opts.override) await persist(opts.stateDir, file, opts.override);
    return { nodeId: opts.override, source: 'override' };
  }
  if (persisted) return { nodeId: persisted, source: 'persisted' };

  const host = sanitizeHostname((opts.hostname ?? os.hostname)());
  // Any failure to read the machine id means "none"; the MAC is the documented stand-in.
  const machineId = await (opts.readMachineId ?? defaultReadMachineId)().catch(() => null);
  let derived: { nodeId: string; source: NodeIdSource };
  if (machineId) {
    derived = { nodeId: `${host}-${sha12(machineId)}`, source: 'machine-id' };
  } else {
    const mac = (opts.primaryMac ?? (() => defaultPrimaryMac()))();
    if (!mac) {
      // No stable input at all: a random id would be persisted but lost with the state dir, so ask for one.
      throw new Error('cannot derive a node id: no machine id and no network interface with a MAC; set nodeId in the config or PERSYS_NODE_ID');
    }
    derived = { nodeId: `${host}-${sha12(mac.toLowerCase())}`, source: 'mac' };
  }
  if (write) await persist(opts.stateDir, file, derived.nodeId);
  return derived;
}
