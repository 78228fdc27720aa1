import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import * as v from 'valibot';

import { configSchema } from '../../src/config/schema.js';
import { desiredStateDocument } from '../../src/spec/desired-state.js';
import {
  buildJsonSchemas,
  JSON_SCHEMA_FORMATS,
  renderJsonSchema,
  SCHEMA_NAMES,
  schemaFileName,
  type SchemaName,
} from '../../src/spec/json-schema.js';
import { statusReport } from '../../src/spec/status-report.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const schemas = buildJsonSchemas();

function readJson(file: string): unknown {
  return JSON.parse(readFileSync(file, 'utf8'));
}

function compile(name: SchemaName): ValidateFunction {
  const ajv = new Ajv2020({ strict: true, allErrors: true });
  for (const [format, fn] of Object.entries(JSON_SCHEMA_FORMATS)) ajv.addFormat(format, fn);
  return ajv.compile(schemas[name]);
}

const validators = Object.fromEntries(SCHEMA_NAMES.map((n) => [n, compile(n)])) as Record<SchemaName, ValidateFunction>;
const valibotSchemas: Record<SchemaName, v.GenericSchema> = {
  'desired-state': desiredStateDocument,
  'status-report': statusReport,
  config: configSchema,
};

function ajvErrors(fn: ValidateFunction): string {
  return (fn.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? ''}`).join('; ');
}

function assertValidBoth(name: SchemaName, doc: unknown, label: string): void {
  const fn = validators[name];
  assert.ok(fn(doc), `${label}: JSON Schema rejects it: ${ajvErrors(fn)}`);
  const r = v.safeParse(valibotSchemas[name], doc);
  assert.ok(r.success, `${label}: valibot rejects it: ${r.issues?.map((i) => i.message).join('; ')}`);
}

function assertInvalidBoth(name: SchemaName, doc: unknown, label: string): void {
  assert.equal(validators[name](doc), false, `${label}: JSON Schema accepts it`);
  assert.equal(v.safeParse(valibotSchemas[name], doc).success, false, `${label}: valibot accepts it`);
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };
const isObject = (x: Json | undefined): x is JsonObject => typeof x === 'object' && x !== null && !Array.isArray(x);

describe('schemas/ files', () => {
  for (const name of SCHEMA_NAMES) {
    it(`${schemaFileName(name)} is what buildJsonSchemas() gives now`, () => {
      const file = path.join(root, 'schemas', schemaFileName(name));
      let onDisk: string;
      try {
        onDisk = readFileSync(file, 'utf8');
      } catch {
        assert.fail(`schemas/${schemaFileName(name)} is missing: run npm run schemas`);
      }
      assert.ok(onDisk === renderJsonSchema(schemas[name]), `schemas/${schemaFileName(name)} is out of date: run npm run schemas`);
    });
  }

  it('carry $id, $schema and a title', () => {
    for (const name of SCHEMA_NAMES) {
      const s = schemas[name] as JsonObject;
      assert.equal(s.$id, `https://persys.dev/schemas/${name}.schema.json`);
      assert.equal(s.$schema, 'https://json-schema.org/draft/2020-12/schema');
      assert.equal(typeof s.title, 'string');
      assert.equal(typeof s.description, 'string');
    }
  });
});

