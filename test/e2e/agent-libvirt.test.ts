/**
 * The built CLI as a user runs it, with VMs: a local HTTPS fleet server (throwaway CA) serves a VM
 * workload, the agent defines and starts it on the real libvirtd as a TCG guest on an isolated network
 * this suite defines, and the status reports the server receives carry the guest's leased IPv4 and the
 * login block. The guest takes its DHCP hostname from the seed ISO's local-hostname, so the lease shows
 * the seed was attached and read. Nothing ever connects to the guest's address.
 *
 * A second suite points the agent at a libvirt that is not there: the runtime is reported down, the VM
 * gets RUNTIME_UNAVAILABLE, and a container next to it runs as usual.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';

import Docker from 'dockerode';

import { domainUuid } from '../../src/runtimes/libvirt/ids.js';
import { AgentProcess, waitFor } from '../helpers/agent-process.js';
import { cleanupDockerByLabel, requireEngine, testNodeId } from '../helpers/engines.js';
import { startFleetServer, type FleetServer, type JsonObject } from '../helpers/fleet-server.js';
import { buildTestGuest, type TestGuest } from '../helpers/guest.js';
import { cleanupLibvirtByNodeId, cleanupStaleLibvirtTestResources, createTestNetwork, dhcpLeases, domainNames, virsh, virshTry, type TestNetwork } from '../helpers/libvirt.js';
import { makeThrowawayCa } from '../helpers/tls.js';

const run = promisify(execFile);

interface VmBlock {
  interfaces: { mac: string; ips: string[]; source?: string }[];
  login?: { username: string; ssh?: string; sshKeyFingerprints?: string[]; console?: string; password?: string };
  warning?: { code: string; message: string } | null;
}
interface ReportWorkload {
  id: string;
  type: string;
  phase: string;
  revision?: string;
  actualState: string;
  runtimeId?: string;
  error?: { code: string; message: string } | null;
  vm?: VmBlock;
}
interface Report extends JsonObject {
  seq: number;
  observedGeneration: number | null;
  node: { runtimes: Record<string, string> };
  workloads: ReportWorkload[];
}
const asReport = (r: JsonObject) => r as Report;
const wl = (r: Report, id: string) => r.workloads.find((w) => w.id === id);
const ipv4Of = (w: ReportWorkload | undefined) => w?.vm?.interfaces[0]?.ips.find((x) => !x.includes(':'))?.replace(/\/\d+$/, '');

/** The fleet-server plumbing both suites share. */
function fleet(nodeId: string) {
  const ctx = { server: undefined as FleetServer | undefined, agent: undefined as AgentProcess | undefined, generation: 0 };
  const publish = (workloads: unknown[]) =>
    ctx.server!.setDocument(nodeId, { apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId, generation: ++ctx.generation, workloads });
  const mark = () => Math.max(0, ...ctx.server!.reports(nodeId).map((r) => asReport(r).seq));
  const waitReport = (what: string, pred: (r: Report) => boolean, timeoutMs = 60_000, afterSeq = mark()) =>
    ctx.server!.waitForReport(nodeId, (r) => asReport(r).seq > afterSeq && pred(asReport(r)), timeoutMs).then(asReport, (err: unknown) => {
      const last = ctx.server!.reports(nodeId).at(-1);
      throw new Error(`${what}: ${String(err)}\n--- last report ---\n${JSON.stringify(last, null, 1)}\n--- agent log ---\n${ctx.agent?.dump() ?? ''}`);
    });
  return { ctx, publish, mark, waitReport };
}

const skipLibvirt = await requireEngine('libvirt');

