/**
 * The state dir as a user meets it (issue 8): the built CLI run on embedded defaults in a fresh
 * directory, as `npm start` does. A second agent on the same state dir exits 2 naming the first
 * one's pid and leaves it untouched; SIGTERM leaves no temp file, no socket and no lock; a
 * SIGKILLed agent's leftovers (stale lock, socket, temp files) are cleaned by the next start,
 * which reads the store without moving anything aside. No engine needed: no workloads.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { CLI, waitFor } from '../helpers/agent-process.js';
import { testNodeId } from '../helpers/engines.js';

interface Proc {
  pid: number;
  out: () => string;
  exited: Promise<number | null>;
  kill: (sig: NodeJS.Signals) => void;
  alive: () => boolean;
}

function run(cwd: string, nodeId: string): Proc {
  const child = spawn(process.execPath, [CLI, 'run', '--desired', 'desired-state.json', `--nodeId=${nodeId}`, '--metrics.listen=off', '--logLevel=info', '--status.heartbeatSeconds=1'], {
    cwd,
    env: Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PERSYS_'))),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (out += c.toString()));
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  return { pid: child.pid as number, out: () => out, exited, kill: (s) => child.kill(s), alive: () => child.exitCode === null && child.signalCode === null };
}

describe('state dir: one agent, clean exit, crash leftovers', { timeout: 120_000 }, () => {
  let cwd: string;
  const nodeId = testNodeId('test-statedir');
  const state = () => join(cwd, '.persys-agent');
  const started: Proc[] = [];

  before(async () => {
    cwd = await mkdtemp(join(tmpdir(), 'persys-statedir-'));
    await writeFile(join(cwd, 'desired-state.json'), JSON.stringify({ apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId: '*', generation: 1, workloads: [] }));
  });
  after(async () => {
    for (const p of started) if (p.alive()) p.kill('SIGKILL');
    await rm(cwd, { recursive: true, force: true });
  });

  it('a second agent on the same state dir exits 2 naming the first one\'s pid; the first keeps running untouched', async () => {
    const first = run(cwd, nodeId);
    started.push(first);
    await waitFor('the first agent to write its status', async () => JSON.parse(await readFile(join(state(), 'status.json'), 'utf8')).observedGeneration === 1, 30_000);
    const lockBefore = await readFile(join(state(), 'agent.lock'), 'utf8');
    const nodeIdBefore = await stat(join(state(), 'node-id'));
    const storeBefore = await stat(join(state(), 'state.json'));

    const second = run(cwd, nodeId);
    started.push(second);
    const code = await Promise.race([second.exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 30_000))]);
    assert.equal(code, 2, second.out());
    assert.match(second.out(), new RegExp(`another persys-agent \\(pid ${first.pid}\\) is running with this state dir`));
    assert.doesNotMatch(second.out(), /at .*\.js:\d+/, 'no stack trace');

    assert.ok(first.alive(), 'the first agent still runs');
    assert.equal(await readFile(join(state(), 'agent.lock'), 'utf8'), lockBefore, 'its lock is untouched');
    assert.equal((await stat(join(state(), 'node-id'))).mtimeMs, nodeIdBefore.mtimeMs, 'node-id not rewritten');
    assert.equal((await stat(join(state(), 'state.json'))).ino, storeBefore.ino, 'state.json not replaced');
    assert.ok((await readdir(state())).includes('agent.sock'), 'its socket is still there');
    const seq = (JSON.parse(await readFile(join(state(), 'status.json'), 'utf8')) as { seq: number }).seq;
    await waitFor('the first agent to go on reporting', async () => (JSON.parse(await readFile(join(state(), 'status.json'), 'utf8')) as { seq: number }).seq > seq, 10_000);

    // SIGTERM: nothing but the durable files stays.
    first.kill('SIGTERM');
    assert.equal(await first.exited, 0, first.out());
    assert.deepEqual((await readdir(state())).sort(), ['desired.json', 'node-id', 'state.json', 'status.json']);
  });

  it('after a SIGKILL the next start removes the stale lock, socket and its own temp files, and moves nothing aside', async () => {
    const victim = run(cwd, nodeId);
    started.push(victim);
    await waitFor('the agent to hold the lock', async () => (await readdir(state())).includes('agent.sock'), 30_000);
    victim.kill('SIGKILL');
    await victim.exited;
    // What a crash mid-write leaves, next to the stale lock and socket.
    await writeFile(join(state(), `.state.json.tmp-${victim.pid}-0badc0de`), '{"schemaVer');
    await writeFile(join(state(), `.status.json.tmp-${victim.pid}-0badc0de`), '{"kind');
    await writeFile(join(state(), 'operator-notes.txt'), 'not ours');
    const files = await readdir(state());
    assert.ok(files.includes('agent.lock') && files.includes('agent.sock'), files.join(','));

    const seqBefore = (JSON.parse(await readFile(join(state(), 'status.json'), 'utf8')) as { seq: number }).seq;
    const next = run(cwd, nodeId);
    started.push(next);
    // Its first report means start-up is over (and its SIGTERM handler installed).
    await waitFor('the next agent to take over and report', async () => (JSON.parse(await readFile(join(state(), 'status.json'), 'utf8')) as { seq: number }).seq > seqBefore, 30_000);
    const lock = JSON.parse(await readFile(join(state(), 'agent.lock'), 'utf8')) as { pid: number };
    assert.equal(lock.pid, next.pid);
    const now = await readdir(state());
    assert.deepEqual(now.filter((f) => f.includes('.tmp-') || f.includes('.corrupt-')), [], now.join(','));
    assert.ok(now.includes('operator-notes.txt'), 'a file that is not ours is left alone');
    next.kill('SIGTERM');
    assert.equal(await next.exited, 0, next.out());
    assert.deepEqual((await readdir(state())).sort(), ['desired.json', 'node-id', 'operator-notes.txt', 'state.json', 'status.json']);
  });
});
