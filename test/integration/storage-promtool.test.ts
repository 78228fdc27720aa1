/**
 * The storage series (src/storage/metrics.ts) pass `promtool check metrics` (names, units, help), with
 * every persys_storage_* name present and the values of the report they are read from: pools of each
 * type, volumes in each phase (Refused ones included), a VM pool disk's volume among them.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Registry } from 'prom-client';

import type { StorageReport } from '../../src/storage/manager.js';
import { registerStorageMetrics } from '../../src/storage/metrics.js';
import { requireEngine } from '../helpers/engines.js';
import { promtoolCheckMetrics } from '../helpers/prometheus.js';

const skip = await requireEngine('prometheus');
const MiB = 1024 * 1024;

const NAMES = [
  'persys_storage_pool_capacity_bytes',
  'persys_storage_pool_allocated_bytes',
  'persys_storage_pool_used_bytes',
  'persys_storage_volume_size_bytes',
  'persys_storage_volume_used_bytes',
  'persys_storage_volume_ready',
];

describe('storage metrics', { skip, timeout: 60_000 }, () => {
  it('promtool check metrics is clean; every persys_storage_* series carries the report values', async () => {
    let report: StorageReport = {
      pools: [
        { name: 'fast', type: 'loop', enforcement: 'hard', capacityBytes: 256 * MiB, allocatedBytes: 32 * MiB, usedBytes: 28 * MiB, available: 224 * MiB },
        { name: 'plain', type: 'dir', enforcement: 'accounted', capacityBytes: 8 * MiB, allocatedBytes: 4 * MiB, usedBytes: 4096, available: 4 * MiB },
        { name: 'vmdisks', type: 'libvirt', enforcement: 'hard', capacityBytes: 128 * MiB, allocatedBytes: 80 * MiB, usedBytes: 400 * 1024, available: 48 * MiB },
      ],
      volumes: [
        { name: 'data', pool: 'fast', sizeBytes: 32 * MiB, usedBytes: 28 * MiB, attachedTo: ['web'], phase: 'Ready', reclaimPolicy: 'retain', error: null },
        { name: 'big', pool: 'fast', sizeBytes: 300 * MiB, usedBytes: 0, attachedTo: [], phase: 'Refused', reclaimPolicy: 'retain', error: 'STORAGE_QUOTA_EXCEEDED: ...' },
        { name: 'scratch', pool: 'plain', sizeBytes: 4 * MiB, usedBytes: 4096, attachedTo: [], phase: 'Retained', reclaimPolicy: 'retain', error: null },
        { name: 'vm1.a', pool: 'vmdisks', sizeBytes: 64 * MiB, usedBytes: 200 * 1024, attachedTo: ['vm1'], phase: 'Ready', reclaimPolicy: 'retain', error: null },
        { name: 'vm1.b', pool: 'vmdisks', sizeBytes: 16 * MiB, usedBytes: 200 * 1024, attachedTo: ['vm1'], phase: 'Growing', reclaimPolicy: 'delete', error: null },
      ],
    };
    const registry = new Registry();
    registerStorageMetrics(registry, () => report);
    const text = await registry.metrics();
    const lint = await promtoolCheckMetrics(text);
    assert.equal(lint.code, 0, `promtool check metrics:\n${lint.output}\n${text}`);
    assert.equal(lint.output.trim(), '', `promtool has no remarks:\n${lint.output}`);
    for (const n of NAMES) {
      assert.match(text, new RegExp(`^# HELP ${n} \\S`, 'm'), `${n} has help`);
      assert.match(text, new RegExp(`^# TYPE ${n} gauge$`, 'm'), `${n} is a gauge`);
    }
    assert.match(text, /^persys_storage_pool_capacity_bytes\{pool="vmdisks",type="libvirt",enforcement="hard"\} 134217728$/m);
    assert.match(text, /^persys_storage_pool_allocated_bytes\{pool="plain",type="dir",enforcement="accounted"\} 4194304$/m);
    assert.match(text, /^persys_storage_pool_used_bytes\{pool="fast",type="loop",enforcement="hard"\} 29360128$/m);
    assert.match(text, /^persys_storage_volume_size_bytes\{volume="vm1\.a",pool="vmdisks"\} 67108864$/m);
    assert.match(text, /^persys_storage_volume_used_bytes\{volume="data",pool="fast"\} 29360128$/m);
    assert.match(text, /^persys_storage_volume_ready\{volume="data",pool="fast",phase="Ready"\} 1$/m);
    assert.match(text, /^persys_storage_volume_ready\{volume="big",pool="fast",phase="Refused"\} 0$/m);
    assert.match(text, /^persys_storage_volume_ready\{volume="vm1\.b",pool="vmdisks",phase="Growing"\} 0$/m);

    // Read at scrape time: a volume gone from the report is gone from the next scrape (no stale series).
    report = { pools: report.pools, volumes: report.volumes.filter((v) => v.name !== 'vm1.b') };
    const again = await registry.metrics();
    assert.doesNotMatch(again, /vm1\.b/);
    assert.equal((await promtoolCheckMetrics(again)).code, 0);
    console.log(`# storage metrics: ${NAMES.length} names, ${text.split('\n').filter((l) => l.startsWith('persys_storage_')).length} series, promtool clean`);
  });
});
