/**
 * Fuzzed documents (issue 16, family 4).
 *
 * Structure-aware mutations of real documents (the examples), seeded (FUZZ_SEED, printed), at least
 * FUZZ_MUTATIONS (default 6,000) of them, each run in-process through the agent's validator and
 * through ajv on the published schema (schemas/desired-state.schema.json):
 *   - 0 crashes, 0 stack traces, every error with a path and a message;
 *   - every document the agent accepts, the schema accepts too, and validation returns it exactly
 *     as written (so the agent applies what was published); its workloads hash without throwing;
 * A sample goes through `persys-agent validate --json` (same verdict and issues as in-process), and
 * a sample of rejected documents through a running agent on the real dockerd: each is reported
 * with its code and path, and no workload is touched.
 * Plus a fast-check property of the canonical hash: equal specs hash equal, real changes do not.
 *
 * Prints: FIGURES fuzz: mutations, accepted, rejected, crashes, stack traces, schema disagreements.
 */
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { Ajv2020 } from 'ajv/dist/2020.js';
import Docker from 'dockerode';
import fc from 'fast-check';

import { BUILTIN_TYPES } from '../../src/runtimes/registry.js';
import { JSON_SCHEMA_FORMATS } from '../../src/spec/json-schema.js';
import { validateDesiredState, type ValidationIssue } from '../../src/spec/validate.js';
import { AgentProcess, runCli, waitFor } from '../helpers/agent-process.js';
import { cleanupDockerByLabel, requireEngine, testNodeId } from '../helpers/engines.js';
import { startFleetServer, type FleetServer, type JsonObject } from '../helpers/fleet-server.js';
import { seededRandom } from '../helpers/seeded-random.js';
import { makeThrowawayCa } from '../helpers/tls.js';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type Obj = { [key: string]: Json };
type Key = string | number;

const SEED = Number(process.env.FUZZ_SEED ?? randomInt(1, 2 ** 31 - 1));
const MUTATIONS = Number(process.env.FUZZ_MUTATIONS ?? 6000);
const CLI_SAMPLE = 30;
const AGENT_SAMPLE = 15;
const IMAGE = 'persys-test/busybox:1';
const root = new URL('../../', import.meta.url);
const STACK = /\n\s+at .+:\d+:\d+|\bat (?:async )?[\w.<>]+ \(/;

const isObj = (x: Json | undefined): x is Obj => typeof x === 'object' && x !== null && !Array.isArray(x);
const clone = (x: Json): Json => JSON.parse(JSON.stringify(x)) as Json;

/** Every node of a document, by path (the root is `[]`). */
function paths(doc: Json): Key[][] {
  const out: Key[][] = [];
  const walk = (node: Json, path: Key[]) => {
    out.push(path);
    if (Array.isArray(node)) node.forEach((x, i) => walk(x, [...path, i]));
    else if (isObj(node)) for (const k of Object.keys(node)) walk(node[k] as Json, [...path, k]);
  };
  walk(doc, []);
  return out;
}

function at(doc: Json, path: readonly Key[]): Json | undefined {
  let node: Json | undefined = doc;
  for (const k of path) node = node === null || typeof node !== 'object' ? undefined : (node as Record<Key, Json>)[k];
  return node;
}

/** Sets an own property (also `__proto__`, as JSON.parse would). */
function setOwn(parent: Json, key: Key, value: Json): void {
  Object.defineProperty(parent, key, { value, enumerable: true, writable: true, configurable: true });
}

const ODD_VALUES: Json[] = [
  null, true, false, 0, -1, 1.5, 65536, 2 ** 53, -(2 ** 31), 1e308, '', ' ', 'x', '0', '../../etc/passwd', '/', 'a'.repeat(70),
  'a'.repeat(5000), 'ünïcødé', 'Ⅻ', 'line\nbreak', 'nul\u0000byte', 'dev.persys.node-id', [], {}, ['x'], [1, 2], { a: 'b' }, { __x: [] },
];
const RESERVED = ['__proto__', 'constructor', 'prototype'];

/** One structure-aware mutation, in place; returns its name. */
function mutateOnce(doc: Json, rnd: () => number): string {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)] as T;
  const all = paths(doc).filter((p) => p.length > 0);
  const path = pick(all);
  const parent = at(doc, path.slice(0, -1)) as Json;
  const key = path[path.length - 1] as Key;
  const value = at(doc, path) as Json;
  const op = pick(['delete', 'odd', 'odd', 'wrap', 'unknownKey', 'reservedKey', 'duplicate', 'nearMiss', 'number', 'emptyContainer']);
  switch (op) {
    case 'delete':
      if (Array.isArray(parent)) parent.splice(key as number, 1);
      else delete (parent as Obj)[key as string];
      return 'delete';
    case 'odd':
      setOwn(parent, key, clone(pick(ODD_VALUES)));
      return 'odd-value';
    case 'wrap':
      setOwn(parent, key, [value]);
      return 'wrap-in-array';
    case 'unknownKey': {
      const target = isObj(value) ? value : isObj(parent) ? parent : undefined;
      if (target === undefined) return mutateOnce(doc, rnd);
      setOwn(target, pick(['extra', 'Image', 'spec ', 'x-y', '$ref']), pick(ODD_VALUES));
      return 'unknown-key';
    }
    case 'reservedKey': {
      const target = isObj(value) ? value : isObj(parent) ? parent : undefined;
      if (target === undefined) return mutateOnce(doc, rnd);
      setOwn(target, pick(RESERVED), pick(['x', { a: 'b' }, [], 1] as Json[]));
      return 'reserved-key';
    }
    case 'duplicate':
      if (Array.isArray(value) && value.length > 0) {
        value.push(clone(value[0] as Json));
        return 'duplicate-element';
      }
      return mutateOnce(doc, rnd);
    case 'nearMiss':
      if (typeof value === 'string') {
        setOwn(parent, key, pick([value.toUpperCase(), `${value} `, `${value}\u200b`, value.slice(0, -1), `${value}/..`, value.repeat(3)]));
        return 'near-miss-string';
      }
      return mutateOnce(doc, rnd);
    case 'number':
      if (typeof value === 'number') {
        setOwn(parent, key, pick([value + 1, value - 1, -value, value * 1024, value + 0.5, 0]));
        return 'number-change';
      }
      return mutateOnce(doc, rnd);
    default:
      setOwn(parent, key, Array.isArray(value) ? [] : isObj(value) ? {} : value);
      return 'empty-container';
  }
}

