/**
 * Idle memory of the agent as users run it: the built CLI as a real process, desired state from a
 * file:// URL, metrics on 127.0.0.1:0, logLevel warn. Its RSS 30 s after start (0 workloads) or 30 s
 * after all workloads are Running (200 containers), against a bare `node` that does nothing, started
 * at the same moment and read at the same moment.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import {
  benchDocument,
  benchNodeId,
  DOCKER_SOCKET,
  median,
  procStatusKiB,
  progress,
  round2,
  sleep,
  spawnNode,
  stopChild,
  type Row,
  type Section,
  type Spawned,
  type Target,
} from './lib.js';

export const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const IDLE_MS = 30_000;
const BRING_UP_TIMEOUT_MS = 300_000;

/** The agent that ran the 200 containers: the cycle bench reuses its node id, state and containers. */
export interface Fleet {
  nodeId: string;
  stateDir: string;
  namePrefix: string;
  size: number;
}

interface StartedAgent {
  proc: Spawned;
  fleet: Fleet;
  statusFile: string;
}

async function startAgent(workDir: string, size: number): Promise<StartedAgent> {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing (npm run build)`);
  const nodeId = benchNodeId();
  const dir = join(workDir, `agent-${size}`);
  await mkdir(dir, { recursive: true });
  const desiredFile = join(dir, 'desired-state.json');
  const stateDir = join(dir, 'state');
  const namePrefix = `${nodeId}-`;
  await writeFile(desiredFile, JSON.stringify(benchDocument(nodeId, size)));
  const configFile = join(dir, 'config.json');
  await writeFile(
    configFile,
    JSON.stringify({
      nodeId,
      stateDir,
      logLevel: 'warn',
      source: { url: pathToFileURL(desiredFile).href },
      metrics: { listen: '127.0.0.1:0' },
      docker: { socketPath: DOCKER_SOCKET, namePrefix },
    }),
  );
  // BENCH_AGENT_NODE_OPTIONS: Node flags for the agent process only (to size a fix, e.g.
  // --max-semi-space-size=2); the bare-node baseline never gets them.
  const agentNodeOptions = process.env.BENCH_AGENT_NODE_OPTIONS;
  const proc = spawnNode([CLI, 'run', '--config', configFile], agentNodeOptions ? { NODE_OPTIONS: agentNodeOptions } : {});
  return { proc, fleet: { nodeId, stateDir, namePrefix, size }, statusFile: join(stateDir, 'status.json') };
}

/**
 * Waits `ms` while reading the agent's RSS once a second (for the range in the notes: a single
 * reading may catch a burst), from `sampleFromMs` on; fails at once if the agent exits meanwhile.
 */
async function idleWhileAlive(agent: Spawned, ms: number, signal: AbortSignal, sampleFromMs = 0): Promise<number[]> {
  const samples: number[] = [];
  const start = Date.now();
  const end = start + ms;
  while (Date.now() < end) {
    if (agent.child.exitCode !== null || agent.child.signalCode !== null) {
      throw new Error(`the agent exited (code ${String(agent.child.exitCode)}) during the idle period:\n${agent.tail()}`);
    }
    if (Date.now() - start >= sampleFromMs) samples.push(await procStatusKiB(agent.pid));
    await sleep(Math.min(1000, Math.max(0, end - Date.now())), signal);
  }
  return samples;
}

function rangeNote(what: string, samples: readonly number[]): string {
  const sorted = [...samples].sort((a, b) => a - b);
  return `${what}: agent RSS read once a second: min ${mib(sorted[0] ?? 0)}, median ${mib(median(sorted))}, max ${mib(sorted[sorted.length - 1] ?? 0)} MiB${
    process.env.BENCH_AGENT_NODE_OPTIONS ? ` (agent NODE_OPTIONS=${process.env.BENCH_AGENT_NODE_OPTIONS})` : ''
  }.`;
}

async function allRunning(statusFile: string, size: number): Promise<boolean> {
  let report: unknown;
  try {
    report = JSON.parse(await readFile(statusFile, 'utf8'));
  } catch {
    return false;
  }
  const workloads = (report as { workloads?: { phase?: string }[] }).workloads;
  return Array.isArray(workloads) && workloads.length === size && workloads.every((w) => w.phase === 'Running');
}

const mib = (kib: number): number => round2(kib / 1024);

interface Memory {
  rss: number;
  anon: number;
  file: number;
}

async function memoryOf(pid: number): Promise<Memory> {
  const [rss, anon, file] = await Promise.all([procStatusKiB(pid), procStatusKiB(pid, 'RssAnon'), procStatusKiB(pid, 'RssFile')]);
  return { rss, anon, file };
}

/** The RSS row with its target, and its split into private and file-backed pages (no target: for the analysis). */
function rssRows(name: string, agent: Memory, bare: Memory, target: Target): Row[] {
  return [
    { name, value: mib(agent.rss), unit: 'MiB', baseline: { name: 'bare node (setInterval), same 30 s', value: mib(bare.rss) }, target },
    { name: '  of which RssAnon (private: JS heap, malloc, wasm)', value: mib(agent.anon), unit: 'MiB', baseline: { name: 'bare node RssAnon', value: mib(bare.anon) } },
    { name: '  of which RssFile (node binary code pages, shared)', value: mib(agent.file), unit: 'MiB', baseline: { name: 'bare node RssFile', value: mib(bare.file) } },
  ];
}

/** RSS of the agent with no workloads vs bare node, both read 30 s after start. */
export async function benchIdleRssEmpty(workDir: string, signal: AbortSignal): Promise<Section> {
  progress('idle RSS, 0 workloads: agent and bare node for 30 s');
  const agent = await startAgent(workDir, 0);
  const bare = spawnNode(['-e', 'setInterval(()=>{},1000)']);
  try {
    // Here the 30 s start with the process: the first seconds are its start-up, not idling.
    const samples = await idleWhileAlive(agent.proc, IDLE_MS, signal, 10_000);
    const [a, b] = await Promise.all([memoryOf(agent.proc.pid), memoryOf(bare.pid)]);
    return {
      rows: rssRows('idle RSS after 30 s, 0 workloads', a, b, { on: 'ratio', max: 1.6, text: '<= 1.6x' }),
      notes: [rangeNote('0 workloads (from 10 s on)', samples)],
    };
  } finally {
    await Promise.all([stopChild(agent.proc), stopChild(bare)]);
  }
}

/**
 * RSS of the agent running `size` containers, 30 s after all of them are Running (per its own status
 * file), vs a bare node started when that 30 s began. The containers stay for the cycle bench.
 */
export async function benchIdleRssFleet(workDir: string, size: number, signal: AbortSignal): Promise<{ section: Section; fleet: Fleet }> {
  progress(`idle RSS, ${size} workloads: agent brings up ${size} containers`);
  const agent = await startAgent(workDir, size);
  let bare: Spawned | undefined;
  try {
    const t0 = Date.now();
    while (!(await allRunning(agent.statusFile, size))) {
      if (agent.proc.child.exitCode !== null || agent.proc.child.signalCode !== null) {
        throw new Error(`the agent exited before its workloads were Running:\n${agent.proc.tail()}`);
      }
      if (Date.now() - t0 > BRING_UP_TIMEOUT_MS) throw new Error(`not all ${size} workloads Running after ${BRING_UP_TIMEOUT_MS / 1000} s:\n${agent.proc.tail()}`);
      await sleep(250, signal);
    }
    const upSeconds = (Date.now() - t0) / 1000;
    progress(`idle RSS, ${size} workloads: all Running after ${upSeconds.toFixed(1)} s; agent and bare node for 30 s`);
    const hwmBeforeIdle = await procStatusKiB(agent.proc.pid, 'VmHWM');
    bare = spawnNode(['-e', 'setInterval(()=>{},1000)']);
    const samples = await idleWhileAlive(agent.proc, IDLE_MS, signal);
    const [a, b] = await Promise.all([memoryOf(agent.proc.pid), memoryOf(bare.pid)]);
    return {
      fleet: agent.fleet,
      section: {
        rows: [
          ...rssRows(`idle RSS after 30 s, ${size} workloads (all Running)`, a, b, { on: 'ratio', max: 2.0, text: '<= 2.0x' }),
          { name: `peak RSS (VmHWM) while bringing up ${size} containers`, value: mib(hwmBeforeIdle), unit: 'MiB' },
          { name: `agent start to ${size} containers Running (reconcile.concurrency 4)`, value: round2(upSeconds), unit: 's' },
        ],
        notes: [rangeNote(`${size} workloads`, samples)],
      },
    };
  } finally {
    await Promise.all([stopChild(agent.proc), bare ? stopChild(bare) : Promise.resolve()]);
  }
}
