import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import * as v from 'valibot';

import { configSchema } from '../../src/config/schema.js';
import { flattenIssues, formatIssues, validateDesiredState, validateWith } from '../../src/spec/validate.js';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

/** Two containers, a VM and a compose app, a volume and a pool: valid as it stands. */
function doc(): JsonObject {
  return {
    apiVersion: 'persys.dev/v1',
    kind: 'DesiredState',
    nodeId: 'edge-7',
    generation: 5,
    workloads: [
      { id: 'web', type: 'container', spec: { image: 'nginx:1.27-alpine', ports: [{ hostPort: 8080, containerPort: 80 }] } },
      { id: 'api', type: 'container', spec: { image: 'example/api:1', ports: [{ hostPort: 9090, containerPort: 9090 }] } },
      { id: 'vm1', type: 'vm', spec: { vcpus: 2, memoryMiB: 1024, disks: [{ name: 'root', image: { path: '/var/lib/img/base.qcow2' } }] } },
      { id: 'shop', type: 'compose', spec: { project: 'shop', composeYaml: 'services:\n  app:\n    image: x\n' } },
    ],
  };
}

const wl = (d: JsonObject, i: number): JsonObject => (d.workloads as JsonObject[])[i] as JsonObject;
const spec = (d: JsonObject, i: number): JsonObject => wl(d, i).spec as JsonObject;
const port0 = (d: JsonObject, i: number): JsonObject => (spec(d, i).ports as JsonObject[])[0] as JsonObject;
// Storage declarations are schema-checked, then rejected as not supported in this version
// (test/unit/config-unsupported.test.ts); these helpers add them for the schema cases.
const pool0 = (d: JsonObject): JsonObject => ((d.storagePools ??= [{ name: 'fast', type: 'dir', path: '/srv/fast', capacityBytes: 1048576 }]) as JsonObject[])[0] as JsonObject;
const vol0 = (d: JsonObject): JsonObject => (pool0(d), ((d.volumes ??= [{ name: 'data', pool: 'fast', sizeBytes: 1048576 }]) as JsonObject[])[0] as JsonObject);
const NOT_SUPPORTED = /^$/;
const disk0 = (d: JsonObject): JsonObject => (spec(d, 2).disks as JsonObject[])[0] as JsonObject;