function issueProblems(issues: readonly ValidationIssue[]): string[] {
  const out: string[] = [];
  if (issues.length === 0) out.push('rejected with no issue');
  for (const i of issues) {
    if (typeof i.path !== 'string' || i.path.length === 0) out.push(`issue without a path: ${JSON.stringify(i)}`);
    if (typeof i.message !== 'string' || i.message.length === 0) out.push(`issue without a message: ${JSON.stringify(i)}`);
    if (STACK.test(i.message)) out.push(`stack trace in a message: ${i.message.slice(0, 200)}`);
    if (i.message.length > 2000) out.push(`message of ${i.message.length} characters at ${i.path}`);
  }
  return out;
}

interface Verdict {
  doc: Json;
  text: string;
  ok: boolean;
  issues: ValidationIssue[];
}

const figures = { mutations: 0, accepted: 0, rejected: 0, crashes: 0, stackTraces: 0, acceptedButSchemaRejects: 0, notAsWritten: 0, agentStricter: 0, cli: 0, agent: 0, hashRuns: 0 };
const ops = new Map<string, number>();

after(() => {
  const opList = [...ops.entries()].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k}=${n}`).join(',');
  console.log(
    `FIGURES fuzz: seed=${SEED} mutations=${figures.mutations} accepted=${figures.accepted} rejected=${figures.rejected} ` +
      `crashes=${figures.crashes} stackTraces=${figures.stackTraces} acceptedButSchemaRejects=${figures.acceptedButSchemaRejects} ` +
      `notAsWritten=${figures.notAsWritten} agentStricterThanSchema=${figures.agentStricter} validateCli=${figures.cli} ` +
      `throughAgent=${figures.agent} hashPropertyRuns=${figures.hashRuns} ops=${opList}`,
  );
});

describe('fuzzed desired-state documents', { timeout: 600_000 }, () => {
  const seeds: Json[] = [];
  const verdicts: Verdict[] = [];
  let schemaAccepts: (doc: unknown) => boolean;

  before(async () => {
    for (const f of ['examples/desired-state.full.json', 'examples/desired-state.json']) {
      seeds.push(JSON.parse(await readFile(new URL(f, root), 'utf8')) as Json);
    }
    const schema = JSON.parse(await readFile(new URL('schemas/desired-state.schema.json', root), 'utf8')) as object;
    const ajv = new Ajv2020({ strict: true, allErrors: true });
    for (const [format, fn] of Object.entries(JSON_SCHEMA_FORMATS)) ajv.addFormat(format, fn);
    const compiled = ajv.compile(schema);
    schemaAccepts = (doc) => compiled(doc);
  });

  it(`${MUTATIONS} mutations in-process: no crash, every error with a path, accepted means schema-valid and as written`, () => {
    const rnd = seededRandom(SEED);
    const problems: string[] = [];
    for (let n = 0; n < MUTATIONS; n++) {
      const doc = clone(seeds[n % seeds.length] as Json);
      const count = 1 + Math.floor(rnd() * 3);
      for (let k = 0; k < count; k++) {
        const op = mutateOnce(doc, rnd);
        ops.set(op, (ops.get(op) ?? 0) + 1);
      }
      // What arrives over the wire: text, parsed again (own `__proto__` keys survive this).
      const text = JSON.stringify(doc);
      const wire = JSON.parse(text) as Json;
      figures.mutations++;
      let r: ReturnType<typeof validateDesiredState>;
      try {
        r = validateDesiredState(wire);
      } catch (err) {
        figures.crashes++;
        problems.push(`#${n} crashed: ${String((err as Error).stack ?? err).slice(0, 300)}`);
        continue;
      }
      const byAjv = schemaAccepts(JSON.parse(text));
      if (r.ok) {
        figures.accepted++;
        if (!byAjv) {
          figures.acceptedButSchemaRejects++;
          problems.push(`#${n} accepted by the agent, rejected by the schema: ${text.slice(0, 300)}`);
        }
        try {
          assert.deepEqual(r.value, JSON.parse(text));
        } catch {
          figures.notAsWritten++;
          problems.push(`#${n} accepted but not as written: ${text.slice(0, 300)}`);
        }
        for (const w of r.value.workloads) {
          try {
            BUILTIN_TYPES.hash(w);
          } catch (err) {
            figures.crashes++;
            problems.push(`#${n} hashing ${w.id} threw: ${String(err).slice(0, 200)}`);
          }
        }
      } else {
        figures.rejected++;
        if (byAjv) figures.agentStricter++;
        const bad = issueProblems(r.issues);
        figures.stackTraces += bad.filter((b) => b.startsWith('stack trace')).length;
        problems.push(...bad.map((b) => `#${n} ${b}`));
      }
      if (verdicts.length < 400) verdicts.push({ doc: wire, text, ok: r.ok, issues: r.ok ? [] : r.issues });
    }
    assert.ok(figures.mutations >= 5000);
    assert.ok(figures.accepted > 0 && figures.rejected > 0, 'the mutations exercise both verdicts');
    assert.deepEqual(problems.slice(0, 20), [], `${problems.length} problems (seed ${SEED})`);
  });

  it(`a sample of ${CLI_SAMPLE} through \`persys-agent validate --json\`: the same verdict and issues`, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'persys-fuzz-'));
    try {
      const accepted = verdicts.filter((v) => v.ok).slice(0, 5);
      const sample = [...accepted, ...verdicts.filter((v) => !v.ok).slice(0, CLI_SAMPLE - accepted.length)];
      for (const [i, v] of sample.entries()) {
        const file = join(dir, `doc-${i}.json`);
        await writeFile(file, v.text);
        const r = await runCli(['validate', '--json', file]);
        figures.cli++;
        assert.equal(r.code, v.ok ? 0 : 1, `exit code for ${v.text.slice(0, 200)}\n${r.stderr}`);
        assert.doesNotMatch(r.stderr, STACK);
        const printed = JSON.parse(r.stdout) as ValidationIssue[];
        assert.deepEqual(printed, v.issues);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('canonical hash (fast-check): equal specs hash equal; a real change changes the hash', () => {
    const envKey = fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,8}$/).filter((k) => !RESERVED.includes(k));
    const labelKey = fc.stringMatching(/^[a-z][a-z0-9.]{0,8}$/).filter((k) => !RESERVED.includes(k));
    const spec = fc.record(
      {
        image: fc.constantFrom('busybox:1', 'nginx:1.27-alpine', 'registry.local:5000/team/app:2'),
        env: fc.dictionary(envKey, fc.string({ maxLength: 8 }), { maxKeys: 5 }),
        labels: fc.dictionary(labelKey, fc.string({ maxLength: 8 }), { maxKeys: 4 }),
        command: fc.array(fc.string({ maxLength: 6 }), { minLength: 1, maxLength: 3 }),
        ports: fc.uniqueArray(fc.record({ hostIp: fc.constant('127.0.0.1'), hostPort: fc.integer({ min: 1024, max: 65535 }), containerPort: fc.integer({ min: 1, max: 65535 }) }), {
          maxLength: 3,
          selector: (p) => p.hostPort,
        }),
        resources: fc.record({ cpus: fc.constantFrom(0.25, 0.5, 1, 2), memoryBytes: fc.integer({ min: 8, max: 4096 }).map((m) => m * 1024 * 1024) }, { requiredKeys: [] }),
      },
      { requiredKeys: ['image'] },
    );
    const hash = (s: object) => BUILTIN_TYPES.hash({ id: 'w', type: 'container', spec: s });
    /** The same spec with every object's keys in reverse order. */
    const reordered = (x: unknown): unknown =>
      Array.isArray(x) ? x.map(reordered) : x !== null && typeof x === 'object' ? Object.fromEntries(Object.entries(x).reverse().map(([k, v]) => [k, reordered(v)])) : x;
    const change = fc.constantFrom('image', 'envAdd', 'envValue', 'command', 'labelAdd', 'memory', 'port');
    const valid = (s: object) => validateDesiredState({ apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId: 'n', generation: 1, workloads: [{ id: 'w', type: 'container', spec: s }] }).ok;
    fc.assert(
      fc.property(spec, change, (s, what) => {
        fc.pre(valid(s));
        figures.hashRuns++;
        const base = hash(s);
        assert.equal(hash(reordered(s) as object), base, 'key order changed the hash');
        assert.equal(hash(structuredClone(s)), base, 'a copy hashes differently');
        const t = structuredClone(s) as Record<string, unknown> & { env?: Record<string, string>; labels?: Record<string, string>; command?: string[]; ports?: { containerPort: number }[]; resources?: { memoryBytes?: number } };
        if (what === 'image') t.image = `${String(t.image)}-changed`;
        else if (what === 'envAdd') t.env = { ...t.env, ZZ_NEW_VAR: 'x' };
        else if (what === 'envValue') {
          const k = Object.keys(t.env ?? {})[0];
          t.env = k === undefined ? { A_VAR: 'v' } : { ...t.env, [k]: `${t.env?.[k] ?? ''}!` };
        } else if (what === 'command') t.command = [...(t.command ?? []), 'more'];
        else if (what === 'labelAdd') t.labels = { ...t.labels, 'zz.new': 'x' };
        else if (what === 'memory') t.resources = { ...t.resources, memoryBytes: (t.resources?.memoryBytes ?? 64 * 1024 * 1024) + 1024 * 1024 };
        else {
          const p = t.ports?.[0];
          if (p === undefined) t.ports = [{ containerPort: 80 }];
          else p.containerPort = p.containerPort === 65535 ? 1 : p.containerPort + 1;
        }
        fc.pre(valid(t));
        assert.notEqual(hash(t), base, `changing ${what} kept the hash`);
      }),
      { seed: SEED, numRuns: 500 },
    );
    assert.ok(figures.hashRuns >= 300, `only ${figures.hashRuns} property runs passed the preconditions`);
  });
});

