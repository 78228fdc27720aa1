/**
 * Shared pieces of the benchmarks that touch a real engine or real processes: result rows with
 * targets, timing helpers, the bench's own node ids, the container specs, child processes and the
 * Docker cleanup. Everything a bench creates carries a `bench-<pid>-<rand>` node-id label so it can
 * be found and removed again, also after a crashed earlier run.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { setTimeout as delay } from 'node:timers/promises';

import Dockerode from 'dockerode';
import * as v from 'valibot';

import { pino, type Logger } from 'pino';
import { LABELS } from '../src/runtimes/runtime.js';
import { desiredStateDocument, type DesiredStateDocument } from '../src/spec/desired-state.js';

/** A target from the issue: the figure (or its ratio to the baseline) must be at most `max`. */
export interface Target {
  on: 'value' | 'ratio';
  max: number;
  /** As printed, e.g. "<= 2.0x". */
  text: string;
}

export interface Row {
  name: string;
  value: number;
  unit: string;
  baseline?: { name: string; value: number };
  target?: Target;
}

/** A benchmark section: rows, and lines worth printing under the table (how it was measured, why it missed). */
export interface Section {
  rows: Row[];
  notes: string[];
}

export const DOCKER_SOCKET = process.env.DOCKER_HOST?.startsWith('unix://') ? process.env.DOCKER_HOST.slice('unix://'.length) : '/var/run/docker.sock';
export const BENCH_IMAGE = 'persys-test/busybox:1';
export const NODE_ID_PREFIX = 'bench-';
const RUN_TAG = `${NODE_ID_PREFIX}${process.pid}-`;