describe('agent with VMs on a real libvirtd, an HTTPS fleet server and a TCG guest', { skip: skipLibvirt, timeout: 900_000 }, () => {
  const nodeId = testNodeId('test-e2evm');
  const hex = randomBytes(3).toString('hex');
  const prefix = `pe${hex}-`;
  const hostname = `e2e-${hex}`;
  const { ctx, publish, waitReport } = fleet(nodeId);
  let dir: string;
  let configPath: string;
  let guest: TestGuest;
  let net: TestNetwork;
  let pubKey = '';
  let keygenFingerprint = '';
  let uuid = '';
  let diskInode = 0;

  const vm = (revision: string) => ({
    id: 'vm1',
    type: 'vm',
    revision,
    spec: {
      vcpus: 1,
      memoryMiB: 128,
      hostname,
      boot: { kernel: guest.kernel, initrd: guest.initrd, cmdline: guest.cmdline },
      disks: [{ name: 'root', sizeBytes: 64 * 1024 * 1024 }],
      networks: [{ network: net.name }],
      cloudInit: { userData: '#cloud-config\npackages: [htop]\n' },
      login: { username: 'alice', sshAuthorizedKeys: [pubKey], generatePassword: true },
      shutdownTimeoutSeconds: 20,
    },
  });

  before(async () => {
    await cleanupStaleLibvirtTestResources();
    dir = await mkdtemp(join(tmpdir(), 'persys-e2evm-'));
    await chmod(dir, 0o711);
    guest = await buildTestGuest();
    net = await createTestNetwork();
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'alice@e2e', '-f', join(dir, 'id')]);
    pubKey = (await readFile(join(dir, 'id.pub'), 'utf8')).trim();
    keygenFingerprint = (await run('ssh-keygen', ['-l', '-f', join(dir, 'id.pub')])).stdout.split(' ')[1] ?? '';
    await mkdir(join(dir, 'pki'), { mode: 0o700 });
    const pki = await makeThrowawayCa(join(dir, 'pki'));
    ctx.server = await startFleetServer({ tls: { certFile: pki.serverCert, keyFile: pki.serverKey } });
    configPath = join(dir, 'config.json');
    await writeFile(
      configPath,
      JSON.stringify({
        nodeId,
        stateDir: join(dir, 'state'),
        logLevel: 'info',
        source: { url: ctx.server.sourceUrl, caFile: pki.caCert, pollIntervalSeconds: 1 },
        status: { url: ctx.server.statusUrl, heartbeatSeconds: 5, debounceMs: 100 },
        reconcile: { intervalSeconds: 2 },
        retry: { initialDelaySeconds: 1, maxDelaySeconds: 2 },
        metrics: { listen: '127.0.0.1:0' },
        docker: { enabled: false },
        // No libvirt.storageDir: the default, <stateDir>/libvirt, under the agent's 0700 state dir.
        libvirt: { namePrefix: prefix, domainType: 'qemu', allowedPathPrefixes: [guest.dir], ipWaitSeconds: 60 },
      }),
    );
  });

  after(async () => {
    await ctx.agent?.stop('SIGTERM').catch(() => undefined);
    await cleanupLibvirtByNodeId(nodeId).catch(() => undefined);
    for (const name of (await domainNames().catch(() => [] as string[])).filter((n) => n.startsWith(prefix))) {
      await virshTry('destroy', name);
      await virshTry('undefine', name, '--nvram');
    }
    await net?.remove();
    await ctx.server?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('pulls a VM workload; within 90 s the report carries the leased IPv4 and the login block', async (t) => {
    publish([vm('1')]);
    const started = Date.now();
    ctx.agent = AgentProcess.start(['run', '--config', configPath]);
    const r = await waitReport('vm1 Running with an IPv4 and login', (r) => wl(r, 'vm1')?.phase === 'Running' && ipv4Of(wl(r, 'vm1')) !== undefined && wl(r, 'vm1')?.vm?.login?.ssh !== undefined, 90_000, 0);
    t.diagnostic(`agent start to report with IPv4: ${((Date.now() - started) / 1000).toFixed(1)} s`);
    assert.equal(r.node.runtimes.libvirt, 'up');
    const w = wl(r, 'vm1')!;
    const ip = ipv4Of(w)!;
    assert.ok(ip.startsWith(`${net.prefix}.`), `${ip} is on the test network`);
    assert.equal(w.vm?.interfaces[0]?.source, 'lease');
    assert.deepEqual(w.vm?.login, {
      username: 'alice',
      ssh: `ssh alice@${ip}`,
      sshKeyFingerprints: [keygenFingerprint],
      console: `virsh -c qemu:///system console ${prefix}vm1`,
    });
    assert.equal(w.vm?.warning, undefined);
    uuid = domainUuid(nodeId, 'vm1');
    assert.equal(w.runtimeId, uuid);
    assert.match((await virsh('domstate', `${prefix}vm1`)).trim(), /^running$/);

    const lease = await waitFor('the lease with the seed hostname', async () => (await dhcpLeases(net.name)).find((l) => l.ip === ip), 30_000);
    assert.equal(lease.hostname, hostname, 'the guest used local-hostname from the seed ISO as its DHCP hostname');
    assert.equal(lease.mac, w.vm?.interfaces[0]?.mac);

    // The generated password is kept in the store (0600), in the record's runtime state, and neither
    // reported (reportPassword unset) nor logged.
    const statePath = join(dir, 'state', 'state.json');
    type State = { records: Record<string, { runtimeState?: { version: number; data: { password?: string } } }> };
    const readPassword = async () => (JSON.parse(await readFile(statePath, 'utf8')) as State).records.vm1?.runtimeState?.data.password;
    const password = await waitFor('the password in the store', readPassword, 10_000);
    assert.equal((await stat(statePath)).mode & 0o777, 0o600);
    assert.ok(!JSON.stringify(ctx.server!.reports(nodeId)).includes(password), 'the password is not in any report');
    assert.ok(!ctx.agent.dump().includes(password), 'the password is not logged');
    diskInode = (await stat(join(dir, 'state', 'libvirt', 'vms', `${prefix}vm1`, 'disk-root.qcow2'))).ino;
  });

  it('an agent restart leaves the VM running and re-adopts it: no step, the address reported again', async () => {
    const code = await ctx.agent!.stop('SIGTERM');
    assert.equal(code, 0);
    assert.match((await virsh('domstate', `${prefix}vm1`)).trim(), /^running$/, 'stopping the agent does not stop VMs');
    const before = ctx.server!.reports(nodeId).length;
    ctx.agent = AgentProcess.start(['run', '--config', configPath]);
    const r = await waitReport('report with the IPv4 from the new process', (r) => ctx.server!.reports(nodeId).length > before && ipv4Of(wl(r, 'vm1')) !== undefined && wl(r, 'vm1')?.phase === 'Running', 60_000, 0);
    assert.equal(wl(r, 'vm1')?.runtimeId, uuid);
    // Let a few poll and reconcile cycles (every 1 s and 2 s) pass.
    const polls = ctx.server!.requests({ nodeId, kind: 'document' }).length;
    await waitFor('five more polls', () => ctx.server!.requests({ nodeId, kind: 'document' }).length >= polls + 5, 30_000);
    assert.equal(ctx.agent.lines.filter((l) => l.msg.startsWith('reconciled:')).length, 0, `no step was applied:\n${ctx.agent.dump()}`);
  });

  it('a VM stopped while the agent is down starts again when the agent is back, also with the state dir reset to 0700', async (t) => {
    assert.equal(await ctx.agent!.stop('SIGTERM'), 0);
    const consolePath = join(dir, 'state', 'libvirt', 'console', `${prefix}vm1.log`);
    const boots = async () => (await readFile(consolePath, 'utf8').catch(() => '')).match(/persys-guest: booted kernel/g)?.length ?? 0;
    const bootsBefore = await boots();
    await virsh('destroy', `${prefix}vm1`);
    assert.match((await virsh('domstate', `${prefix}vm1`)).trim(), /^shut off$/);
    // What systemd's StateDirectory= does on every service start (and so after a host reboot): QEMU
    // (libvirt-qemu) can no longer traverse to the disks until the agent puts o+x back.
    await chmod(join(dir, 'state'), 0o700);
    const started = Date.now();
    ctx.agent = AgentProcess.start(['run', '--config', configPath]);
    const r = await waitReport('vm1 Running with an IPv4 after the agent came back', (r) => wl(r, 'vm1')?.phase === 'Running' && ipv4Of(wl(r, 'vm1')) !== undefined, 90_000);
    t.diagnostic(`agent start to the stopped VM running with an IPv4: ${((Date.now() - started) / 1000).toFixed(1)} s`);
    assert.match((await virsh('domstate', `${prefix}vm1`)).trim(), /^running$/);
    assert.equal(wl(r, 'vm1')?.runtimeId, uuid, 'the same domain, started, not recreated');
    assert.equal((await stat(join(dir, 'state'))).mode & 0o777, 0o701, 'traversable again (o+x), still not listable');
    assert.equal((await stat(join(dir, 'state', 'libvirt', 'vms', `${prefix}vm1`, 'disk-root.qcow2'))).ino, diskInode, 'the same disk');
    // The lease outlives the restart: wait for the guest itself to have booted again.
    await waitFor('the guest to boot again', async () => (await boots()) > bootsBefore, 60_000, 500);
  });

  it('a revision change redefines and restarts the VM (same domain, same disk, new seed)', async () => {
    const consoleLog = join(dir, 'state', 'libvirt', 'console', `${prefix}vm1.log`);
    const bootsBefore = (await readFile(consoleLog, 'utf8')).match(/persys-guest: booted kernel/g)?.length ?? 0;
    publish([vm('2')]);
    const r = await waitReport('revision 2 Running with an IPv4', (r) => wl(r, 'vm1')?.revision === '2' && wl(r, 'vm1')?.phase === 'Running' && ipv4Of(wl(r, 'vm1')) !== undefined, 120_000);
    assert.equal(wl(r, 'vm1')?.runtimeId, uuid, 'the same domain UUID: redefined, not a new VM');
    // The lease of the stable MAC outlives the restart, so the address is known before the guest is up again:
    // the console log says when it has booted a second time and read the new seed.
    const consolePath = join(dir, 'state', 'libvirt', 'console', `${prefix}vm1.log`);
    const log = await waitFor('the second boot with the revision-2 seed', async () => {
      const text = await readFile(consolePath, 'utf8');
      return /instance-id=iid-vm1-2-/.test(text) ? text : undefined;
    }, 60_000, 500);
    assert.equal(log.match(/persys-guest: booted kernel/g)?.length, bootsBefore + 1, 'the guest booted once more');
    assert.match(log, /instance-id=iid-vm1-1-[\s\S]*instance-id=iid-vm1-2-/);
    assert.equal((await stat(join(dir, 'state', 'libvirt', 'vms', `${prefix}vm1`, 'disk-root.qcow2'))).ino, diskInode, 'the disk was kept');
    const recreate = ctx.agent!.lines.find((l) => l.msg.startsWith('reconciled:') && JSON.stringify(l).includes('recreate vm1'));
    assert.ok(recreate, 'the recreate is logged');
  });

  it('removing the workload removes the domain and its disks', async () => {
    publish([]);
    await waitReport('vm1 gone', (r) => r.workloads.length === 0, 90_000);
    await waitFor('domain undefined', async () => !(await domainNames()).includes(`${prefix}vm1`), 30_000);
    const gone = await stat(join(dir, 'state', 'libvirt', 'vms', `${prefix}vm1`)).then(() => false, () => true);
    assert.ok(gone, 'the VM directory (disks, seed) is gone');
    const code = await ctx.agent!.stop('SIGTERM');
    assert.equal(code, 0);
  });
});

