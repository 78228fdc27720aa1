/**
 * kill -9 mid-apply (issue 16, family 1; issue 8's crash test), on the real dockerd with the built
 * CLI and a loopback fleet server.
 *
 * A fleet of 200 workloads (so the store holds 200 records) is brought up once: 190 "stopped"
 * containers (created, never started: cheap) and a churn set that runs. Then, for ROUNDS rounds, a
 * new generation is published that creates, recreates (env change), removes, or flips
 * running/stopped some of the churn set, and the agent is SIGKILLed at a seeded random moment
 * after the publish (so during the pull, the store write, a step, or the report). A new agent on
 * the same state dir must then:
 *   - read the store without moving a file aside (no `*.corrupt-*`, no ERROR about it);
 *   - converge: exactly one container per desired workload, in the desired state, none with our
 *     node-id label that is not desired (no orphan, no duplicate);
 * and over the whole run the server never sees `seq` go backwards.
 * Volumes and compose apps do not exist in this agent version yet, so no round covers them.
 *
 * Seed: KILL9_SEED (printed); rounds: KILL9_ROUNDS (default 30).
 * Prints: rounds, kills that landed mid-step, time to converge p50/max.
 *
 * The "rollback below the running generation" defect on a full state dir is tested with the other
 * full-disk faults, in full-disks.test.ts.
 */
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import Docker from 'dockerode';

import { AgentProcess, waitFor } from '../helpers/agent-process.js';
import { cleanupDockerByLabel, requireEngine, testNodeId } from '../helpers/engines.js';
import { startFleetServer, type FleetServer, type JsonObject } from '../helpers/fleet-server.js';
import { seededRandom } from '../helpers/seeded-random.js';

const skip = await requireEngine('docker');
const IMAGE = 'persys-test/busybox:1';
const FLEET = 200;
const CHURN = 10;
const ROUNDS = Number(process.env.KILL9_ROUNDS ?? 30);
const SEED = Number(process.env.KILL9_SEED ?? randomInt(1, 2 ** 31 - 1));

interface W {
  id: string;
  type: 'container';
  revision: string;
  desiredState: 'running' | 'stopped';
  spec: Record<string, unknown>;
}
interface Report extends JsonObject {
  seq: number;
  observedGeneration: number | null;
  workloads: { id: string; phase: string }[];
}

const workload = (id: string, desiredState: 'running' | 'stopped', env: string): W => ({
  id,
  type: 'container',
  revision: env,
  desiredState,
  spec: { image: IMAGE, command: ['sleep', '3600'], env: { V: env }, stopTimeoutSeconds: 1, network: { mode: 'none' } },
});

/** The agent config: loopback fleet server, 1 s polls and heartbeats, metrics off. */
function writeConfig(file: string, nodeId: string, stateDir: string, server: FleetServer, reconcile: Record<string, number>): Promise<void> {
  return writeFile(
    file,
    JSON.stringify({
      nodeId,
      stateDir,
      logLevel: 'info',
      source: { url: server.sourceUrl, pollIntervalSeconds: 1 },
      status: { url: server.statusUrl, heartbeatSeconds: 1, debounceMs: 50 },
      reconcile,
      // An object a kill left without a record (created, record not yet written) and no longer desired
      // is the garbage collector's after its grace: short here, so a round converges within its wait.
      gc: { intervalSeconds: 1, orphanGraceSeconds: 5 },
      metrics: { listen: 'off' },
      docker: { namePrefix: `t-${nodeId}-` },
    }),
  );
}

const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? Number.NaN;
};

