import { performance } from 'node:perf_hooks';

import { hashCanonical } from '../src/reconcile/canonical.js';
import { canonicalContainerSpec } from '../src/runtimes/docker/canonical.js';
import { plan, type PlanInput } from '../src/reconcile/planner.js';
import { retryResetKey } from '../src/reconcile/records.js';
import type { ObservedWorkload } from '../src/runtimes/runtime.js';
import type { ContainerWorkload, DesiredStateDocument } from '../src/spec/desired-state.js';
import type { WorkloadRecord } from '../src/store/types.js';

const WORKLOADS = 5_000;
const ROUNDS = 30;
const NOW = new Date('2025-06-01T12:00:00.000Z');

export interface BenchResult {
  name: string;
  value: number;
  unit: string;
  baseline?: { name: string; value: number };
}

/** A container spec of realistic size: env, ports, a volume, limits, labels. */
function workload(i: number, image = 'nginx:1.27', build = 'b1'): ContainerWorkload {
  const id = `w${String(i).padStart(5, '0')}`;
  return {
    id,
    type: 'container',
    revision: `r${i % 13}`,
    desiredState: 'running',
    spec: {
      image,
      env: { APP_ID: id, BUILD: build, LOG_LEVEL: 'info', DB_URL: `postgres://db-${i % 7}:5432/app`, FEATURE_X: 'on' },
      ports: [{ containerPort: 8080, hostPort: 10_000 + i }],
      volumes: [{ type: 'volume', source: `data-${id}`, target: '/data' }],
      resources: { cpus: 0.25, memoryBytes: 128 * 1024 * 1024 },
      labels: { team: `t${i % 5}`, tier: 'web' },
      restartPolicy: 'always',
    },
  };
}

function desiredDoc(build = 'b1'): DesiredStateDocument {
  return {
    apiVersion: 'persys.dev/v1',
    kind: 'DesiredState',
    nodeId: 'bench',
    generation: 1,
    workloads: Array.from({ length: WORKLOADS }, (_, i) => workload(i, 'nginx:1.27', build)),
  };
}

/** The engine and the store as they look when everything has been applied; `changedEvery` n-th differs. */
function world(desired: DesiredStateDocument, changedEvery: number | null): Pick<PlanInput, 'records' | 'observed'> {
  const records: Record<string, WorkloadRecord> = {};
  const observed: ObservedWorkload[] = [];
  desired.workloads.forEach((w, i) => {
    const changed = changedEvery !== null && i % changedEvery === 0;
    // A changed workload: what runs is the previous image, so its hash is the old one.
    const applied = changed && w.type === 'container' ? workload(i, 'nginx:1.26') : w;
    // Hashed without the planner's caches, so a cold-cache measurement stays cold.
    const appliedSpec = applied.type === 'container' ? canonicalContainerSpec(applied.spec) : {};
    const hash = hashCanonical(applied.type, appliedSpec);
    const runtimeId = `${i.toString(16).padStart(12, '0')}${'ab'.repeat(26)}`;
    observed.push({
      workloadId: w.id,
      type: w.type,
      runtime: 'docker',
      runtimeId,
      name: `persys-${w.id}`,
      revision: w.revision,
      specHash: hash,
      state: 'running',
      createdAt: '2025-06-01T10:00:00.000Z',
    });
    records[w.id] = {
      id: w.id,
      type: w.type,
      revision: w.revision,
      specHash: hash,
      appliedSpec,
      desiredState: 'running',
      phase: 'Running',
      actualState: 'running',
      message: '',
      runtimeId,
      error: null,
      retry: { attempts: 0, nextRetryAt: null, gaveUp: false, resetKey: retryResetKey(w, hash) },
      failures: [],
      updatedAt: NOW.toISOString(),
      phaseSince: NOW.toISOString(),
    };
  });
  return { records, observed };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

function collectGarbage(): void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g) g();
}

/** Median wall time of `fn` over ROUNDS runs, after one warm-up run; `setup` runs untimed before each. */
function measure<T>(fn: (x: T) => unknown, setup: () => T): number {
  fn(setup());
  const times: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const x = setup();
    collectGarbage();
    const t0 = performance.now();
    fn(x);
    times.push(performance.now() - t0);
  }
  return median(times);
}

/**
 * plan() at fleet-host scale. The first two figures are the steady state (the desired document is
 * unchanged between passes, so spec hashes come from the per-object cache). The others: a fresh
 * copy of the same document (as a store that clones would hand out: the content cache answers),
 * and a document in which every spec is new (each one canonicalised and hashed: the worst case,
 * once per new generation).
 */
export async function benchPlan(): Promise<BenchResult[]> {
  const desired = desiredDoc();
  const runtimeUp = { container: true, compose: true, vm: true };
  const steady = world(desired, null);
  const tenPercent = world(desired, 10);

  const baselineMs = measure(() => JSON.stringify(desired), () => undefined);
  const baseline = { name: `JSON.stringify of the desired document (${WORKLOADS} workloads)`, value: baselineMs };

  const noopMs = measure((input: PlanInput) => plan(input), () => ({ desired, ...steady, runtimeUp, now: NOW }));
  const changedMs = measure((input: PlanInput) => plan(input), () => ({ desired, ...tenPercent, runtimeUp, now: NOW }));
  const copyMs = measure((input: PlanInput) => plan(input), () => ({ desired: structuredClone(desired), ...steady, runtimeUp, now: NOW }));
  let round = 0;
  // Every round a new BUILD value in every spec, and an engine that already runs it: no cache can answer.
  const coldMs = measure(
    (input: PlanInput) => plan(input),
    () => {
      const fresh = desiredDoc(`cold-${round++}`);
      return { desired: fresh, ...world(fresh, null), runtimeUp, now: NOW };
    },
  );

  await Promise.resolve();
  return [
    { name: `plan() median, ${WORKLOADS} containers, all noop`, value: noopMs, unit: 'ms', baseline },
    { name: `plan() median, ${WORKLOADS} containers, 10% changed`, value: changedMs, unit: 'ms', baseline },
    { name: `plan() median, ${WORKLOADS} containers, all noop, fresh copy of the document`, value: copyMs, unit: 'ms', baseline },
    { name: `plan() median, ${WORKLOADS} containers, all noop, every spec new (cold hash caches)`, value: coldMs, unit: 'ms', baseline },
  ];
}
