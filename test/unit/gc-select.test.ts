/**
 * GC selection (src/gc/select.ts) with a fake clock: grace periods, ages, references, thresholds,
 * and the image references the store keeps (src/gc/collector.ts nextImageRefs, Store round trip).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import * as v from 'valibot';

import { configSchema } from '../../src/config/schema.js';
import { desiredImageRefs, nextImageRefs } from '../../src/gc/collector.js';
import { normalizeImageRef, selectGarbage, type EngineImage, type GcInput, type VmFiles } from '../../src/gc/select.js';
import { silentLogger } from '../../src/log.js';
import type { ObservedWorkload, WorkloadBase } from '../../src/runtimes/runtime.js';
import { Store } from '../../src/store/store.js';
import type { ImageRefEntry, WorkloadRecord } from '../../src/store/types.js';

const T0 = Date.parse('2026-01-01T00:00:00.000Z');
const at = (s: number) => new Date(T0 + s * 1000);
const iso = (s: number) => at(s).toISOString();
const gcConfig = (over: Partial<GcInput['config']> = {}) => ({ ...v.parse(configSchema, {}).gc, ...over });

const cw = (id: string, image = 'busybox:1'): WorkloadBase => ({ id, type: 'container', spec: { image } });
const obs = (id: string, over: Partial<ObservedWorkload> = {}): ObservedWorkload => ({
  workloadId: id,
  type: 'container',
  runtime: 'docker',
  runtimeId: `c-${id}`,
  name: `persys-${id}`,
  revision: undefined,
  specHash: 'sha256:x',
  state: 'running',
  createdAt: iso(0),
  ...over,
});
const rec = (id: string, over: Partial<WorkloadRecord> = {}): WorkloadRecord => ({
  id,
  type: 'container',
  revision: undefined,
  specHash: 'sha256:x',
  desiredState: 'running',
  phase: 'Running',
  actualState: 'running',
  message: '',
  error: null,
  retry: { attempts: 0, nextRetryAt: null, gaveUp: false, resetKey: 'k' },
  failures: [],
  updatedAt: iso(0),
  phaseSince: iso(0),
  ...over,
});
const img = (id: string, tags: string[], createdS: number, sizeBytes = 100): EngineImage => ({ id, tags, digests: [], createdAt: iso(createdS), sizeBytes });

function input(over: Partial<GcInput> = {}): GcInput {
  return {
    now: at(1000),
    config: gcConfig(),
    desired: [],
    records: {},
    observed: [],
    runtimeUp: { container: true, compose: true, vm: true },
    strays: [],
    referenced: new Set(),
    imageRefs: {},
    images: [],
    disk: { usedBytes: 10, availableBytes: 90 },
    vm: undefined,
    firstSeen: new Map(),
    ...over,
  };
}
const kinds = (i: GcInput) => selectGarbage(i).candidates.map((c) => `${c.kind} ${c.id}`);

describe('gc: orphans and zombies', () => {
  it('an unclaimed labelled object is removed after the grace period and not before', () => {
    const o = obs('stray', { createdAt: iso(0) });
    assert.deepEqual(kinds(input({ observed: [o], now: at(299) })), []);
    assert.deepEqual(kinds(input({ observed: [o], now: at(300) })), ['orphan c-stray']);
    assert.deepEqual(kinds(input({ observed: [o], now: at(5), config: gcConfig({ orphanGraceSeconds: 1 }) })), ['orphan c-stray']);
    const c = selectGarbage(input({ observed: [o], now: at(400) })).candidates[0];
    assert.match(c?.reason ?? '', /no record and no desired workload claims stray \(400 s old, grace 300 s\)/);
  });

  it('claimed objects are never orphans: desired, or known to a record (the planner removes those)', () => {
    const o = obs('web');
    assert.deepEqual(kinds(input({ observed: [o], desired: [cw('web')] })), []);
    assert.deepEqual(kinds(input({ observed: [o], records: { web: rec('web') } })), []);
  });

  it('no desired state loaded: nothing at all is removed', () => {
    const sel = selectGarbage(input({ desired: null, observed: [obs('x')], strays: [{ runtime: 'docker', kind: 'container', id: 's', name: 's', state: 'exited', createdAt: iso(0) }] }));
    assert.deepEqual(sel.candidates, []);
  });

  it("a runtime that did not answer: its objects and records are left alone", () => {
    assert.deepEqual(kinds(input({ observed: [obs('x')], runtimeUp: { container: false } })), []);
  });

  it('an object without a creation time is aged from when GC first saw it', () => {
    const o = obs('v', { createdAt: undefined, runtime: 'libvirt', type: 'vm', runtimeId: 'uuid-1' });
    const first = selectGarbage(input({ observed: [o], now: at(10) }));
    assert.deepEqual(first.candidates, []);
    assert.deepEqual(first.seen, ['libvirt:uuid-1']);
    const firstSeen = new Map([['libvirt:uuid-1', at(10).getTime()]]);
    assert.deepEqual(kinds(input({ observed: [o], now: at(309), firstSeen })), []);
    assert.deepEqual(kinds(input({ observed: [o], now: at(310), firstSeen })), ['orphan uuid-1']);
  });

  it('a labelled container without a workload id (observe() skips it) is an orphan after the grace', () => {
    const s = { runtime: 'docker', kind: 'container' as const, id: 'abc', name: 'stray', state: 'created', createdAt: iso(900) };
    assert.deepEqual(kinds(input({ strays: [s] })), []);
    assert.deepEqual(kinds(input({ strays: [s], now: at(1200) })), ['orphan abc']);
    assert.equal(selectGarbage(input({ strays: [s], now: at(1200) })).candidates[0]?.action.do, 'remove-container');
  });

  it('zombies: exited objects of workloads no longer desired (with a record) go at once; running ones are the planner\'s', () => {
    const records = { old: rec('old'), live: rec('live') };
    const observed = [obs('old', { state: 'exited', createdAt: iso(999) }), obs('live', { state: 'running' })];
    assert.deepEqual(kinds(input({ observed, records })), ['zombie c-old']);
  });
});

describe('gc: records of failed workloads', () => {
  const failed = rec('f', { phase: 'Failed', error: { code: 'IMAGE_NOT_FOUND', message: 'x', userMessage: 'x', transient: false }, updatedAt: iso(0) });
  it('forgotten after failedRetentionSeconds once dropped, counted from the later of its change and when GC saw it dropped', () => {
    const cfg = gcConfig({ failedRetentionSeconds: 600 });
    // First seen dropped at t=1000: kept until t=1600.
    const first = selectGarbage(input({ records: { f: failed }, config: cfg }));
    assert.deepEqual(first.candidates, []);
    assert.deepEqual(first.seen, ['record:f']);
    const firstSeen = new Map([['record:f', at(1000).getTime()]]);
    assert.deepEqual(kinds(input({ records: { f: failed }, config: cfg, now: at(1599), firstSeen })), []);
    assert.deepEqual(kinds(input({ records: { f: failed }, config: cfg, now: at(1600), firstSeen })), ['failed-record f']);
  });

  it('kept while desired, while an object of it exists, or when it did not fail', () => {
    const firstSeen = new Map([['record:f', 0]]);
    const cfg = gcConfig({ failedRetentionSeconds: 1 });
    assert.deepEqual(kinds(input({ records: { f: failed }, desired: [cw('f')], config: cfg, firstSeen })), []);
    assert.deepEqual(kinds(input({ records: { f: failed }, observed: [obs('f')], config: cfg, firstSeen })).filter((k) => k.startsWith('failed')), []);
    assert.deepEqual(kinds(input({ records: { ok: rec('ok') }, config: cfg, firstSeen: new Map([['record:ok', 0]]) })), []);
  });
});

describe('gc: images', () => {
  const ref = (type: string, unreferencedSince?: number): ImageRefEntry => ({ type, firstReferencedAt: iso(0), ...(unreferencedSince !== undefined ? { unreferencedSince: iso(unreferencedSince) } : {}) });
  const full = { usedBytes: 90, availableBytes: 10 }; // 90 % used
  const images = [img('sha256:old', ['app:1'], 0, 5), img('sha256:new', ['app:2'], 100, 5), img('sha256:owner', ['postgres:16'], 0, 50), img('sha256:cur', ['app:3'], 0, 50)];
  const imageRefs = { 'app:1': ref('container', 10), 'app:2': ref('container', 20), 'app:3': ref('container') };

  it('over the high threshold: only our unreferenced images, oldest first, down to the low threshold', () => {
    // 90 used of 100, low 80: 10 bytes to free = app:1 (5) + app:2 (5).
    const sel = selectGarbage(input({ images, imageRefs, disk: full, referenced: new Set(['app:3']) }));
    assert.deepEqual(sel.candidates.map((c) => `${c.kind} ${c.id} ${c.bytes}`), ['image app:1 5', 'image app:2 5']);
    assert.match(sel.candidates[0]?.reason ?? '', /90\.0% used \(high 85%, low 80%\)/);
    // Only 5 bytes to free: the oldest goes, the newer stays.
    const some = selectGarbage(input({ images, imageRefs, disk: { usedBytes: 85, availableBytes: 15 }, referenced: new Set(['app:3']) }));
    assert.deepEqual(some.candidates.map((c) => c.id), ['app:1']);
  });

  it('below the high threshold nothing goes; an image of a desired workload never goes; the host owner\'s never', () => {
    assert.deepEqual(kinds(input({ images, imageRefs, disk: { usedBytes: 84, availableBytes: 16 } })), []);
    const sel = selectGarbage(input({ images, imageRefs, disk: { usedBytes: 100, availableBytes: 0 }, config: gcConfig({ imageLowThresholdPercent: 0 }), referenced: new Set(['app:3']) }));
    assert.deepEqual(sel.candidates.map((c) => c.id).sort(), ['app:1', 'app:2']);
  });

  it('a pass that started image GC (over high) goes on down to low after measuring again (hysteresis)', () => {
    const at82 = { usedBytes: 82, availableBytes: 18 };
    assert.deepEqual(kinds(input({ images, imageRefs, disk: at82, referenced: new Set(['app:3']) })), []);
    assert.deepEqual(kinds(input({ images, imageRefs, disk: at82, referenced: new Set(['app:3']), imagesUnderway: true })), ['image app:1']);
    assert.deepEqual(kinds(input({ images, imageRefs, disk: { usedBytes: 80, availableBytes: 20 }, referenced: new Set(['app:3']), imagesUnderway: true })), []);
  });

  it('never younger than imageMinAgeSeconds (counted from when the last desired workload stopped referencing it)', () => {
    const refs = { 'app:1': ref('container', 900) };
    assert.deepEqual(kinds(input({ images, imageRefs: refs, disk: full, now: at(1019) })), []);
    assert.deepEqual(kinds(input({ images, imageRefs: refs, disk: full, now: at(1020) })), ['image app:1']);
    // Not yet marked unreferenced (no moment): counts as now.
    assert.deepEqual(kinds(input({ images, imageRefs: { 'app:1': ref('container') }, disk: full, now: at(5000) })), []);
  });

  it('references match in Docker\'s normal form; an image with a tag of the host owner\'s stays (untagged only, nothing freed)', () => {
    assert.equal(normalizeImageRef('docker.io/library/nginx'), 'nginx:latest');
    assert.equal(normalizeImageRef('127.0.0.1:5000/a/b'), '127.0.0.1:5000/a/b:latest');
    assert.equal(normalizeImageRef('a@sha256:ab'), 'a@sha256:ab');
    const shared = [img('sha256:s', ['app:1', 'mine:too'], 0, 70)];
    const sel = selectGarbage(input({ images: shared, imageRefs: { 'docker.io/library/app:1': ref('container', 0) }, disk: full }));
    assert.deepEqual(sel.candidates.map((c) => [c.id, c.bytes]), [['app:1', undefined]]);
  });

  it('references of images gone from the engine are pruned from the store; unknown disk usage: no image GC', () => {
    const sel = selectGarbage(input({ images: [], imageRefs: { 'gone:1': ref('container', 0), 'wanted:1': ref('container') }, referenced: new Set(['wanted:1']) }));
    assert.deepEqual(sel.pruneRefs, ['gone:1']);
    const blind = selectGarbage(input({ images, imageRefs, disk: undefined }));
    assert.deepEqual(blind.candidates, []);
    assert.match(blind.imageNote, /unknown/);
  });
});

describe('gc: image references in the store', () => {
  it('new references are added, dropped ones get unreferencedSince, desired again loses it; nothing changed -> null (no write)', () => {
    const refs1 = desiredImageRefs([cw('a', 'app:1'), cw('b', 'app:1'), { id: 'v', type: 'vm', spec: { vcpus: 1, memoryMiB: 64, disks: [{ name: 'root', image: { url: 'https://x/i.qcow2', sha256: 'a'.repeat(64) } }] } }]);
    assert.deepEqual([...refs1], [['app:1', 'container'], [`sha256:${'a'.repeat(64)}`, 'vm'], ['url:https://x/i.qcow2', 'vm']]);
    const s1 = nextImageRefs({}, new Map([['app:1', 'container']]), at(0));
    assert.deepEqual(s1, { 'app:1': { type: 'container', firstReferencedAt: iso(0) } });
    assert.equal(nextImageRefs(s1!, new Map([['app:1', 'container']]), at(5)), null);
    const s2 = nextImageRefs(s1!, new Map([['app:2', 'container']]), at(10));
    assert.deepEqual(s2, { 'app:1': { type: 'container', firstReferencedAt: iso(0), unreferencedSince: iso(10) }, 'app:2': { type: 'container', firstReferencedAt: iso(10) } });
    // Before a new document is applied: add only, nothing is marked unreferenced yet.
    assert.deepEqual(nextImageRefs(s1!, new Map([['app:2', 'container']]), at(10), true), { 'app:1': { type: 'container', firstReferencedAt: iso(0) }, 'app:2': { type: 'container', firstReferencedAt: iso(10) } });
    const s3 = nextImageRefs(s2!, new Map([['app:1', 'container'], ['app:2', 'container']]), at(20));
    assert.deepEqual(s3?.['app:1'], { type: 'container', firstReferencedAt: iso(0) });
  });

  it('survive a store reopen (state.json), and a file without them reads as before', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'persys-gc-store-'));
    try {
      const s = await Store.open(dir, silentLogger(), { fsync: false });
      assert.equal(s.data.imageRefs, undefined);
      s.update((d) => void (d.imageRefs = { 'app:1': { type: 'container', firstReferencedAt: iso(0), unreferencedSince: iso(9) } }));
      await s.close();
      const again = await Store.open(dir, silentLogger(), { fsync: false });
      assert.deepEqual(again.data.imageRefs, { 'app:1': { type: 'container', firstReferencedAt: iso(0), unreferencedSince: iso(9) } });
      await again.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('gc: VM leftovers', () => {
  const hex = 'b'.repeat(64);
  const f = (path: string, mtimeS: number, sizeBytes = 10) => ({ path, mtime: iso(mtimeS), sizeBytes });
  const vmFiles = (over: Partial<VmFiles> = {}): VmFiles => ({
    namePrefix: 'persys-',
    domains: [
      { domain: 'persys-keep', files: [f('/s/vms/persys-keep/disk-root.qcow2', 0), f('/s/vms/persys-keep/disk-old.qcow2', 0), f('/s/vms/persys-keep/seed.iso', 0)] },
      { domain: 'persys-gone', files: [f('/s/vms/persys-gone/disk-root.qcow2', 0), f('/s/vms/persys-gone/seed.iso', 0)] },
      { domain: 'other-vm', files: [f('/s/vms/other-vm/seed.iso', 0)] },
    ],
    cache: [{ ...f(`/s/images/sha256-${hex}.qcow2`, 0), hex }],
    backing: new Set(),
    consoleLogs: [{ ...f('/c/persys-gone.log', 0), domain: 'persys-gone' }, { ...f('/c/persys-keep.log', 0), domain: 'persys-keep' }],
    ...over,
  });
  const keep: WorkloadBase = { id: 'keep', type: 'vm', spec: { vcpus: 1, memoryMiB: 64, disks: [{ name: 'root', sizeBytes: 1 }] } };
  const cfg = gcConfig({ replacedDiskRetentionSeconds: 2000 });

  it('seed ISOs and console logs of unclaimed domains go after the grace; their disks stay (reclaimPolicy retain is theirs)', () => {
    assert.deepEqual(kinds(input({ desired: [keep], vm: vmFiles(), config: cfg })).sort(), ['vm-console-log /c/persys-gone.log', `vm-image-cache /s/images/sha256-${hex}.qcow2`, 'vm-seed /s/vms/persys-gone/seed.iso']);
    assert.deepEqual(kinds(input({ desired: [keep], vm: vmFiles(), config: cfg, now: at(100) })).filter((k) => !k.startsWith('vm-image')), []);
    // A record claims the domain: nothing of it goes.
    assert.deepEqual(kinds(input({ desired: [keep], vm: vmFiles(), config: cfg, records: { gone: rec('gone', { type: 'vm' }) } })).filter((k) => k.includes('gone')), []);
  });

  it("a desired VM's disk its spec no longer names goes after replacedDiskRetentionSeconds", () => {
    assert.ok(kinds(input({ desired: [keep], vm: vmFiles(), now: at(2000), config: cfg })).includes('vm-disk /s/vms/persys-keep/disk-old.qcow2'));
    assert.ok(!kinds(input({ desired: [keep], vm: vmFiles(), now: at(1999), config: cfg })).includes('vm-disk /s/vms/persys-keep/disk-old.qcow2'));
  });

  it('an image-cache entry stays while a desired VM names its digest, a disk is backed by it, or a desired VM has an image without a digest', () => {
    const byDigest = { ...keep, spec: { vcpus: 1, memoryMiB: 64, disks: [{ name: 'root', image: { url: 'https://x', sha256: hex } }] } };
    assert.ok(!kinds(input({ desired: [byDigest], vm: vmFiles(), referenced: new Set([`sha256:${hex}`]) })).some((k) => k.startsWith('vm-image')));
    assert.ok(!kinds(input({ desired: [keep], vm: vmFiles({ backing: new Set([`/s/images/sha256-${hex}.qcow2`]) }) })).some((k) => k.startsWith('vm-image')));
    const unhashed = { ...keep, spec: { vcpus: 1, memoryMiB: 64, disks: [{ name: 'root', image: { path: '/var/lib/libvirt/images/x.qcow2' } }] } };
    assert.ok(!kinds(input({ desired: [unhashed], vm: vmFiles() })).some((k) => k.startsWith('vm-image')));
  });

  it('libvirt down: no VM file is touched', () => {
    assert.deepEqual(kinds(input({ desired: [keep], vm: vmFiles(), runtimeUp: { container: true, vm: false } })), []);
  });
});
