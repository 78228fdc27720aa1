/**
 * Every accepted config key works or is refused: a key the schema knows but this version does not
 * implement (src/config/unsupported.ts; none are left) is a config error naming the key and saying
 * "not supported in this version"; the CLI turns that into exit 2. A document that uses volumes or
 * storagePools is rejected the same way, naming the path.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { loadConfig } from '../../src/config/load.js';
import { UNSUPPORTED_CONFIG_KEYS } from '../../src/config/unsupported.js';
import { validateDesiredState } from '../../src/spec/validate.js';

describe('unsupported config keys', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-unsup-'));
  });
  after(async () => rm(dir, { recursive: true, force: true }));

  it('gc.* and resources.reserved.* (implemented now) are accepted from a file, env and flags', async () => {
    const file = join(dir, 'c.json');
    await writeFile(file, JSON.stringify({ gc: { intervalSeconds: 3600, imageMinAgeSeconds: 60 }, resources: { reserved: { cpus: 0.5 } } }));
    const c = loadConfig({ file, env: {}, flags: {}, cwd: dir });
    assert.equal(c.gc.intervalSeconds, 3600);
    assert.equal(c.gc.imageMinAgeSeconds, 60);
    assert.equal(c.resources.reserved.cpus, 0.5);
    assert.equal(loadConfig({ env: { PERSYS_GC_INTERVAL_SECONDS: '1' }, flags: {}, cwd: dir }).gc.intervalSeconds, 1);
    assert.equal(loadConfig({ env: {}, flags: { 'resources.reserved.memoryBytes': '1024' }, cwd: dir }).resources.reserved.memoryBytes, 1024);
  });

  it('left out (or an empty object) starts as before', () => {
    const c = loadConfig({ env: {}, flags: {}, cwd: dir });
    assert.equal(c.shutdown.drainSeconds, 30);
    assert.doesNotThrow(() => loadConfig({ env: {}, flags: {}, cwd: dir, file: undefined }));
  });

  it('the list is empty: every key the schema knows is implemented', () => {
    assert.deepEqual(UNSUPPORTED_CONFIG_KEYS.map((k) => k.key), []);
  });
});

describe('desired-state fields', () => {
  const base = { apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId: 'n1', generation: 1, workloads: [] };

  it('volumes and storagePools are implemented (src/storage): a document with them is valid', () => {
    const r = validateDesiredState({ ...base, volumes: [{ name: 'data', pool: 'fast', sizeBytes: 1048576 }], storagePools: [{ name: 'fast', type: 'dir', path: '/srv/fast', capacityBytes: 1048576 }] });
    assert.equal(r.ok, true, JSON.stringify(r));
    assert.equal(validateDesiredState({ ...base, volumes: [], storagePools: [] }).ok, true);
  });

  it('schema errors in them are reported with their paths', () => {
    const r = validateDesiredState({ ...base, generation: -1, volumes: [{ name: 'data', pool: 'fast' }] });
    assert.equal(r.ok, false);
    const paths = r.ok ? [] : r.issues.map((i) => i.path);
    assert.deepEqual(paths.sort(), ['generation', 'volumes[0].pool', 'volumes[0].sizeBytes']);
  });
});
