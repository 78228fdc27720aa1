/**
 * Bad local input (issue 16, family 6), with the built CLI as an operator runs it:
 *   - a config with every key wrong in turn (keys enumerated from schemas/config.schema.json, checked
 *     against the agent's own key list): exit 2, the key's path named, no stack trace; and all of
 *     them wrong at once: one run names every one;
 *   - a metrics port already in use (and a port above 65535): exit 2, one line naming the address
 *     and metrics.listen, no stack trace, nothing left in the state dir (was: a raw EADDRINUSE stack);
 *   - the local API socket path too long for a unix socket, or a file that is not a socket there:
 *     exit 2 naming stateDir (was: a stack, node truncating the path);
 *   - a node-id file that is not ours: damaged text (WARN, re-derived, rewritten), an id derived on
 *     another host (kept, WARN), a directory (exit 2, left alone);
 *   - a state.json from a newer agent: exit 2 naming it (was: a stack trace, exit 1), left as it is;
 *   - a stale agent.sock (and lock) of a SIGKILLed agent: the next start replaces them;
 *   - a second agent on the same state dir: exit 2 naming the first one's pid;
 *   - a corrupt state.json (then state.json and desired.json) with our containers running on the
 *     real dockerd: moved aside to `*.corrupt-*`, records rebuilt from the engine labels, no
 *     container recreated, restarted or removed.
 * Every run is bounded; no engine is needed except for the last part (docker).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

import Docker from 'dockerode';

import { configLeaves } from '../../src/config/load.js';
import { AgentProcess, CLI, waitFor, type LogLine } from '../helpers/agent-process.js';
import { cleanupDockerByLabel, requireEngine, testNodeId } from '../helpers/engines.js';

const dockerSkip = await requireEngine('docker');
const IMAGE = 'persys-test/busybox:1';
const SCHEMA = fileURLToPath(new URL('../../schemas/config.schema.json', import.meta.url));
/** A run that passed validation would start the agent; bound it so a missed key fails, not hangs. */
const RUN_TIMEOUT_MS = 20_000;
const CONCURRENCY = 3;
const STACK = /^\s+at .*(\.js|\.ts|node:|<anonymous>)/m;

/** The agent's environment without PERSYS_* from the harness, so only what a case sets counts. */
const cleanEnv = (extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => ({
  ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PERSYS_') && k !== 'STATE_DIRECTORY')),
  ...extra,
});

function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: cleanEnv(env), timeout: RUN_TIMEOUT_MS }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

const start = (args: string[], env: NodeJS.ProcessEnv = {}) => AgentProcess.start(args, cleanEnv(env));
const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const noStack = (out: string, what: string) => assert.doesNotMatch(out, STACK, `${what}: no stack trace:\n${out}`);

// --- the config keys, from the generated JSON schema -----------------------------------------------

interface JsonSchemaNode {
  type?: string;
  properties?: Record<string, JsonSchemaNode>;
  items?: JsonSchemaNode;
  enum?: unknown[];
  pattern?: string;
  minLength?: number;
  minimum?: number;
  maximum?: number;
}
interface Leaf {
  path: string;
  node: JsonSchemaNode;
}
interface Case {
  path: string;
  kind: string;
  value: unknown;
}

function leavesOf(node: JsonSchemaNode, keys: string[], out: Leaf[]): Leaf[] {
  if (node.type === 'object' && node.properties) for (const [k, child] of Object.entries(node.properties)) leavesOf(child, [...keys, k], out);
  else out.push({ path: keys.join('.'), node });
  return out;
}

