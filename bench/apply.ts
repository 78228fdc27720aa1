/**
 * Apply time: the in-process loop from an empty store and no containers to all Running (one
 * `loop.trigger()`: observe, plan, create+start with reconcile.concurrency), against create+start of
 * the same create bodies straight through dockerode, one after the other. Everything is removed
 * between runs; the two kinds of run alternate so that engine drift hits both.
 */
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

import { specHash } from '../src/reconcile/canonical.js';
import { toCreateOptions } from '../src/runtimes/docker/container-config.js';
import { openAgentParts } from './agent-parts.js';
import { benchDocument, benchLogger, benchNodeId, containersOf, docker, median, progress, removeNode, round2, type Row, type Section } from './lib.js';

const DEFAULT_CONCURRENCY = 4;

async function assertAllRunning(nodeId: string, n: number, what: string): Promise<void> {
  const list = await containersOf(nodeId);
  const running = list.filter((c) => c.State === 'running').length;
  if (list.length !== n || running !== n) throw new Error(`${what}: expected ${n} running containers, found ${list.length} (${running} running)`);
}

let runNo = 0;

/** One loop run from nothing to `n` Running; returns ms from trigger to the cycle's end. */
async function loopApply(nodeId: string, n: number, concurrency: number | undefined, workDir: string, signal: AbortSignal): Promise<number> {
  const stateDir = join(workDir, `apply-${runNo++}`);
  await mkdir(stateDir, { recursive: true });
  const parts = await openAgentParts({
    nodeId,
    stateDir,
    namePrefix: `${nodeId}-`,
    logger: benchLogger(),
    desired: benchDocument(nodeId, n),
    ...(concurrency !== undefined ? { concurrency } : {}),
  });
  try {
    const t0 = performance.now();
    await parts.loop.trigger('bench apply', signal);
    const ms = performance.now() - t0;
    const failed = parts.loop.lastCycle?.results.filter((r) => !r.ok) ?? [];
    if (failed.length > 0) throw new Error(`loop apply: ${failed.length} step(s) failed, e.g. ${failed[0]?.error?.code}: ${failed[0]?.error?.message}`);
    await assertAllRunning(nodeId, n, 'loop apply');
    return ms;
  } finally {
    await parts.close();
    await rm(stateDir, { recursive: true, force: true });
  }
}

/** create+start of the same bodies through dockerode, sequentially; returns ms. */
async function directApply(nodeId: string, n: number): Promise<number> {
  const doc = benchDocument(nodeId, n);
  const bodies = doc.workloads.map((w) => {
    if (w.type !== 'container') throw new Error('bench workloads are containers');
    return toCreateOptions(w, { nodeId, specHash: specHash(w), namePrefix: `${nodeId}-` });
  });
  const t0 = performance.now();
  for (const body of bodies) {
    const c = await docker().createContainer(body);
    await c.start();
  }
  const ms = performance.now() - t0;
  await assertAllRunning(nodeId, n, 'direct apply');
  return ms;
}

async function clean(nodeId: string): Promise<void> {
  await removeNode(nodeId);
  // Names are reused by the next run: make sure the engine has let go of them.
  if ((await containersOf(nodeId)).length > 0) throw new Error(`containers of ${nodeId} survived removal`);
}

async function compare(n: number, rounds: number, concurrency: number | undefined, workDir: string, signal: AbortSignal): Promise<{ loop: number[]; direct: number[] }> {
  const nodeId = benchNodeId();
  const loop: number[] = [];
  const direct: number[] = [];
  try {
    for (let r = 0; r < rounds; r++) {
      if (signal.aborted) throw new Error('aborted');
      const order = r % 2 === 0 ? (['loop', 'direct'] as const) : (['direct', 'loop'] as const);
      for (const kind of order) {
        if (kind === 'loop') loop.push(await loopApply(nodeId, n, concurrency, workDir, signal));
        else direct.push(await directApply(nodeId, n));
        await clean(nodeId);
      }
    }
  } finally {
    await removeNode(nodeId).catch(() => undefined);
  }
  return { loop, direct };
}

export async function benchApply(workDir: string, signal: AbortSignal): Promise<Section> {
  const rows: Row[] = [];
  const notes: string[] = [];
  // A discarded round first: JIT, dockerode's first connections, the engine's image cache.
  progress('apply: warm-up');
  await compare(1, 1, undefined, workDir, signal);

  const cases: { n: number; rounds: number; concurrency?: number; target?: number }[] = [
    { n: 1, rounds: 8, target: 1.2 },
    { n: 20, rounds: 5, target: 0.6 },
    { n: 20, rounds: 3, concurrency: 8 },
  ];
  for (const c of cases) {
    const conc = c.concurrency ?? DEFAULT_CONCURRENCY;
    progress(`apply: ${c.n} container(s), reconcile.concurrency ${conc}, ${c.rounds} round(s) each`);
    const { loop, direct } = await compare(c.n, c.rounds, c.concurrency, workDir, signal);
    const label = c.concurrency === undefined ? `reconcile.concurrency ${conc} (default)` : `reconcile.concurrency ${conc}`;
    rows.push({
      name: `apply ${c.n} container${c.n === 1 ? '' : 's'}, empty -> all Running, ${label}`,
      value: round2(median(loop)),
      unit: 'ms',
      baseline: { name: `create+start through dockerode, sequential (${c.n})`, value: round2(median(direct)) },
      ...(c.target !== undefined ? { target: { on: 'ratio' as const, max: c.target, text: `<= ${c.target}x` } } : {}),
    });
    notes.push(`apply ${c.n} (concurrency ${conc}): loop runs ${loop.map((x) => x.toFixed(0)).join(', ')} ms; direct runs ${direct.map((x) => x.toFixed(0)).join(', ')} ms.`);
  }
  return { rows, notes };
}
