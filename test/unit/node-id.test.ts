import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { promises as fsp, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';

import { defaultPrimaryMac, defaultReadMachineId, listInterfaces, NodeIdError, primaryMacOf, resolveNodeId, resolveNodeIdReadOnly, sanitizeHostname, SHARED_MACHINE_IDS, type NicInfo } from '../../src/identity/node-id.js';

const root = mkdtempSync(join(tmpdir(), 'persys-nodeid-'));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const newDir = (): string => join(root, `d${n++}`, 'state');

const sha12 = (s: string) => createHash('sha256').update(s).digest('hex').slice(0, 12);
const persisted = async (dir: string) => (await fsp.readFile(join(dir, 'node-id'), 'utf8')).trim();
const modeOf = async (p: string) => (await fsp.stat(p)).mode & 0o777;

const fakes = {
  readMachineId: async () => 'f00dfeedcafe4b1d9c0ffee000000001',
  hostname: () => 'Edge-7.example.com',
  primaryMac: () => '52:54:00:AB:CD:EF',
};

describe('resolveNodeId', () => {
  it('derives <hostname>-<sha256(machine id)[:12]> and persists it 0600', async () => {
    const stateDir = newDir();
    const r = await resolveNodeId({ stateDir, ...fakes });
    assert.deepEqual(r, { nodeId: `edge-7-example-com-${sha12('f00dfeedcafe4b1d9c0ffee000000001')}`, source: 'machine-id' });
    assert.equal(await persisted(stateDir), r.nodeId);
    assert.equal(await modeOf(join(stateDir, 'node-id')), 0o600);
    assert.deepEqual(await fsp.readdir(stateDir), ['node-id'], 'no temp file left');
  });

  it('reuses the persisted id on the next start, even if the inputs changed', async () => {
    const stateDir = newDir();
    const first = await resolveNodeId({ stateDir, ...fakes });
    const second = await resolveNodeId({ stateDir, ...fakes, hostname: () => 'renamed', readMachineId: async () => 'other' });
    assert.deepEqual(second, { nodeId: first.nodeId, source: 'persisted' });
  });

  it('falls back to the primary MAC when no machine id can be read', async () => {
    for (const readMachineId of [async () => null, async () => Promise.reject(new Error('no dbus'))]) {
      const stateDir = newDir();
      const r = await resolveNodeId({ stateDir, ...fakes, readMachineId });
      assert.deepEqual(r, { nodeId: `edge-7-example-com-${sha12('52:54:00:ab:cd:ef')}`, source: 'mac' });
      assert.equal(await persisted(stateDir), r.nodeId);
    }
  });

  it('fails clearly when there is neither a machine id nor a MAC', async () => {
    await assert.rejects(
      resolveNodeId({ stateDir: newDir(), ...fakes, readMachineId: async () => null, primaryMac: () => null }),
      (e: unknown) => e instanceof NodeIdError && /PERSYS_NODE_ID/.test(e.message),
    );
  });

  it('an override wins over a persisted id and replaces it', async () => {
    const stateDir = newDir();
    await resolveNodeId({ stateDir, ...fakes });
    const r = await resolveNodeId({ stateDir, ...fakes, override: 'edge-7' });
    assert.deepEqual(r, { nodeId: 'edge-7', source: 'override' });
    assert.equal(await persisted(stateDir), 'edge-7');
    // Dropping the override later keeps the name the fleet knows.
    assert.deepEqual(await resolveNodeId({ stateDir, ...fakes }), { nodeId: 'edge-7', source: 'persisted' });
  });

  it('an override is not derived: machine id and MAC are not consulted', async () => {
    const boom = () => {
      throw new Error('must not be called');
    };
    const r = await resolveNodeId({ stateDir: newDir(), override: 'x1', readMachineId: async () => boom(), primaryMac: boom, hostname: boom });
    assert.equal(r.source, 'override');
  });

  it('rejects an invalid override', async () => {
    await assert.rejects(resolveNodeId({ stateDir: newDir(), ...fakes, override: 'has space' }), /not valid/);
  });

  it('re-derives when the persisted file is damaged', async () => {
    const stateDir = newDir();
    await fsp.mkdir(stateDir, { recursive: true });
    await fsp.writeFile(join(stateDir, 'node-id'), '\u0000garbage with spaces\n');
    const r = await resolveNodeId({ stateDir, ...fakes });
    assert.equal(r.source, 'machine-id');
    assert.equal(await persisted(stateDir), r.nodeId);
  });

  it('a damaged file is re-derived with a WARN naming the file and its content', async () => {
    const stateDir = newDir();
    await fsp.mkdir(stateDir, { recursive: true });
    await fsp.writeFile(join(stateDir, 'node-id'), 'not an id at all\n');
    const warns: { obj: object; msg: string }[] = [];
    const r = await resolveNodeId({ stateDir, ...fakes, logger: { warn: (obj, msg) => warns.push({ obj, msg }) } });
    assert.equal(warns.length, 1);
    assert.match(warns[0]!.msg, new RegExp(`holds no valid node id; derived ${r.nodeId} again \\(machine-id\\) and rewrote the file`));
    assert.deepEqual(warns[0]!.obj, { file: join(stateDir, 'node-id'), content: '"not an id at all\\n"', nodeId: r.nodeId });
  });

  it('a persisted id derived on another host is kept, with a WARN; a renamed host or a chosen name is not warned about', async () => {
    const warnsOf = async (content: string) => {
      const stateDir = newDir();
      await fsp.mkdir(stateDir, { recursive: true });
      await fsp.writeFile(join(stateDir, 'node-id'), `${content}\n`);
      const warns: string[] = [];
      const r = await resolveNodeId({ stateDir, ...fakes, logger: { warn: (_o, msg) => warns.push(msg) } });
      assert.deepEqual(r, { nodeId: content, source: 'persisted' });
      assert.equal(await persisted(stateDir), content, 'the file is not rewritten');
      return warns;
    };
    const foreign = await warnsOf('other-host-0123456789ab');
    assert.equal(foreign.length, 1);
    assert.match(foreign[0]!, /^the node id in the state dir \(other-host-0123456789ab\) was not derived on this host \(here it would be edge-7-example-com-[0-9a-f]{12}\): kept/);
    assert.deepEqual(await warnsOf(`old-name-${sha12('f00dfeedcafe4b1d9c0ffee000000001')}`), [], 'same machine, other hostname');
    assert.deepEqual(await warnsOf('edge-berlin-01'), [], 'a chosen name');
  });

  it('an override that replaces a persisted id says so', async () => {
    const stateDir = newDir();
    await resolveNodeId({ stateDir, ...fakes });
    const infos: string[] = [];
    await resolveNodeId({ stateDir, ...fakes, override: 'edge-7', logger: { warn: () => undefined, info: (_o, msg) => infos.push(msg) } });
    assert.deepEqual(infos, ['the nodeId setting replaces the node id persisted in the state dir']);
  });

  it('a node-id that is a directory or a FIFO is refused with NodeIdError (never read, never replaced); read-only callers derive', async () => {
    for (const make of ['dir', 'fifo'] as const) {
      const stateDir = newDir();
      await fsp.mkdir(stateDir, { recursive: true });
      const file = join(stateDir, 'node-id');
      if (make === 'dir') await fsp.mkdir(file);
      else await import('node:child_process').then(({ execFileSync }) => execFileSync('mkfifo', [file]));
      await assert.rejects(resolveNodeId({ stateDir, ...fakes }), (e: unknown) => e instanceof NodeIdError && e.message.startsWith(`${file} is not a regular file`));
      assert.equal((await fsp.lstat(file)).isFile(), false, 'left as it was');
      assert.equal((await resolveNodeIdReadOnly({ stateDir, ...fakes })).source, 'machine-id');
    }
  });

  it('the default machine-id reader never throws', async () => {
    const r = await resolveNodeId({ stateDir: newDir(), hostname: () => 'h', primaryMac: () => 'aa:bb:cc:dd:ee:ff' });
    assert.match(r.nodeId, /^h-[0-9a-f]{12}$/);
    assert.ok(r.source === 'machine-id' || r.source === 'mac');
  });
});

describe('resolveNodeIdReadOnly', () => {
  it('gives the same answers and writes nothing', async () => {
    const stateDir = newDir();
    const ro = await resolveNodeIdReadOnly({ stateDir, ...fakes });
    await assert.rejects(fsp.stat(stateDir), /ENOENT/);
    assert.deepEqual(await resolveNodeId({ stateDir, ...fakes }), ro);
    assert.deepEqual(await resolveNodeIdReadOnly({ stateDir, ...fakes }), { nodeId: ro.nodeId, source: 'persisted' });
    assert.deepEqual(await resolveNodeIdReadOnly({ stateDir, ...fakes, override: 'other' }), { nodeId: 'other', source: 'override' });
    assert.equal(await persisted(stateDir), ro.nodeId);
  });
});

describe('sanitizeHostname', () => {
  it('keeps [a-z0-9-] only', () => {
    assert.equal(sanitizeHostname('Edge_7.Example.COM'), 'edge-7-example-com');
    assert.equal(sanitizeHostname('--a..b--'), 'a-b');
    assert.equal(sanitizeHostname('ÜBER host'), 'ber-host');
    assert.equal(sanitizeHostname('...'), 'node');
    assert.equal(sanitizeHostname('a'.repeat(100)).length, 63);
    assert.ok(!sanitizeHostname(`${'a'.repeat(62)}.b`).endsWith('-'));
  });
});

describe('defaultPrimaryMac (no /sys/class/net)', () => {
  const nic = (mac: string, internal = false) => [{ address: '10.0.0.1', netmask: '255.0.0.0', family: 'IPv4' as const, mac, internal, cidr: '10.0.0.1/8' }];

  it('skips internal, zero and virtual-named interfaces and picks the lowest MAC', () => {
    assert.equal(
      defaultPrimaryMac({
        lo: nic('00:00:00:00:00:00', true),
        docker0: nic('02:42:00:00:00:01'),
        'br-abc': nic('02:42:00:00:00:02'),
        veth1: nic('02:42:00:00:00:03'),
        virbr0: nic('52:54:00:00:00:04'),
        wlan0: nic('AA:00:00:00:00:06'),
        eth0: nic('AA:00:00:00:00:05'),
        tun0: nic('00:00:00:00:00:00'),
      }),
      'aa:00:00:00:00:05',
    );
    assert.equal(defaultPrimaryMac({ lo: nic('00:00:00:00:00:00', true), docker0: nic('02:42:00:00:00:01') }), null);
    assert.equal(defaultPrimaryMac({}), null);
  });
});

describe('primaryMacOf (a fake /sys/class/net list)', () => {
  const phys = (name: string, mac: string, over: Partial<NicInfo> = {}): NicInfo => ({ name, mac, physical: true, bridge: false, addrAssignType: 0, ...over });
  const virt = (name: string, mac: string, over: Partial<NicInfo> = {}): NicInfo => ({ name, mac, physical: false, bridge: false, addrAssignType: 3, ...over });

  it('skips virtual, bridge, docker and veth interfaces and picks the lowest stable physical MAC', () => {
    const nics = [
      virt('lo', '00:00:00:00:00:00', { addrAssignType: 0 }),
      virt('docker0', '02:42:00:00:00:01'),
      virt('veth9a8b', '02:00:00:00:00:02'),
      virt('virbr0', '00:00:00:00:00:03', { bridge: true }),
      phys('br0', '00:00:00:00:00:04', { bridge: true }), // a bridge over a NIC takes its MAC: still a bridge
      phys('wlan0', 'AA:00:00:00:00:07'),
      phys('enp3s0', 'aa:00:00:00:00:06'),
      phys('enp4s0', '00:11:22:33:44:55', { addrAssignType: 1 }), // random MAC: changes at boot
      phys('eno1', 'ab:00:00:00:00:05'),
    ];
    assert.equal(primaryMacOf(nics), 'aa:00:00:00:00:06');
    // Order of the list does not matter.
    assert.equal(primaryMacOf([...nics].reverse()), 'aa:00:00:00:00:06');
  });

  it('null when only virtual interfaces exist (a container): then the id must be configured', async () => {
    assert.equal(primaryMacOf([virt('lo', '00:00:00:00:00:00'), virt('eth0', '02:42:ac:11:00:02'), virt('docker0', '02:42:00:00:00:01')]), null);
    await assert.rejects(resolveNodeId({ stateDir: newDir(), hostname: () => 'h', readMachineId: async () => null, primaryMac: () => primaryMacOf([virt('eth0', '02:42:ac:11:00:02')]) }), /PERSYS_NODE_ID/);
  });

  it('listInterfaces reads a sysfs-like tree: device link, bridge dir, addr_assign_type', async () => {
    const sys = join(root, 'sysnet');
    const devices = join(root, 'devices');
    const mk = async (name: string, mac: string, o: { device?: boolean; bridge?: boolean; assign?: string; virtualDir?: boolean }) => {
      const real = join(devices, o.virtualDir ? 'virtual/net' : 'pci0000:00/net', name);
      await fsp.mkdir(real, { recursive: true });
      await fsp.writeFile(join(real, 'address'), `${mac}\n`);
      if (o.assign !== undefined) await fsp.writeFile(join(real, 'addr_assign_type'), `${o.assign}\n`);
      if (o.device) await fsp.mkdir(join(real, 'device'));
      if (o.bridge) await fsp.mkdir(join(real, 'bridge'));
      await fsp.mkdir(sys, { recursive: true });
      await fsp.symlink(real, join(sys, name));
    };
    await mk('eth0', '52:54:00:12:34:56', { device: true, assign: '0' });
    await mk('docker0', '02:42:00:00:00:01', { assign: '3', virtualDir: true, bridge: true });
    await mk('lo', '00:00:00:00:00:00', { assign: '0', virtualDir: true });
    const nics = await listInterfaces(sys);
    const eth0 = nics.find((n) => n.name === 'eth0');
    assert.deepEqual(eth0, { name: 'eth0', mac: '52:54:00:12:34:56', physical: true, bridge: false, addrAssignType: 0 });
    assert.equal(nics.find((n) => n.name === 'docker0')?.physical, false);
    assert.equal(nics.find((n) => n.name === 'docker0')?.bridge, true);
    assert.equal(primaryMacOf(nics), '52:54:00:12:34:56');
    assert.deepEqual(await listInterfaces(join(root, 'no-such-dir')), []);
  });
});

describe('machine id files', () => {
  const write = async (content: string | null) => {
    const dir = join(root, `mid${n++}`);
    await fsp.mkdir(dir, { recursive: true });
    const f = join(dir, 'machine-id');
    if (content !== null) await fsp.writeFile(f, content);
    return f;
  };
  const warnings = () => {
    const lines: string[] = [];
    return { lines, logger: { warn: (_o: object, msg: string) => void lines.push(msg) } };
  };

  it('no machine-id file: none, and the node id comes from the MAC, never from the hostname', async () => {
    const missing = join(root, 'nope', 'machine-id');
    assert.equal(await defaultReadMachineId([missing, missing], 'linux'), null);
    const r = await resolveNodeId({ stateDir: newDir(), hostname: () => 'h', readMachineId: () => defaultReadMachineId([missing], 'linux'), primaryMac: () => 'aa:bb:cc:dd:ee:ff' });
    assert.deepEqual(r, { nodeId: `h-${sha12('aa:bb:cc:dd:ee:ff')}`, source: 'mac' });
    assert.notEqual(r.nodeId, `h-${sha12('h')}`);
  });

  it('reads the first file that holds an id; empty and "uninitialized" files hold none', async () => {
    const empty = await write('');
    const uninit = await write('uninitialized\n');
    const good = await write('3D1219C7C4C5404AAA1F6D2A48ADFDA4\n');
    assert.equal(await defaultReadMachineId([empty, uninit, good], 'linux'), '3d1219c7c4c5404aaa1f6d2a48adfda4');
    assert.equal(await defaultReadMachineId([empty, uninit], 'linux'), null);
  });

  it('an all-zero machine id is treated as absent, with a WARN', async () => {
    const zero = await write('00000000000000000000000000000000\n');
    const w = warnings();
    const r = await resolveNodeId({ stateDir: newDir(), hostname: () => 'h', readMachineId: () => defaultReadMachineId([zero], 'linux'), primaryMac: () => 'aa:bb:cc:dd:ee:ff', logger: w.logger });
    assert.equal(r.source, 'mac');
    assert.equal(w.lines.length, 1);
    assert.match(w.lines[0] ?? '', /all zeros.*absent/);
  });

  it('a machine id known to be shared by cloned images is treated as absent, with a WARN', async () => {
    for (const id of SHARED_MACHINE_IDS) {
      if (/^0+$/.test(id)) continue;
      const f = await write(`${id}\n`);
      const w = warnings();
      const r = await resolveNodeId({ stateDir: newDir(), hostname: () => 'h', readMachineId: () => defaultReadMachineId([f], 'linux'), primaryMac: () => 'aa:bb:cc:dd:ee:ff', logger: w.logger });
      assert.equal(r.source, 'mac', id);
      assert.match(w.lines[0] ?? '', /shared by cloned images/);
    }
  });

  it('a real id is used, without a WARN', async () => {
    const f = await write('3d1219c7c4c5404aaa1f6d2a48adfda4\n');
    const w = warnings();
    const r = await resolveNodeId({ stateDir: newDir(), hostname: () => 'h', readMachineId: () => defaultReadMachineId([f], 'linux'), primaryMac: () => 'aa:bb:cc:dd:ee:ff', logger: w.logger });
    assert.deepEqual(r, { nodeId: `h-${sha12('3d1219c7c4c5404aaa1f6d2a48adfda4')}`, source: 'machine-id' });
    assert.deepEqual(w.lines, []);
  });
});