/** For each leaf: a value of the wrong type, and one that breaks its constraint (range, pattern, enum, item). */
function wrongValues(leaf: Leaf): Case[] {
  const n = leaf.node;
  const c = (kind: string, value: unknown): Case => ({ path: leaf.path, kind, value });
  switch (n.type) {
    case 'number':
    case 'integer': {
      const out = [c('type', 'often')];
      if (n.minimum !== undefined) out.push(c('below minimum', n.minimum - 1));
      else if (n.maximum !== undefined) out.push(c('above maximum', n.maximum + 1));
      if (n.type === 'integer' && n.minimum !== undefined && n.maximum !== undefined && n.maximum - n.minimum >= 2) out.push(c('not an integer', n.minimum + 1.5));
      return out;
    }
    case 'boolean':
      return [c('type', 'yes')];
    case 'array': {
      const out = [c('type', 'not-a-list')];
      out.push(n.items?.pattern !== undefined ? c('item pattern', ['!bad item']) : c('item type', [42]));
      return out;
    }
    case 'string': {
      const out = [c('type', 42)];
      if (n.enum) out.push(c('enum', 'nope'));
      else if (n.pattern !== undefined) out.push(c('pattern', '!bad value!'));
      else if (n.minLength !== undefined) out.push(c('empty', ''));
      return out;
    }
    default:
      if (n.enum) return [c('type', 42), c('enum', 'nope')];
      throw new Error(`no wrong value for ${leaf.path} (${JSON.stringify(n)}): teach this test`);
  }
}

function setAt(obj: Record<string, unknown>, path: string, value: unknown): void {
  const keys = path.split('.');
  let cur = obj;
  for (const k of keys.slice(0, -1)) cur = (cur[k] ??= {}) as Record<string, unknown>;
  cur[keys[keys.length - 1] as string] = value;
}

async function pool<T, R>(items: readonly T[], n: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i] as T);
      }
    }),
  );
  return out;
}

const figures: Record<string, number | string> = {};
/** Every start refused with exit 2 in this file (config cases included). */
let exit2 = 0;
function expectExit2(r: { code: number; stdout: string; stderr: string }, what: string): void {
  assert.equal(r.code, 2, `${what}: exit ${r.code}\n${r.stderr}${r.stdout}`);
  exit2 += 1;
}

