/**
 * The series the alert rules need beyond the first metrics set: persys_node_info's host_id, the
 * per-workload phase and retry attempts, the store's writable flag, the configured intervals and
 * the applied generation.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { loadConfig } from '../../src/config/load.js';
import { hostIdOf, readHostId } from '../../src/metrics/host-id.js';
import { configIntervals } from '../../src/metrics/intervals.js';
import { createAgentMetrics } from '../../src/metrics/registry.js';
import { isApplied, type WorkloadStateView } from '../../src/metrics/workload-state.js';

const sample = (text: string, name: string, labels: Record<string, string> = {}): string | undefined => {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) return line.slice(line.lastIndexOf(' ') + 1);
  }
  return undefined;
};

describe('host_id of persys_node_info', () => {
  const base = { machineId: 'm1', bootId: 'b1', stateDir: '/var/lib/persys-agent' };

  it('is 12 hex, stable for the same inputs, and differs with the machine, the boot and the state dir', () => {
    const id = hostIdOf(base);
    assert.match(id, /^[0-9a-f]{12}$/);
    assert.equal(hostIdOf({ ...base }), id);
    assert.notEqual(hostIdOf({ ...base, machineId: 'm2' }), id, 'another machine');
    assert.notEqual(hostIdOf({ ...base, bootId: 'b2' }), id, 'a clone of the machine (same machine id), or a reboot');
    assert.notEqual(hostIdOf({ ...base, stateDir: '/srv/other' }), id, 'a second agent with its own state dir');
    assert.equal(hostIdOf({ ...base, stateDir: '/var/lib/persys-agent/' }), id, 'the same dir written differently');
  });

  it('never contains the machine id', () => {
    const machineId = '3d1219c7c4c5404aaa1f6d2a48adfda4';
    assert.ok(!machineId.includes(hostIdOf({ ...base, machineId })));
  });

  it('reads the machine id and boot id files, and goes without the ones that are missing', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'persys-hostid-'));
    try {
      await writeFile(join(dir, 'machine-id'), 'abc\n');
      await writeFile(join(dir, 'boot_id'), 'boot-1\n');
      const files = { machineId: [join(dir, 'absent'), join(dir, 'machine-id')], bootId: [join(dir, 'boot_id')] };
      assert.equal(await readHostId('/s', files), hostIdOf({ machineId: 'abc', bootId: 'boot-1', stateDir: '/s' }));
      assert.equal(await readHostId('/s', { machineId: [join(dir, 'absent')], bootId: [] }), hostIdOf({ machineId: null, bootId: null, stateDir: '/s' }));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('is a label of persys_node_info', async () => {
    const m = createAgentMetrics({ nodeId: 'n1', version: 'v', hostname: 'h', hostId: '0123456789ab' });
    assert.match(await m.registry.metrics(), /^persys_node_info\{node_id="n1",hostname="h",host_id="0123456789ab"\} 1$/m);
  });
});

describe('per-workload state series', () => {
  const rec = (id: string, phase: string, extra: Partial<WorkloadStateView> = {}): WorkloadStateView => ({ id, type: 'container', phase, revision: 'r1', desiredState: 'running', retry: { attempts: 0 }, ...extra });

  it('gives one persys_workload_phase series per record, and its retry attempts', async () => {
    let records = [rec('web', 'Running'), rec('crash', 'CrashLoop', { retry: { attempts: 3 } })];
    const m = createAgentMetrics({ nodeId: 'n', version: 'v' }, { workloadPhases: () => records });
    const text = await m.registry.metrics();
    assert.equal(sample(text, 'persys_workload_phase', { workload_id: 'crash', phase: 'CrashLoop' }), '1');
    assert.equal(sample(text, 'persys_workload_phase', { workload_id: 'web', phase: 'Running' }), '1');
    assert.equal(text.split('\n').filter((l) => l.startsWith('persys_workload_phase{')).length, 2, 'one series per workload');
    assert.equal(sample(text, 'persys_workload_retry_attempts', { workload_id: 'crash' }), '3');
    records = [rec('web', 'Running')];
    assert.doesNotMatch(await m.registry.metrics(), /workload_id="crash"/, 'a removed record takes its series along');
  });

  it('says whether the desired state is applied', () => {
    const desired = [
      { id: 'web', revision: 'r1', desiredState: 'running' },
      { id: 'job', revision: 'r1', desiredState: 'stopped' },
    ];
    assert.equal(isApplied(desired, [rec('web', 'Running'), rec('job', 'Stopped')]), true);
    assert.equal(isApplied(desired, [rec('web', 'Completed'), rec('job', 'Completed')]), true, 'Completed counts for both');
    assert.equal(isApplied(desired, [rec('web', 'Running')]), false, 'a workload without a record');
    assert.equal(isApplied(desired, [rec('web', 'Pulling'), rec('job', 'Stopped')]), false, 'still rolling out');
    assert.equal(isApplied(desired, [rec('web', 'Running', { revision: 'r0' }), rec('job', 'Stopped')]), false, 'the old revision');
    assert.equal(isApplied(desired, [rec('web', 'Running'), rec('job', 'Running')]), false, 'running while desired stopped');
    assert.equal(isApplied(desired, [rec('web', 'Running'), rec('job', 'Stopped'), rec('old', 'Removing')]), false, 'a removal pending');
    assert.equal(isApplied([], []), true);
    assert.equal(isApplied(desired, [rec('web', 'Running'), rec('job', 'Stopped'), rec('old', 'Failed')]), true, 'a dropped failed workload\'s record, kept for GC retention');
  });

  it('keeps the newest applied generation while a newer one rolls out', async () => {
    let generation = 1;
    let records = [rec('web', 'Running')];
    let desired = [{ id: 'web', revision: 'r1' }];
    const m = createAgentMetrics({ nodeId: 'n', version: 'v' }, { desiredGeneration: () => generation, desiredWorkloads: () => desired, workloadPhases: () => records });
    assert.equal(sample(await m.registry.metrics(), 'persys_desired_state_applied_generation'), '1');
    generation = 2;
    desired = [{ id: 'web', revision: 'r2' }];
    records = [rec('web', 'Pulling', { revision: 'r2' })];
    const text = await m.registry.metrics();
    assert.equal(sample(text, 'persys_desired_state_generation'), '2');
    assert.equal(sample(text, 'persys_desired_state_applied_generation'), '1', 'generation 2 is not applied yet');
    records = [rec('web', 'Running', { revision: 'r2' })];
    assert.equal(sample(await m.registry.metrics(), 'persys_desired_state_applied_generation'), '2');
  });
});

describe('store and configuration series', () => {
  it('says whether the store is writable, and nothing when the store does not say', async () => {
    let writable = true;
    const m = createAgentMetrics({ nodeId: 'n', version: 'v' }, { store: () => ({ writes: 1, writeErrors: 0, lastWriteMs: 1, writable }) });
    assert.equal(sample(await m.registry.metrics(), 'persys_store_writable'), '1');
    writable = false;
    assert.equal(sample(await m.registry.metrics(), 'persys_store_writable'), '0');
    const none = createAgentMetrics({ nodeId: 'n', version: 'v' }, { store: () => ({ writes: 1, writeErrors: 0, lastWriteMs: 1 }) });
    assert.equal(sample(await none.registry.metrics(), 'persys_store_writable'), undefined);
  });

  it('exposes the configured intervals, the push interval only in push mode', async () => {
    const scrape = configIntervals(loadConfig({ env: {}, flags: { 'source.pollIntervalSeconds': '7' } }));
    assert.equal(scrape['source.pollIntervalSeconds'], 7);
    assert.equal(scrape['metrics.push.intervalSeconds'], undefined);
    assert.equal(scrape['gc.intervalSeconds'], 60);
    const push = configIntervals(loadConfig({ env: {}, flags: { 'metrics.push.url': 'http://127.0.0.1:9091', 'metrics.push.intervalSeconds': '20' } }));
    assert.equal(push['metrics.push.intervalSeconds'], 20);
    const m = createAgentMetrics({ nodeId: 'n', version: 'v', intervals: push });
    assert.equal(sample(await m.registry.metrics(), 'persys_config_interval_seconds', { setting: 'metrics.push.intervalSeconds' }), '20');
  });
});
