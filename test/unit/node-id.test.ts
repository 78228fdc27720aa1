import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { promises as fsp, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';

import { defaultPrimaryMac, resolveNodeId, resolveNodeIdReadOnly, sanitizeHostname } from '../../src/identity/node-id.js';

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
      /PERSYS_NODE_ID/,
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

describe('defaultPrimaryMac', () => {
  const nic = (mac: string, internal = false) => [{ address: '10.0.0.1', netmask: '255.0.0.0', family: 'IPv4' as const, mac, internal, cidr: '10.0.0.1/8' }];

  it('skips internal and zero MACs and prefers physical-looking interfaces, by name', () => {
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
  });

  it('falls back to a virtual interface when nothing else has a MAC, and to null when none does', () => {
    assert.equal(defaultPrimaryMac({ lo: nic('00:00:00:00:00:00', true), docker0: nic('02:42:00:00:00:01') }), '02:42:00:00:00:01');
    assert.equal(defaultPrimaryMac({ lo: nic('00:00:00:00:00:00', true) }), null);
    assert.equal(defaultPrimaryMac({}), null);
  });
});