describe('kill -9 at random moments: the store survives, nothing is duplicated or orphaned, seq never goes back', { skip, timeout: 900_000 }, () => {
  const nodeId = testNodeId('test-kill9');
  const docker = new Docker({ socketPath: '/var/run/docker.sock' });
  const random = seededRandom(SEED);
  let dir: string;
  let stateDir: string;
  let server: FleetServer;
  let agent: AgentProcess | undefined;
  let configPath: string;
  let generation = 0;
  const desired = new Map<string, W>();

  const publish = () => {
    generation += 1;
    server.setDocument(nodeId, { apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId, generation, workloads: [...desired.values()] });
    return generation;
  };
  const ours = () => docker.listContainers({ all: true, filters: { label: [`dev.persys.node-id=${nodeId}`] } });
  const start = () => (agent = AgentProcess.start(['run', '--config', configPath]));

  /** Converged: one container per desired workload, in its state, nothing else of ours. Returns why not, or ''. */
  const notConverged = async (): Promise<string> => {
    const list = await ours();
    const byId = new Map<string, typeof list>();
    for (const c of list) {
      const id = c.Labels['dev.persys.workload-id'] ?? '?';
      byId.set(id, [...(byId.get(id) ?? []), c]);
    }
    for (const [id, cs] of byId) {
      if (!desired.has(id)) return `orphan ${id}`;
      if (cs.length !== 1) return `${cs.length} containers for ${id}`;
    }
    for (const [id, w] of desired) {
      const c = byId.get(id)?.[0];
      if (!c) return `no container for ${id}`;
      const running = c.State === 'running';
      if ((w.desiredState === 'running') !== running) return `${id} is ${c.State}, desired ${w.desiredState}`;
      if (c.Labels['dev.persys.revision'] !== w.revision) return `${id} has revision ${c.Labels['dev.persys.revision']}, desired ${w.revision}`;
    }
    return '';
  };

  const assertSeqNeverBackwards = () => {
    const seqs = server.reports(nodeId).map((r) => (r as Report).seq);
    for (let i = 1; i < seqs.length; i++) assert.ok((seqs[i] as number) > (seqs[i - 1] as number), `seq went from ${seqs[i - 1]} to ${seqs[i]} (report ${i})`);
  };

  const assertStoreReadCleanly = async (a: AgentProcess) => {
    const aside = (await readdir(stateDir)).filter((f) => f.includes('.corrupt-'));
    assert.deepEqual(aside, [], `a store file was moved aside:\n${a.dump()}`);
    const bad = a.lines.filter((l) => l.level >= 50 && /corrupt|unreadable/.test(l.msg));
    assert.deepEqual(bad, [], 'no ERROR about the store');
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-kill9-'));
    stateDir = join(dir, 'state');
    server = await startFleetServer({ tls: null });
    configPath = join(dir, 'config.json');
    await writeConfig(configPath, nodeId, stateDir, server, { intervalSeconds: 2, concurrency: 8 });
  });

  after(async () => {
    await agent?.stop('SIGKILL').catch(() => undefined);
    await cleanupDockerByLabel(nodeId).catch(() => undefined);
    await server?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it(`${ROUNDS} rounds of SIGKILL during creates, recreates, removals and desired-state changes, with ${FLEET} records`, async () => {
    process.stdout.write(`kill9: seed ${SEED} (KILL9_SEED=${SEED} repeats this run)\n`);
    for (let i = 0; i < FLEET - CHURN; i++) desired.set(`s${String(i).padStart(3, '0')}`, workload(`s${String(i).padStart(3, '0')}`, 'stopped', 'a'));
    for (let i = 0; i < CHURN; i++) desired.set(`c${i}`, workload(`c${i}`, 'running', 'a'));
    publish();
    start();
    await waitFor('the 200-workload fleet', async () => (await notConverged()) === '', 240_000, 500);
    await waitFor('a report of all 200', () => server.reports(nodeId).some((r) => (r as Report).observedGeneration === generation && (r as Report).workloads.length === FLEET), 30_000);

    const convergeMs: number[] = [];
    let midStep = 0;
    const kinds: Record<string, number> = {};
    let nextChurnId = CHURN;
    for (let round = 1; round <= ROUNDS; round++) {
      // A mutation of the churn set: some creates, recreates, removals, running/stopped flips.
      const churn = [...desired.keys()].filter((id) => id.startsWith('c'));
      const kind = (['create', 'recreate', 'remove', 'flip', 'mixed'] as const)[Math.floor(random() * 5)] as string;
      kinds[kind] = (kinds[kind] ?? 0) + 1;
      const pick = () => churn[Math.floor(random() * churn.length)] as string;
      const n = 1 + Math.floor(random() * 3);
      for (let k = 0; k < n; k++) {
        const op = kind === 'mixed' ? (['create', 'recreate', 'remove', 'flip'] as const)[Math.floor(random() * 4)] : kind;
        const id = pick();
        const w = desired.get(id);
        if (op === 'create' || churn.length <= 3) desired.set(`c${nextChurnId}`, workload(`c${nextChurnId++}`, 'running', 'a'));
        else if (!w) continue;
        else if (op === 'recreate') desired.set(id, workload(id, w.desiredState, `r${round}`));
        else if (op === 'remove') desired.delete(id);
        else desired.set(id, { ...w, desiredState: w.desiredState === 'running' ? 'stopped' : 'running' });
      }
      const gen = publish();
      // The kill lands somewhere between "just published" (the agent is still polling) and well
      // after the steps started; pull interval 1 s, so most land in the pull, store or step.
      const killAfter = Math.floor(random() * 2500);
      await new Promise((r) => setTimeout(r, killAfter));
      const victim = agent as AgentProcess;
      const sawGen = victim.lines.findIndex((l) => l.msg === 'new desired state' && l.generation === gen);
      const reconciledAfter = sawGen >= 0 && victim.lines.slice(sawGen).some((l) => typeof l.msg === 'string' && l.msg.startsWith('reconciled:'));
      if (sawGen >= 0 && !reconciledAfter) midStep += 1;
      await victim.stop('SIGKILL');

      const restarted = Date.now();
      const a = start();
      await waitFor('the new agent to start', () => a.lines.some((l) => l.msg === 'persys-agent starting') || a.child.exitCode !== null, 30_000, 50);
      assert.equal(a.child.exitCode, null, `the agent exited after a SIGKILL of its predecessor:\n${a.dump()}`);
      try {
        await waitFor(`round ${round} (${kind}, kill after ${killAfter} ms) to converge`, async () => (await notConverged()) === '', 90_000, 200);
      } catch (err) {
        throw new Error(`${String(err)}: ${await notConverged()}\n--- agent log ---\n${a.dump()}`);
      }
      await waitFor('a report of the new generation', () => server.reports(nodeId).some((r) => (r as Report).observedGeneration === gen), 30_000, 100);
      convergeMs.push(Date.now() - restarted);
      await assertStoreReadCleanly(a);
      assertSeqNeverBackwards();
    }
    const line =
      `kill9: ${ROUNDS} rounds (seed ${SEED}; ${Object.entries(kinds).map(([k, v]) => `${k} ${v}`).join(', ')}; volumes and compose: not in this agent version), ` +
      `${midStep} kills landed mid-step (desired state taken, its reconcile not finished), ` +
      `converge after restart p50 ${(pct(convergeMs, 50) / 1000).toFixed(1)} s max ${(Math.max(...convergeMs) / 1000).toFixed(1)} s, ` +
      `${server.reports(nodeId).length} reports, seq never backwards, store never moved aside\n`;
    process.stdout.write(line);
    assert.ok(midStep > 0, 'at least one kill landed mid-step (else the moments are not random enough)');
  });
});
