/**
 * Issue 16's validator defects: documents the published schema rejects but the agent accepted, then
 * applied differently (reserved keys dropped, arrays taken for objects). Each case must be refused
 * by `validateDesiredState` with the path, and by the JSON Schema (ajv) too; a valid document must
 * come out of validation exactly as written.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

import { Ajv2020 } from 'ajv/dist/2020.js';

import { reservedKeyIssues, reshapedIssues } from '../../src/spec/fidelity.js';
import { buildJsonSchemas, JSON_SCHEMA_FORMATS } from '../../src/spec/json-schema.js';
import { validateDesiredState } from '../../src/spec/validate.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

const full = JSON.parse(readFileSync(path.join(root, 'examples/desired-state.full.json'), 'utf8')) as JsonObject;
const ajv = new Ajv2020({ strict: true, allErrors: true });
for (const [format, fn] of Object.entries(JSON_SCHEMA_FORMATS)) ajv.addFormat(format, fn);
const schemaAccepts = ajv.compile(buildJsonSchemas()['desired-state']);

/** A fresh copy of the full example with `value` set at `at` (JSON.parse keeps `__proto__` an own key). */
function mutate(at: (string | number)[], valueJson: string): unknown {
  const doc = JSON.parse(JSON.stringify(full)) as Json;
  let node = doc as Json;
  for (const key of at.slice(0, -1)) node = (node as Record<string | number, Json>)[key] as Json;
  (node as Record<string | number, Json>)[at[at.length - 1] as string | number] = JSON.parse(valueJson) as Json;
  return doc;
}

const container = ['workloads', 0, 'spec'];
const vm = ['workloads', 2, 'spec'];

describe('documents the agent used to accept and then apply differently', () => {
  const cases: { name: string; at: (string | number)[]; value: string; path: string; message: RegExp }[] = [];
  for (const key of ['__proto__', 'prototype', 'constructor']) {
    for (const [where, at] of [
      ['env', [...container, 'env']],
      ['labels', ['labels']],
      ['spec.labels', [...container, 'labels']],
      ['logging.options', [...container, 'logging', 'options']],
      ['cloudInit.metaData', [...vm, 'cloudInit', 'metaData']],
    ] as const) {
      for (const value of ['"x"', '{"a":"b"}']) {
        cases.push({
          name: `${where} with the key ${key} = ${value}`,
          at: [...at],
          value: `{"ok":"1",${JSON.stringify(key)}:${value}}`,
          path: `${[...at].map((k) => (typeof k === 'number' ? `[${k}]` : `.${k}`)).join('').replace(/^\./, '').replace(/\.\[/g, '[')}.${key}`,
          message: /not allowed/,
        });
      }
    }
  }
  for (const [where, at, value] of [
    ['env: []', [...container, 'env'], '[]'],
    ['resources: []', [...container, 'resources'], '[]'],
    ['retry: []', ['workloads', 0, 'retry'], '[]'],
    ['labels: ["x"]', [...container, 'labels'], '["x"]'],
    ['node labels: ["x"]', ['labels'], '["x"]'],
    ['cloudInit.metaData: []', [...vm, 'cloudInit', 'metaData'], '[]'],
    ['logging.options: ["a"]', [...container, 'logging', 'options'], '["a"]'],
    ['security: []', [...container, 'security'], '[]'],
  ] as const) {
    cases.push({
      name: where,
      at: [...at],
      value,
      path: [...at].map((k) => (typeof k === 'number' ? `[${k}]` : `.${k}`)).join('').replace(/^\./, '').replace(/\.\[/g, '['),
      message: /object/,
    });
  }

  for (const c of cases) {
    it(`${c.name}: refused with the path, and by the published schema`, () => {
      const doc = mutate(c.at, c.value);
      const r = validateDesiredState(doc);
      assert.equal(r.ok, false, 'the agent accepts it');
      if (r.ok) return;
      const hit = r.issues.find((i) => i.path === c.path);
      assert.ok(hit, `no issue at ${c.path}: ${JSON.stringify(r.issues)}`);
      assert.match(hit.message, c.message);
      assert.equal(schemaAccepts(doc), false, 'the JSON Schema accepts it');
    });
  }

  it('an env value named like an Object.prototype method that is not reserved is kept (toString, hasOwnProperty)', () => {
    const doc = mutate([...container, 'env'], '{"toString":"a","hasOwnProperty":"b","valueOf":"c"}');
    const r = validateDesiredState(doc);
    assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
    assert.deepEqual(r.value.workloads[0]?.spec, (doc as { workloads: { spec: unknown }[] }).workloads[0]?.spec);
    assert.equal(schemaAccepts(doc), true);
  });
});

describe('an accepted document is the document as written', () => {
  it('the full example comes out of validation deep-equal to its input', () => {
    const r = validateDesiredState(structuredClone(full));
    assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
    assert.deepEqual(r.value, full);
  });
});

describe('fidelity helpers', () => {
  it('reservedKeyIssues finds reserved keys at any depth, with the path', () => {
    const input = JSON.parse('{"a":[{"b":{"__proto__":1}}],"constructor":{"prototype":2}}') as unknown;
    assert.deepEqual(
      reservedKeyIssues(input).map((i) => i.path),
      [['a', 0, 'b', '__proto__'], ['constructor']],
    );
  });
  it('reshapedIssues reports an array that became an object and a key that vanished, not added defaults', () => {
    assert.deepEqual(reshapedIssues({ a: [], b: { c: 1 } }, { a: {}, b: {}, d: 3 }), [
      { path: ['a'], message: 'must be an object, got array' },
      { path: ['b', 'c'], message: 'was dropped by validation (not applied as written)' },
    ]);
    assert.deepEqual(reshapedIssues({ a: [1, { b: 2 }] }, { a: [1, { b: 2 }], x: 1 }), []);
  });
});
