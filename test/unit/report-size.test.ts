/**
 * The status report stays bounded: records bound each workload (records.ts), fitReport bounds the
 * whole. Worst case here: 100 failing workloads whose every message is at its cap.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as v from 'valibot';

import { WorkloadError } from '../../src/errors/index.js';
import { capLogTail, LOG_TAIL_LINES, newRecord, retryBudget, withFailure } from '../../src/reconcile/records.js';
import type { Workload } from '../../src/spec/desired-state.js';
import { statusReport } from '../../src/spec/status-report.js';
import { buildStatusReport, REPORT_MAX_BYTES } from '../../src/status/build-report.js';
import { emptyStoreData, type WorkloadRecord } from '../../src/store/types.js';

const T0 = Date.parse('2025-06-01T12:00:00Z');
const DEFAULTS = { maxAttempts: 100, initialDelaySeconds: 1, maxDelaySeconds: 10, multiplier: 2 };

function failing(i: number, message: (n: number) => string): WorkloadRecord {
  const w = { id: `w-${String(i).padStart(3, '0')}`, type: 'container', revision: 'r1', spec: { image: 'x:1' } } as Workload;
  let r = newRecord(w, new Date(T0));
  for (let n = 1; n <= 25; n++) r = withFailure(r, new WorkloadError('PORT_CONFLICT', message(n)), retryBudget(w, DEFAULTS), new Date(T0 + n * 1000), () => 0.5);
  return { ...r, evidence: { exitCode: 3, restartCount: 40, logTail: capLogTail(Array.from({ length: 50 }, (_, k) => `log line ${k} ${'z'.repeat(400)}`)) } };
}

function report(records: WorkloadRecord[], maxBytes?: number) {
  const data = emptyStoreData();
  for (const r of records) data.records[r.id] = r;
  return buildStatusReport({ nodeId: 'edge-1', seq: 1, agentVersion: '0.1.0', hostname: 'h', data, runtimes: { docker: 'up' }, now: new Date(T0), ...(maxBytes ? { maxBytes } : {}) });
}

describe('status report size', () => {
  it('realistic: 100 workloads x 20 failures with engine-sized messages fit without trimming', () => {
    const msg = (n: number) => `driver failed programming external connectivity on endpoint persys-web (${'a'.repeat(64)}): Bind for 127.0.0.1:8080 failed: port is already allocated (${n})`;
    const r = report(Array.from({ length: 100 }, (_, i) => failing(i, msg)));
    const bytes = Buffer.byteLength(JSON.stringify(r));
    process.stdout.write(`# realistic report, 100 failing workloads: ${bytes} bytes (${(bytes / 1024).toFixed(1)} KiB)\n`);
    assert.ok(bytes < REPORT_MAX_BYTES);
    assert.ok(r.workloads.every((w) => w.failures?.length === 20 && (w.container as { logTail?: string[] } | undefined)?.logTail?.length !== undefined));
    assert.ok(v.safeParse(statusReport, r).success);
  });

  it('worst case: every message at its cap; the report is trimmed to the bound and keeps codes, phases and the newest failure', () => {
    const huge = (n: number) => `${n} ${'x'.repeat(20_000)}`;
    const records = Array.from({ length: 100 }, (_, i) => failing(i, huge));
    const untrimmed = records.reduce((n, r) => n + Buffer.byteLength(JSON.stringify(r)), 0);
    const r = report(records);
    const bytes = Buffer.byteLength(JSON.stringify(r));
    process.stdout.write(`# worst-case report, 100 failing workloads: ${bytes} bytes (records alone ${untrimmed} bytes)\n`);
    assert.ok(bytes <= REPORT_MAX_BYTES, `${bytes}`);
    assert.ok(bytes < 1024 * 1024);
    for (const w of r.workloads) {
      assert.equal(w.phase, 'BackingOff');
      assert.equal(w.error?.code, 'PORT_CONFLICT');
      assert.ok((w.failures?.length ?? 0) >= 1);
      assert.equal(w.failures?.at(-1)?.attempt, 25);
    }
    assert.ok(v.safeParse(statusReport, r).success);
    // The store's records are not changed by trimming the report.
    assert.equal(records[0]!.failures.length, 20);
  });

  it(`a log tail keeps at most ${LOG_TAIL_LINES} lines within 4 KiB`, () => {
    const tail = capLogTail(Array.from({ length: 100 }, (_, k) => `line ${k}`));
    assert.equal(tail.length, LOG_TAIL_LINES);
    assert.equal(tail.at(-1), 'line 99');
    const long = capLogTail(Array.from({ length: 100 }, () => 'y'.repeat(1000)));
    assert.ok(Buffer.byteLength(long.join('\n')) <= 4096);
  });
});