/** `bench-<pid>-<6 hex>`: one per thing that needs its own identity. */
export function benchNodeId(): string {
  return `${RUN_TAG}${randomBytes(3).toString('hex')}`;
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

export const round2 = (x: number): number => Math.round(x * 100) / 100;

/** Progress goes to stderr so that stdout is the table. */
export function progress(msg: string): void {
  process.stderr.write(`bench: ${msg}\n`);
}

/** Logger for in-process agent parts: warnings and worse to stderr, never into the table. */
export function benchLogger(): Logger {
  return pino({ level: 'warn', base: { bench: true } }, pino.destination(2));
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return delay(ms, undefined, signal ? { signal } : undefined);
}

// --- specs -----------------------------------------------------------------------------------------

/** A container workload as the RSS and cycle benches run it: busybox sleeping, no network, quick stop. */
export function benchWorkload(i: number): Record<string, unknown> {
  return {
    id: `w${String(i).padStart(4, '0')}`,
    type: 'container',
    revision: '1',
    spec: { image: BENCH_IMAGE, stopTimeoutSeconds: 1, network: { mode: 'none' } },
  };
}

/** The desired-state document for `n` bench workloads, validated as the agent would. */
export function benchDocument(nodeId: string, n: number, generation = 1): DesiredStateDocument {
  return v.parse(desiredStateDocument, {
    apiVersion: 'persys.dev/v1',
    kind: 'DesiredState',
    nodeId,
    generation,
    workloads: Array.from({ length: n }, (_, i) => benchWorkload(i)),
  });
}

// --- processes -------------------------------------------------------------------------------------

const children = new Set<ChildProcess>();

export interface Spawned {
  child: ChildProcess;
  pid: number;
  /** The last output lines (stdout and stderr), for error messages. */
  tail(): string;
  exited: Promise<number | null>;
}

/**
 * Starts `node <args>`; its output is kept (bounded) for diagnostics; it is stopped by `stopChild` or
 * at the end. The child gets the bench's environment without PERSYS_* (the agent would read them as
 * config) and without NODE_OPTIONS (agent and baseline run on the same defaults), plus `env`.
 */
export function spawnNode(args: string[], env: NodeJS.ProcessEnv = {}): Spawned {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PERSYS_') && k !== 'NODE_OPTIONS'));
  const child = spawn(process.execPath, args, { env: { ...base, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  if (child.pid === undefined) throw new Error(`could not start node ${args.join(' ')}`);
  children.add(child);
  const lines: string[] = [];
  const keep = (chunk: Buffer): void => {
    for (const l of chunk.toString('utf8').split('\n')) if (l.trim() !== '') lines.push(l);
    if (lines.length > 50) lines.splice(0, lines.length - 50);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = once(child, 'exit').then(([code]) => {
    children.delete(child);
    return code as number | null;
  });
  return { child, pid: child.pid, tail: () => lines.join('\n'), exited };
}

/** SIGTERM to one process we started, SIGKILL after `timeoutMs`. */
export async function stopChild(p: Spawned, timeoutMs = 20_000): Promise<void> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return;
  p.child.kill('SIGTERM');
  const timer = setTimeout(() => p.child.kill('SIGKILL'), timeoutMs);
  try {
    await p.exited;
  } finally {
    clearTimeout(timer);
  }
}

/** Stops every process this bench started and that still runs (the final cleanup). */
export async function stopAllChildren(): Promise<void> {
  await Promise.all(
    [...children].map(async (child) => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      await once(child, 'exit').catch(() => undefined);
      clearTimeout(timer);
    }),
  );
}

/**
 * A memory figure of a process in KiB from /proc/<pid>/status: VmRSS (resident set), VmHWM (its peak),
 * RssAnon (private: JS heap, malloc, wasm memory), RssFile (file-backed: mostly the node binary's code).
 */
export async function procStatusKiB(pid: number, field: 'VmRSS' | 'VmHWM' | 'RssAnon' | 'RssFile' = 'VmRSS'): Promise<number> {
  const text = await readFile(`/proc/${pid}/status`, 'utf8');
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
  if (!m?.[1]) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number.parseInt(m[1], 10);
}

// --- docker ----------------------------------------------------------------------------------------

let dockerClient: Dockerode | undefined;
export function docker(): Dockerode {
  dockerClient ??= new Dockerode({ socketPath: DOCKER_SOCKET });
  return dockerClient;
}

/** undefined when dockerd answers and has the bench image; otherwise why the Docker benches cannot run. */
export async function dockerUnavailableReason(): Promise<string | undefined> {
  try {
    // dockerode 5 takes an abortSignal here; @types/dockerode 4 does not declare the argument.
    await (docker() as unknown as { ping(o: { abortSignal: AbortSignal }): Promise<unknown> }).ping({ abortSignal: AbortSignal.timeout(3000) });
  } catch (err) {
    return `no Docker engine at ${DOCKER_SOCKET} (${err instanceof Error ? err.message : String(err)}); run scripts/testbed/docker.sh as root`;
  }
  try {
    await docker().getImage(BENCH_IMAGE).inspect();
  } catch {
    return `image ${BENCH_IMAGE} is missing; scripts/testbed/docker.sh builds it`;
  }
  return undefined;
}

/** Runs `fn` over `items` with at most `limit` in flight. */
export async function pool<T>(items: readonly T[], limit: number, fn: (x: T) => Promise<void>): Promise<void> {
  const queue = [...items];
  await Promise.all(
    Array.from({ length: Math.min(limit, queue.length) }, async () => {
      for (let x = queue.shift(); x !== undefined; x = queue.shift()) await fn(x);
    }),
  );
}

async function forceRemove(ids: readonly string[]): Promise<string[]> {
  const errors: string[] = [];
  await pool(ids, 8, async (id) => {
    try {
      await docker().getContainer(id).remove({ force: true, v: true });
    } catch (err) {
      const status = (err as { statusCode?: number }).statusCode;
      if (status === 404 || (status === 409 && /already in progress/i.test(String(err)))) return;
      errors.push(`${id.slice(0, 12)}: ${err instanceof Error ? err.message : String(err)}`);
    }
  });
  return errors;
}

/** Containers labelled with exactly this node id. */
export async function containersOf(nodeId: string): Promise<Dockerode.ContainerInfo[]> {
  return docker().listContainers({ all: true, filters: { label: [`${LABELS.managed}=true`, `${LABELS.nodeId}=${nodeId}`] } });
}

/** Force-removes every container labelled with this node id; throws if any is left. */
export async function removeNode(nodeId: string): Promise<number> {
  const list = await containersOf(nodeId);
  const errors = await forceRemove(list.map((c) => c.Id));
  if (errors.length > 0) throw new Error(`could not remove containers of ${nodeId}: ${errors.join('; ')}`);
  return list.length;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0); // signal 0: an existence check, nothing is sent
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes containers of bench node ids (`bench-<pid>-...`). `own`: only this run's. Otherwise the
 * leftovers of earlier runs: those whose bench process is gone, or older than an hour.
 */
export async function removeBenchContainers(scope: 'own' | 'stale'): Promise<number> {
  const all = await docker().listContainers({ all: true, filters: { label: [`${LABELS.managed}=true`] } });
  const hourAgo = Date.now() / 1000 - 3600;
  const doomed = all.filter((c) => {
    const id = c.Labels?.[LABELS.nodeId] ?? '';
    if (!id.startsWith(NODE_ID_PREFIX)) return false;
    if (scope === 'own') return id.startsWith(RUN_TAG);
    if (id.startsWith(RUN_TAG)) return false;
    const pid = Number.parseInt(/^bench-(\d+)-/.exec(id)?.[1] ?? '', 10);
    return !Number.isFinite(pid) || !pidAlive(pid) || c.Created < hourAgo;
  });
  const errors = await forceRemove(doomed.map((c) => c.Id));
  if (errors.length > 0) throw new Error(`could not remove ${errors.length} bench container(s): ${errors.slice(0, 3).join('; ')}`);
  return doomed.length;
}
