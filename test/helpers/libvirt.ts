/**
 * Helpers for suites on the real libvirtd (qemu:///system):
 *   - an isolated libvirt network per suite (no <forward>: nothing leaves the host), with its own bridge
 *     and DHCP range in a 10.x subnet no host interface uses;
 *   - DHCP leases of such a network (`virsh net-dhcp-leases`), which is how tests see a guest's address
 *     and hostname without ever sending it a packet;
 *   - cleanup by our domain metadata (node id) and by name, also of what an earlier, crashed run left:
 *     test node ids and network names carry the pid of the process that made them, and a leftover
 *     whose process is gone is removed.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rm, writeFile, mkdtemp } from 'node:fs/promises';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { parseDomainXml } from '../../src/runtimes/libvirt/domain-xml.js';

const run = promisify(execFile);
export const LIBVIRT_URI = 'qemu:///system';
const NETWORK_PREFIX = 'persys-test-';

export async function virsh(...args: string[]): Promise<string> {
  const { stdout } = await run('virsh', ['-q', '-c', LIBVIRT_URI, ...args], { timeout: 60_000, env: { ...process.env, LC_ALL: 'C' } });
  return stdout;
}

/** virsh, but a failure is an answer ({ ok: false, stderr }) rather than a throw. */
export async function virshTry(...args: string[]): Promise<{ ok: boolean; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run('virsh', ['-q', '-c', LIBVIRT_URI, ...args], { timeout: 60_000, env: { ...process.env, LC_ALL: 'C' } });
    return { ok: true, stdout, stderr };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    return { ok: false, stdout: e.stdout ?? '', stderr: e.stderr ?? e.message };
  }
}

export interface TestNetwork {
  name: string;
  bridge: string;
  /** e.g. 10.213.77 */
  prefix: string;
  gateway: string;
  remove(): Promise<void>;
}

function hostPrefixes(): Set<string> {
  const used = new Set<string>();
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4') used.add(a.address.split('.').slice(0, 3).join('.'));
  }
  return used;
}

async function libvirtNetworkPrefixes(): Promise<Set<string>> {
  const used = new Set<string>();
  const names = (await virshTry('net-list', '--all', '--name')).stdout.split('\n').map((s) => s.trim()).filter(Boolean);
  for (const n of names) {
    const xml = (await virshTry('net-dumpxml', n)).stdout;
    for (const m of xml.matchAll(/<ip [^>]*address='(\d+\.\d+\.\d+)\.\d+'/g)) if (m[1]) used.add(m[1]);
  }
  return used;
}

