/**
 * Capacity from the host: fake /proc and /sys/fs/cgroup trees (cgroup v1 and v2, limited and not),
 * so the readers are checked against the files the kernel writes, not against an engine.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { countCpuList, parseProcCgroup, readCgroup, readCpuMemory, readFilesystems, readPids } from '../../src/resources/capacity.js';
import { sampleNodeResources } from '../../src/resources/monitor.js';

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;
const CPUINFO = Array.from({ length: 4 }, (_, i) => `processor\t: ${i}\nmodel name\t: Fake CPU\n`).join('\n');
const MEMINFO = `MemTotal:        8388608 kB\nMemFree:         1048576 kB\nMemAvailable:    6291456 kB\nCached:          2097152 kB\n`;

async function tree(files: Record<string, string>): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), 'persys-fakeroot-'));
  for (const [rel, text] of Object.entries(files)) {
    await mkdir(dirname(join(root, rel)), { recursive: true });
    await writeFile(join(root, rel), text);
  }
  return root;
}

describe('capacity readers', () => {
  const roots: string[] = [];
  const make = async (files: Record<string, string>) => {
    const r = await tree(files);
    roots.push(r);
    return r;
  };
  after(async () => {
    for (const r of roots) await rm(r, { recursive: true, force: true });
  });

  it('cpuset lists', () => {
    assert.equal(countCpuList('0-3,8,10-11\n'), 7);
    assert.equal(countCpuList('0'), 1);
    assert.equal(countCpuList(''), undefined);
    assert.equal(countCpuList('3-1'), undefined);
  });

  it('/proc/self/cgroup: v1 controllers, v2 unified, hybrid counts as v1', () => {
    const v1 = parseProcCgroup('4:memory:/a/b\n3:cpu,cpuacct:/a\n0::/\n');
    assert.equal(v1.version, 1);
    assert.equal(v1.byController.get('memory'), '/a/b');
    assert.equal(v1.byController.get('cpuacct'), '/a');
    const v2 = parseProcCgroup('0::/system.slice/persys-agent.service\n');
    assert.equal(v2.version, 2);
    assert.equal(v2.byController.get(''), '/system.slice/persys-agent.service');
  });

  it('no cgroup limit: CPUs and memory from /proc', async () => {
    const root = await make({
      'proc/cpuinfo': CPUINFO,
      'proc/meminfo': MEMINFO,
      'proc/self/cgroup': '4:memory:/agent\n1:cpu:/agent\n',
      'sys/fs/cgroup/memory/agent/memory.limit_in_bytes': '9223372036854771712\n',
      'sys/fs/cgroup/cpu/agent/cpu.cfs_quota_us': '-1\n',
      'sys/fs/cgroup/cpu/agent/cpu.cfs_period_us': '100000\n',
    });
    const cm = await readCpuMemory(root);
    assert.deepEqual(cm, { cpus: 4, memoryBytes: 8 * GIB, memoryAvailableBytes: 6 * GIB, source: { cpus: '/proc', memory: '/proc' } });
  });

  it('cgroup v1: CFS quota, cpuset and the memory limit win when tighter; usage less inactive file', async () => {
    const root = await make({
      'proc/cpuinfo': CPUINFO,
      'proc/meminfo': MEMINFO,
      'proc/self/cgroup': '5:cpuset:/edge/agent\n4:memory:/edge/agent\n2:cpu,cpuacct:/edge/agent\n0::/\n',
      'sys/fs/cgroup/cpu/edge/cpu.cfs_quota_us': '150000\n',
      'sys/fs/cgroup/cpu/edge/cpu.cfs_period_us': '100000\n',
      'sys/fs/cgroup/cpu/edge/agent/cpu.cfs_quota_us': '-1\n',
      'sys/fs/cgroup/cpu/edge/agent/cpu.cfs_period_us': '100000\n',
      'sys/fs/cgroup/cpuset/edge/agent/cpuset.cpus': '0-2\n',
      'sys/fs/cgroup/memory/edge/memory.limit_in_bytes': String(2 * GIB),
      'sys/fs/cgroup/memory/edge/agent/memory.limit_in_bytes': String(512 * MIB),
      'sys/fs/cgroup/memory/edge/agent/memory.usage_in_bytes': String(300 * MIB),
      'sys/fs/cgroup/memory/edge/agent/memory.stat': `cache 1000\ntotal_inactive_file ${100 * MIB}\n`,
    });
    const cg = await readCgroup(root);
    assert.equal(cg?.version, 1);
    assert.equal(cg?.cpuQuota, 1.5, 'the parent quota applies to the child');
    assert.equal(cg?.cpusetCpus, 3);
    assert.equal(cg?.memoryLimitBytes, 512 * MIB, 'the smallest limit on the way up');
    assert.equal(cg?.memoryWorkingSetBytes, 200 * MIB);
    const cm = await readCpuMemory(root);
    assert.deepEqual(cm, { cpus: 1.5, memoryBytes: 512 * MIB, memoryAvailableBytes: 312 * MIB, source: { cpus: 'cgroup v1', memory: 'cgroup v1' } });
  });

  it('cgroup v2: cpu.max, memory.max and cpuset.cpus.effective', async () => {
    const root = await make({
      'proc/cpuinfo': CPUINFO,
      'proc/meminfo': MEMINFO,
      'proc/self/cgroup': '0::/system.slice/persys-agent.service\n',
      'sys/fs/cgroup/system.slice/cpu.max': '200000 100000\n',
      'sys/fs/cgroup/system.slice/persys-agent.service/cpu.max': 'max 100000\n',
      'sys/fs/cgroup/system.slice/persys-agent.service/memory.max': String(GIB),
      'sys/fs/cgroup/system.slice/persys-agent.service/memory.current': String(400 * MIB),
      'sys/fs/cgroup/system.slice/persys-agent.service/memory.stat': `anon 1\ninactive_file ${150 * MIB}\n`,
      'sys/fs/cgroup/system.slice/persys-agent.service/cpuset.cpus.effective': '0-3\n',
    });
    const cm = await readCpuMemory(root);
    assert.deepEqual(cm, { cpus: 2, memoryBytes: GIB, memoryAvailableBytes: GIB - 250 * MIB, source: { cpus: 'cgroup v2', memory: 'cgroup v2' } });
  });

  it('a cgroup limit above the machine does not raise capacity; cpuinfo missing falls back to /proc/stat', async () => {
    const root = await make({
      'proc/stat': 'cpu  1 2 3 4 5 6 7 8\ncpu0 1 1 1 1\ncpu1 1 1 1 1\nbtime 1\n',
      'proc/meminfo': MEMINFO,
      'proc/self/cgroup': '0::/big\n',
      'sys/fs/cgroup/big/memory.max': String(64 * GIB),
      'sys/fs/cgroup/big/cpu.max': '800000 100000\n',
    });
    const cm = await readCpuMemory(root);
    assert.equal(cm.cpus, 2);
    assert.equal(cm.memoryBytes, 8 * GIB);
    assert.equal(cm.source.memory, '/proc');
  });

  it('a container view: the host path of /proc/self/cgroup is absent, the mount root is read', async () => {
    const root = await make({
      'proc/cpuinfo': CPUINFO,
      'proc/meminfo': MEMINFO,
      'proc/self/cgroup': '4:memory:/docker/abc123\n',
      'sys/fs/cgroup/memory/memory.limit_in_bytes': String(256 * MIB),
      'sys/fs/cgroup/memory/memory.usage_in_bytes': String(56 * MIB),
    });
    const cm = await readCpuMemory(root);
    assert.equal(cm.memoryBytes, 256 * MIB);
    assert.equal(cm.memoryAvailableBytes, 200 * MIB);
  });

  it('pids: min(pid_max, threads-max) and the total of /proc/loadavg', async () => {
    const root = await make({
      'proc/sys/kernel/pid_max': '32768\n',
      'proc/sys/kernel/threads-max': '20000\n',
      'proc/loadavg': '0.50 0.40 0.30 2/1234 999\n',
    });
    assert.deepEqual(await readPids(root), { max: 20000, running: 1234 });
  });

  it('this machine: sane figures from the real /proc and cgroup files', async () => {
    const cm = await readCpuMemory();
    assert.ok(cm.cpus >= 1, String(cm.cpus));
    assert.ok(cm.memoryBytes > 64 * MIB);
    assert.ok(cm.memoryAvailableBytes <= cm.memoryBytes);
    const pids = await readPids();
    assert.ok(pids && pids.max > pids.running && pids.running > 0);
  });
});

describe('statfs and the sample', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-statfs-'));
  });
  after(async () => rm(dir, { recursive: true, force: true }));

  it('file systems by role; a missing path is left out', async () => {
    const fs = await readFilesystems([
      { role: 'state', path: dir },
      { role: 'imagefs', path: join(dir, 'nope') },
    ]);
    assert.equal(fs.length, 1);
    assert.equal(fs[0]?.role, 'state');
    assert.ok((fs[0]?.sizeBytes ?? 0) > 0 && (fs[0]?.availBytes ?? -1) >= 0);
  });

  it('allocatable = capacity - reserved, never below zero; disk from the state dir', async () => {
    const root = await tree({ 'proc/cpuinfo': CPUINFO, 'proc/meminfo': MEMINFO, 'proc/self/cgroup': '0::/\n' });
    try {
      const s = await sampleNodeResources({
        settings: {
          reserved: { cpus: 0.5, memoryBytes: GIB, diskBytes: 1024 },
          overcommit: { cpu: 1, memory: 1 },
          pressure: { memoryAvailableBytes: 100 * MIB, nodefsAvailablePercent: 10, nodefsInodesFreePercent: 5, imagefsAvailablePercent: 15, pidAvailablePercent: 10, transitionPeriodSeconds: 300 },
          sampleIntervalSeconds: 10,
        },
        root,
        paths: [{ role: 'state', path: dir }],
      });
      assert.equal(s.capacity.cpus, 4);
      assert.equal(s.allocatable.cpus, 3.5);
      assert.equal(s.allocatable.memoryBytes, 7 * GIB);
      assert.equal(s.usage.memoryBytes, 2 * GIB);
      assert.equal(s.allocatable.diskBytes, (s.capacity.diskBytes ?? 0) - 1024);
      const none = await sampleNodeResources({
        settings: {
          reserved: { cpus: 64, memoryBytes: 64 * GIB, diskBytes: 0 },
          overcommit: { cpu: 1, memory: 1 },
          pressure: { memoryAvailableBytes: 0, nodefsAvailablePercent: 0, nodefsInodesFreePercent: 0, imagefsAvailablePercent: 0, pidAvailablePercent: 0, transitionPeriodSeconds: 1 },
          sampleIntervalSeconds: 1,
        },
        root,
        paths: [],
      });
      assert.equal(none.allocatable.cpus, 0);
      assert.equal(none.allocatable.memoryBytes, 0);
      assert.equal(none.capacity.diskBytes, undefined);
      // An unreadable /proc/meminfo: memory unknown (not checked by admission), never 0.
      const blind = await sampleNodeResources({ settings: { reserved: { cpus: 0, memoryBytes: 0, diskBytes: 0 }, overcommit: { cpu: 1, memory: 1 }, pressure: { memoryAvailableBytes: 0, nodefsAvailablePercent: 0, nodefsInodesFreePercent: 0, imagefsAvailablePercent: 0, pidAvailablePercent: 0, transitionPeriodSeconds: 1 }, sampleIntervalSeconds: 1 }, root: join(root, 'nothing'), paths: [] });
      assert.equal(blind.capacity.memoryBytes, undefined);
      assert.equal(blind.allocatable.memoryBytes, undefined);
      assert.ok(blind.capacity.cpus >= 1);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
