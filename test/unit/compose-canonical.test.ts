/**
 * The compose type's canonical per-service hash (hash version 2) against golden files: spellings that
 * mean the same hash the same (spelling-a.yml vs spelling-b.yml), and the hashes themselves are frozen
 * (compose-fixtures/service-hashes.json): a change of them needs a new hash version, never an edit here.
 * Also compose 1.29's own config-hash, against values docker-compose 1.29.2 printed for the same files.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

import { canonicalServices, describeAppChanges, shellSplit } from '../../src/runtimes/compose/canonical.js';
import { compose129ConfigHash, pythonJson } from '../../src/runtimes/compose/compose-hash.js';
import { parseCompose, type ComposeApp } from '../../src/runtimes/compose/model.js';
import type { ComposeWorkload } from '../../src/runtimes/compose/spec.js';
import { composeType } from '../../src/runtimes/compose/type.js';
import { BUILTIN_TYPES } from '../../src/runtimes/registry.js';

const dir = join(fileURLToPath(new URL('.', import.meta.url)), 'compose-fixtures');
const read = (f: string) => readFileSync(join(dir, f), 'utf8');

function app(yaml: string, project = 'shop', env: Record<string, string> = {}): ComposeApp {
  const r = parseCompose({ project, composeYaml: yaml, env });
  if (!r.ok) assert.fail(JSON.stringify(r.issues));
  return r.app;
}

const hashes = (a: ComposeApp, policy: 'keep' | 'delete' = 'keep') => Object.fromEntries([...canonicalServices(a, policy)].map(([k, v]) => [k, v.hash]));
const wl = (composeYaml: string, env: Record<string, string> = {}): ComposeWorkload => ({ id: 'shop', type: 'compose', spec: { project: 'shop', composeYaml, env } });

describe('compose canonical form (hash version 2)', () => {
  it('equivalent spellings hash the same (golden pair: restart "no"/absent, env list/map, ports short/long, 1g/1024m, key order, ...)', () => {
    const a = hashes(app(read('spelling-a.yml')));
    const b = hashes(app(read('spelling-b.yml')));
    assert.deepEqual(a, b);
    assert.equal(BUILTIN_TYPES.hash(wl(read('spelling-a.yml'))), BUILTIN_TYPES.hash(wl(read('spelling-b.yml'))));
  });

  it('the hashes are frozen (golden file)', () => {
    const golden = JSON.parse(read('service-hashes.json')) as Record<string, Record<string, string>>;
    assert.deepEqual(hashes(app(read('spelling-a.yml'))), golden['spelling-a.yml']);
    assert.deepEqual(hashes(app(read('compose129-app.yml'), 'demo')), golden['compose129-app.yml']);
    assert.equal(BUILTIN_TYPES.hash(wl(read('spelling-a.yml'))), golden.workload?.['spelling-a.yml']);
  });

  it('a change of one service changes only its own hash; the workload canonical holds hashes only', () => {
    const base = app('services:\n  api: { image: x, environment: { DB_HOST: db } }\n  db: { image: y }\n');
    const changed = app('services:\n  api: { image: x, environment: { DB_HOST: other } }\n  db: { image: y }\n');
    const h1 = hashes(base);
    const h2 = hashes(changed);
    assert.equal(h1.db, h2.db);
    assert.notEqual(h1.api, h2.api);
    assert.deepEqual(Object.keys(composeType.canonical(wl('services:\n  b: { image: x }\n  a: { image: x }\n'), 2) as object), ['project', 'services']);
  });

  it('values that differ do change the hash (port, memory, command, secret content)', () => {
    const h = (yaml: string, env: Record<string, string> = {}) => hashes(app(yaml, 'shop', env)).a;
    const base = h('services:\n  a: { image: x, ports: ["8080:80"], mem_limit: 1g, command: [a, b] }\n');
    assert.notEqual(base, h('services:\n  a: { image: x, ports: ["8081:80"], mem_limit: 1g, command: [a, b] }\n'));
    assert.notEqual(base, h('services:\n  a: { image: x, ports: ["8080:80"], mem_limit: 2g, command: [a, b] }\n'));
    assert.notEqual(base, h('services:\n  a: { image: x, ports: ["8080:80"], mem_limit: 1g, command: [a, "b c"] }\n'));
    const s = (pw: string) => h('services:\n  a: { image: x, secrets: [pw] }\nsecrets:\n  pw: { environment: PW }\n', { PW: pw });
    assert.notEqual(s('one'), s('two'));
  });

  it('a network config change changes the hash of every service on it', () => {
    const net = (driverOpt: string) => hashes(app(`services:\n  a: { image: x, networks: [n] }\n  b: { image: x }\nnetworks:\n  n: { driver_opts: { mtu: "${driverOpt}" } }\n`));
    const one = net('1400');
    const two = net('1500');
    assert.notEqual(one.a, two.a);
    assert.equal(one.b, two.b);
  });

  it('plan reasons name the service and the field, never a value of env or secrets', () => {
    const w1 = wl('services:\n  api: { image: x, environment: { DB_HOST: db, PW: secret1 } }\n  db: { image: "y:1" }\n');
    const w2 = wl('services:\n  api: { image: x, environment: { DB_HOST: other, PW: secret2 } }\n  db: { image: "y:2" }\n  cache: { image: z }\n');
    const reasons = describeAppChanges(BUILTIN_TYPES.canonical(w1), BUILTIN_TYPES.canonical(w2));
    assert.deepEqual(reasons, ['api: env DB_HOST changed', 'api: env PW changed', 'cache: added', 'db: image changed (docker.io/library/y:1 -> docker.io/library/y:2)']);
    assert.ok(!reasons.join(' ').includes('secret'));
  });

  it('volumes: delete is carried on every service (removal reads it from the containers)', () => {
    const a = app('services:\n  a: { image: x }\n');
    assert.notEqual(hashes(a, 'keep').a, hashes(a, 'delete').a);
  });

  it('shell words split like compose does', () => {
    assert.deepEqual(shellSplit(`sh -c "echo 'a b' \\"c\\""`), ['sh', '-c', `echo 'a b' "c"`]);
    assert.deepEqual(shellSplit("a  'b c'  d\\ e ''"), ['a', 'b c', 'd e', '']);
  });

  it('requests() sums limits (and reservations where there is no limit); images() lists each image once', () => {
    const w = wl(`
services:
  a: { image: x, mem_limit: 1g, cpus: 0.5 }
  b: { image: x, deploy: { resources: { limits: { cpus: "1.5", memory: 512m } } } }
  c: { image: y, deploy: { resources: { reservations: { memory: 256m } } } }
`);
    assert.deepEqual(composeType.requests?.(w), { cpus: 2, memoryBytes: (1024 + 512 + 256) * 1024 * 1024 });
    assert.deepEqual(composeType.images?.(w), ['x', 'y']);
  });
});

describe('compose 1.29 config-hash (docker-compose up -d finds our containers up to date)', () => {
  const golden = JSON.parse(read('compose129-hashes.json')) as { imageId: string; files: Record<string, Record<string, string>> };
  for (const [file, want] of Object.entries(golden.files)) {
    it(`${file}: the hashes docker-compose 1.29.2 printed`, () => {
      const a = app(read(file), 'demo');
      const got = Object.fromEntries(a.services.map((s) => [s.name, compose129ConfigHash(s, a, golden.imageId)]));
      assert.deepEqual(got, want);
    });
  }

  it("Python's json.dumps: sorted keys, no spaces, non-ASCII escaped", () => {
    assert.equal(pythonJson({ b: [1, 0.5, null], a: 'é', c: true }), '{"a":"\\u00e9","b":[1,0.5,null],"c":true}');
  });
});
