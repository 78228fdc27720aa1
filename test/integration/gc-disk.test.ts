/**
 * Image GC against real disk figures: a private dockerd whose data root is a small tmpfs, filled with
 * images of old revisions of one workload (and a filler file) until Docker's file system is 90 % used. One pass
 * (default thresholds 85 / 80) removes unreferenced images oldest first until usage is at or below
 * 80 %, and never the image the desired revision uses. The shared dockerd is never touched.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, statfs, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';

import Docker from 'dockerode';
import * as v from 'valibot';

import { configSchema } from '../../src/config/schema.js';
import { GarbageCollector } from '../../src/gc/collector.js';
import { silentLogger } from '../../src/log.js';
import { DockerRuntime } from '../../src/runtimes/docker/docker-runtime.js';
import { Store } from '../../src/store/store.js';
import { requireEngine, testNodeId } from '../helpers/engines.js';
import { privateDockerdSkipReason, startPrivateDockerd, type PrivateDockerd } from '../helpers/private-dockerd.js';

const exec = promisify(execFile);
const skip = (await requireEngine('docker')) || (await privateDockerdSkipReason());
const TMPFS_MIB = 128;
const LAYER_MIB = 12;
const REVISIONS = 7;

const usedPct = async (path: string): Promise<number> => {
  const s = await statfs(path);
  const used = (s.blocks - s.bfree) * s.bsize;
  return (used / (used + s.bavail * s.bsize)) * 100;
};

describe('image GC on a nearly full Docker file system (private dockerd on a tmpfs)', { skip, timeout: 240_000 }, () => {
  const nodeId = testNodeId('test-gcdisk');
  let dir: string;
  let d: PrivateDockerd | undefined;
  let mounted = false;
  let store: Store | undefined;

  before(async () => {
    dir = await mkdtemp('/tmp/pgd-');
    await mkdir(join(dir, 'data'), { recursive: true });
    await exec('mount', ['-t', 'tmpfs', '-o', `size=${TMPFS_MIB}m`, 'tmpfs', join(dir, 'data')]);
    mounted = true;
    d = await startPrivateDockerd(dir);
    // The base image from the shared engine, then one image per revision, each with its own layer.
    await exec('sh', ['-c', `docker save persys-test/busybox:1 | docker -H unix://${d.socketPath} load -q`], { timeout: 120_000 });
    const ctx = join(dir, 'ctx');
    await mkdir(ctx);
    for (let r = 1; r <= REVISIONS; r++) {
      await writeFile(join(ctx, 'blob'), randomBytes(LAYER_MIB * 1024 * 1024));
      await writeFile(join(ctx, 'Dockerfile'), `FROM persys-test/busybox:1\nCOPY blob /blob\nLABEL revision=${r}\n`);
      await exec('docker', ['-H', `unix://${d.socketPath}`, 'build', '-q', '-t', `persys-test/gc-rev:${r}`, ctx], { timeout: 120_000 });
    }
    await rm(ctx, { recursive: true, force: true });
    // Something else on the same file system (the host owner's files) takes it to 90 %.
    const s = await statfs(join(dir, 'data'));
    const total = s.blocks * s.bsize;
    const used = (s.blocks - s.bfree) * s.bsize;
    await writeFile(join(dir, 'data', 'filler'), Buffer.alloc(Math.max(0, Math.floor(total * 0.9 - used))));
  });

  after(async () => {
    await store?.close().catch(() => undefined);
    await d?.stop().catch(() => undefined);
    if (mounted) await exec('umount', ['-l', join(dir, 'data')]).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

  it('over 85 %: removes old revisions\' images oldest first down to 80 %, keeps the desired one and images never ours', async () => {
    const dataRoot = join(dir, 'data');
    const before = await usedPct(dataRoot);
    assert.ok(before >= 85, `the file system is ${before.toFixed(1)}% used; the test needs it over 85%`);

    store = await Store.open(join(dir, 'state'), silentLogger(), { fsync: false });
    const doc = (r: number) => ({ apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId, generation: r, workloads: [{ id: 'web', type: 'container', revision: String(r), spec: { image: `persys-test/gc-rev:${r}` } }] });
    const config = v.parse(configSchema, { docker: { socketPath: d!.socketPath }, gc: { imageMinAgeSeconds: 1 } });
    const logger = silentLogger();
    // The workload went through revisions 1..7 a minute apart (the fake clock): what the store remembers.
    let now = Date.now() - REVISIONS * 60_000;
    const gc = new GarbageCollector({ config, store, runtimes: [new DockerRuntime({ socketPath: d!.socketPath, nodeId, namePrefix: `${nodeId}-`, logger })], nodeId, stateDir: join(dir, 'state'), logger, dataRootOf: () => dataRoot, now: () => new Date(now) });
    for (let r = 1; r <= REVISIONS; r++) {
      gc.noteDesired(doc(r).workloads as never);
      now += 60_000;
    }
    await store.setDesired({ document: doc(REVISIONS) as never, etag: null, receivedAt: new Date().toISOString(), source: 'test' });
    now = Date.now();

    const dry = await gc.runNow('test', { dryRun: true });
    const dryImages = dry.removed.filter((r) => r.kind === 'image').map((r) => r.id);
    assert.ok(dryImages.length > 0 && dryImages.length < REVISIONS - 1, `some but not all old images: ${dryImages.join(', ')} (${dry.notes.join('; ')})`);
    assert.deepEqual(dryImages, Array.from({ length: dryImages.length }, (_, i) => `persys-test/gc-rev:${i + 1}`), 'oldest first');

    const pass = await gc.runNow('test');
    const removed = pass.removed.filter((r) => r.kind === 'image').map((r) => r.id);
    // The dry run estimates from image sizes; the pass measures the disk again and may go on, oldest first.
    assert.deepEqual(removed.slice(0, dryImages.length), dryImages);
    assert.deepEqual(removed, Array.from({ length: removed.length }, (_, i) => `persys-test/gc-rev:${i + 1}`), 'oldest first');
    assert.ok(removed.length < REVISIONS - 1, 'stops once down to the low threshold');
    assert.ok(pass.freedBytes >= removed.length * LAYER_MIB * 1024 * 1024 * 0.9, `freed ${pass.freedBytes}`);
    const after = await usedPct(dataRoot);
    assert.ok(after <= 80, `usage after the pass: ${after.toFixed(1)}% (before ${before.toFixed(1)}%): ${JSON.stringify(pass)}`);

    const docker = new Docker({ socketPath: d!.socketPath });
    const tags = (await docker.listImages()).flatMap((i) => i.RepoTags ?? []);
    assert.ok(tags.includes(`persys-test/gc-rev:${REVISIONS}`), 'the desired revision\'s image stays');
    assert.ok(tags.includes('persys-test/busybox:1'), 'an image the agent never used stays');
    for (const r of removed) assert.ok(!tags.includes(r), `${r} is gone`);
    process.stdout.write(`gc-disk: ${before.toFixed(1)}% -> ${after.toFixed(1)}% used, removed ${removed.join(', ')}\n`);
  });
});
