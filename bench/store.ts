import { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

import { silentLogger } from '../src/log.js';
import { Store } from '../src/store/store.js';
import type { WorkloadRecord } from '../src/store/types.js';

const RECORDS = 1_000;
const ROUNDS = 40;

/** A record as the agent keeps it after some life: a few failures, a log tail, container facts. */
function realisticRecord(i: number): WorkloadRecord {
  const at = new Date(Date.UTC(2025, 0, 1, 0, 0, i)).toISOString();
  const id = `workload-${String(i).padStart(4, '0')}`;
  return {
    id,
    type: i % 10 === 0 ? 'vm' : i % 5 === 0 ? 'compose' : 'container',
    revision: `r${i % 17}`,
    specHash: `sha256:${(i * 2654435761).toString(16).padStart(16, '0').repeat(4)}`,
    lastAttemptHash: `sha256:${(i * 40503).toString(16).padStart(16, '0').repeat(4)}`,
    desiredState: 'running',
    phase: i % 7 === 0 ? 'Failed' : 'Running',
    actualState: i % 7 === 0 ? 'exited' : 'running',
    message: i % 7 === 0 ? 'container exited with code 1' : '',
    runtimeId: `${(i * 7919).toString(16).padStart(12, '0')}${'ab'.repeat(26)}`,
    error:
      i % 7 === 0
        ? { code: 'CONTAINER_EXITED', message: 'container exited with code 1 after 3s', userMessage: 'The container exited.', transient: true }
        : null,
    retry: { attempts: i % 4, nextRetryAt: i % 7 === 0 ? at : null, gaveUp: false, resetKey: `r${i % 17}:t1` },
    failures: Array.from({ length: i % 7 === 0 ? 5 : 1 }, (_, k) => ({
      at,
      code: 'IMAGE_PULL_FAILED' as const,
      message: `Get "https://registry.example/v2/app/manifests/1.${k}": dial tcp 10.0.0.${k}:443: i/o timeout`,
      attempt: k + 1,
    })),
    evidence: {
      exitCode: i % 7 === 0 ? 1 : null,
      oomKilled: false,
      restartCount: i % 3,
      startedAt: at,
      finishedAt: null,
      logTail: Array.from({ length: 5 }, (_, k) => `${at} level=info msg="request handled" path=/api/v1/items/${k} status=200 duration=3ms`),
    },
    updatedAt: at,
    phaseSince: at,
  };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? (s[mid] ?? 0) : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2;
};

/**
 * Median time for one persisted change of a store holding 1,000 realistic records (update ->
 * flush: serialise, write a 0600 temp file, fsync, rename, fsync the dir), against a plain
 * `fs.promises.writeFile` of the same JSON (no temp file, no fsync: the floor, not a target).
 */
export async function benchStore(): Promise<{ name: string; value: number; unit: string; baseline?: { name: string; value: number } }[]> {
  const dir = await fsp.mkdtemp(join(tmpdir(), 'persys-bench-store-'));
  try {
    const store = await Store.open(join(dir, 'state'), silentLogger());
    store.update((d) => {
      for (let i = 0; i < RECORDS; i++) d.records[`workload-${String(i).padStart(4, '0')}`] = realisticRecord(i);
    });
    await store.flush();

    const storeTimes: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const t0 = performance.now();
      store.setRecord({ ...realisticRecord(r), message: `round ${r}` });
      await store.flush();
      storeTimes.push(performance.now() - t0);
    }
    const json = JSON.stringify(store.data);
    await store.close();

    const plainFile = join(dir, 'plain.json');
    const plainTimes: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const t0 = performance.now();
      await fsp.writeFile(plainFile, json);
      plainTimes.push(performance.now() - t0);
    }

    return [
      {
        name: `store write, ${RECORDS} records (update + flush, fsync)`,
        value: round(median(storeTimes)),
        unit: 'ms',
        baseline: { name: 'fs.promises.writeFile of the same JSON', value: round(median(plainTimes)) },
      },
      { name: `store state.json size, ${RECORDS} records`, value: round(Buffer.byteLength(json) / 1024), unit: 'KiB' },
    ];
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

const round = (x: number): number => Math.round(x * 100) / 100;
