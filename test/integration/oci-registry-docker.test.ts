/**
 * The loopback OCI registry (test/helpers/oci-registry.ts) against the real dockerd: each knob as
 * dockerd sees it. A slow registry still delivers, a stalled one stops the byte stream with the
 * socket open, a mid-stream failure is retried by dockerd with a Range request, and a tag moved to
 * new content pulls a new image. Every image pulled here is removed afterwards (only this registry's refs).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import Dockerode from 'dockerode';

import { requireEngine } from '../helpers/engines.js';
import { startOciRegistry, type OciRegistry } from '../helpers/oci-registry.js';

const skip = await requireEngine('docker');
const MiB = 1 << 20;

interface PullOutcome {
  ms: number;
  error?: string;
  /** Largest byte count dockerd reported for the filler layer. */
  maxCurrent: number;
  events: number;
}

async function pull(docker: Dockerode, ref: string, signal?: AbortSignal): Promise<PullOutcome> {
  const started = Date.now();
  let maxCurrent = 0;
  let events = 0;
  try {
    const stream = await docker.pull(ref, signal ? { abortSignal: signal } : {});
    signal?.addEventListener('abort', () => (stream as NodeJS.ReadableStream & { destroy(): void }).destroy(), { once: true });
    let streamError: string | undefined;
    await new Promise<void>((resolve, reject) => {
      docker.modem.followProgress(
        stream,
        (err) => (err ? reject(err) : resolve()),
        (e: { error?: string; progressDetail?: { current?: number } }) => {
          events++;
          if (e.error) streamError = e.error;
          maxCurrent = Math.max(maxCurrent, e.progressDetail?.current ?? 0);
        },
      );
    });
    return { ms: Date.now() - started, maxCurrent, events, ...(streamError ? { error: streamError } : {}) };
  } catch (err) {
    return { ms: Date.now() - started, maxCurrent, events, error: err instanceof Error ? err.message : String(err) };
  }
}

describe('loopback OCI registry (real dockerd)', { skip, timeout: 180_000 }, () => {
  const docker = new Dockerode({ socketPath: '/var/run/docker.sock' });
  let reg: OciRegistry;
  before(async () => {
    reg = await startOciRegistry({
      images: [
        { name: 'persys-test/slow:1', from: 'persys-test/busybox:1', fillerBytes: 3 * MiB },
        { name: 'persys-test/stall:1', from: 'persys-test/busybox:1', fillerBytes: 3 * MiB },
        { name: 'persys-test/broken:1', from: 'persys-test/busybox:1', fillerBytes: 2 * MiB },
        { name: 'persys-test/moving:1', from: 'persys-test/busybox:1' },
      ],
    });
  });
  after(async () => {
    const removed = await reg.removePulledImages().catch((err: unknown) => [String(err)]);
    await reg.close();
    const left = (await docker.listImages()).filter((i) => (i.RepoTags ?? []).some((t) => t.startsWith(`${reg.host}/`)));
    assert.deepEqual(left, [], `images left after cleanup (removed: ${removed.join(', ')})`);
  });

  it('slow bytes: a 3 MiB layer at 1 MiB/s takes seconds and completes, with progress all along', async () => {
    reg.knobs = { bytesPerSecond: MiB };
    const r = await pull(docker, reg.ref('persys-test/slow:1'));
    assert.equal(r.error, undefined);
    assert.ok(r.ms >= 2500, `pulled in ${r.ms} ms, the rate knob did not slow it`);
    assert.ok(r.events > 10, `only ${r.events} progress events`);
    const img = await docker.getImage(reg.ref('persys-test/slow:1')).inspect();
    assert.ok(img.RepoDigests.includes(`${reg.host}/persys-test/slow@${reg.digest('persys-test/slow:1')}`), JSON.stringify(img.RepoDigests));
  });

  it('stall: bytes stop after 512 KiB, the socket stays open, the pull neither ends nor moves', async () => {
    reg.knobs = { stallAfterBytes: 512 * 1024 };
    const abort = new AbortController();
    const sentBefore = reg.layerBytesSent;
    const pending = pull(docker, reg.ref('persys-test/stall:1'), abort.signal);
    const raced = await Promise.race([pending.then(() => 'ended'), new Promise((r) => setTimeout(() => r('still pulling'), 4000))]);
    assert.equal(raced, 'still pulling');
    // Every layer response stopped at the stall point (the busybox layer and the filler).
    assert.ok(reg.layerBytesSent - sentBefore <= 2 * 512 * 1024, `sent ${reg.layerBytesSent - sentBefore} bytes`);
    abort.abort();
    const r = await pending;
    assert.ok(r.maxCurrent <= 512 * 1024, `dockerd saw ${r.maxCurrent} bytes of one layer`);
    await assert.rejects(docker.getImage(reg.ref('persys-test/stall:1')).inspect(), /no such image/i);
  });

  it('mid-stream failure: the socket is destroyed after 256 KiB once; dockerd resumes with a Range request and completes', async () => {
    reg.knobs = { failAfterBytes: 256 * 1024, failTimes: 1 };
    const r = await pull(docker, reg.ref('persys-test/broken:1'));
    assert.equal(r.error, undefined);
    const ranged = reg.requests.filter((q) => q.range && q.path.includes('/persys-test/broken/blobs/'));
    assert.ok(ranged.length >= 1, `no Range request after the failure: ${JSON.stringify(reg.requests.slice(-6))}`);
    assert.equal(ranged[0]!.status, 206);
    await docker.getImage(reg.ref('persys-test/broken:1')).inspect();
  });

  it('changed digest behind the same tag: the next pull gets the new image', async () => {
    reg.knobs = {};
    const ref = reg.ref('persys-test/moving:1');
    assert.equal((await pull(docker, ref)).error, undefined);
    const first = await docker.getImage(ref).inspect();
    const oldDigest = reg.digest('persys-test/moving:1');
    const newDigest = await reg.publish({ name: 'persys-test/moving:1', from: 'persys-test/busybox:2' });
    assert.notEqual(newDigest, oldDigest);
    assert.equal((await pull(docker, ref)).error, undefined);
    const second = await docker.getImage(ref).inspect();
    assert.notEqual(second.Id, first.Id);
    assert.ok(second.RepoDigests.includes(`${reg.host}/persys-test/moving@${newDigest}`), JSON.stringify(second.RepoDigests));
    assert.equal(second.Config.Labels?.['dev.persys.test-image'], '2');
  });
});
