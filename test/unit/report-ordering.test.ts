/**
 * Durability order of a status report (issue 8): the reporter builds the snapshot, then the store
 * makes its seq and every record change made before the build durable, and only then is it sent.
 * Real Store and StatusReporter, the report going to a file:// target in a temp dir.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, describe, it } from 'node:test';

import { silentLogger } from '../../src/log.js';
import type { StatusReport } from '../../src/spec/status-report.js';
import { Store } from '../../src/store/store.js';
import type { WorkloadRecord } from '../../src/store/types.js';
import { StatusReporter } from '../../src/sync/reporter.js';

const root = mkdtempSync(join(tmpdir(), 'persys-report-order-'));
after(() => rmSync(root, { recursive: true, force: true }));

function record(attempts: number): WorkloadRecord {
  const now = new Date(0).toISOString();
  return {
    id: 'w',
    type: 'container',
    revision: 'r1',
    specHash: 'abc',
    desiredState: 'running',
    phase: 'Failed',
    actualState: 'missing',
    message: '',
    error: null,
    retry: { attempts, nextRetryAt: null, gaveUp: false, resetKey: 'r1' },
    failures: [],
    updatedAt: now,
    phaseSince: now,
  } as WorkloadRecord;
}

const onDiskAttempts = (dir: string): number =>
  (JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as { records: Record<string, WorkloadRecord> }).records.w?.retry.attempts ?? -1;

describe('status report durability order', () => {
  it('what a report says about retries is on disk before it is sent, even when a change lands while the seq is stored', async () => {
    const dir = join(root, 'a');
    const store = await Store.open(dir, silentLogger());
    store.setRecord(record(1));
    await store.flush();
    const statusFile = join(dir, 'status.json');
    const atSend: { onDisk: number }[] = [];
    const reporter = new StatusReporter({
      url: pathToFileURL(statusFile).href,
      heartbeatSeconds: 3600,
      debounceMs: 0,
      loadSeq: () => store.data.reporter.seq,
      buildReport: (seq) =>
        ({
          apiVersion: 'persys.dev/v1',
          kind: 'StatusReport',
          nodeId: 'n',
          seq,
          agentVersion: '0',
          observedGeneration: null,
          sentAt: new Date().toISOString(),
          node: { hostname: 'h', labels: {}, runtimes: {} },
          sync: { lastPullAt: null, lastError: null },
          workloads: [{ id: 'w', retry: { attempts: store.getRecord('w')?.retry.attempts } }],
        }) as unknown as StatusReport,
      saveSeq: async (seq) => {
        // Changes made before the report was built: durable by the time saveSeq resolves.
        store.setRecord(record((store.getRecord('w')?.retry.attempts ?? 0) + 1));
        await store.beforeReport(seq);
        const onDisk = onDiskAttempts(dir);
        // An executor update landing between the store write and the send: not in this report.
        store.setRecord(record(onDisk + 10));
        atSend.push({ onDisk });
      },
      logger: silentLogger(),
    });
    // flush() sends one report through the whole path (build, saveSeq, write).
    assert.equal(await reporter.flush(AbortSignal.timeout(5000)), true);
    const sent = JSON.parse(readFileSync(statusFile, 'utf8')) as { seq: number; workloads: { retry: { attempts: number } }[] };
    const onDiskThen = atSend[0]?.onDisk;
    // The report shows a state no newer than what was on disk before it was sent.
    assert.ok(onDiskThen !== undefined);
    assert.ok(sent.workloads[0]!.retry.attempts <= onDiskThen, `reported ${sent.workloads[0]!.retry.attempts} attempts, disk had ${onDiskThen}`);
    assert.equal(sent.workloads[0]!.retry.attempts, 1, 'the report is the snapshot taken before saveSeq was called');
    // Its seq is covered by the reservation on disk.
    const reserved = (JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as { reporter: { seqReserved: number } }).reporter.seqReserved;
    assert.ok(reserved >= sent.seq, `seq ${sent.seq} sent with only ${reserved} reserved`);
    await store.close();
  });

  it('a seq that cannot be stored is not sent', async () => {
    const dir = join(root, 'b');
    const store = await Store.open(dir, silentLogger(), { fsync: false });
    const statusFile = join(dir, 'status.json');
    const reporter = new StatusReporter({
      url: pathToFileURL(statusFile).href,
      heartbeatSeconds: 3600,
      debounceMs: 0,
      loadSeq: () => 0,
      buildReport: (seq) => ({ seq }) as unknown as StatusReport,
      saveSeq: () => Promise.reject(new Error('ENOSPC: no space left on device')),
      logger: silentLogger(),
    });
    assert.equal(await reporter.flush(AbortSignal.timeout(5000)), false);
    assert.throws(() => readFileSync(statusFile), /ENOENT/);
    await store.close();
  });
});