const skipDocker = await requireEngine('docker');

describe('agent without libvirt: VMs RUNTIME_UNAVAILABLE, containers unaffected', { skip: skipDocker, timeout: 300_000 }, () => {
  const nodeId = testNodeId('test-e2enolv');
  const { ctx, publish, waitReport } = fleet(nodeId);
  const docker = new Docker({ socketPath: '/var/run/docker.sock' });
  let dir: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-e2enolv-'));
    await mkdir(join(dir, 'pki'), { mode: 0o700 });
    const pki = await makeThrowawayCa(join(dir, 'pki'));
    ctx.server = await startFleetServer({ tls: { certFile: pki.serverCert, keyFile: pki.serverKey } });
    await writeFile(
      join(dir, 'config.json'),
      JSON.stringify({
        nodeId,
        stateDir: join(dir, 'state'),
        logLevel: 'info',
        source: { url: ctx.server.sourceUrl, caFile: pki.caCert, pollIntervalSeconds: 1 },
        status: { url: ctx.server.statusUrl, heartbeatSeconds: 5, debounceMs: 100 },
        reconcile: { intervalSeconds: 2 },
        metrics: { listen: '127.0.0.1:0' },
        docker: { namePrefix: `t-${nodeId}-` },
        libvirt: { uri: 'qemu:///system?socket=/nonexistent/persys-libvirt-sock', namePrefix: `t-${nodeId}-` },
      }),
    );
  });

  after(async () => {
    await ctx.agent?.stop('SIGTERM').catch(() => undefined);
    await cleanupDockerByLabel(nodeId).catch(() => undefined);
    await ctx.server?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('reports libvirt down with its reason, the VM RUNTIME_UNAVAILABLE, and runs the container', async () => {
    publish([
      { id: 'web', type: 'container', spec: { image: 'persys-test/busybox:1', stopTimeoutSeconds: 1 } },
      { id: 'vm1', type: 'vm', spec: { vcpus: 1, memoryMiB: 64 } },
    ]);
    ctx.agent = AgentProcess.start(['run', '--config', join(dir, 'config.json')]);
    const r = await waitReport('web Running, vm1 unavailable', (r) => wl(r, 'web')?.phase === 'Running' && wl(r, 'vm1')?.error?.code === 'RUNTIME_UNAVAILABLE', 60_000, 0);
    // libvirt's own words, or (on a host without libvirt-clients) that virsh is missing.
    assert.match(r.node.runtimes.libvirt ?? '', /^down: (.*Failed to connect socket to '\/nonexistent\/persys-libvirt-sock'|virsh not found)/);
    assert.equal(r.node.runtimes.docker, 'up');
    assert.match(wl(r, 'vm1')?.error?.message ?? '', /libvirt is down: .*(nonexistent|virsh not found)/);
    const list = await docker.listContainers({ filters: { label: [`dev.persys.node-id=${nodeId}`] } });
    assert.equal(list.length, 1);
    assert.equal(list[0]?.State, 'running');
  });
});