describe('JSON Schemas', () => {
  it('compile under Ajv in strict mode', () => {
    // compile() above already threw if not; compile again so a failure is reported here.
    for (const name of SCHEMA_NAMES) assert.doesNotThrow(() => compile(name), name);
  });

  it('give every property a description', () => {
    const missing: string[] = [];
    const walk = (node: Json, at: string): void => {
      if (Array.isArray(node)) return node.forEach((n, i) => walk(n, `${at}[${i}]`));
      if (!isObject(node)) return;
      const props = node.properties;
      if (isObject(props)) {
        for (const [key, sub] of Object.entries(props)) {
          if (!isObject(sub) || typeof sub.description !== 'string' || sub.description.trim() === '') missing.push(`${at}.${key}`);
        }
      }
      for (const [key, sub] of Object.entries(node)) if (key !== 'default' && key !== 'enum' && key !== 'const') walk(sub, `${at}/${key}`);
    };
    for (const name of SCHEMA_NAMES) walk(schemas[name] as Json, name);
    assert.deepEqual(missing, []);
  });

  it('keep patterns, lengths and bounds', () => {
    const ds = JSON.stringify(schemas['desired-state']);
    assert.match(ds, /"pattern":"\^\[a-z0-9\]\(\?:\[a-z0-9\._-\]\{0,61\}\[a-z0-9\]\)\?\$"/); // safe names
    assert.match(ds, /"maxLength":1048576/); // composeYaml
    assert.match(ds, /"minimum":1,"maximum":65535/); // ports
    assert.match(ds, /"maxItems":10000/); // workloads
  });

  it('document the rules JSON Schema cannot check', () => {
    const ds = schemas['desired-state'] as JsonObject;
    assert.match(String(ds.description), /ids must be unique.*cannot express/);
    assert.match(JSON.stringify(ds), /Workload id must not contain '\.\.'/);
  });

  it('show the config defaults, and they are the ones valibot applies', () => {
    const defaultsOf = (schema: JsonObject): JsonObject => {
      const out: JsonObject = {};
      const props = schema.properties;
      if (!isObject(props)) return out;
      for (const [key, sub] of Object.entries(props)) {
        if (!isObject(sub) || sub.default === undefined) continue;
        out[key] = sub.type === 'object' && isObject(sub.properties) ? defaultsOf(sub) : sub.default;
      }
      return out;
    };
    const shown = defaultsOf(schemas.config as JsonObject);
    assert.equal((shown.source as JsonObject).pollIntervalSeconds, 30);
    assert.deepEqual(shown, v.parse(configSchema, {}));
  });
});

describe('examples/', () => {
  const dir = path.join(root, 'examples');
  const desiredFiles = readdirSync(dir).filter((f) => f.includes('desired-state') && f.endsWith('.json'));

  it('has the desired-state examples', () => {
    assert.ok(desiredFiles.includes('desired-state.json'), 'examples/desired-state.json is missing');
    assert.ok(desiredFiles.includes('desired-state.full.json'), 'examples/desired-state.full.json is missing');
  });

  for (const file of desiredFiles) {
    it(`${file} is valid under the JSON Schema and valibot`, () => {
      assertValidBoth('desired-state', readJson(path.join(dir, file)), file);
    });
  }

  it('config.json is valid under the config JSON Schema and valibot', () => {
    assertValidBoth('config', readJson(path.join(dir, 'config.json')), 'config.json');
  });

  it('desired-state.json is the local quick-start: nodeId "*" and containers only', () => {
    const doc = v.parse(desiredStateDocument, readJson(path.join(dir, 'desired-state.json')));
    assert.equal(doc.nodeId, '*');
    assert.ok(doc.workloads.every((w) => w.type === 'container'), 'only container workloads');
    assert.deepEqual(
      doc.workloads.map((w) => [w.id, w.desiredState]),
      [['web', 'running'], ['worker', 'running'], ['maintenance', 'stopped']],
    );
  });

  it('desired-state.full.json uses every container spec field and every workload type', () => {
    const doc = readJson(path.join(dir, 'desired-state.full.json')) as JsonObject;
    const workloads = doc.workloads as JsonObject[];
    assert.deepEqual(new Set(workloads.map((w) => w.type)), new Set(['container', 'compose', 'vm']));
    const container = workloads.find((w) => w.type === 'container');
    assert.ok(container && isObject(container.spec), 'a container workload with a spec');
    const containerSchema = (((schemas['desired-state'] as JsonObject).properties as JsonObject).workloads as JsonObject).items as JsonObject;
    const branch = (containerSchema.oneOf as JsonObject[]).find((b) => ((b.properties as JsonObject).type as JsonObject).const === 'container');
    const specProps = Object.keys(((branch?.properties as JsonObject).spec as JsonObject).properties as JsonObject);
    assert.deepEqual(specProps.filter((k) => !(k in (container.spec as JsonObject))), []);
    for (const key of ['revision', 'desiredState', 'retry', 'retryToken']) assert.ok(key in container, key);
  });
});

