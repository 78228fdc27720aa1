/**
 * The collector around the selection (src/gc/collector.ts), with a fake runtime and a fake docker
 * side: a pass carries out removals (bounded), a dry run changes nothing, passes never overlap,
 * the report block and metrics follow, and the schedule runs passes by itself.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Registry } from 'prom-client';
import * as v from 'valibot';

import { configSchema } from '../../src/config/schema.js';
import { GarbageCollector, MAX_REMOVALS_PER_PASS } from '../../src/gc/collector.js';
import type { DockerGc } from '../../src/gc/docker.js';
import { registerGcMetrics } from '../../src/gc/metrics.js';
import { silentLogger } from '../../src/log.js';
import { containerType } from '../../src/runtimes/docker/type.js';
import type { ObservedWorkload, Runtime } from '../../src/runtimes/runtime.js';
import { Store } from '../../src/store/store.js';

const T0 = Date.parse('2026-01-01T00:00:00.000Z');

function fakeRuntime(objects: ObservedWorkload[]): Runtime & { removed: string[]; observeCalls: number } {
  const rt = {
    name: 'docker',
    types: [containerType],
    removed: [] as string[],
    observeCalls: 0,
    health: async () => ({ up: true, reason: 'fake' }),
    observe: async () => {
      rt.observeCalls++;
      return objects.filter((o) => !rt.removed.includes(o.runtimeId));
    },
    prepare: async () => undefined,
    create: async () => {
      throw new Error('not used');
    },
    start: async () => undefined,
    stop: async () => undefined,
    remove: async (o: ObservedWorkload) => {
      await new Promise((r) => setTimeout(r, 1));
      rt.removed.push(o.runtimeId);
    },
    inspect: async () => undefined,
    events: async () => undefined,
  };
  return rt as unknown as Runtime & { removed: string[]; observeCalls: number };
}

const fakeDocker = (): DockerGc & { calls: string[] } => {
  const calls: string[] = [];
  return {
    calls,
    strays: async () => (calls.push('strays'), []),
    images: async () => (calls.push('images'), [{ id: 'sha256:o', tags: ['app:1'], digests: [], createdAt: new Date(T0).toISOString(), sizeBytes: 42 }]),
    removeContainer: async (id) => void calls.push(`rm ${id}`),
    removeImage: async (ref) => (calls.push(`rmi ${ref}`), true),
  };
};

const orphan = (i: number): ObservedWorkload => ({ workloadId: `o${i}`, type: 'container', runtime: 'docker', runtimeId: `c${i}`, name: `persys-o${i}`, revision: undefined, specHash: undefined, state: 'running', createdAt: new Date(T0).toISOString() });

describe('gc collector', () => {
  let dir: string;
  let store: Store;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-gc-col-'));
    store = await Store.open(dir, silentLogger(), { fsync: false });
    await store.setDesired({ document: { apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId: 'n', generation: 1, workloads: [] } as never, etag: null, receivedAt: new Date(T0).toISOString(), source: 'test' });
  });
  after(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  const make = (objects: ObservedWorkload[], over: { intervalSeconds?: number; now?: () => Date } = {}) => {
    const config = v.parse(configSchema, { gc: { intervalSeconds: over.intervalSeconds ?? 60, imageHighThresholdPercent: 50, imageLowThresholdPercent: 0 } });
    const rt = fakeRuntime(objects);
    const docker = fakeDocker();
    const registry = new Registry();
    let changes = 0;
    const gc = new GarbageCollector({
      config,
      store,
      runtimes: [rt],
      nodeId: 'n',
      stateDir: dir,
      logger: silentLogger(),
      metrics: registerGcMetrics(registry),
      docker,
      disk: async () => ({ usedBytes: 60, availableBytes: 40 }),
      now: over.now ?? (() => new Date(T0 + 3600_000)),
      onChange: () => void changes++,
    });
    return { gc, rt, docker, registry, changes: () => changes };
  };

  it('a dry run lists and removes nothing; a pass removes, counts, reports; both bounded to one list per source', async () => {
    store.update((d) => void (d.imageRefs = { 'app:1': { type: 'container', firstReferencedAt: new Date(T0).toISOString(), unreferencedSince: new Date(T0).toISOString() } }));
    const { gc, rt, docker, registry, changes } = make([orphan(1), orphan(2)]);
    const dry = await gc.runNow('test', { dryRun: true });
    assert.deepEqual(dry.removed.map((r) => `${r.kind} ${r.id}`), ['orphan c1', 'orphan c2', 'image app:1']);
    assert.deepEqual(rt.removed, []);
    assert.deepEqual(docker.calls, ['strays', 'images']);
    assert.equal(gc.report(), undefined, 'a dry run is not the report\'s pass');

    const pass = await gc.runNow('test');
    assert.deepEqual(rt.removed, ['c1', 'c2']);
    assert.ok(docker.calls.includes('rmi app:1'));
    assert.equal(pass.freedBytes, 42);
    // observe + strays + images + 2 runtime removals + 1 image removal + images again (the disk
    // is still over the low threshold after the image went: nothing more of ours to remove)
    assert.equal(pass.engineCalls, 1 + 1 + 1 + 2 + 1 + 1);
    assert.equal(store.data.imageRefs?.['app:1'], undefined, 'the removed image is forgotten');
    assert.equal(changes(), 1);
    const rep = gc.report();
    assert.equal(rep?.removed.length, 3);
    assert.equal(rep?.freedBytes, 42);
    const text = await registry.metrics();
    assert.match(text, /persys_gc_removed_total\{kind="orphan"\} 2/);
    assert.match(text, /persys_gc_removed_total\{kind="image"\} 1/);
    assert.match(text, /persys_gc_freed_bytes_total\{kind="image"\} 42/);
    assert.match(text, /persys_gc_runs_total\{result="ok"\} 1/);
  });

  it('an image Docker refuses because a container uses it (409) is kept, not a failure', async () => {
    store.update((d) => void (d.imageRefs = { 'app:1': { type: 'container', firstReferencedAt: new Date(T0).toISOString(), unreferencedSince: new Date(T0).toISOString() } }));
    const { gc, docker, registry } = make([]);
    docker.removeImage = async () => {
      throw Object.assign(new Error('conflict: unable to remove repository reference "app:1" (must force) - container abc is using its referenced image'), { statusCode: 409 });
    };
    const pass = await gc.runNow('test');
    assert.deepEqual(pass.removed, []);
    assert.deepEqual(pass.failed, []);
    assert.ok(pass.notes.includes('kept image app:1: a container uses it'), pass.notes.join('\n'));
    assert.ok(store.data.imageRefs?.['app:1'], 'still known');
    assert.match(await registry.metrics(), /persys_gc_removal_errors_total\{kind="image"\} 0/);
    store.update((d) => void (d.imageRefs = {}));
  });

  it(`a pass removes at most ${MAX_REMOVALS_PER_PASS} things; the rest waits for the next`, async () => {
    const objects = Array.from({ length: MAX_REMOVALS_PER_PASS + 20 }, (_, i) => orphan(100 + i));
    const { gc, rt } = make(objects);
    const first = await gc.runNow('test');
    assert.equal(first.removed.length, MAX_REMOVALS_PER_PASS);
    assert.equal(first.deferred, 20);
    const second = await gc.runNow('test');
    assert.equal(second.removed.length, 20);
    assert.equal(rt.removed.length, MAX_REMOVALS_PER_PASS + 20);
  });

  it('passes never overlap: runNow during a pass runs after it', async () => {
    const { gc, rt } = make([orphan(500)]);
    const [a, b] = await Promise.all([gc.runNow('a'), gc.runNow('b')]);
    assert.equal(a.removed.length, 1);
    assert.equal(b.removed.length, 0, 'the second pass sees the first one\'s result');
    assert.equal(rt.observeCalls, 2);
  });

  it('the schedule runs passes by itself (gc.intervalSeconds), the first one interval after start', async () => {
    const { gc } = make([], { now: () => new Date(), intervalSeconds: 1 });
    const ac = new AbortController();
    gc.start(ac.signal);
    try {
      assert.equal(gc.last, undefined);
      const deadline = Date.now() + 5000;
      while (!gc.last && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      assert.ok(gc.last, 'a periodic pass ran');
      assert.equal(gc.last.trigger, 'periodic');
    } finally {
      ac.abort();
    }
  });
});
