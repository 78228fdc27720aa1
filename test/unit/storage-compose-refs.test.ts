/**
 * Compose apps mount agent volumes as external volumes (docs/storage.md): the compose type names the
 * engine volumes its services mount, and the storage gate holds the app on a declared one only.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as v from 'valibot';
import type { DesiredStep } from '../../src/reconcile/steps.js';
import { composeType } from '../../src/runtimes/compose/type.js';
import { BUILTIN_TYPES } from '../../src/runtimes/registry.js';
import { composeWorkload } from '../../src/spec/desired-state.js';
import { storageGate } from '../../src/storage/gate.js';
import { emptyStorageState } from '../../src/storage/types.js';

const yaml = `services:
  app:
    image: x:1
    volumes: [db:/data, own:/own, /tmp:/host, cache:/cache]
  side:
    image: x:1
    volumes: [{ type: volume, source: db, target: /d }]
volumes:
  db: { external: true, name: data }
  cache: { external: true }
  own: {}
`;
const w = v.parse(composeWorkload, { id: 'shop', type: 'compose', spec: { project: 'shop', composeYaml: yaml } });

describe('compose apps on agent volumes', () => {
  it('names the engine volumes its services mount: external ones by their name, the app\'s own project-prefixed', () => {
    assert.deepEqual(composeType.volumeRefs?.(w), ['cache', 'data', 'shop_own']);
  });
  it('the storage gate holds the app while a declared volume is not Ready, and lets it pass when none is declared', () => {
    const step = { kind: 'create', target: 'workload', workloadId: 'shop', workload: w, reason: 'new' } as unknown as DesiredStep;
    const held = storageGate(BUILTIN_TYPES, new Set(['data']), { denied: new Map() }, emptyStorageState()).check(step, undefined, new Date());
    assert.equal(held.kind, 'wait');
    assert.match(held.reason, /waiting for volume data \(not created yet\) before create/);
    assert.equal(storageGate(BUILTIN_TYPES, new Set(['other']), { denied: new Map() }, emptyStorageState()).check(step, undefined, new Date()).kind, 'create');
  });
});