/** A small valid document; each bad case breaks one thing. */
function baseDoc(): JsonObject {
  return {
    apiVersion: 'persys.dev/v1',
    kind: 'DesiredState',
    nodeId: 'edge-7',
    generation: 3,
    workloads: [
      { id: 'web', type: 'container', spec: { image: 'nginx:1.27-alpine', ports: [{ hostIp: '127.0.0.1', hostPort: 8080, containerPort: 80 }] } },
      {
        id: 'vm1',
        type: 'vm',
        spec: { vcpus: 1, memoryMiB: 512, disks: [{ name: 'root', image: { path: '/var/lib/img/base.qcow2' } }], networks: [{ network: 'default' }] },
      },
      { id: 'shop', type: 'compose', spec: { project: 'shop', composeYaml: 'services:\n  app:\n    image: x\n' } },
    ],
    volumes: [{ name: 'data', pool: 'fast', sizeBytes: 1048576 }],
    storagePools: [{ name: 'fast', type: 'dir', path: '/srv/fast', capacityBytes: 1048576 }],
  };
}

type Mutation = (d: JsonObject) => void;
const w = (d: JsonObject, i: number): JsonObject => (d.workloads as JsonObject[])[i] as JsonObject;
const spec = (d: JsonObject, i: number): JsonObject => w(d, i).spec as JsonObject;

