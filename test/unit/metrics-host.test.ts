import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { HostCollector, parseMeminfo, parseNetDev, parseProcStat } from '../../src/metrics/host.js';

const STAT = `cpu  310585 7 27006 172300 1058 3 337 88 0 0
cpu0 155035 0 12966 87339 263 0 58 43 0 0
cpu1 155549 0 14039 84960 794 0 279 44 0 0
intr 123 0 0
ctxt 99
btime 1795720345
processes 4242
`;
const MEMINFO = `MemTotal:       24684084 kB
MemFree:        20000000 kB
MemAvailable:   23165608 kB
Buffers:          100 kB
`;
const NETDEV = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 11687295    7573    0    0    0     0          0         0 11687295    7573    0    0    0     0       0          0
  eth0: 574958802  400000    0    0    0     0          0         0  1412437    9000    0    0    0     0       0          0
vethfcdb994:  1000      10    0    0    0     0          0         0     2000      20    0    0    0     0       0          0
 docker0:     5       1    0    0    0     0          0         0        6       1    0    0    0     0       0          0
`;

describe('host metrics parsers', () => {
  it('reads CPU seconds by mode (USER_HZ 100) and the boot time from /proc/stat', () => {
    const r = parseProcStat(STAT);
    assert.deepEqual(r.cpuSeconds, { user: 3105.85, nice: 0.07, system: 270.06, idle: 1723, iowait: 10.58, irq: 0.03, softirq: 3.37, steal: 0.88 });
    assert.equal(r.bootTimeSeconds, 1795720345);
  });

  it('reads MemTotal and MemAvailable in bytes', () => {
    assert.deepEqual(parseMeminfo(MEMINFO), { totalBytes: 24684084 * 1024, availableBytes: 23165608 * 1024 });
    assert.deepEqual(parseMeminfo('MemTotal: 10 kB\n'), { totalBytes: 10240, availableBytes: undefined });
  });

  it('reads bytes per interface and leaves container veths out', () => {
    assert.deepEqual(parseNetDev(NETDEV), [
      { device: 'lo', receiveBytes: 11687295, transmitBytes: 11687295 },
      { device: 'eth0', receiveBytes: 574958802, transmitBytes: 1412437 },
      { device: 'docker0', receiveBytes: 5, transmitBytes: 6 },
    ]);
    assert.deepEqual(parseNetDev(NETDEV, /^(lo|veth)/).map((n) => n.device), ['eth0', 'docker0']);
  });

  it('tolerates garbage', () => {
    assert.deepEqual(parseProcStat('nonsense'), { cpuSeconds: {}, bootTimeSeconds: undefined });
    assert.deepEqual(parseNetDev('a\nb\nc'), []);
  });
});

describe('HostCollector', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-host-'));
    await mkdir(join(dir, 'proc', 'net'), { recursive: true });
    await writeFile(join(dir, 'proc', 'stat'), STAT);
    await writeFile(join(dir, 'proc', 'meminfo'), MEMINFO);
    await writeFile(join(dir, 'proc', 'net', 'dev'), NETDEV);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('builds one snapshot from a proc root and statfs, and leaves out what it cannot read', async () => {
    const host = new HostCollector({
      procRoot: join(dir, 'proc'),
      filesystems: () => [
        { purpose: 'state', path: dir },
        { purpose: 'docker', path: join(dir, 'does-not-exist') },
      ],
    });
    const s = await host.snapshot();
    assert.equal(s.cpuSeconds.idle, 1723);
    assert.equal(s.memoryAvailableBytes, 23165608 * 1024);
    assert.equal(s.network.length, 3);
    assert.equal(s.filesystems.length, 1, 'a missing path is left out, not reported as 0');
    const fs = s.filesystems[0]!;
    assert.equal(fs.purpose, 'state');
    assert.ok(fs.sizeBytes > 0 && fs.freeBytes <= fs.sizeBytes && fs.availBytes <= fs.freeBytes, JSON.stringify(fs));
    assert.equal(s.load.length, 3);
  });

  it('shares one read between callers within maxAgeMs', async () => {
    let asked = 0;
    const host = new HostCollector({ procRoot: join(dir, 'proc'), filesystems: () => (asked++, []), maxAgeMs: 60_000 });
    const [a, b] = await Promise.all([host.snapshot(), host.snapshot()]);
    assert.equal(a, b);
    await host.snapshot();
    assert.equal(asked, 1);
  });

  it('reads the real /proc of this Linux host', async () => {
    const s = await new HostCollector().snapshot();
    assert.ok((s.cpuSeconds.idle ?? 0) > 0);
    assert.ok((s.memoryTotalBytes ?? 0) > (s.memoryAvailableBytes ?? Infinity) - 1);
    assert.ok((s.bootTimeSeconds ?? 0) * 1000 < Date.now());
    assert.ok(s.network.some((n) => n.device === 'lo'));
  });
});