/** Defines and starts an isolated network (no <forward>) with DHCP on a free 10.x.y.0/24. */
export async function createTestNetwork(): Promise<TestNetwork> {
  const used = new Set([...hostPrefixes(), ...(await libvirtNetworkPrefixes())]);
  let prefix = '';
  for (let i = 0; i < 50 && prefix === ''; i++) {
    const candidate = `10.${200 + Math.floor(Math.random() * 50)}.${Math.floor(Math.random() * 250) + 1}`;
    if (!used.has(candidate)) prefix = candidate;
  }
  if (prefix === '') throw new Error('no free 10.x.y.0/24 for a test network');
  const hex = randomBytes(3).toString('hex');
  const name = `${NETWORK_PREFIX}${process.pid}-${hex}`;
  const bridge = `vpt${hex}`;
  const xml = `<network>
  <name>${name}</name>
  <bridge name='${bridge}' stp='off' delay='0'/>
  <ip address='${prefix}.1' netmask='255.255.255.0'>
    <dhcp><range start='${prefix}.10' end='${prefix}.200'/></dhcp>
  </ip>
</network>
`;
  const dir = await mkdtemp(join(tmpdir(), 'persys-net-'));
  try {
    await writeFile(join(dir, 'net.xml'), xml);
    await virsh('net-define', join(dir, 'net.xml'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  const remove = async () => {
    await virshTry('net-destroy', name);
    await virshTry('net-undefine', name);
  };
  try {
    await virsh('net-start', name);
  } catch (err) {
    await remove();
    throw err;
  }
  return { name, bridge, prefix, gateway: `${prefix}.1`, remove };
}

export interface Lease {
  mac: string;
  ip: string;
  hostname: string;
}

/** `virsh net-dhcp-leases`: expiry date, time, MAC, protocol, address, hostname, client id. */
export async function dhcpLeases(network: string): Promise<Lease[]> {
  const out = await virsh('net-dhcp-leases', network);
  const leases: Lease[] = [];
  for (const line of out.split('\n')) {
    const cols = line.trim().split(/\s+/);
    if (cols.length < 6 || cols[3] !== 'ipv4') continue;
    leases.push({ mac: (cols[2] ?? '').toLowerCase(), ip: (cols[4] ?? '').replace(/\/\d+$/, ''), hostname: cols[5] ?? '' });
  }
  return leases;
}

interface OurDomain {
  name: string;
  nodeId: string;
  files: string[];
}

async function ourDomains(): Promise<OurDomain[]> {
  const names = (await virshTry('list', '--all', '--name')).stdout.split('\n').map((s) => s.trim()).filter(Boolean);
  const out: OurDomain[] = [];
  for (const name of names) {
    const r = await virshTry('dumpxml', name);
    if (!r.ok) continue;
    const meta = parseDomainXml(r.stdout).metadata;
    const nodeId = meta?.labels['dev.persys.node-id'];
    if (!meta || nodeId === undefined) continue;
    const files = [...meta.disks.map((d) => d.file), ...(meta.seedFile ? [meta.seedFile] : [])];
    out.push({ name, nodeId, files });
  }
  return out;
}

async function removeDomain(d: OurDomain, deleteFilesUnder?: string): Promise<void> {
  await virshTry('destroy', d.name);
  const u = await virshTry('undefine', d.name, '--nvram');
  if (!u.ok && !/failed to get domain|not found/i.test(u.stderr)) throw new Error(`undefine ${d.name}: ${u.stderr}`);
  // Only files in temp directories: a test's storage directory lives there.
  const under = deleteFilesUnder ?? tmpdir();
  for (const f of d.files) if (f.startsWith(`${under}/`)) await rm(f, { force: true });
}

/** Destroys and undefines every domain whose metadata names this node id (use in after()). */
export async function cleanupLibvirtByNodeId(nodeId: string): Promise<number> {
  let n = 0;
  for (const d of await ourDomains()) {
    if (d.nodeId !== nodeId) continue;
    await removeDomain(d);
    n++;
  }
  return n;
}

const pidAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
};

/**
 * Leftovers of earlier runs whose process is gone: domains of test node ids (`test-<x>-<pid>-<hex>`)
 * and networks named persys-test-<pid>-<hex>. Best effort; returns what it removed.
 */
export async function cleanupStaleLibvirtTestResources(): Promise<string[]> {
  const removed: string[] = [];
  for (const d of await ourDomains()) {
    const m = /^test-.*-(\d+)-[0-9a-f]{6}$/.exec(d.nodeId);
    if (!m?.[1] || pidAlive(Number(m[1]))) continue;
    await removeDomain(d).catch(() => undefined);
    removed.push(`domain ${d.name}`);
  }
  const nets = (await virshTry('net-list', '--all', '--name')).stdout.split('\n').map((s) => s.trim()).filter((n) => n.startsWith(NETWORK_PREFIX));
  for (const n of nets) {
    const m = /^persys-test-(\d+)-[0-9a-f]{6}$/.exec(n);
    if (!m?.[1] || pidAlive(Number(m[1]))) continue;
    await virshTry('net-destroy', n);
    await virshTry('net-undefine', n);
    removed.push(`network ${n}`);
  }
  return removed;
}

/** A pool name for a test (`persys-test-<pid>-<hex>`): the stale sweep removes it once its process is gone. */
export function testPoolName(): string {
  return `${NETWORK_PREFIX}${process.pid}-${randomBytes(3).toString('hex')}`;
}

/** Deletes every volume of a libvirt pool, then stops and undefines it (a missing pool is fine). */
export async function removeTestPool(name: string): Promise<void> {
  const vols = (await virshTry('vol-list', name)).stdout.split('\n').map((l) => l.trim().split(/\s+/)[0] ?? '').filter(Boolean);
  for (const v of vols) await virshTry('vol-delete', '--pool', name, v);
  await virshTry('pool-destroy', name);
  await virshTry('pool-undefine', name);
}

/** Pools named persys-test-<pid>-<hex> whose process is gone (what a crashed storage suite left). */
export async function cleanupStaleTestPools(): Promise<string[]> {
  const removed: string[] = [];
  const pools = (await virshTry('pool-list', '--all', '--name')).stdout.split('\n').map((s) => s.trim()).filter((n) => n.startsWith(NETWORK_PREFIX));
  for (const p of pools) {
    const m = /^persys-test-(\d+)-[0-9a-f]{6}$/.exec(p);
    if (!m?.[1] || pidAlive(Number(m[1]))) continue;
    await removeTestPool(p);
    removed.push(`pool ${p}`);
  }
  return removed;
}

/** Domain names (all, any state). */
export async function domainNames(): Promise<string[]> {
  return (await virsh('list', '--all', '--name')).split('\n').map((s) => s.trim()).filter(Boolean);
}