/** The issues of a document changed by `mutate`, as "path: message" lines. */
function errorsOf(mutate: (d: JsonObject) => void): string[] {
  const d = doc();
  mutate(d);
  const r = validateDesiredState(d);
  return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`).filter((l) => !NOT_SUPPORTED.test(l));
}

const SAFE_NAME = "must be 1-63 characters of a-z, 0-9, '.', '_' or '-', starting and ending with a letter or digit";

describe('validateDesiredState', () => {
  it('accepts the base document and returns the parsed value', () => {
    const r = validateDesiredState(doc());
    assert.ok(r.ok, 'expected it to be valid');
    assert.equal(r.value.workloads.length, 4);
  });

  it('accepts nodeId "*" (the agent allows it only from local files)', () => {
    assert.deepEqual(errorsOf((d) => { d.nodeId = '*'; }), []);
  });

  describe('messages', () => {
    const cases: [string, (d: JsonObject) => void, string[]][] = [
      ['a missing required key', (d) => { delete spec(d, 2).vcpus; }, ['workloads[2].spec.vcpus: required']],
      ['a missing top-level key', (d) => { delete d.generation; }, ['generation: required']],
      ['every missing key of an empty object', (d) => { (d.workloads as Json[])[0] = {}; }, ['workloads[0].type: must be container, compose or vm']],
      ['a missing spec', (d) => { delete wl(d, 3).spec; }, ['workloads[3].spec: required']],
      ['an unknown key in a spec', (d) => { spec(d, 1).imagePullPolicy = 'Always'; }, ['workloads[1].spec.imagePullPolicy: unknown field']],
      ['an unknown top-level key', (d) => { d.workload = []; }, ['workload: unknown field']],
      ['an unknown key in a port', (d) => { port0(d, 1).host_port = 1; }, ['workloads[1].spec.ports[0].host_port: unknown field']],
      ['a string for a number', (d) => { port0(d, 1).hostPort = '8080'; }, ['workloads[1].spec.ports[0].hostPort: must be a number, got string']],
      ['a number for a string', (d) => { spec(d, 0).image = 7; }, ['workloads[0].spec.image: must be a string, got number']],
      ['null for a number', (d) => { d.generation = null; }, ['generation: must be a number, got null']],
      ['a string for a boolean', (d) => { spec(d, 2).vnc = 'yes'; }, ['workloads[2].spec.vnc: must be true or false, got string']],
      ['an object for an array', (d) => { spec(d, 0).ports = { hostPort: 1 }; }, ['workloads[0].spec.ports: must be an array, got object']],
      ['a string for an object', (d) => { spec(d, 0).resources = '1 cpu'; }, ['workloads[0].spec.resources: must be an object, got string']],
      ['a port out of range', (d) => { port0(d, 1).hostPort = 70000; }, ['workloads[1].spec.ports[0].hostPort: must be between 1 and 65535']],
      ['a fractional port', (d) => { port0(d, 0).containerPort = 80.5; }, ['workloads[0].spec.ports[0].containerPort: must be an integer']],
      ['a fractional generation', (d) => { d.generation = 1.5; }, ['generation: must be an integer']],
      ['a negative generation', (d) => { d.generation = -1; }, ['generation: must not be negative']],
      ['a wrong apiVersion', (d) => { d.apiVersion = 'v1'; }, ['apiVersion: must be "persys.dev/v1"']],
      ['a wrong kind', (d) => { d.kind = 'desiredstate'; }, ['kind: must be "DesiredState"']],
      ['an unknown workload type', (d) => { wl(d, 0).type = 'pod'; }, ['workloads[0].type: must be container, compose or vm']],
      ['a bad desiredState', (d) => { wl(d, 0).desiredState = 'up'; }, ['workloads[0].desiredState: must be running or stopped']],
      ['a bad pullPolicy', (d) => { spec(d, 0).pullPolicy = 'always'; }, ['workloads[0].spec.pullPolicy: must be Always, IfNotPresent or Never']],
      ['an upper-case image', (d) => { spec(d, 0).image = 'Nginx:1'; }, ['workloads[0].spec.image: must be a reference like "repo/name:tag" or "name@sha256:<digest>" (lower case)']],
      ['an image that is neither path nor url', (d) => { disk0(d).image = { url: 'https://example.com/x.img' }; }, ['workloads[2].spec.disks[0].image: needs either {path} or {url, sha256}']],
      ['a relative image path', (d) => { disk0(d).image = { path: 'base.qcow2' }; }, ['workloads[2].spec.disks[0].image.path: must be absolute']],
      ['too little memory', (d) => { spec(d, 0).resources = { memoryBytes: 1024 } }, ["workloads[0].spec.resources.memoryBytes: must be at least 6 MiB (Docker's minimum)"]],
      ['a bad retry policy', (d) => { wl(d, 0).retry = { maxAttempts: 0, multiplier: 11 } }, ['workloads[0].retry.maxAttempts: must be at least 1', 'workloads[0].retry.multiplier: must be at most 10']],
      ['an empty healthcheck', (d) => { spec(d, 0).healthcheck = { test: [] } }, ['workloads[0].spec.healthcheck.test: must not be empty']],
      ['a bad env name', (d) => { spec(d, 0).env = { 'MY VAR': 'x' } }, ['workloads[0].spec.env["MY VAR"]: environment variable name must start with a letter or _ and hold no = or spaces']],
      ['a non-string env value', (d) => { spec(d, 0).env = { PORT: 8080 } }, ['workloads[0].spec.env.PORT: must be a string, got number']],
      ['a reserved label', (d) => { spec(d, 0).labels = { 'dev.persys.managed': 'true' } }, ['workloads[0].spec.labels["dev.persys.managed"]: label keys under \'dev.persys.\' are reserved for the agent']],
      ['a bad hostIp', (d) => { port0(d, 0).hostIp = 'localhost' }, ['workloads[0].spec.ports[0].hostIp: must be an IPv4 or IPv6 address']],
      ['a bad mount type', (d) => { spec(d, 0).volumes = [{ type: 'nfs', target: '/x' }] }, ['workloads[0].spec.volumes[0].type: must be bind, volume or tmpfs']],
      ['a compose file over 1 MiB', (d) => { spec(d, 3).composeYaml = 'x'.repeat(1024 * 1024 + 1) }, ['workloads[3].spec.composeYaml: is larger than 1 MiB']],
      ['a bad nodeId', (d) => { d.nodeId = '' }, ['nodeId: must be the node\'s id (1-253 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit) or "*"']],
      ['a bad MAC', (d) => { spec(d, 2).networks = [{ network: 'default', mac: '52:54:00' }] }, ['workloads[2].spec.networks[0].mac: must be a MAC address']],
      ['a bad sha256', (d) => { disk0(d).image = { url: 'https://example.com/x.img', sha256: 'abc' } }, ['workloads[2].spec.disks[0].image.sha256: must be 64 lower-case hex digits']],
    ];
    for (const [label, mutate, expected] of cases) {
      it(label, () => assert.deepEqual(errorsOf(mutate), expected));
    }

    it('reports every error at once, in document order', () => {
      const errors = errorsOf((d) => {
        d.generation = 'five';
        port0(d, 1).hostPort = 0;
        delete spec(d, 2).memoryMiB;
        spec(d, 3).extra = 1;
      });
      assert.deepEqual(errors, [
        'generation: must be a number, got string',
        'workloads[1].spec.ports[0].hostPort: must be between 1 and 65535',
        'workloads[2].spec.memoryMiB: required',
        'workloads[3].spec.extra: unknown field',
      ]);
    });

    it('rejects non-objects at the root', () => {
      for (const [input, got] of [[null, 'null'], [[], 'array'], ['{}', 'string'], [42, 'number']] as const) {
        const r = validateDesiredState(input);
        assert.ok(!r.ok, 'expected it to be rejected');
        assert.deepEqual(r.issues, [{ path: '(root)', message: `must be an object, got ${got}` }]);
      }
    });
  });

  describe('duplicate ids', () => {
    it('points at the second use of an id', () => {
      assert.deepEqual(errorsOf((d) => { wl(d, 2).id = 'web'; }), ['workloads[2].id: duplicate workload id (already used by workloads[0])']);
    });

    it('reports every duplicate, each against its first use', () => {
      assert.deepEqual(
        errorsOf((d) => {
          wl(d, 1).id = 'web';
          wl(d, 2).id = 'shop';
          wl(d, 3).id = 'web';
        }),
        [
          'workloads[1].id: duplicate workload id (already used by workloads[0])',
          'workloads[3].id: duplicate workload id (already used by workloads[0])',
        ],
      );
    });

    it('is reported even when the document has schema errors', () => {
      assert.deepEqual(
        errorsOf((d) => {
          wl(d, 3).id = 'web';
          delete spec(d, 2).vcpus;
          d.extra = 1;
        }),
        ['workloads[2].spec.vcpus: required', 'extra: unknown field', 'workloads[3].id: duplicate workload id (already used by workloads[0])'],
      );
    });

    it('ignores workloads without a string id (they have their own error)', () => {
      assert.deepEqual(
        errorsOf((d) => {
          wl(d, 1).id = 7;
          delete wl(d, 2).id;
        }),
        ['workloads[1].id: must be a string, got number', 'workloads[2].id: required'],
      );
    });

    it('is reported beside other errors', () => {
      assert.deepEqual(
        errorsOf((d) => {
          wl(d, 1).id = 'web';
          spec(d, 0).image = 'UPPER';
        }),
        [
          'workloads[0].spec.image: must be a reference like "repo/name:tag" or "name@sha256:<digest>" (lower case)',
          'workloads[1].id: duplicate workload id (already used by workloads[0])',
        ],
      );
    });
  });

  describe("'..' checks", () => {
    const cases: [string, (d: JsonObject) => void, string][] = [
      ['workload id', (d) => { wl(d, 0).id = 'a..b'; }, "workloads[0].id: workload id must not contain '..'"],
      ['bind source', (d) => { spec(d, 0).volumes = [{ type: 'bind', source: '/srv/../etc', target: '/x' }]; }, "workloads[0].spec.volumes[0].source: must not contain '..'"],
      ['bind source ending in ..', (d) => { spec(d, 0).volumes = [{ type: 'bind', source: '/srv/..', target: '/x' }]; }, "workloads[0].spec.volumes[0].source: must not contain '..'"],
      ['mount target', (d) => { spec(d, 0).volumes = [{ type: 'tmpfs', target: '/x/../../etc' }]; }, "workloads[0].spec.volumes[0].target: must not contain '..'"],
      ['volume mount name', (d) => { spec(d, 0).volumes = [{ type: 'volume', source: 'a..b', target: '/x' }]; }, "workloads[0].spec.volumes[0].source: volume name must not contain '..'"],
      ['workingDir', (d) => { spec(d, 0).workingDir = '/app/..'; }, "workloads[0].spec.workingDir: must not contain '..'"],
      ['vm image path', (d) => { disk0(d).image = { path: '/var/lib/../../etc/shadow' }; }, "workloads[2].spec.disks[0].image.path: must not contain '..'"],
      ['vm disk name', (d) => { disk0(d).name = 'a..b'; }, "workloads[2].spec.disks[0].name: disk name must not contain '..'"],
      ['compose project', (d) => { spec(d, 3).project = 'a..b'; }, "workloads[3].spec.project: compose project must not contain '..'"],
      ['volume name', (d) => { vol0(d).name = 'a..b'; }, "volumes[0].name: volume name must not contain '..'"],
      ['volume pool', (d) => { vol0(d).pool = 'a..b'; }, "volumes[0].pool: pool name must not contain '..'"],
      ['pool name', (d) => { pool0(d).name = 'a..b'; }, "storagePools[0].name: pool name must not contain '..'"],
      ['pool path', (d) => { pool0(d).path = '/srv/../etc'; }, "storagePools[0].path: must not contain '..'"],
    ];
    for (const [label, mutate, expected] of cases) {
      it(label, () => assert.deepEqual(errorsOf(mutate), [expected]));
    }

    it('allows dots that are not a .. segment in paths', () => {
      assert.deepEqual(errorsOf((d) => { spec(d, 0).workingDir = '/srv/a..b/..c/.d'; }), []);
    });
  });

  describe('safe names', () => {
    const cases: [string, (d: JsonObject) => void, string][] = [
      ['upper-case id', (d) => { wl(d, 0).id = 'Web'; }, `workloads[0].id: workload id ${SAFE_NAME}`],
      ['id with a slash', (d) => { wl(d, 0).id = 'a/b'; }, `workloads[0].id: workload id ${SAFE_NAME}`],
      ['id starting with a dash', (d) => { wl(d, 0).id = '-web'; }, `workloads[0].id: workload id ${SAFE_NAME}`],
      ['id of 64 characters', (d) => { wl(d, 0).id = 'a'.repeat(64); }, `workloads[0].id: workload id ${SAFE_NAME}`],
      ['empty id', (d) => { wl(d, 0).id = ''; }, `workloads[0].id: workload id ${SAFE_NAME}`],
      ['pool name with a space', (d) => { pool0(d).name = 'fast pool'; }, `storagePools[0].name: pool name ${SAFE_NAME}`],
      ['volume pool upper case', (d) => { vol0(d).pool = 'Fast'; }, `volumes[0].pool: pool name ${SAFE_NAME}`],
      ['volume name ending in a dot', (d) => { vol0(d).name = 'data.'; }, `volumes[0].name: volume name ${SAFE_NAME}`],
      ['volume mount source path', (d) => { spec(d, 0).volumes = [{ type: 'volume', source: '/data', target: '/x' }]; }, `workloads[0].spec.volumes[0].source: volume name ${SAFE_NAME}`],
      ['compose profile', (d) => { spec(d, 3).profiles = ['Debug']; }, `workloads[3].spec.profiles[0]: compose profile ${SAFE_NAME}`],
    ];
    for (const [label, mutate, expected] of cases) {
      it(label, () => assert.deepEqual(errorsOf(mutate), [expected]));
    }

    it('accepts the longest and shortest safe names', () => {
      assert.deepEqual(errorsOf((d) => { wl(d, 0).id = 'a'; wl(d, 1).id = `a${'-'.repeat(61)}z`; }), []);
    });
  });

  describe('hostile strings', () => {
    const lines = (mutate: (d: JsonObject) => void): string => {
      const d = doc();
      mutate(d);
      const r = validateDesiredState(d);
      assert.ok(!r.ok, 'expected the document to be rejected');
      return formatIssues(r.issues);
    };

    it('a newline in nodeId is rejected and not echoed', () => {
      const out = lines((d) => { d.nodeId = 'edge-7\nINJECTED: fake line'; });
      assert.equal(out.split('\n').length, 1);
      assert.doesNotMatch(out, /INJECTED/);
    });

    it('a huge string is never echoed', () => {
      const huge = 'A'.repeat(1_000_000);
      const out = lines((d) => { wl(d, 0).id = huge; spec(d, 0).image = huge; d.kind = huge; wl(d, 1).desiredState = huge; });
      assert.ok(out.length < 2000, `output is ${out.length} characters`);
    });

    it('a type error shows the kind of value, not the value', () => {
      const out = lines((d) => { port0(d, 0).hostPort = '\u001b[31mred\u001b[0m'; });
      assert.equal(out, 'workloads[0].spec.ports[0].hostPort: must be a number, got string');
    });

    it('keys with newlines, quotes and control characters are escaped in paths', () => {
      const r = validateDesiredState({ ...doc(), 'a\nb"c\u0007': 1 });
      assert.ok(!r.ok, 'expected it to be rejected');
      assert.deepEqual(r.issues, [{ path: '["a\\nb\\"c\\u0007"]', message: 'unknown field' }]);
    });

    it('a very long unknown key is shortened in the path', () => {
      const r = validateDesiredState({ ...doc(), ['k'.repeat(10_000)]: 1 });
      assert.ok(!r.ok, 'expected it to be rejected');
      assert.equal(r.issues.length, 1);
      assert.ok(r.issues[0]!.path.length < 100, `path is ${r.issues[0]!.path.length} characters`);
      assert.match(r.issues[0]!.path, /^\["k+…"\]$/);
    });

    it('a __proto__ key is an unknown field, not a prototype change', () => {
      const input: unknown = JSON.parse(JSON.stringify(doc()).replace('{', '{"__proto__":{"polluted":true},'));
      const r = validateDesiredState(input);
      assert.ok(!r.ok, 'expected it to be rejected');
      assert.deepEqual(r.issues, [{ path: '__proto__', message: 'unknown field' }]);
      assert.equal(({} as Record<string, unknown>).polluted, undefined);
    });

    it('NUL in a path is rejected', () => {
      assert.deepEqual(errorsOf((d) => { spec(d, 0).workingDir = '/app\u0000/x'; }), ['workloads[0].spec.workingDir: must not contain NUL']);
    });

    it('look-alike (non-ASCII) characters in names are rejected', () => {
      assert.deepEqual(errorsOf((d) => { wl(d, 0).id = 'w\u0435b'; }), [`workloads[0].id: workload id ${SAFE_NAME}`]);
    });

    it('path traversal in names is rejected by the pattern and the .. check', () => {
      assert.deepEqual(errorsOf((d) => { wl(d, 0).id = '../etc'; }), [`workloads[0].id: workload id ${SAFE_NAME}`, "workloads[0].id: workload id must not contain '..'"]);
    });

    it('shell metacharacters in names are rejected', () => {
      for (const id of ['a;rm -rf /', 'a$(id)', 'a`id`', 'a|b', 'a b']) {
        assert.deepEqual(errorsOf((d) => { wl(d, 0).id = id; }), [`workloads[0].id: workload id ${SAFE_NAME}`], id);
      }
    });

    it('every message is one line', () => {
      const out = lines((d) => {
        d.nodeId = 'x\ny';
        spec(d, 0).env = { 'A\nB': 'v' };
        spec(d, 0).labels = { 'x\ny': 'v' };
        wl(d, 1).revision = 'r\n1';
      });
      for (const line of out.split('\n')) assert.match(line, /^[^:]+: \S/, line);
      assert.equal(out.split('\n').length, 4);
    });
  });
});

describe('validateWith on the config schema', () => {
  const errors = (input: unknown): string[] => {
    const r = validateWith(configSchema, input);
    return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
  };

  it('applies defaults to an empty config', () => {
    const r = validateWith(configSchema, {});
    assert.ok(r.ok, 'expected it to be valid');
    assert.equal(r.value.source.pollIntervalSeconds, 30);
  });

  it('says what is wrong and where', () => {
    assert.deepEqual(
      errors({ source: { pollIntervalSeconds: '30', urll: 'https://x' }, reconcile: { concurrency: 0 }, logLevel: 'loud', extra: 1 }),
      [
        'logLevel: must be trace, debug, info, warn, error, fatal or silent',
        'source.pollIntervalSeconds: must be a number, got string',
        'source.urll: unknown field',
        'reconcile.concurrency: must be at least 1',
        'extra: unknown field',
      ],
    );
  });
});

describe('flattenIssues', () => {
  it('reports identical issues once', () => {
    const r = v.safeParse(v.object({ a: v.string() }), { a: 1 });
    assert.ok(!r.success, 'expected valibot to reject it');
    const twice = flattenIssues([...r.issues, ...r.issues]);
    assert.deepEqual(twice, [{ path: 'a', message: 'must be a string, got number' }]);
  });

  it('uses (root) for issues without a path', () => {
    const r = v.safeParse(v.string(), 5);
    assert.ok(!r.success, 'expected valibot to reject it');
    assert.deepEqual(flattenIssues(r.issues), [{ path: '(root)', message: 'must be a string, got number' }]);
  });

  it('keeps custom messages whose subject is not the field', () => {
    const r = v.safeParse(v.object({ a: v.pipe(v.string(), v.minLength(3, 'too short')) }), { a: 'x' });
    assert.ok(!r.success, 'expected valibot to reject it');
    assert.deepEqual(flattenIssues(r.issues), [{ path: 'a', message: 'too short' }]);
  });
});

describe('formatIssues', () => {
  it('prints one "path: message" line per issue', () => {
    assert.equal(
      formatIssues([
        { path: 'a', message: 'required' },
        { path: 'b[0]', message: 'unknown field' },
      ]),
      'a: required\nb[0]: unknown field',
    );
  });
});
