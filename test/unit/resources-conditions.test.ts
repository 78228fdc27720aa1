/**
 * Node conditions with a fake clock: on at the first sample over a threshold, off only after a
 * whole transition period without one (kubelet's evictionPressureTransitionPeriod), so a signal that
 * hovers at the threshold does not flap admission. The DiskPressure hook (for GC) fires on the turn.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';

import { computeReadiness } from '../../src/metrics/readiness.js';
import type { FilesystemFacts } from '../../src/resources/capacity.js';
import { ConditionTracker, signalsOver, type PressureThresholds } from '../../src/resources/conditions.js';
import { ResourceMonitor } from '../../src/resources/monitor.js';

const MIB = 1024 * 1024;
const T: PressureThresholds = { memoryAvailableBytes: 100 * MIB, nodefsAvailablePercent: 10, nodefsInodesFreePercent: 5, imagefsAvailablePercent: 15, pidAvailablePercent: 10, transitionPeriodSeconds: 300 };
const fs = (role: string, availPct: number, inodesFreePct = 50): FilesystemFacts => ({ role, path: `/${role}`, sizeBytes: 1000 * MIB, availBytes: availPct * 10 * MIB, inodes: 1000, inodesFree: inodesFreePct * 10 });
const ok = { memoryAvailableBytes: 4096 * MIB, filesystems: [fs('state', 50), fs('imagefs', 50)], pids: { max: 32768, running: 300 } };

describe('signals over the kubelet thresholds', () => {
  it('none on a healthy sample', () => {
    assert.deepEqual(signalsOver(ok, T), { MemoryPressure: [], DiskPressure: [], PIDPressure: [] });
  });

  it('each threshold, with the figures in words', () => {
    const s = signalsOver(
      { memoryAvailableBytes: 80 * MIB, filesystems: [fs('state', 9, 4), fs('imagefs', 14), fs('storage', 1)], pids: { max: 1000, running: 950 } },
      T,
    );
    assert.deepEqual(s.MemoryPressure, ['memory.available 80 MiB < 100 MiB']);
    assert.deepEqual(s.DiskPressure, [
      'nodefs.available 9% < 10% (90 MiB of 1000 MiB free on /state)',
      'nodefs.inodesFree 4% < 5% (40 of 1000 inodes free on /state)',
      'imagefs.available 14% < 15% (140 MiB of 1000 MiB free on /imagefs)',
    ]);
    assert.deepEqual(s.PIDPressure, ['pid.available 5% < 10% (950 of 1000 in use)']);
  });

  it('a file system without an inode table (files 0) has no inode pressure; pidAvailablePercent 0 switches PID pressure off', () => {
    const s = signalsOver({ filesystems: [{ ...fs('state', 50), inodes: 0, inodesFree: 0 }], pids: { max: 10, running: 10 } }, { ...T, pidAvailablePercent: 0 });
    assert.deepEqual(s, { MemoryPressure: [], DiskPressure: [], PIDPressure: [] });
  });
});

describe('hysteresis (fake clock)', () => {
  it('on at once; stays on while the signal hovers; off after a full period without pressure', () => {
    const t = new ConditionTracker(T);
    let now = 1_000_000;
    const low = { ...ok, filesystems: [fs('state', 5), fs('imagefs', 50)] };
    assert.deepEqual(t.observe(ok, now), []);
    assert.equal(t.active(now).length, 0);
    now += 10_000;
    assert.deepEqual(t.observe(low, now), ['DiskPressure']);
    const onAt = now;
    assert.equal(t.conditions(now).find((c) => c.type === 'DiskPressure')?.lastTransitionTime, new Date(onAt).toISOString());
    assert.match(t.active(now)[0]?.reason ?? '', /^nodefs\.available 5% < 10%/);
    // Below the threshold again, but only for 299 s: still on, and the reason says when it may clear.
    const lastSeen = now;
    for (let i = 0; i < 299; i++) {
      now += 1_000;
      assert.deepEqual(t.observe(ok, now), [], `still on at +${i + 1} s`);
    }
    const c = t.conditions(now).find((x) => x.type === 'DiskPressure');
    assert.equal(c?.status, true);
    assert.match(c?.reason ?? '', new RegExp(`last seen ${new Date(lastSeen).toISOString()}; clears at ${new Date(lastSeen + 300_000).toISOString()}`));
    // Back over the threshold once: the period starts again.
    assert.deepEqual(t.observe(low, now), []);
    now += 299_000;
    assert.deepEqual(t.observe(ok, now), []);
    now += 1_000;
    assert.deepEqual(t.observe(ok, now), ['DiskPressure']);
    const off = t.conditions(now).find((x) => x.type === 'DiskPressure');
    assert.equal(off?.status, false);
    assert.equal(off?.lastTransitionTime, new Date(now).toISOString());
    assert.equal(t.active(now).length, 0);
  });

  it('a signal flapping across the threshold every sample turns the condition on once, never off', () => {
    const t = new ConditionTracker({ ...T, transitionPeriodSeconds: 30 });
    let now = 0;
    const changes: string[] = [];
    for (let i = 0; i < 100; i++) {
      now += 10_000;
      const mem = i % 2 === 0 ? 99 * MIB : 101 * MIB;
      changes.push(...t.observe({ ...ok, memoryAvailableBytes: mem }, now));
    }
    assert.deepEqual(changes, ['MemoryPressure']);
  });

  it('the period accepts 1 s', () => {
    const t = new ConditionTracker({ ...T, transitionPeriodSeconds: 1 });
    t.observe({ ...ok, pids: { max: 100, running: 99 } }, 0);
    assert.deepEqual(t.observe(ok, 999), []);
    assert.deepEqual(t.observe(ok, 1000), ['PIDPressure']);
  });

  it('/readyz: a condition that is on makes `resources` not ready, with the reason', () => {
    const base = { now: 0, store: { writable: true }, runtimes: [], absentRuntimes: [], lastPullSuccessAt: null, lastPullError: null, pollIntervalSeconds: 30, longPollSeconds: 0 };
    assert.deepEqual(computeReadiness({ ...base, conditions: [{ type: 'DiskPressure', status: false, reason: 'no pressure' }] }).resources, { ok: true, reason: 'no MemoryPressure, DiskPressure or PIDPressure' });
    const r = computeReadiness({ ...base, conditions: [{ type: 'DiskPressure', status: true, reason: 'nodefs.available 5% < 10%' }] }).resources;
    assert.equal(r?.ok, false);
    assert.equal(r?.reason, 'DiskPressure: nodefs.available 5% < 10%; new workloads are not admitted (running ones keep running)');
  });
});

describe('ResourceMonitor (fake /proc, fake clock)', () => {
  it('memory pressure from a fake meminfo; the DiskPressure hook fires once when DiskPressure turns on', async () => {
    const root = await mkdtemp(join(tmpdir(), 'persys-mon-'));
    const put = async (rel: string, text: string) => {
      await mkdir(dirname(join(root, rel)), { recursive: true });
      await writeFile(join(root, rel), text);
    };
    try {
      await put('proc/cpuinfo', 'processor\t: 0\n');
      await put('proc/meminfo', 'MemTotal: 1048576 kB\nMemAvailable: 51200 kB\n');
      await put('proc/self/cgroup', '0::/\n');
      let now = 0;
      const fired: string[] = [];
      // DiskPressure from a threshold of 100%: any real file system is "below" it.
      const m = new ResourceMonitor({
        settings: { reserved: { cpus: 0, memoryBytes: 0, diskBytes: 0 }, overcommit: { cpu: 1, memory: 1 }, pressure: { ...T, nodefsAvailablePercent: 100, transitionPeriodSeconds: 5 }, sampleIntervalSeconds: 1 },
        requireRequests: false,
        stateDir: root,
        root,
        now: () => now,
      });
      const off = m.onDiskPressure((reason) => fired.push(reason));
      assert.deepEqual((await m.sample()).sort(), ['DiskPressure', 'MemoryPressure']);
      assert.equal(fired.length, 1);
      assert.match(fired[0] ?? '', /^nodefs\.available [\d.]+% < 100%/);
      now += 1000;
      assert.deepEqual(await m.sample(), []);
      assert.equal(fired.length, 1, 'not again while it stays on');
      const s = m.admissionSettings();
      assert.deepEqual(s.pressure.map((p) => p.type).sort(), ['DiskPressure', 'MemoryPressure']);
      assert.equal(m.latest()?.capacity.memoryBytes, 1024 * MIB);
      assert.equal(m.latest()?.usage.memoryBytes, 974 * MIB);
      off();
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
