/**
 * The libvirt runtime's pure parts: virsh table and stats parsing, state mapping, error translation,
 * path confinement, and the address tracker (source order, VM_NO_IP warning, change notifications)
 * driven by a fake lookup and a fake clock.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { pino } from 'pino';

import { WorkloadError } from '../../src/errors/index.js';
import { AddressTracker, parseDomIfAddr, pickAddresses, type AddressSource } from '../../src/runtimes/libvirt/addresses.js';
import { describeState, mapDomainState, parseDomState, parseDomStats, usageFromDomStats } from '../../src/runtimes/libvirt/domstats.js';
import { ToolError, toolMessage } from '../../src/runtimes/libvirt/exec.js';
import { confine, isUnder, redactUrl, VmStorage } from '../../src/runtimes/libvirt/storage.js';
import { isDomainNotFound, translateVirshError } from '../../src/runtimes/libvirt/virsh.js';

const logger = pino({ level: 'silent' });

describe('virsh output', () => {
  it('parses domifaddr tables, with and without header, agent continuation lines, lo dropped', () => {
    const lease = ` Name       MAC address          Protocol     Address
-------------------------------------------------------------------------------
 vnet0      52:54:00:AA:bb:cc    ipv4         10.213.77.46/24
`;
    assert.deepEqual(parseDomIfAddr(lease), [{ name: 'vnet0', mac: '52:54:00:aa:bb:cc', protocol: 'ipv4', address: '10.213.77.46/24' }]);
    const agent = ` lo         00:00:00:00:00:00    ipv4         127.0.0.1/8
 -          -                    ipv6         ::1/128
 eth0       52:54:00:01:02:03    ipv4         192.168.1.5/24
 -          -                    ipv6         fe80::5054:ff:fe01:203/64
`;
    assert.deepEqual(parseDomIfAddr(agent), [
      { name: 'eth0', mac: '52:54:00:01:02:03', protocol: 'ipv4', address: '192.168.1.5/24' },
      { name: 'eth0', mac: '52:54:00:01:02:03', protocol: 'ipv6', address: 'fe80::5054:ff:fe01:203/64' },
    ]);
    assert.deepEqual(parseDomIfAddr(''), []);
  });

  it('picks per interface the first source with an IPv4 (agent, lease, arp), else the first with any address', () => {
    const row = (mac: string, address: string) => ({ name: 'x', mac, protocol: address.includes(':') ? ('ipv6' as const) : ('ipv4' as const), address });
    const by = new Map<AddressSource, ReturnType<typeof row>[]>([
      ['agent', [row('52:54:00:00:00:01', 'fe80::1/64')]],
      ['lease', [row('52:54:00:00:00:01', '10.0.0.5/24')]],
      ['arp', [row('52:54:00:00:00:02', '10.0.1.9/0'), row('52:54:00:00:00:01', '10.0.0.99/0')]],
    ]);
    assert.deepEqual(pickAddresses(['52:54:00:00:00:01', '52:54:00:00:00:02', '52:54:00:00:00:03'], by), [
      { mac: '52:54:00:00:00:01', ips: ['10.0.0.5/24'], source: 'lease' },
      { mac: '52:54:00:00:00:02', ips: ['10.0.1.9/0'], source: 'arp' },
      { mac: '52:54:00:00:00:03', ips: [] },
    ]);
    assert.deepEqual(pickAddresses(['52:54:00:00:00:01'], new Map([['agent', [row('52:54:00:00:00:01', 'fe80::1/64')]]])), [
      { mac: '52:54:00:00:00:01', ips: ['fe80::1/64'], source: 'agent' },
    ]);
  });

  it('parses domstats blocks and maps states and reasons', () => {
    const text = `Domain: 'a'
  state.state=1
  state.reason=1
  cpu.time=6929617000
  balloon.rss=222176
  net.count=2
  net.0.rx.bytes=2112
  net.0.tx.bytes=1726
  net.1.rx.bytes=8
  net.1.tx.bytes=2
  block.count=1
  block.0.rd.bytes=12800
  block.0.wr.bytes=512

Domain: 'b'
  state.state=5
  state.reason=2
`;
    const s = parseDomStats(text);
    assert.deepEqual([...s.keys()], ['a', 'b']);
    assert.deepEqual(describeState(1, 1), { state: 'running', reason: 'booted' });
    assert.deepEqual(describeState(5, 2), { state: 'shut off', reason: 'destroyed' });
    assert.deepEqual(usageFromDomStats(s.get('a') ?? new Map()), {
      cpuSeconds: 6.929617,
      memoryBytes: 222176 * 1024,
      networkReceiveBytes: 2120,
      networkTransmitBytes: 1728,
      blockReadBytes: 12800,
      blockWriteBytes: 512,
    });
    assert.deepEqual(usageFromDomStats(new Map([['balloon.available', '1000'], ['balloon.unused', '400'], ['balloon.rss', '5']])), { memoryBytes: 600 * 1024 });
    assert.deepEqual(parseDomState('shut off (destroyed)\n'), { state: 'shut off', reason: 'destroyed' });
    const cases: [string, string, string][] = [
      ['running', 'booted', 'running'],
      ['paused', 'user', 'paused'],
      ['shut off', 'unknown', 'created'],
      ['shut off', 'shutdown', 'stopped'],
      ['shut off', 'destroyed', 'stopped'],
      ['shut off', 'crashed', 'exited'],
      ['crashed', 'panicked', 'exited'],
      ['in shutdown', 'user', 'unknown'],
      ['pmsuspended', 'unknown', 'paused'],
    ];
    for (const [state, reason, want] of cases) assert.equal(mapDomainState({ state, reason }), want, `${state} (${reason})`);
  });
});

describe('virsh errors', () => {
  const exit = (stderr: string) => new ToolError('virsh', ['x'], 'exit', stderr, 1, 'x');

  it("keeps libvirt's exact message, without virsh's error: prefixes", () => {
    assert.equal(toolMessage("error: Failed to start domain 'a'\nerror: Network not found: no network with matching name 'n'\n"), "Failed to start domain 'a': Network not found: no network with matching name 'n'");
  });

  it('classifies by operation and by what libvirt said', () => {
    const down = translateVirshError(exit("error: failed to connect to the hypervisor\nerror: Failed to connect socket to '/x': No such file or directory"), 'start');
    assert.equal(down.code, 'RUNTIME_UNAVAILABLE');
    assert.equal(down.message, "failed to connect to the hypervisor: Failed to connect socket to '/x': No such file or directory");
    const def = translateVirshError(exit("error: Failed to define domain from /x.xml\nerror: operation failed: domain 'a' already exists with uuid 1"), 'define');
    assert.equal(def.code, 'VM_DEFINE_FAILED');
    assert.equal(def.transient, false);
    assert.match(def.message, /already exists with uuid 1$/);
    assert.equal(translateVirshError(exit("error: Failed to start domain 'a'\nerror: Network not found"), 'start').code, 'VM_START_FAILED');
    assert.equal(translateVirshError(exit('error: cannot set up guest memory: Cannot allocate memory'), 'start').code, 'INSUFFICIENT_RESOURCES');
    assert.equal(translateVirshError(new ToolError('virsh', [], 'not-found', '', null, 'virsh not found'), 'list').code, 'RUNTIME_UNAVAILABLE');
    assert.equal(translateVirshError(new ToolError('virsh', [], 'timeout', '', null, 'slow'), 'list').code, 'TIMEOUT');
    assert.equal(isDomainNotFound(exit("error: failed to get domain 'x'")), true);
    assert.equal(isDomainNotFound(exit('error: something else')), false);
  });
});

describe('paths', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-paths-'));
    await mkdir(join(dir, 'allowed'));
    await writeFile(join(dir, 'allowed', 'k'), 'kernel');
    await writeFile(join(dir, 'secret'), 'secret');
    await symlink(join(dir, 'secret'), join(dir, 'allowed', 'link'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('confine keeps every path under the root', () => {
    assert.equal(confine('/srv/x', 'vms', 'persys-a', 'disk-root.qcow2'), '/srv/x/vms/persys-a/disk-root.qcow2');
    for (const bad of ['..', '../etc', 'a/../../b', '/etc/passwd', 'a/b', '', '.hidden', 'a..b']) {
      assert.throws(() => confine('/srv/x', 'vms', bad), (err: unknown) => err instanceof WorkloadError && err.code === 'INVALID_SPEC', bad);
    }
    assert.equal(isUnder('/srv/xy', '/srv/x'), false);
    assert.equal(isUnder('/srv/x/y', '/srv/x/'), true);
  });

  it('host files must resolve (symlinks followed) under an allowed prefix', async () => {
    const s = new VmStorage({ root: join(dir, 'store'), allowedPathPrefixes: [join(dir, 'allowed')], qemuImg: 'qemu-img', timeoutMs: 5000, downloadTimeoutMs: 5000, logger });
    assert.equal(await s.allowedHostFile(join(dir, 'allowed', 'k'), 'boot.kernel'), join(dir, 'allowed', 'k'));
    const denied = (err: unknown) => err instanceof WorkloadError && err.code === 'POLICY_DENIED';
    await assert.rejects(s.allowedHostFile(join(dir, 'secret'), 'boot.kernel'), denied);
    await assert.rejects(s.allowedHostFile(join(dir, 'allowed', 'link'), 'boot.kernel'), denied);
    await assert.rejects(s.allowedHostFile(`${join(dir, 'allowed')}/../secret`, 'boot.kernel'), (err: unknown) => err instanceof WorkloadError && err.code === 'INVALID_SPEC');
    await assert.rejects(s.allowedHostFile(join(dir, 'allowed', 'missing'), 'boot.kernel'), (err: unknown) => err instanceof WorkloadError && err.code === 'INVALID_SPEC');
    await assert.rejects(s.allowedHostFile(join(dir, 'allowed'), 'boot.kernel'), (err: unknown) => err instanceof WorkloadError && err.code === 'INVALID_SPEC');
  });

  it('opens the agent-owned state dir for traversal (o+x) so QEMU reaches the disks, and reports other blockers', { skip: process.getuid?.() !== 0 ? 'needs root (QEMU runs as another user only then)' : false }, async () => {
    const state = join(dir, 'state');
    await mkdir(state, { mode: 0o700 });
    const lines: { msg: string; dir?: string }[] = [];
    const log = pino({ level: 'info' }, new Writable({ write: (c: Buffer, _e, cb) => void (lines.push(JSON.parse(c.toString()) as { msg: string }), cb()) }));
    const s = new VmStorage({ root: join(state, 'libvirt'), allowedPathPrefixes: [], qemuImg: 'qemu-img', timeoutMs: 5000, downloadTimeoutMs: 5000, logger: log, ownedAncestors: [state] });
    await s.init();
    assert.equal((await stat(state)).mode & 0o777, 0o701);
    assert.equal((await stat(join(state, 'libvirt', 'vms'))).mode & 0o777, 0o711);
    // The mkdtemp directory above it (0700) is not the agent's: reported, not changed.
    assert.equal((await stat(dir)).mode & 0o777, 0o700);
    assert.ok(lines.some((l) => l.dir === dir && /cannot traverse/.test(l.msg)), JSON.stringify(lines));
  });

  it('redacts user info and query strings of image URLs', () => {
    assert.equal(redactUrl('https://user:pw@example.com/img.qcow2?token=abc'), 'https://example.com/img.qcow2?…');
  });
});

describe('AddressTracker', () => {
  const MAC = '52:54:00:00:00:01';
  const lease = `vnet0 ${MAC} ipv4 10.0.0.5/24\n`;

  function harness(answers: Partial<Record<AddressSource, () => string>>) {
    let now = 1_000_000;
    const calls: AddressSource[] = [];
    const changes: string[] = [];
    const t = new AddressTracker({
      ipWaitMs: 60_000,
      logger,
      now: () => now,
      onChange: (id) => changes.push(id),
      lookup: async (_domain, source) => {
        calls.push(source);
        const a = answers[source];
        if (!a) throw new Error(`${source}: not available`);
        return a();
      },
    });
    return { t, calls, changes, advance: (ms: number) => (now += ms) };
  }

  it('tries agent, lease, arp in order and stops once every interface has an IPv4', async () => {
    const h = harness({ lease: () => lease, arp: () => '' });
    h.t.track('vm1', 'persys-vm1', [MAC]);
    await h.t.pollNow('vm1', AbortSignal.timeout(5000));
    assert.deepEqual(h.calls, ['agent', 'lease']);
    assert.deepEqual(h.t.get('vm1'), { interfaces: [{ mac: MAC, ips: ['10.0.0.5/24'], source: 'lease' }], warning: null });
    assert.deepEqual(h.changes, ['vm1']);
    await h.t.pollNow('vm1', AbortSignal.timeout(5000));
    assert.deepEqual(h.changes, ['vm1'], 'no change, no notification');
  });

  it('warns VM_NO_IP after ipWait and keeps looking; the warning goes when an address comes', async () => {
    let answer = '';
    const h = harness({ lease: () => answer });
    h.t.track('vm1', 'persys-vm1', [MAC]);
    await h.t.pollNow('vm1', AbortSignal.timeout(5000));
    assert.equal(h.t.get('vm1')?.warning, null);
    h.advance(61_000);
    await h.t.pollNow('vm1', AbortSignal.timeout(5000));
    const w = h.t.get('vm1')?.warning;
    assert.equal(w?.code, 'VM_NO_IP');
    assert.equal(w?.transient, true);
    assert.match(w?.message ?? '', /no IPv4 address for 52:54:00:00:00:01 61 s after start; looked in: agent \(agent: not available\), lease, arp \(arp: not available\)/);
    assert.deepEqual(h.changes, ['vm1']);
    answer = lease;
    await h.t.pollNow('vm1', AbortSignal.timeout(5000));
    assert.equal(h.t.get('vm1')?.warning, null);
    assert.deepEqual(h.changes, ['vm1', 'vm1']);
    h.t.untrack('vm1');
    assert.equal(h.t.get('vm1'), undefined);
    assert.deepEqual(h.changes, ['vm1', 'vm1', 'vm1']);
  });

  it('re-reports a changed address', async () => {
    let answer = lease;
    const h = harness({ lease: () => answer });
    h.t.track('vm1', 'persys-vm1', [MAC]);
    await h.t.pollNow('vm1', AbortSignal.timeout(5000));
    answer = `vnet0 ${MAC} ipv4 10.0.0.77/24\n`;
    await h.t.pollNow('vm1', AbortSignal.timeout(5000));
    assert.deepEqual(h.t.get('vm1')?.interfaces, [{ mac: MAC, ips: ['10.0.0.77/24'], source: 'lease' }]);
    assert.deepEqual(h.changes, ['vm1', 'vm1']);
  });
});