describe('bad local input', { timeout: 230_000 }, () => {
  let dir: string;
  let desired: string;
  const started: AgentProcess[] = [];
  const holders: Server[] = [];
  /** A config for an agent with no engines: these parts need none. */
  const baseConfig = (stateDir: string, extra: Record<string, unknown> = {}) => ({
    nodeId: testNodeId('test-badlocal'),
    stateDir,
    logLevel: 'info',
    metrics: { listen: 'off' },
    status: { heartbeatSeconds: 1 },
    docker: { enabled: false },
    libvirt: { enabled: false },
    ...extra,
  });
  let nth = 0;
  const writeConfig = async (config: Record<string, unknown>) => {
    const file = join(dir, `config-${nth++}.json`);
    await writeFile(file, JSON.stringify(config));
    return file;
  };
  const listenOn = async (): Promise<number> => {
    const s = createServer();
    holders.push(s);
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    return (s.address() as { port: number }).port;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-badlocal-'));
    desired = join(dir, 'desired-state.json');
    await writeFile(desired, JSON.stringify({ apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId: '*', generation: 1, workloads: [] }));
  });
  after(async () => {
    for (const a of started) await a.stop('SIGKILL').catch(() => undefined);
    for (const s of holders) await new Promise<void>((r) => s.close(() => r()));
    await rm(dir, { recursive: true, force: true });
  });

  it('every config key wrong in turn: exit 2 naming the key and the file, no stack trace; all wrong at once: every key named', async () => {
    const schema = JSON.parse(await readFile(SCHEMA, 'utf8')) as JsonSchemaNode;
    const leaves = leavesOf(schema, [], []);
    // The generated schema and the agent's own key walk agree, so "every key" is every key.
    assert.deepEqual(leaves.map((l) => l.path).sort(), configLeaves().map((l) => l.path).sort(), 'schemas/config.schema.json is the agent\'s key list');
    const cases = leaves.flatMap(wrongValues);
    const t0 = Date.now();
    const results = await pool(cases, CONCURRENCY, async (c) => {
      const config = baseConfig(join(dir, 'cfg-state'));
      setAt(config, c.path, c.value);
      const file = await writeConfig(config);
      return { c, file, r: await cli(['run', '--config', file, '--desired', desired]) };
    });
    const bad: string[] = [];
    for (const { c, file, r } of results) {
      const what = `${c.path} (${c.kind}: ${JSON.stringify(c.value)})`;
      if (r.code === 2) exit2 += 1;
      if (r.code !== 2) bad.push(`${what}: exit ${r.code}\n${r.stderr}`);
      else if (!new RegExp(`^  ${esc(c.path)}(\\[\\d+\\])?: .*\\(from ${esc(file)}\\)$`, 'm').test(r.stderr)) bad.push(`${what}: key or file not named:\n${r.stderr}`);
      else if (STACK.test(r.stderr + r.stdout)) bad.push(`${what}: stack trace:\n${r.stderr}`);
    }
    assert.deepEqual(bad, [], `${bad.length} of ${cases.length} wrong values not reported as they should be`);

    // All at once (the wrong-type value of each): one run lists every key, sorted, one line each.
    const all: Record<string, unknown> = {};
    for (const c of cases.filter((x) => x.kind === 'type')) setAt(all, c.path, c.value);
    const file = await writeConfig(all);
    const r = await cli(['run', '--config', file, '--desired', desired]);
    expectExit2(r, r.stderr);
    noStack(r.stderr, 'all keys wrong');
    const named = leaves.filter((l) => new RegExp(`^  ${esc(l.path)}(\\[\\d+\\])?: `, 'm').test(r.stderr)).length;
    assert.equal(named, leaves.length, `every key named in one run:\n${r.stderr}`);
    figures.configKeys = leaves.length;
    figures.configCases = cases.length;
    figures.configExit2 = results.filter((x) => x.r.code === 2).length;
    figures.configMs = Date.now() - t0;
  });

  it('a metrics port in use, or above 65535: exit 2, one line naming the address and metrics.listen, no stack, nothing left behind', async () => {
    const port = await listenOn();
    for (const listen of [`127.0.0.1:${port}`, '127.0.0.1:70000']) {
      const stateDir = join(dir, `metrics-${nth}`);
      const file = await writeConfig(baseConfig(stateDir, { metrics: { listen } }));
      const r = await cli(['run', '--config', file, '--desired', desired]);
      expectExit2(r, `${listen}: ${r.stderr}`);
      noStack(r.stderr + r.stdout, listen);
      const lines = r.stderr.trimEnd().split('\n');
      assert.equal(lines.length, 1, `one line: ${r.stderr}`);
      assert.match(lines[0] as string, new RegExp(`^persys-agent run: cannot listen on ${esc(listen)} \\(metrics\\.listen\\): .*"off"$`));
      if (listen.endsWith(`:${port}`)) assert.match(r.stderr, /already in use \(EADDRINUSE\)/);
      // The failed start released what it took: a next start is not refused by a stale lock.
      const left = await readdir(stateDir);
      assert.ok(!left.includes('agent.lock') && !left.includes('agent.sock'), left.join(','));
    }
  });

  it('the local API socket: a path too long for a unix socket, or a regular file there: exit 2 naming stateDir, the file left alone', async () => {
    const longDir = join(dir, 'l'.repeat(Math.max(1, 110 - dir.length)), 'state');
    const r1 = await cli(['run', '--config', await writeConfig(baseConfig(longDir)), '--desired', desired]);
    expectExit2(r1, r1.stderr);
    noStack(r1.stderr, 'long socket path');
    assert.match(r1.stderr, /^persys-agent run: cannot listen on .*agent\.sock \(the local API socket in stateDir\): the path is \d+ bytes, a unix socket path may have at most 107; use a shorter stateDir\n$/);

    const stateDir = join(dir, 'notasocket');
    await mkdir(stateDir, { recursive: true, mode: 0o700 });
    await writeFile(join(stateDir, 'agent.sock'), 'someone else\'s file');
    const r2 = await cli(['run', '--config', await writeConfig(baseConfig(stateDir)), '--desired', desired]);
    expectExit2(r2, r2.stderr);
    noStack(r2.stderr, 'not a socket');
    assert.match(r2.stderr, /\(the local API socket in stateDir\): it exists and is not a socket; refusing to replace it/);
    assert.equal(await readFile(join(stateDir, 'agent.sock'), 'utf8'), 'someone else\'s file');
  });

  it('a node-id file that is not ours: damaged text re-derived with a WARN, another host\'s id kept with a WARN, a directory refused (exit 2)', async () => {
    // No nodeId in the config: the file decides.
    const noOverride = (stateDir: string) => {
      const c: Record<string, unknown> = baseConfig(stateDir);
      delete c.nodeId;
      return writeConfig(c);
    };
    const runUntilStarted = async (stateDir: string) => {
      const a = start(['run', '--config', await noOverride(stateDir), '--desired', desired]);
      started.push(a);
      const line = await waitFor('persys-agent starting', () => a.lines.find((l) => l.msg === 'persys-agent starting') ?? (a.child.exitCode !== null && ({ level: 0, msg: 'exited' } as LogLine)), 30_000, 100);
      assert.equal(line.msg, 'persys-agent starting', a.dump());
      await waitFor('the first status', async () => JSON.parse(await readFile(join(stateDir, 'status.json'), 'utf8')) as unknown, 30_000).catch(() => undefined);
      assert.equal(await a.stop('SIGTERM'), 0, a.dump());
      return { a, line };
    };

    const damaged = join(dir, 'nodeid-damaged');
    await mkdir(damaged, { recursive: true, mode: 0o700 });
    await writeFile(join(damaged, 'node-id'), Buffer.from([0, 0xff, 0x20, 0x2f, 0x0a, 0x41]));
    const d = await runUntilStarted(damaged);
    assert.ok(d.line.idSource === 'machine-id' || d.line.idSource === 'mac', `re-derived: ${JSON.stringify(d.line)}`);
    assert.ok(d.a.lines.some((l) => l.level === 40 && /the node-id file holds no valid node id; derived .* again .* and rewrote the file/.test(l.msg)), d.a.dump());
    assert.equal((await readFile(join(damaged, 'node-id'), 'utf8')).trim(), d.line.nodeId, 'rewritten with the id it ran under');

    const foreignId = 'some-other-host-0123456789ab';
    const foreign = join(dir, 'nodeid-foreign');
    await mkdir(foreign, { recursive: true, mode: 0o700 });
    await writeFile(join(foreign, 'node-id'), `${foreignId}\n`);
    const f = await runUntilStarted(foreign);
    assert.equal(f.line.nodeId, foreignId, 'the file wins');
    assert.equal(f.line.idSource, 'persisted');
    assert.ok(f.a.lines.some((l) => l.level === 40 && l.msg.startsWith(`the node id in the state dir (${foreignId}) was not derived on this host`) && l.persisted === foreignId), f.a.dump());
    assert.equal((await readFile(join(foreign, 'node-id'), 'utf8')).trim(), foreignId, 'not rewritten');

    const asDir = join(dir, 'nodeid-dir');
    await mkdir(join(asDir, 'node-id'), { recursive: true, mode: 0o700 });
    const r = await cli(['run', '--config', await noOverride(asDir), '--desired', desired]);
    expectExit2(r, r.stderr);
    noStack(r.stderr + r.stdout, 'node-id directory');
    assert.match(r.stderr, new RegExp(`^persys-agent run: ${esc(join(asDir, 'node-id'))} is not a regular file \\(a directory\\); the agent keeps its node id there: move it away`));
    assert.ok((await stat(join(asDir, 'node-id'))).isDirectory(), 'left alone');
    assert.ok(!(await readdir(asDir)).includes('agent.lock'), 'lock released');
    figures.nodeIdCases = 3;
  });

  it('a state.json written by a newer agent: exit 2 naming the file and its version, no stack, the file untouched', async () => {
    const stateDir = join(dir, 'newer');
    await mkdir(stateDir, { recursive: true, mode: 0o700 });
    const text = JSON.stringify({ schemaVersion: 99, records: { web: { id: 'web', fromTheFuture: true } } });
    await writeFile(join(stateDir, 'state.json'), text);
    const r = await cli(['run', '--config', await writeConfig(baseConfig(stateDir)), '--desired', desired]);
    expectExit2(r, 'newer store');
    noStack(r.stderr + r.stdout, 'newer store');
    assert.match(r.stderr, new RegExp(`^persys-agent run: ${esc(join(stateDir, 'state.json'))} has store schema version 99, but this persys-agent understands up to version \\d+`));
    assert.equal(await readFile(join(stateDir, 'state.json'), 'utf8'), text, 'not moved aside, not rewritten');
    assert.deepEqual((await readdir(stateDir)).filter((f) => f.includes('.corrupt-') || f === 'agent.lock'), []);
  });

  it('a stale agent.sock of a SIGKILLed agent does not prevent the next start; a second agent exits 2 naming the pid', async () => {
    const stateDir = join(dir, 'stale');
    const file = await writeConfig(baseConfig(stateDir));
    const victim = start(['run', '--config', file, '--desired', desired]);
    started.push(victim);
    await waitFor('the socket', async () => (await readdir(stateDir)).includes('agent.sock'), 30_000);
    await victim.stop('SIGKILL');
    assert.ok((await stat(join(stateDir, 'agent.sock'))).isSocket(), 'the killed agent left its socket');

    const next = start(['run', '--config', file, '--desired', desired]);
    started.push(next);
    await waitFor('the next agent to answer on the socket', async () => {
      const r = await cli(['status', '--config', file]);
      return r.code === 0 || next.child.exitCode !== null;
    }, 30_000, 250);
    assert.equal(next.child.exitCode, null, `the next agent exited:\n${next.dump()}`);
    const lock = JSON.parse(await readFile(join(stateDir, 'agent.lock'), 'utf8')) as { pid: number };
    assert.equal(lock.pid, next.pid);

    const second = await cli(['run', '--config', file, '--desired', desired]);
    expectExit2(second, second.stderr);
    noStack(second.stderr, 'second agent');
    assert.match(second.stderr, new RegExp(`another persys-agent \\(pid ${next.pid}\\) is running with this state dir`));
    assert.equal(next.child.exitCode, null, 'the first still runs');
    assert.equal(await next.stop('SIGTERM'), 0, next.dump());
    assert.ok(!(await readdir(stateDir)).includes('agent.sock'), 'a clean exit leaves no socket');
  });

  describe('a corrupt state.json with our containers running (real dockerd)', { skip: dockerSkip }, () => {
    const nodeId = testNodeId('test-badlocal-store');
    const docker = new Docker({ socketPath: '/var/run/docker.sock' });
    const ids = ['web', 'api', 'job'];
    after(async () => {
      await cleanupDockerByLabel(nodeId).catch(() => undefined);
    });

    it('is moved aside, records are rebuilt from the engine labels, and no container is recreated, restarted or removed (then with desired.json corrupt too)', async () => {
      const stateDir = join(dir, 'store');
      const desiredDocker = join(dir, 'desired-docker.json');
      await writeFile(
        desiredDocker,
        JSON.stringify({
          apiVersion: 'persys.dev/v1',
          kind: 'DesiredState',
          nodeId,
          generation: 1,
          workloads: ids.map((id) => ({ id, type: 'container', spec: { image: IMAGE, command: ['sleep', '3600'], stopTimeoutSeconds: 1, network: { mode: 'none' } } })),
        }),
      );
      const file = await writeConfig({
        ...baseConfig(stateDir, { docker: { namePrefix: `t-${nodeId}-` } }),
        nodeId,
        // Steps are logged at debug: the test reads them to prove none changed a container.
        logLevel: 'debug',
        reconcile: { intervalSeconds: 1 },
        gc: { intervalSeconds: 1, orphanGraceSeconds: 1 },
      });
      const ours = async () => {
        const list = await docker.listContainers({ all: true, filters: { label: [`dev.persys.node-id=${nodeId}`] } });
        return new Map(await Promise.all(list.map(async (c) => [c.Labels['dev.persys.workload-id'] ?? '?', { id: c.Id, state: c.State, startedAt: (await docker.getContainer(c.Id).inspect()).State.StartedAt }] as const)));
      };
      const records = async () => Object.keys((JSON.parse(await readFile(join(stateDir, 'state.json'), 'utf8')) as { records: Record<string, unknown> }).records).sort();
      const status = async () => JSON.parse(await readFile(join(stateDir, 'status.json'), 'utf8')) as { seq: number; observedGeneration: number | null; workloads: { id: string; phase: string }[] };
      const allRunning = async () => {
        const s = await status();
        return s.observedGeneration === 1 && s.workloads.length === ids.length && s.workloads.every((w) => w.phase === 'Running');
      };

      let agent = start(['run', '--config', file, '--desired', desiredDocker]);
      started.push(agent);
      await waitFor('three running containers', async () => (await allRunning()) && [...(await ours()).values()].filter((c) => c.state === 'running').length === ids.length, 90_000, 500).catch((err: unknown) => {
        throw new Error(`${String(err)}\n${agent.dump()}`);
      });
      await waitFor('their records on disk', async () => (await records()).join() === [...ids].sort().join(), 30_000);
      // The step log this test reads for "nothing changed" does show changes: the first start created three.
      assert.equal(agent.lines.filter((l) => l.step === 'create').length, ids.length, agent.dump());
      const before = await ours();
      assert.equal(await agent.stop('SIGTERM'), 0, agent.dump());

      let rebuiltMs = 0;
      let steps = 0;
      for (const damage of [['state.json'], ['state.json', 'desired.json']]) {
        const garbage = `{"schemaVersion":2,"records":{"web":{"id":"web","pha\u0000\u00ff${damage.join('+')}`;
        for (const f of damage) await writeFile(join(stateDir, f), garbage);
        const seqBefore = (await status()).seq;
        const t0 = Date.now();
        agent = start(['run', '--config', file, '--desired', desiredDocker]);
        started.push(agent);
        const a = agent;
        await waitFor(`records rebuilt after ${damage.join(' + ')} was damaged`, async () => (await status()).seq > seqBefore && (await allRunning()) && (await records()).join() === [...ids].sort().join(), 60_000, 250).catch((err: unknown) => {
          throw new Error(`${String(err)}\n${a.dump()}`);
        });
        rebuiltMs = Math.max(rebuiltMs, Date.now() - t0);
        // A few reconcile and GC passes on the rebuilt records.
        await new Promise((r) => setTimeout(r, 3_000));
        const files = await readdir(stateDir);
        for (const f of damage) {
          const aside = files.filter((x) => x.startsWith(`${f}.corrupt-`));
          assert.equal(aside.length, 1, `${f} moved aside once: ${files.join(',')}`);
          assert.equal(await readFile(join(stateDir, aside[0] as string), 'utf8'), garbage, 'the damaged bytes are kept for a look');
          await rm(join(stateDir, aside[0] as string));
        }
        assert.ok(a.lines.some((l) => l.level === 50 && l.msg.startsWith('state file is corrupt or unreadable; moved it aside')), a.dump());
        const changing = a.lines.filter((l) => typeof l.step === 'string' && ['create', 'recreate', 'remove', 'start', 'stop', 'repair'].includes(l.step));
        assert.deepEqual(changing.map((l) => l.msg), [], 'no step that changes a container');
        steps += changing.length;
        const now = await ours();
        assert.deepEqual([...now.keys()].sort(), [...before.keys()].sort(), 'the same workloads');
        for (const [id, c] of before) assert.deepEqual(now.get(id), c, `${id}: same container, never restarted`);
        assert.equal(await a.stop('SIGTERM'), 0, a.dump());
      }
      figures.corruptRebuildMs = rebuiltMs;
      figures.containersKept = before.size;
      figures.changingStepsAfterRebuild = steps;
    });
  });

  after(() => {
    figures.exit2 = exit2;
    console.log(`FIGURES bad-local-input: ${Object.entries(figures).map(([k, v]) => `${k}=${v}`).join(' ')}`);
  });
});
