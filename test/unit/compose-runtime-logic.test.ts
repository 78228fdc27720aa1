/** Pure parts of the compose runtime: creation levels, which services are required, the report block's bounds. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { appState, creationLevels, optionalServices } from '../../src/runtimes/compose/compose-runtime.js';
import { parseCompose, type ComposeApp } from '../../src/runtimes/compose/model.js';
import { composeReportBlock } from '../../src/runtimes/compose/report.js';

function app(composeYaml: string): ComposeApp {
  const r = parseCompose({ project: 'shop', composeYaml });
  if (!r.ok) assert.fail(JSON.stringify(r.issues));
  return r.app;
}

type Listed = Parameters<typeof appState>[0][number];
function listed(service: string, state: Listed['state'], exitCode: number | undefined, labels: Record<string, string> = {}): Listed {
  return { id: service, name: `shop-${service}-1`, service, state, engineState: state, status: '', labels: { 'com.docker.compose.service': service, ...labels }, created: 0, health: undefined, exitCode };
}

describe('compose runtime logic', () => {
  it('independent services share a creation level; a service comes one level after what it needs', () => {
    const a = app(`
services:
  db: { image: x }
  cache: { image: x }
  api: { image: x, depends_on: [db, cache] }
  worker: { image: x, depends_on: { db: { condition: service_started } } }
  sidecar: { image: x, network_mode: "service:api" }
  web: { image: x, depends_on: [api] }
`);
    const levels = creationLevels(a.services).map((l) => l.map((s) => s.name).sort());
    assert.deepEqual(levels, [['cache', 'db'], ['api', 'worker'], ['sidecar', 'web']]);
    // Only part of the app (an update): what is already there does not count.
    const some = creationLevels(a.services.filter((s) => s.name === 'api' || s.name === 'web')).map((l) => l.map((s) => s.name));
    assert.deepEqual(some, [['api'], ['web']]);
  });

  it('a service only needed with required: false does not fail the app; one a dependant requires does', () => {
    const soft = { 'com.docker.compose.depends_on': 'seed:service_completed_successfully:false,migrate:service_completed_successfully:false', 'dev.persys.compose-optional-deps': 'seed' };
    const list = [listed('seed', 'exited', 3), listed('migrate', 'exited', 0), listed('api', 'running', undefined, soft)];
    assert.deepEqual([...optionalServices(list)], ['seed']);
    assert.deepEqual(appState(list), { state: 'running', exitCode: null });
    // Another dependant requires seed: now its exit fails the app.
    const hard = { 'com.docker.compose.depends_on': 'seed:service_started:false' };
    const list2 = [...list, listed('worker', 'running', undefined, hard)];
    assert.deepEqual([...optionalServices(list2)], []);
    assert.deepEqual(appState(list2), { state: 'exited', exitCode: 3 });
  });

  it('the report block keeps a failing service short: error and log tail bounded', () => {
    const block = {
      services: [
        { name: 'api', containerIds: ['c1'], state: 'exited', exitCode: 7, restarts: 2, error: 'x'.repeat(500), logTail: Array.from({ length: 10 }, (_, i) => `${i}:${'y'.repeat(300)}`) },
        { name: 'db', containerIds: ['c2'], state: 'running', restarts: 0 },
      ],
    };
    const small = composeReportBlock.shrink?.(block) as typeof block;
    assert.equal(small.services[0]?.error?.length, 200);
    assert.equal(small.services[0]?.logTail?.length, 5);
    assert.ok(small.services[0]?.logTail?.[0]?.startsWith('5:'));
    assert.ok((small.services[0]?.logTail?.[0]?.length ?? 0) <= 202);
    assert.deepEqual(small.services[1], block.services[1]);
  });
});