describe('desired-state documents: JSON Schema and valibot agree', () => {
  it('the base document is valid', () => assertValidBoth('desired-state', baseDoc(), 'base'));

  const good: Record<string, Mutation> = {
    'nodeId "*"': (d) => { d.nodeId = '*'; },
    'IPv6 hostIp': (d) => { (spec(d, 0).ports as JsonObject[])[0]!.hostIp = '::1'; },
    'upper-case MAC': (d) => { (spec(d, 1).networks as JsonObject[])[0]!.mac = '52:54:00:AB:CD:EF'; },
    'image by https url and sha256': (d) => { (spec(d, 1).disks as JsonObject[])[0]!.image = { url: 'https://example.com/a.img', sha256: 'a'.repeat(64) }; },
    'empty workloads': (d) => { d.workloads = []; },
    'label key with slash': (d) => { spec(d, 0).labels = { 'com.example/team': 'x' }; },
    'path with dots inside a segment': (d) => { spec(d, 0).workingDir = '/srv/a..b/.c'; },
    'id with single dots': (d) => { w(d, 0).id = 'web.v2-a_b'; },
  };
  for (const [label, mutate] of Object.entries(good)) {
    it(`accepts: ${label}`, () => {
      const d = baseDoc();
      mutate(d);
      assertValidBoth('desired-state', d, label);
    });
  }

  const bad: Record<string, Mutation> = {
    'wrong apiVersion': (d) => { d.apiVersion = 'persys.dev/v2'; },
    'wrong kind': (d) => { d.kind = 'StatusReport'; },
    'missing workloads': (d) => { delete d.workloads; },
    'unknown top-level field': (d) => { d.extra = true; },
    'empty nodeId': (d) => { d.nodeId = ''; },
    'nodeId "**"': (d) => { d.nodeId = '**'; },
    'nodeId with a slash': (d) => { d.nodeId = 'a/../b'; },
    'nodeId with a newline': (d) => { d.nodeId = 'edge\n7'; },
    'negative generation': (d) => { d.generation = -1; },
    'fractional generation': (d) => { d.generation = 1.5; },
    'generation as a string': (d) => { d.generation = '3'; },
    'workload type pod': (d) => { w(d, 0).type = 'pod'; },
    'id with ..': (d) => { w(d, 0).id = 'a..b'; },
    'id upper case': (d) => { w(d, 0).id = 'Web'; },
    'id with slash': (d) => { w(d, 0).id = 'a/b'; },
    'id too long': (d) => { w(d, 0).id = 'a'.repeat(64); },
    'id ending in a dash': (d) => { w(d, 0).id = 'web-'; },
    'unknown spec field': (d) => { spec(d, 0).foo = 1; },
    'image upper case': (d) => { spec(d, 0).image = 'Nginx'; },
    'image empty': (d) => { spec(d, 0).image = ''; },
    'hostPort 0': (d) => { (spec(d, 0).ports as JsonObject[])[0]!.hostPort = 0; },
    'hostPort 65536': (d) => { (spec(d, 0).ports as JsonObject[])[0]!.hostPort = 65536; },
    'containerPort as a string': (d) => { (spec(d, 0).ports as JsonObject[])[0]!.containerPort = '80'; },
    'hostIp a name': (d) => { (spec(d, 0).ports as JsonObject[])[0]!.hostIp = 'localhost'; },
    'protocol icmp': (d) => { (spec(d, 0).ports as JsonObject[])[0]!.protocol = 'icmp'; },
    'env name with =': (d) => { spec(d, 0).env = { 'A=B': 'x' }; },
    'env value not a string': (d) => { spec(d, 0).env = { A: 1 }; },
    'reserved label key': (d) => { spec(d, 0).labels = { 'dev.persys.managed': 'false' }; },
    'bind source with ..': (d) => { spec(d, 0).volumes = [{ type: 'bind', source: '/srv/../etc', target: '/x' }]; },
    'bind source ending in ..': (d) => { spec(d, 0).volumes = [{ type: 'bind', source: '/srv/..', target: '/x' }]; },
    'mount target with NUL': (d) => { spec(d, 0).volumes = [{ type: 'tmpfs', target: '/x\u0000y' }]; },
    'mount target relative': (d) => { spec(d, 0).volumes = [{ type: 'tmpfs', target: 'x' }]; },
    'volume mount name with ..': (d) => { spec(d, 0).volumes = [{ type: 'volume', source: 'a..b', target: '/x' }]; },
    'mount type nfs': (d) => { spec(d, 0).volumes = [{ type: 'nfs', target: '/x' }]; },
    'tmpfs with a source': (d) => { spec(d, 0).volumes = [{ type: 'tmpfs', source: 'x', target: '/x' }]; },
    'workingDir relative': (d) => { spec(d, 0).workingDir = 'app'; },
    'cpus 0': (d) => { spec(d, 0).resources = { cpus: 0 }; },
    'memoryBytes 1 MiB': (d) => { spec(d, 0).resources = { memoryBytes: 1048576 }; },
    'memorySwapBytes -2': (d) => { spec(d, 0).resources = { memorySwapBytes: -2 }; },
    'restartPolicy sometimes': (d) => { spec(d, 0).restartPolicy = 'sometimes'; },
    'empty healthcheck test': (d) => { spec(d, 0).healthcheck = { test: [] }; },
    'capability lower case': (d) => { spec(d, 0).security = { capAdd: ['net_admin'] }; },
    'stopTimeoutSeconds 3601': (d) => { spec(d, 0).stopTimeoutSeconds = 3601; },
    'retry multiplier 0.5': (d) => { w(d, 0).retry = { multiplier: 0.5 }; },
    'retry unknown key': (d) => { w(d, 0).retry = { attempts: 3 }; },
    'desiredState paused': (d) => { w(d, 0).desiredState = 'paused'; },
    'revision with a space': (d) => { w(d, 0).revision = 'r 1'; },
    'retryToken too long': (d) => { w(d, 0).retryToken = 'x'.repeat(129); },
    'vm without vcpus': (d) => { delete spec(d, 1).vcpus; },
    'vm vcpus 257': (d) => { spec(d, 1).vcpus = 257; },
    'vm memoryMiB 8': (d) => { spec(d, 1).memoryMiB = 8; },
    'vm image url without sha256': (d) => { (spec(d, 1).disks as JsonObject[])[0]!.image = { url: 'https://example.com/a.img' }; },
    'vm image http url': (d) => { (spec(d, 1).disks as JsonObject[])[0]!.image = { url: 'http://example.com/a.img', sha256: 'a'.repeat(64) }; },
    'vm image path with ..': (d) => { (spec(d, 1).disks as JsonObject[])[0]!.image = { path: '/var/../etc/shadow' }; },
    'vm image with path and url': (d) => { (spec(d, 1).disks as JsonObject[])[0]!.image = { path: '/a', url: 'https://e.com/a', sha256: 'a'.repeat(64) }; },
    'vm sha256 upper case': (d) => { (spec(d, 1).disks as JsonObject[])[0]!.image = { path: '/a', sha256: 'A'.repeat(64) }; },
    'vm disk name with ..': (d) => { (spec(d, 1).disks as JsonObject[])[0]!.name = 'a..b'; },
    'vm bad MAC': (d) => { (spec(d, 1).networks as JsonObject[])[0]!.mac = '52:54:00:12:34'; },
    'vm nic with network and bridge': (d) => { (spec(d, 1).networks as JsonObject[])[0] = { network: 'default', bridge: 'br0' }; },
    'vm login user upper case': (d) => { spec(d, 1).login = { username: 'Root' }; },
    'vm container spec': (d) => { w(d, 1).spec = { image: 'nginx' }; },
    'compose empty yaml': (d) => { spec(d, 2).composeYaml = ''; },
    'compose yaml over 1 MiB': (d) => { spec(d, 2).composeYaml = 'x'.repeat(1024 * 1024 + 1); },
    'compose project upper case': (d) => { spec(d, 2).project = 'Shop'; },
    'volume name with ..': (d) => { (d.volumes as JsonObject[])[0]!.name = '..'; },
    'volume pool with slash': (d) => { (d.volumes as JsonObject[])[0]!.pool = 'a/b'; },
    'pool path relative': (d) => { (d.storagePools as JsonObject[])[0]!.path = 'srv/fast'; },
    'pool path with ..': (d) => { (d.storagePools as JsonObject[])[0]!.path = '/srv/../etc'; },
    'pool type nfs': (d) => { (d.storagePools as JsonObject[])[0]!.type = 'nfs'; },
    'workloads not an array': (d) => { d.workloads = {}; },
    'a workload that is null': (d) => { (d.workloads as Json[])[0] = null; },
  };
  for (const [label, mutate] of Object.entries(bad)) {
    it(`rejects: ${label}`, () => {
      const d = baseDoc();
      mutate(d);
      assertInvalidBoth('desired-state', d, label);
    });
  }

  it('rejects non-objects at the root', () => {
    for (const doc of [null, 1, 'x', true]) assertInvalidBoth('desired-state', doc, JSON.stringify(doc));
  });

  it('duplicate workload ids: only valibot can tell (documented in the schema)', () => {
    const d = baseDoc();
    w(d, 1).id = 'web';
    assert.equal(validators['desired-state'](d), true);
    assert.equal(v.safeParse(desiredStateDocument, d).success, false);
  });
});