const skip = await requireEngine('docker');

describe('rejected fuzzed documents through a running agent', { skip, timeout: 300_000 }, () => {
  const nodeId = testNodeId('test-fuzz');
  const docker = new Docker({ socketPath: '/var/run/docker.sock' });
  let dir: string;
  let server: FleetServer;
  let agent: AgentProcess | undefined;
  let generation = 1;
  const workloads = (): Json[] => [
    { id: 'a', type: 'container', spec: { image: IMAGE, command: ['sleep', '3600'], stopTimeoutSeconds: 1, env: { MODE: 'one' }, labels: { 'app.tier': 'web' } } },
    { id: 'b', type: 'container', desiredState: 'stopped', spec: { image: IMAGE, resources: { memoryBytes: 33554432 }, ports: [{ hostIp: '127.0.0.1', hostPort: 18091, containerPort: 80 }] } },
  ];
  const docOf = (gen: number): Obj => ({ apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId, generation: gen, labels: { env: 'fuzz' }, workloads: workloads() });
  const ours = async () => {
    const list = await docker.listContainers({ all: true, filters: { label: [`dev.persys.node-id=${nodeId}`] } });
    return new Map(list.map((c) => [c.Labels['dev.persys.workload-id'] ?? '', c.Id]));
  };
  interface Report extends JsonObject {
    seq: number;
    observedGeneration: number | null;
    sync: { lastError: { code: string; message: string } | null };
    workloads: { id: string; phase: string }[];
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-fuzz-agent-'));
    const pki = await makeThrowawayCa(dir);
    server = await startFleetServer({ tls: { certFile: pki.serverCert, keyFile: pki.serverKey } });
    const configPath = join(dir, 'config.json');
    await writeFile(
      configPath,
      JSON.stringify({
        nodeId,
        stateDir: join(dir, 'state'),
        logLevel: 'info',
        source: { url: server.sourceUrl, caFile: pki.caCert, pollIntervalSeconds: 1 },
        status: { url: server.statusUrl, heartbeatSeconds: 5, debounceMs: 100 },
        reconcile: { intervalSeconds: 2 },
        retry: { initialDelaySeconds: 1, maxDelaySeconds: 2 },
        metrics: { listen: '127.0.0.1:0' },
        docker: { namePrefix: `t-${nodeId}-` },
      }),
    );
    server.setDocument(nodeId, docOf(generation));
    agent = AgentProcess.start(['run', '--config', configPath]);
  });

  after(async () => {
    await agent?.stop('SIGTERM').catch(() => undefined);
    await cleanupDockerByLabel(nodeId).catch(() => undefined);
    await server?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it(`${AGENT_SAMPLE} rejected mutations: each reported with a code and a path, no workload touched`, async () => {
    const lastSeq = () => Math.max(0, ...server.reports(nodeId).map((r) => (r as Report).seq));
    const phase = (r: Report, id: string) => r.workloads.find((w) => w.id === id)?.phase;
    await server.waitForReport(nodeId, (r) => (r as Report).observedGeneration === 1 && phase(r as Report, 'a') === 'Running' && phase(r as Report, 'b') === 'Stopped', 90_000);
    const before = await ours();
    assert.deepEqual([...before.keys()].sort(), ['a', 'b']);

    const rnd = seededRandom(SEED ^ 0x5eed);
    let sent = 0;
    let good = 1;
    for (let tries = 0; sent < AGENT_SAMPLE && tries < 2000; tries++) {
      const doc = docOf(++generation) as Json;
      mutateOnce(doc, rnd);
      const text = JSON.stringify(doc);
      const parsed = JSON.parse(text) as Json;
      const r = validateDesiredState(parsed);
      // Only mutations that are rejected, and that still claim this node and a newer generation:
      // those must reach the validator, not the stale/foreign-node checks.
      if (r.ok || !isObj(parsed) || parsed.nodeId !== nodeId || parsed.generation !== generation) continue;
      sent++;
      const mark = lastSeq();
      const t0 = Date.now();
      server.setDocument(nodeId, text);
      await server.waitForRequest((q) => q.kind === 'document' && q.nodeId === nodeId && q.status === 200 && q.receivedAt >= t0, 30_000);
      // The report that answers this document names its issues (a heartbeat may still carry the last one's).
      const lines = r.issues.slice(0, 3).map((i) => `${i.path}: ${i.message}`);
      const report = (await server
        .waitForReport(nodeId, (x) => (x as Report).seq > mark && lines.every((l) => (x as Report).sync.lastError?.message.includes(l) === true), 30_000)
        .catch((e: unknown) => {
          const last = server.reports(nodeId).at(-1) as Report | undefined;
          throw new Error(`case ${sent}: no report names ${JSON.stringify(lines)}; last error: ${JSON.stringify(last?.sync.lastError)} (${String(e)})`);
        })) as Report;
      assert.equal(report.sync.lastError?.code, 'DESIRED_STATE_INVALID', `case ${sent}: ${text.slice(0, 200)}`);
      assert.equal(report.observedGeneration, good, 'the last good generation stays in force');
      figures.agent++;
      // A valid generation with the same workloads: it changes nothing on the engine, and it ends
      // the source's error backoff (which doubles per failure, as it should) before the next case.
      good = ++generation;
      server.setDocument(nodeId, docOf(good));
      await server.waitForReport(nodeId, (x) => (x as Report).observedGeneration === good && (x as Report).sync.lastError === null, 60_000);
    }
    assert.equal(sent, AGENT_SAMPLE, 'enough rejected mutations were found');
    const afterIds = await ours();
    assert.deepEqual(afterIds, before, 'no container was removed or recreated');
    await waitFor('the agent still runs', () => agent?.child.exitCode === null, 5_000);
    const errors = agent?.lines.filter((l) => l.level >= 50 || STACK.test(l.msg)) ?? [];
    assert.deepEqual(errors.map((l) => l.msg), [], 'no ERROR line or stack trace in the log');
  });
});
