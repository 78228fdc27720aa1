/**
 * One no-change reconcile cycle (observe -> plan -> nothing to execute) with 200 running containers,
 * in-process, against one label-filtered container list through dockerode: the engine call that the
 * cycle cannot do without. Rounds alternate between the two so that drift of the engine hits both.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

import { ReconcileLoop } from '../src/reconcile/loop.js';
import { plan } from '../src/reconcile/planner.js';
import { LABELS, type Runtime, type RuntimeHealth } from '../src/runtimes/runtime.js';
import { openAgentParts, type AgentParts } from './agent-parts.js';
import { benchDocument, benchLogger, benchNodeId, docker, median, progress, round2, sleep, type Section } from './lib.js';
import type { Fleet } from './rss.js';

const ROUNDS = 20;
const WARMUP = 3;
const SETTLE_TIMEOUT_MS = 300_000;

/**
 * The same runtime, but health() answers from the first result without an engine call: what a cycle
 * costs if the per-cycle health check (ping + version + info) is cached. Not the agent's behaviour
 * today; measured to size that fix.
 */
function withCachedHealth(rt: Runtime): Runtime {
  let cached: RuntimeHealth | undefined;
  return new Proxy(rt, {
    get(target, prop) {
      if (prop === 'health') {
        return async (signal?: AbortSignal) => (cached ??= await target.health(signal));
      }
      const value: unknown = Reflect.get(target, prop, target);
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}

async function time(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

/** Runs cycles until one has nothing but noops (a fresh fleet is created by the loop itself). */
async function settle(parts: AgentParts, size: number, signal: AbortSignal): Promise<void> {
  const t0 = Date.now();
  for (;;) {
    const s = await parts.loop.runOnce(signal);
    const steady = s.plan.steps.length === size && s.plan.steps.every((x) => x.kind === 'noop') && s.view.observed.every((o) => o.state === 'running');
    if (steady) return;
    if (Date.now() - t0 > SETTLE_TIMEOUT_MS) {
      const kinds = s.plan.steps.map((x) => x.kind).filter((k) => k !== 'noop');
      throw new Error(`the ${size} workloads did not settle within ${SETTLE_TIMEOUT_MS / 1000} s (still planned: ${kinds.slice(0, 5).join(', ')})`);
    }
    if (s.results.length === 0) await new Promise((r) => setTimeout(r, 500));
  }
}

/**
 * `fleet`: the agent process's node id, state and containers from the RSS bench (the agent has
 * exited; its store is reopened here). Without one, a fleet of `size` is created in-process first.
 */
export async function benchNoChangeCycle(fleet: Fleet | undefined, size: number, workDir: string, signal: AbortSignal): Promise<{ section: Section; fleet: Fleet }> {
  const logger = benchLogger();
  let f = fleet;
  if (!f) {
    const nodeId = benchNodeId();
    const stateDir = join(workDir, 'cycle-state');
    await mkdir(stateDir, { recursive: true });
    f = { nodeId, stateDir, namePrefix: `${nodeId}-`, size };
    progress(`no-change cycle: no fleet from the RSS bench; creating ${size} containers in-process`);
  }
  const parts = await openAgentParts({
    nodeId: f.nodeId,
    stateDir: f.stateDir,
    namePrefix: f.namePrefix,
    logger,
    ...(fleet ? {} : { desired: benchDocument(f.nodeId, size) }),
  });
  try {
    progress(`no-change cycle: ${size} containers, ${ROUNDS} rounds of loop.runOnce() vs listContainers`);
    await settle(parts, size, signal);
    if (!fleet) await sleep(5000, signal); // let the engine finish settling the containers it just started
    const listOpts = { all: true, filters: { label: [`${LABELS.managed}=true`, `${LABELS.nodeId}=${f.nodeId}`] } };
    const cachedLoop = new ReconcileLoop({ store: parts.store, runtimes: [withCachedHealth(parts.runtime)], executor: parts.executor, logger });
    for (let i = 0; i < WARMUP; i++) {
      await parts.loop.runOnce(signal);
      await cachedLoop.runOnce(signal);
      await docker().listContainers(listOpts);
    }
    await parts.store.flush();
    const writesBefore = parts.store.writes;
    const cycle: number[] = [];
    const cachedCycle: number[] = [];
    const list: number[] = [];
    let acted = 0;
    const measures: (() => Promise<void>)[] = [
      async () => {
        const t0 = performance.now();
        const s = await parts.loop.runOnce(signal);
        cycle.push(performance.now() - t0);
        acted += s.results.length;
      },
      async () => void list.push(await time(() => docker().listContainers(listOpts))),
      async () => {
        const t0 = performance.now();
        const s = await cachedLoop.runOnce(signal);
        cachedCycle.push(performance.now() - t0);
        acted += s.results.length;
      },
    ];
    // Each round runs the three in a rotated order, so no one always follows the same neighbour.
    for (let r = 0; r < ROUNDS; r++) {
      for (let k = 0; k < measures.length; k++) await (measures[(r + k) % measures.length] as () => Promise<void>)();
    }
    await parts.store.flush();
    const writes = parts.store.writes - writesBefore;

    // Where a cycle's time goes: the runtime's health check, its observe (the list call plus mapping), plan.
    const health: number[] = [];
    const observe: number[] = [];
    const planMs: number[] = [];
    for (let r = 0; r < ROUNDS / 2; r++) {
      health.push(await time(() => parts.runtime.health(signal)));
      const t0 = performance.now();
      const observed = await parts.runtime.observe(signal);
      observe.push(performance.now() - t0);
      const t1 = performance.now();
      plan({ desired: parts.store.data.desired?.document ?? null, records: parts.store.data.records, observed, runtimeUp: { container: true, compose: false, vm: false }, now: new Date() });
      planMs.push(performance.now() - t1);
    }

    const baseline = { name: 'one label-filtered listContainers (dockerode), median', value: round2(median(list)) };
    const notes = [
      `no-change cycle: ${2 * ROUNDS} cycles ran ${acted} step(s) and caused ${writes} store write(s) (both should be 0).`,
    ];
    return {
      fleet: f,
      section: {
        rows: [
          { name: `no-change reconcile cycle, ${size} containers (loop.runOnce median)`, value: round2(median(cycle)), unit: 'ms', baseline, target: { on: 'ratio', max: 2, text: '<= 2x' } },
          { name: '  same cycle if health() were cached (no engine call)', value: round2(median(cachedCycle)), unit: 'ms', baseline },
          { name: '  of which: runtime.health() (ping + version + info)', value: round2(median(health)), unit: 'ms', baseline },
          { name: '  of which: runtime.observe() (the list call + mapping)', value: round2(median(observe)), unit: 'ms', baseline },
          { name: `  of which: plan() for ${size}`, value: round2(median(planMs)), unit: 'ms' },
        ],
        notes,
      },
    };
  } finally {
    await parts.close();
  }
}