describe('config and status report: JSON Schema and valibot agree', () => {
  it('accept an empty config', () => assertValidBoth('config', {}, '{}'));

  const badConfigs: Record<string, JsonObject> = {
    'unknown key': { sourceUrl: 'https://x' },
    'ftp source url': { source: { url: 'ftp://x/y' } },
    'poll interval 0': { source: { pollIntervalSeconds: 0 } },
    'poll interval as a string': { source: { pollIntervalSeconds: '30' } },
    'bad log level': { logLevel: 'verbose' },
    'bad listen': { metrics: { listen: '9464' } },
    'concurrency 0': { reconcile: { concurrency: 0 } },
    'concurrency 1.5': { reconcile: { concurrency: 1.5 } },
    'bad domain type': { libvirt: { domainType: 'xen' } },
    'empty stateDir': { stateDir: '' },
    'nodeId "*"': { nodeId: '*' },
  };
  for (const [label, doc] of Object.entries(badConfigs)) {
    it(`config rejects: ${label}`, () => assertInvalidBoth('config', doc, label));
  }

  const report = {
    apiVersion: 'persys.dev/v1',
    kind: 'StatusReport',
    nodeId: 'edge-7',
    seq: 1,
    agentVersion: '0.1.0',
    observedGeneration: 42,
    sentAt: '2025-01-02T03:04:05.678Z',
    node: { hostname: 'edge-7', labels: {}, runtimes: { docker: 'up', libvirt: 'down: no socket' } },
    sync: { lastPullAt: '2025-01-02T03:04:00Z', lastError: null },
    workloads: [
      {
        id: 'web', type: 'container', desiredState: 'running', actualState: 'running', phase: 'Running', message: '',
        error: { code: 'IMAGE_PULL_FAILED', message: 'x', userMessage: 'y', transient: true },
        retry: { attempts: 1, nextRetryAt: '2025-01-02T03:05:00Z', gaveUp: false },
        vm: { interfaces: [{ mac: '52:54:00:12:34:56', ips: ['10.0.0.5/24'], source: 'lease' }] },
      },
    ],
  };
  it('a status report is valid under both', () => assertValidBoth('status-report', report, 'report'));
  it('a status report with a bad timestamp or code is rejected by both', () => {
    assertInvalidBoth('status-report', { ...report, sentAt: 'yesterday' }, 'sentAt');
    assertInvalidBoth('status-report', { ...report, sync: { lastPullAt: null, lastError: { code: 'NOPE', message: '', at: report.sentAt } } }, 'code');
    assertInvalidBoth('status-report', { ...report, seq: 1.5 }, 'seq');
  });
});
